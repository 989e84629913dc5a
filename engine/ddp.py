"""Multi-GPU and multi-node training with ``torch.distributed`` (DistributedDataParallel).

Two ways in:

* ``deepseg train ... --gpus N`` (``train(..., gpus=N)``) on one machine: :func:`launch` starts N worker
  processes (one GPU each, NCCL; with ``device=cpu``: N CPU processes, gloo, e.g. for tests), relays
  rank 0's progress to the caller and re-raises the first worker's error;
* under ``torchrun`` or SLURM ``srun`` (:func:`environment` reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/
  ``MASTER_ADDR``/``MASTER_PORT``, or ``SLURM_PROCID``/``SLURM_STEP_NUM_TASKS``/``SLURM_LOCALID`` with
  ``MASTER_ADDR``) every process runs ``deepseg train`` and :func:`join` puts it into the group.

With more than one process (:func:`adapt`): ``batch`` is the *global* batch, split evenly over the
processes (it must be a multiple of their number; left automatic it is the usual 4 (2D) or 2 (3D)
patches per process); DDP averages the gradients, so a step equals one process's step on the whole
batch for per-voxel mean losses (cross-entropy, focal) when the shares hold equally many annotated
voxels; Dice terms are computed over each process's
share. BatchNorm layers become synchronized (``torch.nn.SyncBatchNorm`` on GPUs, :class:`CPUSyncBatchNorm`
on the CPU). Each process draws its share with its own reproducible generator (rank 0 keeps the run's,
rank r uses ``(seed, r, first epoch)``); ``DEEPSEG_DDP_SAME_BATCHES=1`` instead has every process draw the whole
global batch with the shared generator and keep its slice: training then follows the one-process run
(same loss curve; N times the sampling work). Time-budget decisions and the learning rate follow rank
0's clock. Only rank 0 writes the model folder; training metrics in the history are averaged over the
processes, validation (run by every process on the same patches) is exact.
"""

from __future__ import annotations

import datetime
import os
import pickle
import queue as queues
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import numpy as np
import torch
from torch import nn
import torch.distributed as dist

from .errors import Cancelled, DeepSegError, InputError
from .progress import Progress, ProgressCallback, report

__all__ = ["Environment", "environment", "world_size", "rank", "is_main", "join", "adapt", "launch",
           "wants_launch", "main_only", "average_metrics", "barrier", "on_main_then_shared", "CPUSyncBatchNorm",
           "convert_batchnorm"]

T = TypeVar("T")

#: overrides the process-group backend (nccl on CUDA, gloo on the CPU)
ENV_BACKEND = "DEEPSEG_DDP_BACKEND"
#: "1": every process draws the whole global batch and keeps its share (training equals one process's)
ENV_SAME_BATCHES = "DEEPSEG_DDP_SAME_BATCHES"
TIMEOUT = datetime.timedelta(minutes=30)  # first epoch's data loading and saving fit in it
_POLL = 0.2  # seconds between checks of the worker processes
_GRACE = 30.0  # seconds the other workers get to stop after rank 0 finished or failed


@dataclass(frozen=True)
class Environment:
    """Where this process sits in a group started by torchrun, SLURM or :func:`launch`."""

    rank: int
    world: int
    local_rank: int
    local_world: int
    address: str
    port: int
    source: str


def environment(env: Mapping[str, str] | None = None) -> Environment | None:
    """The process group this process is asked to join (None: a single process).

    torchrun (and :func:`launch`) set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
    ``MASTER_PORT``; under ``srun`` without torchrun, ``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS`` and
    ``SLURM_LOCALID`` are used once ``MASTER_ADDR`` is set (the batch script exports it)."""
    env = os.environ if env is None else env
    port = env.get("MASTER_PORT", "29500")
    try:
        if "RANK" in env and "WORLD_SIZE" in env:
            world = int(env["WORLD_SIZE"])
            local_world = int(env.get("LOCAL_WORLD_SIZE", world))
            found = Environment(int(env["RANK"]), world, int(env.get("LOCAL_RANK", 0)), local_world,
                                env.get("MASTER_ADDR", "127.0.0.1"), int(port), "torchrun")
        elif "SLURM_PROCID" in env and "SLURM_STEP_NUM_TASKS" in env and "MASTER_ADDR" in env:
            world = int(env["SLURM_STEP_NUM_TASKS"])
            local_world = int(env.get("SLURM_STEP_TASKS_PER_NODE", "1").split("(")[0].split(",")[0] or 1)
            found = Environment(int(env["SLURM_PROCID"]), world, int(env.get("SLURM_LOCALID", 0)), local_world,
                                env["MASTER_ADDR"], int(port), "slurm")
        else:
            return None
    except ValueError as err:
        raise InputError(f"distributed environment variables are not numbers: {err}") from None
    if not 0 <= found.rank < found.world:
        raise InputError(f"rank {found.rank} is outside the world of {found.world} processes ({found.source})")
    return found if found.world > 1 else None


