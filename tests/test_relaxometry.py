"""R2* fitting: accuracy on simulated Rician decays, noise handling, shapes, backends, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.special as sp

from qsmliver import backend
from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.relaxometry import (
    R2STAR_METHODS,
    estimate_noise_sigma,
    fit_r2star,
    noise_floor,
    noncentral_chi_mean,
)

#: The seed study's 1.5 T protocol: 12 echoes, TE1 0.99 ms, ΔTE 1.41 ms.
TE_SEED = 0.99e-3 + 1.41e-3 * np.arange(12)


def rician_decays(r2star, snr, n_voxels, rng, te=TE_SEED):
    """Magnitudes of mono-exponential decays with complex Gaussian noise.

    SNR is defined at the first echo, as in the abdomen phantom: σ = S(TE1) / snr.
    """
    s_te1 = 1000.0
    s0 = s_te1 * np.exp(r2star * te[0])
    sigma = s_te1 / snr
    clean = s0 * np.exp(-r2star * te)
    noise = rng.standard_normal((n_voxels, te.size)) + 1j * rng.standard_normal(
        (n_voxels, te.size))
    return np.abs(clean + sigma * noise), sigma


@pytest.mark.parametrize("method", R2STAR_METHODS)
def test_noise_free_decays_are_recovered(method):
    r2s = np.array([20.0, 100.0, 300.0, 600.0, 1000.0])
    mag = 750.0 * np.exp(-r2s[:, None] * TE_SEED)
    fit = fit_r2star(mag, TE_SEED, method=method, noise_sigma=1e-3)
    # ARLO's Simpson integrals lose accuracy once R2*·ΔTE approaches 1 (Pei et al. 2015)
    rtol = {"arlo": 0.02}.get(method, 1e-4)
    keep = r2s <= 600 if method == "arlo" else slice(None)
    np.testing.assert_allclose(fit.r2star_per_s[keep], r2s[keep], rtol=rtol)
    np.testing.assert_allclose(fit.s0[keep], 750.0, rtol=max(rtol, 1e-4))
    assert np.all(fit.goodness[keep] > 0.999)


@pytest.mark.parametrize("snr", [20, 50, 100])
@pytest.mark.parametrize("method", ["truncation", "noise_corrected"])
def test_truncation_and_noise_corrected_unbiased_up_to_1000(method, snr, rng):
    """Acceptance: mean bias within 5 % for R2* 20-1000 1/s at SNR 20-100 (seed protocol)."""
    for r2star in (20.0, 150.0, 400.0, 700.0, 1000.0):
        mag, sigma = rician_decays(r2star, snr, 600, rng)
        fit = fit_r2star(mag, TE_SEED, method=method, noise_sigma=sigma)
        bias = fit.r2star_per_s.mean() / r2star - 1.0
        assert abs(bias) < 0.05, (method, snr, r2star, bias)


def test_loglinear_is_biased_at_high_r2star_where_the_others_are_not(rng):
    """The noise floor pulls the log-linear slope down; truncation/noise correction remove it."""
    mag, sigma = rician_decays(800.0, 50, 600, rng)
    bias = {m: fit_r2star(mag, TE_SEED, method=m, noise_sigma=sigma).r2star_per_s.mean()
            / 800.0 - 1.0 for m in ("loglinear", "truncation", "noise_corrected")}
    assert bias["loglinear"] < -0.25  # measured about -45 %
    assert abs(bias["truncation"]) < 0.05
    assert abs(bias["noise_corrected"]) < 0.05
    # at low R2* with good SNR every method agrees
    mag, sigma = rician_decays(40.0, 100, 300, rng)
    for method in R2STAR_METHODS[:2]:
        est = fit_r2star(mag, TE_SEED, method=method).r2star_per_s.mean()
        assert abs(est / 40.0 - 1.0) < 0.03


def test_nlls_offset_is_recovered():
    te = TE_SEED
    mag = 900.0 * np.exp(-np.array([[250.0], [600.0]]) * te) + 35.0
    fit = fit_r2star(mag, te, method="nlls")
    np.testing.assert_allclose(fit.r2star_per_s, [250.0, 600.0], rtol=1e-4)
    np.testing.assert_allclose(fit.offset, 35.0, rtol=1e-3)


def test_truncation_drops_echoes_at_the_noise_floor(rng):
    mag, sigma = rician_decays(1000.0, 50, 200, rng)
    fit = fit_r2star(mag, TE_SEED, method="truncation", noise_sigma=sigma)
    used = fit.n_echoes_used
    assert used.dtype == np.int16
    assert 2 <= used.min() and used.max() <= 5  # S(TE4) = 50·e^-4.2·σ is below 2 noise floors
    mag_low, sigma = rician_decays(30.0, 100, 50, rng)
    fit_low = fit_r2star(mag_low, TE_SEED, method="truncation", noise_sigma=sigma)
    assert np.all(fit_low.n_echoes_used == 12)


@pytest.mark.parametrize("n_coils", [1, 4])
def test_noncentral_chi_mean_matches_monte_carlo(n_coils, rng):
    amplitudes = np.array([0.0, 0.7, 2.0, 5.0, 15.0, 60.0])
    mean = noncentral_chi_mean(amplitudes, 1.0, n_coils)
    draws = 200000
    for a, expected in zip(amplitudes, mean, strict=True):
        x = rng.standard_normal((draws, n_coils)) + a / np.sqrt(n_coils)
        y = rng.standard_normal((draws, n_coils))
        mc = np.sqrt((x * x + y * y).sum(axis=1)).mean()
        assert abs(mc - expected) < 0.01 * max(1.0, a)
    assert noise_floor(1.0, 1) == pytest.approx(np.sqrt(np.pi / 2))


def test_rician_mean_and_derivative_match_closed_form():
    """N = 1: E[M] = σ√(π/2)·L_1/2(−A²/2σ²) in scaled Bessel functions; dE/dA numerically."""
    a = np.linspace(0.0, 45.0, 901)
    z = a * a / 2.0
    exact = np.sqrt(np.pi / 2) * ((1 + z) * sp.i0e(z / 2) + z * sp.i1e(z / 2))
    value, slope = noncentral_chi_mean(a, 1.0, 1, derivative=True)
    np.testing.assert_allclose(value, exact, rtol=2e-5)
    numeric = np.gradient(exact, a)
    np.testing.assert_allclose(slope[1:-1], numeric[1:-1], atol=2e-3)


def test_estimate_noise_sigma_from_background(rng):
    shape = (48, 48, 4, 6)
    sigma = 7.0
    clean = np.zeros(shape)
    clean[12:36, 12:36] = 400.0 * np.exp(-np.arange(6) * 0.1)
    noisy = np.abs(clean + sigma * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)))
    assert estimate_noise_sigma(noisy) == pytest.approx(sigma, rel=0.05)
    air = np.ones(shape[:3], dtype=bool)
    air[10:38, 10:38] = False
    assert estimate_noise_sigma(noisy, mask=air) == pytest.approx(sigma, rel=0.03)
    with pytest.raises(QSMInputError, match="background"):
        estimate_noise_sigma(noisy, mask=np.zeros(shape[:3], dtype=bool))


def test_noise_sigma_is_estimated_when_not_given(rng):
    shape = (40, 40, 3, 12)
    sigma = 5.0
    clean = np.zeros(shape)
    clean[10:30, 10:30] = 1000.0 * np.exp(-500.0 * TE_SEED)
    noisy = np.abs(clean + sigma * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)))
    mask = clean[..., 0] > 0
    fit = fit_r2star(noisy.astype(np.float32), TE_SEED, method="noise_corrected", mask=mask)
    assert fit.parameters["noise_sigma"] == pytest.approx(sigma, rel=0.05)
    assert abs(np.median(fit.r2star_per_s[mask]) / 500.0 - 1) < 0.03


def test_shapes_mask_dtype_range_and_sidecar_parameters(xp):
    rng = np.random.default_rng(3)
    r2s = rng.uniform(20, 1200, size=(6, 5, 4))
    r2s[0, 0, 0] = 5000.0  # beyond the default range: clipped
    mag = 800.0 * np.exp(-r2s[..., None] * TE_SEED) + rng.uniform(0, 1, (6, 5, 4, 12))
    mask = np.ones((6, 5, 4), dtype=bool)
    mask[-1] = False
    for method in R2STAR_METHODS:
        fit = fit_r2star(xp.asarray(mag, dtype=xp.float32), TE_SEED, method=method,
                         mask=xp.asarray(mask), noise_sigma=0.5)
        for array in (fit.r2star_per_s, fit.s0, fit.goodness):
            assert backend.get_array_module(array) is xp
            assert array.shape == (6, 5, 4) and array.dtype == np.float32
            host = backend.to_numpy(array)
            assert np.all(np.isfinite(host)) and np.all(host[~mask] == 0)
        r = backend.to_numpy(fit.r2star_per_s)
        assert r.max() <= 3000.0 and r.min() >= 0.0
        json.dumps(fit.parameters)
        assert fit.parameters["te_s"][0] == pytest.approx(0.99e-3)


def test_backends_agree(xp):
    rng = np.random.default_rng(5)
    mag, sigma = rician_decays(600.0, 40, 200, rng)
    for method in ("nlls", "truncation", "noise_corrected"):
        ref = fit_r2star(mag, TE_SEED, method=method, noise_sigma=sigma).r2star_per_s
        got = fit_r2star(xp.asarray(mag), TE_SEED, method=method, noise_sigma=sigma)
        np.testing.assert_allclose(backend.to_numpy(got.r2star_per_s), ref, rtol=1e-6,
                                   atol=1e-6)


def test_chunking_gives_the_same_answer(rng):
    mag, sigma = rician_decays(300.0, 30, 100, rng)
    whole = fit_r2star(mag, TE_SEED, method="noise_corrected", noise_sigma=sigma)
    chunked = fit_r2star(mag, TE_SEED, method="noise_corrected", noise_sigma=sigma,
                         chunk_size=7)
    np.testing.assert_allclose(chunked.r2star_per_s, whole.r2star_per_s, rtol=1e-4)


def test_bad_inputs_raise_clear_errors():
    mag = np.ones((3, 12))
    with pytest.raises(QSMInputError, match="echo"):
        fit_r2star(mag, TE_SEED[:5])
    with pytest.raises(QSMInputError, match="seconds"):
        fit_r2star(mag, TE_SEED * 1000)
    with pytest.raises(QSMConfigError, match="unknown R2\\* method"):
        fit_r2star(mag, TE_SEED, method="magic")
    with pytest.raises(QSMConfigError, match="no option"):
        fit_r2star(mag, TE_SEED, method="loglinear", floor_factor=3)
    with pytest.raises(QSMConfigError, match="uniformly"):
        fit_r2star(mag[:, :3], [0.001, 0.002, 0.004], method="arlo")
    bad = mag.copy()
    bad[1, 4] = np.nan
    with pytest.raises(QSMInputError, match="non-finite"):
        fit_r2star(bad, TE_SEED)
    with pytest.raises(QSMInputError, match="mask"):
        fit_r2star(mag, TE_SEED, mask=np.zeros(3, dtype=bool))
    with pytest.raises(QSMInputError, match="noise sigma"):
        fit_r2star(mag, TE_SEED, method="noise_corrected", noise_sigma=0.0)


# -- dispatch to the CUDA kernel of "truncation" ----------------------------------------------
def test_kernel_dispatch_choice():
    from qsmliver.relaxometry.r2star import _kernel_applies

    gpu = object()  # stands for the cupy module: anything that is not numpy
    assert _kernel_applies(gpu, "truncation", {}, None)
    assert _kernel_applies(gpu, "truncation", {"max_iter": 30, "r2star_range": (0, 2000)}, None)
    assert not _kernel_applies(gpu, "truncation", {}, False)
    assert not _kernel_applies(gpu, "nlls", {}, None)
    assert not _kernel_applies(np, "truncation", {}, None)
    assert not _kernel_applies(gpu, "truncation", {"weighting": "none"}, None)
    with pytest.raises(QSMConfigError, match="NumPy arrays"):
        _kernel_applies(np, "truncation", {}, True)
    with pytest.raises(QSMConfigError, match="'truncation' only"):
        _kernel_applies(gpu, "arlo", {}, True)
    with pytest.raises(QSMConfigError, match="use_kernel"):
        _kernel_applies(gpu, "truncation", {}, "yes")


def test_fit_r2star_routes_truncation_to_the_kernel(monkeypatch):
    from qsmliver.relaxometry import R2StarFit, _gpu, r2star

    calls = []

    def fake_kernel(xp, magnitude, te_s, mask, noise_sigma, options):
        calls.append(dict(options, noise_sigma=noise_sigma))
        return "kernel result"

    monkeypatch.setattr(_gpu, "_fit_with_kernel", fake_kernel)
    te = 1e-3 * np.arange(1, 7)
    mag = 100.0 * np.exp(-50.0 * te)[None, :]
    # NumPy input: never the kernel, even for "truncation"
    assert isinstance(fit_r2star(mag, te, method="truncation", noise_sigma=1.0), R2StarFit)
    assert calls == []
    # pretend the input is on the GPU: "truncation" goes to the kernel with its options
    monkeypatch.setattr(r2star.backend, "get_array_module", lambda *a: object())
    out = fit_r2star(mag, te, method="truncation", noise_sigma=2.0, max_iter=20)
    assert out == "kernel result" and calls == [{"max_iter": 20, "noise_sigma": 2.0}]
    with pytest.raises(QSMConfigError):  # the vectorised path runs (and fails on a fake xp)
        fit_r2star(mag, te, method="truncation", noise_sigma=2.0, use_kernel=False,
                   weighting="none")
    assert len(calls) == 1
