"""Time every QSM stage and the whole brain chain on one device; write JSON.

For each matrix size (default 128³ and 256³, 1.5 mm / 0.9 mm voxels of the brain phantom,
6 echoes) every stage is run once after the phantom is generated, and the record holds its
wall time (s), the number of FFT calls it made (counted by wrapping the backend's FFT
namespace), its peak traced memory (host: tracemalloc, which sees NumPy buffers; device: CuPy
memory pool high-water mark), and its time divided by the time of one bare complex64 FFT of the
same volume on the same device (so a stage reads as "N FFTs worth").

    python benchmarks/pipeline.py [--device cpu|cuda] [--sizes 128 256] [--quick]
        [--bgremove vsharp pdf lbv ...] [--inversion tkd tv_admm medi ...]

``--quick`` is a smoke test (48³, the fastest methods). Results go to
``benchmarks/results/pipeline-<device>.json`` (``pipeline-quick-...`` for ``--quick``).
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from run import (  # benchmarks/run.py (the script's own folder is on sys.path)
    software_versions,
    write_record,
)

from qsmliver import backend

ROOT = Path(__file__).resolve().parents[1]
_FFT_NAMES = ("fftn", "ifftn", "rfftn", "irfftn", "dctn", "idctn", "dstn", "idstn")


class FFTCounter:
    """Counts calls to the transforms of a backend FFT namespace (patched in place).

    The namespace is cached per backend, so a second counter on it (the next matrix size)
    takes over the wrappers the first one installed rather than leaving them counting into
    the old counter.
    """

    def __init__(self, namespace) -> None:
        self.count = 0
        for name in _FFT_NAMES:
            function = getattr(namespace, name, None)
            if function is None:
                continue
            slot = getattr(function, "_counter_slot", None)
            if slot is not None:
                slot[0] = self
            else:
                setattr(namespace, name, self._wrap(function))

    def _wrap(self, function: Callable) -> Callable:
        slot = [self]

        @functools.wraps(function)
        def counted(*args, **kwargs):
            slot[0].count += 1
            return function(*args, **kwargs)

        counted._counter_slot = slot  # type: ignore[attr-defined]
        return counted


def _synchronise(xp) -> None:
    if xp is not np:
        xp.cuda.Device().synchronize()


def measure(function: Callable[[], Any], xp, counter: FFTCounter) -> tuple[Any, dict]:
    """Run once; wall time, FFT calls and peak memory (MiB)."""
    counter.count = 0
    if xp is np:
        tracemalloc.start()
    else:
        pool = xp.get_default_memory_pool()
        pool.free_all_blocks()
        start_bytes = pool.used_bytes()
    start = time.perf_counter()
    value = function()
    _synchronise(xp)
    seconds = time.perf_counter() - start
    if xp is np:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        memory = {"peak_host_mib": round(peak / 2**20, 1)}
    else:
        memory = {"device_pool_total_mib": round(pool.total_bytes() / 2**20, 1),
                  "device_pool_used_delta_mib": round(
                      (pool.used_bytes() - start_bytes) / 2**20, 1)}
    return value, {"seconds": round(seconds, 4), "fft_calls": counter.count, **memory}


def run_size(n: int, device: backend.Device, bgremove: list[str], inversion: list[str],
             quick: bool) -> dict[str, Any]:
    from qsmliver.bgremove import remove_background
    from qsmliver.inversion import invert_dipole
    from qsmliver.mask import brain_mask
    from qsmliver.phase import estimate_field
    from qsmliver.pipeline import field_for_background, recon
    from qsmliver.relaxometry import fit_r2star
    from qsmliver.simulate import brain_phantom

    voxel = 192.0 / n  # the same head at every matrix size
    started = time.perf_counter()
    phantom = brain_phantom(shape=(n, n, n), voxel_size_mm=(voxel,) * 3, snr=100)
    generation = time.perf_counter() - started
    gre = phantom.gre.to(device)
    xp = backend.get_array_module(gre.signal)
    fft = backend.fft(xp)
    counter = FFTCounter(fft)
    signal = gre.signal
    volume = signal[..., 0].copy()
    fft.fftn(volume)
    _synchronise(xp)
    _, bare = measure(lambda: fft.fftn(volume), xp, counter)
    te = gre.te_s
    vox = tuple(gre.voxel_size_mm)
    b0_dir = tuple(gre.b0_dir)
    magnitude = xp.abs(signal)
    stages: dict[str, dict] = {}
    mask, stages["mask"] = measure(lambda: brain_mask(magnitude, vox), xp, counter)
    fit, stages["field_complex_quality"] = measure(
        lambda: estimate_field(signal, te, mask=mask, voxel_size_mm=vox), xp, counter)
    _, stages["r2star_loglinear"] = measure(
        lambda: fit_r2star(magnitude, te, method="loglinear", mask=mask), xp, counter)
    # the chain's own hand-over: aliased voxels leave the mask, weights from the field noise
    prepared, stages["field_for_background"] = measure(
        lambda: field_for_background(fit, mask, te, gre.b0_t), xp, counter)
    mask, field_ppm, weight = prepared.mask, prepared.field_ppm, prepared.weight
    local = None
    for method in bgremove:
        result, stages[f"bgremove_{method}"] = measure(
            lambda m=method: remove_background(field_ppm, mask, vox, b0_dir, m, weight=weight),
            xp, counter)
        if local is None:
            local = result
    first_echo = magnitude[..., 0]
    for method in inversion:
        _, stages[f"inversion_{method}"] = measure(
            lambda m=method: invert_dipole(local.local_field_ppm, local.mask, vox, b0_dir, m,
                                           weight=weight * local.mask, magnitude=first_echo),
            xp, counter)
    _, stages["whole_chain_default"] = measure(lambda: recon(gre, "brain", device=str(device)),
                                               xp, counter)
    for record in stages.values():
        record["ratio_to_fft"] = round(record["seconds"] / bare["seconds"], 1)
    return {"shape": [n, n, n], "echoes": int(gre.n_echoes), "voxel_mm": voxel,
            "phantom_generation_s": round(generation, 2),
            "bare_fft_complex64_s": bare["seconds"], "stages": stages}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--bgremove", nargs="+", default=["vsharp", "pdf", "lbv"])
    parser.add_argument("--inversion", nargs="+",
                        default=["tkd", "tikhonov", "tv_admm", "medi", "ilsqr", "ndi"])
    parser.add_argument("--quick", action="store_true", help="48³ smoke run, fast methods")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.bgremove, args.inversion = [48], ["vsharp"], ["tkd"]
    device = backend.resolve_device(args.device)
    record = {
        "software": software_versions(),
        "device": str(device),
        "machine": platform.machine(),
        "fft_workers": backend.fft(np).workers,
        "baseline": "bare_fft_complex64_s: one complex64 fftn of one echo volume",
        "sizes": [],
    }
    for n in args.sizes:
        record["sizes"].append(run_size(n, device, args.bgremove, args.inversion, args.quick))
        print(json.dumps(record["sizes"][-1], indent=1), flush=True)
    tag = "quick-" if args.quick else ""
    write_record(record, args.output / f"pipeline-{tag}{str(device).replace(':', '')}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
