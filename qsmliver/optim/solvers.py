"""Iterative solvers shared by background removal and dipole inversion: CG, LSQR, shrinkage.

All take the array module from their inputs (NumPy or CuPy). Convergence is judged on the
relative residual; the iteration count and the final residual are returned for the sidecar.

On CuPy the scalars of the recurrences (CG's α and β, LSQR's α, β, ρ, φ, ...) stay 0-d device
arrays, so that an iteration queues kernels without waiting for the GPU, and the convergence
test (which copies one number to the host) runs every ``check_every`` iterations
(:func:`qsmliver.backend.convergence_check_interval`: 1 on NumPy, 10 on CuPy). Between two
checks a 0-d device flag freezes the iterate where the every-iteration test would have
stopped, so a GPU solve returns the iterate, residual and iteration count of the CPU one
(it only runs on, idle, to the next check).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from qsmliver.backend import convergence_check_interval, get_array_module
from qsmliver.errors import QSMConfigError, QSMNumericalError
from qsmliver.optim.deflation import DeflationSpace
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
    """``||a||`` on the host (a Python float; one device synchronisation on CuPy)."""
    return float(xp.linalg.norm(a.ravel()))


def _scalar(xp, value: Array) -> Any:
    """A solver scalar: a Python float on NumPy, a 0-d device array on CuPy (no host sync)."""
    return float(value) if xp is np else value


def _device_norm(xp, a: Array) -> Any:
    """``||a||`` as a solver scalar (see :func:`_scalar`)."""
    return _scalar(xp, xp.linalg.norm(a.ravel()))


def _real_inner(xp, a: Array, b: Array) -> Any:
    """``Re <a, b>`` as a solver scalar (see :func:`_scalar`)."""
    return _scalar(xp, xp.vdot(a.ravel(), b.ravel()).real)


def _ratio(numerator: Any, denominator: Any) -> Any:
    """``numerator / denominator``, 0 where ``denominator <= 0``, without a host sync."""
    if isinstance(denominator, float):
        return numerator / denominator if denominator > 0 else 0.0
    xp = get_array_module(denominator)
    positive = denominator > 0
    safe = xp.where(positive, denominator, xp.ones_like(denominator))
    return xp.where(positive, numerator / safe, xp.zeros_like(denominator))


def _divide_if_positive(a: Array, scale: Any) -> Array:
    """``a / scale`` where ``scale > 0``, else ``a`` unchanged (no host sync on CuPy)."""
    if isinstance(scale, float):
        return a / scale if scale > 0 else a
    xp = get_array_module(scale)
    return a / xp.where(scale > 0, scale, xp.ones_like(scale))


def _like(value: Any, dtype: Any) -> Any:
    """A scalar in the real ``dtype`` of the iterate, so that float32 stays float32."""
    real = np.dtype(dtype)
    if real.kind == "c":
        real = np.dtype(real.char.lower())
    if isinstance(value, (float, np.generic)):
        return real.type(value)
    return value.astype(real)


def _to_host(xp, *values: Any) -> list[float]:
    """Solver scalars as Python floats, copied from the device together (one sync)."""
    if xp is np:
        return [float(v) for v in values]
    stacked = xp.stack([xp.asarray(v, dtype=xp.float64) for v in values])
    return [float(v) for v in stacked.get()]


def _check_every(xp, check_every: int | None) -> int:
    if check_every is None:
        return convergence_check_interval(xp)
    if isinstance(check_every, bool) or int(check_every) != check_every or check_every < 1:
        raise QSMConfigError(f"check_every must be a positive integer, got {check_every!r}")
    return int(check_every)


def conjugate_gradient(
    apply_a: Callable[[Array], Array],
    rhs: Array,
    x0: Array | None = None,
    *,
    max_iter: int = 100,
    tol: float = 1e-6,
    stage: str = "conjugate gradient",
    check_every: int | None = None,
    deflation: DeflationSpace | None = None,
) -> tuple[Array, SolverInfo]:
    """Solve ``A x = b`` for a Hermitian positive (semi-)definite ``A`` by conjugate gradients.

    Hestenes & Stiefel, J Res Natl Bur Stand 1952;49:409; with ``deflation``, the deflated CG
    of Saad et al. (SIAM J Sci Comput 2000;21:1909; :mod:`qsmliver.optim.deflation`).

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
    check_every : int, optional
        Test convergence (a host synchronisation) every this many iterations and at the last;
        default :func:`qsmliver.backend.convergence_check_interval` (1 on NumPy, 10 on CuPy).
        Between checks the iterate freezes on the device where the test would have stopped,
        so ``x`` and ``info`` are those of ``check_every=1`` whatever the interval.
    deflation : DeflationSpace, optional
        A subspace ``Z`` of a real system (:func:`qsmliver.optim.deflation_space`, built for
        this ``A``): the start is corrected by the Galerkin solution in ``Z`` and every search
        direction is kept A-orthogonal to ``Z``, which removes the eigenvalues that ``Z``
        captures from the iteration.

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
    if deflation is not None:
        correction, change = deflation.coarse_correction(r)
        x += correction
        r -= change
        p = r - deflation.a_orthogonal_part(r)
    else:
        p = r.copy()
    rr = _real_inner(xp, r, r)
    every = _check_every(xp, check_every)
    threshold = tol * b_norm
    # Between host checks (every > 1, the GPU default) the iteration cannot stop, so it
    # freezes instead: ``active`` (a device flag, no sync) turns False where the host test
    # would have stopped (converged, or non-positive curvature), and α = 0 from then on. The
    # iterate, the residual and the count of active iterations are then those of the
    # every-iteration test: the result does not depend on ``check_every``.
    active, counted = True, 0
    iterations = 0
    for iterations in range(1, max_iter + 1):
        check = iterations % every == 0 or iterations == max_iter
        ap = apply_a(p)
        pap = _real_inner(xp, p, ap)
        if check:
            pap_host = float(pap)
            if not np.isfinite(pap_host):
                raise QSMNumericalError(stage, f"non-finite curvature at iteration {iterations}")
            if every == 1 and pap_host <= 0:
                break  # exact solution reached within the range of A (semi-definite case)
        if every == 1:
            alpha = _ratio(rr, pap)
        else:
            counted = counted + active
            active = active & (pap > 0)
            alpha = _gated(_ratio(rr, pap), active)
        x += alpha * p
        r -= alpha * ap
        rr_new = _real_inner(xp, r, r)
        if every == 1:
            if check and _at_most(rr_new, threshold):
                rr = rr_new
                break
        else:
            active = active & ~_at_most(rr_new, threshold)
            if check and not bool(active):
                rr, iterations = rr_new, int(counted)
                break
        p = r + _ratio(rr_new, rr) * p
        if deflation is not None:
            p -= deflation.a_orthogonal_part(r)
        rr = rr_new
    relative = float(np.sqrt(float(rr)) / b_norm)
    if not np.isfinite(relative):
        raise QSMNumericalError(stage, "the residual became non-finite")
    return x, SolverInfo(iterations, relative, relative <= tol)


