"""Read and write images and label images as named-axes ``xarray.DataArray`` (tifffile + Pillow).

Reading
    TIFF (ImageJ hyperstacks, OME-TIFF, plain single- or multi-page), PNG, JPEG, BMP, and folders
    of 2D slices (stacked along ``pln`` in natural order: ``img2`` before ``img10``). Dims always
    come back in deepseg's canonical order ``(t, pln, ch, row, col)`` (ImageJ's TZCYX), with
    ``attrs["spacing"]`` / ``attrs["unit"]`` when the file is calibrated, ``attrs["source"]`` (the
    path) and ``attrs["axes_source"]`` (where the axes came from). Micrometres always read back as
    ``"µm"`` (ImageJ writes ``micron``). DICOM series, NRRD, MRC and HDF5 go through
    :mod:`engine.readers` (optional extra ``formats``) and come back the same way.

Writing
    ``.tif`` / ``.tiff``: ImageJ hyperstack that Fiji opens with its calibration (uint8, uint16,
    int16 or float32; other types are converted when lossless or float64 -> float32).
    ``.ome.tif`` / ``.ome.tiff``: OME-TIFF (keeps int8/int32/uint32/float64 too).
    ``.png``: 2D grayscale uint8/uint16 or RGB(A) uint8. Every write is atomic.
    :class:`TiffPlaneWriter` fills an ImageJ TIFF slab by slab (results larger than memory).
    Dtype rules (bool, large integers, labels) are :mod:`engine.arrays`'s, shared with the Fiji bridge.

Label images are written by :func:`write_labels` as uint8/uint16 with a glasbey-like LUT so
Fiji shows each label in its own colour, and read back by :func:`read_labels` as integers.
"""

from __future__ import annotations

import json
import re
import warnings
import xml.etree.ElementTree as ElementTree
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import xarray as xr

from .arrays import fit_dtype, label_array, whole_labels
from .axes import DIMS, as_image, axes_from_dims, dims_from_axes, spatial_dims
from .errors import InputError
from .fileutil import atomic_path, full_suffix
from .readers import FORMAT_SUFFIXES

TIFF_SUFFIXES = (".tif", ".tiff")
PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
READ_SUFFIXES = TIFF_SUFFIXES + PILLOW_SUFFIXES + FORMAT_SUFFIXES
READABLE = ("TIFF (.tif/.tiff: ImageJ, OME or plain), PNG, JPEG, BMP, a folder of 2D slices, DICOM (a series "
            "folder or .dcm), NRRD (.nrrd/.nhdr), MRC (.mrc/.mrcs/.map/.rec) or HDF5 (.h5/.hdf5, file.h5:/dataset)")
WRITABLE = ".tif/.tiff (ImageJ hyperstack), .ome.tif/.ome.tiff (OME-TIFF) or .png"

# tifffile's axis letters -> deepseg dims. 'I' / 'Q' are tifffile's names for "a sequence of
# pages" / "unknown": ImageJ opens such pages as the slices of a stack, so they become planes.
_TIFF_LETTERS = {"T": "t", "Z": "pln", "C": "ch", "S": "ch", "Y": "row", "X": "col", "I": "pln", "Q": "pln"}
_MICRO = {"micron", "microns", "um", "µm", "μm", "\\u00b5m"}
_OME_UNITS = {"m", "dm", "cm", "mm", "µm", "nm", "pm", "Å", "in", "pixel"}
_OME_ALIASES = {"inch": "in", "angstrom": "Å", "pixels": "pixel"}
_UINT32_MAX = 2**32 - 1
_PNG_KEY = "deepseg"


# --------------------------------------------------------------------------------------- reading


