"""Atomic file output: write to a temporary file beside the target, then rename.

A failed or interrupted write never leaves a partial file under the final name and never
replaces a good file unless ``overwrite=True`` (DESIGN section 4).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qsmliver.errors import QSMOutputExistsError

__all__ = ["atomic_path", "check_writable", "write_json_atomic"]


def check_writable(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Raise :class:`QSMOutputExistsError` if ``path`` exists and ``overwrite`` is False."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise QSMOutputExistsError(
            f"{path}: output exists; pass overwrite=True (CLI: --overwrite) to replace it"
        )
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it to ``path`` on success.

    The temporary name keeps the target's suffixes (``.nii.gz``) so that writers that choose
    the format from the name work. On any exception the temporary file is removed and the
    target is left untouched.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(out) as tmp:
    ...     _ = tmp.write_text("done")
    >>> out.read_text()
    'done'
    """
    path = check_writable(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{suffix}",
                                    dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        if not overwrite and path.exists():  # appeared while we were writing
            raise QSMOutputExistsError(f"{path}: output appeared while writing; not replaced")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(data: Any, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n",
                       encoding="utf-8")
    return Path(path)


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
