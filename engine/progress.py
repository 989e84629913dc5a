"""One progress/cancel hook for every long operation (training, tiled prediction, evaluation).

A callback receives a :class:`Progress` after each unit of work. Returning ``False`` cancels the
operation, which then raises :class:`engine.errors.Cancelled` after cleaning up (no half-written files).
The same hook drives tqdm in the terminal and ImageJ's progress bar in Fiji.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .errors import Cancelled


@dataclass
class Progress:
    """What has been done so far: ``done`` of ``total`` units of ``stage`` (e.g. "train", "predict")."""

    stage: str
    done: int
    total: int
    message: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


ProgressCallback = Callable[[Progress], Optional[bool]]


def report(callback: ProgressCallback | None, progress: Progress) -> None:
    """Send ``progress`` to ``callback``; raise :class:`Cancelled` if the callback returns ``False``."""
    if callback is not None and callback(progress) is False:
        raise Cancelled(f"{progress.stage} cancelled after {progress.done} of {progress.total} steps")


class TqdmProgress:
    """A progress callback that draws one tqdm bar per stage in the terminal."""

    def __init__(self, disable: bool = False) -> None:
        self._bars: dict[str, Any] = {}
        self._disable = disable

    def __call__(self, progress: Progress) -> None:
        from tqdm.auto import tqdm

        bar = self._bars.get(progress.stage)
        if bar is None or bar.total != progress.total:
            if bar is not None:
                bar.close()
            bar = tqdm(total=progress.total, desc=progress.stage, disable=self._disable, leave=True)
            self._bars[progress.stage] = bar
        bar.n = progress.done
        if progress.metrics:
            bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in progress.metrics.items()})
        bar.refresh()
        if progress.done >= progress.total:
            bar.close()
            del self._bars[progress.stage]

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
