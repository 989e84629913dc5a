"""``deepseg fiji``: open ImageJ's window with the Plugins > deepseg menu, as ``napari`` or ``ilastik`` do."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import Cancelled, DeepSegError

from . import display
from .errors import SetupError

if TYPE_CHECKING:
    from .session import Session

MENU_PATH = ("Plugins", "deepseg")


def fiji_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepseg fiji",
        description="Open ImageJ's window with deepseg's commands under Plugins > deepseg; "
        "returns when ImageJ is closed. Default: the embedded ImageJ 1.x (see deepseg doctor).",
    )
    parser.add_argument("--fiji", metavar="FIJI_APP",
                        help="a Fiji.app folder to open instead (needs pyimagej: pip install pyimagej)")
    parser.add_argument("--memory", help="JVM heap, e.g. 8g (default: Java's, a quarter of the RAM)")
    parser.add_argument("--check", action="store_true",
                        help="open the window, print the commands under Plugins > deepseg, close it and exit "
                        "(a set-up check: exit status 1 when the menu is missing)")
    return parser


def fiji_folder(text: str) -> Path:
    """``--fiji`` checked: an existing Fiji.app folder (with ``jars/ij-1.*.jar``)."""
    path = Path(text).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"--fiji {text!r} does not exist; expected a Fiji.app folder")
    if not any((path / "jars").glob("ij-1.*.jar")):
        raise SetupError(f"--fiji {text!r} is not a Fiji.app folder (it has no jars/ij-1.*.jar); "
                         "give the folder Fiji was unpacked to, e.g. ~/Fiji.app")
    return path


def menu_commands(session: "Session", path: tuple[str, ...] = MENU_PATH) -> list[str]:
    """The item labels of the menu at ``path`` in ImageJ's menu bar (e.g. Plugins > deepseg); [] if absent."""
    menu_bar = session.jclass("ij.Menus").getMenuBar()
    if menu_bar is None:
        return []
    Menu = session.jclass("java.awt.Menu")
    items = [menu_bar.getMenu(i) for i in range(menu_bar.getMenuCount())]
    for label in path:
        menu = next((m for m in items if isinstance(m, Menu) and str(m.getLabel()) == label), None)
        if menu is None:
            return []
        items = [menu.getItem(i) for i in range(menu.getItemCount())]
    return [str(item.getLabel()) for item in items]


def open_window(fiji: str | None, memory: str | None) -> "Session":
    """Start ImageJ (or the Fiji at ``fiji``) with its main window shown."""
    from . import runtime

    ij: Any = fiji_folder(fiji) if fiji else None
    if not display.has_display():
        raise SetupError("deepseg fiji opens a window and there is no display (DISPLAY is not set): run it on a "
                         "desktop or over ssh -X; without a screen, run macros with `deepseg macro`")
    return runtime.start(ij, mode="gui", memory=memory)


def fiji_main(argv: list[str]) -> int:
    """``deepseg fiji``; returns 0 once ImageJ's window is closed (2: set-up error, 130: Ctrl-C)."""
    args = fiji_parser().parse_args(argv)
    try:
        session = open_window(args.fiji, args.memory)
        commands = menu_commands(session)
        if args.check:
            print("\n".join(f"{' > '.join(MENU_PATH)} > {name}" for name in commands))
            session.close()
            return 0 if commands else 1
        print(f"ImageJ {session.version} is open: Plugins > deepseg has {', '.join(commands) or 'no commands'}; "
              "close ImageJ's window to quit", file=sys.stderr)
        session.wait_until_closed()
    except (Cancelled, KeyboardInterrupt):
        print("deepseg fiji: interrupted", file=sys.stderr)
        return 130
    except (SetupError, DeepSegError, FileNotFoundError, ValueError) as err:
        print(f"deepseg fiji: error: {err}", file=sys.stderr)
        return 2
    session.close()
    return 0
