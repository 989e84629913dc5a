"""DeepLab v3+ (Chen et al. 2018): an encoder with atrous convolution, Atrous Spatial Pyramid Pooling
(ASPP) and a light decoder fed by low-level encoder features.

Two sources set the options and defaults:

* DeepMIB (Belevich & Jokitalo 2021; MIB 2.91): ResNet-18 encoder, output stride 16, "same" padding
  -> ``encoder="resnet18"``, ``output_stride=16``, ``skips=1``, ``aspp_mode="project"`` (the defaults).
* The fossil CT study (Yu et al. 2022, Fig 3C and Table 2): MobileNet v1 or ResNet v2 50 encoders,
  1 or 2 skip connections, and an "ASPP concatenated" variant. Its best model (mean Dice 0.894) is
  ``encoder="mobilenet_v1", skips=2``; the variant is ``aspp_mode="concat"``.

``skips=1`` is the classic decoder: ASPP output up-sampled to stride 4 and concatenated with the
stride-4 features (reduced to ``low_level_filters`` by a 1x1 conv). ``skips=2`` first fuses the
stride-8 features in the same way, then the stride-4 ones. ``aspp_mode="project"`` compresses the
concatenated ASPP branches with a 1x1 conv (Chen et al. 2017 Sec. 3.3); ``"concat"`` hands all
branches (5 x ``aspp_filters`` channels) to the decoder unprojected.

Any input size >= ``2 * output_stride`` is accepted: the input is reflect-padded at the bottom/right to a
multiple of the output stride (so every stride-2 step halves exactly and the skip maps align with the
up-sampled ASPP output) and the logits, bilinearly up-sampled to the padded size, are cropped back.
So ``valid_input_shape`` is the identity above that minimum, and ``output_shape`` is the input shape.
The minimum keeps the deepest map at least 2x2, so BatchNorm still sees more than one value per
channel when training with DeepMIB's default mini-batch of 1.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .base import SegmentationNetwork
from .encoders import ENCODERS, build_encoder, cna, init_weights
from .layers import make_activation
from .registry import register_network

ASPP_MODES = ("project", "concat")
DEFAULT_RATES = (6, 12, 18)  # at output stride 16 (Chen et al. 2017 Sec. 4); doubled at 8


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling (Chen et al. 2017 Fig 5): a 1x1 conv, one 3x3 atrous conv per
    rate, and an image-pooling branch, concatenated; ``mode="project"`` then applies 1x1 conv + norm +
    act.

    The image-pooling branch works on a 1x1 map, where BatchNorm with a batch of 1 has a single value
    per channel and fails in training; it therefore uses a biased conv without normalization.
    """

    def __init__(self, in_ch: int, filters: int, rates: Sequence[int], *, mode: str, norm: str,
                 activation: str) -> None:
        super().__init__()
        self.branches = nn.ModuleList([cna(in_ch, filters, kernel=1, norm=norm, activation=activation)])
        self.branches.extend(cna(in_ch, filters, dilation=int(r), norm=norm, activation=activation) for r in rates)
        self.image_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_ch, filters, 1, bias=True), make_activation(activation)
        )
        n = len(self.branches) + 1
        self.mode = mode
        self.project = (
            cna(n * filters, filters, kernel=1, norm=norm, activation=activation) if mode == "project" else None
        )
        self.out_channels = filters if mode == "project" else n * filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        outs.append(self.image_pool(x).expand(-1, -1, *x.shape[2:]))
        y = torch.cat(outs, dim=1)
        return self.project(y) if self.project is not None else y


