"""Robust, smooth field-map selection from the VARPRO cost by graph cuts (PyMaxflow).

Following Hernando D, Kellman P, Haldar JP, Liang ZP. Robust water/fat separation in the
presence of large field inhomogeneities using a graph cut algorithm. MRM 2010;63:79-90, the
field map ψ is the minimiser over a discrete set of candidates of

    E(ψ) = Σ_v D_v(ψ_v) + λ Σ_(u,v) β_uv ((ψ_u − ψ_v) / f_F)²

where ``D_v`` is the data term of voxel v: its VARPRO residual ``R_v``
(:func:`qsmliver.fatwater.varpro.varpro_cost`, minimised over R2*) relative to its signal
energy, ``D_v = (R_v − min R_v) / (||S_v||² + s)`` with ``s`` the median over voxels of
``min R_v`` (the typical residual at the optimum: noise). Relative residuals make λ independent
of the signal units and give dark tissue (iron-loaded liver, whose field is as well defined
relative to its signal as that of bright tissue) the same say as bright tissue, while ``s``
flattens the data term of voxels whose signal is at the noise level, which are then set by
their neighbours. The sum runs over the 6-neighbours inside the mask, ``β_uv = (h_min /
h_uv)²`` with ``h_uv`` the voxel size along the neighbour's axis (a discretisation of
∫|∇ψ|² on anisotropic grids: thick slices are coupled weakly), and ``f_F`` is the frequency of
the main fat peak (so that λ does not depend on B0).

The labels are unbounded integers ``L`` (ψ = ψ_0 + L·Δψ); with uniformly spaced echoes the
cost is periodic with period ``1/ΔTE`` (N grid steps) and is read at ``L mod N``, so field maps
that wrap beyond one period (near air) are represented and unwrapped by the same energy.

The energy is minimised by iterated binary "jump" moves, each solved exactly by one s-t
min-cut (Boykov, Veksler & Zabih, IEEE TPAMI 2001;23:1222; Kolmogorov & Zabih, IEEE TPAMI
2004;26:147): every voxel either keeps its label or moves to a proposal ``L + δ_v`` with all
``δ_v`` of one sign, which makes the convex pairwise term submodular
(``E01 + E10 − E00 − E11 = 2 w δ_u δ_v ≥ 0``). The proposals are

- to the next local minimum of the voxel's own cost above (or below) its current label, as in
  Hernando et al. 2010;
- a constant jump of all voxels by the main fat shift, by the period minus it, and by one
  period (the last is the graph-cut phase unwrapping of Bioucas-Dias & Valadão, IEEE TIP
  2007;16:698, PUMA);
- small constant steps of 1, 2 and 4 grid steps that relax the map within its basin.

Cycles over all moves stop when a whole cycle lowers the energy by less than a relative
tolerance. The labels start at each voxel's global minimum (or at a given field map).
Disconnected parts of the mask are not coupled by the smoothness term; each is finally shifted
by the whole number of periods that brings its mean closest to that of the largest part. The
min-cuts run on the host (PyMaxflow); only the cost table moves there and the field map back.

With a field prior ``π`` (Hz; :mod:`qsmliver.fatwater.prior`) the smoothness term penalises
the departure from the prior's differences instead,
``β_uv ((ψ_u − ψ_v − (π_u − π_v)) / f_F)²``: the field may bend as steeply as the prior
predicts (near air) at no cost. A constant offset per edge leaves every binary move
submodular (the term above, ``2 w δ_u δ_v``, does not depend on it), and the components are
aligned on ``ψ − π``.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from qsmliver import backend
from qsmliver.errors import QSMConfigError, QSMInputError

__all__ = ["DEFAULT_SMOOTHNESS", "graphcut_field_map", "voxelwise_field_map"]

Array = Any

#: Default λ of the smoothness term (chosen on the abdomen phantom at 1.5 T and 3 T and the
#: ISMRM 2012 challenge cases 12, 13, 15, 16 and 17: 0.01-0.3 kept phantom swaps below 0.3 %;
#: the 4-echo challenge cases need >= 0.1; 1.0 flattens the strong B0 gradient of case 15).
DEFAULT_SMOOTHNESS = 0.1


def _neighbour_edges(mask: np.ndarray, voxel: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                    np.ndarray]:
    """Index pairs (into the masked voxels, C order) of 6-neighbours and their weights β."""
    index = np.full(mask.shape, -1, dtype=np.int64)
    index[mask] = np.arange(int(mask.sum()))
    heads, tails, weights = [], [], []
    h_min = float(voxel.min())
    for axis in range(mask.ndim):
        if mask.shape[axis] < 2:
            continue
        lo = [slice(None)] * mask.ndim
        hi = [slice(None)] * mask.ndim
        lo[axis] = slice(0, -1)
        hi[axis] = slice(1, None)
        both = mask[tuple(lo)] & mask[tuple(hi)]
        i = index[tuple(lo)][both]
        j = index[tuple(hi)][both]
        heads.append(i)
        tails.append(j)
        weights.append(np.full(i.size, (h_min / float(voxel[axis])) ** 2))
    if not heads:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    return np.concatenate(heads), np.concatenate(tails), np.concatenate(weights)


def _local_minima(cost: np.ndarray, periodic: bool) -> np.ndarray:
    """(V, N) bool: candidates that are local minima of each voxel's cost along the field axis
    (circularly when periodic); a plateau counts once, at its first candidate."""
    if periodic:
        prev, nxt = np.roll(cost, 1, axis=1), np.roll(cost, -1, axis=1)
    else:
        big = np.full((cost.shape[0], 1), np.inf)
        prev = np.concatenate([big, cost[:, :-1]], axis=1)
        nxt = np.concatenate([cost[:, 1:], big], axis=1)
    return (cost < prev) & (cost <= nxt)


def _next_minimum(minima: np.ndarray, labels: np.ndarray, direction: int,
                  periodic: bool) -> np.ndarray:
    """Steps (signed) from each label to the nearest local minimum strictly above (direction
    +1) or below (−1) it; 0 where there is none."""
    n = minima.shape[1]
    offsets = np.arange(1, n + 1)
    column = np.mod(labels, n) if periodic else labels
    index = column[:, None] + direction * offsets
    if periodic:
        valid = np.ones(index.shape, dtype=bool)
        index = np.mod(index, n)
    else:
        valid = (index >= 0) & (index < n)
        index = np.clip(index, 0, n - 1)
    hit = np.take_along_axis(minima, index, axis=1) & valid
    first = np.argmax(hit, axis=1)
    return np.where(hit.any(axis=1), direction * offsets[first], 0)


def _align_components(labels: np.ndarray, mask: np.ndarray, n: int,
                      reference: np.ndarray | float = 0.0) -> np.ndarray:
    """Shift each connected component of the mask by the multiple of the period (n labels)
    that brings its mean of ``labels − reference`` closest to that of the largest component.

    The smoothness term does not couple disconnected components, so their offsets by whole
    periods are arbitrary; this makes the field map consistent across them (``reference``: a
    field prior in label units, which says how far apart their fields should lie).
    """
    import scipy.ndimage as nd

    components, count = nd.label(mask)
    if count <= 1:
        return labels
    comp = components[mask]
    sizes = np.bincount(comp, minlength=count + 1)
    means = np.bincount(comp, weights=labels.astype(np.float64) - reference,
                        minlength=count + 1) / np.maximum(sizes, 1)
    reference = means[int(np.argmax(sizes[1:])) + 1]
    shifts = np.rint((means - reference) / n).astype(np.int64)
    return labels - n * shifts[comp]


def _lookup(cost: np.ndarray, labels: np.ndarray, periodic: bool) -> np.ndarray:
    """``cost[v, labels[v]]`` (labels read modulo N when periodic, clipped otherwise)."""
    n_vox, n = cost.shape
    column = np.mod(labels, n) if periodic else np.clip(labels, 0, n - 1)
    return cost.reshape(-1)[np.arange(n_vox) * n + column]


def _energy(data: np.ndarray, labels: np.ndarray, heads, tails, weights, periodic,
            offsets=0.0) -> float:
    unary = float(_lookup(data, labels, periodic).sum())
    diff = (labels[heads] - labels[tails]).astype(np.float64) - offsets
    return unary + float((weights * diff * diff).sum())


def _jump_cannot_help(data, labels, amount, heads, tails, periodic, offsets=0.0) -> bool:
    """True when a constant jump by ``amount`` provably cannot lower the energy: no voxel's
    data term decreases and no neighbour pair is more than ``|amount|/2`` apart (moving any
    region by ``amount`` then only lengthens the differences across its boundary). This skips
    the costly full-volume period jumps once the map has no wraps left."""
    if heads.size and np.abs(labels[heads] - labels[tails] - offsets).max() > abs(amount) / 2:
        return False
    if periodic and amount % data.shape[1] == 0:
        return True
    gain = _lookup(data, labels, periodic) - _lookup(data, labels + amount, periodic)
    return not bool((gain > 0).any())


def _binary_move(data, labels, proposal, heads, tails, weights, periodic, offsets=0.0):
    """One exact binary move by s-t min-cut; returns the new labels.

    With ``x = 1`` for "take the proposal", the energy is ``Σ U_i(x_i) + Σ c_ij (1 − x_i) x_j``
    (Kolmogorov & Zabih 2004). Nodes whose unary preference exceeds every pairwise gain they
    could make are fixed first (``U_i(1) − U_i(0) > Σ_j c_ij`` keeps them, ``U_i(0) − U_i(1) >
    Σ_k c_ki`` moves them, in every minimiser), their edges folded into their neighbours'
    unaries, and the min-cut runs on the remaining nodes only: bright voxels with clear data
    are decided without the graph.
    """
    import maxflow

    n_vox = labels.size
    cost0 = _lookup(data, labels, periodic)
    cost1 = _lookup(data, proposal, periodic)
    a_u = labels[heads].astype(np.float64) - offsets
    b_u = proposal[heads].astype(np.float64) - offsets
    a_v, b_v = labels[tails].astype(np.float64), proposal[tails].astype(np.float64)
    e00 = weights * (a_u - a_v) ** 2
    e01 = weights * (a_u - b_v) ** 2
    e10 = weights * (b_u - a_v) ** 2
    e11 = weights * (b_u - b_v) ** 2
    # E(x_u, x_v) = e00 + (e10 − e00) x_u + (e11 − e10) x_v + (e01 + e10 − e00 − e11)(1 − x_u) x_v
    cost1 = cost1 + np.bincount(heads, weights=e10 - e00, minlength=n_vox)
    cost1 = cost1 + np.bincount(tails, weights=e11 - e10, minlength=n_vox)
    capacity = np.maximum(e01 + e10 - e00 - e11, 0.0)
    out_sum = np.bincount(heads, weights=capacity, minlength=n_vox)
    in_sum = np.bincount(tails, weights=capacity, minlength=n_vox)
    keep = cost1 - cost0 > out_sum
    take = cost0 - cost1 > in_sum
    free = ~(keep | take)
    if free.any():
        # Fold edges to fixed nodes: a fixed "take" tail adds c to the head's x = 0 cost; a
        # fixed "keep" head adds c to the tail's x = 1 cost.
        cost0 = cost0 + np.bincount(heads, weights=capacity * take[tails], minlength=n_vox)
        cost1 = cost1 + np.bincount(tails, weights=capacity * keep[heads], minlength=n_vox)
        index = np.cumsum(free) - 1
        both = free[heads] & free[tails]
        n_free = int(free.sum())
        graph = maxflow.Graph[float](n_free, int(both.sum()))
        nodes = graph.add_nodes(n_free)
        if both.any():
            graph.add_edges(index[heads[both]], index[tails[both]], capacity[both],
                            np.zeros(int(both.sum())))
        c0, c1 = cost0[free], cost1[free]
        low = np.minimum(c0, c1)
        # A node on the sink side (x = 1, takes the proposal) cuts its source edge.
        graph.add_grid_tedges(nodes, c1 - low, c0 - low)
        graph.maxflow()
        take[free] = graph.get_grid_segments(nodes)
    return np.where(take, proposal, labels)


def voxelwise_field_map(cost: Array, field_grid_hz: ArrayLike, period_hz: float | None) -> Array:
    """Per-voxel global minimum of the cost (no spatial regularisation), centred on 0 Hz.

    Parameters
    ----------
    cost : (V, N) ndarray
        VARPRO cost per voxel and candidate.
    field_grid_hz : (N,) array_like
        The candidates, Hz.
    period_hz : float or None
        The period of the cost (values are wrapped into ``[−P/2, P/2)``), or None.

    Returns
    -------
    (V,) float64 ndarray
        Field map, Hz, on the backend of ``cost``.
    """
    xp = backend.get_array_module(cost)
    grid = xp.asarray(np.asarray(field_grid_hz, dtype=np.float64))
    field = grid[xp.argmin(cost, axis=1)]
    if period_hz is not None:
        field = xp.mod(field + period_hz / 2, period_hz) - period_hz / 2
    return field


def graphcut_field_map(
    cost: Array,
    mask: Array,
    voxel_size_mm: ArrayLike,
    field_grid_hz: ArrayLike,
    *,
    period_hz: float | None,
    fat_shift_hz: float,
    smoothness: float = DEFAULT_SMOOTHNESS,
    max_cycles: int = 12,
    tol: float = 1e-6,
    signal_energy: Array | None = None,
    field_prior_hz: Array | None = None,
    initial_field_hz: Array | None = None,
) -> tuple[Array, dict[str, Any]]:
    """Smooth field map minimising the VARPRO cost plus a quadratic smoothness term.

    See the module docstring for the energy and the moves.

    Parameters
    ----------
    cost : (V, N) ndarray
        VARPRO residual (minimised over R2*) of the V voxels of ``mask`` (C order) at the N
        field candidates (NumPy or CuPy; moved to the host once).
    mask : (X, Y, Z) bool ndarray
        The voxels the cost belongs to.
    voxel_size_mm : (3,) array_like
        Voxel size, mm (weights the neighbours, β = (h_min/h)²).
    field_grid_hz : (N,) array_like
        Uniformly spaced candidates, Hz.
    period_hz : float or None
        Period of the cost (uniform echoes; the grid spans exactly one period), or None for a
        bounded grid.
    fat_shift_hz : float
        Frequency of the main fat peak, Hz (sets the scale of the smoothness term and the size
        of the fat-alias jump).
    smoothness : float
        λ, the weight of the smoothness term (> 0).
    max_cycles : int
        Maximum number of cycles over all moves.
    tol : float
        A cycle that lowers the energy by less than ``tol·|E|`` ends the iterations.
    signal_energy : (V,) ndarray, optional
        ``||S_v||²`` of each voxel: the data term is then the relative residual (module
        docstring). Without it the residual is divided by the typical minimum residual only.
    field_prior_hz : (V,) ndarray, optional
        A prior field map π, Hz: the smoothness term then acts on ψ − π (module docstring).
    initial_field_hz : (V,) ndarray, optional
        Start from this field map (rounded to the grid) instead of each voxel's minimum.

    Returns
    -------
    field_hz : (V,) float64 ndarray
        The selected field map, Hz, on the backend of ``cost``; with a periodic cost shifted by
        a multiple of the period so that its median lies in ``[−P/2, P/2)``.
    info : dict
        JSON-serialisable: energies, cycles, moves tried and accepted (per kind), time,
        data scale.

    Raises
    ------
    QSMInputError
        When the cost does not match the mask or the grid, or a prior or initial map does not
        match the mask or is not finite.
    QSMConfigError
        For a non-positive smoothness.
    """
    xp = backend.get_array_module(cost)
    start = time.perf_counter()
    data = np.asarray(backend.to_numpy(cost), dtype=np.float64)
    mask_h = np.asarray(backend.to_numpy(mask), dtype=bool)
    grid = np.asarray(field_grid_hz, dtype=np.float64).reshape(-1)
    n_vox, n = data.shape if data.ndim == 2 else (-1, -1)
    if data.ndim != 2 or n_vox != int(mask_h.sum()) or n != grid.size:
        raise QSMInputError(f"cost must be (mask voxels, candidates) = ({int(mask_h.sum())}, "
                            f"{grid.size}), got {data.shape}", field="cost")
    if not (math.isfinite(float(smoothness)) and float(smoothness) > 0):
        raise QSMConfigError(f"smoothness must be positive, got {smoothness}")
    voxel = np.broadcast_to(np.asarray(voxel_size_mm, dtype=np.float64), (3,))
    step = float(grid[1] - grid[0])
    periodic = period_hz is not None
    # Data term: residual above the voxel's minimum, relative to its signal energy plus the
    # typical residual at the minimum (or to that alone without the signal energies).
    best = data.min(axis=1)
    floor = 1e-6 * float(np.median(data.max(axis=1))) + 1e-300
    scale = max(float(np.median(best)), floor)
    denominator = np.full(n_vox, scale)
    if signal_energy is not None:
        power = np.asarray(backend.to_numpy(signal_energy), dtype=np.float64).reshape(-1)
        if power.size != n_vox:
            raise QSMInputError(f"signal_energy needs {n_vox} values, got {power.size}",
                                field="signal_energy")
        denominator = denominator + power
    data = (data - best[:, None]) / denominator[:, None]
    heads, tails, beta = _neighbour_edges(mask_h, voxel)
    weights = float(smoothness) * beta * (step / float(fat_shift_hz)) ** 2
    offsets = reference = 0.0
    if field_prior_hz is not None:
        prior = np.asarray(backend.to_numpy(field_prior_hz), dtype=np.float64).reshape(-1)
        if prior.size != n_vox or not np.isfinite(prior).all():
            raise QSMInputError(f"field_prior_hz needs {n_vox} finite values, got {prior.size}",
                                field="field_prior_hz")
        reference = prior / step
        offsets = reference[heads] - reference[tails]
    minima = _local_minima(data, periodic)

    if initial_field_hz is None:
        labels = np.argmin(data, axis=1).astype(np.int64)
        if periodic:
            labels = np.where(labels >= n // 2, labels - n, labels)
    else:
        start_hz = np.asarray(backend.to_numpy(initial_field_hz), dtype=np.float64).reshape(-1)
        if start_hz.size != n_vox or not np.isfinite(start_hz).all():
            raise QSMInputError(f"initial_field_hz needs {n_vox} finite values, got "
                                f"{start_hz.size}", field="initial_field_hz")
        labels = np.rint((start_hz - grid[0]) / step).astype(np.int64)
        if not periodic:
            labels = np.clip(labels, 0, n - 1)
    k_fat = max(1, round(abs(fat_shift_hz) / step))
    jumps = [k_fat]
    if periodic:
        jumps += [n - k_fat, n]
    jumps += [4, 2, 1]
    energy = _energy(data, labels, heads, tails, weights, periodic, offsets)
    history = [energy]
    tried = accepted = 0
    stats: dict[str, list[int]] = {}
    cycles = 0
    for _cycle in range(int(max_cycles)):
        cycles += 1
        cycle_start = energy
        moves: list[tuple[str, int]] = [("min", 1), ("min", -1)]
        moves += [("jump", sign * k) for k in jumps for sign in (1, -1)]
        for kind, amount in moves:
            if kind == "min":
                proposal = labels + _next_minimum(minima, labels, amount, periodic)
            else:
                proposal = labels + amount
                if _jump_cannot_help(data, labels, amount, heads, tails, periodic, offsets):
                    continue
            if not periodic:
                proposal = np.where((proposal < 0) | (proposal >= n), labels, proposal)
            if np.array_equal(proposal, labels):
                continue
            tried += 1
            new = _binary_move(data, labels, proposal, heads, tails, weights, periodic, offsets)
            new_energy = _energy(data, new, heads, tails, weights, periodic, offsets)
            key = f"{kind}{amount:+d}"
            stats.setdefault(key, [0, 0])[0] += 1
            if new_energy < energy - 1e-12 * abs(energy):
                stats[key][1] += 1
                labels, energy = new, new_energy
                accepted += 1
        history.append(energy)
        if cycle_start - energy <= tol * abs(cycle_start):
            break
    if periodic:
        labels = _align_components(labels, mask_h, n, reference)
    field = grid[0] + labels * step
    if periodic:
        field = field - period_hz * np.round(np.median(field) / period_hz)
    info = {
        "data_scale": scale,
        "energy_initial": history[0],
        "energy_final": energy,
        "energy_per_cycle": history,
        "cycles": cycles,
        "moves_tried": tried,
        "moves_accepted": accepted,
        "n_edges": int(heads.size),
        "moves": stats,
        "time_s": time.perf_counter() - start,
    }
    return xp.asarray(field), info
