"""The bridge's own failure kinds (option and image errors use :class:`engine.errors.InputError`)."""

from __future__ import annotations

from engine.errors import DeepSegError


class SetupError(DeepSegError, RuntimeError):
    """Java, ImageJ, a display or the plugin shim is missing or unusable.

    The message says what is missing and how to fix it.
    """


class MacroError(DeepSegError, RuntimeError):
    """An ImageJ macro or command failed; the message is ImageJ's (with the macro line when known)."""

    def __init__(self, message: str, *, macro: str | None = None) -> None:
        super().__init__(message)
        self.macro = macro
