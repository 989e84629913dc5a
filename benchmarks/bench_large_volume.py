"""Peak memory of segmenting large volumes from a TIFF file: deepseg's streaming predict_file vs MONAI.

    python benchmarks/bench_large_volume.py                      # 48, 192, 768 planes of 1024 x 1024
    python benchmarks/bench_large_volume.py --planes 48,96       # a shorter run
    python benchmarks/bench_large_volume.py --planes 8,16 --size 256 --methods ours   # a smoke test
    python benchmarks/bench_large_volume.py --shape 1228,1902,1042 --dtype uint8 --methods ours \
        --network unet2d --options depth=2,filters=4 --tile 512              # the fossil-CT size, 2.4e9 voxels

For each number of planes: writes a uint16 volume of ``planes x size x size`` as an uncompressed TIFF,
saves a randomly initialised ``unet3d`` (depth 3, 8 filters) model folder, and runs each method in its
own subprocess while a thread samples ``/proc/self/status`` every 10 ms:

* ours:  ``engine.prediction.predict_file(model, tif, labels.tif)``: memory-mapped input, tiles blended
  in one slab, each finished slab turned into labels and written to the label TIFF at once;
* MONAI: the whole volume read into memory, normalized to float32 and passed to
  ``sliding_window_inference`` (same network, tile 32 x 128 x 128, overlap 0.25, our gaussian weights)
  with the output on the CPU, then argmax to labels and one TIFF write (what nnU-Net does too). Skipped
  where its estimated need exceeds the available memory (``MemAvailable``).

Reported per run: peak anonymous memory (``RssAnon``: heap, tensors; what must fit in RAM), peak
file-backed memory (``RssFile``: mapped pages of the input file and of shared libraries, reclaimable by
the kernel), wall time, and the anonymous memory after the imports, before the run (``anon before``);
then the growth of each per added plane (KiB/plane, between the smallest and the largest volume) and
how many label voxels ours and MONAI agree on. ``VmHWM`` is not used: it adds both kinds together. Needs the ``bench`` extra (``pip install monai``) for the MONAI rows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TILE = (32, 128, 128)
NETWORK = ("unet3d", {"depth": 3, "filters": 8})


# ---------------------------------------------------------------------------------- in the subprocess


class MemorySampler:
    """Samples RssAnon and RssFile of this process in a thread; keeps the peaks (MiB)."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval, self.peaks = interval, {"RssAnon": 0.0, "RssFile": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        with open("/proc/self/status") as status:
            for line in status:
                key = line.split(":", 1)[0]
                if key in self.peaks:
                    self.peaks[key] = max(self.peaks[key], int(line.split()[1]) / 1024)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> "MemorySampler":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def run_ours(volume: str, model: str, out: str) -> None:
    from engine.prediction import predict_file

    predict_file(model, volume, out, tile=TILE, overlap=0.25, batch=4, device="cpu")
    print(f"labels written: {Path(out).stat().st_size / 2**30:.2f} GiB", file=sys.stderr)


def run_monai(volume: str, model: str, out: str) -> None:
    import numpy as np
    import tifffile
    import torch
    from monai.inferers import sliding_window_inference

    from engine.model_files import load_model
    from engine.tiling import blend_weights

    loaded = load_model(model, device="cpu")
    image = loaded.normalization.apply(tifffile.imread(volume)[None])  # (1, Z, Y, X) float32
    weights = torch.from_numpy(np.array(blend_weights(TILE, "gaussian")))
    with torch.inference_mode():
        probs = sliding_window_inference(torch.from_numpy(image)[None], TILE, 4,
                                         lambda x: torch.softmax(loaded.network(x), 1), overlap=0.25,
                                         mode="gaussian", roi_weight_map=weights)
    labels = probs[0].argmax(0).numpy().astype(np.uint8)
    tifffile.imwrite(out, labels, imagej=True)


def child(method: str, volume: str, model: str, out: str) -> None:
    """Run one method under the sampler (imports first, so they count as the baseline); print JSON."""
    import torch  # noqa: F401

    import engine.prediction  # noqa: F401

    if method == "monai":
        import monai.inferers  # noqa: F401
    with MemorySampler() as before:
        pass
    began = time.perf_counter()
    with MemorySampler() as peak:
        globals()[f"run_{method}"](volume, model, out)
    print(json.dumps({"seconds": time.perf_counter() - began, "anon_mib": peak.peaks["RssAnon"],
                      "file_mib": peak.peaks["RssFile"], "anon_before_mib": before.peaks["RssAnon"]}))


# ------------------------------------------------------------------------------------------- driver


def make_inputs(folder: Path, shape: tuple[int, ...], dtype: str = "uint16") -> tuple[Path, Path]:
    import numpy as np
    import tifffile
    import torch

    from engine.model_files import save_model
    from engine.networks import build
    from engine.normalization import Normalization

    path = folder / f"volume{shape[0]}.tif"
    volume = tifffile.memmap(path, shape=shape, dtype=dtype, imagej=True, metadata={"axes": "ZYX"})
    rng = np.random.default_rng(0)
    high = 4000 if dtype == "uint16" else 250
    for z in range(shape[0]):
        volume[z] = rng.integers(0, high, shape[1:], dtype=dtype)
    volume.flush()
    del volume
    model = folder / "model"
    if not model.exists():
        torch.manual_seed(0)
        name, options = NETWORK
        net = build(name, in_channels=1, classes=2, **options).eval()
        norm = Normalization("zscore", mean=[high / 2], std=[high / 3.5])
        patch = TILE if len(TILE) == net.spatial_dims else TILE * net.spatial_dims
        save_model(net, model, patch=patch, axes="ZYX", normalization=norm)
    return path, model


