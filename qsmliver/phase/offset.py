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

from qsmliver.backend import get_array_module
from qsmliver.errors import QSMInputError
from qsmliver.phase.gaussian import gaussian_filters
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
        sigma = list(smoothing_mm / np.asarray(voxel_size_mm, dtype=float))
        real = gaussian_filters(phasor.real, sigma, [(0, 0, 0)])
        imag = gaussian_filters(phasor.imag, sigma, [(0, 0, 0)])
        phasor = real[0, 0, 0] + 1j * imag[0, 0, 0]
    return xp.angle(phasor)


def _gaussian_moments(array: Array, sigma_vox: list[float],
                      orders: list[tuple[int, int, int]]) -> dict[tuple[int, int, int], Array]:
    """``Π_i σ_i^(2 o_i) ∂^o (G * array)`` for each derivative order ``o = (o_0, o_1, o_2)``.

    The Gaussian-derivative filters of :func:`qsmliver.phase.gaussian.gaussian_filters` (zero
    outside the array, by FFT) times the factors that turn derivatives into moments of the
    window (see :func:`_local_linear_intercept`).
    """
    factors = {order: float(np.prod([sigma_vox[i] ** (2 * o) for i, o in enumerate(order)]))
               for order in orders}
    return gaussian_filters(array, sigma_vox, orders, factors=factors)


def _local_linear_intercept(values: Array, weight: Array, sigma_vox: np.ndarray) -> Array:
    """Intercept of a weighted local-linear (first-order) fit of ``values`` at every voxel.

    Minimises ``Σ_y G(x − y) w(y) (v(y) − a(x) − b(x)·(y − x))²`` and returns ``a``: the
    first-order normalised convolution of Knutsson & Westin (CVPR 1993). Unlike a Gaussian
    average (the zeroth-order one) it is unbiased for a linear trend, also where the window is
    cut by the edge of ``w``. The moments about ``x`` are Gaussian-derivative filters
    (``Σ G w (y − x)_i = σ_i² ∂_i(G * w)``, ``Σ G w (y − x)_i² = σ_i⁴ ∂_i²(G * w) + σ_i² G * w``),
    so no coordinate arrays (and no cancellation) are needed. Where the weight vanishes the
    intercept is 0.
    """
    xp = get_array_module(values)
    sig = [float(x) for x in sigma_vox]
    scale = float(weight.max()) if weight.size else 0.0
    if not scale > 0:
        return xp.zeros_like(values)
    weight = weight / scale  # moments of order 1: the determinants below stay in range
    moments = _gaussian_moments(weight, sig, _FIRST_ORDERS + _SECOND_ORDERS)
    m0_max = float(moments[0, 0, 0].max())
    # a tiny ridge keeps the slope well posed where the window sees one plane of voxels
    ridge = 1e-6 * m0_max * max(s**2 for s in sig)
    # The 4×4 normal equations [[m0, f1ᵀ], [f1, S]] (a, b) = (r0, r1) are solved for the
    # intercept by the Schur complement of the 3×3 second-moment block S, whose inverse is
    # its adjugate over its determinant: a = (r0 det − uᵀ r1) / (m0 det − uᵀ f1) with
    # u = adj(S) f1 (S is symmetric). Elementwise, in slabs along axis 0 (the temporaries stay
    # small), and in two passes: the weight's ten moments are reduced to det, u and the
    # denominator and released before the values' four moments are filtered.
    step = max(1, _SLAB_VOXELS // max(1, values.shape[1] * values.shape[2]))
    slabs = [slice(start, start + step) for start in range(0, values.shape[0], step)]
    det = xp.empty(values.shape, dtype=np.float64)
    u = [xp.empty_like(det) for _ in range(3)]
    denominator = xp.empty_like(det)
    for slab in slabs:
        det[slab], u_slab, denominator[slab] = _schur_terms(
            {order: moment[slab] for order, moment in moments.items()}, sig, ridge, 1e-6 * m0_max)
        for i in range(3):
            u[i][slab] = u_slab[i]
    del moments
    value_moments = _gaussian_moments(weight * values, sig, _FIRST_ORDERS)
    r0, r1 = value_moments[0, 0, 0], [value_moments[order] for order in _FIRST_ORDERS[1:]]
    intercept = xp.empty_like(det)
    for slab in slabs:
        numerator = r0[slab] * det[slab] - (u[0][slab] * r1[0][slab] + u[1][slab] * r1[1][slab]
                                            + u[2][slab] * r1[2][slab])
        valid = denominator[slab] > 0
        intercept[slab] = xp.where(valid, numerator / xp.where(valid, denominator[slab], 1), 0)
    return intercept


#: Moment orders of the local plane fit: zeroth and first, and the second-order block.
_FIRST_ORDERS = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)]
_SECOND_ORDERS = [(2, 0, 0), (0, 2, 0), (0, 0, 2), (1, 1, 0), (1, 0, 1), (0, 1, 1)]
#: Voxels per slab of the elementwise solve.
_SLAB_VOXELS = 1 << 20


