"""ROC, AUC, rejection and per-bin metrics against analytic values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from fastreco.evaluate import metrics as M


def gaussians(n: int, separation: float, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Signal N(separation, 1) and background N(0, 1), n events each: labels, scores."""
    rng = np.random.default_rng(seed)
    scores = np.concatenate([rng.normal(separation, 1.0, n), rng.normal(0.0, 1.0, n)])
    labels = np.concatenate([np.ones(n, np.int8), np.zeros(n, np.int8)])
    return labels, scores


def test_auc_perfect_separation() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([1, 0], 500)
    scores = np.concatenate([rng.uniform(2, 3, 500), rng.uniform(0, 1, 500)])
    curve = M.roc(labels, scores)
    assert curve.auc == 1.0
    # every working point keeps no background at all
    assert np.all(np.isinf(curve.rejection_at([0.5, 0.9, 0.99])))
    assert M.efficiency_at_rejection(curve)[0.99] == pytest.approx(1.0)
    # reversed scores: AUC 0
    assert M.auc_score(labels, -scores) == 0.0


def test_rejection_beyond_the_background_count_is_inf() -> None:
    # 10 background events, the best at 0.95; half of the signal ties with it. ROC vertices
    # (eps_b, eps_s): (0, 0) -> (0, 0.5) -> (0.1, 1.0) -> ...
    labels = np.repeat([1, 0], [100, 10])
    scores = np.concatenate([np.repeat([1.0, 0.95], 50), np.linspace(0.0, 0.95, 10)])
    curve = M.roc(labels, scores)
    # interpolation gives eps_b = 0.05 at 75 %: half an event, so not measured
    assert curve.background_efficiency_at(0.75) == pytest.approx(0.05)
    assert np.isinf(curve.rejection_at(0.75))
    assert np.isnan(curve.rejection_err_at(0.75))
    assert curve.rejection_at(1.0) == pytest.approx(10.0)
    assert np.isfinite(curve.rejection_err_at(1.0))


def test_auc_identical_distributions() -> None:
    labels, scores = gaussians(20_000, separation=0.0, seed=2)
    auc = M.auc_score(labels, scores)
    # sigma(AUC) ~ sqrt(1/(12 n)) * sqrt(2) ~ 0.003 for n = 20000
    assert auc == pytest.approx(0.5, abs=0.015)
    curve = M.roc(labels, scores)
    # eps_b = eps_s for a random classifier: rejection at 90 % ~ 1/0.9
    assert curve.rejection_at(0.9) == pytest.approx(1 / 0.9, rel=0.03)


@pytest.mark.parametrize("eff", [0.5, 0.75, 0.9, 0.99])
def test_rejection_two_gaussians_matches_analytic(eff: float) -> None:
    d = 2.0
    labels, scores = gaussians(200_000, separation=d, seed=3)
    curve = M.roc(labels, scores)
    threshold = d + norm.ppf(1 - eff)  # signal efficiency P(x > t | N(d, 1)) = eff
    eps_b = norm.sf(threshold)
    assert curve.background_efficiency_at(eff) == pytest.approx(eps_b, rel=0.03)
    assert M.rejection_at(curve, [eff])[eff] == pytest.approx(1 / eps_b, rel=0.03)
    # the binomial uncertainty is of the right size: sigma(eps_b)/eps_b ~ 1/sqrt(n eps_b)
    rel_err = curve.rejection_err_at(eff) / curve.rejection_at(eff)
    assert rel_err == pytest.approx(np.sqrt((1 - eps_b) / (eps_b * 200_000)), rel=0.05)


def test_auc_two_gaussians_analytic() -> None:
    d = 1.5
    labels, scores = gaussians(50_000, separation=d, seed=4)
    # AUC = P(S > B) = Phi(d / sqrt 2)
    assert M.auc_score(labels, scores) == pytest.approx(norm.cdf(d / np.sqrt(2)), abs=0.005)


