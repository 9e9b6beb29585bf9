"""The DICOM reader on real scanner data from ../shared/data/dicom_multivendor (MANIFEST 5).

Each volume is compared with the dcm2niix reference NIfTI shipped beside it. dcm2niix may
flip in-plane axes, so voxels are matched through M = inv(ref_affine) @ our_affine, which must
be a signed permutation with an integer translation.
"""

from __future__ import annotations

import functools
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from qsmliver.errors import QSMInputError
from qsmliver.io.dicom import read_dicom, scan_series

pytestmark = pytest.mark.realdata

PHILIPS = "philips_3T_dualecho_ffe"
GE = "ge_3T_kidney_b0map_mag_real_imag"
SIEMENS = "siemens_xa30_enhanced_gre_field_mapping"


def _folder(shared_data: Path, name: str) -> Path:
    folder = shared_data / "dicom_multivendor" / name
    if not folder.is_dir():
        pytest.skip(f"{folder} not available")
    return folder


def _voxel_map(our_affine, ref_affine, shape) -> tuple[tuple, np.ndarray]:
    """Reference-image indices of each of our voxels (after checking M is a signed permutation)."""
    m = np.linalg.inv(np.asarray(ref_affine, dtype=np.float64)) @ our_affine
    rounded = np.round(m)
    assert np.max(np.abs(m - rounded)) < 1e-4, m
    perm = rounded[:3, :3]
    assert np.all(np.abs(perm).sum(axis=0) == 1) and np.all(np.abs(perm).sum(axis=1) == 1)
    idx = np.indices(shape).reshape(3, -1)
    ref_idx = (perm @ idx + rounded[:3, 3:]).astype(int)
    return tuple(ref_idx), rounded


def _world_error(our_affine, ref_affine, shape) -> float:
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in shape], indexing="ij")).reshape(3, -1)
    ours = our_affine @ np.vstack([corners, np.ones(corners.shape[1])])
    _, m = _voxel_map(our_affine, ref_affine, shape)
    theirs = np.asarray(ref_affine, dtype=np.float64) @ m @ np.vstack(
        [corners, np.ones(corners.shape[1])])
    return float(np.max(np.abs(ours - theirs)))


@functools.lru_cache(maxsize=4)
def _read_cached(path: str):
    return read_dicom(path)


@pytest.fixture
def philips(shared_data):
    folder = _folder(shared_data, PHILIPS)
    return (folder, _read_cached(str(folder / "classic")),
            _read_cached(str(folder / "enhanced")))


def test_philips_classic_and_enhanced_agree(philips):
    _, classic, enhanced = philips
    for gre in (classic, enhanced):
        assert gre.shape == (80, 80, 53) and gre.vendor == "Philips" and gre.has_phase
        np.testing.assert_allclose(gre.te_s, [2.3e-3, 4.6e-3])
        assert gre.b0_t == 3.0
        np.testing.assert_allclose(gre.voxel_size_mm, [3.0, 3.0, 3.0], atol=1e-6)
        assert gre.metadata["PhaseScaling"].startswith("milliradians")
        assert gre.metadata["PhilipsScaling"].startswith("displayed value")
        assert gre.metadata["SeriesNumbers"] == [2001]
    assert len(classic.source_files) == 212 and len(enhanced.source_files) == 1
    assert classic.metadata["SOPClass"] == "MR Image Storage"
    assert enhanced.metadata["SOPClass"] == "Enhanced MR Image Storage"
    np.testing.assert_allclose(enhanced.affine, classic.affine, atol=1e-4)
    np.testing.assert_allclose(enhanced.signal, classic.signal, rtol=1e-6, atol=1e-3)
    phase = np.angle(classic.signal[np.abs(classic.signal) > 0])
    assert phase.min() < -3.0 and phase.max() > 3.0  # milliradians became radians


@pytest.mark.parametrize(("form", "tag"), [("classic", "cl"), ("enhanced", "enh")])
def test_philips_matches_dcm2niix(philips, form, tag):
    folder, classic, enhanced = philips
    gre = classic if form == "classic" else enhanced
    for e, echo in enumerate(("e1", "e2")):
        stem = folder / "ref_dcm2niix" / f"2001_WIP_fcMRI_Field_Mapping_{tag}_{echo}"
        ref = nib.load(f"{stem}.nii.gz")
        ref_phase = nib.load(f"{stem}_ph.nii.gz")
        assert _world_error(gre.affine, ref.affine, gre.shape) < 0.01
        ref_idx, _ = _voxel_map(gre.affine, ref.affine, gre.shape)
        ours = gre.signal[..., e].reshape(-1)
        # dcm2niix writes Philips floating-point magnitude: proportional to displayed values.
        ref_mag = np.asarray(ref.dataobj, dtype=np.float64)[ref_idx]
        assert np.corrcoef(np.abs(ours), ref_mag)[0, 1] > 0.9999
        ratio = ref_mag[np.abs(ours) > 10] / np.abs(ours)[np.abs(ours) > 10]
        assert np.ptp(ratio) / np.median(ratio) < 1e-3
        ref_ph = np.asarray(ref_phase.dataobj, dtype=np.float64)[ref_idx]
        valid = np.abs(ours) > 0
        diff = np.angle(np.exp(1j * (ref_ph[valid] - np.angle(ours[valid]))))
        assert np.max(np.abs(diff)) < 2e-3


