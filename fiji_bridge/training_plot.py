"""``DeepSeg Train...``'s training window (as DeepMIB's): a live ImageJ Plot of the training and validation
loss and Dice, redrawn after every epoch, and the ETA in ImageJ's status bar.

The engine reports an "epoch" :class:`engine.progress.Progress` (the epoch's history row plus ``eta``)
after each saved epoch and a "train" one after each step; :meth:`TrainingPlot.hook` wraps the command's
progress callback with both. Without a screen (headless, or a virtual display nobody watches) no window
opens: the engine already saves the same curves as ``training_curves.png`` in the model folder.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from engine.budget import format_duration
from engine.progress import Progress, epoch_summary

#: (history column, legend, colour, ImageJ shape) of each curve
SERIES: tuple[tuple[str, str, str, str], ...] = (
    ("loss", "training loss", "blue", "line"),
    ("val_loss", "validation loss", "red", "connected circle"),
    ("dice", "training Dice", "#00a000", "line"),
    ("val_dice", "validation Dice", "magenta", "connected circle"),
)

Callback = Callable[[Progress], "bool | None"]


class TrainingPlot:
    """The curves of one training run, drawn into one ``ij.gui.Plot`` window (``show``: None = when a
    person can see it: an attended session with a display)."""

    def __init__(self, session: Any, title: str, label: str = "DeepSeg Train", show: bool | None = None) -> None:
        self.session, self.title, self.label = session, title, label
        self.show = _can_show(session) if show is None else show
        self.points: dict[str, tuple[list[float], list[float]]] = {key: ([], []) for key, *_ in SERIES}
        self.window: Any = None

    def hook(self, callback: Callback | None) -> Callback:
        """``callback`` (e.g. the command's progress bar and cancel check), then this plot and the status bar."""

        def hooked(progress: Progress) -> bool | None:
            answer = callback(progress) if callback is not None else None
            self.update(progress)
            return answer

        return hooked

    def update(self, progress: Progress) -> None:
        """Add an epoch's values and redraw; show the ETA in the status bar (also after each step)."""
        if progress.stage == "epoch":
            self.add(progress.done, progress.metrics)
            if self.show:
                self.draw()
            self.session.IJ.showStatus(f"{self.label}: {epoch_summary(progress)}")
        elif progress.stage == "train" and "eta" in progress.metrics:
            loss = progress.metrics.get("loss")
            shown = f", loss {loss:.4f}" if isinstance(loss, float) else ""
            self.session.IJ.showStatus(f"{self.label}: {progress.message}{shown}, "
                                       f"ETA {format_duration(progress.metrics['eta'])}")

    def add(self, epoch: int, metrics: dict[str, Any]) -> None:
        for key, (xs, ys) in self.points.items():
            value = metrics.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                xs.append(float(epoch))
                ys.append(float(value))

    def plot(self) -> Any:
        """A new ``ij.gui.Plot`` of every curve that has points, with a legend."""
        import jpype

        Plot = jpype.JClass("ij.gui.Plot")
        doubles = jpype.JArray(jpype.JDouble)
        plot = Plot(self.title, "epoch", "loss and Dice")
        drawn = [(key, legend, colour, shape) for key, legend, colour, shape in SERIES if self.points[key][0]]
        xs = [x for key, *_ in drawn for x in self.points[key][0]]
        ys = [y for key, *_ in drawn for y in self.points[key][1]]
        plot.setLimits(0.0, max(xs, default=0.0) + 1.0, 0.0, max(max(ys, default=1.0), 1.0) * 1.05)
        for key, _, colour, shape in drawn:
            plot.setColor(colour, colour)  # line and markers
            plot.add(shape, doubles(self.points[key][0]), doubles(self.points[key][1]))
        plot.setColor("black")
        if drawn:
            plot.addLegend("\n".join(legend for _, legend, _, _ in drawn))
        return plot

    def draw(self) -> None:
        """Open the window, or redraw it (reopened if the user closed it)."""
        plot = self.plot()
        if self.window is None or bool(self.window.isClosed()):
            self.window = plot.show()
        else:
            self.window.drawPlot(plot)


def _can_show(session: Any) -> bool:
    if session.unattended:
        return False
    return not bool(session.jclass("java.awt.GraphicsEnvironment").isHeadless())
