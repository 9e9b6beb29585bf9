"""Multi-peak fat spectra and their signal basis at given echo times and field strength.

Each spectrum is a list of chemical shifts σ_p (ppm, relative to water at 4.7 ppm; fat
resonates below water, so most shifts are negative) and relative amplitudes a_p. At field
strength B0 a peak is off-resonant by ``f_p = σ_p · γ · B0 · 1e-6`` Hz, so the fat signal at echo
time TE is ``F · Σ_p a_p exp(i 2π f_p TE)`` (DESIGN section 5). Amplitudes are normalised to
sum to 1 so that the fat amplitude F is the total fat proton density.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qsmliver.data import GYROMAGNETIC_RATIO_HZ_PER_T
from qsmliver.errors import QSMConfigError

__all__ = ["HAMILTON_LIVER", "ISMRM_6PEAK", "FatSpectrum", "fat_basis", "get_fat_spectrum"]


@dataclasses.dataclass(frozen=True)
class FatSpectrum:
    """A multi-peak fat model.

    Parameters
    ----------
    name : str
        Short name.
    shifts_ppm : sequence of float
        Chemical shift of each peak relative to water, ppm.
    amplitudes : sequence of float
        Relative amplitudes (normalised here to sum to 1).
    citation : str
        Where the spectrum comes from.
    """

    name: str
    shifts_ppm: tuple[float, ...]
    amplitudes: tuple[float, ...]
    citation: str = ""

    def __post_init__(self) -> None:
        shifts = tuple(float(s) for s in self.shifts_ppm)
        amps = np.asarray(self.amplitudes, dtype=np.float64)
        if len(shifts) == 0 or len(shifts) != amps.size:
            raise QSMConfigError(
                f"fat spectrum {self.name!r}: {len(shifts)} shifts for {amps.size} amplitudes"
            )
        if np.any(amps < 0) or amps.sum() <= 0 or not np.all(np.isfinite(amps)):
            raise QSMConfigError(f"fat spectrum {self.name!r}: amplitudes must be >= 0, sum > 0")
        object.__setattr__(self, "shifts_ppm", shifts)
        object.__setattr__(self, "amplitudes", tuple((amps / amps.sum()).tolist()))

    def frequencies_hz(self, b0_t: float) -> NDArray[np.float64]:
        """Off-resonance of each peak in Hz at field strength ``b0_t`` (tesla)."""
        return np.asarray(self.shifts_ppm) * GYROMAGNETIC_RATIO_HZ_PER_T * b0_t * 1e-6


#: ISMRM Fat-Water Toolbox 6-peak spectrum (Hernando et al.; Yu et al. MRM 2008;60:1122).
ISMRM_6PEAK = FatSpectrum(
    "ismrm",
    (-3.80, -3.40, -2.60, -1.94, -0.39, 0.60),
    (0.087, 0.693, 0.128, 0.004, 0.039, 0.048),
    "ISMRM Fat-Water Toolbox (Hu et al. MRM 2012;68:378); Yu et al. MRM 2008;60:1122",
)

#: Hamilton et al., in-vivo human liver fat spectrum at 3 T (NMR Biomed 2011;24:784).
HAMILTON_LIVER = FatSpectrum(
    "hamilton",
    (0.60, -0.50, -1.95, -2.60, -3.40, -3.80),
    (0.047, 0.039, 0.006, 0.12, 0.70, 0.088),
    "Hamilton G et al. In vivo characterization of the liver fat 1H MR spectrum. "
    "NMR Biomed 2011;24:784-790",
)

_REGISTRY = {s.name: s for s in (ISMRM_6PEAK, HAMILTON_LIVER)}


def get_fat_spectrum(
    spectrum: str | FatSpectrum | tuple[Sequence[float], Sequence[float]] = "ismrm",
) -> FatSpectrum:
    """A fat spectrum by name ("ismrm", "hamilton"), as given, or from (shifts, amplitudes).

    Raises
    ------
    QSMConfigError
        For an unknown name or an inconsistent user spectrum.
    """
    if isinstance(spectrum, FatSpectrum):
        return spectrum
    if isinstance(spectrum, str):
        try:
            return _REGISTRY[spectrum.lower()]
        except KeyError:
            raise QSMConfigError(
                f"unknown fat spectrum {spectrum!r}; known: {', '.join(sorted(_REGISTRY))} "
                "(or give (shifts_ppm, amplitudes))"
            ) from None
    shifts, amplitudes = spectrum
    return FatSpectrum("user", tuple(shifts), tuple(amplitudes), "user-supplied")


def fat_basis(spectrum: str | FatSpectrum, te_s: ArrayLike, b0_t: float) -> NDArray:
    """Complex fat signal per unit fat amplitude at each echo: Σ_p a_p exp(i 2π f_p TE).

    Parameters
    ----------
    spectrum : str or FatSpectrum
        The fat model.
    te_s : (E,) array_like
        Echo times in seconds.
    b0_t : float
        Field strength in tesla.

    Returns
    -------
    (E,) complex128 ndarray

    Examples
    --------
    >>> abs(fat_basis("ismrm", [0.0], 3.0)[0])
    1.0
    """
    spec = get_fat_spectrum(spectrum)
    te = np.atleast_1d(np.asarray(te_s, dtype=np.float64))
    phases = 2j * np.pi * np.outer(te, spec.frequencies_hz(b0_t))
    return np.exp(phases) @ np.asarray(spec.amplitudes)
