"""Boundary metrics (BF score, HD95, ASSD) and the weighted IoU, against values worked out by hand and MONAI."""

from __future__ import annotations

import csv
import json
import math
import warnings

import numpy as np
import pytest

from bridge_fixtures import ij  # noqa: F401  (fixture: real ImageJ, headless)
from engine.errors import InputError
from engine.io import write_labels
from engine.metrics import Report, evaluate, evaluate_folders
from engine.surface_metrics import (SurfaceScores, parse_tolerance, surface_distances, surface_scores,
                                    tolerance_distance, voxel_size)


def square(shape: tuple[int, ...], start: tuple[int, ...], size: int) -> np.ndarray:
    """A label image (0/1) holding one filled square/cube of ``size`` voxels a side at ``start``."""
    labels = np.zeros(shape, np.uint8)
    labels[tuple(slice(s, s + size) for s in start)] = 1
    return labels


def ball(shape: tuple[int, ...], centre: tuple[float, ...], radius: float) -> np.ndarray:
    grid = np.indices(shape)
    return (sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2).astype(np.uint8)


# ------------------------------------------------------------------------------------ by hand: shifts

# Two 4x4 squares, the prediction one column to the right of the truth (both away from the border).
# Surface = the 12-voxel ring of each square. From the truth ring to the prediction ring:
#   left column (4 voxels): the prediction's left column is 1 column away      -> 1
#   top/bottom rows (6 voxels at x = 1..3): on the prediction's top/bottom rows -> 0
#   right column, middle 2 voxels: 1 from the prediction's top/bottom row and right column -> 1
# so 6 distances of 1 and 6 of 0 each way (symmetric): ASSD = 12 / 24 = 0.5, HD95 = 1 (the top 5 %
# are 1). With a BF tolerance of 0.5 only the 6 zeros match: precision = recall = BF = 6/12.
TRUTH = square((10, 12), (3, 3), 4)
PRED = square((10, 12), (3, 4), 4)


def test_squares_shifted_by_one_by_hand():
    to_truth, to_pred = surface_distances(PRED == 1, TRUTH == 1)
    assert sorted(to_truth.tolist()) == [0.0] * 6 + [1.0] * 6 and sorted(to_pred.tolist()) == [0.0] * 6 + [1.0] * 6
    scores = surface_scores(PRED, TRUTH, 2, tolerance=0.5)
    assert scores.hd95[1] == pytest.approx(1.0) and scores.assd[1] == pytest.approx(0.5)
    assert scores.bf_precision[1] == scores.bf_recall[1] == scores.bf_score[1] == pytest.approx(0.5)
    assert surface_scores(PRED, TRUTH, 2, tolerance=1).bf_score[1] == 1.0  # every distance is within 1


def test_anisotropic_spacing_scales_the_shift():
    # rows 2.0 apart, columns 0.5: the one-column shift is 0.5; the middle right-column voxels are
    # now nearer to the next column (0.5) than to the top/bottom rows (2 rows = 4.0)
    scores = surface_scores(PRED, TRUTH, 2, spacing=(2.0, 0.5), tolerance=0.5)
    assert scores.hd95[1] == pytest.approx(0.5) and scores.assd[1] == pytest.approx(0.25)
    assert scores.bf_score[1] == 1.0  # 0.5 is within 0.5
    # one row down instead: the 4 top-row voxels are 2.0 from the other ring, the 2 middle bottom-row
    # voxels 0.5 (one column from the other ring's side), the other 6 on it: ASSD = (8 + 1) / 12
    moved = square((10, 12), (4, 3), 4)
    scores = surface_scores(moved, TRUTH, 2, spacing=(2.0, 0.5))
    assert scores.hd95[1] == pytest.approx(2.0) and scores.assd[1] == pytest.approx(9 / 12)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_squares_shifted_by_k_have_hd95_k(k):
    # every ring voxel moves onto the other ring by the shift, so no distance exceeds k; the whole
    # left column (10 of 36 ring voxels, over 5 %) is exactly k away, so the 95th percentile is k
    truth, pred = square((20, 24), (4, 4), 10), square((20, 24), (4, 4 + k), 10)
    to_truth, to_pred = surface_distances(pred == 1, truth == 1)
    assert to_truth.max() == to_pred.max() == k and (to_truth == k).mean() > 0.05
    scores = surface_scores(pred, truth, 2)
    assert scores.hd95[1] == pytest.approx(k) and 0 < scores.assd[1] < k


