"""HGCAL events as point clouds for graph networks: per-hit features, truth objects, kNN graphs.

An event of the HGCAL store (:mod:`fastreco.sim.hgcal`) becomes a set of points with features

============  ==============================================================================
column        value
============  ==============================================================================
``x, y``      hit position / 10 cm
``z``         (z - front face) / 10 cm
``log_e``     ln(1 + calibrated hit energy / 10 MeV)
``time``      hit time [ns], clipped to [-1, 1] (hard scatter near 0; pileup spread)
``layer``     layer index / number of layers
``r``         transverse radius / 100 cm
``eta``       hit pseudorapidity - 2.25 (the middle of the endcap's acceptance)
============  ==============================================================================

and truth for the condensation loss: ``object_id`` per hit is ``1 + row`` of the gun particle
that deposited most in the hit when it holds at least ``min_fraction`` of the hit, ``0`` (noise)
otherwise: pileup, electronic noise, shared hits. Truth objects are the particles as they enter
the calorimeter (the simulation creates nothing in front of it).

Graphs are built here rather than with torch-cluster (no wheel) or pyg-lib (not on PyPI):
:func:`knn_indices` uses scipy's cKDTree on the CPU in low dimensions and a chunked ``cdist`` + ``topk`` on CUDA or
in many dimensions (EdgeConv's feature space).

**Region of interest.** With ``roi_radius`` set, an event keeps only the hits whose projection
onto the front face (along the line from the origin) lies within ``roi_radius`` [cm] of the
energy-weighted centre of the gun particles' impact points: the window around the hard-scatter
particles in which a seeded reconstruction (and seed 001's studies) cluster. Pileup inside the
window stays; CLUE and the networks are compared on the same windows.

Shapes:
    - **features:** ``(n_hits, 8)`` float32; **batch:** ``(n_hits,)`` int64 event index.
    - **neighbours:** ``(n_hits, k)`` int64 indices into the same concatenated hit arrays.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import torch
from scipy.spatial import cKDTree

from fastreco.data.store import EventBatch
from fastreco.errors import InputError
from fastreco.geometry.hgcal import HgcalEndcap

FEATURES = ("x", "y", "z", "log_e", "time", "layer", "r", "eta")
N_FEATURES = len(FEATURES)
#: Particle classes of the condensation network's ID head (PDG |id| -> class index).
CLASSES = ("gamma", "e", "pi", "mu")
_CLASS_OF_PDG = {22: 0, 11: 1, 211: 2, 13: 3}
_ENERGY_UNIT = 0.01  # GeV: the log_e feature's scale
_ETA_CENTRE = 2.25
#: Positions in units of about a shower's width, so that close-by showers (a few cm apart) are
#: O(1) apart in the input, as the condensation space needs them.
_LENGTH_UNIT = 10.0  # cm
#: Above this many dimensions a k-d tree degrades to brute force: use chunked cdist + topk.
_KDTREE_MAX_DIMS = 8
NOISE = 0


@dataclasses.dataclass
class PointCloudEvent:
    """One event's hits as graph-network input and truth.

    Attributes:
        features: ``(n, 8)`` float32, see :data:`FEATURES`.
        energy: ``(n,)`` float32 calibrated hit energy [GeV].
        position: ``(n, 3)`` float32 hit position [cm].
        layer: ``(n,)`` int64.
        object_id: ``(n,)`` int64 (0: noise or pileup, else 1 + truth row of a gun particle).
        truth_fraction: ``(n,)`` float32 share of the hit's deposit from its dominant particle.
        truth_row: ``(n,)`` int64 dominant truth row (-1: noise).
        object_energy: ``(n_objects + 1,)`` float32 true energy of each object [GeV] (index 0
            unused), indexed by ``object_id``.
        object_class: ``(n_objects + 1,)`` int64 class of each object (:data:`CLASSES`).
    """

    features: np.ndarray
    energy: np.ndarray
    position: np.ndarray
    layer: np.ndarray
    object_id: np.ndarray
    truth_fraction: np.ndarray
    truth_row: np.ndarray
    object_energy: np.ndarray
    object_class: np.ndarray

    def __len__(self) -> int:
        return len(self.energy)


def point_cloud_events(
    batch: EventBatch,
    geometry: HgcalEndcap | None = None,
    *,
    min_fraction: float = 0.5,
    roi_radius: float | None = None,
    source: str | None = None,
) -> list[PointCloudEvent]:
    """Split an HGCAL :class:`EventBatch` into :class:`PointCloudEvent` objects.

    Args:
        min_fraction: a hit belongs to a gun particle that holds at least this share of it.
        roi_radius: keep only the hits of the region of interest (module docstring) [cm];
            ``None`` keeps the whole endcap.

    Raises:
        InputError: non-finite hit energies or times, or a truth row outside the event's table.
    """
    geometry = geometry or HgcalEndcap()
    hits = batch.hits
    for name in ("energy", "time"):
        bad = ~np.isfinite(hits[name])
        if bad.any():
            raise InputError(
                "non-finite value", source=source, field=f"hits/{name}", value=hits[name][bad][0]
            )
    pos = geometry.cell_position(hits["cell"])
    layer = pos["layer"].astype(np.int64)
    e_gev = (hits["energy"].astype(np.float64) * geometry.mip_weight[layer]).astype(np.float32)
    x, y, z = (pos[k].astype(np.float32) for k in ("x", "y", "z"))
    r = np.hypot(x, y)
    eta = np.arcsinh(z / np.maximum(r, 1e-3))
    features = np.stack(
        [
            x / _LENGTH_UNIT,
            y / _LENGTH_UNIT,
            (z - geometry.z_front) / _LENGTH_UNIT,
            np.log1p(np.maximum(e_gev, 0.0) / _ENERGY_UNIT),
            np.clip(hits["time"], -1.0, 1.0),
            layer / geometry.n_layers,
            r / 100.0,
            eta - _ETA_CENTRE,
        ],
        axis=1,
    ).astype(np.float32)
    out = []
    for i in range(batch.n_events):
        h0, h1 = int(batch.offsets[i]), int(batch.offsets[i + 1])
        t0, t1 = int(batch.truth_offsets[i]), int(batch.truth_offsets[i + 1])
        row = hits["truth_particle"][h0:h1].astype(np.int64)
        if row.size and (row.max() >= t1 - t0 or row.min() < -1):
            raise InputError(
                f"hit truth row outside the event's {t1 - t0} truth rows (event {i})",
                source=source,
                field="hits/truth_particle",
                value=int(row.max() if row.max() >= t1 - t0 else row.min()),
            )
        parent = batch.truth["parent"][t0:t1]
        is_gun = np.zeros(len(row), bool)
        valid = row >= 0
        is_gun[valid] = parent[row[valid]] == -1
        frac = hits["truth_fraction"][h0:h1]
        object_id = np.where(is_gun & (frac >= min_fraction), row + 1, NOISE)
        pdg = np.abs(batch.truth["pdg"][t0:t1])
        obj_energy = np.concatenate([[0.0], batch.truth["energy"][t0:t1]]).astype(np.float32)
        obj_class = np.concatenate([[0], [_CLASS_OF_PDG.get(int(p), 0) for p in pdg]])
        keep = slice(None)
        if roi_radius is not None:
            keep = _roi_mask(batch, t0, t1, x[h0:h1], y[h0:h1], z[h0:h1], geometry, roi_radius)
        out.append(
            PointCloudEvent(
                features=features[h0:h1][keep],
                energy=e_gev[h0:h1][keep],
                position=np.stack([x[h0:h1], y[h0:h1], z[h0:h1]], axis=1)[keep],
                layer=layer[h0:h1][keep],
                object_id=object_id.astype(np.int64)[keep],
                truth_fraction=frac.astype(np.float32)[keep],
                truth_row=row[keep],
                object_energy=obj_energy,
                object_class=obj_class.astype(np.int64),
            )
        )
    return out


def _roi_mask(
    batch: EventBatch,
    t0: int,
    t1: int,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    geometry: HgcalEndcap,
    radius: float,
) -> np.ndarray:
    truth = batch.truth
    gun = (truth["parent"][t0:t1] == -1) & truth["reached_calo"][t0:t1].astype(bool)
    if not gun.any():
        return np.zeros(len(x), bool)
    theta = 2 * np.arctan(np.exp(-truth["impact_eta"][t0:t1][gun].astype(np.float64)))
    rho = geometry.z_front * np.tan(theta)
    phi = truth["impact_phi"][t0:t1][gun].astype(np.float64)
    w = truth["energy"][t0:t1][gun].astype(np.float64)
    cx = np.average(rho * np.cos(phi), weights=w)
    cy = np.average(rho * np.sin(phi), weights=w)
    scale = geometry.z_front / np.maximum(np.abs(z), 1e-6)
    return np.hypot(x * scale - cx, y * scale - cy) < radius


def collate(events: list[PointCloudEvent]) -> dict[str, torch.Tensor]:
    """Concatenate events into one graph batch (torch-geometric style ``batch`` vector).

    Returns ``features (N, F)``, ``batch (N,)``, ``object_id (N,)`` made unique across events
    (``event * 1000 + id``, 0 stays noise), ``object_energy (N,)`` and ``object_class (N,)``
    (the hit's object's truth, 0 for noise hits), ``energy (N,)`` [GeV].
    """
    features = torch.from_numpy(np.concatenate([e.features for e in events]))
    batch = torch.from_numpy(
        np.concatenate([np.full(len(e), i, np.int64) for i, e in enumerate(events)])
    )
    oid = np.concatenate(
        [np.where(e.object_id > 0, i * 1000 + e.object_id, 0) for i, e in enumerate(events)]
    )
    obj_e = np.concatenate([e.object_energy[e.object_id] for e in events])
    obj_c = np.concatenate([e.object_class[e.object_id] for e in events])
    return {
        "features": features,
        "batch": batch,
        "object_id": torch.from_numpy(oid),
        "object_energy": torch.from_numpy(obj_e.astype(np.float32)),
        "object_class": torch.from_numpy(obj_c.astype(np.int64)),
        "energy": torch.from_numpy(np.concatenate([e.energy for e in events])),
    }


def knn_indices(points: torch.Tensor, batch: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` nearest other points of each point within its own event.

    Points of events with fewer than ``k + 1`` points repeat their own index where neighbours
    are missing (a self-loop carries the point's own features, which is harmless for max/mean
    aggregation). Selection is not differentiable (as in GravNet, gradients flow through the
    distances computed from the returned indices).

    Args:
        points: ``(N, D)`` coordinates.
        batch: ``(N,)`` event index, sorted (as :func:`collate` makes it).
        k: neighbours per point.

    Returns:
        ``(N, k)`` int64 indices on ``points``' device.

    While the model is being exported (``torch.export`` / ONNX), the search is written with
    tensor operations only (:func:`knn_indices_exportable`) so that it becomes part of the graph.
    """
    if torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export():
        return knn_indices_exportable(points, batch, k)
    n = points.shape[0]
    if n == 0:
        return torch.zeros((0, k), dtype=torch.long, device=points.device)
    counts = torch.bincount(batch).tolist()
    starts = np.concatenate([[0], np.cumsum(counts)])
    if points.is_cuda or points.shape[1] > _KDTREE_MAX_DIMS:
        return _knn_dense(points.detach(), starts, k)
    pts = points.detach().cpu().numpy().astype(np.float64)
    out = np.empty((n, k), np.int64)
    for a, b in itertools.pairwise(starts):
        if b == a:
            continue
        m = min(k + 1, b - a)
        _, idx = cKDTree(pts[a:b]).query(pts[a:b], k=m)
        idx = np.asarray(idx).reshape(b - a, m)[:, 1:] + a
        if m - 1 < k:
            own = np.arange(a, b)[:, None]
            idx = np.concatenate([idx, np.repeat(own, k - (m - 1), axis=1)], axis=1)
        out[a:b] = idx
    return torch.from_numpy(out)


