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
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from qsmliver.errors import QSMConfigError, QSMInputError

__all__ = [
    "DEFAULT_HOST_CHUNK_BYTES",
    "DEVICE_CHUNK_FRACTION",
    "GPU_CHECK_EVERY",
    "Device",
    "QSMDeviceMemoryWarning",
    "chunked_apply",
    "convergence_check_interval",
    "cupy_available",
    "device_memory_info",
    "device_of",
    "fft",
    "fits_on_device",
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


# -- convergence checks of iterative solvers --------------------------------------------------
#: Iterations between the convergence checks of the iterative solvers on a GPU (CG, LSQR,
#: TV-ADMM, NDI, the R2* Levenberg-Marquardt loop). Each check copies a scalar to the host,
#: which waits for every queued kernel; checking every few iterations keeps the GPU busy.
#: A solver may therefore run up to ``GPU_CHECK_EVERY - 1`` iterations past the point where
#: it would have stopped on the CPU (never past ``max_iter``).
GPU_CHECK_EVERY = 10


def convergence_check_interval(xp: types.ModuleType = np) -> int:
    """Iterations between host-side convergence checks for arrays of module ``xp``.

    1 on NumPy (every iteration: the CPU results and iteration counts do not depend on this
    setting); :data:`GPU_CHECK_EVERY` on CuPy, or the value of the environment variable
    ``QSMLIVER_GPU_CHECK_EVERY`` (a positive integer) when it is set.

    Examples
    --------
    >>> convergence_check_interval(np)
    1
    """
    if xp is np:
        return 1
    env = os.environ.get("QSMLIVER_GPU_CHECK_EVERY", "")
    if env:
        try:
            value = int(env)
        except ValueError:
            value = 0
        if value < 1:
            raise QSMConfigError(
                f"QSMLIVER_GPU_CHECK_EVERY must be a positive integer, got {env!r}")
        return value
    return GPU_CHECK_EVERY


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


# -- device memory and chunked per-voxel stages ----------------------------------------------
#: Default bytes of input per chunk of :func:`chunked_apply` when the chunks stay on the host.
DEFAULT_HOST_CHUNK_BYTES = 256 * 2**20
#: Default share of the free device memory that one chunk of input may take when
#: :func:`chunked_apply` moves chunks to a GPU (the rest is headroom for the stage's own
#: intermediates, typically several times its input).
DEVICE_CHUNK_FRACTION = 0.125


class QSMDeviceMemoryWarning(RuntimeWarning):
    """A stage does not fit in the free memory of the GPU and falls back to the CPU."""


def device_memory_info(device: str | Device | None = None) -> tuple[int, int] | None:
    """Free and total memory of a CUDA device, bytes; None on the CPU or without a GPU.

    Parameters
    ----------
    device : {"cuda", "cuda:N"} or Device or None
        None: the current CuPy device. "cpu" gives None.

    Returns
    -------
    (free, total) : tuple of int, or None
        ``free`` is what the driver reports free (``cudaMemGetInfo``) plus the blocks that
        CuPy's default memory pool holds but does not use (CuPy reuses them before asking the
        driver for more); ``total`` is the device's memory.

    Examples
    --------
    >>> device_memory_info("cpu") is None
    True
    """
    cupy = _cupy()
    if cupy is None:
        return None
    if device is None:
        index = cupy.cuda.Device().id
    else:
        target = resolve_device(device)
        if target.kind == "cpu":
            return None
        index = target.index
    with cupy.cuda.Device(index):
        free, total = cupy.cuda.runtime.memGetInfo()
        free += cupy.get_default_memory_pool().free_bytes()
    return int(free), int(total)


def fits_on_device(nbytes: int, *, device: str | Device | None = None,
                   headroom: float = 0.9, what: str = "this stage", warn: bool = True) -> bool:
    """Whether ``nbytes`` of working memory fit in the free memory of a GPU.

    Parameters
    ----------
    nbytes : int
        The stage's estimated peak device memory, bytes (inputs, outputs and intermediates).
    device : {"cuda", "cuda:N"} or Device or None
        None: the current CuPy device.
    headroom : float
        Only this fraction (0-1] of the free memory counts as usable (fragmentation, cuFFT
        plans and work areas).
    what : str
        The stage, for the warning.
    warn : bool
        Issue a :class:`QSMDeviceMemoryWarning` that names the stage, the need and the free
        memory when a GPU exists but the stage does not fit (the caller then runs it on the
        CPU, or in chunks with :func:`chunked_apply`).

    Returns
    -------
    bool
        True when a usable GPU has enough free memory; False when it has not, and on
        machines without a usable GPU (no warning then: there is nothing to fall back from).

    Raises
    ------
    QSMConfigError
        For a negative ``nbytes`` or a ``headroom`` outside (0, 1].
    """
    if int(nbytes) < 0:
        raise QSMConfigError(f"nbytes must be non-negative, got {nbytes!r}")
    if not 0 < float(headroom) <= 1:
        raise QSMConfigError(f"headroom must be in (0, 1], got {headroom!r}")
    info = device_memory_info(device)
    if info is None:
        return False
    free, total = info
    if int(nbytes) <= float(headroom) * free:
        return True
    if warn:
        where = "the GPU" if device is None else str(resolve_device(device))
        warnings.warn(
            QSMDeviceMemoryWarning(
                f"{what} needs about {int(nbytes) / 2**30:.2f} GiB of device memory but "
                f"{where} has {free / 2**30:.2f} GiB free of {total / 2**30:.2f} GiB; "
                "falling back to the CPU (per-voxel stages can stay on the GPU in chunks: "
                "qsmliver.backend.chunked_apply)"),
            stacklevel=2,
        )
    return False


def _as_tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def chunked_apply(func: Callable[..., Any], arrays: Any | Sequence[Any], *, axis: int = 0,
                  max_bytes: int | None = None,
                  device: str | Device | None = None) -> Any:
    """Apply a per-voxel stage to slices of its inputs along one axis and join the results.

    ``func(*chunks)`` is called on consecutive slices ``[start:stop]`` along ``axis`` of every
    array in ``arrays`` and its output(s) are concatenated along ``axis``. For a stage in
    which every output element depends only on the inputs at the same position along ``axis``
    (voxel-wise fits on ``(N, E)`` data, element-wise maps), the result equals
    ``func(*arrays)``, while the memory held at once is bounded by the chunk size: volumes
    larger than the device memory are fitted chunk by chunk.

    Parameters
    ----------
    func : callable
        ``func(*chunks) -> array`` or a tuple/list of arrays, each with the chunk's length
        along ``axis``.
    arrays : array or sequence of arrays
        NumPy or CuPy arrays with the same length along ``axis`` (other axes may differ, e.g.
        ``(N, E)`` magnitudes with ``(N,)`` noise levels).
    axis : int
        The axis that is cut (negative values count from the end of each array).
    max_bytes : int, optional
        Bytes of input (all arrays together) per chunk; at least one slice is always taken.
        Default: :data:`DEVICE_CHUNK_FRACTION` of the free memory of ``device`` when it is a
        GPU, else :data:`DEFAULT_HOST_CHUNK_BYTES`.
    device : {"cpu", "cuda", "cuda:N"} or Device, optional
        Move every chunk there before ``func`` and move the results back to the device of the
        first input afterwards (host data, GPU compute). None: no moves.

    Returns
    -------
    array or tuple of arrays
        As ``func`` returns them, joined along ``axis``.

    Raises
    ------
    QSMInputError
        No arrays, or arrays of different lengths along ``axis``.
    QSMConfigError
        A non-positive ``max_bytes``, or ``func`` returning outputs of another length.

    Examples
    --------
    >>> y = np.arange(12.0).reshape(6, 2)
    >>> chunked_apply(lambda a: a.sum(axis=1), y, max_bytes=32).tolist()
    [1.0, 5.0, 9.0, 13.0, 17.0, 21.0]
    """
    inputs = _as_tuple(arrays)
    if not inputs:
        raise QSMInputError("chunked_apply needs at least one array", field="arrays")
    lengths = set()
    for array in inputs:
        if array.ndim == 0:
            raise QSMInputError("chunked_apply cannot cut a 0-d array", field="arrays")
        lengths.add(int(array.shape[axis]))
    if len(lengths) != 1:
        raise QSMInputError(f"arrays have different lengths {sorted(lengths)} along axis {axis}",
                            field="arrays")
    length = lengths.pop()
    target = None if device is None else resolve_device(device)
    home = device_of(inputs[0])
    if max_bytes is None:
        info = device_memory_info(target) if target is not None and target.kind == "cuda" \
            else None
        max_bytes = (int(DEVICE_CHUNK_FRACTION * info[0]) if info is not None
                     else DEFAULT_HOST_CHUNK_BYTES)
    if int(max_bytes) <= 0:
        raise QSMConfigError(f"max_bytes must be positive, got {max_bytes!r}")
    row_bytes = sum(int(a.nbytes) for a in inputs) / max(length, 1)
    rows = max(1, int(int(max_bytes) // max(row_bytes, 1)))

    def run(chunk: tuple[Any, ...]) -> tuple[tuple[Any, ...], bool]:
        if target is not None:
            chunk = tuple(to_device(a, target) for a in chunk)
        result = func(*chunk)
        outputs = _as_tuple(result)
        if target is not None and target != home:
            outputs = tuple(to_device(o, home) for o in outputs)
        return outputs, isinstance(result, (tuple, list))

    if rows >= length:
        outputs, several = run(inputs)
        return outputs if several else outputs[0]
    pieces: list[tuple[Any, ...]] = []
    several = False
    for start in range(0, length, rows):
        stop = min(start + rows, length)
        chunk = []
        for array in inputs:
            index = [slice(None)] * array.ndim
            index[axis] = slice(start, stop)
            chunk.append(array[tuple(index)])
        outputs, several = run(tuple(chunk))
        for out in outputs:
            if out.ndim == 0 or int(out.shape[axis]) != stop - start:
                raise QSMConfigError(
                    f"chunked_apply: func returned shape {tuple(out.shape)} for a chunk of "
                    f"{stop - start} along axis {axis}; it must keep that length")
        pieces.append(outputs)
    joined = tuple(get_array_module(*parts).concatenate(parts, axis=axis)
                   for parts in zip(*pieces, strict=True))
    return joined if several else joined[0]
