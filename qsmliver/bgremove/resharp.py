"""RESHARP: SHARP with Tikhonov regularisation instead of a truncated inverse.

Where the SMV sphere of radius ``r`` fits in the mask (the eroded mask ``M_r``), the
high-pass ``C = δ − s_r`` annihilates the harmonic background, so ``M_r C f_L = M_r C f``
for the local field ``f_L``. SHARP inverts ``C`` by a truncated inverse; RESHARP (Sun &
Wilman 2014) solves the regularised least squares problem

    f_L = argmin_x || M_r C (f − x) ||² + λ ||x||²

over the whole (padded) grid, by conjugate gradients on ``(C M_r C + λ) x = C M_r C f``
(``C`` is self-adjoint: the sphere is symmetric). The local field is ``M_r f_L``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from qsmliver import backend
from qsmliver.bgremove._common import (
    crop,
    eroded_or_error,
    fast_shape,
    positive_float,
    positive_int,
    prepare,
)
from qsmliver.bgremove.smv import smv_kernel, sphere_voxel_count
from qsmliver.errors import QSMConfigError
from qsmliver.optim import LinearOperator, conjugate_gradient

__all__ = ["resharp", "resharp_operator"]

Array = Any


def _radius(radius_mm: float | None, voxel: np.ndarray) -> float:
    largest = float(np.max(voxel))
    if radius_mm is None:
        return max(6.0, 2.0 * largest)
    radius = positive_float("radius_mm", radius_mm)
    if radius < largest - 1e-9:
        raise QSMConfigError(f"radius_mm must be >= the largest voxel dimension {largest} mm, "
                             f"got {radius_mm}")
    return radius


def _build(mask: Array, voxel: np.ndarray, radius: float, dtype: Any):
    xp = backend.get_array_module(mask)
    fft = backend.fft(xp)
    shape = mask.shape
    padded = fast_shape(shape, [int(np.ceil(radius / v)) + 1 for v in voxel], xp)
    kernel = smv_kernel(padded, voxel, radius, xp, dtype, half_spectrum=True)
    sampled = smv_kernel(padded, voxel, radius, xp, dtype, half_spectrum=True, sampling="image")
    mean_mask = crop(fft.irfftn(fft.rfftn(mask.astype(dtype), s=padded) * sampled, s=padded),
                     shape)
    eroded = mask & (mean_mask > 1.0 - 0.5 / sphere_voxel_count(voxel, radius))
    high_pass = (1 - kernel).astype(dtype)
    weight = xp.zeros(padded, dtype=dtype)
    weight[: shape[0], : shape[1], : shape[2]] = eroded

    def c(x: Array) -> Array:
        return fft.irfftn(fft.rfftn(x) * high_pass, s=padded)

    def forward(x: Array) -> Array:
        return weight * c(x)

    def adjoint(y: Array) -> Array:
        return c(weight * y)

    return LinearOperator(forward, adjoint, "RESHARP masked SMV high-pass"), eroded, padded


def resharp_operator(mask: Array, voxel_size_mm: ArrayLike, radius_mm: float | None = None,
                     dtype: Any = np.float64) -> tuple[LinearOperator, tuple[int, int, int]]:
    """RESHARP's ``x ↦ M_r (δ − s_r) * x`` and its adjoint on the padded grid.

    Parameters
    ----------
    mask : (X, Y, Z) bool ndarray
    voxel_size_mm : (3,) array_like
        Voxel size, mm.
    radius_mm : float, optional
        SMV radius, mm (default as in :func:`resharp`).
    dtype : dtype

    Returns
    -------
    op : LinearOperator
    shape : (3,) tuple of int
        The padded grid (domain and range of ``op``).
    """
    inputs = prepare(backend.get_array_module(mask).zeros(np.shape(mask), dtype=dtype),
                     mask, voxel_size_mm)
    op, _, padded = _build(inputs.mask, inputs.voxel, _radius(radius_mm, inputs.voxel),
                           inputs.dtype)
    return op, padded


def _resharp(inputs, radius: float, lam: float, max_iter: int, tol: float):
    xp, dtype = inputs.xp, inputs.dtype
    op, eroded, padded = _build(inputs.mask, inputs.voxel, radius, dtype)
    eroded_or_error(eroded, f"RESHARP erosion by {radius} mm")
    field = xp.zeros(padded, dtype=dtype)
    shape = inputs.field.shape
    field[: shape[0], : shape[1], : shape[2]] = inputs.field
    rhs = op.adjoint(op.forward(field))
    lam_t = dtype.type(lam)

    def normal(x: Array) -> Array:
        return op.normal(x) + lam_t * x

    solution, info = conjugate_gradient(normal, rhs, max_iter=max_iter, tol=tol,
                                        stage="background removal (RESHARP)")
    local = xp.where(eroded, crop(solution, shape), 0).astype(dtype, copy=False)
    parameters = {
        "radius_mm": float(radius),
        "lam": float(lam),
        "max_iter": int(max_iter),
        "tol": float(tol),
        "padded_shape": [int(n) for n in padded],
        "solver": "conjugate gradient on the Tikhonov normal equations",
        "iterations": info.iterations,
        "relative_residual": info.relative_residual,
        "converged": info.converged,
        "mask_voxels_in": int(inputs.mask.sum()),
        "mask_voxels_out": int(eroded.sum()),
    }
    return local, eroded, parameters


def resharp(
    field_ppm: Array,
    mask: Array,
    voxel_size_mm: ArrayLike,
    *,
    radius_mm: float | None = None,
    lam: float = 1e-3,
    max_iter: int = 200,
    tol: float = 1e-4,
) -> tuple[Array, Array]:
    """Background field removal by regularisation-enabled SHARP (RESHARP).

    Parameters
    ----------
    field_ppm : (X, Y, Z) ndarray
        Total (unwrapped) field, ppm; NumPy or CuPy, float32 or float64.
    mask : (X, Y, Z) bool ndarray
        Region of interest.
    voxel_size_mm : (3,) array_like
        Voxel size, mm.
    radius_mm : float, optional
        SMV radius, mm; default ``max(6 mm, 2 × largest voxel dimension)`` (6 mm gave the
        lowest error on the 3 mm head phantom among 3-6 mm).
    lam : float
        Tikhonov weight λ on ``||x||²`` (the high-pass has unit gain at high k, so λ is
        relative to that; Sun & Wilman chose it by the L-curve).
    max_iter : int
        Maximum CG iterations.
    tol : float
        CG relative-residual tolerance.

    Returns
    -------
    local_field_ppm : (X, Y, Z) ndarray
        Local field, ppm, zero outside ``eroded_mask``; dtype and module of the input.
    eroded_mask : (X, Y, Z) bool ndarray
        Voxels whose sphere of radius ``radius_mm`` lies in ``mask``.

    Raises
    ------
    QSMInputError
        Bad inputs or a mask that the erosion empties.
    QSMConfigError
        Bad radius, λ, ``max_iter`` or ``tol``.
    QSMNumericalError
        When CG produces non-finite values.

    References
    ----------
    Sun H, Wilman AH. Background field removal using spherical mean value filtering and
    Tikhonov regularization. Magn Reson Med 2014;71:1151-1157.
    """
    lam = positive_float("lam", lam)
    max_iter = positive_int("max_iter", max_iter)
    tol = positive_float("tol", tol, maximum=1.0)
    inputs = prepare(field_ppm, mask, voxel_size_mm)
    local, eroded, _ = _resharp(inputs, _radius(radius_mm, inputs.voxel), lam, max_iter, tol)
    return local, eroded
