"""The QSM chain composed from a configuration: field map → mask → background → inversion.

``recon(gre, anatomy="brain", ...)`` is the Python API; ``qsmliver recon`` parses options into
the same :class:`ReconConfig`, calls it and writes the result with
:func:`qsmliver.io.results.write_recon`. No file I/O and no option parsing here; every stage is
a function of arrays (DESIGN section 1). Data move to the device once at the start and back
once at the end.

Configuration (TOML file, then CLI overrides; every section is optional)::

    anatomy = "brain"
    device = "auto"            # auto | cpu | cuda | cuda:N
    dtype = "float32"          # float32 | float64

    [field]
    method = "complex"         # complex | linear
    unwrap = "quality"         # quality | laplacian | skimage

    [mask]
    separation_mm = 4.0        # skull-stripping erosion of the automatic brain mask
    erode_mm = 0.0
    phase_quality = true       # drop voxels of unreliable field

    [bipolar]                  # odd/even echo phase correction of bipolar readouts
    correct = false            # true for bipolar multi-echo sequences (Lu et al. 2008)
    readout_axis = "auto"      # auto (from DICOM/BIDS phase-encoding metadata) | 0 | 1 | 2

    [fatwater]                 # liver only
    method = "graphcut"        # any qsmliver.fatwater method; other keys go to the method

    [bgremove]
    method = "auto"            # auto | none | any qsmliver.bgremove method (+ its options)

    [inversion]
    method = "auto"            # auto | any qsmliver.inversion method (+ its options)

    [reference]
    method = "auto"            # auto | mean | csf | sat | muscle | none
    value_ppm = 0.0            # assumed χ of the reference tissue (sat, muscle)

    [r2star]                   # brain only (the liver's R2* comes from the fat-water fit)
    method = "loglinear"

"auto" resolves per anatomy (:data:`AUTO_METHODS`): brain -> RESHARP, MEDI, mean;
liver -> total field inversion (no separate background removal), subcutaneous-fat reference.
With an inversion other than TFI the liver chain removes the background with PDF first.
"""

from __future__ import annotations

import copy
import dataclasses
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from qsmliver import __version__, backend
from qsmliver.data import MultiEchoGRE, QuantitativeMap, hz_to_ppm
from qsmliver.errors import QSMConfigError, QSMInputError

__all__ = ["AUTO_METHODS", "DEFAULT_CONFIG", "QSMSingleEchoWarning", "ReconConfig",
           "ReconResult", "load_config", "recon"]

#: What a single-echo field map means (warned, and written to the field map's sidecar).
SINGLE_ECHO_OFFSET = (
    "one echo: the field is the unwrapped phase over TE, so the echo-independent phase offset "
    "φ0 (coil combination, transmit phase) cannot be told from the field and is included in "
    "it; only its harmonic part is removed with the background. χ is reliable only when the "
    "offset is negligible or was removed upstream (e.g. by the coil combination)")


class QSMSingleEchoWarning(UserWarning):
    """Single-echo data: the phase offset is not separable from the field (see
    :data:`SINGLE_ECHO_OFFSET`)."""

#: The default chain (chosen by measured accuracy on the brain phantom; see README).
DEFAULT_CONFIG: dict[str, Any] = {
    "anatomy": "brain",
    "device": "auto",
    "dtype": "float32",
    "field": {"method": "complex", "unwrap": "quality", "exclude_aliased": True,
              "offset_smoothing_mm": 6.0},
    "mask": {"separation_mm": 4.0, "erode_mm": 0.0, "phase_quality": True},
    "bipolar": {"correct": False, "readout_axis": "auto"},
    "fatwater": {"method": "graphcut"},
    "bgremove": {"method": "auto"},
    "inversion": {"method": "auto"},
    "reference": {"method": "auto"},
    "r2star": {"method": "loglinear"},
}

