"""Method-comparison statistics for calibrations: OLS, Deming, Passing-Bablok, correlation,
Bland-Altman and leave-one-out prediction error (DESIGN section 6).

All functions take 1-D host arrays ``x`` (the measurement, e.g. R2* or χ) and ``y`` (the
reference, e.g. chemical LIC) and return plain dataclasses whose ``to_dict()`` is
JSON-serialisable (an undefined Passing-Bablok confidence limit is ``±inf``, which
:func:`json.dumps` writes as ``Infinity``).

Every estimator is checked in ``tests/test_calibrate_fit.py`` against printed results of an
independent implementation or a paper: OLS and Deming (jackknife CI) against the Analyse-it
reference values distributed with the R package mcr (data sets TD15, TD41) and mcr's
creatinine example; Passing-Bablok against the "calanas" reference values in mcr's tests,
the creatinine example, and Sen's (1968) data as used by the R package deming;
Bland-Altman against Bland & Altman (Lancet 1986) and Giavarina (Biochem Med 2015).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import scipy.stats as st

from qsmliver.errors import QSMConfigError, QSMInputError

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
        raise QSMInputError(f"x and y differ in length ({x.size} vs {y.size})")
    if x.size < 3:
        raise QSMInputError(f"need at least 3 pairs, got {x.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise QSMInputError("x and y must be finite")
    return x, y


def ols(x, y, *, alpha: float = 0.05) -> RegressionResult:
    """Ordinary least squares of ``y`` on ``x`` with t(n − 2) confidence intervals.

    Uses :func:`scipy.stats.linregress` (slope and intercept standard errors). The intervals
    are the textbook ``b ± t(1 − α/2, n − 2)·SE(b)``; they reproduce the analytical
    ``LinReg`` intervals of the R package mcr (and the Analyse-it reference values it is
    tested against) to a relative 1e-7 (``tests/test_calibrate_fit.py``).
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
        int(x.size), alpha, {"residual_sd": resid_sd, "r_squared": float(fit.rvalue**2),
                             "slope_se": float(fit.stderr),
                             "intercept_se": float(fit.intercept_stderr)})


def _deming_slope(sxx, syy, sxy, ratio: float):
    """Deming slope from (arrays of) centred second moments; vectorised."""
    sxx, syy, sxy = (np.asarray(v, dtype=np.float64) for v in (sxx, syy, sxy))
    d = syy - ratio * sxx
    safe = np.where(sxy == 0, 1.0, sxy)
    slope = (d + np.sqrt(d * d + 4.0 * ratio * sxy * sxy)) / (2.0 * safe)
    # sxy = 0: the fitted line is horizontal (or vertical when y varies more than x).
    return np.where(sxy == 0, np.where(d < 0, 0.0, np.inf), slope)


def _deming_point(x: np.ndarray, y: np.ndarray, ratio: float) -> tuple[float, float]:
    mx, my = x.mean(), y.mean()
    sxx = np.mean((x - mx) ** 2)
    syy = np.mean((y - my) ** 2)
    sxy = np.mean((x - mx) * (y - my))
    slope = float(_deming_slope(sxx, syy, sxy, ratio))
    return slope, float(my - slope * mx)


def _deming_leave_one_out(x: np.ndarray, y: np.ndarray, ratio: float):
    """Slopes and intercepts of the ``n`` leave-one-out Deming fits, without a loop.

    The moments of each subsample follow from the full-sample sums of the centred data
    (centring first keeps the subtraction well conditioned).
    """
    n = x.size
    xc, yc = x - x.mean(), y - y.mean()
    mx = -xc / (n - 1)  # mean of the centred data without point i
    my = -yc / (n - 1)
    sxx = (np.sum(xc * xc) - xc * xc) / (n - 1) - mx * mx
    syy = (np.sum(yc * yc) - yc * yc) / (n - 1) - my * my
    sxy = (np.sum(xc * yc) - xc * yc) / (n - 1) - mx * my
    slope = _deming_slope(sxx, syy, sxy, ratio)
    intercept = (my + y.mean()) - slope * (mx + x.mean())
    return slope, intercept


