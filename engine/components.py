"""Connected components of binary volumes, in memory or chunk by chunk for volumes larger than RAM.

:func:`connected_components` labels a mask read region by region: each chunk is labelled on its own
(:func:`scipy.ndimage.label`), then the labels that meet across chunk faces are merged with a
union-find (:func:`scipy.sparse.csgraph.connected_components` on the graph of touching pairs). The
result, :class:`Components`, gives every voxel its component number, the voxel count of every
component and whether it touches the image border, all identical to one whole-volume labelling.
Voxels connect through faces (6-connectivity in 3D, 4 in 2D), along all axes or only along
``axes`` (``axes=(1, 2)`` of a ZYX volume: each plane on its own).

>>> import numpy as np
>>> mask = np.array([[1, 1, 0, 1], [0, 1, 0, 1]], bool)
>>> parts = connected_components(mask, chunks=(1, 2))  # four chunks of 1x2 pixels
>>> parts.count, sorted(parts.sizes[1:].tolist())
(2, [2, 3])
>>> bool((parts.read((slice(None), slice(None))) > 0).sum() == mask.sum())
True
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .errors import InputError

Region = tuple[slice, ...]
MaskSource = Callable[[Region], np.ndarray] | Any  # a callable region -> bool array, or an array-like

__all__ = ["Components", "Region", "chunk_regions", "connected_components", "scratch_array", "structure"]


@dataclass
class Components:
    """Connected components of a mask. ``ids`` holds provisional (per-chunk) numbers, ``root`` maps them
    to component numbers ``1..count`` (0: not in the mask); ``sizes[k]`` and ``touches_border[k]``
    describe component ``k`` (index 0 unused). Component numbers depend on the chunking; the
    partition into components does not."""

    ids: Any
    root: np.ndarray
    sizes: np.ndarray
    touches_border: np.ndarray

    @property
    def count(self) -> int:
        return len(self.sizes) - 1

    def read(self, region: Region) -> np.ndarray:
        """Component numbers of the voxels in ``region`` (0 outside the mask)."""
        return self.root[np.asarray(self.ids[region])]


def chunk_regions(shape: Sequence[int], chunks: Sequence[int] | None) -> Iterator[Region]:
    """The chunks of an array of ``shape`` in C order (one region when ``chunks`` is None).

    >>> [tuple((s.start, s.stop) for s in r) for r in chunk_regions((3, 4), (2, 4))]
    [((0, 2), (0, 4)), ((2, 3), (0, 4))]
    """
    chunks = checked_chunks(shape, chunks)
    starts = [range(0, n, c) for n, c in zip(shape, chunks)]
    for corner in itertools.product(*starts):
        yield tuple(slice(a, min(a + c, n)) for a, c, n in zip(corner, chunks, shape))


def checked_chunks(shape: Sequence[int], chunks: Sequence[int] | None) -> tuple[int, ...]:
    """``chunks`` as one positive size per axis (None: the whole shape)."""
    if chunks is None:
        return tuple(max(int(n), 1) for n in shape)
    chunks = tuple(int(c) for c in chunks)
    if len(chunks) != len(shape) or any(c < 1 for c in chunks):
        raise InputError(f"chunks {list(chunks)} must be {len(shape)} positive sizes for shape {tuple(shape)}")
    return chunks


def structure(ndim: int, axes: Sequence[int] | None = None) -> np.ndarray:
    """The face-connectivity structuring element of :func:`scipy.ndimage.label`, connected only along ``axes``."""
    element = np.zeros((3,) * ndim, bool)
    centre = (1,) * ndim
    element[centre] = True
    for axis in range(ndim) if axes is None else axes:
        for side in (0, 2):
            element[centre[:axis] + (side,) + centre[axis + 1:]] = True
    return element


def scratch_array(shape: Sequence[int], dtype: Any, folder: str | Path | None, name: str) -> np.ndarray:
    """A zeroed array in memory (``folder`` None) or memory-mapped from ``folder/name.npy`` (on disk)."""
    if folder is None:
        return np.zeros(tuple(shape), dtype)
    return np.lib.format.open_memmap(Path(folder) / f"{name}.npy", mode="w+", dtype=dtype, shape=tuple(shape))


def connected_components(mask: MaskSource, shape: Sequence[int] | None = None, *,
                         chunks: Sequence[int] | None = None, axes: Sequence[int] | None = None,
                         scratch: str | Path | None = None) -> Components:
    """Label the face-connected components of ``mask``, chunk by chunk.

    ``mask`` is a boolean array-like (numpy, memory map, zarr) or a callable returning the mask of a
    region (``shape`` then required). ``axes``: the axes along which voxels connect (default all);
    the border that :attr:`Components.touches_border` refers to is the image border along those
    axes. ``scratch``: a folder for the provisional numbers (memory-mapped; default in memory).
    """
    read = mask.__getitem__ if not callable(mask) else mask
    shape = tuple(int(n) for n in (mask.shape if shape is None else shape))
    axes = tuple(range(len(shape))) if axes is None else tuple(sorted(set(int(a) for a in axes)))
    from scipy import ndimage

    ids = scratch_array(shape, np.uint32 if math.prod(shape) < 2**32 else np.uint64, scratch, "components")
    element = structure(len(shape), axes)
    counts, touching, total = [np.zeros(1, np.int64)], [np.zeros(0, np.int64)], 0
    for region in chunk_regions(shape, chunks):
        local, found = ndimage.label(np.asarray(read(region), bool), structure=element)
        local = local.astype(ids.dtype, copy=False)
        local[local > 0] += total
        ids[region] = local
        counts.append(np.bincount(local.ravel(), minlength=total + found + 1)[total + 1:])
        touching.append(_on_border(local, region, shape, axes).astype(np.int64))
        total += found
    graph = _touching_pairs(ids, shape, chunks, axes)
    return _merge(ids, total, np.concatenate(counts), np.concatenate(touching), graph)


def _on_border(local: np.ndarray, region: Region, shape: tuple[int, ...], axes: Sequence[int]) -> np.ndarray:
    """Provisional numbers in ``local`` with a voxel on the image border along ``axes``."""
    found = []
    for axis in axes:
        if region[axis].start == 0:
            found.append(np.take(local, 0, axis=axis).ravel())
        if region[axis].stop == shape[axis]:
            found.append(np.take(local, -1, axis=axis).ravel())
    return np.unique(np.concatenate(found)) if found else np.zeros(0, local.dtype)


def _touching_pairs(ids: Any, shape: tuple[int, ...], chunks: Sequence[int] | None,
                    axes: Sequence[int]) -> np.ndarray:
    """``(2, n)`` provisional numbers facing each other across the chunk faces along ``axes``."""
    pairs = [np.zeros((2, 0), np.int64)]
    for region in chunk_regions(shape, chunks):
        for axis in axes:
            stop = region[axis].stop
            if stop >= shape[axis]:
                continue
            before = np.asarray(ids[region[:axis] + (slice(stop - 1, stop),) + region[axis + 1:]]).ravel()
            after = np.asarray(ids[region[:axis] + (slice(stop, stop + 1),) + region[axis + 1:]]).ravel()
            both = (before > 0) & (after > 0)
            if both.any():
                pairs.append(np.unique(np.stack([before[both], after[both]]).astype(np.int64), axis=1))
    return np.concatenate(pairs, axis=1)


def _merge(ids: Any, total: int, counts: np.ndarray, touching: np.ndarray, pairs: np.ndarray) -> Components:
    """Union-find over the touching pairs: provisional number -> component number, sizes, border contact."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as graph_components

    nodes = total + 1
    graph = coo_matrix((np.ones(pairs.shape[1], np.int8), (pairs[0], pairs[1])), shape=(nodes, nodes))
    _, group = graph_components(graph, directed=False)
    _, number = np.unique(group[1:], return_inverse=True)
    root = np.zeros(nodes, np.int64)
    root[1:] = number + 1
    count = int(root.max()) if total else 0
    sizes = np.bincount(root, weights=counts, minlength=count + 1).astype(np.int64)
    sizes[0] = 0
    border = np.zeros(count + 1, bool)
    border[root[touching.astype(np.int64)]] = True
    border[0] = False
    return Components(ids, root, sizes, border)
