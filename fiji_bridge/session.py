"""The running ImageJ: :class:`Session` puts together its jobs, each in its own module:

* :mod:`~fiji_bridge.session_base`: state and Java access (``jclass``, ``IJ``, ``mode``, ``commands()``);
* :mod:`~fiji_bridge.session_images`: ``to_xarray``, ``to_imageplus``, ``labels_to_imageplus``,
  ``open_image``, ``current_image``;
* :mod:`~fiji_bridge.session_jobs`: ``run`` (commands) and ``run_macro``;
* :mod:`~fiji_bridge.session_cancel`: ``cancel`` (and Ctrl-C, Esc);
* here: the lifecycle, ``connect``, ``show_ui``, ``wait_until_closed``, ``close``.

Obtained from :func:`fiji_bridge.start`; one per process (JPype runs one JVM).
"""

from __future__ import annotations

import logging

from . import shim
from .errors import SetupError
from .session_base import CommandResult
from .session_images import ImagesMixin
from .session_jobs import CommandsMixin, MacrosMixin

__all__ = ["CommandResult", "Session"]

log = logging.getLogger(__name__)


class Session(ImagesMixin, CommandsMixin, MacrosMixin):
    """ImageJ running in this process: images, commands, macros, cancellation; its lifecycle is here."""

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