# ---------------------------------------------------------------------------------------- rank helpers
def world_size() -> int:
    """Processes in the group (1 when none was joined)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 when none was joined)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process writes files and reports progress (rank 0, or no group)."""
    return rank() == 0


def main_only(progress: ProgressCallback | None) -> ProgressCallback | None:
    """``progress`` on rank 0, None elsewhere."""
    return progress if is_main() else None


def barrier() -> None:
    """Wait for every process of the group (nothing without one)."""
    if world_size() > 1:
        dist.barrier()


def on_main_then_shared(make: Callable[[], T]) -> T:
    """``make()`` on rank 0, its (picklable) result given to every process; just ``make()`` without a group.
    For choices that must agree, such as a training plan measured on one process."""
    if world_size() == 1:
        return make()
    box = [make() if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _tensor_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def _broadcast(values: list[float]) -> list[float]:
    """Rank 0's ``values`` on every process."""
    t = torch.tensor(values, dtype=torch.float64, device=_tensor_device())
    dist.broadcast(t, src=0)
    return t.tolist()


# ------------------------------------------------------------------------------------------------ join
def join(config: Any) -> Any:
    """Join the process group the environment names (once per process) and return ``config`` for this
    rank: on CUDA its GPU is ``LOCAL_RANK``; on the CPU, torch threads are the cores shared by the local
    processes. Without such an environment ``config`` is returned as it is."""
    from .model_files import resolve_device

    found = environment()
    if found is None:
        return config
    device = resolve_device(config.device)
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if found.local_rank >= count and count != 1:
            raise InputError(f"local rank {found.local_rank} has no GPU: {count} visible here")
        gpu = found.local_rank if found.local_rank < count else 0  # one visible GPU: bound to this task (SLURM)
        torch.cuda.set_device(gpu)
        if device.index is not None and device.index != gpu:
            config = config.replace(device="cuda")  # each process uses the GPU of its local rank
    elif device.type != "cpu":
        raise InputError(f"device {str(device)!r}: distributed training runs on CUDA GPUs or the CPU")
    elif not config.num_threads:
        config = config.replace(num_threads=max(1, (os.cpu_count() or 1) // max(found.local_world, 1)))
    if not dist.is_initialized():
        backend = os.environ.get(ENV_BACKEND) or ("nccl" if device.type == "cuda" else "gloo")
        dist.init_process_group(backend, init_method=f"tcp://{found.address}:{found.port}", rank=found.rank,
                                world_size=found.world, timeout=TIMEOUT)
    return config


# ----------------------------------------------------------------------------------------------- adapt
def adapt(run: Any) -> None:
    """Turn a prepared :class:`engine.training.Run` into this rank's part of a distributed run (nothing
    with one process): synchronized BatchNorm, the DDP wrapper (``run.module``), this rank's share of
    each batch and its generator, and a budget whose decisions are rank 0's."""
    world = world_size()
    if world == 1:
        return
    batch = int(run.config.batch)
    if batch % world:
        raise InputError(f"batch={batch} cannot be split over {world} processes: use a multiple of {world} "
                         f"(batch is the global batch, each process takes batch/{world})")
    convert_batchnorm(run.network, run.device)
    ids = [run.device.index if run.device.index is not None else torch.cuda.current_device()] \
        if run.device.type == "cuda" else None
    run.module = nn.parallel.DistributedDataParallel(run.network, device_ids=ids)
    same = os.environ.get(ENV_SAME_BATCHES, "") not in ("", "0")
    if not same and rank() > 0:  # rank 0 keeps the run's generator (its state is the checkpoint's)
        run.rng = np.random.default_rng([int(run.config.seed), rank(), int(run.start_epoch)])
        torch.manual_seed(int(run.config.seed) * 1000 + rank())  # dropout masks differ between ranks
    run.batches = ShardedBatches(run.batches, rank(), world, same)
    run.budget = AgreedBudget(run.budget)


class ShardedBatches:
    """This rank's share of each global batch drawn from a :class:`engine.training.Batches` (other
    attributes are the wrapped object's)."""

    def __init__(self, inner: Any, rank: int, world: int, same: bool) -> None:
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_part", (rank, world, same))

    def draw(self, batch: int, rng: np.random.Generator, *args: Any, **kwargs: Any) -> Any:
        """Rank r's ``batch / world`` patches: drawn with its own generator, or (same batches) sliced out of
        the whole global batch drawn with the shared one."""
        r, world, same = self._part
        if not same:
            return self._inner.draw(batch // world, rng, *args, **kwargs)
        x, y = self._inner.draw(batch, rng, *args, **kwargs)
        share = slice(r * batch // world, (r + 1) * batch // world)
        return x[share].contiguous(), y[share].contiguous()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)


class AgreedBudget:
    """A :class:`engine.budget.Budget` whose decisions and elapsed fraction are rank 0's, so every
    process takes the same steps with the same learning rate (without a time limit nothing is sent)."""

    def __init__(self, inner: Any) -> None:
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_fraction", None)

    def step_allowed(self) -> bool:
        inner = self._inner
        local = inner.step_allowed()
        if inner.seconds is None:
            return local
        allowed, fraction = _broadcast([float(local), inner.fraction()])
        object.__setattr__(self, "_fraction", fraction)
        if bool(allowed) != local:  # keep the step counters as rank 0 counts them
            change = 1 if allowed else -1
            inner.steps_done += change
            inner.epoch_steps += change
        return bool(allowed)

    def fraction(self) -> float:
        return self._inner.fraction() if self._fraction is None else self._fraction

    def begin_epoch(self) -> None:
        object.__setattr__(self, "_fraction", None)
        self._inner.begin_epoch()

    def _agreed(self, name: str) -> bool:
        local = getattr(self._inner, name)()
        return local if self._inner.seconds is None else bool(_broadcast([float(local)])[0])

    def out_of_time(self) -> bool:
        return self._agreed("out_of_time")

    def validation_affordable(self) -> bool:
        return self._agreed("validation_affordable")

    def needs_probe(self) -> bool:
        return self._agreed("needs_probe")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)


def average_metrics(row: dict[str, Any], keys: tuple[str, ...] = ("loss", "accuracy", "dice")) -> None:
    """Replace the training metrics of an epoch's history ``row`` by their mean over the processes."""
    if world_size() == 1:
        return
    present = [k for k in keys if k in row]
    t = torch.tensor([float(row[k]) for k in present], dtype=torch.float64, device=_tensor_device())
    dist.all_reduce(t)
    row.update({k: float(v) / world_size() for k, v in zip(present, t.tolist())})


# ------------------------------------------------------------------------------------------- BatchNorm
class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose batch statistics are summed over the process group (``torch.nn.SyncBatchNorm``
    handles only GPU tensors): in training the mean and variance are those of the global batch, and
    gradients flow through the all-reduce. In evaluation, or without a group, it is plain BatchNorm."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and world_size() > 1):
            return super().forward(x)
        channels, dims = x.shape[1], [0, *range(2, x.dim())]
        x32 = x.float()
        count = torch.full((1,), float(x.numel() // channels), device=x.device)
        stats = _SumOverRanks.apply(torch.cat([x32.sum(dims), (x32 * x32).sum(dims), count]))
        n = stats[-1]
        mean = stats[:channels] / n
        var = (stats[channels:2 * channels] / n - mean * mean).clamp(min=0.0)
        if self.track_running_stats and self.running_mean is not None:
            self._update_running(mean.detach(), var.detach() * n / (n - 1).clamp(min=1.0))
        shape = (1, channels) + (1,) * (x.dim() - 2)
        y = (x32 - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, unbiased: torch.Tensor) -> None:
        self.num_batches_tracked += 1
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)


class _SumOverRanks(torch.autograd.Function):
    """The sum of a tensor over the processes; its gradient is the sum of the processes' gradients."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


def convert_batchnorm(network: nn.Module, device: torch.device) -> int:
    """Make every BatchNorm layer of ``network`` synchronized, in place (same parameters and buffers,
    so the optimizer and the saved weights are unchanged); returns how many were converted."""
    converted = 0
    for parent in list(network.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.modules.batchnorm._BatchNorm) or isinstance(
                    child, (nn.SyncBatchNorm, CPUSyncBatchNorm)):
                continue
            cls = nn.SyncBatchNorm if device.type == "cuda" else CPUSyncBatchNorm
            sync = cls(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            if child.affine:
                sync.weight, sync.bias = child.weight, child.bias
            sync.running_mean, sync.running_var = child.running_mean, child.running_var
            sync.num_batches_tracked = child.num_batches_tracked
            sync.train(child.training)
            setattr(parent, name, sync)
            converted += 1
    return converted


# ---------------------------------------------------------------------------------------------- launch
def wants_launch(config: Any) -> bool:
    """Whether ``train`` should start ``config.gpus`` processes (more than one, and not already in a group)."""
    return bool(getattr(config, "gpus", None)) and int(config.gpus) > 1 and environment() is None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _check_devices(config: Any) -> None:
    from .model_files import resolve_device

    gpus, device = int(config.gpus), resolve_device(config.device)
    if str(config.device) == "cpu":
        return  # asked for: N CPU processes (gloo), e.g. for tests
    if device.type == "cpu":
        raise InputError(f"gpus={gpus} but no CUDA GPU is visible here: use device=cpu to run {gpus} processes "
                         "on the CPU")
    if device.type != "cuda":
        raise InputError(f"gpus={gpus}: distributed training runs on CUDA GPUs (or device=cpu), not {str(device)!r}")
    if torch.cuda.device_count() < gpus:
        raise InputError(f"gpus={gpus} but {torch.cuda.device_count()} CUDA GPU(s) are visible here: "
                         f"use at most {torch.cuda.device_count()}")


def launch(config: Any, images: Any = None, labels: Any = None, masks: Any = None,
           progress: ProgressCallback | None = None) -> Any:
    """Train with ``config.gpus`` local processes (ranks 0..N-1; this process only watches them).

    Rank 0's progress is sent to ``progress`` here (returning False cancels: rank 0 stops after the
    step, the last saved epoch stays); the first worker error is raised here with its own type. Returns
    the :class:`engine.training.TrainResult` with the network loaded from the model folder ("last")."""
    import torch.multiprocessing as mp

    from .model_files import load_model
    from .training import TrainResult

    _check_devices(config)
    world, port = int(config.gpus), _free_port()
    ctx = mp.get_context("spawn")
    messages, cancel = ctx.Queue(), ctx.Event()
    data = (images, labels, masks)
    workers = [ctx.Process(target=_worker, name=f"deepseg-rank{r}", daemon=False,
                           args=(r, world, port, config.to_dict(), data, messages, cancel)) for r in range(world)]
    for w in workers:
        w.start()
    try:
        history = _watch(workers, messages, cancel, progress)
    except BaseException:
        cancel.set()
        _stop(workers, grace=2.0)
        raise
    _stop(workers, grace=_GRACE)
    out = Path(config.out)
    network = load_model(out, device="cpu", which="last").network
    return TrainResult(out, history, dict(history[-1]) if history else {}, network)


def _watch(workers: list[Any], messages: Any, cancel: Any, progress: ProgressCallback | None) -> list[dict[str, Any]]:
    """Relay rank 0's messages until it is done; raise the first error a worker reports."""
    while True:
        try:
            kind, sender, payload = messages.get(timeout=_POLL)
        except queues.Empty:
            dead = [w for w in workers if w.exitcode not in (None, 0)]
            if dead:
                raise DeepSegError(f"training process {dead[0].name} exited with code {dead[0].exitcode}")
            continue
        if kind == "progress":
            try:
                report(progress, payload)
            except Cancelled:
                cancel.set()  # rank 0 raises Cancelled at its next progress report
        elif kind == "error":
            raise _unpickle_error(payload, sender)
        elif kind == "done":
            return payload


def _stop(workers: list[Any], grace: float) -> None:
    """Give the workers ``grace`` seconds to finish, then terminate those still running."""
    for w in workers:
        w.join(timeout=grace)
    for w in workers:
        if w.is_alive():
            w.terminate()
            w.join()


def _worker(rank_: int, world: int, port: int, config: dict[str, Any], data: tuple[Any, Any, Any],
            messages: Any, cancel: Any) -> None:
    """One process started by :func:`launch`: the torchrun variables, then ``train``."""
    os.environ.update(RANK=str(rank_), WORLD_SIZE=str(world), LOCAL_RANK=str(rank_), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from .training import train

    def relay(p: Progress) -> bool:
        messages.put(("progress", rank_, p))
        return not cancel.is_set()

    try:
        images, labels, masks = data
        result = train(config, images=images, labels=labels, masks=masks, progress=relay if rank_ == 0 else None)
        if rank_ == 0:
            messages.put(("done", rank_, result.history))
    except BaseException as err:  # sent to the launcher, which raises it
        messages.put(("error", rank_, _pickled_error(err)))
        raise SystemExit(1) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _pickled_error(err: BaseException) -> bytes:
    try:
        return pickle.dumps(err)
    except Exception:  # an exception that cannot be pickled: keep its type name and message
        return pickle.dumps(DeepSegError(f"{type(err).__name__}: {err}"))


def _unpickle_error(payload: bytes, sender: int) -> BaseException:
    try:
        return pickle.loads(payload)
    except Exception:
        return DeepSegError(f"training process rank {sender} failed")
