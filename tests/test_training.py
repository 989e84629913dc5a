"""Training: outputs, resume equivalence, cancel, transfer learning, bad input."""

import csv
import json

import numpy as np
import pytest
import torch

from conftest import TINY_UNET, blob_images
from engine.errors import Cancelled, InputError
from engine.training import CHECKPOINT, load_checkpoint, lr_factor, train

SMALL = dict(network="unet2d", network_options=TINY_UNET, patch=32, batch=2, steps_per_epoch=2, seed=1)


def test_training_writes_a_complete_model_folder(tiny_model):
    out, result = tiny_model
    for name in ("config.json", "weights.safetensors", "weights_last.safetensors", CHECKPOINT,
                 "history.csv", "train_config.json"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"loss", "accuracy", "dice", "val_loss", "val_dice", "lr"} <= set(rows[0])
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["epochs"] == 2 and config["classes"] == 2
    assert config["axes"] == "YX" and config["spacing"] == {"row": 0.5, "col": 0.5}
    assert len(config["training"]["data"]) == 3 and len(config["training"]["validation"]) == 1
    assert result.history[-1] == result.final_metrics


def _weights(path):
    state = load_checkpoint(path)["model"]
    return {k: v.clone() for k, v in state.items()}


def test_resume_continues_exactly(tmp_path):
    images, labels = blob_images(3, seed=10)
    straight = train(images=images, labels=labels, out=str(tmp_path / "a"), epochs=3, **SMALL)

    def stop_in_epoch_two(p):
        return not (p.stage == "train" and p.done > SMALL["steps_per_epoch"])

    with pytest.raises(Cancelled):
        train(images=images, labels=labels, out=str(tmp_path / "b"), epochs=3, progress=stop_in_epoch_two, **SMALL)
    assert load_checkpoint(tmp_path / "b")["epoch"] == 1
    resumed = train(images=images, labels=labels, out=str(tmp_path / "b"), epochs=3,
                    resume=str(tmp_path / "b" / CHECKPOINT), **SMALL)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert straight.history[-1]["loss"] == resumed.history[-1]["loss"]


def test_resume_refuses_a_different_network(tmp_path, tiny_model):
    out, _ = tiny_model
    images, labels = blob_images(2)
    with pytest.raises(InputError, match="cannot resume: checkpoint has network_options"):
        train(images=images, labels=labels, out=str(tmp_path / "c"), epochs=4, resume=str(out),
              **{**SMALL, "network_options": {"depth": 1, "filters": 4}})


def test_patch_larger_than_image_is_padded(tmp_path):
    images, labels = blob_images(2, shape=(20, 28))
    result = train(images=images, labels=labels, out=str(tmp_path / "m"), epochs=1, validation_fraction=0, **SMALL)
    assert np.isfinite(result.final_metrics["loss"])


def test_3d_and_2d_on_stacks(tmp_path):
    images, labels = blob_images(1, shape=(8, 32, 32))
    result = train(images=images, labels=labels, out=str(tmp_path / "m3"), epochs=1,
                   **{**SMALL, "network": "unet3d", "patch": [8, 16, 16], "network_options": {"depth": 1, "filters": 4}})
    assert result.network.spatial_dims == 3
    result = train(images=images, labels=labels, out=str(tmp_path / "m2"), epochs=1, **SMALL)
    assert result.network.spatial_dims == 2


def test_z2c_network_trains_and_predicts_on_stacks(tmp_path):
    from engine.prediction import predict

    images, labels = blob_images(1, shape=(6, 32, 32))
    result = train(images=images, labels=labels, out=str(tmp_path / "z"), epochs=1,
                   **{**SMALL, "network": "z2c_unet2d", "network_options": {"z_context": 3, "depth": 1, "filters": 4}})
    assert result.network.z_context == 3
    assert predict(result.model_dir, images[0], tile=(32, 32)).labels.shape == (6, 32, 32)


def test_sparse_labels_with_ignore_label(tmp_path):
    images, labels = blob_images(1, shape=(6, 32, 32))
    sparse = np.zeros_like(labels[0])  # 0 = not annotated; classes painted as 1 (background) and 2
    sparse[3] = labels[0][3] + 1
    result = train(images=images, labels=[sparse], out=str(tmp_path / "s"), epochs=1, ignore_label=0,
                   classes=3, **SMALL)
    assert np.isfinite(result.final_metrics["loss"])


def test_transfer_learning_with_new_classes_and_frozen_encoder(tmp_path, tiny_model):
    out, _ = tiny_model
    images, labels = blob_images(2)
    labels = [np.where(l > 0, 2, 0).astype(np.uint8) for l in labels]
    result = train(images=images, labels=labels, out=str(tmp_path / "t"), epochs=1, init_from=str(out),
                   classes=3, **SMALL)
    training = json.loads((tmp_path / "t" / "config.json").read_text())["training"]
    assert training["copied_tensors"] > 0 and training["skipped_tensors"] > 0  # the head changed shape
    assert result.network.classes == 3