def read_image(path: str | Path, axes: str | None = None, *, mmap: bool = False) -> xr.DataArray:
    """Read an image file or a folder of 2D slices.

    Parameters
    ----------
    path : str or Path
        A TIFF, PNG, JPEG or BMP file, or a folder of 2D slices (stacked along ``pln``); a DICOM
        series folder or .dcm file, NRRD, MRC or HDF5 (``file.h5:/dataset``): see :mod:`engine.readers`.
    axes : str, optional
        Override the file's axes, one letter of T, Z, C, Y, X per dimension stored in the file
        (e.g. ``"CYX"`` for a plain 3-page TIFF that holds channels). For a folder, the axes of
        each slice file.
    mmap : bool
        Memory-map an uncompressed TIFF instead of loading it (for volumes larger than RAM).
        Where that is impossible (compressed TIFF, PNG, folder) the image is read with a warning.

    Returns
    -------
    xarray.DataArray
        Dims in canonical order ``(t, pln, ch, row, col)``; ``name`` is the file stem.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    InputError
        The file is not a readable image, or ``axes`` does not fit it.
    """
    from .readers import handles

    path = Path(path)
    if handles(path):  # DICOM, NRRD, MRC, HDF5 (engine.readers)
        image = _read_format(path, axes, mmap=mmap)
    elif not path.exists():
        raise FileNotFoundError(f"image {str(path)!r} does not exist")
    elif path.is_dir():
        image = _read_folder(path, axes, mmap=mmap)
    else:
        image = _read_file(path, axes, mmap=mmap)
    image.name = _stem(path)
    image.attrs["source"] = str(path)
    return image


def read_labels(path: str | Path, axes: str | None = None, *, mmap: bool = False) -> xr.DataArray:
    """Read a label image as non-negative integers (one class or object id per voxel).

    Bool images become uint8; float images holding only whole numbers become the smallest
    unsigned type that fits. A channel axis of size 1 is dropped.

    Raises
    ------
    InputError
        The file holds several channels, negative values or non-integer values.
    """
    image = read_image(path, axes, mmap=mmap)
    if "ch" in image.dims:
        if image.sizes["ch"] != 1:
            raise InputError(
                f"label image {str(path)!r} has {image.sizes['ch']} channels (dims {tuple(image.dims)}); "
                "expected a single-channel integer image (e.g. 8/16-bit grayscale or palette)"
            )
        image = image.isel(ch=0)
    values = whole_labels(image.data, f"label image {str(path)!r}")
    return image if values is image.data else image.copy(data=values)


def list_images(folder: str | Path) -> list[Path]:
    """Image files in ``folder`` that :func:`read_image` understands, in natural order.

    Hidden files (names starting with ``.``, such as unfinished atomic writes) are skipped.

    >>> sorted(["img10.tif", "img2.tif"], key=natural_key)
    ['img2.tif', 'img10.tif']
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"image folder {str(folder)!r} does not exist")
    if not folder.is_dir():
        raise InputError(f"{str(folder)!r} is not a folder; expected a folder of image files")
    found = [
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in READ_SUFFIXES
    ]
    return sorted(found, key=lambda p: natural_key(p.name))


def natural_key(name: str) -> tuple:
    """Sort key that orders digit runs by value (``img2`` before ``img10``)."""
    parts = re.split(r"(\d+)", name.lower())
    return tuple((0, int(p), p) if p.isdigit() else (1, 0, p) for p in parts) + (name,)


def _read_file(path: Path, axes: str | None, *, mmap: bool) -> xr.DataArray:
    import tifffile
    from PIL import UnidentifiedImageError

    suffix = path.suffix.lower()
    if suffix not in READ_SUFFIXES:
        raise InputError(f"{str(path)!r} is not a supported image file; expected {READABLE}")
    try:
        if suffix in TIFF_SUFFIXES:
            return _read_tiff(path, axes, mmap=mmap)
        if mmap:
            _warn_not_mapped(path, "only uncompressed TIFF files can be memory-mapped")
        return _read_pillow(path, axes)
    except InputError:
        raise
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except (tifffile.TiffFileError, UnidentifiedImageError, OSError, ValueError, KeyError, IndexError) as err:
        raise InputError(
            f"{str(path)!r} could not be read as an image ({type(err).__name__}: {err}); "
            f"supported formats: {READABLE}"
        ) from err


def _read_format(path: Path, axes: str | None, *, mmap: bool) -> xr.DataArray:
    """DICOM, NRRD, MRC or HDF5 (:mod:`engine.readers`), named and calibrated like a TIFF."""
    from .readers import read_format

    raw = read_format(path, mmap=mmap)
    if mmap and not raw.mapped:
        _warn_not_mapped(path, f"{raw.kind.split()[0]} files are read whole (only TIFF and MRC are memory-mapped)")
    return _named(raw.data, raw.axes, axes, raw.kind, path, raw.spacing, _normalise_unit(raw.unit))


def _read_tiff(path: Path, axes: str | None, *, mmap: bool) -> xr.DataArray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise InputError(f"{str(path)!r} holds no image data; expected {READABLE}")
        file_axes = tif.series[0].axes
        kind = "ImageJ" if tif.is_imagej else "OME" if tif.is_ome else "TIFF"
        spacing, unit = _tiff_calibration(tif)
        names = _class_names_property(tif)
        data = _memmap_tiff(path) if mmap else None
        if data is None:
            data = tif.series[0].asarray()
    image = _named(data, file_axes, axes, kind, path, spacing, unit)
    if names:
        image.attrs["class_names"] = names
    return image


CLASS_NAMES_PROPERTY = "deepseg.class_names"  # an ImageJ image property of label TIFFs (imp.getProp in Fiji)


def _class_names_property(tif: Any) -> list[str] | None:
    """Class names stored in a label TIFF's ImageJ properties by deepseg (comma-separated), if any."""
    properties = (tif.imagej_metadata or {}).get("Properties") if tif.is_imagej else None
    text = properties.get(CLASS_NAMES_PROPERTY) if isinstance(properties, dict) else None
    return [n.strip() for n in str(text).split(",")] if text else None


