"""Scanner and EM formats (engine.readers through engine.read_image): each written with its own library
(pydicom, pynrrd, mrcfile, h5py) and read back with voxel size, unit and axis order checked."""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest

from conftest import blob_images
from engine.chunked_io import open_volume
from engine.errors import DeepSegError, InputError
from engine.io import list_images, read_image, read_labels, write_image

pydicom = pytest.importorskip("pydicom")
nrrd = pytest.importorskip("nrrd")
mrcfile = pytest.importorskip("mrcfile")
h5py = pytest.importorskip("h5py")

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid  # noqa: E402

CORONAL = [1, 0, 0, 0, 0, -1]  # rows along x, columns along -z: the slice normal is y


# ------------------------------------------------------------------------------------------ DICOM


def _dicom(stored: np.ndarray, *, series: str, position=None, orientation=CORONAL, slope=2, intercept=-1024,
           instance=1, spacing=(0.7, 0.4), signed=False) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID, ds.Modality, ds.InstanceNumber = series, "CT", instance
    ds.set_pixel_data(stored, "MONOCHROME2", 16)
    ds.PixelSpacing = list(spacing)
    if orientation is not None:
        ds.ImageOrientationPatient = list(orientation)
    if position is not None:
        ds.ImagePositionPatient = list(position)
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    return ds


def _write_series(folder, volume: np.ndarray, *, step=1.25, names=None, **options) -> list:
    """Slice k at y = 10 + k * step; file names and InstanceNumber run against the position order."""
    folder.mkdir(parents=True, exist_ok=True)
    series, count = generate_uid(), len(volume)
    names = names or [f"img{(k * 3) % count:03d}.dcm" for k in range(count)]  # shuffled relative to position
    files = []
    for k, plane in enumerate(volume):
        ds = _dicom(plane, series=series, position=[-5.0, 10 + k * step, 3.0], instance=count - k, **options)
        ds.save_as(folder / names[k], enforce_file_format=True)
        files.append(folder / names[k])
    return files


@pytest.fixture
def stored():
    rng = np.random.default_rng(0)
    return rng.integers(0, 3000, size=(5, 6, 7)).astype(np.uint16)


def test_dicom_series_sorted_by_position_with_hounsfield_rescale(tmp_path, stored):
    _write_series(tmp_path / "ct", stored)
    image = read_image(tmp_path / "ct")
    assert image.dims == ("pln", "row", "col") and image.dtype == np.int16
    np.testing.assert_array_equal(image.values, stored.astype(np.int32) * 2 - 1024)
    assert image.attrs["spacing"] == pytest.approx({"pln": 1.25, "row": 0.7, "col": 0.4})
    assert image.attrs["unit"] == "mm" and "ImagePositionPatient" in image.attrs["axes_source"]


def test_dicom_non_integer_rescale_is_float32_and_files_need_no_suffix(tmp_path, stored):
    _write_series(tmp_path / "ct", stored, names=[f"IM{k % 2}{k}" for k in range(5)][::-1], slope=0.5, intercept=-0.25)
    image = read_image(tmp_path / "ct")
    assert image.dtype == np.float32
    np.testing.assert_allclose(image.values, stored * 0.5 - 0.25)


def test_dicom_without_rescale_keeps_the_stored_type(tmp_path, stored):
    _write_series(tmp_path / "mr", stored, slope=None)
    image = read_image(tmp_path / "mr")
    assert image.dtype == np.uint16
    np.testing.assert_array_equal(image.values, stored)


def test_dicom_single_file_is_2d(tmp_path, stored):
    path = tmp_path / "one.dcm"
    _dicom(stored[0], series=generate_uid(), position=[0, 0, 0]).save_as(path, enforce_file_format=True)
    image = read_image(path)
    assert image.dims == ("row", "col") and image.attrs["spacing"] == pytest.approx({"row": 0.7, "col": 0.4})
    np.testing.assert_array_equal(image.values, stored[0].astype(np.int32) * 2 - 1024)


