"""Abdomen masks from fat-water separated images: the body's tissue and subcutaneous fat.

:func:`body_mask` keeps the voxels with tissue signal, so that the air around the body, the
lungs and bowel gas stay outside the mask (their field is not measured; for total field
inversion they are background sources, :func:`qsmliver.inversion.tfi`).
:func:`subcutaneous_fat_mask` selects subcutaneous adipose tissue (SAT), the usual
susceptibility reference of liver QSM (Sharma SD, Hernando D, Horng DE, Reeder SB.
Quantitative susceptibility mapping in the abdomen as an imaging biomarker of hepatic iron
overload. MRM 2015;74:673-683), from the proton-density fat fraction and the body's outer
layer.

The paraspinal-muscle reference region, which needs the image orientation as well, is
:func:`qsmliver.mask.paraspinal_muscle_mask`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from qsmliver.backend import get_array_module, ndimage
from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.mask.brain import otsu_threshold
from qsmliver.mask.morphology import ball, dilate, erode, fill_holes, largest_component

__all__ = ["body_mask", "body_surface_depth_mm", "subcutaneous_fat_mask"]

#: Percentile of ``|W| + |F|`` that sets the scale of the log-signal histogram.
_OTSU_SCALE_PERCENTILE = 99.5
#: Lowest signal taken into the log histogram, relative to that percentile.
_OTSU_FLOOR = 1e-4

Array = Any


def _voxel(voxel_size_mm: ArrayLike) -> np.ndarray:
    voxel = np.asarray(voxel_size_mm, dtype=np.float64).reshape(-1)
    if voxel.shape != (3,) or not np.all(np.isfinite(voxel)) or np.any(voxel <= 0):
        raise QSMInputError(f"voxel_size_mm must be 3 positive values, got {voxel_size_mm!r}",
                            field="voxel_size_mm")
    return voxel


def non_negative(name: str, value: Any, maximum: float = math.inf) -> float:
    """A finite setting in ``[0, maximum]``, or :class:`QSMConfigError` naming it."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise QSMConfigError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise QSMConfigError(f"{name} must be finite and >= 0, got {value!r}")
    if number > maximum:
        raise QSMConfigError(f"{name} must be at most {maximum:g}, got {value!r}")
    return number


def _volume(name: str, image: Array, shape: tuple[int, ...] | None = None) -> Array:
    if image.ndim != 3:
        raise QSMInputError(f"{name} must be 3-D, got shape {tuple(image.shape)}", field=name)
    if shape is not None and tuple(image.shape) != shape:
        raise QSMInputError(f"{name} shape {tuple(image.shape)} does not match {shape}",
                            field=name)
    return image


