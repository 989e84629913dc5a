"""Training data: image/label pairs from files, folders or arrays; validation split; patch sampling.

Array helpers (mirror padding, crops, z-context stacks, finite checks) live in :mod:`engine.arrays`;
``check_finite`` and ``crop_padded`` stay importable from here.

A :class:`Sample` holds one image as channel-first pixels ``(C, *spatial)`` in its file's dtype (not
copied to float, so large stacks can stay memory-mapped) and its labels ``(*spatial)`` as int16/int32 with
:data:`engine.losses.IGNORE_INDEX` (-1) where nothing is annotated (mask = 0, the ``ignore_label``).

Files larger than :data:`IN_MEMORY_BYTES` (TIFF memory-mapped, zarr, OME-Zarr) stay on disk: their image is a
:class:`LazyArray` and their labels a :class:`LazyLabels`, which read (and convert) only the patch indexed.
Everything that looks at whole images (label checks, class counts, foreground coordinates, normalization
statistics) reads them slab by slab, so training memory does not grow with the data; the values, and so the
trained network, are the same as with the data in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import xarray as xr

from .arrays import check_finite, crop_padded, fit_window, iter_slabs, plane_patch  # noqa: F401
from .axes import as_image, channel_first, spacing_of, spatial_dims
from .errors import InputError
from .losses import IGNORE_INDEX

_FG_SAMPLES = 20_000  # foreground coordinates kept per image for oversampling
#: image + labels (+ mask) files up to this size are read into memory; larger ones are read patch by patch
IN_MEMORY_BYTES = 256 << 20


@dataclass
class Sample:
    """One training image with its labels (and where they come from)."""

    image: np.ndarray
    labels: np.ndarray
    name: str
    spacing: dict[str, float] = field(default_factory=dict)
    dims: tuple[str, ...] = ()
    labels_name: str = ""  # how errors name the labels ("labels in 'lab.tif'"); default "labels of <name>"

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.labels.shape)

    @property
    def labels_what(self) -> str:
        return self.labels_name or f"labels of {self.name!r}"


# ------------------------------------------------------------------------------------- lazy arrays
class LazyArray:
    """A read-on-index view of an array-like (``np.memmap``, zarr array, :class:`engine.chunked_io.ChannelFirst`).

    ``lead`` indexes fixed leading axes of ``base`` (e.g. ``(0,)``: the one channel of a label volume);
    ``box`` (step-1 slices) is the window of the remaining axes seen. Indexing with integers and slices
    (steps >= 1) reads only that part and returns a new, writable numpy array.
    """

    def __init__(self, base: Any, box: tuple[slice, ...] | None = None, *, lead: tuple[int, ...] = ()) -> None:
        self.base, self.lead = base, tuple(lead)
        self.box = box or tuple(slice(0, int(n)) for n in base.shape[len(self.lead):])
        self.shape = tuple(b.stop - b.start for b in self.box)
        self.dtype = np.dtype(base.dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def _key(self, key: Any) -> tuple[Any, ...]:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            at = next(i for i, k in enumerate(key) if k is Ellipsis)
            key = key[:at] + (slice(None),) * (self.ndim - len(key) + 1) + key[at + 1:]
        if len(key) > self.ndim:
            raise IndexError(f"too many indices {key!r} for a lazy array of shape {self.shape}")
        mapped: list[Any] = []
        for k, b, n in zip(key + (slice(None),) * (self.ndim - len(key)), self.box, self.shape):
            if isinstance(k, slice):
                start, stop, step = k.indices(n)
                if step < 1:
                    raise IndexError(f"negative step {k!r} is not supported on a lazy array")
                mapped.append(slice(b.start + start, b.start + max(start, stop), step))
            elif isinstance(k, (int, np.integer)) and -n <= int(k) < n:
                mapped.append(b.start + int(k) % n)
            else:
                raise IndexError(f"index {k!r} is not supported on a lazy array of shape {self.shape}")
        return self.lead + tuple(mapped)

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.array(self.base[self._key(key)])  # a copy: never a read-only view of a memory map

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        values = self[...]
        return values if dtype is None else values.astype(dtype)

    def window(self, index: tuple[slice, ...]) -> "LazyArray":
        """The lazy sub-array ``self[index]`` (slices of step 1), nothing read."""
        box = list(self.box)
        for axis, k in enumerate(index):
            start, stop, step = k.indices(self.shape[axis])
            if step != 1:
                raise IndexError(f"window {index!r}: only slices of step 1")
            box[axis] = slice(self.box[axis].start + start, self.box[axis].start + max(start, stop))
        return LazyArray(self.base, tuple(box), lead=self.lead)


class LazyLabels:
    """Lazy training labels: raw label values (and a mask) read per index and converted as
    :func:`prepare_labels` does (``dtype``, ``IGNORE_INDEX`` where ``ignore_label`` or mask 0)."""

    def __init__(self, raw: LazyArray, mask: LazyArray | None, ignore_label: int | None, dtype: np.dtype) -> None:
        self.raw, self.mask, self.ignore_label, self.dtype = raw, mask, ignore_label, np.dtype(dtype)
        self.shape, self.ndim, self.size = raw.shape, raw.ndim, raw.size

    def __getitem__(self, key: Any) -> np.ndarray:
        mask = None if self.mask is None else self.mask[key]
        return _annotated(self.raw[key], mask, self.ignore_label, self.dtype)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        values = self[...]
        return values if dtype is None else values.astype(dtype)

    def window(self, index: tuple[slice, ...]) -> "LazyLabels":
        mask = None if self.mask is None else self.mask.window(index)
        return LazyLabels(self.raw.window(index), mask, self.ignore_label, self.dtype)


def window(array: Any, index: tuple[slice, ...]) -> Any:
    """``array[index]`` without reading a lazy array (a view for numpy)."""
    return array.window(index) if isinstance(array, (LazyArray, LazyLabels)) else array[index]


def label_slabs(labels: Any) -> Iterator[np.ndarray]:
    """``labels`` (numpy or lazy) as numpy slabs along the first axis (bounded memory)."""
    for slab in iter_slabs(labels.shape[0], int(np.prod(labels.shape[1:]))):
        yield np.asarray(labels[slab])


def _reduce_slabs(labels: Any, reduce: Callable[[np.ndarray], int]) -> list[int]:
    return [reduce(block) for block in label_slabs(labels)]


def annotated_voxels(samples: Sequence["Sample"], enough: float = float("inf")) -> int:
    """Voxels with a label (>= 0: not masked out, not the ignore label) over ``samples``, read slab by slab;
    counting stops once ``enough`` are found (a dense volume needs one slab)."""
    count = 0
    for sample in samples:
        for block in label_slabs(sample.labels):
            count += int(np.count_nonzero(block >= 0))
            if count >= enough:
                return count
    return count


def labels_max(labels: Any) -> int:
    """The largest label (``IGNORE_INDEX`` when none), read slab by slab."""
    return max(_reduce_slabs(labels, lambda b: int(b.max(initial=IGNORE_INDEX))), default=IGNORE_INDEX)


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


def _label_range(values: np.ndarray, name: str) -> tuple[int, int]:
    """``(min, max)`` of raw label values (0 included); InputError for fractions, NaN or infinity."""
    if not np.issubdtype(values.dtype, np.integer) and values.dtype != bool:
        if not np.all(np.isfinite(values)) or not np.array_equal(values, np.round(values)):
            raise InputError(f"{name} must hold integer class values, got dtype {values.dtype} with fractions")
    return int(values.min(initial=0)), int(values.max(initial=0))


def _label_type(low: int, high: int, name: str) -> np.dtype:
    # int16 holds 32767 classes and the -1 "not annotated" marker at half the memory of int32
    if low < 0:
        raise InputError(f"{name} has negative values (min {low}); labels must be >= 0")
    return np.dtype(np.int16 if high < 2**15 else np.int32)


def _annotated(raw: np.ndarray, mask: np.ndarray | None, ignore_label: int | None, dtype: np.dtype) -> np.ndarray:
    """Raw labels as ``dtype`` with ``IGNORE_INDEX`` where they equal ``ignore_label`` or ``mask`` is 0."""
    out = np.asarray(raw).astype(dtype)
    if ignore_label is not None:
        out[out == int(ignore_label)] = IGNORE_INDEX
    if mask is not None:
        out[np.asarray(mask) == 0] = IGNORE_INDEX
    return out


def prepare_labels(
    labels: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    ignore_label: int | None = None,
    name: str = "labels",
) -> np.ndarray:
    """Validate integer labels and return int16 (int32 beyond 32767) with -1 where not annotated."""
    raw = np.asarray(labels)
    dtype = _label_type(*_label_range(raw, name), name)
    if mask is not None and mask.shape != raw.shape:
        raise InputError(f"mask shape {mask.shape} does not match {name} shape {raw.shape}")
    return _annotated(raw, mask, ignore_label, dtype)


def lazy_labels(raw: LazyArray, mask: LazyArray | None = None, *, ignore_label: int | None = None,
                name: str = "labels") -> LazyLabels:
    """:func:`prepare_labels` for labels on disk: values checked slab by slab, converted per patch."""
    if mask is not None and mask.shape != raw.shape:
        raise InputError(f"mask shape {mask.shape} does not match {name} shape {raw.shape}")
    ranges = [_label_range(block, name) for block in label_slabs(raw)]
    low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    return LazyLabels(raw, mask, ignore_label, _label_type(low, high, name))


def make_sample(
    image: np.ndarray | xr.DataArray,
    labels: np.ndarray | xr.DataArray,
    *,
    mask: np.ndarray | xr.DataArray | None = None,
    axes: str | None = None,
    ignore_label: int | None = None,
    name: str = "image",
    labels_name: str = "",
) -> Sample:
    """Build a validated :class:`Sample` from an image and its labels (numpy needs ``axes``).

    ``labels_name`` names the labels in errors (default ``labels of <name>``)."""
    img = _to_image(image, axes)
    if "t" in img.dims:
        raise InputError(
            f"training image {name!r} has a time axis (dims {tuple(img.dims)}); split time points "
            "into separate images"
        )
    what = labels_name or f"labels of {name!r}"
    lab = _labels_like(labels, img, what)
    msk = _labels_like(mask, img, f"mask of {name!r}") if mask is not None else None
    pixels = channel_first(img)
    check_finite(pixels, name)
    return Sample(
        image=pixels,
        labels=prepare_labels(lab, mask=msk, ignore_label=ignore_label, name=what),
        name=name,
        spacing=spacing_of(img),
        dims=spatial_dims(img),
        labels_name=labels_name,
    )


def lazy_sample(image: Any, labels: Any, mask: Any = None, *, ignore_label: int | None = None,
                name: str = "image", labels_name: str = "") -> Sample:
    """A :class:`Sample` read patch by patch from :class:`engine.chunked_io.Volume` s (image, labels,
    optional mask): nothing is loaded whole; label values are checked slab by slab."""
    what = labels_name or f"labels of {name!r}"
    pixels = LazyArray(image.pixels)
    check_finite(pixels, name)
    raw = _spatial_view(labels, image, what)
    msk = _spatial_view(mask, image, f"mask of {name!r}") if mask is not None else None
    return Sample(pixels, lazy_labels(raw, msk, ignore_label=ignore_label, name=what), name,
                  {d: float(image.spacing.get(d, 1.0)) for d in image.dims}, tuple(image.dims), labels_name)


def _spatial_view(volume: Any, image: Any, what: str) -> LazyArray:
    """The single channel of a label/mask volume as a lazy ``(*spatial)`` array matching ``image``."""
    channels = volume.pixels.shape[0]
    if channels != 1:
        raise InputError(f"{what} has {channels} channels; expected a single-channel integer image")
    extra = [d for d in volume.dims if d not in image.dims]
    sizes = dict(zip(volume.dims, volume.spatial_shape))
    if any(sizes[d] != 1 for d in extra) or any(d not in volume.dims for d in image.dims):
        raise InputError(f"{what} dims {tuple(volume.dims)} do not match the image's spatial dims {tuple(image.dims)}")
    lead = (0,) * (1 + len(extra))  # extra dims of size 1 can only lead: spatial dims are (pln, row, col)
    view = LazyArray(volume.pixels, lead=lead)
    if view.shape != tuple(image.spatial_shape):
        raise InputError(f"{what} shape {view.shape} does not match the image's spatial shape "
                         f"{tuple(image.spatial_shape)} (image dims {tuple(image.dims)})")
    return view


def _resolve_inputs(images: str | Path, labels: str | Path | None, masks: str | Path | None):
    from .chunked_io import is_zarr_path
    from .io import list_images, natural_key

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
        if is_zarr_path(path) or not path.is_dir():
            return [path]
        found = list_images(path)
        stores = [p for p in path.iterdir() if p.name.lower().endswith(".zarr") and not p.name.startswith(".")]
        if stores:
            found = sorted(found + stores, key=lambda p: natural_key(p.name))
        if not found:
            raise InputError(f"{what} folder {str(path)!r} holds no image files (TIFF, PNG, zarr, ...)")
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
    """Load image/label pairs from files, folders or zarr stores (paired by sorted name).

    TIFF and zarr/OME-Zarr pairs larger than :data:`IN_MEMORY_BYTES` stay on disk (:func:`lazy_sample`);
    smaller ones are read into memory. Both give the same values."""
    samples = [_load_pair(image_file, label_file, mask_file, axes, ignore_label)
               for image_file, label_file, mask_file in _resolve_inputs(images, labels, masks)]
    if not samples:
        raise InputError(f"no training images found in {str(images)!r}")
    return samples


def _load_pair(image_file: Path, label_file: Path, mask_file: Path | None, axes: str | None,
               ignore_label: int | None) -> Sample:
    from .chunked_io import is_zarr_path, open_volume, read_zarr
    from .io import read_image

    paths = [p for p in (image_file, label_file, mask_file) if p is not None]
    named = {"name": image_file.name, "labels_name": f"labels in {label_file.name!r}"}
    if sum(_stored_bytes(p, axes if p == image_file else None) for p in paths) > IN_MEMORY_BYTES:
        image = open_volume(image_file, axes)
        mask = open_volume(mask_file) if mask_file is not None else None
        return lazy_sample(image, open_volume(label_file), mask, ignore_label=ignore_label, **named)

    def read(path: Path, path_axes: str | None) -> xr.DataArray:
        return read_zarr(path, path_axes) if is_zarr_path(path) else read_image(path, axes=path_axes)

    mask = read(mask_file, None) if mask_file is not None else None
    return make_sample(read(image_file, axes), read(label_file, None), mask=mask, ignore_label=ignore_label, **named)


def _stored_bytes(path: Path, axes: str | None) -> int:
    """Pixel bytes of a zarr array (from its metadata), else the size of the file(s) on disk."""
    from .chunked_io import is_zarr_path, open_volume

    from .readers import split_dataset_path

    if is_zarr_path(path) or split_dataset_path(path)[1] is not None:  # zarr, or an HDF5 dataset path
        pixels = open_volume(path, axes).pixels
        return int(np.prod(pixels.shape)) * pixels.dtype.itemsize
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


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
    tops = [labels_max(s.labels) for s in samples]
    highest = max(tops)
    if highest < 0:
        raise InputError("the labels contain no annotated voxel (all are unlabelled/ignored)")
    if classes is None:
        return max(2, highest + 1)
    for s, top in zip(samples, tops):
        if top >= classes:
            raise InputError(
                f"{s.labels_what} contain value {top} but classes={classes}: "
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
        return Sample(window(only.image, (slice(None),) + index), window(only.labels, index), only.name + suffix,
                      only.spacing, only.dims, only.labels_name)

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
            self._coords(s.labels, 0, rng) if sum(_reduce_slabs(s.labels, lambda b: np.count_nonzero(b < 0))) * 2
            > np.prod(s.spatial_shape) else None
            for s in self.samples
        ]
        sizes = np.array([np.prod(s.spatial_shape) for s in self.samples], dtype=np.float64)
        self._weights = sizes / sizes.sum()

    @staticmethod
    def _coords(labels: np.ndarray, minimum: int, rng: np.random.Generator) -> np.ndarray | None:
        """Up to ``_FG_SAMPLES`` random coordinates where ``labels >= minimum``, found slab by slab
        along the first axis so huge volumes never need a full-size index array."""
        slabs = list(iter_slabs(labels.shape[0], int(np.prod(labels.shape[1:]))))
        counts = _reduce_slabs(labels, lambda b: int(np.count_nonzero(b >= minimum)))
        total = sum(counts)
        if total == 0:
            return None
        keep = min(total, _FG_SAMPLES)
        picks = np.sort(rng.choice(total, keep, replace=False))  # ranks among all matching voxels
        coords, offset = [], 0
        for slab, count in zip(slabs, counts):
            chosen = picks[(picks >= offset) & (picks < offset + count)] - offset
            if len(chosen):
                block = np.asarray(labels[slab])
                flat = np.flatnonzero(block >= minimum)[chosen]
                found = np.stack(np.unravel_index(flat, block.shape), axis=1)
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
