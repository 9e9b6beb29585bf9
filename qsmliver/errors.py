"""Exceptions raised by qsmliver.

Every error that a user can cause (a bad file, an inconsistent header, a bad option) is a
:class:`QSMError` subclass whose message names the file and the field concerned, so that the
command line can print one clear line and exit with status 2 (DESIGN section 4).
"""

from __future__ import annotations

import os

__all__ = [
    "QSMConfigError",
    "QSMError",
    "QSMInputError",
    "QSMNumericalError",
    "QSMOutputExistsError",
]


class QSMError(Exception):
    """Base class of all qsmliver errors."""


class QSMInputError(QSMError, ValueError):
    """Bad or inconsistent input data.

    Parameters
    ----------
    message : str
        What is wrong, in words a user understands.
    path : str or os.PathLike or sequence of them, optional
        The file(s) or folder the problem was found in. Named first in the message.
    field : str, optional
        The header field, sidecar key or array concerned (e.g. ``"EchoTime"``).

    Examples
    --------
    >>> str(QSMInputError("echo times are not increasing", path="sub-01.json", field="EchoTime"))
    'sub-01.json: EchoTime: echo times are not increasing'
    """

    def __init__(
        self,
        message: str,
        path: str | os.PathLike | list | tuple | None = None,
        field: str | None = None,
    ) -> None:
        self.reason = message
        self.path = path
        self.field = field
        super().__init__(self._compose())

    def _compose(self) -> str:
        parts = []
        if self.path is not None:
            parts.append(_describe_path(self.path))
        if self.field:
            parts.append(str(self.field))
        parts.append(self.reason)
        return ": ".join(parts)


class QSMConfigError(QSMError, ValueError):
    """Bad or inconsistent configuration (options, config file, device request)."""


class QSMOutputExistsError(QSMError, FileExistsError):
    """An output file exists already and overwriting was not requested."""


class QSMNumericalError(QSMError, ArithmeticError):
    """A numerical stage failed (a solver diverged, a fit produced non-finite values).

    Parameters
    ----------
    stage : str
        The pipeline stage, e.g. ``"dipole inversion (TV-ADMM)"``.
    message : str
        How it failed.
    """

    def __init__(self, stage: str, message: str) -> None:
        self.stage = stage
        super().__init__(f"{stage}: {message}")


def _describe_path(path) -> str:
    if isinstance(path, (list, tuple)):
        names = [os.fspath(p) for p in path]
        if len(names) <= 3:
            return ", ".join(names)
        return f"{names[0]} (and {len(names) - 1} more files)"
    return os.fspath(path)
