"""Phase offset removal, unwrapping and field fitting against known truth."""

import numpy as np
import pytest

from qsmliver.backend import to_numpy
from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.phase import (
    estimate_field,
    estimate_phase_offset,
    field_noise_std_hz,
    fit_field_complex,
    fit_field_linear,
    refit_field_fixed_offset,
    remove_phase_offset,
    smooth_phase_offset,
    temporal_unwrap,
    unwrap_laplacian,
    unwrap_quality_guided,
    unwrap_skimage,
    wrap_to_pi,
)
from qsmliver.simulate import brain_phantom

VOXEL = (3.0, 3.0, 3.0)


@pytest.fixture(scope="module")
def phantom():
    return brain_phantom(shape=(64, 64, 48), voxel_size_mm=VOXEL, snr=100, seed=3)


def _smooth_phase(shape=(80, 72, 60), wraps=12.0, seed=0):
    """A smooth phase (a Gaussian bump plus a tilted plane) spanning ``wraps`` cycles in a
    sphere, with steps between neighbours below about π/2 before noise (0.25 rad)."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    bump = np.exp(-(grid[0] ** 2 + 1.5 * grid[1] ** 2 + grid[2] ** 2) / 1.5)
    phase = bump + 1.0 * grid[0] - 0.3 * grid[2]
    mask = sum(g**2 for g in grid) < 0.9
    phase = 2 * np.pi * wraps * (phase - phase[mask].min()) / np.ptp(phase[mask])
    noisy = phase + rng.normal(0, 0.25, shape)
    return phase, noisy, mask


def _agreement(estimate, truth, mask, period=2 * np.pi):
    """Fraction of the mask where estimate - truth is the same whole number of periods."""
    k = np.round((to_numpy(estimate) - truth)[mask] / period)
    _, counts = np.unique(k, return_counts=True)
    return counts.max() / mask.sum()


def test_wrap_to_pi():
    values = np.array([-3 * np.pi, -np.pi, 0.0, np.pi, 2.5 * np.pi])
    wrapped = wrap_to_pi(values)
    assert np.all(wrapped >= -np.pi) and np.all(wrapped < np.pi)
    np.testing.assert_allclose(np.exp(1j * wrapped), np.exp(1j * values), atol=1e-12)


@pytest.mark.parametrize("unwrapper", [unwrap_quality_guided, unwrap_skimage])
def test_congruent_unwrappers_recover_smooth_phase_with_many_wraps(unwrapper):
    truth, noisy, mask = _smooth_phase()
    assert np.ptp(truth[mask]) / (2 * np.pi) > 10
    result = unwrapper(wrap_to_pi(noisy), mask=mask)
    congruence = (result - noisy)[mask] / (2 * np.pi)
    np.testing.assert_allclose(congruence, np.round(congruence), atol=1e-9)
    assert _agreement(result, noisy, mask) > 0.999
    assert np.all(result[~mask] == 0)


def test_quality_guided_keeps_input_device_and_dtype(xp):
    truth, _, mask = _smooth_phase(shape=(20, 18, 16), wraps=5)
    result = unwrap_quality_guided(xp.asarray(wrap_to_pi(truth).astype(np.float32)),
                                   xp.ones(truth.shape, dtype=np.float32), xp.asarray(mask))
    assert type(result) is type(xp.asarray(mask)) and result.dtype == np.float32
    assert _agreement(result, truth, mask) == 1.0


def test_quality_guided_handles_separate_parts():
    truth, _, _ = _smooth_phase(shape=(40, 20, 20), wraps=8)
    mask = np.zeros(truth.shape, bool)
    mask[2:18, 2:18, 2:18] = True
    mask[22:38, 2:18, 2:18] = True  # two islands, each unwrapped from its own seed
    result = unwrap_quality_guided(wrap_to_pi(truth), mask=mask)
    for part in (np.s_[:20], np.s_[20:]):
        island = np.zeros_like(mask)
        island[part] = mask[part]
        assert _agreement(result, truth, island) == 1.0


def test_laplacian_unwrapping_recovers_phase_with_neumann_boundaries(xp):
    shape = (64, 60, 48)
    grid = np.meshgrid(*[np.arange(n) + 0.5 for n in shape], indexing="ij")
    # DCT-II cosines (zero normal derivative at the borders), steps below π/2 per voxel
    truth = 25.0 * np.cos(np.pi * grid[0] / shape[0]) * np.cos(np.pi * grid[1] / shape[1]) \
        + 12.0 * np.cos(2 * np.pi * grid[2] / shape[2])
    assert np.ptp(truth) / (2 * np.pi) > 10
    result = to_numpy(unwrap_laplacian(xp.asarray(wrap_to_pi(truth)), None, (1.0, 1.0, 1.0)))
    error = (result - result.mean()) - (truth - truth.mean())
    assert np.linalg.norm(error) / np.linalg.norm(truth - truth.mean()) < 0.02


def test_temporal_unwrap_is_exact_for_linear_phase():
    rng = np.random.default_rng(1)
    te = np.array([0.004, 0.008, 0.012, 0.016, 0.020])
    field = rng.uniform(-150, 150, (6, 5, 4))
    phase = 2 * np.pi * field[..., None] * te
    result = temporal_unwrap(wrap_to_pi(phase), te, phase[..., 0])
    np.testing.assert_allclose(result, phase, atol=1e-9)


def test_field_from_phantom_equals_truth_up_to_global_period(phantom):
    """Acceptance: > 10 wraps in the last echo, unwrapped field right in > 99.5 % of the mask."""
    brain = phantom.masks["brain"]
    gre = phantom.gre
    last_echo_phase = 2 * np.pi * phantom.truth["total_field_hz"] * gre.te_s[-1]
    assert np.ptp(last_echo_phase[brain]) / (2 * np.pi) > 10
    truth_hz = phantom.truth["total_field_hz"]
    for method in ("complex", "linear"):
        fit = estimate_field(gre.signal, gre.te_s, mask=brain, voxel_size_mm=VOXEL,
                             method=method, unwrap_method="quality")
        period = 1.0 / (gre.te_s[1] - gre.te_s[0])
        assert _agreement(fit.field_hz, truth_hz, brain, period) > 0.995, method
        error = (fit.field_hz - truth_hz)[brain]
        error -= period * np.round(np.median(error) / period)
        assert np.median(np.abs(error)) < 0.5, method  # Hz


@pytest.mark.parametrize("te_ms", [(4.0, 12.0, 20.0, 28.0), (5.0, 15.0)])
def test_phase_offset_follows_the_unwrapped_field_when_te1_is_not_a_multiple_of_dte(te_ms):
    """With TE_1 = ΔTE/2 (qsm-forward's 4, 12, 20, 28 ms; a dual-echo 5, 15 ms) the per-voxel
    fit's φ0 is off by π wherever spatial unwrapping added a period to its field. φ0 must
    follow the unwrapped field, or its smoothing mixes φ0 and φ0 + π and the refitted field
    is wrong (measured before the fix: 22 % / 73 % of the brain off by more than 2 Hz)."""
    ph = brain_phantom(shape=(48, 48, 40), voxel_size_mm=VOXEL, snr=100,
                       te_s=np.array(te_ms) * 1e-3)
    brain, truth_hz = ph.masks["brain"], ph.truth["total_field_hz"]
    period = 1.0 / (ph.gre.te_s[1] - ph.gre.te_s[0])
    assert np.ptp(truth_hz[brain]) > 2 * period  # the field wraps inside the brain
    for smoothing_mm in (0.0, 6.0):
        fit = estimate_field(ph.gre.signal, ph.gre.te_s, mask=brain, voxel_size_mm=VOXEL,
                             offset_smoothing_mm=smoothing_mm)
        phi0_error = wrap_to_pi(fit.phase_offset_rad - ph.truth["phi0_rad"])[brain]
        assert np.percentile(np.abs(phi0_error), 99) < 0.1, smoothing_mm
        field_error = np.abs(fit.field_hz - truth_hz)[brain]
        assert np.mean(field_error > 2.0) < 0.02, smoothing_mm


def test_mcpc3ds_removes_phase_offset(phantom):
    brain = phantom.masks["brain"]
    gre = phantom.gre
    offset = estimate_phase_offset(gre.signal, gre.te_s, mask=brain, voxel_size_mm=VOXEL)
    error = wrap_to_pi(offset - phantom.truth["phi0_rad"])[brain]
    assert np.sqrt(np.mean(error**2)) < 0.05
    corrected = remove_phase_offset(gre.signal, offset)
    assert corrected.shape == gre.signal.shape and corrected.dtype == gre.signal.dtype


def test_masked_complex_fit_equals_the_whole_volume_fit_inside_the_mask(phantom):
    """estimate_field fits only the mask's voxels (the air outside would keep the Gauss-Newton
    loop going to max_iter): inside, the same φ0, noise and field (up to the aliasing period)
    as a fit of every voxel; outside, field and φ0 0 and standard deviations inf."""
    brain, gre = phantom.masks["brain"], phantom.gre
    whole = fit_field_complex(gre.signal, gre.te_s)
    fit = estimate_field(gre.signal, gre.te_s, mask=brain, voxel_size_mm=VOXEL,
                         offset_smoothing_mm=0)
    np.testing.assert_allclose(wrap_to_pi(fit.phase_offset_rad - whole.phase_offset_rad)[brain],
                               0, atol=1e-3)
    np.testing.assert_allclose(fit.noise_std_hz[brain], whole.noise_std_hz[brain], rtol=1e-3)
    np.testing.assert_allclose(fit.apriori_std_hz[brain], whole.apriori_std_hz[brain],
                               rtol=1e-5)
    period = whole.aliasing_period_hz
    cycles = (fit.field_hz - whole.field_hz)[brain] / period
    np.testing.assert_allclose(cycles, np.round(cycles), atol=1e-3)
    assert not fit.field_hz[~brain].any() and not fit.phase_offset_rad[~brain].any()
    assert np.isinf(fit.noise_std_hz[~brain]).all() and np.isinf(fit.apriori_std_hz[~brain]).all()


def test_phase_offset_would_leak_into_linear_fit_without_removal(phantom):
    """Why offset removal exists: φ0 (up to 1 rad here) biases a fit through the origin."""
    brain = phantom.masks["brain"]
    gre = phantom.gre
    te = gre.te_s
    truth_hz = phantom.truth["total_field_hz"]
    true_phase = 2 * np.pi * truth_hz[..., None] * te + phantom.truth["phi0_rad"][..., None]
    biased = fit_field_linear(true_phase, np.abs(gre.signal), te)
    leak = np.median(np.abs(biased.field_hz - truth_hz)[brain])
    fit = estimate_field(gre.signal, te, mask=brain, voxel_size_mm=VOXEL, method="linear")
    corrected = np.median(np.abs(fit.field_hz - truth_hz)[brain])
    assert leak > 1.5 and corrected < 0.5 and corrected < leak / 10


def test_complex_fit_noise_map_matches_monte_carlo():
    rng = np.random.default_rng(7)
    te = np.array([0.003, 0.006, 0.009, 0.012, 0.015])
    sigma = 0.05
    n = 4000
    field = 37.0
    clean = 1.0 * np.exp(1j * (0.4 + 2 * np.pi * field * te)) * np.exp(-20 * te)
    noisy = clean + sigma * (rng.standard_normal((n, 1, 1, te.size))
                             + 1j * rng.standard_normal((n, 1, 1, te.size)))
    fit = fit_field_complex(noisy, te)
    empirical = np.std(fit.field_hz)
    predicted = np.median(fit.noise_std_hz)
    assert abs(np.mean(fit.field_hz) - field) < 3 * empirical / np.sqrt(n)
    assert 0.8 < predicted / empirical < 1.25
    assert fit.aliasing_period_hz == pytest.approx(1 / 0.003)


def test_field_fits_do_not_depend_on_the_check_interval(monkeypatch):
    """With a host check every 7 Gauss-Newton steps (a GPU checks every 10), every voxel
    freezes where the every-iteration test stops: the same fit, bit for bit."""
    from qsmliver.phase import field as field_module

    rng = np.random.default_rng(3)
    te = np.array([0.004, 0.008, 0.012, 0.016, 0.020])
    f = rng.uniform(-40, 40, (500, 1, 1, 1))
    signal = np.exp(1j * (0.7 + 2 * np.pi * f * te)) * np.exp(-30 * te)
    noisy = (signal + 0.1 * (rng.standard_normal(signal.shape)
                             + 1j * rng.standard_normal(signal.shape))).astype(np.complex64)
    first = fit_field_complex(noisy, te, tol_rad=1e-6)
    offset = np.full(first.field_hz.shape, 0.7, np.float32)
    refit = refit_field_fixed_offset(noisy, te, first.field_hz + 3, offset, tol_rad=1e-6)
    monkeypatch.setattr(field_module, "convergence_check_interval", lambda xp=np: 7)
    again = fit_field_complex(noisy, te, tol_rad=1e-6)
    for name in ("field_hz", "phase_offset_rad", "noise_std_hz"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    np.testing.assert_array_equal(
        refit_field_fixed_offset(noisy, te, first.field_hz + 3, offset, tol_rad=1e-6), refit)


def test_refit_with_known_offset_is_exact_and_beats_the_two_parameter_fit():
    """With φ0 known, the one-parameter fit recovers the field from a start 5 Hz off
    (noise-free), and on noisy data its spread is the Cramér-Rao bound for a known offset,
    sqrt(Σ w TE²)⁻¹, below that of the two-parameter complex fit (sqrt(s0/det))."""
    rng = np.random.default_rng(11)
    te = np.array([0.004, 0.008, 0.012, 0.016, 0.020])
    n, field, phi0, sigma = 4000, 23.0, -2.9, 0.05
    clean = np.exp(1j * (phi0 + 2 * np.pi * field * te)) * np.exp(-25 * te)
    signal = np.broadcast_to(clean, (n, 1, 1, te.size)).copy()
    offset = np.full((n, 1, 1), phi0)
    start = np.full((n, 1, 1), field + 5.0)
    np.testing.assert_allclose(refit_field_fixed_offset(signal, te, start, offset), field,
                               atol=1e-6)
    noisy = signal + sigma * (rng.standard_normal(signal.shape)
                              + 1j * rng.standard_normal(signal.shape))
    two = fit_field_complex(noisy, te)
    one = refit_field_fixed_offset(noisy, te, two.field_hz, offset)
    w = np.abs(clean) ** 2
    bound_known = sigma / np.sqrt((w * te**2).sum()) / (2 * np.pi)
    assert abs(np.mean(one) - field) < 4 * bound_known / np.sqrt(n)
    assert 0.9 < np.std(one) / bound_known < 1.1
    assert np.std(one) < 0.6 * np.std(two.field_hz)


def test_smooth_phase_offset_removes_voxel_noise_and_keeps_wraps_and_edges():
    """A tilted offset ramp (0.08 rad per voxel, crossing ±π) with 0.3 rad of voxel noise, in
    a mask that cuts the window: smoothing brings it back to the ramp everywhere, up to the
    mask's edge, where a Gaussian average (zeroth order, as in MCPC-3D-S) is biased by the
    ramp."""
    from scipy import ndimage

    rng = np.random.default_rng(2)
    shape = (40, 36, 30)
    x = np.arange(shape[0])[:, None, None] * np.ones(shape)
    truth = wrap_to_pi(2.5 + 0.08 * x)  # crosses π near x = 8
    noisy = wrap_to_pi(truth + rng.normal(0, 0.3, shape))
    magnitude = np.ones(shape)
    mask = np.zeros(shape, dtype=bool)
    mask[:28, 4:-4, 4:-4] = True
    voxel = (1.5, 1.5, 1.5)
    smoothed = smooth_phase_offset(noisy, magnitude, mask=mask, voxel_size_mm=voxel,
                                   smoothing_mm=4.5)
    inside = mask & (x >= 6)
    error = np.abs(wrap_to_pi(smoothed - truth))
    assert np.median(np.abs(wrap_to_pi(noisy - truth))[inside]) > 0.15
    assert np.median(error[inside]) < 0.02 and error[inside].max() < 0.15
    edge = mask & (x == 27)
    phasor = np.where(mask, np.exp(1j * noisy), 0)
    sigma = 4.5 / 1.5
    gaussian = np.angle(ndimage.gaussian_filter(phasor.real, sigma)
                        + 1j * ndimage.gaussian_filter(phasor.imag, sigma))
    assert np.median(np.abs(wrap_to_pi(gaussian - truth))[edge]) > 0.15
    assert np.median(error[edge]) < 0.04
    np.testing.assert_array_equal(smooth_phase_offset(noisy, magnitude, smoothing_mm=0), noisy)
    with pytest.raises(QSMInputError, match="non-negative"):
        smooth_phase_offset(noisy, magnitude, smoothing_mm=-1.0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fft_gaussian_filters_equal_scipy_with_zero_boundary(xp, dtype):
    """Every derivative order the smoother uses, with anisotropic σ (one kernel longer than
    its axis): the FFT filters equal scipy.ndimage's direct ones in mode "constant", in the
    input's precision; an even-sized axis and a σ below one voxel are included."""
    from scipy import ndimage

    from qsmliver.phase.gaussian import gaussian_filters

    rng = np.random.default_rng(9)
    array = rng.normal(0, 1, (21, 16, 13)).astype(dtype)
    array[3:7, 2:5, :] += 5.0  # a step: shifted kernels would show
    sigma = [2.3, 0.7, 3.6]
    orders = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (2, 0, 0), (0, 2, 0), (0, 0, 2),
              (1, 1, 0), (1, 0, 1), (0, 1, 1)]
    filtered = gaussian_filters(xp.asarray(array), sigma, orders)
    tolerance = 1e-12 if dtype == np.float64 else 2e-5
    for order in orders:
        reference = ndimage.gaussian_filter(array.astype(np.float64), sigma, order=order,
                                            mode="constant")
        result = to_numpy(filtered[order])
        assert result.shape == array.shape and result.dtype == dtype
        scale = np.abs(reference).max()
        np.testing.assert_allclose(result, reference, atol=tolerance * scale, rtol=0)
    scaled = gaussian_filters(xp.asarray(array), sigma, [(1, 1, 0), (2, 0, 0)],
                              factors={(1, 1, 0): 2.5})
    for order, factor in [((1, 1, 0), 2.5), ((2, 0, 0), 1.0)]:
        expected = factor * to_numpy(filtered[order]).astype(np.float64)
        np.testing.assert_allclose(to_numpy(scaled[order]), expected, rtol=0,
                                   atol=tolerance * np.abs(expected).max())
    with pytest.raises(ValueError, match="order"):
        gaussian_filters(xp.asarray(array), sigma, [(3, 0, 0)])


