"""Time the brain chain and the fused CUDA kernels on one device (GPU or CPU); write JSON.

The cases of ``benchmarks/pipeline.py`` (brain phantom; mask, complex field fit, R2*,
background removal, dipole inversions, the whole default chain), on a 256×256×128 matrix with
8 echoes (``--quick``: 64³, the fast methods only), plus the custom kernels against the chained
array code they replace:

``tv_update_*``
    one TV-ADMM z₁/s₁ update on the padded TV work grid of the case: ``chained`` (today's
    ``qsmliver.inversion.tv`` sequence: gradient, soft threshold, dual update, −divergence),
    ``two_kernels`` (``tv_shrink_update`` in place + ``tv_grad_adjoint``) and ``fused``
    (``tv_shrink_update_adjoint`` with a ping-pong buffer);
``r2star_truncation_*``
    the "truncation" R2* fit in the brain mask, ``vectorised`` (``fit_r2star``) against
    ``kernel`` (``fit_r2star_truncation(use_kernel=True)``).

On the CPU the "kernel" variants run their NumPy twins (recorded as ``implementation``).

``abdomen``
    the liver chain of issue 8 on an abdomen phantom of 256×224×64 with 12 echoes at 1.5 T
    (``--quick``: 48×40×24×12): ``qsmliver.pipeline.recon(gre, "liver")`` with its default
    configuration (fat-water separation, tissue mask, background removal, dipole inversion,
    χ reference), each stage timed by the pipeline's own synchronising timer
    (``provenance["Timings_s"]``) and the whole call, all also in "N FFTs worth" of one
    complex64 echo volume of the abdomen matrix. ``--skip-abdomen`` leaves it out.

Every record has the wall time (s; the device is synchronised before a timer stops), the
number of FFT calls (the FFT namespace is wrapped as in ``pipeline.py``), the peak memory
(host: tracemalloc; GPU: the CuPy memory pool's high-water mark, i.e. the bytes the pool holds
after the stage when it was emptied before it, and the bytes in use before it) and the time in
units of one bare complex64 FFT of one echo volume on the same device ("N FFTs worth").
Kernel comparisons are the median of ``--repeat`` timed runs after one warm-up run (which also
compiles the kernel); pipeline stages are timed once after ``--warmup`` untimed runs (default
1 on a GPU, for CuPy's kernel compilation and cuFFT plans, and 0 on the CPU).

    python benchmarks/gpu.py --device cuda [--quick] [--repeat 5] [--output DIR]

Writes ``<output>/pipeline-<device-name-slug>.json`` (``pipeline-quick-<slug>.json`` with
``--quick``), by default in ``benchmarks/results``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import platform
import re
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from run import (  # benchmarks/run.py (the script's own folder is on sys.path)
    software_versions,
    write_record,
)

from qsmliver import backend

ROOT = Path(__file__).resolve().parents[1]
BRAIN_SHAPE = (256, 256, 128)
QUICK_SHAPE = (64, 64, 64)
#: Abdomen matrix of issue 8 (256×224×64, 12 echoes at 1.5 T) and its --quick stand-in.
ABDOMEN_SHAPE = (256, 224, 64)
ABDOMEN_QUICK_SHAPE = (48, 40, 24)
ABDOMEN_FOV_MM = (380.0, 332.5, 192.0)
#: 8 echoes, 4 ms apart (3 T brain protocol).
TE_S = tuple(0.004 * (k + 1) for k in range(8))
FIELD_OF_VIEW_MM = 192.0


def _load(name: str) -> ModuleType:
    """A sibling benchmark script as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"_qsmliver_bench_{name}",
                                                  Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_pipeline = _load("pipeline")
_run = _load("run")
FFTCounter = _pipeline.FFTCounter
synchronise = _pipeline._synchronise


