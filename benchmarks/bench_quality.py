"""Quality at equal wall time: deepseg with its defaults against a plain MONAI U-Net loop (run by hand).

    python benchmarks/bench_quality.py [--seconds 120] [--only 2d|3d|real|synthetic|NAME[,...]] [--threads 2]
                                       [--seeds 1,2,3] [--deepseg OPTION=VALUE ...] [--methods deepseg]

For every dataset, two fresh subprocesses (so threads and memory do not interfere) train for the same
wall-clock time on the same training part, then segment the held-out part:

* **deepseg**: ``engine.training.train`` with its defaults and ``time_budget=SECONDS`` only (the budget
  counts from the call, so loading, validation and saving are inside it); with ``network="auto"`` (the
  default) the plan chooses network, patch and batch. Only if the default network were a fixed 2D one
  and the data 3D, the network is the one ``engine.plan.choose_network`` picks from the voxel size
  (``unet3d`` or ``unet3d_aniso``); the notes say so. Held-out part: ``engine.prediction.predict``.
* **MONAI**: ``monai.networks.nets.UNet`` (channels 16-256, strides 2, 2 residual units, batch norm, as in
  the MONAI tutorials), Dice-CE loss (masked where the annotation is sparse), random flips on every axis,
  Adam 1e-3, z-score normalization from the training part, uniformly random patches of deepseg's patch
  size (rounded up to the U-Net's multiple of 16) and batch; steps until the time is spent; held-out part
  with ``sliding_window_inference`` (overlap 0.25, Gaussian blending).

Both clocks start before the data are prepared and both do at least one step, so a run can end past
the budget; the table prints the training seconds each really took.

Datasets (foreground Dice on the held-out part, ``engine.metrics.evaluate``):

* ``ct_head_bone`` (3D, real): head CT, bone; trains on slices 0-71, tested on slices 72-107.
* ``lm_huh7_nuclei`` (2D, real): nuclei, frame 20, sparse annotation (mask); trains on columns 0-319,
  tested on columns 320-511 inside the mask (the whole frame is segmented, as in benchmarks/real_data.py).
* ``blobs2d``, ``blobs3d``, ``blobs3d_aniso`` (synthetic, ``engine.synthetic.blobs``; Z voxels 3x the
  in-plane size and blur to match in the last): a training image and a separately drawn test image.
* ``cells2d`` (synthetic): Voronoi cells whose membranes (2-3 px) are the foreground, with cytoplasm
  texture and noise: thin structures, unlike the blobs.

Real data come from ``make data`` (``.data/``); datasets whose files are missing are skipped with a note.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

METHODS = ("deepseg", "monai")
MONAI_MULTIPLE = 16  # MONAI's UNet with four stride-2 levels needs sizes divisible by 2**4


# ------------------------------------------------------------------------------------------- data
@dataclass
class Split:
    """A training part and a held-out part of one dataset. Arrays are spatial ((Z)YX), labels 0/1.

    ``test_image`` is what gets segmented; Dice is taken on ``test_region`` of the prediction against
    ``test_labels`` (inside ``test_mask`` where given). Masks: 1 = annotated."""

    train_image: np.ndarray
    train_labels: np.ndarray
    test_image: np.ndarray
    test_labels: np.ndarray
    spacing: tuple[float, ...]
    train_mask: np.ndarray | None = None
    test_mask: np.ndarray | None = None
    test_region: tuple[slice, ...] | None = None

    @property
    def dims(self) -> int:
        return self.train_image.ndim

    @property
    def axes(self) -> str:
        return "ZYX"[-self.dims:]


def ct_head_bone(data: Path) -> Split:
    from engine import read_image

    image = read_image(data / "ct_head_bone" / "image.tif")
    labels = read_image(data / "ct_head_bone" / "label.tif").values.astype(np.uint8)
    spacing = tuple(float(image.attrs["spacing"][d]) for d in ("pln", "row", "col"))
    values = image.values
    return Split(values[:72], labels[:72], values[72:], labels[72:], spacing)


def lm_huh7_nuclei(data: Path) -> Split:
    from engine import read_image

    frame = read_image(data / "lm_huh7_nuclei" / "image.tif").values[20]
    foreground = (read_image(data / "lm_huh7_nuclei" / "labels.tif").values[20] > 0).astype(np.uint8)
    mask = (read_image(data / "lm_huh7_nuclei" / "mask.tif").values[20] > 0).astype(np.uint8)
    cut = 320
    return Split(frame[:, :cut], foreground[:, :cut], frame, foreground[:, cut:], (1.0, 1.0),
                 train_mask=mask[:, :cut], test_mask=mask[:, cut:], test_region=(slice(None), slice(cut, None)))


def _blobs(train_shape: tuple[int, ...], test_shape: tuple[int, ...], seed: int,
           spacing: tuple[float, ...] | None = None, blur: float = 1.0) -> Split:
    from engine.synthetic import blobs

    image, labels = blobs(train_shape, spacing=spacing, blur=blur, seed=seed)
    test_image, test_labels = blobs(test_shape, spacing=spacing, blur=blur, seed=seed + 1)
    return Split(image, labels, test_image, test_labels, spacing or (1.0,) * len(train_shape))


def blobs2d(data: Path) -> Split:
    return _blobs((384, 384), (256, 256), seed=11)


def blobs3d(data: Path) -> Split:
    return _blobs((48, 96, 96), (32, 96, 96), seed=21)


def blobs3d_aniso(data: Path) -> Split:
    return _blobs((24, 128, 128), (16, 128, 128), seed=31, spacing=(3.0, 1.0, 1.0), blur=1.5)


def voronoi_membranes(shape: tuple[int, ...], seed: int, cell: float = 24.0,
                      noise: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    """Voronoi cells of about ``cell`` px with bright 2-3 px membranes (the foreground, exact), cytoplasm
    texture and Gaussian noise; ``(uint8 image, uint8 labels)``."""
    from scipy import ndimage as ndi
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    count = max(4, int(np.prod(shape) / cell ** len(shape)))
    points = rng.uniform(0, shape, size=(count, len(shape)))
    _, nearest = cKDTree(points).query(np.indices(shape).reshape(len(shape), -1).T)
    cells = nearest.reshape(shape)
    membrane = np.zeros(shape, dtype=bool)
    for axis in range(len(shape)):
        edge = np.diff(cells, axis=axis) != 0
        membrane[tuple(slice(1, None) if a == axis else slice(None) for a in range(len(shape)))] |= edge
        membrane[tuple(slice(None, -1) if a == axis else slice(None) for a in range(len(shape)))] |= edge
    texture = 0.12 * ndi.gaussian_filter(rng.normal(0, 1, shape), 2.0) / 0.1
    image = 0.2 + 0.5 * ndi.gaussian_filter(membrane.astype(np.float64), 1.0) + 0.05 * texture
    image = np.clip(image + rng.normal(0, noise * 0.25, shape), 0.0, 1.0)
    return np.round(image * 255).astype(np.uint8), membrane.astype(np.uint8)


def cells2d(data: Path) -> Split:
    image, labels = voronoi_membranes((384, 384), seed=41)
    test_image, test_labels = voronoi_membranes((256, 256), seed=42)
    return Split(image, labels, test_image, test_labels, (1.0, 1.0))


DATASETS: dict[str, Callable[[Path], Split]] = {
    "ct_head_bone": ct_head_bone, "lm_huh7_nuclei": lm_huh7_nuclei, "blobs2d": blobs2d, "cells2d": cells2d,
    "blobs3d": blobs3d, "blobs3d_aniso": blobs3d_aniso,
}
GROUPS = {
    "2d": ["lm_huh7_nuclei", "blobs2d", "cells2d"], "3d": ["ct_head_bone", "blobs3d", "blobs3d_aniso"],
    "real": ["ct_head_bone", "lm_huh7_nuclei"], "synthetic": ["blobs2d", "cells2d", "blobs3d", "blobs3d_aniso"],
    "ct": ["ct_head_bone"], "nuclei": ["lm_huh7_nuclei"],
}
REAL_FILES = {"ct_head_bone": "ct_head_bone/image.tif", "lm_huh7_nuclei": "lm_huh7_nuclei/image.tif"}


def select(only: str | None) -> list[str]:
    """Dataset names from ``--only``: comma-separated dataset names or groups (all when None)."""
    if not only:
        return list(DATASETS)
    chosen: list[str] = []
    for word in (w.strip() for w in only.split(",") if w.strip()):
        names = GROUPS.get(word) or ([word] if word in DATASETS else None)
        if names is None:
            raise ValueError(f"--only {word!r}: expected a dataset ({', '.join(DATASETS)}) "
                             f"or a group ({', '.join(GROUPS)})")
        chosen += [n for n in names if n not in chosen]
    return chosen


def foreground_dice(prediction: np.ndarray, split: Split) -> float:
    """Foreground (class 1) Dice of ``prediction`` (labels of ``test_image``) on the held-out part."""
    from engine.metrics import evaluate

    region = prediction[split.test_region] if split.test_region is not None else prediction
    report = evaluate(region.astype(np.uint8), split.test_labels, classes=2, mask=split.test_mask, surface=False)
    return float(report.dice[1])


# ----------------------------------------------------------------------------------------- deepseg
def deepseg_network(split: Split) -> tuple[dict[str, Any], str]:
    """Overrides of deepseg's defaults for ``split`` (only the network, only for 3D data when the default
    network is 2D) and a note saying so."""
    from engine import TrainConfig, build
    from engine.plan import Fingerprint, choose_network

    default = next(f.default for f in dataclasses.fields(TrainConfig) if f.name == "network")
    if split.dims == 2 or default in (None, "auto") or build(default, in_channels=1, classes=2).spatial_dims == 3:
        return {}, ""
    data = Fingerprint(3, tuple(split.train_image.shape), tuple(split.spacing), 1, None)
    network, _ = choose_network(data)
    return {"network": network}, f"network={network} (default {default} is 2D)"


def run_deepseg(split: Split, seconds: float, out: Path, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train deepseg with its defaults (or ``options``, for ablations) for ``seconds`` (``time_budget``), segment the
    held-out part."""
    from engine import as_image
    from engine.prediction import predict
    from engine.training import train

    overrides, note = deepseg_network(split)
    if options:
        overrides.update(options)
        note = ", ".join(filter(None, [note, " ".join(f"{k}={v}" for k, v in options.items())]))
    spacing = dict(zip(("pln", "row", "col")[-split.dims:], split.spacing))
    masks = None if split.train_mask is None else [split.train_mask]
    began = time.perf_counter()
    result = train(images=[as_image(split.train_image, split.axes, spacing=spacing)], labels=[split.train_labels],
                   masks=masks, axes=split.axes, out=str(out), time_budget=seconds, **overrides)
    trained = time.perf_counter() - began
    began = time.perf_counter()
    labels = predict(result.model_dir, as_image(split.test_image, split.axes, spacing=spacing)).labels.values
    predicted = time.perf_counter() - began
    saved = json.loads((Path(result.model_dir) / "config.json").read_text(encoding="utf-8"))
    options, used = saved["network_options"], saved["training"]["config"]
    note = ", ".join(filter(None, [note, f"used augmentation {used['augmentation']}, "  # what "auto" resolved to
                                         f"validation {used['validation_fraction']:g}"]))
    return {"dice": foreground_dice(labels, split), "steps": int(sum(r.get("steps", 0) for r in result.history)),
            "train_seconds": trained, "predict_seconds": predicted, "patch": saved["patch"],
            "batch": saved["training"]["config"]["batch"],
            "network": f"{saved['network']} depth {options.get('depth')} filters {options.get('filters')} "
                       f"stem {options.get('stem', '-')}",
            "note": note}


