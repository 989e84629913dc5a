"""Running ImageJ commands and macros in a :class:`~fiji_bridge.session.Session`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from . import macro as macro_mod, shim
from .errors import MacroError
from .options import format_args
from .session_base import CommandResult
from .session_cancel import CancelMixin


class CommandsMixin(CancelMixin):
    """``session.run(command, options, image=...)``: an ImageJ command, failures raised in Python."""

    def run(self, command: str, options: str | Mapping[str, Any] = "", *, image: Any = None) -> CommandResult | None:
        """Run an ImageJ command like ``IJ.run`` and raise if it fails.

        ``options`` is a macro options string or a mapping (formatted the Recorder's way); ``image`` an
        ImagePlus to run on (default: the active image). Returns what a deepseg command produced.
        """
        text = format_args(options) if isinstance(options, Mapping) else options
        if self.headless and command not in self.commands():
            raise MacroError(
                f"{command!r} is not available in a headless session, which runs deepseg's commands and "
                "dialog-free macro functions only: start the session with mode='interactive' for ImageJ's "
                "built-in commands"
            )
        self._begin()
        self.IJ.getErrorMessage()  # forget earlier errors
        command_class = self.jclass(shim.COMMAND_CLASS)
        command_class.setQuiet(True)  # failures become Python exceptions, not dialogs
        self.IJ.redirectErrorMessages()  # the same for ImageJ's own error messages (to the Log instead)
        java_error = None
        try:
            with self._ctrl_c_cancels():
                if image is not None:
                    self.IJ.run(image, command, text)
                else:
                    self.IJ.run(command, text)
        except Exception as err:  # a Java RuntimeException("Macro canceled") and the like
            java_error = str(err)
        finally:
            ij_error = self.IJ.getErrorMessage()
            command_class.setQuiet(False)
            self.IJ.redirectErrorMessages(False)
        self._raise_failure(command, java_error, ij_error)
        return self.last_result if self.last_result is not None and self.last_result.command == command else None



class MacrosMixin(CancelMixin):
    """``session.run_macro(path_or_text, args)``: a macro on its own thread, checked before it runs."""

    def run_macro(
        self, macro: str | Path, args: str | Mapping[str, Any] | None = None, *, batch: bool | None = None
    ) -> str | None:
        """Run a macro (file path or text) with ``getArgument()`` = ``args``; return its return value.

        ``batch`` (default: unless mode is "gui") runs in ImageJ's batch mode, without image windows.
        Raises :class:`MacroError` with ImageJ's message if the macro fails or calls ``exit("message")``,
        ``Cancelled`` if cancelled, and before running anything if the macro needs commands this session
        cannot run or asks the user for input while nobody can answer.
        """
        code, name = macro_mod.read_macro(macro)
        missing = macro_mod.missing_commands(code, self.commands())
        if missing:
            fix = (
                "this session is headless: run it with `deepseg macro` (starts a virtual display when needed) "
                "or start the session with mode='interactive'"
                if self.headless
                else "check the command names (Plugins > Macros > Record... shows them)"
            )
            raise MacroError(f"{name} runs commands this ImageJ does not have: {', '.join(missing)}; {fix}", macro=name)
        asks = macro_mod.user_dialogs(code)
        if asks and self.unattended:
            raise MacroError(
                f"{name} asks the user for input ({', '.join(asks)}) but runs unattended; pass values as "
                "arguments instead (getArgument())",
                macro=name,
            )
        with self._macro_lock, self._ctrl_c_cancels():
            self._begin()
            return macro_mod.run_job(
                code, format_args(args), batch=self.mode != "gui" if batch is None else batch,
                name=name, cancel=self._cancel,
            )
