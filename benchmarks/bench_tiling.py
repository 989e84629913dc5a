"""Tiled prediction: engine.tiling.predict_tiled vs MONAI's sliding_window_inference (CPU).

Run by hand (not in CI); needs the ``bench`` extra (``pip install monai``)::

    python benchmarks/bench_tiling.py            # 2D 2048x2048 (tile 256) and 3D 96x384x384 (tile 64x128x128)
    python benchmarks/bench_tiling.py --quick    # small sizes, seconds

Both run the same randomly initialised U-Net (``engine.networks.build("unet2d"/"unet3d")``, or a
small U-Net defined here if the registry has none) in eval mode followed by softmax, with the same
tile, overlap, batch size and gaussian blending. The sizes are chosen so that both place tiles
identically. Each measurement runs in its own subprocess, so that peak memory (``ru_maxrss``: the
largest resident set the process ever had, including torch, the network and the input) belongs to
one method alone; runs alternate between the methods and the fastest of ``--repeats`` is shown.
Before timing, each process runs one batch through the network, so one-off start-up costs (thread
pools, oneDNN kernels) are paid by neither method's timing.

"max |diff|" compares the two outputs voxel by voxel. By default MONAI gets our importance map
(``roi_weight_map``) so the comparison is of tiling and stitching alone: MONAI's own gaussian map
floors weights at 1e-3 where ours (nnU-Net's) keeps the true tiny edge weights, which alone changes
results by ~1e-3 where tile corners overlap. ``--monai-weights own`` uses MONAI's map instead.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CASES = {
    "2d": dict(shape=(2048, 2048), tile=(256, 256)),
    "3d": dict(shape=(96, 384, 384), tile=(64, 128, 128)),
}
QUICK = {
    "2d": dict(shape=(320, 320), tile=(128, 128)),
    "3d": dict(shape=(40, 96, 96), tile=(32, 64, 64)),
}


# -------------------------------------------------------------------------------- network and input


def build_network(dims: int, *, filters: int, depth: int, classes: int):
    """The benchmark's U-Net followed by softmax, eval mode, fixed seed."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    try:
        from engine.networks import build

        net = build(f"unet{dims}d", in_channels=1, classes=classes, depth=depth, filters=filters)
    except Exception as error:  # the registry may not have U-Nets yet
        print(f"engine.networks.build failed ({error}); using the benchmark's own U-Net", file=sys.stderr)
        net = SmallUNet(dims, filters=filters, depth=depth, classes=classes)
    return nn.Sequential(net, nn.Softmax(dim=1)).eval()


