"""Training configuration: one dataclass, validated, saved as JSON beside the model."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .augment import Augmentation
from .errors import InputError
from .losses import LOSSES
from .normalization import METHODS as NORMALIZATIONS

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("poly", "piecewise", "cosine", "constant")
SELECT = ("best", "last")


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
    """

    images: str | None = None
    labels: str | None = None
    masks: str | None = None
    axes: str | None = None
    out: str = "model"
    network: str = "unet2d"
    network_options: dict[str, Any] = field(default_factory=dict)
    patch: int | list[int] | None = None
    classes: int | None = None
    class_names: list[str] | None = None
    ignore_label: int | None = None
    epochs: int = 50
    batch: int | None = None
    steps_per_epoch: int | None = None
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "poly"
    loss: str = "ce_dice"
    class_weights: list[float] | str | None = None
    exclude_background: bool = False
    normalization: str = "zscore"
    augmentation: dict[str, Any] = field(default_factory=dict)
    foreground_oversampling: float = 0.33
    validation_fraction: float = 0.25
    validation_every: int = 1
    select: str = "best"
    seed: int = 2
    device: str = "auto"
    amp: bool = True
    resume: str | None = None
    init_from: str | None = None
    freeze_encoder: bool = False
    num_threads: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def validate(self) -> None:
        """Check every value; raise InputError naming the bad one and what is expected."""
        def choice(name: str, allowed: tuple[str, ...]) -> None:
            if getattr(self, name) not in allowed:
                raise InputError(f"{name}={getattr(self, name)!r}: expected one of {allowed}")

        choice("optimizer", OPTIMIZERS)
        choice("schedule", SCHEDULES)
        choice("loss", LOSSES)
        choice("normalization", NORMALIZATIONS)
        choice("select", SELECT)
        for name in ("epochs", "batch"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise InputError(f"{name}={getattr(self, name)!r}: expected an integer >= 1")
        if self.steps_per_epoch is not None and int(self.steps_per_epoch) < 1:
            raise InputError(f"steps_per_epoch={self.steps_per_epoch!r}: expected >= 1 or None")
        if not float(self.lr) > 0:
            raise InputError(f"lr={self.lr!r}: expected a positive learning rate")
        if not 0.0 <= float(self.validation_fraction) < 1.0:
            raise InputError(f"validation_fraction={self.validation_fraction!r}: expected 0 <= f < 1")
        if not 0.0 <= float(self.foreground_oversampling) <= 1.0:
            raise InputError(f"foreground_oversampling={self.foreground_oversampling!r}: expected 0..1")
        patch = [] if self.patch is None else [self.patch] if isinstance(self.patch, int) else list(self.patch)
        if self.patch is not None and (not patch or any(int(p) < 1 for p in patch)):
            raise InputError(f"patch={self.patch!r}: expected positive sizes, e.g. 128 or [32, 128, 128]")
        if self.classes is not None and int(self.classes) < 2:
            raise InputError(f"classes={self.classes!r}: expected >= 2 (background counts as a class)")
        if self.class_names is not None and self.classes is not None and len(self.class_names) != self.classes:
            raise InputError(f"{len(self.class_names)} class_names given for classes={self.classes}")
        if isinstance(self.class_weights, str) and self.class_weights != "auto":
            raise InputError(f"class_weights={self.class_weights!r}: expected 'auto' or a list of numbers")
        Augmentation(**self.augmentation)  # raises on bad keys or values
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
        unknown = sorted(set(data) - set(cls.field_names()))
        if unknown:
            raise InputError(f"unknown training option(s) {unknown}; valid options: {cls.field_names()}")
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
