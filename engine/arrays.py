"""Array helpers shared by training, prediction, IO and the Fiji bridge.

* mirror padding: :func:`mirror_index`, :func:`padded_indices`, :func:`read_padded`, :func:`crop_padded`
  (read a window of an array, or a memory map, extended beyond its border without a full-size copy);
* cropping: :func:`fit_window`, :func:`centre_crop`;
* z-context stacking for 2.5D networks: :func:`z_context_indices`, :func:`z_context_stack`,
  :func:`plane_patch`;
* slabs along the first axis: :func:`iter_slabs`, and :func:`check_finite` built on it;
* dtype rules: :func:`label_dtype` (predicted labels), :func:`whole_labels` and :func:`label_array`
  (label images read or written), :func:`fit_dtype` (pixels into the types a format holds).

Everything takes numpy arrays or anything sliced like them (``np.memmap``, zarr) and reads only what
it needs.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np

from .errors import InputError

__all__ = [
    "PAD_MODES", "SLAB_ITEMS", "mirror_index", "padded_indices", "read_padded", "crop_padded", "fit_window",
    "centre_crop", "z_context_indices", "z_context_stack", "plane_patch", "iter_slabs", "check_finite",
    "label_dtype", "whole_labels", "label_array", "fit_dtype",
]

PAD_MODES = ("reflect", "symmetric", "edge", "constant")
#: items per slab (16 Mi: 64 MiB of float32) when a large array is processed piece by piece
SLAB_ITEMS = 1 << 24
_FLOAT32_EXACT = 2**24  # integers up to this magnitude are exact in float32


# ------------------------------------------------------------------------------------ mirror padding


def mirror_index(index: int, size: int) -> int:
    """Reflect ``index`` into ``0..size-1`` without repeating the edge (period ``2*(size-1)``).

    >>> [mirror_index(i, 4) for i in range(-3, 7)]
    [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]
    """
    if size < 1:
        raise InputError(f"cannot take slices of an empty stack (size={size})")
    if size == 1:
        return 0
    period = 2 * (int(size) - 1)
    index = int(index) % period
    return period - index if index >= size else index


def padded_indices(start: int, length: int, size: int, mode: str = "reflect") -> slice | np.ndarray:
    """Source indices along one axis of ``size`` for positions ``[start, start + length)``.

    A slice when the window lies inside the axis; otherwise an index array extended like
    ``numpy.pad`` with ``mode``: ``reflect`` (no edge repeat; ``edge`` on an axis of one voxel),
    ``symmetric`` (edge repeated), ``edge``, or ``constant`` (edge indices: the caller fills them).

    >>> padded_indices(-2, 6, 4).tolist(), padded_indices(-2, 6, 4, "symmetric").tolist()
    ([2, 1, 0, 1, 2, 3], [1, 0, 0, 1, 2, 3])
    >>> padded_indices(1, 2, 4)
    slice(1, 3, None)
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


def read_padded(array: Any, origin: Sequence[int], size: Sequence[int], mode: str = "reflect", *,
                channel_axis: bool = True, fill: Any = 0) -> np.ndarray:
    """``array[..., origin:origin + size]`` over the spatial axes (after a channel axis when
    ``channel_axis``), padded with ``mode`` where the window leaves the array (``fill`` for
    ``constant``). Reads only the part inside the array, so it works on memory maps.

    >>> read_padded(np.arange(4), [-2], [7], channel_axis=False).tolist()
    [2, 1, 0, 1, 2, 3, 2]
    >>> read_padded(np.arange(4), [2], [4], "constant", channel_axis=False, fill=-1).tolist()
    [2, 3, -1, -1]
    """
    if mode not in PAD_MODES:
        raise InputError(f"pad mode {mode!r} is not one of {PAD_MODES}")
    lead = 1 if channel_axis else 0
    spatial = array.shape[lead:]
    index = [padded_indices(int(o), int(s), int(n), mode) for o, s, n in zip(origin, size, spatial)]
    head = (slice(None),) * lead
    if all(isinstance(i, slice) for i in index):
        return np.asarray(array[(*head, *index)])
    box = tuple(i if isinstance(i, slice) else slice(int(i.min()), int(i.max()) + 1) for i in index)
    window = np.asarray(array[(*head, *box)])
    for axis, i in enumerate(index):
        if isinstance(i, np.ndarray):
            window = np.take(window, i - i.min(), axis=axis + lead)
    if mode == "constant":
        for axis, (o, s, n) in enumerate(zip(origin, size, spatial)):
            for part in (slice(0, max(0, min(s, -o))), slice(max(0, min(s, n - o)), s)):
                window[(slice(None),) * (axis + lead) + (part,)] = fill
    return window


