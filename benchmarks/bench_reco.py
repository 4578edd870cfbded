"""Classical reconstruction speed (events/s, one core): seeds, clusters and all shower shapes.

    python benchmarks/bench_reco.py [--events 100000] [--json out.json]

The sample is simulated with ``fastreco.sim`` (gamma + pi0, 1-100 GeV) when the simulation is
available, else made by :func:`synthetic_batch` (Gaussian blobs plus ~80 noise hits per event).
Timings exclude numba compilation (a warm-up call) and the sample's creation.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import report
from fastreco.data.store import HIT_FIELDS, TRUTH_COLUMNS, EventBatch, EventStore, write_shard
from fastreco.geometry.ecal_barrel import EcalBarrel
from fastreco.reco.pipeline import reconstruct, reconstruct_batch


def synthetic_batch(n: int, seed: int = 1, noise_hits: int = 80) -> EventBatch:
    """Events of one Gaussian 7x7 blob (sigma 0.6 crystal, 1-100 GeV) plus uniform noise hits."""
    geo = EcalBarrel()
    rng = np.random.default_rng(seed)
    energy = rng.uniform(1.0, 100.0, n)
    ieta = rng.integers(5, geo.n_eta - 5, n)
    iphi = rng.integers(0, geo.n_phi, n)
    shift = rng.uniform(-0.5, 0.5, (n, 2))
    d = np.arange(-3, 4)
    prof = np.exp(
        -(
            (d[None, :, None] - shift[:, 0, None, None]) ** 2
            + (d[None, None, :] - shift[:, 1, None, None]) ** 2
        )
        / (2 * 0.6**2)
    )
    blob_e = energy[:, None, None] * prof / prof.sum(axis=(1, 2), keepdims=True)
    blob_c = (ieta[:, None, None] + d[None, :, None]) * geo.n_phi + (
        (iphi[:, None, None] + d[None, None, :]) % geo.n_phi
    )
    noise_c = rng.integers(0, geo.n_cells, (n, noise_hits))
    noise_e = 0.12 + rng.exponential(0.03, (n, noise_hits))
    event = np.concatenate([np.repeat(np.arange(n), 49), np.repeat(np.arange(n), noise_hits)])
    cell = np.concatenate([blob_c.reshape(-1), noise_c.reshape(-1)])
    value = np.concatenate([blob_e.reshape(-1), noise_e.reshape(-1)])
    value += rng.normal(0.0, 0.04, len(value))
    key, inverse = np.unique(event * geo.n_cells + cell, return_inverse=True)
    summed = np.bincount(inverse, value)
    ev = key // geo.n_cells
    offsets = np.concatenate([[0], np.cumsum(np.bincount(ev, minlength=n))])
    k = len(key)
    hits = {
        "cell": (key % geo.n_cells).astype(np.int32),
        "energy": summed.astype(np.float32),
        "time": np.zeros(k, np.float32),
        "deposit": summed.astype(np.float32),
        "truth_particle": np.zeros(k, np.int32),
        "truth_fraction": np.ones(k, np.float32),
    }
    truth = {name: np.zeros(n, dtype) for name, dtype in TRUTH_COLUMNS.items()}
    truth.update(
        pdg=np.full(n, 22, np.int32),
        energy=energy.astype(np.float32),
        eta=geo.eta_center(ieta).astype(np.float32),
        phi=geo.phi_center(iphi).astype(np.float32),
        parent=np.full(n, -1, np.int32),
    )
    assert set(hits) == set(HIT_FIELDS)
    return EventBatch(
        offsets=offsets.astype(np.int64),
        hits=hits,
        truth_offsets=np.arange(n + 1, dtype=np.int64),
        truth=truth,
    )


def make_sample(n_events: int, out_dir: str | Path) -> tuple[Path, str]:
    """An event store of ``n_events`` in ``out_dir``; returns (path, how it was made)."""
    try:
        from fastreco.sim.config import SimConfig
        from fastreco.sim.engine import simulate
    except ImportError:
        simulate = None
    if simulate is not None:
        config = SimConfig(particles=["gamma", "pi0"], energy="1:100", n_events=n_events, seed=1)
        return Path(simulate(config, out_dir, workers=1, progress=False)), "fastreco.sim gamma+pi0"
    geo = EcalBarrel()
    attrs = {
        "detector": "ecal",
        "detector_params": geo.to_dict(),
        "generator": {"synthetic": 1},
        "seed": 1,
        "shard_index": 0,
    }
    path = write_shard(Path(out_dir) / "shard-00000.h5", synthetic_batch(n_events), attrs)
    return path.parent, "synthetic blobs + 80 noise hits"


def rate(n: int, fn) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=20_000)
    parser.add_argument("--json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path, how = make_sample(args.events, Path(tmp) / "store")
        store = EventStore(path)
        batch = store.read(0, min(args.batch_size, store.n_events))
        reconstruct_batch(batch.slice(0, min(100, batch.n_events)), store.detector)  # compile
        hits = batch.n_hits / max(batch.n_events, 1)
        rows = [
            {
                "what": f"reconstruct_batch, in memory ({how})",
                "events": batch.n_events,
                "hits/event": hits,
                "events/s": rate(batch.n_events, lambda: reconstruct_batch(batch, store.detector)),
            },
            {
                "what": "reconstruct: HDF5 read + reco + parquet",
                "events": store.n_events,
                "hits/event": hits,
                "events/s": rate(
                    store.n_events,
                    lambda: reconstruct(
                        path, Path(tmp) / "reco.parquet", args.batch_size, progress=False
                    ),
                ),
            },
        ]
    report("Classical ECAL reconstruction, 1 core", rows, args.json)


if __name__ == "__main__":
    main()
