"""Preconditioned total field inversion (TFI): total field (ppm) to susceptibility χ (ppm).

TFI (Liu Z, Kee Y, Zhou D, Wang Y, Spincemaille P. MRM 2017;78:303-315) replaces the two
sequential steps of conventional QSM (background field removal, then local dipole inversion)
by a single inversion of the *total* field: the susceptibility is estimated on the whole
working grid, so the sources of the background field (air around the body, lungs, bowel gas,
bone, the anatomy beyond the field of view) are part of the unknown and no error propagates
from a separate background removal. The susceptibility is written ``χ = P y`` with a diagonal
preconditioner ``P`` that is 1 in the region of interest ``M`` (soft tissue, small χ) and
``P_B`` outside, where χ is large (air ≈ +9.4 ppm relative to water). Solving for ``y``
instead of ``χ`` equalises the scales of the two regions, so that the conjugate gradient
iterations reach the background sources quickly (the paper's argument: a preconditioner that
approximates the covariance of the solution whitens the problem).

The cost minimised over ``y`` is

    ½||W(f − F⁻¹DF(P y))||² + ||Λ M_G ∇(P y)||₁  [+ (λ_CSF/2)||M_CSF(P y − mean_CSF(P y))||²]

with ``f`` the total field (ppm), ``W`` the data weight (zero where the field is not measured:
outside the mask), ``M_G`` the binary morphology (edge) mask of the magnitude as in MEDI,
``Λ = λ M + λ_out M̄`` the regularisation weight (separate weights for the tissue and the
strong sources outside it, as in the whole-body TFI of Liu Z et al., ISMRM 2018 p. 2520) and
the optional uniformity term of MEDI+0 (CSF in the brain). The L1 term is handled as in MEDI
by lagged diffusivity: each outer (Gauss-Newton) iteration fixes the weights
``Λ / sqrt(|M_G ∇χ|² + ε)`` and solves for the update of ``y`` by conjugate gradients (the CG
tolerance is relative to the current gradient of the cost). The data term is the linear one
(the field, not the complex exponential of the phase), adequate for an unwrapped field map.

Defaults (choices made here, checked on the numerical phantoms of :mod:`qsmliver.simulate`):
``P_B = 5`` (the paper used 30 for the head; with the data only inside the tissue mask of an
abdomen truncated by the field of view, 30 left the solution far from convergence after 10
outer iterations, with a smooth offset of the deep organs against the subcutaneous fat) and
``λ_out = 0`` (no gradient penalty on the background sources, which are then determined by
the data and the preconditioned iteration, as in PDF; a penalty equal to the tissue's pushed
the unmodelled background -- anatomy beyond the field of view, the periodic images of the
padded grid, the voxel-shape mismatch of the forward model at air and bone interfaces -- into
smooth errors in the tissue).

Solver. From the second outer iteration on, the normal equations are stiff along smooth
modes that trade a slow variation of χ across the tissue for background sources outside it:
the data barely tell them apart and only the L1 term, weak on small gradients, does. Plain CG
resolves those modes last, and a step truncated at MEDI's 100 iterations (relative residual
still 0.4-1) leaves a smooth error, deep organs against the subcutaneous fat. Each CG solve
is therefore deflated (Saad Y, Yeung M, Erhel J, Guyomarc'h F. SIAM J Sci Comput
2000;21:1909-1926; :mod:`qsmliver.optim.deflation`) with the updates of the previous
``deflation = 5`` outer iterations, which span much of that slow subspace: the solve starts
from the Galerkin solution in it and keeps its search directions A-orthogonal to it. Measured
on the abdomen phantom, TFI of the pipeline's field map with its weights (48×40×24, 8 mm;
15 outer iterations; χ errors of right lobe / left lobe / spleen / kidney against the
subcutaneous fat, ppm; tissue χ NRMSE; CG iterations in all):

================================  ================================  =====  =====
4 echoes at 1.5 T (ΔTE 3.2 ms)    errors                            NRMSE  CG
================================  ================================  =====  =====
plain CG, 100 per step            +0.075 / −0.032 / +0.104 / +0.228  42.8 % 1412
plain CG, 300 per step            +0.005 / −0.003 / +0.039 / +0.038  18.1 % 4017
deflated (5), 100 per step        +0.005 / +0.017 / +0.037 / +0.021  18.4 % 1472
================================  ================================  =====  =====

With the default 6 echoes the same three give tissue NRMSE 12.9, 3.7 and 3.6 % (a 30 × 2000
iteration reference: 3.9 %), in 1409, 4035 and 1469 CG iterations; on the brain phantom
(128×128×96, 1.5 mm, CPU) the deflated solve takes 203 s against 401 s for 300 plain
iterations per step, with the same error on the voxels RESHARP keeps (3.9 against 3.7 %;
``benchmarks/brain_chains.py``). More outer iterations
with plain CG do less for the same work (4 echoes, 3000 CG iterations in all: kidney +0.048
ppm as 30 × 100, +0.014 as 10 × 300). Tried and worse: a Jacobi preconditioner (slower: the
data term's diagonal vanishes far outside the mask), a Galerkin correction on low-order
polynomials of the tissue (not the slow modes, which pair a tissue ramp with background
sources), a warm start of CG from the previous update (lobes −0.03 to −0.05 ppm).
"""