def test_dicom_multiframe_with_functional_groups(tmp_path, stored):
    ds = _dicom(stored, series=generate_uid(), orientation=None, slope=None, spacing=(0.5, 0.5))
    del ds.PixelSpacing
    shared = Dataset()
    shared.PlaneOrientationSequence = [Dataset()]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = CORONAL
    shared.PixelMeasuresSequence = [Dataset()]
    shared.PixelMeasuresSequence[0].PixelSpacing = [0.3, 0.2]
    shared.PixelValueTransformationSequence = [Dataset()]
    shared.PixelValueTransformationSequence[0].RescaleSlope = 1
    shared.PixelValueTransformationSequence[0].RescaleIntercept = -1000
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for k in range(len(stored)):  # stored frames run from the far end to the near end
        item = Dataset()
        item.PlanePositionSequence = [Dataset()]
        item.PlanePositionSequence[0].ImagePositionPatient = [0, 20 - 2.0 * k, 0]
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.save_as(tmp_path / "multi.dcm", enforce_file_format=True)
    image = read_image(tmp_path / "multi.dcm")
    np.testing.assert_array_equal(image.values, stored[::-1].astype(np.int32) - 1000)
    assert image.dtype == np.int16 and image.attrs["spacing"] == pytest.approx({"pln": 2.0, "row": 0.3, "col": 0.2})


def test_dicom_without_positions_falls_back_to_instance_number(tmp_path, stored):
    series = generate_uid()
    for k, instance in enumerate([3, 1, 5, 2, 4]):
        ds = _dicom(stored[instance - 1], series=series, orientation=None, instance=instance)
        ds.SpacingBetweenSlices = 2.5
        ds.save_as(tmp_path / f"s{k}.dcm", enforce_file_format=True)
    image = read_image(tmp_path)
    np.testing.assert_array_equal(image.values, stored.astype(np.int32) * 2 - 1024)
    assert image.attrs["spacing"]["pln"] == 2.5 and "InstanceNumber" in image.attrs["axes_source"]


@pytest.mark.parametrize("change, message", [
    (lambda ds: ds.set_pixel_data(np.zeros((4, 7), np.uint16), "MONOCHROME2", 16), "Rows"),
    (lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 1, 0]), "ImageOrientationPatient"),
    (lambda ds: setattr(ds, "SeriesInstanceUID", generate_uid()), "series"),
    (lambda ds: setattr(ds, "ImagePositionPatient", [-5.0, 10 + 9 * 1.25, 3.0]), "evenly spaced"),
    (lambda ds: setattr(ds, "ImagePositionPatient", [-5.0, 10.0, 3.0]), "same position"),
])
def test_inconsistent_dicom_series_is_refused(tmp_path, stored, change, message):
    files = _write_series(tmp_path / "ct", stored)
    ds = pydicom.dcmread(files[2])
    change(ds)
    ds.save_as(files[2], enforce_file_format=True)
    with pytest.raises(InputError, match=message):
        read_image(tmp_path / "ct")


# ------------------------------------------------------------------------------------------- NRRD


def test_nrrd_axis_order_spacing_and_unit(tmp_path):
    volume = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)  # (Z, Y, X) in C order
    header = {"space": "left-posterior-superior", "space directions": np.diag([0.5, 0.6, 0.7]),
              "kinds": ["domain"] * 3}
    nrrd.write(str(tmp_path / "ct.nrrd"), volume, header, index_order="C")
    image = read_image(tmp_path / "ct.nrrd")
    assert image.dims == ("pln", "row", "col") and image.shape == (3, 4, 5)
    np.testing.assert_array_equal(image.values, volume)
    assert image.attrs["spacing"] == pytest.approx({"col": 0.5, "row": 0.6, "pln": 0.7})
    assert image.attrs["unit"] == "mm"  # anatomical space without 'space units'


