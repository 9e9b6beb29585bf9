"""Morphology-enabled dipole inversion (MEDI), with the optional CSF zero reference (MEDI+0)."""

from __future__ import annotations

from typing import Any

from numpy.typing import ArrayLike

from qsmliver.errors import QSMConfigError, QSMInputError
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
from qsmliver.optim import LinearOperator, conjugate_gradient

__all__ = ["DEFAULT_MEDI_LAMBDA", "gradient_mask", "medi"]

Array = Any

#: Default weight α of the morphology-weighted L1 gradient, ppm·mm: MEDI's λ = 1000 for
#: fields in radians at ≈ 3.9 rad/ppm (echo spacing ≈ 5 ms at 3 T) converted to
#: ``½||W(Dχ − φ)||² + α||M∇χ||₁`` with fields in ppm (α = 1/(λ·3.9) ≈ 2.6e-4).
DEFAULT_MEDI_LAMBDA = 2.6e-4
#: MEDI+0 CSF term weight relative to the data term (Liu Z et al. 2018: λ_CSF = 100 with
#: λ = 1000, both quadratic, so the ratio 0.1 carries over unchanged to ppm units).
DEFAULT_CSF_LAMBDA = 0.1
#: Smoothing of |∇χ| in the lagged-diffusivity weights, (ppm/mm)²: MEDI's 1e-6 rad²/mm²
#: at ≈ 3.9 rad/ppm.
_EPSILON = 1e-6 / 3.9**2


def gradient_mask(grid: Grid, magnitude: Array, edge_percentage: float) -> Array:
    """MEDI's binary gradient mask ``M`` (1 = smooth, regularised; 0 = edge) on the work grid.

    The gradient of the magnitude (normalised to its maximum in the mask) is thresholded so
    that the number of gradient components above the threshold (edges) is
    ``edge_percentage`` times the number of mask voxels, as in the MEDI toolbox; the
    threshold is never below 1 % of the maximum magnitude (its noise level).
    """
    xp = grid.xp
    mag = magnitude * grid.mask
    peak = float(mag.max())
    if peak <= 0:
        raise QSMInputError("magnitude is zero everywhere inside the mask", field="magnitude")
    mag = mag / grid.dtype.type(peak)
    grad_mag = xp.abs(grid.grad(mag))
    n_edges = int(edge_percentage * int(grid.mask.sum()))
    values = grad_mag.ravel()
    threshold = 0.01
    if 0 < n_edges < values.size:
        kth = float(xp.partition(values, values.size - n_edges)[values.size - n_edges])
        threshold = max(threshold, kth)
    return (grad_mag <= threshold).astype(grid.dtype)


def check_medi_settings(lam_csf, edge_percentage, max_iter, cg_max_iter, cg_tol, tol):
    """Validated MEDI-family solver settings (shared by MEDI and TFI)."""
    lam_csf = positive("lam_csf", lam_csf, allow_zero=True)
    edge_percentage = positive("edge_percentage", edge_percentage, allow_zero=True)
    if edge_percentage > 3:
        raise QSMConfigError(f"edge_percentage must be in [0, 3], got {edge_percentage}")
    return (lam_csf, edge_percentage, positive_int("max_iter", max_iter),
            positive_int("cg_max_iter", cg_max_iter), positive("cg_tol", cg_tol),
            positive("tol", tol, allow_zero=True))


def check_csf_mask(xp, csf_mask: Array | None, field: Array, mask: Array) -> Array | None:
    """The MEDI+0 CSF mask restricted to ``mask``, checked; None when not given."""
    if csf_mask is None:
        return None
    csf_in = xp.asarray(csf_mask)
    if tuple(csf_in.shape) != tuple(field.shape):
        raise QSMInputError(f"csf_mask shape {tuple(csf_in.shape)} does not match the "
                            f"field shape {tuple(field.shape)}", field="csf_mask")
    csf_in = (csf_in != 0) & mask
    if not bool(csf_in.any()):
        raise QSMInputError("csf_mask has no voxel inside the mask", field="csf_mask")
    return csf_in


