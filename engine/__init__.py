"""deepseg engine: networks, training, tiled prediction, metrics and IO (pure Python + PyTorch).

The public API is imported lazily so that ``import engine`` stays fast (torch is loaded on first use).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "read_image": "engine.io",
    "write_image": "engine.io",
    "read_labels": "engine.io",
    "write_labels": "engine.io",
    "list_images": "engine.io",
    "as_image": "engine.axes",
    "predict_tiled": "engine.tiling",
    "predict": "engine.prediction",
    "predict_file": "engine.prediction",
    "predict_zarr": "engine.blockwise",
    "Prediction": "engine.prediction",
    "train": "engine.training",
    "TrainResult": "engine.training",
    "build": "engine.networks",
    "list_networks": "engine.networks",
    "TrainConfig": "engine.config",
    "evaluate": "engine.metrics",
    "save_model": "engine.model_files",
    "load_model": "engine.model_files",
    "DeepSegError": "engine.errors",
    "InputError": "engine.errors",
    "ModelFileError": "engine.errors",
    "Cancelled": "engine.errors",
    "Progress": "engine.progress",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
