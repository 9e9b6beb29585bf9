"""Deep grey matter group comparison on a simulated cohort.

Each subject is the brain phantom's label map (48³, 4 mm voxels) with its own DGM χ values:
healthy-control values from the phantom, an age slope, a per-subject offset, MS patients with
higher basal ganglia χ (+0.02 ppm caudate, putamen, pallidum) and lower thalamic χ (−0.015 ppm),
as reported for MS cohorts, and voxel noise. ROI statistics come from ``roi_statistics`` and the
hemispheres are pooled; ``compare_groups`` must recover each effect with its sign, and flag no
effect where there is none (red nucleus, dentate).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qsmliver.analysis import roi_statistics
from qsmliver.analysis.groups import (
    compare_groups,
    hedges_g,
    pool_hemispheres,
    reference_values,
    reference_z_scores,
)
from qsmliver.errors import QSMInputError
from qsmliver.simulate.brain import brain_phantom

EFFECT_PPM = {"caudate": 0.02, "putamen": 0.02, "globus_pallidus": 0.02, "thalamus": -0.015,
              "red_nucleus": 0.0, "dentate_nucleus": 0.0}
DGM = tuple(EFFECT_PPM)


@pytest.fixture(scope="module")
def cohort():
    ph = brain_phantom(shape=(48, 48, 48), voxel_size_mm=(4.0, 4.0, 4.0), snr=None,
                       texture_ppm=0.0)
    rng = np.random.default_rng(3)
    names = ph.label_names
    dgm_labels = {v: n.rsplit("_", 1)[0] for v, n in names.items()
                  if n.rsplit("_", 1)[0] in DGM}
    keep = np.isin(ph.labels, list(dgm_labels))
    labels = np.where(keep, ph.labels, 0)
    base = ph.truth["chi_ppm"]
    rows, participants = [], []
    for i in range(48):  # 24 controls, 24 patients
        group = "HC" if i < 24 else "MS"
        age = float(rng.uniform(25, 60))
        sex = "F" if rng.random() < 0.6 else "M"
        lut = np.zeros(max(names) + 1)
        for value, structure in dgm_labels.items():
            effect = EFFECT_PPM[structure] if group == "MS" else 0.0
            lut[value] = 0.0008 * (age - 40) + effect + rng.normal(0, 0.008)
        chi = base + lut[ph.labels] + rng.normal(0, 0.02, ph.labels.shape)
        table = roi_statistics({"chi": chi}, labels, {v: names[v] for v in dgm_labels},
                               voxel_size_mm=(4.0, 4.0, 4.0))
        table.insert(0, "subject", f"sub-{i:02d}")
        rows.append(table)
        participants.append({"participant_id": f"sub-{i:02d}", "group": group, "age": age,
                             "sex": sex})
    cohort = pd.concat(rows, ignore_index=True)
    return cohort.merge(pd.DataFrame(participants), left_on="subject",
                        right_on="participant_id")


def test_pool_hemispheres(cohort):
    pooled = pool_hemispheres(cohort)
    assert set(pooled["label_name"]) == set(DGM)
    assert len(pooled) == 48 * len(DGM)
    one = cohort[(cohort["subject"] == "sub-00") & cohort["label_name"].str.startswith("putamen")]
    got = pooled[(pooled["subject"] == "sub-00") & (pooled["label_name"] == "putamen")]
    expected = np.average(one["mean"], weights=one["count"])
    assert got["mean"].item() == pytest.approx(expected)
    assert got["volume_mm3"].item() == pytest.approx(one["volume_mm3"].sum())
    assert got["group"].item() == "HC"


def test_group_comparison_recovers_effects(cohort):
    pooled = pool_hemispheres(cohort)
    result = compare_groups(pooled, covariates=("age", "sex", "volume_mm3"),
                            groups=("HC", "MS")).set_index("roi")
    assert result["covariates_dropped"].str.contains("volume_mm3").all()  # same volume for all
    assert (result["n_reference"] == 24).all() and (result["n_group"] == 24).all()
    for structure, effect in EFFECT_PPM.items():
        row = result.loc[structure]
        if effect != 0:
            assert np.sign(row["adjusted_difference"]) == np.sign(effect), structure
            assert row["ci_low"] < effect < row["ci_high"], structure
            assert row["p_fdr"] < 0.05 and row["significant_fdr"], structure
            assert np.sign(row["hedges_g"]) == np.sign(effect) and abs(row["hedges_g"]) > 1
        else:
            assert not row["significant_fdr"], structure
    assert (result["p_fdr"] >= result["p"] - 1e-12).all()
    assert ((result["partial_eta2"] >= 0) & (result["partial_eta2"] <= 1)).all()


def test_without_covariates_is_a_t_test(cohort):
    from scipy import stats

    pooled = pool_hemispheres(cohort)
    result = compare_groups(pooled, covariates=()).set_index("roi")
    sub = pooled[pooled["label_name"] == "thalamus"]
    t = stats.ttest_ind(sub.loc[sub["group"] == "MS", "mean"], sub.loc[sub["group"] == "HC",
                                                                          "mean"])
    assert result.loc["thalamus", "t"] == pytest.approx(t.statistic)
    assert result.loc["thalamus", "p"] == pytest.approx(t.pvalue)


def test_hedges_g_known_value():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    b = a + 2.0
    s = np.std(a, ddof=1)
    assert hedges_g(a, b) == pytest.approx(2.0 / s * (1 - 3 / (4 * 8 - 9)))


def test_reference_values_and_z_scores(cohort):
    pooled = pool_hemispheres(cohort)
    ref = reference_values(pooled, control="HC")
    assert set(ref["roi"]) == set(DGM) and (ref["n"] == 24).all()
    z = reference_z_scores(pooled, ref)
    ms = pooled["group"] == "MS"
    assert z[ms & (pooled["label_name"] == "putamen")].mean() > 1.0
    assert z[ms & (pooled["label_name"] == "thalamus")].mean() < -1.0


def test_bad_tables(cohort):
    with pytest.raises(QSMInputError, match="missing column"):
        compare_groups(cohort.drop(columns="age"))
    three = cohort.assign(group=np.where(np.arange(len(cohort)) % 3 == 0, "X", cohort["group"]))
    with pytest.raises(QSMInputError, match="exactly two groups"):
        compare_groups(three, covariates=())
    with pytest.raises(QSMInputError, match="not found"):
        compare_groups(cohort, covariates=(), groups=("HC", "PD"))
