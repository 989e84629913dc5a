"""Precision selection (bf16 / fp16 / fp32) and bf16 autocast in prediction and training.

No GPU here: the CUDA choices are tested with the capability checks monkeypatched; the CPU paths run
for real (bf16 is emulated, but still bf16, on a CPU without native support).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import engine.precision as precision_module
from conftest import TINY_UNET, blob_images
from engine.config import TrainConfig, train_options
from engine.errors import InputError
from engine.precision import Precision, as_precision, configure_device, resolve_precision


# --------------------------------------------------------------------------------------- selection
@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_cpu_uses_bf16_only_where_native(monkeypatch, native, expected):
    monkeypatch.setattr(precision_module, "cpu_supports_bf16", lambda: native)
    chosen = resolve_precision("auto", "cpu")
    assert chosen == Precision(expected, "cpu")
    assert chosen.enabled is bool(chosen) is (expected == "bf16")
    assert resolve_precision("fp32", "cpu").enabled is False
    assert resolve_precision(None, torch.device("cpu")).name == expected


def test_explicit_bf16_on_cpu_without_native_support_warns_but_runs(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_supports_bf16", lambda: False)
    with pytest.warns(UserWarning, match="emulated"):
        assert resolve_precision("bf16", "cpu").dtype == torch.bfloat16


@pytest.mark.parametrize("bf16, expected", [(True, "bf16"), (False, "fp16")])
def test_auto_on_cuda_prefers_bf16_then_fp16(monkeypatch, bf16, expected):
    monkeypatch.setattr(precision_module, "cuda_supports_bf16", lambda device: bf16)
    chosen = resolve_precision("auto", "cuda")
    assert chosen == Precision(expected, "cuda")
    assert resolve_precision("fp16", "cuda:1").name == "fp16"
    if not bf16:
        with pytest.raises(InputError, match="precision='bf16'.*no bf16"):
            resolve_precision("bf16", "cuda")


def test_fp16_needs_a_loss_scaler_and_only_fp16():
    assert Precision("bf16", "cuda").grad_scaler() is None
    assert Precision("fp32", "cuda").grad_scaler() is None
    assert Precision("bf16", "cpu").grad_scaler() is None
    with pytest.warns(UserWarning) if not torch.cuda.is_available() else _nothing():
        assert isinstance(Precision("fp16", "cuda").grad_scaler(), torch.amp.GradScaler)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("value, device, match", [
    ("fp16", "cpu", "fp16' needs CUDA"), ("bf16", "mps", "not available on device 'mps'"),
    ("half", "cpu", "expected one of auto, bf16, fp16, fp32"), (3, "cpu", "precision=3"),
])
def test_bad_precisions_are_refused_with_the_value(value, device, match):
    with pytest.raises(InputError, match=match):
        resolve_precision(value, device)


def test_mps_and_other_devices_fall_back_to_fp32():
    assert resolve_precision("auto", "mps") == Precision("fp32", "mps")


def test_as_precision_maps_the_old_amp_flag():
    assert as_precision(False, "cpu").name == "fp32"
    assert as_precision(True, "cpu") == resolve_precision("auto", "cpu")
    given = Precision("bf16", "cpu")
    assert as_precision(given, "cpu") is given


def test_cudnn_benchmark_is_turned_on_for_cuda_only(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    configure_device("cpu")
    assert torch.backends.cudnn.benchmark is False
    configure_device(torch.device("cuda", 0))
    assert torch.backends.cudnn.benchmark is True


def test_cpu_check_agrees_with_the_cpuinfo_flags():
    flags = precision_module._cpuinfo_flags()
    if {"avx512_bf16", "amx_bf16"} & flags:
        assert precision_module.cpu_supports_bf16()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags here")


# ------------------------------------------------------------------------------------------ config
def test_precision_option_is_declared_for_cli_and_fiji():
    declared = {d.name: d for d in train_options()}["precision"]
    assert (declared.flag, declared.key, declared.default) == ("--precision", "precision", "auto")
    assert declared.choice_list() == ("auto", "bf16", "fp16", "fp32")
    with pytest.raises(InputError, match="precision='fp8'"):
        TrainConfig(precision="fp8")


def test_old_configs_with_amp_still_load():
    assert TrainConfig.from_dict({"amp": True}).precision == "auto"
    assert TrainConfig.from_dict({"amp": False}).precision == "fp32"
    assert TrainConfig.from_dict({"amp": False, "precision": "bf16"}).precision == "bf16"
    assert "amp" not in TrainConfig().to_dict()
    with pytest.raises(InputError, match="amp='yes'"):
        TrainConfig.from_dict({"amp": "yes"})


def test_cli_predict_and_train_take_precision():
    from engine.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["predict", "m", "in.tif", "--out", "o.tif", "--precision", "fp32"]).precision == "fp32"
    assert parser.parse_args(["predict", "m", "in.tif", "--out", "o.tif"]).precision == "auto"
    assert parser.parse_args(["train", "--precision", "bf16"]).precision == "bf16"
    with pytest.raises(SystemExit):
        parser.parse_args(["predict", "m", "in.tif", "--out", "o.tif", "--precision", "fp8"])


# ---------------------------------------------------------------------------- prediction and training
@pytest.fixture(scope="module")
def trained_models(tmp_path_factory):
    """A 2D and a 3D tiny U-Net trained until their predictions are confident (bf16 vs fp32 is then
    decided by the network, not by ties of an untrained one); returns {dims: model folder}."""
    from engine.training import train

    folders = {}
    for dims, shape, patch, steps, batch in ((2, (64, 64), 32, 10, 4), (3, (12, 40, 40), [8, 32, 32], 8, 2)):
        images, labels = blob_images(2, shape=shape)
        folders[dims] = tmp_path_factory.mktemp("precision") / f"unet{dims}d"
        train(images=images, labels=labels, out=str(folders[dims]), network=f"unet{dims}d", network_options=TINY_UNET,
              patch=patch, epochs=3, steps_per_epoch=steps, batch=batch, lr=3e-3, seed=5, validation_fraction=0)
    return folders


def _dtypes_seen(network: torch.nn.Module) -> tuple[list[torch.dtype], torch.utils.hooks.RemovableHandle]:
    """Records the output dtype of the network's first convolution at every call."""
    seen: list[torch.dtype] = []
    conv = next(m for m in network.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)))
    return seen, conv.register_forward_hook(lambda module, args, out: seen.append(out.dtype))


