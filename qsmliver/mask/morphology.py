"""Binary morphology helpers on either backend (scipy.ndimage / cupyx.scipy.ndimage)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from qsmliver.backend import get_array_module, ndimage

__all__ = ["ball", "dilate", "erode", "fill_holes", "largest_component"]

Array = Any


def ball(radius_mm: float, voxel_size_mm: ArrayLike, xp=np) -> Array:
    """Ellipsoidal structuring element of a sphere of ``radius_mm`` on an anisotropic grid."""
    voxel = np.asarray(voxel_size_mm, dtype=float)
    half = np.maximum(np.floor(radius_mm / voxel).astype(int), 0)
    axes = [np.arange(-h, h + 1) * v for h, v in zip(half, voxel, strict=True)]
    grid = np.meshgrid(*axes, indexing="ij")
    inside = sum(g**2 for g in grid) <= radius_mm**2 + 1e-9
    return xp.asarray(inside)


def erode(mask: Array, radius_mm: float, voxel_size_mm: ArrayLike) -> Array:
    """Erosion by a ball; voxels outside the volume count as outside the mask."""
    xp = get_array_module(mask)
    if radius_mm <= 0:
        return mask.astype(bool)
    return ndimage(xp).binary_erosion(mask, structure=ball(radius_mm, voxel_size_mm, xp),
                                      border_value=0)


def dilate(mask: Array, radius_mm: float, voxel_size_mm: ArrayLike,
           within: Array | None = None) -> Array:
    """Dilation by a ball, optionally restricted to ``within`` (a geodesic-like reconstruction
    that never leaves ``within``)."""
    xp = get_array_module(mask)
    if radius_mm <= 0:
        return mask.astype(bool)
    out = ndimage(xp).binary_dilation(mask, structure=ball(radius_mm, voxel_size_mm, xp))
    return out & within if within is not None else out


def fill_holes(mask: Array) -> Array:
    """Fill enclosed cavities (3-D), then every axial slice's 2-D holes."""
    xp = get_array_module(mask)
    nd = ndimage(xp)
    filled = nd.binary_fill_holes(mask)
    structure = xp.zeros((3, 3, 3), dtype=bool)
    structure[:, :, 1] = xp.asarray(nd.generate_binary_structure(2, 1))
    return nd.binary_fill_holes(filled, structure=structure)


def largest_component(mask: Array) -> Array:
    """The largest 6-connected component (empty input gives an empty mask)."""
    xp = get_array_module(mask)
    labels, count = ndimage(xp).label(mask)
    count = int(count)
    if count <= 1:
        return mask.astype(bool)
    sizes = xp.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(xp.argmax(sizes))
