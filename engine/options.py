"""User-facing options declared once, and the unknown-keyword check of the public functions.

A training option is a :class:`~engine.config.TrainConfig` field declared with :func:`option`: its type,
default, choices, range, help, CLI flag, Fiji macro key and dialog label live in that one place.
``engine.cli`` builds the ``train`` arguments from it, ``fiji_bridge.commands`` builds the
``DeepSeg Train...`` dialog and macro options (and both directions of the mapping) from it, and
``TrainConfig.validate`` checks choices and ranges from it. The declarations are plain data: the engine
imports nothing from fiji_bridge.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import json
import re
from dataclasses import MISSING, dataclass
from typing import Any, Callable, Iterable, Sequence, TypeVar

from .errors import InputError

F = TypeVar("F", bound=Callable[..., Any])

KINDS = ("text", "image", "folder", "int", "float", "bool", "choice", "size", "names", "mapping")
"""``image``: a file or folder of images (in Fiji also an open image); ``size``: one int for every axis or
one per axis; ``names``: comma-separated texts; ``mapping``: ``key=value`` pairs (network options)."""


@dataclass(frozen=True)
class Declared:
    """How one option is offered to users; ``name`` and ``default`` come from the dataclass field.

    ``flag``/``key``: CLI flag and Fiji macro key (None: not offered there). ``label``: the Fiji dialog
    label (its first word is the key). ``auto``: what None means, shown as a word in Fiji ("auto":
    derived, explained by ``auto_help``; "none": not used). ``choices``: a tuple is checked by
    ``TrainConfig.validate``; a callable (a registry, e.g. the networks) is left to the code using it,
    which names the close matches. ``minimum``/``maximum`` are inclusive, ``above``/``below`` exclusive.
    ``required``: Fiji must be given a value (the CLI falls back on the default).
    """

    help: str
    kind: str = "text"
    flag: str | None = None
    key: str | None = None
    label: str | None = None
    choices: tuple[str, ...] | Callable[[], Sequence[str]] = ()
    auto: str = ""
    auto_help: str = ""
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    below: float | None = None
    note: str = ""
    required: bool = False
    name: str = ""
    default: Any = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"option {self.name or self.help!r}: kind {self.kind!r} is not one of {KINDS}")

    def choice_list(self) -> tuple[str, ...]:
        return tuple(self.choices() if callable(self.choices) else self.choices)

    @property
    def range_text(self) -> str:
        """``">= 1"``, ``"> 0"``, ``"0 <= lr < 1"`` or ``""``."""
        low = (f"{_num(self.minimum)} <=" if self.minimum is not None else
               f"{_num(self.above)} <" if self.above is not None else "")
        high = (f"<= {_num(self.maximum)}" if self.maximum is not None else
                f"< {_num(self.below)}" if self.below is not None else "")
        if low and high:
            return f"{low} {self.name} {high}"
        if low:
            first, op = low.split()
            return f"{op.replace('<', '>')} {first}"
        return high

    def full_help(self, auto_word: str) -> str:
        """The help text, with what ``auto_word`` (e.g. "default" on the CLI, "auto" in Fiji) means."""
        return f"{self.help} ({auto_word}: {self.auto_help})" if self.auto_help else self.help

    def check(self, value: Any) -> None:
        """Raise InputError (``name=value: expected ...``) unless ``value`` is an allowed choice/number."""
        if value is None and (self.auto or self.default is None):
            return
        if self.kind == "choice" and not callable(self.choices):
            if value not in self.choices:
                raise InputError(f"{self.name}={value!r}: expected one of {self.choices}{self.note}")
        elif self.kind in ("int", "float"):
            self._check_number(value)

    def _check_number(self, value: Any) -> None:
        integer = self.kind == "int"
        expected = f"{'an integer' if integer else 'a number'} {self.range_text}".strip()
        if self.auto:
            expected += f" or None ({self.auto_help or self.auto})"
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InputError(f"{self.name}={value!r}: expected {expected}") from None
        if isinstance(value, bool) or (integer and number != int(number)) or number != number:
            raise InputError(f"{self.name}={value!r}: expected {expected}")
        if ((self.minimum is not None and number < self.minimum) or (self.maximum is not None and number > self.maximum)
                or (self.above is not None and number <= self.above) or (self.below is not None and number >= self.below)):
            raise InputError(f"{self.name}={value!r}: expected {self.range_text}{self.note}")


def option(default: Any = MISSING, *, default_factory: Any = MISSING, **declared: Any) -> Any:
    """A dataclass field that is a user-facing option (``declared``: the fields of :class:`Declared`)."""
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"option": Declared(**declared)})


def declared_options(cls: type) -> list[Declared]:
    """The options declared in dataclass ``cls``, in field order, with their names and defaults."""
    found = []
    for f in dataclasses.fields(cls):
        declared = f.metadata.get("option")
        if declared is not None:
            default = f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]
            found.append(dataclasses.replace(declared, name=f.name, default=default))
    return found


# ------------------------------------------------------------------------------------------------ text forms


def parse_names(text: str | Sequence[str] | None) -> list[str] | None:
    """``"bg, nuclei"`` -> ``["bg", "nuclei"]``; empty -> None."""
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [str(n).strip() for n in items if str(n).strip()]
    return names or None


_PAIR = re.compile(r"([^\s=,]+)(?:=(\[[^\]]*\]|\([^)]*\)|\{[^}]*\}|\"[^\"]*\"|[^\s,]*))?")


def parse_mapping(text: str, what: str = "options") -> dict[str, Any]:
    """``"depth=3 filters=16 norm=batch"`` (commas work too, or a JSON object) -> a dict; values as JSON
    where they parse (``3``, ``[1, 2]``, ``true``), else texts; ``(6,12,18)`` is a list too (ImageJ macro
    options cannot hold brackets inside ``options=[...]``)."""
    text = text.strip()
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f"{what}={text!r} is not valid JSON: {err}") from None
        if not isinstance(parsed, dict):
            raise InputError(f"{what}={text!r}: expected key=value pairs or a JSON object")
        return parsed
    result: dict[str, Any] = {}
    position = 0
    while position < len(text):
        if text[position] in " ,":
            position += 1
            continue
        match = _PAIR.match(text, position)
        if match is None or match.end() == position:
            raise InputError(f"{what}: cannot read {text[position:]!r}: expected key=value pairs, e.g. depth=3")
        key, value = match.group(1), match.group(2)
        if value is None:
            raise InputError(f"{what}: {key!r} needs a value, e.g. {key}=3")
        result[key] = _json_or_text(value)
        position = match.end()
    return result


def format_mapping(values: dict[str, Any]) -> str:
    """The inverse of :func:`parse_mapping`: ``{"depth": 3, "rates": [6, 12]}`` -> ``"depth=3 rates=(6,12)"``."""
    return " ".join(f"{key}={_value_text(value)}" for key, value in values.items())


def _value_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and not any(isinstance(v, (list, tuple, dict)) for v in value):
        return "(" + ",".join(json.dumps(v) for v in value) + ")"
    return json.dumps(value, separators=(",", ":"))


def _json_or_text(value: str) -> Any:
    if value.startswith("(") and value.endswith(")"):
        value = f"[{value[1:-1]}]"
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def to_config(declared: Declared, value: Any) -> Any:
    """A value as users give it (CLI argument, Fiji dialog/macro value) -> the TrainConfig value."""
    kind = declared.kind
    if value is None or (kind in ("text", "image", "folder") and value == ""):
        return None
    if kind == "size":
        sizes = [int(v) for v in ([value] if isinstance(value, int) else value)]
        return sizes[0] if len(sizes) == 1 else sizes
    if kind == "names":
        return parse_names(value)
    if kind == "mapping":
        if isinstance(value, str):
            return parse_mapping(value, declared.key or declared.name)
        return dict(value)
    return value


def from_config(declared: Declared, value: Any) -> Any:
    """A TrainConfig value -> the value users give (the inverse of :func:`to_config`, for macros)."""
    kind = declared.kind
    if kind == "size":
        return None if value is None else tuple([value] if isinstance(value, int) else value)
    if kind == "names":
        return ",".join(value or [])
    if kind == "mapping":
        return format_mapping(value or {})
    if kind in ("text", "image", "folder"):
        return "" if value is None else str(value)
    return value


def _num(value: float | None) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# ------------------------------------------------------------------------------------------------ keywords


def unknown_option_error(unknown: Iterable[str], valid: Sequence[str], what: str = "option",
                         where: str = "") -> InputError:
    """``unknown option 'tiles' (did you mean 'tile'?); valid options: ...`` (one message for all)."""
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, valid, n=1)
        parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    plural = "s" if len(parts) > 1 else ""
    prefix = f"{where}: " if where else ""
    return InputError(f"{prefix}unknown {what}{plural} {', '.join(parts)}; valid options: {', '.join(valid)}")


def keyword_names(func: Callable[..., Any]) -> list[str]:
    """The names ``func`` accepts as keywords (not ``self``, ``*args`` or ``**kwargs``)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in inspect.signature(func).parameters.values()
            if p.kind in kinds and p.name not in ("self", "cls")]


def checked_keywords(func: F | None = None, *, also: Callable[[], Iterable[str]] | Iterable[str] = (),
                     what: str = "option") -> Any:
    """Decorator: an unknown keyword argument raises InputError naming the close match and the valid ones.

    ``@checked_keywords`` on a function with named parameters; ``@checked_keywords(also=TrainConfig.field_names)``
    on one that passes ``**options`` on (``also``: the names those accept, or a callable returning them).
    """
    if func is None:
        return functools.partial(checked_keywords, also=also, what=what)
    own = keyword_names(func)
    takes_more = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(func).parameters.values())
    if takes_more and not also:
        raise TypeError(f"{func.__qualname__} takes **kwargs: give checked_keywords(also=...) the names they accept")
    valid: list[str] = []

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if kwargs:
            if not valid:
                valid.extend(dict.fromkeys([*own, *(also() if callable(also) else also)]))
            unknown = [k for k in kwargs if k not in valid]
            if unknown:
                where = func.__qualname__.replace(".__init__", "")
                raise unknown_option_error(unknown, valid, what, f"{where}()")
        return func(*args, **kwargs)

    return wrapper