#: What ``"auto"`` means for each anatomy (chosen by measured accuracy on the phantoms). Brain:
#: whole chain from raw multi-echo data with the truth mask, demeaned NRMSE / DGM slope on the
#: brain phantom (64³ at 3 mm, 80³ at 2.4 mm, 96³ at 2 mm): RESHARP + MEDI 30.7 / 30.6 /
#: 30.8 % (slope 0.86 / 0.90 / 0.91); RESHARP + TV-ADMM 44 / 47 / 51 %; V-SHARP + TV-ADMM
#: 109 % and PDF + MEDI 73 % at 80³ (the background next to the skull leaks through them).
AUTO_METHODS: dict[str, dict[str, str]] = {
    "brain": {"bgremove": "resharp", "inversion": "medi", "reference": "mean"},
    "liver": {"bgremove": "pdf", "inversion": "tfi", "reference": "sat"},
}
#: Inversions that take the total field (background removal is skipped before them).
TOTAL_FIELD_INVERSIONS = ("tfi",)
_SECTIONS = {k for k, v in DEFAULT_CONFIG.items() if isinstance(v, dict)}
_ANATOMIES = ("brain", "liver")


def _merge(base: dict[str, Any], update: Mapping[str, Any], where: str) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if key in _SECTIONS:
            if not isinstance(value, Mapping):
                raise QSMConfigError(f"{where}: [{key}] must be a table of options")
            section = dict(out[key])
            if "method" in value and value["method"] != section.get("method"):
                # a new method: drop the options that belonged to the old one
                section = {"method": value["method"]}
            section.update(value)
            out[key] = section
        elif key in DEFAULT_CONFIG:
            out[key] = value
        else:
            raise QSMConfigError(f"{where}: unknown configuration key {key!r}; known: "
                                 f"{', '.join(sorted(DEFAULT_CONFIG))}")
    return out


@dataclasses.dataclass
class ReconConfig:
    """A validated pipeline configuration (a nested dict; see the module docstring)."""

    values: dict[str, Any] = dataclasses.field(
        default_factory=lambda: copy.deepcopy(DEFAULT_CONFIG))

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None = None,
                     where: str = "configuration") -> ReconConfig:
        """Defaults updated by ``mapping`` (same layout as the TOML file)."""
        config = cls(_merge(DEFAULT_CONFIG, mapping or {}, where))
        config.validate()
        return config

    def updated(self, mapping: Mapping[str, Any], where: str = "override") -> ReconConfig:
        """A copy with ``mapping`` applied on top."""
        config = ReconConfig(_merge(self.values, mapping, where))
        config.validate()
        return config

    def validate(self) -> None:
        """Check the names that are known here (stage options are checked by the stages)."""
        from qsmliver.phase import FIELD_METHODS, UNWRAP_METHODS
        from qsmliver.reference import REFERENCE_METHODS

        v = self.values
        checks = [("anatomy", v["anatomy"], _ANATOMIES),
                  ("dtype", v["dtype"], ("float32", "float64")),
                  ("field.method", v["field"].get("method"), FIELD_METHODS),
                  ("field.unwrap", v["field"].get("unwrap"), UNWRAP_METHODS),
                  ("reference.method", v["reference"].get("method"),
                   ("auto", *REFERENCE_METHODS))]
        for name, value, allowed in checks:
            if value not in allowed:
                raise QSMConfigError(f"{name} = {value!r} is not one of {', '.join(allowed)}")
        unknown_field = set(v["field"]) - {"method", "unwrap", "exclude_aliased",
                                           "offset_smoothing_mm"}
        smoothing = v["field"].get("offset_smoothing_mm", 0.0)
        if (isinstance(smoothing, bool) or not isinstance(smoothing, (int, float))
                or not 0 <= smoothing < float("inf")):
            raise QSMConfigError(f"field.offset_smoothing_mm = {smoothing!r} must be a "
                                 "non-negative number (mm; 0: per-voxel φ0)")
        unknown_mask = set(v["mask"]) - {"separation_mm", "erode_mm", "phase_quality",
                                          "threshold", "threshold_scale"}
        unknown_reference = set(v["reference"]) - {"method", "value_ppm"}
        unknown_bipolar = set(v["bipolar"]) - {"correct", "readout_axis"}
        for section, unknown in (("field", unknown_field), ("mask", unknown_mask),
                                 ("reference", unknown_reference),
                                 ("bipolar", unknown_bipolar)):
            if unknown:
                raise QSMConfigError(f"[{section}]: unknown option(s) {sorted(unknown)}")
        if not isinstance(v["bipolar"].get("correct"), bool):
            raise QSMConfigError(f"bipolar.correct = {v['bipolar'].get('correct')!r} must be "
                                 "true or false")
        axis = v["bipolar"].get("readout_axis")
        if axis != "auto" and (isinstance(axis, bool) or axis not in (0, 1, 2)):
            raise QSMConfigError(f"bipolar.readout_axis = {axis!r} is not one of auto, 0, 1, 2")

    def stage_options(self, section: str) -> tuple[str, dict[str, Any]]:
        """``(method, other options)`` of a stage section, with "auto" resolved."""
        options = dict(self.resolved().values[section])
        return options.pop("method"), options

    def resolved(self) -> ReconConfig:
        """A copy in which every ``"auto"`` method is replaced by the anatomy's choice."""
        values = copy.deepcopy(self.values)
        auto = AUTO_METHODS[values["anatomy"]]
        for section in ("inversion", "reference", "bgremove"):
            if values[section].get("method") == "auto":
                values[section]["method"] = auto[section]
        if (self.values["bgremove"].get("method") == "auto"
                and values["inversion"]["method"] in TOTAL_FIELD_INVERSIONS):
            values["bgremove"]["method"] = "none"
        return ReconConfig(values)


