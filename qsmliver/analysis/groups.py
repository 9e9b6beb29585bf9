"""Deep grey matter: reference values and per-ROI comparison of two groups.

Input is a tidy table with one row per subject and ROI (for example the cohort table built from
:func:`qsmliver.analysis.roi_statistics` joined with a BIDS ``participants.tsv``): a ROI column,
a value column (χ ppm, R2* 1/s, ...), a group column and covariates (age, sex, ROI volume).

Per ROI, :func:`compare_groups` reports the group means and SDs, Hedges' g (unadjusted
standardised difference with the small-sample correction; Hedges, J Educ Stat 1981;6:107), and
an ANCOVA (ordinary least squares ``value ~ 1 + group + covariates``, statsmodels OLS; the group
coefficient is the covariate-adjusted difference, tested with its t statistic; partial η² =
t²/(t² + df_resid)). p-values across ROIs are corrected for the false discovery rate with
Benjamini-Hochberg (J R Stat Soc B 1995;57:289; ``statsmodels.stats.multitest``).

Reference values come from the cohort's own controls (:func:`reference_values`, with z-scores
of every subject against them, :func:`reference_z_scores`). :data:`DGM_ORIENTATION_CHI_PPM`
lists orders of magnitude only (healthy adults, 3 T; globus pallidus ~0.15-0.2 ppm, putamen
~0.05, caudate ~0.06, thalamus ~0-0.03, red nucleus / substantia nigra ~0.1-0.15 ppm, with MS
cohorts showing higher basal ganglia and lower thalamic χ, Zivadinov et al. Radiology
2018;289:487): values depend on the χ reference, the QSM method, age and field strength and are
no substitute for local controls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from qsmliver.analysis.labels import recognise_name
from qsmliver.errors import QSMConfigError, QSMInputError

__all__ = [
    "DGM_ORIENTATION_CHI_PPM",
    "compare_groups",
    "hedges_g",
    "pool_hemispheres",
    "reference_values",
    "reference_z_scores",
]

#: Orders of magnitude of deep grey matter χ (ppm) in healthy adults at 3 T (low, high); see
#: the module docstring. Orientation only, not normative values.
DGM_ORIENTATION_CHI_PPM: dict[str, tuple[float, float]] = {
    "globus_pallidus": (0.15, 0.20),
    "putamen": (0.03, 0.07),
    "caudate": (0.04, 0.08),
    "thalamus": (0.0, 0.03),
    "red_nucleus": (0.10, 0.15),
    "substantia_nigra": (0.10, 0.15),
}


def hedges_g(a: Any, b: Any) -> float:
    """Hedges' g of ``b`` versus ``a``: ``(mean_b − mean_a) / s_pooled · J``.

    ``s_pooled`` is the pooled SD (``ddof=1``) and ``J = 1 − 3 / (4 (n_a + n_b) − 9)`` the
    small-sample correction (Hedges 1981). NaN with fewer than 2 values in a group.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na, nb = a.size, b.size
    if na < 2 or nb < 2:
        return math.nan
    pooled = math.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2))
    if pooled == 0:
        return math.nan
    correction = 1.0 - 3.0 / (4.0 * (na + nb) - 9.0)
    return float((b.mean() - a.mean()) / pooled * correction)


