"""Iterative solvers shared by background removal and dipole inversion: CG, LSQR, shrinkage.

All take the array module from their inputs (NumPy or CuPy). Convergence is judged on the
relative residual; the iteration count and the final residual are returned for the sidecar.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from qsmliver.backend import get_array_module
from qsmliver.errors import QSMNumericalError
from qsmliver.optim.operators import LinearOperator

__all__ = ["SolverInfo", "conjugate_gradient", "lsqr", "soft_threshold"]

Array = Any


@dataclasses.dataclass
class SolverInfo:
    """How an iterative solve ended.

    Attributes
    ----------
    iterations : int
        Iterations run.
    relative_residual : float
        Final ``||r|| / ||b||`` (CG) or ``||A^H r|| / (||A|| ||r||)`` estimate (LSQR).
    converged : bool
        Whether the tolerance was reached before ``max_iter``.
    """

    iterations: int
    relative_residual: float
    converged: bool

    def __post_init__(self) -> None:
        # plain Python scalars, so that the summary is JSON-serialisable
        self.iterations = int(self.iterations)
        self.relative_residual = float(self.relative_residual)
        self.converged = bool(self.converged)

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary."""
        return dataclasses.asdict(self)


def _norm(xp, a: Array) -> float:
    return float(xp.linalg.norm(a.ravel()))


def _real_inner(xp, a: Array, b: Array) -> float:
    return float(xp.vdot(a.ravel(), b.ravel()).real)


def conjugate_gradient(
    apply_a: Callable[[Array], Array],
    rhs: Array,
    x0: Array | None = None,
    *,
    max_iter: int = 100,
    tol: float = 1e-6,
    stage: str = "conjugate gradient",
) -> tuple[Array, SolverInfo]:
    """Solve ``A x = b`` for a Hermitian positive (semi-)definite ``A`` by conjugate gradients.

    Hestenes & Stiefel, J Res Natl Bur Stand 1952;49:409.

    Parameters
    ----------
    apply_a : callable
        ``x -> A x`` (e.g. the normal operator ``A^H W A + λ R``).
    rhs : array
        ``b``.
    x0 : array, optional
        Start (zeros by default).
    max_iter : int
    tol : float
        Stop when ``||b - A x|| <= tol ||b||``.
    stage : str
        Named in the error raised when the iteration produces non-finite values.

    Returns
    -------
    x : array
    info : SolverInfo

    Raises
    ------
    QSMNumericalError
        When the residual becomes NaN/inf (an indefinite or broken operator).
    """
    xp = get_array_module(rhs)
    b_norm = _norm(xp, rhs)
    if b_norm == 0.0:
        return xp.zeros_like(rhs), SolverInfo(0, 0.0, True)
    x = xp.zeros_like(rhs) if x0 is None else x0.astype(rhs.dtype, copy=True)
    r = rhs - apply_a(x) if x0 is not None else rhs.copy()
    p = r.copy()
    rr = _real_inner(xp, r, r)
    iterations = 0
    for iterations in range(1, max_iter + 1):
        ap = apply_a(p)
        pap = _real_inner(xp, p, ap)
        if not np.isfinite(pap):
            raise QSMNumericalError(stage, f"non-finite curvature at iteration {iterations}")
        if pap <= 0:
            break  # exact solution reached within the range of A (semi-definite case)
        alpha = rr / pap
        x += alpha * p
        r -= alpha * ap
        rr_new = _real_inner(xp, r, r)
        if np.sqrt(rr_new) <= tol * b_norm:
            rr = rr_new
            break
        p = r + (rr_new / rr) * p
        rr = rr_new
    relative = float(np.sqrt(rr) / b_norm)
    if not np.isfinite(relative):
        raise QSMNumericalError(stage, "the residual became non-finite")
    return x, SolverInfo(iterations, relative, relative <= tol)


def lsqr(
    op: LinearOperator,
    b: Array,
    x_like: Array,
    *,
    max_iter: int = 100,
    tol: float = 1e-6,
    stage: str = "LSQR",
) -> tuple[Array, SolverInfo]:
    """Least squares ``min ||A x - b||²`` by LSQR (Paige & Saunders 1982).

    Paige CC, Saunders MA. LSQR: an algorithm for sparse linear equations and sparse least
    squares. ACM Trans Math Softw 1982;8:43-71. Bidiagonalisation with the stopping rule on
    ``||A^H r|| / (||A|| ||r||) <= tol`` (their test S2).

    Parameters
    ----------
    op : LinearOperator
    b : array
        Data, in the range of ``op``.
    x_like : array
        An array with the shape and dtype of the unknown (its values are not used).
    max_iter : int
    tol : float
        Stop when ``||A^H r|| / (||A|| ||r||) <= tol``.
    stage : str

    Returns
    -------
    x : array
    info : SolverInfo
    """
    xp = get_array_module(b)
    x = xp.zeros_like(x_like)
    beta = _norm(xp, b)
    if beta == 0.0:
        return x, SolverInfo(0, 0.0, True)
    u = b / beta
    v = op.adjoint(u)
    alpha = _norm(xp, v)
    if alpha == 0.0:
        return x, SolverInfo(0, 0.0, True)
    v = v / alpha
    w = v.copy()
    phi_bar, rho_bar = beta, alpha
    a_norm_sq = 0.0
    relative = 1.0
    iterations = 0
    for iterations in range(1, max_iter + 1):
        u = op.forward(v) - alpha * u
        beta = _norm(xp, u)
        if beta > 0:
            u = u / beta
        a_norm_sq += alpha**2 + beta**2
        v_next = op.adjoint(u) - beta * v
        alpha = _norm(xp, v_next)
        if alpha > 0:
            v_next = v_next / alpha
        rho = np.hypot(rho_bar, beta)
        c, s = rho_bar / rho, beta / rho
        theta = s * alpha
        rho_bar = -c * alpha
        phi = c * phi_bar
        phi_bar = s * phi_bar
        x = x + (phi / rho) * w
        w = v_next - (theta / rho) * w
        v = v_next
        # ||A^H r|| = phi_bar * alpha * |c|; ||r|| ≈ phi_bar
        residual = abs(phi_bar)
        if not np.isfinite(residual):
            raise QSMNumericalError(stage, f"non-finite residual at iteration {iterations}")
        relative = (abs(phi_bar * alpha * c) / (np.sqrt(a_norm_sq) * residual)
                    if residual > 0 else 0.0)
        if relative <= tol:
            break
    return x, SolverInfo(iterations, float(relative), relative <= tol)


def soft_threshold(x: Array, threshold: float | Array) -> Array:
    """Elementwise soft thresholding ``sign(x) max(|x| - t, 0)``, the proximal map of ``t|x|``.

    Parameters
    ----------
    x : real array
    threshold : float or array, >= 0

    Returns
    -------
    array
    """
    xp = get_array_module(x)
    return xp.sign(x) * xp.maximum(xp.abs(x) - threshold, 0)
