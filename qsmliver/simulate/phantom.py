"""The common container of a numerical phantom: the acquisition and its known truth."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from qsmliver.data import MultiEchoGRE

__all__ = ["TRUTH_UNITS", "Phantom"]

#: Units of the truth maps, the same as the pipeline outputs (DESIGN section 2).
TRUTH_UNITS: dict[str, str] = {
    "chi_ppm": "ppm",
    "total_field_hz": "Hz",
    "total_field_ppm": "ppm",
    "local_field_ppm": "ppm",
    "background_field_ppm": "ppm",
    "r2star_per_s": "1/s",
    "water": "a.u.",
    "fat": "a.u.",
    "pdff_percent": "percent",
    "lic_mg_per_g": "mg Fe/g dw",
    "phi0_rad": "rad",
}


@dataclasses.dataclass(eq=False)
class Phantom:
    """A simulated acquisition with the truth it was made from.

    Parameters
    ----------
    gre : MultiEchoGRE
        The simulated multi-echo complex GRE (noise included).
    truth : dict of str to (X, Y, Z) ndarray
        Truth maps named with their unit (keys of :data:`TRUTH_UNITS`).
    labels : (X, Y, Z) int ndarray
        Tissue labels.
    label_names : dict of int to str
        Name of each label value (0 = background/air).
    masks : dict of str to (X, Y, Z) bool ndarray
        Masks, e.g. ``"brain"``, ``"body"``, ``"liver"``, ``"object"`` (where there is signal).
    config : dict
        The parameters the phantom was generated with (JSON-serialisable), for provenance.
    """

    gre: MultiEchoGRE
    truth: dict[str, np.ndarray]
    labels: np.ndarray
    label_names: dict[int, str]
    masks: dict[str, np.ndarray]
    config: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = self.gre.shape
        for name, array in {**self.truth, **self.masks, "labels": self.labels}.items():
            if tuple(np.shape(array)) != shape:
                raise ValueError(f"phantom map {name!r} has shape {np.shape(array)}, "
                                 f"the acquisition {shape}")
        unknown = sorted(set(self.truth) - set(TRUTH_UNITS))
        if unknown:
            raise ValueError(f"truth maps without a declared unit: {unknown}")
