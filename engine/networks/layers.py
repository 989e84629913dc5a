"""Building blocks shared by the network families: N-d convolutions, activations, normalizations."""

from __future__ import annotations

from typing import Sequence

from torch import nn

from ..errors import InputError

ACTIVATIONS = ("relu", "leaky_relu", "clipped_relu", "elu", "swish", "silu", "tanh")
NORMS = ("batch", "instance", "group", "none")


def make_activation(name: str) -> nn.Module:
    """Activation by name (DeepMIB's set): relu, leaky_relu (slope 0.01), clipped_relu (ceiling 10),
    elu, swish/silu, tanh."""
    key = str(name).lower().replace("-", "_")
    if key == "relu":
        return nn.ReLU(inplace=True)
    if key in ("leaky_relu", "leakyrelu"):
        return nn.LeakyReLU(0.01, inplace=True)
    if key in ("clipped_relu", "clippedrelu"):
        return nn.Hardtanh(0.0, 10.0, inplace=True)
    if key == "elu":
        return nn.ELU(inplace=True)
    if key in ("swish", "silu"):
        return nn.SiLU(inplace=True)
    if key == "tanh":
        return nn.Tanh()
    raise InputError(f"activation {name!r} is not one of {ACTIVATIONS}")


def make_norm(kind: str, channels: int, spatial_dims: int) -> nn.Module:
    """Normalization layer: batch, instance (affine), group (8 groups or fewer) or none."""
    key = str(kind).lower()
    if key == "batch":
        return (nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d)(channels)
    if key == "instance":
        return (nn.InstanceNorm2d if spatial_dims == 2 else nn.InstanceNorm3d)(channels, affine=True)
    if key == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if key == "none":
        return nn.Identity()
    raise InputError(f"norm {kind!r} is not one of {NORMS}")


def conv_class(spatial_dims: int) -> type[nn.Module]:
    return {2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]


def conv_transpose_class(spatial_dims: int) -> type[nn.Module]:
    return {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[spatial_dims]


def max_pool_class(spatial_dims: int) -> type[nn.Module]:
    return {2: nn.MaxPool2d, 3: nn.MaxPool3d}[spatial_dims]


def as_tuple(value: int | Sequence[int], n: int, what: str) -> tuple[int, ...]:
    """Broadcast an int to an n-tuple, or check a sequence has n entries."""
    if isinstance(value, int):
        return (value,) * n
    values = tuple(int(v) for v in value)
    if len(values) != n:
        raise InputError(f"{what}={value!r}: expected an int or {n} ints")
    return values


def conv_norm_act(
    in_ch: int,
    out_ch: int,
    spatial_dims: int,
    *,
    kernel: int | Sequence[int] = 3,
    padding: str = "same",
    norm: str = "batch",
    activation: str = "relu",
    dilation: int = 1,
    groups: int = 1,
) -> nn.Sequential:
    """Convolution -> normalization -> activation. ``padding`` is "same" or "valid"."""
    if padding not in ("same", "valid"):
        raise InputError(f"padding={padding!r}: expected 'same' or 'valid'")
    k = as_tuple(kernel, spatial_dims, "kernel")
    pad = tuple(dilation * (s // 2) for s in k) if padding == "same" else 0
    conv = conv_class(spatial_dims)(
        in_ch, out_ch, k, padding=pad, dilation=dilation, groups=groups, bias=(str(norm).lower() == "none")
    )
    return nn.Sequential(conv, make_norm(norm, out_ch, spatial_dims), make_activation(activation))
