"""Signal models: hand-computed GRE values with multi-peak fat, in/opposed phase, spin echo."""

from __future__ import annotations

import cmath
import math

import numpy as np
import pytest

from qsmliver import backend
from qsmliver.errors import QSMConfigError
from qsmliver.fatwater import HAMILTON_LIVER, ISMRM_6PEAK, FatSpectrum, get_fat_spectrum
from qsmliver.simulate import add_complex_noise, gre_signal, spin_echo_signal

GAMMA = 42.577478e6


def _hand_signal(w, f, te, b0, r2s, psi, phi0, spectrum):
    fat = sum(a * cmath.exp(2j * math.pi * s * GAMMA * b0 * 1e-6 * te)
              for s, a in zip(spectrum.shifts_ppm, spectrum.amplitudes, strict=True))
    return (w + f * fat) * math.exp(-r2s * te) * cmath.exp(1j * (2 * math.pi * psi * te + phi0))


@pytest.mark.parametrize("b0", [1.5, 3.0])
@pytest.mark.parametrize("spectrum", [ISMRM_6PEAK, HAMILTON_LIVER], ids=["ismrm", "hamilton"])
def test_gre_signal_matches_hand_computation(xp, b0, spectrum):
    te = [0.00099 + 0.00141 * k for k in range(12)]  # seed study 1.5 T protocol
    water = xp.asarray([[[0.7]]])
    fat = xp.asarray([[[0.3]]])
    signal = backend.to_numpy(gre_signal(water, fat, te, b0, r2star_per_s=250.0, field_hz=-35.0,
                                         phi0_rad=0.4, fat_spectrum=spectrum))
    expected = [_hand_signal(0.7, 0.3, t, b0, 250.0, -35.0, 0.4, spectrum) for t in te]
    np.testing.assert_allclose(signal[0, 0, 0], expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("b0", "opposed_ms", "in_phase_ms"), [(1.5, 2.3, 4.6), (3.0, 1.15, 2.3)])
def test_in_and_opposed_phase_echo_times(b0, opposed_ms, in_phase_ms):
    """Equal water and fat: the magnitude dips at the opposed-phase TE of the main CH2 peak
    (-3.4 ppm) and peaks again near the in-phase TE."""
    te = np.linspace(0.0, 1.3 * in_phase_ms * 1e-3, 2000)
    magnitude = np.abs(gre_signal(np.ones((1, 1, 1)), np.ones((1, 1, 1)), te, b0))[0, 0, 0]
    first_dip = te[np.argmin(magnitude[te < in_phase_ms * 1e-3 * 0.75])]
    near_in_phase = te > in_phase_ms * 1e-3 * 0.75
    first_peak = te[near_in_phase][np.argmax(magnitude[near_in_phase])]
    assert first_dip * 1e3 == pytest.approx(opposed_ms, abs=0.15 * opposed_ms)
    assert first_peak * 1e3 == pytest.approx(in_phase_ms, abs=0.1 * in_phase_ms)
    assert magnitude.min() < 0.6 * 2 and magnitude[0] == pytest.approx(2.0)


def test_spectra_normalised_and_scaled_with_field():
    assert sum(ISMRM_6PEAK.amplitudes) == pytest.approx(1.0)
    main_peak_hz = ISMRM_6PEAK.frequencies_hz(3.0)[1]
    assert main_peak_hz == pytest.approx(-3.40 * GAMMA * 3.0 * 1e-6)
    np.testing.assert_allclose(ISMRM_6PEAK.frequencies_hz(3.0), 2 * ISMRM_6PEAK.frequencies_hz(1.5))
    user = get_fat_spectrum(([-3.4], [2.0]))
    assert user.amplitudes == (1.0,)
    assert get_fat_spectrum("Hamilton") is HAMILTON_LIVER
    with pytest.raises(QSMConfigError, match="unknown fat spectrum"):
        get_fat_spectrum("olive")
    with pytest.raises(QSMConfigError, match="2 shifts for 1 amplitudes"):
        FatSpectrum("bad", (-3.4, -2.6), (1.0,))


def test_coil_sensitivities_multiply_each_coil():
    coils = np.stack([np.full((2, 2, 2), 0.5 + 0.5j), np.full((2, 2, 2), 1.0)], axis=-1)
    single = gre_signal(np.ones((2, 2, 2)), np.zeros((2, 2, 2)), [0.002, 0.004], 3.0,
                        field_hz=10.0)
    multi = gre_signal(np.ones((2, 2, 2)), np.zeros((2, 2, 2)), [0.002, 0.004], 3.0,
                       field_hz=10.0, coil_sensitivities=coils)
    assert multi.shape == (2, 2, 2, 2, 2)
    np.testing.assert_allclose(multi[..., 0], single * (0.5 + 0.5j))
    np.testing.assert_allclose(multi[..., 1], single)


def test_spin_echo_and_rician_noise():
    te = np.array([0.01, 0.02, 0.04])
    decay = spin_echo_signal(np.full((1, 1, 1), 100.0), 25.0, te)
    np.testing.assert_allclose(decay[0, 0, 0], 100 * np.exp(-25 * te))
    zeros = np.zeros((200, 200, 1), dtype=np.complex128)
    noisy = add_complex_noise(zeros, 2.0, seed=1)
    assert np.std(noisy.real) == pytest.approx(2.0, rel=0.02)
    # Rayleigh mean of pure noise: sigma * sqrt(pi / 2)
    assert np.mean(np.abs(noisy)) == pytest.approx(2.0 * np.sqrt(np.pi / 2), rel=0.02)
    assert add_complex_noise(zeros.astype(np.complex64), 1.0).dtype == np.complex64
