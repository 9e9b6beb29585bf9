"""NIfTI readers on synthetic data: round trips, phase scalings, companion pairing, bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import make_complex_echoes, oblique_affine

from qsmliver.data import MultiEchoGRE
from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.geometry import b0_direction_from_affine
from qsmliver.io import read
from qsmliver.io.nifti import read_nifti, read_nifti_auto
from qsmliver.io.writers import write_gre_nifti

TE_S = (0.004, 0.008, 0.012, 0.016)
SHAPE = (12, 10, 8)


def _affine() -> np.ndarray:
    """Voxel 0.8 x 0.9 x 1.5 mm, rotated about x and y, translated."""
    return oblique_affine(17.0, -9.0)


def _gre(te_s=TE_S, vendor="Siemens") -> MultiEchoGRE:
    return MultiEchoGRE(make_complex_echoes(shape=SHAPE, te_s=te_s), te_s=te_s, b0_t=3.0,
                        affine=_affine(), vendor=vendor)


def _world(affine, shape=SHAPE) -> np.ndarray:
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in shape], indexing="ij")).reshape(3, -1)
    return (np.asarray(affine) @ np.vstack([corners, np.ones(corners.shape[1])]))[:3]


def _assert_same(original: MultiEchoGRE, back: MultiEchoGRE, phase_tol=2e-3) -> None:
    assert back.shape == original.shape and back.n_echoes == original.n_echoes
    np.testing.assert_allclose(back.te_s, original.te_s, rtol=1e-9)
    assert back.b0_t == pytest.approx(original.b0_t)
    np.testing.assert_allclose(back.voxel_size_mm, original.voxel_size_mm, rtol=1e-6)
    assert np.max(np.abs(_world(back.affine) - _world(original.affine))) < 1e-4
    np.testing.assert_allclose(back.b0_dir, b0_direction_from_affine(original.affine),
                               atol=1e-5)
    assert back.signal.dtype == np.complex64
    phase_error = np.abs(np.angle(back.signal * np.conj(original.signal)))
    assert phase_error.max() < phase_tol
    np.testing.assert_allclose(np.abs(back.signal), np.abs(original.signal), rtol=1e-4)


def _save(data, path: Path, affine=None, sidecar: dict | None = None) -> Path:
    nib.save(nib.Nifti1Image(np.asarray(data), _affine() if affine is None else affine), path)
    if sidecar is not None:
        path.with_name(path.name.split(".")[0] + ".json").write_text(json.dumps(sidecar))
    return path


def _sidecar(te, **extra) -> dict:
    return {"EchoTime": te, "MagneticFieldStrength": 3.0, "Manufacturer": "Siemens", **extra}


def _mag_phase_4d(folder: Path, gre: MultiEchoGRE, phase=None, sidecar=True, name="gre"):
    mag = _save(np.abs(gre.signal).astype(np.float32), folder / f"{name}.nii.gz",
                sidecar=_sidecar(list(TE_S)) if sidecar else None)
    stored = np.angle(gre.signal).astype(np.float32) if phase is None else phase
    ph = _save(stored, folder / f"{name}_ph.nii.gz",
               sidecar=_sidecar(list(TE_S)) if sidecar else None)
    return mag, ph


def _per_echo(folder: Path, gre: MultiEchoGRE, *, mag_prefix="00024__gre",
              phase_prefix="00026__gre", series=(24, 26), phase_values=None):
    """dcm2niix-style per-echo files: <series>__<name>_e<n>[_ph].nii.gz with sidecars."""
    mags, phases = [], []
    stored = np.angle(gre.signal) if phase_values is None else phase_values
    for k, te in enumerate(gre.te_s):
        mags.append(_save(np.abs(gre.signal[..., k]).astype(np.float32),
                          folder / f"{mag_prefix}_e{k + 1}.nii.gz",
                          sidecar=_sidecar(float(te), SeriesNumber=series[0],
                                           ImageType=["ORIGINAL", "PRIMARY", "M", "ND"])))
        phases.append(_save(stored[..., k], folder / f"{phase_prefix}_e{k + 1}_ph.nii.gz",
                            sidecar=_sidecar(float(te), SeriesNumber=series[1],
                                             ImageType=["ORIGINAL", "PRIMARY", "P", "ND"])))
    return mags, phases


# -- round trips ----------------------------------------------------------------------------
def test_4d_magnitude_phase_with_sidecars(tmp_path):
    gre = _gre()
    mag, ph = _mag_phase_4d(tmp_path, gre)
    back = read_nifti(mag, ph)
    _assert_same(gre, back)
    assert back.vendor == "Siemens" and back.has_phase
    assert back.metadata["PhaseScaling"] == "radians"
    assert set(back.metadata["SidecarKeysUsed"]) >= {"EchoTime", "MagneticFieldStrength",
                                                      "Manufacturer"}
    assert back.source_files == (str(mag), str(ph))


def test_phase_encoding_direction_travels_with_the_data(tmp_path):
    """dcm2niix's PhaseEncodingDirection (and SliceEncodingDirection) reach the metadata,
    where the bipolar correction finds the readout axis."""
    from qsmliver.fatwater import readout_axis_from_metadata

    gre = _gre()
    extra = {"PhaseEncodingDirection": "j-", "SliceEncodingDirection": "k"}
    mag = _save(np.abs(gre.signal).astype(np.float32), tmp_path / "gre.nii.gz",
                sidecar=_sidecar(list(TE_S), **extra))
    ph = _save(np.angle(gre.signal).astype(np.float32), tmp_path / "gre_ph.nii.gz",
               sidecar=_sidecar(list(TE_S), **extra))
    back = read_nifti(mag, ph)
    assert back.metadata["PhaseEncodingDirection"] == "j-"
    assert {"PhaseEncodingDirection", "SliceEncodingDirection"} <= set(
        back.metadata["SidecarKeysUsed"])
    assert readout_axis_from_metadata(back.metadata)[0] == 0


def test_4d_hand_written_with_te_and_b0_from_arguments(tmp_path):
    gre = _gre()
    mag, ph = _mag_phase_4d(tmp_path, gre, sidecar=False)
    back = read_nifti(magnitude=mag, phase=ph, te_s=TE_S, b0_t=3.0)
    _assert_same(gre, back)
    assert back.metadata["EchoTimeSource"] == "argument te_s"
    assert back.metadata["SidecarKeysUsed"] == []


def test_arguments_override_sidecars(tmp_path):
    gre = _gre()
    mag, ph = _mag_phase_4d(tmp_path, gre)
    te = [t * 1.5 for t in TE_S]
    back = read_nifti(mag, ph, te_s=te, b0_t=1.5, vendor="Philips", b0_dir=(0, 0.6, 0.8))
    np.testing.assert_allclose(back.te_s, te)
    assert back.b0_t == 1.5 and back.vendor == "Philips"
    np.testing.assert_allclose(back.b0_dir, [0, 0.6, 0.8])


def test_write_gre_nifti_reads_back(tmp_path):
    gre = _gre()
    written = write_gre_nifti(gre, tmp_path / "scan")
    back = read_nifti_auto(written[0])
    _assert_same(gre, back)
    np.testing.assert_allclose(back.b0_dir, gre.b0_dir, atol=1e-6)
    assert back.metadata["SkippedFiles"] == []


def test_per_echo_lists_are_sorted_by_sidecar_te(tmp_path):
    te = tuple(0.003 + 0.0025 * k for k in range(11))
    gre = _gre(te_s=te)
    mags, phases = _per_echo(tmp_path, gre)
    # lexicographic order (e1, e10, e11, e2, ...) and a shuffled phase list
    back = read_nifti(sorted(mags, key=str), list(reversed(phases)))
    _assert_same(gre, back)
    assert back.metadata["EchoOrder"] == "sidecar EchoTime"


def test_per_echo_lists_without_sidecars_use_echo_numbers(tmp_path):
    te = tuple(0.003 + 0.0025 * k for k in range(11))
    gre = _gre(te_s=te)
    mags, phases = _per_echo(tmp_path, gre)
    for path in tmp_path.glob("*.json"):
        path.unlink()
    back = read_nifti(sorted(mags, key=str), sorted(phases, key=str), te_s=te, b0_t=3.0)
    _assert_same(gre, back)
    assert back.metadata["EchoOrder"] == "echo number in the file names"


def test_real_imaginary(tmp_path):
    gre = _gre()
    real = _save(gre.signal.real, tmp_path / "gre_real.nii.gz", sidecar=_sidecar(list(TE_S)))
    imag = _save(gre.signal.imag, tmp_path / "gre_imaginary.nii.gz",
                 sidecar=_sidecar(list(TE_S)))
    _assert_same(gre, read_nifti(real=real, imag=imag))
    back = read_nifti_auto(real)
    _assert_same(gre, back)
    assert back.metadata["Components"] == "real+imaginary"


def test_complex_valued_nifti(tmp_path):
    gre = _gre()
    path = _save(gre.signal.astype(np.complex64), tmp_path / "cplx.nii.gz",
                 sidecar=_sidecar(list(TE_S)))
    _assert_same(gre, read_nifti(complex_=path))
    _assert_same(gre, read_nifti_auto(path))
    _assert_same(gre, read(path))


def test_magnitude_alone_has_no_phase(tmp_path):
    gre = _gre()
    path = _save(np.abs(gre.signal).astype(np.float32), tmp_path / "mag.nii.gz",
                 sidecar=_sidecar(list(TE_S)))
    back = read_nifti(path)
    assert not back.has_phase
    np.testing.assert_allclose(back.phase, 0.0)
    assert not read_nifti_auto(tmp_path).has_phase
    assert not read([path]).has_phase


def test_single_echo_3d_files(tmp_path):
    gre = _gre(te_s=(0.005,))
    mag = _save(np.abs(gre.signal[..., 0]).astype(np.float32), tmp_path / "a.nii",
                sidecar=_sidecar(0.005))
    ph = _save(np.angle(gre.signal[..., 0]).astype(np.float32), tmp_path / "a_phase.nii",
               sidecar=_sidecar(0.005))
    _assert_same(gre, read_nifti(mag, ph))
    _assert_same(gre, read_nifti_auto(ph))


# -- phase scalings ----------------------------------------------------------------------------
def test_siemens_integer_phase_is_detected_and_rescaled(tmp_path):
    gre = _gre()
    stored = np.clip(np.round(np.angle(gre.signal) * 4096 / np.pi), -4096, 4095)
    mag, ph = _mag_phase_4d(tmp_path, gre, phase=stored.astype(np.int16))
    back = read_nifti(mag, ph)
    assert back.metadata["PhaseScaling"] == "siemens"
    _assert_same(gre, back)
    assert back.phase.min() >= -np.pi and back.phase.max() <= np.pi


def test_philips_milliradian_phase(tmp_path):
    gre = _gre(vendor=None)
    stored = np.round(np.angle(gre.signal) * 1000).astype(np.int16)
    mag, ph = _mag_phase_4d(tmp_path, gre, phase=stored, sidecar=False)
    back = read_nifti(mag, ph, te_s=TE_S, b0_t=3.0)
    assert back.metadata["PhaseScaling"] == "milliradians"
    _assert_same(gre, back)


def test_arbitrary_unit_phase_uses_minmax(tmp_path):
    gre = _gre()
    phase = np.angle(gre.signal)
    stored = ((phase + np.pi) * 100.0 + 17.0).astype(np.float32)
    mag, ph = _mag_phase_4d(tmp_path, gre, phase=stored, sidecar=False)
    back = read_nifti(mag, ph, te_s=TE_S, b0_t=3.0)
    assert back.metadata["PhaseScaling"] == "minmax"
    lo, hi = float(stored.min()), float(stored.max())
    expected = gre.signal * 0 + np.abs(gre.signal) * np.exp(
        1j * ((stored.astype(np.float64) - lo) / (hi - lo) * 2 * np.pi - np.pi))
    assert np.max(np.abs(np.angle(back.signal * np.conj(expected)))) < 1e-4
    forced = read_nifti(mag, ph, te_s=TE_S, b0_t=3.0, phase_scale="minmax")
    assert forced.metadata["PhaseScaling"] == "minmax"


def test_phase_scale_is_checked(tmp_path):
    mag, ph = _mag_phase_4d(tmp_path, _gre())
    with pytest.raises(QSMConfigError, match="phase_scale"):
        read_nifti(mag, ph, phase_scale="degrees")


# -- companion pairing (read_nifti_auto) ----------------------------------------------------------
@pytest.mark.parametrize("suffix", ["_ph", "_phase"])
def test_auto_finds_the_phase_companion(tmp_path, suffix):
    gre = _gre()
    mag, ph = _mag_phase_4d(tmp_path, gre)
    if suffix != "_ph":
        ph.rename(tmp_path / f"gre{suffix}.nii.gz")
        (tmp_path / "gre_ph.json").rename(tmp_path / f"gre{suffix}.json")
    for given in (mag, tmp_path / f"gre{suffix}.nii.gz", tmp_path):
        back = read_nifti_auto(given)
        _assert_same(gre, back)
        assert back.metadata["Components"] == "magnitude+phase"


def test_auto_imag_suffix_and_component_choice(tmp_path):
    gre = _gre()
    _mag_phase_4d(tmp_path, gre)
    _save(gre.signal.real, tmp_path / "gre_real.nii.gz", sidecar=_sidecar(list(TE_S)))
    _save(gre.signal.imag, tmp_path / "gre_imag.nii.gz", sidecar=_sidecar(list(TE_S)))
    back = read_nifti_auto(tmp_path / "gre.nii.gz")
    assert back.metadata["Components"] == "real+imaginary"
    assert any("not used" in s for s in back.metadata["SkippedFiles"])
    chosen = read_nifti_auto(tmp_path, components="magnitude-phase")
    assert chosen.metadata["Components"] == "magnitude+phase"
    _assert_same(gre, back)
    _assert_same(gre, chosen)


def test_auto_pairs_dcm2niix_series_with_different_numbers(tmp_path):
    """Siemens: magnitude series 24 and phase series 26 of one acquisition, per echo."""
    te = tuple(0.00461 * (k + 1) for k in range(12))
    gre = _gre(te_s=te)
    stored = np.clip(np.round(np.angle(gre.signal) * 4096 / np.pi), -4096, 4095)
    _per_echo(tmp_path, gre, phase_values=stored.astype(np.int16))
    back = read_nifti_auto(tmp_path)
    _assert_same(gre, back)
    assert back.metadata["PhaseScaling"] == "siemens"
    assert back.metadata["Acquisition"] == "gre"
    _assert_same(gre, read_nifti_auto(tmp_path / "00026__gre_e7_ph.nii.gz"))
    _assert_same(gre, read(tmp_path))


def test_auto_series_number_at_the_end_of_the_name(tmp_path):
    """dcm2niix's default %f_%p_%t_%s names carry the series number last."""
    gre = _gre()
    _per_echo(tmp_path, gre, mag_prefix="dir_gre_20200101120000_5",
              phase_prefix="dir_gre_20200101120000_6", series=(5, 6))
    _assert_same(gre, read_nifti_auto(tmp_path))


