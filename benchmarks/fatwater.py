"""Time fat-water separation of the abdomen phantom on the CPU; write JSON.

The default volume is the 128 × 104 × 48 abdomen phantom with 12 echoes at 1.5 T (the seed
protocol, TE1 0.99 ms, ΔTE 1.41 ms, SNR 50, a strong shim gradient). ``separate_fat_water`` is
run once (graph cut with its default object-based field prior, automatic signal mask) and the
record holds its wall time, the per-stage timings it reports in ``parameters["timings_s"]``, its
peak traced host memory (tracemalloc, which sees NumPy buffers) and the peak resident set size
of the process (``ru_maxrss``), with the swap fraction and field error against the phantom
truth as a sanity check. A second run in the same process without the field prior
(``field_prior="none"``) is the baseline of the time ratio ``seconds_ratio_to_without_prior``.

    python benchmarks/fatwater.py [--quick] [--output DIR]

``--quick`` is a smoke run (48 × 40 × 20). Results go to ``benchmarks/results/fatwater-cpu.json``
(``fatwater-quick-cpu.json`` for ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
from run import (  # benchmarks/run.py (the script's own folder is on sys.path)
    software_versions,
    write_record,
)

ROOT = Path(__file__).resolve().parents[1]
FULL_SHAPE = (128, 104, 48)
QUICK_SHAPE = (48, 40, 20)
#: Smooth shim inhomogeneity of well over ±150 Hz (as in tests/test_fatwater_separation.py).
STRONG_SHIM = {"x": 2.5, "y": -1.5, "z2": 1.0}


def run(shape: tuple[int, int, int], b0_t: float = 1.5) -> dict[str, Any]:
    """Generate the phantom, separate once, return the timing/memory/accuracy record."""
    from qsmliver.fatwater import separate_fat_water
    from qsmliver.simulate import abdomen_phantom

    started = time.perf_counter()
    phantom = abdomen_phantom(shape=shape, b0_t=b0_t, snr=50.0, shim_ppm=STRONG_SHIM, seed=2)
    generation = time.perf_counter() - started
    gre = phantom.gre
    tracemalloc.start()
    start = time.perf_counter()
    result = separate_fat_water(gre.signal, gre.te_s, gre.b0_t,
                                voxel_size_mm=gre.voxel_size_mm, b0_dir=gre.b0_dir)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # Baseline in the same process: the graph cut without the object-based field prior.
    start = time.perf_counter()
    baseline = separate_fat_water(gre.signal, gre.te_s, gre.b0_t,
                                  voxel_size_mm=gre.voxel_size_mm, field_prior="none")
    baseline_seconds = time.perf_counter() - start
    prior = result.parameters["graphcut"].get("prior", {})
    tissue = phantom.masks["tissue"]

    def swap_fraction(separated) -> float:
        swapped = np.abs(separated.pdff_percent - phantom.truth["pdff_percent"])[tissue] > 40
        return round(float(np.mean(swapped)), 6)

    period = result.parameters["field_period_hz"]
    error = (result.field_hz - phantom.truth["total_field_hz"])[tissue]
    error -= period * np.round(np.median(error) / period)
    liver = phantom.masks["liver"]
    timings = {k: round(float(v), 4) for k, v in result.parameters.get("timings_s", {}).items()}
    return {
        "shape": list(shape), "echoes": int(gre.n_echoes), "b0_t": b0_t,
        "voxel_mm": [float(v) for v in gre.voxel_size_mm],
        "masked_voxels": int(np.count_nonzero(result.mask)),
        "phantom_generation_s": round(generation, 2),
        "seconds": round(seconds, 4),
        "stages_s": timings,
        "peak_host_mib_tracemalloc": round(peak / 2**20, 1),
        "swap_fraction": swap_fraction(result),
        "field_prior": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in prior.items()},
        "without_field_prior": {
            "seconds": round(baseline_seconds, 4),
            "fieldmap_s": round(float(baseline.parameters["timings_s"]["fieldmap_s"]), 4),
            "swap_fraction": swap_fraction(baseline),
        },
        "seconds_ratio_to_without_prior": round(seconds / baseline_seconds, 3),
        "field_abs_error_median_hz": round(float(np.median(np.abs(error))), 3),
        "liver_pdff_median_percent": round(float(np.median(result.pdff_percent[liver])), 3),
        "liver_pdff_truth_percent": round(float(np.median(
            phantom.truth["pdff_percent"][liver])), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="48 × 40 × 20 smoke run")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    shape = QUICK_SHAPE if args.quick else FULL_SHAPE
    size = run(shape)
    # ru_maxrss is KiB on Linux: the process peak, phantom generation included.
    size["peak_rss_mib_process"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    record = {
        "software": software_versions(),
        "device": "cpu",
        "machine": platform.machine(),
        "method": "graphcut",
        "note": "one run after phantom generation; stages_s from parameters['timings_s']",
        "sizes": [size],
    }
    print(json.dumps(size, indent=1), flush=True)
    write_record(record, args.output / f"fatwater-{'quick-' if args.quick else ''}cpu.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
