"""One progress/cancel hook for every long operation (training, tiled prediction, evaluation).

A callback receives a :class:`Progress` after each unit of work. Returning ``False`` cancels the
operation, which then raises :class:`engine.errors.Cancelled` after cleaning up (no half-written files).
The same hook drives tqdm in the terminal and ImageJ's progress bar in Fiji.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, TextIO

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


#: the history columns an epoch's summary line shows, in order
SUMMARY_KEYS = ("loss", "dice", "val_loss", "val_dice")


def epoch_summary(progress: Progress) -> str:
    """One line for an "epoch" progress (training): ``epoch 3/50: loss 0.4123, dice 0.8120, val_loss 0.3012,
    val_dice 0.8500, elapsed 12s, ETA 3m10s``."""
    from .budget import format_duration

    metrics = progress.metrics
    head = f"epoch {progress.done}/{progress.total}" if progress.total else f"epoch {progress.done}"
    parts = [f"{key} {metrics[key]:.4f}" for key in SUMMARY_KEYS if isinstance(metrics.get(key), (int, float))]
    if "elapsed" in metrics:
        parts.append(f"elapsed {format_duration(metrics['elapsed'])}")
    if "eta" in metrics:
        parts.append(f"ETA {format_duration(metrics['eta'])}")
    return f"{head}: {', '.join(parts)}"


class TqdmProgress:
    """A progress callback that draws one tqdm bar per stage in a terminal.

    When the output (``stream``, default stderr) is not a terminal — a log file, a pipe — it writes lines
    instead (``lines=None`` decides by ``isatty``): one per training epoch (:func:`epoch_summary`), and for
    other stages one per tenth of the work, never a bar's redraws.
    """

    def __init__(self, disable: bool = False, stream: TextIO | None = None, lines: bool | None = None) -> None:
        self._bars: dict[str, Any] = {}
        self._disable = disable
        self._stream = stream
        self._lines = lines
        self._tenths: dict[str, int] = {}

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    @property
    def lines(self) -> bool:
        if self._lines is None:
            isatty = getattr(self.stream, "isatty", None)
            self._lines = not (callable(isatty) and isatty())
        return self._lines

    def __call__(self, progress: Progress) -> None:
        if self._disable:
            return
        if self.lines:
            self._write_line(progress)
        elif progress.stage != "epoch":  # in a terminal the "train" bar shows the epochs
            self._draw(progress)

    def _write_line(self, progress: Progress) -> None:
        if progress.stage == "epoch":
            text = epoch_summary(progress)
        elif progress.stage in ("train", "validate"):  # summarised by the epoch's line
            return
        else:
            tenth = int(10 * min(progress.fraction, 1.0))
            if tenth <= self._tenths.get(progress.stage, 0) and progress.done < progress.total:
                return
            self._tenths[progress.stage] = 0 if progress.done >= progress.total else tenth
            details = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                for k, v in progress.metrics.items())
            text = f"{progress.stage} {progress.done}/{progress.total} {progress.message} {details}".strip()
        print(text, file=self.stream, flush=True)

    def _draw(self, progress: Progress) -> None:
        from tqdm.auto import tqdm

        bar = self._bars.get(progress.stage)
        if bar is None or bar.total != progress.total:
            if bar is not None:
                bar.close()
            bar = tqdm(total=progress.total, desc=progress.stage, disable=self._disable, leave=True, file=self.stream)
            self._bars[progress.stage] = bar
        bar.n = progress.done
        shown = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in progress.metrics.items() if k != "eta"}
        if shown:  # tqdm shows its own ETA
            bar.set_postfix(shown, refresh=False)
        bar.refresh()
        if progress.done >= progress.total:
            bar.close()
            del self._bars[progress.stage]

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
