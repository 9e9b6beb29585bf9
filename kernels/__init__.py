"""CUDA C sources shipped as ``qsmliver._kernels`` (loaded by :func:`qsmliver.backend.get_kernel`)."""
