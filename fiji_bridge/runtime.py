"""Start ImageJ in this Python process: find Java and ImageJ, start the JVM once, return a Session.

Two ways in, one API after start-up (ImageJ 1.x: ``ImagePlus``, ``IJ``, ``Macro``, ``Menus``):

* embedded (default, works offline): the ImageJ 1.x jar from ``$DEEPSEG_IJ_JAR``,
  ``/usr/share/java/ij.jar`` (Debian ``libij-java``), or a Fiji.app (``$FIJI_HOME``) ``jars/ij-*.jar``,
  started with JPype on the system Java (never downloads a JDK);
* pyimagej (``ij`` is a Fiji.app folder or a Maven endpoint/version): ``imagej.init`` gives Fiji and
  the ImageJ2 gateway as ``session.gateway``; ``imagej`` is imported only then.

Nothing here touches the JVM at import time.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from . import display as display_mod
from . import shim
from .errors import SetupError

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger(__name__)

Mode = Literal["headless", "gui", "interactive"]
MODES: tuple[str, ...] = ("headless", "gui", "interactive")
DEBIAN_IJ_JAR = Path("/usr/share/java/ij.jar")
JAVA_FIX = (
    "install Java 11 or newer (Debian/Ubuntu: apt-get install default-jdk-headless; conda: conda install "
    "openjdk) or set JAVA_HOME to its folder"
)
IMAGEJ_FIX = (
    "install ImageJ 1.x (Debian/Ubuntu: apt-get install libij-java), or set DEEPSEG_IJ_JAR to an ij.jar, or "
    "FIJI_HOME to a Fiji.app folder, or pass ij='/path/to/ij.jar' or ij='/path/to/Fiji.app'"
)

_lock = threading.Lock()
_session: "Session | None" = None


@dataclass(frozen=True)
class JavaInstall:
    """A Java runtime: its home folder, the JVM library JPype loads, and its version."""

    home: Path
    libjvm: Path
    version: tuple[int, ...]

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))


@dataclass(frozen=True)
class ImageJInstall:
    """Where ImageJ comes from: ``kind`` "jar" (embedded ImageJ 1.x), "fiji" or "maven" (both via pyimagej)."""

    kind: Literal["jar", "fiji", "maven"]
    location: str
    jar: Path | None  # the ImageJ 1.x jar (compiles the shim; runs it when kind == "jar")

    @property
    def uses_pyimagej(self) -> bool:
        return self.kind != "jar"


def find_java(java_home: str | Path | None = None) -> JavaInstall:
    """Find the system Java: ``java_home``, else ``$JAVA_HOME``, else the ``java`` on PATH."""
    candidates: list[tuple[str, Path]] = []
    if java_home:
        candidates.append(("java_home", Path(java_home)))
    elif os.environ.get("JAVA_HOME"):
        candidates.append(("JAVA_HOME", Path(os.environ["JAVA_HOME"])))
    else:
        java = shutil.which("java")
        if java:
            # /usr/bin/java -> /usr/lib/jvm/java-17-openjdk-amd64/bin/java -> its home is two levels up
            candidates.append(("java on PATH", Path(os.path.realpath(java)).parent.parent))
        if sys.platform == "darwin":
            candidates.append(("macOS default", Path("/Library/Java/JavaVirtualMachines")))
    problems = []
    for source, home in candidates:
        found = _java_at(home)
        if found is not None:
            if found.version and found.version < (11,):
                problems.append(f"{source} {home} is Java {found.version_text}; JPype needs Java 11 or newer")
                continue
            return found
        problems.append(f"{source} {home} has no JVM library (lib/server/libjvm.so, jvm.dll or libjvm.dylib)")
    detail = "; ".join(problems) if problems else "no JAVA_HOME and no java on PATH"
    raise SetupError(f"no usable Java was found ({detail}): {JAVA_FIX}")


def _java_at(home: Path) -> JavaInstall | None:
    if home.name == "JavaVirtualMachines" and home.is_dir():  # macOS: pick the newest JDK bundle
        bundles = sorted(home.glob("*/Contents/Home"))
        return _java_at(bundles[-1]) if bundles else None
    for relative in ("lib/server/libjvm.so", "jre/lib/amd64/server/libjvm.so", "lib/server/libjvm.dylib",
                     "bin/server/jvm.dll", "jre/bin/server/jvm.dll"):
        libjvm = home / relative
        if libjvm.is_file():
            return JavaInstall(home=home, libjvm=libjvm, version=_java_version(home))
    return None


def _java_version(home: Path) -> tuple[int, ...]:
    """Version from the ``release`` file every JDK/JRE since 9 ships (``()`` if unknown)."""
    release = home / "release"
    if release.is_file():
        match = re.search(r'^JAVA_VERSION="([\d._]+)', release.read_text(errors="replace"), re.M)
        if match:
            parts = [int(p) for p in re.split(r"[._]", match.group(1)) if p.isdigit()]
            return tuple(parts[1:] if parts[:1] == [1] else parts)  # "1.8.0_312" -> (8, 0, 312)
    return ()


def find_imagej(ij: str | Path | None = None) -> ImageJInstall:
    """Resolve the ``ij`` argument of :func:`start` (see there) into an :class:`ImageJInstall`."""
    if ij is None:
        if os.environ.get("DEEPSEG_IJ_JAR"):
            jar = Path(os.environ["DEEPSEG_IJ_JAR"]).expanduser()
            if not jar.is_file():
                raise SetupError(f"DEEPSEG_IJ_JAR={jar} is not a file: point it at an ImageJ 1.x ij.jar")
            return ImageJInstall("jar", str(jar), jar)
        if DEBIAN_IJ_JAR.is_file():
            return ImageJInstall("jar", str(DEBIAN_IJ_JAR), DEBIAN_IJ_JAR)
        fiji = os.environ.get("FIJI_HOME")
        jar = _fiji_ij_jar(Path(fiji).expanduser()) if fiji else None
        if jar is not None:
            return ImageJInstall("jar", str(jar), jar)
        raise SetupError(f"ImageJ was not found: {IMAGEJ_FIX}")
    path = Path(ij).expanduser()
    if path.is_file():
        if path.suffix != ".jar":
            raise SetupError(f"ij={ij!r} is a file but not a .jar; expected an ImageJ 1.x ij.jar or a Fiji.app folder")
        return ImageJInstall("jar", str(path), path)
    if path.is_dir():
        jar = _fiji_ij_jar(path)
        if jar is None:
            raise SetupError(f"ij={ij!r} is a folder without jars/ij-*.jar: expected a Fiji.app folder")
        return ImageJInstall("fiji", str(path), jar)
    text = str(ij)
    if text.endswith(".jar") or os.sep in text or text.startswith("."):
        raise FileNotFoundError(f"ij={text!r} does not exist; expected an ij.jar, a Fiji.app folder or a Maven version")
    # A Maven endpoint ("sc.fiji:fiji:2.14.0", "net.imagej:imagej+...") or an ImageJ2 version ("2.14.0").
    return ImageJInstall("maven", text, _default_jar_or_none())


def _fiji_ij_jar(fiji: Path) -> Path | None:
    jars = sorted((fiji / "jars").glob("ij-1.*.jar"))
    return jars[-1] if jars else None


def _default_jar_or_none() -> Path | None:
    try:
        return find_imagej(None).jar
    except SetupError:
        return None


def memory_option(memory: str | int | float | None) -> str | None:
    """``-Xmx`` option for ``memory``: "8g"/"512m" as Java writes it, or a number of GiB."""
    if memory is None:
        return None
    if isinstance(memory, (int, float)) and not isinstance(memory, bool):
        if memory <= 0:
            raise ValueError(f"memory={memory!r} must be positive (GiB), e.g. 8 or '8g'")
        return f"-Xmx{max(int(memory * 1024), 16)}m"
    text = str(memory).strip().lower()
    if not re.fullmatch(r"\d+[kmgt]?", text):
        raise ValueError(f"memory={memory!r} is not a JVM size: expected e.g. '8g', '512m' or a number of GiB")
    return f"-Xmx{text}"


def java_options(heap: str | None) -> list[str]:
    """JVM options besides the class path: heap limit and initial size, huge pages, ``$DEEPSEG_JAVA_OPTIONS``.

    Both choices make copying images into ImageJ as fast in a fresh JVM as in a warm one:

    * Linux with transparent huge pages on request ("madvise", most distributions): the JVM asks for
      them, as numpy does for its large arrays. Without, every fresh 4 KiB page of heap costs a page
      fault: 65,536 per 256 MB image copied into ImageJ.
    * An initial heap of up to 1 GiB: ImageJ's start-up ``System.gc()`` shrinks a default heap to about
      20 MB, and the first large images then grow it through some 70 garbage-collection pauses.

    ``DEEPSEG_JAVA_OPTIONS`` (space-separated) comes last, so it can override these (e.g.
    ``-XX:-UseTransparentHugePages``).
    """
    options = [heap] if heap else []
    initial = min(1 << 30, _heap_bytes(heap))
    if initial >= 64 << 20:
        options.append(f"-Xms{initial >> 20}m")
    if _transparent_huge_pages():
        options.append("-XX:+UseTransparentHugePages")
    return options + os.environ.get("DEEPSEG_JAVA_OPTIONS", "").split()


def _heap_bytes(heap: str | None) -> int:
    """The heap limit of ``-Xmx...`` in bytes, else Java's default (a quarter of the RAM; 0 if unknown)."""
    if heap:
        number, unit = re.fullmatch(r"-Xmx(\d+)([kmgt]?)", heap).groups()
        return int(number) * 1024 ** " kmgt".index(unit or " ")
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        return 0


