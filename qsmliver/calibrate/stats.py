"""Method-comparison statistics for calibrations: OLS, Deming, Passing-Bablok, correlation,
Bland-Altman and leave-one-out prediction error (DESIGN section 6).

All functions take 1-D host arrays ``x`` (the measurement, e.g. R2* or χ) and ``y`` (the
reference, e.g. chemical LIC) and return plain dataclasses whose ``to_dict()`` is
JSON-serialisable.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import scipy.stats as st

__all__ = [
    "AgreementResult",
    "CorrelationResult",
    "RegressionResult",
    "bland_altman",
    "correlation",
    "deming",
    "fit_line",
    "leave_one_out",
    "ols",
    "passing_bablok",
]

REGRESSIONS = ("ols", "deming", "passing_bablok")


@dataclasses.dataclass
class RegressionResult:
    """A straight line ``y = intercept + slope·x`` with (1 − alpha) confidence intervals."""

    method: str
    slope: float
    intercept: float
    slope_ci: tuple[float, float]
    intercept_ci: tuple[float, float]
    n: int
    alpha: float = 0.05
    extra: dict = dataclasses.field(default_factory=dict)

    def predict(self, x):
        """``intercept + slope·x``."""
        return self.intercept + self.slope * np.asarray(x, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["slope_ci"] = list(self.slope_ci)
        out["intercept_ci"] = list(self.intercept_ci)
        return out


@dataclasses.dataclass
class CorrelationResult:
    """Pearson r (with Fisher-z CI) and Spearman ρ, with p-values."""

    pearson_r: float
    pearson_ci: tuple[float, float]
    pearson_p: float
    spearman_rho: float
    spearman_p: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["pearson_ci"] = list(self.pearson_ci)
        return out


@dataclasses.dataclass
class AgreementResult:
    """Bland-Altman agreement of ``a`` with ``b`` (differences ``a − b``)."""

    bias: float
    bias_ci: tuple[float, float]
    sd: float
    loa_lower: float
    loa_upper: float
    loa_lower_ci: tuple[float, float]
    loa_upper_ci: tuple[float, float]
    n: int

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("bias_ci", "loa_lower_ci", "loa_upper_ci"):
            out[key] = list(out[key])
        return out


def _xy(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length ({x.size} vs {y.size})")
    if x.size < 3:
        raise ValueError(f"need at least 3 pairs, got {x.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("x and y must be finite")
    return x, y


def ols(x, y, *, alpha: float = 0.05) -> RegressionResult:
    """Ordinary least squares of ``y`` on ``x`` with t-based confidence intervals.

    Uses :func:`scipy.stats.linregress` (slope and intercept standard errors).
    """
    x, y = _xy(x, y)
    fit = st.linregress(x, y)
    t = st.t.ppf(1 - alpha / 2, x.size - 2)
    resid_sd = math.sqrt(np.sum((y - fit.intercept - fit.slope * x) ** 2) / (x.size - 2))
    return RegressionResult(
        "ols", float(fit.slope), float(fit.intercept),
        (float(fit.slope - t * fit.stderr), float(fit.slope + t * fit.stderr)),
        (float(fit.intercept - t * fit.intercept_stderr),
         float(fit.intercept + t * fit.intercept_stderr)),
        int(x.size), alpha, {"residual_sd": resid_sd, "r_squared": float(fit.rvalue**2)})


def _deming_point(x: np.ndarray, y: np.ndarray, ratio: float) -> tuple[float, float]:
    mx, my = x.mean(), y.mean()
    sxx = np.mean((x - mx) ** 2)
    syy = np.mean((y - my) ** 2)
    sxy = np.mean((x - mx) * (y - my))
    if sxy == 0:
        slope = 0.0 if syy < ratio * sxx else math.inf
    else:
        d = syy - ratio * sxx
        slope = (d + math.sqrt(d * d + 4.0 * ratio * sxy * sxy)) / (2.0 * sxy)
    return float(slope), float(my - slope * mx)


def deming(x, y, *, error_ratio: float = 1.0, alpha: float = 0.05) -> RegressionResult:
    """Deming regression (errors in both variables) with jackknife confidence intervals.

    Parameters
    ----------
    x, y : (n,) array_like
    error_ratio : float
        ``λ = Var(error in y) / Var(error in x)``; 1 gives orthogonal regression.
    alpha : float
        1 − confidence level.

    Notes
    -----
    Slope ``b = (s_yy − λ s_xx + √((s_yy − λ s_xx)² + 4λ s_xy²)) / (2 s_xy)``, intercept
    ``ȳ − b x̄`` (Deming 1943; Cornbleet & Gochman, Clin Chem 1979;25:432). Confidence
    intervals from the jackknife pseudo-values with a t(n − 1) quantile (Linnet K, Evaluation of
    regression procedures for methods comparison studies, Clin Chem 1993;39:424; Linnet K,
    Estimation of the linear relationship between the measurements of two methods with
    proportional errors, Stat Med 1990;9:1463).
    """
    x, y = _xy(x, y)
    if not error_ratio > 0:
        raise ValueError("error_ratio must be positive")
    n = x.size
    slope, intercept = _deming_point(x, y, error_ratio)
    keep = ~np.eye(n, dtype=bool)
    loo = np.array([_deming_point(x[keep[i]], y[keep[i]], error_ratio) for i in range(n)])
    t = st.t.ppf(1 - alpha / 2, n - 1)
    cis = []
    for k, full in enumerate((slope, intercept)):
        pseudo = n * full - (n - 1) * loo[:, k]
        centre = pseudo.mean()
        se = pseudo.std(ddof=1) / math.sqrt(n)
        cis.append((float(centre - t * se), float(centre + t * se)))
    return RegressionResult("deming", slope, intercept, cis[0], cis[1], n, alpha,
                            {"error_ratio": float(error_ratio), "ci_method": "jackknife"})


def passing_bablok(x, y, *, alpha: float = 0.05) -> RegressionResult:
    """Passing-Bablok regression with its rank-based confidence intervals.

    Notes
    -----
    Slopes ``S_ij = (y_j − y_i)/(x_j − x_i)`` of all pairs ``i < j``; pairs with
    ``S_ij = −1`` or with both differences 0 are dropped; ``x_i = x_j`` gives ±∞ by the sign
    of ``y_j − y_i``. With ``K`` the number of slopes below −1 and ``N`` the number kept, the
    slope is the median of the sorted slopes shifted by ``K``; its CI is
    ``[S_(M1+K), S_(M2+K)]`` with ``C = z_(1−α/2)·√(n(n−1)(2n+5)/18)``,
    ``M1 = round((N − C)/2)``, ``M2 = N − M1 + 1`` (1-based). The intercept is
    ``median(y − b·x)``, its CI from the slope limits (Passing H, Bablok W, A new biometrical
    procedure for testing the equality of measurements from two different analytical methods,
    J Clin Chem Clin Biochem 1983;21:709).
    """
    x, y = _xy(x, y)
    n = x.size
    i, j = np.triu_indices(n, k=1)
    dx = x[j] - x[i]
    dy = y[j] - y[i]
    valid = ~((dx == 0) & (dy == 0))
    dx, dy = dx[valid], dy[valid]
    with np.errstate(divide="ignore", invalid="ignore"):
        slopes = np.where(dx != 0, dy / np.where(dx != 0, dx, 1.0), np.sign(dy) * np.inf)
    slopes = np.sort(slopes[slopes != -1.0])
    big_n = slopes.size
    k = int(np.sum(slopes < -1.0))
    if big_n % 2:
        slope = slopes[(big_n + 1) // 2 + k - 1]
    else:
        slope = 0.5 * (slopes[big_n // 2 + k - 1] + slopes[big_n // 2 + k])
    c = st.norm.ppf(1 - alpha / 2) * math.sqrt(n * (n - 1) * (2 * n + 5) / 18.0)
    m1 = round((big_n - c) / 2.0)
    m2 = big_n - m1 + 1
    lo_idx = min(max(m1 + k - 1, 0), big_n - 1)
    hi_idx = min(max(m2 + k - 1, 0), big_n - 1)
    slope_ci = (float(slopes[lo_idx]), float(slopes[hi_idx]))
    intercept = float(np.median(y - slope * x))
    intercept_ci = (float(np.median(y - slope_ci[1] * x)), float(np.median(y - slope_ci[0] * x)))
    return RegressionResult("passing_bablok", float(slope), intercept, slope_ci, intercept_ci,
                            n, alpha, {"pairs_used": int(big_n), "k_shift": k})


def fit_line(x, y, method: str, *, alpha: float = 0.05, **options: Any) -> RegressionResult:
    """Dispatch to :func:`ols`, :func:`deming` or :func:`passing_bablok` by name."""
    if method == "ols":
        return ols(x, y, alpha=alpha)
    if method == "deming":
        return deming(x, y, alpha=alpha, **options)
    if method == "passing_bablok":
        return passing_bablok(x, y, alpha=alpha)
    raise ValueError(f"unknown regression {method!r}; use one of {REGRESSIONS}")


def correlation(x, y, *, alpha: float = 0.05) -> CorrelationResult:
    """Pearson r with a Fisher-z confidence interval, and Spearman ρ (scipy.stats)."""
    x, y = _xy(x, y)
    pr = st.pearsonr(x, y)
    r = float(pr.statistic)
    if x.size > 3 and abs(r) < 1:
        z = math.atanh(r)
        half = st.norm.ppf(1 - alpha / 2) / math.sqrt(x.size - 3)
        ci = (math.tanh(z - half), math.tanh(z + half))
    else:
        ci = (r, r)
    sr = st.spearmanr(x, y)
    return CorrelationResult(r, (float(ci[0]), float(ci[1])), float(pr.pvalue),
                             float(sr.statistic), float(sr.pvalue), int(x.size))


def bland_altman(a, b, *, alpha: float = 0.05) -> AgreementResult:
    """Bland-Altman agreement: bias ``mean(a − b)`` and limits ``bias ± 1.96·SD``.

    Confidence intervals of the bias (t) and of the limits (approximate standard error
    ``√(3 SD²/n)``; Bland JM, Altman DG, Lancet 1986;327:307 and Stat Methods Med Res
    1999;8:135).
    """
    a, b = _xy(a, b)
    d = a - b
    n = d.size
    bias = float(d.mean())
    sd = float(d.std(ddof=1))
    z = st.norm.ppf(1 - alpha / 2)
    t = st.t.ppf(1 - alpha / 2, n - 1)
    se_bias = sd / math.sqrt(n)
    se_loa = math.sqrt(3.0 * sd * sd / n)
    z, t = float(z), float(t)
    lo, hi = bias - z * sd, bias + z * sd
    return AgreementResult(bias, (bias - t * se_bias, bias + t * se_bias), sd, lo, hi,
                           (lo - t * se_loa, lo + t * se_loa), (hi - t * se_loa, hi + t * se_loa),
                           n)


def leave_one_out(x, y, method: str = "ols", **options: Any) -> dict[str, Any]:
    """Leave-one-out prediction of ``y`` from ``x`` with the regression ``method``.

    Returns
    -------
    dict
        ``predictions`` (n,), ``rmse``, ``mae``, ``bias`` (mean of prediction − y) in the units
        of ``y``.
    """
    x, y = _xy(x, y)
    n = x.size
    if n < 4:
        raise ValueError("leave-one-out needs at least 4 pairs")
    keep = ~np.eye(n, dtype=bool)
    pred = np.empty(n)
    for i in range(n):  # one fit per subject (n is a cohort size, not a voxel count)
        line = fit_line(x[keep[i]], y[keep[i]], method, **options)
        pred[i] = line.predict(x[i])
    err = pred - y
    return {"predictions": pred, "rmse": float(np.sqrt(np.mean(err**2))),
            "mae": float(np.mean(np.abs(err))), "bias": float(err.mean())}
