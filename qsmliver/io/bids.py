"""Read BIDS multi-echo GRE (``*_MEGRE.nii[.gz]``), list what a dataset holds, and name files.

Layout (BIDS 1.9, the layout qsm-forward writes)::

    <root>/sub-<label>[/ses-<label>]/anat/
        sub-<label>[_ses-<label>][_acq-<label>][_run-<index>]_echo-<n>_part-<mag|phase|real|imag>_MEGRE.nii[.gz]

A file without ``part-`` is a magnitude image. Each file's metadata follow the BIDS
inheritance principle: every ``*_MEGRE.json`` in the folders from the dataset root down to the
file's folder whose entities are a subset of the file's entities applies, the less specific
first (higher folders first; within a folder, fewer entities first), each overriding the keys
of the ones before. So a root ``MEGRE.json`` or a ``sub-01/sub-01_MEGRE.json`` supplies keys
(e.g. ``MagneticFieldStrength``) that the per-echo sidecars lack.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qsmliver.data import MultiEchoGRE
from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.io.nifti import _assemble, _component, _Source, read_json_object

__all__ = [
    "bids_megre_name",
    "list_bids_megre",
    "parse_bids_name",
    "read_bids",
    "validate_label",
]

#: The entities that select one acquisition, with the argument that chooses each.
_SELECTORS = {"sub": "subject", "ses": "session", "acq": "acquisition", "run": "run"}
_PARTS = {"mag": "magnitude", "phase": "phase", "real": "real", "imag": "imaginary"}
_SKIPPED_TOP = {"derivatives", "sourcedata", "code", "stimuli"}
_LABEL_RE = re.compile(r"^[A-Za-z0-9]+$")
_SUFFIX = "MEGRE"


# -- names ----------------------------------------------------------------------------------------
def parse_bids_name(name: str) -> tuple[dict[str, str], str, str] | None:
    """Split a BIDS file name into (entities, suffix, extension); None if it is not one.

    Examples
    --------
    >>> parse_bids_name("sub-1_ses-1_run-1_echo-2_part-mag_MEGRE.nii.gz")
    ({'sub': '1', 'ses': '1', 'run': '1', 'echo': '2', 'part': 'mag'}, 'MEGRE', '.nii.gz')
    >>> parse_bids_name("MEGRE.json")
    ({}, 'MEGRE', '.json')
    """
    match = re.match(r"^([^.]+)(\..+)$", name)
    if match is None:
        return None
    stem, extension = match.groups()
    *pairs, suffix = stem.split("_")
    entities: dict[str, str] = {}
    for pair in pairs:
        key, dash, value = pair.partition("-")
        if not dash or not key or not value or key in entities:
            return None
        entities[key] = value
    return entities, suffix, extension


def validate_label(value: Any, entity: str) -> str:
    """A BIDS label (alphanumeric) from ``value``; an ``<entity>-`` prefix is removed.

    Parameters
    ----------
    value : str or int
        The label, e.g. ``"01"``, ``"sub-01"`` or ``1`` (for ``run``).
    entity : str
        The entity key ("sub", "ses", "acq", "run").

    Raises
    ------
    QSMConfigError
        If the label is empty or holds anything but letters and digits.

    Examples
    --------
    >>> validate_label("sub-07", "sub"), validate_label(2, "run")
    ('07', '2')
    """
    if isinstance(value, bool) or value is None:
        raise QSMConfigError(f"BIDS {entity}- label must be letters and digits, got {value!r}")
    label = str(value)
    if label.startswith(f"{entity}-"):
        label = label[len(entity) + 1:]
    if not _LABEL_RE.match(label):
        raise QSMConfigError(
            f"BIDS {entity}- label must be letters and digits only, got {value!r}")
    return label


def bids_megre_name(
    subject: str,
    *,
    echo: int,
    part: str | None,
    session: str | None = None,
    acquisition: str | None = None,
    run: str | int | None = None,
    extension: str = ".nii.gz",
) -> Path:
    """Relative path of a BIDS MEGRE file.

    Returns
    -------
    Path
        ``sub-<s>[/ses-<t>]/anat/sub-<s>[_ses-<t>][_acq-<a>][_run-<r>]_echo-<n>[_part-<p>]_MEGRE<ext>``.

    Raises
    ------
    QSMConfigError
        For a label that is not alphanumeric or an unknown part.

    Examples
    --------
    >>> bids_megre_name("01", session="2", echo=3, part="phase").as_posix()
    'sub-01/ses-2/anat/sub-01_ses-2_echo-3_part-phase_MEGRE.nii.gz'
    """
    entities = [("sub", validate_label(subject, "sub"))]
    folder = Path(f"sub-{entities[0][1]}")
    if session is not None:
        entities.append(("ses", validate_label(session, "ses")))
        folder = folder / f"ses-{entities[-1][1]}"
    if acquisition is not None:
        entities.append(("acq", validate_label(acquisition, "acq")))
    if run is not None:
        entities.append(("run", validate_label(run, "run")))
    entities.append(("echo", validate_label(int(echo), "echo")))
    if part is not None:
        if part not in _PARTS:
            raise QSMConfigError(f"BIDS part must be one of {', '.join(_PARTS)}, got {part!r}")
        entities.append(("part", part))
    stem = "_".join(f"{k}-{v}" for k, v in entities)
    return folder / "anat" / f"{stem}_{_SUFFIX}{extension}"


# -- discovery ------------------------------------------------------------------------------------
def _dataset_root(folder: Path) -> Path:
    """The BIDS root above ``folder``: the parent of its ``sub-*`` ancestor, else itself."""
    parts = folder.parts
    for index, part in enumerate(parts):
        if part.startswith("sub-"):
            return Path(*parts[:index]) if index else Path(".")
    return folder


def _megre_files(folder: Path) -> list[tuple[Path, dict[str, str]]]:
    """``*_MEGRE.nii[.gz]`` files below ``folder`` (not in derivatives/sourcedata/...)."""
    found = []
    for path in sorted(folder.rglob(f"*_{_SUFFIX}.nii*")):
        relative = path.relative_to(folder).parts
        if any(p.startswith(".") for p in relative) or (relative[0] in _SKIPPED_TOP):
            continue
        parsed = parse_bids_name(path.name)
        if parsed is None or parsed[1] != _SUFFIX or parsed[2] not in (".nii", ".nii.gz"):
            continue
        if "sub" not in parsed[0]:
            continue
        found.append((path, parsed[0]))
    return found


def _acquisition_key(entities: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The entities that identify an acquisition (all but echo and part), in a fixed order."""
    ordered = [k for k in _SELECTORS if k in entities]
    ordered += sorted(k for k in entities if k not in _SELECTORS and k not in ("echo", "part"))
    return tuple((k, entities[k]) for k in ordered)


