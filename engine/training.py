"""Training: a short, explicit epoch loop with checkpoints, resume, validation and history.

``train(config)`` prepares a run (:func:`prepare`: data, network, normalization, sampler, loss,
optimizer, resume), then repeats for ``epochs`` epochs (or a time budget, :mod:`engine.budget`):
``steps_per_epoch`` random-patch training steps (:func:`train_epoch`), validation on fixed patches
(:func:`evaluate_batches`) and :func:`save_epoch`, which updates the model folder ``config.out``, each
file atomically:

* the weights and ``config.json`` (:func:`engine.model_files.save_model`), every epoch: the weights
  after the last epoch, and the kept weights ("best" on validation, or "last" with ``select="last"``),
  which ``config.json`` names and checksums;
* ``history.csv``, ``training_curves.png`` and ``train_config.json`` (the resolved configuration);
* ``checkpoint.pt``: weights, optimizer, epoch, history and every RNG state (resume continues exactly).

Nothing is written before the first epoch is saved, and ``out`` must be a new or empty folder or a
deepseg model folder (:func:`check_output_folder`), so training never replaces a user's files.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .arrays import centre_crop
from .augment import AUTO, AUTO_LIGHT_STEPS, Augmentation, auto_preset, in_plane_only
from .axes import DIM_TO_LETTER
from . import budget as budgets
from . import ddp
from .budget import Budget, epoch_limit, format_duration, parse_duration
from .config import TrainConfig, check_class_names
from .data import (PatchSampler, Sample, annotated_voxels, auto_patch, check_classes, label_slabs, load_samples,
                   samples_from_arrays, split_validation)
from .errors import InputError, ModelFileError
from .fileutil import atomic_path
from .losses import IGNORE_INDEX, SegmentationLoss, class_weights_from_counts
from .metrics import Report
from .model_files import FORMAT, load_model, model_config, resolve_device, save_model, versions
from .networks import SegmentationNetwork, build
from .normalization import Normalization
from .precision import (Precision, as_precision, channels_last, configure_device, guard_cpu_bf16, optimizer_step,
                        resolve_precision)
from .prefetch import batch_stream
from .progress import Progress, ProgressCallback, report

CHECKPOINT = "checkpoint.pt"
#: marks a folder that training created (or found empty) while its first epoch is being saved
IN_PROGRESS = ".deepseg-training"
_MAX_STEPS = 250
VALIDATION_FRACTION = 0.25  # held out by default (DeepMIB's fraction)
SCARCE_PATCHES = 4  # fewer annotated voxels than this many patches: no validation (validation_fraction)
_VALIDATION_BYTES = 256 << 20

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class TrainResult:
    """What a finished training run produced."""

    model_dir: Path
    history: list[dict[str, Any]]
    final_metrics: dict[str, Any]
    network: SegmentationNetwork = field(repr=False)


# ------------------------------------------------------------------------------------------ pieces
def lr_factor(schedule: str, step: int, total_steps: int | None, epoch: int, elapsed_fraction: float = 0.0) -> float:
    """Learning-rate multiplier at global ``step`` (0-based) of ``total_steps`` (None: no step limit), or at
    ``elapsed_fraction`` of a time budget, whichever is further on.

    poly: (1 - progress)^0.9 (nnU-Net); cosine: half cosine to 0; piecewise: x0.9 every 50 epochs
    (DeepMIB); constant: 1.
    """
    progress = min(max(step / max(total_steps, 1) if total_steps else 0.0, elapsed_fraction), 1.0)
    if schedule == "poly":
        return (1.0 - progress) ** 0.9
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "piecewise":
        return 0.9 ** (epoch // 50)
    return 1.0


def make_optimizer(config: TrainConfig, params: Sequence[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer named by ``config.optimizer`` with its learning rate, weight decay and momentum."""
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=config.lr, weight_decay=config.weight_decay, momentum=config.momentum)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0,
                           weight_decay=config.weight_decay)


def batch_confusion(logits: torch.Tensor, target: torch.Tensor, classes: int) -> np.ndarray:
    """Confusion matrix (as :func:`engine.metrics.confusion_matrix`) of the annotated voxels of a batch, counted on
    the tensors' device: only the K x K counts are copied to the host."""
    truth = target.detach().reshape(-1).long()
    annotated = truth != IGNORE_INDEX
    index = truth[annotated] * classes + logits.detach().argmax(1).reshape(-1)[annotated]
    counts = torch.bincount(index, minlength=classes * classes)
    if counts.numel() != classes * classes:
        raise InputError(f"labels above {classes - 1} in a batch of {classes} classes")
    return counts.reshape(classes, classes).cpu().numpy()


def epoch_scores(confusion: np.ndarray, prefix: str = "") -> dict[str, float]:
    """Global accuracy and mean foreground Dice (:class:`engine.metrics.Report`) for the history."""
    result = Report(confusion, tuple(str(k) for k in range(len(confusion))))
    return {f"{prefix}accuracy": result.global_accuracy, f"{prefix}dice": result.mean_foreground_dice}


