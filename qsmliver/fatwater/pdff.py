"""Proton-density fat fraction with magnitude discrimination.

Magnitude discrimination (Liu CY, McKenzie CA, Yu H, Brittain JH, Reeder SB. Fat
quantification with IDEAL gradient echo imaging: correction of bias from T1 and noise. MRM
2007;58:354-364) removes the noise bias of the fat fraction at low fractions: the magnitude of
the weaker species is biased upwards by noise (Rician floor), so the fraction is computed from
the dominant species and the magnitude of the complex sum ``W + F`` (DESIGN section 5)::

    water dominant (|F| <= |W|):  PDFF = 100 · (1 − |W| / |W + F|)
    fat dominant   (|F| >  |W|):  PDFF = 100 · |F| / |W + F|

The dominance test is ``|F| / (|W| + |F|) > 50 %``. Results are clipped to 0-100 % (noise can
make ``|W + F| < |W|``); voxels without signal get 0.
"""

from __future__ import annotations

from typing import Any

from qsmliver import backend
from qsmliver.errors import QSMInputError

__all__ = ["pdff_magnitude_discrimination"]

Array = Any


def pdff_magnitude_discrimination(water: Array, fat: Array) -> Array:
    """PDFF (percent) from complex water and fat amplitudes, with magnitude discrimination.

    Parameters
    ----------
    water, fat : ndarray
        Complex (or real) amplitudes of the same shape (NumPy or CuPy).

    Returns
    -------
    ndarray
        PDFF in percent, 0-100, real (float64 for complex128 input, float32 for complex64),
        same shape and backend as the input.

    Raises
    ------
    QSMInputError
        When the shapes differ.

    Examples
    --------
    >>> import numpy as np
    >>> pdff_magnitude_discrimination(np.array([0.8, 0.1, 0.0]), np.array([0.2, 0.9, 0.0]))
    array([20., 90.,  0.])
    """
    xp = backend.get_array_module(water, fat)
    w = xp.asarray(water)
    f = xp.asarray(fat)
    if w.shape != f.shape:
        raise QSMInputError(f"water {w.shape} and fat {f.shape} shapes differ", field="fat")
    mag_w, mag_f = xp.abs(w), xp.abs(f)
    total = xp.abs(w + f)
    safe = xp.where(total > 0, total, 1)
    fat_dominant = mag_f > mag_w
    fraction = xp.where(fat_dominant, mag_f / safe, 1.0 - mag_w / safe)
    fraction = xp.where(total > 0, fraction, 0.0)
    return xp.clip(100.0 * fraction, 0.0, 100.0)
