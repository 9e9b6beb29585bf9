"""Spatial and temporal phase unwrapping.

- :func:`unwrap_laplacian`: Laplacian unwrapping (Schofield & Zhu 2003, in the discrete
  wrapped-difference form of Ghiglia & Romero 1994), by a DCT Poisson solve;
  fast and robust to noise, but the result is only congruent with the wrapped phase up to a
  smooth (harmonic) error, which background field removal takes out.
- :func:`unwrap_quality_guided`: region growing in order of a ROMEO-like edge quality
  (Dymerska et al. 2021). Growing a region by always taking the best remaining edge is Prim's
  algorithm on the maximum-quality spanning tree, so the tree is built with
  :func:`scipy.sparse.csgraph.minimum_spanning_tree` on ``cost = 1 - quality`` (compiled,
  no Python loop over voxels) and the wrap counts are summed along the tree by pointer jumping.
  The result is congruent with the input (it differs by exact multiples of 2π).
- :func:`unwrap_skimage`: scikit-image's reliability-sorting unwrapper (Herráez et al. 2002).
- :func:`temporal_unwrap`: echo-by-echo unwrapping in time from an unwrapped reference echo.

The graph methods run on the host (SciPy/scikit-image); the result is moved back to the
input's device. The Laplacian method runs on either backend.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from qsmliver.backend import device_of, fft, get_array_module, to_device, to_numpy
from qsmliver.errors import QSMInputError

__all__ = [
    "UNWRAP_METHODS",
    "edge_quality",
    "temporal_unwrap",
    "unwrap",
    "unwrap_laplacian",
    "unwrap_quality_guided",
    "unwrap_skimage",
    "wrap_to_pi",
]

UNWRAP_METHODS = ("quality", "laplacian", "skimage")
Array = Any
TWO_PI = 2.0 * np.pi


def wrap_to_pi(phase: Array) -> Array:
    """Wrap a phase into ``[-π, π)``."""
    xp = get_array_module(phase)
    return xp.mod(phase + np.pi, TWO_PI) - np.pi


def _check_volume(phase: Array, mask: Array | None, name: str = "phase") -> None:
    if phase.ndim != 3:
        raise QSMInputError(f"expected a 3-D {name} volume, got shape {phase.shape}",
                            field=name)
    if mask is not None:
        if tuple(mask.shape) != tuple(phase.shape):
            raise QSMInputError(f"mask shape {tuple(mask.shape)} does not match the {name} "
                                f"shape {tuple(phase.shape)}", field="mask")
        if not bool(mask.any()):
            raise QSMInputError("the mask is empty", field="mask")


# -- Laplacian unwrapping ----------------------------------------------------------------------
def _laplacian_neumann(x: Array, voxel: np.ndarray, wrapped: bool = False) -> Array:
    """7-point Laplacian with half-sample symmetric (Neumann) boundaries, per mm².

    With ``wrapped=True`` every neighbour difference is wrapped into [-π, π) first, which
    gives the Laplacian of the underlying unwrapped phase wherever neighbours differ by less
    than π.
    """
    xp = get_array_module(x)
    padded = xp.pad(x, 1, mode="edge")
    core = (slice(1, -1),) * 3
    out = xp.zeros_like(x)
    for axis in range(3):
        plus = list(core)
        minus = list(core)
        plus[axis] = slice(2, None)
        minus[axis] = slice(None, -2)
        forward = padded[tuple(plus)] - x
        backward = x - padded[tuple(minus)]
        if wrapped:
            forward, backward = wrap_to_pi(forward), wrap_to_pi(backward)
        out += (forward - backward) / (voxel[axis] ** 2)
    return out


def _laplacian_symbol_dct(shape: tuple[int, ...], voxel: np.ndarray, xp, dtype) -> Array:
    """Eigenvalues of :func:`_laplacian_neumann` in the DCT-II basis."""
    symbol = xp.zeros(shape, dtype=dtype)
    for axis, n in enumerate(shape):
        k = xp.arange(n, dtype=dtype)
        values = (2.0 * xp.cos(np.pi * k / n) - 2.0) / voxel[axis] ** 2
        view = [1] * len(shape)
        view[axis] = n
        symbol = symbol + values.reshape(view)
    return symbol


def _inverse_laplacian_dct(rhs: Array, voxel: np.ndarray) -> Array:
    xp = get_array_module(rhs)
    f = fft(xp)
    coefficients = f.dctn(rhs, type=2, norm="ortho")
    symbol = _laplacian_symbol_dct(rhs.shape, voxel, xp, rhs.dtype)
    symbol[(0,) * rhs.ndim] = 1.0
    coefficients = coefficients / symbol
    coefficients[(0,) * rhs.ndim] = 0.0
    return f.idctn(coefficients, type=2, norm="ortho")


def unwrap_laplacian(phase: Array, mask: Array | None = None,
                     voxel_size_mm: ArrayLike = (1.0, 1.0, 1.0)) -> Array:
    """Laplacian phase unwrapping by a DCT Poisson solve.

    The Laplacian of the true phase is computed from the wrapped phase without unwrapping it:
    Schofield & Zhu's identity ``∇²φ = cos φ_w ∇² sin φ_w − sin φ_w ∇² cos φ_w`` in its
    discrete form, in which each neighbour difference ``∠(e^{iφ_j} e^{−iφ_i})`` is a wrapped
    phase difference (exact wherever neighbours differ by less than π, as in the unweighted
    least-squares unwrapping of Ghiglia & Romero). It is inverted with a discrete cosine
    transform (Neumann boundaries). The result is the true phase plus a harmonic function and
    a constant where the data are not aliased, so it is *not* congruent with the wrapped
    phase; the harmonic part goes with the background field.

    Parameters
    ----------
    phase : (X, Y, Z) array
        Wrapped phase, radians.
    mask : (X, Y, Z) bool array, optional
        Voxels with signal; the result is zero outside and demeaned inside.
    voxel_size_mm : (3,) array_like
        Grid spacing (the Laplacian is anisotropic-aware).

    Returns
    -------
    (X, Y, Z) array
        Unwrapped phase, radians (same dtype as a floating input).

    References
    ----------
    Schofield MA, Zhu Y. Fast phase unwrapping algorithm for interferometric applications.
    Opt Lett 2003;28:1194-6. Ghiglia DC, Romero LA. Robust two-dimensional weighted and
    unweighted phase unwrapping that uses fast transforms and iterative methods. J Opt Soc Am
    A 1994;11:107-17. Li W, Wu B, Liu C. NeuroImage 2011;55:1645 (use in QSM).
    """
    _check_volume(phase, mask)
    dtype = phase.dtype if phase.dtype.kind == "f" else np.float64
    phase = phase.astype(dtype, copy=False)
    xp = get_array_module(phase)
    voxel = np.asarray(voxel_size_mm, dtype=float)
    rhs = _laplacian_neumann(phase, voxel, wrapped=True)
    unwrapped = _inverse_laplacian_dct(rhs, voxel).astype(dtype, copy=False)
    if mask is not None:
        mask = mask.astype(bool)
        unwrapped = xp.where(mask, unwrapped - unwrapped[mask].mean(), 0).astype(dtype)
    return unwrapped


# -- quality-guided region growing -------------------------------------------------------------
def _edge_pairs(mask: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(axis, source coordinates, neighbour coordinates) of every in-mask +1 neighbour pair."""
    pairs = []
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis] = slice(None, -1)
        hi[axis] = slice(1, None)
        both = mask[tuple(lo)] & mask[tuple(hi)]
        src = np.nonzero(both)
        dst = list(src)
        dst[axis] = dst[axis] + 1
        pairs.append((axis, src, tuple(dst)))
    return pairs


