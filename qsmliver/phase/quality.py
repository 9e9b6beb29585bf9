"""Where a field map cannot be trusted: spatial aliasing of the field between neighbours."""

from __future__ import annotations

from typing import Any

from qsmliver.backend import get_array_module
from qsmliver.errors import QSMInputError

__all__ = ["aliased_voxels"]

Array = Any


def aliased_voxels(field_hz: Array, mask: Array, aliasing_period_hz: float, *,
                   fraction: float = 0.25) -> Array:
    """Mask voxels whose field differs from a face neighbour by a large part of a period.

    Spatial unwrapping assumes that the field changes between neighbouring voxels by less
    than half the aliasing period ``1/ΔTE`` (Itoh's condition). Next to strong sources (air in
    the sinuses, bone) the true field can change faster than that, and then no spatial
    unwrapper can tell ``f`` from ``f ± 1/ΔTE``: the voxel is wrong by whole periods, a
    2 ppm-scale error at 3 T that background removal spreads over its kernel radius. Such
    voxels are recognised by a difference to a neighbour (inside the mask) above
    ``fraction · period``, whether they were unwrapped right or wrong; both voxels of the pair
    are returned. This is the gradient-coherence idea of ROMEO's quality map (Dymerska et al.,
    MRM 2021;85:2294), applied after unwrapping as a hard exclusion.

    Parameters
    ----------
    field_hz : (X, Y, Z) float array
        Unwrapped field, Hz.
    mask : (X, Y, Z) bool array
        Where the field is defined.
    aliasing_period_hz : float
        ``1/ΔTE`` of the echoes the field came from, Hz.
    fraction : float
        Threshold as a fraction of the period, in (0, 0.5]. With the default 0.25 every
        neighbour pair across a whole-period error is caught: the observed difference is
        ``t ± P`` for a true difference ``t``, and ``|t ± P| >= 3P/4`` when ``|t| < P/4``.

    Returns
    -------
    (X, Y, Z) bool array
        Unreliable voxels (inside ``mask``).

    Examples
    --------
    >>> import numpy as np
    >>> field = np.zeros((4, 4, 4)); field[1, 1, 1] = 100.0
    >>> int(aliased_voxels(field, np.ones((4, 4, 4), bool), 200.0).sum())
    7
    """
    if not 0 < fraction <= 0.5:
        raise QSMInputError(f"fraction must be in (0, 0.5], got {fraction}", field="fraction")
    if not aliasing_period_hz > 0:
        raise QSMInputError(f"the aliasing period must be positive, got {aliasing_period_hz}",
                            field="aliasing_period_hz")
    xp = get_array_module(field_hz)
    inside = mask.astype(bool)
    limit = fraction * aliasing_period_hz
    flagged = xp.zeros(inside.shape, dtype=bool)
    for axis in range(field_hz.ndim):
        size = field_hz.shape[axis]
        if size < 2:
            continue
        lower = [slice(None)] * field_hz.ndim
        upper = [slice(None)] * field_hz.ndim
        lower[axis], upper[axis] = slice(0, size - 1), slice(1, size)
        lower, upper = tuple(lower), tuple(upper)
        jump = (xp.abs(field_hz[upper] - field_hz[lower]) > limit) & inside[upper] & inside[lower]
        flagged[lower] |= jump
        flagged[upper] |= jump
    return flagged
