"""Tests of engine.plots (training curves, figure saving)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.errors import InputError
from engine.plots import confusion_figure, plot_history, save_figure

PNG = b"\x89PNG\r\n\x1a\n"


def test_history_png_with_missing_columns_and_values(tmp_path):
    rows = [
        {"epoch": 1, "loss": 0.9, "lr": 1e-3},
        {"epoch": 2, "loss": 0.7, "val_loss": 0.8, "val_dice": 0.4, "lr": 5e-4, "note": "text is ignored"},
        {"epoch": 3, "loss": math.nan, "val_loss": None, "val_dice": np.float32(0.5), "lr": 2.5e-4},
    ]
    path = plot_history(rows, tmp_path / "plots" / "history.png", title="run 1")
    assert path.read_bytes()[:8] == PNG
    assert [p.name for p in path.parent.iterdir()] == ["history.png"]


def test_history_without_epoch_uses_row_number(tmp_path):
    assert plot_history([{"train_loss": 1.0}, {"train_loss": 0.5}], tmp_path / "h.png").exists()


@pytest.mark.parametrize(
    "rows, message",
    [([], "no history rows"), ([{"epoch": 1, "seconds": 3.0, "flag": True}], "nothing to plot")],
)
def test_history_errors(tmp_path, rows, message):
    with pytest.raises(InputError, match=message):
        plot_history(rows, tmp_path / "h.png")
    assert list(tmp_path.iterdir()) == []


def test_failed_save_leaves_no_file(tmp_path):
    figure = confusion_figure(np.array([[3, 1], [0, 0]]), ["bg", "fg"])
    with pytest.raises(InputError, match=r"\.xyz"):
        save_figure(figure, tmp_path / "cm.xyz")
    assert list(tmp_path.iterdir()) == []
