"""The generated dialogs in a real ImageJ under Xvfb: open images offered as a choice (plus a file or folder),
``auto`` for automatic sizes, and the Macro Recorder's line replayed headless gives the same result.

The dialogs run in a fresh process started without DISPLAY (this file is also that process's script), as in
tests/test_bridge_display.py."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from bridge_fixtures import blob, ij, requires_display, requires_imagej, run_python  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.imagej, pytest.mark.display, requires_imagej, requires_display]


def test_dialogs_offer_open_images_and_auto_and_replay_headless(ij, blob, tmp_path):
    from engine.io import read_labels
    from fiji_bridge import commands
    from fiji_bridge.dialog import FILE_ITEM

    image, truth = blob
    labels = shutil.copy(truth, tmp_path / "blob-labels.tif")
    out = tmp_path / "gui-model"
    result = run_python([__file__, str(image), str(labels), str(out)], env={"DISPLAY": ""})
    assert result.returncode == 0, result.stderr
    gui = json.loads(result.stdout.split("RESULT ", 1)[1])

    train = gui["train"]  # as the dialog first showed: the active image chosen, every open image offered
    assert train["choices"]["Images"] == {"items": ["blob-labels.tif", "blob.tif", FILE_ITEM], "selected": "blob.tif"}
    assert train["choices"]["Labels"] == {"items": ["blob-labels.tif", "blob.tif", FILE_ITEM], "selected": FILE_ITEM}
    assert {k: train["texts"][k] for k in ("Patch size", "Batch size", "Steps per epoch", "Classes", "Ignore label")} \
        == {"Patch size": "auto", "Batch size": "auto", "Steps per epoch": "auto", "Classes": "auto",
            "Ignore label": "none"}
    train_line = gui["recorded"]["train"]
    spec = commands.spec(commands.TRAIN)
    values = spec.parse(train_line.split('", "', 1)[1].rsplit('");', 1)[0])
    assert values["images"] == "blob.tif" and values["labels"] == "blob-labels.tif"  # chosen open images, by title
    assert values["patch"] is None and values["batch"] is None and values["epochs"] == 1
    assert train_line == f'run("{commands.TRAIN}", "{spec.format(values)}");'  # recorded as format writes it
    assert " patch=auto " in train_line and " batch=auto " in train_line

    predict_line = gui["recorded"]["predict"]  # the file chosen through [file or folder], not the active image
    assert gui["predict"]["choices"]["Image"]["selected"] == "blob-labels.tif"
    assert f"image=[{image}]" in predict_line and " batch=auto " in predict_line

    # the recorded lines replayed headless: same training options, same labels as the GUI showed
    replayed = tmp_path / "replayed-model"
    ij.run_macro(f'open("{image}");\nopen("{labels}");\n{train_line.replace(str(out), str(replayed))}\nclose("*");')
    saved = [json.loads((m / "train_config.json").read_text()) for m in (out, replayed)]
    assert saved[0].pop("out") == str(out) and saved[1].pop("out") == str(replayed)
    assert saved[0] == saved[1]
    predicted = tmp_path / "replayed.tif"
    ij.run_macro(f'{predict_line.replace(str(out), str(replayed))}\nsaveAs("Tiff", "{predicted}");\nclose("*");')
    assert predicted.is_file() and read_labels(predicted).shape == read_labels(image).shape


# ---------------------------------------------------------------------------------------------------------------
# Subprocess script: fill in DeepSeg Train... and DeepSeg Predict... with the Recorder on, under Xvfb.


def _fields(dialog, J) -> list[tuple[str, object]]:
    """(label, input component) in dialog order; a field inside a panel (file/folder fields) counts as its own."""
    Label, TextField, Choice, Checkbox, Container = (J(f"java.awt.{n}") for n in
                                                     ("Label", "TextField", "Choice", "Checkbox", "Container"))
    pairs: list[tuple[str, object]] = []
    label = ""

    def walk(component):
        nonlocal label
        if isinstance(component, Label):
            label = str(component.getText()).strip()
        elif isinstance(component, Checkbox):
            pairs.append((str(component.getLabel()), component))
        elif isinstance(component, (TextField, Choice)):
            pairs.append((label, component))
        elif isinstance(component, Container):
            for child in component.getComponents():
                walk(child)

    for component in dialog.getComponents():
        walk(component)
    return pairs


def _describe(pairs, J) -> dict:
    Choice = J("java.awt.Choice")
    choices = {label: {"items": [str(c.getItem(i)) for i in range(c.getItemCount())],
                       "selected": str(c.getSelectedItem())} for label, c in pairs if isinstance(c, Choice)}
    texts = {label: str(c.getText()) for label, c in pairs if hasattr(c, "getText") and not isinstance(c, Choice)}
    return {"choices": choices, "texts": texts}


def _run_dialog(session, command: str, fill) -> dict:
    from bridge_fixtures import _menu_item, _wait

    J = session.jclass
    item, _ = _menu_item(J, J("ij.Menus").getMenuBar(), command)
    ActionEvent = J("java.awt.event.ActionEvent")
    item.dispatchEvent(ActionEvent(item, ActionEvent.ACTION_PERFORMED, item.getActionCommand()))
    GenericDialog = J("ij.gui.GenericDialog")
    dialog = _wait(lambda: next((w for w in J("java.awt.Window").getWindows()
                                 if isinstance(w, GenericDialog) and w.isShowing()), None))
    pairs = _fields(dialog, J)
    shown = _describe(pairs, J)
    fill(pairs)
    ok = dialog.getButtons()[0]
    dialog.actionPerformed(ActionEvent(ok, ActionEvent.ACTION_PERFORMED, "OK"))
    return shown


def _set(pairs, label: str, value: str, after: str | None = None) -> None:
    """Set the field labelled ``label`` (the first one after the field labelled ``after``, if given)."""
    start = 0 if after is None else [name for name, _ in pairs].index(after) + 1
    component = next(c for name, c in pairs[start:] if name == label)
    if hasattr(component, "getSelectedItem"):  # a Choice
        component.select(value)
    else:
        component.setText(value)


def record_dialogs(image: str, labels: str, out: str) -> dict:
    from bridge_fixtures import _wait
    from fiji_bridge.dialog import FILE_ITEM
    from fiji_bridge.display import VirtualDisplay

    VirtualDisplay.start()
    import fiji_bridge

    session = fiji_bridge.start(mode="interactive")
    session.show_ui()
    J = session.jclass
    IJ = J("ij.IJ")
    IJ.run("Record...")
    recorder = _wait(lambda: J("ij.plugin.frame.Recorder").getInstance())
    IJ.open(labels)
    IJ.open(image)  # the active image

    def fill_train(pairs):
        _set(pairs, "Labels", Path(labels).name)
        _set(pairs, "Out (model folder)", out)
        _set(pairs, "Options", "depth=1 filters=2")
        _set(pairs, "Epochs", "1")
        _set(pairs, "Steps per epoch", "1")
        _set(pairs, "Validation fraction", "0")

    def recorded(command: str):
        return _wait(lambda: next((line for line in str(recorder.getText()).splitlines() if command in line), None),
                     timeout=300)

    train = _run_dialog(session, "DeepSeg Train...", fill_train)
    train_line = recorded("DeepSeg Train...")
    IJ.selectWindow(Path(labels).name)

    def fill_predict(pairs):
        _set(pairs, "Model folder", out)
        _set(pairs, "Image", FILE_ITEM)
        _set(pairs, "or path", image, after="Image")

    predict = _run_dialog(session, "DeepSeg Predict...", fill_predict)
    predict_line = recorded("DeepSeg Predict...")
    return {"train": train, "predict": predict, "recorded": {"train": train_line, "predict": predict_line}}


if __name__ == "__main__":
    print("RESULT " + json.dumps(record_dialogs(*sys.argv[1:4])))
