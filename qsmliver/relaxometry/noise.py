"""Magnitude noise: the Rician / non-central chi signal mean and background noise estimation.

A magnitude image reconstructed from ``N`` coil channels with complex Gaussian noise of standard
deviation σ per real/imaginary channel (sum-of-squares combination) follows a non-central chi
distribution with ``2N`` degrees of freedom; ``N = 1`` is the Rician case and pure noise is then
Rayleigh distributed. Its mean for a true amplitude ``A`` is (Koay & Basser, J Magn Reson
2006;179:317)::

    E[M] = σ · √2 · Γ(N + 1/2) / Γ(N) · ₁F₁(−1/2; N; −A² / (2σ²))

which is ``σ·√(π/2)`` (the "noise floor", 1.2533σ) at ``A = 0`` for ``N = 1`` and tends to
``√(A² + (2N − 1)σ²)`` for ``A ≫ σ``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import scipy.special as sp

from qsmliver import backend
from qsmliver.errors import QSMInputError

__all__ = ["estimate_noise_sigma", "noise_floor", "noncentral_chi_mean"]

#: Normalised amplitude A/σ up to which the mean is tabulated; above it the asymptotic
#: ``√(A² + (2N − 1)σ²)`` is used (its error there is below 1e-5 σ).
_TABLE_MAX = 40.0
_TABLE_STEP = 0.005


def noise_floor(sigma: float | Any, n_coils: int = 1):
    """Mean magnitude of pure noise (the noise floor): ``σ·√2·Γ(N+1/2)/Γ(N)``.

    Parameters
    ----------
    sigma : float or ndarray
        Noise standard deviation per real/imaginary channel (signal units).
    n_coils : int
        Number of coil channels combined by sum of squares (1: Rayleigh, ``σ·√(π/2)``).
    """
    return sigma * math.sqrt(2.0) * math.exp(math.lgamma(n_coils + 0.5) - math.lgamma(n_coils))


@functools.cache
def _mean_table(n_coils: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid of A/σ, E[M]/σ and its derivative d(E[M]/σ)/d(A/σ) (host arrays)."""
    a = np.arange(0.0, _TABLE_MAX + _TABLE_STEP / 2, _TABLE_STEP)
    scale = math.sqrt(2.0) * math.exp(math.lgamma(n_coils + 0.5) - math.lgamma(n_coils))
    mean = scale * sp.hyp1f1(-0.5, n_coils, -(a**2) / 2.0)
    # d/dx 1F1(a; b; x) = (a/b) 1F1(a+1; b+1; x), with x = -A²/2 and dx/dA = -A.
    deriv = scale * (-0.5 / n_coils) * sp.hyp1f1(0.5, n_coils + 1, -(a**2) / 2.0) * (-a)
    return a, mean, deriv


def noncentral_chi_mean(amplitude, sigma, n_coils: int = 1, *, derivative: bool = False):
    """Expected magnitude of a noisy signal of true amplitude ``amplitude`` (vectorised).

    Parameters
    ----------
    amplitude : ndarray
        True (noise-free) amplitudes ``A >= 0``; NumPy or CuPy.
    sigma : float or ndarray
        Noise standard deviation per real/imaginary channel, broadcastable to ``amplitude``.
    n_coils : int
        Number of channels of the sum-of-squares combination (1: Rician).
    derivative : bool
        Also return ``dE[M]/dA``.

    Returns
    -------
    ndarray or (ndarray, ndarray)
        ``E[M]`` (same units as ``amplitude``), and ``dE[M]/dA`` (dimensionless) if asked.

    Notes
    -----
    Evaluated by linear interpolation in a table of the exact ₁F₁ expression (Koay & Basser
    2006) on a 0.005σ grid up to 40σ, and by ``√(A² + (2N−1)σ²)`` above it; relative error
    below 1e-5. Works on both backends (``xp.interp``).
    """
    xp = backend.get_array_module(amplitude)
    grid, mean, deriv = (xp.asarray(t) for t in _mean_table(int(n_coils)))
    a = xp.abs(amplitude) / sigma
    inside = a < _TABLE_MAX
    a_in = xp.minimum(a, _TABLE_MAX)
    tail = xp.sqrt(a * a + (2 * n_coils - 1))
    value = sigma * xp.where(inside, xp.interp(a_in, grid, mean), tail)
    if not derivative:
        return value
    slope = xp.where(inside, xp.interp(a_in, grid, deriv), a / tail)
    return value, slope


