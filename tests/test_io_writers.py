"""Writers: maps and GRE data as NIfTI/BIDS with sidecars, atomic and overwrite-safe."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from conftest import fail_nth_nifti_save, make_complex_echoes

from qsmliver.data import MultiEchoGRE, QuantitativeMap
from qsmliver.errors import QSMConfigError, QSMOutputExistsError
from qsmliver.io.nifti import read_nifti_auto
from qsmliver.io.writers import write_bids_megre, write_gre_nifti, write_map

TE_S = (0.004, 0.008, 0.012)
SHAPE = (12, 10, 8)


def _affine() -> np.ndarray:
    angle = np.deg2rad(20.0)
    rx = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)],
                   [0, np.sin(angle), np.cos(angle)]])
    affine = np.eye(4)
    affine[:3, :3] = rx @ np.diag([0.8, 0.9, 1.5])
    affine[:3, 3] = [-90.0, 100.5, -12.0]
    return affine


def _gre(**kwargs) -> MultiEchoGRE:
    signal = make_complex_echoes(shape=SHAPE, te_s=TE_S)
    return MultiEchoGRE(signal, te_s=TE_S, b0_t=1.5, affine=_affine(), vendor="GE",
                        source_files=["/data/in_mag.nii.gz", "/data/in_ph.nii.gz"], **kwargs)


def _chi(rng, dtype=np.float64, name="Chimap", unit="ppm") -> QuantitativeMap:
    data = rng.standard_normal(SHAPE).astype(dtype) if dtype is not bool \
        else rng.random(SHAPE) > 0.5
    return QuantitativeMap(data, name, unit, _affine(), method="TV-ADMM",
                           parameters={"lambda": 1e-3, "iterations": 50})


def _listing(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


# -- write_map ------------------------------------------------------------------------------------
def test_write_map_nifti_and_sidecar(tmp_path, rng):
    qmap = _chi(rng)
    path = write_map(qmap, tmp_path / "sub-01_Chimap.nii.gz", inputs=["a.nii.gz"],
                     extra={"Reference": "whole-brain mean"})
    assert path == tmp_path / "sub-01_Chimap.nii.gz"
    image = nib.load(path)
    assert image.get_data_dtype() == np.float32
    assert int(image.header["sform_code"]) == 1 and int(image.header["qform_code"]) == 1
    np.testing.assert_allclose(image.affine, qmap.affine, atol=1e-4)
    np.testing.assert_allclose(image.header.get_qform(), qmap.affine, atol=1e-4)
    np.testing.assert_allclose(np.asarray(image.dataobj), qmap.data.astype(np.float32))
    sidecar = json.loads((tmp_path / "sub-01_Chimap.json").read_text())
    assert sidecar["Units"] == "ppm" and sidecar["Method"] == "TV-ADMM"
    assert sidecar["Parameters"] == {"lambda": 1e-3, "iterations": 50}
    assert sidecar["SourceFiles"] == ["a.nii.gz"]
    assert sidecar["GeneratedBy"][0]["Name"] == "qsmliver"
    assert sidecar["Reference"] == "whole-brain mean"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub-01_Chimap.json",
                                                          "sub-01_Chimap.nii.gz"]


@pytest.mark.parametrize(("values", "dtype"), [
    (np.zeros(SHAPE, bool), np.uint8),
    (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 7, np.uint8),
    (np.arange(np.prod(SHAPE)).reshape(SHAPE) - 300, np.int16),
    (np.full(SHAPE, 70000, np.int64), np.int32),
])
def test_masks_and_labels_get_integer_types(tmp_path, values, dtype):
    qmap = QuantitativeMap(values, "mask", "1", _affine())
    image = nib.load(write_map(qmap, tmp_path / "m.nii"))
    assert image.get_data_dtype() == dtype
    np.testing.assert_array_equal(np.asarray(image.dataobj), values)


def test_write_map_refuses_bad_names_and_data(tmp_path, rng):
    with pytest.raises(QSMConfigError, match=".nii"):
        write_map(_chi(rng), tmp_path / "chi.mgz")
    with pytest.raises(QSMConfigError, match="3-D or 4-D"):
        write_map(QuantitativeMap(np.zeros((4, 4)), "x", "1", np.eye(4)), tmp_path / "x.nii")
    with pytest.raises(QSMConfigError, match="complex"):
        write_map(QuantitativeMap(np.zeros(SHAPE, complex), "x", "1", np.eye(4)),
                  tmp_path / "x.nii")
    assert not any(tmp_path.iterdir())


def test_existing_outputs_are_kept_unless_overwrite(tmp_path, rng):
    path = write_map(_chi(rng), tmp_path / "chi.nii.gz")
    before = _listing(tmp_path)
    with pytest.raises(QSMOutputExistsError, match="overwrite"):
        write_map(_chi(rng), path)
    assert _listing(tmp_path) == before
    (tmp_path / "chi.nii.gz").unlink()  # only the sidecar left: still refused
    with pytest.raises(QSMOutputExistsError, match="chi.json"):
        write_map(_chi(rng), path)
    assert not (tmp_path / "chi.nii.gz").exists()
    new = _chi(rng)
    write_map(new, path, overwrite=True)
    np.testing.assert_allclose(np.asarray(nib.load(path).dataobj), new.data.astype(np.float32))
    assert json.loads((tmp_path / "chi.json").read_text())["Units"] == "ppm"


def test_failed_save_leaves_nothing(tmp_path, rng, monkeypatch):
    def failing_save(image, filename):
        raise OSError("No space left on device")

    monkeypatch.setattr(nib, "save", failing_save)
    with pytest.raises(OSError, match="No space"):
        write_map(_chi(rng), tmp_path / "chi.nii.gz")
    assert not any(tmp_path.iterdir())


def test_failed_overwrite_keeps_the_old_files(tmp_path, rng, monkeypatch):
    path = write_map(_chi(rng), tmp_path / "chi.nii.gz")
    before = _listing(tmp_path)

    def failing_save(image, filename):
        raise OSError("disk quota exceeded")

    monkeypatch.setattr(nib, "save", failing_save)
    with pytest.raises(OSError):
        write_map(_chi(rng), path, overwrite=True)
    assert _listing(tmp_path) == before


def test_failure_half_way_through_a_gre_leaves_nothing(tmp_path, monkeypatch):
    fail_nth_nifti_save(monkeypatch, 2)
    with pytest.raises(OSError):
        write_gre_nifti(_gre(), tmp_path / "out" / "scan")
    assert not any(p.is_file() for p in tmp_path.rglob("*"))
    monkeypatch.undo()  # a fresh counter for the second writer
    fail_nth_nifti_save(monkeypatch, 2)
    with pytest.raises(OSError):
        write_bids_megre(_gre(), tmp_path / "bids", "01")
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


# -- write_gre_nifti ------------------------------------------------------------------------------
def test_write_gre_nifti_files_and_sidecars(tmp_path):
    gre = _gre()
    written = write_gre_nifti(gre, tmp_path / "scan")
    assert [p.name for p in written] == ["scan_mag.nii.gz", "scan_mag.json",
                                         "scan_phase.nii.gz", "scan_phase.json"]
    mag, phase = nib.load(written[0]), nib.load(written[2])
    assert mag.shape == (*SHAPE, 3) and mag.get_data_dtype() == np.float32
    assert phase.get_data_dtype() == np.float32
    stored = np.asarray(phase.dataobj)
    assert stored.min() >= -np.pi and stored.max() <= np.pi
    assert int(mag.header["sform_code"]) == 1 and int(mag.header["qform_code"]) == 1
    sidecar = json.loads(written[3].read_text())
    assert sidecar["EchoTime"] == list(TE_S)
    assert sidecar["MagneticFieldStrength"] == 1.5 and sidecar["Manufacturer"] == "GE"
    np.testing.assert_allclose(sidecar["B0Direction_voxel"], gre.b0_dir)
    assert sidecar["Units"] == "rad"
    assert sidecar["SourceFiles"] == list(gre.source_files)
    assert json.loads(written[1].read_text())["Units"] == "arbitrary"


def test_write_gre_nifti_round_trips_with_custom_b0_dir_and_real_imag(tmp_path):
    gre = _gre(b0_dir=(0.0, 0.6, 0.8))
    back = read_nifti_auto(write_gre_nifti(gre, tmp_path / "a")[0])
    np.testing.assert_allclose(back.b0_dir, [0.0, 0.6, 0.8], atol=1e-7)
    assert back.vendor == "GE" and back.b0_t == 1.5
    written = write_gre_nifti(gre, tmp_path / "b" / "scan", part=("real", "imag"))
    assert [p.name for p in written][::2] == ["scan_real.nii.gz", "scan_imag.nii.gz"]
    back = read_nifti_auto(written[0])
    assert np.abs(back.signal - gre.signal).max() < 1e-3 * np.abs(gre.signal).max()
    np.testing.assert_allclose(back.affine, gre.affine, atol=1e-4)


def test_write_gre_nifti_magnitude_only_and_overwrite(tmp_path):
    gre = MultiEchoGRE(np.abs(make_complex_echoes(shape=SHAPE, te_s=TE_S)), te_s=TE_S,
                       b0_t=3.0, has_phase=False)
    written = write_gre_nifti(gre, tmp_path / "m")
    assert [p.name for p in written] == ["m_mag.nii.gz", "m_mag.json"]
    assert not read_nifti_auto(written[0]).has_phase
    with pytest.raises(QSMConfigError, match="magnitude-only"):
        write_gre_nifti(gre, tmp_path / "n", part=("real", "imag"))
    with pytest.raises(QSMOutputExistsError):
        write_gre_nifti(gre, tmp_path / "m")
    assert write_gre_nifti(gre, tmp_path / "m", overwrite=True) == written
    with pytest.raises(QSMConfigError, match="part"):
        write_gre_nifti(_gre(), tmp_path / "p", part=("mag", "mag"))


# -- write_bids_megre -----------------------------------------------------------------------------
def test_write_bids_megre_layout_and_description(tmp_path):
    gre = _gre()
    written = write_bids_megre(gre, tmp_path, "sub-07", session="2", acquisition="gre", run=1)
    names = sorted(p.relative_to(tmp_path).as_posix() for p in written)
    assert "sub-07/ses-2/anat/sub-07_ses-2_acq-gre_run-1_echo-3_part-phase_MEGRE.nii.gz" \
        in names
    assert len(written) == 3 * 2 * 2 + 1
    description = json.loads((tmp_path / "dataset_description.json").read_text())
    assert description["BIDSVersion"] == "1.9.0" and description["DatasetType"] == "raw"
    assert description["GeneratedBy"][0]["Name"] == "qsmliver"
    sidecar = json.loads((tmp_path / "sub-07/ses-2/anat/"
                          "sub-07_ses-2_acq-gre_run-1_echo-2_part-mag_MEGRE.json").read_text())
    assert sidecar["EchoTime"] == TE_S[1] and sidecar["EchoNumber"] == 2
    assert sidecar["MagneticFieldStrength"] == 1.5 and sidecar["Manufacturer"] == "GE"
    image = nib.load(tmp_path / "sub-07/ses-2/anat/"
                     "sub-07_ses-2_acq-gre_run-1_echo-2_part-mag_MEGRE.nii.gz")
    assert image.shape == SHAPE and image.get_data_dtype() == np.float32


def test_write_bids_megre_keeps_an_existing_description(tmp_path):
    (tmp_path / "dataset_description.json").write_text('{"Name": "mine"}')
    written = write_bids_megre(_gre(), tmp_path, "01")
    assert tmp_path / "dataset_description.json" not in written
    assert json.loads((tmp_path / "dataset_description.json").read_text()) == {"Name": "mine"}
    before = _listing(tmp_path)
    with pytest.raises(QSMOutputExistsError):
        write_bids_megre(_gre(), tmp_path, "01")
    assert _listing(tmp_path) == before
    write_bids_megre(_gre(), tmp_path, "01", overwrite=True)
    write_bids_megre(_gre(), tmp_path, "02")  # another subject beside it
    assert (tmp_path / "sub-02" / "anat").is_dir()
