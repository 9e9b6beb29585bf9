"""Fat-water separation: multi-peak fat spectra, VARPRO cost, graph-cut field map, T2*-IDEAL
refinement and PDFF.

:func:`separate_fat_water` is the stage the pipeline calls; the pieces are public:

- :mod:`qsmliver.fatwater.spectra` -- multi-peak fat models and their signal basis;
- :mod:`qsmliver.fatwater.varpro` -- per-voxel VARPRO cost over (ψ, R2*) candidates;
- :mod:`qsmliver.fatwater.fieldmap` -- smooth field-map selection by graph cuts;
- :mod:`qsmliver.fatwater.ideal` -- T2*-IDEAL Gauss-Newton refinement;
- :mod:`qsmliver.fatwater.pdff` -- PDFF with magnitude discrimination.
"""

from qsmliver.fatwater.api import (
    FATWATER_METHODS,
    FatWaterResult,
    separate_fat_water,
    signal_mask,
)
from qsmliver.fatwater.bipolar import correct_bipolar_phase as correct_bipolar_phase
from qsmliver.fatwater.bipolar import readout_axis_from_metadata as readout_axis_from_metadata
from qsmliver.fatwater.fieldmap import graphcut_field_map, voxelwise_field_map
from qsmliver.fatwater.ideal import IdealFit, ideal_refine
from qsmliver.fatwater.pdff import pdff_magnitude_discrimination
from qsmliver.fatwater.spectra import (
    HAMILTON_LIVER,
    ISMRM_6PEAK,
    FatSpectrum,
    fat_basis,
    get_fat_spectrum,
)
from qsmliver.fatwater.varpro import (
    default_r2star_max,
    echo_period_hz,
    field_candidates,
    r2star_candidates,
    varpro_cost,
    varpro_solve,
)

__all__ = [
    "FATWATER_METHODS",
    "HAMILTON_LIVER",
    "ISMRM_6PEAK",
    "FatSpectrum",
    "FatWaterResult",
    "IdealFit",
    "default_r2star_max",
    "echo_period_hz",
    "fat_basis",
    "field_candidates",
    "get_fat_spectrum",
    "graphcut_field_map",
    "ideal_refine",
    "pdff_magnitude_discrimination",
    "r2star_candidates",
    "separate_fat_water",
    "signal_mask",
    "varpro_cost",
    "varpro_solve",
    "voxelwise_field_map",
]
