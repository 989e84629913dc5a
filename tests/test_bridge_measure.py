"""``DeepSeg Measure...`` in a real ImageJ 1.x (headless): one row per object in the Results table, equal to the
engine's measurements; the instance label image; the CSV table."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import xarray as xr

from bridge_fixtures import ij, requires_imagej  # noqa: F401  (fixtures)
from engine.errors import InputError

pytestmark = [pytest.mark.imagej, requires_imagej]
pytest.importorskip("skimage", reason="needs the post extra: pip install 'deepseg[post]'")

SPACING = {"pln": 2.0, "row": 0.5, "col": 0.7}


def scene() -> xr.DataArray:
    """Class 2 ('nucleus'): a 4x6x9 box, a 3x3x3 cube and a voxel touching the cube by a corner; class 1 beside."""
    labels = np.zeros((12, 20, 24), np.uint8)
    labels[:, :, :3] = 1
    labels[1:5, 2:8, 4:13] = 2
    labels[6:9, 10:13, 14:17] = 2
    labels[9, 13, 17] = 2
    return xr.DataArray(labels, dims=("pln", "row", "col"), name="cells",
                        attrs={"spacing": dict(SPACING), "unit": "mm"})


def table_column(ij, name: str, kind=float) -> list:
    table = ij.jclass("ij.measure.ResultsTable").getResultsTable()
    if kind is str:
        return [str(table.getStringValue(name, i)) for i in range(int(table.getCounter()))]
    return [kind(table.getValue(name, i)) for i in range(int(table.getCounter()))]


def test_measure_a_file_fills_the_results_table(ij, tmp_path):
    from engine.io import write_labels
    from engine.measure import measure_labels

    path = write_labels(tmp_path / "cells.tif", scene())
    out = tmp_path / "objects.csv"
    result = ij.run("DeepSeg Measure...", {"labels": str(path), "class": "nucleus",
                                           "names": "background,other,nucleus", "connectivity": 1, "csv": str(out)})
    _, expected = measure_labels(scene(), 2, connectivity=1)
    table = ij.jclass("ij.measure.ResultsTable").getResultsTable()
    assert int(table.getCounter()) == 3 == len(expected)
    assert table_column(ij, "label", int) == [1, 2, 3]
    assert table_column(ij, "voxels", int) == [216, 27, 1]
    assert table_column(ij, "volume") == pytest.approx([216 * 0.7, 27 * 0.7, 0.7])
    assert table_column(ij, "surface_area") == pytest.approx([r["surface_area"] for r in expected])
    assert table_column(ij, "centroid_x") == pytest.approx([r["centroid_x"] for r in expected])
    assert table_column(ij, "class", str) == ["nucleus"] * 3 and table_column(ij, "unit", str) == ["mm"] * 3
    assert result.table["voxels"] == [216, 27, 1] and result.info["objects"] == 3 and not result.images
    with open(out) as handle:
        assert [int(r["voxels"]) for r in csv.DictReader(handle)] == [216, 27, 1]


def test_measure_the_open_image_and_show_the_instances(ij):
    from engine.measure import instances

    imp = ij.to_imageplus(scene())
    result = ij.run("DeepSeg Measure...", "class=2 instances", image=imp)
    assert int(ij.jclass("ij.measure.ResultsTable").getResultsTable().getCounter()) == 2  # corners connect
    (shown,) = result.images
    assert str(shown.getTitle()) == "cells-objects" and shown.getNSlices() == 12
    assert shown.getCalibration().pixelDepth == 2.0 and str(shown.getCalibration().getUnit()) == "mm"
    expected, _ = instances(scene().values, 2)
    np.testing.assert_array_equal(ij.to_xarray(shown).values, expected)
    assert table_column(ij, "volume") == pytest.approx([216 * 2.0 * 0.5 * 0.7, 28 * 2.0 * 0.5 * 0.7])


def test_measure_says_what_is_wrong(ij, tmp_path):
    imp = ij.to_imageplus(scene())
    with pytest.raises(InputError, match="class 'nucleus' is not known"):
        ij.run("DeepSeg Measure...", "class=nucleus", image=imp)
    with pytest.raises(InputError, match="class is required"):
        ij.run("DeepSeg Measure...", "", image=imp)
