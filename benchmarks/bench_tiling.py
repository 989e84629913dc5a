"""Tiled prediction: engine.tiling.predict_tiled vs MONAI's sliding_window_inference (CPU).

Run by hand (not in CI); needs the ``bench`` extra (``pip install monai``)::

    python benchmarks/bench_tiling.py               # 2D 2048x2048 (tile 256), 3D 96x384x384 (tile 64x128x128)
    python benchmarks/bench_tiling.py --threads 1   # steadier timings on a machine shared with others
    python benchmarks/bench_tiling.py --stream      # also ours streaming into a file (out= sink)
    python benchmarks/bench_tiling.py --quick       # small sizes, one process: a smoke test

Both methods run the same randomly initialised U-Net (``engine.networks.build("unet2d"/"unet3d")``,
or a small U-Net defined here if the registry has none) in eval mode followed by softmax, with the
same tile, overlap, batch size and gaussian blending, on the same float32 input. The sizes are
chosen so that both place the same tiles (checked). Each measurement runs in its own subprocess and
the runs alternate between methods; the fastest of ``--repeats`` is shown. Before timing, each
process runs one batch through the network, so one-off costs (thread pools, oneDNN kernels) are
paid by neither method.

Memory: ``peak MiB`` is the process's ``ru_maxrss`` (largest resident set ever: Python, torch,
MONAI, the network, the input and the activations of a batch). ``+rise`` is how much prediction
raised it above the level reached after the warm-up batch, i.e. roughly the buffers each method adds
to what the network itself needs: output and weight sums for MONAI (both full size); output and a
slab of weight sums for ours; only slabs for ``ours-stream``, which writes finished planes to a raw
file through a minimal ``out=`` sink (page cache, not resident memory of the process).

``max |diff|`` compares each output with MONAI's voxel by voxel. By default MONAI gets our importance
map (``roi_weight_map``), so the comparison is of tile placement and stitching alone: MONAI's own
gaussian map floors weights at 1e-3, where ours (nnU-Net's) keeps the true small edge weights, which
changes results where tile edges overlap. ``--monai-weights own`` uses MONAI's map instead.
``--vs-untiled`` adds each method's max and mean |difference| from one whole-input forward pass
(8 voxels in from the border): the error tiling adds.

Measured on the 2-core shared development machine (torch 2.13 CPU, MONAI 1.6.1, U-Net depth 3,
16 filters, overlap 0.25, batch 4), ``--threads 1 --repeats 2 --stream``: 2D ours 13.2 s, MONAI
16.8 s (CPU 12.6 vs 12.0 s), memory rise 59 / 104 / 29 (stream) MiB; 3D ours 82.5 s, MONAI 96.5 s
(CPU 80.2 vs 83.1 s), rise 167 / 213 / 155 MiB; max |diff| 2.4e-7. Other processes shared the cores,
so wall times vary by +-15%; the CPU times say both spend ~97% in the network. With MONAI's own map,
``--vs-untiled`` in 2D: ours max 0.082, mean 1.2e-3; MONAI max 0.41, mean 4.4e-3.
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
from typing import Any

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
METHODS = ("ours", "monai", "ours-stream", "ours-bf16")


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
        net = small_unet(dims, filters=filters, depth=depth, classes=classes)
    return nn.Sequential(net, nn.Softmax(dim=1)).eval()


def small_unet(dims: int, *, filters: int, depth: int, classes: int):
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


class RawFileSink:
    """A minimal :class:`engine.tiling.TileSink`: writes whole planes to a raw C-order float32 file."""

    def __init__(self, path: Path, shape: tuple[int, ...]) -> None:
        self.path, self.shape = path, shape
        self.plane = int(np.prod(shape[2:], dtype=np.int64)) * 4
        with open(path, "wb") as f:
            f.truncate(int(np.prod(shape, dtype=np.int64)) * 4)

    def write(self, region: tuple[slice, ...], value: np.ndarray) -> None:
        first = region[0].start
        value = np.ascontiguousarray(value, dtype=np.float32)
        with open(self.path, "r+b") as f:
            for k in range(self.shape[0]):
                f.seek((k * self.shape[1] + first) * self.plane)
                f.write(value[k].tobytes())

    def read(self) -> np.ndarray:
        return np.fromfile(self.path, dtype=np.float32).reshape(self.shape)


# ------------------------------------------------------------------------------------------ measure


class Setup:
    """Network, input and MONAI's weight map for one case, built once per process."""

    def __init__(self, case: dict, args: argparse.Namespace, folder: Path) -> None:
        import copy

        import torch

        from engine.precision import channels_last

        from engine.tiling import blend_weights

        if args.threads:
            torch.set_num_threads(args.threads)
        self.shape, self.tile, self.args, self.folder = tuple(case["shape"]), tuple(case["tile"]), args, folder
        self.net = build_network(len(self.shape), filters=args.filters, depth=args.depth, classes=args.classes)
        # deepseg's prediction keeps U-Net weights channels-last (engine.precision.channels_last); MONAI runs the
        # network as users build it (the same weights, default layout)
        self.ours = copy.deepcopy(self.net)
        channels_last(self.ours[0])
        self.x = make_input(self.shape)
        own = args.monai_weights == "own"
        self.monai_weights = None if own else torch.from_numpy(blend_weights(self.tile).copy())
        with torch.inference_mode():  # warm-up with the usual batch shape, outside the timing
            self.net(torch.zeros((args.batch, 1, *self.tile)))
            self.ours(torch.zeros((args.batch, 1, *self.tile)))
            self.bf16(torch.zeros((args.batch, 1, *self.tile)))

    def bf16(self, x: Any) -> Any:
        """The network under CPU bf16 autocast (engine.precision), softmax in fp32: what deepseg's
        prediction runs with ``precision="auto"`` on a CPU with native bf16."""
        import torch

        from engine.precision import Precision

        with Precision("bf16", "cpu").autocast():
            logits = self.ours[0](x)
        return torch.softmax(logits.float(), dim=1)

    def measure(self, method: str) -> tuple[dict, Any]:
        """Time one prediction: wall and CPU seconds, ru_maxrss before and after; and the output."""
        import torch
        from monai.inferers import sliding_window_inference

        from engine.tiling import predict_tiled

        args = self.args
        sink = None
        if method == "ours-stream":
            sink = RawFileSink(self.folder / "stream.raw", (args.classes, *self.shape))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start, cpu = time.perf_counter(), time.process_time()
        if method == "monai":
            with torch.inference_mode():
                y = sliding_window_inference(torch.from_numpy(self.x)[None], self.tile, args.batch, self.net,
                                             args.overlap, mode="gaussian", roi_weight_map=self.monai_weights)
            y = y[0].numpy()
        else:
            predictor = self.bf16 if method == "ours-bf16" else self.ours
            y = predict_tiled(self.x, predictor, tile=self.tile, overlap=args.overlap, blend="gaussian",
                              batch=args.batch, out=sink)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return {"seconds": seconds, "cpu": cpu, "peak_kib": peak, "before_kib": before}, y


