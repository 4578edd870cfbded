"""LArTPC simulation: ionization, Michel spectrum, conversions, Bragg peak, diffusion, readout,
labels, the event store round trip, determinism, bad input and the CLI (tiny seeded planes)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fastreco import constants as C
from fastreco.data.lartpc_images import CLASS_EM, CLASS_TRACK, event_image, validate_image
from fastreco.data.store import EventStore
from fastreco.errors import InputError
from fastreco.geometry.lartpc import LArTpcPlane
from fastreco.sim import lartpc_transport as T
from fastreco.sim.lartpc import (
    LArTpcSimConfig,
    Primary,
    events_to_batch,
    michel_energy,
    simulate_event,
    simulate_lartpc_batch,
)
from fastreco.sim.lartpc_engine import simulate_lartpc
from fastreco.sim.lartpc_readout import (
    diffusion_sigma,
    digitize,
    drift_charge,
    shape_signal,
    shaping_response,
)

PLANE = LArTpcPlane(n_wires=256, n_ticks=2048)
QUIET = LArTpcSimConfig(n_wires=256, n_ticks=2048, noise=False)


def _per_wire_dedx(event, geometry: LArTpcPlane) -> np.ndarray:
    """True dE/dx [MeV/cm] per wire of a track running across the wires."""
    wire, _ = geometry.wire_tick(event.digitized.cell)
    per_wire = np.bincount(wire, weights=event.digitized.deposit, minlength=geometry.n_wires)
    return per_wire / geometry.wire_pitch * 1e3


def test_muon_dedx_landau():
    """1 GeV muons across the wires: most probable ~1.6 MeV/cm per 4.79 mm wire (PDG
    Landau-Vavilov for 0.67 g/cm^2 of argon at beta gamma = 10 gives 1.64), mean ~2.2 MeV/cm
    (Bethe at beta gamma = 10: 1.05 x 2.105 MeV/cm), with the Landau tail above."""
    rng = np.random.default_rng(1)
    values = []
    for _ in range(8):
        muon = Primary(-13, 1.0, (0.5, 0.0, 80.0), (1.0, 0.0, 0.0))
        event = simulate_event(QUIET, rng, PLANE, primaries=[muon])
        values.append(_per_wire_dedx(event, PLANE)[5:250])
    dedx = np.concatenate(values)
    counts, edges = np.histogram(dedx, bins=np.arange(0.0, 5.0, 0.1))
    mode = edges[np.argmax(counts)] + 0.05
    assert 1.4 <= mode <= 1.8
    assert 1.9 <= dedx.mean() <= 2.6
    assert np.median(dedx) > mode  # the Landau tail
    assert np.quantile(dedx, 0.99) > 2 * mode


def test_michel_spectrum():
    """dN/dx ~ x^2 (3 - 2x): end point m_mu / 2, mean 0.7 E_max = 37.0 MeV, 18.75 % below x = 0.5."""
    energy = michel_energy(np.random.default_rng(2), 100_000) * 1e3
    assert energy.max() <= C.MICHEL_MAX_ENERGY * 1e3
    assert energy.max() > 52.0
    assert energy.mean() == pytest.approx(36.98, abs=0.25)
    assert np.mean(energy < 26.415) == pytest.approx(0.1875, abs=0.006)


def test_stopping_muons_give_michel_electrons():
    """mu+ always decay; with capture, only ~24 % of mu- do (tau_Ar / tau_free)."""
    rng = np.random.default_rng(3)
    plane = LArTpcPlane(n_wires=128, n_ticks=1024)
    config = LArTpcSimConfig(n_wires=128, n_ticks=1024, noise=False)
    energies, mu_minus_decays = [], 0
    for i in range(40):
        pdg = -13 if i < 20 else 13
        muon = Primary(pdg, 0.05, (30.0, 0.0, 40.0), (1.0, 0.0, 0.0))
        truth = simulate_event(config, rng, plane, primaries=[muon]).truth
        michel = (np.abs(truth["pdg"]) == 11) & (truth["parent"] == 0)
        if pdg == -13:
            assert michel.sum() == 1
            assert truth["pdg"][michel][0] == -11
        mu_minus_decays += int(pdg == 13 and michel.any())
        energies += list(truth["energy"][michel])
        if michel.any():  # the Michel starts where the muon stopped
            end = np.array([truth["vx"][michel][0], truth["vz"][michel][0]])
            assert np.hypot(*(end - [30.0, 40.0])) < 12.0  # 50 MeV muon: range ~ 10 cm
    assert max(energies) <= C.MICHEL_MAX_ENERGY
    assert mu_minus_decays <= 12  # expected 4.9 of 20


def test_photon_conversion_length():
    """High-energy photons convert after an exponential path of mean 9/7 X0 = 18 cm."""
    n = 2000
    photons = np.zeros((n, T.N_PCOLS))
    photons[:, T.P_KIND] = T.KIND_PHOTON
    photons[:, T.P_KE] = 0.02  # GeV: above the pair / Compton crossover, cheap cascades
    photons[:, T.P_UX] = 1.0
    photons[:, T.P_ROW] = np.arange(n)
    bounds = np.array([-1e4, 1e4, -1e4, 1e4, -1e4, 1e4])
    _, end = T.transport(photons, bounds, 0.3, seed=4)
    assert abs(C.LAR_PHOTON_CONVERSION_LENGTH - 18.0) < 0.01
    # 3 sigma of the mean of 2000 exponentials: 1.2 cm
    assert end[:, T.E_FIRST].mean() == pytest.approx(18.0, abs=1.2)
    assert np.all(end[:, T.E_STATUS] == T.STATUS_INTERACTED)


def test_photon_truth_records_conversion():
    rng = np.random.default_rng(5)
    gamma = Primary(22, 0.5, (20.0, 0.0, 80.0), (1.0, 0.0, 0.0))
    event = simulate_event(QUIET, rng, PLANE, primaries=[gamma])
    truth = event.truth
    assert truth["converted"][0] == 1
    start = 20.0 + truth["conversion_radius"][0]
    wire, _ = PLANE.wire_tick(event.digitized.cell)
    before = (wire + 1) * PLANE.wire_pitch < start
    # the photon is invisible before it converts: a gap (back-scattered cascade photons aside)
    assert event.digitized.deposit[before].sum() < 0.03 * event.digitized.deposit.sum()
    # 7 X0 of argon downstream: most of the shower is contained; stored pixels hold less than all
    assert 0.3 < truth["deposited"][0] <= 0.5
    assert event.digitized.deposit.sum() <= truth["deposited"][0] * (1 + 1e-5)


def test_proton_bragg_peak():
    """A 200 MeV proton: ~4.5 MeV/cm at the start, rising to > 15 MeV/cm over its last cm."""
    rng = np.random.default_rng(6)
    ends, starts = [], []
    for _ in range(3):
        proton = Primary(2212, 0.2, (0.5, 0.0, 80.0), (1.0, 0.0, 0.0))
        dedx = _per_wire_dedx(simulate_event(QUIET, rng, PLANE, primaries=[proton]), PLANE)
        wires = np.flatnonzero(dedx > 0)
        last = wires.max()
        ends.append(dedx[last - 1 : last + 1].mean())
        starts.append(dedx[2:12].mean())
        # CSDA range of 200 MeV protons in argon: ~26 cm (range-energy of the Bethe formula)
        assert 22.0 < (last + 1) * PLANE.wire_pitch < 31.0
    assert 3.8 < np.mean(starts) < 5.5
    assert np.mean(ends) > 3 * np.mean(starts)


def _point_steps(x: float, z: float) -> np.ndarray:
    steps = np.zeros((1, 9))
    steps[0, T.S_X0 : T.S_Z0 + 1] = (x, 0.0, z)
    steps[0, T.S_X1 : T.S_Z1 + 1] = (x + 1e-4, 0.0, z)
    steps[0, T.S_DE] = 1e-3
    return steps


def _weighted_std(values: np.ndarray, weight: np.ndarray) -> float:
    mean = np.average(values, weights=weight)
    return float(np.sqrt(np.average((values - mean) ** 2, weights=weight)))


def test_diffusion_grows_with_drift():
    """A point charge's spread along ticks and wires grows as sqrt(drift), as sigma_L, sigma_T."""
    plane = LArTpcPlane(n_wires=64, n_ticks=6000)
    x = 32.5 * plane.wire_pitch
    widths = {}
    for z in (2.0, 400.0):
        charge = drift_charge(_point_steps(x, z + 0.5 * plane.tick_length), plane)
        wires, ticks = np.nonzero(charge)
        weight = charge[wires, ticks]
        widths[z] = (_weighted_std(ticks, weight), _weighted_std(wires, weight))
    sig_l, sig_t = diffusion_sigma(400.0, plane)
    expect_ticks = np.sqrt((sig_l / plane.tick_length) ** 2 + 1 / 12)
    assert widths[400.0][0] == pytest.approx(expect_ticks, rel=0.1)
    assert widths[400.0][0] > 3 * widths[2.0][0]
    assert sig_t / plane.wire_pitch > 0.4  # 2.5 ms of drift: sigma_T ~ 0.21 cm
    assert widths[400.0][1] == pytest.approx(np.sqrt((sig_t / plane.wire_pitch) ** 2 + 1 / 12),
                                             rel=0.25)  # fmt: skip
    assert widths[2.0][1] < 0.2
    # and through the whole chain: a muon parallel to the wire plane far from it gives longer
    # pulses than one near it (shaping and diffusion in quadrature)
    config = LArTpcSimConfig(n_wires=64, n_ticks=6000, noise=False)
    rng = np.random.default_rng(7)
    pulse = {}
    for z in (5.0, 400.0):
        muon = Primary(-13, 1.0, (0.5, 0.0, z), (1.0, 0.0, 0.0))
        image = simulate_event(config, rng, plane, primaries=[muon], keep_image=True).digitized
        signal = image.image[10:50].astype(float) - plane.pedestal
        t = np.arange(plane.n_ticks)
        mean = (signal * t).sum(1) / signal.sum(1)
        pulse[z] = np.sqrt(((signal * (t - mean[:, None]) ** 2).sum(1) / signal.sum(1)).mean())
    grow = pulse[400.0] ** 2 - pulse[5.0] ** 2
    expect = ((diffusion_sigma(400.0, plane)[0] ** 2 - diffusion_sigma(5.0, plane)[0] ** 2)
              / plane.tick_length**2)  # fmt: skip
    assert grow == pytest.approx(expect, rel=0.3)