def test_nrrd_vector_axis_is_channels_and_spacings_field(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 255, size=(4, 6, 3)).astype(np.uint8)  # (Y, X, C) in C order
    header = {"kinds": ["vector", "domain", "domain"], "spacings": [np.nan, 0.5, 0.25],  # fastest axis first
              "units": ["", "um", "um"]}
    nrrd.write(str(tmp_path / "rgb.nrrd"), rgb, header, index_order="C")
    image = read_image(tmp_path / "rgb.nrrd")
    assert image.dims == ("ch", "row", "col")
    np.testing.assert_array_equal(image.values, np.moveaxis(rgb, -1, 0))
    assert image.attrs["spacing"] == pytest.approx({"row": 0.25, "col": 0.5}) and image.attrs["unit"] == "µm"


def test_nrrd_detached_header(tmp_path):
    volume = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    nrrd.write(str(tmp_path / "v.nhdr"), volume, {"space directions": np.diag([1.0, 2.0, 3.0]),
                                                   "space units": ["mm", "mm", "mm"]},
               detached_header=True, index_order="C")
    image = read_image(tmp_path / "v.nhdr")
    np.testing.assert_array_equal(image.values, volume)
    assert image.attrs["spacing"] == pytest.approx({"col": 1.0, "row": 2.0, "pln": 3.0})


# -------------------------------------------------------------------------------------------- MRC


def test_mrc_volume_voxel_size_in_angstrom(tmp_path):
    volume = np.random.default_rng(2).normal(size=(3, 4, 5)).astype(np.float32)
    with mrcfile.new(tmp_path / "tomo.mrc") as mrc:
        mrc.set_data(volume)
        mrc.voxel_size = (1.5, 2.0, 3.0)
    for mmap in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # MRC is memory-mapped: no "read into memory" warning
            image = read_image(tmp_path / "tomo.mrc", mmap=mmap)
        assert image.dims == ("pln", "row", "col")
        np.testing.assert_array_equal(image.values, volume)
        assert image.attrs["spacing"] == pytest.approx({"col": 1.5, "row": 2.0, "pln": 3.0})
        assert image.attrs["unit"] == "Å"
    assert isinstance(read_image(tmp_path / "tomo.mrc", mmap=True).data, np.memmap)


def test_mrc_axis_mapping_and_image_stack(tmp_path):
    stored = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    with mrcfile.new(tmp_path / "swapped.mrc") as mrc:
        mrc.set_data(stored)
        mrc.header.mapc, mrc.header.mapr = 2, 1  # columns run along Y, rows along X
    image = read_image(tmp_path / "swapped.mrc")
    assert image.shape == (2, 4, 3)
    np.testing.assert_array_equal(image.values, stored.transpose(0, 2, 1))
    with mrcfile.new(tmp_path / "particles.mrcs") as mrc:
        mrc.set_data(stored)
        mrc.set_image_stack()
        mrc.voxel_size = 1.1
    stack = read_image(tmp_path / "particles.mrcs")
    assert stack.dims == ("pln", "row", "col") and stack.attrs["spacing"] == pytest.approx({"row": 1.1, "col": 1.1})
    assert "image stack" in stack.attrs["axes_source"]


# ------------------------------------------------------------------------------------------- HDF5


