"""``deepseg demo --imagej``: the demo's training and prediction run as an ImageJ macro of deepseg commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .commands import TRAIN, spec


def train_options(config: Any) -> dict[str, Any]:
    """``DeepSeg Train...`` option values for an ``engine.config.TrainConfig``."""
    values: dict[str, Any] = {
        "images": config.images or "",
        "labels": config.labels or "",
        "out": config.out,
        "network": config.network,
        "options": " ".join(f"{k}={v}" for k, v in (config.network_options or {}).items()),
        "patch": 0 if config.patch is None else config.patch if isinstance(config.patch, int)
        else ",".join(str(p) for p in config.patch),
        "epochs": config.epochs,
        "batch": config.batch or 0,
        "steps": config.steps_per_epoch or 0,
        "classes": config.classes or 0,
        "names": ",".join(config.class_names or []),
        "lr": config.lr,
        "optimizer": config.optimizer,
        "schedule": config.schedule,
        "loss": config.loss,
        "normalization": config.normalization,
        "validation": config.validation_fraction,
        "seed": config.seed,
        "axes": config.axes or "",
        "device": config.device,
    }
    return spec(TRAIN).validate(values)


def macro_string(text: str | Path) -> str:
    """``text`` as an ImageJ macro string literal."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def demo_macro(config: Any, test_images: str | Path, predictions: str | Path) -> str:
    """A macro, in the Recorder's style, that trains and then segments every test image."""
    options = spec(TRAIN).format(train_options(config))
    folder = str(Path(test_images)) + "/"
    return "\n".join([
        f"run({macro_string(TRAIN)}, {macro_string(options)});",
        f"files = getFileList({macro_string(folder)});",
        "for (i = 0; i < files.length; i++) {",
        f"    open({macro_string(folder)} + files[i]);",
        "    stem = File.nameWithoutExtension;",
        f'    run("DeepSeg Predict...", "model=[" + {macro_string(config.out)} + "]");',
        f'    saveAs("Tiff", {macro_string(str(Path(predictions)) + "/")} + stem + ".tif");',
        '    close("*");',
        "}",
    ])


def run_imagej_demo(config: Any, test_images: str | Path, predictions: str | Path, *, quiet: bool = False) -> None:
    """Train with ``config`` and segment ``test_images`` into ``predictions`` through embedded ImageJ."""
    from engine.progress import TqdmProgress

    from .runtime import start

    Path(predictions).mkdir(parents=True, exist_ok=True)
    session = start(mode="headless")
    bar = TqdmProgress(disable=quiet)
    session.progress_callback = bar
    try:
        session.run_macro(demo_macro(config, test_images, predictions))
    finally:
        session.progress_callback = None
        bar.close()
