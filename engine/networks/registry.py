"""A tiny registry ``name -> builder`` for segmentation networks.

Each network family lives in its own module and registers its entry functions with
:func:`register_network`. Users call :func:`build` with a name and options; the options are stored on
the model (``model.name``, ``model.options``) so a model folder can rebuild it from ``config.json``.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import InputError
from .base import SegmentationNetwork

Builder = Callable[..., SegmentationNetwork]


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    builder: Builder
    spatial_dims: int
    description: str

    def defaults(self) -> dict[str, Any]:
        """Keyword options of the builder and their default values."""
        params = inspect.signature(self.builder).parameters
        return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


_REGISTRY: dict[str, NetworkSpec] = {}


def register_network(name: str, *, spatial_dims: int, description: str) -> Callable[[Builder], Builder]:
    """Decorator that adds a builder ``f(*, in_channels, classes, **options)`` under ``name``."""

    def decorate(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise RuntimeError(f"network {name!r} is registered twice")
        _REGISTRY[name] = NetworkSpec(name, builder, spatial_dims, description)
        return builder

    return decorate


def _ensure_loaded() -> None:
    # Importing the family modules registers their networks.
    from . import families  # noqa: F401


def list_networks() -> list[str]:
    """Names of all registered networks, sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_spec(name: str) -> NetworkSpec:
    """The registry entry of ``name``; an unknown name raises InputError listing close matches."""
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise InputError(
            f"unknown network {name!r}.{hint} Available: {', '.join(sorted(_REGISTRY))}"
        ) from None


def build(name: str, *, in_channels: int = 1, classes: int = 2, **options: Any) -> SegmentationNetwork:
    """Build network ``name`` with ``in_channels`` input channels and ``classes`` output classes.

    Unknown option names raise InputError listing the options the network accepts.
    """
    spec = get_spec(name)
    accepted = spec.defaults()
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InputError(
            f"network {name!r} has no option(s) {unknown}; it accepts {sorted(accepted)}"
        )
    if int(in_channels) < 1 or int(classes) < 2:
        raise InputError(
            f"in_channels={in_channels!r}, classes={classes!r}: expected in_channels >= 1 and classes >= 2 "
            "(background counts as a class)"
        )
    model = spec.builder(in_channels=int(in_channels), classes=int(classes), **options)
    model.name = name
    model.options = {**accepted, **options}
    model.in_channels = int(in_channels)
    model.classes = int(classes)
    return model
