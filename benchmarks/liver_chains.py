"""Whole liver chains from raw echoes on the abdomen phantom: hepatic χ, R2*, PDFF and time.

For each case (field strength, SNR, liver iron and fat) it simulates the abdomen phantom, runs
:func:`qsmliver.recon` with ``anatomy="liver"`` for the default chain (TFI) and the two-step
alternative (PDF + MEDI), and scores against the truth:

- ``chi_error_ppm``: median χ of the right lobe, left lobe and spleen minus the truth
  difference to subcutaneous fat (the default reference), ppm;
- ``slope``: slope of those three medians against the truth (acceptance 0.85-1.15);
- ``nrmse_liver_percent`` / ``nrmse_tissue_percent``: demeaned χ NRMSE inside the liver and
  inside the whole output mask;
- per lobe: median R2* relative error, median PDFF error (points), median and 90th percentile
  of the absolute field error (Hz), and the median of the data weight's field noise (Hz).

    python benchmarks/liver_chains.py [--cases NAME ...] [--quick] [--output benchmarks/results]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from run import device_name, software_versions, write_record  # benchmarks/run.py

from qsmliver import backend
from qsmliver.metrics import nrmse
from qsmliver.pipeline import recon
from qsmliver.simulate import abdomen_phantom

#: Case name -> abdomen_phantom arguments (coarse voxels keep a CPU run to minutes).
CASES: dict[str, dict] = {
    "1.5T-lic2-10-pdff8-snr60-8mm": dict(
        shape=(48, 40, 24), voxel_size_mm=(8.0, 7.8, 8.0), b0_t=1.5, snr=60,
        lic_mg_per_g={"right_lobe": 2.0, "left_lobe": 10.0}, liver_pdff_percent=8.0, seed=3),
    "3T-lic1-6-pdff20-snr60-8mm": dict(
        shape=(48, 40, 24), voxel_size_mm=(8.0, 7.8, 8.0), b0_t=3.0, snr=60,
        lic_mg_per_g={"right_lobe": 1.0, "left_lobe": 6.0}, liver_pdff_percent=20.0, seed=6),
    "1.5T-lic2-10-pdff8-snr60-6mm": dict(
        shape=(64, 52, 24), voxel_size_mm=(6.0, 6.0, 8.0), b0_t=1.5, snr=60,
        lic_mg_per_g={"right_lobe": 2.0, "left_lobe": 10.0}, liver_pdff_percent=8.0, seed=0),
    "1.5T-lic5-20-pdff15-snr30-6mm": dict(
        shape=(64, 52, 32), voxel_size_mm=(6.0, 6.0, 6.0), b0_t=1.5, snr=30,
        lic_mg_per_g={"right_lobe": 5.0, "left_lobe": 20.0}, liver_pdff_percent=15.0, seed=11),
    "3T-lic0.5-3-pdff30-snr40-6mm": dict(
        shape=(64, 52, 32), voxel_size_mm=(6.0, 6.0, 6.0), b0_t=3.0, snr=40,
        lic_mg_per_g={"right_lobe": 0.5, "left_lobe": 3.0}, liver_pdff_percent=30.0, seed=12),
    # a short clinical protocol (the ISMRM 2012 challenge's 1.5 T cases): 4 echoes, ΔTE 3.2 ms
    "1.5T-4echo-lic2-10-pdff8-snr60-8mm": dict(
        shape=(48, 40, 24), voxel_size_mm=(8.0, 7.8, 8.0), b0_t=1.5, snr=60,
        te_s=[2.87e-3 + 3.2e-3 * k for k in range(4)],
        lic_mg_per_g={"right_lobe": 2.0, "left_lobe": 10.0}, liver_pdff_percent=8.0, seed=3),
}
QUICK_CASE = {"quick-1.5T": dict(shape=(32, 28, 20), voxel_size_mm=(12.0, 11.0, 10.0),
                                 b0_t=1.5, snr=60, lic_mg_per_g={"right_lobe": 2.0,
                                                                 "left_lobe": 8.0}, seed=1)}

#: Chain name -> recon section overrides.
CHAINS: dict[str, dict] = {
    "tfi (default)": {},
    "pdf+medi": {"inversion": {"method": "medi"}},
}


def _label(phantom, name: str) -> np.ndarray:
    return phantom.labels == next(v for v, n in phantom.label_names.items() if n == name)


def run_case(name: str, arguments: dict) -> dict:
    phantom = abdomen_phantom(**arguments)
    truth = phantom.truth
    sat = float(np.median(truth["chi_ppm"][_label(phantom, "subcutaneous_fat")]))
    regions = {"right_lobe": phantom.masks["liver_right_lobe"],
               "left_lobe": phantom.masks["liver_left_lobe"], "spleen": _label(phantom, "spleen")}
    expected = {k: float(np.median(truth["chi_ppm"][m])) - sat for k, m in regions.items()}
    chains = {}
    for chain, overrides in CHAINS.items():
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = recon(phantom.gre, "liver", device="cpu", **overrides)
        seconds = time.perf_counter() - start
        maps = {k: m.data for k, m in result.maps.items()}
        chi, mask = maps["Chimap"], maps["mask"].astype(bool)
        measured = {k: float(np.median(chi[m])) for k, m in regions.items()}
        lobes = {}
        for lobe in ("right_lobe", "left_lobe"):
            region = regions[lobe] & mask
            field_error = np.abs(maps["fieldmap"] - truth["total_field_hz"])[region]
            lobes[lobe] = {
                "r2star_relative_error": float(np.median(maps["R2starmap"][region])
                                               / np.median(truth["r2star_per_s"][region]) - 1),
                "r2star_truth_per_s": float(np.median(truth["r2star_per_s"][region])),
                "pdff_error_points": float(np.median(maps["desc-PDFF_map"][region])
                                           - np.median(truth["pdff_percent"][region])),
                "field_error_median_hz": float(np.median(field_error)),
                "field_error_p90_hz": float(np.percentile(field_error, 90)),
                "field_noise_median_hz": float(np.median(maps["desc-fieldnoise_map"][region])),
            }
        chains[chain] = {
            "chi_error_ppm": {k: measured[k] - expected[k] for k in regions},
            "slope": float(np.polyfit(list(expected.values()), list(measured.values()), 1)[0]),
            "nrmse_liver_percent": nrmse(chi, truth["chi_ppm"], phantom.masks["liver"] & mask),
            "nrmse_tissue_percent": nrmse(chi, truth["chi_ppm"], mask & phantom.masks["tissue"]),
            "lobes": lobes,
            "seconds": seconds,
        }
        row = chains[chain]
        errors = " ".join(f"{k} {v:+.3f}" for k, v in row["chi_error_ppm"].items())
        print(f"{name:32s} {chain:14s} χ error {errors}  slope {row['slope']:.3f}  "
              f"NRMSE liver {row['nrmse_liver_percent']:5.1f} %  "
              f"tissue {row['nrmse_tissue_percent']:5.1f} %  {seconds:5.1f} s", flush=True)
    return {"case": name, "phantom": {k: (list(v) if isinstance(v, tuple) else v)
                                      for k, v in arguments.items()},
            "expected_chi_minus_sat_ppm": expected, "chains": chains}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--quick", action="store_true", help="one tiny case (smoke test)")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    cases = QUICK_CASE if args.quick else {name: CASES[name] for name in args.cases}
    record = {
        "software": software_versions(),
        "device": "cpu",
        "device_name": device_name(backend.resolve_device("cpu")),
        "phantom": "qsmliver.simulate.abdomen_phantom, automatic tissue mask, χ relative to "
                   "subcutaneous fat",
        "cases": [run_case(name, arguments) for name, arguments in cases.items()],
    }
    write_record(record, args.output / f"liver-chains{'-quick' if args.quick else ''}-cpu.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
