"""Synthetic data with known truth: analytic solutions, forward models, numerical phantoms.

- :mod:`qsmliver.simulate.analytic` -- a susceptibility sphere and an infinite cylinder with
  closed-form fields, and the multi-echo GRE signal of the sphere;
- :mod:`qsmliver.simulate.forward` -- the field of any susceptibility map (zero-padded dipole
  convolution);
- :mod:`qsmliver.simulate.signal` -- multi-echo GRE with multi-peak fat, spin-echo decay, noise;
- :mod:`qsmliver.simulate.brain`, :mod:`qsmliver.simulate.abdomen` -- numerical phantoms
  returning a :class:`~qsmliver.simulate.phantom.Phantom` (acquisition + truth);
- :mod:`qsmliver.simulate.iron` -- the documented LIC -> R2* and LIC -> χ links;
- :mod:`qsmliver.simulate.write` -- phantoms to BIDS / NIfTI / DICOM with truth derivatives.
"""

from qsmliver.simulate.abdomen import abdomen_phantom
from qsmliver.simulate.analytic import (
    cylinder_field_ppm,
    sphere_field_ppm,
    sphere_gre,
    sphere_volume_fraction,
)
from qsmliver.simulate.brain import brain_phantom
from qsmliver.simulate.forward import susceptibility_field_ppm
from qsmliver.simulate.phantom import Phantom
from qsmliver.simulate.signal import add_complex_noise, gre_signal, spin_echo_signal

__all__ = [
    "Phantom",
    "abdomen_phantom",
    "add_complex_noise",
    "brain_phantom",
    "cylinder_field_ppm",
    "gre_signal",
    "sphere_field_ppm",
    "sphere_gre",
    "sphere_volume_fraction",
    "spin_echo_signal",
    "susceptibility_field_ppm",
]
