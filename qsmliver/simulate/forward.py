"""Forward models: the field produced by a susceptibility distribution.

The field is a convolution computed by FFT on a zero-padded grid, so that the periodic FFT does
not wrap the field of sources at one edge of the field of view onto the other: with padding
factor p >= 2 each axis is extended to ``ceil(p · n)`` (rounded to a fast FFT length), the
field computed, and the original field of view cropped back. Two kernels:

- ``"kspace"``: the continuous dipole kernel sampled in k-space
  (:func:`qsmliver.inversion.dipole.dipole_kernel`), i.e. the field of band-limited
  (sinc-shaped) sources. Its real-space response rings near sharp edges, so the field of
  sources *outside* a region is not exactly harmonic in the first voxels inside it.
- ``"cuboid"``: the exact field of uniformly magnetised voxels (rectangular boxes), from the
  closed-form demagnetising tensor of a box, evaluated at voxel centres. The field of sources
  outside a region is harmonic inside it, as in a real object, which is what background field
  removal assumes; the phantoms use it.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numpy.typing import ArrayLike

from qsmliver import backend
from qsmliver.inversion.dipole import dipole_kernel

__all__ = [
    "box_demagnetising_tensor",
    "cuboid_dipole_kernel",
    "shim_coordinates",
    "susceptibility_field_ppm",
]


def susceptibility_field_ppm(
    chi_ppm,
    voxel_size_mm: ArrayLike,
    b0_dir: ArrayLike = (0.0, 0.0, 1.0),
    *,
    pad_factor: float | tuple[float, float, float] = 2.0,
    kernel: str = "kspace",
):
    """Field perturbation (ppm of B0) of a susceptibility map, by zero-padded dipole convolution.

    Parameters
    ----------
    chi_ppm : (X, Y, Z) ndarray
        Susceptibility in ppm (NumPy or CuPy; float32 or float64 kept).
    voxel_size_mm : (3,) array_like
        Voxel size in mm.
    b0_dir : (3,) array_like
        B0 direction in the voxel frame.
    pad_factor : float or (3,) tuple of float
        Each axis is zero padded to at least ``pad_factor`` times its length before the FFT
        (>= 1; 2 or more avoids wrap-around, the default). A per-axis tuple with 1 along an
        axis keeps that axis periodic, e.g. to model an infinitely long cylinder.
    kernel : {"kspace", "cuboid"}
        The dipole kernel (module docstring); "cuboid" needs ``pad_factor >= 2`` on every
        axis (linear, not periodic, convolution).

    Returns
    -------
    (X, Y, Z) ndarray
        ``δB/B0`` in ppm, same array module and real dtype as ``chi_ppm``.

    References
    ----------
    Marques JP, Bowtell R. Application of a Fourier-based method for rapid calculation of
    field inhomogeneity due to spatial variation of magnetic susceptibility. Concepts Magn
    Reson B 2005;25:65-78 (k-space kernel). Newell AJ, Williams W, Dunlop DJ. A
    generalization of the demagnetizing tensor for nonuniform magnetization. J Geophys Res
    1993;98:9551-5 (box demagnetising tensor, "cuboid" kernel).
    """
    if kernel not in ("kspace", "cuboid"):
        raise ValueError(f"kernel must be 'kspace' or 'cuboid', got {kernel!r}")
    factors = np.broadcast_to(np.asarray(pad_factor, dtype=np.float64), (3,))
    if np.any(factors < 1):
        raise ValueError(f"pad_factor must be >= 1, got {pad_factor}")
    xp = backend.get_array_module(chi_ppm)
    chi = xp.asarray(chi_ppm)
    if chi.ndim != 3:
        raise ValueError(f"chi_ppm must be 3-D, got shape {chi.shape}")
    real_dtype = chi.dtype if chi.dtype in (np.float32, np.float64) else np.float64
    fft = backend.fft(xp)
    padded_shape = tuple(
        n if f == 1 else fft.next_fast_len(math.ceil(f * n))
        for n, f in zip(chi.shape, factors, strict=True)
    )
    if kernel == "cuboid":
        if np.any(factors < 2):
            raise ValueError("the cuboid kernel needs pad_factor >= 2 on every axis")
        transfer = xp.asarray(cuboid_dipole_kernel(
            padded_shape, tuple(float(v) for v in np.asarray(voxel_size_mm, float)),
            tuple(float(v) for v in np.asarray(b0_dir, float)))).astype(real_dtype)
    else:
        transfer = dipole_kernel(padded_shape, voxel_size_mm, b0_dir, xp=xp, dtype=real_dtype)
    spectrum = fft.fftn(chi.astype(real_dtype, copy=False), s=padded_shape)
    field = fft.ifftn(spectrum * transfer).real
    return field[: chi.shape[0], : chi.shape[1], : chi.shape[2]].astype(real_dtype, copy=False)


def shim_coordinates(shape: tuple[int, int, int],
                     voxel_size_mm: ArrayLike) -> list[np.ndarray]:
    """Coordinates for shim-residual polynomials: x, y, z over one common length.

    A shim field obeys Laplace's equation, so its polynomial terms (``x² − y²``,
    ``2z² − x² − y²``, ...) are harmonic only in coordinates that share one length scale.
    Dividing each axis by its own field of view would make them non-harmonic for a non-cubic
    field of view, a background that no harmonic background-removal method can remove.

    Parameters
    ----------
    shape : (3,) ints
        Matrix size.
    voxel_size_mm : (3,) array_like
        Voxel size, mm.

    Returns
    -------
    list of three ndarrays
        Open-grid (broadcastable) positions of the voxel centres, mm from the centre of the
        field of view, divided by the largest half field of view (so within [−1, 1]).

    Examples
    --------
    >>> x, y, z = shim_coordinates((4, 2, 2), (1.0, 1.0, 1.0))
    >>> x.ravel().tolist(), y.ravel().tolist()
    ([-0.75, -0.25, 0.25, 0.75], [-0.25, 0.25])
    """
    voxel = np.broadcast_to(np.asarray(voxel_size_mm, dtype=np.float64), (3,))
    scale = float(np.max(np.asarray(shape) * voxel)) / 2.0
    return [((np.arange(n) - (n - 1) / 2.0) * float(voxel[axis]) / scale).reshape(
        [-1 if axis == j else 1 for j in range(3)]) for axis, n in enumerate(shape)]


def box_demagnetising_tensor(offset_mm: np.ndarray, box_mm: ArrayLike) -> np.ndarray:
    """Demagnetising tensor field N(r) of a uniformly magnetised box centred at the origin.

    ``H = −N(r) M``; its trace is 1 inside the box and 0 outside, and far away it tends to the
    point-dipole tensor ``V (I − 3 r̂ r̂ᵀ) / (4π |r|³)``.

    Parameters
    ----------
    offset_mm : (3, ...) ndarray
        Points (x, y, z) where the tensor is evaluated, mm; no point may lie on a face plane.
    box_mm : (3,) array_like
        Box edge lengths (the voxel size), mm.

    Returns
    -------
    (3, 3, ...) ndarray

    References
    ----------
    Newell AJ, Williams W, Dunlop DJ. J Geophys Res 1993;98:9551-5; Joseph RI, Schlömann E.
    J Appl Phys 1965;36:1579.
    """
    x, y, z = (np.asarray(c, dtype=np.float64) for c in offset_mm)
    a, b, c = (float(v) for v in box_mm)
    tensor = np.zeros((3, 3, *x.shape))
    for i in (-1, 1):
        for j in (-1, 1):
            for k in (-1, 1):
                xx, yy, zz = x + i * a / 2, y + j * b / 2, z + k * c / 2
                r = np.sqrt(xx * xx + yy * yy + zz * zz)
                sign = i * j * k
                tensor[0, 0] += sign * np.arctan(yy * zz / (xx * r))
                tensor[1, 1] += sign * np.arctan(xx * zz / (yy * r))
                tensor[2, 2] += sign * np.arctan(xx * yy / (zz * r))
                tensor[0, 1] -= sign * np.log(zz + r)
                tensor[0, 2] -= sign * np.log(yy + r)
                tensor[1, 2] -= sign * np.log(xx + r)
    tensor /= 4 * np.pi
    tensor[1, 0], tensor[2, 0], tensor[2, 1] = tensor[0, 1], tensor[0, 2], tensor[1, 2]
    return tensor


@functools.lru_cache(maxsize=4)
def cuboid_dipole_kernel(shape: tuple[int, int, int], voxel_size_mm: tuple[float, ...],
                         b0_dir: tuple[float, ...], exact_radius: int = 8) -> np.ndarray:
    """k-space transfer function of the exact field of uniformly magnetised voxels.

    The real-space kernel is ``k(r) = δ(r)/3 − b̂ᵀ N(r) b̂`` (Lorentz-corrected field along B0 of
    one voxel of unit χ, :func:`box_demagnetising_tensor`) at every offset of the padded grid,
    exact within ``exact_radius`` voxels of the source and the point-dipole field beyond
    (where they agree to better than 1 %); its FFT is returned (real, float64).
    """
    voxel = np.asarray(voxel_size_mm, dtype=np.float64)
    b = np.asarray(b0_dir, dtype=np.float64)
    b = b / np.linalg.norm(b)
    offsets = [np.fft.fftfreq(n, 1.0 / n) for n in shape]  # signed voxel offsets
    grid = np.meshgrid(*[o * v for o, v in zip(offsets, voxel, strict=True)], indexing="ij",
                       sparse=True)
    r2 = grid[0] ** 2 + grid[1] ** 2 + grid[2] ** 2
    r2 = np.where(r2 == 0, 1.0, r2)
    cos_b = (grid[0] * b[0] + grid[1] * b[1] + grid[2] * b[2]) / np.sqrt(r2)
    real_kernel = np.prod(voxel) * (3 * cos_b**2 - 1) / (4 * np.pi * r2**1.5)
    near = [np.r_[0:exact_radius + 1, n - exact_radius:n] if n > 2 * exact_radius + 1
            else np.arange(n) for n in shape]
    index = np.ix_(*near)
    points = np.stack(np.meshgrid(*[offsets[a][near[a]] * voxel[a] for a in range(3)],
                                  indexing="ij"))
    tensor = box_demagnetising_tensor(points, voxel)
    exact = -np.einsum("i,ij...,j->...", b, tensor, b)
    exact[0, 0, 0] += 1.0 / 3.0
    real_kernel = np.array(np.broadcast_to(real_kernel, shape))
    real_kernel[index] = exact
    return np.fft.fftn(real_kernel).real
