"""Benchmark the Fiji bridge: pixel throughput ImagePlus <-> xarray, and JVM + ImageJ start-up.

Throughput is measured on 256 MB stacks (16-bit and 32-bit) in a fresh JVM (the first calls include
the heap's growth, its page faults and garbage collection, as a user's first conversions do) and compared
with numpy's own copy bandwidth measured in the same run on the same amount of data (``array.copy()``,
which, like a conversion, writes into freshly allocated memory; a copy into already-mapped memory is
printed too, for reference). Per direction it prints the first call, the best of the first three calls
and the best of ``--repeats``, and the minor page faults of a call. Targets (best of three, fresh
process): Java -> numpy >= 0.5x and numpy -> Java >= 0.3x numpy's copy bandwidth.

    python benchmarks/bench_bridge.py [--mb 256] [--repeats 7] [--json out.json]

``DEEPSEG_JAVA_OPTIONS=-XX:-UseTransparentHugePages`` measures the JVM without huge pages (as before
fiji_bridge asked for them).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = {"java_to_numpy": 0.5, "numpy_to_java": 0.3}


def timed(run) -> tuple[float, int]:
    """Wall seconds and minor page faults (this process, all threads: the JVM's included) of ``run()``."""
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    began = time.perf_counter()
    run()
    seconds = time.perf_counter() - began
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


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


def measure_stack(array: xr.DataArray, repeats: int) -> dict[str, object]:
    """Both directions against numpy's copy, interleaved so that load from other processes hits all alike."""
    from fiji_bridge import convert

    nbytes = array.nbytes
    warm = np.empty_like(array.values)  # for reference: copying into memory that is already mapped
    calls: dict[str, list[tuple[float, int]]] = {"numpy": [], "warm": [], "numpy_to_java": [], "java_to_numpy": []}
    made: list[object] = []
    for _ in range(max(3, repeats)):
        calls["numpy"].append(timed(lambda: array.values.copy()))
        calls["warm"].append(timed(lambda: np.copyto(warm, array.values)))
        made[:] = []
        calls["numpy_to_java"].append(timed(lambda: made.append(convert.xarray_to_imageplus(array))))
        calls["java_to_numpy"].append(timed(lambda: convert.imageplus_to_xarray(made[0])))
    assert np.array_equal(convert.imageplus_to_xarray(made[0]).values, array.values)
    numpy_s = min(t for t, _ in calls["numpy"])
    row: dict[str, object] = {
        "shape": list(array.shape),
        "numpy_copy_gbs": nbytes / numpy_s / 1e9,
        "numpy_copy_faults": min(f for _, f in calls["numpy"]),
        "numpy_copy_into_warm_gbs": nbytes / min(t for t, _ in calls["warm"]) / 1e9,
        "calls_s": {k: [round(t, 4) for t, _ in v] for k, v in calls.items()},
    }
    for key in ("numpy_to_java", "java_to_numpy"):
        seconds = [t for t, _ in calls[key]]
        row[f"{key}_gbs"] = nbytes / min(seconds[:3]) / 1e9
        row[f"{key}_ratio"] = numpy_s / min(seconds[:3])  # best of the first three calls
        row[f"{key}_first_ratio"] = numpy_s / seconds[0]
        row[f"{key}_best_ratio"] = numpy_s / min(seconds)
        row[f"{key}_faults"] = [f for _, f in calls[key]][:3]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=256, help="stack size in MB (default 256)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--no-startup", action="store_true", help="skip the start-up measurement")
    args = parser.parse_args(argv)

    import fiji_bridge

    startup = startup_seconds() if not args.no_startup else {"jvm_s": math.nan, "start_s": math.nan,
                                                              "first_macro_s": math.nan}
    session = fiji_bridge.start(mode="headless", memory=f"{max(2, 4 * args.mb // 1024 + 2)}g")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    results: dict[str, object] = {"imagej": session.version, "startup": startup, "mb": args.mb, "stacks": {},
                                  "cpus": os.cpu_count(), "load_average": load}
    print(f"{os.cpu_count()} CPUs, load average {load:.1f} (other processes make these numbers noisy)")
    print(f"ImageJ {session.version} start-up (fresh headless process): JVM {startup['jvm_s']:.2f} s, "
          f"fiji_bridge.start() {startup['start_s']:.2f} s, with a first macro {startup['first_macro_s']:.2f} s")
    for dtype in (np.uint16, np.float32):  # uint16 first: its first call is the JVM's first large allocation
        side = 1024
        planes = args.mb * 2**20 // (side * side * np.dtype(dtype).itemsize)
        array = xr.DataArray(np.random.default_rng(0).integers(0, 60000, (planes, side, side)).astype(dtype),
                             dims=("pln", "row", "col"), name="bench")
        row = measure_stack(array, args.repeats)
        results["stacks"][np.dtype(dtype).name] = row
        print(f"{np.dtype(dtype).name:8s} {array.shape} {array.nbytes / 2**20:.0f} MB: numpy copy "
              f"{row['numpy_copy_gbs']:.2f} GB/s ({row['numpy_copy_faults']} page faults; into mapped memory "
              f"{row['numpy_copy_into_warm_gbs']:.2f} GB/s)")
        for key, label in (("numpy_to_java", "xarray -> ImagePlus"), ("java_to_numpy", "ImagePlus -> xarray")):
            print(f"    {label}: first call {row[key + '_first_ratio']:.2f}x, best of 3 {row[key + '_ratio']:.2f}x, "
                  f"best of {args.repeats} {row[key + '_best_ratio']:.2f}x numpy's copy "
                  f"(target >= {TARGETS[key]}x; page faults per call {row[key + '_faults']})")
    met = all(row[f"{k}_ratio"] >= v for row in results["stacks"].values() for k, v in TARGETS.items())
    results["targets_met"] = met
    print("targets met" if met else "targets NOT met")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
