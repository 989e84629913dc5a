"""Time budgets for training: durations such as ``10m``, and the clock that schedules a budgeted run.

``deepseg train --time 10m`` (``time=10m`` in Fiji) trains for a wall-clock budget, counted from the
call of :func:`engine.training.train` (data loading included). :class:`Budget` is that run's clock:

* the learning-rate schedule runs on the elapsed fraction of the training time, from the first step to the
  end of the budget (:meth:`Budget.fraction`; a resumed run continues on the whole budget);
* a training step is started only while one more step, the final validation and the final save fit
  in what is left (:meth:`Budget.step_allowed`; the first step of a run always runs), so a run ends
  within the budget up to about one step;
* validation is measured (first one batch, :meth:`Budget.probed`, then every validation) and scheduled
  so that it costs at most about ``share`` (10 %) of the budget (:meth:`Budget.validation_affordable`):
  an expensive validation runs less often; the last epoch is always validated.

Without a time limit the same object only measures (elapsed time and ETA for the history and the
progress display). The clock is injectable (``clock=``), so the scheduling is tested without waiting.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import InputError

DEFAULT_EPOCHS = 50
"""Epochs of a run that gives neither ``epochs`` nor ``time``."""
VALIDATION_SHARE = 0.10
"""The largest share of a time budget that validation may take."""
_VALIDATION_PER_STEP = 0.5
"""Before validation was measured: its cost per batch, as a fraction of a training step (forward only)."""

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([hms])")
_EXPECTED = "expected a duration such as 90s, 10m, 1h or 1h30m (or a number of seconds)"


def parse_duration(value: str | float | int) -> float:
    """``"10m"`` -> 600.0; also ``"90s"``, ``"1h"``, ``"1h30m"``, ``"1.5h"``, ``"2m 30s"`` and plain seconds
    (``90``, ``"90"``). Raises InputError naming the value unless it is a positive duration."""
    if isinstance(value, bool):
        raise InputError(f"time={value!r}: {_EXPECTED}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        seconds = _parse_text(str(value))
    if not math.isfinite(seconds) or seconds <= 0:
        raise InputError(f"time={value!r}: {_EXPECTED}, greater than zero")
    return seconds


def _parse_text(text: str) -> float:
    compact = text.strip().lower()
    try:
        return float(compact)
    except ValueError:
        pass
    position, seconds, seen = 0, 0.0, []
    while position < len(compact):
        if compact[position].isspace():
            position += 1
            continue
        match = _DURATION.match(compact, position)
        if match is None or match.group(2) in seen or (seen and "hms".index(match.group(2)) < "hms".index(seen[-1])):
            raise InputError(f"time={text!r}: {_EXPECTED}")
        seen.append(match.group(2))
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if not seen:
        raise InputError(f"time={text!r}: {_EXPECTED}")
    return seconds


def format_duration(seconds: float | None) -> str:
    """``3725`` -> ``"1h02m"``, ``185`` -> ``"3m05s"``, ``42.4`` -> ``"42s"``; None -> ``"?"``."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    whole = max(0, int(round(seconds)))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def now() -> float:
    """The clock of training budgets, in seconds (monotonic); tests replace it to schedule without waiting."""
    return time.perf_counter()


def epoch_limit(epochs: int | None, time_budget: Any) -> int | None:
    """The largest number of epochs: ``epochs`` if given, none with a time budget alone, else 50."""
    if epochs is not None:
        return int(epochs)
    return None if time_budget is not None else DEFAULT_EPOCHS


