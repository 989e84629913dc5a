"""Chunked IO: OME-Zarr (NGFF 0.4 and 0.5) and plain zarr read lazily with axes and voxel size; label outputs
as NGFF labels/ groups that ome-zarr's own reader understands; unfinished outputs are refused."""

from __future__ import annotations

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")
ome_writer = pytest.importorskip("ome_zarr.writer")

from ome_zarr.format import FormatV04, FormatV05  # noqa: E402

from engine import chunked_io as cio  # noqa: E402
from engine.errors import InputError  # noqa: E402

AXES = [{"name": "c", "type": "channel"}] + [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]


def write_ome(path, data, fmt, axes=AXES, scale=(1.0, 2.0, 0.5, 0.25)):
    """An OME-Zarr image written by ome-zarr itself (one level)."""
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    names = [a["name"] for a in axes]
    units = {a["name"]: a["unit"] for a in axes if "unit" in a}
    ome_writer.write_image(data, group, axes=[{k: v for k, v in a.items() if k != "unit"} for a in axes], fmt=fmt,
                           scale=dict(zip(names, scale)), axes_units=units, scale_factors=[],
                           storage_options={"chunks": tuple(min(4, n) for n in data.shape)})
    return path


@pytest.fixture(params=[FormatV04(), FormatV05()], ids=["ngff0.4", "ngff0.5"])
def ome_image(request, tmp_path):
    data = (np.arange(2 * 6 * 10 * 12) % 251).astype(np.uint16).reshape(2, 6, 10, 12)
    return write_ome(tmp_path / "scan.ome.zarr", data, request.param), data


def test_ome_zarr_is_read_lazily_with_axes_and_voxel_size(ome_image):
    path, data = ome_image
    volume = cio.open_volume(path)
    assert volume.kind == "ome-zarr" and volume.dims == ("pln", "row", "col")
    assert volume.pixels.shape == data.shape and volume.pixels.dtype == data.dtype
    assert volume.spacing == {"pln": 2.0, "row": 0.5, "col": 0.25} and volume.unit == "µm"
    assert isinstance(volume.pixels.data, zarr.Array)  # nothing read yet
    np.testing.assert_array_equal(volume.pixels[:, 1:5:3, 2, ::4], data[:, 1:5:3, 2, ::4])
    np.testing.assert_array_equal(volume.pixels[1, 3], data[1, 3])
    image = cio.read_zarr(path)
    assert image.dims == ("ch", "pln", "row", "col") and image.attrs["spacing"]["col"] == 0.25
    np.testing.assert_array_equal(image.values, data)


def test_labels_beside_the_image_are_valid_ngff_and_listed_only_when_complete(ome_image):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Labels, Reader

    path, data = ome_image
    volume = cio.open_volume(path)
    out = cio.plan_output(path, volume, "cells")
    assert out.kind == "labels" and out.group == path / "labels" / "cells"
    labels = cio.create_labels(out, volume, dtype="uint8", chunks=(3, 10, 12), record={"complete": False},
                               class_names=["background", "cell"])
    labels[:] = (data[0] > 100).astype(np.uint8)
    with pytest.raises(InputError, match="unfinished"):
        cio.open_volume(out.group)
    listed = cio._ngff_metadata(zarr.open_group(str(path / "labels"))).get("labels", [])
    assert "cells" not in listed  # NGFF readers do not see an unfinished label image
    cio.mark_complete([out.array, out.group])
    cio.finish_labels(out)
    cio.finish_labels(out)  # idempotent
    assert cio._ngff_metadata(zarr.open_group(str(path / "labels")))["labels"] == ["cells"]

    nodes = list(Reader(parse_url(str(path)))())
    label_nodes = [n for n in nodes if any(isinstance(s, Label) for s in n.specs)]
    assert any(isinstance(s, Labels) for n in nodes for s in n.specs) and len(label_nodes) == 1
    node = label_nodes[0]
    np.testing.assert_array_equal(np.asarray(node.data[0]), data[0] > 100)
    meta = node.metadata
    assert [a["name"] for a in meta["axes"]] == ["z", "y", "x"]
    assert meta["coordinateTransformations"][0][0]["scale"] == [2.0, 0.5, 0.25]
    assert meta["properties"][1]["class"] == "cell"
    read_back = cio.open_volume(out.group)
    assert read_back.spacing == volume.spacing and read_back.spatial_shape == volume.spatial_shape


