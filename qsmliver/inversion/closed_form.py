"""Closed-form dipole inversions: truncated k-space division and Tikhonov (one FFT pair each).

Both solve on the padded working grid of :mod:`qsmliver.inversion._common` with the field set
to zero outside the mask, and return χ (ppm) zero outside the mask.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from qsmliver.errors import QSMConfigError
from qsmliver.inversion._common import (
    DEFAULT_MIN_PAD,
    DEFAULT_PAD_FRACTION,
    Grid,
    check_inputs,
    make_grid,
    positive,
)

__all__ = ["DEFAULT_TIKHONOV_LAMBDA", "lcurve_lambda", "tikhonov", "tkd"]

Array = Any

#: Default λ of :func:`tikhonov`: the value that minimised NRMSE against COSMOS on the
#: in-vivo QSM challenge 2016 data (1.06 mm, 3 T) on the grid 1e-3, 3e-3, ..., 1e-1 (its upper
#: end; not tuned on the phantom). Dimensionless for "identity", mm² for "gradient"
#: (gradients per mm, so it does not change with the matrix size). High-SNR data want less.
DEFAULT_TIKHONOV_LAMBDA = 0.1

#: λ grid searched by the L-curve (log-spaced), per regulariser.
LCURVE_GRID = {"identity": (1e-4, 1.0), "gradient": (1e-5, 1.0)}


def _tkd(grid: Grid, field: Array, threshold: float) -> Array:
    xp = grid.xp
    kernel = grid.kernel
    small = xp.abs(kernel) <= threshold
    safe = xp.where(small, grid.dtype.type(1), kernel)
    inverse = xp.where(small, xp.sign(kernel) / grid.dtype.type(threshold), 1 / safe)
    return grid.irfft(inverse.astype(grid.dtype) * grid.rfft(field))


def tkd(local_field_ppm: Array, mask: Array, voxel_size_mm: ArrayLike,
        b0_dir: ArrayLike = (0.0, 0.0, 1.0), *, threshold: float = 0.19,
        pad_fraction: float = DEFAULT_PAD_FRACTION, min_pad: int = DEFAULT_MIN_PAD) -> Array:
    """Truncated k-space division (TKD).

    ``χ = F⁻¹[D_t⁻¹ F[φ]]`` with ``D_t⁻¹ = 1/D`` where ``|D| > t`` and ``sign(D)/t`` elsewhere
    (``D(0) = 0`` keeps the mean at zero). No correction for the resulting underestimation is
    applied (TKD is known to underestimate χ by a few per cent at t ≈ 0.2; Schweser et al.
    MRM 2013;69:1582 discuss a correction factor).

    Parameters
    ----------
    local_field_ppm : (X, Y, Z) float array
        Local (tissue) field, ppm of B0.
    mask : (X, Y, Z) bool array
        Region where the field is valid.
    voxel_size_mm : (3,) array_like
        Voxel size, mm.
    b0_dir : (3,) array_like
        B0 direction in the voxel frame.
    threshold : float
        Truncation level ``t`` of ``|D|``, in (0, 2/3]. Thresholds of about 0.1-0.2 are the
        usual compromise between streaking (small t) and underestimation (large t)
        (Wharton et al. 2010; Schweser et al. 2013).
    pad_fraction, min_pad : float, int
        Zero padding of the working grid (see :mod:`qsmliver.inversion._common`).

    Returns
    -------
    (X, Y, Z) array
        χ in ppm, zero outside the mask, same dtype (float32/float64) and backend as the input.

    References
    ----------
    Shmueli K et al. Magnetic susceptibility mapping of brain tissue in vivo using MRI phase
    data. MRM 2009;62:1510-1522. Wharton S, Schäfer A, Bowtell R. Susceptibility mapping in
    the human brain using threshold-based k-space division. MRM 2010;63:1292-1304.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((16, 16, 16), bool); mask[4:12, 4:12, 4:12] = True
    >>> chi = tkd(np.zeros((16, 16, 16)), mask, (1, 1, 1))
    >>> chi.shape, chi.dtype, float(abs(chi).max())
    ((16, 16, 16), dtype('float64'), 0.0)
    """
    xp, field, mask_arr, voxel, b0 = check_inputs(local_field_ppm, mask, voxel_size_mm, b0_dir)
    threshold = positive("threshold", threshold)
    if threshold > 2.0 / 3.0:
        raise QSMConfigError(f"threshold must be in (0, 2/3], got {threshold}")
    grid = make_grid(field, mask_arr, voxel, b0, pad_fraction=pad_fraction, min_pad=min_pad)
    data = grid.embed(xp.where(mask_arr, field, 0))
    return grid.extract(_tkd(grid, data, threshold), mask_arr)


def _regulariser_symbol(grid: Grid, regulariser: str) -> Array:
    if regulariser == "identity":
        return grid.xp.ones_like(grid.kernel)
    if regulariser == "gradient":
        return grid.laplacian_symbol()
    raise QSMConfigError(f"regulariser must be 'identity' or 'gradient', got {regulariser!r}")


def lcurve_lambda(grid: Grid, data_k: Array, regulariser: str,
                  n_values: int = 25) -> tuple[float, dict[str, list[float]]]:
    """λ at the corner (maximum curvature) of the L-curve of closed-form Tikhonov.

    For each λ on a log grid (:data:`LCURVE_GRID`) the residual ``||Dχ_λ − φ||`` and the
    regulariser norm ``||Γχ_λ||`` are evaluated in k-space by Parseval (no inverse FFT), and
    the λ maximising the curvature of ``(log ρ, log η)`` is returned, as in the automatic
    parameter selection of Bilgic et al. MRM 2014;72:1444.

    Returns
    -------
    lam : float
    curve : dict
        ``lambda``, ``residual`` and ``regulariser`` norms (JSON-serialisable lists).
    """
    xp = grid.xp
    kernel = grid.kernel.astype(np.float64)
    symbol = _regulariser_symbol(grid, regulariser).astype(np.float64)
    power = (data_k.real.astype(np.float64) ** 2 + data_k.imag.astype(np.float64) ** 2)
    # rfft half-grid: every column but k_z = 0 (and the Nyquist one) stands for two
    weight = xp.full(power.shape[-1], 2.0)
    weight[0] = 1.0
    if grid.shape[-1] % 2 == 0:
        weight[-1] = 1.0
    power = power * weight
    lo, hi = LCURVE_GRID[regulariser]
    lams = np.logspace(np.log10(lo), np.log10(hi), n_values)
    rho, eta = [], []
    d2 = kernel * kernel
    for lam in lams:
        denominator = d2 + lam * symbol
        denominator = xp.where(denominator > 0, denominator, 1.0)
        residual = (lam * symbol / denominator) ** 2 * power
        # the k = 0 component (D = 0) is left unexplained at every λ
        rho.append(float(xp.sqrt(residual.sum())))
        regular = symbol * (kernel / denominator) ** 2 * power
        eta.append(float(xp.sqrt(regular.sum())))
    x, y = np.log(np.asarray(rho)), np.log(np.asarray(eta))
    t = np.log(lams)
    dx, dy = np.gradient(x, t), np.gradient(y, t)
    ddx, ddy = np.gradient(dx, t), np.gradient(dy, t)
    curvature = (dx * ddy - ddx * dy) / np.maximum((dx**2 + dy**2) ** 1.5, 1e-300)
    best = int(np.argmax(curvature[1:-1])) + 1
    return float(lams[best]), {"lambda": lams.tolist(), "residual": rho, "regulariser": eta}


def _tikhonov(grid: Grid, field: Array, lam: float | str,
              regulariser: str) -> tuple[Array, dict[str, Any]]:
    xp = grid.xp
    symbol = _regulariser_symbol(grid, regulariser)
    data_k = grid.rfft(field)
    info: dict[str, Any] = {}
    if isinstance(lam, str):
        if lam != "lcurve":
            raise QSMConfigError(f"lam must be a positive number or 'lcurve', got {lam!r}")
        lam, curve = lcurve_lambda(grid, data_k, regulariser)
        info["lcurve"] = curve
    lam = positive("lam", lam)
    info["lam"] = lam
    kernel = grid.kernel
    denominator = kernel * kernel + grid.dtype.type(lam) * symbol
    ratio = xp.where(denominator > 0, kernel / xp.where(denominator > 0, denominator, 1), 0)
    return grid.irfft(ratio.astype(grid.dtype) * data_k), info


def tikhonov(local_field_ppm: Array, mask: Array, voxel_size_mm: ArrayLike,
             b0_dir: ArrayLike = (0.0, 0.0, 1.0), *, lam: float | str = DEFAULT_TIKHONOV_LAMBDA,
             regulariser: str = "gradient", pad_fraction: float = DEFAULT_PAD_FRACTION,
             min_pad: int = DEFAULT_MIN_PAD) -> Array:
    """Closed-form Tikhonov-regularised dipole inversion (one FFT pair).

    Minimises ``||F⁻¹DFχ − φ||² + λ||Γχ||²`` over the periodic working grid, with
    ``Γ = I`` ("identity") or the forward-difference gradient in 1/mm ("gradient"):
    ``χ = F⁻¹[D F[φ] / (D² + λ|Γ(k)|²)]`` (the k = 0 term is zero).

    Parameters
    ----------
    local_field_ppm : (X, Y, Z) float array
        Local field, ppm.
    mask : (X, Y, Z) bool array
    voxel_size_mm : (3,) array_like
        mm.
    b0_dir : (3,) array_like
    lam : float or "lcurve"
        Regularisation weight (dimensionless for "identity", mm² for "gradient"); default
        :data:`DEFAULT_TIKHONOV_LAMBDA`. "lcurve" picks the corner of the L-curve
        (:func:`lcurve_lambda`, the automatic choice of Bilgic et al. 2014); it adapts to
        the data but under-regularises fields with model errors (it picked λ ≈ 3e-4 and gave
        184 % NRMSE on the 2016 challenge data), so it is not the default.
    regulariser : {"gradient", "identity"}
    pad_fraction, min_pad : float, int
        Zero padding of the working grid.

    Returns
    -------
    (X, Y, Z) array
        χ in ppm, zero outside the mask, dtype and backend of the input.

    References
    ----------
    Bilgic B et al. Fast quantitative susceptibility mapping with L1-regularization and
    automatic parameter selection. MRM 2014;72:1444-1459 (closed-form L2 with gradient
    regularisation, L-curve). Bilgic B et al. Fast image reconstruction with L2-regularization.
    JMRI 2014;40:181-191.
    """
    chi, _ = run_tikhonov(local_field_ppm, mask, voxel_size_mm, b0_dir, lam=lam,
                          regulariser=regulariser, pad_fraction=pad_fraction, min_pad=min_pad)
    return chi


def run_tikhonov(local_field_ppm, mask, voxel_size_mm, b0_dir=(0.0, 0.0, 1.0), *,
                 lam=DEFAULT_TIKHONOV_LAMBDA,
                 regulariser="gradient",
                 pad_fraction=DEFAULT_PAD_FRACTION, min_pad=DEFAULT_MIN_PAD):
    """:func:`tikhonov` returning ``(chi, info)`` with the λ used (and the L-curve)."""
    xp, field, mask_arr, voxel, b0 = check_inputs(local_field_ppm, mask, voxel_size_mm, b0_dir)
    _regulariser_symbol_check(regulariser)
    grid = make_grid(field, mask_arr, voxel, b0, pad_fraction=pad_fraction, min_pad=min_pad)
    data = grid.embed(xp.where(mask_arr, field, 0))
    chi, info = _tikhonov(grid, data, lam, regulariser)
    info["regulariser"] = regulariser
    return grid.extract(chi, mask_arr), info


def _regulariser_symbol_check(regulariser: str) -> None:
    if regulariser not in ("identity", "gradient"):
        raise QSMConfigError(
            f"regulariser must be 'identity' or 'gradient', got {regulariser!r}")