def test_auto_skips_a_mis_stacked_multi_volume_echo(tmp_path):
    """Like philips_r2star_13echo: a 4-D ``_e2`` without EchoTime among per-echo files."""
    te = (0.0046, 0.0138, 0.0184, 0.0230)
    gre = _gre(te_s=te)
    mags, _ = _per_echo(tmp_path, gre, mag_prefix="01401__kid", phase_prefix="01401__kid",
                        series=(1401, 1401))
    for k in reversed(range(1, len(mags))):  # rename echoes 1,2,3,4 -> e1,e3,e4,e5
        for tail in (".nii.gz", ".json", "_ph.nii.gz", "_ph.json"):
            (tmp_path / f"01401__kid_e{k + 1}{tail}").rename(
                tmp_path / f"01401__kid_e{k + 2}{tail}")
    bad = _save(np.ones((*SHAPE, 2), np.float32), tmp_path / "01401__kid_e2.nii.gz",
                sidecar={"MagneticFieldStrength": 3.0, "SeriesNumber": 1401, "EchoNumber": 2})
    back = read_nifti_auto(tmp_path)
    _assert_same(gre, back)
    skipped = back.metadata["SkippedFiles"]
    assert len(skipped) == 1 and skipped[0].startswith(str(bad))
    assert "no EchoTime" in skipped[0]
    with pytest.raises(QSMInputError, match="cannot be an echo") as info:
        read_nifti_auto(bad)
    assert "01401__kid_e2.nii.gz" in str(info.value)


