"""Every dipole inversion on the QSM challenge 2016 data, scored against COSMOS and χ33.

Reads ../shared/data/qsm2016_challenge (MANIFEST section 3; never copied into the repository),
runs each method of :data:`qsmliver.inversion.METHODS` with its defaults on the CPU (MEDI gets
the brain mask as its "magnitude", since the challenge ships no magnitude: its gradient mask
then only frees the mask boundary), prints NRMSE, HFEN (per cent) and XSIM against COSMOS and
χ33 inside the challenge mask with the runtime, and writes
``benchmarks/results/inversion-challenge-cpu.json``.

    python benchmarks/inversion_challenge.py [--data DIR] [--output benchmarks/results]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import scipy.io
from run import (  # benchmarks/run.py (the script's own folder is on sys.path)
    software_versions,
    write_record,
)

from qsmliver import backend
from qsmliver.inversion import METHODS, invert_dipole
from qsmliver.metrics import hfen, nrmse, xsim

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "qsm2016_challenge"
VOXEL_MM = (1.0625, 1.0625, 1.0714285)
B0_DIR = (0.0, 0.0, 1.0)
#: Challenge protocol (MANIFEST section 3), used by the nonlinear method to form the phase.
PROTOCOL = {"b0_t": 2.8936, "te_s": 0.025}


def load(folder: Path) -> dict[str, np.ndarray]:
    def nifti(name):
        return np.asarray(nib.load(folder / name).dataobj)

    data = {"field": nifti("phs_tissue.nii.gz").astype(np.float32),
            "mask": nifti("msk.nii.gz") > 0,
            "cosmos": nifti("chi_cosmos.nii.gz").astype(np.float64)}
    chi33 = folder / "chi_33.mat"
    if chi33.is_file():
        data["chi33"] = np.asarray(scipy.io.loadmat(chi33)["chi_33"], dtype=np.float64)
    return data


def score(chi: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    chi = np.asarray(chi, dtype=np.float64)
    return {"nrmse_percent": nrmse(chi, reference, mask),
            "hfen_percent": hfen(chi, reference, mask),
            "xsim": xsim(chi, reference, mask)}


def run(folder: Path) -> dict:
    data = load(folder)
    results = {}
    for method in METHODS:
        extra = {}
        if method == "medi":
            extra["magnitude"] = data["mask"].astype(np.float32)
        if method == "ndi":
            extra.update(PROTOCOL)
        start = time.perf_counter()
        result = invert_dipole(data["field"], data["mask"], VOXEL_MM, B0_DIR, method, **extra)
        seconds = time.perf_counter() - start
        entry = {"seconds": seconds, "vs_cosmos": score(result.chi_ppm, data["cosmos"],
                                                        data["mask"])}
        if "chi33" in data:
            entry["vs_chi33"] = score(result.chi_ppm, data["chi33"], data["mask"])
        params = dict(result.parameters)
        params.pop("lcurve", None)
        params.pop("history", None)
        entry["parameters"] = params
        results[method] = entry
        cosmos = entry["vs_cosmos"]
        print(f"{method:9s} {seconds:7.1f} s  COSMOS: NRMSE {cosmos['nrmse_percent']:6.1f} %  "
              f"HFEN {cosmos['hfen_percent']:6.1f} %  XSIM {cosmos['xsim']:.3f}"
              + (f"  | chi33: NRMSE {entry['vs_chi33']['nrmse_percent']:6.1f} %  "
                 f"HFEN {entry['vs_chi33']['hfen_percent']:6.1f} %  "
                 f"XSIM {entry['vs_chi33']['xsim']:.3f}" if "vs_chi33" in entry else ""),
              flush=True)
    return {
        "software": software_versions(),
        "device": "cpu",
        "device_name": f"cpu-{platform.processor() or platform.machine()}-"
                       f"{backend.fft(np).workers}threads",
        "data": "qsm2016_challenge (phs_tissue, msk, chi_cosmos, chi_33)",
        "shape": list(data["field"].shape),
        "voxel_size_mm": list(VOXEL_MM),
        "dtype": "float32",
        "metrics": "inside msk, demeaned NRMSE/HFEN (per cent, challenge 2016), XSIM "
                   "(challenge 2.0 constants)",
        "medi_magnitude": "brain mask (the challenge ships no magnitude)",
        "methods": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"challenge data not found at {args.data}", file=sys.stderr)
        return 2
    result = run(args.data)
    write_record(result, args.output / "inversion-challenge-cpu.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
