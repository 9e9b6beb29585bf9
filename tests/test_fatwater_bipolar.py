"""Bipolar-readout phase correction (Lu et al. 2008): a simulated linear odd/even phase error
on an abdomen phantom slab swaps fat and water without the correction, not with it; and the
real bipolar liver slice of ../shared/data (skipped when absent); the readout axis from the
readers' metadata, and the correction as a stage of ``recon`` (liver and brain)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.fatwater import readout_axis_from_metadata, separate_fat_water
from qsmliver.fatwater.bipolar import correct_bipolar_phase
from qsmliver.pipeline import recon
from qsmliver.pipeline_liver import QSMCoverageWarning
from qsmliver.simulate.abdomen import abdomen_phantom
from qsmliver.simulate.brain import brain_phantom

OFFSET_RAD, SLOPE_RAD = 1.2, 0.03


@pytest.fixture(scope="module")
def bipolar_case():
    phantom = abdomen_phantom(shape=(48, 40, 8), b0_t=1.5, snr=50.0, seed=7)
    signal = phantom.gre.signal.copy()
    x = np.arange(signal.shape[0])[:, None, None]
    signal[..., 1::2] *= np.exp(1j * (OFFSET_RAD + SLOPE_RAD * x))[..., None]
    return phantom, signal


def _swaps_and_error(phantom, signal):
    gre = phantom.gre
    tissue = phantom.masks["tissue"]
    result = separate_fat_water(signal, gre.te_s, gre.b0_t, mask=tissue,
                                voxel_size_mm=gre.voxel_size_mm)
    error = np.abs(result.pdff_percent - phantom.truth["pdff_percent"])[tissue]
    return float(np.mean(error > 40.0)), float(np.median(error))


def test_bipolar_error_is_estimated_and_removed(bipolar_case):
    phantom, signal = bipolar_case
    corrected, info = correct_bipolar_phase(signal, phantom.gre.te_s,
                                            mask=phantom.masks["tissue"])
    swaps_before, err_before = _swaps_and_error(phantom, signal)
    swaps_after, err_after = _swaps_and_error(phantom, corrected)
    print(f"estimated a {info['offset_rad']:.3f} rad (true {OFFSET_RAD}), b "
          f"{info['slope_rad_per_voxel']:.4f} rad/voxel (true {SLOPE_RAD}); swaps "
          f"{swaps_before:.2%} -> {swaps_after:.2%}, median |PDFF error| {err_before:.1f} -> "
          f"{err_after:.2f} points")
    assert abs(info["offset_rad"] - OFFSET_RAD) < 0.15
    assert abs(info["slope_rad_per_voxel"] - SLOPE_RAD) < 0.005
    assert swaps_before > 0.02 and err_before > 2.0
    assert swaps_after < 0.002 and err_after < 1.0


def test_bad_input():
    signal = np.ones((4, 4, 2, 2), complex)
    with pytest.raises(QSMInputError):
        correct_bipolar_phase(signal, [0.001, 0.002])
    with pytest.raises(QSMInputError):
        correct_bipolar_phase(np.ones((4, 4, 2, 4), complex), [1, 2, 3, 4], readout_axis=3)


# -- metadata and the recon chain ------------------------------------------------------------
@pytest.mark.parametrize(("metadata", "axis"), [
    ({"InPlanePhaseEncodingDirection": "ROW"}, 1),
    ({"InPlanePhaseEncodingDirection": "col"}, 0),
    ({"PhaseEncodingDirection": "j-"}, 0),
    ({"PhaseEncodingDirection": "i"}, 1),
    ({"PhaseEncodingAxis": "i"}, 1),
    ({"PhaseEncodingDirection": "j", "SliceEncodingDirection": "i"}, 2),
    ({"PhaseEncodingDirection": "k", "SliceEncodingDirection": "k"}, None),
    ({"InPlanePhaseEncodingDirection": "OTHER"}, None),
    ({}, None),
])
def test_readout_axis_from_metadata(metadata, axis):
    found, source = readout_axis_from_metadata(metadata)
    assert found == axis
    assert source


def _with_metadata(gre, signal, **metadata):
    return dataclasses.replace(gre, signal=signal, metadata={**gre.metadata, **metadata})


def test_recon_liver_corrects_a_bipolar_acquisition(bipolar_case):
    """``recon(..., bipolar={"correct": True})`` finds the readout axis in the DICOM metadata
    (phase encoded along columns: readout along axis 0), removes the error before the
    fat-water separation and records it; without it, water and fat swap."""
    phantom, signal = bipolar_case
    gre = _with_metadata(phantom.gre, signal, InPlanePhaseEncodingDirection="COL")
    tissue = phantom.masks["tissue"]
    swaps = {}
    for correct in (False, True):
        with pytest.warns(QSMCoverageWarning):  # 8 slices: fat-water outputs only
            result = recon(gre, "liver", mask=tissue, device="cpu",
                           bipolar={"correct": correct})
        error = np.abs(result.maps["desc-PDFF_map"].data - phantom.truth["pdff_percent"])
        swaps[correct] = float(np.mean(error[tissue] > 40.0))
    print(f"swaps without / with the correction: {swaps[False]:.2%} / {swaps[True]:.2%}")
    assert swaps[False] > 0.02 and swaps[True] < 0.002
    info = result.provenance["Stages"]["bipolar"]
    assert info["readout_axis"] == 0
    assert info["readout_axis_source"] == "InPlanePhaseEncodingDirection = COL"
    assert abs(info["offset_rad"] - OFFSET_RAD) < 0.15
    assert abs(info["slope_rad_per_voxel"] - SLOPE_RAD) < 0.005
    json.dumps(result.provenance["Stages"]["bipolar"])


def test_recon_brain_corrects_a_bipolar_acquisition():
    """Brain: the odd/even error distorts the field map (a ramp along the readout, 1.1 Hz
    RMS) and inflates the field noise map 14-fold (the echoes no longer fit one frequency);
    corrected, χ matches the clean recon and the field map equals the clean one up to a
    constant. For one species with even echo spacing the offset ``a`` is only known modulo π
    (``(-1)^n`` on the echoes is the same as a field shift of 1/(2 ΔTE)), so that constant is
    0 or ±1/(2 ΔTE). (χ itself moves little without the correction here: the ramp is linear,
    so harmonic, and background removal takes it out.)"""
    phantom = brain_phantom(shape=(48, 48, 36), voxel_size_mm=(4.0, 4.0, 4.0), snr=100.0)
    signal = phantom.gre.signal.copy()
    y = np.arange(signal.shape[1])[None, :, None]
    signal[..., 1::2] *= np.exp(1j * (-0.8 + 0.04 * y))[..., None]
    brain = phantom.masks["brain"]
    clean = recon(phantom.gre, "brain", mask=brain, device="cpu")
    results = {correct: recon(_with_metadata(phantom.gre, signal, PhaseEncodingDirection="i"),
                              "brain", mask=brain, device="cpu", bipolar={"correct": correct})
               for correct in (False, True)}

    def chi_nrmse(result):
        inside = result.maps["mask"].data.astype(bool)
        est, truth = result.maps["Chimap"].data[inside], phantom.truth["chi_ppm"][inside]
        return float(np.linalg.norm((est - est.mean()) - (truth - truth.mean()))
                     / np.linalg.norm(truth - truth.mean()))

    nrmse = {name: chi_nrmse(r) for name, r in
             (("clean", clean), ("error", results[False]), ("corrected", results[True]))}
    print({k: round(v, 3) for k, v in nrmse.items()})
    assert abs(nrmse["corrected"] - nrmse["clean"]) < 0.01
    both = clean.maps["mask"].data.astype(bool) & results[True].maps["mask"].data.astype(bool)
    uncorrected = (results[False].maps["fieldmap"].data - clean.maps["fieldmap"].data)[both]
    assert float(np.std(uncorrected)) > 0.5

    def noise_hz(result):
        return float(np.median(result.maps["desc-fieldnoise_map"].data[both]))

    assert noise_hz(results[False]) > 5 * noise_hz(clean)
    assert noise_hz(results[True]) == pytest.approx(noise_hz(clean), rel=0.05)
    difference = (results[True].maps["fieldmap"].data - clean.maps["fieldmap"].data)[both]
    step_hz = 1.0 / (2.0 * float(np.diff(phantom.gre.te_s).mean()))
    assert float(np.std(difference)) < 0.5
    assert min(abs(float(np.median(difference)) - k * step_hz) for k in (-1, 0, 1)) < 0.5
    info = results[True].provenance["Stages"]["bipolar"]
    assert info["readout_axis"] == 1 and "PhaseEncodingDirection" in info["readout_axis_source"]
    assert abs(info["slope_rad_per_voxel"] - 0.04) < 0.003


def test_recon_bipolar_needs_a_readout_axis(bipolar_case):
    phantom, signal = bipolar_case
    gre = _with_metadata(phantom.gre, signal)
    with pytest.raises(QSMInputError, match="readout axis is unknown"):
        recon(gre, "liver", device="cpu", bipolar={"correct": True})
    for bad in ({"correct": "yes"}, {"correct": True, "readout_axis": 3},
                {"correct": True, "readout_axis": True}, {"correct": True, "axis": 0}):
        with pytest.raises(QSMConfigError):
            recon(gre, "liver", device="cpu", bipolar=bad)
