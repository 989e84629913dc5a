"""Named axes: how images travel through deepseg.

Images are ``xarray.DataArray`` objects whose dims are a subset of ``("t", "pln", "ch", "row", "col")``
(the names pyimagej uses, so arrays from Fiji need no renaming):

* ``col`` / ``row``: X / Y, always present;
* ``pln``: Z (planes of a stack);
* ``ch``: channels;
* ``t``: time points (treated as independent images).

Voxel size lives in ``attrs["spacing"]`` (a dict ``dim -> float`` for spatial dims) and its unit in
``attrs["unit"]``. Axes are never guessed from shapes: a plain numpy array needs an explicit axes
string such as ``"ZYX"`` or ``"YXC"`` (letters T, Z, C, Y, X).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import xarray as xr

from .errors import InputError

DIMS: tuple[str, ...] = ("t", "pln", "ch", "row", "col")
SPATIAL: tuple[str, ...] = ("pln", "row", "col")
LETTER_TO_DIM: dict[str, str] = {"T": "t", "Z": "pln", "C": "ch", "Y": "row", "X": "col"}
DIM_TO_LETTER: dict[str, str] = {v: k for k, v in LETTER_TO_DIM.items()}


def dims_from_axes(axes: str) -> tuple[str, ...]:
    """Translate an axes string such as ``"ZCYX"`` into dim names ``("pln", "ch", "row", "col")``.

    >>> dims_from_axes("zyx")
    ('pln', 'row', 'col')
    """
    letters = axes.upper()
    unknown = [a for a in letters if a not in LETTER_TO_DIM]
    if unknown or len(set(letters)) != len(letters) or not {"Y", "X"} <= set(letters):
        raise InputError(
            f"axes {axes!r} is not valid: expected each of the letters T, Z, C, Y, X at most once, "
            f"including Y and X (e.g. 'YX', 'ZYX', 'CYX', 'TZCYX')"
        )
    return tuple(LETTER_TO_DIM[a] for a in letters)


def axes_from_dims(dims: Sequence[str]) -> str:
    """Inverse of :func:`dims_from_axes`: ``("pln", "row", "col") -> "ZYX"``."""
    try:
        return "".join(DIM_TO_LETTER[d] for d in dims)
    except KeyError as err:
        raise InputError(f"dim {err.args[0]!r} is not one of {DIMS}") from None


def as_image(
    data: np.ndarray | xr.DataArray,
    axes: str | None = None,
    *,
    spacing: Mapping[str, float] | None = None,
    unit: str | None = None,
    name: str | None = None,
) -> xr.DataArray:
    """Return ``data`` as a DataArray with deepseg's dim names.

    A DataArray whose dims are already deepseg dims passes through (``axes`` may re-label it).
    A numpy array needs ``axes`` with one letter per array dimension; the shape is never guessed.
    """
    if isinstance(data, xr.DataArray) and axes is None:
        bad = [d for d in data.dims if d not in DIMS]
        if bad:
            raise InputError(
                f"image dims {tuple(data.dims)} include {bad}; expected names from {DIMS} "
                f"(or pass axes='ZYX'-style letters to relabel)"
            )
        if "row" not in data.dims or "col" not in data.dims:
            raise InputError(f"image dims {tuple(data.dims)} must include 'row' and 'col'")
        out = data
    else:
        if axes is None:
            raise InputError(
                f"a plain array of shape {np.shape(data)} needs axes, e.g. axes='YX', 'ZYX' or 'CYX'; "
                "deepseg does not guess axes from shapes"
            )
        dims = dims_from_axes(axes)
        values = data.values if isinstance(data, xr.DataArray) else np.asarray(data)
        if values.ndim != len(dims):
            raise InputError(
                f"axes {axes!r} names {len(dims)} dimensions but the array has shape {values.shape} "
                f"({values.ndim} dimensions)"
            )
        attrs = dict(data.attrs) if isinstance(data, xr.DataArray) else {}
        out = xr.DataArray(values, dims=dims, attrs=attrs, name=getattr(data, "name", None))
    attrs = dict(out.attrs)
    if spacing is not None:
        attrs["spacing"] = {**attrs.get("spacing", {}), **{k: float(v) for k, v in spacing.items()}}
    if unit is not None:
        attrs["unit"] = unit
    out = out.copy(deep=False)
    out.attrs = attrs
    if name is not None:
        out.name = name
    return out


def spatial_dims(image: xr.DataArray) -> tuple[str, ...]:
    """The spatial dims of ``image`` in canonical order (``pln``, ``row``, ``col``)."""
    return tuple(d for d in SPATIAL if d in image.dims)


def channel_first(image: xr.DataArray) -> np.ndarray:
    """Pixels as ``(C, *spatial)`` numpy (a single-channel image gets C = 1). ``t`` must be absent."""
    if "t" in image.dims:
        raise InputError(f"image has a time axis (dims {tuple(image.dims)}); select one time point first")
    order = (("ch",) if "ch" in image.dims else ()) + spatial_dims(image)
    values = image.transpose(*order).values
    return values if "ch" in image.dims else values[np.newaxis]


def spacing_of(image: xr.DataArray) -> dict[str, float]:
    """Voxel size per spatial dim (1.0 where unknown)."""
    given = image.attrs.get("spacing", {}) or {}
    return {d: float(given.get(d, 1.0)) for d in spatial_dims(image)}


def like(
    values: np.ndarray, template: xr.DataArray, *, channel_dim: str | None = None, name: str | None = None
) -> xr.DataArray:
    """Wrap ``values`` shaped ``([K,] *spatial)`` with the spatial dims and calibration of ``template``."""
    dims = ((channel_dim,) if channel_dim else ()) + spatial_dims(template)
    if values.ndim != len(dims):
        raise InputError(f"array of shape {values.shape} does not fit dims {dims}")
    attrs = {k: v for k, v in template.attrs.items() if k in ("spacing", "unit")}
    return xr.DataArray(values, dims=dims, attrs=attrs, name=name)
