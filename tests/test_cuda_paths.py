"""CUDA code paths, checked without a GPU: the CUDA facts (devices, capabilities, memory, RNG states) are
pretended with monkeypatched ``torch.cuda`` functions, which record how they are called; nothing is
allocated on a GPU.

Covered: bf16 only from compute capability 8.0 on the device asked for (engine.precision); the training
device's CUDA RNG state in checkpoints, also resuming old ones on fewer GPUs (engine.training); the GPU
memory estimate of plans, fixed + per voxel (engine.plan); Dask workers pinned to their GPU as the current
device (engine.blockwise); the per-step confusion counted on the tensors' device (engine.training).
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

import engine.plan as plan_module
from engine.errors import InputError
from engine.metrics import confusion_matrix
from engine.plan import DeviceProfile, Fingerprint, _fits_memory, _memory_line, _predicted_bytes, make_plan
from engine.precision import Precision, cuda_supports_bf16, resolve_precision
from engine.training import _restore_rng, _rng_state, batch_confusion


def _index(device) -> int | None:
    return None if device is None or isinstance(device, int) and device < 0 else (
        device if isinstance(device, int) else torch.device(device).index)


# ------------------------------------------------------------------------------------- precision (1)
@pytest.fixture
def two_gpus(monkeypatch):
    """GPU 0 a V100 (7.0), GPU 1 an A100 (8.0), GPU 1 current; torch's own check says bf16 (emulated) works."""
    capability = {0: (7, 0), 1: (8, 0)}
    names = {0: "Tesla V100-SXM2-16GB", 1: "NVIDIA A100-SXM4-40GB"}
    asked: list[int | None] = []

    def pick(device=None) -> int:
        index = _index(device)
        asked.append(index)
        return 1 if index is None else index

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability[pick(device)])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: names[pick(device)])
    return asked


def test_bf16_needs_compute_capability_8_on_the_device_asked_for(two_gpus):
    assert cuda_supports_bf16("cuda:0") is False
    assert cuda_supports_bf16(torch.device("cuda:1")) is True
    assert two_gpus == [0, 1]  # the devices passed in, not the current one (GPU 1)
    assert resolve_precision("auto", "cuda:0") == Precision("fp16", "cuda")  # fp16 with a GradScaler
    assert resolve_precision("auto", torch.device("cuda", 0)) == Precision("fp16", "cuda")
    assert resolve_precision("auto", "cuda:1") == Precision("bf16", "cuda")
    assert resolve_precision("auto", "cuda") == Precision("bf16", "cuda")  # "cuda": the current device (1)
    assert resolve_precision("fp16", "cuda:0").name == "fp16"


def test_explicit_bf16_on_a_pre_ampere_gpu_is_refused_naming_its_capability(two_gpus):
    with pytest.raises(InputError, match=r"precision='bf16'.*V100.*compute capability 7\.0.*'fp16'.*'fp32'"):
        resolve_precision("bf16", "cuda:0")
    assert resolve_precision("bf16", "cuda:1") == Precision("bf16", "cuda")


def test_no_cuda_means_no_bf16_on_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cuda_supports_bf16("cuda:0") is False
    with pytest.raises(InputError, match="precision='bf16'.*no CUDA device"):
        resolve_precision("bf16", "cuda:0")


# --------------------------------------------------------------------------------- RNG states (2)
class FakeCudaRng:
    """Pretended CUDA RNG functions with ``gpus`` visible devices; records every get/set."""

    def __init__(self, monkeypatch, gpus: int) -> None:
        self.gpus, self.calls = gpus, []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
        monkeypatch.setattr(torch.cuda, "get_rng_state", self.get)
        monkeypatch.setattr(torch.cuda, "set_rng_state", self.set)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", self.refused)
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", self.refused)

    def check(self, device) -> int:
        index = _index(device) or 0
        if index >= self.gpus:
            raise IndexError(f"no CUDA device {index} of {self.gpus}")  # what torch does
        return index

    def get(self, device="cuda") -> torch.Tensor:
        index = self.check(device)
        self.calls.append(("get", index))
        return torch.full((16,), index, dtype=torch.uint8)

    def set(self, state, device="cuda") -> None:
        self.calls.append(("set", self.check(device), int(state[0])))

    def refused(self, *args):
        raise AssertionError("every GPU's RNG state: breaks resuming on fewer GPUs")


