"""Prediction with a trained model: labels, probabilities, stacks, time series, files, bad input."""

import numpy as np
import pytest
import torch

from conftest import blob_images
from engine.errors import InputError
from engine.io import read_image
from engine.model_files import load_model
from engine.prediction import predict, predict_file


def random_model(folder, name="unet2d", **options):
    """A randomly initialised model folder (no normalization), deterministic for a given seed."""
    from engine.model_files import save_model
    from engine.networks import build
    from engine.normalization import Normalization

    torch.manual_seed(0)
    net = build(name, in_channels=1, classes=3, **options).eval()
    axes = "YX" if net.spatial_dims == 2 else "ZYX"
    patch = (32,) * net.spatial_dims
    return save_model(net, folder, patch=patch, axes=axes, normalization=Normalization("none")), net


def test_labels_and_probabilities_keep_dims_and_calibration(tiny_model):
    out, _ = tiny_model
    image = blob_images(1, shape=(40, 56), seed=30)[0][0]
    result = predict(out, image, probabilities=True, tile=(32, 32))
    assert result.labels.dims == ("row", "col") and result.labels.shape == (40, 56)
    assert result.labels.dtype == np.uint8 and result.labels.attrs["spacing"] == {"row": 0.5, "col": 0.5}
    probs = result.probabilities
    assert probs.dims == ("ch", "row", "col") and list(probs.ch.values) == ["background", "class1"]
    np.testing.assert_allclose(probs.sum("ch"), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probs.argmax("ch").values, result.labels.values)


def test_tile_size_barely_changes_the_result(tiny_model):
    out, _ = tiny_model
    image = blob_images(1, shape=(64, 64), seed=31)[0][0]
    whole = predict(out, image, tile=(64, 64), probabilities=True).probabilities.values
    tiled = predict(out, image, tile=(32, 32), overlap=0.5, probabilities=True).probabilities.values
    assert np.abs(whole - tiled)[:, 8:-8, 8:-8].mean() < 0.05


def test_2d_model_segments_a_stack_slice_by_slice(tiny_model):
    out, _ = tiny_model
    stack = blob_images(1, shape=(3, 40, 40), seed=32)[0][0]
    labels = predict(out, stack, tile=(32, 32)).labels
    assert labels.dims == ("pln", "row", "col")
    single = predict(out, stack.isel(pln=1), tile=(32, 32)).labels
    np.testing.assert_array_equal(labels.isel(pln=1).values, single.values)


def test_time_axis_is_segmented_per_time_point(tiny_model):
    out, _ = tiny_model
    frames = np.stack([blob_images(1, shape=(32, 32), seed=s)[0][0].values for s in (40, 41)])
    labels = predict(out, frames, axes="TYX", tile=(32, 32)).labels
    assert labels.dims == ("t", "row", "col") and labels.shape == (2, 32, 32)


def test_bad_images_are_refused(tiny_model):
    out, _ = tiny_model
    with pytest.raises(InputError, match="has 2 channel\\(s\\).*trained on 1"):
        predict(out, np.zeros((2, 32, 32)), axes="CYX")
    with pytest.raises(InputError, match="NaN or infinite"):
        predict(out, np.full((32, 32), np.nan, np.float32), axes="YX")
    with pytest.raises(InputError, match="needs axes"):
        predict(out, np.zeros((32, 32)))


def test_outputs_go_into_new_folders(tiny_model, tmp_path):
    from engine.io import write_image

    out, _ = tiny_model
    source = write_image(tmp_path / "in.tif", blob_images(1, shape=(32, 32), seed=36)[0][0])
    predict_file(out, source, tmp_path / "new" / "labels.tif", probabilities_path=tmp_path / "other" / "p.tif")
    assert read_image(tmp_path / "new" / "labels.tif").shape == (32, 32)
    probs = read_image(tmp_path / "other" / "p.tif")
    assert probs.dims == ("ch", "row", "col") and probs.attrs["spacing"]["row"] == pytest.approx(0.5)
    np.testing.assert_allclose(probs.sum("ch"), 1.0, atol=1e-5)


def test_more_than_255_classes_give_16_bit_labels(tmp_path):
    import torch

    from engine.model_files import save_model
    from engine.networks import build
    from engine.normalization import Normalization

    torch.manual_seed(0)
    net = build("unet2d", in_channels=1, classes=300, depth=1, filters=4)
    folder = save_model(net, tmp_path / "many", patch=(16, 16), axes="YX", normalization=Normalization("none"))
    labels = predict(folder, np.random.default_rng(0).random((16, 16), dtype=np.float32), axes="YX").labels
    assert labels.dtype == np.uint16


def test_loaded_model_is_reused(tiny_model):
    out, _ = tiny_model
    model = load_model(out, device="cpu")
    image = blob_images(1, shape=(32, 32), seed=35)[0][0]
    assert predict(model, image).labels.shape == (32, 32)


# -------------------------------------------------------------------------------- test-time augmentation