def deming(x, y, *, error_ratio: float = 1.0, alpha: float = 0.05) -> RegressionResult:
    """Deming regression (errors in both variables) with jackknife confidence intervals.

    Parameters
    ----------
    x, y : (n,) array_like
        Paired measurements (``x`` the comparison method, ``y`` the test method / reference
        LIC); ``n >= 3``.
    error_ratio : float
        ``λ = Var(error in y) / Var(error in x)``; 1 gives orthogonal regression, λ → ∞ the
        OLS regression of ``y`` on ``x``. Note: the R package mcr and NCSS define their
        ``error.ratio`` the other way round (``Var(error in x) / Var(error in y)``), so
        mcr's ``error.ratio = r`` is ``error_ratio = 1/r`` here.
    alpha : float
        1 − confidence level.

    Returns
    -------
    RegressionResult
        ``extra`` holds ``slope_se`` and ``intercept_se`` (jackknife standard errors),
        ``error_ratio`` and ``ci_method = "jackknife"``.

    Raises
    ------
    QSMInputError
        Fewer than 3 pairs, unequal lengths or non-finite values.
    QSMConfigError
        ``error_ratio <= 0``.

    Notes
    -----
    Slope ``b = (s_yy − λ s_xx + √((s_yy − λ s_xx)² + 4λ s_xy²)) / (2 s_xy)``, intercept
    ``ȳ − b x̄`` (Deming 1943; Cornbleet & Gochman, Clin Chem 1979;25:432; Linnet, Stat Med
    1990;9:1463). Confidence intervals follow Linnet's jackknife (Clin Chem 1993;39:424):
    with the leave-one-out estimates ``b₋ᵢ`` the pseudo-values are ``n·b − (n − 1)·b₋ᵢ``,
    ``SE = sd(pseudo-values)/√n`` and the interval is ``b ± t(1 − α/2, n − 2)·SE``, centred
    on the full-sample estimate. This is the definition of the R package mcr
    (``mc.calcLinnetCI``) and reproduces the Analyse-it reference values shipped with mcr
    (test data sets TD15 and TD41) to a relative 4e-7 (the references' own precision is
    1e-6). An earlier version of this
    function centred the interval on the mean of the pseudo-values and used t(n − 1).
    Analytical (non-jackknife) Deming intervals, e.g. mcr's ``method.ci = "analytical"``
    (Strike 1991), are a different estimator and are not offered.
    """
    x, y = _xy(x, y)
    if not (math.isfinite(error_ratio) and error_ratio > 0):
        raise QSMConfigError(f"error_ratio must be a positive number, got {error_ratio}")
    n = x.size
    slope, intercept = _deming_point(x, y, error_ratio)
    loo_slope, loo_intercept = _deming_leave_one_out(x, y, error_ratio)
    t = st.t.ppf(1 - alpha / 2, n - 2)
    cis, ses = [], []
    for full, loo in ((slope, loo_slope), (intercept, loo_intercept)):
        pseudo = n * full - (n - 1) * loo
        se = float(np.std(pseudo, ddof=1) / math.sqrt(n))
        ses.append(se)
        cis.append((float(full - t * se), float(full + t * se)))
    return RegressionResult("deming", slope, intercept, cis[0], cis[1], n, alpha,
                            {"error_ratio": float(error_ratio), "ci_method": "jackknife",
                             "slope_se": ses[0], "intercept_se": ses[1]})


#: Relative size below which a difference of two measurements counts as a tie (as the
#: ``calcDiff`` helper of the R package mcr, EPS = 1e-12); it absorbs the rounding of
#: decimal data such as 1.39 − 1.31 vs 1.44 − 1.36 in binary floating point.
_TIE_RTOL = 1e-12


