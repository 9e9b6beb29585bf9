"""Fat-water building blocks: VARPRO cost, T2*-IDEAL refinement, PDFF, candidate grids and the
graph-cut field-map selection on small synthetic problems with known truth."""

from __future__ import annotations

import numpy as np
import pytest

from qsmliver import backend
from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.fatwater import (
    echo_period_hz,
    fat_basis,
    field_candidates,
    graphcut_field_map,
    ideal_refine,
    pdff_magnitude_discrimination,
    r2star_candidates,
    varpro_cost,
    varpro_solve,
    voxelwise_field_map,
)
from qsmliver.simulate.abdomen import default_echo_times

PDFFS = (0.0, 20.0, 50.0, 80.0, 100.0)


def _voxels(b0_t, psi_values, r2s_values, phase=0.7, amplitude=1.3):
    """Noise-free echoes of every (PDFF, ψ, R2*) combination and their truth (1-D arrays)."""
    te = default_echo_times(b0_t)
    grid = np.array(np.meshgrid(PDFFS, psi_values, r2s_values, indexing="ij")).reshape(3, -1)
    pdff, psi, r2s = grid
    water = amplitude * (1 - pdff / 100) * np.exp(1j * phase)
    fat = amplitude * pdff / 100 * np.exp(1j * phase)
    basis = fat_basis("ismrm", te, b0_t)
    signal = ((water[:, None] + fat[:, None] * basis)
              * np.exp((-r2s[:, None] + 2j * np.pi * psi[:, None]) * te))
    return te, signal, water, fat, psi, r2s


@pytest.mark.parametrize("b0_t", [1.5, 3.0])
def test_cost_is_minimal_at_the_true_field_and_r2star(b0_t):
    te = default_echo_times(b0_t)
    psi_grid, period = field_candidates(te)
    r2_grid = r2star_candidates(b0_t)
    r2_max = r2_grid[-1]
    # Truth on the candidate grids (R2* up to 1500 1/s at 1.5 T, scaled with B0).
    r2_truth = r2_grid[[0, 3, 8, int(np.argmin(np.abs(r2_grid - 0.75 * r2_max)))]]
    assert r2_truth[-1] >= 1400 * b0_t / 1.5
    k_truth = [3, 20, 41]
    te, signal, _, _, psi, r2s = _voxels(b0_t, psi_grid[k_truth], r2_truth)
    cost, index = varpro_cost(signal, te, b0_t, psi_grid, r2_grid, reduce_r2star=False)
    assert index is None and cost.shape == (signal.shape[0], psi_grid.size, r2_grid.size)
    energy = np.sum(np.abs(signal) ** 2, axis=1)
    flat = cost.reshape(cost.shape[0], -1).argmin(axis=1)
    k_best, m_best = np.unravel_index(flat, cost.shape[1:])
    np.testing.assert_array_equal(psi_grid[k_best], psi)
    np.testing.assert_array_equal(r2_grid[m_best], r2s)
    truth_cost = cost[np.arange(cost.shape[0]), k_best, m_best]
    assert np.all(truth_cost <= 1e-12 * energy)
    # The reduced form returns the same minimum and its R2* index.
    reduced, r2_index = varpro_cost(signal, te, b0_t, psi_grid, r2_grid)
    np.testing.assert_allclose(reduced, cost.min(axis=2), rtol=0, atol=1e-9 * energy.max())
    np.testing.assert_array_equal(r2_grid[r2_index[np.arange(len(flat)), k_best]], r2s)
    assert period == pytest.approx(1.0 / np.diff(te).mean())


