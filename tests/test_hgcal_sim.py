"""Physics and bookkeeping of the HGCAL simulation: EM and hadron showers, pileup, truth, shards."""

from __future__ import annotations

import numpy as np
import pytest

from fastreco.data.store import EventStore
from fastreco.errors import InputError
from fastreco.geometry.hgcal import HgcalEndcap
from fastreco.sim.hgcal import (
    PARENT_GUN,
    PARENT_PILEUP,
    HgcalSimConfig,
    event_energy_gev,
    hit_energy_gev,
    point_cloud,
    simulate_hgcal_batch,
)
from fastreco.sim.hgcal_engine import simulate_hgcal

GEOMETRY = HgcalEndcap()
CLEAN = {"vertex_sigma_z": 0.0, "vertex_sigma_t": 0.0, "eta_min": 1.9, "eta_max": 2.5}


def _same(a, b):
    np.testing.assert_array_equal(a.offsets, b.offsets)
    for name in a.hits:
        np.testing.assert_array_equal(a.hits[name], b.hits[name])
    for name in a.truth:
        np.testing.assert_array_equal(a.truth[name], b.truth[name])


def _profile(batch):
    """Mean calibrated energy per layer [GeV], shape (n_layers,)."""
    layer = GEOMETRY.cell_layer(batch.hits["cell"])
    e = hit_energy_gev(batch, GEOMETRY)
    return np.bincount(layer, weights=e, minlength=GEOMETRY.n_layers) / batch.n_events


# --- configuration ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("particles", ("pi0",)),
        ("n_particles", 11),
        ("eta_min", 1.2),
        ("eta_max", 3.2),
        ("max_separation", 0.5),
        ("pileup", -1.0),
        ("vertex_sigma_t", float("nan")),
        ("mip_threshold", 0.1),
        ("pileup_max_spots", 0),
        ("events_per_shard", 0),
    ],
)
def test_bad_config_names_the_field(field, value):
    kwargs = {field: value}
    if field == "max_separation":
        kwargs["min_separation"] = 1.0
    with pytest.raises(InputError, match=field):
        HgcalSimConfig(**kwargs)


def test_config_defaults_and_shards():
    assert HgcalSimConfig().events_per_shard == 1000
    assert HgcalSimConfig(pileup=200).events_per_shard == 10
    cfg = HgcalSimConfig(energy="log:1:500", n_events=25, events_per_shard=10)
    assert (cfg.n_shards, cfg.shard_events(2)) == (3, 5)
    assert HgcalSimConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.shard_key() != HgcalSimConfig(energy="log:1:500", seed=2).shard_key()


# --- electromagnetic showers -------------------------------------------------------------------
@pytest.fixture(scope="module")
def electrons():
    out = {}
    for i, energy in enumerate((10.0, 30.0, 100.0)):
        cfg = HgcalSimConfig(particles=("e-",), energy=str(energy), **CLEAN)
        out[energy] = simulate_hgcal_batch(cfg, 250, 100 + i, GEOMETRY)
    return out


def test_em_response_is_linear_with_hgcal_like_resolution(electrons):
    energies = np.array(sorted(electrons))
    reco = [event_energy_gev(electrons[e], GEOMETRY) for e in energies]
    response = np.array([r.mean() / e for r, e in zip(reco, energies, strict=True)])
    assert np.all(np.abs(response - 1.0) < 0.03)
    assert response.max() - response.min() < 0.03  # linear within a few %
    rel = np.array([r.std() / r.mean() for r in reco])
    # sigma/E = a / sqrt(E) (+) c: fit a^2 and c^2 by least squares
    design = np.stack([1.0 / energies, np.ones_like(energies)], axis=1)
    (a2, c2), *_ = np.linalg.lstsq(design, rel**2, rcond=None)
    stochastic = np.sqrt(a2)
    assert 0.17 < stochastic < 0.30  # TDR: ~20-25 %/sqrt(E)
    assert c2 < 0.02**2


def test_em_showers_peak_and_are_contained_in_the_em_section(electrons):
    peaks = []
    for energy, batch in electrons.items():
        profile = _profile(batch)
        peaks.append(int(np.argmax(profile)))
        assert peaks[-1] < GEOMETRY.n_em_layers
        assert profile[: GEOMETRY.n_em_layers].sum() / profile.sum() > 0.95
        # the true deposit (GeV) is contained in the calorimeter
        dep = batch.truth["deposited"][batch.truth["parent"] == PARENT_GUN]
        assert np.mean(dep) / energy > 0.97
    assert peaks == sorted(peaks)  # the maximum moves deeper with energy (~ln E)
    assert 3 <= peaks[0] < peaks[-1] <= 15


