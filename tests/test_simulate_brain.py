"""Tests of the numerical brain phantom (qsmliver.simulate.brain)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from qsmliver.data import GYROMAGNETIC_RATIO_HZ_PER_T, MultiEchoGRE
from qsmliver.errors import QSMConfigError
from qsmliver.simulate.brain import (
    BRAIN_LABELS,
    DEFAULT_CHI_PPM,
    DEFAULT_R2STAR_PER_S,
    DEFAULT_TE_S,
    LABEL_TISSUE,
    brain_phantom,
)
from qsmliver.simulate.forward import susceptibility_field_ppm
from qsmliver.simulate.phantom import TRUTH_UNITS, Phantom

SMALL = (48, 48, 40)


@pytest.fixture(scope="module")
def clean():
    return brain_phantom(shape=SMALL, snr=None)


@pytest.fixture(scope="module")
def noisy():
    return brain_phantom(shape=SMALL, snr=50.0)


def test_container_and_gre(clean):
    assert isinstance(clean, Phantom)
    gre = clean.gre
    assert isinstance(gre, MultiEchoGRE)
    assert gre.shape == SMALL
    assert gre.signal.dtype == np.complex64
    np.testing.assert_allclose(gre.te_s, DEFAULT_TE_S)
    assert gre.b0_t == 3.0
    np.testing.assert_allclose(gre.b0_dir, [0, 0, 1])
    np.testing.assert_allclose(gre.voxel_size_mm, [1.5, 1.5, 1.5])
    assert gre.vendor == "qsmliver.simulate"
    assert gre.metadata["Phantom"] == "brain"
    centre = gre.affine @ np.array([(SMALL[0] - 1) / 2, (SMALL[1] - 1) / 2,
                                    (SMALL[2] - 1) / 2, 1.0])
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-9)
    assert set(clean.truth) <= set(TRUTH_UNITS)
    for key in ("chi_ppm", "total_field_ppm", "total_field_hz", "local_field_ppm",
                "background_field_ppm", "r2star_per_s", "water", "fat", "phi0_rad"):
        assert key in clean.truth
        assert np.all(np.isfinite(clean.truth[key]))
    assert not clean.truth["fat"].any()
    json.dumps(clean.config)
    assert clean.config["snr"] is None and clean.config["seed"] == 0


def test_every_label_present_with_configured_chi(clean):
    texture = clean.config["texture_ppm"]
    assert clean.label_names == BRAIN_LABELS
    for value, name in BRAIN_LABELS.items():
        inside = clean.labels == value
        assert inside.any(), f"label {name} missing"
        expected = DEFAULT_CHI_PPM[LABEL_TISSUE[name]]
        median = float(np.median(clean.truth["chi_ppm"][inside]))
        assert abs(median - expected) <= texture + 1e-12, name
        r2s = float(np.median(clean.truth["r2star_per_s"][inside]))
        if name not in ("air", "sinus"):
            assert r2s == pytest.approx(DEFAULT_R2STAR_PER_S[LABEL_TISSUE[name]]), name


def test_masks(clean):
    brain, head = clean.masks["brain"], clean.masks["head"]
    assert brain.dtype == bool and head.dtype == bool
    assert brain.sum() > 0 and not (brain & ~head).any()
    assert not head[clean.labels == 0].any()
    assert (clean.truth["water"][~head] == 0).all()
    assert (clean.truth["water"][head] > 0).all()
    skull = clean.labels == 2
    assert np.median(clean.truth["water"][skull]) < 0.2 * np.median(clean.truth["water"][brain])
    assert not brain[skull].any()


def test_field_decomposition(clean):
    t = clean.truth
    np.testing.assert_allclose(t["local_field_ppm"] + t["background_field_ppm"],
                               t["total_field_ppm"], atol=1e-12)
    local = susceptibility_field_ppm(np.where(clean.masks["brain"], t["chi_ppm"], 0.0),
                                     clean.gre.voxel_size_mm, clean.gre.b0_dir, kernel="cuboid")
    np.testing.assert_allclose(t["local_field_ppm"], local, atol=1e-9)
    np.testing.assert_allclose(
        t["total_field_hz"],
        t["total_field_ppm"] * GYROMAGNETIC_RATIO_HZ_PER_T * clean.gre.b0_t * 1e-6,
        rtol=1e-12,
    )
    brain = clean.masks["brain"]
    # the air-tissue background dominates the local field inside the brain
    assert np.ptp(t["background_field_ppm"][brain]) > 3 * np.ptp(t["local_field_ppm"][brain])


def test_kspace_field_kernel_is_the_inversions_forward_model(clean):
    """``field_kernel="kspace"``: the fields are the sampled k-space dipole kernel's (the
    qsm-forward model), still split exactly into local + background; the anatomy is the same."""
    ph = brain_phantom(shape=SMALL, snr=None, field_kernel="kspace")
    t = ph.truth
    assert ph.config["field_kernel"] == "kspace" and clean.config["field_kernel"] == "cuboid"
    np.testing.assert_array_equal(ph.labels, clean.labels)
    np.testing.assert_allclose(t["local_field_ppm"] + t["background_field_ppm"],
                               t["total_field_ppm"], atol=1e-12)
    local = susceptibility_field_ppm(np.where(ph.masks["brain"], t["chi_ppm"], 0.0),
                                     ph.gre.voxel_size_mm, ph.gre.b0_dir, kernel="kspace")
    np.testing.assert_allclose(t["local_field_ppm"], local, atol=1e-9)
    brain = ph.masks["brain"]
    difference = t["total_field_ppm"][brain] - clean.truth["total_field_ppm"][brain]
    assert np.abs(difference).max() > 1e-3  # the two forward models differ near the skull
    with pytest.raises(QSMConfigError, match="field_kernel"):
        brain_phantom(shape=SMALL, snr=None, field_kernel="real")


def test_oversampled_phantom_is_band_limited_to_the_acquired_grid(clean):
    """``oversample=2``: computed on a grid twice as fine and cropped in k-space as a scanner
    acquires it. Same acquired geometry and labels; χ is the voxel mean (the table's value
    inside a structure, partial volumes at its edges); local + background = total; and the
    echo phase follows the band-limited field deep in the brain (to first order)."""
    from scipy import ndimage

    ph = brain_phantom(shape=SMALL, snr=None, oversample=2)
    t = ph.truth
    assert ph.config["oversample"] == 2 and clean.config["oversample"] == 1
    assert ph.gre.shape == SMALL and ph.gre.signal.dtype == np.complex64
    np.testing.assert_array_equal(ph.labels, clean.labels)
    for name in ("brain", "head"):
        np.testing.assert_array_equal(ph.masks[name], clean.masks[name])
    np.testing.assert_allclose(t["local_field_ppm"] + t["background_field_ppm"],
                               t["total_field_ppm"], atol=1e-12)
    untextured = [v for v, n in ph.label_names.items()
                  if LABEL_TISSUE[n] not in ("grey_matter", "white_matter")]
    inside = np.zeros(SMALL, dtype=bool)
    for value in untextured:
        inside |= ndimage.binary_erosion(ph.labels == value)
    assert inside.sum() > 1000
    np.testing.assert_allclose(t["chi_ppm"][inside], clean.truth["chi_ppm"][inside], atol=1e-12)
    csf = ph.labels == next(v for v, n in ph.label_names.items() if n == "csf")
    # partial volumes: at the skull's inner edge the voxel mean lies between CSF and bone
    edge = csf & ~ndimage.binary_erosion(csf)
    between = (t["chi_ppm"][edge] < -0.05) & (t["chi_ppm"][edge] > DEFAULT_CHI_PPM["skull"])
    assert between.mean() > 0.2
    assert not np.isin(np.unique(clean.truth["chi_ppm"][edge]), t["chi_ppm"][edge][between]).any()
    # deep in the brain the first echo's phase is 2π·f·TE + φ0 of the voxel-mean truth, to
    # first order: the field in the head spans ±500 Hz (±12 rad at TE1); the phase follows it
    # to a median 0.020 rad (ringing and intravoxel dephasing of the band-limited echoes)
    deep = ndimage.distance_transform_edt(ph.masks["brain"]) > 6
    expected = 2 * np.pi * t["total_field_hz"] * ph.gre.te_s[0] + t["phi0_rad"]
    error = np.angle(np.exp(1j * (np.angle(ph.gre.signal[..., 0]) - expected)))[deep]
    assert np.median(np.abs(error)) < 0.04, np.median(np.abs(error))
    with pytest.raises(QSMConfigError, match="oversample"):
        brain_phantom(shape=SMALL, snr=None, oversample=1.5)


def test_total_field_is_field_of_chi_relative_to_air(clean):
    """Without shim, total = field of (χ − χ_air) inside the head outline; shim is bounded."""
    ph = brain_phantom(shape=SMALL, snr=None, shim_ppm=0.0)
    chi = np.where(ph.labels != 0, ph.truth["chi_ppm"] - DEFAULT_CHI_PPM["air"], 0.0)
    direct = susceptibility_field_ppm(chi, ph.gre.voxel_size_mm, ph.gre.b0_dir, kernel="cuboid")
    np.testing.assert_allclose(ph.truth["total_field_ppm"], direct, atol=1e-9)
    shim = clean.truth["total_field_ppm"] - ph.truth["total_field_ppm"]
    head = clean.masks["head"]
    assert np.abs(shim[head]).max() == pytest.approx(clean.config["shim_ppm"])
    np.testing.assert_allclose(
        clean.truth["background_field_ppm"] - ph.truth["background_field_ppm"], shim,
        atol=1e-12)


def test_echo_phase_matches_field(clean):
    t = clean.truth
    head = clean.masks["head"]
    for e, te in enumerate(clean.gre.te_s):
        expected = 2 * np.pi * t["total_field_hz"] * te + t["phi0_rad"]
        measured = np.angle(clean.gre.signal[..., e])
        diff = np.angle(np.exp(1j * (measured - expected)))[head]
        assert np.abs(diff).max() < 2e-3
    magnitude = np.abs(clean.gre.signal[..., 0])
    expected = t["water"] * np.exp(-t["r2star_per_s"] * clean.gre.te_s[0])
    np.testing.assert_allclose(magnitude, expected, rtol=1e-5, atol=1e-7)


def test_tilted_b0_changes_field(clean):
    tilted = brain_phantom(shape=SMALL, snr=None, b0_dir=(0.0, 0.5, 1.0))
    np.testing.assert_allclose(tilted.gre.b0_dir, np.array([0.0, 0.5, 1.0]) / np.sqrt(1.25))
    np.testing.assert_array_equal(tilted.truth["chi_ppm"], clean.truth["chi_ppm"])
    brain = clean.masks["brain"]
    diff = tilted.truth["local_field_ppm"] - clean.truth["local_field_ppm"]
    assert np.abs(diff[brain]).max() > 0.01


def test_overrides_change_values(clean):
    ph = brain_phantom(shape=SMALL, snr=None,
                       chi_ppm={"globus_pallidus": 0.3}, r2star_per_s={"putamen": 60.0})
    for value, name in BRAIN_LABELS.items():
        if name.startswith("globus_pallidus"):
            assert np.all(ph.truth["chi_ppm"][ph.labels == value] == 0.3)
        if name.startswith("putamen"):
            assert np.all(ph.truth["r2star_per_s"][ph.labels == value] == 60.0)
    assert ph.config["chi_ppm"]["globus_pallidus"] == 0.3
    assert ph.config["chi_ppm"]["caudate"] == DEFAULT_CHI_PPM["caudate"]
    assert not np.allclose(ph.truth["local_field_ppm"], clean.truth["local_field_ppm"])
    assert DEFAULT_CHI_PPM["globus_pallidus"] == 0.18  # defaults untouched


def test_unknown_override_raises():
    with pytest.raises(QSMConfigError, match="hippocampus"):
        brain_phantom(shape=SMALL, chi_ppm={"hippocampus": 0.01})
    with pytest.raises(QSMConfigError, match="r2star_per_s"):
        brain_phantom(shape=SMALL, r2star_per_s={"pallidum": 10.0})
    with pytest.raises(QSMConfigError):
        brain_phantom(shape=SMALL, chi_ppm={"caudate": "a lot"})
    with pytest.raises(QSMConfigError):
        brain_phantom(shape=SMALL, snr=-1.0)
    with pytest.raises(QSMConfigError):
        brain_phantom(shape=SMALL, b0_dir=(0, 0, 0))


def test_noise_level_matches_snr(clean, noisy):
    sigma = noisy.config["noise_sigma"]
    brain = clean.masks["brain"]
    mean_brain = float(np.abs(clean.gre.signal[..., 0][brain]).mean())
    assert sigma == pytest.approx(mean_brain / 50.0, rel=1e-5)
    noise = (noisy.gre.signal - clean.gre.signal)
    assert np.std(noise.real) == pytest.approx(sigma, rel=0.1)
    assert np.std(noise.imag) == pytest.approx(sigma, rel=0.1)
    np.testing.assert_array_equal(noisy.truth["chi_ppm"], clean.truth["chi_ppm"])


def test_seed_reproducible_and_textured(clean):
    again = brain_phantom(shape=SMALL, snr=None)
    np.testing.assert_array_equal(again.gre.signal, clean.gre.signal)
    other = brain_phantom(shape=SMALL, snr=None, seed=1)
    wm = clean.labels == 6
    assert np.std(clean.truth["chi_ppm"][wm]) > 0
    assert not np.array_equal(other.truth["chi_ppm"][wm], clean.truth["chi_ppm"][wm])


@pytest.mark.slow
def test_default_size_completes():
    started = time.perf_counter()
    ph = brain_phantom()
    elapsed = time.perf_counter() - started
    print(f"brain_phantom default {ph.gre.shape}: {elapsed:.2f} s")
    assert ph.gre.shape == (128, 128, 96)
    assert ph.gre.n_echoes == len(DEFAULT_TE_S)