def worker(args: argparse.Namespace) -> None:
    """One timed prediction in this process; prints a JSON line, saves the output to ``--save``."""
    import monai.inferers  # noqa: F401  (imported for every method, so the baselines match)

    case = dict(shape=tuple(args.shape), tile=tuple(args.tile))
    result, y = Setup(case, args, Path(args.save).parent).measure(args.worker)
    if not isinstance(y, np.ndarray):
        y = y.read()
    np.save(args.save, y)
    print(json.dumps(result))


def run_worker(method: str, case: dict, args: argparse.Namespace, folder: Path) -> dict:
    command = [sys.executable, __file__, "--worker", method, "--save", str(folder / f"{method}.npy"),
               "--shape", *map(str, case["shape"]), "--tile", *map(str, case["tile"]),
               "--overlap", str(args.overlap), "--batch", str(args.batch),
               "--filters", str(args.filters), "--depth", str(args.depth), "--classes", str(args.classes),
               "--threads", str(args.threads), "--monai-weights", args.monai_weights]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"{method} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_case(case: dict, methods: list[str], args: argparse.Namespace, folder: Path) -> dict[str, dict]:
    """Best-of-``repeats`` result of each method (runs alternate), with ``diff`` against MONAI."""
    setup = Setup(case, args, folder) if args.in_process else None
    best: dict[str, dict] = {}
    outputs: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for method in methods:
            if setup is not None:
                result, y = setup.measure(method)
                outputs[method] = y if isinstance(y, np.ndarray) else y.read()
            else:
                result = run_worker(method, case, args, folder)
            old = best.get(method)
            best[method] = result if old is None or result["seconds"] < old["seconds"] else old
    if setup is None:
        outputs = {m: np.load(folder / f"{m}.npy") for m in methods}
    reference = untiled(case, args) if args.vs_untiled else None
    for method in methods:
        best[method]["diff"] = float(np.abs(outputs[method] - outputs["monai"]).max())
        if reference is not None:
            error = np.abs(outputs[method] - reference)[(slice(None), *[slice(8, -8)] * len(case["shape"]))]
            best[method]["untiled"] = (float(error.max()), float(error.mean()))
    return best