def test_energy_is_in_mip_and_calibrates_with_the_layer_weights(electrons):
    batch = electrons[30.0]
    layer = GEOMETRY.cell_layer(batch.hits["cell"])
    assert np.all(batch.hits["energy"] >= 0.5)  # the MIP threshold
    # summed over an event, MIPs x dE/dx weights give back the true deposit (GeV)
    ratio = hit_energy_gev(batch, GEOMETRY).sum() / batch.truth["deposited"].sum()
    assert ratio == pytest.approx(1.0, abs=0.02)
    # shower tails show the MIP peak: many hits of about one MIP
    low = batch.hits["energy"][batch.hits["energy"] < 3]
    counts, edges = np.histogram(low, bins=np.arange(0.5, 3.01, 0.25))
    assert 0.75 <= edges[np.argmax(counts)] <= 1.5
    # a MIP in the CE-E is ~10 MeV of deposit per MIP of signal
    assert 0.008 < GEOMETRY.mip_weight[layer].mean() < 0.014


def test_hit_times_resolve_tens_of_ps(electrons):
    batch = electrons[100.0]
    big = batch.hits["energy"] > 30
    assert big.sum() > 1000
    assert 0.010 < batch.hits["time"][big].std() < 0.040  # ns
    assert abs(batch.hits["time"][big].mean()) < 0.005


# --- hadrons and muons ----------------------------------------------------------------------------
def test_pions_shower_deeper_than_electrons(electrons):
    cfg = HgcalSimConfig(particles=("pi+",), energy="30", **CLEAN)
    pions = simulate_hgcal_batch(cfg, 250, 7, GEOMETRY)
    depth = {}
    for name, batch in (("pion", pions), ("electron", electrons[30.0])):
        profile = _profile(batch)
        depth[name] = np.sum(profile * np.arange(GEOMETRY.n_layers)) / profile.sum()
    assert depth["pion"] > depth["electron"] + 8
    assert depth["electron"] < 13
    reco = event_energy_gev(pions, GEOMETRY)
    assert 0.6 < reco.mean() / 30 < 0.95  # e/pi > 1 (h/e < 1, invisible energy)
    assert reco.std() / reco.mean() > 2 * event_energy_gev(electrons[30.0]).std() / 30
    depth_cm = pions.truth["interaction_depth"]
    assert np.nanmean(depth_cm) == pytest.approx(
        np.mean(GEOMETRY.lambda_eff[:26]) / np.tanh(2.2), rel=0.35
    )


def test_muons_leave_one_mip_per_layer():
    cfg = HgcalSimConfig(particles=("mu-",), energy="50", noise=0.0, field=0.0, **CLEAN)
    batch = simulate_hgcal_batch(cfg, 100, 8, GEOMETRY)
    per_event = np.diff(batch.offsets)
    assert np.median(per_event) == GEOMETRY.n_layers
    # Landau: most probable ~1 MIP / cos(theta)
    cos_theta = np.tanh(2.2)
    assert np.median(batch.hits["energy"]) == pytest.approx(1.0 / cos_theta, rel=0.1)


# --- pileup and truth ---------------------------------------------------------------------------
def test_pileup_hit_multiplicity_grows_linearly_with_mu():
    base = {"particles": ("gamma",), "energy": "20"}
    hits = {}
    for mu, n in ((0, 8), (50, 8), (140, 3), (200, 3)):
        batch = simulate_hgcal_batch(HgcalSimConfig(pileup=mu, **base), n, 11, GEOMETRY)
        hits[mu] = batch.n_hits / n
        rows = np.sum(batch.truth["parent"] == PARENT_PILEUP) / n
        assert rows == pytest.approx(mu * 6.5 * 2 * 1.5, rel=0.12)
    per_mu = np.array([(hits[mu] - hits[0]) / mu for mu in (50, 140, 200)])
    assert np.all(np.abs(per_mu / per_mu.mean() - 1) < 0.12)
    assert 100 < per_mu.mean() < 1000  # hits per minimum-bias interaction in one endcap


