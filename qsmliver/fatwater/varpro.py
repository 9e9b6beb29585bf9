"""Variable projection (VARPRO) cost of the multi-peak water-fat signal model, per voxel.

Signal model (DESIGN section 5)::

    S(TE) = (W + F · c(TE)) · exp(−R2*·TE) · exp(i2π ψ TE) · exp(iφ0),
    c(TE) = Σ_p a_p exp(i2π f_p TE)                                    (multi-peak fat)

For fixed nonlinear parameters (ψ in Hz, R2* in 1/s) the model is linear in the complex water
and fat amplitudes: ``S = A(ψ, R2*) x`` with ``A = diag(d) [1, c]``, ``d_e = exp(z·TE_e)``,
``z = −R2* + i2πψ`` and ``x = (W, F)`` (their common phase absorbs φ0). Variable projection
(Golub & Pereyra, SIAM J Numer Anal 1973;10:413) eliminates ``x`` in closed form: the least
squares residual is

    R(ψ, R2*) = ||S||² − yᴴ G⁻¹ y,     y = Aᴴ S,   G = Aᴴ A (2 × 2, depends on R2* only),

so the cost of every candidate (ψ, R2*) costs two inner products per voxel. This is the
field-map cost of Hernando et al., Joint estimation of water/fat images and field
inhomogeneity map, MRM 2008;59:571-580, and of the graph-cut method (Hernando et al., Robust
water/fat separation in the presence of large field inhomogeneities using a graph cut
algorithm, MRM 2010;63:79-90), here with the common-R2* multi-peak model of Yu et al.,
Multiecho water-fat separation and simultaneous R2* estimation with multifrequency fat spectrum
modeling, MRM 2008;60:1122-1134.

With uniformly spaced echoes (spacing ΔTE) the cost is periodic in ψ with period ``1/ΔTE``:
shifting ψ by ``1/ΔTE`` multiplies every echo by the same phase factor, which the complex
amplitudes absorb. The candidate field grid therefore spans one period.

All functions take the echoes as a ``(V, E)`` complex array (voxels first, echoes last) on
NumPy or CuPy and vectorise over voxels, in chunks that bound memory; loops run over R2*
candidates only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from qsmliver import backend
from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.fatwater.spectra import FatSpectrum, fat_basis

__all__ = [
    "DEFAULT_R2STAR_MAX_PER_S_1P5T",
    "default_r2star_max",
    "echo_period_hz",
    "field_candidates",
    "r2star_candidates",
    "varpro_cost",
    "varpro_solve",
]

Array = Any

#: Default upper end of the R2* search at 1.5 T (1/s); scaled linearly with B0.
DEFAULT_R2STAR_MAX_PER_S_1P5T = 2000.0
#: Relative tolerance for calling echo spacing uniform.
_UNIFORM_RTOL = 1e-3


def default_r2star_max(b0_t: float) -> float:
    """Default upper end of the R2* search (1/s): 2000 1/s at 1.5 T, scaled linearly with B0.

    Iron overload reaches R2* of 1000-2000 1/s at 1.5 T (DESIGN section 5); the published
    defaults of a few hundred 1/s do not cover it.
    """
    return DEFAULT_R2STAR_MAX_PER_S_1P5T * float(b0_t) / 1.5


def r2star_candidates(b0_t: float, r2star_max_per_s: float | None = None,
                      n: int | None = None) -> np.ndarray:
    """R2* candidates from 0 to ``r2star_max_per_s`` (1/s), quadratically spaced.

    ``R2*_k = R2*_max · (k / (n − 1))²``: fine steps where the residual is most sensitive to R2*
    (slow decay, many echoes carry signal) and coarse steps at high R2*, where only the first
    echoes do (16 candidates up to 2000 1/s: steps of 9 1/s at 0 and 260 1/s at 2000 1/s).

    Parameters
    ----------
    b0_t : float
        Field strength, tesla (sets the default maximum, :func:`default_r2star_max`).
    r2star_max_per_s : float, optional
        Upper end of the grid, 1/s (> 0).
    n : int, optional
        Number of candidates (>= 2), default 16.

    Returns
    -------
    (n,) float64 ndarray

    Raises
    ------
    QSMConfigError
        For a non-positive maximum or fewer than 2 candidates.
    """
    r_max = default_r2star_max(b0_t) if r2star_max_per_s is None else r2star_max_per_s
    try:
        r_max = float(r_max)
    except (TypeError, ValueError):
        raise QSMConfigError(f"r2star_max_per_s must be a number (1/s), got {r_max!r}") from None
    if not (math.isfinite(r_max) and r_max > 0):
        raise QSMConfigError(f"r2star_max_per_s must be positive (1/s), got {r2star_max_per_s}")
    n = 16 if n is None else n
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise QSMConfigError(f"n_r2star_candidates must be an integer >= 2, got {n!r}")
    return r_max * (np.arange(int(n)) / (int(n) - 1)) ** 2


def echo_period_hz(te_s: ArrayLike) -> float | None:
    """``1/ΔTE`` (Hz) when the echoes are uniformly spaced, else None.

    The VARPRO cost is periodic in the field map with this period.
    """
    te = np.asarray(te_s, dtype=np.float64).reshape(-1)
    if te.size < 2:
        return None
    dte = np.diff(te)
    if np.all(np.abs(dte - dte.mean()) <= _UNIFORM_RTOL * abs(dte.mean())):
        return float(1.0 / dte.mean())
    return None


def field_candidates(
    te_s: ArrayLike, n: int | None = None, range_hz: tuple[float, float] | None = None,
) -> tuple[np.ndarray, float | None]:
    """Candidate field values (Hz) for the VARPRO cost, and the period of the cost.

    Parameters
    ----------
    te_s : (E,) array_like
        Echo times, s.
    n : int, optional
        Number of candidates (>= 8). Default: about 6 per echo interval of the period,
        ``clip(6·(E−1), 48, 128)`` (a step of ~11 Hz for the 12-echo 1.5 T protocol, below a
        tenth of the width of a cost minimum).
    range_hz : (float, float), optional
        Explicit (low, high) range. Default: one period ``[0, 1/ΔTE)`` for uniformly spaced
        echoes (the cost is periodic), else ``[−1/ΔTE_min, 1/ΔTE_min)``.

    Returns
    -------
    grid_hz : (n,) float64 ndarray
        Uniformly spaced candidates.
    period_hz : float or None
        The period of the cost when the grid spans exactly one period (uniform echoes and no
        explicit range), else None (the grid is then treated as bounded).

    Raises
    ------
    QSMConfigError
        For fewer than 8 candidates or an empty range.
    """
    te = np.asarray(te_s, dtype=np.float64).reshape(-1)
    if n is None:
        n = int(np.clip(6 * (te.size - 1), 48, 128))
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 8:
        raise QSMConfigError(f"n_field_candidates must be an integer >= 8, got {n!r}")
    n = int(n)
    period = echo_period_hz(te)
    if range_hz is None and period is not None:
        return np.arange(n) * (period / n), period
    if range_hz is None:
        span = 1.0 / float(np.min(np.diff(te)))
        low, high = -span, span
    else:
        low, high = (float(v) for v in range_hz)
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise QSMConfigError(f"field_range_hz must be (low, high) with high > low, got {range_hz}")
    return low + np.arange(n) * ((high - low) / n), None


def _check_signal(signal: Array, te_s: ArrayLike) -> tuple[Any, Array, np.ndarray]:
    xp = backend.get_array_module(signal)
    s = xp.asarray(signal)
    te = np.asarray(te_s, dtype=np.float64).reshape(-1)
    if s.ndim != 2 or s.shape[1] != te.size:
        raise QSMInputError(f"signal must be (voxels, echoes) with {te.size} echoes, got shape "
                            f"{s.shape}", field="signal")
    if s.dtype.kind != "c":
        s = s.astype(xp.complex128)
    return xp, s, te


def _gram_entries(weights: Array, basis: Array) -> tuple[Array, Array, Array]:
    """Entries G11, G12, G22 of ``Aᴴ A`` for the water and fat columns ``A = [d, d·c]``.

    Parameters
    ----------
    weights : (E,) or (V, E) float array
        Echo weights ``|d_e|²`` (e.g. ``exp(−2 R2* TE)``), one row per voxel or shared.
    basis : (E,) complex array
        The fat basis ``c`` (:func:`~qsmliver.fatwater.spectra.fat_basis`).

    Returns
    -------
    g11, g12, g22 : arrays of shape () or (V,)
        ``Σ w``, ``Σ w c`` (complex) and ``Σ w |c|²``; the phase of ``d`` cancels.
    """
    return (weights.sum(axis=-1), weights @ basis,
            weights @ (basis.real**2 + basis.imag**2))


def _gram(weights_e: np.ndarray, basis: np.ndarray) -> tuple[float, complex, float]:
    """:func:`_gram_entries` of one weight vector as host scalars."""
    g11, g12, g22 = _gram_entries(weights_e, basis)
    return float(g11), complex(g12), float(g22)


def varpro_cost(
    signal: Array,
    te_s: ArrayLike,
    b0_t: float,
    field_hz: ArrayLike,
    r2star_per_s: ArrayLike,
    *,
    spectrum: str | FatSpectrum = "ismrm",
    reduce_r2star: bool = True,
    chunk_voxels: int | None = None,
    use_kernel: bool | None = None,
) -> tuple[Array, Array]:
    """VARPRO residual of every voxel for every candidate (ψ, R2*).

    For each R2* candidate the two columns of ``A`` are orthonormalised (Gram-Schmidt with
    the R2*-only Gram matrix), so that the projected energy is ``|q1ᴴS|² + |q2ᴴS|²``: the
    inner products of all voxels of a chunk with all (ψ, R2*) candidates are one matrix
    product of the weighted echoes with the field phasors.

    Parameters
    ----------
    signal : (V, E) complex ndarray
        Echoes of V voxels (NumPy or CuPy). complex64 input is processed in single precision
        (enough to rank candidates), anything else in double precision.
    te_s : (E,) array_like
        Echo times, s.
    b0_t : float
        Field strength, tesla (scales the fat frequencies).
    field_hz : (K,) array_like
        Candidate field values ψ, Hz.
    r2star_per_s : (M,) array_like
        Candidate R2* values, 1/s.
    spectrum : str or FatSpectrum
        Fat model (:func:`~qsmliver.fatwater.spectra.get_fat_spectrum`).
    reduce_r2star : bool
        True: minimise over the R2* candidates and return ``(V, K)`` costs with the index of the
        minimising R2* candidate. False: return the full ``(V, K, M)`` cost and None.
    chunk_voxels : int, optional
        Voxels per chunk; default such that a chunk's product holds about 4 million complex
        values.
    use_kernel : bool or None
        None (default): the CUDA kernel of :mod:`qsmliver.fatwater._gpu` for CuPy input, this
        vectorised code for NumPy input; False: always this code.

    Returns
    -------
    cost : (V, K) or (V, K, M) float ndarray
        Squared residual norm ``||S − A x̂||²`` (signal units squared), clipped at 0; float32
        for complex64 input, else float64.
    r2star_index : (V, K) int16 ndarray or None
        Index into ``r2star_per_s`` of the minimising R2* (``reduce_r2star=True``).

    Raises
    ------
    QSMInputError
        When ``signal`` is not (V, E) with E echoes.

    Examples
    --------
    >>> te = 1e-3 * (1.0 + 1.4 * np.arange(6))
    >>> s = np.exp(2j * np.pi * 40.0 * te)[None, :]  # pure water, ψ = 40 Hz, R2* = 0
    >>> cost, _ = varpro_cost(s, te, 1.5, [0.0, 40.0, 80.0], [0.0, 50.0])
    >>> int(np.argmin(cost[0]))
    1
    """
    if use_kernel is not False and backend.get_array_module(signal) is not np:
        from qsmliver.fatwater._gpu import varpro_cost_kernel

        return varpro_cost_kernel(signal, te_s, b0_t, field_hz, r2star_per_s, spectrum=spectrum,
                                  reduce_r2star=reduce_r2star, chunk_voxels=chunk_voxels,
                                  use_kernel=use_kernel)
    xp, s, te = _check_signal(signal, te_s)
    single = s.dtype == np.complex64
    cdtype = np.complex64 if single else np.complex128
    s = s.astype(cdtype, copy=False)
    psi = np.asarray(field_hz, dtype=np.float64).reshape(-1)
    r2s = np.asarray(r2star_per_s, dtype=np.float64).reshape(-1)
    basis = fat_basis(spectrum, te, b0_t)
    n_vox, n_psi, n_r2 = s.shape[0], psi.size, r2s.size
    # Orthonormalised echo weights per R2* candidate: (M, 2, E), conj(d) without the field.
    weights = np.empty((n_r2, 2, te.size), dtype=np.complex128)
    for m, r in enumerate(r2s):
        decay = np.exp(-r * te)
        g11, g12, g22 = _gram(decay**2, basis)
        g11 = max(g11, 1e-300)
        norm2 = max(g22 - abs(g12) ** 2 / g11, 1e-300)
        weights[m, 0] = decay / math.sqrt(g11)
        weights[m, 1] = decay * (np.conj(basis) - np.conj(g12) / g11) / math.sqrt(norm2)
    phasors_h = xp.asarray(np.exp(-2j * np.pi * np.outer(te, psi)).astype(cdtype))
    weights_x = xp.asarray(weights.astype(cdtype))
    rdtype = np.float32 if single else np.float64
    shape_out = (n_vox, n_psi) if reduce_r2star else (n_vox, n_psi, n_r2)
    cost = xp.empty(shape_out, dtype=rdtype)
    index = xp.zeros((n_vox, n_psi), dtype=xp.int16) if reduce_r2star else None
    chunk = chunk_voxels or max(64, int(4_000_000 // (2 * n_r2 * n_psi)))
    for start in range(0, n_vox, int(chunk)):
        block = s[start:start + int(chunk)]
        energy = xp.sum(xp.abs(block.astype(xp.complex128)) ** 2, axis=1)
        u = (block[:, None, None, :] * weights_x).reshape(-1, te.size)  # (C·M·2, E)
        z = (u @ phasors_h).reshape(block.shape[0], n_r2, 2, n_psi)  # one product
        zr = z.view(rdtype)  # interleaved real/imaginary parts, (C, M, 2, 2K)
        power = zr * zr
        proj = power[..., 0::2] + power[..., 1::2]
        proj = proj[:, :, 0] + proj[:, :, 1]  # (C, M, K)
        if reduce_r2star:
            top = xp.max(proj, axis=1)
            cost[start:start + int(chunk)] = xp.maximum(energy[:, None] - top, 0.0)
            index[start:start + int(chunk)] = xp.argmax(proj, axis=1).astype(xp.int16)
        else:
            cost[start:start + int(chunk)] = xp.maximum(
                energy[:, None, None] - xp.moveaxis(proj, 1, 2), 0.0)
    return cost, index


def varpro_solve(
    signal: Array,
    te_s: ArrayLike,
    b0_t: float,
    field_hz: Array,
    r2star_per_s: Array,
    *,
    spectrum: str | FatSpectrum = "ismrm",
) -> tuple[Array, Array, Array]:
    """Water and fat amplitudes by linear least squares for given per-voxel (ψ, R2*).

    Parameters
    ----------
    signal : (V, E) complex ndarray
        Echoes (NumPy or CuPy).
    te_s : (E,) array_like
        Echo times, s.
    b0_t : float
        Field strength, tesla.
    field_hz, r2star_per_s : (V,) ndarray or float
        Field (Hz) and R2* (1/s) of each voxel.
    spectrum : str or FatSpectrum
        Fat model.

    Returns
    -------
    water, fat : (V,) complex128 ndarray
        Complex amplitudes (signal units; they carry the initial phase φ0).
    residual : (V,) float64 ndarray
        Squared residual norm ``||S − A x̂||²``.
    """
    xp, s, te = _check_signal(signal, te_s)
    s = s.astype(xp.complex128, copy=False)
    basis = xp.asarray(fat_basis(spectrum, te, b0_t))
    te_x = xp.asarray(te)
    psi = xp.asarray(field_hz, dtype=xp.float64).reshape(-1, 1)
    r2s = xp.asarray(r2star_per_s, dtype=xp.float64).reshape(-1, 1)
    d = xp.exp((-r2s + 2j * np.pi * psi) * te_x)
    water, fat, model = _project(s, d, basis)
    diff = s - model
    residual = xp.sum(diff.real**2 + diff.imag**2, axis=1)
    return water, fat, residual


def _project(s: Array, d: Array, basis: Array) -> tuple[Array, Array, Array]:
    """Least-squares (W, F) for columns ``d`` and ``d·c`` per voxel; returns W, F and model."""
    xp = backend.get_array_module(s)
    g11, g12, g22 = _gram_entries(d.real**2 + d.imag**2, basis)
    ds = xp.conj(d) * s
    y1 = xp.sum(ds, axis=1)
    y2 = ds @ xp.conj(basis)
    det = g11 * g22 - (g12.real**2 + g12.imag**2)
    tiny = 1e-300
    det = xp.where(det > tiny, det, tiny)
    water = (g22 * y1 - g12 * y2) / det
    fat = (g11 * y2 - xp.conj(g12) * y1) / det
    model = d * (water[:, None] + fat[:, None] * basis)
    return water, fat, model
