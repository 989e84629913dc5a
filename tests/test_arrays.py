"""engine.arrays: mirror padding, crops, z-context stacks, slabs, finite checks and dtype rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.arrays import (
    centre_crop,
    check_finite,
    crop_padded,
    fit_dtype,
    fit_window,
    iter_slabs,
    label_array,
    label_dtype,
    mirror_index,
    plane_patch,
    read_padded,
    whole_labels,
    z_context_indices,
    z_context_stack,
)
from engine.errors import InputError
from engine.losses import IGNORE_INDEX

IMAGEJ = ("u1", "u2", "i2", "f4")


# ------------------------------------------------------------------------------------ mirror padding


@pytest.mark.parametrize("mode", ["reflect", "symmetric", "edge", "constant"])
@pytest.mark.parametrize("origin, size", [((-3, 2), (6, 4)), ((4, -9), (9, 20)), ((1, 1), (3, 3)), ((-7, 5), (20, 1))])
def test_read_padded_equals_numpy_pad(mode, origin, size, tmp_path):
    source = np.lib.format.open_memmap(tmp_path / "a.npy", mode="w+", dtype=np.int32, shape=(2, 6, 7))
    source[:] = np.arange(2 * 6 * 7).reshape(2, 6, 7)
    margin = 30
    padded = np.pad(np.asarray(source), [(0, 0), (margin, margin), (margin, margin)], mode=mode)
    expected = padded[(slice(None), *(slice(o + margin, o + margin + s) for o, s in zip(origin, size)))]
    np.testing.assert_array_equal(read_padded(source, origin, size, mode), expected)
    np.testing.assert_array_equal(read_padded(source[0], origin, size, mode, channel_axis=False), expected[0])


def test_read_padded_reflect_on_a_single_voxel_axis_repeats_it():
    assert read_padded(np.array([[7]]), [-2], [5]).tolist() == [[7] * 5]


def test_mirror_index_matches_reflect_padding():
    padded = np.pad(np.arange(5), 12, mode="reflect")
    assert [mirror_index(i, 5) for i in range(-12, 17)] == padded.tolist()
    assert mirror_index(-4, 1) == 0
    with pytest.raises(InputError, match="empty"):
        mirror_index(0, 0)


def test_crop_padded_mirrors_images_and_ignores_labels():
    image = np.arange(2 * 5 * 4).reshape(2, 5, 4)
    crop = crop_padded(image, [-2, 1], [6, 4], channel_axis=True)
    np.testing.assert_array_equal(crop, np.pad(image, [(0, 0), (2, 0), (0, 1)], mode="reflect")[:, :6, 1:5])
    wide = crop_padded(image, [-6, 0], [12, 4], channel_axis=True)  # overhang >= the image: symmetric
    np.testing.assert_array_equal(wide, np.pad(image, [(0, 0), (6, 1), (0, 0)], mode="symmetric"))
    labels = crop_padded(image[0].astype(np.int16), [-1, 3], [3, 3], channel_axis=False)
    assert labels.dtype == np.int16
    assert labels.tolist() == [[IGNORE_INDEX] * 3, [3, IGNORE_INDEX, IGNORE_INDEX], [7, IGNORE_INDEX, IGNORE_INDEX]]


def test_fit_window_keeps_windows_inside_or_covering():
    assert fit_window([-3, 8, 2], [4, 4, 10], [10, 10, 6]) == [0, 6, 0]
    assert fit_window([-9, 1], [10, 10], [6, 6]) == [-4, 0]


def test_centre_crop_numpy_and_torch():
    a = np.arange(2 * 7 * 6).reshape(2, 7, 6)
    np.testing.assert_array_equal(centre_crop(a, (3, 2)), a[:, 2:5, 2:4])
    t = torch.arange(7 * 6).reshape(1, 1, 7, 6)
    assert centre_crop(t, (4, 6)).shape == (1, 1, 4, 6) and int(centre_crop(t, (4, 6))[0, 0, 0, 0]) == 6
    with pytest.raises(InputError, match="cannot crop"):
        centre_crop(a, (8, 2))


# ----------------------------------------------------------------------------------------- z-context


def test_z_context_stack_is_plane_major_and_mirrored():
    volume = np.arange(4)[None, :, None, None] * np.ones((2, 4, 3, 5)) + np.arange(2)[:, None, None, None] * 10
    stack = z_context_stack(volume, 3, 5)
    assert stack.shape == (10, 3, 5)
    assert stack[:, 0, 0].tolist() == [1, 11, 2, 12, 3, 13, 2, 12, 1, 11]
    assert z_context_indices(3, 4, 5) == [1, 2, 3, 2, 1]
    cropped = z_context_stack(volume, 0, 3, starts=(-1, 2), size=(4, 4))
    np.testing.assert_array_equal(cropped[2:4], crop_padded(volume[:, 0], (-1, 2), (4, 4), channel_axis=True))
    np.testing.assert_array_equal(plane_patch(volume, 0, (-1, 2), (4, 4), 3), cropped)
    np.testing.assert_array_equal(plane_patch(volume, 2, (0, 0), (3, 5)), volume[:, 2])


@pytest.mark.parametrize("bad", [0, 2, -1, True, 2.0])
def test_z_context_must_be_odd(bad):
    with pytest.raises(InputError, match="z_context"):
        z_context_indices(0, 5, bad)


# ---------------------------------------------------------------------------------------------- slabs


def test_iter_slabs_cover_in_order_within_budget():
    slabs = list(iter_slabs(23, 7, budget=30))
    assert [(s.start, s.stop) for s in slabs] == [(0, 4), (4, 8), (8, 12), (12, 16), (16, 20), (20, 23)]
    assert [(s.start, s.stop) for s in iter_slabs(3, 100, budget=10)] == [(0, 1), (1, 2), (2, 3)]


def test_check_finite_reads_memmaps_slab_by_slab(tmp_path, monkeypatch):
    import engine.arrays as arrays

    pixels = np.lib.format.open_memmap(tmp_path / "p.npy", mode="w+", dtype=np.float32, shape=(2, 9, 4, 4))
    pixels[:] = 1
    check_finite(pixels, "ok")
    check_finite(np.zeros((1, 3, 3), np.uint8), "integers")
    pixels[1, 8, 3, 3] = np.inf
    pixels[1, 0, 0, 0] = np.nan
    read = []
    original = arrays.iter_slabs  # two planes of 16 values per slab, recorded
    monkeypatch.setattr(arrays, "iter_slabs", lambda *a: [read.append(s) or s for s in original(*a, budget=32)])
    with pytest.raises(InputError, match=r"'vol' contains 2 NaN or infinite values in channel 1"):
        check_finite(pixels, "vol")
    assert max(s.stop - s.start for s in read) == 2 and read[-1].stop == 9


# ---------------------------------------------------------------------------------------- dtype rules


def test_label_dtype():
    assert [label_dtype(k) for k in (2, 256, 257, 65536)] == [np.uint8, np.uint8, np.uint16, np.uint16]


@pytest.mark.parametrize(
    "values, dtype, expected",
    [([True, False], np.uint8, [1, 0]), ([0, 255], np.uint8, [0, 255]), ([0, 256], np.uint16, [0, 256]),
     ([0.0, 3.0], np.uint8, [0, 3]), (np.array([0, 300], np.int64), np.uint16, [0, 300]),
     (np.array([0, 7], np.uint32), np.uint8, [0, 7])],
)
def test_label_array(values, dtype, expected):
    out = label_array(np.asarray(values), "labels")
    assert out.dtype == dtype and out.tolist() == expected


@pytest.mark.parametrize(
    "values, match",
    [([0, -1], "negative"), ([0, 70000], "0..65535"), ([0, 0.5], "non-integer"), ([np.nan], "non-integer"),
     (np.array(["a"]), "dtype")],
)
def test_label_array_refuses(values, match):
    with pytest.raises(InputError, match=match):
        label_array(np.asarray(values), "labels")


def test_whole_labels_keeps_integers_and_widens_floats():
    ints = np.array([0, 70000], np.int64)
    assert whole_labels(ints, "x") is ints
    assert whole_labels(np.array([0.0, 70000.0]), "x").dtype == np.uint32


@pytest.mark.parametrize(
    "values, dtype",
    [(np.array([True, False]), np.uint8), (np.array([0, 255], np.int64), np.uint8),
     (np.array([0, 300], np.int32), np.uint16), (np.array([-5, 300], np.int64), np.int16),
     (np.array([-1, 70000], np.int64), np.float32), (np.array([0.5], np.float64), np.float32),
     (np.array([2], np.uint16), np.uint16)],
)
def test_fit_dtype_for_imagej(values, dtype):
    out = fit_dtype(values, IMAGEJ, "image")
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, values.astype(dtype) * (255 if values.dtype == bool else 1))


def test_fit_dtype_refuses_what_float32_cannot_hold():
    expected = r"-1\.\.33554433, which uint8, uint16, int16, float32 cannot hold exactly; hint"
    with pytest.raises(InputError, match=expected):
        fit_dtype(np.array([-1, 2**25 + 1]), IMAGEJ, "image", "; hint")
    with pytest.raises(InputError, match="complex"):
        fit_dtype(np.array([1j]), IMAGEJ, "image")


SAMPLES = [np.array([[True, False]]), np.array([[0, 200]], np.int64), np.array([[0, 300]], np.int32),
           np.array([[-5, 300]], np.int32), np.array([[-1, 70000]], np.int64), np.array([[0.25, 1]], np.float64)]


@pytest.mark.parametrize("values", SAMPLES, ids=lambda v: f"{v.dtype}{v.min()}..{v.max()}")
def test_imagej_tiff_and_fiji_bridge_cast_pixels_alike(tmp_path, values):
    from engine.io import read_image, write_image
    from fiji_bridge.convert import _imagej_pixels

    written = read_image(write_image(tmp_path / "a.tif", values, axes="YX")).values
    bridged = _imagej_pixels(values, "image")
    assert written.dtype == bridged.dtype
    np.testing.assert_array_equal(written, bridged)
