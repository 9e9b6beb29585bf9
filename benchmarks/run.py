"""Time the foundation stages on one device and write a JSON result.

Each case is timed as the best of ``--repeat`` runs and reported in seconds and as a ratio to
the time of one bare FFT of the same volume on the same device, measured in the same process
("N FFTs worth"). On CuPy, the device is synchronised before each timer stops.

    python benchmarks/run.py --output benchmarks/results [--device cpu|cuda] [--small]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from qsmliver import __version__, backend
from qsmliver.complexops import complex_to_polar, polar_to_complex
from qsmliver.data import MultiEchoGRE

BRAIN_SHAPE = (256, 256, 128)
BRAIN_ECHOES = 8


def _synchronise(xp) -> None:
    if xp is not np:
        xp.cuda.Device().synchronize()


def best_time(function: Callable[[], object], xp, repeat: int) -> float:
    """Best wall time of ``repeat`` calls in seconds (one untimed warm-up call first)."""
    function()
    _synchronise(xp)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        _synchronise(xp)
        times.append(time.perf_counter() - start)
    return min(times)


def device_name(device: backend.Device) -> str:
    if device.kind == "cpu":
        return f"cpu-{platform.processor() or platform.machine()}-{backend.fft(np).workers}threads"
    cupy = backend._cupy()
    props = cupy.cuda.runtime.getDeviceProperties(device.index)
    return props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])


def run(device_request: str, small: bool, repeat: int) -> dict:
    device = backend.resolve_device(device_request)
    shape = (64, 64, 32) if small else BRAIN_SHAPE
    echoes = 3 if small else BRAIN_ECHOES
    rng = np.random.default_rng(0)
    host = (rng.standard_normal((*shape, echoes), dtype=np.float32)
            + 1j * rng.standard_normal((*shape, echoes), dtype=np.float32)).astype(np.complex64)
    data = backend.to_device(host, device)
    xp = backend.get_array_module(data)
    fft = backend.fft(xp)
    volume = data[..., 0].copy()

    cases: dict[str, float] = {}
    cases["fft_3d_complex64"] = best_time(lambda: fft.fftn(volume), xp, repeat)
    cases["complex_to_polar_all_echoes"] = best_time(lambda: complex_to_polar(data), xp, repeat)
    magnitude, phase = complex_to_polar(data)
    cases["polar_to_complex_all_echoes"] = best_time(lambda: polar_to_complex(magnitude, phase),
                                                     xp, repeat)
    cases["host_to_device_and_back"] = best_time(
        lambda: backend.to_numpy(backend.to_device(host, device)), xp, repeat)

    gre = MultiEchoGRE(host, te_s=np.arange(1, echoes + 1) * 0.004, b0_t=3.0)
    with tempfile.TemporaryDirectory() as folder:
        from qsmliver.io.nifti import read_nifti_auto
        from qsmliver.io.writers import write_gre_nifti

        prefix = Path(folder) / "bench"
        cases["nifti_write_mag_phase"] = best_time(
            lambda: write_gre_nifti(gre, prefix, overwrite=True), np, max(1, repeat // 2))
        cases["nifti_read_mag_phase"] = best_time(
            lambda: read_nifti_auto(Path(f"{prefix}_mag.nii.gz")), np, max(1, repeat // 2))

    if device.kind == "cpu":
        from qsmliver.simulate import abdomen_phantom, brain_phantom

        phantom_shapes = ({"shape": (48, 48, 40)}, {"shape": (48, 40, 20)}) if small else ({}, {})
        cases["brain_phantom_default"] = best_time(
            lambda: brain_phantom(**phantom_shapes[0]), np, 1)
        cases["abdomen_phantom_default"] = best_time(
            lambda: abdomen_phantom(**phantom_shapes[1]), np, 1)

    baseline = cases["fft_3d_complex64"]
    return {
        "software": software_versions(),
        "device": str(device),
        "device_name": device_name(device),
        "shape": list(shape),
        "echoes": echoes,
        "repeat": repeat,
        "baseline": "fft_3d_complex64: one complex64 FFT of one echo volume, same device",
        "seconds": cases,
        "ratio_to_fft": {k: v / baseline for k, v in cases.items()},
    }


def software_versions() -> dict[str, str]:
    """The versions every benchmark record names: qsmliver, NumPy, SciPy and Python."""
    import scipy

    return {"qsmliver": __version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "python": platform.python_version()}


def write_record(record: dict, path: Path) -> Path:
    """Write a benchmark record as indented JSON (creating the folder) and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--small", action="store_true", help="tiny volume (smoke test)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    result = run(args.device, args.small, args.repeat)
    json.dump(result["seconds"], sys.stdout, indent=2)
    print()
    tag = "small-" if args.small else ""
    write_record(result, args.output / f"foundation-{tag}{result['device'].replace(':', '')}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
