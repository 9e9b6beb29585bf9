"""Dipole inversion by LSQR on the weighted dipole operator (the first step of iLSQR)."""

from __future__ import annotations

from typing import Any

from numpy.typing import ArrayLike

from qsmliver.inversion._common import (
    DEFAULT_MIN_PAD,
    DEFAULT_PAD_FRACTION,
    Grid,
    check_inputs,
    check_weight,
    finite_or_raise,
    make_grid,
    positive,
    positive_int,
)
from qsmliver.optim import LinearOperator, lsqr

__all__ = ["ilsqr", "weighted_dipole_operator"]

Array = Any


def weighted_dipole_operator(grid: Grid, weight: Array) -> LinearOperator:
    """``χ ↦ W · F⁻¹DF(M χ)`` (χ supported in the mask ``M``) and its adjoint."""
    support = grid.mask.astype(grid.dtype)
    return LinearOperator(lambda x: weight * grid.dipole(support * x),
                          lambda y: support * grid.dipole(weight * y),
                          "weighted masked dipole")


def ilsqr(local_field_ppm: Array, mask: Array, voxel_size_mm: ArrayLike,
          b0_dir: ArrayLike = (0.0, 0.0, 1.0), *, weight: Array | None = None,
          max_iter: int = 100, tol: float = 0.01,
          pad_fraction: float = DEFAULT_PAD_FRACTION, min_pad: int = DEFAULT_MIN_PAD) -> Array:
    """LSQR dipole inversion regularised by early stopping (step 1 of iLSQR).

    Solves ``min ||W(F⁻¹DF(Mχ) − φ)||²`` with χ supported in the mask by LSQR (Paige &
    Saunders 1982) and stops at the relative tolerance ``tol`` (0.01 as in Li et al. 2015),
    which regularises by truncating the Krylov iteration before the ill-conditioned
    components (near the magic-angle cone) are fitted. The streaking-artefact estimation
    steps of the full iLSQR are not implemented.

    Parameters
    ----------
    local_field_ppm : (X, Y, Z) float array
        Local field, ppm.
    mask : (X, Y, Z) bool array
    voxel_size_mm : (3,) array_like
        mm.
    b0_dir : (3,) array_like
    weight : (X, Y, Z) array, optional
        Data reliability (normalised to mean 1 in the mask), e.g. the magnitude as in iLSQR;
        uniform when omitted.
    max_iter : int
    tol : float
        LSQR stopping tolerance on ``||A^H r|| / (||A|| ||r||)``.
    pad_fraction, min_pad : float, int
        Zero padding of the working grid.

    Returns
    -------
    (X, Y, Z) array
        χ in ppm, zero outside the mask, dtype and backend of the input.

    References
    ----------
    Li W, Wang N, Yu F, et al. A method for estimating and removing streaking artifacts in
    quantitative susceptibility mapping. NeuroImage 2015;108:111-122. Paige CC, Saunders MA.
    ACM Trans Math Softw 1982;8:43-71.
    """
    chi, _ = run_ilsqr(local_field_ppm, mask, voxel_size_mm, b0_dir, weight=weight,
                       max_iter=max_iter, tol=tol, pad_fraction=pad_fraction, min_pad=min_pad)
    return chi


def run_ilsqr(local_field_ppm, mask, voxel_size_mm, b0_dir=(0.0, 0.0, 1.0), *, weight=None,
              max_iter=100, tol=0.01, pad_fraction=DEFAULT_PAD_FRACTION,
              min_pad=DEFAULT_MIN_PAD):
    """:func:`ilsqr` returning ``(chi, info)``."""
    xp, field, mask_arr, voxel, b0 = check_inputs(local_field_ppm, mask, voxel_size_mm, b0_dir)
    w = check_weight(weight, field, mask_arr)
    max_iter = positive_int("max_iter", max_iter)
    tol = positive("tol", tol)
    grid = make_grid(field, mask_arr, voxel, b0, pad_fraction=pad_fraction, min_pad=min_pad)
    weight_grid = grid.embed(w)
    data = grid.embed(xp.where(mask_arr, field, 0))
    op = weighted_dipole_operator(grid, weight_grid)
    chi, info = lsqr(op, weight_grid * data, data, max_iter=max_iter, tol=tol,
                     stage="dipole inversion (LSQR)")
    finite_or_raise(xp, chi, "dipole inversion (LSQR)")
    result = {"iterations": int(info.iterations),
              "relative_residual": float(info.relative_residual),
              "converged": bool(info.converged), "max_iter": max_iter, "tol": tol}
    return grid.extract(chi, mask_arr), result