from __future__ import annotations

from typing import Any

from numpy.typing import ArrayLike

from qsmliver.errors import QSMInputError
from qsmliver.inversion._common import (
    DEFAULT_MIN_PAD,
    Grid,
    check_inputs,
    check_weight,
    finite_or_raise,
    make_grid,
    positive,
    positive_int,
)
from qsmliver.inversion.medi import check_csf_mask, check_medi_settings, gradient_mask
from qsmliver.optim import LinearOperator, conjugate_gradient, deflation_space

__all__ = [
    "DEFAULT_TFI_CG_MAX_ITER",
    "DEFAULT_TFI_CSF_LAMBDA",
    "DEFAULT_TFI_DEFLATION",
    "DEFAULT_TFI_LAMBDA",
    "DEFAULT_TFI_OUTSIDE_RATIO",
    "DEFAULT_TFI_PAD_FRACTION",
    "DEFAULT_TFI_PRECONDITIONER",
    "run_tfi",
    "tfi",
    "tfi_operators",
]

Array = Any

#: Default weight λ of the morphology-weighted L1 gradient, ppm·mm (the cost is written with
#: the field in ppm and the gradient per mm, as
#: :data:`qsmliver.inversion.medi.DEFAULT_MEDI_LAMBDA`).
DEFAULT_TFI_LAMBDA = 2.6e-4
#: Preconditioner value P_B outside the region of interest (module docstring; the paper: 30
#: for the head).
DEFAULT_TFI_PRECONDITIONER = 5.0
#: Default padding of the working grid, a fraction of the mask's extent on each side: larger
#: than for local-field inversions because the background sources outside the mask are
#: estimated too.
DEFAULT_TFI_PAD_FRACTION = 0.25
#: Default λ_out / λ, the regularisation of the background sources outside the mask relative
#: to that of the tissue (Λ = λM + λ_out M̄; module docstring).
DEFAULT_TFI_OUTSIDE_RATIO = 0.0
#: MEDI+0 CSF term weight relative to the data term (as in MEDI).
DEFAULT_TFI_CSF_LAMBDA = 0.1
#: Default cap on the CG iterations of one outer iteration (MEDI's value; enough with the
#: deflation below, see the module docstring).
DEFAULT_TFI_CG_MAX_ITER = 100
#: Default number of previous outer-step updates that deflate each CG solve (0: plain CG).
DEFAULT_TFI_DEFLATION = 5
#: Smoothing of |∇χ| in the lagged-diffusivity weights, (ppm/mm)² (MEDI's value).
_EPSILON = 1e-6 / 3.9**2