def test_auto_skips_derived_and_normalised_series(tmp_path):
    gre = _gre()
    _per_echo(tmp_path, gre)
    for k, te in enumerate(gre.te_s):  # a normalised copy of the magnitude, series 25
        _save(np.abs(gre.signal[..., k]).astype(np.float32) * 2,
              tmp_path / f"00025__gre_e{k + 1}.nii.gz",
              sidecar=_sidecar(float(te), SeriesNumber=25,
                               ImageType=["ORIGINAL", "PRIMARY", "M", "ND", "NORM"]))
    _save(np.ones(SHAPE, np.float32), tmp_path / "00027__gre.nii.gz",
          sidecar=_sidecar(0.004, SeriesNumber=27, ImageType=["DERIVED", "PRIMARY", "R2"]))
    back = read_nifti_auto(tmp_path)
    _assert_same(gre, back)
    reasons = " ".join(back.metadata["SkippedFiles"])
    assert "NORM" in reasons and "DERIVED" in reasons
    assert len(back.metadata["SkippedFiles"]) == gre.n_echoes + 1


def test_auto_refuses_two_magnitude_series_of_one_name(tmp_path):
    gre = _gre()
    _per_echo(tmp_path, gre)
    _per_echo(tmp_path, gre, mag_prefix="00030__gre", phase_prefix="00026__gre",
              series=(30, 26))
    with pytest.raises(QSMInputError, match="several series") as info:
        read_nifti_auto(tmp_path)
    assert "SeriesNumber" in str(info.value) and "00024__gre_e1.nii.gz" in str(info.value)


