"""Training from data on disk: zarr / OME-Zarr and memory-mapped TIFF read patch by patch (issue 7, item 2).

Same trained weights whether the data is TIFF or zarr, in memory or read lazily; label errors name the label
file; and (slow) a training volume several times larger than the training process's peak anonymous
memory, measured from outside in a real subprocess."""

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import zarr

from engine import data
from engine.data import LazyArray, LazyLabels, load_samples
from engine.errors import InputError
from engine.training import load_checkpoint, train

ROOT = Path(__file__).resolve().parents[1]
TINY3D = dict(network="unet3d", network_options={"depth": 1, "filters": 4}, patch=[8, 16, 16], batch=2,
              steps_per_epoch=2, epochs=1, seed=3, class_weights="auto", validation_fraction=0.25, num_threads=1)


def _volume(shape=(12, 40, 36), seed=0):
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint8)
    labels[3:9, 8:30, 5:20] = 1
    labels[2:6, 25:38, 22:34] = 2
    image = (labels * 60 + rng.integers(0, 50, shape)).astype(np.uint8)
    return image, labels


def _write_tiff(path, values):
    tifffile.imwrite(path, values, imagej=True, metadata={"axes": "ZYX"})
    return path


def _write_zarr(path, values, chunks=(4, 16, 16)):
    array = zarr.create_array(path, shape=values.shape, chunks=chunks, dtype=values.dtype,
                              dimension_names=["z", "y", "x"])
    array[:] = values
    return path


def _weights(folder):
    return load_checkpoint(folder)["model"]


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_zarr_and_lazy_training_match_tiff_in_memory(tmp_path, monkeypatch):
    image, labels = _volume()
    tiff = (_write_tiff(tmp_path / "img.tif", image), _write_tiff(tmp_path / "lab.tif", labels))
    store = (_write_zarr(tmp_path / "img.zarr", image), _write_zarr(tmp_path / "lab.zarr", labels))
    reference = train(images=str(tiff[0]), labels=str(tiff[1]), out=str(tmp_path / "tiff"), **TINY3D)
    from_zarr = train(images=str(store[0]), labels=str(store[1]), out=str(tmp_path / "zarr"), **TINY3D)
    monkeypatch.setattr(data, "IN_MEMORY_BYTES", 0)  # everything larger than 0 bytes stays on disk
    for name, (img, lab) in {"tiff_lazy": tiff, "zarr_lazy": store}.items():
        (sample,) = load_samples(img, lab)
        assert isinstance(sample.image, LazyArray) and isinstance(sample.labels, LazyLabels), name
        lazy = train(images=str(img), labels=str(lab), out=str(tmp_path / name), **TINY3D)
        _assert_same_weights(_weights(reference.model_dir), _weights(lazy.model_dir))
        timing = {"seconds", "elapsed"}  # wall-clock fields
        assert [{k: v for k, v in r.items() if k not in timing} for r in lazy.history] == \
            [{k: v for k, v in r.items() if k not in timing} for r in reference.history]
    _assert_same_weights(_weights(reference.model_dir), _weights(from_zarr.model_dir))


@pytest.mark.parametrize("in_memory", [True, False])
def test_lazy_labels_match_in_memory_labels(tmp_path, monkeypatch, in_memory):
    """ignore_label and the mask are applied per patch exactly as to labels in memory."""
    image, labels = _volume()
    mask = np.ones_like(labels)
    mask[:, :10] = 0
    paths = [_write_zarr(tmp_path / f"{n}.zarr", v) for n, v in (("img", image), ("lab", labels), ("mask", mask))]
    if not in_memory:
        monkeypatch.setattr(data, "IN_MEMORY_BYTES", 0)
    (sample,) = load_samples(*paths, ignore_label=2)
    expected = labels.astype(np.int16)
    expected[(labels == 2) | (mask == 0)] = -1
    got = np.asarray(sample.labels)
    assert got.dtype == np.int16 and np.array_equal(got, expected)
    assert np.array_equal(np.asarray(sample.image), image[None])
    if not in_memory:
        assert np.array_equal(sample.labels[2:5, ::3, 7], expected[2:5, ::3, 7])
        part = data.window(sample.labels, (slice(1, 4), slice(5, 30)))
        assert isinstance(part, LazyLabels) and np.array_equal(part[:, :, 2:9], expected[1:4, 5:30, 2:9])