def _transparent_huge_pages() -> bool:
    setting = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not sys.platform.startswith("linux") or not setting.is_file():
        return False
    return "[never]" not in setting.read_text()


def current() -> "Session | None":
    """The session started in this process, or None."""
    return _session


def start(
    ij: str | Path | None = None,
    *,
    mode: Mode = "headless",
    memory: str | int | float | None = None,
    virtual_display: bool | None = None,
    java_home: str | Path | None = None,
    plugins_dir: str | Path | None = None,
) -> "Session":
    """Start ImageJ (once per process) and return the :class:`~fiji_bridge.session.Session`.

    Args:
        ij: None (embedded ImageJ 1.x, see module doc), an ``ij.jar`` path, a Fiji.app folder or a
            Maven endpoint/version (both via pyimagej).
        mode: "headless" (no AWT: deepseg commands and dialog-free built-ins), "interactive"
            (AWT and ImageJ's menus, no main window until ``session.show_ui()``) or "gui" (main window).
        memory: JVM heap limit, e.g. "8g" or 8 (GiB); fixed once the JVM runs.
        virtual_display: start Xvfb when there is no display. Default: yes for "interactive", no for
            "gui" (a window nobody sees is an error unless asked for).
        java_home: Java to use instead of ``$JAVA_HOME`` / the ``java`` on PATH.
        plugins_dir: ImageJ plugins folder (embedded, with a display); default: one holding deepseg's jar.

    JPype can start one JVM per process: a second call returns the running session if it matches.
    """
    global _session
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {MODES}")
    with _lock:
        if _session is not None:
            if memory is not None:
                log.warning("memory=%r ignored: the JVM already runs and its heap size cannot change", memory)
            return _session.reuse(mode)
        import jpype

        if jpype.isJVMStarted():
            raise SetupError(
                "a JVM is already running in this process (started by another library) and JPype cannot start "
                "a second one: call fiji_bridge.start() before anything else starts Java"
            )
        install = find_imagej(ij)
        java = find_java(java_home)
        heap = memory_option(memory)
        virtual = _prepare_display(mode, virtual_display)
        try:
            if install.jar is None:
                raise SetupError(f"building deepseg's plugin needs an ImageJ 1.x jar to compile against: {IMAGEJ_FIX}")
            jar = shim.ensure_jar(install.jar, java.home)
            if install.uses_pyimagej:
                gateway = _start_pyimagej(install, mode, heap, java, jar)
            else:
                gateway = None
                _start_embedded(install, mode, heap, java, jar, plugins_dir)
        except BaseException:
            # The JVM did not start (or failed): nothing uses the virtual display yet.
            if virtual is not None and not jpype.isJVMStarted():
                virtual.stop()
            raise
        from .session import Session

        _session = Session(mode=mode, imagej=install, java=java, virtual_display=virtual, gateway=gateway)
        _session.connect()
        atexit.register(_session.close)
        return _session


