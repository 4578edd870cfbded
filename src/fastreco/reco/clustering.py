"""Classical ECAL clustering: seeds, local maxima, fixed-matrix sums and connected clusters.

All functions work on a whole :class:`~fastreco.data.store.EventBatch` at once; the per-event
work runs in compiled (numba) loops over the CSR hit arrays, so there is no Python loop over
events. Cell neighbourhoods follow the barrel's indexing (:mod:`fastreco.geometry.ecal_barrel`):
the 8 neighbours of a crystal are the crystals at ``ieta +- 1`` and ``iphi +- 1`` (diagonals
included), ``iphi`` wraps around (359 and 0 are neighbours) and there is nothing beyond the
barrel's eta edges.

Definitions:

* **seed**: the highest-energy hit of the event (ties: the first in storage order, i.e. the
  lowest cell id for store-written events); events without hits have no seed (-1).
* **local maximum**: a hit above ``threshold`` whose energy is larger than that of each of its
  8 neighbours present in the event; a neighbour of exactly equal energy beats it if its cell id
  is lower, so a flat plateau yields one maximum.
* **E3x3 / E5x5**: sums of all crystals of the 3x3 / 5x5 matrix centred on the seed (including
  negative noise values of the selective-readout region).
* **connected cluster**: the seed plus every crystal with energy above ``threshold`` (default
  2 sigma of the electronic noise, 0.08 GeV) reachable from the seed through 8-neighbour steps
  over such crystals. It is not limited to a window. Its energy is the plain sum.
"""

from __future__ import annotations

import logging

import numba
import numpy as np
import numpy.typing as npt

from fastreco import constants as C
from fastreco.data.store import EventBatch
from fastreco.data.windows import segment_argmax
from fastreco.geometry.ecal_barrel import EcalBarrel

log = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: Energy above which a crystal joins a connected cluster: 2 sigma of the noise [GeV].
CLUSTER_THRESHOLD = 2.0 * C.ECAL_NOISE_PER_CRYSTAL
#: Energy above which a local maximum counts as a seed [GeV] (CMS's barrel cluster seeds are
#: ~1 GeV; well above the 0.04 GeV noise).
SEED_THRESHOLD = 1.0

__all__ = [
    "CLUSTER_THRESHOLD",
    "SEED_THRESHOLD",
    "central_sum",
    "connected_clusters",
    "find_seeds",
    "local_maxima",
    "n_local_maxima",
    "seed_cells",
]


# --------------------------------------------------------------------------------------------
# seeds
# --------------------------------------------------------------------------------------------
def find_seeds(batch: EventBatch) -> IntArray:
    """Hit index (into ``batch.hits``) of each event's highest-energy hit, shape (n_events,).

    -1 for an event without hits.
    """
    return segment_argmax(batch.offsets, batch.hits["energy"])


def seed_cells(batch: EventBatch, seeds: IntArray | None = None) -> IntArray:
    """Flat cell id of each event's seed, shape (n_events,); -1 for an event without hits."""
    seeds = find_seeds(batch) if seeds is None else np.asarray(seeds, dtype=np.int64)
    cells = np.asarray(batch.hits["cell"], dtype=np.int64)
    if len(cells) == 0:
        return np.full(len(seeds), -1, dtype=np.int64)
    return np.where(seeds >= 0, cells[np.maximum(seeds, 0)], -1)


# --------------------------------------------------------------------------------------------
# compiled helpers: per-event cell lookup by binary search
# --------------------------------------------------------------------------------------------
@numba.njit(cache=True, nogil=True)
def _sorted_view(cell: np.ndarray, lo: int, hi: int, order: np.ndarray) -> np.ndarray:
    """Fill ``order[:hi-lo]`` with the local indices of the event's hits sorted by cell id and
    return the sorted cell ids."""
    m = hi - lo
    is_sorted = True
    for i in range(1, m):
        if cell[lo + i] < cell[lo + i - 1]:
            is_sorted = False
            break
    if is_sorted:
        for i in range(m):
            order[i] = i
        return cell[lo:hi]
    local = np.argsort(cell[lo:hi], kind="mergesort")
    for i in range(m):
        order[i] = local[i]
    return cell[lo:hi][local]


@numba.njit(cache=True, nogil=True, inline="always")
def _lookup(sorted_cells: np.ndarray, order: np.ndarray, key: int) -> int:
    """Local index of the hit on cell ``key``, -1 if the event has none."""
    j = np.searchsorted(sorted_cells, key)
    if j < len(sorted_cells) and sorted_cells[j] == key:
        return order[j]
    return -1


@numba.njit(cache=True, nogil=True, inline="always")
def _neighbour(k: int, di: int, dj: int, n_eta: int, n_phi: int) -> int:
    ie = k // n_phi + di
    if ie < 0 or ie >= n_eta:
        return -1
    ip = (k % n_phi + dj) % n_phi
    return ie * n_phi + ip


