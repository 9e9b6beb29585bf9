"""`qsmliver demo` runs end to end and keeps the synthetic data exact enough."""

from __future__ import annotations

import re

from qsmliver.cli import main


def test_demo_round_trips(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out)]) == 0
    report = capsys.readouterr().out
    errors = [float(x) for x in re.findall(r"max phase (?:error|difference) ([0-9.e+-]+) rad",
                                           report)]
    assert len(errors) == 3 and max(errors) < 2e-3
    geometry = float(re.search(r"geometry error ([0-9.e+-]+) mm", report).group(1))
    assert geometry < 1e-4
    assert (out / "bids" / "dataset_description.json").exists()
    n_slices, n_echoes, n_parts = 40, 5, 2  # magnitude and phase series
    assert len(list((out / "dicom").glob("*.dcm"))) == n_slices * n_echoes * n_parts
    assert main(["demo", "-o", str(out)]) == 2  # exists: refused without --overwrite
    assert main(["demo", "-o", str(out), "--overwrite"]) == 0
