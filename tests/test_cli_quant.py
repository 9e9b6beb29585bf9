"""The r2star, lic and calibrate commands (through register() and through qsmliver.cli.main)."""

from __future__ import annotations

import argparse
import json

import nibabel as nib
import numpy as np
import pytest

from qsmliver.calibrate import CalibrationRangeWarning
from qsmliver.cli import main
from qsmliver.cli_quant import register
from qsmliver.data import MultiEchoGRE
from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.io.writers import write_gre_nifti

TE = 0.99e-3 + 1.41e-3 * np.arange(12)


def run(argv):
    """Parse with a parser holding only the quantitative commands and call the handler."""
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command")
    register(commands)
    args = parser.parse_args(argv)
    return args.handler(args)


@pytest.fixture
def gre_file(tmp_path):
    """A 4-D magnitude NIfTI: a block of tissue (R2* 100..900 along x) in noisy air."""
    rng = np.random.default_rng(4)
    shape = (24, 20, 3)
    r2s = np.zeros(shape)
    r2s[4:20, 4:16] = np.linspace(100, 900, 16)[:, None, None]
    s0 = np.where(r2s > 0, 1000.0, 0.0)
    clean = s0[..., None] * np.exp(-r2s[..., None] * TE)
    sigma = 8.0
    noisy = clean + sigma * (rng.standard_normal(clean.shape) + 1j * rng.standard_normal(
        clean.shape))
    gre = MultiEchoGRE(np.abs(noisy).astype(np.complex64), te_s=TE, b0_t=1.5,
                       affine=np.diag([2.0, 2.0, 5.0, 1.0]), has_phase=False)
    files = write_gre_nifti(gre, tmp_path / "in" / "liver", part=("mag",))
    return files[0], r2s


