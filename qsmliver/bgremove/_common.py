"""Input validation and grid helpers shared by the background-removal methods (private).

Every method validates its inputs here in the same way (DESIGN section 4): a 3-D real field, a
mask of the same shape that is not empty, a finite field inside the mask, three positive voxel
sizes, a non-zero B0 direction and a non-negative weight. Values of the field outside the mask
are never used (they may be NaN) and are set to zero.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from qsmliver import backend
from qsmliver.errors import QSMConfigError, QSMInputError

Array = Any


@dataclasses.dataclass
class Inputs:
    """Validated inputs of one background-removal call."""

    xp: ModuleType
    field: Array  # (X, Y, Z) float32/float64, zero outside the mask
    mask: Array  # (X, Y, Z) bool, not empty
    voxel: np.ndarray  # (3,) float64, mm
    b0: np.ndarray | None  # (3,) unit vector or None
    weight: Array | None  # (X, Y, Z) field dtype, >= 0, zero outside the mask
    dtype: np.dtype


def prepare(
    field_ppm: Array,
    mask: Array,
    voxel_size_mm: ArrayLike,
    *,
    b0_dir: ArrayLike | None = None,
    weight: Array | None = None,
) -> Inputs:
    """Validate and normalise the common inputs; raise :class:`QSMInputError` when bad."""
    xp = backend.get_array_module(field_ppm)
    field = xp.asarray(field_ppm)
    if field.ndim != 3:
        raise QSMInputError(f"the field must be a 3-D array, got shape {field.shape}",
                            field="field_ppm")
    if field.dtype.kind == "c":
        raise QSMInputError("the field must be real (ppm), got a complex array",
                            field="field_ppm")
    if field.dtype.kind not in "fiub":
        raise QSMInputError(f"the field must be numeric, got dtype {field.dtype}",
                            field="field_ppm")
    dtype = field.dtype if field.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    field = field.astype(dtype, copy=False)

    mask_arr = xp.asarray(mask)
    if mask_arr.shape != field.shape:
        raise QSMInputError(
            f"mask shape {mask_arr.shape} does not match the field shape {field.shape}",
            field="mask")
    mask_arr = mask_arr != 0
    if not bool(mask_arr.any()):
        raise QSMInputError("the mask is empty", field="mask")
    if not bool(xp.isfinite(field[mask_arr]).all()):
        raise QSMInputError("the field has non-finite values inside the mask",
                            field="field_ppm")
    field = xp.where(mask_arr, field, dtype.type(0))

    voxel = np.asarray(voxel_size_mm, dtype=np.float64).reshape(-1)
    if voxel.size != 3 or not np.all(np.isfinite(voxel)) or np.any(voxel <= 0):
        raise QSMInputError(f"voxel_size_mm must be 3 positive numbers (mm), got "
                            f"{voxel_size_mm!r}", field="voxel_size_mm")

    b0 = None
    if b0_dir is not None:
        b0 = np.asarray(b0_dir, dtype=np.float64).reshape(-1)
        norm = float(np.linalg.norm(b0)) if b0.size == 3 else 0.0
        if b0.size != 3 or not np.isfinite(norm) or norm == 0:
            raise QSMInputError(f"b0_dir must be a non-zero 3-vector, got {b0_dir!r}",
                                field="b0_dir")
        b0 = b0 / norm

    w = None
    if weight is not None:
        w = xp.asarray(weight)
        if w.shape != field.shape:
            raise QSMInputError(
                f"weight shape {w.shape} does not match the field shape {field.shape}",
                field="weight")
        if w.dtype.kind not in "fiub":
            raise QSMInputError(f"weight must be real, got dtype {w.dtype}", field="weight")
        w = w.astype(dtype, copy=False)
        inside = w[mask_arr]
        if not bool(xp.isfinite(inside).all()) or bool((inside < 0).any()):
            raise QSMInputError("weight must be finite and >= 0 inside the mask",
                                field="weight")
        if not bool((inside > 0).any()):
            raise QSMInputError("weight is zero everywhere inside the mask", field="weight")
        w = xp.where(mask_arr, w, dtype.type(0))
    return Inputs(xp=xp, field=field, mask=mask_arr, voxel=voxel, b0=b0, weight=w,
                  dtype=np.dtype(dtype))


def positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; :class:`QSMConfigError` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise QSMConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def positive_float(name: str, value: Any, *, maximum: float | None = None,
                   allow_zero: bool = False) -> float:
    """``value`` as a finite float > 0 (or >= 0) and <= ``maximum``; QSMConfigError otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise QSMConfigError(f"{name} must be a number, got {value!r}") from None
    low_ok = number >= 0 if allow_zero else number > 0
    if not math.isfinite(number) or not low_ok or (maximum is not None and number > maximum):
        bound = ">= 0" if allow_zero else "> 0"
        upper = f" and <= {maximum}" if maximum is not None else ""
        raise QSMConfigError(f"{name} must be {bound}{upper}, got {value!r}")
    return number


def fast_shape(shape: Sequence[int], extra: Sequence[int], xp: ModuleType) -> tuple[int, ...]:
    """Each ``shape[i] + extra[i]`` rounded up to a fast FFT length."""
    fft = backend.fft(xp)
    return tuple(int(fft.next_fast_len(int(n) + int(e)))
                 for n, e in zip(shape, extra, strict=True))


def crop(x: Array, shape: Sequence[int]) -> Array:
    """The leading ``shape`` block of ``x`` (undoes the end padding of ``rfftn(s=...)``)."""
    return x[: shape[0], : shape[1], : shape[2]]


def eroded_or_error(mask: Array, what: str) -> Array:
    """``mask`` unchanged; :class:`QSMInputError` when the erosion emptied it."""
    if not bool(mask.any()):
        raise QSMInputError(f"the mask is empty after {what}: it is too small for this method "
                            "and its parameters", field="mask")
    return mask