def crop_padded(array: Any, starts: Sequence[int], size: Sequence[int], *, channel_axis: bool) -> np.ndarray:
    """Crop ``size`` at ``starts`` from ``array`` (spatial axes after an optional channel axis) for
    training patches: images are mirrored beyond the border (``reflect``, or ``symmetric`` where the
    overhang reaches the size of the image), labels (no channel axis) get ``IGNORE_INDEX`` (-1).

    >>> crop_padded(np.arange(3), [-1], [5], channel_axis=False).tolist()
    [-1, 0, 1, 2, -1]
    >>> crop_padded(np.arange(3)[None], [-1], [5], channel_axis=True).tolist()
    [[1, 0, 1, 2, 1]]
    """
    from .losses import IGNORE_INDEX

    if not channel_axis:
        return read_padded(array, starts, size, "constant", channel_axis=False, fill=IGNORE_INDEX)
    shape = array.shape[1:]
    short = any(-st >= n or st + w - n >= n for st, w, n in zip(starts, size, shape))
    return read_padded(array, starts, size, "symmetric" if short else "reflect")


def fit_window(starts: Sequence[int], size: Sequence[int], shape: Sequence[int]) -> list[int]:
    """``starts`` moved so each window of ``size`` lies inside ``shape``; a window larger than its axis
    is placed to cover the axis (start between ``n - size`` and 0).

    >>> fit_window([-3, 8, 2], [4, 4, 10], [10, 10, 6])
    [0, 6, 0]
    """
    return [min(max(int(st), min(0, n - w)), max(0, n - w)) for st, w, n in zip(starts, size, shape)]


