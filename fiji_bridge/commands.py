"""The Plugins > deepseg commands: read options, convert images, call the engine, show the results.

Every command works the same with a display (options from a GenericDialog, which the Macro Recorder
records) and headless (options from the macro options string). No segmentation logic lives here.
"""

from __future__ import annotations

import json
import logging
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from engine.errors import Cancelled, InputError

from .macro import CANCELLED_PREFIX
from .options import CommandSpec, Option, declared_option

if TYPE_CHECKING:
    import xarray as xr

    from engine.progress import Progress

    from .session import CommandResult, Session

log = logging.getLogger(__name__)

TRAIN = "DeepSeg Train..."
PREDICT = "DeepSeg Predict..."
EVALUATE = "DeepSeg Evaluate..."
MODEL_INFO = "DeepSeg Model Info..."
ACTIVATIONS = "DeepSeg Activations..."
POSTPROCESS = "DeepSeg Post-process..."
MEASURE = "DeepSeg Measure..."
COMMANDS: tuple[str, ...] = (TRAIN, PREDICT, EVALUATE, MODEL_INFO, ACTIVATIONS, POSTPROCESS, MEASURE)
_DEVICE = Option("device", "string", "auto", "where to compute: auto, cpu, cuda, cuda:N or mps", label="Device")


@lru_cache(maxsize=None)
def spec(command: str) -> CommandSpec:
    """The option spec of ``command`` (built on first use: the choices come from the engine)."""
    if command == PREDICT:
        from engine.precision import PRECISIONS

        return CommandSpec(PREDICT, "Segment an image with a trained model; shows the label image "
                           "(and/or class probabilities) as new images. A file (or a virtual stack opened from "
                           "one) is streamed, never held in memory, into out= and shown as a virtual stack; "
                           "zarr outputs are written but not shown (ImageJ 1.x cannot open zarr): the Log "
                           "names them.", (
            Option("model", "folder", "", "the trained model folder", label="Model folder", required=True),
            Option("image", "image", "", "image to segment: an open image's title or a file, TIFF or (OME-)Zarr "
                   "(empty: the active image)", label="Image"),
            Option("tile", "size", None, "tile size in pixels (auto: the model's default)", label="Tile size"),
            Option("overlap", "float", 0.25, "fraction of a tile shared with its neighbours", label="Overlap",
                   minimum=0.0, maximum=0.9),
            Option("blend", "choice", "gaussian", "how overlapping tiles are combined", label="Blend",
                   choices=("gaussian", "mean")),
            Option("output", "choice", "labels", "what to show (streamed: the probabilities are saved beside the "
                   "labels, as <out>-probabilities.tif / .zarr / .ome.zarr)", label="Output",
                   choices=("labels", "probabilities", "both")),
            Option("batch", "int", None, "tiles per forward pass (auto: 8 in 2D, 2 in 3D)", label="Batch size",
                   minimum=1, auto="auto"),
            Option("tta", "bool", False, "mirroring test-time augmentation (slower, smoother)",
                   label="TTA (test-time augmentation)"),
            _DEVICE,
            Option("out", "file", "", "for a file or virtual stack: the label file to write, .tif (opened as a "
                   "virtual stack) or .zarr / .ome.zarr (block by block, resumable; not opened) (empty: a "
                   "temporary TIFF)", label="Out (labels file)"),
            Option("cluster", "string", "", "run the blocks on Dask: local:N or a scheduler address such as "
                   "tcp://host:8786; needs a zarr out (empty: this process)", label="Cluster (Dask)"),
            Option("precision", "choice", "auto", "the network's arithmetic: auto (bf16 where the CPU/GPU does it "
                   "natively), bf16, fp16 (CUDA) or fp32", label="Precision", choices=PRECISIONS),
        ))
    if command == POSTPROCESS:
        from .command_postprocess import postprocess_spec

        return postprocess_spec()
    if command == MEASURE:
        from .command_measure import measure_spec

        return measure_spec()
    if command == TRAIN:
        from engine.config import train_options

        return CommandSpec(TRAIN, "Train a segmentation network on an image and its label image (open images "
                           "or files), or on folders of them; saves a model folder.",
                           tuple(declared_option(d) for d in train_options() if d.key))
    if command == EVALUATE:
        return CommandSpec(EVALUATE, "Compare predicted label images with the ground truth; shows the metrics "
                           "in the Results table (one row per image, plus 'all' for folders), with the BF score, "
                           "Hausdorff 95 and average symmetric surface distance per class in the image's unit.", (
            Option("prediction", "image", "", "predicted labels: an open image, a file or a folder",
                   label="Prediction"),
            Option("truth", "image", "", "ground-truth labels: an open image, a file or a folder", label="Truth",
                   required=True),
            Option("classes", "int", None, "number of classes (auto: largest label + 1)", label="Classes",
                   minimum=1, auto="auto"),
            Option("ignore", "int", -1, "truth label to leave out (-1: none)", label="Ignore label", minimum=-1),
            Option("names", "string", "", "class names, comma-separated, background first", label="Names of classes"),
            Option("tolerance", "string", "0.75%", "BF score tolerance: a distance in the image's unit (2.5), in "
                   "pixels (3px) or in percent of the image diagonal (0.75%, DeepMIB's default)",
                   label="Tolerance (BF score)"),
            Option("csv", "file", "", "also save per-class metrics to this CSV file", label="CSV file"),
        ))
    if command == MODEL_INFO:
        return CommandSpec(MODEL_INFO, "Show a model folder's network, classes, patch and training record "
                           "in the Results table.", (
            Option("model", "folder", "", "the model folder", label="Model folder", required=True),
        ))
    if command == ACTIVATIONS:
        return CommandSpec(ACTIVATIONS, "Show what a layer of a trained network responds to: its feature maps "
                           "for a patch from the middle of an image, as a stack (one slice per filter) and a "
                           "montage. Without a layer, list the layers in the Results table.", (
            Option("model", "folder", "", "the trained model folder", label="Model folder", required=True),
            Option("image", "image", "", "image to take the patch from: an open image's title or a file (empty: "
                   "the active image)", label="Image"),
            Option("layer", "string", "", "layer name (empty or 'list': list the layers)", label="Layer"),
            Option("out", "file", "", "also save the feature maps to this TIFF file (and the montage as PNG "
                   "beside it)", label="Out (TIFF file)"),
        ))
    raise KeyError(f"{command!r} is not a deepseg command; expected one of {COMMANDS}")


