"""A numerical head phantom for brain QSM: anatomy from analytic shapes, with known truth.

The head is built from ellipsoids, a cylinder and spheres whose positions and sizes are
fractions of the field of view, so the same anatomy appears at any matrix size (every
structure keeps at least one voxel in its semi-axes, so matrices of about 40 voxels per axis
still contain every label). Structures, painted in this order (later ones win):

scalp (soft tissue), skull (bone), a paranasal sinus (air), subarachnoid CSF, cortical grey
matter, white matter, lateral ventricles (CSF), and left and right caudate, putamen, globus
pallidus, thalamus, red nucleus, substantia nigra and dentate nucleus, an internal
cerebral-like vein (a finite cylinder perpendicular to the default B0) and a calcification
(sphere).

Susceptibility is in ppm relative to CSF (≈ water), the usual brain QSM reference. Default
values (:data:`DEFAULT_CHI_PPM`) and their sources:

- air +9.4 ppm: air − water ≈ 0.36 − (−9.05) ppm (SI volume susceptibility; Schenck, Med Phys
  1996;23:815); Buch et al. (MRM 2015;73:2185) measured sinus − tissue ≈ +9.2 ± 1.3 ppm in vivo.
- skull (bone) −2.1 ppm: bone − tissue −2.1 ± 0.6 ppm (Buch et al., MRM 2015;73:2185).
- scalp 0.0 ppm (soft tissue taken as water-like), CSF 0.0 ppm (the reference).
- cortical grey matter +0.02 ppm, white matter −0.03 ppm: order of the GM/WM contrast of
  Li et al. (NeuroImage 2011;55:1645) and Deistung et al. (NeuroImage 2013;65:299), relative
  to CSF.
- deep grey matter (healthy adults at 3 T, DESIGN section 5; Deistung et al. NeuroImage
  2013;65:299; Langkammer et al. NeuroImage 2012;62:1593; Schweser et al. NeuroImage
  2011;54:2789; Li et al. NeuroImage 2011;55:1645): caudate +0.06, putamen +0.05, globus
  pallidus +0.18, thalamus +0.02, red nucleus +0.12, substantia nigra +0.14, dentate nucleus
  +0.10 ppm.
- vein +0.40 ppm: venous blood − tissue, Δχ ≈ Hct · (1 − Y) · Δχ_do with Δχ_do ≈ 3.4 ppm
  (SI), Hct ≈ 0.4 and Y ≈ 0.7 gives ≈ 0.4 ppm (Haacke et al., MRI 2005;23:1; Weisskoff &
  Kiihne, MRM 1992;24:375).
- calcification −0.15 ppm: diamagnetic (calcium-rich) lesion, a small Δχ to keep within the
  dynamic range of ordinary brain QSM; real calcifications range to −1 ppm and beyond
  (Chen et al., Radiology 2014;270:496; teeth −3.3 ppm in Buch et al. 2015).

R2* defaults (:data:`DEFAULT_R2STAR_PER_S`, 1/s, approximate 3 T values): GM 18, WM 21, CSF 4,
caudate 27, putamen 32, globus pallidus 50, thalamus 24, red nucleus 40, substantia nigra 45,
dentate nucleus 40 (order of Langkammer et al. Radiology 2010;257:455 and Péran et al. Brain
2007;130:1937 at 3 T), vein 45 (deoxygenated blood at 3 T), calcification 80, scalp 30,
skull 300 (very short T2* of cortical bone). Proton densities (:data:`DEFAULT_PROTON_DENSITY`)
are relative (CSF 1).

Field model. The total field is the Lorentz-corrected dipole field of the whole χ map with
air filling all space outside the head, by default every voxel a uniformly magnetised box (the
exact "cuboid" kernel of :func:`qsmliver.simulate.forward.susceptibility_field_ppm`, whose
field of outside sources is harmonic inside the brain, unlike the ringing k-space kernel;
``field_kernel="kspace"`` gives the forward model of qsm-forward instead): it is computed
as the zero-padded dipole convolution
of ``(χ − χ_air) · head`` (uniform χ filling all space produces no field, so this equals the
field of the full map without a field-of-view edge artefact), plus a smooth low-order
polynomial shim residual. It is split exactly into

- ``local_field_ppm``: the field of ``χ · brain`` (sources inside the brain mask, CSF = 0),
- ``background_field_ppm``: the field of the sources outside the brain mask plus the shim,

and ``total = local + background`` holds to floating-point rounding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

from qsmliver.data import GYROMAGNETIC_RATIO_HZ_PER_T, MultiEchoGRE
from qsmliver.errors import QSMConfigError
from qsmliver.geometry import centred_affine
from qsmliver.simulate.forward import shim_coordinates, susceptibility_field_ppm
from qsmliver.simulate.phantom import Phantom
from qsmliver.simulate.resample import block_mean, kspace_downsample
from qsmliver.simulate.signal import add_complex_noise, gre_signal

__all__ = [
    "BRAIN_LABELS",
    "DEFAULT_CHI_PPM",
    "DEFAULT_PROTON_DENSITY",
    "DEFAULT_R2STAR_PER_S",
    "DEFAULT_TE_S",
    "LABEL_TISSUE",
    "brain_phantom",
]

#: Susceptibility per tissue, ppm relative to CSF (sources in the module docstring).
DEFAULT_CHI_PPM: dict[str, float] = {
    "air": 9.4,
    "scalp": 0.0,
    "skull": -2.1,
    "csf": 0.0,
    "grey_matter": 0.02,
    "white_matter": -0.03,
    "caudate": 0.06,
    "putamen": 0.05,
    "globus_pallidus": 0.18,
    "thalamus": 0.02,
    "red_nucleus": 0.12,
    "substantia_nigra": 0.14,
    "dentate_nucleus": 0.10,
    "vein": 0.40,
    "calcification": -0.15,
}

#: R2* per tissue at 3 T, 1/s (approximate literature values; module docstring).
DEFAULT_R2STAR_PER_S: dict[str, float] = {
    "air": 0.0,
    "scalp": 30.0,
    "skull": 300.0,
    "csf": 4.0,
    "grey_matter": 18.0,
    "white_matter": 21.0,
    "caudate": 27.0,
    "putamen": 32.0,
    "globus_pallidus": 50.0,
    "thalamus": 24.0,
    "red_nucleus": 40.0,
    "substantia_nigra": 45.0,
    "dentate_nucleus": 40.0,
    "vein": 45.0,
    "calcification": 80.0,
}

#: Relative proton density per tissue (CSF = 1, air 0, bone low).
DEFAULT_PROTON_DENSITY: dict[str, float] = {
    "air": 0.0,
    "scalp": 0.75,
    "skull": 0.05,
    "csf": 1.0,
    "grey_matter": 0.82,
    "white_matter": 0.70,
    "caudate": 0.80,
    "putamen": 0.80,
    "globus_pallidus": 0.75,
    "thalamus": 0.76,
    "red_nucleus": 0.75,
    "substantia_nigra": 0.75,
    "dentate_nucleus": 0.75,
    "vein": 0.85,
    "calcification": 0.30,
}

#: Default echo times: 6 echoes, 4 to 24 ms (a typical 3 T brain QSM protocol), seconds.
DEFAULT_TE_S: tuple[float, ...] = (0.004, 0.008, 0.012, 0.016, 0.020, 0.024)


@dataclasses.dataclass(frozen=True)
class _Shape:
    """An analytic structure in normalised coordinates (fractions of the half field of view).

    ``kind`` is "ellipsoid" (``center``, ``semi``) or "cylinder" (axis along array axis
    ``axis``, ``semi`` = (radius, half length, radius) with the half length along ``axis``).
    """

    label: int
    name: str
    tissue: str
    kind: str
    center: tuple[float, float, float]
    semi: tuple[float, float, float]
    axis: int = 1


def _pair(label: int, tissue: str, center, semi) -> list[_Shape]:
    """A left and a right structure, mirrored in x (x = left→right, RAS)."""
    x, y, z = center
    return [
        _Shape(label, f"{tissue}_left", tissue, "ellipsoid", (-x, y, z), semi),
        _Shape(label + 1, f"{tissue}_right", tissue, "ellipsoid", (x, y, z), semi),
    ]


_SCALP = (0.72, 0.88, 0.82)  # outer head semi-axes, fractions of the half field of view
_SKULL_OUT = (0.67, 0.83, 0.77)
_SKULL_IN = (0.61, 0.77, 0.71)  # intracranial cavity = the brain mask
_CORTEX_OUT = (0.57, 0.73, 0.67)
_CORTEX_IN = (0.52, 0.68, 0.62)

#: Structures in painting order (later ones overwrite earlier ones).
_STRUCTURES: tuple[_Shape, ...] = (
    _Shape(1, "scalp", "scalp", "ellipsoid", (0.0, 0.0, 0.0), _SCALP),
    _Shape(2, "skull", "skull", "ellipsoid", (0.0, 0.0, 0.0), _SKULL_OUT),
    _Shape(3, "sinus", "air", "ellipsoid", (0.0, 0.50, -0.55), (0.12, 0.07, 0.07)),
    _Shape(4, "csf", "csf", "ellipsoid", (0.0, 0.0, 0.0), _SKULL_IN),
    _Shape(5, "grey_matter", "grey_matter", "ellipsoid", (0.0, 0.0, 0.0), _CORTEX_OUT),
    _Shape(6, "white_matter", "white_matter", "ellipsoid", (0.0, 0.0, 0.0), _CORTEX_IN),
    *_pair(7, "ventricle", (0.10, 0.05, 0.20), (0.06, 0.25, 0.06)),
    *_pair(9, "caudate", (0.20, 0.18, 0.12), (0.045, 0.10, 0.08)),
    *_pair(11, "putamen", (0.30, 0.05, 0.0), (0.05, 0.14, 0.09)),
    *_pair(13, "globus_pallidus", (0.22, 0.02, -0.02), (0.035, 0.08, 0.06)),
    *_pair(15, "thalamus", (0.10, -0.12, 0.02), (0.07, 0.11, 0.08)),
    *_pair(17, "red_nucleus", (0.05, -0.12, -0.16), (0.03, 0.03, 0.035)),
    *_pair(19, "substantia_nigra", (0.12, -0.08, -0.20), (0.025, 0.06, 0.03)),
    *_pair(21, "dentate_nucleus", (0.18, -0.40, -0.30), (0.05, 0.05, 0.04)),
    _Shape(23, "vein", "vein", "cylinder", (0.0, -0.10, 0.32), (0.02, 0.25, 0.02), axis=1),
    _Shape(24, "calcification", "calcification", "ellipsoid", (-0.28, 0.30, 0.20),
           (0.03, 0.03, 0.03)),
)
# the left/right helper names ventricles "ventricle_*"; their tissue is CSF
_STRUCTURES = tuple(
    dataclasses.replace(s, tissue="csf") if s.tissue == "ventricle" else s for s in _STRUCTURES
)

#: Label value -> label name (0 = air outside the head).
BRAIN_LABELS: dict[int, str] = {0: "air", **{s.label: s.name for s in _STRUCTURES}}

#: Label name -> tissue name (the key of the χ, R2* and proton-density tables).
LABEL_TISSUE: dict[str, str] = {"air": "air", **{s.name: s.tissue for s in _STRUCTURES}}

#: Signal-free labels (outside the "head" mask although inside the head outline).
_NO_SIGNAL = ("air",)


def _merge(name: str, defaults: Mapping[str, float], user: Mapping[str, float] | None):
    values = dict(defaults)
    if user is None:
        return values
    if not isinstance(user, Mapping):
        raise QSMConfigError(f"{name} must be a dict of tissue name to value, got {type(user)}")
    unknown = sorted(set(user) - set(defaults))
    if unknown:
        raise QSMConfigError(
            f"{name}: unknown tissue name(s) {unknown}; known: {sorted(defaults)}"
        )
    for key, value in user.items():
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise QSMConfigError(f"{name}[{key!r}] must be a number, got {value!r}") from None
        if not np.isfinite(value):
            raise QSMConfigError(f"{name}[{key!r}] must be finite, got {value}")
        values[key] = value
    return values


def _axes_mm(shape: Sequence[int], voxel: np.ndarray) -> list[np.ndarray]:
    """Open-grid voxel-centre positions (mm), centred on the matrix, broadcastable to shape."""
    out = []
    for axis, (n, v) in enumerate(zip(shape, voxel, strict=True)):
        a = (np.arange(n) - (n - 1) / 2.0) * v
        view = [1, 1, 1]
        view[axis] = n
        out.append(a.reshape(view))
    return out


def _inside(s: _Shape, axes: list[np.ndarray], half_fov: np.ndarray,
            min_semi_mm: np.ndarray):
    """Boolean mask of one structure (semi-axes at least ``min_semi_mm``)."""
    center = np.asarray(s.center) * half_fov
    semi = np.maximum(np.asarray(s.semi) * half_fov, min_semi_mm)
    d = [(a - c) / r for a, c, r in zip(axes, center, semi, strict=True)]
    if s.kind == "ellipsoid":
        return d[0] ** 2 + d[1] ** 2 + d[2] ** 2 <= 1.0
    others = [i for i in range(3) if i != s.axis]
    radial = d[others[0]] ** 2 + d[others[1]] ** 2 <= 1.0
    return radial & (np.abs(d[s.axis]) <= 1.0)


def _anatomy(shape: tuple[int, ...], voxel: np.ndarray,
             min_semi_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label map of the structures (painted in order) and the brain (intracranial) mask."""
    axes = _axes_mm(shape, voxel)
    half_fov = np.asarray(shape) * voxel / 2.0
    labels = np.zeros(shape, dtype=np.int16)
    brain = None
    for s in _STRUCTURES:
        inside = _inside(s, axes, half_fov, min_semi_mm)
        labels[inside] = s.label
        if s.name == "csf":
            brain = inside.copy()
    assert brain is not None
    return labels, brain


