"""Blockwise prediction into zarr: Dask LocalCluster speed-up, and peak memory against the number of planes.

    python benchmarks/bench_distributed.py speedup [--shape 48,256,256] [--block 16]
    python benchmarks/bench_distributed.py memory [--planes 32,128] [--plane 512,512] [--block 16]

``speedup``: the same uint16 volume (TIFF, memory-mapped) and a small random-initialised 3D U-Net,
predicted into a zarr array in this process (torch's default threads), then with ``--cluster local:1``
and ``local:2`` (single-threaded worker processes); prints wall times (cluster start-up included) and
checks that the labels are identical. ``memory``: each volume size in a fresh subprocess, whose peak
anonymous memory (RssAnon, sampled every 5 ms from /proc/self/status) and peak resident set (VmHWM) are
printed with the growth per plane; blockwise prediction should not grow with the number of planes.
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

TILE = (16, 64, 64)


def make_inputs(folder: Path, shape: tuple[int, ...]) -> tuple[Path, Path]:
    import numpy as np
    import tifffile
    import torch

    from engine.model_files import save_model
    from engine.networks import build
    from engine.normalization import Normalization

    path = folder / f"volume-{'x'.join(map(str, shape))}.tif"
    data = tifffile.memmap(path, shape=shape, dtype=np.uint16, imagej=True, metadata={"axes": "ZYX"})
    rng = np.random.default_rng(0)
    for z in range(shape[0]):
        data[z] = rng.integers(0, 4000, shape[1:], dtype=np.uint16)
    data.flush()
    del data
    torch.manual_seed(0)
    net = build("unet3d", in_channels=1, classes=2, depth=2, filters=4).eval()
    model = save_model(net, folder / "model", patch=TILE, axes="ZYX",
                       normalization=Normalization("zscore", mean=[2000.0], std=[1150.0]))
    return path, model


def _status(field: str) -> int:
    """A field of /proc/self/status in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def child(volume: str, model: str, out: str, block: int) -> None:
    """Runs in a subprocess: one blockwise prediction, printing peak RssAnon / VmHWM and time as JSON."""
    from engine.blockwise import predict_zarr

    peak = [0]
    running = [True]

    def sample() -> None:
        while running[0]:
            peak[0] = max(peak[0], _status("RssAnon"))
            time.sleep(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    began = time.perf_counter()
    predict_zarr(model, volume, out, tile=TILE, block=(block,), batch=2, device="cpu")
    seconds = time.perf_counter() - began
    running[0] = False
    thread.join()
    print(json.dumps({"rss_anon_mb": peak[0] / 2**20, "vm_hwm_mb": _status("VmHWM") / 2**20, "seconds": seconds}))


def speedup(shape: tuple[int, ...], block: int) -> None:
    import numpy as np
    import zarr

    from engine.blockwise import predict_zarr

    with tempfile.TemporaryDirectory() as tmp:
        volume, model = make_inputs(Path(tmp), shape)
        times, labels = {}, {}
        for cluster in (None, "local:1", "local:2"):
            out = Path(tmp) / f"labels-{cluster or 'process'}.zarr".replace(":", "")
            began = time.perf_counter()
            predict_zarr(model, volume, out, tile=TILE, block=(block,), batch=2, device="cpu", cluster=cluster)
            times[cluster or "in-process"] = time.perf_counter() - began
            labels[cluster or "in-process"] = zarr.open_array(str(out))[:]
        same = all(np.array_equal(labels["in-process"], v) for v in labels.values())
        print(f"volume {shape} uint16, unet3d depth 2 filters 4, tile {TILE}, blocks of {block} planes")
        for name, seconds in times.items():
            print(f"  {name:10s} {seconds:7.1f} s")
        print(f"  speed-up local:2 vs local:1: {times['local:1'] / times['local:2']:.2f}x; labels identical: {same}")


def memory(planes: list[int], plane: tuple[int, int], block: int) -> None:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in planes:
            volume, model = make_inputs(Path(tmp), (n, *plane))
            out = Path(tmp) / f"labels-{n}.zarr"
            done = subprocess.run([sys.executable, __file__, "child", str(volume), str(model), str(out), str(block)],
                                  capture_output=True, text=True, check=True)
            results.append((n, json.loads(done.stdout.strip().splitlines()[-1])))
    print(f"blockwise TIFF -> zarr, planes of {plane[0]} x {plane[1]}, blocks of {block} planes, tile {TILE}")
    for n, r in results:
        print(f"  {n:5d} planes: peak RssAnon {r['rss_anon_mb']:7.1f} MB, VmHWM {r['vm_hwm_mb']:7.1f} MB, {r['seconds']:6.1f} s")
    for (n0, r0), (n1, r1) in zip(results, results[1:]):
        growth = (r1["rss_anon_mb"] - r0["rss_anon_mb"]) * 2**20 / max(1, n1 - n0)
        print(f"  {n0} -> {n1} planes: peak RssAnon grows {growth / 1024:.1f} KiB per plane "
              f"({growth / (plane[0] * plane[1]):.3f} bytes per voxel added)")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["speedup", "memory"])
    parser.add_argument("--shape", default="48,256,256", help="speedup: volume shape Z,Y,X")
    parser.add_argument("--planes", default="32,128", help="memory: plane counts to compare")
    parser.add_argument("--plane", default="512,512", help="memory: plane size Y,X")
    parser.add_argument("--block", type=int, default=16, help="planes per block")
    args = parser.parse_args()
    if args.mode == "speedup":
        speedup(tuple(int(v) for v in args.shape.split(",")), args.block)
    else:
        memory([int(v) for v in args.planes.split(",")], tuple(int(v) for v in args.plane.split(",")), args.block)


if __name__ == "__main__":
    main()
