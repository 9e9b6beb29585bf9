"""Deflation spaces for conjugate gradients over a sequence of related systems.

A nonlinear solver that linearises at every outer step (lagged diffusivity, as in TFI)
solves a sequence of symmetric positive (semi-)definite systems ``A_k x = b_k`` whose
operators change little from one step to the next. When CG is truncated, what it leaves
unsolved lies along the eigenvectors of the smallest eigenvalues, and the updates of the
previous steps span much of that slow subspace. Deflated CG (Saad Y, Yeung M, Erhel J,
Guyomarc'h F. A deflated version of the conjugate gradient algorithm. SIAM J Sci Comput
2000;21:1909-1926) takes such a subspace ``Z`` (``k`` vectors):

- it starts from the Galerkin solution in ``Z``, ``x₀ = Z E⁺ Zᵀ r`` with ``E = Zᵀ A Z`` (the
  projection of Fischer, Projection techniques for iterative solution of Ax = b with
  successive right-hand sides, Comput Methods Appl Mech Eng 1998;163:193-204), so that the
  residual is orthogonal to ``Z``;
- it keeps every search direction A-orthogonal to ``Z``, ``p ← r + β p − Z E⁺ (A Z)ᵀ r``, so
  that the residual stays orthogonal to ``Z`` and CG works on the deflated operator, whose
  smallest eigenvalues (those captured by ``Z``) are removed.

Each iteration costs ``k`` inner products and ``k`` vector updates more than plain CG; the
space costs ``k`` products with ``A`` to build. ``E`` is inverted in double precision with a
relative eigenvalue cutoff, so that dependent vectors, or vectors in the null space of a
semi-definite ``A``, are ignored instead of producing a singular coarse system.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from qsmliver.backend import get_array_module, to_numpy
from qsmliver.errors import QSMConfigError

__all__ = ["DeflationSpace", "deflation_space"]

Array = Any

#: Eigenvalues of ``E = Zᵀ A Z`` below this fraction of the largest are dropped.
DEFAULT_DEFLATION_RCOND = 1e-6


@dataclasses.dataclass
class DeflationSpace:
    """A subspace ``Z`` with ``A Z`` and the pseudo-inverse of ``E = Zᵀ A Z``.

    Build it with :func:`deflation_space`; pass it to
    :func:`qsmliver.optim.conjugate_gradient` (``deflation=``).

    Attributes
    ----------
    basis : (k, N) array
        The vectors of ``Z``, flattened, unit norm, dtype and backend of the system.
    applied : (k, N) array
        ``A`` applied to each of them.
    coarse_inverse : (k, k) array
        Pseudo-inverse of ``E``, on the same backend and in the same dtype.
    rank : int
        Eigenvalues of ``E`` kept (at most ``k``).
    """

    basis: Array
    applied: Array
    coarse_inverse: Array
    rank: int

    @property
    def size(self) -> int:
        """Number of vectors ``k``."""
        return int(self.basis.shape[0])

    def coarse_correction(self, residual: Array) -> tuple[Array, Array]:
        """``(Z c, A Z c)`` with ``c = E⁺ Zᵀ r``: the correction that solves the system within
        ``Z``, and the change it makes to the residual."""
        coefficients = self.coarse_inverse @ (self.basis @ residual.ravel())
        return ((coefficients @ self.basis).reshape(residual.shape),
                (coefficients @ self.applied).reshape(residual.shape))

    def a_orthogonal_part(self, residual: Array) -> Array:
        """``Z E⁺ (A Z)ᵀ r``: subtracted from each search direction (A-orthogonal to ``Z``)."""
        coefficients = self.coarse_inverse @ (self.applied @ residual.ravel())
        return (coefficients @ self.basis).reshape(residual.shape)


def deflation_space(apply_a: Callable[[Array], Array], vectors: Sequence[Array], *,
                    rcond: float = DEFAULT_DEFLATION_RCOND) -> DeflationSpace | None:
    """Build the deflation space spanned by ``vectors`` for the operator ``apply_a``.

    Parameters
    ----------
    apply_a : callable
        ``x -> A x`` for a symmetric positive (semi-)definite real ``A``.
    vectors : sequence of arrays
        Vectors of the shape of the unknown (e.g. the updates of previous outer steps); zero
        vectors are skipped, the others are normalised.
    rcond : float
        Relative eigenvalue cutoff of the pseudo-inverse of ``E = Zᵀ A Z``.

    Returns
    -------
    DeflationSpace or None
        None when no vector is left (all zero) or ``E`` has no eigenvalue above the cutoff.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.diag([1e-4, 1.0, 2.0, 3.0])
    >>> space = deflation_space(lambda x: a @ x, [np.array([1.0, 0, 0, 0])])
    >>> correction, change = space.coarse_correction(np.array([1e-4, 0, 0, 0]))
    >>> correction
    array([1., 0., 0., 0.])
    """
    if not (0.0 < rcond < 1.0):
        raise QSMConfigError(f"rcond must be in (0, 1), got {rcond!r}")
    kept, norms = [], []
    for vector in vectors:
        norm = float(get_array_module(vector).linalg.norm(vector.ravel()))
        if norm > 0.0 and np.isfinite(norm):
            kept.append(vector)
            norms.append(norm)
    if not kept:
        return None
    xp = get_array_module(kept[0])
    if np.dtype(kept[0].dtype).kind != "f":
        raise QSMConfigError(f"deflation needs a real system, got dtype {kept[0].dtype}")
    basis = xp.stack([v.ravel() for v in kept])  # one copy, normalised in place
    basis /= xp.asarray(norms, dtype=basis.dtype)[:, None]
    shape = kept[0].shape
    applied = xp.stack([apply_a(row.reshape(shape)).ravel() for row in basis])
    coarse = basis @ applied.T
    coarse = to_numpy(coarse).astype(np.float64)
    coarse = 0.5 * (coarse + coarse.T)
    values, vecs = np.linalg.eigh(coarse)
    top = float(values.max())
    if not top > 0.0:
        return None
    keep = values > rcond * top
    inverse = (vecs[:, keep] / values[keep]) @ vecs[:, keep].T
    return DeflationSpace(basis=basis, applied=applied,
                          coarse_inverse=xp.asarray(inverse.astype(basis.dtype)),
                          rank=int(keep.sum()))

