"""Crystal windows: a fixed ``size x size`` image of the ECAL around each event's seed.

The window is the representation the image models read and the classical reconstruction
starts from (:mod:`fastreco.reco`). Everything works on a whole batch at once: the seed of every
event is one segmented arg-max and all hits are scattered into the ``(n_events, size, size)``
array in one compiled (numba) pass over the CSR hit arrays; there is no Python loop over events.
About 0.7 M events/s for 25x25 windows of ~180 hits (one core), far faster than the HDF5 read.

Conventions:

* axis 1 of a window runs along ``ieta`` (increasing eta), axis 2 along ``iphi`` (increasing
  phi); the seed sits at ``[size // 2, size // 2]``;
* for an odd ``size`` the window spans ``-size//2 .. +size//2`` crystals around the seed; for an
  even ``size`` it spans ``-size//2 .. size//2 - 1``, i.e. one crystal more on the low-eta and
  low-phi side (the seed is still at index ``size // 2``);
* phi wraps around (``iphi mod n_phi``); crystals beyond the barrel's eta edges are zero;
* an event without hits gives an all-zero window and a centre cell of -1.

Shapes:
    - **windows:** ``(n_events, size, size)`` float32, the ``field`` of each crystal (GeV for
      ``energy`` and ``deposit``, ns for ``time``); crystals without a hit are 0.
    - **centre cell:** ``(n_events,)`` int64, flat cell id of the window centre (the seed).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Literal

import numba
import numpy as np
import numpy.typing as npt

from fastreco.data.store import EventBatch, EventStore
from fastreco.errors import InputError
from fastreco.geometry.ecal_barrel import EcalBarrel

log = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]
Center = Literal["seed", "truth"]

__all__ = [
    "crystal_windows",
    "iter_windows",
    "road_sums",
    "segment_argmax",
    "window_offsets",
    "windows_at",
]


@numba.njit(cache=True, nogil=True)
def _segment_argmax(offsets: np.ndarray, values: np.ndarray, out: np.ndarray) -> None:
    for e in range(len(offsets) - 1):
        best = -1
        for h in range(offsets[e], offsets[e + 1]):
            if best < 0 or values[h] > values[best]:
                best = h
        out[e] = best


def segment_argmax(offsets: npt.ArrayLike, values: npt.ArrayLike) -> IntArray:
    """Index of the largest value of each CSR segment, -1 for an empty segment.

    Ties go to the first hit of the segment in storage order (the store writes the hits of an
    event sorted by cell id, so to the lowest cell id).

    Args:
        offsets: ``(n_segments + 1,)`` CSR offsets into ``values``.
        values: ``(n,)`` finite values.

    Returns:
        ``(n_segments,)`` int64 indices into ``values``.
    """
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    out = np.empty(len(offsets) - 1, dtype=np.int64)
    _segment_argmax(offsets, np.ascontiguousarray(values), out)
    return out


def window_offsets(size: int) -> IntArray:
    """Crystal offsets of the window positions, ``(size,)``: ``arange(size) - size // 2``."""
    return np.arange(size, dtype=np.int64) - size // 2


def _centre_cells(batch: EventBatch, geometry: EcalBarrel, center: Center) -> IntArray:
    if center == "seed":
        seed = segment_argmax(batch.offsets, batch.hits["energy"])
        cells = np.asarray(batch.hits["cell"], dtype=np.int64)
        if len(cells) == 0:
            return np.full(batch.n_events, -1, dtype=np.int64)
        return np.where(seed >= 0, cells[np.maximum(seed, 0)], -1)
    if center == "truth":
        prim = batch.primaries()
        if len(prim["pdg"]) != batch.n_events:
            raise InputError(
                "center='truth' needs exactly one primary per event",
                field="center",
                value=center,
            )
        eta = np.where(np.isfinite(prim["impact_eta"]), prim["impact_eta"], prim["eta"])
        phi = np.where(np.isfinite(prim["impact_phi"]), prim["impact_phi"], prim["phi"])
        return geometry.cell_at(eta, phi)
    raise InputError("must be 'seed' or 'truth'", field="center", value=center)


@numba.njit(cache=True, nogil=True)
def _scatter(
    offsets: np.ndarray,
    cell: np.ndarray,
    values: np.ndarray,
    centre: np.ndarray,
    n_phi: int,
    size: int,
    out: np.ndarray,
) -> None:
    """Add each hit's value into its event's window; ``out`` is (n_events, size, size), zeroed."""
    half = size // 2
    for e in range(len(offsets) - 1):
        c = centre[e]
        if c < 0:
            continue
        for h in range(offsets[e], offsets[e + 1]):
            deta, dphi = _cell_offset(cell[h], c, n_phi)
            i, j = deta + half, dphi + half
            if 0 <= i < size and 0 <= j < size:
                out[e, i, j] += values[h]