def _schur_terms(moments: dict, sig: list[float], ridge: float,
                 min_weight: float) -> tuple[Array, list[Array], Array]:
    """``det S``, ``u = adj(S) f1`` and ``m0 det S − uᵀ f1`` from the weight's moments.

    The denominator is set to 0 (no intercept) where ``m0 <= min_weight``.
    """
    m0, f1 = moments[0, 0, 0], [moments[order] for order in _FIRST_ORDERS[1:]]
    # ∂²(G * w) σ⁴ is Σ G w ((y − x)² − σ²): add σ² m0 back on the diagonal
    s00, s11, s22 = (moments[order] + sig[i] ** 2 * m0 + ridge
                     for i, order in enumerate(_SECOND_ORDERS[:3]))
    s01, s02, s12 = (moments[order] for order in _SECOND_ORDERS[3:])
    adj00, adj11, adj22 = s11 * s22 - s12**2, s00 * s22 - s02**2, s00 * s11 - s01**2
    adj01, adj02, adj12 = s02 * s12 - s01 * s22, s01 * s12 - s02 * s11, s01 * s02 - s00 * s12
    det = s00 * adj00 + s01 * adj01 + s02 * adj02
    u = [adj00 * f1[0] + adj01 * f1[1] + adj02 * f1[2],
         adj01 * f1[0] + adj11 * f1[1] + adj12 * f1[2],
         adj02 * f1[0] + adj12 * f1[1] + adj22 * f1[2]]
    denominator = m0 * det - (u[0] * f1[0] + u[1] * f1[1] + u[2] * f1[2])
    denominator = denominator * (m0 > min_weight)
    return det, u, denominator


def smooth_phase_offset(phase_offset_rad: Array, magnitude: Array, *, mask: Array | None = None,
                        voxel_size_mm: ArrayLike = (1.0, 1.0, 1.0),
                        smoothing_mm: float = 6.0) -> Array:
    """A per-voxel phase offset φ0, smoothed as MCPC-3D-S smooths it, without its edge bias.

    φ0 (transceiver phase) varies slowly, so its voxel-scale variation in a per-voxel fit is
    error (noise, and the departure of band-limited echoes from one frequency per voxel).
    MCPC-3D-S (Eckstein et al. 2018) smooths ``|S_1| exp(i φ0)`` with a Gaussian; that average
    is biased wherever φ0 has a gradient and the window is cut by the mask (0.04 rad at the
    brain's edge on the phantom, more than the noise it removes). Here the Gaussian average is
    the reference, and the residual phase is fitted by a magnitude-weighted local plane
    under the same Gaussian window (first-order normalised convolution, Knutsson & Westin,
    CVPR 1993), whose intercept is unbiased for a linear φ0 up to the edge.

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
        Gaussian σ of the window, mm (0: no smoothing).

    Returns
    -------
    (X, Y, Z) real array
        Smoothed φ0, radians, in ``[-π, π]``, in the input's precision.
    """
    xp = get_array_module(phase_offset_rad)
    if not smoothing_mm >= 0:
        raise QSMInputError(f"smoothing_mm must be non-negative, got {smoothing_mm}",
                            field="smoothing_mm")
    if smoothing_mm == 0:
        return xp.array(phase_offset_rad, copy=True)
    dtype = phase_offset_rad.dtype
    phasor = magnitude * xp.exp(1j * phase_offset_rad)
    reference = _smooth_phasor(phasor, mask, voxel_size_mm, smoothing_mm)
    residual = xp.angle(xp.exp(1j * (phase_offset_rad - reference)))
    weight = xp.abs(phasor) if mask is None else xp.where(mask, xp.abs(phasor), 0)
    sigma_vox = smoothing_mm / np.asarray(voxel_size_mm, dtype=float)
    correction = _local_linear_intercept(residual.astype(np.float64), weight.astype(np.float64),
                                         sigma_vox)
    return xp.angle(xp.exp(1j * (reference + correction))).astype(dtype, copy=False)


def remove_phase_offset(signal: Array, phase_offset_rad: Array) -> Array:
    """``S_n · exp(−i φ0)`` for every echo: data whose phase is ``2π f TE_n`` only."""
    xp = get_array_module(signal)
    rotation = xp.exp(-1j * phase_offset_rad).astype(signal.dtype)
    return signal * rotation[..., None]
