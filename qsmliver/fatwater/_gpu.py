"""CUDA kernels for the fat-water search and refinement: one GPU thread per voxel.

:func:`varpro_cost_kernel` returns what :func:`~qsmliver.fatwater.varpro.varpro_cost` returns
and :func:`ideal_refine_kernel` what :func:`~qsmliver.fatwater.ideal.ideal_refine` returns
(same arguments, same results). On CuPy input they launch the kernels of
``kernels/fatwater_varpro.cu``; on NumPy input, or with ``use_kernel=False``, they call the
vectorised functions, which are the kernels' NumPy twins (the test oracle and the CPU path).
``varpro_cost`` and ``ideal_refine`` dispatch here themselves for CuPy input unless given
``use_kernel=False``.

- ``varpro_cost``: the VARPRO residual ``||S||² − |q1ᴴS|² − |q2ᴴS|²`` of every field
  candidate ψ and R2* candidate, with ``q1, q2`` the orthonormalised water and fat columns of
  ``A = diag(exp((−R2* + i2πψ) TE)) [1, c]`` (Hernando et al. 2008), minimised over R2* or
  not. Two small kernels first tabulate the orthonormalised columns per R2* candidate and the
  field phasors ``exp(−i2πψ TE)``; the main kernel loops over the (ψ, R2*) grid and the echoes
  inside each thread, without the ``(voxels, R2*, 2, ψ)`` product of the vectorised code.
  Precision follows the twin: complex64 input is processed in single precision (tables
  rounded to float32, inner products accumulated in float32, ``||S||²`` in double), anything
  else in double.
- ``ideal_refine``: the damped Gauss-Newton iterations of T2*-IDEAL on the complex field
  ``z = −R2* + i2πψ`` with water and fat projected out (Yu et al. 2008), every voxel with its
  own iteration count, step halvings, bounds and convergence test, in double precision.

The kernels sum over echoes in order, where NumPy uses pairwise sums and BLAS products, and
the device math library and FMA contraction round differently, so results agree with the twins
to rounding (about 1e-12 of ``||S||²`` in double precision), not bit for bit; an IDEAL step
whose acceptance is decided by a residual difference at rounding level can end one iteration
earlier or later (the parameters then differ by about ``tol_hz``).

References
----------
Hernando D, Kellman P, Haldar JP, Liang ZP. Robust water/fat separation in the presence of
large field inhomogeneities using a graph cut algorithm. MRM 2010;63:79-90; Hernando D, Haldar
JP, Sutton BP, Ma J, Kellman P, Liang ZP. Joint estimation of water/fat images and field
inhomogeneity map. MRM 2008;59:571-580 (VARPRO). Yu H, Shimakawa A, McKenzie CA, Brodsky E,
Brittain JH, Reeder SB. Multiecho water-fat separation and simultaneous R2* estimation with
multifrequency fat spectrum modeling. MRM 2008;60:1122-1134 (T2*-IDEAL).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from qsmliver import backend
from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.fatwater.ideal import IdealFit, ideal_refine
from qsmliver.fatwater.spectra import FatSpectrum, fat_basis
from qsmliver.fatwater.varpro import _check_signal, varpro_cost

__all__ = ["MAX_KERNEL_ECHOES", "ideal_refine_kernel", "varpro_cost_kernel"]

Array = Any

_FAMILY = "fatwater_varpro"
_THREADS = 128
_MAX_BLOCKS = 65535
#: Most echoes the kernels take (``FW_MAX_ECHOES`` of the CUDA source: per-thread arrays).
MAX_KERNEL_ECHOES = 32
_MAX_R2STAR_CANDIDATES = 32767  # the index is int16


def _launch_shape(n: int) -> tuple[tuple[int], tuple[int]]:
    return (max(1, min(_MAX_BLOCKS, (n + _THREADS - 1) // _THREADS)),), (_THREADS,)


def _kernel_wanted(xp, use_kernel: bool | None) -> bool:
    return xp is not np and use_kernel is not False


def _kernel_supports(n_echo: int, n_r2: int, use_kernel: bool | None) -> bool:
    """Whether the kernels take the problem; False (twin) or QSMConfigError if not."""
    problem = None
    if n_echo > MAX_KERNEL_ECHOES:
        problem = f"at most {MAX_KERNEL_ECHOES} echoes, got {n_echo}"
    elif n_r2 > _MAX_R2STAR_CANDIDATES:
        problem = f"at most {_MAX_R2STAR_CANDIDATES} R2* candidates, got {n_r2}"
    if problem is not None and use_kernel:
        raise QSMConfigError(f"the fat-water CUDA kernels take {problem}; pass use_kernel=None "
                             "(automatic) or False")
    return problem is None


def _interleaved(xp, s: Array) -> Array:
    """C-contiguous complex (V, E) as its (V, E, 2) real view (raw kernels ignore strides)."""
    s = xp.ascontiguousarray(s)
    real = np.float32 if s.dtype == np.complex64 else np.float64
    return s.view(real).reshape(*s.shape, 2)


def varpro_cost_kernel(
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
    """VARPRO residual of every voxel for every candidate (ψ, R2*), on a CUDA kernel.

    Parameters
    ----------
    signal, te_s, b0_t, field_hz, r2star_per_s, spectrum, reduce_r2star
        As :func:`~qsmliver.fatwater.varpro.varpro_cost`; at most :data:`MAX_KERNEL_ECHOES`
        echoes on the kernel; complex64 input is processed in single precision, anything else
        in double.
    chunk_voxels : int, optional
        Voxels per chunk of the vectorised twin; the kernel needs no temporaries and ignores it.
    use_kernel : bool or None
        None (default): the kernel for CuPy input when it takes the problem, else the
        vectorised :func:`~qsmliver.fatwater.varpro.varpro_cost` (always for NumPy input).
        True: as None, but a problem the kernel does not take raises. False: always the
        vectorised function.

    Returns
    -------
    cost : (V, K) or (V, K, M) float ndarray
        Squared residual norm (signal units squared), clipped at 0; float32 for complex64
        input, else float64.
    r2star_index : (V, K) int16 ndarray or None
        Index of the minimising R2* candidate (``reduce_r2star=True``).

    Raises
    ------
    QSMInputError
        When ``signal`` is not (V, E) with E echoes.
    QSMConfigError
        With ``use_kernel=True`` and CuPy input: for more than :data:`MAX_KERNEL_ECHOES`
        echoes or 32767 R2* candidates (None falls back to the vectorised function).

    Examples
    --------
    >>> te = 1e-3 * (1.0 + 1.4 * np.arange(6))
    >>> s = np.exp(2j * np.pi * 40.0 * te)[None, :]  # pure water, ψ = 40 Hz, R2* = 0
    >>> cost, _ = varpro_cost_kernel(s, te, 1.5, [0.0, 40.0, 80.0], [0.0, 50.0])
    >>> int(np.argmin(cost[0]))
    1
    """
    xp = backend.get_array_module(signal)
    if not _kernel_wanted(xp, use_kernel):
        return varpro_cost(signal, te_s, b0_t, field_hz, r2star_per_s, spectrum=spectrum,
                           reduce_r2star=reduce_r2star, chunk_voxels=chunk_voxels,
                           use_kernel=False)
    xp, s, te = _check_signal(signal, te_s)
    psi = np.asarray(field_hz, dtype=np.float64).reshape(-1)
    r2s = np.asarray(r2star_per_s, dtype=np.float64).reshape(-1)
    if not _kernel_supports(te.size, r2s.size, use_kernel):
        return varpro_cost(signal, te_s, b0_t, field_hz, r2star_per_s, spectrum=spectrum,
                           reduce_r2star=reduce_r2star, chunk_voxels=chunk_voxels,
                           use_kernel=False)
    real = np.float32 if s.dtype == np.complex64 else np.float64
    s = s.astype(np.complex64 if real == np.float32 else np.complex128, copy=False)
    basis = fat_basis(spectrum, te, b0_t)
    n_vox, n_psi, n_r2, n_echo = int(s.shape[0]), psi.size, r2s.size, int(te.size)
    te_d = xp.asarray(te)
    basis_d = xp.asarray(np.ascontiguousarray(basis).view(np.float64))
    weights = xp.empty((n_r2, 2, n_echo, 2), dtype=real)
    phasors = xp.empty((n_psi, n_echo, 2), dtype=real)
    if n_r2:
        grid, block = _launch_shape(n_r2)
        backend.get_kernel(_FAMILY, "varpro_weights", real)(grid, block, (
            te_d, basis_d, xp.asarray(r2s), np.int64(n_r2), np.int32(n_echo), weights))
    if n_psi:
        grid, block = _launch_shape(n_psi * n_echo)
        backend.get_kernel(_FAMILY, "varpro_phasors", real)(grid, block, (
            te_d, xp.asarray(psi), np.int64(n_psi), np.int32(n_echo), phasors))
    shape_out = (n_vox, n_psi) if reduce_r2star else (n_vox, n_psi, n_r2)
    cost = xp.empty(shape_out, dtype=real)
    index = xp.zeros((n_vox, n_psi), dtype=xp.int16) if reduce_r2star else None
    if n_vox and n_psi and n_r2:
        grid, block = _launch_shape(n_vox)
        backend.get_kernel(_FAMILY, "varpro_cost", real)(grid, block, (
            _interleaved(xp, s), weights, phasors, np.int64(n_vox), np.int32(n_echo),
            np.int32(n_psi), np.int32(n_r2), np.int32(bool(reduce_r2star)), cost,
            index if reduce_r2star else cost))
    return cost, index


def ideal_refine_kernel(
    signal: Array,
    te_s: ArrayLike,
    b0_t: float,
    field_hz: Array,
    r2star_per_s: Array,
    *,
    spectrum: str | FatSpectrum = "ismrm",
    max_iter: int = 30,
    tol_hz: float = 1e-4,
    r2star_max_per_s: float = 4000.0,
    max_shift_hz: float | None = None,
    use_kernel: bool | None = None,
) -> IdealFit:
    """Refine (ψ, R2*) per voxel by T2*-IDEAL Gauss-Newton, on a CUDA kernel.

    Parameters
    ----------
    signal, te_s, b0_t, field_hz, r2star_per_s, spectrum, max_iter, tol_hz, r2star_max_per_s, \