def _has_signal(labels: np.ndarray, proton_density: np.ndarray) -> np.ndarray:
    """Voxels with MR signal: not air, non-zero proton density."""
    no_signal = np.isin(labels, [v for v, n in BRAIN_LABELS.items()
                                 if LABEL_TISSUE[n] in _NO_SIGNAL])
    return ~no_signal & (proton_density > 0)


def _smooth_field(shape, rng: np.random.Generator, n_waves: int = 8) -> np.ndarray:
    """A smooth random field (sum of low-frequency plane waves), max |value| = 1.

    Wave numbers 0.5-2 cycles per field of view, random directions and phases, so the
    texture looks the same at any matrix size.
    """
    u = [(np.arange(n) + 0.5) / n - 0.5 for n in shape]  # fractions of the FOV
    u = [a.reshape([-1 if i == j else 1 for j in range(3)]) for i, a in enumerate(u)]
    field = np.zeros(tuple(shape))
    for _ in range(n_waves):
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        k = rng.uniform(0.5, 2.0) * direction
        phase = rng.uniform(0, 2 * np.pi)
        field += np.cos(2 * np.pi * (k[0] * u[0] + k[1] * u[1] + k[2] * u[2]) + phase)
    return field / max(float(np.abs(field).max()), 1e-12)