def tfi_operators(grid: Grid, weight: Array, grad_mask: Array, precond: Array,
                  csf: Array | None = None) -> list[LinearOperator]:
    """The linear operators of TFI's normal equations, acting on ``y`` (for adjointness tests).

    Parameters
    ----------
    grid : Grid
        Working grid (:func:`qsmliver.inversion._common.make_grid`).
    weight : (X, Y, Z) array
        Data weight on the working grid (zero where the field is not measured).
    grad_mask : (3, X, Y, Z) array
        Morphology mask ``M_G`` of the gradient components on the working grid.
    precond : (X, Y, Z) array
        Diagonal preconditioner ``P``.
    csf : (X, Y, Z) array, optional
        CSF mask on the working grid (the MEDI+0 term).

    Returns
    -------
    list of LinearOperator
        ``y ↦ W F⁻¹DF(P y)``, ``y ↦ M_G ∇(P y)`` and, with ``csf``,
        ``y ↦ M_CSF (P y − mean_CSF(P y))``.
    """
    ops = [
        LinearOperator(lambda y: weight * grid.dipole(precond * y),
                       lambda r: precond * grid.dipole(weight * r),
                       "preconditioned weighted dipole"),
        LinearOperator(lambda y: grad_mask * grid.grad(precond * y),
                       lambda g: precond * grid.grad_adjoint(grad_mask * g),
                       "preconditioned masked gradient"),
    ]
    if csf is not None:
        projection = _csf_projection(csf)
        ops.append(LinearOperator(lambda y: projection(precond * y),
                                  lambda r: precond * projection(r),
                                  "preconditioned CSF deviation"))
    return ops


def _csf_projection(csf: Array):
    """``x ↦ M_CSF (x − mean_CSF x)``: an orthogonal projection (self-adjoint, idempotent)."""
    count = csf.sum()

    def projection(x):
        return csf * (x - (x * csf).sum() / count)

    return projection


def _tfi(grid: Grid, field: Array, weight: Array, grad_mask: Array, precond: Array,
         reg_weight: Array, csf: Array | None, lam_csf: float, max_iter: int,
         cg_max_iter: int, cg_tol: float, tol: float,
         deflation: int) -> tuple[Array, dict[str, Any]]:
    xp = grid.xp
    dt = grid.dtype.type
    w2 = weight * weight
    rhs = precond * grid.dipole(w2 * field)
    projection = None if csf is None else _csf_projection(csf)
    y = xp.zeros(grid.shape, dtype=grid.dtype)
    chi = y
    previous_updates: list[Array] = []
    history = []
    change = float("inf")
    outer = 0
    for step_index in range(1, max_iter + 1):
        outer = step_index
        g = grad_mask * grid.grad(chi)
        vr = reg_weight * grad_mask * grad_mask / xp.sqrt(g * g + dt(_EPSILON))

        def normal(v, vr=vr):
            x = precond * v
            out = grid.dipole(w2 * grid.dipole(x))
            out += grid.grad_adjoint(vr * grid.grad(x))
            if projection is not None:
                out += dt(lam_csf) * projection(x)
            return precond * out

        # Gauss-Newton step: solve H dy = -∇E(y) (the CG tolerance is relative to the
        # current gradient, so every outer iteration makes progress)
        gradient_e = normal(y) - rhs
        # deflated CG: the slow modes left by the truncated solves of the previous steps are
        # spanned by their updates (module docstring)
        space = None  # free the previous step's space before building this one
        space = deflation_space(normal, previous_updates) if previous_updates else None
        dy, info = conjugate_gradient(normal, -gradient_e, max_iter=cg_max_iter, tol=cg_tol,
                                      stage="total field inversion (TFI)", deflation=space)
        if deflation:
            previous_updates = [*previous_updates, dy][-deflation:]
        y = y + dy
        chi = precond * y
        # relative update of y, not of χ: χ = P y is dominated by the strong sources outside
        # the mask (air ≈ 9.4 ppm), which would hide the update of the tissue
        step = float(xp.linalg.norm(dy.ravel()))
        norm = float(xp.linalg.norm(y.ravel()))
        change = step / norm if norm > 0 else 0.0
        history.append({"cg_iterations": info.iterations,
                        "deflation_rank": 0 if space is None else space.rank,
                        "cg_relative_residual": info.relative_residual,
                        "relative_update": change})
        if change <= tol:
            break
    finite_or_raise(xp, chi, "total field inversion (TFI)")
    measured = weight > 0
    residual = (grid.dipole(chi) - field) * measured
    data_residual = float(xp.linalg.norm(residual.ravel())
                          / max(float(xp.linalg.norm((field * measured).ravel())), 1e-300))
    return chi, {"iterations": outer, "relative_update": change, "converged": change <= tol,
                 "relative_data_residual": data_residual, "history": history}


