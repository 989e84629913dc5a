"""No command overwrites a user's input: every output that resolves to an input (the same path, another
spelling, a symbolic or a hard link) is refused before anything is written, and the user's files stay
byte-identical. CLI in-process and in a real subprocess, the Python API, Fiji commands through the real
ImageJ, and the ready macros."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from bridge_fixtures import ij, requires_imagej, run_python  # noqa: F401  (fixture)
from conftest import blob_images
from engine.cli import main
from engine.errors import InputError
from engine.io import write_image, write_labels

ROOT = Path(__file__).resolve().parents[1]
MACROS = ROOT / "macros"


def snapshot(folder: Path) -> dict[str, tuple[str, bytes]]:
    """Every entry under ``folder``: symbolic links by target, files by content (nothing else may change)."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            entries[key] = ("link", os.readlink(path).encode())
        elif path.is_file():
            entries[key] = ("file", path.read_bytes())
        else:
            entries[key] = ("dir", b"")
    return entries


@pytest.fixture
def data(tmp_path):
    """A user's folder: two images (TIFF and PNG), a prediction, a truth, a mask."""
    images, labels = blob_images(2, shape=(40, 40), seed=3)
    folder = tmp_path / "user data"
    write_image(folder / "a.tif", images[0])
    write_image(folder / "b.png", xr.DataArray(images[1].values.astype(np.uint8), dims=("row", "col")))
    write_labels(folder / "pred.tif", labels[0], axes="YX")
    write_labels(folder / "truth.tif", labels[1], axes="YX")
    write_labels(folder / "mask.tif", np.ones_like(labels[1]), axes="YX")
    return folder


