"""LArTPC simulation speed: seconds and stored pixels per event versus plane size, on one core.

    python benchmarks/bench_lartpc_sim.py [--events 10] [--kind neutrino] [--json out.json]

Each event is simulated in-process after a warm-up event (numba compilation excluded): transport,
recombination, diffusion, shaping, noise, digitization and zero suppression of the whole plane.
The target is well under 1 s for a ProtoDUNE-like 480 x 6000 event.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from _common import report
from fastreco.sim.lartpc import LArTpcSimConfig, simulate_event

SIZES = ((128, 1024), (240, 3000), (480, 6000))


def measure(n_wires: int, n_ticks: int, kind: str, n_events: int) -> dict[str, float | int | str]:
    config = LArTpcSimConfig(kind=kind, n_wires=n_wires, n_ticks=n_ticks)
    geometry = config.geometry()
    rng = np.random.default_rng(1)
    simulate_event(config, rng, geometry)  # compile, warm caches
    pixels = noise = 0
    start = time.perf_counter()
    for _ in range(n_events):
        d = simulate_event(config, rng, geometry).digitized
        pixels += len(d.cell)
        noise += int(np.sum(d.truth_row < 0))
    elapsed = time.perf_counter() - start
    return {
        "plane": f"{n_wires} x {n_ticks}",
        "kind": kind,
        "events": n_events,
        "ms/event": 1000.0 * elapsed / n_events,
        "pixels/event": pixels / n_events,
        "noise pixels/event": noise / n_events,
        "stored fraction [%]": 100.0 * pixels / n_events / (n_wires * n_ticks),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10)
    parser.add_argument("--kind", default="neutrino")
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = [measure(w, t, args.kind, args.events) for w, t in SIZES]
    report("LArTPC simulation (one core)", rows, args.json)


if __name__ == "__main__":
    main()