def test_adc_saturates_at_4095():
    plane = LArTpcPlane(n_wires=8, n_ticks=64)
    signal = np.zeros(plane.shape, dtype=np.float32)
    signal[2, 10] = 1e6
    raw = digitize(signal, plane, np.random.default_rng(8), noise=True)
    assert raw.max() == 4095
    assert raw[2, 10] == 4095
    # a high-gain readout saturates on a proton's Bragg peak; the stored hits show it
    hot = LArTpcPlane(n_wires=128, n_ticks=1024, electrons_per_adc=2.0)
    config = LArTpcSimConfig(n_wires=128, n_ticks=1024, noise=False)
    proton = Primary(2212, 0.1, (10.0, 0.0, 40.0), (1.0, 0.0, 0.0))
    event = simulate_event(config, np.random.default_rng(9), hot, primaries=[proton])
    assert event.digitized.adc.max() == hot.saturation
    batch = events_to_batch([event], hot)
    image = event_image(batch, 0, hot)
    assert image.hit_saturated.any()
    assert validate_image(image.adc, hot).saturated


def test_noise_rms_and_coherence():
    plane = LArTpcPlane(n_wires=96, n_ticks=4000)
    raw = digitize(np.zeros(plane.shape, np.float32), plane, np.random.default_rng(10), noise=True)
    noise = raw.astype(float) - plane.pedestal
    expected = np.sqrt(plane.noise_adc**2 + plane.coherent_noise_adc**2 + 1 / 12)  # + rounding
    assert noise.std() == pytest.approx(expected, rel=0.02)
    assert abs(noise.mean()) < 0.05
    same_group = np.corrcoef(noise[0], noise[1])[0, 1]
    other_group = np.corrcoef(noise[0], noise[60])[0, 1]
    assert same_group == pytest.approx(plane.coherent_noise_adc**2 / expected**2, abs=0.05)
    assert abs(other_group) < 0.05


