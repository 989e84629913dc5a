"""Backbone encoders for DeepLab v3+ and the encoder U-Net: ResNet v1/v2 and MobileNet v1/v2.

Every encoder maps ``(N, in_channels, H, W)`` to a list of feature maps, one per *stage*, at nominal
strides 2, 4, 8, 16, 32 (``Encoder.channels`` and ``Encoder.reductions`` say what each holds). With
``output_stride`` 8 or 16 the strides of the last stage(s) are replaced by dilation (atrous
convolution, Chen et al. 2017/2018), so the deeper maps stay at 1/8 or 1/16 of the input.

These are written from the papers, not ported: ResNet (He et al. 2016, "Deep residual learning"),
pre-activation ResNet v2 (He et al. 2016, "Identity mappings in deep residual networks"; used by the
fossil CT study, Yu et al. 2022 Table 2), MobileNet v1 (Howard et al. 2017, Table 1; the CT study's best
encoder: depthwise-separable conv + BatchNorm + ReLU, Fig 3B) and MobileNet v2 (Sandler et al. 2018,
Table 2). There are no pretrained weights: layers start from Kaiming init, so any ``in_channels`` works
and nothing is downloaded. ``width`` scales every channel count (for tiny test networks, or MobileNet's
width multiplier alpha).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..errors import InputError
from .layers import make_activation, make_norm

OUTPUT_STRIDES = (8, 16, 32)


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal convolutions (He et al. 2015), unit-scale norms, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.InstanceNorm2d, nn.InstanceNorm3d)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded, never below 4 (keeps tiny test networks valid)."""
    return max(4, int(round(channels * width)))


