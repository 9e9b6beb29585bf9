"""CUDA C sources shipped as ``qsmliver._kernels``.

Loaded by :func:`qsmliver.backend.get_kernel`.
"""
