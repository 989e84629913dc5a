"""Training data: image/label pairs from files, folders or arrays; validation split; patch sampling.

Array helpers (mirror padding, crops, z-context stacks, finite checks) live in :mod:`engine.arrays`;
``check_finite``, ``crop_padded`` and ``z_context_stack`` stay importable from here.

A :class:`Sample` holds one image as channel-first pixels ``(C, *spatial)`` in its file's dtype (not
copied to float, so large stacks can stay memory-mapped) and its labels ``(*spatial)`` as int32 with
:data:`engine.losses.IGNORE_INDEX` (-1) where nothing is annotated (mask = 0, the ``ignore_label``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import xarray as xr

from .arrays import check_finite, crop_padded, fit_window, iter_slabs, plane_patch, z_context_stack  # noqa: F401
from .axes import as_image, channel_first, spacing_of, spatial_dims
from .errors import InputError
from .losses import IGNORE_INDEX

_FG_SAMPLES = 20_000  # foreground coordinates kept per image for oversampling


@dataclass
class Sample:
    """One training image with its labels (and where they come from)."""

    image: np.ndarray
    labels: np.ndarray
    name: str
    spacing: dict[str, float] = field(default_factory=dict)
    dims: tuple[str, ...] = ()

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.labels.shape)


# ----------------------------------------------------------------------------------------- loading
def _to_image(data: np.ndarray | xr.DataArray, axes: str | None) -> xr.DataArray:
    if isinstance(data, xr.DataArray) and axes is None:
        return as_image(data)
    return as_image(data, axes)


def _labels_like(data: np.ndarray | xr.DataArray, image: xr.DataArray, what: str) -> np.ndarray:
    """Labels as plain ``(*spatial)`` array aligned with ``image``'s spatial dims."""
    if isinstance(data, xr.DataArray):
        extra = [d for d in data.dims if d not in spatial_dims(image)]
        squeezable = [d for d in extra if data.sizes[d] == 1]
        if len(extra) != len(squeezable):
            raise InputError(
                f"{what} dims {tuple(data.dims)} do not match the image's spatial dims {spatial_dims(image)}"
            )
        data = data.squeeze(squeezable).transpose(*spatial_dims(image)).values
    arr = np.asarray(data)
    expected = tuple(image.sizes[d] for d in spatial_dims(image))
    if arr.shape != expected:
        arr = np.squeeze(arr) if np.squeeze(arr).shape == expected else arr
    if arr.shape != expected:
        raise InputError(
            f"{what} shape {arr.shape} does not match the image's spatial shape {expected} "
            f"(image dims {tuple(image.dims)})"
        )
    return arr


def prepare_labels(
    labels: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    ignore_label: int | None = None,
    name: str = "labels",
) -> np.ndarray:
    """Validate integer labels and return int32 with -1 where not annotated."""
    if not np.issubdtype(labels.dtype, np.integer) and labels.dtype != bool:
        if not np.all(np.isfinite(labels)) or not np.array_equal(labels, np.round(labels)):
            raise InputError(f"{name} must hold integer class values, got dtype {labels.dtype} with fractions")
    # int16 holds 32767 classes and the -1 "not annotated" marker at half the memory of int32
    raw = np.asarray(labels)
    out = raw.astype(np.int16 if int(raw.max(initial=0)) < 2**15 else np.int32)
    lowest = int(out.min(initial=0))
    if lowest < 0:
        raise InputError(f"{name} has negative values (min {lowest}); labels must be >= 0")
    if ignore_label is not None:
        out[out == int(ignore_label)] = IGNORE_INDEX
    if mask is not None:
        if mask.shape != out.shape:
            raise InputError(f"mask shape {mask.shape} does not match {name} shape {out.shape}")
        out[np.asarray(mask) == 0] = IGNORE_INDEX
    return out


