"""DICOM reader and writer on synthetic vendor-style data: round trips, series choice, bad input."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import make_complex_echoes, oblique_affine
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from qsmliver.data import MultiEchoGRE
from qsmliver.errors import QSMConfigError, QSMInputError, QSMOutputExistsError
from qsmliver.geometry import b0_direction_from_affine
from qsmliver.io import read
from qsmliver.io.dicom import PHASE_SIGN, normalise_vendor, read_dicom, scan_series
from qsmliver.io.dicom_write import build_dicom_datasets, write_dicom_series

TE_S = (0.004, 0.008, 0.012, 0.016)
SHAPE = (12, 10, 8)


def _affine(rot_x_deg: float = 0.0, rot_y_deg: float = 0.0) -> np.ndarray:
    return oblique_affine(rot_x_deg, rot_y_deg)


def _gre(affine=None, te_s=TE_S, seed=0, shape=SHAPE) -> MultiEchoGRE:
    signal = make_complex_echoes(shape=shape, te_s=te_s, seed=seed)
    return MultiEchoGRE(signal, te_s=te_s, b0_t=3.0,
                        affine=_affine() if affine is None else affine)


def _world(affine, shape) -> np.ndarray:
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in shape], indexing="ij")).reshape(3, -1)
    return (np.asarray(affine) @ np.vstack([corners, np.ones(corners.shape[1])]))[:3]


def _assert_same(original: MultiEchoGRE, back: MultiEchoGRE, *, phase_tol=2e-3,
                 mag_rtol=2e-3) -> None:
    assert back.shape == original.shape and back.n_echoes == original.n_echoes
    np.testing.assert_allclose(back.te_s, original.te_s, rtol=1e-9)
    assert back.b0_t == pytest.approx(original.b0_t)
    np.testing.assert_allclose(back.voxel_size_mm, original.voxel_size_mm, rtol=1e-9)
    assert np.max(np.abs(_world(back.affine, back.shape)
                         - _world(original.affine, original.shape))) < 1e-4
    np.testing.assert_allclose(back.b0_dir, b0_direction_from_affine(original.affine),
                               atol=1e-6)
    ours, truth = back.signal.astype(np.complex128), original.signal.astype(np.complex128)
    scale = np.vdot(ours, truth).real / np.vdot(ours, ours).real  # one global real factor
    assert scale > 0
    assert np.max(np.abs(np.angle(ours * np.conj(truth)))) < phase_tol
    assert np.max(np.abs(scale * np.abs(ours) - np.abs(truth)) / np.abs(truth)) < mag_rtol


def _edit(path: Path, change) -> None:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)


def _files_where(folder: Path, **criteria) -> list[Path]:
    out = []
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if all(str(ds.get(k)) == str(v) for k, v in criteria.items()):
            out.append(path)
    return out


# -- round trips ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("vendor", "components"),
    [
        ("siemens", ("magnitude", "phase")),
        ("siemens", ("magnitude", "real", "imaginary")),
        ("ge", ("magnitude", "real", "imaginary")),
        ("ge", ("magnitude", "phase")),
        ("philips", ("magnitude", "phase")),
        ("philips", ("magnitude", "real", "imaginary")),
    ],
)
@pytest.mark.parametrize("enhanced", [False, True], ids=["classic", "enhanced"])
def test_round_trip_each_vendor(tmp_path, vendor, components, enhanced):
    gre = _gre()
    files = write_dicom_series(gre, tmp_path, vendor=vendor, enhanced=enhanced,
                               components=components, series_number=7)
    expected_files = 1 if enhanced else len(components) * gre.n_echoes * gre.shape[2]
    assert len(files) == expected_files
    back = read_dicom(tmp_path, progress=False)
    _assert_same(gre, back)
    assert back.vendor == {"siemens": "Siemens", "ge": "GE", "philips": "Philips"}[vendor]
    assert back.has_phase
    # The files used: every file but the magnitude ones when real + imaginary are present.
    assert back.source_files == tuple(sorted(back.source_files))
    assert set(back.source_files) <= {str(f) for f in files}
    assert len(back.source_files) == (1 if enhanced else 2 * gre.n_echoes * gre.shape[2])
    assert back.metadata["SOPClass"] == ("Enhanced MR Image Storage" if enhanced
                                         else "MR Image Storage")
    assert back.metadata["ImageComponents"] == list(components)
    assert back.metadata["ComplexFrom"] == ("real+imaginary" if "real" in components
                                            else "magnitude+phase")
    assert back.metadata["PhaseSign"].startswith("-1" if vendor == "ge" else "+1")
    assert back.signal.dtype == np.complex64


@pytest.mark.parametrize("enhanced", [False, True], ids=["classic", "enhanced"])
@pytest.mark.parametrize(("direction", "readout_axis"), [("ROW", 1), ("COL", 0)])
def test_phase_encoding_direction_round_trip(tmp_path, enhanced, direction, readout_axis):
    """InPlanePhaseEncodingDirection (top level in classic files, in the MR FOV/geometry
    functional group of enhanced ones) is read into the metadata; voxel axis 0 runs along a
    DICOM row, so ROW phase encoding means the readout is axis 1."""
    from qsmliver.fatwater import readout_axis_from_metadata

    gre = _gre()
    gre = MultiEchoGRE(gre.signal, te_s=gre.te_s, b0_t=gre.b0_t, affine=gre.affine,
                       metadata={"InPlanePhaseEncodingDirection": direction})
    files = write_dicom_series(gre, tmp_path, vendor="philips", enhanced=enhanced)
    top = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert ("InPlanePhaseEncodingDirection" in top) != enhanced
    back = read_dicom(tmp_path, progress=False)
    assert back.metadata["InPlanePhaseEncodingDirection"] == direction
    assert readout_axis_from_metadata(back.metadata)[0] == readout_axis


def test_siemens_classic_conventions(tmp_path):
    gre = _gre()
    write_dicom_series(gre, tmp_path, vendor="siemens", series_number=5)
    mag = pydicom.dcmread(_files_where(tmp_path, SeriesNumber=5)[0])
    phase_files = _files_where(tmp_path, SeriesNumber=6)
    assert len(phase_files) == gre.n_echoes * gre.shape[2]
    phase = pydicom.dcmread(phase_files[0])
    assert list(mag.ImageType) == ["ORIGINAL", "PRIMARY", "M", "ND"]
    assert list(phase.ImageType) == ["ORIGINAL", "PRIMARY", "P", "ND"]
    assert float(phase.RescaleSlope) == 2 and float(phase.RescaleIntercept) == -4096
    stored = np.concatenate([pydicom.dcmread(f).pixel_array.ravel() for f in phase_files])
    assert stored.min() >= 0 and stored.max() <= 4095 and stored.max() > 4000
    assert mag.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert mag.Rows == gre.shape[1] and mag.Columns == gre.shape[0]

    back = read_dicom(tmp_path)
    assert back.metadata["SeriesNumbers"] == [5, 6]
    assert back.metadata["Series"] == ("5 'qsmliver siemens multi-echo GRE' (magnitude) + "
                                       "6 'qsmliver siemens multi-echo GRE' (phase)")
    assert back.metadata["PhaseScaling"].startswith("siemens 12-bit")
    _assert_same(gre, back)


def test_philips_and_ge_conventions(tmp_path):
    gre = _gre()
    write_dicom_series(gre, tmp_path / "philips", vendor="philips")
    phase = next(pydicom.dcmread(p) for p in sorted((tmp_path / "philips").iterdir())
             if "P" in pydicom.dcmread(p, stop_before_pixels=True).ImageType)
    assert list(phase.ImageType) == ["ORIGINAL", "PRIMARY", "PHASE MAP", "P", "FFE"]
    assert float(phase.RescaleSlope) == pytest.approx(1.53455, abs=1e-5)
    assert float(phase.RescaleIntercept) == -3142
    assert phase.private_block(0x2005, "Philips MR Imaging DD 001")[0x0E].value > 0
    back = read_dicom(tmp_path / "philips")
    assert back.metadata["PhaseScaling"].startswith("milliradians")

    write_dicom_series(gre, tmp_path / "ge", vendor="ge",
                       components=("magnitude", "phase", "real", "imaginary"))
    codes = set()
    for path in sorted((tmp_path / "ge").iterdir()):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "OTHER"]
        assert ds.PixelRepresentation == 1
        codes.add(ds.private_block(0x0043, "GEMS_PARM_01")[0x2F].value)
    assert codes == {0, 1, 2, 3}
    summary = scan_series(tmp_path / "ge")
    assert summary[0].components == ("magnitude", "phase", "real", "imaginary")
    _assert_same(gre, read_dicom(tmp_path / "ge"))


def test_phase_sign_is_normalised_per_vendor(tmp_path):
    """A positive frequency offset must read back as positive phase from every vendor."""
    te = np.array(TE_S)
    freq_hz = 20.0  # phase 2*pi*20*TE: 0.50, 1.01, 1.51, 2.01 rad, all positive
    signal = np.broadcast_to(np.exp(2j * np.pi * freq_hz * te) * 1000.0, (*SHAPE, te.size))
    gre = MultiEchoGRE(signal.copy(), te_s=te, b0_t=3.0, affine=_affine())
    assert PHASE_SIGN == {"Siemens": 1, "Philips": 1, "GE": -1}
    for vendor, stored_sign in [("siemens", +1), ("philips", +1), ("ge", -1)]:
        folder = tmp_path / vendor
        write_dicom_series(gre, folder, vendor=vendor, components=("magnitude", "phase"))
        # What the vendor stores: the phase value of one pixel in the first-echo phase image.
        for path in sorted(folder.iterdir()):
            ds = pydicom.dcmread(path)
            is_phase = ("P" in ds.ImageType if vendor != "ge"
                        else ds.private_block(0x0043, "GEMS_PARM_01")[0x2F].value == 1)
            if is_phase and int(ds.EchoNumbers) == 1:
                value = float(ds.pixel_array[0, 0]) * float(ds.get("RescaleSlope", 1)) + float(
                    ds.get("RescaleIntercept", 0))
                break
        assert np.sign(value) == stored_sign
        back = read_dicom(folder)
        np.testing.assert_allclose(np.angle(back.signal[0, 0, 0, :]), 2 * np.pi * freq_hz * te,
                                   atol=2e-3)


@pytest.mark.parametrize("enhanced", [False, True], ids=["classic", "enhanced"])
@pytest.mark.parametrize("vendor", ["siemens", "philips"])
def test_oblique_slab_b0_direction(tmp_path, vendor, enhanced):
    gre = _gre(affine=_affine(rot_x_deg=20.0, rot_y_deg=10.0))
    write_dicom_series(gre, tmp_path, vendor=vendor, enhanced=enhanced)
    back = read_dicom(tmp_path)
    expected = b0_direction_from_affine(gre.affine)
    assert abs(expected[2]) < 0.95  # really oblique
    assert np.max(np.abs(back.b0_dir - expected)) < 1e-6
    _assert_same(gre, back)


def test_slices_sorted_along_the_normal(tmp_path):
    # A left-handed affine: slices run against the slice normal, so the reader reverses k.
    affine = _affine()
    affine[:, 0] *= -1
    gre = _gre(affine=affine)
    write_dicom_series(gre, tmp_path, vendor="siemens")
    back = read_dicom(tmp_path)
    flipped = MultiEchoGRE(gre.signal[:, :, ::-1, :], te_s=gre.te_s, b0_t=gre.b0_t,
                           affine=gre.affine @ _flip_k(gre.shape[2]))
    _assert_same(flipped, back)


def _flip_k(n: int) -> np.ndarray:
    flip = np.eye(4)
    flip[2, 2], flip[2, 3] = -1, n - 1
    return flip


def test_magnitude_only_and_phase_only(tmp_path):
    gre = _gre()
    write_dicom_series(gre, tmp_path / "mag", vendor="siemens", components=("magnitude",))
    mag = read_dicom(tmp_path / "mag")
    assert not mag.has_phase and np.all(np.angle(mag.signal) == 0)
    assert any("magnitude only" in n for n in mag.metadata["Notes"])
    assert np.corrcoef(np.abs(mag.signal).ravel(), np.abs(gre.signal).ravel())[0, 1] > 0.9999

    write_dicom_series(gre, tmp_path / "phase", vendor="siemens", components=("phase",))
    phase = read_dicom(tmp_path / "phase")
    assert phase.has_phase and np.allclose(np.abs(phase.signal), 1.0)
    assert any("phase only" in n for n in phase.metadata["Notes"])
    assert np.max(np.abs(np.angle(phase.signal * np.conj(gre.signal)))) < 2e-3


def test_ge_slice_chop(tmp_path):
    gre = _gre()
    write_dicom_series(gre, tmp_path, vendor="ge", components=("magnitude", "real", "imaginary"),
                       ge_slice_chop=True)
    raw = read_dicom(tmp_path)
    ratio = raw.signal[..., 0] / gre.signal[..., 0]
    assert np.allclose(np.sign(ratio.real[:, :, 0::2]), 1)
    assert np.allclose(np.sign(ratio.real[:, :, 1::2]), -1)
    fixed = read_dicom(tmp_path, ge_slice_chop=True)
    _assert_same(gre, fixed)
    assert "GESliceChop" in fixed.metadata
    write_dicom_series(gre, tmp_path / "siemens", vendor="siemens")
    with pytest.raises(QSMConfigError, match="GE data only"):
        read_dicom(tmp_path / "siemens", ge_slice_chop=True)


def test_philips_floating_point_scaling_when_slopes_differ(tmp_path):
    gre = _gre()
    write_dicom_series(gre, tmp_path, vendor="philips")
    same = read_dicom(tmp_path)
    # Make echo 2's displayed values inconsistent (RescaleSlope x 2): the floating-point value
    # stored / MRScaleSlope = DV / (RescaleSlope * MRScaleSlope) stays right.
    for path in sorted(tmp_path.iterdir()):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if "M" in ds.ImageType and int(ds.EchoNumbers) == 2:
            _edit(path, lambda ds: setattr(ds, "RescaleSlope", pydicom.valuerep.
                                           format_number_as_ds(float(ds.RescaleSlope) * 2)))
    back = read_dicom(tmp_path)
    assert back.metadata["PhilipsScaling"].startswith("floating-point")
    _assert_same(gre, back)
    np.testing.assert_allclose(np.abs(back.signal), np.abs(same.signal), rtol=1e-5)


def test_gzipped_extensionless_and_stray_files(tmp_path):
    gre = _gre()
    files = write_dicom_series(gre, tmp_path / "src", vendor="siemens")
    folder = tmp_path / "mixed" / "deeper"
    folder.mkdir(parents=True)
    for i, path in enumerate(files):
        if i % 2:
            with open(path, "rb") as src, gzip.open(folder / f"{path.name}.gz", "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            shutil.copy(path, folder / path.stem)  # no extension
    (folder / "notes.txt").write_text("not DICOM")
    (folder / "sidecar.json").write_text("{}")
    back = read_dicom(tmp_path / "mixed")
    _assert_same(gre, back)
    assert "2 non-DICOM files skipped" in back.metadata["Notes"]
    assert len(back.source_files) == len(files)
    one = next(p for p in folder.iterdir() if p.name.endswith(".gz"))
    assert scan_series([one])[0].n_files == 1


def test_dispatcher_and_progress(tmp_path, capsys):
    gre = _gre()
    files = write_dicom_series(gre, tmp_path, vendor="siemens")
    _assert_same(gre, read(tmp_path))
    _assert_same(gre, read([str(f) for f in files]))
    read_dicom(tmp_path, progress=True)
    assert "reading DICOM" in capsys.readouterr().err


def test_normalise_vendor():
    assert normalise_vendor("SIEMENS") == "Siemens"
    assert normalise_vendor("Philips Medical Systems") == "Philips"
    assert normalise_vendor("GE MEDICAL SYSTEMS") == "GE"
    assert normalise_vendor("Canon_MEC") == "Canon_MEC"
    assert normalise_vendor("") is None


# -- series choice --------------------------------------------------------------------------
def test_siemens_pair_picked_automatically(tmp_path):
    gre = _gre()
    write_dicom_series(gre, tmp_path, vendor="siemens", series_number=11,
                       series_description="gre_qsm")
    summaries = scan_series(tmp_path)
    assert [(s.series_number, s.components) for s in summaries] == [
        (11, ("magnitude",)), (12, ("phase",))]
    assert all(s.is_multi_echo_gre for s in summaries)
    np.testing.assert_allclose(summaries[0].echo_times_s, TE_S)
    assert "series    11" in str(summaries[0]) and "gre_qsm" in str(summaries[0])
    back = read_dicom(tmp_path)
    assert back.metadata["SeriesNumbers"] == [11, 12]
    assert back.metadata["SeriesDescription"] == "gre_qsm"
    assert back.has_phase


def test_two_acquisitions_need_series(tmp_path):
    first = _gre()
    second = _gre(te_s=(0.003, 0.006, 0.009), seed=3)
    write_dicom_series(first, tmp_path, vendor="siemens", series_number=3,
                       series_description="gre_first")
    write_dicom_series(second, tmp_path, vendor="siemens", series_number=8,
                       series_description="gre_second")
    with pytest.raises(QSMInputError) as info:
        read_dicom(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "series=" in message
    assert "series 3+4 'gre_first'" in message and "series 8+9 'gre_second'" in message
    assert "TE 4/8/12/16 ms" in message

    picked = read_dicom(tmp_path, series=8)
    assert picked.metadata["SeriesNumbers"] == [8, 9]
    _assert_same(second, picked)
    _assert_same(first, read_dicom(tmp_path, series=[3, 4]))
    uid = next(s.series_uid for s in scan_series(tmp_path) if s.series_number == 3)
    _assert_same(first, read_dicom(tmp_path, series=uid))
    only_magnitude = read_dicom(tmp_path, series=[3])
    assert not only_magnitude.has_phase
    with pytest.raises(QSMInputError, match="no image series with series number 42"):
        read_dicom(tmp_path, series=42)
    with pytest.raises(QSMConfigError):
        read_dicom(tmp_path, series=3.5)


# -- bad input ------------------------------------------------------------------------------
@pytest.fixture
def siemens_folder(tmp_path) -> Path:
    folder = tmp_path / "series"
    write_dicom_series(_gre(), folder, vendor="siemens")
    return folder


def _raises_naming(path_or_folder, file: Path | str, *, field: str | None = None, **kwargs):
    with pytest.raises(QSMInputError) as info:
        read_dicom(path_or_folder, **kwargs)
    message = str(info.value)
    assert str(file) in message, message
    if field:
        assert field in message, message
    assert "Traceback" not in message
    return message


def test_truncated_pixel_data(siemens_folder):
    victim = sorted(siemens_folder.iterdir())[5]
    data = victim.read_bytes()
    victim.write_bytes(data[:-37])
    message = _raises_naming(siemens_folder, victim, field="PixelData")
    assert "truncated" in message


def test_truncated_enhanced_object(tmp_path):
    files = write_dicom_series(_gre(), tmp_path, vendor="philips", enhanced=True)
    files[0].write_bytes(files[0].read_bytes()[:-1000])
    assert "truncated" in _raises_naming(tmp_path, files[0], field="PixelData")


def test_short_pixel_data_element(siemens_folder):
    victim = sorted(siemens_folder.iterdir())[0]
    _edit(victim, lambda ds: setattr(ds, "PixelData", ds.PixelData[:40]))
    assert "truncated" in _raises_naming(siemens_folder, victim, field="PixelData")


def test_empty_file(siemens_folder, tmp_path):
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    assert "empty" in _raises_naming(empty, empty)
    inside = siemens_folder / "0009_00001.dcm"
    inside.write_bytes(b"")
    assert "empty" in _raises_naming(siemens_folder, inside)


def test_non_dicom_garbage_only(tmp_path, rng):
    folder = tmp_path / "garbage"
    folder.mkdir()
    (folder / "readme.txt").write_text("hello")
    (folder / "blob").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    message = _raises_naming(folder, folder)
    assert "no DICOM files" in message
    garbage = folder / "blob"
    assert "not a readable DICOM" in _raises_naming(garbage, garbage, field="file")
    with pytest.raises(QSMInputError, match="no such file or folder"):
        read_dicom(tmp_path / "missing")


def test_missing_field_strength(siemens_folder):
    victim = sorted(siemens_folder.iterdir())[3]
    _edit(victim, lambda ds: delattr(ds, "MagneticFieldStrength"))
    _raises_naming(siemens_folder, victim, field="MagneticFieldStrength")
    assert read_dicom(siemens_folder, b0_t=3.0).b0_t == 3.0


def test_missing_echo_time(siemens_folder):
    victim = sorted(siemens_folder.iterdir())[9]
    _edit(victim, lambda ds: delattr(ds, "EchoTime"))
    _raises_naming(siemens_folder, victim, field="EchoTime")


def test_missing_echo_time_enhanced(tmp_path):
    files = write_dicom_series(_gre(), tmp_path, vendor="siemens", enhanced=True)

    def change(ds):
        del ds.PerFrameFunctionalGroupsSequence[4].MREchoSequence
    _edit(files[0], change)
    assert "frame 5" in _raises_naming(tmp_path, files[0], field="EchoTime")


def test_inconsistent_slice_count_between_echoes(siemens_folder):
    # Drop the last slice of echo 2 of the magnitude series.
    echo2 = _files_where(siemens_folder, SeriesNumber=1, EchoNumbers=2)
    positions = {p: float(pydicom.dcmread(p, stop_before_pixels=True).SliceLocation)
                 for p in echo2}
    last = max(positions, key=positions.get)
    last.unlink()
    echo1 = _files_where(siemens_folder, SeriesNumber=1, EchoNumbers=1)
    partner = next(p for p in echo1 if abs(float(pydicom.dcmread(
        p, stop_before_pixels=True).SliceLocation) - positions[last]) < 1e-6)
    message = _raises_naming(siemens_folder, partner, field="ImagePositionPatient")
    assert "7 slices" in message and "8" in message


def test_missing_middle_slice(siemens_folder):
    echo3 = _files_where(siemens_folder, SeriesNumber=2, EchoNumbers=3)
    echo3.sort(key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).SliceLocation))
    echo3[4].unlink()
    message = _raises_naming(siemens_folder, echo3[3], field="ImagePositionPatient")
    assert "missing" in message and str(echo3[5]) in message


def test_duplicated_slice(siemens_folder):
    source = sorted(siemens_folder.iterdir())[2]
    copy = siemens_folder / "copy.dcm"
    shutil.copy(source, copy)
    _edit(copy, lambda ds: setattr(ds, "SOPInstanceUID", generate_uid()))
    message = _raises_naming(siemens_folder, copy, field="ImagePositionPatient")
    assert "same slice position" in message


def test_mismatched_image_size(siemens_folder):
    victim = sorted(siemens_folder.iterdir())[12]

    def change(ds):
        ds.Rows, ds.Columns = ds.Columns, ds.Rows + 1
        ds.PixelData = np.zeros((ds.Rows, ds.Columns), "<u2").tobytes()
    _edit(victim, change)
    _raises_naming(siemens_folder, victim, field="Rows")


def test_bad_orientation(siemens_folder):
    victim = sorted(siemens_folder.iterdir())[20]
    _edit(victim, lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 1, 0, 0]))
    message = _raises_naming(siemens_folder, victim, field="ImageOrientationPatient")
    assert "perpendicular" in message


def test_inconsistent_echoes_between_components(siemens_folder):
    for path in _files_where(siemens_folder, SeriesNumber=2, EchoNumbers=4):
        path.unlink()
    # The phase series now has echoes 1-3 only: automatic pairing refuses the mismatch, so the
    # two series are read together on request.
    with pytest.raises(QSMInputError) as info:
        read_dicom(siemens_folder, series=[1, 2])
    message = str(info.value)
    assert "phase images have 3 echoes" in message and "magnitude images have 4" in message
    assert str(siemens_folder) in message and "EchoTime" in message


def test_raw_data_storage_refused(tmp_path):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.66"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 4
    raw = tmp_path / "raw.dcm"
    ds.save_as(raw, enforce_file_format=True)
    message = _raises_naming(raw, raw, field="SOPClassUID")
    assert "Raw Data Storage object with no pixel data" in message
    summary = scan_series(raw)
    assert summary[0].sop_class == "Raw Data Storage" and not summary[0].is_multi_echo_gre

    # Beside images it is skipped with a note.
    write_dicom_series(_gre(), tmp_path, vendor="siemens", enhanced=True)
    back = read_dicom(tmp_path)
    assert any("Raw Data Storage" in n for n in back.metadata["Notes"])


# -- writer ---------------------------------------------------------------------------------
def test_writer_refuses_to_overwrite(tmp_path):
    gre = _gre()
    write_dicom_series(gre, tmp_path, vendor="ge", components=("magnitude", "real", "imaginary"))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(QSMOutputExistsError, match="overwrite=True"):
        write_dicom_series(gre, tmp_path, vendor="ge",
                           components=("magnitude", "real", "imaginary"))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    write_dicom_series(gre, tmp_path, vendor="ge", components=("magnitude", "real", "imaginary"),
                       overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before)


def test_writer_rejects_bad_options():
    gre = _gre()
    with pytest.raises(QSMConfigError, match="unknown vendor"):
        build_dicom_datasets(gre, vendor="bruker")
    with pytest.raises(QSMConfigError, match="components"):
        build_dicom_datasets(gre, components=("magnitude", "t2star"))
    with pytest.raises(QSMConfigError, match="ge_slice_chop"):
        build_dicom_datasets(gre, vendor="philips", ge_slice_chop=True)
    sheared = _affine()
    sheared[0, 1] = 0.3
    with pytest.raises(QSMConfigError, match="orthogonal"):
        build_dicom_datasets(MultiEchoGRE(gre.signal, te_s=TE_S, b0_t=3.0, affine=sheared))
