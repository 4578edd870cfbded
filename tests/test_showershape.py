"""Shower-shape variables against hand computations, and the per-event reconstruction table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from conftest import make_batch
from fastreco.data.store import write_shard
from fastreco.data.windows import crystal_windows
from fastreco.geometry.ecal_barrel import EcalBarrel
from fastreco.reco.pipeline import TRUTH_OUTPUT_COLUMNS, reconstruct, reconstruct_batch
from fastreco.reco.showershape import (
    RECO_COLUMNS,
    SHOWER_SHAPE_FEATURES,
    W0,
    safe_ratio,
    shower_shapes,
)

GEO = EcalBarrel()
DETA, DPHI = GEO.deta, GEO.dphi


def cell(ieta: int, iphi: int) -> int:
    return ieta * GEO.n_phi + iphi % GEO.n_phi


def pattern(grid, ieta=85, iphi=100):
    """Hits from a dict {(d_ieta, d_iphi): energy} around (ieta, iphi)."""
    return [(cell(ieta + di, iphi + dj), e) for (di, dj), e in grid.items()]


def shapes_of(events, **kwargs):
    batch = make_batch(events)
    win, seed = crystal_windows(batch, GEO, 5)
    return shower_shapes(win, seed, GEO, **kwargs)


def test_feature_lists():
    assert len(set(RECO_COLUMNS)) == len(RECO_COLUMNS) == 26
    assert set(SHOWER_SHAPE_FEATURES) <= set(RECO_COLUMNS)
    assert "seed_cell" not in SHOWER_SHAPE_FEATURES
    assert W0 == 4.7


def test_safe_ratio_is_zero_for_empty_or_negative_denominators():
    assert safe_ratio([1.0, 1.0, 1.0], [2.0, 0.0, -1.0]).tolist() == [0.5, 0.0, 0.0]


def test_single_crystal():
    s = shapes_of([[(cell(85, 100), 7.0)]], e_cluster=np.array([7.0]))
    for name in ("s1", "s4", "s6", "s9", "s25", "e3x3", "e5x5"):
        assert s[name][0] == pytest.approx(7.0), name
    assert s["m2"][0] == 0.0
    assert s["s1_s9"][0] == pytest.approx(1.0)
    assert s["r9"][0] == pytest.approx(1.0)
    assert s["s9ms1_s25ms1"][0] == 0.0  # 0 / 0 -> 0
    assert s["s4_s25"][0] == pytest.approx(1.0)
    assert s["s6_ratio"][0] == pytest.approx(1.0)  # the opposite 6-block also holds the seed
    assert s["m2s1_s9"][0] == pytest.approx(1.0)
    assert s["m2s1_s4"][0] == pytest.approx(1.0)
    for name in ("xcog", "ycog", "sigma_etaeta", "sigma_phiphi", "lambda_ratio"):
        assert s[name][0] == 0.0, name
    assert s["seed_cell"][0] == cell(85, 100)
    assert s["seed_eta"][0] == pytest.approx(GEO.eta_center(85))
    assert s["seed_phi"][0] == pytest.approx(GEO.phi_center(100))


def symmetric_3x3():
    grid = {(0, 0): 10.0}
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if (di, dj) != (0, 0):
                grid[(di, dj)] = 1.0 if di and dj else 2.0
    return grid


def test_symmetric_3x3():
    s = shapes_of([pattern(symmetric_3x3())])
    assert s["s9"][0] == pytest.approx(22.0)
    assert s["s25"][0] == pytest.approx(22.0)
    assert s["s4"][0] == pytest.approx(15.0)
    assert s["s6"][0] == pytest.approx(18.0)
    assert s["s6_ratio"][0] == pytest.approx(1.0)
    assert s["m2"][0] == pytest.approx(2.0)
    assert s["s1_s9"][0] == pytest.approx(10 / 22)
    assert s["m2s1_s4"][0] == pytest.approx(12 / 15)
    assert s["xcog"][0] == pytest.approx(0.0, abs=1e-12)
    assert s["ycog"][0] == pytest.approx(0.0, abs=1e-12)
    # log weights: w = 4.7 + ln(E / 22) for E = 10, 2 (edges), 1 (corners)
    wc, we, wk = (W0 + math.log(e / 22.0) for e in (10.0, 2.0, 1.0))
    sw = wc + 4 * we + 4 * wk
    var_eta = (2 * we + 4 * wk) * DETA**2 / sw
    var_phi = (2 * we + 4 * wk) * DPHI**2 / sw
    assert s["sigma_etaeta"][0] == pytest.approx(var_eta / 0.0004, rel=1e-9)
    assert s["sigma_phiphi"][0] == pytest.approx(var_phi / 0.001, rel=1e-9)
    # round in crystal units: lambda_-/lambda_+ is the crystals' (deta / dphi)^2 = 0.994
    assert s["lambda_ratio"][0] == pytest.approx((DETA / DPHI) ** 2, rel=1e-9)


def test_w0_changes_the_weights():
    low = shapes_of([pattern(symmetric_3x3())], w0=2.5)
    # with w0 = 2.5 the 1 GeV corners (ln(1/22) = -3.09) get no weight
    wc, we = 2.5 + math.log(10 / 22), 2.5 + math.log(2 / 22)
    assert low["sigma_etaeta"][0] == pytest.approx(2 * we * DETA**2 / (wc + 4 * we) / 0.0004)


def test_s4_picks_the_largest_2x2_containing_the_seed():
    grid = {(0, 0): 10.0, (0, 1): 3.0, (1, 0): 2.0, (1, 1): 1.0, (-1, -1): 4.0, (2, 2): 9.0}
    s = shapes_of([pattern(grid)])
    # blocks: (+,+) 10+3+2+1 = 16, (-,-) 10+4 = 14, (-,+) 10+3 = 13, (+,-) 10+2 = 12;
    # the 9 GeV crystal at (+2, +2) is outside the 3x3
    assert s["s4"][0] == pytest.approx(16.0)
    assert s["m2"][0] == pytest.approx(4.0)  # highest of the 8 neighbours, not the 9 outside
    assert s["m2s1_s4"][0] == pytest.approx(14 / 16)
    assert s["m2s1_s9"][0] == pytest.approx(14 / 20)
    assert s["s4_s25"][0] == pytest.approx(16 / 29)
    assert s["s9ms1_s25ms1"][0] == pytest.approx(10 / 19)


def test_s6_and_its_ratio():
    grid = {(0, 0): 10.0, (1, 0): 6.0, (-1, 0): 2.0, (0, -1): 3.0, (0, 1): 3.0}
    s = shapes_of([pattern(grid)])
    # outer lines: eta-1 row 2, eta+1 row 6, phi columns 3 and 3; S6 drops the eta-1 row
    assert s["s6"][0] == pytest.approx(22.0)
    assert s["s6_s9"][0] == pytest.approx(22 / 24)
    assert s["s6_ratio"][0] == pytest.approx(18 / 22)  # opposite block drops the eta+1 row


def test_centre_of_gravity_in_crystal_units():
    grid = {(0, 0): 6.0, (2, 0): 3.0, (0, -1): 2.0}
    s = shapes_of([pattern(grid)])
    assert s["xcog"][0] == pytest.approx(6.0 / 11.0)
    assert s["ycog"][0] == pytest.approx(2.0 / 11.0)


def test_two_crystals_along_phi_are_flat():
    s = shapes_of([pattern({(0, 0): 5.0, (0, 1): 5.0})])
    assert s["sigma_etaeta"][0] == pytest.approx(0.0, abs=1e-12)
    assert s["sigma_phiphi"][0] == pytest.approx((DPHI / 2) ** 2 / 0.001)
    assert s["lambda_ratio"][0] == pytest.approx(0.0, abs=1e-12)
    assert s["ycog"][0] == pytest.approx(0.5)


def test_phi_wrap_gives_the_same_shapes():
    grid = {(0, 0): 9.0, (0, -1): 2.0, (1, -2): 1.0, (-1, 1): 0.5, (2, -1): 0.3}
    wrapped = shapes_of([pattern(grid, ieta=85, iphi=0)])
    plain = shapes_of([pattern(grid, ieta=85, iphi=100)])
    for name in RECO_COLUMNS:
        if name in wrapped and not name.startswith("seed_"):
            assert wrapped[name][0] == pytest.approx(plain[name][0], rel=1e-9, abs=1e-12), name


def test_eta_edge_crystals_are_missing_not_nan():
    grid = {(0, 0): 9.0, (1, 0): 2.0, (1, 1): 1.0}
    s = shapes_of([pattern(grid, ieta=0, iphi=5)])
    assert s["s25"][0] == pytest.approx(12.0)
    assert s["xcog"][0] == pytest.approx(3.0 / 12.0)
    assert all(np.isfinite(v).all() for v in s.values())


def test_empty_event_is_all_zero():
    s = shapes_of([[], [(cell(3, 3), 1.0)]], e_cluster=np.array([0.0, 1.0]))
    assert s["seed_cell"].tolist() == [-1, cell(3, 3)]
    for name, values in s.items():
        if name != "seed_cell":
            assert values[0] == 0.0, name


# --- the per-event table ---------------------------------------------------------------------
def test_reconstruct_batch_columns_and_truth():
    photon = pattern(symmetric_3x3(), ieta=85, iphi=100)
    eta1, eta2, phi1, phi2 = 0.10, 0.12, 1.0, 1.03
    batch = make_batch(
        [photon, [(cell(40, 40), 3.0), (cell(40, 41), 2.0)], []],
        pdg=[22, 111, 22],
        energy=[22.5, 5.0, 1.0],
        daughters=[[], [(22, 3.0, eta1, phi1), (22, 2.0, eta2, phi2)], []],
    )
    df = reconstruct_batch(batch, GEO)
    assert list(df.columns) == [*RECO_COLUMNS, *TRUTH_OUTPUT_COLUMNS]
    assert len(df) == 3
    assert df["true_pdg"].tolist() == [22, 111, 22]
    assert df["true_energy"].tolist() == pytest.approx([22.5, 5.0, 1.0])
    assert df["converted"].dtype == np.uint8
    assert df["s9"][0] == pytest.approx(22.0)
    assert df["e_cluster"][0] == pytest.approx(22.0)
    assert df["n_crystals"].tolist() == [9, 2, 0]
    assert df["r9"].tolist() == pytest.approx([1.0, 1.0, 0.0])
    assert df["seed_cell"].tolist() == [cell(85, 100), cell(40, 40), -1]
    # opening angle of the pi0's photons from their directions
    u = [
        np.array([math.cos(p) / math.cosh(e), math.sin(p) / math.cosh(e), math.tanh(e)])
        for e, p in ((eta1, phi1), (eta2, phi2))
    ]
    expected = math.acos(float(np.dot(u[0], u[1])))
    assert df["opening_angle"][1] == pytest.approx(expected, rel=1e-4)
    assert np.isnan(df["opening_angle"][0])
    assert not df[list(RECO_COLUMNS)].isna().any().any()


def test_reconstruct_writes_parquet_with_a_global_event_index(tmp_path):
    attrs = {
        "detector": "ecal",
        "detector_params": GEO.to_dict(),
        "generator": {},
        "seed": 0,
        "shard_index": 0,
    }
    events = [[(cell(30 + i, 7 * i), 2.0 + i), (cell(30 + i, 7 * i + 1), 0.5)] for i in range(5)]
    store = tmp_path / "store"
    write_shard(store / "shard-00000.h5", make_batch(events[:3]), attrs)
    write_shard(store / "shard-00001.h5", make_batch(events[3:]), {**attrs, "shard_index": 1})
    out = tmp_path / "reco" / "reco.parquet"
    df = reconstruct(store, out, batch_size=2, progress=False)
    assert df["event"].tolist() == [0, 1, 2, 3, 4]
    assert df["s1"].tolist() == pytest.approx([2.0, 3.0, 4.0, 5.0, 6.0])
    assert df["e_cluster"].tolist() == pytest.approx([2.5, 3.5, 4.5, 5.5, 6.5])
    back = pd.read_parquet(out)
    pd.testing.assert_frame_equal(back, df)
    assert [p.name for p in out.parent.iterdir()] == ["reco.parquet"]
