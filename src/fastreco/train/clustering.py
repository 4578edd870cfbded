"""Training of graph networks that cluster HGCAL hits by object condensation.

A clustering task (``kind: clustering`` in its YAML, e.g. ``configs/hgcal_clustering.yaml``)
names an HGCAL simulation (simulated on first use into ``data/<name>``), what the network's
points are (``data.input``: ``hits`` or CLUE's 2D ``layer_clusters``,
:mod:`fastreco.data.clustering_inputs`), a graph model of the MODELS registry (``gravnet``,
``edgeconv`` on hits; ``layer_gravnet``, ``layer_edgeconv`` on layer clusters), the training
settings shared with the ECAL tasks and the condensation settings. ``fastreco train`` writes the same run folder as for the ECAL
tasks (``config.yaml``, ``run.json``, ``checkpoints/{best,last}.ckpt``, ``tb/``) and resumes a
killed run with ``--resume``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import lightning as L
import numpy as np
import torch
import yaml

from fastreco import __version__
from fastreco.config import ModelConfig, TrainingConfig, build_dataclass
from fastreco.data.pointcloud import CLASSES, PointCloudEvent, collate
from fastreco.data.splits import split_mask
from fastreco.data.store import EventStore
from fastreco.errors import InputError
from fastreco.models.condensation import condensation_loss, property_loss
from fastreco.models.registry import build_model
from fastreco.sim.hgcal import HgcalSimConfig
from fastreco.train.module import adamw_cosine, check_finite

if TYPE_CHECKING:
    from fastreco.data.clustering_inputs import ClusteringInput

log = logging.getLogger(__name__)

RUN_SCHEMA_VERSION = 1


@dataclasses.dataclass(frozen=True)
class HgcalDataConfig:
    """The events: an HGCAL simulation (see :class:`~fastreco.sim.hgcal.HgcalSimConfig`)."""

    particles: tuple[str, ...] = ("gamma", "e-", "pi+")
    n_particles: int = 3
    energy: str = "10:100"
    eta_min: float = 1.7
    eta_max: float = 2.7
    min_separation: float = 3.0
    max_separation: float | None = 30.0
    pileup: float = 50.0
    events: int = 400
    events_per_shard: int | None = None
    seed: int = 21
    dir: str = ""
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    min_fraction: float = 0.5  # a hit belongs to a gun particle holding this share of it
    roi_radius: float | None = 50.0  # cm on the front face around the gun particles; None: all
    # the network's points: "hits" or CLUE's 2D "layer_clusters" (fastreco.data.clustering_inputs)
    input: str = "hits"

    def __post_init__(self) -> None:
        self.network_input  # noqa: B018 - resolving it validates the name

    @property
    def network_input(self) -> ClusteringInput:
        """The :class:`~fastreco.data.clustering_inputs.ClusteringInput` of ``input``."""
        from fastreco.data.clustering_inputs import INPUTS

        return INPUTS.resolve(self.input, field="data.input")

    def sim_config(self) -> HgcalSimConfig:
        return HgcalSimConfig(
            particles=self.particles,
            n_particles=self.n_particles,
            energy=self.energy,
            eta_min=self.eta_min,
            eta_max=self.eta_max,
            min_separation=self.min_separation,
            max_separation=self.max_separation,
            pileup=self.pileup,
            n_events=self.events,
            events_per_shard=self.events_per_shard,
            seed=self.seed,
        )


@dataclasses.dataclass(frozen=True)
class CondensationConfig:
    """Loss weights and inference thresholds of object condensation."""

    q_min: float = 0.1
    noise_weight: float = 1.0  # s_B
    energy_weight: float = 0.2
    class_weight: float = 0.2
    t_beta: float = 0.3
    t_d: float = 0.5
    # 0: each condensation point collects the free hits within t_d (Kieseler's greedy rule);
    # > 0: every hit joins its nearest condensation point within this radius
    # (fastreco.models.condensation.condense)
    assign_radius: float = 0.0


@dataclasses.dataclass(frozen=True)
class ClusteringTaskConfig:
    """A clustering task; loaded from YAML with every field validated."""

    name: str
    kind: Literal["clustering"] = "clustering"
    data: HgcalDataConfig = dataclasses.field(default_factory=HgcalDataConfig)
    model: ModelConfig = dataclasses.field(default_factory=lambda: ModelConfig(name="gravnet"))
    training: TrainingConfig = dataclasses.field(
        default_factory=lambda: TrainingConfig(batch_size=2, learning_rate=3e-3, num_workers=0)
    )
    condensation: CondensationConfig = dataclasses.field(default_factory=CondensationConfig)

    @property
    def data_dir(self) -> Path:
        return Path(self.data.dir or f"data/{self.name}")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: Any = None) -> ClusteringTaskConfig:
        return build_dataclass(cls, raw, source=source)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ClusteringTaskConfig:
        raw = yaml.safe_load(Path(path).read_text())
        if not isinstance(raw, dict):
            raise InputError("a task config must be a mapping", source=path)
        raw.setdefault("name", Path(path).stem)
        return cls.from_dict(raw, source=path)

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def ensure_hgcal_data(task: ClusteringTaskConfig, *, progress: bool = True) -> Path:
    """The task's HGCAL event store, simulated (or completed) first if needed."""
    from fastreco.sim.hgcal_engine import missing_hgcal_shards, simulate_hgcal

    config = task.data.sim_config()
    out = task.data_dir
    if not out.exists() or missing_hgcal_shards(config, out):
        simulate_hgcal(config, out, workers=1, progress=progress)
    return out


