"""Activations explorer (DeepMIB's "Activations Explorer"): what each layer of a network responds to.

>>> from engine.networks import build
>>> net = build("unet2d", depth=1, filters=4)
>>> "encoders.0.conv1" in list_layers(net)
True
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import InputError

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


__all__ = ["list_layers", "layer_activations", "montage", "save_activations"]