def _medi(grid: Grid, field: Array, weight: Array, grad_mask: Array, csf: Array | None,
          lam: float, lam_csf: float, max_iter: int, cg_max_iter: int, cg_tol: float,
          tol: float) -> tuple[Array, dict[str, Any]]:
    xp = grid.xp
    dt = grid.dtype.type
    w2 = weight * weight
    rhs = grid.dipole(w2 * field)
    n_csf = int(csf.sum()) if csf is not None else 0

    def csf_projection(x):
        mean = (x * csf).sum() / n_csf
        return csf * (x - mean)

    chi = xp.zeros(grid.shape, dtype=grid.dtype)
    history = []
    change = float("inf")
    outer = 0
    for step_index in range(1, max_iter + 1):
        outer = step_index
        g = grad_mask * grid.grad(chi)
        vr = grad_mask * grad_mask / xp.sqrt(g * g + dt(_EPSILON))

        def normal(x, vr=vr):
            out = grid.dipole(w2 * grid.dipole(x))
            out += dt(lam) * grid.grad_adjoint(vr * grid.grad(x))
            if csf is not None:
                out += dt(lam_csf) * csf_projection(x)
            return out

        chi_new, info = conjugate_gradient(normal, rhs, chi, max_iter=cg_max_iter, tol=cg_tol,
                                           stage="dipole inversion (MEDI)")
        step = float(xp.linalg.norm((chi_new - chi).ravel()))
        norm = float(xp.linalg.norm(chi_new.ravel()))
        change = step / norm if norm > 0 else 0.0
        chi = chi_new
        history.append({"cg_iterations": info.iterations,
                        "cg_relative_residual": info.relative_residual,
                        "relative_update": change})
        if change <= tol:
            break
    finite_or_raise(xp, chi, "dipole inversion (MEDI)")
    return chi, {"iterations": outer, "relative_update": change, "converged": change <= tol,
                 "history": history}


def medi(local_field_ppm: Array, mask: Array, voxel_size_mm: ArrayLike,
         b0_dir: ArrayLike = (0.0, 0.0, 1.0), *, magnitude: Array,
         weight: Array | None = None, lam: float = DEFAULT_MEDI_LAMBDA,
         edge_percentage: float = 0.9, csf_mask: Array | None = None,
         lam_csf: float = DEFAULT_CSF_LAMBDA, max_iter: int = 10, cg_max_iter: int = 100,
         cg_tol: float = 0.01, tol: float = 0.1,
         pad_fraction: float = DEFAULT_PAD_FRACTION, min_pad: int = DEFAULT_MIN_PAD) -> Array:
    """Morphology-enabled dipole inversion (MEDI, linear data term), optionally MEDI+0.

    Minimises ``½||W(F⁻¹DFχ − φ)||² + α||M∇χ||₁ [+ (λ_CSF/2)||M_CSF(χ − χ̄_CSF)||²]``
    where ``M`` zeroes the gradient components at edges of the magnitude image (so that
    χ edges are allowed where anatomy has edges) and ``W`` weights the data by reliability.
    The L1 term is handled by lagged diffusivity: each outer (Gauss-Newton) iteration fixes
    ``1/sqrt(|M∇χ|² + ε)`` and solves the resulting quadratic problem by conjugate gradients
    (warm start), as in the MEDI toolbox.

    Parameters
    ----------
    local_field_ppm : (X, Y, Z) float array
        Local field, ppm.
    mask : (X, Y, Z) bool array
    voxel_size_mm : (3,) array_like
        mm.
    b0_dir : (3,) array_like
    magnitude : (X, Y, Z) array
        Magnitude image (any scale) from which the gradient mask is derived.
    weight : (X, Y, Z) array, optional
        Data reliability (e.g. inverse field noise std); normalised to mean 1 in the mask;
        uniform when omitted.
    lam : float
        α, ppm·mm (:data:`DEFAULT_MEDI_LAMBDA`, MEDI's default converted to ppm).
    edge_percentage : float
        Number of edge gradient components as a fraction of the mask voxels (MEDI: 0.9).
    csf_mask : (X, Y, Z) bool array, optional
        CSF (e.g. ventricles). When given, the MEDI+0 term makes χ uniform there and the
        result is referenced to the CSF mean (χ̄_CSF = 0).
    lam_csf : float
        λ_CSF relative to the data term (:data:`DEFAULT_CSF_LAMBDA`).
    max_iter : int
        Maximum Gauss-Newton (outer) iterations (MEDI: 10).
    cg_max_iter : int
        Maximum CG iterations per outer iteration (MEDI: 100).
    cg_tol : float
        CG relative residual tolerance (MEDI: 0.01).
    tol : float
        Stop when the relative update ``||Δχ|| / ||χ||`` is below it (MEDI: 0.1).
    pad_fraction, min_pad : float, int
        Zero padding of the working grid.

    Returns
    -------
    (X, Y, Z) array
        χ in ppm, zero outside the mask, dtype and backend of the input.

    Raises
    ------
    QSMInputError
        For a missing magnitude or CSF mask of the wrong shape, or an empty CSF mask.

    References
    ----------
    Liu T et al. Morphology enabled dipole inversion (MEDI) from a single-angle acquisition:
    comparison with COSMOS in human brain imaging. MRM 2011;66:777-783. Liu J et al.
    Morphology enabled dipole inversion for quantitative susceptibility mapping using
    structural consistency between the magnitude image and the susceptibility map.
    NeuroImage 2012;59:2560-2568. Liu Z et al. MEDI+0: morphology enabled dipole inversion
    with automatic uniform cerebrospinal fluid zero reference for quantitative susceptibility
    mapping. MRM 2018;79:2795-2803.
    """
    chi, _ = run_medi(local_field_ppm, mask, voxel_size_mm, b0_dir, magnitude=magnitude,
                      weight=weight, lam=lam, edge_percentage=edge_percentage,
                      csf_mask=csf_mask, lam_csf=lam_csf, max_iter=max_iter,
                      cg_max_iter=cg_max_iter, cg_tol=cg_tol, tol=tol,
                      pad_fraction=pad_fraction, min_pad=min_pad)
    return chi