@pytest.mark.parametrize("k,axis,spacing", [(2, 0, (2.5, 0.5, 0.7)), (3, 2, (2.5, 0.5, 0.7)), (1, 1, (1.0, 1.0, 1.0))])
def test_parallel_sheets_shifted_by_k_give_hd95_and_assd_k_times_spacing(k, axis, spacing):
    """One-voxel-thick sheets: every surface voxel is exactly k voxels from the other sheet, both ways."""
    shape = (16, 18, 20)
    truth, pred = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    inner = [slice(3, n - 3) for n in shape]
    at, moved = list(inner), list(inner)
    at[axis], moved[axis] = 5, 5 + k
    truth[tuple(at)], pred[tuple(moved)] = 1, 1
    scores = surface_scores(pred, truth, 2, spacing=spacing, tolerance=k * spacing[axis])
    assert scores.hd95[1] == pytest.approx(k * spacing[axis]) and scores.assd[1] == pytest.approx(k * spacing[axis])
    assert scores.bf_score[1] == 1.0
    just_below = surface_scores(pred, truth, 2, spacing=spacing, tolerance=0.99 * k * spacing[axis])
    assert just_below.bf_score[1] == 0.0


def test_balls_shifted_by_k():
    # the pole facing away from the shift is exactly k from the other ball's surface; nothing is further
    k, spacing = 3, (1.5, 1.0, 1.0)
    truth, pred = ball((30, 30, 30), (15, 15, 12), 7), ball((30, 30, 30), (15, 15, 12 + k), 7)
    to_truth, to_pred = surface_distances(pred == 1, truth == 1, spacing)
    assert to_truth.max() == pytest.approx(k) and to_pred.max() == pytest.approx(k)
    scores = surface_scores(pred, truth, 2, spacing=spacing)
    assert 0 < scores.assd[1] < scores.hd95[1] <= k


def test_identical_labels_score_perfectly():
    scores = surface_scores(TRUTH, TRUTH, 2, tolerance=0)
    assert scores.hd95.tolist() == [0, 0] and scores.assd.tolist() == [0, 0] and scores.bf_score.tolist() == [1, 1]


# --------------------------------------------------------------------------- absent classes, ignore


def test_absent_classes():
    """Absent from both: NaN (left out of means). Absent from one: HD95 = ASSD = inf, BF = 0."""
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    pred = np.array([[0, 0, 2, 2], [0, 0, 2, 2]])
    scores = surface_scores(pred, truth, 4)
    assert math.isinf(scores.hd95[1]) and math.isinf(scores.assd[2]) and scores.bf_score[1] == scores.bf_score[2] == 0
    assert math.isnan(scores.bf_recall[2]) and scores.bf_precision[2] == 0  # class 2 predicted, never true
    assert all(math.isnan(getattr(scores, f)[3]) for f in ("bf_score", "hd95", "assd"))
    values = scores.summary_values()
    assert math.isinf(values["mean_foreground_hd95"]) and values["mean_bf_score"] == pytest.approx(1 / 3)


