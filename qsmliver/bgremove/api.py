"""One entry point for every background-removal method, with a JSON-ready record of the run."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from numpy.typing import ArrayLike

from qsmliver.bgremove._common import positive_float, positive_int, prepare
from qsmliver.bgremove.lbv import _lbv
from qsmliver.bgremove.pdf import _pads, _pdf
from qsmliver.bgremove.resharp import _radius, _resharp
from qsmliver.bgremove.vsharp import _radii, _vsharp
from qsmliver.errors import QSMConfigError

__all__ = ["METHODS", "BackgroundRemoval", "remove_background"]

Array = Any

#: Method names accepted by :func:`remove_background` (the first is the default).
METHODS: tuple[str, ...] = ("vsharp", "pdf", "lbv", "resharp")

#: Options each method accepts (keyword arguments of the public function) and defaults.
_OPTIONS: dict[str, dict[str, Any]] = {
    "vsharp": {"radii_mm": None, "threshold": 0.05},
    "pdf": {"max_iter": 500, "tol": 1e-4, "pad": 20},
    "lbv": {"tol": 1e-4, "max_iter": 2000, "peel": 1},
    "resharp": {"radius_mm": None, "lam": 1e-3, "max_iter": 200, "tol": 1e-4},
}


@dataclasses.dataclass
class BackgroundRemoval:
    """Result of :func:`remove_background`.

    Attributes
    ----------
    local_field_ppm : (X, Y, Z) ndarray
        Local field, ppm, zero outside ``mask``; dtype and array module of the input.
    mask : (X, Y, Z) bool ndarray
        The (possibly eroded) mask where ``local_field_ppm`` is valid.
    method : str
        One of :data:`METHODS`.
    parameters : dict
        JSON-serialisable: the options used (defaults resolved), iteration counts, residuals,
        voxel counts and the run time in seconds.
    """

    local_field_ppm: Array
    mask: Array
    method: str
    parameters: dict[str, Any]


def remove_background(
    field_ppm: Array,
    mask: Array,
    voxel_size_mm: ArrayLike,
    b0_dir: ArrayLike = (0.0, 0.0, 1.0),
    method: str = "vsharp",
    *,
    weight: Array | None = None,
    **options: Any,
) -> BackgroundRemoval:
    """Remove the background field with the named method.

    Parameters
    ----------
    field_ppm : (X, Y, Z) ndarray
        Total (unwrapped) field, ppm; NumPy or CuPy, float32 or float64.
    mask : (X, Y, Z) bool ndarray
        Region of interest.
    voxel_size_mm : (3,) array_like
        Voxel size, mm.
    b0_dir : (3,) array_like
        B0 direction in the voxel frame (used by PDF; validated for every method).
    method : str
        One of :data:`METHODS`: "vsharp" (:func:`~qsmliver.bgremove.vsharp`), "pdf",
        "lbv", "resharp".
    weight : (X, Y, Z) ndarray, optional
        Data reliability (>= 0). Used by PDF only; ``parameters["weighted"]`` says whether it
        was used.
    **options
        Keyword options of the method (see each function), e.g. ``tol=1e-4`` for LBV.

    Returns
    -------
    BackgroundRemoval

    Raises
    ------
    QSMConfigError
        Unknown method or option (the message lists the valid ones), bad option values.
    QSMInputError
        Bad or inconsistent inputs (shape mismatch, empty mask, ...).
    QSMNumericalError
        When an iterative solver fails.

    Examples
    --------
    >>> import numpy as np
    >>> grid = np.indices((24, 24, 24)) - 11.5
    >>> mask = (grid ** 2).sum(axis=0) < 10 ** 2
    >>> result = remove_background(0.01 * grid[2], mask, (1, 1, 1), method="lbv", tol=1e-8)
    >>> result.method, bool(np.abs(result.local_field_ppm).max() < 1e-6)
    ('lbv', True)
    """
    if not isinstance(method, str) or method.lower() not in _OPTIONS:
        raise QSMConfigError(f"unknown background removal method {method!r}; "
                             f"valid: {', '.join(METHODS)}")
    method = method.lower()
    allowed = _OPTIONS[method]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise QSMConfigError(f"unknown option(s) {unknown} for method {method!r}; "
                             f"valid: {', '.join(allowed) or 'none'}")
    settings = {**allowed, **options}
    used_weight = weight if method == "pdf" else None
    inputs = prepare(field_ppm, mask, voxel_size_mm, b0_dir=b0_dir, weight=used_weight)
    start = time.perf_counter()
    if method == "vsharp":
        radii = _radii(settings["radii_mm"], inputs.voxel)
        threshold = positive_float("threshold", settings["threshold"], maximum=0.999)
        local, out_mask, info = _vsharp(inputs, radii, threshold)
    elif method == "pdf":
        local, out_mask, info = _pdf(
            inputs, positive_int("max_iter", settings["max_iter"]),
            positive_float("tol", settings["tol"], maximum=1.0),
            _pads(settings["pad"]))
    elif method == "lbv":
        local, out_mask, info = _lbv(
            inputs, positive_float("tol", settings["tol"], maximum=1.0),
            positive_int("max_iter", settings["max_iter"]),
            positive_int("peel", settings["peel"], minimum=0))
    else:
        radius = _radius(settings["radius_mm"], inputs.voxel)
        local, out_mask, info = _resharp(
            inputs, radius, positive_float("lam", settings["lam"]),
            positive_int("max_iter", settings["max_iter"]),
            positive_float("tol", settings["tol"], maximum=1.0))
    parameters = {
        "method": method,
        **info,
        "weighted": used_weight is not None,
        "weight_ignored": weight is not None and used_weight is None,
        "voxel_size_mm": [float(v) for v in inputs.voxel],
        "b0_dir": None if inputs.b0 is None else [float(v) for v in inputs.b0],
        "dtype": str(inputs.dtype),
        "seconds": round(time.perf_counter() - start, 4),
    }
    return BackgroundRemoval(local, out_mask, method, parameters)
