"""Automatic liver ROIs on the abdomen phantom with a simulated portal-vein-like vessel.

Data: the phantom's truth R2* (1/s) and χ (ppm) maps plus Gaussian noise (R2* σ = 5 1/s,
χ σ = 0.02 ppm, as a fitted map would carry), on a 128 x 104 x 8 grid (3 x 3 x 24 mm voxels, so
that a 1.1 cm² ROI holds about 13 voxels). The liver segmentation given to the placement
includes the vessel, as a real one would: the vessel must be found from the maps.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from qsmliver.analysis.liver_roi import liver_outliers, liver_roi_statistics, place_liver_rois
from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.simulate.abdomen import ABDOMEN_LABELS, VESSEL_LABEL, abdomen_phantom

SIGMA_R2S = 5.0
SIGMA_CHI = 0.02


@pytest.fixture(scope="module")
def case():
    ph = abdomen_phantom(shape=(128, 104, 8), snr=None, hepatic_vessel=True, lic_mg_per_g=3.0,
                         liver_pdff_percent=8.0)
    rng = np.random.default_rng(7)
    r2s = ph.truth["r2star_per_s"] + rng.normal(0.0, SIGMA_R2S, ph.labels.shape)
    chi = ph.truth["chi_ppm"] + rng.normal(0.0, SIGMA_CHI, ph.labels.shape)
    return ph, {"r2star": r2s, "chi": chi}


def test_phantom_vessel_option(case):
    ph, _ = case
    vessel = ph.masks["vessel"]
    assert vessel.sum() > 50
    assert ph.label_names[VESSEL_LABEL] == "vessel" and VESSEL_LABEL not in ABDOMEN_LABELS
    assert np.array_equal(vessel, ph.labels == VESSEL_LABEL)
    assert not (vessel & ph.masks["liver"]).any()  # cut out of the liver
    # the vessel lies inside the liver: every vessel voxel touches liver in-plane
    near = ndi.binary_dilation(ph.masks["liver"], iterations=3)
    assert near[vessel].all()
    assert np.allclose(ph.truth["r2star_per_s"][vessel], 20.0)
    assert np.allclose(ph.truth["pdff_percent"][vessel], 0.0)
    assert np.allclose(ph.truth["chi_ppm"][vessel], 0.34)


def test_rois_inside_liver_avoid_vessel_and_recover_truth(case):
    ph, maps = case
    liver = ph.masks["liver"]
    vessel = ph.masks["vessel"]
    segmentation = liver | vessel
    rois = place_liver_rois(segmentation, ph.gre.affine, maps=maps)
    assert rois.lobes == ["right", "right", "left"]
    assert rois.slice_reason == "vessel"
    assert rois.slice_index in set(np.nonzero(vessel)[2])  # the portal-vein level
    assert rois.area_mm2 == pytest.approx(110.0, abs=15.0)
    inside = rois.labels > 0
    # three disjoint disks of equal size, entirely in the liver parenchyma
    counts = np.bincount(rois.labels.ravel())[1:]
    assert counts.size == 3 and len(set(counts)) == 1 and counts[0] >= 9
    assert not (inside & ~liver).any()
    # at least 3 mm (one voxel) from any vessel voxel, in-plane
    distance = ndi.distance_transform_edt(~vessel[:, :, rois.slice_index], sampling=(3.0, 3.0))
    assert distance[inside[:, :, rois.slice_index]].min() >= 3.0
    # left lobe ROI in the phantom's left lobe, right lobe ROIs in the right lobe
    for number, lobe in enumerate(rois.lobes, start=1):
        assert ph.masks[f"liver_{lobe}_lobe"][rois.labels == number].all()
    # values: truth within noise (4 standard errors of the pooled mean)
    table = liver_roi_statistics(maps, rois, segmentation, voxel_size_mm=ph.config[
        "voxel_size_mm"])
    pooled = table[table["region"] == "rois_pooled"].set_index("map")
    n = pooled.loc["r2star", "count"]
    truth_r2s = float(np.unique(ph.truth["r2star_per_s"][liver])[0])
    truth_chi = float(np.unique(ph.truth["chi_ppm"][liver])[0])
    assert abs(pooled.loc["r2star", "mean"] - truth_r2s) < 4 * SIGMA_R2S / np.sqrt(n)
    assert abs(pooled.loc["chi", "mean"] - truth_chi) < 4 * SIGMA_CHI / np.sqrt(n)
    # the whole liver including the vessel is biased low in R2*; excluding vessels fixes it
    whole = table[table["region"] == "liver"].set_index("map").loc["r2star", "mean"]
    clean = table[table["region"] == "liver_excluding_vessels"].set_index("map")
    assert truth_r2s - whole > 1.0
    assert abs(clean.loc["r2star", "mean"] - truth_r2s) < 0.5
    # the mean of the ROI means equals the pooled mean (equal-size ROIs), as in the seed study
    per_roi = table[table["region"].str.startswith("roi") & (table["map"] == "r2star")]
    assert per_roi["mean"].mean() == pytest.approx(pooled.loc["r2star", "mean"])


def test_without_maps_an_exclude_mask_is_avoided(case):
    ph, _ = case
    segmentation = ph.masks["liver"] | ph.masks["vessel"]
    k = int(np.nonzero(ph.masks["vessel"])[2][0])
    rois = place_liver_rois(segmentation, ph.gre.affine, exclude=ph.masks["vessel"],
                            slice_index=k, n_rois=4)
    assert rois.slice_reason == "user" and rois.slice_index == k
    assert len(rois.lobes) == 4 and rois.lobes.count("left") == 1
    assert not ((rois.labels > 0) & ph.masks["vessel"]).any()
    assert not ((rois.labels > 0) & ~segmentation).any()


def test_outliers_flag_the_vessel(case):
    ph, maps = case
    segmentation = ph.masks["liver"] | ph.masks["vessel"]
    flagged = liver_outliers({"r2star": maps["r2star"]}, segmentation)
    vessel = ph.masks["vessel"]
    assert flagged[vessel].mean() > 0.95
    assert flagged[ph.masks["liver"]].mean() < 0.01


def test_user_drawn_rois(case):
    ph, maps = case
    drawn = np.zeros(ph.labels.shape, dtype=np.int16)
    drawn[84:88, 50:54, 4] = 1
    drawn[95:99, 45:49, 4] = 2
    assert ph.masks["liver"][drawn > 0].all()
    table = liver_roi_statistics(maps, drawn, ph.masks["liver"], roi_names={1: "a", 2: "b"},
                                 voxel_size_mm=(3, 3, 24))
    assert list(table["region"].unique()) == ["a", "b", "rois_pooled", "liver"]
    assert table.loc[table["region"] == "a", "count"].tolist() == [16, 16]


def test_bad_input(case):
    ph, _ = case
    with pytest.raises(QSMInputError, match="empty"):
        place_liver_rois(np.zeros((8, 8, 4), bool), np.eye(4))
    with pytest.raises(QSMInputError, match="cannot place"):
        place_liver_rois(ph.masks["liver"], ph.gre.affine, area_cm2=400.0, slice_index=4)
    with pytest.raises(QSMConfigError):
        place_liver_rois(ph.masks["liver"], ph.gre.affine, n_rois=0)
    with pytest.raises(QSMInputError, match="chi"):
        place_liver_rois(ph.masks["liver"], ph.gre.affine, maps={"chi": np.ones((3, 3, 3))})
