"""Per-event truth targets of HGCAL single-particle events: energy, deposit, barycentre, impact.

Definitions (all from the event store; positions in cm):

* ``energy``: the gun particle's true energy [GeV]; ``deposited``: its true deposit on the EM
  scale (``truth/deposited``, GeV); ``pdg``: its PDG id.
* **true barycentre** ``barycenter_x, _y, _z``: the mean cell position (``cell_position``: x, y
  and the layer's silicon z) of the event's hits weighted by the gun particle's true deposit in
  each, ``deposit * truth_fraction`` for the hits whose dominant particle is the gun particle
  (no sampling fluctuations, noise or pileup; cells below the zero-suppression threshold are
  not in the store and do not count). NaN when the particle deposited nothing in stored hits.
* ``impact_x, impact_y, impact_z``: where the gun particle crossed the front face
  (``truth/impact_eta``, ``impact_phi`` at z = z_front); NaN if it did not reach it.

Events are single-particle guns: the first truth row with ``parent == -1`` is the particle.
"""

from __future__ import annotations

import numpy as np

from fastreco.data.store import EventBatch
from fastreco.geometry.hgcal import HgcalEndcap

TARGET_COLUMNS = (
    "pdg",
    "energy",
    "deposited",
    "barycenter_x",
    "barycenter_y",
    "barycenter_z",
    "impact_x",
    "impact_y",
    "impact_z",
)


def gun_rows(batch: EventBatch) -> np.ndarray:
    """Truth row (global in the batch) of each event's first gun particle, shape (n,)."""
    parent = batch.truth["parent"]
    event = batch.truth_event_index()
    is_gun = parent == -1
    first = np.full(batch.n_events, -1, dtype=np.int64)
    rows = np.flatnonzero(is_gun)
    # reversed so that the first gun row of each event is written last
    first[event[rows[::-1]]] = rows[::-1]
    if np.any(first < 0):
        raise ValueError("every event needs a gun particle (parent == -1)")
    return first


def true_deposit_weights(batch: EventBatch) -> np.ndarray:
    """Per hit: the gun particle's true deposit [GeV] (``deposit * truth_fraction`` where the
    dominant particle is the event's first gun particle, else 0), shape (n_hits,)."""
    gun_local = gun_rows(batch) - batch.truth_offsets[:-1]
    event = batch.hit_event_index()
    is_gun = batch.hits["truth_particle"] == gun_local[event]
    return np.where(
        is_gun,
        batch.hits["deposit"].astype(np.float64) * batch.hits["truth_fraction"],
        0.0,
    )


def true_barycenter(batch: EventBatch, geometry: HgcalEndcap) -> np.ndarray:
    """True barycentre (x, y, z) [cm] of each event (module docstring), shape (n, 3)."""
    w = true_deposit_weights(batch)
    pos = geometry.cell_position(batch.hits["cell"])
    event = batch.hit_event_index()
    n = batch.n_events
    total = np.bincount(event, weights=w, minlength=n)
    out = np.full((n, 3), np.nan)
    ok = total > 0
    for j, key in enumerate(("x", "y", "z")):
        s = np.bincount(event, weights=w * pos[key], minlength=n)
        out[ok, j] = s[ok] / total[ok]
    return out


def single_particle_targets(batch: EventBatch, geometry: HgcalEndcap) -> dict[str, np.ndarray]:
    """The columns of :data:`TARGET_COLUMNS` for each event of ``batch`` (float64, pdg int32)."""
    row = gun_rows(batch)
    t = batch.truth
    bary = true_barycenter(batch, geometry)
    theta = 2.0 * np.arctan(np.exp(-t["impact_eta"][row].astype(np.float64)))
    rho = geometry.z_front * np.tan(theta)
    phi = t["impact_phi"][row].astype(np.float64)
    return {
        "pdg": t["pdg"][row].astype(np.int32),
        "energy": t["energy"][row].astype(np.float64),
        "deposited": t["deposited"][row].astype(np.float64),
        "barycenter_x": bary[:, 0],
        "barycenter_y": bary[:, 1],
        "barycenter_z": bary[:, 2],
        "impact_x": rho * np.cos(phi),
        "impact_y": rho * np.sin(phi),
        "impact_z": np.where(np.isfinite(rho), geometry.z_front, np.nan),
    }
