"""2.5D networks (DeepMIB's "Z2C" workflow, MIB 2.91): ``z_context`` neighbouring slices of a stack are
fed to a 2D network as channels, and it predicts the centre slice.

``z2c_unet2d`` and ``z2c_deeplabv3plus`` take every option of ``unet2d`` / ``deeplabv3plus`` plus
``z_context`` (odd, 3..9, default 5). ``in_channels`` stays the number of channels *per slice* (what the
image has); the wrapped 2D network sees ``in_channels * z_context``. Training and prediction read
``network.z_context`` and build the inputs with :func:`stack_z_context` (or the equivalent
``engine.arrays.z_context_stack``):

* channel order is plane-major: channels ``0..C-1`` are slice ``z - k`` (``k = z_context // 2``),
  the next ``C`` slice ``z - k + 1``, ..., so the centre slice sits at ``k*C .. k*C + C - 1``;
* slices beyond the stack ends are mirrored without repeating the edge slice (slice ``-1`` is slice
  ``1``, slice ``Z`` is ``Z - 2``), like ``numpy.pad(mode="reflect")``; a single-slice stack repeats it.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .. import arrays
from ..arrays import mirror_index  # noqa: F401  (re-exported: part of this module's documented API)
from ..errors import InputError
from .base import SegmentationNetwork
from .deeplab import deeplabv3plus
from .registry import register_network
from .unet import unet2d

Z_CONTEXTS = (3, 5, 7, 9)


def check_z_context(z_context: Any) -> int:
    """``z_context`` as an int, or InputError unless it is odd and 3..9 (DeepMIB's range)."""
    if isinstance(z_context, bool) or not isinstance(z_context, (int, np.integer)) or int(z_context) not in Z_CONTEXTS:
        raise InputError(f"z_context={z_context!r}: expected an odd number of slices, one of {Z_CONTEXTS}")
    return int(z_context)


def z_context_indices(z: int, depth: int, z_context: int) -> list[int]:
    """The slice indices stacked for centre slice ``z`` of a ``depth``-slice stack (mirrored ends);
    ``z_context`` must be one of :data:`Z_CONTEXTS` (see :func:`engine.arrays.z_context_indices`).

    >>> z_context_indices(0, 10, 5)
    [2, 1, 0, 1, 2]
    """
    return arrays.z_context_indices(z, depth, check_z_context(z_context))


def stack_z_context(volume: np.ndarray, z: int, z_context: int) -> np.ndarray:
    """Slices around ``z`` of a ``(C, Z, Y, X)`` volume as channels ``(C * z_context, Y, X)``.

    Plane-major order (all channels of slice ``z - k`` first), mirrored at the stack ends; see the
    module docstring and :func:`engine.arrays.z_context_stack`. Works on anything indexable like an
    array (numpy, memmap, zarr): only the needed slices are read.

    >>> v = np.arange(3)[None, :, None, None] * np.ones((2, 3, 1, 1))   # C=2, slice value = its index
    >>> stack_z_context(v, 0, 3)[:, 0, 0].tolist()
    [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    """
    return arrays.z_context_stack(volume, z, check_z_context(z_context))


class Z2CNetwork(SegmentationNetwork):
    """A 2D network that reads ``z_context`` stacked slices (``in_channels * z_context`` channels)."""

    spatial_dims = 2

    def __init__(self, net: SegmentationNetwork, z_context: int) -> None:
        super().__init__()
        self.net = net
        self.z_context = check_z_context(z_context)  # instance attribute: train/predict read it
        self.padding = net.padding
        self.in_channels, self.classes = net.in_channels // self.z_context, net.classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        want = self.in_channels * self.z_context
        if x.ndim != 4 or x.shape[1] != want:
            raise InputError(
                f"{self.name} expects (N, {want}, Y, X): {self.in_channels} channel(s) x {self.z_context} slices "
                f"stacked with stack_z_context, got shape {tuple(x.shape)}"
            )
        return self.net(x)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        return self.net.output_shape(input_shape)

    def valid_input_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        return self.net.valid_input_shape(shape)


def _z2c(inner_name: str, inner: Callable[..., SegmentationNetwork]) -> Callable[..., Z2CNetwork]:
    """A builder taking ``inner``'s options plus ``z_context``; its signature lists them all, so the
    registry's option check, defaults and ``config.json`` round trip see them."""

    def builder(*, in_channels: int, classes: int, z_context: int = 5, **options: Any) -> Z2CNetwork:
        z = check_z_context(z_context)
        net = inner(in_channels=in_channels * z, classes=classes, **options)
        net.name, net.options = inner_name, dict(options)
        net.in_channels, net.classes = in_channels * z, classes
        return Z2CNetwork(net, z)

    params = [p for p in inspect.signature(inner).parameters.values()]
    z_param = inspect.Parameter("z_context", inspect.Parameter.KEYWORD_ONLY, default=5, annotation=int)
    builder.__signature__ = inspect.Signature(params[:2] + [z_param] + params[2:])  # type: ignore[attr-defined]
    builder.__name__ = builder.__qualname__ = f"z2c_{inner_name}"
    builder.__doc__ = (
        f"2.5D {inner_name}: ``z_context`` slices (odd, 3..9) as channels, predicts the centre slice; "
        f"other options as {inner_name}."
    )
    return builder


z2c_unet2d = register_network(
    "z2c_unet2d", spatial_dims=2,
    description="2.5D U-Net (DeepMIB Z2C): z_context neighbouring slices as channels, centre slice predicted",
)(_z2c("unet2d", unet2d))

z2c_deeplabv3plus = register_network(
    "z2c_deeplabv3plus", spatial_dims=2,
    description="2.5D DeepLab v3+ (DeepMIB Z2C): z_context neighbouring slices as channels",
)(_z2c("deeplabv3plus", deeplabv3plus))
