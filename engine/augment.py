"""Patch augmentation applied identically to an image patch ``(C, *spatial)`` and its labels ``(*spatial)``.

Geometric: flips along each spatial axis and 90-degree rotations in the YX plane (only when the patch
is square in YX, as in DeepMIB; anisotropic Z is never rotated into YX). Intensity (image only):
brightness, contrast, gamma and Gaussian noise, each applied with its own probability.
Defaults follow DeepMIB's probabilities for flips/rot90 (0.2 is DeepMIB's; 0.5 each is used for
flips here because flips are free and label-preserving for all microscopy/CT data).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .errors import InputError


@dataclass
class Augmentation:
    """Probabilities (0..1) and ranges of each augmentation; all 0 disables augmentation."""

    flip: float = 0.5
    rot90: float = 0.5
    brightness: float = 0.2
    brightness_range: float = 0.1
    contrast: float = 0.2
    contrast_range: tuple[float, float] = (0.9, 1.1)
    gamma: float = 0.0
    gamma_range: tuple[float, float] = (0.7, 1.5)
    noise: float = 0.2
    noise_std: float = 0.05

    def __post_init__(self) -> None:
        for name in ("flip", "rot90", "brightness", "contrast", "gamma", "noise"):
            p = getattr(self, name)
            if not 0.0 <= float(p) <= 1.0:
                raise InputError(f"augmentation probability {name}={p!r}: expected a value in 0..1")
        self.contrast_range = tuple(self.contrast_range)  # type: ignore[assignment]
        self.gamma_range = tuple(self.gamma_range)  # type: ignore[assignment]

    @classmethod
    def off(cls) -> "Augmentation":
        return cls(flip=0, rot90=0, brightness=0, contrast=0, gamma=0, noise=0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Augmentation":
        return cls(**data)

    def __call__(
        self, image: np.ndarray, labels: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Augment one normalized float32 patch and its labels; returns new contiguous arrays."""
        spatial = labels.ndim
        for axis in range(spatial):
            if rng.random() < self.flip:
                image = np.flip(image, axis=axis + 1)
                labels = np.flip(labels, axis=axis)
        if labels.shape[-1] == labels.shape[-2] and rng.random() < self.rot90:
            k = int(rng.integers(1, 4))
            image = np.rot90(image, k, axes=(-2, -1))
            labels = np.rot90(labels, k, axes=(-2, -1))
        image = np.ascontiguousarray(image, dtype=np.float32)
        labels = np.ascontiguousarray(labels)
        if rng.random() < self.brightness:
            image += np.float32(rng.uniform(-self.brightness_range, self.brightness_range) * (image.std() + 1e-6))
        if rng.random() < self.contrast:
            mean = image.mean(axis=tuple(range(1, image.ndim)), keepdims=True)
            image = (image - mean) * np.float32(rng.uniform(*self.contrast_range)) + mean
        if rng.random() < self.gamma:
            low, high = image.min(), image.max()
            span = max(float(high - low), 1e-6)
            image = ((image - low) / span) ** np.float32(rng.uniform(*self.gamma_range)) * span + low
        if rng.random() < self.noise:
            image = image + rng.normal(0.0, self.noise_std, size=image.shape).astype(np.float32)
        return np.ascontiguousarray(image, dtype=np.float32), labels
