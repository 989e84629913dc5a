"""Training data: validation of images and labels, splitting, patch sampling, normalization, augmentation."""

import numpy as np
import pytest
import xarray as xr

from engine.augment import Augmentation
from engine.config import TrainConfig
from engine.arrays import z_context_stack
from engine.data import PatchSampler, check_classes, crop_padded, make_sample, split_validation
from engine.errors import InputError
from engine.losses import IGNORE_INDEX
from engine.normalization import Normalization


def sample(shape=(20, 24), axes="YX", seed=0, **kw):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, shape).astype(np.uint8)
    labels = (image > 128).astype(np.uint8)
    return make_sample(image, labels, axes=axes, **kw)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(InputError, match=r"labels .* shape \(20, 23\) does not match .* \(20, 24\)"):
        make_sample(np.zeros((20, 24)), np.zeros((20, 23), np.uint8), axes="YX")


def test_label_value_beyond_classes():
    s = sample()
    s.labels[0, 0] = 5
    with pytest.raises(InputError, match="contain value 5 but classes=2"):
        check_classes([s], 2)
    assert check_classes([s], None) == 6


def test_negative_and_fractional_labels():
    with pytest.raises(InputError, match="negative"):
        make_sample(np.zeros((4, 4)), -np.ones((4, 4), np.int16), axes="YX")
    with pytest.raises(InputError, match="integer class values"):
        make_sample(np.zeros((4, 4)), np.full((4, 4), 0.5), axes="YX")


def test_nan_and_inf_rejected():
    image = np.zeros((2, 8, 8), np.float32)
    image[1, 3, 3] = np.inf
    with pytest.raises(InputError, match="1 NaN or infinite values in channel 1"):
        make_sample(image, np.zeros((8, 8), np.uint8), axes="CYX")


def test_plain_array_needs_axes_and_matching_rank():
    with pytest.raises(InputError, match="needs axes"):
        make_sample(np.zeros((4, 4)), np.zeros((4, 4)))
    with pytest.raises(InputError, match="axes 'ZYX' names 3 dimensions"):
        make_sample(np.zeros((4, 4)), np.zeros((4, 4)), axes="ZYX")
    with pytest.raises(InputError, match="axes 'YQ' is not valid"):
        make_sample(np.zeros((4, 4)), np.zeros((4, 4)), axes="YQ")


def test_mask_and_ignore_label_become_unlabelled():
    labels = np.array([[0, 1], [2, 1]], np.uint8)
    mask = np.array([[1, 1], [1, 0]], np.uint8)
    s = make_sample(np.zeros((2, 2)), labels, mask=mask, ignore_label=0, axes="YX")
    assert s.labels.tolist() == [[IGNORE_INDEX, 1], [2, IGNORE_INDEX]]


def test_dataarray_with_channels_and_spacing():
    image = xr.DataArray(np.zeros((3, 10, 12)), dims=("ch", "row", "col"), attrs={"spacing": {"row": 0.5}})
    s = make_sample(image, np.zeros((10, 12), np.uint8))
    assert s.image.shape == (3, 10, 12) and s.spacing == {"row": 0.5, "col": 1.0}


def test_split_by_image_and_by_block():
    samples = [sample(seed=i) for i in range(4)]
    train, val = split_validation(samples, 0.25, seed=2)
    assert len(train) == 3 and len(val) == 1
    assert split_validation(samples, 0.25, seed=2)[1][0].name == val[0].name  # seeded
    train, val = split_validation([sample((20, 40))], 0.25, seed=2)
    assert train[0].spatial_shape == (20, 30) and val[0].spatial_shape == (20, 10)
    assert split_validation(samples, 0.0, seed=2) == (samples, [])


def test_patch_sampler_shapes_and_padding():
    rng = np.random.default_rng(0)
    s3 = make_sample(np.zeros((6, 20, 24)), np.ones((6, 20, 24), np.uint8), axes="ZYX")
    image, labels = PatchSampler([s3], (16, 16)).sample(rng)  # 2D patches from a stack
    assert image.shape == (1, 16, 16) and labels.shape == (16, 16)
    image, labels = PatchSampler([s3], (8, 16, 16)).sample(rng)  # larger than the stack in Z
    assert image.shape == (1, 8, 16, 16) and (labels == IGNORE_INDEX).sum() == 2 * 16 * 16
    image, labels = PatchSampler([s3], (16, 16), z_context=3).sample(rng)
    assert image.shape == (3, 16, 16)
    with pytest.raises(InputError, match="is 2D"):
        PatchSampler([sample()], (4, 8, 8))