def handlers(session: "Session") -> dict[str, Callable[[str, str | None], str | None]]:
    """One handler per command, for :func:`fiji_bridge.shim.register`."""
    runner = CommandRunner(session)
    return {name: runner.dispatch for name in COMMANDS}


class CommandRunner:
    """Runs deepseg commands for one session."""

    def __init__(self, session: "Session") -> None:
        self.session = session
        self._models: dict[tuple[str, str, float], Any] = {}
        self._scratch: tempfile.TemporaryDirectory[str] | None = None  # temporary outputs of DeepSeg Predict...
        self._run = {TRAIN: self.train, PREDICT: self.predict, EVALUATE: self.evaluate, MODEL_INFO: self.model_info,
                     ACTIVATIONS: self.activations, POSTPROCESS: self.postprocess, MEASURE: self.measure}

    def dispatch(self, command: str, options: str | None) -> str | None:
        """Entry point from ImageJ: None on success, else the error message (ImageJ shows or aborts with it)."""
        from .session import CommandResult

        try:
            values = self.read_options(command, options)
            if values is None:  # the dialog was cancelled: nothing to do, not an error
                return None
            result = CommandResult(command)
            self._run[command](values, result)
            self.session.last_result = result
            self.session.IJ.showStatus(f"{command.rstrip('.')}: done")
            return None
        except Cancelled as err:
            self.session._record_failure(err)
            return f"{CANCELLED_PREFIX} {err}"
        except (ValueError, FileNotFoundError) as err:  # InputError, ModelFileError: the message says it all
            self.session._record_failure(err)
            return str(err)
        except Exception as err:  # report, don't crash ImageJ's thread
            log.exception("%s failed", command)
            self.session._record_failure(err)
            return f"{type(err).__name__}: {err}"
        finally:
            self.session.IJ.showProgress(1.0)

    def read_options(self, command: str, options: str | None) -> dict[str, Any] | None:
        """From the macro options if given, else from the dialog (or the defaults where nobody can answer)."""
        command_spec = spec(command)
        if options is not None or self.session.unattended:
            return command_spec.parse(options)
        from .dialog import ask

        current = self.session.current_image()  # preselected where "" means the active image anyway
        initial = {o.key: str(current.getTitle()) for o in command_spec.options
                   if o.kind == "image" and current is not None and o.key in ("image", "images", "prediction")}
        return ask(command_spec, initial, titles=self.session.image_titles())

    # --------------------------------------------------------------------------------------- helpers

    def progress(self, command: str) -> Callable[["Progress"], bool | None]:
        IJ = self.session.IJ
        label = command.rstrip(".")

        def callback(p: "Progress") -> bool | None:
            IJ.showProgress(int(p.done), int(max(p.total, 1)))
            details = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in p.metrics.items())
            IJ.showStatus(f"{label}: {p.stage} {p.done}/{p.total} {p.message} {details}".strip())
            if self.session.progress_callback is not None:
                self.session.progress_callback(p)
            return False if self.session.cancelled() else None

        return callback

    def image_or_path(self, reference: str, what: str, *, labels: bool = False) -> tuple[Any, Any]:
        """``(DataArray, ImagePlus)`` for an open image (by title; "" = active), or ``(Path, None)`` for a file/folder."""
        imp, path = self.find_image(reference, what)
        return (path, None) if imp is None else (self.to_array(imp, labels), imp)

    def find_image(self, reference: str, what: str) -> tuple[Any, Path | None]:
        """``(ImagePlus, None)`` for an open image (by title; "" = active), or ``(None, Path)`` for a file/folder;
        no pixels are copied."""
        session = self.session
        if not reference:
            imp = session.current_image()
            if imp is None:
                raise InputError(f"{what}: no image is open; open one or give {what}=<title or file>")
            return imp, None
        imp = session.jclass("ij.WindowManager").getImage(reference)
        current = session.current_image()
        if imp is None and current is not None and str(current.getTitle()) == reference:
            imp = current
        if imp is not None:
            return imp, None
        path = Path(reference).expanduser()
        if path.exists():
            return None, path
        titles = session.image_titles()
        listing = f"open images: {', '.join(titles)}" if titles else "no images are open"
        raise InputError(f"{what}={reference!r} is neither an open image nor an existing file or folder ({listing})")

    @staticmethod
    def to_array(imp: Any, labels: bool) -> "xr.DataArray":
        from . import convert

        array = convert.imageplus_to_xarray(imp)
        if labels and array.attrs.get("rgb"):
            raise InputError(f"label image {array.name!r} is RGB; expected an 8/16-bit label image")
        return array

    def model(self, folder: str, device: str) -> Any:
        """Load a model folder once per session (reloaded when its files change)."""
        from engine.model_files import load_model

        path = Path(folder).expanduser()
        config = path / "config.json"
        stamp = config.stat().st_mtime if config.is_file() else 0.0
        key = (str(path.resolve()), device, stamp)
        if key not in self._models:
            self._models = {k: v for k, v in self._models.items() if k[0] != key[0]}
            self._models[key] = load_model(path, device=device)
        return self._models[key]

    def show(self, imp: Any, result: "CommandResult") -> None:
        imp.show()
        result.images.append(imp)

    def show_table(self, rows: list[Mapping[str, Any]], result: "CommandResult") -> None:
        """Rows into ImageJ's Results table (macros read it with getResult/getResultString)."""
        ResultsTable = self.session.jclass("ij.measure.ResultsTable")
        table = ResultsTable.getResultsTable()
        table.reset()
        for row in rows:
            table.incrementCounter()
            for key, value in row.items():
                if isinstance(value, bool) or value is None or not isinstance(value, (int, float)):
                    table.addValue(str(key), "" if value is None else str(value))
                else:
                    table.addValue(str(key), float(value))
                result.table.setdefault(str(key), []).append(value)
        table.show("Results")

    # --------------------------------------------------------------------------------------- commands

    def predict(self, values: dict[str, Any], result: "CommandResult") -> None:
        imp, path = self.find_image(values["image"], "image")
        source = path if imp is None else _file_behind(imp)
        if source is not None:
            self.predict_streaming(source, imp, values, result)
            return
        if values["out"] or values["cluster"]:
            raise InputError(f"out= and cluster= apply to images given as files: image {str(imp.getTitle())!r} is held "
                             "in memory; give image=<file> (or open it with File > Import > TIFF Virtual Stack...)")
        from engine.prediction import predict

        image = self.to_array(imp, False)
        model = self.model(values["model"], values["device"])
        output = values["output"]
        prediction = predict(model, image, probabilities=output != "labels", **_predict_options(values),
                             progress=self.progress(PREDICT))
        from . import convert

        base, calibration = _base_title(imp.getTitle()), imp.getCalibration()
        if output in ("labels", "both"):
            self.show(convert.labels_to_imageplus(prediction.labels, f"{base}-labels", calibration=calibration), result)
        if output in ("probabilities", "both"):
            probabilities = convert.probabilities_to_imageplus(
                prediction.probabilities, f"{base}-probabilities", class_names=model.class_names,
                calibration=calibration,
            )
            self.show(probabilities, result)
        result.info = {"model": str(model.path), "classes": model.class_names}

    def predict_streaming(self, source: Path, imp: Any, values: dict[str, Any], result: "CommandResult") -> None:
        """``DeepSeg Predict...`` of a file (or of the file behind a virtual stack), streamed as ``deepseg predict``
        does: into a TIFF, opened as a virtual stack, or block by block into zarr (optionally on Dask), logged."""
        from engine.blockwise import blockwise_needed, predict_zarr
        from engine.chunked_io import is_zarr_path
        from engine.fileutil import refuse_overwriting
        from engine.prediction import predict_file

        if source.is_dir() and not is_zarr_path(source):
            raise InputError(f"image={str(source)!r} is a folder; give one image (a macro can loop over a folder)")
        base = _base_title(imp.getTitle() if imp is not None else source.name)
        labels = self.labels_output(values["out"], source, base)
        probabilities = _beside(labels, "probabilities") if values["output"] != "labels" else None
        into_input = is_zarr_path(source) and labels.resolve() == source.resolve()  # NGFF labels/ beside the image
        refuse_overwriting({"out": None if into_input else labels, "the probabilities": probabilities},
                           {"the image": source})
        cluster = values["cluster"] or None
        chunked = blockwise_needed(source, labels, cluster)
        model = self.model(values["model"], values["device"])
        run = dict(**_predict_options(values), progress=self.progress(PREDICT))
        if chunked:
            summary = predict_zarr(model, source, labels, probabilities=probabilities, device=values["device"],
                                   cluster=cluster, **run)
            self.session.IJ.log(f"{PREDICT.rstrip('.')}: labels written to {summary['labels']}"
                                + (f", probabilities to {probabilities}" if probabilities else "")
                                + " (zarr: ImageJ 1.x cannot show it; open it with an OME-Zarr reader)")
        else:
            summary = predict_file(model, source, labels, probabilities_path=probabilities, **run)
            if values["output"] in ("labels", "both"):
                self.show(self.open_virtual(labels, f"{base}-labels" if not values["out"] else None), result)
            if probabilities is not None:
                self.show(self.open_virtual(probabilities, f"{base}-probabilities" if not values["out"] else None,
                                            display_range=(0.0, 1.0)), result)
        result.info = {"model": str(model.path), "classes": model.class_names, **summary}

    def labels_output(self, out: str, source: Path, base: str) -> Path:
        """The label file of a streamed prediction: ``out`` (.tif, .zarr or .ome.zarr), or a new temporary TIFF
        (also for a zarr image: read slab by slab, its labels shown as a virtual stack)."""
        if out:
            path = Path(out).expanduser()
            if not path.name.lower().endswith((".tif", ".tiff", ".zarr")):
                raise InputError(f"out={out!r} is not a label file: expected a .tif, .zarr or .ome.zarr path")
            return path
        if self._scratch is None:  # removed when the session's process ends
            self._scratch = tempfile.TemporaryDirectory(prefix="deepseg-fiji-")
        return Path(tempfile.mkdtemp(dir=self._scratch.name)) / f"{base}-labels.tif"

    def open_virtual(self, path: Path, title: str | None, display_range: tuple[float, float] | None = None) -> Any:
        """A TIFF opened as an ImageJ virtual stack (planes read on demand; LUT and calibration from the file)."""
        imp = self.session.IJ.openVirtual(str(path))
        if imp is None:
            raise InputError(f"ImageJ cannot open {str(path)!r} as a virtual stack: {self.session.IJ.getErrorMessage()}")
        if title:
            imp.setTitle(title)
        for c in range(1, int(imp.getNChannels()) + 1) if display_range else ():
            imp.setPositionWithoutUpdate(c, 1, 1)
            imp.setDisplayRange(*display_range)
        return imp

    def train(self, values: dict[str, Any], result: "CommandResult") -> None:
        from engine.config import TrainConfig
        from engine.training import train

        images, _ = self.image_or_path(values["images"], "images")
        labels: Any = None
        if values["labels"]:
            labels, _ = self.image_or_path(values["labels"], "labels", labels=True)
        elif not isinstance(images, Path):
            raise InputError("labels: give the label image for the open training image (labels=<title or file>)")
        in_memory = not isinstance(images, Path)
        if in_memory and isinstance(labels, Path):
            from engine.io import read_labels

            labels = read_labels(labels)
        elif not in_memory and labels is not None and not isinstance(labels, Path):
            raise InputError("images is a file or folder but labels is an open image: give both as files, or both open")
        config = TrainConfig(**{
            **train_config_values(values),
            "images": None if in_memory else str(images),
            "labels": None if in_memory or labels is None else str(labels),
            "out": str(Path(values["out"]).expanduser()),
        })
        from .training_plot import TrainingPlot

        plot = TrainingPlot(self.session, f"DeepSeg training: {Path(config.out).name}")  # live curves, ETA
        trained = train(config, images=[images] if in_memory else None, labels=[labels] if in_memory else None,
                        progress=plot.hook(self.progress(TRAIN)))
        rows = [{k: v for k, v in epoch.items() if isinstance(v, (int, float, str))} for epoch in trained.history]
        self.show_table(rows, result)
        result.info = {"model_dir": str(trained.model_dir), "final_metrics": trained.final_metrics,
                       "plot": plot.title if plot.window is not None else None}
        self.session.IJ.log(f"{TRAIN.rstrip('.')}: model saved to {trained.model_dir}")

    def evaluate(self, values: dict[str, Any], result: "CommandResult") -> None:
        from engine.fileutil import refuse_overwriting
        from engine.io import list_images
        from engine.metrics import evaluate, evaluate_folders, metrics_row

        prediction, prediction_imp = self.image_or_path(values["prediction"], "prediction", labels=True)
        truth, truth_imp = self.image_or_path(values["truth"], "truth", labels=True)
        csv = Path(values["csv"]).expanduser() if values["csv"] else None
        inputs: dict[str, Any] = {}
        for what, given, imp in (("prediction", prediction, prediction_imp), ("truth", truth, truth_imp)):
            info = imp.getOriginalFileInfo() if imp is not None else None  # the file an open image came from
            opened = info is not None and info.directory and info.fileName
            source = given if isinstance(given, Path) else Path(str(info.directory), str(info.fileName)) if opened else None
            inputs[f"the {what}"] = source
            if source is not None and source.is_dir():
                inputs.update({f"{f.name!r} in the {what} folder": f for f in list_images(source)})
        refuse_overwriting({"csv": csv}, inputs)
        names = [n.strip() for n in values["names"].split(",") if n.strip()] or None
        kwargs = dict(classes=values["classes"] or None, ignore_label=None if values["ignore"] < 0 else values["ignore"],
                      class_names=names, progress=self.progress(EVALUATE),
                      tolerance=values["tolerance"].strip() or None)
        folders = [isinstance(v, Path) and v.is_dir() for v in (prediction, truth)]
        if folders[0] != folders[1]:
            raise InputError("prediction and truth must both be folders, or both single images")
        if folders[0]:  # one row per image, then "all"
            report = evaluate_folders(prediction, truth, **kwargs)
            rows, final = report.rows(), report.total
        else:
            final = evaluate(prediction, truth, **kwargs)
            label = prediction.name if isinstance(prediction, Path) else str(getattr(prediction, "name", "image"))
            rows = [metrics_row(label, final)]
        self.show_table(rows, result)
        if csv is not None:
            final.to_csv(csv)
        result.info = {"report": final.as_dict()}

    def model_info(self, values: dict[str, Any], result: "CommandResult") -> None:
        info = self.model(values["model"], "cpu").describe()
        rows = [{"key": key, "value": _text(value)} for key, value in info.items()]
        self.show_table(rows, result)
        result.info = info

    def postprocess(self, values: dict[str, Any], result: "CommandResult") -> None:
        from .command_postprocess import run_postprocess

        run_postprocess(self, values, result)

    def measure(self, values: dict[str, Any], result: "CommandResult") -> None:
        from .command_measure import run_measure

        run_measure(self, values, result)

    def activations(self, values: dict[str, Any], result: "CommandResult") -> None:
        from engine import activations as act

        model = self.model(values["model"], "auto")
        layer = values["layer"]
        if not layer or layer == "list":
            network = model.network
            rows = [{"layer": name, "type": type(network.get_submodule(name)).__name__}
                    for name in act.list_layers(network)]
            self.show_table(rows, result)
            result.info = {"model": str(model.path), "layers": [row["layer"] for row in rows]}
            return
        from engine.fileutil import refuse_overwriting

        image, imp = self.image_or_path(values["image"], "image")
        tif = png = None
        if values["out"]:
            out_path = Path(values["out"]).expanduser()
            png = out_path.with_suffix(".png")
            tif = out_path.with_suffix(".tif") if png == out_path else out_path
        info = imp.getOriginalFileInfo() if imp is not None else None  # the file an open image came from
        opened = info is not None and info.directory and info.fileName
        source = image if isinstance(image, Path) else Path(str(info.directory), str(info.fileName)) if opened else None
        refuse_overwriting({"out": tif, "the montage": png}, {"the image": source})
        if isinstance(image, Path):
            from engine.io import read_image

            if image.is_dir():
                raise InputError(f"image={str(image)!r} is a folder; give one image")
            image = read_image(image)
        features = act.image_activations(model, image, layer)
        written = act.save_activations(features, tif_path=tif, png_path=png) if tif is not None else []
        from . import convert

        base = f"{_base_title(imp.getTitle() if imp is not None else image.name)}-{layer}"
        axes = "ZYX" if features.ndim == 3 else "TZYX"  # one slice (3D maps: one frame) per filter
        stack = convert.xarray_to_imageplus(features, base, axes=axes)
        for i in range(1, int(stack.getStackSize()) + 1):
            index = i - 1 if features.ndim == 3 else (i - 1) // features.shape[1]
            stack.getStack().setSliceLabel(f"filter {index + 1}", i)
        self.show(stack, result)
        grid = convert.xarray_to_imageplus(act.montage(features), f"{base}-montage")
        grid.setDisplayRange(0.0, 1.0)
        self.show(grid, result)
        result.info = {"model": str(model.path), "layer": layer, "shape": list(features.shape),
                       "files": [str(p) for p in written]}


