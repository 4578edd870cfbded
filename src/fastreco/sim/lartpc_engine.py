"""Sharded, seeded, resumable LArTPC simulation runs (in-process or on a dask cluster).

The contract of :mod:`fastreco.sim.engine`: shard ``i`` is simulated from
``SeedSequence([seed, i])`` alone, so the output does not depend on the number of workers; every
shard is written atomically, and a killed run started again with the same arguments keeps its
complete shards. Shards of another run in the same directory are an error.

The shards record ``detector = "lartpc"`` and the plane's parameters, so
:class:`~fastreco.data.store.EventStore` rebuilds the :class:`LArTpcPlane` through the detector
registry. Hit and truth conventions: :mod:`fastreco.sim.lartpc`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fastreco.data.store import shard_path, write_shard
from fastreco.sim.engine import incomplete_shards, run_shards
from fastreco.sim.lartpc import LArTpcSimConfig, simulate_lartpc_batch

ENGINE = "fastreco.sim.lartpc"


def simulate_lartpc_shard(
    config: LArTpcSimConfig, index: int, out_dir: str | os.PathLike[str]
) -> Path:
    """Simulate and write shard ``index`` of the run described by ``config``."""
    geometry = config.geometry()
    n = config.shard_events(index)
    batch = simulate_lartpc_batch(config, n, np.random.SeedSequence([config.seed, index]), geometry)
    attrs = {
        "detector": geometry.name,
        "detector_params": geometry.to_dict(),
        "generator": {
            **config.to_dict(),
            "engine": ENGINE,
            "shard_key": config.shard_key(),
            "energy_unit": "ADC counts above pedestal",
            "zs_threshold_adc": config.threshold(geometry),
        },
        "seed": config.seed,
        "shard_index": index,
    }
    return write_shard(shard_path(out_dir, index), batch, attrs)


def missing_lartpc_shards(config: LArTpcSimConfig, out_dir: str | os.PathLike[str]) -> list[int]:
    """Indices of the shards not yet complete in ``out_dir``."""
    return incomplete_shards(config, out_dir, config.shard_key())


def simulate_lartpc(
    config: LArTpcSimConfig,
    out_dir: str | os.PathLike[str],
    workers: int = 1,
    progress: bool | Callable[[int, int], None] = False,
    *,
    scheduler: str | None = None,
) -> Path:
    """Run a LArTPC simulation into ``out_dir`` (a directory of HDF5 shards); resumes.

    Args:
        config: the run (``n_events``, ``events_per_shard`` and ``seed`` set the shards).
        out_dir: output directory; shards of a *different* run there are an error.
        workers: local processes (a dask LocalCluster when > 1).
        progress: True for a progress bar, or a callback ``f(done, total)`` in shards.
        scheduler: address of a running dask scheduler; overrides ``workers``.

    Returns:
        ``out_dir``.
    """
    return run_shards(
        config,
        out_dir,
        detector="lartpc",
        missing=missing_lartpc_shards,
        simulate_one=simulate_lartpc_shard,
        workers=workers,
        scheduler=scheduler,
        progress=progress,
    )
