"""CuPy against NumPy: stage by stage, both whole chains, every chain option, the CLI (issue 8).

Every test here is marked ``gpu`` and skips without a GPU. The same float32 input goes through
the NumPy and the CuPy path; the outputs must agree to a relative L2 difference (inside the
stage's mask) below 1e-4 for linear / closed-form stages and 1e-3 for iterative ones. The
iterative stages run with their default stopping rules and the backends' default check
intervals (a host test every iteration on NumPy, every 10 on CuPy:
``qsmliver.backend.convergence_check_interval``): every solver freezes between checks where
the every-iteration test would have stopped, so both stop at the same iteration, which the
tests assert where the stage reports its count.
"""

from __future__ import annotations

import numpy as np
import pytest

from qsmliver import backend
from qsmliver.bgremove import METHODS as BGREMOVE_METHODS
from qsmliver.bgremove import remove_background
from qsmliver.inversion import METHODS as INVERSION_METHODS
from qsmliver.inversion import invert_dipole
from qsmliver.phase import unwrap_laplacian
from qsmliver.simulate import abdomen_phantom, brain_phantom

pytestmark = pytest.mark.gpu

LINEAR = 1e-4
ITERATIVE = 1e-3
CLOSED_FORM_INVERSIONS = ("tkd", "tikhonov")
#: Tolerances that stop TV-ADMM (53 iterations) and NDI (39) between two device checks
#: (their defaults run to ``max_iter`` on this phantom), and outer Gauss-Newton iterations cut
#: short to keep MEDI and TFI quick (their inner CG solves keep their own stopping rule).
RUN_OPTIONS = {"tv_admm": {"tol": 1e-2}, "ndi": {"tol": 3e-3},
               "medi": {"max_iter": 3}, "tfi": {"max_iter": 3}}


@pytest.fixture(autouse=True)
def default_check_interval(monkeypatch):
    monkeypatch.delenv("QSMLIVER_GPU_CHECK_EVERY", raising=False)


def _iterations(parameters: dict) -> dict:
    """The iteration counts in a stage's parameters (nested entries included)."""
    found = {}
    for key, value in parameters.items():
        if isinstance(value, dict):
            found.update({f"{key}.{k}": v for k, v in _iterations(value).items()})
        elif "iteration" in key:
            found[key] = value
    return found


def relative_difference(gpu, cpu, mask=None) -> float:
    """``||gpu − cpu|| / ||cpu||`` over ``mask`` (all voxels when None)."""
    gpu = np.asarray(backend.to_numpy(gpu), dtype=np.complex128)
    cpu = np.asarray(backend.to_numpy(cpu), dtype=np.complex128)
    if mask is not None:
        mask = np.asarray(backend.to_numpy(mask), dtype=bool)
        gpu, cpu = gpu[mask], cpu[mask]
    return float(np.linalg.norm(gpu - cpu) / max(np.linalg.norm(cpu), 1e-30))


@pytest.fixture(scope="module")
def head():
    phantom = brain_phantom(shape=(48, 48, 40), voxel_size_mm=(3.0, 3.0, 3.0), snr=100, seed=3)
    field = phantom.truth["total_field_ppm"].astype(np.float32)
    local = phantom.truth["local_field_ppm"].astype(np.float32)
    return phantom, field, local, phantom.masks["brain"]


def _on_gpu(*arrays):
    return [backend.to_device(a, "cuda") for a in arrays]


def test_laplacian_unwrap(head):
    phantom, *_ = head
    wrapped = np.angle(phantom.gre.signal[..., 2]).astype(np.float32)
    mask = phantom.masks["brain"]
    cpu = unwrap_laplacian(wrapped, mask, phantom.gre.voxel_size_mm)
    gpu = unwrap_laplacian(*_on_gpu(wrapped, mask), phantom.gre.voxel_size_mm)
    assert relative_difference(gpu, cpu, mask) < LINEAR