def train_config_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """``DeepSeg Train...`` values (by macro key) -> TrainConfig values (by field name), as declared."""
    from engine.config import train_options
    from engine.options import to_config

    return {d.name: to_config(d, values[d.key]) for d in train_options() if d.key}


def train_values(config: Any) -> dict[str, Any]:
    """The inverse: ``DeepSeg Train...`` values (checked) for an ``engine.config.TrainConfig``."""
    from engine.config import train_options
    from engine.options import from_config

    return spec(TRAIN).validate({d.key: from_config(d, getattr(config, d.name)) for d in train_options() if d.key})


def _predict_options(values: Mapping[str, Any]) -> dict[str, Any]:
    """The tiling options of ``DeepSeg Predict...`` as the engine's prediction functions take them."""
    return dict(tile=values["tile"], overlap=values["overlap"], blend=values["blend"], batch=values["batch"] or None,
                tta=values["tta"], precision=values["precision"])


def _file_behind(imp: Any) -> Path | None:
    """The file an ImageJ virtual stack reads its planes from (File > Import > TIFF Virtual Stack...), else None:
    images held in memory are predicted as they are (they may differ from their file)."""
    if not bool(imp.getStack().isVirtual()):
        return None
    info = imp.getOriginalFileInfo()
    if info is None or not info.directory or not info.fileName:
        return None
    path = Path(str(info.directory), str(info.fileName))
    return path if path.is_file() else None


def _beside(labels: Path, what: str) -> Path:
    """``x.tif`` -> ``x-<what>.tif`` (``.ome.zarr``, ``.zarr``, ``.tiff`` kept whole)."""
    name = labels.name
    for suffix in (".ome.zarr", ".zarr", ".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            return labels.with_name(f"{name[: -len(suffix)]}-{what}{name[-len(suffix):]}")
    return labels.with_name(f"{name}-{what}")


def _base_title(title: Any) -> str:
    text = str(title or "image")
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".png", ".jpg", ".jpeg", ".bmp"):
        if text.lower().endswith(suffix):
            return text[: -len(suffix)]
    return text


def _text(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str)
    return "" if value is None else str(value)
