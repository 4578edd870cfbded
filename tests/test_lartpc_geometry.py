"""The LArTPC collection plane: cell ids, positions, registry round trip, bad parameters."""

from __future__ import annotations

import numpy as np
import pytest

from fastreco import constants as C
from fastreco.errors import InputError
from fastreco.geometry import DETECTORS, detector_from_attrs
from fastreco.geometry.lartpc import LArTpcPlane


def test_defaults_are_one_protodune_apa_face():
    g = LArTpcPlane()
    assert g.shape == (480, 6000)
    assert g.n_cells == 480 * 6000
    assert g.wire_pitch == pytest.approx(0.479)
    assert g.tick_length == pytest.approx(0.08)  # 0.5 us * 1.6 mm/us
    assert g.drift_length == pytest.approx(480.0)  # 3 ms of drift
    assert g.saturation == 4095 - 900
    assert g.total_noise_adc == pytest.approx(np.hypot(C.LARTPC_NOISE_ADC, 1.0))


def test_cell_ids_round_trip_vectorized():
    g = LArTpcPlane(n_wires=128, n_ticks=256)
    wire = np.array([0, 5, 127, 127])
    tick = np.array([0, 17, 0, 255])
    cell = g.cell_id(wire, tick)
    assert cell.dtype == np.int32
    np.testing.assert_array_equal(cell, wire * 256 + tick)
    w, t = g.wire_tick(cell)
    np.testing.assert_array_equal(w, wire)
    np.testing.assert_array_equal(t, tick)
    np.testing.assert_array_equal(g.cell_id([-1, 128, 3], [0, 0, 256]), [-1, -1, -1])


def test_positions_and_inverse():
    g = LArTpcPlane(n_wires=128, n_ticks=256)
    pos = g.cell_position(g.cell_id([10], [100]))
    assert pos["x"][0] == pytest.approx(10.5 * 0.479)
    assert pos["z"][0] == pytest.approx(100.5 * 0.08)
    assert pos["time"][0] == pytest.approx(100 * 500.0)
    assert g.wire_at(pos["x"])[0] == 10
    assert g.tick_at(pos["z"])[0] == 100
    assert g.wire_at([-0.1])[0] == -1


def test_registry_round_trip():
    g = LArTpcPlane(n_wires=64, n_ticks=300, noise_adc=3.0)
    assert DETECTORS.resolve("lartpc") is LArTpcPlane
    assert detector_from_attrs(g.name, g.to_dict()) == g


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"n_wires": 0}, "n_wires"),
        ({"n_ticks": 2.5}, "n_ticks"),
        ({"n_wires": 100_000, "n_ticks": 100_000}, "n_ticks"),
        ({"wire_pitch": -1.0}, "wire_pitch"),
        ({"noise_adc": float("nan")}, "noise_adc"),
        ({"pedestal": 5000.0}, "pedestal"),
    ],
)
def test_bad_parameters_name_the_field(params, field):
    with pytest.raises(InputError, match=f"field '{field}'"):
        LArTpcPlane(**params)


def test_image_shape_check():
    g = LArTpcPlane(n_wires=16, n_ticks=32)
    g.check_image_shape((16, 32))
    with pytest.raises(InputError, match="field 'adc'"):
        g.check_image_shape((32, 16))
