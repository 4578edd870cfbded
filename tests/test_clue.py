"""CLUE (Rovere et al. 2020): hand-made configurations whose clustering the paper's rules fix,
agreement of the tiled implementation with an O(n^2) reference, and the 3D linking."""

from __future__ import annotations

import numpy as np
import pytest

from fastreco.errors import InputError
from fastreco.reco.clue import ClueParams, clue2d, clue3d, cluster_event


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def brute_clue(x, y, layer, energy, dc, rhoc, deltac, delta_o, layer_window=0):
    """The paper's definitions, written directly over all pairs (O(n^2))."""
    n = len(x)
    dx = x[:, None] - x[None, :]
    dy = y[:, None] - y[None, :]
    d2 = dx * dx + dy * dy
    near = np.abs(layer[:, None] - layer[None, :]) <= layer_window
    others = near & (d2 < dc * dc) & ~np.eye(n, dtype=bool)
    rho = energy + 0.5 * (others * energy[None, :]).sum(axis=1)
    dm = max(deltac, delta_o)
    cand = near & (rho[None, :] > rho[:, None]) & (d2 < dm * dm)  # [i, j]: j higher than i
    d2c = np.where(cand, d2, np.inf)
    nh = np.argmin(d2c, axis=1)
    delta = np.sqrt(d2c[np.arange(n), nh])
    nh[~np.isfinite(delta)] = -1
    seed = (rho > rhoc) & (delta > deltac)
    outlier = (rho < rhoc) & (delta > delta_o)
    labels = np.full(n, -1)
    k = 0
    for i in np.argsort(-rho, kind="stable"):  # the nearest-higher comes first
        if seed[i]:
            labels[i] = k
            k += 1
        elif not outlier[i] and nh[i] >= 0:
            labels[i] = labels[nh[i]]
    return labels, rho, delta, nh, seed


def partition(labels):
    """Labels renumbered by first appearance (-1 kept): equal iff the partitions are equal."""
    out = np.full(len(labels), -1)
    seen: dict[int, int] = {}
    for i, lab in enumerate(labels):
        if lab >= 0:
            out[i] = seen.setdefault(int(lab), len(seen))
    return out


def blob(rng, cx, cy, n=12, sigma=0.4, e=1.0):
    return rng.normal(cx, sigma, n), rng.normal(cy, sigma, n), np.full(n, e)


# --------------------------------------------------------------------------------------------
# hand-made configurations
# --------------------------------------------------------------------------------------------
def test_two_separated_blobs():
    rng = np.random.default_rng(1)
    xa, ya, ea = blob(rng, 0.0, 0.0)
    xb, yb, eb = blob(rng, 15.0, 5.0)
    x, y, e = np.r_[xa, xb], np.r_[ya, yb], np.r_[ea, eb]
    r = clue2d(x, y, np.zeros(len(x), int), e, dc=1.3, rhoc=2.0)
    assert r.n_clusters == 2
    assert r.is_seed.sum() == 2
    assert (r.labels >= 0).all()
    assert len(set(r.labels[:12])) == 1
    assert len(set(r.labels[12:])) == 1
    assert r.labels[0] != r.labels[12]


def test_isolated_low_energy_point_is_outlier():
    rng = np.random.default_rng(2)
    xa, ya, ea = blob(rng, 0.0, 0.0)
    x, y, e = np.r_[xa, 20.0], np.r_[ya, 20.0], np.r_[ea, 0.1]
    r = clue2d(x, y, np.zeros(len(x), int), e, dc=1.3, rhoc=2.0)
    assert r.labels[-1] == -1
    assert r.is_outlier[-1]
    assert np.isinf(r.delta[-1])
    assert r.nearest_higher[-1] == -1
    assert r.n_clusters == 1
    assert (r.labels[:-1] == 0).all()


