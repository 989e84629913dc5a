"""Background prefetching: the next batches are drawn (sampled, augmented) while the network computes.

:class:`Prefetcher` calls ``make()`` ``count`` times in one background thread and hands the results
over in order through a queue holding at most ``depth`` items. One producer thread calling ``make``
in sequence with the caller's random generator gives exactly the batches, in the same order, that
calling ``make`` in the loop would give (``depth=0`` does just that, without a thread). ``make`` must
draw its randomness only from state it owns (e.g. a numpy Generator): the torch global generator is
shared with the training thread (dropout).

An exception in ``make`` is raised again by the consumer's next ``next()``; leaving the ``with`` block
(normally, on an error, or on :class:`engine.errors.Cancelled`) stops the producer and joins it.
For CUDA, batches are copied into pinned memory in the producer, so ``.to(device, non_blocking=True)``
overlaps the copy with compute.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Generic, Iterator, TypeVar

import torch

T = TypeVar("T")

#: batches drawn ahead of the training step (0: no background thread)
DEPTH = 2
_POLL = 0.1  # seconds between checks of the stop flag while the queue is full


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


class Prefetcher(Generic[T]):
    """``count`` results of ``make()``, computed ``depth`` ahead in a background thread (a context manager)."""

    def __init__(self, make: Callable[[], T], count: int, *, depth: int = DEPTH, pin: bool = False,
                 name: str = "deepseg-prefetch") -> None:
        self._make, self._count, self._pin = make, int(count), pin
        self._given = 0
        self._stop = threading.Event()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(int(depth), 1))
        self._thread: threading.Thread | None = None
        if depth > 0 and self._count > 0:
            self._thread = threading.Thread(target=self._produce, name=name, daemon=True)
            self._thread.start()

    def _item(self) -> T:
        item = self._make()
        return pin_memory(item) if self._pin else item

    def _produce(self) -> None:
        for _ in range(self._count):
            if self._stop.is_set():
                return
            try:
                item: Any = self._item()
            except BaseException as error:  # handed to the consumer, raised there
                self._put(_Failure(error))
                return
            if not self._put(item):
                return
        self._put(_DONE)

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._given >= self._count:
            raise StopIteration
        if self._thread is None:
            item = self._item()
        else:
            item = self._queue.get()
            if item is _DONE:
                raise StopIteration
            if isinstance(item, _Failure):
                self.close()
                raise item.error
        self._given += 1
        return item

    def close(self) -> None:
        """Stop the producer (it finishes the ``make()`` under way) and wait for it; idempotent."""
        self._stop.set()
        if self._thread is not None:
            while True:  # drain, so a producer blocked on a full queue sees the flag
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            self._thread.join()
            self._thread = None

    @property
    def running(self) -> bool:
        """Whether the producer thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> "Prefetcher[T]":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def pin_memory(item: Any) -> Any:
    """``item`` (a tensor, or a tuple/list of them) copied into page-locked memory."""
    if isinstance(item, torch.Tensor):
        return item.pin_memory()
    if isinstance(item, (tuple, list)):
        return type(item)(pin_memory(x) for x in item)
    return item


def batch_stream(draw: Callable[[], T], count: int, device: torch.device, *, depth: int | None = None) -> Prefetcher[T]:
    """The ``count`` training batches of an epoch, drawn ahead in the background (pinned for CUDA)."""
    return Prefetcher(draw, count, depth=DEPTH if depth is None else depth, pin=torch.device(device).type == "cuda")