def test_ignored_voxels_make_no_surface():
    # truth: a 6 x 4 box at rows 3-8, columns 6-9, and columns 0-5 unlabelled (9); the prediction's
    # box reaches into the unlabelled part (columns 2-9): where it is scored, it equals the truth
    truth = np.zeros((12, 16), np.uint8)
    truth[3:9, 6:10], truth[:, :6] = 1, 9
    pred = np.zeros((12, 16), np.uint8)
    pred[3:9, 2:10] = 1
    perfect = surface_scores(pred, truth, 2, ignore_label=9, tolerance=0)
    assert perfect.hd95[1] == 0 and perfect.assd[1] == 0 and perfect.bf_score[1] == 1
    unmasked = surface_scores(pred, np.where(truth == 9, 0, truth), 2, tolerance=0)
    assert unmasked.hd95[1] > 0 and unmasked.bf_score[1] < 1
    masked = surface_scores(pred, np.where(truth == 9, 0, truth), 2, mask=truth != 9, tolerance=0)
    assert masked.hd95[1] == 0 and masked.bf_score[1] == 1


# --------------------------------------------------------------------------------- tolerance, spacing


def test_tolerance_forms():
    assert parse_tolerance(None) == (0.75, "%") and parse_tolerance("3px") == (3.0, "px")
    assert parse_tolerance(2.5) == (2.5, "") and parse_tolerance(" 1.5 % ") == (1.5, "%")
    # 0.75 % of the diagonal of 300 x 400 voxels of 0.5 x 2.0: sqrt(150^2 + 800^2) = 813.94
    assert tolerance_distance("0.75%", (300, 400), (0.5, 2.0)) == pytest.approx(0.0075 * math.hypot(150, 800))
    assert tolerance_distance("3px", (10, 10), (0.5, 2.0)) == 1.5  # voxels of the finest axis
    for bad in ("-1", "abc", "nan", "2mm", "%"):
        with pytest.raises(InputError, match="tolerance"):
            parse_tolerance(bad)


def test_default_tolerance_is_three_quarters_percent_of_the_diagonal():
    # 10 x 12 voxels: 0.0075 * sqrt(244) = 0.117; only the exact matches (distance 0) count
    scores = surface_scores(PRED, TRUTH, 2)
    assert scores.tolerance == pytest.approx(0.0075 * math.hypot(10, 12)) and scores.bf_score[1] == 0.5


def test_spacing_from_the_files(tmp_path):
    write_labels(tmp_path / "truth.tif", TRUTH, axes="YX", spacing={"row": 2.0, "col": 0.5}, unit="micron")
    write_labels(tmp_path / "pred.tif", PRED, axes="YX", spacing={"row": 2.0, "col": 0.5}, unit="micron")
    write_labels(tmp_path / "plain.tif", PRED, axes="YX")
    write_labels(tmp_path / "other.tif", PRED, axes="YX", spacing={"row": 1.0, "col": 1.0}, unit="micron")
    report = evaluate(tmp_path / "pred.tif", tmp_path / "truth.tif", tolerance="0.5")
    assert report.surface.spacing == (2.0, 0.5) and report.surface.unit in ("micron", "µm", "um")
    assert report.surface.hd95[1] == pytest.approx(0.5) and report.surface.assd[1] == pytest.approx(0.25)
    # an uncalibrated prediction takes the truth's voxel size; a given spacing wins over both
    assert evaluate(tmp_path / "plain.tif", tmp_path / "truth.tif").surface.hd95[1] == pytest.approx(0.5)
    given = evaluate(tmp_path / "pred.tif", tmp_path / "truth.tif", spacing="1,3").surface
    assert given.spacing == (1.0, 3.0) and given.hd95[1] == pytest.approx(3.0)
    with pytest.raises(InputError, match="differs from the prediction"):
        evaluate(tmp_path / "other.tif", tmp_path / "truth.tif")
    for bad in ("1,2,3", "0,1", "a,b"):
        with pytest.raises(InputError, match="spacing"):
            evaluate(PRED, TRUTH, spacing=bad)
    assert voxel_size(PRED, TRUTH, 0.25) == ((0.25, 0.25), None) and voxel_size(PRED, TRUTH) == ((1.0, 1.0), None)