@pytest.mark.parametrize("method", BGREMOVE_METHODS)
def test_background_removal(head, method):
    phantom, field, _, mask = head
    voxel, b0 = phantom.gre.voxel_size_mm, phantom.gre.b0_dir
    cpu = remove_background(field, mask, voxel, b0, method)
    gpu = remove_background(*_on_gpu(field, mask), voxel, b0, method)
    assert np.array_equal(backend.to_numpy(gpu.mask), cpu.mask)
    limit = LINEAR if method in ("vsharp", "resharp") else ITERATIVE
    assert relative_difference(gpu.local_field_ppm, cpu.local_field_ppm, cpu.mask) < limit
    assert _iterations(gpu.parameters) == _iterations(cpu.parameters)


@pytest.mark.parametrize("method", INVERSION_METHODS)
def test_dipole_inversion(head, method):
    phantom, _, local, mask = head
    voxel, b0 = phantom.gre.voxel_size_mm, phantom.gre.b0_dir
    magnitude = np.abs(phantom.gre.signal[..., 0]).astype(np.float32)
    field = phantom.truth["total_field_ppm"].astype(np.float32) if method == "tfi" else local
    options = RUN_OPTIONS.get(method, {})
    extra = {"magnitude": magnitude} if method in ("medi", "tfi") else {}
    cpu = invert_dipole(field, mask, voxel, b0, method, **extra, **options)
    gpu_extra = {k: backend.to_device(v, "cuda") for k, v in extra.items()}
    gpu = invert_dipole(*_on_gpu(field, mask), voxel, b0, method, **gpu_extra, **options)
    limit = LINEAR if method in CLOSED_FORM_INVERSIONS else ITERATIVE
    assert relative_difference(gpu.chi_ppm, cpu.chi_ppm, mask) < limit
    assert _iterations(gpu.parameters) == _iterations(cpu.parameters)


def test_r2star_fit(head):
    from qsmliver.relaxometry import fit_r2star

    phantom, *_ = head
    magnitude = np.abs(phantom.gre.signal).astype(np.float32)
    mask = phantom.masks["brain"]
    for method in ("loglinear", "truncation"):
        cpu = fit_r2star(magnitude, phantom.gre.te_s, method=method, mask=mask)
        gpu = fit_r2star(*_on_gpu(magnitude), phantom.gre.te_s, method=method,
                         mask=backend.to_device(mask, "cuda"))
        limit = LINEAR if method == "loglinear" else ITERATIVE
        assert relative_difference(gpu.r2star_per_s, cpu.r2star_per_s, mask) < limit


def test_fat_water_separation():
    from qsmliver.fatwater import separate_fat_water

    phantom = abdomen_phantom(shape=(40, 32, 16), b0_t=1.5, snr=60.0, seed=1)
    gre = phantom.gre
    cpu = separate_fat_water(gre.signal, gre.te_s, gre.b0_t, voxel_size_mm=gre.voxel_size_mm)
    gpu = separate_fat_water(backend.to_device(gre.signal, "cuda"), gre.te_s, gre.b0_t,
                             voxel_size_mm=gre.voxel_size_mm)
    tissue = cpu.mask
    assert np.array_equal(backend.to_numpy(gpu.mask), tissue)
    for name in ("water", "fat", "field_hz", "r2star_per_s"):
        assert relative_difference(getattr(gpu, name), getattr(cpu, name), tissue) < ITERATIVE


@pytest.mark.parametrize("anatomy", ["brain", "liver"])
def test_whole_chain(anatomy):
    from qsmliver.pipeline import recon

    if anatomy == "brain":
        phantom = brain_phantom(shape=(48, 48, 40), voxel_size_mm=(3.0, 3.0, 3.0), snr=100,
                                seed=3)
        mask = phantom.masks["brain"]
    else:
        phantom = abdomen_phantom(shape=(48, 40, 24), b0_t=1.5, snr=60.0, seed=1)
        mask = None
    cpu = recon(phantom.gre, anatomy, mask=mask, device="cpu")
    gpu = recon(phantom.gre, anatomy, mask=mask, device="cuda")
    assert cpu.maps.keys() == gpu.maps.keys()
    inside = cpu.maps["mask"].data > 0 if "mask" in cpu.maps else None
    for name, quantity in cpu.maps.items():
        difference = relative_difference(gpu.maps[name].data, quantity.data, inside)
        assert difference < ITERATIVE, f"{name}: {difference:.2e}"


