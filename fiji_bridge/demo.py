"""``deepseg demo --imagej``: the demo's training and prediction run as an ImageJ macro of deepseg commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .commands import TRAIN, spec, train_values


def macro_string(text: str | Path) -> str:
    """``text`` as an ImageJ macro string literal."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def demo_macro(config: Any, test_images: str | Path, predictions: str | Path) -> str:
    """A macro, in the Recorder's style, that trains and then segments every test image."""
    options = spec(TRAIN).format(train_values(config))
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
