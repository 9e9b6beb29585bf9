"""Paraspinal muscle reference region: orientation from the affine, the abdomen phantom, real
slices (ISMRM 2012 case 12 and the 3 T bipolar liver slice; skipped when absent)."""

from __future__ import annotations

import numpy as np
import pytest

from qsmliver.errors import QSMConfigError, QSMInputError
from qsmliver.fatwater import correct_bipolar_phase, separate_fat_water
from qsmliver.io.fatwater_mat import read_fatwater_mat
from qsmliver.mask import anatomical_axes, body_mask, paraspinal_muscle_mask
from qsmliver.simulate import abdomen_phantom


def _label(phantom, name):
    return phantom.labels == next(v for v, n in phantom.label_names.items() if n == name)


@pytest.fixture(scope="module")
def separated():
    """Abdomen phantom (3.9-4 mm voxels) and its fat-water separation."""
    ph = abdomen_phantom(shape=(96, 80, 24), snr=60, seed=5)
    g = ph.gre
    fw = separate_fat_water(g.signal, g.te_s, g.b0_t, mask=ph.masks["tissue"],
                            voxel_size_mm=g.voxel_size_mm)
    body = body_mask(np.abs(fw.water), np.abs(fw.fat), g.voxel_size_mm)
    return ph, fw, body


def test_anatomical_axes_follow_the_affine():
    ras = np.diag([2.0, 2.0, 3.0, 1.0])
    assert anatomical_axes(ras) == {"right": (0, 1), "anterior": (1, 1), "superior": (2, 1)}
    lps = np.diag([-2.0, -2.0, 3.0, 1.0])
    assert anatomical_axes(lps) == {"right": (0, -1), "anterior": (1, -1), "superior": (2, 1)}
    # rows run posterior, columns to the patient's left (a radiological display), slices up
    image = np.zeros((4, 4))
    image[:3, 0] = (0, -1.5, 0)
    image[:3, 1] = (-1.5, 0, 0)
    image[:3, 2] = (0, 0, 5.0)
    image[3, 3] = 1
    assert anatomical_axes(image) == {"right": (1, -1), "anterior": (0, -1), "superior": (2, 1)}
    with pytest.raises(QSMInputError, match="anatomical axes"):
        anatomical_axes(np.array([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0],
                                  [0.0, 0.2, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]))


def test_phantom_paraspinal_muscle_is_found(separated):
    ph, fw, body = separated
    mask = paraspinal_muscle_mask(fw.pdff_percent, np.abs(fw.water), body, ph.gre.affine)
    muscle = _label(ph, "muscle")
    precision = (mask & muscle).sum() / mask.sum()
    print(f"paraspinal mask: {int(mask.sum())} voxels, {100 * precision:.1f} % muscle")
    assert precision > 0.95
    # both sides of the spine, posterior to it, and no subcutaneous fat
    spine = _label(ph, "spine")
    spine_lr, spine_ap = np.argwhere(spine)[:, :2].mean(axis=0)
    voxels = np.argwhere(mask)
    assert (voxels[:, 0] < spine_lr).sum() > 20 and (voxels[:, 0] > spine_lr).sum() > 20
    assert np.all(voxels[:, 1] < spine_ap)
    assert not (mask & _label(ph, "subcutaneous_fat")).any()
    # the truth χ in the region is the muscle's
    assert abs(ph.truth["chi_ppm"][mask].mean() - (-0.03)) < 0.01


def test_paraspinal_mask_does_not_depend_on_the_array_order(separated):
    """The same anatomy stored transposed and flipped, with the matching affine, gives the
    same region."""
    ph, fw, body = separated
    reference = paraspinal_muscle_mask(fw.pdff_percent, np.abs(fw.water), body, ph.gre.affine)

    def reorder(image):
        return np.flip(np.transpose(image, (1, 0, 2)), axis=0)

    # new axis 0 = old axis 1 reversed (anterior -> posterior), new axis 1 = old axis 0
    affine = np.array(ph.gre.affine, dtype=float)
    old = affine[:3, :3].copy()
    n_old_1 = fw.pdff_percent.shape[1]
    new = np.eye(4)
    new[:3, 0] = -old[:, 1]
    new[:3, 1] = old[:, 0]
    new[:3, 2] = old[:, 2]
    new[:3, 3] = affine[:3, 3] + old[:, 1] * (n_old_1 - 1)
    moved = paraspinal_muscle_mask(reorder(fw.pdff_percent), reorder(np.abs(fw.water)),
                                   reorder(body), new)
    assert np.array_equal(moved, reorder(reference))