def test_tta_makes_prediction_mirror_equivariant(tmp_path):
    """With ``tta`` the prediction of a mirrored image is the mirrored prediction (and a mirror-symmetric
    image gets a mirror-symmetric prediction); a random network without ``tta`` is far from that."""
    folder, _ = random_model(tmp_path / "m", depth=2, filters=4)
    x = np.random.default_rng(0).random((32, 32), dtype=np.float32)

    def probs(image, tta):
        return predict(folder, image, axes="YX", tile=(32, 32), tta=tta, probabilities=True,
                       device="cpu").probabilities.values

    for flip in ((0,), (1,), (0, 1)):
        mirrored = np.flip(x, flip).copy()
        with_tta = probs(mirrored, True)
        np.testing.assert_allclose(with_tta, np.flip(probs(x, True), [a + 1 for a in flip]), atol=1e-6)
        plain = probs(mirrored, False)
        assert np.abs(plain - np.flip(probs(x, False), [a + 1 for a in flip])).max() > 1e-2
    symmetric = np.concatenate([x[:, :16], x[:, :16][:, ::-1]], axis=1)
    out = probs(symmetric, True)
    np.testing.assert_allclose(out, out[:, :, ::-1], atol=1e-6)
    assert np.abs(probs(symmetric, False) - probs(symmetric, False)[:, :, ::-1]).max() > 1e-2


def test_tta_averages_the_mirrored_predictions():
    """A known case: a predictor that reads the neighbour to the left sees, under tta, the mean of
    its left and right neighbours (rows alike)."""
    from engine.prediction import make_predictor

    class Shift(torch.nn.Module):
        def forward(self, x):  # class 1 logit: the left neighbour (wrapping), class 0 logit: 0
            return torch.cat([torch.zeros_like(x), torch.roll(x, 1, dims=-1)], dim=1)

    class Model:
        network, device = Shift(), torch.device("cpu")

    x = torch.tensor([[[[0.0, 2.0, 0.0, -2.0, 4.0]]]])
    sig = torch.sigmoid
    plain = make_predictor(Model(), tta=False)(x)[0, 1, 0]
    tta = make_predictor(Model(), tta=True)(x)[0, 1, 0]
    torch.testing.assert_close(plain, sig(torch.roll(x, 1, -1))[0, 0, 0])
    torch.testing.assert_close(tta, (sig(torch.roll(x, 1, -1)) + sig(torch.roll(x, -1, -1)))[0, 0, 0] / 2)


# ---------------------------------------------------------------------------------- tiling of networks


def test_valid_padding_prediction_is_seamless(tmp_path):
    """predict() places tiles on the network's down-sampling grid: tiled equals one untiled pass."""
    folder, net = random_model(tmp_path / "v", depth=2, filters=4, padding="valid")
    tile = net.valid_input_shape((52, 52))
    halo = (tile[0] - net.output_shape(tile)[0]) // 2
    size = net.valid_input_shape((90, 90))[0] - 2 * halo
    x = np.random.default_rng(1).random((size, size), dtype=np.float32)
    tiled = predict(folder, x, axes="YX", tile=tile, overlap=0.25, probabilities=True, device="cpu",
                    precision="fp32")  # the untiled pass below is fp32
    with torch.inference_mode():
        padded = torch.from_numpy(np.pad(x, halo, mode="reflect"))[None, None]
        untiled = torch.softmax(net(padded), dim=1)[0].numpy()
    assert size > 2 * net.output_shape(tile)[0]  # several tiles per axis
    np.testing.assert_allclose(tiled.probabilities.values, untiled, atol=1e-5)


# ---------------------------------------------------------------------------------------- predict_file


def test_predict_file_streams_labels_plane_by_plane(tiny_model, tmp_path, monkeypatch):
    """Labels (and probabilities) reach their files slab by slab while prediction runs, under a temporary
    name; they equal the in-memory result, keep the calibration, and the counts match."""
    import engine.io as io
    from engine.io import write_image

    out, _ = tiny_model
    image = blob_images(1, shape=(7, 40, 48), seed=34)[0][0]
    source = write_image(tmp_path / "stack.tif", image)
    batches, writes = [], []
    original = io.TiffPlaneWriter.write

    def recording_write(self, dim, start, values):
        assert not (tmp_path / "a.tif").exists() and not (tmp_path / "p.tif").exists()
        writes.append((self.dtype, dim, start, values.shape[0], len(batches)))
        original(self, dim, start, values)

    monkeypatch.setattr(io.TiffPlaneWriter, "write", recording_write)
    summary = predict_file(out, source, tmp_path / "a.tif", probabilities_path=tmp_path / "p.tif", tile=[32, 32],
                           batch=3, progress=batches.append)
    for dtype, expected_shape in ((np.uint8, 1), (np.float32, 2)):
        mine = [w for w in writes if w[0] == dtype]
        assert all(w[1] == "pln" for w in mine) and len(mine) > 2
        assert [w[2] for w in mine] == [0] + list(np.cumsum([w[3] for w in mine])[:-1])  # in order, no gaps
        assert sum(w[3] for w in mine) == 7
        assert mine[0][4] < len(batches) - 1  # the first planes were written long before the last batch
    expected = predict(out, image, tile=(32, 32), probabilities=True)
    labels, probs = read_image(tmp_path / "a.tif"), read_image(tmp_path / "p.tif")
    np.testing.assert_array_equal(labels.values, expected.labels.values)
    assert labels.dims == ("pln", "row", "col") and labels.attrs["spacing"]["col"] == pytest.approx(0.5)
    np.testing.assert_allclose(probs.transpose("ch", ...).values, expected.probabilities.values, atol=1e-6)
    assert summary["class_voxels"] == {name: int(np.count_nonzero(expected.labels.values == k))
                                       for k, name in enumerate(["background", "class1"])}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "p.tif", "stack.tif"]


