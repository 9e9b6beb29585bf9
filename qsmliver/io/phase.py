"""Phase images stored in vendor integer units: detection and rescaling to radians.

Scanners and converters store phase as

- radians in [-pi, pi) (or [0, 2pi)): most research pipelines, qsm-forward;
- Siemens 12-bit integers: -4096..4095 after dcm2niix (raw 0..4095 with RescaleSlope 2,
  RescaleIntercept -4096), i.e. ``phase_rad = value * pi / 4096``;
- Philips milliradians: -3142..3142 (``phase_rad = value / 1000``);
- other arbitrary linear scalings (e.g. ROMEO test data, ±0.0037): min/max rescaling.

:func:`phase_to_radians` recognises these from the value range (and a vendor hint), rescales,
and wraps to [-pi, pi).
"""

from __future__ import annotations

import math

import numpy as np

from qsmliver.errors import QSMInputError

__all__ = ["PHASE_SCALINGS", "detect_phase_scaling", "phase_to_radians", "wrap_to_pi"]

#: Accepted values of the ``phase_scale`` argument.
PHASE_SCALINGS = ("auto", "radians", "siemens", "milliradians", "minmax")

_TOL = 1e-3


def wrap_to_pi(phase):
    """Wrap phase (radians) into [-pi, pi)."""
    return (phase + np.pi) % (2 * np.pi) - np.pi


def detect_phase_scaling(values: np.ndarray, vendor: str | None = None) -> str:
    """Guess how a phase image is scaled from its value range.

    Parameters
    ----------
    values : ndarray
        The phase image as stored (after any DICOM/NIfTI slope and intercept).
    vendor : str, optional
        Manufacturer hint; decides ambiguous integer ranges.

    Returns
    -------
    str
        One of "radians", "siemens", "milliradians", "minmax".
    """
    lo, hi = float(np.min(values)), float(np.max(values))
    if lo >= -math.pi - _TOL and hi <= math.pi + _TOL:
        return "radians"
    if lo >= -_TOL and hi <= 2 * math.pi + _TOL:
        return "radians"
    span = hi - lo
    integer_valued = bool(np.all(np.abs(values - np.round(values)) < 1e-3))
    vendor_l = (vendor or "").lower()
    if integer_valued or span > 100:
        if lo >= -4096.5 and hi <= 4095.5 and span > 4096 + 1000 and "philips" not in vendor_l:
            return "siemens"
        if lo >= -3142.5 and hi <= 3142.5 and span > 3142:
            return "milliradians"
        if lo >= -4096.5 and hi <= 4095.5 and "siemens" in vendor_l:
            return "siemens"
        if lo >= -0.5 and hi <= 4095.5 and span > 2048 and "siemens" in vendor_l:
            return "siemens"
    return "minmax"


def phase_to_radians(
    values: np.ndarray,
    scaling: str = "auto",
    vendor: str | None = None,
    path=None,
) -> tuple[np.ndarray, str]:
    """Rescale a stored phase image to radians in [-pi, pi).

    Parameters
    ----------
    values : ndarray
        Stored phase values.
    scaling : {"auto", "radians", "siemens", "milliradians", "minmax"}
        How the values are scaled; "auto" detects it with :func:`detect_phase_scaling`.
        "minmax" maps [min, max] linearly onto [-pi, pi), the usual treatment of phase in
        arbitrary units.
    vendor : str, optional
        Manufacturer hint for "auto".
    path : str, optional
        File name for error messages.

    Returns
    -------
    phase_rad : ndarray, float32 or float64
        Phase in radians, wrapped to [-pi, pi).
    scaling : str
        The scaling that was applied (recorded in the metadata).

    Raises
    ------
    QSMInputError
        For an unknown scaling, non-finite values, or a constant image under "minmax".
    """
    if scaling not in PHASE_SCALINGS:
        raise QSMInputError(
            f"unknown phase scaling {scaling!r}; choose one of {', '.join(PHASE_SCALINGS)}",
            path,
            "phase",
        )
    values = np.asarray(values)
    real = values.astype(np.float64 if values.dtype == np.float64 else np.float32, copy=False)
    if not np.all(np.isfinite(real)):
        raise QSMInputError("phase image holds NaN or infinite values", path, "phase")
    if scaling == "auto":
        scaling = detect_phase_scaling(real, vendor)
    if scaling == "radians":
        out = real
    elif scaling == "siemens":
        if float(real.min()) >= -0.5:  # raw 0..4095 without RescaleSlope 2 / Intercept -4096
            real = real * 2 - 4096
        out = real * (np.pi / 4096.0)
    elif scaling == "milliradians":
        out = real / 1000.0
    else:
        lo, hi = float(real.min()), float(real.max())
        if hi - lo <= 0:
            raise QSMInputError(
                "phase image is constant: cannot rescale arbitrary units to radians",
                path,
                "phase",
            )
        out = (real - lo) / (hi - lo) * (2 * np.pi) - np.pi
    return wrap_to_pi(out).astype(real.dtype, copy=False), scaling
