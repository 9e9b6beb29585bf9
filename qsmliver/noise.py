"""One noise level from many per-voxel fit residuals (robust to voxels the model misfits).

A fit of ``p`` real parameters to ``n`` real samples with Gaussian noise of standard deviation
``σ`` (per real component) leaves a residual sum of squares ``r² ~ σ² χ²_k``, ``k = n − p``.
With few echoes ``k`` is small, so one voxel's ``r²`` is a poor estimate of ``σ²``; the
median over many voxels, divided by the median of ``χ²_k``, is unbiased for Gaussian noise and
ignores the minority of voxels (edges, vessels, partial volume) where the model fails. The field
maps of :mod:`qsmliver.phase` and :mod:`qsmliver.fatwater` multiply their a-priori
(Cramér-Rao) standard deviation by this level to get data weights in Hz.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import chi2

from qsmliver.backend import get_array_module

Array = Any

__all__ = ["residual_noise_level"]


def residual_noise_level(residual_sq: Array, dof: int) -> float:
    """Noise standard deviation per real component from residual sums of squares.

    ``σ̂ = sqrt(median(r²) / median(χ²_k))``.

    Parameters
    ----------
    residual_sq : (V,) array
        Residual sum of squares ``||S − model||²`` of V voxels (NumPy or CuPy), in signal
        units squared; non-finite values are ignored.
    dof : int
        Residual degrees of freedom ``k`` (real samples minus real parameters).

    Returns
    -------
    float
        ``σ̂`` in signal units, or 1.0 where no level can be estimated (``k < 1``, no finite
        residual, or an exact fit with a zero median): the caller's map is then relative.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> r2 = (rng.normal(scale=0.5, size=(20000, 4)) ** 2).sum(axis=1)
    >>> round(residual_noise_level(r2, 4), 2)
    0.5
    """
    if dof < 1:
        return 1.0
    xp = get_array_module(residual_sq)
    values = residual_sq.ravel()
    values = values[xp.isfinite(values)]
    if values.size == 0:
        return 1.0
    level = float(np.sqrt(float(xp.median(values)) / chi2.median(dof)))
    return level if np.isfinite(level) and level > 0 else 1.0
