"""The contract every deepseg network fulfils, so tiling, training and model files can rely on it."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..errors import InputError


class SegmentationNetwork(nn.Module):
    """Maps ``(N, in_channels, *spatial)`` to class logits ``(N, classes, *output_spatial)``.

    Subclasses set ``spatial_dims`` (2 or 3) and ``padding`` (``"same"`` or ``"valid"``) and implement
    :meth:`output_shape` and :meth:`valid_input_shape`. ``build`` fills ``name``, ``options``,
    ``in_channels`` and ``classes``.
    """

    spatial_dims: int = 2
    padding: str = "same"
    #: number of neighbouring slices fed as channels (2.5D networks); 1 for plain 2D/3D networks
    z_context: int = 1

    def __init__(self) -> None:
        super().__init__()
        self.name: str = type(self).__name__
        self.options: dict[str, Any] = {}
        self.in_channels: int = 1
        self.classes: int = 2

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Spatial output shape for a spatial input shape (equal for ``same`` padding)."""
        return tuple(int(s) for s in input_shape)

    def valid_input_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The smallest spatial input shape >= ``shape`` (per axis) that the network accepts."""
        return tuple(int(s) for s in shape)

    def check_input_shape(self, shape: Sequence[int]) -> None:
        """Raise InputError naming a shape to pad to if ``shape`` is not accepted."""
        shape = tuple(int(s) for s in shape)
        if len(shape) != self.spatial_dims:
            raise InputError(
                f"{self.name} is a {self.spatial_dims}D network but got a spatial shape {shape}"
            )
        ok = self.valid_input_shape(shape)
        if ok != shape:
            raise InputError(
                f"{self.name} cannot take spatial input {shape}; pad it to {ok} "
                f"(padding={self.padding!r}, options={self.options})"
            )

    def describe(self) -> dict[str, Any]:
        """Architecture summary for ``deepseg info``: name, options, parameter count."""
        return {
            "network": self.name,
            "spatial_dims": self.spatial_dims,
            "padding": self.padding,
            "in_channels": self.in_channels,
            "classes": self.classes,
            "options": dict(self.options),
            "parameters": sum(p.numel() for p in self.parameters()),
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
