"""Fitting your own calibration: Deming, Passing-Bablok, Bland-Altman, table input, outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

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
from qsmliver.errors import QSMInputError

# Giavarina D. Understanding Bland Altman analysis. Biochem Med (Zagreb) 2015;25:141-151,
# Table 1 (hypothetical paired measurements by method A and method B).
GIAVARINA_A = np.array([1, 5, 10, 20, 50, 40, 50, 60, 70, 80, 90, 100, 150, 200, 250, 300, 350,
                        400, 450, 500, 550, 600, 650, 700, 750, 800, 850, 900, 950, 1000.0])
GIAVARINA_B = np.array([8, 16, 30, 24, 39, 54, 40, 68, 72, 62, 122, 80, 181, 259, 275, 380, 320,
                        434, 479, 587, 626, 648, 738, 766, 793, 851, 871, 957, 1001, 960.0])


def test_bland_altman_reproduces_giavarina_2015():
    """Giavarina 2015 reports mean difference (B − A) 27.2 and limits −41.0 to 95.4."""
    ba = bland_altman(GIAVARINA_B, GIAVARINA_A)
    assert ba.bias == pytest.approx(27.2, abs=0.05)
    assert ba.loa_lower == pytest.approx(-41.0, abs=0.1)
    assert ba.loa_upper == pytest.approx(95.4, abs=0.1)
    assert ba.bias_ci[0] < ba.bias < ba.bias_ci[1]


def test_deming_equals_orthogonal_regression_on_giavarina():
    """λ = 1 Deming is the major axis of the scatter: the leading principal component."""
    fit = deming(GIAVARINA_A, GIAVARINA_B, error_ratio=1.0)
    centred = np.stack([GIAVARINA_A - GIAVARINA_A.mean(), GIAVARINA_B - GIAVARINA_B.mean()])
    _, _, vt = np.linalg.svd(centred.T, full_matrices=False)
    axis = vt[0]
    slope = axis[1] / axis[0]
    assert fit.slope == pytest.approx(slope, rel=1e-10)
    assert fit.intercept == pytest.approx(GIAVARINA_B.mean() - slope * GIAVARINA_A.mean())
    assert fit.slope == pytest.approx(1.0462, abs=1e-4)
    assert fit.slope_ci[0] < fit.slope < fit.slope_ci[1]


def test_deming_limits_are_ols_when_x_is_exact():
    """λ → ∞ (no error in x) gives the OLS slope of y on x."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 10, 40)
    y = 2.0 + 0.7 * x + rng.normal(0, 0.5, 40)
    assert deming(x, y, error_ratio=1e9).slope == pytest.approx(ols(x, y).slope, rel=1e-6)


def _passing_bablok_by_definition(x, y):
    """Slow oracle written straight from Passing & Bablok (1983), with Python loops."""
    slopes = []
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = x[j] - x[i], y[j] - y[i]
            if dx == 0 and dy == 0:
                continue
            s = dy / dx if dx != 0 else np.copysign(np.inf, dy)
            if s != -1:
                slopes.append(s)
    slopes.sort()
    n, k = len(slopes), sum(s < -1 for s in slopes)
    b = slopes[(n + 1) // 2 + k - 1] if n % 2 else 0.5 * (slopes[n // 2 + k - 1]
                                                           + slopes[n // 2 + k])
    return b, float(np.median(y - b * x))


def test_passing_bablok_on_giavarina_matches_its_definition():
    fit = passing_bablok(GIAVARINA_A, GIAVARINA_B)
    slope, intercept = _passing_bablok_by_definition(GIAVARINA_A, GIAVARINA_B)
    assert fit.slope == pytest.approx(slope) and fit.intercept == pytest.approx(intercept)
    assert fit.slope == pytest.approx(1.0553, abs=1e-4)
    assert fit.slope_ci[0] < fit.slope < fit.slope_ci[1]
    assert fit.extra["pairs_used"] == 434  # 435 pairs less the one with S = −1 (ties at x=50)


def test_passing_bablok_small_hand_example():
    """x = 1..5, y = 2x except y(3) = 7: slopes {2,3.5?..}; the median slope is 2."""
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    y = np.array([2.0, 4.0, 7.0, 8.0, 10.0])
    # pairwise slopes: 2, 2.5, 2, 2, 3, 2, 2, 1, 1.5, 2 -> sorted median of 10 = 2
    fit = passing_bablok(x, y)
    assert fit.slope == pytest.approx(2.0)
    assert fit.intercept == pytest.approx(0.0)


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
