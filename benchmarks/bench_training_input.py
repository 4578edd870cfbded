"""Is data loading the bottleneck of ECAL training? Loader throughput against the training step.

    python benchmarks/bench_training_input.py [--events 20000] [--model resnet-cnn]
        [--workers 0 1 2] [--batches 30] [--json out.json]

On one simulated gamma + pi0 store (1-100 GeV), with the training split, batch size 256 and
25 x 25 windows of the ``ecal_gamma_pi0`` task:

* the DataLoader of the trainer (``ChunkDataset``: HDF5 read, windows, targets, augmentation)
  with 0, 1 and 2 worker processes, alone: events/s delivered;
* one training step of the model (forward, loss, backward, AdamW) on batches already in memory,
  with the machine's threads: events/s consumed.

``loader / step`` above 1 means the loader outruns the model; the trainer overlaps the two (the
loader works in its own processes), so with enough headroom loading never starves training.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from _common import report
from fastreco.config import TaskConfig
from fastreco.sim.config import SimConfig
from fastreco.sim.engine import simulate
from fastreco.train.datasets import ChunkDataset, make_loader
from fastreco.train.module import TaskModule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--model", default="resnet-cnn")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        config = SimConfig(particles=("gamma", "pi0"), energy="log:1:100", n_events=args.events)
        simulate(config, store, workers=1)
        task = TaskConfig.from_dict(
            {
                "name": "bench",
                "data": {"dir": str(store), "events": args.events, "energy": "log:1:100"},
                "model": {"name": args.model},
                "training": {"batch_size": 256},
            }
        )
        dataset = ChunkDataset(store, task, "train", augment=True)
        rows = []
        batches = []
        for workers in args.workers:
            loader = make_loader(dataset, shuffle=True, num_workers=workers, persistent=False)
            it = iter(loader)
            next(it)  # worker start-up excluded
            start, n = time.perf_counter(), 0
            for _, batch in zip(range(args.batches), it, strict=False):
                n += len(batch["y"])
                if len(batches) < 10:
                    batches.append(batch)
            rate = n / (time.perf_counter() - start)
            rows.append({"what": f"loader, {workers} worker(s)", "events/s": rate})
        module = TaskModule(task.to_dict(), (1, 25, 25))
        optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
        start, n = time.perf_counter(), 0
        for batch in batches * 2:
            loss = module.loss(module(batch["x"]), batch["y"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            n += len(batch["y"])
        step = n / (time.perf_counter() - start)
        rows.append(
            {
                "what": f"training step, {args.model} ({torch.get_num_threads()} threads)",
                "events/s": step,
            }
        )
        for row in rows[:-1]:
            row["loader / step"] = row["events/s"] / step
    report("ECAL training input pipeline", rows, args.json)


if __name__ == "__main__":
    main()