def test_local_linear_intercept_equals_a_brute_force_weighted_plane_fit(xp):
    """The smoother's closed form (Gaussian-derivative moments, Schur complement of the 3×3
    second-moment block) against the definition: at each voxel, the intercept of a weighted
    least-squares plane over the truncated, normalised discrete Gaussian window, solved as a
    dense 4×4 system with explicit coordinates. Weights reach the border: outside the array
    there are none (the filters are zero-padded)."""
    from qsmliver.phase.offset import _local_linear_intercept

    rng = np.random.default_rng(4)
    shape, sigma = (13, 12, 11), np.array([0.9, 0.8, 0.7])
    radius = [int(4.0 * s + 0.5) for s in sigma]  # scipy's truncate = 4
    values = rng.normal(0, 1, shape) + 0.3 * np.indices(shape)[0]
    weight = rng.uniform(0.2, 1.0, shape)
    weight[rng.random(shape) < 0.3] = 0  # holes: the window is cut irregularly
    fast = to_numpy(_local_linear_intercept(xp.asarray(values), xp.asarray(weight), sigma))
    offsets = np.stack(np.meshgrid(*[np.arange(-r, r + 1) for r in radius], indexing="ij"))
    window = np.exp(-0.5 * ((offsets / sigma[:, None, None, None]) ** 2).sum(0))
    window /= np.prod([np.exp(-0.5 * (np.arange(-r, r + 1) / s) ** 2).sum()
                       for r, s in zip(radius, sigma, strict=True)])
    padded_w = np.pad(weight, [(r, r) for r in radius])
    padded_v = np.pad(values, [(r, r) for r in radius])
    design = np.concatenate([np.ones((1, *window.shape)), offsets]).reshape(4, -1)
    blocks = [tuple(slice(i, i + 2 * r + 1) for i, r in zip(x, radius, strict=True))
              for x in np.ndindex(shape)]
    ridge = 1e-6 * max((window * padded_w[b]).sum() for b in blocks) * sigma.max() ** 2
    compared = 0
    for x, block in zip(np.ndindex(shape), blocks, strict=True):
        w = (window * padded_w[block]).ravel()
        if w.sum() < 0.05:
            continue
        normal = (design * w) @ design.T + ridge * np.diag([0.0, 1, 1, 1])
        rhs = (design * w) @ padded_v[block].ravel()
        assert fast[x] == pytest.approx(np.linalg.solve(normal, rhs)[0], abs=1e-4)
        compared += 1
    assert compared > 200  # the core and its rim