def cna(
    in_ch: int,
    out_ch: int,
    *,
    kernel: int = 3,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
    norm: str = "batch",
    activation: str | None = "relu",
) -> nn.Sequential:
    """Conv2d (same padding) -> norm -> activation; ``activation=None`` leaves it linear."""
    conv = nn.Conv2d(
        in_ch, out_ch, kernel, stride=stride, padding=dilation * (kernel // 2), dilation=dilation,
        groups=groups, bias=str(norm).lower() == "none",
    )
    layers: list[nn.Module] = [conv, make_norm(norm, out_ch, 2)]
    if activation is not None:
        layers.append(make_activation(activation))
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """A backbone as a sequence of stages; ``forward`` returns every stage's output.

    Attributes: ``channels`` (channels of each returned map), ``reductions`` (its actual downsampling
    factor: ``(2, 4, 8, 16, 32)`` without dilation, ``(2, 4, 8, 8, 8)`` at output stride 8).
    """

    def __init__(self, stages: list[nn.Module], channels: list[int], reductions: list[int]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.channels: tuple[int, ...] = tuple(channels)
        self.reductions: tuple[int, ...] = tuple(reductions)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class _StridePlan:
    """Decides stride and dilation per stage so the reduction never exceeds ``output_stride``.

    Once the target is reached, each further stage keeps stride 1 and doubles the dilation instead
    (DeepLab v3 Sec. 3.1). ``step()`` returns ``(stride, previous_dilation, dilation)``: a stage's first,
    downsampling layer uses the previous dilation so its receptive field lines up with the stage before.
    """

    def __init__(self, output_stride: int) -> None:
        if output_stride not in OUTPUT_STRIDES:
            raise InputError(f"output_stride={output_stride!r}: expected one of {OUTPUT_STRIDES}")
        self.output_stride = output_stride
        self.reduction = 1
        self.dilation = 1

    def step(self) -> tuple[int, int, int]:
        previous = self.dilation
        if self.reduction * 2 <= self.output_stride:
            self.reduction *= 2
            return 2, previous, previous
        self.dilation *= 2
        return 1, previous, self.dilation


def _check_stages(stages: int) -> int:
    if not 1 <= int(stages) <= 5:
        raise InputError(f"stages={stages!r}: an encoder has 1 to 5 stages (strides 2..32)")
    return int(stages)


# ----------------------------------------------------------------------------------------- ResNet v1/v2


class _Basic(nn.Module):
    """ResNet basic block: two 3x3 convolutions and an identity (or 1x1 projection) shortcut.

    ``preact`` selects the v2 ordering norm -> act -> conv (He et al. 2016b, Fig 1b/4e), where the
    sum is left un-activated so the identity path stays clean.
    """

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int, first_dilation: int, dilation: int,
                 norm: str, activation: str, preact: bool) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.preact = preact
        if preact:
            self.pre = nn.Sequential(make_norm(norm, in_ch, 2), make_activation(activation))
            self.body = nn.Sequential(
                nn.Conv2d(in_ch, width, 3, stride, first_dilation, first_dilation, bias=False),
                make_norm(norm, width, 2), make_activation(activation),
                nn.Conv2d(width, out_ch, 3, 1, dilation, dilation, bias=False),
            )
        else:
            self.body = nn.Sequential(
                cna(in_ch, width, stride=stride, dilation=first_dilation, norm=norm, activation=activation),
                cna(width, out_ch, dilation=dilation, norm=norm, activation=None),
            )
            self.act = make_activation(activation)
        self.shortcut = _shortcut(in_ch, out_ch, stride, norm, preact)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact:
            y = self.pre(x)
            # v2: the projection shortcut also sees the pre-activated input (He et al. 2016b Sec. 3.1)
            skip = x if isinstance(self.shortcut, nn.Identity) else self.shortcut(y)
            return self.body(y) + skip
        return self.act(self.body(x) + self.shortcut(x))


class _Bottleneck(_Basic):
    """ResNet bottleneck: 1x1 reduce, 3x3 (carries the stride, as in "ResNet v1.5"), 1x1 expand x4.

    Its single 3x3 conv uses ``first_dilation`` (equal to ``dilation`` except in a stage's first unit).
    """

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int, first_dilation: int, dilation: int,
                 norm: str, activation: str, preact: bool) -> None:
        nn.Module.__init__(self)
        out_ch = width * self.expansion
        self.preact = preact
        if preact:
            self.pre = nn.Sequential(make_norm(norm, in_ch, 2), make_activation(activation))
            self.body = nn.Sequential(
                nn.Conv2d(in_ch, width, 1, bias=False), make_norm(norm, width, 2), make_activation(activation),
                nn.Conv2d(width, width, 3, stride, first_dilation, first_dilation, bias=False),
                make_norm(norm, width, 2), make_activation(activation),
                nn.Conv2d(width, out_ch, 1, bias=False),
            )
        else:
            self.body = nn.Sequential(
                cna(in_ch, width, kernel=1, norm=norm, activation=activation),
                cna(width, width, stride=stride, dilation=first_dilation, norm=norm, activation=activation),
                cna(width, out_ch, kernel=1, norm=norm, activation=None),
            )
            self.act = make_activation(activation)
        self.shortcut = _shortcut(in_ch, out_ch, stride, norm, preact)


def _shortcut(in_ch: int, out_ch: int, stride: int, norm: str, preact: bool) -> nn.Module:
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    conv = nn.Conv2d(in_ch, out_ch, 1, stride, bias=preact or str(norm).lower() == "none")
    # v2 projections act on an already normalized input, so they carry no norm of their own
    return conv if preact else nn.Sequential(conv, make_norm(norm, out_ch, 2))


def _resnet(block: type[_Basic], layers: tuple[int, int, int, int], *, preact: bool, in_channels: int,
            output_stride: int, width: float, activation: str, norm: str, stages: int) -> Encoder:
    stages = _check_stages(stages)
    plan = _StridePlan(output_stride)
    base = scaled(64, width)
    stride, _, _ = plan.step()
    # stage 1 (stride 2): 7x7 stem. v2 leaves it linear; the first unit's pre-activation follows.
    stem: nn.Module = (
        nn.Conv2d(in_channels, base, 7, stride, 3, bias=False) if preact
        else cna(in_channels, base, kernel=7, stride=stride, norm=norm, activation=activation)
    )
    mods: list[nn.Module] = [stem]
    chans, reds = [base], [plan.reduction]
    in_ch = base
    for i, n_blocks in enumerate(layers[: stages - 1]):
        w = base * 2**i
        stride, first_d, d = plan.step()
        blocks: list[nn.Module] = []
        if i == 0:
            # stage 2 downsamples with the stem's max pooling; its blocks keep stride 1
            blocks.append(nn.MaxPool2d(3, stride, 1))
            stride = 1
        for b in range(n_blocks):
            blocks.append(block(in_ch, w, stride if b == 0 else 1, first_d if b == 0 else d, d,
                                norm, activation, preact))
            in_ch = w * block.expansion
        if preact and i == 3:
            # v2 needs a final norm + activation after the last unit (He et al. 2016b)
            blocks += [make_norm(norm, in_ch, 2), make_activation(activation)]
        mods.append(nn.Sequential(*blocks))
        chans.append(in_ch)
        reds.append(plan.reduction)
    return Encoder(mods, chans, reds)