def test_paraspinal_mask_errors(separated):
    ph, fw, body = separated
    water = np.abs(fw.water)
    with pytest.raises(QSMInputError, match="does not match"):
        paraspinal_muscle_mask(fw.pdff_percent, water[:-1], body, ph.gre.affine)
    with pytest.raises(QSMInputError, match="empty"):
        paraspinal_muscle_mask(fw.pdff_percent, water, np.zeros_like(body), ph.gre.affine)
    with pytest.raises(QSMConfigError, match="lateral_fraction"):
        paraspinal_muscle_mask(fw.pdff_percent, water, body, ph.gre.affine,
                               medial_fraction=0.3, lateral_fraction=0.2)
    with pytest.raises(QSMConfigError, match="max_pdff_percent"):
        paraspinal_muscle_mask(fw.pdff_percent, water, body, ph.gre.affine,
                               max_pdff_percent=120)
    with pytest.raises(QSMConfigError, match="erode_mm"):
        paraspinal_muscle_mask(fw.pdff_percent, water, body, ph.gre.affine, erode_mm=-1.0)
    # an all-fat body has no muscle
    with pytest.raises(QSMInputError, match="no paraspinal muscle"):
        paraspinal_muscle_mask(np.full(body.shape, 95.0), water, body, ph.gre.affine)


# -- real slices ----------------------------------------------------------------------------

def _display_affine(voxel_mm):
    """Rows run posterior, columns to the patient's left (how these .mat slices are stored:
    the liver is on the low-column side, the spine at the high-row side)."""
    affine = np.eye(4)
    affine[:3, 0] = (0.0, -voxel_mm[0], 0.0)
    affine[:3, 1] = (-voxel_mm[1], 0.0, 0.0)
    affine[:3, 2] = (0.0, 0.0, voxel_mm[2])
    return affine


@pytest.mark.realdata
@pytest.mark.parametrize("case", ["ismrm2012-case12", "liver_12echo_bipolar"])
def test_real_slices_paraspinal_muscle(shared_data, case):
    """Both erector spinae are found either side of the spine, in the posterior part of the
    body, water-dominant (measured median PDFF 4.3 % on case 12, 0.0 % on the bipolar slice).
    On the bipolar slice the spine is at column 127 (the spinal canal, by looking), and the
    left arm touches the trunk; the midline from the anterior body wall ignores it."""
    if case == "ismrm2012-case12":
        path = shared_data / "ismrm2012_fwchallenge" / "12.mat"
        voxel, spine_col = (1.5, 1.5, 5.0), 127
    else:
        path = shared_data / "pdff_marcsous" / "liver_12echo_bipolar.mat"
        voxel, spine_col = (1.5, 1.5, 8.0), 127
    if not path.is_file():
        pytest.skip(f"{path} not available")
    data = read_fatwater_mat(path)
    signal = data.signal
    if case == "liver_12echo_bipolar":
        signal, _ = correct_bipolar_phase(signal, data.te_s, readout_axis=1)
    fw = separate_fat_water(signal, data.te_s, data.b0_t, mask=data.mask,
                            voxel_size_mm=voxel)
    body = body_mask(np.abs(fw.water), np.abs(fw.fat), voxel)
    mask = paraspinal_muscle_mask(fw.pdff_percent, np.abs(fw.water), body,
                                  _display_affine(voxel))
    pdff = float(np.median(fw.pdff_percent[mask]))
    print(f"{case}: {int(mask.sum())} voxels, median PDFF {pdff:.1f} %")
    assert pdff < 15.0
    cols = np.argwhere(mask)[:, 1]
    rows = np.argwhere(mask)[:, 0]
    assert (cols < spine_col - 3).sum() > 50 and (cols > spine_col + 3).sum() > 50
    assert np.all(np.abs(cols - spine_col) < 60)  # within 9 cm of the midline
    body_rows = np.argwhere(body)[:, 0]
    depth = body_rows.max() - body_rows.min()
    assert np.all(rows > body_rows.max() - 0.35 * depth)  # posterior third


@pytest.mark.realdata
def test_body_mask_covers_a_shaded_real_slice(shared_data):
    """The 3 T bipolar slice has strong receive shading (posterior signal a fifth of the
    anterior) and one fitted voxel at 1300x the 99.9th percentile; the body mask must still
    reach the back (regression: Otsu of the linear signal kept a single voxel)."""
    path = shared_data / "pdff_marcsous" / "liver_12echo_bipolar.mat"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    data = read_fatwater_mat(path)
    signal, _ = correct_bipolar_phase(data.signal, data.te_s, readout_axis=1)
    fw = separate_fat_water(signal, data.te_s, data.b0_t, voxel_size_mm=(1.5, 1.5, 8.0))
    body = body_mask(np.abs(fw.water), np.abs(fw.fat), (1.5, 1.5, 8.0))
    rows = np.argwhere(body)[:, 0]
    assert body.sum() > 15000
    assert rows.min() < 70 and rows.max() > 170  # anterior and posterior skin
