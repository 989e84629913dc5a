"""Prediction with a trained model: labels, probabilities, stacks, time series, files, bad input."""

import numpy as np
import pytest

import engine.prediction as predict_module
from conftest import blob_images
from engine.errors import InputError
from engine.io import read_image
from engine.model_files import load_model
from engine.prediction import predict, predict_file


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


def test_test_time_augmentation(tiny_model):
    out, _ = tiny_model
    image = blob_images(1, shape=(32, 32), seed=33)[0][0]
    probs = predict(out, image, tta=True, probabilities=True).probabilities
    np.testing.assert_allclose(probs.sum("ch"), 1.0, atol=1e-5)


def test_bad_images_are_refused(tiny_model):
    out, _ = tiny_model
    with pytest.raises(InputError, match="has 2 channel\\(s\\).*trained on 1"):
        predict(out, np.zeros((2, 32, 32)), axes="CYX")
    with pytest.raises(InputError, match="NaN or infinite"):
        predict(out, np.full((32, 32), np.nan, np.float32), axes="YX")
    with pytest.raises(InputError, match="needs axes"):
        predict(out, np.zeros((32, 32)))


def test_predict_file_streams_through_disk(tiny_model, tmp_path, monkeypatch):
    from engine.io import write_image

    out, _ = tiny_model
    image = blob_images(1, shape=(4, 40, 48), seed=34)[0][0]
    source = write_image(tmp_path / "stack.tif", image)
    in_memory = predict_file(out, source, tmp_path / "a.tif", tile=[32, 32])
    monkeypatch.setattr(predict_module, "_IN_MEMORY_BYTES", 0)  # force the on-disk path
    on_disk = predict_file(out, source, tmp_path / "b.tif", probabilities_path=tmp_path / "p.tif", tile=[32, 32])
    a, b = read_image(tmp_path / "a.tif"), read_image(tmp_path / "b.tif")
    np.testing.assert_array_equal(a.values, b.values)
    assert a.dims == ("pln", "row", "col") and a.attrs["spacing"]["col"] == pytest.approx(0.5)
    probs = read_image(tmp_path / "p.tif")
    assert probs.sizes["ch"] == 2 and probs.dtype == np.float32
    assert in_memory["class_voxels"] == on_disk["class_voxels"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "b.tif", "p.tif", "stack.tif"]


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
