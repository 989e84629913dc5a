"""Dask-distributed blockwise prediction: a LocalCluster of 2 worker processes gives the single-process
result; cancelling keeps finished blocks, and the same call resumes; bad cluster names are refused."""

from __future__ import annotations

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")
pytest.importorskip("ome_zarr")
distributed = pytest.importorskip("distributed")

from blockwise_fixtures import random_model, volume, write_ome_zarr, write_tiff  # noqa: E402

from engine import predict_zarr  # noqa: E402
from engine.blockwise import MARKERS  # noqa: E402
from engine.distributed import connect  # noqa: E402
from engine.errors import Cancelled, InputError  # noqa: E402

BLOCK = (8, 32, 64)


@pytest.mark.parametrize("cluster", ["local:0", "local", "localhost:8786", "2"])
def test_bad_cluster_names_are_refused(tmp_path, cluster):
    with pytest.raises(InputError, match="cluster"):
        with connect(cluster):
            pass


def test_unreachable_scheduler_is_a_clear_error(monkeypatch):
    monkeypatch.setattr("engine.distributed.CONNECT_TIMEOUT", "1s")
    with pytest.raises(InputError, match="cannot reach the Dask scheduler"):
        with connect("tcp://127.0.0.1:9"):
            pass


def test_local_cluster_of_two_workers_equals_single_process_and_resumes_after_cancel(tmp_path):
    model = random_model(tmp_path / "unet3d")
    data = volume()
    scan = write_ome_zarr(tmp_path / "scan.ome.zarr", data, zarr_format=2)
    tif = write_tiff(tmp_path / "stack.tif", data)
    single = predict_zarr(model, tif, tmp_path / "single.zarr", probabilities=tmp_path / "single_p.zarr",
                          block=BLOCK, device="cpu")

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        with pytest.raises(Cancelled):
            predict_zarr(model, scan, scan, probabilities=tmp_path / "probs.zarr", block=BLOCK, device="cpu",
                         cluster=client, progress=lambda p: p.done < 2)
        markers = scan / "labels" / "deepseg" / "0" / MARKERS
        finished = len(list(markers.iterdir()))
        assert 2 <= finished < 6
        resumed = predict_zarr(model, scan, scan, probabilities=tmp_path / "probs.zarr", block=BLOCK, device="cpu",
                               cluster=client)
    assert resumed["computed"] + resumed["already_finished"] == 6 and resumed["already_finished"] >= 2
    labels = zarr.open_array(str(scan / "labels" / "deepseg" / "0"))[:]
    np.testing.assert_array_equal(labels, zarr.open_array(str(tmp_path / "single.zarr"))[:])
    np.testing.assert_allclose(zarr.open_array(str(tmp_path / "probs.zarr"))[:],
                               zarr.open_array(str(tmp_path / "single_p.zarr"))[:], atol=1e-5, rtol=0)
    assert resumed["class_voxels"] == single["class_voxels"]


@pytest.mark.slow
def test_cli_cluster_local_two(tmp_path):
    import subprocess
    import sys

    model = random_model(tmp_path / "unet3d")
    data = volume(shape=(16, 32, 32))
    scan = write_ome_zarr(tmp_path / "scan.ome.zarr", data)
    done = subprocess.run([sys.executable, "-c", "import sys; from engine.cli import main; sys.exit(main())",
                           "predict", str(model), str(scan), "--out", str(scan), "--cluster", "local:2",
                           "--block", "8", "--device", "cpu", "--quiet"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "2 of 2 blocks computed" in done.stdout
    assert zarr.open_group(str(scan / "labels")).attrs["ome"]["labels"] == ["deepseg"]


def _device_seen_by_worker(gpus: int) -> str:
    """Runs on a Dask worker: pretend it sees ``gpus`` CUDA devices and ask where ``auto`` goes."""
    import torch

    from engine.blockwise import _worker_device

    torch.cuda.is_available = lambda: gpus > 0  # this worker process only; it is closed with the cluster
    torch.cuda.device_count = lambda: gpus
    torch.cuda.set_device = lambda index: None
    return _worker_device("auto")


def test_each_local_worker_is_pinned_to_its_own_gpu():
    """With several GPUs, ``device=auto`` puts worker i on cuda:i (mod the count); one GPU or none: auto."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        workers = sorted(client.scheduler_info()["workers"])
        assert len(workers) == 2

        def seen(gpus: int) -> list[str]:
            futures = [client.submit(_device_seen_by_worker, gpus, workers=[w], pure=False) for w in workers]
            return sorted(client.gather(futures))

        assert seen(2) == ["cuda:0", "cuda:1"]
        assert seen(4) == ["cuda:0", "cuda:1"]
        assert seen(1) == ["auto", "auto"]
        assert seen(0) == ["auto", "auto"]


def test_named_workers_get_a_stable_gpu(monkeypatch):
    """Workers named by a job scheduler (strings) are spread over the GPUs by a stable hash of the name."""
    import torch

    from engine.blockwise import _worker_device

    class Worker:
        def __init__(self, name: str) -> None:
            self.name = name

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    chosen = {}
    for name in ("SLURMCluster-0", "SLURMCluster-1", "SLURMCluster-2"):
        monkeypatch.setattr(distributed, "get_worker", lambda n=name: Worker(n))
        chosen[name] = _worker_device("auto")
        assert chosen[name] == _worker_device("auto")  # same name, same GPU
        assert chosen[name] in {f"cuda:{i}" for i in range(4)}
    assert _worker_device("cpu") == "cpu" and _worker_device("cuda:3") == "cuda:3"
