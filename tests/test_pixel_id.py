"""LArTPC pixel-ID training and evaluation: balanced sampling, tiles, Michel cluster matching,
config errors, and both training modes end to end (train, resume, evaluate) on a tiny plane."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fastreco.cli import app
from fastreco.data.lartpc_images import CLASS_EM, CLASS_NONE, CLASS_TRACK
from fastreco.errors import InputError
from fastreco.evaluate.pixel_id import MichelMatching, match_michel_clusters
from fastreco.train.pixel_id import (
    PixelIdSamples,
    PixelIdTaskConfig,
    SamplingConfig,
    SparseEvent,
    balanced_centres,
    class_weights,
    cut_tiles,
    michel_hit_fraction,
)


def _event(n_track: int, n_em: int, n_none: int, n_michel: int) -> SparseEvent:
    """Hits on distinct pixels of a 64 x 256 plane, grouped by class (Michel hits are EM)."""
    labels = [CLASS_TRACK] * n_track + [CLASS_EM] * (n_em + n_michel) + [CLASS_NONE] * n_none
    n = len(labels)
    cells = np.arange(n) * 7
    return SparseEvent(
        wire=(cells // 256).astype(np.int64),
        tick=(cells % 256).astype(np.int64),
        adc=np.linspace(20, 200, n).astype(np.float32),
        label=np.array(labels, np.int8),
        michel=np.array([False] * (n_track + n_em) + [True] * n_michel + [False] * n_none, bool),
    )


def test_balanced_centres_share_the_groups_equally():
    event = _event(n_track=200, n_em=30, n_none=4, n_michel=5)
    idx = balanced_centres(event, 40, np.random.default_rng(0))
    assert len(idx) == 40
    groups = np.where(event.michel[idx], 3, event.label[idx])
    assert np.bincount(groups, minlength=4).tolist() == [10, 10, 10, 10]
    # a group missing from the event leaves its share to the others
    no_michel = _event(n_track=50, n_em=0, n_none=3, n_michel=0)
    idx = balanced_centres(no_michel, 9, np.random.default_rng(1))
    assert np.bincount(no_michel.label[idx], minlength=3).tolist() == [5, 0, 4]
    assert len(balanced_centres(_event(0, 0, 0, 0), 8, np.random.default_rng(2))) == 0


def test_class_weights_are_inverse_sqrt_frequency_with_mean_one():
    w = class_weights([_event(n_track=400, n_em=100, n_none=25, n_michel=0)])
    assert np.mean(w) == pytest.approx(1.0)
    assert w[CLASS_EM] / w[CLASS_TRACK] == pytest.approx(2.0)  # sqrt(400 / 100)
    assert w[CLASS_NONE] / w[CLASS_TRACK] == pytest.approx(4.0)


def test_tiles_stay_inside_the_image_and_keep_labels_aligned():
    event = _event(n_track=30, n_em=10, n_none=2, n_michel=3)
    images = event.dense((64, 256))
    tiles = cut_tiles(images, np.array([0, 63]), np.array([255, 100]), (16, 32))
    assert tiles["adc"].shape == (2, 16, 32)
    # corner centre: the tile is shifted inside, so it is the image's corner
    np.testing.assert_array_equal(tiles["adc"][0], images["adc"][:16, -32:])
    np.testing.assert_array_equal(tiles["label"][1], images["label"][-16:, 84:116])
    assert np.array_equal(tiles["mask"][0], tiles["adc"][0] != 0)


def test_wire_flip_flips_inputs_and_targets_together():
    event = _event(n_track=60, n_em=30, n_none=5, n_michel=10)
    sampling = SamplingConfig(tile=(16, 32), samples_per_event=6, events_per_chunk=1)
    data = PixelIdSamples([event], (64, 256), sampling, "image", batch_size=6, seed=3)
    batch = next(iter(data))
    x, label, mask = batch["x"][:, 0].numpy(), batch["label"].numpy(), batch["mask"].numpy()
    assert np.array_equal(mask, x != 0)  # hit pixels stay where the targets are
    assert np.all(label[~mask] == CLASS_NONE)
    # no drift flip by default: the ADC ramp of the hits grows along the ticks in every tile
    # of one wire row (cells are laid out tick-major with increasing ADC)
    for tile in x:
        for row in tile:
            hits = row[row != 0]
            assert np.all(np.diff(hits) > 0)


def test_sparse_batches_hold_whole_events_and_flip_their_wires():
    events = [_event(60, 30, 5, 10), _event(0, 0, 0, 0), _event(20, 5, 3, 0), _event(9, 4, 2, 2)]
    by_size = {e.n_hits: e for e in events if e.n_hits}  # 105, 28 and 17 hits
    data = PixelIdSamples(events, (64, 256), SamplingConfig(), "sparse", batch_size=2, seed=1)
    seen_flips = set()
    for epoch in range(6):
        data.set_epoch(epoch)
        batches = list(data)
        assert [int(b["coords"][:, 0].max()) + 1 for b in batches] == [2, 1]  # empty one skipped
        for b in batches:
            assert b["x"].shape == (len(b["coords"]), 1)
            assert b["label"].dtype == torch.int64
            for k in range(int(b["coords"][:, 0].max()) + 1):
                sel = b["coords"][:, 0] == k
                event = by_size[int(sel.sum())]  # every hit of the event, none of another
                wire, tick = b["coords"][sel, 1].numpy(), b["coords"][sel, 2].numpy()
                flipped = not np.array_equal(wire, event.wire)
                if flipped:
                    np.testing.assert_array_equal(wire, 63 - event.wire)
                seen_flips.add(flipped)
                np.testing.assert_array_equal(tick, event.tick)  # no drift flip by default
                np.testing.assert_array_equal(b["x"][sel, 0].numpy(), event.adc)
                np.testing.assert_array_equal(b["label"][sel].numpy(), event.label)
                np.testing.assert_array_equal(b["michel"][sel].numpy(), event.michel)
    assert seen_flips == {False, True}
    # validation: the events in order, never flipped
    val = PixelIdSamples(events, (64, 256), SamplingConfig(), "sparse", batch_size=8, train=False)
    (batch,) = list(val)
    expected = np.concatenate([e.wire for e in events])
    np.testing.assert_array_equal(batch["coords"][:, 1].numpy(), expected)


def test_michel_event_boost_repeats_michel_events_in_training_only():
    events = [_event(20, 5, 3, 0), _event(9, 4, 2, 2), _event(0, 0, 0, 0), _event(30, 6, 1, 4)]
    boosted = SamplingConfig(michel_event_boost=3)
    data = PixelIdSamples(events, (64, 256), boosted, "sparse", batch_size=1, seed=2)
    assert data.epoch_events().tolist() == [0, 1, 1, 1, 2, 3, 3, 3]
    assert michel_hit_fraction(events, data.epoch_events()) == pytest.approx(
        18 / (28 + 3 * 17 + 3 * 41)
    )
    for epoch in range(3):
        data.set_epoch(epoch)
        seen = [len(b["coords"]) for b in data]  # one event per batch, told apart by size
        assert sorted(seen) == [17, 17, 17, 28, 41, 41, 41]  # the empty event is skipped
    # validation walks every event once, in order
    val = PixelIdSamples(events, (64, 256), boosted, "sparse", batch_size=1, train=False)
    assert val.epoch_events().tolist() == [0, 1, 2, 3]
    assert [len(b["coords"]) for b in val] == [28, 17, 41]
    # the default (boost 1) keeps the unboosted runs' random order, in every mode
    for mode in ("sparse", "patch"):
        plain = PixelIdSamples(events, (64, 256), SamplingConfig(), mode, batch_size=1, seed=2)
        rng = np.random.default_rng(0)
        assert plain._epoch_order(rng).tolist() == np.random.default_rng(0).permutation(4).tolist()


def test_michel_pos_weight_weights_the_michel_hits_only():
    from fastreco.models.lartpc import pixel_id_loss

    torch.manual_seed(0)
    logits = torch.randn(50, 4)
    label = torch.randint(0, 3, (50,))
    michel = (torch.rand(50) < 0.2).float()
    ce = torch.nn.functional.cross_entropy(logits[:, :3], label)
    p = torch.sigmoid(logits[:, 3])
    bce_terms = -(michel * torch.log(p) + (1 - michel) * torch.log(1 - p))
    # None: the former loss, bit for bit
    plain = pixel_id_loss(logits, label, michel, weights=(0.5, 2.0))
    former = 0.5 * ce + 2.0 * torch.nn.functional.binary_cross_entropy_with_logits(
        logits[:, 3], michel
    )
    assert torch.equal(plain, former)
    unit = pixel_id_loss(logits, label, michel, michel_pos_weight=1.0)
    assert unit.item() == pytest.approx(pixel_id_loss(logits, label, michel).item(), rel=1e-6)
    weighted = pixel_id_loss(logits, label, michel, weights=(0.5, 2.0), michel_pos_weight=7.0)
    expected = 0.5 * ce + 2.0 * (bce_terms * torch.where(michel > 0, 7.0, 1.0)).mean()
    assert weighted.item() == pytest.approx(expected.item(), rel=1e-5)


def test_sparse_model_mode_and_input_shape():
    from fastreco.train.pixel_id import model_mode

    assert model_mode("lartpc-sparse-unet") == "sparse"
    assert model_mode("lartpc-unet") == "image"
    task = PixelIdTaskConfig.from_dict(
        {"name": "x", "model": {"name": "lartpc-sparse-unet"}, "data": {"n_wires": 64}}
    )
    assert task.input_shape("sparse") == (1, 64, task.data.n_ticks)


def test_michel_clusters_one_true_one_fake():
    predicted = np.zeros((40, 80), bool)
    true_id = np.zeros((40, 80), np.int64)
    true_id[10, 20:26] = 1  # one Michel electron, 6 hits
    predicted[10, 20:25] = True  # found (5 of 6 hits, the cluster is all Michel)
    predicted[30, 60:64] = True  # a fake cluster of 4 pixels
    predicted[2, 2] = True  # a single pixel: below min_cluster_hits, dropped
    small = MichelMatching(min_true_hits=3, min_cluster_hits=3)
    result = match_michel_clusters(predicted, true_id, small)
    assert result == {"n_true": 1, "n_true_matched": 1, "n_clusters": 2, "n_clusters_matched": 1}
    # a cluster mostly made of a track's pixels does not match (purity 3 / 10 < 0.5)
    polluted = np.zeros_like(predicted)
    polluted[10, 17:27] = True
    true_small = np.zeros_like(true_id)
    true_small[10, 20:23] = 1
    assert match_michel_clusters(polluted, true_small, small)["n_true_matched"] == 0
    # with the default size cuts (20 hits) neither the 6-hit electron nor the clusters count
    assert match_michel_clusters(predicted, true_id) == dict.fromkeys(result, 0)


def test_michel_electron_in_pure_pieces_is_found():
    predicted = np.zeros((40, 200), bool)
    true_id = np.zeros((40, 200), np.int64)
    true_id[10, 20:50] = 1  # 30 hits
    predicted[10, 20:24] = True  # 4 of 30 hits (13 %): not enough alone
    small = MichelMatching(min_true_hits=3, min_cluster_hits=3)
    assert match_michel_clusters(predicted, true_id, small)["n_true_matched"] == 0
    predicted[10, 44:50] = True  # a second pure piece, 21 ticks away: 10 of 30 hits together
    result = match_michel_clusters(predicted, true_id, small)
    assert result == {"n_true": 1, "n_true_matched": 1, "n_clusters": 2, "n_clusters_matched": 2}


def test_michel_cluster_bridges_small_gaps_only():
    """A showering electron leaves gaps: pixels within 3 wires / 13 ticks form one cluster."""
    predicted = np.zeros((40, 200), bool)
    true_id = np.zeros((40, 200), np.int64)
    predicted[10, 20:24] = predicted[12, 33:37] = True  # 2 wires, 9 ticks apart
    true_id[10, 20:24] = true_id[12, 33:37] = 1
    small = MichelMatching(min_true_hits=3, min_cluster_hits=3)
    assert match_michel_clusters(predicted, true_id, small)["n_clusters"] == 1
    tight = MichelMatching(min_true_hits=3, min_cluster_hits=3, reach=(0, 0))
    assert match_michel_clusters(predicted, true_id, tight)["n_clusters"] == 2
    far = predicted.copy()
    far[12, 33:37] = False
    far[12, 60:64] = True  # 36 ticks away: a separate cluster
    assert match_michel_clusters(far, true_id, small)["n_clusters"] == 2


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"samplng": {}}, "samplng"),
        ({"sampling": {"patch_size": 2}}, "sampling.patch_size"),
        ({"sampling": {"tile": [4, 64]}}, "sampling.tile"),
        ({"sampling": {"michel_event_boost": 0}}, "sampling.michel_event_boost"),
        ({"sampling": {"michel_event_boost": 2.5}}, "sampling.michel_event_boost"),
        ({"sampling": {"michel_pos_weight": 0}}, "sampling.michel_pos_weight"),
        ({"sampling": {"michel_pos_weight": "many"}}, "sampling.michel_pos_weight"),
        ({"data": {"kind": ["neutrino", "axion"]}}, "data.kind"),
        ({"data": {"events": 0}}, "data.events"),
        ({"model": {"name": "no-such-net"}}, "model.name"),
        ({"kind": "clustering"}, "kind"),
    ],
)
def test_bad_config_fields_are_named(raw, field):
    with pytest.raises(InputError) as err:
        PixelIdTaskConfig.from_dict({"name": "x", **raw}, source="x.yaml")
    assert err.value.field == field
    assert "x.yaml" in str(err.value)


TINY = """
name: {name}
kind: pixel_id
data: {{kind: [muon, electron], energy: "0.03:0.08", n_particles: 2, cosmics: 0.0, n_wires: 64,
        n_ticks: 256, events: 12, events_per_shard: 12, seed: 5, dir: {data},
        split: [0.5, 0.25, 0.25]}}
