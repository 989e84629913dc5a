"""Post-processing of label images: per class, remove small objects, fill holes, keep the largest
object, morphological opening and closing; in memory or chunk by chunk for volumes larger than RAM.

Steps are written in one small syntax, the same for the CLI, Python and Fiji::

    bone: min-size=500um3, fill-holes=3d, largest; all: closing=1

Groups are separated by ``;``. A group is ``CLASSES: step, step, ...`` where CLASSES is a class name,
a class number, several joined by ``+`` (``1+3``), or ``all`` (every foreground class present; also
what a group without ``CLASSES:`` means). Steps run in the written order (``all``: each step for
each class in increasing order):

``min-size=N``          remove objects smaller than N voxels, or than a physical size such as
                        ``500um3`` (3D) / ``20um2`` (2D) (units nm, um/µm, mm, cm, m; the voxel size
                        of the labels is honoured, anisotropy included)
``fill-holes[=3d|2d]``  fill background enclosed by the class, in 3D (default) or plane by plane
``largest``             keep only the largest object (all of them when several tie)
``opening=R``           morphological opening with an ellipsoid of radius R voxels, or a physical
``closing=R``           radius such as ``1.5um`` (converted per axis: anisotropy-aware)

``none`` (or an empty text) means no post-processing. Objects are face-connected (6-connectivity in
3D, 4 in 2D). Steps never turn one class into another: removed voxels become background (0), and
hole filling and closing only claim background voxels.

:func:`postprocess` works on a DataArray in memory; :func:`postprocess_file` streams a TIFF
(memory-mapped) or zarr label image into a TIFF or zarr output, chunk by chunk: objects and holes are
found across chunk borders (:mod:`engine.components`) and opening/closing read a halo of twice the
radius, so the result equals the in-memory one.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import xarray as xr

from .axes import as_image, spatial_dims
from .components import Components, chunk_regions, connected_components, scratch_array
from .errors import InputError
from .progress import Progress, ProgressCallback, report

__all__ = ["Pipeline", "Group", "Step", "parse_steps", "check_steps", "parse_spacing", "postprocess",
           "postprocess_file", "resolve_steps", "STEP_HELP"]

STEP_HELP = ("min-size=N (voxels) or min-size=500um3 (physical), fill-holes[=3d|2d], largest, opening=R, "
             "closing=R (R in voxels, or physical such as 1.5um)")
_OPS = ("min-size", "fill-holes", "largest", "opening", "closing")
_METRES = {"m": 1.0, "meter": 1.0, "cm": 1e-2, "centimeter": 1e-2, "mm": 1e-3, "millimeter": 1e-3,
           "um": 1e-6, "µm": 1e-6, "μm": 1e-6, "micron": 1e-6, "microns": 1e-6, "micrometer": 1e-6,
           "nm": 1e-9, "nanometer": 1e-9, "pm": 1e-12, "Å": 1e-10, "angstrom": 1e-10}
_VOXELS = ("", "vx", "voxel", "voxels", "px", "pixel", "pixels")
_AMOUNT = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(?:e([+-]?\d+))?\s*"  # number
                     r"([^\d\s^²³.][^\d\s^²³]*)?\s*(?:\^?([123])|([²³]))?$",  # unit, power
                     re.IGNORECASE)
_IN_MEMORY_VOXELS = 2**26  # postprocess_file holds label volumes up to this size in memory (chunks=None)
_AUTO_CHUNKS = (64, 1024, 1024)


# ------------------------------------------------------------------------------------------------ syntax


@dataclass(frozen=True)
class Amount:
    """A number in voxels (``unit`` None) or in a physical unit to the power ``power`` (1, 2 or 3)."""

    value: float
    unit: str | None = None
    power: int = 1

    def __str__(self) -> str:
        number = f"{self.value:g}"
        return number if self.unit is None else f"{number}{self.unit}{self.power if self.power > 1 else ''}"


@dataclass(frozen=True)
class Step:
    """One operation: ``op`` is one of min-size, fill-holes, largest, opening, closing."""

    op: str
    amount: Amount | None = None
    mode: str = ""  # fill-holes: "3d" or "2d"

    def __str__(self) -> str:
        if self.op == "fill-holes":
            return f"fill-holes={self.mode}"
        return self.op if self.amount is None else f"{self.op}={self.amount}"


@dataclass(frozen=True)
class Group:
    """Steps for some classes: ``classes`` holds names or numbers as written, or ``("all",)``."""

    classes: tuple[str, ...]
    steps: tuple[Step, ...]

    def __str__(self) -> str:
        return f"{'+'.join(self.classes)}: {', '.join(str(s) for s in self.steps)}"


@dataclass(frozen=True)
class Pipeline:
    """Parsed post-processing steps; ``str()`` gives the canonical text (``"none"`` when empty)."""

    groups: tuple[Group, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.groups)

    def __str__(self) -> str:
        return "; ".join(str(g) for g in self.groups) or "none"


def parse_steps(text: str | Pipeline | None) -> Pipeline:
    """Parse the step syntax (module docstring); InputError names the offending text and the valid steps.

    >>> str(parse_steps("bone: min-size=500um3, fill-holes, largest; all: closing=1"))
    'bone: min-size=500um3, fill-holes=3d, largest; all: closing=1'
    >>> parse_steps("none")
    Pipeline(groups=())
    """
    if isinstance(text, Pipeline):
        return text
    text = (text or "").strip()
    if text.lower() in ("", "none"):
        return Pipeline()
    groups = []
    for part in text.split(";"):
        if not part.strip():
            continue
        classes, sep, body = part.partition(":")
        if not sep:
            classes, body = "all", part
        names = tuple(n.strip() for n in classes.split("+"))
        if not all(names):
            raise InputError(f"post-processing {part.strip()!r}: expected CLASSES: steps, with CLASSES a class name, "
                             "number, several joined by '+', or 'all' (e.g. 'bone: min-size=100')")
        steps = tuple(_parse_step(s.strip(), text) for s in body.split(",") if s.strip())
        if not steps:
            raise InputError(f"post-processing {part.strip()!r} names no step; valid steps: {STEP_HELP}")
        groups.append(Group(("all",) if "all" in (n.lower() for n in names) else names, steps))
    return Pipeline(tuple(groups))


def _parse_step(text: str, whole: str) -> Step:
    op, sep, value = (t.strip() for t in text.partition("="))
    op = op.lower()
    bad = InputError(f"post-processing step {text!r} (in {whole!r}) is not valid; valid steps: {STEP_HELP}")
    if op not in _OPS:
        raise bad
    if op == "largest":
        if sep:
            raise bad
        return Step(op)
    if op == "fill-holes":
        mode = value.lower() if sep else "3d"
        if mode not in ("2d", "3d"):
            raise bad
        return Step(op, mode=mode)
    if not sep:
        raise bad
    amount = _parse_amount(value, text, bad)
    if op in ("opening", "closing") and amount.power != 1:
        raise InputError(f"post-processing step {text!r}: a radius is a length such as 2 (voxels) or 1.5um, "
                         f"not an area or volume")
    return Step(op, amount)


def _parse_amount(text: str, step: str, bad: InputError) -> Amount:
    match = _AMOUNT.match(text.strip())
    if match is None:
        raise bad
    number, exponent, unit, power, superscript = match.groups()
    value = float(number) * 10.0 ** int(exponent or 0)
    unit = (unit or "").strip()
    if unit.lower() in _VOXELS:
        if power or superscript:
            raise bad
        return Amount(value)
    key = unit if unit in _METRES else unit.lower()
    if key not in _METRES:
        raise InputError(f"post-processing step {step!r}: unknown unit {unit!r}; expected voxels or one of nm, "
                         "um, mm, cm, m (e.g. 500um3, 1.5um)")
    key = "um" if _METRES[key] == 1e-6 else key  # ASCII: the text goes into macros and config.json
    return Amount(value, key, int(power) if power else {"²": 2, "³": 3}.get(superscript or "", 1))


def check_steps(steps: str | Pipeline | None, class_names: Sequence[str]) -> str | None:
    """The canonical text of ``steps`` after checking the syntax and that every named class is one of
    ``class_names``; None for no post-processing."""
    pipeline = parse_steps(steps)
    grid = Grid((), {}, None, list(class_names))
    for group in pipeline.groups:
        for value in grid.classes(group, []):
            if value >= len(class_names):
                raise InputError(f"post-processing class {value} does not exist: the model has {len(class_names)} "
                                 f"classes ({', '.join(class_names)})")
    return str(pipeline) if pipeline else None


def resolve_steps(given: str | Pipeline | None, stored: str | None) -> Pipeline:
    """The steps of a prediction: ``given`` (``"none"`` disables), else the model's ``stored`` default."""
    return parse_steps(stored if given is None else given)


