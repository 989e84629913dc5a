"""Architecture analysis for ``deepseg info``: parameter count, receptive field, summary.

The receptive field is *measured*, not derived from a formula, so it holds for every network family:
the gradient of the centre output voxel is back-propagated to the input and the extent of the
non-zero gradient is read off. It is measured on a surrogate of the network (a copy; the original is
untouched) that keeps the geometry - kernel sizes, strides, dilations, pooling, up-sampling, skips -
but makes the result exact and cheap:

* activations become identities, max-pooling becomes average pooling and all weights become positive,
  so no ReLU dead zone, max-pool arg-max or cancellation can hide part of the field (max-pooling whose
  indices feed an unpooling layer is kept; the field is then the union over several random inputs);
* normalisation layers become identities: instance/group norm statistics span the whole input, which
  would make every network look "global", whereas tiling and padding need the local field;
* convolutions get one output channel each (when the network still runs that way), so the cost is a
  fraction of one forward pass of the real network.

With "same" padding, each axis is measured on an input that is long along that axis only; it is doubled
while the field touches the input's border (zero padding would cut the field off). With "valid" padding
(no zero padding anywhere, as the ``padding`` attribute promises) one pass on the smallest input is exact. Networks with global pooling (or a field that never stops growing) report
the input size they were measured on, flagged with ``is_global``.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import InputError

_ACTIVATION_TYPES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.Hardtanh, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Hardswish, nn.Hardsigmoid, nn.Softmax,
)
_NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm,
    nn.LocalResponseNorm, nn.Dropout, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
)
_GLOBAL_POOL_TYPES = (
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)
_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T_TYPES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
#: growth stops here (per axis); a field still touching the border is then reported as global
_MAX_AXIS = {2: 8192, 3: 2048}
_DOUBLE_MAX_VOXELS = 2**20


class ReceptiveField(tuple):
    """A tuple of per-axis sizes, with ``is_global`` set when the field covers the whole input."""

    is_global: bool

    def __new__(cls, sizes: Sequence[int], is_global: bool = False) -> "ReceptiveField":
        obj = super().__new__(cls, (int(s) for s in sizes))
        obj.is_global = bool(is_global)
        return obj

    def __repr__(self) -> str:
        return f"ReceptiveField({tuple(self)}, is_global={self.is_global})"


def parameter_count(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (elements) of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def layer_count(model: nn.Module) -> int:
    """Number of weighted layers (convolutions, transposed convolutions, linear layers)."""
    return sum(isinstance(m, (*_CONV_TYPES, *_CONV_T_TYPES, nn.Linear)) for m in model.modules())


def _spatial_dims(model: nn.Module) -> int:
    dims = getattr(model, "spatial_dims", None)
    if dims not in (2, 3) or not hasattr(model, "valid_input_shape"):
        raise InputError(f"{type(model).__name__} is not a deepseg SegmentationNetwork (no spatial_dims / valid_input_shape)")
    return int(dims)


def _linearised(model: nn.Module, one_channel: bool) -> nn.Module:
    """A geometry-preserving copy of ``model`` (see the module docstring)."""
    surrogate = copy.deepcopy(model).cpu().eval()

    def replace(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            new: nn.Module | None = None
            if isinstance(child, _ACTIVATION_TYPES) or isinstance(child, _NORM_TYPES):
                new = nn.Identity()
            elif isinstance(child, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)) and not child.return_indices:
                dilation = child.dilation if isinstance(child.dilation, tuple) else (child.dilation,)
                if all(d == 1 for d in dilation):  # average pooling has no dilation
                    avg = {nn.MaxPool1d: nn.AvgPool1d, nn.MaxPool2d: nn.AvgPool2d, nn.MaxPool3d: nn.AvgPool3d}
                    new = avg[type(child)](child.kernel_size, child.stride, child.padding, child.ceil_mode)
            elif one_channel and isinstance(child, _CONV_TYPES):
                lazy = {nn.Conv1d: nn.LazyConv1d, nn.Conv2d: nn.LazyConv2d, nn.Conv3d: nn.LazyConv3d}[type(child)]
                new = lazy(1, child.kernel_size, child.stride, child.padding, child.dilation, 1, False,
                           child.padding_mode)
            elif one_channel and isinstance(child, _CONV_T_TYPES):
                lazy = {nn.ConvTranspose1d: nn.LazyConvTranspose1d, nn.ConvTranspose2d: nn.LazyConvTranspose2d,
                        nn.ConvTranspose3d: nn.LazyConvTranspose3d}[type(child)]
                new = lazy(1, child.kernel_size, child.stride, child.padding, child.output_padding, 1, False,
                           child.dilation)
            if new is not None:
                setattr(parent, name, new)
            else:
                replace(child)

    replace(surrogate)
    return surrogate


def _make_positive(model: nn.Module) -> None:
    """Positive weights scaled by 1/fan-in: every path contributes, values stay O(1)."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.copy_((0.5 + torch.rand(p.shape, generator=gen, dtype=p.dtype)) / math.prod(p.shape[1:]))
            else:
                p.zero_()


def _input_channels(model: nn.Module) -> int:
    # 2.5D networks read ``in_channels`` channels of ``z_context`` slices each.
    return int(getattr(model, "in_channels", 1)) * int(getattr(model, "z_context", 1))


