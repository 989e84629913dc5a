"""``DeepSeg Post-process...`` in a real ImageJ 1.x (headless): open images, files, macros, errors."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from bridge_fixtures import ij, requires_imagej  # noqa: F401  (fixtures)
from engine.errors import InputError
from engine.io import read_labels, write_labels
from engine.postprocess import postprocess
from fiji_bridge.errors import MacroError

pytestmark = [pytest.mark.imagej, requires_imagej]

SPACING = {"pln": 2.0, "row": 0.5, "col": 0.5}
STEPS = "bone: min-size=10um3, fill-holes; all: closing=1"


def labels_volume() -> xr.DataArray:
    """Calibrated labels: a 19- and a 20-voxel rod (9.5 and 10 µm³), a hollow box, another class."""
    values = np.zeros((5, 12, 24), np.uint8)
    values[1, 1, 1:20] = 1
    values[1, 3, 1:21] = 1
    values[1:4, 5:10, 2:8] = 1
    values[2, 7, 4] = 0  # a cavity
    values[2:5, 6:9, 12:15] = 2
    values[3, 7, 13] = 0
    return xr.DataArray(values, dims=("pln", "row", "col"), name="seg", attrs={"spacing": dict(SPACING), "unit": "µm"})


def test_open_label_image_is_post_processed_like_the_engine(ij, tmp_path):
    labels = labels_volume()
    imp = ij.labels_to_imageplus(labels, "seg")
    out = tmp_path / "clean.tif"
    result = ij.run("DeepSeg Post-process...", {"steps": STEPS, "names": "background,bone,marrow", "out": str(out)},
                    image=imp)
    expected = postprocess(labels, STEPS, class_names=["background", "bone", "marrow"]).values
    (shown,) = result.images
    assert str(shown.getTitle()) == "seg-postprocessed" and shown.getBitDepth() == 8
    np.testing.assert_array_equal(ij.to_xarray(shown).values, expected)
    assert shown.getCalibration().pixelDepth == 2.0
    np.testing.assert_array_equal(read_labels(out).values, expected)
    assert (expected != labels.values).any() and (expected[1, 1] == 0).all() and (expected[1, 3, 1:21] == 1).all()
    assert expected[2, 7, 4] == 1 and expected[3, 7, 13] == 2  # the cavity filled, the other class closed


def test_label_file_is_streamed_and_shown(ij, tmp_path):
    source = write_labels(tmp_path / "seg.tif", labels_volume())
    result = ij.run("DeepSeg Post-process...", f"labels=[{source}] steps=[1: largest]")
    (shown,) = result.images
    expected = postprocess(read_labels(source), "1: largest").values
    np.testing.assert_array_equal(ij.to_xarray(shown).values, expected)
    assert result.info["steps"] == "1: largest" and bool(shown.getStack().isVirtual())


def test_recorded_macro_call_runs_and_errors_name_the_step(ij, tmp_path):
    source = write_labels(tmp_path / "seg.tif", labels_volume())
    out = tmp_path / "macro out.tif"
    from fiji_bridge.commands import spec

    options = spec("DeepSeg Post-process...").format({"labels": str(source), "steps": "2: opening=1",
                                                      "out": str(out)})  # as the Recorder writes it
    value = ij.run_macro(f'run("DeepSeg Post-process...", "{options}");\nreturn getTitle();')
    assert value == "seg-postprocessed"
    np.testing.assert_array_equal(read_labels(out).values, postprocess(read_labels(source), "2: opening=1").values)
    with pytest.raises(InputError, match=r"post-processing step 'shrink=2'.*valid steps"):
        ij.run("DeepSeg Post-process...", f"labels=[{source}] steps=[shrink=2]")
    with pytest.raises(MacroError, match=r"class 'bone' is unknown: the labels carry no class names"):
        ij.run_macro(f'run("DeepSeg Post-process...", "labels=[{source}] steps=[bone:largest]");')
