"""Post-processing (engine.postprocess, engine.components): real effects, chunked == in memory, CLI, predict."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from scipy import ndimage

from engine.components import connected_components
from engine.errors import Cancelled, InputError
from engine.io import read_labels, write_labels
from engine.postprocess import parse_steps, postprocess, postprocess_file

ANISO = {"pln": 2.0, "row": 0.5, "col": 0.5}  # µm: one voxel is 0.5 µm³


def blocks(shape, *boxes, value=1, dtype=np.uint8) -> np.ndarray:
    """Labels with ``value`` in each box (a tuple of (start, stop) per axis)."""
    labels = np.zeros(shape, dtype)
    for box in boxes:
        labels[tuple(slice(a, b) for a, b in box)] = value
    return labels


def rods(shape, lengths, value=1) -> np.ndarray:
    """One straight rod of each length along the last axis, on its own row (objects of exactly that size)."""
    labels = np.zeros(shape, np.uint8)
    for i, n in enumerate(lengths):
        labels[1, 1 + 2 * i, 1:1 + n] = value
    return labels


def sizes_of(labels: np.ndarray, value: int = 1) -> list[int]:
    parts, _ = ndimage.label(labels == value)
    return sorted(np.bincount(parts.ravel())[1:].tolist())


# ----------------------------------------------------------------------------------------------- components


@pytest.mark.parametrize("chunks", [None, (1, 1, 1), (2, 3, 4), (5, 2, 7)])
def test_chunked_components_are_scipys_components(chunks):
    rng = np.random.default_rng(4)
    mask = rng.random((9, 12, 13)) > 0.6
    expected, count = ndimage.label(mask)
    parts = connected_components(mask, chunks=chunks)
    found = parts.read((slice(None),) * 3)
    assert parts.count == count
    assert len(set(zip(expected[mask].tolist(), found[mask].tolist()))) == count  # the same partition
    assert (found[~mask] == 0).all()
    assert sorted(parts.sizes[1:].tolist()) == sorted(np.bincount(expected.ravel())[1:].tolist())
    on_border = set(np.unique(np.concatenate([expected[0].ravel(), expected[-1].ravel(), expected[:, 0].ravel(),
                                              expected[:, -1].ravel(), expected[..., 0].ravel(),
                                              expected[..., -1].ravel()]))) - {0}
    assert int(parts.touches_border.sum()) == len(on_border)


def test_components_within_planes_do_not_connect_along_z():
    mask = np.zeros((3, 4, 4), bool)
    mask[:, 1:3, 1:3] = True  # one column through all planes
    assert connected_components(mask, chunks=(1, 2, 2)).count == 1
    per_plane = connected_components(mask, chunks=(1, 2, 2), axes=(1, 2))
    assert per_plane.count == 3 and not per_plane.touches_border[1:].any()  # z faces are no border in 2D


# ----------------------------------------------------------------------------------------------- steps


def test_min_size_in_voxels_removes_n_minus_1_and_keeps_n():
    labels = rods((3, 9, 12), [7, 8, 9])
    labels[2, 0, :3] = 2  # another class, smaller than the threshold: untouched
    out = postprocess(labels, "1: min-size=8", axes="ZYX").values
    assert sizes_of(out) == [8, 9]
    assert (out == 2).sum() == 3
    assert sizes_of(postprocess(labels, "all: min-size=8", axes="ZYX").values, 2) == []


def test_physical_min_size_honours_anisotropic_spacing():
    labels = rods((3, 9, 24), [19, 20])  # 9.5 µm³ and 10 µm³ with voxels of 2 x 0.5 x 0.5 µm
    kept = postprocess(labels, "1: min-size=10um3", axes="ZYX", spacing=ANISO, unit="µm").values
    assert sizes_of(kept) == [20]
    assert sizes_of(postprocess(labels, "1: min-size=1e-8mm3", axes="ZYX", spacing=ANISO, unit="µm").values) == [20]
    isotropic = postprocess(labels, "1: min-size=10um3", axes="ZYX", spacing={"pln": 1, "row": 1, "col": 1},
                            unit="µm").values  # 1 µm³ voxels: both are large enough
    assert sizes_of(isotropic) == [19, 20]
    flat = postprocess(labels[1], "1: min-size=5um2", axes="YX", spacing={"row": 0.5, "col": 0.5}, unit="µm")
    assert sizes_of(flat.values) == [20]  # 4.75 µm² removed, 5 µm² kept


def test_physical_sizes_need_a_physical_unit_and_the_right_dimension():
    labels = rods((3, 9, 24), [19, 20])
    with pytest.raises(InputError, match=r"min-size=10um3 needs the voxel size in a physical unit.*--spacing"):
        postprocess(labels, "1: min-size=10um3", axes="ZYX")
    with pytest.raises(InputError, match=r"min-size=10um2 is an area but the labels are 3D: give a volume"):
        postprocess(labels, "1: min-size=10um2", axes="ZYX", spacing=ANISO, unit="µm")


def test_fill_holes_3d_and_plane_by_plane():
    tube = blocks((6, 9, 9), ((0, 6), (2, 7), (2, 7)))
    tube[:, 4, 4] = 0  # a lumen open at both ends in z: a hole in every plane, not in 3D
    in_3d = postprocess(tube, "1: fill-holes=3d", axes="ZYX").values
    per_plane = postprocess(tube, "1: fill-holes=2d", axes="ZYX").values
    assert (in_3d == tube).all()
    assert (per_plane[:, 4, 4] == 1).all() and (per_plane == 1).sum() == (tube == 1).sum() + 6
    closed = tube.copy()
    closed[0, 4, 4] = closed[-1, 4, 4] = 1  # capped: now a cavity in 3D
    filled = postprocess(closed, "1: fill-holes", axes="ZYX").values
    assert (filled[:, 4, 4] == 1).all()


def test_fill_holes_keeps_other_classes_inside():
    cell = blocks((7, 7), ((1, 6), (1, 6)))
    cell[2:5, 2:5] = 0
    cell[3, 3] = 2  # a nucleus inside the hole
    out = postprocess(cell, "1: fill-holes", axes="YX").values
    assert out[3, 3] == 2 and (out[2:5, 2:5] != 0).all() and (out == 1).sum() == 24


def test_largest_keeps_only_the_largest_object():
    labels = rods((3, 9, 12), [3, 9, 5])
    labels[2, 2, :2] = 2
    out = postprocess(labels, "1: largest", axes="ZYX").values
    assert sizes_of(out) == [9] and (out == 2).sum() == 2


def test_closing_and_opening_radius_is_anisotropy_aware():
    labels = blocks((7, 12, 16), ((1, 3), (2, 10), (2, 7)), ((1, 3), (2, 10), (9, 14)), ((4, 6), (2, 10), (2, 14)))
    # blocks 1 and 2 are 2 voxels (1 µm) apart in x; block 3 lies one plane (2 µm) below them
    physical = postprocess(labels, "closing=1um", axes="ZYX", spacing=ANISO, unit="µm").values
    assert (physical[1:3, 3:9, 7:9] == 1).all()  # the gap in x is closed (radius 2 voxels in-plane)
    assert (physical[3] == 0).all()  # the gap in z is not (radius 0.5 voxel along z)
    in_voxels = postprocess(labels, "closing=1", axes="ZYX", spacing=ANISO, unit="µm").values
    assert (in_voxels[3, 3:9, 3:6] == 1).all()  # 1 voxel in every axis: the z gap closes
    spur = blocks((12, 12), ((2, 8), (2, 8)))
    spur[5, 8:11] = 1  # a one-pixel line sticking out
    opened = postprocess(spur, "opening=1", axes="YX").values
    assert (opened[5, 9:11] == 0).all() and (opened[3:7, 3:7] == 1).all()


def test_steps_never_turn_one_class_into_another():
    labels = blocks((10, 10), ((2, 8), (2, 4)), ((2, 8), (6, 8)))
    labels[2:8, 4:6] = 2  # class 2 between the two parts of class 1
    out = postprocess(labels, "1: closing=2; 2: opening=3", axes="YX").values
    assert ((labels == 1) <= (out == 1)).all() and (out[2:8, 4:6] != 1).all()
    assert (out == 2).sum() == 0  # opened away: background, not class 1


def test_step_syntax_errors_name_the_text_and_the_valid_steps():
    assert str(parse_steps("bone : min-size = 500 µm³ , fill-holes , LARGEST ; closing=2")) == \
        "bone: min-size=500um3, fill-holes=3d, largest; all: closing=2"
    for bad in ("bone: min-siz=5", "bone: largest=2", "fill-holes=4d", "opening=2um3", "bone: min-size=five"):
        with pytest.raises(InputError, match=r"post-processing step .*valid steps: min-size=N|a radius is a length"):
            parse_steps(bad)
    with pytest.raises(InputError, match=r"unknown unit 'furlong'"):
        parse_steps("min-size=3furlong")
    with pytest.raises(InputError, match=r"class 'tooth' is unknown: the classes are background, bone"):
        postprocess(np.zeros((3, 3), np.uint8), "tooth: largest", axes="YX", class_names=["background", "bone"])
    assert not parse_steps("none") and not parse_steps(" ")


def test_time_series_is_processed_per_time_point():
    labels = np.stack([rods((3, 9, 12), [3, 9]), rods((3, 9, 12), [9, 3])])
    out = postprocess(labels, "min-size=5", axes="TZYX").values
    assert out.shape == labels.shape and sizes_of(out[0]) == [9] and sizes_of(out[1]) == [9]


# ----------------------------------------------------------------------------------------------- chunked


def crossing_volume() -> np.ndarray:
    """Objects, holes and gaps that cross the borders of tiny chunks: a hollow box, a tube open in z,
    specks, two classes, a thin bridge."""
    labels = np.zeros((11, 17, 19), np.uint8)
    labels[1:9, 1:11, 1:11] = 1
    labels[3:7, 3:8, 3:8] = 0  # cavity in 3D across chunk borders
    labels[4, 5, 5] = 2
    labels[:, 12:16, 12:17] = 1
    labels[:, 13:15, 14] = 0  # lumen open in z
    labels[9, 1:16, 5] = 1  # a thin bridge between them
    rng = np.random.default_rng(7)
    specks = rng.random(labels.shape) > 0.97
    labels[specks & (labels == 0)] = 2
    return labels


STEP_CASES = ["1: min-size=40; 2: min-size=2", "1: fill-holes=3d", "1: fill-holes=2d", "all: largest",
              "1: closing=1.5um", "all: opening=1", "2: closing=1, min-size=3um3; 1: fill-holes, largest, opening=2"]


@pytest.mark.parametrize("steps", STEP_CASES)
def test_chunked_result_equals_the_in_memory_result(tmp_path, steps):
    labels = crossing_volume()
    source = write_labels(tmp_path / "labels.tif", labels, axes="ZYX", spacing=ANISO, unit="µm")
    expected = postprocess(read_labels(source), steps).values
    assert (expected != labels).any()  # the steps do something here
    for chunks in [(2, 3, 4), (3, 5, 2)]:
        summary = postprocess_file(source, tmp_path / "chunked.tif", steps, chunks=chunks)
        result = read_labels(tmp_path / "chunked.tif")
        np.testing.assert_array_equal(result.values, expected)
        assert result.attrs["spacing"] == ANISO and summary["chunks"] == list(chunks)
    from engine.chunked_io import read_zarr

    postprocess_file(source, tmp_path / "chunked.zarr", steps, chunks=(2, 3, 4))
    np.testing.assert_array_equal(read_zarr(tmp_path / "chunked.zarr").values, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunked.tif", "chunked.zarr", "labels.tif"]  # no scratch


def test_zarr_input_chunked(tmp_path):
    from engine.chunked_io import read_zarr

    labels = crossing_volume()
    write_labels(tmp_path / "labels.tif", labels, axes="ZYX", spacing=ANISO, unit="µm")
    postprocess_file(tmp_path / "labels.tif", tmp_path / "labels.ome.zarr", "none", chunks=(4, 4, 4))
    steps = "1: fill-holes, min-size=100um3; all: closing=1"
    postprocess_file(tmp_path / "labels.ome.zarr", tmp_path / "clean.tif", steps, chunks=(3, 4, 5))
    expected = postprocess(labels, steps, axes="ZYX", spacing=ANISO, unit="µm").values
    np.testing.assert_array_equal(read_labels(tmp_path / "clean.tif").values, expected)
    assert read_zarr(tmp_path / "labels.ome.zarr").attrs["spacing"] == ANISO
    with pytest.raises(InputError, match=r"exists: delete it or choose another path"):
        postprocess_file(tmp_path / "labels.tif", tmp_path / "labels.ome.zarr", "none")


def test_output_is_atomic_and_never_the_input(tmp_path):
    source = write_labels(tmp_path / "labels.tif", crossing_volume(), axes="ZYX")
    with pytest.raises(InputError, match=r"never overwrites its inputs"):
        postprocess_file(source, tmp_path / "labels.tif", "largest")
    before = source.read_bytes()
    with pytest.raises(Cancelled):
        postprocess_file(source, tmp_path / "out.tif", "all: largest, min-size=3", chunks=(3, 3, 3),
                         progress=lambda p: False if p.done >= 2 else None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif"] and source.read_bytes() == before
    with pytest.raises(InputError, match=r"spacing '2,1' is not valid"):
        postprocess_file(source, tmp_path / "out.tif", "largest", spacing="2,1")


# ----------------------------------------------------------------------------------------------- CLI


def test_cli_postprocess_with_spacing(tmp_path, capsys):
    from engine.cli import main

    source = write_labels(tmp_path / "labels.tif", rods((3, 9, 24), [19, 20]), axes="ZYX")  # uncalibrated
    out = tmp_path / "clean.tif"
    assert main(["postprocess", str(source), "--out", str(out), "--steps", "bone: min-size=10um3",
                 "--class-names", "background,bone", "--spacing", "2,0.5,0.5um", "--chunk", "2", "--quiet"]) == 0
    assert sizes_of(read_labels(out).values) == [20]
    assert "bone: min-size=10um3" in capsys.readouterr().out
    assert main(["postprocess", str(source), "--out", str(out), "--steps", "bone: shrink"]) == 2
    assert "post-processing step 'shrink'" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- predict


@pytest.fixture
def own_model(tiny_model, tmp_path):
    """A copy of the tiny model that a test may change."""
    return shutil.copytree(tiny_model[0], tmp_path / "model")


def test_stored_default_is_applied_by_predict_and_disabled_by_none(own_model, tmp_path, capsys):
    from conftest import blob_images
    from engine.cli import main
    from engine.io import write_image
    from engine.model_files import load_model, stored_postprocess
    from engine.prediction import predict, predict_file

    image = blob_images(1, shape=(48, 64), seed=3)[0][0]
    source = write_image(tmp_path / "image.tif", image)
    raw = predict(own_model, image, postprocess="none").labels
    assert (raw.values == 1).any(), "the tiny model predicts no foreground here"
    steps = "class1: min-size=100000"  # removes every object: a visible effect
    expected = postprocess(raw, steps, class_names=load_model(own_model, device="cpu").class_names)
    assert (expected.values == 0).all()

    assert main(["predict", str(own_model), str(source), "--out", str(tmp_path / "a.tif"), "--quiet",
                 "--postprocess", steps, "--save-postprocess"]) == 0
    assert stored_postprocess(own_model) == steps
    assert (read_labels(tmp_path / "a.tif").values == 0).all()
    np.testing.assert_array_equal(predict(own_model, image).labels.values, expected.values)  # stored default
    summary = predict_file(own_model, source, tmp_path / "b.tif")
    assert (read_labels(tmp_path / "b.tif").values == 0).all() and summary["class_voxels"]["class1"] == 0
    assert read_labels(tmp_path / "b.tif").attrs["spacing"] == image.attrs["spacing"]
    predict_file(own_model, source, tmp_path / "c.tif", postprocess="none")
    np.testing.assert_array_equal(read_labels(tmp_path / "c.tif").values, raw.values)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no raw leftovers
    assert main(["info", str(own_model)]) == 0 and f"postprocess   {steps}" in capsys.readouterr().out

    assert main(["predict", str(own_model), str(source), "--out", str(tmp_path / "d.tif"), "--quiet",
                 "--postprocess", "none", "--save-postprocess"]) == 0
    assert stored_postprocess(own_model) is None
    np.testing.assert_array_equal(read_labels(tmp_path / "d.tif").values, raw.values)
    assert main(["predict", str(own_model), str(source), "--out", str(tmp_path / "e.tif"),
                 "--postprocess", "tooth: largest"]) == 2
    assert "class 'tooth' is unknown: the classes are background, class1" in capsys.readouterr().err
