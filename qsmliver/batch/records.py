"""Completion and failure records of a cohort run, and the dataset-level files.

A unit (subject or subject/session) is *done* when its folder holds
``<unit>_batch.json`` with ``"Status": "ok"``, the configuration hash of the current run and
the same input fingerprint. The record is written inside the staged folder before the folder
is renamed into place, so a unit folder never exists without its record (and never with a
record but missing files). A failure is recorded by the driver in
``OUT/logs/<unit>_batch-error.json`` (removed when the unit later succeeds).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from qsmliver.batch.plan import SubjectTask
from qsmliver.io.atomic import write_json_atomic

__all__ = [
    "LOG_DIR",
    "WORK_DIR",
    "failure_path",
    "file_checksums",
    "read_record",
    "unit_state",
    "write_dataset_description",
    "write_failure",
]

#: Hidden staging folder below the output (same file system, so renames are atomic).
WORK_DIR = ".qsmliver-work"
#: Folder of the failure records and run summaries.
LOG_DIR = "logs"


def file_checksums(folder: str | os.PathLike, *, skip: Iterable[str] = ()) -> dict[str, str]:
    """SHA-256 of every file below ``folder`` (relative POSIX paths, sorted)."""
    folder = Path(folder)
    skipped = set(skip)
    sums = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if relative in skipped:
            continue
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        sums[relative] = digest.hexdigest()
    return sums


def read_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """A completion record, or None when missing or unreadable."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def unit_state(task: SubjectTask) -> str:
    """``"done"``, ``"todo"`` (never finished) or ``"stale"`` (finished differently).

    "stale" means the unit's folder holds results of another configuration or of other input
    files (or a folder without a valid record): re-running replaces it only with
    ``overwrite``.
    """
    record = read_record(task.record_path)
    if record is None:
        return "stale" if _has_results(task) else "todo"
    same = (record.get("Status") == "ok" and record.get("ConfigHash") == task.config_hash
            and record.get("InputFingerprint") == task.input_fingerprint)
    return "done" if same else "stale"


def _has_results(task: SubjectTask) -> bool:
    """Files of this unit in its folder (session folders of a session-less unit aside)."""
    folder = task.output_dir
    if not folder.is_dir():
        return False
    return any(not (task.session is None and p.is_dir() and p.name.startswith("ses-"))
               for p in folder.iterdir())


def failure_path(output: str | os.PathLike, unit: str) -> Path:
    """``OUT/logs/<unit>_batch-error.json``."""
    return Path(output) / LOG_DIR / f"{unit}_batch-error.json"


def write_failure(task: SubjectTask, info: dict[str, Any]) -> Path:
    """Record a failed unit (error type, message, traceback, configuration hash)."""
    record = {"Unit": task.unit, "Subject": task.subject, "Session": task.session,
              "Status": "failed", "ConfigHash": task.config_hash,
              "InputFingerprint": task.input_fingerprint, **info}
    return write_json_atomic(record, failure_path(task.output, task.unit), overwrite=True)


def write_dataset_description(output: str | os.PathLike, bids_root: str | os.PathLike
                              ) -> Path:
    """``OUT/dataset_description.json`` of the derivatives (kept when it exists).

    BIDS derivatives: ``DatasetType`` "derivative", ``GeneratedBy`` qsmliver with its
    version, ``SourceDatasets`` the raw dataset (its DOI when it has one).
    """
    from qsmliver import __version__

    path = Path(output) / "dataset_description.json"
    if path.exists():
        return path
    source: dict[str, Any] = {"URL": Path(bids_root).absolute().as_uri()}
    raw = read_record(Path(bids_root) / "dataset_description.json") or {}
    if raw.get("DatasetDOI"):
        source["DOI"] = raw["DatasetDOI"]
    if raw.get("Name"):
        source["Name"] = raw["Name"]
    description = {
        "Name": "qsmliver derivatives",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "qsmliver", "Version": __version__,
                         "CodeURL": "https://pypi.org/project/qsmliver/",
                         "Description": "qsmliver batch: QSM, field, local field, R2*, masks, "
                                        "ROI statistics and QC reports per subject/session"}],
        "SourceDatasets": [source],
    }
    try:
        return write_json_atomic(description, path, overwrite=False)
    except FileExistsError:  # written by a concurrent run meanwhile
        return path
