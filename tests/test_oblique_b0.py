"""B0 oblique to the voxel axes: background removal and inversion on band-limited data.

The inversions use the k-space dipole kernel, which is exact for band-limited data, what a
scanner acquires. The brain phantom simulated finer and cropped in k-space
(``oversample=2``) is such data: on it the methods keep their accuracy when B0 is tilted.
(On the default phantom, whose field of piecewise-constant χ is sampled at the voxel centres,
the DGM slope of MEDI given the truth local field falls from 0.90 to 0.72 at 25 degrees,
64×64×48 at 3 mm: aliasing that no scanner measures; ``benchmarks/brain_oblique.py``.)
"""

import numpy as np
import pytest
from scipy import ndimage

from qsmliver.bgremove import remove_background
from qsmliver.inversion import invert_dipole
from qsmliver.metrics import nrmse, roi_slope
from qsmliver.simulate import brain_phantom

DGM = ("caudate", "putamen", "globus_pallidus", "thalamus", "red_nucleus",
       "substantia_nigra", "dentate_nucleus")
VOXEL = (3.0, 3.0, 3.0)


def _b0(tilt_deg: float) -> tuple[float, float, float]:
    t = np.deg2rad(tilt_deg)
    return (0.6 * np.sin(t), 0.8 * np.sin(t), float(np.cos(t)))


@pytest.fixture(scope="module")
def results():
    """Per tilt: RESHARP's local-field NRMSE given the truth total field, and MEDI's χ NRMSE
    (one voxel in from the edge, where voxels hold partial volumes of bone) and DGM slope
    given the truth local field."""
    out = {}
    for tilt in (0.0, 25.0):
        phantom = brain_phantom(shape=(64, 64, 48), voxel_size_mm=VOXEL, snr=100.0,
                                b0_dir=_b0(tilt), oversample=2)
        truth, brain, b0 = phantom.truth, phantom.masks["brain"], phantom.gre.b0_dir
        labels = [v for v, n in phantom.label_names.items() if n.rsplit("_", 1)[0] in DGM]
        local = remove_background(truth["total_field_ppm"], brain, VOXEL, b0, "resharp")
        medi = invert_dipole(truth["local_field_ppm"], brain, VOXEL, b0, "medi",
                             magnitude=np.abs(phantom.gre.signal[..., 0]))
        out[tilt] = {
            "local_nrmse": nrmse(local.local_field_ppm, truth["local_field_ppm"], local.mask),
            "chi_nrmse": nrmse(medi.chi_ppm, truth["chi_ppm"], ndimage.binary_erosion(brain)),
            "slope": roi_slope(medi.chi_ppm, truth["chi_ppm"], phantom.labels, labels),
        }
    return out


def test_background_removal_unchanged_by_tilt(results):
    """Measured: RESHARP local field 38.9 % axial, 37.9 % at 25 degrees."""
    axial, tilted = results[0.0]["local_nrmse"], results[25.0]["local_nrmse"]
    assert tilted <= axial + 5.0, (axial, tilted)
    assert tilted < 50.0, tilted


def test_medi_keeps_dgm_slope_when_tilted(results):
    """Measured: χ NRMSE 29.1 % / slope 0.94 axial, 26.9 % / 0.91 at 25 degrees."""
    axial, tilted = results[0.0], results[25.0]
    assert 0.85 <= tilted["slope"] <= 1.10, tilted
    assert abs(tilted["slope"] - axial["slope"]) < 0.08, (axial, tilted)
    assert tilted["chi_nrmse"] <= axial["chi_nrmse"] + 5.0, (axial, tilted)
    assert tilted["chi_nrmse"] < 40.0, tilted
