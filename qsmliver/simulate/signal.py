"""Signal models: multi-echo complex gradient echo with multi-peak fat, and spin-echo decay.

Gradient echo (DESIGN section 5)::

    S(TE) = (W + F · Σ_p a_p exp(i2π f_p TE)) · exp(−R2*·TE) · exp(i2π ψ TE) · exp(iφ0)

with W, F the water and fat proton densities, a common R2*, the field map ψ in Hz and the
initial phase φ0 (Yu et al., MRM 2008;60:1122; Hernando et al., MRM 2010;63:79). Optional coil
sensitivities multiply the signal per coil; complex Gaussian noise is added at a given SNR.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from qsmliver import backend
from qsmliver.fatwater.spectra import FatSpectrum, fat_basis

__all__ = ["add_complex_noise", "gre_signal", "spin_echo_signal"]


def gre_signal(
    water,
    fat,
    te_s: ArrayLike,
    b0_t: float,
    *,
    r2star_per_s=0.0,
    field_hz=0.0,
    phi0_rad=0.0,
    fat_spectrum: str | FatSpectrum = "ismrm",
    coil_sensitivities=None,
    dtype=np.complex128,
):
    """Noise-free multi-echo complex GRE signal of water and multi-peak fat.

    Parameters
    ----------
    water, fat : (X, Y, Z) array_like
        Water and fat proton densities (real, arbitrary units; complex allowed).
    te_s : (E,) array_like
        Echo times in seconds.
    b0_t : float
        Field strength in tesla (scales the fat frequencies).
    r2star_per_s : float or (X, Y, Z) array_like
        Common R2* of water and fat, 1/s.
    field_hz : float or (X, Y, Z) array_like
        Off-resonance ψ (susceptibility field plus shim residual), Hz.
    phi0_rad : float or (X, Y, Z) array_like
        Initial (echo-independent) phase, radians.
    fat_spectrum : str or FatSpectrum
        "ismrm" (default), "hamilton", or a :class:`FatSpectrum`.
    coil_sensitivities : (X, Y, Z, C) array_like, optional
        Complex coil sensitivities; when given the result has a trailing coil axis.
    dtype : complex dtype
        complex128 (reference) or complex64.

    Returns
    -------
    (X, Y, Z, E) or (X, Y, Z, E, C) complex ndarray
        Same array module as ``water``.

    Examples
    --------
    >>> s = gre_signal(np.ones((1, 1, 1)), np.zeros((1, 1, 1)), [0.001, 0.002], 3.0,
    ...                r2star_per_s=100.0)
    >>> np.round(np.abs(s[0, 0, 0]), 6).tolist()
    [0.904837, 0.818731]
    """
    xp = backend.get_array_module(water)
    water = xp.asarray(water)
    fat = xp.asarray(fat)
    te = np.atleast_1d(np.asarray(te_s, dtype=np.float64))
    basis = xp.asarray(fat_basis(fat_spectrum, te, b0_t))
    te_x = xp.asarray(te)
    r2s = xp.asarray(r2star_per_s, dtype=xp.float64)[..., None]
    psi = xp.asarray(field_hz, dtype=xp.float64)[..., None]
    phi0 = xp.asarray(phi0_rad, dtype=xp.float64)[..., None]
    species = water[..., None] + fat[..., None] * basis
    signal = species * xp.exp(-r2s * te_x + 1j * (2 * np.pi * psi * te_x + phi0))
    if coil_sensitivities is not None:
        coils = xp.asarray(coil_sensitivities)
        signal = signal[..., None] * coils[..., None, :]
    return signal.astype(dtype, copy=False)


def spin_echo_signal(s0, r2_per_s, te_s: ArrayLike, *, dtype=np.float64):
    """Mono-exponential multi-echo spin-echo magnitude ``S0 · exp(−R2 · TE)``.

    Parameters
    ----------
    s0 : (X, Y, Z) array_like
        Signal at TE = 0.
    r2_per_s : float or (X, Y, Z) array_like
        R2 in 1/s.
    te_s : (E,) array_like
        Echo times in seconds.

    Returns
    -------
    (X, Y, Z, E) real ndarray
        Noise-free magnitudes; use :func:`add_complex_noise` and ``abs`` for Rician data.
    """
    xp = backend.get_array_module(s0)
    te = xp.asarray(np.atleast_1d(np.asarray(te_s, dtype=np.float64)))
    r2 = xp.asarray(r2_per_s, dtype=xp.float64)[..., None]
    return (xp.asarray(s0)[..., None] * xp.exp(-r2 * te)).astype(dtype, copy=False)


def add_complex_noise(signal, sigma: float, *, seed: int | np.random.Generator | None = 0):
    """Add circular complex Gaussian noise with standard deviation ``sigma`` per channel.

    The real and imaginary parts each get N(0, sigma²), so the magnitude of pure noise is
    Rayleigh distributed and a noisy magnitude is Rician, as in MR images.

    Parameters
    ----------
    signal : ndarray
        Complex (or real) signal; NumPy or CuPy.
    sigma : float
        Noise standard deviation of the real and of the imaginary channel.
    seed : int or numpy.random.Generator, optional
        Seed for reproducibility (noise is drawn on the host, then moved to the device).
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    xp = backend.get_array_module(signal)
    noise = rng.standard_normal(signal.shape) + 1j * rng.standard_normal(signal.shape)
    noisy = xp.asarray(signal) + xp.asarray(noise * sigma)
    out_dtype = np.complex64 if signal.dtype in (np.float32, np.complex64) else np.complex128
    return noisy.astype(out_dtype, copy=False)
