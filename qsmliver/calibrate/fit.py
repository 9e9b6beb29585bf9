"""Fit your own LIC calibration from a table of subjects (CSV) and save it for reuse.

The table has one row per subject with the columns

- ``subject`` (required): an identifier;
- ``lic`` (required; aliases ``lic_mg_per_g``, ``chemical_lic``): chemical (biopsy) LIC in
  mg Fe/g dry weight;
- at least one measurement: ``r2star`` (1/s), ``r2`` (1/s), ``chi`` (ppm) (aliases
  ``r2star_per_s``, ``r2_per_s``, ``chi_ppm``, ``susceptibility_ppm``);
- optional ``field_strength_t`` (alias ``b0_t``): one calibration is fitted per field strength;
- optional ``group`` (e.g. therapy), shown in the plots and counted in the summary.

For every measurement and field strength :func:`calibrate_table` fits ``LIC = a + b·x`` by OLS,
Deming and Passing-Bablok (with CIs), reports Pearson/Spearman correlation, leave-one-out
prediction error and the Bland-Altman agreement of the leave-one-out LIC with the chemical
LIC, and compares the measurements (e.g. QSM vs R2*) on the subjects that have both.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from qsmliver.calibrate.literature import LIC_UNIT, MEASURES, Calibration
from qsmliver.calibrate.stats import (
    REGRESSIONS,
    bland_altman,
    correlation,
    fit_line,
    leave_one_out,
)
from qsmliver.errors import QSMConfigError, QSMInputError

__all__ = [
    "CALIBRATION_FILE_VERSION",
    "CalibrationReport",
    "calibrate_table",
    "fit_calibrations",
    "load_calibration",
    "read_calibration_table",
    "write_calibration_outputs",
]

CALIBRATION_FILE_VERSION = 1
_ALIASES = {
    "subject": ("subject", "subject_id", "id"),
    "lic": ("lic", "lic_mg_per_g", "chemical_lic", "biopsy_lic"),
    "r2star": ("r2star", "r2star_per_s", "r2*"),
    "r2": ("r2", "r2_per_s"),
    "chi": ("chi", "chi_ppm", "susceptibility_ppm", "qsm"),
    "field_strength_t": ("field_strength_t", "b0_t", "field_strength"),
    "group": ("group",),
}
_NUMERIC = ("lic", "r2star", "r2", "chi", "field_strength_t")


def read_calibration_table(path: str | os.PathLike):
    """Read and validate a calibration CSV into a pandas DataFrame with canonical columns.

    Raises
    ------
    QSMInputError
        Naming the file and the column/row: unreadable file, missing ``subject``/``lic``
        column, no measurement column, a non-numeric or non-finite value, or fewer than 3
        usable rows.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise QSMInputError("no such file", path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise QSMInputError(f"cannot read the CSV table: {exc}", path) from None
    lower = {str(c).strip().lower(): c for c in raw.columns}
    columns: dict[str, Any] = {}
    for canonical, names in _ALIASES.items():
        for name in names:
            if name in lower:
                columns[canonical] = lower[name]
                break
    for required in ("subject", "lic"):
        if required not in columns:
            raise QSMInputError(
                f"missing column {required!r} (columns found: {', '.join(map(str, raw.columns))})",
                path, required)
    measures = [m for m in MEASURES if m in columns]
    if not measures:
        raise QSMInputError("no measurement column: give at least one of r2star, r2, chi",
                            path, "r2star/r2/chi")
    table = pd.DataFrame({"subject": raw[columns["subject"]].astype(str).str.strip()})
    for canonical in _NUMERIC:
        if canonical not in columns:
            continue
        column = raw[columns[canonical]].astype(str).str.strip()
        values = pd.to_numeric(column.where(column != "", None), errors="coerce")
        bad = values.isna() & (column != "")
        bad |= ~np.isfinite(values.fillna(0.0).to_numpy())
        if canonical == "lic" or canonical == "field_strength_t":
            bad |= column == ""
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise QSMInputError(
                f"row {row + 2} (subject {table['subject'].iloc[row]!r}): value "
                f"{column.iloc[row]!r} is not a finite number", path, str(columns[canonical]))
        table[canonical] = values.astype(float)
    if "group" in columns:
        table["group"] = raw[columns["group"]].astype(str).str.strip()
    if len(table) < 3:
        raise QSMInputError(f"{len(table)} row(s): a calibration needs at least 3 subjects",
                            path, "rows")
    for measure in measures:
        usable = int(table[measure].notna().sum())
        if usable < 3:
            raise QSMInputError(f"only {usable} subject(s) with a value: need at least 3",
                                path, str(columns[measure]))
    table.attrs["measures"] = measures
    table.attrs["source"] = str(path)
    return table


class CalibrationReport(dict):
    """Results of :func:`fit_calibrations`: a dict with ``calibrations`` (list of entries, each
    with a :class:`Calibration` under ``"calibration"`` and its statistics), ``comparisons``
    and ``table`` (the DataFrame)."""


def fit_calibrations(
    table,
    *,
    method: str = "deming",
    alpha: float = 0.05,
    error_ratio: float | None = None,
    name_prefix: str = "fitted",
) -> CalibrationReport:
    """Fit ``LIC = a + b·x`` for every measurement (and field strength) in ``table``.

    Parameters
    ----------
    table : pandas.DataFrame
        As returned by :func:`read_calibration_table`.
    method : {"deming", "ols", "passing_bablok"}
        The regression saved as the calibration; all three are reported.
    alpha : float
        1 − confidence level of the intervals.
    error_ratio : float, optional
        Deming ``Var(error in LIC)/Var(error in x)``; default: the ratio of the variances of
        LIC and x (each method's error taken proportional to its spread).
    name_prefix : str
        Calibration names are ``<prefix>_<measure>[_<field>t]``.
    """
    if method not in REGRESSIONS:
        raise QSMConfigError(f"unknown regression {method!r}; use one of {REGRESSIONS}")
    measures = table.attrs.get("measures") or [m for m in MEASURES if m in table]
    fields = ([None] if "field_strength_t" not in table
              else sorted(float(v) for v in table["field_strength_t"].unique()))
    entries = []
    loo_by_key: dict[tuple, Any] = {}
    for field in fields:
        rows = table if field is None else table[table["field_strength_t"] == field]
        for measure in measures:
            sub = rows[rows[measure].notna()]
            if len(sub) < 3:
                continue
            x = sub[measure].to_numpy(float)
            y = sub["lic"].to_numpy(float)
            ratio = error_ratio
            if ratio is None:
                vx = float(np.var(x))
                ratio = float(np.var(y) / vx) if vx > 0 else 1.0
            options = {"error_ratio": ratio} if method == "deming" else {}
            lines = {}
            for reg in REGRESSIONS:
                opts = {"error_ratio": ratio} if reg == "deming" else {}
                lines[reg] = fit_line(x, y, reg, alpha=alpha, **opts)
            chosen = lines[method]
            loo = leave_one_out(x, y, method, **options) if len(sub) >= 4 else None
            name = f"{name_prefix}_{measure}" + ("" if field is None else f"_{field:g}t")
            lo, hi = float(x.min()), float(x.max())
            calibration = Calibration(
                name=name, measure=measure, form="linear",
                coefficients={"a": chosen.intercept, "b": chosen.slope},
                field_strength_t=field, valid_range=(lo, hi),
                citation=f"fitted by qsmliver calibrate ({method}) from "
                         f"{table.attrs.get('source', 'a table')}, n={len(sub)}",
                formula=f"LIC = {chosen.intercept:.6g} + {chosen.slope:.6g} * {measure}",
                range_note="range of the measurements in the calibration table",
            )
            stats: dict[str, Any] = {
                "n": len(sub),
                "regressions": {k: v.to_dict() for k, v in lines.items()},
                "correlation": correlation(x, y, alpha=alpha).to_dict(),
            }
            if "group" in sub:
                stats["groups"] = {str(k): int(v) for k, v in sub["group"].value_counts().items()}
            if loo is not None:
                stats["leave_one_out"] = {k: v for k, v in loo.items() if k != "predictions"}
                stats["bland_altman_loo_vs_chemical"] = bland_altman(
                    loo["predictions"], y, alpha=alpha).to_dict()
                loo_by_key[(field, measure)] = dict(zip(sub["subject"], loo["predictions"],
                                                        strict=True))
            entries.append({"calibration": calibration, "statistics": stats, "field": field,
                            "measure": measure, "x": x, "y": y, "lines": lines,
                            "subjects": sub["subject"].tolist(),
                            "groups": sub["group"].tolist() if "group" in sub else None,
                            "loo": None if loo is None else loo["predictions"]})
    comparisons = _compare(table, loo_by_key, fields, measures, alpha)
    return CalibrationReport(calibrations=entries, comparisons=comparisons, table=table,
                             method=method, alpha=alpha)


def _compare(table, loo_by_key, fields, measures, alpha) -> list[dict[str, Any]]:
    """Pairwise comparison of measurements on the subjects that have both (LOO LIC errors)."""
    out = []
    for field in fields:
        for i, first in enumerate(measures):
            for second in measures[i + 1:]:
                a = loo_by_key.get((field, first))
                b = loo_by_key.get((field, second))
                if not a or not b:
                    continue
                common = [s for s in a if s in b]
                if len(common) < 3:
                    continue
                rows = table.set_index("subject").loc[common]
                lic = rows["lic"].to_numpy(float)
                lic = lic if lic.ndim == 1 else lic.ravel()
                pa = np.array([a[s] for s in common])
                pb = np.array([b[s] for s in common])
                out.append({
                    "field_strength_t": field, "first": first, "second": second,
                    "n": len(common),
                    f"{first}_loo_rmse": float(np.sqrt(np.mean((pa - lic) ** 2))),
                    f"{second}_loo_rmse": float(np.sqrt(np.mean((pb - lic) ** 2))),
                    "bland_altman_first_vs_second": bland_altman(pa, pb, alpha=alpha).to_dict(),
                    "correlation_first_vs_second": correlation(pa, pb, alpha=alpha).to_dict(),
                })
    return out


def _summary_rows(report: CalibrationReport) -> list[dict[str, Any]]:
    rows = []
    for entry in report["calibrations"]:
        stats = entry["statistics"]
        for reg, line in stats["regressions"].items():
            row = {
                "measure": entry["measure"], "field_strength_t": entry["field"],
                "regression": reg, "saved": reg == report["method"], "n": stats["n"],
                "slope": line["slope"], "slope_ci_low": line["slope_ci"][0],
                "slope_ci_high": line["slope_ci"][1], "intercept": line["intercept"],
                "intercept_ci_low": line["intercept_ci"][0],
                "intercept_ci_high": line["intercept_ci"][1],
                "pearson_r": stats["correlation"]["pearson_r"],
                "spearman_rho": stats["correlation"]["spearman_rho"],
            }
            loo = stats.get("leave_one_out")
            ba = stats.get("bland_altman_loo_vs_chemical")
            if loo and reg == report["method"]:
                row.update({"loo_rmse": loo["rmse"], "loo_mae": loo["mae"],
                            "ba_bias": ba["bias"], "ba_loa_low": ba["loa_lower"],
                            "ba_loa_high": ba["loa_upper"]})
            rows.append(row)
    return rows


def write_calibration_outputs(
    report: CalibrationReport,
    folder: str | os.PathLike,
    *,
    plot_formats: tuple[str, ...] = ("png", "svg"),
) -> list[Path]:
    """Write ``calibration.json``, ``summary.csv``, ``summary.json`` and the plots to ``folder``.

    The folder should be a staging folder (:func:`qsmliver.io.staging.staged_output_dir`);
    files are written directly.
    """
    import pandas as pd

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    calibration_file = {
        "qsmliver_calibration_version": CALIBRATION_FILE_VERSION,
        "unit_out": LIC_UNIT,
        "regression": report["method"],
        "calibrations": [{**e["calibration"].to_dict(), "statistics": e["statistics"]}
                         for e in report["calibrations"]],
        "comparisons": report["comparisons"],
    }
    path = folder / "calibration.json"
    path.write_text(json.dumps(calibration_file, indent=2, default=_json_default) + "\n",
                    encoding="utf-8")
    written.append(path)
    summary = pd.DataFrame(_summary_rows(report))
    path = folder / "summary.csv"
    summary.to_csv(path, index=False, float_format="%.6g")
    written.append(path)
    path = folder / "summary.json"
    path.write_text(json.dumps({"rows": summary.to_dict(orient="records"),
                                "comparisons": report["comparisons"]}, indent=2,
                               default=_json_default) + "\n", encoding="utf-8")
    written.append(path)
    written += _plots(report, folder, plot_formats)
    return written


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _plots(report: CalibrationReport, folder: Path, formats: tuple[str, ...]) -> list[Path]:
    """Scatter + fitted lines and Bland-Altman plots per calibration (matplotlib, Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    written = []
    labels = {"r2star": "R2* (1/s)", "r2": "R2 (1/s)", "chi": "χ (ppm)"}
    for entry in report["calibrations"]:
        x, y = entry["x"], entry["y"]
        fig = Figure(figsize=(10, 4.2), layout="constrained")
        FigureCanvasAgg(fig)
        ax, bx = fig.subplots(1, 2)
        groups = entry["groups"] or ["all"] * len(x)
        for group in sorted(set(groups)):
            sel = np.array([g == group for g in groups])
            ax.scatter(x[sel], y[sel], s=18, label=str(group))
        grid = np.linspace(min(0.0, x.min()), x.max() * 1.05, 100)
        for reg, line in entry["lines"].items():
            ax.plot(grid, line.predict(grid), label=f"{reg}: {line.intercept:.3g} + "
                                                    f"{line.slope:.4g}·x")
        ax.set_xlabel(labels[entry["measure"]])
        ax.set_ylabel(f"chemical LIC ({LIC_UNIT})")
        field = entry["field"]
        ax.set_title(f"{entry['measure']} calibration" + ("" if field is None
                                                          else f" at {field:g} T"))
        ax.legend(fontsize=7)
        if entry["loo"] is not None:
            ba = entry["statistics"]["bland_altman_loo_vs_chemical"]
            mean = 0.5 * (entry["loo"] + y)
            bx.scatter(mean, entry["loo"] - y, s=18)
            for value, style in ((ba["bias"], "-"), (ba["loa_lower"], "--"),
                                 (ba["loa_upper"], "--")):
                bx.axhline(value, linestyle=style, color="k", linewidth=1)
            bx.set_title(f"Bland-Altman (leave-one-out): bias {ba['bias']:.2f}, "
                         f"LoA {ba['loa_lower']:.2f} to {ba['loa_upper']:.2f}", fontsize=9)
        bx.set_xlabel(f"mean of predicted and chemical LIC ({LIC_UNIT})")
        bx.set_ylabel("predicted − chemical LIC")
        stem = f"calibration_{entry['measure']}" + ("" if field is None else f"_{field:g}T")
        for fmt in formats:
            path = folder / f"{stem}.{fmt}"
            fig.savefig(path, format=fmt, dpi=120)
            written.append(path)
    return written


def calibrate_table(
    table_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    method: str = "deming",
    alpha: float = 0.05,
    error_ratio: float | None = None,
    overwrite: bool = False,
    plot_formats: tuple[str, ...] = ("png", "svg"),
) -> tuple[CalibrationReport, list[Path]]:
    """Read a table, fit the calibrations and write every output atomically to ``output_dir``.

    Returns
    -------
    (CalibrationReport, list of Path)
        The report and the files written (in ``output_dir``).
    """
    from qsmliver.io.staging import staged_output_dir

    table = read_calibration_table(table_path)
    report = fit_calibrations(table, method=method, alpha=alpha, error_ratio=error_ratio)
    out = Path(output_dir)
    with staged_output_dir(out, overwrite=overwrite) as stage:
        names = [p.relative_to(stage) for p in
                 write_calibration_outputs(report, stage, plot_formats=plot_formats)]
    return report, [out / n for n in names]


def load_calibration(path: str | os.PathLike, name: str | None = None) -> Calibration:
    """Load a calibration written by :func:`calibrate_table` (``calibration.json``).

    Parameters
    ----------
    path : path
        The JSON file.
    name : str, optional
        Which calibration, when the file holds several (e.g. ``"fitted_chi"``); default the
        only one.

    Raises
    ------
    QSMInputError
        Unreadable file, or ``name`` missing / ambiguous.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data["calibrations"] if "calibrations" in data else [data]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise QSMInputError(f"not a calibration file: {exc}", path) from None
    if name is not None:
        entries = [e for e in entries if e.get("name") == name]
    if len(entries) != 1:
        names = [e.get("name") for e in (data.get("calibrations") or [])]
        raise QSMInputError(f"{len(entries)} calibrations match; choose one of {names}", path,
                            "name")
    try:
        return Calibration.from_dict(entries[0])
    except QSMConfigError as exc:
        raise QSMInputError(str(exc), path) from None