@numba.njit(cache=True, nogil=True, inline="always")
def _cell_offset(k: int, c: int, n_phi: int) -> tuple[int, int]:
    """(ieta, iphi) offsets of flat cell ``k`` from flat cell ``c``, iphi wrapped into
    [-n_phi/2, n_phi/2)."""
    k_eta, c_eta = k // n_phi, c // n_phi
    dphi = (k - k_eta * n_phi) - (c - c_eta * n_phi)  # in (-n_phi, n_phi)
    if dphi >= n_phi - n_phi // 2:
        dphi -= n_phi
    elif dphi < -(n_phi // 2):
        dphi += n_phi
    return k_eta - c_eta, dphi


def windows_at(
    batch: EventBatch,
    geometry: EcalBarrel,
    centre: npt.ArrayLike,
    size: int = 25,
    field: str = "energy",
) -> npt.NDArray[np.float32]:
    """The ``size x size`` windows of ``field`` around given centre cells.

    Args:
        centre: ``(n_events,)`` flat cell id of each window's centre; -1 gives a zero window.

    Returns:
        ``(n_events, size, size)`` float32, axis 1 = ieta, axis 2 = iphi.
    """
    if size < 1:
        raise InputError("must be >= 1", field="size", value=size)
    out = np.zeros((batch.n_events, size, size), dtype=np.float32)
    _scatter(*_kernel_inputs(batch, centre, field), geometry.n_phi, size, out)
    return out


def _kernel_inputs(
    batch: EventBatch, centre: npt.ArrayLike, field: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The checked, contiguous ``offsets, cell, values, centre`` arrays of the numba kernels."""
    if field not in batch.hits:
        raise InputError(f"not a hit field ({sorted(batch.hits)})", field="field", value=field)
    centre = np.ascontiguousarray(centre, dtype=np.int64)
    if centre.shape != (batch.n_events,):
        raise ValueError(f"centre has shape {centre.shape}, expected ({batch.n_events},)")
    return (
        np.ascontiguousarray(batch.offsets, dtype=np.int64),
        np.ascontiguousarray(batch.hits["cell"], dtype=np.int32),
        np.ascontiguousarray(batch.hits[field], dtype=np.float32),
        centre,
    )


@numba.njit(cache=True, nogil=True)
def _road_sum(
    offsets: np.ndarray,
    cell: np.ndarray,
    values: np.ndarray,
    centre: np.ndarray,
    n_phi: int,
    size: int,
    half_phi: int,
    threshold: float,
    out: np.ndarray,
) -> None:
    """Per event, the sum of its hits above ``threshold`` in the window's ieta rows whose iphi
    lies outside the window's columns but within ``half_phi`` of the centre."""
    half = size // 2
    for e in range(len(offsets) - 1):
        c = centre[e]
        if c < 0:
            continue
        total = 0.0
        for h in range(offsets[e], offsets[e + 1]):
            if values[h] <= threshold:
                continue
            deta, dphi = _cell_offset(cell[h], c, n_phi)
            in_rows = 0 <= deta + half < size
            beside = not (-half <= dphi < size - half) and -half_phi <= dphi <= half_phi
            if in_rows and beside:
                total += values[h]
        out[e] = total


def road_sums(
    batch: EventBatch,
    geometry: EcalBarrel,
    centre: npt.ArrayLike,
    size: int,
    half_phi: int,
    threshold: float,
    field: str = "energy",
) -> npt.NDArray[np.float64]:
    """The energy of each event's phi road beside its window (a supercluster's extension).

    Sums the hits of ``field`` above ``threshold`` [GeV] in the ieta rows of the ``size x size``
    window around ``centre`` whose iphi lies outside the window but within ``half_phi`` crystals
    of the centre: the legs of a converted photon and bremsstrahlung, which the magnetic field
    spreads along phi.

    Returns:
        ``(n_events,)`` float64 [GeV]; 0 for an event without hits (centre -1).
    """
    if half_phi < size // 2:
        raise InputError(
            f"the road must reach at least the window's half width ({size // 2})",
            field="half_phi",
            value=half_phi,
        )
    out = np.zeros(batch.n_events, dtype=np.float64)
    _road_sum(
        *_kernel_inputs(batch, centre, field),
        geometry.n_phi,
        size,
        half_phi,
        float(threshold),
        out,
    )
    return out


def crystal_windows(
    batch: EventBatch,
    geometry: EcalBarrel,
    size: int = 25,
    field: str = "energy",
    center: Center = "seed",
) -> tuple[npt.NDArray[np.float32], IntArray]:
    """The ``size x size`` crystal window around each event's centre crystal.

    Args:
        batch: the events.
        geometry: the barrel the cell ids refer to.
        size: window side in crystals (odd for a centred window; see the module docstring for
            even sizes).
        field: hit field written into the window (``energy``, ``deposit``, ``time``, ...).
            The seed is always chosen on ``energy``.
        center: ``"seed"``, the highest-energy hit of the event; or ``"truth"``, the crystal
            where the primary crossed the calorimeter front face (its production direction if
            it never reached it).

    Returns:
        ``windows`` ``(n_events, size, size)`` float32 (axis 1 = ieta, axis 2 = iphi) and the
        centre cell ``(n_events,)`` int64, -1 for an event without hits (``center="seed"``) or
        a truth direction outside the barrel (``center="truth"``).
    """
    centre = _centre_cells(batch, geometry, center)
    return windows_at(batch, geometry, centre, size, field), centre


def iter_windows(
    store: EventStore,
    batch_size: int = 20_000,
    size: int = 25,
    *,
    field: str = "energy",
    center: Center = "seed",
) -> Iterator[tuple[npt.NDArray[np.float32], IntArray, EventBatch]]:
    """Windows of a whole store, batch by batch (batches never cross a shard).

    Yields:
        ``(windows, centre_cell, batch)`` as :func:`crystal_windows` returns them, with the
        batch they were made from (for truth and the global event index).
    """
    geometry = store.detector
    if not isinstance(geometry, EcalBarrel):
        raise InputError(
            "crystal windows need the ECAL barrel", field="detector", value=type(geometry).__name__
        )
    for batch in store.iter_batches(batch_size):
        windows, centre = crystal_windows(batch, geometry, size, field=field, center=center)
        yield windows, centre, batch
