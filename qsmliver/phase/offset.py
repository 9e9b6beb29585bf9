"""Removal of the echo-independent phase offset φ0 (coil/transceiver phase) before fitting.

Multi-echo phase is ``φ_n = φ0 + 2π f TE_n`` (modulo 2π). If φ0 is not removed it leaks into a
field estimated by a fit through the origin, and it spoils temporal unwrapping. MCPC-3D-S
estimates φ0 from the first two echoes after unwrapping their phase difference spatially, then
smooths it (φ0 varies slowly), following Eckstein et al. 2018.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from qsmliver.backend import get_array_module, ndimage
from qsmliver.errors import QSMInputError
from qsmliver.phase.unwrap import unwrap

__all__ = ["estimate_phase_offset", "remove_phase_offset", "smooth_phase_offset"]

Array = Any


def estimate_phase_offset(signal: Array, te_s: ArrayLike, *, mask: Array | None = None,
                          voxel_size_mm: ArrayLike = (1.0, 1.0, 1.0),
                          unwrap_method: str = "quality", smoothing_mm: float = 6.0,
                          echoes: tuple[int, int] = (0, 1)) -> Array:
    """MCPC-3D-S phase offset φ0 (radians) from two echoes of complex multi-echo data.

    ``Δφ = ∠(S_b · conj(S_a))`` is unwrapped spatially, the frequency term is extrapolated to
    TE = 0, ``φ0 = ∠(S_a · exp(−i Δφ_u TE_a / (TE_b − TE_a)))``, and ``exp(i φ0)`` is smoothed
    with a magnitude-weighted Gaussian of ``smoothing_mm`` (σ) so that noise and the residual
    errors of the unwrapping do not enter the data.

    Parameters
    ----------
    signal : (X, Y, Z, E) complex array
    te_s : (E,) array_like
        Echo times, seconds.
    mask : (X, Y, Z) bool array, optional
        Where the unwrapping is done (default: everywhere).
    voxel_size_mm : (3,) array_like
    unwrap_method : str
        One of :data:`qsmliver.phase.unwrap.UNWRAP_METHODS`.
    smoothing_mm : float
        Gaussian σ of the smoothing, mm (0: none).
    echoes : (int, int)
        The two echoes used (a, b).

    Returns
    -------
    (X, Y, Z) real array
        φ0, radians, wrapped to ``[-π, π)``.

    References
    ----------
    Eckstein K, Dymerska B, Bachrata B, et al. Computationally efficient combination of
    multi-channel phase data from multi-echo acquisitions (ASPIRE). Magn Reson Med
    2018;79:2996-3006 (MCPC-3D-S).
    """
    xp = get_array_module(signal)
    te = np.asarray(te_s, dtype=float)
    if signal.ndim != 4 or signal.shape[-1] < 2:
        raise QSMInputError("phase offset estimation needs (X, Y, Z, E) data with >= 2 echoes",
                            field="signal")
    a, b = echoes
    s_a, s_b = signal[..., a], signal[..., b]
    difference = xp.angle(s_b * xp.conj(s_a))
    magnitude = xp.abs(s_a)
    difference_unwrapped = unwrap(difference, unwrap_method, magnitude=magnitude, mask=mask,
                                  voxel_size_mm=voxel_size_mm)
    slope = difference_unwrapped * (te[a] / (te[b] - te[a]))
    offset = s_a * xp.exp(-1j * slope.astype(difference.dtype))
    return _smooth_phasor(offset, mask, voxel_size_mm, smoothing_mm).astype(difference.dtype)


def _smooth_phasor(phasor: Array, mask: Array | None, voxel_size_mm: ArrayLike,
                   smoothing_mm: float) -> Array:
    """Angle of ``phasor`` (magnitude-weighted unit phasors) smoothed by a Gaussian."""
    xp = get_array_module(phasor)
    if mask is not None:
        phasor = xp.where(mask, phasor, 0)
    if smoothing_mm > 0:
        sigma = smoothing_mm / np.asarray(voxel_size_mm, dtype=float)
        nd = ndimage(xp)
        phasor = (nd.gaussian_filter(phasor.real, sigma)
                  + 1j * nd.gaussian_filter(phasor.imag, sigma))
    return xp.angle(phasor)


def smooth_phase_offset(phase_offset_rad: Array, magnitude: Array, *, mask: Array | None = None,
                        voxel_size_mm: ArrayLike = (1.0, 1.0, 1.0),
                        smoothing_mm: float = 4.5) -> Array:
    """A per-voxel phase offset φ0 smoothed as MCPC-3D-S smooths it (Eckstein et al. 2018).

    ``∠ G_σ * (|S_1| exp(i φ0))`` inside ``mask``: φ0 (transceiver phase) varies slowly, so
    its voxel-scale variation in a per-voxel fit is error (noise, and the departure of
    band-limited echoes from a single frequency per voxel) that the smoothing removes.

    Parameters
    ----------
    phase_offset_rad : (X, Y, Z) real array
        φ0 per voxel, radians (e.g. :attr:`qsmliver.phase.field.FieldFit.phase_offset_rad`).
    magnitude : (X, Y, Z) real array
        Weights (the first echo's magnitude).
    mask : (X, Y, Z) bool array, optional
        Voxels that contribute (default: all).
    voxel_size_mm : (3,) array_like
    smoothing_mm : float
        Gaussian σ, mm (0: none).

    Returns
    -------
    (X, Y, Z) real array
        Smoothed φ0, radians, in ``[-π, π]``, in the input's precision.
    """
    xp = get_array_module(phase_offset_rad)
    if not smoothing_mm >= 0:
        raise QSMInputError(f"smoothing_mm must be non-negative, got {smoothing_mm}",
                            field="smoothing_mm")
    phasor = magnitude * xp.exp(1j * phase_offset_rad)
    return _smooth_phasor(phasor, mask, voxel_size_mm, smoothing_mm).astype(
        phase_offset_rad.dtype, copy=False)


def remove_phase_offset(signal: Array, phase_offset_rad: Array) -> Array:
    """``S_n · exp(−i φ0)`` for every echo: data whose phase is ``2π f TE_n`` only."""
    xp = get_array_module(signal)
    rotation = xp.exp(-1j * phase_offset_rad).astype(signal.dtype)
    return signal * rotation[..., None]
