"""PyTorch datasets that read a task's events from the event store, in worker processes.

Reading event by event from HDF5 would be slow, so an item is a *chunk* of consecutive events
of one shard: the worker reads it with one range read, builds the representation vectorized,
keeps the events of the requested split and returns them as one mini-batch. Chunks are
shuffled between epochs (and split across processes under DDP by Lightning's sampler).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastreco.config import TaskConfig
from fastreco.data.representations import build_inputs
from fastreco.data.splits import split_mask
from fastreco.data.store import EventStore, Shard
from fastreco.errors import InputError
from fastreco.sim.config import particle_pdg


def class_pdgs(task: TaskConfig) -> list[tuple[int, ...]]:
    """PDG ids of each class; a charged name stands for both charges (``pi+`` -> 211, -211)."""
    out = []
    for name in task.classes:
        pdg = particle_pdg(name, field="classes")
        out.append((pdg, -pdg) if pdg in (11, -11, 211, -211, 13, -13) else (pdg,))
    return out


def targets_for(
    task: TaskConfig, primaries: dict[str, np.ndarray], reference: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(targets, keep) for the gun particles of a batch.

    Classification: the class index of each event (events of other particles are dropped).
    Regression: E_true / E_reference, the correction the network predicts for the task's
    reference energy (``task.reference``, one of :data:`fastreco.config.REFERENCE_ENERGIES`).
    """
    pdg = primaries["pdg"]
    label = np.full(len(pdg), -1, dtype=np.int64)
    for index, pdgs in enumerate(class_pdgs(task)):
        label[np.isin(pdg, pdgs)] = index
    keep = label >= 0
    if task.kind == "classification":
        return label, keep
    keep &= reference > 0.1  # a window with no energy cannot be calibrated
    ratio = primaries["energy"] / np.maximum(reference, 1e-6)
    return ratio.astype(np.float32), keep


class ChunkDataset(torch.utils.data.Dataset):
    """Mini-batches of the events of one split of a task's store.

    Args:
        store_path: the task's event store.
        task: the task (representation, classes, split fractions).
        split: ``"train"``, ``"val"`` or ``"test"``.
        augment: apply the barrel's symmetries (eta -> -eta, phi -> -phi flips of the window).
        seed: seed of the augmentation.
    """

    def __init__(
        self,
        store_path: str | Path,
        task: TaskConfig,
        split: str,
        *,
        augment: bool = False,
        seed: int = 0,
    ) -> None:
        store = EventStore(store_path)
        self.paths = [s.path for s in store.shards]
        self.geometry = store.detector
        self.task = task
        self.split = split
        self.augment = augment and task.representation.name == "window"
        self.seed = seed
        self.epoch = 0
        fraction = task.data.split[("train", "val", "test").index(split)]
        chunk = max(16, math.ceil(task.training.batch_size / max(fraction, 1e-3)))
        self.chunks: list[tuple[int, int, int, int]] = []  # shard, start, stop, global offset
        first = 0
        for i, shard in enumerate(store.shards):
            for start in range(0, shard.n_events, chunk):
                self.chunks.append((i, start, min(start + chunk, shard.n_events), first))
            first += shard.n_events
        self._shards: dict[int, Shard] = {}

    def __len__(self) -> int:
        return len(self.chunks)

    def set_epoch(self, epoch: int) -> None:
        """Draw new augmentation flips for ``epoch`` (seeded by seed, epoch and chunk, so a
        resumed run draws the same ones); worker processes see it when the loader re-creates
        them at the start of the epoch (``make_loader(..., persistent=False)``)."""
        self.epoch = epoch

    def load(self, index: int) -> dict[str, np.ndarray]:
        """The chunk as numpy arrays: x, y, event (global index), energy, eta, pdg, window_sum
        and reference (the task's reference energy, of regression targets) [GeV]."""
        shard_index, start, stop, first = self.chunks[index]
        if shard_index not in self._shards:
            self._shards[shard_index] = Shard(self.paths[shard_index])
        batch = self._shards[shard_index].read(start, stop)
        events = first + np.arange(start, stop)
        x, aux = build_inputs(batch, self.geometry, self.task.representation)
        prim = batch.primaries()
        y, keep = targets_for(self.task, prim, aux[self.task.reference])
        keep &= split_mask(events, self.split, self.task.data.split)
        out = {
            "x": x[keep],
            "y": y[keep],
            "event": events[keep],
            "energy": prim["energy"][keep].astype(np.float32),
            "eta": prim["eta"][keep].astype(np.float32),
            "pdg": prim["pdg"][keep],
            "window_sum": aux["window_sum"][keep].astype(np.float32),
            "reference": aux[self.task.reference][keep].astype(np.float32),
        }
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            xa = out["x"]
            flip_eta = rng.random(len(xa)) < 0.5
            flip_phi = rng.random(len(xa)) < 0.5
            xa[flip_eta] = xa[flip_eta][:, :, ::-1, :]
            xa[flip_phi] = xa[flip_phi][:, :, :, ::-1]
        return out

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.load(index).items()}


def make_loader(
    dataset: ChunkDataset, *, shuffle: bool, num_workers: int, persistent: bool = True
) -> Any:
    """A DataLoader yielding the dataset's chunks as mini-batches (``persistent``: keep the
    worker processes between epochs; augmented datasets need fresh ones, see ``set_epoch``)."""
    if len(dataset) == 0:
        raise InputError(
            "no events in this split",
            source=str(dataset.paths[0].parent),
            field="split",
            value=dataset.split,
        )
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        shuffle=shuffle,
        num_workers=num_workers,
        persistent_workers=persistent and num_workers > 0,
    )
