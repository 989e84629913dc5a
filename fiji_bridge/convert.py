"""ImagePlus <-> xarray.DataArray, with calibration, title, label LUTs and probability maps.

Dims are named as pyimagej names them, which are also the engine's names: ``t``, ``pln``, ``ch``,
``row``, ``col``, in that order (ImageJ keeps planes in C, Z, T order, so this order needs no
reshuffling). Dims of size 1 other than ``row``/``col`` are dropped. Calibration travels in
``attrs["spacing"]`` (``{"col": pixelWidth, "row": pixelHeight, "pln": pixelDepth}``) and
``attrs["unit"]``; the title becomes ``DataArray.name``. RGB images come back as uint8 with a 3-long
``ch`` dim and ``attrs["rgb"] = True``.

Pixels move in bulk through the shim's ``Pixels`` class and a direct buffer over numpy memory (no
per-pixel Python). Java's 8/16-bit pixels are signed; they are reinterpreted as unsigned, so 16-bit
values above 32767 survive.
"""

from __future__ import annotations

import sys
from typing import Any, Mapping, Sequence

import numpy as np
import xarray as xr

from engine.arrays import fit_dtype, label_array
from engine.axes import DIMS, as_image
from engine.errors import InputError

#: ImageJ types (ImagePlus.getType()) -> numpy dtype
_GRAY8, _GRAY16, _GRAY32, _COLOR_256, _COLOR_RGB = 0, 1, 2, 3, 4
_DTYPES = {_GRAY8: np.uint8, _GRAY16: np.uint16, _GRAY32: np.float32, _COLOR_256: np.uint8, _COLOR_RGB: np.uint32}
_BIT_DEPTH = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16, np.dtype(np.float32): 32}
_CHUNK_BYTES = 1 << 30  # a Java ByteBuffer holds < 2 GiB: copy big stacks in chunks of planes


def _j(name: str) -> Any:
    import jpype

    return jpype.JClass(name)


def _direct_buffer(array: np.ndarray) -> Any:
    import jpype.nio

    return jpype.nio.convertToDirectBuffer(array)


