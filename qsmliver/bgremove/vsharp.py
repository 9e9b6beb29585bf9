"""V-SHARP: SHARP with variable spherical mean value kernels.

SHARP (Schweser et al. 2011) removes the background field, harmonic inside the mask, with the
high-pass ``(δ − s_r) *``: by the mean value property it annihilates harmonic functions where
the sphere of radius ``r`` fits in the mask, leaving ``(δ − s_r) * f_local``. The local field
is then recovered by deconvolving ``δ − s_r``, with a truncated inverse (TSVD) because
``1 − S(k)`` vanishes at low k. V-SHARP (Li et al. 2011; Wu et al. 2012) uses a large radius in
the brain interior, where it fits, and smaller radii towards the boundary, so that only a thin
rim (the smallest radius) is eroded; the combined high-passed field is deconvolved with the
kernel of the largest radius.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from qsmliver import backend
from qsmliver.bgremove._common import (
    crop,
    eroded_or_error,
    fast_shape,
    positive_float,
    prepare,
)
from qsmliver.bgremove.smv import smv_kernel, sphere_voxel_count
from qsmliver.errors import QSMConfigError

__all__ = ["DEFAULT_MAX_RADIUS_MM", "default_vsharp_radii", "vsharp"]

Array = Any

#: Largest SMV radius of the default V-SHARP radius series, mm.
DEFAULT_MAX_RADIUS_MM = 12.0


def default_vsharp_radii(voxel_size_mm: ArrayLike,
                         max_radius_mm: float = DEFAULT_MAX_RADIUS_MM) -> tuple[float, ...]:
    """The default V-SHARP radii: 12 mm down to one voxel in steps of one voxel.

    The step and the smallest radius are the largest voxel dimension ``h`` (a sphere of radius
    ``h`` holds at least the centre and its 6 face neighbours on any grid):
    ``max_radius_mm, max_radius_mm − h, …`` while ``>= h``. With 1 mm voxels that is 12, 11,
    …, 1 mm; with 3 mm voxels 12, 9, 6, 3 mm. Li et al. (2011) and Wu et al. (2012) used
    radii decreasing from about a centimetre to the voxel size.

    Parameters
    ----------
    voxel_size_mm : (3,) array_like
        Voxel size, mm.
    max_radius_mm : float
        Largest radius, mm (>= the largest voxel dimension).

    Returns
    -------
    tuple of float
        Radii in mm, decreasing.

    Examples
    --------
    >>> default_vsharp_radii((3, 3, 3))
    (12.0, 9.0, 6.0, 3.0)
    """
    step = float(np.max(np.asarray(voxel_size_mm, dtype=np.float64)))
    count = max(int(np.floor(max_radius_mm / step + 1e-9)), 1)
    return tuple(round(float(max_radius_mm - i * step), 10) for i in range(count))


def _radii(radii_mm: Sequence[float] | float | None, voxel: np.ndarray) -> tuple[float, ...]:
    if radii_mm is None:
        return default_vsharp_radii(voxel)
    values = np.atleast_1d(np.asarray(radii_mm, dtype=object)).tolist()
    if not values:
        raise QSMConfigError("radii_mm must hold at least one radius (mm)")
    radii = sorted({positive_float("radii_mm", r) for r in values}, reverse=True)
    if radii[-1] < float(np.max(voxel)) - 1e-9:
        raise QSMConfigError(f"every V-SHARP radius (radii_mm) must be >= the largest voxel "
                             f"dimension {float(np.max(voxel))} mm, got {radii[-1]} mm")
    return tuple(radii)


def _vsharp(inputs, radii: tuple[float, ...], threshold: float):
    xp, f, m, voxel, dtype = inputs.xp, inputs.field, inputs.mask, inputs.voxel, inputs.dtype
    fft = backend.fft(xp)
    shape = f.shape
    extra = [int(np.ceil(max(radii) / v)) + 1 for v in voxel]
    padded = fast_shape(shape, extra, xp)
    field_k = fft.rfftn(f, s=padded)
    mask_k = fft.rfftn(m.astype(dtype), s=padded)
    combined = xp.zeros(shape, dtype=dtype)
    smallest_mask = None
    largest_kernel = None
    voxel_counts = {}
    for radius in sorted(radii):  # small to large: larger radii overwrite where they fit
        kernel = smv_kernel(padded, voxel, radius, xp, dtype, half_spectrum=True)
        sampled = smv_kernel(padded, voxel, radius, xp, dtype, half_spectrum=True,
                             sampling="image")
        count = sphere_voxel_count(voxel, radius)
        mean_mask = crop(fft.irfftn(mask_k * sampled, s=padded), shape)
        fits = m & (mean_mask > 1.0 - 0.5 / count)
        high_pass = crop(fft.irfftn(field_k * (1 - kernel), s=padded), shape)
        combined = xp.where(fits, high_pass, combined)
        voxel_counts[radius] = int(fits.sum())
        if smallest_mask is None:
            smallest_mask = fits
        largest_kernel = kernel
    eroded = eroded_or_error(smallest_mask, f"V-SHARP erosion by {min(radii)} mm")
    high_pass_kernel = 1 - largest_kernel
    keep = xp.abs(high_pass_kernel) > threshold
    inverse = xp.where(keep, 1 / xp.where(keep, high_pass_kernel, 1), 0).astype(dtype)
    local = crop(fft.irfftn(fft.rfftn(combined, s=padded) * inverse, s=padded), shape)
    local = xp.where(eroded, local, 0).astype(dtype, copy=False)
    info = {
        "radii_mm": [float(r) for r in sorted(radii, reverse=True)],
        "threshold": float(threshold),
        "deconvolution_radius_mm": float(max(radii)),
        "voxels_per_radius": {f"{r:g}": voxel_counts[r] for r in sorted(radii, reverse=True)},
        "padded_shape": [int(n) for n in padded],
        "mask_voxels_in": int(m.sum()),
        "mask_voxels_out": int(eroded.sum()),
    }
    return local, eroded, info


def vsharp(
    field_ppm: Array,
    mask: Array,
    voxel_size_mm: ArrayLike,
    *,
    radii_mm: Sequence[float] | float | None = None,
    threshold: float = 0.05,
) -> tuple[Array, Array]:
    """Background field removal by V-SHARP (variable-kernel SHARP).

    Parameters
    ----------
    field_ppm : (X, Y, Z) ndarray
        Total (unwrapped) field, ppm of B0; NumPy or CuPy, float32 or float64. Values outside
        ``mask`` are not used.
    mask : (X, Y, Z) bool ndarray
        Region where the field is reliable (e.g. the brain).
    voxel_size_mm : (3,) array_like
        Voxel size, mm.
    radii_mm : sequence of float or float, optional
        SMV radii, mm, each >= the largest voxel dimension. Default
        :func:`default_vsharp_radii`: 12 mm down to one voxel in steps of one voxel.
    threshold : float
        Truncation level of the inverse of ``1 − S(k)`` at the largest radius (TSVD): where
        ``|1 − S| <= threshold`` the inverse is set to 0. Default 0.05 (Schweser 2011; Li 2011).

    Returns
    -------
    local_field_ppm : (X, Y, Z) ndarray
        Local field, ppm, zero outside ``eroded_mask``; dtype and array module of the input.
    eroded_mask : (X, Y, Z) bool ndarray
        ``mask`` eroded by the smallest radius (voxels whose smallest sphere fits in ``mask``).

    Raises
    ------
    QSMInputError
        Bad field/mask/voxel size, or a mask that the erosion empties.
    QSMConfigError
        Radii not positive or below the voxel size, threshold outside (0, 1).

    Notes
    -----
    The high-passed field ``(δ − s_r) * (M f)`` is taken, voxel by voxel, from the largest
    radius whose sphere fits in the mask; the combined map is deconvolved with ``1 − S`` of the
    largest radius. The grid is zero padded by the largest radius so that no sphere wraps
    around. The constant and any harmonic part of the local field inside the mask are lost.

    References
    ----------
    Schweser F, Deistung A, Lehr BW, Reichenbach JR. NeuroImage 2011;54:2789-2807 (SHARP).
    Li W, Wu B, Liu C. Quantitative susceptibility mapping of human brain reflects spatial
    variation in tissue composition. NeuroImage 2011;55:1645-1656 (V-SHARP).
    Wu B, Li W, Guidon A, Liu C. Whole brain susceptibility mapping using compressed sensing.
    Magn Reson Med 2012;67:137-147.

    Examples
    --------
    >>> import numpy as np
    >>> from qsmliver.simulate.analytic import sphere_field_ppm
    >>> bg, _ = sphere_field_ppm((32, 32, 32), (2, 2, 2), radius_mm=6, delta_chi_ppm=1.0,
    ...                          center_mm=(0, 0, 40))
    >>> grid = np.indices((32, 32, 32)) - 15.5
    >>> mask = (grid ** 2).sum(axis=0) < 11 ** 2
    >>> local, eroded = vsharp(bg, mask, (2, 2, 2))
    >>> bool(np.abs(local[eroded]).max() < 0.05 * np.abs(bg[mask]).max())
    True
    """
    inputs = prepare(field_ppm, mask, voxel_size_mm)
    local, eroded, _ = _vsharp(inputs, _radii(radii_mm, inputs.voxel),
                               positive_float("threshold", threshold, maximum=0.999))
    return local, eroded
