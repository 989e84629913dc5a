"""Training: a short, explicit epoch loop with checkpoints, resume, validation and history.

``train(config)`` loads the data, fits the normalization, builds the network and runs
``epochs`` epochs of ``steps_per_epoch`` random-patch minibatches. After every epoch it writes,
each file atomically, into the model folder ``config.out``:

* ``checkpoint.pt``: weights, optimizer, epoch, history and every RNG state (resume continues exactly);
* ``weights_last.safetensors`` and, when validation improves, ``weights.safetensors`` + ``config.json``;
* ``history.csv`` and ``training_curves.png``; ``train_config.json`` (the resolved configuration).
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .augment import Augmentation
from .axes import DIM_TO_LETTER
from .config import TrainConfig
from .data import (PatchSampler, Sample, auto_patch, check_classes, load_samples, samples_from_arrays,
                   split_validation)
from .errors import InputError, ModelFileError
from .fileutil import atomic_path
from .losses import IGNORE_INDEX, SegmentationLoss, class_weights_from_counts
from .model_files import load_model, model_config, resolve_device, save_model, versions
from .networks import SegmentationNetwork, build
from .normalization import Normalization
from .progress import Progress, ProgressCallback, report

CHECKPOINT = "checkpoint.pt"
_MAX_STEPS = 250
_VALIDATION_BYTES = 256 << 20


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
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=config.lr, weight_decay=config.weight_decay, momentum=config.momentum)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0,
                           weight_decay=config.weight_decay)


def confusion_from_logits(logits: torch.Tensor, target: torch.Tensor, classes: int) -> np.ndarray:
    """Confusion matrix (rows truth, columns prediction) of annotated voxels in a batch."""
    valid = target != IGNORE_INDEX
    pred = logits.argmax(1)[valid]
    truth = target[valid].long()
    counts = torch.bincount(truth * classes + pred, minlength=classes * classes)
    return counts.reshape(classes, classes).cpu().numpy().astype(np.int64)


def scores(confusion: np.ndarray) -> dict[str, float]:
    """Accuracy and mean foreground Dice of a confusion matrix (classes absent everywhere skipped)."""
    total = confusion.sum()
    tp = np.diag(confusion).astype(np.float64)
    denom = confusion.sum(0) + confusion.sum(1)
    dice = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)
    fg = dice[1:]
    return {
        "accuracy": float(tp.sum() / total) if total else float("nan"),
        "dice": float(np.nanmean(fg)) if np.isfinite(fg).any() else float("nan"),
    }


def _centre_crop(labels: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    starts = [(n - s) // 2 for n, s in zip(labels.shape, shape)]
    return labels[tuple(slice(st, st + s) for st, s in zip(starts, shape))]


class Batches:
    """Draws normalized, augmented minibatches as torch tensors from a :class:`PatchSampler`."""

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

    def draw(self, batch: int, rng: np.random.Generator, *, augment: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
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


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


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
def _load_training_samples(config: TrainConfig, images, labels, masks) -> list[Sample]:
    if isinstance(images, (str, Path)):
        return load_samples(images, labels, masks, axes=config.axes, ignore_label=config.ignore_label)
    if images is not None:
        if labels is None:
            raise InputError("images were given as arrays but labels were not")
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        labels = list(labels) if isinstance(labels, (list, tuple)) else [labels]
        if masks is not None:
            masks = list(masks) if isinstance(masks, (list, tuple)) else [masks]
        return samples_from_arrays(images, labels, masks, axes=config.axes, ignore_label=config.ignore_label)
    if config.images is None:
        raise InputError("no training images: set images (a file, a folder, or a DeepMIB training folder)")
    return load_samples(config.images, config.labels, config.masks, axes=config.axes,
                        ignore_label=config.ignore_label)


def _validation_batches(batches: Batches, samples: list[Sample], patch: Sequence[int], batch: int,
                        seed: int, z_context: int, foreground: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
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
    out = []
    for start in range(0, count, batch):
        out.append(val.draw(min(batch, count - start), rng, augment=False))
    return out


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
    ``False`` cancels (the last finished epoch stays saved and can be resumed).
    """
    if config is None:
        config = TrainConfig(**overrides)
    elif isinstance(config, dict):
        config = TrainConfig.from_dict({**config, **overrides})
    elif overrides:
        config = config.replace(**overrides)
    config.validate()
    if config.num_threads:
        torch.set_num_threads(int(config.num_threads))
    out = Path(config.out)
    device = resolve_device(config.device)

    samples = _load_training_samples(config, images, labels, masks)
    channels = {s.image.shape[0] for s in samples}
    if len(channels) != 1:
        raise InputError(f"training images have different channel counts {sorted(channels)}: {[s.name for s in samples]}")
    classes = check_classes(samples, config.classes)
    torch.manual_seed(config.seed)  # before building: weight initialisation must be reproducible
    random.seed(config.seed)
    network = build(config.network, in_channels=channels.pop(), classes=classes, **config.network_options)
    z_context = int(getattr(network, "z_context", 1))
    patch = network.valid_input_shape(config.patch_size(network.spatial_dims) or auto_patch(samples, network.spatial_dims))
    config = config.replace(patch=list(patch), batch=config.batch or (4 if network.spatial_dims == 2 else 2))
    output_shape = network.output_shape(patch)

    train_samples, val_samples = split_validation(samples, config.validation_fraction, config.seed)
    normalization = Normalization(config.normalization).fit(s.image for s in train_samples)
    augmentation = Augmentation(**config.augmentation)
    sampler = PatchSampler(train_samples, patch, foreground=config.foreground_oversampling,
                           z_context=z_context, seed=config.seed)
    batches = Batches(sampler, normalization, augmentation, output_shape)

    weights = config.class_weights
    if weights == "auto":
        counts = np.zeros(classes, dtype=np.int64)
        for s in train_samples:
            valid = s.labels[s.labels >= 0]
            counts += np.bincount(valid.ravel(), minlength=classes)[:classes]
        weights = class_weights_from_counts(counts)
    loss_fn = SegmentationLoss(config.loss, classes=classes, weights=weights,
                               exclude_background=config.exclude_background).to(device)

    rng = np.random.default_rng(config.seed)
    transfer = _init_from(network, config.init_from, config.freeze_encoder) if config.init_from else {}
    network.to(device)
    optimizer = make_optimizer(config, [p for p in network.parameters() if p.requires_grad])

    train_voxels = sum(int(np.prod(s.spatial_shape)) for s in train_samples)
    steps = config.steps_per_epoch or int(np.clip(math.ceil(train_voxels / (np.prod(patch) * config.batch)), 8, _MAX_STEPS))
    total_steps = steps * config.epochs
    history: list[dict[str, Any]] = []
    start_epoch, best = 0, None
    if config.resume:
        state = load_checkpoint(config.resume)
        saved = state["config"]
        for key in ("network", "network_options", "patch", "normalization"):
            if saved.get(key) != config.to_dict().get(key):
                raise InputError(
                    f"cannot resume: checkpoint has {key}={saved.get(key)!r} but this run has "
                    f"{key}={config.to_dict().get(key)!r}"
                )
        network.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        normalization = Normalization.from_dict(state["normalization"])
        batches.normalization = normalization
        _restore_rng(rng, state["rng"])
        start_epoch, history, best = int(state["epoch"]), list(state["history"]), state.get("best")
        if start_epoch >= config.epochs:
            raise InputError(f"checkpoint already finished {start_epoch} epochs; set epochs > {start_epoch} to continue")

    validation = _validation_batches(batches, val_samples, patch, config.batch, config.seed, z_context,
                                     config.foreground_oversampling)
    axes = "".join(DIM_TO_LETTER[d] for d in samples[0].dims)
    provenance = {
        "data": [s.name for s in samples],
        "validation": [s.name for s in val_samples],
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": config.to_dict(),
        **transfer,
    }
    cfg = model_config(network, patch=patch, normalization=normalization, axes=axes,
                       class_names=config.class_names, spacing=samples[0].spacing,
                       unit=None, training=provenance)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "train_config.json") as tmp:
        tmp.write_text(json.dumps(config.to_dict(), indent=2) + "\n")

    use_amp = bool(config.amp and device.type == "cuda")
    for epoch in range(start_epoch, config.epochs):
        network.train()
        began = time.perf_counter()
        confusion = np.zeros((classes, classes), dtype=np.int64)
        losses = []
        for step in range(steps):
            global_step = epoch * steps + step
            lr = config.lr * lr_factor(config.schedule, global_step, total_steps, epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = batches.draw(config.batch, rng)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = network(x)
            loss = loss_fn(logits.float(), y)
            if not torch.isfinite(loss):
                raise InputError(f"training diverged at epoch {epoch + 1} step {step + 1} (loss {float(loss)}); "
                                 f"lower the learning rate (lr={config.lr})")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), 12.0)
            optimizer.step()
            losses.append(float(loss.detach()))
            confusion += confusion_from_logits(logits.detach(), y, classes)
            report(progress, Progress("train", global_step + 1, total_steps,
                                      f"epoch {epoch + 1}/{config.epochs}",
                                      {"loss": float(np.mean(losses)), "epoch": epoch + 1}))
        row: dict[str, Any] = {"epoch": epoch + 1, "loss": float(np.mean(losses)),
                               **scores(confusion), "lr": lr, "seconds": round(time.perf_counter() - began, 3)}
        if validation and ((epoch + 1) % config.validation_every == 0 or epoch + 1 == config.epochs):
            row.update(evaluate_batches(network, validation, loss_fn, classes, device, use_amp))
            report(progress, Progress("validate", epoch + 1, config.epochs, "", row))
        history.append(row)
        improved = _is_better(row, best, bool(validation))
        if improved:
            best = {k: row[k] for k in ("epoch", "val_dice", "val_loss", "dice", "loss") if k in row}
        cfg["training"].update({"epochs": epoch + 1, "steps_per_epoch": steps, "final": row, "best": best,
                                "selected": config.select, "versions": versions()})
        save_model(network, out, config=cfg, which="last")
        if (config.select == "best" and improved) or config.select == "last":
            save_model(network, out, config=cfg, which="best")
        _write_history(out, history)
        _save_checkpoint(out / CHECKPOINT, {
            "format": "deepseg-checkpoint", "epoch": epoch + 1, "model": network.state_dict(),
            "optimizer": optimizer.state_dict(), "rng": _rng_state(rng), "history": history, "best": best,
            "config": config.to_dict(), "normalization": normalization.to_dict(),
        })
    final = dict(history[-1]) if history else {}
    return TrainResult(out, history, final, network)


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


@torch.no_grad()
def evaluate_batches(network: SegmentationNetwork, batches: list[tuple[torch.Tensor, torch.Tensor]],
                     loss_fn: SegmentationLoss, classes: int, device: torch.device, use_amp: bool) -> dict[str, float]:
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
        confusion += confusion_from_logits(logits, y, classes)
    network.train()
    result = scores(confusion)
    return {"val_loss": total / max(count, 1), "val_accuracy": result["accuracy"], "val_dice": result["dice"]}
