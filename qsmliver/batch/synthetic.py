"""A synthetic BIDS cohort of brain phantoms, for tests, benchmarks and trying the batch out.

Each subject is :func:`qsmliver.simulate.brain_phantom` with its own noise and a
globus-pallidus susceptibility that rises by ``gp_step_ppm`` per subject (a known cohort
trend), written as BIDS MEGRE with the phantom's tissue labels as
``sub-<s>/anat/sub-<s>_desc-tissue_dseg.nii.gz`` + ``.tsv`` so that the batch finds them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["write_synthetic_cohort"]


def write_synthetic_cohort(
    root: str | os.PathLike,
    n_subjects: int = 6,
    *,
    shape: Sequence[int] = (32, 32, 32),
    fov_mm: float = 160.0,
    te_s: Sequence[float] = (0.004, 0.012, 0.020),
    snr: float = 80.0,
    sessions: Sequence[str] | None = None,
    gp_step_ppm: float = 0.01,
    labels: bool = True,
    seed: int = 0,
) -> dict[str, float]:
    """Write ``n_subjects`` brain phantoms as a BIDS dataset under ``root``.

    Parameters
    ----------
    root : path
        BIDS root (created).
    n_subjects : int
        Subjects ``sub-01``, ``sub-02``, ...
    shape : (3,) sequence of int
        Matrix; the voxel size is ``fov_mm / shape`` (isotropic head field of view).
    fov_mm : float
        Field of view, mm.
    te_s : sequence of float
        Echo times, s.
    snr : float
        First-echo SNR.
    sessions : sequence of str, optional
        Session labels; every subject gets each session (its own noise).
    gp_step_ppm : float
        Globus pallidus χ of subject i (0-based) is ``0.18 + i · gp_step_ppm`` ppm.
    labels : bool
        Write the tissue dseg + TSV beside the MEGRE files.
    seed : int
        Seed of subject 0 (subject i uses ``seed + i``; sessions add 100 per session).

    Returns
    -------
    dict of str to float
        The true globus-pallidus χ (ppm) of each subject label.
    """
    from qsmliver.data import QuantitativeMap
    from qsmliver.io.writers import write_bids_megre, write_map
    from qsmliver.simulate.brain import DEFAULT_CHI_PPM, brain_phantom

    root = Path(root)
    voxel = tuple(float(fov_mm) / int(n) for n in shape)
    truth = {}
    for index in range(int(n_subjects)):
        subject = f"{index + 1:02d}"
        gp = DEFAULT_CHI_PPM["globus_pallidus"] + index * gp_step_ppm
        truth[subject] = gp
        for s_index, session in enumerate(sessions or [None]):
            phantom = brain_phantom(shape=tuple(shape), voxel_size_mm=voxel, te_s=tuple(te_s),
                                    snr=snr, seed=seed + index + 100 * s_index,
                                    chi_ppm={"globus_pallidus": gp})
            write_bids_megre(phantom.gre, root, subject, session=session)
            if not labels:
                continue
            anat = root / f"sub-{subject}" / (f"ses-{session}" if session else "") / "anat"
            stem = f"sub-{subject}" + (f"_ses-{session}" if session else "")
            write_map(QuantitativeMap(np.asarray(phantom.labels, np.int16), "dseg", "1",
                                      phantom.gre.affine, method="simulation truth"),
                      anat / f"{stem}_desc-tissue_dseg.nii.gz")
            lines = ["index\tname"] + [f"{k}\t{v}" for k, v in
                                        sorted(phantom.label_names.items())]
            (anat / f"{stem}_desc-tissue_dseg.tsv").write_text("\n".join(lines) + "\n",
                                                               encoding="utf-8")
    return truth