def _group(files: list[tuple[Path, dict[str, str]]]
           ) -> dict[tuple[tuple[str, str], ...], list[tuple[Path, dict[str, str]]]]:
    groups: dict[tuple[tuple[str, str], ...], list[tuple[Path, dict[str, str]]]] = {}
    for path, entities in files:
        groups.setdefault(_acquisition_key(entities), []).append((path, entities))
    return groups


def _key_name(key: tuple[tuple[str, str], ...]) -> str:
    return "_".join(f"{k}-{v}" for k, v in key)


def list_bids_megre(root: str | os.PathLike) -> list[dict[str, Any]]:
    """The MEGRE acquisitions below a BIDS folder (root, subject or session folder).

    Parameters
    ----------
    root : path
        A BIDS root, ``sub-XX`` or ``sub-XX/ses-YY`` folder.

    Returns
    -------
    list of dict
        One per acquisition, sorted: ``subject``, ``session``, ``acquisition``, ``run`` (labels
        or None), ``entities`` (all identifying entities), ``echoes`` (number of echoes),
        ``parts`` (sorted part labels) and ``files`` (paths as strings).

    Raises
    ------
    QSMInputError
        If ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise QSMInputError("not a folder", root)
    listing = []
    for key, members in sorted(_group(_megre_files(root)).items()):
        entities = dict(key)
        echoes = {m[1].get("echo", "1") for m in members}
        listing.append({
            **{arg: entities.get(ent) for ent, arg in _SELECTORS.items()},
            "entities": entities,
            "echoes": len(echoes),
            "parts": sorted({m[1].get("part", "mag") for m in members}),
            "files": [str(m[0]) for m in members],
        })
    return listing


# -- sidecar inheritance --------------------------------------------------------------------------
class _SidecarIndex:
    """The ``*_MEGRE.json`` files of each folder, parsed once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._by_folder: dict[Path, list[tuple[Path, dict[str, str]]]] = {}

    def _folder(self, folder: Path) -> list[tuple[Path, dict[str, str]]]:
        if folder not in self._by_folder:
            entries = []
            for path in sorted(folder.glob("*.json")):
                parsed = parse_bids_name(path.name)
                if parsed and parsed[1] == _SUFFIX and parsed[2] == ".json":
                    entries.append((path, parsed[0]))
            self._by_folder[folder] = entries
        return self._by_folder[folder]

    def applicable(self, image: Path, entities: dict[str, str]) -> list[Path]:
        """The sidecars that apply to ``image``, least specific first."""
        image_dir = image.absolute().parent
        folders = [image_dir, *image_dir.parents]
        folders = folders[: folders.index(self.root) + 1] if self.root in folders \
            else [image_dir]
        chosen = []
        for folder in reversed(folders):
            matching = [(path, ents) for path, ents in self._folder(folder)
                        if all(entities.get(k) == v for k, v in ents.items())]
            chosen += [path for path, ents in sorted(matching, key=lambda m: len(m[1]))]
        return chosen

    def merged(self, image: Path, entities: dict[str, str]) -> _Source:
        paths = self.applicable(image, entities)
        sidecar: dict[str, Any] = {}
        for path in paths:
            sidecar.update(read_json_object(path))
        return _Source(image, sidecar, tuple(paths))