def _prepare_display(mode: str, virtual_display: bool | None) -> "display_mod.VirtualDisplay | None":
    if mode == "headless" or display_mod.has_display():
        return None
    wanted = virtual_display if virtual_display is not None else mode == "interactive"
    if not wanted:
        raise SetupError(
            f"mode={mode!r} needs a display and DISPLAY is not set: run on a desktop, use ssh -X, "
            f"pass virtual_display=True (needs Xvfb: {display_mod.XVFB_FIX}), or use mode='headless'"
        )
    return display_mod.VirtualDisplay.start()


def _start_embedded(
    install: ImageJInstall, mode: str, heap: str | None, java: JavaInstall, jar: Path, plugins_dir: str | Path | None
) -> None:
    import jpype

    options = java_options(heap)
    if mode == "headless":
        options.append("-Djava.awt.headless=true")
    else:
        # ImageJ finds deepseg_bridge.jar in <plugins.dir>/plugins and builds Plugins>deepseg from its plugins.config.
        folder = Path(plugins_dir).expanduser() if plugins_dir else jar.parent.parent
        options.append(f"-Dplugins.dir={folder}")
    os.environ.setdefault("JAVA_HOME", str(java.home))
    log.debug("starting JVM %s with %s", java.libjvm, options)
    # At exit JPype destroys the JVM, which waits for non-daemon threads: Session.close() disposes the AWT
    # windows first (else AWT keeps the JVM, and Python, alive). Not destroying it instead crashes the
    # process when AWT threads outlive Python's finalization.
    # interrupt=False: Ctrl-C reaches Python (which cancels the running command) instead of killing the JVM.
    jpype.startJVM(str(java.libjvm), *options, classpath=[str(install.jar), str(jar)], convertStrings=False,
                   interrupt=False)