def _shim_polynomial(shape, voxel: np.ndarray, rng: np.random.Generator,
                     head: np.ndarray) -> np.ndarray:
    """First- and second-order solid spherical harmonics, max |value| over the head = 1.

    The terms are in :func:`~qsmliver.simulate.forward.shim_coordinates` (one length for all
    axes), so each is harmonic whatever the field of view's aspect ratio.
    """
    x, y, z = shim_coordinates(shape, voxel)
    terms = [x, y, z, x * y, x * z, y * z, x * x - y * y, 2 * z * z - x * x - y * y]
    coefs = rng.uniform(-1.0, 1.0, len(terms))
    field = np.zeros(tuple(shape))
    for c, t in zip(coefs, terms, strict=True):
        field = field + c * t
    scale = float(np.abs(field[head]).max()) if head.any() else float(np.abs(field).max())
    return field / max(scale, 1e-12)


def _check_inputs(shape, voxel_size_mm, b0_t, b0_dir, te_s, snr):
    try:
        shape = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        raise QSMConfigError(f"shape must be 3 integers, got {shape!r}") from None
    if len(shape) != 3 or min(shape) < 8:
        raise QSMConfigError(f"shape must be 3 integers >= 8, got {shape}")
    voxel = np.asarray(voxel_size_mm, dtype=np.float64)
    if voxel.shape != (3,) or not np.all(np.isfinite(voxel)) or np.any(voxel <= 0):
        raise QSMConfigError(f"voxel_size_mm must be 3 positive numbers, got {voxel_size_mm}")
    if not np.isfinite(b0_t) or b0_t <= 0:
        raise QSMConfigError(f"b0_t must be positive, got {b0_t}")
    b0 = np.asarray(b0_dir, dtype=np.float64)
    if b0.shape != (3,) or not np.all(np.isfinite(b0)) or np.linalg.norm(b0) == 0:
        raise QSMConfigError(f"b0_dir must be a non-zero 3-vector, got {b0_dir}")
    te = np.atleast_1d(np.asarray(te_s, dtype=np.float64))
    if te.ndim != 1 or np.any(te <= 0) or np.any(np.diff(te) <= 0):
        raise QSMConfigError(f"te_s must be positive and strictly increasing, got {te_s}")
    if snr is not None and (not np.isfinite(snr) or snr <= 0):
        raise QSMConfigError(f"snr must be positive or None, got {snr}")
    return shape, voxel, b0 / np.linalg.norm(b0), te


