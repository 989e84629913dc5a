"""Tests of engine.io (read/write images and labels) and engine.fileutil.atomic_path."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tifffile
import xarray as xr
from PIL import Image

from engine.axes import as_image
from engine.errors import InputError
from engine.fileutil import atomic_path, full_suffix
from engine.io import glasbey_lut, list_images, read_image, read_labels, write_image, write_labels


def only_files(folder: Path) -> list[str]:
    """Names in ``folder`` (temporary files of atomic writes would show up here)."""
    return sorted(os.listdir(folder))


def zcyx(dtype: str = "uint16") -> xr.DataArray:
    values = (np.arange(2 * 3 * 4 * 5) % 200).reshape(2, 3, 4, 5).astype(dtype)
    return as_image(values, "ZCYX", spacing={"pln": 0.7, "row": 0.123456789, "col": 0.3}, unit="µm")


def assert_same(read: xr.DataArray, written: xr.DataArray) -> None:
    assert read.dims == written.dims
    assert read.dtype == written.dtype
    np.testing.assert_array_equal(read.values, written.values)
    assert read.attrs.get("spacing") == written.attrs.get("spacing")
    assert read.attrs.get("unit") == written.attrs.get("unit")


# ------------------------------------------------------------------ atomic_path


def test_atomic_path_keeps_suffix_and_replaces_on_success(tmp_path):
    target = tmp_path / "new" / "cells.ome.tif"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".ome.tif") and not tmp.exists()
        tmp.write_text("x")
    assert target.read_text() == "x" and only_files(target.parent) == ["cells.ome.tif"]
    assert full_suffix("a.b.png") == ".png"


def test_atomic_path_failure_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old" and only_files(tmp_path) == ["out.txt"]


def test_atomic_path_nothing_written_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_path(tmp_path / "a.txt"):
            pass
    assert only_files(tmp_path) == []


# ------------------------------------------------------------------ TIFF round trips


@pytest.mark.parametrize("name", ["stack.tif", "stack.ome.tif"])
def test_tiff_round_trip_keeps_dims_values_calibration(tmp_path, name):
    image = zcyx()
    assert write_image(tmp_path / name, image) == tmp_path / name
    read = read_image(tmp_path / name)
    assert_same(read, image)
    assert read.name == "stack" and read.attrs["source"] == str(tmp_path / name)


@pytest.mark.parametrize(
    "name, dtype", [("a.tif", "uint8"), ("a.tif", "int16"), ("a.tif", "float32"),
                    ("a.ome.tif", "int32"), ("a.ome.tif", "float64"), ("a.ome.tif", "uint32")]
)
def test_tiff_round_trip_keeps_supported_dtypes(tmp_path, name, dtype):
    image = as_image(np.array([[-1, 0, 7], [3, 2, 1]]).astype(dtype), "YX")
    write_image(tmp_path / name, image)
    assert_same(read_image(tmp_path / name), image)


def test_imagej_time_series_and_uncalibrated_image(tmp_path):
    image = as_image(np.random.default_rng(0).random((2, 3, 2, 4, 5), dtype=np.float32), "TZCYX")
    write_image(tmp_path / "t.tif", image)
    read = read_image(tmp_path / "t.tif")
    assert_same(read, image)
    assert "spacing" not in read.attrs and "unit" not in read.attrs


def test_imagej_writes_what_imagej_reads(tmp_path):
    write_image(tmp_path / "a.tif", zcyx())
    with tifffile.TiffFile(tmp_path / "a.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == "ZCYX"
        assert tif.imagej_metadata["unit"] == "micron" and tif.imagej_metadata["spacing"] == 0.7
        assert tif.pages.first.tags["XResolution"].value == (10, 3)  # exact rational 1 / 0.3


def test_dims_come_back_in_canonical_order(tmp_path):
    values = np.arange(4 * 5 * 2, dtype=np.uint8).reshape(4, 5, 2)
    write_image(tmp_path / "c.tif", values, axes="YXC")
    read = read_image(tmp_path / "c.tif")
    assert read.dims == ("ch", "row", "col")
    np.testing.assert_array_equal(read.values, values.transpose(2, 0, 1))


@pytest.mark.parametrize(
    "values, expected",
    [(np.array([[0, 255]], np.int64), np.uint8), (np.array([[0, 300]], np.int64), np.uint16),
     (np.array([[-5, 300]], np.int32), np.int16), (np.array([[-1, 70000]], np.int64), np.float32),
     (np.array([[0.5, 1.0]], np.float64), np.float32)],
)
def test_imagej_converts_types_it_cannot_hold(tmp_path, values, expected):
    write_image(tmp_path / "a.tif", values, axes="YX")
    read = read_image(tmp_path / "a.tif")
    assert read.dtype == expected
    np.testing.assert_array_equal(read.values, values.astype(expected))


def test_bool_images_are_imagej_binary_and_bool_labels_are_0_1(tmp_path):
    mask = np.array([[True, False]])
    write_image(tmp_path / "a.tif", mask, axes="YX")
    write_image(tmp_path / "a.png", mask, axes="YX")
    write_labels(tmp_path / "l.tif", mask, axes="YX")
    for name in ("a.tif", "a.png"):
        read = read_image(tmp_path / name)
        assert read.dtype == np.uint8 and read.values.tolist() == [[255, 0]]
    assert read_labels(tmp_path / "l.tif").values.tolist() == [[1, 0]]


def test_imagej_refuses_integers_that_do_not_fit_and_leaves_no_file(tmp_path):
    with pytest.raises(InputError, match=r"33554432.*ome\.tif"):
        write_image(tmp_path / "a.tif", np.array([[-1, 2**25]]), axes="YX")
    assert only_files(tmp_path) == []


def test_failed_write_keeps_the_old_file(tmp_path):
    write_image(tmp_path / "a.tif", np.zeros((2, 2), np.uint8), axes="YX")
    with pytest.raises(InputError):
        write_image(tmp_path / "a.tif", np.zeros((2, 2), np.uint8), axes="YX", compression="no-such-codec")
    assert only_files(tmp_path) == ["a.tif"]
    assert read_image(tmp_path / "a.tif").shape == (2, 2)


def test_write_creates_parent_folder_and_compresses(tmp_path):
    target = tmp_path / "deep" / "er" / "z.tif"
    write_image(target, zcyx(), compression="zlib")
    with tifffile.TiffFile(target) as tif:
        assert tif.pages.first.compression != 1
    assert_same(read_image(target), zcyx())


def test_plain_multipage_tiff_pages_become_planes(tmp_path):
    values = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    tifffile.imwrite(tmp_path / "plain.tif", values, metadata=None, photometric="minisblack")  # pages: 'I'
    tifffile.imwrite(tmp_path / "shaped.tif", values, photometric="minisblack")  # 'Q'
    for name in ("plain.tif", "shaped.tif"):
        read = read_image(tmp_path / name)
        assert read.dims == ("pln", "row", "col")
        assert "pages read as planes" in read.attrs["axes_source"]
        np.testing.assert_array_equal(read.values, values)
    override = read_image(tmp_path / "plain.tif", axes="CYX")
    assert override.dims == ("ch", "row", "col") and "axes argument" in override.attrs["axes_source"]
    with pytest.raises(InputError, match=r"axes 'YX' has 2 letters.*3 dimensions"):
        read_image(tmp_path / "plain.tif", axes="YX")


def test_rgb_tiff_samples_become_channels(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    read = read_image(tmp_path / "rgb.tif")
    assert read.dims == ("ch", "row", "col")
    np.testing.assert_array_equal(read.values, rgb.transpose(2, 0, 1))


def test_plain_tiff_metric_resolution_is_read(tmp_path):
    tifffile.imwrite(tmp_path / "r.tif", np.zeros((4, 4), np.uint8), resolution=(1000, 500), resolutionunit="CENTIMETER")
    read = read_image(tmp_path / "r.tif")
    assert read.attrs["spacing"] == {"col": 0.001, "row": 0.002} and read.attrs["unit"] == "cm"


def test_ome_unit_checks(tmp_path):
    image = as_image(np.zeros((2, 2), np.uint8), "YX", spacing={"row": 2.0, "col": 2.0}, unit="nm")
    write_image(tmp_path / "a.ome.tiff", image)
    assert_same(read_image(tmp_path / "a.ome.tiff"), image)
    with pytest.raises(InputError, match="furlong"):
        write_image(tmp_path / "b.ome.tif", image.assign_attrs(unit="furlong"))


def test_mmap_uncompressed_and_fallback_for_compressed(tmp_path):
    write_image(tmp_path / "raw.tif", zcyx())
    mapped = read_image(tmp_path / "raw.tif", mmap=True)
    assert isinstance(mapped.data, np.memmap)
    assert_same(mapped, zcyx())
    write_image(tmp_path / "zip.tif", zcyx(), compression="zlib")
    with pytest.warns(UserWarning, match="instead of memory-mapped"):
        loaded = read_image(tmp_path / "zip.tif", mmap=True)
    assert_same(loaded, zcyx())


# ------------------------------------------------------------------ PNG, JPEG, BMP


@pytest.mark.parametrize(
    "values, axes",
    [(np.arange(12, dtype=np.uint8).reshape(3, 4), "YX"), (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000, "YX"),
     (np.arange(36, dtype=np.uint8).reshape(3, 3, 4), "CYX"), (np.arange(48, dtype=np.uint8).reshape(4, 3, 4), "CYX")],
)
def test_png_round_trip(tmp_path, values, axes):
    image = as_image(values, axes, spacing={"row": 0.5, "col": 0.25}, unit="mm")
    write_image(tmp_path / "p.png", image)
    assert_same(read_image(tmp_path / "p.png"), image)


def test_png_refuses_what_it_cannot_hold(tmp_path):
    with pytest.raises(InputError, match=r"PNG.*write \.tif"):
        write_image(tmp_path / "p.png", np.zeros((2, 3, 4), np.uint8), axes="ZYX")
    with pytest.raises(InputError, match="float32"):
        write_image(tmp_path / "p.png", np.zeros((3, 4), np.float32), axes="YX")
    assert only_files(tmp_path) == []


def test_jpeg_and_bmp_are_read(tmp_path):
    gray = np.full((4, 6), 100, np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.jpg")
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(tmp_path / "c.bmp")
    jpg = read_image(tmp_path / "g.jpg")
    assert jpg.dims == ("row", "col") and abs(int(jpg.values.mean()) - 100) <= 2
    bmp = read_image(tmp_path / "c.bmp")
    assert bmp.dims == ("ch", "row", "col") and (bmp.values == 100).all()


# ------------------------------------------------------------------ folders and errors


def test_folder_of_slices_is_a_natural_order_stack(tmp_path):
    for index in (10, 2, 1):
        Image.fromarray(np.full((3, 4), index, np.uint8)).save(tmp_path / f"img{index}.png")
    (tmp_path / ".hidden.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.name for p in list_images(tmp_path)] == ["img1.png", "img2.png", "img10.png"]
    stack = read_image(tmp_path)
    assert stack.dims == ("pln", "row", "col") and stack.name == tmp_path.name
    assert stack.values[:, 0, 0].tolist() == [1, 2, 10]


def test_folder_errors(tmp_path):
    with pytest.raises(InputError, match="holds no image files"):
        read_image(tmp_path)
    Image.fromarray(np.zeros((3, 4), np.uint8)).save(tmp_path / "a1.png")
    Image.fromarray(np.zeros((3, 5), np.uint8)).save(tmp_path / "a2.png")
    with pytest.raises(InputError, match="a2.png"):
        read_image(tmp_path)
    with pytest.raises(InputError, match="not a folder"):
        list_images(tmp_path / "a1.png")


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.tif"):
        read_image(tmp_path / "nope.tif")
    (tmp_path / "fake.tif").write_text("this is text")
    with pytest.raises(InputError, match=r"fake\.tif.*PNG"):
        read_image(tmp_path / "fake.tif")
    (tmp_path / "fake.png").write_bytes(b"\x00" * 10)
    with pytest.raises(InputError, match=r"fake\.png"):
        read_image(tmp_path / "fake.png")
    (tmp_path / "data.csv").write_text("1,2")
    with pytest.raises(InputError, match=r"data\.csv.*TIFF"):
        read_image(tmp_path / "data.csv")


def test_write_argument_errors(tmp_path):
    with pytest.raises(InputError, match="needs axes"):
        write_image(tmp_path / "a.tif", np.zeros((2, 2)))
    with pytest.raises(InputError, match="unsupported extension"):
        write_image(tmp_path / "a.jpg", np.zeros((2, 2), np.uint8), axes="YX")
    with pytest.raises(InputError, match="spacing"):
        write_image(tmp_path / "a.tif", as_image(np.zeros((2, 2)), "YX", spacing={"row": 0.0}))
    with pytest.raises(InputError, match="TIFF resolution"):
        write_image(tmp_path / "a.tif", as_image(np.zeros((2, 2)), "YX", spacing={"row": 1e-12, "col": 1.0}))
    with pytest.raises(InputError, match="lut"):
        write_image(tmp_path / "a.tif", np.zeros((2, 2), np.uint8), axes="YX", lut=np.zeros((3, 10)))
    assert only_files(tmp_path) == []


# ------------------------------------------------------------------ labels


def test_glasbey_lut_is_black_then_distinct():
    lut = glasbey_lut()
    assert lut.shape == (3, 256) and lut.dtype == np.uint8
    assert lut[:, 0].tolist() == [0, 0, 0]
    assert len({tuple(c) for c in lut.T}) == 256


def test_write_labels_uint8_with_lut_and_template_calibration(tmp_path):
    template = as_image(np.zeros((2, 3), np.float32), "YX", spacing={"row": 0.5, "col": 0.5}, unit="µm")
    labels = np.array([[0, 1, 2], [3, 4, 0]], np.int64)
    write_labels(tmp_path / "l.tif", labels, template=template)
    with tifffile.TiffFile(tmp_path / "l.tif") as tif:
        page = tif.pages.first
        assert page.dtype == np.uint8 and page.colormap is not None
        np.testing.assert_array_equal(page.colormap[:, :3] // 257, glasbey_lut()[:, :3])
    read = read_labels(tmp_path / "l.tif")
    assert read.dtype == np.uint8 and read.attrs["spacing"] == {"row": 0.5, "col": 0.5}
    np.testing.assert_array_equal(read.values, labels)


def test_write_labels_uint16_png_and_ome(tmp_path):
    labels = np.array([[0, 300], [2, 65535]])
    write_labels(tmp_path / "l.tif", labels, axes="YX")
    with tifffile.TiffFile(tmp_path / "l.tif") as tif:
        assert tif.pages.first.dtype == np.uint16 and tif.imagej_metadata["max"] == 255
    assert read_labels(tmp_path / "l.tif").values.tolist() == labels.tolist()
    write_labels(tmp_path / "l.png", np.array([[0, 1], [2, 3]]), axes="YX")
    with Image.open(tmp_path / "l.png") as im:
        assert im.mode == "P"
    assert read_labels(tmp_path / "l.png").values.tolist() == [[0, 1], [2, 3]]
    write_labels(tmp_path / "l.ome.tif", labels, axes="YX")
    assert read_labels(tmp_path / "l.ome.tif").values.tolist() == labels.tolist()


@pytest.mark.parametrize(
    "labels, message",
    [(np.array([[0, -1]]), "negative"), (np.array([[0, 70000]]), "65535"), (np.array([[0, 0.5]]), "non-integer")],
)
def test_write_labels_rejects_bad_values(tmp_path, labels, message):
    with pytest.raises(InputError, match=message):
        write_labels(tmp_path / "l.tif", labels, axes="YX")
    assert only_files(tmp_path) == []


def test_read_labels_rejects_bad_files(tmp_path):
    tifffile.imwrite(tmp_path / "float.tif", np.array([[0, 0.5]], np.float32))
    with pytest.raises(InputError, match=r"float\.tif.*non-integer"):
        read_labels(tmp_path / "float.tif")
    tifffile.imwrite(tmp_path / "neg.tif", np.array([[0, -2]], np.int16))
    with pytest.raises(InputError, match=r"neg\.tif.*negative"):
        read_labels(tmp_path / "neg.tif")
    tifffile.imwrite(tmp_path / "whole.tif", np.array([[0, 2]], np.float32))
    assert read_labels(tmp_path / "whole.tif").dtype == np.uint8
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(InputError, match="3 channels"):
        read_labels(tmp_path / "rgb.png")


@pytest.mark.imagej
def test_imagej_reads_calibration_and_lut(tmp_path):
    """Open our files with the real ImageJ 1.x (skipped without Java and ij.jar)."""
    jar = Path("/usr/share/java/ij.jar")
    if shutil.which("java") is None or not jar.exists():
        pytest.skip("needs java and /usr/share/java/ij.jar")
    write_image(tmp_path / "img.tif", zcyx())
    write_labels(tmp_path / "lab.tif", np.array([[0, 1, 2, 300]]), axes="YX")
    probe = tmp_path / "Probe.java"
    probe.write_text(
        "import ij.*; import java.awt.image.IndexColorModel;\n"
        "public class Probe { public static void main(String[] a) {\n"
        " ImagePlus i = IJ.openImage(a[0]); ij.measure.Calibration c = i.getCalibration();\n"
        " System.out.println(i.getNChannels()+\" \"+i.getNSlices()+\" \"+c.pixelWidth+\" \"+c.pixelDepth+\" \"+c.getUnit());\n"
        " ImagePlus l = IJ.openImage(a[1]); IndexColorModel m = (IndexColorModel) l.getProcessor().getColorModel();\n"
        " System.out.println(m.getRed(1)+\" \"+m.getGreen(1)+\" \"+m.getBlue(1)+\" \"+l.getBitDepth()); } }\n"
    )
    out = subprocess.run(
        ["java", "-Djava.awt.headless=true", "-cp", str(jar), str(probe), str(tmp_path / "img.tif"), str(tmp_path / "lab.tif")],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout.split("\n")
    channels, slices, width, depth, unit = out[0].split()
    assert (int(channels), int(slices), float(width), float(depth)) == (3, 2, 0.3, 0.7) and unit in ("micron", "µm")
    assert [int(v) for v in out[1].split()] == [*glasbey_lut()[:, 1].tolist(), 16]


def test_label_tiff_keeps_class_names_as_an_imagej_property(tmp_path):
    import tifffile

    from engine.io import read_labels, write_labels

    labels = np.array([[0, 1], [2, 1]], np.uint8)
    write_labels(tmp_path / "named.tif", labels, axes="YX", class_names=["background", "cell", "membrane"])
    write_labels(tmp_path / "plain.tif", labels, axes="YX")
    assert read_labels(tmp_path / "named.tif").attrs["class_names"] == ["background", "cell", "membrane"]
    assert "class_names" not in read_labels(tmp_path / "plain.tif").attrs
    with tifffile.TiffFile(tmp_path / "named.tif") as tif:  # what Fiji shows under Image > Show Info
        assert tif.imagej_metadata["Properties"] == {"deepseg.class_names": "background,cell,membrane"}
