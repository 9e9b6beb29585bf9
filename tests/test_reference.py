"""χ referencing: mean, CSF/ROI, none, and the CSF mask from R2*."""

import numpy as np
import pytest

from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.reference import csf_mask_from_r2star, reference_chi


def _volume():
    rng = np.random.default_rng(0)
    chi = rng.normal(0.05, 0.02, (20, 20, 20))
    mask = np.zeros(chi.shape, bool)
    mask[2:18, 2:18, 2:18] = True
    roi = np.zeros(chi.shape, bool)
    roi[8:12, 8:12, 8:12] = True
    return chi, mask, roi


def test_mean_reference(xp):
    chi, mask, _ = _volume()
    out, info = reference_chi(xp.asarray(chi), xp.asarray(mask), "mean")
    out = np.asarray(out.get() if hasattr(out, "get") else out)
    assert abs(out[mask].mean()) < 1e-12 and np.all(out[~mask] == 0)
    assert info["ChiReference"] == "mean"
    assert info["ChiReferenceOffset_ppm"] == pytest.approx(chi[mask].mean())


def test_roi_reference_and_none():
    chi, mask, roi = _volume()
    out, info = reference_chi(chi, mask, "csf", roi=roi)
    assert abs(out[roi].mean()) < 1e-12 and info["ChiReferenceVoxels"] == roi.sum()
    # differences between voxels are unchanged by referencing
    np.testing.assert_allclose(np.diff(out[mask]), np.diff(chi[mask]), atol=1e-12)
    unchanged, info = reference_chi(chi, mask, "none")
    np.testing.assert_array_equal(unchanged[mask], chi[mask])
    assert info["ChiReferenceOffset_ppm"] == 0.0


def test_reference_errors():
    chi, mask, _roi = _volume()
    with pytest.raises(QSMConfigError, match="unknown"):
        reference_chi(chi, mask, "median")
    with pytest.raises(QSMConfigError, match="needs a region"):
        reference_chi(chi, mask, "roi")
    with pytest.raises(QSMInputError, match="empty"):
        reference_chi(chi, mask, "roi", roi=~mask)


def test_csf_mask_from_r2star_finds_ventricle():
    r2s = np.full((30, 30, 30), 20.0)
    r2s[13:17, 12:18, 13:17] = 3.0  # ventricle
    r2s[0:3, :, :] = 2.0  # outside the brain's eroded core
    mask = np.zeros(r2s.shape, bool)
    mask[3:27, 3:27, 3:27] = True
    csf = csf_mask_from_r2star(r2s, mask, (1.0, 1.0, 1.0))
    assert csf.sum() == 4 * 6 * 4 and csf[15, 15, 15]


# -- liver references: subcutaneous fat and muscle with an assumed χ ------------------------
def test_sat_and_muscle_references_with_a_reference_value(xp):
    chi, mask, roi = _volume()
    out, info = reference_chi(xp.asarray(chi), xp.asarray(mask), "sat", roi=xp.asarray(roi),
                              roi_value_ppm=0.55)
    out = np.asarray(out.get() if hasattr(out, "get") else out)
    assert out[roi].mean() == pytest.approx(0.55, abs=1e-12)
    assert np.all(out[~mask] == 0)
    np.testing.assert_allclose(out[mask] - chi[mask], 0.55 - chi[roi].mean(), atol=1e-12)
    assert info == {"ChiReference": "sat", "ChiReferenceOffset_ppm": pytest.approx(
        chi[roi].mean()), "ChiReferenceValue_ppm": 0.55, "ChiReferenceVoxels": int(roi.sum())}
    out, info = reference_chi(chi, mask, "muscle", roi=roi, roi_value_ppm=-0.03)
    assert out[roi].mean() == pytest.approx(-0.03, abs=1e-12)
    assert info["ChiReference"] == "muscle" and info["ChiReferenceValue_ppm"] == -0.03


def test_reference_value_defaults_and_errors():
    chi, mask, roi = _volume()
    _, info = reference_chi(chi, mask, "mean")
    assert info["ChiReferenceValue_ppm"] == 0.0
    _, info = reference_chi(chi, mask, "none")
    assert info["ChiReferenceValue_ppm"] == 0.0
    out, _ = reference_chi(chi, mask, "mean", roi_value_ppm=1.0)
    assert out[mask].mean() == pytest.approx(1.0)
    with pytest.raises(QSMConfigError, match="needs a region"):
        reference_chi(chi, mask, "sat")
    with pytest.raises(QSMConfigError, match="needs a region"):
        reference_chi(chi, mask, "muscle")
    with pytest.raises(QSMConfigError, match="none"):
        reference_chi(chi, mask, "none", roi_value_ppm=0.5)
    with pytest.raises(QSMConfigError, match="roi_value_ppm"):
        reference_chi(chi, mask, "sat", roi=roi, roi_value_ppm=float("nan"))
    with pytest.raises(QSMInputError, match="does not match"):
        reference_chi(chi, mask, "sat", roi=roi[:-1])
    with pytest.raises(QSMInputError, match="empty"):
        reference_chi(chi, mask, "muscle", roi=~mask)
