"""Label tables: reading them (BIDS dseg TSV, JSON, FreeSurfer LUT text), the built-in
FreeSurfer aseg / SynthSeg / FSL FIRST label numbers, and recognising structure names across
conventions.

FreeSurfer's ``aseg`` volumes, SynthSeg and FSL FIRST all number subcortical structures with the
FreeSurfer colour look-up table (FreeSurferColorLUT.txt: 10/49 thalamus, 11/50 caudate,
12/51 putamen, 13/52 pallidum, 17/53 hippocampus, 18/54 amygdala, 26/58 accumbens, left/right),
but spell their names differently ("Left-Thalamus" or "Left-Thalamus-Proper" in FreeSurfer and
SynthSeg, "L_Thal" in FIRST; the qsmliver brain phantom uses "thalamus_left").
:func:`recognise_name` maps all of them to one ``(structure, hemisphere)`` pair so that group
statistics can pool hemispheres and compare cohorts segmented with different tools.

References
----------
Fischl B et al. Whole brain segmentation: automated labeling of neuroanatomical structures in
the human brain. Neuron 2002;33:341-355 (aseg). Billot B et al. SynthSeg: segmentation of brain
MRI scans of any contrast and resolution without retraining. Med Image Anal 2023;86:102789.
Patenaude B et al. A Bayesian model of shape and appearance for subcortical brain segmentation.
NeuroImage 2011;56:907-922 (FSL FIRST).

>>> recognise_name("Left-Thalamus-Proper"), recognise_name("R_Puta")
(('thalamus', 'left'), ('putamen', 'right'))
>>> recognise_name("globus_pallidus_left")
('globus_pallidus', 'left')
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from qsmliver.errors import QSMConfigError, QSMInputError

__all__ = [
    "CONVENTIONS",
    "DGM_STRUCTURES",
    "FIRST_LABELS",
    "FREESURFER_ASEG_LABELS",
    "SYNTHSEG_LABELS",
    "builtin_label_table",
    "check_label_table",
    "read_label_table",
    "recognise_name",
    "structure_name",
    "write_label_table",
]

#: FreeSurfer aseg labels (FreeSurferColorLUT.txt numbers and names, FreeSurfer 7 spelling).
FREESURFER_ASEG_LABELS: dict[int, str] = {
    2: "Left-Cerebral-White-Matter", 3: "Left-Cerebral-Cortex", 4: "Left-Lateral-Ventricle",
    5: "Left-Inf-Lat-Vent", 7: "Left-Cerebellum-White-Matter", 8: "Left-Cerebellum-Cortex",
    10: "Left-Thalamus", 11: "Left-Caudate", 12: "Left-Putamen", 13: "Left-Pallidum",
    14: "3rd-Ventricle", 15: "4th-Ventricle", 16: "Brain-Stem", 17: "Left-Hippocampus",
    18: "Left-Amygdala", 24: "CSF", 26: "Left-Accumbens-area", 28: "Left-VentralDC",
    30: "Left-vessel", 31: "Left-choroid-plexus",
    41: "Right-Cerebral-White-Matter", 42: "Right-Cerebral-Cortex",
    43: "Right-Lateral-Ventricle", 44: "Right-Inf-Lat-Vent", 46: "Right-Cerebellum-White-Matter",
    47: "Right-Cerebellum-Cortex", 49: "Right-Thalamus", 50: "Right-Caudate",
    51: "Right-Putamen", 52: "Right-Pallidum", 53: "Right-Hippocampus", 54: "Right-Amygdala",
    58: "Right-Accumbens-area", 60: "Right-VentralDC", 62: "Right-vessel",
    63: "Right-choroid-plexus", 72: "5th-Ventricle", 77: "WM-hypointensities",
    85: "Optic-Chiasm", 251: "CC_Posterior", 252: "CC_Mid_Posterior", 253: "CC_Central",
    254: "CC_Mid_Anterior", 255: "CC_Anterior",
}

#: SynthSeg 2.0 output labels (a subset of the aseg numbers, same names).
SYNTHSEG_LABELS: dict[int, str] = {
    k: FREESURFER_ASEG_LABELS[k] for k in (
        2, 3, 4, 5, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 24, 26, 28,
        41, 42, 43, 44, 46, 47, 49, 50, 51, 52, 53, 54, 58, 60)
}

#: FSL FIRST structures (aseg numbers, FIRST abbreviations).
FIRST_LABELS: dict[int, str] = {
    10: "L_Thal", 11: "L_Caud", 12: "L_Puta", 13: "L_Pall", 16: "BrStem", 17: "L_Hipp",
    18: "L_Amyg", 26: "L_Accu", 49: "R_Thal", 50: "R_Caud", 51: "R_Puta", 52: "R_Pall",
    53: "R_Hipp", 54: "R_Amyg", 58: "R_Accu",
}

#: Conventions with a built-in table (:func:`builtin_label_table`).
CONVENTIONS = ("freesurfer", "synthseg", "first", "qsmliver-brain", "qsmliver-abdomen")

#: Deep grey matter structures (canonical names) of iron / QSM studies.
DGM_STRUCTURES = ("caudate", "putamen", "globus_pallidus", "thalamus", "red_nucleus",
                  "substantia_nigra", "dentate_nucleus")

# Canonical structure -> spellings after normalisation (lower case, words joined by "_").
_SYNONYMS: dict[str, tuple[str, ...]] = {
    "caudate": ("caudate", "caud", "caudate_nucleus"),
    "putamen": ("putamen", "puta", "put"),
    "globus_pallidus": ("globus_pallidus", "pallidum", "pall", "gp", "pallidus"),
    "thalamus": ("thalamus", "thalamus_proper", "thal"),
    "red_nucleus": ("red_nucleus", "rn", "rednucleus"),
    "substantia_nigra": ("substantia_nigra", "sn", "substantianigra"),
    "dentate_nucleus": ("dentate_nucleus", "dentate", "dn"),
    "hippocampus": ("hippocampus", "hipp"),
    "amygdala": ("amygdala", "amyg"),
    "accumbens": ("accumbens_area", "accumbens", "accu", "nucleus_accumbens"),
    "ventral_dc": ("ventraldc", "ventral_dc"),
    "brainstem": ("brain_stem", "brainstem", "brstem"),
    "cerebral_white_matter": ("cerebral_white_matter", "white_matter", "wm"),
    "cerebral_cortex": ("cerebral_cortex", "cortex", "grey_matter", "gray_matter", "gm"),
    "cerebellum_white_matter": ("cerebellum_white_matter",),
    "cerebellum_cortex": ("cerebellum_cortex",),
    "lateral_ventricle": ("lateral_ventricle", "ventricle"),
    "inferior_lateral_ventricle": ("inf_lat_vent",),
    "third_ventricle": ("3rd_ventricle", "third_ventricle"),
    "fourth_ventricle": ("4th_ventricle", "fourth_ventricle"),
    "fifth_ventricle": ("5th_ventricle",),
    "csf": ("csf",),
    "vessel": ("vessel", "vein"),
    "choroid_plexus": ("choroid_plexus",),
    "wm_hypointensities": ("wm_hypointensities",),
    "optic_chiasm": ("optic_chiasm",),
    "scalp": ("scalp",),
    "skull": ("skull",),
    "sinus": ("sinus", "air_sinus"),
    "calcification": ("calcification",),
    "corpus_callosum": ("cc_posterior", "cc_mid_posterior", "cc_central", "cc_mid_anterior",
                        "cc_anterior"),
}
_SPELLING = {spelling: canonical for canonical, names in _SYNONYMS.items() for spelling in names}
_SIDES = {"left": "left", "l": "left", "lh": "left", "right": "right", "r": "right",
          "rh": "right"}


def _normalise(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def recognise_name(name: str) -> tuple[str, str | None] | None:
    """``(structure, hemisphere)`` of a label name in any supported convention, else None.

    Parameters
    ----------
    name : str
        E.g. ``"Left-Putamen"`` (FreeSurfer/SynthSeg), ``"L_Puta"`` (FIRST),
        ``"putamen_left"`` (qsmliver phantom), ``"lh putamen"``.

    Returns
    -------
    tuple of (str, str or None) or None
        Canonical structure (e.g. ``"globus_pallidus"``) and ``"left"``, ``"right"`` or None
        (midline or unlateralised); None when the name is not recognised.
    """
    words = _normalise(name).split("_")
    side = None
    if len(words) > 1 and words[0] in _SIDES:
        side, words = _SIDES[words[0]], words[1:]
    elif len(words) > 1 and words[-1] in _SIDES:
        side, words = _SIDES[words[-1]], words[:-1]
    structure = _SPELLING.get("_".join(words))
    return None if structure is None else (structure, side)


def structure_name(name: str, *, pool_hemispheres: bool = False) -> str | None:
    """Canonical ``structure[_side]`` name (``"Left-Pallidum" -> "globus_pallidus_left"``).

    With ``pool_hemispheres`` the side is dropped. None when the name is not recognised.
    """
    found = recognise_name(name)
    if found is None:
        return None
    structure, side = found
    return structure if pool_hemispheres or side is None else f"{structure}_{side}"


def builtin_label_table(convention: str) -> dict[int, str]:
    """The label table of a convention in :data:`CONVENTIONS`.

    ``"freesurfer"`` (aseg), ``"synthseg"``, ``"first"`` (FSL FIRST), ``"qsmliver-brain"`` and
    ``"qsmliver-abdomen"`` (the phantoms' ``label_names``, background 0 left out).
    """
    key = convention.lower()
    if key in ("freesurfer", "aseg"):
        return dict(FREESURFER_ASEG_LABELS)
    if key == "synthseg":
        return dict(SYNTHSEG_LABELS)
    if key in ("first", "fsl-first", "fsl_first"):
        return dict(FIRST_LABELS)
    if key == "qsmliver-brain":
        from qsmliver.simulate.brain import BRAIN_LABELS

        return {k: v for k, v in BRAIN_LABELS.items() if k > 0}
    if key == "qsmliver-abdomen":
        from qsmliver.simulate.abdomen import ABDOMEN_LABELS, VESSEL_LABEL

        return {**{k: v for k, v in ABDOMEN_LABELS.items() if k > 0}, VESSEL_LABEL: "vessel"}
    raise QSMConfigError(f"unknown label convention {convention!r}; use one of {CONVENTIONS}")


def _parse_index(raw: object, path: Path, row: int) -> int:
    try:
        value = float(str(raw).strip())
    except ValueError:
        value = float("nan")
    if not (np.isfinite(value) and value == int(value) and value >= 0):
        raise QSMInputError(f"row {row}: label index {raw!r} is not a whole number >= 0",
                            path=path, field="index")
    return int(value)


def _rows_from_tsv(path: Path, text: str) -> list[tuple[object, object]]:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return []
    delimiter = "\t" if "\t" in lines[0] else ("," if "," in lines[0] else None)
    if delimiter is None:  # FreeSurfer LUT text: "index name r g b a", whitespace separated
        rows = [ln.split() for ln in lines]
        if not rows[0][0].lstrip("-").isdigit():
            header = [h.lower() for h in rows[0]]
            rows = [dict(zip(header, r, strict=False)) for r in rows[1:]]
            return _pick_columns(path, header, rows)
        return [(r[0], r[1] if len(r) > 1 else "") for r in rows]
    reader = list(csv.reader(lines, delimiter=delimiter))
    header = [h.strip().lower() for h in reader[0]]
    if header and header[0].lstrip("-").isdigit():  # no header: index, name
        return [(r[0], r[1] if len(r) > 1 else "") for r in reader]
    rows = [dict(zip(header, r, strict=False)) for r in reader[1:]]
    return _pick_columns(path, header, rows)


def _pick_columns(path: Path, header: list[str], rows: list[dict]) -> list[tuple[object, object]]:
    index_col = next((c for c in ("index", "label", "value", "id", "no", "#no") if c in header),
                     None)
    name_col = next((c for c in ("name", "label_name", "structure", "abbreviation")
                     if c in header and c != index_col), None)
    if index_col is None or name_col is None:
        raise QSMInputError(f"label table needs an 'index' and a 'name' column, found "
                            f"{header}", path=path)
    return [(r.get(index_col, ""), r.get(name_col, "")) for r in rows]


def _rows_from_json(path: Path, data: object) -> list[tuple[object, object]]:
    if isinstance(data, Mapping) and "labels" in data:
        data = data["labels"]
    if isinstance(data, Mapping):
        return [(k, v if isinstance(v, str) else (v or {}).get("name", ""))
                for k, v in data.items()]
    if isinstance(data, list):
        rows = []
        for item in data:
            if not isinstance(item, Mapping):
                raise QSMInputError("label table entries must be objects with 'index' and "
                                    "'name'", path=path)
            rows.append((item.get("index", item.get("label", "")), item.get("name", "")))
        return rows
    raise QSMInputError("label table JSON must be an object {index: name} or a list of "
                        "{index, name}", path=path)


def read_label_table(path: str | os.PathLike, *, convention: str | None = None
                     ) -> dict[int, str]:
    """Read a label table: value -> name.

    Parameters
    ----------
    path : str or os.PathLike
        A BIDS ``_dseg.tsv`` (columns ``index`` and ``name``; other columns ignored), a CSV
        with the same columns, a FreeSurfer LUT text file (``index name R G B A``), or JSON
        (``{"1": "liver"}``, ``{"labels": ...}`` or ``[{"index": 1, "name": "liver"}]``).
    convention : str, optional
        ``"recognised"`` (or any of :data:`CONVENTIONS`): every name must be a structure name
        that :func:`recognise_name` knows; for a built-in convention the names must also be
        recognised. Default: any names.

    Returns
    -------
    dict of int to str
        Label value -> name; index 0 (background) is dropped.

    Raises
    ------
    QSMInputError
        Missing or unreadable file, no entries, an index that is not a whole number >= 0,
        a repeated index, an empty name, or (with ``convention``) unknown names; the message
        names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise QSMInputError("label table not found", path=path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise QSMInputError(f"cannot read the label table ({exc})", path=path) from exc
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise QSMInputError(f"not valid JSON ({exc})", path=path) from exc
        rows = _rows_from_json(path, data)
    else:
        rows = _rows_from_tsv(path, text)
    if not rows:
        raise QSMInputError("label table has no entries", path=path)
    table: dict[int, str] = {}
    for row, (raw_index, raw_name) in enumerate(rows, start=1):
        index = _parse_index(raw_index, path, row)
        name = str(raw_name if raw_name is not None else "").strip()
        if not name:
            raise QSMInputError(f"row {row}: label {index} has an empty name", path=path,
                                field="name")
        if index in table:
            raise QSMInputError(f"label index {index} appears twice ({table[index]!r} and "
                                f"{name!r})", path=path, field="index")
        table[index] = name
    table.pop(0, None)
    if convention is not None:
        check_label_table(table, convention=convention, path=path)
    return table


def check_label_table(table: Mapping[int, str], *, convention: str = "recognised",
                      path: str | os.PathLike | None = None,
                      present: Iterable[int] | None = None) -> None:
    """Check a label table's names and (optionally) that it names every label present.

    Parameters
    ----------
    table : mapping of int to str
    convention : str
        ``"recognised"``: every name must be known to :func:`recognise_name`; ``"any"``: no
        name check; a built-in convention (:data:`CONVENTIONS`): names recognised too.
    path : path, optional
        File to name in the error.
    present : iterable of int, optional
        Label values found in the label map; each (except 0) must be in ``table``.

    Raises
    ------
    QSMInputError
        Unknown names, or labels present in the map without a name.
    """
    if convention not in ("any", "recognised", *CONVENTIONS):
        raise QSMConfigError(f"unknown label convention {convention!r}; use 'any', "
                             f"'recognised' or one of {CONVENTIONS}")
    if convention != "any" and not convention.startswith("qsmliver-abdomen"):
        unknown = sorted({name for name in table.values() if recognise_name(name) is None})
        if unknown:
            shown = ", ".join(repr(n) for n in unknown[:5])
            more = f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else ""
            raise QSMInputError(f"unknown label names {shown}{more}: not a FreeSurfer aseg, "
                                "SynthSeg, FSL FIRST or qsmliver structure name", path=path,
                                field="name")
    if present is not None:
        missing = sorted({int(v) for v in present if int(v) > 0} - set(table))
        if missing:
            shown = ", ".join(str(v) for v in missing[:10])
            raise QSMInputError(f"label values {shown} of the label map have no name in the "
                                "label table", path=path, field="index")


def write_label_table(table: Mapping[int, str], path: str | os.PathLike,
                      overwrite: bool = False) -> Path:
    """Write a BIDS-style ``index<TAB>name`` TSV atomically."""
    from qsmliver.io.atomic import atomic_path

    with atomic_path(path, overwrite=overwrite) as tmp:
        lines = ["index\tname"] + [f"{int(k)}\t{v}" for k, v in sorted(table.items())]
        Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Path(path)