def _memmap_tiff(path: Path) -> np.ndarray | None:
    import tifffile

    try:
        return tifffile.memmap(path, series=0, mode="r")
    except ValueError as err:
        _warn_not_mapped(path, f"{err} (compressed or scattered pixel data)")
        return None


def _warn_not_mapped(path: Path, why: str) -> None:
    warnings.warn(f"{str(path)!r} is read into memory instead of memory-mapped: {why}", UserWarning, stacklevel=4)


def _read_pillow(path: Path, axes: str | None) -> xr.DataArray:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        mode = im.mode
        if mode in ("PA", "CMYK", "YCbCr", "LAB", "HSV"):
            im, mode = im.convert("RGBA" if mode == "PA" else "RGB"), f"{mode} converted to RGB"
        data = np.asarray(im)
        text = im.info.get(_PNG_KEY) if isinstance(im.info.get(_PNG_KEY), str) else None
    if data.dtype == bool:
        data = data.astype(np.uint8)
    file_axes = "YX" if data.ndim == 2 else "YXS"
    spacing, unit = _png_calibration(text)
    return _named(data, file_axes, axes, f"image mode {mode!r}", path, spacing, unit)


def _read_folder(folder: Path, axes: str | None, *, mmap: bool) -> xr.DataArray:
    files = list_images(folder)
    if not files:
        raise InputError(f"folder {str(folder)!r} holds no image files; expected {READABLE}")
    if mmap:
        _warn_not_mapped(folder, "a folder of slices is stacked in memory")
    first = read_image(files[0], axes)
    if "pln" in first.dims or "t" in first.dims:
        raise InputError(
            f"{str(files[0])!r} has dims {tuple(first.dims)}; a folder must hold 2D slices (row, col[, ch])"
        )
    stack = np.empty((len(files),) + first.shape, dtype=first.dtype)
    stack[0] = first.values
    for index, file in enumerate(files[1:], start=1):
        plane = read_image(file, axes)
        if plane.dims != first.dims or plane.shape != first.shape or plane.dtype != first.dtype:
            raise InputError(
                f"slice {str(file)!r} is {plane.dtype} {dict(plane.sizes)} but the first slice "
                f"{files[0].name!r} is {first.dtype} {dict(first.sizes)}; all slices must match"
            )
        stack[index] = plane.values
    dims = ("pln",) + tuple(first.dims)
    image = xr.DataArray(stack, dims=dims).transpose(*[d for d in DIMS if d in dims])
    image.attrs = {k: v for k, v in first.attrs.items() if k in ("spacing", "unit")}
    image.attrs["axes_source"] = f"folder of {len(files)} slices stacked along 'pln' ({first.attrs['axes_source']})"
    return image


