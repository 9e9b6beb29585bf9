"""Plan a cohort run: one task per subject/session of a BIDS dataset, with its configuration hash.

A task names everything a worker needs to process one subject/session without asking the
driver again: the acquisitions (BIDS entities) to read, the label map for the ROI statistics,
the pipeline configuration, where to stage and where the results go. Tasks hold paths and
small dicts only, never arrays, so that they travel cheaply to any dask worker that sees the
same file system.

Output layout of a unit (``sub-<s>`` or ``sub-<s>/ses-<t>``) under the derivatives folder ``OUT``::

    OUT/sub-<s>[/ses-<t>]/anat/<prefix>_Chimap.nii.gz (+ .json), _fieldmap, _desc-localfield_map,
        _mask, _R2starmap, _desc-fieldnoise_map, <prefix>_recon.json,
        <prefix>_desc-roi_stats.tsv (+ .json)
    OUT/sub-<s>[/ses-<t>]/figures/<prefix>_desc-<map>_montage.png
    OUT/sub-<s>[/ses-<t>]/<prefix>_report.html
    OUT/sub-<s>[/ses-<t>]/sub-<s>[_ses-<t>]_batch.json          (the completion record)

where ``<prefix>`` is the acquisition's BIDS entities (``sub-01_ses-1_acq-x_run-1``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from qsmliver.errors import QSMConfigError, QSMInputError

__all__ = [
    "BATCH_FORMAT",
    "SubjectTask",
    "config_hash",
    "estimate_memory_bytes",
    "find_labels",
    "plan_batch",
    "read_label_names",
]

#: Version of the output layout and record format; part of the configuration hash.
BATCH_FORMAT = 1

#: Configuration keys that do not change the results (left out of the hash).
_NOT_HASHED = ("device",)


@dataclasses.dataclass(frozen=True)
class SubjectTask:
    """One unit of work: every MEGRE acquisition of one subject (and session).

    Attributes
    ----------
    subject, session : str
        BIDS labels (without ``sub-``/``ses-``); ``session`` is None for session-less data.
    bids_root : str
        Absolute path of the BIDS dataset.
    output : str
        Absolute path of the derivatives folder.
    acquisitions : tuple of dict
        Per acquisition, the selectors for :func:`qsmliver.io.bids.read_bids`
        (``acquisition``, ``run``) and its ``files``.
    anatomy : str
        "brain" or "liver" (passed to :func:`qsmliver.pipeline.recon`).
    config : dict
        The pipeline configuration (:attr:`qsmliver.pipeline.ReconConfig.values`).
    config_hash : str
        :func:`config_hash` of the configuration, anatomy and label choice.
    labels : str or None
        Label map (dseg NIfTI) for the ROI statistics; None: the reconstruction mask is the
        only ROI ("mask").
    label_table : str or None
        BIDS dseg TSV (``index``, ``name``) naming the labels.
    device : str
        Device the worker uses ("cpu" or "cuda").
    memory_bytes : int
        Estimated peak memory of one acquisition (bytes), for worker sizing.
    input_fingerprint : str
        Hash of the input file names and sizes; a changed input makes a finished unit stale.
    """

    subject: str
    session: str | None
    bids_root: str
    output: str
    acquisitions: tuple[dict[str, Any], ...]
    anatomy: str
    config: dict[str, Any]
    config_hash: str
    labels: str | None = None
    label_table: str | None = None
    device: str = "cpu"
    memory_bytes: int = 0
    input_fingerprint: str = ""

    @property
    def unit(self) -> str:
        """``sub-<s>`` or ``sub-<s>_ses-<t>``: the name of the unit's files."""
        return f"sub-{self.subject}" + (f"_ses-{self.session}" if self.session else "")

    @property
    def relative_dir(self) -> Path:
        """``sub-<s>`` or ``sub-<s>/ses-<t>``: the unit's folder below the output."""
        folder = Path(f"sub-{self.subject}")
        return folder / f"ses-{self.session}" if self.session else folder

    @property
    def output_dir(self) -> Path:
        """Absolute folder of the unit's results."""
        return Path(self.output) / self.relative_dir

    @property
    def record_path(self) -> Path:
        """The completion record, ``<unit dir>/<unit>_batch.json``."""
        return self.output_dir / f"{self.unit}_batch.json"

    @property
    def input_dir(self) -> Path:
        """The unit's folder in the BIDS dataset."""
        return Path(self.bids_root) / self.relative_dir


