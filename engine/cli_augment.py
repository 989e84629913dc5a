"""``deepseg augment-preview``: a PNG grid of training patches before and after augmentation.

The patches come from the training pipeline itself (:class:`engine.training.Batches`: patch sampling,
normalization, :meth:`engine.augment.Augmentation.batch`), so the preview shows what training sees.
Each pair of rows holds the same patches without and with augmentation; labels are drawn over the
image (classes in colour, the ignore label hatched grey); 3D patches show their middle plane.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np

_COLUMNS = 4


def add_augment_preview(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("augment-preview", help="show a grid of augmented training patches (PNG)",
                       description="Write a PNG grid of training patches, each without and with augmentation.")
    p.add_argument("--images", required=True, help="image file")
    p.add_argument("--labels", help="label image (optional: without it only the image is shown)")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--augmentation", default=None,
                   help="preset (none, light, default, strong) or advanced string, as for `deepseg train` "
                        "(default: default)")
    p.add_argument("--count", type=int, default=8, help="number of patches (default 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--patch", help="patch size, e.g. 128 or 16,128,128 (default: up to 256 px in 2D, "
                                   "derived from the data in 3D)")
    p.add_argument("--axes", help="axes of an image file that does not record them, e.g. ZYX")
    p.add_argument("--ignore-label", type=int, help="label value meaning 'not annotated'")


def run_augment_preview(args: argparse.Namespace) -> int:
    from .augment import Augmentation
    from .errors import InputError
    from .fileutil import refuse_overwriting

    if args.count < 1:
        raise InputError(f"--count {args.count}: expected a positive number of patches")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise InputError(f"--out {args.out!r}: expected a .png file")
    refuse_overwriting({"--out": out}, {"--images": args.images, "--labels": args.labels})
    augmentation = Augmentation.from_config(args.augmentation)
    before, after = preview_patches(args.images, args.labels, augmentation, count=args.count, seed=args.seed,
                                    patch=args.patch, axes=args.axes, ignore_label=args.ignore_label)
    save_preview(before, after, out, title=f"augmentation: {augmentation.describe()}")
    print(f"{args.count} patches without and with augmentation -> {out}")
    return 0


Patches = tuple[np.ndarray, np.ndarray]


def preview_patches(images: str, labels: str | None, augmentation: Any, *, count: int, seed: int,
                    patch: str | None = None, axes: str | None = None,
                    ignore_label: int | None = None) -> tuple[Patches, Patches]:
    """``count`` patches ``(image (N, *patch) first channel, labels (N, *patch))``, without and with
    augmentation: the same patches (the generator is copied before drawing)."""
    import copy

    from .augment import in_plane_only
    from .data import PatchSampler, auto_patch, make_sample
    from .io import read_image
    from .normalization import Normalization
    from .training import Batches

    image = read_image(images, axes=axes)
    lab = read_image(labels, axes=None) if labels else np.zeros(_spatial_shape(image), np.int32)
    sample = make_sample(image, lab, ignore_label=ignore_label, name=str(images))
    dims = 3 if len(sample.spatial_shape) == 3 else 2
    size = _patch(patch, dims) if patch else auto_patch([sample], dims)
    size = tuple(min(p, n) for p, n in zip(size, sample.spatial_shape[-dims:]))
    spacing = [sample.spacing.get(d, 1.0) for d in sample.dims[-3:]]
    in_plane = in_plane_only(spacing, size)
    sampler = PatchSampler([sample], augmentation.crop(size, in_plane), foreground=0.5, seed=seed)
    batches = Batches(sampler, Normalization("zscore_image"), augmentation, size, patch=size, in_plane=in_plane)
    rng = np.random.default_rng(seed)
    plain = batches.draw(count, copy.deepcopy(rng), augment=False)
    augmented = batches.draw(count, rng, augment=True)
    return _first_channel(plain), _first_channel(augmented)


def _spatial_shape(image: Any) -> tuple[int, ...]:
    from .axes import spatial_dims

    return tuple(image.sizes[d] for d in spatial_dims(image))


def _patch(text: str, dims: int) -> tuple[int, ...]:
    from .errors import InputError

    try:
        sizes = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--patch {text!r}: expected e.g. 128 or 16,128,128") from None
    if len(sizes) == 1:
        sizes *= dims
    if len(sizes) != dims or min(sizes) < 1:
        raise InputError(f"--patch {text!r}: expected one positive size or {dims} for this {dims}D image")
    return tuple(sizes)


def _first_channel(batch: Any) -> Patches:
    x, y = batch
    return x[:, 0].numpy(), y.numpy()


def _plane(array: np.ndarray) -> np.ndarray:
    return array[array.shape[0] // 2] if array.ndim == 3 else array


def save_preview(before: Patches, after: Patches, path: str | Path, *, title: str = "") -> Path:
    """Write the grid (pairs of rows: without, with augmentation) as a PNG, atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .fileutil import atomic_path

    count = len(before[0])
    columns = min(count, _COLUMNS)
    rows = 2 * math.ceil(count / columns)
    figure = Figure(figsize=(2.6 * columns, 2.7 * rows + 0.6), layout="constrained")
    FigureCanvasAgg(figure)
    for i in range(count):
        for pair, (images, labels), name in ((0, before, "original"), (1, after, "augmented")):
            axis = figure.add_subplot(rows, columns, (2 * (i // columns) + pair) * columns + i % columns + 1)
            _draw_patch(axis, _plane(images[i]), _plane(labels[i]))
            axis.set_title(f"{i + 1} {name}", fontsize=8)
    figure.suptitle(title, fontsize=8, wrap=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100)
    return Path(path)


def _draw_patch(axis: Any, image: np.ndarray, labels: np.ndarray) -> None:
    """The image in grey, classes > 0 in colour (alpha 0.4), the ignore label (< 0) hatched."""
    axis.imshow(image, cmap="gray", interpolation="nearest")
    if (labels > 0).any():
        axis.imshow(np.ma.masked_less_equal(labels, 0), cmap="tab10", vmin=1, vmax=10, alpha=0.4,
                    interpolation="nearest")
    if (labels < 0).any():
        axis.contourf(labels < 0, levels=[0.5, 1.5], colors="none", hatches=["///"])
    axis.set_axis_off()
