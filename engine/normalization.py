"""Intensity normalization, with statistics computed once from training data and stored in the model.

Methods (per channel):

* ``zscore``: ``(x - mean) / std`` with the training set's mean and std (default);
* ``zscore_image``: each image (or whole volume at prediction) uses its own mean and std (robust to
  exposure changes between acquisitions; nnU-Net's choice for non-CT data);
* ``percentile``: clip to the training set's 0.5-99.5 percentiles, then z-score (nnU-Net's CT recipe);
* ``minmax``: rescale the training set's min..max to 0..1;
* ``none``: cast to float32 only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import InputError

METHODS = ("zscore", "zscore_image", "percentile", "minmax", "none")
_SAMPLE_PER_IMAGE = 1_000_000  # voxels per image used to estimate statistics


@dataclass
class Normalization:
    """Per-channel normalization; ``fit`` computes statistics, ``apply`` uses them."""

    method: str = "zscore"
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    low: list[float] = field(default_factory=list)
    high: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"normalization {self.method!r} is not one of {METHODS}")

    @property
    def fitted(self) -> bool:
        return self.method in ("none", "zscore_image") or bool(self.mean or self.low)

    def fit(self, images: Iterable[np.ndarray]) -> "Normalization":
        """Compute statistics from channel-first images ``(C, *spatial)``; returns ``self``."""
        if self.method in ("none", "zscore_image"):
            return self
        samples = [_sample_voxels(img) for img in images]
        if not samples:
            raise InputError("cannot fit normalization statistics: no images given")
        channels = {s.shape[0] for s in samples}
        if len(channels) != 1:
            raise InputError(f"images have different channel counts {sorted(channels)}")
        values = np.concatenate(samples, axis=1).astype(np.float64)
        if self.method == "percentile":
            self.low = np.percentile(values, 0.5, axis=1).tolist()
            self.high = np.percentile(values, 99.5, axis=1).tolist()
            values = np.clip(values, np.array(self.low)[:, None], np.array(self.high)[:, None])
        if self.method == "minmax":
            self.low = values.min(axis=1).tolist()
            self.high = values.max(axis=1).tolist()
        else:
            self.mean = values.mean(axis=1).tolist()
            self.std = values.std(axis=1).tolist()
        return self

    def image_statistics(self, image: np.ndarray) -> "Normalization":
        """For ``zscore_image``: a ``zscore`` normalization fitted to this one image."""
        if self.method != "zscore_image":
            return self
        return Normalization("zscore").fit([image])

    def apply(self, x: np.ndarray, channel_axis: int = 0) -> np.ndarray:
        """Normalize ``x`` (any dtype) to float32; channels along ``channel_axis``."""
        out = np.asarray(x, dtype=np.float32)
        if self.method == "none":
            return out
        if self.method == "zscore_image":
            return self.image_statistics(np.moveaxis(out, channel_axis, 0)).apply(out, channel_axis)
        if not self.fitted:
            raise InputError(f"normalization {self.method!r} has no statistics; call fit() first")
        shape = [1] * out.ndim
        shape[channel_axis] = -1

        def per_channel(values: Sequence[float]) -> np.ndarray:
            arr = np.asarray(values, dtype=np.float32)
            channels = out.shape[channel_axis]
            if arr.size and channels % arr.size == 0:
                arr = np.tile(arr, channels // arr.size)  # 2.5D input: z_context slices stacked plane-major
            arr = arr.reshape(shape)
            if arr.size != channels:
                raise InputError(
                    f"image has {out.shape[channel_axis]} channels but the normalization was fitted "
                    f"on {arr.size}"
                )
            return arr

        out = out.copy() if out is x else out
        if self.method == "minmax":
            low, high = per_channel(self.low), per_channel(self.high)
            out -= low
            out /= np.maximum(high - low, 1e-8)
            return out
        if self.method == "percentile":
            np.clip(out, per_channel(self.low), per_channel(self.high), out=out)
        out -= per_channel(self.mean)
        out /= np.maximum(per_channel(self.std), 1e-8)
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Normalization":
        known = {k: data[k] for k in ("method", "mean", "std", "low", "high") if k in data}
        return cls(**known)


def _sample_voxels(image: Any) -> np.ndarray:
    """About ``_SAMPLE_PER_IMAGE`` voxels per channel on a regular grid, ``(C, n)`` float64.

    Strides per axis (not a reshape), read in slabs along the first spatial axis, so a memory map or a
    lazy (zarr) image is read piece by piece, never copied whole."""
    from .arrays import iter_slabs

    spatial = image.shape[1:]
    step = max(1, int(np.ceil((np.prod(spatial) / _SAMPLE_PER_IMAGE) ** (1 / max(len(spatial), 1)))))
    rows = range(0, int(spatial[0]), step)
    rest = (slice(None, None, step),) * (len(spatial) - 1)
    parts = [np.asarray(image[(slice(None), slice(rows[s.start], rows[s.stop - 1] + 1, step)) + rest], dtype=np.float64)
             for s in iter_slabs(len(rows), step * int(np.prod(spatial[1:])) * int(image.shape[0]))]
    return np.concatenate(parts, axis=1).reshape(image.shape[0], -1)