@pytest.mark.parametrize("method", ["complex", "linear"])
def test_cramer_rao_noise_map_is_calibrated_and_smooth(method):
    """field_noise_std_hz: right level (Monte Carlo), no per-voxel scatter, follows the signal."""
    rng = np.random.default_rng(11)
    te = np.array([0.004, 0.008, 0.012, 0.016, 0.020, 0.024])
    sigma, n, field = 0.05, 4000, 12.0
    amplitude = np.where(np.arange(n) < n // 2, 1.0, 0.5)[:, None, None, None]
    clean = amplitude * np.exp(1j * (0.3 + 2 * np.pi * field * te)) * np.exp(-25 * te)
    noisy = clean + sigma * (rng.standard_normal((n, 1, 1, te.size))
                             + 1j * rng.standard_normal((n, 1, 1, te.size)))
    if method == "complex":
        fit = fit_field_complex(noisy, te)
    else:
        fit = fit_field_linear(np.unwrap(np.angle(noisy), axis=-1) - 0.3, np.abs(noisy), te)
    crb = field_noise_std_hz(fit).ravel()
    strong, weak = slice(0, n // 2), slice(n // 2, n)
    for part in (strong, weak):
        empirical = np.std(fit.field_hz.ravel()[part])
        assert 0.85 < np.median(crb[part]) / empirical < 1.15
        # it scatters only with the measured magnitudes; the per-voxel residual estimate
        # (4 degrees of freedom) scatters by a third
        assert np.std(crb[part]) < 0.1 * np.median(crb[part])
        assert np.std(fit.noise_std_hz.ravel()[part]) > 0.25 * np.median(crb[part])
    assert np.median(crb[weak]) / np.median(crb[strong]) == pytest.approx(2.0, rel=0.05)
    # a mask restricts the estimate and marks the rest unreliable
    mask = np.zeros((n, 1, 1), bool)
    mask[:10] = True
    masked = field_noise_std_hz(fit, mask)
    assert np.isinf(masked[~mask]).all() and np.isfinite(masked[mask]).all()


def test_complex_fit_runs_on_backend(xp):
    te = np.array([0.002, 0.004, 0.006])
    field = np.linspace(-100, 100, 24).reshape(2, 3, 4)
    signal = np.exp(1j * 2 * np.pi * field[..., None] * te).astype(np.complex64)
    fit = fit_field_complex(xp.asarray(signal), te)
    assert fit.field_hz.dtype == np.float32
    noise = field_noise_std_hz(fit)  # one level times the a-priori map, on the same backend
    assert type(noise) is type(fit.field_hz) and noise.dtype == np.float32
    ratio = to_numpy(noise) / to_numpy(fit.apriori_std_hz)
    assert ratio.min() > 0 and np.ptp(ratio) < 1e-5 * ratio.max()
    np.testing.assert_allclose(to_numpy(fit.field_hz), field, atol=1e-2)


def test_bad_inputs_are_clear_errors(phantom):
    gre = phantom.gre
    with pytest.raises(QSMConfigError, match="unknown field method"):
        estimate_field(gre.signal, gre.te_s, method="magic")
    with pytest.raises(QSMConfigError, match="unknown unwrapping method"):
        estimate_field(gre.signal, gre.te_s, unwrap_method="magic")
    with pytest.raises(QSMConfigError, match="offset_smoothing_mm"):
        estimate_field(gre.signal, gre.te_s, offset_smoothing_mm=-2.0)
    for bad in ("x", None, float("nan"), float("inf"), True):
        with pytest.raises(QSMConfigError, match="offset_smoothing_mm"):
            estimate_field(gre.signal, gre.te_s, offset_smoothing_mm=bad)
    with pytest.raises(QSMInputError, match="echo times"):
        estimate_field(gre.signal, gre.te_s[:3])
    with pytest.raises(QSMInputError, match="empty"):
        unwrap_quality_guided(np.zeros((4, 4, 4)), mask=np.zeros((4, 4, 4), bool))
    with pytest.raises(QSMInputError, match="non-empty"):
        estimate_field(gre.signal, gre.te_s, mask=np.zeros(gre.shape[:3], bool))
    with pytest.raises(QSMInputError, match="non-empty"):
        estimate_field(gre.signal, gre.te_s, mask=np.ones((4, 4, 4), bool))
    with pytest.raises(QSMInputError, match="does not match"):
        unwrap_laplacian(np.zeros((4, 4, 4)), np.ones((4, 4, 5), bool))


def test_aliased_voxels_flags_steep_and_wrong_period_neighbours():
    from qsmliver.phase import aliased_voxels

    period = 250.0
    field = np.zeros((12, 12, 12))
    field[..., 6:] = 150.0  # a true step of 0.6 period: aliased, cannot be trusted
    mask = np.ones(field.shape, bool)
    flagged = aliased_voxels(field, mask, period)
    assert flagged[:, :, 5:7].all() and not flagged[:, :, :5].any() and not flagged[:, :, 7:].any()
    # a smooth field wrongly unwrapped by one period in a block: the block's faces are caught
    smooth = np.linspace(0, 30, 12)[:, None, None] * np.ones((12, 12, 12))
    wrong = smooth.copy()
    wrong[4:8, 4:8, 4:8] += period
    flagged = aliased_voxels(wrong, mask, period)
    assert flagged[4, 5, 5] and flagged[3, 5, 5] and not flagged[5, 5, 5]
    assert not aliased_voxels(smooth, mask, period).any()
    # neighbours outside the mask are ignored
    assert not aliased_voxels(field, field == 0, period).any()
    with pytest.raises(QSMInputError):
        aliased_voxels(field, mask, period, fraction=0.7)
