"""HGCAL property regression (kind ``hgcal_regression``): data, both models' training and resume,
the evaluation against the baselines, config errors. Tiny seeded samples: a few dozen events, an
8 x 8 window of 4 cm pixels on six layers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from fastreco.errors import InputError
from fastreco.train.hgcal_regression import (
    LOG_ENERGY_UNIT,
    HgcalRegressionTaskConfig,
    load_store_events,
    split_indices,
    train_hgcal_regression,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning:lightning.*"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning"),
    pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning"),
]

LAYERS = [2, 6, 10, 14, 24, 34]


def _task(tmp: Path, model: str, params: dict) -> HgcalRegressionTaskConfig:
    return HgcalRegressionTaskConfig.from_dict(
        {
            "name": f"tiny_{model}",
            "data": {
                "particles": ["e-", "pi+"],
                "energy": "log:10:200",
                "events": 48,
                "seed": 5,
                "dir": str(tmp / "data" / "tiny"),
                "split": [0.5, 0.2, 0.3],
                "grid_pitch": 4.0,
                "grid_window": 8,
                "grid_layers": LAYERS,
            },
            "model": {"name": model, "params": params},
            "position_reference": "barycentre",
            "training": {
                "epochs": 1,
                "batch_size": 8,
                "learning_rate": 0.002,
                "num_workers": 0,
                "augment": False,
            },
        }
    )


MODELS = {
    "hgcal-cnn3d": {"width": 4, "stages": 2, "dense": 16},
    "hgcal-drn": {"hidden": 16, "k": 4},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("regression3d")
    return {
        name: train_hgcal_regression(
            _task(tmp, name, params), runs_dir=tmp / "runs", progress=False
        )
        for name, params in MODELS.items()
    }


def test_both_models_write_a_run_folder_on_the_same_events(trained: dict[str, Path]) -> None:
    infos = {name: json.loads((run / "run.json").read_text()) for name, run in trained.items()}
    for name, run in trained.items():
        info = infos[name]
        assert (run / "checkpoints" / "last.ckpt").exists()
        assert info["kind"] == "hgcal_regression"
        assert info["epochs_trained"] >= 1
        assert math.isfinite(info["best_val_loss"])
        assert len(info["target_offset"]) == 4
    assert infos["hgcal-cnn3d"]["representation"] == "grid"
    assert infos["hgcal-drn"]["representation"] == "points"
    assert infos["hgcal-cnn3d"]["input_shape"] == [1, len(LAYERS), 8, 8]
    # one data block: the same store, grid file, raw calibration and split sizes
    for key in ("data_dir", "grid_file", "raw_calibration", "n_train", "n_val"):
        assert infos["hgcal-cnn3d"][key] == infos["hgcal-drn"][key]


def test_targets_inputs_and_windows_are_consistent(trained: dict[str, Path]) -> None:
    task = HgcalRegressionTaskConfig.load(trained["hgcal-drn"] / "config.yaml")
    events, _calib = load_store_events(task, points=True, progress=False)
    ok = events.valid
    t = events.targets()
    # the energy target times the raw sum is the true energy (exactly, float32 rounding)
    np.testing.assert_allclose(
        t[ok, 0] * events.raw_energy[ok], events.truth["energy"][ok], rtol=1e-5
    )
    # the raw calibration is fitted: the mean ratio on training events is near 1 (within 15 %)
    train = split_indices(events, task, "train")
    assert abs(np.mean(t[train, 0]) - 1.0) < 0.15
    # the grid windows and the window point clouds hold the same energy (within 5 % per event;
    # they differ only by the partial overlap of border cells with the window)
    assert events.points is not None
    for e in np.flatnonzero(ok)[:20]:
        grid_e = events.windows.event(int(e)).sum()
        pts_e = LOG_ENERGY_UNIT * np.expm1(events.points[e][:, 3]).sum()
        assert pts_e == pytest.approx(grid_e, rel=0.05, abs=0.05)
        # points lie inside the window: |dx|, |dy| below half its width (16 cm), up to depth scaling
        assert np.all(np.abs(events.points[e][:, :2]) * 10 < 16.0 * 1.3)
    # the inputs' barycentres (the position references) agree with the true barycentre in x, y
    # for electrons (median within a quarter of the 4 cm pixel for the grid, 0.3 cm for the
    # points) and with each other in z (same layers)
    electrons = ok & (events.truth["pdg"] == 11)
    grid_b, point_b = events.grid_barycentre(), events.point_barycentre()
    for j, name in ((0, "barycenter_dx"), (1, "barycenter_dy")):
        assert np.median(np.abs(grid_b[electrons, j] - events.truth[name][electrons])) < 1.0
        assert np.median(np.abs(point_b[electrons, j] - events.truth[name][electrons])) < 0.3
    assert np.median(np.abs(grid_b[ok, 2] - point_b[ok, 2])) < 0.5
    # the same split for every model: test events never in training
    assert not set(split_indices(events, task, "test")) & set(train)


def test_resume_continues_the_run(trained: dict[str, Path]) -> None:
    run = trained["hgcal-cnn3d"]
    before = json.loads((run / "run.json").read_text())["global_steps"]
    train_hgcal_regression(
        run / "config.yaml", runs_dir=run.parent, resume=True, max_epochs=2, progress=False
    )
    info = json.loads((run / "run.json").read_text())
    assert info["epochs_trained"] == 2
    assert info["global_steps"] > before
    with pytest.raises(InputError, match="run folder exists"):
        train_hgcal_regression(run / "config.yaml", runs_dir=run.parent, progress=False)


def test_evaluation_writes_finite_metrics_and_report(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    from fastreco.evaluate.hgcal_regression import evaluate_hgcal_regression

    metrics = evaluate_hgcal_regression(
        trained["hgcal-cnn3d"],
        compare=[trained["hgcal-drn"]],
        out_dir=tmp_path,
        n_events=4,
        pileups=(0.0, 140.0),
        progress=False,
    )
    assert (tmp_path / "report.html").stat().st_size > 10_000
    assert json.loads((tmp_path / "metrics.json").read_text())["n_test"] == metrics["n_test"]
    for particle in ("e-", "pi+"):
        res = metrics["results"][particle]
        assert len(res["energy"]) >= 3  # two networks + calibrated sum (+ compensation for pi)
        for m in res["energy"].values():
            assert math.isfinite(m["sigma_eff_pct"])
            assert math.isfinite(m["mean_abs_pct"])
        for m in res["position"].values():
            assert all(math.isfinite(m[f"mean_abs_d{c}_cm"]) for c in "xyz")
    assert "software compensation" in metrics["results"]["pi+"]["energy"]
    assert {r["pileup"] for r in metrics["pileup"]} == {0.0, 140.0}
    assert len(metrics["bars"]) == 4
    assert all(isinstance(b["met"], bool) for b in metrics["bars"])
    pipelines = {r["pipeline"]: r for r in metrics["resources"]}
    assert set(pipelines) == {"grid + 3D CNN", "point cloud + DRN"}
    for r in pipelines.values():
        assert r["model peak MB/event"] > 0
        assert r["total ms/event"] > 0
    for per in metrics["saliency"].values():
        for s in per.values():
            assert len(s["layer"]) == len(LAYERS)
            assert sum(s["layer"]) == pytest.approx(1.0, rel=1e-3)  # normalized per event


@pytest.mark.slow
def test_evaluation_on_an_independent_sample_reuses_its_store(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    from fastreco.evaluate.hgcal_regression import (
        evaluate_hgcal_regression,
        independent_test_task,
    )

    def run() -> dict:
        return evaluate_hgcal_regression(
            trained["hgcal-cnn3d"],
            compare=[trained["hgcal-drn"]],
            out_dir=tmp_path,
            n_events=0,
            test_events=40,
            progress=False,
        )

    metrics = run()
    task = HgcalRegressionTaskConfig.load(trained["hgcal-cnn3d"] / "config.yaml")
    sample = independent_test_task(task, 40).data_dir
    assert sample.parent == task.data_dir.parent
    assert sample != task.data_dir
    assert metrics["test_sample"] == {"dir": str(sample), "events": 40, "seed": 90_001}
    # every valid event of the sample is a test event (the run's own test split has ~14)
    assert 30 <= sum(metrics["n_test"].values()) <= 40
    shards = {p: p.stat().st_mtime_ns for p in sample.glob("*.h5")}
    assert shards
    again = run()  # the sample is simulated once, then read back: same events, same numbers
    assert {p: p.stat().st_mtime_ns for p in sample.glob("*.h5")} == shards
    assert json.dumps(again["results"]) == json.dumps(metrics["results"])  # NaN-safe


def test_independent_test_sample_task(trained: dict[str, Path]) -> None:
    """The independent sample: same generator, another seed, its own store beside the runs'."""
    from fastreco.evaluate.hgcal_regression import independent_test_task

    task = HgcalRegressionTaskConfig.load(trained["hgcal-cnn3d"] / "config.yaml")
    sample = independent_test_task(task, 500, seed=7)
    assert sample.data.events == 500
    assert sample.data.seed == 7
    assert sample.data_dir.parent == task.data_dir.parent
    assert sample.data_dir != task.data_dir
    same = ("particles", "energy", "eta_min", "eta_max", "pileup", "grid_pitch", "grid_window")
    for field in same:
        assert getattr(sample.data, field) == getattr(task.data, field)
    with pytest.raises(InputError) as err:
        independent_test_task(task, 40, seed=task.data.seed)
    assert err.value.field == "test_seed"
    with pytest.raises(InputError) as err:
        independent_test_task(task, 0)
    assert err.value.field == "test_events"


