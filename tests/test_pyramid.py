"""Multiscale NGFF label outputs: which levels, chunked strided writing, levels matching a multi-level image,
a new *.ome.zarr read back by ome-zarr's own reader, and regeneration after a crash while levels were written."""

from __future__ import annotations

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")
pytest.importorskip("ome_zarr")

from blockwise_fixtures import random_model, volume  # noqa: E402

from engine import predict_zarr  # noqa: E402
from engine import pyramid  # noqa: E402
from engine.chunked_io import deepseg_record, open_volume  # noqa: E402
from engine.errors import InputError  # noqa: E402
from engine.pyramid import Level, choose_levels, generic_levels, write_level  # noqa: E402


@pytest.fixture(scope="module")
def unet2d(tmp_path_factory):
    return random_model(tmp_path_factory.mktemp("models") / "unet2d", network="unet2d", patch=(32, 32), seed=3)


def _multiscale(group_path) -> dict:
    attrs = dict(zarr.open_group(str(group_path), mode="r").attrs)
    return attrs.get("ome", attrs)["multiscales"][0]


def _pick(level0: np.ndarray, factors, offsets) -> np.ndarray:
    return level0[tuple(slice(o, None, f) for f, o in zip(factors, offsets))]


# -------------------------------------------------------------------------------------------- choice


def test_isotropic_volume_is_halved_in_every_axis_down_to_64_voxels():
    assert choose_levels((512, 512, 512), (1.0, 1.0, 1.0), "zyx") == [(2, 2, 2), (4, 4, 4), (8, 8, 8)]
    assert choose_levels((1, 300, 512, 512), (1.0, 1.0, 1.0, 1.0), "tzyx")[0] == (1, 2, 2, 2)  # t never


def test_anisotropic_z_is_downsampled_only_once_in_plane_voxels_are_coarse_enough():
    # z 4 um, y/x 0.5 um: z is halved only when the in-plane voxel size reaches 4 um (level 3)
    assert choose_levels((100, 1024, 1024), (4.0, 0.5, 0.5), "zyx") == [
        (1, 2, 2), (1, 4, 4), (2, 8, 8), (4, 16, 16)]
    assert choose_levels((1, 256, 256), (1.0, 1.0, 1.0), "zyx") == [(1, 2, 2), (1, 4, 4)]  # one plane stays


def test_2d_levels_stop_at_64_voxels_or_after_five_levels():
    assert choose_levels((300, 200), (1.0, 1.0), "yx") == [(2, 2), (4, 4)]  # next would be 38 x 25
    assert choose_levels((8192, 100), (1.0, 1.0), "yx") == [(2 ** k, 2 ** k) for k in range(1, 6)]


def test_tiny_volumes_get_no_levels():
    assert choose_levels((24, 64, 64), (1.0, 1.0, 1.0), "zyx") == []
    assert choose_levels((126, 126), (1.0, 1.0), "yx") == []  # 63 x 63 would be below 64
    assert choose_levels((127, 127), (1.0, 1.0), "yx") == [(2, 2)]
    assert generic_levels((24, 64, 64), [{"type": "scale", "scale": [1.0, 1.0, 1.0]}], "zyx") == []


def test_generic_levels_scale_the_voxel_size_and_keep_the_translation():
    transforms = [{"type": "scale", "scale": [2.0, 0.5, 0.5]}, {"type": "translation", "translation": [1.0, 3.0, 5.0]}]
    levels = generic_levels((10, 257, 130), transforms, "zyx")
    assert [level.shape for level in levels] == [(10, 129, 65), (5, 65, 33)]  # level0[::2] of 257: 129 elements
    assert levels[0].transforms == ({"type": "scale", "scale": [2.0, 1.0, 1.0]},
                                    {"type": "translation", "translation": [1.0, 3.0, 5.0]})
    assert levels[1].transforms[0] == {"type": "scale", "scale": [4.0, 2.0, 2.0]}


# ------------------------------------------------------------------------------------------ writing


class _Recorder:
    """A zarr array whose orthogonal reads are recorded (to check that they stay bounded)."""

    def __init__(self, array):
        self.array, self.sizes = array, []

    def get_orthogonal_selection(self, selection):
        values = self.array.get_orthogonal_selection(selection)
        self.sizes.append(values.size)
        return values