def test_chain_of_followers_is_one_cluster():
    # points 1 cm apart (< dc) with decreasing energy: each follows the previous one
    k = np.arange(10)
    x, y, e = k * 1.0, np.zeros(10), 10.0 * 0.4**k
    rhoc = 2.0
    r = clue2d(x, y, np.zeros(10, int), e, dc=1.3, rhoc=rhoc)
    assert np.all(np.diff(r.rho) < 0)
    assert (r.rho < rhoc).sum() >= 2  # the tail is below rhoc and still belongs
    assert r.is_seed[0]
    assert not r.is_seed[1:].any()
    np.testing.assert_array_equal(r.nearest_higher[1:], k[:-1])
    np.testing.assert_allclose(r.delta[1:], 1.0)
    np.testing.assert_array_equal(r.labels, 0)


def _cross_and_point(e_point):
    x = np.array([0.0, 0.5, -0.5, 0.0, 0.0, 2.0])
    y = np.array([0.0, 0.0, 0.0, 0.5, -0.5, 0.0])
    e = np.r_[np.full(5, 10.0), e_point]
    return x, y, np.zeros(6, int), e


def test_large_delta_low_density_is_follower_not_seed():
    # the point at (2, 0) is 1.5 cm from its nearest-higher: delta > deltac = dc = 1.3 but
    # rho = 0.1 < rhoc, so it is no seed; delta < delta_o = 2.6, so it is no outlier either
    x, y, layer, e = _cross_and_point(0.1)
    r = clue2d(x, y, layer, e, dc=1.3, rhoc=1.0)
    assert r.delta[-1] == pytest.approx(1.5)
    assert r.rho[-1] == pytest.approx(0.1)
    assert not r.is_seed[-1]
    assert not r.is_outlier[-1]
    assert r.nearest_higher[-1] == 1
    assert r.labels[-1] == r.labels[0] == 0
    assert r.n_clusters == 1


def test_large_delta_high_density_is_seed():
    x, y, layer, e = _cross_and_point(5.0)
    r = clue2d(x, y, layer, e, dc=1.3, rhoc=1.0)
    assert r.is_seed[-1]
    assert r.n_clusters == 2
    assert r.labels[-1] != r.labels[0]


def test_outlier_window_follows_outlier_delta_factor():
    x, y, layer, e = _cross_and_point(0.1)
    # delta = 1.5 > 1.0 * dc: now an outlier
    r = clue2d(x, y, layer, e, dc=1.3, rhoc=1.0, outlier_delta_factor=1.0)
    assert r.is_outlier[-1]
    assert r.labels[-1] == -1


def test_follower_of_outlier_is_outlier():
    # two low-energy points far from everything: the lower one follows the higher one,
    # which is an outlier, so both are -1
    x = np.array([0.0, 0.5, 0.0, 50.0, 50.8])
    y = np.array([0.0, 0.0, 0.5, 50.0, 50.0])
    e = np.array([10.0, 10.0, 10.0, 0.3, 0.2])
    r = clue2d(x, y, np.zeros(5, int), e, dc=1.3, rhoc=1.0)
    assert r.is_outlier[3]
    assert not r.is_outlier[4]
    assert r.nearest_higher[4] == 3
    np.testing.assert_array_equal(r.labels, [0, 0, 0, -1, -1])


def test_deltac_parameter():
    x, y, layer, e = _cross_and_point(5.0)
    r = clue2d(x, y, layer, e, dc=1.3, rhoc=1.0, deltac=2.0)  # 1.5 < deltac: a follower
    assert not r.is_seed[-1]
    assert r.n_clusters == 1
    np.testing.assert_array_equal(r.labels, 0)


