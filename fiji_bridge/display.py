"""Is there a display for AWT, and if not, a virtual one (Xvfb) started and cleaned up by us.

ImageJ 1.x builds its menus and every dialog (GenericDialog) with AWT. Headless Java cannot do that,
so built-in commands that read their options from a dialog need a display, real or virtual. The
virtual display lives exactly as long as this Python process: a small watchdog shell kills Xvfb when
the pipe from Python closes, which the OS does at exit even after a crash. It is never killed while
the JVM may still talk to it (AWT would abort the process with exit code 1).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import SetupError

log = logging.getLogger(__name__)

XVFB_FIX = "install Xvfb (Debian/Ubuntu: apt-get install xvfb; Fedora: dnf install xorg-x11-server-Xvfb)"

# Runs Xvfb in the background and kills it as soon as stdin (a pipe from Python) closes.
_WATCHDOG = 'Xvfb "$@" </dev/null >/dev/null 2>&1 & pid=$!; trap "kill $pid" TERM; read _; kill $pid; wait $pid'


def has_display() -> bool:
    """True if AWT can open windows: always on macOS/Windows; on Linux/BSD when DISPLAY names a live X server."""
    if sys.platform in ("darwin", "win32"):
        return True
    name = os.environ.get("DISPLAY", "")
    if not name:
        return False
    # ":N" / ":N.S" on this machine: its socket must exist (a stale DISPLAY makes AWT fail late and obscurely).
    if name.startswith(":"):
        number = name[1:].split(".")[0]
        return Path(f"/tmp/.X11-unix/X{number}").exists()
    return True  # host:N (e.g. ssh -X forwarding): trust it


def find_xvfb() -> str | None:
    """Path of the Xvfb executable, or None."""
    return shutil.which("Xvfb")


@dataclass
class VirtualDisplay:
    """A running Xvfb server; ``name`` is the DISPLAY value (e.g. ":3")."""

    name: str
    process: subprocess.Popen = field(repr=False)
    previous: str | None = field(default=None, repr=False)

    @classmethod
    def start(cls, width: int = 1280, height: int = 1024, depth: int = 24, timeout: float = 10.0) -> "VirtualDisplay":
        """Start Xvfb on a free display number and point ``DISPLAY`` at it."""
        xvfb = find_xvfb()
        if xvfb is None:
            raise SetupError(f"no display and no Xvfb to start a virtual one: {XVFB_FIX}, or set DISPLAY")
        read_end, write_end = os.pipe()
        try:
            # -displayfd: Xvfb picks a free display number and writes it once it accepts connections (no race).
            args = [
                "sh", "-c", _WATCHDOG, "deepseg-xvfb",
                "-displayfd", str(write_end), "-screen", "0", f"{width}x{height}x{depth}", "-nolisten", "tcp",
            ]
            process = subprocess.Popen(args, stdin=subprocess.PIPE, pass_fds=(write_end,), close_fds=True)
        finally:
            os.close(write_end)
        number = _read_display_number(read_end, process, timeout)
        display = cls(name=f":{number}", process=process, previous=os.environ.get("DISPLAY"))
        os.environ["DISPLAY"] = display.name
        log.info("started virtual display %s (Xvfb)", display.name)
        return display

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Stop Xvfb and restore ``DISPLAY``. Only call this when no JVM is using the display."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()  # the watchdog kills Xvfb
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
        if os.environ.get("DISPLAY") == self.name:
            if self.previous is None:
                os.environ.pop("DISPLAY", None)
            else:
                os.environ["DISPLAY"] = self.previous


def _read_display_number(fd: int, process: subprocess.Popen, timeout: float) -> int:
    import select

    data = b""
    deadline = time.monotonic() + timeout
    try:
        while not data.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or process.poll() is not None:
                break
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 32)
                if not chunk:
                    break
                data += chunk
    finally:
        os.close(fd)
    if not data.strip().isdigit():
        if process.stdin:
            process.stdin.close()
        process.kill()
        raise SetupError(
            f"Xvfb did not start within {timeout:.0f} s (exit status {process.poll()}); "
            f"check that `Xvfb -displayfd 1` works on this machine, or set DISPLAY to an existing display"
        )
    return int(data)
