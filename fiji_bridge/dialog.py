"""The GenericDialog of a command, generated from its :class:`~fiji_bridge.options.CommandSpec`.

Each field's label starts with the option key, so ImageJ's Macro Recorder writes exactly the keys
that :meth:`CommandSpec.parse` reads. Numbers other than integers use text fields: a numeric field
would round them to its display digits when recorded (lr=0.001 would become 0.00).
"""

from __future__ import annotations

from typing import Any, Mapping

from .options import CommandSpec, Option, _num


def _text(option: Option, value: Any) -> str:
    if option.kind == "size":
        return "0" if not value else ",".join(str(v) for v in value)
    if isinstance(value, float):
        return _num(value)
    return "" if value is None else str(value)


def ask(spec: CommandSpec, initial: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """Show the command's dialog (needs a display); return the checked values, or None if cancelled."""
    import jpype

    GenericDialog = jpype.JClass("ij.gui.GenericDialog")
    values = {**spec.defaults(), **(initial or {})}
    gd = GenericDialog(spec.name.rstrip(".").strip())
    for option in spec.options:
        value = values[option.key]
        label = option.dialog_label
        if option.kind == "int":
            gd.addNumericField(label, float(value), 0)
        elif option.kind == "bool":
            gd.addCheckbox(label, bool(value))
        elif option.kind == "choice":
            gd.addChoice(label, jpype.JArray(jpype.JString)(list(option.choices)), str(value))
        elif option.kind == "folder" and hasattr(gd, "addDirectoryField"):  # ImageJ >= 1.53
            gd.addDirectoryField(label, _text(option, value))
        elif option.kind == "file" and hasattr(gd, "addFileField"):
            gd.addFileField(label, _text(option, value))
        else:
            gd.addStringField(label, _text(option, value), 25)
    gd.addHelp(_help_html(spec))
    gd.showDialog()
    if gd.wasCanceled():
        return None
    answers: dict[str, Any] = {}
    for option in spec.options:
        if option.kind == "int":
            answers[option.key] = float(gd.getNextNumber())
        elif option.kind == "bool":
            answers[option.key] = bool(gd.getNextBoolean())
        elif option.kind == "choice":
            answers[option.key] = str(gd.getNextChoice())
        else:
            answers[option.key] = str(gd.getNextString())
    return spec.validate(answers)


def _help_html(spec: CommandSpec) -> str:
    """The dialog's Help button text (GenericDialog shows "<html>" help in a window)."""
    rows = "".join(f"<li><b>{o.key}</b>: {o.help} ({o.expected})</li>" for o in spec.options)
    return f"<html><h3>{spec.name}</h3><p>{spec.help}</p><ul>{rows}</ul></html>"