def test_layers_are_independent():
    rng = np.random.default_rng(3)
    n = 300
    x, y = rng.uniform(0, 15, n), rng.uniform(0, 15, n)
    e0, e7 = rng.exponential(1.0, n), rng.exponential(1.0, n)
    alone = clue2d(x, y, np.zeros(n, int), e0, dc=1.3, rhoc=2.0)
    both = clue2d(
        np.r_[x, x + 0.1], np.r_[y, y], np.r_[np.zeros(n, int), np.full(n, 7)], np.r_[e0, e7],
        dc=1.3, rhoc=2.0,
    )  # fmt: skip
    np.testing.assert_allclose(both.rho[:n], alone.rho, rtol=1e-13)
    np.testing.assert_allclose(both.delta[:n], alone.delta, rtol=1e-13)
    np.testing.assert_array_equal(both.nearest_higher[:n], alone.nearest_higher)
    np.testing.assert_array_equal(partition(both.labels[:n]), partition(alone.labels))
    assert set(both.labels[:n]).isdisjoint(set(both.labels[n:]) - {-1})
    assert (both.nearest_higher[n:][both.nearest_higher[n:] >= 0] >= n).all()


@pytest.mark.parametrize("kind", ["random", "lattice"])
def test_permutation_invariance(kind):
    rng = np.random.default_rng(4)
    if kind == "random":
        n = 800
        x, y = rng.uniform(0, 20, n), rng.uniform(0, 20, n)
        layer, e = rng.integers(0, 3, n), rng.exponential(1.0, n)
    else:  # equal energies on a grid: many exact density ties
        gx, gy = np.meshgrid(np.arange(8.0), np.arange(8.0))
        x, y = gx.ravel(), gy.ravel()
        n = len(x)
        layer, e = np.zeros(n, int), np.ones(n)
    ref = clue2d(x, y, layer, e, dc=1.3, rhoc=1.5)
    for _ in range(3):
        p = rng.permutation(n)
        r = clue2d(x[p], y[p], layer[p], e[p], dc=1.3, rhoc=1.5)
        np.testing.assert_array_equal(r.rho, ref.rho[p])  # bit-identical
        np.testing.assert_array_equal(r.labels, ref.labels[p])
        nh = np.where(r.nearest_higher >= 0, p[r.nearest_higher], -1)
        np.testing.assert_array_equal(nh, ref.nearest_higher[p])


@pytest.mark.parametrize(
    ("deltac", "factor", "spread"),
    [(None, 2.0, False), (0.8, 2.0, False), (2.0, 1.0, False), (None, 3.0, True)],
)
def test_tiles_agree_with_brute_force(deltac, factor, spread):
    rng = np.random.default_rng(5)
    n = 1200
    x, y = rng.uniform(-12, 12, n), rng.uniform(-12, 12, n)
    layer = rng.integers(0, 3, n) * 2
    e = rng.exponential(1.0, n)
    if spread:  # a few far-away hits: the tile grid must grow and stay exact
        x[:5] = [1e5, -1e5, 3e4, 3e4 + 1.0, 0.0]
        y[:5] = [0.0, 1e5, -2e4, -2e4, 7e4]
    dc, rhoc = 1.3, 3.0
    r = clue2d(x, y, layer, e, dc=dc, rhoc=rhoc, outlier_delta_factor=factor, deltac=deltac)
    dcc = dc if deltac is None else deltac
    labels, rho, delta, nh, seed = brute_clue(x, y, layer, e, dc, rhoc, dcc, factor * dc)
    np.testing.assert_allclose(r.rho, rho, rtol=1e-12)
    np.testing.assert_array_equal(r.nearest_higher, nh)
    np.testing.assert_allclose(r.delta, delta, rtol=1e-12)
    np.testing.assert_array_equal(r.is_seed, seed)
    np.testing.assert_array_equal(partition(r.labels), partition(labels))
    assert r.n_clusters == seed.sum() > 10
    assert (r.labels == -1).sum() > 0


