"""Evaluation of trained runs (metrics.json, report.html), ONNX export of a run and inference
over an event store."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fastreco.config import TaskConfig
from fastreco.errors import InputError
from fastreco.sim.engine import simulate
from fastreco.train.runner import sim_config, train_task

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning:lightning.*"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning"),
    pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning"),
]

N_EVENTS = 1605  # 15 training chunks of 107 events (batch 64 / 0.6)


def task_config(data_dir: Path, name: str, **raw: object) -> TaskConfig:
    base: dict = {
        "name": name,
        "data": {
            "dir": str(data_dir),
            "particles": ["gamma", "pi0", "e-"],
            "events": N_EVENTS,
            "energy": "log:2:50",
            "events_per_shard": N_EVENTS,
            "seed": 7,
        },
        "representation": {"name": "window", "size": 11},
        "model": {"name": "tmva-cnn"},
        "training": {"epochs": 1, "batch_size": 64, "num_workers": 0},
    }
    base.update(raw)
    return TaskConfig.from_dict(base)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval")
    data = root / "store"
    simulate(sim_config(task_config(data, "x")), data, workers=1, progress=False)
    specs = {
        "cnn": {},
        "dnn": {"model": {"name": "tmva-dnn"}},
        "energy": {"kind": "regression", "target": "energy"},
        "pid": {"classes": ["e-", "gamma", "pi0"]},
    }
    return {
        name: train_task(
            task_config(data, name, **spec), runs_dir=root / "runs", run_name=name, progress=False
        )
        for name, spec in specs.items()
    }


def _images(html: str) -> int:
    return len(re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{200,}"', html))


def test_classification_report(runs, tmp_path):
    from fastreco.evaluate.run import evaluate_run

    out = tmp_path / "out"
    metrics = evaluate_run(runs["cnn"], compare=[runs["dnn"]], bdt=True, out_dir=out)
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics["kind"] == "classification"
    assert metrics["signal"] == "gamma"
    assert metrics["background"] == "pi0"
    assert set(metrics["classifiers"]) == {"CNN (cells)", "DNN (cells)", "BDT (shower shapes)"}
    for clf in metrics["classifiers"].values():
        assert 0.0 <= clf["auc"] <= 1.0
        assert set(clf["rejection"]) == {"0.5", "0.75", "0.9", "0.99"}
        assert set(clf["signal_efficiency_at_rejected_fraction"]) == {"0.5", "0.75", "0.9", "0.99"}
    assert set(metrics["binned"]) == {"true_energy", "abs_true_eta"}
    assert metrics["bdt"]["n_train"] > 0
    assert len(metrics["saliency"]["events"]) == 4
    assert len(metrics["worst_mistakes"]) == 4
    html = (out / "report.html").read_text()
    assert _images(html) >= 8  # ROC, 2 per-bin, saliency, 4 displays
    assert 'src="http' not in html
    assert "<script" not in html
    assert "Signal efficiency where 50/75/90/99 % of the background is rejected" in html


def test_regression_report_against_classical_and_oracle(runs, tmp_path):
    from fastreco.evaluate.run import CLASSICAL, ORACLE, evaluate_run

    metrics = evaluate_run(runs["energy"], backend="onnx", out_dir=tmp_path, n_displays=1)
    assert (runs["energy"] / "model.onnx").exists()  # exported on the fly
    assert set(metrics["regression"]) == {"gamma", "pi0"}
    for cls in metrics["regression"].values():
        assert set(cls["estimators"]) == {"CNN (cells)", CLASSICAL, ORACLE}
        rows = cls["ratio_to_oracle"]
        assert len(rows) == len(metrics["energy_bins"]) - 1
        assert "CNN (cells) / oracle" in rows[0]
        oracle = cls["estimators"][ORACLE]["table"]
        measured = [r for r in oracle if r["core_mean"] is not None]
        assert measured
        assert all(abs(r["core_mean"] - 1.0) < 0.05 for r in measured)  # calibrated per bin
    html = (tmp_path / "report.html").read_text()
    assert _images(html) >= 4
    assert "oracle" in html


def test_regression_on_an_independent_test_sample(runs, tmp_path):
    """test_events: every event of a fresh store of the same generator (another seed, beside
    the training store) is a test event; it is simulated once and reused; classification runs
    refuse it, naming the option."""
    from fastreco.evaluate.run import TEST_SEED, evaluate_run

    n = 400
    metrics = evaluate_run(
        runs["energy"], out_dir=tmp_path, n_displays=0, n_saliency=0, test_events=n
    )
    sample = Path(metrics["test_sample"]["dir"])
    assert sample == runs["energy"].parent.parent / f"store_test-n{n}-s{TEST_SEED}"
    assert metrics["test_sample"]["events"] == n
    assert metrics["data_dir"] == str(sample)
    # the regressed classes' events of the sample, all of them (no split)
    from fastreco.data.store import EventStore

    pdg = EventStore(sample).truth_table().query("parent == -1")["pdg"].to_numpy()
    assert metrics["runs"]["CNN (cells)"]["n_test"] == int(np.isin(pdg, (22, 111)).sum())
    assert sum(c["n_events"] for c in metrics["regression"].values()) == int(
        np.isin(pdg, (22, 111)).sum()
    )
    stamp = [p.stat().st_mtime_ns for p in sorted(sample.glob("*.h5"))]
    evaluate_run(runs["energy"], out_dir=tmp_path, n_displays=0, n_saliency=0, test_events=n)
    assert [p.stat().st_mtime_ns for p in sorted(sample.glob("*.h5"))] == stamp
    with pytest.raises(InputError, match="test_events"):
        evaluate_run(runs["cnn"], out_dir=tmp_path, test_events=n)


def test_multiclass_confusion_matrix(runs, tmp_path):
    from fastreco.evaluate.run import evaluate_run

    metrics = evaluate_run(runs["pid"], bdt=True, out_dir=tmp_path, n_displays=0, n_saliency=3)
    (result,) = metrics["multiclass"].values()
    cm = np.asarray(result["confusion_matrix"])
    assert cm.shape == (3, 3)
    assert 0.0 <= result["accuracy"] <= 1.0
    assert np.isclose(np.trace(cm) / cm.sum(), result["accuracy"])
    assert set(result["auc_one_vs_rest"]) == {"e-", "gamma", "pi0"}
    assert "classifiers" not in metrics  # no BDT for three classes


def test_compare_needs_the_same_task_data(runs, tmp_path):
    from fastreco.evaluate.run import evaluate_run

    with pytest.raises(InputError, match="same task data"):
        evaluate_run(runs["cnn"], compare=[runs["energy"]], out_dir=tmp_path)


def test_export_of_a_trained_run_runs_without_fastreco(runs):
    import onnxruntime as ort

    from fastreco.deploy.inference import load_model
    from fastreco.deploy.onnx import export_onnx
    from fastreco.train.datasets import ChunkDataset

    run = runs["cnn"]
    path = export_onnx(run)
    assert path == run / "model.onnx"
    meta = json.loads((run / "model.preprocessing.json").read_text())
    assert meta["input"]["shape"] == ["batch", 1, 11, 11]
    assert meta["preprocessing"]["scales"] == {"energy": 10.0}
    assert meta["classes"] == ["gamma", "pi0"]
    assert meta["output"]["postprocess"] == "sigmoid"

    loaded = load_model(run)
    ds = ChunkDataset(loaded.info["data_dir"], loaded.task, "train")  # real windows
    x = np.concatenate([ds.load(i)["x"] for i in range(len(ds))])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert len(x) >= 256
    for n in (1, 2, 37, 256):
        with torch.no_grad():
            expected = loaded.model(torch.from_numpy(x[:n])).numpy()
        got = session.run(None, {meta["input"]["name"]: x[:n]})[0]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["cnn", "energy"])
def test_predict_store_onnx_matches_torch(runs, name):
    from fastreco.deploy.inference import predict_store
    from fastreco.train.runner import load_run

    _, info = load_run(runs[name])
    onnx_df = predict_store(runs[name], info["data_dir"], backend="onnx")
    torch_df = predict_store(runs[name], info["data_dir"], backend="torch")
    assert len(onnx_df) == N_EVENTS
    assert (onnx_df["event"].to_numpy() == np.arange(N_EVENTS)).all()
    assert {"e5x5", "r9", "true_pdg"} <= set(onnx_df.columns)  # the classical reco beside
    cols = ["p_gamma", "p_pi0"] if name == "cnn" else ["correction", "e_pred"]
    for col in cols:
        np.testing.assert_allclose(onnx_df[col], torch_df[col], rtol=1e-4, atol=1e-5)
    if name == "cnn":
        np.testing.assert_allclose(onnx_df["p_gamma"] + onnx_df["p_pi0"], 1.0, rtol=1e-6)


def test_cli_export_and_reco_with_a_model(runs, tmp_path):
    import pandas as pd
    from typer.testing import CliRunner

    from fastreco.cli import app
    from fastreco.train.runner import load_run

    runner = CliRunner()
    result = runner.invoke(
        app, ["export", str(runs["dnn"]), "--onnx", "-o", str(tmp_path / "m.onnx")]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.onnx").exists()
    assert (tmp_path / "m.preprocessing.json").exists()
    _, info = load_run(runs["dnn"])
    out = tmp_path / "pred.parquet"
    result = runner.invoke(
        app, ["reco", info["data_dir"], "--model", str(runs["dnn"]), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    df = pd.read_parquet(out)
    assert {"event", "e5x5", "p_gamma", "p_pi0", "predicted"} <= set(df.columns)


def test_reco_with_a_model_served_by_triton(runs, tmp_path):
    """`fastreco reco --model RUN --server URL`: the batches go to a real Triton server and the
    predictions equal local ONNX Runtime's."""
    import pandas as pd
    from typer.testing import CliRunner

    from fastreco.cli import app
    from fastreco.deploy.triton import TritonError, TritonServer, find_tritonserver
    from fastreco.train.runner import load_run

    try:
        find_tritonserver()
    except TritonError:
        pytest.skip("tritonserver not installed: make triton-env")
    runner = CliRunner()
    repo = tmp_path / "repo"
    result = runner.invoke(app, ["export", str(runs["pid"]), "--triton", str(repo)])
    assert result.exit_code == 0, result.output
    _, info = load_run(runs["pid"])
    local, served = tmp_path / "local.parquet", tmp_path / "served.parquet"
    args = ["reco", info["data_dir"], "--model", str(runs["pid"])]
    assert runner.invoke(app, [*args, "-o", str(local)]).exit_code == 0
    with TritonServer(repo) as server:
        result = runner.invoke(app, [*args, "--server", server.http_url, "-o", str(served)])
    assert result.exit_code == 0, result.output
    a, b = pd.read_parquet(local), pd.read_parquet(served)
    for column in ("p_e-", "p_gamma", "p_pi0"):
        np.testing.assert_allclose(b[column], a[column], atol=1e-5)
    assert (b["predicted"] == a["predicted"]).all()


