"""Forward models: the field produced by a susceptibility distribution.

The field is computed by the k-space dipole convolution (:mod:`qsmliver.inversion.dipole`) on
a zero-padded grid, so that the periodic FFT does not wrap the field of sources at one edge of
the field of view onto the other: with padding factor p >= 2 each axis is extended to
``ceil(p · n)`` (rounded to a fast FFT length), the field computed, and the original field of
view cropped back.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from qsmliver import backend
from qsmliver.inversion.dipole import dipole_kernel

__all__ = ["susceptibility_field_ppm"]


def susceptibility_field_ppm(
    chi_ppm,
    voxel_size_mm: ArrayLike,
    b0_dir: ArrayLike = (0.0, 0.0, 1.0),
    *,
    pad_factor: float | tuple[float, float, float] = 2.0,
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

    Returns
    -------
    (X, Y, Z) ndarray
        ``δB/B0`` in ppm, same array module and real dtype as ``chi_ppm``.

    References
    ----------
    Marques JP, Bowtell R. Application of a Fourier-based method for rapid calculation of
    field inhomogeneity due to spatial variation of magnetic susceptibility. Concepts Magn
    Reson B 2005;25:65-78.
    """
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
    kernel = dipole_kernel(padded_shape, voxel_size_mm, b0_dir, xp=xp, dtype=real_dtype)
    spectrum = fft.fftn(chi.astype(real_dtype, copy=False), s=padded_shape)
    field = fft.ifftn(spectrum * kernel).real
    return field[: chi.shape[0], : chi.shape[1], : chi.shape[2]].astype(real_dtype, copy=False)
