"""Abdomen phantom and the liver iron links (LIC -> R2*, LIC -> χ)."""

from __future__ import annotations

import cmath
import json
import math

import numpy as np
import pytest

from qsmliver.errors import QSMConfigError
from qsmliver.fatwater import HAMILTON_LIVER, ISMRM_6PEAK
from qsmliver.simulate import iron
from qsmliver.simulate.abdomen import (
    ABDOMEN_LABELS,
    CHI_FAT_PPM,
    DEFAULT_TISSUES,
    abdomen_phantom,
    default_echo_times,
)
from qsmliver.simulate.phantom import TRUTH_UNITS, Phantom

GAMMA = 42.577478e6
SMALL = (48, 40, 20)


@pytest.fixture(scope="module")
def small():
    return abdomen_phantom(shape=SMALL, snr=None, lic_mg_per_g=4.0, liver_pdff_percent=12.0)


# --- iron.py -------------------------------------------------------------------------------

@pytest.mark.parametrize(("lic", "r2s"), [(1.0, 31.417), (5.0, 188.898), (15.0, 582.598)])
def test_wood2005_points(lic, r2s):
    # Wood et al. Blood 2005: LIC = 0.0254 R2* + 0.202 -> R2* = (LIC - 0.202) / 0.0254.
    assert iron.lic_to_r2star(lic, 1.5) == pytest.approx((lic - 0.202) / 0.0254, rel=1e-12)
    assert iron.lic_to_r2star(lic, 1.5) == pytest.approx(r2s, abs=1e-3)
    assert iron.r2star_calibration_name(1.5) == "wood2005"


def test_r2star_round_trip_and_floor():
    lic = np.array([1.0, 2.5, 5.0, 15.0, 30.0])
    for b0 in (1.5, 3.0, 2.0):
        r2s = iron.lic_to_r2star(lic, b0)
        np.testing.assert_allclose(iron.r2star_to_lic(r2s, b0), lic, rtol=1e-12)
    # The forward formulas as published.
    np.testing.assert_allclose(0.0254 * iron.lic_to_r2star(lic, 1.5) + 0.202, lic, rtol=1e-12)
    np.testing.assert_allclose(-0.03 + 0.01349 * iron.lic_to_r2star(lic, 3.0), lic, rtol=1e-12)
    assert iron.r2star_calibration_name(3.0) == "hernando2023_3t"
    assert iron.r2star_calibration_name(2.0) == "wood2005_scaled"
    # Below normal iron the R2* of a normal liver (29 1/s at 1.5 T, scaled with B0).
    assert iron.lic_to_r2star(0.0, 1.5) == pytest.approx(29.0)
    assert iron.lic_to_r2star(0.1, 3.0) == pytest.approx(58.0)
    assert iron.lic_to_r2star(10.0, 3.0) > iron.lic_to_r2star(10.0, 1.5)


def test_lic_to_chi_linear():
    assert iron.lic_to_chi_ppm(0.0) == pytest.approx(iron.DEFAULT_LIVER_CHI_OFFSET_PPM)
    assert iron.lic_to_chi_ppm(4.0) - iron.lic_to_chi_ppm(2.0) == pytest.approx(
        2 * iron.DEFAULT_CHI_SLOPE_PPM_PER_MG_G)
    assert iron.lic_to_chi_ppm(3.0, slope_ppm_per_mg_g=0.2, chi_offset_ppm=0.0) == pytest.approx(
        0.6)


# --- phantom -------------------------------------------------------------------------------

def test_structure_and_every_label_present(small):
    assert isinstance(small, Phantom)
    assert small.gre.shape == SMALL
    assert small.gre.signal.dtype == np.complex64
    assert set(small.truth) == set(TRUTH_UNITS)
    assert small.label_names == ABDOMEN_LABELS
    present = set(np.unique(small.labels).tolist())
    missing = {ABDOMEN_LABELS[k] for k in set(ABDOMEN_LABELS) - present}
    assert not missing, missing
    assert set(DEFAULT_TISSUES) == set(ABDOMEN_LABELS.values())
    for name in ("body", "tissue", "liver", "liver_right_lobe", "liver_left_lobe"):
        assert small.masks[name].any(), name
    assert np.array_equal(small.masks["liver"], small.labels == 10)
    assert not (small.masks["tissue"] & np.isin(small.labels, [0, 5, 6])).any()
    assert (small.masks["tissue"] <= small.masks["body"]).all()
    # Liver on the patient's right (+x in RAS), lungs in the top slices.
    xs = np.nonzero(small.masks["liver"])[0]
    assert xs.mean() > (SMALL[0] - 1) / 2
    zs = np.nonzero(small.labels == 5)[2]
    assert zs.min() > SMALL[2] / 2
    json.dumps(small.config)
    assert small.gre.metadata["Phantom"] == "abdomen"
    assert small.gre.metadata["LIC_mg_per_g"] == 4.0
    # Affine centred on the matrix.
    centre = small.gre.affine @ np.r_[(np.asarray(SMALL) - 1) / 2, 1.0]
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-9)


