"""Training plans: network from dimensionality and anisotropy, depth from object size, width/stem/patch from
the measured device and a step-time target; the strided stem is a real, cheaper network option."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from engine.cli import main
from engine.errors import InputError
from engine.networks import build
from engine.plan import (DeviceProfile, Fingerprint, fingerprint, load_plan, make_plan, receptive_field,
                         step_flops)

SLOW_CPU = DeviceProfile("cpu", 2, 5e9)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Remembered timings go to this test's own cache folder, and nothing is remembered from before."""
    monkeypatch.setenv("DEEPSEG_CACHE_DIR", str(tmp_path / "cache"))

FAST_CPU = DeviceProfile("cpu", 2, 1e15)


def test_strided_stem_is_cheaper_and_keeps_the_output_shape():
    for name, shape in (("unet2d", (1, 1, 64, 64)), ("unet3d", (1, 1, 16, 32, 32)), ("unet3d_aniso", (1, 1, 8, 32, 32))):
        plain, strided = build(name, filters=8, stem="double"), build(name, filters=8, stem="strided")
        x = torch.randn(shape)
        assert strided(x).shape == plain(x).shape == (1, 2, *shape[2:])
        assert isinstance(strided.encoders[0], torch.nn.Identity)
        patch = shape[2:]
        cheap = step_flops(name, {"filters": 8, "stem": "strided"}, patch, 1)
        full = step_flops(name, {"filters": 8, "stem": "double"}, patch, 1)
        assert cheap < 0.9 * full


def test_strided_stem_refuses_valid_padding_and_unknown_stems():
    with pytest.raises(InputError, match="stem='strided' works with padding='same'"):
        build("unet2d", stem="strided", padding="valid")
    with pytest.raises(InputError, match="stem='wide'"):
        build("unet2d", stem="wide")


def test_strided_stem_trains():
    torch.manual_seed(0)
    net = build("unet2d", filters=4, depth=2, stem="strided")
    optimizer = torch.optim.Adam(net.parameters(), 1e-2)
    x = torch.randn(4, 1, 32, 32)
    y = (x[:, 0] > 0).long()
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_receptive_field_formula_matches_the_measured_one():
    from engine.networks.analysis import receptive_field as measured

    for name, depth in (("unet2d", 2), ("unet3d_aniso", 2)):
        net = build(name, filters=2, depth=depth)
        size = (32, 64, 64) if name != "unet2d" else (64, 64)
        assert tuple(measured(net, size)) == receptive_field(name, depth)


@pytest.mark.parametrize("spacing,network", [((1.0, 1.0, 1.0), "unet3d"), ((2.5, 1.0, 1.0), "unet3d_aniso"),
                                             ((6.0, 1.0, 1.0), "unet2d")])
def test_network_follows_the_anisotropy(spacing, network):
    plan = make_plan(Fingerprint(3, (64, 256, 256), spacing, 1, (10.0, 20.0, 20.0)), profile=FAST_CPU)
    assert plan.network == network


def test_depth_grows_with_the_objects():
    small = make_plan(Fingerprint(2, (512, 512), (1.0, 1.0), 1, (10.0, 10.0)), profile=FAST_CPU)
    large = make_plan(Fingerprint(2, (512, 512), (1.0, 1.0), 1, (150.0, 150.0)), profile=FAST_CPU)
    assert small.network_options["depth"] < large.network_options["depth"]
    assert all(r >= 2 * 150 for r in large.receptive_field)


def test_slow_device_gets_a_cheaper_plan_within_the_target():
    data = Fingerprint(2, (512, 512), (1.0, 1.0), 1, (30.0, 30.0))
    fast, slow = make_plan(data, profile=FAST_CPU), make_plan(data, profile=SLOW_CPU)
    assert fast.network_options["filters"] == 32 and fast.patch == (512, 512)
    assert slow.step_flops < fast.step_flops
    assert slow.step_seconds <= 0.25 + 1e-9
    assert slow.step_seconds == pytest.approx(slow.step_flops / SLOW_CPU.flops_per_second)
    tight = make_plan(data, profile=SLOW_CPU, step_seconds=0.05)
    assert tight.step_flops < slow.step_flops


