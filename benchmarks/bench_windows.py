"""Crystal-window reading speed (events/s, one core), including the HDF5 read.

    python benchmarks/bench_windows.py [--events 100000] [--size 25] [--json out.json]

Same sample as ``bench_reco.py`` (simulated gamma + pi0, or synthetic blobs). Rows: the store
read alone, the windows of batches already in memory, and :func:`iter_windows` end to end.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse
import tempfile
from pathlib import Path

from _common import report
from bench_reco import make_sample, rate
from fastreco.data.store import EventStore
from fastreco.data.windows import crystal_windows, iter_windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=20_000)
    parser.add_argument("--json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path, how = make_sample(args.events, Path(tmp) / "store")
        store = EventStore(path)
        n = store.n_events
        batch = store.read(0, min(args.batch_size, n))
        crystal_windows(batch.slice(0, min(100, batch.n_events)), store.detector, args.size)

        def read_only() -> None:
            for _ in store.iter_batches(args.batch_size):
                pass

        def windows_all() -> None:
            for _ in iter_windows(store, args.batch_size, args.size):
                pass

        size = f"{args.size}x{args.size}"
        rows = [
            {"what": f"HDF5 read only ({how})", "events": n, "events/s": rate(n, read_only)},
            {
                "what": f"crystal_windows {size}, in memory",
                "events": batch.n_events,
                "events/s": rate(
                    batch.n_events, lambda: crystal_windows(batch, store.detector, args.size)
                ),
            },
            {
                "what": f"iter_windows {size}: read + windows",
                "events": n,
                "events/s": rate(n, windows_all),
            },
        ]
    report(f"Crystal windows {size}, 1 core", rows, args.json)


if __name__ == "__main__":
    main()