def tfi(total_field_ppm: Array, mask: Array, voxel_size_mm: ArrayLike,
        b0_dir: ArrayLike = (0.0, 0.0, 1.0), *, weight: Array | None = None,
        magnitude: Array | None = None, lam: float = DEFAULT_TFI_LAMBDA,
        lam_outside: float | None = None,
        preconditioner_outside: float = DEFAULT_TFI_PRECONDITIONER,
        edge_percentage: float = 0.9, csf_mask: Array | None = None,
        lam_csf: float = DEFAULT_TFI_CSF_LAMBDA, max_iter: int = 15,
        cg_max_iter: int = DEFAULT_TFI_CG_MAX_ITER,
        cg_tol: float = 0.01, tol: float = 0.01,
        deflation: int = DEFAULT_TFI_DEFLATION,
        pad_fraction: float = DEFAULT_TFI_PAD_FRACTION,
        min_pad: int = DEFAULT_MIN_PAD) -> Array:
    """Preconditioned total field inversion (TFI) of the TOTAL field.

    Takes the total (unwrapped, chemical-shift-free) field -- do **not** remove the background
    field first: the background sources outside ``mask`` are estimated together with the
    tissue susceptibility. Minimises over ``y`` (module docstring)

    ``½||W(F⁻¹DF(P y) − f)||² + ||Λ M_G ∇(P y)||₁ [+ (λ_CSF/2)||M_CSF(P y − χ̄_CSF)||²]``,

    ``χ = P y``, on the mask's bounding box zero-padded by ``pad_fraction`` of its extent:
    ``P = 1`` inside ``mask`` and ``preconditioner_outside`` (``P_B``) elsewhere; ``W`` is the
    weight inside the mask and zero outside (no field is measured there); ``M_G`` is MEDI's
    binary edge mask of the magnitude (or of the mask itself when no magnitude is given), so
    that χ may jump at anatomical edges, including the mask boundary; ``Λ`` is ``lam`` inside
    the mask and ``lam_outside`` outside.

    Parameters
    ----------
    total_field_ppm : (X, Y, Z) float array
        Total field, ppm of B0 (e.g. the field map in Hz / (γ B0) · 1e6).
    mask : (X, Y, Z) bool array
        Where the field is measured and reliable (e.g. the brain, or the body's tissue
        without the air of lungs and bowel gas); also the region where ``P = 1``.
    voxel_size_mm : (3,) array_like
        mm.
    b0_dir : (3,) array_like
        B0 direction in the voxel frame.
    weight : (X, Y, Z) array, optional
        Data reliability (e.g. inverse noise standard deviation of the field); normalised to
        mean 1 in the mask; voxels of weight 0 carry no data. Uniform when omitted.
    magnitude : (X, Y, Z) array, optional
        Magnitude image (any scale) for the edge mask ``M_G`` (recommended); when omitted the
        only edges are the mask boundary.
    lam : float
        λ in the tissue, ppm·mm (:data:`DEFAULT_TFI_LAMBDA`).
    lam_outside : float, optional
        λ_out for the background sources outside the mask, ppm·mm; default
        :data:`DEFAULT_TFI_OUTSIDE_RATIO` · ``lam`` (0: no penalty, see the module docstring).
    preconditioner_outside : float
        ``P_B`` (:data:`DEFAULT_TFI_PRECONDITIONER` = 5; the paper used 30 for the head);
        1 gives the unpreconditioned total field inversion. The minimiser does not depend on
        it, the result after a finite number of iterations does.
    edge_percentage : float
        Number of edge gradient components as a fraction of the mask voxels (MEDI: 0.9).
    csf_mask : (X, Y, Z) bool array, optional
        A region of uniform χ inside the mask (CSF in the brain, as in MEDI+0): adds the
        uniformity term and references χ to its mean.
    lam_csf : float
        λ_CSF relative to the data term.
    max_iter : int
        Maximum Gauss-Newton (lagged diffusivity) iterations.
    cg_max_iter : int
        Maximum CG iterations per outer iteration (:data:`DEFAULT_TFI_CG_MAX_ITER`).
    cg_tol : float
        CG tolerance on the residual relative to the gradient of the cost.
    tol : float
        Stop when the relative update of the preconditioned unknown ``||Δy|| / ||y||`` is
        below it (the update of χ itself is dominated by the strong background sources).
    deflation : int
        Deflate each CG solve with the updates of this many previous outer iterations
        (:data:`DEFAULT_TFI_DEFLATION`; 0: plain CG, which then needs ``cg_max_iter`` of about
        300 for the same accuracy; module docstring). Holds ``3 · deflation`` more arrays of
        the working grid.
    pad_fraction, min_pad : float, int
        Zero padding of the working grid (:data:`DEFAULT_TFI_PAD_FRACTION` of the extent per
        side, at least ``min_pad`` voxels): room for the background sources.

    Returns
    -------
    (X, Y, Z) array
        χ in ppm inside the mask, zero outside, dtype and backend of the input. The constant
        is arbitrary (the dipole kernel is zero at k = 0): reference it with
        :func:`qsmliver.reference.reference_chi` (e.g. subcutaneous fat for the liver), unless
        a CSF mask was given.

    Raises
    ------
    QSMInputError
        For an empty mask, mismatched shapes (field, mask, weight, magnitude, CSF mask),
        non-finite values or a CSF mask with no voxel in the mask.
    QSMConfigError
        For invalid settings (non-positive λ or P_B, bad iteration counts...).

    References
    ----------
    Liu Z, Kee Y, Zhou D, Wang Y, Spincemaille P. Preconditioned total field inversion (TFI)
    method for quantitative susceptibility mapping. MRM 2017;78:303-315.
    Liu Z, Wen Y, Spincemaille P, Nguyen T, Wang Y. Whole body quantitative susceptibility
    mapping using automated preconditioning. Proc ISMRM 2018;26:2520 (Λ = λ₁M + λ₂M̄).
    Liu T et al. Morphology enabled dipole inversion (MEDI) from a single-angle acquisition:
    comparison with COSMOS in human brain imaging. MRM 2011;66:777-783.
    Liu Z, Spincemaille P, Yao Y, Zhang Y, Wang Y. MEDI+0: morphology enabled dipole inversion
    with automatic uniform cerebrospinal fluid zero reference for quantitative susceptibility
    mapping. MRM 2018;79:2795-2803.

    Examples
    --------
    >>> from qsmliver.simulate import abdomen_phantom
    >>> ph = abdomen_phantom(shape=(32, 28, 16), snr=None)
    >>> tissue = ph.masks["tissue"]
    >>> chi = tfi(ph.truth["total_field_ppm"], tissue, ph.gre.voxel_size_mm,
    ...           ph.gre.b0_dir, max_iter=2, cg_max_iter=20)
    >>> chi.shape == tissue.shape and bool((chi[~tissue] == 0).all())
    True
    """
    chi, _ = run_tfi(total_field_ppm, mask, voxel_size_mm, b0_dir, weight=weight,
                     magnitude=magnitude, lam=lam, lam_outside=lam_outside,
                     preconditioner_outside=preconditioner_outside,
                     edge_percentage=edge_percentage, csf_mask=csf_mask, lam_csf=lam_csf,
                     max_iter=max_iter, cg_max_iter=cg_max_iter, cg_tol=cg_tol, tol=tol,
                     deflation=deflation, pad_fraction=pad_fraction, min_pad=min_pad)
    return chi


