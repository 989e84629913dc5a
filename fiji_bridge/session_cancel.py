"""Cancelling a :class:`~fiji_bridge.session.Session`'s running command or macro, and its failures."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Any, Iterator

from . import shim
from .errors import MacroError
from .session_base import SessionBase

log = logging.getLogger("fiji_bridge.session")


class CancelMixin(SessionBase):
    """Cancel (``cancel()``, Ctrl-C, Esc) and the bookkeeping each command or macro starts and ends with."""

    def cancel(self) -> None:
        """Ask the running command or macro to stop (like Esc in ImageJ); safe from any thread."""
        self._cancel.set()

    @contextlib.contextmanager
    def _ctrl_c_cancels(self) -> Iterator[None]:
        """While a command or macro runs, the first Ctrl-C cancels it cleanly (the engine stops at its
        next progress report and raises Cancelled); a second one raises KeyboardInterrupt."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_interrupt(signum: int, frame: Any) -> None:
            if self._cancel.is_set():
                raise KeyboardInterrupt
            log.warning("cancelling (Ctrl-C again to interrupt)")
            self.cancel()

        previous = signal.signal(signal.SIGINT, on_interrupt)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def cancelled(self) -> bool:
        """True once cancel() was called, Esc was pressed in ImageJ, or the command's thread was interrupted."""
        if self._cancel.is_set() or bool(self.IJ.escapePressed()):
            return True
        return bool(self.jclass("java.lang.Thread").currentThread().isInterrupted())

    def _begin(self) -> None:
        self._cancel.clear()
        self._last_failure = None
        self.last_result = None
        self.IJ.resetEscape()
        shim.take_last_error()

    def _raise_failure(self, command: str, java_error: str | None, ij_error: str | None) -> None:
        message = shim.take_last_error()
        failure, self._last_failure = self._last_failure, None
        if failure is not None and message is not None:
            raise failure
        if message is not None or ij_error is not None:
            raise MacroError(f"{command}: {message if message is not None else ij_error}")
        if java_error is not None:
            raise MacroError(f"{command}: {java_error}")

    def _record_failure(self, error: BaseException) -> None:
        self._last_failure = error
