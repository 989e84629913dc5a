"""Blockwise prediction into zarr / OME-Zarr: equal to the in-memory prediction, resumable after a real
SIGKILL of a real `deepseg predict` subprocess, never mistaken for complete while unfinished."""

from __future__ import annotations

import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")
pytest.importorskip("ome_zarr")

from blockwise_fixtures import near_ties, random_model, volume, write_ome_zarr, write_tiff  # noqa: E402

from engine import predict_zarr  # noqa: E402
from engine.blockwise import MARKERS, block_regions  # noqa: E402
from engine.chunked_io import open_volume  # noqa: E402
from engine.errors import Cancelled, InputError  # noqa: E402
from engine.prediction import predict  # noqa: E402

BLOCK_3D = (8, 32, 64)  # 6 blocks of the 24 x 64 x 64 test volume


@pytest.fixture(scope="module")
def unet3d(tmp_path_factory):
    return random_model(tmp_path_factory.mktemp("models") / "unet3d")


@pytest.fixture(scope="module")
def data():
    return volume()


def _deepseg(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from engine.cli import main; sys.exit(main())", *args]


def _predict_args(model: Path, tif: Path, out: Path, probs: Path) -> list[str]:
    return _deepseg("predict", str(model), str(tif), "--out", str(out), "--probabilities", str(probs),
                    "--block", ",".join(map(str, BLOCK_3D)), "--device", "cpu", "--quiet", "--batch", "1")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, unet3d, data):
    folder = tmp_path_factory.mktemp("reference")
    tif = write_tiff(folder / "stack.tif", data)
    done = subprocess.run(_predict_args(unet3d, tif, folder / "labels.zarr", folder / "probs.zarr"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return tif, zarr.open_array(str(folder / "labels.zarr"))[:], zarr.open_array(str(folder / "probs.zarr"))[:]


def assert_same_prediction(labels: np.ndarray, probabilities: np.ndarray, reference) -> None:
    """Labels identical (except at exact near-ties, where float rounding may pick either class) and
    probabilities within 1e-5 of the in-memory prediction."""
    expected = reference.probabilities.values
    np.testing.assert_allclose(probabilities, expected, atol=1e-5, rtol=0)
    differ = labels != reference.labels.values
    assert not np.any(differ & ~near_ties(expected)), f"{int(differ.sum())} labels differ away from ties"
    assert differ.sum() <= 2


def test_ome_zarr_blockwise_equals_in_memory_prediction_and_adds_labels_to_the_container(tmp_path, unet3d, data):
    scan = write_ome_zarr(tmp_path / "scan.ome.zarr", data)
    image_files = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (scan / "0").rglob("*") if p.is_file()}
    summary = predict_zarr(unet3d, scan, scan, probabilities=tmp_path / "probs.zarr", block=BLOCK_3D, device="cpu")
    assert summary["blocks"] == summary["computed"] == 6 and summary["labels"] == str(scan / "labels" / "deepseg")
    reference = predict(unet3d, data, axes="ZYX", probabilities=True, device="cpu")
    labels = zarr.open_array(str(scan / "labels" / "deepseg" / "0"))[:]
    assert_same_prediction(labels, zarr.open_array(str(tmp_path / "probs.zarr"))[:], reference)
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (scan / "0").rglob("*") if p.is_file()} == image_files
    assert sum(summary["class_voxels"].values()) == data.size
    back = open_volume(scan / "labels" / "deepseg")
    assert back.spacing == {"pln": 2.0, "row": 0.5, "col": 0.5} and back.unit == "µm"
    assert not (scan / "labels" / "deepseg" / "0" / MARKERS).exists()
    again = predict_zarr(unet3d, scan, scan, probabilities=tmp_path / "probs.zarr", block=BLOCK_3D, device="cpu")
    assert again["computed"] == 0 and again["already_finished"] == 6


@pytest.mark.parametrize("network", ["unet2d", "z2c_unet2d"])
def test_2d_network_on_a_stack_from_tiff_into_plain_zarr(tmp_path, data, network):
    model = random_model(tmp_path / network, network=network, patch=(32, 32), seed=3)
    tif = write_tiff(tmp_path / "stack.tif", data)
    predict_zarr(model, tif, tmp_path / "labels.zarr", probabilities=tmp_path / "probs.ome.zarr", block=(5,),
                 device="cpu")
    reference = predict(model, data, axes="ZYX", probabilities=True, device="cpu")
    probs = open_volume(tmp_path / "probs.ome.zarr")
    assert probs.pixels.shape == (3, *data.shape) and probs.spacing["pln"] == 2.0
    assert_same_prediction(zarr.open_array(str(tmp_path / "labels.zarr"))[:], np.asarray(probs.pixels), reference)


