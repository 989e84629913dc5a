"""Blockwise, resumable prediction of volumes of any size into zarr / OME-Zarr.

The volume is cut into blocks aligned to the output's chunks (so no two blocks ever write the same chunk).
Each block is predicted with :func:`engine.tiling.predict_tiled` restricted to its region, on the same
global tile grid as a whole-image run, so the result equals the whole-image prediction; finished slabs
become labels (and optional probabilities) at once and go straight into the zarr arrays.

Bookkeeping: the output's attributes hold ``{"deepseg": {"complete": false, "fingerprint": ..., ...}}``
until every block is done; a block is recorded as finished by a small marker file written (atomically)
after its data, in ``.deepseg-blocks/`` inside the label array's folder. Running the same prediction
again recomputes only blocks without a marker; other models or options are refused. An NGFF label image
is listed in its container's ``labels`` only when complete, and :func:`engine.chunked_io.open_volume`
refuses an unfinished output.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .arrays import check_finite, label_dtype
from .chunked_io import (ChannelFirst, Volume, ZarrOutput, create_labels, create_probabilities, deepseg_record,
                         finish_labels, mark_complete, open_volume, plan_output, plan_probabilities, remove_output)
from .errors import InputError
from .model_files import LoadedModel, load_model
from .options import checked_keywords
from .progress import Progress, ProgressCallback, report

__all__ = ["predict_zarr", "blockwise_needed", "BlockPlan", "block_regions", "default_block", "run_block",
           "PROBABILITY_DTYPES"]

PROBABILITY_DTYPES = ("float32", "float16", "uint8")
MARKERS = ".deepseg-blocks"


# ------------------------------------------------------------------------------------------ geometry


def block_regions(shape: Sequence[int], block: Sequence[int]) -> list[tuple[slice, ...]]:
    """Regions of ``block``-sized blocks covering ``shape`` (last ones cut at the edge), C order.

    >>> block_regions((5, 4), (2, 4))
    [(slice(0, 2, None), slice(0, 4, None)), (slice(2, 4, None), slice(0, 4, None)), (slice(4, 5, None), slice(0, 4, None))]
    """
    regions: list[tuple[slice, ...]] = [()]
    for n, b in zip(shape, block):
        regions = [r + (slice(s, min(s + b, n)),) for r in regions for s in range(0, n, b)]
    return regions


def default_block(model: LoadedModel, shape: Sequence[int], tile: Sequence[int] | None) -> tuple[int, ...]:
    """Blocks of whole planes for stacks (4 tile depths for 3D networks, 16 planes for 2D ones), 1024 px
    squares for 2D images: small enough to resume and share out, large enough that the tiles shared by
    neighbouring blocks (computed twice) cost little."""
    if len(shape) == 2:
        return tuple(min(n, 1024) for n in shape)
    net = model.network
    depth = 16
    if net.spatial_dims == 3:
        from .prediction import default_tile

        depth = 4 * (tile[0] if tile else default_tile(model, shape)[0])
    return (min(shape[0], -(-depth // 16) * 16), int(shape[1]), int(shape[2]))


def _chunks(shape: Sequence[int], block: Sequence[int]) -> tuple[int, ...]:
    """Chunks that tile every block exactly (16 planes x 256 x 256 unless a block says otherwise)."""
    defaults = (16, 256, 256)[-len(shape):] if len(shape) == 3 else (256,) * len(shape)
    return tuple(min(c, n) if (b >= n or b % c == 0) else b for n, b, c in zip(shape, block, defaults))


def _check_block(block: Sequence[int] | None, shape: Sequence[int]) -> tuple[int, ...] | None:
    if block is None:
        return None
    block = tuple(int(b) for b in block)
    if len(block) == 1 and len(shape) > 1:
        block = block + tuple(shape[1:])  # one size: planes per block, whole planes
    if len(block) != len(shape) or min(block) < 1:
        raise InputError(f"block {list(block)} must be one positive size (planes) or one per spatial axis "
                         f"of the volume {list(shape)}")
    return tuple(min(b, n) for b, n in zip(block, shape))


# -------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class BlockPlan:
    """Everything needed to compute any block, picklable (sent to Dask workers once per block)."""

    model: str
    weights: str
    device: str
    source: str
    axes: str | None
    labels: str
    probabilities: str | None
    probabilities_dtype: str
    shape: tuple[int, ...]
    block: tuple[int, ...]
    lead: int  # leading axes of size 1 in the label array (NGFF t)
    options: dict[str, Any] = field(default_factory=dict)
    normalization: dict[str, Any] = field(default_factory=dict)

    @property
    def regions(self) -> list[tuple[slice, ...]]:
        return block_regions(self.shape, self.block)

    @property
    def markers(self) -> Path:
        return Path(self.labels) / MARKERS

    def fingerprint(self) -> str:
        """What makes two runs produce the same output: model weights, input, geometry and options."""
        keys = {"weights": self.weights, "shape": self.shape, "block": self.block, "options": self.options,
                "normalization": self.normalization, "probabilities": self.probabilities is not None,
                "probabilities_dtype": self.probabilities_dtype}
        return hashlib.sha256(json.dumps(keys, sort_keys=True, default=list).encode()).hexdigest()[:24]

    def finished(self) -> set[int]:
        """Indices of the blocks whose marker exists."""
        if not self.markers.is_dir():
            return set()
        return {int(p.name) for p in self.markers.iterdir() if p.name.isdigit()}


def _mark(plan: BlockPlan, index: int, counts: np.ndarray) -> None:
    """Record block ``index`` as finished (after its data): a marker file, renamed into place."""
    plan.markers.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{index}.", dir=plan.markers)
    with os.fdopen(fd, "w") as f:
        json.dump({"class_voxels": [int(c) for c in counts]}, f)
    os.replace(tmp, plan.markers / str(index))


def _counts(plan: BlockPlan, classes: int) -> np.ndarray:
    total = np.zeros(classes, np.int64)
    for index in plan.finished():
        counts = json.loads((plan.markers / str(index)).read_text())["class_voxels"]
        total[: len(counts)] += counts
    return total


# ------------------------------------------------------------------------------------------ a block


class _ZarrSink:
    """Turns finished probability slabs into labels (argmax) and writes them, and the probabilities in
    the requested dtype, into the zarr outputs; counts voxels per class."""

    def __init__(self, labels: Any, probabilities: Any, dtype: str, lead: int, classes: int):
        self.labels, self.probabilities, self.dtype, self.lead = labels, probabilities, dtype, lead
        self.counts = np.zeros(classes, np.int64)

    def write(self, region: tuple[slice, ...], values: np.ndarray) -> None:
        labels = values.argmax(0).astype(self.labels.dtype)
        self.labels[(0,) * self.lead + tuple(region)] = labels
        self.counts += np.bincount(labels.ravel(), minlength=len(self.counts))[: len(self.counts)]
        if self.probabilities is not None:
            self.probabilities[(slice(None), *region)] = quantize(values, self.dtype)


def quantize(values: np.ndarray, dtype: str) -> np.ndarray:
    """Probabilities as float32, float16, or uint8 holding ``round(p * 255)``."""
    if dtype == "uint8":
        return np.rint(np.clip(values, 0, 1) * 255).astype(np.uint8)
    return values.astype(dtype, copy=False)


@dataclass
class _State:
    """What one process keeps between blocks: the model (loaded once), the input and output arrays."""

    model: LoadedModel
    volume: Volume
    labels: Any
    probabilities: Any


_STATES: dict[tuple, _State] = {}


def _state(plan: BlockPlan, model: LoadedModel | None = None) -> _State:
    """This process's state for ``plan``: the model loaded once per process and model checksum (or the
    ``model`` given, in the driver's process)."""
    import zarr

    key = (plan.model, plan.weights, plan.device, plan.source, plan.labels, plan.probabilities, id(model))
    if key not in _STATES:
        model = model or load_model(plan.model, device=_worker_device(plan.device))
        probabilities = zarr.open_array(plan.probabilities, mode="r+") if plan.probabilities else None
        _STATES.clear()  # one plan at a time per process
        _STATES[key] = _State(model, open_volume(plan.source, plan.axes), zarr.open_array(plan.labels, mode="r+"),
                              probabilities)
    return _STATES[key]


