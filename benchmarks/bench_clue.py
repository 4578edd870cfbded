"""CLUE speed (one core): time per hit of 2D CLUE and of the full 2D + 3D clustering.

    python benchmarks/bench_clue.py [--hits 10000 100000 1000000] [--layers 50] [--json out.json]

Hits are uniformly random over ``--layers`` layers, on a square per layer sized so that each
layer holds ``--density`` hits per cm^2 (default 1: about one hit per HGCAL-sized silicon cell,
~5 other hits within dc = 1.3 cm, a fully occupied layer), with energies drawn from an
exponential of mean 0.01 GeV; ``z`` = 320 cm + 1.2 cm per layer for the 3D step. Parameters are
the :class:`~fastreco.reco.clue.ClueParams` defaults. Times are the best of ``--repeat`` calls
of the public functions (input checks included), after a warm-up call that compiles the numba
kernels. Reference: 705 ms for 10^6 hits, the figure quoted for the paper's single-threaded
C++ CLUE (its hardware and data differ from ours).

Columns: ``2D`` times :func:`~fastreco.reco.clue.clue2d`; ``3D`` times
:func:`~fastreco.reco.clue.clue3d` (2D CLUE, layer clusters and the 3D linking); ``scaling`` is
the 2D time per hit relative to the first row (1.00 = linear); ``-1 %`` the share of hits that
are 2D outliers.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse
import time

import numpy as np

from _common import report
from fastreco.reco.clue import ClueParams, clue2d, clue3d


def sample(n: int, layers: int, density: float, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    side = float(np.sqrt(n / layers / density))
    layer = rng.integers(0, layers, n)
    return {
        "x": rng.uniform(-side / 2, side / 2, n),
        "y": rng.uniform(-side / 2, side / 2, n),
        "z": 320.0 + 1.2 * layer,
        "layer": layer,
        "energy": rng.exponential(0.01, n),
    }


def best_time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hits", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--layers", type=int, default=50)
    parser.add_argument("--density", type=float, default=1.0, help="hits per cm^2 per layer")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()

    p = ClueParams()
    warm = sample(2_000, args.layers, args.density)
    clue3d(warm["x"], warm["y"], warm["z"], warm["layer"], warm["energy"], p)  # compile

    rows = []
    first = None
    for n in args.hits:
        s = sample(n, args.layers, args.density)
        r2 = clue2d(s["x"], s["y"], s["layer"], s["energy"], p.dc, p.rhoc, p.outlier_delta_factor)
        t2 = best_time(
            lambda s=s: clue2d(s["x"], s["y"], s["layer"], s["energy"], p.dc, p.rhoc), args.repeat
        )
        r3 = clue3d(s["x"], s["y"], s["z"], s["layer"], s["energy"], p)
        t3 = best_time(
            lambda s=s: clue3d(s["x"], s["y"], s["z"], s["layer"], s["energy"], p), args.repeat
        )
        per_hit = 1e6 * t2 / n
        first = per_hit if first is None else first
        rows.append(
            {
                "hits": n,
                "2D ms": 1e3 * t2,
                "2D ns/hit": 1e3 * per_hit,
                "scaling": f"x{per_hit / first:.2f}",
                "2D clus": r2.n_clusters,
                "-1 %": 100.0 * float((r2.labels < 0).mean()),
                "3D ns/hit": 1e9 * t3 / n,
                "3D clus": r3.n_clusters,
            }
        )
    report(
        f"CLUE, one core, {args.layers} layers, {args.density:g} hits/cm^2/layer "
        "(paper's C++: 705 ns/hit at 10^6)",
        rows,
        args.json,
    )


if __name__ == "__main__":
    main()
