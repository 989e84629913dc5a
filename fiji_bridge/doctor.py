"""``deepseg doctor``: is everything the bridge needs here, and how to fix what is not."""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import sys
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from . import display, runtime, shim
from .errors import SetupError


@dataclass
class Check:
    """One line of the report. ``ok``: True, False (needed and missing) or None (optional, missing)."""

    name: str
    ok: bool | None
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = {True: "ok  ", False: "FAIL", None: "--  "}[self.ok]
        text = f"[{mark}] {self.name:<10} {self.detail}"
        return text + (f"\n{'':18}fix: {self.fix}" if self.fix and self.ok is not True else "")


def imagej_version(jar: Path) -> str:
    """ImageJ 1.x version read from ``ij/ImageJ.class`` in the jar (no JVM needed), or "unknown"."""
    try:
        with zipfile.ZipFile(jar) as archive:
            data = archive.read("ij/ImageJ.class")
    except (OSError, KeyError, zipfile.BadZipFile):
        return "unknown"
    match = re.search(rb"\x00\x05(1\.\d\d[a-z])", data) or re.search(rb"(1\.\d\d[a-z])", data)
    return match.group(1).decode() if match else "unknown"


def check_java() -> list[Check]:
    try:
        java = runtime.find_java()
    except SetupError as err:
        return [Check("java", False, "not found", str(err).split(": ", 1)[-1])]
    checks = [Check("java", True, f"Java {java.version_text or '?'} at {java.home}")]
    built = any((shim.cache_root() / "fiji_bridge").glob("shim-*/plugins/" + shim.JAR_NAME))
    javac = shim.find_javac(java.home)
    if javac is not None:
        checks.append(Check("javac", True, f"{javac} (builds the plugin jar once)"))
    else:
        checks.append(Check("javac", True if built else False,
                            "missing, but the plugin jar is already built" if built else "missing", shim.JDK_FIX))
    return checks


def check_imagej() -> list[Check]:
    checks = []
    try:
        install = runtime.find_imagej(None)
    except SetupError:
        install = None
    if install is not None and install.jar is not None:
        checks.append(Check("imagej", True, f"ImageJ {imagej_version(install.jar)} at {install.jar} (embedded, default)"))
    else:
        checks.append(Check("imagej", False, "no ImageJ 1.x jar found", runtime.IMAGEJ_FIX))
    fiji = os.environ.get("FIJI_HOME")
    candidates = [Path(fiji)] if fiji else [Path.home() / "Fiji.app", Path("/opt/Fiji.app"), Path("/Applications/Fiji.app")]
    found = [c for c in candidates if (c / "jars").is_dir()]
    if found:
        checks.append(Check("fiji", True, f"Fiji at {found[0]} (use it: start(ij='{found[0]}'), needs pyimagej)"))
    else:
        checks.append(Check("fiji", None, "no Fiji.app found (optional)", "set FIJI_HOME=/path/to/Fiji.app to use Fiji"))
    return checks


def check_display() -> Check:
    xvfb = display.find_xvfb()
    if display.has_display():
        return Check("display", True, f"DISPLAY={os.environ.get('DISPLAY', '(native)')}; menus, dialogs and the Macro Recorder work")
    if xvfb:
        return Check("display", True, f"none; Xvfb ({xvfb}) is started when a macro needs ImageJ's built-in commands")
    return Check("display", None, "none and no Xvfb: only deepseg's commands and dialog-free built-ins run (headless)",
                 display.XVFB_FIX)


def check_pyimagej() -> Check:
    if importlib.util.find_spec("imagej") is None:
        return Check("pyimagej", None, "not installed (optional: only to start a Fiji.app or Maven ImageJ2)",
                     "pip install pyimagej")
    from importlib.metadata import version

    return Check("pyimagej", True, f"pyimagej {version('pyimagej')}")


def check_torch() -> Check:
    try:
        import torch
    except ImportError:
        return Check("torch", False, "PyTorch is not installed", "pip install torch (see README for CPU/GPU builds)")
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        return Check("torch", True, f"torch {torch.__version__}, device cuda ({name}, {torch.cuda.device_count()} GPU)")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return Check("torch", True, f"torch {torch.__version__}, device mps (Apple GPU)")
    return Check("torch", True, f"torch {torch.__version__}, device cpu ({torch.get_num_threads()} threads; no CUDA GPU)",
                 "for a GPU install a CUDA build of torch (see README)")


def check_memory() -> Check:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return Check("memory", None, "unknown")
    gib = total / 2**30
    suggested = max(1, int(gib * 0.5))
    return Check("memory", True, f"{gib:.1f} GiB RAM; JVM heap: start(memory='{suggested}g') or "
                 f"`deepseg macro --memory {suggested}g` (Java's default is 1/4 of RAM)")


def check_start() -> Check:
    """Start ImageJ headless in this process and run a one-line macro."""
    began = time.perf_counter()
    try:
        session = runtime.start(mode="headless")
        value = session.run_macro('return "" + (1 + 1);')
    except Exception as err:
        return Check("start", False, f"ImageJ did not start: {err}", "fix the failures above first")
    seconds = time.perf_counter() - began
    ok = value == "2"
    return Check("start", ok, f"ImageJ {session.version} started headless and ran a macro in {seconds:.1f} s "
                 f"({len(session.commands())} commands)")


def run_checks(start: bool = True) -> list[Check]:
    checks = [Check("python", True, f"Python {platform.python_version()} ({sys.executable})")]
    checks += check_java()
    checks += check_imagej()
    checks += [check_display(), check_pyimagej(), check_torch(), check_memory()]
    if start and all(c.ok is not False for c in checks):
        checks.append(check_start())
    return checks


def report(checks: list[Check]) -> str:
    return "\n".join(c.line() for c in checks)


def as_dicts(checks: list[Check]) -> list[dict]:
    return [asdict(c) for c in checks]
