"""Sharded, seeded, resumable simulation runs (in-process or on a dask cluster).

Shard ``i`` of a run is simulated from ``SeedSequence([seed, i])`` alone, so the output is the
same whatever the number of workers, and a killed run started again with the same arguments
keeps its complete shards (each written atomically) and simulates only the missing ones.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fastreco.data.store import Shard, shard_path, write_shard
from fastreco.errors import InputError
from fastreco.geometry.ecal_barrel import EcalBarrel
from fastreco.sim.config import SimConfig

log = logging.getLogger(__name__)

RUN_FILE = "run.json"


def simulate_shard(config: SimConfig, index: int, out_dir: str | os.PathLike[str]) -> Path:
    """Simulate and write shard ``index`` of the run described by ``config``."""
    from fastreco.sim.ecal import simulate_batch

    geometry = EcalBarrel()
    n = config.shard_events(index)
    batch = simulate_batch(config, n, np.random.SeedSequence([config.seed, index]), geometry)
    attrs = {
        "detector": geometry.name,
        "detector_params": geometry.to_dict(),
        "generator": {
            **config.to_dict(),
            "engine": "fastreco.sim.ecal",
            "shard_key": config.shard_key(),
        },
        "seed": config.seed,
        "shard_index": index,
    }
    return write_shard(shard_path(out_dir, index), batch, attrs)


def _is_complete(path: Path, key: str, n_events: int) -> bool:
    """True if ``path`` holds a complete shard (``n_events``) of the run whose shard key is
    ``key``; raises if it belongs to another run."""
    if not path.exists():
        return False
    try:
        shard = Shard(path)
    except InputError as exc:
        log.warning("redoing unreadable shard %s (%s)", path, exc)
        return False
    found = shard.attrs["generator"].get("shard_key")
    if found != key:
        raise InputError(
            "the output directory holds shards of a different run (other particles, energies, "
            "pileup, seed or detector settings); choose another output directory or remove them",
            source=path,
            field="shard_key",
            value=found,
        )
    return shard.n_events == n_events


def incomplete_shards(config: Any, out_dir: str | os.PathLike[str], key: str) -> list[int]:
    """Indices of the shards of ``config`` (``n_shards``, ``shard_events(i)``) not yet complete
    in ``out_dir``; ``key`` is the run's shard key."""
    return [
        i
        for i in range(config.n_shards)
        if not _is_complete(shard_path(out_dir, i), key, config.shard_events(i))
    ]


def missing_shards(config: SimConfig, out_dir: str | os.PathLike[str]) -> list[int]:
    """Indices of shards not yet complete in ``out_dir``."""
    return incomplete_shards(config, out_dir, config.shard_key())


def simulate(
    config: SimConfig,
    out_dir: str | os.PathLike[str],
    *,
    workers: int = 1,
    scheduler: str | None = None,
    progress: bool | Callable[[int, int], None] = False,
) -> Path:
    """Run a simulation into ``out_dir`` (a directory of HDF5 shards); resumes a killed run.

    Args:
        config: the run.
        out_dir: output directory; shards of a *different* run there are an error.
        workers: local processes (a dask LocalCluster when > 1).
        scheduler: address of a running dask scheduler (``tcp://host:8786``); overrides workers.
        progress: True for a progress bar, or a callback ``f(done, total)``.

    Returns:
        ``out_dir``.
    """
    return run_shards(
        config,
        out_dir,
        detector="ecal",
        missing=missing_shards,
        simulate_one=simulate_shard,
        workers=workers,
        scheduler=scheduler,
        progress=progress,
    )


def run_shards(
    config: Any,
    out_dir: str | os.PathLike[str],
    *,
    detector: str,
    missing: Callable[[Any, Path], list[int]],
    simulate_one: Callable[[Any, int, str | os.PathLike[str]], Path],
    workers: int = 1,
    scheduler: str | None = None,
    progress: bool | Callable[[int, int], None] = False,
) -> Path:
    """The sharded, resumable run of any detector's simulation (ECAL: :func:`simulate`, HGCAL:
    :func:`fastreco.sim.hgcal_engine.simulate_hgcal`).

    ``config`` has ``n_shards``, ``n_events``, ``shard_events(i)`` and ``to_dict()``;
    ``missing(config, out)`` lists the shards still to simulate and ``simulate_one(config, i,
    out)`` writes shard ``i`` (a module-level function, so that dask can ship it to workers).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("shard-*.h5.tmp"):
        stale.unlink()  # leftovers of a killed run: never complete, safe to drop
    todo = missing(config, out)
    run_file = out / RUN_FILE
    tmp = run_file.with_name(RUN_FILE + ".tmp")
    tmp.write_text(json.dumps({"detector": detector, "config": config.to_dict()}, indent=2))
    os.replace(tmp, run_file)
    total = config.n_shards
    done = total - len(todo)
    if todo:
        log.info("simulating %d of %d shards into %s", len(todo), total, out)
    else:
        log.info("all %d shards already complete in %s", total, out)

    bar = None
    if progress is True:
        from rich.progress import Progress

        bar = Progress(transient=False)
        bar.start()
        task = bar.add_task(
            f"simulate {detector} -> {out}",
            total=config.n_events,
            completed=sum(config.shard_events(i) for i in range(total) if i not in set(todo)),
        )

    def report(index: int) -> None:
        nonlocal done
        done += 1
        if bar is not None:
            bar.update(task, advance=config.shard_events(index))
        elif callable(progress):
            progress(done, total)

    try:
        if scheduler is None and workers <= 1:
            for index in todo:
                simulate_one(config, index, out)
                report(index)
        elif todo:
            _run_dask(simulate_one, config, out, todo, workers, scheduler, report)
    finally:
        if bar is not None:
            bar.stop()
    return out


def _run_dask(
    simulate_one: Callable[[Any, int, str | os.PathLike[str]], Path],
    config: Any,
    out: Path,
    todo: list[int],
    workers: int,
    scheduler: str | None,
    report: Callable[[int], None],
) -> None:
    from dask.distributed import Client, LocalCluster, as_completed

    # the scheduler logs every connection at INFO; the progress bar says what a user needs
    logging.getLogger("distributed").setLevel(logging.ERROR)
    if scheduler is not None:
        client = Client(scheduler)
        cluster = None
    else:
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)
    try:
        futures = {client.submit(simulate_one, config, i, str(out), pure=False): i for i in todo}
        for future in as_completed(futures):
            future.result()
            report(futures[future])
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
