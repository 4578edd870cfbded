"""Classical HGCAL baselines: calibrated sum, barycentre, software compensation; truth targets."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fastreco import constants as C
from fastreco.data.hgcal_targets import single_particle_targets, true_deposit_weights
from fastreco.errors import InputError
from fastreco.geometry.hgcal import HgcalEndcap
from fastreco.reco.hgcal_energy import (
    CalibratedEnergySum,
    Hits,
    SoftwareCompensation,
    barycenter,
    expected_sampling_sigma,
    relative_resolution,
)
from fastreco.sim.hgcal import HgcalSimConfig, simulate_hgcal_batch

GEOMETRY = HgcalEndcap()
CLEAN = {"vertex_sigma_z": 0.0, "eta_min": 1.8, "eta_max": 2.6, "energy": "log:10:500"}
#: one fine cell's size [cm]: the side of a square of its area
CELL_SIZE = math.sqrt(C.HGCAL_FINE_CELL_AREA)


def _sample(particle: str, n: int, seed: int):
    cfg = HgcalSimConfig(particles=(particle,), n_particles=1, **CLEAN)
    batch = simulate_hgcal_batch(cfg, n, seed, GEOMETRY)
    return batch, single_particle_targets(batch, GEOMETRY)


@pytest.fixture(scope="module")
def electrons():
    return _sample("e-", 300, 11), _sample("e-", 300, 12)


@pytest.fixture(scope="module")
def pions():
    return _sample("pi+", 500, 21), _sample("pi+", 300, 22)


def test_true_barycentre_is_the_gun_deposit_weighted_mean(electrons):
    (batch, truth), _ = electrons
    w = true_deposit_weights(batch)
    assert np.all(w >= 0)
    # without pileup every deposit is the gun particle's (noise hits deposit nothing)
    np.testing.assert_allclose(w, batch.hits["deposit"] * batch.hits["truth_fraction"], rtol=1e-6)
    e = 3
    a, b = batch.offsets[e], batch.offsets[e + 1]
    pos = GEOMETRY.cell_position(batch.hits["cell"][a:b])
    assert truth["barycenter_x"][e] == pytest.approx(np.average(pos["x"], weights=w[a:b]))
    assert truth["barycenter_z"][e] == pytest.approx(np.average(pos["z"], weights=w[a:b]))
    # the impact lies on the front face near the shower's direction
    assert np.all(truth["impact_z"] == GEOMETRY.z_front)
    r_impact = np.hypot(truth["impact_x"], truth["impact_y"])
    r_bary = (
        np.hypot(truth["barycenter_x"], truth["barycenter_y"])
        * GEOMETRY.z_front
        / truth["barycenter_z"]
    )
    assert np.median(np.abs(r_impact - r_bary)) < 1.0


def test_calibrated_sum_of_electrons_has_unit_response_and_the_sampling_resolution(electrons):
    (train, t_train), (test, t_test) = electrons
    cal = CalibratedEnergySum(GEOMETRY).fit(train, t_train["energy"])
    pred = cal.predict(test)
    mean, rms = relative_resolution(pred, t_test["energy"])
    assert abs(mean) < 0.01  # response 1 within 1 %
    # the simulation's sampling fluctuations alone: var = k sum w_i E_i (k = 4 MIP); the pull's
    # spread is 1 when nothing else (leakage, noise, the calibration) matters
    pull = (pred - t_test["energy"]) / expected_sampling_sigma(test, GEOMETRY)
    assert 0.85 < np.std(pull) < 1.25
    assert rms < 0.06


def test_calibration_round_trips_through_json(electrons):
    (train, t_train), (test, _) = electrons
    cal = CalibratedEnergySum(GEOMETRY, radius=20.0).fit(train, t_train["energy"])
    again = CalibratedEnergySum.from_dict(json.loads(json.dumps(cal.to_dict())))
    np.testing.assert_array_equal(again.predict(test), cal.predict(test))


def test_cone_keeps_an_isolated_shower(electrons):
    (batch, _), _ = electrons
    all_hits = CalibratedEnergySum(GEOMETRY).section_energies(batch).sum(axis=1)
    cone = CalibratedEnergySum(GEOMETRY, radius=15.0).section_energies(batch).sum(axis=1)
    assert np.all(cone <= all_hits + 1e-9)
    assert np.median(cone / all_hits) > 0.99


def test_software_compensation_improves_pion_resolution(pions):
    (train, t_train), (test, t_test) = pions
    hits_train, hits_test = Hits.from_batch(train, GEOMETRY), Hits.from_batch(test, GEOMETRY)
    cal = CalibratedEnergySum(GEOMETRY).fit(hits_train, t_train["energy"])
    sc = SoftwareCompensation(GEOMETRY).fit(hits_train, t_train["energy"])
    _, rms_cal = relative_resolution(cal.predict(hits_test), t_test["energy"])
    mean_sc, rms_sc = relative_resolution(sc.predict(hits_test), t_test["energy"])
    assert rms_sc < 0.85 * rms_cal  # measured ~0.094 vs ~0.13 on 600-event samples
    assert abs(mean_sc) < 0.02
    # sparse hits (the non-EM part, seen with h/e < 1) get larger weights than dense ones
    w = sc.weights(50.0)[0]
    assert w[:2].mean() > w[-2:].mean()
    again = SoftwareCompensation.from_dict(json.loads(json.dumps(sc.to_dict())))
    np.testing.assert_allclose(again.predict(hits_test), sc.predict(hits_test))


@pytest.mark.parametrize("kind", ["electrons", "pions"])
def test_barycentre_within_a_cell_of_the_true_one(kind, request):
    (batch, truth), _ = request.getfixturevalue(kind)
    reco = barycenter(batch, GEOMETRY, method="linear")
    true = np.stack([truth["barycenter_x"], truth["barycenter_y"], truth["barycenter_z"]], axis=1)
    d = np.abs(reco - true)
    assert np.median(d[:, 0]) < CELL_SIZE
    assert np.median(d[:, 1]) < CELL_SIZE
    log = barycenter(batch, GEOMETRY, method="log", w0=4.0)
    assert np.median(np.abs(log - true)[:, :2]) < 2 * CELL_SIZE


def test_bad_fit_input_names_the_field(electrons):
    (batch, _), _ = electrons
    with pytest.raises(InputError) as info:
        CalibratedEnergySum(GEOMETRY).fit(batch, np.zeros(batch.n_events))
    assert info.value.field == "true_energy"
    with pytest.raises(InputError) as info:
        barycenter(batch, GEOMETRY, method="cubic")  # type: ignore[arg-type]
    assert info.value.field == "method"
