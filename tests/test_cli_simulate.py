"""`qsmliver simulate` writes phantoms that `qsmliver info` and the readers read back."""

from __future__ import annotations

import json

import pytest

from qsmliver.cli import main


@pytest.mark.parametrize(
    ("anatomy", "extra"),
    [("brain", ["--shape", "40", "40", "32", "--b0", "3"]),
     ("abdomen", ["--shape", "48", "40", "16", "--lic", "6", "--pdff", "12"])],
)
def test_simulate_then_info(tmp_path, capsys, anatomy, extra):
    out = tmp_path / anatomy
    assert main(["simulate", anatomy, "-o", str(out), "--format", "bids", "dicom", *extra]) == 0
    report = capsys.readouterr().out
    assert json.loads(report.splitlines()[0])["Shape"] == [int(v) for v in extra[1:4]]
    assert main(["info", str(out / "rawdata" / "sub-sim"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["Shape"] == [int(v) for v in extra[1:4]]
    assert main(["info", str(out / "dicom"), "--json"]) == 0
    from_dicom = json.loads(capsys.readouterr().out)
    assert from_dicom["EchoTime_s"] == pytest.approx(summary["EchoTime_s"], rel=1e-6)
    assert (out / "derivatives" / "truth" / "sub-sim" / "anat" / "sub-sim_Chimap.nii.gz").exists()
    assert main(["simulate", anatomy, "-o", str(out), *extra]) == 2  # exists


def test_simulate_rejects_liver_options_for_brain(tmp_path, capsys):
    assert main(["simulate", "brain", "-o", str(tmp_path), "--lic", "3"]) == 2
    assert "apply to the abdomen phantom" in capsys.readouterr().err


def test_simulate_config_file_changes_tissue_values(tmp_path, capsys):
    import nibabel as nib
    import numpy as np

    config = tmp_path / "phantom.json"
    config.write_text(json.dumps({"chi_ppm": {"globus_pallidus": 0.3}, "snr": 0}))
    out = tmp_path / "out"
    args = ["simulate", "brain", "-o", str(out), "--shape", "40", "40", "32", "--format",
            "nifti", "--config", str(config)]
    assert main(args) == 0
    anat = out / "derivatives" / "truth" / "sub-sim" / "anat"
    chi = nib.load(anat / "sub-sim_Chimap.nii.gz").get_fdata()
    labels = nib.load(anat / "sub-sim_desc-tissue_dseg.nii.gz").get_fdata().astype(int)
    table = dict(line.split("\t")[::-1] for line in
                 (anat / "sub-sim_desc-tissue_dseg.tsv").read_text().splitlines()[1:])
    pallidum = np.isin(labels, [int(v) for k, v in table.items() if "pallidus" in k])
    assert np.median(chi[pallidum]) == pytest.approx(0.3, abs=0.01)
    config.write_text("{not json")
    assert main([*args, "--overwrite"]) == 2
    assert "cannot parse the phantom config" in capsys.readouterr().err
