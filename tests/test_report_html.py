"""HTML QC reports: rendered offline in headless Chromium, QC checks on known faults."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from qsmliver.pipeline import recon
from qsmliver.report import qc_checks, write_cohort_index, write_subject_report
from qsmliver.report.html import _png_bytes, montage_png
from qsmliver.simulate import brain_phantom

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                                    "(apt-get install chromium)")
CONFIG = {"inversion": {"method": "tkd"}, "device": "cpu"}


@pytest.fixture(scope="module")
def brain():
    phantom = brain_phantom(shape=(32, 32, 32), voxel_size_mm=(5.0, 5.0, 5.0),
                            te_s=(0.004, 0.012, 0.020), snr=80, seed=3)
    return phantom, recon(phantom.gre, "brain", config=CONFIG)


def _render(page: Path, profile: Path) -> str:
    """The DOM of ``page`` after loading in headless Chromium (scripts run)."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
               "--virtual-time-budget=10000", "--dump-dom", page.absolute().as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _image_counts(dom: str) -> tuple[int, int]:
    body = re.search(r"<body[^>]*>", dom).group(0)
    loaded = re.search(r'data-images-loaded="(\d+)"', body)
    total = re.search(r'data-images-total="(\d+)"', body)
    assert loaded and total, f"the page script did not run: {body}"
    return int(loaded.group(1)), int(total.group(1))


@needs_chromium
def test_subject_report_images_load_in_headless_chromium(brain, tmp_path):
    phantom, result = brain
    labels = np.where(result.maps["mask"].data > 0, phantom.labels, 0)
    page = write_subject_report(tmp_path / "sub-01", "sub-01", result, labels=labels,
                                label_names=phantom.label_names,
                                details={"Note": "<b>not bold</b>"})
    source = page.read_text()
    n_images = source.count("<img ")
    assert n_images >= 8  # magnitude, field, local field, χ, R2*, noise, mask, labels
    assert "&lt;b&gt;not bold&lt;/b&gt;" in source  # text is escaped
    sources = re.findall(r'<img src="([^"]+)"', source)
    assert all(not s.startswith(("/", "file:", "http")) for s in sources)  # relative links
    loaded, total = _image_counts(_render(page, tmp_path / "profile"))
    assert loaded == total == n_images
    # the check can fail: a missing figure is detected and reported on the page
    (page.parent / sources[2]).unlink()
    dom = _render(page, tmp_path / "profile")
    assert _image_counts(dom) == (n_images - 1, n_images)
    assert f"1 of {n_images} images failed to load" in dom
    # the page keeps working when moved elsewhere (offline, relative figure links)
    moved = shutil.copytree(page.parent, tmp_path / "copy")
    (moved / sources[2]).write_bytes((page.parent / sources[3]).read_bytes())
    assert _image_counts(_render(moved / page.name, tmp_path / "profile")) == (
        n_images, n_images)


@needs_chromium
def test_cohort_index_links_and_renders(brain, tmp_path):
    _, result = brain
    reports = [write_subject_report(tmp_path / f"sub-0{i}", f"sub-0{i}", result)
               for i in (1, 2)]
    index = write_cohort_index(tmp_path / "index.html", [
        {"unit": "sub-01", "status": "ok", "reports": [reports[0]], "seconds": 3.2,
         "warnings": [{"check": "dipole_residual", "message": "large"}]},
        {"unit": "sub-02", "status": "ok", "reports": [reports[1]], "seconds": 2.9},
        {"unit": "sub-03", "status": "failed", "error": "QSMInputError: <broken>"}],
        links={"table": str(tmp_path / "group" / "t.tsv")})
    text = index.read_text()
    hrefs = re.findall(r'href="([^"]+)"', text)
    assert "sub-01/sub-01_report.html" in hrefs and "group/t.tsv" in hrefs
    assert all((tmp_path / h).is_file() for h in hrefs if h.endswith(".html"))
    assert "QSMInputError: &lt;broken&gt;" in text
    assert "3 subject/session(s): 1 failed, 2 ok" in text
    assert _image_counts(_render(index, tmp_path / "profile")) == (0, 0)


