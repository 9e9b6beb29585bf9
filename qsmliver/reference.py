"""Susceptibility referencing: which tissue is χ = 0.

QSM determines χ only up to a constant (the dipole kernel is zero at k = 0), so every map is
reported relative to a reference that must be recorded with it (DESIGN section 5): the mean
over the mask (brain), cerebrospinal fluid (CSF, close to water; MEDI+0 uses it too), a user
region of interest, the liver references subcutaneous adipose tissue ("sat", e.g. from
:func:`qsmliver.mask.subcutaneous_fat_mask`) or paraspinal muscle ("muscle"), or none.

A reference tissue need not be at χ = 0: ``roi_value_ppm`` is its assumed susceptibility
relative to water, so that ``χ_referenced = χ − mean_roi(χ) + roi_value_ppm`` (e.g. fat-
referenced liver QSM reports χ relative to water by adding the χ of fat; Sharma SD, Hernando
D, Horng DE, Reeder SB. Quantitative susceptibility mapping in the abdomen as an imaging
biomarker of hepatic iron overload. MRM 2015;74:673-683). The value used is recorded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qsmliver.backend import get_array_module
from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.mask.morphology import erode, largest_component

__all__ = ["REFERENCE_METHODS", "csf_mask_from_r2star", "reference_chi"]

REFERENCE_METHODS = ("mean", "csf", "roi", "sat", "muscle", "none")

Array = Any


def csf_mask_from_r2star(r2star_per_s: Array, mask: Array, voxel_size_mm, *,
                         threshold_per_s: float = 5.0, erode_mm: float = 4.0) -> Array:
    """Ventricular CSF: low R2* inside the eroded brain mask, largest connected part.

    CSF has R2* of a few 1/s at 3 T against ≥ 15 1/s in parenchyma; MEDI+0 selects it by
    thresholding R2* at 5 1/s within the brain and keeping the ventricles (Liu Z, Spincemaille
    P, Yao Y, Zhang Y, Wang Y. MEDI+0: morphology enabled dipole inversion with automatic
    uniform cerebrospinal fluid zero reference for quantitative susceptibility mapping. Magn
    Reson Med 2018;79:2795-2803). Erosion keeps the cortical CSF (partial volume with the
    skull) out.

    Parameters
    ----------
    r2star_per_s : (X, Y, Z) array
        R2*, 1/s.
    mask : (X, Y, Z) bool array
        Brain mask.
    voxel_size_mm : (3,) array_like
    threshold_per_s : float
        R2* below which a voxel counts as CSF, 1/s.
    erode_mm : float
        Erosion of the brain mask before selection, mm.

    Returns
    -------
    (X, Y, Z) bool array
        May be empty when no CSF is found (the caller decides what to do).
    """
    inner = erode(mask.astype(bool), erode_mm, voxel_size_mm)
    candidates = inner & (r2star_per_s > 0) & (r2star_per_s < threshold_per_s)
    return largest_component(candidates)


def reference_chi(chi_ppm: Array, mask: Array, method: str = "mean", *,
                  roi: Array | None = None,
                  roi_value_ppm: float = 0.0) -> tuple[Array, dict[str, Any]]:
    """Shift χ so that the reference region has the mean ``roi_value_ppm`` (zero by default).

    Parameters
    ----------
    chi_ppm : (X, Y, Z) array
        Susceptibility, ppm.
    mask : (X, Y, Z) bool array
        Where χ is defined (the result is zero outside).
    method : {"mean", "csf", "roi", "sat", "muscle", "none"}
        "mean": the mask mean; "csf", "roi", "sat" and "muscle": the mean over ``roi`` (a CSF
        mask, e.g. from :func:`csf_mask_from_r2star`; any user region; subcutaneous adipose
        tissue, e.g. from :func:`qsmliver.mask.subcutaneous_fat_mask`; paraspinal muscle);
        "none": unchanged.
    roi : (X, Y, Z) bool array, optional
        The reference region for "csf", "roi", "sat" and "muscle".
    roi_value_ppm : float
        Assumed χ of the reference tissue relative to water, ppm:
        ``χ_referenced = χ − mean_region(χ) + roi_value_ppm``. Must be 0 with "none".

    Returns
    -------
    chi_ppm : (X, Y, Z) array
        Referenced susceptibility, ppm.
    info : dict
        ``{"ChiReference": method, "ChiReferenceOffset_ppm": mean of the region (subtracted),
        "ChiReferenceValue_ppm": roi_value_ppm (added), "ChiReferenceVoxels": n}`` for the
        sidecar.

    Raises
    ------
    QSMConfigError
        For an unknown method, a region-based method without a region, a non-finite
        ``roi_value_ppm``, or a non-zero one with "none".
    QSMInputError
        When the reference region is empty or outside the mask.

    Examples
    --------
    >>> import numpy as np
    >>> chi = np.array([[[1.0, 2.0, 3.0]]])
    >>> mask = np.ones(chi.shape, bool)
    >>> fat = np.array([[[False, False, True]]])
    >>> out, info = reference_chi(chi, mask, "sat", roi=fat, roi_value_ppm=0.6)
    >>> np.round(out.ravel(), 6).tolist(), info["ChiReferenceValue_ppm"]
    ([-1.4, -0.4, 0.6], 0.6)
    """
    if method not in REFERENCE_METHODS:
        raise QSMConfigError(f"unknown χ reference {method!r}; choose one of "
                             f"{', '.join(REFERENCE_METHODS)}")
    try:
        value = float(roi_value_ppm)
    except (TypeError, ValueError):
        raise QSMConfigError(f"roi_value_ppm must be a number, got {roi_value_ppm!r}") from None
    if not np.isfinite(value):
        raise QSMConfigError(f"roi_value_ppm must be finite, got {roi_value_ppm!r}")
    xp = get_array_module(chi_ppm)
    mask = mask.astype(bool)
    if method == "none":
        if value != 0.0:
            raise QSMConfigError("roi_value_ppm has no meaning with the χ reference 'none'")
        return xp.where(mask, chi_ppm, 0).astype(chi_ppm.dtype), {
            "ChiReference": "none", "ChiReferenceOffset_ppm": 0.0,
            "ChiReferenceValue_ppm": 0.0, "ChiReferenceVoxels": 0}
    if method == "mean":
        region = mask
    else:
        if roi is None:
            raise QSMConfigError(f"χ reference {method!r} needs a region (roi)")
        if tuple(roi.shape) != tuple(chi_ppm.shape):
            raise QSMInputError(f"reference region shape {tuple(roi.shape)} does not match "
                                f"the map {tuple(chi_ppm.shape)}", field="reference roi")
        region = roi.astype(bool) & mask
    count = int(region.sum())
    if count == 0:
        raise QSMInputError(f"the {method} reference region is empty inside the mask",
                            field="reference roi")
    offset = float(chi_ppm[region].mean())
    shift = np.asarray(offset - value, dtype=chi_ppm.dtype)
    referenced = xp.where(mask, chi_ppm - shift, 0)
    return referenced.astype(chi_ppm.dtype), {
        "ChiReference": method, "ChiReferenceOffset_ppm": offset,
        "ChiReferenceValue_ppm": value, "ChiReferenceVoxels": count}