def test_probabilities_in_smaller_dtypes(tmp_path, unet3d, uninterrupted):
    tif, labels, full = uninterrupted
    for dtype, tolerance in (("float16", 1e-3), ("uint8", 0.5 / 255 + 1e-5)):
        predict_zarr(unet3d, tif, tmp_path / f"{dtype}.zarr", probabilities=tmp_path / f"{dtype}_p.zarr",
                     probabilities_dtype=dtype, block=BLOCK_3D, device="cpu")
        small = zarr.open_array(str(tmp_path / f"{dtype}_p.zarr"))
        assert small.dtype == np.dtype(dtype)
        np.testing.assert_allclose(small[:].astype(np.float32) * small.attrs["scale_factor"], full, atol=tolerance,
                                   rtol=0)


def test_cancelled_output_is_refused_by_readers_and_other_options_then_resumes(tmp_path, unet3d, uninterrupted):
    tif, labels, probs = uninterrupted
    out = tmp_path / "labels.zarr"
    with pytest.raises(Cancelled):
        predict_zarr(unet3d, tif, out, block=BLOCK_3D, device="cpu", progress=lambda p: p.done < 2)
    assert len(list((out / MARKERS).iterdir())) == 2
    with pytest.raises(InputError, match="unfinished deepseg prediction"):
        open_volume(out)
    with pytest.raises(InputError, match="another model, input or options"):
        predict_zarr(unet3d, tif, out, block=BLOCK_3D, overlap=0.5, device="cpu")
    summary = predict_zarr(unet3d, tif, out, block=BLOCK_3D, device="cpu")
    assert (summary["computed"], summary["already_finished"]) == (4, 2)
    assert sum(summary["class_voxels"].values()) == labels.size  # counts of earlier blocks kept in their markers
    resumed = open_volume(out).pixels[0]
    differ = resumed != labels
    assert not np.any(differ & ~near_ties(probs)) and differ.sum() <= 2
    with pytest.raises(Cancelled):  # overwrite: starts afresh with the new options
        predict_zarr(unet3d, tif, out, block=BLOCK_3D, overlap=0.5, device="cpu", overwrite=True,
                     progress=lambda p: p.done < 1)
    assert len(list((out / MARKERS).iterdir())) == 1


def test_cli_adds_labels_to_the_input_container_and_refuses_other_options_on_it(tmp_path, unet3d, capsys):
    from engine.cli import main

    scan = write_ome_zarr(tmp_path / "scan.ome.zarr", volume(shape=(16, 32, 32)))
    args = ["predict", str(unet3d), str(scan), "--out", str(scan), "--block", "8", "--device", "cpu", "--quiet"]
    assert main(args) == 0
    assert "2 of 2 blocks computed, 0 already finished" in capsys.readouterr().out
    assert open_volume(scan / "labels" / "deepseg").spatial_shape == (16, 32, 32)
    assert main(args + ["--overlap", "0.5"]) == 2
    assert "another model, input or options" in capsys.readouterr().err
    assert main(args + ["--label-name", "other", "--probabilities-dtype", "uint8", "--probabilities",
                        str(tmp_path / "p.zarr")]) == 0
    assert zarr.open_group(str(scan / "labels")).attrs["ome"]["labels"] == ["deepseg", "other"]
    assert zarr.open_array(str(tmp_path / "p.zarr")).dtype == np.uint8


def test_block_regions_cover_the_volume_once():
    regions = block_regions((24, 64, 64), BLOCK_3D)
    cover = np.zeros((24, 64, 64), np.int32)
    for region in regions:
        cover[region] += 1
    assert len(regions) == 6 and (cover == 1).all()
    with pytest.raises(InputError, match="block"):
        from engine.blockwise import _check_block

        _check_block((8, 32), (24, 64, 64))


# ------------------------------------------------------------------------------- kill -9 and resume


