"""The unit dipole kernel in k-space.

For a susceptibility distribution χ(r) in a field B0 along the unit vector b̂, the
Lorentz-corrected field perturbation normalised to B0 is ``δB/B0 = F⁻¹[D · F[χ]]`` with

    D(k) = 1/3 − (k·b̂)² / |k|²,   D(0) = 0,

(Salomir et al., Concepts Magn Reson B 2003;19:26; Marques & Bowtell, Concepts Magn Reson B
2005;25:65). ``k`` is the spatial frequency in cycles/mm on the FFT grid, so anisotropic
voxels are handled by scaling each axis by its voxel size; ``b̂`` is given in the voxel frame
(:attr:`qsmliver.data.MultiEchoGRE.b0_dir`). Setting D(0) = 0 fixes the unknown mean field.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import numpy as np
from numpy.typing import ArrayLike

from qsmliver import backend

__all__ = ["dipole_kernel", "kspace_grid"]


def kspace_grid(shape: Sequence[int], voxel_size_mm: ArrayLike, xp: ModuleType = np,
                dtype=np.float64) -> list:
    """Spatial-frequency coordinates (cycles/mm) of the FFT grid, one broadcastable array per axis.

    Parameters
    ----------
    shape : (3,) sequence of int
        Matrix size.
    voxel_size_mm : (3,) array_like
        Voxel size in mm.
    xp : module
        Array module (numpy or cupy).
    dtype : dtype
        Real dtype of the result.

    Returns
    -------
    list of 3 ndarrays
        ``k[i]`` has shape 1 along every axis but ``i`` (FFT order, unshifted).
    """
    fft = backend.fft(xp)
    voxel = np.asarray(voxel_size_mm, dtype=np.float64)
    grid = []
    for axis, (n, d) in enumerate(zip(shape, voxel, strict=False)):
        k = xp.asarray(fft.fftfreq(int(n), d=float(d)), dtype=dtype)
        view = [1, 1, 1]
        view[axis] = int(n)
        grid.append(k.reshape(view))
    return grid


def dipole_kernel(
    shape: Sequence[int],
    voxel_size_mm: ArrayLike,
    b0_dir: ArrayLike = (0.0, 0.0, 1.0),
    *,
    xp: ModuleType = np,
    dtype=np.float64,
):
    """The k-space unit dipole kernel D(k) = 1/3 − (k·b̂)²/|k|², with D(0) = 0.

    Parameters
    ----------
    shape : (3,) sequence of int
        Matrix size (the padded size when zero padding).
    voxel_size_mm : (3,) array_like
        Voxel size in mm.
    b0_dir : (3,) array_like
        B0 direction in the voxel frame (normalised here).
    xp : module
        Array module of the result (numpy or cupy).
    dtype : dtype
        float32 or float64.

    Returns
    -------
    (X, Y, Z) ndarray
        Real kernel in FFT order, values in [-2/3, 1/3].

    Examples
    --------
    >>> D = dipole_kernel((8, 8, 8), (1, 1, 1))
    >>> float(D[0, 0, 0]), float(D[0, 0, 1]), float(D[1, 0, 0])
    (0.0, -0.6666666666666667, 0.3333333333333333)
    """
    b0 = np.asarray(b0_dir, dtype=np.float64)
    norm = np.linalg.norm(b0)
    if b0.shape != (3,) or not np.isfinite(norm) or norm == 0:
        raise ValueError(f"b0_dir must be a non-zero 3-vector, got {b0_dir!r}")
    b0 = b0 / norm
    kx, ky, kz = kspace_grid(shape, voxel_size_mm, xp=xp, dtype=dtype)
    k_squared = kx * kx + ky * ky + kz * kz
    k_dot_b = kx * b0[0] + ky * b0[1] + kz * b0[2]
    k_squared[0, 0, 0] = 1.0  # placeholder, D(0) is set below
    kernel = (1.0 / 3.0 - k_dot_b * k_dot_b / k_squared).astype(dtype, copy=False)
    kernel[0, 0, 0] = 0.0
    return kernel
