"""Segmentation metrics from a confusion matrix: accuracy, precision, IoU (Jaccard) and Dice (F1),
plus per-class boundary metrics (BF score, HD95, ASSD) from :mod:`engine.surface_metrics`.

:func:`confusion_matrix` counts (truth, prediction) pairs chunk by chunk along the first axis, so
memory stays bounded even for memory-mapped CT volumes. :class:`Report` derives every metric from
that matrix and exports JSON, CSV, a text table and a confusion-matrix heatmap.

Conventions: rows of the matrix are truth, columns prediction. ``ignore_label`` and ``mask`` are
applied through the truth (voxels whose truth is ``ignore_label``, or where the mask is 0, are not
counted). A class absent from both truth and prediction has NaN per-class values (``null`` in
JSON) and is left out of the means; recall is also NaN for a class absent from the truth, and
precision for a class never predicted (0 / 0).
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import xarray as xr

from .errors import InputError
from .fileutil import atomic_path
from .progress import Progress, ProgressCallback, report
from .surface_metrics import SurfaceScores, json_number

ArrayLike = np.ndarray | xr.DataArray
DEFAULT_CHUNK_VOXELS = 1 << 22


def confusion_matrix(
    prediction: ArrayLike,
    truth: ArrayLike,
    classes: int,
    *,
    ignore_label: int | None = None,
    mask: ArrayLike | None = None,
    chunk_voxels: int = DEFAULT_CHUNK_VOXELS,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Count voxels per (truth, prediction) class pair.

    Parameters
    ----------
    prediction, truth : array or DataArray
        Integer labels of the same shape (DataArrays with the same dims in another order are
        aligned). Values must lie in ``0 .. classes - 1`` (truth may also hold ``ignore_label``).
    classes : int
        Number of classes K.
    ignore_label : int, optional
        Truth value that marks unlabelled voxels; they are not counted.
    mask : array, optional
        Same shape; only voxels where it is non-zero are counted.
    chunk_voxels : int
        About how many voxels to process at once (whole slices along the first axis).
    progress : callable, optional
        Called with a :class:`~engine.progress.Progress` (stage ``"evaluate"``) after each chunk.

    Returns
    -------
    numpy.ndarray
        ``(K, K)`` int64; ``matrix[t, p]`` counts voxels of truth class ``t`` predicted as ``p``.

    Examples
    --------
    >>> confusion_matrix(np.array([0, 1, 1]), np.array([0, 0, 1]), 2)
    array([[1, 1],
           [0, 1]])
    """
    if isinstance(classes, bool) or not isinstance(classes, (int, np.integer)) or classes < 1:
        raise InputError(f"classes={classes!r}: expected a positive integer number of classes")
    classes = int(classes)
    pred, true, keep = _aligned(prediction, truth, mask)
    step = max(1, int(chunk_voxels) // max(1, math.prod(true.shape[1:])))
    total = true.shape[0]
    counts = np.zeros(classes * classes, dtype=np.int64)
    for start in range(0, total, step):
        stop = min(total, start + step)
        counts += _chunk_counts(pred[start:stop], true[start:stop], None if keep is None else keep[start:stop],
                                classes, ignore_label)
        report(progress, Progress("evaluate", stop, total))
    return counts.reshape(classes, classes)


def _values(array: Any) -> np.ndarray:
    """The numpy data of an array or DataArray, without loading memory-mapped data."""
    data = array.data if isinstance(array, xr.DataArray) else array
    data = data if isinstance(data, np.ndarray) else np.asarray(data)
    return data.reshape(1) if data.ndim == 0 else data


def _aligned(prediction: Any, truth: Any, mask: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    def like_truth(array: Any) -> Any:
        if isinstance(array, xr.DataArray) and isinstance(truth, xr.DataArray) and set(array.dims) == set(truth.dims):
            return array.transpose(*truth.dims)
        return array

    pred, true = _values(like_truth(prediction)), _values(truth)
    if pred.shape != true.shape:
        raise InputError(f"prediction shape {pred.shape} does not match truth shape {true.shape}")
    keep = None if mask is None else _values(like_truth(mask))
    if keep is not None and keep.shape != true.shape:
        raise InputError(f"mask shape {keep.shape} does not match truth shape {true.shape}")
    for name, array in (("prediction", pred), ("truth", true)):
        if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
            raise InputError(f"{name} has dtype {array.dtype}; expected integer labels (argmax the scores first)")
    return pred, true, keep


def _chunk_counts(
    pred: np.ndarray, true: np.ndarray, keep: np.ndarray | None, classes: int, ignore_label: int | None
) -> np.ndarray:
    t, p = np.asarray(true).reshape(-1), np.asarray(pred).reshape(-1)
    valid = None if keep is None else np.asarray(keep).reshape(-1).astype(bool, copy=False)
    if ignore_label is not None:
        counted = t != ignore_label
        valid = counted if valid is None else valid & counted
    if valid is not None:
        t, p = t[valid], p[valid]
    for name, values in (("truth", t), ("prediction", p)):
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if low < 0 or high >= classes:
            hint = "" if ignore_label is None or name == "truth" else f" (ignore_label={ignore_label} applies to truth only)"
            raise InputError(
                f"{name} holds the label {low if low < 0 else high}; expected labels 0..{classes - 1} "
                f"for {classes} classes{hint}"
            )
    index = t.astype(np.intp)  # a copy: safe to update in place
    index *= classes
    index += p
    return np.bincount(index, minlength=classes * classes)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _mean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _nullable(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


@dataclass(frozen=True, eq=False)
class Report:
    """Metrics of one evaluation, all derived from ``confusion`` (rows truth, columns prediction).

    Attributes
    ----------
    confusion : numpy.ndarray
        ``(K, K)`` int64 voxel counts.
    class_names : tuple of str
        One name per class.
    surface : SurfaceScores, optional
        Per-class BF score, HD95 and ASSD (:mod:`engine.surface_metrics`); ``None``: not measured.
    """

    confusion: np.ndarray
    class_names: tuple[str, ...]
    surface: SurfaceScores | None = None

    def __post_init__(self) -> None:
        matrix = np.asarray(self.confusion, dtype=np.int64)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or (matrix < 0).any():
            raise InputError(f"confusion matrix of shape {matrix.shape}: expected a square (K, K) array of counts")
        names = tuple(str(n) for n in self.class_names)
        if len(names) != matrix.shape[0]:
            raise InputError(f"{len(names)} class names for {matrix.shape[0]} classes: expected one name per class")
        object.__setattr__(self, "confusion", matrix)
        object.__setattr__(self, "class_names", names)
        if self.surface is not None and self.surface.classes != len(names):
            raise InputError(f"surface metrics of {self.surface.classes} classes for {len(names)} classes")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Report):
            return NotImplemented
        return (self.class_names == other.class_names and np.array_equal(self.confusion, other.confusion)
                and self.surface == other.surface)

    __hash__ = None  # type: ignore[assignment]

    # ---- counts
    @property
    def classes(self) -> int:
        return self.confusion.shape[0]

    @property
    def true_positives(self) -> np.ndarray:
        return np.diag(self.confusion).copy()

    @property
    def voxels_truth(self) -> np.ndarray:
        """Voxels of each class in the truth (row sums)."""
        return self.confusion.sum(axis=1)

    @property
    def voxels_predicted(self) -> np.ndarray:
        """Voxels predicted as each class (column sums)."""
        return self.confusion.sum(axis=0)

    @property
    def total(self) -> int:
        return int(self.confusion.sum())

    @property
    def present(self) -> np.ndarray:
        """Classes found in the truth or the prediction (the ones the means use)."""
        return (self.voxels_truth + self.voxels_predicted) > 0

    # ---- per class
    @property
    def accuracy(self) -> np.ndarray:
        """Per-class accuracy (recall, sensitivity): TP / (TP + FN)."""
        return _ratio(self.true_positives, self.voxels_truth)

    @property
    def precision(self) -> np.ndarray:
        """TP / (TP + FP)."""
        return _ratio(self.true_positives, self.voxels_predicted)

    @property
    def iou(self) -> np.ndarray:
        """Intersection over union (Jaccard): TP / (TP + FP + FN)."""
        return _ratio(self.true_positives, self.voxels_truth + self.voxels_predicted - self.true_positives)

    @property
    def dice(self) -> np.ndarray:
        """Dice (F1): 2 TP / (2 TP + FP + FN)."""
        return _ratio(2 * self.true_positives, self.voxels_truth + self.voxels_predicted)

    # ---- summaries
    @property
    def global_accuracy(self) -> float:
        """Fraction of counted voxels whose class is right."""
        return float(self.true_positives.sum() / self.total) if self.total else float("nan")

    @property
    def mean_accuracy(self) -> float:
        return _mean(self.accuracy)

    @property
    def mean_precision(self) -> float:
        return _mean(self.precision)

    @property
    def mean_iou(self) -> float:
        return _mean(self.iou)

    @property
    def frequency_weighted_iou(self) -> float:
        """IoU averaged with weights = each class's share of the truth voxels."""
        if not self.total:
            return float("nan")
        weights = self.voxels_truth / self.total
        return float(np.nansum(weights * np.nan_to_num(self.iou)))

    @property
    def mean_dice(self) -> float:
        return _mean(self.dice)

    @property
    def mean_foreground_dice(self) -> float:
        """Mean Dice over classes 1..K-1 (class 0 taken as background)."""
        return _mean(self.dice[1:])

    def summary_values(self) -> dict[str, float]:
        return {
            "global_accuracy": self.global_accuracy,
            "mean_accuracy": self.mean_accuracy,
            "mean_precision": self.mean_precision,
            "mean_iou": self.mean_iou,
            "frequency_weighted_iou": self.frequency_weighted_iou,
            "mean_dice": self.mean_dice,
            "mean_foreground_dice": self.mean_foreground_dice,
            **(self.surface.summary_values() if self.surface is not None else {}),
        }

    # ---- export
    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN -> ``None``); :meth:`from_dict` rebuilds the report from it."""
        per_class = {}
        for k, name in enumerate(self.class_names):
            per_class[name] = {
                "index": k,
                "voxels_truth": int(self.voxels_truth[k]),
                "voxels_predicted": int(self.voxels_predicted[k]),
                "accuracy": _nullable(self.accuracy[k]),
                "precision": _nullable(self.precision[k]),
                "iou": _nullable(self.iou[k]),
                "dice": _nullable(self.dice[k]),
                **({key: json_number(v) for key, v in self.surface.per_class(k).items()} if self.surface else {}),
            }
        return {
            "class_names": list(self.class_names),
            "voxels": self.total,
            **{key: json_number(value) for key, value in self.summary_values().items()},
            "per_class": per_class,
            "confusion_matrix": self.confusion.tolist(),
            **({"surface": self.surface.as_dict()} if self.surface is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Report":
        """Rebuild a report from :meth:`as_dict` output (only the matrix and names are needed)."""
        try:
            surface = SurfaceScores.from_dict(data["surface"]) if data.get("surface") else None
            return cls(np.asarray(data["confusion_matrix"], dtype=np.int64), tuple(data["class_names"]), surface)
        except KeyError as err:
            raise InputError(f"report dict lacks {err.args[0]!r}; expected the output of Report.as_dict()") from None

    def to_json(self, path: str | Path) -> Path:
        """Write :meth:`as_dict` as JSON (atomic)."""
        path = Path(path)
        text = json.dumps(self.as_dict(), indent=2, allow_nan=False)
        with atomic_path(path) as tmp:
            tmp.write_text(text + "\n", encoding="utf-8")
        return path

    def to_csv(self, path: str | Path) -> Path:
        """Write one row per class, then ``mean``, ``mean_foreground`` and ``overall`` rows (atomic).

        ``overall`` holds the global accuracy and the frequency-weighted IoU. Empty cells are NaN. With
        surface metrics, columns ``bf_score``, ``hd95`` and ``assd`` follow (``inf``: class in one image only).
        """
        path = Path(path)
        header = ["class", "index", "voxels_truth", "voxels_predicted", "accuracy", "precision", "iou", "dice"]
        surface = self.surface
        extra = [surface.bf_score, surface.hd95, surface.assd] if surface is not None else []
        header += ["bf_score", "hd95", "assd"] if extra else []
        rows: list[list[Any]] = []
        for k, name in enumerate(self.class_names):
            rows.append([name, k, int(self.voxels_truth[k]), int(self.voxels_predicted[k]),
                         self.accuracy[k], self.precision[k], self.iou[k], self.dice[k], *[e[k] for e in extra]])
        fg = slice(1, None)
        rows.append(["mean", "", self.total, self.total, self.mean_accuracy, self.mean_precision, self.mean_iou,
                     self.mean_dice, *[_mean(e) for e in extra]])
        rows.append(["mean_foreground", "", int(self.voxels_truth[fg].sum()), int(self.voxels_predicted[fg].sum()),
                     _mean(self.accuracy[fg]), _mean(self.precision[fg]), _mean(self.iou[fg]),
                     self.mean_foreground_dice, *[_mean(e[fg]) for e in extra]])
        rows.append(["overall", "", self.total, self.total, self.global_accuracy, None, self.frequency_weighted_iou,
                     None, *[None for _ in extra]])
        with atomic_path(path) as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(header)
                writer.writerows([[_cell(v) for v in row] for row in rows])
        return path

    def summary(self) -> str:
        """A readable table of per-class values and the summary metrics."""
        width = max([5] + [len(n) for n in self.class_names])
        surface = self.surface
        head = f"{'class':<{width}}  {'truth':>12}  {'predicted':>12}  {'accuracy':>8}  {'precision':>9}  {'IoU':>6}  {'Dice':>6}"
        head += f"  {'BF':>6}  {'HD95':>9}  {'ASSD':>9}" if surface is not None else ""
        lines = [head, "-" * len(head)]
        for k, name in enumerate(self.class_names):
            lines.append(
                f"{name:<{width}}  {self.voxels_truth[k]:>12}  {self.voxels_predicted[k]:>12}  "
                f"{_fmt(self.accuracy[k]):>8}  {_fmt(self.precision[k]):>9}  {_fmt(self.iou[k]):>6}  {_fmt(self.dice[k]):>6}"
                + (f"  {_fmt(surface.bf_score[k]):>6}  {_fmt(surface.hd95[k]):>9}  {_fmt(surface.assd[k]):>9}"
                   if surface is not None else "")
            )
        lines.append("")
        labels = {
            "global_accuracy": "global accuracy", "mean_accuracy": "mean accuracy", "mean_precision": "mean precision",
            "mean_iou": "mean IoU", "frequency_weighted_iou": "frequency-weighted IoU", "mean_dice": "mean Dice",
            "mean_foreground_dice": "mean foreground Dice", "mean_bf_score": "mean BF score",
            "mean_foreground_hd95": "mean foreground HD95", "mean_foreground_assd": "mean foreground ASSD",
        }
        lines += [f"{labels[key]:<23} {_fmt(value)}" for key, value in self.summary_values().items()]
        if surface is not None:
            lines.append(_surface_note(surface))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def plot_confusion(self, path: str | Path, *, title: str | None = None) -> Path:
        """Save a row-normalised confusion-matrix heatmap (counts annotated) as an image (atomic)."""
        from .plots import confusion_figure, save_figure

        figure = confusion_figure(self.confusion, self.class_names, title=title)
        return save_figure(figure, path)


def _fmt(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else "inf" if math.isinf(value) else f"{value:.4f}"


def _unit(surface: SurfaceScores) -> str:
    """The unit of the distances: the files' unit, else voxels (spacing 1) or "units" (a spacing was given)."""
    return surface.unit or ("voxels" if surface.spacing is not None and set(surface.spacing) == {1.0} else "units")


def _surface_note(surface: SurfaceScores) -> str:
    """One line: the unit of HD95/ASSD and the BF tolerance."""
    unit = _unit(surface)
    spacing = "per image" if surface.spacing is None else " x ".join(f"{s:g}" for s in surface.spacing)
    tolerance = "per image" if surface.tolerance is None else f"{surface.tolerance:.4g} {unit}"
    return f"HD95 and ASSD in {unit} (voxel size {spacing}); BF tolerance {tolerance}"


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return value


def evaluate(
    prediction: ArrayLike | str | Path,
    truth: ArrayLike | str | Path,
    *,
    classes: int | None = None,
    ignore_label: int | None = None,
    mask: ArrayLike | str | Path | None = None,
    class_names: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
    surface: bool = True,
    spacing: float | Sequence[float] | None = None,
    tolerance: float | str | None = None,
) -> Report:
    """Compare a predicted label image with the truth.

    Parameters
    ----------
    prediction, truth : array, DataArray, or path of a label image
        Files are read with :func:`engine.io.read_labels` (TIFFs memory-mapped where possible).
    classes : int, optional
        Number of classes; defaults to ``len(class_names)``, else to the largest label + 1 (at
        least 2), not counting ``ignore_label``.
    ignore_label : int, optional
        Truth value of unlabelled voxels (not counted).
    mask : array, DataArray or path, optional
        Only voxels where it is non-zero are counted.
    class_names : sequence of str, optional
        Defaults to ``"class 0"``, ``"class 1"``, ...
    surface : bool
        Also measure the BF score, HD95 and ASSD per class (:mod:`engine.surface_metrics`; holds
        the whole label images and a float per voxel of each class's bounding box in memory).
    spacing : number or sequence, optional
        Voxel size per axis (truth's axis order); default: the files' calibration, else 1.
    tolerance : number or str, optional
        BF tolerance: a distance in the spacing's unit, ``"3px"`` or ``"0.75%"`` of the image
        diagonal (the default).

    Returns
    -------
    Report
    """
    if surface:  # a bad tolerance fails before the counting
        from .surface_metrics import parse_tolerance

        parse_tolerance(tolerance)
    pred, true, keep = _read(prediction, labels=True), _read(truth, labels=True), _read(mask, labels=False)
    if classes is None and class_names is not None:
        classes = len(class_names)
    if classes is None:
        classes = max(2, _largest(pred, None) + 1, _largest(true, ignore_label) + 1)
    names = tuple(class_names) if class_names is not None else tuple(f"class {k}" for k in range(classes))
    if len(names) != classes:
        raise InputError(f"{len(names)} class names {list(names)} for {classes} classes: expected one per class")
    matrix = confusion_matrix(pred, true, classes, ignore_label=ignore_label, mask=keep, progress=progress)
    scores = None
    if surface:
        scores = _surface_scores(pred, true, keep, classes, ignore_label=ignore_label, spacing=spacing,
                                 tolerance=tolerance, progress=progress)
    return Report(matrix, names, scores)


def _surface_scores(pred: Any, true: Any, keep: Any, classes: int, *, spacing: Any, **options: Any) -> SurfaceScores:
    """:func:`engine.surface_metrics.surface_scores` with the voxel size of the files (or ``spacing``)."""
    from .surface_metrics import surface_scores, voxel_size

    size, unit = voxel_size(pred, true, spacing)
    pred, true, keep = _aligned(pred, true, keep)
    return surface_scores(pred, true, classes, spacing=size, unit=unit, mask=keep, **options)


@dataclass
class FolderReport:
    """A folder evaluation: one :class:`Report` per image (by file name) and ``total``, all voxels together."""

    images: list[tuple[str, Report]]
    total: Report

    def rows(self) -> list[dict[str, Any]]:
        """One row per image, then ``"all"``: the summary values and ``dice_<class>``/``iou_<class>``."""
        return [metrics_row(name, report) for name, report in self.images] + [metrics_row("all", self.total)]

    def summary(self) -> str:
        """A text table: one line per image and ``all``, with the foreground Dice, mean IoU and accuracy."""
        width = max(len(name) for name, _ in [*self.images, ("all", None)])
        surface = self.total.surface
        lines = [f"{'image':<{width}}  {'foreground Dice':>15}  {'mean IoU':>8}  {'accuracy':>8}"
                 + (f"  {'mean BF':>8}  {'fg HD95':>9}  {'fg ASSD':>9}  ({_unit(surface)})" if surface else "")]
        for name, scores in [*self.images, ("all", self.total)]:
            line = (f"{name:<{width}}  {_fmt(scores.mean_foreground_dice):>15}  {_fmt(scores.mean_iou):>8}  "
                    f"{_fmt(scores.global_accuracy):>8}")
            if scores.surface is not None:
                bf, hd95, assd = scores.surface.summary_values().values()
                line += f"  {_fmt(bf):>8}  {_fmt(hd95):>9}  {_fmt(assd):>9}"
            lines.append(line)
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """``images``: every image's :meth:`Report.as_dict`; ``all``: the total (surface metrics: image means)."""
        return {"images": {name: report.as_dict() for name, report in self.images}, "all": self.total.as_dict()}

    def to_json(self, path: str | Path) -> Path:
        """Every image's report and the total as JSON."""
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.as_dict(), indent=2))
        return Path(path)

    def to_csv(self, path: str | Path) -> Path:
        """:meth:`rows` as CSV (one line per image, then ``all``)."""
        rows = self.rows()
        with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
        return Path(path)


