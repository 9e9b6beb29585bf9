"""Dipole kernel and the zero-padded forward field, validated on the analytic sphere."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as nd

from qsmliver import backend
from qsmliver.inversion import dipole_kernel
from qsmliver.simulate import (
    cylinder_field_ppm,
    sphere_field_ppm,
    sphere_volume_fraction,
    susceptibility_field_ppm,
)


def test_kernel_values_and_range(xp):
    kernel = backend.to_numpy(dipole_kernel((16, 12, 10), (1.0, 0.8, 2.0), (0, 0, 1), xp=xp))
    assert kernel[0, 0, 0] == 0.0
    assert kernel[0, 0, 1] == pytest.approx(-2 / 3)  # k parallel to B0
    assert kernel[1, 0, 0] == pytest.approx(1 / 3)   # k perpendicular to B0
    assert kernel.min() >= -2 / 3 - 1e-12 and kernel.max() <= 1 / 3 + 1e-12


def test_kernel_anisotropic_voxels_scale_k():
    """k = (i/(N·dx), ...): with dz = 2 dx, the (1, 0, 2) sample on a cubic matrix is at 45°."""
    kernel = dipole_kernel((16, 16, 16), (1.0, 1.0, 2.0), (0, 0, 1))
    assert kernel[1, 0, 1] == pytest.approx(1 / 3 - 0.2)  # cos² = (1/2)² / ((1/2)² + 1) = 0.2
    assert kernel[1, 0, 2] == pytest.approx(1 / 3 - 0.5)


def test_kernel_tilted_b0_and_float32(xp):
    b0 = np.array([0.3, -0.2, 1.0])
    kernel = dipole_kernel((8, 8, 8), (1, 1, 1), b0, xp=xp, dtype=np.float32)
    assert kernel.dtype == np.float32
    b0 /= np.linalg.norm(b0)
    k = np.array([1, 2, 3]) / 8.0
    expected = 1 / 3 - (k @ b0) ** 2 / (k @ k)
    assert float(kernel[1, 2, 3]) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="non-zero"):
        dipole_kernel((4, 4, 4), (1, 1, 1), (0, 0, 0))


@pytest.mark.parametrize(
    ("voxel", "b0_dir"),
    [((1.0, 1.0, 1.0), (0.0, 0.0, 1.0)), ((0.8, 0.8, 1.6), (0.3, 0.2, 1.0))],
    ids=["isotropic", "anisotropic-tilted"],
)
def test_forward_field_matches_analytic_sphere(xp, voxel, b0_dir):
    """Zero-padded dipole convolution of a voxelised sphere vs the closed-form field.

    The analytic field uses the radius of the sphere of equal volume to the voxelised one;
    voxels within 4 of the surface are excluded (the staircase surface differs there).
    """
    shape = (64, 64, 48)
    _, inside = sphere_field_ppm(shape, voxel, radius_mm=7.0, delta_chi_ppm=0.4,
                                 b0_dir=b0_dir)
    radius_eff = (3 * inside.sum() * np.prod(voxel) / (4 * np.pi)) ** (1 / 3)
    analytic, _ = sphere_field_ppm(shape, voxel, radius_mm=radius_eff, delta_chi_ppm=0.4,
                                   b0_dir=b0_dir)
    chi = xp.asarray(np.where(inside, 0.4, 0.0))
    field = backend.to_numpy(susceptibility_field_ppm(chi, voxel, b0_dir))
    outside = ~nd.binary_dilation(inside, iterations=4)
    nrmse = np.linalg.norm(field[outside] - analytic[outside]) / np.linalg.norm(analytic[outside])
    assert nrmse < 0.05
    core = nd.binary_erosion(inside, iterations=3)
    assert abs(np.median(field[core])) < 1e-3  # Lorentz-corrected: no field inside


def test_padding_removes_wrap_around():
    shape, voxel = (64, 64, 48), (1.0, 1.0, 1.0)
    _, inside = sphere_field_ppm(shape, voxel, radius_mm=7.0, delta_chi_ppm=0.4)
    radius_eff = (3 * inside.sum() / (4 * np.pi)) ** (1 / 3)
    analytic, _ = sphere_field_ppm(shape, voxel, radius_mm=radius_eff, delta_chi_ppm=0.4)
    chi = np.where(inside, 0.4, 0.0)
    outside = ~nd.binary_dilation(inside, iterations=4)

    def nrmse(pad):
        field = susceptibility_field_ppm(chi, voxel, pad_factor=pad)
        return np.linalg.norm(field[outside] - analytic[outside]) / np.linalg.norm(
            analytic[outside])

    assert nrmse(1.0) > 3 * nrmse(2.0)
    with pytest.raises(ValueError, match="pad_factor"):
        susceptibility_field_ppm(chi, voxel, pad_factor=0.5)


def test_forward_keeps_float32(xp):
    chi = xp.zeros((10, 10, 10), dtype=xp.float32)
    chi[5, 5, 5] = 1.0
    field = susceptibility_field_ppm(chi, (1, 1, 1))
    assert field.dtype == np.float32 and field.shape == (10, 10, 10)


def test_partial_volume_sphere_within_two_percent(xp):
    """Acceptance (simulation issue): relative error < 2 % away from the surface."""
    shape, voxel, radius = (64, 64, 48), (1.0, 1.0, 1.0), 7.0
    analytic, _ = sphere_field_ppm(shape, voxel, radius_mm=radius, delta_chi_ppm=0.4)
    chi = xp.asarray(0.4 * sphere_volume_fraction(shape, voxel, radius_mm=radius))
    field = backend.to_numpy(susceptibility_field_ppm(chi, voxel))
    axes = [(np.arange(n) - (n - 1) / 2) * v for n, v in zip(shape, voxel, strict=True)]
    distance = np.sqrt(sum(g**2 for g in np.meshgrid(*axes, indexing="ij")))
    away = distance > radius + 2.0
    nrmse = np.linalg.norm(field[away] - analytic[away]) / np.linalg.norm(analytic[away])
    assert nrmse < 0.02
    assert np.max(np.abs(field[distance < radius - 2.0])) < 0.02 * 0.4


@pytest.mark.parametrize("theta_deg", [0.0, 30.0, 54.7356, 90.0])
def test_infinite_cylinder_inside_field(theta_deg):
    """A cylinder at θ to B0 has Δχ (3cos²θ − 1)/6 inside; periodic along its axis = infinite."""
    theta = np.deg2rad(theta_deg)
    b0 = (np.sin(theta), 0.0, np.cos(theta))
    shape = (96, 96, 16)
    analytic, inside = cylinder_field_ppm(shape, (1, 1, 1), radius_mm=8.0, delta_chi_ppm=0.4,
                                          b0_dir=b0)
    expected = 0.4 * (3 * np.cos(theta) ** 2 - 1) / 6
    assert analytic[inside] == pytest.approx(expected)
    field = susceptibility_field_ppm(np.where(inside, 0.4, 0.0), (1, 1, 1), b0,
                                     pad_factor=(2, 2, 1))
    core = nd.binary_erosion(inside, iterations=2)
    assert np.median(field[core]) == pytest.approx(expected, abs=0.01 * 0.4)


def test_box_demagnetising_tensor_trace_and_far_field():
    from qsmliver.simulate.forward import box_demagnetising_tensor

    box = (1.0, 1.3, 0.8)
    inside = box_demagnetising_tensor(np.array([0.01, 0.02, 0.03]), box)
    assert np.trace(inside) == pytest.approx(1.0)
    for point in ((5.0, 3.0, 7.0), (9.0, -4.0, 2.0), (0.0, 0.5, 12.0)):
        r = np.array(point)
        tensor = box_demagnetising_tensor(r, box)
        assert np.trace(tensor) == pytest.approx(0.0, abs=1e-12)
        distance = np.linalg.norm(r)
        dipole = np.prod(box) / (4 * np.pi * distance**3) * (
            np.eye(3) - 3 * np.outer(r, r) / distance**2)
        np.testing.assert_allclose(tensor, dipole, atol=0.03 * np.abs(dipole).max())


@pytest.mark.parametrize("b0_dir", [(0.0, 0.0, 1.0), (0.3, -0.2, 1.0)])
def test_cuboid_kernel_agrees_with_kspace_for_smooth_sources(b0_dir):
    from scipy import ndimage

    rng = np.random.default_rng(0)
    chi = ndimage.gaussian_filter(rng.standard_normal((40, 36, 32)), 4.0)
    voxel = (1.0, 1.2, 1.5)
    kspace = susceptibility_field_ppm(chi, voxel, b0_dir)
    cuboid = susceptibility_field_ppm(chi, voxel, b0_dir, kernel="cuboid")
    # the two kernels differ at the highest frequencies only (k-space: band-limited sources)
    assert np.linalg.norm(cuboid - kspace) / np.linalg.norm(kspace) < 0.05


def test_cuboid_kernel_field_outside_sources_is_harmonic():
    """The exact voxel kernel has no ringing: outside a sharp-edged block its field has a
    (discrete) Laplacian far below that of the k-space kernel's field."""
    chi = np.zeros((48, 48, 48))
    chi[10:20, 12:30, 14:34] = 1.0
    region = np.zeros(chi.shape, bool)
    region[24:40, 8:40, 8:40] = True  # 4 voxels and more from the block

    def laplacian(f):
        return sum(np.roll(f, 1, a) + np.roll(f, -1, a) - 2 * f for a in range(3))

    residual = {kernel: np.abs(laplacian(susceptibility_field_ppm(chi, (1, 1, 1),
                                                                  kernel=kernel))[region]).max()
                for kernel in ("kspace", "cuboid")}
    assert residual["cuboid"] < 0.2 * residual["kspace"]


