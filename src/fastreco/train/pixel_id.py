"""Training of the LArTPC pixel-ID networks: [track, em, none] + Michel score per hit (seed 004).

A pixel-ID task (``kind: pixel_id`` in its YAML, e.g. ``configs/lartpc_pixel_id_patch.yaml``)
names a LArTPC simulation (simulated on first use into ``data/<name>`` or ``data.dir``, split by
event), a model of the MODELS registry and how training samples are cut from the events. The
model decides the mode:

* **patch mode** (:class:`~fastreco.models.lartpc.PatchCNN`, LArSoft's EmTrackMichelId): square
  ADC patches centred on hit pixels, drawn afresh every epoch with class balancing (below); the
  target is the centre hit's class and Michel flag; loss ``0.1 CE + 1 BCE``;
* **image mode** (any fully convolutional model, e.g. :class:`~fastreco.models.lartpc.PixelUNet`):
  tiles of ``sampling.tile`` = (wires, ticks) cut around hits of whole events; the loss counts
  hit pixels only (a mask), with class weights inverse to the training hits' class frequencies;
* **sparse mode** (:class:`~fastreco.models.lartpc_sparse.SparseUResNet`, a sparse U-Net):
  whole events, every hit pixel of an event as an active site (coordinates + ADC) with its
  class and Michel flag; a batch is ``training.batch_size`` events concatenated, the event
  index as first coordinate; the loss counts all hits, with the image mode's class weights
  (``sampling.tile``, ``samples_per_event`` and ``events_per_chunk`` are not used).

Class balancing (as LArSoft's training-set preparation): the hits of an event fall in four groups
(track, EM not Michel, none = noise hits, Michel) and each group present in the event gets
an equal share of the event's ``samples_per_event`` centres, drawn with replacement (so the rare
Michel and noise hits are enriched; the flips make repeats differ). In image mode the same
centres place the tiles. Sparse mode sees every hit of every event, unbalanced, and relies on
the class weights and ``sampling.loss_weights``.

Michel enrichment (for the sparse mode's rare Michel hits; both off by default):
``sampling.michel_event_boost`` = k makes each training event with Michel hits appear k times per
epoch (an epoch is then longer by (k - 1) x those events; validation is not boosted), and
``sampling.michel_pos_weight`` = w weights the Michel hits' term of the BCE by w, which moves the
Michel sigmoid's 0.5 working point to about the one a training set with w x the Michel odds would
give (see :class:`SamplingConfig`).

Augmentation: a flip of the wire axis is a symmetry of the readout (uniform pitch; a track seen
mirrored is a valid track), so it is drawn with probability 1/2 per sample (sparse mode: per
event). A flip of the drift
axis is *not*: the CR-(RC)^4 shaper's pulse (2 us peaking time) climbs from 10 % to its peak in
2 ticks and falls back to 10 % in 5, so a tick-reversed pulse (slow rise, fast fall) never comes
out of the electronics, and a delayed Michel electron would appear *before* its muon's end. It is
off by default (``sampling.flip_drift``) and left as an option for studies.

Data loading: the events are kept sparse in memory (hit wire, tick, ADC, class, Michel flag;
~100 kB per 480 x 6000 event); an epoch walks the events in chunks of ``events_per_chunk``,
builds each chunk's dense images once, cuts all its patches or tiles with numpy, shuffles them and
yields ready batches (:class:`PixelIdSamples`), so the 2-core machine spends its time in the
network. DataLoader workers are optional (``training.num_workers``; each takes whole chunks).

``fastreco train`` writes the usual run folder (``config.yaml``, ``run.json``,
``checkpoints/{best,last}.ckpt``, ``tb/``) and resumes a killed run with ``--resume``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import numpy.typing as npt
import torch
import yaml

from fastreco import __version__
from fastreco import constants as C
from fastreco.config import ModelConfig, TrainingConfig, build_dataclass
from fastreco.data.lartpc_images import CLASS_EM, CLASS_NONE, CLASS_TRACK, event_image
from fastreco.data.splits import split_mask
from fastreco.data.store import EventStore
from fastreco.errors import InputError
from fastreco.geometry.lartpc import LArTpcPlane
from fastreco.models.lartpc import N_CLASSES, PatchCNN, pixel_id_loss
from fastreco.models.lartpc_sparse import SparseUResNet
from fastreco.models.registry import build_model
from fastreco.models.sparse import SparseImage
from fastreco.sim.lartpc import LArTpcSimConfig
from fastreco.train.module import adamw_cosine, check_finite

log = logging.getLogger(__name__)

RUN_SCHEMA_VERSION = 1
N_OUTPUTS = N_CLASSES + 1  # class logits + the Michel logit
#: The balancing groups of hits (see the module docstring), in sampling order.
GROUPS = ("track", "em", "none", "michel")


@dataclasses.dataclass(frozen=True)
class LArDataConfig:
    """The events: a LArTPC simulation (see :class:`~fastreco.sim.lartpc.LArTpcSimConfig`) and
    its split by event into (train, val, test) fractions."""

    kind: tuple[str, ...] = ("neutrino", "muon")
    n_particles: int = 1
    energy: str | None = None
    cosmics: float = 1.0
    n_wires: int = C.LARTPC_N_WIRES
    n_ticks: int = C.LARTPC_N_TICKS
    noise: bool = True
    threshold_sigma: float = C.LARTPC_ZS_SIGMA
    events: int = 300
    events_per_shard: int = 50
    seed: int = 7
    dir: str = ""
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)

    def sim_config(self) -> LArTpcSimConfig:
        return LArTpcSimConfig(
            kind=self.kind,
            n_particles=self.n_particles,
            energy=self.energy,
            cosmics=self.cosmics,
            n_wires=self.n_wires,
            n_ticks=self.n_ticks,
            noise=self.noise,
            threshold_sigma=self.threshold_sigma,
            n_events=self.events,
            events_per_shard=min(self.events_per_shard, self.events),
            seed=self.seed,
        )


#: Simulation-config field -> task YAML field (``data.*``) where the names differ.
_SIM_FIELDS = {"n_events": "events"}


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How training samples are cut from the events (all modes) and the loss weights.

    ``michel_event_boost`` (integer >= 1, default 1 = every event once per epoch): each training
    event with at least one Michel hit appears this many times per epoch (every mode; meant for
    the sparse mode, which sees every hit of whole events, so the Michel hits stay as rare as in
    the events, ~1 % of the hits, 1 event in 5). Validation events are never repeated.

    ``michel_pos_weight`` (> 0, default None = unweighted): ``pos_weight`` of the Michel BCE
    (:func:`~fastreco.models.lartpc.pixel_id_loss`). A network trained on a Michel-hit fraction
    p puts its 0.5 where the Michel odds it sees are 1; a weight w acts like a fraction p' with
    odds w x p / (1 - p), e.g. the patch mode's balanced sampling (a quarter of a Michel event's
    centres, ~5 % overall) for w = 0.057 (1 - p) / p.
    """

    patch_size: int = 32  # patch mode: side in pixels (LArSoft: 60 with drift down-sampling)
    drift_downsample: int = 1  # patch mode: ticks merged per patch column
    tile: tuple[int, int] = (128, 256)  # image mode: (wires, ticks) of a training tile
    samples_per_event: int = 256  # balanced centres per event and epoch (image mode: tiles)
    events_per_chunk: int = 8  # events whose dense images are built at once
    flip_wires: bool = True  # a symmetry of the readout
    flip_drift: bool = False  # not a symmetry: asymmetric shaping (module docstring)
    loss_weights: tuple[float, float] = (0.1, 1.0)  # (class head, Michel head), seed 004
    michel_event_boost: int = 1  # times per epoch an event with Michel hits is seen (training)
    michel_pos_weight: float | None = None  # weight of the Michel hits in the Michel BCE

    def validate(self, source: Any = None) -> None:
        pos_weight = self.michel_pos_weight
        checks = {
            "patch_size": self.patch_size >= 4,
            "drift_downsample": self.drift_downsample >= 1,
            "samples_per_event": self.samples_per_event >= 1,
            "events_per_chunk": self.events_per_chunk >= 1,
            "tile": len(self.tile) == 2 and min(self.tile) >= 8,
            "loss_weights": len(self.loss_weights) == 2 and min(self.loss_weights) >= 0,
            "michel_event_boost": self.michel_event_boost >= 1,
            "michel_pos_weight": pos_weight is None
            or (
                isinstance(pos_weight, (int, float))
                and not isinstance(pos_weight, bool)
                and np.isfinite(pos_weight)
                and pos_weight > 0
            ),
        }
        for name, ok in checks.items():
            if not ok:
                raise InputError(
                    "out of range (patch_size >= 4, tile sides >= 8, counts and "
                    "michel_event_boost >= 1, two non-negative loss weights, michel_pos_weight "
                    "a number > 0 or null)",
                    source=source,
                    field=f"sampling.{name}",
                    value=getattr(self, name),
                )