def test_philips_same_series_in_two_forms(shared_data):
    folder = _folder(shared_data, PHILIPS)
    with pytest.raises(QSMInputError) as info:
        read_dicom(folder, series=2001)
    message = str(info.value)
    assert "MR Image Storage" in message and "Enhanced MR Image Storage" in message
    assert "several forms" in message


def test_philips_raw_data_object_refused(shared_data):
    folder = _folder(shared_data, PHILIPS) / "enhanced"
    raw = next(folder.glob("*_Raw.dcm.gz"))
    with pytest.raises(QSMInputError) as info:
        read_dicom(raw)
    message = str(info.value)
    assert str(raw) in message and "Raw Data Storage object with no pixel data" in message
    summaries = scan_series(folder)
    assert sorted(s.sop_class for s in summaries) == ["Enhanced MR Image Storage",
                                                      "Raw Data Storage"]
    assert [s.is_multi_echo_gre for s in summaries if s.sop_class == "Raw Data Storage"] == [
        False]
    notes = read_dicom(folder).metadata["Notes"]
    assert any("Raw Data Storage" in n for n in notes)


def test_ge_components_from_private_tag(shared_data):
    folder = _folder(shared_data, GE)
    (summary,) = scan_series(folder)
    assert summary.components == ("magnitude", "real", "imaginary")
    assert summary.n_files == 96 and summary.manufacturer == "GE"
    np.testing.assert_allclose(summary.echo_times_s, [1.476e-3, 4.476e-3])

    gre = read_dicom(folder)
    assert gre.shape == (256, 256, 16) and gre.n_echoes == 2 and gre.vendor == "GE"
    assert gre.metadata["ComplexFrom"] == "real+imaginary"
    assert gre.metadata["PhaseSign"].startswith("-1")
    assert len(gre.source_files) == 64
    np.testing.assert_allclose(gre.voxel_size_mm, [1.5, 1.5, 5.0], atol=1e-4)
    # Direction cosines: the dcm2niix sidecar records the DICOM orientation.
    iop = [0.99883, 0.04835, 0.0, 0.00963, -0.19894, -0.97996]
    lps = np.diag([-1.0, -1.0, 1.0]) @ gre.affine[:3, :2] / gre.voxel_size_mm[:2]
    np.testing.assert_allclose(lps.T.ravel(), iop, atol=1e-4)

    magnitude_files = [
        p for p in sorted(folder.glob("*.dcm"))
        if pydicom.dcmread(p, stop_before_pixels=True)[0x0043, 0x102F].value == 0
    ]
    assert len(magnitude_files) == 32
    magnitude = read_dicom(magnitude_files)
    assert not magnitude.has_phase
    np.testing.assert_allclose(magnitude.affine, gre.affine, atol=1e-6)
    for e in range(2):
        corr = np.corrcoef(np.abs(gre.signal[..., e]).ravel(),
                           np.abs(magnitude.signal[..., e]).ravel())[0, 1]
        assert corr > 0.99


@pytest.mark.parametrize("echo", [0, 1])
def test_siemens_xa30_magnitude_series(shared_data, echo):
    folder = _folder(shared_data, SIEMENS)
    gre = read_dicom(folder / "8_gre_field_mapping")
    assert not gre.has_phase and gre.vendor == "Siemens"
    assert gre.shape == (64, 64, 33) and gre.n_echoes == 2
    np.testing.assert_allclose(gre.te_s, [10.0e-3, 12.46e-3])
    assert gre.metadata["SOPClass"] == "Enhanced MR Image Storage"
    ref = nib.load(folder / "ref_dcm2niix" / f"8_gre_field_mapping_e{echo + 1}.nii")
    assert _world_error(gre.affine, ref.affine, gre.shape) < 0.01
    ref_idx, _ = _voxel_map(gre.affine, ref.affine, gre.shape)
    np.testing.assert_allclose(np.abs(gre.signal[..., echo]).ravel(),
                               np.asarray(ref.dataobj, dtype=np.float64)[ref_idx], atol=1e-3)


def test_siemens_xa30_phase_difference_series(shared_data):
    folder = _folder(shared_data, SIEMENS)
    gre = read_dicom(folder / "9_gre_field_mapping")
    assert gre.has_phase and gre.n_echoes == 1
    np.testing.assert_allclose(gre.te_s, [12.46e-3])
    np.testing.assert_allclose(np.abs(gre.signal), 1.0, rtol=1e-6)
    assert any("phase only" in n for n in gre.metadata["Notes"])
    assert gre.metadata["PhaseScaling"].startswith("siemens 12-bit")
    ref = nib.load(folder / "ref_dcm2niix" / "9_gre_field_mapping_e2_ph.nii")
    assert _world_error(gre.affine, ref.affine, gre.shape) < 0.01
    ref_idx, _ = _voxel_map(gre.affine, ref.affine, gre.shape)
    ref_rad = np.asarray(ref.dataobj, dtype=np.float64)[ref_idx] * np.pi / 4096
    diff = np.angle(np.exp(1j * (ref_rad - np.angle(gre.signal[..., 0]).ravel())))
    assert np.max(np.abs(diff)) < 1e-5

    # The whole folder: the magnitude-only multi-echo series is chosen, series 9 is named.
    whole = read_dicom(folder)
    assert whole.metadata["SeriesNumbers"] == [8]
    assert any("9 'gre_field_mapping'" in n for n in whole.metadata["Notes"])
    assert read_dicom(folder, series=9).metadata["ComplexFrom"] == "phase only"
