"""Multi-echo phase to field map: phase offset removal, unwrapping, field estimation.

:func:`estimate_field` is the stage the pipeline calls; the pieces are public for users who
compose their own chain:

- :mod:`qsmliver.phase.offset` -- MCPC-3D-S phase offset (φ0) removal;
- :mod:`qsmliver.phase.unwrap` -- Laplacian, quality-guided (ROMEO-like) and scikit-image
  spatial unwrapping, temporal unwrapping;
- :mod:`qsmliver.phase.field` -- weighted linear and nonlinear complex field fits with a noise
  map;
- :mod:`qsmliver.phase.quality` -- voxels whose field is spatially aliased (untrustworthy).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from qsmliver.backend import get_array_module
from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.phase.field import (
    FieldFit,
    field_noise_std_hz,
    fit_field_complex,
    fit_field_linear,
    unwrap_field,
)
from qsmliver.phase.offset import estimate_phase_offset, remove_phase_offset
from qsmliver.phase.quality import aliased_voxels
from qsmliver.phase.unwrap import (
    UNWRAP_METHODS,
    temporal_unwrap,
    unwrap,
    unwrap_laplacian,
    unwrap_quality_guided,
    unwrap_skimage,
    wrap_to_pi,
)

__all__ = [
    "FIELD_METHODS",
    "UNWRAP_METHODS",
    "FieldFit",
    "aliased_voxels",
    "estimate_field",
    "estimate_phase_offset",
    "field_noise_std_hz",
    "fit_field_complex",
    "fit_field_linear",
    "remove_phase_offset",
    "temporal_unwrap",
    "unwrap",
    "unwrap_field",
    "unwrap_laplacian",
    "unwrap_quality_guided",
    "unwrap_skimage",
    "wrap_to_pi",
]

#: Field estimators: "complex" (nonlinear complex fit, then spatial unwrapping of the field)
#: and "linear" (MCPC-3D-S offset removal, spatial + temporal unwrapping, weighted linear fit).
FIELD_METHODS = ("complex", "linear")

Array = Any


def estimate_field(signal: Array, te_s: ArrayLike, *, mask: Array | None = None,
                   voxel_size_mm: ArrayLike = (1.0, 1.0, 1.0), method: str = "complex",
                   unwrap_method: str = "quality") -> FieldFit:
    """Field map in Hz, and its noise map, from multi-echo complex GRE.

    Parameters
    ----------
    signal : (X, Y, Z, E) complex array
        Coil-combined multi-echo data (numpy or cupy).
    te_s : (E,) array_like
        Echo times, seconds.
    mask : (X, Y, Z) bool array, optional
        Where to unwrap (recommended: the object with signal).
    voxel_size_mm : (3,) array_like
    method : {"complex", "linear"}
        See :data:`FIELD_METHODS`. Single-echo data use ``φ/(2π TE)`` after spatial
        unwrapping, with no offset removal (φ0 is then part of the field).
    unwrap_method : {"quality", "laplacian", "skimage"}
        Spatial unwrapping. "laplacian" is not congruent: the field is then only correct up
        to a harmonic function, which background removal takes out.

    Returns
    -------
    FieldFit
        ``field_hz`` (0 outside the mask), ``noise_std_hz``, ``phase_offset_rad``.
    """
    if method not in FIELD_METHODS:
        raise QSMConfigError(f"unknown field method {method!r}; choose one of "
                             f"{', '.join(FIELD_METHODS)}")
    if unwrap_method not in UNWRAP_METHODS:
        raise QSMConfigError(f"unknown unwrapping method {unwrap_method!r}; choose one of "
                             f"{', '.join(UNWRAP_METHODS)}")
    xp = get_array_module(signal)
    te = np.asarray(te_s, dtype=float).reshape(-1)
    if signal.ndim != 4 or signal.shape[-1] != te.size:
        raise QSMInputError(f"signal shape {signal.shape} does not match {te.size} echo times",
                            field="signal")
    magnitude = xp.abs(signal)
    if te.size == 1:
        phase = unwrap(xp.angle(signal[..., 0]), unwrap_method, magnitude=magnitude[..., 0],
                       mask=mask, voxel_size_mm=voxel_size_mm)
        fit = fit_field_linear(phase[..., None], magnitude, te)
    elif method == "complex":
        fit = fit_field_complex(signal, te)
        fit.field_hz = unwrap_field(fit.field_hz, fit.aliasing_period_hz,
                                    method=unwrap_method, magnitude=magnitude[..., 0],
                                    mask=mask, voxel_size_mm=voxel_size_mm)
        fit.aliasing_period_hz = None
    else:
        offset = estimate_phase_offset(signal, te, mask=mask, voxel_size_mm=voxel_size_mm,
                                       unwrap_method="quality" if unwrap_method == "laplacian"
                                       else unwrap_method)
        corrected = remove_phase_offset(signal, offset)
        wrapped = xp.angle(corrected)
        if unwrap_method == "laplacian":
            unwrapped = xp.stack([unwrap_laplacian(wrapped[..., e], mask, voxel_size_mm)
                                  for e in range(te.size)], axis=-1)
        else:
            first = unwrap(wrapped[..., 0], unwrap_method, magnitude=magnitude[..., 0],
                           mask=mask)
            unwrapped = temporal_unwrap(wrapped, te, first)
        fit = fit_field_linear(unwrapped, magnitude, te)
        fit.phase_offset_rad = offset
    if mask is not None:
        inside = mask.astype(bool)
        fit.field_hz = xp.where(inside, fit.field_hz, 0).astype(fit.field_hz.dtype)
        fit.noise_std_hz = xp.where(inside, fit.noise_std_hz, xp.inf).astype(
            fit.field_hz.dtype)
        if fit.apriori_std_hz is not None:
            fit.apriori_std_hz = xp.where(inside, fit.apriori_std_hz, xp.inf).astype(
                fit.field_hz.dtype)
    return fit
