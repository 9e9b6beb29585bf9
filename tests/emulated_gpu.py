"""A CuPy stand-in for machines without a GPU: NumPy arithmetic behind CuPy's host/device rules.

CI has no GPU, so the CuPy half of qsmliver's one code path would otherwise first run on a GPU
machine. :func:`install` puts fake ``cupy``, ``cupyx.scipy.fft`` and ``cupyx.scipy.ndimage``
modules in ``sys.modules`` and resets :mod:`qsmliver.backend`, which then reports a usable GPU;
every ``gpu``-marked test and every ``xp="cupy"`` case runs against the fake (``make test`` does
this in a second pass, ``QSMLIVER_EMULATE_GPU=1``; see ``tests/conftest.py``).

What the fake enforces, as CuPy does:

- a device array (:class:`DeviceArray`) refuses implicit conversion to a host array:
  ``np.asarray``/``np.array`` and every SciPy routine raise ``TypeError``; ``.get()``,
  ``cupy.asnumpy`` and ``qsmliver.backend.to_numpy`` are the way back;
- a host ``ndarray`` (one or more dimensions) mixed into a device operation (operators,
  ufuncs, ``cupy.*`` functions other than ``asarray``/``array``/``ascontiguousarray``) raises
  ``TypeError``; NumPy scalars and Python numbers mix freely;
- reductions and single-element indexing give 0-d device arrays, not host scalars;
- stricter than CuPy where CuPy copies over silently: a host index array, or a host array
  assigned into a device array, is a ``TypeError`` too (the code moves data only through
  ``backend.to_device``/``to_numpy``, DESIGN section 3);
- ``cupyx.scipy.ndimage`` functions take device input only;
- NumPy functions called on device arrays dispatch to the device (CuPy's NEP-18 support).

What it does not model: CuPy's numerical differences (cuFFT, float32 accumulation order),
memory, streams, and the compiled CUDA kernels. The ``complex_ops`` kernels (elementwise) are
emulated; the others (fused TV, R2*, fat-water) are not: by default the stages use their NumPy
twins under emulation, and a test that asks for a kernel explicitly is skipped
(``test_kernels.py`` checks them on a real GPU).
"""

from __future__ import annotations

import functools
import sys
import types

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to "
            "construct a NumPy array explicitly.")
#: cupy functions that take host arrays (they copy them to the device).
HOST_TO_DEVICE = frozenset({"asarray", "array", "asanyarray", "ascontiguousarray"})
#: the compiled kernels this fake runs (the rest stay unemulated).
EMULATED_KERNELS = frozenset({"complex_to_polar", "polar_to_complex"})


class DeviceArray(NDArrayOperatorsMixin):
    """An array "on the device": a NumPy array that only device operations may touch."""

    __slots__ = ("_host",)
    __array_priority__ = 1000

    def __init__(self, host: np.ndarray) -> None:
        self._host = host

    # -- crossing to the host ---------------------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError(IMPLICIT)

    def get(self, stream=None, order="C", out=None) -> np.ndarray:
        return np.array(self._host, order=order, copy=True)

    def item(self):
        return self._host.item()

    def tolist(self):
        return self._host.tolist()

    def __float__(self) -> float:
        return float(self._host)

    def __int__(self) -> int:
        return int(self._host)

    def __complex__(self) -> complex:
        return complex(self._host)

    def __bool__(self) -> bool:
        return bool(self._host)

    def __index__(self) -> int:
        return self._host.__index__()

    def __format__(self, spec: str) -> str:
        return format(self._host, spec)

    def __repr__(self) -> str:
        return f"DeviceArray({self._host!r})"

    # -- NumPy protocols: operators, ufuncs, np.func(device) ---------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        name = f"{ufunc.__name__}.{method}" if method != "__call__" else ufunc.__name__
        inputs = _to_host(inputs, name)
        given = kwargs.get("out")
        if "out" in kwargs:
            kwargs["out"] = tuple(_device_only(o, name) for o in kwargs["out"])
        return _returned(getattr(ufunc, method)(*inputs, **kwargs), given)

    def __array_function__(self, func, types_, args, kwargs):
        if func.__name__ in HOST_TO_DEVICE:
            raise TypeError(IMPLICIT)
        return _to_device(func(*_to_host(args, func.__name__), **_to_host(kwargs, func.__name__)))

    # -- the ndarray interface --------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._host)

    def __iter__(self):
        return (_to_device(row) for row in self._host)

    def __getitem__(self, key):
        return _to_device(self._host[_index(key)])

    def __setitem__(self, key, value) -> None:
        self._host[_index(key)] = _to_host(value, "assignment")

    @property
    def device(self):
        return _DEVICE

    @property
    def real(self):
        return _to_device(self._host.real)

    @real.setter
    def real(self, value):
        self._host.real = _payload(value)

    @property
    def imag(self):
        return _to_device(self._host.imag)

    @imag.setter
    def imag(self, value):
        self._host.imag = _payload(value)

    def __getattr__(self, name: str):
        if name == "_host" or name.startswith("__"):  # _host unset (copy, pickle); no
            raise AttributeError(name)  # __array_interface__ etc.: the host stays unreachable
        attribute = getattr(self._host, name)
        if not callable(attribute):
            return _to_device(attribute) if isinstance(attribute, np.ndarray) else attribute

        @functools.wraps(attribute)
        def method(*args, **kwargs):
            return _to_device(attribute(*_to_host(args, name), **_to_host(kwargs, name)))

        return method


