"""Conversions between complex echoes and magnitude/phase, one call for CPU and GPU.

On NumPy these are the vectorised reference implementations; on CuPy they launch the fused
kernels in ``kernels/complex_ops.cu`` (one pass over memory instead of two). The NumPy path
is the oracle of the GPU parity test.
"""

from __future__ import annotations

import numpy as np

from qsmliver import backend

__all__ = ["complex_to_polar", "polar_to_complex"]

_THREADS = 256
_MAX_BLOCKS = 65535


def _launch_shape(n: int) -> tuple[tuple[int], tuple[int]]:
    return (max(1, min(_MAX_BLOCKS, (n + _THREADS - 1) // _THREADS)),), (_THREADS,)


def complex_to_polar(z):
    """Magnitude and phase (radians, [-pi, pi]) of a complex array.

    Parameters
    ----------
    z : ndarray, complex64 or complex128
        Any shape; NumPy or CuPy.

    Returns
    -------
    magnitude, phase : ndarray
        Real arrays of the matching precision, same shape and array module as ``z``.
    """
    xp = backend.get_array_module(z)
    if xp is np:
        return np.abs(z), np.angle(z)
    if z.dtype not in (xp.complex64, xp.complex128):
        z = z.astype(xp.complex64)
    z = xp.ascontiguousarray(z)
    real_dtype = xp.float32 if z.dtype == xp.complex64 else xp.float64
    magnitude = xp.empty(z.shape, dtype=real_dtype)
    phase = xp.empty(z.shape, dtype=real_dtype)
    kernel = backend.get_kernel("complex_ops", "complex_to_polar", real_dtype)
    grid, block = _launch_shape(z.size)
    kernel(grid, block, (z, magnitude, phase, np.int64(z.size)))
    return magnitude, phase


def polar_to_complex(magnitude, phase):
    """``magnitude * exp(1j * phase)``; complex64 for float32 input, complex128 for float64.

    Parameters
    ----------
    magnitude, phase : ndarray
        Real arrays of the same shape (phase in radians); NumPy or CuPy.
    """
    xp = backend.get_array_module(magnitude, phase)
    if magnitude.shape != phase.shape:
        raise ValueError(
            f"magnitude {magnitude.shape} and phase {phase.shape} shapes differ"
        )
    real_dtype = np.result_type(magnitude.dtype, phase.dtype, np.float32)
    if xp is np:
        # cos/sin in the working precision; exp(1j * float32) would promote to complex128
        out = np.empty(magnitude.shape, np.complex64 if real_dtype == np.float32 else
                       np.complex128)
        phase = phase.astype(real_dtype, copy=False)
        out.real = np.cos(phase)
        out.imag = np.sin(phase)
        out *= magnitude.astype(real_dtype, copy=False)
        return out
    real_dtype = xp.float64 if real_dtype == np.float64 else xp.float32
    magnitude = xp.ascontiguousarray(magnitude, dtype=real_dtype)
    phase = xp.ascontiguousarray(phase, dtype=real_dtype)
    out = xp.empty(magnitude.shape, dtype=xp.complex64 if real_dtype == xp.float32 else
                   xp.complex128)
    kernel = backend.get_kernel("complex_ops", "polar_to_complex", real_dtype)
    grid, block = _launch_shape(out.size)
    kernel(grid, block, (magnitude, phase, out, np.int64(out.size)))
    return out
