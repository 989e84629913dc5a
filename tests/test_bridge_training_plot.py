"""DeepSeg Train...'s training window: a live ImageJ Plot of loss and Dice per epoch with the ETA in the status
bar, with a (virtual) display; none headless, where the model folder's training_curves.png has the curves.
Also the time budget's option in Fiji (``time=``).

The display test runs its own ImageJ in a subprocess under Xvfb: this file is that subprocess's script
(``python tests/test_bridge_training_plot.py train <folder>``)."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bridge_fixtures import ij, requires_display, requires_imagej, run_python  # noqa: E402,F401  (fixtures)

EPOCHS = 3


def write_data(folder: Path) -> tuple[Path, Path]:
    from conftest import blob_images
    from engine.io import write_image, write_labels

    images, labels = blob_images(2, shape=(48, 48), seed=5)
    for i, (image, label) in enumerate(zip(images, labels)):
        write_image(folder / "images" / f"b{i}.tif", image)
        write_labels(folder / "labels" / f"b{i}.tif", label, template=image)
    return folder / "images", folder / "labels"


def train_options(folder: Path, **extra) -> dict:
    images, labels = write_data(folder)
    return {"images": str(images), "labels": str(labels), "out": str(folder / "m"), "options": "depth=2 filters=4",
            "patch": 32, "batch": 2, "steps": 2, "epochs": EPOCHS, **extra}


# ------------------------------------------------------------------------------------------- options
def test_time_is_an_option_of_deepseg_train():
    from engine.config import TrainConfig
    from fiji_bridge.commands import TRAIN, spec, train_config_values, train_values

    options = {o.key: o for o in spec(TRAIN).options}
    assert options["time"].dialog_label == "Time budget" and options["time"].default == ""
    assert options["epochs"].default is None and options["epochs"].auto == "auto"
    values = spec(TRAIN).parse("out=m time=10m")
    assert train_config_values(values)["time_budget"] == "10m" and train_config_values(values)["epochs"] is None
    assert train_config_values(spec(TRAIN).parse("out=m"))["time_budget"] is None
    assert train_values(TrainConfig(time_budget="1h30m", epochs=20))["time"] == "1h30m"


# ------------------------------------------------------------------------------------------ headless
@requires_imagej
def test_headless_training_opens_no_window_and_the_curves_are_in_the_model_folder(ij, tmp_path):
    result = ij.run("DeepSeg Train...", train_options(tmp_path))
    plot_windows = [w for w in ij.jclass("java.awt.Window").getWindows()
                    if isinstance(w, ij.jclass("ij.gui.PlotWindow"))]
    assert result.info["plot"] is None and plot_windows == []
    assert result.table["epoch"] == list(range(1, EPOCHS + 1))
    assert (tmp_path / "m" / "training_curves.png").stat().st_size > 1000


# ---------------------------------------------------------------------------------- with a display
@pytest.mark.imagej
@pytest.mark.display
@requires_imagej
@requires_display
def test_training_window_shows_loss_and_dice_every_epoch_and_the_eta(tmp_path):
    done = run_python([__file__, "train", str(tmp_path)], env={"DISPLAY": ""}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(next(line[7:] for line in done.stdout.splitlines() if line.startswith("RESULT ")))
    assert found["window"] == "ij.gui.PlotWindow" and found["title"] == "DeepSeg training: m"
    assert [d.split(": ", 1)[1] for d in found["legend"]] == ["training loss", "validation loss", "training Dice",
                                                             "validation Dice"]
    assert found["points"] == [EPOCHS] * 4  # every curve has a point per epoch
    assert found["x"] == list(range(1, EPOCHS + 1))
    assert found["history_loss"] == pytest.approx(found["y_loss"], rel=1e-6)
    assert found["points_seen"] == list(range(EPOCHS))  # at epoch k's report the window had k - 1 points: live
    assert any("ETA" in text and text.startswith("DeepSeg Train: epoch") for text in found["status"]), found["status"]
    assert found["plot_info"] == "DeepSeg training: m"


def train_with_window(folder: str) -> dict:
    """Subprocess: ImageJ with a (virtual) display, DeepSeg Train...; the plot window and the status bar."""
    from fiji_bridge.display import VirtualDisplay

    VirtualDisplay.start()  # DISPLAY set before the JVM starts, as on a desktop
    import fiji_bridge

    session = fiji_bridge.start(mode="interactive")
    session.show_ui()
    J = session.jclass
    status: list[str] = []
    points_seen: list[int] = []

    def watch(progress) -> None:  # called by the command's progress callback, before the plot's update
        if progress.stage == "epoch":
            imp = J("ij.WindowManager").getImage("DeepSeg training: m")
            points_seen.append(0 if imp is None else len(imp.getWindow().getPlot().getDataObjectArrays(0)[0]))

    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            text = str(J("ij.ImageJ").getStatusBarText() or "")
            if text and (not status or status[-1] != text):
                status.append(text)
            time.sleep(0.005)

    session.progress_callback = watch
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = session.run("DeepSeg Train...", train_options(Path(folder)))
    stop.set()
    sampler.join()
    imp = J("ij.WindowManager").getImage("DeepSeg training: m")
    window = imp.getWindow()
    plot = window.getPlot()
    count = len(plot.getDataObjectDesignations())
    arrays = [plot.getDataObjectArrays(i) for i in range(count)]
    return {"window": str(window.getClass().getName()), "title": str(imp.getTitle()),
            "legend": [str(d) for d in plot.getDataObjectDesignations()], "points": [len(a[0]) for a in arrays],
            "x": [float(v) for v in arrays[0][0]],
            "y_loss": [float(v) for v in arrays[0][1]], "history_loss": result.table["loss"],
            "points_seen": points_seen, "status": status, "plot_info": result.info["plot"]}


if __name__ == "__main__":
    if sys.argv[1] == "train":
        print("RESULT " + json.dumps(train_with_window(sys.argv[2])), flush=True)
