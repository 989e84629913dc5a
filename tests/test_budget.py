"""Time budgets (``--time``): durations, the budget's clock and scheduling (with an injected clock, no
waiting), a real training run on a fake clock, and real ``deepseg train`` processes whose progress goes to
a log file (one line per epoch)."""

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_UNET, blob_images
from engine import budget as budgets
from engine import training
from engine.budget import Budget, epoch_limit, format_duration, parse_duration
from engine.config import TrainConfig
from engine.errors import InputError
from engine.training import lr_factor, train

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(network="unet2d", network_options=TINY_UNET, patch=32, batch=2, seed=1)


# ------------------------------------------------------------------------------------------ durations
@pytest.mark.parametrize("text, seconds", [
    ("10m", 600), ("90s", 90), ("1h", 3600), ("1h30m", 5400), ("1h 30m 15s", 5415), ("1.5h", 5400),
    ("2M30S", 150), ("90", 90), (" 45s ", 45), (90, 90), (2.5, 2.5),
])
def test_durations_are_read(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10x", "", "m", "-5s", "0s", "30m1h", "1h1h", "10 minutes", "1h30", True, 0, -3])
def test_bad_durations_are_refused_naming_the_value(text):
    with pytest.raises(InputError, match=rf"^time={text!r}: expected a duration such as 90s, 10m, 1h or 1h30m"):
        parse_duration(text)


def test_durations_are_shown_short():
    assert [format_duration(s) for s in (42.4, 185, 3725, None, float("inf"))] == ["42s", "3m05s", "1h02m", "?", "?"]


def test_time_is_a_declared_option_checked_by_the_config():
    from engine.config import train_options

    declared = {d.name: d for d in train_options()}["time_budget"]
    assert (declared.flag, declared.key, declared.label) == ("--time", "time", "Time budget")
    assert TrainConfig(time_budget="10m").time_budget == "10m" and TrainConfig().epochs is None
    with pytest.raises(InputError, match=r"^time='ten minutes': expected a duration"):
        TrainConfig(time_budget="ten minutes")
    limits = (epoch_limit(None, None), epoch_limit(None, "10m"), epoch_limit(7, "10m"), epoch_limit(7, None))
    assert limits == (50, None, 7, 7)


# ------------------------------------------------------------------------------- scheduling (fake clock)
class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def simulate(seconds: float, step: float, validation: float, steps_per_epoch: int = 20, prep: float = 3.0,
             save: float = 0.5) -> dict:
    """The epoch loop of engine.training.train, on a clock that each step, validation (10 batches) and save
    advances; the first epoch probes one validation batch."""
    clock = FakeClock()
    budget = Budget(seconds, clock(), validation_batches=10, clock=clock)
    clock.t += prep
    epochs, validated = 0, []
    while True:
        budget.begin_epoch()
        for _ in range(steps_per_epoch):
            if not budget.step_allowed():
                break
            clock.t += step
        budget.end_epoch()
        epochs += 1
        if budget.needs_probe():
            clock.t += validation / 10
            budget.probed(validation / 10)
        last = budget.out_of_time() or budget.epoch_steps < steps_per_epoch
        if last or budget.validation_affordable():
            clock.t += validation
            budget.validated(validation)
            validated.append(epochs)
        clock.t += save
        budget.saved(save)
        if last:
            return {"end": clock.t, "epochs": epochs, "spent": budget.validation_spent,
                    "validated": validated, "steps": budget.steps_done}


def test_an_expensive_validation_runs_rarely_and_takes_at_most_a_tenth():
    run = simulate(600, step=1.0, validation=8.0)
    assert run["spent"] <= 0.1 * 600 and 4 <= len(run["validated"]) < run["epochs"] / 2
    assert run["validated"][-1] == run["epochs"]
    assert run["end"] <= 600 + 1.0  # within the budget, up to one step


def test_a_cheap_validation_runs_every_epoch():
    run = simulate(600, step=1.0, validation=0.05)
    assert run["validated"] == list(range(1, run["epochs"] + 1)) and run["end"] <= 601


def test_a_validation_dearer_than_a_tenth_runs_once_at_the_end():
    run = simulate(100, step=1.0, validation=30.0)
    assert run["validated"] == [run["epochs"]] and run["end"] <= 101


def test_the_schedule_runs_on_the_training_time():
    clock = FakeClock()
    budget = Budget(100, clock(), clock=clock)
    clock.t = 10.0  # loading the data: the schedule starts with the first step
    assert budget.fraction() == 0.0 and budget.step_allowed()
    clock.t = 55.0  # half of the training time, 10 s .. 100 s
    assert budget.fraction() == pytest.approx(0.5)
    assert lr_factor("poly", 3, None, 0, budget.fraction()) == pytest.approx(lr_factor("poly", 50, 100, 0))
    assert lr_factor("cosine", 3, None, 0, budget.fraction()) == pytest.approx(0.5)
    assert lr_factor("poly", 80, 100, 0, 0.5) == pytest.approx(lr_factor("poly", 80, 100, 0))  # epochs first


def test_a_resumed_budget_counts_the_time_already_spent():
    clock = FakeClock()
    budget = Budget(100, clock(), already=60.0, clock=clock)
    budget.step_allowed()
    assert budget.elapsed() == 60.0 and budget.fraction() == pytest.approx(0.6) and budget.remaining() == 40.0
    assert Budget(None, 0.0, clock=clock).eta() is None  # no limit and no work done: unknown
    clock.t = 10.0
    assert Budget(None, 0.0, clock=clock).eta(0.25) == pytest.approx(30.0)  # a quarter of the epochs in 10 s
    assert budget.eta() == pytest.approx(30.0)  # 100 - (60 + 10)


# ------------------------------------------------------------------------------- a real run, fake clock
def test_a_budgeted_run_follows_the_schedule_and_keeps_validation_within_a_tenth(tmp_path, monkeypatch):
    """Fault injection by patching: every training step takes 1 s and every validation batch 0.5 s of a fake
    clock (engine.budget.now), so the scheduling is checked exactly, whatever this machine's speed."""
    clock = FakeClock()
    seen: list[tuple[float, float]] = []
    validations: list[int] = []  # batches of each call: the probe (1), then whole validations
    real_step, real_evaluate = training.train_step, training.evaluate_batches

    def step(run, x, y, **kw):
        seen.append((clock.t, run.optimizer.param_groups[0]["lr"]))
        clock.t += 1.0
        return real_step(run, x, y, **kw)

    def evaluate(network, batches, *args, **kw):
        validations.append(len(batches))
        clock.t += 0.5 * len(batches)
        return real_evaluate(network, batches, *args, **kw)

    monkeypatch.setattr(budgets, "now", clock)
    monkeypatch.setattr(training, "train_step", step)
    monkeypatch.setattr(training, "evaluate_batches", evaluate)
    images, labels = blob_images(3)
    epochs = []
    result = train(images=images, labels=labels, out=str(tmp_path / "m"), time_budget="30s", steps_per_epoch=5,
                   lr=0.01, progress=lambda p: epochs.append(p) if p.stage == "epoch" else None, **SMALL)
    history = result.history
    validated = [row for row in history if "val_loss" in row]
    assert validations[0] == 1 and len(validations) == len(validated) + 1 and validations[1] > 1  # probe, then all
    assert history[-1] in validated and 0.5 * sum(validations) <= 0.1 * 30  # the last epoch always, within a tenth
    assert 1 <= len(validated) < len(history)
    assert history[-1]["elapsed"] <= 30 + 1.0 and sum(row["steps"] for row in history) == len(seen) >= 20
    for t, lr in seen:  # poly schedule on the elapsed fraction of the training time
        assert lr == pytest.approx(0.01 * lr_factor("poly", 0, None, 0, t / 30))
    t, lr = min(seen, key=lambda s: abs(s[0] - 15))  # half the budget: poly's (1 - 0.5) ** 0.9, give or take 0.5 s
    assert abs(t - 15) <= 0.5 and lr == pytest.approx(0.01 * (1 - t / 30) ** 0.9) and 0.0050 < lr < 0.0056
    assert [p.done for p in epochs] == [row["epoch"] for row in history] and epochs[-1].metrics["eta"] == 0
    assert all(p.total == 0 for p in epochs)  # no epoch limit


def test_a_budget_spent_by_the_checkpoint_is_refused(tmp_path, monkeypatch):
    clock = FakeClock()
    real_step = training.train_step

    def step(run, x, y, **kw):
        clock.t += 1.0
        return real_step(run, x, y, **kw)

    monkeypatch.setattr(budgets, "now", clock)
    monkeypatch.setattr(training, "train_step", step)
    images, labels = blob_images(2)
    out = tmp_path / "m"
    first = train(images=images, labels=labels, out=str(out), time_budget=6, steps_per_epoch=2, **SMALL)
    spent = first.history[-1]["elapsed"]
    assert 2 <= spent <= 7
    with pytest.raises(InputError, match=rf"^checkpoint already trained for {spent:.0f}s of time=2; set a longer time"):
        train(images=images, labels=labels, out=str(out), time_budget=2, steps_per_epoch=2, resume=str(out), **SMALL)
    longer = train(images=images, labels=labels, out=str(out), time_budget=12, steps_per_epoch=2, resume=str(out),
                   **SMALL)
    assert longer.history[0] == first.history[0] and longer.history[-1]["elapsed"] <= 13


# --------------------------------------------------------------------------- real processes, log files
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from engine.io import write_image, write_labels

    folder = tmp_path_factory.mktemp("budget data")
    images, labels = blob_images(2)
    for i, (image, label) in enumerate(zip(images, labels)):
        write_image(folder / "images" / f"b{i}.tif", image)
        write_labels(folder / "labels" / f"b{i}.tif", label, template=image)
    return folder


def deepseg_train(files: Path, out: Path, log: Path, *extra: str) -> subprocess.CompletedProcess:
    """``deepseg train ... 2>log``: the progress goes to a file, not a terminal."""
    with open(log, "w") as stderr:
        return subprocess.run(
            [sys.executable, "-m", "engine.cli", "train", "--images", str(files / "images"), "--labels",
             str(files / "labels"), "--out", str(out), "--patch", "32", "--option", "depth=2", "--option",
             "filters=4", "--steps", "3", *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True,
            timeout=600)


def history_rows(model: Path) -> list[dict]:
    with open(model / "history.csv") as f:
        return list(csv.DictReader(f))


def test_a_log_file_gets_one_line_per_epoch(files, tmp_path):
    done = deepseg_train(files, tmp_path / "m", tmp_path / "log", "--epochs", "3")
    text = (tmp_path / "log").read_text()
    assert done.returncode == 0, text
    lines = text.splitlines()
    assert "\r" not in text and len(lines) == 3, text
    for number, line in enumerate(lines, start=1):
        assert line.startswith(f"epoch {number}/3: loss ") and "val_dice" in line
        assert "elapsed" in line and "ETA" in line


def test_time_3s_stops_in_time_and_records_the_elapsed_time(files, tmp_path):
    """No epoch limit: only the budget can end this run. Generous bound: data loading and the final
    validation and save come on top of a step on a busy machine."""
    done = deepseg_train(files, tmp_path / "m", tmp_path / "log", "--time", "3s")
    text = (tmp_path / "log").read_text()
    assert done.returncode == 0, text
    rows = history_rows(tmp_path / "m")
    assert all(float(row["elapsed"]) > 0 for row in rows) and float(rows[-1]["elapsed"]) < 3 + 30
    assert rows[-1]["val_dice"] != ""  # the run ends with a validation
    assert len(text.splitlines()) == len(rows) and all(line.startswith("epoch ") for line in text.splitlines())


# ---------------------------------------------------------------------------------- progress display
class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_bars_in_a_terminal_and_writes_lines_elsewhere():
    from engine.progress import Progress, TqdmProgress

    steps = [Progress("train", i, 10, "epoch 2/5", {"loss": 0.5, "epoch": 2, "eta": 130.0}) for i in range(1, 11)]
    validate = Progress("validate", 2, 5, "", {"val_loss": 0.4})
    epoch = Progress("epoch", 2, 5, "", {"epoch": 2, "loss": 0.5, "val_dice": 0.75, "elapsed": 65.0, "eta": 130.0})
    predict = [Progress("predict", i, 40, "image.tif") for i in range(1, 41)]
    log = io.StringIO()
    lines = TqdmProgress(stream=log)
    for p in [*steps, validate, epoch, *predict]:
        lines(p)
    assert log.getvalue().splitlines() == [
        "epoch 2/5: loss 0.5000, val_dice 0.7500, elapsed 1m05s, ETA 2m10s",
        *[f"predict {4 * i}/40 image.tif" for i in range(1, 11)],  # a line per tenth, not per update
    ]
    terminal = Terminal()
    bars = TqdmProgress(stream=terminal)
    for p in [*steps, epoch]:
        bars(p)
    bars.close()
    drawn = terminal.getvalue()
    assert "\r" in drawn and "10/10" in drawn and "loss=0.5" in drawn
    assert "eta=" not in drawn and "epoch 2/5:" not in drawn  # tqdm's own ETA; no epoch lines
    quiet = io.StringIO()
    for p in [*steps, epoch]:
        TqdmProgress(disable=True, stream=quiet)(p)
    assert quiet.getvalue() == ""
