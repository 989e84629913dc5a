"""fiji_bridge with a display: real menus, dialogs and the Macro Recorder under Xvfb, and `deepseg macro`
mixing ImageJ's built-in commands with deepseg's on a machine without a display.

Each test runs its ImageJ in a fresh process started without DISPLAY, as on a headless server (the test
session's own JVM is headless and cannot gain a display)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bridge_fixtures import blob, ij, requires_display, requires_imagej, run_python  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.imagej, pytest.mark.display, requires_imagej, requires_display]
NO_DISPLAY = {"DISPLAY": ""}


def test_recorded_predict_replayed_headless_equals_deepseg_predict(ij, tiny_model, blob, tmp_path):
    from engine.io import read_labels

    model, _ = tiny_model
    image = blob[0]
    result = run_python(["tests/bridge_fixtures.py", "record", str(model), str(image), "32"], env=NO_DISPLAY,
                        timeout=300)
    assert result.returncode == 0, result.stderr  # and Python exited (within the timeout) although windows were open
    recorded = json.loads(result.stdout.split("RESULT ", 1)[1])
    assert recorded["menu"] == ["Plugins", "deepseg", "DeepSeg Predict..."]  # from the jar's plugins.config
    assert recorded["dialog_labels"][:4] == ["Model folder", "Image", "or path", "Tile size"]
    line = recorded["recorded"].strip()
    assert line == (f'run("DeepSeg Predict...", "model={model} image=blob.tif tile=32 overlap=0.25 '
                    'blend=gaussian output=labels batch=auto device=auto out=[] cluster=[] precision=auto");')
    assert not Path(f"/tmp/.X11-unix/X{recorded['display'][1:]}").exists()  # Xvfb ended with Python

    replayed = tmp_path / "replayed.tif"
    ij.run_macro(f'open("{image}");\n{line}\nsaveAs("Tiff", "{replayed}");')  # headless, this process

    cli_out = tmp_path / "cli.tif"
    cli = run_python(["-m", "engine.cli", "predict", str(model), str(image), "--out", str(cli_out), "--tile", "32",
                      "--quiet"])
    assert cli.returncode == 0, cli.stderr
    replay_labels, cli_labels = read_labels(replayed), read_labels(cli_out)
    np.testing.assert_array_equal(replay_labels.values, cli_labels.values)
    assert int(replay_labels.values.astype(np.int64).sum()) == recorded["labels_sum"]  # = what the GUI showed
    assert replay_labels.attrs["spacing"] == cli_labels.attrs["spacing"]


def test_deepseg_macro_runs_builtin_commands_with_their_options_without_a_display(tiny_model, blob, tmp_path):
    """Gaussian Blur's sigma must be honoured (headless ImageJ would silently use the default, 2)."""
    from engine.io import read_image, read_labels
    from engine.prediction import predict

    model, _ = tiny_model
    macro = tmp_path / "mixed.ijm"
    macro.write_text(
        "args = getArgument();\n"
        'out = call("ij.Macro.getValue", args, "out", "");\n'
        'newImage("spot", "32-bit black", 101, 101, 1);\n'
        "setPixel(50, 50, 1000);\n"
        'run("Gaussian Blur...", "sigma=6");\n'
        'saveAs("Tiff", out + "/spot.tif");\n'
        f'open("{blob[0]}");\n'
        f'run("DeepSeg Predict...", "model=[{model}] tile=32");\n'
        'saveAs("Tiff", out + "/labels.tif");\n'
    )
    result = run_python(["-m", "engine.cli", "macro", str(macro), "--args", f"out={tmp_path}", "-v"], env=NO_DISPLAY)
    assert result.returncode == 0, result.stderr
    assert "started virtual display" in result.stderr
    spot = read_image(tmp_path / "spot.tif").values.astype(np.float64)
    y, x = np.mgrid[:101, :101]
    variance = (spot * ((x - 50) ** 2)).sum() / spot.sum()
    assert variance == pytest.approx(36, rel=0.05)
    expected = predict(model, read_image(blob[0]), tile=(32, 32)).labels.values
    np.testing.assert_array_equal(read_labels(tmp_path / "labels.tif").values, expected)

    failing = tmp_path / "failing.ijm"
    failing.write_text('newImage("a", "8-bit black", 10, 10, 1);\nrun("Gaussian Blur...", "sigma=1");\n'
                       'run("DeepSeg Predict...", "model=/nowhere");\n')
    result = run_python(["-m", "engine.cli", "macro", str(failing)], env=NO_DISPLAY)
    assert result.returncode == 1
    assert "failing.ijm: model folder '/nowhere' does not exist in line 3" in result.stderr