# --------------------------------------------------------------------------------------------
# edge cases and bad input
# --------------------------------------------------------------------------------------------
def test_empty_event():
    r = clue2d([], [], [], [], dc=1.3, rhoc=1.0)
    assert len(r) == 0
    assert r.n_clusters == 0
    assert r.labels.dtype == np.int64
    labels = cluster_event([], [], [], [], [])
    assert labels.shape == (0,)
    res = clue3d([], [], [], [], [])
    assert res.n_clusters == 0
    assert res.barycentre.shape == (0, 3)


@pytest.mark.parametrize(("energy", "label"), [(2.0, 0), (0.5, -1)])
def test_single_hit(energy, label):
    r = clue2d([1.0], [2.0], [3], [energy], dc=1.3, rhoc=1.0)
    assert r.labels[0] == label
    assert r.is_seed[0] == (label == 0)
    assert r.rho[0] == energy
    assert np.isinf(r.delta[0])


@pytest.mark.parametrize("name", ["x", "y", "energy", "layer"])
def test_nan_names_field_and_index(name):
    cols = {"x": [0.0, 1.0, 2.0], "y": [0.0, 0.0, 0.0], "layer": [1.0, 1.0, 1.0],
            "energy": [1.0, 1.0, 1.0]}  # fmt: skip
    cols[name] = list(cols[name])
    cols[name][2] = np.nan
    with pytest.raises(InputError, match=rf"'{name}'.*index 2") as err:
        clue2d(cols["x"], cols["y"], cols["layer"], cols["energy"], dc=1.3, rhoc=1.0)
    assert err.value.field == name


def test_bad_inputs():
    with pytest.raises(InputError, match=r"'y'.*2 entries, expected 3"):
        clue2d([0, 1, 2], [0, 1], [0, 0, 0], [1, 1, 1], dc=1.3, rhoc=1.0)
    with pytest.raises(InputError, match=r"'energy'.*-1.0.*index 1"):
        clue2d([0, 1], [0, 1], [0, 0], [1, -1], dc=1.3, rhoc=1.0)
    with pytest.raises(InputError, match=r"'layer'.*0.5.*index 1"):
        clue2d([0, 1], [0, 1], [0, 0.5], [1, 1], dc=1.3, rhoc=1.0)
    with pytest.raises(InputError, match=r"'dc'.*-1"):
        clue2d([0], [0], [0], [1], dc=-1, rhoc=1.0)
    with pytest.raises(InputError, match=r"'z'.*index 0"):
        cluster_event([0.0], [0.0], [0.0], [0], [1.0])
    with pytest.raises(InputError, match=r"'z'.*index 1"):
        cluster_event([0.0, 0.0], [0.0, 0.0], [320.0, np.inf], [0, 1], [1.0, 1.0])


@pytest.mark.parametrize(
    ("field", "value"),
    [("dc", 0.0), ("dc", float("nan")), ("rhoc", -1.0), ("outlier_delta_factor", -2.0),
     ("deltac", 0.0), ("dc3d", float("inf")), ("rhoc3d", -0.1), ("layer_window", -1),
     ("layer_window", 1.5)],
)  # fmt: skip
def test_params_validation(field, value):
    with pytest.raises(InputError, match=rf"field '{field}'") as err:
        ClueParams(**{field: value})
    assert err.value.field == field


def test_params_defaults():
    p = ClueParams()
    assert p.dc == 1.3
    assert p.delta_c == p.dc
    assert p.outlier_delta_factor == 2.0
    assert ClueParams(deltac=2.0).delta_c == 2.0
    with pytest.raises(AttributeError):
        p.dc = 2.0  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# 3D linking
# --------------------------------------------------------------------------------------------
def shower(rng, tx, ty, energy, n_layers=24, side=1.0, z0=320.0, dz=1.2):
    """A projective EM-like shower: per layer a Gaussian spot of hits along (x/z, y/z) = (tx, ty)."""
    t = np.arange(n_layers) + 0.5
    profile = t**2 * np.exp(-t / 2.5)  # gamma profile, maximum near layer 5
    profile *= energy / profile.sum()
    xs, ys, zs, ls, es = [], [], [], [], []
    for layer in range(n_layers):
        z = side * (z0 + dz * layer)
        m = 9
        xs.append(tx * abs(z) + rng.normal(0, 0.6, m))
        ys.append(ty * abs(z) + rng.normal(0, 0.6, m))
        zs.append(np.full(m, z))
        ls.append(np.full(m, layer))
        es.append(profile[layer] * rng.dirichlet(np.ones(m)))
    return tuple(np.concatenate(v) for v in (xs, ys, zs, ls, es))