def make_sample(
    image: np.ndarray | xr.DataArray,
    labels: np.ndarray | xr.DataArray,
    *,
    mask: np.ndarray | xr.DataArray | None = None,
    axes: str | None = None,
    ignore_label: int | None = None,
    name: str = "image",
) -> Sample:
    """Build a validated :class:`Sample` from an image and its labels (numpy needs ``axes``)."""
    img = _to_image(image, axes)
    if "t" in img.dims:
        raise InputError(
            f"training image {name!r} has a time axis (dims {tuple(img.dims)}); split time points "
            "into separate images"
        )
    lab = _labels_like(labels, img, f"labels of {name!r}")
    msk = _labels_like(mask, img, f"mask of {name!r}") if mask is not None else None
    pixels = channel_first(img)
    check_finite(pixels, name)
    return Sample(
        image=pixels,
        labels=prepare_labels(lab, mask=msk, ignore_label=ignore_label, name=f"labels of {name!r}"),
        name=name,
        spacing=spacing_of(img),
        dims=spatial_dims(img),
    )


def _resolve_inputs(images: str | Path, labels: str | Path | None, masks: str | Path | None):
    from .io import list_images

    images = Path(images)
    if not images.exists():
        raise FileNotFoundError(f"training images {str(images)!r} do not exist")
    if labels is None:
        layout = images / "Images"
        if images.is_dir() and layout.is_dir() and (images / "Labels").is_dir():
            images, labels = layout, images / "Labels"
            masks = masks or ((images.parent / "Masks") if (images.parent / "Masks").is_dir() else None)
        else:
            raise InputError(
                f"no labels given for {str(images)!r}: pass labels, or a training folder holding "
                "Images/ and Labels/ (and optionally Masks/), as DeepMIB uses"
            )
    labels = Path(labels)
    if not labels.exists():
        raise FileNotFoundError(f"training labels {str(labels)!r} do not exist")

    def files(path: Path, what: str) -> list[Path]:
        found = list_images(path) if path.is_dir() else [path]
        if not found:
            raise InputError(f"{what} folder {str(path)!r} holds no image files (TIFF, PNG, ...)")
        return found

    image_files, label_files = files(images, "images"), files(labels, "labels")
    if len(image_files) != len(label_files):
        raise InputError(
            f"{len(image_files)} images in {str(images)!r} but {len(label_files)} label images in "
            f"{str(labels)!r}: every image needs one label image (paired by sorted file name)"
        )
    mask_files: list[Path | None] = [None] * len(image_files)
    if masks is not None:
        mask_files = list(files(Path(masks), "masks"))
        if len(mask_files) != len(image_files):
            raise InputError(f"{len(mask_files)} masks for {len(image_files)} images in {str(masks)!r}")
    return list(zip(image_files, label_files, mask_files))


def load_samples(
    images: str | Path,
    labels: str | Path | None = None,
    masks: str | Path | None = None,
    *,
    axes: str | None = None,
    ignore_label: int | None = None,
) -> list[Sample]:
    """Load image/label pairs from files or folders (paired by sorted name)."""
    from .io import read_image

    samples = []
    for image_file, label_file, mask_file in _resolve_inputs(images, labels, masks):
        image = read_image(image_file, axes=axes)
        label = read_image(label_file)
        mask = read_image(mask_file) if mask_file is not None else None
        samples.append(
            make_sample(image, label, mask=mask, ignore_label=ignore_label, name=Path(image_file).name)
        )
    if not samples:
        raise InputError(f"no training images found in {str(images)!r}")
    return samples


def samples_from_arrays(
    images: Sequence[np.ndarray | xr.DataArray],
    labels: Sequence[np.ndarray | xr.DataArray],
    masks: Sequence[np.ndarray | xr.DataArray | None] | None = None,
    *,
    axes: str | None = None,
    ignore_label: int | None = None,
) -> list[Sample]:
    """Build samples from in-memory images (DataArrays, or numpy with ``axes``)."""
    if len(images) != len(labels):
        raise InputError(f"{len(images)} images but {len(labels)} label images")
    if len(images) == 0:
        raise InputError("the training set is empty: give at least one image with labels")
    masks = list(masks) if masks is not None else [None] * len(images)
    return [
        make_sample(img, lab, mask=msk, axes=axes, ignore_label=ignore_label,
                    name=str(getattr(img, "name", None) or f"image{i}"))
        for i, (img, lab, msk) in enumerate(zip(images, labels, masks))
    ]


