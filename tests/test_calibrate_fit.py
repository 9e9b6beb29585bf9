"""Fitting your own calibration: the statistics against published worked examples, table input,
outputs.

Every printed number used below is cited where it is used. Sources (all public):

- [mcr] R package mcr (Roche Diagnostics; CRAN), files
  ``inst/unitTests/TestCaseCollection/MC_TestCase_AnaIT_TD15.xml`` and ``..._TD41.xml``
  (input data with "AnalyzeIT references" for LinReg/Deming and "PaBa Calanas references"),
  ``inst/unitTests/runit.mcDeming.R``, ``runit.mcCalcCI.R`` and ``runit.mcPaBa.R`` (creatinine
  example and the calanas Passing-Bablok values).
- [creatinine] mcr data set ``creatinine`` (serum vs plasma creatinine, mg/dL, 110 patients,
  2 plasma values missing), as listed in the SAS program of R. Wicklin, "Passing-Bablok
  regression in SAS", The DO Loop blog, 14 Feb 2022
  (https://blogs.sas.com/content/iml/2022/02/14/passing-bablok-regression-sas.html), which
  also quotes mcr's ``printSummary`` of the Passing-Bablok fit.
- [deming-pkg] R package deming (T. Therneau), tests of ``pbreg``: Sen's (1968) data and a
  six-point example.
- [BA1986] Bland JM, Altman DG. Lancet 1986;327:307-310, peak expiratory flow data (Table 1,
  first reading of each meter, as listed by J. M. Bland at
  https://www-users.york.ac.uk/~mb55/meas/repeated.htm); printed results as quoted in the
  test ``tests/testthat/test-pefr.r`` of the R package blandr (D. Datta).
- [Giavarina2015] Giavarina D. Understanding Bland Altman analysis. Biochem Med 2015;25:141;
  printed results as quoted in ``tests/testthat/test-giavarina.r`` of blandr.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
import scipy.stats as st

from qsmliver.calibrate import (
    bland_altman,
    calibrate_table,
    convert_to_lic,
    correlation,
    deming,
    leave_one_out,
    load_calibration,
    ols,
    passing_bablok,
    read_calibration_table,
)
from qsmliver.calibrate.stats import _pairwise_slopes
from qsmliver.errors import QSMConfigError, QSMInputError

# ---------------------------------------------------------------------------------- data sets
# [creatinine]: (serum, plasma) in mg/dL; "." = missing (dropped, leaving n = 108 as in mcr).
CREATININE = """
0.82 0.79  1.83 1.62  1.39 1.36  0.81 1.3   1.72 1.88  3.23 3.35  1.23 1.06  1.37 1.34
1.72 1.56  0.96 0.94  0.76 0.69  1.15 1.16  0.95 0.71  1 0.83     1.52 1.44  1.56 1.26
2.45 2.36  1.85 1.9   0.89 0.95  0.82 0.77  1.01 0.82  0.96 0.88  3.38 3.42  1.31 1.15
1.1 0.96   1.26 1.12  1.15 1.02  1.2 1.29   1.01 0.87  1.33 1.13  0.87 0.82  1.66 1.33
1.41 1.14  1.08 0.93  1.17 1.09  0.82 .     1.77 1.89  1.33 1.57  1.23 1.29  1.21 1.13
1.2 1.11   1.49 1.61  0.89 0.79  1.09 1.19  1.03 0.96  1.07 1.25  0.89 0.87  1.39 1.36
0.96 0.86  1.06 1.03  1.17 0.86  0.9 0.8    1.39 1.22  0.91 0.86  2.28 2.25  0.9 0.87
0.83 .     1.34 1.3   1.32 1.04  1.02 0.92  1.04 1.01  1.27 1.21  1.08 1.11  1.1 1.21
1.39 1.54  1.07 0.99  0.79 0.79  1.02 1.06  0.94 1.02  1.99 2.15  0.7 0.56   0.84 1.01
0.66 0.59  1.1 1.17   0.9 0.82   2.06 2.09  1.31 1.44  1.03 1.22  1.61 1.77  1.52 1.6
1.11 1.13  0.85 1.06  1.2 1.38   1.09 1.24  1.27 1.29  2.06 2.08  1.21 1.31  0.77 0.82
1.06 1.28  1.02 1.15  1 1.04     1.47 1.51  0.97 1.13  1.7 1.84   1.78 1.94  0.93 1.32
0.92 1.36  1.59 1.88  0.68 0.73  0.7 0.78   1.08 1.01  0.83 0.9   1.17 1.3   0.98 0.96
0.77 0.61  0.91 1.27  1.1 1.05   0.8 1.12   0.85 0.72  0.82 0.87
"""

# [mcr] MC_TestCase_AnaIT_TD15.xml and ..._TD41.xml, <X> and <Y>.
TD15_X = """18.654599109456,17.0610823229594,37.8076135618173,51.1413961380522,103.985667589592,
34.8605133072495,35.1146708951621,16.005996343635,68.5890100912778,62.1699013684068,
18.1641040703209,94.2563842860796,31.67278631354,18.8059773112482,67.9347403613216,
18.260239156489,87.1550332248675,98.5843421029197,20.3747255514258,4.20199417418543,
27.7662087802102,16.6797331091928,52.3335230459024,1.25970439645986,2.55285163008995,
71.1422300479687,99.342890258164,40.6747911609727,82.5924169862313,64.7062991090824,
1.46968233573658,83.5389530283147,19.8368624090347,44.339918470983,19.2879672940529,
86.5484515948081,79.8461255550168,66.1164680506251,32.8785828616434,85.634465208222,
15.772867025856,102.866851788539,16.4442973704484,23.0916021823352,83.3011761592876,
9.47357732139885,15.4574423263928,67.0394769874472,32.7239965276836,71.7361088013058"""
TD15_Y = """15.9116325401596,17.9423397346645,58.1755698848695,49.0779434653576,113.758268975683,
35.5525894416901,39.4088027819502,15.0167183931276,65.8450151148211,62.6667874119841,
15.8020862675435,83.9418317622942,33.5524291118479,18.5775089262923,73.872592767028,
21.600509295785,93.4269960011703,89.8278248717022,20.130360709819,4.94910345310486,
23.1566064984898,17.336339530418,56.2280624424048,1.70969794990576,3.40128933880261,
87.5197563754811,67.3466761237754,35.6882873995953,90.4041198524321,62.2603160684644,
1.52718831259026,84.5412183739216,19.0003036715583,51.0624306952549,12.0291575952956,
55.3970074896586,96.7628055558332,69.6940969840453,29.1380990869214,85.4597993067675,
18.1508502210932,92.1385811560549,17.012175857013,23.0242126162252,95.7510267835212,
8.70125548126123,13.4955271740672,45.8284262464427,31.1175741976669,69.5490311988868"""
TD41_X = """51.2645749891018,25.057888623163,87.7627598051843,62.7082431751683,80.1505333459012,
4.62656604009068,33.8310555651344,32.0639233133885,55.2077551040875,88.035676807363,
26.4910934056359,46.2676105006161,67.5309426729014,69.4845641448515,99.6168230345125,
29.8740565635394,76.4074905899151,40.4037427291051,102.582022432525,77.2420615775276,
54.4091160177792,31.6670196474807,35.3688444029188,48.4596331809692,27.2766177138551,
16.8936814075242,21.978946351695,31.8737570958866,65.2811331882764,11.4235216747994,
26.5759954950747,89.7483619905396,70.8540190812346,81.722195686426,88.8717635815042,
69.8842397333777,41.3339139273995,46.7715712147959,7.2758706475883,107.885815963472,
72.476537675172,5.47829692782881,54.7122861461908,100.774725860614,58.9921395982599,
26.0127119387814,52.4842022010358,20.4930187951634,19.2251154457486,15.6062233212609"""
TD41_Y = """57.5184652931192,20.8590706998877,108.803321969406,61.9186963049216,66.3660888378279,
4.45211496523264,32.5230480583973,35.6080901524917,53.8918711450082,60.4588280634825,
26.36826855427,41.3684710045443,64.2210938093771,56.4507675239752,104.375984642575,
27.1349756417984,94.57022726837,29.4173054011996,65.8469193441376,72.8808353078608,
52.3451209927057,29.9746067384427,41.473958110454,42.6744860392878,36.4560529958421,
16.3614420035519,25.0786009186081,23.9554024584609,71.1179574648198,10.0486986665957,
19.0607414061787,71.7842138052182,126.559037624235,94.0881361451604,87.2145942516959,
89.5887499202462,48.5784251203412,35.6846235173564,7.12184193955352,100.323182519431,
69.23017359012,3.82672858010298,49.4382345176691,77.5738341281733,52.4666442933717,
14.6409084616032,49.8976536701488,21.1546025964904,12.5229666712546,13.2198613541858"""

# [BA1986] PEFR (l/min), first reading with the large Wright meter and with the mini meter.
PEFR_WRIGHT = np.array([494, 395, 516, 434, 476, 557, 413, 442, 650, 433, 417, 656, 267, 478,
                        178, 423, 427.0])
PEFR_MINI = np.array([512, 430, 520, 428, 500, 600, 364, 380, 658, 445, 432, 626, 260, 477,
                      259, 350, 451.0])

# [Giavarina2015] Table 1 (hypothetical measurements by methods A and B). The table itself
# could not be read here; these 30 pairs reproduce all nine printed summary statistics that
# could be checked (test below), which a mis-copied value would not.
GIAVARINA_A = np.array([1, 5, 10, 20, 50, 40, 50, 60, 70, 80, 90, 100, 150, 200, 250, 300, 350,
                        400, 450, 500, 550, 600, 650, 700, 750, 800, 850, 900, 950, 1000.0])
GIAVARINA_B = np.array([8, 16, 30, 24, 39, 54, 40, 68, 72, 62, 122, 80, 181, 259, 275, 380, 320,
                        434, 479, 587, 626, 648, 738, 766, 793, 851, 871, 957, 1001, 960.0])


def _floats(text: str) -> np.ndarray:
    return np.array(text.replace("\n", "").split(","), dtype=np.float64)


def _creatinine(as_text: bool = False):
    tokens = CREATININE.split()
    pairs = [(a, b) for a, b in zip(tokens[0::2], tokens[1::2], strict=True)
             if "." not in (a, b)]
    if as_text:
        return pairs
    data = np.array(pairs, dtype=np.float64)
    return data[:, 0], data[:, 1]


TD = {"TD15": (_floats(TD15_X), _floats(TD15_Y)), "TD41": (_floats(TD41_X), _floats(TD41_Y))}

# [mcr] reference results (intercept, intercept LCI, UCI, slope, slope LCI, UCI). Deming keys
# are mcr's error.ratio = Var(error x)/Var(error y), i.e. 1/error_ratio here.
ANALYSE_IT = {
    ("TD15", "LinReg"): (1.52907247609414, -3.23879503525852, 6.29693998744679,
                         0.955092812261344, 0.870115981048239, 1.04006964347445),
    ("TD15", 1.0): (-0.505729735057073, -3.06557290114323, 2.05411343102908,
                    0.998922574014433, 0.904225546852836, 1.09361960117603),
    ("TD15", 1.21): (-0.708594035342613, -3.2419770759952, 1.82478900530997,
                     1.00329228321811, 0.909809514645456, 1.09677505179076),
    ("TD41", "LinReg"): (0.789929488909156, -7.0905682492326, 8.67042722705091,
                         0.953322292873791, 0.818569943653376, 1.08807464209421),
    ("TD41", 1.0): (-5.04645256155241, -12.4604580034375, 2.36755288033263,
                    1.06738449814271, 0.8601602492072, 1.27460874707822),
    ("TD41", 1.21): (-5.62594848494648, -13.3819872218693, 2.13009025197638,
                     1.07870976478824, 0.86553760575191, 1.29188192382458),
}
# [mcr] runit.mcPaBa.R, "values are copied and pasted from calanas".
CALANAS_PABA = {
    "TD15": (-0.639752984809869, -2.3330808182894, 0.840973102642057,
             1.02058852149448, 0.95848878631593, 1.09232009780764),
    "TD41": (-1.74861851923587, -8.32583620193478, 0.773029866408987,
             0.996354386947289, 0.92273624446357, 1.12979173135459),
}


def _assert_line(fit, ref, *, point_rel, ci_rel):
    b0, b0_lo, b0_hi, b1, b1_lo, b1_hi = ref
    assert fit.intercept == pytest.approx(b0, rel=point_rel)
    assert fit.slope == pytest.approx(b1, rel=point_rel)
    assert fit.intercept_ci == pytest.approx((b0_lo, b0_hi), rel=ci_rel)
    assert fit.slope_ci == pytest.approx((b1_lo, b1_hi), rel=ci_rel)


# ---------------------------------------------------------------------------------------- OLS
@pytest.mark.parametrize("dataset", sorted(TD))
def test_ols_reproduces_analyse_it_references(dataset):
    """[mcr] TD15/TD41 ``LinReg`` (analytical CI): points to 1e-12, limits to 1e-6 (the
    precision of the reference file, ``DefaultEquivalencePrecision``)."""
    _assert_line(ols(*TD[dataset]), ANALYSE_IT[dataset, "LinReg"], point_rel=1e-12,
                 ci_rel=1e-6)


def test_ols_reproduces_mcr_creatinine():
    """[mcr] runit.mcCalcCI.R: creatinine (n = 108) LinReg b0 = 0.01504697 (SE 0.04339864),
    b1 = 0.99397124 (SE 0.03331363), CIs (-0.07099505, 0.101089), (0.92792373, 1.060019)."""
    fit = ols(*_creatinine())
    assert fit.n == 108
    assert fit.intercept == pytest.approx(0.01504697, abs=1e-8)
    assert fit.slope == pytest.approx(0.99397124, abs=1e-8)
    assert fit.extra["intercept_se"] == pytest.approx(0.04339864, abs=1e-8)
    assert fit.extra["slope_se"] == pytest.approx(0.03331363, abs=1e-8)
    assert fit.intercept_ci == pytest.approx((-0.07099505, 0.101089), abs=1e-6)
    assert fit.slope_ci == pytest.approx((0.92792373, 1.060019), abs=1e-6)


# ------------------------------------------------------------------------------------- Deming
@pytest.mark.parametrize("mcr_ratio", [1.0, 1.21])
@pytest.mark.parametrize("dataset", sorted(TD))
def test_deming_reproduces_analyse_it_jackknife_references(dataset, mcr_ratio):
    """[mcr] TD15/TD41 ``Deming`` with ``CIMethod = jackknife`` (Linnet's jackknife: interval
    centred on the estimate, t with n - 2 df). mcr's error.ratio 1.21 is 1/1.21 here.

    Like is compared with like: these are jackknife intervals; mcr's "analytical" Deming
    intervals are a different estimator and are not reproduced."""
    x, y = TD[dataset]
    fit = deming(x, y, error_ratio=1.0 / mcr_ratio)
    _assert_line(fit, ANALYSE_IT[dataset, mcr_ratio], point_rel=1e-12, ci_rel=1e-6)
    # the previous definition (centre = mean of the pseudo-values, t(n - 1)) misses the
    # references by far more than their precision, so the test can tell the two apart
    n = x.size
    loo = np.array([deming(np.delete(x, i), np.delete(y, i), error_ratio=1.0 / mcr_ratio).slope
                    for i in range(n)])
    pseudo = n * fit.slope - (n - 1) * loo
    half = st.t.ppf(0.975, n - 1) * pseudo.std(ddof=1) / math.sqrt(n)
    old_lo = pseudo.mean() - half
    assert abs(old_lo / ANALYSE_IT[dataset, mcr_ratio][4] - 1) > 1e-5
    # the closed-form leave-one-out moments equal an explicit refit without point i
    assert fit.extra["slope_se"] == pytest.approx(pseudo.std(ddof=1) / math.sqrt(n),
                                                  rel=1e-9)


def test_deming_reproduces_mcr_creatinine():
    """[mcr] runit.mcDeming.R: creatinine, error.ratio = 1: b0 = -0.05891341,
    b1 = 1.054539."""
    fit = deming(*_creatinine(), error_ratio=1.0)
    assert fit.intercept == pytest.approx(-0.05891341, abs=1e-8)
    assert fit.slope == pytest.approx(1.054539, abs=1e-6)
    assert fit.slope_ci[0] < fit.slope < fit.slope_ci[1]


def test_deming_equals_orthogonal_regression():
    """λ = 1 Deming is the major axis of the scatter: the leading principal component."""
    x, y = TD["TD41"]
    fit = deming(x, y, error_ratio=1.0)
    centred = np.stack([x - x.mean(), y - y.mean()])
    _, _, vt = np.linalg.svd(centred.T, full_matrices=False)
    slope = vt[0, 1] / vt[0, 0]
    assert fit.slope == pytest.approx(slope, rel=1e-10)
    assert fit.intercept == pytest.approx(y.mean() - slope * x.mean(), rel=1e-9)


def test_deming_limits_are_ols_when_x_is_exact():
    """λ → ∞ (no error in x) gives the OLS slope of y on x."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 10, 40)
    y = 2.0 + 0.7 * x + rng.normal(0, 0.5, 40)
    assert deming(x, y, error_ratio=1e9).slope == pytest.approx(ols(x, y).slope, rel=1e-6)
    with pytest.raises(QSMConfigError, match="error_ratio"):
        deming(x, y, error_ratio=0.0)