def _named(
    data: np.ndarray,
    file_axes: str,
    axes: str | None,
    kind: str,
    path: Path,
    spacing: Mapping[str, float],
    unit: str | None,
) -> xr.DataArray:
    """Name the dims of ``data`` (stored as ``file_axes``) and put them in canonical order."""
    if axes is not None:
        if len(axes) != data.ndim:
            raise InputError(
                f"axes {axes!r} has {len(axes)} letters but {str(path)!r} holds {data.ndim} dimensions "
                f"(shape {data.shape}, stored as {file_axes!r}); give one letter of T, Z, C, Y, X per dimension"
            )
        dims, source = dims_from_axes(axes), f"axes argument {axes!r} (file: {kind} {file_axes!r})"
    else:
        data, dims = _dims_from_file(data, file_axes, path)
        source = f"{kind} axes {file_axes!r}"
        if {"I", "Q"} & set(file_axes):
            source += "; TIFF pages read as planes 'pln', as ImageJ opens them as slices"
    order = [d for d in DIMS if d in dims]
    data = np.transpose(data, [dims.index(d) for d in order])
    attrs: dict[str, Any] = {"axes_source": source}
    kept = {d: v for d, v in spacing.items() if d in order}
    if kept:
        attrs["spacing"] = kept
    if unit:
        attrs["unit"] = unit
    return xr.DataArray(data, dims=order, attrs=attrs)


def _dims_from_file(data: np.ndarray, file_axes: str, path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    """Map tifffile letters to dims; drop size-1 axes that are unknown or repeat a dim."""
    mapped = [_TIFF_LETTERS.get(letter) for letter in file_axes]
    drop = [i for i, d in enumerate(mapped) if d is None and data.shape[i] == 1]
    for dim in set(d for d in mapped if d is not None):
        where = [i for i, d in enumerate(mapped) if d == dim]
        if len(where) > 1:
            drop += [i for i in where if data.shape[i] == 1][: len(where) - 1]
    kept = [i for i in range(data.ndim) if i not in drop]
    dims = [mapped[i] for i in kept]
    if None in dims or len(set(dims)) != len(dims) or not {"row", "col"} <= set(dims):
        raise InputError(
            f"cannot name the axes {file_axes!r} (shape {data.shape}) of {str(path)!r}; "
            f"pass axes= with one letter of T, Z, C, Y, X per dimension, e.g. axes='ZCYX'"
        )
    return np.squeeze(data, axis=tuple(drop)) if drop else data, tuple(dims)


def _tiff_calibration(tif: Any) -> tuple[dict[str, float], str | None]:
    """Voxel size and unit from ImageJ metadata, OME-XML or the TIFF resolution tags."""
    if tif.is_ome:
        return _ome_calibration(tif.ome_metadata)
    page = tif.pages.first
    xy = _resolution_spacing(page)
    spacing: dict[str, float] = {}
    if tif.is_imagej:
        meta = tif.imagej_metadata or {}
        unit = _normalise_unit(meta.get("unit"))
        if xy and (unit or xy != (1.0, 1.0)):
            spacing.update(col=xy[0], row=xy[1])
        if meta.get("spacing") is not None:
            spacing["pln"] = float(meta["spacing"])
        return spacing, unit
    # plain TIFF: trust metric resolution units only (inch resolutions are print settings)
    resunit = page.tags.get("ResolutionUnit")
    unit = {3: "cm", 4: "mm", 5: "µm"}.get(int(resunit.value) if resunit is not None else 0)
    if unit and xy:
        spacing.update(col=xy[0], row=xy[1])
    return spacing, unit if spacing else None


def _resolution_spacing(page: Any) -> tuple[float, float] | None:
    values = []
    for name in ("XResolution", "YResolution"):
        tag = page.tags.get(name)
        if tag is None:
            return None
        num, den = tag.value if isinstance(tag.value, tuple) else (tag.value, 1)
        if not num or not den:
            return None
        values.append(den / num)
    return values[0], values[1]


def _ome_calibration(xml: str | None) -> tuple[dict[str, float], str | None]:
    if not xml:
        return {}, None
    pixels = next((e for e in ElementTree.fromstring(xml).iter() if e.tag.endswith("}Pixels") or e.tag == "Pixels"), None)
    if pixels is None:
        return {}, None
    spacing: dict[str, float] = {}
    units = []
    for dim, key in (("col", "X"), ("row", "Y"), ("pln", "Z")):
        value = pixels.get(f"PhysicalSize{key}")
        if value is not None:
            spacing[dim] = float(value)
            units.append(_normalise_unit(pixels.get(f"PhysicalSize{key}Unit", "µm")))
    if len(set(units)) > 1:
        raise InputError(f"OME-XML voxel sizes use different units {units}; deepseg needs one unit for X, Y and Z")
    return spacing, (units[0] if units else None)


def _png_calibration(text: str | None) -> tuple[dict[str, float], str | None]:
    if not text:
        return {}, None
    try:
        meta = json.loads(text)
        spacing = {str(k): float(v) for k, v in (meta.get("spacing") or {}).items()}
    except (ValueError, TypeError, AttributeError):
        return {}, None
    return spacing, _normalise_unit(meta.get("unit"))


def _normalise_unit(unit: Any) -> str | None:
    """Decode ImageJ's ``\\uXXXX`` escapes and spell micrometres ``µm``."""
    if unit is None:
        return None
    text = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), str(unit)).strip()
    if text.lower() in _MICRO or text == "\u03bcm":
        return "µm"
    return text or None