def edge_quality(phase: np.ndarray, magnitude: np.ndarray | None, mask: np.ndarray,
                 phase2: np.ndarray | None = None, te_ratio: float | None = None,
                 ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """ROMEO-like quality in [0, 1] of every neighbour edge inside the mask (host arrays).

    The quality is the product of (Dymerska et al. 2021, weights 1, 2, 4 and 5):

    - phase coherence ``1 − |wrap(φ_i − φ_j)| / π``;
    - phase gradient coherence with a second echo ``φ2`` at ``te_ratio = TE2/TE1``:
      ``max(0, 1 − |wrap(Δφ) − wrap(Δφ2)/te_ratio|)`` (when given);
    - magnitude coherence ``(min(m_i, m_j) / max(m_i, m_j))²``;
    - magnitude weight ``min(1, min(m_i, m_j) / m_ref)`` with ``m_ref`` half the 90th
      percentile of the magnitude in the mask (low-signal edges are taken last).

    Returns
    -------
    list of (flat index i, flat index j, quality) arrays, one entry per axis.
    """
    shape = phase.shape
    out = []
    m_ref = None
    if magnitude is not None:
        m_ref = 0.5 * float(np.percentile(magnitude[mask], 90)) or 1.0
    for _axis, src, dst in _edge_pairs(mask):
        delta = wrap_to_pi(phase[dst] - phase[src])
        quality = 1.0 - np.abs(delta) / np.pi
        if phase2 is not None and te_ratio is not None:
            delta2 = wrap_to_pi(phase2[dst] - phase2[src])
            quality *= np.clip(1.0 - np.abs(delta - delta2 / te_ratio), 0.0, 1.0)
        if magnitude is not None:
            m_i, m_j = magnitude[src], magnitude[dst]
            small, large = np.minimum(m_i, m_j), np.maximum(m_i, m_j)
            ratio = np.divide(small, large, out=np.zeros_like(small, dtype=float),
                              where=large > 0)
            quality *= ratio**2 * np.minimum(1.0, small / m_ref)
        out.append((np.ravel_multi_index(src, shape), np.ravel_multi_index(dst, shape),
                    quality))
    return out


def _tree_sum_to_root(parent: np.ndarray, increment: np.ndarray) -> np.ndarray:
    """Sum ``increment`` over each node's path to its root (root: ``parent == self``).

    Pointer jumping: ``log2(depth)`` vectorised rounds instead of a walk per node.
    """
    total = increment.copy()
    ancestor = parent.copy()
    while True:
        # total[i] holds the sum from i up to (not including) ancestor[i]; roots hold 0.
        total = total + total[ancestor]
        next_ancestor = ancestor[ancestor]
        if np.array_equal(next_ancestor, ancestor):
            break
        ancestor = next_ancestor
    return total


def unwrap_quality_guided(phase: Array, magnitude: Array | None = None,
                          mask: Array | None = None, *, phase2: Array | None = None,
                          te_ratio: float | None = None) -> Array:
    """Quality-guided region-growing unwrapping (ROMEO-like quality), congruent with the input.

    Edges between 6-neighbours inside the mask are weighted by :func:`edge_quality`; the
    region is grown from the best voxel of each connected part along the edges of highest
    quality (the maximum-quality spanning tree, which is the order in which ROMEO's priority
    queue visits the voxels), adding at each step the 2π multiple that keeps the phase
    difference across the edge within ``[-π, π)``.

    Parameters
    ----------
    phase : (X, Y, Z) array
        Wrapped phase, radians.
    magnitude : (X, Y, Z) array, optional
        Magnitude for the quality weights (recommended).
    mask : (X, Y, Z) bool array, optional
        Voxels to unwrap (default: all); the output is 0 outside.
    phase2, te_ratio : optional
        A second echo's wrapped phase and ``TE2/TE1``, adding ROMEO's phase-gradient
        coherence to the quality.

    Returns
    -------
    (X, Y, Z) array
        Unwrapped phase: ``phase + 2π k`` with integer ``k``, radians.

    References
    ----------
    Dymerska B, Eckstein K, Bachrata B, et al. Phase unwrapping with a rapid opensource
    minimum spanning tree algorithm (ROMEO). Magn Reson Med 2021;85:2294-2308.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import (
        breadth_first_order,
        connected_components,
        minimum_spanning_tree,
    )

    _check_volume(phase, mask)
    dtype = phase.dtype if phase.dtype.kind == "f" else np.float64
    phase_h = to_numpy(phase).astype(np.float64)
    mask_h = np.ones(phase_h.shape, bool) if mask is None else to_numpy(mask).astype(bool)
    magnitude_h = None if magnitude is None else to_numpy(magnitude).astype(np.float64)
    phase2_h = None if phase2 is None else to_numpy(phase2).astype(np.float64)
    phase_h = wrap_to_pi(phase_h)

    flat = np.flatnonzero(mask_h)
    n = flat.size
    index = np.full(phase_h.size, -1, dtype=np.int64)
    index[flat] = np.arange(n)
    edges = edge_quality(phase_h, magnitude_h, mask_h, phase2_h, te_ratio)
    rows = np.concatenate([index[e[0]] for e in edges])
    cols = np.concatenate([index[e[1]] for e in edges])
    cost = np.concatenate([1.0 + 1e-6 - e[2] for e in edges])  # > 0: zero means "no edge"
    # Voxel quality (for the roots): mean quality of its edges.
    voxel_quality = np.zeros(n)
    counts = np.zeros(n)
    for e in edges:
        for side in (index[e[0]], index[e[1]]):
            np.add.at(voxel_quality, side, e[2])
            np.add.at(counts, side, 1)
    voxel_quality /= np.maximum(counts, 1)

    tree = minimum_spanning_tree(coo_matrix((cost, (rows, cols)), shape=(n, n)).tocsr())
    n_parts, part = connected_components(tree, directed=False)
    # a virtual root joined to the best voxel of each part
    best = np.full(n_parts, -1, dtype=np.int64)
    order = np.lexsort((-voxel_quality, part))
    first = np.ones(n, bool)
    first[1:] = part[order][1:] != part[order][:-1]
    best[part[order][first]] = order[first]
    tree = tree.tocoo()
    rows2 = np.concatenate([tree.row, np.full(n_parts, n)])
    cols2 = np.concatenate([tree.col, best])
    graph = coo_matrix((np.ones(rows2.size), (rows2, cols2)), shape=(n + 1, n + 1)).tocsr()
    _, predecessors = breadth_first_order(graph, n, directed=False, return_predecessors=True)
    parent = predecessors[:n].astype(np.int64)
    is_root = parent == n
    parent[is_root] = np.flatnonzero(is_root)

    values = phase_h.ravel()[flat]
    step = values - values[parent]
    increment = wrap_to_pi(step) - step  # the 2π multiple added across the tree edge
    increment[is_root] = 0.0
    correction = _tree_sum_to_root(parent, increment)
    out = np.zeros(phase_h.size)
    out[flat] = values + TWO_PI * np.round(correction / TWO_PI)
    return to_device(out.reshape(phase_h.shape).astype(dtype), device_of(phase))


def unwrap_skimage(phase: Array, mask: Array | None = None, *, seed: int = 0) -> Array:
    """Reliability-sorting unwrapping by :func:`skimage.restoration.unwrap_phase`.

    Parameters
    ----------
    phase : (X, Y, Z) array
        Wrapped phase, radians.
    mask : (X, Y, Z) bool array, optional
        Voxels to unwrap; 0 outside.
    seed : int
        Passed to scikit-image (tie breaking).

    Returns
    -------
    (X, Y, Z) array
        Unwrapped phase, congruent with the input, radians.

    References
    ----------
    Herráez MA, Burton DR, Lalor MJ, Gdeisat MA. Fast two-dimensional phase-unwrapping
    algorithm based on sorting by reliability following a noncontinuous path. Appl Opt
    2002;41:7437-44 (and its 3-D extension by Abdul-Rahman et al., Appl Opt 2007;46:6623).
    """
    from skimage.restoration import unwrap_phase

    _check_volume(phase, mask)
    dtype = phase.dtype if phase.dtype.kind == "f" else np.float64
    phase_h = wrap_to_pi(to_numpy(phase).astype(np.float64))
    if mask is None:
        out = unwrap_phase(phase_h, rng=seed)
    else:
        mask_h = to_numpy(mask).astype(bool)
        masked = np.ma.masked_array(phase_h, mask=~mask_h)
        out = np.ma.filled(unwrap_phase(masked, rng=seed), 0.0)
        out[~mask_h] = 0.0
    return to_device(np.asarray(out, dtype=dtype), device_of(phase))


def unwrap(phase: Array, method: str = "quality", *, magnitude: Array | None = None,
           mask: Array | None = None, voxel_size_mm: ArrayLike = (1.0, 1.0, 1.0)) -> Array:
    """Dispatch to one of :data:`UNWRAP_METHODS` ("quality", "laplacian", "skimage")."""
    if method == "quality":
        return unwrap_quality_guided(phase, magnitude, mask)
    if method == "laplacian":
        return unwrap_laplacian(phase, mask, voxel_size_mm)
    if method == "skimage":
        return unwrap_skimage(phase, mask)
    from qsmliver.errors import QSMConfigError

    raise QSMConfigError(f"unknown unwrapping method {method!r}; choose one of "
                         f"{', '.join(UNWRAP_METHODS)}")


def temporal_unwrap(phase: Array, te_s: ArrayLike, reference: Array,
                    reference_echo: int = 0) -> Array:
    """Unwrap every echo in time from one spatially unwrapped echo.

    Echo ``n`` is unwrapped with the phase predicted from the nearest already unwrapped echo
    scaled by the echo-time ratio (``φ_n ≈ φ_m TE_n / TE_m``), moving outwards from
    ``reference_echo``, so each step only has to bridge one echo spacing (the temporal
    unwrapping of ROMEO, Dymerska et al. MRM 2021;85:2294). The phase must be free of the
    echo-independent offset φ0 (see :mod:`qsmliver.phase.offset`).

    Parameters
    ----------
    phase : (X, Y, Z, E) array
        Wrapped phase of every echo, radians.
    te_s : (E,) array_like
        Echo times, seconds.
    reference : (X, Y, Z) array
        The spatially unwrapped phase of echo ``reference_echo``.
    reference_echo : int

    Returns
    -------
    (X, Y, Z, E) array
        Unwrapped phase, radians.
    """
    xp = get_array_module(phase)
    te = np.asarray(te_s, dtype=float)
    n_echoes = phase.shape[-1]
    if te.size != n_echoes:
        raise QSMInputError(f"{te.size} echo times for {n_echoes} echoes", field="te_s")
    out = xp.zeros(phase.shape, dtype=reference.dtype)
    out[..., reference_echo] = reference
    order = [*range(reference_echo + 1, n_echoes), *range(reference_echo - 1, -1, -1)]
    for echo in order:
        known = echo - 1 if echo > reference_echo else echo + 1
        predicted = out[..., known] * (te[echo] / te[known])
        wrapped = phase[..., echo]
        out[..., echo] = wrapped + TWO_PI * xp.round((predicted - wrapped) / TWO_PI)
    return out