def test_efficiency_at_rejection_seed_table() -> None:
    d = 2.0
    labels, scores = gaussians(200_000, separation=d, seed=5)
    curve = M.roc(labels, scores)
    table = M.efficiency_table({"gauss": curve})
    assert list(table.columns) == [
        "classifier",
        "auc",
        "eff@rej50",
        "eff@rej75",
        "eff@rej90",
        "eff@rej99",
    ]
    for r in (0.5, 0.75, 0.9, 0.99):
        threshold = norm.isf(1 - r)  # background passing = 1 - r
        expected = norm.sf(threshold - d)
        # at 99 % the threshold sits in the background tail (2000 events): ~1 % statistical error
        assert table[f"eff@rej{100 * r:g}"].iloc[0] == pytest.approx(expected, rel=0.03)


def test_rejection_table_tidy() -> None:
    labels, scores = gaussians(5_000, separation=1.0, seed=6)
    curves = {"a": M.roc(labels, scores), "b": M.roc(labels, 2 * scores)}
    table = M.rejection_table(curves)
    assert len(table) == 2 * len(M.DEFAULT_SIGNAL_EFFICIENCIES)
    # a monotonic transformation of the score does not change the ROC
    a = table[table.classifier == "a"]["rejection"].to_numpy()
    b = table[table.classifier == "b"]["rejection"].to_numpy()
    np.testing.assert_allclose(a, b)
    assert np.all(np.diff(a) < 0)  # rejection falls as the efficiency rises


def test_binned_performance_counts_and_nan_for_sparse_bins() -> None:
    rng = np.random.default_rng(7)
    n = 4000
    labels = rng.integers(0, 2, n)
    energy = rng.uniform(1, 50, n)
    energy[:5] = 75.0  # five events in the last bin: too few
    # the separation grows with energy
    scores = rng.normal(0, 1, n) + labels * energy / 10
    bins = (1, 10, 50, 100)
    table = M.binned_performance(
        labels, scores, energy, bins, variable_name="true_energy", classifier="toy", min_events=20
    )
    assert len(table) == 3 * len(M.DEFAULT_SIGNAL_EFFICIENCIES)
    per_bin = table.groupby("bin").first()
    assert per_bin["n_signal"].sum() + per_bin["n_background"].sum() == n
    assert per_bin.loc[2, "n_signal"] + per_bin.loc[2, "n_background"] == 5
    assert np.isnan(per_bin.loc[2, "auc"])
    assert table[table["bin"] == 2]["rejection"].isna().all()
    assert per_bin.loc[1, "auc"] > per_bin.loc[0, "auc"] > 0.5
    assert (table["classifier"] == "toy").all()
    assert (table["variable"] == "true_energy").all()

    wide = M.pivot_rejection(table)
    assert list(wide.columns[-4:]) == ["R@50", "R@75", "R@90", "R@99"]
    assert len(wide) == 3
    r90 = table[(table["bin"] == 1) & np.isclose(table["signal_efficiency"], 0.9)]["rejection"]
    assert wide["R@90"].iloc[1] == pytest.approx(float(r90.iloc[0]))


def test_pivot_rejection_several_classifiers() -> None:
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 2, 2000)
    x = rng.uniform(0, 1.5, 2000)
    tables = [
        M.binned_performance(
            labels, rng.normal(0, 1, 2000) + k * labels, x, (0, 0.5, 1.5), classifier=f"c{k}"
        )
        for k in (1, 2)
    ]
    wide = M.pivot_rejection(pd.concat(tables, ignore_index=True))
    assert list(wide["classifier"]) == ["c1", "c1", "c2", "c2"]
    assert (wide[wide.classifier == "c2"]["auc"].to_numpy() > 0.85).all()


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="both classes"):
        M.roc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="0 \\(background\\) or 1"):
        M.roc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="increasing"):
        M.binned_performance([0, 1], [0.1, 0.2], [1, 2], bins=(5, 1))


def test_format_rejection() -> None:
    assert M.format_rejection(None) == "–"
    assert M.format_rejection(float("inf")) == "∞"
    assert M.format_rejection(12.3456) == "12.3"