@dataclasses.dataclass(frozen=True)
class PixelIdTaskConfig:
    """A pixel-ID task; loaded from YAML with every field validated."""

    name: str
    kind: Literal["pixel_id"] = "pixel_id"
    data: LArDataConfig = dataclasses.field(default_factory=LArDataConfig)
    model: ModelConfig = dataclasses.field(
        default_factory=lambda: ModelConfig(name="lartpc-patch-cnn")
    )
    training: TrainingConfig = dataclasses.field(
        default_factory=lambda: TrainingConfig(batch_size=128, learning_rate=1e-3, num_workers=0)
    )
    sampling: SamplingConfig = dataclasses.field(default_factory=SamplingConfig)

    @property
    def data_dir(self) -> Path:
        return Path(self.data.dir or f"data/{self.name}")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: Any = None) -> PixelIdTaskConfig:
        task = build_dataclass(cls, raw, source=source)
        task.sampling.validate(source)
        try:
            task.data.sim_config()
        except InputError as exc:
            raise InputError(
                exc.reason,
                source=source,
                field=f"data.{_SIM_FIELDS.get(exc.field or '', exc.field or '')}".rstrip("."),
                value=exc.value,
            ) from None
        try:
            model_mode(task.model.name)
        except InputError as exc:
            raise InputError(exc.reason, source=source, field=exc.field, value=exc.value) from None
        return task

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PixelIdTaskConfig:
        raw = yaml.safe_load(Path(path).read_text())
        if not isinstance(raw, dict):
            raise InputError("a task config must be a mapping", source=path)
        raw.setdefault("name", Path(path).stem)
        return cls.from_dict(raw, source=path)

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @property
    def plane_shape(self) -> tuple[int, int]:
        """(n_wires, n_ticks) of the events."""
        return (self.data.n_wires, self.data.n_ticks)

    def input_shape(self, mode: str) -> tuple[int, int, int]:
        """(channels, H, W) of one training sample (sparse mode: the whole plane)."""
        if mode == "patch":
            return (1, self.sampling.patch_size, self.sampling.patch_size)
        if mode == "sparse":
            return (1, *self.plane_shape)
        return (1, *self.sampling.tile)


