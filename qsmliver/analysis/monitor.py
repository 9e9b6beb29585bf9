"""Longitudinal liver-iron monitoring: consecutive-exam pairs, "real change" thresholds,
concordance of imaging (R2*, χ or LIC) with serum ferritin, correlations and ANCOVA.

The method is the seed study's (liver R2* relaxometry vs serum ferritin in therapy monitoring of
iron overload; 1.5 T, 42 patients, 92 consecutive-exam pairs):

- every pair of *consecutive* examinations of a patient is one observation (optionally only
  patients whose first exam is pathological, R2* > 70 1/s);
- a change counts as *real* when it exceeds a threshold: ferritin 14 % (the biological and
  analytical variability of ferritin, Pilon et al.), R2* 20 1/s (the authors' experience); both
  configurable, and a threshold must be given for χ (ppm) or LIC (mg Fe/g) if they are used;
- each pair is classified, with imaging as the test and ferritin as the reference as in the
  study: **TP** both decrease (concordant decrease), **TN** both stable or increasing
  (concordant stable-or-increase), **FP** imaging decreases while ferritin is stable or
  increases, **FN** ferritin decreases while imaging is stable or increases (FP and FN are the
  discordant pairs); sensitivity TP/(TP+FN), specificity TN/(TN+FP), PPV TP/(TP+FP), NPV
  TN/(TN+FN), accuracy (TP+TN)/n, each with a Wilson score interval (Wilson, J Am Stat Assoc
  1927;22:209), overall and per therapy (the seed reports sensitivity 0.804, specificity 0.707,
  PPV 0.774 and accuracy 0.76 from TP 41, TN 29, FP 12, FN 10);
- Pearson and Spearman correlations of the absolute and the percentage changes (scipy.stats);
- ANCOVA comparing the regression lines of imaging change on ferritin change between therapy
  groups (statsmodels OLS): slopes by the group × ferritin interaction, intercepts (vertical
  offset of parallel lines) by the group term of the additive model; an overall F test across
  all groups and every pair of groups.

Conventions: a change is ``later − earlier`` (a decrease is negative; the seed's figures plot the
opposite sign), the percentage change is ``100 · (later − earlier) / earlier``, and a change is a
real decrease when it is at or below ``−threshold``. The ``therapy`` of an exam row is the
therapy given *since the previous exam* (``therapy_on="later"``, default) or *until the next*
(``therapy_on="earlier"``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qsmliver.errors import QSMConfigError, QSMInputError

__all__ = [
    "CATEGORIES",
    "DEFAULT_THRESHOLDS",
    "IMAGING_MEASURES",
    "MonitorReport",
    "RealChange",
    "ancova_lines",
    "build_pairs",
    "classify_pairs",
    "diagnostic_metrics",
    "monitor",
    "read_exams",
]

#: Imaging measures a table may hold (canonical column names and units).
IMAGING_MEASURES = ("r2star_per_s", "chi_ppm", "lic_mg_per_g")
FERRITIN = "ferritin_ng_per_ml"
_UNITS = {"r2star_per_s": "1/s", "chi_ppm": "ppm", "lic_mg_per_g": "mg Fe/g",
          FERRITIN: "ng/ml"}
_LABELS = {"r2star_per_s": "R2*", "chi_ppm": "χ", "lic_mg_per_g": "LIC", FERRITIN: "ferritin"}

#: Column name aliases (lower case) -> canonical column.
_ALIASES: dict[str, tuple[str, ...]] = {
    "patient_id": ("patient_id", "patient", "subject", "participant_id", "id", "pid"),
    "date": ("date", "exam_date", "examination_date", "scan_date", "acquisition_date"),
    "r2star_per_s": ("r2star_per_s", "r2star", "r2*", "r2s", "r2star_1/s", "r2star (1/s)"),
    "chi_ppm": ("chi_ppm", "chi", "susceptibility", "susceptibility_ppm", "qsm"),
    "lic_mg_per_g": ("lic_mg_per_g", "lic", "lic_mg_g"),
    FERRITIN: (FERRITIN, "ferritin", "serum_ferritin", "ferritin_ng_ml", "ferritin_ug_l"),
    "therapy": ("therapy", "treatment", "therapy_between_exams"),
}

#: Pair categories (seed-study definitions) and their concordance names.
CATEGORIES = {
    "TP": "concordant_decrease",
    "TN": "concordant_stable_or_increase",
    "FP": "discordant_imaging_decrease",
    "FN": "discordant_ferritin_decrease",
}


@dataclasses.dataclass(frozen=True)
class RealChange:
    """A "real change" threshold: a change counts when ``|change| >= value``.

    ``kind`` is ``"absolute"`` (in the measure's unit) or ``"percent"`` (of the earlier value).
    """

    value: float
    kind: str = "absolute"

    def __post_init__(self) -> None:
        if self.kind not in ("absolute", "percent"):
            raise QSMConfigError(f"threshold kind must be 'absolute' or 'percent', got "
                                 f"{self.kind!r}")
        if not (math.isfinite(self.value) and self.value >= 0):
            raise QSMConfigError(f"threshold must be a finite number >= 0, got {self.value}")

    @classmethod
    def parse(cls, text: str | float | RealChange) -> RealChange:
        """``"14%"`` -> percent, ``"20"`` -> absolute; a RealChange is returned as is."""
        if isinstance(text, RealChange):
            return text
        if isinstance(text, (int, float)):
            return cls(float(text))
        raw = str(text).strip()
        kind = "percent" if raw.endswith("%") else "absolute"
        try:
            value = float(raw.rstrip("%").strip())
        except ValueError:
            raise QSMConfigError(f"cannot read the threshold {text!r} (e.g. '20' or '14%')"
                                 ) from None
        return cls(value, kind)

    def describe(self, measure: str) -> str:
        unit = "%" if self.kind == "percent" else f" {_UNITS.get(measure, '')}".rstrip()
        return f"{self.value:g}{unit}"


#: Seed-study thresholds: ferritin 14 %, R2* 20 1/s. χ and LIC have none: give them.
DEFAULT_THRESHOLDS: dict[str, RealChange] = {
    FERRITIN: RealChange(14.0, "percent"),
    "r2star_per_s": RealChange(20.0, "absolute"),
}


# -- reading ----------------------------------------------------------------------------------
def _canonical_columns(columns: Sequence[str]) -> dict[str, str]:
    lower = {str(c).strip().lower(): c for c in columns}
    found = {}
    for canonical, names in _ALIASES.items():
        for name in names:
            if name in lower:
                found[canonical] = lower[name]
                break
    return found


def read_exams(source: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    """Read and validate an examination table.

    Parameters
    ----------
    source : path or pandas.DataFrame
        CSV or TSV (by extension; ``.tsv``/``.txt`` tab-separated) or a DataFrame, one row per
        examination: ``patient_id``, ``date`` (ISO dates, e.g. 2015-03-02), one or more of
        ``r2star_per_s`` (1/s), ``chi_ppm`` (ppm), ``lic_mg_per_g`` (mg Fe/g dw), and
        ``ferritin_ng_per_ml`` (ng/ml = µg/l); optional ``therapy`` (text, e.g. phlebotomy,
        chelation, none). Common aliases are accepted (``patient``, ``r2star``, ``chi``,
        ``lic``, ``ferritin``, ``treatment``, ...). Empty cells are missing values.

    Returns
    -------
    pandas.DataFrame
        Canonical columns, sorted by patient and date; ``attrs["measures"]`` lists the imaging
        measures present.

    Raises
    ------
    QSMInputError
        Naming the file and the column/row: unreadable file, missing columns, a date or
        number that cannot be read, a negative value, or two exams of a patient on one date.
    """
    path: Any = None
    if isinstance(source, pd.DataFrame):
        raw = source.copy()
        raw.columns = [str(c) for c in raw.columns]
        raw = raw.astype(object).where(raw.notna(), "")
        raw = raw.astype(str)
    else:
        path = Path(source)
        if not path.is_file():
            raise QSMInputError("no such file", path)
        sep = "\t" if path.suffix.lower() in (".tsv", ".txt", ".tab") else ","
        try:
            raw = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False,
                              skipinitialspace=True)
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            raise QSMInputError(f"cannot read the table: {exc}", path) from None
    columns = _canonical_columns(list(raw.columns))
    for required in ("patient_id", "date", FERRITIN):
        if required not in columns:
            raise QSMInputError(f"missing column {required!r} (columns found: "
                                f"{', '.join(map(str, raw.columns))})", path, required)
    measures = [m for m in IMAGING_MEASURES if m in columns]
    if not measures:
        raise QSMInputError("no imaging column: give at least one of r2star_per_s, chi_ppm, "
                            "lic_mg_per_g", path, "r2star_per_s/chi_ppm/lic_mg_per_g")
    if raw.empty:
        raise QSMInputError("the table has no rows", path)
    table = pd.DataFrame({"patient_id": raw[columns["patient_id"]].astype(str).str.strip()})
    if (table["patient_id"] == "").any():
        row = int(np.flatnonzero((table["patient_id"] == "").to_numpy())[0])
        raise QSMInputError(f"row {row + 2}: empty patient id", path, columns["patient_id"])
    dates_raw = raw[columns["date"]].astype(str).str.strip()
    try:
        dates = pd.to_datetime(dates_raw, errors="coerce", format="ISO8601")
    except (TypeError, ValueError):  # pandas < 2.0 has no "ISO8601" format: dates only
        dates = pd.to_datetime(dates_raw.str.slice(0, 10), errors="coerce", format="%Y-%m-%d")
    if dates.isna().any():
        row = int(np.flatnonzero(dates.isna().to_numpy())[0])
        raise QSMInputError(f"row {row + 2}: cannot read the date {dates_raw.iloc[row]!r} "
                            "(use YYYY-MM-DD)", path, columns["date"])
    table["date"] = dates
    for canonical in (*measures, FERRITIN):
        column = raw[columns[canonical]].astype(str).str.strip()
        values = pd.to_numeric(column.where(column != "", None), errors="coerce")
        bad = (values.isna() & (column != "")) | ~np.isfinite(values.fillna(0.0).to_numpy())
        if canonical != "chi_ppm":
            bad |= values.fillna(0.0).to_numpy() < 0
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise QSMInputError(f"row {row + 2} (patient {table['patient_id'].iloc[row]!r}): "
                                f"value {column.iloc[row]!r} is not a valid number",
                                path, columns[canonical])
        table[canonical] = values.astype(float)
    if "therapy" in columns:
        therapy = raw[columns["therapy"]].astype(str).str.strip()
        table["therapy"] = therapy.where(therapy != "", "unknown")
    else:
        table["therapy"] = "unknown"
    duplicated = table.duplicated(["patient_id", "date"], keep=False)
    if duplicated.any():
        row = int(np.flatnonzero(duplicated.to_numpy())[0])
        raise QSMInputError(f"row {row + 2}: patient {table['patient_id'].iloc[row]!r} has two "
                            f"exams on {table['date'].iloc[row].date()}", path,
                            columns["date"])
    table = table.sort_values(["patient_id", "date"], kind="stable").reset_index(drop=True)
    table.attrs["measures"] = measures
    table.attrs["source"] = None if path is None else str(path)
    return table


# -- pairs and classification -----------------------------------------------------------------
def build_pairs(exams: pd.DataFrame, *, measures: Sequence[str] | None = None,
                baseline_min: Mapping[str, float] | None = None,
                therapy_on: str = "later") -> pd.DataFrame:
    """Consecutive-exam pairs of each patient with absolute and percentage changes.

    Parameters
    ----------
    exams : pandas.DataFrame
        From :func:`read_exams`.
    measures : sequence of str, optional
        Imaging measures (default: those in the table); ferritin is always included.
    baseline_min : mapping of str to float, optional
        Keep only patients whose *first* exam exceeds these values, e.g.
        ``{"r2star_per_s": 70.0}`` (the seed's pathological R2* at 1.5 T).
    therapy_on : {"later", "earlier"}
        Whether an exam's ``therapy`` is the therapy since the previous exam or until the
        next one.

    Returns
    -------
    pandas.DataFrame
        One row per pair: ``patient_id``, ``pair`` (1, 2, ... within a patient), ``date_1``,
        ``date_2``, ``interval_days``, ``therapy``, and per measure ``<m>_1``, ``<m>_2``,
        ``<m>_change`` (later − earlier) and ``<m>_change_percent``.
    """
    if therapy_on not in ("later", "earlier"):
        raise QSMConfigError(f"therapy_on must be 'later' or 'earlier', got {therapy_on!r}")
    measures = list(measures if measures is not None else exams.attrs.get(
        "measures", [m for m in IMAGING_MEASURES if m in exams.columns]))
    unknown = [m for m in measures if m not in exams.columns]
    if unknown:
        raise QSMInputError(f"the table has no column {unknown}")
    data = exams.sort_values(["patient_id", "date"], kind="stable").reset_index(drop=True)
    if baseline_min:
        first = data.groupby("patient_id", sort=False).head(1).set_index("patient_id")
        keep = pd.Series(True, index=first.index)
        for measure, minimum in baseline_min.items():
            if measure not in first.columns:
                raise QSMConfigError(f"baseline_min names {measure!r}, which the table lacks")
            keep &= first[measure] > float(minimum)
        data = data[data["patient_id"].isin(keep[keep].index)].reset_index(drop=True)
    nxt = data.groupby("patient_id", sort=False).shift(-1)
    valid = nxt["date"].notna()
    earlier, later = data[valid], nxt[valid]
    pairs = pd.DataFrame({
        "patient_id": earlier["patient_id"].to_numpy(),
        "date_1": earlier["date"].to_numpy(),
        "date_2": later["date"].to_numpy(),
    })
    pairs.insert(1, "pair", pairs.groupby("patient_id", sort=False).cumcount() + 1)
    pairs["interval_days"] = (pairs["date_2"] - pairs["date_1"]).dt.days
    pairs["therapy"] = (later if therapy_on == "later" else earlier)["therapy"].to_numpy()
    for measure in (*measures, FERRITIN):
        v1 = earlier[measure].to_numpy(dtype=float)
        v2 = later[measure].to_numpy(dtype=float)
        change = v2 - v1
        with np.errstate(divide="ignore", invalid="ignore"):
            percent = np.where(v1 != 0, 100.0 * change / np.where(v1 != 0, v1, 1.0), np.nan)
        pairs[f"{measure}_1"] = v1
        pairs[f"{measure}_2"] = v2
        pairs[f"{measure}_change"] = change
        pairs[f"{measure}_change_percent"] = percent
    pairs.attrs["measures"] = measures
    return pairs


def _real_decrease(pairs: pd.DataFrame, measure: str, threshold: RealChange) -> pd.Series:
    column = f"{measure}_change" + ("_percent" if threshold.kind == "percent" else "")
    change = pairs[column]
    out = change <= -threshold.value
    return out.where(change.notna())


def classify_pairs(pairs: pd.DataFrame, *, imaging: str = "r2star_per_s",
                   thresholds: Mapping[str, RealChange | str | float] | None = None
                   ) -> pd.DataFrame:
    """Add the seed study's TP/TN/FP/FN category of every pair (imaging vs ferritin).

    Parameters
    ----------
    pairs : pandas.DataFrame
        From :func:`build_pairs`.
    imaging : str
        The imaging measure (``"r2star_per_s"``, ``"chi_ppm"`` or ``"lic_mg_per_g"``).
    thresholds : mapping, optional
        Real-change thresholds overriding :data:`DEFAULT_THRESHOLDS` (``RealChange``, a number
        in the measure's unit, or a string like ``"14%"``).

    Returns
    -------
    pandas.DataFrame
        A copy with ``imaging_decrease``, ``ferritin_decrease`` (real decreases, bool),
        ``category`` (TP/TN/FP/FN; empty where a value is missing) and ``concordance``
        (:data:`CATEGORIES`).

    Raises
    ------
    QSMConfigError
        No threshold for the imaging measure.
    """
    limits = _thresholds(thresholds)
    if imaging not in limits:
        raise QSMConfigError(f"no real-change threshold for {imaging}: give one (for "
                             f"example --threshold {imaging}=0.05 or {imaging}=10%)")
    if f"{imaging}_change" not in pairs.columns:
        raise QSMInputError(f"the pairs have no {imaging} values")
    out = pairs.copy()
    img = _real_decrease(out, imaging, limits[imaging])
    fer = _real_decrease(out, FERRITIN, limits[FERRITIN])
    known = img.notna() & fer.notna()
    img_b = img.fillna(False).astype(bool)
    fer_b = fer.fillna(False).astype(bool)
    category = np.select([img_b & fer_b, ~img_b & ~fer_b, img_b & ~fer_b, ~img_b & fer_b],
                         ["TP", "TN", "FP", "FN"], default="")
    category = np.where(known.to_numpy(), category, "")
    out["imaging_decrease"] = img
    out["ferritin_decrease"] = fer
    out["category"] = category
    out["concordance"] = [CATEGORIES.get(c, "") for c in category]
    out.attrs.update(pairs.attrs)
    out.attrs["imaging"] = imaging
    out.attrs["thresholds"] = {k: dataclasses.asdict(v) for k, v in limits.items()}
    return out


def _thresholds(thresholds: Mapping[str, Any] | None) -> dict[str, RealChange]:
    limits = dict(DEFAULT_THRESHOLDS)
    for key, value in (thresholds or {}).items():
        canonical = _canonical_columns([key]).get
        name = next((c for c in (*IMAGING_MEASURES, FERRITIN) if canonical(c)), None)
        if name is None:
            raise QSMConfigError(f"threshold for unknown measure {key!r}; use one of "
                                 f"{[*IMAGING_MEASURES, FERRITIN]}")
        limits[name] = RealChange.parse(value)
    return limits


def _proportion(successes: int, total: int, alpha: float) -> dict[str, float]:
    """Proportion with its Wilson score interval (scipy.stats.binomtest)."""
    from scipy.stats import binomtest

    if total == 0:
        return {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    ci = binomtest(successes, total).proportion_ci(confidence_level=1.0 - alpha,
                                                   method="wilson")
    return {"value": successes / total, "ci_low": float(ci.low), "ci_high": float(ci.high)}


def diagnostic_metrics(categories: Sequence[str] | pd.Series, *, alpha: float = 0.05
                       ) -> dict[str, Any]:
    """Counts and sensitivity, specificity, PPV, NPV and accuracy of TP/TN/FP/FN labels.

    Each rate is a dict ``{"value", "ci_low", "ci_high"}`` (Wilson score interval at
    1 − ``alpha``); NaN where its denominator is 0. Empty labels (missing values) are ignored.

    Examples
    --------
    >>> m = diagnostic_metrics(["TP"] * 41 + ["TN"] * 29 + ["FP"] * 12 + ["FN"] * 10)
    >>> [round(m[k]["value"], 3) for k in ("sensitivity", "specificity", "ppv", "accuracy")]
    [0.804, 0.707, 0.774, 0.761]
    """
    labels = pd.Series(list(categories), dtype=object)
    counts = {k: int((labels == k).sum()) for k in ("TP", "TN", "FP", "FN")}
    tp, tn, fp, fn = (counts[k] for k in ("TP", "TN", "FP", "FN"))
    n = tp + tn + fp + fn
    return {
        **counts,
        "n": n,
        "discordant": fp + fn,
        "sensitivity": _proportion(tp, tp + fn, alpha),
        "specificity": _proportion(tn, tn + fp, alpha),
        "ppv": _proportion(tp, tp + fp, alpha),
        "npv": _proportion(tn, tn + fn, alpha),
        "accuracy": _proportion(tp + tn, n, alpha),
    }


# -- correlations and ANCOVA ------------------------------------------------------------------
def _correlation(x: np.ndarray, y: np.ndarray, alpha: float) -> dict[str, Any]:
    from qsmliver.calibrate.stats import correlation

    good = np.isfinite(x) & np.isfinite(y)
    x, y = x[good], y[good]
    empty = {"n": int(x.size), "pearson_r": math.nan, "pearson_ci": [math.nan, math.nan],
             "pearson_p": math.nan, "spearman_rho": math.nan, "spearman_p": math.nan}
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return empty
    return correlation(x, y, alpha=alpha).to_dict()


def _ols(y: np.ndarray, *columns: np.ndarray) -> Any:
    """statsmodels OLS of ``y`` on an intercept and ``columns``."""
    from statsmodels.regression.linear_model import OLS

    design = np.column_stack([np.ones_like(y), *columns])
    return OLS(y, design).fit()


def ancova_lines(data: pd.DataFrame, *, x: str, y: str, group: str = "therapy",
                 min_per_group: int = 3) -> dict[str, Any]:
    """Compare the regression lines of ``y`` on ``x`` between groups (ANCOVA, statsmodels).

    Parameters
    ----------
    data : pandas.DataFrame
    x, y : str
        Columns (e.g. ferritin and R2* percentage changes).
    group : str
        Group column (e.g. therapy).
    min_per_group : int
        Groups with fewer complete rows are left out (listed in ``excluded_groups``).

    Returns
    -------
    dict
        ``groups``: per group n, slope, intercept (OLS) and their standard errors;
        ``overall``: F tests across all groups (nested OLS models, ``compare_f_test``),
        ``slopes`` (separate lines ``y ~ x * group`` vs parallel lines ``y ~ x + group``) and
        ``intercepts`` (parallel lines vs one line ``y ~ x``), each with F, df and p;
        ``pairwise``: for every pair of groups the slope difference and its p (the
        interaction term) and the intercept difference of the parallel lines and its p (the
        group term). Differences are second group − first group (groups sorted by name).
    """
    frame = pd.DataFrame({"x": pd.to_numeric(data[x], errors="coerce"),
                          "y": pd.to_numeric(data[y], errors="coerce"),
                          "g": data[group].astype(str)}).dropna()
    frame = frame[np.isfinite(frame["x"]) & np.isfinite(frame["y"])]
    sizes = frame["g"].value_counts()
    kept = sorted(g for g, n in sizes.items() if n >= min_per_group)
    excluded = sorted(g for g in sizes.index if g not in kept)
    frame = frame[frame["g"].isin(kept)]
    result: dict[str, Any] = {"x": x, "y": y, "group": group, "excluded_groups": excluded,
                              "groups": {}, "overall": None, "pairwise": []}
    for name in kept:  # one small fit per group
        sub = frame[frame["g"] == name]
        if sub["x"].nunique() < 2:
            continue
        fit = _ols(sub["y"].to_numpy(), sub["x"].to_numpy())
        result["groups"][name] = {
            "n": len(sub), "slope": float(fit.params[1]), "slope_se": float(fit.bse[1]),
            "intercept": float(fit.params[0]), "intercept_se": float(fit.bse[0]),
        }
    if len(kept) < 2 or frame["x"].nunique() < 2:
        return result
    xv = frame["x"].to_numpy()
    yv = frame["y"].to_numpy()
    dummies = [(frame["g"] == name).to_numpy(dtype=float) for name in kept[1:]]
    line = _ols(yv, xv)
    parallel = _ols(yv, xv, *dummies)
    full = _ols(yv, xv, *dummies, *[xv * d for d in dummies])
    overall: dict[str, Any] = {}
    for key, small, big in (("slopes", parallel, full), ("intercepts", line, parallel)):
        if big.df_resid < 1:
            overall[key] = None
            continue
        f_value, p_value, df_diff = big.compare_f_test(small)
        overall[key] = {"F": float(f_value), "df_num": float(df_diff),
                        "df_den": float(big.df_resid), "p": float(p_value)}
    result["overall"] = overall
    for first, second in itertools.combinations(kept, 2):  # pairs of therapy groups
        sub = frame[frame["g"].isin([first, second])]
        d = (sub["g"] == second).to_numpy(dtype=float)
        xs, ys = sub["x"].to_numpy(), sub["y"].to_numpy()
        par = _ols(ys, xs, d)
        inter = _ols(ys, xs, d, xs * d)
        result["pairwise"].append({
            "groups": [first, second],
            "intercept_difference": float(par.params[2]),
            "intercept_p": float(par.pvalues[2]) if par.df_resid >= 1 else math.nan,
            "slope_difference": float(inter.params[3]),
            "slope_p": float(inter.pvalues[3]) if inter.df_resid >= 1 else math.nan,
        })
    return result


# -- the whole analysis -----------------------------------------------------------------------
@dataclasses.dataclass
class MonitorReport:
    """Result of :func:`monitor`.

    Attributes
    ----------
    exams : pandas.DataFrame
        The examinations used.
    pairs : pandas.DataFrame
        Classified consecutive-exam pairs (:func:`classify_pairs`).
    imaging : str
        The imaging measure classified.
    thresholds : dict of str to RealChange
    metrics : dict
        ``"all"`` and one entry per therapy: :func:`diagnostic_metrics`.
    correlations : dict
        ``{"absolute"|"percent": {"all"|therapy: {measure: correlation dict}}}`` of imaging
        change vs ferritin change, for every imaging measure.
    ancova : dict
        ``{"absolute"|"percent": ancova_lines(...)}`` for the classified measure.
    settings : dict
    """

    exams: pd.DataFrame
    pairs: pd.DataFrame
    imaging: str
    thresholds: dict[str, RealChange]
    metrics: dict[str, Any]
    correlations: dict[str, Any]
    ancova: dict[str, Any]
    settings: dict[str, Any]

    def summary_table(self) -> pd.DataFrame:
        """One row per group (``all`` and each therapy): counts and rates with intervals."""
        rows = []
        for name, m in self.metrics.items():
            row: dict[str, Any] = {"group": name, "pairs": m["n"]}
            row.update({k: m[k] for k in ("TP", "TN", "FP", "FN", "discordant")})
            for rate in ("sensitivity", "specificity", "ppv", "npv", "accuracy"):
                row[rate] = m[rate]["value"]
                row[f"{rate}_ci_low"] = m[rate]["ci_low"]
                row[f"{rate}_ci_high"] = m[rate]["ci_high"]
            for kind in ("absolute", "percent"):
                corr = self.correlations[kind].get(name, {}).get(self.imaging, {})
                row[f"pearson_r_{kind}"] = corr.get("pearson_r", math.nan)
                row[f"pearson_p_{kind}"] = corr.get("pearson_p", math.nan)
                row[f"spearman_rho_{kind}"] = corr.get("spearman_rho", math.nan)
                row[f"spearman_p_{kind}"] = corr.get("spearman_p", math.nan)
            rows.append(row)
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary."""
        return _clean({
            "imaging": self.imaging,
            "thresholds": {k: {**dataclasses.asdict(v), "text": v.describe(k)}
                           for k, v in self.thresholds.items()},
            "n_patients": int(self.exams["patient_id"].nunique()),
            "n_exams": len(self.exams),
            "n_pairs": len(self.pairs),
            "definitions": {
                "TP": "imaging and ferritin both decrease (concordant decrease)",
                "TN": "imaging and ferritin both stable or increasing",
                "FP": "imaging decreases, ferritin stable or increasing (discordant)",
                "FN": "ferritin decreases, imaging stable or increasing (discordant)",
                "change": "later minus earlier; real decrease: change <= -threshold",
            },
            "metrics": self.metrics,
            "correlations": self.correlations,
            "ancova": self.ancova,
            "settings": self.settings,
        })


def _clean(value: Any) -> Any:
    """Plain JSON types; NaN -> None."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    return value


def monitor(
    exams: pd.DataFrame | str | os.PathLike,
    *,
    imaging: str | None = None,
    thresholds: Mapping[str, RealChange | str | float] | None = None,
    baseline_min: Mapping[str, float] | None = None,
    therapy_on: str = "later",
    alpha: float = 0.05,
) -> MonitorReport:
    """Run the whole monitoring analysis on an examination table.

    Parameters
    ----------
    exams : pandas.DataFrame or path
        Examinations (:func:`read_exams` format).
    imaging : str, optional
        Imaging measure to classify against ferritin; default the first of
        :data:`IMAGING_MEASURES` in the table that has a threshold.
    thresholds : mapping, optional
        Real-change thresholds (override :data:`DEFAULT_THRESHOLDS`).
    baseline_min : mapping, optional
        Patient inclusion on the first exam (e.g. ``{"r2star_per_s": 70}``).
    therapy_on : {"later", "earlier"}
    alpha : float
        1 − confidence level.

    Returns
    -------
    MonitorReport
    """
    if not 0 < alpha < 1:
        raise QSMConfigError(f"alpha must be in (0, 1), got {alpha}")
    if not isinstance(exams, pd.DataFrame) or "measures" not in exams.attrs:
        exams = read_exams(exams)
    limits = _thresholds(thresholds)
    measures = list(exams.attrs["measures"])
    if imaging is None:
        imaging = next((m for m in measures if m in limits), None)
        if imaging is None:
            raise QSMConfigError(f"no real-change threshold for the imaging measure(s) "
                                 f"{measures}: give one (e.g. --threshold {measures[0]}=0.05)")
    elif imaging not in measures:
        raise QSMConfigError(f"imaging measure {imaging!r} is not in the table (it has "
                             f"{measures})")
    pairs = build_pairs(exams, measures=measures, baseline_min=baseline_min,
                        therapy_on=therapy_on)
    if pairs.empty:
        raise QSMInputError("no patient has two or more examinations (after the baseline "
                            "selection)", exams.attrs.get("source"))
    pairs = classify_pairs(pairs, imaging=imaging, thresholds=limits)
    therapies = sorted(pairs["therapy"].astype(str).unique())
    metrics = {"all": diagnostic_metrics(pairs["category"], alpha=alpha)}
    for therapy in therapies:
        metrics[therapy] = diagnostic_metrics(pairs.loc[pairs["therapy"] == therapy,
                                                        "category"], alpha=alpha)
    correlations: dict[str, Any] = {}
    ancova: dict[str, Any] = {}
    for kind, suffix in (("absolute", "_change"), ("percent", "_change_percent")):
        by_group: dict[str, Any] = {}
        for name in ("all", *therapies):
            sub = pairs if name == "all" else pairs[pairs["therapy"] == name]
            x = sub[f"{FERRITIN}{suffix}"].to_numpy(dtype=float)
            by_group[name] = {m: _correlation(x, sub[f"{m}{suffix}"].to_numpy(dtype=float),
                                              alpha) for m in measures}
        correlations[kind] = by_group
        ancova[kind] = ancova_lines(pairs, x=f"{FERRITIN}{suffix}", y=f"{imaging}{suffix}",
                                    group="therapy")
    settings = {"baseline_min": dict(baseline_min or {}), "therapy_on": therapy_on,
                "alpha": alpha, "measures": measures, "source": exams.attrs.get("source")}
    return MonitorReport(exams=exams, pairs=pairs, imaging=imaging, thresholds=limits,
                         metrics=metrics, correlations=correlations, ancova=ancova,
                         settings=settings)


def write_monitor_outputs(report: MonitorReport, folder: str | os.PathLike, *,
                          plots: bool = True, overwrite: bool = False) -> list[Path]:
    """Write ``pairs.tsv``, ``summary.tsv``, ``summary.json`` and the PNG plots to ``folder``.

    Each file is written atomically (:func:`qsmliver.io.atomic.atomic_path`); wrap the call in
    :func:`qsmliver.io.staging.staged_output_dir` for all-or-nothing output.
    """
    from qsmliver.io.atomic import atomic_path, write_json_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    pairs = report.pairs.copy()
    for column in ("date_1", "date_2"):
        pairs[column] = pairs[column].dt.strftime("%Y-%m-%d")
    for frame, name in ((pairs, "pairs.tsv"), (report.summary_table(), "summary.tsv")):
        path = folder / name
        with atomic_path(path, overwrite=overwrite) as tmp:
            frame.to_csv(tmp, sep="\t", index=False, na_rep="n/a", float_format="%.8g")
        written.append(path)
    written.append(write_json_atomic(report.to_dict(), folder / "summary.json",
                                     overwrite=overwrite))
    if plots:
        from qsmliver.analysis.plots import monitor_plots

        written += monitor_plots(report, folder, overwrite=overwrite)
    return written


def measure_name(measure: str) -> str:
    """Display name of a measure (``"r2star_per_s" -> "R2*"``)."""
    return _LABELS.get(measure, measure)


def measure_unit(measure: str) -> str:
    """Unit of a measure (``"r2star_per_s" -> "1/s"``)."""
    return _UNITS.get(measure, "")
