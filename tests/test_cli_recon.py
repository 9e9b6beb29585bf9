"""`qsmliver recon` from BIDS input: outputs, sidecars, montage, errors."""

import json

import nibabel as nib
import numpy as np
import pytest

from qsmliver.cli import main
from qsmliver.simulate import brain_phantom
from qsmliver.simulate.write import write_phantom


@pytest.fixture(scope="module")
def bids_subject(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom")
    phantom = brain_phantom(shape=(48, 48, 36), voxel_size_mm=(4.0, 4.0, 4.0), snr=80)
    write_phantom(phantom, root, formats=("bids",), subject="p1")
    return root / "rawdata" / "sub-p1", phantom


def test_recon_writes_maps_with_sidecars_and_montage(tmp_path, bids_subject, capsys):
    subject, phantom = bids_subject
    out = tmp_path / "qsm"
    assert main(["recon", str(subject), "-o", str(out), "--inversion", "tkd",
                 "--device", "cpu", "--set", "reference.method=none"]) == 0
    printed = capsys.readouterr().out
    assert "reconstructed sub-p1" in printed
    for suffix, unit in (("Chimap", "ppm"), ("fieldmap", "Hz"), ("desc-localfield_map", "ppm"),
                         ("mask", "1"), ("R2starmap", "1/s")):
        image = nib.load(out / f"sub-p1_{suffix}.nii.gz")
        assert image.shape == phantom.gre.shape
        np.testing.assert_allclose(image.affine, phantom.gre.affine, atol=1e-5)
        sidecar = json.loads((out / f"sub-p1_{suffix}.json").read_text())
        assert sidecar["Units"] == unit and sidecar["SourceFiles"]
    chi_sidecar = json.loads((out / "sub-p1_Chimap.json").read_text())
    assert chi_sidecar["Parameters"]["ChiReference"] == "none"
    record = json.loads((out / "sub-p1_recon.json").read_text())
    assert record["Configuration"]["inversion"]["method"] == "tkd"
    png = (out / "sub-p1_desc-qc_montage.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    # refuses to overwrite without --overwrite, and leaves the files as they were
    before = (out / "sub-p1_Chimap.nii.gz").stat().st_mtime_ns
    assert main(["recon", str(subject), "-o", str(out), "--inversion", "tkd"]) == 2
    assert (out / "sub-p1_Chimap.nii.gz").stat().st_mtime_ns == before
    assert not list(out.glob(".qsmliver-staging-*"))


def test_recon_bad_inputs(tmp_path, bids_subject, capsys):
    subject, _phantom = bids_subject
    wrong = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((5, 5, 5), np.uint8), np.eye(4)), wrong)
    assert main(["recon", str(subject), "-o", str(tmp_path / "o"), "--mask", str(wrong)]) == 2
    assert "mask shape" in capsys.readouterr().err
    assert main(["recon", str(subject), "-o", str(tmp_path / "o"),
                 "--set", "inversion"]) == 2
    assert "SECTION.KEY=VALUE" in capsys.readouterr().err
    assert main(["recon", str(subject), "-o", str(tmp_path / "o"),
                 "--bgremove", "nonsense"]) == 2
    assert "nonsense" in capsys.readouterr().err
    assert not (tmp_path / "o" / "sub-p1_Chimap.nii.gz").exists()


def test_recon_bipolar_option(tmp_path, bids_subject, capsys):
    """--bipolar needs a readout axis: the simulated BIDS sidecars name no phase-encoding
    direction, so it is refused until --readout-axis gives one; the correction is then
    recorded (this acquisition has no odd/even error: the estimated slope is ~0)."""
    subject, _phantom = bids_subject
    out = tmp_path / "qsm"
    assert main(["recon", str(subject), "-o", str(out), "--bipolar", "--inversion", "tkd",
                 "--device", "cpu"]) == 2
    assert "readout axis is unknown" in capsys.readouterr().err
    assert not out.exists() or not list(out.iterdir())
    assert main(["recon", str(subject), "-o", str(out), "--bipolar", "--readout-axis", "0",
                 "--inversion", "tkd", "--device", "cpu", "--no-montage"]) == 0
    record = json.loads((out / "sub-p1_recon.json").read_text())
    assert record["Configuration"]["bipolar"] == {"correct": True, "readout_axis": 0}
    stage = record["Pipeline"]["Stages"]["bipolar"]
    assert stage["readout_axis"] == 0 and abs(stage["slope_rad_per_voxel"]) < 0.005
