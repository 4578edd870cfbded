"""Crystal windows around the seed: placement, phi wrap, eta padding, empty events, the store."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_batch
from fastreco.data.store import EventStore, write_shard
from fastreco.data.windows import (
    crystal_windows,
    iter_windows,
    road_sums,
    segment_argmax,
    window_offsets,
    windows_at,
)
from fastreco.errors import InputError
from fastreco.geometry.ecal_barrel import EcalBarrel

GEO = EcalBarrel()


def cell(ieta: int, iphi: int) -> int:
    return ieta * GEO.n_phi + iphi % GEO.n_phi


def reference_windows(batch, size):
    """Slow per-hit loop: the definition the fast code must reproduce."""
    out = np.zeros((batch.n_events, size, size), np.float32)
    seeds = np.full(batch.n_events, -1)
    half = size // 2
    for e in range(batch.n_events):
        lo, hi = batch.offsets[e], batch.offsets[e + 1]
        if hi == lo:
            continue
        cells = batch.hits["cell"][lo:hi]
        seed = int(cells[np.argmax(batch.hits["energy"][lo:hi])])
        seeds[e] = seed
        for c, v in zip(cells, batch.hits["energy"][lo:hi], strict=True):
            i = c // 360 - seed // 360 + half
            dphi = (c % 360 - seed % 360) % 360
            dphi = dphi - 360 if dphi >= 180 else dphi
            j = dphi + half
            if 0 <= i < size and 0 <= j < size:
                out[e, i, j] += v
    return out, seeds


def test_single_hit_is_centred():
    batch = make_batch([[(cell(85, 100), 5.0)]])
    win, seed = crystal_windows(batch, GEO, 25)
    assert win.shape == (1, 25, 25)
    assert win.dtype == np.float32
    assert seed.tolist() == [cell(85, 100)]
    assert win[0, 12, 12] == pytest.approx(5.0)
    assert win.sum() == pytest.approx(5.0)


def test_hits_land_at_their_offsets_and_outside_hits_are_dropped():
    batch = make_batch(
        [
            [
                (cell(85, 100), 5.0),
                (cell(86, 102), 1.0),  # +1 eta, +2 phi
                (cell(82, 88), 0.5),  # -3 eta, -12 phi: the window's phi edge
                (cell(85, 113), 0.25),  # +13 phi: outside a 25 window
                (cell(98, 100), 0.125),  # +13 eta: outside
            ]
        ]
    )
    win, _ = crystal_windows(batch, GEO, 25)
    assert win[0, 12, 12] == pytest.approx(5.0)
    assert win[0, 13, 14] == pytest.approx(1.0)
    assert win[0, 9, 0] == pytest.approx(0.5)
    assert win.sum() == pytest.approx(6.5)


def test_seed_is_the_highest_energy_hit_not_the_first():
    batch = make_batch([[(cell(40, 10), 1.0), (cell(40, 12), 3.0), (cell(41, 11), 2.0)]])
    win, seed = crystal_windows(batch, GEO, 5)
    assert seed.tolist() == [cell(40, 12)]
    expected = np.zeros((5, 5), np.float32)
    expected[2, 2], expected[2, 0], expected[3, 1] = 3.0, 1.0, 2.0
    np.testing.assert_array_equal(win[0], expected)


@pytest.mark.parametrize(
    ("seed_phi", "other_phi", "dphi"), [(359, 0, 1), (0, 359, -1), (0, 350, -10)]
)
def test_phi_wraps_around(seed_phi, other_phi, dphi):
    batch = make_batch([[(cell(60, seed_phi), 4.0), (cell(60, other_phi), 1.0)]])
    win, _ = crystal_windows(batch, GEO, 25)
    assert win[0, 12, 12] == pytest.approx(4.0)
    assert win[0, 12, 12 + dphi] == pytest.approx(1.0)
    assert win.sum() == pytest.approx(5.0)


def test_eta_edge_is_zero_padded():
    batch = make_batch([[(cell(0, 5), 4.0), (cell(1, 5), 1.0)], [(cell(169, 5), 2.0)]])
    win, seed = crystal_windows(batch, GEO, 7)
    assert seed.tolist() == [cell(0, 5), cell(169, 5)]
    assert np.all(win[0, :3] == 0)  # rows beyond ieta 0
    assert win[0, 3, 3] == pytest.approx(4.0)
    assert win[0, 4, 3] == pytest.approx(1.0)
    assert np.all(win[1, 4:] == 0)  # rows beyond ieta 169
    assert win[1, 3, 3] == pytest.approx(2.0)


def test_empty_events_give_zero_windows_and_seed_minus_one():
    batch = make_batch([[], [(cell(10, 10), 1.0)], []])
    win, seed = crystal_windows(batch, GEO, 5)
    assert seed.tolist() == [-1, cell(10, 10), -1]
    assert win[0].sum() == 0
    assert win[2].sum() == 0
    assert win[1, 2, 2] == pytest.approx(1.0)
    win, seed = crystal_windows(make_batch([[], []]), GEO, 5)
    assert win.shape == (2, 5, 5)
    assert seed.tolist() == [-1, -1]


def test_even_size_has_one_more_crystal_on_the_low_side():
    assert window_offsets(4).tolist() == [-2, -1, 0, 1]
    assert window_offsets(5).tolist() == [-2, -1, 0, 1, 2]
    batch = make_batch([[(cell(50, 50), 4.0), (cell(48, 48), 1.0), (cell(52, 52), 2.0)]])
    win, _ = crystal_windows(batch, GEO, 4)
    assert win[0, 2, 2] == pytest.approx(4.0)
    assert win[0, 0, 0] == pytest.approx(1.0)
    assert win.sum() == pytest.approx(5.0)  # the +2 crystal is outside


def test_field_selects_the_values_but_the_seed_stays_on_energy():
    batch = make_batch([[(cell(30, 30), 4.0), (cell(30, 31), 1.0)]])
    batch.hits["time"][:] = [7.0, -3.0]
    win, seed = crystal_windows(batch, GEO, 3, field="time")
    assert seed.tolist() == [cell(30, 30)]
    assert win[0, 1, 1] == pytest.approx(7.0)
    assert win[0, 1, 2] == pytest.approx(-3.0)
    with pytest.raises(InputError, match="field"):
        crystal_windows(batch, GEO, 3, field="nope")


def test_truth_centre_uses_the_impact_point():
    batch = make_batch([[(cell(30, 30), 4.0)]])
    batch.truth["impact_eta"][:] = GEO.eta_center(31)
    batch.truth["impact_phi"][:] = GEO.phi_center(29)
    win, centre = crystal_windows(batch, GEO, 3, center="truth")
    assert centre.tolist() == [cell(31, 29)]
    assert win[0, 0, 2] == pytest.approx(4.0)


def test_matches_a_per_hit_loop_on_random_events():
    rng = np.random.default_rng(7)
    events = []
    for _ in range(60):
        n = int(rng.integers(0, 40))
        ieta = rng.integers(0, GEO.n_eta, size=n)
        iphi = rng.integers(0, GEO.n_phi, size=n)
        cells = np.unique(ieta * GEO.n_phi + iphi)
        events.append(
            [
                (int(c), float(v))
                for c, v in zip(cells, rng.exponential(1.0, len(cells)), strict=True)
            ]
        )
    batch = make_batch(events)
    for size in (5, 25, 360):
        win, seed = crystal_windows(batch, GEO, size)
        ref_win, ref_seed = reference_windows(batch, size)
        np.testing.assert_array_equal(seed, ref_seed)
        np.testing.assert_allclose(win, ref_win, rtol=0, atol=1e-6)


def test_segment_argmax_ties_go_to_the_first():
    assert segment_argmax([0, 3, 3, 5], np.array([1.0, 2.0, 2.0, -1.0, -2.0])).tolist() == [
        1,
        -1,
        3,
    ]


def test_windows_at_checks_its_centre_shape():
    batch = make_batch([[(cell(30, 30), 4.0)]])
    with pytest.raises(ValueError, match="centre"):
        windows_at(batch, GEO, [1, 2], 5)


def test_road_sums_take_the_window_rows_beyond_the_window_within_the_road():
    """A 5 x 5 window at (60, 358) with a road of +/- 6 crystals: hits in its ieta rows count
    beyond +/- 2 crystals in iphi (across the phi wrap) up to +/- 6, above the threshold only;
    hits inside the window, in other rows or beyond the road do not."""
    seed = cell(60, 358)
    hits = [
        (seed, 5.0),
        (cell(60, 357), 1.0),  # inside the window
        (cell(61, 361), 0.5),  # dphi +3 across the wrap: counts
        (cell(58, 352), 0.25),  # dphi -6, lowest row of the window: counts
        (cell(62, 351), 2.0),  # dphi -7: beyond the road
        (cell(63, 2), 3.0),  # three rows up: not the window's rows
        (cell(60, 4), 0.05),  # dphi +6 but below the threshold
    ]
    batch = make_batch([hits, [], [(cell(20, 20), 1.0)]])
    _, centre = crystal_windows(batch, GEO, 5)
    got = road_sums(batch, GEO, centre, size=5, half_phi=6, threshold=0.1)
    np.testing.assert_allclose(got, [0.75, 0.0, 0.0])
    with pytest.raises(InputError, match="half_phi"):
        road_sums(batch, GEO, centre, size=25, half_phi=5, threshold=0.1)


def test_iter_windows_reads_a_store(tmp_path):
    events = [[(cell(20 + i, 3 * i), 1.0 + i), (cell(20 + i, 3 * i + 1), 0.5)] for i in range(7)]
    attrs = {
        "detector": "ecal",
        "detector_params": GEO.to_dict(),
        "generator": {},
        "seed": 0,
        "shard_index": 0,
    }
    write_shard(tmp_path / "shard-00000.h5", make_batch(events[:4]), attrs)
    write_shard(tmp_path / "shard-00001.h5", make_batch(events[4:]), {**attrs, "shard_index": 1})
    got = list(iter_windows(EventStore(tmp_path), batch_size=3, size=5))
    assert [b.n_events for _, _, b in got] == [3, 1, 3]
    seeds = np.concatenate([s for _, s, _ in got])
    assert seeds.tolist() == [cell(20 + i, 3 * i) for i in range(7)]
    win = np.concatenate([w for w, _, _ in got])
    np.testing.assert_allclose(win[:, 2, 2], 1.0 + np.arange(7))
    np.testing.assert_allclose(win[:, 2, 3], 0.5)
