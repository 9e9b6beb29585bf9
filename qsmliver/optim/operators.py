"""Linear operators shared by the iterative solvers: finite differences and adjoint checks.

Every operator here takes its array module from the data (NumPy or CuPy), so the same code runs
on the CPU and on a GPU. An iterative solver is only correct when the operator it is given and
the adjoint it is given agree, ``<A x, y> = <x, A^H y>``; :func:`adjointness_error` measures
that and the tests apply it to every operator a solver uses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from qsmliver.backend import get_array_module

__all__ = [
    "LinearOperator",
    "adjointness_error",
    "divergence",
    "gradient",
    "gradient_kernel",
]

Array = Any


@dataclasses.dataclass(frozen=True)
class LinearOperator:
    """A linear map given by its action and the action of its adjoint.

    Parameters
    ----------
    forward : callable
        ``x -> A x``.
    adjoint : callable
        ``y -> A^H y``.
    name : str
        For messages.
    """

    forward: Callable[[Array], Array]
    adjoint: Callable[[Array], Array]
    name: str = "A"

    def __call__(self, x: Array) -> Array:
        return self.forward(x)

    def normal(self, x: Array) -> Array:
        """``A^H A x``."""
        return self.adjoint(self.forward(x))


def _inner(xp: ModuleType, a: Array, b: Array) -> complex:
    return complex(xp.vdot(a.ravel(), b.ravel()))


def adjointness_error(op: LinearOperator, x: Array, y: Array) -> float:
    """Relative mismatch ``|<A x, y> - <x, A^H y>| / (||A x|| ||y||)`` of an operator pair.

    Parameters
    ----------
    op : LinearOperator
    x, y : arrays
        Test vectors in the domain and range of ``op`` (random ones in the tests).

    Returns
    -------
    float
        About machine precision (≈1e-15 in float64) for a correct adjoint.
    """
    xp = get_array_module(x)
    ax = op.forward(x)
    aty = op.adjoint(y)
    lhs = _inner(xp, ax, y)
    rhs = _inner(xp, x, aty)
    scale = float(xp.linalg.norm(ax.ravel())) * float(xp.linalg.norm(y.ravel()))
    return abs(lhs - rhs) / max(scale, np.finfo(float).tiny)


def _voxel(voxel_size_mm: ArrayLike | None, ndim: int) -> np.ndarray:
    if voxel_size_mm is None:
        return np.ones(ndim)
    voxel = np.asarray(voxel_size_mm, dtype=float).reshape(-1)
    if voxel.size != ndim or np.any(voxel <= 0):
        raise ValueError(f"voxel_size_mm must be {ndim} positive values, got {voxel_size_mm}")
    return voxel


def gradient(x: Array, voxel_size_mm: ArrayLike | None = None,
             boundary: str = "periodic") -> Array:
    """Forward-difference gradient of a 3-D volume, per mm.

    Parameters
    ----------
    x : (X, Y, Z) array
    voxel_size_mm : (3,) array_like, optional
        Grid spacing; differences are divided by it (default 1).
    boundary : {"periodic", "neumann"}
        "periodic" wraps around (diagonal in k-space, see :func:`gradient_kernel`);
        "neumann" sets the difference across the last face to zero.

    Returns
    -------
    (3, X, Y, Z) array
        ``∂x/∂axis_i`` for i = 0, 1, 2.
    """
    xp = get_array_module(x)
    voxel = _voxel(voxel_size_mm, x.ndim)
    if boundary not in ("periodic", "neumann"):
        raise ValueError(f"boundary must be 'periodic' or 'neumann', got {boundary!r}")
    if x.dtype.kind not in "fc":
        return gradient(x.astype(np.float64), voxel, boundary)
    # Differences of slices written into one preallocated output (the values of
    # ``roll(x, -1) - x``, without its copies): the inversions' inner loops are memory bound.
    out = xp.empty((x.ndim, *x.shape), dtype=x.dtype)
    for axis in range(x.ndim):
        part = out[axis]
        xp.subtract(_along(x, axis, 1, None), _along(x, axis, None, -1),
                    out=_along(part, axis, None, -1))
        last = _along(part, axis, -1, None)
        if boundary == "neumann":
            last[...] = 0
        else:
            xp.subtract(_along(x, axis, None, 1), _along(x, axis, -1, None), out=last)
        part /= x.dtype.type(voxel[axis])
    return out


def _along(x: Array, axis: int, start: int | None, stop: int | None) -> Array:
    """``x[..., start:stop, ...]`` with the slice on ``axis``."""
    index = [slice(None)] * x.ndim
    index[axis] = slice(start, stop)
    return x[tuple(index)]


def divergence(g: Array, voxel_size_mm: ArrayLike | None = None,
               boundary: str = "periodic") -> Array:
    """Backward-difference divergence, the negative adjoint of :func:`gradient`.

    ``<gradient(x), g> = -<x, divergence(g)>`` for the same ``voxel_size_mm`` and
    ``boundary``.

    Parameters
    ----------
    g : (3, X, Y, Z) array
    voxel_size_mm : (3,) array_like, optional
    boundary : {"periodic", "neumann"}

    Returns
    -------
    (X, Y, Z) array
    """
    xp = get_array_module(g)
    ndim = g.ndim - 1
    voxel = _voxel(voxel_size_mm, ndim)
    if boundary not in ("periodic", "neumann"):
        raise ValueError(f"boundary must be 'periodic' or 'neumann', got {boundary!r}")
    out = xp.zeros_like(g[0])
    term = xp.empty_like(g[0])
    for axis in range(ndim):
        # ``c − roll(c, 1)`` of the component c (its last face zeroed for "neumann"),
        # written from slices into one buffer
        component = g[axis]
        xp.subtract(_along(component, axis, 1, None), _along(component, axis, None, -1),
                    out=_along(term, axis, 1, None))
        first = _along(term, axis, None, 1)
        if boundary == "neumann":
            first[...] = _along(component, axis, None, 1)
            if component.shape[axis] > 1:
                xp.subtract(0, _along(component, axis, -2, -1), out=_along(term, axis, -1, None))
            else:
                first[...] = 0
        else:
            xp.subtract(_along(component, axis, None, 1), _along(component, axis, -1, None),
                        out=first)
        term /= g.dtype.type(voxel[axis])
        out += term
    return out


def gradient_kernel(shape: Sequence[int], voxel_size_mm: ArrayLike | None = None,
                    xp: ModuleType = np, dtype: Any = np.complex128) -> Array:
    """k-space transfer functions of the periodic forward differences of :func:`gradient`.

    ``fftn(gradient(x)[i]) = gradient_kernel(...)[i] * fftn(x)`` exactly, with
    ``E_i(k) = (exp(2πi k_i / N_i) - 1) / Δ_i``; ``Σ_i |E_i|²`` is the discrete Laplacian's
    symbol, used by closed-form Tikhonov and the ADMM x-updates.

    Parameters
    ----------
    shape : (3,) sequence of int
    voxel_size_mm : (3,) array_like, optional
    xp : module
    dtype : complex dtype

    Returns
    -------
    (3, X, Y, Z) complex array
    """
    shape = tuple(int(n) for n in shape)
    voxel = _voxel(voxel_size_mm, len(shape))
    kernels = []
    for axis, n in enumerate(shape):
        k = xp.arange(n, dtype=xp.float64)
        e = (xp.exp(2j * np.pi * k / n) - 1.0) / voxel[axis]
        view = [1] * len(shape)
        view[axis] = n
        kernels.append(xp.broadcast_to(e.reshape(view), shape))
    return xp.stack(kernels).astype(dtype)