def config_hash(config: Mapping[str, Any], *, anatomy: str, labels: str | None = None) -> str:
    """A short, stable hash of everything that decides a unit's results.

    Parameters
    ----------
    config : mapping
        Pipeline configuration (:attr:`~qsmliver.pipeline.ReconConfig.values`); the device is
        left out (it does not change the results beyond rounding).
    anatomy : str
        "brain" or "liver".
    labels : str, optional
        How the ROI labels were chosen (the ``--labels`` option, or None for the dataset's
        dseg files or the mask).

    Returns
    -------
    str
        16 hexadecimal digits (SHA-256 of the canonical JSON).

    Examples
    --------
    >>> a = config_hash({"inversion": {"method": "tkd"}, "device": "cpu"}, anatomy="brain")
    >>> b = config_hash({"device": "cuda", "inversion": {"method": "tkd"}}, anatomy="brain")
    >>> a == b, len(a)
    (True, 16)
    """
    values = {k: v for k, v in dict(config).items() if k not in _NOT_HASHED}
    values["anatomy"] = anatomy
    payload = {"recon": values, "labels": labels, "format": BATCH_FORMAT}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def estimate_memory_bytes(shape: Sequence[int], n_echoes: int) -> int:
    """Rough peak memory (bytes) of reconstructing one acquisition in one worker.

    The complex64 echoes and their magnitudes (12 bytes per voxel and echo, twice for
    copies), about 60 float32 working volumes of the stages (zero-padded FFTs of the
    inversion), and 400 MiB for the interpreter and libraries.

    Examples
    --------
    >>> round(estimate_memory_bytes((256, 256, 256), 6) / 2**30, 1)
    6.4
    """
    voxels = int(_product(shape))
    return int(400 * 2**20 + voxels * (24 * int(n_echoes) + 4 * 60))


def _product(values: Sequence[int]) -> int:
    out = 1
    for value in values:
        out *= int(value)
    return out