def load_config(path: str | Path) -> ReconConfig:
    """Read a TOML (or JSON) configuration file into a :class:`ReconConfig`.

    Raises
    ------
    QSMInputError
        If the file is missing or cannot be parsed.
    QSMConfigError
        For unknown keys or values.
    """
    from qsmliver.io.config import read_config_file

    mapping = read_config_file(path, "configuration")
    return ReconConfig.from_mapping(mapping, where=str(path))


@dataclasses.dataclass
class ReconResult:
    """Everything a reconstruction produced, on the host.

    Attributes
    ----------
    maps : dict of str to QuantitativeMap
        Keyed by output suffix: "Chimap", "fieldmap", "desc-localfield_map", "mask",
        "R2starmap" (and "desc-fieldnoise_map").
    magnitude : (X, Y, Z) ndarray
        First-echo magnitude, for QC figures.
    config : dict
        The configuration used.
    provenance : dict
        Timings per stage (s), device, solver reports, reference, software version.
    """

    maps: dict[str, QuantitativeMap]
    magnitude: np.ndarray
    config: dict[str, Any]
    provenance: dict[str, Any]


class _Timer:
    def __init__(self, xp) -> None:
        self.xp = xp
        self.timings: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Context:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                backend_synchronize(timer.xp)
                timer.timings[name] = round(time.perf_counter() - self.start, 4)

        return _Context()


def backend_synchronize(xp) -> None:
    """Wait for queued device work (CuPy is asynchronous); no-op on NumPy."""
    if xp is not np:
        xp.cuda.get_current_stream().synchronize()


def _weights_from_noise(noise_std_hz, mask, xp):
    """Data weights ∝ 1/σ_f, normalised to mean 1 in the mask and capped at 5."""
    inside = mask & xp.isfinite(noise_std_hz) & (noise_std_hz > 0)
    weight = xp.where(inside, 1.0 / xp.where(inside, noise_std_hz, 1.0), 0.0)
    mean = weight[inside].mean() if bool(inside.any()) else 1.0
    weight = xp.minimum(weight / mean, 5.0)
    return weight.astype(noise_std_hz.dtype)


