"""The classical ECAL reconstruction of a whole event store: one table row per event.

For every event: the seed (highest-energy crystal), the 5x5 window around it, the connected
cluster grown from it (:mod:`fastreco.reco.clustering`), every shower-shape variable of the
seed talk (:mod:`fastreco.reco.showershape`) and the truth of the generated particle.

Table columns (one row per event):

* ``event`` (int64, :func:`reconstruct` only): global event index in the store;
* :data:`~fastreco.reco.showershape.RECO_COLUMNS`: energies in GeV (float32), ratios and
  shapes (float32), ``n_crystals`` (int32), ``seed_cell`` (int64, -1 without hits),
  ``seed_eta``/``seed_phi`` (float32, crystal centre, phi in [-pi, pi), rad);
* truth of the primary (the ``parent == -1`` row): ``true_pdg`` (int32, 0 if none),
  ``true_energy`` [GeV], ``true_eta``, ``true_phi`` [rad] (float32, production direction),
  ``converted`` (uint8, the primary's own conversion flag: photons only);
* ``opening_angle`` (float32, rad): 3D angle between the two photons of a pi0 -> gamma gamma
  primary (truth rows whose parent is the primary); NaN for anything else (other particles,
  Dalitz decays).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from fastreco.data.store import EventBatch, EventStore
from fastreco.data.windows import windows_at
from fastreco.errors import InputError
from fastreco.geometry.ecal_barrel import EcalBarrel
from fastreco.reco.clustering import CLUSTER_THRESHOLD, connected_clusters, find_seeds, seed_cells
from fastreco.reco.showershape import RECO_COLUMNS, W0, shower_shapes

log = logging.getLogger(__name__)

PI0_PDG = 111
PHOTON_PDG = 22

TRUTH_OUTPUT_COLUMNS: tuple[str, ...] = (
    "true_pdg",
    "true_energy",
    "true_eta",
    "true_phi",
    "converted",
    "opening_angle",
)

__all__ = ["TRUTH_OUTPUT_COLUMNS", "reconstruct", "reconstruct_batch", "truth_columns"]


def _unit_vectors(eta: npt.ArrayLike, phi: npt.ArrayLike) -> npt.NDArray[np.float64]:
    eta = np.asarray(eta, dtype=np.float64)
    phi = np.asarray(phi, dtype=np.float64)
    ch = np.cosh(eta)
    return np.stack([np.cos(phi) / ch, np.sin(phi) / ch, np.tanh(eta)], axis=-1)


def truth_columns(batch: EventBatch) -> dict[str, np.ndarray]:
    """Truth of each event's primary and the pi0 opening angle (see the module docstring)."""
    n = batch.n_events
    parent = np.asarray(batch.truth["parent"])
    pdg = np.asarray(batch.truth["pdg"])
    t_event = batch.truth_event_index()
    # first parent == -1 row of each event (exactly one for particle guns)
    prim_rows = np.flatnonzero(parent == -1)
    first = np.ones(len(prim_rows), dtype=bool)
    first[1:] = t_event[prim_rows[1:]] != t_event[prim_rows[:-1]]
    prim_rows = prim_rows[first]
    prim = np.full(n, -1, dtype=np.int64)
    prim[t_event[prim_rows]] = prim_rows
    has = prim >= 0
    take = np.maximum(prim, 0)

    def col(name: str, fill: float) -> np.ndarray:
        values = np.asarray(batch.truth[name])
        if len(values) == 0:
            return np.full(n, fill, dtype=np.float32)
        return np.where(has, values[take], fill).astype(np.float32)

    out = {
        "true_pdg": np.where(has, pdg[take] if len(pdg) else 0, 0).astype(np.int32),
        "true_energy": col("energy", np.nan),
        "true_eta": col("eta", np.nan),
        "true_phi": col("phi", np.nan),
        "converted": np.where(has, col("converted", 0), 0).astype(np.uint8),
    }

    # pi0 -> gamma gamma: the photon rows whose parent is the primary's row within its event
    angle = np.full(n, np.nan, dtype=np.float32)
    if len(parent):
        starts = batch.truth_offsets[:-1] - batch.truth_offsets[0]
        prim_local = np.where(has, prim - starts, -2)  # -2 never matches
        photon = (parent == prim_local[t_event]) & (pdg == PHOTON_PDG) & (parent >= 0)
        rows = np.flatnonzero(photon)
        n_photons = np.bincount(t_event[rows], minlength=n)
        events = np.flatnonzero((n_photons == 2) & (out["true_pdg"] == PI0_PDG))
        if len(events):
            first_row = rows[np.searchsorted(t_event[rows], events)]
            second_row = rows[np.searchsorted(t_event[rows], events) + 1]
            eta = np.asarray(batch.truth["eta"])
            phi = np.asarray(batch.truth["phi"])
            u1 = _unit_vectors(eta[first_row], phi[first_row])
            u2 = _unit_vectors(eta[second_row], phi[second_row])
            cross = np.linalg.norm(np.cross(u1, u2), axis=1)
            angle[events] = np.arctan2(cross, (u1 * u2).sum(axis=1))
    out["opening_angle"] = angle
    return out