# ------------------------------------------------------------------------------------------------ grid


@dataclass
class Grid:
    """What steps need to know about the labels: spatial dims, voxel size and unit, class names."""

    dims: tuple[str, ...]
    spacing: dict[str, float]
    unit: str | None
    class_names: list[str] | None = None

    def classes(self, group: Group, present: Sequence[int]) -> list[int]:
        """The label values ``group`` applies to (``all``: the foreground values ``present``)."""
        if group.classes == ("all",):
            return [int(v) for v in present if v > 0]
        return [self._value(name) for name in group.classes]

    def _value(self, name: str) -> int:
        if name.isdigit():
            return int(name)
        names = self.class_names or []
        for candidates in (names, [n.lower() for n in names]):
            key = name if candidates is names else name.lower()
            if key in candidates:
                return candidates.index(key)
        listing = f"the classes are {', '.join(names)}" if names else "the labels carry no class names"
        raise InputError(f"post-processing class {name!r} is unknown: {listing} (give a class number, or class names)")

    def voxels(self, amount: Amount, what: str) -> float:
        """A size threshold in voxels (``amount`` in voxels or a physical area/volume)."""
        if amount.unit is None:
            return amount.value
        if amount.power != len(self.dims):
            kind = {2: "an area", 3: "a volume"}.get(amount.power, "a length")
            raise InputError(f"{what}={amount} is {kind} but the labels are {len(self.dims)}D: give "
                             f"{'a volume such as 500um3' if len(self.dims) == 3 else 'an area such as 20um2'}")
        return amount.value * self._scale(amount, what) ** amount.power / math.prod(self.spacing.values())

    def radii(self, amount: Amount, what: str) -> tuple[float, ...]:
        """A radius in voxels per spatial dim."""
        if amount.unit is None:
            return (amount.value,) * len(self.dims)
        scale = self._scale(amount, what)
        return tuple(amount.value * scale / self.spacing[d] for d in self.dims)

    def _scale(self, amount: Amount, what: str) -> float:
        """Factor from ``amount``'s unit to the labels' unit."""
        unit = self.unit if self.unit in _METRES else (self.unit or "").lower()
        if unit not in _METRES:
            raise InputError(f"{what}={amount} needs the voxel size in a physical unit, but the labels have "
                             f"{'unit ' + repr(self.unit) if self.unit else 'none'}: calibrate them, or give the "
                             "spacing (e.g. --spacing 2,0.5,0.5um) or the size in voxels")
        return _METRES[amount.unit] / _METRES[unit]