MONAI_BYTES_PER_VOXEL = 20  # measured here: +18.2 MiB of peak anonymous memory per 1024 x 1024 plane (48 -> 192)


def monai_fits(shape: tuple[int, ...]) -> bool:
    """Whether MONAI's whole-volume buffers (float32 input, 2-class output, then the int64 argmax beside the
    output: ~18 bytes per voxel measured, counted as 20) fit in the memory available now, with a 10 % margin."""
    voxels = 1
    for n in shape:
        voxels *= n
    need = voxels * MONAI_BYTES_PER_VOXEL * 1.1
    with open("/proc/meminfo") as info:
        available = next(int(line.split()[1]) * 1024 for line in info if line.startswith("MemAvailable:"))
    return need < available


def measure(method: str, volume: Path, model: Path, out: Path, threads: int | None) -> dict:
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import torch; "
            + (f"torch.set_num_threads({threads}); " if threads else "")
            + f"import bench_large_volume as b; b.TILE = {TILE!r}; "
            + f"b.child({method!r}, {str(volume)!r}, {str(model)!r}, {str(out)!r})")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{method} on {volume.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def agreement(a: Path, b: Path) -> float:
    """Fraction of equal label voxels, read plane by plane."""
    import numpy as np
    import tifffile

    x, y = tifffile.memmap(a), tifffile.memmap(b)
    same = sum(int(np.count_nonzero(x[z] == y[z])) for z in range(x.shape[0]))
    return same / x.size


def report(rows: list[dict]) -> None:
    print(f"{'planes':>6s} {'method':6s} {'anon before MiB':>15s} {'peak anon MiB':>14s} {'peak file MiB':>14s} "
          f"{'wall s':>8s} {'labels agree':>13s}")
    for r in rows:
        agree = f"{r['agree']:.4%}" if "agree" in r else ""
        print(f"{r['planes']:6d} {r['method']:6s} {r['anon_before_mib']:15.0f} {r['anon_mib']:14.0f} "
              f"{r['file_mib']:14.0f} {r['seconds']:8.1f} {agree:>13s}")
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["planes"])
        if len(mine) < 2:
            continue
        first, last = mine[0], mine[-1]
        planes = last["planes"] - first["planes"]
        anon = (last["anon_mib"] - first["anon_mib"]) * 1024 / planes
        file = (last["file_mib"] - first["file_mib"]) * 1024 / planes
        print(f"growth per plane, {method}, {first['planes']} -> {last['planes']} planes: anonymous {anon:.0f} KiB, "
              f"file-backed {file:.0f} KiB")


def configure(args: argparse.Namespace) -> None:
    """Network and tile from the command line (module globals, passed on to the subprocesses)."""
    global NETWORK, TILE
    options = {}
    for item in (args.options or "").split(","):
        if item:
            key, value = item.split("=")
            options[key] = int(value) if value.isdigit() else value
    NETWORK = (args.network, options or (NETWORK[1] if args.network == NETWORK[0] else {}))
    if args.tile:
        TILE = tuple(int(t) for t in args.tile.split(","))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--planes", default="48,192,768", help="numbers of planes, comma-separated")
    parser.add_argument("--size", type=int, default=1024, help="rows and columns of each plane")
    parser.add_argument("--methods", default="ours,monai", help="ours, monai or both")
    parser.add_argument("--threads", type=int, help="torch threads per run")
    parser.add_argument("--dir", help="working folder (default: a temporary one)")
    parser.add_argument("--shape", help="one volume of Z,Y,X voxels instead of --planes/--size")
    parser.add_argument("--dtype", default="uint16", choices=("uint8", "uint16"))
    parser.add_argument("--network", default=NETWORK[0], help="network name (random weights)")
    parser.add_argument("--options", help="network options, e.g. depth=2,filters=4")
    parser.add_argument("--tile", help="tile size, e.g. 32,128,128 (3D) or 512 (2D networks)")
    args = parser.parse_args()
    methods = args.methods.split(",")
    configure(args)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        shapes = ([tuple(int(n) for n in args.shape.split(","))] if args.shape
                  else [(int(p), args.size, args.size) for p in args.planes.split(",")])
        for shape in shapes:
            planes = shape[0]
            volume, model = make_inputs(folder, shape, args.dtype)
            for method in methods:
                if method == "monai" and not monai_fits(shape):
                    print(f"{planes} planes: MONAI skipped (its whole-volume buffers do not fit in memory)")
                    continue
                result = measure(method, volume, model, folder / f"{method}{planes}.tif", args.threads)
                rows.append({"planes": planes, "method": method, **result})
                print(f"measured: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)  # partial results survive
            if {"ours", "monai"} <= {r["method"] for r in rows if r["planes"] == planes}:
                rows[-1]["agree"] = agreement(folder / f"ours{planes}.tif", folder / f"monai{planes}.tif")
            volume.unlink()
    plane = f"{shapes[0][1]} x {shapes[0][2]}"
    print(f"planes of {plane} {args.dtype}; {NETWORK[0]} {NETWORK[1]}, random weights, tile {TILE}, overlap 0.25, "
          "batch 4, CPU")
    report(rows)


if __name__ == "__main__":
    main()
