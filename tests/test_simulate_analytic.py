"""The analytic sphere: closed-form field values and the GRE signal built from it."""

from __future__ import annotations

import numpy as np
import pytest

from qsmliver.data import GYROMAGNETIC_RATIO_HZ_PER_T
from qsmliver.simulate import sphere_field_ppm, sphere_gre


def test_sphere_field_on_axis_and_equator():
    dchi, radius = 0.3, 6.0
    field, inside = sphere_field_ppm((41, 41, 41), (1, 1, 1), radius_mm=radius,
                                     delta_chi_ppm=dchi)
    c = 20
    # On the B0 axis at r: 2Δχ/3 (a/r)^3; on the equator: -Δχ/3 (a/r)^3
    for r in (7, 10, 15):
        assert field[c, c, c + r] == pytest.approx(2 * dchi / 3 * (radius / r) ** 3, rel=1e-12)
        assert field[c + r, c, c] == pytest.approx(-dchi / 3 * (radius / r) ** 3, rel=1e-12)
    # Magic angle: no field at 54.7° from B0
    assert np.all(field[inside] == 0)
    assert inside.sum() == pytest.approx(4 / 3 * np.pi * radius**3, rel=0.05)


def test_sphere_field_tilted_b0_is_rotated_pattern():
    field_z, _ = sphere_field_ppm((31, 31, 31), (1, 1, 1), radius_mm=4, delta_chi_ppm=0.2)
    field_x, _ = sphere_field_ppm((31, 31, 31), (1, 1, 1), radius_mm=4, delta_chi_ppm=0.2,
                                  b0_dir=(1, 0, 0))
    np.testing.assert_allclose(np.transpose(field_z, (2, 1, 0)), field_x, atol=1e-15)


def test_sphere_field_anisotropic_voxels_use_mm():
    field, _ = sphere_field_ppm((21, 21, 21), (0.5, 0.5, 2.0), radius_mm=3, delta_chi_ppm=0.3)
    # 4 voxels of 2 mm along z = 8 mm from the centre
    assert field[10, 10, 14] == pytest.approx(2 * 0.3 / 3 * (3 / 8) ** 3, rel=1e-12)


def test_sphere_gre_phase_evolves_with_field():
    gre, truth = sphere_gre(shape=(32, 32, 32), b0_t=3.0, te_s=(0.002, 0.004))
    assert gre.signal.shape == (32, 32, 32, 2)
    expected_hz = truth["field_ppm"] * 1e-6 * GYROMAGNETIC_RATIO_HZ_PER_T * 3.0
    np.testing.assert_allclose(truth["field_hz"], expected_hz)
    phase_diff = np.angle(gre.signal[..., 1] * np.conj(gre.signal[..., 0]))
    np.testing.assert_allclose(phase_diff, np.angle(np.exp(2j * np.pi * expected_hz * 0.002)),
                               atol=2e-5)
    np.testing.assert_allclose(np.abs(gre.signal[..., 0]), np.exp(-25 * 0.002), rtol=1e-6)
    world_centre = gre.affine @ np.array([15.5, 15.5, 15.5, 1.0])
    np.testing.assert_allclose(world_centre[:3], 0, atol=1e-12)


def test_sphere_gre_noise_level():
    gre, _ = sphere_gre(shape=(24, 24, 24), snr=50.0, r2star_per_s=0.0, delta_chi_ppm=0.0)
    noise = gre.signal[..., 0] - 1.0
    assert np.std(noise.real) == pytest.approx(1 / 50 / np.sqrt(2), rel=0.05)
