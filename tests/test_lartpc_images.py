"""LArTPC images: labels, patches, tiles and the checks of bad input."""

from __future__ import annotations

import numpy as np
import pytest

from fastreco.data.lartpc_images import (
    CLASS_EM,
    CLASS_NONE,
    CLASS_TRACK,
    downsample_drift,
    event_image,
    extract_patches,
    hit_labels,
    iter_tiles,
    validate_image,
)
from fastreco.data.store import HIT_FIELDS, TRUTH_COLUMNS, EventBatch
from fastreco.errors import InputError
from fastreco.geometry.ecal_barrel import EcalBarrel
from fastreco.geometry.lartpc import LArTpcPlane

PLANE = LArTpcPlane(n_wires=16, n_ticks=64)


def _batch(cells: list[int], energy: list[float], rows: list[int], pdg: list[int],
           parent: list[int]) -> EventBatch:  # fmt: skip
    """One event with the given hits and truth rows (other columns zero)."""
    n, m = len(cells), len(pdg)
    hits = {name: np.zeros(n, dtype) for name, dtype in HIT_FIELDS.items()}
    hits["cell"][:] = cells
    hits["energy"][:] = energy
    hits["truth_particle"][:] = rows
    truth = {name: np.zeros(m, dtype) for name, dtype in TRUTH_COLUMNS.items()}
    truth["pdg"][:] = pdg
    truth["parent"][:] = parent
    return EventBatch(np.array([0, n]), hits, np.array([0, m]), truth)


def test_labels_track_em_none_and_michel():
    # rows: 0 mu-, 1 its Michel e-, 2 proton, 3 photon, 4 electron from a pion (not Michel)
    batch = _batch(
        cells=[0, 1, 2, 3, 4, 5],
        energy=[10, 20, 30, 40, 50, 60],
        rows=[0, 1, 2, 3, 4, -1],
        pdg=[13, 11, 2212, 22, -11, 211],
        parent=[-1, 0, -1, -1, 5, -1],
    )
    labels, michel = hit_labels(batch)
    assert list(labels) == [CLASS_TRACK, CLASS_EM, CLASS_TRACK, CLASS_EM, CLASS_EM, CLASS_NONE]
    assert list(michel) == [False, True, False, False, False, False]


def test_event_image_dense_arrays():
    cells = [PLANE.cell_id(3, 10), PLANE.cell_id(3, 11), PLANE.cell_id(15, 63)]
    batch = _batch([int(c) for c in cells], [5.0, 7.0, 9.0], [0, 1, -1], [-13, -11], [-1, 0])
    image = event_image(batch, 0, PLANE)
    assert image.adc.shape == image.label.shape == image.michel.shape == PLANE.shape
    assert image.adc[3, 10] == 5.0
    assert image.adc[15, 63] == 9.0
    assert image.label[3, 10] == CLASS_TRACK
    assert image.label[3, 11] == CLASS_EM
    assert image.michel[3, 11]
    assert image.michel.sum() == 1
    assert np.sum(image.label != CLASS_NONE) == 2
    assert list(image.hit_wire) == [3, 3, 15]
    assert list(image.hit_tick) == [10, 11, 63]


def test_empty_event_is_handled_explicitly():
    batch = _batch([], [], [], [], [])
    image = event_image(batch, 0, PLANE)
    assert image.n_hits == 0
    assert not image.adc.any()
    check = validate_image(image.adc, PLANE)
    assert check.empty
    assert not check.saturated
    with pytest.raises(InputError, match="empty event"):
        validate_image(image.adc, PLANE, allow_empty=False)


@pytest.mark.parametrize(
    ("cells", "energy", "field"),
    [
        ([PLANE.n_cells], [1.0], "hits/cell"),
        ([-5], [1.0], "hits/cell"),
        ([3], [float("nan")], "hits/energy"),
    ],
)
def test_event_image_bad_hits(cells, energy, field):
    batch = _batch(cells, energy, [-1], [], [])
    with pytest.raises(InputError, match=f"field '{field}'") as err:
        event_image(batch, 0, PLANE, source="store/x.h5")
    assert "store/x.h5" in str(err.value)


def test_event_image_bad_geometry_and_index():
    batch = _batch([1], [1.0], [-1], [], [])
    with pytest.raises(InputError, match="field 'detector'"):
        event_image(batch, 0, EcalBarrel())  # type: ignore[arg-type]
    with pytest.raises(InputError, match="field 'event'"):
        event_image(batch, 1, PLANE)


def test_validate_image_shape_nan_saturation():
    with pytest.raises(InputError, match=r"field 'adc'.*\(64, 16\)"):
        validate_image(np.zeros((64, 16)), PLANE)
    with pytest.raises(InputError, match="field 'adc'"):
        validate_image(np.zeros((16, 64, 1)), PLANE)
    bad = np.zeros(PLANE.shape, np.float32)
    bad[2, 5] = np.nan
    with pytest.raises(InputError, match="wire 2, tick 5"):
        validate_image(bad, PLANE)
    image = np.zeros(PLANE.shape, np.float32)
    image[1, 1] = 12.0
    image[4, 4] = PLANE.saturation
    check = validate_image(image, PLANE)
    assert check.n_nonzero == 2
    assert check.n_saturated == 1
    assert check.saturated


def test_patches_centre_values_and_padding():
    rng = np.random.default_rng(0)
    image = rng.random(PLANE.shape).astype(np.float32)
    wire = np.array([8, 0, 15])
    tick = np.array([30, 0, 63])
    patches = extract_patches(image, wire, tick, size=8)
    assert patches.shape == (3, 8, 8)
    assert patches.dtype == np.float32
    np.testing.assert_array_equal(patches[0], image[4:12, 26:34])
    for k in range(3):
        assert patches[k, 4, 4] == image[wire[k], tick[k]]
    assert np.all(patches[1, :4, :] == 0)
    assert np.all(patches[1, :, :4] == 0)
    assert np.all(patches[2, 5:, :] == 0)
    assert np.all(patches[2, :, 5:] == 0)


def test_patches_drift_downsampling():
    image = np.arange(PLANE.n_cells, dtype=np.float32).reshape(PLANE.shape)
    reduced = downsample_drift(image, 4)
    assert reduced.shape == (16, 16)
    assert reduced[2, 3] == image[2, 12:16].mean()
    assert downsample_drift(image, 4, "max")[2, 3] == image[2, 15]
    patches = extract_patches(image, [8], [30], size=6, drift_downsample=4)
    np.testing.assert_array_equal(patches[0], reduced[5:11, 4:10])  # tick 30 -> column 7
    with pytest.raises(InputError, match="field 'drift_downsample'"):
        downsample_drift(image, 0)
    with pytest.raises(InputError, match="centre outside"):
        extract_patches(image, [16], [0], size=4)


def test_tiles_cover_the_image():
    rng = np.random.default_rng(1)
    image = rng.random((20, 50)).astype(np.float32)
    rebuilt = np.zeros_like(image)
    tiles = list(iter_tiles(image, tile=(8, 16)))
    assert len(tiles) == 3 * 4
    for t in tiles:
        assert t.data.shape == (8, 16)
        piece = rebuilt[t.wire0 : t.wire0 + 8, t.tick0 : t.tick0 + 16]
        piece[...] = t.data[: piece.shape[0], : piece.shape[1]]
    np.testing.assert_array_equal(rebuilt, image)
    overlapping = list(iter_tiles(image, tile=(8, 16), overlap=4))
    assert overlapping[1].tick0 == 12
    with pytest.raises(InputError, match="field 'tile'"):
        list(iter_tiles(image, tile=(4, 4), overlap=4))