def _plane_chunks(n_planes: int, plane_bytes: int) -> list[tuple[int, int]]:
    per_chunk = max(1, _CHUNK_BYTES // max(plane_bytes, 1))
    return [(start, min(per_chunk, n_planes - start)) for start in range(0, n_planes, per_chunk)]


# ---------------------------------------------------------------------------------------------- ImageJ -> numpy


def imageplus_to_xarray(imp: Any) -> xr.DataArray:
    """Copy an ImagePlus into a DataArray (dims from ``t, pln, ch, row, col``; calibration in attrs)."""
    if imp is None:
        raise InputError("no image: open an image first or name one")
    kind = int(imp.getType())
    if kind not in _DTYPES:
        raise InputError(f"image {imp.getTitle()!s} has ImageJ type {kind}; expected 8-, 16-, 32-bit or RGB")
    width, height = int(imp.getWidth()), int(imp.getHeight())
    n_c, n_z, n_t = int(imp.getNChannels()), int(imp.getNSlices()), int(imp.getNFrames())
    stack = imp.getStack()
    n_planes = int(stack.getSize())
    if n_c * n_z * n_t != n_planes:  # an inconsistent hyperstack: treat as a plain stack
        n_c, n_z, n_t = 1, n_planes, 1
    dtype = np.dtype(_DTYPES[kind])
    pixels = np.empty((n_t, n_z, n_c, height, width), dtype)
    flat = pixels.reshape(n_planes, height * width)
    Pixels = _j("deepseg.fiji.Pixels")
    for start, count in _plane_chunks(n_planes, height * width * dtype.itemsize):
        Pixels.toBuffer(stack, start + 1, count, _direct_buffer(flat[start : start + count]))
    dims = ["t", "pln", "ch", "row", "col"]
    attrs = calibration_attrs(imp)
    if kind == _COLOR_RGB:
        if n_c != 1:
            raise InputError(
                f"image {imp.getTitle()!s} is an RGB hyperstack with {n_c} channels; "
                "convert it to 8-bit channels first (Image > Color > Split Channels / Stack to RGB)"
            )
        pixels = _unpack_rgb(pixels[:, :, 0])  # (t, pln, 3, row, col)
        attrs["rgb"] = True
    elif dtype == np.uint16 and bool(imp.getCalibration().isSigned16Bit()):
        # ImageJ keeps signed 16-bit data (e.g. CT in Hounsfield units) as value + 32768 with a
        # calibration function; give the engine the true int16 values, as engine.io.read_image does.
        pixels = (pixels.view(np.int16) ^ np.int16(-32768)).view(np.int16)
    keep = [i for i, (d, n) in enumerate(zip(dims, pixels.shape)) if d in ("row", "col") or n > 1]
    pixels = pixels.reshape([pixels.shape[i] for i in keep])
    return xr.DataArray(pixels, dims=[dims[i] for i in keep], attrs=attrs, name=str(imp.getTitle()))


def _unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """(..., row, col) uint32 0xAARRGGBB -> (..., 3, row, col) uint8 R, G, B."""
    channels = packed.view(np.uint8).reshape(*packed.shape, 4)
    order = [2, 1, 0] if sys.byteorder == "little" else [1, 2, 3]
    return np.moveaxis(channels[..., order], -1, -3).copy()


def calibration_attrs(imp: Any) -> dict[str, Any]:
    """``{"spacing": {...}, "unit": ...}`` from the ImagePlus calibration."""
    cal = imp.getCalibration()
    spacing = {"col": float(cal.pixelWidth), "row": float(cal.pixelHeight), "pln": float(cal.pixelDepth)}
    return {"spacing": spacing, "unit": str(cal.getUnit())}


# ---------------------------------------------------------------------------------------------- numpy -> ImageJ


def _canonical(image: xr.DataArray | np.ndarray, axes: str | None) -> xr.DataArray:
    if isinstance(image, np.ndarray) and axes is None:
        if image.ndim != 2:
            raise InputError(
                f"a plain array of shape {image.shape} needs axes (e.g. axes='ZYX' or 'CYX'); "
                "only 2-D arrays are taken as YX"
            )
        axes = "YX"
    return as_image(image, axes)


def _five_d(image: xr.DataArray) -> np.ndarray:
    """Pixels as a C-contiguous (t, pln, ch, row, col) array (missing dims have size 1)."""
    present = [d for d in DIMS if d in image.dims]
    values = np.asarray(image.transpose(*present).values)
    shape = [image.sizes[d] if d in image.dims else 1 for d in DIMS]
    return np.ascontiguousarray(values.reshape(shape))


def _imagej_pixels(values: np.ndarray, what: str) -> np.ndarray:
    """Cast to a dtype ImageJ holds (uint8, uint16, int16 as signed 16-bit, float32) by the engine's rule
    for ImageJ TIFF files (:func:`engine.arrays.fit_dtype`: exact, bool as 0/255)."""
    return fit_dtype(values, ("u1", "u2", "i2", "f4"), what)


def xarray_to_imageplus(
    image: xr.DataArray | np.ndarray,
    title: str | None = None,
    *,
    axes: str | None = None,
    calibration: Any = None,
    channel_names: Sequence[str] | None = None,
) -> Any:
    """Create an ImagePlus from an array (a 2-D numpy array is taken as YX; else give ``axes`` or a DataArray).

    ``calibration`` (a Java ``Calibration``) overrides ``attrs["spacing"]``/``attrs["unit"]``.
    Several channels give a (grayscale) CompositeImage; ``channel_names`` label them.
    """
    image = _canonical(image, axes)
    values = _five_d(image)
    title = title or (str(image.name) if image.name is not None else "image")
    rgb = bool(image.attrs.get("rgb")) and values.shape[2] == 3 and values.dtype == np.uint8
    signed = False
    if rgb:
        values = _pack_rgb(values)[:, :, np.newaxis]
        bit_depth = 24
    else:
        values = _imagej_pixels(values, f"image {title!r}")
        signed = values.dtype == np.int16
        if signed:
            values = (values ^ np.int16(-32768)).view(np.uint16)  # ImageJ's signed 16-bit: value + 32768
        bit_depth = _BIT_DEPTH[values.dtype]
    n_t, n_z, n_c, height, width = values.shape
    if height * width >= 2**31:
        raise InputError(f"image {title!r} planes of {height} x {width} pixels exceed ImageJ's 2**31 pixels per plane")
    stack = _j("ij.ImageStack")(width, height)
    flat = values.reshape(n_t * n_z * n_c, height * width)
    Pixels = _j("deepseg.fiji.Pixels")
    for start, count in _plane_chunks(flat.shape[0], height * width * flat.itemsize):
        Pixels.addFromBuffer(stack, _direct_buffer(flat[start : start + count]), count, bit_depth)
    if channel_names is not None:
        for t in range(n_t):
            for z in range(n_z):
                for c, label in enumerate(channel_names[:n_c]):
                    stack.setSliceLabel(str(label), 1 + c + n_c * (z + n_z * t))
    imp = _j("ij.ImagePlus")(title, stack)
    imp.setDimensions(n_c, n_z, n_t)
    if n_c > 1 or (n_z > 1 and n_t > 1):
        imp.setOpenAsHyperStack(True)
    if n_c > 1 and not rgb:
        CompositeImage = _j("ij.CompositeImage")
        imp = CompositeImage(imp, CompositeImage.GRAYSCALE)
    apply_calibration(imp, image.attrs, calibration)
    if signed:
        imp.getCalibration().setSigned16BitCalibration()
    return imp


def _pack_rgb(values: np.ndarray) -> np.ndarray:
    """(t, pln, 3, row, col) uint8 -> (t, pln, row, col) uint32 0xFFRRGGBB."""
    r, g, b = (values[:, :, i].astype(np.uint32) for i in range(3))
    return (np.uint32(0xFF000000) | (r << 16) | (g << 8) | b).astype(np.uint32)


def apply_calibration(imp: Any, attrs: Mapping[str, Any], calibration: Any = None) -> None:
    """Set pixel size and unit from ``attrs`` (or copy a Java ``calibration``)."""
    if calibration is not None:
        imp.setCalibration(calibration.copy())
        return
    spacing = attrs.get("spacing") or {}
    unit = attrs.get("unit")
    if not spacing and not unit:
        return
    cal = imp.getCalibration()
    if "col" in spacing:
        cal.pixelWidth = float(spacing["col"])
    if "row" in spacing:
        cal.pixelHeight = float(spacing["row"])
    if "pln" in spacing:
        cal.pixelDepth = float(spacing["pln"])
    if unit:
        cal.setUnit(str(unit))


# ---------------------------------------------------------------------------------------------- results


def labels_to_imageplus(
    labels: xr.DataArray | np.ndarray, title: str | None = None, *, axes: str | None = None, calibration: Any = None
) -> Any:
    """A label image as 8-bit (up to 255 labels) or 16-bit ImagePlus with the label LUT."""
    image = _canonical(labels, axes)
    image = image.copy(data=label_array(np.asarray(image.values), "labels"))  # the engine's rule for label files
    imp = xarray_to_imageplus(image, title, calibration=calibration)
    from engine.io import glasbey_lut  # the same colours as label TIFFs written by the engine

    r, g, b = glasbey_lut()
    imp.setLut(_j("ij.process.LUT")(_jbytes(r), _jbytes(g), _jbytes(b)))
    imp.setDisplayRange(0, 255)
    return imp


def _jbytes(values: np.ndarray) -> Any:
    import jpype

    return jpype.JArray(jpype.JByte)(values.view(np.int8))


def probabilities_to_imageplus(
    probabilities: xr.DataArray,
    title: str | None = None,
    *,
    class_names: Sequence[str] | None = None,
    calibration: Any = None,
) -> Any:
    """Class probabilities (dims ``ch`` + spatial) as a 32-bit hyperstack, one channel per class."""
    image = _canonical(probabilities, None)
    if "ch" not in image.dims:
        image = image.expand_dims("ch")
    values = image.values
    if values.dtype != np.float32:
        image = image.copy(data=values.astype(np.float32))
    imp = xarray_to_imageplus(image, title, calibration=calibration, channel_names=class_names)
    for c in range(1, int(imp.getNChannels()) + 1):
        imp.setPositionWithoutUpdate(c, 1, 1)
        imp.setDisplayRange(0.0, 1.0)
    imp.setPositionWithoutUpdate(1, 1, 1)
    return imp