@pytest.mark.parametrize("in_memory", [True, False])
def test_label_errors_name_the_label_file(tmp_path, monkeypatch, in_memory):
    image, labels = _volume()
    if not in_memory:
        monkeypatch.setattr(data, "IN_MEMORY_BYTES", 0)
    img = _write_tiff(tmp_path / "img64.tif", image)
    cases = {
        "lab48.tif": (labels * 2, "labels in 'lab48.tif' contain value 4 but classes=3"),
        "neg.tif": (labels.astype(np.int16) - 1, "labels in 'neg.tif' has negative values \\(min -1\\)"),
        "frac.tif": (labels.astype(np.float32) / 2, "labels in 'frac.tif' must hold integer class values"),
    }
    for name, (values, message) in cases.items():
        tifffile.imwrite(tmp_path / name, values, imagej=True, metadata={"axes": "ZYX"})
        with pytest.raises(InputError, match=message):
            train(images=str(img), labels=str(tmp_path / name), out=str(tmp_path / "m"), classes=3, **TINY3D)
    _write_tiff(tmp_path / "short.tif", labels[:, :30])
    with pytest.raises(InputError, match=r"labels in 'short.tif' shape \(12, 30, 36\) does not match"):
        load_samples(img, tmp_path / "short.tif")
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------------------------------- larger than memory
_CHILD = textwrap.dedent("""
    import sys
    from engine.training import train
    result = train(images=sys.argv[1], labels=sys.argv[2], out=sys.argv[3], network="unet3d",
                   network_options={"depth": 2, "filters": 4}, patch=[16, 64, 64], batch=2, steps_per_epoch=3,
                   epochs=1, validation_fraction=0.05, class_weights="auto", num_threads=2, device="cpu", seed=1)
    print("finished", result.history[-1]["epoch"], result.history[-1]["val_dice"])
""")


def _memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def run_measured(args: list[str]) -> tuple[subprocess.CompletedProcess, dict[str, int]]:
    """Run ``args``; peak RssAnon and RssFile (KiB) sampled from /proc/<pid>/status every 10 ms."""
    peak = {"RssAnon": 0, "RssFile": 0, "VmHWM": 0}
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def sample() -> None:
        while process.poll() is None:
            try:
                for key, value in _memory_kib(process.pid).items():
                    peak[key] = max(peak[key], value)
            except (OSError, ValueError):
                return
            time.sleep(0.01)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, err = process.communicate(timeout=1800)
    thread.join()
    return subprocess.CompletedProcess(args, process.returncode, out, err), peak


def _write_large(path: Path, shape: tuple[int, ...], plane) -> None:
    """An uncompressed ImageJ TIFF written plane by plane through a memory map (never whole in memory)."""
    stack = tifffile.memmap(path, shape=shape, dtype=np.uint8, imagej=True, metadata={"axes": "ZYX"})
    for z in range(shape[0]):
        stack[z] = plane(z)
        if z % 8 == 7:
            stack.flush()
    stack.flush()
    del stack


@pytest.mark.slow
def test_training_on_a_volume_larger_than_its_memory(tmp_path):
    shape = (128, 4096, 4096)  # 2 GiB of uint8 image, and as much of labels
    y, x = np.ogrid[: shape[1], : shape[2]]
    disc = ((y - 2048) ** 2 + (x - 1800) ** 2 < 900**2).astype(np.uint8)

    def labels(z: int) -> np.ndarray:
        return disc if 30 <= z < 90 else np.zeros(shape[1:], np.uint8)

    _write_large(tmp_path / "lab.tif", shape, labels)
    _write_large(tmp_path / "img.tif", shape, lambda z: labels(z) * 90 + ((x + 3 * y + z) % 41).astype(np.uint8))
    volume_bytes = int(np.prod(shape))
    result, peak = run_measured([sys.executable, "-c", _CHILD, str(tmp_path / "img.tif"), str(tmp_path / "lab.tif"),
                                 str(tmp_path / "model")])
    print(f"volume {volume_bytes / 2**20:.0f} MiB image + {volume_bytes / 2**20:.0f} MiB labels; training peak "
          f"RssAnon {peak['RssAnon'] / 1024:.0f} MiB, RssFile {peak['RssFile'] / 1024:.0f} MiB, "
          f"VmHWM {peak['VmHWM'] / 1024:.0f} MiB")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "finished 1" in result.stdout
    assert (tmp_path / "model" / "config.json").is_file()
    assert 0 < peak["RssAnon"] * 1024 < volume_bytes / 3


def test_folders_may_mix_zarr_stores_and_tiff_files(tmp_path):
    image, labels = _volume()
    (tmp_path / "imgs").mkdir(), (tmp_path / "labs").mkdir()
    _write_zarr(tmp_path / "imgs" / "a.zarr", image), _write_tiff(tmp_path / "imgs" / "b.tif", image[:, ::-1])
    _write_tiff(tmp_path / "labs" / "a.tif", labels), _write_zarr(tmp_path / "labs" / "b.zarr", labels[:, ::-1])
    samples = load_samples(tmp_path / "imgs", tmp_path / "labs")
    assert [s.name for s in samples] == ["a.zarr", "b.tif"]
    assert [s.labels_name for s in samples] == ["labels in 'a.tif'", "labels in 'b.zarr'"]
    for sample, flip in zip(samples, (slice(None), slice(None, None, -1))):
        assert np.array_equal(np.asarray(sample.labels), labels[:, flip]) and sample.dims == ("pln", "row", "col")
