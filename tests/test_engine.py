"""Sharded runs: reproducible from (seed, shard), independent of workers, resumable."""

from __future__ import annotations

import numpy as np
import pytest

from fastreco.data.store import EventStore
from fastreco.errors import InputError
from fastreco.sim.config import SimConfig
from fastreco.sim.engine import simulate

CONFIG = SimConfig(
    particles=("gamma", "pi0", "e-"), energy="2:20", n_events=90, events_per_shard=30, seed=5
)


def _same(a, b):
    np.testing.assert_array_equal(a.offsets, b.offsets)
    for name in a.hits:
        np.testing.assert_array_equal(a.hits[name], b.hits[name])
    for name in a.truth:
        np.testing.assert_array_equal(a.truth[name], b.truth[name])


def test_resume_keeps_complete_shards_and_gives_identical_events(tmp_path):
    out = simulate(CONFIG, tmp_path / "a")
    reference = EventStore(out).read()
    kept = out / "shard-00000.h5"
    mtime = kept.stat().st_mtime_ns
    # a killed run: one shard missing, one half-written temporary file
    (out / "shard-00001.h5").unlink()
    (out / "shard-00002.h5.tmp").write_bytes(b"partial")
    seen = []
    simulate(CONFIG, out, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(3, 3)]  # only the missing shard was simulated
    assert kept.stat().st_mtime_ns == mtime
    assert not (out / "shard-00002.h5.tmp").exists()
    _same(EventStore(out).read(), reference)


def test_different_run_in_same_directory_is_refused(tmp_path):
    out = simulate(CONFIG, tmp_path / "a")
    before = (out / "shard-00000.h5").read_bytes()
    other = SimConfig(**{**CONFIG.to_dict(), "seed": 6})
    with pytest.raises(InputError, match="different run"):
        simulate(other, out)
    assert (out / "shard-00000.h5").read_bytes() == before


def test_output_is_independent_of_worker_count(tmp_path):
    serial = EventStore(simulate(CONFIG, tmp_path / "serial")).read()
    parallel = EventStore(simulate(CONFIG, tmp_path / "dask", workers=2)).read()
    _same(serial, parallel)