@pytest.mark.parametrize("dims, shape", [(2, (160, 160)), (3, (24, 64, 64))])
def test_bf16_prediction_agrees_with_fp32(trained_models, dims, shape):
    from engine.model_files import load_model
    from engine.prediction import predict

    model = load_model(trained_models[dims], device="cpu")
    image = blob_images(1, shape=shape, seed=10)[0][0]
    seen, hook = _dtypes_seen(model.network)
    try:
        full = predict(model, image, precision="fp32", probabilities=True)
        assert seen and set(seen) == {torch.float32}
        seen.clear()
        with pytest.warns(UserWarning) if not precision_module.cpu_supports_bf16() else _nothing():
            half = predict(model, image, precision="bf16", probabilities=True)
        assert seen and set(seen) == {torch.bfloat16}  # the network really ran in bf16
    finally:
        hook.remove()
    assert half.probabilities.dtype == np.float32  # softmax and blending in fp32
    assert np.allclose(half.probabilities.sum("ch"), 1.0, atol=1e-5)
    agreement = float((half.labels.values == full.labels.values).mean())
    assert agreement >= 0.999, agreement
    assert 0 < np.count_nonzero(full.labels.values) < full.labels.size  # a real segmentation, not all one class


def test_auto_prediction_uses_bf16_where_the_cpu_has_it(trained_models, monkeypatch):
    from engine.model_files import load_model
    from engine.prediction import predict

    model = load_model(trained_models[2], device="cpu")
    image = blob_images(1, shape=(48, 48), seed=3)[0][0]
    for native, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(precision_module, "cpu_supports_bf16", lambda native=native: native)
        seen, hook = _dtypes_seen(model.network)
        try:
            predict(model, image)
        finally:
            hook.remove()
        assert set(seen) == {expected}