def test_auto_lists_unrelated_acquisitions(tmp_path):
    gre = _gre()
    _mag_phase_4d(tmp_path, gre, name="brain")
    _mag_phase_4d(tmp_path, gre, name="liver")
    with pytest.raises(QSMInputError, match="2 unrelated acquisitions") as info:
        read_nifti_auto(tmp_path)
    assert "'brain'" in str(info.value) and "'liver'" in str(info.value)
    assert str(tmp_path) in str(info.value)
    _assert_same(gre, read_nifti_auto(tmp_path / "liver_ph.nii.gz"))


def test_auto_mag_phase_names_as_whole_stems(tmp_path):
    gre = _gre()
    _save(np.abs(gre.signal).astype(np.float32), tmp_path / "Mag.nii")
    _save(np.angle(gre.signal).astype(np.float32), tmp_path / "Phase.nii")
    _assert_same(gre, read_nifti_auto(tmp_path, te_s=TE_S, b0_t=3.0))


# -- bad input ------------------------------------------------------------------------------------
def _raises(match: str, name: str, func, *args, **kwargs) -> QSMInputError:
    with pytest.raises(QSMInputError, match=match) as info:
        func(*args, **kwargs)
    assert name in str(info.value), str(info.value)
    return info.value


def test_mismatched_echo_counts(tmp_path):
    gre = _gre()
    mag = _save(np.abs(gre.signal).astype(np.float32), tmp_path / "m.nii.gz")
    ph = _save(np.angle(gre.signal[..., :3]).astype(np.float32), tmp_path / "p.nii.gz")
    error = _raises("4 echoes but phase has 3", "m.nii.gz", read_nifti, mag, ph, te_s=TE_S,
                    b0_t=3)
    assert "p.nii.gz" in str(error)


