"""deepseg's Fiji/ImageJ bridge: run ImageJ in Python, move images both ways, Plugins > deepseg commands.

>>> import fiji_bridge                            # doctest: +SKIP
>>> session = fiji_bridge.start()                 # embedded ImageJ 1.x, headless
>>> imp = session.open_image("blobs.tif")
>>> session.run("DeepSeg Predict...", "model=[/models/nuclei]", image=imp).images[0]

Nothing here starts Java until :func:`start` is called.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "start": "fiji_bridge.runtime",
    "current": "fiji_bridge.runtime",
    "find_java": "fiji_bridge.runtime",
    "find_imagej": "fiji_bridge.runtime",
    "Session": "fiji_bridge.session",
    "CommandResult": "fiji_bridge.session",
    "SetupError": "fiji_bridge.errors",
    "MacroError": "fiji_bridge.errors",
    "imageplus_to_xarray": "fiji_bridge.convert",
    "xarray_to_imageplus": "fiji_bridge.convert",
    "labels_to_imageplus": "fiji_bridge.convert",
    "probabilities_to_imageplus": "fiji_bridge.convert",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fiji_bridge' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