def test_gui_session_with_windows_exits_cleanly(tmp_path):
    code = (
        "import fiji_bridge, numpy as np\n"
        "s = fiji_bridge.start(mode='gui', virtual_display=True, memory='1g')\n"
        "assert 0.9 * 2**30 < s.jclass('java.lang.Runtime').getRuntime().maxMemory() <= 2**30\n"
        "imp = s.to_imageplus(np.zeros((30, 40), np.uint8), 'shown', show=True)\n"
        "s.run('Gaussian Blur...', 'sigma=2', image=imp)\n"  # starts ImageJ's filter thread pool
        "try:\n"  # an ImageJ error with its main window open: an exception, not a dialog nobody can close
        "    s.run('Gaussian Blur...', 'sigma=abc', image=imp)\n"
        "except fiji_bridge.MacroError as err:\n"
        "    assert 'sigma' in str(err), err\n"
        "print(s.virtual_display.name, s.IJ.getInstance() is not None, len(s.jclass('java.awt.Window').getWindows()))\n"
    )
    result = run_python(["-c", code], env=NO_DISPLAY, timeout=120)  # a hang at exit fails by the timeout
    assert result.returncode == 0, result.stderr
    name, has_window, windows = result.stdout.split()
    assert has_window == "True" and int(windows) >= 2  # the ImageJ window and the image
    assert not Path(f"/tmp/.X11-unix/X{name[1:]}").exists()


def test_deepseg_fiji_opens_imagej_with_the_deepseg_menu():
    """`deepseg fiji` on a desktop (here Xvfb): ImageJ's window with Plugins > deepseg; --check closes it again."""
    from fiji_bridge.display import VirtualDisplay

    display = VirtualDisplay.start()
    try:
        result = run_python(["-m", "engine.cli", "fiji", "--check", "--memory", "1g"], env={"DISPLAY": display.name},
                            timeout=180)
    finally:
        display.stop()
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:5] == [f"Plugins > deepseg > DeepSeg {name}" for name in
                                             ("Train...", "Predict...", "Evaluate...", "Model Info...", "Activations...")]


def test_deepseg_fiji_waits_for_imagej_until_ctrl_c():
    """Without --check the launcher stays until ImageJ's window closes; Ctrl-C ends it too (status 130)."""
    import os
    import signal
    import subprocess
    import sys

    from bridge_fixtures import ROOT
    from fiji_bridge.display import VirtualDisplay

    display = VirtualDisplay.start()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DISPLAY": display.name}
    process = subprocess.Popen([sys.executable, "-m", "engine.cli", "fiji"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        line = process.stderr.readline()
        assert "is open: Plugins > deepseg has DeepSeg Train..." in line and process.poll() is None
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
        display.stop()
    assert process.returncode == 130 and "interrupted" in err, err


def test_deepseg_fiji_errors_without_a_display_or_a_fiji():
    result = run_python(["-m", "engine.cli", "fiji"], env=NO_DISPLAY)
    assert result.returncode == 2 and "there is no display" in result.stderr, result.stderr
    result = run_python(["-m", "engine.cli", "fiji", "--fiji", str(Path(__file__).parent)], env=NO_DISPLAY)
    assert result.returncode == 2 and "is not a Fiji.app folder" in result.stderr, result.stderr
