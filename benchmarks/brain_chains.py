"""Whole brain chains from raw echoes on the brain phantom: accuracy, coverage and time.

The default chain was chosen by accuracy (:data:`qsmliver.pipeline.AUTO_METHODS`); this
script measures the candidates side by side so the choice can be revisited with numbers. For
each size it simulates the brain phantom (SNR 100), runs :func:`qsmliver.recon` with the
automatic mask for every chain, and scores χ against the truth:

- ``nrmse_percent``: demeaned NRMSE (QSM challenge 2016) inside the chain's own output mask;
- ``nrmse_common_percent``: the same inside the voxels every chain kept (the intersection),
  so chains that erode the mask and chains that do not are compared on the same voxels;
- ``dgm_slope``: slope of deep-grey-matter ROI means against the truth;
- ``coverage``: fraction of the truth brain mask in the output mask; ``seconds``: wall time.

    python benchmarks/brain_chains.py [--sizes 96x96x72@2 64x64x48@3] [--quick]
                                      [--field-kernel cuboid|kspace]
                                      [--output benchmarks/results]

``--field-kernel kspace`` simulates the fields with the k-space dipole kernel the inversions
use (qsm-forward's forward model) instead of the phantom's default cuboid kernel, and writes
``brain-chains-kspace-cpu.json``: which chain wins depends on it near the skull.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from run import device_name, software_versions, write_record  # benchmarks/run.py

from qsmliver import backend
from qsmliver.metrics import nrmse, roi_slope
from qsmliver.pipeline import recon
from qsmliver.simulate import brain_phantom

#: Chain name -> recon section overrides.
CHAINS: dict[str, dict] = {
    "resharp+medi (default)": {},
    "pdf+medi": {"bgremove": {"method": "pdf"}},
    "tfi": {"inversion": {"method": "tfi"}},
}
_DGM = ("caudate", "putamen", "globus_pallidus", "thalamus", "red_nucleus",
        "substantia_nigra", "dentate_nucleus")


def _parse_size(text: str) -> tuple[tuple[int, int, int], float]:
    shape, _, voxel = text.partition("@")
    return tuple(int(n) for n in shape.split("x")), float(voxel or 2.0)


def run_size(shape: tuple[int, int, int], voxel_mm: float, field_kernel: str = "cuboid") -> dict:
    phantom = brain_phantom(shape=shape, voxel_size_mm=(voxel_mm,) * 3, snr=100.0,
                            field_kernel=field_kernel)
    truth, brain = phantom.truth["chi_ppm"], phantom.masks["brain"]
    labels = [v for v, n in phantom.label_names.items() if n.rsplit("_", 1)[0] in _DGM]
    outputs = {}
    for name, overrides in CHAINS.items():
        start = time.perf_counter()
        result = recon(phantom.gre, "brain", device="cpu", **overrides)
        seconds = time.perf_counter() - start
        outputs[name] = (result.maps["Chimap"].data, result.maps["mask"].data.astype(bool),
                         seconds)
    common = np.logical_and.reduce([mask for _, mask, _ in outputs.values()])
    chains = {}
    for name, (chi, mask, seconds) in outputs.items():
        chains[name] = {
            "nrmse_percent": nrmse(chi, truth, mask),
            "nrmse_common_percent": nrmse(chi, truth, common),
            "dgm_slope": roi_slope(chi, truth, phantom.labels, labels),
            "coverage": float((mask & brain).sum() / brain.sum()),
            "voxels": int(mask.sum()),
            "seconds": seconds,
        }
        row = chains[name]
        print(f"{shape} @ {voxel_mm} mm  {name:24s} NRMSE {row['nrmse_percent']:5.1f} % "
              f"(common {row['nrmse_common_percent']:5.1f} %)  slope {row['dgm_slope']:.2f}  "
              f"coverage {100 * row['coverage']:5.1f} %  {seconds:6.1f} s", flush=True)
    return {"shape": list(shape), "voxel_size_mm": voxel_mm, "common_voxels": int(common.sum()),
            "chains": chains}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["96x96x72@2", "64x64x48@3"],
                        help="SHAPE@VOXEL_MM, e.g. 96x96x72@2")
    parser.add_argument("--quick", action="store_true", help="one tiny size (smoke test)")
    parser.add_argument("--field-kernel", choices=("cuboid", "kspace"), default="cuboid",
                        help="forward model of the phantom's fields (default cuboid)")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    sizes = [_parse_size(s) for s in (["40x40x32@5"] if args.quick else args.sizes)]
    record = {
        "software": software_versions(),
        "device": "cpu",
        "device_name": device_name(backend.resolve_device("cpu")),
        "phantom": "qsmliver.simulate.brain_phantom, SNR 100, seed 0, automatic mask",
        "field_kernel": args.field_kernel,
        "metrics": "demeaned NRMSE (per cent) in each chain's mask and in the common mask; "
                   "deep-grey-matter ROI-mean slope; coverage of the truth brain mask",
        "sizes": [run_size(shape, voxel, args.field_kernel) for shape, voxel in sizes],
    }
    kernel = "" if args.field_kernel == "cuboid" else f"-{args.field_kernel}"
    write_record(record, args.output
                 / f"brain-chains{kernel}{'-quick' if args.quick else ''}-cpu.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