max_shift_hz
        As :func:`~qsmliver.fatwater.ideal.ideal_refine`; at most :data:`MAX_KERNEL_ECHOES`
        echoes on the kernel.
    use_kernel : bool or None
        None (default): the kernel for CuPy input when it takes the problem, else the
        vectorised :func:`~qsmliver.fatwater.ideal.ideal_refine` (always for NumPy input).
        True: as None, but a problem the kernel does not take raises. False: always the
        vectorised function.

    Returns
    -------
    IdealFit
        As :func:`~qsmliver.fatwater.ideal.ideal_refine`; ``n_iter`` is the largest iteration
        count over the voxels.

    Raises
    ------
    QSMInputError
        For inconsistent shapes.
    QSMConfigError
        For non-positive iteration counts or tolerances; with ``use_kernel=True`` and CuPy
        input for more than :data:`MAX_KERNEL_ECHOES` echoes.

    Examples
    --------
    >>> te = 1e-3 * (1.0 + 1.4 * np.arange(8))
    >>> c = fat_basis("ismrm", te, 1.5)
    >>> s = ((0.7 + 0.3 * c) * np.exp((-200.0 + 2j * np.pi * 30.0) * te))[None, :]
    >>> fit = ideal_refine_kernel(s, te, 1.5, np.array([24.0]), np.array([150.0]))
    >>> round(float(fit.field_hz[0]), 6), round(float(fit.r2star_per_s[0]), 6)
    (30.0, 200.0)
    """
    xp = backend.get_array_module(signal)
    if not _kernel_wanted(xp, use_kernel):
        return ideal_refine(signal, te_s, b0_t, field_hz, r2star_per_s, spectrum=spectrum,
                            max_iter=max_iter, tol_hz=tol_hz, r2star_max_per_s=r2star_max_per_s,
                            max_shift_hz=max_shift_hz, use_kernel=False)
    s = xp.asarray(signal)
    if s.dtype != np.complex64:
        s = s.astype(xp.complex128, copy=False)
    te = np.asarray(te_s, dtype=np.float64).reshape(-1)
    if s.ndim != 2 or s.shape[1] != te.size:
        raise QSMInputError(f"signal must be (voxels, echoes) with {te.size} echoes, got "
                            f"{s.shape}", field="signal")
    n_vox = int(s.shape[0])
    psi0 = xp.ascontiguousarray(xp.asarray(field_hz, dtype=xp.float64).reshape(-1))
    r0 = xp.ascontiguousarray(xp.asarray(r2star_per_s, dtype=xp.float64).reshape(-1))
    if psi0.size != n_vox or r0.size != n_vox:
        raise QSMInputError(f"field_hz and r2star_per_s need {n_vox} values, got {psi0.size} "
                            f"and {r0.size}", field="field_hz")
    if int(max_iter) < 0 or not tol_hz > 0 or not r2star_max_per_s > 0:
        raise QSMConfigError("max_iter must be >= 0, tol_hz and r2star_max_per_s > 0")
    if not _kernel_supports(te.size, 0, use_kernel):
        return ideal_refine(signal, te_s, b0_t, field_hz, r2star_per_s, spectrum=spectrum,
                            max_iter=max_iter, tol_hz=tol_hz, r2star_max_per_s=r2star_max_per_s,
                            max_shift_hz=max_shift_hz, use_kernel=False)
    real = np.float32 if s.dtype == np.complex64 else np.float64
    basis = np.ascontiguousarray(fat_basis(spectrum, te, b0_t)).view(np.float64)
    psi = xp.empty(n_vox, dtype=xp.float64)
    r2s = xp.empty(n_vox, dtype=xp.float64)
    water = xp.empty(n_vox, dtype=xp.complex128)
    fat = xp.empty(n_vox, dtype=xp.complex128)
    residual = xp.empty(n_vox, dtype=xp.float64)
    converged = xp.zeros(n_vox, dtype=xp.bool_)
    iterations = xp.zeros(n_vox, dtype=xp.int32)
    if n_vox:
        grid, block = _launch_shape(n_vox)
        limit = max_shift_hz is not None
        backend.get_kernel(_FAMILY, "ideal_refine", real)(grid, block, (
            _interleaved(xp, s), xp.asarray(te), xp.asarray(basis), psi0, r0,
            np.int64(n_vox), np.int32(te.size), np.int32(int(max_iter)), np.float64(tol_hz),
            np.float64(r2star_max_per_s), np.int32(limit),
            np.float64(max_shift_hz if limit else 0.0), psi, r2s, water, fat, residual,
            converged, iterations))
    n_iter = int(iterations.max()) if n_vox else 0
    return IdealFit(field_hz=psi, r2star_per_s=r2s, water=water, fat=fat, residual=residual,
                    converged=converged, n_iter=n_iter)