def test_hdf5_dataset_path_axes_and_element_size(tmp_path):
    volume = np.arange(2 * 3 * 4 * 5, dtype=np.uint16).reshape(2, 3, 4, 5)  # (C, Z, Y, X)
    with h5py.File(tmp_path / "stack.h5", "w") as f:
        f["other"] = np.zeros(3)
        data = f.create_dataset("/exported/raw", data=volume)
        data.attrs["axes"] = "czyx"
        data.attrs["element_size_um"] = [1.0, 2.0, 0.5, 0.25]
    image = read_image(f"{tmp_path / 'stack.h5'}:/exported/raw")
    assert image.dims == ("pln", "ch", "row", "col")
    np.testing.assert_array_equal(image.values, volume.transpose(1, 0, 2, 3))
    assert image.attrs["spacing"] == pytest.approx({"pln": 2.0, "row": 0.5, "col": 0.25})
    assert image.attrs["unit"] == "µm"
    with pytest.raises(InputError, match="holds 2 datasets.*stack.h5:/exported/raw"):
        read_image(tmp_path / "stack.h5")
    with pytest.raises(InputError, match="no dataset '/missing'"):
        read_image(f"{tmp_path / 'stack.h5'}:/missing")
    with pytest.raises(FileNotFoundError):
        read_image(f"{tmp_path / 'nothing.h5'}:/raw")


def test_hdf5_single_dataset_dimension_labels_and_ilastik_axistags(tmp_path):
    planes = np.random.default_rng(3).random((4, 6, 3)).astype(np.float32)  # (Y, X, C)
    with h5py.File(tmp_path / "labelled.h5", "w") as f:
        data = f.create_dataset("data", data=planes)
        for axis, label in enumerate("yxc"):
            data.dims[axis].label = label
        data.attrs["element_size_um"] = [0.5, 0.5]
    image = read_image(tmp_path / "labelled.h5")
    assert image.dims == ("ch", "row", "col") and image.attrs["spacing"] == {"row": 0.5, "col": 0.5}
    np.testing.assert_array_equal(image.values, np.moveaxis(planes, -1, 0))
    with h5py.File(tmp_path / "ilastik.h5", "w") as f:
        data = f.create_dataset("exported_data", data=planes[..., :1].astype(np.uint8))
        data.attrs["axistags"] = json.dumps({"axes": [{"key": "y"}, {"key": "x"}, {"key": "c"}]})
    labels = read_labels(tmp_path / "ilastik.h5")
    assert labels.dims == ("row", "col") and labels.dtype == np.uint8


def test_hdf5_without_axes_reads_like_a_plain_stack_and_opens_lazily(tmp_path):
    volume = np.arange(3 * 8 * 9, dtype=np.float32).reshape(3, 8, 9)
    with h5py.File(tmp_path / "plain.hdf5", "w") as f:
        f.create_dataset("g/vol", data=volume, chunks=(1, 4, 4)).attrs["element_size_um"] = [3.0, 1.0, 1.0]
    assert read_image(tmp_path / "plain.hdf5").dims == ("pln", "row", "col")
    volume_view = open_volume(f"{tmp_path / 'plain.hdf5'}:/g/vol")
    assert volume_view.kind == "hdf5" and volume_view.dims == ("pln", "row", "col")
    assert volume_view.spacing == {"pln": 3.0, "row": 1.0, "col": 1.0} and volume_view.unit == "µm"
    np.testing.assert_array_equal(volume_view.pixels[0, 1:3, 2:7:2, 5], volume[1:3, 2:7:2, 5])
    assert open_volume(tmp_path / "plain.hdf5", axes="YXZ").spatial_shape == (9, 3, 8)
    with h5py.File(tmp_path / "five.h5", "w") as f:
        f["x"] = np.zeros((1, 2, 2, 3, 3))
    with pytest.raises(InputError, match="pass axes="):
        read_image(tmp_path / "five.h5")
    assert read_image(tmp_path / "five.h5", axes="TZCYX").dims == ("t", "pln", "ch", "row", "col")


# ----------------------------------------------------------------------------------------- common


def test_listed_in_folders_and_missing_library_names_the_extra(tmp_path, monkeypatch):
    nrrd.write(str(tmp_path / "b.nrrd"), np.zeros((2, 2), np.uint8))
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["x"] = np.zeros((2, 2))
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_images(tmp_path)] == ["a.h5", "b.nrrd"]
    monkeypatch.setitem(sys.modules, "nrrd", None)  # import nrrd now raises ImportError
    with pytest.raises(DeepSegError, match=r"needs pynrrd: pip install 'deepseg\[formats\]'"):
        read_image(tmp_path / "b.nrrd")


