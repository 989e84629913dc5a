"""Figures saved as image files: training curves and confusion matrices.

Figures are built with ``matplotlib.figure.Figure`` on the Agg canvas (never pyplot), so plotting
works headless, in threads and inside Fiji, and leaves no global state behind. Every file is
written atomically through :func:`engine.fileutil.atomic_path`.
"""

from __future__ import annotations

import math
from numbers import Real
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import InputError
from .fileutil import atomic_path

X_KEYS = ("epoch", "step", "iteration")
LR_KEYS = ("lr", "learning_rate")
SCORE_WORDS = ("acc", "dice", "iou", "f1", "precision", "recall")
MAX_ANNOTATED_CLASSES = 25


def plot_history(rows: Sequence[Mapping[str, Any]], path: str | Path, *, title: str | None = None) -> Path:
    """Plot training curves: losses, scores (accuracy/Dice/IoU) and learning rate against epoch.

    Parameters
    ----------
    rows : sequence of dict
        One dict per epoch (or step), e.g. ``{"epoch": 1, "loss": 0.9, "val_loss": 1.0,
        "val_dice": 0.4, "lr": 1e-3}``. Columns containing ``loss`` share one panel; columns
        containing ``acc``, ``dice``, ``iou``, ``f1``, ``precision`` or ``recall`` another; ``lr`` /
        ``learning_rate`` a third (log scale). Missing columns, missing values and NaN are skipped.
        The x axis is ``epoch``, ``step`` or ``iteration`` if present, else the row number.
    path : str or Path
        Image file to write (format from the extension, e.g. ``.png``).
    title : str, optional
        Figure title.

    Returns
    -------
    Path
        ``path``.
    """
    if not rows:
        raise InputError("no history rows to plot; expected a list of dicts such as {'epoch': 1, 'loss': 0.5}")
    x_key = next((k for k in X_KEYS if any(k in row for row in rows)), None)
    columns = _numeric_columns(rows, exclude=x_key)
    panels = [
        ("loss", [c for c in columns if "loss" in c.lower()]),
        ("score", [c for c in columns if "loss" not in c.lower() and any(w in c.lower() for w in SCORE_WORDS)]),
        ("learning rate", [c for c in columns if c.lower() in LR_KEYS or c.lower().endswith("_lr")]),
    ]
    panels = [(name, cols) for name, cols in panels if cols]
    if not panels:
        raise InputError(
            f"history columns {sorted(columns) or list(rows[0])} hold nothing to plot; expected losses "
            "(e.g. 'loss', 'val_loss'), scores ('val_dice', 'accuracy') or 'lr'"
        )
    figure = _new_figure((4.6 * len(panels), 3.8))
    for index, (name, cols) in enumerate(panels, start=1):
        axis = figure.add_subplot(1, len(panels), index)
        for column in cols:
            xs, ys = _series(rows, x_key, column)
            axis.plot(xs, ys, marker="o" if len(xs) <= 30 else None, markersize=3, label=column)
        if name == "learning rate" and _all_positive(rows, cols):
            axis.set_yscale("log")
        axis.set_xlabel(x_key or "row")
        axis.set_ylabel(name)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize="small")
    if title:
        figure.suptitle(title)
    return save_figure(figure, path)


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str], *, title: str | None = None) -> Any:
    """A heatmap of ``matrix`` (rows truth, columns prediction) normalised per truth row.

    Cells show the voxel count and the row percentage (up to 25 classes); rows without truth
    voxels are grey.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.full(counts.shape, np.nan)
    np.divide(counts, totals, out=share, where=totals > 0)
    k = counts.shape[0]
    side = min(20.0, max(4.0, 0.55 * k + 2.5))
    figure = _new_figure((side + 1.0, side))
    axis = figure.add_subplot(1, 1, 1)
    import matplotlib

    cmap = matplotlib.colormaps["Blues"].with_extremes(bad="0.85")
    shown = axis.imshow(np.ma.masked_invalid(share), cmap=cmap, vmin=0.0, vmax=1.0)
    figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.04, label="fraction of truth row")
    axis.set_xticks(range(k), labels=list(class_names), rotation=45, ha="right", rotation_mode="anchor")
    axis.set_yticks(range(k), labels=list(class_names))
    axis.set_xlabel("prediction")
    axis.set_ylabel("truth")
    if k <= MAX_ANNOTATED_CLASSES:
        size = max(5.0, 10.0 - 0.2 * k)
        for t in range(k):
            for p in range(k):
                value = share[t, p]
                text = f"{counts[t, p]}" + ("" if math.isnan(value) else f"\n{value:.0%}")
                colour = "white" if not math.isnan(value) and value > 0.5 else "black"
                axis.text(p, t, text, ha="center", va="center", color=colour, fontsize=size)
    axis.set_title(title or "confusion matrix (rows normalised)")
    return figure


def save_figure(figure: Any, path: str | Path, *, dpi: int = 120) -> Path:
    """Save a matplotlib figure atomically (format from the extension) and release it."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, dpi=dpi)
    except ValueError as err:
        raise InputError(f"cannot save a figure as {path.name!r}: {err} (use e.g. .png, .pdf or .svg)") from err
    finally:
        figure.clear()
    return path


def _new_figure(size: tuple[float, float]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _numeric_columns(rows: Sequence[Mapping[str, Any]], *, exclude: str | None) -> list[str]:
    columns: list[str] = []
    for row in rows:
        for key, value in row.items():
            if key != exclude and key not in columns and _is_number(value):
                columns.append(key)
    return columns


def _series(rows: Sequence[Mapping[str, Any]], x_key: str | None, column: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for index, row in enumerate(rows, start=1):
        x = row.get(x_key, index) if x_key else index
        if _is_number(row.get(column)) and _is_number(x):
            xs.append(float(x))
            ys.append(float(row[column]))
    return xs, ys


def _all_positive(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> bool:
    values = [float(row[c]) for row in rows for c in columns if _is_number(row.get(c))]
    return bool(values) and min(values) > 0