class Batches:
    """Draws normalized, augmented minibatches as torch tensors from a :class:`PatchSampler`.

    The sampler's crops may be larger than ``patch`` (context for rotations, :meth:`Augmentation.crop`);
    augmentation (or, without it, a centre crop) gives ``patch``. Labels are then centre-cropped to
    ``output_shape`` (smaller than the patch for valid padding).
    """

    def __init__(self, sampler: PatchSampler, normalization: Normalization, augmentation: Augmentation,
                 output_shape: Sequence[int], *, patch: Sequence[int] | None = None, in_plane: bool = False) -> None:
        self.sampler, self.augmentation = sampler, augmentation
        self.output_shape = tuple(output_shape)
        # the network's input patch, centred in the sampler's (possibly larger) crop; in_plane: anisotropic 3D
        self.patch, self.in_plane = tuple(patch or sampler.patch), in_plane
        self.normalization = normalization

    @property
    def normalization(self) -> Normalization:
        return self._normalization

    @normalization.setter
    def normalization(self, value: Normalization) -> None:
        # Per-image statistics come from the whole image, as at prediction, never from the patch.
        self._normalization = value
        self._per_sample = [value.image_statistics(s.image) for s in self.sampler.samples]

    def draw(self, batch: int, rng: np.random.Generator, *, augment: bool = True) -> Batch:
        """``batch`` patches and labels; augmented as a whole batch (:meth:`Augmentation.batch`)."""
        images, labels = [], []
        for _ in range(batch):
            index = self.sampler.pick(rng)
            image, label = self.sampler.sample_from(index, rng)
            images.append(self._per_sample[index].apply(image))
            labels.append(label)
        x, y = torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels).astype(np.int64))
        if augment:
            x, y = self.augmentation.batch(x, y, rng, shape=self.patch, in_plane=self.in_plane)
        else:
            x, y = centre_crop(x, self.patch), centre_crop(y, self.patch)
        return x.contiguous(), centre_crop(y, self.output_shape).contiguous()


# ------------------------------------------------------------------------------------ output folder
def is_model_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a deepseg ``config.json`` (``"format": "deepseg-model"``)."""
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and cfg.get("format") == FORMAT


def check_output_folder(out: Path) -> None:
    """Refuse ``out`` unless training may write there: a new or empty folder, a deepseg model folder,
    or a folder whose first epoch was being saved when a run was interrupted."""
    if out.exists() and not out.is_dir():
        raise InputError(f"output folder {str(out)!r} is a file: expected a new or empty folder or a model folder")
    if not out.is_dir() or not any(out.iterdir()) or is_model_folder(out) or (out / IN_PROGRESS).is_file():
        return
    raise InputError(
        f"output folder {str(out)!r} holds other files and is not a deepseg model folder (no config.json "
        f"with \"format\": \"{FORMAT}\"): choose a new or empty folder, deepseg never replaces files it did not write"
    )


# ------------------------------------------------------------------------------------------ prepare
@dataclass
class Run:
    """Everything one training run works with; built by :func:`prepare`, advanced by the epoch loop."""

    config: TrainConfig
    network: SegmentationNetwork
    optimizer: torch.optim.Optimizer
    loss_fn: SegmentationLoss
    batches: Batches
    rng: np.random.Generator
    device: torch.device
    classes: int
    steps: int
    validation: list[Batch] = field(default_factory=list)
    model_config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    start_epoch: int = 0
    budget: Budget = field(default_factory=lambda: Budget(None, budgets.now()))
    _precision: Precision | None = field(default=None, repr=False)
    _scaler: Any = field(default=None, repr=False)
    module: torch.nn.Module | None = field(default=None, repr=False)  # DistributedDataParallel(network) (engine.ddp)

    @property
    def out(self) -> Path:
        return Path(self.config.out)

    @property
    def total_steps(self) -> int | None:
        """Steps of all epochs; None when only a time budget limits the run."""
        return None if self.epoch_limit is None else self.steps * self.epoch_limit

    @property
    def epoch_limit(self) -> int | None:
        """The largest number of epochs (:func:`engine.budget.epoch_limit`); None: only the time budget."""
        return epoch_limit(self.config.epochs, self.config.time_budget)

    @property
    def precision(self) -> Precision:
        """The forward pass's precision (:func:`engine.precision.resolve_precision` of ``config.precision``)."""
        if self._precision is None or self._precision.device_type != self.device.type:
            self._precision = resolve_precision(self.config.precision, self.device)
            self._scaler = self._precision.grad_scaler()
        return self._precision

    @property
    def use_amp(self) -> Precision:
        """:attr:`precision`, which is truthy when autocast is on (this was a bool before ``precision``)."""
        return self.precision