def _require(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise QSMInputError(f"{what}: missing column(s) {missing}; columns are "
                            f"{list(map(str, table.columns))}")


def pool_hemispheres(table: pd.DataFrame, *, roi: str = "label_name", value: str = "mean",
                     subject: str = "subject", weight: str = "count") -> pd.DataFrame:
    """Merge left and right of each recognised structure into one row per subject.

    Names are recognised in any convention (:func:`qsmliver.analysis.labels.recognise_name`);
    ``Left-Putamen`` and ``R_Puta`` both become ``putamen``. The value is the ``weight``-weighted
    mean (voxel counts by default, i.e. the mean over both hemispheres' voxels); ``count`` and
    ``volume_mm3`` are summed when present. Unrecognised names are kept as they are. Other
    columns (map, group, age, ...) are kept when they agree within a subject.

    Returns
    -------
    pandas.DataFrame
        The pooled table.
    """
    _require(table, [roi, value, subject], "pool_hemispheres")
    work = table.copy()
    work[roi] = [_structure_or_name(n) for n in work[roi].astype(str)]
    if weight in work.columns:
        w = pd.to_numeric(work[weight], errors="coerce").fillna(0.0).astype(float)
    else:
        w = pd.Series(1.0, index=work.index)
    w = w.where(work[value].notna(), 0.0)
    work["_w"] = w
    work["_wv"] = work[value].fillna(0.0) * w
    keys = [subject, roi] + (["map"] if "map" in work.columns and "map" not in (roi,) else [])
    summed = [c for c in ("count", "volume_mm3") if c in work.columns and c != value]
    agg: dict[str, Any] = {"_w": "sum", "_wv": "sum", **dict.fromkeys(summed, "sum")}
    others = [c for c in work.columns
              if c not in {*keys, value, weight, "_w", "_wv", *summed, "label"}]
    for column in others:
        agg[column] = "first"
    pooled = work.groupby(keys, sort=False, dropna=False).agg(agg).reset_index()
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled[value] = np.where(pooled["_w"] > 0, pooled["_wv"] / pooled["_w"], np.nan)
    return pooled.drop(columns=["_w", "_wv"])


def _structure_or_name(name: str) -> str:
    found = recognise_name(name)
    return name if found is None else found[0]


def _design(frame: pd.DataFrame, covariates: Sequence[str]
            ) -> tuple[np.ndarray, list[str], list[str]]:
    """Design matrix ``[1, g, covariates...]`` (numeric covariates as they are, text/boolean
    ones as treatment-coded dummies), the covariates used and those dropped as constant."""
    columns = [np.ones(len(frame)), frame["g"].to_numpy(dtype=float)]
    used, dropped = [], []
    for i, name in enumerate(covariates):
        series = frame[f"cov{i}"]
        if series.nunique(dropna=True) < 2:
            dropped.append(name)
            continue
        used.append(name)
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            columns.append(series.to_numpy(dtype=float))
        else:
            dummies = pd.get_dummies(series.astype(str), drop_first=True, dtype=float)
            columns.extend(dummies[c].to_numpy() for c in dummies.columns)
    return np.column_stack(columns), used, dropped


def compare_groups(
    table: pd.DataFrame,
    *,
    value: str = "mean",
    group: str = "group",
    roi: str = "label_name",
    covariates: Sequence[str] = ("age", "sex", "volume_mm3"),
    groups: Sequence[str] | None = None,
    alpha: float = 0.05,
    fdr_method: str = "fdr_bh",
    min_per_group: int = 3,
) -> pd.DataFrame:
    """Per-ROI comparison of two groups with ANCOVA, effect sizes and FDR-corrected p-values.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per subject and ROI with columns ``roi``, ``value``, ``group`` and the
        ``covariates``.
    value : str
        Column compared (default ``"mean"``, e.g. mean χ in ppm).
    group : str
        Column holding the group of each subject.
    roi : str
        Column naming the ROI.
    covariates : sequence of str
        Covariates of the ANCOVA; numeric columns enter linearly, text/boolean ones as
        categories. A covariate that is constant within a ROI is left out there (listed in the
        ``covariates_dropped`` column). ``()`` gives a plain two-sample t-test (equal variances).
    groups : (reference, other), optional
        The two groups; differences are ``other − reference``. Default: the two groups present,
        sorted (an error if there are more than two).
    alpha : float
        1 − confidence level of the intervals and the FDR level.
    fdr_method : str
        Multiple-testing method of :func:`statsmodels.stats.multitest.multipletests`
        (default Benjamini-Hochberg ``"fdr_bh"``).
    min_per_group : int
        ROIs with fewer subjects in a group get NaN statistics.

    Returns
    -------
    pandas.DataFrame
        One row per ROI: ``roi``, ``reference``, ``group``, ``n_reference``, ``n_group``,
        ``mean_reference``, ``sd_reference``, ``mean_group``, ``sd_group``, ``difference``
        (unadjusted), ``hedges_g``, ``adjusted_difference`` (ANCOVA group coefficient),
        ``ci_low``, ``ci_high``, ``t``, ``df``, ``p``, ``p_fdr``, ``significant_fdr``,
        ``partial_eta2``, ``adjusted_d`` (adjusted difference / residual SD),
        ``covariates_used``, ``covariates_dropped``.

    Raises
    ------
    QSMInputError
        Missing columns, non-numeric values or covariates, a group named in ``groups`` that is
        absent, or not exactly two groups.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> t = pd.DataFrame({"label_name": "putamen", "group": ["HC"] * 20 + ["MS"] * 20,
    ...                   "mean": np.r_[rng.normal(0.05, 0.01, 20), rng.normal(0.07, 0.01, 20)],
    ...                   "age": rng.uniform(20, 60, 40)})
    >>> r = compare_groups(t, covariates=("age",))
    >>> bool(r.loc[0, "adjusted_difference"] > 0 and r.loc[0, "p"] < 0.05)
    True
    """
    from statsmodels.regression.linear_model import OLS
    from statsmodels.stats.multitest import multipletests

    covariates = list(covariates)
    _require(table, [roi, value, group, *covariates], "group comparison table")
    if not 0 < alpha < 1:
        raise QSMConfigError(f"alpha must be in (0, 1), got {alpha}")
    data = table[[roi, value, group, *covariates]].copy()
    data[value] = pd.to_numeric(data[value], errors="coerce")
    data[group] = data[group].astype(str)
    present = sorted(data[group].dropna().unique())
    if groups is None:
        if len(present) != 2:
            raise QSMInputError(f"need exactly two groups in column {group!r}, found "
                                f"{present}; name the two to compare")
        groups = present
    groups = [str(g) for g in groups]
    if len(groups) != 2 or groups[0] == groups[1]:
        raise QSMConfigError(f"groups must be two different names, got {groups}")
    absent = [g for g in groups if g not in present]
    if absent:
        raise QSMInputError(f"group(s) {absent} not found in column {group!r} (found "
                            f"{present})")
    reference, other = groups
    data = data[data[group].isin(groups)]
    for column in covariates:
        series = data[column]
        if series.dtype == object:
            numeric = pd.to_numeric(series, errors="coerce")
            if numeric.notna().sum() == series.notna().sum():
                data[column] = numeric

    rows = []
    for name, sub in data.groupby(roi, sort=True):  # one model per ROI
        sub = sub.dropna(subset=[value, *covariates])
        a = sub.loc[sub[group] == reference, value].to_numpy(dtype=float)
        b = sub.loc[sub[group] == other, value].to_numpy(dtype=float)
        row: dict[str, Any] = {
            "roi": name, "reference": reference, "group": other,
            "n_reference": a.size, "n_group": b.size,
            "mean_reference": a.mean() if a.size else math.nan,
            "sd_reference": a.std(ddof=1) if a.size > 1 else math.nan,
            "mean_group": b.mean() if b.size else math.nan,
            "sd_group": b.std(ddof=1) if b.size > 1 else math.nan,
        }
        row["difference"] = row["mean_group"] - row["mean_reference"]
        row["hedges_g"] = hedges_g(a, b)
        stats = dict.fromkeys(("adjusted_difference", "ci_low", "ci_high", "t", "df", "p",
                               "partial_eta2", "adjusted_d"), math.nan)
        used: list[str] = []
        dropped: list[str] = []
        if a.size >= min_per_group and b.size >= min_per_group:
            frame = pd.DataFrame({"g": (sub[group] == other).to_numpy(dtype=float)})
            for i, column in enumerate(covariates):
                frame[f"cov{i}"] = sub[column].to_numpy()
            design, used, dropped = _design(frame, covariates)
            rank = int(np.linalg.matrix_rank(design))
            if rank == design.shape[1] and design.shape[0] - rank >= 1:
                fit = OLS(sub[value].to_numpy(dtype=float), design).fit()
                ci = fit.conf_int(alpha=alpha)[1]
                t = float(fit.tvalues[1])
                stats.update(adjusted_difference=float(fit.params[1]), ci_low=float(ci[0]),
                             ci_high=float(ci[1]), t=t, df=float(fit.df_resid),
                             p=float(fit.pvalues[1]),
                             partial_eta2=t * t / (t * t + float(fit.df_resid)))
                if fit.mse_resid > 0:
                    stats["adjusted_d"] = float(fit.params[1]) / math.sqrt(fit.mse_resid)
            elif rank < design.shape[1]:
                dropped.append("(design not of full rank: group confounded with covariates)")
        row.update(stats)
        row["covariates_used"] = ",".join(used)
        row["covariates_dropped"] = ",".join(dropped)
        rows.append(row)
    if not rows:
        raise QSMInputError("no ROI has values for both groups")
    result = pd.DataFrame(rows)
    p = result["p"].to_numpy(dtype=float)
    finite = np.isfinite(p)
    p_fdr = np.full(p.shape, np.nan)
    significant = np.zeros(p.shape, dtype=bool)
    if finite.any():
        reject, corrected, _, _ = multipletests(p[finite], alpha=alpha, method=fdr_method)
        p_fdr[finite] = corrected
        significant[finite] = reject
    result["p_fdr"] = p_fdr
    result["significant_fdr"] = significant
    order = ["roi", "reference", "group", "n_reference", "n_group", "mean_reference",
             "sd_reference", "mean_group", "sd_group", "difference", "hedges_g",
             "adjusted_difference", "ci_low", "ci_high", "t", "df", "p", "p_fdr",
             "significant_fdr", "partial_eta2", "adjusted_d", "covariates_used",
             "covariates_dropped"]
    return result[order]


def reference_values(table: pd.DataFrame, *, control: str, value: str = "mean",
                     group: str = "group", roi: str = "label_name") -> pd.DataFrame:
    """Per-ROI reference values from the control group: n, mean, SD, 2.5th and 97.5th
    percentiles of ``value``.

    Raises
    ------
    QSMInputError
        Missing columns or no subject of the control group.
    """
    _require(table, [roi, value, group], "reference table")
    data = table[table[group].astype(str) == str(control)]
    if data.empty:
        raise QSMInputError(f"no subject of the control group {control!r} in column {group!r}")
    values = pd.to_numeric(data[value], errors="coerce")
    grouped = values.groupby(data[roi])
    out = pd.DataFrame({
        "n": grouped.count(), "mean": grouped.mean(), "sd": grouped.std(ddof=1),
        "p2.5": grouped.quantile(0.025), "p97.5": grouped.quantile(0.975),
    })
    out.index.name = "roi"
    return out.reset_index()


def reference_z_scores(table: pd.DataFrame, reference: pd.DataFrame, *, value: str = "mean",
                       roi: str = "label_name") -> pd.Series:
    """z-score of every row against :func:`reference_values` of its ROI (NaN where the ROI has
    no reference or the reference SD is 0)."""
    _require(table, [roi, value], "table")
    ref = reference.set_index("roi")
    mean = table[roi].map(ref["mean"])
    sd = table[roi].map(ref["sd"]).where(lambda s: s > 0)
    return (pd.to_numeric(table[value], errors="coerce") - mean) / sd
