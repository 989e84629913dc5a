"""Apply a trained model to whole images and huge volumes: normalization, tiling, labels, probabilities.

:func:`predict` works in memory and returns DataArrays. :func:`predict_file` streams a TIFF through
the network into label (and optional probability) TIFFs on disk, memory-mapping input and outputs, so
volumes larger than RAM can be segmented.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import xarray as xr

from .axes import as_image, channel_first, like, spatial_dims
from .data import check_finite, z_context_stack
from .errors import InputError
from .model_files import LoadedModel, load_model
from .progress import Progress, ProgressCallback, report
from .tiling import predict_tiled

_IN_MEMORY_BYTES = 1 << 30  # probability maps larger than this go to a temporary file


@dataclass
class Prediction:
    """Labels ``(*spatial)`` (uint8, or uint16 beyond 256 classes) and optional probabilities
    ``(ch=K, *spatial)`` float32, both carrying the input's dims and calibration."""

    labels: xr.DataArray
    probabilities: xr.DataArray | None = None


def label_dtype(classes: int) -> np.dtype:
    return np.dtype(np.uint8 if classes <= 256 else np.uint16)


def default_tile(model: LoadedModel, spatial_shape: Sequence[int]) -> tuple[int, ...]:
    """The training patch, enlarged for 2D networks to at least 256 px (faster, same result for
    fully convolutional networks) and never much larger than the image."""
    net = model.network
    tile = list(model.patch)
    if net.spatial_dims == 2:
        tile = [max(t, 256) for t in tile]
    plane = list(spatial_shape)[-net.spatial_dims:]
    tile = [min(t, max(p, 1)) if p >= t // 2 else t for t, p in zip(tile, plane)]
    return net.valid_input_shape(tile)


def make_predictor(model: LoadedModel, tta: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """Network + softmax as a callable for :func:`engine.tiling.predict_tiled`; ``tta`` averages
    over all mirrorings of the spatial axes (nnU-Net's test-time augmentation: 4x in 2D, 8x in 3D)."""
    net, device = model.network, model.device
    use_amp = device.type == "cuda"

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            return torch.softmax(net(x).float(), dim=1)

    def predictor(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device)
        if not tta:
            return forward(x)
        axes = list(range(2, x.ndim))
        total = None
        for mask in range(2 ** len(axes)):
            flip = [a for i, a in enumerate(axes) if mask >> i & 1]
            y = forward(torch.flip(x, flip) if flip else x)
            y = torch.flip(y, flip) if flip else y
            total = y if total is None else total + y
        return total / 2 ** len(axes)

    return predictor


def _check_image(model: LoadedModel, image: xr.DataArray) -> np.ndarray:
    pixels = channel_first(image)
    net = model.network
    expected = net.in_channels
    if pixels.shape[0] != expected:
        raise InputError(
            f"image {image.name or ''!r} has {pixels.shape[0]} channel(s) (dims {tuple(image.dims)}) but the "
            f"model was trained on {expected}: give an image with {expected} channel(s)"
        )
    spatial = pixels.ndim - 1
    if spatial < net.spatial_dims:
        raise InputError(
            f"model {net.name!r} is {net.spatial_dims}D but the image is {spatial}D (dims {tuple(image.dims)})"
        )
    if net.z_context > 1 and spatial != 3:
        raise InputError(f"model {net.name!r} uses {net.z_context} neighbouring slices and needs a 3D stack")
    check_finite(pixels, str(image.name or "image"))
    return pixels


def _probabilities(model: LoadedModel, pixels: np.ndarray, *, tile, overlap, blend, batch_size, tta,
                   out, progress) -> np.ndarray:
    """Blended class probabilities ``(K, *spatial)`` for channel-first ``pixels``."""
    norm = model.normalization.image_statistics(pixels)
    net = model.network
    tile = tuple(tile) if tile is not None else default_tile(model, pixels.shape[1:])
    if len(tile) == 1:
        tile = tile * net.spatial_dims
    if len(tile) != net.spatial_dims:
        raise InputError(f"tile {list(tile)} must have {net.spatial_dims} sizes for model {net.name!r}")
    tile = net.valid_input_shape(tile)
    predictor = make_predictor(model, tta)
    preprocess = lambda batch: norm.apply(batch, channel_axis=1)  # noqa: E731
    batch_size = batch_size or (8 if net.spatial_dims == 2 else 2)
    kwargs = dict(overlap=overlap, blend=blend, batch_size=batch_size, preprocess=preprocess)
    if net.z_context == 1:
        return predict_tiled(predictor, pixels, tile, out=out, progress=progress, **kwargs)
    depth = pixels.shape[1]
    result = out if out is not None else np.empty((model.classes,) + pixels.shape[1:], np.float32)
    for z in range(depth):
        stack = z_context_stack(pixels, z, net.z_context)
        result[:, z] = predict_tiled(predictor, stack, tile, **kwargs)
        report(progress, Progress("predict", z + 1, depth, f"slice {z + 1}/{depth}"))
    return result


def predict(
    model: LoadedModel | str | Path,
    image: xr.DataArray | np.ndarray,
    *,
    axes: str | None = None,
    tile: Sequence[int] | None = None,
    overlap: float = 0.25,
    blend: str = "gaussian",
    batch_size: int | None = None,
    device: str | None = "auto",
    probabilities: bool = False,
    tta: bool = False,
    progress: ProgressCallback | None = None,
) -> Prediction:
    """Segment ``image`` with a model (folder path or :class:`LoadedModel`).

    The image is a DataArray (or numpy with ``axes`` such as ``"ZYX"``); a ``t`` axis is segmented
    time point by time point. ``tile`` defaults to the training patch (at least 256 px in 2D);
    ``overlap`` is the fraction shared by neighbouring tiles; ``blend`` is "gaussian" or "mean";
    ``tta`` adds mirroring test-time augmentation. A 2D model segments a stack slice by slice.
    """
    model = load_model(model, device=device)
    img = as_image(image, axes)
    if "t" in img.dims:
        parts = [predict(model, img.isel(t=i), tile=tile, overlap=overlap, blend=blend, batch_size=batch_size,
                         probabilities=probabilities, tta=tta, progress=progress) for i in range(img.sizes["t"])]
        labels = xr.concat([p.labels for p in parts], dim="t")
        probs = xr.concat([p.probabilities for p in parts], dim="t") if probabilities else None
        return Prediction(labels, probs)
    pixels = _check_image(model, img)
    probs = _probabilities(model, pixels, tile=tile, overlap=overlap, blend=blend, batch_size=batch_size,
                           tta=tta, out=None, progress=progress)
    labels = probs.argmax(0).astype(label_dtype(model.classes))
    name = f"{img.name}-labels" if img.name else "labels"
    result = Prediction(like(labels, img, name=name))
    if probabilities:
        result.probabilities = like(probs, img, channel_dim="ch", name=f"{img.name or 'image'}-probabilities")
        result.probabilities = result.probabilities.assign_coords(ch=model.class_names)
    return result


def predict_file(
    model: LoadedModel | str | Path,
    input_path: str | Path,
    labels_path: str | Path,
    *,
    probabilities_path: str | Path | None = None,
    axes: str | None = None,
    tile: Sequence[int] | None = None,
    overlap: float = 0.25,
    blend: str = "gaussian",
    batch_size: int | None = None,
    device: str | None = "auto",
    tta: bool = False,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Segment an image file into a label TIFF (and a probability TIFF), streaming through disk.

    The input is memory-mapped when possible; probabilities go to ``probabilities_path`` (an ImageJ
    hyperstack, one channel per class) or, when larger than 1 GiB, to a temporary file, and labels
    are computed slab by slab. Outputs appear only when complete (written under temporary names).
    Returns a summary dict (paths, shape, class voxel counts).
    """
    from .fileutil import atomic_path, refuse_overwriting
    from .io import create_tiff_memmap, read_image, write_image, write_labels

    refuse_overwriting({"the labels output": labels_path, "the probabilities output": probabilities_path},
                       {"the input image": input_path})
    model = load_model(model, device=device)
    img = read_image(input_path, axes=axes, mmap=True)
    if "t" in img.dims:
        result = predict(model, img, tile=tile, overlap=overlap, blend=blend, batch_size=batch_size,
                         probabilities=probabilities_path is not None, tta=tta, progress=progress)
        write_labels(labels_path, result.labels)
        if probabilities_path is not None:
            write_image(probabilities_path, result.probabilities)
        return {"labels": str(labels_path), "probabilities": str(probabilities_path) if probabilities_path else None}
    pixels = _check_image(model, img)
    spatial = pixels.shape[1:]
    classes = model.classes
    dims = spatial_dims(img)
    run = dict(tile=tile, overlap=overlap, blend=blend, batch_size=batch_size, tta=tta, progress=progress)
    for target in (labels_path, probabilities_path):
        if target is not None:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        if probabilities_path is not None:
            # Stream straight into the final ImageJ hyperstack (one channel per class) on disk.
            tmp = stack.enter_context(atomic_path(probabilities_path))
            store = create_tiff_memmap(tmp, ("ch",) + dims, (classes,) + spatial, np.float32,
                                       spacing=img.attrs.get("spacing"), unit=img.attrs.get("unit"))
            out = np.moveaxis(store, 1, 0) if "pln" in dims else store  # ImageJ order is (pln, ch, ...)
        elif 4 * classes * int(np.prod(spatial)) > _IN_MEMORY_BYTES:
            temp_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="deepseg-", dir=Path(labels_path).parent))
            out = np.lib.format.open_memmap(os.path.join(temp_dir, "probabilities.npy"), mode="w+",
                                            dtype=np.float32, shape=(classes,) + spatial)
        else:
            out = None
        probs = _probabilities(model, pixels, out=out, **run)
        labels = np.empty(spatial, dtype=label_dtype(classes))
        step = max(1, int(64 * 2**20 // max(1, 4 * classes * int(np.prod(spatial[1:])))))
        for start in range(0, spatial[0], step):
            labels[start:start + step] = np.asarray(probs[:, start:start + step]).argmax(0)
        if probabilities_path is not None:
            store.flush()
            del out, probs, store
        counts = np.bincount(labels.ravel(), minlength=classes)
        write_labels(labels_path, like(labels, img, name="labels"))
    return {
        "labels": str(labels_path),
        "probabilities": str(probabilities_path) if probabilities_path else None,
        "shape": list(spatial),
        "dims": list(spatial_dims(img)),
        "class_voxels": {name: int(c) for name, c in zip(model.class_names, counts)},
    }