def _grid(dims: Sequence[str], spacing: Mapping[str, float] | None, unit: str | None,
          class_names: Sequence[str] | None) -> Grid:
    given = dict(spacing or {})
    values = {d: float(given.get(d, 1.0)) for d in dims}
    for d, v in values.items():
        if not (math.isfinite(v) and v > 0):
            raise InputError(f"spacing of {d!r} is {v!r}: expected a positive voxel size")
    return Grid(tuple(dims), values, unit, list(class_names) if class_names else None)


def parse_spacing(text: str, dims: Sequence[str]) -> tuple[dict[str, float], str | None]:
    """``"2,0.5,0.5um"`` (one size per spatial dim, Z first) or ``"0.5um"`` (all dims) -> (spacing, unit).

    >>> parse_spacing("2,0.5,0.5um", ("pln", "row", "col"))
    ({'pln': 2.0, 'row': 0.5, 'col': 0.5}, 'µm')
    """
    match = re.fullmatch(r"\s*([\d.eE+\-,\s]+?)\s*([^\d\s,.+\-][^\d\s,]*)?\s*", text or "")
    try:
        sizes = [float(v) for v in match.group(1).split(",")] if match else []
    except ValueError:
        sizes = []
    if len(sizes) == 1:
        sizes = sizes * len(dims)
    unit = match.group(2) if match else None
    if len(sizes) != len(dims) or any(not (math.isfinite(s) and s > 0) for s in sizes) or \
            (unit is not None and unit not in _METRES and unit.lower() not in _METRES):
        raise InputError(f"spacing {text!r} is not valid: expected one positive size, or one per axis "
                         f"({','.join(d.upper() for d in dims)}), optionally followed by a unit nm, um, mm, cm "
                         "or m (e.g. 2,0.5,0.5um)")
    if unit is not None:
        unit = unit if unit in _METRES else unit.lower()
        unit = "µm" if _METRES[unit] == 1e-6 else unit
    return dict(zip(dims, sizes)), unit