#: Non-default chain choices, each once on the device (the defaults are test_whole_chain's).
CHAIN_OPTIONS = {
    "brain linear fit, Laplacian unwrap, PDF, TV-ADMM, CSF reference": (
        "brain", {"field": {"method": "linear", "unwrap": "laplacian"},
                  "bgremove": {"method": "pdf"}, "inversion": {"method": "tv_admm"},
                  "reference": {"method": "csf"}}),
    "brain skimage unwrap, V-SHARP, NDI, no reference, float64, ARLO R2*": (
        "brain", {"field": {"unwrap": "skimage"}, "bgremove": {"method": "vsharp"},
                  "inversion": {"method": "ndi"}, "reference": {"method": "none"},
                  "dtype": "float64", "r2star": {"method": "arlo"}}),
    "brain LBV, iLSQR, automatic mask, NLLS R2*": (
        "brain", {"bgremove": {"method": "lbv"}, "inversion": {"method": "ilsqr"},
                  "r2star": {"method": "nlls"}}),
    "brain TFI on the total field": ("brain", {"inversion": {"method": "tfi"}}),
    "liver PDF + MEDI, muscle reference": (
        "liver", {"inversion": {"method": "medi"}, "reference": {"method": "muscle"}}),
}


@pytest.mark.parametrize("case", list(CHAIN_OPTIONS))
def test_chain_options(case):
    """Every unwrapping, field fit, background removal and inversion choice of the chain, and
    the other references, precisions and R2* fits, run on the device as on the CPU."""
    from qsmliver.pipeline import recon

    anatomy, config = CHAIN_OPTIONS[case]
    if anatomy == "brain":
        phantom = brain_phantom(shape=(32, 32, 24), voxel_size_mm=(4.0, 4.0, 4.0), snr=100,
                                seed=3)
        mask = phantom.masks["brain"] if "automatic mask" not in case else None
    else:
        phantom = abdomen_phantom(shape=(48, 40, 24), b0_t=1.5, snr=60.0, seed=1)
        mask = None
    cpu = recon(phantom.gre, anatomy, mask=mask, device="cpu", **config)
    gpu = recon(phantom.gre, anatomy, mask=mask, device="cuda", **config)
    assert cpu.maps.keys() == gpu.maps.keys()
    inside = cpu.maps["mask"].data > 0
    for name, quantity in cpu.maps.items():
        difference = relative_difference(gpu.maps[name].data, quantity.data, inside)
        assert difference < ITERATIVE, f"{name}: {difference:.2e}"


def test_cli_on_the_device(tmp_path):
    """``qsmliver recon --device cuda`` writes the same maps as ``--device cpu``."""
    import nibabel as nib

    from qsmliver.cli import main
    from qsmliver.simulate.write import write_phantom

    phantom = brain_phantom(shape=(32, 32, 24), voxel_size_mm=(4.0, 4.0, 4.0), snr=100, seed=3)
    write_phantom(phantom, tmp_path / "in", formats=("bids",), subject="p1")
    subject = tmp_path / "in" / "rawdata" / "sub-p1"
    for device in ("cpu", "cuda"):
        assert main(["recon", str(subject), "-o", str(tmp_path / device), "--device", device,
                     "--no-montage"]) == 0
    mask = nib.load(tmp_path / "cpu" / "sub-p1_mask.nii.gz").get_fdata() > 0
    for suffix in ("Chimap", "fieldmap", "desc-localfield_map", "R2starmap"):
        cpu, gpu = (nib.load(tmp_path / device / f"sub-p1_{suffix}.nii.gz").get_fdata()
                    for device in ("cpu", "cuda"))
        assert relative_difference(gpu, cpu, mask) < ITERATIVE, suffix