def resnet18(*, in_channels: int = 1, output_stride: int = 32, width: float = 1.0, activation: str = "relu",
             norm: str = "batch", stages: int = 5) -> Encoder:
    """ResNet-18 (basic blocks 2-2-2-2); channels ``(64, 64, 128, 256, 512) * width``."""
    return _resnet(_Basic, (2, 2, 2, 2), preact=False, in_channels=in_channels, output_stride=output_stride,
                   width=width, activation=activation, norm=norm, stages=stages)


def resnet50(*, in_channels: int = 1, output_stride: int = 32, width: float = 1.0, activation: str = "relu",
             norm: str = "batch", stages: int = 5) -> Encoder:
    """ResNet-50 (bottlenecks 3-4-6-3); channels ``(64, 256, 512, 1024, 2048) * width``."""
    return _resnet(_Bottleneck, (3, 4, 6, 3), preact=False, in_channels=in_channels,
                   output_stride=output_stride, width=width, activation=activation, norm=norm, stages=stages)


def resnet18_v2(*, in_channels: int = 1, output_stride: int = 32, width: float = 1.0,
                activation: str = "relu", norm: str = "batch", stages: int = 5) -> Encoder:
    """Pre-activation ResNet-18 (v2); channels as :func:`resnet18`.

    Stages 1-4 return the un-normalized residual sums (v2 normalizes at the start of the next unit);
    stage 5 ends with norm + activation.
    """
    return _resnet(_Basic, (2, 2, 2, 2), preact=True, in_channels=in_channels, output_stride=output_stride,
                   width=width, activation=activation, norm=norm, stages=stages)


def resnet50_v2(*, in_channels: int = 1, output_stride: int = 32, width: float = 1.0,
                activation: str = "relu", norm: str = "batch", stages: int = 5) -> Encoder:
    """Pre-activation ResNet-50 (v2), the CT study's "ResNet_v2_50"; channels as :func:`resnet50`."""
    return _resnet(_Bottleneck, (3, 4, 6, 3), preact=True, in_channels=in_channels,
                   output_stride=output_stride, width=width, activation=activation, norm=norm, stages=stages)


# ------------------------------------------------------------------------------------------ MobileNets


def _separable(in_ch: int, out_ch: int, stride: int, dilation: int, norm: str, activation: str) -> nn.Sequential:
    """MobileNet v1 unit (Howard et al. 2017 Fig 3): 3x3 depthwise conv (groups == channels) -> norm ->
    act, then 1x1 pointwise conv -> norm -> act."""
    return nn.Sequential(
        cna(in_ch, in_ch, stride=stride, dilation=dilation, groups=in_ch, norm=norm, activation=activation),
        cna(in_ch, out_ch, kernel=1, norm=norm, activation=activation),
    )