def _gated(value: Any, flag: Any) -> Any:
    """``value`` where ``flag``, else 0; host scalars stay Python floats (NumPy's weak scalars,
    which keep a float32 iterate's arithmetic in float32)."""
    if isinstance(flag, (bool, np.bool_)):
        if flag:
            return value
        return 0.0 if isinstance(value, float) else np.zeros_like(value)
    xp = get_array_module(flag)
    return xp.where(flag, value, xp.zeros_like(value))


def _at_most(squared_norm: Any, threshold: float) -> Any:
    """``sqrt(squared_norm) <= threshold`` in float64: a bool, or a 0-d device bool (no sync)."""
    if isinstance(squared_norm, (float, np.generic)):
        return np.bool_(np.sqrt(float(squared_norm)) <= threshold)  # np.bool_: ~ negates
    xp = get_array_module(squared_norm)
    return xp.sqrt(squared_norm.astype(xp.float64)) <= threshold


def lsqr(
    op: LinearOperator,
    b: Array,
    x_like: Array,
    *,
    max_iter: int = 100,
    tol: float = 1e-6,
    stage: str = "LSQR",
    check_every: int | None = None,
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
    check_every : int, optional
        As in :func:`conjugate_gradient`.

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
    every = _check_every(xp, check_every)
    dtype = x.dtype
    # As in conjugate_gradient: between host checks (every > 1) the iterate freezes where the
    # every-iteration test would have stopped, and ``relative`` keeps the value it had there.
    # The divisions by ρ are guarded, so a breakdown after the freeze (an exact solution:
    # α = β = 0, ρ = 0) keeps the recurrences finite instead of turning x into NaN.
    active, counted = True, 0
    iterations = 0
    for iterations in range(1, max_iter + 1):
        u = op.forward(v) - alpha * u
        beta = _device_norm(xp, u)
        u = _divide_if_positive(u, beta)
        a_norm_sq += alpha**2 + beta**2
        v_next = op.adjoint(u) - beta * v
        alpha = _device_norm(xp, v_next)
        v_next = _divide_if_positive(v_next, alpha)
        rho = xp.hypot(rho_bar, beta)
        c, s = _ratio(rho_bar, rho), _ratio(beta, rho)
        theta = s * alpha
        rho_bar = -c * alpha
        phi = c * phi_bar
        phi_bar = s * phi_bar
        # scalars in the iterate's precision: a float64 NumPy scalar would promote float32
        step = _like(_ratio(phi, rho), dtype)
        check = iterations % every == 0 or iterations == max_iter
        if every == 1:
            x = x + step * w
        else:
            counted = counted + active
            x = x + _gated(step, active) * w
        w = v_next - _like(_ratio(theta, rho), dtype) * w
        v = v_next
        if every == 1:
            if not check:
                continue
            phi_bar_h, alpha_h, c_h, a_norm_sq_h = _to_host(xp, phi_bar, alpha, c, a_norm_sq)
            if not np.isfinite(phi_bar_h):
                raise QSMNumericalError(stage, f"non-finite residual at iteration {iterations}")
            relative = _lsqr_relative(phi_bar_h, alpha_h, c_h, a_norm_sq_h)
            if relative <= tol:
                break
            continue
        current = _lsqr_relative(phi_bar, alpha, c, a_norm_sq)
        relative = _kept(active, current, relative)
        active = active & ~(current <= tol)
        if check:
            relative_h, active_h = _to_host(xp, relative, active)
            if not np.isfinite(relative_h):
                raise QSMNumericalError(stage, f"non-finite residual at iteration {iterations}")
            if not active_h or iterations == max_iter:
                relative, iterations = relative_h, int(counted)
                break
    return x, SolverInfo(iterations, float(relative), relative <= tol)


def _lsqr_relative(phi_bar: Any, alpha: Any, c: Any, a_norm_sq: Any) -> Any:
    """LSQR's test S2, ``||A^H r|| / (||A|| ||r||)`` with ``||A^H r|| = |φ̄ α c|`` and
    ``||r|| ≈ |φ̄|``, in float64: a float from host scalars, a 0-d array from device ones."""
    if all(isinstance(v, (float, np.floating)) for v in (phi_bar, alpha, c, a_norm_sq)):
        phi_bar, alpha, c, a_norm_sq = (float(v) for v in (phi_bar, alpha, c, a_norm_sq))
        residual = abs(phi_bar)
        return (abs(phi_bar * alpha * c) / (np.sqrt(a_norm_sq) * residual)
                if residual > 0 else 0.0)
    xp = get_array_module(*(v for v in (phi_bar, alpha, c, a_norm_sq)
                            if not isinstance(v, (float, np.floating))))
    phi_bar, alpha, c, a_norm_sq = (xp.asarray(v, dtype=xp.float64)
                                    for v in (phi_bar, alpha, c, a_norm_sq))
    residual = xp.abs(phi_bar)
    positive = residual > 0
    safe = xp.where(positive, residual, xp.ones_like(residual))
    return xp.where(positive, xp.abs(phi_bar * alpha * c) / (xp.sqrt(a_norm_sq) * safe),
                    xp.zeros_like(residual))


def _kept(flag: Any, new: Any, old: Any) -> Any:
    """``new`` where ``flag``, else ``old``: a host choice, or a 0-d device select (no sync)."""
    if isinstance(flag, (bool, np.bool_)):
        return new if flag else old
    xp = get_array_module(flag)
    return xp.where(flag, new, old)


def soft_threshold(x: Array, threshold: float | Array, out: Array | None = None) -> Array:
    """Elementwise soft thresholding ``sign(x) max(|x| - t, 0)``, the proximal map of ``t|x|``.

    Computed as ``x − clip(x, −t, t)`` (the same values; two passes over memory instead of
    five).

    Parameters
    ----------
    x : real array
    threshold : float or array, >= 0
    out : array, optional
        Where to write the result (may be ``x`` itself).

    Returns
    -------
    array
    """
    xp = get_array_module(x)
    clipped = xp.clip(x, -threshold, threshold)
    return xp.subtract(x, clipped, out=out)