def body_mask(water_magnitude: Array, fat_magnitude: Array, voxel_size_mm: ArrayLike, *,
              threshold: float | None = None, threshold_scale: float = 1.0,
              opening_mm: float = 0.0, fill_holes_ml: float = 0.0) -> Array:
    """The body's tissue: voxels with water or fat signal, without air, lungs and bowel gas.

    1. Signal: ``|W| + |F|`` (proton density at TE = 0 from the fat-water separation), above
       ``threshold_scale`` times Otsu's threshold of the logarithm of the whole image (or
       above ``threshold``): noise-only voxels (air) have a small Rician magnitude, tissue a
       large one whatever its fat fraction; in log scale receive-coil shading does not pull
       the threshold into the tissue (:func:`_log_otsu_threshold`).
    2. Optional opening by ``opening_mm`` (cuts thin noise bridges to the body).
    3. The largest 6-connected component (drops noise specks in the air and in the lungs).
    4. Cavities without signal are kept out of the mask -- lungs and bowel gas have no
       measurable field and strong susceptibility. Only enclosed cavities smaller than
       ``fill_holes_ml`` (e.g. signal voids of vessels) are filled, and only when asked.

    Parameters
    ----------
    water_magnitude, fat_magnitude : (X, Y, Z) array
        Water and fat amplitudes (any common scale; complex input is taken in magnitude).
    voxel_size_mm : (3,) array_like
        mm.
    threshold : float, optional
        Absolute threshold on ``|W| + |F|`` (overrides Otsu).
    threshold_scale : float
        Fraction of Otsu's threshold (Otsu N, IEEE Trans SMC 1979;9:62).
    opening_mm : float
        Radius of a morphological opening, mm (0: none).
    fill_holes_ml : float
        Enclosed no-signal cavities smaller than this volume (mL) are filled (0: none).

    Returns
    -------
    (X, Y, Z) bool array
        On the backend of the input.

    Raises
    ------
    QSMInputError
        For mismatched shapes, non-finite values, an image without contrast, or an empty
        result.
    QSMConfigError
        For negative settings.

    Examples
    --------
    >>> import numpy as np
    >>> water = np.zeros((20, 20, 6)); water[4:16, 4:16] = 1.0
    >>> water[8:11, 8:11, 2:4] = 0.0  # a gas pocket
    >>> body = body_mask(water, np.zeros_like(water), (4, 4, 4))
    >>> int(body.sum()), bool(body[9, 9, 3])
    (846, False)
    """
    xp = get_array_module(water_magnitude)
    water = _volume("water_magnitude", xp.asarray(water_magnitude))
    fat = _volume("fat_magnitude", xp.asarray(fat_magnitude), tuple(water.shape))
    voxel = _voxel(voxel_size_mm)
    threshold_scale = non_negative("threshold_scale", threshold_scale)
    opening_mm = non_negative("opening_mm", opening_mm)
    fill_holes_ml = non_negative("fill_holes_ml", fill_holes_ml)
    signal = (xp.abs(water) + xp.abs(fat)).astype(np.float32)
    if not bool(xp.isfinite(signal).all()):
        raise QSMInputError("water/fat magnitudes have non-finite values", field="magnitude")
    if threshold is None:
        threshold = threshold_scale * _log_otsu_threshold(signal)
    else:
        threshold = non_negative("threshold", threshold)
    mask = signal > threshold
    if opening_mm > 0:
        mask = dilate(erode(mask, opening_mm, voxel), opening_mm, voxel) & mask
    mask = largest_component(mask)
    if fill_holes_ml > 0:
        mask = _fill_small_cavities(mask, fill_holes_ml * 1000.0 / float(np.prod(voxel)))
    if not bool(mask.any()):
        raise QSMInputError(f"the body mask is empty (no signal above {threshold:.4g})",
                            field="mask")
    return mask


def _log_otsu_threshold(signal: Array) -> float:
    """Otsu's threshold of log(signal), clipped to [1e-4, 1] x its 99.5th percentile.

    Receive-coil shading multiplies the tissue signal (measured on a real 3 T liver slice:
    the posterior body at a fifth of the anterior one), which spreads the tissue over a long
    tail that pulls Otsu's threshold of the linear signal into the tissue; in log scale it is
    a shift, and air and tissue stay two separate modes. The clip keeps a few voxels whose
    fitted amplitudes blew up (a large R2* extrapolated to TE = 0; one voxel at 1300x the
    99.9th percentile on that slice) and an exactly zero background from setting the
    histogram's range.
    """
    xp = get_array_module(signal)
    scale = float(xp.percentile(signal, _OTSU_SCALE_PERCENTILE))
    if not scale > 0:
        raise QSMInputError("the water and fat signal is zero almost everywhere",
                            field="magnitude")
    clipped = xp.clip(signal, _OTSU_FLOOR * scale, scale)
    return float(10.0 ** otsu_threshold(xp.log10(clipped)))


def _fill_small_cavities(mask: Array, max_voxels: float) -> Array:
    """Fill the enclosed (not touching the volume's border) background parts < max_voxels."""
    xp = get_array_module(mask)
    labels, count = ndimage(xp).label(~mask)
    count = int(count)
    if count == 0:
        return mask
    sizes = xp.bincount(labels.ravel(), minlength=count + 1)
    border = xp.zeros(count + 1, dtype=bool)
    for axis in range(3):
        for index in (0, -1):
            face = xp.take(labels, index, axis=axis)
            border[xp.unique(face)] = True
    small = (sizes < max_voxels) & ~border
    small[0] = False
    return mask | small[labels]