def _draws(rng: np.random.Generator) -> tuple:
    return rng.random(), float(torch.rand(1)), random.random()


def test_only_the_training_devices_cuda_state_is_saved_and_restored(monkeypatch):
    fake = FakeCudaRng(monkeypatch, gpus=4)
    rng = np.random.default_rng(5)
    state = _rng_state(rng, torch.device("cuda:2"))
    assert fake.calls == [("get", 2)] and int(state["cuda"][0]) == 2
    expected = _draws(rng)
    fake = FakeCudaRng(monkeypatch, gpus=1)  # resumed on a machine with one GPU, training on cuda:0
    _restore_rng(rng, state, torch.device("cuda:0"))
    assert fake.calls == [("set", 0, 2)]
    assert _draws(rng) == expected  # numpy, torch and Python states restored as before


@pytest.mark.parametrize("device, restored", [("cuda:0", 0), ("cuda", 0), ("cuda:3", 3)])
def test_an_old_checkpoint_with_four_gpu_states_resumes_on_fewer_gpus(monkeypatch, device, restored):
    """Old checkpoints hold one state per GPU then visible: the one of the device's index where it exists."""
    old = {"numpy": np.random.default_rng(1).bit_generator.state, "torch": torch.get_rng_state(),
           "cuda": [torch.full((16,), i, dtype=torch.uint8) for i in range(4)], "python": random.getstate()}
    fake = FakeCudaRng(monkeypatch, gpus=4 if restored == 3 else 1)
    _restore_rng(np.random.default_rng(0), old, torch.device(device))
    assert fake.calls == [("set", _index(device) or 0, restored)]


def test_an_old_checkpoint_from_more_gpus_than_the_device_index_restores_the_first(monkeypatch):
    old = {"numpy": np.random.default_rng(1).bit_generator.state, "torch": torch.get_rng_state(),
           "cuda": [torch.full((16,), 7, dtype=torch.uint8)], "python": random.getstate()}
    fake = FakeCudaRng(monkeypatch, gpus=2)
    _restore_rng(np.random.default_rng(0), old, torch.device("cuda:1"))
    assert fake.calls == [("set", 1, 7)]


def test_cpu_training_touches_no_cuda_rng_and_survives_a_safe_load(monkeypatch, tmp_path):
    fake = FakeCudaRng(monkeypatch, gpus=2)  # a machine with GPUs, training on the CPU
    rng = np.random.default_rng(3)
    torch.save({"rng": _rng_state(rng, torch.device("cpu"))}, tmp_path / "state.pt")
    expected = _draws(rng)
    state = torch.load(tmp_path / "state.pt", weights_only=True)["rng"]
    _restore_rng(rng, state, torch.device("cpu"))
    assert _draws(rng) == expected
    old = dict(state, cuda=[torch.zeros(16, dtype=torch.uint8)] * 4)  # an old CUDA checkpoint resumed on the CPU
    _restore_rng(rng, old, torch.device("cpu"))
    _restore_rng(rng, dict(state, cuda=[]), torch.device("cuda:0"))  # an old CPU checkpoint resumed on a GPU
    assert fake.calls == []


