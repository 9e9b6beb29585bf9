"""Literature LIC calibrations: formulas at three points, ranges, field strength, maps."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from qsmliver import backend
from qsmliver.calibrate import (
    CALIBRATIONS,
    Calibration,
    CalibrationFieldWarning,
    CalibrationRangeWarning,
    chi_calibration,
    convert_to_lic,
    get_calibration,
    list_calibrations,
)
from qsmliver.errors import QSMConfigError
from qsmliver.simulate.iron import lic_to_chi_ppm, lic_to_r2star

# name: (field, published formula written out independently, three points inside the range).
# Verification status (qsmliver.calibrate.literature docstring): hernando2023_1.5t against the
# article abstract (pubs.rsna.org/doi/10.1148/radiol.213256); the others as widely reproduced
# (independent calculators/implementations agree), not against the papers themselves.
PUBLISHED = {
    "wood2005": (1.5, lambda r: 0.0254 * r + 0.202, (50.0, 300.0, 1000.0)),
    "hankins2009": (1.5, lambda r: 0.02802 * r - 0.4549, (50.0, 300.0, 1000.0)),
    "garbowski2014": (1.5, lambda r: 0.0290 * r**1.014, (50.0, 300.0, 1000.0)),
    "hernando2023_1.5t": (1.5, lambda r: -0.16 + 2.603e-2 * r, (50.0, 300.0, 1000.0)),
    "hernando2023_3t": (3.0, lambda r: -0.03 + 0.01349 * r, (60.0, 500.0, 1800.0)),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_r2star_calibrations_reproduce_published_formulas(name):
    field, formula, points = PUBLISHED[name]
    for r2star in points:
        assert convert_to_lic(r2star, name, b0_t=field) == pytest.approx(formula(r2star),
                                                                          rel=1e-12)
    cal = get_calibration(name)
    assert cal.measure == "r2star" and cal.field_strength_t == field and cal.citation


def test_hand_checked_values():
    # Wood 2005 at R2* = 100 1/s: 0.0254·100 + 0.202 = 2.742 mg/g
    assert convert_to_lic(100.0, "wood2005", b0_t=1.5) == pytest.approx(2.742)
    # Hernando 2023 3 T at R2* = 400: −0.03 + 0.01349·400 = 5.366
    assert convert_to_lic(400.0, "hernando2023_3t", b0_t=3.0) == pytest.approx(5.366)
    # Garbowski 2014 at R2* = 500: 0.0290·500^1.014 = 15.94...
    assert convert_to_lic(500.0, "garbowski2014", b0_t=1.5) == pytest.approx(
        0.0290 * np.exp(1.014 * np.log(500.0)))
    # Garbowski's T2* form 31.94·T2*[ms]^-1.014 (used by independent calculators) is the same
    # curve: 0.0290·1000^1.014 = 31.94
    assert 0.0290 * 1000.0**1.014 == pytest.approx(31.94, abs=0.005)
    assert convert_to_lic(1000.0 / 2.5, "garbowski2014", b0_t=1.5) == pytest.approx(
        31.94 * 2.5**-1.014, rel=2e-4)
    # Hankins 2009 as HIC in ug/g = -454.85 + 28.02·R2* (independent implementation)
    assert convert_to_lic(300.0, "hankins2009", b0_t=1.5) == pytest.approx(
        (-454.85 + 28.02 * 300.0) / 1000.0, abs=1e-4)


def test_ranges_from_the_abstracts():
    """Wood 2005 abstract: HIC 1.33-32.9 mg/g; St Pierre 2005 abstract: LIC 0.3-42.7 mg/g.
    Each range is the R2* (R2) interval mapped to exactly those LIC ends."""
    lo, hi = get_calibration("wood2005").valid_range
    assert convert_to_lic(lo, "wood2005") == pytest.approx(1.33, abs=0.002)
    assert convert_to_lic(hi, "wood2005") == pytest.approx(32.9, abs=0.002)
    lo, hi = get_calibration("stpierre2005").valid_range
    assert convert_to_lic(lo, "stpierre2005") == pytest.approx(0.3, abs=0.01)
    assert convert_to_lic(hi, "stpierre2005") == pytest.approx(42.7, abs=0.1)


def test_every_calibration_says_what_was_verified():
    for cal in CALIBRATIONS.values():
        assert cal.verification
    for name in ("hankins2009", "garbowski2014", "hernando2023_3t", "stpierre2005"):
        assert "not verified" in get_calibration(name).verification.lower()
    assert "verified (article abstract)" in get_calibration("hernando2023_1.5t").verification
    assert "Multicenter reproducibility of liver iron quantification with 1.5-T and 3.0-T" in (
        get_calibration("hernando2023_3t").citation)


def test_stpierre_inverts_the_r2_curve_and_the_quoted_inverse():
    """Exact inversion of R2 = 6.88 + 26.06·L^0.701 − 0.438·L^1.402 (curve not verified
    against the paper). The closed-form inverse often quoted with it,
    (29.75 − √(900.7 − 2.283·R2))^1.424, follows from the same coefficients except for the
    exponent (1/0.701 = 1.4265), hence agreement to about 1 % only."""
    for lic in (1.0, 7.0, 25.0):
        u = lic**0.701
        r2 = 6.88 + 26.06 * u - 0.438 * u * u
        assert convert_to_lic(r2, "stpierre2005", b0_t=1.5) == pytest.approx(lic, rel=1e-9)
        quoted = (29.75 - np.sqrt(900.7 - 2.283 * r2)) ** 1.424
        assert convert_to_lic(r2, "stpierre2005", b0_t=1.5) == pytest.approx(quoted, rel=1e-2)
        exponent_fixed = (29.75 - np.sqrt(900.7 - 2.283 * r2)) ** (1 / 0.701)
        assert convert_to_lic(r2, "stpierre2005", b0_t=1.5) == pytest.approx(exponent_fixed,
                                                                              rel=2e-3)
    assert 26.06 / (2 * 0.438) == pytest.approx(29.75, abs=0.005)
    assert (26.06**2 + 4 * 0.438 * 6.88) / (2 * 0.438) ** 2 == pytest.approx(900.7, abs=0.05)
    assert 4 * 0.438 / (2 * 0.438) ** 2 == pytest.approx(2.283, abs=0.001)
    assert get_calibration("stpierre2005").valid_range == pytest.approx((18.0, 284.5), abs=0.1)


def test_chi_calibration_is_consistent_with_the_phantom_and_overridable():
    for lic in (0.5, 4.0, 20.0):
        assert convert_to_lic(lic_to_chi_ppm(lic), "chi_linear") == pytest.approx(lic)
    custom = chi_calibration(0.25, 0.0)
    assert convert_to_lic(1.0, custom) == pytest.approx(4.0)
    with pytest.raises(QSMConfigError, match="positive"):
        chi_calibration(-1.0)


def test_phantom_link_round_trips_through_wood_and_hernando():
    assert convert_to_lic(lic_to_r2star(5.0, 1.5), "wood2005", b0_t=1.5) == pytest.approx(5.0)
    assert convert_to_lic(lic_to_r2star(5.0, 3.0), "hernando2023_3t",
                          b0_t=3.0) == pytest.approx(5.0)


@pytest.mark.parametrize("name", sorted(CALIBRATIONS))
def test_outside_range_warns(name):
    cal = get_calibration(name)
    lo, hi = cal.valid_range
    field = cal.field_strength_t
    inside = 0.5 * (lo + hi)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        convert_to_lic(inside, name, b0_t=field)  # no warning inside
    with pytest.warns(CalibrationRangeWarning, match="outside the range"):
        convert_to_lic(hi * 1.5 + 1.0, name, b0_t=field)


@pytest.mark.parametrize("name", [n for n, c in CALIBRATIONS.items() if c.field_strength_t])
def test_wrong_field_strength_refused_unless_allowed(name):
    cal = get_calibration(name)
    other = 3.0 if cal.field_strength_t == 1.5 else 1.5
    value = 0.5 * sum(cal.valid_range)
    with pytest.raises(QSMConfigError, match="derived at"):
        convert_to_lic(value, name, b0_t=other)
    with pytest.warns(CalibrationFieldWarning):
        lic = convert_to_lic(value, name, b0_t=other, allow_field_mismatch=True)
    assert lic == pytest.approx(cal.apply(value))


def test_maps_with_mask_on_each_backend(xp):
    r2s = xp.asarray(np.array([[[0.0, 100.0], [300.0, 800.0]]]))
    mask = r2s > 0
    lic = convert_to_lic(r2s, "wood2005", b0_t=1.5, mask=mask)
    assert backend.get_array_module(lic) is xp
    host = backend.to_numpy(lic)
    assert host[0, 0, 0] == 0.0
    np.testing.assert_allclose(host[mask.get() if xp is not np else mask],
                               0.0254 * np.array([100.0, 300.0, 800.0]) + 0.202)


def test_registry_lookup_and_serialisation():
    assert {c.name for c in list_calibrations("r2")} == {"stpierre2005"}
    assert len(list_calibrations("r2star")) == 5
    with pytest.raises(QSMConfigError, match="unknown LIC calibration"):
        get_calibration("nope")
    with pytest.raises(QSMConfigError, match="converts r2star"):
        convert_to_lic(1.0, "wood2005", measure="chi")
    for cal in CALIBRATIONS.values():
        text = json.dumps(cal.to_dict())
        again = Calibration.from_dict(json.loads(text))
        assert again == cal
