"""Smoke test of benchmarks/bench_quality.py: its pieces run for a few seconds on tiny data, so the
benchmark cannot rot. No quality thresholds here (those are the benchmark's business)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.synthetic import blobs

pytest.importorskip("monai")

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_quality", ROOT / "benchmarks" / "bench_quality.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_quality"] = bench
_spec.loader.exec_module(bench)


def tiny_split(dims: int, masked: bool = False) -> bench.Split:
    shape = (64, 64) if dims == 2 else (16, 32, 32)
    image, labels = blobs(shape, radius=(3.0, 6.0), seed=5)
    test_image, test_labels = blobs(shape, radius=(3.0, 6.0), seed=6)
    split = bench.Split(image, labels, test_image, test_labels, (1.0,) * dims)
    if masked:  # annotated: the left half of the training image; tested on the right half of the test image
        split.train_mask = np.zeros(shape, np.uint8)
        split.train_mask[..., :32] = 1
        split.test_region = (slice(None),) * (dims - 1) + (slice(32, None),)
        split.test_labels = test_labels[split.test_region]
        split.test_mask = np.ones_like(split.test_labels)
    return split


@pytest.mark.parametrize("dims", [2, 3])
def test_both_methods_train_predict_and_score_on_tiny_data(dims, tmp_path):
    split = tiny_split(dims, masked=dims == 2)
    ours = bench.run_deepseg(split, 2.0, tmp_path / "model")
    assert ours["steps"] >= 1 and 0.0 <= ours["dice"] <= 1.0
    assert ours["network"].startswith("unet3d" if dims == 3 else "unet2d")
    # what auto chose: light for a 2-s U-Net run; sparse (2D: masked) or small (3D) annotation: no validation
    assert ours["note"].endswith("used augmentation light, validation 0")
    assert ours["note"].startswith("used") or (dims == 3 and "unet3d" in ours["note"])  # a 3D choice is reported
    theirs = bench.run_monai(split, 1.0, ours["patch"], ours["batch"])
    assert theirs["steps"] >= 1 and 0.0 <= theirs["dice"] <= 1.0
    assert all(p % 16 == 0 and p >= q for p, q in zip(theirs["patch"], ours["patch"]))
    table = bench.format_table([{"dataset": "tiny", "deepseg": ours, "monai": theirs}], 2.0)
    assert f"{ours['dice']:.4f}" in table and f"{theirs['dice']:.4f}" in table


def test_patches_cover_small_images_with_padding_and_flip_with_their_labels():
    split = tiny_split(2, masked=True)
    split.train_labels = (split.train_image > np.median(split.train_image)).astype(np.uint8)
    batches = bench.PatchBatches(split, (80, 48), batch=6, seed=0)  # taller than the 64 px image: padded
    image, labels, mask = batches.next()
    assert image.shape == labels.shape == mask.shape == (6, 1, 80, 48)
    threshold = (np.median(split.train_image) + 0.5 - batches.mean) / batches.std  # between grey values
    assert np.array_equal(labels.numpy() == 1, image.numpy() > threshold)  # flipped together


def test_masked_loss_ignores_what_is_not_annotated():
    import torch

    loss = bench.dice_ce(masked=True)
    logits = torch.randn(2, 2, 16, 16)
    labels = torch.randint(0, 2, (2, 1, 16, 16))
    mask = torch.zeros(2, 1, 16, 16)
    mask[..., :8] = 1
    changed = labels.clone()
    changed[..., 8:] = 1 - changed[..., 8:]
    assert torch.isclose(loss(logits, labels, mask), loss(logits, changed, mask))
    assert not torch.isclose(bench.dice_ce(masked=False)(logits, labels, None),
                             bench.dice_ce(masked=False)(logits, changed, None))


def test_datasets_are_chosen_by_name_or_group_and_bad_names_are_refused():
    assert bench.select("ct,2d") == ["ct_head_bone", "lm_huh7_nuclei", "blobs2d", "cells2d"]
    assert bench.select(None) == list(bench.DATASETS)
    with pytest.raises(SystemExit):
        bench.parse_args(["--only", "lungs"])


def test_synthetic_membranes_have_exact_thin_foreground():
    image, labels = bench.voronoi_membranes((96, 96), seed=3)
    assert image.dtype == np.uint8 and set(np.unique(labels)) == {0, 1}
    assert 0.05 < labels.mean() < 0.35
    assert image[labels == 1].mean() > image[labels == 0].mean() + 40


def test_a_worker_subprocess_returns_its_result():
    args = bench.parse_args(["--only", "blobs2d", "--seconds", "1", "--threads", "1"])
    result = bench.run_worker("monai", "blobs2d", args, patch=[64, 64], batch=2)
    assert "error" not in result, result
    assert result["steps"] >= 1 and result["patch"] == [64, 64] and 0.0 <= result["dice"] <= 1.0


def test_a_missing_real_dataset_is_skipped_with_a_note(tmp_path):
    args = bench.parse_args(["--only", "ct", "--data", str(tmp_path), "--seconds", "1"])
    row = bench.compare("ct_head_bone", args)
    assert "make data" in row["error"]
    assert "skipped" in bench.format_table([row], 1.0)


def test_deepseg_options_for_ablations():
    from bench_quality import deepseg_options

    assert deepseg_options(["validation_fraction=0.1", "augmentation=light", "network=unet2d"]) == {
        "validation_fraction": 0.1, "augmentation": "light", "network": "unet2d"}
    with pytest.raises(SystemExit, match="OPTION=VALUE"):
        deepseg_options(["validation_fraction"])


def test_deepseg_alone_for_ablations_and_bad_methods_refused(monkeypatch):
    """``--methods deepseg`` runs no MONAI worker and the table shows nan for it; other lists are refused."""
    calls = []

    def fake_worker(method, dataset, args, patch=None, batch=None, seed=None):
        calls.append(method)
        return {"dice": 0.5, "steps": 3, "train_seconds": 1.0, "predict_seconds": 0.1, "patch": [8, 8], "batch": 1,
                "network": "unet2d", "note": ""}

    monkeypatch.setattr(bench, "run_worker", fake_worker)
    args = bench.parse_args(["--only", "blobs2d", "--methods", "deepseg", "--seeds", "1,2"])
    row = bench.compare("blobs2d", args)
    assert calls == ["deepseg", "deepseg"] and row["monai"] == {"skipped": True}
    assert "blobs2d" in bench.format_table([row], 1.0) and "nan" in bench.format_table([row], 1.0)
    for bad in ("monai", "deepseg,nnunet"):
        with pytest.raises(SystemExit):
            bench.parse_args(["--methods", bad])
