"""Activations explorer (DeepMIB's "Activations Explorer"): what each layer of a network responds to.

:func:`image_activations` takes the input patch from an image the way the network saw its training
patches (normalization, patch size, the centre plane and its z-context for 2D and 2.5D networks) and
returns the feature maps of one layer; :func:`montage` and :func:`save_activations` show and save them.

>>> from engine.networks import build
>>> net = build("unet2d", depth=1, filters=4)
>>> "encoders.0.conv1" in list_layers(net)
True
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .errors import InputError

if TYPE_CHECKING:
    import xarray as xr

    from .model_files import LoadedModel

# Leaves whose output is a feature map of their own. Norm/activation/dropout leaves are left out: inside
# a conv-norm-act block their output is the block's output, which is listed.
_FEATURE_LEAVES = (
    nn.modules.conv._ConvNd,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._MaxUnpoolNd,
    nn.Upsample,
)
_CONTAINERS = (nn.ModuleList, nn.ModuleDict)


class _Captured(Exception):
    """Stops the forward pass once the requested layer has run (nothing after it is needed)."""


def list_layers(model: nn.Module) -> list[str]:
    """Names of the modules of ``model`` that produce feature maps: convolutions, pooling, up-sampling and
    blocks (any module with children), in registration order."""
    names = []
    for name, module in model.named_modules():
        if not name or isinstance(module, _CONTAINERS):
            continue
        if isinstance(module, _FEATURE_LEAVES) or next(module.children(), None) is not None:
            names.append(name)
    return names


def _find_layer(model: nn.Module, layer: str) -> nn.Module:
    layers = list_layers(model)
    if layer in layers:
        return model.get_submodule(layer)
    close = difflib.get_close_matches(str(layer), layers, n=5, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    shown = ", ".join(layers[:12]) + (f", ... ({len(layers)} in all)" if len(layers) > 12 else "")
    raise InputError(f"unknown layer {layer!r}.{hint} Layers: {shown}")


def layer_activations(model: nn.Module, patch: np.ndarray, layer: str) -> np.ndarray:
    """Feature maps ``(F, *spatial_out)`` (float32) of ``layer`` for one ``patch`` ``(C, *spatial)``.

    A layer that returns several tensors (e.g. an encoder's list of stages) gives its first one.

    The network runs in eval mode (its mode is restored afterwards) on the device of its parameters; the
    patch must have the network's channel count and an accepted spatial shape (the error names the shape
    to pad to). Unknown layer names raise InputError listing close matches.
    """
    module = _find_layer(model, layer)
    patch = np.asarray(patch)
    dims = getattr(model, "spatial_dims", patch.ndim - 1)
    channels = getattr(model, "in_channels", None)
    if channels is not None:  # 2.5D networks read in_channels x z_context stacked slices
        channels = int(channels) * int(getattr(model, "z_context", 1))
    if patch.ndim != dims + 1 or (channels is not None and patch.shape[0] != channels):
        c = channels if channels is not None else "C"
        raise InputError(
            f"patch of shape {patch.shape}: expected ({c}, {', '.join('ZYX'[-dims:])}) for a {dims}D network"
        )
    if hasattr(model, "check_input_shape"):
        model.check_input_shape(patch.shape[1:])
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.as_tensor(patch.astype(np.float32, copy=False)).to(device=device, dtype=dtype)[None]

    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, _args: object, output: object) -> None:
        out = output[0] if isinstance(output, (tuple, list)) else output
        # Clone: an in-place activation after this layer would otherwise change what we return.
        captured.append(out.detach().clone())
        raise _Captured

    handle = module.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    except _Captured:
        pass
    finally:
        handle.remove()
        model.train(was_training)
    if not captured:
        raise InputError(f"layer {layer!r} is not used in the forward pass of {type(model).__name__}")
    features = captured[0]
    if features.ndim < 3:
        raise InputError(f"layer {layer!r} outputs shape {tuple(features.shape)}, not feature maps")
    return features[0].float().cpu().numpy()


def _centre_position(centre: Sequence[int] | Mapping[str, int] | None, dims: Sequence[str],
                     shape: Sequence[int]) -> list[int]:
    """``centre`` as one pixel index per spatial dim of the image (default: the middle of each axis)."""
    from .axes import DIM_TO_LETTER, LETTER_TO_DIM

    letters = "".join(DIM_TO_LETTER[d] for d in dims)
    if centre is None:
        given: dict[str, object] = {}
    elif isinstance(centre, Mapping):
        given = {}
        for key, value in centre.items():
            dim = LETTER_TO_DIM.get(str(key).upper(), str(key))
            if dim not in dims:
                raise InputError(f"centre names axis {key!r}; the image's spatial axes are {letters}")
            given[dim] = value
    else:
        values = np.asarray(centre).reshape(-1).tolist()
        if len(values) != len(dims):
            raise InputError(f"centre={values}: expected {len(dims)} positions, one per axis {letters}")
        given = dict(zip(dims, values))
    position = []
    for dim, size in zip(dims, shape):
        value = given.get(dim, size // 2)
        value = value.item() if isinstance(value, np.generic) else value
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < size:
            raise InputError(
                f"centre {DIM_TO_LETTER[dim]}={value!r} is not a pixel of the image: expected an integer "
                f"in [0, {size - 1}]"
            )
        position.append(int(value))
    return position


def input_patch(
    model: "LoadedModel | str | Path",
    image: "xr.DataArray | np.ndarray",
    *,
    axes: str | None = None,
    centre: Sequence[int] | Mapping[str, int] | None = None,
    device: str | None = "cpu",
) -> np.ndarray:
    """The normalised network input ``(C, *patch)`` (float32) that :func:`image_activations` uses.

    The patch has the model's training patch size and is centred on ``centre``, shifted to stay inside
    the image where it fits (parts beyond a smaller image are mirrored, as in training). A 2D network
    on a stack reads the plane at ``centre``'s Z; a 2.5D (``z2c_*``) network that plane and its
    ``z_context`` neighbours stacked as channels. Normalization uses the whole image's statistics where
    the method needs them, as prediction does.

    ``centre`` is one pixel index per spatial axis of the image (Z, Y, X order) or a mapping such as
    ``{"Z": 10}`` (axis letters or dim names; axes left out default to the middle of the image).
    """
    from .axes import as_image, spatial_dims
    from .arrays import crop_padded, fit_window, plane_patch
    from .model_files import load_model
    from .prediction import _check_image

    model = load_model(model, device=device)
    net = model.network
    img = as_image(image, axes)
    pixels = _check_image(model, img)  # channels, dimensionality, finite values; no time axis
    dims, shape = spatial_dims(img), pixels.shape[1:]
    position = _centre_position(centre, dims, shape)
    patch = tuple(model.patch)
    if len(patch) == 1:
        patch = patch * net.spatial_dims
    if len(patch) != net.spatial_dims:
        raise InputError(f"model patch {list(patch)} does not have {net.spatial_dims} sizes for {net.name!r}")
    norm = model.normalization.image_statistics(pixels)
    planar = len(shape) > net.spatial_dims  # a 2D network on a stack: one plane (with its context)
    inplane = list(zip(position[1:], shape[1:])) if planar else list(zip(position, shape))
    starts = fit_window([c - p // 2 for (c, _), p in zip(inplane, patch)], patch, [n for _, n in inplane])
    if planar:
        return norm.apply(plane_patch(pixels, position[0], starts, patch, net.z_context))
    return norm.apply(crop_padded(pixels, starts, patch, channel_axis=True))


def image_activations(
    model: "LoadedModel | str | Path",
    image: "xr.DataArray | np.ndarray",
    layer: str,
    *,
    axes: str | None = None,
    centre: Sequence[int] | Mapping[str, int] | None = None,
    device: str | None = "cpu",
) -> np.ndarray:
    """Feature maps ``(F, *spatial_out)`` (float32) of ``layer`` for a patch of ``image``.

    ``model`` is a model folder or a :class:`~engine.model_files.LoadedModel`; ``image`` a DataArray
    (or numpy with ``axes`` such as ``"ZYX"``). The patch is the one :func:`input_patch` takes around
    ``centre`` (default: the middle of the image). Unknown layer names raise InputError listing close
    matches before the image is read.
    """
    from .model_files import load_model

    model = load_model(model, device=device)
    _find_layer(model.network, layer)
    patch = input_patch(model, image, axes=axes, centre=centre)
    return layer_activations(model.network, patch, layer)


def _normalise(plane: np.ndarray) -> np.ndarray:
    plane = plane.astype(np.float32, copy=True)
    finite = np.isfinite(plane)
    if not finite.any():
        return np.zeros_like(plane)
    lo, hi = float(plane[finite].min()), float(plane[finite].max())
    plane[~finite] = lo
    # A constant filter carries no pattern: show it as 0 rather than dividing by zero.
    return (plane - lo) / (hi - lo) if hi > lo else np.zeros_like(plane)


def _planes(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features)
    if features.ndim == 4:  # (F, Z, Y, X): the centre plane of each 3D feature map
        features = features[:, features.shape[1] // 2]
    if features.ndim != 3:
        raise InputError(f"features of shape {features.shape}: expected (F, Y, X) or (F, Z, Y, X)")
    return features


def montage(features: np.ndarray, columns: int | None = None, *, gap: int = 1) -> np.ndarray:
    """A 2D grid of the feature maps, each normalised to 0..1 (3D features: their centre plane).

    ``columns`` defaults to ``ceil(sqrt(F))``; cells are separated by ``gap`` pixels of value 1.
    """
    planes = _planes(features)
    count, height, width = planes.shape
    if count == 0:
        raise InputError("no feature maps to show")
    if columns is None:
        columns = math.ceil(math.sqrt(count))
    if isinstance(columns, bool) or not isinstance(columns, (int, np.integer)) or columns < 1:
        raise InputError(f"columns={columns!r}: expected a positive integer")
    columns = min(int(columns), count)
    rows = math.ceil(count / columns)
    grid = np.ones((rows * height + (rows - 1) * gap, columns * width + (columns - 1) * gap), np.float32)
    for i, plane in enumerate(planes):
        r, c = divmod(i, columns)
        y, x = r * (height + gap), c * (width + gap)
        grid[y : y + height, x : x + width] = _normalise(plane)
    return grid


def save_activations(
    features: np.ndarray, tif_path: str | Path | None = None, png_path: str | Path | None = None
) -> list[Path]:
    """Write feature maps as a TIFF stack (float32, one slice per filter; 3D maps as an ImageJ
    hyperstack with one time point per filter) and/or a PNG montage (8-bit). Returns the paths written.

    Each file is written atomically: a failure leaves no partial file behind.
    """
    import tifffile
    from PIL import Image

    from .fileutil import atomic_path

    features = np.asarray(features, dtype=np.float32)
    if features.ndim not in (3, 4):
        raise InputError(f"features of shape {features.shape}: expected (F, Y, X) or (F, Z, Y, X)")
    if tif_path is None and png_path is None:
        raise InputError("save_activations needs tif_path and/or png_path")
    written = []
    if tif_path is not None:
        axes = "ZYX" if features.ndim == 3 else "TZYX"  # ImageJ: filters as slices, or as frames in 3D
        with atomic_path(tif_path) as tmp:
            tifffile.imwrite(tmp, features, imagej=True, metadata={"axes": axes})
        written.append(Path(tif_path))
    if png_path is not None:
        image = Image.fromarray(np.round(montage(features) * 255).astype(np.uint8))  # 2D uint8 -> "L"
        with atomic_path(png_path) as tmp:
            image.save(tmp, format="PNG")
        written.append(Path(png_path))
    return written


__all__ = ["list_layers", "layer_activations", "input_patch", "image_activations", "montage", "save_activations"]