def untiled(case: dict, args: argparse.Namespace) -> np.ndarray:
    """The network on the whole input at once (the result tiling approximates)."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    net = build_network(len(case["shape"]), filters=args.filters, depth=args.depth, classes=args.classes)
    with torch.inference_mode():
        return net(torch.from_numpy(make_input(tuple(case["shape"])))[None])[0].numpy()


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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one run, one process: a smoke test")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--repeats", type=int, default=3, help="runs per method (the fastest is shown)")
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--filters", type=int, default=16, help="U-Net first-level filters")
    parser.add_argument("--depth", type=int, default=3, help="U-Net down-samplings")
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--monai-weights", choices=("ours", "own"), default="ours",
                        help="importance map MONAI uses: ours (compare stitching alone) or MONAI's own")
    parser.add_argument("--vs-untiled", action="store_true",
                        help="also compare each output with one whole-input forward pass (needs the network's "
                             "memory for the whole input: fine in 2D, many GB in 3D)")
    parser.add_argument("--stream", action="store_true", help="also run ours writing into a file sink (out=)")
    parser.add_argument("--no-bf16", action="store_true",
                        help="leave out ours with bf16 autocast (ours-bf16; max |diff| then shows bf16's error)")
    parser.add_argument("--in-process", action="store_true",
                        help="run all methods in this process (faster start; peak memory is then shared)")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    parser.add_argument("--shape", type=int, nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--tile", type=int, nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.in_process = 1, True
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    table = QUICK if args.quick else CASES
    methods = ["ours", "monai"] + (["ours-stream"] if args.stream else []) + ([] if args.no_bf16 else ["ours-bf16"])
    print(f"torch threads: {args.threads or 'default'}, U-Net depth {args.depth} filters {args.filters}, "
          f"overlap {args.overlap}, batch {args.batch}, gaussian, MONAI weights: {args.monai_weights}, "
          f"best of {args.repeats}")
    header = ("case", "shape", "tile", "tiles", "method", "wall s", "vs MONAI", "cpu s", "peak MiB", "+rise",
              "max |diff|") + (("untiled max", "untiled mean") if args.vs_untiled else ())
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-tiling-") as folder:
        for name in args.cases:
            case = table[name]
            tiles = check_same_placement(case, args.overlap)
            results = run_case(case, methods, args, Path(folder))
            for method in methods:
                r = results[method]
                peak, rise = r["peak_kib"] / 1024, (r["peak_kib"] - r["before_kib"]) / 1024
                memory = ("n/a", "n/a") if args.in_process else (f"{peak:.0f}", f"{rise:.0f}")
                rows.append((name, "x".join(map(str, case["shape"])), "x".join(map(str, case["tile"])), str(tiles),
                             method, f"{r['seconds']:.2f}", f"{r['seconds'] / results['monai']['seconds']:.3f}",
                             f"{r['cpu']:.2f}", *memory, f"{r['diff']:.2e}",
                             *(f"{e:.2e}" for e in r.get("untiled", ()))))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    for row in (header, *rows):
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))
    if args.in_process:
        print("peak MiB: n/a, all methods ran in one process (--in-process, --quick)")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