def test_truth_fractions_and_pileup_labels():
    cfg = HgcalSimConfig(particles=("gamma", "pi-"), n_particles=2, energy="30", pileup=30)
    batch, contrib = simulate_hgcal_batch(cfg, 3, 12, GEOMETRY, contributions=True)
    frac = batch.hits["truth_fraction"]
    part = batch.hits["truth_particle"]
    noise = part < 0
    assert np.all(frac[noise] == 0)
    assert np.all(batch.hits["deposit"][noise] == 0)
    assert np.all((frac[~noise] > 0) & (frac[~noise] <= 1 + 1e-6))
    ev = batch.hit_event_index()
    parent = batch.truth["parent"][batch.truth_offsets[ev[~noise]] + part[~noise]]
    assert set(np.unique(parent)) == {PARENT_GUN, PARENT_PILEUP}
    gun_rows = batch.truth["parent"] == PARENT_GUN
    assert gun_rows.sum() == 2 * 3
    assert np.all(batch.truth["parent"].reshape(-1)[batch.truth_offsets[:-1]] == PARENT_GUN)
    # all contributions: shares sum to 1 for signal hits, the largest is the dominant one
    counts = np.diff(contrib.offsets)
    assert np.all(counts[noise] == 0)
    assert np.all(counts[~noise] >= 1)
    sums = np.add.reduceat(contrib.fraction, contrib.offsets[:-1][~noise])
    np.testing.assert_allclose(sums, 1.0, rtol=1e-5)
    largest = np.maximum.reduceat(contrib.fraction, contrib.offsets[:-1][~noise])
    np.testing.assert_allclose(largest, frac[~noise], rtol=1e-5)
    assert (counts > 1).sum() > 0  # overlapping showers share cells
    # pileup hits are spread in time by the vertex spread, gun hits much less
    pu_hits = np.flatnonzero(~noise)[parent == PARENT_PILEUP]
    big = pu_hits[batch.hits["energy"][pu_hits] > 20]
    assert 0.1 < batch.hits["time"][big].std() < 0.3
    cloud = point_cloud(batch, GEOMETRY)
    assert np.all(np.isfinite(cloud["z"]))
    assert set(cloud) >= {"x", "y", "z", "energy", "time", "layer"}


def test_close_by_particles_respect_the_separation():
    cfg = HgcalSimConfig(
        particles=("gamma",),
        n_particles=4,
        energy="5",
        min_separation=3.0,
        max_separation=12.0,
        field=0.0,
        vertex_sigma_z=0.0,
    )
    batch = simulate_hgcal_batch(cfg, 50, 13, GEOMETRY)
    r = GEOMETRY.z_front / np.sinh(batch.truth["impact_eta"])
    pts = np.stack(
        [r * np.cos(batch.truth["impact_phi"]), r * np.sin(batch.truth["impact_phi"])], 1
    )
    pts = pts.reshape(50, 4, 2)
    gap = np.linalg.norm(pts[:, :, None] - pts[:, None, :], axis=3)
    gap[:, np.arange(4), np.arange(4)] = np.inf
    assert gap.min() >= 3.0 - 1e-3
    assert np.linalg.norm(pts[:, 1:] - pts[:, :1], axis=2).max() <= 12.0 + 1e-3


# --- reproducibility and the store ----------------------------------------------------------------
def test_batches_are_reproducible_from_seed_and_shard():
    cfg = HgcalSimConfig(particles=("e-", "pi+"), energy="5:50", pileup=10)
    a = simulate_hgcal_batch(cfg, 4, np.random.SeedSequence([3, 1]), GEOMETRY)
    b = simulate_hgcal_batch(cfg, 4, np.random.SeedSequence([3, 1]), GEOMETRY)
    _same(a, b)
    c = simulate_hgcal_batch(cfg, 4, np.random.SeedSequence([3, 2]), GEOMETRY)
    assert a.n_hits != c.n_hits or not np.array_equal(a.hits["cell"], c.hits["cell"])


def test_sharded_run_reads_back_and_resumes(tmp_path):
    cfg = HgcalSimConfig(
        particles=("gamma", "pi-"), energy="2:20", pileup=5, n_events=12, events_per_shard=5, seed=4
    )
    out = simulate_hgcal(cfg, tmp_path / "run")
    store = EventStore(out)
    assert isinstance(store.detector, HgcalEndcap)
    assert store.detector == GEOMETRY
    reference = store.read()
    assert reference.n_events == 12
    direct = simulate_hgcal_batch(cfg, 5, np.random.SeedSequence([4, 1]), GEOMETRY)
    _same(store.read(5, 10), direct)
    (out / "shard-00001.h5").unlink()
    seen = []
    simulate_hgcal(cfg, out, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(3, 3)]
    _same(EventStore(out).read(), reference)
    other = HgcalSimConfig(**{**cfg.to_dict(), "seed": 5})
    with pytest.raises(InputError, match="different run"):
        simulate_hgcal(other, out)