# -- reading --------------------------------------------------------------------------------------
def read_bids(
    folder: str | os.PathLike,
    *,
    subject: str | None = None,
    session: str | None = None,
    acquisition: str | None = None,
    run: str | int | None = None,
    phase_scale: str = "auto",
    te_s: Sequence[float] | None = None,
    b0_t: float | None = None,
    b0_dir: Sequence[float] | None = None,
    vendor: str | None = None,
) -> MultiEchoGRE:
    """Read one BIDS MEGRE acquisition.

    Parameters
    ----------
    folder : path
        A BIDS root, a ``sub-XX`` folder, a ``sub-XX/ses-YY`` folder or its ``anat/``.
    subject, session, acquisition, run : str, optional
        Labels (with or without the ``sub-``/``ses-``/... prefix) choosing the acquisition
        when the folder holds several.
    phase_scale : {"auto", "radians", "siemens", "milliradians", "minmax"}
        How phase values are scaled (BIDS phase is normally radians).
    te_s : sequence of float, optional
        Echo times in seconds; default: the sidecars' ``EchoTime`` (inherited).
    b0_t : float, optional
        Field strength in tesla; default: ``MagneticFieldStrength`` (inherited).
    b0_dir : (3,) sequence of float, optional
        B0 direction in the voxel frame; default from the affine.
    vendor : str, optional
        Manufacturer hint; default: ``Manufacturer`` (inherited).

    Returns
    -------
    MultiEchoGRE
        Echoes in ``echo-`` order (checked against the echo times); ``metadata`` holds the
        BIDS entities, the sidecars used and the phase scaling.

    Raises
    ------
    QSMInputError
        No MEGRE files; several acquisitions matching (listed, with the argument that
        chooses); missing echoes or parts; any error of :func:`qsmliver.io.nifti.read_nifti`.

    Examples
    --------
    >>> gre = read_bids("bids", subject="1", session="1", run="1")  # doctest: +SKIP
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise QSMInputError("no such folder", folder)
    root = _dataset_root(folder.absolute())
    files = _megre_files(folder)
    if not files:
        raise QSMInputError(f"no *_{_SUFFIX}.nii[.gz] files found (BIDS anat/ folders)",
                            folder)
    wanted = {"sub": subject, "ses": session, "acq": acquisition, "run": run}
    for entity, value in wanted.items():
        if value is not None:
            label = validate_label(value, entity)
            files = [f for f in files if f[1].get(entity) == label]
    groups = _group(files)
    if not groups:
        chosen = ", ".join(f"{_SELECTORS[k]}={v!r}" for k, v in wanted.items() if v is not None)
        raise QSMInputError(f"no MEGRE files match {chosen}", folder)
    if len(groups) > 1:
        raise QSMInputError(_several_message(list(groups)), folder)
    key, members = next(iter(groups.items()))
    index = _SidecarIndex(root)
    components = _components(members, index)
    return _assemble(components, te_s=te_s, b0_t=b0_t, b0_dir=b0_dir,
                     phase_scale=phase_scale, vendor=vendor, reader="bids",
                     metadata={"BIDSEntities": _key_name(key), "BIDSRoot": str(root)})


def _several_message(keys: list[tuple[tuple[str, str], ...]]) -> str:
    names = sorted(_key_name(k) for k in keys)
    differing = [e for e in [*_SELECTORS, *sorted({k for key in keys for k, _ in key})]
                 if len({dict(key).get(e) for key in keys}) > 1]
    entity = differing[0] if differing else None
    how = (f"choose one with {_SELECTORS[entity]}=" if entity in _SELECTORS
           else f"they differ in the {entity}- entity; give the folder or files of one")
    shown = ", ".join(names[:8]) + (f" (and {len(names) - 8} more)" if len(names) > 8 else "")
    return f"{len(names)} MEGRE acquisitions found: {shown}; {how}"


def _components(members: list[tuple[Path, dict[str, str]]], index: _SidecarIndex) -> list:
    """The components of one acquisition, each with its per-echo files in echo order."""
    by_part: dict[str, dict[int, tuple[Path, dict[str, str]]]] = {}
    for path, entities in members:
        part = entities.get("part", "mag")
        if part not in _PARTS:
            raise QSMInputError(f"unknown part-{part}: expected one of {', '.join(_PARTS)}",
                                path, "part")
        echo_label = entities.get("echo", "1")
        if not echo_label.isdigit():
            raise QSMInputError(f"echo-{echo_label} is not an echo number", path, "echo")
        echoes = by_part.setdefault(part, {})
        echo = int(echo_label)
        if echo in echoes:
            raise QSMInputError(f"two files for echo {echo}, part {part}",
                                [echoes[echo][0], path], "echo")
        echoes[echo] = (path, entities)
    have = set(by_part)
    if {"real", "imag"} <= have:
        parts = ("real", "imag")
    elif {"mag", "phase"} <= have:
        parts = ("mag", "phase")
    elif "mag" in have:
        parts = ("mag",)
    else:
        files = [p for echoes in by_part.values() for p, _ in echoes.values()]
        raise QSMInputError(f"part-{'/'.join(sorted(have))} without magnitude", files, "part")
    reference = sorted(by_part[parts[0]])
    for part in parts[1:]:
        if sorted(by_part[part]) != reference:
            raise QSMInputError(
                f"part-{parts[0]} has echoes {reference} but part-{part} has "
                f"{sorted(by_part[part])}",
                [p for q in (parts[0], part) for p, _ in by_part[q].values()], "echo")
    components = []
    for part in parts:
        ordered = [by_part[part][e] for e in sorted(by_part[part])]
        sources = {path: index.merged(path, entities) for path, entities in ordered}
        component = _component(_PARTS[part], list(sources), sources)
        if component.order_rule == "as given":
            component.order_rule = "echo- entity"
        components.append(component)
    return components
