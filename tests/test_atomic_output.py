"""Atomic single-file writes and all-or-nothing staged folders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qsmliver.errors import QSMOutputExistsError
from qsmliver.io.atomic import atomic_path, write_json_atomic
from qsmliver.io.staging import staged_output_dir


def test_atomic_path_keeps_suffix_and_renames(tmp_path):
    target = tmp_path / "sub" / "map.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".nii.gz")
        tmp.write_bytes(b"data")
        assert not target.exists()
    assert target.read_bytes() == b"data"
    assert [p.name for p in target.parent.iterdir()] == ["map.nii.gz"]


def test_atomic_path_failure_leaves_nothing(tmp_path):
    target = tmp_path / "map.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_never_overwrites_unless_asked(tmp_path):
    target = tmp_path / "map.json"
    target.write_text("good")
    with pytest.raises(QSMOutputExistsError, match=r"map.json: output exists"):
        with atomic_path(target):
            pass
    assert target.read_text() == "good"
    write_json_atomic({"a": np.float32(1.5), "b": np.arange(2)}, target, overwrite=True)
    assert json.loads(target.read_text()) == {"a": 1.5, "b": [0, 1]}


def test_staged_output_moves_all_or_nothing(tmp_path):
    out = tmp_path / "out"
    with staged_output_dir(out) as stage:
        (stage / "anat").mkdir()
        (stage / "anat" / "a.nii").write_text("a")
        (stage / "b.json").write_text("b")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "anat/a.nii", "b.json"]
    assert not any(p.name.startswith(".qsmliver-staging") for p in out.iterdir())

    with pytest.raises(KeyError), staged_output_dir(out) as stage:
        (stage / "c.json").write_text("c")
        raise KeyError("interrupted")
    assert not (out / "c.json").exists()
    assert not any(p.name.startswith(".qsmliver-staging") for p in out.iterdir())


def test_staged_output_checks_every_clash_before_moving(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "z.json").write_text("old")
    with pytest.raises(QSMOutputExistsError, match="z.json"), staged_output_dir(out) as stage:
        (stage / "a.json").write_text("new")
        (stage / "z.json").write_text("new")
    assert not (out / "a.json").exists() and (out / "z.json").read_text() == "old"
    with staged_output_dir(out, overwrite=True) as stage:
        (stage / "z.json").write_text("new")
    assert (out / "z.json").read_text() == "new"


def test_staged_output_keeps_dataset_description(tmp_path):
    out = tmp_path / "bids"
    out.mkdir()
    (out / "dataset_description.json").write_text("{}")
    with staged_output_dir(out) as stage:
        (stage / "dataset_description.json").write_text('{"Name": "x"}')
        (stage / "sub-02.json").write_text("{}")
    assert (out / "dataset_description.json").read_text() == "{}"
    assert (out / "sub-02.json").exists()