def slug(text: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"nvidia-h100-80gb-hbm3"``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def _pool(xp):
    return None if xp is np else xp.get_default_memory_pool()


def measure(function: Callable[[], Any], xp, counter: FFTCounter, *, warmup: int = 0,
            repeat: int = 1) -> tuple[Any, dict[str, Any]]:
    """Run ``warmup`` untimed calls, then ``repeat`` timed ones; median time, FFTs, memory."""
    for _ in range(warmup):
        function()
    synchronise(xp)
    pool = _pool(xp)
    if pool is None:
        tracemalloc.start()
    else:
        pool.free_all_blocks()
        baseline = pool.used_bytes()
    times = []
    value = None
    for _ in range(repeat):
        counter.count = 0
        start = time.perf_counter()
        value = function()
        synchronise(xp)
        times.append(time.perf_counter() - start)
    if pool is None:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        memory = {"peak_host_mib": round(peak / 2**20, 1)}
    else:
        memory = {"peak_device_mib": round(pool.total_bytes() / 2**20, 1),
                  "device_in_use_before_mib": round(baseline / 2**20, 1)}
    record = {"seconds": round(statistics.median(times), 5), "fft_calls": counter.count,
              **memory}
    if repeat > 1:
        record["repeat"] = repeat
        record["min_seconds"] = round(min(times), 5)
    return value, record


def device_name(device: backend.Device) -> str:
    return _run.device_name(device)


def _kernel_cases(xp, counter, local_field, mask, voxel, b0_dir, magnitude, te, sigma,
                  repeat: int) -> dict[str, dict]:
    from qsmliver.inversion._common import make_grid
    from qsmliver.optim.fused import tv_grad_adjoint, tv_shrink_update, tv_shrink_update_adjoint
    from qsmliver.relaxometry import fit_r2star
    from qsmliver.relaxometry._gpu import fit_r2star_truncation

    kernel_impl = "cuda-kernel" if xp is not np else "numpy-twin"
    cases: dict[str, dict] = {}
    grid = make_grid(local_field, mask, np.asarray(voxel), np.asarray(b0_dir) / np.linalg.norm(
        b0_dir))
    dtype = grid.dtype
    chi = grid.embed(local_field)
    rng = np.random.default_rng(0)
    s1_host = (1e-3 * rng.standard_normal((3, *grid.shape))).astype(dtype)
    s1 = xp.asarray(s1_host)
    threshold = dtype.type(1.0 / 100.0)  # λ/ρ with FANSI's ρ = 100 λ

    def chained():
        u, s1_new = tv_shrink_update(chi, s1, threshold, grid.voxel, use_kernel=False)
        return tv_grad_adjoint(u, grid.voxel, use_kernel=False), s1_new

    def two_kernels(dual):
        u, s1_new = tv_shrink_update(chi, dual, threshold, grid.voxel, inplace=True)
        return tv_grad_adjoint(u, grid.voxel), s1_new

    ping = xp.empty_like(s1)

    def fused(dual):
        return tv_shrink_update_adjoint(chi, dual, threshold, grid.voxel, s1_out=ping)

    reference, cases["tv_update_chained"] = measure(chained, xp, counter, warmup=1,
                                                    repeat=repeat)
    cases["tv_update_chained"]["implementation"] = "array-ops"
    for name, function in (("tv_update_two_kernels", two_kernels), ("tv_update_fused", fused)):
        work = s1.copy()  # the in-place variant evolves it over the runs: timing only
        _, cases[name] = measure(lambda f=function, w=work: f(w), xp, counter, warmup=1,
                                 repeat=repeat)
        result = function(s1.copy())
        cases[name]["implementation"] = kernel_impl
        cases[name]["max_abs_diff_vs_chained"] = float(max(
            float(xp.max(xp.abs(result[0] - reference[0]))),
            float(xp.max(xp.abs(result[1] - reference[1])))))
        cases[name]["speedup_vs_chained"] = round(
            cases["tv_update_chained"]["seconds"] / max(cases[name]["seconds"], 1e-9), 2)
    for record in (cases["tv_update_chained"], cases["tv_update_two_kernels"],
                   cases["tv_update_fused"]):
        record["grid_shape"] = list(grid.shape)
        record["dtype"] = str(np.dtype(dtype))

    vectorised, cases["r2star_truncation_vectorised"] = measure(
        lambda: fit_r2star(magnitude, te, method="truncation", mask=mask, noise_sigma=sigma,
                           use_kernel=False),
        xp, counter, warmup=1 if xp is not np else 0, repeat=repeat)
    cases["r2star_truncation_vectorised"]["implementation"] = "array-ops"
    kernel_fit, cases["r2star_truncation_kernel"] = measure(
        lambda: fit_r2star_truncation(magnitude, te, mask=mask, noise_sigma=sigma,
                                      use_kernel=True),
        xp, counter, warmup=1 if xp is not np else 0, repeat=repeat)
    record = cases["r2star_truncation_kernel"]
    record["implementation"] = kernel_fit.parameters["implementation"]
    inside = mask & (vectorised.r2star_per_s > 0)
    ref = vectorised.r2star_per_s[inside]
    rel = xp.abs(kernel_fit.r2star_per_s[inside] - ref) / ref
    record["median_rel_diff_vs_vectorised"] = float(xp.median(rel)) if rel.size else 0.0
    record["max_rel_diff_vs_vectorised"] = float(xp.max(rel)) if rel.size else 0.0
    record["speedup_vs_vectorised"] = round(
        cases["r2star_truncation_vectorised"]["seconds"] / max(record["seconds"], 1e-9), 2)
    record["voxels"] = cases["r2star_truncation_vectorised"]["voxels"] = int(mask.sum())
    return cases


def run_case(shape: tuple[int, int, int], device: backend.Device, bgremove: list[str],
             inversion: list[str], *, warmup: int, repeat: int,
             whole_chain: bool = True) -> dict[str, Any]:
    from qsmliver.bgremove import remove_background
    from qsmliver.inversion import invert_dipole
    from qsmliver.mask import brain_mask
    from qsmliver.phase import estimate_field
    from qsmliver.pipeline import field_for_background, recon
    from qsmliver.relaxometry import estimate_noise_sigma, fit_r2star
    from qsmliver.simulate import brain_phantom

    voxel_mm = tuple(FIELD_OF_VIEW_MM / n for n in shape)
    started = time.perf_counter()
    phantom = brain_phantom(shape=shape, voxel_size_mm=voxel_mm, te_s=TE_S, snr=100)
    generation = time.perf_counter() - started
    gre = phantom.gre.to(device)
    xp = backend.get_array_module(gre.signal)
    fft = backend.fft(xp)
    counter = FFTCounter(fft)
    signal = gre.signal
    volume = signal[..., 0].copy()
    fft.fftn(volume)
    synchronise(xp)
    _, bare = measure(lambda: fft.fftn(volume), xp, counter, warmup=1, repeat=max(3, repeat))
    te = gre.te_s
    vox = tuple(gre.voxel_size_mm)
    b0_dir = tuple(gre.b0_dir)
    magnitude = xp.abs(signal)
    stages: dict[str, dict] = {}

    def stage(name: str, function: Callable[[], Any]) -> Any:
        value, stages[name] = measure(function, xp, counter, warmup=warmup)
        return value

    mask = stage("mask", lambda: brain_mask(magnitude, vox))
    fit = stage("field_complex_quality",
                lambda: estimate_field(signal, te, mask=mask, voxel_size_mm=vox))
    stage("r2star_loglinear", lambda: fit_r2star(magnitude, te, method="loglinear", mask=mask))
    sigma = estimate_noise_sigma(magnitude)
    # the chain's own hand-over: aliased voxels leave the mask, weights from the field noise
    prepared = stage("field_for_background", lambda: field_for_background(fit, mask, te, gre.b0_t))
    mask, field_ppm, weight = prepared.mask, prepared.field_ppm, prepared.weight
    local = None
    for method in bgremove:
        result = stage(f"bgremove_{method}",
                       lambda m=method: remove_background(field_ppm, mask, vox, b0_dir, m,
                                                          weight=weight))
        local = result if local is None else local
    first_echo = magnitude[..., 0]
    for method in inversion:
        stage(f"inversion_{method}",
              lambda m=method: invert_dipole(local.local_field_ppm, local.mask, vox, b0_dir, m,
                                             weight=weight * local.mask, magnitude=first_echo))
    if whole_chain:
        stage("whole_chain_default", lambda: recon(gre, "brain", device=str(device)))
    kernels = _kernel_cases(xp, counter, local.local_field_ppm, local.mask, vox, b0_dir,
                            magnitude, te, sigma, repeat)
    for record in (*stages.values(), *kernels.values()):
        record["ratio_to_fft"] = round(record["seconds"] / bare["seconds"], 1)
    return {"shape": list(shape), "echoes": int(gre.n_echoes), "voxel_mm": list(voxel_mm),
            "phantom_generation_s": round(generation, 2),
            "bare_fft_complex64_s": bare["seconds"], "stages": stages, "kernels": kernels}


def run_abdomen(shape: tuple[int, int, int], device: backend.Device, *,
                warmup: int) -> dict[str, Any]:
    """The liver chain (``recon(gre, "liver")``) on an abdomen phantom, stage by stage."""
    from qsmliver.pipeline import recon
    from qsmliver.simulate import abdomen_phantom

    voxel_mm = tuple(f / n for f, n in zip(ABDOMEN_FOV_MM, shape, strict=True))
    started = time.perf_counter()
    phantom = abdomen_phantom(shape=shape, voxel_size_mm=voxel_mm, b0_t=1.5, snr=50.0,
                              lic_mg_per_g=2.0, liver_pdff_percent=5.0)
    generation = time.perf_counter() - started
    gre = phantom.gre.to(device)
    xp = backend.get_array_module(gre.signal)
    fft = backend.fft(xp)
    counter = FFTCounter(fft)
    volume = xp.ascontiguousarray(gre.signal[..., 0].astype(np.complex64))
    _, bare = measure(lambda: fft.fftn(volume), xp, counter, warmup=1, repeat=3)
    result, whole = measure(lambda: recon(gre, "liver", device=str(device)), xp, counter,
                            warmup=warmup)
    stages: dict[str, dict] = {}
    for name, seconds in result.provenance.get("Timings_s", {}).items():
        stages[name] = {"seconds": seconds,
                        "ratio_to_fft": round(seconds / bare["seconds"], 1)}
    whole.pop("fft_calls", None)  # recon builds its own FFT namespace: not counted here
    whole["ratio_to_fft"] = round(whole["seconds"] / bare["seconds"], 1)
    stages["whole_chain_liver"] = whole
    return {"shape": list(shape), "echoes": int(gre.n_echoes), "voxel_mm": list(voxel_mm),
            "b0_t": float(gre.b0_t), "phantom_generation_s": round(generation, 2),
            "bare_fft_complex64_s": bare["seconds"], "stages": stages,
            "maps": sorted(result.maps)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--quick", action="store_true",
                        help="64³ smoke run with the fast methods (vsharp, tkd)")
    parser.add_argument("--bgremove", nargs="+", default=["vsharp", "pdf", "lbv"])
    parser.add_argument("--inversion", nargs="+",
                        default=["tkd", "tikhonov", "tv_admm", "medi", "ilsqr", "ndi"])
    parser.add_argument("--repeat", type=int, default=5,
                        help="timed runs of each kernel comparison (median reported)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed runs before each stage (default 1 on a GPU, 0 on CPU)")
    parser.add_argument("--skip-chain", action="store_true",
                        help="leave out the whole-chain stage (for smoke tests)")
    parser.add_argument("--skip-abdomen", action="store_true",
                        help="leave out the abdomen (liver chain) case")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    shape = BRAIN_SHAPE
    if args.quick:
        shape, args.bgremove, args.inversion = QUICK_SHAPE, ["vsharp"], ["tkd"]
    device = backend.resolve_device(args.device)
    if args.quick:
        args.repeat = min(args.repeat, 3 if device.kind == "cuda" else 1)
    warmup = args.warmup if args.warmup is not None else int(device.kind == "cuda")
    name = device_name(device)
    record: dict[str, Any] = {
        "software": software_versions(),
        "device": str(device),
        "device_name": name,
        "machine": platform.machine(),
        "fft_workers": backend.fft(np).workers,
        "baseline": "bare_fft_complex64_s: one complex64 fftn of one echo volume",
        "warmup_runs_per_stage": warmup,
        "sizes": [],
    }
    if device.kind == "cuda":
        cupy = backend._cupy()
        record["software"]["cupy"] = cupy.__version__
        record["software"]["cuda_runtime"] = int(cupy.cuda.runtime.runtimeGetVersion())
        record["device_memory_total_mib"] = round(backend.device_memory_info(device)[1] / 2**20)
    # CuPy works on the current device: make it the requested one (cuda:N)
    context = (backend._cupy().cuda.Device(device.index) if device.kind == "cuda"
               else contextlib.nullcontext())
    with context:
        record["sizes"].append(run_case(shape, device, args.bgremove, args.inversion,
                                        warmup=warmup, repeat=max(1, args.repeat),
                                        whole_chain=not args.skip_chain))
        print(json.dumps(record["sizes"][-1], indent=1), flush=True)
        if not args.skip_abdomen:
            record["abdomen"] = run_abdomen(ABDOMEN_QUICK_SHAPE if args.quick
                                            else ABDOMEN_SHAPE, device, warmup=warmup)
            print(json.dumps(record["abdomen"], indent=1), flush=True)
    tag = "quick-" if args.quick else ""
    write_record(record, args.output / f"pipeline-{tag}{slug(name)}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
