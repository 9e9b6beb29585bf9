"""Reading configuration tables (TOML or JSON files) with clear errors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from qsmliver.errors import QSMConfigError, QSMInputError

__all__ = ["read_config_file"]


def read_config_file(path: str | os.PathLike, what: str = "configuration") -> dict[str, Any]:
    """A table of options from a ``.toml`` or ``.json`` file (JSON for any other suffix).

    Raises
    ------
    QSMInputError
        If the file is missing, cannot be parsed, or is not a table.
    QSMConfigError
        For TOML on Python 3.10 (no ``tomllib``).
    """
    file = Path(path)
    if not file.is_file():
        raise QSMInputError(f"no such {what} file", file)
    text = file.read_text(encoding="utf-8")
    try:
        if file.suffix.lower() == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                raise QSMConfigError(f"{file}: TOML needs Python >= 3.11; use JSON") from None
            table = tomllib.loads(text)
        else:
            table = json.loads(text)
    except (ValueError, TypeError) as exc:
        raise QSMInputError(f"cannot parse the {what}: {exc}", file) from None
    if not isinstance(table, dict):
        raise QSMInputError(f"the {what} must be a table/object of parameters", file)
    return table
