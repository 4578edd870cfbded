"""Training of HGCAL property regression: the energy and the barycentre of single showers, by a
3D CNN on grid windows or a Dynamic Reduction Network on point clouds (issue 5, seed 003).

A task (``kind: hgcal_regression`` in its YAML, e.g. ``configs/hgcal_energy_cnn3d.yaml``) names
an HGCAL single-particle simulation (simulated on first use into ``data/<name>`` or
``data.dir``), the grid of the windows, a model of the MODELS registry and the loss weights.
The model decides the input representation (:data:`MODEL_REPRESENTATION`):

* ``grid``: the event's window of the regular 3D grid (:mod:`fastreco.data.hexgrid`), converted
  once into an HDF5 file beside the store (:func:`ensure_grid`) and shared by every run on the
  same data;
* ``points``: the hits of the same window region as a point cloud (the features of
  :mod:`fastreco.data.pointcloud`, transverse positions in the window frame), so both models see
  the same hits of the same events.

Voxel and hit energies enter as ``ln(1 + E / 10 MeV)`` (the point cloud's ``log_e`` feature).

**Targets** (one row per event, :data:`TARGETS`): the energy as the ratio ``E_true / E_raw`` to
the calibrated raw sum (:class:`~fastreco.reco.hgcal_energy.CalibratedEnergySum` of the hits
within ``data.raw_radius`` of the shower axis, fitted on the training split and stored in
``run.json``), and the true barycentre ``dx, dy`` [cm] relative to the window axis at the
barycentre's depth and ``z`` [cm]. With ``position_reference: barycentre`` the network regresses
the barycentre as a correction to the energy-weighted barycentre of its own input (the
window's voxels or the point cloud's hits), as it regresses the energy as a correction to the
raw sum. The network's outputs are standardized: physical value = ``reference + offset + scale
* output`` with the training split's means and standard deviations (in ``run.json``). Loss: :func:`fastreco.models.property_loss.property_loss`.

Split by event index (:mod:`fastreco.data.splits`): every model and baseline of the same data
block sees the same test events. ``fastreco train`` writes the same run folder as the other
task kinds (``config.yaml``, ``run.json``, ``checkpoints/{best,last}.ckpt``, ``tb/``) and
resumes with ``--resume``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import yaml

from fastreco import __version__
from fastreco.config import ModelConfig, TrainingConfig, build_dataclass
from fastreco.data.hexgrid import GridSpec, HexGrid, Windows, hexgrid_for
from fastreco.data.pointcloud import N_FEATURES, point_cloud_events
from fastreco.data.splits import split_codes
from fastreco.data.store import EventBatch, EventStore
from fastreco.errors import InputError
from fastreco.geometry.hgcal import HgcalEndcap
from fastreco.models.property_loss import HUBER_DELTA, POSITION_SCALE_CM, property_loss
from fastreco.models.registry import build_model
from fastreco.reco.hgcal_energy import CalibratedEnergySum, Hits
from fastreco.sim.hgcal import HgcalSimConfig
from fastreco.train.module import adamw_cosine, check_finite

log = logging.getLogger(__name__)

RUN_SCHEMA_VERSION = 1
#: Regressed quantities, in the order of the network's outputs.
TARGETS = ("energy_ratio", "barycenter_dx", "barycenter_dy", "barycenter_z")
#: Energy unit of the log-energy input transform [GeV] (as the point cloud's ``log_e``).
LOG_ENERGY_UNIT = 0.01
#: Folder of the overlap-weight caches, beside the stores (~60 s to build per grid).
GRID_CACHE_NAME = "hexgrid_cache"
#: Point-cloud feature columns x, y, z (/ 10 cm) and log_e (see ``data.pointcloud.FEATURES``).
_X_COL, _Y_COL, _Z_COL, _E_COL, _LENGTH_UNIT = 0, 1, 2, 3, 10.0


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RegressionDataConfig:
    """Single-particle events (see :class:`~fastreco.sim.hgcal.HgcalSimConfig`) and their grid.

    ``grid_pitch`` [cm on the front face], ``grid_window`` [pixels] and ``grid_layers`` (None:
    all 47) define the windows (:class:`~fastreco.data.hexgrid.GridSpec`, projective);
    ``raw_radius`` [cm on the front face] bounds the hits of the raw calibrated sum that the
    energy ratio refers to (None: all hits; set it for pileup).
    """

    particles: tuple[str, ...] = ("e-", "pi+")
    energy: str = "log:10:500"
    eta_min: float = 1.7
    eta_max: float = 2.7
    pileup: float = 0.0
    events: int = 5000
    events_per_shard: int | None = None
    seed: int = 31
    dir: str = ""
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    grid_pitch: float = 2.0
    grid_window: int = 16
    grid_layers: tuple[int, ...] | None = None
    raw_radius: float | None = 16.0

    def sim_config(self, **changes: Any) -> HgcalSimConfig:
        fields = {
            "particles": self.particles,
            "n_particles": 1,
            "energy": self.energy,
            "eta_min": self.eta_min,
            "eta_max": self.eta_max,
            "pileup": self.pileup,
            "n_events": self.events,
            "events_per_shard": self.events_per_shard,
            "seed": self.seed,
        }
        fields.update(changes)
        return HgcalSimConfig(**fields)

    def grid_spec(self) -> GridSpec:
        return GridSpec(pitch=self.grid_pitch, window=self.grid_window, layers=self.grid_layers)


@dataclasses.dataclass(frozen=True)
class RegressionLossConfig:
    """Weights of :func:`~fastreco.models.property_loss.property_loss`."""

    energy_weight: float = 1.0
    position_weight: float = 1.0
    position_scale_cm: float = POSITION_SCALE_CM
    delta: float = HUBER_DELTA


@dataclasses.dataclass(frozen=True)
class HgcalRegressionTaskConfig:
    """An HGCAL property-regression task; loaded from YAML with every field validated."""

    name: str
    kind: Literal["hgcal_regression"] = "hgcal_regression"
    data: RegressionDataConfig = dataclasses.field(default_factory=RegressionDataConfig)
    model: ModelConfig = dataclasses.field(default_factory=lambda: ModelConfig(name="hgcal-cnn3d"))
    training: TrainingConfig = dataclasses.field(
        default_factory=lambda: TrainingConfig(
            batch_size=32, learning_rate=1e-3, num_workers=0, augment=False
        )
    )
    loss: RegressionLossConfig = dataclasses.field(default_factory=RegressionLossConfig)
    #: what the barycentre outputs are relative to: ``axis`` (the window axis: the network
    #: regresses the barycentre itself) or ``barycentre`` (the energy-weighted barycentre of the
    #: model's own input: the network regresses a correction to it, as the energy is a ratio
    #: to the raw sum)
    position_reference: Literal["axis", "barycentre"] = "axis"

    def __post_init__(self) -> None:
        representation_of(self.model.name)

    @property
    def data_dir(self) -> Path:
        return Path(self.data.dir or f"data/{self.name}")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: Any = None) -> HgcalRegressionTaskConfig:
        return build_dataclass(cls, raw, source=source)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> HgcalRegressionTaskConfig:
        path = Path(path)
        if not path.exists():
            raise InputError("no such config file", source=path)
        raw = yaml.safe_load(path.read_text())
        if not isinstance(raw, dict):
            raise InputError("a task config must be a mapping", source=path)
        raw.setdefault("name", path.stem)
        try:
            return cls.from_dict(raw, source=path)
        except InputError as exc:
            if exc.source is not None:
                raise
            raise InputError(exc.reason, source=path, field=exc.field, value=exc.value) from None

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


# --------------------------------------------------------------------------------------------
# data: store -> grid file -> per-event inputs and targets
# --------------------------------------------------------------------------------------------
def ensure_store(task: HgcalRegressionTaskConfig, *, progress: bool = True) -> Path:
    """The task's event store, simulated (or completed) first if needed."""
    from fastreco.sim.hgcal_engine import missing_hgcal_shards, simulate_hgcal

    config = task.data.sim_config()
    out = task.data_dir
    if not out.exists() or missing_hgcal_shards(config, out):
        simulate_hgcal(config, out, workers=1, progress=progress)
    return out


