"""LArTPC images, per-hit labels and patches: what the EM / track / Michel models read.

Stored LArTPC events (:mod:`fastreco.sim.lartpc`) are zero-suppressed pixels of a
(n_wires, n_ticks) collection-plane image. This module turns them into

* **labels** per hit in LArSoft EmTrackMichelId's order ``[track, em, none]``:
  :data:`CLASS_TRACK` (0) for hits whose dominant particle is a mu, pi+- or proton (K+- too),
  :data:`CLASS_EM` (1) for e+-, photons (and pi0) — Michel electrons included —, and
  :data:`CLASS_NONE` (2) for noise hits and pixels without a stored hit; plus a **Michel flag**
  for hits whose dominant particle is a Michel electron (|pdg| = 11 with a muon parent);
* dense images (:func:`event_image` -> :class:`LArImage`);
* patches around hits (:func:`extract_patches`, optionally down-sampling the drift axis like
  LArSoft's 60 x 60 patches) and whole-event tiles (:func:`iter_tiles`);
* checks of bad input (:func:`validate_image`): wrong shape for the geometry and NaN / inf raise
  :class:`~fastreco.errors.InputError`; empty images and saturated ADC are reported in an
  :class:`ImageCheck` (flags the caller acts on: an empty event has nothing to classify, a
  saturated pixel's charge is a lower bound).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from fastreco.data.store import EventBatch
from fastreco.errors import InputError
from fastreco.geometry.lartpc import LArTpcPlane

CLASS_TRACK = 0
CLASS_EM = 1
CLASS_NONE = 2
CLASS_NAMES = ("track", "em", "none")
TRACK_PDG = (13, 211, 321, 2212)
EM_PDG = (11, 22, 111)


@dataclasses.dataclass
class LArImage:
    """One event as dense images plus its stored pixels.

    Attributes:
        adc: float32 (n_wires, n_ticks), ADC above pedestal (0 where nothing was stored).
        label: int8 (n_wires, n_ticks), ``CLASS_*``; ``CLASS_NONE`` where no hit.
        michel: bool (n_wires, n_ticks), Michel-electron pixels.
        hit_wire, hit_tick: int64 (n_hits,), the stored pixels.
        hit_label: int8 (n_hits,); hit_michel: bool (n_hits,).
        hit_saturated: bool (n_hits,), pixels at the ADC's saturation.
    """

    adc: npt.NDArray[np.float32]
    label: npt.NDArray[np.int8]
    michel: npt.NDArray[np.bool_]
    hit_wire: npt.NDArray[np.int64]
    hit_tick: npt.NDArray[np.int64]
    hit_label: npt.NDArray[np.int8]
    hit_michel: npt.NDArray[np.bool_]
    hit_saturated: npt.NDArray[np.bool_]

    @property
    def n_hits(self) -> int:
        return len(self.hit_wire)


@dataclasses.dataclass(frozen=True)
class ImageCheck:
    """Outcome of :func:`validate_image`: ``n_nonzero`` signal pixels (``empty`` if none) and
    ``n_saturated`` pixels at the saturation level."""

    n_nonzero: int
    n_saturated: int

    @property
    def empty(self) -> bool:
        return self.n_nonzero == 0

    @property
    def saturated(self) -> bool:
        return self.n_saturated > 0


def hit_labels(batch: EventBatch) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.bool_]]:
    """Class (``CLASS_*``) and Michel flag of every hit of ``batch``, shapes (n_hits,)."""
    row = batch.hits["truth_particle"].astype(np.int64)
    has = row >= 0
    global_row = batch.truth_offsets[batch.hit_event_index()] + row
    pdg = np.abs(batch.truth["pdg"].astype(np.int64))
    labels = np.full(batch.n_hits, CLASS_NONE, dtype=np.int8)
    michel = np.zeros(batch.n_hits, dtype=bool)
    if not has.any():
        return labels, michel
    hit_pdg = pdg[global_row[has]]
    labels[np.flatnonzero(has)[np.isin(hit_pdg, TRACK_PDG)]] = CLASS_TRACK
    labels[np.flatnonzero(has)[np.isin(hit_pdg, EM_PDG)]] = CLASS_EM
    michel[has] = michel_rows(batch)[global_row[has]]
    return labels, michel


def michel_rows(batch: EventBatch) -> npt.NDArray[np.bool_]:
    """Truth rows (all events, shape (n_truth,)) that are Michel electrons: |pdg| = 11 with a
    muon parent."""
    pdg = np.abs(batch.truth["pdg"].astype(np.int64))
    parent = batch.truth["parent"].astype(np.int64)
    has_parent = parent >= 0
    global_parent = batch.truth_offsets[batch.truth_event_index()] + np.where(has_parent, parent, 0)
    parent_pdg = np.where(has_parent, pdg[global_parent], 0)
    return (pdg == 11) & (parent_pdg == 13)


def _check_hits(batch: EventBatch, geometry: LArTpcPlane, source: str | None) -> None:
    cell = batch.hits["cell"]
    bad = (cell < 0) | (cell >= geometry.n_cells)
    if bad.any():
        raise InputError(
            f"cell id outside the {geometry.n_wires} x {geometry.n_ticks} plane",
            source=source,
            field="hits/cell",
            value=int(cell[np.argmax(bad)]),
        )
    energy = batch.hits["energy"]
    if not np.all(np.isfinite(energy)):
        raise InputError(
            "non-finite ADC value",
            source=source,
            field="hits/energy",
            value=float(energy[np.argmax(~np.isfinite(energy))]),
        )


def event_image(
    batch: EventBatch, i: int, geometry: LArTpcPlane, *, source: str | None = None
) -> LArImage:
    """Dense image, labels and Michel flags of event ``i`` of ``batch``.

    Raises :class:`InputError` when ``geometry`` is not a LArTPC plane, ``i`` is not an event of
    the batch, a cell id lies outside the plane or an ADC value is not finite. An event without
    hits gives all-zero images and empty hit arrays.
    """
    if not isinstance(geometry, LArTpcPlane):
        raise InputError(
            "needs a LArTPC plane geometry",
            source=source,
            field="detector",
            value=getattr(geometry, "name", type(geometry).__name__),
        )
    if not 0 <= i < batch.n_events:
        raise InputError(
            f"no such event (the batch has {batch.n_events})", source=source, field="event", value=i
        )
    event = batch.event(i)
    _check_hits(event, geometry, source)
    labels, michel = hit_labels(event)
    wire, tick = geometry.wire_tick(event.hits["cell"])
    adc = np.zeros(geometry.shape, dtype=np.float32)
    label = np.full(geometry.shape, CLASS_NONE, dtype=np.int8)
    michel_img = np.zeros(geometry.shape, dtype=bool)
    adc[wire, tick] = event.hits["energy"]
    label[wire, tick] = labels
    michel_img[wire, tick] = michel
    return LArImage(
        adc=adc,
        label=label,
        michel=michel_img,
        hit_wire=wire,
        hit_tick=tick,
        hit_label=labels,
        hit_michel=michel,
        hit_saturated=event.hits["energy"] >= geometry.saturation,
    )


def validate_image(
    adc: npt.ArrayLike,
    geometry: LArTpcPlane,
    *,
    allow_empty: bool = True,
    source: str | None = None,
) -> ImageCheck:
    """Check a pedestal-subtracted image (n_wires, n_ticks) before it goes to a model.

    Raises :class:`InputError` for a shape other than the geometry's, NaN or inf values, and (with
    ``allow_empty=False``) an image without any signal. Returns the number of signal and of
    saturated pixels (at or above ``geometry.saturation``) otherwise.
    """
    array = np.asarray(adc)
    geometry.check_image_shape(array.shape, source=source)
    if not np.issubdtype(array.dtype, np.number):
        raise InputError("not a numeric image", source=source, field="adc", value=str(array.dtype))
    finite = np.isfinite(array)
    if not finite.all():
        w, t = np.unravel_index(int(np.argmin(finite)), array.shape)
        raise InputError(
            f"non-finite ADC value at wire {w}, tick {t}",
            source=source,
            field="adc",
            value=float(array[w, t]),
        )
    check = ImageCheck(
        n_nonzero=int(np.count_nonzero(array)),
        n_saturated=int(np.count_nonzero(array >= geometry.saturation)),
    )
    if check.empty and not allow_empty:
        raise InputError("empty event: no pixel above threshold", source=source, field="adc")
    return check


def downsample_drift(
    adc: npt.ArrayLike, factor: int, mode: str = "mean"
) -> npt.NDArray[np.float32]:
    """Reduce the drift (last) axis by ``factor``: the mean or the max of each group of ticks;
    shape (n_wires, ceil(n_ticks / factor)), the last group zero-padded."""
    array = np.asarray(adc, dtype=np.float32)
    if not (isinstance(factor, int) and factor >= 1):
        raise InputError("must be an integer >= 1", field="drift_downsample", value=factor)
    if factor == 1:
        return array
    pad = -array.shape[1] % factor
    if pad:
        array = np.pad(array, ((0, 0), (0, pad)))
    groups = array.reshape(array.shape[0], -1, factor)
    if mode == "mean":
        return groups.mean(axis=2)
    if mode == "max":
        return groups.max(axis=2)
    raise InputError("must be 'mean' or 'max'", field="mode", value=mode)


def extract_patches(
    adc: npt.ArrayLike,
    wire: npt.ArrayLike,
    tick: npt.ArrayLike,
    size: int = 32,
    drift_downsample: int = 1,
    *,
    mode: str = "mean",
) -> npt.NDArray[np.float32]:
    """Square patches around pixels of an image, zero-padded at the borders.

    Args:
        adc: (n_wires, n_ticks) image.
        wire, tick: (n,) centre pixels (in full-resolution ticks).
        size: patch side in pixels; the centre pixel sits at index ``size // 2``.
        drift_downsample: ticks merged into one patch column (LArSoft: 60 x 60 patches of a
            drift-down-sampled image); the image is reduced once, then cut.
        mode: ``"mean"`` or ``"max"`` of the merged ticks.

    Returns:
        float32 (n, size, size): axis 1 along wires, axis 2 along (down-sampled) ticks.
    """
    if not (isinstance(size, int) and size >= 1):
        raise InputError("must be an integer >= 1", field="size", value=size)
    image = downsample_drift(adc, drift_downsample, mode)
    wire = np.asarray(wire, dtype=np.int64)
    tick = np.asarray(tick, dtype=np.int64) // drift_downsample
    if wire.shape != tick.shape or wire.ndim != 1:
        raise InputError("wire and tick must be 1-d arrays of one length", field="wire",
                         value=(wire.shape, tick.shape))  # fmt: skip
    inside = (wire >= 0) & (wire < image.shape[0]) & (tick >= 0) & (tick < image.shape[1])
    if not inside.all():
        bad = int(np.argmin(inside))
        raise InputError("centre outside the image", field="wire, tick",
                         value=(int(wire[bad]), int(tick[bad])))  # fmt: skip
    half = size // 2
    padded = np.pad(image, half + 1)
    offsets = np.arange(size) - half + half + 1
    rows = wire[:, None] + offsets  # (n, size)
    cols = tick[:, None] + offsets  # (n, size)
    return padded[rows[:, :, None], cols[:, None, :]].astype(np.float32, copy=False)


@dataclasses.dataclass(frozen=True)
class Tile:
    """A rectangular piece of an image: ``data[i, j]`` is pixel (wire0 + i, tick0 + j)."""

    wire0: int
    tick0: int
    data: npt.NDArray[np.float32]


def iter_tiles(
    image: npt.ArrayLike, tile: tuple[int, int] = (256, 512), overlap: int = 0
) -> Iterator[Tile]:
    """Tiles of ``tile`` = (wires, ticks) covering the image, consecutive tiles sharing
    ``overlap`` pixels; edge tiles are zero-padded to the full tile size."""
    array = np.asarray(image, dtype=np.float32)
    tw, tt = tile
    if not (tw > overlap >= 0 and tt > overlap):
        raise InputError("tile sides must exceed the overlap (>= 0)", field="tile",
                         value=(tile, overlap))  # fmt: skip
    n_w, n_t = array.shape
    for w0 in range(0, max(n_w - overlap, 1), tw - overlap):
        for t0 in range(0, max(n_t - overlap, 1), tt - overlap):
            data = np.zeros((tw, tt), dtype=np.float32)
            piece = array[w0 : w0 + tw, t0 : t0 + tt]
            data[: piece.shape[0], : piece.shape[1]] = piece
            yield Tile(w0, t0, data)
