"""Published calibrations from MRI measurements (R2*, R2, χ) to liver iron concentration (LIC).

LIC is in mg Fe per g dry liver weight. Each :class:`Calibration` carries its citation, the
field strength it was derived at, its input unit, the range of the input it was derived over
and a ``verification`` note saying which of its numbers were checked against which source.
:func:`convert_to_lic` refuses a calibration at another field strength (unless
``allow_field_mismatch=True``) and warns with :class:`CalibrationRangeWarning` for values
outside the valid range.

Registry (``name``: formula; field; valid input range; what was verified). "Not verified
against the paper" means that the full text was not available to us: the number is the one
widely reproduced, and agrees with the independent sources named, but has not been read in
the original article.

- ``wood2005`` (R2*, 1.5 T): ``LIC = 0.0254·R2* + 0.202``. Wood JC et al., Blood
  2005;106:1460-1465. Verified: biopsy HIC range 1.33-32.9 mg/g (article abstract, which also
  reports 22 patients with biopsy). Range R2* ≈ 44.4-1287.3 1/s by inverting the formula.
  Coefficients: agree with an online calculator citing the paper
  (radclass.mudr.org, "Liver iron content (LIC) R2* 1.5T") but are **not verified against
  the paper**; field strength likewise.
- ``hankins2009`` (R2*, 1.5 T): ``LIC = 0.02802·R2* − 0.4549``. Hankins JS et al., Blood
  2009;113:4853-4855. **Not verified against the paper.** An independent implementation
  citing the paper (github.com/dtiezzi/Liver-Iron-Estimate) uses
  ``HIC [µg/g] = −454.85 + 28.02·R2*``, i.e. an intercept of −0.45485 mg/g, of which the
  −0.4549 here is the four-decimal rounding. Range R2* 30-1300 1/s and field strength:
  **approximate / not verified**.
- ``garbowski2014`` (R2*, 1.5 T): ``LIC = 0.0290·R2*^1.014``. Garbowski MW et al., J
  Cardiovasc Magn Reson 2014;16:40. Coefficients agree with the calculator above and with an
  independent implementation using the equivalent ``LIC = 31.94·T2*[ms]^−1.014``
  (0.0290·1000^1.014 = 31.94); **not verified against the paper**. Range R2* 30-1500 1/s:
  **approximate / not verified**.
- ``hernando2023_1.5t`` (R2*, 1.5 T): ``LIC = −0.16 + 0.02603·R2*``; ``hernando2023_3t``
  (R2*, 3.0 T): ``LIC = −0.03 + 0.01349·R2*``. Hernando D et al., Multicenter
  reproducibility of liver iron quantification with 1.5-T and 3.0-T MRI, Radiology
  2023;306(2):e213256. Verified: the 1.5 T calibration and the title (article abstract at
  pubs.rsna.org). The reference LIC of this study is the commercial R2-MRI (FerriScan) LIC
  at 1.5 T, not biopsy. The abstract also gives a separate calibration for the 2.89 T
  scanners of the study, which is not in this registry (a 2.89 T measurement is refused by
  ``hernando2023_3t`` unless ``allow_field_mismatch=True``). The 3.0 T coefficients agree
  with an independent implementation citing the paper but were **not verified against the
  paper** (the copy of the abstract available to us is cut off there). Ranges R2* 25-1200
  1/s (1.5 T) and 40-2000 1/s (3.0 T): **approximate / not verified**.
- ``stpierre2005`` (R2, 1.5 T): ``R2 = 6.88 + 26.06·LIC^0.701 − 0.438·LIC^1.402`` inverted
  exactly (the root of the quadratic in ``LIC^0.701`` on the rising branch). St Pierre TG et
  al., Blood 2005;105:855-861 (FerriScan). Verified: 1.5-T MRI units, 105 subjects, biopsy
  LIC 0.3-42.7 mg/g (article abstract), i.e. R2 ≈ 18.0-284.5 1/s through the curve. The curve
  coefficients are **not verified against the paper**; note that the closed-form inverse
  often quoted with them, ``LIC = (29.75 − √(900.7 − 2.283·R2))^1.424``, has the exponent
  1.424 where the curve implies 1/0.701 = 1.4265, so one of the two as reproduced is
  rounded or mis-copied. Obtain the curve from the paper before clinical use.
- ``chi_linear`` (χ in ppm, any field): ``LIC = (χ − offset)/slope`` with the default slope
  0.15 ppm per mg/g and offset −0.1 ppm of :mod:`qsmliver.simulate.iron` — an **assumption**
  of the order of published linear χ-LIC relations (Sharma SD et al., MRM 2015;74:673; Zhao
  et al. MRM 2022; Buelo et al. MRM 2025;93:330, whose abstract reports susceptibility-LIC
  slopes of 0.102-0.123 across centres at 1.5 T, printed unit "g/[mg·ppm]", presumably ppm
  per mg/g, against R2-MRI LIC); build your own with :func:`chi_calibration` or fit one with
  :mod:`qsmliver.calibrate.fit`. Range: LIC 0-40 mg/g.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import numpy as np

from qsmliver import backend
from qsmliver.errors import QSMConfigError
from qsmliver.simulate.iron import DEFAULT_CHI_SLOPE_PPM_PER_MG_G, DEFAULT_LIVER_CHI_OFFSET_PPM

__all__ = [
    "CALIBRATIONS",
    "FIELD_TOLERANCE_T",
    "Calibration",
    "CalibrationFieldWarning",
    "CalibrationRangeWarning",
    "chi_calibration",
    "convert_to_lic",
    "get_calibration",
    "list_calibrations",
]

#: Largest |B0 − calibration field| (tesla) accepted as the same field strength.
FIELD_TOLERANCE_T = 0.05
LIC_UNIT = "mg Fe/g dw"
MEASURES = {"r2star": "1/s", "r2": "1/s", "chi": "ppm"}


class CalibrationRangeWarning(UserWarning):
    """Values outside the range a calibration was derived over (extrapolation)."""


class CalibrationFieldWarning(UserWarning):
    """A calibration used at another field strength with ``allow_field_mismatch=True``."""


@dataclasses.dataclass(frozen=True)
class Calibration:
    """A calibration from an MRI measurement to LIC (mg Fe/g dry weight).

    Attributes
    ----------
    name : str
        Registry key.
    measure : {"r2star", "r2", "chi"}
        The input quantity (R2* and R2 in 1/s, χ in ppm).
    form : {"linear", "power", "stpierre", "inverse_linear"}
        ``linear``: ``LIC = a + b·x``; ``power``: ``LIC = a·x^b``; ``stpierre``: the inverse of
        ``x = c0 + c1·L^p − c2·L^(2p)``; ``inverse_linear``: ``LIC = (x − a)/b``.
    coefficients : dict
        The numbers of the formula.
    field_strength_t : float or None
        Field strength (T) the calibration was derived at; None for field-independent ones.
    valid_range : (float, float)
        Input range (measurement units) the calibration was derived over.
    range_note : str
        Where the range comes from, and whether it is approximate.
    citation : str
    formula : str
        Human-readable formula.
    verification : str
        Which numbers were checked against which source, and which were not.
    """

    name: str
    measure: str
    form: str
    coefficients: dict
    field_strength_t: float | None
    valid_range: tuple[float, float]
    citation: str
    formula: str
    range_note: str = ""
    verification: str = ""

    @property
    def unit(self) -> str:
        """Unit of the input measurement."""
        return MEASURES[self.measure]

    def apply(self, values):
        """The formula on an array (NumPy or CuPy) or scalar, with no checks: LIC, mg/g dw."""
        xp = backend.get_array_module(values)
        x = xp.asarray(values, dtype=xp.float64)
        c = self.coefficients
        if self.form == "linear":
            return c["a"] + c["b"] * x
        if self.form == "power":
            return c["a"] * xp.maximum(x, 0.0) ** c["b"]
        if self.form == "inverse_linear":
            return (x - c["a"]) / c["b"]
        if self.form == "stpierre":
            # x = c0 + c1 u − c2 u², u = LIC^p; the rising-branch root of the quadratic.
            disc = c["c1"] ** 2 - 4.0 * c["c2"] * (x - c["c0"])
            u = (c["c1"] - xp.sqrt(xp.maximum(disc, 0.0))) / (2.0 * c["c2"])
            return xp.maximum(u, 0.0) ** (1.0 / c["p"])
        raise QSMConfigError(f"calibration {self.name!r}: unknown form {self.form!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (for sidecars and calibration files)."""
        out = dataclasses.asdict(self)
        out["valid_range"] = list(self.valid_range)
        out["unit_in"] = self.unit
        out["unit_out"] = LIC_UNIT
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        """Inverse of :meth:`to_dict` (extra keys are ignored)."""
        try:
            return cls(
                name=str(data["name"]), measure=str(data["measure"]), form=str(data["form"]),
                coefficients={k: float(v) for k, v in dict(data["coefficients"]).items()},
                field_strength_t=(None if data.get("field_strength_t") is None
                                  else float(data["field_strength_t"])),
                valid_range=(float(data["valid_range"][0]), float(data["valid_range"][1])),
                citation=str(data.get("citation", "")), formula=str(data.get("formula", "")),
                range_note=str(data.get("range_note", "")),
                verification=str(data.get("verification", "")),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise QSMConfigError(f"not a calibration description: {exc}") from None


def _stpierre_r2(lic: float) -> float:
    u = lic**0.701
    return 6.88 + 26.06 * u - 0.438 * u * u


def chi_calibration(
    slope_ppm_per_mg_g: float = DEFAULT_CHI_SLOPE_PPM_PER_MG_G,
    offset_ppm: float = DEFAULT_LIVER_CHI_OFFSET_PPM,
    *,
    name: str = "chi_linear",
    lic_range: tuple[float, float] = (0.0, 40.0),
    citation: str | None = None,
) -> Calibration:
    """A linear χ → LIC calibration ``LIC = (χ − offset) / slope``.

    Parameters
    ----------
    slope_ppm_per_mg_g : float
        χ per LIC, ppm per mg Fe/g dw (default 0.15, an assumption; module docstring).
    offset_ppm : float
        χ of iron-free liver relative to the χ reference, ppm (default −0.1).
    name : str
    lic_range : (float, float)
        LIC range (mg/g) the relation is trusted over; converted to a χ range.
    citation : str, optional
    """
    if not math.isfinite(slope_ppm_per_mg_g) or slope_ppm_per_mg_g <= 0:
        raise QSMConfigError(f"χ slope must be positive, got {slope_ppm_per_mg_g}")
    lo, hi = (offset_ppm + slope_ppm_per_mg_g * v for v in lic_range)
    return Calibration(
        name=name, measure="chi", form="inverse_linear",
        coefficients={"a": float(offset_ppm), "b": float(slope_ppm_per_mg_g)},
        field_strength_t=None, valid_range=(lo, hi),
        citation=citation or (
            "assumed linear χ-LIC relation (slope of the order reported by Sharma SD et al., "
            "MRM 2015;74:673; Zhao et al., MRM 2022; Buelo et al., MRM 2025); user-overridable"),
        formula=f"LIC = (chi - ({offset_ppm:g})) / {slope_ppm_per_mg_g:g}",
        range_note=f"LIC {lic_range[0]:g}-{lic_range[1]:g} mg/g (assumption)",
        verification=("user-supplied" if citation else
                      "assumption of the order of published slopes, not a fitted calibration"),
    )


_WOOD_RANGE = ((1.33 - 0.202) / 0.0254, (32.9 - 0.202) / 0.0254)
_HERNANDO2023 = ("Hernando D, Zhao R, Yuan Q, et al. Multicenter reproducibility of liver iron "
                 "quantification with 1.5-T and 3.0-T MRI. Radiology 2023;306(2):e213256")

#: The registry of published calibrations (verification status: module docstring).
CALIBRATIONS: dict[str, Calibration] = {
    c.name: c
    for c in (
        Calibration(
            "wood2005", "r2star", "linear", {"a": 0.202, "b": 0.0254}, 1.5,
            (round(_WOOD_RANGE[0], 1), round(_WOOD_RANGE[1], 1)),
            "Wood JC et al. MRI R2 and R2* mapping accurately estimates hepatic iron "
            "concentration in transfusion-dependent thalassemia and sickle cell disease "
            "patients. Blood 2005;106:1460-1465",
            "LIC = 0.0254 * R2* + 0.202",
            "biopsy HIC 1.33-32.9 mg/g (abstract) mapped through the formula",
            "HIC range verified (abstract); coefficients and field strength as widely "
            "reproduced, not verified against the paper",
        ),
        Calibration(
            "hankins2009", "r2star", "linear", {"a": -0.4549, "b": 0.02802}, 1.5,
            (30.0, 1300.0),
            "Hankins JS et al. R2* magnetic resonance imaging of the liver in patients with "
            "iron overload. Blood 2009;113:4853-4855",
            "LIC = 0.02802 * R2* - 0.4549",
            "approximate (not verified against the paper)",
            "not verified against the paper; coefficients agree with an independent "
            "implementation (HIC ug/g = -454.85 + 28.02 R2*)",
        ),
        Calibration(
            "garbowski2014", "r2star", "power", {"a": 0.0290, "b": 1.014}, 1.5,
            (30.0, 1500.0),
            "Garbowski MW et al. Biopsy-based calibration of T2* magnetic resonance for "
            "estimation of liver iron concentration and comparison with R2 Ferriscan. "
            "J Cardiovasc Magn Reson 2014;16:40",
            "LIC = 0.0290 * R2*^1.014",
            "approximate (not verified against the paper)",
            "not verified against the paper; coefficients agree with independent "
            "calculators (LIC = 31.94 T2*[ms]^-1.014)",
        ),
        Calibration(
            "hernando2023_1.5t", "r2star", "linear", {"a": -0.16, "b": 0.02603}, 1.5,
            (25.0, 1200.0),
            _HERNANDO2023,
            "LIC = -0.16 + 0.02603 * R2*",
            "approximate (not verified against the paper)",
            "coefficients verified (article abstract); reference LIC is R2-MRI "
            "(FerriScan), not biopsy; range not verified",
        ),
        Calibration(
            "hernando2023_3t", "r2star", "linear", {"a": -0.03, "b": 0.01349}, 3.0,
            (40.0, 2000.0),
            _HERNANDO2023,
            "LIC = -0.03 + 0.01349 * R2*",
            "approximate (not verified against the paper)",
            "not verified against the paper (abstract copy cut off); coefficients agree "
            "with an independent implementation; the paper has a separate 2.89 T "
            "calibration; reference LIC is R2-MRI (FerriScan)",
        ),
        Calibration(
            "stpierre2005", "r2", "stpierre",
            {"c0": 6.88, "c1": 26.06, "c2": 0.438, "p": 0.701}, 1.5,
            (round(_stpierre_r2(0.3), 1), round(_stpierre_r2(42.7), 1)),
            "St Pierre TG et al. Noninvasive measurement and imaging of liver iron "
            "concentrations using proton magnetic resonance. Blood 2005;105:855-861",
            "R2 = 6.88 + 26.06 * LIC^0.701 - 0.438 * LIC^1.402 (inverted)",
            "biopsy LIC 0.3-42.7 mg/g (abstract) mapped through the curve",
            "LIC range and 1.5 T verified (abstract); curve coefficients NOT verified "
            "against the paper - obtain them from the paper before clinical use",
        ),
        chi_calibration(),
    )
}


def get_calibration(name: str) -> Calibration:
    """The registered calibration ``name`` (case-insensitive).

    Raises
    ------
    QSMConfigError
        For an unknown name (the message lists the known ones).
    """
    key = str(name).strip().lower()
    if key not in CALIBRATIONS:
        raise QSMConfigError(f"unknown LIC calibration {name!r}; known: "
                             f"{', '.join(sorted(CALIBRATIONS))}")
    return CALIBRATIONS[key]


def list_calibrations(measure: str | None = None) -> list[Calibration]:
    """Registered calibrations, optionally only those for ``measure`` ("r2star", "r2", "chi")."""
    return [c for c in CALIBRATIONS.values() if measure is None or c.measure == measure]


def convert_to_lic(
    values,
    calibration: str | Calibration,
    *,
    b0_t: float | None = None,
    measure: str | None = None,
    allow_field_mismatch: bool = False,
    mask=None,
):
    """Convert R2*/R2/χ values (a map or ROI values) to LIC with a published calibration.

    Parameters
    ----------
    values : float or ndarray
        Measurements in the calibration's unit (R2*, R2: 1/s; χ: ppm); NumPy or CuPy.
    calibration : str or Calibration
        Registry name (see :data:`CALIBRATIONS`) or a :class:`Calibration`.
    b0_t : float, optional
        Field strength of the measurement (T). Checked against the calibration's; None skips
        the check (the caller vouches for it).
    measure : {"r2star", "r2", "chi"}, optional
        What ``values`` are; refused if the calibration expects another quantity.
    allow_field_mismatch : bool
        Convert anyway at another field strength (with a :class:`CalibrationFieldWarning`).
    mask : ndarray of bool, optional
        Voxels to convert and check against the range; LIC is 0 elsewhere. Default: all.

    Returns
    -------
    float or ndarray
        LIC in mg Fe/g dry weight (float64; a float for scalar input).

    Raises
    ------
    QSMConfigError
        Unknown calibration, wrong measure, or a field-strength mismatch without
        ``allow_field_mismatch``.

    Warns
    -----
    CalibrationRangeWarning
        When any (masked, finite) value lies outside ``calibration.valid_range``.

    Examples
    --------
    >>> round(convert_to_lic(100.0, "wood2005", b0_t=1.5), 4)
    2.742
    """
    cal = calibration if isinstance(calibration, Calibration) else get_calibration(calibration)
    if measure is not None and measure != cal.measure:
        raise QSMConfigError(f"calibration {cal.name!r} converts {cal.measure}, not {measure}")
    if cal.field_strength_t is not None and b0_t is not None:
        if abs(float(b0_t) - cal.field_strength_t) > FIELD_TOLERANCE_T:
            message = (f"calibration {cal.name!r} was derived at {cal.field_strength_t:g} T; "
                       f"the data are at {float(b0_t):g} T")
            if not allow_field_mismatch:
                raise QSMConfigError(message + " (choose a calibration for this field, or "
                                               "allow_field_mismatch=True / "
                                               "--allow-field-mismatch)")
            warnings.warn(message, CalibrationFieldWarning, stacklevel=2)
    scalar = np.ndim(values) == 0 and backend.get_array_module(values) is np
    xp = backend.get_array_module(values)
    x = xp.asarray(values, dtype=xp.float64)
    sel = xp.ones(x.shape, dtype=bool) if mask is None else xp.asarray(mask, dtype=bool)
    checked = x[sel & xp.isfinite(x)]
    lo, hi = cal.valid_range
    outside = int(xp.sum((checked < lo) | (checked > hi))) if checked.size else 0
    if outside:
        warnings.warn(
            f"{outside} of {int(checked.size)} value(s) outside the range calibration "
            f"{cal.name!r} was derived over ({lo:g}-{hi:g} {cal.unit}; {cal.range_note}): "
            "the LIC there is an extrapolation", CalibrationRangeWarning, stacklevel=2)
    lic = cal.apply(x)
    lic = xp.where(sel & xp.isfinite(lic), lic, 0.0)
    return float(lic) if scalar else lic
