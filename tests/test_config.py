"""Configuration parsing and validation: every bad value names its field."""

from __future__ import annotations

import numpy as np
import pytest

from fastreco.errors import InputError
from fastreco.sim.config import EnergySpectrum, SimConfig, particle_pdg


@pytest.mark.parametrize(
    ("text", "kind", "low", "high"),
    [("8", "fixed", 8, 8), ("1:100", "flat", 1, 100), ("log:1:500", "log", 1, 500)],
)
def test_energy_spectrum_parsing(text, kind, low, high):
    spec = EnergySpectrum.parse(text)
    assert (spec.kind, spec.low, spec.high) == (kind, low, high)
    values = spec.sample(np.random.default_rng(0), 20_000)
    assert values.min() >= low
    assert values.max() <= high
    if kind == "log":  # flat in log E: median at the geometric mean
        assert np.median(values) == pytest.approx(np.sqrt(low * high), rel=0.05)


@pytest.mark.parametrize("text", ["0", "-5", "5:1", "3:3", "abc", "log:1", "nan", "1:inf"])
def test_bad_energies(text):
    with pytest.raises(InputError, match="field 'energy'"):
        EnergySpectrum.parse(text)


def test_particle_names_follow_the_particle_package():
    assert particle_pdg("gamma") == 22
    assert particle_pdg("pi0") == 111
    assert particle_pdg("e+") == -11
    with pytest.raises(InputError, match="valid names are gamma, pi0, e-"):
        particle_pdg("kaon")


def test_eta_outside_the_barrel():
    with pytest.raises(InputError, match=r"field 'eta_max', value 2\.0"):
        SimConfig(eta_max=2.0)


def test_energy_below_the_mass_is_refused():
    from fastreco.sim.ecal import simulate_batch

    with pytest.raises(InputError, match="heaviest particle"):
        simulate_batch(SimConfig(particles=("pi0",), energy="0.1"), 5, 1)


def test_shard_key_ignores_event_count_only():
    a = SimConfig(n_events=100)
    assert a.shard_key() == SimConfig(n_events=999).shard_key()
    assert a.shard_key() != SimConfig(n_events=100, seed=2).shard_key()
    assert SimConfig.from_dict(a.to_dict()) == a
