"""``fastreco train``: a task config in, a run folder out.

A run folder holds everything needed to evaluate, resume or export the run::

    runs/<name>/
      config.yaml            the task, as resolved
      run.json               fastreco version, run schema, input shape, preprocessing, results
      checkpoints/best.ckpt  lowest validation loss
      checkpoints/last.ckpt  written every few steps: what --resume continues from
      tb/                    TensorBoard logs (loss, accuracy, learning rate)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from fastreco import __version__
from fastreco.config import TaskConfig
from fastreco.data.representations import REPRESENTATIONS
from fastreco.data.store import EventStore
from fastreco.errors import InputError
from fastreco.sim.config import SimConfig
from fastreco.sim.engine import missing_shards, simulate

log = logging.getLogger(__name__)

RUN_SCHEMA_VERSION = 1


def sim_config(task: TaskConfig) -> SimConfig:
    d = task.data
    return SimConfig(
        particles=d.particles,
        energy=d.energy,
        n_events=d.events,
        seed=d.seed,
        eta_max=d.eta_max,
        events_per_shard=d.events_per_shard,
    )


def ensure_data(task: TaskConfig, *, workers: int = 2, progress: bool = True) -> Path:
    """The task's event store, simulated (or completed) first if needed."""
    config = sim_config(task)
    out = task.data_dir
    if not out.exists() or missing_shards(config, out):
        log.info("simulating the data of task %s into %s", task.name, out)
        simulate(config, out, workers=workers, progress=progress)
    return out


def load_run_info(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``run.json`` of a run folder (any task kind); clear errors for a bad or foreign folder."""
    run = Path(run_dir)
    info_path = run / "run.json"
    if not info_path.exists():
        raise InputError("not a fastreco run folder (no run.json)", source=run)
    info = json.loads(info_path.read_text())
    version = info.get("run_schema_version")
    if version != RUN_SCHEMA_VERSION:
        raise InputError(
            f"run folder written by an incompatible fastreco ({info.get('fastreco_version')}); "
            f"this version {__version__} reads run schema {RUN_SCHEMA_VERSION}",
            source=info_path,
            field="run_schema_version",
            value=version,
        )
    return info


def load_run(run_dir: str | os.PathLike[str]) -> tuple[TaskConfig, dict[str, Any]]:
    """The task and run.json of an ECAL (classification / regression) run folder."""
    info = load_run_info(run_dir)
    return TaskConfig.load(Path(run_dir) / "config.yaml"), info


def best_checkpoint(run_dir: str | os.PathLike[str]) -> Path:
    run = Path(run_dir)
    for name in ("best.ckpt", "last.ckpt"):
        path = run / "checkpoints" / name
        if path.exists():
            return path
    raise InputError("run has no checkpoint (was it trained?)", source=run / "checkpoints")


def write_run_info(run: Path, info: dict[str, Any]) -> None:
    """Write ``run.json`` atomically."""
    tmp = run / "run.json.tmp"
    tmp.write_text(json.dumps(info, indent=2, default=str))
    os.replace(tmp, run / "run.json")


def _augmentation_epoch(dataset: Any) -> Any:
    """A Lightning callback that draws new augmentation flips every epoch (the workers are
    re-created after it, see :meth:`ChunkDataset.set_epoch`)."""
    from lightning.pytorch.callbacks import Callback

    class AugmentationEpoch(Callback):
        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            dataset.set_epoch(trainer.current_epoch)

    return AugmentationEpoch()


def make_trainer(
    run: Path,
    training: Any,
    *,
    devices: int = 1,
    max_epochs: int | None = None,
    progress: bool = True,
    extra_callbacks: Sequence[Any] = (),
    checkpoint_every_n_steps: int = 20,
    log_every_n_steps: int = 10,
    **trainer_kwargs: Any,
) -> tuple[Any, Any]:
    """The Lightning Trainer of every task kind, writing into the run folder ``run``:
    ``checkpoints/best.ckpt`` (lowest ``val_loss``), ``checkpoints/last.ckpt`` every
    ``checkpoint_every_n_steps`` steps (what ``--resume`` continues), early stopping with the
    ``training`` config's patience, the learning rate and TensorBoard logs in ``tb/``, DDP when
    ``devices > 1``, the config's time bound. Returns the trainer and its best-checkpoint
    callback (``best_model_path``, ``best_model_score``)."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    best = ModelCheckpoint(
        dirpath=run / "checkpoints",
        filename="best",
        monitor="val_loss",
        mode="min",
        save_top_k=1,
        enable_version_counter=False,
    )
    callbacks = [
        best,
        ModelCheckpoint(
            dirpath=run / "checkpoints",
            every_n_train_steps=checkpoint_every_n_steps,
            save_top_k=0,
            save_last=True,
            enable_version_counter=False,
        ),
        EarlyStopping(monitor="val_loss", patience=training.patience, mode="min"),
        LearningRateMonitor(logging_interval="epoch"),
        *extra_callbacks,
    ]
    trainer = L.Trainer(
        max_epochs=max_epochs or training.epochs,
        accelerator="auto",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        callbacks=callbacks,
        logger=TensorBoardLogger(str(run), name="tb", version=""),
        enable_progress_bar=progress,
        enable_model_summary=False,
        max_time={"minutes": training.max_time_minutes} if training.max_time_minutes > 0 else None,
        log_every_n_steps=log_every_n_steps,
        **trainer_kwargs,
    )
    return trainer, best


