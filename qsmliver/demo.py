"""``qsmliver demo``: a synthetic scan with known truth, taken through the toolkit.

Two parts:

1. I/O: a multi-echo GRE of a susceptibility sphere (closed-form field, see
   :mod:`qsmliver.simulate.analytic`) is written as Siemens-style DICOM, read back, converted
   to BIDS and to NIfTI and read back; the report says how exactly each step kept the data,
   the echo times, the field strength and the geometry.
2. Brain QSM: the numerical head phantom (:func:`qsmliver.simulate.brain_phantom`) is written
   as BIDS, read back and reconstructed with the default chain and an automatic mask
   (:func:`qsmliver.pipeline.recon`); the report gives the accuracy against the known truth
   (NRMSE of χ, slope of deep-grey-matter means, mask coverage) and the time of each stage.
3. Liver: the abdomen phantom at 1.5 T with iron-loaded lobes (LIC 2 and 10 mg/g) and 8 %
   fat is written as BIDS, read back and reconstructed with ``anatomy="liver"`` (fat-water
   separation, total field inversion, χ referenced to subcutaneous fat); the report gives the
   liver PDFF, R2* and χ against the truth, the LIC from R2* (Wood 2005) and the time of
   each stage.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from qsmliver.data import MultiEchoGRE

__all__ = ["run_demo"]


def _max_phase_error(reference: MultiEchoGRE, other: MultiEchoGRE) -> float:
    return float(np.max(np.abs(np.angle(other.signal * np.conj(reference.signal)))))


def _world_error_mm(reference: MultiEchoGRE, other: MultiEchoGRE) -> float:
    corners = np.array([[0, 0, 0, 1], [*(np.asarray(reference.shape) - 1), 1]], float).T
    return float(np.max(np.abs(reference.affine @ corners - other.affine @ corners)))


def run_demo(output: Path, overwrite: bool = False) -> Iterator[str]:
    """Run the demo into ``output``; yields one line of report per step."""
    from qsmliver.io.bids import read_bids
    from qsmliver.io.dicom import read_dicom
    from qsmliver.io.dicom_write import write_dicom_series
    from qsmliver.io.nifti import read_nifti_auto
    from qsmliver.io.staging import staged_output_dir
    from qsmliver.io.writers import write_bids_megre, write_gre_nifti
    from qsmliver.simulate import sphere_gre

    gre, truth = sphere_gre(shape=(48, 48, 40), voxel_size_mm=(1.0, 1.0, 1.5), b0_t=3.0,
                            te_s=(0.004, 0.008, 0.012, 0.016, 0.020), radius_mm=8.0,
                            delta_chi_ppm=0.4, snr=200.0)
    yield (f"simulated a susceptibility sphere (Δχ 0.4 ppm, radius 8 mm) at 3 T: {gre}; "
           f"field range {truth['field_hz'].min():.1f} to {truth['field_hz'].max():.1f} Hz")
    # Phase is only defined where there is signal: the demo phantom has signal everywhere.
    with staged_output_dir(output, overwrite=overwrite) as stage:
        dicom_files = write_dicom_series(gre, stage / "dicom", vendor="siemens")
        yield f"wrote {len(dicom_files)} Siemens-style DICOM files (12-bit phase) to dicom/"
        from_dicom = read_dicom(stage / "dicom", progress=False)
        yield (f"read DICOM back: {from_dicom.n_echoes} echoes, TE "
               f"{np.round(from_dicom.te_s * 1e3, 3).tolist()} ms, B0 {from_dicom.b0_t:g} T, "
               f"max phase error {_max_phase_error(gre, from_dicom):.2e} rad, "
               f"geometry error {_world_error_mm(gre, from_dicom):.1e} mm")
        bids_files = write_bids_megre(from_dicom, stage / "bids", "demo", session="1")
        from_bids = read_bids(stage / "bids" / "sub-demo" / "ses-1")
        yield (f"converted to BIDS MEGRE ({len(bids_files)} files) and read back: max phase "
               f"difference {_max_phase_error(from_dicom, from_bids):.2e} rad")
        nifti_files = write_gre_nifti(from_dicom, stage / "nifti" / "sphere")
        from_nifti = read_nifti_auto(nifti_files[0])
        yield (f"converted to 4-D NIfTI with sidecars ({len(nifti_files)} files) and read "
               f"back: max phase difference {_max_phase_error(from_dicom, from_nifti):.2e} rad")
    yield from _brain_demo(output, overwrite)
    yield from _liver_demo(output, overwrite)
    yield f"outputs in {output}/ (dicom/, bids/, nifti/, brain/, liver/)"


#: Deep grey matter structures of the brain phantom (left and right).
_DGM = ("caudate", "putamen", "globus_pallidus", "thalamus", "red_nucleus",
        "substantia_nigra", "dentate_nucleus")


def _brain_demo(output: Path, overwrite: bool) -> Iterator[str]:
    from qsmliver.io.bids import read_bids
    from qsmliver.io.results import write_recon
    from qsmliver.io.staging import staged_output_dir
    from qsmliver.metrics import nrmse, roi_slope
    from qsmliver.pipeline import recon
    from qsmliver.simulate import brain_phantom
    from qsmliver.simulate.write import write_phantom

    phantom = brain_phantom(shape=(96, 96, 72), voxel_size_mm=(2.0, 2.0, 2.0), snr=100.0)
    yield (f"simulated the brain phantom: {phantom.gre}; total field "
           f"{phantom.truth['total_field_hz'][phantom.masks['brain']].min():.0f} to "
           f"{phantom.truth['total_field_hz'][phantom.masks['brain']].max():.0f} Hz in the "
           "brain")
    with staged_output_dir(output / "brain", overwrite=overwrite) as stage:
        write_phantom(phantom, stage / "phantom", formats=("bids",), subject="demo",
                      overwrite=True)
        gre = read_bids(stage / "phantom" / "rawdata" / "sub-demo")
        result = recon(gre, "brain")
        write_recon(result, stage / "qsm", "sub-demo", inputs=gre.source_files,
                    overwrite=True)
    chi = result.maps["Chimap"].data
    mask = result.maps["mask"].data.astype(bool)
    truth_brain = phantom.masks["brain"]
    labels = [v for v, n in phantom.label_names.items() if n.rsplit("_", 1)[0] in _DGM
              or n in _DGM]
    error = nrmse(chi, phantom.truth["chi_ppm"], mask)
    slope = roi_slope(chi, phantom.truth["chi_ppm"], phantom.labels, labels)
    coverage = (mask & truth_brain).sum() / truth_brain.sum()
    # the field-noise map is defined on the whole automatic mask, before background removal
    object_mask = result.maps["desc-fieldnoise_map"].data > 0
    object_coverage = (object_mask & truth_brain).sum() / truth_brain.sum()
    timings = result.provenance["Timings_s"]
    yield (f"reconstructed it from BIDS ({result.maps['desc-localfield_map'].method} + "
           f"{result.maps['Chimap'].method}, automatic mask): χ NRMSE {error:.1f} % vs "
           f"truth, deep grey matter slope {slope:.2f}; the automatic mask covers "
           f"{100 * object_coverage:.1f} % of the brain, the χ mask after background removal "
           f"{100 * coverage:.1f} %; {sum(timings.values()):.1f} s ("
           + ", ".join(f"{k} {t:.1f}" for k, t in timings.items()) + ")")
    yield "brain QSM maps, sidecars and QC montage in brain/qsm/, the phantom in brain/phantom/"


def _liver_demo(output: Path, overwrite: bool) -> Iterator[str]:
    from qsmliver.calibrate import convert_to_lic
    from qsmliver.io.bids import read_bids
    from qsmliver.io.results import write_recon
    from qsmliver.io.staging import staged_output_dir
    from qsmliver.pipeline import recon
    from qsmliver.simulate import abdomen_phantom
    from qsmliver.simulate.write import write_phantom

    lic = {"right_lobe": 2.0, "left_lobe": 10.0}
    phantom = abdomen_phantom(shape=(64, 52, 24), voxel_size_mm=(6.0, 6.0, 8.0), b0_t=1.5,
                              snr=60.0, lic_mg_per_g=lic, liver_pdff_percent=8.0)
    yield (f"simulated the abdomen phantom: {phantom.gre}; liver LIC 2 (right lobe) and 10 "
           "(left lobe) mg/g, PDFF 8 %, lungs and bowel gas")
    with staged_output_dir(output / "liver", overwrite=overwrite) as stage:
        write_phantom(phantom, stage / "phantom", formats=("bids",), subject="demo",
                      overwrite=True)
        gre = read_bids(stage / "phantom" / "rawdata" / "sub-demo")
        result = recon(gre, "liver")
        write_recon(result, stage / "qsm", "sub-demo", inputs=gre.source_files,
                    overwrite=True)
    pdff = result.maps["desc-PDFF_map"].data
    r2s = result.maps["R2starmap"].data
    chi = result.maps["Chimap"].data
    truth = phantom.truth
    rows = []
    for lobe in ("right_lobe", "left_lobe"):
        region = phantom.masks[f"liver_{lobe}"]
        r2s_lobe = float(np.median(r2s[region]))
        lic_r2s = float(convert_to_lic(r2s_lobe, "wood2005", b0_t=1.5))
        rows.append(f"{lobe.replace('_', ' ')}: PDFF {np.median(pdff[region]):.1f} % "
                    f"(truth {np.median(truth['pdff_percent'][region]):.1f}), R2* "
                    f"{r2s_lobe:.0f} 1/s (truth {np.median(truth['r2star_per_s'][region]):.0f})"
                    f", LIC from R2* {lic_r2s:.1f} mg/g (truth {lic[lobe]:.0f}), χ "
                    f"{np.median(chi[region]):+.3f} ppm vs subcutaneous fat")
    right, left = phantom.masks["liver_right_lobe"], phantom.masks["liver_left_lobe"]
    measured = float(np.median(chi[left]) - np.median(chi[right]))
    expected = float(np.median(truth["chi_ppm"][left]) - np.median(truth["chi_ppm"][right]))
    timings = result.provenance["Timings_s"]
    yield ("reconstructed it from BIDS (fat-water graph cut + "
           f"{result.maps['Chimap'].method}): " + "; ".join(rows))
    yield (f"χ(left) − χ(right) = {measured:.3f} ppm (truth {expected:.3f}); "
           f"{sum(timings.values()):.1f} s (" + ", ".join(f"{k} {t:.1f}" for k, t in
                                                          timings.items()) + ")")
    yield "liver maps (χ, R2*, PDFF, water, fat, field), sidecars and QC montage in liver/qsm/"