def _stem(path: Path) -> str:
    suffix = full_suffix(path) if path.is_file() else ""
    return path.name[: len(path.name) - len(suffix)] if suffix else path.name


# --------------------------------------------------------------------------------------- writing


def write_image(
    path: str | Path,
    image: xr.DataArray | np.ndarray,
    *,
    axes: str | None = None,
    compression: str | None = None,
    lut: np.ndarray | None = None,
) -> Path:
    """Write ``image`` atomically; the format follows the file name.

    Parameters
    ----------
    path : str or Path
        ``.tif``/``.tiff`` (ImageJ hyperstack), ``.ome.tif``/``.ome.tiff`` (OME-TIFF) or ``.png``.
        The parent folder is created if missing.
    image : DataArray or numpy array
        Pixels; a numpy array needs ``axes``. Spacing and unit come from ``attrs``.
    axes : str, optional
        Letters T, Z, C, Y, X naming the dimensions of a numpy array (or relabelling a DataArray).
    compression : str, optional
        TIFF compression passed to tifffile, e.g. ``"zlib"`` (Fiji reads it; memory-mapping does not).
    lut : array (3, 256) or (256, 3) of uint8, optional
        Colour table shown by Fiji (ImageJ TIFF) or palette (uint8 PNG).

    Returns
    -------
    Path
        ``path``.

    Notes
    -----
    ImageJ TIFF holds uint8, uint16, int16 and float32 (:func:`engine.arrays.fit_dtype`, the rule the
    Fiji bridge uses too): bool becomes uint8 0/255 (ImageJ's binary images), other integers become
    uint8/uint16/int16 when their values fit, else float32 when exact (|values| <= 2**24; InputError
    otherwise: use ``.ome.tif``), float64 and float16 become float32.
    """
    path = Path(path)
    image = as_image(image, axes)
    fmt = _write_format(path)
    _check_calibration(image)
    lut_table = None if lut is None else _as_lut(lut)
    if fmt == "png":
        if compression is not None:
            raise InputError(f"compression={compression!r} applies to TIFF files only, not {path.name!r}")
        data, mode = _png_pixels(image, path, lut_table is not None)
        _write_png(path, data, mode, image, lut_table)
    elif fmt == "ome":
        if lut_table is not None:
            raise InputError(f"OME-TIFF {path.name!r} cannot carry a LUT; write .tif for Fiji colours")
        _write_tiff(path, image, ome=True, compression=compression, lut=None)
    else:
        _write_tiff(path, image, ome=False, compression=compression, lut=lut_table)
    return path


