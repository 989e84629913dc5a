"""Spacing-aware boundary metrics per class: BF score, Hausdorff 95 and average symmetric surface distance.

The surface of a class is the set of its voxels with a face neighbour of another class (or on the
image border: scipy's ``binary_erosion`` with ``border_value=0``, the convention MONAI uses). For
each class the two surfaces are compared through Euclidean distance transforms
(:func:`scipy.ndimage.distance_transform_edt` with ``sampling=spacing``, on the bounding box of
both masks plus one voxel), so every distance is in physical units and nothing is O(n^2):

* ``d(P->T)``: distance of each predicted surface voxel to the nearest true surface voxel, and
  ``d(T->P)`` the other way round.
* **BF score** (boundary F1, DeepMIB / MATLAB ``bfscore``): precision = fraction of ``d(P->T)``
  within the tolerance, recall = fraction of ``d(T->P)`` within it, BF = 2PR / (P + R). The
  default tolerance is 0.75 % of the image diagonal (MATLAB's and DeepMIB's default).
* **HD95**: the larger of the two directed 95th percentiles (linear interpolation), as MONAI's
  ``compute_hausdorff_distance(percentile=95)``.
* **ASSD**: the mean of all distances of both directions together (MONAI's
  ``compute_average_surface_distance(symmetric=True)``; Biomedisa's ASSD).

Absent classes (no surface): absent in both -> NaN for every metric (left out of means); absent in
exactly one -> HD95 = ASSD = inf and BF = 0 (precision or recall is then NaN: 0 / 0).
Voxels whose truth is ``ignore_label`` or where the mask is 0 carry no surface and do not create
one: they count as "either class" for the neighbours' test.

Cost: the label images are held in memory, and each distance transform takes about 20 bytes per
voxel of the class's bounding box (float64 distances and scipy's int32 feature indices); on a
108 x 256 x 256 CT, two classes (4 transforms) take ~10-25 s on a busy 2-core machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import InputError
from .progress import Progress, ProgressCallback, report

DEFAULT_TOLERANCE = "0.75%"
FIELDS = ("bf_score", "bf_precision", "bf_recall", "hd95", "assd")


# ------------------------------------------------------------------------------------ tolerance, spacing


def parse_tolerance(value: float | str | None) -> tuple[float, str]:
    """``(amount, kind)`` of a BF tolerance: ``"2.5"`` (units of the spacing: ``""``), ``"3px"`` or ``"1%"``.

    ``None`` means :data:`DEFAULT_TOLERANCE` (0.75 % of the image diagonal).
    """
    text = DEFAULT_TOLERANCE if value is None else str(value).strip().lower()
    kind = "%" if text.endswith("%") else "px" if text.endswith("px") else ""
    try:
        amount = float(text[: len(text) - len(kind)] if kind else text)
    except ValueError:
        amount = float("nan")
    if not (math.isfinite(amount) and amount >= 0):
        raise InputError(f"tolerance {value!r}: expected a distance >= 0 in the image's unit (e.g. 2.5), "
                         "in voxels (e.g. 3px) or in percent of the image diagonal (e.g. 0.75%)")
    return amount, kind


def tolerance_distance(value: float | str | None, shape: Sequence[int], spacing: Sequence[float]) -> float:
    """The BF tolerance in physical units for an image of ``shape`` and voxel size ``spacing``.

    ``N%``: N % of the diagonal ``sqrt(sum((n_i * s_i)^2))``; ``Npx``: N times the smallest voxel size.
    """
    amount, kind = parse_tolerance(value)
    if kind == "%":
        return amount / 100 * math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing)))
    return amount * min(spacing) if kind == "px" else amount


def voxel_size(prediction: Any, truth: Any, given: float | str | Sequence[float] | None = None
               ) -> tuple[tuple[float, ...], str | None]:
    """``(spacing, unit)`` for comparing ``prediction`` with ``truth``, one value per array axis.

    ``given`` (one number, or one per axis in the truth's axis order; or text ``"2,0.5,0.5"``) wins; else the truth's
    calibration, else the prediction's, else 1 (voxels). Two calibrated files that disagree are an
    error: pass the spacing to choose.
    """
    ndim = np.ndim(truth) if not hasattr(truth, "dims") else len(truth.dims)
    dims = tuple(getattr(truth, "dims", ())) or tuple(getattr(prediction, "dims", ()))
    if "t" in dims or "ch" in dims:
        raise InputError(f"surface metrics need one spatial label image; the truth has dims {dims} "
                         "(select one time point, or turn surface metrics off)")
    if given is not None:
        values = _spacing_values(given, ndim)
        if len(values) != ndim or not all(math.isfinite(v) and v > 0 for v in values):
            raise InputError(f"spacing {given!r}: expected one positive voxel size, or {ndim} (one per axis"
                             f"{', ' + ','.join(dims) if dims else ''})")
        return tuple(values), _unit(truth) or _unit(prediction)
    found = [(_calibration(a, dims), _unit(a)) for a in (truth, prediction)]
    calibrated = [(s, u) for s, u in found if s is not None]
    if len(calibrated) == 2 and not np.allclose(calibrated[0][0], calibrated[1][0], rtol=1e-6):
        raise InputError(f"the truth's voxel size {calibrated[0][0]} differs from the prediction's "
                         f"{calibrated[1][0]}; give the spacing to use (e.g. --spacing)")
    if calibrated:
        return calibrated[0]
    return (1.0,) * ndim, None


def _spacing_values(given: float | str | Sequence[float], ndim: int) -> list[float]:
    """One number (isotropic), a sequence, or text such as ``"2,0.5,0.5"``; [] when unreadable."""
    parts = given.split(",") if isinstance(given, str) else [given] * ndim if np.ndim(given) == 0 else list(given)
    if isinstance(given, str) and len(parts) == 1:
        parts = parts * ndim
    try:
        return [float(v) for v in parts]
    except (TypeError, ValueError):
        return []


def _calibration(array: Any, dims: tuple[str, ...]) -> tuple[float, ...] | None:
    """The voxel size in ``dims`` order; ``None`` when uncalibrated (also 1 x 1 "pixel", as ImageJ says)."""
    spacing = getattr(array, "attrs", {}).get("spacing") if hasattr(array, "attrs") else None
    if not spacing or not dims or set(getattr(array, "dims", ())) != set(dims):
        return None
    values = tuple(float(spacing.get(d, 1.0)) for d in dims)
    if set(values) == {1.0} and (_unit(array) or "pixel").lower() in ("pixel", "pixels", "px", "voxel", "voxels"):
        return None
    return values


def _unit(array: Any) -> str | None:
    unit = getattr(array, "attrs", {}).get("unit") if hasattr(array, "attrs") else None
    return str(unit) if unit else None


# ------------------------------------------------------------------------------------------ distances


def _box(mask: np.ndarray) -> tuple[slice, ...]:
    """The bounding box of ``mask`` grown by one voxel (clipped to the image)."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(0, hit[0] - 1), min(mask.shape[axis], hit[-1] + 2)))
    return tuple(box)


def _surface(mask: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it (unscored voxels count as inside)."""
    from scipy.ndimage import binary_erosion

    inner = binary_erosion(mask if valid is None else mask | ~valid)
    return mask & ~inner


def _distances_to(target: np.ndarray, source: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Distance of every ``source`` voxel to the nearest ``target`` voxel (inf when there is none)."""
    from scipy.ndimage import distance_transform_edt

    if not target.any():
        return np.full(int(source.sum()), np.inf)
    return distance_transform_edt(~target, sampling=spacing)[source]


def surface_distances(prediction: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None = None,
                      valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(d(P->T), d(T->P))``: distances between the surfaces of two boolean masks, in units of ``spacing``.

    ``valid`` (optional boolean array) marks the scored voxels; the others carry no surface.
    """
    pred, true = np.asarray(prediction, dtype=bool), np.asarray(truth, dtype=bool)
    spacing = tuple(spacing) if spacing is not None else (1.0,) * true.ndim
    if valid is not None:
        pred, true = pred & valid, true & valid
    either = pred | true
    if not either.any():
        return np.zeros(0), np.zeros(0)
    box = _box(either)
    pred, true = pred[box], true[box]
    keep = None if valid is None else valid[box]
    pred_surface, true_surface = _surface(pred, keep), _surface(true, keep)
    return _distances_to(true_surface, pred_surface, spacing), _distances_to(pred_surface, true_surface, spacing)


def _class_values(to_truth: np.ndarray, to_prediction: np.ndarray, tolerance: float) -> dict[str, float]:
    """BF precision/recall/score, HD95 and ASSD from the two directed distance sets of one class."""
    if not to_truth.size and not to_prediction.size:
        return dict.fromkeys(FIELDS, float("nan"))
    precision = float(np.mean(to_truth <= tolerance)) if to_truth.size else float("nan")
    recall = float(np.mean(to_prediction <= tolerance)) if to_prediction.size else float("nan")
    if not (to_truth.size and to_prediction.size):
        return {"bf_score": 0.0, "bf_precision": precision, "bf_recall": recall, "hd95": math.inf, "assd": math.inf}
    score = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    hd95 = max(float(np.percentile(to_truth, 95)), float(np.percentile(to_prediction, 95)))
    assd = float((to_truth.sum() + to_prediction.sum()) / (to_truth.size + to_prediction.size))
    return {"bf_score": score, "bf_precision": precision, "bf_recall": recall, "hd95": hd95, "assd": assd}


# ------------------------------------------------------------------------------------------- scores


@dataclass(frozen=True, eq=False)
class SurfaceScores:
    """Per-class boundary metrics of one evaluation (arrays of length K) and how they were measured.

    ``tolerance`` is the BF tolerance in physical units and ``spacing`` the voxel size (``None``
    for a folder's average when the images differ); ``unit`` the spacing's unit (``None``: voxels
    or unknown).
    """

    bf_score: np.ndarray
    bf_precision: np.ndarray
    bf_recall: np.ndarray
    hd95: np.ndarray
    assd: np.ndarray
    tolerance: float | None
    spacing: tuple[float, ...] | None
    unit: str | None = None

    def __post_init__(self) -> None:
        for name in FIELDS:
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=float).reshape(-1))

    @property
    def classes(self) -> int:
        return self.bf_score.size

    def per_class(self, k: int) -> dict[str, float]:
        return {name: float(getattr(self, name)[k]) for name in FIELDS}

    def summary_values(self) -> dict[str, float]:
        """Mean BF score over all classes, mean HD95 and ASSD over the foreground (1..K-1); NaN left out."""
        return {"mean_bf_score": _mean(self.bf_score), "mean_foreground_hd95": _mean(self.hd95[1:]),
                "mean_foreground_assd": _mean(self.assd[1:])}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN -> ``None``, inf -> ``"inf"``); :meth:`from_dict` reverses it."""
        return {"tolerance": self.tolerance, "spacing": None if self.spacing is None else list(self.spacing),
                "unit": self.unit, **{name: [json_number(v) for v in getattr(self, name)] for name in FIELDS}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SurfaceScores":
        try:
            values = {name: [_number(v) for v in data[name]] for name in FIELDS}
        except KeyError as err:
            raise InputError(f"surface metrics lack {err.args[0]!r}; expected SurfaceScores.as_dict() output") from None
        spacing = data.get("spacing")
        return cls(**values, tolerance=data.get("tolerance"), spacing=None if spacing is None else tuple(spacing),
                   unit=data.get("unit"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SurfaceScores) and self.as_dict() == other.as_dict()

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def average(cls, scores: Sequence["SurfaceScores"]) -> "SurfaceScores":
        """Per-class means over images (a folder's ``all``); NaN left out, inf kept."""
        values = {name: [_mean(np.array([getattr(s, name)[k] for s in scores])) for k in range(scores[0].classes)]
                  for name in FIELDS}
        same = {key: {getattr(s, key) for s in scores} for key in ("tolerance", "spacing", "unit")}
        return cls(**values, **{key: next(iter(v)) if len(v) == 1 else None for key, v in same.items()})


def surface_scores(prediction: np.ndarray, truth: np.ndarray, classes: int, *,
                   spacing: Sequence[float] | None = None, unit: str | None = None,
                   tolerance: float | str | None = None, ignore_label: int | None = None,
                   mask: np.ndarray | None = None, progress: ProgressCallback | None = None) -> SurfaceScores:
    """BF score, HD95 and ASSD of every class ``0..classes-1`` of two label arrays of the same shape.

    ``spacing``: voxel size per axis (default 1); ``tolerance``: see :func:`parse_tolerance`;
    ``ignore_label`` (truth value) and ``mask`` (0 = not scored) leave voxels out.
    """
    pred, true = np.asarray(prediction), np.asarray(truth)
    spacing = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * true.ndim
    if len(spacing) != true.ndim:
        raise InputError(f"spacing {spacing} has {len(spacing)} values for a {true.ndim}-D image: "
                         "expected one per axis")
    distance = tolerance_distance(tolerance, true.shape, spacing)
    valid = None if mask is None else np.asarray(mask).astype(bool)
    if ignore_label is not None and (true == ignore_label).any():
        valid = (true != ignore_label) if valid is None else valid & (true != ignore_label)
    rows = []
    for k in range(classes):
        rows.append(_class_values(*surface_distances(pred == k, true == k, spacing, valid), distance))
        report(progress, Progress("surface metrics", k + 1, classes))
    return SurfaceScores(**{name: [row[name] for row in rows] for name in FIELDS}, tolerance=distance,
                         spacing=spacing, unit=unit)


# -------------------------------------------------------------------------------------------- helpers


def _mean(values: np.ndarray) -> float:
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else float("nan")


def json_number(value: float) -> float | str | None:
    """NaN -> ``None``, +-inf -> ``"inf"`` / ``"-inf"`` (strict JSON has neither), else the float."""
    value = float(value)
    return None if math.isnan(value) else str(value) if math.isinf(value) else value


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)