def test_zero_suppression_keeps_few_noise_pixels():
    config = LArTpcSimConfig(kind="muon", n_wires=128, n_ticks=2048)
    event = simulate_event(config, np.random.default_rng(11))
    d = event.digitized
    assert d.adc.min() >= config.threshold(config.geometry())
    noise_only = np.sum(d.truth_row < 0)
    # P(gauss > 11 ADC / 2.7 ADC) ~ 2e-5 of 262k pixels (+ coherent-noise tails)
    assert noise_only < 60
    assert np.all(d.deposit[d.truth_row < 0] == 0)


def test_muon_plus_michel_labels():
    rng = np.random.default_rng(12)
    plane = LArTpcPlane(n_wires=128, n_ticks=1024)
    config = LArTpcSimConfig(n_wires=128, n_ticks=1024, noise=False)
    muon = Primary(-13, 0.08, (8.0, 0.0, 40.0), (1.0, 0.0, 0.0))
    event = simulate_event(config, rng, plane, primaries=[muon])
    batch = events_to_batch([event], plane)
    image = event_image(batch, 0, plane)
    row = batch.hits["truth_particle"]
    assert list(batch.truth["pdg"][:2]) == [-13, -11]
    assert np.all(image.hit_label[row == 0] == CLASS_TRACK)
    assert np.all(image.hit_label[row == 1] == CLASS_EM)
    assert np.array_equal(image.hit_michel, row == 1)
    assert image.hit_michel.sum() > 10
    assert image.michel.sum() == image.hit_michel.sum()
    assert np.all(image.label[image.michel] == CLASS_EM)
    assert np.all(image.label[image.adc == 0] == 2)  # "none" where nothing is stored
    np.testing.assert_array_equal(image.adc[image.hit_wire, image.hit_tick], batch.hits["energy"])


