"""The qsmliver command: info, convert, exit codes, one-line errors, no partial output."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from conftest import fail_nth_nifti_save, make_complex_echoes

from qsmliver.cli import main

TE_S = (0.004, 0.008, 0.012, 0.016)


def _write_mag_phase(folder, te_s=TE_S, b0=3.0, with_sidecar=True):
    folder.mkdir(parents=True, exist_ok=True)
    echoes = make_complex_echoes(te_s=te_s)
    affine = np.diag([0.8, 0.9, 1.5, 1.0])
    affine[:3, 3] = [-5.0, 3.0, 12.0]
    mag = folder / "gre.nii.gz"
    phase = folder / "gre_ph.nii.gz"
    nib.save(nib.Nifti1Image(np.abs(echoes).astype(np.float32), affine), mag)
    nib.save(nib.Nifti1Image(np.angle(echoes).astype(np.float32), affine), phase)
    if with_sidecar:
        sidecar = {"EchoTime": list(te_s), "MagneticFieldStrength": b0, "Manufacturer": "Siemens"}
        (folder / "gre.json").write_text(json.dumps(sidecar))
        (folder / "gre_ph.json").write_text(json.dumps(sidecar))
    return mag, phase, echoes, affine


def test_info_reads_nifti_pair(tmp_path, capsys):
    mag, phase, _, _ = _write_mag_phase(tmp_path / "in")
    assert main(["info", str(mag), "--phase", str(phase)]) == 0
    out = capsys.readouterr().out
    assert "12 x 10 x 8 voxels, 4 echoes" in out
    assert "4.000, 8.000, 12.000, 16.000 ms" in out
    assert "3 T" in out and "0.8 x 0.9 x 1.5 mm" in out


def test_info_json_and_overrides(tmp_path, capsys):
    mag, phase, _, _ = _write_mag_phase(tmp_path / "in", with_sidecar=False)
    code = main(["info", str(mag), "--phase", str(phase), "--te", "4", "8", "12", "16",
                 "--b0", "1.5", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["EchoTime_s"] == pytest.approx(TE_S)
    assert summary["MagneticFieldStrength_T"] == 1.5
    assert summary["B0Direction_voxel"] == pytest.approx([0, 0, 1])


def test_missing_te_is_exit_2_with_one_line(tmp_path, capsys):
    mag, phase, _, _ = _write_mag_phase(tmp_path / "in", with_sidecar=False)
    assert main(["info", str(mag), "--phase", str(phase), "--b0", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("qsmliver: error: ") and "gre.nii.gz" in err and "EchoTime" in err


def test_missing_file_is_exit_2(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nothing.nii.gz")]) == 2
    err = capsys.readouterr().err
    assert "nothing.nii.gz: no such file or folder" in err


def test_bad_option_combination_is_exit_2(tmp_path, capsys):
    mag, phase, _, _ = _write_mag_phase(tmp_path / "in")
    assert main(["info", str(mag), "--phase", str(phase), "--series", "3"]) == 2
    assert "--series applies to DICOM input only" in capsys.readouterr().err


def test_convert_to_bids_and_back(tmp_path, capsys):
    mag, phase, _echoes, affine = _write_mag_phase(tmp_path / "in")
    out = tmp_path / "bids"
    assert main(["convert", str(mag), "--phase", str(phase), "-o", str(out), "--format",
                 "bids", "--to-subject", "07", "--to-session", "2"]) == 0
    written = capsys.readouterr().out.split()
    assert any("sub-07_ses-2_echo-1_part-phase_MEGRE.nii.gz" in w for w in written)
    assert (out / "dataset_description.json").exists()
    assert main(["info", str(out / "sub-07" / "ses-2"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["Echoes"] == 4
    assert summary["EchoTime_s"] == pytest.approx(TE_S)
    np.testing.assert_allclose(np.asarray(summary["Affine"]), affine, atol=1e-4)
    assert not any(p.name.startswith(".qsmliver-staging") for p in out.iterdir())


def test_convert_refuses_to_overwrite_then_overwrites(tmp_path, capsys):
    mag, phase, _, _ = _write_mag_phase(tmp_path / "in")
    out = tmp_path / "nifti"
    args = ["convert", str(mag), "--phase", str(phase), "-o", str(out), "--name", "scan"]
    assert main(args) == 0
    first = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert {"scan_mag.nii.gz", "scan_phase.nii.gz"} <= set(first)
    capsys.readouterr()
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == first
    assert main([*args, "--overwrite"]) == 0


def test_failed_convert_leaves_no_output(tmp_path, capsys):
    mag, phase, _, _ = _write_mag_phase(tmp_path / "in")
    phase.write_bytes(b"")  # empty phase file
    out = tmp_path / "out"
    assert main(["convert", str(mag), "--phase", str(phase), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "gre_ph.nii.gz" in err
    assert not out.exists() or not any(out.rglob("*"))


def test_failed_write_leaves_no_output(tmp_path, capsys, monkeypatch):
    """A failure half-way through writing (here: the second NIfTI) leaves nothing behind."""
    mag, phase, _, _ = _write_mag_phase(tmp_path / "in")
    out = tmp_path / "out"
    fail_nth_nifti_save(monkeypatch, 2)
    code = main(["convert", str(mag), "--phase", str(phase), "-o", str(out)])
    assert code == 1
    assert "No space left on device" in capsys.readouterr().err
    assert not any(p.is_file() for p in out.rglob("*"))


def test_no_command_prints_help_and_exit_2(capsys):
    assert main([]) == 2
    assert "usage: qsmliver" in capsys.readouterr().err


def test_console_script_runs_in_subprocess(tmp_path):
    mag, phase, _, _ = _write_mag_phase(tmp_path / "in")
    result = subprocess.run([sys.executable, "-m", "qsmliver", "info", str(mag), "--phase",
                             str(phase)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "4 echoes" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "qsmliver", "info", str(tmp_path / "x.dcm")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "x.dcm" in bad.stderr
