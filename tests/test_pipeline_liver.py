"""The liver chain from raw simulated multi-echo data: fat-water, PDFF, R2*, hepatic QSM."""

import json
import warnings

import numpy as np
import pytest

from qsmliver.data import MultiEchoGRE
from qsmliver.pipeline import recon
from qsmliver.pipeline_liver import QSMCoverageWarning
from qsmliver.simulate import abdomen_phantom

LIC = {"right_lobe": 2.0, "left_lobe": 10.0}


@pytest.fixture(scope="module")
def phantom():
    return abdomen_phantom(shape=(48, 40, 24), voxel_size_mm=(8.0, 7.8, 8.0), b0_t=1.5,
                           snr=60, lic_mg_per_g=LIC, liver_pdff_percent=8.0, seed=3)


@pytest.fixture(scope="module")
def result(phantom):
    return recon(phantom.gre, "liver", device="cpu")


def test_liver_outputs_and_provenance(result):
    assert set(result.maps) >= {"Chimap", "R2starmap", "desc-PDFF_map", "desc-water_map",
                                "desc-fat_map", "fieldmap", "mask"}
    assert result.config["inversion"]["method"] == "tfi"
    assert result.config["bgremove"]["method"] == "none"
    assert result.provenance["ChiReference"] == "sat"
    assert result.maps["Chimap"].unit == "ppm" and result.maps["fieldmap"].unit == "Hz"
    assert {"fatwater", "mask", "inversion"} <= set(result.provenance["Timings_s"])


def test_liver_pdff_r2star_and_field(phantom, result):
    liver = phantom.masks["liver"]
    pdff = result.maps["desc-PDFF_map"].data
    assert abs(np.median(pdff[liver]) - 8.0) < 2.0
    r2s = result.maps["R2starmap"].data
    truth_r2s = phantom.truth["r2star_per_s"]
    for lobe in ("liver_right_lobe", "liver_left_lobe"):
        region = phantom.masks[lobe]
        assert abs(np.median(r2s[region]) / np.median(truth_r2s[region]) - 1) < 0.10
    # the field map is the chemical-shift-free B0 offset: close to the truth total field
    tissue = result.maps["mask"].data.astype(bool) & phantom.masks["tissue"]
    error = result.maps["fieldmap"].data[tissue] - phantom.truth["total_field_hz"][tissue]
    assert np.median(np.abs(error - np.median(error))) < 5.0


def test_liver_chi_follows_iron(phantom, result):
    """χ difference between the lobes (LIC 10 vs 2 mg/g) against the truth difference."""
    chi = result.maps["Chimap"].data
    truth = phantom.truth["chi_ppm"]
    right, left = phantom.masks["liver_right_lobe"], phantom.masks["liver_left_lobe"]
    measured = np.median(chi[left]) - np.median(chi[right])
    expected = np.median(truth[left]) - np.median(truth[right])
    assert expected > 0.5
    assert 0.7 * expected < measured < 1.3 * expected, (measured, expected)


def test_few_slice_breath_hold_gets_fat_water_but_no_qsm():
    """Five 10-mm slices through the liver (the seed study's breath-hold protocol)."""
    volume = abdomen_phantom(shape=(48, 40, 19), voxel_size_mm=(8.0, 7.8, 10.0), b0_t=1.5,
                             snr=60, lic_mg_per_g=3.0, liver_pdff_percent=15.0, seed=4)
    centre = int(np.argmax(volume.masks["liver"].sum(axis=(0, 1))))
    slices = slice(centre - 2, centre + 3)
    gre = volume.gre
    slab = MultiEchoGRE(gre.signal[:, :, slices], te_s=gre.te_s, b0_t=gre.b0_t,
                        voxel_size_mm=gre.voxel_size_mm, b0_dir=gre.b0_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = recon(slab, "liver", device="cpu")
    assert any(issubclass(w.category, QSMCoverageWarning) and "3D coverage" in str(w.message)
               for w in caught)
    assert "Chimap" not in result.maps and "QSMRefused" in result.provenance
    assert {"desc-PDFF_map", "R2starmap", "desc-water_map", "desc-fat_map"} <= set(result.maps)
    liver = volume.masks["liver"][:, :, slices]
    assert abs(np.median(result.maps["desc-PDFF_map"].data[liver]) - 15.0) < 2.0


def test_liver_cli_writes_the_liver_outputs(tmp_path, phantom, capsys):
    from qsmliver.cli import main
    from qsmliver.simulate.write import write_phantom

    write_phantom(phantom, tmp_path / "phantom", formats=("bids",), subject="liv",
                  overwrite=True)
    out = tmp_path / "out"
    assert main(["recon", str(tmp_path / "phantom" / "rawdata" / "sub-liv"), "-o", str(out),
                 "--anatomy", "liver", "--set", "inversion.max_iter=3"]) == 0
    names = {p.name for p in out.iterdir()}
    for suffix in ("Chimap", "R2starmap", "desc-PDFF_map", "desc-water_map", "desc-fat_map",
                   "fieldmap", "mask"):
        assert f"sub-liv_{suffix}.nii.gz" in names and f"sub-liv_{suffix}.json" in names
    assert "sub-liv_desc-qc_montage.png" in names
    sidecar = json.loads((out / "sub-liv_Chimap.json").read_text())
    assert sidecar["Parameters"]["ChiReference"] == "sat"
    assert sidecar["Parameters"]["ChiReferenceValue_ppm"] == 0.0
    # the muscle reference needs a user region
    assert main(["recon", str(tmp_path / "phantom" / "rawdata" / "sub-liv"), "-o",
                 str(tmp_path / "o2"), "--anatomy", "liver", "--reference", "muscle"]) == 2
    assert "needs a region" in capsys.readouterr().err


def test_liver_user_reference_roi_is_used(phantom):
    muscle = phantom.labels == next(v for v, n in phantom.label_names.items() if n == "muscle")
    result = recon(phantom.gre, "liver", device="cpu", reference={"method": "muscle"},
                   reference_roi=muscle, inversion={"max_iter": 3})
    chi = result.maps["Chimap"].data
    inside = muscle & result.maps["mask"].data.astype(bool)
    assert abs(chi[inside].mean()) < 1e-5
    assert result.provenance["ChiReference"] == "muscle"
