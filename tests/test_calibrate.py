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

# name: (field, published formula written out independently, three points inside the range)
PUBLISHED = {
    "wood2005": (1.5, lambda r: 0.0254 * r + 0.202, (50.0, 300.0, 1000.0)),
    "hankins2009": (1.5, lambda r: 0.02802 * r - 0.4549, (50.0, 300.0, 1000.0)),
    "garbowski2014": (1.5, lambda r: 0.0290 * r**1.014, (50.0, 300.0, 1000.0)),
    "hernando2023_1.5t": (1.5, lambda r: -0.16 + 0.02603 * r, (50.0, 300.0, 1000.0)),
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


def test_stpierre_inverts_the_published_r2_curve_and_matches_the_rounded_inverse():
    for lic in (1.0, 7.0, 25.0):
        u = lic**0.701
        r2 = 6.88 + 26.06 * u - 0.438 * u * u
        assert convert_to_lic(r2, "stpierre2005", b0_t=1.5) == pytest.approx(lic, rel=1e-9)
        # the published closed-form inverse, rounded coefficients: agreement to ~1 %
        published = (29.75 - np.sqrt(900.7 - 2.283 * r2)) ** 1.424
        assert convert_to_lic(r2, "stpierre2005", b0_t=1.5) == pytest.approx(published,
                                                                              rel=1e-2)
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
