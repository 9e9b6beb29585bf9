"""Phase scaling: detection from the value range (with vendor hints) and rescaling to radians."""

from __future__ import annotations

import numpy as np
import pytest

from qsmliver.errors import QSMInputError
from qsmliver.io.phase import detect_phase_scaling, phase_to_radians, wrap_to_pi


@pytest.fixture
def phase(rng) -> np.ndarray:
    """A wrapped phase covering [-pi, pi) densely, like real multi-echo data."""
    return wrap_to_pi(rng.uniform(-40.0, 40.0, size=(16, 16, 8, 3))).astype(np.float64)


def _circular_error(a, b) -> float:
    return float(np.max(np.abs(np.angle(np.exp(1j * (np.asarray(a) - np.asarray(b)))))))


@pytest.mark.parametrize(("values", "vendor", "expected"), [
    ([-np.pi, 0.0, np.pi - 1e-4], None, "radians"),
    ([0.0, 6.28], None, "radians"),
    ([-0.0036744, 0.0036744], None, "minmax"),            # ROMEO arbitrary units
    ([-4096.0, 4092.0], None, "siemens"),                 # dcm2niix-scaled 12-bit
    ([-4096.0, 4092.0], "SIEMENS", "siemens"),
    ([0.0, 4095.0], None, "siemens"),                     # raw 12-bit, unscaled integers
    ([0.0, 4095.0], "Siemens", "siemens"),
    ([-3142.0, 3140.47], None, "milliradians"),          # Philips, slope 1.5345 (not integers)
    ([-3142.0, 3140.47], "Philips Medical Systems", "milliradians"),
    ([-3000.0, 3000.0], "GE MEDICAL SYSTEMS", "milliradians"),
    ([-2000.0, 2000.0], "Siemens", "siemens"),
    ([17.0, 1017.0], None, "minmax"),
    ([-1e5, 1e5], None, "minmax"),
])
def test_detection_rules(values, vendor, expected):
    assert detect_phase_scaling(np.asarray(values, dtype=np.float32), vendor) == expected


def test_siemens_integers_rescale_within_quantisation(phase):
    stored = np.clip(np.round(phase * 4096 / np.pi), -4096, 4095).astype(np.int16)
    radians, scaling = phase_to_radians(stored)
    assert scaling == "siemens"
    assert radians.min() >= -np.pi and radians.max() < np.pi
    assert _circular_error(radians, phase) < np.pi / 4096 * 0.51 + 1e-6


def test_siemens_raw_unsigned_values_are_mapped_first(phase):
    raw = np.clip(np.round((phase * 4096 / np.pi + 4096) / 2), 0, 4095).astype(np.uint16)
    radians, scaling = phase_to_radians(raw, vendor="Siemens")
    assert scaling == "siemens"
    assert _circular_error(radians, phase) < 2e-3


def test_philips_milliradians(phase):
    stored = np.round(phase * 1000).astype(np.float32)
    radians, scaling = phase_to_radians(stored)
    assert scaling == "milliradians"
    assert _circular_error(radians, phase) < 1e-3


def test_minmax_maps_the_range_onto_two_pi(phase):
    stored = (phase + np.pi) * 100.0 + 17.0
    radians, scaling = phase_to_radians(stored)
    assert scaling == "minmax"
    lo, hi = stored.min(), stored.max()
    expected = wrap_to_pi((stored - lo) / (hi - lo) * 2 * np.pi - np.pi)
    assert _circular_error(radians, expected) < 1e-9
    assert _circular_error(radians, phase) < 1e-2  # exact only if the range hits +-pi


def test_explicit_scaling_overrides_detection(phase):
    tiny = phase * 1e-3
    assert phase_to_radians(tiny)[1] == "minmax"
    radians, scaling = phase_to_radians(tiny, "radians")
    assert scaling == "radians"
    np.testing.assert_allclose(radians, tiny, atol=1e-12)


def test_float64_stays_float64_and_float32_stays_float32(phase):
    assert phase_to_radians(phase)[0].dtype == np.float64
    assert phase_to_radians(phase.astype(np.float32))[0].dtype == np.float32
    assert phase_to_radians(np.zeros(4, np.int16) + 3)[0].dtype == np.float32


@pytest.mark.parametrize(("values", "scaling", "match"), [
    (np.array([0.0, 1.0]), "degrees", "unknown phase scaling"),
    (np.array([0.0, np.nan]), "auto", "NaN"),
    (np.full(5, 7.0), "minmax", "constant"),
])
def test_bad_phase_is_an_input_error_naming_the_file(values, scaling, match):
    with pytest.raises(QSMInputError, match=match) as info:
        phase_to_radians(values, scaling, path="scan_ph.nii.gz")
    assert "scan_ph.nii.gz" in str(info.value)


def test_wrap_to_pi_is_half_open():
    wrapped = wrap_to_pi(np.array([-np.pi, np.pi, 3 * np.pi, 0.5]))
    np.testing.assert_allclose(wrapped, [-np.pi, -np.pi, -np.pi, 0.5])
