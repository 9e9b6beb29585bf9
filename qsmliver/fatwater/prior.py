"""A field-map prior from the shape of the object: the dipole field of the air around it.

Near air (lungs, bowel gas, the skin) the B0 field bends by hundreds of Hz over a few voxels,
steeper than a quadratic smoothness term allows, so a graph cut may prefer the fat-aliased
candidate there: a water-fat swap. Sharma et al. (2015) predicted the field from the object's
shape, a binary susceptibility model with air where there is no signal, and used it as
prior knowledge of the field map. Here:

1. the air model is ``1`` outside ``support`` (the voxels with signal) and ``0`` inside; it is
   extended beyond the field of view by edge replication (the anatomy and the air around it
   continue) and its dipole field ``d`` (ppm per ppm of Δχ) is computed with the periodic
   k-space kernel on the extended grid;
2. a first field map ψ₀ (the graph cut without prior) is fitted by ``a·d + p``, with ``p`` a
   polynomial of degree 2 (the shim residual), by iteratively reweighted least squares with
   Tukey's biweight, so that swapped voxels (off by about a fat shift) do not bias it;
3. ``a·d + p`` is the prior: the graph cut's smoothness term then penalises the departure of the
   field differences from the prior's differences (:func:`~qsmliver.fatwater.fieldmap.
   graphcut_field_map`, ``field_prior_hz``), and the prior is applied only when ``a > 0``
   (air is paramagnetic relative to tissue: Δχ ≈ +9.4 ppm) and the fit explains the field
   better than the polynomial alone.

Fitting ``a`` rather than fixing it at 9.4 ppm absorbs what the binary model gets wrong
(lung parenchyma is not pure air, cortical bone has no signal but is diamagnetic, partial
volume at edges, a field of view that cuts the body).

References
----------
Sharma SD, Artz NS, Hernando D, Horng DE, Reeder SB. Improving chemical shift encoded water-fat
separation using object-based information of the magnetic field inhomogeneity. Magn Reson
Med 2015;73:597-604.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from qsmliver import backend

__all__ = ["air_dipole_field_ppm", "fit_air_field_prior"]

Array = Any

#: Tukey biweight tuning constant (times the robust scale 1.4826·MAD).
_BIWEIGHT_C = 4.685

#: Most voxels used by the robust fit (a strided subset of the mask).
_FIT_VOXELS = 50_000


def air_dipole_field_ppm(support: Array, voxel_size_mm: ArrayLike,
                         b0_dir: ArrayLike = (0.0, 0.0, 1.0)) -> Array:
    """Field (ppm) of a unit susceptibility (1 ppm) everywhere outside ``support``.

    Parameters
    ----------
    support : (X, Y, Z) bool ndarray
        Voxels that hold tissue (NumPy or CuPy); the rest is air.
    voxel_size_mm : (3,) array_like
        Voxel size, mm.
    b0_dir : (3,) array_like
        B0 direction in the voxel frame.

    Returns
    -------
    (X, Y, Z) float32 ndarray
        ``d``, ppm of B0 per ppm of Δχ(air − tissue), same array module as ``support``; its
        mean over the volume is arbitrary (the k-space kernel has no DC term).

    Notes
    -----
    Each axis is extended by half its length on both sides by repeating the edge slices, and
    the convolution is periodic on the extended grid (twice the voxels of the volume per
    axis): the wrap-around then meets the replicated anatomy far from the field of view, and
    no spurious air-tissue boundary is made at the edges of the field of view.
    """
    from qsmliver.simulate.forward import susceptibility_field_ppm

    xp = backend.get_array_module(support)
    air = (~xp.asarray(support, dtype=bool)).astype(xp.float32)
    shape = air.shape
    pads = [(n // 2, n - n // 2) if n > 1 else (0, 0) for n in shape]
    extended = xp.pad(air, pads, mode="edge")
    # pad_factor 1: periodic convolution on the extended grid (see Notes)
    field = susceptibility_field_ppm(extended, voxel_size_mm, b0_dir, pad_factor=1.0)
    crop = tuple(slice(lo, lo + n) for (lo, _), n in zip(pads, shape, strict=True))
    return field[crop].astype(xp.float32)


def _polynomial_design(mask: np.ndarray) -> np.ndarray:
    """(V, 10) solid polynomial of degree 2 in the voxel coordinates of ``mask`` (scaled to
    [−1, 1] along each axis)."""
    coords = [(c - (n - 1) / 2.0) / max((n - 1) / 2.0, 1.0)
              for c, n in zip(np.nonzero(mask), mask.shape, strict=True)]
    x, y, z = coords
    return np.stack([np.ones_like(x), x, y, z, x * x, y * y, z * z, x * y, x * z, y * z],
                    axis=1)


def _biweight_fit(design: np.ndarray, target: np.ndarray, n_iter: int = 20
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """Tukey-biweight IRLS fit; returns (coefficients, final weights, robust scale)."""
    weights = np.ones(target.size)
    coef = np.zeros(design.shape[1])
    scale = 0.0
    for _ in range(n_iter):
        root = np.sqrt(weights)
        coef, *_ = np.linalg.lstsq(design * root[:, None], target * root, rcond=None)
        residual = target - design @ coef
        scale = 1.4826 * float(np.median(np.abs(residual - np.median(residual))))
        if scale <= 0:
            break
        u = residual / (_BIWEIGHT_C * scale)
        new = np.where(np.abs(u) < 1, (1 - u * u) ** 2, 0.0)
        if np.allclose(new, weights, atol=1e-4):
            weights = new
            break
        weights = new
    return coef, weights, scale


def fit_air_field_prior(field_hz: Array, mask: Array, air_field_ppm: Array
                        ) -> tuple[Array | None, dict[str, Any]]:
    """Fit ``a·d + p`` to a field map and return it as a prior, or None when it does not help.

    Parameters
    ----------
    field_hz : (V,) ndarray
        A first field map, Hz, at the voxels of ``mask`` (C order); it may contain swaps.
    mask : (X, Y, Z) bool ndarray
        Where ``field_hz`` lives.
    air_field_ppm : (X, Y, Z) ndarray
        ``d`` of :func:`air_dipole_field_ppm`.

    Returns
    -------
    prior_hz : (V,) float64 ndarray or None
        ``a·d + p`` at the voxels of ``mask`` (the backend of ``field_hz``), or None when
        ``a <= 0`` or when ``d`` does not lower the robust residual scale of the polynomial
        fit by at least 10 %.
    info : dict
        JSON-serialisable: ``applied``, ``air_scale_hz_per_ppm`` (a), ``residual_scale_hz``
        with and without ``d``, and the fraction of voxels given zero weight (outliers).
    """
    xp = backend.get_array_module(field_hz)
    mask_h = np.asarray(backend.to_numpy(mask), dtype=bool)
    target = np.asarray(backend.to_numpy(field_hz), dtype=np.float64).reshape(-1)
    d = np.asarray(backend.to_numpy(air_field_ppm), dtype=np.float64)[mask_h]
    poly = _polynomial_design(mask_h)
    d_scale = float(np.std(d)) or 1.0
    design = np.concatenate([d[:, None] / d_scale, poly], axis=1)
    # 11 coefficients: an evenly strided subset of at most _FIT_VOXELS voxels fits them.
    subset = slice(None, None, max(1, target.size // _FIT_VOXELS))
    coef, weights, scale = _biweight_fit(design[subset], target[subset])
    _, _, scale_poly = _biweight_fit(poly[subset], target[subset])
    a = float(coef[0]) / d_scale
    applied = bool(a > 0 and scale < 0.9 * scale_poly)
    info = {
        "applied": applied,
        "air_scale_hz_per_ppm": a,
        "residual_scale_hz": scale,
        "residual_scale_polynomial_only_hz": scale_poly,
        "outlier_fraction": float(np.mean(weights == 0)),
    }
    if not applied:
        return None, info
    return xp.asarray(design @ coef), info
