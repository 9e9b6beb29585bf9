"""Abdomen masks: body (tissue without air, lungs, bowel gas) and subcutaneous fat."""

import numpy as np
import pytest

from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.mask import body_mask, body_surface_depth_mm, subcutaneous_fat_mask
from qsmliver.simulate import abdomen_phantom


def _numpy(a):
    return np.asarray(a.get() if hasattr(a, "get") else a)


@pytest.fixture(scope="module")
def abdomen():
    """The phantom with water/fat amplitudes measured with Rician noise (σ = 5 % of tissue)."""
    ph = abdomen_phantom(shape=(48, 40, 20), snr=None, lic_mg_per_g=8.0)
    rng = np.random.default_rng(7)
    sigma = 0.05

    def noisy(x):
        return np.abs(x + sigma * (rng.standard_normal(x.shape)
                                   + 1j * rng.standard_normal(x.shape)))

    water, fat = noisy(ph.truth["water"]), noisy(ph.truth["fat"])
    label = {name: value for value, name in ph.label_names.items()}
    return {"ph": ph, "water": water, "fat": fat, "pdff": 100 * fat / (water + fat),
            "label": label}


def test_body_mask_matches_tissue_and_excludes_air(xp, abdomen):
    ph = abdomen["ph"]
    body = _numpy(body_mask(xp.asarray(abdomen["water"]), xp.asarray(abdomen["fat"]),
                            ph.gre.voxel_size_mm))
    tissue = ph.masks["tissue"]
    dice = 2 * (body & tissue).sum() / (body.sum() + tissue.sum())
    assert dice >= 0.95
    for name in ("lungs", "bowel_gas", "air"):
        region = ph.labels == abdomen["label"][name]
        assert (body & region).sum() < 0.05 * region.sum(), name


def test_subcutaneous_fat_mask_is_subcutaneous_fat(xp, abdomen):
    ph = abdomen["ph"]
    body = body_mask(xp.asarray(abdomen["water"]), xp.asarray(abdomen["fat"]),
                     ph.gre.voxel_size_mm)
    sat = _numpy(subcutaneous_fat_mask(xp.asarray(abdomen["pdff"]), body, ph.gre.voxel_size_mm))
    labels = ph.labels[sat]
    assert sat.sum() > 100
    assert (labels == abdomen["label"]["subcutaneous_fat"]).mean() >= 0.95
    # the visceral fat (same PDFF) is left out
    assert (labels == abdomen["label"]["visceral_fat"]).sum() == 0


def test_body_surface_depth_and_cavities():
    body = np.zeros((30, 30, 8), bool)
    body[5:25, 5:25] = True  # a slab through every slice: its top and bottom are the FOV's
    body[12:18, 12:18, 2:6] = False  # an enclosed gas pocket (6 x 6 x 4 voxels)
    depth = body_surface_depth_mm(body, (2.0, 2.0, 3.0))
    assert depth[5, 15, 0] == pytest.approx(2.0)  # outer layer, at the FOV edge too
    assert depth[15, 15, 1] == pytest.approx(20.0)  # the pocket is not a surface
    assert depth[0, 0, 0] == 0
    water = body * 1.0
    kept = body_mask(water, np.zeros_like(water), (2.0, 2.0, 3.0))
    assert not kept[14, 14, 3]
    filled = body_mask(water, np.zeros_like(water), (2.0, 2.0, 3.0), fill_holes_ml=2.0)
    assert filled[14, 14, 3]  # 144 voxels of 12 mm³ = 1.7 mL < 2 mL
    not_filled = body_mask(water, np.zeros_like(water), (2.0, 2.0, 3.0), fill_holes_ml=1.0)
    assert not not_filled[14, 14, 3]


def test_mask_bad_input(abdomen):
    water, fat, pdff = abdomen["water"], abdomen["fat"], abdomen["pdff"]
    voxel = abdomen["ph"].gre.voxel_size_mm
    with pytest.raises(QSMInputError, match="does not match"):
        body_mask(water, fat[:-1], voxel)
    with pytest.raises(QSMInputError, match="3-D"):
        body_mask(water[..., 0], fat[..., 0], voxel)
    with pytest.raises(QSMInputError):
        body_mask(np.zeros_like(water), np.zeros_like(fat), voxel)
    with pytest.raises(QSMInputError, match="voxel_size_mm"):
        body_mask(water, fat, (1.0, 1.0))
    with pytest.raises(QSMConfigError, match="threshold_scale"):
        body_mask(water, fat, voxel, threshold_scale=-1)
    body = abdomen["ph"].masks["tissue"]
    with pytest.raises(QSMInputError, match="does not match"):
        subcutaneous_fat_mask(pdff, body[:, :-1], voxel)
    with pytest.raises(QSMInputError, match="empty"):
        subcutaneous_fat_mask(pdff, np.zeros_like(body), voxel)
    with pytest.raises(QSMInputError, match="no subcutaneous fat"):
        subcutaneous_fat_mask(np.zeros_like(pdff), body, voxel)
    with pytest.raises(QSMConfigError, match="min_pdff_percent"):
        subcutaneous_fat_mask(pdff, body, voxel, min_pdff_percent=120)


def test_body_mask_survives_coil_shading_and_an_outlier_voxel():
    """A body whose signal falls to a fifth from front to back (receive-coil shading), in
    Rician-like noise, with one fitted voxel 1000x too bright: the whole body is kept
    (Otsu of the linear signal cut the back off, or kept only the outlier)."""
    rng = np.random.default_rng(0)
    shape = (64, 64, 4)
    x, y = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    body = ((x - 32) / 26.0) ** 2 + ((y - 32) / 20.0) ** 2 <= 1.0
    shading = np.interp(x, [6, 58], [1.0, 0.2])  # anterior (low x) bright
    water = np.repeat((100.0 * shading * body)[..., None], 4, axis=2)
    water = np.abs(water + rng.normal(0, 1.0, shape) + 1j * rng.normal(0, 1.0, shape))
    water[3, 3, 0] = 1e5
    mask = body_mask(water, np.zeros(shape), (2.0, 2.0, 4.0))
    truth = np.repeat(body[..., None], 4, axis=2)
    assert (mask & truth).sum() / truth.sum() > 0.98
    assert (mask & ~truth).sum() < 0.01 * truth.sum()
