"""Extensions found through Python entry points, so that the engine imports none of them.

``deepseg.commands``: ``deepseg`` subcommands; each entry point names an object with ``help`` (one line)
and ``main(argv) -> exit status`` (fiji_bridge contributes ``macro``, ``doctor`` and ``fiji``).
``deepseg.demo_runners``: ways to run the demo's training and prediction, called as
``runner(config, test_images, predictions, quiet=...)`` (fiji_bridge contributes ``imagej``).
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .errors import DeepSegError

COMMANDS = "deepseg.commands"
DEMO_RUNNERS = "deepseg.demo_runners"


def available(group: str) -> dict[str, EntryPoint]:
    """The entry points of ``group`` by name (not loaded: nothing is imported)."""
    found: dict[str, EntryPoint] = {}
    for point in entry_points(group=group):
        found.setdefault(point.name, point)  # an installed and a source-tree copy of the metadata: first wins
    return found


def load(group: str, name: str) -> Any:
    """The object entry point ``name`` of ``group`` names; DeepSegError if it is missing or cannot load."""
    point = available(group).get(name)
    if point is None:
        raise DeepSegError(f"{name!r} is not installed (no {group!r} entry point): reinstall deepseg "
                           "(pip install -e .) with its fiji_bridge package")
    try:
        return point.load()
    except ImportError as err:
        raise DeepSegError(f"{name!r} ({point.value}) cannot be loaded: {err}") from None