def estimate_noise_sigma(
    magnitude,
    mask=None,
    *,
    n_coils: int = 1,
    echo: int = 0,
    min_voxels: int = 50,
) -> float:
    """Noise standard deviation σ from background (air) voxels of a magnitude image.

    Background magnitudes are Rayleigh (``N = 1``) or central chi (``N`` coils) distributed,
    ``M²/σ² ~ χ²(2N)``. Without a ``mask`` the background is found automatically: the histogram
    mode of the echo's magnitudes below their median gives a first σ (the chi mode is
    ``σ·√(2N−1)``); then voxels below the 99 % quantile of the noise distribution are taken as
    background and σ is re-estimated from their mean square, corrected for the truncation
    (``E[M² | M < t] = 2Nσ² · P(N+1, u)/P(N, u)`` with ``u = t²/2σ²`` and ``P`` the regularised
    lower incomplete gamma function); five fixed-point iterations.

    Parameters
    ----------
    magnitude : (..., E) or (...) ndarray
        Magnitude image(s); NumPy or CuPy. For 4-D/(..., E) input the echo ``echo`` is used
        when ``mask`` is None; with a mask all echoes of the background voxels are used.
    mask : (...) bool ndarray, optional
        Background (air) voxels to use, spatial shape. When given, σ is the Rayleigh/chi
        estimate ``√(mean(M²) / 2N)`` over these voxels.
    n_coils : int
        Number of coil channels of the magnitude combination (1: Rician/Rayleigh).
    echo : int
        Echo used for automatic background detection (the first: tissue brightest).
    min_voxels : int
        Fewest background voxels accepted.

    Returns
    -------
    float
        σ in the units of ``magnitude``.

    Raises
    ------
    QSMInputError
        When fewer than ``min_voxels`` background voxels are found.

    References
    ----------
    Sijbers J et al., Automatic estimation of the noise variance from the histogram of a
    magnetic resonance image, Phys Med Biol 2007;52:1335. Constantinides CD et al., Signal-to-noise
    measurements in magnitude images from NMR phased arrays, MRM 1997;38:852.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> air = np.abs(rng.standard_normal((40, 40, 4)) + 1j * rng.standard_normal((40, 40, 4)))
    >>> round(estimate_noise_sigma(air), 1)
    1.0
    """
    xp = backend.get_array_module(magnitude)
    data = xp.abs(xp.asarray(magnitude)).astype(xp.float64)
    two_n = 2.0 * n_coils
    if mask is not None:
        mask = xp.asarray(mask, dtype=bool)
        values = data[mask] if mask.shape == data.shape else data[mask].ravel()
        values = values[xp.isfinite(values)]
        if values.size < min_voxels:
            raise QSMInputError(f"only {int(values.size)} background values (need "
                                f"{min_voxels}) to estimate the noise", field="mask")
        return float(xp.sqrt(xp.mean(values * values) / two_n))
    if data.ndim == 4:
        data = data[..., echo]
    values = data.ravel()
    values = values[xp.isfinite(values)]
    values = values[values > 0]
    if values.size < min_voxels:
        raise QSMInputError("too few voxels to estimate the noise", field="magnitude")
    upper = float(xp.median(values))
    counts, edges = xp.histogram(values[values <= upper], bins=128, range=(0.0, upper))
    peak = int(xp.argmax(counts))
    mode = 0.5 * float(edges[peak] + edges[peak + 1])
    sigma = mode / math.sqrt(two_n - 1.0)
    u_cut = float(sp.gammaincinv(n_coils, 0.99))  # (t/σ)²/2 at the 99 % noise quantile
    ratio = float(sp.gammainc(n_coils + 1, u_cut) / sp.gammainc(n_coils, u_cut))
    for _ in range(5):
        if sigma <= 0:
            break
        background = values[values < sigma * math.sqrt(2.0 * u_cut)]
        if background.size < min_voxels:
            break
        sigma = math.sqrt(float(xp.mean(background * background)) / (two_n * ratio))
    background = values[values < sigma * math.sqrt(2.0 * u_cut)] if sigma > 0 else values[:0]
    if background.size < min_voxels or not math.isfinite(sigma) or sigma <= 0:
        raise QSMInputError(
            f"found {int(background.size)} background (air) voxels, need {min_voxels}: give the "
            "noise level explicitly (noise_sigma) or a background mask", field="magnitude")
    return sigma
