"""Augmentation presets in short runs, per network (run by hand): why ``augmentation=auto`` picks ``light``
only for short U-Net runs.

    python benchmarks/bench_augmentation_presets.py [--networks unet2d,segnet2d,deeplabv3plus]
                                                    [--presets light,default] [--seeds 3,4,5]

Each network trains as in ``tests/test_quality.py`` on its large blobs (radius 8-16 px, six 128x128 training
images, patch 64, 12 epochs x 10 steps = 120 steps; ``unet2d``: depth 3, 16 filters), once per preset and seed,
and is scored by foreground Dice on two separately drawn images; the table prints the mean per preset.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:  # run as a script from anywhere
        sys.path.insert(0, str(path))

OPTIONS = {"unet2d": {"depth": 3, "filters": 16}, "segnet2d": {"depth": 3, "filters": 16},
           "deeplabv3plus": {"encoder": "mobilenet_v1", "skips": 2, "encoder_width": 0.5, "aspp_filters": 64,
                             "decoder_filters": 64}}


def dice(network: str, preset: str, seed: int) -> float:
    """Held-out foreground Dice of one 120-step run."""
    from conftest import blob_images

    from engine.metrics import Report, evaluate
    from engine.prediction import predict
    from engine.training import train

    images, labels = blob_images(6, shape=(128, 128), seed=100, radius=(8, 16))
    test_images, test_labels = blob_images(2, shape=(128, 128), seed=900, radius=(8, 16))
    with tempfile.TemporaryDirectory(prefix="bench_presets_") as tmp:
        result = train(images=images, labels=labels, out=f"{tmp}/model", network=network,
                       network_options=OPTIONS[network], patch=64, epochs=12, batch=8, steps_per_epoch=10,
                       seed=seed, augmentation=preset)
        confusion = sum(evaluate(predict(result.model_dir, image).labels, truth, classes=2).confusion
                        for image, truth in zip(test_images, test_labels))
    return float(Report(confusion, ("background", "blob")).dice[1])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", default="unet2d,segnet2d,deeplabv3plus")
    parser.add_argument("--presets", default="light,default")
    parser.add_argument("--seeds", default="3,4,5")
    args = parser.parse_args(argv)
    networks, presets = args.networks.split(","), args.presets.split(",")
    unknown = [n for n in networks if n not in OPTIONS]
    if unknown:
        parser.error(f"--networks: unknown {unknown}; expected some of {', '.join(OPTIONS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"{'network':<16}" + "".join(f"{p:>22}" for p in presets))
    for network in networks:
        cells = []
        for preset in presets:
            values = [dice(network, preset, seed) for seed in seeds]
            cells.append(f"{np.mean(values):.3f} ({' '.join(f'{v:.3f}' for v in values)})")
        print(f"{network:<16}" + "".join(f"{c:>22}" for c in cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
