"""The benchmark script runs on a tiny volume and writes its JSON (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_smoke(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--small", "--repeat", "1",
         "--output", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    written = list(tmp_path.glob("foundation-small-*.json"))
    assert len(written) == 1
    record = json.loads(written[0].read_text())
    assert record["device"] == "cpu"
    assert set(record["seconds"]) == set(record["ratio_to_fft"])
    assert record["ratio_to_fft"]["fft_3d_complex64"] == 1.0
    assert all(v > 0 for v in record["seconds"].values())


def test_pipeline_benchmark_smoke(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "pipeline.py"), "--quick", "--output",
         str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((tmp_path / "pipeline-quick-cpu.json").read_text())
    stages = record["sizes"][0]["stages"]
    assert {"field_complex_quality", "bgremove_vsharp", "inversion_tkd",
            "whole_chain_default"} <= set(stages)
    assert stages["inversion_tkd"]["fft_calls"] >= 2
    assert all(s["seconds"] > 0 and "peak_host_mib" in s for s in stages.values())
