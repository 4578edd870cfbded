"""Shared test helpers: tiny hand-made events."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fastreco.data.store import HIT_FIELDS, TRUTH_COLUMNS, EventBatch
from fastreco.geometry.ecal_barrel import EcalBarrel


def make_batch(
    events: Sequence[Sequence[tuple[int, float]]],
    pdg: int | Sequence[int] = 22,
    energy: float | Sequence[float] | None = None,
    *,
    daughters: Sequence[Sequence[tuple[int, float, float, float]]] | None = None,
    geometry: EcalBarrel | None = None,
) -> EventBatch:
    """An :class:`EventBatch` from ``[(cell, energy [GeV]), ...]`` per event.

    Every hit field and truth column is filled: ``time`` 0, ``deposit`` = energy, hits belong to
    the primary (``truth_particle`` 0, ``truth_fraction`` 1). One primary per event, with PDG id
    ``pdg`` (one for all events or one per event), true energy ``energy`` (default: the sum of the
    event's hits) and the direction of its highest-energy hit's crystal (0, 0 without hits).
    ``daughters`` adds, per event, rows ``(pdg, energy, eta, phi)`` whose parent is the primary.
    """
    geometry = geometry or EcalBarrel()
    n = len(events)
    pdgs = [pdg] * n if isinstance(pdg, int) else list(pdg)
    if energy is None:
        energies = [float(sum(e for _, e in ev)) for ev in events]
    elif isinstance(energy, (int, float)):
        energies = [float(energy)] * n
    else:
        energies = [float(e) for e in energy]
    extra = daughters or [[] for _ in range(n)]

    cells = [c for ev in events for c, _ in ev]
    values = [e for ev in events for _, e in ev]
    n_hits = len(cells)
    hits = {
        "cell": np.asarray(cells, dtype=HIT_FIELDS["cell"]),
        "energy": np.asarray(values, dtype=HIT_FIELDS["energy"]),
        "time": np.zeros(n_hits, dtype=HIT_FIELDS["time"]),
        "deposit": np.asarray(values, dtype=HIT_FIELDS["deposit"]),
        "truth_particle": np.zeros(n_hits, dtype=HIT_FIELDS["truth_particle"]),
        "truth_fraction": np.ones(n_hits, dtype=HIT_FIELDS["truth_fraction"]),
    }
    offsets = np.concatenate([[0], np.cumsum([len(ev) for ev in events])]).astype(np.int64)

    rows: dict[str, list[float]] = {name: [] for name in TRUTH_COLUMNS}
    n_rows = []

    def add(pdg_id: int, e: float, eta: float, phi: float, parent: int) -> None:
        for name, value in (
            ("pdg", pdg_id),
            ("energy", e),
            ("eta", eta),
            ("phi", phi),
            ("vx", 0.0),
            ("vy", 0.0),
            ("vz", 0.0),
            ("parent", parent),
            ("converted", 0),
            ("conversion_radius", np.nan),
            ("reached_calo", 1),
            ("impact_eta", eta),
            ("impact_phi", phi),
            ("deposited", e),
            ("interaction_depth", np.nan),
        ):
            rows[name].append(value)

    for i, ev in enumerate(events):
        if ev:
            seed = max(ev, key=lambda hit: hit[1])[0]
            pos = geometry.cell_position(seed)
            eta, phi = float(pos["eta"][()]), float(pos["phi"][()])
        else:
            eta = phi = 0.0
        add(pdgs[i], energies[i], eta, phi, -1)
        for d_pdg, d_e, d_eta, d_phi in extra[i]:
            add(d_pdg, d_e, d_eta, d_phi, 0)
        n_rows.append(1 + len(extra[i]))
    truth = {name: np.asarray(rows[name], dtype=dtype) for name, dtype in TRUTH_COLUMNS.items()}
    truth_offsets = np.concatenate([[0], np.cumsum(n_rows)]).astype(np.int64)
    return EventBatch(offsets=offsets, hits=hits, truth_offsets=truth_offsets, truth=truth)