# ------------------------------------------------------------------------------------------------ engine


@dataclass
class _Work:
    """The labels being post-processed (``current``), chunked as ``chunks`` (None: one chunk),
    with scratch arrays in ``scratch`` (None: in memory)."""

    current: Any
    chunks: tuple[int, ...] | None = None
    scratch: Path | None = None
    spare: Any = None
    done: int = 0
    total: int = 0
    progress: ProgressCallback | None = None
    present: list[int] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.current.shape)

    def regions(self) -> Any:
        return chunk_regions(self.shape, self.chunks)

    def components(self, mask: Callable[[np.ndarray], np.ndarray], axes: Sequence[int] | None = None) -> Components:
        return connected_components(lambda r: mask(np.asarray(self.current[r])), self.shape, chunks=self.chunks,
                                    axes=axes, scratch=self.scratch)


def _run(work: _Work, pipeline: Pipeline, grid: Grid) -> None:
    """Apply every step of ``pipeline`` to ``work.current``, in place."""
    plan = [(step, value) for group in pipeline.groups for step in group.steps
            for value in grid.classes(group, work.present)]
    work.total = len(plan)
    for step, value in plan:
        _STEPS[step.op](work, value, step, grid)
        work.done += 1
        report(work.progress, Progress("postprocess", work.done, work.total, f"class {value}: {step}"))


def _remove(work: _Work, value: int, dropped: Callable[[Components], np.ndarray]) -> None:
    """Set to 0 the objects of class ``value`` for which ``dropped`` (per component number) is True."""
    parts = work.components(lambda labels: labels == value)
    drop = dropped(parts)
    drop[0] = False
    if not drop.any():
        return
    for region in work.regions():
        gone = drop[parts.read(region)]
        if gone.any():
            labels = np.array(work.current[region])
            labels[gone] = 0
            work.current[region] = labels


def _min_size(work: _Work, value: int, step: Step, grid: Grid) -> None:
    threshold = grid.voxels(step.amount, step.op)
    _remove(work, value, lambda parts: parts.sizes < threshold * (1 - 1e-9))


def _largest(work: _Work, value: int, step: Step, grid: Grid) -> None:
    _remove(work, value, lambda parts: parts.sizes < (parts.sizes.max() if parts.count else 0))


def _fill_holes(work: _Work, value: int, step: Step, grid: Grid) -> None:
    """Background enclosed by class ``value`` (in 3D, or within each plane) becomes ``value``."""
    ndim = len(work.shape)
    axes = tuple(range(ndim - 2, ndim)) if step.mode == "2d" else None
    parts = work.components(lambda labels: labels != value, axes)
    holes = ~parts.touches_border
    holes[0] = False
    if not holes.any():
        return
    for region in work.regions():
        labels = np.array(work.current[region])
        fill = holes[parts.read(region)] & (labels == 0)
        if fill.any():
            labels[fill] = value
            work.current[region] = labels


def ellipsoid(radii: Sequence[float]) -> np.ndarray:
    """Boolean ellipsoid with semi-axes ``radii`` (voxels, per axis; below 1: flat along that axis).

    >>> ellipsoid((1, 1)).astype(int).tolist()
    [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    """
    extent = [int(math.floor(r + 1e-9)) for r in radii]
    grids = np.meshgrid(*[np.arange(-e, e + 1) for e in extent], indexing="ij")
    total = sum((g / r) ** 2 for g, r, e in zip(grids, radii, extent) if e > 0)
    return np.asarray(total <= 1 + 1e-9) if isinstance(total, np.ndarray) else np.ones([1] * len(radii), bool)


