"""Physics checks of the embedded ECAL simulation, with the tolerances of the foundation issue."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

from fastreco import constants as C
from fastreco.geometry import EcalBarrel
from fastreco.sim import kinematics as K
from fastreco.sim import showers
from fastreco.sim.config import ReadoutConfig, SimConfig
from fastreco.sim.ecal import simulate_batch

GEOMETRY = EcalBarrel()


def window_sums(batch, field: str = "energy", half_widths=(1, 2)) -> dict[int, np.ndarray]:
    """Sum of ``field`` in (2w+1)^2 windows around each event's highest-``field`` crystal."""
    ev = batch.hit_event_index()
    e = batch.hits[field]
    ieta, iphi = GEOMETRY.ieta_iphi(batch.hits["cell"])
    order = np.lexsort((-e, ev))
    first = np.concatenate([[True], ev[order][1:] != ev[order][:-1]])
    seed = np.full(batch.n_events, -1)
    seed[ev[order][first]] = order[first]
    d_eta = np.abs(ieta - ieta[seed][ev])
    d_phi = np.abs((iphi - iphi[seed][ev] + 180) % 360 - 180)
    return {
        w: np.bincount(ev, weights=e * ((d_eta <= w) & (d_phi <= w)), minlength=batch.n_events)
        for w in half_widths
    }


# --- pi0 decays ------------------------------------------------------------------------------
@pytest.mark.parametrize("energy", [2.0, 8.0, 50.0])
def test_pi0_minimum_opening_angle(energy):
    rng = np.random.default_rng(1)
    n = 50_000
    direction = K.direction_from_eta_phi(rng.uniform(-1.4, 1.4, n), rng.uniform(-3, 3, n))
    _, d1, _, d2 = K.two_body_decay_massless(np.full(n, energy), direction, C.PI0_MASS, rng)
    opening = np.arccos(np.clip(np.sum(d1 * d2, axis=1), -1, 1))
    expected = 2 * math.asin(C.PI0_MASS / energy)
    assert opening.min() == pytest.approx(expected, rel=0.01)
    assert opening.min() >= expected * (1 - 1e-6)


def test_pi0_photon_energy_asymmetry_is_flat():
    rng = np.random.default_rng(2)
    n, energy = 50_000, 5.0
    direction = K.direction_from_eta_phi(np.zeros(n), np.zeros(n))
    e1, _, e2, _ = K.two_body_decay_massless(np.full(n, energy), direction, C.PI0_MASS, rng)
    np.testing.assert_allclose(e1 + e2, energy, rtol=1e-12)
    beta = math.sqrt(1 - (C.PI0_MASS / energy) ** 2)
    asym = (e1 - e2) / (e1 + e2)
    assert np.abs(asym).max() <= beta + 1e-9
    assert stats.kstest(asym, stats.uniform(-beta, 2 * beta).cdf).pvalue > 0.01


def test_pi0_truth_keeps_both_photons():
    config = SimConfig(particles=("pi0",), energy="20", n_events=200, material_scale=0)
    batch = simulate_batch(config, 200, 3)
    t = batch.truth
    assert np.all(np.diff(batch.truth_offsets) == 3)
    photons = t["pdg"] == 22
    np.testing.assert_array_equal(t["parent"][photons], 0)
    np.testing.assert_allclose(t["energy"][photons].reshape(-1, 2).sum(axis=1), 20.0, rtol=1e-5)


# --- EM shower shape before readout ----------------------------------------------------------
def _containment_and_tmax(energy: float, photon: bool, n_showers: int, max_spots: int = 3000):
    """Mean containment in 1 and 3.5 Moliere radii and the peak of the mean profile [X0].

    The spot cap only sets fluctuations, not the mean profile. The peak is the vertex of a
    parabola fitted to the mean profile within +-1.5 X0 of its highest bin.
    """
    showers.seed(11)
    inside_1, inside_35, profile = [], [], np.zeros(400)
    for _ in range(n_showers):
        t, r, e = showers.em_shower_spots(energy, photon, max_spots)
        inside_1.append(e[r < 1.0].sum() / energy)
        inside_35.append(e[r < 3.5].sum() / energy)
        profile += np.histogram(t, bins=400, range=(0, 40), weights=e)[0]
    centres = (np.arange(400) + 0.5) * 0.1
    top = np.argmax(np.convolve(profile, np.ones(9) / 9, mode="same"))
    near = np.abs(centres - centres[top]) <= 1.5
    c2, c1, _ = np.polyfit(centres[near], profile[near], 2)
    return np.mean(inside_1), np.mean(inside_35), -c1 / (2 * c2)


@pytest.mark.parametrize("energy", [5.0, 50.0, 500.0])
def test_em_lateral_containment_in_moliere_radii(energy):
    f1, f35, _ = _containment_and_tmax(energy, photon=False, n_showers=300)
    assert f1 == pytest.approx(0.90, abs=0.03)
    assert f35 == pytest.approx(0.99, abs=0.03)


