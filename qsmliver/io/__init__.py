"""Reading and writing: DICOM, NIfTI and BIDS in, NIfTI/BIDS with JSON sidecars out.

Every reader returns a validated :class:`~qsmliver.data.MultiEchoGRE`; every writer writes
atomically (:mod:`qsmliver.io.atomic`). :func:`read` picks the reader from what it is given.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from qsmliver.data import MultiEchoGRE
from qsmliver.errors import QSMInputError

__all__ = ["detect_format", "read"]

_NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _is_nifti(path: Path) -> bool:
    return path.name.endswith(_NIFTI_SUFFIXES)


def detect_format(path: str | os.PathLike) -> str:
    """Say whether ``path`` is "bids", "nifti" or "dicom" input.

    A folder holding ``*_MEGRE.nii[.gz]`` files (at any depth below it) is BIDS; a NIfTI file
    is NIfTI; anything else (a folder of DICOM files, a DICOM file) is DICOM.

    Raises
    ------
    QSMInputError
        If the path does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise QSMInputError("no such file or folder", path)
    if path.is_dir():
        megre = path.rglob("*_MEGRE.nii*")
        if any(p.name.endswith(("_MEGRE.nii", "_MEGRE.nii.gz")) for p in megre):
            return "bids"
        if any(_is_nifti(p) for p in path.iterdir()):
            return "nifti"
        return "dicom"
    if _is_nifti(path):
        return "nifti"
    return "dicom"


def read(path: str | os.PathLike | list, **options: Any) -> MultiEchoGRE:
    """Read a multi-echo GRE acquisition from DICOM, NIfTI or BIDS.

    Parameters
    ----------
    path : path or list of paths
        A BIDS subject/session folder, a DICOM folder or file list, a NIfTI magnitude file
        (its phase given as ``phase=``, or found as the ``*_ph``/``*_phase`` companion), or a
        folder of NIfTI files.
    **options
        Passed to the reader: ``te_s``, ``b0_t``, ``b0_dir``, ``phase_scale`` (NIfTI/BIDS),
        ``subject``, ``session``, ``acquisition``, ``run`` (BIDS), ``series``, ``progress``
        (DICOM).

    Returns
    -------
    MultiEchoGRE
    """
    if isinstance(path, (list, tuple)):
        paths = [Path(p) for p in path]
        if paths and all(_is_nifti(p) for p in paths):
            from qsmliver.io.nifti import read_nifti

            return read_nifti(magnitude=paths, **options)
        from qsmliver.io.dicom import read_dicom

        return read_dicom(paths, **options)
    fmt = detect_format(path)
    if fmt == "bids":
        from qsmliver.io.bids import read_bids

        return read_bids(path, **options)
    if fmt == "nifti":
        from qsmliver.io.nifti import read_nifti_auto

        return read_nifti_auto(path, **options)
    from qsmliver.io.dicom import read_dicom

    return read_dicom(path, **options)
