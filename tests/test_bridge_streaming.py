"""DeepSeg Predict... on files through the real ImageJ: streamed like ``deepseg predict`` (never read into
memory), into TIFF (shown as a virtual stack) or OME-Zarr (written block by block, optionally on Dask)."""

from __future__ import annotations

import numpy as np
import pytest

from blockwise_fixtures import random_model, volume, write_ome_zarr, write_tiff
from bridge_fixtures import blob, ij, requires_imagej  # noqa: F401  (fixtures)
from engine.errors import Cancelled, InputError

pytestmark = [pytest.mark.imagej, requires_imagej]

PREDICT = "DeepSeg Predict..."


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """A random-weight 3D model and a calibrated uint16 TIFF stack (24 x 64 x 64, 2 x 0.5 x 0.5 um)."""
    folder = tmp_path_factory.mktemp("streaming scan")
    return random_model(folder / "model"), write_tiff(folder / "scan.tif", volume())


def cli_predict(*args: str) -> None:
    from engine.cli import main

    assert main(["predict", *args, "--quiet"]) == 0


def read_zarr_labels(path) -> np.ndarray:
    from engine.chunked_io import read_zarr

    return np.asarray(read_zarr(path).values)


def lut_bytes(imp) -> np.ndarray:
    return np.array(imp.getProcessor().getLut().getBytes(), dtype=np.int8).view(np.uint8).reshape(3, 256)


def test_a_file_streams_into_a_tiff_shown_as_a_virtual_stack_equal_to_the_cli(ij, scan, tmp_path):
    import tifffile

    from engine.io import glasbey_lut

    model, image = scan
    out = tmp_path / "scan labels.tif"
    seen = []
    ij.progress_callback = seen.append
    try:
        result = ij.run(PREDICT, {"model": str(model), "image": str(image), "out": str(out), "output": "both"})
    finally:
        ij.progress_callback = None
    cli_predict(str(model), str(image), "--out", str(tmp_path / "cli.tif"), "--probabilities",
                str(tmp_path / "cli-probabilities.tif"))
    labels, probabilities = result.images
    assert labels.getStack().isVirtual() and probabilities.getStack().isVirtual()
    assert result.info["labels"] == str(out)
    assert result.info["probabilities"] == str(tmp_path / "scan labels-probabilities.tif")
    np.testing.assert_array_equal(ij.to_xarray(labels).values, tifffile.imread(tmp_path / "cli.tif"))
    np.testing.assert_array_equal(ij.to_xarray(labels).values, tifffile.imread(out))
    cal = labels.getCalibration()  # the engine writes ImageJ's ASCII spelling of um
    assert (cal.pixelWidth, cal.pixelDepth, str(cal.getUnit())) == (0.5, 2.0, "micron")
    assert labels.getBitDepth() == 8 and (lut_bytes(labels)[:, :8] == np.stack(glasbey_lut())[:, :8]).all()
    assert (probabilities.getNChannels(), probabilities.getNSlices(), probabilities.getBitDepth()) == (3, 24, 32)
    np.testing.assert_array_equal(ij.to_xarray(probabilities).values,
                                  tifffile.imread(tmp_path / "cli-probabilities.tif"))
    assert seen and seen[-1].done == seen[-1].total  # ImageJ's progress bar was fed to the end


def test_without_out_the_labels_go_to_a_temporary_tiff(ij, tiny_model, blob):
    from pathlib import Path

    from engine.io import read_image
    from engine.prediction import predict

    model, _ = tiny_model
    result = ij.run(PREDICT, f"model=[{model}] image=[{blob[0]}] tile=32")
    (labels,) = result.images
    assert labels.getStack().isVirtual() and str(labels.getTitle()) == "blob-labels"
    written = Path(result.info["labels"])
    assert written.name == "blob-labels.tif" and written.parent.parent.name.startswith("deepseg-fiji-")
    expected = predict(model, read_image(blob[0]), tile=(32, 32)).labels.values  # the in-memory result
    np.testing.assert_array_equal(ij.to_xarray(labels).values, expected)


def test_a_virtual_stack_streams_from_its_file_an_image_in_memory_does_not(ij, scan, tmp_path):
    import tifffile

    model, image = scan
    virtual = ij.IJ.openVirtual(str(image))
    out = tmp_path / "from virtual.tif"
    result = ij.run(PREDICT, f"model=[{model}] out=[{out}]", image=virtual)
    assert result.info["labels"] == str(out) and result.images[0].getStack().isVirtual()
    np.testing.assert_array_equal(ij.to_xarray(result.images[0]).values, tifffile.imread(out))
    in_memory = ij.open_image(image)
    assert not in_memory.getStack().isVirtual()
    shown = ij.run(PREDICT, f"model=[{model}]", image=in_memory)
    assert not shown.images[0].getStack().isVirtual() and "labels" not in shown.info
    np.testing.assert_array_equal(ij.to_xarray(shown.images[0]).values, tifffile.imread(out))
    with pytest.raises(InputError, match="out= and cluster= apply to images given as files"):
        ij.run(PREDICT, f"model=[{model}] out=[{tmp_path / 'x.tif'}]", image=in_memory)


