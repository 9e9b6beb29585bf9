"""Cramér-Rao standard deviation of the fat-water field map (the data weight of hepatic QSM).

The signal model of the separation is ``S(t) = (W + F c(t)) exp((−R2* + i2πψ) t)`` with
complex W, F, the fat basis ``c(t)`` (:func:`~qsmliver.fatwater.spectra.fat_basis`), and real
ψ (Hz) and R2* (1/s). For complex Gaussian noise of standard deviation σ per real component,
the Fisher information of the six real parameters is ``Re(JᴴJ) / σ²`` with ``J`` the
derivatives of S. Eliminating the complex amplitudes (their columns span the complex span of
``g = exp((−R2* + i2πψ)t)`` and ``c·g``) leaves a 2×2 block for (ψ, R2*) whose off-diagonal
vanishes, because ``∂S/∂ψ = −2πi · ∂S/∂R2*`` and the projection is complex-linear. So

``var(ψ) = σ² / (4π² ||P⊥ (t · S)||²)``,

with ``P⊥`` the projection off the amplitudes' span, in which the field's phase cancels: the
bound depends on W, F, R2*, the echo times and the fat spectrum only. This is the fat-water
counterpart of the magnitude-and-echo-time bound of a water-only fit (Kressler et al. 2010,
eq. 14) that MEDI uses as its data weight, and the field-map part of the Cramér-Rao analysis
of water-fat separation (Pineda et al. 2005). Where water and fat cancel at the echoes (a
voxel near 50 % fat) or R2* is high, the bound rises and the voxel weighs less in the inversion.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from qsmliver import backend
from qsmliver.fatwater.spectra import FatSpectrum, fat_basis
from qsmliver.fatwater.varpro import _project

__all__ = ["field_crb_std_hz"]

Array = Any


def field_crb_std_hz(
    water: Array,
    fat: Array,
    r2star_per_s: Array,
    te_s: ArrayLike,
    b0_t: float,
    *,
    spectrum: str | FatSpectrum = "ismrm",
) -> Array:
    """Cramér-Rao standard deviation of ψ for unit noise (σ = 1 per real component), Hz.

    Parameters
    ----------
    water, fat : (V,) complex array
        Water and fat amplitudes at TE = 0 (signal units), NumPy or CuPy.
    r2star_per_s : (V,) float array
        R2* common to water and fat, 1/s.
    te_s : (E,) array_like
        Echo times, s.
    b0_t : float
        Field strength, tesla (scales the fat frequencies).
    spectrum : str or FatSpectrum
        Fat model of the separation.

    Returns
    -------
    (V,) float64 array
        Hz per unit noise; multiply by the noise level (signal units) to get the field's
        standard deviation. ``inf`` where the field is not identifiable (no signal).

    References
    ----------
    Pineda AR, Reeder SB, Wen Z, Pelc NJ. Cramér-Rao bounds for three-point decomposition of
    water and fat. Magn Reson Med 2005;54:625-635.
    Kressler B, de Rochefort L, Liu T, Spincemaille P, Jiang Q, Wang Y. Nonlinear
    regularization for per voxel estimation of magnetic susceptibility distributions from MRI
    field maps. IEEE Trans Med Imaging 2010;29:273-281 (eq. 14, the water-only case).

    Examples
    --------
    Pure water without decay: the bound is above that of a water-only fit,
    ``1 / (2π |W| sqrt(Σ (t − t̄)²))``, because the fat amplitude is estimated as well.

    >>> te = np.array([1e-3, 2e-3, 3e-3])
    >>> std = field_crb_std_hz(np.array([2.0 + 0j]), np.array([0j]), np.array([0.0]), te, 1.5)
    >>> water_only = 1 / (2 * np.pi * 2.0 * np.sqrt(2e-6))
    >>> bool(std[0] > water_only)
    True
    """
    xp = backend.get_array_module(water)
    te = xp.asarray(np.asarray(te_s, dtype=np.float64))
    basis = xp.asarray(fat_basis(spectrum, np.asarray(te_s, dtype=np.float64), b0_t))
    water = water.astype(xp.complex128)
    fat = fat.astype(xp.complex128)
    # The field's phase cancels in every inner product, so g = exp(−R2* t) (real) will do.
    decay = xp.exp(-r2star_per_s.astype(xp.float64)[:, None] * te).astype(xp.complex128)
    t_signal = te * (water[:, None] + fat[:, None] * basis) * decay  # t · S, (V, E)
    _, _, in_span = _project(t_signal, decay, basis)  # its part the amplitudes absorb
    off_span = t_signal - in_span
    information = xp.sum(off_span.real**2 + off_span.imag**2, axis=1)  # ||P⊥(t·S)||²
    energy = xp.sum(t_signal.real**2 + t_signal.imag**2, axis=1)
    # information at the rounding level of the energy (or no signal): not identifiable
    good = (energy > 0) & (information > 1e-12 * energy)
    return xp.where(good, 1.0 / (2.0 * np.pi * xp.sqrt(xp.where(good, information, 1.0))),
                    xp.inf)