def metrics_row(name: str, report: Report) -> dict[str, Any]:
    """``{"image": name, <summary values>, "dice_<class>": ..., "iou_<class>": ...}`` (spaces in class names: _),
    then ``bf_<class>``, ``hd95_<class>`` and ``assd_<class>`` with surface metrics."""
    row: dict[str, Any] = {"image": name}
    row.update({k: float(v) for k, v in report.summary_values().items()})
    for k, (class_name, dice, iou) in enumerate(zip(report.class_names, report.dice, report.iou)):
        column = "_".join(str(class_name).split())
        row[f"dice_{column}"] = float(dice)
        row[f"iou_{column}"] = float(iou)
        if report.surface is not None:
            row.update({f"{key}_{column}": float(getattr(report.surface, field)[k])
                        for key, field in (("bf", "bf_score"), ("hd95", "hd95"), ("assd", "assd"))})
    return row


def file_pairs(prediction_dir: str | Path, truth_dir: str | Path) -> list[tuple[Path, Path]]:
    """Predicted and true label files paired by name, extension ignored (``a.tif`` with ``a.png``)."""
    from .fileutil import full_suffix
    from .io import list_images

    def stem(path: Path) -> str:
        return path.name[: len(path.name) - len(full_suffix(path))]

    truths = {stem(p): p for p in list_images(truth_dir)}
    pairs = [(p, truths[stem(p)]) for p in list_images(prediction_dir) if stem(p) in truths]
    if not pairs:
        raise InputError(f"no file in {str(prediction_dir)!r} has a namesake in {str(truth_dir)!r}: predictions "
                         "and truths are paired by file name (extension ignored)")
    return pairs


