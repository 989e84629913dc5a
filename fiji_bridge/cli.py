"""The bridge's ``deepseg`` subcommands: ``macro``, ``doctor`` and ``fiji``.

The engine knows nothing of them: pyproject.toml lists them under the ``deepseg.commands`` entry points
(each a :class:`Subcommand`), which ``engine.cli`` discovers and dispatches to.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from engine.errors import Cancelled, DeepSegError

from .errors import MacroError, SetupError

EXIT_OK, EXIT_MACRO, EXIT_SETUP, EXIT_CANCELLED = 0, 1, 2, 130


def macro_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepseg macro",
        description="Run an ImageJ macro (.ijm) that may use the Plugins > deepseg commands, without a screen. "
        "Macros that also run ImageJ's built-in commands get a virtual display (Xvfb) so that their options "
        "are honoured; macros using only deepseg's commands and dialog-free functions run headless.",
    )
    parser.add_argument("macro", help="macro file (.ijm)")
    parser.add_argument("--args", nargs="+", default=[], metavar="KEY=VALUE",
                        help="the macro's argument (getArgument()), e.g. --args input=/data/in output=/data/out; "
                        "values with spaces are bracketed for you")
    parser.add_argument("--mode", choices=["auto", "headless", "interactive"], default="auto",
                        help="auto (default): headless unless the macro runs ImageJ's built-in commands")
    parser.add_argument("--ij", help="ImageJ to use: an ij.jar or a Fiji.app folder (default: see deepseg doctor)")
    parser.add_argument("--memory", help="JVM heap, e.g. 8g")
    parser.add_argument("--no-batch", action="store_true", help="show image windows (needs a real display)")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def choose_mode(code: str) -> str:
    """headless if every command the macro runs is a deepseg command, else interactive (display needed)."""
    from .commands import COMMANDS
    from .macro import missing_commands

    return "interactive" if missing_commands(code, COMMANDS) else "headless"


def macro_main(argv: list[str]) -> int:
    """``deepseg macro FILE.ijm [--args ...]``; returns the exit status (1: the macro failed)."""
    args = macro_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="deepseg: %(message)s")
    from . import runtime
    from .macro import read_macro
    from .options import format_args

    try:
        code, name = read_macro(Path(args.macro))
        mode = choose_mode(code) if args.mode == "auto" else args.mode
        session = runtime.start(args.ij, mode=mode, memory=args.memory)
        value = session.run_macro(Path(args.macro), format_args(args.args), batch=not args.no_batch)
    except MacroError as err:
        print(f"deepseg macro: error: {err}", file=sys.stderr)
        return EXIT_MACRO
    except (Cancelled, KeyboardInterrupt):
        print("deepseg macro: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except (SetupError, DeepSegError, FileNotFoundError, ValueError) as err:
        print(f"deepseg macro: error: {err}", file=sys.stderr)
        return EXIT_SETUP
    if value:
        print(value)
    return EXIT_OK


def doctor_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepseg doctor",
        description="Check Java, ImageJ/Fiji, the display, pyimagej, the torch device and memory; "
        "say how to fix what is missing.",
    )
    parser.add_argument("--no-start", action="store_true", help="do not start ImageJ (faster)")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    parser.add_argument("--install-plugin", metavar="FIJI_APP",
                        help="copy deepseg's plugin jar into this Fiji.app (or its plugins/ folder)")
    return parser


def doctor_main(argv: list[str]) -> int:
    """``deepseg doctor``; returns 0 when everything needed is there, 1 otherwise."""
    args = doctor_parser().parse_args(argv)
    from .doctor import as_dicts, report, run_checks

    if args.install_plugin:
        return _install_plugin(Path(args.install_plugin))
    checks = run_checks(start=not args.no_start)
    print(json.dumps(as_dicts(checks), indent=2) if args.json else report(checks))
    return 1 if any(c.ok is False for c in checks) else 0


def _install_plugin(target: Path) -> int:
    from . import runtime, shim

    try:
        fiji_jar = sorted((target / "jars").glob("ij-1.*.jar"))
        ij_jar = fiji_jar[-1] if fiji_jar else runtime.find_imagej(None).jar
        installed = shim.install_into(target, ij_jar, runtime.find_java().home)
    except (SetupError, FileNotFoundError) as err:
        print(f"deepseg doctor: error: {err}", file=sys.stderr)
        return EXIT_SETUP
    print(f"installed {installed}; restart Fiji: the commands are under Plugins > deepseg "
          "(they run when Fiji is started from Python with fiji_bridge.start(ij=...))")
    return EXIT_OK


def fiji_main(argv: list[str]) -> int:
    """``deepseg fiji`` (see :mod:`fiji_bridge.launcher`)."""
    from .launcher import fiji_main as main

    return main(argv)


@dataclass(frozen=True)
class Subcommand:
    """A ``deepseg`` subcommand contributed through the ``deepseg.commands`` entry points: its one-line
    help for ``deepseg --help`` and its ``main(argv) -> exit status`` (which parses its own options)."""

    help: str
    main: Callable[[list[str]], int]


MACRO = Subcommand("run an ImageJ macro (.ijm) with deepseg commands, headless", macro_main)
DOCTOR = Subcommand("check Java, ImageJ/Fiji, display, torch device and memory", doctor_main)
FIJI = Subcommand("open ImageJ's window with the Plugins > deepseg commands", fiji_main)