def test_r2star_command_writes_three_maps_with_sidecars(tmp_path, gre_file, capsys):
    path, truth = gre_file
    out = tmp_path / "out"
    assert run(["r2star", str(path), "-o", str(out), "--method", "noise_corrected"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["liver_mag_R2starmap.nii.gz", "liver_mag_R2starmap.json",
                            "liver_mag_desc-S0_map.nii.gz", "liver_mag_desc-S0_map.json",
                            "liver_mag_desc-R2starfit_map.nii.gz",
                            "liver_mag_desc-R2starfit_map.json"])
    r2s = np.asarray(nib.load(out / "liver_mag_R2starmap.nii.gz").dataobj)
    tissue = truth > 0
    assert abs(np.median(r2s[tissue] / truth[tissue]) - 1) < 0.03
    sidecar = json.loads((out / "liver_mag_R2starmap.json").read_text())
    assert sidecar["Units"] == "1/s" and sidecar["Parameters"]["method"] == "noise_corrected"
    assert sidecar["MagneticFieldStrength"] == 1.5
    assert "noise_sigma" in sidecar["Parameters"]
    with pytest.raises(Exception, match="exists"):
        run(["r2star", str(path), "-o", str(out)])
    assert run(["r2star", str(path), "-o", str(out), "--overwrite", "--method", "loglinear"]) == 0


def test_r2star_then_lic_map_and_values(tmp_path, gre_file, capsys):
    path, _ = gre_file
    out = tmp_path / "out"
    mask = np.zeros((24, 20, 3), dtype=np.uint8)
    mask[4:20, 4:16] = 1
    nib.save(nib.Nifti1Image(mask, np.diag([2.0, 2.0, 5.0, 1.0])), tmp_path / "mask.nii.gz")
    assert run(["r2star", str(path), "-o", str(out), "--mask", str(tmp_path / "mask.nii.gz"),
                "--noise-sigma", "8"]) == 0
    r2s_map = out / "liver_mag_R2starmap.nii.gz"
    capsys.readouterr()
    assert run(["lic", str(r2s_map), "--from", "r2star", "--calibration", "wood2005",
                "-o", str(out)]) == 0
    lic = np.asarray(nib.load(out / "liver_mag_desc-LIC_map.nii.gz").dataobj)
    r2s = np.asarray(nib.load(r2s_map).dataobj)
    np.testing.assert_allclose(lic[mask > 0], 0.0254 * r2s[mask > 0] + 0.202, rtol=1e-5)
    assert np.all(lic[mask == 0] == 0)
    sidecar = json.loads((out / "liver_mag_desc-LIC_map.json").read_text())
    assert sidecar["Units"] == "mg Fe/g dw"
    assert sidecar["Parameters"]["calibration"]["name"] == "wood2005"
    # the field strength comes from the R2* sidecar: a 3 T calibration is refused
    with pytest.raises(QSMConfigError, match="derived at 3 T"):
        run(["lic", str(r2s_map), "--from", "r2star", "--calibration", "hernando2023_3t",
             "-o", str(tmp_path / "o3")])
    capsys.readouterr()
    assert run(["lic", "--from", "r2star", "--calibration", "hankins2009", "--b0", "1.5",
                "--value", "100", "2000"]) == 0
    captured = capsys.readouterr()
    assert "2.347" in captured.out  # 0.02802·100 − 0.4549
    assert "outside the range" in captured.err
    with pytest.raises(QSMConfigError, match="give the field strength"):
        run(["lic", "--from", "r2star", "--calibration", "wood2005", "--value", "100"])
    assert run(["lic", "--from", "chi", "--calibration", "chi_linear", "--chi-slope", "0.2",
                "--value", "0.9"]) == 0
    assert "5.000 mg Fe/g dw" in capsys.readouterr().out


def _table(tmp_path, n=15):
    rng = np.random.default_rng(8)
    lic = rng.uniform(1, 25, n)
    lines = ["subject,r2star,chi,lic"]
    for i in range(n):
        lines.append(f"p{i},{(lic[i] - 0.2) / 0.0254 + rng.normal(0, 15):.2f},"
                     f"{-0.1 + 0.15 * lic[i] + rng.normal(0, 0.1):.3f},{lic[i]:.2f}")
    path = tmp_path / "cohort.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_calibrate_command_and_reuse_of_the_file(tmp_path, capsys):
    table = _table(tmp_path)
    out = tmp_path / "cal"
    assert run(["calibrate", str(table), "-o", str(out), "--method", "passing_bablok",
                "--plot-format", "png"]) == 0
    assert {"calibration.json", "summary.csv", "summary.json", "calibration_r2star.png",
            "calibration_chi.png"} <= {p.name for p in out.iterdir()}
    assert "fitted_r2star: LIC =" in capsys.readouterr().out
    assert run(["lic", "--from", "chi", "--calibration", str(out / "calibration.json"),
                "--calibration-name", "fitted_chi", "--value", "1.0"]) == 0
    lic = float(capsys.readouterr().out.split("->")[1].split()[0])
    assert lic == pytest.approx((1.0 + 0.1) / 0.15, rel=0.15)


def test_calibrate_command_bad_table(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("subject,r2star,lic\na,1,2\nb,x,3\nc,3,4\n")
    with pytest.raises(QSMInputError, match="bad.csv: r2star: row 3"):
        run(["calibrate", str(bad), "-o", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


# -- through the real entry point (needs `register(commands)` in qsmliver.cli.build_parser) ----
def test_main_r2star_and_lic(tmp_path, gre_file, capsys):
    path, _ = gre_file
    out = tmp_path / "main"
    assert main(["r2star", str(path), "-o", str(out), "--method", "truncation",
                 "--noise-sigma", "8"]) == 0
    assert (out / "liver_mag_R2starmap.nii.gz").is_file()
    assert main(["lic", str(out / "liver_mag_R2starmap.nii.gz"), "--from", "r2star",
                 "--calibration", "hernando2023_3t", "-o", str(out)]) == 2
    assert "derived at 3 T" in capsys.readouterr().err
    assert main(["lic", str(out / "liver_mag_R2starmap.nii.gz"), "--from", "r2star",
                 "--calibration", "hernando2023_3t", "--allow-field-mismatch",
                 "-o", str(out)]) == 0
    assert "derived at 3 T" in capsys.readouterr().err


def test_main_calibrate_exit_codes(tmp_path, capsys):
    table = _table(tmp_path)
    assert main(["calibrate", str(table), "-o", str(tmp_path / "c")]) == 0
    short = tmp_path / "short.csv"
    short.write_text("subject,r2star,lic\na,100,2\nb,200,5\n")
    assert main(["calibrate", str(short), "-o", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "short.csv" in err and "at least 3" in err


def test_range_warning_is_a_userwarning():
    assert issubclass(CalibrationRangeWarning, UserWarning)