def test_frozen_encoder_keeps_its_weights(tmp_path, tiny_model):
    out, _ = tiny_model
    images, labels = blob_images(2)
    result = train(images=images, labels=labels, out=str(tmp_path / "f"), epochs=1, init_from=str(out),
                   freeze_encoder=True, optimizer="sgd", lr=0.01, **{k: v for k, v in SMALL.items()})
    from engine.model_files import load_model

    donor = load_model(out, device="cpu").network.state_dict()  # init_from takes the kept ("best") weights
    state = result.network.state_dict()
    encoder = [k for k in state if k.startswith("encoder") and k.endswith("weight")]
    decoder = [k for k in state if k.startswith("decoder") and k.endswith("weight")]
    assert encoder and decoder
    for key in encoder:
        torch.testing.assert_close(state[key], donor[key], rtol=0, atol=0)
    assert any(not torch.equal(state[k], donor[k]) for k in decoder)


def test_deepmib_folder_layout_with_masks(tmp_path):
    from engine.io import write_image, write_labels

    images, labels = blob_images(2)
    for i, (image, label) in enumerate(zip(images, labels)):
        write_image(tmp_path / "train" / "Images" / f"a{i}.tif", image)
        write_labels(tmp_path / "train" / "Labels" / f"a{i}.tif", label, axes="YX")
        mask = np.zeros_like(label)
        mask[:, :24] = 1  # only the left half is annotated
        write_labels(tmp_path / "train" / "Masks" / f"a{i}.tif", mask, axes="YX")
    result = train(images=str(tmp_path / "train"), out=str(tmp_path / "m"), epochs=1, **SMALL)
    assert json.loads((tmp_path / "m" / "config.json").read_text())["training"]["data"] == ["a0.tif", "a1.tif"]
    assert np.isfinite(result.final_metrics["loss"])


def test_bad_training_input(tmp_path):
    with pytest.raises(InputError, match="training set is empty"):
        train(images=[], labels=[], out=str(tmp_path / "x"), **SMALL)
    images, labels = blob_images(1)
    with pytest.raises(InputError, match="unknown network 'unet2'.*'unet2d'"):
        train(images=images, labels=labels, out=str(tmp_path / "x"), **{**SMALL, "network": "unet2"})
    with pytest.raises(InputError, match="contain value 2 but classes=2"):
        train(images=images, labels=[labels[0] * 2], out=str(tmp_path / "x"), classes=2, **SMALL)
    with pytest.raises(InputError, match="classes=1: expected >= 2"):
        train(images=images, labels=labels, out=str(tmp_path / "x"), classes=1, **SMALL)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        train(images=str(tmp_path / "nowhere"), labels=str(tmp_path), out=str(tmp_path / "x"), **SMALL)
    assert not (tmp_path / "x").exists()


def test_per_image_normalization_uses_whole_image_statistics(tmp_path):
    from engine.data import PatchSampler, make_sample
    from engine.augment import Augmentation
    from engine.normalization import Normalization
    from engine.training import Batches

    bright = make_sample(np.full((32, 32), 200.0) + np.arange(32), np.zeros((32, 32), np.uint8), axes="YX")
    sampler = PatchSampler([bright], (8, 8))
    batches = Batches(sampler, Normalization("zscore_image"), Augmentation.off(), (8, 8))
    x, _ = batches.draw(4, np.random.default_rng(0), augment=False)
    expected = Normalization("zscore").fit([bright.image])
    whole = expected.apply(bright.image)
    assert whole.min() <= float(x.min()) and float(x.max()) <= whole.max()
    assert float(x[0].std()) < 0.6  # a patch normalised by itself would have std 1


def test_valid_padding_network_trains_and_predicts(tmp_path):
    from engine.prediction import predict

    images, labels = blob_images(2, shape=(64, 64))
    result = train(images=images, labels=labels, out=str(tmp_path / "v"), epochs=1,
                   **{**SMALL, "network_options": {"depth": 1, "filters": 4, "padding": "valid"}, "patch": 24})
    assert result.network.padding == "valid"
    probs = predict(result.model_dir, images[0], tile=(36, 36), probabilities=True).probabilities
    assert probs.shape == (2, 64, 64)
    np.testing.assert_allclose(probs.sum("ch"), 1.0, atol=1e-5)


def test_epochs_without_validation_never_replace_the_kept_network(tmp_path):
    images, labels = blob_images(3)
    result = train(images=images, labels=labels, out=str(tmp_path / "e"), epochs=3, validation_every=2, **SMALL)
    assert ["val_loss" in row for row in result.history] == [False, True, True]
    best = json.loads((tmp_path / "e" / "config.json").read_text())["training"]["best"]
    assert best["epoch"] in (2, 3) and "val_dice" in best


def test_learning_rate_schedules():
    assert lr_factor("poly", 0, 100, 0) == 1.0 and lr_factor("poly", 100, 100, 0) == 0.0
    assert lr_factor("cosine", 50, 100, 0) == pytest.approx(0.5)
    assert lr_factor("piecewise", 0, 100, 120) == pytest.approx(0.81)
    assert lr_factor("constant", 99, 100, 9) == 1.0
