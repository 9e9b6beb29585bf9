"""Fused TV-ADMM updates of the gradient split: one pass over memory per ADMM iteration.

In TV-ADMM (FANSI; :func:`qsmliver.inversion.tv_admm`) every iteration, after the k-space
solve for χ, updates the split ``z₁ = ∇χ`` and its scaled dual ``s₁``::

    g = ∇χ                        forward differences per mm (Grid.grad)
    z₁ = soft(g + s₁, α/ρ)        the proximal map of (α/ρ)||·||₁
    s₁ ← s₁ + (g − z₁)
    r = ∇ᵀ(z₁ − s₁)              next right-hand side (Grid.grad_adjoint, = −div)

As chained array operations that is about a dozen passes over ``(3, X, Y, Z)`` arrays and
five temporaries. On CuPy the kernels of ``kernels/tv_update.cu`` do it in one
(:func:`tv_shrink_update_adjoint`) or two (:func:`tv_shrink_update` then
:func:`tv_grad_adjoint`) passes; on NumPy the functions here run the NumPy twin, which *is*
today's chained code path (built from :func:`qsmliver.optim.gradient`,
:func:`qsmliver.optim.divergence` and :func:`qsmliver.optim.soft_threshold`), so the twin
reproduces ``qsmliver.inversion.tv`` bit for bit and is the oracle of the GPU parity tests.

Wiring into ``_tv_admm`` (for the maintainer; ``tv.py`` is unchanged)::

    adjoint = grid.grad_adjoint(xp.zeros((3, *grid.shape), grid.dtype))   # z₁ = s₁ = 0
    for ...:
        rhs_k = dt(rho) * grid.rfft(adjoint) + dt(mu_data) * kernel * grid.rfft(z2 - s2)
        ...
        adjoint, s1 = tv_shrink_update_adjoint(chi, s1, dt(lam / rho), grid.voxel)

(``z1`` is then never stored; the test ``tests/test_fused_tv.py`` runs exactly this loop
against ``_tv_admm`` and finds the same χ to the last bit in float64.)

The fused kernel recomputes, for each voxel, the three neighbour values ``(z₁ − s₁)`` at
``i − e_a`` that the backward difference needs, from χ and the *old* ``s₁`` with the same
operations as at ``i``; each thread writes only its own ``s₁_new`` and output, so it needs a
second ``s₁`` buffer (ping-pong) and cannot update in place. The two-kernel path can.

References
----------
Bilgic B, Fan AP, Polimeni JR, et al. Fast quantitative susceptibility mapping with
L1-regularization and automatic parameter selection. MRM 2014;72:1444-1459.
Milovic C, Bilgic B, Zhao B, Acosta-Cabronero J, Tejos C. Fast nonlinear susceptibility
inversion with variational regularization. MRM 2018;80:814-821.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from qsmliver import backend
from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.optim.operators import divergence, gradient
from qsmliver.optim.solvers import soft_threshold

__all__ = [
    "TV_BOUNDARIES",
    "tv_grad_adjoint",
    "tv_shrink_update",
    "tv_shrink_update_adjoint",
]

Array = Any

#: Boundary conditions of the finite differences (as :func:`qsmliver.optim.gradient`).
TV_BOUNDARIES = ("periodic", "neumann")

_FAMILY = "tv_update"
_THREADS = 256
_MAX_BLOCKS = 65535


def _launch_shape(n: int) -> tuple[tuple[int], tuple[int]]:
    return (max(1, min(_MAX_BLOCKS, (n + _THREADS - 1) // _THREADS)),), (_THREADS,)


# -- validation -------------------------------------------------------------------------------
def _check_volume(x: Array, name: str) -> np.dtype:
    if x.ndim != 3:
        raise QSMInputError(f"{name} must be a 3-D volume, got shape {tuple(x.shape)}", field=name)
    dtype = np.dtype(x.dtype)
    if dtype not in (np.float32, np.float64):
        raise QSMInputError(f"{name} must be float32 or float64, got {dtype}", field=name)
    return dtype


def _check_split(s: Array, shape: tuple[int, ...], dtype: np.dtype, name: str) -> None:
    if tuple(s.shape) != (3, *shape):
        raise QSMInputError(f"{name} must have shape {(3, *shape)}, got {tuple(s.shape)}",
                            field=name)
    if np.dtype(s.dtype) != dtype:
        raise QSMInputError(f"{name} is {np.dtype(s.dtype)} but the volume is {dtype}; use one "
                            "precision", field=name)


def _check_common(voxel_size_mm: ArrayLike, boundary: str, dtype: np.dtype,
                  threshold: float | None = None) -> tuple[np.ndarray, Any]:
    voxel = np.asarray(voxel_size_mm, dtype=np.float64).reshape(-1)
    if voxel.shape != (3,) or not np.all(np.isfinite(voxel)) or np.any(voxel <= 0):
        raise QSMInputError(f"voxel_size_mm must be 3 positive values, got {voxel_size_mm!r}",
                            field="voxel_size_mm")
    if boundary not in TV_BOUNDARIES:
        raise QSMConfigError(f"boundary must be one of {TV_BOUNDARIES}, got {boundary!r}")
    if threshold is None:
        return voxel, None
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise QSMConfigError(f"threshold must be a number, got {threshold!r}") from None
    if not math.isfinite(value) or value < 0:
        raise QSMConfigError(f"threshold must be finite and >= 0, got {threshold!r}")
    return voxel, dtype.type(value)


def _use_kernel(xp, use_kernel: bool | None) -> bool:
    return xp is not np and use_kernel is not False


def _kernel_scalars(voxel: np.ndarray, dtype: np.dtype) -> tuple[Any, Any, Any]:
    # the twin divides by x.dtype.type(voxel[axis]); the kernel receives the same values
    return tuple(dtype.type(v) for v in voxel)


# -- the NumPy twins (= today's chained code path of qsmliver.inversion.tv) --------------------
def _twin_shrink(chi, s1, threshold, voxel, boundary, inplace):
    # g = ∇χ; z₁ = soft(g + s₁); s₁_new = s₁ + (g − z₁); u = z₁ − s₁_new, each step written
    # into a buffer that is no longer needed (the arithmetic of the plain chained expressions)
    xp = backend.get_array_module(chi)
    grad_chi = gradient(chi, voxel, boundary)
    z1 = xp.add(grad_chi, s1)
    soft_threshold(z1, threshold, out=z1)
    step = xp.subtract(grad_chi, z1, out=grad_chi)
    if inplace:
        s1 += step
        s1_new = s1
    else:
        s1_new = xp.add(s1, step, out=step)
    return xp.subtract(z1, s1_new, out=z1), s1_new


def _twin_adjoint(u, voxel, boundary):
    return -divergence(u, voxel, boundary)


# -- public API ---------------------------------------------------------------------------------
def tv_shrink_update(chi: Array, s1: Array, threshold: float, voxel_size_mm: ArrayLike, *,
                     boundary: str = "periodic", inplace: bool = False,
                     use_kernel: bool | None = None) -> tuple[Array, Array]:
    """Shrinkage and dual update of the TV split in one pass: returns ``(z₁ − s₁_new, s₁_new)``.

    Computes, per voxel and gradient component, ``g = ∇χ`` (forward differences per mm, as
    :func:`qsmliver.optim.gradient`), ``z₁ = soft(g + s₁, threshold)``,
    ``s₁_new = s₁ + (g − z₁)`` and ``u = z₁ − s₁_new``, the argument of the next
    :func:`tv_grad_adjoint`.

    Parameters
    ----------
    chi : (X, Y, Z) ndarray, float32 or float64
        Current susceptibility, ppm; NumPy or CuPy.
    s1 : (3, X, Y, Z) ndarray
        Scaled dual of the gradient split, ppm/mm; same dtype and backend as ``chi``.
    threshold : float
        Soft threshold ``α/ρ``, ppm/mm (>= 0); cast to the dtype of ``chi``.
    voxel_size_mm : (3,) array_like
        mm (``Grid.voxel`` for the padded TV-ADMM work grid).
    boundary : {"periodic", "neumann"}
        Of the differences; the TV-ADMM work grid is periodic (its FFT solve assumes it).
    inplace : bool
        Update ``s1`` in place (``s₁_new`` is then ``s1``; safe also on the GPU because each
        thread reads and writes only its own elements) instead of allocating.
    use_kernel : bool or None
        None (default) or True: the CUDA kernel on CuPy input; False: the chained array code
        (the twin) on either backend. NumPy input always uses the twin.

    Returns
    -------
    u : (3, X, Y, Z) ndarray
        ``z₁ − s₁_new``, ppm/mm.
    s1_new : (3, X, Y, Z) ndarray
        Updated dual (``s1`` itself when ``inplace``).

    Raises
    ------
    QSMInputError
        Shapes, dtypes or voxel size.
    QSMConfigError
        Unknown boundary or a negative/non-finite threshold.

    Examples
    --------
    >>> chi = np.zeros((4, 4, 4)); chi[2, 2, 2] = 1.0
    >>> u, s1 = tv_shrink_update(chi, np.zeros((3, 4, 4, 4)), 0.25, (1.0, 1.0, 1.0))
    >>> float(u[0, 1, 2, 2]), float(s1[0, 1, 2, 2])
    (0.5, 0.25)
    """
    xp = backend.get_array_module(chi, s1)
    dtype = _check_volume(chi, "chi")
    _check_split(s1, tuple(chi.shape), dtype, "s1")
    voxel, t = _check_common(voxel_size_mm, boundary, dtype, threshold)
    if not _use_kernel(xp, use_kernel):
        return _twin_shrink(chi, s1, t, voxel, boundary, inplace)
    chi_c = xp.ascontiguousarray(chi)
    s1_c = xp.ascontiguousarray(s1)
    s1_new = s1_c if inplace else xp.empty_like(s1_c)
    u = xp.empty_like(s1_c)
    kernel = backend.get_kernel(_FAMILY, "tv_shrink_update", dtype)
    grid, block = _launch_shape(chi_c.size)
    nx, ny, nz = (np.int64(n) for n in chi_c.shape)
    kernel(grid, block, (chi_c, s1_c, s1_new, u, nx, ny, nz, *_kernel_scalars(voxel, dtype),
                         t, np.int32(boundary == "neumann")))
    if inplace and s1_new is not s1:  # s1 was not C-contiguous: write the update back
        s1[...] = s1_new
        s1_new = s1
    return u, s1_new


def tv_grad_adjoint(u: Array, voxel_size_mm: ArrayLike, *, boundary: str = "periodic",
                    use_kernel: bool | None = None) -> Array:
    """``∇ᵀu = −div u`` (the adjoint of the per-mm forward-difference gradient) in one pass.

    Parameters
    ----------
    u : (3, X, Y, Z) ndarray, float32 or float64
        ppm/mm; NumPy or CuPy.
    voxel_size_mm : (3,) array_like
        mm.
    boundary : {"periodic", "neumann"}
    use_kernel : bool or None
        As in :func:`tv_shrink_update`.

    Returns
    -------
    (X, Y, Z) ndarray
        ppm/mm², dtype and backend of ``u``; equal to ``-qsmliver.optim.divergence(u, ...)``.

    Raises
    ------
    QSMInputError, QSMConfigError
        As :func:`tv_shrink_update`.
    """
    xp = backend.get_array_module(u)
    if u.ndim != 4 or u.shape[0] != 3:
        raise QSMInputError(f"u must have shape (3, X, Y, Z), got {tuple(u.shape)}", field="u")
    dtype = _check_volume(u[0], "u")
    voxel, _ = _check_common(voxel_size_mm, boundary, dtype)
    if not _use_kernel(xp, use_kernel):
        return _twin_adjoint(u, voxel, boundary)
    u_c = xp.ascontiguousarray(u)
    out = xp.empty(u_c.shape[1:], dtype=u_c.dtype)
    kernel = backend.get_kernel(_FAMILY, "tv_grad_adjoint", dtype)
    grid, block = _launch_shape(out.size)
    nx, ny, nz = (np.int64(n) for n in out.shape)
    kernel(grid, block, (u_c, out, nx, ny, nz, *_kernel_scalars(voxel, dtype),
                         np.int32(boundary == "neumann")))
    return out


def _overlaps(a: Array, b: Array) -> bool:
    start_a, start_b = int(a.data.ptr), int(b.data.ptr)
    return start_a < start_b + int(b.nbytes) and start_b < start_a + int(a.nbytes)


def tv_shrink_update_adjoint(chi: Array, s1: Array, threshold: float, voxel_size_mm: ArrayLike,
                             *, boundary: str = "periodic", s1_out: Array | None = None,
                             use_kernel: bool | None = None) -> tuple[Array, Array]:
    """Shrinkage, dual update and ``∇ᵀ(z₁ − s₁_new)`` in one pass over memory.

    Equal to ``u, s1_new = tv_shrink_update(...)`` followed by ``tv_grad_adjoint(u, ...)``,
    without storing ``u``: per voxel, the kernel recomputes the neighbour values of ``u`` the
    backward difference needs from ``chi`` and the old ``s1`` (see the module docstring).

    Parameters
    ----------
    chi, s1, threshold, voxel_size_mm, boundary, use_kernel
        As in :func:`tv_shrink_update`.
    s1_out : (3, X, Y, Z) ndarray, optional
        C-contiguous buffer for ``s₁_new`` (ping-pong between two buffers across iterations).
        It must not overlap ``s1``; allocated when omitted. Used on the kernel path only.

    Returns
    -------
    adjoint : (X, Y, Z) ndarray
        ``∇ᵀ(z₁ − s₁_new)``, ppm/mm², what the next TV-ADMM right-hand side needs.
    s1_new : (3, X, Y, Z) ndarray
        Updated dual.

    Raises
    ------
    QSMInputError
        Shapes, dtypes or voxel size; an ``s1_out`` that overlaps ``s1``, is not
        C-contiguous or has another shape/dtype.
    QSMConfigError
        Unknown boundary or a bad threshold.

    Examples
    --------
    >>> chi = np.zeros((4, 4, 4)); chi[2, 2, 2] = 1.0
    >>> adjoint, _ = tv_shrink_update_adjoint(chi, np.zeros((3, 4, 4, 4)), 0.25, (1, 1, 1))
    >>> float(adjoint[2, 2, 2])
    3.0
    """
    xp = backend.get_array_module(chi, s1)
    dtype = _check_volume(chi, "chi")
    _check_split(s1, tuple(chi.shape), dtype, "s1")
    voxel, t = _check_common(voxel_size_mm, boundary, dtype, threshold)
    if not _use_kernel(xp, use_kernel):
        u, s1_new = _twin_shrink(chi, s1, t, voxel, boundary, False)
        return _twin_adjoint(u, voxel, boundary), s1_new
    chi_c = xp.ascontiguousarray(chi)
    s1_c = xp.ascontiguousarray(s1)
    if s1_out is None:
        s1_out = xp.empty_like(s1_c)
    else:
        _check_split(s1_out, tuple(chi.shape), dtype, "s1_out")
        if not s1_out.flags.c_contiguous:
            raise QSMInputError("s1_out must be C-contiguous", field="s1_out")
        if _overlaps(s1_out, s1_c):
            raise QSMInputError("s1_out must not overlap s1: the fused kernel reads the old "
                                "s1 of neighbouring voxels while it writes", field="s1_out")
    out = xp.empty(chi_c.shape, dtype=chi_c.dtype)
    kernel = backend.get_kernel(_FAMILY, "tv_shrink_update_adjoint", dtype)
    grid, block = _launch_shape(chi_c.size)
    nx, ny, nz = (np.int64(n) for n in chi_c.shape)
    kernel(grid, block, (chi_c, s1_c, s1_out, out, nx, ny, nz, *_kernel_scalars(voxel, dtype),
                         t, np.int32(boundary == "neumann")))
    return out, s1_out
