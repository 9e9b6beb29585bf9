"""Fat-water separation on real data: ISMRM 2012 fat-water challenge cases 12, 13, 15, 16, 17
(../shared/data; no reference solutions), checked with two small ROIs per case picked by
looking at the water, fat and PDFF images: one in subcutaneous fat (median PDFF > 80 %) and one
in a water tissue (median PDFF < 15 %). Skipped when the data are absent.

Boxes are (x slice, y slice) by array index and cover all slices of the case. The images
(``benchmarks/fatwater_real.py`` writes them) show where each box lies.
"""

from __future__ import annotations

import numpy as np
import pytest

from qsmliver.fatwater import separate_fat_water
from qsmliver.io.fatwater_mat import read_fatwater_mat

#: case -> (fat box, water box, what the water box is in)
CHALLENGE_ROIS = {
    12: ((slice(128, 132), slice(212, 216)), (slice(60, 68), slice(40, 48)), "liver"),
    13: ((slice(66, 70), slice(16, 20)), (slice(88, 94), slice(60, 66)), "heart"),
    15: ((slice(36, 44), slice(4, 12)), (slice(60, 66), slice(46, 52)), "fibroglandular"),
    16: ((slice(56, 60), slice(36, 40)), (slice(8, 14), slice(28, 34)), "brain"),
    17: ((slice(14, 18), slice(16, 20)), (slice(70, 76), slice(50, 56)), "muscle band"),
}

#: Known failures of the current separation (measured; strict, so a fix shows up as XPASS).
KNOWN_FAILURES = {
    12: "subcutaneous fat reads 66 %: the fat is a 2-4 voxel ring whose centre peaks at 78 %. "
        "The echoes there beat like a mixture (|S| = 0.63, 1.00, 0.25, 0.30 of the maximum; "
        "pure ISMRM fat would be 0.83, 0.80, 0.62, 0.63), and no fat spectrum, B0 or TE "
        "offset makes it fit pure fat: partial volume (4 echoes, 1.5 T, 5-mm slices)",
    17: "3 echoes: the muscle band reads 29 %. Its only other field minimum is the fat swap "
        "(96-99 %); fitting with a common water-fat phase (Bydder 2011) gives 28 %, and with "
        "R2* fixed at 0 as well 20-22 %: the data put fat there under every model tried",
}


def load_challenge_case(shared_data, number):
    """images (X, Y, Z, E) complex, TE (s), B0 (T), mask (PrecessionIsClockwise = 1: as stored)."""
    path = shared_data / "ismrm2012_fwchallenge" / f"{number}.mat"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    case = read_fatwater_mat(path)
    assert case.layout == "imDataParams" and case.mask is not None
    return case.signal, case.te_s, case.b0_t, case.mask


def roi_medians(pdff, number):
    """Median PDFF (percent) of the fat and water boxes of a challenge case."""
    fat_box, water_box, _ = CHALLENGE_ROIS[number]
    return float(np.median(pdff[fat_box])), float(np.median(pdff[water_box]))


@pytest.mark.realdata
@pytest.mark.parametrize(
    "number",
    [pytest.param(n, marks=pytest.mark.xfail(reason=KNOWN_FAILURES[n], strict=True))
     if n in KNOWN_FAILURES else n for n in CHALLENGE_ROIS],
)
def test_challenge_case_fat_and_water_rois(shared_data, number):
    images, te, b0_t, mask = load_challenge_case(shared_data, number)
    result = separate_fat_water(images, te, b0_t, mask=mask, voxel_size_mm=(1.5, 1.5, 5.0))
    fat_box, water_box, organ = CHALLENGE_ROIS[number]
    assert result.mask[fat_box].all() and result.mask[water_box].all()
    fat, water = roi_medians(result.pdff_percent, number)
    print(f"case {number}: subcutaneous fat PDFF {fat:.1f} %, {organ} PDFF {water:.1f} %")
    assert fat > 80.0
    assert water < 15.0


# -- bipolar readouts (pdff_marcsous, M. Bydder's example data) ------------------------------
# Both are stored in the convention of the fat-water toolbox (fat at negative frequency, no
# conjugation): on the vial phantom the stored data give the same fat fraction as a magnitude-
# only fit, which does not depend on the precession sense, and conjugating them does not.


def load_marcsous(shared_data, name):
    """signal (X, Y, 1, E) complex, TE (s), B0 (T) of a single-slice pdff_marcsous file."""
    path = shared_data / "pdff_marcsous" / f"{name}.mat"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    case = read_fatwater_mat(path)
    return case.signal, case.te_s, case.b0_t