def brain_phantom(
    *,
    shape: Sequence[int] = (128, 128, 96),
    voxel_size_mm: ArrayLike = (1.5, 1.5, 1.5),
    b0_t: float = 3.0,
    b0_dir: ArrayLike = (0.0, 0.0, 1.0),
    te_s: ArrayLike = DEFAULT_TE_S,
    snr: float | None = 100.0,
    chi_ppm: Mapping[str, float] | None = None,
    r2star_per_s: Mapping[str, float] | None = None,
    proton_density: Mapping[str, float] | None = None,
    texture_ppm: float = 0.005,
    shim_ppm: float = 0.1,
    b1_shading: float = 0.1,
    phi0_amplitude_rad: float = 1.0,
    pad_factor: float = 2.0,
    field_kernel: str = "cuboid",
    oversample: int = 1,
    seed: int = 0,
) -> Phantom:
    """Multi-echo GRE of a numerical head with brain anatomy and known χ, field and R2*.

    Parameters
    ----------
    shape : (3,) sequence of int
        Matrix size (x = left→right, y = posterior→anterior, z = inferior→superior). The
        anatomy scales with the field of view ``shape · voxel_size_mm``.
    voxel_size_mm : (3,) array_like
        Voxel size, mm.
    b0_t : float
        Field strength, tesla.
    b0_dir : (3,) array_like
        B0 direction in the voxel frame (normalised here).
    te_s : (E,) array_like
        Echo times, seconds. Default :data:`DEFAULT_TE_S` (6 echoes, 4-24 ms).
    snr : float or None
        Mean brain magnitude at the first echo divided by the noise standard deviation of the
        real (and of the imaginary) channel. None: no noise.
    chi_ppm, r2star_per_s, proton_density : dict of str to float, optional
        Per-tissue overrides of :data:`DEFAULT_CHI_PPM` (ppm relative to CSF),
        :data:`DEFAULT_R2STAR_PER_S` (1/s) and :data:`DEFAULT_PROTON_DENSITY` (relative).
        Keys are tissue names (values of :data:`LABEL_TISSUE`); left and right share a value.
    texture_ppm : float
        Maximum absolute smooth random χ variation added in grey and white matter, ppm.
    shim_ppm : float
        Maximum absolute shim residual over the head (first- and second-order polynomial,
        random coefficients), ppm of B0 (0.1 ppm = 12.8 Hz at 3 T).
    b1_shading : float
        Maximum relative smooth magnitude (transmit/receive) modulation: the magnitude is
        multiplied by ``1 + b1_shading · s`` with ``|s| <= 1`` smooth.
    phi0_amplitude_rad : float
        Maximum absolute smooth initial phase φ0, radians.
    pad_factor : float
        Zero padding of the dipole convolution (>= 2 avoids wrap-around).
    field_kernel : {"cuboid", "kspace"}
        Forward model of the fields (:func:`qsmliver.simulate.forward.susceptibility_field_ppm`).
        "cuboid" (default): every voxel a uniformly magnetised box, whose field of outside
        sources is harmonic inside the brain. "kspace": the sampled continuous k-space kernel
        that the inversions use, as in qsm-forward and the QSM challenges' simulations (an
        "inverse crime": the inversion sees exactly its own model, notably next to the skull).
    oversample : int
        1 (default): anatomy, fields and signal are computed on the acquired grid, the field
        sampled at the voxel centres. ``n > 1``: they are computed on a grid ``n`` times finer
        along each axis and each echo is then band-limited to the acquired grid by cropping
        its spectrum (:func:`qsmliver.simulate.resample.kspace_downsample`), as a scanner
        acquires it (partial volumes, intravoxel dephasing, ringing). The truth maps (χ,
        fields, R2*, ``water``, φ0) are the means over each acquired voxel (a voxel mean of a
        field harmonic in the brain stays harmonic); labels and masks are the acquired
        grid's, so the brain mask's edge voxels hold partial volumes of CSF and bone. This is
        the more realistic model when B0 is oblique to the voxel axes: the field of
        piecewise-constant χ sampled at voxel centres aliases spectral content beyond the
        grid's band, which the k-space dipole kernel of the inversions (exact for
        band-limited data) does not describe (``benchmarks/brain_oblique.py``). Costs ``n³``
        in memory and time.
    seed : int
        Seed of the texture, shading, φ0, shim and noise; the noise-free part does not
        depend on ``snr``.

    Returns
    -------
    Phantom
        ``gre`` (complex64, affine centred on the matrix, vendor "qsmliver.simulate");
        ``truth`` with ``chi_ppm`` (ppm, air = χ_air), ``total_field_ppm``,
        ``local_field_ppm``, ``background_field_ppm`` (ppm of B0), ``total_field_hz`` (Hz),
        ``r2star_per_s`` (1/s), ``water`` (signal amplitude at TE = 0: proton density times
        the magnitude shading, a.u.), ``fat`` (zeros) and ``phi0_rad`` (rad); ``labels`` with
        :data:`BRAIN_LABELS`; ``masks`` "brain" (the intracranial cavity: parenchyma, CSF,
        vessels) and "head" (every voxel with signal); ``config`` (JSON-serialisable).

    Raises
    ------
    QSMConfigError
        For an unknown tissue name in an override, or invalid geometry/protocol parameters.

    Examples
    --------
    >>> ph = brain_phantom(shape=(48, 48, 40), snr=None)
    >>> ph.gre.n_echoes, ph.label_names[13]
    (6, 'globus_pallidus_left')
    """
    shape, voxel, b0, te = _check_inputs(shape, voxel_size_mm, b0_t, b0_dir, te_s, snr)
    chi_table = _merge("chi_ppm", DEFAULT_CHI_PPM, chi_ppm)
    r2s_table = _merge("r2star_per_s", DEFAULT_R2STAR_PER_S, r2star_per_s)
    pd_table = _merge("proton_density", DEFAULT_PROTON_DENSITY, proton_density)
    if pad_factor < 1:
        raise QSMConfigError(f"pad_factor must be >= 1, got {pad_factor}")
    if field_kernel not in ("cuboid", "kspace"):
        raise QSMConfigError(f"field_kernel must be 'cuboid' or 'kspace', got {field_kernel!r}")
    rng_texture, rng_b1, rng_phi0, rng_shim, rng_noise = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)
    )

    if isinstance(oversample, bool) or int(oversample) != oversample or oversample < 1:
        raise QSMConfigError(f"oversample must be a positive integer, got {oversample!r}")
    factor = int(oversample)

    # --- anatomy (on the fine grid when oversampling; structure sizes floored at one
    # acquired voxel either way, so that the fine anatomy is the acquired grid's) ---------
    fine_shape = tuple(n * factor for n in shape)
    fine_voxel = voxel / factor
    labels, brain = _anatomy(fine_shape, fine_voxel, min_semi_mm=voxel)
    label_names = dict(BRAIN_LABELS)

    # per-label lookup tables
    n_lut = max(label_names) + 1
    chi_lut = np.zeros(n_lut)
    r2s_lut = np.zeros(n_lut)
    pd_lut = np.zeros(n_lut)
    for value, name in label_names.items():
        tissue = LABEL_TISSUE[name]
        chi_lut[value] = chi_table[tissue]
        r2s_lut[value] = r2s_table[tissue]
        pd_lut[value] = pd_table[tissue]
    chi = chi_lut[labels]
    r2s = r2s_lut[labels]
    pd = pd_lut[labels]

    texture_labels = [v for v, n in label_names.items()
                      if LABEL_TISSUE[n] in ("grey_matter", "white_matter")]
    textured = np.isin(labels, texture_labels)
    chi[textured] += texture_ppm * _smooth_field(fine_shape, rng_texture)[textured]

    head = _has_signal(labels, pd)
    pd[~head] = 0.0
    r2s[~head] = 0.0

    # --- fields --------------------------------------------------------------------------
    chi_air = chi_table["air"]
    inside_head_outline = labels != 0
    source_total = np.where(inside_head_outline, chi - chi_air, 0.0)
    source_local = np.where(brain, chi, 0.0)
    local = susceptibility_field_ppm(source_local, fine_voxel, b0, pad_factor=pad_factor,
                                     kernel=field_kernel)
    external = susceptibility_field_ppm(source_total - source_local, fine_voxel, b0,
                                        kernel=field_kernel, pad_factor=pad_factor)
    shim = shim_ppm * _shim_polynomial(fine_shape, fine_voxel, rng_shim, head)
    background = external + shim

    # --- signal --------------------------------------------------------------------------
    shading = 1.0 + b1_shading * _smooth_field(fine_shape, rng_b1, n_waves=3)
    water = pd * shading
    phi0 = phi0_amplitude_rad * _smooth_field(fine_shape, rng_phi0, n_waves=3)
    field_hz = (local + background) * (GYROMAGNETIC_RATIO_HZ_PER_T * b0_t * 1e-6)
    signal = gre_signal(water, np.zeros(fine_shape), te, b0_t, r2star_per_s=r2s,
                        field_hz=field_hz, phi0_rad=phi0, dtype=np.complex64)
    if factor > 1:
        # what the scanner acquires: the central 1/factor of the spectrum of each echo. The
        # truth is the mean over each acquired voxel, fields included: a voxel mean of a field
        # harmonic inside the brain stays harmonic there (a band-limited one would not: it
        # rings with the strong fields in the air, where the signal is void), and it is what
        # the echo phase follows (measured deep in the brain: 0.7 Hz median difference,
        # against 1.8 Hz for the band-limited field).
        signal = kspace_downsample(signal, factor)
        chi, r2s, water, phi0, local, background = (
            block_mean(a, factor) for a in (chi, r2s, water, phi0, local, background))
        labels, brain = _anatomy(shape, voxel, min_semi_mm=voxel)
        head = _has_signal(labels, pd_lut[labels])
    total = local + background
    field_hz = total * (GYROMAGNETIC_RATIO_HZ_PER_T * b0_t * 1e-6)
    sigma = None
    if snr is not None:
        mean_brain = float(np.abs(signal[..., 0][brain & head]).mean())
        sigma = mean_brain / float(snr)
        signal = add_complex_noise(signal, sigma, seed=rng_noise)

    affine = centred_affine(shape, voxel)
    config = {
        "phantom": "brain",
        "shape": list(shape),
        "voxel_size_mm": voxel.tolist(),
        "b0_t": float(b0_t),
        "b0_dir": b0.tolist(),
        "te_s": te.tolist(),
        "snr": None if snr is None else float(snr),
        "noise_sigma": sigma,
        "chi_ppm": chi_table,
        "chi_reference": "csf",
        "r2star_per_s": r2s_table,
        "proton_density": pd_table,
        "texture_ppm": float(texture_ppm),
        "shim_ppm": float(shim_ppm),
        "b1_shading": float(b1_shading),
        "phi0_amplitude_rad": float(phi0_amplitude_rad),
        "pad_factor": float(pad_factor),
        "field_kernel": field_kernel,
        "oversample": factor,
        "seed": int(seed),
        "labels": {str(k): v for k, v in label_names.items()},
        "label_tissue": dict(LABEL_TISSUE),
        "brain_mask": "intracranial cavity (inside the inner skull surface)",
    }
    gre = MultiEchoGRE(signal, te_s=te, b0_t=b0_t, affine=affine, b0_dir=b0,
                       vendor="qsmliver.simulate", metadata={"Phantom": "brain"})
    truth = {
        "chi_ppm": chi,
        "total_field_ppm": total,
        "total_field_hz": field_hz,
        "local_field_ppm": local,
        "background_field_ppm": background,
        "r2star_per_s": r2s,
        "water": water,
        "fat": np.zeros(shape),
        "pdff_percent": np.zeros(shape),  # no fat in the brain phantom
        "phi0_rad": phi0,
    }
    masks = {"brain": brain, "head": head}
    return Phantom(gre=gre, truth=truth, labels=labels, label_names=label_names,
                   masks=masks, config=config)