@dataclasses.dataclass(frozen=True)
class BackgroundInput:
    """What background removal starts from (see :func:`field_for_background`).

    Attributes
    ----------
    mask : array
        The object mask without the spatially aliased voxels.
    field_hz : array
        Total field (Hz), zero outside ``mask``.
    field_ppm : array
        The same in ppm of B0.
    noise_std_hz : array
        Standard deviation of the field (Hz), :func:`qsmliver.phase.field_noise_std_hz`.
    weight : array
        Data weight ∝ 1/σ_f (mean 1 in ``mask``, capped at 5), zero outside it.
    aliased_voxels_excluded : int or None
        How many voxels were removed from the mask; ``None`` when the exclusion was off.
    """

    mask: Any
    field_hz: Any
    field_ppm: Any
    noise_std_hz: Any
    weight: Any
    aliased_voxels_excluded: int | None


def field_for_background(fit, mask: Any, te_s: np.ndarray, b0_t: float, *,
                         field_method: str = "complex",
                         exclude_aliased: bool = True) -> BackgroundInput:
    """Turn a field fit into the input of background removal, as the brain chain does.

    Voxels whose field is spatially aliased (next to air or bone) cannot be unwrapped
    reliably, and a whole-period error there would spread through background removal, so
    they leave the mask (:func:`qsmliver.phase.aliased_voxels`). The period is that of what
    was unwrapped in space: the echo-difference field (1/ΔTE) for the complex fit, the first
    echo (1/TE1) otherwise.

    Parameters
    ----------
    fit : qsmliver.phase.FieldFit
        Field (Hz) and its noise from :func:`qsmliver.phase.estimate_field`.
    mask : array of bool
        Object mask.
    te_s : ndarray
        Echo times (s).
    b0_t : float
        Field strength (T).
    field_method : {"complex", "linear"}
        How the field was fitted; sets the aliasing period.
    exclude_aliased : bool
        Remove the aliased voxels from the mask.

    Returns
    -------
    BackgroundInput
    """
    from qsmliver.phase import aliased_voxels, field_noise_std_hz

    xp = backend.get_array_module(fit.field_hz)
    te = np.asarray(te_s, dtype=float)
    excluded = None
    if exclude_aliased:
        period_hz = (1.0 / float(np.min(np.diff(te))) if field_method == "complex" and te.size > 1
                     else 1.0 / float(te[0]))
        aliased = aliased_voxels(fit.field_hz, mask, period_hz)
        excluded = int(aliased.sum())
        mask = mask & ~aliased
    field_hz = xp.where(mask, fit.field_hz, 0)
    field_ppm = hz_to_ppm(field_hz, b0_t).astype(field_hz.dtype)
    noise_std_hz = field_noise_std_hz(fit, mask)
    weight = _weights_from_noise(noise_std_hz, mask, xp)
    return BackgroundInput(mask, field_hz, field_ppm, noise_std_hz, weight, excluded)


def chain_inputs(gre: MultiEchoGRE, cfg: ReconConfig):
    """What every chain starts from: the device, its array module, the echoes on it in the
    configured precision, voxel size (mm), B0 direction, echo times (s) and a stage timer.

    Returns
    -------
    tuple
        ``(target, xp, signal, voxel_size_mm, b0_dir, te_s, timer)``.
    """
    v = cfg.values
    target = backend.resolve_device(v["device"])
    complex_dtype = np.complex64 if v["dtype"] == "float32" else np.complex128
    data = gre.to(target)
    xp = backend.get_array_module(data.signal)
    signal = data.signal.astype(complex_dtype, copy=False)
    voxel = tuple(float(x) for x in gre.voxel_size_mm)
    b0_dir = tuple(float(x) for x in gre.b0_dir)
    te = np.asarray(gre.te_s, dtype=float)
    return target, xp, signal, voxel, b0_dir, te, _Timer(xp)


