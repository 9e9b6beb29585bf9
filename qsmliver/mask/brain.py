"""Brain mask from multi-echo magnitude (and optionally field-map quality)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from qsmliver.backend import get_array_module, to_numpy
from qsmliver.errors import QSMInputError
from qsmliver.mask.morphology import dilate, erode, fill_holes, largest_component

__all__ = ["brain_mask", "otsu_threshold", "quality_mask"]

Array = Any


def otsu_threshold(values: Array, bins: int = 256) -> float:
    """Otsu's threshold of a 1-D sample (Otsu, IEEE Trans SMC 1979;9:62), on the host."""
    from skimage.filters import threshold_otsu

    sample = to_numpy(values).astype(np.float64).ravel()
    sample = sample[np.isfinite(sample)]
    if sample.size == 0 or np.ptp(sample) == 0:
        raise QSMInputError("cannot threshold a constant or empty image", field="magnitude")
    return float(threshold_otsu(sample, nbins=bins))


def quality_mask(noise_std_hz: Array, mask: Array, *, factor: float = 5.0) -> Array:
    """Voxels of ``mask`` whose field noise is below ``median + factor·1.4826·MAD``.

    The robust threshold is taken over ``mask``; voxels with non-finite noise are excluded.
    """
    xp = get_array_module(noise_std_hz)
    inside = mask & xp.isfinite(noise_std_hz)
    values = noise_std_hz[inside]
    if values.size == 0:
        return inside
    median = xp.median(values)
    mad = xp.median(xp.abs(values - median)) * 1.4826
    return inside & (noise_std_hz <= median + factor * xp.maximum(mad, 1e-12 * median))


def brain_mask(magnitude: Array, voxel_size_mm: ArrayLike, *, threshold: float | None = None,
               threshold_scale: float = 0.5, separation_mm: float = 4.0,
               fill: bool = True, erode_mm: float = 0.0, noise_std_hz: Array | None = None,
               quality_factor: float = 5.0) -> Array:
    """Brain mask from the magnitude of a multi-echo GRE head scan.

    1. Signal: the root-sum-of-squares magnitude over echoes, thresholded at
       ``threshold_scale`` times Otsu's threshold (or at ``threshold``).
    2. Skull stripping by morphology: erode by ``separation_mm`` (cuts thin bridges between
       brain and scalp through the low-signal skull), keep the largest component, dilate back
       inside the signal mask.
    3. Fill enclosed holes (ventricles and veins of low signal, the dark globus pallidus at
       late echoes), optionally drop voxels of unreliable field (``noise_std_hz`` above a
       robust threshold, see :func:`quality_mask`), keep the largest component again,
       and erode by ``erode_mm``.

    Parameters
    ----------
    magnitude : (X, Y, Z) or (X, Y, Z, E) array
    voxel_size_mm : (3,) array_like
    threshold : float, optional
        Absolute signal threshold (overrides Otsu).
    threshold_scale : float
        Fraction of Otsu's threshold.
    separation_mm : float
        Erosion radius for the skull stripping, mm.
    fill : bool
        Fill holes.
    erode_mm : float
        Final erosion, mm (e.g. to drop unreliable boundary voxels).
    noise_std_hz : (X, Y, Z) array, optional
        Field noise from the field fit; enables the phase-quality step.
    quality_factor : float
        Robust-threshold factor of the phase-quality step.

    Returns
    -------
    (X, Y, Z) bool array

    Raises
    ------
    QSMInputError
        When no brain is found (empty mask).
    """
    xp = get_array_module(magnitude)
    image = xp.sqrt((magnitude.astype(np.float32) ** 2).sum(axis=-1)) if magnitude.ndim == 4 \
        else magnitude.astype(np.float32)
    if threshold is None:
        threshold = threshold_scale * otsu_threshold(image)
    signal = image > threshold
    core = largest_component(erode(signal, separation_mm, voxel_size_mm))
    mask = dilate(core, separation_mm, voxel_size_mm, within=signal)
    if fill:
        mask = fill_holes(mask)
    if noise_std_hz is not None:
        mask = largest_component(quality_mask(noise_std_hz, mask, factor=quality_factor))
        if fill:
            mask = fill_holes(mask)
    mask = erode(mask, erode_mm, voxel_size_mm)
    if not bool(mask.any()):
        raise QSMInputError("the automatic brain mask is empty (no signal above the "
                            f"threshold {threshold:.4g}); supply a mask", field="mask")
    return mask
