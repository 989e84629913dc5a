"""Training: a short, explicit epoch loop with checkpoints, resume, validation and history.

``train(config)`` prepares a run (:func:`prepare`: data, network, normalization, sampler, loss,
optimizer, resume), then repeats for ``epochs`` epochs: ``steps_per_epoch`` random-patch training
steps (:func:`train_epoch`), validation on fixed patches (:func:`evaluate_batches`) and
:func:`save_epoch`, which updates the model folder ``config.out``, each file atomically:

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

from .augment import Augmentation
from .axes import DIM_TO_LETTER
from .config import TrainConfig, check_class_names
from .data import (PatchSampler, Sample, auto_patch, check_classes, label_slabs, load_samples,
                   samples_from_arrays, split_validation)
from .errors import InputError, ModelFileError
from .fileutil import atomic_path
from .losses import IGNORE_INDEX, SegmentationLoss, class_weights_from_counts
from .metrics import Report, confusion_matrix
from .model_files import FORMAT, load_model, model_config, resolve_device, save_model, versions
from .networks import SegmentationNetwork, build
from .normalization import Normalization
from .progress import Progress, ProgressCallback, report

CHECKPOINT = "checkpoint.pt"
#: marks a folder that training created (or found empty) while its first epoch is being saved
IN_PROGRESS = ".deepseg-training"
_MAX_STEPS = 250
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
def lr_factor(schedule: str, step: int, total_steps: int, epoch: int) -> float:
    """Learning-rate multiplier at global ``step`` (0-based) of ``total_steps``.

    poly: (1 - step/total)^0.9 (nnU-Net); cosine: half cosine to 0; piecewise: x0.9 every 50 epochs
    (DeepMIB); constant: 1.
    """
    progress = min(step / max(total_steps, 1), 1.0)
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
    """Confusion matrix (:func:`engine.metrics.confusion_matrix`) of the annotated voxels of a batch."""
    prediction = logits.detach().argmax(1).cpu().numpy()
    return confusion_matrix(prediction, target.cpu().numpy(), classes, ignore_label=IGNORE_INDEX)


def epoch_scores(confusion: np.ndarray, prefix: str = "") -> dict[str, float]:
    """Global accuracy and mean foreground Dice (:class:`engine.metrics.Report`) for the history."""
    result = Report(confusion, tuple(str(k) for k in range(len(confusion))))
    return {f"{prefix}accuracy": result.global_accuracy, f"{prefix}dice": result.mean_foreground_dice}


def _centre_crop(labels: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    starts = [(n - s) // 2 for n, s in zip(labels.shape, shape)]
    return labels[tuple(slice(st, st + s) for st, s in zip(starts, shape))]


class Batches:
    """Draws normalized, augmented minibatches as torch tensors from a :class:`PatchSampler`.

    Labels are centre-cropped to ``output_shape`` (smaller than the patch for valid padding).
    """

    def __init__(self, sampler: PatchSampler, normalization: Normalization, augmentation: Augmentation,
                 output_shape: Sequence[int]) -> None:
        self.sampler, self.augmentation = sampler, augmentation
        self.output_shape = tuple(output_shape)
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
        images, labels = [], []
        for _ in range(batch):
            index = self.sampler.pick(rng)
            image, label = self.sampler.sample_from(index, rng)
            image = self._per_sample[index].apply(image)
            if augment:
                image, label = self.augmentation(image, label, rng)
            images.append(image)
            labels.append(_centre_crop(label, self.output_shape))
        return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels).astype(np.int64))


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

    @property
    def out(self) -> Path:
        return Path(self.config.out)

    @property
    def total_steps(self) -> int:
        return self.steps * self.config.epochs

    @property
    def use_amp(self) -> bool:
        return bool(self.config.amp and self.device.type == "cuda")


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
    torch.manual_seed(config.seed)  # before building: weight initialisation must be reproducible
    random.seed(config.seed)
    network = build(config.network, in_channels=_channels(samples), classes=classes, **config.network_options)
    patch = training_patch(config, network, samples)
    config = config.replace(patch=list(patch), batch=config.batch or (4 if network.spatial_dims == 2 else 2))
    train_samples, val_samples = split_validation(samples, config.validation_fraction, config.seed)
    batches = _batches(config, network, patch, train_samples)
    loss_fn = SegmentationLoss(config.loss, classes=classes, weights=_class_weights(config, classes, train_samples),
                               exclude_background=config.exclude_background).to(device)
    rng = np.random.default_rng(config.seed)
    transfer = _init_from(network, config.init_from, config.freeze_encoder) if config.init_from else {}
    network.to(device)
    optimizer = make_optimizer(config, [p for p in network.parameters() if p.requires_grad])
    run = Run(config, network, optimizer, loss_fn, batches, rng, device, classes,
              steps=_steps_per_epoch(config, train_samples, patch))
    if config.resume:
        restore_checkpoint(run, config.resume)
    run.validation = _validation_batches(batches, val_samples, patch, config.batch, config.seed,
                                         int(getattr(network, "z_context", 1)), config.foreground_oversampling)
    run.model_config = _model_config(run, samples, val_samples, transfer)
    return run


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
    sampler = PatchSampler(train_samples, patch, foreground=config.foreground_oversampling,
                           z_context=int(getattr(network, "z_context", 1)), seed=config.seed)
    return Batches(sampler, normalization, Augmentation(**config.augmentation), network.output_shape(patch))


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
        "optimizer": run.optimizer.state_dict(), "rng": _rng_state(run.rng), "history": run.history,
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
    _restore_rng(run.rng, state["rng"])
    run.start_epoch, run.history, run.best = int(state["epoch"]), list(state["history"]), state.get("best")
    if run.start_epoch >= run.config.epochs:
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


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "numpy": rng.bit_generator.state,
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
    }


def _restore_rng(rng: np.random.Generator, state: dict[str, Any]) -> None:
    rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))


# ------------------------------------------------------------------------------------ train / validate
def train_step(run: Run, x: torch.Tensor, y: torch.Tensor, where: str = "in a training step") -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch; returns the loss and the logits (both detached).

    ``where`` ("at epoch 3 step 7") goes into the error raised when the loss is not finite."""
    run.optimizer.zero_grad(set_to_none=True)
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.use_amp):
        logits = run.network(x)
    loss = run.loss_fn(logits.float(), y)
    if not torch.isfinite(loss):
        raise InputError(f"training diverged {where} (loss {float(loss)}); lower the learning rate (lr={run.config.lr})")
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.network.parameters(), 12.0)
    run.optimizer.step()
    return loss.detach(), logits.detach()


