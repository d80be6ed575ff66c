"""Files written whole or not at all: every output of specclass goes through here.

A writer gets a temporary path in the destination folder (same file system, so
the final :func:`os.replace` is atomic), writes it, and only then is it renamed
over the destination with ordinary file permissions (``0666 & ~umask``, not
``mkstemp``'s ``0600``). On any error, including ``KeyboardInterrupt``, the
temporary file is removed and the destination is left as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a temporary file name beside ``path``; rename it to ``path`` on success.

    Args:
        path: the destination (its folder is created).
        suffix: appended to the temporary name (e.g. ``.keras``: Keras and h5py
            pick a format from the file name).

    Example:
        >>> with atomic_path(tmp_dir / "table.csv") as tmp:   # doctest: +SKIP
        ...     write_table(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_atomic(path: str | os.PathLike, write: Callable[[str], Any], suffix: str = "") -> Path:
    """Call ``write(tmp_path)``, then rename ``tmp_path`` to ``path``; return ``Path(path)``."""
    with atomic_path(path, suffix) as tmp:
        write(tmp)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` as UTF-8 (newlines untranslated), flushed to disk, atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    return write_atomic(path, write)


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)`` for numpy scalars/arrays, paths, sets and tuples.

    Raises:
        TypeError: for anything else (names the type).
    """
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (numpy values converted), atomically.

    Raises:
        TypeError: if ``obj`` holds something JSON cannot represent.
    """
    return write_text_atomic(path, json.dumps(obj, indent=2, default=json_default, allow_nan=True) + "\n")