def grid_cache_dir(task: HgcalRegressionTaskConfig) -> Path:
    """The overlap-weight cache folder of the task's grid, shared by the stores beside it."""
    return task.data_dir.parent / GRID_CACHE_NAME


def grid_path(task: HgcalRegressionTaskConfig) -> Path:
    """The grid-window file of the task's store (beside it; named by the grid)."""
    d = task.data
    layers = "all" if d.grid_layers is None else f"{len(d.grid_layers)}l{min(d.grid_layers)}"
    name = f"{task.data_dir.name}.grid-p{d.grid_pitch:g}-w{d.grid_window}-{layers}.h5"
    return task.data_dir.with_name(name)


def ensure_grid(task: HgcalRegressionTaskConfig, *, progress: bool = True) -> Path:
    """The task's grid windows (:func:`~fastreco.data.grid_dataset.convert_to_grid`), converted
    once; the file records its grid and the store it came from."""
    from fastreco.data.grid_dataset import convert_to_grid, read_grid

    store_dir = ensure_store(task, progress=progress)
    path = grid_path(task)
    if path.exists():
        attrs = read_grid(path)["attrs"]
        n = EventStore(store_dir).n_events
        if int(attrs["n_events"]) == n:
            return path
        log.info(
            "grid file %s is stale (%s events, store %d): converting again",
            path,
            attrs["n_events"],
            n,
        )
    return convert_to_grid(
        store_dir, path, task.data.grid_spec(), values="gev", cache_dir=grid_cache_dir(task)
    )