def train_epoch(run: Run, epoch: int, progress: ProgressCallback | None) -> dict[str, Any]:
    """``run.steps`` training steps of epoch ``epoch`` (0-based); returns its history row."""
    run.network.train()
    began = time.perf_counter()
    confusion = np.zeros((run.classes, run.classes), dtype=np.int64)
    losses: list[float] = []
    lr = run.config.lr
    for step in range(run.steps):
        global_step = epoch * run.steps + step
        lr = run.config.lr * lr_factor(run.config.schedule, global_step, run.total_steps, epoch)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        x, y = run.batches.draw(run.config.batch, run.rng)
        x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
        loss, logits = train_step(run, x, y, where=f"at epoch {epoch + 1} step {step + 1}")
        losses.append(float(loss))
        confusion += batch_confusion(logits, y, run.classes)
        report(progress, Progress("train", global_step + 1, run.total_steps, f"epoch {epoch + 1}/{run.config.epochs}",
                                  {"loss": float(np.mean(losses)), "epoch": epoch + 1}))
    return {"epoch": epoch + 1, "loss": float(np.mean(losses)), **epoch_scores(confusion), "lr": lr,
            "seconds": round(time.perf_counter() - began, 3)}


def validation_due(run: Run, epoch: int) -> bool:
    """Whether epoch ``epoch`` (0-based) is validated: every ``validation_every`` epochs and the last."""
    return bool(run.validation) and ((epoch + 1) % run.config.validation_every == 0 or epoch + 1 == run.config.epochs)


@torch.no_grad()
def evaluate_batches(network: SegmentationNetwork, batches: list[Batch], loss_fn: SegmentationLoss,
                     classes: int, device: torch.device, use_amp: bool) -> dict[str, float]:
    """Validation loss, accuracy and foreground Dice over fixed patches."""
    network.eval()
    confusion = np.zeros((classes, classes), dtype=np.int64)
    total, count = 0.0, 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
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
    receives a :class:`Progress` after every step ("train") and validation ("validate"); returning
    ``False`` cancels (the last finished epoch stays saved and can be resumed). ``config.out`` must
    be a new or empty folder or a deepseg model folder (InputError otherwise, before anything is written).
    """
    run = prepare(resolve_config(config, overrides), images, labels, masks)
    for epoch in range(run.start_epoch, run.config.epochs):
        row = train_epoch(run, epoch, progress)
        if validation_due(run, epoch):
            row.update(evaluate_batches(run.network, run.validation, run.loss_fn, run.classes, run.device, run.use_amp))
            report(progress, Progress("validate", epoch + 1, run.config.epochs, "", row))
        save_epoch(run, record_epoch(run, row))
    return TrainResult(run.out, run.history, dict(run.history[-1]) if run.history else {}, run.network)