def test_liver_r2star_and_chi_follow_lic(small):
    liver = small.masks["liver"]
    np.testing.assert_allclose(small.truth["r2star_per_s"][liver], iron.lic_to_r2star(4.0, 1.5))
    np.testing.assert_allclose(small.truth["chi_ppm"][liver],
                               iron.lic_to_chi_ppm(4.0) + 0.12 * CHI_FAT_PPM)
    np.testing.assert_allclose(small.truth["lic_mg_per_g"][liver], 4.0)
    assert (small.truth["lic_mg_per_g"][~liver] == 0).all()
    assert small.truth["chi_ppm"][small.labels == 6] == pytest.approx(9.4)


def test_custom_chi_slope_and_overrides():
    p = abdomen_phantom(shape=SMALL, snr=None, lic_mg_per_g=3.0, liver_pdff_percent=0.0,
                        chi_slope_ppm_per_mg_g=0.3, liver_chi_offset_ppm=0.0,
                        chi_ppm={"spleen": 0.2}, r2star_per_s={"muscle": 40.0})
    np.testing.assert_allclose(p.truth["chi_ppm"][p.masks["liver"]], 0.9)
    np.testing.assert_allclose(p.truth["chi_ppm"][p.labels == 9], 0.2)
    np.testing.assert_allclose(p.truth["r2star_per_s"][p.labels == 3], 40.0)


def test_regional_lic():
    lic = {"right_lobe": 1.5, "left_lobe": 8.0}
    p = abdomen_phantom(shape=SMALL, snr=None, lic_mg_per_g=lic)
    for region, value in lic.items():
        mask = p.masks[f"liver_{region}"]
        assert mask.any()
        np.testing.assert_allclose(p.truth["lic_mg_per_g"][mask], value)
        np.testing.assert_allclose(p.truth["r2star_per_s"][mask], iron.lic_to_r2star(value, 1.5))
    assert not (p.masks["liver_right_lobe"] & p.masks["liver_left_lobe"]).any()
    assert np.array_equal(p.masks["liver_right_lobe"] | p.masks["liver_left_lobe"],
                          p.masks["liver"])
    assert p.gre.metadata["LIC_mg_per_g"] == lic
    with pytest.raises(QSMConfigError):
        abdomen_phantom(shape=SMALL, lic_mg_per_g={"right_lobe": 1.0})
    with pytest.raises(QSMConfigError):
        abdomen_phantom(shape=SMALL, lic_mg_per_g={"right_lobe": 1.0, "left_lobe": 1.0,
                                                   "caudate": 2.0})


def test_pdff_truth(small):
    w, f, pdff = small.truth["water"], small.truth["fat"], small.truth["pdff_percent"]
    liver = small.masks["liver"]
    np.testing.assert_allclose(pdff[liver], 12.0)
    signal = (w + f) > 0
    np.testing.assert_allclose(pdff[signal], 100 * f[signal] / (w + f)[signal])
    assert (pdff[~signal] == 0).all()
    assert pdff[small.labels == 1].min() > 80.0


def test_field_split_and_units(small):
    t = small.truth
    np.testing.assert_allclose(t["local_field_ppm"] + t["background_field_ppm"],
                               t["total_field_ppm"], atol=1e-12)
    np.testing.assert_allclose(t["total_field_hz"], t["total_field_ppm"] * GAMMA * 1.5e-6,
                               rtol=1e-12)
    # Air-tissue interfaces dominate: the background field is much larger than the local one.
    tissue = small.masks["tissue"]
    assert np.ptp(t["background_field_ppm"][tissue]) > 5 * np.ptp(t["local_field_ppm"][
        small.masks["liver"]])
    assert np.isfinite(t["total_field_ppm"]).all()