def test_mismatched_shapes(tmp_path):
    gre = _gre()
    mag = _save(np.abs(gre.signal).astype(np.float32), tmp_path / "m.nii.gz")
    ph = _save(np.angle(gre.signal[:-1]).astype(np.float32), tmp_path / "p.nii.gz")
    _raises("matrix", "p.nii.gz", read_nifti, mag, ph, te_s=TE_S, b0_t=3)
    mags, _ = _per_echo(tmp_path, gre)
    _save(np.ones((5, 5, 5), np.float32), mags[2], sidecar=_sidecar(TE_S[2]))
    _raises("shape", mags[2].name, read_nifti, mags)


def test_mismatched_affines(tmp_path):
    gre = _gre()
    shifted = _affine()
    shifted[:3, 3] += [0.0, 0.01, 0.0]
    mag = _save(np.abs(gre.signal).astype(np.float32), tmp_path / "m.nii.gz")
    ph = _save(np.angle(gre.signal).astype(np.float32), tmp_path / "p.nii.gz", affine=shifted)
    error = _raises("affine", "p.nii.gz", read_nifti, mag, ph, te_s=TE_S, b0_t=3)
    assert error.field == "affine"
    tiny = _affine()
    tiny[0, 3] += 2e-5  # within tolerance
    _save(np.angle(gre.signal).astype(np.float32), tmp_path / "p.nii.gz", affine=tiny)
    read_nifti(mag, ph, te_s=TE_S, b0_t=3)