def test_predict_file_of_a_2d_image_and_without_probabilities(tiny_model, tmp_path):
    from engine.io import write_image

    out, _ = tiny_model
    image = blob_images(1, shape=(70, 52), seed=37)[0][0]
    source = write_image(tmp_path / "flat.tif", image)
    summary = predict_file(out, source, tmp_path / "l.tif", probabilities_path=tmp_path / "p.tif", tile=[32, 32])
    expected = predict(out, image, tile=(32, 32), probabilities=True)
    np.testing.assert_array_equal(read_image(tmp_path / "l.tif").values, expected.labels.values)
    np.testing.assert_allclose(read_image(tmp_path / "p.tif").values, expected.probabilities.values, atol=1e-6)
    predict_file(out, source, tmp_path / "only.tif", tile=[32, 32])
    np.testing.assert_array_equal(read_image(tmp_path / "only.tif").values, expected.labels.values)
    assert summary["dims"] == ["row", "col"] and sum(summary["class_voxels"].values()) == 70 * 52


def test_failed_prediction_leaves_no_output(tiny_model, tmp_path):
    from engine.errors import Cancelled
    from engine.io import write_image

    out, _ = tiny_model
    source = write_image(tmp_path / "s.tif", blob_images(1, shape=(5, 40, 40), seed=38)[0][0])
    with pytest.raises(Cancelled):
        predict_file(out, source, tmp_path / "l.tif", probabilities_path=tmp_path / "p.tif", tile=[32, 32],
                     batch=2, progress=lambda p: p.done < 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]


def test_predict_file_with_a_z_context_model_equals_predict(tmp_path):
    from engine.io import write_image

    folder, _ = random_model(tmp_path / "z", name="z2c_unet2d", z_context=3, depth=1, filters=4)
    stack = np.random.default_rng(2).random((4, 24, 20), dtype=np.float32)
    source = write_image(tmp_path / "s.tif", stack, axes="ZYX")
    predict_file(folder, source, tmp_path / "l.tif", probabilities_path=tmp_path / "p.tif", tile=[16, 16])
    expected = predict(folder, stack, axes="ZYX", tile=(16, 16), probabilities=True)
    np.testing.assert_array_equal(read_image(tmp_path / "l.tif").values, expected.labels.values)
    probs = read_image(tmp_path / "p.tif").transpose("ch", ...)
    np.testing.assert_allclose(probs.values, expected.probabilities.values, atol=1e-6)


def test_options_are_keyword_only_and_checked(tiny_model):
    out, _ = tiny_model
    image = blob_images(1, shape=(32, 32), seed=39)[0][0]
    with pytest.raises(TypeError):
        predict(out, image, None)  # type: ignore[misc]
    with pytest.raises(InputError, match="unknown option 'batch_size'"):
        predict(out, image, batch_size=2)
    with pytest.raises(InputError, match="did you mean 'tile'"):
        predict_file(out, "in.tif", "out.tif", tiles=(32, 32))


@pytest.mark.parametrize("name, options", [("unet2d", {"depth": 2, "filters": 4}),
                                           ("z2c_unet2d", {"z_context": 3, "depth": 1, "filters": 4})])
def test_a_region_of_a_stack_equals_the_whole_prediction_there(tmp_path, name, options):
    """The blockwise primitive: a region, with the whole image's normalization, equals the whole run there."""
    from engine.prediction import _probabilities

    _, net = random_model(tmp_path / "r", name=name, **options)
    model = load_model(tmp_path / "r", device="cpu")
    pixels = np.random.default_rng(3).random((1, 5, 40, 36), dtype=np.float32)
    run = dict(tile=(16, 16), overlap=0.25, blend="gaussian", batch=3, tta=False, progress=None)
    whole = _probabilities(model, pixels, out=None, **run)
    region = (slice(1, 4), slice(9, 30), slice(0, 17))
    norm = model.normalization.image_statistics(pixels)
    part = _probabilities(model, pixels, out=None, region=region, norm=norm, **run)
    np.testing.assert_allclose(part, whole[(slice(None), *region)], atol=1e-6, rtol=0)
