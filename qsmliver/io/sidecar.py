"""Provenance for JSON sidecars written next to every output (DESIGN section 2)."""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Iterable
from typing import Any

__all__ = ["provenance"]


def provenance(inputs: Iterable[str | os.PathLike] = (), **extra: Any) -> dict[str, Any]:
    """The software and input part of a sidecar.

    Parameters
    ----------
    inputs : iterable of path
        Input files the output was made from.
    **extra
        Further keys to record (e.g. ``Device="cuda:0"``).

    Returns
    -------
    dict
        ``{"GeneratedBy": [...], "SourceFiles": [...], "DateCreated": ..., **extra}``.
    """
    import nibabel
    import numpy
    import pydicom
    import scipy

    from qsmliver import __version__

    return {
        "GeneratedBy": [
            {
                "Name": "qsmliver",
                "Version": __version__,
                "CodeURL": "https://pypi.org/project/qsmliver/",
            }
        ],
        "SoftwareVersions": {
            "python": platform.python_version(),
            "numpy": numpy.__version__,
            "scipy": scipy.__version__,
            "nibabel": nibabel.__version__,
            "pydicom": pydicom.__version__,
        },
        "SourceFiles": [os.fspath(p) for p in inputs],
        "DateCreated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }
