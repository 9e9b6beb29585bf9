"""A susceptibility sphere with a closed-form field, and the multi-echo GRE it produces.

The field perturbation of a uniformly magnetised sphere of radius ``a`` and susceptibility
difference Δχ to its surroundings, normalised to B0 and Lorentz-corrected, is (e.g. Haacke et
al., *Magnetic Resonance Imaging: Physical Principles and Sequence Design*, 1999, ch. 25;
Schenck, Med Phys 1996;23:815)

    δB/B0 (r) = 0                                      for |r| < a,
    δB/B0 (r) = Δχ/3 · (a/|r|)^3 · (3 cos²θ − 1)        for |r| >= a,

with θ the angle between r and B0. With Δχ in ppm the field is in ppm.

For an infinitely long cylinder of radius ``a`` whose axis makes the angle θ with B0
(Chu et al., MRM 1990;13:239; Haacke et al. 1999), with ρ the distance from the axis and φ the
azimuth from the projection of B0 onto the cross-section,

    δB/B0 = Δχ/6 · (3 cos²θ − 1)                       inside,
    δB/B0 = Δχ/2 · sin²θ · (a/ρ)² · cos 2φ              outside.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qsmliver.data import GYROMAGNETIC_RATIO_HZ_PER_T, MultiEchoGRE
from qsmliver.geometry import centred_affine

__all__ = ["cylinder_field_ppm", "sphere_field_ppm", "sphere_gre", "sphere_volume_fraction"]


def _positions_mm(shape: Sequence[int], voxel_size_mm: ArrayLike, center_mm: ArrayLike | None):
    voxel = np.asarray(voxel_size_mm, dtype=np.float64)
    axes = [(np.arange(n) - (n - 1) / 2.0) * v for n, v in zip(shape, voxel, strict=False)]
    grid = np.meshgrid(*axes, indexing="ij")
    center = np.zeros(3) if center_mm is None else np.asarray(center_mm, dtype=np.float64)
    return [g - c for g, c in zip(grid, center, strict=False)]


def sphere_field_ppm(
    shape: Sequence[int],
    voxel_size_mm: ArrayLike,
    *,
    radius_mm: float,
    delta_chi_ppm: float,
    b0_dir: ArrayLike = (0.0, 0.0, 1.0),
    center_mm: ArrayLike | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Closed-form field (ppm of B0) of a susceptibility sphere, sampled at voxel centres.

    Parameters
    ----------
    shape : (3,) sequence of int
        Matrix size.
    voxel_size_mm : (3,) array_like
        Voxel size in mm.
    radius_mm : float
        Sphere radius in mm.
    delta_chi_ppm : float
        Susceptibility of the sphere relative to its surroundings, ppm.
    b0_dir : (3,) array_like
        B0 direction in the voxel frame (normalised here).
    center_mm : (3,) array_like, optional
        Sphere centre relative to the matrix centre, mm.

    Returns
    -------
    field_ppm : (X, Y, Z) ndarray
        Field perturbation in ppm of B0.
    inside : (X, Y, Z) bool ndarray
        True inside the sphere.

    Examples
    --------
    >>> field, inside = sphere_field_ppm((33, 33, 33), (1, 1, 1), radius_mm=5, delta_chi_ppm=0.3)
    >>> round(float(field[16, 16, 16 + 10]), 6)   # on the B0 axis at r = 2a: 2Δχ/3 / 8
    0.025
    """
    b0 = np.asarray(b0_dir, dtype=np.float64)
    b0 = b0 / np.linalg.norm(b0)
    x, y, z = _positions_mm(shape, voxel_size_mm, center_mm)
    r2 = x * x + y * y + z * z
    inside = r2 < radius_mm**2
    with np.errstate(divide="ignore", invalid="ignore"):
        cos2 = (x * b0[0] + y * b0[1] + z * b0[2]) ** 2 / r2
        field = delta_chi_ppm / 3.0 * radius_mm**3 / r2**1.5 * (3.0 * cos2 - 1.0)
    field[inside] = 0.0
    return field, inside