def test_strided_stem_chosen_where_it_lets_the_width_fit():
    data = Fingerprint(3, (64, 128, 128), (1.0, 1.0, 1.0), 1, (5.0, 5.0, 5.0))
    probe = make_plan(data, profile=FAST_CPU)
    need = (16, 128, 128)  # the wanted patch: 16 planes, 128 px in-plane
    depth = probe.network_options["depth"]
    plain = step_flops("unet3d", {"depth": depth, "filters": 32, "stem": "double"}, need, 2)
    strided = step_flops("unet3d", {"depth": depth, "filters": 32, "stem": "strided"}, need, 2)
    rate = (plain + strided) / 2 / 0.25  # the plain stem misses 0.25 s at the wanted patch, the strided one fits
    plan = make_plan(data, profile=DeviceProfile("cpu", 2, rate))
    assert plan.network_options == {"depth": depth, "filters": 32, "stem": "strided"}
    assert any("strided stem" in r for r in plan.reasons)


def test_fingerprint_reads_spacing_and_object_sizes():
    from engine.data import Sample

    labels = np.zeros((20, 64, 64), np.uint8)
    labels[5:15, 10:30, 20:26] = 1
    labels[2:4, 40:44, 40:44] = 1
    image = np.zeros((1, 20, 64, 64), np.float32)
    sample = Sample(image, labels, "a", {"pln": 2.0, "row": 0.5, "col": 0.5}, ("ch", "pln", "row", "col"))
    data = fingerprint([sample])
    assert data.spatial_dims == 3 and data.shape == (20, 64, 64)
    assert data.spacing == (2.0, 0.5, 0.5) and data.anisotropy == 4.0
    assert data.object_extent[0] == pytest.approx(2 + 0.9 * 8)  # 90th percentile of the two boxes (2 and 10)


def test_plan_round_trips_through_json(tmp_path):
    plan = make_plan(Fingerprint(2, (256, 256), (1.0, 1.0), 1, None), profile=FAST_CPU)
    (tmp_path / "config.json").write_text(json.dumps({"network": "unet2d", "plan": plan.to_dict()}))
    assert load_plan(tmp_path) == plan
    assert load_plan(tmp_path / "missing") is None


def test_cli_plan_measures_this_machine(tmp_path, capsys):
    import tifffile

    rng = np.random.default_rng(0)
    labels = np.zeros((96, 96), np.uint8)
    labels[20:40, 30:50] = 1
    tifffile.imwrite(tmp_path / "img.tif", rng.normal(size=(96, 96)).astype(np.float32))
    tifffile.imwrite(tmp_path / "lab.tif", labels)
    assert main(["plan", "--images", str(tmp_path / "img.tif"), "--labels", str(tmp_path / "lab.tif"),
                 "--json", str(tmp_path / "plan.json")]) == 0
    out = capsys.readouterr().out
    assert "network        unet2d" in out and "estimated step" in out and "GFLOP/s" in out
    saved = json.loads((tmp_path / "plan.json").read_text())
    assert saved["step_seconds"] > 0 and math.prod(saved["patch"]) <= 96 * 96
    assert main(["plan", "--images", str(tmp_path / "img.tif"), "--step-time", "0"]) == 2


