"""Longitudinal monitoring: consecutive-exam pairs, the seed study's TP/TN/FP/FN classification
and metrics, correlations and ANCOVA of regression lines between therapy groups.

The examination table is built here so that its consecutive pairs fall into TP 41, TN 29,
FP 12, FN 10 (the seed study's counts; its reported sensitivity 0.804, specificity 0.707,
PPV 0.774 and accuracy 0.76 follow), spread over patients with 2 to 6 exams and three
therapies (26 phlebotomy, 44 chelation and 22 no-therapy pairs, as in the seed).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats as st

from qsmliver.analysis.monitor import (
    RealChange,
    ancova_lines,
    build_pairs,
    classify_pairs,
    diagnostic_metrics,
    monitor,
    read_exams,
    write_monitor_outputs,
)
from qsmliver.errors import QSMConfigError, QSMInputError

#: therapy -> category counts (sums: TP 41, TN 29, FP 12, FN 10; 26 / 44 / 22 pairs)
PER_THERAPY = {
    "phlebotomy": {"TP": 20, "TN": 3, "FP": 1, "FN": 2},
    "chelation": {"TP": 15, "TN": 14, "FP": 9, "FN": 6},
    "none": {"TP": 6, "TN": 12, "FP": 2, "FN": 2},
}


def seed_like_exams(seed: int = 0) -> pd.DataFrame:
    """Exam rows whose consecutive pairs have the categories of PER_THERAPY."""
    rng = np.random.default_rng(seed)
    pairs = [(cat, therapy) for therapy, counts in PER_THERAPY.items()
             for cat, n in counts.items() for _ in range(n)]
    order = rng.permutation(len(pairs))
    pairs = [pairs[i] for i in order]
    rows, patient, start = [], 0, 0
    while start < len(pairs):
        n_pairs = int(rng.integers(1, 6))
        chunk = pairs[start:start + n_pairs]
        start += n_pairs
        patient += 1
        r2s, ferritin = rng.uniform(400, 900), rng.uniform(800, 3000)
        date = pd.Timestamp("2010-01-01") + pd.Timedelta(days=int(rng.integers(0, 400)))
        rows.append({"patient": f"P{patient:02d}", "date": date.date().isoformat(),
                     "R2star": r2s, "Ferritin": ferritin, "Therapy": ""})
        for category, therapy in chunk:
            r2s_down = category in ("TP", "FP")
            fer_down = category in ("TP", "FN")
            r2s += -rng.uniform(25, 60) if r2s_down else rng.uniform(-15, 30)
            ferritin *= 1 + (-rng.uniform(18, 40) if fer_down else rng.uniform(-10, 25)) / 100
            date += pd.Timedelta(days=int(rng.integers(60, 300)))
            rows.append({"patient": f"P{patient:02d}", "date": date.date().isoformat(),
                         "R2star": r2s, "Ferritin": ferritin, "Therapy": therapy})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def report():
    return monitor(seed_like_exams())


def test_seed_counts_and_metrics(report):
    m = report.metrics["all"]
    assert (m["TP"], m["TN"], m["FP"], m["FN"], m["n"]) == (41, 29, 12, 10, 92)
    assert round(m["sensitivity"]["value"], 3) == 0.804
    assert round(m["specificity"]["value"], 3) == 0.707
    assert round(m["ppv"]["value"], 3) == 0.774
    assert round(m["accuracy"]["value"], 3) == 0.761
    assert m["discordant"] == 22
    low, high = m["sensitivity"]["ci_low"], m["sensitivity"]["ci_high"]
    assert low < 0.804 < high and high - low < 0.25


def test_per_therapy_counts(report):
    for therapy, counts in PER_THERAPY.items():
        m = report.metrics[therapy]
        assert {k: m[k] for k in ("TP", "TN", "FP", "FN")} == counts, therapy
    table = report.summary_table().set_index("group")
    assert table.loc["chelation", "pairs"] == 44 and table.loc["none", "FP"] == 2
    assert table.loc["all", "accuracy"] == pytest.approx(70 / 92)


def test_pairs_are_consecutive_and_changes_signed(report):
    exams = report.exams
    pairs = report.pairs
    assert len(pairs) == len(exams) - exams["patient_id"].nunique()
    first = pairs.iloc[0]
    patient_exams = exams[exams["patient_id"] == first["patient_id"]]
    assert first["r2star_per_s_change"] == pytest.approx(
        patient_exams["r2star_per_s"].iloc[1] - patient_exams["r2star_per_s"].iloc[0])
    assert first["ferritin_ng_per_ml_change_percent"] == pytest.approx(
        100 * (patient_exams["ferritin_ng_per_ml"].iloc[1]
               / patient_exams["ferritin_ng_per_ml"].iloc[0] - 1))
    assert (pairs["interval_days"] > 0).all()
    assert set(pairs["concordance"]) == {"concordant_decrease", "concordant_stable_or_increase",
                                         "discordant_imaging_decrease",
                                         "discordant_ferritin_decrease"}


def test_correlations_match_scipy(report):
    pairs = report.pairs
    x = pairs["ferritin_ng_per_ml_change_percent"].to_numpy()
    y = pairs["r2star_per_s_change_percent"].to_numpy()
    got = report.correlations["percent"]["all"]["r2star_per_s"]
    assert got["pearson_r"] == pytest.approx(st.pearsonr(x, y).statistic)
    assert got["spearman_rho"] == pytest.approx(st.spearmanr(x, y).statistic)
    assert got["pearson_r"] > 0.3  # built so that both tend to fall together
    assert set(report.correlations["absolute"]) == {"all", "chelation", "none", "phlebotomy"}


def test_threshold_boundaries_and_configuration():
    exams = pd.DataFrame({
        "patient_id": ["a"] * 4,
        "date": ["2020-01-01", "2020-02-01", "2020-03-01", "2020-04-01"],
        "r2star_per_s": [300.0, 280.0, 260.1, 260.1],
        "chi_ppm": [1.0, 0.9, 0.85, 0.85],
        "ferritin_ng_per_ml": [1000.0, 860.0, 740.0, 740.0],
    })
    pairs = build_pairs(read_exams(exams))
    # R2* -20 (exactly the threshold) is a real decrease; -19.9 is not; ferritin -14 % is,
    # -13.95 % is not
    out = classify_pairs(pairs)
    assert out["imaging_decrease"].tolist() == [True, False, False]
    assert out["ferritin_decrease"].tolist() == [True, False, False]
    assert out["category"].tolist() == ["TP", "TN", "TN"]
    out = classify_pairs(pairs, thresholds={"r2star": "5%", "ferritin": 10})
    assert out["imaging_decrease"].tolist() == [True, True, False]
    assert out["ferritin_decrease"].tolist() == [True, True, False]
    with pytest.raises(QSMConfigError, match="chi_ppm"):
        classify_pairs(pairs, imaging="chi_ppm")
    out = classify_pairs(pairs, imaging="chi_ppm", thresholds={"chi": "0.08", "ferritin": "10%"})
    assert out["category"].tolist() == ["TP", "FN", "TN"]
    assert RealChange.parse("14%") == RealChange(14.0, "percent")


def test_baseline_selection_and_therapy_side():
    exams = read_exams(pd.DataFrame({
        "patient_id": ["a", "a", "b", "b"],
        "date": ["2020-01-01", "2020-06-01", "2020-01-01", "2020-06-01"],
        "r2star": [150.0, 100.0, 60.0, 40.0],
        "ferritin": [900.0, 500.0, 300.0, 200.0],
        "therapy": ["chelation", "phlebotomy", "none", "none"],
    }))
    assert len(build_pairs(exams)) == 2
    kept = build_pairs(exams, baseline_min={"r2star_per_s": 70.0})
    assert kept["patient_id"].tolist() == ["a"]
    assert kept["therapy"].tolist() == ["phlebotomy"]
    assert build_pairs(exams, therapy_on="earlier")["therapy"].tolist()[0] == "chelation"


def test_ancova_detects_an_intercept_difference_and_not_a_null_one():
    rng = np.random.default_rng(11)

    def draw(offset):
        x = rng.uniform(-50, 30, 60)
        g = np.repeat(["chelation", "phlebotomy"], 30)
        y = 0.5 * x + np.where(g == "phlebotomy", offset, 0.0) + rng.normal(0, 8, 60)
        return pd.DataFrame({"x": x, "y": y, "therapy": g})

    shifted = ancova_lines(draw(10.0), x="x", y="y")
    pair = shifted["pairwise"][0]
    assert pair["groups"] == ["chelation", "phlebotomy"]
    assert pair["intercept_p"] < 0.05 and pair["intercept_difference"] == pytest.approx(10, abs=5)
    assert shifted["overall"]["intercepts"]["p"] < 0.05
    assert shifted["groups"]["chelation"]["slope"] == pytest.approx(0.5, abs=0.2)
    false_positive = [ancova_lines(draw(0.0), x="x", y="y")["pairwise"][0]["intercept_p"] < 0.05
                      for _ in range(40)]
    assert sum(false_positive) <= 6  # nominal 5 % -> about 2 of 40
    slope_fp = [ancova_lines(draw(0.0), x="x", y="y")["overall"]["slopes"]["p"] < 0.05
                for _ in range(20)]
    assert sum(slope_fp) <= 4


def test_diagnostic_metrics_empty_denominators():
    m = diagnostic_metrics(["TN", "TN", ""])
    assert m["n"] == 2 and np.isnan(m["sensitivity"]["value"]) and np.isnan(m["ppv"]["value"])
    assert m["specificity"]["value"] == 1.0


def test_read_exams_errors_name_file_and_row(tmp_path):
    good = "patient_id,date,r2star_per_s,ferritin_ng_per_ml\np1,2020-01-01,100,500\n"
    bad_date = tmp_path / "bad_date.csv"
    bad_date.write_text(good + "p1,01/32/2020,90,400\n")
    with pytest.raises(QSMInputError, match=r"bad_date\.csv: date: row 3"):
        read_exams(bad_date)
    bad_value = tmp_path / "bad_value.csv"
    bad_value.write_text(good + "p1,2020-03-01,abc,400\n")
    with pytest.raises(QSMInputError, match=r"bad_value\.csv: r2star_per_s: row 3"):
        read_exams(bad_value)
    no_ferritin = tmp_path / "no_ferritin.csv"
    no_ferritin.write_text("patient_id,date,r2star_per_s\np1,2020-01-01,100\n")
    with pytest.raises(QSMInputError, match="ferritin"):
        read_exams(no_ferritin)
    twice = tmp_path / "twice.csv"
    twice.write_text(good + "p1,2020-01-01,90,400\n")
    with pytest.raises(QSMInputError, match="two exams"):
        read_exams(twice)
    single = tmp_path / "single.csv"
    single.write_text(good)
    with pytest.raises(QSMInputError, match="two or more"):
        monitor(single)


def test_outputs_written(report, tmp_path):
    written = write_monitor_outputs(report, tmp_path)
    names = {p.name for p in written}
    assert {"pairs.tsv", "summary.tsv", "summary.json", "scatter_change_percent.png",
            "scatter_change_absolute.png", "time_courses.png",
            "bland_altman_change_percent.png"} <= names
    for path in written:
        assert path.stat().st_size > 100
    summary = pd.read_csv(tmp_path / "summary.tsv", sep="\t")
    assert summary.loc[summary["group"] == "all", "TP"].item() == 41
    import json

    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["metrics"]["all"]["FN"] == 10
    assert data["thresholds"]["ferritin_ng_per_ml"]["text"] == "14%"
