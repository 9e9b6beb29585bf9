"""``qsmliver demo``: a synthetic scan with known truth, taken through the toolkit.

The demo makes a multi-echo GRE of a susceptibility sphere (closed-form field, see
:mod:`qsmliver.simulate.analytic`), writes it as Siemens-style DICOM, reads the DICOM back,
converts it to BIDS and to NIfTI, reads those back, and reports how exactly each step kept the
data, the echo times, the field strength and the geometry. Later stages (field mapping,
inversion, fat-water, R2*) extend it.
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
    yield f"outputs in {output}/ (dicom/, bids/, nifti/)"