# ------------------------------------------------------------------------------ plan memory (3)
def test_memory_line_through_measurements():
    assert _memory_line([(1024, 1_020_000_000), (2048, 1_040_000_000)]) == (1e9, 19531.25)
    fixed, slope = _memory_line([(1000, 5e6 + 10), (2000, 6e6 - 10), (4000, 8e6 + 10)])  # noisy
    assert slope == pytest.approx(1000, rel=1e-3)
    assert all(fixed + slope * v >= b for v, b in [(1000, 5e6 + 10), (2000, 6e6 - 10), (4000, 8e6 + 10)])
    assert _memory_line([(1000, 7e6), (2000, 6e6)]) == (7e6, 0.0)  # never a negative slope
    with pytest.raises(ValueError, match="two or more patch sizes"):
        _memory_line([(1000, 7e6), (1000, 8e6)])


def test_predicted_bytes_adds_weights_and_adams_moments_once():
    assert _predicted_bytes(1e9, 2e4, 65536, 1e8) == 1e9 + 2e4 * 65536 + 3e8
    assert _predicted_bytes(1e9, 2e4, 2 * 65536, 1e8) - _predicted_bytes(1e9, 2e4, 65536, 1e8) == 2e4 * 65536


FIXED, PER_VOXEL, PARAMETERS = 1.0e9, 2.0e4, 1.0e8  # bytes: the synthetic GPU's step
GPU = DeviceProfile("cuda:0", 8, 2e13, 16 * 10**9)


@pytest.fixture
def synthetic_gpu(monkeypatch):
    """``_step_memory`` measuring a step of FIXED + PER_VOXEL * voxels bytes; records its calls."""
    calls = []

    def measure(network, options, patches, batch, channels, classes, device, precision):
        calls.append((network, dict(options), tuple(patches), batch, device, precision))
        return [(math.prod(p), int(FIXED + PER_VOXEL * math.prod(p))) for p in patches], int(PARAMETERS)

    monkeypatch.setattr(plan_module, "_step_memory", measure)
    monkeypatch.setattr(plan_module, "_MEMORY_LINES", {})
    return calls


DATA_2D = Fingerprint(2, (1024, 1024), (1.0, 1.0), 1, None)


def test_fits_memory_keeps_fixed_costs_fixed(synthetic_gpu):
    options = {"depth": 4, "filters": 32, "stem": "double"}
    patch = (256, 256)
    small = (32, 32)  # twice the pooling grid (16) of depth 4
    old_rule = (FIXED + PER_VOXEL * math.prod(small)) * math.prod(patch) / math.prod(small)
    assert old_rule > plan_module.GPU_MEMORY_SHARE * GPU.memory_bytes  # the proportional rule refused it
    assert _fits_memory("unet2d", options, patch, 4, DATA_2D, 2, GPU)
    assert not _fits_memory("unet2d", options, (1024, 1024), 4, DATA_2D, 2, GPU)  # 22 GB: too much
    assert synthetic_gpu == [("unet2d", options, ((32, 32), (32, 64)), 4, "cuda:0", "auto")]  # measured once
    assert _fits_memory("unet2d", options, patch, 4, DATA_2D, 2, GPU, precision="fp16")
    assert synthetic_gpu[-1][-1] == "fp16"


def test_gpu_plan_gets_the_largest_patch_and_widest_network(synthetic_gpu):
    plan = make_plan(DATA_2D, profile=GPU, classes=2)
    assert plan.patch == (512, 512) and plan.network_options["filters"] == 32
    assert plan.network_options["stem"] == "double"


def test_step_memory_runs_a_real_step_in_the_runs_precision(monkeypatch):
    """The measurement loop on the CPU, with the CUDA memory counters pretended: it must run a forward under the
    resolved precision's autocast, a loss and a backward per patch, and count the parameters."""
    import engine.precision as precision_module

    resolved, counters = [], []
    real = precision_module.resolve_precision
    monkeypatch.setattr(precision_module, "resolve_precision",
                        lambda value, device: resolved.append(value) or real(value, device))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: counters.append("reset"))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 1000)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 5000 + 1000 * len(counters))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: counters.append("empty"))
    points, parameter_bytes = plan_module._step_memory("unet2d", {"depth": 2, "filters": 4, "stem": "double"},
                                                       ((8, 8), (8, 16)), 2, 1, 2, "cpu", "fp32")
    assert points == [(64, 5000), (128, 6000)] and counters == ["reset", "reset", "empty"]
    from engine.networks import build

    expected = sum(p.numel() * 4 for p in build("unet2d", in_channels=1, classes=2, depth=2, filters=4).parameters())
    assert parameter_bytes == expected and resolved == ["fp32"]