def test_3d_two_showers_and_two_endcaps():
    rng = np.random.default_rng(6)
    parts = [
        shower(rng, 0.10, 0.02, 20.0),
        shower(rng, 0.16, -0.03, 8.0),
        shower(rng, 0.10, 0.02, 12.0, side=-1.0),  # mirror image in the other endcap
    ]
    x, y, z, layer, e = (np.concatenate(c) for c in zip(*parts, strict=True))
    truth = np.repeat(np.arange(3), [len(p[0]) for p in parts])
    res = clue3d(x, y, z, layer, e, ClueParams(rhoc=0.02))
    assert res.n_clusters == 3
    assert len(res.layer_clusters) >= 3 * 20
    lab = res.labels
    clustered = lab >= 0
    assert e[clustered].sum() > 0.99 * e.sum()
    for s in range(3):
        own = lab[(truth == s) & clustered]
        assert len(set(own)) == 1
        c = own[0]
        members = lab == c
        assert (truth[members] == s).all()
        np.testing.assert_allclose(res.energy[c], e[members].sum(), rtol=1e-12)
        bary = (np.c_[x, y, z][members] * e[members, None]).sum(0) / e[members].sum()
        np.testing.assert_allclose(res.barycentre[c], bary, rtol=1e-12)
    np.testing.assert_array_equal(cluster_event(x, y, z, layer, e, ClueParams(rhoc=0.02)), lab)


def test_3d_links_agree_with_brute_force():
    rng = np.random.default_rng(7)
    n = 4000
    x, y = rng.uniform(-40, 40, n), rng.uniform(-40, 40, n)
    layer = rng.integers(0, 12, n)
    z = 320.0 + 1.2 * layer
    e = rng.exponential(0.02, n)
    p = ClueParams(rhoc=0.04, dc3d=0.01, rhoc3d=0.05, layer_window=2)
    res = clue3d(x, y, z, layer, e, p)
    lc = res.layer_clusters
    assert len(lc) > 100
    u, v = lc.x / np.abs(lc.z), lc.y / np.abs(lc.z)
    labels, rho, delta, nh, seed = brute_clue(
        u, v, lc.layer, lc.energy, p.dc3d, p.rhoc3d, p.delta_c3d, 2.0 * p.dc3d, layer_window=2
    )
    np.testing.assert_allclose(res.links.rho, rho, rtol=1e-12)
    np.testing.assert_array_equal(res.links.nearest_higher, nh)
    np.testing.assert_allclose(res.links.delta, delta, rtol=1e-12)
    np.testing.assert_array_equal(res.links.is_seed, seed)
    np.testing.assert_array_equal(partition(res.links.labels), partition(labels))
    assert 1 < res.n_clusters < len(lc)


def test_3d_bridges_a_missing_layer():
    rng = np.random.default_rng(8)
    x, y, z, layer, e = shower(rng, -0.05, 0.12, 15.0)
    keep = layer != 8  # a dead layer inside the shower
    res = clue3d(x[keep], y[keep], z[keep], layer[keep], e[keep], ClueParams(rhoc=0.02))
    assert res.n_clusters == 1
    assert res.energy[0] > 0.99 * e[keep].sum()
    one_gap = clue3d(
        x[keep], y[keep], z[keep], layer[keep], e[keep], ClueParams(rhoc=0.02, layer_window=0)
    )
    assert one_gap.n_clusters > 1  # without the layer window, layers do not link