class DeepLabV3Plus(SegmentationNetwork):
    """DeepLab v3+ (Chen et al. 2018 Fig 2) with a choice of encoder, skips and ASPP mode."""

    spatial_dims = 2
    padding = "same"

    def __init__(self, in_channels: int, classes: int, *, encoder: str = "resnet18", output_stride: int = 16,
                 atrous_rates: Sequence[int] | None = None, skips: int = 1, aspp_mode: str = "project",
                 aspp_filters: int = 256, decoder_filters: int = 256, low_level_filters: int = 48,
                 encoder_width: float = 1.0, activation: str = "relu", norm: str = "batch") -> None:
        super().__init__()
        if encoder not in ENCODERS:
            raise InputError(f"encoder={encoder!r}: expected one of {sorted(ENCODERS)}")
        if output_stride not in (8, 16):
            raise InputError(f"output_stride={output_stride!r}: expected 8 or 16")
        if skips not in (1, 2):
            raise InputError(f"skips={skips!r}: expected 1 (stride-4 features) or 2 (stride 4 and 8)")
        if aspp_mode not in ASPP_MODES:
            raise InputError(f"aspp_mode={aspp_mode!r}: expected one of {ASPP_MODES}")
        if atrous_rates is None:
            atrous_rates = tuple(r * 16 // output_stride for r in DEFAULT_RATES)
        rates = tuple(int(r) for r in atrous_rates)
        if not rates or min(rates) < 1:
            raise InputError(f"atrous_rates={atrous_rates!r}: expected one or more positive ints")
        self.output_stride = int(output_stride)
        self.skips = int(skips)
        self.encoder = build_encoder(encoder, in_channels=in_channels, output_stride=self.output_stride,
                                     width=float(encoder_width), activation=activation, norm=norm)
        ch = self.encoder.channels
        self.aspp = ASPP(ch[-1], aspp_filters, rates, mode=aspp_mode, norm=norm, activation=activation)
        act = dict(norm=norm, activation=activation)
        top = self.aspp.out_channels
        if self.skips == 2:
            # extra skip from the stride-8 stage (CT study, Table 2 "Skip connection 2")
            self.reduce8 = cna(ch[2], low_level_filters, kernel=1, **act)
            self.fuse8 = cna(top + low_level_filters, decoder_filters, **act)
            top = decoder_filters
        self.reduce4 = cna(ch[1], low_level_filters, kernel=1, **act)
        self.fuse4 = nn.Sequential(
            cna(top + low_level_filters, decoder_filters, **act), cna(decoder_filters, decoder_filters, **act)
        )
        self.classifier = nn.Conv2d(decoder_filters, classes, 1)
        init_weights(self)

    @property
    def min_size(self) -> int:
        return 2 * self.output_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x.shape[2:])
        h, w = x.shape[2:]
        pad_h, pad_w = -h % self.output_stride, -w % self.output_stride
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        feats = self.encoder(x)
        y = self.aspp(feats[-1])
        if self.skips == 2:
            low = self.reduce8(feats[2])
            y = F.interpolate(y, size=low.shape[2:], mode="bilinear", align_corners=False)
            y = self.fuse8(torch.cat([y, low], dim=1))
        low = self.reduce4(feats[1])
        y = F.interpolate(y, size=low.shape[2:], mode="bilinear", align_corners=False)
        y = self.classifier(self.fuse4(torch.cat([y, low], dim=1)))
        y = F.interpolate(y, size=x.shape[2:], mode="bilinear", align_corners=False)
        return y[:, :, :h, :w]

    def valid_input_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(max(int(s), self.min_size) for s in shape)


@register_network("deeplabv3plus", spatial_dims=2,
                  description="DeepLab v3+ with ASPP; ResNet/MobileNet encoders, 1-2 skips (DeepMIB, fossil CT)")
def deeplabv3plus(*, in_channels: int, classes: int, encoder: str = "resnet18", output_stride: int = 16,
                  atrous_rates: Sequence[int] | None = None, skips: int = 1, aspp_mode: str = "project",
                  aspp_filters: int = 256, decoder_filters: int = 256, low_level_filters: int = 48,
                  encoder_width: float = 1.0, activation: str = "relu", norm: str = "batch") -> DeepLabV3Plus:
    """DeepLab v3+; ``atrous_rates=None`` means (6, 12, 18) at output stride 16 and (12, 24, 36) at 8.

    ``encoder`` in resnet18 (DeepMIB's default), resnet50, resnet18_v2, resnet50_v2, mobilenet_v1,
    mobilenet_v2; ``encoder_width`` scales the encoder's channels (MobileNet's alpha).
    """
    return DeepLabV3Plus(in_channels, classes, encoder=encoder, output_stride=output_stride,
                         atrous_rates=atrous_rates, skips=skips, aspp_mode=aspp_mode, aspp_filters=aspp_filters,
                         decoder_filters=decoder_filters, low_level_filters=low_level_filters,
                         encoder_width=encoder_width, activation=activation, norm=norm)