def _start_pyimagej(install: ImageJInstall, mode: str, heap: str | None, java: JavaInstall, jar: Path) -> object:
    try:
        import imagej  # only here: pyimagej is optional
    except ImportError:
        raise SetupError(
            f"ij={install.location!r} needs pyimagej (pip install pyimagej); or start the embedded ImageJ 1.x "
            f"with ij='{install.jar or '/path/to/ij.jar'}'"
        ) from None
    import scyjava

    # System Java, no JDK download ("never" trips a version check inside pyimagej 1.8, "auto" prefers system).
    scyjava.config.set_java_constraints(fetch="auto")
    os.environ.setdefault("JAVA_HOME", str(java.home))
    for option in java_options(heap):
        scyjava.config.add_option(option)
    scyjava.config.add_classpath(str(jar))
    target = install.location if install.kind == "maven" else str(Path(install.location).resolve())
    try:
        # pyimagej's "gui" blocks until ImageJ closes; start interactive and show the UI, so start() returns.
        gateway = imagej.init(target, mode="interactive" if mode == "gui" else mode)
        if mode == "gui":
            gateway.ui().showUI()
        return gateway
    except Exception as err:
        raise SetupError(f"pyimagej could not start ImageJ from {install.location!r}: {err}") from err


def _forget_session() -> None:
    """Tests only: drop the module's reference (the JVM itself cannot be restarted)."""
    global _session
    _session = None