def reconstruct_batch(
    batch: EventBatch,
    geometry: EcalBarrel,
    *,
    cluster_threshold: float = CLUSTER_THRESHOLD,
    w0: float = W0,
) -> pd.DataFrame:
    """Reconstruct every event of ``batch``: one row per event (columns: module docstring).

    Args:
        batch: the events.
        geometry: the barrel the cell ids refer to.
        cluster_threshold: crystal threshold of the connected cluster [GeV].
        w0: log-weight offset of the covariances.

    Returns:
        DataFrame of ``batch.n_events`` rows: :data:`RECO_COLUMNS` then the truth columns.
    """
    seeds = find_seeds(batch)
    seed_cell = seed_cells(batch, seeds)
    win = windows_at(batch, geometry, seed_cell, size=5)  # (n, 5, 5)
    e_cluster, n_crystals, _ = connected_clusters(batch, geometry, seeds, cluster_threshold)
    shapes = shower_shapes(win, seed_cell, geometry, e_cluster=e_cluster, w0=w0)
    shapes["e_cluster"] = e_cluster
    shapes["n_crystals"] = n_crystals
    data: dict[str, np.ndarray] = {}
    for name in RECO_COLUMNS:
        values = shapes[name]
        if name == "seed_cell":
            data[name] = values.astype(np.int64)
        elif name == "n_crystals":
            data[name] = values.astype(np.int32)
        else:
            data[name] = values.astype(np.float32)
    data.update(truth_columns(batch))
    return pd.DataFrame(data)


def reconstruct(
    store_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str] | None = None,
    batch_size: int = 20_000,
    progress: bool = True,
    *,
    cluster_threshold: float = CLUSTER_THRESHOLD,
    w0: float = W0,
) -> pd.DataFrame:
    """Reconstruct a whole event store and write the table as parquet.

    Args:
        store_path: event store (directory of shards or one shard file).
        out_path: parquet file to write atomically (temporary file, then rename); None to only
            return the table.
        batch_size: events read and reconstructed at a time (memory ~10 kB per event).
        progress: show a rich progress bar.
        cluster_threshold, w0: see :func:`reconstruct_batch`.

    Returns:
        The table: ``event`` (global index) then the columns of :func:`reconstruct_batch`.
    """
    if batch_size < 1:
        raise InputError("must be >= 1", field="batch_size", value=batch_size)
    store = EventStore(store_path)
    geometry = store.detector
    if not isinstance(geometry, EcalBarrel):
        raise InputError(
            "the classical reconstruction needs the ECAL barrel",
            source=store_path,
            field="detector",
            value=store.attrs.get("detector"),
        )
    log.info("reconstructing %d events of %s", store.n_events, store_path)
    frames: list[pd.DataFrame] = []
    done = 0
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=False)
        bar.start()
        task = bar.add_task(f"reco {store_path}", total=store.n_events)
    try:
        for batch in store.iter_batches(batch_size):
            df = reconstruct_batch(batch, geometry, cluster_threshold=cluster_threshold, w0=w0)
            df.insert(0, "event", np.arange(done, done + batch.n_events, dtype=np.int64))
            frames.append(df)
            done += batch.n_events
            if bar is not None:
                bar.update(task, advance=batch.n_events)
    finally:
        if bar is not None:
            bar.stop()
    if frames:
        table = pd.concat(frames, ignore_index=True)
    else:
        table = reconstruct_batch(store.read(0, 0), geometry)
        table.insert(0, "event", np.zeros(0, dtype=np.int64))
    if out_path is not None:
        _write_parquet(
            table,
            Path(out_path),
            {
                "store": str(store_path),
                "cluster_threshold": cluster_threshold,
                "w0": w0,
                "detector": store.attrs.get("detector"),
                "detector_params": store.attrs.get("detector_params"),
            },
        )
    return table


def _write_parquet(table: pd.DataFrame, path: Path, meta: dict[str, object]) -> None:
    """Write ``table`` to ``path`` atomically, with ``meta`` as JSON under b"fastreco.reco"."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    schema_meta = dict(arrow.schema.metadata or {})
    schema_meta[b"fastreco.reco"] = json.dumps(meta, default=str).encode()
    arrow = arrow.replace_schema_metadata(schema_meta)
    try:
        pq.write_table(arrow, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("wrote %d rows to %s", len(table), path)