def resolve_config(config: TrainConfig | dict[str, Any] | None, overrides: dict[str, Any]) -> TrainConfig:
    """A validated :class:`TrainConfig` from a config (or dict, or nothing) plus keyword overrides."""
    if isinstance(config, TrainConfig):
        if not overrides:
            config.validate()
            return config
        config = config.to_dict()
    return TrainConfig.from_dict({**(config or {}), **overrides})


def prepare(config: TrainConfig, images: Any = None, labels: Any = None, masks: Any = None) -> Run:
    """Check the output folder, load the data, build network, sampler, loss and optimizer; resume if asked.

    Writes nothing. The random generators are seeded and used in a fixed order, so a run and its
    resumed continuation draw the same numbers.
    """
    check_output_folder(Path(config.out))
    if config.num_threads:
        torch.set_num_threads(int(config.num_threads))
    device = resolve_device(config.device)
    samples = _load_training_samples(config, images, labels, masks)
    classes = check_classes(samples, config.classes)
    if config.class_names:
        check_class_names(config.class_names, classes, counted=config.classes is None)
    config, plan = resolve_network(config, samples, classes)
    torch.manual_seed(config.seed)  # before building: weight initialisation must be reproducible
    random.seed(config.seed)
    network = build(config.network, in_channels=_channels(samples), classes=classes, **config.network_options)
    patch = training_patch(config, network, samples)
    default_batch = (4 if network.spatial_dims == 2 else 2) * ddp.world_size()  # per process, times the processes
    config = config.replace(patch=list(patch), batch=config.batch or default_batch)
    config = config.replace(validation_fraction=validation_fraction(config, samples, patch))
    train_samples, val_samples = split_validation(samples, config.validation_fraction, config.seed)
    steps = _steps_per_epoch(config, train_samples, patch)
    config = resolve_augmentation(config, plan, steps)
    batches = _batches(config, network, patch, train_samples)
    loss_fn = SegmentationLoss(config.loss, classes=classes, weights=_class_weights(config, classes, train_samples),
                               exclude_background=config.exclude_background).to(device)
    rng = np.random.default_rng(config.seed)
    transfer = _init_from(network, config.init_from, config.freeze_encoder) if config.init_from else {}
    channels_last(network.to(device))  # the fast convolution layout; before the optimizer sees the parameters
    optimizer = make_optimizer(config, [p for p in network.parameters() if p.requires_grad])
    run = Run(config, network, optimizer, loss_fn, batches, rng, device, classes, steps=steps)
    if config.resume:
        restore_checkpoint(run, config.resume)
    run.validation = _validation_batches(batches, val_samples, patch, config.batch, config.seed,
                                         int(getattr(network, "z_context", 1)), config.foreground_oversampling)
    run.model_config = _model_config(run, samples, val_samples, transfer)
    if plan is not None:
        run.model_config["plan"] = plan.to_dict()  # config.json: why this network, patch and batch
    return run