def test_neutrino_event_content():
    config = LArTpcSimConfig(kind="neutrino", n_wires=192, n_ticks=1536, cosmics=1.0)
    batch = simulate_lartpc_batch(config, 3, 13)
    assert batch.n_events == 3
    assert batch.n_hits > 300
    assert np.all(batch.hits["time"] == (batch.hits["cell"] % 1536) * 500.0)
    truth = batch.truth
    assert set(np.abs(truth["pdg"])) & {11, 13}
    parents = truth["parent"]
    assert np.all(
        parents < np.arange(len(parents)) - batch.truth_offsets[batch.truth_event_index()]
    )


def test_determinism_from_seed():
    config = LArTpcSimConfig(kind=("muon", "electron"), n_wires=64, n_ticks=512)
    a = simulate_lartpc_batch(config, 2, 21)
    b = simulate_lartpc_batch(config, 2, 21)
    c = simulate_lartpc_batch(config, 2, 22)
    for name in a.hits:
        np.testing.assert_array_equal(a.hits[name], b.hits[name])
    np.testing.assert_array_equal(a.truth["energy"], b.truth["energy"])
    assert not np.array_equal(a.truth["energy"], c.truth["energy"])


def test_shard_round_trip(tmp_path):
    config = LArTpcSimConfig(kind="muon", n_wires=64, n_ticks=512, n_events=3, events_per_shard=2)
    simulate_lartpc(config, tmp_path)
    store = EventStore(tmp_path)
    assert store.n_events == 3
    assert len(store.shards) == 2
    assert store.detector == config.geometry()
    assert store.attrs["generator"]["kind"] == ["muon"]
    direct = simulate_lartpc_batch(config, 2, np.random.SeedSequence([config.seed, 0]))
    read = store.read(0, 2)
    for name in direct.hits:
        np.testing.assert_array_equal(
            read.hits[name], direct.hits[name].astype(read.hits[name].dtype)
        )
    image = event_image(read, 0, store.detector, source=str(tmp_path))
    assert image.adc.shape == (64, 512)
    before = sorted(p.stat().st_mtime_ns for p in tmp_path.glob("shard-*.h5"))
    simulate_lartpc(config, tmp_path)  # resumes: nothing to redo
    assert sorted(p.stat().st_mtime_ns for p in tmp_path.glob("shard-*.h5")) == before


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"kind": "kaon"}, "kind"),
        ({"n_wires": 0}, "n_wires"),
        ({"energy": "2:1"}, "energy"),
        ({"cosmics": -1.0}, "cosmics"),
        ({"threshold_sigma": 0.0}, "threshold_sigma"),
        ({"n_particles": 50}, "n_particles"),
    ],
)
def test_bad_config_names_the_field(params, field):
    with pytest.raises(InputError, match=f"field '{field}'"):
        LArTpcSimConfig(**params)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastreco.cli", "simulate", "lartpc", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_tiny_plane(tmp_path):
    out = tmp_path / "lar"
    result = _cli("--output", str(out), "--events", "2", "--wires", "64", "--ticks", "256",
                  "--kind", "muon", "--seed", "3")  # fmt: skip
    assert result.returncode == 0, result.stderr
    store = EventStore(out)
    assert store.n_events == 2
    assert store.detector.shape == (64, 256)
    bad = _cli("--output", str(tmp_path / "bad"), "--kind", "kaon", "--events", "1")
    assert bad.returncode == 2
    assert "field 'kind'" in " ".join(bad.stderr.split())
    assert "Traceback" not in bad.stderr


def test_shaping_is_the_aligned_convolution():
    """The shaped pulse of a charge peaks at its arrival tick with Q / electrons_per_adc ADC."""
    plane = LArTpcPlane(n_wires=8, n_ticks=300)
    rng = np.random.default_rng(14)
    charge = np.zeros(plane.shape)
    charge[rng.integers(0, 8, 6), rng.integers(0, 300, 6)] = rng.random(6) * 1e4
    charge[:, 0] = 5e3
    charge[5, 299] = 3e3
    h, peak = shaping_response(plane)
    assert peak == 4  # 2 us peaking time, 0.5 us ticks
    direct = np.stack([np.convolve(row, h)[peak : peak + 300] for row in charge])
    direct /= plane.electrons_per_adc
    np.testing.assert_allclose(shape_signal(charge, plane), direct, atol=1e-3)
    single = np.zeros(plane.shape)
    single[2, 100] = 1960.0
    pulse = shape_signal(single, plane)[2]
    assert np.argmax(pulse) == 100
    assert pulse[100] == pytest.approx(1960.0 / plane.electrons_per_adc, rel=1e-5)
