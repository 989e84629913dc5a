"""Background batch prefetching: same batches in the same order, errors handed over, clean shutdown."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

import engine.prefetch as prefetch
from conftest import TINY_UNET, blob_images
from engine.errors import Cancelled
from engine.prefetch import Prefetcher, batch_stream


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("deepseg-prefetch") and t.is_alive()]


@pytest.fixture(scope="module")
def batches():
    """Real training batches: deepseg's sampler, normalization and augmentation on blob images."""
    from engine.config import TrainConfig
    from engine.training import prepare

    images, labels = blob_images(2, shape=(64, 64))
    config = TrainConfig(out="unused", network="unet2d", network_options=TINY_UNET, patch=32, batch=3,
                         validation_fraction=0, augmentation={})
    return prepare(config, images, labels).batches


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_prefetched_batches_equal_the_sequential_ones_in_order(batches, depth):
    sequential_rng, prefetched_rng = np.random.default_rng(11), np.random.default_rng(11)
    expected = [batches.draw(3, sequential_rng) for _ in range(7)]
    with Prefetcher(lambda: batches.draw(3, prefetched_rng), 7, depth=depth) as stream:
        assert stream.running
        got = list(stream)
    assert len(got) == 7
    for (x, y), (ex, ey) in zip(got, expected):
        assert torch.equal(x, ex) and torch.equal(y, ey)
    # the generator advanced exactly as far: the next epoch (or a checkpoint) continues the same way
    assert prefetched_rng.bit_generator.state == sequential_rng.bit_generator.state
    assert not _prefetch_threads()


def test_depth_zero_draws_in_the_caller_without_a_thread():
    callers = []
    stream = Prefetcher(lambda: callers.append(threading.current_thread()) or len(callers), 3, depth=0)
    assert not stream.running and list(stream) == [1, 2, 3]
    assert callers == [threading.main_thread()] * 3


def test_an_error_while_drawing_reaches_the_consumer_after_the_good_batches():
    count = iter(range(10))

    def make() -> int:
        value = next(count)
        if value == 3:
            raise ValueError("bad patch 3")
        return value

    got = []
    with pytest.raises(ValueError, match="bad patch 3"):
        with Prefetcher(make, 10, depth=2) as stream:
            for item in stream:
                got.append(item)
    assert got == [0, 1, 2]
    assert not _prefetch_threads()


def test_leaving_early_stops_the_producer(monkeypatch):
    calls = []

    def make() -> int:
        calls.append(1)
        time.sleep(0.01)
        return len(calls)

    with pytest.raises(Cancelled):
        with Prefetcher(make, 1000, depth=2) as stream:
            for item in stream:
                if item == 2:
                    raise Cancelled("stop")
    assert not _prefetch_threads()
    assert len(calls) <= 2 + 2 + 1  # the two consumed, the queue, and the one under way


def test_close_is_idempotent_and_unblocks_a_full_queue():
    stream = Prefetcher(lambda: 1, 100, depth=1)
    time.sleep(0.05)  # the producer fills the queue and waits
    stream.close()
    stream.close()
    assert not stream.running and not _prefetch_threads()


def test_batches_are_pinned_for_cuda_only(monkeypatch):
    pinned = []
    monkeypatch.setattr(prefetch, "pin_memory", lambda item: pinned.append(item) or item)
    item = (torch.zeros(2), torch.ones(2))
    for device, expected in (("cpu", 0), (torch.device("cuda", 0), 2)):
        with batch_stream(lambda: item, 2, device) as stream:
            assert list(stream) == [item, item]
        assert len(pinned) == expected


def test_pin_memory_keeps_the_structure(monkeypatch):
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: self + 1)
    x, (y, z) = prefetch.pin_memory([torch.zeros(1), (torch.zeros(1), "label")])[0], prefetch.pin_memory(
        (torch.zeros(1), "label"))
    assert float(x) == 1 and float(y) == 1 and z == "label"


def _train(tmp_path, name, progress=None):
    from engine.training import train

    images, labels = blob_images(2)
    return train(images=images, labels=labels, out=str(tmp_path / name), network="unet2d", network_options=TINY_UNET,
                 patch=32, epochs=2, batch=2, steps_per_epoch=3, seed=4, progress=progress, precision="fp32")


def test_training_is_the_same_with_and_without_prefetching(tmp_path, monkeypatch):
    started = []
    real = prefetch.Prefetcher.__init__

    def spy(self, *args, **kwargs):
        real(self, *args, **kwargs)
        started.append(self._thread is not None)

    monkeypatch.setattr(prefetch.Prefetcher, "__init__", spy)
    prefetched = _train(tmp_path, "prefetched")
    monkeypatch.setattr(prefetch, "DEPTH", 0)
    inline = _train(tmp_path, "inline")
    assert started == [True, True, False, False]  # two epochs each: threads, then none
    clock = {"seconds", "elapsed"}  # wall times differ
    strip = lambda rows: [{k: v for k, v in r.items() if k not in clock} for r in rows]  # noqa: E731
    assert strip(prefetched.history) == strip(inline.history)
    for a, b in zip(prefetched.network.state_dict().values(), inline.network.state_dict().values()):
        assert torch.equal(a, b)


def test_cancelling_training_stops_the_prefetch_thread(tmp_path):
    def cancel_at_step_2(progress):
        return not (progress.stage == "train" and progress.done == 2)

    with pytest.raises(Cancelled):
        _train(tmp_path, "cancelled", progress=cancel_at_step_2)
    assert not _prefetch_threads()
