"""Scanner and EM formats: DICOM series, NRRD, MRC and HDF5, one small reader per format.

Each reader returns a :class:`Raw` (pixels, their axes letters in storage order, voxel size per deepseg
dim, unit); :func:`engine.io.read_image` names the dims, puts them in canonical order and checks an
``axes=`` override exactly as for TIFF. The libraries are the optional extra ``formats``
(pydicom, pynrrd, mrcfile, h5py), imported only when such a file is read.

=========  =====================================  ==================================================
format     files                                  voxel size (``attrs["spacing"]``, ``attrs["unit"]``)
=========  =====================================  ==================================================
DICOM      folder of a series, or one .dcm file   PixelSpacing, slice positions; mm
NRRD       .nrrd, .nhdr                           ``space directions`` or ``spacings``; ``space units``
MRC        .mrc, .mrcs, .map, .rec                voxel size; Å
HDF5       .h5, .hdf5, .hdf, ``file.h5:/dataset``  ``element_size_um`` (ilastik); µm
=========  =====================================  ==================================================
"""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

import numpy as np

from .errors import DeepSegError, InputError

EXTRA = "pip install 'deepseg[formats]'"
NRRD_SUFFIXES = (".nrrd", ".nhdr")
MRC_SUFFIXES = (".mrc", ".mrcs", ".map", ".rec")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
DICOM_SUFFIXES = (".dcm",)
FORMAT_SUFFIXES = NRRD_SUFFIXES + MRC_SUFFIXES + HDF5_SUFFIXES + DICOM_SUFFIXES
READABLE = ("DICOM (a folder of one series or a .dcm file), NRRD (.nrrd/.nhdr), MRC (.mrc/.mrcs/.map/.rec), "
            "HDF5 (.h5/.hdf5/.hdf, or file.h5:/dataset)")

_DATASET_PATH = re.compile(r"^(?P<file>.*?\.(?:h5|hdf5|hdf)):(?P<dataset>/.*)?$", re.IGNORECASE)
_AXIS_NAMES = {"x": "X", "col": "X", "y": "Y", "row": "Y", "z": "Z", "pln": "Z", "c": "C", "ch": "C",
               "channel": "C", "channels": "C", "t": "T", "time": "T"}
_NRRD_CHANNEL_KINDS = {"vector", "covariant-vector", "normal", "list", "point", "3-color", "rgb-color",
                       "hsv-color", "xyz-color", "4-color", "rgba-color", "complex", "2-vector", "3-vector",
                       "4-vector", "3-gradient", "3-normal", "stub", "scalar"}
_ANATOMICAL = ("left", "right", "anterior", "posterior", "superior", "inferior", "ras", "las", "lps")


@dataclass
class Raw:
    """Pixels as stored (``axes``: one of T, Z, C, Y, X per dimension) with their calibration."""

    data: Any
    axes: str
    kind: str
    spacing: dict[str, float] = field(default_factory=dict)
    unit: str | None = None
    mapped: bool = False  # data is a memory map or another lazy array, not in memory


def _need(module: str, package: str, what: str) -> ModuleType:
    """Import an optional library or raise DeepSegError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise DeepSegError(f"reading {what} needs {package}: {EXTRA}") from err


# ------------------------------------------------------------------------------------------ dispatch


def split_dataset_path(path: str | Path) -> tuple[Path, str | None]:
    """``"scan.h5:/raw/data"`` -> ``(Path("scan.h5"), "/raw/data")``; other paths -> ``(path, None)``."""
    match = _DATASET_PATH.match(str(path))
    if match is None:
        return Path(path), None
    return Path(match["file"]), match["dataset"] or None


def handles(path: str | Path) -> bool:
    """Whether ``path`` is a file, dataset or folder that :func:`read_format` reads."""
    path = Path(path)
    if split_dataset_path(path)[1] is not None:
        return True
    if path.is_dir():
        return bool(dicom_files(path))
    return path.suffix.lower() in FORMAT_SUFFIXES


def read_format(path: str | Path, *, mmap: bool = False) -> Raw:
    """Read one of the formats of this module (see :func:`handles`)."""
    file, dataset = split_dataset_path(path)
    if not file.exists():
        raise FileNotFoundError(f"image {str(file)!r} does not exist")
    if file.is_dir():
        return read_dicom(dicom_files(file), file)
    suffix = file.suffix.lower()
    if suffix in NRRD_SUFFIXES:
        return read_nrrd(file)
    if suffix in MRC_SUFFIXES:
        return read_mrc(file, mmap=mmap)
    if suffix in HDF5_SUFFIXES:
        return read_hdf5(file, dataset)
    if suffix in DICOM_SUFFIXES:
        return read_dicom([file], file)
    raise InputError(f"{str(path)!r} is not one of {READABLE}")


# --------------------------------------------------------------------------------------------- DICOM


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files of ``folder``: ``*.dcm`` and files without a known image suffix that start like
    DICOM (``DICM`` after the 128-byte preamble); hidden files and DICOMDIR are skipped."""
    known = FORMAT_SUFFIXES + (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".txt", ".json", ".csv")
    found = []
    for path in folder.iterdir():
        if path.name.startswith(".") or path.name.upper() == "DICOMDIR" or not path.is_file():
            continue
        suffix = path.suffix.lower()
        if suffix in DICOM_SUFFIXES or (suffix not in known and _dicom_magic(path)):
            found.append(path)
    return sorted(found)