# ----------------------------------------------------------------------------------------- MONAI


@pytest.mark.parametrize("shape,spacing", [((48, 56), (1.0, 1.0)), ((40, 36), (0.6, 1.7)),
                                           ((20, 26, 24), (2.0, 0.7, 0.5))])
def test_hd95_and_assd_equal_monai_on_random_blobs(shape, spacing):
    """Same edges (scipy erosion, image border included) and definitions as MONAI: HD95 = the larger of
    the two directed 95th percentiles, ASSD = the mean of both directions' distances together. Only
    MONAI's float32 rounding differs. (MONAI gives 0, not NaN, when both masks are empty.)"""
    torch = pytest.importorskip("torch")
    monai = pytest.importorskip("monai.metrics")
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(len(shape) * 10 + int(spacing[-1] * 10))
    for _ in range(3):
        truth, pred = ((gaussian_filter(rng.random(shape), 2) > 0.5).astype(np.uint8) for _ in range(2))
        ours = surface_scores(pred, truth, 2, spacing=spacing)
        p, t = (torch.from_numpy(np.stack([a == 0, a == 1])[None].astype(np.float32)) for a in (pred, truth))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hd95 = monai.compute_hausdorff_distance(p, t, include_background=True, percentile=95, spacing=list(spacing))
            assd = monai.compute_average_surface_distance(p, t, include_background=True, symmetric=True,
                                                          spacing=list(spacing))
        np.testing.assert_allclose(ours.hd95, hd95[0].numpy(), rtol=1e-5)
        np.testing.assert_allclose(ours.assd, assd[0].numpy(), rtol=1e-5)


# ------------------------------------------------------------------------------ weighted IoU by hand


def test_weighted_iou_by_hand():
    # truth 0 0 0 1 1 2, prediction 0 0 1 1 1 2: IoU = [2/3, 2/3, 1/1], truth shares = [3, 2, 1] / 6
    # weighted IoU = 3/6 * 2/3 + 2/6 * 2/3 + 1/6 * 1 = 13/18 (mean IoU 7/9: the weights matter)
    report = evaluate(np.array([0, 0, 1, 1, 1, 2]), np.array([0, 0, 0, 1, 1, 2]))
    assert report.frequency_weighted_iou == pytest.approx(13 / 18) and report.mean_iou == pytest.approx(7 / 9)
    # a class never in the truth weighs nothing, even when it is predicted (IoU 0)
    report = evaluate(np.array([0, 3, 1, 1]), np.array([0, 0, 1, 1]), classes=4)
    assert report.frequency_weighted_iou == pytest.approx(2 / 4 * 1 / 2 + 2 / 4 * 1)


# ------------------------------------------------------------------------------------ in the report


