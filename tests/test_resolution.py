"""Effective sigma, Gaussian-core fits and the a/sqrt(E) (+) b/E (+) c resolution fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from fastreco.evaluate import resolution as R

# generating values of the resolution tests: a [GeV^1/2], b [GeV], c
A, B, C = 0.05, 0.30, 0.01
ENERGIES = np.array([1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0])


def test_effective_sigma_of_gaussian() -> None:
    rng = np.random.default_rng(10)
    x = rng.normal(3.0, 0.7, 100_000)
    assert R.effective_sigma(x) == pytest.approx(0.7, rel=0.03)
    lo, hi = R.effective_interval(x)
    assert 0.5 * (lo + hi) == pytest.approx(3.0, abs=0.02)


def test_effective_sigma_small_and_robust() -> None:
    # 68.3 % of 10 values = 7 values; smallest interval holding 7 of 0..9 has width 6
    assert R.effective_sigma(np.arange(10.0)) == pytest.approx(3.0)
    rng = np.random.default_rng(11)
    core = rng.normal(1.0, 0.02, 90_000)
    tail = rng.uniform(0.3, 1.0, 10_000)  # a low-side tail, as leakage gives
    x = np.concatenate([core, tail])
    assert R.effective_sigma(x) < 1.5 * 0.02 < np.std(x)
    with pytest.raises(ValueError, match="two finite"):
        R.effective_sigma([np.nan, 1.0])


def test_gaussian_core_fit_ignores_tail() -> None:
    rng = np.random.default_rng(12)
    core = rng.normal(0.98, 0.015, 40_000)
    tail = 0.98 - rng.exponential(0.08, 8_000)
    fit = R.gaussian_core_fit(np.concatenate([core, tail]))
    assert fit.converged
    assert fit.method == "histogram"
    assert fit.mean == pytest.approx(0.98, abs=0.002)
    assert fit.sigma == pytest.approx(0.015, rel=0.05)
    assert 0 < fit.sigma_err < 0.001


def test_gaussian_core_fit_few_events_uses_moments() -> None:
    rng = np.random.default_rng(13)
    fit = R.gaussian_core_fit(rng.normal(5.0, 1.0, 40))
    assert fit.method == "moments"
    assert fit.mean == pytest.approx(5.0, abs=0.5)
    assert fit.sigma == pytest.approx(1.0, rel=0.4)


def smeared_gun(n_per_energy: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A particle gun at ENERGIES, Gaussian-smeared with the (A, B, C) resolution."""
    rng = np.random.default_rng(seed)
    e_true = np.repeat(ENERGIES, n_per_energy)
    sigma = R.resolution_model(e_true, A, B, C) * e_true
    return e_true + rng.normal(0.0, sigma), e_true


@pytest.mark.parametrize("estimator", ["core", "eff"])
def test_resolution_fit_recovers_parameters(estimator: str) -> None:
    e_reco, e_true = smeared_gun(20_000, seed=14)
    bins = R.energy_bins_from_data(e_true)
    assert len(bins) == len(ENERGIES) + 1
    table = R.binned_response(e_reco, e_true, bins)
    assert list(table["n"]) == [20_000] * len(ENERGIES)
    np.testing.assert_allclose(table["e_mean"], ENERGIES)
    np.testing.assert_allclose(table["core_mean"], 1.0, atol=0.005)
    np.testing.assert_allclose(
        table["resolution"], R.resolution_model(ENERGIES, A, B, C), rtol=0.05
    )

    fit = R.fit_resolution_table(table, estimator=estimator)  # type: ignore[arg-type]
    assert fit.a == pytest.approx(A, rel=0.10)
    assert fit.b == pytest.approx(B, rel=0.10)
    assert fit.c == pytest.approx(C, rel=0.10)
    for value, err in ((fit.a, fit.a_err), (fit.b, fit.b_err), (fit.c, fit.c_err)):
        assert 0 < err < 0.1 * value
    assert fit.ndf == len(ENERGIES) - 3
    assert fit.chi2 / fit.ndf < 5
    assert fit(10.0) == pytest.approx(R.resolution_model(10.0, A, B, C), rel=0.03)
    assert set(fit.to_dict()) >= {"a", "b", "c", "a_err", "b_err", "c_err", "chi2", "ndf"}
    assert "%/√E" in str(fit)


def test_binned_response_sparse_bin_is_nan() -> None:
    e_reco, e_true = smeared_gun(200, seed=15)
    table = R.binned_response(e_reco, e_true, [0.5, 1.5, 3, 1000], min_events=300)
    assert list(table["n"]) == [200, 200, 1400]
    assert table["resolution"].isna().tolist() == [True, True, False]


def test_fit_needs_three_points() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        R.fit_resolution([1.0, 2.0], [0.1, 0.07], [0.01, 0.01])


def test_energy_bins_continuous() -> None:
    rng = np.random.default_rng(16)
    bins = R.energy_bins_from_data(rng.uniform(1, 100, 1000), n_bins=5)
    assert len(bins) == 6
    assert np.all(np.diff(np.log(bins)) > 0)


def test_resolution_summary_and_plot() -> None:
    from fastreco.train.baseline import resolution_summary

    e_reco, e_true = smeared_gun(3_000, seed=17)
    n = len(e_true)
    rng = np.random.default_rng(18)
    converted = (rng.uniform(size=n) < 0.2).astype(np.uint8)
    e5x5 = np.where(converted == 1, 0.7 * e_reco, e_reco)  # converted photons lose energy
    df = pd.DataFrame({"true_pdg": 22, "true_energy": e_true, "e5x5": e5x5, "converted": converted})
    summary = resolution_summary(df, pdg=22, estimator="e5x5")
    assert summary.n_events == int((converted == 0).sum())
    assert summary.fit is not None
    assert summary.fit.a == pytest.approx(A, rel=0.15)
    np.testing.assert_allclose(summary.table["core_mean"], 1.0, atol=0.01)
    assert isinstance(summary.figure, Figure)
    assert isinstance(summary.error_figure, Figure)
    assert summary.reference is not None  # the readout terms of a 5x5 sum
    assert summary.to_dict()["fit"]["a"] == pytest.approx(summary.fit.a)


def test_row_wise_effective_sigma_equals_the_single_sample_one():
    from fastreco.evaluate.resolution import effective_sigma, effective_sigma_rows

    rows = np.random.default_rng(4).standard_normal((5, 301)) * np.arange(1, 6)[:, None]
    want = [effective_sigma(r) for r in rows]
    np.testing.assert_allclose(effective_sigma_rows(rows), want, rtol=1e-12)