def centre_crop(array: Any, shape: Sequence[int]) -> Any:
    """The centred ``shape`` of the last ``len(shape)`` axes (numpy, torch, anything sliceable);
    an odd difference leaves the extra voxel at the end.

    >>> centre_crop(np.arange(10).reshape(2, 5), (3,)).tolist()
    [[1, 2, 3], [6, 7, 8]]
    """
    shape = tuple(int(s) for s in shape)
    full = tuple(array.shape[-len(shape):]) if shape else ()
    if any(s > n for s, n in zip(shape, full)):
        raise InputError(f"cannot crop {shape} out of {full}")
    starts = [(n - s) // 2 for n, s in zip(full, shape)]
    return array[(..., *(slice(st, st + s) for st, s in zip(starts, shape)))]


# --------------------------------------------------------------------------------------- z-context


def z_context_indices(z: int, depth: int, z_context: int) -> list[int]:
    """The slice indices stacked for centre slice ``z`` of a ``depth``-slice stack: ``z_context``
    (odd) slices centred on ``z``, mirrored at the stack ends without repeating the end slice.

    >>> z_context_indices(0, 10, 5)
    [2, 1, 0, 1, 2]
    """
    odd = isinstance(z_context, (int, np.integer)) and not isinstance(z_context, bool) and z_context % 2 == 1
    if not odd or z_context < 1:
        raise InputError(f"z_context={z_context!r}: expected an odd number of slices")
    if not 0 <= int(z) < int(depth):
        raise InputError(f"slice z={z!r} is outside a stack of {depth} slices")
    half = int(z_context) // 2
    return [mirror_index(z + dz, int(depth)) for dz in range(-half, half + 1)]


def z_context_stack(image: Any, z: int, z_context: int, starts: Sequence[int] | None = None,
                    size: Sequence[int] | None = None) -> np.ndarray:
    """Planes around ``z`` of a ``(C, Z, Y, X)`` image as channels ``(C * z_context, *size)``, plane-major
    (all channels of slice ``z - k`` first), optionally cropped at ``starts`` (mirrored beyond the image).
    Only the needed planes are read.

    >>> v = np.arange(3)[None, :, None, None] * np.ones((2, 3, 1, 1))   # C=2, slice value = its index
    >>> z_context_stack(v, 0, 3)[:, 0, 0].tolist()
    [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    """
    if getattr(image, "ndim", None) != 4:
        raise InputError(f"volume of shape {getattr(image, 'shape', None)}: expected (C, Z, Y, X)")
    indices = z_context_indices(z, int(image.shape[1]), z_context)
    size = tuple(size) if size is not None else tuple(image.shape[2:])
    starts = tuple(starts) if starts is not None else (0,) * len(size)
    planes = {i: crop_padded(image[:, i], starts, size, channel_axis=True) for i in set(indices)}
    return np.concatenate([planes[i] for i in indices], axis=0)


def plane_patch(image: Any, z: int, starts: Sequence[int], size: Sequence[int], z_context: int = 1) -> np.ndarray:
    """A 2D patch ``(C * z_context, *size)`` of plane ``z`` of a ``(C, Z, Y, X)`` stack at ``starts``
    (mirrored beyond the image), with the neighbouring planes stacked as channels when ``z_context > 1``
    (2.5D networks), as training and :mod:`engine.activations` read them."""
    if z_context > 1:
        return z_context_stack(image, z, z_context, starts, size)
    return crop_padded(image[:, z], starts, size, channel_axis=True)


# ------------------------------------------------------------------------------------------- slabs


def iter_slabs(length: int, plane_items: int, budget: int = SLAB_ITEMS) -> Iterator[slice]:
    """Slices ``[a, b)`` covering ``range(length)`` in order, each of at most ``budget`` items when
    one position holds ``plane_items`` (at least one position per slab).

    >>> list(iter_slabs(5, 10, budget=20))
    [slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)]
    """
    step = max(1, int(budget) // max(1, int(plane_items)))
    for start in range(0, int(length), step):
        yield slice(start, min(start + step, int(length)))


def check_finite(pixels: Any, name: str) -> None:
    """Raise InputError if a channel-first float image holds NaN or infinity (read in slabs: works
    on memory maps).

    >>> check_finite(np.array([[1.0, np.nan]]), "x")
    Traceback (most recent call last):
    ...
    engine.errors.InputError: image 'x' contains 1 NaN or infinite values in channel 0
    """
    if not np.issubdtype(pixels.dtype, np.floating):
        return
    for index in range(pixels.shape[0]):
        bad = 0
        for slab in iter_slabs(pixels.shape[1], int(np.prod(pixels.shape[2:]))):
            block = np.asarray(pixels[index, slab])
            bad += int(block.size - np.count_nonzero(np.isfinite(block)))
        if bad:
            raise InputError(f"image {name!r} contains {bad} NaN or infinite values in channel {index}")


# -------------------------------------------------------------------------------------- dtype rules


def label_dtype(classes: int) -> np.dtype:
    """The dtype of predicted labels for ``classes`` classes: uint8 up to 256, else uint16.

    >>> label_dtype(2), label_dtype(256), label_dtype(300)
    (dtype('uint8'), dtype('uint8'), dtype('uint16'))
    """
    return np.dtype(np.uint8 if classes <= 256 else np.uint16)


def whole_labels(values: np.ndarray, where: str) -> np.ndarray:
    """Label values as non-negative integers: bool becomes uint8 0/1, whole-number floats the smallest
    unsigned type that fits; fractions, NaN, negative values and non-numbers raise InputError.

    >>> whole_labels(np.array([0.0, 300.0]), "x").dtype, whole_labels(np.array([True]), "x").tolist()
    (dtype('uint16'), [1])
    """
    if values.dtype == bool:
        return values.astype(np.uint8)
    if np.issubdtype(values.dtype, np.floating):
        bad = ~np.isfinite(values) | (values != np.floor(values))
        if bad.any():
            raise InputError(f"{where} holds non-integer values (e.g. {values[bad].flat[0]!r}); "
                             "expected integer labels")
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if low < 0:
            raise InputError(f"{where} holds negative values (minimum {low:g}); labels must be >= 0")
        return values.astype(next(t for t in (np.uint8, np.uint16, np.uint32, np.uint64) if high <= np.iinfo(t).max))
    if not np.issubdtype(values.dtype, np.integer):
        raise InputError(f"{where} has dtype {values.dtype}; expected integer labels")
    if np.issubdtype(values.dtype, np.signedinteger) and values.size and values.min() < 0:
        raise InputError(f"{where} holds negative values (minimum {values.min()}); labels must be >= 0")
    return values


def label_array(values: np.ndarray, where: str) -> np.ndarray:
    """Labels for a label image (file or ImageJ): :func:`whole_labels`, then uint8 (max <= 255) or
    uint16; larger labels raise InputError.

    >>> label_array(np.array([0, 300], np.int64), "x").dtype, label_array(np.array([True, False]), "x").tolist()
    (dtype('uint16'), [1, 0])
    """
    values = whole_labels(np.asarray(values), where)
    high = int(values.max()) if values.size else 0
    if high > 65535:
        raise InputError(f"{where} hold the label {high}; label images hold 0..65535 (uint16)")
    target = np.uint8 if high <= 255 else np.uint16
    return values if values.dtype == target else values.astype(target)


def fit_dtype(values: np.ndarray, allowed: Sequence[str], where: str, hint: str = "") -> np.ndarray:
    """Pixels converted to a dtype in ``allowed`` (numpy codes such as ``"u1"``, ``"f4"``) without losing
    values: bool becomes 0/255 uint8 (ImageJ's binary images); integers the first of uint8, uint16,
    int16, uint32, int32 allowed that holds them, else float32 when allowed and exact (|values| <= 2**24);
    other floats float32. InputError (ending with ``hint``) when nothing holds the values exactly.

    >>> imagej = ("u1", "u2", "i2", "f4")
    >>> [fit_dtype(np.array(v), imagej, "x").dtype.name for v in ([True], [-1, 3], [0, 300], [-1, 70000], [0.5])]
    ['uint8', 'int16', 'uint16', 'float32', 'float32']
    >>> fit_dtype(np.array([True, False]), imagej, "x").tolist()
    [255, 0]
    """
    dtype = values.dtype
    if dtype.str[1:] in allowed:
        return values
    if dtype == bool and "u1" in allowed:
        return values.astype(np.uint8) * np.uint8(255)
    if dtype.kind in "iu":
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        for candidate in ("u1", "u2", "i2", "u4", "i4"):
            info = np.iinfo(np.dtype(candidate))
            if candidate in allowed and info.min <= low and high <= info.max:
                return values.astype(candidate)
        if "f4" in allowed and max(-low, high) <= _FLOAT32_EXACT:
            return values.astype(np.float32)
        names = ", ".join(np.dtype(a).name for a in allowed)
        raise InputError(f"{where}: {dtype} values {low}..{high}, which {names} cannot hold exactly{hint}")
    if dtype.kind == "f" and "f4" in allowed:
        return values.astype(np.float32)
    raise InputError(f"{where}: dtype {dtype} cannot be stored; expected integers, bool or floats{hint}")