def window_axis(grid: HexGrid, batch: EventBatch) -> np.ndarray:
    """The window axes of :meth:`HexGrid.windows` (``(n, 2)`` [cm on z_ref], the centres of the
    pixel-aligned windows) without making the windows: what a point-cloud pipeline needs."""
    axis = grid.axis_points(batch)
    if not grid.spec.projective:
        return axis
    origins = grid.window_origins(axis)
    return (origins[:, 0, :] + grid.spec.window / 2 - grid.n_side / 2) * grid.spec.pitch


def window_point_clouds(
    batch: EventBatch, grid: HexGrid, axis: np.ndarray, geometry: HgcalEndcap
) -> list[np.ndarray]:
    """Per event, the point-cloud features ``(n_hits, 8)`` float32 of the hits inside its grid
    window (around ``axis`` (n, 2) [cm on z_ref], :func:`window_axis`; hits projected onto
    z_ref along the line from the origin, in the window's layers), with x and y in the window
    frame (relative to the window axis at the hit's depth, / 10 cm)."""
    events = point_cloud_events(batch, geometry)
    spec = grid.spec
    assert spec.z_ref is not None
    layer_in_grid = np.zeros(geometry.n_layers, bool)
    layer_in_grid[list(grid.layers)] = True
    half = 0.5 * spec.window * spec.pitch  # window half-width on z_ref [cm]
    out = []
    for e, ev in enumerate(events):
        z = ev.position[:, 2].astype(np.float64)
        dx = ev.position[:, 0] - axis[e, 0] * z / spec.z_ref  # [cm] at the hit's depth
        dy = ev.position[:, 1] - axis[e, 1] * z / spec.z_ref
        on_ref = spec.z_ref / z  # projection onto z_ref
        keep = (
            layer_in_grid[ev.layer]
            & (np.abs(dx * on_ref) < half)
            & (np.abs(dy * on_ref) < half)
            & (ev.energy > 0)
        )
        f = ev.features[keep].copy()
        f[:, _X_COL] = dx[keep] / _LENGTH_UNIT
        f[:, _Y_COL] = dy[keep] / _LENGTH_UNIT
        out.append(f)
    return out


def log_energy(values: np.ndarray) -> np.ndarray:
    """The input transform of voxel energies [GeV]: ``ln(1 + E / 10 MeV)`` (E < 0 -> 0)."""
    return np.log1p(np.maximum(values, 0.0) / LOG_ENERGY_UNIT).astype(np.float32)


