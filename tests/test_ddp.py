"""Distributed training (engine.ddp) with real processes on the CPU (gloo backend): two processes follow
one process's loss curve with the same global batch and seed, rank 0 alone writes the model folder, each
rank draws its own share, time-budget decisions are rank 0's, worker errors reach the caller."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import TINY_UNET, blob_images
from engine import ddp
from engine.errors import Cancelled, InputError
from engine.model_files import load_model

# fp32 and the default loss: cross-entropy is a per-voxel mean, so the mean over two equal shares is the whole
# batch's; the Dice term adds its sums over the processes (engine.losses), so it is the whole batch's too
COMMON = dict(network="unet2d", network_options=TINY_UNET, patch=32, batch=4, steps_per_epoch=3, seed=1,
              device="cpu", precision="fp32", loss="ce_dice", num_threads=1,
              augmentation="default")  # as written; with auto (light here) one pixel in 12288 differs (float order)


def _curve(history: list[dict], key: str) -> np.ndarray:
    return np.array([row[key] for row in history], dtype=np.float64)


def test_two_processes_follow_one_process(tmp_path, monkeypatch):
    """Same global batch and seed: the loss curve, validation and weights of 2 processes equal 1 process's
    (every process draws the whole batch and keeps its half: DEEPSEG_DDP_SAME_BATCHES). BatchNorm is
    synchronized (CPUSyncBatchNorm), otherwise each half would be normalized by its own statistics."""
    from engine.training import train

    images, labels = blob_images(3, seed=10)
    one = train(images=images, labels=labels, out=str(tmp_path / "one"), epochs=2, **COMMON)
    monkeypatch.setenv(ddp.ENV_SAME_BATCHES, "1")
    seen: list[str] = []
    two = train(images=images, labels=labels, out=str(tmp_path / "two"), epochs=2, gpus=2,
                progress=lambda p: seen.append(p.stage), **COMMON)
    assert [r["epoch"] for r in two.history] == [1, 2] and [r["steps"] for r in two.history] == [3, 3]
    # training dice is the mean of the two processes' Dice (not the whole batch's); the rest is exact
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "val_dice"):
        np.testing.assert_allclose(_curve(two.history, key), _curve(one.history, key), rtol=1e-4, err_msg=key)
    assert seen.count("train") == 6 and seen.count("epoch") == 2  # rank 0's progress, relayed
    loaded = {name: load_model(tmp_path / name, device="cpu", which="last").network.state_dict()
              for name in ("one", "two")}
    for key, value in loaded["one"].items():
        torch.testing.assert_close(loaded["two"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    def names(folder: Path) -> list[str]:  # weight files are named by their checksum
        return sorted("weights" if p.name.startswith("weights-") else p.name for p in folder.iterdir())

    assert names(tmp_path / "two") == names(tmp_path / "one")  # one complete folder, no temporary leftovers
    assert len(list(csv_rows(tmp_path / "two" / "history.csv"))) == 2  # written once per epoch, by rank 0


def csv_rows(path: Path) -> list[str]:
    return path.read_text().splitlines()[1:]


def _rank_checks(rank: int, world: int, port: int, folder: str) -> None:
    """One of two processes: join the group, prepare a run, adapt it, draw, step, save; write findings."""
    from engine.budget import now
    from engine.config import TrainConfig
    from engine.training import prepare, record_epoch, save_epoch, start_budget, train_epoch

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    images, labels = blob_images(3, seed=10)
    config = ddp.join(TrainConfig(out=str(Path(folder) / f"out{rank}"), epochs=2, time_budget="1h",
                                  **{**COMMON, "num_threads": None}))
    run = prepare(config, images, labels)
    run.budget = start_budget(run, now())
    ddp.adapt(run)
    found: dict = {"threads": torch.get_num_threads(), "world": ddp.world_size(),
                   "ddp": isinstance(run.module, nn.parallel.DistributedDataParallel),
                   "sync_bn": sum(isinstance(m, ddp.CPUSyncBatchNorm) for m in run.network.modules()),
                   "plain_bn": sum(type(m) is nn.BatchNorm2d for m in run.network.modules())}
    x, _ = run.batches.draw(run.config.batch, run.rng)
    gathered = [torch.empty_like(x) for _ in range(world)]
    torch.distributed.all_gather(gathered, x)
    found["share"] = int(x.shape[0])
    found["shares_differ"] = not torch.equal(gathered[0], gathered[1])

    if rank == 1:  # rank 1's own clock says the time is up; rank 0's decides
        run.budget.started -= 7200.0
    run.budget.begin_epoch()
    found["allowed"] = [run.budget.step_allowed(), run.budget.step_allowed()]
    found["epoch_steps"] = run.budget.epoch_steps
    found["out_of_time"] = run.budget.out_of_time()
    found["fraction"] = run.budget.fraction()

    run.budget = ddp.AgreedBudget(start_budget(run, now()))  # a fresh clock
    row = train_epoch(run, 0, None)
    ddp.average_metrics(row)
    found["loss"] = row["loss"]
    save_epoch(run, record_epoch(run, row))
    ddp.barrier()
    odd = prepare(config.replace(batch=3), images, labels)
    try:
        ddp.adapt(odd)
    except InputError as err:
        found["odd_batch"] = str(err)
    Path(folder, f"rank{rank}.json").write_text(json.dumps(found))


def test_each_rank_draws_its_own_share_and_follows_rank_0(tmp_path):
    """Default sharding: rank r draws batch/world patches with its own generator (not duplicates); the
    budget's decisions, counters and fraction are rank 0's; only rank 0 writes; an odd batch is refused."""
    import torch.multiprocessing as mp

    mp.start_processes(_rank_checks, args=(2, ddp._free_port(), str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    found = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for f in found:
        assert f["world"] == 2 and f["ddp"] and f["sync_bn"] > 0 and f["plain_bn"] == 0
        assert f["threads"] == max(1, (os.cpu_count() or 1) // 2)
        assert f["share"] == 2 and f["shares_differ"]
        assert f["allowed"] == [True, True] and f["epoch_steps"] == 2 and f["out_of_time"] is False
        assert "batch=3 cannot be split over 2 processes" in f["odd_batch"]
    assert found[1]["fraction"] == found[0]["fraction"] < 0.01
    assert found[0]["loss"] == pytest.approx(found[1]["loss"], rel=1e-12)  # averaged over the ranks
    assert (tmp_path / "out0" / "config.json").is_file() and not (tmp_path / "out1").exists()
    assert load_model(tmp_path / "out0", device="cpu").network is not None


def test_a_worker_error_reaches_the_caller_with_its_type(tmp_path):
    from engine.training import train

    images, labels = blob_images(3, seed=10)
    with pytest.raises(InputError, match="batch=3 cannot be split over 2 processes"):
        train(images=images, labels=labels, out=str(tmp_path / "m"), epochs=1, gpus=2, **{**COMMON, "batch": 3})
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_cancel_from_the_caller_stops_every_process(tmp_path):
    from engine.training import train

    images, labels = blob_images(3, seed=10)
    with pytest.raises(Cancelled):
        train(images=images, labels=labels, out=str(tmp_path / "m"), epochs=3, gpus=2,
              progress=lambda p: not (p.stage == "train" and p.done > 3), **COMMON)
    history = (tmp_path / "m" / "history.csv").read_text().splitlines()
    assert len(history) == 2  # header and epoch 1: the finished epoch stays saved


def test_environment_detection():
    torchrun = {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                "MASTER_ADDR": "node1", "MASTER_PORT": "1234"}
    assert ddp.environment(torchrun) == ddp.Environment(1, 4, 1, 2, "node1", 1234, "torchrun")
    slurm = {"SLURM_PROCID": "5", "SLURM_STEP_NUM_TASKS": "8", "SLURM_LOCALID": "1",
             "SLURM_STEP_TASKS_PER_NODE": "4(x2)", "MASTER_ADDR": "gpu01"}
    assert ddp.environment(slurm) == ddp.Environment(5, 8, 1, 4, "gpu01", 29500, "slurm")
    assert ddp.environment({k: v for k, v in slurm.items() if k != "MASTER_ADDR"}) is None  # batch step: no
    assert ddp.environment({"RANK": "0", "WORLD_SIZE": "1"}) is None  # one process: no group
    assert ddp.environment({}) is None
    with pytest.raises(InputError, match="rank 4 is outside"):
        ddp.environment({**torchrun, "RANK": "4"})
    with pytest.raises(InputError, match="not numbers"):
        ddp.environment({**torchrun, "WORLD_SIZE": "four"})


def test_gpus_without_gpus_is_refused(tmp_path, monkeypatch):
    from engine.training import train

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    images, labels = blob_images(1)
    with pytest.raises(InputError, match="gpus=2 but no CUDA GPU is visible here: use device=cpu"):
        train(images=images, labels=labels, out=str(tmp_path / "m"), gpus=2, **{**COMMON, "device": "auto"})


def test_batchnorm_conversion_keeps_parameters_and_weights():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4)))
    params, state = list(net.parameters()), {k: v.clone() for k, v in net.state_dict().items()}
    assert ddp.convert_batchnorm(net, torch.device("cpu")) == 2
    assert all(isinstance(m, ddp.CPUSyncBatchNorm) for m in (net[1], net[2][0]))
    assert all(a is b for a, b in zip(net.parameters(), params))  # the optimizer keeps working on them
    assert net.state_dict().keys() == state.keys()
    x = torch.randn(2, 1, 8, 8)
    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4)))
    plain.load_state_dict(state)
    torch.testing.assert_close(net(x), plain(x))  # without a group: plain BatchNorm
