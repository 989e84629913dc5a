"""U-Net with a ResNet (or MobileNet) encoder: DeepMIB's "U-net + Encoder" (MIB 2.91; encoder
classic/ResNet18/ResNet50, depth <= 5, H and W multiples of 2^depth).

The encoder's first ``depth`` stages give feature maps at strides 2, 4, ..., 2^depth. The decoder
climbs back one level at a time: a 2x2 transposed convolution doubles the resolution, the encoder map
of that stride is concatenated (the U-Net skip, Ronneberger et al. 2015 Fig 1), and two
conv -> norm -> activation layers fuse them. The last level (stride 1) has no encoder map to copy, so
it only up-samples and convolves. Decoder level ``j`` (stride 2^j) has ``filters * 2**j`` channels, so
``filters`` is the width at full resolution.

Padding is "same". As in DeepMIB, inputs must be multiples of ``2**depth`` (no hidden padding, so tiles
line up with what the network sees); ``valid_input_shape`` rounds up, with a floor of
``2**(depth + 1)`` so the deepest encoder map is at least 2x2 and BatchNorm works when training with a
mini-batch of 1.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import InputError
from .base import SegmentationNetwork
from .encoders import ENCODERS, build_encoder, cna, init_weights
from .registry import register_network


class EncoderUNet(SegmentationNetwork):
    """U-Net decoder on a backbone encoder (DeepMIB "U-net + Encoder")."""

    spatial_dims = 2
    padding = "same"

    def __init__(self, in_channels: int, classes: int, *, encoder: str = "resnet18", depth: int = 4,
                 filters: int = 32, encoder_width: float = 1.0, activation: str = "relu",
                 norm: str = "batch") -> None:
        super().__init__()
        if encoder not in ENCODERS:
            raise InputError(f"encoder={encoder!r}: expected one of {sorted(ENCODERS)}")
        if not 1 <= int(depth) <= 5:
            raise InputError(f"depth={depth!r}: expected 1 to 5 (the encoder has strides 2..32)")
        self.depth = int(depth)
        # output_stride 32: plain strides; only the stages the decoder uses are built
        self.encoder = build_encoder(encoder, in_channels=in_channels, output_stride=32,
                                     width=float(encoder_width), activation=activation, norm=norm,
                                     stages=self.depth)
        skip_ch = (0,) + self.encoder.channels[:-1]  # channels of the map at stride 2^j, none at j = 0
        act = dict(norm=norm, activation=activation)
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        prev = self.encoder.channels[-1]
        for j in reversed(range(self.depth)):
            f = int(filters) * 2**j
            self.ups.append(nn.ConvTranspose2d(prev, f, 2, stride=2))
            self.blocks.append(nn.Sequential(cna(f + skip_ch[j], f, **act), cna(f, f, **act)))
            prev = f
        self.classifier = nn.Conv2d(prev, classes, 1)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x.shape[2:])
        feats = self.encoder(x)
        y = feats[-1]
        skips = [None] + feats[:-1]  # skips[j] is at stride 2^j
        for up, block, j in zip(self.ups, self.blocks, reversed(range(self.depth))):
            y = up(y)
            if skips[j] is not None:
                y = torch.cat([y, skips[j]], dim=1)
            y = block(y)
        return self.classifier(y)

    def valid_input_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        m = 2**self.depth
        return tuple(max(2 * m, -(-int(s) // m) * m) for s in shape)


@register_network("unet2d_encoder", spatial_dims=2,
                  description="U-Net with a ResNet18/ResNet50 (or MobileNet) encoder (DeepMIB 'U-net + Encoder')")
def unet2d_encoder(*, in_channels: int, classes: int, encoder: str = "resnet18", depth: int = 4,
                   filters: int = 32, encoder_width: float = 1.0, activation: str = "relu",
                   norm: str = "batch") -> EncoderUNet:
    """2D U-Net on ``encoder`` (resnet18 default, resnet50, *_v2, mobilenet_v1/v2); inputs a multiple of
    ``2**depth``, at least ``2**(depth+1)``."""
    return EncoderUNet(in_channels, classes, encoder=encoder, depth=depth, filters=filters,
                       encoder_width=encoder_width, activation=activation, norm=norm)
