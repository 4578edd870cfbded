"""Hexagonal cells onto a regular grid: exact overlap areas, conserved energy, windows, the grid
dataset and its converter."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from fastreco.data.grid_dataset import GridDataset, read_grid
from fastreco.data.hexgrid import (
    HEX_AREA_UNIT,
    HEX_VERTICES,
    GridSpec,
    HexGrid,
    _weights_cached,
    hexagon_box_area,
    hexagon_centres,
)
from fastreco.data.hgcal_targets import single_particle_targets
from fastreco.errors import InputError
from fastreco.geometry.hgcal import HgcalEndcap
from fastreco.sim.hgcal import HgcalSimConfig, simulate_hgcal_batch
from fastreco.sim.hgcal_engine import simulate_hgcal

GEOMETRY = HgcalEndcap()
#: a few layers of the real endcap keep the weight computation to seconds
LAYERS = (0, 6, 12, 20, 30, 40)
REL_TOL = 1e-6


@pytest.fixture(scope="module")
def grid() -> HexGrid:
    return HexGrid(GEOMETRY, GridSpec(pitch=1.0, window=24, layers=LAYERS))


@pytest.fixture(scope="module")
def events():
    cfg = HgcalSimConfig(
        particles=("e-", "pi+"), n_particles=1, energy="log:10:300", eta_min=1.8, eta_max=2.6
    )
    return simulate_hgcal_batch(cfg, 60, 5, GEOMETRY)


# --- exact overlap areas -------------------------------------------------------------------------
def _right_of(c: float, s: float) -> float:
    """Area of the pointy-top hexagon (circumradius s, centre 0) right of the line x = c >= 0:
    its height at x is 2 s - 2 |x| / sqrt(3)."""
    a = math.sqrt(3.0) * s / 2
    return 2 * s * (a - c) - (a * a - c * c) / math.sqrt(3.0)


def test_hexagon_inside_a_box_has_its_full_area():
    s = 0.3
    area = hexagon_box_area(0.5, 0.5, s, 0.0, 0.0)
    assert area == pytest.approx(HEX_AREA_UNIT * s * s, rel=1e-14)


@pytest.mark.parametrize("c", [0.0, 0.1, 0.25, 0.4])
def test_hexagon_straddling_two_pixels_splits_by_the_analytic_area(c):
    s = 0.5  # centred at (1 - c, 0.5): the pixel edge x = 1 cuts it c right of its centre
    left = hexagon_box_area(1.0 - c, 0.5, s, 0.0, 0.0)
    right = hexagon_box_area(1.0 - c, 0.5, s, 1.0, 0.0)
    assert right == pytest.approx(_right_of(c, s), rel=1e-12)
    assert left + right == pytest.approx(HEX_AREA_UNIT * s * s, rel=1e-14)
    if c == 0.0:
        assert left == pytest.approx(right, rel=1e-14)


def test_overlap_areas_agree_with_shapely():
    shapely = pytest.importorskip("shapely")
    rng = np.random.default_rng(1)
    n = 3000
    cx, cy = rng.uniform(-1, 2, n), rng.uniform(-1, 2, n)
    r = rng.uniform(0.1, 1.5, n)
    x0, y0 = rng.uniform(-0.5, 0.5, n), rng.uniform(-0.5, 0.5, n)
    ours = hexagon_box_area(cx, cy, r, x0, y0)
    corners = np.stack(
        [
            cx[:, None] + HEX_VERTICES[:, 0] * r[:, None],
            cy[:, None] + HEX_VERTICES[:, 1] * r[:, None],
        ],
        axis=-1,
    )
    ref = shapely.area(
        shapely.intersection(shapely.polygons(corners), shapely.box(x0, y0, x0 + 1, y0 + 1))
    )
    assert 0.3 < np.mean(ref > 0) < 0.9  # the sample mixes inside, partial and disjoint pairs
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


# --- the weight matrix ----------------------------------------------------------------------------
def test_weights_of_every_cell_sum_to_one(grid):
    w = grid.weights
    offsets = GEOMETRY.layer_offsets
    sums = np.asarray(w.sum(axis=1)).ravel()
    for layer in LAYERS:
        np.testing.assert_allclose(sums[offsets[layer] : offsets[layer + 1]], 1.0, atol=1e-12)
    other = 1  # a layer not in the grid has no weights
    assert sums[offsets[other] : offsets[other + 1]].max() == 0.0
    assert w.min() >= 0.0


def test_coarse_pixels_hold_whole_hexagons_and_split_straddlers_exactly():
    pitch = 10.0
    g = HexGrid(GEOMETRY, GridSpec(pitch=pitch, window=4, layers=(0,)))
    w = g.weights
    cells = np.arange(*GEOMETRY.layer_offsets[:2])
    x, y, side, _ = hexagon_centres(GEOMETRY, cells)
    pixel = g.pixel_size[0]  # projective: pitch x z_layer / z_ref
    u, v = x / pixel + g.n_side / 2, y / pixel + g.n_side / 2
    hw, hh = math.sqrt(3) / 2 * side / pixel, side / pixel
    inside = (np.floor(u - hw) == np.floor(u + hw)) & (np.floor(v - hh) == np.floor(v + hh))
    nnz = np.diff(w.indptr)[cells]
    assert inside.sum() > 1000
    assert np.all(nnz[inside] == 1)
    np.testing.assert_allclose(w.data[w.indptr[cells[inside]]], 1.0, rtol=0, atol=1e-12)
    # cells cut by one vertical pixel edge only: the right part has the analytic area
    one_edge = (np.floor(u - hw) + 1 == np.floor(u + hw)) & (np.floor(v - hh) == np.floor(v + hh))
    for c in cells[one_edge][:50]:
        i = c - cells[0]
        edge = np.floor(u[i] + hw[i])
        cut = (edge - u[i]) * pixel  # x of the edge from the hexagon's centre [cm]
        expected = (
            _right_of(cut, side[i])
            if cut >= 0
            else HEX_AREA_UNIT * side[i] ** 2 - _right_of(-cut, side[i])
        ) / (HEX_AREA_UNIT * side[i] ** 2)
        row = w.getrow(c)
        ix = row.indices % g.n_side
        # (weights below 1e-12 are dropped)
        assert row.data[ix == edge].sum() == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_npz_cache_round_trip(tmp_path):
    spec = GridSpec(pitch=5.0, window=4, layers=(3,))
    first = HexGrid(GEOMETRY, spec, cache_dir=tmp_path).weights
    assert len(list(tmp_path.glob("hexgrid-*.npz"))) == 1
    _weights_cached.cache_clear()
    again = HexGrid(GEOMETRY, spec, cache_dir=tmp_path).weights
    assert (first != again).nnz == 0


# --- events -> images -------------------------------------------------------------------------------
def test_energy_is_conserved_exactly(grid, events):
    in_grid = grid.event_sums(events)
    assert np.all(in_grid > 0)
    global_sum = np.asarray(grid.to_grid(events).sum(axis=1)).ravel()
    np.testing.assert_allclose(global_sum, in_grid, rtol=REL_TOL)
    win = grid.windows(events)
    dense = win.dense()
    assert dense.shape == (events.n_events, len(LAYERS), 24, 24)
    np.testing.assert_allclose(
        dense.sum(axis=(1, 2, 3), dtype=np.float64) + win.outside, in_grid, rtol=REL_TOL
    )
    # the window holds most of a shower of these few layers
    assert np.median(win.outside / in_grid) < 0.05


def test_windows_are_cut_out_of_the_global_grid(grid, events):
    win = grid.windows(events)
    glob = grid.to_grid(events)
    n = grid.n_side
    for e in (0, 7, 31):
        row = glob.getrow(e)
        k, rest = np.divmod(row.indices, n * n)
        iy, ix = np.divmod(rest, n)
        ly, lx = iy - win.origins[e, k, 1], ix - win.origins[e, k, 0]
        ok = (lx >= 0) & (lx < 24) & (ly >= 0) & (ly < 24)
        image = win.event(e)
        np.testing.assert_allclose(image[k[ok], ly[ok], lx[ok]], row.data[ok], rtol=1e-6)
        assert image.sum(dtype=np.float64) == pytest.approx(row.data[ok].sum(), rel=REL_TOL)


def test_threads_give_the_same_windows(grid, events):
    one, two = grid.windows(events), grid.windows(events, threads=3)
    for name in ("offsets", "index", "value", "origins", "axis", "outside"):
        np.testing.assert_array_equal(getattr(one, name), getattr(two, name))


def _reference_windows(g: HexGrid, batch, values: str, axis=None) -> dict[str, np.ndarray]:
    """Windows by their definition, one hit and one weight at a time in plain Python, from the
    public pieces (hit values, axis, origins, the scipy weight matrix): hit value x float32
    weight summed in float64 in hit order, voxels in order of first touch (the kernel's
    contract, so the result must be bit-identical)."""
    hv = g.hit_values(batch, values)
    axis = g.axis_points(batch) if axis is None else np.asarray(axis, np.float64)
    origins = g.window_origins(axis)
    if g.spec.projective:
        axis = (origins[:, 0, :] + g.spec.window / 2 - g.n_side / 2) * g.spec.pitch
    w, n, size = g.weights, g.n_side, g.spec.window
    cells = batch.hits["cell"]
    offsets = batch.offsets - batch.offsets[0]
    out = {"offsets": [0], "index": [], "value": [], "outside": []}
    for e in range(batch.n_events):
        acc: dict[int, float] = {}
        outside = 0.0
        for h in range(offsets[e], offsets[e + 1]):
            c = cells[h]
            for j in range(w.indptr[c], w.indptr[c + 1]):
                k, rest = divmod(int(w.indices[j]), n * n)
                iy, ix = divmod(rest, n)
                ly, lx = iy - origins[e, k, 1], ix - origins[e, k, 0]
                x = float(hv[h]) * float(np.float32(w.data[j]))
                if 0 <= lx < size and 0 <= ly < size:
                    f = int((k * size + ly) * size + lx)
                    acc[f] = acc.get(f, 0.0) + x
                else:
                    outside += x
        out["index"] += list(acc)
        out["value"] += list(acc.values())
        out["outside"].append(outside)
        out["offsets"].append(len(out["index"]))
    return {
        "offsets": np.asarray(out["offsets"], np.int64),
        "index": np.asarray(out["index"], np.int32),
        "value": np.asarray(out["value"], np.float32),
        "outside": np.asarray(out["outside"]),
        "origins": origins,
        "axis": axis,
    }


@pytest.mark.parametrize(
    ("values", "seeded", "projective"),
    [("gev", False, True), ("mip", False, True), ("deposit", True, True), ("gev", False, False)],
)
def test_fused_windows_equal_the_reference_bit_for_bit(grid, events, values, seeded, projective):
    g = grid
    if not projective:
        g = HexGrid(GEOMETRY, GridSpec(pitch=1.0, window=24, layers=(0, 40), projective=False))
    sub = events.slice(0, 25)
    axis = None
    if seeded:  # e.g. the particles' impacts, as the pileup study gives
        truth = single_particle_targets(sub, GEOMETRY)
        axis = (
            np.stack([truth["impact_x"], truth["impact_y"]], 1)
            * (g.z_ref / truth["impact_z"])[:, None]
        )
    win = g.windows(sub, values, axis=axis)
    ref = _reference_windows(g, sub, values, axis)
    for name, expected in ref.items():
        np.testing.assert_array_equal(getattr(win, name), expected, err_msg=name)
    # and the energy is all there, inside or outside the window
    if values == "gev":
        np.testing.assert_allclose(
            win.dense().sum(axis=(1, 2, 3), dtype=np.float64) + win.outside,
            g.event_sums(sub),
            rtol=REL_TOL,
        )


def test_dense_transform_on_stored_voxels_equals_transform_of_dense(grid, events):
    from fastreco.train.hgcal_regression import log_energy

    win = grid.windows(events)
    np.testing.assert_array_equal(win.dense(transform=log_energy), log_energy(win.dense()))
    out = np.full((events.n_events, *win.shape), 7.0, np.float32)  # reused buffer is cleared
    np.testing.assert_array_equal(win.dense(out), win.dense())
    with pytest.raises(InputError, match="transform"):
        win.dense(transform=np.exp)


def test_projective_windows_share_one_origin_and_centre_the_shower(grid, events):
    win = grid.windows(events)
    assert np.all(win.origins == win.origins[:, :1, :])
    centre = (win.origins[:, 0, :] + 12 - grid.n_side / 2) * grid.spec.pitch
    np.testing.assert_allclose(win.axis, centre)
    # the most energetic voxel lies near the window's middle
    dense = win.dense().sum(axis=1)
    iy, ix = np.unravel_index(dense.reshape(len(dense), -1).argmax(axis=1), (24, 24))
    assert np.all(np.abs(ix - 11.5) < 6)
    assert np.all(np.abs(iy - 11.5) < 6)


def test_barycentre_moves_by_less_than_half_a_pixel(grid, events):
    win = grid.windows(events)
    image_b = grid.image_barycentre(win.dense(), win.origins)
    # barycentre of the hits at their hexagons' centres, layers of the grid only
    x, y, _, layer = hexagon_centres(GEOMETRY, events.hits["cell"])
    values = np.where(np.isin(layer, LAYERS), grid.hit_values(events), 0.0)
    ev = events.hit_event_index()
    total = np.bincount(ev, values)
    hit_b = np.stack(
        [np.bincount(ev, values * c) / total for c in (x, y, GEOMETRY.layer_z[layer])], 1
    )
    contained = win.outside / total < 1e-9
    assert contained.sum() >= 5
    half = 0.5 * grid.pixel_size.max()
    d = np.abs(image_b - hit_b)[contained]
    assert np.all(d[:, :2] <= half + 1e-6)
    np.testing.assert_allclose(d[:, 2], 0.0, atol=1e-6)


def test_cartesian_windows_follow_the_axis_layer_by_layer(events):
    g = HexGrid(GEOMETRY, GridSpec(pitch=1.0, window=24, layers=(0, 40), projective=False))
    win = g.windows(events)
    np.testing.assert_allclose(g.pixel_size, 1.0)
    shift = win.origins[:, 1, :] - win.origins[:, 0, :]
    expected = win.axis * (GEOMETRY.layer_z[40] - GEOMETRY.layer_z[0]) / g.z_ref
    assert np.all(np.abs(shift - expected) <= 1.0)
    in_grid = g.event_sums(events)
    np.testing.assert_allclose(
        win.value.astype(np.float64).sum() + win.outside.sum(), in_grid.sum(), rtol=REL_TOL
    )


# --- the grid spec ------------------------------------------------------------------------------------
def test_grid_spec_round_trip():
    spec = GridSpec(pitch=0.8, window=16, layers=(1, 2, 5), projective=False)
    assert GridSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    resolved = spec.resolve(GEOMETRY)
    assert GridSpec.from_dict(json.loads(json.dumps(resolved.to_dict()))) == resolved
    assert resolved.z_ref == GEOMETRY.z_front
    assert resolved.half_extent > GEOMETRY.r_max(5)
    assert GridSpec().resolve(GEOMETRY).layers == tuple(range(GEOMETRY.n_layers))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"pitch": 0.0}, "pitch"), ({"window": 0}, "window"), ({"layers": (1, 1)}, "layers")],
)
def test_bad_grid_spec_names_the_field(kwargs, field):
    with pytest.raises(InputError) as info:
        GridSpec(**kwargs)
    assert info.value.field == field


def test_layer_outside_the_detector_is_an_input_error():
    with pytest.raises(InputError, match=r"layers 0\.\.46"):
        GridSpec(layers=(47,)).resolve(GEOMETRY)


# --- converter and reader -----------------------------------------------------------------------------
def test_convert_cli_and_reader(tmp_path):
    cfg = HgcalSimConfig(particles=("e-",), n_particles=1, energy="log:10:100", n_events=12, seed=3)
    store = simulate_hgcal(cfg, tmp_path / "store")
    out = tmp_path / "grid.h5"
    result = subprocess.run(
        [sys.executable, "-m", "fastreco.cli", "convert", str(store), "-o", str(out), "--to", "grid",
         "--layers", "0-3", "--window", "16", "--pitch", "1.5", "--cache-dir", str(tmp_path / "cache")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert out.exists()
    assert not list(tmp_path.glob("*.tmp"))
    data = read_grid(out)
    assert data["spec"] == GridSpec(pitch=1.5, window=16, layers=(0, 1, 2, 3)).resolve(GEOMETRY)
    assert data["values"] == "gev"
    win = data["windows"]
    assert win.origins.shape == (12, 4, 2)
    np.testing.assert_allclose(
        win.dense().sum(axis=(1, 2, 3), dtype=np.float64) + win.outside,
        data["reco_energy"],
        rtol=REL_TOL,
    )
    # truth targets as the store gives them
    from fastreco.data.store import EventStore

    truth = single_particle_targets(EventStore(store).read(), GEOMETRY)
    np.testing.assert_allclose(data["targets"]["energy"], truth["energy"])
    np.testing.assert_allclose(data["targets"]["barycenter_x"], truth["barycenter_x"])
    # relative barycentre = absolute minus the window axis at the barycentre's depth
    z = truth["barycenter_z"]
    np.testing.assert_allclose(
        data["targets"]["barycenter_dx"] + win.axis[:, 0] * z / GEOMETRY.z_front,
        truth["barycenter_x"],
    )

    ds = GridDataset(
        out, targets=("energy", "barycenter_dx", "barycenter_dy", "barycenter_z"), indices=[2, 5]
    )
    assert len(ds) == 2
    image, target = ds[1]
    assert image.shape == (1, 4, 16, 16)
    assert image.dtype == torch.float32
    assert target.shape == (4,)
    assert float(target[0]) == pytest.approx(truth["energy"][5], rel=1e-6)
    assert float(image.sum()) == pytest.approx(win.event(5).sum(), rel=1e-6)
    with pytest.raises(InputError, match="unknown target"):
        GridDataset(out, targets=("nope",))


def test_reader_refuses_other_files(tmp_path):
    import h5py

    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "something"
    with pytest.raises(InputError, match="not a fastreco grid dataset"):
        read_grid(path)