def test_corrupt_files_raise_input_error(tmp_path):
    for name in ("bad.nrrd", "bad.mrc", "bad.h5", "bad.dcm"):
        (tmp_path / name).write_bytes(b"not an image at all" * 10)
        with pytest.raises(InputError, match="bad"):
            read_image(tmp_path / name)


def test_predict_and_train_on_nrrd_and_hdf5(tiny_model, tmp_path):
    """The same pixels as TIFF, NRRD and HDF5 give the same labels; training reads HDF5 + NRRD."""
    from engine.cli import main
    from engine.prediction import predict_file
    from engine.training import train

    (image,), (label,) = blob_images(1, shape=(40, 44), seed=30)
    write_image(tmp_path / "img.tif", image)
    nrrd.write(str(tmp_path / "img.nrrd"), image.values, {"spacings": [0.5, 0.5], "units": ["um", "um"]},
               index_order="C")
    with h5py.File(tmp_path / "img.h5", "w") as f:
        f.create_dataset("raw", data=image.values).attrs["element_size_um"] = [0.5, 0.5]
    results = {}
    for name in ("img.tif", "img.nrrd", "img.h5"):
        out = tmp_path / f"labels_{name.replace('.', '_')}.tif"
        assert main(["predict", str(tiny_model[0]), str(tmp_path / name), "--out", str(out), "--quiet"]) == 0
        results[name] = read_image(out)
    predict_file(tiny_model[0], f"{tmp_path / 'img.h5'}:/raw", tmp_path / "labels_dataset.tif")
    results["img.h5:/raw"] = read_image(tmp_path / "labels_dataset.tif")
    assert main(["predict", str(tiny_model[0]), f"{tmp_path / 'img.h5'}:/raw", "--out",
                 str(tmp_path / "labels_cli_dataset.tif"), "--quiet"]) == 0
    results["cli img.h5:/raw"] = read_image(tmp_path / "labels_cli_dataset.tif")
    reference = results.pop("img.tif")
    assert 0 < int((reference.values > 0).sum()) < reference.size  # the model found blobs, not nothing
    for name, labels in results.items():
        np.testing.assert_array_equal(labels.values, reference.values, err_msg=name)
        assert labels.attrs["spacing"] == pytest.approx({"row": 0.5, "col": 0.5}) and labels.attrs["unit"] == "µm"
    (tmp_path / "Images").mkdir()
    (tmp_path / "Labels").mkdir()
    (tmp_path / "img.h5").rename(tmp_path / "Images" / "img.h5")
    nrrd.write(str(tmp_path / "Labels" / "img.nrrd"), label.astype(np.uint8), index_order="C")
    result = train(images=str(tmp_path), out=str(tmp_path / "model"), network="unet2d",
                   network_options={"depth": 2, "filters": 4}, patch=32, epochs=1, batch=1, steps_per_epoch=1)
    assert (tmp_path / "model").is_dir() and result is not None


def test_cli_predicts_a_dicom_series_folder_as_one_volume(tiny_model, tmp_path):
    """A folder holding a DICOM series is one image (one label file), not a folder of images."""
    from engine.cli import main

    volume = (np.random.default_rng(3).integers(0, 200, (4, 24, 28)) + 1024).astype(np.int16)
    _write_series(tmp_path / "series", volume, names=["b.dcm", "d.dcm", "a.dcm", "c.dcm"])
    out = tmp_path / "labels.tif"
    assert main(["predict", str(tiny_model[0]), str(tmp_path / "series"), "--out", str(out), "--quiet"]) == 0
    labels = read_image(out)
    assert labels.sizes["pln"] == 4 and labels.sizes["row"] == 24 and labels.sizes["col"] == 28
    assert labels.attrs["spacing"]["pln"] == pytest.approx(1.25)