def SmallUNet(dims: int, *, filters: int, depth: int, classes: int):
    """A plain U-Net: two conv-BN-ReLU per level, max-pool down, transposed conv up."""
    import torch
    from torch import nn

    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
    pool = nn.MaxPool2d if dims == 2 else nn.MaxPool3d
    up = nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d

    def double(cin: int, cout: int) -> nn.Module:
        return nn.Sequential(conv(cin, cout, 3, padding=1), norm(cout), nn.ReLU(inplace=True),
                             conv(cout, cout, 3, padding=1), norm(cout), nn.ReLU(inplace=True))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            widths = [filters * 2**i for i in range(depth + 1)]
            self.down = nn.ModuleList(double(a, b) for a, b in zip([1] + widths[:-2], widths[:-1]))
            self.bottom = double(widths[-2], widths[-1])
            self.ups = nn.ModuleList(up(b, a, 2, stride=2) for a, b in zip(widths[:-1], widths[1:]))
            self.dec = nn.ModuleList(double(2 * a, a) for a in widths[:-1])
            self.pool = pool(2)
            self.head = conv(widths[0], classes, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for block in self.down:
                x = block(x)
                skips.append(x)
                x = self.pool(x)
            x = self.bottom(x)
            for i in reversed(range(depth)):
                x = self.dec[i](torch.cat([skips[i], self.ups[i](x)], dim=1))
            return self.head(x)

    return Net()


def make_input(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((1, *shape), dtype=np.float32)


# ------------------------------------------------------------------------------------------ worker


class Setup:
    """Network, input and MONAI's weight map for one case, built once per process."""

    def __init__(self, shape: tuple[int, ...], tile: tuple[int, ...], args: argparse.Namespace) -> None:
        import torch

        from engine.tiling import blend_weights

        if args.threads:
            torch.set_num_threads(args.threads)
        self.shape, self.tile, self.args = shape, tile, args
        self.net = build_network(len(shape), filters=args.filters, depth=args.depth, classes=args.classes)
        self.x = make_input(shape)
        own = args.monai_weights == "own"
        self.monai_weights = None if own else torch.from_numpy(blend_weights(tile).copy())
        with torch.inference_mode():  # warm-up with the usual batch shape, outside the timing
            self.net(torch.zeros((args.batch_size, 1, *tile)))

    def measure(self, method: str) -> tuple[dict, np.ndarray]:
        """Time one prediction; returns (wall and CPU seconds, ru_maxrss before and after) and the output."""
        import torch
        from monai.inferers import sliding_window_inference

        from engine.tiling import predict_tiled

        args = self.args
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start, cpu = time.perf_counter(), time.process_time()
        if method == "ours":
            y = predict_tiled(self.net, self.x, self.tile, args.overlap, "gaussian", args.batch_size)
        else:
            with torch.inference_mode():
                y = sliding_window_inference(torch.from_numpy(self.x)[None], self.tile, args.batch_size, self.net,
                                             args.overlap, mode="gaussian", roi_weight_map=self.monai_weights)
            y = y[0].numpy()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return {"seconds": seconds, "cpu": cpu, "peak_kib": peak, "before_kib": before}, y


def worker(args: argparse.Namespace) -> None:
    """One timed prediction in this process; prints a JSON line, saves the output to ``--save``."""
    import monai.inferers  # noqa: F401  (imported by both methods, so both baselines match)

    setup = Setup(tuple(args.shape), tuple(args.tile), args)
    result, y = setup.measure(args.worker)
    np.save(args.save, y)
    print(json.dumps(result))


def run_worker(method: str, case: dict, args: argparse.Namespace, save: Path) -> dict:
    command = [sys.executable, __file__, "--worker", method, "--save", str(save),
               "--shape", *map(str, case["shape"]), "--tile", *map(str, case["tile"]),
               "--overlap", str(args.overlap), "--batch-size", str(args.batch_size),
               "--filters", str(args.filters), "--depth", str(args.depth), "--classes", str(args.classes),
               "--threads", str(args.threads), "--monai-weights", args.monai_weights]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"{method} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_case(case: dict, args: argparse.Namespace, folder: Path) -> tuple[dict, dict, float]:
    """Best-of-``repeats`` results of both methods (alternating) and the max |difference|."""
    setup = Setup(tuple(case["shape"]), tuple(case["tile"]), args) if args.in_process else None
    best: dict[str, dict] = {}
    outputs: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for method in ("ours", "monai"):
            if setup is not None:
                result, outputs[method] = setup.measure(method)
            else:
                result = run_worker(method, case, args, folder / f"{method}.npy")
            old = best.get(method)
            best[method] = result if old is None or result["seconds"] < old["seconds"] else old
    if setup is None:
        outputs = {m: np.load(folder / f"{m}.npy") for m in ("ours", "monai")}
    diff = float(np.abs(outputs["ours"] - outputs["monai"]).max())
    return best["ours"], best["monai"], diff


# -------------------------------------------------------------------------------------------- main


def check_same_placement(case: dict, overlap: float) -> int:
    """Both must place the same tiles, or the comparison is meaningless; returns the tile count."""
    from engine.tiling import tile_grid

    shape, tile = case["shape"], case["tile"]
    ours = tile_grid(shape, tile, overlap)
    try:
        from monai.data.utils import dense_patch_slices
        from monai.inferers.utils import _get_scan_interval
    except ImportError:  # private helpers moved: skip the check, the diff column still tells
        return len(ours)
    interval = _get_scan_interval(shape, tile, len(shape), (overlap,) * len(shape))
    theirs = [tuple(s.start for s in patch) for patch in dense_patch_slices(shape, tile, interval)]
    if theirs != ours:
        raise SystemExit(f"tile placement differs from MONAI's for {case}")
    return len(ours)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds): a smoke test")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--repeats", type=int, default=3, help="runs per method (fastest is shown)")
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--filters", type=int, default=16, help="U-Net first-level filters")
    parser.add_argument("--depth", type=int, default=3, help="U-Net down-samplings")
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--monai-weights", choices=("ours", "own"), default="ours",
                        help="importance map MONAI uses: ours (compare stitching alone) or MONAI's own")
    parser.add_argument("--in-process", action="store_true",
                        help="run both methods in this process (faster start; peak memory is then shared)")
    parser.add_argument("--worker", choices=("ours", "monai"), help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    parser.add_argument("--shape", type=int, nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--tile", type=int, nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.quick:
        args.repeats, args.in_process = min(args.repeats, 1), True
    table = QUICK if args.quick else CASES
    print(f"torch threads: {args.threads or 'default'}, U-Net depth {args.depth} filters {args.filters}, "
          f"overlap {args.overlap}, batch {args.batch_size}, gaussian, MONAI weights: {args.monai_weights}")
    header = ("case", "shape", "tile", "tiles", "ours s", "MONAI s", "ours/MONAI", "ours cpu s", "MONAI cpu s",
              "ours MiB (+rise)", "MONAI MiB (+rise)", "max |diff|")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-tiling-") as folder:
        for name in args.cases:
            case = table[name]
            tiles = check_same_placement(case, args.overlap)
            ours, monai, diff = run_case(case, args, Path(folder))
            rows.append((name, "x".join(map(str, case["shape"])), "x".join(map(str, case["tile"])), str(tiles),
                         f"{ours['seconds']:.2f}", f"{monai['seconds']:.2f}",
                         f"{ours['seconds'] / monai['seconds']:.3f}", f"{ours['cpu']:.2f}", f"{monai['cpu']:.2f}",
                         _mib(ours, args.in_process), _mib(monai, args.in_process), f"{diff:.2e}"))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    for row in (header, *rows):
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))
    print("MiB: peak resident set of the process (ru_maxrss); +rise: how much the prediction raised it above "
          "the level after importing torch and MONAI, building the network, making the input and one warm-up batch."
          if not args.in_process else "MiB: n/a, both methods ran in one process (--in-process).")


def _mib(result: dict, shared: bool = False) -> str:
    if shared:
        return "n/a"
    peak, before = result["peak_kib"] / 1024, result["before_kib"] / 1024
    return f"{peak:.0f} (+{peak - before:.0f})"


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
