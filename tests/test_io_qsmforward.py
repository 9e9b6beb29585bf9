"""Reading BIDS data laid out the way qsm-forward (QSMxT's simulator) writes it.

qsm-forward (astewartau/qsm-forward, Marques et al. MRM 2021;86:526 forward model) writes
``sub-<s>/ses-<t>/anat/sub-<s>_ses-<t>_run-1_echo-<n>_part-{mag,phase}_MEGRE.nii``
(uncompressed, float64, phase in radians), sidecars with ``EchoTime`` (s),
``MagneticFieldStrength`` (T), ``B0_dir`` and ``null`` entries, a ``.bidsignore`` and a
``derivatives/qsm-forward`` tree. The files here are written by the test with that layout.
"""

import json

import nibabel as nib
import numpy as np
import pytest

from qsmliver import io
from qsmliver.simulate import brain_phantom


def write_qsm_forward_layout(root, phantom, subject="1", session="1"):
    anat = root / f"sub-{subject}" / f"ses-{session}" / "anat"
    deriv = root / "derivatives" / "qsm-forward" / f"sub-{subject}" / f"ses-{session}" / "anat"
    anat.mkdir(parents=True)
    deriv.mkdir(parents=True)
    gre = phantom.gre
    name = f"sub-{subject}_ses-{session}_run-1"
    for echo, te in enumerate(gre.te_s, start=1):
        base = {"Subject": subject, "Session": session, "Acquisition": None, "Run": None,
                "EchoTime": float(te), "MagneticFieldStrength": gre.b0_t, "EchoNumber": echo,
                "ProtocolName": "MEGRE", "ConversionSoftware": "qsm-forward",
                "RepetitionTime": 0.05, "FlipAngle": 15, "B0_dir": [0, 0, 1],
                "PhaseOffset": True, "ShimmField": True, "VoxelSize": [3.0, 3.0, 3.0],
                "PeakSNR": 100}
        for part, values, image_type in (
                ("mag", np.abs(gre.signal[..., echo - 1]), ["M", "MAGNITUDE"]),
                ("phase", np.angle(gre.signal[..., echo - 1]), ["P", "PHASE"])):
            stem = anat / f"{name}_echo-{echo}_part-{part}_MEGRE"
            nib.save(nib.Nifti1Image(values.astype(np.float64), gre.affine), f"{stem}.nii")
            (stem.parent / f"{stem.name}.json").write_text(
                json.dumps({**base, "ImageType": image_type}))
    nib.save(nib.Nifti1Image(phantom.masks["brain"].astype(np.float64), gre.affine),
             deriv / f"{name}_mask.nii")
    description = {"Name": "qsm-forward BIDS", "BIDSVersion": "1.9.0",
                   "GeneratedBy": [{"Name": "qsm-forward"}], "Authors": ["ADD AUTHORS HERE"]}
    (root / "dataset_description.json").write_text(json.dumps(description))
    (root / "derivatives" / "qsm-forward" / "dataset_description.json").write_text(
        json.dumps(description))
    (root / ".bidsignore").write_text("")
    (root / "README").write_text("Generated using qsm-forward\n")
    return anat.parent, deriv / f"{name}_mask.nii"


@pytest.fixture(scope="module")
def qsm_forward_dataset(tmp_path_factory):
    phantom = brain_phantom(shape=(48, 48, 36), voxel_size_mm=(4.0, 4.0, 4.0), snr=100)
    root = tmp_path_factory.mktemp("bids")
    session, mask = write_qsm_forward_layout(root, phantom)
    return root, session, mask, phantom


def test_reads_qsm_forward_session(qsm_forward_dataset):
    root, session, _, phantom = qsm_forward_dataset
    for path in (session, session.parent, root):
        gre = io.read(path)
        np.testing.assert_allclose(gre.te_s, phantom.gre.te_s)
        assert gre.b0_t == phantom.gre.b0_t and gre.n_echoes == phantom.gre.n_echoes
        phase_error = np.angle(gre.signal * np.conj(phantom.gre.signal))
        assert np.max(np.abs(phase_error)) < 1e-5


def test_recon_cli_on_qsm_forward_subject(qsm_forward_dataset, tmp_path):
    from qsmliver.cli import main

    _, session, mask, _ = qsm_forward_dataset
    out = tmp_path / "out"
    assert main(["recon", str(session.parent), "-o", str(out), "--mask", str(mask),
                 "--inversion", "tkd", "--no-montage"]) == 0
    assert (out / "sub-1_ses-1_run-1_Chimap.nii.gz").exists()
