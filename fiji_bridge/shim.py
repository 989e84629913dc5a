"""The small Java side of the bridge: build it, and connect its commands to Python handlers.

The sources in ``fiji_bridge/java/src`` are compiled with ``javac`` against the ImageJ jar in use and
packaged as ``deepseg_bridge.jar`` (the ``_`` makes ImageJ load it from a ``plugins/`` folder; its
``plugins.config`` puts the commands under Plugins > deepseg). The jar is cached per user, keyed by a
hash of the sources and of the ImageJ jar, and laid out as ``<key>/plugins/deepseg_bridge.jar`` so that
``-Dplugins.dir=<key>`` makes ImageJ discover it exactly as Fiji would.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Mapping

from .errors import SetupError

JAVA_DIR = Path(__file__).resolve().parent / "java"
SOURCE_DIR = JAVA_DIR / "src"
PLUGINS_CONFIG = JAVA_DIR / "plugins.config"
JAR_NAME = "deepseg_bridge.jar"
COMMAND_CLASS = "deepseg.fiji.DeepSegCommand"
JDK_FIX = (
    "install a JDK (Debian/Ubuntu: apt-get install default-jdk-headless; conda: conda install openjdk) "
    "or set JAVA_HOME to one"
)

#: A command handler: (command, macro options or None) -> None on success, else the error message.
Handler = Callable[[str, "str | None"], "str | None"]


def cache_root() -> Path:
    """Per-user cache folder (:func:`engine.fileutil.cache_root`)."""
    from engine.fileutil import cache_root as engine_cache_root

    return engine_cache_root()


def sources() -> list[Path]:
    """The files that make up the jar: Java sources and plugins.config."""
    return sorted(SOURCE_DIR.rglob("*.java")) + [PLUGINS_CONFIG]


def build_key(ij_jar: Path) -> str:
    """Hash of the shim sources and the identity (path, size, mtime) of the ImageJ jar compiled against."""
    digest = hashlib.sha256()
    for path in sources():
        digest.update(path.relative_to(JAVA_DIR).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    stat = Path(ij_jar).stat()
    digest.update(f"{Path(ij_jar).resolve()}\0{stat.st_size}\0{int(stat.st_mtime)}".encode())
    return digest.hexdigest()[:16]


def find_javac(java_home: Path | None = None) -> Path | None:
    """The ``javac`` of ``java_home`` if it has one, else the first on PATH."""
    if java_home is not None:
        for name in ("javac", "javac.exe"):
            candidate = Path(java_home) / "bin" / name
            if candidate.is_file():
                return candidate
    found = shutil.which("javac")
    return Path(found) if found else None


def ensure_jar(ij_jar: Path, java_home: Path | None = None) -> Path:
    """Return the cached shim jar built for ``ij_jar``, compiling it on first use.

    Concurrent first starts are safe: each builds in a private folder and the first rename wins.
    """
    ij_jar = Path(ij_jar)
    folder = cache_root() / "fiji_bridge" / f"shim-{build_key(ij_jar)}"
    jar = folder / "plugins" / JAR_NAME
    if jar.is_file():
        return jar
    javac = find_javac(java_home)
    if javac is None:
        raise SetupError(
            f"javac was not found; it is needed once to build deepseg's ImageJ plugin ({JAR_NAME}): {JDK_FIX}"
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="build-", dir=folder.parent) as tmp:
        staging = Path(tmp) / "out"
        (staging / "plugins").mkdir(parents=True)
        compile_jar(ij_jar, staging / "plugins" / JAR_NAME, javac, Path(tmp) / "classes")
        try:
            os.replace(staging, folder)
        except OSError:
            if not jar.is_file():  # not a lost race: a real failure
                raise
    return jar


def compile_jar(ij_jar: Path, target: Path, javac: Path, classes: Path) -> Path:
    """Compile the shim sources against ``ij_jar`` into the jar ``target`` (with plugins.config)."""
    classes.mkdir(parents=True, exist_ok=True)
    java_files = [str(p) for p in sorted(SOURCE_DIR.rglob("*.java"))]
    # Java 8 bytecode: the jar also loads in Fiji installations that still bundle Java 8.
    release = ["--release", "8"] if _javac_major(javac) >= 9 else ["-source", "8", "-target", "8"]
    command = [str(javac), *release, "-Xlint:-options", "-encoding", "UTF-8",
               "-cp", str(ij_jar), "-d", str(classes), *java_files]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SetupError(
            f"compiling deepseg's ImageJ plugin against {ij_jar} failed (is it an ImageJ 1.x jar, "
            f"version >= 1.52?):\n{result.stderr.strip()}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as jar:
        jar.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\nCreated-By: deepseg fiji_bridge\n\n")
        jar.write(PLUGINS_CONFIG, "plugins.config")
        for path in sorted(classes.rglob("*.class")):
            jar.write(path, path.relative_to(classes).as_posix())
    return target


def _javac_major(javac: Path) -> int:
    result = subprocess.run([str(javac), "-version"], capture_output=True, text=True)
    words = (result.stdout + result.stderr).split()
    version = words[1] if len(words) > 1 else "0"
    parts = version.split(".")
    try:
        return int(parts[1]) if parts[0] == "1" else int(parts[0])
    except (ValueError, IndexError):
        return 0


def install_into(plugins_folder: Path, ij_jar: Path, java_home: Path | None = None) -> Path:
    """Copy the shim jar into an ImageJ/Fiji ``plugins`` folder (given directly or as the Fiji.app folder)."""
    plugins_folder = Path(plugins_folder)
    if (plugins_folder / "plugins").is_dir():
        plugins_folder = plugins_folder / "plugins"
    if not plugins_folder.is_dir():
        raise FileNotFoundError(f"{plugins_folder} is not a folder; expected Fiji.app or its plugins/ folder")
    target = plugins_folder / JAR_NAME
    shutil.copy2(ensure_jar(ij_jar, java_home), target)
    return target


def register(handlers: Mapping[str, Handler]) -> list[object]:
    """Connect each command name to its Python handler and make the commands runnable.

    Returns the Java proxies (keep them referenced as long as the commands should work).
    Needs a running JVM with the shim jar on its class path.
    """
    import jpype

    command_class = jpype.JClass(COMMAND_CLASS)
    proxies = []
    for name, handler in handlers.items():
        proxy = jpype.JProxy("deepseg.fiji.CommandHandler", dict={"run": _guarded(handler)})
        command_class.register(name, proxy)
        proxies.append(proxy)
    command_class.install(jpype.JArray(jpype.JString)(list(handlers)))
    return proxies


def unregister() -> None:
    """Disconnect all handlers (commands then say that the Python engine is not running)."""
    import jpype

    if jpype.isJVMStarted():
        jpype.JClass(COMMAND_CLASS).unregisterAll()


def _guarded(handler: Handler) -> Callable[[object, object], "str | None"]:
    def run(command: object, options: object) -> "str | None":
        try:
            return handler(str(command), None if options is None else str(options))
        except BaseException as err:  # never let a Python exception cross into ImageJ's threads
            return f"{type(err).__name__}: {err}"

    return run


def take_last_error() -> str | None:
    """The message of the last failed deepseg command (and forget it)."""
    import jpype

    message = jpype.JClass(COMMAND_CLASS).takeLastError()
    return None if message is None else str(message)