def _worker_device(device: str) -> str:
    """``auto`` with several GPUs: pin this Dask worker to GPU ``worker index % count``, also as its current CUDA
    device (else whatever uses the current device makes a context on GPU 0 in every worker)."""
    if device != "auto":
        return device
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count < 2:
        return device
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return device
    index = (name if isinstance(name, int) else int(hashlib.sha256(str(name).encode()).hexdigest(), 16)) % count
    torch.cuda.set_device(index)
    return f"cuda:{index}"


def run_block(plan: BlockPlan, index: int, *, model: LoadedModel | None = None,
              progress: ProgressCallback | None = None) -> int:
    """Predict block ``index`` of ``plan`` into the outputs and record it as finished; returns ``index``."""
    from .normalization import Normalization

    state = _state(plan, model)
    region = plan.regions[index]
    sink = _ZarrSink(state.labels, state.probabilities, plan.probabilities_dtype, plan.lead, state.model.classes)
    norm = Normalization.from_dict(plan.normalization)
    _block_probabilities(state.model, state.volume.pixels, region, sink, norm, plan.options, progress)
    _mark(plan, index, sink.counts)
    return index


def _block_probabilities(model: LoadedModel, pixels: ChannelFirst, region: tuple[slice, ...], sink: Any,
                         norm: Any, options: dict[str, Any], progress: ProgressCallback | None) -> None:
    """The in-memory prediction's own tiling (engine.prediction), restricted to ``region``."""
    from .prediction import _probabilities

    _probabilities(model, pixels, out=sink, region=region, norm=norm, progress=progress, **options)


