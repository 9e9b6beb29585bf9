"""Synthetic data with known truth: analytic phantoms (more phantoms and forward models to come).

- :mod:`qsmliver.simulate.analytic` -- a susceptibility sphere with its closed-form field and
  the multi-echo GRE signal it produces.
"""

from qsmliver.simulate.analytic import sphere_field_ppm, sphere_gre
from qsmliver.simulate.forward import susceptibility_field_ppm

__all__ = ["sphere_field_ppm", "sphere_gre", "susceptibility_field_ppm"]
