"""Matching reco clusters to truth particles, and CLUE vs a network through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fastreco.cli import app
from fastreco.data.pointcloud import PointCloudEvent
from fastreco.evaluate.clustering import MatchingConfig, match_event, summarize


def _event(owner: list[int], energy: list[float]) -> PointCloudEvent:
    """Hits owned by truth rows ``owner`` (-1: noise/pileup); rows 0 and 1 are gun particles of
    true energy 10 and 20 GeV."""
    n = len(owner)
    row = np.array(owner, np.int64)
    return PointCloudEvent(
        features=np.zeros((n, 8), np.float32),
        energy=np.array(energy, np.float32),
        position=np.zeros((n, 3), np.float32),
        layer=np.zeros(n, np.int64),
        object_id=np.where(row >= 0, row + 1, 0),
        truth_fraction=np.where(row >= 0, 1.0, 0.0).astype(np.float32),
        truth_row=row,
        object_energy=np.array([0.0, 10.0, 20.0], np.float32),
        object_class=np.zeros(3, np.int64),
    )


OWNER = [0, 0, 0, 1, 1, 1, -1, -1]
ENERGY = [4.0, 3.0, 3.0, 10.0, 6.0, 4.0, 3.0, 0.5]
LOOSE = MatchingConfig(min_energy=1.0)


def test_perfect_clustering_is_efficient():
    df, fakes = match_event(_event(OWNER, ENERGY), np.array([0, 0, 0, 1, 1, 1, 2, -1]), LOOSE)
    assert df["efficient"].all()
    assert not df["merged"].any()
    assert not df["split"].any()
    np.testing.assert_allclose(df["cluster_energy"], [10.0, 20.0])
    assert fakes == 1  # the 3 GeV pileup cluster


def test_one_cluster_for_both_is_a_merge():
    df, _ = match_event(_event(OWNER, ENERGY), np.array([0] * 6 + [-1, -1]), LOOSE)
    # particle 1 (20 of 30 GeV) still makes half of the cluster; particle 0 does not
    assert df["efficient"].tolist() == [False, True]
    assert df["merged"].all()


def test_a_shower_in_pieces_is_split():
    energy = [4.0, 3.0, 3.0, 8.0, 7.0, 5.0, 3.0, 0.5]  # particle 1: 40 %, 35 %, 25 %
    df, _ = match_event(_event(OWNER, energy), np.array([0, 0, 0, 1, 2, 3, -1, -1]), LOOSE)
    assert df["split"].tolist() == [False, True]
    assert df["efficient"].tolist() == [True, False]
    s = summarize(df, [0])
    assert s["efficiency"] == 0.5
    assert s["split_rate"] == 0.5
    assert s["merge_rate"] == 0.0


def test_pileup_diluted_cluster_is_not_efficient():
    energy = [*ENERGY[:6], 30.0, 0.5]
    df, fakes = match_event(_event(OWNER, energy), np.array([0, 0, 0, 1, 1, 1, 0, -1]), LOOSE)
    assert df["efficient"].tolist() == [False, True]
    assert fakes == 1  # the 40 GeV cluster is 75 % pileup


def test_particles_below_threshold_are_not_counted():
    df, _ = match_event(_event(OWNER, ENERGY), np.arange(8), MatchingConfig(min_energy=15.0))
    assert df["row"].tolist() == [1]


@pytest.mark.filterwarnings("ignore::UserWarning:lightning.*")
@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")
@pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning")
@pytest.mark.parametrize(
    ("model", "network_input"), [("gravnet", "hits"), ("layer_gravnet", "layer_clusters")]
)
def test_train_and_evaluate_a_clustering_task(tmp_path, model, network_input):
    """The whole path on a tiny task: simulate, train the network on hits or on layer clusters,
    evaluate against CLUE, export to ONNX."""
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"""
name: tiny
kind: clustering
data: {{particles: [gamma], n_particles: 2, energy: "20:40", min_separation: 8.0,
        max_separation: 12.0, pileup: 0, events: 8, seed: 5, dir: {tmp_path / "data"},
        roi_radius: 30.0, input: {network_input}}}
model: {{name: {model}, params: {{hidden: 16, blocks: 2, k: 8}}}}
training: {{epochs: 1, batch_size: 2, num_workers: 0}}
"""
    )
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(config), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "tiny"
    assert (run / "checkpoints" / "best.ckpt").exists()
    assert json.loads((run / "run.json").read_text())["kind"] == "clustering"
    result = runner.invoke(app, ["evaluate", str(run), "--events", "2"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    rows = {(r["algorithm"], r["pileup"]): r for r in metrics["pileup_scan"]}
    assert set(rows) == {(a, p) for a in ("CLUE", "GNN") for p in (0.0, 50.0, 140.0, 200.0)}
    # CLUE separates two photons 8-12 cm apart without pileup
    assert rows["CLUE", 0.0]["efficiency"] == pytest.approx(1.0)
    assert rows["GNN", 200.0]["hits_per_event"] > rows["GNN", 0.0]["hits_per_event"]
    assert (run / "report.html").stat().st_size > 10_000
    # the trained network exports to ONNX with its kNN inside the graph
    result = runner.invoke(app, ["export", str(run), "--onnx"])
    assert result.exit_code == 0, result.output
    meta = json.loads((run / "model.preprocessing.json").read_text())
    assert meta["kind"] == "clustering"
    assert meta["inputs"]["x"]["shape"][1] == len(meta["inputs"]["x"]["features"])
    assert meta["points"] == network_input


@pytest.mark.parametrize("n_hits", [0, 1])
def test_empty_and_single_hit_events_are_handled(n_hits):
    from fastreco.data.pointcloud import N_FEATURES
    from fastreco.evaluate.clustering import clue_labels, network_labels
    from fastreco.models import build_model

    ev = _event([0] * n_hits, [5.0] * n_hits)
    ev.features = np.zeros((n_hits, N_FEATURES), np.float32)
    ev.position = np.tile(np.array([[10.0, 20.0, 330.0]], np.float32), (n_hits, 1))
    model = build_model("gravnet", (N_FEATURES,), 4, hidden=8, blocks=1, k=4).eval()
    labels, energy = network_labels(model, ev, t_beta=0.0, t_d=0.5)
    assert labels.shape == (n_hits,)
    assert len(energy) == (labels.max() + 1 if n_hits else 0)
    clue = clue_labels(ev)
    assert clue.shape == (n_hits,)
    df, fakes = match_event(ev, labels, LOOSE)
    assert len(df) == n_hits  # the one particle (5 GeV) counts when it has its hit
    assert fakes == 0
