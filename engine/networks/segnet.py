"""SegNet (Badrinarayanan et al. 2017), one of DeepMIB's four 2D/3D architectures (Belevich & Jokitalo
2021, "User interface and training process").

The encoder is ``depth`` levels of ``convs_per_level`` conv -> norm -> activation followed by 2x2 max
pooling that *remembers where each maximum came from*. The decoder mirrors it: each level first
un-pools with those indices (``nn.MaxUnpool2d``: every value goes back to the position of its
maximum, the other three pixels of the 2x2 window stay zero), then convolutions densify the sparse map.
Unlike U-Net no feature maps are copied across, only indices, which makes the decoder cheap.

Like MATLAB's ``segnetLayers`` (which DeepMIB builds on) every level has ``filters`` channels by default;
``double_filters=True`` doubles them per level as in the VGG-16 original (64, 128, 256, 512, ...).
Padding is "same"; inputs must be a multiple of ``2**depth`` on each axis (``valid_input_shape``
rounds up) so the indices of every pooling map back exactly.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import InputError
from .base import SegmentationNetwork
from .encoders import init_weights
from .layers import conv_norm_act
from .registry import register_network


class SegNet(SegmentationNetwork):
    """SegNet encoder-decoder with max-pooling-index up-sampling (Badrinarayanan et al. 2017, Fig 2-3)."""

    spatial_dims = 2
    padding = "same"

    def __init__(self, in_channels: int, classes: int, *, depth: int = 4, filters: int = 64,
                 filter_size: int = 3, convs_per_level: int = 2, double_filters: bool = False,
                 activation: str = "relu", norm: str = "batch") -> None:
        super().__init__()
        if not 1 <= int(depth) <= 6:
            raise InputError(f"depth={depth!r}: expected 1 to 6 levels")
        if int(filter_size) < 1 or int(filter_size) % 2 == 0:
            raise InputError(f"filter_size={filter_size!r}: expected an odd size (same padding)")
        if int(convs_per_level) < 1 or int(filters) < 1:
            raise InputError(f"convs_per_level={convs_per_level!r}, filters={filters!r}: expected >= 1")
        self.depth = int(depth)
        widths = [int(filters) * (2**i if double_filters else 1) for i in range(self.depth)]
        block = dict(spatial_dims=2, kernel=int(filter_size), padding="same", norm=norm, activation=activation)

        def stack(chans: list[int]) -> nn.Sequential:
            return nn.Sequential(*(conv_norm_act(a, b, **block) for a, b in zip(chans[:-1], chans[1:])))

        self.encoders = nn.ModuleList()
        prev = in_channels
        for w in widths:
            self.encoders.append(stack([prev] + [w] * int(convs_per_level)))
            prev = w
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, 2)
        # decoder level i (deepest first) keeps width[i] and hands width[i-1] to the next shallower level
        self.decoders = nn.ModuleList()
        for i in reversed(range(self.depth)):
            out = widths[i - 1] if i > 0 else widths[0]
            self.decoders.append(stack([widths[i]] * int(convs_per_level) + [out]))
        self.classifier = nn.Conv2d(widths[0], classes, 1)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x.shape[2:])
        indices = []
        for enc in self.encoders:
            x, idx = self.pool(enc(x))
            indices.append(idx)
        for dec, idx in zip(self.decoders, reversed(indices)):
            x = dec(self.unpool(x, idx))
        return self.classifier(x)

    def valid_input_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        m = 2**self.depth
        return tuple(max(m, -(-int(s) // m) * m) for s in shape)


@register_network("segnet2d", spatial_dims=2,
                  description="SegNet: encoder-decoder up-sampling with max-pooling indices (DeepMIB)")
def segnet2d(*, in_channels: int, classes: int, depth: int = 4, filters: int = 64, filter_size: int = 3,
             convs_per_level: int = 2, double_filters: bool = False, activation: str = "relu",
             norm: str = "batch") -> SegNet:
    """2D SegNet; inputs a multiple of ``2**depth``. Defaults follow MATLAB's segnetLayers (64 filters
    per level) at depth 4."""
    return SegNet(in_channels, classes, depth=depth, filters=filters, filter_size=filter_size,
                  convs_per_level=convs_per_level, double_filters=double_filters,
                  activation=activation, norm=norm)