def run_medi(local_field_ppm, mask, voxel_size_mm, b0_dir=(0.0, 0.0, 1.0), *, magnitude,
             weight=None, lam=DEFAULT_MEDI_LAMBDA, edge_percentage=0.9, csf_mask=None,
             lam_csf=DEFAULT_CSF_LAMBDA, max_iter=10, cg_max_iter=100, cg_tol=0.01, tol=0.1,
             pad_fraction=DEFAULT_PAD_FRACTION, min_pad=DEFAULT_MIN_PAD):
    """:func:`medi` returning ``(chi, info)`` (outer iterations, CG history)."""
    xp, field, mask_arr, voxel, b0 = check_inputs(local_field_ppm, mask, voxel_size_mm, b0_dir)
    if magnitude is None:
        raise QSMInputError("MEDI needs a magnitude image", field="magnitude")
    mag = xp.asarray(magnitude)
    if tuple(mag.shape) != tuple(field.shape):
        raise QSMInputError(f"magnitude shape {tuple(mag.shape)} does not match the field "
                            f"shape {tuple(field.shape)}", field="magnitude")
    mag = xp.abs(mag).astype(field.dtype)
    if not bool(xp.isfinite(mag[mask_arr]).all()):
        raise QSMInputError("magnitude has non-finite values inside the mask",
                            field="magnitude")
    w = check_weight(weight, field, mask_arr)
    lam = positive("lam", lam)
    lam_csf, edge_percentage, max_iter, cg_max_iter, cg_tol, tol = check_medi_settings(
        lam_csf, edge_percentage, max_iter, cg_max_iter, cg_tol, tol)
    csf_in = check_csf_mask(xp, csf_mask, field, mask_arr)
    grid = make_grid(field, mask_arr, voxel, b0, pad_fraction=pad_fraction, min_pad=min_pad)
    data = grid.embed(xp.where(mask_arr, field, 0))
    grad_mask = gradient_mask(grid, grid.embed(mag), edge_percentage)
    csf = None if csf_in is None else grid.embed(csf_in)
    chi, info = _medi(grid, data, grid.embed(w), grad_mask, csf, lam, lam_csf, max_iter,
                      cg_max_iter, cg_tol, tol)
    info.update(lam=lam, edge_percentage=edge_percentage, max_iter=max_iter,
                cg_max_iter=cg_max_iter, cg_tol=cg_tol, tol=tol,
                smooth_fraction=float(grad_mask.mean()))
    if csf is not None:
        csf_mean = float((chi * csf).sum() / csf.sum())
        chi = chi - grid.dtype.type(csf_mean)
        info.update(lam_csf=lam_csf, reference="csf", csf_mean_before_reference=csf_mean)
    return grid.extract(chi, mask_arr), info


def medi_operators(grid: Grid, weight: Array, grad_mask: Array) -> list[LinearOperator]:
    """The linear operators MEDI's normal equations are built from (for adjointness tests)."""
    return [
        LinearOperator(lambda x: weight * grid.dipole(x), lambda y: grid.dipole(weight * y),
                       "weighted dipole"),
        LinearOperator(lambda x: grad_mask * grid.grad(x),
                       lambda g: grid.grad_adjoint(grad_mask * g), "masked gradient"),
    ]

