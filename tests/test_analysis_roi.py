"""ROI statistics and label tables (qsmliver.analysis.roi, qsmliver.analysis.labels).

The oracle is a brute-force NumPy computation, one label at a time (boolean indexing,
np.percentile, np.std, scipy binary erosion per label); the vectorised implementation must agree
to float rounding on random label maps with NaNs, erosion and trimming.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.ndimage as ndi

from qsmliver import backend
from qsmliver.analysis import ROI_COLUMNS, erode_labels, roi_statistics
from qsmliver.analysis.labels import (
    FIRST_LABELS,
    SYNTHSEG_LABELS,
    builtin_label_table,
    check_label_table,
    read_label_table,
    recognise_name,
    structure_name,
    write_label_table,
)
from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.geometry import voxel_size_from_affine
from qsmliver.mask.morphology import ball

QS = (5, 25, 50, 75, 95)


def _random_case(seed=0, shape=(18, 15, 12), n_labels=6):
    rng = np.random.default_rng(seed)
    # blocky labels (so that erosion leaves something) plus a scattering of random voxels
    coarse = rng.integers(0, n_labels + 1, size=tuple(s // 3 for s in shape))
    labels = np.kron(coarse, np.ones((3, 3, 3), dtype=int))
    flip = rng.random(shape) < 0.05
    labels[flip] = rng.integers(0, n_labels + 1, size=int(flip.sum()))
    chi = rng.normal(0.05, 0.03, shape)
    r2s = rng.gamma(4.0, 10.0, shape)
    chi[rng.random(shape) < 0.1] = np.nan
    r2s[rng.random(shape) < 0.02] = np.inf
    return labels, {"chi": chi, "r2star": r2s}


def _brute(maps, labels, voxel, erode_mm=0.0, trim=0.0, qs=QS):
    rows = []
    voxel_volume = float(np.prod(voxel))
    structure = ball(erode_mm, voxel) if erode_mm > 0 else None
    for value in sorted(set(np.unique(labels)) - {0}):
        region = labels == value
        if structure is not None:
            region = ndi.binary_erosion(region, structure=structure, border_value=0)
        for name, data in maps.items():
            x = np.sort(data[region & np.isfinite(data)])
            cut = int(np.floor(x.size * trim / 100.0))
            x = x[cut: x.size - cut]
            row = {"label": value, "map": name, "count": x.size,
                   "volume_mm3": (labels == value).sum() * voxel_volume}
            if x.size:
                row.update(mean=x.mean(), median=np.median(x),
                           sd=x.std(ddof=1) if x.size > 1 else np.nan,
                           iqr=np.percentile(x, 75) - np.percentile(x, 25),
                           **{f"p{q:g}": np.percentile(x, q) for q in qs})
            else:
                row.update(mean=np.nan, median=np.nan, sd=np.nan, iqr=np.nan,
                           **{f"p{q:g}": np.nan for q in qs})
            rows.append(row)
    return rows


@pytest.mark.parametrize(("erode_mm", "trim"), [(0.0, 0.0), (0.0, 10.0), (1.2, 0.0),
                                                (1.2, 20.0)])
def test_matches_brute_force(erode_mm, trim):
    labels, maps = _random_case(seed=int(erode_mm * 10 + trim))
    voxel = (1.2, 1.0, 2.0)
    table = roi_statistics(maps, labels, {1: "one", 3: "three"}, voxel_size_mm=voxel,
                           erode_mm=erode_mm, trim_percent=trim)
    assert list(table.columns) == [*ROI_COLUMNS, "p5", "p25", "p50", "p75", "p95"]
    expected = _brute(maps, labels, voxel, erode_mm, trim)
    assert len(table) == len(expected)
    if erode_mm > 0:  # erosion really removed voxels, and left some
        assert 0 < table["count"].sum() < 0.5 * len(maps) * (labels > 0).sum()
    for got, want in zip(table.to_dict("records"), expected, strict=True):
        assert (got["label"], got["map"], got["count"]) == (want["label"], want["map"],
                                                            want["count"])
        assert got["volume_mm3"] == pytest.approx(want["volume_mm3"])
        for key in ("mean", "median", "sd", "iqr", "p5", "p25", "p50", "p75", "p95"):
            np.testing.assert_allclose(got[key], want[key], rtol=1e-10, atol=1e-12,
                                       err_msg=f"{key} label {want['label']} {want['map']}")
    names = dict(zip(table["label"], table["label_name"], strict=False))
    assert names[1] == "one" and names[3] == "three" and names[2] == "label_2"


def test_volumes_use_the_affine_voxel_size():
    labels = np.zeros((10, 10, 10), dtype=np.int16)
    labels[2:6, 2:5, 2:4] = 7  # 24 voxels
    affine = np.array([[0.0, 0.0, 2.5, -10.0],  # axes permuted and scaled: sizes 1.5, 0.8, 2.5
                       [0.0, 0.8, 0.0, 5.0],
                       [1.5, 0.0, 0.0, 3.0],
                       [0.0, 0.0, 0.0, 1.0]])
    voxel = voxel_size_from_affine(affine)
    np.testing.assert_allclose(voxel, [1.5, 0.8, 2.5])
    table = roi_statistics({"pdff": np.full(labels.shape, 5.0)}, labels, {7: "liver"},
                           voxel_size_mm=voxel)
    assert table.loc[0, "volume_mm3"] == pytest.approx(24 * 1.5 * 0.8 * 2.5)
    assert table.loc[0, "count"] == 24 and table.loc[0, "mean"] == 5.0


def test_nan_voxels_reduce_count_but_not_volume_and_named_absent_labels_appear():
    labels = np.zeros((6, 6, 6), dtype=int)
    labels[:3] = 1
    chi = np.ones(labels.shape)
    chi[0] = np.nan  # 36 voxels of label 1
    table = roi_statistics({"chi": chi}, labels, {1: "a", 9: "absent"})
    row = table.set_index("label_name").loc["a"]
    assert row["count"] == 108 - 36 and row["volume_mm3"] == 108
    absent = table.set_index("label_name").loc["absent"]
    assert absent["count"] == 0 and np.isnan(absent["mean"])
    assert 0 not in set(table["label"])


def test_erode_labels_equals_per_label_binary_erosion():
    labels, _ = _random_case(seed=3)
    voxel = (1.0, 1.0, 1.5)
    eroded = erode_labels(labels, 1.6, voxel)
    structure = ball(1.6, voxel)
    for value in range(1, 7):
        expected = ndi.binary_erosion(labels == value, structure=structure, border_value=0)
        np.testing.assert_array_equal(eroded == value, expected)


def test_shape_mismatch_and_bad_options():
    labels = np.ones((4, 4, 4), dtype=int)
    with pytest.raises(QSMInputError, match="r2star"):
        roi_statistics({"r2star": np.ones((4, 4, 5))}, labels)
    with pytest.raises(QSMInputError, match="whole numbers"):
        roi_statistics({"a": np.ones((4, 4, 4))}, labels + 0.5)
    with pytest.raises(QSMInputError):
        roi_statistics({}, labels)
    with pytest.raises(QSMConfigError):
        roi_statistics({"a": np.ones((4, 4, 4))}, labels, trim_percent=50)
    with pytest.raises(QSMConfigError):
        roi_statistics({"a": np.ones((4, 4, 4))}, labels, percentiles=(120,))
    with pytest.raises(QSMConfigError):
        roi_statistics({"a": np.ones((4, 4, 4))}, labels, voxel_size_mm=(1, 1))


def test_custom_percentile_names():
    labels = np.ones((3, 3, 3), dtype=int)
    values = np.arange(27, dtype=float).reshape(3, 3, 3)
    table = roi_statistics({"x": values}, labels, percentiles=(2.5, 97.5))
    assert {"p2.5", "p97.5"} <= set(table.columns)
    assert table.loc[0, "p2.5"] == pytest.approx(np.percentile(values, 2.5))
    assert table.loc[0, "median"] == 13.0


# --- label tables --------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "expected"), [
    ("Left-Thalamus-Proper", ("thalamus", "left")),
    ("Left-Thalamus", ("thalamus", "left")),
    ("Right-Pallidum", ("globus_pallidus", "right")),
    ("L_Caud", ("caudate", "left")),
    ("R_Puta", ("putamen", "right")),
    ("BrStem", ("brainstem", None)),
    ("substantia_nigra_right", ("substantia_nigra", "right")),
    ("lh putamen", ("putamen", "left")),
    ("liver", None),
])
def test_recognise_name(name, expected):
    assert recognise_name(name) == expected


def test_builtin_tables_are_recognised_and_consistent():
    for convention in ("freesurfer", "synthseg", "first", "qsmliver-brain"):
        table = builtin_label_table(convention)
        check_label_table(table, convention="recognised")
    assert structure_name(SYNTHSEG_LABELS[13]) == "globus_pallidus_left"
    assert structure_name(FIRST_LABELS[52], pool_hemispheres=True) == "globus_pallidus"
    assert {structure_name(n) for n in SYNTHSEG_LABELS.values()} >= {
        "caudate_left", "putamen_right", "thalamus_right"}
    with pytest.raises(QSMConfigError):
        builtin_label_table("unknown")


def test_read_label_tables_in_three_formats(tmp_path):
    table = {11: "Left-Caudate", 50: "Right-Caudate"}
    tsv = write_label_table(table, tmp_path / "seg_dseg.tsv")
    assert read_label_table(tsv, convention="recognised") == table
    (tmp_path / "t.json").write_text(json.dumps({"0": "Unknown", "11": "Left-Caudate",
                                                 "50": "Right-Caudate"}))
    assert read_label_table(tmp_path / "t.json") == table
    (tmp_path / "lut.txt").write_text("# FreeSurfer LUT\n0 Unknown 0 0 0 0\n"
                                      "11 Left-Caudate 122 186 220 0\n"
                                      "50 Right-Caudate 122 186 220 0\n")
    assert read_label_table(tmp_path / "lut.txt") == table


def test_label_table_errors_name_the_file(tmp_path):
    bad = tmp_path / "names_dseg.tsv"
    bad.write_text("index\tname\n1\tLeft-Caudate\n2\tBanana\n")
    with pytest.raises(QSMInputError, match=r"names_dseg\.tsv.*unknown label names 'Banana'"):
        read_label_table(bad, convention="recognised")
    assert read_label_table(bad) == {1: "Left-Caudate", 2: "Banana"}  # no convention: allowed
    with pytest.raises(QSMInputError, match=r"names_dseg\.tsv.*label values 7"):
        check_label_table({1: "a", 2: "b"}, convention="any", path=bad, present=[0, 1, 7])
    dup = tmp_path / "dup.tsv"
    dup.write_text("index\tname\n1\ta\n1\tb\n")
    with pytest.raises(QSMInputError, match=r"dup\.tsv.*twice"):
        read_label_table(dup)
    nonint = tmp_path / "nonint.tsv"
    nonint.write_text("index\tname\n1.5\ta\n")
    with pytest.raises(QSMInputError, match=r"nonint\.tsv"):
        read_label_table(nonint)
    nocol = tmp_path / "nocol.tsv"
    nocol.write_text("value\tcolour\n1\tred\n")
    with pytest.raises(QSMInputError, match=r"nocol\.tsv.*'index' and a 'name'"):
        read_label_table(nocol)
    with pytest.raises(QSMInputError, match="not found"):
        read_label_table(tmp_path / "missing.tsv")


@pytest.mark.gpu
@pytest.mark.skipif(not backend.cupy_available(), reason=backend.gpu_unavailable_reason())
def test_cupy_matches_numpy():
    import cupy

    labels, maps = _random_case(seed=5)
    host = roi_statistics(maps, labels, erode_mm=1.5, trim_percent=5)
    device = roi_statistics({k: cupy.asarray(v) for k, v in maps.items()},
                            cupy.asarray(labels), erode_mm=1.5, trim_percent=5)
    np.testing.assert_allclose(device[["mean", "sd", "p5", "p95"]].to_numpy(dtype=float),
                               host[["mean", "sd", "p5", "p95"]].to_numpy(dtype=float),
                               rtol=1e-10, equal_nan=True)
    assert (device["count"] == host["count"]).all()