def test_out_ome_zarr_equals_predict_zarr_and_shows_nothing(ij, scan, tmp_path):
    from engine.blockwise import predict_zarr

    model, image = scan
    out = tmp_path / "scan.ome.zarr"
    result = ij.run(PREDICT, f"model=[{model}] image=[{image}] out=[{out}]")
    assert result.images == [] and result.info["labels"] == str(out)
    assert result.info["computed"] == result.info["blocks"] >= 1
    predict_zarr(model, image, tmp_path / "reference.ome.zarr")
    np.testing.assert_array_equal(read_zarr_labels(out), read_zarr_labels(tmp_path / "reference.ome.zarr"))
    again = ij.run(PREDICT, f"model=[{model}] image=[{image}] out=[{out}]")  # finished: nothing recomputed
    assert again.info["computed"] == 0


def test_an_ome_zarr_image_gets_its_labels_group(ij, scan, tmp_path):
    from engine.blockwise import predict_zarr

    model, _ = scan
    container = write_ome_zarr(tmp_path / "scan.ome.zarr", volume())
    reference = write_ome_zarr(tmp_path / "reference.ome.zarr", volume())
    result = ij.run(PREDICT, f"model=[{model}] image=[{container}] out=[{container}]")
    predict_zarr(model, reference, reference)
    assert result.info["labels"] == str(container / "labels" / "deepseg")
    np.testing.assert_array_equal(read_zarr_labels(container / "labels" / "deepseg"),
                                  read_zarr_labels(reference / "labels" / "deepseg"))
    shown = ij.run(PREDICT, f"model=[{model}] image=[{container}]")  # no out=: a TIFF, shown as a virtual stack
    (labels,) = shown.images
    assert labels.getStack().isVirtual() and shown.info["labels"].endswith(".tif")
    np.testing.assert_array_equal(ij.to_xarray(labels).values, read_zarr_labels(reference / "labels" / "deepseg"))
    assert labels.getCalibration().pixelDepth == pytest.approx(2.0)


def test_a_macro_predicts_a_file_into_ome_zarr_on_a_local_cluster(ij, scan, tmp_path):
    from engine.blockwise import predict_zarr

    model, image = scan
    out = tmp_path / "cluster.ome.zarr"
    ij.run_macro(f'run("DeepSeg Predict...", "model=[{model}] image=[{image}] out=[{out}] cluster=local:2 '
                 f'tile=16,32,32");')
    predict_zarr(model, image, tmp_path / "reference.ome.zarr", tile=(16, 32, 32))
    np.testing.assert_array_equal(read_zarr_labels(out), read_zarr_labels(tmp_path / "reference.ome.zarr"))


def test_outputs_that_would_replace_the_input_or_need_zarr_are_refused(ij, scan, tmp_path):
    model, image = scan
    link = tmp_path / "link.tif"
    link.symlink_to(image)
    for out in (image, link):
        with pytest.raises(InputError, match=r"out '.*' is the image '.*scan.tif': choose another output path"):
            ij.run(PREDICT, f"model=[{model}] image=[{image}] out=[{out}]")
    with pytest.raises(InputError, match=r"cluster 'local:2'.*name the output \*.zarr or \*.ome.zarr"):
        ij.run(PREDICT, f"model=[{model}] image=[{image}] out=[{tmp_path / 'x.tif'}] cluster=local:2")
    with pytest.raises(InputError, match=r"out='.*x.png' is not a label file: expected a .tif, .zarr or .ome.zarr"):
        ij.run(PREDICT, f"model=[{model}] image=[{image}] out=[{tmp_path / 'x.png'}]")
    assert not (tmp_path / "x.tif").exists() and image.stat().st_size > 0


def test_cancel_leaves_no_label_file(ij, scan, tmp_path):
    model, image = scan
    out = tmp_path / "cancelled.tif"
    ij.progress_callback = lambda progress: ij.cancel()
    try:
        with pytest.raises(Cancelled):
            ij.run(PREDICT, f"model=[{model}] image=[{image}] out=[{out}] tile=16,32,32")
    finally:
        ij.progress_callback = None
    assert not out.exists() and list(tmp_path.iterdir()) == []
