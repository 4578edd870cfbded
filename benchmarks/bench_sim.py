"""Simulation speed (events/s on one core) and peak memory versus the number of events.

    python benchmarks/bench_sim.py [--energy 50] [--events 20000] [--memory-events 20000,200000]

Speed is measured in-process, one core, after a warm-up batch (numba compilation excluded).
Peak memory is the maximum resident set size of a fresh child process running a whole
``fastreco.sim.simulate`` job of N events (sharded, so it should not grow with N).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

from _common import report
from fastreco.sim.config import SimConfig
from fastreco.sim.ecal import simulate_batch

CHILD = """
import sys, resource
from fastreco.sim.config import SimConfig
from fastreco.sim.engine import simulate
cfg = SimConfig(particles=("gamma",), energy=sys.argv[1], n_events=int(sys.argv[2]))
simulate(cfg, sys.argv[3])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def speed(particles: tuple[str, ...], energy: str, n_events: int) -> float:
    """Events/s of the in-memory simulation, in shard-sized batches as the engine runs it."""
    config = SimConfig(particles=particles, energy=energy, n_events=n_events)
    simulate_batch(config, 200, 0)  # compile
    start = time.perf_counter()
    for shard in range(config.n_shards):
        simulate_batch(config, config.shard_events(shard), shard + 1)
    return n_events / (time.perf_counter() - start)


def peak_memory_mb(energy: str, n_events: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        result = subprocess.run(
            [sys.executable, "-c", CHILD, energy, str(n_events), out],
            check=True,
            capture_output=True,
            text=True,
        )
    return int(result.stdout.split()[-1]) / 1024.0  # ru_maxrss is in kB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--energy", default="50")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--memory-events", default="20000,200000")
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []
    for particles in (("gamma",), ("pi0",), ("pi+",)):
        rows.append(
            {
                "what": f"simulate {particles[0]} {args.energy} GeV, 1 core",
                "events": args.events,
                "events/s": speed(particles, args.energy, args.events),
            }
        )
    for n in (int(x) for x in args.memory_events.split(",")):
        rows.append(
            {
                "what": f"peak RSS of a {n:,}-event gamma run",
                "events": n,
                "MB": peak_memory_mb(args.energy, n),
            }
        )
    report("ECAL simulation", rows, args.json)


if __name__ == "__main__":
    main()
