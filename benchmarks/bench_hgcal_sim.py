"""HGCAL simulation speed: seconds per event and hits per event versus pileup, on one core.

    python benchmarks/bench_hgcal_sim.py [--events 20] [--energy 50] [--particle gamma]

Each event is one gun particle (default a 50 GeV photon, 1.7 < eta < 2.7) plus Poisson(mu)
minimum-bias interactions in one endcap. Timed in-process after a warm-up event (numba
compilation excluded), in shard-sized batches as the engine runs them; the target is <= 1 s per
PU 200 event.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from _common import report
from fastreco.geometry.hgcal import HgcalEndcap
from fastreco.sim.hgcal import PARENT_PILEUP, HgcalSimConfig, simulate_hgcal_batch


def measure(pileup: int, particle: str, energy: str, n_events: int) -> dict[str, float | int | str]:
    geometry = HgcalEndcap()
    config = HgcalSimConfig(particles=(particle,), energy=energy, pileup=pileup, n_events=n_events)
    simulate_hgcal_batch(config, 1, 0, geometry)  # compile, build tables
    hits = particles = 0
    start = time.perf_counter()
    for shard in range(config.n_shards):
        n = config.shard_events(shard)
        batch = simulate_hgcal_batch(config, n, np.random.SeedSequence([1, shard]), geometry)
        hits += batch.n_hits
        particles += int(np.sum(batch.truth["parent"] == PARENT_PILEUP))
    elapsed = time.perf_counter() - start
    return {
        "what": f"{particle} {energy} GeV + PU {pileup}",
        "pileup": pileup,
        "events": n_events,
        "ms/event": 1000.0 * elapsed / n_events,
        "hits/event": hits / n_events,
        "PU particles/event": particles / n_events,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--energy", default="50")
    parser.add_argument("--particle", default="gamma")
    parser.add_argument("--pileup", default="0,50,140,200")
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []
    for pileup in (int(x) for x in args.pileup.split(",")):
        # without pileup events are fast: time more of them
        n = args.events * (50 if pileup == 0 else 1)
        rows.append(measure(pileup, args.particle, args.energy, n))
    report("HGCAL simulation (one endcap, one core)", rows, args.json)


if __name__ == "__main__":
    main()
