"""Training configuration: one dataclass, validated, saved as JSON beside the model."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .augment import AUTO, AUTO_LIGHT_STEPS, PRESETS, Augmentation
from .budget import parse_duration
from .errors import InputError
from .losses import LOSSES
from .normalization import METHODS as NORMALIZATIONS
from .options import Declared, checked_keywords, declared_options, option, unknown_option_error
from .precision import PRECISIONS

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("poly", "piecewise", "cosine", "constant")
SELECT = ("best", "last")


def _network_names() -> list[str]:
    from .networks import list_networks  # imports torch: only when the choices are shown

    return ["auto", *list_networks()]


@dataclass
class TrainConfig:
    """Everything that defines a training run. Defaults follow DeepMIB/nnU-Net where they agree.

    ``images``/``labels``/``masks``: a file, a folder of files (paired by sorted name), or, for
    ``images`` only, a DeepMIB-style training folder holding ``Images/``, ``Labels/`` and optional
    ``Masks/``. ``patch``: spatial patch size (an int is used for every axis; ``None`` derives it from
    the data: up to 256 px in 2D, about a million voxels in 3D shaped by the voxel size, never larger
    than the images). ``batch``: ``None`` is 4 for 2D and 2 for 3D networks. ``classes``: number of
    classes including background (``None``: max label + 1). ``ignore_label``: a label value meaning
    "not annotated" (e.g. 0 when users paint every class with 1..K and leave the rest 0).
    ``steps_per_epoch``: ``None`` covers the training voxels about once per epoch (at most 250 steps).

    Each user-facing field is declared once with :func:`engine.options.option` (help, choices, range, CLI
    flag, Fiji macro key and dialog label): the ``train`` command line and Fiji's ``DeepSeg Train...``
    are generated from these declarations, and :meth:`validate` checks their choices and ranges.
    """

    images: str | None = option(
        None, kind="image", flag="--images", key="images", label="Images",
        help="training image(s): a file, a folder of images, or a DeepMIB training folder (Images/, Labels/, Masks/)")
    labels: str | None = option(
        None, kind="image", flag="--labels", key="labels", label="Labels",
        help="label image(s): a file or a folder, paired with the images by sorted name (none with a DeepMIB folder)")
    masks: str | None = option(None, kind="image", flag="--masks", help="mask file or folder: 0 = not annotated")
    axes: str | None = option(None, flag="--axes", key="axes", label="Axes",
                              help="axes of image files that do not record them, e.g. ZYX or YXC")
    out: str = option("model", kind="folder", flag="--out", key="out", label="Out (model folder)", required=True,
                      help="model folder to write")
    network: str = option("auto", kind="choice", choices=_network_names, flag="--network", key="network",
                          label="Network", help="network architecture (see `deepseg networks`); auto: planned from "
                          "the data and this machine (`deepseg plan`), with patch and batch unless given")
    network_options: dict[str, Any] = option(
        default_factory=dict, kind="mapping", flag="--option", key="options", label="Options",
        help="network options, e.g. depth=3 filters=16 (on the command line: --option depth=3, repeatable)")
    patch: int | list[int] | None = option(
        None, kind="size", flag="--patch", key="patch", label="Patch size", auto="auto",
        auto_help="derived from the data",
        help="training patch size: one int for every axis or one per axis, e.g. 128 or 32,128,128")
    classes: int | None = option(None, kind="int", flag="--classes", key="classes", label="Classes", auto="auto",
                                 minimum=2, note=" (background counts as a class)", auto_help="largest label + 1",
                                 help="number of classes including background")
    class_names: list[str] | None = option(None, kind="names", flag="--class-names", key="names",
                                           label="Names of classes",
                                           help="class names, comma-separated, background first")
    ignore_label: int | None = option(None, kind="int", flag="--ignore-label", key="ignore", label="Ignore label",
                                      auto="none", help="label value meaning 'not annotated'")
    epochs: int | None = option(None, kind="int", flag="--epochs", key="epochs", label="Epochs", minimum=1,
                                auto="auto", auto_help="50; with time, as many as fit, or whichever ends first",
                                help="passes over the training data")
    time_budget: str | float | None = option(
        None, flag="--time", key="time", label="Time budget",
        help="wall-clock training time, e.g. 90s, 10m, 1h or 1h30m (none by default): the learning rate follows "
             "the elapsed time, validation takes at most about a tenth of it; with epochs, whichever ends first")
    step_time: float | None = option(None, kind="float", flag="--step-time", above=0.0, auto="auto",
                                     auto_help="0.25 s; less with a short time budget",
                                     help="network auto on a CPU: seconds a training step may take in the plan "
                                          "(as `deepseg plan --step-time`)")
    batch: int | None = option(None, kind="int", flag="--batch", key="batch", label="Batch size", auto="auto",
                               minimum=1, auto_help="4 in 2D, 2 in 3D", help="patches per step (minibatch size)")
    steps_per_epoch: int | None = option(None, kind="int", flag="--steps", key="steps", label="Steps per epoch",
                                         auto="auto", minimum=1, auto_help="about one pass over the data",
                                         help="steps per epoch")
    optimizer: str = option("adam", kind="choice", choices=OPTIMIZERS, flag="--optimizer", key="optimizer",
                            label="Optimizer", help="optimizer")
    lr: float = option(1e-3, kind="float", flag="--lr", key="lr", label="LR (learning rate)", above=0.0,
                       help="learning rate")
    weight_decay: float = option(1e-4, kind="float", minimum=0.0, help="weight decay")
    momentum: float = option(0.9, kind="float", minimum=0.0, help="momentum (sgd, rmsprop)")
    schedule: str = option("poly", kind="choice", choices=SCHEDULES, flag="--schedule", key="schedule",
                           label="Schedule", help="learning-rate schedule")
    loss: str = option("ce_dice", kind="choice", choices=LOSSES, flag="--loss", key="loss", label="Loss",
                       help="loss function")
    class_weights: list[float] | str | None = None
    exclude_background: bool = False
    normalization: str = option("zscore", kind="choice", choices=NORMALIZATIONS, flag="--normalization",
                                key="normalization", label="Normalization", help="intensity normalization")
    augmentation: str | dict[str, Any] | None = option(
        AUTO, flag="--augmentation", key="augmentation", label="Augmentation",
        help=f"augmentation: auto (light for U-Net runs of fewer than {AUTO_LIGHT_STEPS} steps, else default), a preset "
             f"({', '.join(PRESETS)}), optionally with changes, e.g. 'default,elastic=0.2'; "
             "items alone start from none, e.g. 'rotate=0.2:-30:30,scale=0.2:0.7:1.4,blur=0.2' (see deepseg augment-preview)")
    foreground_oversampling: float = option(0.33, kind="float", minimum=0.0, maximum=1.0,
                                            help="fraction of patches centred on foreground")
    validation_fraction: float | None = option(
        None, kind="float", flag="--validation", key="validation", label="Validation fraction", minimum=0.0,
        below=1.0, auto="auto", auto_help="0.25; none when the annotation is scarce (under 4 patches' worth)",
        help="fraction of the data kept for validation (0 = none)")
    validation_every: int = option(1, kind="int", minimum=1, help="validate every N epochs")
    select: str = option("best", kind="choice", choices=SELECT, help="which network to keep")
    seed: int = option(2, kind="int", flag="--seed", key="seed", label="Seed", help="random seed")
    device: str = option("auto", flag="--device", key="device", label="Device",
                         help="where to compute: auto, cpu, cuda, cuda:N or mps")
    gpus: int | None = option(None, kind="int", flag="--gpus", minimum=1,
                              help="train with N processes, one GPU each (DistributedDataParallel; with device cpu: "
                                   "N CPU processes); batch is the global batch, split over them")
    precision: str = option("auto", kind="choice", choices=PRECISIONS, flag="--precision", key="precision",
                            label="Precision", help="arithmetic of the network: auto (bf16 where the CPU or GPU "
                            "does it natively, else fp32), bf16, fp16 (CUDA only) or fp32")
    resume: str | None = option(None, kind="folder", flag="--resume", key="resume", label="Resume from",
                                help="checkpoint file or model folder of an interrupted run to continue")
    init_from: str | None = option(None, kind="folder", flag="--init-from", key="init", label="Init from model",
                                   help="model folder to start from (transfer learning)")
    freeze_encoder: bool = option(False, kind="bool", flag="--freeze-encoder", key="freeze", label="Freeze encoder",
                                  help="with init-from: train only the decoder")
    num_threads: int | None = option(None, kind="int", minimum=1, help="CPU threads for torch")

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def validate(self) -> None:
        """Check every value; raise InputError naming the bad one and what is expected."""
        for declared in train_options():  # choices and ranges, as declared on the fields
            declared.check(getattr(self, declared.name))
        patch = [] if self.patch is None else [self.patch] if isinstance(self.patch, int) else list(self.patch)
        if self.patch is not None and (not patch or any(int(p) < 1 for p in patch)):
            raise InputError(f"patch={self.patch!r}: expected positive sizes, e.g. 128 or [32, 128, 128]")
        if self.class_names is not None and self.classes is not None:
            check_class_names(self.class_names, int(self.classes))
        if isinstance(self.class_weights, str) and self.class_weights != "auto":
            raise InputError(f"class_weights={self.class_weights!r}: expected 'auto' or a list of numbers")
        if self.augmentation is not None and not isinstance(self.augmentation, str):  # a mapping (older folders)
            self.augmentation = Augmentation.from_config(self.augmentation).to_text()  # the same, as text
        Augmentation.from_config(self.augmentation)  # raises on a bad preset or item
        if self.time_budget is not None:
            parse_duration(self.time_budget)  # raises naming the value
        if self.device not in ("auto", "cpu") and not str(self.device).startswith(("cuda", "mps")):
            raise InputError(f"device={self.device!r}: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")

    def patch_size(self, spatial_dims: int) -> tuple[int, ...] | None:
        """The patch as a tuple with ``spatial_dims`` entries (None: derive it from the data)."""
        if self.patch is None:
            return None
        if isinstance(self.patch, int):
            return (int(self.patch),) * spatial_dims
        patch = tuple(int(p) for p in self.patch)
        if len(patch) != spatial_dims:
            raise InputError(
                f"patch={list(patch)} has {len(patch)} sizes but network {self.network!r} is "
                f"{spatial_dims}D: give {spatial_dims} sizes or one int"
            )
        return patch

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """A configuration from a mapping (e.g. JSON); unknown keys raise InputError with the close match."""
        data = _fold_amp(data)
        unknown = [key for key in data if key not in cls.field_names()]
        if unknown:
            raise unknown_option_error(unknown, cls.field_names(), "training option")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        """Read a JSON configuration file (the format ``save`` writes)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"configuration file {str(path)!r} does not exist")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"configuration file {str(path)!r} is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise InputError(f"configuration file {str(path)!r} must hold a JSON object")
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


