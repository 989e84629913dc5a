"""U-Nets: 2D, 3D and 3D-anisotropic (DeepMIB's "3D U-Net Anisotropic", S1 Fig), one configurable class.

Layout (``depth`` = number of down-samplings, DeepMIB's encoder depth)::

    level 0 ... depth-1:  two conv-norm-act, max-pool      (encoders.<i>, downsamplers.<i>)
    level depth:          two conv-norm-act, dropout        (bottleneck)
    level depth-1 ... 0:  up-sample, concat skip, two conv  (decoders.<i>)
    head:                 1x1 convolution to class logits

``stem="strided"`` makes the full-resolution level cheap (like MONAI's UNet): no convolutions before the
first down-sampling, which is a strided convolution (kernel = stride = the pool factor) straight from the
input; the skip at full resolution is the input itself and the top decoder has one convolution instead of
two. About 3.5x fewer operations at full resolution, where a U-Net spends most of its time.

Filters are ``filters * 2**level`` capped at ``max_filters``. Spatial axes are ``(Y, X)`` in 2D and
``(Z, Y, X)`` in 3D. Shape rules, per axis, with ``P`` = the product of the pool factors along it
(``2**depth``; ``2**(depth-1)`` along Z for ``unet3d_aniso``):

* ``padding="same"``: every size must be a multiple of ``P``; the output has the input's size.
* ``padding="valid"``: accepted sizes are ``A + P*s`` for ``s >= s_min``, where ``A`` collects the
  convolution losses of the encoder; :meth:`UNet.output_shape` gives the exact (smaller) output size and
  :meth:`UNet.valid_input_shape` the smallest accepted size >= a requested one.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import InputError
from .base import SegmentationNetwork
from .layers import (
    ACTIVATIONS,
    NORMS,
    conv_class,
    conv_norm_act,
    conv_transpose_class,
    make_activation,
    make_norm,
    max_pool_class,
)
from .registry import register_network

UPSAMPLE_MODES = ("transpose", "linear")
STEMS = ("double", "strided")


def _check_int(value: Any, what: str, minimum: int) -> int:
    # bool is an int subclass; "depth=True" is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{what}={value!r}: expected an integer >= {minimum}")
    return value


def _centre_crop(x: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    """Crop the trailing spatial axes of ``x`` to ``spatial``, centred (valid padding skips)."""
    if tuple(x.shape[2:]) == tuple(spatial):
        return x
    index = [slice(None), slice(None)]
    for have, want in zip(x.shape[2:], spatial):
        start = (have - want) // 2
        index.append(slice(start, start + want))
    return x[tuple(index)]


class DoubleConv(nn.Module):
    """Two conv-norm-act layers: one U-Net level."""

    def __init__(self, in_ch: int, out_ch: int, spatial_dims: int, kernel: tuple[int, ...], **kw: Any) -> None:
        super().__init__()
        self.conv1 = conv_norm_act(in_ch, out_ch, spatial_dims, kernel=kernel, **kw)
        self.conv2 = conv_norm_act(out_ch, out_ch, spatial_dims, kernel=kernel, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class UpBlock(nn.Module):
    """Up-sample, concatenate the (centre-cropped) skip connection, two conv-norm-act layers."""

    def __init__(
        self,
        in_ch: int,
        skip_ch: int,
        out_ch: int,
        spatial_dims: int,
        *,
        kernel: tuple[int, ...],
        scale: tuple[int, ...],
        upsample: str,
        convs: int = 2,
        **kw: Any,
    ) -> None:
        super().__init__()
        # A bias here only shifts channels that the next convolution's normalisation removes again.
        bias = str(kw.get("norm", "batch")).lower() == "none"
        if upsample == "transpose":
            # kernel == stride: every output voxel comes from exactly one input voxel, no checkerboard.
            self.up: nn.Module = conv_transpose_class(spatial_dims)(in_ch, out_ch, scale, stride=scale, bias=bias)
        else:
            mode = "bilinear" if spatial_dims == 2 else "trilinear"
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=scale, mode=mode, align_corners=False),
                conv_class(spatial_dims)(in_ch, out_ch, 1, bias=bias),
            )
        self.conv: nn.Module = (DoubleConv(skip_ch + out_ch, out_ch, spatial_dims, kernel, **kw) if convs == 2
                                else conv_norm_act(skip_ch + out_ch, out_ch, spatial_dims, kernel=kernel, **kw))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        skip = _centre_crop(skip, x.shape[2:])
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(SegmentationNetwork):
    """A 2D/3D U-Net with per-level kernels and pooling factors (for the anisotropic variant).

    Use the registered builders (``unet2d``, ``unet3d``, ``unet3d_aniso``) through
    :func:`engine.networks.build` rather than this class directly.
    """

    channels_last_is_fast = True  # engine.precision.channels_last: oneDNN/cuDNN's fast layout for these layers

    def __init__(
        self,
        *,
        spatial_dims: int,
        in_channels: int,
        classes: int,
        depth: int,
        filters: int,
        max_filters: int,
        filter_size: int,
        padding: str,
        activation: str,
        norm: str,
        dropout: float,
        upsample: str,
        anisotropic: bool = False,
        stem: str = "double",
    ) -> None:
        super().__init__()
        depth = _check_int(depth, "depth", 1)
        filters = _check_int(filters, "filters", 1)
        max_filters = _check_int(max_filters, "max_filters", 1)
        if max_filters < filters:
            raise InputError(f"max_filters={max_filters} is smaller than filters={filters}")
        filter_size = _check_int(filter_size, "filter_size", 1)
        if filter_size % 2 == 0:
            # An even kernel has no centre: 'same' padding would shift the output by half a voxel.
            raise InputError(f"filter_size={filter_size}: expected an odd integer (1, 3, 5, ...)")
        if padding not in ("same", "valid"):
            raise InputError(f"padding={padding!r}: expected 'same' or 'valid'")
        if upsample not in UPSAMPLE_MODES:
            raise InputError(f"upsample={upsample!r}: expected one of {UPSAMPLE_MODES}")
        if stem not in STEMS:
            raise InputError(f"stem={stem!r}: expected one of {STEMS}")
        if stem == "strided" and padding == "valid":
            raise InputError("stem='strided' works with padding='same' only; use stem='double' for valid padding")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise InputError(f"dropout={dropout!r}: expected a number in [0, 1)")
        make_activation(activation)  # validate early: the error lists the accepted names
        make_norm(norm, 8, spatial_dims)
        if anisotropic and spatial_dims != 3:
            raise InputError("the anisotropic U-Net is 3D only")

        self.spatial_dims = spatial_dims
        self.padding = padding
        self.depth = depth
        self.in_channels = in_channels
        self.classes = classes
        self.stem = stem
        self._activation = str(activation)

        # Per-level geometry. Anisotropic: level 0 works in-plane only (Z voxels are ~2x larger).
        k, n = filter_size, spatial_dims
        self.kernels: list[tuple[int, ...]] = [(k,) * n for _ in range(depth + 1)]
        self.pools: list[tuple[int, ...]] = [(2,) * n for _ in range(depth)]
        if anisotropic:
            self.kernels[0] = (1, k, k)
            self.pools[0] = (1, 2, 2)
        self.level_filters = [min(filters * 2**i, max_filters) for i in range(depth + 1)]

        kw = dict(padding=padding, norm=norm, activation=activation)
        f = self.level_filters
        self.encoders = nn.ModuleList(
            DoubleConv(in_channels if i == 0 else f[i - 1], f[i], n, self.kernels[i], **kw) for i in range(depth)
        )
        self.downsamplers = nn.ModuleList(max_pool_class(n)(p, stride=p) for p in self.pools)
        skip_channels = list(f[:depth])
        if stem == "strided":  # level 0: the input is the skip; a strided convolution goes down
            self.encoders[0] = nn.Identity()
            self.downsamplers[0] = self._strided_stem(in_channels, f[0], self.pools[0], norm, activation)
            skip_channels[0] = in_channels
        self.bottleneck = DoubleConv(f[depth - 1], f[depth], n, self.kernels[depth], **kw)
        self.dropout = nn.Dropout(float(dropout)) if dropout > 0 else nn.Identity()
        self.decoders = nn.ModuleList(
            UpBlock(f[i + 1], skip_channels[i], f[i], n, kernel=self.kernels[i], scale=self.pools[i],
                    upsample=upsample, convs=1 if (stem == "strided" and i == 0) else 2, **kw)
            for i in range(depth)
        )
        self.head = conv_class(n)(f[0], classes, 1)
        self._init_weights()

    def _strided_stem(self, in_ch: int, out_ch: int, pool: tuple[int, ...], norm: str, activation: str) -> nn.Module:
        conv = conv_class(self.spatial_dims)(in_ch, out_ch, pool, stride=pool, bias=(str(norm).lower() == "none"))
        return nn.Sequential(conv, make_norm(norm, out_ch, self.spatial_dims), make_activation(activation))

    # ----------------------------------------------------------------------------------------- init
    def _init_weights(self) -> None:
        key = self._activation.lower().replace("-", "_")
        if key in ("leaky_relu", "leakyrelu"):
            gain = nn.init.calculate_gain("leaky_relu", 0.01)
        elif key == "tanh":
            gain = nn.init.calculate_gain("tanh")
        else:  # relu, clipped relu, elu, swish: the ReLU gain is the usual choice
            gain = nn.init.calculate_gain("relu")
        linear = {self.head}
        for dec in self.decoders:
            linear.update(dec.up.modules())  # up-sampling is not followed by an activation
        for m in self.modules():
            if isinstance(m, (nn.ConvTranspose2d, nn.ConvTranspose3d)):
                # stride == kernel: each output sees in_channels inputs (PyTorch's fan_in would not).
                nn.init.normal_(m.weight, 0.0, 1.0 / math.sqrt(m.in_channels))
            elif isinstance(m, (nn.Conv2d, nn.Conv3d)):
                # Kaiming (He) normal, fan-in: keeps the activation variance across levels.
                fan_in = m.in_channels * math.prod(m.kernel_size)
                g = 1.0 if m in linear else gain
                nn.init.normal_(m.weight, 0.0, g / math.sqrt(fan_in))
            else:
                continue
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    # ---------------------------------------------------------------------------------- shape rules
    def _axis_terms(self, axis: int) -> tuple[list[int], list[int]]:
        """Per level: voxels lost by its two convolutions, and its pool factor, along ``axis``."""
        losses = [2 * (k[axis] - 1) if self.padding == "valid" else 0 for k in self.kernels]
        return losses, [p[axis] for p in self.pools]

    def _decode(self, axis: int, bottom: int) -> int:
        """Output size along ``axis`` when the bottleneck receives ``bottom`` voxels (<1: invalid)."""
        losses, pools = self._axis_terms(axis)
        size = bottom - losses[self.depth]
        if size < 1:
            return size
        for i in reversed(range(self.depth)):
            size = size * pools[i] - losses[i]
            if size < 1:
                return size
        return size

    def _axis_rule(self, axis: int) -> tuple[int, int, int]:
        """``(A, P, s_min)``: accepted sizes along ``axis`` are ``A + P*s`` for ``s >= s_min``."""
        losses, pools = self._axis_terms(axis)
        offset, step = 0, 1
        for i in range(self.depth):
            offset += losses[i] * step
            step *= pools[i]
        s_min = 1
        while self._decode(axis, s_min) < 1:
            s_min += 1
        return offset, step, s_min

    def valid_input_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The smallest spatial shape >= ``shape`` (per axis) that this U-Net accepts."""
        shape = tuple(int(s) for s in shape)
        if len(shape) != self.spatial_dims:
            raise InputError(f"{self.name} is a {self.spatial_dims}D network but got a spatial shape {shape}")
        out = []
        for axis, size in enumerate(shape):
            offset, step, s_min = self._axis_rule(axis)
            s = max(s_min, -(-(size - offset) // step))
            out.append(offset + step * s)
        return tuple(out)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Spatial output shape; raises InputError (naming the shape to pad to) for a rejected input."""
        input_shape = tuple(int(s) for s in input_shape)
        self.check_input_shape(input_shape)
        out = []
        for axis, size in enumerate(input_shape):
            offset, step, _ = self._axis_rule(axis)
            out.append(self._decode(axis, (size - offset) // step))
        return tuple(out)

    # ------------------------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise InputError(
                f"{self.name} expects a tensor (N, {self.in_channels}, {', '.join('ZYX'[-self.spatial_dims:])}), "
                f"got shape {tuple(x.shape)}"
            )
        self.check_input_shape(x.shape[2:])
        skips = []
        for encode, down in zip(self.encoders, self.downsamplers):
            x = encode(x)
            skips.append(x)
            x = down(x)
        x = self.dropout(self.bottleneck(x))
        for i in reversed(range(self.depth)):
            x = self.decoders[i](x, skips[i])
        return self.head(x)


def _unet(spatial_dims: int, anisotropic: bool, **kw: Any) -> UNet:
    return UNet(spatial_dims=spatial_dims, anisotropic=anisotropic, **kw)


@register_network(
    "unet2d",
    spatial_dims=2,
    description="2D U-Net (DeepMIB's U-Net): depth down-samplings, filters doubling per level up to 512",
)
def unet2d(
    *,
    in_channels: int,
    classes: int,
    depth: int = 3,
    filters: int = 32,
    max_filters: int = 512,
    filter_size: int = 3,
    padding: str = "same",
    activation: str = "relu",
    norm: str = "batch",
    dropout: float = 0.0,
    upsample: str = "transpose",
    stem: str = "double",
) -> UNet:
    """2D U-Net. Same padding: H and W multiples of ``2**depth``."""
    return _unet(2, False, **locals())


@register_network(
    "unet3d",
    spatial_dims=3,
    description="3D U-Net: 3x3x3 convolutions, 2x2x2 pooling, filters doubling per level up to 320",
)
def unet3d(
    *,
    in_channels: int,
    classes: int,
    depth: int = 3,
    filters: int = 32,
    max_filters: int = 320,
    filter_size: int = 3,
    padding: str = "same",
    activation: str = "relu",
    norm: str = "batch",
    dropout: float = 0.0,
    upsample: str = "transpose",
    stem: str = "double",
) -> UNet:
    """3D U-Net. Same padding: Z, Y and X multiples of ``2**depth``."""
    return _unet(3, False, **locals())


@register_network(
    "unet3d_aniso",
    spatial_dims=3,
    description="3D U-Net for anisotropic voxels (Z ~2x XY): in-plane (1,3,3) convolutions and (1,2,2) "
    "pooling at the top level",
)
def unet3d_aniso(
    *,
    in_channels: int,
    classes: int,
    depth: int = 3,
    filters: int = 32,
    max_filters: int = 320,
    filter_size: int = 3,
    padding: str = "same",
    activation: str = "relu",
    norm: str = "batch",
    dropout: float = 0.0,
    upsample: str = "transpose",
    stem: str = "double",
) -> UNet:
    """Anisotropic 3D U-Net. Same padding: Z a multiple of ``2**(depth-1)``, Y and X of ``2**depth``."""
    return _unet(3, True, **locals())


__all__ = ["UNet", "unet2d", "unet3d", "unet3d_aniso", "ACTIVATIONS", "NORMS", "UPSAMPLE_MODES", "STEMS"]