def body_surface_depth_mm(body: Array, voxel_size_mm: ArrayLike) -> Array:
    """Distance (mm) of each body voxel from the body's outer surface (0 outside the body).

    Cavities inside the body (lungs, bowel gas) are filled first (:func:`fill_holes`, 3-D and
    per axial slice), so that only the skin counts as surface; the body is taken to continue
    beyond the edges of the volume (a torso truncated by the field of view has no surface
    there).

    Parameters
    ----------
    body : (X, Y, Z) bool array
    voxel_size_mm : (3,) array_like

    Returns
    -------
    (X, Y, Z) float array
        mm; the voxels of the outer layer are at one voxel's distance.
    """
    xp = get_array_module(body)
    voxel = _voxel(voxel_size_mm)
    filled = fill_holes(xp.asarray(body).astype(bool))
    padded = xp.pad(filled, 1, mode="edge")
    depth = ndimage(xp).distance_transform_edt(padded, sampling=tuple(float(v) for v in voxel))
    return depth[1:-1, 1:-1, 1:-1] * filled


def subcutaneous_fat_mask(pdff_percent: Array, body: Array, voxel_size_mm: ArrayLike, *,
                          min_pdff_percent: float = 80.0, depth_mm: float = 40.0,
                          erode_mm: float | None = None) -> Array:
    """Subcutaneous adipose tissue (SAT): fat-dominant voxels of the body's outer layer.

    1. Candidates: body voxels with PDFF >= ``min_pdff_percent`` within ``depth_mm`` of the
       body's outer surface (:func:`body_surface_depth_mm`).
    2. Only the connected parts of the candidates that reach the outer layer (the voxels
       next to the skin) are kept: SAT lies directly under the skin, whereas visceral fat
       (omentum, perirenal fat) is separated from it by the abdominal wall muscles.
    3. Erosion by ``erode_mm`` (default: the smallest voxel size) removes the voxels at the
       skin and at the fat-muscle boundary, where partial volume mixes the susceptibility of
       fat with that of air or muscle. The edges of the volume do not erode it.

    Parameters
    ----------
    pdff_percent : (X, Y, Z) array
        Proton-density fat fraction, percent (0-100).
    body : (X, Y, Z) bool array
        The body mask (e.g. :func:`body_mask`).
    voxel_size_mm : (3,) array_like
        mm.
    min_pdff_percent : float
        PDFF above which a voxel is fat, percent (SAT is about 90 %).
    depth_mm : float
        Maximum depth below the skin, mm.
    erode_mm : float, optional
        Erosion radius, mm; default the smallest voxel size; 0 for none.

    Returns
    -------
    (X, Y, Z) bool array

    Raises
    ------
    QSMInputError
        For mismatched shapes, an empty body, or when no subcutaneous fat is found.
    QSMConfigError
        For settings out of range.
    """
    xp = get_array_module(pdff_percent)
    pdff = _volume("pdff_percent", xp.asarray(pdff_percent))
    body = _volume("body", xp.asarray(body), tuple(pdff.shape)).astype(bool)
    voxel = _voxel(voxel_size_mm)
    min_pdff = non_negative("min_pdff_percent", min_pdff_percent, 100.0)
    depth_mm = non_negative("depth_mm", depth_mm)
    erode_mm = float(voxel.min()) if erode_mm is None else non_negative("erode_mm", erode_mm)
    if not bool(body.any()):
        raise QSMInputError("the body mask is empty", field="body")
    depth = body_surface_depth_mm(body, voxel)
    pdff = xp.where(xp.isfinite(pdff), pdff, 0)
    candidates = body & (pdff >= min_pdff) & (depth <= depth_mm)
    # outer layer: within one voxel diagonal of the surface
    shell = candidates & (depth <= float(np.linalg.norm(voxel)))
    labels, count = ndimage(xp).label(candidates)
    if int(count) > 0:
        touching = xp.zeros(int(count) + 1, dtype=bool)
        touching[xp.unique(labels[shell])] = True
        touching[0] = False
        candidates = touching[labels]
    if erode_mm > 0:
        candidates = ndimage(xp).binary_erosion(candidates, structure=ball(erode_mm, voxel, xp),
                                                border_value=1)
    if not bool(candidates.any()):
        raise QSMInputError("no subcutaneous fat found (PDFF >= "
                            f"{min_pdff:g} % within {depth_mm:g} mm of the skin, after "
                            f"{erode_mm:g} mm erosion)", field="pdff_percent")
    return candidates