def test_predict_file_refuses_fp16_on_cpu_before_writing(trained_models, tmp_path):
    from engine.io import write_image
    from engine.prediction import predict_file

    image = blob_images(1, shape=(48, 48))[0][0]
    write_image(tmp_path / "in.tif", image)
    with pytest.raises(InputError, match="fp16"):
        predict_file(trained_models[2], tmp_path / "in.tif", tmp_path / "labels.tif", precision="fp16", device="cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


@pytest.mark.parametrize("precision, expected", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_training_step_runs_in_the_chosen_precision(tmp_path, precision, expected, recwarn):
    from engine.training import prepare, train_epoch

    images, labels = blob_images(2)
    config = TrainConfig(out=str(tmp_path / "m"), network="unet2d", network_options=TINY_UNET, patch=32, batch=2,
                         steps_per_epoch=2, epochs=1, precision=precision, device="cpu")
    run = prepare(config, images, labels)
    assert run.precision.name == precision and bool(run.use_amp) is (precision == "bf16")
    assert run.use_amp is run.precision  # validation (evaluate_batches) gets the run's precision
    seen, hook = _dtypes_seen(run.network)
    try:
        row = train_epoch(run, 0, None)
    finally:
        hook.remove()
    assert len(seen) == 2 and set(seen) == {expected}
    assert np.isfinite(row["loss"])
    assert all(p.dtype == torch.float32 for p in run.network.parameters())  # master weights stay fp32


def test_bf16_guard_keeps_3d_weight_gradients_right_on_thin_inputs():
    """oneDNN's bf16 Conv3d weight gradient is wrong for inputs shallower than the kernel; the guard
    runs exactly those convolutions in fp32 and leaves the others in bf16."""
    from engine.precision import guard_cpu_bf16

    torch.manual_seed(0)
    conv = guard_cpu_bf16(torch.nn.Conv3d(16, 32, 3, padding=1, bias=False))
    for depth, dtype in ((2, torch.float32), (4, torch.bfloat16)):
        x = torch.randn(2, 16, depth, 8, 8)
        grads = []
        for enabled in (False, True):
            conv.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
                y = conv(x)
                assert torch.is_autocast_enabled("cpu") is enabled  # the guard restores autocast
            assert y.dtype == (dtype if enabled else torch.float32)
            y.float().square().mean().backward()
            grads.append(conv.weight.grad.clone())
        assert float((grads[1] - grads[0]).abs().max() / grads[0].abs().max()) < 0.05
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # inference: bf16 is right, kept
        assert conv(torch.randn(1, 16, 2, 8, 8)).dtype == torch.bfloat16
    assert guard_cpu_bf16(conv) is conv and len(conv._forward_pre_hooks) == 1  # idempotent


def test_bf16_training_of_a_thin_3d_network_stays_finite(tmp_path):
    """A 3D U-Net whose coarsest level is 2 planes deep (patch depth 8, two poolings) trains in bf16."""
    from engine.training import train

    images, labels = blob_images(2, shape=(12, 40, 40))
    result = train(images=images, labels=labels, out=str(tmp_path / "m"), network="unet3d", network_options=TINY_UNET,
                   patch=[8, 32, 32], epochs=1, steps_per_epoch=4, batch=2, lr=3e-3, seed=5, validation_fraction=0,
                   precision="bf16", device="cpu")
    assert np.isfinite(result.history[-1]["loss"])
    assert all(torch.isfinite(p).all() for p in result.network.parameters())