def test_paired_bootstrap_of_the_resolutions() -> None:
    from fastreco.evaluate.hgcal_regression import bootstrap_resolutions

    rng = np.random.default_rng(3)
    n = 4000
    truth = {"pdg": np.full(n, 11), "energy": rng.uniform(10, 20, n)}
    noise = rng.standard_normal(n)
    est = {
        "calibrated sum": {"energy": truth["energy"] * (1 + 0.05 * noise)},
        "same": {"energy": truth["energy"] * (1 + 0.05 * noise)},
        "better": {"energy": truth["energy"] * (1 + 0.04 * noise + 0.01 * rng.standard_normal(n))},
        "position only": {"x": np.zeros(n)},
    }
    (row,) = bootstrap_resolutions(est, truth, np.array([10.0, 20.0]), n_boot=300)["e-"]
    assert row["n"] == n
    assert set(row["err"]) == {"calibrated sum", "same", "better"}
    # sigma_eff of a Gaussian: standard error near sigma / sqrt(2 n), somewhat larger
    gauss = 0.05 / math.sqrt(2 * n)
    assert 0.8 * gauss < row["err"]["calibrated sum"] < 2.5 * gauss
    vs = row["vs_reference"]
    assert vs["same"] == {"diff": 0.0, "err": 0.0, "p_below": 0.0}
    # resolution sqrt(0.04^2 + 0.01^2) = 4.12 %: 0.88 % better, and the pairing (same events)
    # makes the error of the difference smaller than that of two independent samples
    assert vs["better"]["diff"] == pytest.approx(-0.0088, abs=0.002)
    unpaired = math.hypot(row["err"]["better"], row["err"]["calibrated sum"])
    assert vs["better"]["err"] < 0.75 * unpaired
    assert vs["better"]["p_below"] == 1.0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"data": {"grid_pich": 2.0}}, "data.grid_pich"),
        ({"model": {"name": "tmva-cnn"}}, "model.name"),
        ({"training": {"epochs": "many"}}, "training.epochs"),
        ({"kind": "clustering"}, "kind"),
    ],
)
def test_bad_config_fields_are_named(tmp_path: Path, change: dict, field: str) -> None:
    raw = {"name": "bad", "kind": "hgcal_regression", **change}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(InputError) as err:
        HgcalRegressionTaskConfig.load(path)
    assert err.value.field == field
    assert str(path) in str(err.value)
