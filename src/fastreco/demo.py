"""The main job end to end, what ``make demo`` runs.

Simulate a gamma/pi0 sample in the ECAL barrel, run the classical reconstruction, train the
shower-shape BDT and write its HTML report (ROC, rejection table, shower shapes, the E5x5
resolution of photons, two event displays); then train seed 000's small CNN on the crystal images
of the same events and evaluate it beside the BDT on the same test split (a second report).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from fastreco.config import DataConfig, ModelConfig, TaskConfig, TrainingConfig
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


def demo_cnn_task(config: SimConfig, store_dir: Path, *, epochs: int) -> TaskConfig:
    """The demo's CNN task: seed 000's TMVA CNN on 25x25 windows of the demo's own store."""
    return TaskConfig(
        name="demo_cnn",
        classes=("gamma", "pi0"),
        data=DataConfig(
            particles=config.particles,
            energy=str(config.energy),
            events=config.n_events,
            seed=config.seed,
            eta_max=config.eta_max,
            events_per_shard=config.events_per_shard,
            dir=str(store_dir),
        ),
        model=ModelConfig(name="tmva-cnn"),
        training=TrainingConfig(epochs=epochs, batch_size=256, learning_rate=2e-3, patience=2),
    )


def run_demo(
    out_dir: str | Path = "demo_out",
    *,
    n_events: int = 20_000,
    workers: int = 2,
    seed: int = 7,
    progress: bool = True,
    cnn_epochs: int = 4,
) -> Path:
    """Run the demo into ``out_dir``; returns the path of the BDT's HTML report.

    ``cnn_epochs = 0`` leaves the CNN out. Re-running it resumes: complete simulation shards are
    kept, and a CNN run folder already trained is evaluated again, not retrained.
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
    log.info("BDT AUC %.4f", metrics["classifiers"]["BDT"]["auc"])
    if cnn_epochs > 0:
        from fastreco.evaluate.run import evaluate_run
        from fastreco.train.runner import train_task

        start = time.perf_counter()
        run = out / "cnn"
        if not (run / "checkpoints" / "best.ckpt").exists():
            task = demo_cnn_task(config, store_dir, epochs=cnn_epochs)
            train_task(task, runs_dir=out, run_name="cnn", progress=progress, resume=False)
        cnn = evaluate_run(run, bdt=True, n_saliency=2, n_displays=2)
        timings["cnn + report"] = time.perf_counter() - start
        for name, clf in cnn["classifiers"].items():
            log.info("%s AUC %.4f", name, clf["auc"])
    log.info("demo timings: %s", timings)
    return Path(metrics["outputs"]["report"])
