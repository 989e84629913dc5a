"""Objects and measurements: connected components of one class, and a table of one row per object.

:func:`instances` turns the voxels of one class into numbered objects (uint16, or uint32 beyond 65535
objects); :func:`measure_objects` measures each object (voxel count, physical volume or area, surface
area or perimeter by marching cubes / squares with the voxel size, physical centroid, bounding box);
:func:`measure_labels` does both for a label image, :func:`measure_file` for a label file (memory-mapped)
and writes the CSV table and the instance labels. Spacing comes from the image (``attrs["spacing"]``),
overridable. Needs the ``post`` extra (scikit-image) for surface areas and perimeters.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import xarray as xr

from .errors import DeepSegError, InputError

AXIS_LETTERS = {"pln": "z", "row": "y", "col": "x"}


def need_post(module: str) -> Any:
    """Import ``module`` of the ``post`` extra, or say which extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        package = {"skimage": "scikit-image", "fast_simplification": "fast-simplification"}.get(module.split(".")[0],
                                                                                               module.split(".")[0])
        raise DeepSegError(f"this needs {package}: pip install 'deepseg[post]'") from None


def available_memory() -> int:
    """Bytes of memory available to this process now (MemAvailable on Linux)."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def check_memory(needed: int, what: str, limit: int | None = None) -> None:
    """Raise DeepSegError when ``needed`` bytes exceed the available memory (or ``limit``)."""
    have = available_memory() if limit is None else int(limit)
    if needed > have:
        raise DeepSegError(f"{what} needs about {needed / 2**30:.2f} GiB of memory but only {have / 2**30:.2f} GiB "
                           "is available: free memory, or crop/downsample the label image first")


def class_value(cls: str | int, class_names: Sequence[str] | None = None) -> int:
    """The label value of a class given by name (from ``class_names``) or by number.

    >>> class_value("bone", ["background", "bone"]), class_value("2"), class_value(3)
    (1, 2, 3)
    """
    if isinstance(cls, (int, np.integer)):
        value = int(cls)
    else:
        text = str(cls).strip()
        names = [str(n) for n in class_names or []]
        if text in names:
            return names.index(text)
        lowered = [n.lower() for n in names]
        if text.lower() in lowered:
            return lowered.index(text.lower())
        if not text.lstrip("-").isdigit():
            known = f"one of {', '.join(names)}" if names else "a class number (give class names to use names)"
            raise InputError(f"class {text!r} is not known: expected {known}")
        value = int(text)
    if value < 1:
        raise InputError(f"class {value} is background or negative: expected a class number >= 1")
    return value


def class_label(value: int, class_names: Sequence[str] | None = None) -> str:
    """The name of class ``value`` (its number as text when there are no names)."""
    names = list(class_names or [])
    return str(names[value]) if value < len(names) else str(value)


def spacing_tuple(image: xr.DataArray, spacing: Sequence[float] | None = None) -> tuple[float, ...]:
    """Voxel size per spatial dim of ``image`` (pln, row, col order): ``spacing`` if given, else the image's."""
    from .axes import spacing_of, spatial_dims

    dims = spatial_dims(image)
    if spacing is None:
        given = spacing_of(image)
        return tuple(given[d] for d in dims)
    values = tuple(float(s) for s in spacing)
    if len(values) != len(dims) or any(not np.isfinite(s) or s <= 0 for s in values):
        letters = ",".join(AXIS_LETTERS[d] for d in dims)
        raise InputError(f"spacing {','.join(map(str, spacing))!r} does not fit a {len(dims)}D image: expected "
                         f"{len(dims)} positive numbers ({letters})")
    return values


def spatial_values(labels: xr.DataArray) -> np.ndarray:
    """The pixels of a label image with spatial dims only, in pln, row, col order (no copy of a memory map)."""
    from .axes import spatial_dims

    extra = [d for d in labels.dims if d not in ("pln", "row", "col")]
    if extra:
        raise InputError(f"label image dims {tuple(labels.dims)}: expected spatial dims only (Z, Y, X); "
                         f"select one time point / channel first")
    return labels.transpose(*spatial_dims(labels)).data