@pytest.mark.parametrize("energy", [1.0, 10.0, 100.0, 500.0])
@pytest.mark.parametrize("photon", [False, True])
def test_em_longitudinal_maximum(energy, photon):
    _, f35, tmax = _containment_and_tmax(energy, photon, n_showers=1500)
    expected = math.log(energy / C.PBWO4_CRITICAL_ENERGY) + (0.5 if photon else -0.5)
    assert tmax == pytest.approx(expected, abs=0.5)
    assert f35 == pytest.approx(0.99, abs=0.03)


# --- crystals: containment and resolution ----------------------------------------------------
def test_unconverted_photon_containment_matches_cms():
    config = SimConfig(
        particles=("gamma",),
        energy="50",
        n_events=1000,
        eta_max=0.2,
        material_scale=0,
        readout=ReadoutConfig(enabled=False),
    )
    batch = simulate_batch(config, 1000, 5)
    sums = window_sums(batch, "deposit")
    assert np.mean(sums[1] / 50.0) == pytest.approx(0.94, abs=0.02)
    assert np.mean(sums[2] / 50.0) == pytest.approx(0.97, abs=0.02)


def test_e5x5_resolution_recovers_stochastic_and_noise_terms():
    """Fit sigma/E = a/sqrt(E) (+) b/E (+) c to the E5x5 resolution of photons hitting the central
    part of a crystal (as in CMS's test beam). The shower's own containment fluctuations
    (measured on the same events from the true deposits) are subtracted in quadrature, so the
    fit sees what the readout adds: it must give back the configured stochastic term and the
    noise term of 25 crystals of exact noise.
    """
    energies = np.array([2.0, 5.0, 10.0, 25.0, 50.0, 100.0])
    readout = ReadoutConfig()
    rel, intrinsic, counts = [], [], []
    for i, energy in enumerate(energies):
        config = SimConfig(
            particles=("gamma",),
            energy=str(energy),
            n_events=1200,
            eta_max=0.5,
            material_scale=0,
            max_spots=5000,
        )
        batch = simulate_batch(config, 1200, 100 + i)
        prim = batch.primaries()
        f_eta = (prim["impact_eta"] + GEOMETRY.eta_max) / GEOMETRY.deta % 1.0
        f_phi = np.mod(prim["impact_phi"], 2 * np.pi) / GEOMETRY.dphi % 1.0
        central = (np.abs(f_eta - 0.5) < 0.3) & (np.abs(f_phi - 0.5) < 0.3)
        e5 = window_sums(batch, "energy")[2][central]
        d5 = window_sums(batch, "deposit")[2][central]
        rel.append(e5.std() / e5.mean())
        intrinsic.append(d5.std() / d5.mean())
        counts.append(central.sum())
    readout_rel = np.sqrt(np.array(rel) ** 2 - np.array(intrinsic) ** 2)

    def model(e, a, b, c):
        return np.sqrt((a / np.sqrt(e)) ** 2 + (b / e) ** 2 + c**2)

    (a, b, c), _ = optimize.curve_fit(
        model,
        energies,
        readout_rel,
        p0=(0.03, 0.2, 0.003),
        sigma=readout_rel / np.sqrt(2 * np.array(counts)),
        bounds=(0, 1),
    )
    assert a == pytest.approx(readout.stochastic_term, rel=0.2)
    assert b == pytest.approx(5 * readout.noise, rel=0.2)
    assert c < 0.005  # intercalibration spread of 0.3 %, shared among the crystals
    # and the full resolution is the readout's (+) the shower's own fluctuations
    np.testing.assert_array_less(readout_rel, rel)


# --- hadrons and muons -----------------------------------------------------------------------
def test_pion_showering_fraction_follows_interaction_length():
    config = SimConfig(
        particles=("pi+", "pi-"), energy="10", n_events=4000, eta_max=0.3, material_scale=0
    )
    batch = simulate_batch(config, 4000, 7)
    prim = batch.primaries()
    reached = prim["reached_calo"] == 1
    showering = prim["interaction_depth"][reached] < C.ECAL_BARREL_CRYSTAL_LENGTH
    expected = 1 - math.exp(-C.ECAL_BARREL_CRYSTAL_LENGTH / C.PBWO4_NUCLEAR_INTERACTION_LENGTH)
    assert showering.mean() == pytest.approx(expected, abs=0.03)
    # showering pions deposit far more than a MIP, and their response is below e/h = 1
    dep = prim["deposited"][reached]
    assert np.median(dep[showering]) > 5 * np.median(dep[~showering])
    assert dep[showering].mean() < 0.8 * 10.0


