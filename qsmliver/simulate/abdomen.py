"""A numerical abdomen phantom with iron- and fat-loaded liver, for QSM / R2* / PDFF / LIC tests.

The anatomy is built from analytic shapes (ellipses and ellipsoids) defined in fractions of the
field of view, so that a small matrix (e.g. 48 x 40 x 20) contains every structure. Axes are
RAS+ voxel axes: +x to the patient's right (liver side), +y anterior, +z superior (lungs at the
top slices); B0 along +z by default (head-foot, as in a clinical scanner).

Structures (labels :data:`ABDOMEN_LABELS`): air outside the body, a torso of elliptical cross
section running through the whole z extent, a subcutaneous fat layer, an abdominal-wall muscle
ring with paraspinal muscles, a vertebral column, lungs (air-filled) in the top slices, bowel
gas pockets, bowel (generic soft tissue filling the cavity), visceral fat (omental layer and
perirenal fat), kidneys, spleen and a liver (right lobe plus a left lobe crossing the midline).

Tissue properties (:data:`DEFAULT_TISSUES`): water and fat proton density (a.u.), R2* at 1.5 T
(scaled linearly with B0 at other fields, an approximation) and susceptibility χ in ppm (SI)
relative to water. The liver's R2* and χ come from its LIC through :mod:`qsmliver.simulate.iron`
(R2* = inverse of Wood 2005 at 1.5 T / Hernando 2023 at 3 T; χ = offset + slope · LIC, plus the
fat contribution PDFF · χ_fat), its water/fat split from the requested PDFF.

Fields: the total field is the dipole field of χ (zero-padded; the body is extended by edge
replication along z before padding so that the truncated torso does not end in air at the top
and bottom of the field of view) plus a smooth shim residual (a low-order polynomial,
:data:`DEFAULT_SHIM_PPM`). Since χ is relative to water and the surroundings are air at
+9.4 ppm, the field is computed from ``χ − χ_air`` (identical in infinite space, and exactly
zero outside the field of view). The split is:

- ``local_field_ppm``: dipole field of χ (relative to water) inside the tissue mask;
- ``background_field_ppm``: dipole field of χ outside the tissue mask (air of the surroundings,
  lungs and bowel gas) plus the shim residual;
- ``total_field_ppm = local_field_ppm + background_field_ppm`` (exactly, by construction).

Susceptibility values (ppm, SI, relative to water):

- air +9.4 (χ_air ≈ +0.36 ppm, χ_water ≈ −9.05 ppm; Schenck, Med Phys 1996;23:815);
- fat +0.6 (χ_fat ≈ −8.4 ppm vs water −9.05; order of the values used in fat-referenced liver
  QSM, Sharma et al. MRM 2015;74:673) -- an approximation;
- cortical bone about −2 ppm relative to water; the vertebral body (trabecular bone with fatty
  marrow) is given −1.5 ppm -- an assumption;
- muscle, kidney, spleen, bowel: small values (−0.05 .. +0.05 ppm) -- assumptions.

R2* at 1.5 T (1/s; typical literature orders of magnitude, assumptions): fat 30-35, muscle 30,
kidney 15, spleen 20, bowel 30, vertebral body 80 (trabecular bone), normal liver 29 (floor of
the LIC link).

Optional hepatic vessel (``hepatic_vessel=True``; off by default, and then nothing above
changes): a portal-vein-like tube running left-right through the liver (from the left lobe
through the hilum into the right lobe) at one level, about 13 mm across (the upper normal portal
vein diameter; at least 3 voxels in-plane and one slice), labelled :data:`VESSEL_LABEL` = 11
("vessel") and cut out of the liver mask and lobes. Blood values (:data:`VESSEL_TISSUE`,
assumptions): water 0.85, no fat (PDFF 0), R2* 20 1/s at 1.5 T (scaled with B0 like the other
tissues), χ +0.34 ppm relative to water = Hct·(1 − Y)·Δχ_do with Hct 0.40, portal venous
oxygen saturation Y 0.75 and Δχ_do = 3.39 ppm SI (0.27 ppm cgs; Spees et al. MRM
2001;45:533). Against iron-loaded liver the vessel is a low-R2* outlier; against normal liver
a high-χ one. Flow effects are not simulated.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from qsmliver.data import GYROMAGNETIC_RATIO_HZ_PER_T, MultiEchoGRE
from qsmliver.errors import QSMConfigError
from qsmliver.fatwater.spectra import FatSpectrum
from qsmliver.geometry import centred_affine
from qsmliver.simulate import iron
from qsmliver.simulate.forward import shim_coordinates, susceptibility_field_ppm
from qsmliver.simulate.phantom import Phantom
from qsmliver.simulate.signal import add_complex_noise, gre_signal

__all__ = [
    "ABDOMEN_LABELS",
    "CHI_AIR_PPM",
    "CHI_FAT_PPM",
    "DEFAULT_FOV_MM",
    "DEFAULT_PHI0_RAD",
    "DEFAULT_SHIM_PPM",
    "DEFAULT_TISSUES",
    "LIVER_REGIONS",
    "VESSEL_LABEL",
    "VESSEL_TISSUE",
    "abdomen_phantom",
    "default_echo_times",
]

#: χ of air relative to water, ppm (air +0.36, water −9.05 ppm SI; Schenck 1996).
CHI_AIR_PPM = 9.4
#: χ of fat relative to water, ppm (approximation, see module docstring).
CHI_FAT_PPM = 0.6

#: Label value -> tissue name (0 = air outside the body).
ABDOMEN_LABELS: dict[int, str] = {
    0: "air",
    1: "subcutaneous_fat",
    2: "visceral_fat",
    3: "muscle",
    4: "spine",
    5: "lungs",
    6: "bowel_gas",
    7: "bowel",
    8: "kidney",
    9: "spleen",
    10: "liver",
}
_LABEL_OF = {name: value for value, name in ABDOMEN_LABELS.items()}

#: Label of the optional hepatic vessel ("vessel"), appended after :data:`ABDOMEN_LABELS` only
#: when ``abdomen_phantom(hepatic_vessel=True)``.
VESSEL_LABEL = 11
#: Blood in the optional hepatic vessel (see the module docstring; assumptions).
VESSEL_TISSUE: dict[str, float | None] = {
    "water": 0.85, "fat": 0.0, "r2star_per_s_1p5t": 20.0, "chi_ppm": 0.34,
}
#: Vessel geometry: tube axis along x at normalised (v, w) = centre, from u = start to u = end;
#: radius in mm (at least one voxel in y and half a voxel in z, so it is never empty).
_VESSEL_CENTRE_VW = (0.10, 0.25)
_VESSEL_U_RANGE = (-0.25, 0.50)
_VESSEL_RADIUS_MM = 6.5

#: Tissue name -> water, fat (proton densities, a.u.), R2* at 1.5 T (1/s) and χ (ppm vs water).
#: The liver's ``r2star_per_s_1p5t`` and ``chi_ppm`` are None: they come from its LIC, and its
#: water + fat (total proton density) is split by the requested PDFF.
DEFAULT_TISSUES: dict[str, dict[str, float | None]] = {
    "air": {"water": 0.0, "fat": 0.0, "r2star_per_s_1p5t": 0.0, "chi_ppm": CHI_AIR_PPM},
    "subcutaneous_fat": {"water": 0.08, "fat": 0.92, "r2star_per_s_1p5t": 30.0,
                         "chi_ppm": 0.55},
    "visceral_fat": {"water": 0.10, "fat": 0.90, "r2star_per_s_1p5t": 35.0, "chi_ppm": 0.54},
    "muscle": {"water": 0.80, "fat": 0.02, "r2star_per_s_1p5t": 30.0, "chi_ppm": -0.03},
    "spine": {"water": 0.45, "fat": 0.35, "r2star_per_s_1p5t": 80.0, "chi_ppm": -1.5},
    "lungs": {"water": 0.0, "fat": 0.0, "r2star_per_s_1p5t": 0.0, "chi_ppm": CHI_AIR_PPM},
    "bowel_gas": {"water": 0.0, "fat": 0.0, "r2star_per_s_1p5t": 0.0, "chi_ppm": CHI_AIR_PPM},
    "bowel": {"water": 0.85, "fat": 0.0, "r2star_per_s_1p5t": 30.0, "chi_ppm": 0.0},
    "kidney": {"water": 0.90, "fat": 0.0, "r2star_per_s_1p5t": 15.0, "chi_ppm": -0.05},
    "spleen": {"water": 0.90, "fat": 0.0, "r2star_per_s_1p5t": 20.0, "chi_ppm": 0.05},
    "liver": {"water": 0.85, "fat": 0.0, "r2star_per_s_1p5t": None, "chi_ppm": None},
}

#: Tissues without tissue signal (air): excluded from the "tissue" mask.
_AIR_TISSUES = ("air", "lungs", "bowel_gas")

#: Regions of the liver that can be given their own LIC.
LIVER_REGIONS = ("right_lobe", "left_lobe")

#: Default field of view, mm (x right-left, y antero-posterior, z head-foot).
DEFAULT_FOV_MM = (384.0, 312.0, 192.0)

#: Shim residual (ppm) as coefficients of solid spherical harmonics of order <= 2 in the
#: coordinates u, v, w = x, y, z (mm, from the centre of the field of view) divided by the largest
#: half field of view (so u is in [−1, 1] along the longest axis): terms "1", "x", "y", "z",
#: "x2-y2", "xy", "z2" for 1, u, v, w, u² − v², u·v, w² − (u² + v²)/2. One length for all axes
#: keeps every term harmonic (a shim field obeys Laplace's equation) whatever the field of view's
#: aspect ratio. The defaults (a few hundredths of a ppm, i.e. a few Hz at 1.5 T) are an
#: assumption of a typical residual after shimming.
DEFAULT_SHIM_PPM: dict[str, float] = {
    "1": 0.0, "x": 0.05, "y": -0.03, "z": 0.04, "x2-y2": 0.03, "xy": 0.01, "z2": -0.02,
}

#: Echo-independent phase (rad) as a polynomial like the shim: 1, u, v (transceive phase).
DEFAULT_PHI0_RAD: dict[str, float] = {"1": 0.3, "x": 0.4, "y": -0.25}

#: Default protocols: field (T) -> (number of echoes, TE1 s, ΔTE s). 1.5 T: the seed study
#: (12 echoes, TE1 0.99 ms, ΔTE 1.41 ms). 3 T: an assumed typical confounder-corrected
#: protocol (12 echoes, TE1 1.0 ms, ΔTE 0.8 ms). Other fields: TE1 0.99 ms, ΔTE 1.41 ms · 1.5/B0.
_PROTOCOLS = {1.5: (12, 0.99e-3, 1.41e-3), 3.0: (12, 1.0e-3, 0.8e-3)}


def default_echo_times(b0_t: float) -> np.ndarray:
    """Default echo times (s) at ``b0_t``: the seed-study protocol at 1.5 T (module constants)."""
    for field, (n, te1, dte) in _PROTOCOLS.items():
        if abs(float(b0_t) - field) <= 0.05:
            return te1 + dte * np.arange(n)
    n, te1, dte = _PROTOCOLS[1.5]
    return te1 + dte * 1.5 / float(b0_t) * np.arange(n)


def _poly(coeffs: Mapping[str, float], u, v, w, what: str):
    terms = {
        "1": lambda: 1.0,
        "x": lambda: u,
        "y": lambda: v,
        "z": lambda: w,
        "x2-y2": lambda: u**2 - v**2,
        "xy": lambda: u * v,
        "z2": lambda: w**2 - (u**2 + v**2) / 2,
    }
    unknown = sorted(set(coeffs) - set(terms))
    if unknown:
        raise QSMConfigError(f"{what}: unknown polynomial terms {unknown}; known: {list(terms)}")
    out = np.zeros(np.broadcast_shapes(u.shape, v.shape, w.shape))
    for key, value in coeffs.items():
        out = out + float(value) * terms[key]()
    return out


def _ellipsoid(u, v, w, center, semi):
    return (((u - center[0]) / semi[0]) ** 2 + ((v - center[1]) / semi[1]) ** 2
            + ((w - center[2]) / semi[2]) ** 2) <= 1.0


def _ellipse(u, v, center, semi):
    return (((u - center[0]) / semi[0]) ** 2 + ((v - center[1]) / semi[1]) ** 2) <= 1.0


def _anatomy(shape):
    """Labels and liver regions on a grid, from shapes in normalised coordinates in [−1, 1]."""
    nx, ny, nz = shape
    u = ((np.arange(nx) - (nx - 1) / 2) / (nx / 2))[:, None, None]
    v = ((np.arange(ny) - (ny - 1) / 2) / (ny / 2))[None, :, None]
    w = ((np.arange(nz) - (nz - 1) / 2) / (nz / 2))[None, None, :]
    full = np.zeros(shape, dtype=bool)
    labels = np.zeros(shape, dtype=np.int16)

    def put(mask, name):
        labels[mask & body] = _LABEL_OF[name]

    # Torso ellipse (semi-axes as fractions of the half field of view), all z.
    ta, tb = 0.85, 0.80
    body = full | _ellipse(u, v, (0.0, 0.0), (ta, tb))
    put(body, "subcutaneous_fat")
    wall_outer = full | _ellipse(u, v, (0.0, 0.0), (ta - 0.12, tb - 0.13))
    put(wall_outer, "muscle")
    cavity = full | _ellipse(u, v, (0.0, 0.0), (ta - 0.20, tb - 0.22))
    put(cavity, "bowel")
    # Omental (visceral) fat: anterior layer just inside the abdominal wall.
    omentum = cavity & ~_ellipse(u, v, (0.0, -0.04), (ta - 0.26, tb - 0.30)) & (v > 0.0)
    put(omentum, "visceral_fat")
    # Paraspinal muscles and vertebral column (posterior midline).
    para = _ellipse(u, v, (0.17, -0.62), (0.13, 0.12)) | _ellipse(u, v, (-0.17, -0.62),
                                                                     (0.13, 0.12))
    put(full | para, "muscle")
    put(full | _ellipse(u, v, (0.0, -0.42), (0.10, 0.12)), "spine")
    # Kidneys in perirenal fat (right kidney lower, as usual).
    for side, zc in ((1.0, -0.25), (-1.0, -0.10)):
        centre = (side * 0.33, -0.33, zc)
        put(_ellipsoid(u, v, w, centre, (0.15, 0.17, 0.50)), "visceral_fat")
        put(_ellipsoid(u, v, w, centre, (0.10, 0.12, 0.38)), "kidney")
    # Spleen: posterior left upper quadrant.
    put(_ellipsoid(u, v, w, (-0.45, -0.12, 0.25), (0.13, 0.22, 0.38)), "spleen")
    # Liver: right lobe plus a left lobe across the midline (anterior, superior).
    right = _ellipsoid(u, v, w, (0.33, 0.02, 0.22), (0.33, 0.48, 0.52)) & cavity
    left = _ellipsoid(u, v, w, (-0.12, 0.25, 0.32), (0.30, 0.22, 0.32)) & cavity & ~right
    put(right | left, "liver")
    # Bowel gas pockets (hepatic flexure near the liver, transverse colon, small bowel).
    for centre, semi in (((0.30, 0.30, -0.50), (0.10, 0.10, 0.16)),
                         ((-0.25, 0.35, -0.35), (0.12, 0.10, 0.18)),
                         ((-0.05, 0.15, -0.75), (0.09, 0.09, 0.16))):
        put(_ellipsoid(u, v, w, centre, semi), "bowel_gas")
    # Lungs: air-filled bases in the top slices, domes above the liver and spleen.
    lungs = (_ellipsoid(u, v, w, (0.35, -0.05, 1.45), (0.30, 0.45, 0.75))
             | _ellipsoid(u, v, w, (-0.35, -0.05, 1.35), (0.30, 0.45, 0.75))) & cavity
    put(lungs, "lungs")
    liver = labels == _LABEL_OF["liver"]
    regions = {"right_lobe": liver & right, "left_lobe": liver & left}
    return labels, regions, (u, v, w)


def _hepatic_vessel(liver: np.ndarray, voxel: np.ndarray) -> np.ndarray:
    """The portal-vein-like tube inside ``liver`` (boolean, same shape)."""
    nx, ny, nz = liver.shape
    u = ((np.arange(nx) - (nx - 1) / 2) / (nx / 2))[:, None, None]
    jc = round(_VESSEL_CENTRE_VW[0] * ny / 2 + (ny - 1) / 2)
    kc = round(_VESSEL_CENTRE_VW[1] * nz / 2 + (nz - 1) / 2)
    y_mm = ((np.arange(ny) - jc) * voxel[1])[None, :, None]
    z_mm = ((np.arange(nz) - kc) * voxel[2])[None, None, :]
    ry = max(_VESSEL_RADIUS_MM, float(voxel[1]))
    rz = max(_VESSEL_RADIUS_MM, 0.5 * float(voxel[2]))
    tube = ((y_mm / ry) ** 2 + (z_mm / rz) ** 2 <= 1.0) & (u >= _VESSEL_U_RANGE[0]) & (
        u <= _VESSEL_U_RANGE[1])
    return tube & liver


def _resolve_overrides(values: Mapping[str, float] | None, what: str) -> dict[str, float]:
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise QSMConfigError(f"{what} must be a dict of tissue name to value, got {values!r}")
    unknown = sorted(set(values) - set(DEFAULT_TISSUES))
    if unknown:
        raise QSMConfigError(f"{what}: unknown tissue names {unknown}; "
                             f"known: {sorted(DEFAULT_TISSUES)}")
    out = {}
    for key, value in values.items():
        value = float(value)
        if not math.isfinite(value):
            raise QSMConfigError(f"{what}[{key!r}] must be finite, got {value}")
        out[key] = value
    return out


def _resolve_lic(lic) -> dict[str, float]:
    if isinstance(lic, Mapping):
        unknown = sorted(set(lic) - set(LIVER_REGIONS))
        missing = sorted(set(LIVER_REGIONS) - set(lic))
        if unknown or missing:
            raise QSMConfigError(f"lic_mg_per_g: regions must be exactly {list(LIVER_REGIONS)}"
                                 f" (unknown {unknown}, missing {missing})")
        out = {k: float(lic[k]) for k in LIVER_REGIONS}
    else:
        out = dict.fromkeys(LIVER_REGIONS, float(lic))
    for key, value in out.items():
        if not (math.isfinite(value) and value >= 0):
            raise QSMConfigError(f"lic_mg_per_g[{key!r}] must be finite and >= 0, got {value}")
    return out


def _field_extended_z(chi, voxel, b0_dir, ext):
    """Dipole field of ``chi`` with the volume extended by ``ext`` edge-replicated slices in z."""
    if ext > 0:
        chi = np.pad(chi, ((0, 0), (0, 0), (ext, ext)), mode="edge")
    field = susceptibility_field_ppm(chi, voxel, b0_dir, pad_factor=2.0)
    return field[:, :, ext: field.shape[2] - ext] if ext > 0 else field


def abdomen_phantom(
    *,
    shape: Sequence[int] = (128, 104, 48),
    voxel_size_mm: ArrayLike | None = None,
    b0_t: float = 1.5,
    b0_dir: ArrayLike = (0.0, 0.0, 1.0),
    te_s: ArrayLike | None = None,
    snr: float | None = 50.0,
    lic_mg_per_g: float | Mapping[str, float] = 2.0,
    liver_pdff_percent: float = 5.0,
    fat_spectrum: str | FatSpectrum = "ismrm",
    chi_ppm: Mapping[str, float] | None = None,
    r2star_per_s: Mapping[str, float] | None = None,
    chi_slope_ppm_per_mg_g: float = iron.DEFAULT_CHI_SLOPE_PPM_PER_MG_G,
    liver_chi_offset_ppm: float = iron.DEFAULT_LIVER_CHI_OFFSET_PPM,
    shim_ppm: Mapping[str, float] | None = None,
    seed: int = 0,
    hepatic_vessel: bool = False,
) -> Phantom:
    """Multi-echo GRE of a numerical abdomen with an iron- and fat-loaded liver, with its truth.

    Parameters
    ----------
    shape : (3,) sequence of int
        Matrix size (x right-left, y antero-posterior, z head-foot); each >= 16 recommended.
    voxel_size_mm : (3,) array_like, optional
        Voxel size; default :data:`DEFAULT_FOV_MM` / shape (3 x 3 x 4 mm at the default shape).
    b0_t : float
        Field strength, tesla.
    b0_dir : (3,) array_like
        B0 direction in the voxel frame (default +z, head-foot).
    te_s : (E,) array_like, optional
        Echo times in s; default :func:`default_echo_times` (the seed protocol at 1.5 T:
        12 echoes, TE1 0.99 ms, ΔTE 1.41 ms; at 3 T TE1 1.0 ms, ΔTE 0.8 ms).
    snr : float or None
        Noise sigma = mean liver magnitude at the first echo / snr; None for noise-free data.
    lic_mg_per_g : float or dict
        Liver iron concentration (mg Fe/g dw): one value, or a dict with one value per region of
        :data:`LIVER_REGIONS` ("right_lobe", "left_lobe").
    liver_pdff_percent : float
        Liver proton-density fat fraction, percent (0-100).
    fat_spectrum : str or FatSpectrum
        Multi-peak fat model of the signal ("ismrm", "hamilton" or a FatSpectrum).
    chi_ppm : dict, optional
        Per-tissue χ overrides (ppm vs water). A "liver" entry replaces the LIC link.
    r2star_per_s : dict, optional
        Per-tissue R2* overrides (1/s, at ``b0_t``). A "liver" entry replaces the LIC link.
    chi_slope_ppm_per_mg_g, liver_chi_offset_ppm : float
        The LIC -> χ link (:func:`qsmliver.simulate.iron.lic_to_chi_ppm`; assumed defaults).
    shim_ppm : dict, optional
        Shim-residual polynomial coefficients (ppm); default :data:`DEFAULT_SHIM_PPM`; {} for none.
    seed : int
        Noise seed.
    hepatic_vessel : bool
        Add a portal-vein-like vessel through the liver (label :data:`VESSEL_LABEL`, mask
        "vessel", blood values :data:`VESSEL_TISSUE`; see the module docstring). Default False:
        the phantom is unchanged.

    Returns
    -------
    Phantom
        ``gre`` (complex64), ``truth`` (all :data:`TRUTH_UNITS` maps), ``labels`` /
        ``label_names`` (:data:`ABDOMEN_LABELS`, plus 11 "vessel" with ``hepatic_vessel``),
        ``masks`` ("body", "tissue", "object", "liver", "liver_right_lobe", "liver_left_lobe",
        plus "vessel" with ``hepatic_vessel``; the liver masks exclude the vessel) and a
        JSON-serialisable ``config``.

    Raises
    ------
    QSMConfigError
        Unknown tissue or region names, or invalid parameters.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise QSMConfigError(f"shape must be 3 integers >= 8, got {shape}")
    if voxel_size_mm is None:
        voxel = np.asarray(DEFAULT_FOV_MM) / np.asarray(shape)
    else:
        voxel = np.broadcast_to(np.asarray(voxel_size_mm, dtype=np.float64), (3,)).copy()
    if np.any(voxel <= 0):
        raise QSMConfigError(f"voxel_size_mm must be positive, got {voxel.tolist()}")
    b0_t = float(b0_t)
    if not (math.isfinite(b0_t) and b0_t > 0):
        raise QSMConfigError(f"b0_t must be a positive field strength in tesla, got {b0_t}")
    b0 = np.asarray(b0_dir, dtype=np.float64)
    if b0.shape != (3,) or not np.linalg.norm(b0) > 0:
        raise QSMConfigError(f"b0_dir must be a non-zero 3-vector, got {b0_dir}")
    b0 = b0 / np.linalg.norm(b0)
    te = default_echo_times(b0_t) if te_s is None else np.atleast_1d(
        np.asarray(te_s, dtype=np.float64))
    if snr is not None and not (math.isfinite(float(snr)) and float(snr) > 0):
        raise QSMConfigError(f"snr must be positive or None, got {snr}")
    pdff = float(liver_pdff_percent)
    if not 0.0 <= pdff <= 100.0:
        raise QSMConfigError(f"liver_pdff_percent must be within 0-100, got {pdff}")
    lic = _resolve_lic(lic_mg_per_g)
    chi_over = _resolve_overrides(chi_ppm, "chi_ppm")
    r2s_over = _resolve_overrides(r2star_per_s, "r2star_per_s")
    shim = dict(DEFAULT_SHIM_PPM if shim_ppm is None else shim_ppm)

    labels, regions, (u, v, w) = _anatomy(shape)
    label_names = dict(ABDOMEN_LABELS)
    tissue_table = DEFAULT_TISSUES
    vessel = None
    if hepatic_vessel:
        vessel = _hepatic_vessel(labels == _LABEL_OF["liver"], voxel)
        labels[vessel] = VESSEL_LABEL
        regions = {key: mask & ~vessel for key, mask in regions.items()}
        label_names[VESSEL_LABEL] = "vessel"
        tissue_table = {**DEFAULT_TISSUES, "vessel": VESSEL_TISSUE}

    # Per-tissue property maps through lookup tables indexed by label.
    n_labels = max(label_names) + 1
    lut = {key: np.zeros(n_labels) for key in ("water", "fat", "r2s", "chi")}
    tissues_used: dict[str, dict[str, float | None]] = {}
    for value, name in label_names.items():
        props = tissue_table[name]
        lut["water"][value] = props["water"]
        lut["fat"][value] = props["fat"]
        r2s = props["r2star_per_s_1p5t"]
        lut["r2s"][value] = r2s_over.get(name, 0.0 if r2s is None else r2s * b0_t / 1.5)
        lut["chi"][value] = chi_over.get(name, props["chi_ppm"] or 0.0)
        tissues_used[name] = {"water": props["water"], "fat": props["fat"],
                              "r2star_per_s": r2s_over.get(name, None if r2s is None
                                                           else r2s * b0_t / 1.5),
                              "chi_ppm": chi_over.get(name, props["chi_ppm"])}
    water = lut["water"][labels]
    fat = lut["fat"][labels]
    r2s_map = lut["r2s"][labels]
    chi = lut["chi"][labels]

    # Liver: PDFF split of the total proton density, LIC-driven R2* and χ per region.
    liver = labels == _LABEL_OF["liver"]
    pd_liver = DEFAULT_TISSUES["liver"]["water"] + DEFAULT_TISSUES["liver"]["fat"]
    water[liver] = pd_liver * (1.0 - pdff / 100.0)
    fat[liver] = pd_liver * pdff / 100.0
    lic_map = np.zeros(shape)
    for region, mask in regions.items():
        lic_map[mask] = lic[region]
        if "liver" not in r2s_over:
            r2s_map[mask] = iron.lic_to_r2star(lic[region], b0_t)
        if "liver" not in chi_over:
            chi[mask] = (iron.lic_to_chi_ppm(lic[region], chi_slope_ppm_per_mg_g,
                                             liver_chi_offset_ppm)
                         + pdff / 100.0 * CHI_FAT_PPM)
    total_pd = water + fat
    pdff_map = np.divide(100.0 * fat, total_pd, out=np.zeros(shape), where=total_pd > 0)

    # Fields: local (χ inside the tissue mask) + background (χ outside it, relative to air
    # so that the padding is air too) + shim residual.
    air_labels = [_LABEL_OF[name] for name in _AIR_TISSUES]
    tissue = ~np.isin(labels, air_labels)
    body = labels != _LABEL_OF["air"]
    ext = shape[2] // 2
    chi_local = np.where(tissue, chi, 0.0)
    chi_background = np.where(tissue, -CHI_AIR_PPM, chi - CHI_AIR_PPM)
    local = _field_extended_z(chi_local, voxel, b0, ext)
    shim_map = _poly(shim, *shim_coordinates(shape, voxel), "shim_ppm")
    background = _field_extended_z(chi_background, voxel, b0, ext) + shim_map
    total = local + background
    field_hz = total * GYROMAGNETIC_RATIO_HZ_PER_T * b0_t * 1e-6
    phi0 = _poly(DEFAULT_PHI0_RAD, u, v, w, "phi0") * np.ones(shape)

    signal = gre_signal(water, fat, te, b0_t, r2star_per_s=r2s_map, field_hz=field_hz,
                        phi0_rad=phi0, fat_spectrum=fat_spectrum)
    sigma = 0.0
    if snr is not None:
        sigma = float(np.mean(np.abs(signal[..., 0][liver]))) / float(snr)
        signal = add_complex_noise(signal, sigma, seed=seed)
    signal = signal.astype(np.complex64)

    affine = centred_affine(shape, voxel)
    lic_meta: float | dict[str, float] = (
        dict(lic) if isinstance(lic_mg_per_g, Mapping) else float(lic_mg_per_g))
    gre = MultiEchoGRE(signal, te_s=te, b0_t=b0_t, affine=affine, b0_dir=b0,
                       metadata={"Phantom": "abdomen", "LIC_mg_per_g": lic_meta})

    truth = {
        "chi_ppm": chi,
        "total_field_ppm": total,
        "total_field_hz": field_hz,
        "local_field_ppm": local,
        "background_field_ppm": background,
        "r2star_per_s": r2s_map,
        "water": water,
        "fat": fat,
        "pdff_percent": pdff_map,
        "lic_mg_per_g": lic_map,
        "phi0_rad": phi0,
    }
    masks = {
        "body": body,
        "tissue": tissue,
        "object": tissue,
        "liver": liver,
        "liver_right_lobe": regions["right_lobe"],
        "liver_left_lobe": regions["left_lobe"],
    }
    if vessel is not None:
        masks["vessel"] = vessel
    spectrum_cfg: Any = (dataclasses.asdict(fat_spectrum) if isinstance(fat_spectrum, FatSpectrum)
                         else str(fat_spectrum))
    config = {
        "phantom": "abdomen",
        "shape": list(shape),
        "voxel_size_mm": voxel.tolist(),
        "b0_t": b0_t,
        "b0_dir": b0.tolist(),
        "te_s": te.tolist(),
        "snr": None if snr is None else float(snr),
        "noise_sigma": sigma,
        "lic_mg_per_g": lic_meta,
        "liver_pdff_percent": pdff,
        "fat_spectrum": spectrum_cfg,
        "chi_ppm_overrides": chi_over,
        "r2star_per_s_overrides": r2s_over,
        "chi_slope_ppm_per_mg_g": float(chi_slope_ppm_per_mg_g),
        "liver_chi_offset_ppm": float(liver_chi_offset_ppm),
        "chi_fat_ppm": CHI_FAT_PPM,
        "chi_air_ppm": CHI_AIR_PPM,
        "r2star_calibration": iron.r2star_calibration_name(b0_t),
        "liver_r2star_per_s": {k: iron.lic_to_r2star(x, b0_t) for k, x in lic.items()},
        "shim_ppm": {k: float(x) for k, x in shim.items()},
        "phi0_rad": dict(DEFAULT_PHI0_RAD),
        "z_extension_slices": ext,
        "tissues": tissues_used,
        "seed": int(seed),
    }
    if vessel is not None:
        config["hepatic_vessel"] = {"label": VESSEL_LABEL, "voxels": int(vessel.sum()),
                                    "radius_mm": _VESSEL_RADIUS_MM,
                                    "centre_vw": list(_VESSEL_CENTRE_VW),
                                    "u_range": list(_VESSEL_U_RANGE)}
    return Phantom(gre=gre, truth=truth, labels=labels.astype(np.int16),
                   label_names=label_names, masks=masks, config=config)
