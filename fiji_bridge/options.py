"""Command options: one declarative spec per command, parsed from ImageJ macro options or dialog values.

Pure Python (no Java) so it is unit-testable; :mod:`fiji_bridge.dialog` builds the GenericDialog from
the same spec. Macro options follow ImageJ's syntax: ``key=value``, ``key=[value with spaces]``, and
a bare ``key`` for a ticked checkbox (an absent checkbox is unticked, as in ImageJ, so boolean options
default to False). Keys are single lower-case words: ImageJ derives them from the first word of each
dialog label, which is how the Macro Recorder writes them. Automatic sizes and counts read and write
``auto`` (``0`` from older macros still means automatic). The training options come from the engine's
declarations (:func:`declared_option`), not from a second list here.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping

from engine.errors import InputError
from engine.options import Declared, from_config

Kind = Literal["int", "float", "bool", "choice", "size", "string", "path", "file", "folder", "image"]
KINDS: tuple[str, ...] = ("int", "float", "bool", "choice", "size", "string", "path", "file", "folder", "image")
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


@dataclass(frozen=True)
class Option:
    """One option: its macro key, kind, default, allowed values and a one-line help.

    ``label`` is the dialog label; its first word must be the key (ImageJ's recording rule).
    ``image`` options take an open image's title or a file path ("" = the active image).
    ``auto``: the word that means None for an ``int`` or ``float`` (e.g. "auto", or "none" for an optional
    label value); ``size`` options always take "auto". With "auto", ``0`` also means None for ints and sizes
    (older macros), never for floats (``validation=0``: none held out).
    """

    key: str
    kind: Kind
    default: Any
    help: str
    label: str | None = None
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    required: bool = False
    auto: str = ""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.key):
            raise ValueError(f"option key {self.key!r} must be one lower-case word")
        if self.kind not in KINDS:
            raise ValueError(f"option {self.key!r}: kind {self.kind!r} is not one of {KINDS}")
        if self.label is not None and self.label.split()[0].lower().rstrip(":") != self.key:
            raise ValueError(f"option {self.key!r}: the first word of label {self.label!r} must be the key")
        if self.kind == "bool" and self.default is not False:
            raise ValueError(f"option {self.key!r}: checkboxes must default to False (ImageJ macro semantics)")
        if self.kind == "choice" and (not self.choices or self.default not in self.choices):
            raise ValueError(f"option {self.key!r}: default {self.default!r} must be one of its choices")
        if self.auto and self.kind not in ("int", "float"):
            raise ValueError(f"option {self.key!r}: only int and float options take an auto word (sizes always do)")
        if self.default is None and not self.auto_word:
            raise ValueError(f"option {self.key!r}: a None default needs an auto word")

    @property
    def auto_word(self) -> str:
        """The text that means None ("" if None is not allowed)."""
        return "auto" if self.kind == "size" else self.auto

    @property
    def dialog_label(self) -> str:
        return self.label or self.key.capitalize()

    @property
    def expected(self) -> str:
        """The expected form, for error messages and help."""
        if self.kind == "int":
            return "an integer" + self._range() + (f" or {self.auto}" if self.auto else "")
        if self.kind == "float":
            return "a number" + self._range() + (f" or {self.auto}" if self.auto else "")
        if self.kind == "bool":
            return "a checkbox (write the key alone to tick it)"
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "size":
            return "a size in pixels, one for all axes or one per axis (e.g. 256 or 32,128,128), or auto"
        if self.kind == "image":
            return "an open image's title or an image file path"
        if self.kind == "folder":
            return "a folder path"
        if self.kind == "file":
            return "a file path"
        return "text"

    def _range(self) -> str:
        if self.minimum is not None and self.maximum is not None:
            return f" in [{_num(self.minimum)}, {_num(self.maximum)}]"
        if self.minimum is not None:
            return f" >= {_num(self.minimum)}"
        if self.maximum is not None:
            return f" <= {_num(self.maximum)}"
        return ""

    def convert(self, value: Any, command: str = "") -> Any:
        """Check and convert one value (text from a macro/dialog, or a Python value)."""
        where = f"{command}: " if command else ""
        bad = f"{where}{self.key}={value!r} is not valid: expected {self.expected}"
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise InputError(bad)
        if self.auto_word and self._means_auto(value):
            return None
        if self.kind in ("int", "float"):
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise InputError(bad) from None
            if not math.isfinite(number):
                raise InputError(bad)
            if self.kind == "int":
                if number != int(number):
                    raise InputError(bad)
                number = int(number)
            if (self.minimum is not None and number < self.minimum) or (
                self.maximum is not None and number > self.maximum
            ):
                raise InputError(bad)
            return number
        if self.kind == "size":
            return _size(value, bad)
        text = "" if value is None else str(value).strip()
        if self.kind == "choice":
            for choice in self.choices:
                if text.lower() == choice.lower():
                    return choice
            raise InputError(bad)
        if self.required and not text:
            raise InputError(f"{where}{self.key} is required: give {self.expected} ({self.help})")
        return text

    def _means_auto(self, value: Any) -> bool:
        if value is None:
            return True
        text = str(value).strip().lower()
        return text in ("", self.auto_word) or (self.auto_word == "auto" and text == "0" and self.kind != "float")

    def text(self, value: Any) -> str:
        """``value`` as a dialog field or macro shows it (``auto`` for None where allowed)."""
        if value is None:
            return self.auto_word
        if self.kind == "size":
            return ",".join(str(v) for v in value)
        return _num(value) if isinstance(value, float) else str(value)

    def format(self, value: Any) -> str:
        """The macro-options token for ``value`` ("" for an unticked checkbox)."""
        if self.kind == "bool":
            return self.key if value else ""
        text = self.text(value)
        return f"{self.key}=[{text}]" if (" " in text or not text) else f"{self.key}={text}"


_FIJI_KINDS = {"text": "string", "names": "string", "mapping": "string"}


def declared_option(declared: Declared) -> Option:
    """The Fiji option of an engine-declared option (``engine.options.Declared`` with a ``key``)."""
    if declared.key is None:
        raise ValueError(f"option {declared.name!r} is not offered in Fiji (no key)")
    return Option(
        declared.key, _FIJI_KINDS.get(declared.kind, declared.kind),  # type: ignore[arg-type]
        "" if declared.required else from_config(declared, declared.default), declared.full_help("auto"),
        label=declared.label, choices=declared.choice_list(), minimum=declared.minimum, maximum=declared.maximum,
        required=declared.required, auto=declared.auto if declared.kind in ("int", "float") else "",
    )


def _size(value: Any, bad: str) -> tuple[int, ...] | None:
    """``"256"`` / ``"32,128,128"`` / ``[32, 128, 128]`` -> tuple (automatic: handled by the caller)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        items: list[Any] = [value]
    elif isinstance(value, str):
        items = [v for v in re.split(r"[,x\s]+", value.strip()) if v]
    else:
        items = list(value)
    try:
        sizes = tuple(int(str(v)) for v in items)
    except ValueError:
        raise InputError(bad) from None
    if sizes == (0,):
        return None
    if not sizes or any(v < 1 for v in sizes):
        raise InputError(bad)
    return sizes


def _num(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class CommandSpec:
    """A menu command and its options, in dialog order."""

    name: str
    help: str
    options: tuple[Option, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        keys = [o.key for o in self.options]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{self.name}: duplicate option keys in {keys}")

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(o.key for o in self.options)

    def option(self, key: str) -> Option:
        for option in self.options:
            if option.key == key:
                return option
        raise self._unknown(key)

    def defaults(self) -> dict[str, Any]:
        return {o.key: o.default for o in self.options}

    def parse(self, text: str | None) -> dict[str, Any]:
        """Values from a macro options string; missing keys get their defaults (unticked checkboxes)."""
        given: dict[str, Any] = {}
        for key, value in tokenize(text or "", self.name):
            option = self.option(key)
            if key in given:
                raise InputError(f"{self.name}: option {key!r} is given twice")
            if value is None and option.kind != "bool":
                raise InputError(f"{self.name}: option {key!r} needs a value: {key}=<{option.expected}>")
            given[key] = True if value is None else value
        return self.validate(given)

    def validate(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Check ``values`` (Python values or texts) against the spec; fill defaults; reject unknown keys."""
        for key in values:
            if key not in self.keys:
                raise self._unknown(key)
        result = {}
        for option in self.options:
            raw = values.get(option.key, option.default)
            result[option.key] = option.convert(raw, self.name)
        return result

    def format(self, values: Mapping[str, Any]) -> str:
        """A macro options string for ``values`` (validated), as the Macro Recorder would write it."""
        checked = self.validate(values)
        return " ".join(t for t in (o.format(checked[o.key]) for o in self.options) if t)

    def usage(self) -> str:
        """One line per option: key, expected form, default, help."""
        lines = [f'run("{self.name}", "key=value ..."): {self.help}']
        for o in self.options:
            default = "" if o.kind == "bool" else f" (default: {o.default!r})"
            need = " [required]" if o.required else ""
            lines.append(f"  {o.key}: {o.expected}{default}{need} - {o.help}")
        return "\n".join(lines)

    def _unknown(self, key: str) -> InputError:
        close = difflib.get_close_matches(key, self.keys, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return InputError(f"{self.name}: unknown option {key!r}{hint}; valid keys: {', '.join(self.keys)}")


_TOKEN = re.compile(r"\s*([^\s=\[\]]+)(?:=(\[[^\]]*\]|[^\s\[\]]*))?")


def tokenize(text: str, command: str = "") -> list[tuple[str, str | None]]:
    """Split ImageJ macro options into ``(key, value)`` pairs; ``value`` is None for a bare key.

    >>> tokenize("model=[/a b/m] tile=256 probabilities")
    [('model', '/a b/m'), ('tile', '256'), ('probabilities', None)]
    """
    pairs: list[tuple[str, str | None]] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            rest = text[position:].strip()
            where = f"{command}: " if command else ""
            raise InputError(
                f"{where}cannot read the options from {rest!r}: expected key=value, key=[value with spaces] "
                "or a bare key, separated by spaces"
            )
        key, value = match.group(1), match.group(2)
        if value is not None and value.startswith("["):
            value = value[1:-1]
        pairs.append((key.lower(), value))
        position = match.end()
    return pairs


def format_args(args: str | Mapping[str, Any] | Iterable[str] | None) -> str:
    """Macro argument text (for ``getArgument()``) from a string, a mapping or ``key=value`` items.

    >>> format_args({"input": "/data/my images", "tile": 256, "gpu": True})
    'input=[/data/my images] tile=256 gpu'
    """
    if args is None:
        return ""
    if isinstance(args, str):
        return args
    if isinstance(args, Mapping):
        items = []
        for key, value in args.items():
            if value is True:
                items.append(str(key))
            elif value is False or value is None:
                continue
            else:
                text = _num(value) if isinstance(value, float) else str(value)
                items.append(f"{key}=[{text}]" if (" " in text or not text) else f"{key}={text}")
        return " ".join(items)
    items = []
    for item in args:
        key, sep, value = str(item).partition("=")
        if sep and " " in value and not value.startswith("["):
            value = f"[{value}]"
        items.append(f"{key}{sep}{value}")
    return " ".join(items)
