"""Training: outputs, resume equivalence, cancel, transfer learning, the output folder, the effect of
each option (padding, ignore label, masks, device, optimizers, class weights), bad input.

Two tests inject a fault by patching (named in their docstrings); everything else runs for real."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_UNET, blob_images
from engine.errors import Cancelled, InputError
from engine.training import CHECKPOINT, IN_PROGRESS, load_checkpoint, lr_factor, train

ROOT = Path(__file__).resolve().parents[1]

SMALL = dict(network="unet2d", network_options=TINY_UNET, patch=32, batch=2, steps_per_epoch=2, seed=1)


def test_training_writes_a_complete_model_folder(tiny_model):
    out, result = tiny_model
    for name in ("config.json", CHECKPOINT, "history.csv", "train_config.json", "training_curves.png"):
        assert (out / name).is_file(), name
    assert not (out / IN_PROGRESS).exists()
    config = json.loads((out / "config.json").read_text())
    assert {"best", "last"} <= set(config["weights"])
    for entry in config["weights"].values():
        assert (out / entry["file"]).is_file(), entry
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"loss", "accuracy", "dice", "val_loss", "val_dice", "lr"} <= set(rows[0])
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


def test_auto_augmentation_follows_the_run_length_and_a_resumed_run_keeps_it(tmp_path, monkeypatch):
    monkeypatch.setattr("engine.augment.AUTO_LIGHT_STEPS", 5)  # so that tiny runs fall on both sides
    images, labels = blob_images(2, shape=(12, 32, 32), seed=3)
    small3d = {**SMALL, "network": "unet3d", "patch": [8, 16, 16]}

    def used(name):
        return json.loads((tmp_path / name / "train_config.json").read_text())["augmentation"]

    train(images=images, labels=labels, out=str(tmp_path / "short"), epochs=2, **small3d)  # 4 steps
    train(images=images, labels=labels, out=str(tmp_path / "long"), epochs=3, **small3d)  # 6 steps
    train(images=images, labels=labels, out=str(tmp_path / "given"), epochs=2, augmentation="strong", **small3d)
    assert (used("short"), used("long"), used("given")) == ("light", "default", "strong")
    # resumed for longer (6 steps: default if chosen anew), it keeps the augmentation its first epochs had
    train(images=images, labels=labels, out=str(tmp_path / "short"), epochs=3,
          resume=str(tmp_path / "short" / CHECKPOINT), **small3d)
    assert used("short") == "light"
    flat, flat_labels = blob_images(2, seed=3)  # not a U-Net: short runs keep the default preset
    train(images=flat, labels=flat_labels, out=str(tmp_path / "segnet"), epochs=2,
          **{**SMALL, "network": "segnet2d", "network_options": {"depth": 2, "filters": 4}})
    assert used("segnet") == "default"


def test_scarce_annotation_is_not_split_for_validation_unless_asked(tmp_path):
    """Fewer annotated voxels than 4 training patches: validation would hold less than a patch's worth, so
    by default everything trains and the last network is kept; dense labels keep the 25 % held out."""
    images, labels = blob_images(2, shape=(64, 64), seed=4)
    masks = [np.zeros((64, 64), np.uint8) for _ in images]
    for mask in masks:
        mask[10:40, 10:40] = 1  # 2 x 900 annotated pixels < 4 patches of 32 x 32

    def config(name):
        return json.loads((tmp_path / name / "train_config.json").read_text())

    with pytest.warns(UserWarning, match=r"only 1800 annotated voxels \(fewer than 4 patches of 32 x 32\): all of "
                                         r"them train, none is held out for validation"):
        sparse = train(images=images, labels=labels, masks=masks, out=str(tmp_path / "sparse"), epochs=2, **SMALL)
    assert config("sparse")["validation_fraction"] == 0.0 and "val_dice" not in sparse.history[-1]
    assert json.loads((tmp_path / "sparse" / "config.json").read_text())["training"]["validation"] == []
    asked = train(images=images, labels=labels, masks=masks, out=str(tmp_path / "asked"), epochs=1,
                  validation_fraction=0.5, **SMALL)
    assert config("asked")["validation_fraction"] == 0.5 and "val_dice" in asked.history[-1]
    train(images=images, labels=labels, out=str(tmp_path / "dense"), epochs=1, **SMALL)  # 8192 >= 4096 voxels
    assert config("dense")["validation_fraction"] == 0.25


def test_resume_refuses_a_different_network(tmp_path, tiny_model):
    out, _ = tiny_model
    images, labels = blob_images(2)
    with pytest.raises(InputError, match="cannot resume: checkpoint has network_options"):
        train(images=images, labels=labels, out=str(tmp_path / "c"), epochs=4, resume=str(out),
              **{**SMALL, "network_options": {"depth": 1, "filters": 4}})


def test_patch_larger_than_the_images_is_clamped_with_a_warning(tmp_path):
    images, labels = blob_images(2, shape=(20, 28))
    with pytest.warns(UserWarning, match=r"patch \[32, 32\] is larger than the training images \(largest "
                                         r"\[20, 28\]\): using patch \[20, 28\]"):
        result = train(images=images, labels=labels, out=str(tmp_path / "m"), epochs=1, validation_fraction=0,
                       **SMALL)
    assert json.loads((tmp_path / "m" / "config.json").read_text())["patch"] == [20, 28]
    assert np.isfinite(result.final_metrics["loss"])
    # per axis, and rounded up to a shape the network takes (depth 2: multiples of 4)
    images, labels = blob_images(1, shape=(18, 64))
    with pytest.warns(UserWarning, match=r"using patch \[20, 40\]"):
        train(images=images, labels=labels, out=str(tmp_path / "n"), epochs=1, validation_fraction=0,
              **{**SMALL, "patch": [48, 40]})
    assert json.loads((tmp_path / "n" / "config.json").read_text())["patch"] == [20, 40]


def test_patch_that_fits_gives_no_warning(tmp_path, recwarn):
    images, labels = blob_images(1, shape=(40, 40))
    train(images=images, labels=labels, out=str(tmp_path / "m"), epochs=1, validation_fraction=0, **SMALL)
    assert not [w for w in recwarn if "patch" in str(w.message)]


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
    from engine.data import load_samples
    from engine.losses import IGNORE_INDEX

    for sample, label in zip(load_samples(str(tmp_path / "train")), labels):  # the mask reached the labels
        assert (sample.labels[:, 24:] == IGNORE_INDEX).all()
        np.testing.assert_array_equal(sample.labels[:, :24], label[:, :24])


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
    assert result.network.output_shape((24, 24)) == (8, 8)  # see test_valid_padding_crops_labels_by_the_halo
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


# ------------------------------------------------------------------------------------ output folder
def _listing(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_folder_with_a_foreign_history_is_refused_untouched(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "history.csv").write_text("day,weight\n1,70\n")
    before = _listing(folder)
    images, labels = blob_images(1)
    with pytest.raises(InputError, match=r"'.*mine' holds other files and is not a deepseg model folder"):
        train(images=images, labels=labels, out=str(folder), epochs=1, **SMALL)
    assert _listing(folder) == before


def test_folder_with_a_foreign_config_is_refused_untouched(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.json").write_text('{"format": "someone-else"}\n')
    (folder / "train_config.json").write_text('{"mine": true}\n')
    before = _listing(folder)
    images, labels = blob_images(1)
    with pytest.raises(InputError, match="not a deepseg model folder"):
        train(images=images, labels=labels, out=str(folder), epochs=1, **SMALL)
    assert _listing(folder) == before


def test_a_file_as_output_folder_is_refused(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    images, labels = blob_images(1)
    with pytest.raises(InputError, match=r"output folder '.*notes.txt' is a file"):
        train(images=images, labels=labels, out=str(target), epochs=1, **SMALL)
    assert target.read_text() == "keep me"


def test_empty_folder_and_model_folder_are_accepted(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    images, labels = blob_images(2)
    train(images=images, labels=labels, out=str(folder), epochs=1, **SMALL)
    first = json.loads((folder / "config.json").read_text())
    # a deepseg model folder may be trained into again (here with other options), and then resumed
    again = train(images=images, labels=labels, out=str(folder), epochs=1, **{**SMALL, "seed": 7})
    assert json.loads((folder / "config.json").read_text())["training"]["config"]["seed"] == 7 != first["training"]["config"]["seed"]
    resumed = train(images=images, labels=labels, out=str(folder), epochs=2, resume=str(folder), **{**SMALL, "seed": 7})
    assert [r["epoch"] for r in resumed.history] == [1, 2] and resumed.history[0] == again.history[0]


def test_cancel_in_the_first_epoch_writes_nothing(tmp_path):
    images, labels = blob_images(2)
    out = tmp_path / "m"
    with pytest.raises(Cancelled):
        train(images=images, labels=labels, out=str(out), epochs=1, progress=lambda p: False, **SMALL)
    assert not out.exists()
    train(images=images, labels=labels, out=str(out), epochs=1, **SMALL)  # the same call works again
    assert (out / "config.json").is_file()


def test_interrupted_first_save_leaves_a_folder_the_same_call_accepts(tmp_path, monkeypatch):
    """Fault injection (patched save_model): killed after the first weights file, before config.json."""
    import engine.training as training

    def killed_mid_save(network, directory, **_):
        (Path(directory) / "weights_last.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    images, labels = blob_images(2)
    out = tmp_path / "m"
    out.mkdir()  # an empty folder the user made
    with monkeypatch.context() as patched:
        patched.setattr(training, "save_model", killed_mid_save)
        with pytest.raises(KeyboardInterrupt):
            train(images=images, labels=labels, out=str(out), epochs=1, **SMALL)
    assert sorted(p.name for p in out.iterdir()) == sorted([IN_PROGRESS, "weights_last.safetensors"])
    train(images=images, labels=labels, out=str(out), epochs=1, **SMALL)
    assert (out / "config.json").is_file() and not (out / IN_PROGRESS).exists()


def test_cli_refuses_a_foreign_folder_and_warns_about_a_large_patch(tmp_path):
    from engine.io import write_image, write_labels

    images, labels = blob_images(1, shape=(20, 28))
    write_image(tmp_path / "img.tif", images[0])
    write_labels(tmp_path / "lab.tif", labels[0], template=images[0])
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "history.csv").write_text("mine\n")

    def deepseg(out, *extra):
        return subprocess.run(
            [sys.executable, "-m", "engine.cli", "train", "--images", str(tmp_path / "img.tif"), "--labels",
             str(tmp_path / "lab.tif"), "--out", str(out), "--epochs", "1", "--steps", "1", "--quiet", *extra],
            cwd=ROOT, capture_output=True, text=True, timeout=300)

    refused = deepseg(foreign)
    assert refused.returncode == 2 and "not a deepseg model folder" in refused.stderr, refused.stderr
    assert sorted(foreign.iterdir()) == [foreign / "history.csv"] and (foreign / "history.csv").read_text() == "mine\n"
    clamped = deepseg(tmp_path / "model", "--patch", "64", "--option", "depth=1", "--option", "filters=4")
    assert clamped.returncode == 0, clamped.stderr
    assert "deepseg: warning: patch [64, 64] is larger than the training images (largest [20, 28]): using patch [20, 28]" in clamped.stderr


# ------------------------------------------------------------------------------ options have effects
def test_valid_padding_crops_labels_by_the_halo():
    """unet2d depth 1 with valid padding: 24 -conv,conv-> 20 -pool-> 10 -conv,conv-> 6 -up-> 12 -conv,conv-> 8."""
    from engine.augment import Augmentation
    from engine.data import PatchSampler, make_sample
    from engine.networks import build
    from engine.normalization import Normalization
    from engine.training import Batches

    net = build("unet2d", depth=1, filters=4, padding="valid").eval()
    assert net.output_shape((24, 24)) == (8, 8)
    assert build("unet2d", depth=1, filters=4).output_shape((24, 24)) == (24, 24)
    labels = (np.arange(40 * 40).reshape(40, 40) % 7).astype(np.uint8)
    sample = make_sample(labels.astype(np.float32), labels, axes="YX")  # the image is its own label map
    batches = Batches(PatchSampler([sample], (24, 24)), Normalization("none"), Augmentation.off(), (8, 8))
    x, y = batches.draw(3, np.random.default_rng(0), augment=False)
    assert y.shape == (3, 8, 8)
    # each label patch is the centre of its image patch: the voxels the network's output stands for
    torch.testing.assert_close(x[:, 0, 8:16, 8:16].long(), y, rtol=0, atol=0)
    with torch.no_grad():
        assert net(x).shape == (3, 2, 8, 8)


def _ignored_planes_case(kind):
    """A 6-plane stack annotated in plane 3 only, by ignore label or by mask."""
    images, labels = blob_images(1, shape=(6, 32, 32))
    image, truth = images[0], labels[0]
    options = dict(epochs=1, validation_fraction=0, normalization="none", **SMALL)
    if kind == "ignore label":  # 0 = not annotated; classes painted as 1 and 2
        sparse = np.zeros_like(truth)
        sparse[3] = truth[3] + 1
        return image, dict(labels=[sparse], ignore_label=0, classes=3, **options)
    mask = np.zeros_like(truth)
    mask[3] = 1
    return image, dict(labels=[truth], masks=[mask], **options)


@pytest.mark.parametrize("kind", ["ignore label", "mask"])
def test_voxels_not_annotated_do_not_change_training(tmp_path, kind):
    image, options = _ignored_planes_case(kind)
    noise = np.random.default_rng(1).integers(0, 256, image.shape).astype(image.dtype)
    outside, inside = image.copy(deep=True), image.copy(deep=True)
    outside.values[[0, 1, 2, 4, 5]] = noise[[0, 1, 2, 4, 5]]  # only where nothing is annotated
    inside.values[3, :, :16] = noise[3, :, :16]  # part of the annotated plane: the control
    runs = {name: train(images=[img], out=str(tmp_path / name), **options)
            for name, img in (("original", image), ("outside", outside), ("inside", inside))}
    weights = {name: result.network.state_dict() for name, result in runs.items()}
    for key in weights["original"]:
        torch.testing.assert_close(weights["outside"][key], weights["original"][key], rtol=0, atol=0, msg=key)
    assert runs["outside"].history[0]["loss"] == runs["original"].history[0]["loss"]
    assert runs["inside"].history[0]["loss"] != runs["original"].history[0]["loss"]


def test_masked_out_and_ignored_voxels_become_unlabelled():
    from engine.data import samples_from_arrays
    from engine.losses import IGNORE_INDEX

    image, options = _ignored_planes_case("mask")
    (masked,) = samples_from_arrays([image], options["labels"], options["masks"])
    assert (masked.labels[[0, 1, 2, 4, 5]] == IGNORE_INDEX).all()
    np.testing.assert_array_equal(masked.labels[3], options["labels"][0][3])
    image, options = _ignored_planes_case("ignore label")
    (sparse,) = samples_from_arrays([image], options["labels"], ignore_label=0)
    assert (sparse.labels[[0, 1, 2, 4, 5]] == IGNORE_INDEX).all() and (sparse.labels[3] >= 1).all()


def test_resolve_device():
    from engine.model_files import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto").type == resolve_device(None).type == expected
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(InputError, match="device 'gpu7' is not valid"):
        resolve_device("gpu7")


@pytest.mark.parametrize("device", [
    "cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                          reason="needs a CUDA device")])])
def test_trained_network_is_on_the_requested_device(tmp_path, device):
    images, labels = blob_images(2)
    result = train(images=images, labels=labels, out=str(tmp_path / "d"), epochs=1, device=device, **SMALL)
    assert {p.device.type for p in result.network.parameters()} == {device}
    assert {b.device.type for b in result.network.buffers()} == {device}
    from engine.model_files import load_model

    assert next(load_model(tmp_path / "d", device="cpu").network.parameters()).device.type == "cpu"


@pytest.mark.parametrize("name, cls", [("adamw", torch.optim.AdamW), ("rmsprop", torch.optim.RMSprop),
                                       ("sgd", torch.optim.SGD), ("adam", torch.optim.Adam)])
def test_optimizers(tmp_path, name, cls):
    from engine.config import TrainConfig
    from engine.networks import build
    from engine.training import make_optimizer

    optimizer = make_optimizer(TrainConfig(optimizer=name, lr=0.01, weight_decay=0.1, momentum=0.5),
                               [torch.nn.Parameter(torch.zeros(2))])
    assert type(optimizer) is cls
    assert optimizer.defaults["lr"] == 0.01 and optimizer.defaults["weight_decay"] == 0.1
    images, labels = blob_images(2)
    options = {**SMALL, "steps_per_epoch": 1}
    result = train(images=images, labels=labels, out=str(tmp_path / name), epochs=1, optimizer=name, lr=0.01,
                   validation_fraction=0, **options)
    group = load_checkpoint(tmp_path / name)["optimizer"]["param_groups"][0]
    assert set(group) == set(optimizer.state_dict()["param_groups"][0])  # the optimizer really used
    if name in ("adam", "adamw"):
        assert group["decoupled_weight_decay"] is (name == "adamw")
    torch.manual_seed(SMALL["seed"])  # the initial weights, as train() builds them
    initial = build("unet2d", in_channels=1, classes=2, **TINY_UNET).state_dict()
    trained = result.network.state_dict()
    changed = [k for k, v in initial.items() if v.is_floating_point() and not torch.equal(v, trained[k])]
    assert len(changed) == sum(v.is_floating_point() for v in initial.values()), "one step changed every tensor"


def test_auto_class_weights_are_the_ones_the_loss_uses(tmp_path):
    images, labels = blob_images(2)
    train(images=images, labels=labels, out=str(tmp_path / "w"), epochs=1, class_weights="auto",
          validation_fraction=0, **SMALL)
    used = json.loads((tmp_path / "w" / "config.json").read_text())["training"]["class_weights"]
    counts = np.bincount(np.concatenate([l.ravel() for l in labels]), minlength=2).astype(float)
    freq = counts / counts.sum()
    expected = np.median(freq) / freq  # median-frequency balancing, by hand
    assert counts[1] < counts[0] and used[1] > used[0]  # the rare class weighs more
    np.testing.assert_allclose(used, expected, rtol=1e-6)
    train(images=images, labels=labels, out=str(tmp_path / "n"), epochs=1, validation_fraction=0, **SMALL)
    assert json.loads((tmp_path / "n" / "config.json").read_text())["training"]["class_weights"] is None
