"""Pure functions on image geometry: affines, voxel sizes and the B0 direction.

Conventions (DESIGN section 2): affines map voxel indices (i, j, k) to RAS+ world
coordinates in millimetres (the NIfTI convention). DICOM patient coordinates are LPS+; the two
differ by a sign flip of the first two axes. The static field B0 points along the scanner bore,
world +z (towards the head for a supine head-first patient) in both frames.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "LPS_TO_RAS",
    "b0_direction_from_affine",
    "centred_affine",
    "direction_cosines",
    "voxel_size_from_affine",
    "world_b0_to_voxel",
]

#: Flips DICOM LPS+ patient coordinates to NIfTI RAS+ (and back; it is its own inverse).
LPS_TO_RAS: NDArray[np.float64] = np.diag([-1.0, -1.0, 1.0, 1.0])


def voxel_size_from_affine(affine: ArrayLike) -> NDArray[np.float64]:
    """Voxel edge lengths in mm: the norms of the affine's first three columns.

    Parameters
    ----------
    affine : (4, 4) array_like
        Voxel-to-world affine (mm).

    Returns
    -------
    (3,) ndarray
        Voxel size along the array axes, in mm.
    """
    affine = np.asarray(affine, dtype=np.float64)
    return np.sqrt((affine[:3, :3] ** 2).sum(axis=0))


def direction_cosines(affine: ArrayLike) -> NDArray[np.float64]:
    """The (3, 3) matrix whose columns are the unit world directions of the array axes."""
    affine = np.asarray(affine, dtype=np.float64)
    return affine[:3, :3] / voxel_size_from_affine(affine)


def world_b0_to_voxel(affine: ArrayLike, b0_world: ArrayLike = (0.0, 0.0, 1.0)) -> NDArray:
    """Express a world-frame B0 direction in the voxel frame of an image.

    The voxel frame has its axes along the array axes with physical (mm) scaling, the frame in
    which the dipole kernel is evaluated with k scaled by voxel size. For an orthonormal
    direction-cosine matrix ``R`` this is ``R.T @ b0_world``; sheared affines are handled by
    solving ``R @ b = b0_world``.

    Parameters
    ----------
    affine : (4, 4) array_like
        Voxel-to-world affine.
    b0_world : (3,) array_like
        B0 direction in world coordinates (RAS+ or LPS+, same as the affine); default +z.

    Returns
    -------
    (3,) ndarray
        Unit vector in the voxel frame.
    """
    rotation = direction_cosines(affine)
    b0_vox = np.linalg.solve(rotation, np.asarray(b0_world, dtype=np.float64))
    return b0_vox / np.linalg.norm(b0_vox)


def b0_direction_from_affine(affine: ArrayLike) -> NDArray[np.float64]:
    """B0 direction (unit vector, voxel frame) of an image with a RAS+ affine.

    Examples
    --------
    >>> b0_direction_from_affine(np.diag([1.0, 1.0, 2.0, 1.0]))
    array([0., 0., 1.])
    """
    return world_b0_to_voxel(affine, (0.0, 0.0, 1.0))


def centred_affine(shape, voxel_size_mm: ArrayLike) -> NDArray[np.float64]:
    """Axis-aligned RAS affine with the given voxel size, the matrix centre at world 0 mm.

    Examples
    --------
    >>> centred_affine((3, 3, 3), (2.0, 2.0, 2.0))[:3, 3].tolist()
    [-2.0, -2.0, -2.0]
    """
    voxel = np.asarray(voxel_size_mm, dtype=np.float64)
    affine = np.diag([*voxel.tolist(), 1.0])
    affine[:3, 3] = -(np.asarray(shape, dtype=np.float64) - 1) / 2.0 * voxel
    return affine
