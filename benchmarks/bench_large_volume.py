"""Memory of segmenting a large volume from a TIFF file: deepseg's streaming predict_file vs MONAI.

    python benchmarks/bench_large_volume.py [--shape 128,1024,1024] [--keep]

Writes a uint16 volume as an uncompressed TIFF, saves a small randomly initialised 3D U-Net model
folder, then measures in separate subprocesses (peak resident memory via ru_maxrss, wall time):

* ours:  ``engine.prediction.predict_file(model, tif, labels.tif)``: memory-mapped input, tiles
  accumulated in slabs, probabilities in a temporary file, labels written slab by slab;
* MONAI: the whole volume read into memory, normalized to float32 and passed to
  ``sliding_window_inference`` (same network, tile, overlap, gaussian blending) with the output on
  the CPU, then argmax to labels; the usual whole-volume route (what nnU-Net does too).

Prints both, the ratio ours/MONAI of peak memory and time, the input size, and whether the label
images agree. Needs the ``bench`` extra (``pip install monai``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TILE = (32, 128, 128)


def make_inputs(folder: Path, shape: tuple[int, ...]) -> tuple[Path, Path]:
    import numpy as np
    import tifffile
    import torch

    from engine.model_files import save_model
    from engine.networks import build
    from engine.normalization import Normalization

    path = folder / "volume.tif"
    volume = tifffile.memmap(path, shape=shape, dtype=np.uint16, imagej=True, metadata={"axes": "ZYX"})
    rng = np.random.default_rng(0)
    for z in range(shape[0]):
        volume[z] = rng.integers(0, 4000, shape[1:], dtype=np.uint16)
    volume.flush()
    del volume
    torch.manual_seed(0)
    net = build("unet3d", in_channels=1, classes=2, depth=2, filters=4).eval()
    model = save_model(net, folder / "model", patch=TILE, axes="ZYX",
                       normalization=Normalization("zscore", mean=[2000.0], std=[1150.0]))
    return path, model


def run_ours(volume: str, model: str, out: str) -> dict:
    from engine.prediction import predict_file

    began = time.perf_counter()
    predict_file(model, volume, out, tile=TILE, overlap=0.25, batch_size=4, device="cpu")
    return {"seconds": time.perf_counter() - began}


def run_monai(volume: str, model: str, out: str) -> dict:
    import numpy as np
    import tifffile
    import torch
    from monai.inferers import sliding_window_inference

    from engine.model_files import load_model
    from engine.tiling import blend_weights

    loaded = load_model(model, device="cpu")
    began = time.perf_counter()
    image = loaded.normalization.apply(tifffile.imread(volume)[None])  # (1, Z, Y, X) float32
    weights = torch.from_numpy(np.array(blend_weights(TILE, "gaussian")))
    with torch.inference_mode():
        probs = sliding_window_inference(torch.from_numpy(image)[None], TILE, 4,
                                         lambda x: torch.softmax(loaded.network(x), 1), overlap=0.25,
                                         mode="gaussian", roi_weight_map=weights)
    labels = probs[0].argmax(0).numpy().astype(np.uint8)
    tifffile.imwrite(out, labels, imagej=True)
    return {"seconds": time.perf_counter() - began}


def measure(method: str, volume: Path, model: Path, out: Path) -> dict:
    code = (f"import json, resource, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import bench_large_volume as b; r = b.run_{method}({str(volume)!r}, {str(model)!r}, {str(out)!r}); "
            "r['peak_mib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024; print(json.dumps(r))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="128,1024,1024", help="Z,Y,X of the test volume")
    parser.add_argument("--dir", help="working folder (default: a temporary one)")
    args = parser.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    import numpy as np
    import tifffile

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        volume, model = make_inputs(folder, shape)
        size_mib = np.prod(shape) * 2 / 2**20
        results = {m: measure(m, volume, model, folder / f"{m}.tif") for m in ("ours", "monai")}
        agree = float(np.mean(tifffile.imread(folder / "ours.tif") == tifffile.imread(folder / "monai.tif")))
    print(f"volume {shape} uint16 = {size_mib:.0f} MiB on disk; tile {TILE}, overlap 0.25, 3D U-Net depth 2")
    print(f"{'method':8s} {'peak MiB':>10s} {'wall s':>8s}")
    for name, r in results.items():
        print(f"{name:8s} {r['peak_mib']:10.0f} {r['seconds']:8.1f}")
    print(f"ratio ours/MONAI: peak memory {results['ours']['peak_mib'] / results['monai']['peak_mib']:.2f}, "
          f"time {results['ours']['seconds'] / results['monai']['seconds']:.2f}; labels agree on {agree:.4%} of voxels")


if __name__ == "__main__":
    main()