# -- labels -----------------------------------------------------------------------------------
def read_label_names(path: str | os.PathLike | None) -> dict[int, str]:
    """Label names from a BIDS dseg TSV (columns ``index`` and ``name``); {} without a file.

    Raises
    ------
    QSMInputError
        If the table lacks the columns or holds a non-integer index.
    """
    if path is None:
        return {}
    file = Path(path)
    lines = [line.rstrip("\r\n").split("\t") for line in
             file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines or "index" not in lines[0] or "name" not in lines[0]:
        raise QSMInputError("a dseg table needs the columns 'index' and 'name'", file)
    index, name = lines[0].index("index"), lines[0].index("name")
    names: dict[int, str] = {}
    for row in lines[1:]:
        try:
            names[int(row[index])] = row[name]
        except (ValueError, IndexError):
            raise QSMInputError(f"bad row {row!r} (index must be an integer)", file) from None
    return names


def _dseg_table(image: Path) -> str | None:
    name = image.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            table = image.with_name(name[: -len(suffix)] + ".tsv")
            return str(table) if table.is_file() else None
    return None


def find_labels(bids_root: str | os.PathLike, subject: str, session: str | None = None,
                labels: str | os.PathLike | None = None) -> tuple[str | None, str | None]:
    """The label map (dseg) of one subject/session and its TSV of names.

    Parameters
    ----------
    bids_root : path
        The BIDS dataset.
    subject, session : str
        Labels (without prefixes).
    labels : path, optional
        A dseg NIfTI used for every subject (it must be on each subject's GRE grid), or a
        folder laid out like a BIDS derivatives dataset that is searched instead of the
        dataset. Default: ``<bids_root>`` and then every ``<bids_root>/derivatives/*``.

    Returns
    -------
    (str or None, str or None)
        The dseg image and its ``.tsv`` (None where missing). The session's own dseg wins over
        a subject-level one; among several, the first in name order.

    Raises
    ------
    QSMInputError
        If ``labels`` does not exist.
    """
    if labels is not None:
        given = Path(labels)
        if given.is_file():
            return str(given.absolute()), _dseg_table(given.absolute())
        if not given.is_dir():
            raise QSMInputError("no such label file or folder", given)
        roots = [given]
    else:
        root = Path(bids_root)
        derivatives = root / "derivatives"
        roots = [root] + (sorted(p for p in derivatives.iterdir() if p.is_dir())
                          if derivatives.is_dir() else [])
    folders = []
    if session is not None:
        folders.append((Path(f"sub-{subject}") / f"ses-{session}" / "anat", session))
    folders.append((Path(f"sub-{subject}") / "anat", None))
    from qsmliver.io.bids import parse_bids_name

    for relative, ses in folders:
        for root in roots:
            folder = root / relative
            if not folder.is_dir():
                continue
            for image in sorted(folder.glob("*_dseg.nii*")):
                parsed = parse_bids_name(image.name)
                if parsed is None or parsed[2] not in (".nii", ".nii.gz"):
                    continue
                entities = parsed[0]
                if entities.get("sub") != subject or entities.get("ses") != ses:
                    continue
                return str(image.absolute()), _dseg_table(image.absolute())
    return None, None


# -- planning ---------------------------------------------------------------------------------
def _fingerprint(paths: Sequence[str], root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        file = Path(path)
        try:
            relative = file.relative_to(root).as_posix()
        except ValueError:
            relative = file.as_posix()
        size = file.stat().st_size if file.exists() else -1
        digest.update(f"{relative}\t{size}\n".encode())
    return digest.hexdigest()[:16]


def _header_shape(path: str) -> tuple[tuple[int, ...], bool]:
    """Shape of a NIfTI header (cheap: no data read); ``ok`` False when unreadable."""
    import nibabel as nib

    try:
        return tuple(int(n) for n in nib.load(path).shape[:3]), True
    except Exception:  # a corrupt file is reported by the worker that reads it
        return (0, 0, 0), False


def plan_batch(
    bids_dir: str | os.PathLike,
    output: str | os.PathLike,
    *,
    participant_labels: Sequence[str] | None = None,
    sessions: Sequence[str] | None = None,
    anatomy: str = "brain",
    config: Mapping[str, Any] | None = None,
    labels: str | os.PathLike | None = None,
    device: str = "cpu",
) -> list[SubjectTask]:
    """One :class:`SubjectTask` per subject/session holding MEGRE data.

    Parameters
    ----------
    bids_dir : path
        BIDS dataset root.
    output : path
        Derivatives folder (must not be the dataset itself).
    participant_labels, sessions : sequence of str, optional
        Keep only these subjects / sessions (with or without ``sub-``/``ses-``).
    anatomy : {"brain", "liver"}
    config : mapping, optional
        Pipeline configuration (default: :data:`qsmliver.pipeline.DEFAULT_CONFIG`).
    labels : path, optional
        See :func:`find_labels`.
    device : str
        Device the workers use.

    Returns
    -------
    list of SubjectTask
        Sorted by subject and session.

    Raises
    ------
    QSMInputError
        No such dataset, no MEGRE data, or a requested subject/session that is not there.
    QSMConfigError
        A bad label or configuration, or ``output`` equal to the dataset.
    """
    from qsmliver.io.bids import list_bids_megre, validate_label
    from qsmliver.pipeline import ReconConfig

    root = Path(bids_dir).absolute()
    if not root.is_dir():
        raise QSMInputError("no such BIDS folder", root)
    out = Path(output).absolute()
    if out == root:
        raise QSMConfigError(f"{out}: the output folder must not be the BIDS dataset itself; "
                             "use e.g. <bids>/derivatives/qsmliver")
    values = (config.values if isinstance(config, ReconConfig)
              else ReconConfig.from_mapping(config or {}).values)
    values = {**values, "anatomy": anatomy}
    ReconConfig.from_mapping(values)  # validates the anatomy as well
    wanted_subjects = ({validate_label(s, "sub") for s in participant_labels}
                       if participant_labels else None)
    wanted_sessions = {validate_label(s, "ses") for s in sessions} if sessions else None
    listing = list_bids_megre(root)
    if not listing:
        raise QSMInputError("no *_MEGRE.nii[.gz] acquisitions found (BIDS sub-*/anat/ "
                            "folders)", root)
    units: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    for item in listing:
        if wanted_subjects is not None and item["subject"] not in wanted_subjects:
            continue
        if wanted_sessions is not None and item["session"] not in wanted_sessions:
            continue
        units.setdefault((item["subject"], item["session"]), []).append(item)
    if wanted_subjects is not None:
        missing = sorted(wanted_subjects - {s for s, _ in units})
        if missing:
            raise QSMInputError(f"no MEGRE data for participant(s) {', '.join(missing)}", root)
    if wanted_sessions is not None:
        missing = sorted(wanted_sessions - {s for _, s in units})
        if missing:
            raise QSMInputError(f"no MEGRE data for session(s) {', '.join(missing)}", root)
    if not units:
        raise QSMInputError("no MEGRE acquisitions left after the subject/session selection",
                            root)
    labels_spec = None if labels is None else str(Path(labels).absolute())
    chash = config_hash(values, anatomy=anatomy, labels=labels_spec)
    tasks = []
    for (subject, session), items in sorted(units.items(), key=lambda kv: (kv[0][0],
                                                                          kv[0][1] or "")):
        acquisitions = tuple({"acquisition": item["acquisition"], "run": item["run"],
                              "entities": item["entities"], "echoes": item["echoes"],
                              "files": [str(Path(f).absolute()) for f in item["files"]]}
                             for item in items)
        label_image, label_table = find_labels(root, subject, session, labels)
        files = [f for acq in acquisitions for f in acq["files"]]
        files += [p for p in (label_image, label_table) if p]
        shape, _ = _header_shape(acquisitions[0]["files"][0])
        memory = max(estimate_memory_bytes(shape, acq["echoes"]) for acq in acquisitions)
        tasks.append(SubjectTask(
            subject=subject, session=session, bids_root=str(root), output=str(out),
            acquisitions=acquisitions, anatomy=anatomy, config={**values, "device": device},
            config_hash=chash, labels=label_image, label_table=label_table, device=device,
            memory_bytes=memory, input_fingerprint=_fingerprint(files, root)))
    return tasks