@pytest.mark.parametrize("b0_t", [1.5, 3.0])
def test_refinement_recovers_all_parameters(b0_t):
    # Off-grid truth (R2* including 1500 1/s at 1.5 T); start at the nearest field candidate
    # with the best R2* candidate there, as the field-map selection hands over.
    te, signal, water, fat, psi, r2s = _voxels(
        b0_t, [-211.7, 37.3, 250.9], [0.0, 41.0, 480.0, 1500.0 * b0_t / 1.5])
    psi_grid, _ = field_candidates(te, range_hz=(-400.0, 400.0))
    r2_grid = r2star_candidates(b0_t)
    _, r2_index = varpro_cost(signal, te, b0_t, psi_grid, r2_grid)
    start_k = np.argmin(np.abs(psi_grid[None, :] - psi[:, None]), axis=1)
    start_psi = psi_grid[start_k]
    start_r2 = r2_grid[r2_index[np.arange(len(start_k)), start_k]]
    assert np.abs(start_psi - psi).max() > 1.0  # the start is off the truth
    fit = ideal_refine(signal, te, b0_t, start_psi, start_r2, r2star_max_per_s=r2_grid[-1],
                       max_shift_hz=80.0, tol_hz=1e-6)
    scale = np.abs(water) + np.abs(fat)
    assert np.max(np.abs(fit.water - water) / scale) < 1e-3
    assert np.max(np.abs(fit.fat - fat) / scale) < 1e-3
    assert np.max(np.abs(fit.field_hz - psi)) < 1e-3
    assert np.max(np.abs(fit.r2star_per_s - r2s) / np.maximum(r2s, 1.0)) < 1e-3
    assert np.max(fit.residual / np.sum(np.abs(signal) ** 2, axis=1)) < 1e-10
    pdff = pdff_magnitude_discrimination(fit.water, fit.fat)
    np.testing.assert_allclose(pdff, 100 * np.abs(fat) / scale, atol=1e-3)
    assert fit.converged.all()


