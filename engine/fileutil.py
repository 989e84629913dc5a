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
from typing import Iterator


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
