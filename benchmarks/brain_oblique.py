"""Brain QSM with B0 oblique to the voxel axes, under three forward models of the phantom.

How well the k-space-kernel methods do at an oblique B0 depends on how the data were made, so
each tilt is simulated three ways (:func:`qsmliver.simulate.brain_phantom`, SNR 100):

- ``point-cuboid``: the default phantom, the exact field of uniformly magnetised voxels
  sampled at voxel centres (``oversample=1``);
- ``point-kspace``: the k-space dipole kernel on the voxel grid (``field_kernel="kspace"``,
  qsm-forward's model without its k-space cropping);
- ``band-limited``: simulated on a grid twice as fine and cropped in k-space to the acquired
  grid, as a scanner acquires it (``oversample=2``).

B0 is tilted by ``tilt`` degrees from the z axis towards (0.6, 0.8, 0). Per model and tilt,
with the truth brain mask:

- ``local_field_nrmse_percent``: RESHARP and PDF given the truth total field, demeaned NRMSE
  of the local field against the truth in each method's mask;
- ``medi_given_local``: MEDI given the truth local field (χ NRMSE, DGM slope);
- ``chain``: the default chain (RESHARP + MEDI) from the raw echoes, and PDF + MEDI
  (χ NRMSE in the output mask, DGM slope, coverage of the brain).

χ NRMSE (demeaned) is taken one voxel in from the brain mask's edge, where the band-limited
model's voxels hold partial volumes of bone.

    python benchmarks/brain_oblique.py [--size 64x64x48@3] [--tilts 0 15 25 35] [--quick]
                                       [--output benchmarks/results]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from run import device_name, software_versions, write_record  # benchmarks/run.py
from scipy import ndimage

from qsmliver import backend
from qsmliver.bgremove import remove_background
from qsmliver.inversion import invert_dipole
from qsmliver.metrics import nrmse, roi_slope
from qsmliver.pipeline import recon
from qsmliver.simulate import brain_phantom

#: Model name -> brain_phantom keyword arguments.
MODELS: dict[str, dict] = {
    "point-cuboid": {},
    "point-kspace": {"field_kernel": "kspace"},
    "band-limited": {"oversample": 2},
}
#: Chain name -> recon section overrides.
CHAINS: dict[str, dict] = {
    "resharp+medi (default)": {},
    "pdf+medi": {"bgremove": {"method": "pdf"}},
}
_DGM = ("caudate", "putamen", "globus_pallidus", "thalamus", "red_nucleus",
        "substantia_nigra", "dentate_nucleus")


def tilted_b0(tilt_deg: float) -> tuple[float, float, float]:
    """Unit B0 direction tilted by ``tilt_deg`` from z towards (0.6, 0.8, 0)."""
    t = np.deg2rad(tilt_deg)
    return (0.6 * np.sin(t), 0.8 * np.sin(t), float(np.cos(t)))


def run_case(shape, voxel_mm: float, model: str, tilt_deg: float) -> dict:
    voxel = (voxel_mm,) * 3
    start = time.perf_counter()
    phantom = brain_phantom(shape=shape, voxel_size_mm=voxel, snr=100.0,
                            b0_dir=tilted_b0(tilt_deg), **MODELS[model])
    simulate_s = time.perf_counter() - start
    truth, brain, b0 = phantom.truth, phantom.masks["brain"], phantom.gre.b0_dir
    # χ is scored one voxel in from the brain's edge: there the band-limited model's voxels
    # hold partial volumes of bone, which no local-field method is meant to recover
    interior = ndimage.binary_erosion(brain)
    labels = [v for v, n in phantom.label_names.items() if n.rsplit("_", 1)[0] in _DGM]
    row: dict = {"model": model, "tilt_deg": tilt_deg, "simulate_s": simulate_s,
                 "local_field_nrmse_percent": {}, "chain": {}}
    for method in ("resharp", "pdf"):
        local = remove_background(truth["total_field_ppm"], brain, voxel, b0, method)
        row["local_field_nrmse_percent"][method] = nrmse(
            local.local_field_ppm, truth["local_field_ppm"], local.mask)
    medi = invert_dipole(truth["local_field_ppm"], brain, voxel, b0, "medi",
                         magnitude=np.abs(phantom.gre.signal[..., 0]))
    row["medi_given_local"] = {
        "nrmse_percent": nrmse(medi.chi_ppm, truth["chi_ppm"], interior),
        "dgm_slope": roi_slope(medi.chi_ppm, truth["chi_ppm"], phantom.labels, labels)}
    for name, overrides in CHAINS.items():
        start = time.perf_counter()
        result = recon(phantom.gre, "brain", mask=brain, device="cpu", **overrides)
        chi, mask = result.maps["Chimap"].data, result.maps["mask"].data.astype(bool)
        row["chain"][name] = {
            "nrmse_percent": nrmse(chi, truth["chi_ppm"], mask & interior),
            "dgm_slope": roi_slope(chi, truth["chi_ppm"], phantom.labels, labels),
            "coverage": float((mask & brain).sum() / brain.sum()),
            "aliased_voxels_excluded":
                result.provenance["Stages"]["field"].get("aliased_voxels_excluded"),
            "seconds": time.perf_counter() - start,
        }
    chains = "  ".join(f"{n.split(' ')[0]} {c['nrmse_percent']:6.1f} % / {c['dgm_slope']:.2f}"
                       for n, c in row["chain"].items())
    local = row["local_field_nrmse_percent"]
    print(f"{model:13s} tilt {tilt_deg:4.0f}  local field: RESHARP {local['resharp']:6.1f} % "
          f"PDF {local['pdf']:6.1f} %  MEDI|local {row['medi_given_local']['nrmse_percent']:5.1f}"
          f" % / {row['medi_given_local']['dgm_slope']:.2f}  chain: {chains}", flush=True)
    return row


def _parse_size(text: str) -> tuple[tuple[int, int, int], float]:
    shape, _, voxel = text.partition("@")
    return tuple(int(n) for n in shape.split("x")), float(voxel or 2.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="64x64x48@3", help="SHAPE@VOXEL_MM")
    parser.add_argument("--tilts", nargs="+", type=float, default=[0.0, 15.0, 25.0, 35.0],
                        help="B0 tilts from z, degrees")
    parser.add_argument("--quick", action="store_true",
                        help="40x40x32 at 5 mm, tilt 25 only (smoke test)")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    shape, voxel = _parse_size("40x40x32@5" if args.quick else args.size)
    tilts = [25.0] if args.quick else args.tilts
    record = {
        "software": software_versions(),
        "device": "cpu",
        "device_name": device_name(backend.resolve_device("cpu")),
        "phantom": "qsmliver.simulate.brain_phantom, SNR 100, seed 0, truth brain mask",
        "shape": list(shape), "voxel_size_mm": voxel,
        "b0_dir": "tilted from z towards (0.6, 0.8, 0) by tilt_deg",
        "metrics": "demeaned NRMSE (per cent); deep-grey-matter ROI-mean slope; coverage of "
                   "the truth brain mask",
        "cases": [run_case(shape, voxel, model, tilt) for model in MODELS for tilt in tilts],
    }
    write_record(record, args.output / f"brain-oblique{'-quick' if args.quick else ''}-cpu.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