@pytest.mark.parametrize("which", ["brain", "abdomen"])
def test_phantom_shim_residual_is_harmonic(which):
    """The shim residual of both phantoms obeys Laplace's equation on a non-cubic field of view
    with anisotropic voxels (each axis scaled by its own field of view, ``2z² − x² − y²`` had a
    Laplacian of the order of the local field's)."""
    from qsmliver.bgremove.lbv import dirichlet_laplacian
    from qsmliver.simulate.abdomen import abdomen_phantom
    from qsmliver.simulate.brain import brain_phantom

    shape, voxel = (40, 32, 20), (3.0, 3.5, 5.0)
    if which == "brain":
        with_shim = brain_phantom(shape=shape, voxel_size_mm=voxel, snr=None, shim_ppm=0.1)
        without = brain_phantom(shape=shape, voxel_size_mm=voxel, snr=None, shim_ppm=0.0)
    else:
        with_shim = abdomen_phantom(shape=shape, voxel_size_mm=voxel, snr=None)
        without = abdomen_phantom(shape=shape, voxel_size_mm=voxel, snr=None, shim_ppm={})
    shim = with_shim.truth["background_field_ppm"] - without.truth["background_field_ppm"]
    # a quadratic term over the field of view: the field changes by ~its amplitude
    assert np.ptp(shim) > 0.02
    curvature = np.abs(np.diff(shim, n=2, axis=2)).max() / voxel[2] ** 2
    assert curvature > 1e-7  # the second-order terms are present
    # 7-point Laplacian (exact for quadratics) away from the zero-padded array edge
    interior = dirichlet_laplacian(shim, voxel)[1:-1, 1:-1, 1:-1]
    assert np.abs(interior).max() < 1e-6 * curvature
