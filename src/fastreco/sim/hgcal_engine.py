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

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fastreco.data.store import Shard, shard_path, write_shard
from fastreco.errors import InputError
from fastreco.geometry.hgcal import HgcalEndcap
from fastreco.sim.engine import run_shards
from fastreco.sim.hgcal import HgcalSimConfig, simulate_hgcal_batch

log = logging.getLogger(__name__)

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
    return run_shards(
        config,
        out_dir,
        detector="hgcal",
        missing=missing_hgcal_shards,
        simulate_one=simulate_hgcal_shard,
        workers=workers,
        scheduler=scheduler,
        progress=progress,
    )
