"""NIfTI readers on real scanner data from ../shared/data (skipped when it is absent).

See ../shared/data/MANIFEST.md sections 4 (romeo_7T_multiecho) and 6 (ukat_renal_multivendor).
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from qsmliver.errors import QSMInputError
from qsmliver.io import read
from qsmliver.io.nifti import read_nifti, read_nifti_auto
from qsmliver.io.phase import phase_to_radians

pytestmark = pytest.mark.realdata

UKAT = "ukat_renal_multivendor"
SIEMENS_TE_MS = [4.61 * (k + 1) for k in range(12)]


def _circular(a, b) -> np.ndarray:
    return np.abs(np.angle(np.exp(1j * (np.asarray(a, np.float64) - np.asarray(b, np.float64)))))


# -- Siemens 12-echo: magnitude series 00024, phase series 00026 ----------------------------------
def test_siemens_explicit_lists_pair_by_echo_time(shared_data):
    folder = shared_data / UKAT / "siemens_r2star_12echo"
    magnitude = sorted(folder.glob("00024__*_e*.nii.gz"))  # lexicographic: e1, e10, e11, e12, e2
    phase = sorted(folder.glob("00026__*_ph.nii.gz"), reverse=True)
    assert len(magnitude) == len(phase) == 12
    gre = read_nifti(magnitude=magnitude, phase=phase)
    assert gre.n_echoes == 12 and gre.shape == (128, 128, 5)
    np.testing.assert_allclose(gre.te_s * 1e3, SIEMENS_TE_MS, atol=0.01)
    assert gre.b0_t == 3.0 and gre.vendor == "Siemens"
    assert gre.metadata["PhaseScaling"] == "siemens"
    assert gre.metadata["PhaseStoredRange"] == [-4096.0, 4092.0]
    assert gre.phase.min() >= -np.pi and gre.phase.max() <= np.pi  # angle of complex64
    np.testing.assert_allclose(gre.voxel_size_mm, [3.0, 3.0, 5.0], rtol=1e-4)
    # echo k of the magnitude list goes with echo k of the phase list
    e10 = folder / "00026__bh3x_r2star_inphase_volume_e10_ph.nii.gz"
    stored = nib.load(e10).get_fdata()
    assert stored.min() == -4096 and stored.max() == 4092
    radians, scaling = phase_to_radians(stored, vendor="Siemens")
    assert scaling == "siemens" and radians.min() >= -np.pi and radians.max() < np.pi
    signal = np.abs(gre.signal[..., 9]) > 0
    error = _circular(np.angle(gre.signal[..., 9]), stored * np.pi / 4096)[signal]
    assert error.max() < 1e-5
    e10_mag = nib.load(folder / "00024__bh3x_r2star_inphase_volume_e10.nii.gz").get_fdata()
    np.testing.assert_allclose(np.abs(gre.signal[..., 9]), e10_mag, rtol=1e-6, atol=1e-3)


def test_siemens_folder_and_file_pairing(shared_data):
    folder = shared_data / UKAT / "siemens_r2star_12echo"
    explicit = read_nifti(sorted(folder.glob("00024__*.nii.gz")),
                          sorted(folder.glob("00026__*.nii.gz")))
    for given in (folder, folder / "00024__bh3x_r2star_inphase_volume_e3.nii.gz",
                  folder / "00026__bh3x_r2star_inphase_volume_e12_ph.nii.gz"):
        gre = read_nifti_auto(given)
        assert gre.n_echoes == 12
        assert gre.metadata["Acquisition"] == "bh3x_r2star_inphase_volume"
        assert gre.metadata["SkippedFiles"] == []
        np.testing.assert_array_equal(gre.signal, explicit.signal)
        np.testing.assert_allclose(gre.affine, explicit.affine)
    assert read(folder).n_echoes == 12


# -- Philips dual-echo complex: milliradian phase vs atan2(imag, real) ----------------------------
def _philips_b0(shared_data):
    folder = shared_data / UKAT / "philips_b0_dualecho_complex"
    stem = "01001__B0_map_expiration_volume_2DMS_product_auto"
    files = {tail: [folder / f"{stem}_e{k}{tail}.nii.gz" for k in (1, 2)]
             for tail in ("", "_ph", "_real", "_imaginary")}
    return folder, files


def test_philips_phase_agrees_with_real_imaginary(shared_data):
    _, files = _philips_b0(shared_data)
    mag_phase = read_nifti(magnitude=files[""], phase=files["_ph"])
    real_imag = read_nifti(real=files["_real"], imag=files["_imaginary"])
    assert mag_phase.metadata["PhaseScaling"] == "milliradians"
    assert mag_phase.vendor == "Philips" and mag_phase.b0_t == 3.0
    np.testing.assert_allclose(mag_phase.te_s * 1e3, [4.001, 6.46], atol=1e-6)
    np.testing.assert_allclose(real_imag.te_s, mag_phase.te_s)
    np.testing.assert_allclose(real_imag.affine, mag_phase.affine)
    magnitude = np.abs(real_imag.signal)
    signal = magnitude > np.percentile(magnitude, 75)
    atan2 = np.arctan2(real_imag.signal.imag, real_imag.signal.real)
    difference = _circular(mag_phase.phase, atan2)[signal]
    assert np.median(difference) < 0.01 and np.percentile(difference, 95) < 0.02
    ratio = np.abs(mag_phase.signal)[signal] / magnitude[signal]
    assert abs(np.median(ratio) - 1) < 0.03


def test_philips_auto_prefers_real_imaginary(shared_data):
    folder, files = _philips_b0(shared_data)
    auto = read_nifti_auto(folder)
    assert auto.metadata["Components"] == "real+imaginary" and auto.n_echoes == 2
    assert len(auto.metadata["SkippedFiles"]) == 4
    chosen = read_nifti_auto(files["_ph"][1], components="magnitude-phase")
    assert chosen.metadata["PhaseScaling"] == "milliradians"


# -- Philips 13-echo with the dcm2niix mis-stacked e2 ---------------------------------------------
def test_philips_r2star_skips_the_mis_stacked_echo(shared_data):
    folder = shared_data / UKAT / "philips_r2star_13echo"
    gre = read_nifti_auto(folder)
    assert gre.n_echoes == 12 and gre.shape == (128, 128, 5)
    np.testing.assert_allclose(gre.te_s * 1e3, 4.611 + 4.61 * np.arange(12), atol=0.01)
    assert gre.metadata["PhaseScaling"] == "milliradians"
    skipped = gre.metadata["SkippedFiles"]
    assert len(skipped) == 1 and "_e2.nii.gz" in skipped[0] and "no EchoTime" in skipped[0]
    assert not any(name.endswith("_e2.nii.gz") for name in gre.source_files)
    with pytest.raises(QSMInputError, match="cannot be an echo"):
        read_nifti_auto(folder / "01401__Kidney_T2star_m-FFE_3x3x5_SPIR_volume_inphase_e2.nii.gz")


# -- ROMEO 7T: phase in arbitrary units -----------------------------------------------------------
def test_romeo_arbitrary_units_rescale_with_minmax(shared_data):
    folder = shared_data / "romeo_7T_multiecho" / "small"
    gre = read_nifti(folder / "Mag.nii", folder / "Phase.nii", te_s=[0.004, 0.008, 0.012],
                     b0_t=7.0)
    assert gre.metadata["PhaseScaling"] == "minmax"
    assert gre.n_echoes == 3 and gre.shape == (51, 51, 41)
    np.testing.assert_allclose(gre.voxel_size_mm, [0.46875, 0.46875, 1.0], rtol=1e-3)
    assert gre.phase.min() >= -np.pi and gre.phase.max() <= np.pi
    assert gre.phase.max() - gre.phase.min() > 6.0  # the full circle, not +-0.0037
    auto = read_nifti_auto(folder, te_s=[0.004, 0.008, 0.012], b0_t=7.0)
    np.testing.assert_array_equal(auto.signal, gre.signal)
    with pytest.raises(QSMInputError, match="echo times are missing") as info:
        read_nifti(folder / "Mag.nii", folder / "Phase.nii", b0_t=7.0)
    assert "Mag.nii" in str(info.value)
