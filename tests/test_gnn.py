"""Graph networks on point clouds: shapes, permutation equivariance, independence of events,
and that object condensation trains them to separate two showers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastreco.data.pointcloud import N_FEATURES, collate, point_cloud_events
from fastreco.models import build_model
from fastreco.models.condensation import condensation_loss, condense
from fastreco.sim.hgcal import HgcalSimConfig, simulate_hgcal_batch

GRAPH_MODELS = ("gravnet", "edgeconv")


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, (N_FEATURES,), 4, hidden=16, blocks=2, k=6).eval()


@pytest.fixture(scope="module")
def events():
    config = HgcalSimConfig(
        particles=("gamma",), n_particles=2, energy="20:40", min_separation=8.0, max_separation=12.0
    )
    return point_cloud_events(simulate_hgcal_batch(config, 2, 5), roi_radius=30.0)


@pytest.mark.parametrize("name", GRAPH_MODELS)
def test_outputs_and_permutation_equivariance(name, events):
    model = _model(name)
    x = torch.from_numpy(events[0].features)
    batch = torch.zeros(len(x), dtype=torch.long)
    with torch.no_grad():
        out = model(x, batch)
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
        out_p = model(x[perm], batch)
    assert out["beta"].shape == (len(x),)
    assert ((out["beta"] > 0) & (out["beta"] < 1)).all()
    assert out["coords"].shape == (len(x), 3)
    assert out["logits"].shape == (len(x), 4)
    for key in out:  # float sums in another order: equal to ~1e-5 of O(1) outputs
        torch.testing.assert_close(out_p[key], out[key][perm], rtol=1e-4, atol=2e-4)


@pytest.mark.parametrize("name", GRAPH_MODELS)
def test_events_of_a_batch_do_not_see_each_other(name, events):
    model = _model(name)
    b = collate(events)
    with torch.no_grad():
        together = model(b["features"], b["batch"])["beta"]
        alone = [
            model(torch.from_numpy(e.features), torch.zeros(len(e), dtype=torch.long))["beta"]
            for e in events
        ]
    torch.testing.assert_close(together, torch.cat(alone), rtol=1e-4, atol=1e-5)


def test_condensation_training_separates_two_showers(events):
    """90 steps on one event: the loss falls by 30 % and condensation finds the two photons."""
    torch.manual_seed(0)
    model = build_model("gravnet", (N_FEATURES,), 4, hidden=32, blocks=2, k=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    b = collate(events[:1])
    first = None
    for _ in range(90):
        out = model(b["features"], b["batch"])
        terms = condensation_loss(out["beta"], out["coords"], b["object_id"], b["batch"])
        loss = sum(terms.values())
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.7 * first
    with torch.no_grad():
        out = model(b["features"], b["batch"])
    labels = condense(out["beta"].numpy(), out["coords"].numpy(), t_beta=0.3, t_d=0.5)
    ev = events[0]
    for obj in np.unique(ev.object_id[ev.object_id > 0]):
        mine = ev.object_id == obj
        # the cluster holding most of the photon's hit energy holds at least 80 % of it
        held = np.bincount(labels[mine & (labels >= 0)], weights=ev.energy[mine & (labels >= 0)])
        assert held.max() >= 0.8 * ev.energy[mine].sum()


@pytest.mark.parametrize("name", ["gravnet", "layer_gravnet"])
def test_compiled_inference_aggregation_equals_the_tensor_path(name, events, monkeypatch):
    """GravNet's CPU inference aggregates neighbours in one compiled loop; with gradients on,
    the same layer runs on tensors. Both must give the same outputs."""
    import fastreco.models.gravnet as gravnet
    from fastreco.data.layer_clusters import N_LC_FEATURES, layer_cluster_event

    calls = []
    compiled = gravnet._aggregate
    monkeypatch.setattr(gravnet, "_aggregate", lambda *a: calls.append(1) or compiled(*a))

    torch.manual_seed(0)
    if name == "layer_gravnet":
        x = torch.from_numpy(layer_cluster_event(events[0]).points.features)
        model = build_model(name, (N_LC_FEATURES,), 4, hidden=16, blocks=2, k=6).eval()
    else:
        x = torch.from_numpy(events[0].features)
        model = _model(name)
    batch = torch.zeros(len(x), dtype=torch.long)
    with torch.no_grad():
        fused = model(x, batch)
    assert len(calls) == 2  # one per block
    with torch.enable_grad():
        reference = model(x, batch)
    assert len(calls) == 2
    for key in fused:
        torch.testing.assert_close(fused[key], reference[key].detach(), rtol=1e-5, atol=1e-5)