@pytest.mark.parametrize("budget", [500, 1 << 24])
def test_chunked_writing_equals_the_whole_array_stride_pick(tmp_path, budget):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 7, (13, 45, 70), dtype=np.uint8)  # no size a multiple of the chunk
    source = zarr.create_array(str(tmp_path / "s.zarr"), shape=data.shape, chunks=(4, 16, 32), dtype="u1")
    source[:] = data
    for factors, offsets in (((1, 2, 2), (0, 0, 0)), ((2, 4, 3), (1, 2, 2))):
        level = Level(tuple(-(-(n - o) // f) for n, f, o in zip(data.shape, factors, offsets)), factors, offsets, ())
        target = zarr.create_array(str(tmp_path / f"t{factors}.zarr"), shape=level.shape, chunks=(4, 16, 32),
                                   dtype="u1")
        recorder = _Recorder(source)
        write_level(recorder, target, level.picks(data.shape), region_voxels=budget)
        np.testing.assert_array_equal(target[:], _pick(data, factors, offsets))
        assert max(recorder.sizes) <= max(budget, 4 * 16 * 32)  # bounded reads: one chunk or the budget
        if budget == 500:
            assert len(recorder.sizes) > 1


# ------------------------------------------------------------------------------- beside a 3-level image


def _three_level_image(path, data: np.ndarray, zarr_format: int):
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_image

    fmt = FormatV05() if zarr_format == 3 else FormatV04()
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    axes = [{"name": "c", "type": "channel"}] + [{"name": n, "type": "space"} for n in "zyx"]
    write_image(data[None], group, axes=axes, fmt=fmt, scale=dict(zip("czyx", (1.0, 2.0, 0.5, 0.5))),
                axes_units={n: "micrometer" for n in "zyx"},
                scale_factors=[{"z": 1, "y": 2, "x": 2}, {"z": 2, "y": 4, "x": 4}],
                storage_options={"chunks": (1, 4, 32, 32)})
    return path


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_labels_beside_a_three_level_image_match_its_levels(tmp_path, unet2d, zarr_format):
    scan = _three_level_image(tmp_path / "scan.ome.zarr", volume(shape=(8, 70, 90)), zarr_format)
    predict_zarr(unet2d, scan, scan, block=(4,), device="cpu")
    image, labels = _multiscale(scan), _multiscale(scan / "labels" / "deepseg")
    assert [d["path"] for d in labels["datasets"]] == ["0", "1", "2"]
    level0 = zarr.open_array(str(scan / "labels" / "deepseg" / "0"))[:]
    expected_offsets = [(0, 0, 0), (0, 0, 0), (0, 2, 2)]  # round((t_k - t_0) / s_0), clipped to [0, f - 1]
    for k, (own, theirs) in enumerate(zip(labels["datasets"], image["datasets"])):
        assert own["coordinateTransformations"] == [
            {**t, t["type"]: t[t["type"]][1:]} for t in theirs["coordinateTransformations"]]  # channel dropped
        level = zarr.open_array(str(scan / "labels" / "deepseg" / own["path"]))
        image_shape = zarr.open_array(str(scan / theirs["path"])).shape[1:]
        assert level.shape == image_shape
        factors = tuple(round(n0 / n) for n0, n in zip(level0.shape, image_shape))
        np.testing.assert_array_equal(level[:], _pick(level0, factors, expected_offsets[k]))
    assert len(np.unique(level0)) > 1  # real labels, not an empty volume
    assert open_volume(scan / "labels" / "deepseg").spatial_shape == (8, 70, 90)  # our reader: level 0


# --------------------------------------------------------------------------------- a new *.ome.zarr


def _read_with_ome_zarr(path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader

    nodes = list(Reader(parse_url(str(path)))())
    node = next(n for n in nodes if any(isinstance(s, Multiscales) for s in n.specs))
    return node


def test_new_ome_zarr_from_tiff_gets_stride_levels_ome_zarr_can_read(tmp_path, unet2d):
    from blockwise_fixtures import write_tiff

    tif = write_tiff(tmp_path / "stack.tif", volume(shape=(6, 150, 260)), spacing=(2.0, 0.5, 0.5))
    out = tmp_path / "labels.ome.zarr"
    predict_zarr(unet2d, tif, out, probabilities=tmp_path / "p.ome.zarr", block=(3,), device="cpu")
    datasets = _multiscale(out)["datasets"]
    # in-plane 0.5 -> 1 -> 2 um; z (2 um) is halved only at level 2, where it stays <= 2 x 2 um
    assert [d["coordinateTransformations"] for d in datasets] == [
        [{"type": "scale", "scale": s}] for s in ([2.0, 0.5, 0.5], [2.0, 1.0, 1.0], [4.0, 2.0, 2.0])]
    level0 = zarr.open_array(str(out / "0"))[:]
    for path, factors in (("1", (1, 2, 2)), ("2", (2, 4, 4))):
        level = zarr.open_array(str(out / path))
        assert level.chunks == tuple(min(c, n) for c, n in zip(zarr.open_array(str(out / "0")).chunks, level.shape))
        np.testing.assert_array_equal(level[:], _pick(level0, factors, (0, 0, 0)))
    node = _read_with_ome_zarr(out)
    assert [tuple(a.shape) for a in node.data] == [(6, 150, 260), (6, 75, 130), (3, 38, 65)]
    np.testing.assert_array_equal(np.asarray(node.data[2]), zarr.open_array(str(out / "2"))[:])
    assert len(_multiscale(tmp_path / "p.ome.zarr")["datasets"]) == 1  # probabilities stay single-level
    assert open_volume(out).spatial_shape == (6, 150, 260)


def test_2d_image_into_plain_zarr_stays_single_level_and_into_ome_zarr_gets_yx_levels(tmp_path, unet2d):
    import tifffile

    image = volume(shape=(1, 150, 140))[0]
    tif = tmp_path / "plane.tif"
    tifffile.imwrite(tif, image)
    predict_zarr(unet2d, tif, tmp_path / "plain.zarr", device="cpu")
    assert isinstance(zarr.open(str(tmp_path / "plain.zarr"), mode="r"), zarr.Array)  # one array, no levels
    predict_zarr(unet2d, tif, tmp_path / "plane.ome.zarr", device="cpu")
    datasets = _multiscale(tmp_path / "plane.ome.zarr")["datasets"]
    assert [d["path"] for d in datasets] == ["0", "1"]  # 75 x 70, then 38 x 35 would be below 64
    level0 = zarr.open_array(str(tmp_path / "plane.ome.zarr" / "0"))[:]
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "plane.ome.zarr" / "1"))[:], level0[::2, ::2])


# ------------------------------------------------------------------------------------ interruption


def test_crash_while_writing_levels_leaves_it_unfinished_and_rerun_regenerates_them(tmp_path, unet2d, monkeypatch):
    from blockwise_fixtures import write_tiff

    tif = write_tiff(tmp_path / "stack.tif", volume(shape=(6, 150, 260)))
    out = tmp_path / "labels.ome.zarr"
    real, calls = write_level, []

    def dying(source, target, picks, *args, **kwargs):
        calls.append(target.shape)
        if len(calls) > 1:  # level 1 written, then the process "dies" inside level 2
            target[(slice(0, 1),) * target.ndim] = 99  # a half-written, wrong level
            raise RuntimeError("killed while writing level 2")
        return real(source, target, picks, *args, **kwargs)

    monkeypatch.setattr(pyramid, "write_level", dying)
    with pytest.raises(RuntimeError, match="killed"):
        predict_zarr(unet2d, tif, out, block=(3,), device="cpu")
    assert deepseg_record(out)["complete"] is False
    with pytest.raises(InputError, match="unfinished"):
        open_volume(out)
    assert len(_multiscale(out)["datasets"]) == 1  # the levels are listed only once written
    monkeypatch.setattr(pyramid, "write_level", real)
    summary = predict_zarr(unet2d, tif, out, block=(3,), device="cpu")
    assert summary["computed"] == 0 and summary["already_finished"] == 2
    assert deepseg_record(out)["complete"] is True
    level0 = zarr.open_array(str(out / "0"))[:]
    for path, factors in (("1", (1, 2, 2)), ("2", (2, 4, 4))):
        np.testing.assert_array_equal(zarr.open_array(str(out / path))[:], _pick(level0, factors, (0, 0, 0)))
    assert [d["path"] for d in _multiscale(out)["datasets"]] == ["0", "1", "2"]
    stamp = (out / "2" / "zarr.json").stat().st_mtime_ns
    monkeypatch.setattr(pyramid, "write_level", dying)  # a complete output is left alone: no level rewritten
    assert predict_zarr(unet2d, tif, out, block=(3,), device="cpu")["computed"] == 0
    assert (out / "2" / "zarr.json").stat().st_mtime_ns == stamp