def magnitude_only_pdff(signal_e, te_s, b0_t):
    """Median fat fraction (percent) of a voxel set from a magnitude-only multi-peak fit.

    ``|S(t)| = ρ |(1 − η) + η Σ α_p e^{i2πf_p t}| e^{−R2* t}`` on a grid of η and R2*: the
    magnitude does not change under conjugation, so this reference is independent of the
    precession convention and of the odd/even phase error of a bipolar readout.
    """
    from qsmliver.fatwater.spectra import fat_basis

    basis = np.asarray(fat_basis("ismrm", te_s, b0_t)).ravel()
    eta = np.linspace(0.0, 1.0, 201)
    r2 = np.linspace(0.0, 300.0, 151)
    model = (np.abs((1 - eta)[:, None, None] + eta[:, None, None] * basis)
             * np.exp(-r2[None, :, None] * te_s))  # (η, R2*, E)
    magnitude = np.abs(signal_e)
    projection = np.einsum("ve,fre->vfr", magnitude, model) ** 2 / (model ** 2).sum(-1)
    best = projection.reshape(len(magnitude), -1).argmax(axis=1) // r2.size
    return 100.0 * float(np.median(eta[best]))


@pytest.mark.realdata
def test_bipolar_liver_slice(shared_data):
    """3 T, 12 echoes 1.1 ms apart, bipolar; the readout runs along axis 1 (the data author's
    default readout dimension for this file). The correction must make odd and even echoes
    consistent (the fit residual in the liver falls, measured 0.165 -> 0.059) and keep the
    liver water-dominant (measured median 0.7 %, 99th percentile 4.4 %).

    The slice is from a lean subject: the subcutaneous fat is a 1-3 voxel ring at the skin
    with partial volume, so no fat box can be placed in it (not asserted here).
    """
    from qsmliver.fatwater import correct_bipolar_phase

    signal, te, b0 = load_marcsous(shared_data, "liver_12echo_bipolar")
    liver = (slice(104, 140), slice(56, 100), 0)
    raw = separate_fat_water(signal, te, b0, voxel_size_mm=(1.5, 1.5, 8.0))
    corrected, info = correct_bipolar_phase(signal, te, readout_axis=1)
    result = separate_fat_water(corrected, te, b0, voxel_size_mm=(1.5, 1.5, 8.0))
    residual_raw = float(np.median(raw.residual[liver]))
    residual = float(np.median(result.residual[liver]))
    print(f"liver fit residual {residual_raw:.3f} -> {residual:.3f}; "
          f"slope {info['slope_rad_per_voxel']:.4f} rad/voxel")
    assert residual < 0.5 * residual_raw
    assert np.median(result.pdff_percent[liver]) < 5.0
    assert np.percentile(result.pdff_percent[liver], 99) < 15.0


@pytest.mark.realdata
def test_bipolar_vial_phantom_is_monotonic_and_matches_magnitude_fit(shared_data):
    """1.5 T, 16 echoes, bipolar: three vials (water, a low-fat and a ~25 % fat emulsion,
    by their magnitude decay). With the correction along axis 0 (the estimated odd/even phase
    ramp is 8x steeper along axis 0 than along axis 1: the readout axis), the vials' PDFF is
    strictly increasing and agrees with the magnitude-only fit within 2 points (measured
    0.0 / 1.4 / 25.2 % against 0.0 / 2.5 / 25.5 %); without it the low-fat vial reads 5.9 %.
    """
    from qsmliver.fatwater import correct_bipolar_phase

    signal, te, b0 = load_marcsous(shared_data, "phantom_16echo_bipolar")
    vials = {"water": (slice(72, 92), slice(24, 44), 0),
             "low fat": (slice(80, 100), slice(84, 104), 0),
             "fat": (slice(28, 44), slice(60, 76), 0)}
    slopes = [abs(correct_bipolar_phase(signal, te, readout_axis=a)[1]["slope_rad_per_voxel"])
              for a in (0, 1)]
    assert slopes[0] > 4 * slopes[1]
    corrected, _ = correct_bipolar_phase(signal, te, readout_axis=0)
    result = separate_fat_water(corrected, te, b0, voxel_size_mm=(1.5, 1.5, 5.0))
    measured = [float(np.median(result.pdff_percent[box])) for box in vials.values()]
    reference = [magnitude_only_pdff(signal[box].reshape(-1, te.size), te, b0)
                 for box in vials.values()]
    print("vial PDFF", np.round(measured, 1), "magnitude-only", np.round(reference, 1))
    assert measured[0] < measured[1] < measured[2]
    assert measured[2] - measured[0] > 15.0
    assert np.max(np.abs(np.subtract(measured, reference))) < 2.0
    raw = separate_fat_water(signal, te, b0, voxel_size_mm=(1.5, 1.5, 5.0))
    measured_raw = [float(np.median(raw.pdff_percent[box])) for box in vials.values()]
    assert (np.max(np.abs(np.subtract(measured_raw, reference)))
            > np.max(np.abs(np.subtract(measured, reference))))
