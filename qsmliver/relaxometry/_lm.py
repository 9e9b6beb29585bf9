"""A Levenberg-Marquardt solver for many tiny least-squares problems at once (one per voxel).

Every voxel has its own parameters, damping and acceptance test; the loop runs over
iterations only. The normal equations (2x2 or 3x3) are solved in closed form so that a
singular voxel gives a zero step instead of an exception.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qsmliver.backend import convergence_check_interval

__all__ = ["levenberg_marquardt", "solve_small"]


def solve_small(xp, a, b):
    """Solve the batched systems ``a @ x = b`` for (N, P, P) ``a`` with P in {1, 2, 3}.

    Cramer's rule; voxels with a (near-)singular matrix get ``x = 0``.
    """
    p = a.shape[-1]
    if p == 1:
        det = a[:, 0, 0]
        ok = xp.abs(det) > 0
        return xp.where(ok, b[:, 0] / xp.where(ok, det, 1.0), 0.0)[:, None]
    if p == 2:
        a00, a01, a10, a11 = a[:, 0, 0], a[:, 0, 1], a[:, 1, 0], a[:, 1, 1]
        det = a00 * a11 - a01 * a10
        ok = xp.abs(det) > 1e-300
        det = xp.where(ok, det, 1.0)
        x0 = (a11 * b[:, 0] - a01 * b[:, 1]) / det
        x1 = (a00 * b[:, 1] - a10 * b[:, 0]) / det
        x = xp.stack([x0, x1], axis=-1)
        return xp.where(ok[:, None], x, 0.0)
    if p == 3:
        c00 = a[:, 1, 1] * a[:, 2, 2] - a[:, 1, 2] * a[:, 2, 1]
        c01 = a[:, 0, 2] * a[:, 2, 1] - a[:, 0, 1] * a[:, 2, 2]
        c02 = a[:, 0, 1] * a[:, 1, 2] - a[:, 0, 2] * a[:, 1, 1]
        c10 = a[:, 1, 2] * a[:, 2, 0] - a[:, 1, 0] * a[:, 2, 2]
        c11 = a[:, 0, 0] * a[:, 2, 2] - a[:, 0, 2] * a[:, 2, 0]
        c12 = a[:, 0, 2] * a[:, 1, 0] - a[:, 0, 0] * a[:, 1, 2]
        c20 = a[:, 1, 0] * a[:, 2, 1] - a[:, 1, 1] * a[:, 2, 0]
        c21 = a[:, 0, 1] * a[:, 2, 0] - a[:, 0, 0] * a[:, 2, 1]
        c22 = a[:, 0, 0] * a[:, 1, 1] - a[:, 0, 1] * a[:, 1, 0]
        det = a[:, 0, 0] * c00 + a[:, 0, 1] * c10 + a[:, 0, 2] * c20
        ok = xp.abs(det) > 1e-300
        det = xp.where(ok, det, 1.0)
        x0 = (c00 * b[:, 0] + c01 * b[:, 1] + c02 * b[:, 2]) / det
        x1 = (c10 * b[:, 0] + c11 * b[:, 1] + c12 * b[:, 2]) / det
        x2 = (c20 * b[:, 0] + c21 * b[:, 1] + c22 * b[:, 2]) / det
        x = xp.stack([x0, x1, x2], axis=-1)
        return xp.where(ok[:, None], x, 0.0)
    raise ValueError(f"solve_small handles 1 to 3 parameters, got {p}")


def levenberg_marquardt(
    xp,
    model: Callable[[Any], tuple[Any, Any]],
    params,
    y,
    weights,
    lower,
    upper,
    *,
    max_iter: int = 50,
    tol: float = 1e-7,
):
    """Minimise ``Σ_e w_e (y_e − f_e(p))²`` for every row (voxel) independently.

    Parameters
    ----------
    xp : module
        numpy or cupy.
    model : callable
        ``model(p, rows) -> (f, J)`` for the parameters ``p`` (M, P) of the voxels ``rows``
        (M,) (indices into the N voxels, for per-voxel constants): the model ``f`` (M, E) and
        its Jacobian ``J`` (M, E, P). Converged voxels leave the iteration.
    params : (N, P) ndarray
        Starting values.
    y, weights : (N, E) ndarray
        Data and non-negative weights (0 drops an echo).
    lower, upper : (P,) sequence of float
        Box bounds, enforced by projection.
    max_iter : int
        Largest number of iterations.
    tol : float
        A voxel stops when its cost fell by less than ``tol`` (relative) in three
        consecutive iterations (or its damping reached 1e9).

    Returns
    -------
    params : (N, P) ndarray
    cost : (N,) ndarray
        Final weighted sum of squares.
    iterations : int
        Iterations run (by the slowest voxel).

    References
    ----------
    Marquardt DW, An algorithm for least-squares estimation of nonlinear parameters, J Soc Ind
    Appl Math 1963;11:431.
    """
    lo = xp.asarray(lower, dtype=params.dtype)
    hi = xp.asarray(upper, dtype=params.dtype)
    p_all = xp.clip(params, lo, hi)
    idx = xp.arange(p_all.shape[0])
    f, jac = model(p_all, idx)
    resid = y - f
    cost_all = xp.sum(weights * resid * resid, axis=-1)
    eye = xp.eye(p_all.shape[-1], dtype=p_all.dtype)
    # the voxels still iterating (idx) and their state
    p, cost, ya, wa = p_all, cost_all, y, weights
    lam = xp.full(cost.shape, 1e-3, dtype=p.dtype)
    quiet = xp.zeros(cost.shape, dtype=xp.int32)
    # finished voxels are frozen and removed at the next check (every iteration on NumPy, so
    # that ``done`` is all False between checks there; every 10 on CuPy: fewer host syncs)
    done = xp.zeros(cost.shape, dtype=bool)
    every = convergence_check_interval(xp)
    iterations = 0
    for iterations in range(1, max_iter + 1):
        jw_t = xp.swapaxes(jac * wa[..., None], 1, 2)
        a = xp.matmul(jw_t, jac)
        g = xp.matmul(jw_t, resid[..., None])[..., 0]
        diag = xp.diagonal(a, axis1=1, axis2=2)
        damped = a + (lam[:, None] * (diag + 1e-12 * xp.max(diag, axis=-1, keepdims=True)
                                      + 1e-300))[:, :, None] * eye
        step = solve_small(xp, damped, g)
        trial = xp.clip(p + step, lo, hi)
        f_t, jac_t = model(trial, idx)
        resid_t = ya - f_t
        cost_t = xp.sum(wa * resid_t * resid_t, axis=-1)
        better = xp.isfinite(cost_t) & (cost_t < cost) & ~done
        change = xp.where(better, (cost - cost_t) / xp.maximum(cost, 1e-300), 0.0)
        p = xp.where(better[:, None], trial, p)
        jac = xp.where(better[:, None, None], jac_t, jac)
        resid = xp.where(better[:, None], resid_t, resid)
        cost = xp.where(better, cost_t, cost)
        lam = xp.clip(xp.where(better, lam * 0.2, lam * 10.0), 1e-9, 1e9)
        quiet = xp.where(change < tol, quiet + 1, 0)
        done = done | (quiet >= 3) | (lam >= 1e9)
        if (iterations % every == 0 or iterations == max_iter) and bool(xp.any(done)):
            p_all[idx[done]] = p[done]
            cost_all[idx[done]] = cost[done]
            keep = ~done
            idx, p, cost, lam, quiet = idx[keep], p[keep], cost[keep], lam[keep], quiet[keep]
            done = done[keep]
            jac, resid, ya, wa = jac[keep], resid[keep], ya[keep], wa[keep]
            if idx.size == 0:
                break
    if idx.size:
        p_all[idx] = p
        cost_all[idx] = cost
    return p_all, cost_all, iterations

