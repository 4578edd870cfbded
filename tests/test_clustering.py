"""Seeds, local maxima, matrix sums and connected clusters on hand-made events."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_batch
from fastreco.data.windows import crystal_windows
from fastreco.geometry.ecal_barrel import EcalBarrel
from fastreco.reco.clustering import (
    CLUSTER_THRESHOLD,
    central_sum,
    connected_clusters,
    find_seeds,
    local_maxima,
    n_local_maxima,
    seed_cells,
)

GEO = EcalBarrel()


def cell(ieta: int, iphi: int) -> int:
    return ieta * GEO.n_phi + iphi % GEO.n_phi


def test_cluster_threshold_is_two_sigma_of_the_noise():
    assert pytest.approx(0.08) == CLUSTER_THRESHOLD


def test_seeds_are_the_highest_hit_and_minus_one_when_empty():
    batch = make_batch([[(cell(5, 5), 1.0), (cell(5, 6), 9.0)], [], [(cell(7, 7), 0.5)]])
    assert find_seeds(batch).tolist() == [1, -1, 2]
    assert seed_cells(batch).tolist() == [cell(5, 6), -1, cell(7, 7)]
    assert seed_cells(make_batch([[], []])).tolist() == [-1, -1]


def test_two_separated_blobs_have_two_local_maxima():
    blob_a = [(cell(50, 100), 10.0), (cell(50, 101), 3.0), (cell(51, 100), 2.0)]
    blob_b = [(cell(50, 110), 6.0), (cell(49, 110), 1.5), (cell(50, 109), 1.2)]
    noise = [(cell(80, 200), 0.5)]  # a maximum, but below the seed threshold
    batch = make_batch([blob_a + blob_b + noise])
    mask = local_maxima(batch, GEO, threshold=1.0)
    maxima = sorted(batch.hits["cell"][mask].tolist())
    assert maxima == [cell(50, 100), cell(50, 110)]
    assert n_local_maxima(batch, GEO, threshold=1.0).tolist() == [2]
    assert n_local_maxima(batch, GEO, threshold=0.1).tolist() == [3]
    # the second blob's energy is not part of the first blob's connected cluster
    energy, n, member = connected_clusters(batch, GEO)
    assert energy[0] == pytest.approx(15.0)
    assert n.tolist() == [3]
    assert sorted(batch.hits["cell"][member].tolist()) == sorted(c for c, _ in blob_a)


def test_local_maximum_sees_across_the_phi_wrap_and_breaks_ties_once():
    batch = make_batch(
        [
            [(cell(30, 0), 5.0), (cell(31, 359), 6.0)],  # diagonal neighbour across phi = 0
            [(cell(30, 10), 4.0), (cell(30, 11), 4.0)],  # plateau: only the lower cell id
        ]
    )
    mask = local_maxima(batch, GEO, threshold=1.0)
    assert mask.tolist() == [False, True, True, False]


def test_connected_cluster_follows_chains_over_threshold_only():
    hits = [
        (cell(60, 60), 10.0),  # seed
        (cell(60, 61), 1.0),
        (cell(61, 62), 0.5),  # diagonal step from the previous one
        (cell(61, 63), 0.09),  # just above 0.08
        (cell(61, 64), 0.07),  # below: not included, and stops the chain
        (cell(61, 65), 2.0),  # connected only through the 0.07 crystal
        (cell(59, 59), -0.3),  # negative noise next to the seed: never included
    ]
    energy, n, member = connected_clusters(make_batch([hits]), GEO)
    assert energy[0] == pytest.approx(10.0 + 1.0 + 0.5 + 0.09)
    assert n.tolist() == [4]
    assert member.tolist() == [True, True, True, True, False, False, False]
    energy, n, _ = connected_clusters(make_batch([hits]), GEO, threshold=0.05)
    assert energy[0] == pytest.approx(10.0 + 1.0 + 0.5 + 0.09 + 0.07 + 2.0)
    assert n.tolist() == [6]


def test_connected_cluster_wraps_in_phi_and_ignores_hit_order():
    hits = [(cell(20, 1), 0.5), (cell(20, 359), 1.0), (cell(20, 0), 8.0), (cell(21, 358), 0.2)]
    energy, n, _ = connected_clusters(make_batch([hits, []]), GEO)
    assert energy.tolist() == pytest.approx([9.7, 0.0])
    assert n.tolist() == [4, 0]


def test_seed_below_threshold_is_a_one_crystal_cluster():
    energy, n, _ = connected_clusters(make_batch([[(cell(9, 9), 0.05), (cell(9, 10), 0.04)]]), GEO)
    assert energy[0] == pytest.approx(0.05)
    assert n.tolist() == [1]


def test_central_sums_are_the_3x3_and_5x5():
    hits = [(cell(40, 40), 5.0), (cell(41, 41), 1.0), (cell(42, 40), 0.5), (cell(40, 43), 7.0)]
    win, _ = crystal_windows(make_batch([hits]), GEO, 7)
    # the 7.0 GeV crystal is the seed; offsets from it: (0,-3) 5.0, (1,-2) 1.0, (2,-3) 0.5
    assert central_sum(win, 1)[0] == pytest.approx(7.0)
    assert central_sum(win, 3)[0] == pytest.approx(7.0)
    assert central_sum(win, 5)[0] == pytest.approx(8.0)
    assert central_sum(win, 7)[0] == pytest.approx(13.5)
    with pytest.raises(ValueError, match="odd"):
        central_sum(win, 4)


def test_matrix_sums_do_not_depend_on_the_window_edge():
    rng = np.random.default_rng(3)
    cells = cell(84, 180) + np.array([-361, -360, -359, -1, 0, 1, 359, 360, 361, 2, 722])
    values = rng.uniform(0.1, 1.0, len(cells))
    values[4] = 5.0
    win, _ = crystal_windows(
        make_batch([list(zip(cells.tolist(), values.tolist(), strict=True))]), GEO, 5
    )
    assert central_sum(win, 3)[0] == pytest.approx(values[:9].sum(), rel=1e-6)
    assert central_sum(win, 5)[0] == pytest.approx(values.sum(), rel=1e-6)