def test_measure_device_empties_the_cache_before_reading_free_memory(monkeypatch):
    calls = []
    monkeypatch.setattr("engine.model_files.resolve_device", lambda device: torch.device("cuda:0"))
    monkeypatch.setattr(plan_module, "remembered_step", lambda *a, **k: 0.01)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: calls.append("mem_get_info") or (7 * 2**30, 8 * 2**30))
    profile = plan_module.measure_device("cuda:0", 2)
    assert calls == ["empty_cache", "mem_get_info"] and profile.memory_bytes == 7 * 2**30


# ---------------------------------------------------------------------------- Dask worker GPU (4)
@pytest.mark.parametrize("gpus, worker, expected", [(2, 1, "cuda:1"), (4, 6, "cuda:2"), (1, 1, "auto")])
def test_a_pinned_worker_makes_its_gpu_the_current_device(monkeypatch, gpus, worker, expected):
    distributed = pytest.importorskip("distributed")
    from engine.blockwise import _worker_device

    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: current.append(index))
    monkeypatch.setattr(distributed, "get_worker", lambda: type("Worker", (), {"name": worker})())
    assert _worker_device("auto") == expected
    pinned = [] if expected == "auto" else [_index(expected)]
    assert current == pinned
    assert _worker_device("cuda:1") == "cuda:1" and _worker_device("cpu") == "cpu"
    assert current == pinned  # an explicit device is left alone


# ------------------------------------------------------------------------------ confusion (5)
@pytest.mark.parametrize("shape", [(3, 17, 19), (2, 5, 9, 11)])
@pytest.mark.parametrize("classes", [2, 4])
def test_batch_confusion_counts_as_the_numpy_confusion_matrix(shape, classes):
    generator = torch.Generator().manual_seed(classes + len(shape))
    logits = torch.randn((shape[0], classes, *shape[1:]), generator=generator)
    target = torch.randint(0, classes, shape, generator=generator)
    target[torch.rand(shape, generator=generator) < 0.3] = -1  # IGNORE_INDEX: unannotated
    expected = confusion_matrix(logits.argmax(1).numpy(), target.numpy(), classes, ignore_label=-1)
    counts = batch_confusion(logits, target, classes)
    assert isinstance(counts, np.ndarray) and counts.dtype == np.int64 and counts.shape == (classes, classes)
    np.testing.assert_array_equal(counts, expected)
    assert counts.sum() == int((target != -1).sum()) > 0


def test_batch_confusion_refuses_labels_beyond_the_classes():
    logits, target = torch.randn(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, 0, 0] = 3
    with pytest.raises(InputError, match="labels above 1"):
        batch_confusion(logits, target, 2)


def test_batch_confusion_copies_only_the_counts_to_the_host(monkeypatch):
    """The argmax and the labels stay on their device (a 3D GPU batch: millions of values per step)."""
    copied = []
    cpu, numpy = torch.Tensor.cpu, torch.Tensor.numpy
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: copied.append(self.numel()) or cpu(self, *a, **k))
    monkeypatch.setattr(torch.Tensor, "numpy", lambda self, *a, **k: copied.append(self.numel()) or numpy(self, *a, **k))
    counts = batch_confusion(torch.randn(2, 3, 8, 16, 16), torch.randint(0, 3, (2, 8, 16, 16)), 3)
    assert counts.sum() == 2 * 8 * 16 * 16 and copied and max(copied) == 9