@dataclasses.dataclass
class RegressionEvents:
    """Inputs and truth of a set of events (the store's events, or a fresh sample).

    Attributes:
        windows: grid windows (:class:`Windows`, sparse, GeV per voxel) with the window axes.
        points: per event ``(n_hits, 8)`` float32 point clouds (:func:`window_point_clouds`),
            or None when not built.
        truth: ``(n,)`` arrays: pdg, energy [GeV], barycenter_x/y/z, barycenter_dx/dy [cm].
        raw_energy: ``(n,)`` calibrated raw sum [GeV] (the energy ratio's reference).
        event: ``(n,)`` index of each event in its source.
        z_ref: the grid's reference plane [cm].
        layer_z, pixel_size: ``(L,)`` z [cm] and pixel size [cm] of each grid layer.
        n_side: pixels per side of the global grid; z_front: the detector's front face [cm].
    """

    windows: Windows
    points: list[np.ndarray] | None
    truth: dict[str, np.ndarray]
    raw_energy: np.ndarray
    event: np.ndarray
    z_ref: float
    layer_z: np.ndarray
    pixel_size: np.ndarray
    n_side: int
    z_front: float

    def __len__(self) -> int:
        return len(self.raw_energy)

    @property
    def valid(self) -> np.ndarray:
        """Events with a finite truth barycentre and a positive raw sum."""
        ok = self.raw_energy > 0
        for k in ("energy", "barycenter_dx", "barycenter_dy", "barycenter_z"):
            ok &= np.isfinite(self.truth[k])
        return ok

    def targets(self) -> np.ndarray:
        """``(n, 4)`` float32 targets, the columns of :data:`TARGETS` (NaN for invalid events)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = self.truth["energy"] / self.raw_energy
        t = self.truth
        cols = [ratio, t["barycenter_dx"], t["barycenter_dy"], t["barycenter_z"]]
        return np.stack(cols, axis=1).astype(np.float32)

    def image(self, i: int) -> np.ndarray:
        """``(1, L, H, W)`` float32 network input of event i (log-energy voxels)."""
        return log_energy(self.windows.event(i))[None]

    def grid_barycentre(self) -> np.ndarray:
        """Energy-weighted barycentre of each window, ``(n, 3)``: dx, dy [cm] from the window
        axis at the barycentre's depth (the targets' frame) and z [cm]; 0 for empty windows."""
        w = self.windows
        _, H, W = w.shape
        n = w.n_events
        ev = np.repeat(np.arange(n), np.diff(w.offsets))
        k, iy, ix = w.index // (H * W), (w.index // W) % H, w.index % W
        e = np.maximum(w.value.astype(np.float64), 0.0)
        size, z = self.pixel_size[k], self.layer_z[k]
        ax, ay = w.axis[ev, 0] * z / self.z_ref, w.axis[ev, 1] * z / self.z_ref
        dx = (w.origins[ev, k, 0] + ix + 0.5 - self.n_side / 2) * size - ax
        dy = (w.origins[ev, k, 1] + iy + 0.5 - self.n_side / 2) * size - ay
        return _weighted_means(ev, e, (dx, dy, z), n)

    def point_barycentre(self) -> np.ndarray:
        """Energy-weighted barycentre of each point cloud, ``(n, 3)`` as :meth:`grid_barycentre`."""
        assert self.points is not None
        ev = np.repeat(np.arange(len(self.points)), [len(p) for p in self.points])
        f = np.concatenate(self.points) if len(ev) else np.zeros((0, N_FEATURES), np.float32)
        e = LOG_ENERGY_UNIT * np.expm1(f[:, _E_COL].astype(np.float64))
        coords = (
            f[:, _X_COL] * np.float64(_LENGTH_UNIT),
            f[:, _Y_COL] * np.float64(_LENGTH_UNIT),
            f[:, _Z_COL] * np.float64(_LENGTH_UNIT) + self.z_front,
        )
        return _weighted_means(ev, e, coords, len(self.points))


def _weighted_means(
    event: np.ndarray, weight: np.ndarray, columns: Sequence[np.ndarray], n: int
) -> np.ndarray:
    """``(n, len(columns))`` per-event weighted means (0 where an event has no weight)."""
    norm = np.bincount(event, weights=weight, minlength=n)
    out = np.zeros((n, len(columns)))
    ok = norm > 0
    for j, col in enumerate(columns):
        out[ok, j] = np.bincount(event, weights=weight * col, minlength=n)[ok] / norm[ok]
    return out


def store_raw_sections(
    store_dir: str | os.PathLike[str], calib: CalibratedEnergySum, batch_size: int = 1000
) -> np.ndarray:
    """Section energies ``(n, 3)`` [GeV] of every event of a store (for fitting ``calib``)."""
    store = EventStore(store_dir)
    return np.concatenate(
        [calib.section_energies(b) for b in store.iter_batches(batch_size)], axis=0
    )


def fit_raw_calibration(
    task: HgcalRegressionTaskConfig, store_dir: Path, truth_energy: np.ndarray, train: np.ndarray
) -> tuple[CalibratedEnergySum, np.ndarray]:
    """The raw calibrated sum fitted on the training events and its value for every event."""
    geometry = EventStore(store_dir).detector
    calib = CalibratedEnergySum(geometry, radius=task.data.raw_radius)
    sections = store_raw_sections(store_dir, calib)
    ok = train & np.isfinite(truth_energy) & (sections.sum(axis=1) > 0)
    used = sections[ok].sum(axis=0) > 0
    coef = np.ones(sections.shape[1])
    if ok.sum() >= sections.shape[1]:
        # least squares of the relative residuals, as CalibratedEnergySum.fit
        e = truth_energy[ok]
        design = sections[ok][:, used] / e[:, None]
        coef[used] = np.linalg.lstsq(design, np.ones(len(e)), rcond=None)[0]
    calib.coef = coef
    return calib, sections @ coef


def load_store_events(
    task: HgcalRegressionTaskConfig,
    *,
    points: bool,
    calib: CalibratedEnergySum | None = None,
    progress: bool = True,
) -> tuple[RegressionEvents, CalibratedEnergySum]:
    """All events of the task's store with their windows (from the grid file), targets, raw
    sums (``calib``, or fitted on the training split) and, with ``points``, point clouds."""
    from fastreco.data.grid_dataset import read_grid

    path = ensure_grid(task, progress=progress)
    store_dir = task.data_dir
    data = read_grid(path)
    truth = {k: np.asarray(v) for k, v in data["targets"].items()}
    n = len(truth["energy"])
    train = split_codes(np.arange(n), task.data.split) == 0
    if calib is None:
        calib, raw = fit_raw_calibration(task, store_dir, truth["energy"], train)
    else:
        raw = store_raw_sections(store_dir, calib) @ calib.coef
    clouds = None
    store = EventStore(store_dir)
    grid = hexgrid_for(store.detector, data["spec"], grid_cache_dir(task))
    if points:
        clouds = []
        for start in range(0, n, 1000):
            stop = min(start + 1000, n)
            axis = data["windows"].axis[start:stop]
            clouds += window_point_clouds(store.read(start, stop), grid, axis, store.detector)
    events = RegressionEvents(
        windows=data["windows"],
        points=clouds,
        truth=truth,
        raw_energy=np.asarray(raw, np.float64),
        event=np.asarray(data["event"]),
        **_grid_geometry(grid),
    )
    return events, calib


def _grid_geometry(grid: HexGrid) -> dict[str, Any]:
    """The :class:`RegressionEvents` fields describing the grid."""
    return {
        "z_ref": grid.z_ref,
        "layer_z": np.asarray(grid.layer_z, np.float64),
        "pixel_size": np.asarray(grid.pixel_size, np.float64),
        "n_side": int(grid.n_side),
        "z_front": float(grid.geometry.z_front),
    }


def hits_near_axis(hits: Hits, axis: np.ndarray, radius: float | None, z_ref: float) -> Hits:
    """The hits whose projection onto z = ``z_ref`` (along the line from the origin) lies within
    ``radius`` [cm] of their event's axis point ``axis`` ``(n_events, 2)`` [cm on z_ref];
    ``radius=None`` keeps all."""
    if radius is None:
        return hits
    scale = z_ref / hits.z
    d = np.hypot(hits.x * scale - axis[hits.event, 0], hits.y * scale - axis[hits.event, 1])
    keep = d <= radius
    arrays = ("event", "layer", "energy", "x", "y", "z", "density")
    return dataclasses.replace(hits, **{f: getattr(hits, f)[keep] for f in arrays})


def seeded_axis(truth: dict[str, np.ndarray], z_ref: float) -> np.ndarray | None:
    """The window axis ``(n, 2)`` [cm on z_ref] seeded by each gun particle's impact on the
    front face (as a tracker or trigger seed would give), or None if a particle has none."""
    impact = np.stack([truth["impact_x"], truth["impact_y"]], axis=1)
    if not np.all(np.isfinite(impact)):
        return None
    return impact * (z_ref / truth["impact_z"])[:, None]


def events_from_batch(
    batch: EventBatch,
    grid: HexGrid,
    calib: CalibratedEnergySum,
    *,
    points: bool = True,
    seeded: bool = False,
) -> RegressionEvents:
    """:class:`RegressionEvents` of a freshly simulated batch (e.g. with pileup).

    With ``seeded`` the windows (and the hits of the raw sum, within ``calib.radius``) are
    centred on the particles' front-face impacts (:func:`seeded_axis`) rather than on the
    shower axis found from the energy (which pileup can pull onto another shower)."""
    from fastreco.data.hgcal_targets import single_particle_targets

    geometry = calib.geometry
    assert grid.spec.z_ref is not None
    z_ref = float(grid.spec.z_ref)
    truth = {k: np.asarray(v) for k, v in single_particle_targets(batch, geometry).items()}
    axis = seeded_axis(truth, z_ref) if seeded else None
    windows = grid.windows(batch, "gev", axis=axis)
    z = truth["barycenter_z"]
    truth["barycenter_dx"] = truth["barycenter_x"] - windows.axis[:, 0] * z / z_ref
    truth["barycenter_dy"] = truth["barycenter_y"] - windows.axis[:, 1] * z / z_ref
    clouds = window_point_clouds(batch, grid, windows.axis, geometry) if points else None
    if seeded:
        hits = Hits.from_batch(batch, geometry, None)
        raw = calib.predict(hits_near_axis(hits, windows.axis, calib.radius, z_ref))
    else:
        raw = calib.predict(batch)
    return RegressionEvents(
        windows=windows,
        points=clouds,
        truth=truth,
        raw_energy=raw,
        event=np.arange(batch.n_events),
        **_grid_geometry(grid),
    )


# --------------------------------------------------------------------------------------------
# representations: the model decides
# --------------------------------------------------------------------------------------------
Batch = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Representation:
    """How the events feed a model: its input shape, one event's input, the energy-weighted
    barycentre of the inputs (``(n, 3)``: dx, dy, z [cm]), the batching and the call of the
    model on a batch."""

    name: str
    needs_points: bool
    input_shape: Callable[[RegressionEvents], tuple[int, ...]]
    item: Callable[[RegressionEvents, int], np.ndarray]
    barycentre: Callable[[RegressionEvents], np.ndarray]
    collate: Callable[[list[np.ndarray]], tuple[torch.Tensor, ...]]
    forward: Callable[[torch.nn.Module, tuple[torch.Tensor, ...]], torch.Tensor]


def _stack_images(items: list[np.ndarray]) -> tuple[torch.Tensor, ...]:
    return (torch.from_numpy(np.stack(items)),)  # (B, 1, L, H, W)


def _concat_points(items: list[np.ndarray]) -> tuple[torch.Tensor, ...]:
    x = torch.from_numpy(np.concatenate(items)) if items else torch.zeros(0, N_FEATURES)
    sizes = torch.tensor([len(p) for p in items])
    batch = torch.repeat_interleave(torch.arange(len(items)), sizes)  # (N,)
    return x, batch, torch.tensor(len(items))


def _point_item(events: RegressionEvents, i: int) -> np.ndarray:
    assert events.points is not None
    return events.points[i]


REPRESENTATIONS: dict[str, Representation] = {
    "grid": Representation(
        name="grid",
        needs_points=False,
        input_shape=lambda ev: (1, *ev.windows.shape),
        item=RegressionEvents.image,
        barycentre=RegressionEvents.grid_barycentre,
        collate=_stack_images,
        forward=lambda model, x: model(x[0]),
    ),
    "points": Representation(
        name="points",
        needs_points=True,
        input_shape=lambda ev: (N_FEATURES,),
        item=_point_item,
        barycentre=RegressionEvents.point_barycentre,
        collate=_concat_points,
        forward=lambda model, x: model(x[0], x[1], int(x[2])),
    ),
}
#: The representation each registered model reads.
MODEL_REPRESENTATION = {"hgcal-cnn3d": "grid", "hgcal-drn": "points"}


def representation_of(model_name: str) -> Representation:
    """The :class:`Representation` a model reads; an error names the models known."""
    if model_name not in MODEL_REPRESENTATION:
        raise InputError(
            f"no input representation for this model; choose one of {sorted(MODEL_REPRESENTATION)}",
            field="model.name",
            value=model_name,
        )
    return REPRESENTATIONS[MODEL_REPRESENTATION[model_name]]


class RegressionDataset(torch.utils.data.Dataset):
    """Item ``i``: (model input of event ``indices[i]``, targets (4,), raw energy [GeV],
    reference (4,)): the reference is added to the network's outputs, 0 for the energy ratio
    and, with ``position_reference="barycentre"``, the input's barycentre for dx, dy, z."""

    def __init__(
        self,
        events: RegressionEvents,
        indices: np.ndarray,
        representation: Representation,
        position_reference: str = "axis",
    ) -> None:
        self.events = events
        self.indices = np.asarray(indices, np.int64)
        self.rep = representation
        self.targets = events.targets()
        self.reference = np.zeros_like(self.targets)
        if position_reference == "barycentre":
            self.reference[:, 1:] = representation.barycentre(events)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
        e = int(self.indices[i])
        return (
            self.rep.item(self.events, e),
            self.targets[e],
            float(self.events.raw_energy[e]),
            self.reference[e],
        )

    def collate(self, items: list[tuple[np.ndarray, np.ndarray, float, np.ndarray]]) -> Batch:
        return {
            "inputs": self.rep.collate([it[0] for it in items]),
            "target": torch.from_numpy(np.stack([it[1] for it in items])),
            "raw_energy": torch.tensor([it[2] for it in items], dtype=torch.float64),
            "reference": torch.from_numpy(np.stack([it[3] for it in items])),
        }