@pytest.mark.parametrize(("particle", "energy"), [("mu-", 0.6), ("pi+", 1.0)])
def test_mip_peak(particle, energy):
    """Near minimum ionization (beta gamma ~ 5-7) the peak of the deposit of a track crossing
    the whole crystal sits near L dE/dx_min; at higher momenta the Landau-Vavilov most probable
    value rises with the density-effect-limited relativistic rise (to ~1.15 L dE/dx_min)."""
    # no field: the tracks cross the crystals along their axes (1 GeV tracks bend by ~50 deg)
    config = SimConfig(
        particles=(particle,),
        energy=str(energy),
        n_events=3000,
        eta_max=0.3,
        material_scale=0,
        field=0.0,
    )
    batch = simulate_batch(config, 3000, 8)
    prim = batch.primaries()
    ok = (prim["reached_calo"] == 1) & ~(prim["interaction_depth"] < C.ECAL_BARREL_CRYSTAL_LENGTH)
    dep = prim["deposited"][ok]
    hist, edges = np.histogram(dep, bins=120, range=(0.1, 0.5))
    smooth = np.convolve(hist, np.ones(5) / 5, mode="same")
    peak = 0.5 * (edges[np.argmax(smooth)] + edges[np.argmax(smooth) + 1])
    reference = C.ECAL_BARREL_CRYSTAL_LENGTH * C.PBWO4_DEDX_MIN
    assert peak == pytest.approx(reference, rel=0.10)
    mass = 0.1056583755 if particle == "mu-" else 0.13957039
    mpv, _ = showers.mip_most_probable(C.ECAL_BARREL_CRYSTAL_LENGTH, energy, mass)
    assert peak == pytest.approx(mpv, rel=0.05)


# --- conversions and field -------------------------------------------------------------------
def test_conversion_probability_follows_material_budget():
    config = SimConfig(
        particles=("gamma",), energy="20", n_events=4000, readout=ReadoutConfig(enabled=False)
    )
    batch = simulate_batch(config, 4000, 9)
    prim = batch.primaries()
    expected = K.conversion_probability(K.material_budget(prim["eta"].astype(float)))
    observed = prim["converted"].astype(float)
    # compare in |eta| bins with binomial errors
    bins = np.digitize(np.abs(prim["eta"]), [0.35, 0.7, 1.05])
    for b in range(4):
        sel = bins == b
        err = math.sqrt(expected[sel].mean() * (1 - expected[sel].mean()) / sel.sum())
        assert abs(observed[sel].mean() - expected[sel].mean()) < 4 * err + 0.01


def test_conversion_pairs_bend_opposite_ways():
    config = SimConfig(
        particles=("gamma",),
        energy="5",
        n_events=2000,
        material_scale=3.0,
        readout=ReadoutConfig(enabled=False),
    )
    batch = simulate_batch(config, 2000, 10)
    t = batch.truth
    ev = batch.truth_event_index()
    electrons = (np.abs(t["pdg"]) == 11) & (t["reached_calo"] == 1)
    parent_row = batch.truth_offsets[ev[electrons]] + t["parent"][electrons]
    dphi = (t["impact_phi"][electrons] - t["phi"][parent_row] + np.pi) % (2 * np.pi) - np.pi
    charge = -np.sign(t["pdg"][electrons])
    # B along +z: positive charges turn clockwise, to smaller phi
    assert np.mean(np.sign(dphi) == -charge) > 0.99


def test_helix_reaches_the_expected_azimuth():
    pt, field, radius = 5.0, 3.8, 129.0
    r_curv = pt / (C.MAGNETIC_RIGIDITY_GEV_PER_T_M * field) * 100
    direction = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    impact, _, path, reached = K.propagate_to_cylinder(
        np.zeros((2, 3)), direction, np.array([pt, pt]), np.array([1.0, -1.0]), radius, field
    )
    assert reached.all()
    expected = math.asin(radius / (2 * r_curv))
    phi = np.arctan2(impact[:, 1], impact[:, 0])
    np.testing.assert_allclose(phi, [-expected, expected], rtol=1e-9)
    np.testing.assert_allclose(path, 2 * r_curv * expected, rtol=1e-9)


# --- readout noise ---------------------------------------------------------------------------
def test_noise_outside_signal_is_statistically_exact():
    readout = ReadoutConfig()
    config = SimConfig(particles=("mu-",), energy="5", n_events=2000, material_scale=0)
    batch = simulate_batch(config, 2000, 12)
    noise_only = (batch.hits["deposit"] == 0) & (batch.hits["energy"] > readout.zs_threshold)
    per_event = np.bincount(batch.hit_event_index()[noise_only], minlength=batch.n_events)
    q = stats.norm.sf(readout.zs_threshold / readout.noise)
    # muons' read-out regions hold a few tens of crystals; the rest of the barrel is free
    expected = GEOMETRY.n_cells * q
    assert per_event.mean() == pytest.approx(expected, rel=0.03)
    tail_mean = readout.noise * stats.norm.pdf(3.0) / q
    values = batch.hits["energy"][noise_only]
    assert values.mean() == pytest.approx(tail_mean, rel=0.02)
    assert values.min() > readout.zs_threshold
