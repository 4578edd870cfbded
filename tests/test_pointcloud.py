"""HGCAL point clouds: features, truth objects, region of interest, kNN graphs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastreco.data.pointcloud import (
    FEATURES,
    collate,
    knn_indices,
    point_cloud_events,
)
from fastreco.errors import InputError
from fastreco.sim.hgcal import HgcalSimConfig, hit_energy_gev, simulate_hgcal_batch


@pytest.fixture(scope="module")
def batch():
    config = HgcalSimConfig(
        particles=("gamma", "pi+"),
        n_particles=2,
        energy="20:60",
        pileup=20,
        min_separation=3.0,
        max_separation=15.0,
    )
    return simulate_hgcal_batch(config, 3, 11)


def test_features_truth_and_calibration(batch):
    events = point_cloud_events(batch)
    assert [len(e) for e in events] == np.diff(batch.offsets).tolist()
    np.testing.assert_allclose(
        np.concatenate([e.energy for e in events]), hit_energy_gev(batch), rtol=1e-6
    )
    for i, ev in enumerate(events):
        assert ev.features.shape == (len(ev), len(FEATURES))
        assert np.isfinite(ev.features).all()
        parent = batch.truth["parent"][batch.truth_offsets[i] : batch.truth_offsets[i + 1]]
        owned = ev.object_id > 0
        # objects are gun particles (parent -1) holding at least half of the hit
        assert (parent[ev.object_id[owned] - 1] == -1).all()
        assert (ev.truth_fraction[owned] >= 0.5).all()
        # pileup hits are noise for the condensation loss
        pileup = (ev.truth_row >= 0) & (parent[np.maximum(ev.truth_row, 0)] == -2)
        assert (ev.object_id[pileup] == 0).all()
        assert len(np.unique(ev.object_id[owned])) == 2


def test_region_of_interest_keeps_the_particles_and_drops_most_pileup(batch):
    full = point_cloud_events(batch)
    roi = point_cloud_events(batch, roi_radius=35.0)
    for a, b in zip(full, roi, strict=True):
        gun_a = a.energy[a.object_id > 0].sum()
        gun_b = b.energy[b.object_id > 0].sum()
        assert gun_b >= 0.97 * gun_a
        assert len(b) < 0.6 * len(a)


def test_non_finite_energy_is_refused_with_its_field(batch):
    bad = batch.slice(0, 1)
    bad.hits["energy"] = bad.hits["energy"].copy()
    bad.hits["energy"][3] = np.nan
    with pytest.raises(InputError, match="hits/energy"):
        point_cloud_events(bad, source="bad.h5")


def test_collate_makes_object_ids_unique_across_events(batch):
    events = point_cloud_events(batch)
    b = collate(events)
    assert b["features"].shape[0] == b["batch"].shape[0] == sum(len(e) for e in events)
    ids_per_event = [set(b["object_id"][b["batch"] == i].unique().tolist()) - {0} for i in range(3)]
    assert not (ids_per_event[0] & ids_per_event[1])
    assert (b["object_energy"][b["object_id"] == 0] == 0).all()


@pytest.mark.parametrize("dims", [3, 16])  # k-d tree and dense (cdist + topk) paths
def test_knn_is_exact_and_stays_within_each_event(dims):
    g = torch.Generator().manual_seed(0)
    sizes = [40, 3, 25]
    points = torch.randn(sum(sizes), dims, generator=g)
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor(sizes))
    k = 5
    idx = knn_indices(points, batch, k)
    assert idx.shape == (sum(sizes), k)
    assert (batch[idx] == batch[:, None]).all()
    start = 0
    for n in sizes:
        ev = points[start : start + n]
        d = torch.cdist(ev, ev)
        d.fill_diagonal_(float("inf"))
        m = min(k, n - 1)
        expected = d.topk(m, largest=False).indices + start
        got = idx[start : start + n, :m]
        assert torch.equal(got.sort(1).values, expected.sort(1).values)
        if m < k:  # too few points: padded with the point itself
            own = torch.arange(start, start + n)[:, None]
            assert (idx[start : start + n, m:] == own).all()
        start += n