def _payload(value):
    return value._host if isinstance(value, DeviceArray) else value


def _to_host(value, where: str):
    """Device arrays → their NumPy payload (recursively); a host ndarray is a TypeError."""
    if isinstance(value, DeviceArray):
        return value._host
    if isinstance(value, np.ndarray) and value.ndim > 0:
        raise TypeError(f"Unsupported type {type(value)} in cupy {where}: a host array mixed "
                        f"into a device operation")
    if isinstance(value, (list, tuple)):
        return type(value)(_to_host(v, where) for v in value)
    if isinstance(value, dict):
        return {k: _to_host(v, where) for k, v in value.items()}
    return value


def _device_only(value, where: str):
    if isinstance(value, tuple):
        return tuple(_device_only(v, where) for v in value)
    if value is None:
        return None
    if not isinstance(value, DeviceArray):
        raise TypeError(f"cupy {where}: out= must be a device array, got {type(value)}")
    return value._host


def _to_device(value):
    """NumPy results → device arrays; NumPy scalars → 0-d device arrays (as CuPy returns)."""
    if isinstance(value, np.ndarray):
        return DeviceArray(value)
    if isinstance(value, np.generic):
        return DeviceArray(np.asarray(value))
    if isinstance(value, tuple):
        return tuple(_to_device(v) for v in value)
    if isinstance(value, list):
        return [_to_device(v) for v in value]
    return value


def _index(key):
    """Indices: device arrays unwrap; host index arrays are refused (see the module notes)."""
    return _to_host(key, "indexing")


class _Device:
    id = 0

    def __init__(self, index: int = 0) -> None:
        self.id = int(index)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def synchronize(self) -> None:
        return None


_DEVICE = _Device(0)


class _Stream:
    def synchronize(self) -> None:
        return None


class _MemoryPool:
    def used_bytes(self) -> int:
        return 0

    def total_bytes(self) -> int:
        return 0

    def free_bytes(self) -> int:
        return 0

    def free_all_blocks(self) -> None:
        return None


#: free and total bytes the fake device reports (16 GiB of an 80 GiB card).
FAKE_MEMORY = (16 * 2**30, 80 * 2**30)


def _runtime() -> types.SimpleNamespace:
    return types.SimpleNamespace(getDeviceCount=lambda: 1,
                                 memGetInfo=lambda: FAKE_MEMORY)


class _Ufunc:
    """A NumPy ufunc with device semantics (called, or through .reduce/.outer/.at)."""

    def __init__(self, ufunc: np.ufunc) -> None:
        self._ufunc = ufunc
        self.__name__ = ufunc.__name__

    def __call__(self, *args, **kwargs):
        return _device_call(self._ufunc, self.__name__, args, kwargs)

    def __getattr__(self, name: str):
        attribute = getattr(self._ufunc, name)
        if not callable(attribute):
            return attribute
        return _device_function(attribute, f"{self.__name__}.{name}")


def _device_call(func, name: str, args, kwargs):
    args = _to_host(args, name)
    given = kwargs.get("out")
    kwargs = {k: _device_only(v, name) if k == "out" else _to_host(v, name)
              for k, v in kwargs.items()}
    return _returned(func(*args, **kwargs), given)


def _returned(result, given_out):
    """What CuPy returns: the ``out=`` array itself when one was given, else the result."""
    if isinstance(given_out, tuple) and len(given_out) == 1:
        given_out = given_out[0]
    if isinstance(given_out, DeviceArray):
        return given_out
    return _to_device(result)


def _device_function(func, name: str):
    """``func`` with device semantics: host arrays refused, results on the device."""

    @functools.wraps(func)
    def call(*args, **kwargs):
        return _device_call(func, name, args, kwargs)

    return call


def _asarray(name: str):
    numpy_func = getattr(np, name)

    def asarray(obj, *args, **kwargs):
        if isinstance(obj, DeviceArray):
            result = numpy_func(obj._host, *args, **kwargs)
            return DeviceArray(result)
        # a host→device copy: the device array never shares memory with the host one
        return DeviceArray(np.array(numpy_func(obj, *args, **kwargs), copy=True))

    return asarray


def _wrap_namespace(module: types.ModuleType, name: str) -> types.ModuleType:
    """A module whose functions are ``module``'s with device semantics."""
    fake = types.ModuleType(name)
    fake.__file__ = __file__

    def getattr_(attr: str):
        value = getattr(module, attr)
        if isinstance(value, np.ufunc):
            return _Ufunc(value)
        if isinstance(value, type) or not callable(value):
            return value
        return _device_function(value, attr)

    fake.__getattr__ = getattr_
    return fake


