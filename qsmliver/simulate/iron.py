"""Liver iron links used by the numerical phantoms: LIC -> R2* and LIC -> susceptibility.

The phantoms are specified by a liver iron concentration (LIC, mg Fe per g dry liver tissue);
the R2* and the susceptibility of the simulated liver follow from it through the links below.

R2* from LIC (the inverse of a published R2* -> LIC biopsy calibration)
------------------------------------------------------------------------
- **1.5 T** (|B0 − 1.5 T| <= 0.05 T): Wood JC et al., *MRI R2 and R2\\* mapping accurately
  estimates hepatic iron concentration in transfusion-dependent thalassemia and sickle cell
  disease patients*, Blood 2005;106:1460-1465::

      LIC = 0.0254 · R2* + 0.202        =>   R2* = (LIC − 0.202) / 0.0254

- **3 T** (|B0 − 3 T| <= 0.05 T): Hernando D et al., *Multicenter reproducibility and 3 T
  calibration of R2\\*-based liver iron quantification*, Radiology 2023;306:e213256::

      LIC = −0.03 + 0.01349 · R2*       =>   R2* = (LIC + 0.03) / 0.01349

- **Any other field**: the 1.5 T (Wood) R2* scaled linearly with B0,
  ``R2*(B0) = R2*_1.5T · B0 / 1.5``. This is an approximation (R2* of iron-loaded liver grows
  roughly linearly with field strength); it is a modelling assumption, not a calibration.

Below normal iron the inverted calibrations fall under the R2* of a normal liver (and become
negative for LIC < 0.202 mg/g at 1.5 T), so R2* is floored at the normal liver value,
:data:`NORMAL_LIVER_R2STAR_1P5T_PER_S` = 29 1/s at 1.5 T (about 29 ± 3 1/s in healthy adults
at 1.5 T, e.g. Obrzut et al., Sci Rep 2020;10:17887: 28.7 ± 2.7 1/s; the seed study treats
> 70 1/s as pathological), scaled linearly with B0 at other fields (58 1/s at 3 T).

Susceptibility from LIC (linear, documented, user-overridable)
--------------------------------------------------------------
``χ_liver = offset + slope · LIC`` in ppm (SI, relative to water). A linear relation between
liver susceptibility and LIC is reported in the literature (Sharma SD et al., MRM 2015;74:673,
fat-referenced susceptibility vs FerriScan LIC; Sharma et al. MRM 2017;78:264 against SQUID
susceptometry; DESIGN section 5). The default slope
:data:`DEFAULT_CHI_SLOPE_PPM_PER_MG_G` = 0.15 ppm per mg Fe/g dw is an **assumption** of the
order of magnitude of published values (e.g. the susceptibility cut-offs 0.34 / 0.63 / 1.29 /
2.22 ppm for LIC 1.8 / 3.2 / 7.0 / 15 mg/g dw reported in a QSM + water-fat study, PMC6030453,
imply about 0.14 ppm per mg/g), not a verified calibration: pass your own slope. The offset
:data:`DEFAULT_LIVER_CHI_OFFSET_PPM` = −0.1 ppm (iron-free liver tissue slightly diamagnetic
relative to water) is likewise an assumption.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "DEFAULT_CHI_SLOPE_PPM_PER_MG_G",
    "DEFAULT_LIVER_CHI_OFFSET_PPM",
    "HERNANDO2023_3T_INTERCEPT",
    "HERNANDO2023_3T_SLOPE",
    "NORMAL_LIVER_R2STAR_1P5T_PER_S",
    "WOOD2005_INTERCEPT",
    "WOOD2005_SLOPE",
    "lic_to_chi_ppm",
    "lic_to_r2star",
    "normal_liver_r2star",
    "r2star_calibration_name",
    "r2star_to_lic",
]

#: Wood et al., Blood 2005;106:1460 (1.5 T): LIC [mg/g dw] = 0.0254 · R2* [1/s] + 0.202.
WOOD2005_SLOPE = 0.0254
WOOD2005_INTERCEPT = 0.202

#: Hernando et al., Radiology 2023;306:e213256 (3 T): LIC = −0.03 + 0.01349 · R2*.
HERNANDO2023_3T_SLOPE = 0.01349
HERNANDO2023_3T_INTERCEPT = -0.03

#: Normal liver R2* at 1.5 T, 1/s (DESIGN section 5; Obrzut et al. Sci Rep 2020;10:17887).
NORMAL_LIVER_R2STAR_1P5T_PER_S = 29.0

#: Assumed slope of liver χ vs LIC, ppm per mg Fe/g dry weight (see module docstring).
DEFAULT_CHI_SLOPE_PPM_PER_MG_G = 0.15

#: Assumed χ of iron-free liver tissue relative to water, ppm (see module docstring).
DEFAULT_LIVER_CHI_OFFSET_PPM = -0.1

_FIELD_TOLERANCE_T = 0.05


def r2star_calibration_name(b0_t: float) -> str:
    """Name of the R2*/LIC relation used at ``b0_t``: "wood2005", "hernando2023_3t", or
    "wood2005_scaled" (1.5 T relation scaled linearly with B0)."""
    b0 = float(b0_t)
    if b0 <= 0 or not np.isfinite(b0):
        raise ValueError(f"b0_t must be a positive field strength in tesla, got {b0_t}")
    if abs(b0 - 1.5) <= _FIELD_TOLERANCE_T:
        return "wood2005"
    if abs(b0 - 3.0) <= _FIELD_TOLERANCE_T:
        return "hernando2023_3t"
    return "wood2005_scaled"


def normal_liver_r2star(b0_t: float) -> float:
    """R2* of a normal (iron-free) liver at ``b0_t``: 29 1/s at 1.5 T, scaled linearly with B0."""
    r2star_calibration_name(b0_t)  # validates b0_t
    return NORMAL_LIVER_R2STAR_1P5T_PER_S * float(b0_t) / 1.5


def lic_to_r2star(lic_mg_per_g: ArrayLike, b0_t: float):
    """Liver R2* (1/s) for a liver iron concentration, inverting a published calibration.

    Parameters
    ----------
    lic_mg_per_g : float or array_like
        LIC in mg Fe per g dry weight.
    b0_t : float
        Field strength in tesla: Wood 2005 at 1.5 T, Hernando 2023 at 3 T, the 1.5 T relation
        scaled linearly with B0 otherwise (module docstring).

    Returns
    -------
    float or ndarray
        R2* in 1/s, never below :func:`normal_liver_r2star` at ``b0_t``.

    Examples
    --------
    >>> round(float(lic_to_r2star(5.0, 1.5)), 3)
    188.898
    """
    name = r2star_calibration_name(b0_t)
    lic = np.asarray(lic_mg_per_g, dtype=np.float64)
    if name == "hernando2023_3t":
        r2s = (lic - HERNANDO2023_3T_INTERCEPT) / HERNANDO2023_3T_SLOPE
    else:
        r2s = (lic - WOOD2005_INTERCEPT) / WOOD2005_SLOPE * (float(b0_t) / 1.5)
    r2s = np.maximum(r2s, normal_liver_r2star(b0_t))
    return float(r2s) if r2s.ndim == 0 else r2s


def r2star_to_lic(r2star_per_s: ArrayLike, b0_t: float):
    """The forward calibration matching :func:`lic_to_r2star` (no floor): LIC in mg Fe/g dw."""
    name = r2star_calibration_name(b0_t)
    r2s = np.asarray(r2star_per_s, dtype=np.float64)
    if name == "hernando2023_3t":
        lic = HERNANDO2023_3T_INTERCEPT + HERNANDO2023_3T_SLOPE * r2s
    else:
        lic = WOOD2005_INTERCEPT + WOOD2005_SLOPE * r2s * (1.5 / float(b0_t))
    return float(lic) if lic.ndim == 0 else lic


def lic_to_chi_ppm(
    lic_mg_per_g: ArrayLike,
    slope_ppm_per_mg_g: float = DEFAULT_CHI_SLOPE_PPM_PER_MG_G,
    chi_offset_ppm: float = DEFAULT_LIVER_CHI_OFFSET_PPM,
):
    """Liver susceptibility (ppm, relative to water) for an LIC: ``offset + slope · LIC``.

    Parameters
    ----------
    lic_mg_per_g : float or array_like
        LIC in mg Fe per g dry weight.
    slope_ppm_per_mg_g : float
        ppm per mg Fe/g dw; default :data:`DEFAULT_CHI_SLOPE_PPM_PER_MG_G` (an assumption).
    chi_offset_ppm : float
        χ of iron-free liver; default :data:`DEFAULT_LIVER_CHI_OFFSET_PPM` (an assumption).

    Examples
    --------
    >>> round(float(lic_to_chi_ppm(2.0)), 6)
    0.2
    """
    chi = float(chi_offset_ppm) + float(slope_ppm_per_mg_g) * np.asarray(
        lic_mg_per_g, dtype=np.float64
    )
    return float(chi) if chi.ndim == 0 else chi
