"""Dipole inversion on the QSM challenge 2016 data (../shared/data; skipped when absent).

See ../shared/data/MANIFEST.md section 3. The full comparison of every method is
benchmarks/inversion_challenge.py; here the fast closed-form methods keep the test short.
"""

import nibabel as nib
import numpy as np
import pytest

from qsmliver.inversion import invert_dipole
from qsmliver.metrics import nrmse

pytestmark = pytest.mark.realdata

VOXEL_MM = (1.0625, 1.0625, 1.0714285)


@pytest.fixture
def challenge(shared_data):
    folder = shared_data / "qsm2016_challenge"
    if not folder.is_dir():
        pytest.skip(f"{folder} not available")

    def load(name):
        return np.asarray(nib.load(folder / name).dataobj)

    return (load("phs_tissue.nii.gz").astype(np.float32), load("msk.nii.gz") > 0,
            load("chi_cosmos.nii.gz").astype(np.float64))


def test_regularised_inversion_beats_tkd_against_cosmos(challenge):
    field, mask, cosmos = challenge
    tkd = invert_dipole(field, mask, VOXEL_MM, (0, 0, 1), "tkd").chi_ppm
    best = invert_dipole(field, mask, VOXEL_MM, (0, 0, 1), "tikhonov").chi_ppm
    assert best.dtype == np.float32 and not best[~mask].any()
    error_tkd = nrmse(tkd, cosmos, mask)
    error_best = nrmse(best, cosmos, mask)
    assert error_best <= 70.0
    assert error_best < error_tkd