def model_mode(name: str) -> Literal["patch", "image", "sparse"]:
    """``"patch"`` for a registered :class:`PatchCNN` (one score vector per patch),
    ``"sparse"`` for a :class:`SparseUResNet` (scores at the hits of whole sparse events),
    ``"image"`` for a fully convolutional network (scores per pixel). Unknown names raise an
    InputError listing the registered models."""
    from fastreco.models.registry import MODELS, _load_builtin

    _load_builtin()
    cls = MODELS.resolve(name, field="model.name")
    if isinstance(cls, type) and issubclass(cls, PatchCNN):
        return "patch"
    if isinstance(cls, type) and issubclass(cls, SparseUResNet):
        return "sparse"
    return "image"


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class SparseEvent:
    """The stored hits of one event: wire, tick (int64), ADC (float32), class (int8, ``CLASS_*``)
    and Michel flag (bool), all shape (n_hits,); ``particle``: the dominant truth row of each
    hit (-1: noise), used to tell Michel electrons apart in the evaluation."""

    wire: npt.NDArray[np.int64]
    tick: npt.NDArray[np.int64]
    adc: npt.NDArray[np.float32]
    label: npt.NDArray[np.int8]
    michel: npt.NDArray[np.bool_]
    particle: npt.NDArray[np.int32] | None = None

    @property
    def n_hits(self) -> int:
        return len(self.wire)

    def dense(self, shape: tuple[int, int]) -> dict[str, np.ndarray]:
        """Dense (n_wires, n_ticks) images: ``adc`` float32, ``label`` int64 (``CLASS_NONE``
        off hits), ``michel`` float32, ``mask`` bool (hit pixels)."""
        adc = np.zeros(shape, np.float32)
        label = np.full(shape, CLASS_NONE, np.int64)
        michel = np.zeros(shape, np.float32)
        mask = np.zeros(shape, bool)
        adc[self.wire, self.tick] = self.adc
        label[self.wire, self.tick] = self.label
        michel[self.wire, self.tick] = self.michel
        mask[self.wire, self.tick] = True
        return {"adc": adc, "label": label, "michel": michel, "mask": mask}


