"""Apply a trained model to whole images and huge volumes: normalization, tiling, labels, probabilities.

:func:`predict` works in memory and returns DataArrays. :func:`predict_file` streams a TIFF through
the network into a label (and optional probability) TIFF on disk: the input is memory-mapped, and
each finished slab is turned into labels and written at once, so memory does not grow with the
number of planes and volumes larger than RAM can be segmented.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import xarray as xr

from .axes import as_image, channel_first, like, spatial_dims
from .arrays import check_finite, label_dtype, z_context_stack  # label_dtype: re-exported
from .errors import InputError
from .model_files import LoadedModel, load_model
from .options import checked_keywords
from .postprocess import postprocess as postprocess_labels, predict_file_postprocessed, resolve_steps
from .precision import Precision, as_precision, channels_last, check_precision, configure_device
from .progress import Progress, ProgressCallback, report
from .tiling import ArraySink, TileSink, predict_tiled


@dataclass
class Prediction:
    """Labels ``(*spatial)`` (uint8, or uint16 beyond 256 classes) and optional probabilities
    ``(ch=K, *spatial)`` float32, both carrying the input's dims and calibration."""

    labels: xr.DataArray
    probabilities: xr.DataArray | None = None


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


def grid_factor(network: Any, tile: Sequence[int]) -> tuple[int, ...]:
    """Per axis, the network's down-sampling factor: the gap between the accepted input sizes around
    ``tile`` (``2**depth`` for a U-Net, 1 for a network taking any size). Tiles placed on multiples
    of it see the pooling grid of one untiled pass, so valid padding is seamless.

    >>> from engine.networks import build
    >>> grid_factor(build("unet3d_aniso", depth=2, filters=2), (16, 32, 32))
    (2, 4, 4)
    """
    valid = network.valid_input_shape(tile)
    return tuple(b - a for a, b in zip(valid, network.valid_input_shape([v + 1 for v in valid])))


def make_predictor(model: LoadedModel, tta: bool = False,
                   precision: str | Precision = "auto") -> Callable[[torch.Tensor], torch.Tensor]:
    """Network + softmax as a callable for :func:`engine.tiling.predict_tiled`; ``tta`` averages
    over all mirrorings of the spatial axes (nnU-Net's test-time augmentation: 4x in 2D, 8x in 3D).
    The network runs in ``precision`` (:func:`engine.precision.resolve_precision`); the softmax in fp32."""
    net, device = channels_last(model.network), model.device
    arithmetic = as_precision(precision, device)
    configure_device(device)
    pin = device.type == "cuda"

    def forward(x: torch.Tensor) -> torch.Tensor:
        with arithmetic.autocast():
            logits = net(x)
        return torch.softmax(logits.float(), dim=1)

    def predictor(x: torch.Tensor) -> torch.Tensor:
        x = x.pin_memory().to(device, non_blocking=True) if pin and x.device.type == "cpu" else x.to(device)
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


def _zarr_pixels(model: LoadedModel, path: str | Path, axes: str | None) -> tuple[Any, tuple[str, ...], dict[str, Any]]:
    """A zarr / OME-Zarr image opened lazily for :func:`predict_file`: channel-first pixels (read per slab), its
    spatial dims and calibration; checked against the model."""
    from .blockwise import check_volume
    from .chunked_io import open_volume

    volume = open_volume(path, axes=axes)
    check_volume(model, volume)
    return volume.pixels, volume.dims, dict(spacing=volume.spacing or None, unit=volume.unit)