@dataclass
class Budget:
    """The clock of one training run: elapsed time, the budget's fraction, step and validation scheduling.

    ``seconds``: the time budget (None: no limit, only measured). ``started``: the clock's reading when
    the run began. ``already``: seconds spent by the run this one resumes. ``validation_batches``: the
    number of validation batches (0: no validation), for the cost estimate before the first one.
    """

    seconds: float | None
    started: float
    already: float = 0.0
    validation_batches: int = 0
    share: float = VALIDATION_SHARE
    clock: Callable[[], float] = field(default=lambda: now(), repr=False)  # looked up per call: replaceable
    step_time: float | None = None
    validation_time: float | None = None
    validation_spent: float = 0.0
    save_time: float = 0.0
    steps_done: int = 0
    epoch_steps: int = 0
    training_from: float | None = None
    _last_step: float | None = field(default=None, repr=False)

    def elapsed(self) -> float:
        """Seconds since the run began, plus those of the run it resumes."""
        return self.already + self.clock() - self.started

    def remaining(self) -> float:
        return math.inf if self.seconds is None else self.seconds - self.elapsed()

    def fraction(self) -> float:
        """The elapsed fraction of the training time, 0..1: from the first step (of a fresh run; 0 s for a
        resumed one, so its schedule continues) to the end of the budget; 0 without a time limit."""
        if self.seconds is None or self.training_from is None:
            return 0.0
        span = self.seconds - self.training_from
        return 1.0 if span <= 0 else min(max((self.elapsed() - self.training_from) / span, 0.0), 1.0)

    # ------------------------------------------------------------------------------------------ steps
    def begin_epoch(self) -> None:
        self._last_step, self.epoch_steps = None, 0

    def step_allowed(self) -> bool:
        """Called before each training step: records the previous step's time; False when the budget
        has no room for one more step plus the final validation and save (an epoch's first step always
        runs: the loop starts an epoch only when there is time for it)."""
        self._record_step()
        if self.training_from is None:
            self.training_from = self.elapsed() if self.already == 0 else 0.0
        if self.epoch_steps > 0 and self.out_of_time():
            return False
        self.steps_done += 1
        self.epoch_steps += 1
        return True

    def end_epoch(self) -> None:
        """Records the epoch's last step (the time since it began)."""
        self._record_step()
        self._last_step = None

    def _record_step(self) -> None:
        now = self.clock()
        if self._last_step is not None:
            took = now - self._last_step
            self.step_time = took if self.step_time is None else 0.8 * self.step_time + 0.2 * took
        self._last_step = now

    def out_of_time(self) -> bool:
        """Whether one more step, then the final validation and save, would overrun the budget."""
        if self.seconds is None:
            return False
        return self.remaining() < (self.step_time or 0.0) + self.final_reserve()

    def final_reserve(self) -> float:
        """Seconds kept for the final validation and save."""
        return self.validation_estimate() + self.save_time

    # ------------------------------------------------------------------------------------- validation
    def validation_estimate(self) -> float:
        """The last validation's cost; before one was measured, a guess from the training step time."""
        if self.validation_time is not None:
            return self.validation_time
        return self.validation_batches * (self.step_time or 0.0) * _VALIDATION_PER_STEP

    def validation_affordable(self) -> bool:
        """Whether a validation now keeps validation (this one and the final one included) within ``share``
        of the time so far: ``spent + 2 * cost <= share * elapsed``. Always True without a time limit."""
        if self.seconds is None:
            return True
        cost = self.validation_estimate()
        return self.validation_spent + 2 * cost <= self.share * self.elapsed()

    def needs_probe(self) -> bool:
        """Whether validation's cost is still a guess under a time limit: time one batch (:meth:`probed`)."""
        return self.seconds is not None and self.validation_batches > 0 and self.validation_time is None

    def probed(self, seconds: float) -> None:
        """Record the time of one validation batch: the estimate of a whole validation."""
        self.validation_time = seconds * self.validation_batches
        self.validation_spent += seconds

    def validated(self, seconds: float) -> None:
        """Record the cost of a validation."""
        self.validation_time = seconds
        self.validation_spent += seconds

    def saved(self, seconds: float) -> None:
        """Record the cost of saving an epoch (kept for the final save)."""
        self.save_time = seconds

    # -------------------------------------------------------------------------------------------- ETA
    def eta(self, progress: float | None = None, progress_at_start: float = 0.0) -> float | None:
        """Seconds left: the budget's remainder, or (epoch-limited) the time so far scaled by the work
        left (``progress``: the fraction of the epochs done, ``progress_at_start``: at the run's start),
        whichever ends first; None when neither is known yet."""
        estimates = []
        if self.seconds is not None:
            estimates.append(max(self.remaining(), 0.0))
        if progress is not None and progress > progress_at_start:
            ran = self.clock() - self.started
            estimates.append(ran * (1.0 - progress) / (progress - progress_at_start))
        return min(estimates) if estimates else None
