"""Chunked volumes: OME-Zarr (NGFF) and plain zarr arrays read lazily, label/probability outputs created
chunk by chunk; memory-mapped TIFF input through the same interface.

:func:`open_volume` gives a :class:`Volume`: a channel-first ``(C, *spatial)`` array-like that reads only
what is indexed (a zarr array or a TIFF memory map underneath), with deepseg's spatial dims, voxel size
and unit. :func:`create_labels` and :func:`create_probabilities` make empty zarr outputs: an NGFF
``labels/<name>`` image beside the image of an OME-Zarr container, a new OME-Zarr container, or a plain
zarr array. NGFF metadata is written with ome-zarr's metadata writers; the pixels are never held whole.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import xarray as xr

from .axes import SPATIAL, dims_from_axes
from .errors import InputError

__all__ = ["ChannelFirst", "Volume", "ZarrOutput", "is_zarr_path", "open_volume", "read_zarr", "plan_output",
           "create_labels", "plan_probabilities", "create_probabilities", "finish_labels", "mark_complete",
           "remove_output", "deepseg_record", "INCOMPLETE_KEY"]

INCOMPLETE_KEY = "deepseg"  # attrs key holding the blockwise bookkeeping ({"complete": bool, ...})

# deepseg dim <-> NGFF axis names; NGFF units are UDUNITS names.
_NGFF_NAMES = {"t": "t", "ch": "c", "pln": "z", "row": "y", "col": "x"}
_FROM_NAME = {"t": "t", "time": "t", "c": "ch", "ch": "ch", "channel": "ch", "z": "pln", "pln": "pln",
              "y": "row", "row": "row", "x": "col", "col": "col"}
_UNITS = {"µm": "micrometer", "nm": "nanometer", "mm": "millimeter", "cm": "centimeter", "m": "meter",
          "Å": "angstrom", "pm": "picometer", "km": "kilometer"}
_UNITS_BACK = {v: k for k, v in _UNITS.items()}


# -------------------------------------------------------------------------------------------- reading


class ChannelFirst:
    """Read-only channel-first ``(C, *spatial)`` view of an array stored in another axis order.

    ``data`` is a zarr array, a memory map or numpy with deepseg ``dims`` (``t`` of size 1 allowed,
    ``ch`` optional). Indexing with integers and slices (steps included) reads only that part.
    """

    def __init__(self, data: Any, dims: Sequence[str]):
        self.data, self.data_dims = data, tuple(dims)
        sizes = dict(zip(self.data_dims, data.shape))
        if sizes.get("t", 1) != 1:
            raise InputError(f"volume has {sizes['t']} time points (dims {self.data_dims}); blockwise prediction "
                             "takes one: store one time point per array")
        self.spatial = tuple(d for d in SPATIAL if d in sizes)
        self.shape = (sizes.get("ch", 1), *(sizes[d] for d in self.spatial))
        self.dtype = np.dtype(data.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key) or len(key) > self.ndim:
            raise IndexError(f"index {key!r} is not supported on a {self.ndim}-d channel-first volume")
        key = key + (slice(None),) * (self.ndim - len(key))
        wanted = dict(zip(("ch", *self.spatial), key))
        index = tuple(0 if d == "t" else wanted[d] for d in self.data_dims)
        values = np.asarray(self.data[index])
        kept = [d for d, k in zip(self.data_dims, index) if not isinstance(k, (int, np.integer))]
        order = [d for d in ("ch", *self.spatial) if d in kept]
        values = values.transpose([kept.index(d) for d in order])
        if "ch" not in self.data_dims:
            values = values[np.newaxis][(key[0],)]
        return values

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        values = self[:]
        return values if dtype is None else values.astype(dtype)


@dataclass
class Volume:
    """A lazily read image: ``pixels`` is channel-first; ``dims`` are its spatial dims (deepseg names).

    ``ngff`` (OME-Zarr only) holds what a label image beside it needs: the container path, its zarr
    format, the NGFF axes and level-0 coordinate transformations.
    """

    pixels: ChannelFirst
    dims: tuple[str, ...]
    spacing: dict[str, float]
    unit: str | None
    name: str
    source: Path
    kind: str  # "ome-zarr", "zarr", "hdf5" or "tiff" (any other file read_image reads)
    axes: str | None = None
    ngff: dict[str, Any] | None = None

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.pixels.shape[1:])


def is_zarr_path(path: str | Path) -> bool:
    """Whether ``path`` names a zarr store or a node inside one (``x.zarr``, ``x.ome.zarr/labels/a``)."""
    path = Path(path)
    if any(part.lower().endswith(".zarr") for part in path.parts):
        return True
    return any((path / marker).exists() for marker in ("zarr.json", ".zarray", ".zgroup"))


def open_volume(path: str | Path, axes: str | None = None) -> Volume:
    """Open an OME-Zarr image (level 0), a zarr array or a TIFF (memory-mapped) without reading pixels.

    ``axes`` (letters such as ``"ZYX"``) names the dims of a zarr array without axis metadata, or
    overrides a TIFF's. An unfinished deepseg output raises :class:`InputError` (never read as complete).
    """
    from .readers import HDF5_SUFFIXES, split_dataset_path

    path = Path(path)
    file, dataset = split_dataset_path(path)
    if dataset is not None or path.suffix.lower() in HDF5_SUFFIXES:
        return _hdf5_volume(file, dataset, path, axes)
    if not path.exists():
        raise FileNotFoundError(f"image {str(path)!r} does not exist")
    if not is_zarr_path(path):
        from .io import read_image

        image = read_image(path, axes=axes, mmap=True)
        spatial = tuple(d for d in SPATIAL if d in image.dims)
        return Volume(ChannelFirst(image.data, image.dims), spatial, dict(image.attrs.get("spacing") or {}),
                      image.attrs.get("unit"), str(image.name), path, "tiff", axes)
    node = _open_node(path)
    _refuse_incomplete(node, path)
    if _is_array(node):
        return _plain_volume(node, path, axes)
    meta = _ngff_metadata(node)
    if "multiscales" not in meta:
        arrays = sorted(name for name, _ in node.arrays())
        raise InputError(f"zarr group {str(path)!r} is not an OME-Zarr image (no multiscales metadata); give one "
                         f"of its arrays, e.g. {str(path / arrays[0]) if arrays else str(path) + '/ARRAY'!r}")
    return _ngff_volume(node, meta, path)


def _hdf5_volume(file: Path, dataset: str | None, path: Path, axes: str | None) -> Volume:
    """An HDF5 dataset read lazily through h5py (the file stays open while the volume is used)."""
    from .readers import read_hdf5

    if not file.exists():
        raise FileNotFoundError(f"image {str(file)!r} does not exist")
    raw = read_hdf5(file, dataset, lazy=True)
    if axes is not None and len(axes) != raw.data.ndim:
        raise InputError(f"axes {axes!r} has {len(axes)} letters but {str(path)!r} has {raw.data.ndim} dimensions "
                         f"{raw.data.shape}; give one letter of T, Z, C, Y, X per dimension")
    if axes is None and "?" in raw.axes:
        raise InputError(f"cannot name the axes of {str(path)!r} (shape {raw.data.shape}, {raw.kind}); pass axes= "
                         "with one letter of T, Z, C, Y, X per dimension, e.g. axes='ZCYX'")
    dims = dims_from_axes(axes or raw.axes)
    spatial = tuple(d for d in SPATIAL if d in dims)
    spacing = {d: v for d, v in raw.spacing.items() if d in spatial}
    return Volume(ChannelFirst(raw.data, dims), spatial, spacing, raw.unit if spacing else None,
                  raw.data.name.rsplit("/", 1)[-1] if dataset else file.stem, path, "hdf5", axes)


def read_zarr(path: str | Path, axes: str | None = None) -> xr.DataArray:
    """Read a (small) zarr/OME-Zarr image whole into a DataArray with deepseg dims and calibration."""
    volume = open_volume(path, axes)
    pixels = np.asarray(volume.pixels)
    dims = ("ch", *volume.dims) if "ch" in volume.pixels.data_dims else volume.dims
    values = pixels if "ch" in dims else pixels[0]
    attrs = {"spacing": volume.spacing, "unit": volume.unit, "source": str(path)}
    return xr.DataArray(values, dims=dims, name=volume.name, attrs={k: v for k, v in attrs.items() if v})


def _open_node(path: Path) -> Any:
    import zarr

    try:
        return zarr.open(str(path), mode="r")
    except Exception as err:  # zarr raises several unrelated types for "not a zarr node"
        raise InputError(f"{str(path)!r} could not be opened as zarr ({type(err).__name__}: {err})") from None


def _is_array(node: Any) -> bool:
    import zarr

    return isinstance(node, zarr.Array)


def _ngff_metadata(group: Any) -> dict[str, Any]:
    """NGFF attributes of a group: under ``ome`` for NGFF 0.5 (zarr v3), top level before."""
    attrs = dict(group.attrs)
    return dict(attrs.get("ome", attrs))


def _refuse_incomplete(node: Any, path: Path) -> None:
    record = dict(node.attrs).get(INCOMPLETE_KEY)
    if isinstance(record, dict) and record.get("complete") is False:
        raise InputError(f"{str(path)!r} is an unfinished deepseg prediction (interrupted); run the same "
                         "`deepseg predict` command again to finish it, or delete it")


def _plain_volume(array: Any, path: Path, axes: str | None) -> Volume:
    dims = _plain_dims(array, path, axes)
    attrs = dict(array.attrs)
    names = [_NGFF_NAMES[d] for d in dims]
    spacing_attr = attrs.get("spacing") or {}
    spacing = {d: float(spacing_attr[n]) for d, n in zip(dims, names) if d in SPATIAL and n in spacing_attr}
    spatial = tuple(d for d in SPATIAL if d in dims)
    return Volume(ChannelFirst(array, dims), spatial, spacing, attrs.get("unit"), _stem(path), path, "zarr", axes)


def _plain_dims(array: Any, path: Path, axes: str | None) -> tuple[str, ...]:
    if axes is not None:
        dims = dims_from_axes(axes)
    else:
        names = getattr(array.metadata, "dimension_names", None) or dict(array.attrs).get("_ARRAY_DIMENSIONS")
        if not names or any(n is None for n in names):
            raise InputError(f"zarr array {str(path)!r} of shape {array.shape} does not name its axes: give "
                             "axes, e.g. --axes ZYX")
        try:
            dims = tuple(_FROM_NAME[str(n).lower()] for n in names)
        except KeyError as err:
            raise InputError(f"zarr array {str(path)!r} has axis {err.args[0]!r}; expected t, c, z, y, x "
                             "(or give axes, e.g. --axes ZYX)") from None
    if len(dims) != len(array.shape):
        raise InputError(f"axes {''.join(_NGFF_NAMES[d] for d in dims).upper()!r} do not fit zarr array "
                         f"{str(path)!r} of shape {array.shape}")
    return dims


def _ngff_volume(group: Any, meta: dict[str, Any], path: Path) -> Volume:
    multiscale = meta["multiscales"][0]
    dataset = multiscale["datasets"][0]  # level 0: full resolution
    array = group[dataset["path"]]
    axes = multiscale.get("axes") or list("tczyx"[-array.ndim:])  # NGFF < 0.3: no axes, always (t, c, z, y, x)
    axes = [{"name": a} if isinstance(a, str) else dict(a) for a in axes]
    dims = tuple(_ngff_dim(a, path) for a in axes)
    scale = _scale(dataset.get("coordinateTransformations", []), multiscale.get("coordinateTransformations", []),
                   len(dims))
    spacing = {d: s for d, s in zip(dims, scale) if d in SPATIAL}
    units = {a.get("unit") for a, d in zip(axes, dims) if d in SPATIAL and a.get("unit")}
    unit = _UNITS_BACK.get(next(iter(units)), next(iter(units))) if len(units) == 1 else None
    ngff = {"container": str(path), "zarr_format": group.metadata.zarr_format,
            "version": multiscale.get("version") or meta.get("version"), "axes": axes,
            "transforms": dataset.get("coordinateTransformations", []),
            "datasets": [{"path": d["path"], "coordinateTransformations": d.get("coordinateTransformations", []),
                          "shape": list(group[d["path"]].shape)} for d in multiscale["datasets"]]}
    spatial = tuple(d for d in SPATIAL if d in dims)
    return Volume(ChannelFirst(array, dims), spatial, spacing, unit, _stem(path), path, "ome-zarr", None, ngff)


def _ngff_dim(axis: dict[str, Any], path: Path) -> str:
    kind = axis.get("type")
    if kind == "time":
        return "t"
    if kind == "channel":
        return "ch"
    name = str(axis.get("name", "")).lower()
    if name not in _FROM_NAME:
        raise InputError(f"OME-Zarr image {str(path)!r} has axis {axis.get('name')!r}; deepseg reads t, c, z, y, x")
    return _FROM_NAME[name]


def _scale(own: list[dict], shared: list[dict], ndim: int) -> list[float]:
    scale = np.ones(ndim)
    for transform in [*own, *shared]:
        if transform.get("type") == "scale" and "scale" in transform:
            scale = scale * np.asarray(transform["scale"], dtype=float)
    return [float(s) for s in scale]


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.zarr", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return name


# -------------------------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class ZarrOutput:
    """Where labels go. ``kind``: ``"labels"`` (NGFF ``labels/<name>`` in an OME-Zarr container),
    ``"ome"`` (a new OME-Zarr container whose image is the labels) or ``"zarr"`` (a plain array).
    ``array`` is the level-0 array path; ``group`` the NGFF image group (None for plain arrays)."""

    kind: str
    path: Path
    array: Path
    group: Path | None = None
    name: str = "deepseg"
    ngff: dict[str, Any] = field(default_factory=dict)

    def exists(self) -> bool:
        return (self.group or self.array).exists()


def plan_output(target: str | Path, volume: Volume, name: str = "deepseg") -> ZarrOutput:
    """Decide where labels for ``volume`` go when the user names ``target``.

    An existing OME-Zarr image container (the input's own, typically) gets ``labels/<name>``; a new
    ``.ome.zarr`` path becomes an OME-Zarr container holding the label image; another ``.zarr`` path a
    plain zarr array.
    """
    target = Path(target)
    if not name or "/" in name or name.startswith("."):
        raise InputError(f"label name {name!r} must be a plain name such as 'deepseg'")
    if target.exists() and not _is_ome_container(target) and not (target / "zarr.json").exists() \
            and not (target / ".zarray").exists():
        raise InputError(f"output {str(target)!r} exists and is not a zarr array or OME-Zarr image")
    if _is_ome_container(target):
        other = open_volume(target)
        if other.spatial_shape != volume.spatial_shape:
            raise InputError(f"OME-Zarr image {str(target)!r} has shape {other.spatial_shape} but the input has "
                             f"{volume.spatial_shape}: labels must match their image")
        group = target / "labels" / name
        return ZarrOutput("labels", target, group / "0", group, name, other.ngff or {})
    if not target.name.lower().endswith(".zarr"):
        raise InputError(f"output {str(target)!r} is not a zarr path: name it *.zarr or *.ome.zarr")
    if target.name.lower().endswith(".ome.zarr"):
        return ZarrOutput("ome", target, target / "0", target, name)
    return ZarrOutput("zarr", target, target, None, name)


def _is_ome_container(path: Path) -> bool:
    for meta_file in ("zarr.json", ".zattrs"):
        file = path / meta_file
        if file.is_file():
            attrs = json.loads(file.read_text()).get("attributes", {}) if meta_file == "zarr.json" \
                else json.loads(file.read_text())
            if "multiscales" in attrs.get("ome", attrs) and "image-label" not in attrs.get("ome", attrs):
                return True
    return False


def _format(zarr_format: int) -> Any:
    from ome_zarr.format import FormatV04, FormatV05

    return FormatV05() if zarr_format == 3 else FormatV04()


def _label_axes(volume: Volume, out: ZarrOutput, channels: bool) -> tuple[list[dict], list[dict], list[str]]:
    """NGFF axes, level-0 transformations and dimension names of an output (channel axis if ``channels``)."""
    if out.ngff and not channels:  # beside an image: its axes and transforms, without the channel axis
        pairs = [(a, i) for i, a in enumerate(out.ngff["axes"]) if a.get("type") != "channel"]
        transforms = [_drop_axes(t, [i for _, i in pairs]) for t in out.ngff["transforms"]]
        axes = [a for a, _ in pairs]
    else:
        dims = (("ch",) if channels else ()) + volume.dims
        unit = _UNITS.get(volume.unit or "", None)
        axes = [{"name": _NGFF_NAMES[d], "type": "channel" if d == "ch" else "space",
                 **({"unit": unit} if unit and d != "ch" else {})} for d in dims]
        transforms = [{"type": "scale", "scale": [1.0 if d == "ch" else volume.spacing.get(d, 1.0) for d in dims]}]
    return axes, transforms, [a["name"] for a in axes]


def _drop_axes(transform: dict, keep: list[int]) -> dict:
    out = dict(transform)
    for key in ("scale", "translation"):
        if key in out:
            out[key] = [out[key][i] for i in keep]
    return out


def create_labels(out: ZarrOutput, volume: Volume, *, dtype: Any, chunks: Sequence[int], record: dict[str, Any],
                  class_names: Sequence[str] = ()) -> Any:
    """Create (or reopen, after an interruption) the empty label array of ``out``; returns the zarr array.

    ``record`` (the blockwise bookkeeping, ``complete`` False) goes into the attributes of the array and
    of its NGFF group. An NGFF label image is registered in ``labels/`` only by :func:`finish_labels`,
    so readers never list an unfinished one.
    """
    import zarr

    zarr_format = int(out.ngff.get("zarr_format", 3)) if out.kind == "labels" else 3
    axes, transforms, names = _label_axes(volume, out, channels=False)
    extra = len(names) - len(volume.dims)  # leading t of size 1
    shape, chunks = (1,) * extra + volume.spatial_shape, (1,) * extra + tuple(chunks)
    attrs = {INCOMPLETE_KEY: record}
    if out.group is None:
        attrs |= _plain_attrs(volume, names)
        return _create_array(zarr, out.array, shape, chunks, dtype, names, attrs, zarr_format)
    if out.kind == "labels":
        zarr.open_group(str(out.group.parent), mode="a", zarr_format=zarr_format)  # labels/ (listed at the end)
    group = _open_group(zarr, out.group, zarr_format, record)
    fmt = _format(zarr_format)
    from ome_zarr.writer import add_metadata, write_multiscales_metadata

    write_multiscales_metadata(group, [{"path": "0", "coordinateTransformations": transforms}], fmt=fmt,
                               axes=axes, name=out.name)
    add_metadata(group, {"image-label": _image_label(class_names, fmt, out.kind == "labels")}, fmt=fmt)
    return _create_array(zarr, out.array, shape, chunks, dtype, names, attrs, zarr_format)


def _open_group(zarr: Any, path: Path, zarr_format: int, record: dict[str, Any]) -> Any:
    """The output group, created with the bookkeeping in its first metadata write (so an interrupted
    creation is still recognised as this prediction), or reopened to resume."""
    return zarr.open_group(str(path), mode="a", zarr_format=zarr_format, attributes={INCOMPLETE_KEY: record})


def _create_array(zarr: Any, path: Path, shape, chunks, dtype, names, attrs, zarr_format: int) -> Any:
    if path.exists():
        array = zarr.open_array(str(path), mode="r+")
        if tuple(array.shape) != tuple(shape) or array.dtype != np.dtype(dtype):
            raise InputError(f"existing zarr array {str(path)!r} has shape {array.shape} {array.dtype}; "
                             f"expected {tuple(shape)} {np.dtype(dtype)}: delete it or choose another output")
        return array
    kwargs: dict[str, Any] = {"dimension_names": names} if zarr_format == 3 else \
        {"chunk_key_encoding": {"name": "v2", "separator": "/"}}
    return zarr.create_array(str(path), shape=shape, chunks=chunks, dtype=dtype, fill_value=0,
                             attributes=attrs, zarr_format=zarr_format, **kwargs)


def _plain_attrs(volume: Volume, names: Sequence[str]) -> dict[str, Any]:
    spacing = {_NGFF_NAMES[d]: volume.spacing[d] for d in volume.dims if d in volume.spacing}
    return {"_ARRAY_DIMENSIONS": list(names), "spacing": spacing, **({"unit": volume.unit} if volume.unit else {})}


def _image_label(class_names: Sequence[str], fmt: Any, beside_image: bool) -> dict[str, Any]:
    """NGFF ``image-label`` metadata: a colour and a ``class`` name per label value (0 transparent)."""
    from .io import glasbey_lut

    lut = glasbey_lut()
    colors = [{"label-value": i, "rgba": [int(c) for c in lut[:, i % 256]] + [0 if i == 0 else 255]}
              for i in range(len(class_names))]
    properties = [{"label-value": i, "class": name} for i, name in enumerate(class_names)]
    source = {"source": {"image": "../../"}} if beside_image else {}
    return {"version": fmt.version, "colors": colors, "properties": properties, **source}


def plan_probabilities(path: str | Path) -> ZarrOutput:
    """Where probabilities go: an OME-Zarr image for ``*.ome.zarr`` (channel axis ``c``), else a plain
    zarr array ``(K, *spatial)``."""
    path = Path(path)
    if not path.name.lower().endswith(".zarr"):
        raise InputError(f"probabilities {str(path)!r}: name a zarr output *.zarr or *.ome.zarr")
    if path.name.lower().endswith(".ome.zarr"):
        return ZarrOutput("ome", path, path / "0", path, "probabilities")
    return ZarrOutput("zarr", path, path, None, "probabilities")


def create_probabilities(out: ZarrOutput, volume: Volume, *, classes: int, dtype: Any, chunks: Sequence[int],
                         record: dict[str, Any], class_names: Sequence[str] = ()) -> Any:
    """Create (or reopen) the probability array of ``out`` (:func:`plan_probabilities`); ``uint8``
    stores ``round(p * 255)`` (attribute ``scale_factor`` 1/255)."""
    import zarr

    axes, transforms, names = _label_axes(volume, out, channels=True)
    shape, chunks = (classes, *volume.spatial_shape), (1, *chunks)
    scale = 1 / 255 if np.dtype(dtype) == np.uint8 else 1.0
    attrs = {INCOMPLETE_KEY: record, "class_names": list(class_names), "scale_factor": scale}
    if out.group is None:
        return _create_array(zarr, out.array, shape, chunks, dtype, names, attrs | _plain_attrs(volume, names[1:]), 3)
    from ome_zarr.writer import write_multiscales_metadata

    group = _open_group(zarr, out.group, 3, record)
    write_multiscales_metadata(group, [{"path": "0", "coordinateTransformations": transforms}], fmt=_format(3),
                               axes=axes, name="probabilities")
    return _create_array(zarr, out.array, shape, chunks, dtype, names, attrs, 3)


def deepseg_record(path: str | Path) -> dict[str, Any] | None:
    """The blockwise bookkeeping stored on a zarr node (None when absent or no zarr node)."""
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception:  # noqa: BLE001 - absent or not zarr: no record
        return None
    record = dict(node.attrs).get(INCOMPLETE_KEY)
    return dict(record) if isinstance(record, dict) else None


def mark_complete(paths: Sequence[Path], **facts: Any) -> None:
    """Set ``complete`` True (and ``facts``) in the bookkeeping of every zarr node in ``paths``, in order."""
    import zarr

    for path in paths:
        node = zarr.open(str(path), mode="r+")
        node.attrs[INCOMPLETE_KEY] = {**dict(node.attrs).get(INCOMPLETE_KEY, {}), **facts, "complete": True}


def finish_labels(out: ZarrOutput) -> None:
    """Register a finished NGFF label image in its container's ``labels`` list (idempotent)."""
    if out.kind != "labels":
        return
    import zarr
    from ome_zarr.writer import add_metadata

    labels = zarr.open_group(str(out.group.parent), mode="r+")
    fmt = _format(labels.metadata.zarr_format)
    listed = list(_ngff_metadata(labels).get("labels", []))
    if out.name not in listed:
        add_metadata(labels, {"labels": [*listed, out.name]}, fmt=fmt)


def write_label_levels(out: ZarrOutput, datasets: Sequence[dict[str, Any]]) -> None:
    """List ``datasets`` (``path`` and ``coordinateTransformations``, level 0 first) as the levels of the NGFF
    image of ``out``, keeping its axes and name (:mod:`engine.pyramid` writes the arrays)."""
    import zarr
    from ome_zarr.writer import write_multiscales_metadata

    group = zarr.open_group(str(out.group), mode="r+")
    multiscale = _ngff_metadata(group)["multiscales"][0]
    write_multiscales_metadata(group, list(datasets), fmt=_format(group.metadata.zarr_format),
                               axes=multiscale.get("axes"), name=multiscale.get("name"))


def remove_output(out: ZarrOutput) -> None:
    """Delete an output node (``--overwrite``) and unlist an NGFF label image."""
    if out.kind == "labels" and out.group.parent.exists():
        import zarr
        from ome_zarr.writer import add_metadata

        labels = zarr.open_group(str(out.group.parent), mode="r+")
        listed = [n for n in _ngff_metadata(labels).get("labels", []) if n != out.name]
        add_metadata(labels, {"labels": listed}, fmt=_format(labels.metadata.zarr_format))
    node = out.group or out.array
    if node.exists():
        shutil.rmtree(node)
