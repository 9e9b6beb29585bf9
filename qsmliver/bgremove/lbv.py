"""LBV: background field removal by solving a Laplace boundary value problem.

The background field has its sources outside the mask, so it is harmonic inside:
``∇² f_bg = 0``. LBV (Zhou et al. 2014) takes the measured total field on the mask boundary as
Dirichlet data (the local field is small there) and solves the Laplace equation for ``f_bg``
in the mask interior; the local field is ``f − f_bg``. The outer voxel layers, where the
boundary assumption is least accurate, are peeled off the returned mask.

Discretisation here: the 7-point Laplacian with anisotropic spacing,
``(∇² u)_i = Σ_axes (u_{i+e} + u_{i−e} − 2 u_i) / h²``; the boundary is the mask minus its
6-connected erosion, the interior the erosion. The interior unknowns solve the symmetric
positive definite system ``−P ∇² P u = P ∇² (B f)`` (P, B: restriction to interior and
boundary), solved by conjugate gradients started from the total field, which is already
close to the (dominant) background.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from qsmliver import backend
from qsmliver.bgremove._common import eroded_or_error, positive_float, positive_int, prepare
from qsmliver.optim import LinearOperator, conjugate_gradient

__all__ = ["dirichlet_laplacian", "lbv", "lbv_operator"]

Array = Any


def dirichlet_laplacian(x: Array, voxel_size_mm: ArrayLike) -> Array:
    """7-point Laplacian (per mm²) with zero values outside the array.

    Parameters
    ----------
    x : (X, Y, Z) ndarray
    voxel_size_mm : (3,) array_like
        Grid spacing, mm.

    Returns
    -------
    (X, Y, Z) ndarray
        ``Σ_axes (x_{i+1} + x_{i−1} − 2 x_i) / h²`` with ``x = 0`` beyond the edges; a
        symmetric (self-adjoint) operator.
    """
    voxel = np.asarray(voxel_size_mm, dtype=np.float64)
    inv_h2 = [x.dtype.type(1.0 / (v * v)) for v in voxel]
    out = x * x.dtype.type(-2.0 * float(sum(1.0 / (v * v) for v in voxel)))
    for axis in range(3):
        low = [slice(None)] * 3
        high = [slice(None)] * 3
        low[axis] = slice(None, -1)
        high[axis] = slice(1, None)
        out[tuple(low)] += x[tuple(high)] * inv_h2[axis]
        out[tuple(high)] += x[tuple(low)] * inv_h2[axis]
    return out


def _interior(mask: Array) -> Array:
    return _erode(mask, 1)


def _erode(mask: Array, layers: int) -> Array:
    """``mask`` eroded by ``layers`` 6-connected voxel layers (outside the array = False)."""
    xp = backend.get_array_module(mask)
    nd = backend.ndimage(xp)
    structure = xp.asarray(nd.generate_binary_structure(3, 1))
    return nd.binary_erosion(mask, structure=structure, iterations=layers, border_value=0)


def lbv_operator(mask: Array, voxel_size_mm: ArrayLike,
                 dtype: Any = np.float64) -> tuple[LinearOperator, Array]:
    """The SPD operator ``u ↦ −P ∇² (P u)`` of LBV on the interior of ``mask``.

    Parameters
    ----------
    mask : (X, Y, Z) bool ndarray
    voxel_size_mm : (3,) array_like
        Voxel size, mm.
    dtype : dtype
        Real dtype of the operator's arithmetic.

    Returns
    -------
    op : LinearOperator
        Self-adjoint: ``op.adjoint is op.forward``'s transpose (the same map).
    interior : (X, Y, Z) bool ndarray
        ``mask`` eroded by one voxel (6-connected); the unknowns.
    """
    xp = backend.get_array_module(mask)
    interior = _interior(xp.asarray(mask) != 0)
    p = interior.astype(dtype)

    def apply(u: Array) -> Array:
        return -p * dirichlet_laplacian(p * u, voxel_size_mm)

    return LinearOperator(apply, apply, "LBV masked Laplacian"), interior


def _lbv(inputs, tol: float, max_iter: int, peel: int):
    xp, f, m, voxel, dtype = inputs.xp, inputs.field, inputs.mask, inputs.voxel, inputs.dtype
    op, interior = lbv_operator(m, voxel, dtype)
    eroded_or_error(interior, "LBV's one-voxel boundary layer")
    boundary_values = xp.where(interior, dtype.type(0), f)  # f on the boundary layer, else 0
    p = interior.astype(dtype)
    rhs = p * dirichlet_laplacian(boundary_values, voxel)
    u, info = conjugate_gradient(op.forward, rhs, x0=p * f, max_iter=max_iter, tol=tol,
                                 stage="background removal (LBV)")
    background = p * u + boundary_values
    returned = m
    if peel > 0:
        returned = _erode(m, peel)
    returned = eroded_or_error(returned, f"peeling {peel} voxel layer(s)")
    local = xp.where(returned & interior, f - background, 0).astype(dtype, copy=False)
    parameters = {
        "tol": float(tol),
        "max_iter": int(max_iter),
        "peel": int(peel),
        "solver": "conjugate gradient on the 7-point Dirichlet Laplacian",
        "iterations": info.iterations,
        "relative_residual": info.relative_residual,
        "converged": info.converged,
        "mask_voxels_in": int(m.sum()),
        "mask_voxels_out": int(returned.sum()),
    }
    return local, returned, parameters


def lbv(
    field_ppm: Array,
    mask: Array,
    voxel_size_mm: ArrayLike,
    *,
    tol: float = 1e-4,
    max_iter: int = 2000,
    peel: int = 1,
) -> tuple[Array, Array]:
    """Background field removal by the Laplacian boundary value method (LBV).

    Parameters
    ----------
    field_ppm : (X, Y, Z) ndarray
        Total (unwrapped) field, ppm; NumPy or CuPy, float32 or float64.
    mask : (X, Y, Z) bool ndarray
        Region of interest; its outer voxel layer carries the Dirichlet boundary values.
    voxel_size_mm : (3,) array_like
        Voxel size, mm (anisotropic spacing enters the Laplacian).
    tol : float
        CG stopping rule: relative residual ``||b − A u|| / ||b||``.
    max_iter : int
        Maximum CG iterations.
    peel : int
        Number of outer voxel layers removed from the returned mask (>= 0). With 0 the input
        mask is returned and the local field is 0 on its boundary layer.

    Returns
    -------
    local_field_ppm : (X, Y, Z) ndarray
        Local field, ppm, zero outside ``eroded_mask``; dtype and module of the input.
    eroded_mask : (X, Y, Z) bool ndarray
        ``mask`` eroded by ``peel`` voxel layers (6-connected).

    Raises
    ------
    QSMInputError
        Bad inputs, or a mask with no interior voxels.
    QSMConfigError
        Non-positive ``tol``/``max_iter`` or negative ``peel``.
    QSMNumericalError
        When CG produces non-finite values.

    References
    ----------
    Zhou D, Liu T, Spincemaille P, Wang Y. Background field removal by solving the Laplacian
    boundary value problem. NMR Biomed 2014;27:312-319.

    Examples
    --------
    >>> import numpy as np
    >>> grid = np.indices((24, 24, 24)) - 11.5
    >>> mask = (grid ** 2).sum(axis=0) < 10 ** 2
    >>> ramp = 0.01 * grid[0] + 0.02 * grid[2]        # harmonic: removed exactly
    >>> local, eroded = lbv(ramp, mask, (1, 1, 1), tol=1e-10)
    >>> bool(np.abs(local).max() < 1e-8)
    True
    """
    tol = positive_float("tol", tol, maximum=1.0)
    max_iter = positive_int("max_iter", max_iter)
    peel = positive_int("peel", peel, minimum=0)
    inputs = prepare(field_ppm, mask, voxel_size_mm)
    local, returned, _ = _lbv(inputs, tol, max_iter, peel)
    return local, returned
