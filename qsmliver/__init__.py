"""qsmliver: quantitative susceptibility mapping, R2*, fat fraction and liver iron from
multi-echo complex gradient-echo MRI, on the CPU (NumPy/SciPy) or an NVIDIA GPU (CuPy).

The public entry points are

- :mod:`qsmliver.io` -- readers (DICOM, NIfTI, BIDS) returning a validated
  :class:`~qsmliver.data.MultiEchoGRE`, and atomic writers with JSON sidecars;
- :mod:`qsmliver.backend` -- device selection and the array module (NumPy or CuPy);
- :mod:`qsmliver.data` -- the data model;
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

__all__ = [
    "MultiEchoGRE",
    "QSMConfigError",
    "QSMError",
    "QSMInputError",
    "QSMNumericalError",
    "QSMOutputExistsError",
    "QuantitativeMap",
    "__version__",
]