def _morphology(work: _Work, value: int, step: Step, grid: Grid) -> None:
    """Opening (removed voxels -> 0) or closing (only background claimed) of class ``value``, chunk by
    chunk with a halo of twice the radius; outside the image counts as background."""
    from scipy import ndimage

    element = ellipsoid(grid.radii(step.amount, step.op))
    if element.sum() <= 1:
        return
    reach = [s - 1 for s in element.shape]  # twice the extent: erosion and dilation
    operation = ndimage.binary_opening if step.op == "opening" else ndimage.binary_closing
    if work.spare is None:
        work.spare = scratch_array(work.shape, work.current.dtype, work.scratch, "spare")
    for region in work.regions():
        window = tuple(slice(max(r.start - h, 0), min(r.stop + h, n)) for r, h, n in zip(region, reach, work.shape))
        labels = np.asarray(work.current[window])
        pads = [(h - (r.start - w.start), h - (w.stop - r.stop)) for r, w, h in zip(region, window, reach)]
        changed = operation(np.pad(labels == value, pads), element)
        core = tuple(slice(h, h + r.stop - r.start) for r, h in zip(region, reach))
        inner = tuple(slice(r.start - w.start, r.stop - w.start) for r, w in zip(region, window))
        result, mask = np.array(labels[inner]), changed[core]
        if step.op == "opening":
            result[(result == value) & ~mask] = 0
        else:
            result[(result == 0) & mask] = value
        work.spare[region] = result
    work.current, work.spare = work.spare, work.current


_STEPS: dict[str, Callable[[_Work, int, Step, Grid], None]] = {
    "min-size": _min_size, "largest": _largest, "fill-holes": _fill_holes, "opening": _morphology,
    "closing": _morphology}


# ------------------------------------------------------------------------------------------------ in memory


def postprocess(
    labels: xr.DataArray | np.ndarray,
    steps: str | Pipeline,
    *,
    axes: str | None = None,
    spacing: Mapping[str, float] | None = None,
    unit: str | None = None,
    class_names: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
) -> xr.DataArray:
    """Post-process a label image in memory; returns new labels (same dims, dtype and calibration).

    ``labels``: a DataArray (or numpy with ``axes`` such as ``"ZYX"``); a ``t`` axis is processed time
    point by time point. ``steps``: the step syntax (module docstring). ``spacing``/``unit`` override the
    calibration of the labels (physical sizes need it); ``class_names`` let steps name classes.
    """
    image = as_image(labels, axes, spacing=spacing, unit=unit)
    pipeline = parse_steps(steps)
    if "ch" in image.dims:
        raise InputError(f"labels have a channel axis (dims {tuple(image.dims)}); expected one label per voxel")
    if "t" in image.dims:
        parts = [postprocess(image.isel(t=i), pipeline, class_names=class_names, progress=progress)
                 for i in range(image.sizes["t"])]
        return xr.concat(parts, dim="t").transpose(*image.dims).assign_attrs(image.attrs)
    dims = spatial_dims(image)
    values = np.array(image.transpose(*dims).values)
    from .arrays import whole_labels

    values = np.array(whole_labels(values, f"labels {image.name or ''!r}"))
    grid = _grid(dims, image.attrs.get("spacing"), image.attrs.get("unit"), class_names)
    work = _Work(values, progress=progress, present=[int(v) for v in np.unique(values)])
    _run(work, pipeline, grid)
    out = xr.DataArray(work.current, dims=dims, attrs=dict(image.attrs), name=image.name)
    return out.transpose(*image.dims)


# ------------------------------------------------------------------------------------------------ files


