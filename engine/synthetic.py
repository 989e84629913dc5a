"""Synthetic images with exact ground truth, for tests, the demo and sanity checks of training."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def blobs(
    shape: tuple[int, ...],
    *,
    count: int | None = None,
    radius: tuple[float, float] = (4.0, 9.0),
    noise: float = 0.35,
    blur: float = 1.0,
    spacing: tuple[float, ...] | None = None,
    seed: int = 0,
    dtype: type = np.uint8,
) -> tuple[np.ndarray, np.ndarray]:
    """Random bright ellipsoidal blobs on a dark, uneven background with Gaussian noise.

    Returns ``(image, labels)``: ``image`` of ``dtype`` (uint8 or uint16 scaled to the range, or
    float32), ``labels`` uint8 with 1 inside blobs and 0 elsewhere. ``spacing`` (per axis, e.g.
    ``(3, 1, 1)``) squeezes blobs along coarse axes to mimic anisotropic voxels.
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    spacing = tuple(spacing) if spacing is not None else (1.0,) * len(shape)
    volume = float(np.prod(shape))
    if count is None:
        mean_r = sum(radius) / 2
        count = max(1, int(0.25 * volume / (mean_r ** len(shape) * (3.2 if len(shape) == 2 else 4.2))))
    labels = np.zeros(shape, dtype=bool)
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    for _ in range(count):
        centre = [rng.uniform(0, s) for s in shape]
        radii = [rng.uniform(*radius) / sp for sp in spacing]
        dist = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii))
        labels |= dist <= 1.0
    background = ndi.gaussian_filter(rng.normal(0, 1, shape), sigma=[s / 4 for s in shape])
    background = 0.15 * (background - background.min()) / max(np.ptp(background), 1e-6)
    brightness = rng.uniform(0.55, 0.9)
    signal = ndi.gaussian_filter(labels.astype(np.float64), sigma=[blur / sp for sp in spacing])
    image = 0.15 + background + brightness * signal + rng.normal(0, noise * 0.25, shape)
    image = np.clip(image, 0.0, 1.0)
    if dtype == np.float32:
        out = image.astype(np.float32)
    else:
        out = np.round(image * np.iinfo(dtype).max).astype(dtype)
    return out, labels.astype(np.uint8)
