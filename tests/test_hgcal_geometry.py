"""The HGCAL-like endcap geometry: hexagonal cells, layers, materials, registry round trip."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fastreco.errors import InputError
from fastreco.geometry import DETECTORS, detector_from_attrs
from fastreco.geometry.hgcal import HgcalEndcap

GEOMETRY = HgcalEndcap()


@pytest.fixture(scope="module")
def all_cells():
    cells = np.arange(GEOMETRY.n_cells)
    return cells, GEOMETRY.cell_position(cells)


def test_layers_and_depth_follow_cms():
    s = GEOMETRY.summary()
    assert (s["n_em_layers"], s["n_had_layers"]) == (26, 21)
    assert s["em_x0"] == pytest.approx(27.7, abs=0.3)  # CE-E: 27.7 X0
    assert s["em_lambda"] == pytest.approx(1.5, abs=0.1)
    assert GEOMETRY.absorber_x0[:26].min() >= 0.75
    assert GEOMETRY.absorber_x0[:26].max() <= 1.35
    had = GEOMETRY.absorber_lambda[26:]
    assert had.min() >= 0.28
    assert had.max() <= 0.45
    assert 8.5 <= s["em_lambda"] + s["had_lambda"] <= 10.0
    z = GEOMETRY.layer_z
    assert z[0] == pytest.approx(320.0, abs=2.0)
    assert np.all(np.diff(z) > 0)
    assert 480 < z[-1] < 530
    # the silicon of a CE-E layer samples ~1 % of a MIP's loss, much less in the CE-H
    assert 0.008 < GEOMETRY.sampling_fraction[:26].mean() < 0.013
    assert GEOMETRY.sampling_fraction[26:].max() < 0.003
    assert 2.0 < s["em_moliere_radius"] < 3.5


def test_cell_count_and_areas(all_cells):
    cells, _ = all_cells
    assert 1e6 < GEOMETRY.n_cells < 6e6  # documented: ~4.7 million at the TDR granularity
    area = GEOMETRY.cell_area(cells)
    assert set(np.unique(area)) == {0.52, 1.18}
    region = GEOMETRY.cell_region(cells)
    assert np.all((area == 0.52) == (region == 0))
    # fine cells at small radius, coarse outside
    pos = GEOMETRY.cell_position(cells[::97])
    r = np.hypot(pos["x"], pos["y"])
    fine = GEOMETRY.cell_region(cells[::97]) == 0
    assert r[fine].max() <= GEOMETRY.fine_radius + 1e-6 <= r[~fine].min() + 1e-6
    offsets = GEOMETRY.layer_offsets
    assert offsets[0] == 0
    assert offsets[-1] == GEOMETRY.n_cells
    assert np.all(np.diff(offsets) > 0)


def test_neighbouring_centres_are_one_pitch_apart():
    rng = np.random.default_rng(1)
    cells = rng.integers(0, GEOMETRY.n_cells, 20_000)
    nb = GEOMETRY.neighbours(cells)
    ok = nb >= 0
    src = np.repeat(cells, 6)[ok.ravel()]
    dst = nb.ravel()[ok.ravel()]
    assert np.array_equal(GEOMETRY.cell_layer(src), GEOMETRY.cell_layer(dst))
    # hexagon centres (axial -> cartesian) of neighbours are one pitch apart
    side = np.sqrt(2 * GEOMETRY.cell_area(src) / (3 * np.sqrt(3)))
    _, _, q1, r1 = GEOMETRY.cell_axial(src)
    _, _, q2, r2 = GEOMETRY.cell_axial(dst)
    dx = np.sqrt(3) * side * ((q2 - q1) + (r2 - r1) / 2)
    dy = 1.5 * side * (r2 - r1)
    np.testing.assert_allclose(np.hypot(dx, dy), np.sqrt(3) * side, rtol=1e-9)
    assert ok.all(axis=1).mean() > 0.95  # only boundary cells miss neighbours


def test_cell_at_inverts_cell_position_for_every_cell(all_cells):
    cells, pos = all_cells
    back = GEOMETRY.cell_at(pos["layer"], pos["x"], pos["y"])
    np.testing.assert_array_equal(back, cells)


def test_points_inside_a_cell_map_to_it():
    rng = np.random.default_rng(2)
    cells = rng.integers(0, GEOMETRY.n_cells, 50_000)
    layer, region, q, r = GEOMETRY.cell_axial(cells)
    side = np.where(region == 0, *(np.sqrt(2 * a / (3 * np.sqrt(3))) for a in (0.52, 1.18)))
    cx = np.sqrt(3) * side * (q + r / 2)
    cy = 1.5 * side * r
    # a point within 0.8 inradius of the centre, in the instrumented annulus
    rad = 0.8 * np.sqrt(3) / 2 * side * np.sqrt(rng.uniform(0, 1, len(cells)))
    ang = rng.uniform(0, 2 * np.pi, len(cells))
    x, y = cx + rad * np.cos(ang), cy + rad * np.sin(ang)
    rho = np.hypot(x, y)
    lo = np.where(
        region == 0, GEOMETRY.r_min(layer), np.maximum(GEOMETRY.fine_radius, GEOMETRY.r_min(layer))
    )
    hi = np.where(
        region == 0, np.minimum(GEOMETRY.fine_radius, GEOMETRY.r_max(layer)), GEOMETRY.r_max(layer)
    )
    inside = (rho >= lo) & (rho < hi)
    np.testing.assert_array_equal(GEOMETRY.cell_at(layer, x, y)[inside], cells[inside])


def test_neighbours_are_symmetric():
    rng = np.random.default_rng(3)
    cells = np.unique(rng.integers(0, GEOMETRY.n_cells, 100_000))
    nb = GEOMETRY.neighbours(cells)
    ok = nb >= 0
    src = np.repeat(cells, 6)[ok.ravel()]
    dst = nb.ravel()[ok.ravel()]
    assert np.all((GEOMETRY.neighbours(dst) == src[:, None]).any(axis=1))
    assert not np.any(nb == cells[:, None])


def test_eta_acceptance(all_cells):
    _, pos = all_cells
    # every cell lies in 1.5 < eta < 3.0 (partial cells: their instrumented point)
    assert pos["eta"].min() > 1.5 - 1e-6
    assert pos["eta"].max() < 3.0 + 1e-6
    rng = np.random.default_rng(4)
    n = 400_000
    layer = rng.integers(0, GEOMETRY.n_layers, n)
    z = GEOMETRY.layer_z[layer]
    eta = rng.uniform(1.2, 3.3, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    r = z / np.sinh(eta)
    cell = GEOMETRY.cell_at(layer, r * np.cos(phi), r * np.sin(phi))
    inside = (eta > 1.5) & (eta < 3.0)
    assert np.all(cell[~inside] == -1)
    # the uninstrumented corner slivers at the region boundaries are tiny
    assert (cell[inside] < 0).mean() < 1e-3
    assert np.array_equal(
        GEOMETRY.cell_layer(cell[inside & (cell >= 0)]), layer[inside & (cell >= 0)]
    )


def test_invalid_cells_and_layers():
    assert GEOMETRY.cell_at(-1, 50.0, 0.0) == -1
    assert GEOMETRY.cell_at(GEOMETRY.n_layers, 50.0, 0.0) == -1
    assert GEOMETRY.cell_at(0, 0.0, 0.0) == -1  # beam hole
    with pytest.raises(InputError, match="cell"):
        GEOMETRY.cell_position([GEOMETRY.n_cells])
    assert np.all(GEOMETRY.neighbours([-5]) == -1)


def test_round_trip_through_the_registry():
    params = json.loads(json.dumps(GEOMETRY.to_dict()))
    rebuilt = detector_from_attrs("hgcal", params)
    assert rebuilt == GEOMETRY
    assert rebuilt.n_cells == GEOMETRY.n_cells
    assert DETECTORS.resolve("HGCAL") is HgcalEndcap


def test_custom_granularity_and_validation():
    coarse = HgcalEndcap(
        fine_cell_area=2.0, coarse_cell_area=4.0, em_lead=(0.25,) * 4, had_steel=(4.0,) * 3
    )
    assert coarse.n_layers == 7
    assert coarse.n_cells < 1e6
    cells = np.arange(coarse.n_cells)
    pos = coarse.cell_position(cells)
    np.testing.assert_array_equal(coarse.cell_at(pos["layer"], pos["x"], pos["y"]), cells)
    with pytest.raises(InputError, match="fine_cell_area"):
        HgcalEndcap(fine_cell_area=-1.0)
    with pytest.raises(InputError, match="eta_min"):
        HgcalEndcap(eta_min=3.2)
    assert math.isclose(coarse.cell_area(cells[:1])[0], 2.0)