def split_indices(
    events: RegressionEvents, task: HgcalRegressionTaskConfig, split: str
) -> np.ndarray:
    """Valid events of one split (by event index, the same for every model and baseline)."""
    code = {"train": 0, "val": 1, "test": 2}[split]
    return np.flatnonzero((split_codes(events.event, task.data.split) == code) & events.valid)


# --------------------------------------------------------------------------------------------
# the LightningModule
# --------------------------------------------------------------------------------------------
class RegressionModule(L.LightningModule):
    """A registered model regressing :data:`TARGETS`; outputs are standardized
    (``offset + scale * output`` in physical units) and trained with ``property_loss``."""

    def __init__(
        self,
        task_dict: dict[str, Any],
        input_shape: Sequence[int],
        target_offset: Sequence[float],
        target_scale: Sequence[float],
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.task = HgcalRegressionTaskConfig.from_dict(task_dict)
        self.rep = representation_of(self.task.model.name)
        self.model = build_model(
            self.task.model.name, tuple(input_shape), len(TARGETS), **self.task.model.params
        )
        self.register_buffer("offset", torch.tensor(target_offset, dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(target_scale, dtype=torch.float32))

    def forward(
        self, inputs: tuple[torch.Tensor, ...], reference: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Physical predictions ``(B, 4)``: energy ratio, dx, dy [cm], z [cm] (``reference``
        ``(B, 4)``: added, see :class:`RegressionDataset`)."""
        out = self.offset + self.scale * self.rep.forward(self.model, inputs)
        return out if reference is None else out + reference

    def _step(self, b: Batch, stage: str, index: int) -> torch.Tensor:
        c = self.task.loss
        pred = self(b["inputs"], b["reference"])
        terms = property_loss(
            pred,
            b["target"],
            energy_weight=c.energy_weight,
            position_weight=c.position_weight,
            position_scale_cm=c.position_scale_cm,
            delta=c.delta,
        )
        loss = sum(terms.values())
        assert isinstance(loss, torch.Tensor)
        check_finite(loss, stage, self.current_epoch, index)
        n = len(b["target"])
        self.log(f"{stage}_loss", loss, prog_bar=True, batch_size=n)
        for key, value in terms.items():
            self.log(f"{stage}_{key}", value, batch_size=n)
        rel = pred[:, 0] / b["target"][:, 0] - 1.0
        self.log(f"{stage}_energy_rms", rel.square().mean().sqrt(), batch_size=n)
        return loss

    def training_step(self, b: Batch, index: int) -> torch.Tensor:
        return self._step(b, "train", index)

    def validation_step(self, b: Batch, index: int) -> None:
        self._step(b, "val", index)

    def configure_optimizers(self) -> Any:
        return adamw_cosine(self.parameters(), self.task.training)


def load_regression_model(run_dir: str | os.PathLike[str], device: Any = "cpu") -> RegressionModule:
    """The trained module of a run (best checkpoint, else last), in eval mode."""
    from fastreco.train.runner import load_module

    return load_module(RegressionModule, run_dir, device)


def load_raw_calibration(info: dict[str, Any]) -> CalibratedEnergySum:
    """The raw calibrated sum stored in a run's ``run.json``."""
    return CalibratedEnergySum.from_dict(info["raw_calibration"])


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------
def train_hgcal_regression(
    task: HgcalRegressionTaskConfig | str | os.PathLike[str],
    *,
    runs_dir: str | os.PathLike[str] = "runs",
    run_name: str | None = None,
    init_from: str | os.PathLike[str] | None = None,
    resume: bool = False,
    devices: int = 1,
    progress: bool = True,
    max_epochs: int | None = None,
) -> Path:
    """Train a regression task's model; returns the run folder (see module docstring)."""
    from fastreco.train.runner import (
        init_weights_from,
        make_trainer,
        open_run,
        record_training,
        write_run_info,
    )

    task, run, last = open_run(
        task, HgcalRegressionTaskConfig, runs_dir=runs_dir, run_name=run_name, resume=resume
    )
    rep = representation_of(task.model.name)
    events, calib = load_store_events(task, points=rep.needs_points, progress=progress)
    train_idx = split_indices(events, task, "train")
    val_idx = split_indices(events, task, "val")
    if len(train_idx) < 2 or not len(val_idx):
        raise InputError(
            f"too few events for a train/val split ({len(train_idx)}/{len(val_idx)})",
            source=task.data_dir,
            field="data.events",
            value=task.data.events,
        )
    train = RegressionDataset(events, train_idx, rep, task.position_reference)
    val = RegressionDataset(events, val_idx, rep, task.position_reference)
    # standardized outputs: offset + scale * output is the target minus its reference
    residual = (train.targets - train.reference)[train_idx].astype(np.float64)
    offset = residual.mean(axis=0)
    scale = np.maximum(residual.std(axis=0), 1e-3)
    input_shape = rep.input_shape(events)
    info: dict[str, Any] = {
        "run_schema_version": RUN_SCHEMA_VERSION,
        "fastreco_version": __version__,
        "task": task.name,
        "kind": "hgcal_regression",
        "data_dir": str(task.data_dir),
        "grid_file": str(grid_path(task)),
        "n_events": len(events),
        "representation": rep.name,
        "input_shape": list(input_shape),
        "targets": list(TARGETS),
        "target_offset": offset.tolist(),
        "target_scale": scale.tolist(),
        "raw_calibration": calib.to_dict(),
        "init_from": None if init_from is None else str(init_from),
    }
    write_run_info(run, info)

    t = task.training
    L.seed_everything(t.seed, workers=True)
    module = RegressionModule(task.to_dict(), input_shape, offset.tolist(), scale.tolist())
    if init_from is not None:
        info["init_tensors"] = init_weights_from(module, init_from)
    loader = torch.utils.data.DataLoader
    trainer, best = make_trainer(
        run,
        t,
        devices=devices,
        max_epochs=max_epochs,
        progress=progress,
        checkpoint_every_n_steps=10,
        log_every_n_steps=5,
        gradient_clip_val=1.0,
    )
    trainer.fit(
        module,
        loader(train, batch_size=t.batch_size, shuffle=True, collate_fn=train.collate),
        loader(val, batch_size=t.batch_size, shuffle=False, collate_fn=val.collate),
        ckpt_path=None if last is None else str(last),
    )
    record_training(
        run,
        info,
        trainer,
        best,
        n_train=len(train),
        n_val=len(val),
    )
    return run
