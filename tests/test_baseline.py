"""The BDT baseline: model wrapper, training, metrics.json and the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fastreco.errors import InputError
from fastreco.models.bdt import BDTClassifier
from fastreco.train import baseline as B

TRUTH_AND_ENERGY = [
    "event",
    "s1",
    "s4",
    "s6",
    "s9",
    "s25",
    "m2",
    "e3x3",
    "e5x5",
    "e_cluster",
    "n_crystals",
    "seed_cell",
    "seed_eta",
    "seed_phi",
    "true_pdg",
    "true_energy",
    "true_eta",
    "true_phi",
    "converted",
]


def synthetic_reco(n: int = 1500, seed: int = 0, separation: float = 2.5) -> pd.DataFrame:
    """A reco-like table: photons (22) and pi0s (111), plus a few electrons outside the task.

    Only ``s1_s9`` separates the classes (by ``separation`` standard deviations); every other
    shower-shape feature is noise with the same distribution for both.
    """
    rng = np.random.default_rng(seed)
    pdg = rng.choice([22, 111, 11], size=n, p=[0.48, 0.48, 0.04])
    is_gamma = pdg == 22
    df = pd.DataFrame({c: rng.normal(size=n) for c in TRUTH_AND_ENERGY})
    df["event"] = np.arange(n)
    df["true_pdg"] = pdg
    df["true_energy"] = rng.uniform(1, 100, n)
    df["true_eta"] = rng.uniform(-1.479, 1.479, n)
    df["converted"] = (rng.uniform(size=n) < 0.2).astype(np.uint8)
    df["e5x5"] = df["true_energy"] * rng.normal(0.97, 0.02, n)
    for f in B.SHOWER_SHAPE_FEATURES:
        df[f] = rng.normal(size=n)
    df["s1_s9"] = rng.normal(0.8, 0.04, n) - np.where(is_gamma, 0.0, separation * 0.04)
    df.loc[3, "sigma_etaeta"] = np.inf  # a bad value must not break training
    df.loc[4, "r9"] = np.nan
    return df


def test_tasks_registry() -> None:
    task = B.TASKS.resolve("Gamma_vs_Pi0")
    assert task.signal_pdg == (22,)
    assert task.background_pdg == (111,)
    with pytest.raises(InputError, match="among choices"):
        B.TASKS.resolve("muons")


def test_features_are_the_reco_list() -> None:
    assert "s1_s9" in B.SHOWER_SHAPE_FEATURES
    assert len(set(B.SHOWER_SHAPE_FEATURES)) == len(B.SHOWER_SHAPE_FEATURES)


def test_bdt_save_load_roundtrip(tmp_path: Path) -> None:
    df = synthetic_reco(600, seed=1)
    df = df[df.true_pdg != 11]
    y = (df.true_pdg == 22).to_numpy(np.int8)
    bdt = BDTClassifier(["s1_s9", "r9"], max_iter=30).fit(df, y)
    path = bdt.save(tmp_path / "m.joblib")
    loaded = BDTClassifier.load(path)
    assert loaded.features == ["s1_s9", "r9"]
    assert loaded.config.max_iter == 30
    np.testing.assert_array_equal(loaded.predict_score(df), bdt.predict_score(df))
    # arrays in feature order give the same scores as the DataFrame
    np.testing.assert_allclose(
        bdt.predict_score(df[["s1_s9", "r9"]].to_numpy()), bdt.predict_score(df)
    )
    with pytest.raises(InputError, match="missing feature"):
        bdt.predict_score(df.drop(columns="r9"))
    with pytest.raises(RuntimeError, match="not trained"):
        BDTClassifier(["x"]).predict_score(np.zeros((1, 1)))


def test_train_baseline_writes_outputs(tmp_path: Path) -> None:
    reco = synthetic_reco()
    metrics = B.train_baseline(reco, tmp_path / "run", seed=3)

    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved == metrics
    for key in (
        "task",
        "features",
        "split",
        "bdt",
        "classifiers",
        "binned",
        "energy_bins",
        "eta_bins",
        "reference",
        "signal_efficiencies",
        "rejected_fractions",
        "versions",
        "outputs",
    ):
        assert key in saved, key
    assert saved["task"] == "gamma-vs-pi0"
    assert saved["split"]["method"] == "random"
    n_task = int(reco.true_pdg.isin([22, 111]).sum())
    n_test = sum(saved["split"]["n_test"].values())
    assert n_test + sum(saved["split"]["n_train"].values()) == n_task
    assert n_test == pytest.approx(0.3 * n_task, abs=2)

    bdt = saved["classifiers"]["BDT"]
    assert set(bdt) >= {
        "auc",
        "rejection",
        "rejection_err",
        "background_efficiency",
        "signal_efficiency_at_rejected_fraction",
        "score_column",
    }
    assert bdt["auc"] > 0.9
    assert set(bdt["rejection"]) == {"0.5", "0.75", "0.9", "0.99"}
    assert set(bdt["signal_efficiency_at_rejected_fraction"]) == {"0.5", "0.75", "0.9", "0.99"}
    # the one-variable reference sees the only separating variable: as good as the BDT
    ref = saved["classifiers"]["s1_s9 cut"]
    assert ref["auc"] > 0.9
    assert saved["reference"] == {"feature": "s1_s9", "sign": 1}
    assert bdt["auc"] == pytest.approx(ref["auc"], abs=0.03)
    # per-bin tables: 5 energy and 3 |eta| bins x 4 efficiencies x 2 classifiers
    assert len(saved["binned"]["true_energy"]) == 5 * 4 * 2
    assert len(saved["binned"]["abs_true_eta"]) == 3 * 4 * 2
    rec = saved["binned"]["true_energy"][0]
    assert {
        "classifier",
        "bin_low",
        "bin_high",
        "n_signal",
        "n_background",
        "auc",
        "rejection",
    } <= set(rec)

    out = tmp_path / "run"
    assert BDTClassifier.load(out / "bdt.joblib").features == list(B.SHOWER_SHAPE_FEATURES)
    test_df = pd.read_parquet(out / "test_predictions.parquet")
    assert {"label", "score_bdt", "score_reference"} <= set(test_df.columns)
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count('<img src="data:image/png;base64,') == 4  # ROC, 2x per-bin, shapes
    assert f"{bdt['auc']:.4f}" in html


def test_report_composes_resolution_and_displays(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    reco = synthetic_reco(900, seed=5)
    metrics = B.train_baseline(
        reco,
        tmp_path,
        seed=1,
        split="parity",
        write_report=False,
        bdt_config=B.BDTConfig(max_iter=40),
    )
    assert metrics["split"]["method"] == "parity"
    assert "report" not in metrics["outputs"]
    test_df = pd.read_parquet(tmp_path / "test_predictions.parquet")
    assert (test_df["event"] % 2 == 1).all()

    fig = Figure(figsize=(2, 2))
    fig.add_subplot().plot([0, 1])
    png = tmp_path / "display.png"
    fig.savefig(png)
    extra_called = []

    def extra(report: B.Report) -> None:
        extra_called.append(True)
        report.add_section("Extra").add_text("extra text")

    resolution = B.resolution_summary(reco, bins=(1, 5, 10, 20, 50, 100), min_events=10)
    report = B.build_report(
        metrics, test_df, resolution=resolution, event_displays=[png, fig], extra_sections=[extra]
    )
    path = report.write(tmp_path / "report.html")
    html = path.read_text(encoding="utf-8")
    assert extra_called
    assert "Energy resolution of e5x5" in html
    assert "Event displays" in html
    assert "extra text" in html
    # ROC, 2 per-bin, shapes, resolution, relative error, 2 displays
    assert html.count('<img src="data:image/png;base64,') == 8


def test_train_baseline_bad_inputs(tmp_path: Path) -> None:
    reco = synthetic_reco(200)
    with pytest.raises(InputError, match="lacks columns"):
        B.train_baseline(reco.drop(columns="s1_s9"), tmp_path)
    with pytest.raises(InputError, match="both classes"):
        B.train_baseline(reco[reco.true_pdg == 22], tmp_path)
    with pytest.raises(InputError, match="could not resolve"):
        B.train_baseline(reco, tmp_path, task="nope")