def local_field_map(background, inversion, mask: Any, voxel, b0_dir,
                    affine: np.ndarray) -> QuantitativeMap:
    """The ``desc-localfield_map`` output (ppm): the field of the sources inside ``mask``.

    After a background removal it is that stage's local field. A total-field inversion (TFI)
    has no such stage (its input is the total field), so the local field is the forward
    dipole field of its χ inside the mask, the part of the total field it attributes to the
    tissue.
    """
    from qsmliver.simulate.forward import susceptibility_field_ppm

    if background.method != "none" or inversion.method not in TOTAL_FIELD_INVERSIONS:
        data, method, parameters = (background.local_field_ppm, background.method,
                                    background.parameters)
    else:
        xp = backend.get_array_module(inversion.chi_ppm)
        data = xp.where(mask, susceptibility_field_ppm(xp.where(mask, inversion.chi_ppm, 0),
                                                       voxel, b0_dir), 0)
        method = f"{inversion.method}: dipole field of χ inside the mask"
        parameters = {"kernel": "kspace", "pad_factor": 2.0}
    return QuantitativeMap(backend.to_numpy(data), "desc-localfield_map", "ppm", affine,
                           method=method, parameters=parameters)


def run_background_removal(cfg: ReconConfig, field_ppm: Any, mask: Any, voxel, b0_dir,
                           weight: Any):
    """The configured background removal, or none (the total field passes through)."""
    from qsmliver.bgremove import BackgroundRemoval, remove_background

    method, options = cfg.stage_options("bgremove")
    if method == "none":
        if options:
            raise QSMConfigError(f"[bgremove] method 'none' takes no options, got "
                                 f"{sorted(options)}")
        return BackgroundRemoval(local_field_ppm=field_ppm, mask=mask, method="none",
                                 parameters={"method": "none"})
    return remove_background(field_ppm, mask, voxel, b0_dir, method, weight=weight, **options)


def recon(gre: MultiEchoGRE, anatomy: str = "brain", *, mask: Any = None,
          config: ReconConfig | Mapping[str, Any] | None = None, device: str | None = None,
          reference_roi: Any = None, **overrides: Any) -> ReconResult:
    """Reconstruct susceptibility (and field, local field, R2*) from a multi-echo GRE.

    Parameters
    ----------
    gre : MultiEchoGRE
        The acquisition (complex, with phase).
    anatomy : {"brain", "liver"}
        "liver" runs fat-water separation first (:func:`qsmliver.pipeline_liver.recon_liver`).
    mask : (X, Y, Z) bool array, optional
        A user mask (replaces the automatic one).
    config : ReconConfig or mapping, optional
        The chain (defaults: :data:`DEFAULT_CONFIG`).
    device : str, optional
        Overrides ``config["device"]``.
    reference_roi : (X, Y, Z) bool array, optional
        The χ reference region for reference methods "roi" and "muscle" (a user-drawn ROI,
        e.g. paraspinal muscle); recorded in the Chimap sidecar.
    **overrides
        Section updates, e.g. ``inversion={"method": "medi", "lam": 1000}``.

    Returns
    -------
    ReconResult

    Raises
    ------
    QSMInputError
        For magnitude-only data or a mask that does not fit the data.
    QSMConfigError
        For an unknown method or option.
    """
    if isinstance(config, ReconConfig):
        cfg = config.updated({"anatomy": anatomy, **overrides})
    else:
        cfg = ReconConfig.from_mapping({**(config or {}), "anatomy": anatomy, **overrides})
    if device is not None:
        cfg = cfg.updated({"device": device})
    cfg = _device_that_holds(gre, cfg.resolved())
    gre, bipolar = _bipolar_corrected(gre, cfg)
    if cfg.values["anatomy"] == "liver":
        from qsmliver.pipeline_liver import recon_liver

        result = recon_liver(gre, cfg, mask=mask, reference_roi=reference_roi)
    else:
        result = _recon_brain(gre, cfg, mask=mask, reference_roi=reference_roi)
    if bipolar is not None:
        result.provenance["Stages"] = {"bipolar": bipolar, **result.provenance["Stages"]}
    return result