# ----------------------------------------------------------------------------- Passing-Bablok
def _passing_bablok_exact(pairs):
    """Oracle straight from Passing & Bablok (1983), in exact rational arithmetic on the
    decimal strings: returns (slope, intercept, N, K)."""
    xs = [Fraction(a) for a, _ in pairs]
    ys = [Fraction(b) for _, b in pairs]
    finite, up, down = [], 0, 0
    for i in range(len(xs)):
        for j in range(i + 1, len(xs)):
            dx, dy = xs[j] - xs[i], ys[j] - ys[i]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:  # +inf or -inf by the sign of dy
                up, down = up + (dy > 0), down + (dy < 0)
            elif dy / dx != -1:
                finite.append(dy / dx)
    below = sorted(s for s in finite if s < -1)
    # the K-shifted order: slopes above -1, +inf, -inf, then the slopes below -1
    ranked = sorted(s for s in finite if s > -1) + [None] * (up + down) + below
    n_kept = len(ranked)
    if n_kept % 2:
        slope = ranked[(n_kept + 1) // 2 - 1]
    else:
        slope = (ranked[n_kept // 2 - 1] + ranked[n_kept // 2]) / 2
    resid = sorted(y - slope * x for x, y in zip(xs, ys, strict=True))
    m = len(resid)
    intercept = resid[m // 2] if m % 2 else (resid[m // 2 - 1] + resid[m // 2]) / 2
    return slope, intercept, n_kept, down + len(below)


def _passing_bablok_naive_float(x, y):
    """The same rule with floating-point slopes compared to -1 exactly (as mcr, and as this
    module did before): the slope, N and K."""
    i, j = np.triu_indices(x.size, k=1)
    dx, dy = x[j] - x[i], y[j] - y[i]
    keep = (dx != 0) | (dy != 0)
    s = np.divide(dy[keep], dx[keep], out=np.copysign(np.inf, dy[keep]), where=dx[keep] != 0)
    s = np.sort(s[s != -1.0])
    big_n, k = s.size, int(np.sum(s < -1.0))
    if big_n % 2:
        return s[(big_n + 1) // 2 + k - 1], big_n, k
    return 0.5 * (s[big_n // 2 + k - 1] + s[big_n // 2 + k]), big_n, k


@pytest.mark.parametrize("dataset", sorted(TD))
def test_passing_bablok_point_estimates_reproduce_calanas(dataset):
    """[mcr] runit.mcPaBa.R, calanas reference values for TD15/TD41 (N = 1225 odd, no ties):
    slope and intercept agree to 1e-12."""
    fit = passing_bablok(*TD[dataset])
    ref = CALANAS_PABA[dataset]
    assert fit.intercept == pytest.approx(ref[0], rel=1e-12)
    assert fit.slope == pytest.approx(ref[3], rel=1e-12)


@pytest.mark.parametrize("dataset", sorted(TD))
def test_passing_bablok_ci_ranks_and_the_mcr_convention(dataset):
    """Our limits are ``S_(M1+K)`` and ``S_(M2+K)`` with ``M1 = round((N - C)/2)``,
    ``M2 = N - M1 + 1`` (Passing & Bablok 1983; also the R package deming and Wicklin's SAS
    program, see the Sen test). [mcr]/calanas print the next slope inwards on each side
    (mcr rounds C first and takes ``floor((N - round(C) + 1)/2)``): its printed limits are
    exactly ``S_(M1+K+1)`` and ``S_(M2+K-1)``, and its intercept limits follow from them."""
    x, y = TD[dataset]
    fit = passing_bablok(x, y)
    slopes = _pairwise_slopes(x, y)
    big_n, k = slopes.size, fit.extra["k_shift"]
    assert big_n == fit.extra["pairs_used"] == 50 * 49 // 2
    c = st.norm.ppf(0.975) * math.sqrt(50 * 49 * 105 / 18)
    m1 = round((big_n - c) / 2)
    m2 = big_n - m1 + 1
    assert fit.slope_ci == (slopes[m1 + k - 1], slopes[m2 + k - 1])
    assert fit.intercept_ci == pytest.approx(
        (np.median(y - fit.slope_ci[1] * x), np.median(y - fit.slope_ci[0] * x)), rel=1e-14)
    ref = CALANAS_PABA[dataset]
    assert slopes[m1 + k] == pytest.approx(ref[4], rel=1e-12)
    assert slopes[m2 + k - 2] == pytest.approx(ref[5], rel=1e-12)
    assert np.median(y - slopes[m2 + k - 2] * x) == pytest.approx(ref[1], rel=1e-12)
    assert np.median(y - slopes[m1 + k] * x) == pytest.approx(ref[2], rel=1e-12)
    assert fit.slope_ci[0] < ref[4] < fit.slope < ref[5] < fit.slope_ci[1]


def test_passing_bablok_reproduces_sen_1968_and_deming_package():
    """[deming-pkg] Sen (JASA 1968;63:1379) data, monotone so that PB = Theil-Sen: slope 4,
    intercept 6, and at 93 % confidence the interval (26/7, 35/8); and the six-point example
    x = 1..6: slope 1.05, intercept 1/8."""
    t = np.array([1, 2, 3, 4, 10, 12, 18.0])
    y = np.array([9, 15, 19, 20, 45, 55, 78.0])
    fit = passing_bablok(t, y, alpha=0.07)
    assert fit.slope == 4.0 and fit.intercept == 6.0
    assert fit.slope_ci == pytest.approx((26 / 7, 35 / 8), rel=1e-15)
    fit = passing_bablok(np.arange(1, 7.0), np.array([2, 1.2, 4.1, 3.5, 6.3, 3]))
    assert fit.slope == pytest.approx(1.05, rel=1e-14)
    assert fit.intercept == pytest.approx(1 / 8, rel=1e-12)


def test_passing_bablok_creatinine_ties_exact_arithmetic_and_mcr():
    """[creatinine] mcr prints slope 1.0880089 (CI 1.0000000-1.173005), intercept -0.1171729
    (CI -0.2001149 to -0.020000) (Wicklin's program, quoting ``printSummary``).

    1. The transcription is right: the rule evaluated like mcr (floating-point slopes compared
       with -1 exactly) reproduces mcr's point estimates to the printed 7 digits.
    2. Seven pairs of these 2-decimal data have a slope of exactly -1, which binary floating
       point turns into -1 ± 1e-15 (three of them were even counted in K). Passing-Bablok
       drops S = -1, so in exact arithmetic the slope is 99/91 = 1.0879121 (N = 5757,
       K = 459). We return the exact-arithmetic answer; mcr's 1.0880089 differs by 1e-4."""
    x, y = _creatinine()
    naive_slope, naive_n, naive_k = _passing_bablok_naive_float(x, y)
    assert naive_slope == pytest.approx(1.0880089, abs=5e-8)
    assert np.median(y - naive_slope * x) == pytest.approx(-0.1171729, abs=5e-8)
    slope, intercept, big_n, k = _passing_bablok_exact(_creatinine(as_text=True))
    assert (naive_n - big_n, naive_k - k) == (7, 4)
    assert slope == Fraction(99, 91)
    fit = passing_bablok(x, y)
    assert (fit.extra["pairs_used"], fit.extra["k_shift"]) == (big_n, k)
    assert fit.slope == pytest.approx(float(slope), rel=1e-14)
    assert fit.intercept == pytest.approx(float(intercept), abs=1e-14)
    # the lower slope limit (and the upper intercept limit made from it) coincide with mcr's
    # printed ones. mcr's upper slope limit is, in its own (float) list of slopes, the mean
    # angle of ranks (N + round(C))/2 + K and the next (the convention tested above); from it
    # follows its lower intercept limit
    assert fit.slope_ci[0] == pytest.approx(1.0, abs=5e-8)
    assert fit.intercept_ci[1] == pytest.approx(-0.02, abs=5e-8)
    i, j = np.triu_indices(x.size, k=1)
    dx, dy = x[j] - x[i], y[j] - y[i]
    keep = (dx != 0) | (dy != 0)
    float_slopes = np.divide(dy[keep], dx[keep], out=np.copysign(np.inf, dy[keep]),
                             where=dx[keep] != 0)
    float_slopes = np.sort(float_slopes[float_slopes != -1.0])
    c = round(st.norm.ppf(0.975) * math.sqrt(108 * 107 * 221 / 18))
    rank = (naive_n + c) // 2 + naive_k
    upper_mcr = math.tan(np.mean(np.arctan(float_slopes[rank - 1:rank + 1])))
    assert upper_mcr == pytest.approx(1.173005, abs=5e-7)
    assert np.median(y - upper_mcr * x) == pytest.approx(-0.2001149, abs=5e-8)


@pytest.mark.parametrize("factor", [0.1, 3.0, 10.0, 88.4])
def test_passing_bablok_does_not_depend_on_the_units(factor):
    """Scaling x and y together (e.g. creatinine mg/dL -> µmol/L, x 88.4) leaves every
    pairwise slope unchanged, so the fit must not move. The float rule without a tie
    tolerance gives 1.0874-1.0882 depending on the factor; ours stays at 99/91."""
    x, y = _creatinine()
    fit = passing_bablok(factor * x, factor * y)
    assert fit.slope == pytest.approx(99 / 91, rel=1e-13)
    assert fit.intercept / factor == pytest.approx(passing_bablok(x, y).intercept, rel=1e-12)
    naive = [_passing_bablok_naive_float(f * x, f * y)[0] for f in (1.0, 3.0, 10.0, 88.4)]
    assert np.ptp(naive) > 5e-4


def test_passing_bablok_matches_exact_oracle_on_giavarina():
    """Integer data with a vertical pair (A = 50 twice) and one S = -1 pair."""
    pairs = [(str(int(a)), str(int(b))) for a, b in zip(GIAVARINA_A, GIAVARINA_B, strict=True)]
    slope, intercept, big_n, k = _passing_bablok_exact(pairs)
    fit = passing_bablok(GIAVARINA_A, GIAVARINA_B)
    assert fit.slope == pytest.approx(float(slope), rel=1e-14)
    assert fit.intercept == pytest.approx(float(intercept), rel=1e-14)
    assert fit.extra["pairs_used"] == big_n == 434 and fit.extra["k_shift"] == k


def test_passing_bablok_refuses_what_it_cannot_fit():
    x = np.arange(1.0, 9.0)
    with pytest.raises(QSMInputError, match="positive relation"):
        passing_bablok(x, 10.0 - 2.0 * x)
    with pytest.raises(QSMInputError, match="distinct"):
        passing_bablok(np.ones(4), np.ones(4))
    with pytest.raises(QSMInputError, match="at least 3"):
        passing_bablok([1.0, 2.0], [1.0, 2.0])
    # three points: the confidence ranks fall outside 1..N, the limits are infinite
    fit = passing_bablok([1.0, 2.0, 3.0], [1.1, 2.0, 3.2])
    assert fit.slope_ci == (-math.inf, math.inf)
    assert fit.intercept_ci == (-math.inf, math.inf)


@pytest.mark.parametrize("method", ["ols", "deming", "passing_bablok"])
def test_known_slope_recovered_within_ci(method):
    rng = np.random.default_rng(11)
    truth_slope, truth_intercept = 0.0254, 0.2
    hits = 0
    for _ in range(20):
        r2s = rng.uniform(40, 1000, 60)
        lic = truth_intercept + truth_slope * r2s + rng.normal(0, 0.8, 60)
        fit = {"ols": ols, "deming": lambda a, b: deming(a, b, error_ratio=1e6),
               "passing_bablok": passing_bablok}[method](r2s, lic)
        hits += fit.slope_ci[0] <= truth_slope <= fit.slope_ci[1]
        assert abs(fit.slope / truth_slope - 1) < 0.15
    assert hits >= 16  # nominal 95 % coverage; 16/20 allows for chance


# ------------------------------------------------------------------------------ Bland-Altman
def test_bland_altman_reproduces_bland_altman_1986():
    """[BA1986] large minus mini meter: mean difference -2.1 l/min, SD 38.8, SE of the mean
    9.4, its 95 % CI -22.0 to 17.8; limits d ± 2s = -79.7 and 75.5 (the paper rounds 1.96 to
    2 and works from the rounded d and s); SE of a limit √(3s²/n) = 16.3 with t(16) = 2.12."""
    ba = bland_altman(PEFR_WRIGHT, PEFR_MINI)
    assert round(ba.bias, 1) == -2.1 and round(ba.sd, 1) == 38.8
    assert round(ba.sd / math.sqrt(ba.n), 1) == 9.4
    assert (round(ba.bias_ci[0], 1), round(ba.bias_ci[1], 1)) == (-22.0, 17.8)
    d, s = round(ba.bias, 1), round(ba.sd, 1)
    assert (round(d - 2 * s, 1), round(d + 2 * s, 1)) == (-79.7, 75.5)
    t = st.t.ppf(0.975, ba.n - 1)
    assert round(t, 2) == 2.12
    se_limit = (ba.loa_upper_ci[1] - ba.loa_upper_ci[0]) / (2 * t)
    assert round(se_limit, 1) == 16.3
    assert ba.loa_lower == pytest.approx(ba.bias - 1.959964 * ba.sd, rel=1e-6)


def test_bland_altman_reproduces_giavarina_2015():
    """[Giavarina2015] A - B: mean difference -27.17, SD 34.81, limits -95.39 and 41.05, SE of
    the mean 6.35, its 95 % CI -40.16 to -14.17, SE of a limit 11.01, CI of the lower limit
    -117.90 to -72.88 and lower end of the CI of the upper limit 18.54. (The printed upper end
    65.36 is not reproduced: the interval is ±t·SE = ±22.51 about 41.05, i.e. 63.57, so 65.36
    appears to be a misprint; blandr's test leaves it out too.)"""
    ba = bland_altman(GIAVARINA_A, GIAVARINA_B)
    assert round(ba.bias, 2) == -27.17 and round(ba.sd, 2) == 34.81
    assert (round(ba.loa_lower, 2), round(ba.loa_upper, 2)) == (-95.39, 41.05)
    assert round(ba.sd / math.sqrt(ba.n), 2) == 6.35
    assert (round(ba.bias_ci[0], 2), round(ba.bias_ci[1], 2)) == (-40.16, -14.17)
    assert round(math.sqrt(3 * ba.sd**2 / ba.n), 2) == 11.01
    # the paper works these out from rounded intermediates (limit ± 2.045 x 11.01), so they
    # agree to one unit in the last printed digit
    assert ba.loa_lower_ci == pytest.approx((-117.90, -72.88), abs=0.01)
    assert ba.loa_upper_ci[0] == pytest.approx(18.54, abs=0.01)
    assert ba.loa_upper_ci[1] == pytest.approx(63.56, abs=0.01)
    swapped = bland_altman(GIAVARINA_B, GIAVARINA_A)
    assert swapped.bias == pytest.approx(-ba.bias) and swapped.loa_upper == pytest.approx(
        -ba.loa_lower)


# ------------------------------------------------------------------------- correlation, LOO
def test_correlation_and_leave_one_out():
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, 30)
    y = 3 * x + rng.normal(0, 0.1, 30)
    corr = correlation(x, y)
    assert 0.9 < corr.pearson_r < 1 and corr.pearson_ci[0] < corr.pearson_r < corr.pearson_ci[1]
    assert corr.spearman_rho > 0.9
    loo = leave_one_out(x, y, "ols")
    assert loo["rmse"] == pytest.approx(0.1, rel=0.35)
    assert loo["predictions"].shape == (30,)
    with pytest.raises(QSMInputError, match="at least 4"):
        leave_one_out(x[:3], y[:3])


# ------------------------------------------------------------------------ table input/output
def _write_table(path, rng, n=24):
    lic = rng.uniform(0.5, 20.0, n)
    r2s = (lic - 0.202) / 0.0254 + rng.normal(0, 20, n)
    chi = -0.1 + 0.15 * lic + rng.normal(0, 0.15, n)
    groups = ["chelation", "phlebotomy", "none"]
    lines = ["subject,r2star,chi,lic,field_strength_t,group"]
    for i in range(n):
        lines.append(f"s{i:02d},{r2s[i]:.3f},{chi[i]:.4f},{lic[i]:.3f},1.5,{groups[i % 3]}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_calibrate_table_writes_calibration_summary_and_plots(tmp_path, rng):
    table = _write_table(tmp_path / "cohort.csv", rng)
    report, files = calibrate_table(table, tmp_path / "out", method="deming")
    assert report["method"] == "deming"
    names = {f.name for f in files}
    assert {"calibration.json", "summary.csv", "summary.json", "calibration_r2star_1.5T.png",
            "calibration_r2star_1.5T.svg", "calibration_chi_1.5T.png"} <= names
    assert all(f.is_file() and f.stat().st_size > 0 for f in files)
    data = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert [c["name"] for c in data["calibrations"]] == ["fitted_r2star_1.5t", "fitted_chi_1.5t"]
    assert data["comparisons"][0]["first"] == "r2star"
    cal = load_calibration(tmp_path / "out" / "calibration.json", "fitted_r2star_1.5t")
    assert cal.coefficients["b"] == pytest.approx(0.0254, rel=0.1)
    assert convert_to_lic(400.0, cal, b0_t=1.5) == pytest.approx(10.4, rel=0.1)
    chi_cal = load_calibration(tmp_path / "out" / "calibration.json", "fitted_chi_1.5t")
    assert 1 / chi_cal.coefficients["b"] == pytest.approx(0.15, rel=0.15)
    summary = (tmp_path / "out" / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("measure,field_strength_t,regression")
    assert len(summary) == 1 + 2 * 3
    with pytest.raises(Exception, match="exists"):
        calibrate_table(table, tmp_path / "out")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("subject,r2star\ns1,100\ns2,200\ns3,300\n", "missing column 'lic'"),
        ("subject,lic\ns1,1\ns2,2\ns3,3\n", "no measurement column"),
        ("subject,r2star,lic\ns1,100,1\ns2,abc,2\ns3,300,3\n", "row 3.*'abc'"),
        ("subject,r2star,lic\ns1,100,1\ns2,200,\ns3,300,3\n", "row 3"),
        ("subject,r2star,lic\ns1,100,1\ns2,200,2\n", "at least 3"),
        ("subject,r2star,lic\ns1,100,1\ns2,inf,2\ns3,300,3\n", "not a finite number"),
    ],
)
def test_bad_tables_name_the_file_and_the_column(tmp_path, content, match):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(QSMInputError, match=match) as info:
        read_calibration_table(path)
    assert "bad.csv" in str(info.value)
    if "row" in match:
        assert "r2star" in str(info.value) or "lic" in str(info.value)