# TrainConfig(epoch=3) or .replace(epoch=3): an InputError naming 'epochs', not a TypeError.
TrainConfig.__init__ = checked_keywords(TrainConfig.__init__, what="training option")  # type: ignore[method-assign]


def _fold_amp(data: dict[str, Any]) -> dict[str, Any]:
    """Configurations written before ``precision`` existed have ``amp`` (bool): false means fp32."""
    if "amp" not in data:
        return data
    amp = data["amp"]
    if not isinstance(amp, bool):
        raise InputError(f"amp={amp!r}: expected true or false (or use precision: {', '.join(PRECISIONS)})")
    data = {k: v for k, v in data.items() if k != "amp"}
    if not amp and data.get("precision", "auto") == "auto":
        data["precision"] = "fp32"
    return data


def train_options() -> list[Declared]:
    """The declared training options (CLI flags, Fiji keys and labels, help), in field order."""
    return _TRAIN_OPTIONS


_TRAIN_OPTIONS = declared_options(TrainConfig)


def check_class_names(names: list[str], classes: int, counted: bool = False) -> None:
    """Raise InputError unless there is one name per class; ``counted``: ``classes`` came from the labels."""
    if len(names) == classes:
        return
    source = f"largest label {classes - 1} + 1" if counted else f"classes={classes}"
    raise InputError(
        f"{len(names)} class names given ({', '.join(names)}) but there are {classes} classes ({source}): "
        f"give {classes} names, comma-separated, background first"
        + ("" if counted else ", or leave out classes to count them from the labels")
    )
