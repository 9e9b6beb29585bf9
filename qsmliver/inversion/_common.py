"""Shared machinery of the dipole inversions: input checks, the padded grid, the operators.

Every inversion solves on a *working grid*: the bounding box of the mask, zero-padded on each
side by ``pad_fraction`` of its extent (at least ``min_pad`` voxels), each axis rounded up to
``next_fast_len``. Cropping to the mask makes the cost independent of empty margins in the
input; the padding separates the mask from its periodic images so that the circular
convolution of the FFT does not fold the field of one edge onto the opposite one (the dipole
field decays as 1/r³, so a margin of a quarter of the extent in total leaves wrap-around below
the noise of in-vivo data). ``pad_fraction=0, min_pad=0`` with a full mask gives the plain
periodic problem on the input grid (used by the brute-force tests).

The dipole operator is ``A χ = F⁻¹[D · F[χ]]`` with the real, even kernel ``D`` of
:func:`qsmliver.inversion.dipole.dipole_kernel` (its Nyquist planes symmetrised so that the
real-to-complex transforms represent exactly the self-adjoint real operator), applied with
``rfftn``/``irfftn``. Gradients are the periodic forward differences of
:func:`qsmliver.optim.gradient` in ppm/mm.
"""

from __future__ import annotations

import dataclasses
import math
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from qsmliver import backend
from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.inversion.dipole import dipole_kernel
from qsmliver.optim import LinearOperator, divergence, gradient, gradient_kernel

Array = Any

#: Default padding: a fraction of the mask's extent added on each side of each axis.
DEFAULT_PAD_FRACTION = 0.125
#: Default minimum padding on each side, voxels.
DEFAULT_MIN_PAD = 8