def _first_input_on_device(func, name: str):
    """cupyx.scipy.ndimage: input must be a device array; other arguments are lenient."""

    @functools.wraps(func)
    def wrapped(input, *args, **kwargs):
        if not isinstance(input, DeviceArray):
            raise TypeError(f"cupyx.scipy.ndimage.{name}: input must be cupy.ndarray, "
                            f"got {type(input)}")
        args = tuple(_payload(a) for a in args)
        kwargs = {k: _payload(v) for k, v in kwargs.items()}
        return _to_device(func(input._host, *args, **kwargs))

    return wrapped


def _fake_ndimage() -> types.ModuleType:
    import scipy.ndimage as ndi

    fake = types.ModuleType("cupyx.scipy.ndimage")

    def getattr_(attr: str):
        value = getattr(ndi, attr)
        if attr == "generate_binary_structure":
            return lambda *a, **k: DeviceArray(value(*a, **k))
        return _first_input_on_device(value, attr) if callable(value) else value

    fake.__getattr__ = getattr_
    return fake


def _fake_fft() -> types.ModuleType:
    import scipy.fft as sfft

    fake = types.ModuleType("cupyx.scipy.fft")
    for name in ("fft", "ifft", "fftn", "ifftn", "rfft", "irfft", "rfftn", "irfftn",
                 "dctn", "idctn", "dstn", "idstn"):
        setattr(fake, name, _device_function(getattr(sfft, name), name))
    return fake


class _RawModule:
    """``cupy.RawModule``: the elementwise complex_ops kernels run; others skip the test."""

    def __init__(self, code: str = "", options=(), **kwargs) -> None:
        self.code = code

    def get_function(self, name: str):
        if name not in EMULATED_KERNELS:
            import pytest

            pytest.skip(f"CUDA kernel {name} is not emulated (checked on a GPU by "
                        f"tests/test_kernels.py)")
        return functools.partial(_run_complex_kernel, name)


def _run_complex_kernel(name: str, grid, block, args) -> None:
    if name == "complex_to_polar":
        z, magnitude, phase, _ = args
        magnitude._host[...] = np.abs(z._host)
        phase._host[...] = np.angle(z._host)
    else:
        magnitude, phase, out, _ = args
        out._host[...] = magnitude._host * np.exp(1j * phase._host)


def build_modules() -> dict[str, types.ModuleType]:
    """The fake ``cupy``, ``cupy.fft``, ``cupyx``, ``cupyx.scipy(.fft, .ndimage)`` modules."""
    cupy = _wrap_namespace(np, "cupy")
    base_getattr = cupy.__getattr__
    overrides = {name: _asarray(name) for name in HOST_TO_DEVICE}
    overrides.update(
        ndarray=DeviceArray,
        is_available=lambda: True,
        asnumpy=lambda a, stream=None: a.get() if isinstance(a, DeviceArray) else np.asarray(a),
        get_array_module=lambda *arrays: (cupy if any(isinstance(a, DeviceArray)
                                                      for a in arrays) else np),
        get_default_memory_pool=_MemoryPool,
        RawModule=_RawModule,
        cuda=types.SimpleNamespace(Device=_Device, runtime=_runtime(),
                                   get_current_stream=_Stream),
        linalg=_wrap_namespace(np.linalg, "cupy.linalg"),
        random=_wrap_namespace(np.random, "cupy.random"),
        fft=_wrap_namespace(np.fft, "cupy.fft"),
    )
    cupy.__getattr__ = lambda attr: overrides[attr] if attr in overrides else base_getattr(attr)
    cupy.__version__ = "emulated"
    cupyx = types.ModuleType("cupyx")
    scipy = types.ModuleType("cupyx.scipy")
    scipy.fft = _fake_fft()
    scipy.ndimage = _fake_ndimage()
    cupyx.scipy = scipy
    return {"cupy": cupy, "cupy.fft": overrides["fft"], "cupyx": cupyx, "cupyx.scipy": scipy,
            "cupyx.scipy.fft": scipy.fft, "cupyx.scipy.ndimage": scipy.ndimage}


def _kernels_only_on_request() -> None:
    """Stages use their NumPy twins unless a caller asks for a kernel (use_kernel=True)."""
    from qsmliver.fatwater import _gpu as fatwater_gpu
    from qsmliver.optim import fused
    from qsmliver.relaxometry import r2star

    fused._use_kernel = lambda xp, use_kernel: xp is not np and use_kernel is True
    fatwater_gpu._kernel_wanted = lambda xp, use_kernel: xp is not np and use_kernel is True
    original = r2star._kernel_applies

    def kernel_applies(xp, method, options, use_kernel):
        return False if use_kernel is None else original(xp, method, options, use_kernel)

    r2star._kernel_applies = kernel_applies


def install() -> types.ModuleType:
    """Make the fake the process's CuPy; :mod:`qsmliver.backend` then sees a usable GPU.

    Returns
    -------
    module
        The fake ``cupy``.
    """
    from qsmliver import backend

    modules = build_modules()
    sys.modules.update(modules)
    backend._cupy_state.clear()
    backend._cupy_fft_namespace.cache_clear()
    backend._kernel_cache.clear()
    _kernels_only_on_request()
    assert backend.cupy_available()
    return modules["cupy"]
