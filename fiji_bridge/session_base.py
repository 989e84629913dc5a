"""What every part of a :class:`~fiji_bridge.session.Session` shares: its state and the way to Java."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from engine.progress import Progress

    from .display import VirtualDisplay
    from .runtime import ImageJInstall, JavaInstall


@dataclass
class CommandResult:
    """What a deepseg command produced: new images (ImagePlus) and a table of values (name -> list)."""

    command: str
    images: list[Any] = field(default_factory=list)
    table: dict[str, list[Any]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


class SessionBase:
    """ImageJ running in this process: mode, installs, state; Java classes through :meth:`jclass`."""

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

    @property
    def headless(self) -> bool:
        return self.mode == "headless"

    @property
    def unattended(self) -> bool:
        """True when nobody can answer a dialog: headless, or a virtual display."""
        return self.headless or self.virtual_display is not None

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