def _dicom_magic(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(132)
    return len(head) == 132 and head[128:] == b"DICM"


def read_dicom(files: Sequence[Path], source: Path) -> Raw:
    """A DICOM series (slices sorted by position along the slice normal) or one multi-frame file.

    Stored values go through RescaleSlope/RescaleIntercept (Hounsfield units for CT): int16 when
    that is exact, else float32. Spacing in mm: PixelSpacing for rows/cols, slice positions for planes.
    """
    pydicom = _need("pydicom", "pydicom", "DICOM")
    slices = []
    for file in files:
        try:
            ds = pydicom.dcmread(file)
        except (pydicom.errors.InvalidDicomError, OSError, ValueError) as err:
            raise InputError(f"{str(file)!r} is not a readable DICOM file ({err})") from err
        if "PixelData" in ds:
            slices.append(ds)
    if not slices:
        raise InputError(f"{str(source)!r} holds no DICOM image (no PixelData); expected a DICOM series")
    _check_one_series(slices, source)
    if len(slices) == 1 and int(slices[0].get("NumberOfFrames", 1) or 1) > 1:
        return _dicom_multiframe(slices[0], source)
    return _dicom_series(slices, source)


def _check_one_series(slices: list[Any], source: Path) -> None:
    series = sorted({str(ds.get("SeriesInstanceUID", "")) for ds in slices})
    if len(series) > 1:
        raise InputError(f"{str(source)!r} mixes {len(series)} DICOM series ({', '.join(series[:3])}...); "
                         "expected one series per folder")
    if len(slices) > 1 and any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in slices):
        raise InputError(f"{str(source)!r} holds several DICOM files with multiple frames; expected one "
                         "multi-frame file or a series of single-frame files")
    first = slices[0]
    for ds in slices[1:]:
        for name, tolerance in (("Rows", 0), ("Columns", 0), ("SamplesPerPixel", 0),
                                ("ImageOrientationPatient", 1e-4), ("PixelSpacing", 1e-6)):
            a, b = _floats(first, name), _floats(ds, name)
            if not _same(a, b, tolerance):
                raise InputError(f"DICOM series {str(source)!r} is inconsistent: {name} is {a} in "
                                 f"{_file(first)} but {b} in {_file(ds)}; expected one shape and orientation")


