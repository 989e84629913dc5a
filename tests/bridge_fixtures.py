"""Fixtures and helpers of the fiji_bridge tests (imported by tests/test_bridge_*.py).

One JVM per test process: the ``ij`` fixture starts ImageJ headless once per session (JPype cannot
start a second JVM). Tests that need a display run their ImageJ in a subprocess: this file is also
that subprocess's script (``python tests/bridge_fixtures.py record ...``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imagej_missing() -> str | None:
    """Why ImageJ tests cannot run here (no Java / no ij.jar), or None."""
    from fiji_bridge.errors import SetupError
    from fiji_bridge.runtime import find_imagej, find_java

    try:
        find_java()
        find_imagej(None)
    except SetupError as err:
        return f"needs Java and ImageJ 1.x (CI installs default-jdk-headless and libij-java): {err}"
    return None


def display_missing() -> str | None:
    from fiji_bridge.display import find_xvfb, has_display

    if has_display() or find_xvfb():
        return None
    return "needs a display or Xvfb (apt-get install xvfb)"


requires_imagej = pytest.mark.skipif(imagej_missing() is not None, reason=str(imagej_missing()))
requires_display = pytest.mark.skipif(display_missing() is not None, reason=str(display_missing()))


@pytest.fixture(scope="session")
def ij(plugin_cache):
    """The headless ImageJ session shared by every bridge test in this process (plugin jar: ``plugin_cache``)."""
    reason = imagej_missing()
    if reason:
        pytest.skip(reason)
    import fiji_bridge

    return fiji_bridge.start(mode="headless")


@pytest.fixture(scope="session")
def blob(tmp_path_factory):
    """A calibrated 2D test image and its truth as TIFF files (in a folder whose name has a space)."""
    import xarray as xr

    from conftest import blob_images
    from engine.io import write_image

    images, labels = blob_images(1, shape=(64, 80), seed=11)
    folder = tmp_path_factory.mktemp("blob data")
    image_path = write_image(folder / "blob.tif", images[0])
    truth_path = write_image(folder / "truth" / "blob.tif", xr.DataArray(labels[0], dims=("row", "col")))
    return image_path, truth_path


def run_python(args: list[str], *, env: dict | None = None, timeout: float = 300, cwd: Path = ROOT):
    """Run ``python args...`` in a fresh process (its own JVM); returns CompletedProcess."""
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                **(env or {})}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=full_env, timeout=timeout,
                          cwd=cwd)


# ---------------------------------------------------------------------------------------------------------------
# Subprocess script: record DeepSeg Predict with the Macro Recorder, the way a user would, under Xvfb.


def record_predict(model: str, image: str, tile: str) -> dict:
    """Open ``image``, choose Plugins > deepseg > DeepSeg Predict... in the real menu, fill in the dialog,
    press OK; return the Recorder's text, the menu path and the label image's pixels' checksum."""
    from fiji_bridge.display import VirtualDisplay

    display = VirtualDisplay.start()  # DISPLAY set before the JVM starts: ImageJ sees a display like a desktop's
    import fiji_bridge

    session = fiji_bridge.start(mode="interactive")
    session.show_ui()
    J = session.jclass
    IJ = J("ij.IJ")
    item, path = _menu_item(J, J("ij.Menus").getMenuBar(), "DeepSeg Predict...")
    IJ.run("Record...")
    recorder = _wait(lambda: J("ij.plugin.frame.Recorder").getInstance())
    IJ.open(image)
    ActionEvent = J("java.awt.event.ActionEvent")
    item.dispatchEvent(ActionEvent(item, ActionEvent.ACTION_PERFORMED, item.getActionCommand()))  # a menu click
    GenericDialog = J("ij.gui.GenericDialog")
    dialog = _wait(lambda: next((w for w in J("java.awt.Window").getWindows()
                                 if isinstance(w, GenericDialog) and w.isShowing()), None))
    labels = [str(c.getText()) for c in dialog.getComponents() if isinstance(c, J("java.awt.Label"))]
    fields = list(dialog.getStringFields())  # model, image path, tile, overlap, batch, device
    fields[0].setText(model)
    fields[2].setText(tile)
    ok = dialog.getButtons()[0]
    dialog.actionPerformed(ActionEvent(ok, ActionEvent.ACTION_PERFORMED, "OK"))
    result = _wait(lambda: next((t for t in J("ij.WindowManager").getImageTitles() if "labels" in str(t)), None))
    imp = J("ij.WindowManager").getImage(result)
    values = session.to_xarray(imp).values
    text = _wait(lambda: str(recorder.getText()) if "DeepSeg" in str(recorder.getText()) else None)
    return {"recorded": text, "menu": path, "dialog_labels": labels, "title": str(result),
            "labels_sum": int(values.astype("int64").sum()), "display": display.name}


def _menu_item(J, menu_bar, label: str):
    Menu = J("java.awt.Menu")

    def walk(menu, path):
        for i in range(menu.getItemCount()):
            item = menu.getItem(i)
            if isinstance(item, Menu):
                found = walk(item, path + [str(item.getLabel())])
                if found:
                    return found
            elif str(item.getLabel()) == label:
                return item, path + [label]
        return None

    for i in range(menu_bar.getMenuCount()):
        found = walk(menu_bar.getMenu(i), [str(menu_bar.getMenu(i).getLabel())])
        if found:
            return found
    raise AssertionError(f"menu item {label!r} not found")


def _wait(get, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = get()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError("waited too long")


if __name__ == "__main__":
    if sys.argv[1] == "record":
        print("RESULT " + json.dumps(record_predict(*sys.argv[2:5])))