def load_events(
    store_dir: str | os.PathLike[str], split: str, task: ClusteringTaskConfig
) -> list[PointCloudEvent]:
    """The network's points (hits or layer clusters, ``data.input``) of one split of the task's
    store, in event order."""
    from fastreco.data.pointcloud import point_cloud_events

    store = EventStore(store_dir)
    keep = np.flatnonzero(split_mask(np.arange(store.n_events), split, task.data.split))
    prepare = task.data.network_input.prepare
    events: list[PointCloudEvent] = []
    for start in range(0, store.n_events, 100):
        stop = min(start + 100, store.n_events)
        chosen = keep[(keep >= start) & (keep < stop)] - start
        if not len(chosen):
            continue
        batch = store.read(start, stop)
        pcs = point_cloud_events(
            batch,
            min_fraction=task.data.min_fraction,
            roi_radius=task.data.roi_radius,
            source=str(store_dir),
        )
        events += [prepare(pcs[i], task.data.min_fraction).points for i in chosen]
    return events


class CondensationModule(L.LightningModule):
    """A registered graph model trained with the object-condensation loss plus energy and
    class heads (weights from the task's ``condensation`` settings)."""

    def __init__(self, task_dict: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.task = ClusteringTaskConfig.from_dict(task_dict)
        self.model = build_model(
            self.task.model.name,
            (self.task.data.network_input.n_features,),
            len(CLASSES),
            **self.task.model.params,
        )

    def forward(self, x: torch.Tensor, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(x, batch)

    def _step(self, b: dict[str, torch.Tensor], stage: str, index: int) -> torch.Tensor:
        c = self.task.condensation
        out = self(b["features"], b["batch"])
        terms = condensation_loss(
            out["beta"], out["coords"], b["object_id"], b["batch"], q_min=c.q_min
        )
        target = torch.log(b["object_energy"].clamp_min(1e-3))
        e_loss = property_loss(out["beta"], b["object_id"], (out["energy"] - target).square())
        ce = torch.nn.functional.cross_entropy(out["logits"], b["object_class"], reduction="none")
        c_loss = property_loss(out["beta"], b["object_id"], ce)
        loss = (
            terms["attractive"]
            + terms["repulsive"]
            + terms["coward"]
            + c.noise_weight * terms["noise"]
            + c.energy_weight * e_loss
            + c.class_weight * c_loss
        )
        check_finite(loss, stage, self.current_epoch, index)
        n = int(b["batch"].max()) + 1 if len(b["batch"]) else 1
        self.log(f"{stage}_loss", loss, prog_bar=True, batch_size=n)
        for key, value in terms.items():
            self.log(f"{stage}_{key}", value, batch_size=n)
        self.log(f"{stage}_energy", e_loss, batch_size=n)
        self.log(f"{stage}_class", c_loss, batch_size=n)
        return loss

    def training_step(self, b: dict[str, torch.Tensor], index: int) -> torch.Tensor:
        return self._step(b, "train", index)

    def validation_step(self, b: dict[str, torch.Tensor], index: int) -> None:
        self._step(b, "val", index)

    def configure_optimizers(self) -> Any:
        return adamw_cosine(self.parameters(), self.task.training, weight_decay=1e-5)


def load_clustering_model(run_dir: str | os.PathLike[str], device: Any = "cpu") -> Any:
    """The trained graph model of a clustering run (best checkpoint, else last), in eval mode."""
    from fastreco.train.runner import load_module

    return load_module(CondensationModule, run_dir, device)


def train_clustering(
    task: ClusteringTaskConfig | str | os.PathLike[str],
    *,
    runs_dir: str | os.PathLike[str] = "runs",
    run_name: str | None = None,
    init_from: str | os.PathLike[str] | None = None,
    resume: bool = False,
    devices: int = 1,
    progress: bool = True,
    max_epochs: int | None = None,
) -> Path:
    """Train a clustering task's graph network; returns the run folder (see module docstring)."""
    from fastreco.train.runner import (
        init_weights_from,
        make_trainer,
        open_run,
        record_training,
        write_run_info,
    )

    task, run, last = open_run(
        task, ClusteringTaskConfig, runs_dir=runs_dir, run_name=run_name, resume=resume
    )
    store_dir = ensure_hgcal_data(task, progress=progress)
    info: dict[str, Any] = {
        "run_schema_version": RUN_SCHEMA_VERSION,
        "fastreco_version": __version__,
        "task": task.name,
        "kind": "clustering",
        "data_dir": str(store_dir),
        "n_events": EventStore(store_dir).n_events,
        "input": task.data.input,
        "input_shape": [task.data.network_input.n_features],
        "init_from": None if init_from is None else str(init_from),
    }
    write_run_info(run, info)

    t = task.training
    L.seed_everything(t.seed, workers=True)
    module = CondensationModule(task.to_dict())
    if init_from is not None:
        info["init_tensors"] = init_weights_from(module, init_from)
    train = load_events(store_dir, "train", task)
    val = load_events(store_dir, "val", task)
    if not train or not val:
        raise InputError(
            f"too few events for a train/val split ({len(train)}/{len(val)})",
            source=store_dir,
            field="data.events",
            value=task.data.events,
        )
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
        loader(train, batch_size=t.batch_size, shuffle=True, collate_fn=collate),
        loader(val, batch_size=t.batch_size, shuffle=False, collate_fn=collate),
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
