"""Activations explorer: layer listing, feature maps via hooks, montage, TIFF/PNG export."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from engine import activations as act
from engine.errors import InputError
from engine.networks import build


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def net2d():
    return build("unet2d", depth=1, filters=4, classes=3)


def test_list_layers_names_convolutions_and_blocks(net2d):
    layers = act.list_layers(net2d)
    for name in ("encoders.0", "encoders.0.conv1", "encoders.0.conv1.0", "downsamplers.0", "bottleneck",
                 "decoders.0", "decoders.0.up", "head"):
        assert name in layers
    # no root, no containers, no norm/activation leaves (their output is their block's)
    assert "" not in layers and "encoders" not in layers
    assert "encoders.0.conv1.1" not in layers and "encoders.0.conv1.2" not in layers
    assert layers.index("encoders.0") < layers.index("bottleneck") < layers.index("head")


def test_layer_activations_match_the_layer_output(net2d):
    patch = np.random.default_rng(0).normal(size=(1, 16, 16)).astype(np.float32)
    features = act.layer_activations(net2d, patch, "encoders.0.conv1")
    with torch.no_grad():
        expected = net2d.eval().encoders[0].conv1(torch.from_numpy(patch)[None])[0].numpy()
    assert features.dtype == np.float32 and features.shape == (4, 16, 16)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
    assert act.layer_activations(net2d, patch, "bottleneck").shape == (8, 8, 8)
    assert act.layer_activations(net2d, patch, "head").shape == (3, 16, 16)


def test_layer_activations_use_eval_mode_and_restore_the_mode(net2d):
    net2d.train()
    bn = net2d.encoders[0].conv1[1]
    mean = bn.running_mean.clone()
    act.layer_activations(net2d, np.ones((1, 16, 16), np.float32) * 5, "encoders.0")
    assert net2d.training and torch.equal(bn.running_mean, mean)


def test_raw_convolution_output_is_not_rectified_afterwards():
    # The conv is followed by an in-place ReLU (norm none): the returned maps must keep negative values.
    net = build("unet2d", depth=1, filters=4, norm="none")
    features = act.layer_activations(net, np.random.default_rng(1).normal(size=(1, 8, 8)), "encoders.0.conv1.0")
    assert (features < 0).any()


def test_3d_network_gives_3d_feature_maps():
    net = build("unet3d_aniso", depth=1, filters=2, in_channels=2)
    features = act.layer_activations(net, np.zeros((2, 3, 8, 8), np.float32), "decoders.0")
    assert features.shape == (2, 3, 8, 8)


def test_unknown_layer_lists_close_matches(net2d):
    with pytest.raises(InputError, match="encoders.0.conv1"):
        act.layer_activations(net2d, np.zeros((1, 16, 16)), "encoder.0.conv1")


def test_bad_patches_are_input_errors(net2d):
    with pytest.raises(InputError, match=r"\(1, Y, X\)"):
        act.layer_activations(net2d, np.zeros((2, 16, 16)), "head")
    with pytest.raises(InputError):
        act.layer_activations(net2d, np.zeros((16, 16)), "head")
    with pytest.raises(InputError, match=r"pad it to \(16, 18\)"):
        act.layer_activations(net2d, np.zeros((1, 15, 17)), "head")


# ---------------------------------------------------------------------------------------- montage


def test_montage_grid_and_normalisation():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(5, 4, 6)).astype(np.float32) * 100
    features[3] = 7.0  # a constant filter
    grid = act.montage(features)
    assert grid.shape == (2 * 4 + 1, 3 * 6 + 2)  # ceil(sqrt(5)) = 3 columns, 2 rows, 1-pixel gaps
    assert grid.dtype == np.float32 and grid.min() == 0.0 and grid.max() == 1.0
    first = grid[:4, :6]
    assert first.min() == 0.0 and first.max() == 1.0
    np.testing.assert_allclose(first, (features[0] - features[0].min()) / np.ptp(features[0]), rtol=1e-6)
    assert (grid[5:9, :6] == 0).all()  # constant filter 3 -> zeros (row 1, column 0)
    assert (grid[4, :] == 1).all() and (grid[:, 6] == 1).all()  # gaps
    assert act.montage(features, columns=5).shape == (4, 5 * 6 + 4)
    assert act.montage(features, columns=9).shape == (4, 5 * 6 + 4)  # never more columns than maps


def test_montage_of_3d_features_uses_the_centre_plane():
    features = np.zeros((2, 3, 4, 4), np.float32)
    features[:, 1, 0, 0] = 1.0  # only the centre plane has structure
    grid = act.montage(features, gap=0)
    assert grid.shape == (4, 8) and grid[0, 0] == 1.0 and grid[0, 4] == 1.0 and grid.sum() == 2.0


def test_montage_rejects_bad_input():
    with pytest.raises(InputError):
        act.montage(np.zeros((4, 4)))
    with pytest.raises(InputError):
        act.montage(np.zeros((2, 4, 4)), columns=0)


# ------------------------------------------------------------------------------------------- files


def test_save_activations_tiff_stack_and_png_montage(tmp_path):
    features = np.random.default_rng(3).normal(size=(4, 5, 6)).astype(np.float32)
    written = act.save_activations(features, tif_path=tmp_path / "a.tif", png_path=tmp_path / "a.png")
    assert written == [tmp_path / "a.tif", tmp_path / "a.png"]
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "a.tif"), features)
    with Image.open(tmp_path / "a.png") as png:
        pixels = np.asarray(png)
    assert pixels.dtype == np.uint8 and pixels.shape == act.montage(features).shape
    assert pixels.max() == 255 and pixels.min() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a.tif"]  # no temporary files left


def test_save_3d_activations_as_hyperstack(tmp_path):
    features = np.random.default_rng(4).normal(size=(3, 2, 4, 4)).astype(np.float32)
    act.save_activations(features, tif_path=tmp_path / "f.tif")
    with tifffile.TiffFile(tmp_path / "f.tif") as tif:
        assert tif.imagej_metadata["frames"] == 3 and tif.imagej_metadata["slices"] == 2
        np.testing.assert_array_equal(tif.asarray(), features)


def test_save_activations_failure_leaves_nothing(tmp_path, monkeypatch):
    def broken(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", broken)
    with pytest.raises(OSError, match="disk full"):
        act.save_activations(np.zeros((2, 4, 4), np.float32), tif_path=tmp_path / "x.tif")
    assert list(tmp_path.iterdir()) == []


def test_save_activations_needs_a_destination():
    with pytest.raises(InputError):
        act.save_activations(np.zeros((2, 4, 4), np.float32))


# ------------------------------------------------------------------------------- patches from images


def _blob_image(shape=(48, 48), seed=7):
    from conftest import blob_images

    images, _ = blob_images(1, shape=shape, seed=seed)
    return images[0]


def test_image_activations_on_a_2d_image_use_a_centre_patch_and_the_model_normalization(tiny_model):
    from engine.model_files import load_model

    folder, _ = tiny_model
    model = load_model(folder, device="cpu")
    image = _blob_image()  # 48 x 48, the model's patch is 32 x 32
    features = act.image_activations(folder, image, "encoders.0")
    patch = model.normalization.apply(image.values[np.newaxis, 8:40, 8:40])
    np.testing.assert_allclose(features, act.layer_activations(model.network, patch, "encoders.0"), atol=1e-5)
    assert features.shape == (4, 32, 32) and features.dtype == np.float32
    # numpy + axes, a LoadedModel, and a centre near a corner (the patch is shifted to stay inside)
    corner = act.image_activations(model, image.values, "encoders.0", axes="YX", centre=(2, 3))
    patch = model.normalization.apply(image.values[np.newaxis, :32, :32])
    np.testing.assert_allclose(corner, act.layer_activations(model.network, patch, "encoders.0"), atol=1e-5)
    # an image smaller than the patch is mirrored to the patch size, as in training
    assert act.image_activations(model, image.values[:20, :24], "head", axes="YX").shape == (2, 32, 32)


def test_image_activations_on_a_stack_take_the_centre_plane_or_the_chosen_one(tiny_model):
    folder, _ = tiny_model
    stack = np.stack([_blob_image(seed=s).values for s in (1, 2, 3)])  # ZYX; the network is 2D
    middle = act.image_activations(folder, stack, "bottleneck", axes="ZYX")
    np.testing.assert_allclose(middle, act.image_activations(folder, stack[1], "bottleneck", axes="YX"), atol=1e-6)
    first = act.image_activations(folder, stack, "bottleneck", axes="ZYX", centre={"Z": 0})
    np.testing.assert_allclose(first, act.image_activations(folder, stack[0], "bottleneck", axes="YX"), atol=1e-6)
    assert not np.allclose(first, middle)


def test_image_activations_of_a_2_5d_network_stack_the_z_context():
    from engine.model_files import LoadedModel
    from engine.normalization import Normalization

    net = build("z2c_unet2d", depth=1, filters=2, z_context=3)
    model = LoadedModel(net, {"patch": [8, 8], "classes": 2}, Normalization("zscore_image"))
    stack = np.random.default_rng(5).normal(3.0, 2.0, size=(5, 12, 10)).astype(np.float32)
    patch = act.input_patch(model, stack, axes="ZYX", centre={"Z": 4})
    norm = Normalization("zscore").fit([stack[np.newaxis]])  # whole-image statistics, as prediction uses
    expected = norm.apply(stack[[3, 4, 3], 2:10, 1:9])  # planes z-1, z, z+1; beyond the last one mirrored
    np.testing.assert_allclose(patch, expected, rtol=1e-5, atol=1e-5)
    features = act.image_activations(model, stack, "net.encoders.0", axes="ZYX", centre={"Z": 4})
    np.testing.assert_allclose(features, act.layer_activations(net, expected, "net.encoders.0"), atol=1e-5)
    with pytest.raises(InputError, match="needs a 3D stack"):
        act.image_activations(model, stack[0], "net.encoders.0", axes="YX")


def test_image_activations_reject_bad_layers_centres_and_images(tiny_model):
    folder, _ = tiny_model
    image = _blob_image()
    with pytest.raises(InputError, match="Did you mean 'encoders.0.conv1'"):
        act.image_activations(folder, image, "encoder.0.conv1")
    with pytest.raises(InputError, match=r"centre Y=48 is not a pixel of the image: expected an integer in \[0, 47\]"):
        act.image_activations(folder, image, "head", centre=(48, 0))
    with pytest.raises(InputError, match="expected 2 positions"):
        act.image_activations(folder, image, "head", centre=(1, 2, 3))
    with pytest.raises(InputError, match="axis 'Z'"):
        act.image_activations(folder, image, "head", centre={"Z": 0})
    with pytest.raises(InputError, match="2 channel"):
        act.image_activations(folder, np.zeros((2, 32, 32)), "head", axes="CYX")
    with pytest.raises(InputError, match="time axis"):
        act.image_activations(folder, np.zeros((2, 32, 32)), "head", axes="TYX")


# -------------------------------------------------------------------------------------------- CLI


def test_cli_lists_layers_and_writes_the_stack_and_the_montage(tiny_model, tmp_path, capsys):
    from engine.cli import main
    from engine.io import write_image

    folder, _ = tiny_model
    image = _blob_image()
    path = write_image(tmp_path / "blob.tif", image)
    assert main(["activations", str(folder)]) == 0
    listed = capsys.readouterr().out.split()
    assert listed[0] == "encoders.0" and "bottleneck" in listed and listed[-1] == "head"
    out = tmp_path / "maps" / "enc.tif"
    out.parent.mkdir()
    assert main(["activations", str(folder), str(path), "--layer", "encoders.0.conv1", "--out", str(out)]) == 0
    assert "4 feature maps of layer 'encoders.0.conv1'" in capsys.readouterr().out
    expected = act.image_activations(folder, image, "encoders.0.conv1")
    np.testing.assert_allclose(tifffile.imread(out), expected, atol=1e-6)
    with Image.open(out.with_suffix(".png")) as png:
        assert np.asarray(png).shape == act.montage(expected).shape
    assert main(["activations", str(folder), str(path), "--layer", "encoder.0"]) == 2
    assert "Did you mean 'encoders.0'" in capsys.readouterr().err