def test_plain_zarr_arrays_need_axes_from_metadata_or_the_caller(tmp_path):
    data = np.random.default_rng(0).integers(0, 1000, (5, 7, 9)).astype(np.uint16)
    named = zarr.create_array(str(tmp_path / "named.zarr"), data=data, chunks=(2, 7, 9), dimension_names=("z", "y", "x"))
    assert cio.open_volume(tmp_path / "named.zarr").dims == ("pln", "row", "col")
    group = zarr.open_group(str(tmp_path / "group.zarr"), mode="w")
    group.create_array("raw", data=data[:, :, :, None].repeat(2, 3), chunks=(2, 7, 9, 2))
    with pytest.raises(InputError, match="axes"):
        cio.open_volume(tmp_path / "group.zarr" / "raw")
    with pytest.raises(InputError, match="not an OME-Zarr image.*group.zarr/raw"):
        cio.open_volume(tmp_path / "group.zarr")
    volume = cio.open_volume(tmp_path / "group.zarr" / "raw", axes="ZYXC")
    assert volume.pixels.shape == (2, 5, 7, 9)
    np.testing.assert_array_equal(volume.pixels[1, :, 3], data[:, 3])
    np.testing.assert_array_equal(np.asarray(volume.pixels), np.moveaxis(data[..., None].repeat(2, 3), 3, 0))
    assert named.shape == data.shape


def test_plain_zarr_output_keeps_calibration(tmp_path):
    volume = cio.Volume(cio.ChannelFirst(np.zeros((4, 5, 6), np.uint8), ("pln", "row", "col")),
                        ("pln", "row", "col"), {"pln": 3.0, "row": 1.5, "col": 1.5}, "nm", "x", tmp_path, "tiff")
    out = cio.plan_output(tmp_path / "labels.zarr", volume)
    assert out.kind == "zarr"
    array = cio.create_labels(out, volume, dtype="uint8", chunks=(2, 5, 6), record={"complete": True})
    array[1] = 7
    back = cio.open_volume(tmp_path / "labels.zarr")
    assert back.spacing == volume.spacing and back.unit == "nm" and back.pixels[0, 1].max() == 7
    new = cio.plan_output(tmp_path / "new.ome.zarr", volume)
    cio.create_labels(new, volume, dtype="uint8", chunks=(2, 5, 6), record={"complete": True})
    ome = cio.open_volume(tmp_path / "new.ome.zarr")
    assert ome.kind == "ome-zarr" and ome.spacing == volume.spacing and ome.unit == "nm"


def test_tiff_input_is_memory_mapped(tmp_path):
    import tifffile

    data = np.arange(3 * 8 * 8, dtype=np.uint16).reshape(3, 8, 8)
    tifffile.imwrite(tmp_path / "stack.tif", data, imagej=True, metadata={"axes": "ZYX"})
    volume = cio.open_volume(tmp_path / "stack.tif")
    assert volume.kind == "tiff" and isinstance(volume.pixels.data, np.memmap)
    np.testing.assert_array_equal(volume.pixels[0, 2], data[2])


def test_time_series_and_mismatched_outputs_are_refused(tmp_path):
    data = np.zeros((3, 1, 4, 5, 6), np.uint8)
    axes = [{"name": "t", "type": "time"}] + AXES
    write_ome(tmp_path / "movie.ome.zarr", data, FormatV05(), axes=axes, scale=(1.0, 1.0, 1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="3 time points"):
        cio.open_volume(tmp_path / "movie.ome.zarr")
    write_ome(tmp_path / "small.ome.zarr", np.zeros((1, 2, 5, 6), np.uint8), FormatV05())
    write_ome(tmp_path / "big.ome.zarr", np.zeros((1, 4, 5, 6), np.uint8), FormatV05())
    with pytest.raises(InputError, match="labels must match their image"):
        cio.plan_output(tmp_path / "small.ome.zarr", cio.open_volume(tmp_path / "big.ome.zarr"))
    with pytest.raises(InputError, match="not a zarr path"):
        cio.plan_output(tmp_path / "labels.tif", cio.open_volume(tmp_path / "big.ome.zarr"))
