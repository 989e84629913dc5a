"""Train and evaluate on the small real datasets of shared/data (run by hand; CPU minutes).

    ../shared/data/fetch.sh .data            # writes .data/{ct_head_bone,lm_huh7_nuclei,...}
    python benchmarks/real_data.py [--data .data] [--epochs N] [--only ct|nuclei]

* ct_head_bone: clinical head CT (int16 HU, voxels 1.5 x 0.957 x 0.957 mm), bone mask. An anisotropic
  3D U-Net trains on slices 0-71 and is evaluated on the unseen slices 72-107.
* lm_huh7_nuclei: fluorescence nuclei; instance labels on frame 20 only, plus a mask of where that frame
  is annotated (sparse annotation). A 2D U-Net trains on the left 320 columns of frame 20 (outside the
  mask = not annotated) and is evaluated on the unseen right part, inside the mask.
Prints foreground Dice/IoU on the held-out parts and the training time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from engine import read_image
from engine.metrics import evaluate
from engine.prediction import predict
from engine.training import train


def ct(data: Path, out: Path, epochs: int) -> str:
    image = read_image(data / "ct_head_bone" / "image.tif")
    labels = read_image(data / "ct_head_bone" / "label.tif").values
    began = time.perf_counter()
    result = train(images=[image.isel(pln=slice(0, 72))], labels=[labels[:72]], out=str(out / "ct"),
                   network="unet3d_aniso", network_options={"depth": 3, "filters": 16}, patch=[16, 96, 96],
                   normalization="percentile", epochs=epochs, batch=2, steps_per_epoch=20, lr=2e-3, seed=2)
    trained = time.perf_counter() - began
    held_out = image.isel(pln=slice(72, None))
    report = evaluate(predict(result.model_dir, held_out).labels, labels[72:], classes=2)
    return (f"ct_head_bone  unet3d_aniso  held-out slices 72-107: bone Dice {report.dice[1]:.4f}, "
            f"IoU {report.iou[1]:.4f}; training {trained:.0f} s ({epochs} epochs)")


def nuclei(data: Path, out: Path, epochs: int) -> str:
    frame = read_image(data / "lm_huh7_nuclei" / "image.tif").isel(pln=20)
    instances = read_image(data / "lm_huh7_nuclei" / "labels.tif").values[20]
    mask = read_image(data / "lm_huh7_nuclei" / "mask.tif").values[20]
    foreground = (instances > 0).astype(np.uint8)
    cut = 320
    began = time.perf_counter()
    result = train(images=[frame.isel(col=slice(0, cut))], labels=[foreground[:, :cut]], masks=[mask[:, :cut]],
                   out=str(out / "nuclei"), network="unet2d", network_options={"depth": 4, "filters": 16},
                   patch=128, epochs=epochs, batch=8, steps_per_epoch=20, lr=2e-3, seed=2)
    trained = time.perf_counter() - began
    labels = predict(result.model_dir, frame).labels.values
    report = evaluate(labels[:, cut:], foreground[:, cut:], classes=2, mask=mask[:, cut:])
    return (f"lm_huh7_nuclei unet2d  held-out columns {cut}-511 (inside the annotation mask): nucleus Dice "
            f"{report.dice[1]:.4f}, IoU {report.iou[1]:.4f}; training {trained:.0f} s ({epochs} epochs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=".data", type=Path)
    parser.add_argument("--out", default="runs/real_data", type=Path)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--only", choices=["ct", "nuclei"])
    args = parser.parse_args()
    if not (args.data / "ct_head_bone").is_dir():
        raise SystemExit(f"no data in {args.data}: run ../shared/data/fetch.sh {args.data} first")
    for name, job in (("ct", ct), ("nuclei", nuclei)):
        if args.only in (None, name):
            print(job(args.data, args.out, args.epochs), flush=True)


if __name__ == "__main__":
    main()