@dataclasses.dataclass
class Grid:
    """The working grid of one inversion (see the module docstring).

    Attributes
    ----------
    xp : module
        numpy or cupy.
    dtype : numpy dtype
        Real working dtype (float32 or float64, that of the input field).
    input_shape : tuple of int
        Shape of the caller's arrays.
    shape : tuple of int
        Padded working shape.
    source : tuple of slice
        The mask's bounding box in the input arrays.
    target : tuple of slice
        Where that box lies in the working grid.
    voxel : (3,) ndarray
        Voxel size, mm.
    kernel : (X, Y, Z//2+1) array
        Dipole kernel on the rfft half-grid.
    mask : (X, Y, Z) bool array
        The mask on the working grid.
    """

    xp: ModuleType
    dtype: np.dtype
    input_shape: tuple[int, ...]
    shape: tuple[int, ...]
    source: tuple[slice, ...]
    target: tuple[slice, ...]
    voxel: np.ndarray
    kernel: Array
    mask: Array

    @property
    def fft(self):
        return backend.fft(self.xp)

    def embed(self, volume: Array, fill: float = 0.0) -> Array:
        """The caller's volume cropped to the mask box and placed in the working grid."""
        out = self.xp.full(self.shape, fill, dtype=self.dtype)
        out[self.target] = self.xp.asarray(volume[self.source], dtype=self.dtype)
        return out

    def extract(self, volume: Array, mask: Array) -> Array:
        """A working-grid volume back on the caller's grid, zero outside ``mask``."""
        out = self.xp.zeros(self.input_shape, dtype=self.dtype)
        out[self.source] = volume[self.target]
        out *= mask
        return out

    def rfft(self, x: Array) -> Array:
        return self.fft.rfftn(x)

    def irfft(self, x: Array) -> Array:
        return self.fft.irfftn(x, s=self.shape).astype(self.dtype, copy=False)

    def dipole(self, x: Array) -> Array:
        """``F⁻¹ D F x`` (self-adjoint)."""
        return self.irfft(self.kernel * self.rfft(x))

    def grad(self, x: Array) -> Array:
        return gradient(x, self.voxel, "periodic")

    def grad_adjoint(self, g: Array) -> Array:
        return -divergence(g, self.voxel, "periodic")

    def laplacian_symbol(self) -> Array:
        """``Σ_i |E_i(k)|²`` of the forward differences on the rfft half-grid, 1/mm²."""
        e = gradient_kernel(self.shape, self.voxel, xp=self.xp, dtype=np.complex128)
        half = (e.real**2 + e.imag**2).sum(axis=0)[..., : self.shape[-1] // 2 + 1]
        return half.astype(self.dtype)

    def dipole_operator(self) -> LinearOperator:
        return LinearOperator(self.dipole, self.dipole, "dipole convolution")

    def gradient_operator(self) -> LinearOperator:
        return LinearOperator(self.grad, self.grad_adjoint, "forward-difference gradient")


def real_dtype(x: Array) -> np.dtype:
    """float64 for float64 input, float32 otherwise (the device default)."""
    return np.dtype(np.float64) if np.dtype(x.dtype) == np.float64 else np.dtype(np.float32)


def check_inputs(local_field_ppm: Array, mask: Array, voxel_size_mm: ArrayLike,
                 b0_dir: ArrayLike) -> tuple[ModuleType, Array, Array, np.ndarray, np.ndarray]:
    """Validate the common inputs; return ``(xp, field, mask, voxel, b0)``.

    Raises
    ------
    QSMInputError
        For a field that is not 3-D, a mask of another shape or an empty mask, non-finite
        field values inside the mask, or a bad voxel size / B0 direction.
    """
    xp = backend.get_array_module(local_field_ppm)
    field = local_field_ppm
    if field.ndim != 3:
        raise QSMInputError(f"local field must be 3-D, got shape {tuple(field.shape)}",
                            field="local_field_ppm")
    if np.iscomplexobj(field):
        raise QSMInputError("local field must be real (ppm)", field="local_field_ppm")
    mask_arr = xp.asarray(mask)
    if tuple(mask_arr.shape) != tuple(field.shape):
        raise QSMInputError(f"mask shape {tuple(mask_arr.shape)} does not match the field "
                            f"shape {tuple(field.shape)}", field="mask")
    mask_arr = mask_arr != 0
    if not bool(mask_arr.any()):
        raise QSMInputError("mask is empty", field="mask")
    dtype = real_dtype(field)
    field = field.astype(dtype, copy=False)
    if not bool(xp.isfinite(field[mask_arr]).all()):
        raise QSMInputError("local field has non-finite values inside the mask",
                            field="local_field_ppm")
    voxel = np.asarray(voxel_size_mm, dtype=np.float64).reshape(-1)
    if voxel.shape != (3,) or not np.all(np.isfinite(voxel)) or np.any(voxel <= 0):
        raise QSMInputError(f"voxel_size_mm must be 3 positive values, got {voxel_size_mm!r}",
                            field="voxel_size_mm")
    b0 = np.asarray(b0_dir, dtype=np.float64).reshape(-1)
    if b0.shape != (3,) or not np.all(np.isfinite(b0)) or np.linalg.norm(b0) == 0:
        raise QSMInputError(f"b0_dir must be a non-zero 3-vector, got {b0_dir!r}",
                            field="b0_dir")
    return xp, field, mask_arr, voxel, b0 / np.linalg.norm(b0)


def check_weight(weight: Array | None, field: Array, mask: Array, name: str = "weight") -> Array:
    """A data weight on the caller's grid: ``weight / mean(weight[mask])``, zero outside the mask.

    ``None`` gives the mask itself (uniform weight).

    Raises
    ------
    QSMInputError
        For a shape mismatch, negative or non-finite values, or a weight that is zero in
        the whole mask.
    """
    xp = backend.get_array_module(field)
    dtype = field.dtype
    if weight is None:
        return mask.astype(dtype)
    w = xp.asarray(weight).astype(dtype, copy=False)
    if tuple(w.shape) != tuple(field.shape):
        raise QSMInputError(f"{name} shape {tuple(w.shape)} does not match the field shape "
                            f"{tuple(field.shape)}", field=name)
    inside = w[mask]
    if not bool(xp.isfinite(inside).all()) or bool((inside < 0).any()):
        raise QSMInputError(f"{name} must be finite and non-negative inside the mask",
                            field=name)
    mean = float(inside.mean())
    if mean <= 0:
        raise QSMInputError(f"{name} is zero everywhere inside the mask", field=name)
    return xp.where(mask, w / dtype.type(mean), dtype.type(0))


def positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """``float(value)``; QSMConfigError unless finite and positive (or zero if allowed)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise QSMConfigError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        raise QSMConfigError(f"{name} must be {'non-negative' if allow_zero else 'positive'}, "
                             f"got {value!r}")
    return number


def positive_int(name: str, value: Any, *, allow_zero: bool = False) -> int:
    """``int(value)``; QSMConfigError unless a positive (or, if allowed, zero) integer."""
    try:
        valid = not isinstance(value, bool) and int(value) == value >= (0 if allow_zero else 1)
    except (TypeError, ValueError):
        valid = False
    if not valid:
        kind = "non-negative" if allow_zero else "positive"
        raise QSMConfigError(f"{name} must be a {kind} integer, got {value!r}")
    return int(value)


def make_grid(field: Array, mask: Array, voxel: np.ndarray, b0: np.ndarray, *,
              pad_fraction: float = DEFAULT_PAD_FRACTION,
              min_pad: int = DEFAULT_MIN_PAD) -> Grid:
    """The working grid of ``mask`` (bounding box, padding, fast FFT sizes) and its kernel."""
    xp = backend.get_array_module(field)
    pad_fraction = positive("pad_fraction", pad_fraction, allow_zero=True)
    if isinstance(min_pad, bool) or int(min_pad) != min_pad or min_pad < 0:
        raise QSMConfigError(f"min_pad must be a non-negative integer, got {min_pad!r}")
    fft = backend.fft(xp)
    source, target, shape = [], [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        profile = backend.to_numpy(mask.any(axis=other))
        hits = np.flatnonzero(profile)
        lo, hi = int(hits[0]), int(hits[-1]) + 1
        extent = hi - lo
        pad = max(int(min_pad), math.ceil(pad_fraction * extent))
        n = int(fft.next_fast_len(extent + 2 * pad))
        offset = (n - extent) // 2
        source.append(slice(lo, hi))
        target.append(slice(offset, offset + extent))
        shape.append(n)
    shape_t = tuple(shape)
    dtype = real_dtype(field)
    kernel = dipole_kernel(shape_t, voxel, b0, xp=xp, dtype=np.float64)
    # D(-k): index reversal modulo n; differs from D(k) only on even-size Nyquist planes
    mirrored = kernel
    for axis in range(3):
        mirrored = xp.roll(xp.flip(mirrored, axis=axis), 1, axis=axis)
    kernel = 0.5 * (kernel + mirrored)
    kernel = kernel[..., : shape_t[-1] // 2 + 1].astype(dtype)
    grid = Grid(xp=xp, dtype=dtype, input_shape=tuple(field.shape), shape=shape_t,
                source=tuple(source), target=tuple(target), voxel=voxel, kernel=kernel,
                mask=xp.zeros(shape_t, dtype=bool))
    grid.mask[grid.target] = mask[grid.source]
    return grid


def relative_change(xp: ModuleType, new: Array, old: Array) -> float:
    """``||new - old|| / ||new||`` (inf when ``new`` is zero)."""
    denominator = float(xp.linalg.norm(new.ravel()))
    if denominator == 0:
        return math.inf
    return float(xp.linalg.norm((new - old).ravel())) / denominator


def _device_relative_change(xp: ModuleType, new: Array, old: Array) -> Array:
    """:func:`relative_change` as a 0-d float64 device array (no host sync), rounded as the
    host version is: both norms in the array's precision, their ratio in float64."""
    denominator = xp.linalg.norm(new.ravel()).astype(xp.float64)
    numerator = xp.linalg.norm((new - old).ravel()).astype(xp.float64)
    zero = denominator == 0
    return xp.where(zero, xp.inf, numerator / xp.where(zero, 1.0, denominator))


class RelativeChangeStop:
    """The stopping rule ``||x_k − x_{k−1}|| / ||x_k|| <= tol`` of an iteration, tested on the
    host every :func:`qsmliver.backend.convergence_check_interval` iterations.

    With an interval of 1 (NumPy) the test runs on the host at every iteration. With a longer
    one (CuPy) the change is computed on the device at every iteration, and a device flag
    keeps the iterate, the change and the count of the first iteration that passes, so the
    iteration may run on until the next host check but returns what the every-iteration test
    would have: the same result on both backends, with one host sync per interval.

    Parameters
    ----------
    xp : module
    tol : float
    max_iter : int
    every : int, optional
        Check interval (default from the backend).
    """

    def __init__(self, xp: ModuleType, tol: float, max_iter: int,
                 every: int | None = None) -> None:
        self.xp, self.tol, self.max_iter = xp, float(tol), int(max_iter)
        self.every = backend.convergence_check_interval(xp) if every is None else int(every)
        self.change: Any = math.inf
        self.iterations = 0
        self._active: Any = True
        self._counted: Any = 0
        self._kept: Array | None = None

    def stop(self, iteration: int, new: Array, old: Array) -> bool:
        """Record iteration ``iteration`` (from 1), which moved the iterate from ``old`` to
        ``new``; True when the loop should end here (converged, or at ``max_iter``)."""
        xp = self.xp
        last = iteration == self.max_iter
        if self.every == 1:
            self.iterations, self._kept = iteration, new
            self.change = relative_change(xp, new, old)
            return self.change <= self.tol or last
        current = _device_relative_change(xp, new, old)
        active = self._active
        self._counted = self._counted + active
        if self._kept is None:  # the first iteration is always active
            self._kept, self.change = new, current
        else:
            self._kept = xp.where(active, new, self._kept)
            self.change = xp.where(active, current, self.change)
        self._active = active & ~(current <= self.tol)
        if not (iteration % self.every == 0 or last):
            return False
        if bool(self._active) and not last:
            return False
        self.iterations = int(self._counted)
        self.change = float(self.change)
        return True

    @property
    def result(self) -> Array:
        """The iterate at the stopping iteration."""
        return self._kept

    @property
    def converged(self) -> bool:
        """Whether the change reached ``tol``."""
        return float(self.change) <= self.tol


def finite_or_raise(xp: ModuleType, x: Array, stage: str) -> None:
    """QSMNumericalError when ``x`` has NaN or inf values."""
    from qsmliver.errors import QSMNumericalError

    if not bool(xp.isfinite(x).all()):
        raise QSMNumericalError(stage, "the estimate became non-finite")