def test_oracle_sees_the_crystals_residual_miscalibration(runs):
    """The intercalibration response of a shower is ~1 on average and spreads by a fraction of
    the 0.3 % constant term (a shower shares its energy among a few crystals: sqrt(sum f^2) of
    0.5-1), and it widens the oracle by that much."""
    from fastreco.data.store import EventStore
    from fastreco.evaluate.run import intercalibration_response, oracle_energy
    from fastreco.sim.config import ReadoutConfig

    store = EventStore(runs["cnn"].parent.parent / "store")
    kappa = intercalibration_response(store).to_numpy()
    assert len(kappa) == store.n_events
    spread = ReadoutConfig().constant_term
    assert abs(kappa.mean() - 1.0) < 0.2 * spread
    assert 0.4 * spread < kappa.std() < 1.0 * spread
    # a 100 GeV deposit: the oracle's relative width grows in quadrature by kappa's spread
    deposited = np.full(len(kappa), 100.0)
    edges = np.array([50.0, 150.0])
    plain = oracle_energy(deposited, deposited, edges).std() / 100.0
    seen = oracle_energy(deposited, deposited, edges, intercalibration=kappa).std() / 100.0
    assert seen == pytest.approx(np.hypot(plain, kappa.std()), rel=0.1)


def test_oracle_table_averages_draws_of_the_smearing():
    """Averaged over draws, the oracle's per-bin resolution is the analytic one of its smearing
    (photostatistics and the noise of 25 crystals on a fixed deposit) within 3 %; one draw is
    the table of oracle_energy itself; no draw at all is refused."""
    from fastreco.evaluate.resolution import binned_response
    from fastreco.evaluate.run import ORACLE_SEED, oracle_energy, oracle_table
    from fastreco.sim.config import ReadoutConfig

    readout = ReadoutConfig()
    e_true = np.repeat([20.0, 50.0], 400)
    edges = np.array([10.0, 30.0, 80.0])
    table = oracle_table(e_true, e_true, edges)
    analytic = np.hypot(readout.stochastic_term / np.sqrt([20.0, 50.0]),
                        5 * readout.noise / np.array([20.0, 50.0]))  # fmt: skip
    np.testing.assert_allclose(table["resolution"], analytic, rtol=0.03)
    assert table["n"].tolist() == [400, 400]
    assert table["n"].dtype.kind == "i"
    one = oracle_table(e_true, e_true, edges, draws=1)
    single = binned_response(oracle_energy(e_true, e_true, edges, seed=ORACLE_SEED), e_true, edges)
    pd.testing.assert_frame_equal(one, single, check_dtype=False)
    with pytest.raises(InputError, match="draws"):
        oracle_table(e_true, e_true, edges, draws=0)
