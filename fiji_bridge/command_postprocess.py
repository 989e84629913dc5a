"""``DeepSeg Post-process...``: clean a label image with :mod:`engine.postprocess` and show the result.

An open image is post-processed in memory; a file (or the file behind a virtual stack) is streamed chunk
by chunk into ``out=`` (or a temporary TIFF) and opened as a virtual stack; zarr outputs are written and
named in the Log (ImageJ 1.x cannot show them). Recordable: every option is a dialog field.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import InputError

from .options import CommandSpec, Option

if TYPE_CHECKING:
    from .commands import CommandRunner
    from .session import CommandResult

NAME = "DeepSeg Post-process..."


def postprocess_spec() -> CommandSpec:
    """The options of ``DeepSeg Post-process...``."""
    from engine.postprocess import STEP_HELP

    return CommandSpec(NAME, "Clean a label image: remove small objects, fill holes, keep the largest object, "
                       "opening/closing, per class; shows the result as a new image. Steps like "
                       "'bone: min-size=500um3, fill-holes=3d, largest; all: closing=1' (voxel size from the "
                       "image's calibration).", (
        Option("labels", "image", "", "label image: an open image's title or a file, TIFF or (OME-)Zarr (empty: the "
               "active image)", label="Labels"),
        Option("steps", "string", "", f"post-processing steps 'CLASSES: step, ...; ...'; steps: {STEP_HELP}",
               label="Steps", required=True),
        Option("names", "string", "", "class names, comma-separated, background first, to name classes in the steps",
               label="Names of classes"),
        Option("out", "file", "", "also save the result: .tif, or .zarr / .ome.zarr (written, not shown); a file "
               "input is streamed into it chunk by chunk (empty: a temporary TIFF for files)", label="Out (file)"),
    ))


def run_postprocess(runner: "CommandRunner", values: dict[str, Any], result: "CommandResult") -> None:
    """Post-process the labels of ``values`` and show (or, for zarr, log) the result."""
    from engine.postprocess import parse_steps

    from .commands import _base_title, _file_behind

    steps = parse_steps(values["steps"])
    names = [n.strip() for n in values["names"].split(",") if n.strip()] or None
    imp, path = runner.find_image(values["labels"], "labels")
    source = path if imp is None else _file_behind(imp)
    base = _base_title(imp.getTitle() if imp is not None else path.name)
    out = Path(values["out"]).expanduser() if values["out"] else None
    if source is not None:
        _run_file(runner, source, out, steps, names, base, result)
    else:
        _run_open_image(runner, imp, out, steps, names, base, result)


def _run_open_image(runner: "CommandRunner", imp: Any, out: Path | None, steps: Any, names: list[str] | None,
                    base: str, result: "CommandResult") -> None:
    from engine.postprocess import postprocess

    from . import convert
    from .commands import POSTPROCESS

    labels = runner.to_array(imp, True)
    cleaned = postprocess(labels, steps, class_names=names, progress=runner.progress(POSTPROCESS))
    if out is not None:
        _check_out(out, (".tif", ".tiff"))
        from engine.fileutil import refuse_overwriting
        from engine.io import write_labels

        info = imp.getOriginalFileInfo()
        opened = Path(str(info.directory), str(info.fileName)) if info is not None and info.fileName else None
        refuse_overwriting({"out": out}, {"the labels": opened})
        write_labels(out, cleaned)
    runner.show(convert.labels_to_imageplus(cleaned, f"{base}-postprocessed", calibration=imp.getCalibration()), result)
    result.info = {"steps": str(steps), "labels": str(out) if out else None}


def _run_file(runner: "CommandRunner", source: Path, out: Path | None, steps: Any, names: list[str] | None,
              base: str, result: "CommandResult") -> None:
    from engine.postprocess import postprocess_file

    from .commands import POSTPROCESS

    if out is not None:
        _check_out(out)
    target = out or runner.labels_output("", source, f"{base}-postprocessed")
    summary = postprocess_file(source, target, steps, class_names=names, progress=runner.progress(POSTPROCESS))
    if target.name.lower().endswith(".zarr"):
        runner.session.IJ.log(f"{POSTPROCESS.rstrip('.')}: labels written to {target} (zarr: ImageJ 1.x cannot show "
                              "it; open it with an OME-Zarr reader)")
    else:
        runner.show(runner.open_virtual(target, f"{base}-postprocessed"), result)
    result.info = summary


def _check_out(out: Path, suffixes: tuple[str, ...] = (".tif", ".tiff", ".zarr")) -> None:
    if not out.name.lower().endswith(suffixes):
        kinds = "a .tif" if ".zarr" not in suffixes else "a .tif, .zarr or .ome.zarr"
        raise InputError(f"out={str(out)!r} is not a label file: expected {kinds} path")
