"""Cohort throughput of ``qsmliver batch``: subjects per hour with 1 and with 2 local workers.

A synthetic BIDS cohort of brain phantoms (:func:`qsmliver.batch.synthetic.write_synthetic_cohort`,
default 8 subjects of 48³ with 4 echoes) is processed from scratch once per worker count on a
fresh ``LocalCluster`` (worker processes, 1 thread each) into its own output folder. The record
holds, per worker count, the wall time of the whole run (cluster start-up, every subject, the
atomic commits; not the group step), subjects per hour from that wall time, the per-subject
processing times reported by the workers, and the speed-up over one worker. The machine's CPU
count and load average before and after each run are recorded too, since other work on the
machine changes the result.

    python benchmarks/batch.py [--subjects 8] [--size 48] [--echoes 4] [--workers 1 2]
        [--inversion tv_admm] [--quick]

``--quick`` is a smoke run (3 subjects of 32³, TKD). Results go to
``benchmarks/results/batch-cpu.json`` (``batch-quick-cpu.json`` for ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from run import (  # benchmarks/run.py (the script's own folder is on sys.path)
    software_versions,
    write_record,
)

ROOT = Path(__file__).resolve().parents[1]


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not available on this platform
        return []


def run_workers(bids: Path, out: Path, workers: int, config: dict[str, Any]) -> dict[str, Any]:
    """Process the whole cohort with ``workers`` local worker processes."""
    from qsmliver.batch import ClusterSettings, plan_batch, read_record, run_batch

    tasks = plan_batch(bids, out, config=config, device="cpu")
    load_before = _load()
    started = time.perf_counter()
    summary = run_batch(tasks, ClusterSettings(workers=workers, threads_per_worker=1,
                                               dashboard_address=None),
                        progress=False, echo=lambda line: None)
    wall = time.perf_counter() - started
    records = [read_record(t.record_path) for t in tasks if t.unit in summary.succeeded]
    seconds = [record["Seconds"] for record in records]
    methods = sorted({json.loads((t.output_dir / "anat" / f"{t.unit}_Chimap.json").read_text())
                      ["Method"] for t in tasks if t.unit in summary.succeeded})
    return {
        "workers": workers, "subjects": len(tasks), "succeeded": len(summary.succeeded),
        "failed": len(summary.failed), "chi_method": methods, "wall_s": round(wall, 2),
        "subjects_per_hour": round(3600.0 * len(summary.succeeded) / wall, 1),
        "per_subject_s": {"mean": round(statistics.mean(seconds), 2),
                          "min": round(min(seconds), 2), "max": round(max(seconds), 2)}
        if seconds else None,
        "load_average_before": load_before, "load_average_after": _load(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--size", type=int, default=48, help="matrix size (cube)")
    parser.add_argument("--echoes", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--inversion", default=None,
                        help="inversion method (default: the pipeline default)")
    parser.add_argument("--quick", action="store_true", help="3 subjects of 32³ with TKD")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if args.quick:
        args.subjects, args.size, args.echoes, args.inversion = 3, 32, 3, "tkd"

    from qsmliver.batch.synthetic import write_synthetic_cohort
    from qsmliver.pipeline import DEFAULT_CONFIG

    config: dict[str, Any] = {"inversion": {"method": args.inversion}} if args.inversion else {}
    te_s = tuple(0.004 + 0.006 * i for i in range(args.echoes))
    record: dict[str, Any] = {
        "software": software_versions(),
        "device": "cpu", "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "cohort": {"subjects": args.subjects, "shape": [args.size] * 3, "echoes": args.echoes,
                   "te_s": [round(t, 4) for t in te_s], "fov_mm": 160.0},
        "inversion_config": args.inversion or DEFAULT_CONFIG["inversion"]["method"],
        "baseline": "subjects_per_hour = subjects / wall time of run_batch (cluster start-up "
                    "included); speedup = subjects_per_hour / that of the first worker count",
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="qsmliver-batch-bench-") as scratch:
        bids = Path(scratch) / "bids"
        started = time.perf_counter()
        write_synthetic_cohort(bids, args.subjects, shape=(args.size,) * 3, te_s=te_s)
        record["cohort"]["generation_s"] = round(time.perf_counter() - started, 2)
        for workers in args.workers:
            result = run_workers(bids, Path(scratch) / f"out-{workers}", workers, config)
            record["runs"].append(result)
            print(json.dumps(result), flush=True)
    base = record["runs"][0]["subjects_per_hour"]
    for run in record["runs"]:
        run["speedup"] = round(run["subjects_per_hour"] / base, 2) if base else None
    write_record(record, args.output / f"batch-{'quick-' if args.quick else ''}cpu.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
