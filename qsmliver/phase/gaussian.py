"""Separable Gaussian and Gaussian-derivative filters computed by FFT.

A direct separable filter costs ``2·radius + 1`` multiply-adds per voxel and pass, so its
cost grows with σ: at 0.75 mm voxels the 6 mm window of the phase-offset smoother is a 65-tap
kernel per axis. Multiplying spectra costs the same for any σ. The kernels are the sampled,
truncated and normalised ones of :func:`scipy.ndimage.gaussian_filter1d` (``truncate = 4``),
and each axis is zero-padded by the kernel's radius, so the circular convolution equals the
linear one with zeros outside the array: ``scipy.ndimage.gaussian_filter(a, σ, order=o,
mode="constant")`` to rounding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from qsmliver import backend

__all__ = ["gaussian_filters", "gaussian_kernel1d"]

Array = Any

#: Kernel radius in σ, as scipy.ndimage's default ``truncate``.
TRUNCATE = 4.0


def gaussian_kernel1d(sigma: float, order: int, radius: int) -> np.ndarray:
    """Sampled Gaussian (``order`` 0) or its first or second derivative, taps ``-radius..radius``.

    The Gaussian is normalised to unit sum over its taps; the derivatives are the analytic
    derivatives of that normalised Gaussian (as in scipy.ndimage): ``−x/σ² g`` and
    ``(x²/σ⁴ − 1/σ²) g``. Index ``radius`` is the centre.
    """
    if order not in (0, 1, 2):
        raise ValueError(f"Gaussian derivative order must be 0, 1 or 2, got {order}")
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    variance = float(sigma) ** 2
    gauss = np.exp(-0.5 * x**2 / variance)
    gauss /= gauss.sum()
    if order == 1:
        return -x / variance * gauss
    if order == 2:
        return (x**2 / variance**2 - 1.0 / variance) * gauss
    return gauss


def _transfer_functions(xp, sigma: float, orders: set[int], length: int,
                        real: bool) -> dict[int, Array]:
    """Discrete Fourier transforms (length ``length``; half spectrum if ``real``) of the
    kernels, centred on index 0 so that the filtered array is not shifted."""
    radius = int(TRUNCATE * float(sigma) + 0.5)
    out = {}
    for order in orders:
        taps = np.zeros(length)
        kernel = gaussian_kernel1d(sigma, order, radius)
        taps[np.arange(-radius, radius + 1) % length] = kernel
        spectrum = np.fft.rfft(taps) if real else np.fft.fft(taps)
        out[order] = xp.asarray(spectrum)
    return out


def gaussian_filters(array: Array, sigma_vox: Sequence[float],
                     orders: Sequence[tuple[int, int, int]], *,
                     factors: Mapping[tuple[int, int, int], float] | None = None,
                     ) -> dict[tuple[int, int, int], Array]:
    """``c_o ∂^o (G_σ * array)`` for each derivative order ``o = (o_0, o_1, o_2)``, zero outside.

    Parameters
    ----------
    array : (X, Y, Z) real array
        NumPy or CuPy; its precision is kept (float64 in, float64 out).
    sigma_vox : (3,) sequence of float
        Gaussian σ per axis, voxels (> 0).
    orders : sequence of (int, int, int)
        Derivative orders per axis, each 0, 1 or 2.
    factors : mapping of order to float, optional
        Constant ``c_o`` per order (default 1), applied to the spectrum at no extra cost.

    Returns
    -------
    dict
        Order -> filtered (X, Y, Z) array: the numbers of
        ``scipy.ndimage.gaussian_filter(array, sigma_vox, order=o, mode="constant")``.

    Notes
    -----
    One forward real FFT of the zero-padded array, then per order a product with the three
    1-D transfer functions and one inverse FFT. Orders that share their leading axes share the
    partial products.
    """
    xp = backend.get_array_module(array)
    fft = backend.fft(xp)
    shape = array.shape
    sigma = [float(s) for s in sigma_vox]
    if len(shape) != 3 or len(sigma) != 3 or not all(s > 0 for s in sigma):
        raise ValueError("gaussian_filters needs a 3-D array and three positive σ")
    padded = []
    for axis, (n, s) in enumerate(zip(shape, sigma, strict=True)):
        target = n + int(TRUNCATE * s + 0.5)
        padded.append(int(fft.next_fast_len(target, real=axis == 2)))
    spectrum = fft.rfftn(array, s=padded)
    complex_dtype = spectrum.dtype
    transfer = [
        {o: t.astype(complex_dtype) for o, t in _transfer_functions(
            xp, sigma[axis], {order[axis] for order in orders}, padded[axis], axis == 2).items()}
        for axis in range(3)
    ]
    out: dict[tuple[int, int, int], Array] = {}
    # one spectrum-sized buffer per axis, reused: fresh allocations cost more than products
    buffers = [xp.empty_like(spectrum) for _ in range(3)]
    wanted = sorted({tuple(int(v) for v in o) for o in orders})
    for o0 in sorted({w[0] for w in wanted}):
        level0 = xp.multiply(spectrum, transfer[0][o0][:, None, None], out=buffers[0])
        for o1 in sorted({w[1] for w in wanted if w[0] == o0}):
            level1 = xp.multiply(level0, transfer[1][o1][None, :, None], out=buffers[1])
            for o2 in sorted({w[2] for w in wanted if w[:2] == (o0, o1)}):
                order = (o0, o1, o2)
                factor = 1.0 if factors is None else float(factors.get(order, 1.0))
                kernel = transfer[2][o2] * factor if factor != 1.0 else transfer[2][o2]
                level2 = xp.multiply(level1, kernel[None, None, :], out=buffers[2])
                # the product buffer is scratch, so the transform may overwrite it; the
                # result is copied out of the padding so that the padded array is freed
                full = fft.irfftn(level2, s=padded, overwrite_x=True)
                out[order] = xp.ascontiguousarray(full[: shape[0], : shape[1], : shape[2]])
                del full
    return out
