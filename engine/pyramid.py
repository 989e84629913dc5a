"""Multiscale pyramids for NGFF label images (levels ``1..n`` beside level ``0``), written chunk by chunk.

Labels are never averaged: every voxel of level ``k`` is a voxel of level 0, picked by strided (nearest)
sampling. A :class:`Level` says which: along each axis, element ``i`` of level ``k`` is level-0 element
``min(offset + factor * i, n0 - 1)``.

Which levels: beside an image with several levels (:func:`match_image_levels`) the label levels copy the
image's shapes and transforms (the factor is ``round(n0 / nk)``, the offset comes from the translation
difference, so both "mean pyramid" (shifted) and "stride" conventions pick the voxel at the centre of
each coarse voxel); otherwise (:func:`choose_levels`) y and x are halved per level and z only while its
voxel size stays within twice the in-plane one, down to an in-plane side of 64 voxels, 5 levels at most.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["Level", "choose_levels", "generic_levels", "match_image_levels", "level_transforms", "write_level",
           "write_pyramid", "MIN_SIDE", "MAX_LEVELS"]

MIN_SIDE = 64  # no level whose largest in-plane side is below this
MAX_LEVELS = 5  # extra levels at most
REGION_VOXELS = 1 << 24  # voxels of level k computed at once (bounded memory, any volume size)


@dataclass(frozen=True)
class Level:
    """One pyramid level of a label array: shape, per-axis factor and offset in level-0 voxels, and its NGFF
    ``coordinateTransformations``."""

    shape: tuple[int, ...]
    factors: tuple[int, ...]
    offsets: tuple[int, ...]
    transforms: tuple[dict[str, Any], ...]

    def picks(self, shape0: Sequence[int]) -> list[np.ndarray]:
        """Per axis, the level-0 index of every element of this level."""
        return [np.minimum(o + f * np.arange(n), n0 - 1)
                for n, f, o, n0 in zip(self.shape, self.factors, self.offsets, shape0)]


# ------------------------------------------------------------------------------------------- choice


def choose_levels(shape: Sequence[int], scale: Sequence[float], names: Sequence[str]) -> list[tuple[int, ...]]:
    """Cumulative per-axis factors of levels 1..n for a label array of ``shape`` with voxel size ``scale``
    and axis ``names`` (NGFF: ``t``, ``z``, ``y``, ``x``).

    y and x are halved per level; z as well while that keeps its voxel size within twice the (finer) in-plane
    voxel size of that level. Stops before a level whose largest in-plane side is below :data:`MIN_SIDE`.

    >>> choose_levels((100, 512, 512), (4.0, 1.0, 1.0), "zyx")
    [(1, 2, 2), (2, 4, 4), (4, 8, 8)]
    >>> choose_levels((64, 100), (1.0, 1.0), "yx")
    []
    """
    names = [str(n).lower() for n in names]
    plane = [i for i, n in enumerate(names) if n in ("y", "x")]
    z = names.index("z") if "z" in names else None
    factors, levels = [1] * len(shape), []
    while plane and len(levels) < MAX_LEVELS:
        following = list(factors)
        for i in plane:
            following[i] *= 2
        if max(math.ceil(shape[i] / following[i]) for i in plane) < MIN_SIDE:
            break
        if z is not None and math.ceil(shape[z] / factors[z]) > 1:
            in_plane = min(scale[i] * following[i] for i in plane)
            if scale[z] * factors[z] * 2 <= 2 * in_plane:
                following[z] *= 2
        factors = following
        levels.append(tuple(factors))
    return levels


def generic_levels(shape: Sequence[int], transforms: Sequence[dict[str, Any]], names: Sequence[str]) -> list[Level]:
    """Levels 1..n of :func:`choose_levels` for a label array whose level 0 has ``transforms``: stride picks
    from index 0, scale = level-0 scale x factor, translation = level 0's."""
    scale, _ = _scale_translation(transforms, len(shape))
    return [Level(tuple(-(-n // f) for n, f in zip(shape, factors)), factors, (0,) * len(shape),
                  level_transforms(transforms, factors))
            for factors in choose_levels(shape, scale, names)]


def level_transforms(transforms: Sequence[dict[str, Any]], factors: Sequence[int]) -> tuple[dict[str, Any], ...]:
    """NGFF transforms of a level picked with ``factors`` from index 0 of a level 0 with ``transforms``."""
    scale, translation = _scale_translation(transforms, len(factors))
    out: list[dict[str, Any]] = [{"type": "scale", "scale": [float(s * f) for s, f in zip(scale, factors)]}]
    if any(t.get("type") == "translation" for t in transforms):
        out.append({"type": "translation", "translation": [float(t) for t in translation]})
    return tuple(out)


def match_image_levels(datasets: Sequence[dict[str, Any]], axes: Sequence[dict[str, Any]]) -> list[Level]:
    """Label levels 1..n matching an image's levels: ``datasets`` are the image's multiscale datasets with
    their array ``shape``; ``axes`` its NGFF axes (the channel axis is dropped)."""
    keep = [i for i, a in enumerate(axes) if a.get("type") != "channel"]
    first = datasets[0]
    shape0 = [first["shape"][i] for i in keep]
    scale0, translation0 = _scale_translation(_keep(first.get("coordinateTransformations", []), keep), len(keep))
    levels = []
    for dataset in datasets[1:]:
        transforms = _keep(dataset.get("coordinateTransformations", []), keep)
        shape = tuple(int(dataset["shape"][i]) for i in keep)
        _, translation = _scale_translation(transforms, len(keep))
        factors = tuple(max(1, round(n0 / n)) for n0, n in zip(shape0, shape))
        offsets = tuple(int(np.clip(round((t - t0) / s0), 0, f - 1))
                        for t, t0, s0, f in zip(translation, translation0, scale0, factors))
        levels.append(Level(shape, factors, offsets, tuple(transforms)))
    return levels


def _keep(transforms: Sequence[dict[str, Any]], keep: Sequence[int]) -> list[dict[str, Any]]:
    from .chunked_io import _drop_axes

    return [_drop_axes(t, list(keep)) for t in transforms]


def _scale_translation(transforms: Sequence[dict[str, Any]], ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """The overall scale and translation of NGFF transforms (scale first, then translation)."""
    scale, translation = np.ones(ndim), np.zeros(ndim)
    for t in transforms:
        if t.get("type") == "scale" and "scale" in t:
            scale, translation = scale * np.asarray(t["scale"], float), translation * np.asarray(t["scale"], float)
        elif t.get("type") == "translation" and "translation" in t:
            translation = translation + np.asarray(t["translation"], float)
    return scale, translation


# ------------------------------------------------------------------------------------------ writing


def write_level(source: Any, target: Any, picks: Sequence[np.ndarray], region_voxels: int = REGION_VOXELS) -> None:
    """Fill ``target`` (a zarr array) region by region with ``source[picks]`` (orthogonal integer picks,
    one index array per axis, ``len(picks[i]) == target.shape[i]``). Regions are whole target chunks, at
    most ``region_voxels`` voxels (widened in-plane first), so memory does not grow with the volume."""
    for region in _regions(target.shape, target.chunks, region_voxels):
        target[region] = source.get_orthogonal_selection(tuple(p[r] for p, r in zip(picks, region)))


def _regions(shape: Sequence[int], chunks: Sequence[int], budget: int) -> list[tuple[slice, ...]]:
    """Chunk-aligned regions of ``shape``: whole chunks, widened (last axes first) to at most ``budget``
    voxels (or one chunk)."""
    from .blockwise import block_regions

    size = [min(c, n) for c, n in zip(chunks, shape)]
    for axis in reversed(range(len(shape))):
        others = math.prod(size) // size[axis]
        widths = max(1, budget // max(1, others * size[axis]))
        size[axis] = min(int(shape[axis]), size[axis] * widths)
    return block_regions(shape, size)


def _source(level: Level, written: Sequence[tuple[Level, Any]], shape0: Sequence[int]) -> tuple[Any, list[np.ndarray]]:
    """The coarsest written level holding every voxel ``level`` picks, and the picks in it."""
    needed = level.picks(shape0)
    best = None
    for done, array in written:
        inside = [(p - o) // f for p, o, f in zip(needed, done.offsets, done.factors)]
        if all(np.all(p >= o) and np.all((p - o) % f == 0) and np.all(i < n)
               for p, o, f, i, n in zip(needed, done.offsets, done.factors, inside, done.shape)):
            if best is None or math.prod(done.factors) > math.prod(best[0].factors):
                best = (done, array, inside)
    assert best is not None, "level 0 holds every voxel"
    return best[1], best[2]


def write_pyramid(out: Any) -> list[Level]:
    """Write levels 1..n of the NGFF label image of ``out`` (:class:`engine.chunked_io.ZarrOutput`, kind
    ``labels`` or ``ome``) from its finished level 0 and list them in its multiscales metadata. Existing
    level arrays (an interrupted earlier run) are rewritten. Plain zarr outputs get none."""
    if out.group is None or out.kind not in ("labels", "ome"):
        return []
    import zarr

    from .chunked_io import _ngff_metadata, write_label_levels

    group = zarr.open_group(str(out.group), mode="r")
    multiscale = _ngff_metadata(group)["multiscales"][0]
    level0 = zarr.open_array(str(out.array), mode="r")
    datasets = (out.ngff or {}).get("datasets") or []
    if out.kind == "labels" and len(datasets) > 1:
        levels = match_image_levels(datasets, out.ngff["axes"])
    else:
        names = [a["name"] if isinstance(a, dict) else a for a in multiscale.get("axes", [])]
        transforms = multiscale["datasets"][0].get("coordinateTransformations", [])
        levels = generic_levels(level0.shape, transforms, names)
    identity = Level(tuple(level0.shape), (1,) * level0.ndim, (0,) * level0.ndim, ())
    written: list[tuple[Level, Any]] = [(identity, level0)]
    for k, level in enumerate(levels, start=1):
        target = _create_level(Path(out.group) / str(k), level0, level.shape)
        source, picks = _source(level, written, level0.shape)
        write_level(source, target, picks)
        written.append((level, target))
    write_label_levels(out, [multiscale["datasets"][0]] + [
        {"path": str(k), "coordinateTransformations": list(level.transforms)} for k, level in enumerate(levels, 1)])
    return levels


def _create_level(path: Path, level0: Any, shape: Sequence[int]) -> Any:
    """An empty level array like ``level0`` (dtype, chunk shape clipped to ``shape``, zarr format, names)."""
    import zarr

    from .chunked_io import _create_array

    if path.exists():
        shutil.rmtree(path)
    zarr_format = level0.metadata.zarr_format
    names = getattr(level0.metadata, "dimension_names", None) if zarr_format == 3 else None
    chunks = tuple(min(c, n) for c, n in zip(level0.chunks, shape))
    return _create_array(zarr, path, tuple(shape), chunks, level0.dtype, names, {}, zarr_format)
