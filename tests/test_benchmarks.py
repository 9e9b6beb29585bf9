"""The benchmark script runs on a tiny volume and writes its JSON (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(script: str, *args: str, timeout: int = 600) -> None:
    """Run ``benchmarks/<script>`` with ``args`` in a fresh interpreter; it must exit 0."""
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-2000:]


def test_benchmark_smoke(tmp_path):
    run_benchmark("run.py", "--small", "--repeat", "1", "--output", str(tmp_path), timeout=300)
    written = list(tmp_path.glob("foundation-small-*.json"))
    assert len(written) == 1
    record = json.loads(written[0].read_text())
    assert record["device"] == "cpu"
    assert set(record["seconds"]) == set(record["ratio_to_fft"])
    assert record["ratio_to_fft"]["fft_3d_complex64"] == 1.0
    assert all(v > 0 for v in record["seconds"].values())


def test_pipeline_benchmark_smoke(tmp_path):
    run_benchmark("pipeline.py", "--quick", "--output", str(tmp_path))
    record = json.loads((tmp_path / "pipeline-quick-cpu.json").read_text())
    stages = record["sizes"][0]["stages"]
    assert {"field_complex_quality", "bgremove_vsharp", "inversion_tkd",
            "whole_chain_default"} <= set(stages)
    assert stages["inversion_tkd"]["fft_calls"] >= 2
    assert all(s["seconds"] > 0 and "peak_host_mib" in s for s in stages.values())


def test_gpu_benchmark_smoke_on_cpu(tmp_path):
    """benchmarks/gpu.py --quick --device cpu (brain chain left out; about 16 s here)."""
    run_benchmark("gpu.py", "--quick", "--device", "cpu", "--skip-chain", "--output", str(tmp_path))
    written = list(tmp_path.glob("pipeline-quick-cpu-*.json"))
    assert len(written) == 1
    record = json.loads(written[0].read_text())
    assert record["device"] == "cpu" and record["device_name"].startswith("cpu")
    size = record["sizes"][0]
    assert size["shape"] == [64, 64, 64] and size["echoes"] == 8
    stages, kernels = size["stages"], size["kernels"]
    assert {"mask", "field_complex_quality", "bgremove_vsharp", "inversion_tkd"} <= set(stages)
    assert {"tv_update_chained", "tv_update_two_kernels", "tv_update_fused",
            "r2star_truncation_vectorised", "r2star_truncation_kernel"} == set(kernels)
    assert stages["inversion_tkd"]["fft_calls"] >= 2
    for record_ in (*stages.values(), *kernels.values()):
        assert record_["seconds"] > 0 and record_["ratio_to_fft"] > 0
        assert "peak_host_mib" in record_
    # on the CPU the "kernels" are their NumPy twins: identical results
    assert kernels["tv_update_fused"]["implementation"] == "numpy-twin"
    assert kernels["tv_update_fused"]["max_abs_diff_vs_chained"] == 0.0
    assert kernels["r2star_truncation_kernel"]["max_rel_diff_vs_vectorised"] == 0.0
    # the abdomen (liver chain) case of issue 8 at its quick size, stage by stage
    abdomen = record["abdomen"]
    assert abdomen["shape"] == [48, 40, 24] and abdomen["echoes"] == 12
    assert {"fatwater", "mask", "inversion", "whole_chain_liver"} <= set(abdomen["stages"])
    assert all(s["seconds"] >= 0 and s["ratio_to_fft"] >= 0 for s in abdomen["stages"].values())
    assert abdomen["stages"]["whole_chain_liver"]["seconds"] > 0
    assert "Chimap" in abdomen["maps"] and "desc-PDFF_map" in abdomen["maps"]


def test_fatwater_benchmark_smoke(tmp_path):
    """benchmarks/fatwater.py --quick: 48 × 40 × 20 × 12 abdomen phantom, graph cut."""
    run_benchmark("fatwater.py", "--quick", "--output", str(tmp_path), timeout=300)
    record = json.loads((tmp_path / "fatwater-quick-cpu.json").read_text())
    size = record["sizes"][0]
    assert record["device"] == "cpu" and size["shape"] == [48, 40, 20] and size["echoes"] == 12
    assert size["seconds"] > 0 and size["peak_host_mib_tracemalloc"] > 0
    assert {"varpro_s", "fieldmap_s", "refine_s", "total_s"} <= set(size["stages_s"])
    assert size["swap_fraction"] < 0.01


@pytest.mark.parametrize("field_kernel", ["cuboid", "kspace"])
def test_brain_chains_benchmark_smoke(tmp_path, field_kernel):
    run_benchmark("brain_chains.py",
                  "--quick", "--output", str(tmp_path), "--field-kernel", field_kernel)
    suffix = "" if field_kernel == "cuboid" else "-kspace"
    record = json.loads((tmp_path / f"brain-chains{suffix}-quick-cpu.json").read_text())
    assert record["field_kernel"] == field_kernel
    chains = record["sizes"][0]["chains"]
    assert set(chains) == {"resharp+medi (default)", "pdf+medi", "tfi"}
    for row in chains.values():
        assert 0.0 < row["coverage"] <= 1.0 and row["seconds"] > 0
        assert row["nrmse_common_percent"] > 0


def test_brain_oblique_benchmark_smoke(tmp_path):
    run_benchmark("brain_oblique.py", "--quick", "--output", str(tmp_path))
    record = json.loads((tmp_path / "brain-oblique-quick-cpu.json").read_text())
    assert [(c["model"], c["tilt_deg"]) for c in record["cases"]] == [
        ("point-cuboid", 25.0), ("point-kspace", 25.0), ("band-limited", 25.0)]
    for case in record["cases"]:
        assert set(case["chain"]) == {"resharp+medi (default)", "pdf+medi"}
        assert set(case["local_field_nrmse_percent"]) == {"resharp", "pdf"}
        assert case["medi_given_local"]["nrmse_percent"] > 0
        for row in case["chain"].values():
            assert 0.0 < row["coverage"] <= 1.0 and row["seconds"] > 0


def test_liver_chains_benchmark_smoke(tmp_path):
    run_benchmark("liver_chains.py", "--quick", "--output", str(tmp_path))
    record = json.loads((tmp_path / "liver-chains-quick-cpu.json").read_text())
    chains = record["cases"][0]["chains"]
    assert set(chains) == {"tfi (default)", "pdf+medi"}
    for row in chains.values():
        assert set(row["chi_error_ppm"]) == {"right_lobe", "left_lobe", "spleen"}
        assert row["seconds"] > 0 and row["nrmse_liver_percent"] > 0
        assert row["lobes"]["left_lobe"]["field_noise_median_hz"] > 0


def test_fft_counter_of_the_next_matrix_size_takes_over_the_wrappers(monkeypatch):
    """The backend's FFT namespace is cached, so the 256³ counter meets the wrappers the 128³
    counter installed; it must count from then on (the record once held 0 FFTs at 256³)."""
    import importlib.util
    import types

    import numpy as np

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("benchmark_pipeline",
                                                  ROOT / "benchmarks" / "pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    namespace = types.SimpleNamespace(fftn=np.fft.fftn, ifftn=np.fft.ifftn)
    first = module.FFTCounter(namespace)
    namespace.fftn(np.ones(4))
    second = module.FFTCounter(namespace)
    namespace.ifftn(namespace.fftn(np.ones(4)))
    assert (first.count, second.count) == (1, 2)