@pytest.mark.parametrize(("spectrum_name", "spectrum"),
                         [("ismrm", ISMRM_6PEAK), ("hamilton", HAMILTON_LIVER)])
def test_noise_free_liver_signal_matches_hand_formula(spectrum_name, spectrum):
    p = abdomen_phantom(shape=SMALL, snr=None, lic_mg_per_g=6.0, liver_pdff_percent=20.0,
                        fat_spectrum=spectrum_name)
    idx = tuple(int(i[len(i) // 2]) for i in np.nonzero(p.masks["liver"]))
    t = {k: float(v[idx]) for k, v in p.truth.items()}
    assert t["pdff_percent"] == pytest.approx(20.0)
    for k, te in enumerate(p.gre.te_s):
        fat = sum(a * cmath.exp(2j * math.pi * s * GAMMA * 1.5e-6 * te)
                  for s, a in zip(spectrum.shifts_ppm, spectrum.amplitudes, strict=True))
        expected = ((t["water"] + t["fat"] * fat) * math.exp(-t["r2star_per_s"] * te)
                    * cmath.exp(1j * (2 * math.pi * t["total_field_hz"] * te + t["phi0_rad"])))
        got = complex(np.asarray(p.gre.signal)[(*idx, k)])
        assert abs(got - expected) < 1e-6 * abs(t["water"] + t["fat"]) + 1e-6


def test_default_echo_times_match_seed_protocol(small):
    expected = 0.99e-3 + 1.41e-3 * np.arange(12)
    np.testing.assert_allclose(small.gre.te_s, expected, rtol=1e-12)
    np.testing.assert_allclose(default_echo_times(1.5), expected, rtol=1e-12)
    assert len(default_echo_times(3.0)) == 12


def test_three_tesla():
    p = abdomen_phantom(shape=SMALL, b0_t=3.0, snr=None, lic_mg_per_g=5.0)
    np.testing.assert_allclose(p.truth["r2star_per_s"][p.masks["liver"]], (5.0 + 0.03) / 0.01349)
    np.testing.assert_allclose(p.truth["total_field_hz"], p.truth["total_field_ppm"] * GAMMA
                               * 3e-6, rtol=1e-12)
    np.testing.assert_allclose(p.gre.te_s, default_echo_times(3.0))
    assert p.gre.b0_t == 3.0
    # Non-liver R2* scaled linearly with B0.
    np.testing.assert_allclose(p.truth["r2star_per_s"][p.labels == 3],
                               2 * DEFAULT_TISSUES["muscle"]["r2star_per_s_1p5t"])
    assert p.config["r2star_calibration"] == "hernando2023_3t"


def test_noise_level_and_reproducibility():
    clean = abdomen_phantom(shape=SMALL, snr=None)
    noisy = abdomen_phantom(shape=SMALL, snr=20.0, seed=3)
    again = abdomen_phantom(shape=SMALL, snr=20.0, seed=3)
    assert np.array_equal(np.asarray(noisy.gre.signal), np.asarray(again.gre.signal))
    liver = clean.masks["liver"]
    s0 = np.abs(np.asarray(clean.gre.signal)[..., 0][liver]).mean()
    assert noisy.config["noise_sigma"] == pytest.approx(s0 / 20.0, rel=1e-5)
    air = noisy.labels == 0
    resid = np.asarray(noisy.gre.signal)[air] - np.asarray(clean.gre.signal)[air]
    assert resid.real.std() == pytest.approx(s0 / 20.0, rel=0.05)


def test_unknown_names_raise():
    with pytest.raises(QSMConfigError, match="unknown tissue"):
        abdomen_phantom(shape=SMALL, chi_ppm={"pancreas": 0.1})
    with pytest.raises(QSMConfigError, match="unknown tissue"):
        abdomen_phantom(shape=SMALL, r2star_per_s={"heart": 30.0})
    with pytest.raises(QSMConfigError):
        abdomen_phantom(shape=SMALL, shim_ppm={"x3": 0.1})
    with pytest.raises(QSMConfigError):
        abdomen_phantom(shape=SMALL, liver_pdff_percent=120.0)
