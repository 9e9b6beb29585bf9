"""Synthetic data with known truth: analytic phantoms (more phantoms and forward models to come).

- :mod:`qsmliver.simulate.analytic` -- a susceptibility sphere and an infinite cylinder with
  closed-form fields, and the multi-echo GRE signal of the sphere;
- :mod:`qsmliver.simulate.forward` -- the field of any susceptibility map (zero-padded dipole
  convolution);
- :mod:`qsmliver.simulate.signal` -- multi-echo GRE with multi-peak fat, spin-echo decay, noise.
"""

from qsmliver.simulate.analytic import (
    cylinder_field_ppm,
    sphere_field_ppm,
    sphere_gre,
    sphere_volume_fraction,
)
from qsmliver.simulate.forward import susceptibility_field_ppm
from qsmliver.simulate.signal import add_complex_noise, gre_signal, spin_echo_signal

__all__ = [
    "add_complex_noise",
    "cylinder_field_ppm",
    "gre_signal",
    "sphere_field_ppm",
    "sphere_gre",
    "sphere_volume_fraction",
    "spin_echo_signal",
    "susceptibility_field_ppm",
]