def test_missing_te_says_how_to_give_it(tmp_path):
    mag, ph = _mag_phase_4d(tmp_path, _gre(), sidecar=False)
    error = _raises("echo times are missing", "gre.nii.gz", read_nifti, mag, ph, b0_t=3)
    assert "te_s=" in str(error) and error.field == "EchoTime"


def test_missing_b0_says_how_to_give_it(tmp_path):
    mag, ph = _mag_phase_4d(tmp_path, _gre(), sidecar=False)
    error = _raises("field strength is missing", "gre.nii.gz", read_nifti, mag, ph,
                    te_s=TE_S)
    assert "b0_t=" in str(error) and error.field == "MagneticFieldStrength"


def test_non_monotonic_and_duplicate_te(tmp_path):
    gre = _gre()
    mag, ph = _mag_phase_4d(tmp_path, gre, sidecar=False)
    _raises("not increasing", "gre.nii.gz", read_nifti, mag, ph, te_s=[0.004, 0.012, 0.008,
                                                                      0.016], b0_t=3)
    _raises("duplicate", "gre.nii.gz", read_nifti, mag, ph, te_s=[0.004, 0.008, 0.008,
                                                                  0.016], b0_t=3)
    _raises("4 echoes", "gre.nii.gz", read_nifti, mag, ph, te_s=[0.004, 0.008], b0_t=3)
    shuffled = _sidecar([0.004, 0.012, 0.008, 0.016])
    (tmp_path / "gre.json").write_text(json.dumps(shuffled))
    _raises("not increasing", "gre.json", read_nifti, mag)
    mags, _ = _per_echo(tmp_path, gre)
    (tmp_path / "00024__gre_e3.json").write_text(json.dumps(_sidecar(TE_S[1])))
    _raises("duplicate", "00024__gre", read_nifti, mags)


def test_te_disagreeing_between_components(tmp_path):
    mag, ph = _mag_phase_4d(tmp_path, _gre())
    (tmp_path / "gre_ph.json").write_text(json.dumps(_sidecar([0.005, 0.008, 0.012, 0.016])))
    _raises("disagree", "gre_ph.nii.gz", read_nifti, mag, ph)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_values(tmp_path, bad):
    gre = _gre()
    values = np.abs(gre.signal).astype(np.float32)
    values[3, 4, 5, 1] = bad
    mag = _save(values, tmp_path / "m.nii.gz")
    ph = _save(np.angle(gre.signal).astype(np.float32), tmp_path / "p.nii.gz")
    error = _raises("NaN or infinite", "m.nii.gz", read_nifti, mag, ph, te_s=TE_S, b0_t=3)
    assert "p.nii.gz" not in str(error)


def test_empty_file(tmp_path):
    mag, ph = _mag_phase_4d(tmp_path, _gre())
    ph.write_bytes(b"")
    _raises("empty", "gre_ph.nii.gz", read_nifti, mag, ph)
    _raises("empty", "gre_ph.nii.gz", read_nifti_auto, mag)


def test_missing_file(tmp_path):
    mag, _ = _mag_phase_4d(tmp_path, _gre())
    _raises("no such file", "nothing.nii.gz", read_nifti, mag, tmp_path / "nothing.nii.gz")
    _raises("no such file", "nothing.nii.gz", read_nifti_auto, tmp_path / "nothing.nii.gz")


