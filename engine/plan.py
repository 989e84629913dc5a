"""Training plans from the data and the machine, like nnU-Net's plans but aware of the device.

A plan fixes network, depth, width (filters), stem, patch and batch. It is made in three steps:

1. **Data**: dimensionality, voxel size (anisotropy) and the size of the labelled objects
   (:func:`fingerprint`). Strongly anisotropic stacks (Z voxels >= 4x the in-plane size) are segmented
   slice by slice (``unet2d``), moderately anisotropic ones (>= 2x) with ``unet3d_aniso`` (in-plane first
   level), the rest with ``unet3d``; 2D images with ``unet2d``.
2. **Receptive field**: the smallest depth whose receptive field covers about twice the typical object
   (90th percentile of the objects' extents), within what the patch allows.
3. **Cost**: the operations of a training step are counted exactly (on PyTorch's ``meta`` device, no
   memory, no compute) and divided by the rate this device achieved in a real training step
   (:func:`measure_device`, a few seconds, once per process). On a CPU the plan picks the widest network
   and the largest patch whose estimated step fits ``step_seconds``; on a GPU, what fits in memory.
   A strided first convolution (``stem="strided"``) is chosen where it lets a wider network or a larger
   patch fit.

>>> from engine.plan import Plan
>>> Plan("unet2d", {"depth": 3, "filters": 32, "stem": "double"}, (256, 256), 4, 0.2).patch
(256, 256)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import InputError

STEP_SECONDS = 0.25  # CPU target for one training step: ~4 steps/s keeps time-budgeted runs long enough
BUDGET_STEPS = 200  # steps a short time budget should still give. Measured (bench_quality, 60 s, 3 seeds): 0.25 s
# steps (~200) beat 0.1 s steps (~360-500, narrower network or smaller patch) on nuclei and blobs2d, so only
# budgets under a minute get cheaper steps
BUDGET_TRAINING_SHARE = 0.85  # of a time budget spent in training steps (the rest: loading, validation, saving)
MIN_STEP_SECONDS = 0.03  # the target never goes below this, however short the budget
GPU_MEMORY_SHARE = 0.7  # of the free GPU memory for one training step
FILTERS = (32, 16, 8)
STEMS = ("double", "strided")
_MAX_PATCH_2D = 512
_MAX_VOXELS_3D = 128 * 160 * 160  # nnU-Net-like upper bound; the cost decides below it
_OBJECT_SAMPLE_VOXELS = 32 * 2**20  # labels read for the object sizes, at most


@dataclass
class Fingerprint:
    """What the plan needs to know about the training data."""

    spatial_dims: int
    shape: tuple[int, ...]  # smallest image extent per spatial axis
    spacing: tuple[float, ...]  # per spatial axis, 1.0 where unknown
    channels: int
    object_extent: tuple[float, ...] | None  # 90th percentile of object bounding boxes, voxels per axis

    @property
    def anisotropy(self) -> float:
        """Z voxel size over the in-plane size (1.0 in 2D)."""
        if self.spatial_dims < 3:
            return 1.0
        return float(self.spacing[0] / max(min(self.spacing[1:]), 1e-12))


@dataclass
class DeviceProfile:
    """A device and the rate it achieved in a real training step."""

    device: str
    threads: int
    flops_per_second: float
    memory_bytes: int | None = None  # free GPU memory (None on a CPU)


@dataclass
class Plan:
    """A training configuration with its estimated cost."""

    network: str
    network_options: dict[str, Any]
    patch: tuple[int, ...]
    batch: int
    step_seconds: float  # estimated
    step_flops: float = 0.0
    receptive_field: tuple[int, ...] = ()
    device: str = "cpu"
    reasons: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """Human-readable, as ``deepseg plan`` prints it."""
        options = ", ".join(f"{k}={v}" for k, v in self.network_options.items())
        lines = [f"network        {self.network} ({options})",
                 f"patch          {' x '.join(map(str, self.patch))}",
                 f"batch          {self.batch}",
                 f"receptive field {' x '.join(map(str, self.receptive_field))} voxels",
                 f"estimated step {self.step_seconds:.3f} s on {self.device} "
                 f"({self.step_flops / 1e9:.1f} GFLOP forward + backward)"]
        return "\n".join(lines + [f"  - {r}" for r in self.reasons])

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["patch"], out["receptive_field"] = list(self.patch), list(self.receptive_field)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Plan":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["patch"] = tuple(values.get("patch", ()))
        values["receptive_field"] = tuple(values.get("receptive_field", ()))
        return cls(**values)


# ------------------------------------------------------------------------------------------ data
def fingerprint(samples: Sequence[Any]) -> Fingerprint:
    """Dimensionality, smallest extent, voxel size, channels and object size of training samples
    (:class:`engine.data.Sample`; lazy ones are read only in part)."""
    if not samples:
        raise InputError("no training samples to plan for")
    shapes = np.array([s.spatial_shape for s in samples])
    ndim = shapes.shape[1]
    spatial_dims = 3 if ndim == 3 and int(shapes[:, 0].min()) > 1 else 2
    shape = tuple(int(v) for v in shapes.min(axis=0)[-spatial_dims:])
    first = samples[0]
    spatial_names = [d for d in first.dims if d in ("pln", "row", "col")][-spatial_dims:]
    spacing = tuple(float(first.spacing.get(d, 1.0) or 1.0) for d in spatial_names) or (1.0,) * spatial_dims
    if len(spacing) != spatial_dims:
        spacing = (1.0,) * spatial_dims
    channels = int(first.image.shape[0]) if len(first.image.shape) > ndim else 1
    return Fingerprint(spatial_dims, shape, spacing, channels, _object_extent(samples, spatial_dims))


def _object_extent(samples: Sequence[Any], spatial_dims: int) -> tuple[float, ...] | None:
    """90th percentile of the foreground objects' bounding-box extents (voxels per spatial axis)."""
    from scipy import ndimage

    extents: list[np.ndarray] = []
    for sample in samples:
        labels = sample.labels
        planes = labels.shape[0] if labels.ndim == 3 else 1
        per_plane = int(np.prod(labels.shape[1:])) if labels.ndim == 3 else int(np.prod(labels.shape))
        take = max(1, min(planes, _OBJECT_SAMPLE_VOXELS // max(per_plane, 1)))
        start = (planes - take) // 2
        part = np.asarray(labels[start:start + take]) if labels.ndim == 3 else np.asarray(labels)
        if spatial_dims == 2 and part.ndim == 3:
            part = part[part.shape[0] // 2]
        foreground = part > 0
        if not foreground.any():
            continue
        components, count = ndimage.label(foreground)
        boxes = ndimage.find_objects(components)
        extents.extend(np.array([sl.stop - sl.start for sl in box]) for box in boxes if box is not None)
    if not extents:
        return None
    return tuple(float(v) for v in np.percentile(np.stack(extents), 90, axis=0))


# ---------------------------------------------------------------------------------------- device
def measure_device(device: str = "auto", spatial_dims: int = 2, precision: str = "auto") -> DeviceProfile:
    """The rate of real training steps of a reference U-Net (in the precision training will use), timed once per
    machine (:func:`remembered_step`)."""
    import torch

    from .model_files import resolve_device

    resolved = resolve_device(device)
    name, patch, batch = (("unet2d", (128, 128), 4) if spatial_dims == 2 else ("unet3d", (32, 64, 64), 2))
    options = {"depth": 3, "filters": 16, "stem": "double"}
    seconds = remembered_step(name, options, patch, batch, resolved, precision=precision)
    memory = None
    if resolved.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()  # the timed network's cached blocks are free for training: count them
        free, _ = torch.cuda.mem_get_info(resolved)
        memory = int(free)
    return DeviceProfile(str(resolved), torch.get_num_threads(), _flops(name, options, patch, batch, 1, 2) / seconds,
                         memory)


TIMINGS_FILE = "plan-timings.json"  # in the user's cache folder (engine.fileutil.cache_root)


def remembered_step(name: str, options: dict[str, Any], patch: Sequence[int], batch: int, device: Any,
                    refresh: bool = False, **kw: Any) -> float:
    """:func:`time_step`, measured once per machine, software and configuration and then read from the user's
    cache folder: plans repeat on a machine (a recorded macro replays the same training), and a time-budgeted
    run does not spend its budget measuring again. ``refresh``: measure a timing taken only once again and keep
    the faster of the two (one taken while other work ran is too slow; it must not stay), then never again.
    ``deepseg plan --remeasure`` forgets the timings."""
    import torch

    from .fileutil import atomic_path, cache_root

    key = "|".join(map(str, (_machine(device), torch.__version__, torch.get_num_threads(), name,
                             sorted(options.items()), tuple(patch), batch, sorted(kw.items()))))
    path = cache_root() / TIMINGS_FILE
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        table = {}
    known = table.get(key)
    if known is None or (refresh and not isinstance(known, list)):  # a list: [seconds, measured twice]
        measured = time_step(name, options, patch, batch, device, **kw)
        table[key] = measured if known is None else [min(measured, float(known)), 2]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                Path(tmp).write_text(json.dumps(table, indent=1) + "\n")
        except OSError:  # a read-only home: measured again next time
            pass
    known = table[key]
    return float(known[0] if isinstance(known, list) else known)


def forget_timings() -> None:
    """Remove the remembered step timings (the next plan measures this machine again)."""
    from .fileutil import cache_root

    (cache_root() / TIMINGS_FILE).unlink(missing_ok=True)


def _machine(device: Any) -> str:
    """The processor's or GPU's model name, which timings are remembered for."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"cpu:{line.split(':', 1)[1].strip()}x{cpu_count()}"
    except OSError:
        pass
    import platform

    return f"{device.type}:{platform.processor() or platform.machine()}x{cpu_count()}"


def time_step(name: str, options: dict[str, Any], patch: Sequence[int], batch: int, device: Any, *,
              channels: int = 1, classes: int = 2, precision: str = "auto", steps: int = 3) -> float:
    """Seconds of one training step (forward, loss, backward, optimizer) after a warm-up step: the fastest of
    ``steps``, the one least disturbed by other work on the machine."""
    import torch

    from .networks import build
    from .precision import resolve_precision

    device = torch.device(device)
    autocast = resolve_precision(precision, device).autocast
    net = build(name, in_channels=channels, classes=classes, **options).to(device)
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    x = torch.randn((batch, channels, *patch), device=device)
    y = torch.randint(0, classes, (batch, *patch), device=device)

    def step() -> float:
        began = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            logits = net(x)
        torch.nn.functional.cross_entropy(logits.float(), y).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - began

    step()
    return min(step() for _ in range(steps))


def step_flops(name: str, options: dict[str, Any], patch: Sequence[int], batch: int, channels: int = 1,
               classes: int = 2) -> float:
    """Operations of one training step (forward + backward = 3x forward), counted without computing."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .networks import build

    with torch.device("meta"):
        net = build(name, in_channels=channels, classes=classes, **options)
        x = torch.empty((1, channels, *patch))
    with FlopCounterMode(display=False) as counter:
        net(x)
    return 3.0 * batch * float(counter.get_total_flops())


# ------------------------------------------------------------------------------------------ plan
def receptive_field(network: str, depth: int, kernel: int = 3) -> tuple[int, ...]:
    """Receptive field per axis of a same-padding U-Net: each level's four convolutions (two down, two up)
    and its pooling, scaled by the level's stride, plus the bottleneck's two convolutions."""
    axes = 2 if network == "unet2d" else 3
    out = []
    for axis in range(axes):
        field_, stride = 1, 1
        for level in range(depth):
            first_aniso = network == "unet3d_aniso" and axis == 0 and level == 0
            k, pool = (1, 1) if first_aniso else (kernel, 2)
            field_ += 4 * (k - 1) * stride + (pool - 1) * stride
            stride *= pool
        out.append(field_ + 2 * (kernel - 1) * stride)
    return tuple(out)


def choose_network(data: Fingerprint) -> tuple[str, str]:
    """Network name and the reason, from dimensionality and anisotropy."""
    if data.spatial_dims == 2:
        return "unet2d", "2D images: unet2d"
    ratio = data.anisotropy
    if ratio >= 4:
        return "unet2d", f"Z voxels {ratio:.1f}x the in-plane size: slice-by-slice unet2d"
    if ratio >= 2:
        return "unet3d_aniso", f"Z voxels {ratio:.1f}x the in-plane size: unet3d_aniso (in-plane first level)"
    return "unet3d", f"voxels about isotropic (Z/XY {ratio:.1f}): unet3d"


def _pool_factors(network: str, depth: int) -> tuple[int, ...]:
    if network == "unet2d":
        return (2**depth,) * 2
    if network == "unet3d_aniso":
        return (2 ** (depth - 1), 2**depth, 2**depth)
    return (2**depth,) * 3


def _largest_patch(network: str, data: Fingerprint, depth: int) -> tuple[int, ...]:
    """The largest useful patch: the image (2D up to 512 px; 3D up to about 3.3 M voxels, shaped by voxel
    size), rounded down to the network's pooling grid (at least one grid step)."""
    shape = data.shape[-2:] if network == "unet2d" else data.shape
    if network == "unet2d":
        wanted = np.minimum(shape, _MAX_PATCH_2D).astype(np.float64)
    else:
        spacing = np.array(data.spacing, dtype=np.float64)
        wanted = (_MAX_VOXELS_3D * np.prod(spacing)) ** (1 / 3) / spacing
        wanted = np.minimum(wanted, shape)
    grid = _pool_factors(network, depth)
    return tuple(max(g, int(w) // g * g) for w, g in zip(wanted, grid))


def _shrink(patch: Sequence[int], grid: Sequence[int], floor: Sequence[int]) -> tuple[int, ...] | None:
    """The patch with its largest axis (relative to the floor) one grid step smaller; None at the floor."""
    ratios = [p / max(f, 1) for p, f in zip(patch, floor)]
    axis = int(np.argmax(ratios))
    if patch[axis] - grid[axis] < max(floor[axis], grid[axis]):
        return None
    smaller = list(patch)
    smaller[axis] -= grid[axis]
    return tuple(smaller)


def _depth(network: str, data: Fingerprint, largest: Sequence[int]) -> tuple[int, str]:
    """Smallest depth (2..5) whose receptive field covers twice the typical object, patch permitting."""
    target = np.array(data.object_extent if data.object_extent is not None else largest, dtype=np.float64)
    if network == "unet2d":
        target = target[-2:]
    target = np.minimum(2 * target, largest)
    for depth in range(2, 6):
        grid = _pool_factors(network, depth)
        if any(g * 2 > s for g, s in zip(grid, largest)):  # the patch must hold 2 steps of the coarsest level
            return max(2, depth - 1), "depth limited by the patch"
        if all(r >= t for r, t in zip(receptive_field(network, depth), target)):
            what = "the objects" if data.object_extent is not None else "the patch"
            return depth, f"depth {depth}: receptive field covers twice {what}"
    return 5, "depth 5: the largest"


def step_target(time_budget: float | None = None) -> float:
    """CPU seconds one training step may take: :data:`STEP_SECONDS`, less within a budget under a minute
    (``time_budget`` seconds) so that it still gives about :data:`BUDGET_STEPS` steps.

    >>> step_target(), step_target(600), step_target(60), step_target(20)
    (0.25, 0.25, 0.25, 0.085)
    """
    if time_budget is None:
        return STEP_SECONDS
    return round(min(STEP_SECONDS, max(MIN_STEP_SECONDS, time_budget * BUDGET_TRAINING_SHARE / BUDGET_STEPS)), 4)


def make_plan(samples: Sequence[Any] | Fingerprint, *, device: str = "auto", step_seconds: float | None = None,
              classes: int = 2, batch: int | None = None, profile: DeviceProfile | None = None,
              precision: str = "auto", time_budget: float | None = None) -> Plan:
    """Plan network, depth, filters, stem, patch and batch for ``samples`` on ``device``.

    Priorities: a patch of at least twice the typical object (and 128 px in-plane, 16 planes, where the
    images allow; never below half of that), then the widest network (32, 16, 8 filters; the plain stem
    before the strided one), then the largest patch that still fits the target. ``profile``: a measured
    device (default: measured now; then the chosen configuration is also timed for real on a CPU, and the plan
    is made again with the rate it achieved when the estimate was off by more than 30 %). CPU step target:
    ``step_seconds``, else :func:`step_target` of ``time_budget`` (seconds of a ``--time`` run)."""
    data = samples if isinstance(samples, Fingerprint) else fingerprint(samples)
    if step_seconds is None and time_budget is not None:
        step_seconds = step_target(time_budget)
    network, why = choose_network(data)
    dims = 2 if network == "unet2d" else 3
    measured = profile is None
    profile = profile or measure_device(device, dims, precision)
    batch = batch or (4 if dims == 2 else 2)
    plan = _plan(data, network, profile, batch, classes, step_seconds, precision)
    plan.reasons.insert(0, why)
    if measured and profile.memory_bytes is None:
        timing = dict(channels=data.channels, classes=classes, precision=precision, steps=2)
        seconds = remembered_step(plan.network, plan.network_options, plan.patch, batch, profile.device, **timing)
        if not 0.77 < plan.step_seconds / seconds < 1.3:  # a remembered timing may be stale: measure once more
            seconds = remembered_step(plan.network, plan.network_options, plan.patch, batch, profile.device,
                                      refresh=True, **timing)
        if not 0.77 < plan.step_seconds / seconds < 1.3:
            rate = plan.step_flops / seconds
            plan = _plan(data, network, replace(profile, flops_per_second=rate), batch, classes, step_seconds,
                         precision)
            plan.reasons.insert(0, why)
            plan.reasons.append(f"re-planned: the first choice took {seconds:.3f} s per step in a real step")
    if time_budget is not None and step_seconds < STEP_SECONDS and profile.memory_bytes is None:
        plan.reasons.append(f"time budget {time_budget:g} s: a step of at most {step_seconds:g} s gives about "
                            f"{BUDGET_STEPS} steps (more steps of a cheaper network win in short budgets)")
    return plan


def _plan(data: Fingerprint, network: str, profile: DeviceProfile, batch: int, classes: int,
          step_seconds: float | None, precision: str = "auto") -> Plan:
    """One pass of :func:`make_plan` with a given device rate."""
    dims = 2 if network == "unet2d" else 3
    usual = np.array((16, 128, 128)[-dims:], dtype=np.float64)
    wanted = usual.copy()  # twice the objects, between the usual patch and twice that
    if data.object_extent is not None:
        wanted = np.clip(2 * np.array(data.object_extent[-dims:]), usual, 2 * usual)
    depth, depth_why = _depth(network, data, np.minimum(wanted, _largest_patch(network, data, 2)))
    grid = _pool_factors(network, depth)
    largest = _largest_patch(network, data, depth)
    floor = tuple(min(l, max(2 * g, m)) for l, g, m in zip(largest, grid, (8, 32, 32)[-dims:]))
    need = tuple(min(l, max(f, -(-int(w) // g) * g)) for l, f, w, g in zip(largest, floor, wanted, grid))
    half = tuple(max(f, n // 2 // g * g) for f, n, g in zip(floor, need, grid))
    gpu = profile.memory_bytes is not None
    limit = step_seconds if step_seconds is not None else STEP_SECONDS

    def fits(options: dict[str, Any], patch: tuple[int, ...]) -> bool:
        if gpu:
            return _fits_memory(network, options, patch, batch, data, classes, profile, precision)
        return _flops(network, options, patch, batch, data.channels, classes) / profile.flops_per_second <= limit

    reasons = [depth_why]
    chosen = _search(depth, grid, largest, (need, half), fits)
    if chosen is None:
        chosen = ({"depth": depth, "filters": FILTERS[-1], "stem": "strided"}, half)
        reasons.append(f"even the smallest configuration exceeds the {'memory' if gpu else 'time'} target")
    options, patch = chosen
    if any(p < n for p, n in zip(patch, need)):
        reasons.append(f"patch below the wanted {' x '.join(map(str, need))} to fit the target")
    if options["stem"] == "strided":
        reasons.append("strided stem: lets this width and patch fit the target")
    target = (f"{GPU_MEMORY_SHARE:.0%} of the free GPU memory" if gpu else f"{limit:g} s per step")
    reasons.append(f"target: {target} on {profile.device} ({profile.threads} threads, "
                   f"{profile.flops_per_second / 1e9:.0f} GFLOP/s measured in a training step)")
    flops = _flops(network, options, patch, batch, data.channels, classes)
    return Plan(network, options, tuple(int(p) for p in patch), batch, flops / profile.flops_per_second, flops,
                receptive_field(network, depth), profile.device, reasons)


def _search(depth: int, grid: Sequence[int], largest: tuple[int, ...], minimums: Sequence[tuple[int, ...]],
            fits: Any) -> tuple[dict[str, Any], tuple[int, ...]] | None:
    """The widest configuration (then the largest patch) that fits, trying each minimum patch in turn."""
    for minimum in minimums:
        for filters in FILTERS:
            for stem in STEMS:
                options = {"depth": depth, "filters": filters, "stem": stem}
                patch: tuple[int, ...] | None = largest
                while patch is not None and not fits(options, patch):
                    patch = _shrink(patch, grid, minimum)
                if patch is not None:
                    return options, patch
    return None


def _flops(network: str, options: dict[str, Any], patch: Sequence[int], batch: int, channels: int,
           classes: int) -> float:
    """:func:`step_flops` scaled from a reference patch: with same padding the count is linear in voxels."""
    grid = _pool_factors(network, options["depth"])
    key = (network, tuple(sorted(options.items())), channels, classes)
    if key not in _FLOPS_PER_VOXEL:
        reference = tuple(2 * g for g in grid)
        _FLOPS_PER_VOXEL[key] = step_flops(network, options, reference, 1, channels, classes) / math.prod(reference)
    return _FLOPS_PER_VOXEL[key] * math.prod(patch) * batch


_FLOPS_PER_VOXEL: dict[tuple[Any, ...], float] = {}


def _memory_line(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """``(fixed, slope)`` of ``bytes = fixed + slope * voxels`` through measured ``(voxels, bytes)`` points: the
    least-squares slope (at least 0), then the smallest ``fixed`` that puts no measurement above the line.

    >>> _memory_line([(1000, 5_000_000), (2000, 6_000_000)])
    (4000000.0, 1000.0)
    """
    voxels = np.array([v for v, _ in points], dtype=np.float64)
    used = np.array([b for _, b in points], dtype=np.float64)
    if len(points) < 2 or np.ptp(voxels) == 0:
        raise ValueError(f"a memory line needs measurements at two or more patch sizes, got {list(points)}")
    centred = voxels - voxels.mean()
    slope = max(0.0, float(centred @ (used - used.mean()) / (centred @ centred)))
    return max(0.0, float(np.max(used - slope * voxels))), slope


def _predicted_bytes(fixed: float, slope: float, voxels: float, parameter_bytes: float) -> float:
    """GPU memory of a training step at a patch of ``voxels``: the measured line (inputs, activations, gradients,
    workspace) plus the weights and Adam's two moment buffers (three times the parameters' bytes), which the
    measured step (no optimizer step, weights allocated before) does not hold."""
    return fixed + slope * voxels + 3.0 * parameter_bytes


def _step_memory(network: str, options: dict[str, Any], patches: Sequence[tuple[int, ...]], batch: int,
                 channels: int, classes: int, device: str, precision: str) -> tuple[list[tuple[int, int]], int]:
    """Measured on GPU ``device`` in ``precision``: ``(voxels, bytes)`` per patch, the peak a training step (forward
    under autocast, loss, backward) adds to what was allocated before it; and the bytes of the parameters."""
    import torch

    from .networks import build
    from .precision import resolve_precision

    target = torch.device(device)
    autocast = resolve_precision(precision, target).autocast
    net = build(network, in_channels=channels, classes=classes, **options).to(target)
    points = []
    for patch in patches:
        net.zero_grad(set_to_none=True)
        torch.cuda.reset_peak_memory_stats(target)
        before = torch.cuda.memory_allocated(target)
        x = torch.randn((batch, channels, *patch), device=target)
        y = torch.randint(0, classes, (batch, *patch), device=target)
        with autocast():
            logits = net(x)
        torch.nn.functional.cross_entropy(logits.float(), y).backward()
        points.append((math.prod(patch), int(torch.cuda.max_memory_allocated(target) - before)))
        del x, y, logits
    parameter_bytes = sum(p.numel() * p.element_size() for p in net.parameters())
    del net
    torch.cuda.empty_cache()
    return points, int(parameter_bytes)


_MEMORY_LINES: dict[tuple[Any, ...], tuple[float, float, int]] = {}


def _fits_memory(network: str, options: dict[str, Any], patch: Sequence[int], batch: int, data: Fingerprint,
                 classes: int, profile: DeviceProfile, precision: str = "auto") -> bool:
    """GPU: a training step's memory within the share of the free memory. Measured at two small patches in the
    run's precision (:func:`_step_memory`, once per configuration) and fitted as fixed + per-voxel
    (:func:`_memory_line`): fixed costs do not grow with the patch."""
    grid = _pool_factors(network, options["depth"])
    small = tuple(max(min(p, g), 1) * 2 for p, g in zip(patch, grid))
    twice = (*small[:-1], 2 * small[-1])
    key = (network, tuple(sorted(options.items())), small, batch, data.channels, classes, profile.device, precision)
    if key not in _MEMORY_LINES:
        points, parameter_bytes = _step_memory(network, options, (small, twice), batch, data.channels, classes,
                                               profile.device, precision)
        _MEMORY_LINES[key] = (*_memory_line(points), parameter_bytes)
    fixed, slope, parameter_bytes = _MEMORY_LINES[key]
    used = _predicted_bytes(fixed, slope, math.prod(patch), parameter_bytes)
    return used <= GPU_MEMORY_SHARE * float(profile.memory_bytes or 0)


def load_plan(folder: str | Path) -> Plan | None:
    """The plan a model folder was trained with (``config.json``'s "plan"; None for a network given by name)."""
    path = Path(folder) / "config.json"
    saved = json.loads(path.read_text()).get("plan") if path.is_file() else None
    return Plan.from_dict(saved) if saved else None


def cpu_count() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