def open_run(
    task: Any,
    config_class: Any,
    *,
    runs_dir: str | os.PathLike[str],
    run_name: str | None,
    resume: bool,
) -> tuple[Any, Path, Path | None]:
    """The run folder ``runs_dir/run_name`` (default: the task's name) of a training, for every
    task kind: ``task`` is a ``config_class`` instance or the path of its YAML (read with
    ``config_class.load``); a new folder gets the task's ``config.yaml``; with ``resume`` the
    folder's own config is used and its ``last.ckpt`` continued. A new training never overwrites
    a folder that holds checkpoints.

    Returns:
        ``(task, run, checkpoint to resume from or None)``.
    """
    if not isinstance(task, config_class):
        task = config_class.load(task)
    run = Path(runs_dir) / (run_name or task.name)
    last = run / "checkpoints" / "last.ckpt"
    if resume:
        if not last.exists():
            raise InputError("nothing to resume: no checkpoints/last.ckpt", source=run)
        task = config_class.load(run / "config.yaml")
    elif (run / "checkpoints").exists() and os.environ.get("LOCAL_RANK", "0") == "0":
        raise InputError(
            "run folder exists; use --resume to continue it or --run-name for a new one", source=run
        )
    run.mkdir(parents=True, exist_ok=True)
    task.save(run / "config.yaml")
    return task, run, last if resume else None


def init_weights_from(module: torch.nn.Module, init_from: str | os.PathLike[str]) -> str:
    """Copy into ``module`` the tensors of another run's best checkpoint that match it in name
    and shape (transfer learning); returns ``"copied/total"``."""
    source = torch.load(best_checkpoint(init_from), map_location="cpu", weights_only=False)
    own = module.state_dict()
    loaded = {k: v for k, v in source["state_dict"].items() if k in own and own[k].shape == v.shape}
    module.load_state_dict(loaded, strict=False)
    log.info("initialised %d/%d tensors from %s", len(loaded), len(own), init_from)
    return f"{len(loaded)}/{len(own)}"


def load_module(module_class: Any, run_dir: str | os.PathLike[str], device: Any = "cpu") -> Any:
    """The trained LightningModule of a run (best checkpoint, else last), in eval mode."""
    module = module_class.load_from_checkpoint(best_checkpoint(run_dir), map_location=device)
    module.eval()
    return module


def record_training(run: Path, info: dict[str, Any], trainer: Any, best: Any, **extra: Any) -> None:
    """Add the outcome of ``trainer.fit`` (best checkpoint and validation loss, epochs, steps,
    and ``extra``) to the run's ``run.json`` (rank 0 only)."""
    if trainer.global_rank != 0:
        return
    score = best.best_model_score
    info.update(
        {
            "best_checkpoint": str(best.best_model_path),
            "best_val_loss": None if score is None else float(score),
            "epochs_trained": trainer.current_epoch,
            "global_steps": trainer.global_step,
            **extra,
        }
    )
    write_run_info(run, info)


def train_task(
    task: TaskConfig | str | os.PathLike[str],
    *,
    runs_dir: str | os.PathLike[str] = "runs",
    run_name: str | None = None,
    init_from: str | os.PathLike[str] | None = None,
    resume: bool = False,
    devices: int = 1,
    progress: bool = True,
    max_epochs: int | None = None,
) -> Path:
    """Train the task's model; returns the run folder.

    Args:
        task: a TaskConfig or the path of its YAML.
        runs_dir, run_name: the run folder is ``runs_dir/run_name`` (default: the task name).
        init_from: a run folder whose weights initialise the model (transfer learning).
        resume: continue the run folder's last checkpoint (after a crash or a kill).
        devices: processes for distributed data parallel (DDP, gloo on CPU).
        max_epochs: override the config's number of epochs.
    """
    import lightning as L

    from fastreco.train.datasets import ChunkDataset, make_loader
    from fastreco.train.module import TaskModule

    task, run, last = open_run(
        task, TaskConfig, runs_dir=runs_dir, run_name=run_name, resume=resume
    )
    if last is not None:
        load_run(run)  # refuses a run folder written by an incompatible version

    store_dir = ensure_data(task, progress=progress)
    store = EventStore(store_dir)
    rep = REPRESENTATIONS.resolve(task.representation.name, field="representation.name")
    input_shape = rep.input_shape(task.representation)
    info = {
        "run_schema_version": RUN_SCHEMA_VERSION,
        "fastreco_version": __version__,
        "task": task.name,
        "data_dir": str(store_dir),
        "n_events": store.n_events,
        "input_shape": list(input_shape),
        "preprocessing": rep.preprocessing(task.representation),
        "init_from": None if init_from is None else str(init_from),
        "devices": devices,
    }
    write_run_info(run, info)

    t = task.training
    L.seed_everything(t.seed, workers=True)
    module = TaskModule(task.to_dict(), input_shape)
    if init_from is not None:
        info["init_tensors"] = init_weights_from(module, init_from)

    train = ChunkDataset(store_dir, task, "train", augment=t.augment, seed=t.seed)
    val = ChunkDataset(store_dir, task, "val")
    workers = min(t.num_workers, max((os.cpu_count() or 1) // max(devices, 1), 0))
    trainer, best = make_trainer(
        run,
        t,
        devices=devices,
        max_epochs=max_epochs,
        progress=progress,
        extra_callbacks=[_augmentation_epoch(train)],
        deterministic=True,
        checkpoint_every_n_steps=20,
        log_every_n_steps=10,
    )
    trainer.fit(
        module,
        make_loader(train, shuffle=True, num_workers=workers, persistent=not train.augment),
        make_loader(val, shuffle=False, num_workers=min(workers, 1)),
        ckpt_path=None if last is None else str(last),
    )
    record_training(run, info, trainer, best)
    return run