def mobilenet_v1(*, in_channels: int = 1, output_stride: int = 32, width: float = 1.0,
                 activation: str = "relu", norm: str = "batch", stages: int = 5) -> Encoder:
    """MobileNet v1 (Howard et al. 2017 Table 1) with width multiplier ``width`` (alpha).

    Channels ``(64, 128, 256, 512, 1024) * width``; the 1x1 classifier and global pooling are dropped.
    """
    stages = _check_stages(stages)
    plan = _StridePlan(output_stride)
    c = lambda n: scaled(n, width)  # noqa: E731
    # per stage: (output channels of the strided unit, extra units at stride 1)
    layout = [(c(64), 0), (c(128), 1), (c(256), 1), (c(512), 5), (c(1024), 1)]
    mods: list[nn.Module] = []
    chans, reds = [], []
    in_ch = in_channels
    for s, (out_ch, extra) in enumerate(layout[:stages]):
        stride, first_d, d = plan.step()
        if s == 0:
            # full 3x3 conv with the stride, then a stride-1 separable unit 32 -> 64
            units = [cna(in_ch, c(32), stride=stride, norm=norm, activation=activation),
                     _separable(c(32), out_ch, 1, 1, norm, activation)]
        else:
            units = [_separable(in_ch, out_ch, stride, first_d, norm, activation)]
            units += [_separable(out_ch, out_ch, 1, d, norm, activation) for _ in range(extra)]
        mods.append(nn.Sequential(*units))
        in_ch = out_ch
        chans.append(out_ch)
        reds.append(plan.reduction)
    return Encoder(mods, chans, reds)


class _InvertedResidual(nn.Module):
    """MobileNet v2 unit (Sandler et al. 2018 Fig 3b/Table 1): 1x1 expand x t -> 3x3 depthwise ->
    linear 1x1 projection; identity shortcut when shape is kept. ``activation`` replaces ReLU6."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, dilation: int, expand: int,
                 norm: str, activation: str) -> None:
        super().__init__()
        hidden = in_ch * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(cna(in_ch, hidden, kernel=1, norm=norm, activation=activation))
        layers += [
            cna(hidden, hidden, stride=stride, dilation=dilation, groups=hidden, norm=norm, activation=activation),
            cna(hidden, out_ch, kernel=1, norm=norm, activation=None),  # linear bottleneck
        ]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


def mobilenet_v2(*, in_channels: int = 1, output_stride: int = 32, width: float = 1.0,
                 activation: str = "relu", norm: str = "batch", stages: int = 5) -> Encoder:
    """MobileNet v2 (Sandler et al. 2018 Table 2) without its final 1x1 conv to 1280.

    Channels ``(16, 24, 32, 96, 320) * width``; stage 4 holds the 64- and 96-channel groups (both at
    stride 16), stage 5 the 160- and 320-channel groups.
    """
    stages = _check_stages(stages)
    plan = _StridePlan(output_stride)
    c = lambda n: scaled(n, width)  # noqa: E731
    # per stage: groups of (expansion t, channels, repeats n); the first unit of a stage carries the stride
    layout = [
        [(1, 16, 1)],
        [(6, 24, 2)],
        [(6, 32, 3)],
        [(6, 64, 4), (6, 96, 3)],
        [(6, 160, 3), (6, 320, 1)],
    ]
    mods: list[nn.Module] = []
    chans, reds = [], []
    in_ch = in_channels
    for s, groups in enumerate(layout[:stages]):
        stride, first_d, d = plan.step()
        units: list[nn.Module] = []
        if s == 0:
            units.append(cna(in_ch, c(32), stride=stride, norm=norm, activation=activation))
            in_ch, stride = c(32), 1
        first = True
        for t, ch, n in groups:
            for _ in range(n):
                units.append(_InvertedResidual(in_ch, c(ch), stride if first else 1, first_d if first else d,
                                               t, norm, activation))
                in_ch, first = c(ch), False
        mods.append(nn.Sequential(*units))
        chans.append(in_ch)
        reds.append(plan.reduction)
    return Encoder(mods, chans, reds)


ENCODERS: dict[str, Callable[..., Encoder]] = {
    "resnet18": resnet18,
    "resnet50": resnet50,
    "resnet18_v2": resnet18_v2,
    "resnet50_v2": resnet50_v2,
    "mobilenet_v1": mobilenet_v1,
    "mobilenet_v2": mobilenet_v2,
}


def build_encoder(name: str, **options: object) -> Encoder:
    """Encoder ``name`` (one of :data:`ENCODERS`) with keyword ``options`` (in_channels, output_stride,
    width, activation, norm, stages)."""
    try:
        factory = ENCODERS[str(name)]
    except KeyError:
        raise InputError(f"encoder {name!r} is not one of {sorted(ENCODERS)}") from None
    return factory(**options)