model: {model}
training: {{epochs: 1, batch_size: {batch}, num_workers: 0}}
sampling: {{patch_size: 16, tile: [32, 64], samples_per_event: {samples}, events_per_chunk: 2}}
"""


@pytest.mark.filterwarnings("ignore::UserWarning:lightning.*")
@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")
@pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning")
def test_train_resume_and_evaluate_both_modes(tmp_path):
    """Patch CNN and U-Net on one tiny store: run folders, resume, then the evaluation on the
    same test events (seed 5 puts a Michel electron, tracks and showers in the test split)."""
    runner = CliRunner()
    runs = tmp_path / "runs"
    models = {
        "patch": ("{name: lartpc-patch-cnn, params: {filters: [4, 8], dense: [16]}}", 32, 32),
        "unet": ("{name: lartpc-unet, params: {width: 4, depth: 2, tick_factor: 2}}", 4, 3),
    }
    for name, (model, batch, samples) in models.items():
        config = tmp_path / f"{name}.yaml"
        config.write_text(
            TINY.format(
                name=name, data=tmp_path / "data", model=model, batch=batch, samples=samples
            )
        )
        result = runner.invoke(app, ["train", str(config), "--runs-dir", str(runs)])
        assert result.exit_code == 0, result.output
        info = json.loads((runs / name / "run.json").read_text())
        assert info["kind"] == "pixel_id"
        assert info["mode"] == ("patch" if name == "patch" else "image")
        assert info["epochs_trained"] == 1
        assert (runs / name / "checkpoints" / "last.ckpt").exists()
    # resume the patch run for a second epoch
    result = runner.invoke(
        app,
        [
            "train",
            str(tmp_path / "patch.yaml"),
            "--runs-dir",
            str(runs),
            "--resume",
            "--epochs",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    info = json.loads((runs / "patch" / "run.json").read_text())
    assert info["epochs_trained"] == 2
    assert info["global_steps"] > 1

    result = runner.invoke(
        app, ["evaluate", str(runs / "patch"), "--compare", str(runs / "unet"), "--events", "3"]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((runs / "patch" / "metrics.json").read_text())
    methods = metrics["methods"]
    assert {m["method"] for m in methods.values()} == {
        "patch",
        "onnx",
        "dense",
        "image",
        "tiles",
        "tiles_onnx",
    }
    for m in methods.values():
        assert math.isfinite(m["hit"]["auc_em_vs_track"])
        assert math.isfinite(m["hit"]["auc_michel"])
        assert m["seconds_per_event"] > 0
        assert m["michel_clusters"]["n_true"] >= 1
    # the dense equivalent and ONNX Runtime give the patch CNN's scores (float32 rounding)
    assert max(metrics["max_abs_diff_to_patch_cnn"].values()) < 1e-4
    # the U-Net on its hit tiles only gives its whole-image scores, in PyTorch and ONNX Runtime
    assert len(metrics["max_abs_diff_to_whole_image"]) == 2
    assert max(metrics["max_abs_diff_to_whole_image"].values()) < 1e-4
    assert (runs / "patch" / "report.html").stat().st_size > 20_000


def test_unknown_run_kind_for_compare_is_an_error(tmp_path):
    from fastreco.evaluate.pixel_id import evaluate_pixel_id

    with pytest.raises(InputError, match=r"run\.json"):
        evaluate_pixel_id(tmp_path)


@pytest.mark.filterwarnings("ignore::UserWarning:lightning.*")
@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")
@pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning")
def test_train_and_evaluate_sparse_mode(tmp_path):
    """The sparse U-Net on whole sparse events: run folder, then the evaluation's sparse method
    (whole event in one pass) with the class weights of the image mode."""
    runner = CliRunner()
    runs = tmp_path / "runs"
    config = tmp_path / "sparse.yaml"
    model = "{name: lartpc-sparse-unet, params: {width: 4, depth: 2, reps: 1, tick_factor: 2}}"
    config.write_text(
        TINY.format(name="sparse", data=tmp_path / "data", model=model, batch=2, samples=1)
    )
    result = runner.invoke(app, ["train", str(config), "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    info = json.loads((runs / "sparse" / "run.json").read_text())
    assert info["mode"] == "sparse"
    assert info["input_shape"] == [1, 64, 256]
    assert len(info["class_weights"]) == 3
    assert info["samples_per_epoch"] == info["n_train"]  # whole events
    result = runner.invoke(app, ["evaluate", str(runs / "sparse"), "--events", "3"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((runs / "sparse" / "metrics.json").read_text())
    (method,) = metrics["methods"].values()
    assert method["method"] == "sparse"
    assert method["hit"]["n_hits"] == metrics["n_hits"]
    assert math.isfinite(method["hit"]["auc_em_vs_track"])
    assert method["michel_cluster_scan"]  # scanned like the other whole-event networks
    assert method["cpu_time_ratio_to_patch_cnn"] is None  # no patch CNN in this comparison


@pytest.mark.filterwarnings("ignore::UserWarning:lightning.*")
@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")
@pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning")
def test_train_sparse_mode_with_michel_enrichment(tmp_path):
    """The two Michel options reach the training: the epoch holds the boosted events and
    run.json records the Michel-hit fraction they give; the weighted loss trains."""
    from fastreco.train.pixel_id import load_sparse_events, split_events

    runs = tmp_path / "runs"
    config = tmp_path / "enriched.yaml"
    model = "{name: lartpc-sparse-unet, params: {width: 4, depth: 2, reps: 1, tick_factor: 2}}"
    text = TINY.format(name="enriched", data=tmp_path / "data", model=model, batch=2, samples=1)
    config.write_text(
        text.replace("events_per_chunk: 2}", "michel_event_boost: 3, michel_pos_weight: 4.0}")
    )
    result = CliRunner().invoke(app, ["train", str(config), "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    info = json.loads((runs / "enriched" / "run.json").read_text())
    task = PixelIdTaskConfig.load(config)
    assert task.sampling.michel_pos_weight == 4.0
    events, _ = load_sparse_events(task.data_dir, split_events(12, "train", task.data.split))
    n_michel_events = sum(bool(e.michel.any()) for e in events)
    assert info["samples_per_epoch"] == info["n_train"] + 2 * n_michel_events
    walk = np.repeat(np.arange(len(events)), [3 if e.michel.any() else 1 for e in events])
    assert info["michel_hit_fraction"] == pytest.approx(michel_hit_fraction(events, walk))
    assert math.isfinite(info["best_val_loss"])
