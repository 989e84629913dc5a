"""``DeepSeg Measure...``: the objects of one class of a label image, measured into ImageJ's Results table.

The work is the engine's (:func:`engine.measure.measure_labels`); this module reads the options, finds the
label image (open or a file), fills the Results table (one row per object), writes the CSV table and shows
the instance label image if asked.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import InputError

from .commands import MEASURE, _base_title
from .options import CommandSpec, Option

if TYPE_CHECKING:
    from .commands import CommandRunner
    from .session import CommandResult


def measure_spec() -> CommandSpec:
    """The options of ``DeepSeg Measure...``."""
    return CommandSpec(MEASURE, "Number the connected objects of one class of a label image and measure each: "
                       "voxels, volume (2D: area), surface area (2D: perimeter), centroid and bounding box, in "
                       "calibrated units; one row per object in the Results table.", (
        Option("labels", "image", "", "label image: an open image's title or a file (empty: the active image)",
               label="Labels"),
        Option("class", "string", "", "the class to measure: its name (from names or the model) or its number",
               label="Class (name or number)", required=True),
        Option("names", "string", "", "class names, comma-separated, background first (empty: use numbers or the "
               "model's names)", label="Names of classes"),
        Option("model", "folder", "", "model folder whose class names the class may use (empty: none)",
               label="Model folder (optional)"),
        Option("connectivity", "int", None, "objects touch through faces (1), edges (2) or also corners (3) "
               "(auto: all, i.e. 2 in 2D, 3 in 3D)", label="Connectivity", minimum=1, maximum=3, auto="auto"),
        Option("csv", "file", "", "also save the table to this CSV file", label="CSV file"),
        Option("instances", "bool", False, "show the instance label image (one number per object)",
               label="Instances (show the object label image)"),
    ))


def run_measure(runner: "CommandRunner", values: dict[str, Any], result: "CommandResult") -> None:
    """Measure the objects of ``values["class"]`` in the label image; Results table, CSV and instance image."""
    from engine.axes import like
    from engine.fileutil import refuse_overwriting
    from engine.io import read_labels
    from engine.measure import measure_labels, write_csv

    labels, imp = runner.image_or_path(values["labels"], "labels", labels=True)
    source = labels if isinstance(labels, Path) else _file_of(imp)
    csv = Path(values["csv"]).expanduser() if values["csv"] else None
    refuse_overwriting({"csv": csv}, {"the label image": source})
    if isinstance(labels, Path):
        if labels.is_dir():
            raise InputError(f"labels={str(labels)!r} is a folder; give one label image (a macro can loop over "
                             "a folder)")
        labels = read_labels(labels, mmap=True)
    names = [n.strip() for n in values["names"].split(",") if n.strip()] or None
    if names is None and values["model"]:
        names = runner.model(values["model"], "cpu").class_names
    objects, rows = measure_labels(labels, values["class"], class_names=names, connectivity=values["connectivity"])
    runner.show_table(rows, result)
    if csv is not None:
        write_csv(rows, csv)
    if values["instances"]:
        from . import convert

        title = f"{_base_title(imp.getTitle() if imp is not None else labels.name)}-objects"
        shown = convert.labels_to_imageplus(like(objects, labels), title,
                                            calibration=imp.getCalibration() if imp is not None else None)
        runner.show(shown, result)
    result.info = {"objects": len(rows), "class": rows[0]["class"] if rows else str(values["class"]),
                   "csv": str(csv) if csv else None}
    runner.session.IJ.log(f"{MEASURE.rstrip('.')}: {len(rows)} objects of class {result.info['class']}")


def _file_of(imp: Any) -> Path | None:
    """The file an open image was read from, if any (so that csv= cannot overwrite it)."""
    info = imp.getOriginalFileInfo() if imp is not None else None
    if info is None or not info.directory or not info.fileName:
        return None
    return Path(str(info.directory), str(info.fileName))