def resolve_network(config: TrainConfig, samples: Sequence[Sample], classes: int) -> tuple[TrainConfig, Any]:
    """``network="auto"``: network, options, patch and batch from :func:`engine.plan.make_plan` for these data on
    this device (options, patch and batch given by the user win). A resumed run takes its checkpoint's choices;
    with several processes, rank 0 plans and the others follow. Returns the config and the plan (or None)."""
    if config.network != "auto":
        return config, None
    if config.resume:
        saved = load_checkpoint(config.resume)["config"]
        return config.replace(network=saved["network"], network_options=saved["network_options"],
                              patch=config.patch or saved["patch"]), None
    from .plan import make_plan

    budget = None if config.time_budget is None else parse_duration(config.time_budget)
    plan = ddp.on_main_then_shared(lambda: make_plan(samples, device=config.device, classes=classes,
                                                     batch=config.batch and max(1, config.batch // ddp.world_size()),
                                                     precision=config.precision, time_budget=budget,
                                                     step_seconds=config.step_time))
    return config.replace(network=plan.network, network_options={**plan.network_options, **config.network_options},
                          patch=config.patch or list(plan.patch),
                          batch=config.batch or plan.batch * ddp.world_size()), plan


def validation_fraction(config: TrainConfig, samples: Sequence[Sample], patch: Sequence[int]) -> float:
    """The fraction held out for validation: the configured one, else :data:`VALIDATION_FRACTION` unless the
    annotation is scarce (fewer annotated voxels than :data:`SCARCE_PATCHES` training patches: the held-out
    part would not hold one patch's worth), then none: every annotated voxel trains, the last network is kept.
    Measured on sparse nuclei annotation (README): a validation block of it both took training data and chose
    early, noisy epochs."""
    if config.validation_fraction is not None:
        return float(config.validation_fraction)
    enough = SCARCE_PATCHES * float(np.prod(patch))
    annotated = annotated_voxels(samples, enough=enough)  # the full count when it stays below enough
    if annotated < enough:
        warnings.warn(f"only {annotated} annotated voxels (fewer than {SCARCE_PATCHES} patches of "
                      f"{' x '.join(map(str, patch))}): all of them train, none is held out for validation, the last "
                      f"network is kept (set validation to hold some out)", UserWarning, stacklevel=3)
        return 0.0
    return VALIDATION_FRACTION


def resolve_augmentation(config: TrainConfig, plan: Any, steps_per_epoch: int) -> TrainConfig:
    """``augmentation="auto"``: the preset :func:`engine.augment.auto_preset` gives for the network and the
    steps this run is expected to take (epochs x steps per epoch, or the time budget over the plan's step
    estimate, whichever is fewer). A resumed run keeps its checkpoint's augmentation. Other values stay."""
    if not (isinstance(config.augmentation, str) and config.augmentation.strip() == AUTO):
        return config
    if config.resume:
        saved = load_checkpoint(config.resume)["config"].get("augmentation")
        if saved is not None and saved != AUTO:
            return config.replace(augmentation=saved)
    steps = expected_steps(config, plan, steps_per_epoch)
    preset = auto_preset(steps, config.network)
    if plan is not None and steps is not None:  # config.json's plan says why
        plan.reasons.append(f"augmentation auto -> {preset}: about {steps:.0f} steps expected "
                            f"(light: U-Nets below {AUTO_LIGHT_STEPS})")
    return config.replace(augmentation=preset)


def expected_steps(config: TrainConfig, plan: Any, steps_per_epoch: int) -> float | None:
    """About how many steps the run takes: epochs x steps, or the time budget's training share over the
    plan's estimated step (:data:`engine.plan.STEP_SECONDS` without a plan), whichever is fewer."""
    from .plan import BUDGET_TRAINING_SHARE, STEP_SECONDS

    counts = []
    limit = epoch_limit(config.epochs, config.time_budget)
    if limit is not None:
        counts.append(float(limit * steps_per_epoch))
    if config.time_budget is not None:
        step = plan.step_seconds if plan is not None and plan.step_seconds > 0 else STEP_SECONDS
        counts.append(parse_duration(config.time_budget) * BUDGET_TRAINING_SHARE / step)
    return min(counts) if counts else None


def _load_training_samples(config: TrainConfig, images: Any, labels: Any, masks: Any) -> list[Sample]:
    if isinstance(images, (str, Path)):
        return load_samples(images, labels, masks, axes=config.axes, ignore_label=config.ignore_label)
    if images is not None:
        if labels is None:
            raise InputError("images were given as arrays but labels were not")
        return samples_from_arrays(_as_list(images), _as_list(labels), None if masks is None else _as_list(masks),
                                   axes=config.axes, ignore_label=config.ignore_label)
    if config.images is None:
        raise InputError("no training images: set images (a file, a folder, or a DeepMIB training folder)")
    return load_samples(config.images, config.labels, config.masks, axes=config.axes,
                        ignore_label=config.ignore_label)


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _channels(samples: Sequence[Sample]) -> int:
    channels = {s.image.shape[0] for s in samples}
    if len(channels) != 1:
        raise InputError(f"training images have different channel counts {sorted(channels)}: {[s.name for s in samples]}")
    return channels.pop()


def training_patch(config: TrainConfig, network: SegmentationNetwork, samples: Sequence[Sample]) -> tuple[int, ...]:
    """The training patch: ``config.patch`` (or one derived from the data) that the network accepts.

    A configured patch larger than every image along an axis is clamped to the largest image there
    (a bigger patch is only padding, and slow), with a warning; then rounded up to an accepted shape.
    """
    dims = network.spatial_dims
    wanted = config.patch_size(dims)
    if wanted is None:
        return tuple(network.valid_input_shape(auto_patch(samples, dims)))
    largest = [int(n) for n in np.max([s.spatial_shape[-dims:] for s in samples], axis=0)]
    patch = tuple(network.valid_input_shape([min(w, n) for w, n in zip(wanted, largest)]))
    if patch != tuple(network.valid_input_shape(wanted)):
        warnings.warn(f"patch {list(wanted)} is larger than the training images (largest {largest}): "
                      f"using patch {list(patch)}", UserWarning, stacklevel=4)
    return patch


def _batches(config: TrainConfig, network: SegmentationNetwork, patch: tuple[int, ...],
             train_samples: list[Sample]) -> Batches:
    normalization = Normalization(config.normalization).fit(s.image for s in train_samples)
    augmentation = Augmentation.from_config(config.augmentation)
    in_plane = in_plane_only([train_samples[0].spacing.get(d, 1.0) for d in train_samples[0].dims[-3:]], patch)
    sampler = PatchSampler(train_samples, augmentation.crop(patch, in_plane), foreground=config.foreground_oversampling,
                           z_context=int(getattr(network, "z_context", 1)), seed=config.seed)
    return Batches(sampler, normalization, augmentation, network.output_shape(patch), patch=patch, in_plane=in_plane)


def class_counts(samples: Sequence[Sample], classes: int) -> np.ndarray:
    """Annotated voxels of each class over ``samples`` (unlabelled and masked-out voxels not counted)."""
    counts = np.zeros(classes, dtype=np.int64)
    for s in samples:
        for block in label_slabs(s.labels):  # slab by slab: labels may be read lazily from disk
            counts += np.bincount(block[block >= 0].ravel(), minlength=classes)[:classes]
    return counts


def _class_weights(config: TrainConfig, classes: int, train_samples: list[Sample]) -> list[float] | None:
    if config.class_weights == "auto":
        return class_weights_from_counts(class_counts(train_samples, classes))
    return config.class_weights


def _steps_per_epoch(config: TrainConfig, train_samples: list[Sample], patch: tuple[int, ...]) -> int:
    if config.steps_per_epoch:
        return int(config.steps_per_epoch)
    voxels = sum(int(np.prod(s.spatial_shape)) for s in train_samples)
    return int(np.clip(math.ceil(voxels / (np.prod(patch) * config.batch)), 8, _MAX_STEPS))


def _validation_batches(batches: Batches, samples: list[Sample], patch: Sequence[int], batch: int,
                        seed: int, z_context: int, foreground: float) -> list[Batch]:
    """A fixed set of validation patches (same every epoch), bounded in memory."""
    if not samples:
        return []
    sampler = PatchSampler(samples, patch, foreground=foreground, z_context=z_context, seed=seed + 1)
    voxels = sum(int(np.prod(s.spatial_shape)) for s in samples)
    patch_voxels = int(np.prod(patch))
    channels = samples[0].image.shape[0] * z_context
    count = int(np.clip(2 * math.ceil(voxels / patch_voxels), 8, 64))
    count = max(1, min(count, _VALIDATION_BYTES // max(1, patch_voxels * channels * 4)))
    val = Batches(sampler, batches.normalization, batches.augmentation, batches.output_shape)
    rng = np.random.default_rng(seed + 2)
    return [val.draw(min(batch, count - start), rng, augment=False) for start in range(0, count, batch)]


def _init_from(network: SegmentationNetwork, source: str, freeze_encoder: bool) -> dict[str, Any]:
    """Transfer learning: copy every weight whose name and shape match from model folder ``source``."""
    donor = load_model(source, device="cpu")
    own = network.state_dict()
    copied = {k: v for k, v in donor.network.state_dict().items() if k in own and own[k].shape == v.shape}
    if not copied:
        raise InputError(f"init_from={source!r}: no weights of that model fit network {network.name!r}")
    network.load_state_dict(copied, strict=False)
    frozen = 0
    if freeze_encoder:
        for name, param in network.named_parameters():
            if name.startswith("encoder"):
                param.requires_grad_(False)
                frozen += 1
        if frozen == 0:
            raise InputError(f"freeze_encoder: network {network.name!r} has no parameters named 'encoder*'")
    return {"init_from": str(source), "copied_tensors": len(copied), "skipped_tensors": len(own) - len(copied),
            "frozen_tensors": frozen}


def _model_config(run: Run, samples: list[Sample], val_samples: list[Sample], transfer: dict[str, Any]) -> dict[str, Any]:
    """The ``config.json`` content; ``save_epoch`` adds the epoch's results to its ``training`` part."""
    provenance = {
        "data": [s.name for s in samples],
        "validation": [s.name for s in val_samples],
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": run.config.to_dict(),
        "class_weights": None if run.loss_fn.weights is None else run.loss_fn.weights.tolist(),
        **transfer,
    }
    return model_config(run.network, patch=run.config.patch, normalization=run.batches.normalization,
                        axes="".join(DIM_TO_LETTER[d] for d in samples[0].dims), class_names=run.config.class_names,
                        spacing=samples[0].spacing, unit=None, training=provenance)


# --------------------------------------------------------------------------------------- checkpoint
def save_checkpoint(run: Run, epochs_done: int) -> None:
    """Write ``checkpoint.pt``: everything :func:`restore_checkpoint` needs to continue exactly."""
    payload = {
        "format": "deepseg-checkpoint", "epoch": epochs_done, "model": run.network.state_dict(),
        "optimizer": run.optimizer.state_dict(), "rng": _rng_state(run.rng, run.device), "history": run.history,
        "best": run.best, "config": run.config.to_dict(), "normalization": run.batches.normalization.to_dict(),
    }
    with atomic_path(run.out / CHECKPOINT) as tmp:
        torch.save(payload, tmp)


def restore_checkpoint(run: Run, source: str | Path) -> None:
    """Continue ``run`` from a checkpoint written by :func:`save_checkpoint` (field by field, its inverse)."""
    state = load_checkpoint(source)
    current = run.config.to_dict()
    for key in ("network", "network_options", "patch", "normalization"):
        if state["config"].get(key) != current.get(key):
            raise InputError(f"cannot resume: checkpoint has {key}={state['config'].get(key)!r} but this run has "
                             f"{key}={current.get(key)!r}")
    run.network.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.batches.normalization = Normalization.from_dict(state["normalization"])
    _restore_rng(run.rng, state["rng"], run.device)
    run.start_epoch, run.history, run.best = int(state["epoch"]), list(state["history"]), state.get("best")
    if run.epoch_limit is not None and run.start_epoch >= run.epoch_limit:
        raise InputError(f"checkpoint already finished {run.start_epoch} epochs; set epochs > {run.start_epoch} to continue")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint safely (``weights_only=True``: no code is unpickled)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for damaged or unsafe files
        raise ModelFileError(f"checkpoint {str(path)!r} cannot be read safely: {err}") from None
    if not isinstance(payload, dict) or payload.get("format") != "deepseg-checkpoint":
        raise ModelFileError(f"{str(path)!r} is not a deepseg training checkpoint")
    return payload


def _rng_state(rng: np.random.Generator, device: torch.device) -> dict[str, Any]:
    """Every RNG state; for CUDA only the training device's (a resume may see fewer GPUs)."""
    return {
        "numpy": rng.bit_generator.state,
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "python": random.getstate(),
    }


def _restore_rng(rng: np.random.Generator, state: dict[str, Any], device: torch.device) -> None:
    """Inverse of :func:`_rng_state`; the CUDA state goes onto ``device`` when training on CUDA. Older checkpoints
    hold a list of states, one per GPU then visible: the one of ``device``'s index where it exists, else the first."""
    rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if isinstance(cuda, (list, tuple)):
        index = device.index or 0
        cuda = cuda[index] if index < len(cuda) else (cuda[0] if cuda else None)
    if cuda is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda, device)
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))