def test_train_with_network_auto_follows_and_saves_the_plan(tmp_path, monkeypatch):
    """`deepseg train` without --network trains what `deepseg plan` prints (options, patch and batch given by
    the user win), stores the plan in config.json, and a resumed run keeps the checkpoint's network."""
    from conftest import blob_images

    from engine.training import train

    profile = DeviceProfile("cpu", 2, 2e10)
    monkeypatch.setattr("engine.plan.measure_device", lambda device="auto", spatial_dims=2, precision="auto": profile)
    monkeypatch.setattr("engine.plan.time_step", lambda name, options, patch, batch, device, **kw:  # as estimated
                        step_flops(name, options, patch, batch) / profile.flops_per_second)
    images, labels = blob_images(3)
    expected = make_plan(fingerprint(_samples(images, labels)), profile=profile)
    result = train(images=images, labels=labels, out=str(tmp_path / "auto"), epochs=1, steps_per_epoch=1)
    saved = json.loads((tmp_path / "auto" / "config.json").read_text())
    assert saved["network"] == expected.network
    assert {k: saved["network_options"][k] for k in expected.network_options} == expected.network_options
    assert saved["plan"]["patch"] == list(expected.patch) and saved["plan"]["batch"] == expected.batch
    assert load_plan(tmp_path / "auto").network == expected.network
    used = _train_config(tmp_path / "auto")
    assert used["patch"] == list(expected.patch) and used["batch"] == expected.batch

    train(images=images, labels=labels, out=str(tmp_path / "given"), epochs=1, steps_per_epoch=1,
          patch=32, batch=1, network_options={"filters": 4})
    given = _train_config(tmp_path / "given")
    assert given["patch"] == [32, 32] and given["batch"] == 1
    assert given["network_options"]["filters"] == 4 and given["network"] == expected.network

    monkeypatch.setattr("engine.plan.measure_device", lambda device="auto", spatial_dims=2, precision="auto": FAST_CPU)
    before = _train_config(tmp_path / "auto")["network_options"]
    train(images=images, labels=labels, out=str(tmp_path / "auto"), epochs=2, steps_per_epoch=1,
          resume=str(tmp_path / "auto"))
    assert _train_config(tmp_path / "auto")["network_options"] == before  # not the fast machine's plan
    assert len(result.history) == 1
    train(images=images, labels=labels, out=str(tmp_path / "explicit"), epochs=1, steps_per_epoch=1,
          network="unet2d", network_options={"depth": 2, "filters": 4}, patch=32)
    assert "plan" not in json.loads((tmp_path / "explicit" / "config.json").read_text())
    assert load_plan(tmp_path / "explicit") is None

    train(images=images, labels=labels, out=str(tmp_path / "budget"), time_budget="2s")  # a short budget: cheaper
    budget = load_plan(tmp_path / "budget")
    assert budget.step_seconds <= 0.03 + 1e-9 < expected.step_seconds
    assert any("time budget 2 s" in r for r in budget.reasons)
    train(images=images, labels=labels, out=str(tmp_path / "step"), epochs=1, steps_per_epoch=1, step_time=0.01)
    assert any("0.01 s per step" in r for r in load_plan(tmp_path / "step").reasons)


def _train_config(folder):
    return json.loads((folder / "train_config.json").read_text())


def _samples(images, labels):
    from engine.data import samples_from_arrays

    return samples_from_arrays(images, labels)


def test_a_plan_is_made_again_when_a_real_step_is_slower_than_estimated(monkeypatch):
    """The chosen configuration is timed for real; 3x slower than estimated: planned again with that rate."""
    data = Fingerprint(2, (512, 512), (1.0, 1.0), 1, (30.0, 30.0))
    profile = DeviceProfile("cpu", 2, 1e11)
    monkeypatch.setattr("engine.plan.measure_device", lambda device="auto", spatial_dims=2, precision="auto": profile)
    monkeypatch.setattr("engine.plan.time_step", lambda name, options, patch, batch, device, **kw:
                        3 * step_flops(name, options, patch, batch) / profile.flops_per_second)
    first = make_plan(data, profile=profile)
    again = make_plan(data)
    assert again.step_flops < first.step_flops
    assert again.step_seconds <= 0.25 + 1e-9 and any("re-planned" in r for r in again.reasons)


def test_timings_are_remembered_per_machine_and_forgotten_on_request(tmp_path, monkeypatch, capsys):
    """A second plan (a new process: no profile in memory) reads the timings from the cache folder and makes the
    same plan without timing anything; `deepseg plan --remeasure` measures again."""
    from engine import plan

    data = Fingerprint(2, (256, 256), (1.0, 1.0), 1, (20.0, 20.0))
    first = make_plan(data, device="cpu")
    assert (tmp_path / "cache" / plan.TIMINGS_FILE).is_file()

    def no_timing(*args, **kwargs):
        raise AssertionError("timed again although remembered")

    monkeypatch.setattr(plan, "time_step", no_timing)
    assert make_plan(data, device="cpu") == first
    plan.forget_timings()
    with pytest.raises(AssertionError, match="timed again"):
        make_plan(data, device="cpu")


def test_cli_plan_refuses_to_write_over_its_input(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "img.tif", np.zeros((64, 64), np.float32))
    before = (tmp_path / "img.tif").read_bytes()
    assert main(["plan", "--images", str(tmp_path / "img.tif"), "--json", str(tmp_path / "img.tif")]) == 2
    assert (tmp_path / "img.tif").read_bytes() == before