def ensure_lartpc_data(task: PixelIdTaskConfig, *, progress: bool = True) -> Path:
    """The task's LArTPC event store, simulated (or completed) first if needed."""
    from fastreco.sim.lartpc_engine import missing_lartpc_shards, simulate_lartpc

    config = task.data.sim_config()
    out = task.data_dir
    if not out.exists() or missing_lartpc_shards(config, out):
        log.info("simulating the LArTPC events of task %s into %s", task.name, out)
        simulate_lartpc(config, out, workers=1, progress=progress)
    return out


def split_events(n_events: int, split: str, fractions: Sequence[float]) -> npt.NDArray[np.int64]:
    """Event indices of ``split`` ('train', 'val', 'test'): the store's split by event."""
    return np.flatnonzero(split_mask(np.arange(n_events), split, tuple(fractions)))


def load_sparse_events(
    store_dir: str | os.PathLike[str],
    indices: Sequence[int],
) -> tuple[list[SparseEvent], LArTpcPlane]:
    """The events ``indices`` of a LArTPC store as :class:`SparseEvent` (in that order) and the
    store's plane."""
    store = EventStore(store_dir)
    geometry = store.detector
    if not isinstance(geometry, LArTpcPlane):
        raise InputError(
            "not a LArTPC event store",
            source=store_dir,
            field="detector",
            value=getattr(geometry, "name", None),
        )
    indices = np.asarray(indices, np.int64)
    events: dict[int, SparseEvent] = {}
    for start in range(0, store.n_events, 50):
        stop = min(start + 50, store.n_events)
        chosen = indices[(indices >= start) & (indices < stop)]
        if not len(chosen):
            continue
        batch = store.read(start, stop)
        for i in chosen:
            image = event_image(batch, int(i - start), geometry, source=str(store_dir))
            events[int(i)] = SparseEvent(
                wire=image.hit_wire,
                tick=image.hit_tick,
                adc=image.adc[image.hit_wire, image.hit_tick],
                label=image.hit_label,
                michel=image.hit_michel,
                particle=batch.event(int(i - start)).hits["truth_particle"].astype(np.int32),
            )
    return [events[int(i)] for i in indices], geometry


