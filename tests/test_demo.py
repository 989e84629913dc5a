"""`deepseg demo` (2D, 3D, through ImageJ) and the Dice it prints, the CLI's exit statuses, the bridge's
subcommands arriving through entry points, and `deepseg doctor --install-plugin`: all in fresh processes."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bridge_fixtures import ROOT, requires_imagej, run_python

DICE = re.compile(r"foreground Dice on held-out test images: ([0-9.]+) \(IoU ([0-9.]+), accuracy ([0-9.]+)\)")


def deepseg(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """``deepseg ARGS`` in a fresh process (as the installed script runs it)."""
    return run_python(["-m", "engine.cli", *args], timeout=timeout, env=env)


def check_demo(out: Path, result: subprocess.CompletedProcess, test_images: int) -> float:
    """The demo's files are there and its printed Dice parses, lies in [0, 1] and is the saved one."""
    import json

    assert result.returncode == 0, result.stderr
    match = DICE.search(result.stdout)
    assert match, result.stdout
    dice, iou, accuracy = (float(v) for v in match.groups())
    assert 0.0 <= dice <= 1.0 and 0.0 <= iou <= dice and 0.0 <= accuracy <= 1.0
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["per_class"]["blob"]["dice"] == pytest.approx(dice, abs=5e-5)
    assert (out / "model" / "config.json").is_file() and (out / "model" / "training_curves.png").is_file()
    assert (out / "confusion_matrix.png").stat().st_size > 0
    assert len(list((out / "predictions").glob("*.tif"))) == test_images
    return dice


# ------------------------------------------------------------------------------------ engine / bridge boundary


def test_engine_imports_nothing_from_fiji_bridge():
    code = (
        "import importlib, pkgutil, sys\n"
        "import engine, engine.cli\n"
        "for module in pkgutil.walk_packages(engine.__path__, 'engine.'):\n"
        "    importlib.import_module(module.name)\n"
        "engine.cli.main(['networks'])\n"
        "print(sorted(m for m in sys.modules if m.startswith('engine.')))\n"
        "print([m for m in sys.modules if m.split('.')[0] == 'fiji_bridge'])\n"
    )
    result = run_python(["-c", code])
    assert result.returncode == 0, result.stderr
    imported, bridge = result.stdout.strip().splitlines()[-2:]
    assert "'engine.demo'" in imported and "'engine.metrics'" in imported  # every module was imported
    assert bridge == "[]"


def test_bridge_subcommands_arrive_through_entry_points():
    from engine.plugins import COMMANDS, DEMO_RUNNERS, available, load
    from fiji_bridge import cli as bridge_cli

    assert {"macro", "doctor", "fiji"} <= set(available(COMMANDS))
    assert load(COMMANDS, "fiji") is bridge_cli.FIJI and load(COMMANDS, "macro").main is bridge_cli.macro_main
    assert available(DEMO_RUNNERS)["imagej"].value == "fiji_bridge.demo:run_imagej_demo"
    listing = deepseg("--help")
    assert listing.returncode == 0
    for name in ("macro", "doctor", "fiji"):
        assert re.search(rf"^\s+{name}\s+\S", listing.stdout, re.M), listing.stdout


# ----------------------------------------------------------------------------------------------------- demo


def test_demo_2d_one_epoch(tmp_path):
    out = tmp_path / "demo"
    check_demo(out, deepseg("demo", "--epochs", "1", "--out", str(out), "--quiet"), test_images=3)
    assert (out / "data" / "train" / "Images" / "blobs00.tif").is_file()


@pytest.mark.slow
def test_demo_3d_one_epoch(tmp_path):
    out = tmp_path / "demo3d"
    result = deepseg("demo", "--3d", "--epochs", "1", "--out", str(out), "--quiet")
    check_demo(out, result, test_images=2)
    assert "deepseg demo (3D)" in result.stdout


@pytest.mark.slow
@pytest.mark.imagej
@requires_imagej
def test_make_demo_through_imagej_reaches_the_readme_dice(tmp_path):
    """`make demo` = `deepseg demo --imagej` with its default settings: README reports Dice 0.966."""
    from engine.io import read_labels

    out = tmp_path / "demo-imagej"
    result = deepseg("demo", "--imagej", "--out", str(out), "--quiet", env={"DISPLAY": ""})
    dice = check_demo(out, result, test_images=3)
    assert "through ImageJ" in result.stdout
    assert dice >= 0.9
    assert read_labels(out / "predictions" / "blobs00.tif").values.max() == 1  # saved by ImageJ's saveAs


# ---------------------------------------------------------------------------------------------- exit statuses


@pytest.mark.parametrize("args, message", [
    (["predict", "no-such-model", "no-such-image.tif", "--out", "x.tif"], "does not exist"),
    (["train", "--images", "no-such-folder", "--epochs", "1"], "no-such-folder"),
    (["evaluate", "--prediction", "a.tif", "--truth", "a.tif", "--csv", "a.tif"], "a.tif"),
    (["fiji", "--fiji", "."], "is not a Fiji.app folder"),
    (["macro", "no-such-macro.ijm"], "no-such-macro.ijm"),
    ([], ""),
])
def test_bad_input_exits_with_status_2(args, message, tmp_path):
    result = run_python(["-m", "engine.cli", *args], cwd=tmp_path, env={"DISPLAY": ""})
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.imagej
@requires_imagej
def test_ctrl_c_to_deepseg_macro_exits_with_status_130(tmp_path):
    """SIGINT (Ctrl-C) to a `deepseg macro` process while its macro runs: cancelled cleanly, status 130."""
    macro = tmp_path / "forever.ijm"
    macro.write_text('print("running");\nwhile (true) {\n    wait(50);\n}\n')
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT), "DISPLAY": ""}
    process = subprocess.Popen([sys.executable, "-m", "engine.cli", "macro", str(macro)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        assert process.stdout.readline().strip() == "running"  # the macro runs: Ctrl-C now cancels it
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "deepseg macro: cancelled" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------ doctor


@pytest.mark.imagej
@requires_imagej
def test_doctor_install_plugin_puts_the_jar_into_plugins(tmp_path):
    fiji = tmp_path / "Fiji.app"
    (fiji / "plugins").mkdir(parents=True)
    result = deepseg("doctor", "--install-plugin", str(fiji))
    assert result.returncode == 0, result.stderr
    jar = fiji / "plugins" / "deepseg_bridge.jar"
    assert f"installed {jar}" in result.stdout
    with zipfile.ZipFile(jar) as archive:
        config = archive.read("plugins.config").decode()
        assert "deepseg.fiji.Pixels" in [n.replace("/", ".").removesuffix(".class") for n in archive.namelist()]
    assert 'Plugins>deepseg, "DeepSeg Predict..."' in config
    missing = deepseg("doctor", "--install-plugin", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "nowhere" in missing.stderr