def sphere_gre(
    shape: Sequence[int] = (48, 48, 40),
    voxel_size_mm: ArrayLike = (1.0, 1.0, 1.0),
    *,
    te_s: ArrayLike = (0.004, 0.008, 0.012, 0.016, 0.020),
    b0_t: float = 3.0,
    radius_mm: float = 8.0,
    delta_chi_ppm: float = 0.4,
    r2star_per_s: float = 25.0,
    b0_dir: ArrayLike = (0.0, 0.0, 1.0),
    snr: float | None = None,
    seed: int = 0,
) -> tuple[MultiEchoGRE, dict[str, NDArray]]:
    """Multi-echo complex GRE of a susceptibility sphere in a uniform medium.

    ``S(TE) = exp(-R2*·TE) · exp(i·2π·f·TE)`` with ``f = γ·B0·δB/B0`` from
    :func:`sphere_field_ppm`, plus complex Gaussian noise of standard deviation 1/snr.

    Returns
    -------
    gre : MultiEchoGRE
        The acquisition (complex64), affine diagonal with the voxel size, centred on the matrix.
    truth : dict
        ``field_ppm``, ``field_hz``, ``inside`` (sphere mask) and ``chi_ppm`` maps.
    """
    field_ppm, inside = sphere_field_ppm(shape, voxel_size_mm, radius_mm=radius_mm,
                                         delta_chi_ppm=delta_chi_ppm, b0_dir=b0_dir)
    field_hz = field_ppm * 1e-6 * GYROMAGNETIC_RATIO_HZ_PER_T * b0_t
    te = np.asarray(te_s, dtype=np.float64)
    signal = np.exp((-r2star_per_s + 2j * np.pi * field_hz[..., None]) * te)
    if snr is not None:
        rng = np.random.default_rng(seed)
        signal = signal + (rng.standard_normal(signal.shape)
                           + 1j * rng.standard_normal(signal.shape)) / (snr * np.sqrt(2))
    voxel = np.asarray(voxel_size_mm, dtype=np.float64)
    affine = centred_affine(shape, voxel)
    gre = MultiEchoGRE(signal.astype(np.complex64), te_s=te, b0_t=b0_t, affine=affine,
                       b0_dir=b0_dir, vendor="qsmliver.simulate",
                       metadata={"Phantom": "sphere", "DeltaChi_ppm": delta_chi_ppm})
    chi = np.where(inside, delta_chi_ppm, 0.0)
    return gre, {"field_ppm": field_ppm, "field_hz": field_hz, "inside": inside, "chi_ppm": chi}


def sphere_volume_fraction(
    shape: Sequence[int],
    voxel_size_mm: ArrayLike,
    *,
    radius_mm: float,
    center_mm: ArrayLike | None = None,
    supersample: int = 4,
) -> NDArray[np.float64]:
    """Fraction of each voxel inside a sphere, by ``supersample``³ sub-voxel samples.

    Partial-volume sampling removes most of the staircase error of a binary sphere, so that
    its numerical field approaches the closed form (used for forward-model validation).
    """
    voxel = np.asarray(voxel_size_mm, dtype=np.float64)
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    fraction = np.zeros(tuple(shape))
    base = _positions_mm(shape, voxel, center_mm)
    for dx in offsets:
        for dy in offsets:
            for dz in offsets:
                x, y, z = (base[0] + dx * voxel[0], base[1] + dy * voxel[1],
                           base[2] + dz * voxel[2])
                fraction += (x * x + y * y + z * z) < radius_mm**2
    return fraction / supersample**3


def cylinder_field_ppm(
    shape: Sequence[int],
    voxel_size_mm: ArrayLike,
    *,
    radius_mm: float,
    delta_chi_ppm: float,
    b0_dir: ArrayLike = (0.0, 0.0, 1.0),
    axis: int = 2,
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Closed-form field (ppm of B0) of an infinite cylinder along array axis ``axis``.

    Parameters
    ----------
    shape, voxel_size_mm
        Matrix size and voxel size (mm); the cylinder axis passes through the matrix centre.
    radius_mm : float
        Cylinder radius, mm.
    delta_chi_ppm : float
        Susceptibility difference to the surroundings, ppm.
    b0_dir : (3,) array_like
        B0 direction in the voxel frame.
    axis : int
        Array axis the cylinder runs along.

    Returns
    -------
    field_ppm : (X, Y, Z) ndarray
    inside : (X, Y, Z) bool ndarray
    """
    b0 = np.asarray(b0_dir, dtype=np.float64)
    b0 = b0 / np.linalg.norm(b0)
    positions = _positions_mm(shape, voxel_size_mm, None)
    others = [a for a in range(3) if a != axis]
    u, v = positions[others[0]], positions[others[1]]
    cos_theta = b0[axis]
    sin2_theta = 1.0 - cos_theta**2
    rho2 = u * u + v * v
    inside = rho2 < radius_mm**2
    b_perp = np.array([b0[others[0]], b0[others[1]]])
    phi0 = np.arctan2(b_perp[1], b_perp[0]) if np.linalg.norm(b_perp) > 0 else 0.0
    cos_2phi = np.cos(2 * (np.arctan2(v, u) - phi0))
    with np.errstate(divide="ignore", invalid="ignore"):
        outside_field = delta_chi_ppm / 2 * sin2_theta * radius_mm**2 / rho2 * cos_2phi
    field = np.where(inside, delta_chi_ppm / 6 * (3 * cos_theta**2 - 1), outside_field)
    return field, inside