@numba.njit(cache=True, nogil=True)
def _local_maxima(
    offsets: np.ndarray,
    cell: np.ndarray,
    energy: np.ndarray,
    threshold: float,
    n_eta: int,
    n_phi: int,
    out: np.ndarray,
) -> None:
    order = np.empty(max(len(cell), 1), dtype=np.int64)
    for e in range(len(offsets) - 1):
        lo, hi = offsets[e], offsets[e + 1]
        if hi == lo:
            continue
        sorted_cells = _sorted_view(cell, lo, hi, order)
        for h in range(lo, hi):
            eh = energy[h]
            if not eh > threshold:
                continue
            is_max = True
            for di in range(-1, 2):
                for dj in range(-1, 2):
                    if di == 0 and dj == 0:
                        continue
                    k = _neighbour(cell[h], di, dj, n_eta, n_phi)
                    if k < 0:
                        continue
                    j = _lookup(sorted_cells, order, k)
                    if j < 0:
                        continue
                    en = energy[lo + j]
                    if en > eh or (en == eh and k < cell[h]):
                        is_max = False
            out[h] = is_max


@numba.njit(cache=True, nogil=True)
def _connected(
    offsets: np.ndarray,
    cell: np.ndarray,
    energy: np.ndarray,
    seeds: np.ndarray,
    threshold: float,
    n_eta: int,
    n_phi: int,
    e_out: np.ndarray,
    n_out: np.ndarray,
    member: np.ndarray,
) -> None:
    n = max(len(cell), 1)
    order = np.empty(n, dtype=np.int64)
    stack = np.empty(n, dtype=np.int64)
    for e in range(len(offsets) - 1):
        s = seeds[e]
        if s < 0:
            continue
        lo, hi = offsets[e], offsets[e + 1]
        sorted_cells = _sorted_view(cell, lo, hi, order)
        member[s] = True
        stack[0] = s
        top = 1
        total = 0.0
        count = 0
        while top > 0:
            top -= 1
            h = stack[top]
            total += energy[h]
            count += 1
            for di in range(-1, 2):
                for dj in range(-1, 2):
                    if di == 0 and dj == 0:
                        continue
                    k = _neighbour(cell[h], di, dj, n_eta, n_phi)
                    if k < 0:
                        continue
                    j = _lookup(sorted_cells, order, k)
                    if j < 0:
                        continue
                    g = lo + j
                    if not member[g] and energy[g] > threshold:
                        member[g] = True
                        stack[top] = g
                        top += 1
        e_out[e] = total
        n_out[e] = count


def _hit_arrays(batch: EventBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.ascontiguousarray(batch.offsets, dtype=np.int64),
        np.ascontiguousarray(batch.hits["cell"], dtype=np.int64),
        np.ascontiguousarray(batch.hits["energy"], dtype=np.float64),
    )


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------
def local_maxima(
    batch: EventBatch, geometry: EcalBarrel, threshold: float = SEED_THRESHOLD
) -> BoolArray:
    """Which hits are local maxima above ``threshold`` [GeV], shape (n_hits,) bool.

    See the module docstring for the definition (8 neighbours, phi wrap, tie rule).
    """
    offsets, cell, energy = _hit_arrays(batch)
    out = np.zeros(len(cell), dtype=np.bool_)
    _local_maxima(offsets, cell, energy, float(threshold), geometry.n_eta, geometry.n_phi, out)
    return out


def n_local_maxima(
    batch: EventBatch, geometry: EcalBarrel, threshold: float = SEED_THRESHOLD
) -> IntArray:
    """Number of local maxima above ``threshold`` in each event, shape (n_events,)."""
    mask = local_maxima(batch, geometry, threshold)
    return np.bincount(batch.hit_event_index()[mask], minlength=batch.n_events).astype(np.int64)


def connected_clusters(
    batch: EventBatch,
    geometry: EcalBarrel,
    seeds: IntArray | None = None,
    threshold: float = CLUSTER_THRESHOLD,
) -> tuple[FloatArray, IntArray, BoolArray]:
    """The connected cluster grown from each event's seed.

    Args:
        batch: the events.
        geometry: the barrel (for neighbours and the phi wrap).
        seeds: hit index of each event's seed (default :func:`find_seeds`); -1 for none.
        threshold: crystals above this energy [GeV] join the cluster; the seed always does.

    Returns:
        ``energy`` (n_events,) float64 [GeV], ``n_crystals`` (n_events,) int64 (0 and 0 for an
        event without a seed) and ``member`` (n_hits,) bool, the hits in the clusters.
    """
    offsets, cell, energy = _hit_arrays(batch)
    seeds = find_seeds(batch) if seeds is None else np.ascontiguousarray(seeds, dtype=np.int64)
    n = batch.n_events
    e_out = np.zeros(n, dtype=np.float64)
    n_out = np.zeros(n, dtype=np.int64)
    member = np.zeros(len(cell), dtype=np.bool_)
    _connected(
        offsets,
        cell,
        energy,
        seeds,
        float(threshold),
        geometry.n_eta,
        geometry.n_phi,
        e_out,
        n_out,
        member,
    )
    return e_out, n_out, member


def central_sum(windows: npt.ArrayLike, n: int) -> FloatArray:
    """Sum of the central ``n x n`` crystals of each window (E3x3 for n=3, E5x5 for n=5).

    Args:
        windows: ``(n_events, size, size)`` seed-centred windows (:mod:`fastreco.data.windows`),
            ``size >= n``, both odd.

    Returns:
        ``(n_events,)`` float64 [GeV].
    """
    w = np.asarray(windows)
    size = w.shape[-1]
    if n % 2 == 0 or size % 2 == 0 or n > size:
        raise ValueError(f"need odd n <= odd window size, got n={n}, size={size}")
    a = (size - n) // 2
    return w[:, a : a + n, a : a + n].sum(axis=(1, 2), dtype=np.float64)
