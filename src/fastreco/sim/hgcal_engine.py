"""Sharded, seeded, resumable HGCAL simulation runs (in-process or on a dask cluster).

The same contract as :mod:`fastreco.sim.engine` for the ECAL: shard ``i`` is simulated from
``SeedSequence([seed, i])`` alone, so the output does not depend on the number of workers; every
shard is written atomically, and a killed run started again with the same arguments keeps its
complete shards and simulates only the missing ones. Shards of another run in the same directory
are an error.

The shards record ``detector = "hgcal"`` and the geometry's parameters, so
:class:`~fastreco.data.store.EventStore` rebuilds the :class:`HgcalEndcap` through the detector
registry (importing this module, or :mod:`fastreco.geometry.hgcal`, registers it).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fastreco.data.store import Shard, shard_path, write_shard
from fastreco.errors import InputError
from fastreco.geometry.hgcal import HgcalEndcap
from fastreco.sim.hgcal import HgcalSimConfig, simulate_hgcal_batch

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
ENGINE = "fastreco.sim.hgcal"


def simulate_hgcal_shard(
    config: HgcalSimConfig, index: int, out_dir: str | os.PathLike[str]
) -> Path:
    """Simulate and write shard ``index`` of the run described by ``config``."""
    geometry = HgcalEndcap()
    n = config.shard_events(index)
    batch = simulate_hgcal_batch(config, n, np.random.SeedSequence([config.seed, index]), geometry)
    attrs = {
        "detector": geometry.name,
        "detector_params": geometry.to_dict(),
        "generator": {
            **config.to_dict(),
            "engine": ENGINE,
            "shard_key": config.shard_key(geometry),
            "energy_unit": "MIP",
        },
        "seed": config.seed,
        "shard_index": index,
    }
    return write_shard(shard_path(out_dir, index), batch, attrs)


def _is_complete(path: Path, config: HgcalSimConfig, index: int, key: str) -> bool:
    """True if ``path`` holds shard ``index`` of this run; raises if it belongs to another."""
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
    return shard.n_events == config.shard_events(index)


def missing_hgcal_shards(config: HgcalSimConfig, out_dir: str | os.PathLike[str]) -> list[int]:
    """Indices of the shards not yet complete in ``out_dir``."""
    key = config.shard_key(HgcalEndcap())
    return [
        i
        for i in range(config.n_shards)
        if not _is_complete(shard_path(out_dir, i), config, i, key)
    ]


def simulate_hgcal(
    config: HgcalSimConfig,
    out_dir: str | os.PathLike[str],
    workers: int = 1,
    progress: bool | Callable[[int, int], None] = False,
    *,
    scheduler: str | None = None,
) -> Path:
    """Run an HGCAL simulation into ``out_dir`` (a directory of HDF5 shards); resumes.

    Args:
        config: the run (``n_events``, ``events_per_shard`` and ``seed`` set the shards).
        out_dir: output directory; shards of a *different* run there are an error.
        workers: local processes (a dask LocalCluster when > 1).
        progress: True for a progress bar, or a callback ``f(done, total)`` in shards.
        scheduler: address of a running dask scheduler; overrides ``workers``.

    Returns:
        ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("shard-*.h5.tmp"):
        stale.unlink()  # leftovers of a killed run: never complete, safe to drop
    todo = missing_hgcal_shards(config, out)
    run_file = out / RUN_FILE
    tmp = run_file.with_name(RUN_FILE + ".tmp")
    tmp.write_text(json.dumps({"detector": "hgcal", "config": config.to_dict()}, indent=2))
    os.replace(tmp, run_file)
    total = config.n_shards
    done = total - len(todo)
    if todo:
        log.info("simulating %d of %d HGCAL shards into %s", len(todo), total, out)
    else:
        log.info("all %d HGCAL shards already complete in %s", total, out)

    bar = None
    if progress is True:
        from rich.progress import Progress

        bar = Progress(transient=False)
        bar.start()
        task = bar.add_task(
            f"simulate hgcal -> {out}",
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
                simulate_hgcal_shard(config, index, out)
                report(index)
        elif todo:
            _run_dask(config, out, todo, workers, scheduler, report)
    finally:
        if bar is not None:
            bar.stop()
    return out


def _run_dask(
    config: HgcalSimConfig,
    out: Path,
    todo: list[int],
    workers: int,
    scheduler: str | None,
    report: Callable[[int], None],
) -> None:
    from dask.distributed import Client, LocalCluster, as_completed

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
        futures = {
            client.submit(simulate_hgcal_shard, config, i, str(out), pure=False): i for i in todo
        }
        for future in as_completed(futures):
            future.result()
            report(futures[future])
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