def knn_indices_exportable(points: torch.Tensor, batch: torch.Tensor, k: int) -> torch.Tensor:
    """:func:`knn_indices` with tensor operations only (an (N, N) distance matrix), for graphs
    exported to ONNX: same neighbours (up to exact ties), same self-index padding.

    Needs more than ``k`` points in the whole input (events themselves may be smaller) and
    memory for N^2 distances, which suits region-of-interest events of a few thousand hits.
    """
    n = points.shape[0]
    d = torch.cdist(points.detach(), points.detach())  # (N, N)
    other = (batch[:, None] != batch[None, :]) | torch.eye(n, dtype=torch.bool, device=d.device)
    d = d.masked_fill(other, float("inf"))
    dist, idx = d.topk(k, dim=1, largest=False)  # (N, k)
    own = torch.arange(n, device=points.device)[:, None].expand(-1, k)
    return torch.where(torch.isfinite(dist), idx, own)


def _knn_dense(points: torch.Tensor, starts: np.ndarray, k: int, chunk: int = 4096) -> torch.Tensor:
    n = points.shape[0]
    out = torch.empty((n, k), dtype=torch.long, device=points.device)
    for a, b in zip(starts[:-1].tolist(), starts[1:].tolist(), strict=True):
        if b == a:
            continue
        ev = points[a:b]
        m = min(k + 1, b - a)
        for c in range(0, b - a, chunk):
            # exact distances: the matrix-product shortcut flips near-ties between runs
            d = torch.cdist(ev[c : c + chunk], ev, compute_mode="donot_use_mm_for_euclid_dist")
            idx = d.topk(m, largest=False).indices[:, 1:] + a
            if m - 1 < k:
                own = torch.arange(a + c, a + c + len(idx), device=points.device)[:, None]
                idx = torch.cat([idx, own.expand(-1, k - (m - 1))], dim=1)
            out[a + c : a + c + len(idx)] = idx
    return out
