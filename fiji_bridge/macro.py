"""Run ImageJ macros unattended and turn their failures into Python exceptions.

A macro runs on its own Java thread (ImageJ's way: ``IJ.error`` then aborts it) through the shim's
``MacroJob``, whose interpreter stops at the first error and keeps the message instead of opening a
modal "Macro Error" dialog. Before running, the macro's literal ``run("Command", ...)`` calls are
checked against the commands this ImageJ can run, so a headless session fails up front, with the fix,
instead of half-way through a batch.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any, Iterable

from engine.errors import Cancelled

from .errors import MacroError

_RUN_CALL = re.compile(r"""\brun\s*\(\s*(["'])(.*?)\1""")
_STRINGS_OR_COMMENTS = re.compile(r"""("(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*')|//[^\n]*|/\*.*?\*/""", re.S)
#: Macro functions that wait for a person (a modal dialog): they would hang an unattended run.
USER_DIALOGS = ("Dialog.show", "waitForUser", "getString", "getNumber", "getBoolean", "showMessageWithCancel",
                "File.openDialog", "getDirectory(\"Choose", "getDir(\"Choose")
MACRO_SUFFIXES = (".ijm", ".txt")
#: How a deepseg command reports that it was cancelled (see commands.py).
CANCELLED_PREFIX = "Cancelled:"


def read_macro(macro: str | Path) -> tuple[str, str]:
    """``(code, name)`` from a macro file path or macro text.

    A one-line string naming an existing file, or ending in ``.ijm``/``.txt``, is a path.
    """
    text = str(macro)
    one_line = "\n" not in text
    path = Path(text).expanduser() if one_line else None
    if path is not None and (isinstance(macro, Path) or path.is_file() or text.endswith(MACRO_SUFFIXES)):
        if not path.is_file():
            raise FileNotFoundError(f"macro file {text!r} does not exist (expected an .ijm file or macro text)")
        return path.read_text(encoding="utf-8", errors="replace"), path.name
    return text, "macro"


def _code_only(code: str) -> str:
    """The macro without comments (strings kept)."""
    return _STRINGS_OR_COMMENTS.sub(lambda m: m.group(1) or " ", code)


def called_commands(code: str) -> list[str]:
    """The command names of literal ``run("Name", ...)`` calls, in order, without duplicates.

    >>> called_commands('open(p); run("Gaussian Blur...", "sigma=2"); // run("Invert")')
    ['Gaussian Blur...']
    """
    names: list[str] = []
    for match in _RUN_CALL.finditer(_code_only(code)):
        if match.group(2) not in names:
            names.append(match.group(2))
    return names


def missing_commands(code: str, available: Iterable[str]) -> list[str]:
    """Commands the macro runs that are not in ``available`` (the ImageJ command table)."""
    known = set(available)
    return [name for name in called_commands(code) if name not in known]


def user_dialogs(code: str) -> list[str]:
    """Macro functions in ``code`` that open a dialog and wait for a person."""
    text = _code_only(code)
    found = []
    for name in USER_DIALOGS:
        pattern = re.escape(name) if "(" in name else r"(?<![\w.])" + re.escape(name) + r"\s*\("
        if re.search(pattern, text):
            found.append(name)
    return found


def run_job(code: str, argument: str, *, batch: bool, name: str, cancel: threading.Event | None = None) -> str | None:
    """Run ``code`` with ``getArgument()`` = ``argument``; return its return value or raise.

    Raises :class:`MacroError` with ImageJ's message (and the macro line) for errors and
    ``exit("message")``; ``Cancelled`` when cancelled (Ctrl-C, ``cancel`` set, Esc).
    """
    import jpype

    job = jpype.JClass("deepseg.fiji.MacroJob")(code, argument, batch)
    job.start()
    interrupted = False
    try:
        while not job.join(100):  # back to Python every 0.1 s: Ctrl-C and cancel() work
            if cancel is not None and cancel.is_set() and not interrupted:
                job.abort()
                interrupted = True
    except KeyboardInterrupt:
        job.abort()
        job.join(10_000)
        raise
    return _outcome(job, name, cancelled=interrupted)


def _outcome(job: Any, name: str, *, cancelled: bool) -> str | None:
    crash = job.getCrash()
    if crash is not None:
        raise MacroError(f"{name}: ImageJ failed: {crash}", macro=name)
    error = job.getError()
    if error is not None:
        message = " ".join(str(error).split())  # ImageJ's "in line N \n \n<line>" on one line
        if cancelled or message.startswith(CANCELLED_PREFIX):
            raise Cancelled(f"{name}: {message}")
        raise MacroError(f"{name}: {message}", macro=name)
    if cancelled:
        raise Cancelled(f"{name} was cancelled")
    value = job.getReturnValue()
    return None if value is None else str(value)
