"""Tests of engine.metrics against values worked out by hand."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import xarray as xr

from engine.errors import Cancelled, InputError
from engine.io import write_labels
from engine.metrics import Report, confusion_matrix, evaluate

# The 2x3 example used below (rows of the matrix are truth, columns prediction):
#
#   truth = 0 0 1      prediction = 0 1 1
#           1 2 2                   1 2 0
#
#   pairs (t, p): (0,0) (0,1) (1,1) (1,1) (2,2) (2,0)
#   matrix = [[1, 1, 0],        TP = [1, 2, 1]
#             [0, 2, 0],        truth voxels     (row sums) = [2, 2, 2]
#             [1, 0, 1]]        predicted voxels (col sums) = [2, 3, 1]
#
#   accuracy (recall) = TP / truth      = [1/2, 2/2, 1/2]
#   precision         = TP / predicted  = [1/2, 2/3, 1/1]
#   IoU = TP / (truth + predicted - TP) = [1/3, 2/3, 1/2]
#   Dice = 2 TP / (truth + predicted)   = [2/4, 4/5, 2/3]
#   global accuracy = 4/6; mean IoU = (1/3 + 2/3 + 1/2) / 3 = 1/2
#   frequency-weighted IoU = 2/6 * (1/3 + 2/3 + 1/2) = 1/2
#   mean Dice = (1/2 + 4/5 + 2/3) / 3 = 59/90; mean foreground Dice = (4/5 + 2/3) / 2 = 11/15
TRUTH = np.array([[0, 0, 1], [1, 2, 2]])
PRED = np.array([[0, 1, 1], [1, 2, 0]])
MATRIX = [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_confusion_matrix_by_hand():
    matrix = confusion_matrix(PRED, TRUTH, 3)
    assert matrix.dtype == np.int64 and matrix.tolist() == MATRIX


def test_report_by_hand():
    report = evaluate(PRED, TRUTH)
    assert report.classes == 3 and report.class_names == ("class 0", "class 1", "class 2")
    np.testing.assert_allclose(report.accuracy, [1 / 2, 1, 1 / 2])
    np.testing.assert_allclose(report.precision, [1 / 2, 2 / 3, 1])
    np.testing.assert_allclose(report.iou, [1 / 3, 2 / 3, 1 / 2])
    np.testing.assert_allclose(report.dice, [1 / 2, 4 / 5, 2 / 3])
    assert report.voxels_truth.tolist() == [2, 2, 2] and report.voxels_predicted.tolist() == [2, 3, 1]
    assert report.global_accuracy == pytest.approx(4 / 6)
    assert report.mean_iou == pytest.approx(1 / 2)
    assert report.frequency_weighted_iou == pytest.approx(1 / 2)
    assert report.mean_dice == pytest.approx(59 / 90)
    assert report.mean_foreground_dice == pytest.approx(11 / 15)


def test_ignore_label_and_mask_by_hand():
    # ignore_label=2 drops the truth-2 voxels (1,1) and (1,2): pairs (0,0) (0,1) (1,1) (1,1);
    # class 2 is then in neither truth nor prediction: NaN per-class values, left out of the means.
    report = evaluate(PRED, TRUTH, classes=3, ignore_label=2)
    assert report.confusion.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    assert np.isnan(report.iou[2]) and np.isnan(report.dice[2]) and np.isnan(report.accuracy[2])
    assert report.mean_iou == pytest.approx((1 / 2 + 2 / 3) / 2)  # IoU = [1/2, 2/3, NaN]
    assert report.global_accuracy == pytest.approx(3 / 4)
    # the mask drops (0,2) (truth 1, prediction 1): row 1 becomes [0, 1, 0]
    mask = np.array([[1, 1, 0], [1, 1, 1]], bool)
    assert confusion_matrix(PRED, TRUTH, 3, mask=mask).tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    both = confusion_matrix(PRED, TRUTH, 3, mask=mask, ignore_label=2)
    assert both.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]


def test_ignore_label_outside_the_classes():
    truth = np.array([0, 255, 1, 255])
    report = evaluate(np.array([0, 0, 1, 1]), truth, ignore_label=255)
    assert report.classes == 2 and report.confusion.tolist() == [[1, 0], [0, 1]]


def test_nan_handling_and_one_sided_classes():
    # class 3 never occurs; class 2 is predicted once but absent from the truth
    report = evaluate(np.array([0, 2]), np.array([0, 0]), classes=4)
    assert report.confusion.tolist() == [[1, 0, 1, 0], [0] * 4, [0] * 4, [0] * 4]
    assert np.isnan(report.iou[[1, 3]]).all() and report.iou[2] == 0.0
    assert np.isnan(report.accuracy[2]) and report.precision[2] == 0.0  # recall is 0/0, precision 0/1
    assert report.mean_iou == pytest.approx(1 / 4)  # IoU = [1/2, NaN, 0, NaN]
    assert report.mean_foreground_dice == 0.0
    empty = Report(np.zeros((2, 2), np.int64), ("a", "b"))
    assert math.isnan(empty.global_accuracy) and math.isnan(empty.mean_iou) and math.isnan(empty.frequency_weighted_iou)


def test_default_classes_at_least_two_and_names():
    report = evaluate(np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8), class_names=["bg", "fg"])
    assert report.class_names == ("bg", "fg") and report.dice[0] == 1.0 and np.isnan(report.dice[1])
    assert evaluate(PRED, TRUTH, class_names=["bg", "a", "b", "unused"]).classes == 4
    assert evaluate(np.zeros(3, int), np.zeros(3, int)).class_names == ("class 0", "class 1")


def test_chunked_equals_unchunked_and_reference_on_memmap(tmp_path):
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, (23, 7, 9))
    pred = np.where(rng.random(truth.shape) < 0.7, truth, rng.integers(0, 4, truth.shape))
    mask = rng.random(truth.shape) < 0.9
    reference = np.zeros((5, 5), np.int64)
    np.add.at(reference, (truth[mask & (truth != 4)], pred[mask & (truth != 4)]), 1)
    mapped = np.lib.format.open_memmap(tmp_path / "p.npy", mode="w+", dtype=np.uint8, shape=pred.shape)
    mapped[:] = pred
    whole = confusion_matrix(pred, truth, 5, mask=mask, ignore_label=4)
    steps = []
    chunked = confusion_matrix(mapped, truth, 5, mask=mask, ignore_label=4, chunk_voxels=100,
                               progress=lambda p: steps.append(p.done))
    np.testing.assert_array_equal(whole, reference)
    np.testing.assert_array_equal(chunked, reference)
    assert steps == list(range(1, 24))  # 100 voxels -> one 7x9 slice per chunk


def test_progress_can_cancel():
    with pytest.raises(Cancelled):
        confusion_matrix(PRED, TRUTH, 3, chunk_voxels=1, progress=lambda p: False)


def test_xarray_inputs_are_aligned_by_dims():
    truth = xr.DataArray(TRUTH, dims=("row", "col"))
    pred = xr.DataArray(PRED.T, dims=("col", "row"))
    assert confusion_matrix(pred, truth, 3).tolist() == MATRIX


def test_file_inputs(tmp_path):
    write_labels(tmp_path / "pred.tif", PRED, axes="YX")
    write_labels(tmp_path / "truth.png", TRUTH, axes="YX")
    write_labels(tmp_path / "mask.tif", np.ones_like(TRUTH), axes="YX")
    report = evaluate(tmp_path / "pred.tif", str(tmp_path / "truth.png"), mask=tmp_path / "mask.tif")
    assert report.confusion.tolist() == MATRIX


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: confusion_matrix(PRED, TRUTH[:, :2], 3), r"\(2, 3\).*\(2, 2\)"),
        (lambda: confusion_matrix(PRED, TRUTH, 2), r"truth holds the label 2.*0\.\.1 for 2 classes"),
        (lambda: confusion_matrix(PRED + 5, TRUTH, 3), r"prediction holds the label 7.*3 classes"),
        (lambda: confusion_matrix(PRED - 1, TRUTH, 3), r"prediction holds the label -1"),
        (lambda: confusion_matrix(PRED, TRUTH - 1, 3), r"truth holds the label -1"),
        (lambda: confusion_matrix(np.where(TRUTH == 0, 9, PRED), TRUTH, 3, ignore_label=9),
         r"label 9.*ignore_label=9 applies to truth only"),
        (lambda: confusion_matrix(PRED * 0.5, TRUTH, 3), "float64"),
        (lambda: confusion_matrix(PRED, TRUTH, 3, mask=np.ones(3)), "mask shape"),
        (lambda: confusion_matrix(PRED, TRUTH, 0), "classes=0"),
        (lambda: evaluate(PRED, TRUTH, classes=3, class_names=["a"]), "1 class names"),
    ],
)
def test_errors(call, message):
    with pytest.raises(InputError, match=message):
        call()


def test_ignored_truth_voxels_are_not_checked():
    # truth value 9 is ignored, so a prediction of 2 there is fine; 9 elsewhere would not be
    assert confusion_matrix(np.array([2, 1]), np.array([9, 1]), 3, ignore_label=9).tolist() == [
        [0, 0, 0], [0, 1, 0], [0, 0, 0]]


def test_dict_json_csv_round_trip(tmp_path):
    report = evaluate(PRED, TRUTH, classes=4, class_names=["bg", "a", "b", "c"])
    data = json.loads(report.to_json(tmp_path / "out" / "r.json").read_text())
    assert data["per_class"]["c"]["iou"] is None and data["mean_iou"] == pytest.approx(1 / 2)
    assert data["confusion_matrix"][0] == [1, 1, 0, 0]
    assert Report.from_dict(data) == report
    with pytest.raises(InputError, match="confusion_matrix"):
        Report.from_dict({"class_names": ["a"]})
    with open(report.to_csv(tmp_path / "r.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["class"] for r in rows] == ["bg", "a", "b", "c", "mean", "mean_foreground", "overall"]
    assert float(rows[1]["dice"]) == pytest.approx(0.8) and rows[3]["iou"] == ""
    assert float(rows[6]["accuracy"]) == pytest.approx(4 / 6) and float(rows[4]["iou"]) == pytest.approx(0.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "r.csv"]


def test_summary_table():
    text = evaluate(PRED, TRUTH, classes=4, class_names=["bg", "cell", "nucleus", "unused"]).summary()
    assert "nucleus" in text and "n/a" in text and "mean IoU" in text and "0.5000" in text


def test_report_validates_its_input():
    with pytest.raises(InputError, match="square"):
        Report(np.zeros((2, 3)), ("a", "b"))
    with pytest.raises(InputError, match="one name per class"):
        Report(np.zeros((2, 2)), ("a",))


def test_plot_confusion(tmp_path):
    path = evaluate(PRED, TRUTH, classes=4, class_names=["bg", "a", "b", "c"]).plot_confusion(tmp_path / "cm.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and [p.name for p in tmp_path.iterdir()] == ["cm.png"]


# ------------------------------------------------------------------------------------------ folders


@pytest.fixture
def folders(tmp_path):
    """Predictions a, b (+ one without a truth) and truths a (.png: extensions are ignored), b."""
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    write_labels(pred / "a.tif", PRED, axes="YX")
    write_labels(truth / "a.png", TRUTH, axes="YX")
    write_labels(pred / "b.tif", np.array([[1, 1], [0, 0]]), axes="YX")  # labels 0-1 only: still counted with 3 classes
    write_labels(truth / "b.tif", np.array([[1, 0], [0, 0]]), axes="YX")
    write_labels(pred / "no_truth.tif", np.ones((2, 2), np.uint8), axes="YX")
    return pred, truth


def test_evaluate_folders_by_hand(folders):
    from engine.metrics import evaluate_folders

    report = evaluate_folders(*folders)
    assert [name for name, _ in report.images] == ["a.tif", "b.tif"]
    a, b = (r for _, r in report.images)
    np.testing.assert_array_equal(a.confusion, MATRIX)
    np.testing.assert_array_equal(b.confusion, [[2, 1, 0], [0, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(report.total.confusion, [[3, 2, 0], [0, 3, 0], [1, 0, 1]])
    rows = report.rows()
    assert [r["image"] for r in rows] == ["a.tif", "b.tif", "all"]
    assert rows[0]["dice_class_1"] == pytest.approx(4 / 5) and rows[1]["dice_class_1"] == pytest.approx(2 / 3)
    assert rows[2]["dice_class_1"] == pytest.approx(6 / 8)  # 2 TP / (truth 3 + predicted 5)
    assert evaluate_folders(*folders, classes=4).total.classes == 4
    with pytest.raises(InputError, match="namesake"):
        evaluate_folders(folders[0], folders[0].parent)


def test_cli_evaluates_folders(folders, tmp_path, capsys):
    from engine.cli import main

    out_csv, out_json = tmp_path / "rows.csv", tmp_path / "report.json"
    assert main(["evaluate", "--prediction", str(folders[0]), "--truth", str(folders[1]), "--class-names",
                 "bg,a,b", "--csv", str(out_csv), "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed] == ["image", "a.tif", "b.tif", "all"]
    assert float(printed[1].split()[1]) == pytest.approx(11 / 15, abs=1e-4)  # mean foreground Dice of a
    with out_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["image"] for r in rows] == ["a.tif", "b.tif", "all"]
    assert float(rows[2]["dice_a"]) == pytest.approx(6 / 8)
    saved = json.loads(out_json.read_text())
    assert sorted(saved["images"]) == ["a.tif", "b.tif"] and saved["all"]["confusion_matrix"] == [[3, 2, 0], [0, 3, 0],
                                                                                            [1, 0, 1]]
    # a folder with a file, a mask with folders: exit status 2 and a one-line message
    assert main(["evaluate", "--prediction", str(folders[0]), "--truth", str(folders[1] / "b.tif")]) == 2
    assert "both be folders" in capsys.readouterr().err
    assert main(["evaluate", "--prediction", str(folders[0]), "--truth", str(folders[1]), "--mask",
                 str(folders[1] / "b.tif")]) == 2
    assert "single images" in capsys.readouterr().err
