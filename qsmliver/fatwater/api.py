"""Fat-water separation: one entry point from multi-echo complex echoes to water, fat, field,
R2* and PDFF maps.

Stages (all vectorised over voxels; the graph cut runs on the host with PyMaxflow):

1. Signal mask (when none is given): Otsu's threshold of the log of the root-sum-of-squares
   magnitude over echoes (the log keeps dark, iron-loaded tissue above the noise class), small
   enclosed holes filled and small specks removed; large signal voids (air, lungs, bowel gas)
   stay outside.
2. VARPRO cost of every masked voxel for a grid of field candidates spanning one period
   ``1/ΔTE`` and R2* candidates from 0 to 2000 1/s at 1.5 T (scaled with B0), minimised over
   R2* (:mod:`qsmliver.fatwater.varpro`).
3. Field-map selection: graph cut (:mod:`qsmliver.fatwater.fieldmap`; Hernando et al. MRM
   2010;63:79) or the per-voxel minimum ("voxelwise", no regularisation: a baseline). With
   the default object-based prior (option ``field_prior="air"``, :mod:`qsmliver.fatwater.prior`;
   Sharma et al. MRM 2015;73:597) the dipole field of the air around the signal, scaled and
   fitted with a quadratic shim to the first graph cut's map, becomes the reference of the
   smoothness term of a second graph cut, so that the steep field near lungs and bowel gas is
   not traded for a fat alias; the prior is used only when it explains the first map clearly
   better than the shim polynomial alone.
4. T2*-IDEAL refinement of (ψ, R2*) per voxel (:mod:`qsmliver.fatwater.ideal`), within 0.4 of
   the main fat shift of the selected field; voxels whose signal is at the noise level (signal
   energy below 3 times the median residual of the refined fit, e.g. voids inside a user
   mask) keep the selected field. So do voxels whose field the echoes cannot place (its
   Cramér-Rao standard deviation above 0.2 of the main fat shift, e.g. R2* above ~1100 1/s
   with the 1.5 T protocol, where the signal is gone after two echoes); their R2* is fitted
   with the field held. Water and fat by linear least squares.
5. PDFF with magnitude discrimination (:mod:`qsmliver.fatwater.pdff`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import chi2

from qsmliver import backend
from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.fatwater.fieldmap import (
    DEFAULT_SMOOTHNESS,
    graphcut_field_map,
    voxelwise_field_map,
)
from qsmliver.fatwater.ideal import ideal_refine
from qsmliver.fatwater.noise import field_crb_std_hz
from qsmliver.fatwater.pdff import pdff_magnitude_discrimination
from qsmliver.fatwater.prior import air_dipole_field_ppm, fit_air_field_prior
from qsmliver.fatwater.spectra import FatSpectrum, get_fat_spectrum
from qsmliver.fatwater.varpro import (
    field_candidates,
    r2star_candidates,
    varpro_cost,
    varpro_solve,
)
from qsmliver.noise import residual_noise_level

__all__ = ["FATWATER_METHODS", "FatWaterResult", "separate_fat_water", "signal_mask"]

Array = Any

#: Methods accepted by :func:`separate_fat_water` (the first is the default).
FATWATER_METHODS: tuple[str, ...] = ("graphcut", "voxelwise")

#: Signal mask: a background (noise-only) voxel passes with at most this probability.
_NOISE_FALSE_POSITIVE = 1e-9

#: Signal mask: a background with at least this fraction of exactly zero voxels is known (the
#: data are noise-free or already masked), so the lower Otsu class is noise only if it looks it.
_ZERO_BACKGROUND_FRACTION = 0.01
#: Signal mask: fewest voxels in a class for the echo-power test of :func:`_noise_like`.
_NOISE_MIN_VOXELS = 30

#: T2*-IDEAL refinement: where the Cramér-Rao std of the field exceeds this fraction of the main
#: fat shift, the field is not refined (only R2* is); see :func:`_field_unresolved`.
_UNRESOLVED_FAT_FRACTION = 0.2

#: Voxels with a signal energy below this multiple of the typical residual at the optimum are
#: at the noise level: they keep the selected (smooth) field and the grid R2*.
_WEAK_FACTOR = 3.0

#: Options (keyword arguments) and their defaults.
_OPTIONS: dict[str, Any] = {
    "max_cycles": 12,  # graph cut: cycles over all moves
    "max_iter": 30,  # T2*-IDEAL Gauss-Newton iterations
    "tol_hz": 1e-3,  # T2*-IDEAL tolerance on the update of ψ and R2*/2π
    "max_shift_hz": None,  # T2*-IDEAL: largest move from the selected field (default 0.4·f_fat)
    "field_range_hz": None,  # explicit (low, high) field candidate range (bounded grid)
    "chunk_voxels": None,  # VARPRO voxels per chunk (default: about 4e6 complex values)
    "field_prior": "air",  # graph cut: "air" (object-based prior, Sharma 2015) or None
}


@dataclasses.dataclass(eq=False)
class FatWaterResult:
    """Result of :func:`separate_fat_water`; arrays on the backend of the input signal.

    Attributes
    ----------
    water, fat : (X, Y, Z) complex ndarray
        Water and fat amplitudes (signal units, carrying the initial phase φ0); 0 outside
        ``mask``.
    field_hz : (X, Y, Z) float ndarray
        Chemical-shift-free B0 offset ψ, Hz, smooth inside ``mask``, 0 outside.
    r2star_per_s : (X, Y, Z) float ndarray
        R2* common to water and fat (fat-corrected), 1/s.
    pdff_percent : (X, Y, Z) float ndarray
        Proton-density fat fraction, percent 0-100, with magnitude discrimination.
    residual : (X, Y, Z) float ndarray
        Relative fit residual ``||S − model|| / ||S||`` (0..1, a quality map).
    field_std_hz : (X, Y, Z) float ndarray
        Standard deviation of ``field_hz``, Hz: the Cramér-Rao bound of each voxel's fit
        (:func:`~qsmliver.fatwater.noise.field_crb_std_hz`) times one noise level estimated
        from the residuals of all separated voxels
        (:func:`~qsmliver.noise.residual_noise_level`, ``2E − 6`` degrees of freedom;
        recorded as ``parameters["noise_std_per_component"]``); ``inf`` outside ``mask``.
        With 3 echoes there is no residual to estimate the level from; it is then 1 and the
        map is relative. The data weight of hepatic QSM.
    mask : (X, Y, Z) bool ndarray
        Voxels that were separated.
    parameters : dict
        JSON-serialisable record: method, spectrum, B0, echo times, candidate grids, graph-cut
        and refinement statistics, timings.
    """

    water: Array
    fat: Array
    field_hz: Array
    r2star_per_s: Array
    pdff_percent: Array
    residual: Array
    field_std_hz: Array
    mask: Array
    parameters: dict[str, Any]


def signal_mask(signal: Array) -> Array:
    """Voxels with signal: Otsu's threshold of the log root-sum-of-squares magnitude.

    The threshold is lowered to the noise level when that is lower, so that dark tissue such as
    a heavily iron-loaded liver is kept. The class below Otsu's threshold is then background
    noise: for complex Gaussian noise its root-sum-of-squares over E echoes is σ·sqrt(χ²_2E),
    so σ follows from its median, and the threshold is where a noise voxel passes with
    probability 1e-9, ``median · sqrt(χ²_2E.isf(1e-9) / χ²_2E.median)`` (3.2 times the median
    for 3 echoes, 2.0 for 12: more echoes average the noise down).

    Noise-free or already masked data (at least 1 % of the voxels exactly zero) are the
    exception: there the lower class may be tissue with nothing below it. It is taken as noise
    only if it has the same mean power at every echo (:func:`_noise_like`); a class that decays
    or beats with fat is tissue, and every non-zero voxel is kept.

    Parameters
    ----------
    signal : (X, Y, Z, E) complex ndarray
        Multi-echo echoes (NumPy or CuPy).

    Returns
    -------
    (X, Y, Z) bool ndarray
        The mask, with enclosed holes of at most ``max(8, 0.1 %)`` of its voxels filled and
        connected components of at most that size removed. Larger voids (lungs, bowel gas)
        stay outside.

    Raises
    ------
    QSMInputError
        When the image is constant (no threshold exists).
    """
    from qsmliver.mask.brain import otsu_threshold

    xp = backend.get_array_module(signal)
    nd = backend.ndimage(xp)
    rss = xp.sqrt(xp.sum(xp.abs(signal) ** 2, axis=-1))
    positive = rss[rss > 0]
    if positive.size == 0:
        raise QSMInputError("the signal is zero everywhere; no mask can be derived",
                            field="signal")
    threshold = math.exp(otsu_threshold(xp.log(positive)))
    # When the lower class is background noise, tissue is anything well above it: this keeps
    # dark (iron-loaded) tissue that a third histogram mode would put below Otsu's threshold.
    lower = (rss > 0) & (rss <= threshold)
    background = rss[lower]
    zero_background = rss.size - positive.size >= max(8, _ZERO_BACKGROUND_FRACTION * rss.size)
    if zero_background and not _noise_like(signal[lower]):
        # An exactly zero background (noise-free or already masked data) and a lower class
        # that is not noise: that class is dark tissue, and every voxel with signal is kept.
        threshold = 0.0
    elif background.size:
        dof = 2 * int(signal.shape[-1])
        factor = math.sqrt(chi2.isf(_NOISE_FALSE_POSITIVE, dof) / chi2.median(dof))
        threshold = min(threshold, factor * float(xp.median(background)))
    mask = rss > threshold
    limit = max(8, int(0.001 * int(mask.sum())))
    # Remove small components (noise specks) and fill small enclosed holes.
    for target in (True, False):
        region = mask if target else ~mask
        labels, count = nd.label(region)
        if int(count) == 0:
            continue
        sizes = xp.bincount(labels.ravel())
        small = sizes <= limit
        small[0] = False
        if not target:
            # Holes are background components that do not touch the volume border.
            border = xp.zeros(mask.shape, dtype=bool)
            for axis in range(mask.ndim):
                if mask.shape[axis] <= 2:
                    continue  # a thin slab: every voxel would be on this border
                index = [slice(None)] * mask.ndim
                index[axis] = 0
                border[tuple(index)] = True
                index[axis] = -1
                border[tuple(index)] = True
            touching = xp.unique(labels[border & region])
            small[touching] = False
        flip = small[labels]
        mask = mask & ~flip if target else mask | flip
    return mask


def _field_unresolved(values: Array, field: Array, r2s: Array, residual: Array, weak: Array,
                      te: np.ndarray, b0: float, spec: FatSpectrum, limit_hz: float) -> Array:
    """Voxels whose field the echoes cannot place: Cramér-Rao std of ψ above ``limit_hz``.

    The bound is taken at the selected field and grid R2* (water and fat by least squares),
    not at the free fit, which in such voxels trades the missing decay for fat and a lower
    R2* and so looks better determined than it is. The noise level comes from the free fit's
    residuals (:func:`qsmliver.noise.residual_noise_level`); without residual degrees of
    freedom (3 echoes) or for an exact fit (noise-free data) no voxel is unresolved.
    """
    xp = backend.get_array_module(values)
    dof = 2 * te.size - 6
    usable = residual[~weak] if bool((~weak).any()) else residual
    if dof < 1 or not float(xp.median(usable)) > 0:
        return xp.zeros(values.shape[0], dtype=bool)
    level = residual_noise_level(usable, dof)
    water, fat, _ = varpro_solve(values, te, b0, field, r2s, spectrum=spec)
    std = field_crb_std_hz(water, fat, r2s, te, b0, spectrum=spec) * level
    return ~weak & ~(std <= limit_hz)


def _noise_like(values: Array) -> bool:
    """Whether voxels (N, E) look like pure noise: the same mean power at every echo.

    Complex Gaussian noise has a mean power σ² at every echo, so over N voxels the per-echo
    means scatter by about 1/sqrt(N) relative; tissue decays with R2* and beats with fat. The
    tolerance, ``1 + 8/sqrt(N)``, passes noise with near certainty and rejects a class that
    decays by a few percent across the echo train.
    """
    xp = backend.get_array_module(values)
    count = int(values.shape[0])
    if count < _NOISE_MIN_VOXELS:
        return False
    power = xp.mean(values.real.astype(xp.float64) ** 2 + values.imag.astype(xp.float64) ** 2,
                    axis=0)
    low, high = float(power.min()), float(power.max())
    return low > 0 and high / low < 1.0 + 8.0 / math.sqrt(count)


def _validate(signal, te_s, b0_t, mask, voxel_size_mm):
    xp = backend.get_array_module(signal)
    s = xp.asarray(signal)
    if s.ndim != 4:
        raise QSMInputError(f"signal must be a 4-D (X, Y, Z, echoes) array, got shape {s.shape}"
                            " (use Z = 1 for a single slice)", field="signal")
    if s.dtype.kind != "c":
        raise QSMInputError(f"signal must be complex (magnitude and phase), got {s.dtype}",
                            field="signal")
    try:
        te = np.asarray(backend.to_numpy(te_s), dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise QSMInputError(f"echo times must be numbers (s), got {te_s!r}",
                            field="te_s") from None
    if te.size != s.shape[-1]:
        raise QSMInputError(f"{te.size} echo times for {s.shape[-1]} echoes", field="te_s")
    if te.size < 3:
        raise QSMInputError(f"fat-water separation with R2* needs at least 3 echoes, got "
                            f"{te.size}", field="te_s")
    if not np.all(np.isfinite(te)) or np.any(te < 0) or np.any(np.diff(te) <= 0):
        raise QSMInputError(f"echo times must be finite, >= 0 and strictly increasing (s), got "
                            f"{te.tolist()}", field="te_s")
    if te.max() > 1.0:
        raise QSMInputError(f"echo times must be in seconds, got {te.tolist()}", field="te_s")
    try:
        b0 = float(b0_t)
    except (TypeError, ValueError):
        raise QSMInputError(f"b0_t must be a number (tesla), got {b0_t!r}",
                            field="b0_t") from None
    if not (math.isfinite(b0) and b0 > 0):
        raise QSMInputError(f"b0_t must be a positive field strength in tesla, got {b0_t!r}",
                            field="b0_t")
    voxel = np.asarray(voxel_size_mm, dtype=np.float64).reshape(-1)
    if voxel.size != 3 or not np.all(np.isfinite(voxel)) or np.any(voxel <= 0):
        raise QSMInputError(f"voxel_size_mm must be 3 positive numbers (mm), got "
                            f"{voxel_size_mm!r}", field="voxel_size_mm")
    if mask is not None:
        mask = xp.asarray(mask)
        if mask.shape != s.shape[:3]:
            raise QSMInputError(f"mask shape {mask.shape} does not match the image shape "
                                f"{s.shape[:3]}", field="mask")
        mask = mask != 0
        if not bool(mask.any()):
            raise QSMInputError("the mask is empty", field="mask")
    return xp, s, te, b0, mask, voxel


def _unit_vector(b0_dir: ArrayLike) -> np.ndarray:
    """``b0_dir`` as a finite unit 3-vector."""
    try:
        vector = np.asarray(b0_dir, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        vector = np.zeros(0)
    norm = float(np.linalg.norm(vector)) if vector.size == 3 else 0.0
    if vector.size != 3 or not (math.isfinite(norm) and norm > 0):
        raise QSMInputError(f"b0_dir must be a non-zero finite 3-vector, got {b0_dir!r}",
                            field="b0_dir")
    return vector / norm


def _signal_support(signal: Array) -> Array:
    """Voxels with signal (:func:`signal_mask`), or none when no threshold exists."""
    try:
        return signal_mask(signal)
    except QSMInputError:
        xp = backend.get_array_module(signal)
        return xp.zeros(signal.shape[:3], dtype=bool)


def _resolve_options(method: str, options: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(method, str) or method.lower() not in FATWATER_METHODS:
        raise QSMConfigError(f"unknown fat-water method {method!r}; valid: "
                             f"{', '.join(FATWATER_METHODS)}")
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise QSMConfigError(f"unknown option(s) {unknown} for fat-water separation; valid: "
                             f"{', '.join(_OPTIONS)}")
    settings = {**_OPTIONS, **options}
    for key in ("max_cycles", "max_iter", "chunk_voxels"):
        value = settings[key]
        if key == "chunk_voxels" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (
                0 if key == "max_iter" else 1):
            raise QSMConfigError(f"{key} must be a positive integer, got {value!r}")
    for key in ("tol_hz", "max_shift_hz"):
        value = settings[key]
        if value is not None and not (isinstance(value, (int, float)) and value > 0
                                      and math.isfinite(value)):
            raise QSMConfigError(f"{key} must be a positive number, got {value!r}")
    prior = settings["field_prior"]
    if isinstance(prior, str) and prior.lower() in ("air", "none"):
        settings["field_prior"] = None if prior.lower() == "none" else "air"
    elif prior is not None:
        raise QSMConfigError(f"field_prior must be 'air' or 'none', got {prior!r}")
    rng = settings["field_range_hz"]
    if rng is not None and (not isinstance(rng, (list, tuple)) or len(rng) != 2):
        raise QSMConfigError(f"field_range_hz must be (low, high) in Hz, got {rng!r}")
    return settings


def _spectrum_record(spec: FatSpectrum) -> dict[str, Any]:
    return {"name": spec.name, "shifts_ppm": list(spec.shifts_ppm),
            "amplitudes": list(spec.amplitudes)}


def separate_fat_water(
    signal: Array,
    te_s: ArrayLike,
    b0_t: float,
    *,
    mask: Array | None = None,
    voxel_size_mm: ArrayLike = (1.0, 1.0, 1.0),
    b0_dir: ArrayLike = (0.0, 0.0, 1.0),
    spectrum: str | FatSpectrum = "ismrm",
    method: str = "graphcut",
    r2star_max_per_s: float | None = None,
    n_field_candidates: int | None = None,
    n_r2star_candidates: int | None = None,
    smoothness: float | None = None,
    refine: bool = True,
    **options: Any,
) -> FatWaterResult:
    """Separate water and fat and estimate the field map, R2* and PDFF from complex echoes.

    Parameters
    ----------
    signal : (X, Y, Z, E) complex ndarray
        Multi-echo complex echoes (NumPy or CuPy), coil-combined; Z may be 1.
    te_s : (E,) array_like
        Echo times, s, strictly increasing; at least 3 echoes.
    b0_t : float
        Field strength, tesla.
    mask : (X, Y, Z) bool ndarray, optional
        Voxels to separate; default :func:`signal_mask` (so that air gets no separation).
    voxel_size_mm : (3,) array_like
        Voxel size, mm (anisotropic voxels weight the smoothness term).
    b0_dir : (3,) array_like
        B0 direction in the voxel frame (default +z); used by the object-based field prior.
    spectrum : str or FatSpectrum
        Fat model: "ismrm" (default), "hamilton", a FatSpectrum or (shifts_ppm, amplitudes).
    method : str
        One of :data:`FATWATER_METHODS`: "graphcut" (default) or "voxelwise".
    r2star_max_per_s : float, optional
        Upper end of the R2* search, 1/s; default 2000 1/s at 1.5 T, scaled linearly with B0.
        The refinement keeps R2* within ``[0, r2star_max_per_s]``.
    n_field_candidates : int, optional
        Field candidates per period (:func:`~qsmliver.fatwater.varpro.field_candidates`).
    n_r2star_candidates : int, optional
        R2* candidates (:func:`~qsmliver.fatwater.varpro.r2star_candidates`).
    smoothness : float, optional
        λ of the graph-cut smoothness term (default
        :data:`~qsmliver.fatwater.fieldmap.DEFAULT_SMOOTHNESS`); ignored by "voxelwise".
    refine : bool
        Run the T2*-IDEAL refinement (True) or keep the grid values of ψ and R2* (False).
    **options
        ``max_cycles`` (graph-cut cycles, 12), ``max_iter`` (IDEAL iterations, 30), ``tol_hz``
        (IDEAL tolerance, 1e-3 Hz), ``max_shift_hz`` (largest refinement move from the selected
        field, default 0.4 · main fat shift), ``field_range_hz`` ((low, high) candidate range,
        Hz; default one period 1/ΔTE for uniform echoes), ``chunk_voxels`` (VARPRO chunk),
        ``field_prior`` ("air", the default, or "none"/None: the object-based prior of step
        3; its fit is recorded in ``parameters["graphcut"]["prior"]``).

    Returns
    -------
    FatWaterResult
        Maps with the input's backend; complex64/float32 for complex64 input, else
        complex128/float64.

    Raises
    ------
    QSMInputError
        Bad or inconsistent input (fewer than 3 echoes, non-increasing TEs, shape mismatches,
        non-finite signal inside the mask, empty mask).
    QSMConfigError
        Unknown method, option or spectrum; bad option values.

    Examples
    --------
    >>> from qsmliver.simulate.abdomen import abdomen_phantom
    >>> ph = abdomen_phantom(shape=(24, 20, 8), snr=None)
    >>> res = separate_fat_water(ph.gre.signal, ph.gre.te_s, ph.gre.b0_t,
    ...                          mask=ph.masks["tissue"], voxel_size_mm=ph.gre.voxel_size_mm)
    >>> err = abs(res.pdff_percent - ph.truth["pdff_percent"])[ph.masks["tissue"]]
    >>> bool(err.max() < 1.0)
    True
    """
    t_start = time.perf_counter()
    xp, s, te, b0, mask, voxel = _validate(signal, te_s, b0_t, mask, voxel_size_mm)
    b0_direction = _unit_vector(b0_dir)
    settings = _resolve_options(method, options)
    method = method.lower()
    spec = get_fat_spectrum(spectrum)
    lam = DEFAULT_SMOOTHNESS if smoothness is None else smoothness
    if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam > 0):
        raise QSMConfigError(f"smoothness must be a positive number, got {smoothness!r}")
    if not isinstance(refine, (bool, np.bool_)):
        raise QSMConfigError(f"refine must be True or False, got {refine!r}")
    r2_grid = r2star_candidates(b0, r2star_max_per_s, n_r2star_candidates)
    grid, period = field_candidates(te, n_field_candidates, settings["field_range_hz"])
    fat_hz = spec.frequencies_hz(b0)
    main_fat_hz = float(fat_hz[int(np.argmax(spec.amplitudes))])
    single = s.dtype == np.complex64
    cdtype = xp.complex64 if single else xp.complex128
    rdtype = xp.float32 if single else xp.float64

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    mask_source = "given"
    if mask is None:
        mask = signal_mask(s)
        mask_source = "auto"
        if not bool(mask.any()):
            raise QSMInputError("no voxel has signal above the noise", field="signal")
    selected = s[mask]
    if not bool(xp.isfinite(selected).all()):
        raise QSMInputError("the signal has non-finite values inside the mask", field="signal")
    values = selected.astype(xp.complex128)
    timings["mask_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    # complex64 input ranks the candidates in single precision (the refinement is double).
    cost, r2_index = varpro_cost(selected, te, b0, grid, r2_grid, spectrum=spec,
                                 chunk_voxels=settings["chunk_voxels"])
    timings["varpro_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    energy = xp.sum(values.real**2 + values.imag**2, axis=1)
    graph_info: dict[str, Any] = {}
    if method == "graphcut":
        field, graph_info = graphcut_field_map(
            cost, mask, voxel, grid, period_hz=period, fat_shift_hz=main_fat_hz,
            smoothness=float(lam), max_cycles=settings["max_cycles"], signal_energy=energy)
        if settings["field_prior"] == "air":
            support = mask if mask_source == "auto" else mask | _signal_support(s)
            air = air_dipole_field_ppm(support, voxel, b0_direction)
            prior, prior_info = fit_air_field_prior(field, mask, air)
            if prior is not None:
                first = graph_info
                field, graph_info = graphcut_field_map(
                    cost, mask, voxel, grid, period_hz=period, fat_shift_hz=main_fat_hz,
                    smoothness=float(lam), max_cycles=settings["max_cycles"],
                    signal_energy=energy, field_prior_hz=prior, initial_field_hz=field)
                graph_info["first_pass"] = first
            graph_info["prior"] = prior_info
    else:
        field = voxelwise_field_map(cost, grid, period)
    timings["fieldmap_s"] = time.perf_counter() - t0
    # Voxels whose signal energy is at the noise level (a few times the typical residual at
    # the optimum) keep the selected field: refining them would fit noise. The grid's best
    # cost stands in for that residual only without refinement: it includes the grid's
    # discretisation error, which grows with the signal (0.5 % of the energy of bright
    # noise-free voxels), and would call a dark iron-loaded liver "noise".
    noise_energy = float(xp.median(xp.min(cost, axis=1)))
    step = float(grid[1] - grid[0])
    column = xp.rint((field - grid[0]) / step).astype(xp.int64)
    column = xp.mod(column, grid.size) if period is not None else xp.clip(column, 0,
                                                                           grid.size - 1)
    r2s = xp.asarray(r2_grid)[r2_index[xp.arange(column.size), column].astype(xp.int64)]
    del cost, r2_index

    t0 = time.perf_counter()
    r2_bound = float(r2_grid[-1])
    refine_info: dict[str, Any] = {"refined": bool(refine)}
    weak = energy < _WEAK_FACTOR * noise_energy
    if refine:
        max_shift = settings["max_shift_hz"]
        if max_shift is None:
            max_shift = 0.4 * abs(main_fat_hz)
        fit = ideal_refine(values, te, b0, field, r2s, spectrum=spec,
                           max_iter=settings["max_iter"], tol_hz=settings["tol_hz"],
                           r2star_max_per_s=r2_bound, max_shift_hz=float(max_shift))
        noise_energy = float(xp.median(fit.residual))
        weak = energy < _WEAK_FACTOR * noise_energy
        unresolved = _field_unresolved(values, field, r2s, fit.residual, weak, te, b0, spec,
                                       _UNRESOLVED_FAT_FRACTION * abs(main_fat_hz))
        refined_r2s = fit.r2star_per_s
        if bool(unresolved.any()):
            # The echoes cannot place ψ there (the signal is gone after the first echoes):
            # keep the selected (smooth) field and fit R2* alone, instead of trading the
            # missing decay for fat and a shifted field.
            fixed = ideal_refine(values[unresolved], te, b0, field[unresolved],
                                 r2s[unresolved], spectrum=spec, max_iter=settings["max_iter"],
                                 tol_hz=settings["tol_hz"], r2star_max_per_s=r2_bound,
                                 max_shift_hz=0.0)
            refined_r2s = refined_r2s.copy()
            refined_r2s[unresolved] = fixed.r2star_per_s
        field = xp.where(weak | unresolved, field, fit.field_hz)
        r2s = xp.where(weak, r2s, refined_r2s)
        refine_info.update(iterations=int(fit.n_iter),
                           converged_fraction=float(xp.mean(fit.converged.astype(xp.float64))),
                           max_shift_hz=float(max_shift),
                           field_unresolved_voxels=int(unresolved.sum()))
    water, fat, res = varpro_solve(values, te, b0, field, r2s, spectrum=spec)
    refine_info["noise_level_voxels"] = int(weak.sum())
    timings["refine_s"] = time.perf_counter() - t0

    relative = xp.sqrt(xp.clip(res, 0, None) / xp.where(energy > 0, energy, 1.0))
    relative = xp.where(energy > 0, xp.clip(relative, 0.0, 1.0), 0.0)
    pdff = pdff_magnitude_discrimination(water, fat)
    # One noise level from the residuals of the voxels with signal (2E real samples minus
    # W, F, ψ, R2*: 6 real parameters), times each voxel's Cramér-Rao bound.
    dof = 2 * te.size - 6
    level = residual_noise_level(res[~weak] if bool((~weak).any()) else res, dof)
    field_std = field_crb_std_hz(water, fat, r2s, te, b0, spectrum=spec) * level

    def scatter(vector, dtype):
        out = xp.zeros(mask.shape, dtype=dtype)
        out[mask] = vector.astype(dtype)
        return out

    timings["total_s"] = time.perf_counter() - t_start
    parameters = {
        "method": method,
        "spectrum": _spectrum_record(spec),
        "b0_t": b0,
        "te_s": te.tolist(),
        "voxel_size_mm": voxel.tolist(),
        "mask": mask_source,
        "n_voxels": int(values.shape[0]),
        "r2star_range_per_s": [0.0, float(r2_grid[-1])],
        "r2star_refine_bound_per_s": r2_bound,
        "n_r2star_candidates": int(r2_grid.size),
        "n_field_candidates": int(grid.size),
        "field_step_hz": step,
        "field_period_hz": period,
        "field_range_hz": [float(grid[0]), float(grid[-1] + step)],
        "main_fat_shift_hz": main_fat_hz,
        "smoothness": float(lam) if method == "graphcut" else None,
        "graphcut": graph_info,
        "refinement": refine_info,
        "noise_std_per_component": level,
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()},
        "timings_s": timings,
    }
    return FatWaterResult(
        water=scatter(water, cdtype),
        fat=scatter(fat, cdtype),
        field_hz=scatter(field, rdtype),
        r2star_per_s=scatter(r2s, rdtype),
        pdff_percent=scatter(pdff, rdtype),
        residual=scatter(relative, rdtype),
        field_std_hz=xp.where(mask, scatter(field_std, rdtype), xp.inf).astype(rdtype),
        mask=mask,
        parameters=parameters,
    )
