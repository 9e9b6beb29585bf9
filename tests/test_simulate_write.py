"""Phantoms written to disk read back unchanged through the foundation readers."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from qsmliver.errors import QSMConfigError, QSMOutputExistsError
from qsmliver.io.bids import read_bids
from qsmliver.io.dicom import read_dicom
from qsmliver.io.nifti import read_nifti_auto
from qsmliver.simulate import sphere_gre
from qsmliver.simulate.phantom import Phantom
from qsmliver.simulate.write import write_phantom


def _sphere_phantom(shape=(20, 18, 12)):
    gre, truth = sphere_gre(shape=shape, voxel_size_mm=(1.0, 1.2, 2.0), snr=100.0)
    return Phantom(
        gre,
        {"chi_ppm": truth["chi_ppm"], "total_field_ppm": truth["field_ppm"],
         "total_field_hz": truth["field_hz"]},
        truth["inside"].astype(np.int16),
        {0: "water", 1: "sphere"},
        {"object": np.ones(shape, bool), "sphere": truth["inside"]},
        {"phantom": "sphere"},
    )


def _max_phase_error(a, b):
    return float(np.max(np.abs(np.angle(a.signal * np.conj(b.signal)))))


def test_phantom_round_trips_through_readers(tmp_path):
    phantom = _sphere_phantom()
    written = write_phantom(phantom, tmp_path, formats=("bids", "nifti", "dicom"),
                            subject="p01", vendor="ge")
    assert all(p.exists() for p in written)
    gre = phantom.gre
    from_bids = read_bids(tmp_path / "rawdata" / "sub-p01")
    from_nifti = read_nifti_auto(tmp_path / "nifti" / "sub-p01_mag.nii.gz")
    from_dicom = read_dicom(tmp_path / "dicom", progress=False)
    for other, tol in ((from_bids, 1e-5), (from_nifti, 1e-5), (from_dicom, 2e-3)):
        np.testing.assert_allclose(other.te_s, gre.te_s, rtol=1e-6)
        assert other.b0_t == pytest.approx(gre.b0_t)
        np.testing.assert_allclose(other.affine, gre.affine, atol=1e-4)
        np.testing.assert_allclose(other.b0_dir, gre.b0_dir, atol=1e-6)
        assert _max_phase_error(gre, other) < tol
    scale = np.abs(from_dicom.signal).max() / np.abs(gre.signal).max()
    np.testing.assert_allclose(np.abs(from_dicom.signal) / scale, np.abs(gre.signal),
                               atol=2e-3 * np.abs(gre.signal).max())


def test_truth_maps_written_with_units(tmp_path):
    phantom = _sphere_phantom()
    write_phantom(phantom, tmp_path, formats=("nifti",))
    anat = tmp_path / "derivatives" / "truth" / "sub-sim" / "anat"
    chi = nib.load(anat / "sub-sim_Chimap.nii.gz")
    np.testing.assert_allclose(chi.get_fdata(), phantom.truth["chi_ppm"], atol=1e-7)
    np.testing.assert_allclose(chi.affine, phantom.gre.affine, atol=1e-5)
    sidecar = json.loads((anat / "sub-sim_Chimap.json").read_text())
    assert sidecar["Units"] == "ppm" and sidecar["Phantom"] == {"phantom": "sphere"}
    assert json.loads((anat / "sub-sim_fieldmap.json").read_text())["Units"] == "Hz"
    labels = nib.load(anat / "sub-sim_desc-tissue_dseg.nii.gz").get_fdata()
    np.testing.assert_array_equal(labels, phantom.labels)
    table = (anat / "sub-sim_desc-tissue_dseg.tsv").read_text().splitlines()
    assert table == ["index\tname", "0\twater", "1\tsphere"]
    assert (anat / "sub-sim_desc-sphere_mask.nii.gz").exists()


def test_write_phantom_refuses_bad_options_and_existing(tmp_path):
    phantom = _sphere_phantom()
    with pytest.raises(QSMConfigError, match="unknown phantom output format"):
        write_phantom(phantom, tmp_path, formats=("png",))
    write_phantom(phantom, tmp_path, formats=("nifti",))
    with pytest.raises(QSMOutputExistsError):
        write_phantom(phantom, tmp_path, formats=("nifti",))
    write_phantom(phantom, tmp_path, formats=("nifti",), overwrite=True)


def test_phantom_container_checks_shapes_and_units():
    gre, truth = sphere_gre(shape=(8, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        Phantom(gre, {"chi_ppm": np.zeros((4, 4, 4))}, np.zeros((8, 8, 8), int), {}, {})
    with pytest.raises(ValueError, match="unit"):
        Phantom(gre, {"chi": truth["chi_ppm"]}, np.zeros((8, 8, 8), int), {}, {})
