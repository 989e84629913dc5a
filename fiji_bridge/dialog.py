"""The GenericDialog of a command, generated from its :class:`~fiji_bridge.options.CommandSpec`.

Image options offer the open images as a choice, as ImageJ's own commands do, plus ``[file or folder]``
with a path field below it (a path typed there wins over the choice). Automatic sizes and counts show
``auto``. Numbers other than integers use text fields: a numeric field would round them to its display
digits (lr=0.001 would become 0.00).

The dialog records itself: each option goes to the Macro Recorder under its key, written as
:meth:`CommandSpec.format` writes it (``image=<title or path>``, ``batch=auto``), so a recorded line
replays headless exactly as it ran.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .options import CommandSpec, Option

FILE_ITEM = "[file or folder]"
"""The image choice that means "the file or folder in the path field" (empty path: the option's default)."""


def ask(spec: CommandSpec, initial: Mapping[str, Any] | None = None,
        titles: Sequence[str] | None = None) -> dict[str, Any] | None:
    """Show the command's dialog (needs a display); return the checked values, or None if cancelled.

    ``titles``: the open images offered by image options (default: ImageJ's open images).
    """
    import jpype

    if titles is None:
        titles = [str(t) for t in (jpype.JClass("ij.WindowManager").getImageTitles() or [])]
    values = {**spec.defaults(), **(initial or {})}
    gd = jpype.JClass("ij.gui.GenericDialog")(spec.name.rstrip(".").strip())
    for option in spec.options:
        _add_field(gd, option, values[option.key], titles)
    gd.addHelp(_help_html(spec))
    gd.showDialog()
    if gd.wasCanceled():
        return None
    checked = spec.validate(_answers(gd, spec))
    _record(spec, checked)
    return checked


def _add_field(gd: Any, option: Option, value: Any, titles: Sequence[str]) -> None:
    import jpype

    label, text = option.dialog_label, option.text(value)
    if option.kind == "image":
        chosen = text if text in titles else FILE_ITEM
        gd.addChoice(label, jpype.JArray(jpype.JString)([*titles, FILE_ITEM]), chosen)
        path = "" if chosen != FILE_ITEM else text
        if hasattr(gd, "addDirectoryOrFileField"):  # ImageJ >= 1.54
            gd.addDirectoryOrFileField("or path", path)
        else:
            gd.addFileField("or path", path)
    elif option.kind == "int" and not option.auto:
        gd.addNumericField(label, float(value), 0)
    elif option.kind == "bool":
        gd.addCheckbox(label, bool(value))
    elif option.kind == "choice":
        gd.addChoice(label, jpype.JArray(jpype.JString)(list(option.choices)), str(value))
    elif option.kind == "folder":
        gd.addDirectoryField(label, text)
    elif option.kind == "file":
        gd.addFileField(label, text)
    else:
        gd.addStringField(label, text, 25)


def _answers(gd: Any, spec: CommandSpec) -> dict[str, Any]:
    """The dialog's values by option key, read from its fields (in the order :func:`_add_field` added them)."""
    fields = {name: iter(list(getattr(gd, f"get{name}")() or [])) for name in
              ("Choices", "StringFields", "NumericFields", "Checkboxes")}
    answers: dict[str, Any] = {}
    for option in spec.options:
        if option.kind == "image":
            chosen = str(next(fields["Choices"]).getSelectedItem())
            path = str(next(fields["StringFields"]).getText()).strip()
            answers[option.key] = path or ("" if chosen == FILE_ITEM else chosen)
        elif option.kind == "bool":
            answers[option.key] = bool(next(fields["Checkboxes"]).getState())
        elif option.kind == "choice":
            answers[option.key] = str(next(fields["Choices"]).getSelectedItem())
        elif option.kind == "int" and not option.auto:
            answers[option.key] = str(next(fields["NumericFields"]).getText())
        else:
            answers[option.key] = str(next(fields["StringFields"]).getText())
    return answers


def _record(spec: CommandSpec, values: Mapping[str, Any]) -> None:
    """Write the options to the Macro Recorder when it is recording this command."""
    import jpype

    Recorder = jpype.JClass("ij.plugin.frame.Recorder")
    if not Recorder.record or Recorder.getCommand() is None:
        return
    for option in spec.options:
        value = values[option.key]
        if option.kind == "bool":
            if value:
                Recorder.recordOption(option.key)
        else:  # the Recorder puts [...] around texts with spaces; empty ones are written [] as format does
            Recorder.recordOption(option.key, option.text(value) or "[]")


def _help_html(spec: CommandSpec) -> str:
    """The dialog's Help button text (GenericDialog shows "<html>" help in a window)."""
    rows = "".join(f"<li><b>{o.key}</b>: {o.help} ({o.expected})</li>" for o in spec.options)
    return (f"<html><h3>{spec.name}</h3><p>{spec.help}</p><ul>{rows}</ul>"
            f"<p>Images: choose an open image, or {FILE_ITEM} and give a path.</p></html>")
