"""The main job end to end, what ``make demo`` runs.

Simulate a gamma/pi0 sample in the ECAL barrel, run the classical reconstruction, train the
shower-shape BDT, and write one HTML report (ROC, rejection table, shower shapes, the E5x5
resolution of photons, two event displays).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from fastreco.data.store import EventStore
from fastreco.evaluate.display import save_event_display
from fastreco.reco.pipeline import reconstruct
from fastreco.sim.config import SimConfig
from fastreco.sim.engine import simulate
from fastreco.train.baseline import resolution_summary, train_baseline

log = logging.getLogger(__name__)


def _first_event(store: EventStore, pdg: int, min_energy: float) -> int:
    """Index of the first event whose gun particle has ``pdg`` and at least ``min_energy``."""
    prim = store.read(0, min(store.n_events, 2000)).primaries()
    hits = np.flatnonzero(
        (prim["pdg"] == pdg) & (prim["energy"] >= min_energy) & (prim["converted"] == 0)
    )
    return int(hits[0]) if hits.size else 0


def run_demo(
    out_dir: str | Path = "demo_out",
    *,
    n_events: int = 20_000,
    workers: int = 2,
    seed: int = 7,
    progress: bool = True,
) -> Path:
    """Run the demo into ``out_dir``; returns the path of the HTML report.

    Re-running it resumes: complete simulation shards are kept.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    start = time.perf_counter()
    config = SimConfig(particles=("gamma", "pi0"), energy="1:100", n_events=n_events, seed=seed)
    store_dir = simulate(config, out / "data", workers=workers, progress=progress)
    timings["simulate"] = time.perf_counter() - start

    start = time.perf_counter()
    reco = reconstruct(store_dir, out / "reco.parquet", progress=progress)
    timings["reco"] = time.perf_counter() - start

    start = time.perf_counter()
    store = EventStore(store_dir)
    displays = [
        save_event_display(store_dir, _first_event(store, 22, 30.0), out / "event_gamma.png"),
        save_event_display(store_dir, _first_event(store, 111, 30.0), out / "event_pi0.png"),
    ]
    resolution = resolution_summary(reco, pdg=22, estimator="e5x5")
    metrics = train_baseline(
        reco,
        out / "baseline",
        task="gamma-vs-pi0",
        seed=seed,
        resolution=resolution,
        event_displays=displays,
    )
    timings["bdt + report"] = time.perf_counter() - start
    log.info("demo timings: %s", timings)
    log.info("BDT AUC %.4f", metrics["classifiers"]["BDT"]["auc"])
    return Path(metrics["outputs"]["report"])