def balanced_centres(event: SparseEvent, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` hit indices of ``event`` shared equally among the present groups of :data:`GROUPS`
    (track, EM not Michel, none, Michel), drawn with replacement; empty for an event without
    hits. Shape (n,) or (0,)."""
    groups = [
        np.flatnonzero((event.label == CLASS_TRACK) & ~event.michel),
        np.flatnonzero((event.label == CLASS_EM) & ~event.michel),
        np.flatnonzero((event.label == CLASS_NONE) & ~event.michel),
        np.flatnonzero(event.michel),
    ]
    present = [g for g in groups if len(g)]
    if not present:
        return np.zeros(0, np.int64)
    shares = np.full(len(present), n // len(present))
    shares[: n % len(present)] += 1
    return np.concatenate([rng.choice(g, size=s) for g, s in zip(present, shares, strict=True)])


def cut_tiles(
    images: dict[str, np.ndarray], wire: np.ndarray, tick: np.ndarray, tile: tuple[int, int]
) -> dict[str, np.ndarray]:
    """Tiles of ``tile`` = (wires, ticks) around centre pixels, shifted to lie inside the image
    (zero-padded when the image is smaller). Returns each image's tiles, (n, *tile)."""
    n_w, n_t = images["adc"].shape
    tw, tt = tile
    w0 = np.clip(wire - tw // 2, 0, max(n_w - tw, 0))
    t0 = np.clip(tick - tt // 2, 0, max(n_t - tt, 0))
    rows = w0[:, None] + np.arange(tw)  # (n, tw)
    cols = t0[:, None] + np.arange(tt)  # (n, tt)
    inside_r, inside_c = rows < n_w, cols < n_t
    rows, cols = np.minimum(rows, n_w - 1), np.minimum(cols, n_t - 1)
    keep = inside_r[:, :, None] & inside_c[:, None, :]
    out = {}
    for key, image in images.items():
        cut = image[rows[:, :, None], cols[:, None, :]]
        fill = CLASS_NONE if key == "label" else 0
        out[key] = np.where(keep, cut, fill).astype(image.dtype, copy=False)
    return out


class PixelIdSamples(torch.utils.data.IterableDataset):
    """Batches of patches (patch mode), tiles (image mode) or whole sparse events (sparse mode)
    cut on the fly from sparse events.

    Each epoch draws balanced centres (:func:`balanced_centres`) in every event, walks the events
    in chunks of ``sampling.events_per_chunk`` (dense images built once per chunk), applies the
    flips and yields shuffled batches of ``batch_size``. Training samples change every epoch
    (:meth:`set_epoch`); validation samples (``train=False``) are the same every epoch and not
    flipped.

    Yields dicts: ``x`` (B, 1, H, W) float32 ADC; ``label`` (B,) or (B, H, W) int64;
    ``michel`` same shape, float32; image mode also ``mask`` (B, H, W) bool (hit pixels).
    Sparse mode (:meth:`_sparse_batches`): ``batch_size`` events per batch, all their hits:
    ``coords`` (N, 3) int64 (event in the batch, wire, tick), ``x`` (N, 1) float32 ADC,
    ``label`` (N,) int64, ``michel`` (N,) float32.
    """

    def __init__(
        self,
        events: Sequence[SparseEvent],
        shape: tuple[int, int],
        sampling: SamplingConfig,
        mode: str,
        batch_size: int,
        *,
        seed: int = 0,
        train: bool = True,
    ) -> None:
        super().__init__()
        self.events = list(events)
        self.shape = tuple(shape)
        self.sampling = sampling
        self.mode = mode
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.train = train
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _samples(self, chunk: Sequence[SparseEvent], rng: np.random.Generator) -> dict[str, Any]:
        s = self.sampling
        parts: list[dict[str, np.ndarray]] = []
        for event in chunk:
            centres = balanced_centres(event, s.samples_per_event, rng)
            if not len(centres):
                continue
            images = event.dense(self.shape)  # type: ignore[arg-type]
            wire, tick = event.wire[centres], event.tick[centres]
            if self.mode == "patch":
                from fastreco.data.lartpc_images import extract_patches

                parts.append(
                    {
                        "x": extract_patches(
                            images["adc"], wire, tick, s.patch_size, s.drift_downsample
                        ),
                        "label": event.label[centres].astype(np.int64),
                        "michel": event.michel[centres].astype(np.float32),
                    }
                )
            else:
                parts.append(cut_tiles(images, wire, tick, s.tile))
                parts[-1]["x"] = parts[-1].pop("adc")
        if not parts:
            return {}
        out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        if self.train:
            self._flip(out, rng)
        return out

    def _flip(self, out: dict[str, np.ndarray], rng: np.random.Generator) -> None:
        n = len(out["x"])
        for axis, on in ((1, self.sampling.flip_wires), (2, self.sampling.flip_drift)):
            if not on:
                continue
            sel = rng.random(n) < 0.5
            keys = ["x"] if self.mode == "patch" else ["x", "label", "michel", "mask"]
            for key in keys:
                out[key][sel] = np.flip(out[key][sel], axis=axis)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        rng = np.random.default_rng([self.seed, self.epoch if self.train else 0, worker])
        order = self._epoch_order(rng)
        if self.mode == "sparse":
            yield from self._sparse_batches(order[worker::n_workers], rng)
            return
        size = self.sampling.events_per_chunk
        chunks = [order[i : i + size] for i in range(0, len(order), size)][worker::n_workers]
        pending: dict[str, np.ndarray] = {}
        for chunk in chunks:
            new = self._samples([self.events[i] for i in chunk], rng)
            if not new:
                continue
            if pending:
                new = {k: np.concatenate([pending[k], new[k]]) for k in new}
            perm = rng.permutation(len(new["x"])) if self.train else np.arange(len(new["x"]))
            n_full = len(perm) // self.batch_size * self.batch_size
            for lo in range(0, n_full, self.batch_size):
                yield self._tensors(new, perm[lo : lo + self.batch_size])
            pending = {k: v[perm[n_full:]] for k, v in new.items()}
        if pending and len(pending["x"]):
            yield self._tensors(pending, np.arange(len(pending["x"])))

    def epoch_events(self) -> npt.NDArray[np.int64]:
        """Indices of the events one epoch walks, unshuffled: every event once, training events
        with Michel hits ``sampling.michel_event_boost`` times. Shape (n_epoch_events,)."""
        everything = np.arange(len(self.events))
        boost = self.sampling.michel_event_boost
        if not self.train or boost == 1:
            return everything
        has_michel = np.array([bool(e.michel.any()) for e in self.events], bool)
        return np.repeat(everything, np.where(has_michel, boost, 1))

    def _epoch_order(self, rng: np.random.Generator) -> npt.NDArray[np.int64]:
        """The epoch's event order: :meth:`epoch_events` shuffled in training, in order else."""
        if not self.train:
            return np.arange(len(self.events))
        if self.sampling.michel_event_boost == 1:
            return rng.permutation(len(self.events))  # the random stream of the unboosted runs
        return rng.permutation(self.epoch_events())

    def _sparse_batches(
        self, order: np.ndarray, rng: np.random.Generator
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Sparse mode: the events of ``order`` (empty ones skipped), ``batch_size`` at a time,
        each flipped along the wires (and the ticks if ``flip_drift``) with probability 1/2 in
        training."""
        n_wires, n_ticks = self.shape
        events = [self.events[i] for i in order if self.events[i].n_hits]
        for lo in range(0, len(events), self.batch_size):
            parts = []
            for b, event in enumerate(events[lo : lo + self.batch_size]):
                wire, tick = event.wire, event.tick
                if self.train and self.sampling.flip_wires and rng.random() < 0.5:
                    wire = n_wires - 1 - wire
                if self.train and self.sampling.flip_drift and rng.random() < 0.5:
                    tick = n_ticks - 1 - tick
                parts.append(
                    {
                        "coords": np.stack([np.full_like(wire, b), wire, tick], axis=1),
                        "x": event.adc[:, None],
                        "label": event.label.astype(np.int64),
                        "michel": event.michel.astype(np.float32),
                    }
                )
            yield {
                k: torch.from_numpy(np.ascontiguousarray(np.concatenate([p[k] for p in parts])))
                for k in parts[0]
            }

    @staticmethod
    def _tensors(data: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, torch.Tensor]:
        out = {k: torch.from_numpy(np.ascontiguousarray(v[idx])) for k, v in data.items()}
        out["x"] = out["x"].unsqueeze(1)  # (B, 1, H, W)
        return out


def class_weights(events: Sequence[SparseEvent]) -> list[float]:
    """Cross-entropy weights of the classes, proportional to 1 / sqrt(hit frequency) and of mean
    1 over the classes present (absent classes: 1). Image and sparse modes (the patches are
    balanced by sampling): the square root keeps the rare noise hits from dominating the loss, as full
    inverse weights (tracks ~100x the noise hits) would."""
    counts = np.bincount(
        np.concatenate([e.label for e in events]).astype(np.int64), minlength=N_CLASSES
    ).astype(float)
    present = counts > 0
    if not present.any():
        return [1.0] * N_CLASSES
    inverse = np.where(present, 1.0 / np.sqrt(np.maximum(counts, 1.0)), 0.0)
    inverse = inverse / inverse[present].mean()
    return [float(w) if p else 1.0 for w, p in zip(inverse, present, strict=True)]


def michel_hit_fraction(events: Sequence[SparseEvent], walk: Sequence[int]) -> float:
    """Fraction of Michel hits among the hits of the events ``walk`` (indices into ``events``,
    repeats counting again): what the sparse mode's Michel head sees per epoch (0 without
    hits)."""
    n_michel = sum(int(events[i].michel.sum()) for i in walk)
    n_hits = sum(events[i].n_hits for i in walk)
    return n_michel / n_hits if n_hits else 0.0


# --------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------
class PixelIdModule(L.LightningModule):
    """A registered pixel-ID model trained with the seed's two-head loss
    (:func:`~fastreco.models.lartpc.pixel_id_loss`); ``class_weights`` (image, sparse modes) weight the
    cross-entropy. In sparse mode the batch's ``coords`` and ``x`` become a
    :class:`~fastreco.models.sparse.SparseImage` of the task's plane."""

    def __init__(self, task_dict: dict[str, Any], class_weights: list[float] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.task = PixelIdTaskConfig.from_dict(task_dict)
        self.mode = model_mode(self.task.model.name)
        self.model = build_model(
            self.task.model.name,
            self.task.input_shape(self.mode),
            N_OUTPUTS,
            **self.task.model.params,
        )
        weights = None if class_weights is None else torch.tensor(class_weights)
        self.register_buffer("class_weight", weights, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def inputs(self, b: dict[str, torch.Tensor]) -> torch.Tensor | SparseImage:
        """The model's input of a batch (see :class:`PixelIdSamples`)."""
        if self.mode == "sparse":
            return SparseImage.from_arrays(b["coords"], b["x"], self.task.plane_shape)
        return b["x"]

    def _step(self, b: dict[str, torch.Tensor], stage: str, index: int) -> torch.Tensor:
        out = self(self.inputs(b))
        loss = pixel_id_loss(
            out,
            b["label"],
            b["michel"],
            mask=b.get("mask"),
            weights=tuple(self.task.sampling.loss_weights),  # type: ignore[arg-type]
            class_weights=self.class_weight,
            michel_pos_weight=self.task.sampling.michel_pos_weight,
        )
        check_finite(loss, stage, self.current_epoch, index)
        n = int(b["coords"][:, 0].max()) + 1 if self.mode == "sparse" else len(b["x"])
        self.log(f"{stage}_loss", loss, prog_bar=True, batch_size=n)
        with torch.no_grad():
            pred = out[:, :N_CLASSES].argmax(1)
            keep = b["mask"] if "mask" in b else torch.ones_like(b["label"], dtype=torch.bool)
            acc = (pred == b["label"])[keep].float().mean() if keep.any() else loss * 0
            self.log(f"{stage}_accuracy", acc, batch_size=n)
        return loss

    def training_step(self, b: dict[str, torch.Tensor], index: int) -> torch.Tensor:
        return self._step(b, "train", index)

    def validation_step(self, b: dict[str, torch.Tensor], index: int) -> None:
        self._step(b, "val", index)

    def configure_optimizers(self) -> Any:
        return adamw_cosine(self.parameters(), self.task.training)


def load_pixel_id_model(run_dir: str | os.PathLike[str], device: Any = "cpu") -> PixelIdModule:
    """The trained module of a pixel-ID run (best checkpoint, else last), in eval mode."""
    from fastreco.train.runner import load_module

    return load_module(PixelIdModule, run_dir, device)


def train_pixel_id(
    task: PixelIdTaskConfig | str | os.PathLike[str],
    *,
    runs_dir: str | os.PathLike[str] = "runs",
    run_name: str | None = None,
    init_from: str | os.PathLike[str] | None = None,
    resume: bool = False,
    devices: int = 1,
    progress: bool = True,
    max_epochs: int | None = None,
) -> Path:
    """Train a pixel-ID task; returns the run folder (see the module docstring)."""
    from fastreco.train.runner import (
        _augmentation_epoch,
        init_weights_from,
        make_trainer,
        open_run,
        record_training,
        write_run_info,
    )

    task, run, last = open_run(
        task, PixelIdTaskConfig, runs_dir=runs_dir, run_name=run_name, resume=resume
    )
    store_dir = ensure_lartpc_data(task, progress=progress)
    n_events = EventStore(store_dir).n_events
    train_idx = split_events(n_events, "train", task.data.split)
    val_idx = split_events(n_events, "val", task.data.split)
    if not len(train_idx) or not len(val_idx):
        raise InputError(
            f"too few events for a train/val split ({len(train_idx)}/{len(val_idx)})",
            source=store_dir,
            field="data.events",
            value=task.data.events,
        )
    train_events, geometry = load_sparse_events(store_dir, train_idx)
    val_events, _ = load_sparse_events(store_dir, val_idx)

    t = task.training
    L.seed_everything(t.seed, workers=True)
    mode = model_mode(task.model.name)
    weights = class_weights(train_events) if mode in ("image", "sparse") else None
    module = PixelIdModule(task.to_dict(), weights)
    batch = t.batch_size
    train_set = PixelIdSamples(
        train_events, geometry.shape, task.sampling, mode, batch, seed=t.seed, train=True
    )
    val_set = PixelIdSamples(
        val_events, geometry.shape, task.sampling, mode, batch, seed=t.seed + 1, train=False
    )
    info: dict[str, Any] = {
        "run_schema_version": RUN_SCHEMA_VERSION,
        "fastreco_version": __version__,
        "task": task.name,
        "kind": "pixel_id",
        "mode": mode,
        "model": task.model.name,
        "data_dir": str(store_dir),
        "n_events": n_events,
        "plane": list(geometry.shape),
        "input_shape": list(task.input_shape(mode)),
        "class_weights": weights,
        "init_from": None if init_from is None else str(init_from),
    }
    if mode == "sparse":  # the Michel-hit fraction its loss sees per epoch
        info["michel_hit_fraction"] = michel_hit_fraction(train_events, train_set.epoch_events())
    if init_from is not None:
        info["init_tensors"] = init_weights_from(module, init_from)
    write_run_info(run, info)
    loader = torch.utils.data.DataLoader
    workers = t.num_workers
    trainer, best = make_trainer(
        run,
        t,
        devices=devices,
        max_epochs=max_epochs,
        progress=progress,
        extra_callbacks=[_augmentation_epoch(train_set)],
        checkpoint_every_n_steps=20,
        log_every_n_steps=10,
        gradient_clip_val=1.0,
    )
    trainer.fit(
        module,
        loader(train_set, batch_size=None, num_workers=workers),
        loader(val_set, batch_size=None, num_workers=workers),
        ckpt_path=None if last is None else str(last),
    )
    record_training(
        run,
        info,
        trainer,
        best,
        n_train=len(train_events),
        n_val=len(val_events),
        samples_per_epoch=len(train_set.epoch_events())
        * (1 if mode == "sparse" else task.sampling.samples_per_event),
    )
    return run
