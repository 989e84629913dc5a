"""Augmentation suite (engine/augment.py): one grid for image and labels, presets, parsing, preview command."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from conftest import TINY_UNET, blob_images
from engine.augment import PRESETS, RANGES, TRANSFORMS, Augmentation, in_plane_only, parse_augmentation
from engine.config import TrainConfig
from engine.errors import InputError

OFF = PRESETS["none"]
SPATIAL_ONLY = {"noise": 0, "blur": 0, "brightness": 0, "contrast": 0, "lowres": 0, "gamma": 0}
# each transform on its own, with a range that surely changes the patch
FORCED = {"flip": {}, "rot90": {}, "rotate": {"rotate_range": (30, 60)}, "scale": {"scale_range": (1.2, 1.3)},
          "shear": {"shear_range": (8, 10)}, "elastic": {"elastic_range": (3, 4)}, "noise": {"noise_std": (0.5, 1)},
          "blur": {"blur_sigma": (1, 2)}, "brightness": {"brightness_range": (0.5, 1)},
          "contrast": {"contrast_range": (1.5, 2)}, "lowres": {"lowres_range": (0.5, 0.5)}, "gamma": {"gamma_range": (2, 3)}}


def blocks(shape, seed=0, values=(-1, 0, 1, 2, 3)):
    """Labels made of 8-voxel blocks (so most voxels are far from a label boundary)."""
    rng = np.random.default_rng(seed)
    coarse = rng.choice(values, size=tuple(-(-n // 8) for n in shape))
    grown = coarse
    for axis in range(len(shape)):
        grown = np.repeat(grown, 8, axis=axis)
    return grown[tuple(slice(0, n) for n in shape)].astype(np.int64)


def run(aug, labels, seed=0, channels=1, image=None, **kwargs):
    """Augment a batch whose image equals its labels (or ``image``); returns numpy (image, labels)."""
    x = torch.from_numpy(np.repeat(labels[:, None], channels, 1).astype(np.float32) if image is None else image)
    x, y = aug.batch(x, torch.from_numpy(labels), np.random.default_rng(seed), **kwargs)
    return x.numpy(), y.numpy()


def near_boundary(labels, spatial_dims):
    """Voxels within 2 voxels of another label or of the patch border (interpolation differs there)."""
    size = (1,) + (5,) * spatial_dims
    edge = dict(size=size, mode="constant", cval=100)
    return ndimage.maximum_filter(labels, **edge) != ndimage.minimum_filter(labels, **edge)


# ------------------------------------------------------------------------------------- spatial
@pytest.mark.parametrize("shape", [(3, 48, 40), (2, 24, 32, 32)])
@pytest.mark.parametrize("transform", ["flip", "rot90", "rotate", "scale", "shear", "elastic", "all"])
def test_spatial_transforms_move_image_and_labels_together(shape, transform):
    labels = blocks(shape, seed=1)
    settings = {**PRESETS["strong"], **SPATIAL_ONLY, "rotate": 1, "scale": 1, "shear": 1, "elastic": 1} \
        if transform == "all" else {**OFF, transform: 1.0, **FORCED[transform]}
    if transform == "rot90" and shape[-1] != shape[-2]:
        settings["rot90"] = 0.0
    x, y = run(Augmentation(**settings), labels, seed=4)
    assert x.shape == (shape[0], 1, *shape[1:]) and y.shape == shape
    mismatch = np.abs(x[:, 0] - y) > 0.5
    # the image (bilinear) and the labels (nearest) agree everywhere but next to label boundaries
    assert not (mismatch & ~near_boundary(y, len(shape) - 1)).any()
    assert set(np.unique(y)) <= set(np.unique(labels))  # nearest: original values only, ignore (-1) included
    assert (y == -1).any()
    if transform != "rot90" or settings["rot90"]:
        assert not np.array_equal(y, labels)  # the transform did something


def test_labels_keep_only_their_values_and_the_ignore_label_under_strong_augmentation():
    labels = blocks((4, 64, 64), seed=2, values=(-1, 0, 2, 5))
    image = np.random.default_rng(0).normal(size=(4, 2, 64, 64)).astype(np.float32)
    x, y = run(Augmentation.preset("strong"), labels, image=image, seed=9)
    assert set(np.unique(y)) == {-1, 0, 2, 5}
    assert 0.5 < (y == -1).mean() / (labels == -1).mean() < 1.5
    assert x.dtype == np.float32 and np.isfinite(x).all()


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_probability_zero_is_the_identity(transform):
    labels = blocks((3, 32, 32), seed=3)
    image = np.random.default_rng(1).normal(size=(3, 1, 32, 32)).astype(np.float32)
    off = Augmentation(**{**OFF, **FORCED[transform]})  # ranges set, probability 0
    x, y = run(off, labels, image=image)
    np.testing.assert_array_equal(x, image)
    np.testing.assert_array_equal(y, labels)
    on = Augmentation(**{**OFF, transform: 1.0, **FORCED[transform]})
    x, y = run(on, labels, image=image)
    assert not np.allclose(x, image, atol=1e-3)
    if transform in TRANSFORMS[:6]:
        assert not np.array_equal(y, labels)
    else:  # intensity transforms leave the labels alone
        np.testing.assert_array_equal(y, labels)


@pytest.mark.parametrize("angle,turns", [(90, 1), (-90, -1), (180, 2)])
@pytest.mark.parametrize("shape,in_plane", [((2, 40, 40), False), ((2, 6, 24, 24), True), ((2, 24, 24, 24), False)])
def test_rotation_by_a_quarter_turn_equals_np_rot90(angle, turns, shape, in_plane):
    labels = blocks(shape, seed=5)
    image = np.random.default_rng(2).normal(size=(shape[0], 2, *shape[1:])).astype(np.float32)
    aug = Augmentation(**{**OFF, "rotate": 1, "rotate_range": (angle, angle), "tilt_range": (0, 0)})
    x, y = run(aug, labels, image=image, in_plane=in_plane)
    np.testing.assert_array_equal(y, np.rot90(labels, turns, axes=(-2, -1)))
    np.testing.assert_allclose(x, np.rot90(image, turns, axes=(-2, -1)), atol=1e-4)


def test_anisotropic_3d_rotates_in_plane_only():
    shape = (2, 8, 32, 32)
    planes = np.broadcast_to(np.arange(8)[None, :, None, None], shape).copy()
    aug = Augmentation(**{**PRESETS["strong"], **SPATIAL_ONLY, "flip": 0, "rotate": 1, "scale": 1, "shear": 1,
                          "elastic": 1, "lowres": 1, "blur": 1})
    x, y = run(aug, planes, seed=3, in_plane=True)
    np.testing.assert_array_equal(y, planes)  # every output plane comes from its own input plane
    np.testing.assert_allclose(x[:, 0], planes, atol=1e-4)  # blur and low resolution stay in-plane too
    x, y = run(aug, planes, seed=3, in_plane=False)  # isotropic: rotations tilt out of the plane
    assert not np.array_equal(y, planes)


def test_in_plane_only_follows_voxel_size_and_patch_shape():
    assert in_plane_only([3.0, 1.0, 1.0], (16, 64, 64))
    assert in_plane_only([1.0, 1.0, 1.0], (8, 64, 64))
    assert not in_plane_only([1.0, 1.0, 1.0], (32, 64, 64))
    assert not in_plane_only([3.0, 1.0, 1.0], (64, 64))


def test_larger_crop_gives_the_centred_patch_when_nothing_moves():
    labels = blocks((2, 60, 52), seed=6)
    aug = Augmentation(**{**OFF, "rotate": 1, "rotate_range": (0, 0), "context": 1.5})  # resampled, identity
    x, y = run(aug, labels, shape=(40, 36))
    np.testing.assert_array_equal(y, labels[:, 10:50, 8:44])
    np.testing.assert_allclose(x[:, 0], labels[:, 10:50, 8:44], atol=1e-4)
    assert replace(Augmentation.preset("strong"), context=1.5).crop((64, 64)) == (96, 96)
    assert Augmentation.preset("strong").crop((8, 64, 64), in_plane=True) == (8, 64, 64)  # context 1: mirroring
    assert replace(Augmentation.preset("light"), context=1.5).crop((64, 64)) == (64, 64)  # nothing warps


def test_same_seed_same_batch_other_seed_other_batch():
    labels = blocks((2, 16, 32, 32), seed=7)
    aug = Augmentation(**{**PRESETS["strong"], "rotate": 1, "elastic": 1, "noise": 1})
    first, again, other = run(aug, labels, seed=11), run(aug, labels, seed=11), run(aug, labels, seed=12)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize("spatial", [(32, 40), (12, 24, 28)])
def test_batched_shapes_and_types(spatial):
    crop = tuple(s + 8 for s in spatial)
    labels = torch.from_numpy(blocks((3, *crop))).to(torch.int64)
    image = torch.randn(3, 2, *crop)
    x, y = Augmentation.preset("strong").batch(image, labels, np.random.default_rng(0), shape=spatial)
    assert x.shape == (3, 2, *spatial) and x.dtype == torch.float32 and x.is_contiguous()
    assert y.shape == (3, *spatial) and y.dtype == torch.int64


def test_single_patch_call_keeps_numpy_types():
    labels = blocks((1, 16, 16))[0].astype(np.int32)
    x, y = Augmentation.preset("strong")(labels[None].astype(np.float32), labels, np.random.default_rng(0))
    assert x.shape == (1, 16, 16) and x.dtype == np.float32 and y.dtype == np.int32


def test_anisotropic_blur_leaves_other_planes_alone():
    volume = np.zeros((1, 1, 5, 16, 16), np.float32)
    volume[0, 0, 2, 8, 8] = 1.0
    aug = Augmentation(**{**OFF, "blur": 1, "blur_sigma": (1.0, 1.0)})
    x, _ = run(aug, np.zeros((1, 5, 16, 16), np.int64), image=volume, in_plane=True)
    assert x[0, 0, [0, 1, 3, 4]].max() == 0 and 0 < x[0, 0, 2, 8, 8] < 1 and abs(x.sum() - 1) < 1e-4
    x, _ = run(aug, np.zeros((1, 5, 16, 16), np.int64), image=volume, in_plane=False)
    assert x[0, 0, 1].max() > 0


# -------------------------------------------------------------------------------- presets and text
def test_presets_and_advanced_strings():
    assert Augmentation.preset("none").describe() == "none"
    assert Augmentation.from_config("light") == Augmentation() == Augmentation.from_config({})  # older folders
    assert Augmentation.from_config(None) == Augmentation.preset("default")
    assert Augmentation.from_config({"flip": 0, "noise_std": 0.1}).noise_std == (0.1, 0.1)
    aug = parse_augmentation("rotate=0.2:-30:30, scale=0.2:0.7:1.4,elastic=0.1 blur=0.2")
    assert (aug.rotate, aug.rotate_range, aug.scale_range, aug.elastic, aug.blur) == (0.2, (-30, 30), (0.7, 1.4), 0.1, 0.2)
    assert aug.flip == 0 and aug.elastic_range == Augmentation().elastic_range  # items alone start from none
    strong = parse_augmentation("strong,elastic=0,shear_range=5,context=1.25")
    assert strong.elastic == 0 and strong.shear_range == (-5, 5) and strong.context == 1.25 and strong.lowres == 0.25
    assert set(RANGES) <= set(TRANSFORMS)


@pytest.mark.parametrize("text,message", [
    ("rotat=0.2", r"augmentation item 'rotat=0.2': unknown name 'rotat' \(did you mean 'rotate'\?\); "
                  r"valid: presets none, light, default, strong; transforms flip=P, rot90=P, rotate=P:LOW:HIGH"),
    ("stronk", r"unknown name 'stronk' \(did you mean 'strong'\?\)"),
    ("rotate=a", r"augmentation item 'rotate=a': expected numbers separated by ':'"),
    ("rotate=0.2:1", r"augmentation item 'rotate=0.2:1': expected rotate=P:LOW:HIGH or rotate=P"),
    ("flip=0.5:0:1", r"augmentation item 'flip=0.5:0:1': expected flip=P"),
    ("blur=", r"augmentation item 'blur=': expected blur=VALUE"),
    ("default,strong", r"names two presets \(default, strong\)"),
    ("noise=1.5", r"augmentation 'noise=1.5': probability noise=1.5: expected a value in 0..1"),
    ("scale=0.2:0:1", r"scale_range=\(0.0, 1.0\): expected values > 0"),
    ("lowres=0.2:0.5:2", r"lowres_range=\(0.5, 2.0\): expected values in \(0, 1\]"),
    ("noise_std=-1:0", r"noise_std=\(-1.0, 0.0\): expected values >= 0"),
    ("gamma=0.2:2:1", r"gamma_range=\(2.0, 1.0\): expected low <= high"),
    ("shear=0.2:-85:0", r"shear_range=\(-85.0, 0.0\): expected values in -80..80 degrees"),
])
def test_bad_augmentation_strings_name_the_offending_item(text, message):
    with pytest.raises(InputError, match=message):
        parse_augmentation(text)


def test_training_configuration_takes_presets_strings_and_old_mappings():
    assert TrainConfig().augmentation == "auto"  # training picks light or default from the run's length
    assert Augmentation.from_config("auto") == Augmentation.preset("default")  # without a run: the long-run preset
    TrainConfig(augmentation="strong,elastic=0.1")
    old = TrainConfig(augmentation={"flip": 0.5, "noise_std": [0.0, 0.1]})  # train_config.json of older folders
    assert old.augmentation == "none,flip=0.5,rot90=0.5,noise=0.2,noise_std=0:0.1,brightness=0.2,contrast=0.2"
    assert Augmentation.from_config(old.augmentation) == Augmentation(noise_std=(0.0, 0.1))
    assert TrainConfig(augmentation={}).augmentation == "light"  # the same augmentation, as text for Fiji macros
    for text in ("strong,elastic=0.1", "rotate=0.3:-30:30,context=1.5,gamma=0.123456789"):
        assert parse_augmentation(parse_augmentation(text).to_text()) == parse_augmentation(text)
    with pytest.raises(InputError, match="unknown name 'elastik'"):
        TrainConfig(augmentation="elastik=0.1")
    with pytest.raises(InputError, match=r"unknown setting\(s\) 'flips'; valid: flip, rot90"):
        TrainConfig(augmentation={"flips": 0.5})


def test_auto_augmentation_is_light_for_short_runs_and_default_for_long_ones():
    from types import SimpleNamespace

    from engine.augment import AUTO_LIGHT_STEPS, auto_preset
    from engine.plan import BUDGET_TRAINING_SHARE, STEP_SECONDS
    from engine.training import expected_steps

    assert auto_preset(AUTO_LIGHT_STEPS - 1) == "light" and auto_preset(AUTO_LIGHT_STEPS) == "default"
    assert auto_preset(None) == "default" and auto_preset(10, "unet3d_aniso") == "light"
    assert auto_preset(10, "deeplabv3plus") == auto_preset(10, "segnet2d") == "default"  # light: short U-Net runs
    assert expected_steps(TrainConfig(epochs=10), None, 20) == 200
    assert expected_steps(TrainConfig(), None, 30) == 50 * 30  # 50 epochs by default
    plan = SimpleNamespace(step_seconds=0.1)
    assert expected_steps(TrainConfig(time_budget="60s"), plan, 8) == pytest.approx(60 * BUDGET_TRAINING_SHARE / 0.1)
    assert expected_steps(TrainConfig(time_budget="60s"), None, 8) == pytest.approx(
        60 * BUDGET_TRAINING_SHARE / STEP_SECONDS)  # no plan: the CPU step target
    assert expected_steps(TrainConfig(time_budget="1h", epochs=2), plan, 8) == 16  # whichever ends first


# ----------------------------------------------------------------------------------- training pipeline
def test_batches_draw_patches_from_a_larger_crop():
    from engine.data import PatchSampler, make_sample
    from engine.normalization import Normalization
    from engine.training import Batches

    labels = blocks((1, 80, 80), values=(0, 1, 2))[0]
    sample = make_sample(labels.astype(np.float32), labels, axes="YX")
    aug = Augmentation(**{**PRESETS["strong"], **SPATIAL_ONLY, "rotate": 1, "context": 1.5})
    crop = aug.crop((32, 32))
    assert crop == (48, 48)
    batches = Batches(PatchSampler([sample], crop), Normalization("none"), aug, (32, 32), patch=(32, 32))
    x, y = batches.draw(4, np.random.default_rng(0))
    assert x.shape == (4, 1, 32, 32) and y.shape == (4, 32, 32)
    assert not (np.abs(x[:, 0].numpy() - y.numpy()) > 0.5)[~near_boundary(y.numpy(), 2)].any()
    x, y = batches.draw(4, np.random.default_rng(0), augment=False)  # the centre of the crop
    torch.testing.assert_close(x[:, 0].long(), y, rtol=0, atol=0)


def test_training_runs_with_an_advanced_augmentation_string(tmp_path):
    from engine.training import train

    images, labels = blob_images(2, shape=(40, 40))
    result = train(images=images, labels=labels, out=str(tmp_path / "m"), network="unet2d",
                   network_options=TINY_UNET, patch=32, epochs=1, batch=2, steps_per_epoch=2, seed=1,
                   augmentation="strong,elastic=1,context=1.25", validation_fraction=0)
    assert result.history[0]["loss"] > 0
    saved = TrainConfig.from_file(tmp_path / "m" / "train_config.json")
    assert saved.augmentation == "strong,elastic=1,context=1.25"


# ----------------------------------------------------------------------------------------- preview
def _write_pair(folder: Path) -> tuple[Path, Path]:
    import tifffile

    images, labels = blob_images(1, shape=(64, 64))
    image, lab = folder / "image.tif", folder / "labels.tif"
    tifffile.imwrite(image, np.asarray(images[0], np.float32))
    tifffile.imwrite(lab, np.asarray(labels[0], np.uint8))
    return image, lab


def deepseg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=300)


def test_augment_preview_writes_a_grid_png(tmp_path):
    from PIL import Image

    image, lab = _write_pair(tmp_path)
    out = tmp_path / "preview.png"
    done = deepseg("augment-preview", "--images", str(image), "--labels", str(lab), "--out", str(out),
                   "--augmentation", "strong", "--count", "6", "--seed", "3", "--patch", "48")
    assert done.returncode == 0, done.stderr
    assert "6 patches without and with augmentation" in done.stdout
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size[1] > png.size[0] / 2  # 4 rows of up to 4 columns
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.tif", "labels.tif", "preview.png"]  # no temp files


def test_augment_preview_refuses_bad_input(tmp_path):
    image, lab = _write_pair(tmp_path)
    bad = deepseg("augment-preview", "--images", str(image), "--out", str(tmp_path / "p.png"),
                  "--augmentation", "rotate=0.2,wobble=1")
    assert bad.returncode == 2 and "augmentation item 'wobble=1': unknown name 'wobble'" in bad.stderr
    over = deepseg("augment-preview", "--images", str(image), "--labels", str(lab), "--out", str(lab))
    assert over.returncode == 2 and "expected a .png file" in over.stderr
    assert not (tmp_path / "p.png").exists()


def test_augment_preview_of_a_stack_without_labels(tmp_path):
    import tifffile

    from engine.augment import Augmentation as Aug
    from engine.cli_augment import preview_patches

    images, _ = blob_images(1, shape=(8, 48, 48))
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.asarray(images[0], np.float32), imagej=True, metadata={"axes": "ZYX"})
    before, after = preview_patches(str(path), None, Aug.preset("default"), count=3, seed=0, patch="8,32,32")
    assert before[0].shape == after[0].shape == (3, 8, 32, 32)
    assert (before[1] == 0).all() and (after[1] == 0).all()
