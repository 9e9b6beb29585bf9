"""Phase images stored in vendor integer units: detection and rescaling to radians.

Scanners and converters store phase as

- radians in [-pi, pi) (or [0, 2pi)): most research pipelines, qsm-forward;
- Siemens 12-bit integers: -4096..4095 after dcm2niix (raw 0..4095 with RescaleSlope 2,
  RescaleIntercept -4096), i.e. ``phase_rad = value * pi / 4096``;
- Philips milliradians: -3142..3142 (``phase_rad = value / 1000``);
- other arbitrary linear scalings (e.g. ROMEO test data, ±0.0037): min/max rescaling.

:func:`phase_to_radians` recognises these from the value range (and a vendor hint, see
:func:`detect_phase_scaling` for the rules), rescales, and wraps to [-pi, pi). Readers pass all
echoes of a phase image at once so that every echo is scaled the same way.
"""

from __future__ import annotations

import math

import numpy as np

from qsmliver.errors import QSMInputError

__all__ = ["PHASE_SCALINGS", "detect_phase_scaling", "phase_to_radians", "wrap_to_pi"]

#: Accepted values of the ``phase_scale`` argument.
PHASE_SCALINGS = ("auto", "radians", "siemens", "milliradians", "minmax")

_TOL = 1e-3
#: Largest magnitude of a phase in milliradians (pi * 1000 plus rounding).
_MRAD_LIMIT = 3142.5


def wrap_to_pi(phase):
    """Wrap phase (radians) into [-pi, pi)."""
    return (phase + np.pi) % (2 * np.pi) - np.pi


def detect_phase_scaling(values: np.ndarray, vendor: str | None = None) -> str:
    """Guess how a phase image is scaled from its value range.

    The rules, in order (``lo``/``hi`` the smallest/largest value, ``span = hi - lo``):

    1. Within [-pi, pi] or [0, 2 pi] (1e-3 tolerance): "radians", unless the span is below
       0.05 * 2 pi (about 0.31 rad) and ``max |value|`` too -- a tiny range such as the
       +-0.0037 of the ROMEO test data is a phase in arbitrary units: "minmax".
    2. A vendor hint decides the integer conventions: Siemens within -4096..4095 (or raw
       0..4095): "siemens"; Philips or GE within +-3142.5: "milliradians".
    3. Without a hint: within +-3142.5 with a span above pi * 1000 (a wrapped phase covers
       most of +-3142 mrad) and values of both signs: "milliradians"; within -4096..4095
       with a span above 4096 and values beyond +-3142.5: "siemens"; integers within
       0..4095 spanning more than 3072: "siemens" (raw 12-bit values, unscaled).
    4. Anything else: "minmax".

    Parameters
    ----------
    values : ndarray
        The phase image as stored (after any DICOM/NIfTI slope and intercept); all echoes
        together, so that every echo is scaled the same way.
    vendor : str, optional
        Manufacturer hint ("Siemens", "Philips", "GE", case-insensitive substrings).

    Returns
    -------
    str
        One of "radians", "siemens", "milliradians", "minmax".

    Examples
    --------
    >>> detect_phase_scaling(np.array([-4096.0, 0.0, 4092.0]))
    'siemens'
    >>> detect_phase_scaling(np.array([-3142.0, 3140.5]))
    'milliradians'
    >>> detect_phase_scaling(np.array([-0.0037, 0.0037]))
    'minmax'
    """
    lo, hi = float(np.min(values)), float(np.max(values))
    span = hi - lo
    largest = max(abs(lo), abs(hi))
    if (lo >= -math.pi - _TOL and hi <= math.pi + _TOL) or (
        lo >= -_TOL and hi <= 2 * math.pi + _TOL
    ):
        tiny = 0.05 * 2 * math.pi
        return "minmax" if 0 < span < tiny and largest < tiny else "radians"
    vendor_l = (vendor or "").lower()
    in_siemens = lo >= -4096.5 and hi <= 4095.5
    in_mrad = lo >= -_MRAD_LIMIT and hi <= _MRAD_LIMIT
    if "siemens" in vendor_l and in_siemens:
        return "siemens"
    if ("philips" in vendor_l or vendor_l in ("ge", "gems") or vendor_l.startswith("ge ")) \
            and in_mrad:
        return "milliradians"
    if in_mrad and span > math.pi * 1000 and lo < 0 < hi:
        return "milliradians"
    if in_siemens and span > 4096 and largest > _MRAD_LIMIT:
        return "siemens"
    if lo >= -0.5 and hi <= 4095.5 and span > 3072 and _integer_valued(values):
        return "siemens"  # raw 12-bit 0..4095 stored without RescaleSlope/Intercept
    return "minmax"


def _integer_valued(values: np.ndarray) -> bool:
    values = np.asarray(values)
    if values.dtype.kind in "iu":
        return True
    return bool(np.all(np.abs(values - np.round(values)) < 1e-3))


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