def _surrogate(model: nn.Module, probe_shape: tuple[int, ...]) -> nn.Module:
    channels = _input_channels(model)
    for one_channel in (True, False):
        surrogate = _linearised(model, one_channel)
        try:
            with torch.no_grad():  # materialises the lazy layers
                surrogate(torch.rand(1, channels, *probe_shape))
        except Exception:
            if one_channel:  # e.g. a forward that splits channels by count: use all channels
                continue
            raise
        _make_positive(surrogate)
        return surrogate
    raise AssertionError("unreachable")  # pragma: no cover


def _data_dependent(model: nn.Module) -> bool:
    """Whether gradients follow arg-maxes that the surrogate keeps (max-pooling indices for unpooling)."""
    return any(
        isinstance(m, (nn.MaxUnpool1d, nn.MaxUnpool2d, nn.MaxUnpool3d))
        or (isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)) and m.return_indices)
        for m in model.modules()
    )


def _measure(surrogate: nn.Module, shape: tuple[int, ...], channels: int) -> tuple[list[int], list[bool]]:
    """Per axis: extent of the centre output voxel's field, and whether it touches the input border."""
    # Double precision when cheap; float32 (3x faster here) still resolves the ~1e-10 edge gradients.
    dtype = torch.float64 if math.prod(shape) <= _DOUBLE_MAX_VOXELS else torch.float32
    surrogate.to(dtype)
    # Where gradients follow arg-maxes, the union over several random inputs approaches the full field.
    batch = 8 if _data_dependent(surrogate) else 1
    gen = torch.Generator().manual_seed(0)  # the same answer every time, also for arg-max networks
    x = torch.rand(batch, channels, *shape, dtype=dtype, generator=gen).requires_grad_(True)
    out = surrogate(x)
    centre = tuple(s // 2 for s in out.shape[2:])
    out[(slice(None), slice(None), *centre)].sum().backward()
    grad = x.grad.abs().sum(dim=(0, 1))
    extents, touches = [], []
    for axis in range(grad.ndim):
        other = tuple(d for d in range(grad.ndim) if d != axis)
        profile = grad.sum(dim=other) if other else grad
        nonzero = torch.nonzero(profile > 0).flatten()
        if nonzero.numel() == 0:  # pragma: no cover - an output that ignores its input
            extents.append(0)
            touches.append(False)
            continue
        first, last = int(nonzero[0]), int(nonzero[-1])
        extents.append(last - first + 1)
        touches.append(first == 0 or last == shape[axis] - 1)
    return extents, touches


def receptive_field(model: nn.Module, spatial_shape: Sequence[int] | None = None) -> ReceptiveField:
    """Per-axis receptive field (in input voxels) of the centre output voxel of ``model``.

    ``spatial_shape`` is the input shape to start from (default: the smallest accepted shape >= 16 per
    axis); axes are grown while the field touches the input's border. The result is a tuple of ints;
    ``result.is_global`` is True for networks whose output depends on the whole input (global
    pooling), and the sizes are then the input shape measured.
    """
    dims = _spatial_dims(model)
    start = tuple(spatial_shape) if spatial_shape is not None else (16,) * dims
    if len(start) != dims:
        raise InputError(f"spatial_shape={tuple(start)}: expected {dims} sizes")
    base = tuple(model.valid_input_shape(start))
    if any(isinstance(m, _GLOBAL_POOL_TYPES) for m in model.modules()):
        return ReceptiveField(base, is_global=True)
    channels = _input_channels(model)
    surrogate = _surrogate(model, base)
    if getattr(model, "padding", "same") == "valid":
        # Without zero padding, an output voxel's field cannot be cut off by the border, and it does not
        # change with the input size (crop offsets are size-independent): one pass on ``base`` is exact.
        return ReceptiveField(_measure(surrogate, base, channels)[0])
    sizes: list[int] = []
    for axis in range(dims):
        # Long along ``axis`` only (thin elsewhere): a path along one axis needs no room in the others.
        grown = list(base)
        grown[axis] *= 2
        shape = tuple(model.valid_input_shape(grown))
        while True:
            extents, touches = _measure(surrogate, shape, channels)
            if not touches[axis]:
                sizes.append(extents[axis])
                break
            if shape[axis] * 2 > _MAX_AXIS[dims]:
                return ReceptiveField(shape, is_global=True)
            grown = list(shape)
            grown[axis] *= 2
            shape = tuple(model.valid_input_shape(grown))
    return ReceptiveField(sizes)


def summarize(model: nn.Module) -> dict[str, Any]:
    """JSON-ready architecture summary (for ``deepseg info``).

    Keys: network, spatial_dims, padding, in_channels, classes, options, parameters, layers,
    receptive_field (list of ints), receptive_field_global (bool).
    """
    info: dict[str, Any] = model.describe() if hasattr(model, "describe") else {"network": type(model).__name__}
    info["parameters"] = parameter_count(model)
    info["layers"] = layer_count(model)
    rf = receptive_field(model)
    info["receptive_field"] = list(rf)
    info["receptive_field_global"] = rf.is_global
    return info


__all__ = ["ReceptiveField", "parameter_count", "layer_count", "receptive_field", "summarize"]
