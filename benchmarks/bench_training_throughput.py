"""Training throughput: deepseg's training loop vs a bare PyTorch loop on pre-made tensors.

Run by hand (not in CI)::

    python benchmarks/bench_training_throughput.py                  # 2D unet2d 4x256x256, 3D unet3d 2x48x64x64
    python benchmarks/bench_training_throughput.py --quick          # small patches, few steps: a smoke test
    python benchmarks/bench_training_throughput.py --precision fp32 # both loops in fp32

``deepseg`` is :func:`engine.training.train_epoch` on a run from :func:`engine.training.prepare`: patch
sampling from synthetic blob images (larger than the patch), normalization, the default augmentation,
background prefetching, lr schedule, autocast, loss, gradient clipping, optimizer step, per-step
confusion matrix and progress bookkeeping (validation and saving are not part of the loop).
``bare`` is the minimal loop a PyTorch user writes: the same network (same weights), optimizer, loss
and autocast (with deepseg's guard for thin 3D convolutions in CPU bf16, which correct gradients
need), four pre-made batches already on the device, in turn, ``zero_grad / forward / loss / backward
/ step / loss.item()``. Both loops run interleaved ``--repeats`` times after a warm-up and the best
steps/s of each is shown; ``ratio`` = deepseg / bare (goal >= 0.9). ``--fp32-reference`` adds the bare
loop in fp32, to show what bf16 buys. ``ratio per CPU s`` compares steps per CPU-second of the
whole process (the prefetch thread included): the ratio on a machine with no spare core, where
sampling and augmentation cannot hide behind the network.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CASES = {
    "2d": dict(network="unet2d", patch=(256, 256), batch=4, image=(1024, 1024)),
    "3d": dict(network="unet3d", patch=(48, 64, 64), batch=2, image=(96, 256, 256)),
}
_MADE = 4  # pre-made batches the bare loop cycles through
QUICK = {
    "2d": dict(network="unet2d", patch=(128, 128), batch=4, image=(512, 512)),
    "3d": dict(network="unet3d", patch=(32, 48, 48), batch=2, image=(64, 128, 128)),
}


def make_run(case: dict, args: argparse.Namespace, folder: Path) -> Any:
    """deepseg's prepared training run on synthetic blob images of ``case['image']``."""
    import xarray as xr

    from engine.config import TrainConfig
    from engine.synthetic import blobs
    from engine.training import prepare

    image, labels = blobs(case["image"], seed=1)
    dims = ("row", "col") if len(case["image"]) == 2 else ("pln", "row", "col")
    config = TrainConfig(out=str(folder / case["network"]), network=case["network"], patch=list(case["patch"]),
                         batch=case["batch"], epochs=1, steps_per_epoch=args.steps, validation_fraction=0,
                         precision=args.precision, device=args.device, seed=0, network_options=args.option)
    return prepare(config, xr.DataArray(image, dims=dims), labels)


Timer = Callable[[int], "tuple[float, float]"]


def deepseg_loop(run: Any) -> Timer:
    """Wall and CPU seconds (all threads of the process) for ``n`` steps of deepseg's loop (one epoch)."""
    from engine.training import train_epoch

    def timed(n: int) -> tuple[float, float]:
        run.steps = n
        start, cpu = time.perf_counter(), time.process_time()
        train_epoch(run, 0, None)
        _sync(run.device)
        return time.perf_counter() - start, time.process_time() - cpu

    return timed


def bare_loop(run: Any, precision: str | None = None) -> Timer:
    """Wall and CPU seconds for ``n`` steps of a minimal PyTorch loop with the same network, optimizer, loss and
    precision (a copy of the run's network, so both loops start from the same weights)."""
    import copy

    import torch

    from engine.precision import Precision, guard_cpu_bf16, resolve_precision
    from engine.training import make_optimizer

    network = copy.deepcopy(run.network).train()
    optimizer = make_optimizer(run.config, list(network.parameters()))
    arithmetic = resolve_precision(precision or run.config.precision, run.device)
    if arithmetic == Precision("bf16", "cpu"):
        guard_cpu_bf16(network)  # as deepseg does: oneDNN's bf16 Conv3d gradient is wrong for 2-plane inputs
    # a few batches made once (one batch repeated is learnt by heart: tiny gradients, denormal slow-downs)
    made = [tuple(t.to(run.device) for t in run.batches.draw(run.config.batch, run.rng)) for _ in range(_MADE)]

    def timed(n: int) -> tuple[float, float]:
        start, cpu = time.perf_counter(), time.process_time()
        for step in range(n):
            x, y = made[step % _MADE]
            optimizer.zero_grad(set_to_none=True)
            with arithmetic.autocast():
                logits = network(x)
            loss = run.loss_fn(logits.float(), y)
            loss.backward()
            optimizer.step()
            loss.item()
        _sync(run.device)
        return time.perf_counter() - start, time.process_time() - cpu

    return timed


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(loops: dict[str, Timer], args: argparse.Namespace) -> dict[str, tuple[float, float]]:
    """Best steps per wall second and per CPU second of each loop over ``--repeats`` interleaved runs
    of ``--steps`` steps, after a warm-up."""
    for timed in loops.values():
        timed(args.warmup)
    best = {name: (0.0, 0.0) for name in loops}
    for _ in range(args.repeats):
        for name, timed in loops.items():
            wall, cpu = timed(args.steps)
            best[name] = (max(best[name][0], args.steps / wall), max(best[name][1], args.steps / max(cpu, 1e-9)))
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--quick", action="store_true", help="small patches, few steps")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each loop first")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per loop (best shown)")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    parser.add_argument("--fp32-reference", action="store_true", help="also time the bare loop in fp32")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="network option for both loops, e.g. filters=16 (repeatable)")
    args = parser.parse_args(argv)
    args.option = {k: _number(v) for k, v in (o.split("=", 1) for o in args.option)}
    if args.quick:
        args.steps, args.warmup, args.repeats = min(args.steps, 4), 1, min(args.repeats, 2)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    table = QUICK if args.quick else CASES
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.steps} steps x best of "
          f"{args.repeats}, warm-up {args.warmup}")
    header = ("case", "network", "batch x patch", "precision", "deepseg steps/s", "bare steps/s", "ratio",
              "ratio per CPU s")
    header += ("bare fp32 steps/s", "bf16 speed-up") if args.fp32_reference else ()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as folder:
        for name in args.cases:
            case = table[name]
            run = make_run(case, args, Path(folder))
            loops = {"deepseg": deepseg_loop(run), "bare": bare_loop(run)}
            if args.fp32_reference:
                loops["fp32"] = bare_loop(run, "fp32")
            speed = measure(loops, args)
            (ours, ours_cpu), (bare, bare_cpu) = speed["deepseg"], speed["bare"]
            row = (name, case["network"], f"{case['batch']}x{'x'.join(map(str, case['patch']))}", run.precision.name,
                   f"{ours:.3f}", f"{bare:.3f}", f"{ours / bare:.3f}", f"{ours_cpu / bare_cpu:.3f}")
            if args.fp32_reference:
                row += (f"{speed['fp32'][0]:.3f}", f"{bare / speed['fp32'][0]:.2f}")
            rows.append(row)
            print(" ".join(row), flush=True)  # each case as soon as it is measured; the table follows
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    for row in (header, *rows):
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))


def _number(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


if __name__ == "__main__":
    main()