def instances(labels: np.ndarray, value: int, *, connectivity: int | None = None,
              memory_limit: int | None = None) -> tuple[np.ndarray, int]:
    """Connected components of the voxels equal to ``value``: ``(instance labels, count)``.

    ``connectivity``: 1 (faces), up to the number of dims (corners; the default, full connectivity).
    The result is uint16, or uint32 with more than 65535 objects. ``labels`` may be memory-mapped; the
    mask and the result must fit in memory (DeepSegError with the memory needed otherwise).
    """
    from scipy import ndimage

    ndim = labels.ndim
    connectivity = ndim if connectivity is None else int(connectivity)
    if not 1 <= connectivity <= ndim:
        raise InputError(f"connectivity {connectivity} is not valid for a {ndim}D image: expected 1 to {ndim}")
    check_memory(int(labels.size) * 5, f"labelling the objects of a {'x'.join(map(str, labels.shape))} image",
                 memory_limit)
    mask = np.asarray(labels) == value
    structure = ndimage.generate_binary_structure(ndim, connectivity)
    try:
        out = np.zeros(labels.shape, np.uint16)
        count = ndimage.label(mask, structure, output=out)
    except RuntimeError:  # more than 65535 objects
        out = np.zeros(labels.shape, np.uint32)
        count = ndimage.label(mask, structure, output=out)
    return out, int(count)


def measure_objects(instance_labels: np.ndarray, spacing: Sequence[float], *, class_name: str = "",
                    unit: str | None = None) -> list[dict[str, Any]]:
    """One row per object of ``instance_labels`` (2D or 3D, 0 = background), in label order.

    Columns: ``label``, ``class``, ``voxels``, ``volume`` (3D) or ``area`` (2D) in physical units,
    ``surface_area`` (3D, marching cubes on the object's padded bounding box with the voxel size) or
    ``perimeter`` (2D, marching squares), ``centroid_z/y/x`` (physical), ``bbox_z0/y0/x0`` and
    ``bbox_z1/y1/x1`` (voxel indices, end exclusive) and ``unit``.
    """
    from scipy import ndimage

    ndim = instance_labels.ndim
    if ndim not in (2, 3):
        raise InputError(f"instance labels of shape {instance_labels.shape}: expected a 2D or 3D image")
    spacing = np.asarray(spacing, dtype=float)
    letters = "zyx"[3 - ndim:]
    counts = np.bincount(np.asarray(instance_labels).ravel())
    rows = []
    for index, box in enumerate(ndimage.find_objects(instance_labels), start=1):
        if box is None:
            continue
        crop = np.asarray(instance_labels[box]) == index
        start = np.array([s.start for s in box])
        centroid = (np.array([c.mean() for c in np.nonzero(crop)]) + start) * spacing
        row: dict[str, Any] = {"label": index, "class": class_name, "voxels": int(counts[index])}
        size = float(counts[index] * np.prod(spacing))
        row.update({"volume": size, "surface_area": surface_area(crop, spacing)} if ndim == 3
                   else {"area": size, "perimeter": perimeter(crop, spacing)})
        row.update({f"centroid_{a}": float(c) for a, c in zip(letters, centroid)})
        row.update({f"bbox_{a}0": int(s.start) for a, s in zip(letters, box)})
        row.update({f"bbox_{a}1": int(s.stop) for a, s in zip(letters, box)})
        row["unit"] = unit or "pixel"
        rows.append(row)
    return rows


