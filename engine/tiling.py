"""Tiled prediction of images larger than a network's input: tile placement, blending, stitching.

Pure functions place tiles (:func:`tile_starts`, :func:`tile_grid`) and weight them
(:func:`blend_weights`); :func:`predict_tiled` drives any predictor over a channel-first array and
blends the overlapping outputs.

Tile placement matches MONAI's ``sliding_window_inference``: tiles start every
``max(1, int(tile * (1 - overlap)))`` voxels and the last tile is flush with the end of the axis, so
results can be compared voxel for voxel.

Unlike MONAI and nnU-Net, :func:`predict_tiled` never holds a full-size weight buffer, never makes a
full-size float copy of the input, and can stream its result into any array-like sink (``np.memmap``,
zarr): it accumulates one slab along the first spatial axis and writes planes as soon as no later
tile touches them.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from .errors import InputError
from .progress import Progress, ProgressCallback, report

__all__ = ["tile_starts", "tile_grid", "blend_weights", "predict_tiled", "BLEND_MODES", "PAD_MODES"]

BLEND_MODES = ("gaussian", "mean")
PAD_MODES = ("reflect", "symmetric", "edge", "constant")

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


def tile_starts(size: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``[0, size)`` along one axis.

    Tiles start every ``max(1, int(tile * (1 - overlap)))`` voxels; the last one is moved back so it
    ends flush with the axis (MONAI's placement). A tile as long as the axis or longer gives ``[0]``
    (the caller pads the image).

    Parameters
    ----------
    size : int
        Length of the axis (>= 1).
    tile : int
        Length of a tile (>= 1).
    overlap : float
        Fraction of a tile shared with its neighbour, in ``[0, 1)``.

    Examples
    --------
    >>> tile_starts(10, 4, 0.25), tile_starts(11, 4, 0.25), tile_starts(3, 8, 0.5)
    ([0, 3, 6], [0, 3, 6, 7], [0])
    """
    size = _check_size(size, "size")
    tile = _check_size(tile, "tile size")
    step = max(1, int(tile * (1 - _check_overlap(overlap))))
    if tile >= size:
        return [0]
    count = -(-(size - tile) // step) + 1
    return [min(i * step, size - tile) for i in range(count)]


def _per_axis(value: Any, n: int, what: str) -> tuple:
    """``value`` repeated ``n`` times if it is a scalar, else its ``n`` items."""
    if np.ndim(value) == 0:
        return (value,) * n
    if len(value) != n:
        raise InputError(f"{what} {tuple(value)!r} must have {n} values, one per spatial axis")
    return tuple(value)


def tile_grid(
    shape: Sequence[int], tile: int | Sequence[int], overlap: float | Sequence[float]
) -> list[tuple[int, ...]]:
    """Start corners of all tiles covering ``shape``, first axis slowest (C order).

    ``tile`` and ``overlap`` are one value for every axis or one per axis.

    Examples
    --------
    >>> tile_grid((10, 5), (4, 5), 0.25)
    [(0, 0), (3, 0), (6, 0)]
    """
    shape = tuple(shape)
    tiles = _per_axis(tile, len(shape), "tile")
    overlaps = _per_axis(overlap, len(shape), "overlap")
    axes = [tile_starts(n, t, o) for n, t, o in zip(shape, tiles, overlaps)]
    grid: list[tuple[int, ...]] = [()]
    for starts in axes:
        grid = [corner + (s,) for corner in grid for s in starts]
    return grid


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


# ------------------------------------------------------------------------------------ reading tiles


def _axis_index(start: int, length: int, size: int, mode: str) -> slice | np.ndarray:
    """Source indices along one axis for ``[start, start + length)``, padded outside ``[0, size)``.

    A slice when the window lies inside the axis; otherwise an index array. ``reflect`` on an axis of
    one voxel falls back to ``edge``; ``constant`` returns edge indices (the caller zeroes them).
    """
    if start >= 0 and start + length <= size:
        return slice(start, start + length)
    i = np.arange(start, start + length)
    if mode == "reflect" and size > 1:
        period = 2 * (size - 1)
        i = np.mod(i, period)
        return np.where(i < size, i, period - i)
    if mode == "symmetric":
        period = 2 * size
        i = np.mod(i, period)
        return np.where(i < size, i, period - 1 - i)
    return np.clip(i, 0, size - 1)


def _read_window(array: Any, origin: Sequence[int], size: Sequence[int], mode: str) -> np.ndarray:
    """``array[:, origin:origin + size]`` (channel-first), padded with ``mode`` where outside."""
    spatial = array.shape[1:]
    index = [_axis_index(o, s, n, mode) for o, s, n in zip(origin, size, spatial)]
    if all(isinstance(i, slice) for i in index):
        return np.asarray(array[(slice(None), *index)])
    box = tuple(i if isinstance(i, slice) else slice(int(i.min()), int(i.max()) + 1) for i in index)
    window = np.asarray(array[(slice(None), *box)])
    for axis, i in enumerate(index):
        if isinstance(i, np.ndarray):
            window = np.take(window, i - i.min(), axis=axis + 1)
    if mode == "constant":
        for axis, (o, s, n) in enumerate(zip(origin, size, spatial)):
            outside = (slice(0, max(0, min(s, -o))), slice(max(0, min(s, n - o)), s))
            for part in outside:
                window[(slice(None),) * (axis + 1) + (part,)] = 0
    return window


# ---------------------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Geometry:
    """Where tiles go. ``grid`` is the output grid: the image, centred in a box at least one output
    tile large (``lead`` voxels before it); input tiles extend ``halo`` beyond their output tile."""

    image: tuple[int, ...]
    tile: tuple[int, ...]
    halo: tuple[int, ...]
    out_tile: tuple[int, ...]
    grid: tuple[int, ...]
    lead: tuple[int, ...]
    starts: list[tuple[int, ...]]

    @classmethod
    def build(cls, image, tile, halo, overlap) -> "_Geometry":
        out_tile = tuple(t - 2 * h for t, h in zip(tile, halo))
        grid = tuple(max(n, t) for n, t in zip(image, out_tile))
        lead = tuple((g - n) // 2 for g, n in zip(grid, image))
        return cls(image, tile, halo, out_tile, grid, lead, tile_grid(grid, out_tile, overlap))

    def input_origin(self, start: Sequence[int]) -> tuple[int, ...]:
        """Image coordinates of the first input voxel of the tile whose output starts at ``start``."""
        return tuple(s - l - h for s, l, h in zip(start, self.lead, self.halo))

    def crop(self) -> tuple[slice, ...]:
        """Grid -> image along the axes after the first."""
        return tuple(slice(l, l + n) for l, n in zip(self.lead[1:], self.image[1:]))


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# ------------------------------------------------------------------------------------------ stitching


class _Stitcher:
    """Blends tile outputs in a slab of ``depth`` planes of the grid's first axis.

    Planes before the slab are finished and written to ``sink``. Without a sink the weighted sum
    accumulates straight into the full-size result (no slab for the values, only for the weights).
    """

    def __init__(self, geometry: _Geometry, classes: int, depth: int, weights: torch.Tensor, sink: Any):
        self.geo, self.weights, self.sink = geometry, weights, sink
        rest = geometry.grid[1:]
        self.base = 0
        self.wsum = torch.zeros((depth, *rest), dtype=torch.float32)
        if sink is None:
            self.result = torch.zeros((classes, *geometry.grid), dtype=torch.float32)
            self.acc = None
        else:
            self.result = None
            self.acc = torch.zeros((classes, depth, *rest), dtype=torch.float32)

    def add(self, start: Sequence[int], values: torch.Tensor) -> None:
        """Add one tile's output ``(K, *out_tile)`` at grid position ``start``."""
        window = tuple(slice(s, s + t) for s, t in zip(start, self.geo.out_tile))
        local = (slice(window[0].start - self.base, window[0].stop - self.base), *window[1:])
        target = self.result[(slice(None), *window)] if self.acc is None else self.acc[(slice(None), *local)]
        target.addcmul_(values, self.weights)
        self.wsum[local].add_(self.weights)

    def flush(self, upto: int) -> None:
        """Finish grid planes ``[base, upto)``: divide by the weight sum, write, shift the slab."""
        count = upto - self.base
        if count <= 0:
            return
        wsum = self.wsum[:count]
        if self.acc is None:
            self.result[:, self.base : upto].div_(wsum)
        else:
            self._write(torch.div(self.acc[:, :count], wsum))
            _shift(self.acc, count, axis=1)
        _shift(self.wsum, count, axis=0)
        self.base = upto

    def _write(self, planes: torch.Tensor) -> None:
        lead, n = self.geo.lead[0], self.geo.image[0]
        lo, hi = max(self.base, lead), min(self.base + planes.shape[1], lead + n)
        if lo >= hi:
            return
        part = planes[(slice(None), slice(lo - self.base, hi - self.base), *self.geo.crop())]
        self.sink[:, lo - lead : hi - lead] = part.numpy()

    def finish(self) -> Any:
        """Flush the remaining planes; return the sink or the cropped result as numpy."""
        self.flush(self.geo.grid[0])
        if self.sink is not None:
            return self.sink
        crop = tuple(slice(l, l + n) for l, n in zip(self.geo.lead, self.geo.image))
        result = self.result.numpy()[(slice(None), *crop)]
        return result if result.flags.c_contiguous else np.ascontiguousarray(result)


def _shift(buffer: torch.Tensor, count: int, axis: int) -> None:
    """Move ``buffer`` ``count`` planes towards the start along ``axis``; zero the freed planes."""
    depth = buffer.shape[axis]
    head = (slice(None),) * axis
    if count < depth:
        buffer[(*head, slice(0, depth - count))] = buffer[(*head, slice(count, depth))].clone()
    buffer[(*head, slice(max(0, depth - count), depth))] = 0


# ------------------------------------------------------------------------------------------- driver


def _check_options(array: Any, tile: Any, overlap: Any, blend: str, batch_size: int, pad_mode: str):
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
    if blend not in BLEND_MODES:
        raise InputError(f"blend {blend!r} is not one of {BLEND_MODES}")
    _check_size(batch_size, "batch_size")
    if pad_mode not in PAD_MODES:
        raise InputError(f"pad_mode {pad_mode!r} is not one of {PAD_MODES}")
    return tile, overlaps


def _default_device(predictor: Any) -> torch.device:
    if isinstance(predictor, torch.nn.Module):
        for tensor in predictor.parameters():
            return tensor.device
        for tensor in predictor.buffers():
            return tensor.device
    return torch.device("cpu")


def predict_tiled(
    predictor: Predictor,
    array: Any,
    tile: int | Sequence[int],
    overlap: float | Sequence[float] = 0.25,
    blend: str = "gaussian",
    batch_size: int = 4,
    *,
    device: str | torch.device | None = None,
    out: Any = None,
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
    progress: ProgressCallback | None = None,
    pad_mode: str = "reflect",
) -> Any:
    """Run ``predictor`` tile by tile over ``array`` and blend the outputs into ``(K, *spatial)``.

    Parameters
    ----------
    predictor : callable
        Maps a float32 tensor ``(N, C, *tile)`` to ``(N, K, *tile_out)`` (e.g. a network followed by
        softmax). ``tile_out`` is ``tile`` (same padding) or ``tile - 2 * halo`` with an integer
        ``halo`` per axis (valid padding); it is found by running the first batch.
    array : array-like
        Channel-first image ``(C, *spatial)`` of any dtype: numpy, ``np.memmap`` or anything sliced
        like numpy. Only tiles are read and cast (per batch); no full-size copy is made.
    tile : int or sequence of int
        Input tile fed to the predictor, one size per spatial axis, or one fewer to predict a 3D
        stack slice by slice along its first spatial axis (several slices' tiles share a batch).
    overlap : float or sequence of float
        Fraction of an output tile shared with its neighbour, in ``[0, 1)``.
    blend : {"gaussian", "mean"}
        Weighting of overlapping outputs (:func:`blend_weights`).
    batch_size : int
        Tiles per predictor call.
    device : str or torch.device, optional
        Where input batches go; default: the device of the predictor's parameters if it is a
        ``torch.nn.Module``, else the CPU. Outputs come back to the CPU as float32.
    out : array-like, optional
        Sink of shape ``(K, *spatial)`` supporting numpy slice assignment (``np.memmap``, zarr array,
        numpy array); finished planes are written as soon as possible. Returned when given. Its
        contents are undefined if prediction is cancelled or fails.
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
    array-like
        ``out``, or a new float32 numpy array ``(K, *spatial)``.

    Notes
    -----
    Geometry: output tiles of ``tile - 2 * halo`` voxels are placed on the output grid with
    :func:`tile_grid`; each is predicted from the input window that extends ``halo`` voxels further
    on every side, read from the image extended with ``pad_mode``. So a valid-padding network gives
    exactly what it gives untiled on the image padded by ``halo``. Axes shorter than an output tile
    are padded (centred) to one tile and cropped back.

    Peak memory, besides the predictor's own: the result ``K * prod(spatial) * 4`` bytes when ``out``
    is None; a slab of ``depth * prod(spatial[1:]) * 4`` bytes for the weight sums, plus ``K`` times
    that for the weighted sums when ``out`` is given, where ``depth`` is one output tile along the
    first axis plus the spread of first-axis tile starts within one batch (none when a row of tiles
    fills whole batches, one tile step when a batch crosses into the next row; one slice per extra
    slice in a batch when predicting slice by slice); and one batch of input tiles (array dtype and
    float32) and outputs. The first batch also measures the output
    size; for a valid-padding predictor it is predicted a second time, with the halo.
    """
    tile, overlaps = _check_options(array, tile, overlap, blend, batch_size, pad_mode)
    device = torch.device(device) if device is not None else _default_device(predictor)
    image = tuple(int(n) for n in array.shape[1:])
    slicewise = len(tile) == len(image) - 1
    if slicewise:
        tile, overlaps = (1, *tile), (0.0, *overlaps)

    def run(origins: list[tuple[int, ...]]) -> torch.Tensor:
        batch = np.stack([_read_window(array, o, tile, pad_mode) for o in origins])
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

    with torch.inference_mode():
        # Probe: the first batch, placed as if the predictor kept the tile size (same padding).
        geo = _Geometry.build(image, tile, (0,) * len(tile), overlaps)
        first = run([geo.input_origin(s) for s in geo.starts[:batch_size]])
        classes, halo = int(first.shape[1]), _halo(tile, tuple(first.shape[2:]), slicewise)
        if any(halo):  # valid padding: place the tiles again and discard the probe
            geo, first = _Geometry.build(image, tile, halo, overlaps), None
        _check_out(out, classes, image)
        batches = list(_batches(geo.starts, batch_size))
        depth = min(geo.grid[0], geo.out_tile[0] + max(b[-1][0] - b[0][0] for b in batches))
        weights = torch.from_numpy(blend_weights(geo.out_tile, blend).copy())
        stitcher = _Stitcher(geo, classes, depth, weights, out)
        done = 0
        for starts in batches:
            values = first if first is not None else run([geo.input_origin(s) for s in starts])
            first = None
            if tuple(values.shape[1:]) != (classes, *geo.out_tile):
                raise InputError(f"predictor returned {tuple(values.shape)} after {(classes, *geo.out_tile)}: "
                                 "the output shape must not change between batches")
            stitcher.flush(starts[0][0])
            for start, value in zip(starts, values):
                stitcher.add(start, value)
            done += len(starts)
            report(progress, Progress("predict", done, len(geo.starts)))
        return stitcher.finish()


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


def _check_out(out: Any, classes: int, image: tuple[int, ...]) -> None:
    if out is None:
        return
    expected = (classes, *image)
    if tuple(getattr(out, "shape", ())) != expected:
        raise InputError(f"out has shape {tuple(getattr(out, 'shape', ()))}; expected {expected} (K, *spatial)")