def test_cost_matches_explicit_least_squares_and_chunks_do_not_matter():
    b0_t = 1.5
    te, signal, *_ = _voxels(b0_t, [12.0, -97.0], [30.0, 700.0])
    rng = np.random.default_rng(3)
    signal = signal + 0.05 * (rng.standard_normal(signal.shape)
                              + 1j * rng.standard_normal(signal.shape))
    grid = np.array([-300.0, -12.5, 0.0, 97.0, 401.0])
    r2_grid = r2star_candidates(b0_t, n=7)
    cost, _ = varpro_cost(signal, te, b0_t, grid, r2_grid, reduce_r2star=False)
    basis = fat_basis("ismrm", te, b0_t)
    for k, psi in enumerate(grid):
        for m, r2s in enumerate(r2_grid):
            d = np.exp((-r2s + 2j * np.pi * psi) * te)
            design = np.stack([d, d * basis], axis=1)
            amplitudes = np.linalg.lstsq(design, signal.T, rcond=None)[0]
            residual = np.sum(np.abs(signal.T - design @ amplitudes) ** 2, axis=0)
            np.testing.assert_allclose(cost[:, k, m], residual, rtol=1e-8, atol=1e-12)
    chunked, index = varpro_cost(signal, te, b0_t, grid, r2_grid, chunk_voxels=4)
    np.testing.assert_allclose(chunked, cost.min(axis=2), rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(index, cost.argmin(axis=2))
    single, _ = varpro_cost(signal.astype(np.complex64), te, b0_t, grid, r2_grid)
    assert single.dtype == np.float32
    energy = np.sum(np.abs(signal) ** 2, axis=1)
    assert np.max(np.abs(single - cost.min(axis=2)) / energy[:, None]) < 1e-5


def test_varpro_solve_is_exact_at_the_true_parameters():
    te, signal, water, fat, psi, r2s = _voxels(3.0, [55.0], [0.0, 900.0])
    w, f, residual = varpro_solve(signal, te, 3.0, psi, r2s)
    np.testing.assert_allclose(w, water, atol=1e-10)
    np.testing.assert_allclose(f, fat, atol=1e-10)
    assert residual.max() < 1e-20
    with pytest.raises(QSMInputError):
        varpro_solve(signal[:, :5], te, 3.0, psi, r2s)


def test_pdff_magnitude_discrimination_values_and_noise_bias():
    water = np.array([1.0, 0.8, 0.5, 0.1, 0.0, 0.0])
    fat = np.array([0.0, 0.2, 0.5, 0.9, 1.0, 0.0])
    np.testing.assert_allclose(pdff_magnitude_discrimination(water, fat),
                               [0.0, 20.0, 50.0, 90.0, 100.0, 0.0], atol=1e-12)
    # Noise: a 2 % fat fraction measured with complex noise on W and F. The naive
    # |F| / (|W| + |F|) is biased upwards by the noise floor of |F|; magnitude discrimination
    # (Liu et al. 2007) is not (its median; the mean carries the clipping at 0 %).
    rng = np.random.default_rng(7)
    n, sigma = 20000, 0.03
    noise = sigma * (rng.standard_normal((2, n)) + 1j * rng.standard_normal((2, n)))
    w = 0.98 + noise[0]
    f = 0.02 + noise[1]
    naive = 100 * np.abs(f) / (np.abs(w) + np.abs(f))
    discriminated = pdff_magnitude_discrimination(w, f)
    assert abs(np.median(discriminated) - 2.0) < 0.2
    assert np.median(naive) - 2.0 > 1.5
    # Fat-dominant voxels use |F| / |W + F|: symmetric behaviour at 98 %.
    assert abs(np.median(pdff_magnitude_discrimination(f, w)) - 98.0) < 0.2
    with pytest.raises(QSMInputError):
        pdff_magnitude_discrimination(np.zeros(3), np.zeros(4))


def test_candidate_grids():
    r2_15 = r2star_candidates(1.5)
    assert r2_15[0] == 0.0 and r2_15[-1] == pytest.approx(2000.0)
    assert r2star_candidates(3.0)[-1] == pytest.approx(4000.0)
    assert np.all(np.diff(r2_15) > 0) and np.diff(r2_15)[0] < np.diff(r2_15)[-1]
    assert r2star_candidates(1.5, 800.0, n=5).tolist() == [0.0, 50.0, 200.0, 450.0, 800.0]
    for bad in ({"r2star_max_per_s": 0.0}, {"r2star_max_per_s": float("nan")}, {"n": 1},
                {"n": 2.5}):
        with pytest.raises(QSMConfigError):
            r2star_candidates(1.5, **bad)
    te = default_echo_times(1.5)
    grid, period = field_candidates(te, n=64)
    assert period == pytest.approx(1 / 1.41e-3) and grid.size == 64
    assert grid[-1] + (grid[1] - grid[0]) == pytest.approx(period)
    uneven = [1e-3, 2e-3, 4e-3, 5e-3]
    assert echo_period_hz(uneven) is None
    grid, period = field_candidates(uneven)
    assert period is None and grid[0] == pytest.approx(-1000.0)
    with pytest.raises(QSMConfigError):
        field_candidates(te, n=4)
    with pytest.raises(QSMConfigError):
        field_candidates(te, range_hz=(10.0, -10.0))


def test_ideal_bounds_r2star_and_field_shift():
    te = default_echo_times(1.5)
    rng = np.random.default_rng(11)
    n = 400
    signal = np.exp(2j * np.pi * 20.0 * te)[None, :].repeat(n, axis=0)  # R2* = 0
    signal = signal + 0.05 * (rng.standard_normal(signal.shape)
                              + 1j * rng.standard_normal(signal.shape))
    fit = ideal_refine(signal, te, 1.5, np.full(n, 30.0), np.full(n, 50.0),
                       r2star_max_per_s=100.0, max_shift_hz=5.0)
    assert fit.r2star_per_s.min() >= 0.0 and fit.r2star_per_s.max() <= 100.0
    assert np.sum(fit.r2star_per_s == 0.0) > 0  # the bound is active for some voxels
    assert np.all(np.abs(fit.field_hz - 30.0) <= 5.0 + 1e-9)
    with pytest.raises(QSMInputError):
        ideal_refine(signal, te, 1.5, np.zeros(3), np.zeros(n))
    with pytest.raises(QSMConfigError):
        ideal_refine(signal, te, 1.5, np.zeros(n), np.zeros(n), tol_hz=0.0)


def _toy_problem(periods=2.6, alias_fraction=0.3, shape=(40, 36, 3), seed=5):
    """A cost with a smooth true field spanning ``periods`` periods and a fat-alias minimum
    that is the deeper one in ``alias_fraction`` of the voxels."""
    rng = np.random.default_rng(seed)
    n = 60
    period = 600.0
    step = period / n
    x = np.linspace(-0.5, 0.5, shape[0])[:, None, None]
    y = np.linspace(-0.5, 0.5, shape[1])[None, :, None]
    truth = periods * period * (0.8 * x + 0.3 * y ** 2) + np.zeros(shape)
    mask = np.ones(shape, dtype=bool)
    mask[15:20, 10:30, :] = False  # a signal void
    k = np.arange(n) * step
    true_t = truth[mask][:, None]

    def circular(d):
        return (d + period / 2) % period - period / 2

    near = circular(k[None, :] - true_t) ** 2
    alias = circular(k[None, :] - true_t + 200.0) ** 2
    depth = np.where(rng.random((true_t.shape[0], 1)) < alias_fraction, -200.0, 200.0)
    cost = np.minimum(near, alias + depth) - np.minimum(0.0, depth) + 100.0
    return cost, mask, truth, k, period


def test_graphcut_selects_smooth_unwrapped_field_over_aliases():
    cost, mask, truth, grid, period = _toy_problem()
    voxel = (1.5, 1.5, 6.0)
    field, info = graphcut_field_map(cost, mask, voxel, grid, period_hz=period,
                                     fat_shift_hz=-200.0, smoothness=3.0)
    error = field - truth[mask]
    error -= period * np.round(np.median(error) / period)
    step = grid[1] - grid[0]
    assert np.mean(np.abs(error) <= step) > 0.99
    assert info["energy_final"] < info["energy_initial"] and info["moves_accepted"] > 0
    # Voxel-wise minima take the aliases and wrap the field into one period.
    naive = voxelwise_field_map(cost, grid, period) - truth[mask]
    naive -= period * np.round(np.median(naive) / period)
    assert np.mean(np.abs(naive) <= step) < 0.5


def test_graphcut_bounded_grid_and_validation():
    cost, mask, _, grid, period = _toy_problem(periods=0.5, alias_fraction=0.2)
    field, info = graphcut_field_map(cost, mask, (2.0, 2.0, 2.0), grid - 300.0, period_hz=None,
                                     fat_shift_hz=-200.0, smoothness=1.0)
    assert field.min() >= -300.0 and field.max() < 300.0
    assert info["cycles"] >= 1
    with pytest.raises(QSMInputError):
        graphcut_field_map(cost[:-1], mask, (1, 1, 1), grid, period_hz=period,
                           fat_shift_hz=-200.0)
    with pytest.raises(QSMConfigError):
        graphcut_field_map(cost, mask, (1, 1, 1), grid, period_hz=period, fat_shift_hz=-200.0,
                           smoothness=0.0)


def test_varpro_cost_on_backend(xp):
    te, signal, *_ = _voxels(1.5, [12.0], [30.0, 700.0])
    grid, _ = field_candidates(te)
    r2_grid = r2star_candidates(1.5, n=5)
    reference, _ = varpro_cost(signal, te, 1.5, grid, r2_grid)
    cost, _ = varpro_cost(xp.asarray(signal), te, 1.5, grid, r2_grid)
    assert backend.get_array_module(cost) is xp
    np.testing.assert_allclose(backend.to_numpy(cost), reference, rtol=1e-8, atol=1e-12)
    fit = ideal_refine(xp.asarray(signal), te, 1.5, xp.full(signal.shape[0], 12.0),
                       xp.full(signal.shape[0], 50.0))
    assert backend.get_array_module(fit.field_hz) is xp
