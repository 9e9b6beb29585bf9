"""T2*-IDEAL refinement: voxel-wise Gauss-Newton on the field map and R2*, vectorised.

The model ``S_e = (W + F c_e) exp(z TE_e)``, ``z = −R2* + i2πψ`` (DESIGN section 5) is
holomorphic in the complex unknowns (W, F, z), so the Gauss-Newton step for the real
parameters (Re, Im of each) is the complex least-squares step (the "complex field map"
ψ̂ = ψ + i R2*/2π of T2*-IDEAL: Yu H et al., Multiecho reconstruction for simultaneous
water-fat decomposition and T2* estimation, JMRI 2007;26:1153-1161; with the multi-peak fat
model of Yu H et al., MRM 2008;60:1122-1134). Water and fat are solved linearly at every step
(variable projection, Golub & Pereyra 1973): with ``x = (W, F)`` the least-squares amplitudes
for the current z, the residual ``ρ = S − A x`` is orthogonal to the columns of A, and
eliminating the linear unknowns from the joint Gauss-Newton normal equations leaves a scalar
complex update

    Δz = (Jᴴ ρ) / (Jᴴ J),   J = P⊥_A (TE ⊙ A x),

where ``P⊥_A`` projects out the water and fat columns. Each step is damped (halved until the
residual decreases), R2* is kept in ``[0, r2star_max]`` and ψ within ``max_shift_hz`` of the
starting field map, so the refinement stays in the basin the field-map selection chose.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from qsmliver import backend
from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.fatwater.spectra import FatSpectrum, fat_basis
from qsmliver.fatwater.varpro import _project

__all__ = ["IdealFit", "ideal_refine"]

Array = Any

_HALVINGS = 6


@dataclasses.dataclass(eq=False)
class IdealFit:
    """Result of :func:`ideal_refine` (all arrays (V,), on the backend of the input).

    Attributes
    ----------
    field_hz : float64 ndarray
        Refined field map, Hz.
    r2star_per_s : float64 ndarray
        Refined R2*, 1/s, within the bounds.
    water, fat : complex128 ndarray
        Least-squares amplitudes at the refined parameters.
    residual : float64 ndarray
        Squared residual norm ``||S − model||²``.
    converged : bool ndarray
        Whether the iterations stopped before ``max_iter``: the update fell below the
        tolerance, or no damped step lowered the residual any more (a stationary point
        within the bounds).
    n_iter : int
        Iterations run (the largest over voxels).
    """

    field_hz: Array
    r2star_per_s: Array
    water: Array
    fat: Array
    residual: Array
    converged: Array
    n_iter: int


def ideal_refine(
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
    """Refine (ψ, R2*) per voxel by damped Gauss-Newton with water and fat projected out.

    Parameters
    ----------
    signal : (V, E) complex ndarray
        Echoes (NumPy or CuPy).
    te_s : (E,) array_like
        Echo times, s.
    b0_t : float
        Field strength, tesla.
    field_hz : (V,) ndarray
        Starting field map, Hz (e.g. the graph-cut selection).
    r2star_per_s : (V,) ndarray
        Starting R2*, 1/s.
    spectrum : str or FatSpectrum
        Fat model.
    max_iter : int
        Maximum Gauss-Newton iterations.
    tol_hz : float
        Convergence tolerance on the update of ψ (Hz) and of R2*/2π (1/s).
    r2star_max_per_s : float
        Upper bound of R2*, 1/s (the lower bound is 0).
    max_shift_hz : float, optional
        Largest allowed distance of ψ from its starting value, Hz (default: no limit).
    use_kernel : bool or None
        None (default): the CUDA kernel of :mod:`qsmliver.fatwater._gpu` for CuPy input, this
        vectorised code for NumPy input; False: always this code.

    Returns
    -------
    IdealFit

    Raises
    ------
    QSMInputError
        For inconsistent shapes.
    QSMConfigError
        For non-positive iteration counts or tolerances.

    Examples
    --------
    >>> te = 1e-3 * (1.0 + 1.4 * np.arange(8))
    >>> c = fat_basis("ismrm", te, 1.5)
    >>> s = ((0.7 + 0.3 * c) * np.exp((-200.0 + 2j * np.pi * 30.0) * te))[None, :]
    >>> fit = ideal_refine(s, te, 1.5, np.array([24.0]), np.array([150.0]))
    >>> round(float(fit.field_hz[0]), 6), round(float(fit.r2star_per_s[0]), 6)
    (30.0, 200.0)
    """
    xp = backend.get_array_module(signal)
    if use_kernel is not False and xp is not np:
        from qsmliver.fatwater._gpu import ideal_refine_kernel

        return ideal_refine_kernel(signal, te_s, b0_t, field_hz, r2star_per_s, spectrum=spectrum,
                                   max_iter=max_iter, tol_hz=tol_hz,
                                   r2star_max_per_s=r2star_max_per_s, max_shift_hz=max_shift_hz,
                                   use_kernel=use_kernel)
    s = xp.asarray(signal).astype(xp.complex128, copy=False)
    te = np.asarray(te_s, dtype=np.float64).reshape(-1)
    if s.ndim != 2 or s.shape[1] != te.size:
        raise QSMInputError(f"signal must be (voxels, echoes) with {te.size} echoes, got "
                            f"{s.shape}", field="signal")
    n_vox = s.shape[0]
    psi0 = xp.asarray(field_hz, dtype=xp.float64).reshape(-1)
    r0 = xp.asarray(r2star_per_s, dtype=xp.float64).reshape(-1)
    if psi0.size != n_vox or r0.size != n_vox:
        raise QSMInputError(f"field_hz and r2star_per_s need {n_vox} values, got {psi0.size} "
                            f"and {r0.size}", field="field_hz")
    if int(max_iter) < 0 or not tol_hz > 0 or not r2star_max_per_s > 0:
        raise QSMConfigError("max_iter must be >= 0, tol_hz and r2star_max_per_s > 0")
    basis = xp.asarray(fat_basis(spectrum, te, b0_t))
    te_x = xp.asarray(te)
    two_pi = 2.0 * np.pi

    psi = psi0.copy()
    r2s = xp.clip(r0, 0.0, r2star_max_per_s)
    d = xp.exp((-r2s[:, None] + 1j * two_pi * psi[:, None]) * te_x)
    water, fat, model = _project(s, d, basis)
    diff = s - model
    residual = xp.sum(diff.real**2 + diff.imag**2, axis=1)
    converged = xp.zeros(n_vox, dtype=bool)
    active = xp.arange(n_vox)
    n_iter = 0
    for _ in range(int(max_iter)):
        if active.size == 0:
            break
        n_iter += 1
        sa = s[active]
        psi_a, r_a, res_a = psi[active], r2s[active], residual[active]
        new_psi, new_r, new_res = psi_a.copy(), r_a.copy(), res_a.copy()
        d = xp.exp((-r_a[:, None] + 1j * two_pi * psi_a[:, None]) * te_x)
        _, _, m_a = _project(sa, d, basis)
        rho = sa - m_a
        grad = te_x * m_a
        # Project the derivative column onto the complement of the water/fat columns.
        _, _, grad_in_span = _project(grad, d, basis)
        jac = grad - grad_in_span
        denom = xp.sum(jac.real**2 + jac.imag**2, axis=1)
        numer = xp.sum(xp.conj(jac) * rho, axis=1)
        ok = denom > 1e-300 * xp.maximum(res_a, 1e-300)
        dz = xp.where(ok, numer / xp.where(ok, denom, 1.0), 0.0)
        # z = −R2* + i2πψ: Re Δz = −ΔR2*, Im Δz = 2π Δψ.
        step_psi, step_r = dz.imag / two_pi, -dz.real
        # Damped step: halve it for the voxels whose residual did not decrease.
        pending = xp.arange(active.size)
        scale = 1.0
        for _h in range(_HALVINGS):
            trial_psi = psi_a[pending] + scale * step_psi[pending]
            if max_shift_hz is not None:
                lo = psi0[active[pending]] - max_shift_hz
                trial_psi = xp.clip(trial_psi, lo, lo + 2 * max_shift_hz)
            trial_r = xp.clip(r_a[pending] + scale * step_r[pending], 0.0, r2star_max_per_s)
            d_t = xp.exp((-trial_r[:, None] + 1j * two_pi * trial_psi[:, None]) * te_x)
            _, _, m_t = _project(sa[pending], d_t, basis)
            diff = sa[pending] - m_t
            res_t = xp.sum(diff.real**2 + diff.imag**2, axis=1)
            take = res_t <= res_a[pending]
            chosen = pending[take]
            new_psi[chosen] = trial_psi[take]
            new_r[chosen] = trial_r[take]
            new_res[chosen] = res_t[take]
            pending = pending[~take]
            if pending.size == 0:
                break
            scale *= 0.5
        accepted = xp.ones(active.size, dtype=bool)
        accepted[pending] = False
        moved = xp.maximum(xp.abs(new_psi - psi_a), xp.abs(new_r - r_a) / two_pi)
        psi[active], r2s[active], residual[active] = new_psi, new_r, new_res
        done = (moved < tol_hz) | ~accepted
        converged[active[done]] = True
        active = active[~done]
    d = xp.exp((-r2s[:, None] + 1j * two_pi * psi[:, None]) * te_x)
    water, fat, model = _project(s, d, basis)
    diff = s - model
    residual = xp.sum(diff.real**2 + diff.imag**2, axis=1)
    return IdealFit(field_hz=psi, r2star_per_s=r2s, water=water, fat=fat, residual=residual,
                    converged=converged, n_iter=n_iter)
