"""Geometry: voxel sizes and the B0 direction in the voxel frame from affines."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from qsmliver.geometry import (
    LPS_TO_RAS,
    b0_direction_from_affine,
    voxel_size_from_affine,
    world_b0_to_voxel,
)


def _affine(rotation, voxel, origin=(10.0, -20.0, 30.0)):
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(voxel)
    affine[:3, 3] = origin
    return affine


def test_voxel_size_of_rotated_affine():
    rotation = Rotation.from_euler("xyz", [20, -10, 35], degrees=True).as_matrix()
    np.testing.assert_allclose(voxel_size_from_affine(_affine(rotation, [0.8, 0.9, 1.5])),
                               [0.8, 0.9, 1.5], rtol=1e-12)


def test_b0_direction_of_oblique_slab():
    """Tilting the slab by θ about x tilts B0 in the voxel frame by -θ about x."""
    theta = np.deg2rad(25.0)
    rotation = Rotation.from_euler("x", theta).as_matrix()
    b0 = b0_direction_from_affine(_affine(rotation, [1.0, 1.0, 2.0]))
    np.testing.assert_allclose(b0, [0.0, np.sin(theta), np.cos(theta)], atol=1e-12)
    assert abs(np.linalg.norm(b0) - 1) < 1e-12


def test_b0_direction_is_world_z_mapped_back():
    rotation = Rotation.from_euler("zyx", [40, 15, -30], degrees=True).as_matrix()
    affine = _affine(rotation, [0.7, 0.7, 3.0])
    b0_vox = b0_direction_from_affine(affine)
    np.testing.assert_allclose(rotation @ b0_vox, [0, 0, 1], atol=1e-12)


def test_flipped_axes_and_lps():
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])  # LAS storage
    np.testing.assert_allclose(b0_direction_from_affine(affine), [0, 0, 1])
    # In LPS the scanner z axis is unchanged, so B0 is the same vector
    np.testing.assert_allclose(world_b0_to_voxel(LPS_TO_RAS @ affine), [0, 0, 1])
    np.testing.assert_allclose(LPS_TO_RAS @ LPS_TO_RAS, np.eye(4))