def auto_patch(samples: Sequence[Sample], spatial_dims: int) -> tuple[int, ...]:
    """A patch size derived from the data, as nnU-Net does: 2D up to 256 px per axis; 3D about
    2^20 voxels, each axis proportional to 1 / voxel size (isotropic in physical units); never
    larger than the smallest image along an axis (but at least 16 px, or 8 planes in Z)."""
    extents = np.min([s.spatial_shape[-spatial_dims:] for s in samples], axis=0)
    if spatial_dims == 2:
        wanted = np.full(2, 256.0)
    else:
        dims = samples[0].dims[-3:]
        spacing = np.array([samples[0].spacing.get(d, 1.0) for d in dims], dtype=np.float64)
        wanted = (2.0**20 * np.prod(spacing)) ** (1 / 3) / spacing
        for _ in range(3):  # axes capped by the image give their share of the budget to the others
            capped = np.minimum(wanted, extents)
            free = wanted <= extents
            if free.all() or not free.any():
                break
            wanted = np.where(free, wanted * (2.0**20 / np.prod(capped)) ** (1 / free.sum()), capped)
    floor = np.array([8] + [16] * (spatial_dims - 1)) if spatial_dims == 3 else np.array([16, 16])
    return tuple(int(max(f, min(w, e))) for w, e, f in zip(wanted, extents, floor))


# ------------------------------------------------------------------------------------- validation
def check_classes(samples: Sequence[Sample], classes: int | None) -> int:
    """Return the class count (inferred as max label + 1 when ``classes`` is None) after checking labels."""
    highest = max(int(s.labels.max(initial=IGNORE_INDEX)) for s in samples)
    if highest < 0:
        raise InputError("the labels contain no annotated voxel (all are unlabelled/ignored)")
    if classes is None:
        return max(2, highest + 1)
    for s in samples:
        top = int(s.labels.max(initial=IGNORE_INDEX))
        if top >= classes:
            raise InputError(
                f"labels of {s.name!r} contain value {top} but classes={classes}: "
                f"expected values 0..{classes - 1} (or raise classes to {top + 1})"
            )
    return int(classes)