def test_corrupt_files(tmp_path, rng):
    mag, ph = _mag_phase_4d(tmp_path, _gre())
    ph.write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    _raises("cannot read", "gre_ph.nii.gz", read_nifti, mag, ph)
    ph.write_bytes(gzip.compress(b"not a nifti header at all" * 20))
    _raises("cannot read", "gre_ph.nii.gz", read_nifti, mag, ph)
    full = gzip.decompress(mag.read_bytes())
    mag.write_bytes(gzip.compress(full[: len(full) // 2]))  # truncated data block
    _raises("cannot read", "gre.nii.gz", read_nifti, mag)


def test_invalid_sidecar_json(tmp_path):
    mag, ph = _mag_phase_4d(tmp_path, _gre())
    (tmp_path / "gre_ph.json").write_text("{ not json")
    _raises("JSON", "gre_ph.json", read_nifti, mag, ph)
    (tmp_path / "gre_ph.json").write_text("[1, 2]")
    _raises("object", "gre_ph.json", read_nifti, mag, ph)


@pytest.mark.parametrize("shape", [(12, 10), (12, 10, 8, 4, 2)])
def test_images_that_cannot_be_echoes(tmp_path, shape):
    path = _save(np.ones(shape, np.float32), tmp_path / "odd.nii.gz")
    _raises("cannot hold echoes", "odd.nii.gz", read_nifti, path, te_s=TE_S, b0_t=3)


def test_multi_volume_file_in_a_per_echo_list(tmp_path):
    gre = _gre()
    mags, _ = _per_echo(tmp_path, gre)
    four_d = _save(np.abs(gre.signal).astype(np.float32), tmp_path / "all.nii.gz")
    _raises("one 3-D image per echo", "all.nii.gz", read_nifti, [*mags[:2], four_d])


def test_component_combinations(tmp_path):
    gre = _gre()
    mag, ph = _mag_phase_4d(tmp_path, gre)
    with pytest.raises(QSMConfigError, match="magnitude and phase"):
        read_nifti(phase=ph)
    with pytest.raises(QSMConfigError):
        read_nifti(magnitude=mag, real=ph, imag=ph)
    with pytest.raises(QSMConfigError):
        read_nifti()
    cplx = _save(gre.signal.astype(np.complex64), tmp_path / "c.nii.gz")
    _raises("complex-valued image was given as phase", "c.nii.gz", read_nifti, mag, cplx)
    _raises("real-valued image was given as complex", "gre.nii.gz", read_nifti,
            complex_=mag)


def test_sidecar_values_must_agree_and_be_numbers(tmp_path):
    mag, ph = _mag_phase_4d(tmp_path, _gre())
    (tmp_path / "gre_ph.json").write_text(json.dumps({**_sidecar(list(TE_S)),
                                                       "MagneticFieldStrength": 1.5}))
    _raises("disagree", "gre_ph.nii.gz", read_nifti, mag, ph)
    (tmp_path / "gre_ph.json").write_text(json.dumps({**_sidecar(list(TE_S)),
                                                       "MagneticFieldStrength": "high"}))
    _raises("not a number", "gre_ph.json", read_nifti, mag, ph)


def test_echo_times_in_other_sidecar_keys(tmp_path):
    gre = _gre()
    mag, ph = _mag_phase_4d(tmp_path, gre, sidecar=False)
    for path in (tmp_path / "gre.json", tmp_path / "gre_ph.json"):
        path.write_text(json.dumps({"EchoTimes": list(TE_S), "MagneticFieldStrength": 3}))
    _assert_same(gre, read_nifti(mag, ph))
    numbered = {f"EchoTime{k + 1}": t for k, t in enumerate(TE_S)}
    for path in (tmp_path / "gre.json", tmp_path / "gre_ph.json"):
        path.write_text(json.dumps({**numbered, "MagneticFieldStrength": 3}))
    back = read_nifti(mag, ph)
    _assert_same(gre, back)
    assert "EchoTime4" in back.metadata["SidecarKeysUsed"]


def test_auto_folder_without_nifti(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    _raises("no NIfTI files", str(tmp_path), read_nifti_auto, tmp_path)
    _raises("not a NIfTI file", "notes.txt", read_nifti_auto, tmp_path / "notes.txt")
