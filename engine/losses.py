"""Segmentation losses on logits ``(N, K, *spatial)`` and integer targets ``(N, *spatial)``.

Every loss honours ``ignore_index`` (voxels that are not annotated: sparse labels, masks, padding),
optional per-class ``weights`` and, for the Dice family, ``exclude_background``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import InputError

LOSSES = ("ce", "focal", "dice", "generalized_dice", "ce_dice")
IGNORE_INDEX = -1


def _valid_and_onehot(logits: torch.Tensor, target: torch.Tensor, ignore_index: int):
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target))
    onehot = F.one_hot(safe.long(), logits.shape[1]).movedim(-1, 1).to(logits.dtype)
    return valid, safe, onehot * valid.unsqueeze(1).to(logits.dtype)


class SegmentationLoss(nn.Module):
    """A loss chosen by name; see :data:`LOSSES`.

    ``ce``: cross-entropy; ``focal``: ``alpha * (1 - p_t)^gamma * CE`` (Lin et al.); ``dice``: 1 - mean
    soft Dice over classes (computed over the whole batch); ``generalized_dice``: Dice with class
    weights 1/count^2 (Sudre et al.); ``ce_dice``: CE + Dice (nnU-Net, the default).
    """

    def __init__(
        self,
        name: str = "ce_dice",
        *,
        classes: int,
        ignore_index: int = IGNORE_INDEX,
        weights: Sequence[float] | None = None,
        exclude_background: bool = False,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        smooth: float = 1e-5,
    ) -> None:
        super().__init__()
        if name not in LOSSES:
            raise InputError(f"loss {name!r} is not one of {LOSSES}")
        if weights is not None and len(weights) != classes:
            raise InputError(f"{len(weights)} class weights given for {classes} classes")
        self.name, self.classes, self.ignore_index = name, classes, ignore_index
        self.exclude_background = exclude_background
        self.focal_alpha, self.focal_gamma, self.smooth = focal_alpha, focal_gamma, smooth
        w = torch.as_tensor(weights, dtype=torch.float32) if weights is not None else None
        self.register_buffer("weights", w, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] != self.classes:
            raise InputError(f"logits have {logits.shape[1]} classes, loss expects {self.classes}")
        target = target.long()
        if self.name == "ce":
            return self.cross_entropy(logits, target)
        if self.name == "focal":
            return self.focal(logits, target)
        if self.name == "dice":
            return self.dice(logits, target)
        if self.name == "generalized_dice":
            return self.dice(logits, target, generalized=True)
        return self.cross_entropy(logits, target) + self.dice(logits, target)

    def cross_entropy(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != self.ignore_index
        if not valid.any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits.float(), target, weight=self.weights, ignore_index=self.ignore_index)

    def focal(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid, safe, _ = _valid_and_onehot(logits, target, self.ignore_index)
        logp = F.log_softmax(logits.float(), dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
        loss = -self.focal_alpha * (1 - logp.exp()).pow(self.focal_gamma) * logp
        if self.weights is not None:
            loss = loss * self.weights[safe]
        count = valid.sum()
        return (loss * valid).sum() / count.clamp(min=1)

    def dice(self, logits: torch.Tensor, target: torch.Tensor, generalized: bool = False) -> torch.Tensor:
        valid, _, onehot = _valid_and_onehot(logits, target, self.ignore_index)
        probs = F.softmax(logits.float(), dim=1) * valid.unsqueeze(1)
        dims = (0,) + tuple(range(2, logits.ndim))
        intersect, prob_sum, counts = _batch_sums(torch.stack([(probs * onehot).sum(dims), probs.sum(dims),
                                                               onehot.sum(dims)]))
        first = 1 if self.exclude_background else 0
        intersect, denominator, counts = intersect[first:], (prob_sum + counts)[first:], counts[first:]
        if generalized:
            w = 1.0 / counts.clamp(min=1.0) ** 2
            w = torch.where(counts > 0, w, torch.zeros_like(w))
            return 1.0 - (2 * (w * intersect).sum() + self.smooth) / ((w * denominator).sum() + self.smooth)
        per_class = (2 * intersect + self.smooth) / (denominator + self.smooth)
        if self.weights is not None:
            w = self.weights[first:]
            return 1.0 - (w * per_class).sum() / w.sum()
        return 1.0 - per_class.mean()


def _batch_sums(sums: torch.Tensor) -> torch.Tensor:
    """Dice sums over the whole batch: under DistributedDataParallel training, each process holds a share of
    the batch, so the sums are added over the processes (with gradients), making the Dice term the one
    process's term of the whole batch. Unchanged outside distributed training and when not training."""
    import torch.distributed as dist

    if not (torch.is_grad_enabled() and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return sums
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(sums)


def class_weights_from_counts(counts: Sequence[int]) -> list[float]:
    """Median-frequency balancing: ``median(freq) / freq`` (classes never seen get weight 0)."""
    counts_arr = np.asarray(counts, dtype=np.float64)
    freq = counts_arr / max(counts_arr.sum(), 1.0)
    present = freq > 0
    if not present.any():
        raise InputError("cannot compute class weights: the labels contain no annotated voxel")
    median = np.median(freq[present])
    weights = np.where(present, median / np.where(present, freq, 1.0), 0.0)
    return weights.tolist()
