"""The running ImageJ: images in and out, commands, macros, cancellation, shutdown.

Obtained from :func:`fiji_bridge.start`; one per process (JPype runs one JVM).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from engine.errors import InputError

from . import macro as macro_mod, shim
from .errors import MacroError, SetupError
from .options import format_args

if TYPE_CHECKING:
    import numpy as np
    import xarray as xr

    from engine.progress import Progress

    from .display import VirtualDisplay
    from .runtime import ImageJInstall, JavaInstall

log = logging.getLogger(__name__)


@dataclass
class CommandResult:
    """What a deepseg command produced: new images (ImagePlus) and a table of values (name -> list)."""

    command: str
    images: list[Any] = field(default_factory=list)
    table: dict[str, list[Any]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


class Session:
    """ImageJ running in this process. Java classes are reached through :meth:`jclass`."""

    def __init__(
        self,
        *,
        mode: str,
        imagej: "ImageJInstall",
        java: "JavaInstall",
        virtual_display: "VirtualDisplay | None" = None,
        gateway: Any = None,
    ) -> None:
        self.mode = mode
        self.imagej = imagej
        self.java = java
        self.virtual_display = virtual_display
        self.gateway = gateway  #: the ImageJ2 gateway when started through pyimagej, else None
        #: Called with every engine ``Progress`` of a command (besides ImageJ's progress bar), e.g. TqdmProgress().
        self.progress_callback: Callable[["Progress"], Any] | None = None
        self.last_result: CommandResult | None = None
        self._cancel = threading.Event()
        self._macro_lock = threading.Lock()
        self._last_failure: BaseException | None = None
        self._proxies: list[Any] = []
        self._closed = False

    # ------------------------------------------------------------------------------------------- set-up

    @property
    def headless(self) -> bool:
        return self.mode == "headless"

    @property
    def unattended(self) -> bool:
        """True when nobody can answer a dialog: headless, or a virtual display."""
        return self.headless or self.virtual_display is not None

    def connect(self) -> None:
        """Register the deepseg commands (Plugins > deepseg) with ImageJ."""
        from .commands import handlers

        self._proxies = shim.register(handlers(self))
        if self.mode == "gui" and self.gateway is None:
            self.show_ui()

    def reuse(self, mode: str) -> "Session":
        if self._closed:
            raise SetupError("the ImageJ session was closed and a JVM cannot be restarted in this process")
        if mode != self.mode:
            raise SetupError(
                f"ImageJ already runs in mode {self.mode!r} in this process; JPype starts one JVM per process, "
                f"so mode {mode!r} needs a new Python process"
            )
        return self

    @staticmethod
    def jclass(name: str) -> Any:
        """A Java class, e.g. ``session.jclass("ij.IJ")``."""
        import jpype

        return jpype.JClass(name)

    @property
    def IJ(self) -> Any:  # noqa: N802 - the Java class name
        return self.jclass("ij.IJ")

    @property
    def version(self) -> str:
        return str(self.IJ.getVersion())

    def commands(self) -> list[str]:
        """Every command name ImageJ can run now (its command table)."""
        table = self.jclass("ij.Menus").getCommands()
        return [] if table is None else sorted(str(k) for k in table.keySet())

    def show_ui(self) -> None:
        """Show the ImageJ main window (needs a display; not for headless sessions)."""
        if self.headless:
            raise SetupError("a headless session has no user interface; start with mode='interactive' or 'gui'")
        if self.gateway is not None:
            self.gateway.ui().showUI()
            return
        ImageJ = self.jclass("ij.ImageJ")
        if self.IJ.getInstance() is None:
            ImageJ(ImageJ.EMBEDDED)  # shown; quitting it does not end the JVM
            # A new ImageJ window rebuilds the menus from plugins.config: re-add commands it did not list.
            self.jclass(shim.COMMAND_CLASS).install(self.jclass(shim.COMMAND_CLASS).commands())
        else:
            self.IJ.getInstance().setVisible(True)

    def wait_until_closed(self, poll: float = 0.5) -> None:
        """Block until the ImageJ main window is closed (e.g. at the end of a GUI script)."""
        import time

        while self.IJ.getInstance() is not None and self.IJ.getInstance().isShowing():
            time.sleep(poll)

    # ------------------------------------------------------------------------------------------- images

    def to_xarray(self, imp: Any = None) -> "xr.DataArray":
        """The ImagePlus (default: the active image) as a DataArray with dims t/pln/ch/row/col."""
        from . import convert

        return convert.imageplus_to_xarray(imp if imp is not None else self.current_image(required=True))

    def to_imageplus(
        self, array: "xr.DataArray | np.ndarray", title: str | None = None, *, axes: str | None = None, show: bool = False
    ) -> Any:
        """A new ImagePlus from a DataArray (or a 2-D numpy array, or any array with ``axes`` such as "ZYX").

        Label images get their colour table from :meth:`labels_to_imageplus` instead.
        """
        from . import convert

        imp = convert.xarray_to_imageplus(array, title, axes=axes)
        if show:
            self.show(imp)
        return imp

    def show(self, imp: Any) -> None:
        """Show an image: a window with a display; headless, make it the active image (no window exists)."""
        if self.headless:
            self.jclass("ij.WindowManager").setTempCurrentImage(imp)
        else:
            imp.show()

    def labels_to_imageplus(self, labels: "xr.DataArray | np.ndarray", title: str | None = None, **kwargs: Any) -> Any:
        """A label image as 8/16-bit ImagePlus with the label LUT."""
        from . import convert

        return convert.labels_to_imageplus(labels, title, **kwargs)

    def open_image(self, path: str | Path) -> Any:
        """Open an image file with ImageJ (not shown)."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"image file {str(path)!r} does not exist")
        imp = self.IJ.openImage(str(path))
        if imp is None:
            raise InputError(f"ImageJ cannot open {str(path)!r}: {self.IJ.getErrorMessage() or 'unsupported format'}")
        return imp

    def current_image(self, required: bool = False) -> Any:
        """The active image (for this thread), or None."""
        imp = self.jclass("ij.WindowManager").getCurrentImage()
        if imp is None and required:
            raise InputError("there is no active image: open one first or pass an ImagePlus")
        return imp

    def image_titles(self) -> list[str]:
        return [str(t) for t in self.jclass("ij.WindowManager").getImageTitles()]

    # ------------------------------------------------------------------------------------------- commands

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

    # ------------------------------------------------------------------------------------------- shutdown

    def close(self) -> None:
        """Disconnect the commands and close all windows (at exit this lets Python end without hanging).

        A virtual display is stopped by the OS when Python exits, after the JVM let go of it.
        """
        if self._closed:
            return
        self._closed = True
        import jpype

        if not jpype.isJVMStarted():
            return
        try:
            shim.unregister()
            if not self.headless:
                for window in self.jclass("java.awt.Window").getWindows():
                    window.dispose()
            # ImageJ's filters run on a pool of non-daemon threads that idle for a minute before ending;
            # JPype's JVM shutdown would wait for them.
            self.jclass("ij.util.ThreadUtil").threadPoolExecutor.shutdown()
            busy = self._busy_threads()
            if busy:
                import jpype.config

                log.warning("ImageJ threads still running at exit (%s); not waiting for them", ", ".join(busy))
                jpype.config.destroy_jvm = False
        except Exception as err:  # at exit: never turn shutdown into a traceback
            log.debug("closing ImageJ: %s", err)

    def _busy_threads(self, grace: float = 2.0) -> list[str]:
        """Names of non-daemon Java threads (other than the caller's) still alive after ``grace`` seconds."""
        import time

        Thread = self.jclass("java.lang.Thread")
        me = Thread.currentThread()
        deadline = time.monotonic() + grace
        while True:
            busy = [str(t.getName()) for t in Thread.getAllStackTraces().keySet()
                    if t.isAlive() and not t.isDaemon() and not t.equals(me) and str(t.getName()) != "DestroyJavaVM"]
            if not busy or time.monotonic() > deadline:
                return busy
            time.sleep(0.05)
