"""Event store: round trips, range reads across shards, and clear errors on bad files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from fastreco.data.store import EventBatch, EventStore, shard_path, write_shard
from fastreco.errors import InputError, SchemaError
from fastreco.geometry import EcalBarrel
from fastreco.sim.config import SimConfig
from fastreco.sim.ecal import simulate_batch

GEO = EcalBarrel()


def _attrs(index: int = 0) -> dict:
    return {
        "detector": "ecal",
        "detector_params": GEO.to_dict(),
        "generator": {"test": True},
        "seed": 3,
        "shard_index": index,
    }


@pytest.fixture(scope="module")
def batch() -> EventBatch:
    return simulate_batch(SimConfig(n_events=60), 60, 4)


def test_round_trip_and_ranges(tmp_path, batch):
    write_shard(shard_path(tmp_path, 0), batch.slice(0, 25), _attrs(0))
    write_shard(shard_path(tmp_path, 1), batch.slice(25, 60), _attrs(1))
    store = EventStore(tmp_path)
    assert store.n_events == 60
    assert isinstance(store.detector, EcalBarrel)
    whole = store.read()
    for name, values in batch.hits.items():
        np.testing.assert_array_equal(whole.hits[name], values.astype(whole.hits[name].dtype))
    np.testing.assert_array_equal(whole.offsets, batch.offsets)
    # a range that crosses the shard boundary reads the same events
    part = store.read(20, 30)
    expected = batch.slice(20, 30)
    np.testing.assert_array_equal(part.offsets, expected.offsets)
    np.testing.assert_allclose(part.hits["energy"], expected.hits["energy"], rtol=1e-6)
    np.testing.assert_array_equal(part.truth["pdg"], expected.truth["pdg"])
    assert sum(b.n_events for b in store.iter_batches(7)) == 60
    truth = store.truth_table()
    assert truth["event"].max() == 59
    assert len(truth) == len(batch.truth["pdg"])


def test_unknown_schema_version_is_refused(tmp_path, batch):
    path = write_shard(tmp_path / "s.h5", batch, _attrs())
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(SchemaError, match=r"s\.h5.*schema_version.*99"):
        EventStore(path)


def test_truncated_file_names_the_file(tmp_path, batch):
    path = write_shard(tmp_path / "s.h5", batch, _attrs())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match=r"s\.h5.*corrupt or truncated"):
        EventStore(path)


def test_nan_energy_names_field_and_event(tmp_path, batch):
    bad = batch.slice(0, 10)
    bad.hits["energy"] = bad.hits["energy"].copy()
    bad.hits["energy"][bad.offsets[4] + 1] = np.nan
    path = write_shard(tmp_path / "s.h5", bad, _attrs())
    with pytest.raises(InputError, match=r"hits/energy.*nan.*event 4"):
        EventStore(path).read()


def test_missing_dataset_and_missing_path(tmp_path, batch):
    path = write_shard(tmp_path / "s.h5", batch, _attrs())
    with h5py.File(path, "a") as f:
        del f["hits/time"]
    with pytest.raises(InputError, match=r"hits/time.*missing"):
        EventStore(path)
    with pytest.raises(InputError, match="no such file"):
        EventStore(tmp_path / "nope")
