"""Cramér-Rao field noise of the fat-water fit: closed form against a brute-force Fisher
inverse, and the calibrated map (``FatWaterResult.field_std_hz``) against a Monte Carlo."""

from __future__ import annotations

import numpy as np
import pytest

from qsmliver import backend
from qsmliver.fatwater import separate_fat_water
from qsmliver.fatwater.noise import field_crb_std_hz
from qsmliver.fatwater.spectra import fat_basis
from qsmliver.noise import residual_noise_level


def _brute_force_std(water, fat, field, r2, te, b0):
    """sqrt([Re(JᴴJ)⁻¹]_ψψ) over the six real parameters (Re/Im W, Re/Im F, ψ, R2*)."""
    c = fat_basis("ismrm", te, b0)
    g = np.exp((-r2[:, None] + 2j * np.pi * field[:, None]) * te)
    s = (water[:, None] + fat[:, None] * c) * g
    jac = np.stack([g, 1j * g, c * g, 1j * c * g, 2j * np.pi * te * s, -te * s], axis=-1)
    fisher = np.einsum("vej,vek->vjk", jac.conj(), jac).real
    unit = np.zeros((len(water), 6, 1))
    unit[:, 4] = 1.0
    return np.sqrt(np.linalg.solve(fisher, unit)[:, 4, 0])


@pytest.mark.parametrize("b0_t, te", [
    (1.5, 1.2e-3 + 2.0e-3 * np.arange(6)),
    (3.0, 2.87e-3 + 3.2e-3 * np.arange(4)),
])
def test_closed_form_equals_the_full_fisher_inverse(b0_t, te):
    rng = np.random.default_rng(4)
    n = 500
    water = rng.normal(size=n) + 1j * rng.normal(size=n)
    fat = (rng.normal(size=n) + 1j * rng.normal(size=n)) * rng.uniform(0, 1.5, n)
    r2 = rng.uniform(0, 800, n)
    field = rng.uniform(-300, 300, n)  # the bound does not depend on it
    expected = _brute_force_std(water, fat, field, r2, te, b0_t)
    np.testing.assert_allclose(field_crb_std_hz(water, fat, r2, te, b0_t), expected, rtol=1e-7)


def test_bound_is_infinite_without_signal_and_rises_where_water_and_fat_cancel():
    te = 1.2e-3 + 2.0e-3 * np.arange(6)
    std = field_crb_std_hz(np.array([0j, 1 + 0j, 0.5 + 0j]), np.array([0j, 0j, 0.5 + 0j]),
                           np.array([0.0, 50.0, 50.0]), te, 1.5)
    assert np.isinf(std[0])
    assert std[2] > std[1]  # same total amplitude, half of it fat: worse conditioned


def test_residual_noise_level_is_unbiased_and_robust():
    rng = np.random.default_rng(5)
    residual_sq = (rng.normal(scale=0.3, size=(40000, 6)) ** 2).sum(axis=1)
    assert residual_noise_level(residual_sq, 6) == pytest.approx(0.3, rel=0.02)
    residual_sq[:4000] *= 100.0  # 10 % of voxels the model misfits
    assert residual_noise_level(residual_sq, 6) == pytest.approx(0.3, rel=0.10)
    assert residual_noise_level(np.zeros(10), 6) == 1.0  # exact fit: a relative map
    assert residual_noise_level(residual_sq, 0) == 1.0


@pytest.mark.parametrize("pdff, r2star, max_spread", [
    (0.0, 40.0, 1.3), (20.0, 150.0, 1.3),
    (45.0, 400.0, 2.0),  # last echoes below the noise: the fitted W, F, R2* themselves scatter
])
def test_field_std_matches_a_monte_carlo(pdff, r2star, max_spread):
    """Many voxels of one tissue, independent noise: the spread of the separated field equals
    the calibrated Cramér-Rao map (within 15 %), and the map scatters little. Measured (Hz):
    0.498 / 0.504, 1.363 / 1.359, 8.41 / 7.94 (spread / map median)."""
    rng = np.random.default_rng(int(pdff))
    te = 1.2e-3 + 2.0e-3 * np.arange(6)
    b0, sigma, shape = 1.5, 0.02, (40, 40, 6)
    water, fat = 1.0 - pdff / 100, pdff / 100
    field = 30.0
    c = fat_basis("ismrm", te, b0)
    clean = (water + fat * c) * np.exp((-r2star + 2j * np.pi * field) * te) * np.exp(0.4j)
    signal = np.broadcast_to(clean, (*shape, te.size)).astype(np.complex128)
    signal = signal + sigma * (rng.standard_normal(signal.shape)
                               + 1j * rng.standard_normal(signal.shape))
    result = separate_fat_water(signal, te, b0, mask=np.ones(shape, bool))
    measured = float(np.std(result.field_hz))
    predicted = float(np.median(result.field_std_hz))
    truth = float(field_crb_std_hz(np.array([water * np.exp(0.4j)]),
                                   np.array([fat * np.exp(0.4j)]), np.array([r2star]), te,
                                   b0)[0] * sigma)
    print(f"PDFF {pdff}, R2* {r2star}: measured {measured:.3f} Hz, map {predicted:.3f} Hz, "
          f"bound at the truth {truth:.3f} Hz")
    assert result.parameters["noise_std_per_component"] == pytest.approx(sigma, rel=0.05)
    assert predicted == pytest.approx(truth, rel=0.10)
    assert measured == pytest.approx(predicted, rel=0.15)
    spread = np.percentile(result.field_std_hz, [10, 90])
    assert spread[1] / spread[0] < max_spread


def test_field_std_backend_matches_numpy(xp):
    rng = np.random.default_rng(6)
    te = 1.2e-3 + 2.0e-3 * np.arange(6)
    c = fat_basis("ismrm", te, 1.5)
    clean = (0.8 + 0.2 * c) * np.exp((-80.0 + 2j * np.pi * 20.0) * te)
    signal = np.broadcast_to(clean, (12, 12, 4, te.size)) + 0.02 * (
        rng.standard_normal((12, 12, 4, te.size)) + 1j * rng.standard_normal((12, 12, 4, 6)))
    mask = np.ones((12, 12, 4), bool)
    reference = separate_fat_water(signal, te, 1.5, mask=mask).field_std_hz
    result = separate_fat_water(xp.asarray(signal), te, 1.5, mask=xp.asarray(mask)).field_std_hz
    assert backend.get_array_module(result) is xp
    np.testing.assert_allclose(backend.to_numpy(result), reference, rtol=1e-3)


def test_three_echoes_give_a_relative_map():
    """2E − 6 = 0 residual degrees of freedom: no level can be estimated, the map is the bound
    for unit noise (finite, positive) and the record says level 1."""
    rng = np.random.default_rng(7)
    te = np.array([1.2e-3, 3.2e-3, 5.2e-3])
    clean = (0.8 + 0.2 * fat_basis("ismrm", te, 1.5)) * np.exp((-50.0 + 2j * np.pi * 10) * te)
    signal = np.broadcast_to(clean, (10, 10, 3, 3)) + 0.01 * (
        rng.standard_normal((10, 10, 3, 3)) + 1j * rng.standard_normal((10, 10, 3, 3)))
    result = separate_fat_water(signal, te, 1.5, mask=np.ones((10, 10, 3), bool))
    assert result.parameters["noise_std_per_component"] == 1.0
    assert np.all(np.isfinite(result.field_std_hz)) and np.all(result.field_std_hz > 0)