def _probabilities(model: LoadedModel, pixels: Any, *, tile, overlap, blend, batch, tta, out: TileSink | None,
                   progress, region: tuple[slice, ...] | None = None, norm: Any = None,
                   precision: str | Precision = "auto") -> np.ndarray | TileSink:
    """Blended class probabilities ``(K, *spatial)`` for channel-first ``pixels``, returned, or written
    to the sink ``out`` slab by slab (in increasing order along the first spatial axis).

    ``region`` (slices over the spatial axes) limits the work to that part of the image, with the
    tiles of a whole-image run (blockwise prediction); ``norm`` is the normalization with its image
    statistics (default: computed from ``pixels``, which a block must not do on its own)."""
    norm = norm if norm is not None else model.normalization.image_statistics(pixels)
    net = model.network
    tile = tuple(tile) if tile is not None else default_tile(model, pixels.shape[1:])
    if len(tile) == 1:
        tile = tile * net.spatial_dims
    if len(tile) != net.spatial_dims:
        raise InputError(f"tile {list(tile)} must have {net.spatial_dims} sizes for model {net.name!r}")
    tile = net.valid_input_shape(tile)
    predictor = make_predictor(model, tta, precision)
    preprocess = lambda batch: norm.apply(batch, channel_axis=1)  # noqa: E731
    kwargs = dict(tile=tile, overlap=overlap, blend=blend, batch=batch or (8 if net.spatial_dims == 2 else 2),
                  preprocess=preprocess, grid=grid_factor(net, tile))
    if net.z_context == 1:
        return predict_tiled(pixels, predictor, out=out, region=region, progress=progress, **kwargs)
    region = region or tuple(slice(0, n) for n in pixels.shape[1:])
    shape = tuple(r.stop - r.start for r in region)
    result = np.empty((model.classes, *shape), np.float32) if out is None else None
    sink = ArraySink(result, origin=[r.start for r in region]) if out is None else out
    for done, z in enumerate(range(region[0].start, region[0].stop), 1):
        probs = predict_tiled(z_context_stack(pixels, z, net.z_context), predictor, region=region[1:], **kwargs)
        sink.write((slice(z, z + 1), *region[1:]), probs[:, None])
        report(progress, Progress("predict", done, shape[0], f"slice {done}/{shape[0]}"))
    return out if out is not None else result


@checked_keywords
def predict(
    model: LoadedModel | str | Path,
    image: xr.DataArray | np.ndarray,
    *,
    axes: str | None = None,
    tile: Sequence[int] | None = None,
    overlap: float = 0.25,
    blend: str = "gaussian",
    batch: int | None = None,
    device: str | None = "auto",
    probabilities: bool = False,
    tta: bool = False,
    postprocess: str | None = None,
    precision: str | Precision = "auto",
    progress: ProgressCallback | None = None,
) -> Prediction:
    """Segment ``image`` with a model (folder path or :class:`LoadedModel`).

    The image is a DataArray (or numpy with ``axes`` such as ``"ZYX"``); a ``t`` axis is segmented
    time point by time point. ``tile`` defaults to the training patch (at least 256 px in 2D) and is
    placed on the network's down-sampling grid; ``overlap`` is the fraction shared by neighbouring
    tiles; ``blend`` is "gaussian" or "mean"; ``batch`` is tiles per network call (default 8 in 2D,
    2 in 3D); ``tta`` adds mirroring test-time augmentation. A 2D model segments a stack slice by
    slice. ``probabilities=True`` also returns the class probabilities. ``postprocess``: post-processing
    steps for the labels (:mod:`engine.postprocess`; default: the model's stored ones, "none": none). ``precision``: the network's
    arithmetic, "auto" (bf16 where the CPU/GPU does it natively), "bf16", "fp16" (CUDA) or "fp32".
    """
    model = load_model(model, device=device)
    precision = as_precision(precision, model.device)  # a bad value fails before any work
    img = as_image(image, axes)
    if "t" in img.dims:
        parts = [predict(model, img.isel(t=i), tile=tile, overlap=overlap, blend=blend, batch=batch,
                         probabilities=probabilities, tta=tta, precision=precision, postprocess=postprocess,
                         progress=progress) for i in range(img.sizes["t"])]
        labels = xr.concat([p.labels for p in parts], dim="t")
        probs = xr.concat([p.probabilities for p in parts], dim="t") if probabilities else None
        return Prediction(labels, probs)
    pixels = _check_image(model, img)
    probs = _probabilities(model, pixels, tile=tile, overlap=overlap, blend=blend, batch=batch,
                           tta=tta, out=None, progress=progress, precision=precision)
    labels = probs.argmax(0).astype(label_dtype(model.classes))
    name = f"{img.name}-labels" if img.name else "labels"
    result = Prediction(like(labels, img, name=name))
    result.labels.attrs["class_names"] = model.class_names  # written into label TIFFs (engine.write_labels)
    steps = resolve_steps(postprocess, model.config.get("postprocess"))
    if steps:
        result.labels = postprocess_labels(result.labels, steps, class_names=model.class_names)
    if probabilities:
        result.probabilities = like(probs, img, channel_dim="ch", name=f"{img.name or 'image'}-probabilities")
        result.probabilities = result.probabilities.assign_coords(ch=model.class_names)
    return result