def test_report_carries_the_surface_metrics(tmp_path):
    report = evaluate(PRED, TRUTH, class_names=["bg", "cell"], tolerance=0.5)
    assert report.surface.hd95[1] == pytest.approx(1.0)
    values = report.summary_values()
    assert values["mean_foreground_hd95"] == pytest.approx(1.0) and values["mean_foreground_assd"] == pytest.approx(0.5)
    assert values["mean_bf_score"] == pytest.approx(np.mean(report.surface.bf_score))
    data = json.loads(report.to_json(tmp_path / "r.json").read_text())
    assert data["per_class"]["cell"]["hd95"] == pytest.approx(1.0) and data["per_class"]["cell"]["bf_score"] == 0.5
    assert data["surface"]["tolerance"] == 0.5 and data["surface"]["spacing"] == [1.0, 1.0]
    assert Report.from_dict(data) == report and Report.from_dict(data).surface.assd[1] == pytest.approx(0.5)
    with open(report.to_csv(tmp_path / "r.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert float(rows[1]["hd95"]) == pytest.approx(1.0) and float(rows[1]["assd"]) == pytest.approx(0.5)
    assert float(rows[3]["hd95"]) == pytest.approx(1.0)  # mean_foreground
    text = report.summary()
    assert "HD95" in text and "mean foreground ASSD" in text and "BF tolerance 0.5 voxels" in text
    assert evaluate(PRED, TRUTH, surface=False).surface is None
    assert "hd95" not in evaluate(PRED, TRUTH, surface=False).as_dict()["per_class"]["class 1"]


def test_infinite_and_missing_values_survive_json_and_csv(tmp_path):
    report = evaluate(np.array([[0, 0], [2, 2]]), np.array([[0, 0], [1, 1]]), classes=4)
    text = report.to_json(tmp_path / "r.json").read_text()
    data = json.loads(text)  # strict JSON: "inf" as text, NaN as null
    assert data["per_class"]["class 1"]["hd95"] == "inf" and data["per_class"]["class 3"]["hd95"] is None
    assert data["mean_foreground_hd95"] == "inf" and math.isinf(Report.from_dict(data).surface.hd95[1])
    with open(report.to_csv(tmp_path / "r.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[1]["hd95"] == "inf" and rows[3]["hd95"] == ""
    assert "inf" in report.summary()


def test_folders_average_the_surface_metrics_over_images(tmp_path):
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    write_labels(truth / "a.tif", TRUTH, axes="YX")
    write_labels(pred / "a.tif", PRED, axes="YX")  # HD95 1, ASSD 0.5
    write_labels(truth / "b.tif", TRUTH, axes="YX")
    write_labels(pred / "b.tif", square((10, 12), (3, 6), 4), axes="YX")  # shifted by 3
    report = evaluate_folders(pred, truth, tolerance="1px")
    (_, a), (_, b) = report.images
    assert b.surface.hd95[1] == pytest.approx(3.0)
    assert report.total.surface.hd95[1] == pytest.approx((1.0 + 3.0) / 2)
    assert report.total.surface.bf_score[1] == pytest.approx((a.surface.bf_score[1] + b.surface.bf_score[1]) / 2)
    rows = report.rows()
    assert rows[2]["hd95_class_1"] == pytest.approx(2.0) and rows[0]["assd_class_1"] == pytest.approx(0.5)
    assert "fg HD95" in report.summary()
    assert SurfaceScores.average([a.surface, b.surface]).tolerance == 1.0


def test_cli_evaluate_with_tolerance_spacing_and_without_surface_metrics(tmp_path, capsys):
    from engine.cli import main

    write_labels(tmp_path / "truth.tif", TRUTH, axes="YX")
    write_labels(tmp_path / "pred.tif", PRED, axes="YX")
    out = tmp_path / "r.json"
    assert main(["evaluate", "--prediction", str(tmp_path / "pred.tif"), "--truth", str(tmp_path / "truth.tif"),
                 "--spacing", "2,0.5", "--tolerance", "0.25", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "HD95" in printed and "voxel size 2 x 0.5" in printed and "BF tolerance 0.25" in printed
    saved = json.loads(out.read_text())
    cell = saved["per_class"]["class 1"]
    assert cell["hd95"] == pytest.approx(0.5) and cell["bf_score"] == 0.5  # the 0.5-distances miss 0.25
    assert main(["evaluate", "--prediction", str(tmp_path / "pred.tif"), "--truth", str(tmp_path / "truth.tif"),
                 "--no-surface-metrics"]) == 0
    assert "HD95" not in capsys.readouterr().out
    assert main(["evaluate", "--prediction", str(tmp_path / "pred.tif"), "--truth", str(tmp_path / "truth.tif"),
                 "--tolerance", "far"]) == 2
    assert "tolerance 'far'" in capsys.readouterr().err
    assert main(["evaluate", "--prediction", str(tmp_path / "pred.tif"), "--truth", str(tmp_path / "truth.tif"),
                 "--spacing", "1,2,3"]) == 2
    assert "spacing '1,2,3'" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- Fiji


def test_fiji_evaluate_shows_the_surface_metrics_in_the_image_unit(ij, tmp_path):  # noqa: F811
    """DeepSeg Evaluate... on an open, calibrated prediction: the engine's BF/HD95/ASSD in the Results table."""
    import xarray as xr

    spacing = {"row": 2.0, "col": 0.5}
    write_labels(tmp_path / "truth.tif", TRUTH, axes="YX", spacing=spacing, unit="mm")
    imp = ij.labels_to_imageplus(xr.DataArray(PRED, dims=("row", "col"), attrs={"spacing": spacing, "unit": "mm"}),
                                 "pred")
    result = ij.run("DeepSeg Evaluate...", f"truth=[{tmp_path / 'truth.tif'}] names=bg,cell tolerance=0.25",
                    image=imp)
    expected = evaluate(PRED, TRUTH, class_names=["bg", "cell"], spacing=(2.0, 0.5), tolerance=0.25)
    table = ij.jclass("ij.measure.ResultsTable").getResultsTable()
    assert float(table.getValue("hd95_cell", 0)) == pytest.approx(0.5) == expected.surface.hd95[1]
    assert float(table.getValue("assd_cell", 0)) == pytest.approx(0.25)
    assert float(table.getValue("bf_cell", 0)) == pytest.approx(0.5)  # the 0.5-distances miss a 0.25 tolerance
    assert result.table["mean_foreground_hd95"] == [pytest.approx(0.5)]
    assert result.info["report"]["surface"]["spacing"] == [2.0, 0.5]
    with pytest.raises(InputError, match="tolerance"):
        ij.run("DeepSeg Evaluate...", f"truth=[{tmp_path / 'truth.tif'}] tolerance=far", image=imp)


def test_an_uncalibrated_image_from_imagej_does_not_conflict(tmp_path):
    """ImageJ reports 1 x 1 "pixel" for an uncalibrated image: that is no voxel size to disagree with."""
    import xarray as xr

    write_labels(tmp_path / "truth.tif", TRUTH, axes="YX", spacing={"row": 2.0, "col": 0.5}, unit="mm")
    from_fiji = xr.DataArray(PRED, dims=("row", "col"), attrs={"spacing": {"row": 1.0, "col": 1.0}, "unit": "pixel"})
    surface = evaluate(from_fiji, tmp_path / "truth.tif").surface
    assert surface.spacing == (2.0, 0.5) and surface.hd95[1] == pytest.approx(0.5)


@pytest.mark.slow
def test_head_ct_bone_shifted_by_two_voxels(tmp_path):
    """The real head CT bone labels (voxel 1.5 x 0.957 x 0.957 mm) against a copy moved 2 voxels along X:
    the extreme voxels are exactly 2 x 0.957 mm from the other surface and nothing is further."""
    from pathlib import Path

    from engine.io import read_labels

    path = Path(__file__).resolve().parents[1] / ".data" / "ct_head_bone" / "label.tif"
    if not path.is_file():
        pytest.skip(f"{path} is missing: run `make data`")
    truth = read_labels(path)
    moved = np.zeros_like(truth.values)
    moved[..., 2:] = truth.values[..., :-2]
    write_labels(tmp_path / "moved.tif", truth.copy(data=moved))
    report = evaluate(tmp_path / "moved.tif", path, classes=2)
    surface = report.surface
    assert surface.unit == "mm" and surface.spacing == pytest.approx((1.5, 0.957, 0.957))
    assert surface.hd95[1] == pytest.approx(2 * 0.957) and 0 < surface.assd[1] < 2 * 0.957
    assert surface.tolerance > 2 * 0.957 and surface.bf_score[1] == 1.0  # 0.75 % of a 245 x 245 x 162 mm diagonal
    to_truth, to_moved = surface_distances(moved == 1, truth.values == 1, surface.spacing)
    assert to_truth.max() == pytest.approx(2 * 0.957) and to_moved.max() == pytest.approx(2 * 0.957)
