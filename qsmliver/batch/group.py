"""The group step: gather every unit's ROI statistics into one cohort table and index page.

Reads what the participant step left in the derivatives folder (completion records, ROI
tables, failure records) and writes::

    OUT/group/cohort_roi_stats.tsv (+ .json)   one row per subject/session/acquisition and ROI,
                                               a column per map and statistic (Chimap_mean ...)
    OUT/group/cohort_status.tsv                one row per unit: status, time, QC warnings
    OUT/index.html                             the cohort QC page linking every report

It needs no cluster and may be re-run at any time (each file is replaced atomically).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from qsmliver.batch.records import LOG_DIR, read_record
from qsmliver.errors import QSMInputError
from qsmliver.io.atomic import atomic_path, write_json_atomic

__all__ = ["ENTITY_COLUMNS", "cohort_table", "collect_units", "run_group"]

#: Columns identifying an acquisition in the ROI tables.
ENTITY_COLUMNS = ("subject", "session", "acquisition", "run")
_NA = "n/a"


def collect_units(output: str | os.PathLike) -> list[dict[str, Any]]:
    """Every unit found in a derivatives folder, finished or failed.

    Returns
    -------
    list of dict
        Sorted by unit: ``unit``, ``status`` ("ok" or "failed"), ``folder`` (the unit's
        folder), ``record`` (its completion or failure record).
    """
    output = Path(output)
    units: dict[str, dict[str, Any]] = {}
    for path in sorted([*output.glob("sub-*/*_batch.json"),
                        *output.glob("sub-*/ses-*/*_batch.json")]):
        record = read_record(path)
        if record is None or record.get("Status") != "ok":
            continue
        units[record["Unit"]] = {"unit": record["Unit"], "status": "ok",
                                 "folder": path.parent, "record": record}
    for path in sorted((output / LOG_DIR).glob("*_batch-error.json")):
        record = read_record(path)
        if record is None or record.get("Unit") in units:
            continue
        units[record["Unit"]] = {"unit": record["Unit"], "status": "failed",
                                 "folder": None, "record": record}
    return [units[name] for name in sorted(units)]


def cohort_table(output: str | os.PathLike, units: list[dict[str, Any]] | None = None):
    """The cohort ROI table: one row per subject/session/acquisition and ROI.

    Parameters
    ----------
    output : path
        The derivatives folder.
    units : list of dict, optional
        :func:`collect_units` output (read when None).

    Returns
    -------
    pandas.DataFrame
        Columns ``subject, session, acquisition, run, label, label_name`` and, per map and
        statistic, ``<map>_<statistic>`` (e.g. ``Chimap_mean`` in ppm, ``R2starmap_median``
        in 1/s); entities absent from the data are "n/a".
    """
    import pandas as pd

    units = collect_units(output) if units is None else units
    frames = []
    for unit in units:
        if unit["status"] != "ok":
            continue
        for acquisition in unit["record"].get("Acquisitions", []):
            path = unit["folder"] / acquisition["ROITable"]
            frame = pd.read_csv(path, sep="\t", na_values=[_NA], keep_default_na=False,
                                dtype={c: str for c in (*ENTITY_COLUMNS, "label_name", "map")})
            frames.append(frame)
    index = [*ENTITY_COLUMNS, "label", "label_name"]
    if not frames:
        return pd.DataFrame(columns=index)
    long = pd.concat(frames, ignore_index=True)
    for column in ENTITY_COLUMNS:
        long[column] = long[column].fillna(_NA)
    map_order = list(dict.fromkeys(long["map"]))
    stats = [c for c in long.columns if c not in (*index, "map")]
    wide = long.set_index([*index, "map"])[stats].unstack("map")
    wide.columns = [f"{m}_{s}" for s, m in wide.columns]
    ordered = [f"{m}_{s}" for m in map_order for s in stats]
    return wide[ordered].reset_index().sort_values(index, kind="stable").reset_index(drop=True)


def _write_tsv(frame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, overwrite=True) as temporary:
        frame.to_csv(temporary, sep="\t", index=False, na_rep=_NA, float_format="%.6g")
    return path


def run_group(output: str | os.PathLike) -> dict[str, Any]:
    """Write the cohort tables and the index page of a derivatives folder.

    Returns
    -------
    dict
        ``table`` (cohort ROI TSV), ``status`` (TSV), ``index`` (HTML) paths, ``rows`` (rows
        of the cohort table), ``ok`` and ``failed`` (unit counts).

    Raises
    ------
    QSMInputError
        If the folder holds no processed or failed unit.
    """
    import pandas as pd

    from qsmliver.report.html import write_cohort_index

    output = Path(output)
    units = collect_units(output)
    if not units:
        raise QSMInputError("no processed subjects found (run the participant level first)",
                            output)
    table = cohort_table(output, units)
    group = output / "group"
    table_path = _write_tsv(table, group / "cohort_roi_stats.tsv")
    maps = sorted({c.split("_")[0] for c in table.columns if c.endswith("_mean")})
    write_json_atomic({
        "Description": "ROI statistics of every subject/session: one row per acquisition and "
                       "label; columns <map>_<statistic> (see each subject's "
                       "*_desc-roi_stats.json)",
        "Maps": maps,
        "Units": {"Chimap": "ppm", "R2starmap": "1/s", "desc-PDFF_map": "percent",
                  "desc-LIC_map": "mg Fe/g dry weight", "volume_mm3": "mm^3"},
    }, group / "cohort_roi_stats.json", overwrite=True)
    rows, entries = [], []
    for unit in units:
        record = unit["record"]
        acquisitions = record.get("Acquisitions", []) if unit["status"] == "ok" else []
        warnings = [w for a in acquisitions for w in a.get("QC", {}).get("warnings", [])]
        error = None if unit["status"] == "ok" else \
            f"{record.get('ErrorType')}: {record.get('Error')}"
        rows.append({"unit": unit["unit"], "subject": record.get("Subject"),
                     "session": record.get("Session") or _NA, "status": unit["status"],
                     "seconds": record.get("Seconds"), "qc_warnings": len(warnings),
                     "warning_checks": ",".join(w["check"] for w in warnings) or _NA,
                     "error": error or _NA})
        entries.append({"unit": unit["unit"], "status": unit["status"],
                        "reports": [unit["folder"] / a["Report"] for a in acquisitions],
                        "warnings": warnings, "seconds": record.get("Seconds"),
                        "error": error})
    status_path = _write_tsv(pd.DataFrame(rows), group / "cohort_status.tsv")
    write_json_atomic({
        "Description": "outcome of every subject/session of the batch",
        "status": {"Description": "ok (results in the unit's folder) or failed (see "
                                  "logs/<unit>_batch-error.json)"},
        "seconds": {"Description": "processing time on the worker", "Units": "s"},
        "qc_warnings": {"Description": "number of QC warnings (see the unit's report)"},
        "warning_checks": {"Description": "names of the QC checks that warned"},
        "error": {"Description": "error of a failed unit"},
    }, group / "cohort_status.json", overwrite=True)
    index = write_cohort_index(output / "index.html", entries,
                               links={"cohort ROI table (TSV)": str(table_path),
                                      "status table (TSV)": str(status_path)})
    ok = sum(u["status"] == "ok" for u in units)
    return {"table": table_path, "status": status_path, "index": index, "rows": len(table),
            "ok": ok, "failed": len(units) - ok}

