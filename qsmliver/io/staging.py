"""All-or-nothing output of several files: stage in a temporary folder, then move into place.

A command that writes many files (``qsmliver convert``, a pipeline run, a batch subject) writes
them into a hidden staging folder beside the destination; only when everything was written are
the files moved to their final names. A failure or Ctrl-C leaves the destination as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from qsmliver.errors import QSMOutputExistsError

__all__ = ["staged_output_dir"]


@contextlib.contextmanager
def staged_output_dir(
    destination: str | os.PathLike,
    overwrite: bool = False,
    keep_existing: tuple[str, ...] = ("dataset_description.json",),
) -> Iterator[Path]:
    """Yield a staging folder whose contents are moved into ``destination`` on success.

    Parameters
    ----------
    destination : path
        The output folder (created if missing). Files already there and not produced by this
        run are left alone.
    overwrite : bool
        Replace files of the same name in ``destination``. Without it, any clash raises
        :class:`QSMOutputExistsError` before a single file is moved.
    keep_existing : tuple of str
        Relative paths that are dataset-level files shared by many runs: if one exists in
        ``destination`` already, it is kept and the staged copy dropped (never a clash).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "out"
    >>> with staged_output_dir(out) as stage:
    ...     _ = (stage / "a.txt").write_text("x")
    >>> sorted(p.name for p in out.iterdir())
    ['a.txt']
    """
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".qsmliver-staging-", dir=destination))
    try:
        yield stage
        produced = sorted(
            p for p in stage.rglob("*")
            if p.is_file()
            and not (str(p.relative_to(stage)) in keep_existing
                     and (destination / p.relative_to(stage)).exists())
        )
        targets = [destination / p.relative_to(stage) for p in produced]
        clashes = [t for t in targets if t.exists()]
        if clashes and not overwrite:
            names = ", ".join(str(t) for t in clashes[:3])
            more = f" (and {len(clashes) - 3} more)" if len(clashes) > 3 else ""
            raise QSMOutputExistsError(
                f"{names}{more}: output exists; use --overwrite (overwrite=True) to replace"
            )
        for source, target in zip(produced, targets, strict=False):
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