def test_a_short_time_budget_plans_cheaper_steps_and_says_why():
    from engine.plan import BUDGET_STEPS, STEP_SECONDS, step_target

    assert step_target(None) == step_target(3600) == step_target(60) == STEP_SECONDS
    assert step_target(20) == pytest.approx(20 * 0.85 / BUDGET_STEPS, abs=1e-3)
    assert step_target(20) < STEP_SECONDS
    assert step_target(0.5) == 0.03  # never below the floor
    data = Fingerprint(2, (512, 512), (1.0, 1.0), 1, (30.0, 30.0))
    rate = DeviceProfile("cpu", 2, 2e10)
    long, short = make_plan(data, profile=rate, time_budget=3600), make_plan(data, profile=rate, time_budget=20)
    assert long.step_seconds <= STEP_SECONDS + 1e-9 and short.step_seconds <= step_target(20) + 1e-9
    assert short.step_flops < long.step_flops
    assert 20 / short.step_seconds >= BUDGET_STEPS * 0.85
    assert any("time budget 20 s" in r for r in short.reasons)
    assert not any("time budget" in r for r in long.reasons)


def test_deepseg_plan_time_option(tmp_path, capsys):
    import tifffile

    from engine.synthetic import blobs

    image, labels = blobs((96, 96), seed=1)
    tifffile.imwrite(tmp_path / "image.tif", image)
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    assert main(["plan", "--images", str(tmp_path / "image.tif"), "--labels", str(tmp_path / "labels.tif"),
                 "--time", "2s", "--json", str(tmp_path / "plan.json")]) == 0
    reasons = json.loads((tmp_path / "plan.json").read_text())["reasons"]
    assert any("time budget 2 s" in r for r in reasons)
    assert "augmentation   auto -> light (about " in capsys.readouterr().out  # a 2-s U-Net run: light
    volume, volume_labels = blobs((12, 48, 48), seed=1)
    tifffile.imwrite(tmp_path / "volume.tif", volume)
    tifffile.imwrite(tmp_path / "volume_labels.tif", volume_labels)
    for budget, preset in (("2s", "light"), ("1h", "default")):  # 3D too; a long run: default
        assert main(["plan", "--images", str(tmp_path / "volume.tif"), "--labels", str(tmp_path / "volume_labels.tif"),
                     "--axes", "ZYX", "--time", budget]) == 0
        assert f"augmentation   auto -> {preset} (about " in capsys.readouterr().out
    assert main(["plan", "--images", str(tmp_path / "image.tif"), "--time", "soon"]) != 0
    assert "time='soon'" in capsys.readouterr().err


def test_a_remembered_timing_far_from_the_estimate_is_measured_once_more_and_the_faster_kept(monkeypatch):
    """A timing taken while other work ran (here: 5x the estimate) must not decide plans forever: when the chosen
    configuration's remembered time is off, it is measured again once; the faster is kept, and not measured
    a third time."""
    from engine import plan

    data = Fingerprint(2, (512, 512), (1.0, 1.0), 1, (30.0, 30.0))
    profile = DeviceProfile("cpu", 2, 1e11)
    monkeypatch.setattr(plan, "measure_device", lambda device="auto", spatial_dims=2, precision="auto": profile)
    calls = []

    def timing(name, options, patch, batch, device, **kw):
        calls.append((name, tuple(sorted(options.items())), tuple(patch)))
        slow = 5 if len(calls) == 1 else 1  # the first measurement was disturbed
        return slow * step_flops(name, options, patch, batch) / profile.flops_per_second

    monkeypatch.setattr(plan, "time_step", timing)
    quiet = make_plan(data, profile=profile)
    first = make_plan(data)
    assert len(calls) == 2 and calls[0] == calls[1]  # the same configuration, measured twice
    assert (first.network_options, first.patch) == (quiet.network_options, quiet.patch)  # as if never disturbed
    assert not any("re-planned" in r for r in first.reasons)
    monkeypatch.setattr(plan, "time_step", lambda *a, **k: pytest.fail("measured a third time"))
    assert make_plan(data) == first
