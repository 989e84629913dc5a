"""Benchmark the Fiji bridge: pixel throughput ImagePlus <-> xarray, and JVM + ImageJ start-up.

Throughput is measured on 256 MB stacks (16-bit and 32-bit) and compared with numpy's own copy
bandwidth measured in the same run on the same amount of data (``array.copy()``, which, like a
conversion, writes into freshly allocated memory; a copy into already-mapped memory is printed too,
for reference). Each figure is the best of ``--repeats`` runs. Targets: Java -> numpy >= 0.5x and numpy -> Java
>= 0.3x numpy's copy bandwidth.

    python benchmarks/bench_bridge.py [--mb 256] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = {"java_to_numpy": 0.5, "numpy_to_java": 0.3}


def best_seconds(run, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - began)
    return best


def startup_seconds(samples: int = 3) -> dict[str, float]:
    """Start-up in fresh processes (headless, plugin jar already built; best of ``samples``):
    ``jvm_s`` JPype starting the JVM, ``start_s`` all of ``fiji_bridge.start()`` (finding Java and ImageJ,
    JVM, registering commands), ``first_macro_s`` start plus a first macro (loads ImageJ's interpreter)."""
    code = (
        "import time, jpype; t0 = time.perf_counter(); import fiji_bridge; from fiji_bridge import runtime; "
        "real = jpype.startJVM; spans = []; "
        "jpype.startJVM = lambda *a, **k: (spans.append(time.perf_counter()), real(*a, **k), "
        "spans.append(time.perf_counter())); "
        "s = fiji_bridge.start(mode='headless'); t1 = time.perf_counter(); "
        "s.run_macro('return \"1\";'); t2 = time.perf_counter(); "
        "print(spans[1] - spans[0], t1 - t0, t2 - t0)"
    )
    rows = []
    for _ in range(samples):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
        rows.append([float(v) for v in out.stdout.split()])
    best = np.min(np.array(rows), axis=0)
    return {"jvm_s": float(best[0]), "start_s": float(best[1]), "first_macro_s": float(best[2])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=256, help="stack size in MB (default 256)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    import fiji_bridge
    from fiji_bridge import convert

    startup = startup_seconds()
    session = fiji_bridge.start(mode="headless", memory=f"{max(2, 4 * args.mb // 1024 + 2)}g")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    results: dict[str, object] = {"imagej": session.version, "startup": startup, "mb": args.mb, "stacks": {},
                                  "cpus": os.cpu_count(), "load_average": load}
    print(f"{os.cpu_count()} CPUs, load average {load:.1f} (other processes make these numbers noisy)")
    print(f"ImageJ {session.version} start-up (fresh headless process): JVM {startup['jvm_s']:.2f} s, "
          f"fiji_bridge.start() {startup['start_s']:.2f} s, with a first macro {startup['first_macro_s']:.2f} s")
    for dtype in (np.uint16, np.float32):
        side = 1024
        planes = args.mb * 2**20 // (side * side * np.dtype(dtype).itemsize)
        array = xr.DataArray(np.random.default_rng(0).integers(0, 60000, (planes, side, side)).astype(dtype),
                             dims=("pln", "row", "col"), name="bench")
        nbytes = array.nbytes
        imp = convert.xarray_to_imageplus(array)
        warm = np.empty_like(array.values)  # for reference: copying into memory that is already mapped
        timings = {"numpy": [], "warm": [], "to_java": [], "to_numpy": []}
        for _ in range(args.repeats):  # interleaved, so that load from other processes hits all alike
            timings["numpy"].append(best_seconds(lambda: array.values.copy(), 1))
            timings["warm"].append(best_seconds(lambda: np.copyto(warm, array.values), 1))
            timings["to_java"].append(best_seconds(lambda: convert.xarray_to_imageplus(array), 1))
            timings["to_numpy"].append(best_seconds(lambda: convert.imageplus_to_xarray(imp), 1))
        del warm
        numpy_s, numpy_warm_s, to_java_s, to_numpy_s = (min(timings[k]) for k in ("numpy", "warm", "to_java", "to_numpy"))
        assert np.array_equal(convert.imageplus_to_xarray(imp).values, array.values)
        numpy_gbs = nbytes / numpy_s / 1e9
        row = {
            "shape": list(array.shape),
            "numpy_copy_gbs": numpy_gbs,
            "numpy_copy_into_warm_gbs": nbytes / numpy_warm_s / 1e9,
            "java_to_numpy_gbs": nbytes / to_numpy_s / 1e9,
            "numpy_to_java_gbs": nbytes / to_java_s / 1e9,
        }
        row["java_to_numpy_ratio"] = row["java_to_numpy_gbs"] / numpy_gbs
        row["numpy_to_java_ratio"] = row["numpy_to_java_gbs"] / numpy_gbs
        results["stacks"][np.dtype(dtype).name] = row
        print(f"{np.dtype(dtype).name:8s} {array.shape} {nbytes / 2**20:.0f} MB: numpy copy {numpy_gbs:6.2f} GB/s "
              f"(into mapped memory {row['numpy_copy_into_warm_gbs']:.2f}) | "
              f"ImagePlus -> xarray {row['java_to_numpy_gbs']:6.2f} GB/s ({row['java_to_numpy_ratio']:.2f}x, "
              f"target >= {TARGETS['java_to_numpy']}x) | xarray -> ImagePlus {row['numpy_to_java_gbs']:6.2f} GB/s "
              f"({row['numpy_to_java_ratio']:.2f}x, target >= {TARGETS['numpy_to_java']}x)")
        del imp
    met = all(row[f"{k}_ratio"] >= v for row in results["stacks"].values() for k, v in TARGETS.items())
    results["targets_met"] = met
    print("targets met" if met else "targets NOT met")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
