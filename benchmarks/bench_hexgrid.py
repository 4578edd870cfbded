"""Hexagonal cells -> regular 3D grid: speed (events/s, one core) and size per event.

    python benchmarks/bench_hexgrid.py [--events 20000] [--pitch 1.0] [--window 32]
        [--cache-dir DIR] [--pileup 0] [--json out.json]

Single particles (e-, pi+ log-flat 10-500 GeV, 1.7 < eta < 2.7; optionally with pileup), the
whole endcap (47 layers). Rows: the one-off overlap-weight computation for the whole endcap
(or its load from the .npz cache), the per-event windows in memory (sparse, then also made
dense), the global sparse images (one scipy product per batch) and the conversion of a store
to a grid dataset on disk end to end (HDF5 read + windows + write). The bar is >= 10,000
events/s for the windows. Timings after a warm-up (numba compilation excluded); "events/s per CPU s" divides by this
process's CPU time, the rate of one free core when the machine is shared with other jobs.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import report
from fastreco.data.grid_dataset import convert_to_grid
from fastreco.data.hexgrid import GridSpec, hexgrid_for
from fastreco.geometry.hgcal import HgcalEndcap
from fastreco.sim.hgcal import HgcalSimConfig, simulate_hgcal_batch
from fastreco.sim.hgcal_engine import simulate_hgcal


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def cpu_timed(fn) -> tuple[float, float, object]:
    """Wall and CPU seconds of this process (the CPU rate is what one free core would give
    when the machine is shared)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - start, time.process_time() - cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--pitch", type=float, default=1.0)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--pileup", type=float, default=0.0)
    parser.add_argument("--cache-dir")
    parser.add_argument("--json")
    args = parser.parse_args()
    geometry = HgcalEndcap()
    grid = hexgrid_for(geometry, GridSpec(pitch=args.pitch, window=args.window), args.cache_dir)
    cached = bool(args.cache_dir) and any(Path(args.cache_dir).glob("hexgrid-*.npz"))
    t_weights, w = timed(lambda: grid.weights)
    t_tables, _ = timed(lambda: (grid._cell_tables, grid._kernel_weights))
    rows: list[dict] = [
        {
            "what": "overlap weights + cell tables, whole endcap (once)"
            + (" [weights from the .npz cache]" if cached else ""),
            "events": "",
            "events/s": "",
            "seconds": round(t_weights + t_tables, 1),
            "note": f"{w.shape[0]:,} cells x {w.shape[1]:,} voxels, {w.nnz:,} weights",
        }
    ]
    L, H = len(grid.layers), args.window
    for particle in ("e-", "pi+"):
        cfg = HgcalSimConfig(
            particles=(particle,), n_particles=1, energy="log:10:500", pileup=args.pileup
        )
        batch = simulate_hgcal_batch(cfg, args.events, 7, geometry)
        grid.windows(batch.slice(0, 10))  # compile
        n = batch.n_events
        t_sparse, c_sparse, win = cpu_timed(lambda b=batch: grid.windows(b))
        threads = os.cpu_count() or 1
        t_threads, _ = timed(lambda b=batch, t=threads: grid.windows(b, threads=t))
        out = np.zeros((n, L, H, H), np.float32)
        t_dense, _ = timed(lambda win=win, out=out: win.dense(out))
        t_global, _ = timed(lambda b=batch: grid.to_grid(b))
        nnz = len(win.value) / n
        hits = batch.n_hits / n
        tag = f"{particle}, PU {args.pileup:g}"
        rows += [
            {
                "what": f"windows {L}x{H}x{H}, sparse ({tag})",
                "events": n,
                "events/s": round(n / t_sparse),
                "events/s per CPU s": round(n / c_sparse),
                "seconds": round(t_sparse, 2),
                "note": f"{hits:.0f} hits, {nnz:.0f} voxels, {nnz * 8 / 1e3:.1f} kB per event",
            },
            {
                "what": f"windows, sparse, {threads} threads ({tag})",
                "events": n,
                "events/s": round(n / t_threads),
                "seconds": round(t_threads, 2),
            },
            {
                "what": f"windows {L}x{H}x{H}, sparse + dense ({tag})",
                "events": n,
                "events/s": round(n / (t_sparse + t_dense)),
                "seconds": round(t_sparse + t_dense, 2),
                "note": f"{L * H * H * 4 / 1e3:.0f} kB per event dense",
            },
            {
                "what": f"global images, scipy product ({tag})",
                "events": n,
                "events/s": round(n / t_global),
                "seconds": round(t_global, 2),
                "note": f"{grid.n_side}x{grid.n_side} pixels x {L} layers",
            },
        ]
        del out
    with tempfile.TemporaryDirectory() as tmp:
        n_store = min(args.events, 5000)
        cfg = HgcalSimConfig(
            particles=("e-", "pi+"),
            n_particles=1,
            energy="log:10:500",
            pileup=args.pileup,
            n_events=n_store,
        )
        store = simulate_hgcal(cfg, Path(tmp) / "store")
        t_conv, path = timed(
            lambda: convert_to_grid(
                store, Path(tmp) / "grid.h5", grid.spec, cache_dir=args.cache_dir
            )
        )
        size = Path(path).stat().st_size
        rows.append(
            {
                "what": "convert store -> grid dataset (read + windows + write)",
                "events": n_store,
                "events/s": round(n_store / t_conv),
                "seconds": round(t_conv, 2),
                "note": f"{size / n_store / 1e3:.1f} kB per event on disk",
            }
        )
    report(f"HGCAL hexagonal cells -> grid (pitch {args.pitch} cm), 1 core", rows, args.json)


if __name__ == "__main__":
    main()