def refused(argv: list[str], capsys, match: str) -> None:
    """``deepseg argv`` exits with status 2 and an error message matching ``match``."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("deepseg: error: ") and match in err, err


# ----------------------------------------------------------------------------------------- predict


@pytest.mark.parametrize("flags", [
    ["--out", "{a}"],
    ["--out", "{d}/labels.tif", "--probabilities", "{a}"],
    ["--out", "{d}/a-labels.tif", "--probabilities", "{d}/./a.tif"],
])
def test_predict_refuses_to_replace_its_input(tiny_model, data, capsys, flags):
    before = snapshot(data)
    argv = [f.format(a=data / "a.tif", d=data) for f in flags]
    refused(["predict", str(tiny_model[0]), str(data / "a.tif"), *argv, "--quiet"], capsys, "is the input image")
    assert snapshot(data) == before


def test_predict_refuses_the_same_file_for_labels_and_probabilities(tiny_model, data, capsys):
    before = snapshot(data)
    x = data / "x.tif"
    refused(["predict", str(tiny_model[0]), str(data / "a.tif"), "--out", str(x), "--probabilities", str(x)], capsys,
            "give each output its own path")
    assert snapshot(data) == before  # no x.tif
    x.write_bytes(b"the user's own file")
    before = snapshot(data)
    refused(["predict", str(tiny_model[0]), str(data / "a.tif"), "--out", str(x), "--probabilities", str(x)], capsys,
            "give each output its own path")
    assert snapshot(data) == before


def test_predict_folder_into_itself_writes_nothing(tiny_model, data, capsys):
    """a.tif would be replaced; b.png (-> b.tif) would not clash, but nothing at all is written."""
    before = snapshot(data)
    refused(["predict", str(tiny_model[0]), str(data), "--out", str(data), "--quiet"], capsys, "is the input image")
    assert snapshot(data) == before
    refused(["predict", str(tiny_model[0]), str(data), "--out", str(data.parent / "fine"), "--probabilities",
             str(data), "--quiet"], capsys, "is the input image")
    assert snapshot(data) == before and not (data.parent / "fine").exists()


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_predict_refuses_a_link_to_its_input(tiny_model, data, capsys, link):
    alias = data / "alias.tif"
    (os.symlink if link == "symlink" else os.link)(data / "a.tif", alias)
    before = snapshot(data)
    refused(["predict", str(tiny_model[0]), str(data / "a.tif"), "--out", str(alias), "--quiet"], capsys,
            "is the input image")
    refused(["predict", str(tiny_model[0]), str(alias), "--out", str(data / "labels.tif"), "--probabilities",
             str(data / "a.tif"), "--quiet"], capsys, "is the input image")
    assert snapshot(data) == before


def test_predict_refusal_in_a_real_process(tiny_model, data):
    before = snapshot(data)
    result = run_python(["-m", "engine.cli", "predict", str(tiny_model[0]), str(data / "a.tif"), "--out",
                         str(data / "a.tif")], timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (f"deepseg: error: --out {str(data / 'a.tif')!r} is the input image "
                                     f"{str(data / 'a.tif')!r}: choose another output path (deepseg never "
                                     "overwrites its inputs)")
    assert snapshot(data) == before


def test_predict_file_refuses_its_input_in_python(tiny_model, data):
    from engine.prediction import predict_file

    os.symlink(data / "a.tif", data / "alias.tif")
    before = snapshot(data)
    for labels, probabilities in ((data / "a.tif", None), (data / "alias.tif", None),
                                  (data / "l.tif", str(data / "a.tif")), (data / "x.tif", data / "x.tif")):
        with pytest.raises(InputError, match="is the input image|its own path"):
            predict_file(tiny_model[0], data / "a.tif", labels, probabilities_path=probabilities)
    assert snapshot(data) == before


# ---------------------------------------------------------------------------------------- evaluate


@pytest.mark.parametrize("flag, target, what", [
    ("--csv", "pred.tif", "the prediction"),
    ("--json", "truth.tif", "the truth"),
    ("--plot", "mask.tif", "the mask"),
    ("--csv", "via-symlink.tif", "the prediction"),
    ("--json", "via-hardlink.tif", "the truth"),
])
def test_evaluate_refuses_to_replace_an_input(data, capsys, flag, target, what):
    os.symlink(data / "pred.tif", data / "via-symlink.tif")
    os.link(data / "truth.tif", data / "via-hardlink.tif")
    before = snapshot(data)
    refused(["evaluate", "--prediction", str(data / "pred.tif"), "--truth", str(data / "truth.tif"), "--mask",
             str(data / "mask.tif"), "--csv", str(data / "ok.csv"), flag, str(data / target)], capsys, f"is {what}")
    assert snapshot(data) == before  # not even ok.csv


# ------------------------------------------------------------------------------------- activations


@pytest.mark.parametrize("out", ["a.tif", "a.png", "alias.tif"])
def test_activations_refuse_to_replace_the_image(tiny_model, data, capsys, out):
    """``--out a.png`` puts the stack in a.tif: the image."""
    os.link(data / "a.tif", data / "alias.tif")
    before = snapshot(data)
    refused(["activations", str(tiny_model[0]), str(data / "a.tif"), "--layer", "encoders.0.conv1", "--out",
             str(data / out)], capsys, "is the image")
    assert snapshot(data) == before
    refused(["activations", str(tiny_model[0]), str(data / "b.png"), "--layer", "encoders.0.conv1", "--out",
             str(data / "b.tif")], capsys, "the montage")  # the montage would be b.png
    assert snapshot(data) == before


# ---------------------------------------------------------------------------- Fiji commands, macros


@pytest.mark.imagej
@requires_imagej
def test_fiji_evaluate_refuses_a_csv_that_is_an_input(ij, data):  # noqa: F811
    from fiji_bridge.errors import MacroError

    pred, truth = data / "pred.tif", data / "truth.tif"
    before = snapshot(data)
    with pytest.raises(InputError, match=r"csv '.*pred\.tif' is the prediction '.*pred\.tif'"):
        ij.run("DeepSeg Evaluate...", f"prediction=[{pred}] truth=[{truth}] csv=[{pred}]")
    with pytest.raises(InputError, match="is the truth"):
        ij.run("DeepSeg Evaluate...", f"prediction=[{pred}] truth=[{truth}] csv=[{data / '.' / 'truth.tif'}]")
    imp = ij.open_image(pred)  # an open image: its file is an input too
    with pytest.raises(InputError, match="is the prediction"):
        ij.run("DeepSeg Evaluate...", f"truth=[{truth}] csv=[{pred}]", image=imp)
    with pytest.raises(MacroError, match=r"csv '.*pred\.tif' is the prediction .*choose another output path"):
        ij.run_macro(f'run("DeepSeg Evaluate...", "prediction=[{pred}] truth=[{truth}] csv=[{pred}]");')
    assert snapshot(data) == before


@pytest.mark.imagej
@requires_imagej
def test_fiji_evaluate_of_folders_refuses_a_csv_that_is_an_image_in_them(ij, data, tmp_path):  # noqa: F811
    predictions, truths = tmp_path / "predictions", tmp_path / "truths"
    write_labels(predictions / "one.tif", np.zeros((16, 16), np.uint8), axes="YX")
    write_labels(truths / "one.tif", np.zeros((16, 16), np.uint8), axes="YX")
    before = snapshot(tmp_path)
    with pytest.raises(InputError, match="'one.tif' in the truth folder"):
        ij.run("DeepSeg Evaluate...", f"prediction=[{predictions}] truth=[{truths}] csv=[{truths / 'one.tif'}]")
    assert snapshot(tmp_path) == before


@pytest.mark.imagej
@requires_imagej
def test_fiji_activations_refuse_an_out_that_is_the_image(ij, tiny_model, data):  # noqa: F811
    from fiji_bridge.errors import MacroError

    model, image = tiny_model[0], data / "a.tif"
    before = snapshot(data)
    with pytest.raises(InputError, match=r"out '.*a\.tif' is the image '.*a\.tif'"):
        ij.run("DeepSeg Activations...", f"model=[{model}] image=[{image}] layer=encoders.0.conv1 out=[{image}]")
    imp = ij.open_image(image)
    with pytest.raises(InputError, match="is the image"):  # out=a.png: the stack would go to a.tif
        ij.run("DeepSeg Activations...", f"model=[{model}] layer=encoders.0.conv1 out=[{data / 'a.png'}]", image=imp)
    with pytest.raises(MacroError, match="is the image .*choose another output path"):
        ij.run_macro(f'run("DeepSeg Activations...", "model=[{model}] image=[{image}] layer=encoders.0.conv1 '
                     f'out=[{image}]");')
    assert snapshot(data) == before


@pytest.mark.imagej
@requires_imagej
def test_predict_folder_macro_refuses_its_input_folder(ij, tiny_model, data, tmp_path):  # noqa: F811
    """The same folder spelled differently, through a symbolic link, and a label file hard-linked to an image."""
    from fiji_bridge.errors import MacroError

    model = str(tiny_model[0])
    (tmp_path / "link").symlink_to(data, target_is_directory=True)
    before = snapshot(data)
    for output in (f"{data}/", f"{data}/.", str(tmp_path / "link")):
        with pytest.raises(MacroError, match=r"output folder .* is the input folder .*user data"):
            ij.run_macro(MACROS / "predict_folder.ijm", {"input": str(data), "output": output, "model": model})
    assert snapshot(data) == before
    out = tmp_path / "out"
    out.mkdir()
    os.link(data / "a.tif", out / "a.tif")
    with pytest.raises(MacroError, match=r"output file .*out/a\.tif is the input image .*user data/a\.tif"):
        ij.run_macro(MACROS / "predict_folder.ijm", {"input": str(data), "output": str(out), "model": model})
    assert snapshot(data) == before and sorted(p.name for p in out.iterdir()) == ["a.tif"]


@pytest.mark.imagej
@requires_imagej
def test_evaluate_folder_macro_refuses_results_that_are_an_input(ij, tmp_path):  # noqa: F811
    from fiji_bridge.errors import MacroError

    predictions, truths = tmp_path / "predictions", tmp_path / "truths"
    write_labels(predictions / "one.tif", np.zeros((16, 16), np.uint8), axes="YX")
    write_labels(truths / "one.tif", np.zeros((16, 16), np.uint8), axes="YX")
    before = snapshot(tmp_path)
    for results in (predictions / "one.tif", truths / "one.tif"):
        with pytest.raises(MacroError, match=r"results file .*one\.tif is the (prediction|truth) image"):
            ij.run_macro(MACROS / "evaluate_folder.ijm", {"prediction": str(predictions), "truth": str(truths),
                                                          "results": str(results)})
    assert snapshot(tmp_path) == before


@pytest.mark.imagej
@requires_imagej
def test_deepseg_macro_predict_folder_into_itself_fails_in_a_real_process(tiny_model, data):
    before = snapshot(data)
    result = run_python(["-m", "engine.cli", "macro", str(MACROS / "predict_folder.ijm"), "--args",
                         f"input={data}", f"output={data}", f"model={tiny_model[0]}"], env={"DISPLAY": ""})
    assert result.returncode == 1, result.stderr
    assert f"output folder {data}{os.sep} is the input folder {data}{os.sep}" in result.stderr
    assert snapshot(data) == before


def test_snapshot_sees_every_change(tmp_path):
    """The check the tests above rely on: a rewrite, a new file and a replaced link all show."""
    (tmp_path / "f").write_bytes(b"1")
    os.symlink(tmp_path / "f", tmp_path / "l")
    before = snapshot(tmp_path)
    (tmp_path / "f").write_bytes(b"2")
    assert snapshot(tmp_path) != before
    (tmp_path / "f").write_bytes(b"1")
    assert snapshot(tmp_path) == before
    (tmp_path / "new").write_bytes(b"")
    assert snapshot(tmp_path) != before