class LabelFileSink:
    """A :class:`~engine.tiling.TileSink` that turns each finished slab into labels at once, counts
    the voxels per class and writes the labels (and, when given, the probabilities) to TIFF writers
    (:class:`engine.io.TiffPlaneWriter`, or anything with ``write(dim, start, values)``)."""

    def __init__(self, dims: Sequence[str], classes: int, labels: Any, probabilities: Any = None) -> None:
        self.dims, self.labels, self.probabilities = tuple(dims), labels, probabilities
        self.dtype = label_dtype(classes)
        self.counts = np.zeros(classes, np.int64)

    def write(self, region: tuple[slice, ...], values: np.ndarray) -> None:
        labels = np.empty(values.shape[1:], self.dtype)
        for plane in range(values.shape[1]):  # argmax plane by plane: no int64 copy of the slab
            labels[plane] = values[:, plane].argmax(0)
        self.counts += np.bincount(labels.ravel(), minlength=len(self.counts))
        self.labels.write(self.dims[0], region[0].start, labels)
        if self.probabilities is not None:
            # ImageJ order puts the channel after the planes: (pln, ch, row, col), else (ch, row, col).
            order = np.moveaxis(values, 0, 1) if self.dims[0] == "pln" else values
            self.probabilities.write(self.dims[0], region[0].start, order)


@checked_keywords
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
    batch: int | None = None,
    device: str | None = "auto",
    tta: bool = False,
    precision: str | Precision = "auto",
    postprocess: str | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Segment an image file into a label TIFF (and a probability TIFF), streaming through disk.

    The input is memory-mapped when possible; a zarr / OME-Zarr input (one time point) is read slab by slab.
    Each slab of planes is turned into labels as soon as no later tile touches it and written to the label
    TIFF (ImageJ hyperstack with the label LUT and the input's calibration); probabilities (float32, one
    channel per class) only when ``probabilities_path`` is given, written the same way. Memory holds one slab of tiles, not the
    volume. Outputs appear only when complete (written under temporary names). A time series is
    segmented in memory. ``postprocess``: steps applied to the finished labels before they get their name
    (default: the model's stored ones, "none": none). Returns a summary dict (paths, shape, dims, class
    voxel counts).
    """
    from .fileutil import atomic_path, refuse_overwriting
    from .io import TiffPlaneWriter, glasbey_lut, read_image, write_image, write_labels

    refuse_overwriting({"the labels output": labels_path, "the probabilities output": probabilities_path},
                       {"the input image": input_path})
    check_precision(precision if isinstance(precision, str) else precision.name)
    model = load_model(model, device=device)
    precision = as_precision(precision, model.device)
    steps = resolve_steps(postprocess, model.config.get("postprocess"))
    if steps:  # labels predicted into a hidden temporary file, post-processed into labels_path
        return predict_file_postprocessed(model, input_path, labels_path, steps, probabilities_path=probabilities_path,
                                          axes=axes, tile=tile, overlap=overlap, blend=blend, batch=batch, tta=tta,
                                          precision=precision, progress=progress)
    run = dict(tile=tile, overlap=overlap, blend=blend, batch=batch, tta=tta, progress=progress)
    from .chunked_io import is_zarr_path

    if is_zarr_path(input_path):  # read lazily, chunk by chunk, like the blockwise path
        pixels, dims, calibration = _zarr_pixels(model, input_path, axes)
    else:
        img = read_image(input_path, axes=axes, mmap=True)
        if "t" in img.dims:
            result = predict(model, img, probabilities=probabilities_path is not None, precision=precision,
                             postprocess="none", **run)
            write_labels(labels_path, result.labels)
            if probabilities_path is not None:
                write_image(probabilities_path, result.probabilities)
            return {"labels": str(labels_path),
                    "probabilities": str(probabilities_path) if probabilities_path else None}
        pixels, dims = _check_image(model, img), spatial_dims(img)
        calibration = dict(spacing=img.attrs.get("spacing"), unit=img.attrs.get("unit"))
    spatial, classes = pixels.shape[1:], model.classes
    with ExitStack() as stack:
        target = stack.enter_context(atomic_path(labels_path))
        labels = stack.enter_context(TiffPlaneWriter(target, dims, spatial, label_dtype(classes), lut=glasbey_lut(),
                                                     class_names=model.class_names, **calibration))
        probs = None
        if probabilities_path is not None:
            target = stack.enter_context(atomic_path(probabilities_path))
            probs = stack.enter_context(TiffPlaneWriter(target, ("ch", *dims), (classes, *spatial), np.float32,
                                                        **calibration))
        sink = LabelFileSink(dims, classes, labels, probs)
        _probabilities(model, pixels, out=sink, precision=precision, **run)
    return {
        "labels": str(labels_path),
        "probabilities": str(probabilities_path) if probabilities_path else None,
        "shape": list(spatial),
        "dims": list(dims),
        "class_voxels": {name: int(c) for name, c in zip(model.class_names, sink.counts)},
    }