# ------------------------------------------------------------------------------------ train / validate
def train_step(run: Run, x: torch.Tensor, y: torch.Tensor, where: str = "in a training step") -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch; returns the loss and the logits (both detached).

    ``where`` ("at epoch 3 step 7") goes into the error raised when the loss is not finite."""
    run.optimizer.zero_grad(set_to_none=True)
    with run.precision.autocast():
        logits = (run.network if run.module is None else run.module)(x)
    loss = run.loss_fn(logits.float(), y)
    if not torch.isfinite(loss):
        raise InputError(f"training diverged {where} (loss {float(loss)}); lower the learning rate (lr={run.config.lr})")
    optimizer_step(loss, run.optimizer, run.network.parameters(), 12.0, run._scaler)
    return loss.detach(), logits.detach()


def train_epoch(run: Run, epoch: int, progress: ProgressCallback | None) -> dict[str, Any]:
    """``run.steps`` training steps of epoch ``epoch`` (0-based); returns its history row."""
    run.network.train()
    began = time.perf_counter()
    confusion = np.zeros((run.classes, run.classes), dtype=np.int64)
    losses: list[float] = []
    lr = run.config.lr
    configure_device(run.device)
    if run.precision == Precision("bf16", "cpu"):
        guard_cpu_bf16(run.network)
    # The epoch's batches are drawn in a background thread (engine.prefetch), in order, with run.rng.
    with batch_stream(lambda: run.batches.draw(run.config.batch, run.rng), run.steps, run.device) as stream:
        for step, (x, y) in enumerate(stream):
            if not run.budget.step_allowed():  # a time budget: stop where one more step would not fit
                break
            global_step = epoch * run.steps + step
            lr = run.config.lr * lr_factor(run.config.schedule, global_step, run.total_steps, epoch,
                                           run.budget.fraction())
            for group in run.optimizer.param_groups:
                group["lr"] = lr
            x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
            loss, logits = train_step(run, x, y, where=f"at epoch {epoch + 1} step {step + 1}")
            losses.append(float(loss))
            confusion += batch_confusion(logits, y, run.classes)
            report(progress, step_progress(run, global_step, epoch, float(np.mean(losses))))
    return {"epoch": epoch + 1, "loss": float(np.mean(losses)), **epoch_scores(confusion), "lr": lr,
            "seconds": round(time.perf_counter() - began, 3)}


def validation_due(run: Run, epoch: int, last: bool | None = None) -> bool:
    """Whether epoch ``epoch`` (0-based) is validated: the last epoch always (``last``: None = the epoch limit
    says); others every ``validation_every`` epochs and, with a time budget, only while validation stays
    within its share of the time (:meth:`engine.budget.Budget.validation_affordable`)."""
    if not run.validation:
        return False
    if last is None:
        last = run.epoch_limit is not None and epoch + 1 >= run.epoch_limit
    return last or ((epoch + 1) % run.config.validation_every == 0 and run.budget.validation_affordable())


@torch.no_grad()
def evaluate_batches(network: SegmentationNetwork, batches: list[Batch], loss_fn: SegmentationLoss,
                     classes: int, device: torch.device, use_amp: bool | Precision) -> dict[str, float]:
    """Validation loss, accuracy and foreground Dice over fixed patches."""
    network.eval()
    confusion = np.zeros((classes, classes), dtype=np.int64)
    total, count = 0.0, 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        with as_precision(use_amp, device).autocast():  # use_amp: a Precision, or True for "auto"
            logits = network(x)
        total += float(loss_fn(logits.float(), y)) * len(x)
        count += len(x)
        confusion += batch_confusion(logits, y, classes)
    network.train()
    return {"val_loss": total / max(count, 1), **epoch_scores(confusion, prefix="val_")}


# ------------------------------------------------------------------------------------------- save
def record_epoch(run: Run, row: dict[str, Any]) -> bool:
    """Append ``row`` to the history; returns whether this epoch's network replaces the kept one."""
    run.history.append(row)
    improved = _is_better(row, run.best, bool(run.validation))
    if improved:
        run.best = {k: row[k] for k in ("epoch", "val_dice", "val_loss", "dice", "loss") if k in row}
    return improved


