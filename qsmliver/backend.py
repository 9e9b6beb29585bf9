"""The one place where qsmliver chooses between NumPy (CPU) and CuPy (NVIDIA GPU).

Rules (DESIGN section 3): CuPy is imported lazily and only here; whether a GPU is usable is
decided once per process with ``cupy.is_available()``; numerical code takes its array module
from its input with :func:`get_array_module` and never branches on a global flag; data crosses
between host and device only through :func:`to_device` and :func:`to_numpy`.

Examples
--------
>>> import numpy as np
>>> from qsmliver import backend
>>> backend.resolve_device("cpu")
Device(kind='cpu', index=0)
>>> x = backend.to_device(np.zeros(3), "cpu")
>>> backend.get_array_module(x) is np
True
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import os
import re
import threading
import types
import warnings
from typing import Any

import numpy as np

from qsmliver.errors import QSMConfigError

__all__ = [
    "Device",
    "cupy_available",
    "device_of",
    "fft",
    "get_array_module",
    "get_kernel",
    "kernel_source",
    "list_kernel_sources",
    "ndimage",
    "resolve_device",
    "to_device",
    "to_numpy",
]

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|gpu)(?::(\d+))?$")
_lock = threading.Lock()
_cupy_state: dict[str, Any] = {}


@dataclasses.dataclass(frozen=True)
class Device:
    """A compute device: ``kind`` is "cpu" or "cuda"; ``index`` the CUDA device number."""

    kind: str
    index: int = 0

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"cuda:{self.index}"


# -- CuPy detection ---------------------------------------------------------------------------
def _cupy() -> types.ModuleType | None:
    """CuPy if it imports and sees a usable GPU, else None. Decided once per process."""
    with _lock:
        if "module" not in _cupy_state:
            _cupy_state["module"] = None
            _cupy_state["reason"] = "CuPy is not installed (pip install 'qsmliver[gpu]')"
            if os.environ.get("QSMLIVER_DISABLE_GPU", "") not in ("", "0"):
                _cupy_state["reason"] = "disabled by QSMLIVER_DISABLE_GPU"
            else:
                try:
                    import cupy  # the only cupy import in the package

                    if cupy.is_available():
                        _cupy_state["module"] = cupy
                    else:
                        _cupy_state["reason"] = "CuPy is installed but sees no usable CUDA GPU"
                except Exception as exc:  # ImportError, CUDA driver/runtime errors
                    if not isinstance(exc, ImportError):
                        _cupy_state["reason"] = f"CuPy is unusable: {exc}"
                        warnings.warn(
                            f"qsmliver: CuPy failed to initialise ({exc}); using the CPU",
                            RuntimeWarning,
                            stacklevel=2,
                        )
        return _cupy_state["module"]


def cupy_available() -> bool:
    """True when CuPy is installed and at least one CUDA GPU is usable."""
    return _cupy() is not None


def gpu_unavailable_reason() -> str:
    """Why the GPU cannot be used (empty string when it can)."""
    return "" if _cupy() is not None else _cupy_state["reason"]


# -- devices ----------------------------------------------------------------------------------
def resolve_device(device: str | Device | None = "auto") -> Device:
    """Turn a device request into a concrete :class:`Device`.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda", "cuda:N", "gpu"} or Device or None
        "auto" (or None) picks CUDA device 0 when a GPU is usable and the CPU otherwise.

    Returns
    -------
    Device

    Raises
    ------
    QSMConfigError
        For an unknown device string, a CUDA request without a usable GPU, or a device index
        that does not exist.
    """
    if isinstance(device, Device):
        return device
    text = "auto" if device is None else str(device).strip().lower()
    match = _DEVICE_PATTERN.match(text)
    if not match:
        raise QSMConfigError(
            f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'"
        )
    kind, index = match.group(1), int(match.group(2) or 0)
    if kind == "cpu":
        return Device("cpu")
    cupy = _cupy()
    if kind == "auto":
        return Device("cuda", 0) if cupy is not None else Device("cpu")
    if cupy is None:
        raise QSMConfigError(f"device {device!r} requested but {gpu_unavailable_reason()}")
    count = cupy.cuda.runtime.getDeviceCount()
    if index >= count:
        raise QSMConfigError(f"device {device!r} requested but only {count} CUDA device(s) exist")
    return Device("cuda", index)


def get_array_module(*arrays: Any) -> types.ModuleType:
    """``cupy`` if any argument is a CuPy array, else ``numpy``. Never imports CuPy."""
    cupy = _cupy_state.get("module")
    if cupy is not None:
        for array in arrays:
            if isinstance(array, cupy.ndarray):
                return cupy
    return np


def device_of(array: Any) -> Device:
    """The device an array lives on."""
    if get_array_module(array) is np:
        return Device("cpu")
    return Device("cuda", int(array.device.id))


def to_device(array: Any, device: str | Device = "auto") -> Any:
    """Move (or keep) an array on ``device``. Copies only when the device changes."""
    target = resolve_device(device)
    if target.kind == "cpu":
        return to_numpy(array)
    cupy = _cupy()
    with cupy.cuda.Device(target.index):
        return cupy.asarray(array)


def to_numpy(array: Any) -> np.ndarray:
    """The array on the host as a NumPy array (no copy when it is already there)."""
    if get_array_module(array) is not np:
        return array.get()
    return np.asarray(array)


# -- FFT and ndimage per backend --------------------------------------------------------------
def _cpu_workers() -> int:
    env = os.environ.get("QSMLIVER_FFT_WORKERS")
    if env:
        return max(1, int(env))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@functools.cache
def _scipy_fft_namespace(workers: int) -> types.SimpleNamespace:
    import scipy.fft as sfft

    transforms = ("fft", "ifft", "fftn", "ifftn", "rfftn", "irfftn", "dctn", "idctn",
                  "dstn", "idstn")
    namespace = {name: functools.partial(getattr(sfft, name), workers=workers)
                 for name in transforms}
    for name in ("fftshift", "ifftshift", "fftfreq", "rfftfreq", "next_fast_len"):
        namespace[name] = getattr(sfft, name)
    return types.SimpleNamespace(**namespace, backend="scipy", workers=workers)


def fft(xp: types.ModuleType = np) -> types.SimpleNamespace:
    """FFT functions for an array module.

    On NumPy this is ``scipy.fft`` with ``workers`` set to the usable CPU count (override
    with ``QSMLIVER_FFT_WORKERS``); on CuPy the transforms are ``cupyx.scipy.fft`` (cuFFT
    with CuPy's plan cache) and the helpers come from ``cupy.fft``. Both offer ``fftn``,
    ``ifftn``, ``rfftn``, ``irfftn``, ``dctn``, ``idctn``, ``fftshift``, ``ifftshift``,
    ``fftfreq`` and ``next_fast_len``.
    """
    if xp is np:
        return _scipy_fft_namespace(_cpu_workers())
    return _cupy_fft_namespace()


@functools.cache
def _cupy_fft_namespace() -> types.SimpleNamespace:
    import cupy
    import cupyx.scipy.fft as cufft
    import scipy.fft as sfft

    transforms = ("fft", "ifft", "fftn", "ifftn", "rfftn", "irfftn", "dctn", "idctn",
                  "dstn", "idstn")
    namespace = {name: getattr(cufft, name) for name in transforms if hasattr(cufft, name)}
    for name in ("fftshift", "ifftshift", "fftfreq", "rfftfreq"):
        namespace[name] = getattr(cupy.fft, name)
    namespace["next_fast_len"] = sfft.next_fast_len  # a size, computed on the host
    return types.SimpleNamespace(**namespace, backend="cupy", workers=None)


def ndimage(xp: types.ModuleType = np) -> types.ModuleType:
    """``scipy.ndimage`` on NumPy, ``cupyx.scipy.ndimage`` on CuPy."""
    if xp is np:
        import scipy.ndimage as nd

        return nd
    import cupyx.scipy.ndimage as cund

    return cund


# -- CUDA kernels -----------------------------------------------------------------------------
_KERNEL_PACKAGE = "qsmliver._kernels"
_REAL_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
_kernel_cache: dict[tuple, Any] = {}


def list_kernel_sources() -> list[str]:
    """Names (without ``.cu``) of the CUDA sources shipped in the package."""
    root = importlib.resources.files(_KERNEL_PACKAGE)
    return sorted(p.name[:-3] for p in root.iterdir() if p.name.endswith(".cu"))


def kernel_source(family: str, real_dtype: Any = np.float32) -> str:
    """The CUDA source of ``kernels/<family>.cu`` with its element-type ``#define`` lines.

    Each source is written against ``real_t`` (float or double) and ``complex_t`` (the
    matching interleaved pair); this prepends the definitions for ``real_dtype``.

    Raises
    ------
    ValueError
        For a dtype other than float32/float64 (or their complex counterparts).
    FileNotFoundError
        If no such kernel family is shipped.
    """
    dtype = np.dtype(real_dtype)
    if dtype.kind == "c":
        dtype = np.dtype(dtype.char.lower())  # complex64 -> float32, complex128 -> float64
    if dtype not in _REAL_TYPES:
        raise ValueError(f"CUDA kernels support float32 and float64, not {dtype}")
    resource = importlib.resources.files(_KERNEL_PACKAGE) / f"{family}.cu"
    if not resource.is_file():
        raise FileNotFoundError(
            f"no CUDA kernel family {family!r}; shipped: {', '.join(list_kernel_sources())}"
        )
    real = _REAL_TYPES[dtype]
    header = (
        f"#define real_t {real}\n"
        f"#define complex_t {real}2\n"
        f"#define QSM_DOUBLE {int(real == 'double')}\n"
    )
    return header + resource.read_text(encoding="utf-8")


def get_kernel(family: str, name: str, real_dtype: Any = np.float32) -> Any:
    """A compiled ``cupy.RawKernel`` ``name`` from ``kernels/<family>.cu``.

    Compiled with ``cupy.RawModule`` once per (family, dtype, device) and cached.

    Raises
    ------
    QSMConfigError
        When no GPU is usable.
    """
    cupy = _cupy()
    if cupy is None:
        raise QSMConfigError(f"CUDA kernel {family}.{name} needs a GPU: {gpu_unavailable_reason()}")
    dtype = np.dtype(real_dtype)
    key = (family, dtype.char, cupy.cuda.Device().id)
    with _lock:
        module = _kernel_cache.get(key)
        if module is None:
            module = cupy.RawModule(code=kernel_source(family, dtype), options=("-std=c++14",))
            _kernel_cache[key] = module
    return module.get_function(name)
