"""Tiled prediction of images larger than a network's input: tile placement, blending, stitching.

Pure functions place tiles (:func:`tile_starts`, :func:`tile_grid`) and weight them
(:func:`blend_weights`); :func:`predict_tiled` drives any predictor over a channel-first array,
blends the overlapping outputs and hands finished regions to a :class:`TileSink`.

Tile placement matches MONAI's ``sliding_window_inference``: tiles start every
``max(1, int(tile * (1 - overlap)))`` voxels and the last tile is flush with the end of the axis, so
results can be compared voxel for voxel. With ``grid`` (a network's down-sampling factor per axis)
tiles start on multiples of it instead, so a valid-padding network with pooling is seamless.

Unlike MONAI and nnU-Net, :func:`predict_tiled` never holds a full-size weight buffer, never makes a
full-size float copy of the input, and streams its result into any sink: it blends one slab along
the first spatial axis and writes planes as soon as no later tile touches them. ``region`` limits
the work to the tiles touching a part of the image, on the same tile grid as a whole-image run
(the primitive for blockwise, resumable and distributed prediction).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from .arrays import PAD_MODES, read_padded
from .errors import InputError
from .options import checked_keywords
from .progress import Progress, ProgressCallback, report

__all__ = [
    "tile_starts", "tile_grid", "blend_weights", "predict_tiled", "TileSink", "ArraySink", "BLEND_MODES", "PAD_MODES",
]

BLEND_MODES = ("gaussian", "mean")

Predictor = Callable[[torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------------------- placement


def _check_overlap(overlap: float) -> float:
    try:
        value = float(overlap)
    except (TypeError, ValueError):
        value = math.nan
    if not 0.0 <= value < 1.0:
        raise InputError(f"overlap {overlap!r} must be a fraction in [0, 1), e.g. 0.25")
    return value


def _check_size(value: Any, what: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{what} {value!r} must be an integer >= 1")
    return int(value)


def tile_starts(size: int, tile: int, overlap: float, multiple: int = 1) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``[0, size)`` along one axis.

    Tiles start every ``max(1, int(tile * (1 - overlap)))`` voxels; the last one is moved back so it
    ends flush with the axis (MONAI's placement). A tile as long as the axis or longer gives ``[0]``
    (the caller pads the image). With ``multiple`` > 1 every start is a multiple of it: the step is
    rounded down to a multiple (at least one) and the last tile ends at most ``multiple - 1`` voxels
    beyond the axis (the caller pads).

    Parameters
    ----------
    size : int
        Length of the axis (>= 1).
    tile : int
        Length of a tile (>= 1).
    overlap : float
        Fraction of a tile shared with its neighbour, in ``[0, 1)``.
    multiple : int
        Tiles start on multiples of this (e.g. a network's down-sampling factor).

    Examples
    --------
    >>> tile_starts(10, 4, 0.25), tile_starts(11, 4, 0.25), tile_starts(3, 8, 0.5)
    ([0, 3, 6], [0, 3, 6, 7], [0])
    >>> tile_starts(11, 4, 0.25, multiple=2)
    [0, 2, 4, 6, 8]
    """
    size = _check_size(size, "size")
    tile = _check_size(tile, "tile size")
    multiple = _check_size(multiple, "grid")
    step = max(1, int(tile * (1 - _check_overlap(overlap))))
    step = max(multiple, step // multiple * multiple)
    if tile >= size:
        return [0]
    last = -(-(size - tile) // multiple) * multiple
    count = -(-(size - tile) // step) + 1
    return [min(i * step, last) for i in range(count)]


def _per_axis(value: Any, n: int, what: str) -> tuple:
    """``value`` repeated ``n`` times if it is a scalar, else its ``n`` items."""
    if np.ndim(value) == 0:
        return (value,) * n
    if len(value) != n:
        raise InputError(f"{what} {tuple(value)!r} must have {n} values, one per spatial axis")
    return tuple(value)


def tile_grid(
    shape: Sequence[int],
    tile: int | Sequence[int],
    overlap: float | Sequence[float],
    grid: int | Sequence[int] = 1,
) -> list[tuple[int, ...]]:
    """Start corners of all tiles covering ``shape``, first axis slowest (C order).

    ``tile``, ``overlap`` and ``grid`` (see :func:`tile_starts`'s ``multiple``) are one value for
    every axis or one per axis.

    Examples
    --------
    >>> tile_grid((10, 5), (4, 5), 0.25)
    [(0, 0), (3, 0), (6, 0)]
    """
    shape = tuple(shape)
    tiles = _per_axis(tile, len(shape), "tile")
    overlaps = _per_axis(overlap, len(shape), "overlap")
    grids = _per_axis(grid, len(shape), "grid")
    return _product([tile_starts(n, t, o, g) for n, t, o, g in zip(shape, tiles, overlaps, grids)])


def _product(axes: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """All corners combining one start per axis, first axis slowest."""
    corners: list[tuple[int, ...]] = [()]
    for starts in axes:
        corners = [corner + (s,) for corner in corners for s in starts]
    return corners


# ------------------------------------------------------------------------------------------ weights


def blend_weights(
    tile_shape: Sequence[int], mode: str = "gaussian", sigma_scale: float | Sequence[float] = 0.125
) -> np.ndarray:
    """Importance map of one tile, float32, maximum 1 and no zeros (read-only, cached).

    ``"gaussian"`` (nnU-Net's): a separable gaussian centred on the tile with sigma
    ``tile * sigma_scale`` per axis, normalised so the maximum is 1; values that underflow to zero
    are raised to the smallest positive value, so every voxel of a tile keeps some weight.
    ``"mean"``: all ones (plain averaging of overlapping tiles).

    Examples
    --------
    >>> w = blend_weights((5, 4))
    >>> w.shape, w.dtype, float(w.max()), bool(w.min() > 0), w.flags.writeable
    ((5, 4), dtype('float32'), 1.0, True, False)
    """
    shape = tuple(_check_size(t, "tile size") for t in tile_shape)
    if mode not in BLEND_MODES:
        raise InputError(f"blend mode {mode!r} is not one of {BLEND_MODES}")
    scales = tuple(float(s) for s in _per_axis(sigma_scale, len(shape), "sigma_scale"))
    if mode == "gaussian" and not all(s > 0 for s in scales):
        raise InputError(f"sigma_scale {sigma_scale!r} must be > 0")
    return _cached_weights(shape, mode, scales if mode == "gaussian" else ())


@functools.lru_cache(maxsize=16)
def _cached_weights(shape: tuple[int, ...], mode: str, scales: tuple[float, ...]) -> np.ndarray:
    if mode == "mean":
        weights = np.ones(shape, np.float32)
    else:
        weights = np.ones((), np.float64)
        for n, scale in zip(shape, scales):
            x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
            axis = np.exp(-(x**2) / (2.0 * (n * scale) ** 2))
            weights = np.multiply.outer(weights, axis / axis.max())
        weights = weights.astype(np.float32)
        if not weights.all():
            weights[weights == 0] = weights[weights > 0].min()
    weights.flags.writeable = False
    return weights


# -------------------------------------------------------------------------------------------- sinks


@runtime_checkable
class TileSink(Protocol):
    """Receives finished, blended probabilities from :func:`predict_tiled`."""

    def write(self, region: tuple[slice, ...], values: np.ndarray) -> None:
        """Finished, blended probabilities for ``region`` (slices over the spatial axes, in image
        coordinates), ``values`` shaped ``(K, *region_shape)`` float32. Called in increasing order
        along the first spatial axis; every voxel of the requested region is written exactly once."""


class ArraySink:
    """A :class:`TileSink` writing into an array-like ``(K, *spatial)`` (numpy, ``np.memmap``, zarr).

    ``origin`` is the image position of the array's first voxel (default zeros: the array covers
    the whole image), so an array the size of a region can receive just that region.

    Examples
    --------
    >>> block = np.zeros((1, 2, 3), np.float32)
    >>> ArraySink(block, origin=(10, 0)).write((slice(11, 12), slice(0, 3)), np.ones((1, 1, 3), np.float32))
    >>> block[0].tolist()
    [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
    """

    def __init__(self, array: Any, origin: Sequence[int] | None = None) -> None:
        self.array = array
        spatial = len(getattr(array, "shape", ())) - 1
        self.origin = tuple(int(o) for o in origin) if origin is not None else (0,) * spatial

    def write(self, region: tuple[slice, ...], values: np.ndarray) -> None:
        index = tuple(slice(r.start - o, r.stop - o) for r, o in zip(region, self.origin))
        self.array[(slice(None), *index)] = values


def _check_region(region: Any, image: tuple[int, ...]) -> tuple[slice, ...]:
    """``region`` as bounded slices (step 1, non-empty) inside the image; None is the whole image."""
    if region is None:
        return tuple(slice(0, n) for n in image)
    shown = f"region {region!r}"
    if not isinstance(region, (tuple, list)) or len(region) != len(image):
        raise InputError(f"{shown} must be a tuple of {len(image)} slices, one per spatial axis of {image}")
    out = []
    for r, n in zip(region, image):
        if not isinstance(r, slice) or r.step not in (None, 1):
            raise InputError(f"{shown} must hold slices with step 1, e.g. slice(0, {n})")
        start, stop, _ = r.indices(n)
        if (r.start is not None and not 0 <= r.start <= n) or (r.stop is not None and not 0 <= r.stop <= n):
            raise InputError(f"{shown} reaches outside the image of spatial shape {image}")
        if stop <= start:
            raise InputError(f"{shown} is empty along an axis of the image of spatial shape {image}")
        out.append(slice(start, stop))
    return tuple(out)


# ---------------------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Geometry:
    """Where tiles go, in grid coordinates: the image sits ``lead`` voxels into a grid at least one
    output tile large; output tiles start at ``axes`` (per axis) and input tiles extend ``halo``
    beyond them. Starts are multiples of the per-axis ``grid`` factor in image coordinates."""

    image: tuple[int, ...]
    tile: tuple[int, ...]
    halo: tuple[int, ...]
    out_tile: tuple[int, ...]
    lead: tuple[int, ...]
    axes: tuple[list[int], ...]

    @classmethod
    def build(cls, image, tile, halo, overlap, grid) -> "_Geometry":
        out_tile = tuple(t - 2 * h for t, h in zip(tile, halo))
        size = tuple(max(n, t) for n, t in zip(image, out_tile))
        lead = tuple((s - n) // 2 // g * g for s, n, g in zip(size, image, grid))
        axes = tuple(tile_starts(s, t, o, g) for s, t, o, g in zip(size, out_tile, overlap, grid))
        return cls(image, tile, halo, out_tile, lead, axes)

    def select(self, region: tuple[slice, ...]) -> list[tuple[int, ...]]:
        """Start corners of the output tiles touching ``region`` (image coordinates), C order."""
        axes = [[s for s in starts if s < r.stop + l and s + t > r.start + l]
                for starts, r, l, t in zip(self.axes, region, self.lead, self.out_tile)]
        return _product(axes)

    def input_origin(self, start: Sequence[int]) -> tuple[int, ...]:
        """Image coordinates of the first input voxel of the tile whose output starts at ``start``."""
        return tuple(s - l - h for s, l, h in zip(start, self.lead, self.halo))


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# ------------------------------------------------------------------------------------------ stitching


class _Stitcher:
    """Blends tile outputs in a slab one output tile deep along the first axis, spanning the box of
    the selected tiles along the other axes; finished planes inside ``region`` go to ``sink``."""

    def __init__(self, geo: _Geometry, starts: list[tuple[int, ...]], classes: int, weights: torch.Tensor,
                 sink: Any, region: tuple[slice, ...]) -> None:
        self.geo, self.weights, self.sink, self.wanted = geo, weights, sink, region
        self.lo = tuple(min(s[i] for s in starts) for i in range(len(geo.image)))
        self.hi = tuple(max(s[i] for s in starts) + t for i, t in enumerate(geo.out_tile))
        self.region = tuple(slice(r.start + l, r.stop + l) for r, l in zip(region, geo.lead))  # grid coords
        rest = tuple(h - l for l, h in zip(self.lo[1:], self.hi[1:]))
        depth = min(geo.out_tile[0], self.hi[0] - self.lo[0])
        self.base = self.lo[0]
        self.acc = torch.zeros((classes, depth, *rest), dtype=torch.float32)
        self.wsum = torch.zeros((depth, *rest), dtype=torch.float32)

    def add(self, start: Sequence[int], values: torch.Tensor) -> None:
        """Add one tile's output ``(K, *out_tile)`` at grid position ``start``."""
        local = tuple(slice(s - o, s - o + t) for s, o, t in zip(start, (self.base, *self.lo[1:]), self.geo.out_tile))
        self.acc[(slice(None), *local)].addcmul_(values, self.weights)
        self.wsum[local].add_(self.weights)

    def flush(self, upto: int) -> None:
        """Finish grid planes ``[base, upto)``: write their part of the region, shift the slab."""
        count = upto - self.base
        if count <= 0:
            return
        first = self.region[0]
        lo, hi = max(self.base, first.start), min(upto, first.stop)
        if lo < hi:
            inner = tuple(slice(r.start - o, r.stop - o) for r, o in zip(self.region[1:], self.lo[1:]))
            planes = slice(lo - self.base, hi - self.base)
            values = torch.div(self.acc[(slice(None), planes, *inner)], self.wsum[(planes, *inner)])
            lead = self.geo.lead[0]
            self.sink.write((slice(lo - lead, hi - lead), *self.wanted[1:]), values.numpy())
        _shift(self.acc, count, axis=1)
        _shift(self.wsum, count, axis=0)
        self.base = upto

    def finish(self) -> None:
        self.flush(self.hi[0])


def _shift(buffer: torch.Tensor, count: int, axis: int) -> None:
    """Move ``buffer`` ``count`` planes towards the start along ``axis``; zero the freed planes."""
    depth = buffer.shape[axis]
    head = (slice(None),) * axis
    for plane in range(depth - count):  # plane by plane, front first: no temporary copy of the slab
        buffer[(*head, plane)] = buffer[(*head, plane + count)]
    buffer[(*head, slice(max(0, depth - count), depth))] = 0


# ------------------------------------------------------------------------------------------- driver


def _check_options(array: Any, tile: Any, overlap: Any, blend: str, batch: int, pad_mode: str, grid: Any):
    shape = tuple(getattr(array, "shape", ()))
    if len(shape) < 2:
        raise InputError(f"array of shape {shape} must be channel-first (C, *spatial) with 1-3 spatial axes")
    spatial = len(shape) - 1
    tile = (tile,) * spatial if isinstance(tile, (int, np.integer)) else tuple(tile)
    if len(tile) not in (spatial, spatial - 1) or not tile:
        raise InputError(
            f"tile {tile!r} must have {spatial} sizes for an array of shape {shape} (C, *spatial), or "
            f"{spatial - 1} to predict slice by slice along the first spatial axis"
        )
    tile = tuple(_check_size(t, "tile size") for t in tile)
    overlaps = tuple(_check_overlap(o) for o in _per_axis(overlap, len(tile), "overlap"))
    grids = tuple(_check_size(g, "grid") for g in _per_axis(grid, len(tile), "grid"))
    if blend not in BLEND_MODES:
        raise InputError(f"blend {blend!r} is not one of {BLEND_MODES}")
    _check_size(batch, "batch")
    if pad_mode not in PAD_MODES:
        raise InputError(f"pad_mode {pad_mode!r} is not one of {PAD_MODES}")
    return tile, overlaps, grids


def _default_device(predictor: Any) -> torch.device:
    if isinstance(predictor, torch.nn.Module):
        for tensor in predictor.parameters():
            return tensor.device
        for tensor in predictor.buffers():
            return tensor.device
    return torch.device("cpu")


@checked_keywords
def predict_tiled(
    array: Any,
    predictor: Predictor,
    *,
    tile: int | Sequence[int],
    overlap: float | Sequence[float] = 0.25,
    blend: str = "gaussian",
    batch: int = 4,
    device: str | torch.device | None = None,
    out: Any = None,
    region: Sequence[slice] | None = None,
    grid: int | Sequence[int] = 1,
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
    progress: ProgressCallback | None = None,
    pad_mode: str = "reflect",
) -> Any:
    """Run ``predictor`` tile by tile over ``array`` and blend the outputs into ``(K, *spatial)``.

    Parameters
    ----------
    array : array-like
        Channel-first image ``(C, *spatial)`` of any dtype: numpy, ``np.memmap`` or anything sliced
        like numpy. Only tiles are read and cast (per batch); no full-size copy is made.
    predictor : callable
        Maps a float32 tensor ``(N, C, *tile)`` to ``(N, K, *tile_out)`` (e.g. a network followed by
        softmax). ``tile_out`` is ``tile`` (same padding) or ``tile - 2 * halo`` with an integer
        ``halo`` per axis (valid padding); it is found by running the first batch.
    tile : int or sequence of int
        Input tile fed to the predictor, one size per spatial axis, or one fewer to predict a 3D
        stack slice by slice along its first spatial axis (several slices' tiles share a batch).
    overlap : float or sequence of float
        Fraction of an output tile shared with its neighbour, in ``[0, 1)``.
    blend : {"gaussian", "mean"}
        Weighting of overlapping outputs (:func:`blend_weights`).
    batch : int
        Tiles per predictor call.
    device : str or torch.device, optional
        Where input batches go; default: the device of the predictor's parameters if it is a
        ``torch.nn.Module``, else the CPU. Outputs come back to the CPU as float32.
    out : array-like or TileSink, optional
        None: return a new float32 array ``(K, *region shape)``. An array-like ``(K, *spatial)`` (the
        whole image: numpy, ``np.memmap``, zarr array): the region is written into it in place. An
        object with ``write(region, values)`` (:class:`TileSink`): receives finished slabs. Returned
        when given; its contents are undefined if prediction is cancelled or fails.
    region : tuple of slice, optional
        Part of the image to predict (slices over the spatial axes, step 1); default the whole image.
        Only tiles whose output touches it run, placed on the same grid as a whole-image run, so the
        values equal the whole-image result there (to float rounding).
    grid : int or sequence of int
        Tiles start on multiples of this per tile axis (image coordinates): pass a network's
        down-sampling factor so that valid-padding networks with pooling are seamless.
    preprocess : callable, optional
        Applied to each numpy batch ``(N, C, *tile)`` in the array's dtype before the predictor
        (e.g. normalisation); its result is cast to float32.
    progress : callable, optional
        Receives ``Progress("predict", done_tiles, total_tiles)`` after each batch; returning
        ``False`` raises :class:`~engine.errors.Cancelled`.
    pad_mode : {"reflect", "symmetric", "edge", "constant"}
        How the image is extended beyond its border (as ``numpy.pad``; ``constant`` pads zeros in the
        input's units, before ``preprocess``). ``reflect`` falls back to ``edge`` on an axis of one
        voxel.

    Returns
    -------
    array-like or TileSink
        ``out``, or a new float32 numpy array ``(K, *region shape)``.

    Notes
    -----
    Geometry: output tiles of ``tile - 2 * halo`` voxels are placed with :func:`tile_grid`; each is
    predicted from the input window that extends ``halo`` voxels further on every side, read from the
    image extended with ``pad_mode``. So a valid-padding network gives exactly what it gives untiled
    on the image padded by ``halo`` (with pooling, when ``grid`` is its down-sampling factor). Axes
    shorter than an output tile are padded (centred) to one tile and cropped back.

    Peak memory, besides the predictor's own and the result when ``out`` is None: a slab of
    ``(K + 1) * depth * prod(box[1:]) * 4`` bytes, where ``box`` spans the tiles touching the region
    and ``depth`` is one output tile along the first axis, whatever the image's length; the finished
    planes handed to the sink (at most one tile step, or one output tile at the end); and one batch
    of input tiles (array dtype and float32) and outputs. The first batch also measures the output
    size; for a valid-padding predictor it is predicted a second time, with the halo.
    """
    tile, overlaps, grids = _check_options(array, tile, overlap, blend, batch, pad_mode, grid)
    device = torch.device(device) if device is not None else _default_device(predictor)
    image = tuple(int(n) for n in array.shape[1:])
    region = _check_region(region, image)
    slicewise = len(tile) == len(image) - 1
    if slicewise:
        tile, overlaps, grids = (1, *tile), (0.0, *overlaps), (1, *grids)
    run = _tile_runner(array, predictor, tile, slicewise, preprocess, pad_mode, device)
    with torch.inference_mode():
        # Probe: the first batch, placed as if the predictor kept the tile size (same padding).
        geo = _Geometry.build(image, tile, (0,) * len(tile), overlaps, grids)
        starts = geo.select(region)
        first: torch.Tensor | None = run([geo.input_origin(s) for s in starts[:batch]])
        classes, halo = int(first.shape[1]), _halo(tile, tuple(first.shape[2:]), slicewise)
        if any(halo):  # valid padding: place the tiles again and discard the probe
            geo, first = _Geometry.build(image, tile, halo, overlaps, grids), None
            starts = geo.select(region)
        result, sink = _prepare_out(out, classes, image, region)
        weights = torch.from_numpy(blend_weights(geo.out_tile, blend).copy())
        stitcher = _Stitcher(geo, starts, classes, weights, sink, region)
        done = 0
        for group in _batches(starts, batch):
            values = first if first is not None else run([geo.input_origin(s) for s in group])
            first = None
            if tuple(values.shape[1:]) != (classes, *geo.out_tile):
                raise InputError(f"predictor returned {tuple(values.shape)} after {(classes, *geo.out_tile)}: "
                                 "the output shape must not change between batches")
            for start, value in zip(group, values):
                stitcher.flush(start[0])  # tiles come in C order: planes before this one are finished
                stitcher.add(start, value)
            done += len(group)
            report(progress, Progress("predict", done, len(starts)))
        stitcher.finish()
    return result


def _tile_runner(array: Any, predictor: Predictor, tile: tuple[int, ...], slicewise: bool,
                 preprocess: Callable | None, pad_mode: str, device: torch.device
                 ) -> Callable[[list[tuple[int, ...]]], torch.Tensor]:
    """A function reading the input tiles at the given origins and returning the predictor's output
    (float32 on the CPU, with a first-axis dimension of 1 added when predicting slice by slice)."""

    def run(origins: list[tuple[int, ...]]) -> torch.Tensor:
        batch = np.stack([read_padded(array, o, tile, pad_mode) for o in origins])
        if slicewise:
            batch = batch[:, :, 0]
        if preprocess is not None:
            batch = preprocess(batch)
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device)
        y = predictor(x)
        if not isinstance(y, torch.Tensor) or y.ndim != x.ndim or y.shape[0] != x.shape[0]:
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise InputError(f"predictor returned {got} for input {tuple(x.shape)}; expected (N, K, *spatial)")
        y = y.to("cpu", torch.float32)
        return y.unsqueeze(2) if slicewise else y

    return run


def _halo(tile: tuple[int, ...], out_shape: tuple[int, ...], slicewise: bool) -> tuple[int, ...]:
    """Per-axis halo from the probe: input tile minus output tile, halved (even, >= 0, output >= 1)."""
    diff = [t - o for t, o in zip(tile, out_shape)]
    if len(out_shape) != len(tile) or any(d < 0 or d % 2 or d >= t for d, t in zip(diff, tile)):
        shown, got = (tile[1:], out_shape[1:]) if slicewise else (tile, out_shape)
        raise InputError(
            f"predictor maps a tile {shown} to {got}: the output must equal the tile (same padding) or be "
            "smaller by an even number per axis (valid padding)"
        )
    return tuple(d // 2 for d in diff)


def _prepare_out(out: Any, classes: int, image: tuple[int, ...], region: tuple[slice, ...]) -> tuple[Any, Any]:
    """``(returned value, sink)`` for ``out``: a new region-sized array, an array-like or a sink."""
    if out is None:
        result = np.empty((classes, *(r.stop - r.start for r in region)), np.float32)
        return result, ArraySink(result, origin=[r.start for r in region])
    if callable(getattr(out, "write", None)):
        return out, out
    expected = (classes, *image)
    if tuple(getattr(out, "shape", ())) != expected:
        raise InputError(f"out has shape {tuple(getattr(out, 'shape', ()))}; expected {expected} (K, *spatial)")
    return out, ArraySink(out)
