"""Fat-water: multi-peak fat spectra now; VARPRO / graph-cut separation to come."""

from qsmliver.fatwater.spectra import (
    HAMILTON_LIVER,
    ISMRM_6PEAK,
    FatSpectrum,
    fat_basis,
    get_fat_spectrum,
)

__all__ = ["HAMILTON_LIVER", "ISMRM_6PEAK", "FatSpectrum", "fat_basis", "get_fat_spectrum"]
