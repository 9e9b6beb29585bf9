"""One entry point for every dipole inversion: :func:`invert_dipole`."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
from collections.abc import Callable
from typing import Any

from numpy.typing import ArrayLike

from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.inversion._common import check_inputs
from qsmliver.inversion.closed_form import run_tikhonov, tkd
from qsmliver.inversion.lsqr_method import run_ilsqr
from qsmliver.inversion.medi import run_medi
from qsmliver.inversion.nonlinear import run_ndi
from qsmliver.inversion.tfi import run_tfi
from qsmliver.inversion.tv import run_tv_admm

__all__ = ["METHODS", "DipoleInversion", "invert_dipole"]

Array = Any


@dataclasses.dataclass
class DipoleInversion:
    """Result of :func:`invert_dipole`.

    Attributes
    ----------
    chi_ppm : (X, Y, Z) array
        Susceptibility, ppm, zero outside the mask (backend and dtype of the input field).
    method : str
        One of :data:`METHODS`.
    parameters : dict
        JSON-serialisable: every setting used (defaults included), iteration counts and
        final residuals/updates, for the output sidecar.
    """

    chi_ppm: Array
    method: str
    parameters: dict[str, Any]


def _run_tkd(field, mask, voxel, b0, **options):
    chi = tkd(field, mask, voxel, b0, **options)
    return chi, {}


_RUNNERS: dict[str, Callable[..., tuple[Array, dict[str, Any]]]] = {
    "tkd": _run_tkd,
    "tikhonov": run_tikhonov,
    "ilsqr": run_ilsqr,
    "tv_admm": run_tv_admm,
    "medi": run_medi,
    "ndi": run_ndi,
    "tfi": run_tfi,
}
_SIGNATURE_OF = {"tkd": tkd}

#: Available methods, in order of increasing cost (roughly).
METHODS: tuple[str, ...] = tuple(_RUNNERS)

#: Which of the shared inputs each method uses.
_USES = {"tkd": (), "tikhonov": (), "ilsqr": ("weight",), "tv_admm": ("weight",),
         "medi": ("weight", "magnitude", "csf_mask"), "ndi": ("weight",),
         "tfi": ("weight", "magnitude", "csf_mask")}


def _defaults(method: str) -> dict[str, Any]:
    function = _SIGNATURE_OF.get(method, _RUNNERS[method])
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
            and name not in ("weight", "magnitude", "csf_mask")}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def invert_dipole(local_field_ppm: Array, mask: Array, voxel_size_mm: ArrayLike,
                  b0_dir: ArrayLike = (0.0, 0.0, 1.0), method: str = "tv_admm", *,
                  weight: Array | None = None, magnitude: Array | None = None,
                  csf_mask: Array | None = None, **options: Any) -> DipoleInversion:
    """Invert the local field to susceptibility with the named method.

    Parameters
    ----------
    local_field_ppm : (X, Y, Z) float array
        Local field, ppm of B0 -- except for "tfi" (total field inversion), which takes the
        TOTAL field (no background removal before it) and estimates the background sources
        outside the mask itself.
    mask : (X, Y, Z) bool array
    voxel_size_mm : (3,) array_like
        mm.
    b0_dir : (3,) array_like
        B0 direction in the voxel frame.
    method : str
        One of :data:`METHODS`: "tkd" (:func:`~qsmliver.inversion.tkd`), "tikhonov",
        "ilsqr", "tv_admm" (default), "medi", "ndi", "tfi" (:func:`~qsmliver.inversion.tfi`,
        on the total field).
    weight : (X, Y, Z) array, optional
        Data reliability for the methods that use it (ilsqr, tv_admm, medi, ndi, tfi).
    magnitude : (X, Y, Z) array, optional
        Required by "medi"; optional edge prior of "tfi".
    csf_mask : (X, Y, Z) bool array, optional
        MEDI+0 CSF reference ("medi" and "tfi").
    **options
        Keyword settings of the method (see each function).

    Returns
    -------
    DipoleInversion

    Raises
    ------
    QSMConfigError
        For an unknown method or an option the method does not take (the message lists the
        valid ones). Shared inputs a method does not use (``weight``, ``magnitude``,
        ``csf_mask``) are ignored and listed in ``parameters["ignored_inputs"]``.
    QSMInputError
        For an empty mask, mismatched shapes, or a missing magnitude for MEDI.
    """
    if method not in _RUNNERS:
        raise QSMConfigError(f"unknown dipole inversion method {method!r}; valid methods: "
                             f"{', '.join(METHODS)}")
    defaults = _defaults(method)
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise QSMConfigError(f"unknown option(s) {', '.join(map(repr, unknown))} for method "
                             f"{method!r}; valid options: {', '.join(sorted(defaults))}")
    shared = {"weight": weight, "magnitude": magnitude, "csf_mask": csf_mask}
    # inputs a method does not use are ignored (the pipeline offers all it has) and recorded
    ignored = sorted(name for name, value in shared.items()
                     if value is not None and name not in _USES[method])
    check_inputs(local_field_ppm, mask, voxel_size_mm, b0_dir)
    if method == "medi" and magnitude is None:
        raise QSMInputError("method 'medi' needs a magnitude image", field="magnitude")
    extra = {name: shared[name] for name in _USES[method]}
    chi, info = _RUNNERS[method](local_field_ppm, mask, voxel_size_mm, b0_dir, **extra,
                                 **options)
    parameters = {**defaults, **options, **info}
    parameters["weighted"] = weight is not None and "weight" in _USES[method]
    parameters["ignored_inputs"] = ignored
    if method == "medi":
        parameters["csf_reference"] = csf_mask is not None
    parameters = _jsonable(parameters)
    json.dumps(parameters)  # fail here, not in the writer, if something is not serialisable
    return DipoleInversion(chi_ppm=chi, method=method, parameters=parameters)
