"""BIDS MEGRE: round trips through the writer, qsm-forward layout, inheritance, selection."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import make_complex_echoes

from qsmliver.data import MultiEchoGRE
from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.io import detect_format, read
from qsmliver.io.bids import (
    bids_megre_name,
    list_bids_megre,
    parse_bids_name,
    read_bids,
    validate_label,
)
from qsmliver.io.writers import write_bids_megre

TE_S = (0.004, 0.008, 0.012, 0.016)
SHAPE = (12, 10, 8)


def _affine() -> np.ndarray:
    angle = np.deg2rad(12.0)
    rz = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                   [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ np.diag([0.8, 0.9, 1.5])
    affine[:3, 3] = [10.0, -20.5, 33.25]
    return affine


def _gre(te_s=TE_S, seed=0) -> MultiEchoGRE:
    return MultiEchoGRE(make_complex_echoes(shape=SHAPE, te_s=te_s, seed=seed), te_s=te_s,
                        b0_t=7.0, affine=_affine(), vendor="Siemens")


def _world(affine) -> np.ndarray:
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in SHAPE], indexing="ij")).reshape(3, -1)
    return (np.asarray(affine) @ np.vstack([corners, np.ones(corners.shape[1])]))[:3]


def _assert_same(original: MultiEchoGRE, back: MultiEchoGRE) -> None:
    assert back.shape == original.shape and back.n_echoes == original.n_echoes
    np.testing.assert_allclose(back.te_s, original.te_s, rtol=1e-9)
    assert back.b0_t == pytest.approx(original.b0_t)
    np.testing.assert_allclose(back.voxel_size_mm, original.voxel_size_mm, rtol=1e-6)
    assert np.max(np.abs(_world(back.affine) - _world(original.affine))) < 1e-4
    assert np.abs(np.angle(back.signal * np.conj(original.signal))).max() < 2e-3
    np.testing.assert_allclose(np.abs(back.signal), np.abs(original.signal), rtol=1e-4)


def _qsm_forward_layout(root: Path, gre: MultiEchoGRE, *, subject="1", session="1", run="1",
                        sidecar_keys=("EchoTime", "MagneticFieldStrength"), ext=".nii",
                        parts=("mag", "phase")) -> list[Path]:
    """Files as qsm-forward writes them: uncompressed .nii, run-1, radians phase."""
    anat = root / f"sub-{subject}" / f"ses-{session}" / "anat"
    anat.mkdir(parents=True, exist_ok=True)
    written = []
    for k, te in enumerate(gre.te_s):
        for part in parts:
            stem = f"sub-{subject}_ses-{session}_run-{run}_echo-{k + 1}"
            stem += f"_part-{part}_MEGRE" if part else "_MEGRE"
            values = np.abs(gre.signal[..., k]) if part in ("mag", None) \
                else np.angle(gre.signal[..., k])
            nib.save(nib.Nifti1Image(values.astype(np.float32), gre.affine), anat / (stem + ext))
            sidecar = {"EchoTime": float(te), "MagneticFieldStrength": gre.b0_t}
            (anat / f"{stem}.json").write_text(json.dumps({k: sidecar[k] for k in sidecar_keys}))
            written.append(anat / (stem + ext))
    return written


# -- round trips ----------------------------------------------------------------------------------
def test_writer_round_trip_from_every_folder_level(tmp_path):
    gre = _gre()
    files = write_bids_megre(gre, tmp_path, "01", session="2", run=1)
    assert tmp_path / "dataset_description.json" in files
    for folder in (tmp_path, tmp_path / "sub-01", tmp_path / "sub-01" / "ses-2",
                   tmp_path / "sub-01" / "ses-2" / "anat"):
        back = read_bids(folder)
        _assert_same(gre, back)
        assert back.metadata["BIDSEntities"] == "sub-01_ses-2_run-1"
        assert back.metadata["BIDSRoot"] == str(tmp_path.absolute())
    assert detect_format(tmp_path / "sub-01") == "bids"
    _assert_same(gre, read(tmp_path / "sub-01" / "ses-2"))


def test_real_imag_parts_round_trip(tmp_path):
    gre = _gre()
    files = write_bids_megre(gre, tmp_path, "01", part=("real", "imag"))
    assert any(f.name == "sub-01_echo-4_part-imag_MEGRE.nii.gz" for f in files)
    back = read_bids(tmp_path)
    _assert_same(gre, back)
    assert back.metadata["Components"] == "real+imaginary"


def test_qsm_forward_layout(tmp_path):
    gre = _gre()
    _qsm_forward_layout(tmp_path, gre)
    back = read_bids(tmp_path / "sub-1" / "ses-1")
    _assert_same(gre, back)
    assert back.metadata["PhaseScaling"] == "radians"
    assert back.vendor is None


def test_files_without_part_are_magnitude(tmp_path):
    gre = _gre()
    _qsm_forward_layout(tmp_path, gre, parts=(None,))
    back = read_bids(tmp_path)
    assert not back.has_phase
    np.testing.assert_allclose(np.abs(back.signal), np.abs(gre.signal), rtol=1e-5)


def test_sidecar_inheritance(tmp_path, monkeypatch):
    gre = _gre()
    root = tmp_path / "ds"
    _qsm_forward_layout(root, gre, sidecar_keys=("EchoTime",))
    (root / "MEGRE.json").write_text(json.dumps({"MagneticFieldStrength": 1.5,
                                                  "Manufacturer": "Philips"}))
    (root / "acq-fast_MEGRE.json").write_text(json.dumps({"MagneticFieldStrength": 9.4}))
    (root / "sub-1" / "sub-1_MEGRE.json").write_text(json.dumps({"MagneticFieldStrength": 7.0}))
    (tmp_path / "MEGRE.json").write_text(json.dumps({"Manufacturer": "GE"}))  # above the root
    back = read_bids(root)
    _assert_same(gre, back)  # 7 T from the subject level overrides 1.5 T at the root
    assert back.vendor == "Philips"
    used = back.metadata["SidecarFiles"]
    assert str(root / "MEGRE.json") in used
    assert not any("acq-fast" in f for f in used)  # its entities do not apply
    monkeypatch.chdir(root)
    relative = read_bids(Path("sub-1") / "ses-1")
    assert relative.b0_t == 7.0 and relative.vendor == "Philips"
    # the file level wins over everything above it
    for path in sorted((root / "sub-1" / "ses-1" / "anat").glob("*.json")):
        data = json.loads(path.read_text())
        path.write_text(json.dumps({**data, "MagneticFieldStrength": 3.0}))
    assert read_bids(root).b0_t == 3.0


def test_echo_level_sidecar_applies_to_all_parts(tmp_path):
    gre = _gre()
    _qsm_forward_layout(tmp_path, gre, sidecar_keys=())
    anat = tmp_path / "sub-1" / "ses-1" / "anat"
    for k, te in enumerate(TE_S):
        (anat / f"sub-1_ses-1_run-1_echo-{k + 1}_MEGRE.json").write_text(
            json.dumps({"EchoTime": te}))
    with pytest.raises(QSMInputError, match="field strength is missing"):
        read_bids(tmp_path)
    _assert_same(gre, read_bids(tmp_path, b0_t=7.0))


# -- selection ------------------------------------------------------------------------------------
def test_several_subjects_are_listed_and_chosen(tmp_path):
    first, second = _gre(), _gre(seed=1)
    write_bids_megre(first, tmp_path, "01")
    write_bids_megre(second, tmp_path, "02")
    with pytest.raises(QSMInputError, match="subject=") as info:
        read_bids(tmp_path)
    assert "sub-01" in str(info.value) and "sub-02" in str(info.value)
    _assert_same(second, read_bids(tmp_path, subject="02"))
    _assert_same(first, read_bids(tmp_path, subject="sub-01"))
    _assert_same(first, read_bids(tmp_path / "sub-01"))


@pytest.mark.parametrize(("entity", "argument", "values"), [
    ("session", "session", ("pre", "post")),
    ("acquisition", "acquisition", ("fast", "slow")),
    ("run", "run", ("1", "2")),
])
def test_several_sessions_acquisitions_runs(tmp_path, entity, argument, values):
    gre = _gre()
    for value in values:
        write_bids_megre(gre, tmp_path, "01", **{entity: value})
    with pytest.raises(QSMInputError, match=f"{argument}=") as info:
        read_bids(tmp_path)
    assert values[0] in str(info.value) and values[1] in str(info.value)
    back = read_bids(tmp_path, **{argument: values[1]})
    _assert_same(gre, back)
    with pytest.raises(QSMInputError, match="no MEGRE files match"):
        read_bids(tmp_path, **{argument: "other"})


def test_list_bids_megre(tmp_path):
    write_bids_megre(_gre(), tmp_path, "01", session="1", acquisition="fast", run=2)
    write_bids_megre(_gre(te_s=TE_S[:3]), tmp_path, "02", part=("mag",))
    (tmp_path / "derivatives" / "sub-09" / "anat").mkdir(parents=True)
    (tmp_path / "derivatives" / "sub-09" / "anat" / "sub-09_echo-1_MEGRE.nii").write_bytes(b"x")
    listing = list_bids_megre(tmp_path)
    assert [(a["subject"], a["session"], a["acquisition"], a["run"], a["echoes"], a["parts"])
            for a in listing] == [("01", "1", "fast", "2", 4, ["mag", "phase"]),
                                  ("02", None, None, None, 3, ["mag"])]
    assert len(listing[0]["files"]) == 8
    assert list_bids_megre(tmp_path / "sub-02")[0]["subject"] == "02"


# -- names and labels -----------------------------------------------------------------------------
def test_names_and_labels():
    assert bids_megre_name("01", session="a", acquisition="gre", run=3, echo=2,
                           part="mag").as_posix() == (
        "sub-01/ses-a/anat/sub-01_ses-a_acq-gre_run-3_echo-2_part-mag_MEGRE.nii.gz")
    assert parse_bids_name("sub-1_echo-1_MEGRE.nii") == ({"sub": "1", "echo": "1"}, "MEGRE",
                                                         ".nii")
    assert parse_bids_name("README") is None
    assert parse_bids_name("sub-1_junk_MEGRE.nii") is None
    assert validate_label("ses-2", "ses") == "2"
    for bad in ("a_b", "a-b", "", "é", None):
        with pytest.raises(QSMConfigError):
            validate_label(bad, "sub")
    with pytest.raises(QSMConfigError, match="part"):
        bids_megre_name("01", echo=1, part="magnitude")


def test_writer_validates_labels_before_writing(tmp_path):
    for kwargs in ({"subject": "0_1"}, {"subject": "01", "session": "a-b"},
                   {"subject": "01", "run": "1.5"}, {"subject": "01", "acquisition": "x y"}):
        with pytest.raises(QSMConfigError, match="letters and digits"):
            write_bids_megre(_gre(), tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())


# -- bad input ------------------------------------------------------------------------------------
def test_missing_echo_in_one_part(tmp_path):
    gre = _gre()
    files = _qsm_forward_layout(tmp_path, gre)
    missing = next(f for f in files if "echo-3_part-phase" in f.name)
    missing.unlink()
    with pytest.raises(QSMInputError, match="echoes") as info:
        read_bids(tmp_path)
    assert "part-mag" in str(info.value) and "MEGRE.nii" in str(info.value)


def test_phase_without_magnitude(tmp_path):
    _qsm_forward_layout(tmp_path, _gre(), parts=("phase",))
    with pytest.raises(QSMInputError, match="without magnitude"):
        read_bids(tmp_path)


def test_no_megre_files(tmp_path):
    (tmp_path / "sub-01" / "anat").mkdir(parents=True)
    with pytest.raises(QSMInputError, match="no \\*_MEGRE") as info:
        read_bids(tmp_path)
    assert str(tmp_path) in str(info.value)
    with pytest.raises(QSMInputError, match="no such folder"):
        read_bids(tmp_path / "nowhere")


def test_bad_sidecar_and_bad_image_are_named(tmp_path):
    files = _qsm_forward_layout(tmp_path, _gre())
    bad_json = files[3].with_suffix(".json")
    bad_json.write_text("{")
    with pytest.raises(QSMInputError, match="JSON") as info:
        read_bids(tmp_path)
    assert bad_json.name in str(info.value)
    bad_json.write_text(json.dumps({"EchoTime": 0.008, "MagneticFieldStrength": 7.0}))
    files[2].write_bytes(b"")
    with pytest.raises(QSMInputError, match="empty") as info:
        read_bids(tmp_path)
    assert files[2].name in str(info.value)