def postprocess_file(
    labels_path: str | Path,
    out_path: str | Path,
    steps: str | Pipeline,
    *,
    axes: str | None = None,
    spacing: Mapping[str, float] | str | None = None,
    unit: str | None = None,
    class_names: Sequence[str] | None = None,
    chunks: Sequence[int] | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Post-process a label file (TIFF, memory-mapped, or zarr / OME-Zarr) into ``out_path`` (``.tif`` or
    ``.zarr`` / ``.ome.zarr``), written atomically; the input is never overwritten.

    Volumes up to 2**26 voxels are processed in memory unless ``chunks`` is given; larger ones in
    chunks (default 64 x 1024 x 1024) with scratch files beside the output. ``spacing``: a dict, or a
    text such as ``"2,0.5,0.5um"`` (:func:`parse_spacing`). Returns a summary (paths, shape, steps,
    voxels per class).
    """
    from .chunked_io import is_zarr_path
    from .fileutil import refuse_overwriting

    refuse_overwriting({"the output": out_path}, {"the labels": labels_path})
    pipeline = parse_steps(steps)
    out_path = Path(out_path)
    _output_kind(out_path)
    if not is_zarr_path(labels_path) and _has_time(labels_path, axes):
        return _postprocess_series(labels_path, out_path, pipeline, axes, spacing, unit, class_names, progress)
    volume = _open_labels(labels_path, axes, spacing, unit)
    if class_names is None and volume.kind == "tiff":  # names stored in the label TIFF by deepseg predict
        from .io import read_labels

        class_names = read_labels(labels_path, axes, mmap=True).attrs.get("class_names")
    grid = _grid(volume.dims, volume.spacing, volume.unit, class_names)
    shape = volume.spatial_shape
    if chunks is None and math.prod(shape) > _IN_MEMORY_VOXELS:
        chunks = tuple(min(c, n) for c, n in zip(_AUTO_CHUNKS[-len(shape):], shape))
    with ExitStack() as stack:
        scratch = None
        if chunks is not None:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=".deepseg-postprocess-",
                                                                           dir=out_path.parent.resolve())))
        work = _Work(scratch_array(shape, volume.pixels.dtype, scratch, "labels"),
                     tuple(chunks) if chunks is not None else None, scratch, progress=progress)
        work.present = _copy_in(volume, work)
        _run(work, pipeline, grid)
        counts = _write(work, volume, out_path, class_names)
    names = grid.class_names or []
    return {"labels": str(out_path), "input": str(labels_path), "shape": list(shape), "dims": list(volume.dims),
            "steps": str(pipeline), "chunks": list(chunks) if chunks is not None else None,
            "class_voxels": {(names[v] if v < len(names) else str(v)): int(c) for v, c in enumerate(counts) if c}}


def _open_labels(path: str | Path, axes: str | None, spacing: Mapping[str, float] | str | None,
                 unit: str | None) -> Any:
    """The label volume (:func:`engine.chunked_io.open_volume`), checked, with ``spacing``/``unit`` applied."""
    from .chunked_io import open_volume

    volume = open_volume(path, axes)
    if volume.pixels.shape[0] != 1:
        raise InputError(f"labels {str(path)!r} have {volume.pixels.shape[0]} channels; expected one label per voxel")
    if not np.issubdtype(volume.pixels.dtype, np.integer):
        raise InputError(f"labels {str(path)!r} have dtype {volume.pixels.dtype}; expected integer labels")
    if isinstance(spacing, str):
        spacing, given_unit = parse_spacing(spacing, volume.dims)
        unit = given_unit or unit
    return replace(volume, spacing={**volume.spacing, **dict(spacing or {})}, unit=unit or volume.unit)


def _output_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".zarr"):
        return "zarr"
    if name.endswith((".tif", ".tiff")):
        return "tiff"
    raise InputError(f"output {str(path)!r}: expected a label file .tif, .zarr or .ome.zarr")


def _has_time(path: str | Path, axes: str | None) -> bool:
    from .io import read_image

    return "t" in read_image(path, axes, mmap=True).dims


def _postprocess_series(labels_path, out_path, pipeline, axes, spacing, unit, class_names, progress) -> dict:
    """A time series (TIFF): read whole, each time point post-processed in memory, written at once."""
    from .io import read_labels, write_labels

    image = read_labels(labels_path, axes)
    if isinstance(spacing, str):
        spacing, given_unit = parse_spacing(spacing, spatial_dims(image))
        unit = given_unit or unit
    result = postprocess(image, pipeline, spacing=spacing, unit=unit, class_names=class_names, progress=progress)
    if _output_kind(out_path) != "tiff":
        raise InputError(f"labels {str(labels_path)!r} have a time axis: write them to a .tif, not {out_path.name!r}")
    write_labels(out_path, result)
    return {"labels": str(out_path), "input": str(labels_path), "shape": list(result.shape),
            "dims": list(result.dims), "steps": str(pipeline), "chunks": None}


def _copy_in(volume: Any, work: _Work) -> list[int]:
    """Copy the input labels into ``work.current`` chunk by chunk; returns the label values present."""
    present: set[int] = set()
    for region in work.regions():
        values = np.asarray(volume.pixels[(0, *region)])
        work.current[region] = values
        present.update(int(v) for v in np.unique(values))
    return sorted(present)


def _write(work: _Work, volume: Any, out_path: Path, class_names: Sequence[str] | None = None) -> np.ndarray:
    """Write ``work.current`` to a TIFF or zarr output atomically; returns the voxel count per label value."""
    counts = np.zeros(1, np.int64)
    high = max(work.present, default=0)
    if _output_kind(out_path) == "tiff":
        from .fileutil import atomic_path
        from .io import TiffPlaneWriter, glasbey_lut

        if high > 65535:
            raise InputError(f"labels hold the value {high}; a label TIFF holds 0..65535: write .zarr instead")
        dtype = np.uint8 if high <= 255 else np.uint16
        slab = work.chunks[0] if work.chunks else work.shape[0]
        with atomic_path(out_path) as tmp, TiffPlaneWriter(tmp, volume.dims, work.shape, dtype, spacing=volume.spacing,
                                                           unit=volume.unit, lut=glasbey_lut(),
                                                           class_names=class_names) as writer:
            for start in range(0, work.shape[0], slab):
                values = np.asarray(work.current[start:start + slab])
                counts = _add_counts(counts, values)
                writer.write(volume.dims[0], start, values.astype(dtype))
        return counts
    return _write_zarr(work, volume, out_path, counts)


def _add_counts(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    found = np.bincount(values.ravel().astype(np.int64))
    if len(found) > len(counts):
        counts = np.pad(counts, (0, len(found) - len(counts)))
    counts[: len(found)] += found
    return counts


def _write_zarr(work: _Work, volume: Any, out_path: Path, counts: np.ndarray) -> np.ndarray:
    """A new plain zarr array or OME-Zarr label container, assembled under a temporary name and renamed."""
    from .chunked_io import create_labels, mark_complete, plan_output

    if out_path.exists():
        raise InputError(f"output {str(out_path)!r} exists: delete it or choose another path (a zarr output is "
                         "never replaced)")
    suffix = ".ome.zarr" if out_path.name.lower().endswith(".ome.zarr") else ".zarr"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", suffix=f".tmp{suffix}", dir=out_path.parent))
    try:
        os.rmdir(tmp)
        target = plan_output(tmp, volume)
        chunks = tuple(min(c, n) for c, n in zip(work.chunks or _AUTO_CHUNKS[-len(work.shape):], work.shape))
        array = create_labels(target, volume, dtype=work.current.dtype, chunks=chunks,
                              record={"complete": False, "postprocess": True})
        lead = (0,) * (array.ndim - len(work.shape))
        for region in chunk_regions(work.shape, chunks):
            values = np.asarray(work.current[region])
            counts = _add_counts(counts, values)
            array[lead + region] = values
        mark_complete([p for p in (target.array, target.group) if p is not None])
        os.replace(tmp, out_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return counts


# ------------------------------------------------------------------------------------------------ prediction


def predict_file_postprocessed(model: Any, input_path: str | Path, labels_path: str | Path, steps: Pipeline,
                               **options: Any) -> dict[str, Any]:
    """``predict_file`` into a hidden temporary label file beside ``labels_path``, then ``steps`` from it
    into ``labels_path`` (atomic); the summary counts the post-processed voxels."""
    from .prediction import predict_file

    labels_path = Path(labels_path)
    labels_path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{labels_path.stem}.raw-", suffix=".tif", dir=labels_path.parent)
    os.close(fd)
    raw = Path(name)
    try:
        summary = predict_file(model, input_path, raw, postprocess="none", **options)
        done = postprocess_file(raw, labels_path, steps, class_names=model.class_names)
    finally:
        raw.unlink(missing_ok=True)
    summary.update(labels=str(labels_path), postprocess=str(steps))
    if "class_voxels" in summary:
        summary["class_voxels"] = {n: int(done["class_voxels"].get(n, 0)) for n in model.class_names}
    return summary