def surface_area(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Area of the marching-cubes surface (level 0.5) of a 3D binary mask, padded so it is closed."""
    measure = need_post("skimage.measure")
    padded = np.pad(mask.astype(np.float32), 1)
    voxel = tuple(float(s) for s in spacing)
    verts, faces, _, _ = measure.marching_cubes(padded, 0.5, spacing=voxel, method="lorensen")  # as engine.mesh
    return float(measure.mesh_surface_area(verts, faces))


def perimeter(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Length of the marching-squares contours (level 0.5) of a 2D binary mask, holes included."""
    measure = need_post("skimage.measure")
    total = 0.0
    for contour in measure.find_contours(np.pad(mask.astype(np.float32), 1), 0.5):
        steps = np.diff(contour, axis=0) * np.asarray(spacing, dtype=float)
        total += float(np.sqrt((steps ** 2).sum(axis=1)).sum())
    return total


def measure_labels(labels: xr.DataArray, cls: str | int, *, class_names: Sequence[str] | None = None,
                   spacing: Sequence[float] | None = None, connectivity: int | None = None,
                   memory_limit: int | None = None) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Instance labels of class ``cls`` (name or number) of a label image, and their measurements."""
    value = class_value(cls, class_names)
    voxel = spacing_tuple(labels, spacing)
    objects, _ = instances(spatial_values(labels), value, connectivity=connectivity, memory_limit=memory_limit)
    rows = measure_objects(objects, voxel, class_name=class_label(value, class_names), unit=labels.attrs.get("unit"))
    return objects, rows


def with_spacing(image: xr.DataArray, spacing: Sequence[float] | None) -> xr.DataArray:
    """``image`` with its voxel size replaced by ``spacing`` (pln, row, col order; checked), or as it is."""
    from .axes import spatial_dims

    if spacing is None:
        return image
    values = spacing_tuple(image, spacing)
    out = image.copy(deep=False)
    out.attrs = {**image.attrs, "spacing": dict(zip(spatial_dims(image), values))}
    return out


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path, columns: Sequence[str] | None = None) -> Path:
    """Write ``rows`` as a CSV table (atomically); the header is ``columns`` or the first row's keys."""
    from .fileutil import atomic_path

    header = list(columns if columns is not None else (rows[0].keys() if rows else ["label"]))
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=header, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return Path(path)


def write_instances(path: str | Path, objects: np.ndarray, template: xr.DataArray) -> Path:
    """Write instance labels with the calibration of ``template`` (label LUT; > 65535 objects as 32-bit)."""
    from .axes import axes_from_dims, spatial_dims
    from .io import write_image, write_labels

    axes = axes_from_dims(spatial_dims(template))
    if objects.dtype == np.uint16:
        return write_labels(path, objects, axes=axes, template=template)
    image = xr.DataArray(objects, dims=spatial_dims(template),
                         attrs={k: template.attrs[k] for k in ("spacing", "unit") if k in template.attrs})
    return write_image(path, image)  # ImageJ TIFF: exact float32 up to 2**24 objects; .ome.tif: uint32


def measure_file(labels_path: str | Path, cls: str | int, *, csv_path: str | Path | None = None,
                 instances_path: str | Path | None = None, class_names: Sequence[str] | None = None,
                 spacing: Sequence[float] | None = None, connectivity: int | None = None,
                 axes: str | None = None) -> dict[str, Any]:
    """Measure the objects of class ``cls`` in a label file (memory-mapped where possible); write the
    CSV table and the instance labels if asked. Returns ``{"objects", "rows", "class", "unit"}``."""
    from .fileutil import refuse_overwriting
    from .io import read_labels

    refuse_overwriting({"the CSV table": csv_path, "the instance labels": instances_path},
                       {"the label image": labels_path})
    labels = with_spacing(read_labels(labels_path, axes, mmap=True), spacing)
    class_names = class_names or labels.attrs.get("class_names")  # stored by deepseg predict
    objects, rows = measure_labels(labels, cls, class_names=class_names, connectivity=connectivity)
    if csv_path is not None:
        write_csv(rows, csv_path)
    if instances_path is not None:
        write_instances(instances_path, objects, labels)
    value = class_value(cls, class_names)
    return {"objects": len(rows), "rows": rows, "class": class_label(value, class_names),
            "unit": labels.attrs.get("unit")}