def _bipolar_corrected(gre: MultiEchoGRE, cfg: ReconConfig
                       ) -> tuple[MultiEchoGRE, dict[str, Any] | None]:
    """``gre`` with its odd/even readout phase error removed when ``[bipolar] correct``.

    The readout axis is the configured one, else the one the reader's metadata name
    (:func:`qsmliver.fatwater.readout_axis_from_metadata`); without either the run stops with
    a :class:`QSMInputError` rather than guess.
    """
    from qsmliver.fatwater.bipolar import correct_bipolar_phase, readout_axis_from_metadata

    options = cfg.values["bipolar"]
    if not options["correct"]:
        return gre, None
    where = gre.source_files[0] if gre.source_files else None
    if not gre.has_phase:
        raise QSMInputError("bipolar correction needs phase images; this acquisition has "
                            "magnitude only", where, "phase")
    axis, source = options["readout_axis"], "configuration (bipolar.readout_axis)"
    if axis == "auto":
        axis, source = readout_axis_from_metadata(gre.metadata)
        if axis is None:
            raise QSMInputError(f"bipolar correction: the readout axis is unknown ({source}); "
                                "give it with --readout-axis 0|1|2 (bipolar.readout_axis)",
                                where, "readout axis")
    corrected, info = correct_bipolar_phase(gre.signal, gre.te_s, readout_axis=int(axis))
    info = {key: value for key, value in info.items() if key != "phase_rad"}
    info["readout_axis_source"] = source
    return dataclasses.replace(gre, signal=corrected), info


#: Peak working memory of a whole chain as a multiple of its complex64 echo data (measured on
#: the CPU path: 5.4 GB for 256³ × 6 echoes, i.e. 0.8 GB of echoes, a ratio of 6.7; rounded up).
CHAIN_MEMORY_FACTOR = 8.0


def _device_that_holds(gre: MultiEchoGRE, cfg: ReconConfig) -> ReconConfig:
    """``cfg``, or ``cfg`` on the CPU when its GPU cannot hold the chain.

    :func:`qsmliver.backend.fits_on_device` warns (:class:`~qsmliver.backend.
    QSMDeviceMemoryWarning`, naming the need and the free memory) before the CPU is used.
    """
    target = backend.resolve_device(cfg.values["device"])
    if target.kind == "cpu":
        return cfg
    need = int(CHAIN_MEMORY_FACTOR * int(np.prod(gre.shape)) * gre.n_echoes * 8)
    if backend.fits_on_device(need, device=target,
                              what=f"the {cfg.values['anatomy']} chain (falling back to the CPU)"):
        return cfg
    return cfg.updated({"device": "cpu"})


def user_mask_on_device(mask: Any, shape: tuple[int, ...], target) -> Any:
    """A user mask as a boolean array on the device, checked against the data shape."""
    user_mask = backend.to_device(np.asarray(backend.to_numpy(mask)).astype(bool), target)
    if tuple(user_mask.shape) != tuple(shape):
        raise QSMInputError(f"mask shape {tuple(user_mask.shape)} does not match the data "
                            f"{tuple(shape)}", field="mask")
    if not bool(user_mask.any()):
        raise QSMInputError("the mask is empty", field="mask")
    return user_mask


