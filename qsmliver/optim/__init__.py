"""Linear operators and iterative solvers shared by every stage (CG, LSQR, shrinkage).

Background removal (PDF, LBV) and dipole inversion (iLSQR, TV-ADMM, MEDI, NDI) build their
solves from these, so each solver is written and tested once.
"""

from qsmliver.optim.deflation import DeflationSpace, deflation_space
from qsmliver.optim.operators import (
    LinearOperator,
    adjointness_error,
    divergence,
    gradient,
    gradient_kernel,
)
from qsmliver.optim.solvers import SolverInfo, conjugate_gradient, lsqr, soft_threshold

__all__ = [
    "DeflationSpace",
    "LinearOperator",
    "SolverInfo",
    "adjointness_error",
    "conjugate_gradient",
    "deflation_space",
    "divergence",
    "gradient",
    "gradient_kernel",
    "lsqr",
    "soft_threshold",
]