def split_validation(
    samples: Sequence[Sample], fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """Split into training and validation samples.

    With several images, whole images are held out (random, seeded; at least one on each side).
    With one image, a block at the end of its longest in-plane axis is held out, so that training
    and validation voxels never touch.
    """
    samples = list(samples)
    if fraction <= 0 or not samples:
        return samples, []
    if len(samples) >= 2:
        order = np.random.default_rng(seed).permutation(len(samples))
        n_val = min(len(samples) - 1, max(1, int(round(len(samples) * fraction))))
        val = sorted(order[:n_val].tolist())
        return [s for i, s in enumerate(samples) if i not in val], [samples[i] for i in val]
    (only,) = samples
    shape = only.spatial_shape
    axis = len(shape) - 2 + int(np.argmax(shape[-2:]))
    cut = int(round(shape[axis] * (1 - fraction)))
    if cut < 1 or cut >= shape[axis]:
        return samples, []

    def part(sl: slice, suffix: str) -> Sample:
        index = (slice(None),) * axis + (sl,)
        return Sample(only.image[(slice(None),) + index], only.labels[index], only.name + suffix,
                      only.spacing, only.dims)

    return [part(slice(0, cut), "[train]")], [part(slice(cut, None), "[validation]")]


# --------------------------------------------------------------------------------------- sampling
class PatchSampler:
    """Random patches ``(C*z_context, *patch)`` with labels ``(*patch)`` from a list of samples.

    ``patch`` has one entry per network spatial dim. A 2D network trained on 3D stacks samples
    2D patches from random planes (with ``z_context`` neighbouring planes stacked as channels for
    2.5D networks). With probability ``foreground`` a patch is centred on a random foreground voxel
    (label > 0); otherwise on a random annotated voxel when annotations are sparse, or anywhere.
    Patches reaching beyond the image are padded (mirrored image, unlabelled labels).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        patch: Sequence[int],
        *,
        foreground: float = 0.33,
        z_context: int = 1,
        seed: int = 0,
    ) -> None:
        self.samples = list(samples)
        if not self.samples:
            raise InputError("the training set is empty: give at least one image with labels")
        self.patch = tuple(int(p) for p in patch)
        self.foreground = float(foreground)
        self.z_context = int(z_context)
        rank = {len(s.spatial_shape) for s in self.samples}
        for s in self.samples:
            if len(s.spatial_shape) < len(self.patch):
                raise InputError(
                    f"image {s.name!r} is {len(s.spatial_shape)}D (dims {s.dims}) but the network "
                    f"needs {len(self.patch)}D patches {self.patch}: use a 2D network or a 3D stack"
                )
            if len(s.spatial_shape) - len(self.patch) > 1:
                raise InputError(f"image {s.name!r} shape {s.spatial_shape} cannot give patches {self.patch}")
        if self.z_context > 1 and (len(self.patch) != 2 or 2 in rank):
            raise InputError(f"z_context={self.z_context} needs 3D stacks and a 2D network (rank {rank})")
        rng = np.random.default_rng(seed)
        self._fg = [self._coords(s.labels, 1, rng) for s in self.samples]
        self._annotated = [
            self._coords(s.labels, 0, rng) if np.count_nonzero(s.labels < 0) * 2 > s.labels.size else None
            for s in self.samples
        ]
        sizes = np.array([np.prod(s.spatial_shape) for s in self.samples], dtype=np.float64)
        self._weights = sizes / sizes.sum()

    @staticmethod
    def _coords(labels: np.ndarray, minimum: int, rng: np.random.Generator) -> np.ndarray | None:
        """Up to ``_FG_SAMPLES`` random coordinates where ``labels >= minimum``, found slab by slab
        along the first axis so huge volumes never need a full-size index array."""
        slabs = list(iter_slabs(labels.shape[0], int(np.prod(labels.shape[1:]))))
        counts = [int(np.count_nonzero(labels[slab] >= minimum)) for slab in slabs]
        total = sum(counts)
        if total == 0:
            return None
        keep = min(total, _FG_SAMPLES)
        picks = np.sort(rng.choice(total, keep, replace=False))  # ranks among all matching voxels
        coords, offset = [], 0
        for slab, count in zip(slabs, counts):
            chosen = picks[(picks >= offset) & (picks < offset + count)] - offset
            if len(chosen):
                flat = np.flatnonzero(labels[slab] >= minimum)[chosen]
                found = np.stack(np.unravel_index(flat, labels[slab].shape), axis=1)
                found[:, 0] += slab.start
                coords.append(found)
            offset += count
        return np.concatenate(coords)

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One patch: ``(image (C', *patch) in the file dtype, labels (*patch) int32)``."""
        return self.sample_from(int(rng.choice(len(self.samples), p=self._weights)), rng)

    def pick(self, rng: np.random.Generator) -> int:
        """Index of a random sample, chosen in proportion to its size."""
        return int(rng.choice(len(self.samples), p=self._weights))

    def sample_from(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One patch of sample ``index`` (see :meth:`sample`)."""
        s = self.samples[index]
        shape = s.spatial_shape
        centre = None
        if self._fg[index] is not None and rng.random() < self.foreground:
            centre = self._fg[index][rng.integers(len(self._fg[index]))]
        elif self._annotated[index] is not None:
            centre = self._annotated[index][rng.integers(len(self._annotated[index]))]
        if centre is None:
            centre = np.array([rng.integers(0, n) for n in shape])
        window = self.patch if len(shape) == len(self.patch) else (1,) + self.patch
        starts = [int(c) - w // 2 + int(rng.integers(-(w // 4), w // 4 + 1)) for c, w in zip(centre, window)]
        starts = fit_window(starts, window, shape)
        labels = crop_padded(s.labels, starts, window, channel_axis=False)
        if len(shape) == len(self.patch):
            return crop_padded(s.image, starts, window, channel_axis=True), labels
        return plane_patch(s.image, starts[0], starts[1:], self.patch, self.z_context), labels[0]
