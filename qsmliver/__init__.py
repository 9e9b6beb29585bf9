"""qsmliver: quantitative susceptibility mapping, R2*, fat fraction and liver iron from
multi-echo complex gradient-echo MRI, on the CPU (NumPy/SciPy) or an NVIDIA GPU (CuPy).

The public entry points are

- :mod:`qsmliver.io` -- readers (DICOM, NIfTI, BIDS) returning a validated
  :class:`~qsmliver.data.MultiEchoGRE`, and atomic writers with JSON sidecars;
- :mod:`qsmliver.backend` -- device selection and the array module (NumPy or CuPy);
- :mod:`qsmliver.data` -- the data model;
- :func:`qsmliver.recon` (:mod:`qsmliver.pipeline`) -- the QSM chain from a
  :class:`~qsmliver.data.MultiEchoGRE` to χ, field, local field, mask and R2* maps;
- the stages: :mod:`qsmliver.phase`, :mod:`qsmliver.mask`, :mod:`qsmliver.bgremove`,
  :mod:`qsmliver.inversion`, :mod:`qsmliver.relaxometry`, :mod:`qsmliver.calibrate`;
- the ``qsmliver`` command (:mod:`qsmliver.cli`).
"""

__version__ = "0.1.0"

from qsmliver.data import MultiEchoGRE, QuantitativeMap
from qsmliver.errors import (
    QSMConfigError,
    QSMError,
    QSMInputError,
    QSMNumericalError,
    QSMOutputExistsError,
)
from qsmliver.pipeline import recon

__all__ = [
    "MultiEchoGRE",
    "QSMConfigError",
    "QSMError",
    "QSMInputError",
    "QSMNumericalError",
    "QSMOutputExistsError",
    "QuantitativeMap",
    "__version__",
    "recon",
]