# ------------------------------------------------------------------------------------------- MONAI
def monai_patch(patch: Sequence[int]) -> tuple[int, ...]:
    """``patch`` rounded up to the sizes MONAI's four-level UNet accepts."""
    return tuple(-(-int(p) // MONAI_MULTIPLE) * MONAI_MULTIPLE for p in patch)


def _padded(array: np.ndarray, patch: Sequence[int], mode: str) -> np.ndarray:
    """``array`` padded at the end of every axis shorter than ``patch``."""
    pad = [(0, max(0, p - s)) for p, s in zip(patch, array.shape)]
    return np.pad(array, pad, mode=mode) if any(after for _, after in pad) else array


class PatchBatches:
    """Uniformly random patches with a random flip per axis, as MONAI's RandSpatialCrop + RandFlip."""

    def __init__(self, split: Split, patch: Sequence[int], batch: int, seed: int) -> None:
        image = split.train_image.astype(np.float32)
        self.mean, self.std = float(image.mean()), float(image.std()) or 1.0
        self.patch, self.batch = tuple(patch), batch
        self.image = _padded((image - self.mean) / self.std, patch, "reflect")
        self.labels = _padded(split.train_labels.astype(np.int64), patch, "reflect")
        mask = split.train_mask
        self.mask = None if mask is None else _padded(mask.astype(np.float32), patch, "constant")
        self.rng = np.random.default_rng(seed)

    def normalized(self, image: np.ndarray) -> np.ndarray:
        return ((image.astype(np.float32) - self.mean) / self.std).astype(np.float32)

    def next(self) -> tuple[Any, Any, Any]:
        import torch

        picked: list[list[np.ndarray]] = []
        for _ in range(self.batch):
            start = [int(self.rng.integers(0, s - p + 1)) for s, p in zip(self.image.shape, self.patch)]
            window = tuple(slice(a, a + p) for a, p in zip(start, self.patch))
            arrays = [a[window] for a in (self.image, self.labels, self.mask) if a is not None]
            flips = tuple(axis for axis in range(len(self.patch)) if self.rng.random() < 0.5)
            picked.append([np.flip(a, flips) if flips else a for a in arrays])
        stacked = [torch.from_numpy(np.ascontiguousarray(np.stack(column))[:, None]) for column in zip(*picked)]
        return stacked[0], stacked[1], stacked[2] if len(stacked) > 2 else None


def dice_ce(masked: bool) -> Callable[[Any, Any, Any], Any]:
    """MONAI's Dice-CE loss; with a mask (sparse annotation), Dice and CE only where annotated."""
    import torch.nn.functional as F
    from monai.losses import DiceCELoss, MaskedDiceLoss

    if not masked:
        plain = DiceCELoss(to_onehot_y=True, softmax=True)
        return lambda logits, labels, mask: plain(logits, labels)
    dice = MaskedDiceLoss(to_onehot_y=True, softmax=True)

    def loss(logits: Any, labels: Any, mask: Any) -> Any:
        ce = F.cross_entropy(logits, labels[:, 0], reduction="none") * mask[:, 0]
        return dice(logits, labels, mask=mask) + ce.sum() / mask.sum().clamp(min=1.0)

    return loss


def monai_unet(dims: int) -> Any:
    from monai.networks.layers import Norm
    from monai.networks.nets import UNet

    return UNet(spatial_dims=dims, in_channels=1, out_channels=2, channels=(16, 32, 64, 128, 256),
                strides=(2, 2, 2, 2), num_res_units=2, norm=Norm.BATCH)


def run_monai(split: Split, seconds: float, patch: Sequence[int], batch: int, seed: int = 2) -> dict[str, Any]:
    """Train the plain MONAI loop for ``seconds`` of wall time, segment the held-out part."""
    import torch
    from monai.inferers import sliding_window_inference

    began = time.perf_counter()
    torch.manual_seed(seed)
    patch = monai_patch(patch)
    batches = PatchBatches(split, patch, batch, seed)
    network = monai_unet(split.dims)
    optimizer = torch.optim.Adam(network.parameters(), 1e-3)
    loss_fn = dice_ce(split.train_mask is not None)
    steps = 0
    network.train()
    while steps == 0 or time.perf_counter() - began < seconds:  # one step at least, as deepseg
        image, labels, mask = batches.next()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(network(image), labels, mask).backward()
        optimizer.step()
        steps += 1
    trained = time.perf_counter() - began
    began = time.perf_counter()
    network.eval()
    with torch.no_grad():
        test = torch.from_numpy(batches.normalized(split.test_image))[None, None]
        logits = sliding_window_inference(test, patch, batch, network, overlap=0.25, mode="gaussian")
    labels = logits.argmax(1)[0].numpy()
    predicted = time.perf_counter() - began
    return {"dice": foreground_dice(labels, split), "steps": steps, "train_seconds": trained,
            "predict_seconds": predicted, "patch": list(patch), "batch": batch,
            "network": "monai UNet 16-256 res2", "note": ""}


# ------------------------------------------------------------------------------------ subprocesses
def deepseg_options(items: Sequence[str]) -> dict[str, Any]:
    """``["validation_fraction=0.1", "augmentation=light"]`` -> ``{"validation_fraction": 0.1, "augmentation": "light"}``."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--deepseg {item!r}: expected OPTION=VALUE, e.g. validation_fraction=0.1")
        try:
            options[key] = json.loads(text)
        except ValueError:
            options[key] = text
    return options



def worker(args: argparse.Namespace) -> int:
    """One method on one dataset, in this (fresh) process; writes the result as JSON to ``args.result``."""
    import torch

    torch.set_num_threads(args.threads)
    split = DATASETS[args.dataset](args.data)
    with tempfile.TemporaryDirectory(prefix="bench_quality_") as tmp:
        if args.worker == "deepseg":
            result = run_deepseg(split, args.seconds, Path(tmp) / "model", deepseg_options(args.deepseg))
        else:
            result = run_monai(split, args.seconds, args.patch, args.batch, seed=args.seed)
    Path(args.result).write_text(json.dumps(result), encoding="utf-8")
    return 0


def run_worker(method: str, dataset: str, args: argparse.Namespace, patch: Sequence[int] | None = None,
               batch: int | None = None, seed: int | None = None) -> dict[str, Any]:
    """Run one method on one dataset in a fresh subprocess; its result, or ``{"error": ...}``."""
    with tempfile.TemporaryDirectory(prefix="bench_quality_") as tmp:
        result_file = Path(tmp) / "result.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--dataset", dataset,
                   "--seconds", str(args.seconds), "--threads", str(args.threads), "--data", str(args.data),
                   "--result", str(result_file)]
        if patch is not None:
            command += ["--patch", ",".join(map(str, patch)), "--batch", str(batch)]
        if seed is not None:
            command += ["--seed", str(seed)]
        if method == "deepseg":
            command += [item for option in args.deepseg for item in ("--deepseg", option)]
            if seed is not None and not any(item.startswith("seed=") for item in args.deepseg):
                command += ["--deepseg", f"seed={seed}"]
        threads = str(args.threads)
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=3 * args.seconds + 900)
        if done.returncode != 0 or not result_file.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            return {"error": f"{method} exited with {done.returncode}: {tail[0]}"}
        return json.loads(result_file.read_text(encoding="utf-8"))


def compare(dataset: str, args: argparse.Namespace) -> dict[str, Any]:
    """deepseg, then MONAI with deepseg's patch and batch, on ``dataset``, once per seed of ``args.seeds``
    (each method gets the same seed); a row of the table (Dice and the rest averaged over the seeds)."""
    row: dict[str, Any] = {"dataset": dataset}
    if dataset in REAL_FILES and not (args.data / REAL_FILES[dataset]).is_file():
        return {**row, "error": f"missing {args.data / REAL_FILES[dataset]} (run `make data`)"}
    ours_runs, their_runs = [], []
    for seed in args.seeds:
        ours = run_worker("deepseg", dataset, args, seed=seed)
        if "error" in ours:
            return {**row, "error": ours["error"]}
        ours_runs.append(ours)
        if "monai" in args.methods:
            their_runs.append(run_worker("monai", dataset, args, ours["patch"], ours["batch"], seed=seed))
    if not their_runs:
        return {**row, "seeds": list(args.seeds), "deepseg": averaged(ours_runs), "monai": {"skipped": True}}
    theirs = next((run for run in their_runs if "error" in run), None) or averaged(their_runs)
    return {**row, "seeds": list(args.seeds), "deepseg": averaged(ours_runs), "monai": theirs}


def averaged(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One result from the runs of several seeds: Dice, steps and seconds averaged, Dice per seed and its
    standard deviation kept; the other fields from the first run."""
    dices = [run["dice"] for run in runs]
    result = {**runs[0], "dice": float(np.mean(dices)), "dice_sd": float(np.std(dices)), "dices": dices,
              "steps": int(round(np.mean([run["steps"] for run in runs])))}
    for key in ("train_seconds", "predict_seconds"):
        result[key] = float(np.mean([run[key] for run in runs]))
    return result


def format_table(rows: Sequence[dict[str, Any]], seconds: float) -> str:
    """The results as a fixed-width table, one line per dataset, then notes."""
    head = (f"{'dataset':<16}{'deepseg Dice':>13}{'MONAI Dice':>12}{'steps ds':>10}{'steps MONAI':>13}"
            f"{'train s ds':>12}{'train s MONAI':>15}")
    lines = [f"equal wall time per method: {seconds:g} s of training", head, "-" * len(head)]
    spread: list[str] = []
    notes: list[str] = []
    for row in rows:
        name, ours, theirs = row["dataset"], row.get("deepseg", {}), row.get("monai", {})
        if "error" in row or "error" in theirs:
            lines.append(f"{name:<16}  skipped: {row.get('error') or theirs['error']}")
            continue
        if theirs.get("skipped"):  # --methods deepseg: an ablation of deepseg alone
            theirs = {"dice": float("nan"), "dices": [], "dice_sd": float("nan"), "steps": 0, "train_seconds": 0.0,
                      "predict_seconds": 0.0, "patch": "-", "batch": "-"}
        lines.append(f"{name:<16}{ours['dice']:>13.4f}{theirs['dice']:>12.4f}{ours['steps']:>10d}"
                     f"{theirs['steps']:>13d}{ours['train_seconds']:>12.1f}{theirs['train_seconds']:>15.1f}")
        if len(ours.get("dices", [])) > 1:
            spread.append(f"  {name}: seeds {row.get('seeds')}: deepseg " + " ".join(f"{d:.4f}" for d in ours["dices"])
                          + f" (sd {ours['dice_sd']:.4f}), MONAI " + " ".join(f"{d:.4f}" for d in theirs["dices"])
                          + f" (sd {theirs['dice_sd']:.4f})")
        notes.append(f"  {name}: deepseg {ours['network']}, patch {ours['patch']} batch {ours['batch']}"
                     f"{', ' + ours['note'] if ours['note'] else ''}; MONAI patch {theirs['patch']} batch "
                     f"{theirs['batch']}; predict s deepseg {ours['predict_seconds']:.1f}, MONAI "
                     f"{theirs['predict_seconds']:.1f}")
    if spread:
        lines[0] += " (Dice, steps and seconds: means over the seeds)"
    return "\n".join(lines + (["Dice per seed:"] + spread if spread else []) + (["notes:"] + notes if notes else []))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120.0, help="training wall time per method")
    parser.add_argument("--only", help="comma-separated datasets or groups: " + ", ".join([*GROUPS, *DATASETS]))
    parser.add_argument("--threads", type=int, default=2, help="torch threads in each subprocess")
    parser.add_argument("--data", type=Path, default=ROOT / ".data", help="folder of the real data (make data)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--deepseg", action="append", default=[], metavar="OPTION=VALUE",
                        help="a deepseg training option instead of its default, for ablations (repeatable), e.g. "
                        "validation_fraction=0.1 or augmentation=light; values are read as JSON, else as text")
    parser.add_argument("--seeds", default="2", help="random seeds, comma-separated: each method runs once per seed "
                        "and the table shows the means (default: 2, deepseg's default seed)")
    parser.add_argument("--methods", default="deepseg,monai", help="deepseg,monai (default) or deepseg alone, for "
                        "ablations of deepseg's options")
    parser.add_argument("--seed", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--dataset", choices=list(DATASETS), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--patch", type=lambda text: [int(v) for v in text.split(",")], help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        args.seeds = [int(seed) for seed in args.seeds.split(",") if seed.strip()]
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: expected whole numbers separated by commas, e.g. 1,2,3")
    if not args.seeds:
        parser.error("--seeds: give at least one seed, e.g. 2")
    args.methods = [method.strip() for method in args.methods.split(",") if method.strip()]
    if "deepseg" not in args.methods or set(args.methods) - set(METHODS):
        parser.error(f"--methods {','.join(args.methods)!r}: expected deepseg,monai or deepseg")
    try:
        args.datasets = select(args.only)
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    rows = []
    for dataset in args.datasets:
        rows.append(compare(dataset, args))
        print(f"done: {dataset}", file=sys.stderr, flush=True)
    print(format_table(rows, args.seconds), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