def user_reference_roi(method: str, reference_roi: Any, shape: tuple[int, ...], target) -> Any:
    """The user's χ reference region on the device, checked; None when the method needs none."""
    if method not in ("roi", "muscle"):
        return None
    if reference_roi is None:
        raise QSMConfigError(f"χ reference {method!r} needs a region: give reference_roi "
                             "(--reference-roi MASK.nii.gz)")
    roi = backend.to_device(np.asarray(backend.to_numpy(reference_roi)).astype(bool), target)
    if tuple(roi.shape) != tuple(shape):
        raise QSMInputError(f"reference ROI shape {tuple(roi.shape)} does not match the data "
                            f"{tuple(shape)}", field="reference roi")
    return roi


def _recon_brain(gre: MultiEchoGRE, cfg: ReconConfig, *, mask: Any,
                 reference_roi: Any = None) -> ReconResult:
    v = cfg.values
    if not gre.has_phase:
        raise QSMInputError("QSM needs phase images; this acquisition has magnitude only",
                            gre.source_files[0] if gre.source_files else None, "phase")
    from qsmliver.inversion import invert_dipole
    from qsmliver.mask import brain_mask
    from qsmliver.phase import estimate_field
    from qsmliver.reference import csf_mask_from_r2star, reference_chi
    from qsmliver.relaxometry import fit_r2star

    target, xp, signal, voxel, b0_dir, te, timer = chain_inputs(gre, cfg)
    report: dict[str, Any] = {}
    magnitude = xp.abs(signal)

    with timer("mask"):
        if mask is not None:
            object_mask = user_mask_on_device(mask, gre.shape, target)
        else:
            mask_options = {k: v["mask"][k] for k in ("separation_mm", "threshold",
                                                      "threshold_scale") if k in v["mask"]}
            object_mask = brain_mask(magnitude, voxel, **mask_options)
    field_method, field_unwrap = v["field"]["method"], v["field"]["unwrap"]
    if te.size == 1:
        warnings.warn(SINGLE_ECHO_OFFSET, QSMSingleEchoWarning, stacklevel=3)
    offset_smoothing_mm = float(v["field"].get("offset_smoothing_mm",
                                               DEFAULT_CONFIG["field"]["offset_smoothing_mm"]))
    with timer("field"):
        fit = estimate_field(signal, te, mask=object_mask, voxel_size_mm=voxel,
                             method=field_method, unwrap_method=field_unwrap,
                             offset_smoothing_mm=offset_smoothing_mm)
    if mask is None and (v["mask"].get("phase_quality") or v["mask"].get("erode_mm")):
        with timer("mask_refine"):
            object_mask = brain_mask(magnitude, voxel, **{
                k: v["mask"][k] for k in ("separation_mm", "threshold", "threshold_scale",
                                          "erode_mm") if k in v["mask"]},
                noise_std_hz=fit.noise_std_hz if v["mask"].get("phase_quality") else None)
    prepared = field_for_background(fit, object_mask, te, gre.b0_t, field_method=field_method,
                                    exclude_aliased=v["field"].get("exclude_aliased", True))
    object_mask, field_hz, field_ppm = prepared.mask, prepared.field_hz, prepared.field_ppm
    noise_hz, weight = prepared.noise_std_hz, prepared.weight
    if prepared.aliased_voxels_excluded is not None:
        report["field"] = {"aliased_voxels_excluded": prepared.aliased_voxels_excluded}

    with timer("bgremove"):
        background = run_background_removal(cfg, field_ppm, object_mask, voxel, b0_dir,
                                            weight)
    report["bgremove"] = background.parameters
    local_mask = background.mask

    reference_method = v["reference"]["method"]
    needs_csf = reference_method == "csf" or v["inversion"].get("method") == "medi0"
    r2star_fit = None
    if te.size >= 2:
        r2s_method, r2s_options = cfg.stage_options("r2star")
        with timer("r2star"):
            r2star_fit = fit_r2star(magnitude, te, method=r2s_method, mask=object_mask,
                                    **r2s_options)
    elif needs_csf:
        raise QSMInputError("the CSF mask (χ reference 'csf', MEDI+0) comes from R2*, which "
                            "needs at least 2 echoes; this acquisition has 1: use reference "
                            "'mean' and another inversion",
                            gre.source_files[0] if gre.source_files else None, "EchoTime")
    else:
        # Single-echo GRE (common for QSM): the field is the unwrapped phase over TE, and its
        # echo-independent phase offset stays in it as a smooth, mostly harmonic term that
        # background removal takes out. No R2* map.
        report["r2star"] = {"skipped": "one echo: R2* needs at least 2"}

    if reference_method in ("sat", "muscle"):
        raise QSMConfigError(f"χ reference {reference_method!r} is for the abdomen; the brain "
                             "takes mean, csf, roi or none")
    user_reference_roi(reference_method, reference_roi, gre.shape, target)  # fail early
    csf = None
    if needs_csf:
        csf = csf_mask_from_r2star(r2star_fit.r2star_per_s, local_mask, voxel)
    method, options = cfg.stage_options("inversion")
    with timer("inversion"):
        inversion = invert_dipole(background.local_field_ppm, local_mask, voxel, b0_dir,
                                  method, weight=weight * local_mask,
                                  magnitude=magnitude[..., 0], csf_mask=csf, **options)
    report["inversion"] = inversion.parameters
    with timer("reference"):
        roi = (csf if reference_method == "csf" else
               user_reference_roi(reference_method, reference_roi, gre.shape, target))
        if reference_method == "csf" and (csf is None or not bool(csf.any())):
            raise QSMInputError("no CSF found for the χ reference (R2* < 5 1/s in the "
                                "eroded brain); use reference 'mean'", field="reference")
        chi, reference_info = reference_chi(inversion.chi_ppm, local_mask, reference_method,
                                            roi=roi)

    affine = np.asarray(gre.affine)
    to_host = backend.to_numpy
    maps = {
        "Chimap": QuantitativeMap(to_host(chi), "Chimap", "ppm", affine,
                                  method=inversion.method,
                                  parameters={**inversion.parameters, **reference_info}),
        "fieldmap": QuantitativeMap(to_host(field_hz), "fieldmap", "Hz", affine,
                                    method=(f"field:{field_method}+unwrap:{field_unwrap}"
                                            if te.size > 1 else
                                            f"field:single-echo+unwrap:{field_unwrap}"),
                                    parameters={"EchoTime_s": te.tolist(),
                                                "OffsetSmoothing_mm": (
                                                    offset_smoothing_mm
                                                    if field_method == "complex" and te.size > 1
                                                    else None),
                                                **({"PhaseOffset": SINGLE_ECHO_OFFSET}
                                                   if te.size == 1 else {})}),
        "desc-localfield_map": local_field_map(background, inversion, local_mask, voxel,
                                               b0_dir, affine),
        "mask": QuantitativeMap(to_host(local_mask), "mask", "1", affine,
                                method="background-removal mask",
                                parameters={"automatic": mask is None}),
        "desc-fieldnoise_map": QuantitativeMap(
            to_host(xp.where(object_mask, noise_hz, 0)), "desc-fieldnoise_map", "Hz",
            affine, method=f"field:{field_method} (Cramér-Rao, noise level from the residual)",
            parameters={}),
    }
    if r2star_fit is not None:
        maps["R2starmap"] = QuantitativeMap(to_host(r2star_fit.r2star_per_s), "R2starmap",
                                            "1/s", affine, method=r2star_fit.method,
                                            parameters=r2star_fit.parameters)
    provenance = {
        "Software": "qsmliver", "Version": __version__, "Device": str(target),
        "Anatomy": v["anatomy"], "Timings_s": timer.timings,
        "Acquisition": {k: val for k, val in gre.describe().items() if k != "SourceFiles"},
        "Stages": report, **reference_info,
    }
    return ReconResult(maps=maps, magnitude=to_host(magnitude[..., 0]), config=cfg.values,
                       provenance=provenance)
