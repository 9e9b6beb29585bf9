"""Automatic brain mask and morphology."""

import numpy as np
import pytest

from qsmliver.backend import to_numpy
from qsmliver.errors import QSMInputError
from qsmliver.mask import ball, brain_mask, erode, fill_holes, largest_component, quality_mask
from qsmliver.simulate import brain_phantom


@pytest.mark.parametrize("snr", [30, 100])
def test_brain_mask_covers_truth_brain(snr):
    phantom = brain_phantom(shape=(64, 64, 48), voxel_size_mm=(3, 3, 3), snr=snr, seed=2)
    truth = phantom.masks["brain"]
    mask = brain_mask(np.abs(phantom.gre.signal), (3, 3, 3))
    assert (mask & truth).sum() / truth.sum() >= 0.90
    assert (mask & ~truth).sum() / truth.sum() < 0.05  # scalp stays out


def test_quality_step_drops_corrupted_region():
    noise = np.full((30, 30, 30), 0.1)
    noise[5:10, 5:10, 5:10] = 50.0
    mask = np.zeros_like(noise, bool)
    mask[2:28, 2:28, 2:28] = True
    kept = quality_mask(noise, mask)
    assert not kept[5:10, 5:10, 5:10].any() and kept[15:25, 15:25, 15:25].all()


def test_morphology(xp):
    cube = xp.zeros((20, 20, 20), dtype=bool)
    cube[4:16, 4:16, 4:16] = True
    shell = cube.copy()
    shell[7:13, 7:13, 7:13] = False
    assert bool((fill_holes(shell) == cube).all())
    assert int(erode(cube, 2.0, (1, 1, 1)).sum()) == 8**3
    two = cube.copy()
    two[0, 0, 0] = True
    assert int(largest_component(two).sum()) == 12**3
    assert to_numpy(ball(2.0, (1.0, 1.0, 2.0))).shape == (5, 5, 3)


def test_empty_brain_mask_is_a_clear_error():
    with pytest.raises(QSMInputError, match="empty"):
        brain_mask(np.ones((10, 10, 10)) * np.arange(10)[:, None, None], (1, 1, 1),
                   threshold=100.0)