class TiffPlaneWriter:
    """An uncompressed ImageJ hyperstack TIFF filled piece by piece, without holding the image.

    tifffile writes the header (calibration, LUT) for an empty image of ``shape``; :meth:`write`
    then stores slabs along one dim with plain file writes at their place in the contiguous pixel
    data (no memory map, so written pages do not stay in the process). Stacks over 4 GB use
    ImageJ's own layout for them (one IFD, contiguous pixels), which ImageJ 1.x reads (it does not
    read BigTIFF) and so does tifffile. Write to a temporary path and rename (``atomic_path``).

    ``dims``/``shape`` describe the image in any order of deepseg dims; the file (and the values
    given to :meth:`write`) use ImageJ's order (t, pln, ch, row, col) restricted to ``dims``.
    """

    def __init__(self, path: str | Path, dims: Sequence[str], shape: Sequence[int], dtype: Any = np.float32, *,
                 spacing: Mapping[str, float] | None = None, unit: str | None = None,
                 lut: np.ndarray | None = None, class_names: Sequence[str] | None = None) -> None:
        import tifffile

        sizes = dict(zip(dims, (int(n) for n in shape)))
        self.dims = tuple(d for d in DIMS if d in sizes)
        self.shape = tuple(sizes[d] for d in self.dims)
        self.dtype = np.dtype(dtype)
        spacing = {d: float(v) for d, v in (spacing or {}).items() if d in sizes}
        template = xr.DataArray(np.empty((0,) * len(self.dims), self.dtype), dims=self.dims,
                                attrs={"class_names": list(class_names)} if class_names else {})
        options = _imagej_options(axes_from_dims(self.dims), spacing, unit,
                                  None if lut is None else _as_lut(lut), template.data, template)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*truncating ImageJ file")
            with tifffile.TiffWriter(str(path), imagej=True) as tif:
                self.offset, _ = tif.write(None, shape=self.shape, dtype=self.dtype, photometric="minisblack",
                                           returnoffset=True, **options)
        self._file = open(path, "r+b")

    def write(self, dim: str, start: int, values: np.ndarray) -> None:
        """Store ``values`` (ImageJ order, every dim complete except ``dim``) at ``start`` along ``dim``."""
        axis = self.dims.index(dim)
        expected = self.shape[:axis] + (values.shape[axis],) + self.shape[axis + 1:]
        if values.shape != expected or not 0 <= start <= self.shape[axis] - values.shape[axis]:
            raise InputError(f"cannot write {values.shape} at {dim}={start} into {self.shape} {self.dims}")
        values = np.ascontiguousarray(values, self.dtype)
        run = int(np.prod(self.shape[axis + 1:], dtype=np.int64)) * self.dtype.itemsize
        for index in np.ndindex(*self.shape[:axis]):
            first = int(np.ravel_multi_index(index + (start,), self.shape[: axis + 1]))
            self._file.seek(self.offset + first * run)
            self._file.write(memoryview(values[index]).cast("B"))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "TiffPlaneWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def write_labels(
    path: str | Path,
    labels: xr.DataArray | np.ndarray,
    *,
    axes: str | None = None,
    template: xr.DataArray | None = None,
    spacing: Mapping[str, float] | None = None,
    unit: str | None = None,
    compression: str | None = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Write a label image as uint8 (max <= 255) or uint16 with a glasbey-like LUT for Fiji.

    ``class_names`` (or ``labels.attrs["class_names"]``) are stored in an ImageJ TIFF as the image property
    ``deepseg.class_names``; :func:`read_labels` gives them back in ``attrs["class_names"]``, so later
    commands (``deepseg mesh --class bone``) can name classes.

    Parameters
    ----------
    labels : DataArray or numpy array
        Non-negative integers (bool and whole-number floats accepted), no channel axis.
    axes : str, optional
        Axes letters of a numpy array; without them a numpy array takes ``template``'s spatial dims.
    template : DataArray, optional
        Image whose spacing and unit the labels inherit (e.g. the image that was segmented).
    spacing, unit : optional
        Calibration, overriding the template's.

    Raises
    ------
    InputError
        Negative, non-integer or too large (> 65535) values, or a channel axis.
    """
    if isinstance(labels, np.ndarray) and axes is None and template is not None:
        dims = spatial_dims(template)
        if labels.ndim != len(dims):
            raise InputError(
                f"labels of shape {labels.shape} do not fit the template's spatial dims {dims}; pass axes="
            )
        axes = axes_from_dims(dims)
    image = as_image(labels, axes)
    if "ch" in image.dims:
        raise InputError(f"labels have a channel axis (dims {tuple(image.dims)}); expected one label per voxel")
    attrs = dict(image.attrs)
    if template is not None:
        attrs.update({k: template.attrs[k] for k in ("spacing", "unit") if k in template.attrs})
    if spacing is not None:
        attrs["spacing"] = {k: float(v) for k, v in spacing.items()}
    if unit is not None:
        attrs["unit"] = unit
    if class_names is not None:
        attrs["class_names"] = list(class_names)
    values = label_array(image.data, f"labels for {str(path)!r}")
    out = xr.DataArray(values, dims=image.dims, attrs=attrs, name=image.name)
    fmt = _write_format(Path(path))
    use_lut = fmt == "imagej" or (fmt == "png" and values.dtype == np.uint8)
    return write_image(path, out, compression=compression, lut=glasbey_lut() if use_lut else None)


@lru_cache(maxsize=1)
def _glasbey() -> np.ndarray:
    """Greedy farthest-point colours in CIELAB, starting from black (Glasbey et al. 2007 idea)."""
    levels = np.linspace(0, 255, 16)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    lab = _srgb_to_lab(grid / 255.0)
    chosen = [0]  # black: index 0 of the grid
    nearest = np.linalg.norm(lab - lab[0], axis=1)
    for _ in range(255):
        pick = int(np.argmax(nearest))
        chosen.append(pick)
        nearest = np.minimum(nearest, np.linalg.norm(lab - lab[pick], axis=1))
    table = np.rint(grid[chosen]).astype(np.uint8).T
    table.setflags(write=False)
    return table


def glasbey_lut() -> np.ndarray:
    """A (3, 256) uint8 label LUT: 0 black, 255 distinct colours for labels 1..255."""
    return _glasbey().copy()


def _srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    to_xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = linear @ to_xyz.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 216 / 24389, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


def _write_format(path: Path) -> str:
    suffix = full_suffix(path).lower()
    if suffix in (".ome.tif", ".ome.tiff"):
        return "ome"
    if suffix.endswith(TIFF_SUFFIXES):
        return "imagej"
    if suffix == ".png":
        return "png"
    raise InputError(f"cannot write {path.name!r}: unsupported extension; expected {WRITABLE}")


def _check_calibration(image: xr.DataArray) -> None:
    for dim, value in (image.attrs.get("spacing") or {}).items():
        if dim in image.dims and not (np.isfinite(value) and value > 0):
            raise InputError(f"spacing[{dim!r}] = {value!r}: expected a positive finite voxel size")


def _as_lut(lut: Any) -> np.ndarray:
    table = np.asarray(lut)
    if table.shape == (256, 3):
        table = table.T
    if table.shape != (3, 256) or not (np.issubdtype(table.dtype, np.integer) and table.min() >= 0 and table.max() <= 255):
        raise InputError(f"lut of shape {table.shape} and dtype {table.dtype}: expected (3, 256) or (256, 3) integers 0..255")
    return table.astype(np.uint8)


def _canonical(image: xr.DataArray) -> xr.DataArray:
    return image.transpose(*[d for d in DIMS if d in image.dims])


def _write_tiff(path: Path, image: xr.DataArray, *, ome: bool, compression: str | None, lut: np.ndarray | None) -> None:
    import tifffile

    image = _canonical(image)
    allowed = ("u1", "u2", "u4", "i1", "i2", "i4", "f4", "f8") if ome else ("u1", "u2", "i2", "f4")
    hint = "" if ome else "; write .ome.tif or convert to float32"
    data = fit_dtype(np.asarray(image.data), allowed, f"image for {path.name!r}", hint)
    axes = axes_from_dims(image.dims)
    spacing = {d: float(v) for d, v in (image.attrs.get("spacing") or {}).items() if d in image.dims}
    unit = image.attrs.get("unit")
    kwargs: dict[str, Any] = {"photometric": "minisblack", "compression": compression}
    if ome:
        kwargs.update(ome=True, metadata={"axes": axes, **_ome_metadata(spacing, unit)})
    else:
        kwargs.update(imagej=True, **_imagej_options(axes, spacing, unit, lut, data, image))
    try:
        with atomic_path(path) as tmp:
            tifffile.imwrite(tmp, data, **kwargs)
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"cannot write {path.name!r} ({err}); dtype {data.dtype}, dims {tuple(image.dims)}") from err


def _imagej_options(
    axes: str, spacing: dict[str, float], unit: str | None, lut: np.ndarray | None, data: np.ndarray, image: xr.DataArray
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"axes": axes}
    options: dict[str, Any] = {"metadata": metadata}
    if "col" in spacing or "row" in spacing:
        options["resolution"] = tuple(_per_unit(spacing.get(d, 1.0)) for d in ("col", "row"))
    if "pln" in spacing:
        metadata["spacing"] = spacing["pln"]
    if unit:
        metadata["unit"] = _imagej_unit(unit)
    if image.attrs.get("class_names"):  # label images: Fiji shows them as image properties
        metadata["Properties"] = {CLASS_NAMES_PROPERTY: ",".join(map(str, image.attrs["class_names"]))}
    if lut is not None:
        if data.dtype == np.int16:
            raise InputError("a LUT needs uint8, uint16 or float32 pixels in ImageJ TIFF, not int16")
        if image.sizes.get("ch", 1) > 1:  # composites keep one LUT per channel in ImageJ metadata
            metadata["LUTs"] = [lut] * image.sizes["ch"]
        else:  # single-channel images: ImageJ uses the TIFF colour map
            options["colormap"] = lut.astype(np.uint16) * 257
        if data.dtype != np.uint8:
            metadata.update(min=0, max=255)  # label k -> LUT entry k
    return options


def _per_unit(spacing: float) -> tuple[int, int]:
    """Pixels per unit as an exact TIFF rational (1 / spacing), so ``den / num`` gives ``spacing`` back."""
    value = Fraction(repr(float(spacing)))
    if value.numerator > _UINT32_MAX or value.denominator > _UINT32_MAX:
        value = value.limit_denominator(_UINT32_MAX)
    if not 0 < value.numerator <= _UINT32_MAX:
        raise InputError(
            f"spacing {spacing!r} cannot be stored as a TIFF resolution; express it in a unit where it "
            "lies between about 1e-9 and 1e9 (e.g. µm instead of m)"
        )
    return value.denominator, value.numerator


def _imagej_unit(unit: str) -> str:
    if _normalise_unit(unit) == "µm":
        return "micron"  # what ImageJ itself writes; the description must be ASCII
    return unit.encode("ascii", "backslashreplace").decode("ascii").replace("\\x", "\\u00")


def _ome_metadata(spacing: dict[str, float], unit: str | None) -> dict[str, Any]:
    if not spacing:
        return {}
    symbol = _normalise_unit(unit) or "pixel"
    symbol = _OME_ALIASES.get(symbol.lower(), symbol)
    if symbol not in _OME_UNITS:
        raise InputError(f"unit {unit!r} cannot be written to OME-TIFF; expected one of {sorted(_OME_UNITS)}")
    out: dict[str, Any] = {}
    for dim, key in (("col", "X"), ("row", "Y"), ("pln", "Z")):
        if dim in spacing:
            out[f"PhysicalSize{key}"] = spacing[dim]
            out[f"PhysicalSize{key}Unit"] = symbol
    return out


def _png_pixels(image: xr.DataArray, path: Path, palette: bool) -> tuple[np.ndarray, str]:
    image = _canonical(image)
    values = np.asarray(image.data)
    if values.dtype == bool:
        values = fit_dtype(values, ("u1",), f"image for {path.name!r}")
    dims, dtype = tuple(image.dims), values.dtype
    if dims == ("row", "col") and dtype in (np.uint8, np.uint16) and not (palette and dtype != np.uint8):
        return values, ("P" if palette else "L" if dtype == np.uint8 else "I;16")
    if dims == ("ch", "row", "col") and dtype == np.uint8 and image.sizes["ch"] in (3, 4) and not palette:
        return np.moveaxis(values, 0, -1), "RGB" if image.sizes["ch"] == 3 else "RGBA"
    raise InputError(
        f"PNG {path.name!r} holds 2D grayscale (row, col) uint8/uint16 (a LUT only with uint8) or RGB(A) "
        f"(ch=3|4, row, col) uint8; got dims {dict(image.sizes)} dtype {dtype}; write .tif instead"
    )


def _write_png(path: Path, data: np.ndarray, mode: str, image: xr.DataArray, lut: np.ndarray | None) -> None:
    from PIL import Image, PngImagePlugin

    picture = Image.fromarray(np.ascontiguousarray(data))
    if mode == "P":
        picture = picture.convert("L")
        picture.putpalette(lut.T.ravel().tolist())  # an "L" image with a palette becomes "P"
    info = PngImagePlugin.PngInfo()
    spacing = {d: float(v) for d, v in (image.attrs.get("spacing") or {}).items() if d in image.dims}
    if spacing or image.attrs.get("unit"):
        info.add_text(_PNG_KEY, json.dumps({"spacing": spacing, "unit": image.attrs.get("unit")}))
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG", pnginfo=info)