def save_epoch(run: Run, improved: bool) -> None:
    """Update the model folder after an epoch: weights and ``config.json``, history, configuration, checkpoint."""
    if not ddp.is_main():  # distributed: rank 0 writes the folder
        return
    row = run.history[-1]
    run.model_config["training"].update({"epochs": row["epoch"], "steps_per_epoch": run.steps, "final": row,
                                         "best": run.best, "selected": run.config.select, "versions": versions()})
    # A new folder appears whole (save_model assembles it aside); in an empty folder that already
    # exists, a marker tells check_output_folder that the files are ours until config.json is there.
    marker = run.out / IN_PROGRESS
    if run.out.is_dir() and not is_model_folder(run.out):
        marker.touch()
    save_model(run.network, run.out, config=run.model_config, which="last")
    if improved or run.config.select == "last":
        save_model(run.network, run.out, config=run.model_config, which="best")
    marker.unlink(missing_ok=True)
    _write_history(run.out, run.history)
    with atomic_path(run.out / "train_config.json") as tmp:
        tmp.write_text(json.dumps(run.config.to_dict(), indent=2) + "\n")
    save_checkpoint(run, row["epoch"])


def _is_better(row: dict[str, Any], best: dict[str, Any] | None, validating: bool) -> bool:
    """Whether this epoch's network should replace the kept one."""
    if validating and "val_loss" not in row:
        return best is None  # an epoch without validation never replaces a validated network
    if best is None:
        return True
    if "val_dice" in row and np.isfinite(row["val_dice"]) and best.get("val_dice") is not None:
        if row["val_dice"] != best["val_dice"]:
            return row["val_dice"] > best["val_dice"]
        return row.get("val_loss", math.inf) < best.get("val_loss", math.inf)
    if "val_loss" in row:
        return row["val_loss"] < best.get("val_loss", math.inf)
    return True  # no validation: the latest network is the best we know


