"""Fat-water separation of the real data in ../shared/data: PNG montages and ROI values.

For review, not a test (``tests/test_fatwater_real.py`` asserts the numbers). For each ISMRM
2012 challenge case (12, 13, 15, 16, 17; middle slice shown) and the two bipolar
pdff_marcsous slices (corrected with :func:`qsmliver.fatwater.correct_bipolar_phase` along the
readout axes the tests use), it writes ``benchmarks/results/fatwater-real/<name>.png`` with
the first-echo magnitude, water, fat, PDFF (0-100 %), R2* (0-300 1/s) and field (Hz) maps, the
test's ROI boxes drawn on the PDFF map, and one JSON with the ROI medians and run times. On
the two abdominal slices (case 12, the bipolar liver slice) it also draws the automatic
paraspinal-muscle reference region (:func:`qsmliver.mask.paraspinal_muscle_mask`, on the body
mask) in white and records its size and median PDFF.

    python benchmarks/fatwater_real.py [--data ../shared/data] [--output DIR]

Cases whose files are absent are skipped (the data are not part of the repository).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

#: pdff_marcsous files: readout axis of the bipolar correction and the test's boxes.
BIPOLAR_CASES = {
    "liver_12echo_bipolar": (1, {"liver": (slice(104, 140), slice(56, 100))}, 8.0),
    "phantom_16echo_bipolar": (0, {"water": (slice(72, 92), slice(24, 44)),
                                   "low fat": (slice(80, 100), slice(84, 104)),
                                   "fat": (slice(28, 44), slice(60, 76))}, 5.0),
}
#: Axial abdominal slices, where the paraspinal muscle reference region is drawn.
ABDOMINAL = ("ismrm2012-case12", "liver_12echo_bipolar")


def _montage(path: Path, title: str, signal: np.ndarray, result: Any, z: int,
             boxes: dict[str, tuple[slice, slice]], region: np.ndarray | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    water = np.abs(result.water[:, :, z])
    fat = np.abs(result.fat[:, :, z])
    top = float(np.percentile(np.maximum(water, fat), 99.5)) or 1.0
    panels = [("|S(TE1)|", np.abs(signal[:, :, z, 0]), "gray", None),
              ("water", water, "gray", (0, top)), ("fat", fat, "gray", (0, top)),
              ("PDFF (%)", result.pdff_percent[:, :, z], "viridis", (0, 100)),
              ("R2* (1/s)", result.r2star_per_s[:, :, z], "magma", (0, 300)),
              ("field (Hz)", np.where(result.mask[:, :, z], result.field_hz[:, :, z], np.nan),
               "RdBu_r", None)]
    figure, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.4))
    for axis, (name, image, cmap, limits) in zip(axes, panels, strict=True):
        shown = axis.imshow(image, cmap=cmap, vmin=None if limits is None else limits[0],
                            vmax=None if limits is None else limits[1])
        axis.set_title(name, fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
        figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.02)
    for rows, cols in boxes.values():
        axes[3].add_patch(Rectangle((cols.start - 0.5, rows.start - 0.5), cols.stop - cols.start,
                                    rows.stop - rows.start, fill=False, edgecolor="red"))
    if region is not None and region[:, :, z].any():
        axes[3].contour(region[:, :, z], [0.5], colors="white", linewidths=0.6)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=60)
    plt.close(figure)


def run(data: Path, output: Path) -> dict[str, Any]:
    """Separate every available case; write the PNGs; return the JSON record."""
    from test_fatwater_real import CHALLENGE_ROIS
    from test_mask_paraspinal import _display_affine

    from qsmliver.fatwater import correct_bipolar_phase, separate_fat_water
    from qsmliver.io.fatwater_mat import read_fatwater_mat
    from qsmliver.mask import body_mask, paraspinal_muscle_mask

    output.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {}
    cases: list[tuple[str, Path, Any]] = [
        (f"ismrm2012-case{n}", data / "ismrm2012_fwchallenge" / f"{n}.mat", n)
        for n in CHALLENGE_ROIS]
    cases += [(name, data / "pdff_marcsous" / f"{name}.mat", name) for name in BIPOLAR_CASES]
    for name, path, key in cases:
        if not path.is_file():
            print(f"{name}: {path} absent, skipped")
            continue
        case = read_fatwater_mat(path)
        signal = case.signal
        info: dict[str, Any] = {}
        if key in BIPOLAR_CASES:
            axis, boxes, slice_mm = BIPOLAR_CASES[key]
            signal, info = correct_bipolar_phase(signal, case.te_s, readout_axis=axis)
            info.pop("phase_rad", None)
            voxel = (1.5, 1.5, slice_mm)
        else:
            fat_box, water_box, organ = CHALLENGE_ROIS[key]
            boxes = {"subcutaneous fat": fat_box, organ: water_box}
            voxel = (1.5, 1.5, 5.0)
        start = time.perf_counter()
        result = separate_fat_water(signal, case.te_s, case.b0_t, mask=case.mask,
                                    voxel_size_mm=voxel)
        seconds = time.perf_counter() - start
        z = signal.shape[2] // 2
        region = muscle = None
        if name in ABDOMINAL:
            body = body_mask(np.abs(result.water), np.abs(result.fat), voxel)
            region = paraspinal_muscle_mask(result.pdff_percent, np.abs(result.water), body,
                                            _display_affine(voxel))
            muscle = {"body_voxels": int(body.sum()), "voxels": int(region.sum()),
                      "pdff_percent_median": float(np.median(result.pdff_percent[region])),
                      "r2star_per_s_median": float(np.median(result.r2star_per_s[region]))}
        _montage(output / f"{name}.png", f"{name}: {case.b0_t:.2f} T, {case.te_s.size} echoes",
                 signal, result, z, boxes, region)
        rois = {roi: {"pdff_percent_median": float(np.median(result.pdff_percent[box])),
                      "r2star_per_s_median": float(np.median(result.r2star_per_s[box]))}
                for roi, box in boxes.items()}
        record[name] = {"shape": list(signal.shape), "b0_t": case.b0_t,
                        "te_s": case.te_s.tolist(), "seconds": seconds, "rois": rois,
                        "bipolar_correction": info or None,
                        "automatic_paraspinal_muscle": muscle}
        print(f"{name}: {seconds:.1f} s, " + ", ".join(
            f"{roi} {v['pdff_percent_median']:.1f} %" for roi, v in rois.items()))
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    record = run(args.data, args.output / "fatwater-real")
    (args.output / "fatwater-real.json").write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
