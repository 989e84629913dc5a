"""fiji_bridge with a real ImageJ 1.x, headless, one JVM for the whole test session (fixture ``ij``)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from bridge_fixtures import blob, ij, requires_imagej, run_python  # noqa: F401  (fixtures)
from engine.errors import Cancelled, InputError
from fiji_bridge import convert
from fiji_bridge.errors import MacroError

pytestmark = [pytest.mark.imagej, requires_imagej]

LAYOUTS = ["YX", "ZYX", "CYX", "TYX", "ZCYX", "TZYX", "TCYX", "TZCYX"]
SPACING = {"col": 0.25, "row": 0.5, "pln": 2.0}


def make_array(axes: str, dtype, seed: int = 0) -> xr.DataArray:
    from engine.axes import dims_from_axes

    sizes = {"T": 2, "Z": 3, "C": 2, "Y": 5, "X": 7}
    shape = [sizes[a] for a in axes]
    rng = np.random.default_rng(seed)
    if dtype == np.float32:
        values = rng.normal(size=shape).astype(np.float32)
    else:
        values = rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)
        values.flat[0] = np.iinfo(dtype).max  # 65535 / 255: the top of the range must survive
    return xr.DataArray(values, dims=dims_from_axes(axes), name=f"img-{axes}",
                        attrs={"spacing": dict(SPACING), "unit": "mm"})


def planes(imp) -> np.ndarray:
    """Every plane of an ImagePlus read the slow, obvious way (ImageJ's own getPixel per plane)."""
    stack = imp.getStack()
    out = []
    for i in range(1, stack.getSize() + 1):
        processor = stack.getProcessor(i)
        plane = [[processor.get(x, y) for x in range(imp.getWidth())] for y in range(imp.getHeight())]
        out.append(plane)
    return np.array(out)


# ----------------------------------------------------------------------------------------------- conversion


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("axes", LAYOUTS)
def test_round_trip_every_type_and_layout(ij, axes, dtype):
    array = make_array(axes, dtype)
    imp = ij.to_imageplus(array)
    assert imp.getBitDepth() == {np.uint8: 8, np.uint16: 16, np.float32: 32}[dtype]
    sizes = {d: array.sizes.get(d, 1) for d in ("ch", "pln", "t")}
    assert (imp.getNChannels(), imp.getNSlices(), imp.getNFrames()) == (sizes["ch"], sizes["pln"], sizes["t"])
    cal = imp.getCalibration()
    assert (cal.pixelWidth, cal.pixelHeight, cal.pixelDepth, str(cal.getUnit())) == (0.25, 0.5, 2.0, "mm")
    assert str(imp.getTitle()) == f"img-{axes}"
    back = ij.to_xarray(imp)
    assert back.dims == array.dims and back.dtype == array.dtype and back.name == array.name
    np.testing.assert_array_equal(back.values, array.values)
    assert back.attrs["spacing"] == SPACING and back.attrs["unit"] == "mm"


def test_unsigned_16_bit_above_32767_survives(ij):
    values = np.array([[0, 1, 32767], [32768, 40000, 65535]], dtype=np.uint16)
    imp = ij.to_imageplus(values)
    assert imp.getProcessor().get(2, 1) == 65535 and imp.getProcessor().get(0, 1) == 32768  # ImageJ sees them
    np.testing.assert_array_equal(ij.to_xarray(imp).values, values)


def test_signed_16_bit_ct_keeps_hounsfield_units(ij, tmp_path):
    """ImageJ stores int16 as value + 32768 with a calibration; the engine must see the true values."""
    from engine.io import read_image, write_image

    hu = np.array([[[-1024, -1, 0], [1, 400, 3071]]], dtype=np.int16)
    imp = ij.to_imageplus(hu, axes="ZYX")
    assert imp.getCalibration().isSigned16Bit() and imp.getProcessor().getPixelValue(0, 0) == -1024
    back = ij.to_xarray(imp)
    assert back.dtype == np.int16
    np.testing.assert_array_equal(back.values, hu[0])
    path = write_image(tmp_path / "ct.tif", hu, axes="ZYX")  # a CT file opened by ImageJ itself
    opened = ij.to_xarray(ij.IJ.openImage(str(path)))
    np.testing.assert_array_equal(opened.values, read_image(path).values.squeeze())


def test_imagej_hyperstack_to_xarray_matches_imagej_pixels(ij):
    """An image ImageJ made itself (C=2, Z=3, T=2, 16-bit) against ImageJ's per-pixel reads."""
    imp = ij.IJ.createImage("hyper", "16-bit ramp", 9, 4, 2, 3, 2)
    stack = imp.getStack()
    for i in range(1, stack.getSize() + 1):  # distinct, partly > 32767 values per plane
        stack.getProcessor(i).add(i * 5000.0)
    imp.getCalibration().pixelDepth = 3.5
    array = ij.to_xarray(imp)
    assert array.dims == ("t", "pln", "ch", "row", "col") and array.shape == (2, 3, 2, 4, 9)
    expected = planes(imp).reshape(2, 3, 2, 4, 9)  # ImageJ's plane order is C, Z, T
    np.testing.assert_array_equal(array.values, expected)
    assert array.values.max() > 32767 and array.attrs["spacing"]["pln"] == 3.5
    assert array.name == "hyper"


def test_rgb_round_trip(ij):
    rgb = ij.IJ.createImage("colour", "RGB ramp", 6, 4, 3)
    processor = rgb.getStack().getProcessor(2)
    processor.set(1, 2, (200 << 16) | (100 << 8) | 50)
    array = ij.to_xarray(rgb)
    assert array.dims == ("pln", "ch", "row", "col") and array.dtype == np.uint8 and array.attrs["rgb"]
    assert array.values[1, :, 2, 1].tolist() == [200, 100, 50]
    back = ij.to_imageplus(array)
    assert back.getType() == back.COLOR_RGB and back.getStackSize() == 3
    np.testing.assert_array_equal(ij.to_xarray(back).values, array.values)


def test_other_dtypes_are_stored_exactly_or_refused(ij):
    assert ij.to_imageplus(np.array([[0, 300]], dtype=np.int32)).getBitDepth() == 16
    assert ij.to_imageplus(np.array([[-1, 3]], dtype=np.int16)).getBitDepth() == 16  # signed calibration
    signed = ij.to_imageplus(np.array([[-1, 3]], dtype=np.int32))  # fits int16: ImageJ's signed 16-bit
    assert signed.getBitDepth() == 16 and signed.getCalibration().isSigned16Bit()
    assert ij.to_xarray(signed).values.tolist() == [[-1, 3]]
    assert ij.to_imageplus(np.array([[-1, 70000]], dtype=np.int32)).getBitDepth() == 32
    assert ij.to_imageplus(np.array([[True, False]])).getProcessor().get(0, 0) == 255
    with pytest.raises(InputError, match="cannot hold exactly"):
        ij.to_imageplus(np.array([[0, 2**30]], dtype=np.int64))
    with pytest.raises(InputError, match="needs axes"):
        ij.to_imageplus(np.zeros((2, 3, 4), np.uint8))
    assert ij.to_imageplus(np.zeros((2, 3, 4), np.uint8), axes="ZYX").getNSlices() == 2


def test_labels_get_a_label_lut_and_the_source_calibration(ij):
    source = ij.to_imageplus(make_array("ZYX", np.uint8))
    labels = xr.DataArray(np.arange(3 * 5 * 7).reshape(3, 5, 7) % 4, dims=("pln", "row", "col"))
    imp = convert.labels_to_imageplus(labels, "labels", calibration=source.getCalibration())
    assert imp.getBitDepth() == 8 and imp.getCalibration().pixelDepth == 2.0
    table = np.asarray(imp.getProcessor().getLut().getBytes()).view(np.uint8).reshape(3, 256)  # R, G, B rows
    assert table[:, 0].tolist() == [0, 0, 0]
    assert len({tuple(table[:, i]) for i in range(1, 256)}) == 255  # every label its own colour
    from engine.io import glasbey_lut

    np.testing.assert_array_equal(table, glasbey_lut())  # the colours of the engine's label TIFFs
    big = convert.labels_to_imageplus(np.array([[0, 70000 // 2]]), "many")
    assert big.getBitDepth() == 16
    with pytest.raises(InputError, match="0..65535"):
        convert.labels_to_imageplus(np.array([[0, 70000]]), "too many")


def test_probabilities_become_one_channel_per_class(ij):
    probs = xr.DataArray(np.random.default_rng(1).random((3, 4, 5), dtype=np.float32), dims=("ch", "row", "col"))
    imp = convert.probabilities_to_imageplus(probs, "p", class_names=["background", "cell", "edge"])
    assert imp.getBitDepth() == 32 and imp.getNChannels() == 3 and imp.isComposite()
    assert [str(imp.getStack().getSliceLabel(i)) for i in (1, 2, 3)] == ["background", "cell", "edge"]
    np.testing.assert_array_equal(ij.to_xarray(imp).values, probs.values)


# ----------------------------------------------------------------------------------------------- commands


def test_jvm_gets_huge_pages_and_an_initial_heap(ij):
    """What makes copies into a fresh JVM fast (see runtime.java_options): asked for, and taken by Java."""
    from fiji_bridge.runtime import _transparent_huge_pages

    arguments = [str(a) for a in ij.jclass("java.lang.management.ManagementFactory").getRuntimeMXBean()
                 .getInputArguments()]
    assert any(a.startswith("-Xms") for a in arguments)
    assert ("-XX:+UseTransparentHugePages" in arguments) == _transparent_huge_pages()
    committed = int(ij.jclass("java.lang.Runtime").getRuntime().totalMemory())
    assert committed >= min(1 << 30, int(ij.jclass("java.lang.Runtime").getRuntime().maxMemory())) * 0.9


def test_commands_are_registered_headless(ij):
    assert ij.headless and ij.jclass("java.awt.GraphicsEnvironment").isHeadless()
    assert {"DeepSeg Train...", "DeepSeg Predict...", "DeepSeg Evaluate...", "DeepSeg Model Info...",
            "DeepSeg Activations..."} <= set(ij.commands())


def test_predict_through_ij_run_equals_the_engine(ij, tiny_model, blob):
    from engine.io import read_image
    from engine.prediction import predict

    model, _ = tiny_model
    imp = ij.open_image(blob[0])
    result = ij.run("DeepSeg Predict...", f"model=[{model}] tile=32 overlap=0.25 output=both", image=imp)
    labels_imp, probs_imp = result.images
    assert str(labels_imp.getTitle()) == "blob-labels" and labels_imp.getBitDepth() == 8
    assert labels_imp.getCalibration().pixelWidth == imp.getCalibration().pixelWidth == 0.5
    expected = predict(model, read_image(blob[0]), tile=(32, 32), overlap=0.25, probabilities=True)
    np.testing.assert_array_equal(ij.to_xarray(labels_imp).values, expected.labels.values)
    np.testing.assert_allclose(ij.to_xarray(probs_imp).values, expected.probabilities.values, atol=1e-6)
    assert [str(probs_imp.getStack().getSliceLabel(i)) for i in (1, 2)] == expected.probabilities.coords["ch"].values.tolist()


def test_predict_on_a_file_path_and_the_active_image(ij, tiny_model, blob):
    model, _ = tiny_model
    by_path = ij.run("DeepSeg Predict...", f"model=[{model}] image=[{blob[0]}] tile=32").images[0]
    imp = ij.open_image(blob[0])
    ij.jclass("ij.WindowManager").setTempCurrentImage(imp)
    try:
        active = ij.run("DeepSeg Predict...", f"model=[{model}] tile=32").images[0]
    finally:
        ij.jclass("ij.WindowManager").setTempCurrentImage(None)
    np.testing.assert_array_equal(ij.to_xarray(by_path).values, ij.to_xarray(active).values)


def test_model_info_fills_the_results_table(ij, tiny_model):
    model, _ = tiny_model
    result = ij.run("DeepSeg Model Info...", f"model=[{model}]")
    info = dict(zip(result.table["key"], result.table["value"]))
    assert info["network"] == "unet2d" and info["classes"] == "2"
    table = ij.jclass("ij.measure.ResultsTable").getResultsTable()
    assert table.size() == len(result.table["key"]) and str(table.getStringValue("key", 0)) == "path"


def test_activations_list_the_layers_in_the_results_table(ij, tiny_model):
    from engine.activations import list_layers
    from engine.model_files import load_model

    model, _ = tiny_model
    layers = list_layers(load_model(model, device="cpu").network)
    for options in (f"model=[{model}]", f"model=[{model}] layer=list"):
        result = ij.run("DeepSeg Activations...", options)
        assert result.table["layer"] == layers and result.images == []
        assert result.table["type"][layers.index("encoders.0.conv1.0")] == "Conv2d"
    table = ij.jclass("ij.measure.ResultsTable").getResultsTable()
    assert table.size() == len(layers) and str(table.getStringValue("layer", 0)) == layers[0]


def test_activations_through_ij_run_equal_the_engine(ij, tiny_model, blob, tmp_path):
    from engine.activations import image_activations, montage
    from engine.io import read_image

    model, _ = tiny_model
    imp = ij.open_image(blob[0])
    out = tmp_path / "maps" / "conv.tif"
    out.parent.mkdir()
    result = ij.run("DeepSeg Activations...", f"model=[{model}] layer=encoders.0.conv1 out=[{out}]", image=imp)
    maps, grid = result.images
    expected = image_activations(model, read_image(blob[0]), "encoders.0.conv1")
    assert str(maps.getTitle()) == "blob-encoders.0.conv1" and maps.getBitDepth() == 32
    assert maps.getStackSize() == 4 and str(maps.getStack().getSliceLabel(2)) == "filter 2"
    np.testing.assert_allclose(ij.to_xarray(maps).values, expected, atol=1e-5)
    assert str(grid.getTitle()) == "blob-encoders.0.conv1-montage" and grid.getBitDepth() == 32
    np.testing.assert_allclose(ij.to_xarray(grid).values, montage(expected), atol=1e-5)
    import tifffile

    np.testing.assert_allclose(tifffile.imread(out), expected, atol=1e-5)
    assert out.with_suffix(".png").is_file() and result.info["files"] == [str(out), str(out.with_suffix(".png"))]
    # a file path instead of an open image gives the same maps
    by_path = ij.run("DeepSeg Activations...", f"model=[{model}] image=[{blob[0]}] layer=encoders.0.conv1").images[0]
    np.testing.assert_array_equal(ij.to_xarray(by_path).values, ij.to_xarray(maps).values)


def test_activations_bad_layer_lists_close_matches(ij, tiny_model, blob):
    model, _ = tiny_model
    with pytest.raises(InputError, match=r"unknown layer 'encoder.0.conv1'\. Did you mean 'encoders.0.conv1'"):
        ij.run("DeepSeg Activations...", f"model=[{model}] image=[{blob[0]}] layer=encoder.0.conv1")
    with pytest.raises(MacroError, match=r"unknown layer 'decoder'.*Did you mean .*'decoders.0'.* in line 1"):
        ij.run_macro(f'run("DeepSeg Activations...", "model=[{model}] image=[{blob[0]}] layer=decoder");')


def test_evaluate_equals_the_engine(ij, tiny_model, blob, tmp_path):
    from engine.metrics import evaluate

    model, _ = tiny_model
    labels = ij.run("DeepSeg Predict...", f"model=[{model}] image=[{blob[0]}] tile=32").images[0]
    csv = tmp_path / "metrics.csv"
    result = ij.run("DeepSeg Evaluate...", f"truth=[{blob[1]}] csv=[{csv}]", image=labels)
    expected = evaluate(ij.to_xarray(labels), str(blob[1]))
    assert result.table["mean_iou"] == [pytest.approx(expected.mean_iou)]
    assert result.table["dice_class_1"] == [pytest.approx(float(expected.dice[1]))]
    assert csv.is_file() and "mean_foreground" in csv.read_text()


def test_evaluate_two_folders_fills_one_row_per_image_and_all(ij, tmp_path):
    """DeepSeg Evaluate... with two folders: the engine's evaluate_folders, row for row, in ImageJ's Results."""
    from engine.io import write_labels
    from engine.metrics import evaluate_folders

    rng = np.random.default_rng(3)
    for name in ("b", "a"):
        truth = (rng.random((20, 30)) > 0.6).astype(np.uint8)
        write_labels(tmp_path / "truth" / f"{name}.tif", truth, axes="YX")
        write_labels(tmp_path / "pred" / f"{name}.tif", np.where(rng.random((20, 30)) > 0.8, 1 - truth, truth),
                     axes="YX")
    csv = tmp_path / "all.csv"
    result = ij.run("DeepSeg Evaluate...", {"prediction": str(tmp_path / "pred"), "truth": str(tmp_path / "truth"),
                                            "csv": str(csv)})
    expected = evaluate_folders(tmp_path / "pred", tmp_path / "truth").rows()
    table = ij.jclass("ij.measure.ResultsTable").getResultsTable()
    assert int(table.getCounter()) == 3
    assert [str(table.getStringValue("image", i)) for i in range(3)] == ["a.tif", "b.tif", "all"]
    for i, row in enumerate(expected):
        assert float(table.getValue("dice_class_1", i)) == pytest.approx(row["dice_class_1"])
        assert float(table.getValue("mean_iou", i)) == pytest.approx(row["mean_iou"])
    assert result.table["image"] == ["a.tif", "b.tif", "all"]
    assert expected[0]["dice_class_1"] != expected[1]["dice_class_1"]  # the rows are different images
    assert csv.is_file() and result.info["report"]["confusion_matrix"] == \
        evaluate_folders(tmp_path / "pred", tmp_path / "truth").total.confusion.tolist()
    with pytest.raises(InputError, match="both be folders"):
        ij.run("DeepSeg Evaluate...", {"prediction": str(tmp_path / "pred"), "truth": str(tmp_path / "truth" / "a.tif")})


def test_train_on_open_images(ij, tmp_path):
    from conftest import TINY_UNET, blob_images
    from engine.model_files import load_model

    images, labels = blob_images(1, shape=(48, 48), seed=3)
    image = ij.to_imageplus(images[0], "train image")
    out = tmp_path / "my model"
    options = {"images": "", "labels": "", "out": str(out), "options": "depth=2 filters=4", "patch": 32, "epochs": 1,
               "batch": 2, "steps": 1, "validation": 0}
    # the image is open in ImageJ, the labels come from a file
    from engine.io import write_labels

    labels_file = write_labels(tmp_path / "labels.tif", xr.DataArray(labels[0], dims=("row", "col")))
    options["labels"] = str(labels_file)
    result = ij.run("DeepSeg Train...", options, image=image)
    assert Path(result.info["model_dir"]) == out
    assert result.table["epoch"] == [1]
    assert load_model(out, device="cpu").network.name == "unet2d"
    assert TINY_UNET["depth"] == load_model(out, device="cpu").config["network_options"]["depth"]


def test_bad_options_raise_the_documented_errors(ij, tiny_model):
    model, _ = tiny_model
    with pytest.raises(InputError, match="unknown option 'tiles'.*valid keys: model, image, tile"):
        ij.run("DeepSeg Predict...", f"model=[{model}] tiles=3")
    with pytest.raises(InputError, match="output='mask' is not valid: expected one of labels, probabilities, both"):
        ij.run("DeepSeg Predict...", f"model=[{model}] output=mask")
    with pytest.raises(FileNotFoundError, match="model folder '/nonexistent/m' does not exist"):
        ij.run("DeepSeg Model Info...", "model=/nonexistent/m")
    with pytest.raises(InputError, match="neither an open image nor an existing file"):
        ij.run("DeepSeg Predict...", f"model=[{model}] image=nothing.tif")
    with pytest.raises(MacroError, match="'Gaussian Blur...' is not available in a headless session.*mode='interactive'"):
        ij.run("Gaussian Blur...", "sigma=2")


def test_cancel_from_the_progress_hook_and_with_escape(ij, tiny_model, blob):
    model, _ = tiny_model
    seen = []

    def cancel_after_first(progress):
        seen.append(progress.done)
        ij.cancel()

    ij.progress_callback = cancel_after_first
    try:
        with pytest.raises(Cancelled):
            ij.run("DeepSeg Predict...", f"model=[{model}] image=[{blob[0]}] tile=16 overlap=0")
        assert len(seen) == 1
        KeyEvent = ij.jclass("java.awt.event.KeyEvent")
        ij.progress_callback = lambda progress: ij.IJ.setKeyDown(KeyEvent.VK_ESCAPE)  # Esc in ImageJ
        with pytest.raises(Cancelled):
            ij.run_macro(f'run("DeepSeg Predict...", "model=[{model}] image=[{blob[0]}] tile=16 overlap=0");')
    finally:
        ij.progress_callback = None
        ij.IJ.resetEscape()


def test_cancel_from_another_thread(ij, tmp_path):
    from conftest import blob_images

    images, labels = blob_images(1, shape=(48, 48), seed=4)
    image = ij.to_imageplus(images[0], "img")
    labels_path = tmp_path / "labels.tif"
    from engine.io import write_labels

    write_labels(labels_path, xr.DataArray(labels[0], dims=("row", "col")))
    started = threading.Event()
    ij.progress_callback = lambda progress: started.set()
    canceller = threading.Thread(target=lambda: started.wait(60) and ij.cancel())
    canceller.start()
    try:
        with pytest.raises(Cancelled, match="cancelled"):
            ij.run("DeepSeg Train...", {"labels": str(labels_path), "out": str(tmp_path / "m"), "epochs": 50,
                                        "options": "depth=2 filters=4", "patch": 32, "batch": 2, "steps": 50},
                   image=image)
    finally:
        ij.progress_callback = None
        canceller.join()


# ----------------------------------------------------------------------------------------------- macros


def test_macro_runs_commands_and_returns(ij, tiny_model, blob, tmp_path):
    model, _ = tiny_model
    out = tmp_path / "out labels.tif"
    value = ij.run_macro(
        "args = getArgument();\n"
        'input = call("ij.Macro.getValue", args, "input", "");\n'
        "open(input);\n"
        f'run("DeepSeg Predict...", "model=[{model}] image=blob.tif tile=32");\n'
        'saveAs("Tiff", call("ij.Macro.getValue", args, "output", ""));\n'
        'return getTitle() + " " + getWidth() + " " + bitDepth();\n',
        {"input": str(blob[0]), "output": str(out)},
    )
    assert value == "out labels.tif 80 8"
    from engine.io import read_labels

    saved = read_labels(out)
    assert saved.attrs["spacing"]["col"] == 0.5
    imp = ij.open_image(blob[0])
    direct = ij.run("DeepSeg Predict...", f"model=[{model}] tile=32", image=imp).images[0]
    np.testing.assert_array_equal(saved.values, ij.to_xarray(direct).values)


@pytest.mark.parametrize("code, message", [
    ('x = 1;\ny = x + ;\nprint("not reached");', r"macro: Number or numeric function expected in line 2"),
    ('print("a");\nexit("no images found in /data");', r"macro: no images found in /data"),
    ('open("/nonexistent/x.tif");\nprint("not reached");', r"File not found"),
    ('run("DeepSeg Model Info...", "model=/nonexistent/m");', r"model folder '/nonexistent/m' does not exist in line 1"),
    ('run("DeepSeg Predict...", "model=/m colour=red");', r"unknown option 'colour'.*valid keys: model, image"),
])
def test_macro_errors_become_exceptions_with_imagej_message(ij, code, message):
    with pytest.raises(MacroError, match=message):
        ij.run_macro(code)


def test_macro_exit_without_message_is_not_an_error(ij):
    assert ij.run_macro('print("x"); exit(); print("y");') is None
    assert ij.run_macro('return "done " + getArgument();', "a=1") == "done a=1"


def test_headless_refuses_macros_it_cannot_run_before_running_them(ij, tmp_path):
    marker = tmp_path / "touched.txt"
    code = f'File.saveString("x", "{marker}");\nrun("Gaussian Blur...", "sigma=2");'
    with pytest.raises(MacroError, match=r"Gaussian Blur\.\.\.; this session is headless: run it with `deepseg macro`"):
        ij.run_macro(code)
    assert not marker.exists()
    with pytest.raises(MacroError, match="asks the user for input"):
        ij.run_macro('n = getNumber("How many?", 3);')


def test_macro_file_and_missing_file(ij, tmp_path):
    path = tmp_path / "my macro.ijm"
    path.write_text('return "from file";\n')
    assert ij.run_macro(path) == "from file"
    assert ij.run_macro(str(path)) == "from file"
    with pytest.raises(FileNotFoundError):
        ij.run_macro(str(tmp_path / "missing.ijm"))


def test_ready_macros_predict_and_evaluate_a_folder(ij, tiny_model, blob, tmp_path):
    model, _ = tiny_model
    macros = Path(__file__).resolve().parents[1] / "macros"
    images = blob[0].parent
    out = tmp_path / "predicted"
    ij.run_macro(macros / "predict_folder.ijm", {"input": str(images), "output": str(out), "model": str(model),
                                                 "tile": 32})
    assert sorted(p.name for p in out.iterdir()) == ["blob.tif"]
    csv = tmp_path / "table.csv"
    ij.run_macro(macros / "evaluate_folder.ijm", {"prediction": str(out), "truth": str(blob[1].parent),
                                                  "results": str(csv)})
    assert csv.is_file() and "mean_foreground_dice" in csv.read_text()
    with pytest.raises(MacroError, match="needs input=<folder> output=<folder> model=<model folder>"):
        ij.run_macro(macros / "predict_folder.ijm", "input=/x")


def test_doctor_reports_every_piece(ij, capsys):
    from fiji_bridge.cli import doctor_main

    assert doctor_main([]) == 0
    out = capsys.readouterr().out
    for name in ("java", "imagej", "display", "pyimagej", "torch", "memory", "start"):
        assert f"] {name}" in out
    assert "ImageJ 1.5" in out and "started headless" in out


def test_cli_macro_headless_in_a_fresh_process(tiny_model, blob, tmp_path):
    """`deepseg macro` on a ready macro (only deepseg commands: no display needed) and exit codes."""
    model, _ = tiny_model
    out = tmp_path / "labels out"
    macro = Path(__file__).resolve().parents[1] / "macros" / "predict_folder.ijm"
    result = run_python(["-m", "engine.cli", "macro", str(macro), "--args", f"input={blob[0].parent}",
                         f"output={out}", f"model={model}", "tile=32"], env={"DISPLAY": ""})
    assert result.returncode == 0, result.stderr
    assert "1 label image(s) written" in result.stdout and (out / "blob.tif").is_file()
    bad = tmp_path / "bad.ijm"
    bad.write_text('print("start");\nx = undefined_thing + 1;\n')
    result = run_python(["-m", "engine.cli", "macro", str(bad)], env={"DISPLAY": ""})
    assert result.returncode == 1
    assert "bad.ijm: Undefined variable in line 2" in result.stderr


def test_ctrl_c_cancels_a_running_command_cleanly(tmp_path):
    """First Ctrl-C: the engine stops at its next progress report and Cancelled is raised (no dead JVM)."""
    import signal
    import subprocess
    import sys

    from bridge_fixtures import ROOT

    script = tmp_path / "train.py"
    script.write_text(
        "import sys\n"
        "import numpy as np\n"
        "import fiji_bridge\n"
        "from engine.errors import Cancelled\n"
        "s = fiji_bridge.start()\n"
        "rng = np.random.default_rng(0)\n"
        "image = s.to_imageplus(rng.random((48, 48)).astype(np.float32), 'img')\n"
        f"labels = r'{tmp_path / 'labels.tif'}'\n"
        "from engine.io import write_labels\n"
        "write_labels(labels, (rng.random((48, 48)) > 0.5).astype(np.uint8), axes='YX')\n"
        "s.progress_callback = lambda p: print('progress', flush=True)\n"
        "try:\n"
        f"    s.run('DeepSeg Train...', {{'labels': labels, 'out': r'{tmp_path / 'm'}', 'epochs': 500, 'steps': 20,\n"
        "           'options': 'depth=2 filters=4', 'patch': 32, 'batch': 2, 'validation': 0}, image=image)\n"
        "except Cancelled as err:\n"
        "    print('cancelled:', err, flush=True)\n"
    )
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, cwd=ROOT)
    try:
        assert process.stdout.readline().strip() == "progress"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "cancelled: train cancelled after" in out
