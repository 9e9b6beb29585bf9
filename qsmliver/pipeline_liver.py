"""The liver chain: fat-water separation → body mask → total field → TFI (or PDF + MEDI) → χ.

Called by :func:`qsmliver.pipeline.recon` for ``anatomy="liver"``. Hepatic QSM differs from
the brain in three ways (DESIGN section 5):

- the phase carries the chemical shift of fat, so the B0 field map comes from the multi-peak
  fat-water separation (:func:`qsmliver.fatwater.separate_fat_water`), which also gives the
  fat-corrected R2*, PDFF and the water and fat images;
- the abdomen holds strong background sources (lungs, bowel gas) right next to the tissue, so
  the default inversion is the preconditioned total field inversion (TFI, Liu et al. MRM
  2018;79:2795), which models background and local sources together; the two-step
  alternative (PDF, then any local-field inversion) is kept for comparison;
- χ is referenced to subcutaneous adipose tissue (SAT) or paraspinal muscle (both found
  automatically, :func:`qsmliver.mask.subcutaneous_fat_mask` and
  :func:`qsmliver.mask.paraspinal_muscle_mask`, or a user region), with an assumed
  χ of the reference tissue (``reference.value_ppm``, default 0: χ relative to SAT), recorded
  in the sidecar.

Few-slice breath-hold acquisitions (e.g. five 10-mm slices) support fat-water, PDFF and R2*
but not QSM: the dipole inversion needs 3D coverage. They get the fat-water outputs, and
the χ stage is refused with a :class:`QSMCoverageWarning` that says why.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from qsmliver import __version__, backend
from qsmliver.data import MultiEchoGRE, QuantitativeMap, hz_to_ppm
from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.pipeline import (
    ReconConfig,
    ReconResult,
    _weights_from_noise,
    chain_inputs,
    local_field_map,
    run_background_removal,
    user_mask_on_device,
    user_reference_roi,
)

#: χ reference method -> the tissue of its region (the sidecar's ChiReferenceRegion).
_REGION_NAMES = {"sat": "subcutaneous adipose tissue", "muscle": "paraspinal muscle",
                 "roi": "user region"}

__all__ = ["MIN_QSM_EXTENT_MM", "MIN_QSM_SLICES", "QSMCoverageWarning", "recon_liver"]

#: Fewest slices, and smallest extent along the slice axis (mm), for which χ is computed.
#: The dipole field of a source reaches several centimetres; with fewer/thinner slabs the
#: inversion has no field outside the slab to explain the sources within it.
MIN_QSM_SLICES = 16
MIN_QSM_EXTENT_MM = 60.0


class QSMCoverageWarning(UserWarning):
    """The acquisition covers too little of the body for QSM (fat-water outputs only)."""


def _coverage_problem(gre: MultiEchoGRE) -> str | None:
    shape = np.asarray(gre.shape)
    voxel = np.asarray(gre.voxel_size_mm, dtype=float)
    extent = shape * voxel
    axis = int(np.argmin(extent))
    if shape[axis] < MIN_QSM_SLICES or extent[axis] < MIN_QSM_EXTENT_MM:
        return (f"QSM needs 3D coverage: this acquisition has {int(shape[axis])} slice(s) "
                f"covering {extent[axis]:.0f} mm along axis {axis} (at least "
                f"{MIN_QSM_SLICES} slices and {MIN_QSM_EXTENT_MM:.0f} mm are needed); "
                "fat-water, PDFF and R2* were computed, χ was not")
    return None


def recon_liver(gre: MultiEchoGRE, cfg: ReconConfig, *, mask: Any = None,
                reference_roi: Any = None) -> ReconResult:
    """Run the liver chain with a resolved configuration (see the module docstring).

    Parameters
    ----------
    gre : MultiEchoGRE
        Multi-echo complex GRE of the abdomen (at least 3 echoes).
    cfg : ReconConfig
        Resolved configuration (``anatomy = "liver"``).
    mask : (X, Y, Z) bool array, optional
        User tissue mask; default: :func:`qsmliver.mask.body_mask` of the water and fat.
    reference_roi : (X, Y, Z) bool array, optional
        χ reference region for the references "roi" (required) and "muscle" (optional: without
        it the muscle is found by :func:`qsmliver.mask.paraspinal_muscle_mask`).

    Returns
    -------
    ReconResult
        Maps ``desc-water_map``, ``desc-fat_map``, ``desc-PDFF_map``, ``R2starmap``,
        ``fieldmap`` (Hz, chemical-shift free), ``desc-fitresidual_map``,
        ``desc-fieldnoise_map`` (Hz, the data weight's standard deviation), ``mask`` and,
        with 3D coverage, ``Chimap`` and ``desc-localfield_map`` (the background removal's
        local field, or with TFI the dipole field of χ inside the mask).
    """
    from qsmliver.fatwater import separate_fat_water
    from qsmliver.inversion import invert_dipole
    from qsmliver.mask import body_mask, paraspinal_muscle_mask, subcutaneous_fat_mask
    from qsmliver.reference import reference_chi

    v = cfg.values
    if not gre.has_phase:
        raise QSMInputError("fat-water separation needs phase images; this acquisition has "
                            "magnitude only", gre.source_files[0] if gre.source_files else None,
                            "phase")
    if gre.n_echoes < 3:
        raise QSMInputError(f"fat-water separation with R2* needs at least 3 echoes, got "
                            f"{gre.n_echoes}", gre.source_files[0] if gre.source_files else None,
                            "echoes")
    target, xp, signal, voxel, b0_dir, te, timer = chain_inputs(gre, cfg)
    report: dict[str, Any] = {}

    user_mask = None if mask is None else user_mask_on_device(mask, gre.shape, target)

    method, options = cfg.stage_options("fatwater")
    with timer("fatwater"):
        fw = separate_fat_water(signal, te, gre.b0_t, mask=user_mask, voxel_size_mm=voxel,
                                b0_dir=b0_dir, method=method, **options)
    report["fatwater"] = fw.parameters
    water_magnitude, fat_magnitude = xp.abs(fw.water), xp.abs(fw.fat)

    with timer("mask"):
        tissue = (user_mask if user_mask is not None
                  else body_mask(water_magnitude, fat_magnitude, voxel) & fw.mask)
    field_hz = xp.where(tissue, fw.field_hz, 0).astype(fw.field_hz.dtype)
    # Data weights from the Cramér-Rao bound of the fat-water fit times one noise level from
    # the fit residuals (FatWaterResult.field_std_hz). A voxel's own relative residual
    # scatters and misses how fast decay (iron) removes the late echoes that carry the field
    # (measured: liver χ NRMSE 17.8 -> 7.1 % with TFI at 1.5 T).
    noise_hz = xp.where(tissue, fw.field_std_hz, xp.inf)

    affine = np.asarray(gre.affine)
    to_host = backend.to_numpy
    fw_method = f"fatwater:{fw.parameters.get('method', method)}"
    maps = {
        "desc-water_map": QuantitativeMap(to_host(water_magnitude), "desc-water_map", "a.u.",
                                          affine, method=fw_method, parameters=fw.parameters),
        "desc-fat_map": QuantitativeMap(to_host(fat_magnitude), "desc-fat_map", "a.u.", affine,
                                        method=fw_method, parameters=fw.parameters),
        "desc-PDFF_map": QuantitativeMap(
            to_host(xp.where(fw.mask, fw.pdff_percent, 0)), "desc-PDFF_map", "percent",
            affine, method=fw_method + " (magnitude discrimination)",
            parameters=fw.parameters),
        "R2starmap": QuantitativeMap(
            to_host(xp.where(fw.mask, fw.r2star_per_s, 0)), "R2starmap", "1/s", affine,
            method=fw_method + " (fat-corrected, common to water and fat)",
            parameters=fw.parameters),
        "fieldmap": QuantitativeMap(to_host(field_hz), "fieldmap", "Hz", affine,
                                    method=fw_method + " (chemical-shift free)",
                                    parameters={"EchoTime_s": te.tolist()}),
        "desc-fitresidual_map": QuantitativeMap(
            to_host(xp.where(fw.mask, fw.residual, 0)), "desc-fitresidual_map", "1", affine,
            method=fw_method, parameters={"definition": "||S - model|| / ||S||"}),
        "desc-fieldnoise_map": QuantitativeMap(
            to_host(xp.where(tissue, noise_hz, 0)), "desc-fieldnoise_map", "Hz", affine,
            method=fw_method + " (Cramér-Rao bound, noise level from the fit residuals)",
            parameters={"noise_std_per_component":
                        fw.parameters["noise_std_per_component"]}),
        "mask": QuantitativeMap(to_host(tissue), "mask", "1", affine,
                                method="tissue mask (water + fat signal)",
                                parameters={"automatic": mask is None}),
    }
    provenance: dict[str, Any] = {
        "Software": "qsmliver", "Version": __version__, "Device": str(target),
        "Anatomy": "liver", "Timings_s": timer.timings,
        "Acquisition": {k: val for k, val in gre.describe().items() if k != "SourceFiles"},
        "Stages": report,
    }

    problem = _coverage_problem(gre)
    if problem is not None:
        warnings.warn(problem, QSMCoverageWarning, stacklevel=3)
        provenance["QSMRefused"] = problem
        return ReconResult(maps=maps, magnitude=to_host(xp.abs(signal[..., 0])),
                           config=v, provenance=provenance)

    field_ppm = hz_to_ppm(field_hz, gre.b0_t).astype(field_hz.dtype)
    weight = _weights_from_noise(noise_hz, tissue, xp)
    with timer("bgremove"):
        background = run_background_removal(cfg, field_ppm, tissue, voxel, b0_dir, weight)
    report["bgremove"] = background.parameters
    local_mask = background.mask
    method, options = cfg.stage_options("inversion")
    with timer("inversion"):
        inversion = invert_dipole(background.local_field_ppm, local_mask, voxel, b0_dir,
                                  method, weight=weight * local_mask,
                                  magnitude=(water_magnitude + fat_magnitude), **options)
    report["inversion"] = inversion.parameters

    reference_method = v["reference"]["method"]
    with timer("reference"):
        if reference_method == "csf":
            raise QSMConfigError("χ reference 'csf' is for the brain; the liver takes sat, "
                                 "muscle, mean, roi or none")
        region_source = "user" if reference_roi is not None else "automatic"
        if reference_method == "sat":
            roi = subcutaneous_fat_mask(fw.pdff_percent, local_mask, voxel)
        elif reference_method == "muscle" and reference_roi is None:
            roi = paraspinal_muscle_mask(fw.pdff_percent, water_magnitude, tissue, affine)
        else:
            roi = user_reference_roi(reference_method, reference_roi, gre.shape, target)
        options = {}
        if reference_method in ("sat", "muscle"):
            options["roi_value_ppm"] = float(v["reference"].get("value_ppm", 0.0))
        chi, reference_info = reference_chi(inversion.chi_ppm, local_mask, reference_method,
                                            roi=roi, **options)
        if reference_method in _REGION_NAMES:
            reference_info["ChiReferenceRegion"] = (
                f"{_REGION_NAMES[reference_method]}, "
                f"{'automatic' if reference_method == 'sat' else region_source}")
    maps["Chimap"] = QuantitativeMap(to_host(chi), "Chimap", "ppm", affine,
                                     method=inversion.method,
                                     parameters={**inversion.parameters, **reference_info})
    maps["desc-localfield_map"] = local_field_map(background, inversion, local_mask, voxel,
                                                  b0_dir, affine)
    maps["mask"] = QuantitativeMap(to_host(local_mask), "mask", "1", affine,
                                   method="tissue mask (water + fat signal)",
                                   parameters={"automatic": mask is None})
    provenance.update(reference_info)
    return ReconResult(maps=maps, magnitude=to_host(xp.abs(signal[..., 0])), config=v,
                       provenance=provenance)
