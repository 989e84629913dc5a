"""Small file helpers shared by io, metrics, plots and model files.

:func:`atomic_path` is how deepseg writes every output file: the writer fills a temporary file in
the destination folder, which replaces the destination only when writing succeeded. A failure or a
cancel leaves neither a half-written destination nor a stray temporary file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import InputError


def full_suffix(path: str | Path) -> str:
    """The suffix that identifies a format, keeping double suffixes such as ``.ome.tif``.

    >>> full_suffix("a/cells.ome.tiff"), full_suffix("b.png"), full_suffix("noext")
    ('.ome.tiff', '.png', '')
    """
    suffixes = Path(path).suffixes
    if len(suffixes) >= 2 and suffixes[-2].lower() == ".ome":
        return "".join(suffixes[-2:])
    return suffixes[-1] if suffixes else ""


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    Parameters
    ----------
    path : str or Path
        The final destination. Its parent folder is created if missing.
    suffix : str, optional
        Suffix of the temporary file; defaults to the destination's (``.ome.tif`` kept whole), so
        libraries that pick the format from the extension still do the right thing.

    Yields
    ------
    Path
        A path that does not exist yet (the writer creates it). If the body raises, the temporary
        file is deleted and the destination is left untouched.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(folder / "out.txt") as tmp:
    ...     _ = tmp.write_text("done")
    >>> (folder / "out.txt").read_text()
    'done'
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = full_suffix(final) if suffix is None else suffix
    fd, name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".tmp{suffix}", dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    tmp.unlink()  # writers create the file themselves; some refuse to overwrite
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary file for {final}")
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file: same path after resolving symlinks, or a hard link."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.expanduser().resolve() == b.expanduser().resolve()


def refuse_overwriting(outputs: dict[str, Any], inputs: dict[str, Any]) -> None:
    """Raise :class:`~engine.errors.InputError` when an output would replace an input or another output.

    ``outputs`` and ``inputs`` map a description (``"--out"``, ``"the input image"``) to a path or
    None (ignored). Paths are compared after resolving symlinks, and hard links count as the same file,
    so no spelling of a path lets deepseg write over a user's input. Call it before writing anything.

    >>> refuse_overwriting({"--out": "labels.tif"}, {"the input": "image.tif"})
    >>> refuse_overwriting({"--out": "a.tif"}, {"the input": "./a.tif"})
    Traceback (most recent call last):
    ...
    engine.errors.InputError: --out 'a.tif' is the input 'a.tif': choose another output path (deepseg never overwrites its inputs)
    """
    named_outputs = [(name, Path(p)) for name, p in outputs.items() if p is not None]
    named_inputs = [(name, Path(p)) for name, p in inputs.items() if p is not None]
    for i, (out_name, out) in enumerate(named_outputs):
        for in_name, source in named_inputs:
            if _same_file(out, source):
                raise InputError(f"{out_name} {str(out)!r} is {in_name} {str(source)!r}: choose another output "
                                 "path (deepseg never overwrites its inputs)")
        for other_name, other in named_outputs[:i]:
            if _same_file(out, other):
                raise InputError(f"{out_name} {str(out)!r} is the same file as {other_name} {str(other)!r}: "
                                 "give each output its own path")


def cache_root() -> Path:
    """Per-user cache folder: ``$DEEPSEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/deepseg``, else ``~/.cache/deepseg``."""
    if os.environ.get("DEEPSEG_CACHE_DIR"):
        return Path(os.environ["DEEPSEG_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "deepseg"