def test_qc_checks_flag_known_faults(brain):
    phantom, result = brain
    good = qc_checks(result)
    assert good["warnings"] == [], good
    assert good["metrics"]["dipole_residual"] < 0.8
    assert good["metrics"]["chi_r2star_rho_high_r2star"] > 0.2
    # an inverted phase convention (conjugated signal): χ anti-correlates with R2*
    flipped = recon(dataclasses.replace(phantom.gre, signal=np.conj(phantom.gre.signal)),
                    "brain", config=CONFIG)
    checks = {w["check"] for w in qc_checks(flipped)["warnings"]}
    assert "phase_sign" in checks
    assert "phase_sign" not in {w["check"] for w in qc_checks(flipped, anatomy="liver")[
        "warnings"]}
    # a susceptibility map that does not explain the local field
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 0.3, result.maps["Chimap"].data.shape).astype(np.float32)
    bad = dataclasses.replace(result, maps={
        **result.maps, "Chimap": dataclasses.replace(result.maps["Chimap"], data=noise)})
    checks = {w["check"]: w for w in qc_checks(bad)["warnings"]}
    assert checks["dipole_residual"]["value"] > 1.0 and "chi_range" in checks
    # fat-water swaps: isolated voxels whose PDFF jumps by ~90 points
    mask = result.maps["mask"].data > 0
    pdff = np.full(mask.shape, 5.0, np.float32)
    smooth = dataclasses.replace(result.maps["Chimap"], data=pdff, name="desc-PDFF_map",
                                 unit="percent")
    with_pdff = dataclasses.replace(result, maps={**result.maps, "desc-PDFF_map": smooth})
    assert qc_checks(with_pdff)["metrics"]["fat_water_swap_fraction"] == 0.0
    swapped = pdff.copy()
    swapped[mask & (rng.random(mask.shape) < 0.02)] = 95.0
    with_swaps = dataclasses.replace(result, maps={
        **result.maps, "desc-PDFF_map": dataclasses.replace(smooth, data=swapped)})
    report = qc_checks(with_swaps)
    assert 0.01 < report["metrics"]["fat_water_swap_fraction"] < 0.03
    assert "fat_water_swap" in {w["check"] for w in report["warnings"]}
    # a failed mask
    tiny = np.zeros(mask.shape, bool)
    tiny[16, 16, 16] = True
    small = dataclasses.replace(result, maps={
        **result.maps, "mask": dataclasses.replace(result.maps["mask"], data=tiny)})
    assert "mask_fraction" in {w["check"] for w in qc_checks(small)["warnings"]}


def test_png_encoder_and_montage(tmp_path):
    from matplotlib.image import imread

    rgba = np.random.default_rng(1).integers(0, 256, (7, 5, 4), dtype=np.uint8)
    path = tmp_path / "x.png"
    path.write_bytes(_png_bytes(rgba))
    np.testing.assert_array_equal((imread(path) * 255).round().astype(np.uint8), rgba)
    volume = np.arange(8 * 6 * 10, dtype=float).reshape(8, 6, 10)
    shown = montage_png(volume, tmp_path / "m.png", n_slices=3, limits=(0.0, 480.0))
    image = imread(shown["path"])
    scale = 20  # ceil(160 / 8)
    assert image.shape == (6 * scale, (3 * 8 + 2) * scale, 4)
    assert shown["slices"] == [2, 4, 7] and shown["window"] == (0.0, 480.0)
    np.testing.assert_array_equal(image[:, 8 * scale:9 * scale], 1.0)  # white gap


def test_report_without_susceptibility(brain, tmp_path):
    """A liver-style result (PDFF, water, fat; QSM refused) still gets QC and a report."""
    _, result = brain
    template = result.maps["R2starmap"]
    mask = result.maps["mask"].data > 0
    extra = {name: dataclasses.replace(template, data=np.where(mask, value, 0).astype(
        np.float32), name=name, unit=unit) for name, value, unit in (
        ("desc-PDFF_map", 12.0, "percent"), ("desc-water_map", 80.0, "a.u."),
        ("desc-fat_map", 10.0, "a.u."))}
    maps = {k: v for k, v in result.maps.items() if k not in ("Chimap", "desc-localfield_map")}
    liver = dataclasses.replace(result, maps={**maps, **extra}, config={
        **result.config, "anatomy": "liver"}, provenance={
        **result.provenance, "QSMRefused": "too little tissue for the field inversion"})
    qc = qc_checks(liver, anatomy="liver")
    assert [w["check"] for w in qc["warnings"]] == ["qsm_refused"]
    assert "dipole_residual" not in qc["metrics"]
    assert qc["metrics"]["fat_water_swap_fraction"] < 0.01  # only the mask edge jumps
    page = write_subject_report(tmp_path, "sub-liver", liver, qc=qc)
    text = page.read_text()
    assert "PDFF (%)" in text and "Water (a.u.)" in text and "too little tissue" in text
    assert "χ (ppm)" not in text
    assert all((tmp_path / src).is_file() for src in re.findall(r'<img src="([^"]+)"', text))
