"""ROOT interop: export a store to a TTree, import it back exactly, read a user's own ntuple."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot

from fastreco.data.root_io import METADATA_DIR, export_root, import_root
from fastreco.data.store import (
    HIT_FIELDS,
    TRUTH_COLUMNS,
    EventBatch,
    EventStore,
    shard_path,
    write_shard,
)
from fastreco.errors import InputError
from fastreco.geometry import EcalBarrel

GEO = EcalBarrel()
ATTRS = {
    "detector": "ecal",
    "detector_params": GEO.to_dict(),
    "generator": {"gun": "test", "energy": [1, 50]},
    "seed": 17,
}


def make_batch(n_events: int, seed: int = 0) -> EventBatch:
    """Random events with every hit field and truth column filled (incl. empty events, NaNs)."""
    rng = np.random.default_rng(seed)
    n_hits = rng.integers(0, 12, n_events)
    n_hits[1] = 0  # an event without hits
    n_truth = rng.integers(1, 4, n_events)
    offsets = np.concatenate([[0], np.cumsum(n_hits)]).astype(np.int64)
    truth_offsets = np.concatenate([[0], np.cumsum(n_truth)]).astype(np.int64)
    h, t = int(offsets[-1]), int(truth_offsets[-1])
    hits = {
        "cell": rng.integers(0, GEO.n_cells, h),
        "energy": rng.exponential(2.0, h),
        "time": rng.normal(0.0, 1.0, h),
        "deposit": rng.exponential(2.0, h),
        "truth_particle": np.minimum(rng.integers(-1, 3, h), np.repeat(n_truth, n_hits) - 1),
        "truth_fraction": rng.uniform(0, 1, h),
    }
    converted = rng.integers(0, 2, t)
    truth = {
        "pdg": rng.choice([22, 111, 211, -211, 11], t),
        "energy": rng.uniform(1, 100, t),
        "eta": rng.uniform(-1.4, 1.4, t),
        "phi": rng.uniform(-np.pi, np.pi, t),
        "vx": rng.normal(0, 0.01, t),
        "vy": rng.normal(0, 0.01, t),
        "vz": rng.normal(0, 5, t),
        "parent": np.where(np.arange(t) == np.repeat(truth_offsets[:-1], n_truth), -1, 0),
        "converted": converted,
        "conversion_radius": np.where(converted == 1, rng.uniform(0, 120, t), np.nan),
        "reached_calo": rng.integers(0, 2, t),
        "impact_eta": rng.uniform(-1.4, 1.4, t),
        "impact_phi": rng.uniform(-np.pi, np.pi, t),
        "deposited": rng.uniform(0, 100, t),
        "interaction_depth": np.full(t, np.nan),
    }
    return EventBatch(
        offsets=offsets,
        hits={k: np.asarray(v, dtype=HIT_FIELDS[k]) for k, v in hits.items()},
        truth_offsets=truth_offsets,
        truth={k: np.asarray(v, dtype=TRUTH_COLUMNS[k]) for k, v in truth.items()},
    )


@pytest.fixture
def store(tmp_path):
    """A two-shard store of 30 events; returns (directory, the whole batch)."""
    batch = make_batch(30)
    directory = tmp_path / "store"
    write_shard(shard_path(directory, 0), batch.slice(0, 18), {**ATTRS, "shard_index": 0})
    write_shard(shard_path(directory, 1), batch.slice(18, 30), {**ATTRS, "shard_index": 1})
    return directory, batch


def assert_same_events(a: EventBatch, b: EventBatch) -> None:
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_array_equal(a.truth_offsets, b.truth_offsets)
    for name, dtype in HIT_FIELDS.items():
        assert a.hits[name].dtype == b.hits[name].dtype == dtype
        np.testing.assert_array_equal(a.hits[name], b.hits[name], err_msg=name)
    for name, dtype in TRUTH_COLUMNS.items():
        assert a.truth[name].dtype == b.truth[name].dtype == dtype
        np.testing.assert_array_equal(a.truth[name], b.truth[name], err_msg=name)  # NaN == NaN


def test_export_writes_jagged_branches_and_metadata(tmp_path, store):
    directory, batch = store
    out = export_root(directory, tmp_path / "events.root")
    with uproot.open(out) as f:
        tree = f["events"]
        assert tree.num_entries == batch.n_events
        assert {"n_hits", "n_truth"} <= set(tree.keys())
        arrays = tree.arrays(library="ak")
        np.testing.assert_array_equal(arrays["n_hits"], np.diff(batch.offsets))
        np.testing.assert_array_equal(arrays["n_truth"], np.diff(batch.truth_offsets))
        for name in HIT_FIELDS:
            flat = ak.to_numpy(ak.flatten(arrays[f"hit_{name}"]))
            np.testing.assert_array_equal(flat, batch.hits[name], err_msg=name)
        for name in TRUTH_COLUMNS:
            flat = ak.to_numpy(ak.flatten(arrays[f"truth_{name}"]))
            np.testing.assert_array_equal(flat, batch.truth[name], err_msg=name)
        # event 3 sees exactly its own hits
        e3 = batch.event(3)
        np.testing.assert_array_equal(arrays["hit_energy"][3].to_numpy(), e3.hits["energy"])
        meta = {k: str(f[f"{METADATA_DIR}/{k}"]) for k in f[METADATA_DIR].keys(cycle=False)}
    assert meta["detector"] == "ecal"
    assert meta["seed"] == "17"
    assert meta["schema_version"] == "1"
    assert meta["n_events"] == "30"
    assert "gun" in meta["generator"]
    assert not list(tmp_path.glob("*.tmp"))


def test_round_trip_is_exact(tmp_path, store):
    directory, batch = store
    root = export_root(directory, tmp_path / "events.root")
    back = EventStore(import_root(root, tmp_path / "back", events_per_shard=7))
    assert len(back.shards) == 5  # 30 events, 7 per shard
    assert_same_events(back.read(), batch)
    assert back.attrs["detector"] == "ecal"
    assert back.attrs["seed"] == 17
    assert back.attrs["detector_params"] == GEO.to_dict()
    gen = back.attrs["generator"]
    assert gen["source"] == "root"
    assert gen["tree"] == "events"
    assert gen["original_generator"] == ATTRS["generator"]
    assert gen["defaulted"] == []


def test_round_trip_with_renamed_branches(tmp_path, store):
    directory, batch = store
    names = {"hit_energy": "E", "hit_cell": "id", "n_hits": "nHit", "truth_pdg": "pid"}
    root = export_root(directory, tmp_path / "r.root", tree="t", branch_map=names)
    with uproot.open(root) as f:
        assert {"E", "id", "nHit", "pid", "hit_time"} <= set(f["t"].keys())
    mapping = {f"hit_{k}": f"hit_{k}" for k in HIT_FIELDS} | {
        f"truth_{k}": f"truth_{k}" for k in TRUTH_COLUMNS
    }
    mapping |= {"hit_energy": "E", "hit_cell": "id", "truth_pdg": "pid"}
    back = EventStore(import_root(root, tmp_path / "back", tree="t", branch_map=mapping))
    assert_same_events(back.read(), batch)


def test_export_refuses_existing_file(tmp_path, store):
    directory, _ = store
    out = tmp_path / "events.root"
    out.write_bytes(b"precious")
    with pytest.raises(InputError, match="exists"):
        export_root(directory, out)
    assert out.read_bytes() == b"precious"
    export_root(directory, out, overwrite=True)
    with uproot.open(out) as f:
        assert f["events"].num_entries == 30


def write_user_ntuple(path, crystal_e=None):
    """A user's ntuple with its own branch names: crystals by id, one generated particle."""
    crystal_id = [[100, 101, 460], [], [5000, 5001]]
    crystal_e = crystal_e or [[1.5, 0.25, 0.125], [], [10.0, 2.0]]
    crystal_ieta = [[c // GEO.n_phi for c in ev] for ev in crystal_id]
    crystal_iphi = [[c % GEO.n_phi for c in ev] for ev in crystal_id]
    with uproot.recreate(path) as f:
        t = f.mktree(
            "Events",
            {
                "crystal": ak.zip({"id": crystal_id, "e": crystal_e}).type.content,
                "cr": ak.zip({"ieta": crystal_ieta, "iphi": crystal_iphi}).type.content,
                "gen_pdg": np.int32,
                "gen_E": np.float64,
            },
            counter_name=lambda c: "nCrystals" if c == "crystal" else "nCr",
            field_name=lambda outer, inner: f"{outer}_{inner}",
        )
        t.extend(
            {
                "crystal": ak.zip({"id": crystal_id, "e": crystal_e}),
                "cr": ak.zip({"ieta": crystal_ieta, "iphi": crystal_iphi}),
                "gen_pdg": np.array([22, 111, 11], np.int32),
                "gen_E": np.array([2.0, 0.0, 12.5]),
            }
        )
        f["other"] = np.histogram([1.0, 2.0])
    return path, crystal_id, crystal_e


USER_MAP = {
    "hit_cell": "crystal_id",
    "hit_energy": "crystal_e",
    "truth_pdg": "gen_pdg",
    "truth_energy": "gen_E",
}


def test_import_user_ntuple(tmp_path):
    path, ids, energies = write_user_ntuple(tmp_path / "user.root")
    out = import_root(path, tmp_path / "store", tree="Events", branch_map=USER_MAP, seed=5)
    store = EventStore(out)
    b = store.read()
    np.testing.assert_array_equal(b.offsets, [0, 3, 3, 5])
    np.testing.assert_array_equal(b.hits["cell"], [c for ev in ids for c in ev])
    np.testing.assert_array_equal(b.hits["energy"], np.float32([e for ev in energies for e in ev]))
    np.testing.assert_array_equal(b.hits["time"], 0)
    np.testing.assert_array_equal(b.hits["deposit"], 0)
    np.testing.assert_array_equal(b.hits["truth_particle"], -1)
    np.testing.assert_array_equal(b.truth_offsets, [0, 1, 2, 3])
    np.testing.assert_array_equal(b.truth["pdg"], [22, 111, 11])
    np.testing.assert_array_equal(b.truth["energy"], np.float32([2.0, 0.0, 12.5]))
    np.testing.assert_array_equal(b.truth["parent"], -1)
    assert np.isnan(b.truth["eta"]).all()
    assert store.attrs["seed"] == 5
    gen = store.attrs["generator"]
    assert gen["branch_map"] == USER_MAP
    assert "hit_deposit" in gen["defaulted"]
    assert "truth_energy" not in gen["defaulted"]


def test_import_from_ieta_iphi_and_yaml_map(tmp_path):
    path, ids, _ = write_user_ntuple(tmp_path / "user.root")
    mapping = tmp_path / "map.yaml"
    mapping.write_text(
        "# zero-based indices\nhit_ieta: cr_ieta\nhit_iphi: cr_iphi\nhit_energy: crystal_e\n"
        "hit_time: ~\ntruth_pdg: gen_pdg\n"
    )
    store = EventStore(import_root(path, tmp_path / "s", tree="Events", branch_map=mapping))
    np.testing.assert_array_equal(store.read().hits["cell"], [c for ev in ids for c in ev])


def test_example_branch_map_config_parses():
    from pathlib import Path

    from fastreco.data.root_io import load_branch_map

    config = Path(__file__).parents[1] / "configs" / "root_branch_map_example.yaml"
    mapping = load_branch_map(config)
    assert mapping["hit_energy"]
    assert "hit_cell" in mapping or {"hit_ieta", "hit_iphi"} <= set(mapping)


def test_missing_branch_names_field_and_branch(tmp_path):
    path, _, _ = write_user_ntuple(tmp_path / "user.root")
    bad = {**USER_MAP, "hit_time": "crystal_t"}
    with pytest.raises(InputError, match=r"crystal_t.*hit_time.*available branches.*crystal_e"):
        import_root(path, tmp_path / "s", tree="Events", branch_map=bad)
    assert not (tmp_path / "s").exists() or not list((tmp_path / "s").iterdir())


def test_missing_tree_lists_trees(tmp_path):
    path, _, _ = write_user_ntuple(tmp_path / "user.root")
    with pytest.raises(InputError, match=r"no tree named 'events'.*\['Events'\]"):
        import_root(path, tmp_path / "s", branch_map=USER_MAP)


def test_not_a_root_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        import_root(tmp_path / "nope.root", tmp_path / "s")
    junk = tmp_path / "junk.root"
    junk.write_bytes(b"this is not ROOT" * 100)
    with pytest.raises(InputError, match="not a readable ROOT file"):
        import_root(junk, tmp_path / "s")


def test_nan_energy_names_the_entry(tmp_path):
    path, _, _ = write_user_ntuple(
        tmp_path / "user.root", crystal_e=[[1.0, 1.0, 1.0], [], [1.0, float("nan")]]
    )
    with pytest.raises(InputError, match=r"hit_energy.*entry 2, hit 1") as info:
        import_root(path, tmp_path / "s", tree="Events", branch_map=USER_MAP)
    assert info.value.field == "hit_energy"
    assert not list((tmp_path / "s").glob("**/*.h5"))


def test_inconsistent_jagged_lengths(tmp_path):
    with uproot.recreate(tmp_path / "b.root") as f:
        f.mktree("t", {"a": "var * int32", "e": "var * float32"})
        f["t"].extend({"a": ak.Array([[1, 2], [3]]), "e": ak.Array([[1.0, 2.0], [3.0, 4.0]])})
    with pytest.raises(InputError, match=r"entry 1 has 1 hits.*'hit_energy'.*has 2") as info:
        import_root(
            tmp_path / "b.root",
            tmp_path / "s",
            tree="t",
            branch_map={"hit_cell": "a", "hit_energy": "e"},
        )
    assert info.value.field == "hit_cell"


def test_cell_outside_geometry(tmp_path):
    with uproot.recreate(tmp_path / "b.root") as f:
        f.mktree("t", {"a": "var * int32", "e": "var * float32"})
        f["t"].extend({"a": ak.Array([[1], [GEO.n_cells]]), "e": ak.Array([[1.0], [3.0]])})
    with pytest.raises(InputError, match=r"hit_cell.*entry 1.*range") as info:
        import_root(
            tmp_path / "b.root",
            tmp_path / "s",
            tree="t",
            branch_map={"hit_cell": "a", "hit_energy": "e"},
        )
    assert info.value.value == GEO.n_cells


def test_existing_shards_are_not_touched(tmp_path, store):
    directory, _ = store
    root = export_root(directory, tmp_path / "events.root")
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    with pytest.raises(InputError, match="refusing to overwrite"):
        import_root(root, directory)
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before
    # overwrite=True replaces them with the imported store; stale extra shards are removed
    import_root(root, directory, overwrite=True, events_per_shard=100)
    assert [p.name for p in directory.iterdir()] == ["shard-00000.h5"]
    assert EventStore(directory).n_events == 30


def test_failed_overwrite_keeps_old_shards(tmp_path, store):
    directory, _ = store
    path, _, _ = write_user_ntuple(
        tmp_path / "user.root", crystal_e=[[1.0, 1.0, 1.0], [], [1.0, float("inf")]]
    )
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    with pytest.raises(InputError, match="non-finite"):
        import_root(path, directory, tree="Events", branch_map=USER_MAP, overwrite=True)
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before


def test_unknown_field_in_branch_map(tmp_path):
    path, _, _ = write_user_ntuple(tmp_path / "user.root")
    with pytest.raises(InputError, match=r"hit_energie.*valid fields"):
        import_root(path, tmp_path / "s", tree="Events", branch_map={"hit_energie": "x"})


def test_import_rntuple_written_by_uproot(tmp_path):
    """uproot 5.7 writes ``file[name] = {...}`` as an RNTuple; it imports the same way."""
    with uproot.recreate(tmp_path / "rn.root") as f:
        f["ntuple"] = {"ids": ak.Array([[1, 2], [3]]), "e": ak.Array([[1.0, 2.0], [3.0]])}
    out = import_root(
        tmp_path / "rn.root",
        tmp_path / "s",
        tree="ntuple",
        branch_map={"hit_cell": "ids", "hit_energy": "e"},
    )
    b = EventStore(out).read()
    np.testing.assert_array_equal(b.hits["cell"], [1, 2, 3])
    np.testing.assert_array_equal(b.truth_offsets, [0, 0, 0])