def test_foreground_oversampling_finds_rare_objects():
    labels = np.zeros((200, 200), np.uint8)
    labels[10:14, 180:184] = 1
    s = make_sample(np.zeros((200, 200)), labels, axes="YX")
    rng = np.random.default_rng(1)
    hits = sum(PatchSampler([s], (32, 32), foreground=1.0).sample(rng)[1].max() == 1 for _ in range(20))
    assert hits == 20


def test_crop_padded_mirrors_images_and_ignores_labels():
    image = np.arange(5, dtype=np.float32)[None]
    assert crop_padded(image, [-2], [9], channel_axis=True).tolist() == [[2, 1, 0, 1, 2, 3, 4, 3, 2]]
    labels = np.ones(5, np.int32)
    assert crop_padded(labels, [3], [4], channel_axis=False).tolist() == [1, 1, -1, -1]


def test_z_context_mirrors_at_stack_ends():
    stack = np.arange(4, dtype=np.float32).reshape(1, 4, 1, 1) * np.ones((1, 4, 2, 2))
    assert z_context_stack(stack, 0, 5)[:, 0, 0].tolist() == [2, 1, 0, 1, 2]
    assert z_context_stack(stack, 3, 3)[:, 0, 0].tolist() == [2, 3, 2]


@pytest.mark.parametrize("method", ["zscore", "percentile", "minmax", "zscore_image", "none"])
def test_normalization_round_trip(method):
    rng = np.random.default_rng(0)
    images = [rng.normal(100, 10, (2, 30, 30)) for _ in range(2)]
    norm = Normalization(method).fit(images)
    out = norm.apply(images[0])
    assert out.dtype == np.float32
    if method in ("zscore", "zscore_image"):
        assert abs(out.mean()) < 0.2 and abs(out.std() - 1) < 0.1
    if method == "minmax":
        assert out.min() >= 0 and out.max() <= 1
    again = Normalization.from_dict(norm.to_dict()).apply(images[0])
    np.testing.assert_array_equal(out, again)


def test_normalization_errors():
    with pytest.raises(InputError, match="normalization 'max'"):
        Normalization("max")
    norm = Normalization("zscore").fit([np.ones((1, 4, 4))])
    two = Normalization("zscore").fit([np.ones((2, 4, 4))])
    with pytest.raises(InputError, match="3 channels but the normalization was fitted on 2"):
        two.apply(np.ones((3, 4, 4)))
    assert norm.apply(np.ones((5, 4, 4))).shape == (5, 4, 4)  # 5 stacked slices of one channel


def test_augmentation_keeps_image_and_labels_aligned():
    rng = np.random.default_rng(3)
    image = np.arange(64, dtype=np.float32).reshape(1, 8, 8)
    labels = np.arange(64).reshape(8, 8)
    aug = Augmentation(flip=1.0, rot90=1.0, brightness=0, contrast=0, noise=0)
    for _ in range(5):
        a, b = aug(image, labels, rng)
        np.testing.assert_array_equal(a[0], b.astype(np.float32))
    with pytest.raises(InputError, match="flip=2"):
        Augmentation(flip=2)


def test_config_validation_messages():
    with pytest.raises(InputError, match="epochs=0"):
        TrainConfig(epochs=0)
    with pytest.raises(InputError, match="patch=\\[32, 32\\] has 2 sizes but network 'unet3d' is 3D"):
        TrainConfig(network="unet3d", patch=[32, 32]).patch_size(3)
    with pytest.raises(InputError, match="unknown training option"):
        TrainConfig.from_dict({"epoch": 3})


def test_auto_patch_follows_the_data():
    from engine.data import auto_patch

    big2d = make_sample(np.zeros((1000, 700)), np.zeros((1000, 700), np.uint8), axes="YX")
    small2d = make_sample(np.zeros((100, 700)), np.zeros((100, 700), np.uint8), axes="YX")
    assert auto_patch([big2d], 2) == (256, 256)
    assert auto_patch([big2d, small2d], 2) == (100, 256)
    aniso = make_sample(xr.DataArray(np.zeros((200, 400, 400), np.uint8), dims=("pln", "row", "col"),
                                     attrs={"spacing": {"pln": 3.0, "row": 1.0, "col": 1.0}}),
                        np.zeros((200, 400, 400), np.uint8))
    z, y, x = auto_patch([aniso], 3)
    assert y == x and 2.5 < y / z < 3.5 and 0.8e6 < z * y * x < 1.2e6
    thin = make_sample(np.zeros((12, 400, 400)), np.zeros((12, 400, 400), np.uint8), axes="ZYX")
    z, y, x = auto_patch([thin], 3)
    assert z == 12 and y == x and 0.8e6 < z * y * x < 1.2e6  # Z capped: Y and X take its share
