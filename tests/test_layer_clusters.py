"""Layer clusters as graph-network points: features and truth of hand-made events, the fixed
neighbour graph against a brute-force search, its exportable twin, the layer-cluster GravNet,
and that CLUE's 2D layer clusters of simulated showers are pure enough to cluster."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fastreco.data.clustering_inputs import INPUTS
from fastreco.data.layer_clusters import (
    LC_FEATURES,
    N_LC_FEATURES,
    NetworkPoints,
    layer_cluster_event,
    layer_cluster_graph,
    layer_cluster_graph_exportable,
)
from fastreco.data.pointcloud import N_FEATURES, PointCloudEvent, point_cloud_events
from fastreco.errors import InputError
from fastreco.evaluate.clustering import match_event, network_labels, summarize
from fastreco.models import build_model
from fastreco.sim.hgcal import HgcalSimConfig, simulate_hgcal_batch

Z_FRONT = 320.0


def _hand_made() -> PointCloudEvent:
    """Layer 1: a blob of particle row 0 at x = 10 cm and one of row 1 at x = 20 cm; layer 2: a
    blob at x = 10 cm, 70 % row 0 and 30 % pileup; one isolated soft hit (a CLUE outlier)."""
    xs = [10.0, 10.5, 9.5, 20.0, 20.5, 19.5, 10.0, 10.5, 9.5, 40.0]
    layers = [1, 1, 1, 1, 1, 1, 2, 2, 2, 1]
    energy = [1.0, 0.5, 0.5, 2.0, 1.5, 0.5, 0.7, 0.15, 0.15, 0.005]
    rows = [0, 0, 0, 1, 1, 1, 0, -1, -1, -1]
    z = np.array([330.0 if la == 1 else 331.0 for la in layers], np.float32)
    n = len(xs)
    pos = np.stack([np.array(xs, np.float32), np.zeros(n, np.float32), z], axis=1)
    features = np.zeros((n, N_FEATURES), np.float32)
    features[:, 2] = (z - Z_FRONT) / 10.0
    features[:, 4] = 0.1
    row = np.array(rows, np.int64)
    return PointCloudEvent(
        features=features,
        energy=np.array(energy, np.float32),
        position=pos,
        layer=np.array(layers, np.int64),
        object_id=np.where(row >= 0, row + 1, 0),
        truth_fraction=np.where(row >= 0, 1.0, 0.0).astype(np.float32),
        truth_row=row,
        object_energy=np.array([0.0, 10.0, 20.0], np.float32),
        object_class=np.array([0, 0, 2], np.int64),
    )


def test_layer_clusters_of_a_hand_made_event():
    points = layer_cluster_event(_hand_made())
    lc = points.points
    assert len(lc) == 3  # two blobs in layer 1, one in layer 2; the soft hit is an outlier
    assert points.hit_point[-1] == -1
    assert len(set(points.hit_point[:3])) == 1
    assert len(set(points.hit_point[3:6])) == 1
    by_x = {round(float(p[0])): i for i, p in enumerate(lc.position) if lc.layer[i] == 1}
    first, second = by_x[10], by_x[20]
    third = int(np.flatnonzero(lc.layer == 2)[0])
    np.testing.assert_allclose(lc.energy[[first, second, third]], [2.0, 4.0, 1.0], rtol=1e-6)
    # barycentres are energy-weighted: the 1.5 GeV hit at 20.5 cm pulls the second blob's centre
    assert lc.position[second, 0] == pytest.approx((2 * 20 + 1.5 * 20.5 + 0.5 * 19.5) / 4)
    # truth: the gun particle holding >= half of the energy; 70 % of the third blob is row 0
    assert list(lc.object_id[[first, second, third]]) == [1, 2, 1]
    assert lc.truth_fraction[third] == pytest.approx(0.7, rel=1e-5)
    f = dict(zip(LC_FEATURES, lc.features[first], strict=True))
    assert f["x_front"] == pytest.approx(10.0 * Z_FRONT / 330.0 / 10.0, rel=1e-5)
    assert f["depth"] == pytest.approx(1.0)
    assert f["layer"] == pytest.approx(0.1)
    assert f["log_hits"] == pytest.approx(np.log(3))
    assert f["time"] == pytest.approx(0.1)
    rms = np.sqrt(np.average([0.0, 0.25, 0.25], weights=[1.0, 0.5, 0.5]))
    assert f["width"] == pytest.approx(rms, rel=1e-4)


def test_point_labels_map_back_to_hits():
    points = layer_cluster_event(_hand_made())
    labels = points.hit_labels(np.arange(len(points.points)))
    np.testing.assert_array_equal(labels, points.hit_point)
    with pytest.raises(InputError, match="point_labels"):
        points.hit_labels(np.zeros(len(points.points) + 1))
    hits = INPUTS.resolve("hits").prepare(_hand_made(), 0.5)
    assert isinstance(hits, NetworkPoints)
    np.testing.assert_array_equal(hits.hit_labels(np.arange(10)), np.arange(10))


def test_empty_event_has_no_layer_clusters():
    ev = _hand_made()
    empty = PointCloudEvent(
        **{
            k: (v[:0] if k not in ("object_energy", "object_class") else v)
            for k, v in vars(ev).items()
        }
    )
    points = layer_cluster_event(empty)
    assert len(points.points) == 0
    assert points.points.features.shape == (0, N_LC_FEATURES)


def _random_points(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    f = np.zeros((n, N_LC_FEATURES), np.float32)
    f[:, 0] = rng.uniform(0, 3, n)
    f[:, 1] = rng.uniform(0, 3, n)
    f[:, LC_FEATURES.index("layer")] = rng.integers(1, 12, n) / 10.0
    batch = np.sort(rng.integers(0, 2, n))
    return torch.from_numpy(f), torch.from_numpy(batch)


def test_graph_is_the_brute_force_knn_within_the_window():
    f, batch = _random_points(400, 1)
    k, window, radius, scale = 6, 2, 0.6, 0.1
    got = layer_cluster_graph(f, batch, k, window=window, radius=radius, layer_scale=scale)
    x, y = f[:, 0].numpy().astype(np.float64), f[:, 1].numpy().astype(np.float64)
    layer = np.rint(f[:, 5].numpy() * 10)
    b = batch.numpy()
    for i in range(len(f)):
        t2 = (x - x[i]) ** 2 + (y - y[i]) ** 2
        dl = layer - layer[i]
        ok = (np.abs(dl) <= window) & (t2 < radius**2) & (b == b[i])
        ok[i] = False
        d2 = np.where(ok, t2 + (scale * dl) ** 2, np.inf)
        expected = np.sort(d2)[:k]
        mine = got[i].numpy()
        found = np.where(mine == i, np.inf, d2[mine])
        np.testing.assert_allclose(np.sort(found), expected)  # same distances, self-padded
        assert np.all(b[mine] == b[i])  # never across events


def test_exportable_graph_finds_the_same_neighbours():
    f, batch = _random_points(300, 2)
    a = layer_cluster_graph(f, batch, 5, radius=0.5)
    b = layer_cluster_graph_exportable(f, batch, 5, radius=0.5)
    assert [set(r) for r in a.tolist()] == [set(r) for r in b.tolist()]


@pytest.fixture(scope="module")
def simulated():
    config = HgcalSimConfig(
        particles=("gamma", "pi+"), n_particles=2, energy="20:60", pileup=20.0, min_separation=6.0
    )
    return point_cloud_events(simulate_hgcal_batch(config, 4, 11), roi_radius=30.0)


def test_layer_clusters_are_pure_enough_to_rebuild_every_shower(simulated):
    """Physics of the input: labelling each layer cluster with its truth object (an oracle
    linking step) finds every particle, so the 2D stage loses (almost) nothing a network
    must recover; and the layer clusters are 2-4x fewer than the hits."""
    parts, fakes = [], []
    for ev in simulated:
        points = layer_cluster_event(ev)
        assert 1.5 < len(ev) / len(points.points) < 5
        oracle = points.hit_labels(points.points.object_id - 1)
        df, n_fake = match_event(ev, oracle)
        parts.append(df)
        fakes.append(n_fake)
    s = summarize(pd.concat(parts), fakes)
    assert s["efficiency"] >= 0.95
    assert s["merge_rate"] == 0.0


@pytest.mark.parametrize("name", ["layer_gravnet", "layer_edgeconv"])
def test_layer_cluster_models_run_on_layer_clusters_and_refuse_hits(simulated, name):
    torch.manual_seed(0)
    model = build_model(name, (N_LC_FEATURES,), 4, hidden=8, blocks=2, k=4).eval()
    ev = simulated[0]
    points = layer_cluster_event(ev)
    x = torch.from_numpy(points.points.features)
    with torch.no_grad():
        out = model(x, torch.zeros(len(x), dtype=torch.long))
    assert out["beta"].shape == (len(x),)
    assert out["coords"].shape == (len(x), 3)
    labels, energy = network_labels(model, ev, t_beta=0.0, t_d=0.5, network_input="layer_clusters")
    assert labels.shape == (len(ev),)
    assert np.all(labels[points.hit_point < 0] == -1)  # CLUE's outliers stay unclustered
    assert len(energy) == labels.max() + 1
    with pytest.raises(InputError, match="layer-cluster features"):
        build_model(name, (N_FEATURES,), 4)


def test_unknown_network_input_names_the_field():
    from fastreco.train.clustering import ClusteringTaskConfig

    with pytest.raises(InputError, match=r"data\.input"):
        ClusteringTaskConfig.from_dict({"name": "x", "data": {"input": "pixels"}})


@pytest.mark.parametrize("name", ["layer_gravnet", "layer_edgeconv"])
def test_layer_cluster_models_export_to_onnx(tmp_path, name):
    """The graph search becomes tensor operations while exporting; ONNX Runtime must agree with
    PyTorch (whose graph comes from the compiled kernel) at another number of points."""
    from fastreco.deploy.onnx import export_graph_module

    torch.manual_seed(0)
    model = build_model(name, (N_LC_FEATURES,), 4, hidden=8, blocks=2, k=4).eval()
    path = export_graph_module(model, N_LC_FEATURES, tmp_path / f"{name}.onnx")  # verifies
    assert path.stat().st_size > 0