# ---------------------------------------------------------------------------------------- the driver


def blockwise_needed(source: str | Path, target: str | Path, cluster: Any = None) -> bool:
    """Whether predicting ``source`` into ``target`` goes block by block through :func:`predict_zarr` (a zarr /
    OME-Zarr output, or a Dask ``cluster``) rather than :func:`engine.prediction.predict_file` (a TIFF output
    written slab by slab in this process, from a TIFF, zarr or other input). A cluster with a non-zarr output is
    refused: workers write zarr.

    >>> blockwise_needed("scan.tif", "labels.tif"), blockwise_needed("scan.tif", "labels.ome.zarr")
    (False, True)
    >>> blockwise_needed("scan.ome.zarr", "labels.tif")
    False
    """
    from .chunked_io import is_zarr_path

    if cluster and not is_zarr_path(target):
        raise InputError(f"cluster {str(cluster)!r}: Dask workers write their blocks into zarr, not into "
                         f"{str(target)!r}; name the output *.zarr or *.ome.zarr")
    return bool(cluster) or is_zarr_path(target)


@checked_keywords
def predict_zarr(
    model: LoadedModel | str | Path,
    source: str | Path,
    target: str | Path,
    *,
    probabilities: str | Path | None = None,
    probabilities_dtype: str = "float32",
    label_name: str = "deepseg",
    axes: str | None = None,
    tile: Sequence[int] | None = None,
    overlap: float = 0.25,
    blend: str = "gaussian",
    batch: int | None = None,
    block: Sequence[int] | None = None,
    device: str = "auto",
    tta: bool = False,
    precision: str = "auto",
    cluster: Any = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Segment a volume of any size block by block into zarr / OME-Zarr; resumable and distributable.

    ``source``: an OME-Zarr image, a zarr array (``axes`` if it does not name them) or a TIFF
    (memory-mapped). ``target``: the input's own OME-Zarr container (labels go to ``labels/<label_name>``),
    another OME-Zarr image of the same shape, a new ``*.ome.zarr`` or a plain ``*.zarr`` array.
    ``probabilities``: optional ``*.zarr`` / ``*.ome.zarr`` path for ``(K, *spatial)`` probabilities in
    ``probabilities_dtype`` (float32, float16, or uint8 = round(p * 255)). ``block``: block size (planes,
    or one size per spatial axis). ``cluster``: None (this process), ``"local:N"`` (a Dask LocalCluster
    of N single-threaded worker processes), a scheduler address ``"tcp://host:8786"``, or a
    ``distributed.Client``. ``precision``: the network's arithmetic (see :func:`engine.predict`), resolved on each
    worker's device. An interrupted run is resumed by calling again with the same arguments;
    other models or options on an unfinished output are refused (``overwrite=True`` starts afresh).
    Returns a summary: paths, shape, block counts (``computed``, ``already_finished``), class voxel counts.
    """
    from .fileutil import refuse_overwriting

    if probabilities_dtype not in PROBABILITY_DTYPES:
        raise InputError(f"probabilities_dtype {probabilities_dtype!r} is not one of {PROBABILITY_DTYPES}")
    volume = open_volume(source, axes)
    out = plan_output(target, volume, label_name)
    probs = plan_probabilities(probabilities) if probabilities is not None else None
    refuse_overwriting({"the labels output": out.group or out.array,
                        "the probabilities output": probs.path if probs else None}, {"the input image": source})
    from .precision import check_precision

    model = load_model(model, device=device)
    check_volume(model, volume)
    plan = _make_plan(model, volume, out, probs, probabilities_dtype, dict(
        tile=tuple(tile) if tile else None, overlap=overlap, blend=blend, batch=batch, tta=tta,
        precision=check_precision(precision)), block, device)
    complete = _prepare_output(plan, out, probs, volume, model, overwrite)
    finished = set(range(len(plan.regions))) if complete else plan.finished()
    todo = [i for i in range(len(plan.regions)) if i not in finished]
    if todo:
        if cluster is None:
            _run_local(plan, model, todo, progress)
        else:
            from .distributed import run_blocks

            run_blocks(plan, todo, cluster, progress)
    counts = _finish(plan, out, probs, model.class_names)
    shutil.rmtree(plan.markers, ignore_errors=True)
    return {"labels": str(out.group or out.array), "probabilities": str(probabilities) if probabilities else None,
            "shape": list(volume.spatial_shape), "dims": list(volume.dims), "blocks": len(plan.regions),
            "computed": len(todo), "already_finished": len(plan.regions) - len(todo), "class_voxels": counts}


def check_volume(model: LoadedModel, volume: Volume) -> None:
    """Refuse a volume whose channels or dimensions do not fit the model (and one with NaN/inf)."""
    net = model.network
    channels, spatial = volume.pixels.shape[0], len(volume.dims)
    if channels != net.in_channels:
        raise InputError(f"image {str(volume.source)!r} has {channels} channel(s) but the model was trained on "
                         f"{net.in_channels}: give an image with {net.in_channels} channel(s)")
    if spatial < net.spatial_dims or (net.z_context > 1 and spatial != 3):
        raise InputError(f"model {net.name!r} ({net.spatial_dims}D, z context {net.z_context}) does not fit the "
                         f"{spatial}D image {str(volume.source)!r} (dims {volume.dims})")
    check_finite(volume.pixels, volume.name)


def _make_plan(model: LoadedModel, volume: Volume, out: ZarrOutput, probs: ZarrOutput | None, dtype: str,
               options: dict[str, Any], block: Sequence[int] | None, device: str) -> BlockPlan:
    shape = volume.spatial_shape
    block = _check_block(block, shape) or default_block(model, shape, options["tile"])
    norm = model.normalization.image_statistics(volume.pixels)  # once, for the whole volume
    weights = str(model.config.get("weights", {}).get("best", {}).get("sha256", ""))
    lead = 1 if out.ngff and any(a.get("type") == "time" for a in out.ngff.get("axes", [])) else 0
    return BlockPlan(str(model.path) if model.path else "", weights, str(device), str(volume.source),
                     volume.axes, str(out.array), str(probs.array) if probs else None, dtype,
                     tuple(shape), block, lead, options, norm.to_dict())


def _prepare_output(plan: BlockPlan, out: ZarrOutput, probs: ZarrOutput | None, volume: Volume, model: LoadedModel,
                    overwrite: bool) -> bool:
    """Create the outputs, or check that an existing one is this very prediction (to resume it).
    Returns whether that prediction is already complete."""
    fingerprint = plan.fingerprint()
    nodes = [out.group or out.array] + ([probs.group or probs.array] if probs else [])
    for node in nodes:
        if not node.exists():
            continue
        record = deepseg_record(node) or {}
        if record.get("fingerprint") != fingerprint:
            if not overwrite:
                what = "an unfinished prediction" if record.get("complete") is False else "existing data"
                raise InputError(f"output {str(node)!r} holds {what} made with another model, input or options: "
                                 "run the original command to finish it, or delete it (overwrite=True / --overwrite)")
            if node == nodes[0]:
                remove_output(out)
            else:
                shutil.rmtree(node)
    record = {"complete": False, "fingerprint": fingerprint, "blocks": len(plan.regions), "block": list(plan.block),
              "model": plan.model, "options": plan.options}
    if (deepseg_record(nodes[0]) or {}).get("complete"):
        return True
    chunks = _chunks(plan.shape, plan.block)
    create_labels(out, volume, dtype=label_dtype(model.classes), chunks=chunks, record=record,
                  class_names=model.class_names)
    if probs:
        create_probabilities(probs, volume, classes=model.classes, dtype=plan.probabilities_dtype,
                             chunks=chunks, record=record, class_names=model.class_names)
    return False


def _run_local(plan: BlockPlan, model: LoadedModel, todo: list[int], progress: ProgressCallback | None) -> None:
    total = len(plan.regions)
    done = total - len(todo)
    report(progress, Progress("blocks", done, total, f"{done} of {total} blocks already finished"))
    for index in todo:
        run_block(plan, index, model=model, progress=_tile_progress(progress, done, total, index))
        done += 1
        report(progress, Progress("blocks", done, total, f"block {index + 1} finished"))


def _tile_progress(progress: ProgressCallback | None, done: int, total: int, index: int) -> ProgressCallback | None:
    """Tile progress inside block ``index`` shown on the block bar (and the callback's cancel honoured)."""
    if progress is None:
        return None
    return lambda p: progress(Progress("blocks", done, total, f"block {index + 1}: tiles {p.done}/{p.total}"))


def _finish(plan: BlockPlan, out: ZarrOutput, probs: ZarrOutput | None, class_names: list[str]) -> dict[str, int]:
    """Mark the outputs complete once every block is recorded, then list the NGFF label image.
    Returns the voxel count per class (summed from the block markers, kept in the output's record)."""
    record = deepseg_record(out.group or out.array) or {}
    if record.get("complete"):
        finish_labels(out)
        return dict(record.get("class_voxels", {}))
    missing = len(plan.regions) - len(plan.finished())
    if missing:
        raise InputError(f"{missing} block(s) of {str(out.array)!r} are not finished; run the command again")
    nodes = [node for part in (probs, out) if part for node in (part.array, part.group) if node is not None]
    counts = dict(zip(class_names, _counts(plan, len(class_names)).tolist()))
    from .pyramid import write_pyramid

    write_pyramid(out)  # NGFF label levels 1..n (rewritten if an earlier run died here), before "complete"
    mark_complete(nodes, class_voxels=counts)  # the label image last: it says whether the whole output is complete
    finish_labels(out)
    return counts