def run_tfi(total_field_ppm, mask, voxel_size_mm, b0_dir=(0.0, 0.0, 1.0), *, weight=None,
            magnitude=None, lam=DEFAULT_TFI_LAMBDA, lam_outside=None,
            preconditioner_outside=DEFAULT_TFI_PRECONDITIONER, edge_percentage=0.9,
            csf_mask=None, lam_csf=DEFAULT_TFI_CSF_LAMBDA, max_iter=15,
            cg_max_iter=DEFAULT_TFI_CG_MAX_ITER,
            cg_tol=0.01, tol=0.01, deflation=DEFAULT_TFI_DEFLATION,
            pad_fraction=DEFAULT_TFI_PAD_FRACTION,
            min_pad=DEFAULT_MIN_PAD):
    """:func:`tfi` returning ``(chi, report)`` (outer iterations, CG history, residual)."""
    xp, field, mask_arr, voxel, b0 = check_inputs(total_field_ppm, mask, voxel_size_mm, b0_dir)
    w = check_weight(weight, field, mask_arr)
    if magnitude is None:
        mag = mask_arr.astype(field.dtype)
    else:
        mag = xp.asarray(magnitude)
        if tuple(mag.shape) != tuple(field.shape):
            raise QSMInputError(f"magnitude shape {tuple(mag.shape)} does not match the field "
                                f"shape {tuple(field.shape)}", field="magnitude")
        mag = xp.abs(mag).astype(field.dtype)
        if not bool(xp.isfinite(mag[mask_arr]).all()):
            raise QSMInputError("magnitude has non-finite values inside the mask",
                                field="magnitude")
    lam = positive("lam", lam)
    lam_outside = (DEFAULT_TFI_OUTSIDE_RATIO * lam if lam_outside is None
                   else positive("lam_outside", lam_outside, allow_zero=True))
    p_b = positive("preconditioner_outside", preconditioner_outside)
    lam_csf, edge_percentage, max_iter, cg_max_iter, cg_tol, tol = check_medi_settings(
        lam_csf, edge_percentage, max_iter, cg_max_iter, cg_tol, tol)
    deflation = positive_int("deflation", deflation, allow_zero=True)
    csf_in = check_csf_mask(xp, csf_mask, field, mask_arr)
    grid = make_grid(field, mask_arr, voxel, b0, pad_fraction=pad_fraction, min_pad=min_pad)
    data = grid.embed(xp.where(mask_arr, field, 0))
    grad_mask = gradient_mask(grid, grid.embed(mag), edge_percentage)
    dt = grid.dtype.type
    precond = xp.where(grid.mask, dt(1), dt(p_b)).astype(grid.dtype)
    csf = None if csf_in is None else grid.embed(csf_in)
    reg_weight = xp.where(grid.mask, dt(lam), dt(lam_outside)).astype(grid.dtype)
    chi, report = _tfi(grid, data, grid.embed(w), grad_mask, precond, reg_weight, csf, lam_csf,
                       max_iter, cg_max_iter, cg_tol, tol, deflation)
    report.update(lam=lam, lam_outside=lam_outside, preconditioner_outside=p_b,
                  edge_percentage=edge_percentage,
                  max_iter=max_iter, cg_max_iter=cg_max_iter, cg_tol=cg_tol, tol=tol,
                  deflation=deflation,
                  pad_fraction=float(pad_fraction), min_pad=int(min_pad),
                  working_shape=list(grid.shape), smooth_fraction=float(grad_mask.mean()),
                  field="total", csf_reference=csf is not None)
    if csf is not None:
        csf_mean = float((chi * csf).sum() / csf.sum())
        chi = chi - dt(csf_mean)
        report.update(lam_csf=lam_csf, reference="csf", csf_mean_before_reference=csf_mean)
    return grid.extract(chi, mask_arr), report