def _kill_and_resume(args: list[str], out: Path, after_blocks: int | None, delay: float) -> tuple[int, str]:
    """Start `deepseg predict`, SIGKILL it after ``after_blocks`` markers, or (None) ``delay`` seconds after
    start or after the output first appears, whichever comes first; then run the same command again.

    Returns the number of finished blocks at the kill and the second run's output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    markers = out / MARKERS
    start = time.monotonic()
    deadline = start + delay
    while process.poll() is None:
        count = len([p for p in markers.iterdir() if p.name.isdigit()]) if markers.is_dir() else 0
        if after_blocks is None and out.exists():
            deadline = min(deadline, time.monotonic() + delay / 100)  # early: while the output is being set up
        if (after_blocks is not None and count >= after_blocks) or (after_blocks is None and time.monotonic() > deadline):
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    process.wait(timeout=120)
    assert process.returncode == -signal.SIGKILL, "the prediction finished before it could be killed"
    finished = len([p for p in markers.iterdir() if p.name.isdigit()]) if markers.is_dir() else 0
    if out.exists():
        with pytest.raises(InputError, match="unfinished"):
            open_volume(out)
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    return finished, rerun.stdout


def _check_resumed(tmp_path: Path, unet3d: Path, uninterrupted, after_blocks: int | None, delay: float = 0.0):
    tif, labels, probs = uninterrupted
    out, prob_path = tmp_path / "labels.zarr", tmp_path / "probs.zarr"
    finished, stdout = _kill_and_resume(_predict_args(unet3d, tif, out, prob_path), out, after_blocks, delay)
    if after_blocks is not None:
        assert finished >= after_blocks
    computed = re.search(r"(\d+) of 6 blocks computed, (\d+) already finished", stdout)
    assert computed, stdout
    assert (int(computed.group(1)), int(computed.group(2))) == (6 - finished, finished)  # only unfinished ones redone
    assert np.array_equal(zarr.open_array(str(out))[:], labels)  # bit-identical
    assert np.array_equal(zarr.open_array(str(prob_path))[:], probs)
    assert open_volume(out).pixels.shape == (1, *labels.shape)  # complete now


def test_sigkill_after_three_blocks_then_the_same_command_finishes_bit_identically(tmp_path, unet3d, uninterrupted):
    _check_resumed(tmp_path, unet3d, uninterrupted, after_blocks=3)


@pytest.mark.parametrize("after_blocks", [1, 5, None], ids=["after1", "after5", "random-early"])
def test_sigkill_at_other_moments_then_resume(tmp_path, unet3d, uninterrupted, after_blocks):
    _check_resumed(tmp_path, unet3d, uninterrupted, after_blocks, delay=random.uniform(0.2, 3.0))


def test_precision_reaches_the_blocks(tmp_path, data):
    """precision="fp32" blocks equal the in-memory fp32 prediction, bf16 blocks differ slightly from them; a bad
    precision is refused before anything is written."""
    model = random_model(tmp_path / "unet2d", network="unet2d", patch=(32, 32), seed=3)
    tif = write_tiff(tmp_path / "stack.tif", data)
    for precision in ("fp32", "bf16"):
        predict_zarr(model, tif, tmp_path / f"{precision}.zarr", probabilities=tmp_path / f"{precision}_p.zarr",
                     block=(5,), device="cpu", precision=precision)
    reference = predict(model, data, axes="ZYX", probabilities=True, device="cpu", precision="fp32")
    assert_same_prediction(zarr.open_array(str(tmp_path / "fp32.zarr"))[:],
                           zarr.open_array(str(tmp_path / "fp32_p.zarr"))[:], reference)
    fp32, bf16 = (zarr.open_array(str(tmp_path / f"{p}_p.zarr"))[:] for p in ("fp32", "bf16"))
    assert 1e-6 < np.abs(fp32 - bf16).max() < 0.1  # bf16 arithmetic really used, close to fp32
    with pytest.raises(InputError, match="precision"):
        predict_zarr(model, tif, tmp_path / "bad.zarr", block=(5,), device="cpu", precision="fp64")
    assert not (tmp_path / "bad.zarr").exists()


@pytest.mark.parametrize("source_kind", ["ome-zarr", "plain zarr"])
def test_zarr_input_streams_into_a_label_tiff_equal_to_the_tiff_input(tmp_path, unet3d, data, source_kind):
    """`deepseg predict scan.ome.zarr --out labels.tif`: read slab by slab, written plane by plane (predict_file),
    the same labels and probabilities as from the TIFF of the same pixels, calibrated."""
    import tifffile

    from engine.cli import main
    from engine.io import read_image

    if source_kind == "ome-zarr":
        source = write_ome_zarr(tmp_path / "scan.ome.zarr", data)
        axes = []
    else:
        source = tmp_path / "scan.zarr"
        zarr.save_array(str(source), data)
        axes = ["--axes", "ZYX"]
    tif = write_tiff(tmp_path / "scan.tif", data)
    assert main(["predict", str(unet3d), str(source), "--out", str(tmp_path / "from zarr.tif"), "--probabilities",
                 str(tmp_path / "p zarr.tif"), "--device", "cpu", "--quiet", *axes]) == 0
    assert main(["predict", str(unet3d), str(tif), "--out", str(tmp_path / "from tif.tif"), "--probabilities",
                 str(tmp_path / "p tif.tif"), "--device", "cpu", "--quiet"]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "from zarr.tif"), tifffile.imread(tmp_path / "from tif.tif"))
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "p zarr.tif"), tifffile.imread(tmp_path / "p tif.tif"))
    labels = read_image(tmp_path / "from zarr.tif")
    if source_kind == "ome-zarr":  # the container's voxel size reaches the TIFF
        assert labels.attrs["spacing"]["pln"] == pytest.approx(2.0) and labels.attrs["spacing"]["col"] == pytest.approx(0.5)
    assert not list(source.rglob("labels"))  # nothing written into the input


def test_a_zarr_input_with_the_wrong_channels_is_refused_before_writing(tmp_path, unet3d, data):
    from engine.prediction import predict_file

    source = tmp_path / "two.zarr"
    zarr.save_array(str(source), np.stack([data, data]))
    with pytest.raises(InputError, match="2 channel\\(s\\) but the model was trained on 1"):
        predict_file(unet3d, source, tmp_path / "labels.tif", axes="CZYX", device="cpu")
    assert not (tmp_path / "labels.tif").exists()