def evaluate_folders(
    prediction_dir: str | Path,
    truth_dir: str | Path,
    *,
    classes: int | None = None,
    ignore_label: int | None = None,
    class_names: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
    surface: bool = True,
    spacing: float | Sequence[float] | None = None,
    tolerance: float | str | None = None,
) -> FolderReport:
    """Evaluate every predicted label file against its namesake in ``truth_dir`` (see :func:`file_pairs`).

    Every image counts the same classes: ``classes``, else ``len(class_names)``, else the largest label
    of any image + 1. Files without a namesake are left out. Options as in :func:`evaluate`; the
    total's surface metrics are the per-class means over the images (NaN left out, inf kept).
    """
    pairs = file_pairs(prediction_dir, truth_dir)
    if classes is None and class_names is None:  # the most any image has
        classes = max(max(2, _largest(_read(pred, labels=True), None) + 1,
                          _largest(_read(true, labels=True), ignore_label) + 1) for pred, true in pairs)
    reports = [(pred.name, evaluate(pred, true, classes=classes, ignore_label=ignore_label, class_names=class_names,
                                    progress=progress, surface=surface, spacing=spacing, tolerance=tolerance))
               for pred, true in pairs]
    total = Report(sum((r.confusion for _, r in reports), np.zeros_like(reports[0][1].confusion)),
                   reports[0][1].class_names,
                   SurfaceScores.average([r.surface for _, r in reports]) if surface else None)
    return FolderReport(reports, total)


def _read(value: Any, *, labels: bool) -> Any:
    """Read a path (TIFFs memory-mapped when possible, quietly: it only saves memory here)."""
    if not isinstance(value, (str, Path)):
        return value
    from .io import read_image, read_labels

    mmap = Path(value).is_file() and Path(value).suffix.lower() in (".tif", ".tiff")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*instead of memory-mapped", category=UserWarning)
        return (read_labels if labels else read_image)(value, mmap=mmap)


def _largest(labels: Any, ignore_label: int | None, chunk_voxels: int = DEFAULT_CHUNK_VOXELS) -> int:
    """Largest label (chunked, skipping ``ignore_label``); -1 when there is none."""
    data = _values(labels)
    step = max(1, chunk_voxels // max(1, math.prod(data.shape[1:])))
    largest = -1
    for start in range(0, data.shape[0], step):
        chunk = np.asarray(data[start : start + step])
        if ignore_label is not None:
            chunk = chunk[chunk != ignore_label]
        if chunk.size:
            largest = max(largest, int(chunk.max()))
    return largest