def _write_history(directory: Path, history: list[dict[str, Any]]) -> None:
    if not history:
        return
    columns = list(dict.fromkeys(k for row in history for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    with atomic_path(directory / "history.csv") as tmp:
        tmp.write_text(buffer.getvalue())
    try:
        from .plots import plot_history

        plot_history(history, directory / "training_curves.png")
    except ImportError:  # plots are a convenience; never fail training over them
        pass


# ------------------------------------------------------------------------------------------- train
def train(
    config: TrainConfig | dict[str, Any] | None = None,
    *,
    images: Any = None,
    labels: Any = None,
    masks: Any = None,
    progress: ProgressCallback | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train a segmentation network; see :class:`TrainConfig` for every option.

    ``images``/``labels``/``masks`` may be given as in-memory arrays (a DataArray, or numpy with
    ``axes`` in the config; or lists of them) instead of the paths in ``config``. ``progress``
    receives a :class:`Progress` after every step ("train"), validation ("validate") and saved epoch
    ("epoch": the history row plus ``eta`` in seconds); returning ``False`` cancels (the last finished
    epoch stays saved and can be resumed). ``config.out`` must be a new or empty folder or a deepseg
    model folder (InputError otherwise, before anything is written).

    ``time_budget`` (``--time 10m``) trains for that wall-clock time from this call on
    (:mod:`engine.budget`): the learning-rate schedule follows the elapsed training time, validation
    is scheduled to take at most about 10 % of it and always closes the run, the last step ends within
    the budget (one step over at most). With ``epochs`` as well, whichever ends first. Every history row
    records ``steps`` and ``elapsed`` (seconds since the start, resumed runs included).
    """
    started = budgets.now()  # a time budget counts from here: loading the data is part of the time
    config = resolve_config(config, overrides)
    if ddp.wants_launch(config):  # gpus=N: N processes (engine.ddp)
        return ddp.launch(config, images, labels, masks, progress)
    config, progress = ddp.join(config), ddp.main_only(progress)
    if config.epochs is None and config.time_budget is None:
        config = config.replace(epochs=epoch_limit(None, None))
    run = prepare(config, images, labels, masks)
    run.budget = start_budget(run, started)
    ddp.adapt(run)
    epoch = run.start_epoch
    while True:
        run.budget.begin_epoch()
        row = train_epoch(run, epoch, progress)
        ddp.average_metrics(row)
        run.budget.end_epoch()
        row["steps"] = run.budget.epoch_steps
        if run.budget.needs_probe():
            _probe_validation(run)
        last = ((run.epoch_limit is not None and epoch + 1 >= run.epoch_limit) or run.budget.out_of_time()
                or run.budget.epoch_steps < run.steps)
        if validation_due(run, epoch, last):
            _validate(run, row, progress)
        row["elapsed"] = round(run.budget.elapsed(), 3)
        began = run.budget.clock()
        save_epoch(run, record_epoch(run, row))
        run.budget.saved(run.budget.clock() - began)
        report(progress, epoch_progress(run, row, last))
        if last:
            break
        epoch += 1
    ddp.barrier()
    return TrainResult(run.out, run.history, dict(run.history[-1]) if run.history else {}, run.network)


def start_budget(run: Run, started: float) -> Budget:
    """The run's clock (:class:`engine.budget.Budget`), counting the time of the run it resumes."""
    seconds = None if run.config.time_budget is None else parse_duration(run.config.time_budget)
    already = float(run.history[-1].get("elapsed", 0.0)) if run.history else 0.0
    if seconds is not None and already >= seconds:
        raise InputError(f"checkpoint already trained for {format_duration(already)} of "
                         f"time={run.config.time_budget!r}; set a longer time to continue")
    return Budget(seconds, started, already=already, validation_batches=len(run.validation))


def _validate(run: Run, row: dict[str, Any], progress: ProgressCallback | None) -> None:
    """Validate into ``row``, timing it for the budget's validation schedule."""
    began = run.budget.clock()
    row.update(evaluate_batches(run.network, run.validation, run.loss_fn, run.classes, run.device, run.use_amp))
    run.budget.validated(run.budget.clock() - began)
    report(progress, Progress("validate", row["epoch"], run.epoch_limit or row["epoch"], "", row))


def _probe_validation(run: Run) -> None:
    """Time one validation batch: the budget's estimate of a whole validation before it schedules one."""
    began = run.budget.clock()
    evaluate_batches(run.network, run.validation[:1], run.loss_fn, run.classes, run.device, run.use_amp)
    run.budget.probed(run.budget.clock() - began)


def _progress_so_far(run: Run, done: float) -> tuple[float | None, float]:
    """(fraction of the epoch limit reached with ``done`` epochs, the fraction at the run's start); None: no limit."""
    limit = run.epoch_limit
    return (done / limit, run.start_epoch / limit) if limit else (None, 0.0)


def step_progress(run: Run, global_step: int, epoch: int, loss: float) -> Progress:
    """The "train" progress after ``global_step``: steps of all epochs; with a time budget, seconds of it
    (or the steps' share of them, whichever is further on). Metrics: mean loss, epoch, ETA (seconds)."""
    limit = run.epoch_limit
    fraction, at_start = _progress_so_far(run, (global_step + 1) / run.steps)
    metrics: dict[str, Any] = {"loss": loss, "epoch": epoch + 1}
    eta = run.budget.eta(fraction, at_start)
    if eta is not None:
        metrics["eta"] = eta
    message = f"epoch {epoch + 1}/{limit}" if limit else f"epoch {epoch + 1}"
    if run.budget.seconds is None:
        return Progress("train", global_step + 1, int(run.total_steps or 0), message, metrics)
    total = math.ceil(run.budget.seconds)
    done = min(total, int(total * max(run.budget.fraction(), fraction or 0.0)))
    return Progress("train", done, total, message, metrics)


def epoch_progress(run: Run, row: dict[str, Any], last: bool) -> Progress:
    """The "epoch" progress after an epoch is saved: its history row plus ``eta`` (seconds); ``total`` is
    the epoch limit (0: only a time budget)."""
    fraction, at_start = _progress_so_far(run, row["epoch"])
    eta = 0.0 if last else run.budget.eta(fraction, at_start)
    budget = run.budget.seconds
    message = "" if budget is None else f"{format_duration(row['elapsed'])} of {format_duration(budget)}"
    return Progress("epoch", row["epoch"], run.epoch_limit or 0, message, {**row, "eta": eta})