def _same(a: np.ndarray | None, b: np.ndarray | None, tolerance: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return len(a) == len(b) and bool(np.allclose(a, b, atol=tolerance))


def _floats(ds: Any, name: str, frame: int | None = None) -> np.ndarray | None:
    """A numeric attribute from the dataset, its per-frame or its shared functional groups."""
    value = ds.get(name)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    groups = [per_frame[frame]] if frame is not None and per_frame else []
    groups += list(ds.get("SharedFunctionalGroupsSequence", []))
    for group in groups if value is None else ():
        for item in group:
            inner = item.value[0] if getattr(item, "VR", "") == "SQ" and len(item.value) else None
            if inner is not None and name in inner:
                value = inner.get(name)
                break
        if value is not None:
            break
    if value is None or value == "":
        return None
    return np.atleast_1d(np.asarray(value, dtype=np.float64))


def _file(ds: Any) -> str:
    return repr(Path(str(ds.filename)).name) if getattr(ds, "filename", None) else "a dataset"


def _dicom_series(slices: list[Any], source: Path) -> Raw:
    first = slices[0]
    spacing = _pixel_spacing(first)
    depth = _depths(_floats(first, "ImageOrientationPatient"), [_floats(ds, "ImagePositionPatient") for ds in slices])
    kind = f"DICOM series of {len(slices)} slices" if len(slices) > 1 else "DICOM image"
    if len(slices) > 1 and depth is not None:
        order = np.argsort(depth, kind="stable")
        slices = [slices[i] for i in order]
        spacing["pln"] = _slice_step(depth[order], slices, source)
        kind += " sorted by ImagePositionPatient along the slice normal"
    elif len(slices) > 1:
        slices = sorted(slices, key=lambda ds: int(ds.get("InstanceNumber", 0) or 0))
        spacing.update(_declared_step(first))
        kind += " sorted by InstanceNumber (no ImagePositionPatient)"
    stack = np.stack([_pixels(ds, source) for ds in slices])
    values = _rescale(stack, [_slope_intercept(ds) for ds in slices])
    axes = ("Z" if len(slices) > 1 else "") + "YX" + ("C" if stack.ndim == 4 else "")
    return Raw(values if len(slices) > 1 else values[0], axes, kind, spacing, "mm" if spacing else None)


def _dicom_multiframe(ds: Any, source: Path) -> Raw:
    frames = int(ds.NumberOfFrames)
    spacing = _pixel_spacing(ds)
    depth = _depths(_floats(ds, "ImageOrientationPatient", 0),
                    [_floats(ds, "ImagePositionPatient", i) for i in range(frames)])
    order = np.arange(frames)
    kind = f"DICOM multi-frame file of {frames} frames"
    if depth is not None:
        order = np.argsort(depth, kind="stable")
        spacing["pln"] = _slice_step(depth[order], [ds] * frames, source)
        kind += " sorted by ImagePositionPatient along the slice normal"
    else:
        spacing.update(_declared_step(ds))
    stack = _pixels(ds, source)[order]
    values = _rescale(stack, [_slope_intercept(ds, int(i)) for i in order])
    return Raw(values, "ZYX" + ("C" if stack.ndim == 4 else ""), kind, spacing, "mm" if spacing else None)


def _depths(orientation: np.ndarray | None, positions: list[np.ndarray | None]) -> np.ndarray | None:
    """Each slice's position along the slice normal (row x column direction); None when not recorded."""
    if orientation is None or len(orientation) != 6 or any(p is None for p in positions):
        return None
    normal = np.cross(orientation[:3], orientation[3:])
    return np.array([float(np.dot(p, normal)) for p in positions])


def _declared_step(ds: Any) -> dict[str, float]:
    """Plane spacing from SpacingBetweenSlices (else SliceThickness) when positions are missing."""
    for name in ("SpacingBetweenSlices", "SliceThickness"):
        value = _floats(ds, name, 0)
        if value is not None and value[0] > 0:
            return {"pln": float(value[0])}
    return {}


def _pixel_spacing(ds: Any) -> dict[str, float]:
    pixel = _floats(ds, "PixelSpacing", 0)
    return {} if pixel is None or len(pixel) != 2 else {"row": float(pixel[0]), "col": float(pixel[1])}


def _slice_step(depth: np.ndarray, slices: list[Any], source: Path) -> float:
    steps = np.diff(depth)
    step = float(np.median(steps))
    if step <= 0 or np.any(steps <= 1e-6):
        where = int(np.argmin(steps))
        raise InputError(f"DICOM series {str(source)!r} has two slices at the same position ({_file(slices[where])} "
                         f"and {_file(slices[where + 1])}); expected one slice per position (one series, one echo)")
    if np.max(np.abs(steps - step)) > 0.01 * step:
        raise InputError(f"DICOM series {str(source)!r} is not evenly spaced: slice steps range from "
                         f"{steps.min():.4g} to {steps.max():.4g} mm; a slice is missing or the series is mixed")
    return step


def _pixels(ds: Any, source: Path) -> np.ndarray:
    try:
        return np.asarray(ds.pixel_array)
    except (RuntimeError, NotImplementedError, ValueError, AttributeError) as err:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        raise InputError(f"cannot decode the pixels of {_file(ds)} in {str(source)!r} (transfer syntax "
                         f"{getattr(syntax, 'name', syntax)}): {err}") from err


def _slope_intercept(ds: Any, frame: int | None = None) -> tuple[float, float]:
    slope, intercept = _floats(ds, "RescaleSlope", frame), _floats(ds, "RescaleIntercept", frame)
    return (1.0 if slope is None else float(slope[0])), (0.0 if intercept is None else float(intercept[0]))


def _rescale(stack: np.ndarray, rescale: list[tuple[float, float]]) -> np.ndarray:
    """Apply each slice's slope/intercept: stored dtype when identity, int16 when exact, else float32."""
    slope = np.array([s for s, _ in rescale]).reshape((-1,) + (1,) * (stack.ndim - 1))
    intercept = np.array([i for _, i in rescale]).reshape(slope.shape)
    if np.all(slope == 1) and np.all(intercept == 0):
        return stack
    whole = np.issubdtype(stack.dtype, np.integer) and np.all(slope % 1 == 0) and np.all(intercept % 1 == 0)
    if whole:
        planes = tuple(range(1, stack.ndim))
        low, high = stack.min(axis=planes, keepdims=True), stack.max(axis=planes, keepdims=True)
        ends = np.concatenate([low * slope + intercept, high * slope + intercept])
        if ends.min() >= np.iinfo(np.int16).min and ends.max() <= np.iinfo(np.int16).max:
            return (stack.astype(np.int32) * slope.astype(np.int32) + intercept.astype(np.int32)).astype(np.int16)
    return (stack.astype(np.float32) * slope.astype(np.float32) + intercept.astype(np.float32)).astype(np.float32)


# ---------------------------------------------------------------------------------------------- NRRD


def read_nrrd(path: Path) -> Raw:
    """An NRRD file (pynrrd). NRRD lists axes fastest first: they are reversed to the array's order.

    Axes with a space direction (or kind ``domain``/``space``) are X, Y, Z in that order; vector and
    colour kinds are channels, ``time`` is T. Spacing is the length of each space direction (else
    ``spacings``); the unit is ``space units`` (``units``), mm for an anatomical ``space`` without one.
    """
    nrrd = _need("nrrd", "pynrrd", "NRRD")
    try:
        data, header = nrrd.read(str(path), index_order="C")
    except (nrrd.NRRDError, OSError, ValueError) as err:
        raise InputError(f"{str(path)!r} could not be read as NRRD ({err})") from err
    kinds = [str(k).lower() for k in header.get("kinds", ["domain"] * data.ndim)]
    directions = header.get("space directions")
    steps = _nrrd_steps(header, data.ndim)
    letters, spatial = [], iter("XYZ")
    for index, kind in enumerate(kinds):
        if kind == "time":
            letters.append("T")
        elif kind in _NRRD_CHANNEL_KINDS or (directions is not None and steps[index] is None and kind != "space"):
            letters.append("C")
        else:
            letters.append(next(spatial, "?"))  # a fourth spatial axis: read_image asks for axes=
    names = {"X": "col", "Y": "row", "Z": "pln"}
    spacing = {names[a]: s for a, s in zip(letters, steps) if a in names and s is not None}
    unit = _nrrd_unit(header) if spacing else None
    return Raw(data, "".join(reversed(letters)), f"NRRD kinds {kinds}", spacing, unit)


def _nrrd_steps(header: dict[str, Any], ndim: int) -> list[float | None]:
    """Sample distance per axis (fastest first): length of the space direction, else ``spacings``."""
    if header.get("space directions") is not None:
        return [None if d is None or np.all(np.isnan(np.asarray(d, float))) else float(np.linalg.norm(d))
                for d in header["space directions"]]
    if header.get("spacings") is not None:
        return [None if np.isnan(s) else float(s) for s in header["spacings"]]
    return [None] * ndim


def _nrrd_unit(header: dict[str, Any]) -> str | None:
    units = [str(u) for u in (header.get("space units") or header.get("units") or []) if str(u).strip()]
    if units:
        if len(set(units)) > 1:
            raise InputError(f"NRRD units {units} differ between axes; deepseg needs one unit for X, Y and Z")
        return units[0]
    space = str(header.get("space", "")).lower()
    return "mm" if any(word in space for word in _ANATOMICAL) else None


# ----------------------------------------------------------------------------------------------- MRC


def read_mrc(path: Path, *, mmap: bool = False) -> Raw:
    """An MRC/MRCS file (mrcfile): volumes ZYX, image stacks read as planes; voxel size in Å.

    The header's MAPC/MAPR/MAPS (which axis is stored along columns, rows, sections) name the axes.
    With ``mmap`` the pixels are memory-mapped.
    """
    mrcfile = _need("mrcfile", "mrcfile", "MRC")
    try:
        with mrcfile.mmap(str(path), mode="r", permissive=False) as mrc:
            header, data = mrc.header, mrc.data
            voxel = mrc.voxel_size
            stack = bool(mrc.is_image_stack())
            order = [int(header.maps), int(header.mapr), int(header.mapc)]
            shape, dtype, offset = data.shape, data.dtype, int(data.offset)
            values = None if mmap else np.array(data)
    except (ValueError, OSError) as err:
        raise InputError(f"{str(path)!r} could not be read as MRC ({err})") from err
    if values is None:
        values = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    if sorted(order) != [1, 2, 3]:
        raise InputError(f"MRC {str(path)!r} has MAPS/MAPR/MAPC {order}; expected a permutation of 1, 2, 3")
    axes = "".join("XYZ"[i - 1] for i in order)[-values.ndim:]
    if stack:
        axes = "ZYX"
    sizes = {"col": float(voxel.x), "row": float(voxel.y), "pln": float(voxel.z)}
    spacing = {d: v for d, v in sizes.items() if v > 0 and (d != "pln" or (values.ndim == 3 and not stack))}
    kind = "MRC image stack (images as planes)" if stack else f"MRC MAPS/MAPR/MAPC {order}"
    return Raw(values, axes, kind, spacing, "Å" if spacing else None, mapped=mmap)


# ---------------------------------------------------------------------------------------------- HDF5


def read_hdf5(path: Path, dataset: str | None = None, *, lazy: bool = False) -> Raw:
    """A dataset of an HDF5 file (h5py): ``dataset`` or the file's only dataset.

    Axes come from the dataset's ``axes`` attribute (``"zyx"`` or a list of names), its dimension
    labels (``DIMENSION_LABELS``) or ilastik's ``axistags``; without them a 2D dataset is YX and a 3D
    one ZYX, other axes ``?`` (to be named with ``axes=``). ``element_size_um`` (ilastik/vigra) gives the
    spacing in µm. ``lazy`` keeps the h5py
    dataset (file open) instead of reading it, for chunk-wise access.
    """
    h5py = _need("h5py", "h5py", "HDF5")
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise InputError(f"{str(path)!r} could not be opened as HDF5 ({err})") from err
    try:
        node = _hdf5_dataset(h5py, handle, path, dataset)
        axes, source = _hdf5_axes(node, path)
        spacing = _element_size(node, axes, path)
        kind = f"HDF5 dataset {node.name} ({source})"
        data = node if lazy else node[()]
    except BaseException:
        handle.close()
        raise
    if not lazy:
        handle.close()
    return Raw(data, axes, kind, spacing, "µm" if spacing else None, mapped=lazy)


def _hdf5_dataset(h5py: ModuleType, handle: Any, path: Path, dataset: str | None) -> Any:
    if dataset is not None:
        node = handle.get(dataset)
        if not isinstance(node, h5py.Dataset):
            raise InputError(f"{str(path)!r} has no dataset {dataset!r}; its datasets: {_datasets(h5py, handle)[:8]}")
        return node
    names = _datasets(h5py, handle)
    if len(names) != 1:
        listed = ", ".join(f"{path}:{n}" for n in names[:4]) or "none"
        raise InputError(f"{str(path)!r} holds {len(names)} datasets; name one as file.h5:/path, e.g. {listed}")
    return handle[names[0]]


def _datasets(h5py: ModuleType, handle: Any) -> list[str]:
    names: list[str] = []
    handle.visititems(lambda name, obj: names.append("/" + name) if isinstance(obj, h5py.Dataset) else None)
    return names


def _hdf5_axes(node: Any, path: Path) -> tuple[str, str]:
    for attribute in ("axes", "DIMENSION_LABELS", "axistags"):
        if attribute not in node.attrs:
            continue
        value = node.attrs[attribute]
        if attribute == "axistags":
            value = [axis.get("key", "") for axis in json.loads(_text(value)).get("axes", [])]
        names = list(_text(value)) if isinstance(value, (str, bytes)) else [_text(v) for v in np.ravel(value)]
        letters = "".join(_AXIS_NAMES.get(n.strip().lower(), "?") for n in names)
        if len(letters) == node.ndim and "?" not in letters:
            return letters, f"attribute {attribute}"
        return "?" * node.ndim, f"attribute {attribute} = {names} not understood"
    if node.ndim in (2, 3):
        return "ZYX"[-node.ndim:], "no axes attribute"
    return "?" * node.ndim, "no axes attribute"  # unnamed: read_image asks for axes=


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _element_size(node: Any, axes: str, path: Path) -> dict[str, float]:
    if "element_size_um" not in node.attrs:
        return {}
    sizes = [float(v) for v in np.ravel(node.attrs["element_size_um"])]
    spatial = [letter for letter in axes if letter in "ZYX"]
    letters = list(axes) if len(sizes) == len(axes) else spatial if len(sizes) == len(spatial) else None
    if letters is None:
        raise InputError(f"HDF5 {str(path)}:{node.name} element_size_um {sizes} has neither one value per axis "
                         f"({axes}) nor one per spatial axis")
    names = {"X": "col", "Y": "row", "Z": "pln"}
    return {names[l]: s for l, s in zip(letters, sizes) if l in names}