def _pairwise_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The Passing-Bablok set of pairwise slopes, sorted (ties and S = −1 removed)."""
    i, j = np.triu_indices(x.size, k=1)
    dx = x[j] - x[i]
    dy = y[j] - y[i]
    scale_x = np.maximum(np.abs(x[i]), np.abs(x[j]))
    scale_y = np.maximum(np.abs(y[i]), np.abs(y[j]))
    dx = np.where(np.abs(dx) <= _TIE_RTOL * scale_x, 0.0, dx)
    dy = np.where(np.abs(dy) <= _TIE_RTOL * scale_y, 0.0, dy)
    keep = (dx != 0) | (dy != 0)  # identical pairs carry no information on the slope
    # S = −1 exactly (dy = −dx) is discarded "for reasons of symmetry"; tested on dx + dy
    # with a tolerance so that decimal data give the same answer as exact arithmetic.
    keep &= ~((dx != 0) & (np.abs(dx + dy) <= _TIE_RTOL * (scale_x + scale_y)))
    dx, dy = dx[keep], dy[keep]
    slopes = np.divide(dy, dx, out=np.copysign(np.inf, dy), where=dx != 0)
    return np.sort(slopes)


def passing_bablok(x, y, *, alpha: float = 0.05) -> RegressionResult:
    """Passing-Bablok regression with its rank-based confidence intervals.

    Parameters
    ----------
    x, y : (n,) array_like
        Paired measurements of two methods with a positive relation (``n >= 3``).
    alpha : float
        1 − confidence level.

    Returns
    -------
    RegressionResult
        ``extra`` holds ``pairs_used`` (N), ``k_shift`` (K) and ``ci_rule``. A confidence
        limit whose rank falls outside ``1..N`` (very small or uncorrelated samples) is
        returned as ``−inf`` / ``+inf``.

    Raises
    ------
    QSMInputError
        Fewer than 3 pairs, all points identical, or a negative relation between ``x`` and
        ``y`` (more than half of the pairwise slopes below −1), which Passing-Bablok (1983)
        does not cover.

    Notes
    -----
    Passing H, Bablok W, J Clin Chem Clin Biochem 1983;21:709: slopes
    ``S_ij = (y_j − y_i)/(x_j − x_i)`` of all pairs ``i < j``; pairs with both differences 0
    and pairs with ``S_ij = −1`` are dropped; ``x_i = x_j`` gives ``±∞`` by the sign of
    ``y_j − y_i`` (after the K-shift below, +∞ and −∞ are neighbours, so the sign matters only
    if the median falls between them). With ``N`` the
    number of slopes kept and ``K`` the number below −1, the slope is the ``K``-shifted
    median of the sorted slopes (the mean of the two middle ones for even ``N``) and the
    intercept ``median(y − b·x)``. Confidence interval of the slope:
    ``C = z(1 − α/2)·√(n(n − 1)(2n + 5)/18)``, ``M1 = round((N − C)/2)``,
    ``M2 = N − M1 + 1``, ``[S_(M1+K), S_(M2+K)]`` (1-based ranks); of the intercept,
    ``[median(y − b_U·x), median(y − b_L·x)]``. Differences smaller than ``1e-12`` times the
    values are treated as ties, and ``S_ij = −1`` is tested as ``|Δx + Δy| ≤ 1e-12·scale``,
    so that decimal data give the exact-arithmetic result whatever their unit. (Compared with
    ``−1`` exactly in floating point, 7 of the 5764 slopes of mcr's creatinine example that
    are exactly −1 survive and the slope moves by 1e-4, differently for every unit.)

    Other implementations differ in small, documented ways (see the tests):
    the R package ``deming`` (``pbreg``) and the SAS/IML program of Wicklin (2022) use the
    same ranks as here; the R package mcr (and the "calanas" reference values it is tested
    against) rounds ``C`` first and takes the confidence limits half or one rank further
    inwards, averages the two middle slopes as angles for even ``N``, and compares slopes
    with −1 without a tolerance. Point estimates agree with mcr to 14 digits when no pair
    has ``S_ij = −1`` and ``N`` is odd.
    """
    x, y = _xy(x, y)
    n = x.size
    slopes = _pairwise_slopes(x, y)
    big_n = slopes.size
    if big_n == 0:
        raise QSMInputError("Passing-Bablok regression needs at least two distinct points")
    k = int(np.sum(slopes < -1.0))
    half = (big_n + 1) // 2 + k  # 1-based rank of the (upper) shifted median
    if half + (0 if big_n % 2 else 1) > big_n:
        raise QSMInputError(
            f"Passing-Bablok regression assumes a positive relation between x and y; "
            f"{k} of {big_n} pairwise slopes are below -1")
    if big_n % 2:
        slope = float(slopes[half - 1])
    else:
        slope = float(0.5 * (slopes[big_n // 2 + k - 1] + slopes[big_n // 2 + k]))
    c = float(st.norm.ppf(1 - alpha / 2)) * math.sqrt(n * (n - 1) * (2 * n + 5) / 18.0)
    m1 = math.floor((big_n - c) / 2.0 + 0.5)
    m2 = big_n - m1 + 1
    lo_rank, hi_rank = m1 + k, m2 + k
    b_lo = float(slopes[lo_rank - 1]) if 1 <= lo_rank <= big_n else -math.inf
    b_hi = float(slopes[hi_rank - 1]) if 1 <= hi_rank <= big_n else math.inf
    intercept = float(np.median(y - slope * x))
    a_lo = float(np.median(y - b_hi * x)) if math.isfinite(b_hi) else -math.inf
    a_hi = float(np.median(y - b_lo * x)) if math.isfinite(b_lo) else math.inf
    return RegressionResult("passing_bablok", slope, intercept, (b_lo, b_hi), (a_lo, a_hi),
                            n, alpha, {"pairs_used": int(big_n), "k_shift": k,
                                       "ci_rule": "Passing & Bablok 1983: S(M1+K), S(M2+K)"})


def fit_line(x, y, method: str, *, alpha: float = 0.05, **options: Any) -> RegressionResult:
    """Dispatch to :func:`ols`, :func:`deming` or :func:`passing_bablok` by name."""
    if method == "ols":
        return ols(x, y, alpha=alpha)
    if method == "deming":
        return deming(x, y, alpha=alpha, **options)
    if method == "passing_bablok":
        return passing_bablok(x, y, alpha=alpha)
    raise QSMConfigError(f"unknown regression {method!r}; use one of {REGRESSIONS}")


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
    """Bland-Altman agreement: bias ``mean(a − b)`` and limits ``bias ± z·SD``.

    Parameters
    ----------
    a, b : (n,) array_like
        Paired measurements by the two methods; differences are ``a − b``.
    alpha : float
        1 − confidence level; also sets ``z = z(1 − α/2)`` (1.96 for the usual 95 % limits).

    Returns
    -------
    AgreementResult
        Bias with its t(n − 1) interval, SD of the differences (n − 1 denominator), the
        limits of agreement and their approximate t(n − 1) intervals with standard error
        ``√(3·SD²/n)``.

    Notes
    -----
    Bland JM, Altman DG, Lancet 1986;327:307 (who rounded ``z`` to 2) and Stat Methods Med
    Res 1999;8:135. Checked against the worked examples of Bland & Altman 1986 (peak-flow
    data) and Giavarina, Biochem Med 2015;25:141 in ``tests/test_calibrate_fit.py``.
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
        raise QSMInputError("leave-one-out needs at least 4 pairs")
    keep = ~np.eye(n, dtype=bool)
    pred = np.empty(n)
    for i in range(n):  # one fit per subject (n is a cohort size, not a voxel count)
        line = fit_line(x[keep[i]], y[keep[i]], method, **options)
        pred[i] = line.predict(x[i])
    err = pred - y
    return {"predictions": pred, "rmse": float(np.sqrt(np.mean(err**2))),
            "mae": float(np.mean(np.abs(err))), "bias": float(err.mean())}
