"""The ``qsmliver roi``, ``liver-rois``, ``groups`` and ``monitor`` commands: exit code 0 and
the files written on good input; exit code 2 with one clear line on stderr on bad input."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from test_analysis_monitor import seed_like_exams

from qsmliver.cli import main
from qsmliver.cli_analysis import map_name_from_path

AFFINE = np.diag([2.0, 2.0, 3.0, 1.0])


def _save(data, path, affine=AFFINE):
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return path


@pytest.fixture
def roi_case(tmp_path):
    labels = np.zeros((12, 10, 8), dtype=np.int16)
    labels[1:5, 1:5, 1:5] = 11   # Left-Caudate: 64 voxels
    labels[6:10, 1:5, 1:5] = 50  # Right-Caudate
    labels[1:9, 6:9, 2:6] = 13   # Left-Pallidum: 96 voxels
    chi = np.where(labels == 13, 0.18, 0.06) + 0.0
    r2s = np.full(labels.shape, 25.0)
    dseg = _save(labels, tmp_path / "sub-01_dseg.nii.gz")
    (tmp_path / "sub-01_dseg.tsv").write_text(
        "index\tname\n11\tLeft-Caudate\n13\tLeft-Pallidum\n50\tRight-Caudate\n")
    return {"dseg": dseg,
            "chi": _save(chi.astype(np.float32), tmp_path / "sub-01_Chimap.nii.gz"),
            "r2s": _save(r2s.astype(np.float32), tmp_path / "sub-01_R2starmap.nii.gz"),
            "dir": tmp_path}


def _one_error_line(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("qsmliver: error:"), err
    for needle in needles:
        assert needle in err, err
    return err


def test_map_names_from_bids_suffixes():
    assert map_name_from_path("sub-1_Chimap.nii.gz") == "chi"
    assert map_name_from_path("x/sub-1_desc-PDFF_map.nii") == "pdff"
    assert map_name_from_path("other.nii.gz") == "other"


def test_roi_writes_table(roi_case, capsys):
    out = roi_case["dir"] / "table.tsv"
    code = main(["roi", str(roi_case["chi"]), str(roi_case["r2s"]), "--labels",
                 str(roi_case["dseg"]), "--subject", "sub-01", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    table = pd.read_csv(out, sep="\t")
    assert len(table) == 6 and set(table["map"]) == {"chi", "r2star"}
    row = table[(table["label_name"] == "Left-Pallidum") & (table["map"] == "chi")].iloc[0]
    assert row["count"] == 96 and row["volume_mm3"] == pytest.approx(96 * 12.0)
    assert row["mean"] == pytest.approx(0.18, abs=1e-6)
    assert (table["subject"] == "sub-01").all()
    # a CSV, with a built-in convention and selection
    out_csv = roi_case["dir"] / "table.csv"
    assert main(["roi", str(roi_case["chi"]), "--labels", str(roi_case["dseg"]),
                 "--convention", "synthseg", "--select", "Left-Pallidum", "-o",
                 str(out_csv)]) == 0
    csv = pd.read_csv(out_csv)
    assert csv["label_name"].tolist() == ["Left-Pallidum"]


def test_roi_bad_input_exits_2(roi_case, capsys):
    small = _save(np.zeros((5, 5, 5), np.float32), roi_case["dir"] / "small.nii.gz")
    out = roi_case["dir"] / "t.tsv"
    assert main(["roi", str(small), "--labels", str(roi_case["dseg"]), "-o", str(out)]) == 2
    _one_error_line(capsys, "small.nii.gz", "shape")
    assert not out.exists()
    bad_table = roi_case["dir"] / "names.tsv"
    bad_table.write_text("index\tname\n11\tLeft-Caudate\n13\tBanana\n50\tRight-Caudate\n")
    assert main(["roi", str(roi_case["chi"]), "--labels", str(roi_case["dseg"]),
                 "--label-table", str(bad_table), "--convention", "recognised",
                 "-o", str(out)]) == 2
    _one_error_line(capsys, "names.tsv", "Banana")
    short_table = roi_case["dir"] / "short.tsv"
    short_table.write_text("index\tname\n11\tLeft-Caudate\n")
    assert main(["roi", str(roi_case["chi"]), "--labels", str(roi_case["dseg"]),
                 "--label-table", str(short_table), "-o", str(out)]) == 2
    _one_error_line(capsys, "short.tsv", "13, 50")
    assert main(["roi", str(roi_case["dir"] / "missing.nii.gz"), "--labels",
                 str(roi_case["dseg"]), "-o", str(out)]) == 2
    _one_error_line(capsys, "missing.nii.gz")
    assert not out.exists()


def test_liver_rois_command(tmp_path, capsys):
    from qsmliver.simulate.abdomen import abdomen_phantom

    ph = abdomen_phantom(shape=(96, 78, 8), snr=None, hepatic_vessel=True, lic_mg_per_g=3.0)
    rng = np.random.default_rng(0)
    r2s = ph.truth["r2star_per_s"] + rng.normal(0, 4.0, ph.labels.shape)
    affine = ph.gre.affine
    r2s_path = _save(r2s.astype(np.float32), tmp_path / "sub-1_R2starmap.nii.gz", affine)
    liver = _save((ph.masks["liver"] | ph.masks["vessel"]).astype(np.uint8),
                  tmp_path / "liver_mask.nii.gz", affine)
    out = tmp_path / "rois"
    code = main(["liver-rois", str(r2s_path), "--liver-mask", str(liver), "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    stats = pd.read_csv(out / "liver_roistats.tsv", sep="\t")
    truth = float(np.unique(ph.truth["r2star_per_s"][ph.masks["liver"]])[0])
    pooled = stats[stats["region"] == "rois_pooled"]["mean"].item()
    assert abs(pooled - truth) < 4 * 4.0 / np.sqrt(stats[stats["region"] == "rois_pooled"][
        "count"].item())
    info = json.loads((out / "liver_rois.json").read_text())
    assert info["n_rois"] == 3 and info["slice_reason"] == "vessel"
    dseg = np.asarray(nib.load(str(out / "liver_desc-rois_dseg.nii.gz")).dataobj)
    assert set(np.unique(dseg)) == {0, 1, 2, 3}
    assert not (dseg[ph.masks["vessel"]] > 0).any()
    # a mask that does not fit: exit 2
    wrong = _save(np.ones((4, 4, 4), np.uint8), tmp_path / "wrong.nii.gz", affine)
    assert main(["liver-rois", str(r2s_path), "--liver-mask", str(wrong), "-o",
                 str(tmp_path / "x")]) == 2
    _one_error_line(capsys, "sub-1_R2starmap.nii.gz")


def _cohort(tmp_path):
    rng = np.random.default_rng(1)
    rows, people = [], []
    for i in range(24):
        group = "HC" if i % 2 else "MS"
        age = rng.uniform(25, 60)
        for side, name in (("Left", "Putamen"), ("Right", "Putamen"), ("Left", "Thalamus"),
                           ("Right", "Thalamus")):
            effect = (0.02 if name == "Putamen" else -0.015) if group == "MS" else 0.0
            rows.append({"subject": f"sub-{i:02d}", "label_name": f"{side}-{name}",
                         "map": "chi", "count": 100 + int(rng.integers(0, 20)),
                         "volume_mm3": 4000.0 + rng.normal(0, 200),
                         "mean": 0.05 + effect + rng.normal(0, 0.006)})
        people.append({"participant_id": f"sub-{i:02d}", "group": group, "age": age,
                       "sex": "F" if rng.random() < 0.5 else "M"})
    table = tmp_path / "cohort.tsv"
    pd.DataFrame(rows).to_csv(table, sep="\t", index=False)
    participants = tmp_path / "participants.tsv"
    pd.DataFrame(people).to_csv(participants, sep="\t", index=False)
    return table, participants


def test_groups_command(tmp_path, capsys):
    table, participants = _cohort(tmp_path)
    out = tmp_path / "groups.tsv"
    code = main(["groups", str(table), "--participants", str(participants), "--groups", "HC",
                 "MS", "--pool-hemispheres", "--dgm", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    result = pd.read_csv(out, sep="\t").set_index("roi")
    assert set(result.index) == {"putamen", "thalamus"}
    assert result.loc["putamen", "adjusted_difference"] > 0
    assert result.loc["thalamus", "adjusted_difference"] < 0
    assert result["significant_fdr"].all()
    assert result.loc["putamen", "covariates_used"] == "age,sex,volume_mm3"
    # bad: a group that does not exist
    assert main(["groups", str(table), "--participants", str(participants), "--groups", "HC",
                 "PD", "-o", str(tmp_path / "g2.tsv")]) == 2
    _one_error_line(capsys, "PD")
    assert main(["groups", str(tmp_path / "nope.tsv"), "-o", str(tmp_path / "g3.tsv")]) == 2
    _one_error_line(capsys, "nope.tsv")


def test_monitor_command(tmp_path, capsys):
    exams = seed_like_exams()
    table = tmp_path / "exams.csv"
    exams.to_csv(table, index=False)
    out = tmp_path / "monitor"
    code = main(["monitor", str(table), "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "TP 41, TN 29, FP 12, FN 10" in captured.out
    assert "sensitivity 0.804, specificity 0.707, PPV 0.774, accuracy 0.761" in captured.out
    for name in ("pairs.tsv", "summary.tsv", "summary.json", "scatter_change_percent.png",
                 "scatter_change_absolute.png", "time_courses.png",
                 "bland_altman_change_percent.png"):
        assert (out / name).stat().st_size > 100, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["chelation"]["n"] == 44
    # options: thresholds and no plots
    out2 = tmp_path / "monitor2"
    assert main(["monitor", str(table), "-o", str(out2), "--threshold", "ferritin=20%",
                 "--threshold", "r2star=30", "--no-plots"]) == 0
    assert not (out2 / "time_courses.png").exists()
    assert json.loads((out2 / "summary.json").read_text())["thresholds"]["r2star_per_s"][
        "value"] == 30
    capsys.readouterr()
    # bad input: a broken row, a bad option, an existing output
    bad = tmp_path / "bad.csv"
    bad.write_text("patient_id,date,r2star,ferritin\np1,2020-01-01,100,500\np1,2020-13-01,90,"
                   "400\n")
    assert main(["monitor", str(bad), "-o", str(tmp_path / "m3")]) == 2
    _one_error_line(capsys, "bad.csv", "row 3")
    assert main(["monitor", str(table), "-o", str(tmp_path / "m4"), "--threshold",
                 "ferritin"]) == 2
    _one_error_line(capsys, "--threshold")
    assert main(["monitor", str(table), "-o", str(out)]) == 2
    _one_error_line(capsys, "exists")
    assert not (tmp_path / "m3").exists() or not any((tmp_path / "m3").iterdir())
