"""HGCAL clustering speed: CLUE against the graph networks on the same events, PU 0 to 200.

    python benchmarks/bench_gnn_clustering.py [--events 3] [--pileup 0 50 140 200]
        [--threads 1] [--run runs/hgcal_clustering] [--lc-run runs/hgcal_clustering_lc]
        [--algorithms CLUE GravNet EdgeConv LayerGravNet] [--json out.json]

Per pileup, ``--events`` events of three close-by particles (gamma, e-, pi+ at 10-100 GeV) are
simulated over the WHOLE endcap (no region of interest) and clustered by

* CLUE: 2D CLUE per layer + the 3D linking (:func:`fastreco.reco.clue.cluster_event`, numba);
* GravNet and EdgeConv with object condensation (PyTorch, ``torch.no_grad``, CPU threads
  ``--threads``; the kNN graphs with scipy's cKDTree / chunked cdist), including the
  condensation step. With ``--run`` the trained GravNet of that run folder is used (its size and
  the condensation settings of its ``config.yaml``); otherwise the default model sizes, untrained
  (speed does not depend on the weights);
* LayerGravNet: CLUE's 2D stage, then GravNet blocks on the layer clusters' fixed graph
  (``layer_gravnet``, :mod:`fastreco.data.layer_clusters`) and the condensation step; its time
  includes the 2D clustering. ``--lc-run`` names a trained run of it;
* LayerEdgeConv: EdgeConv blocks on the same fixed graph (``layer_edgeconv``), untrained.

The figure (``--plot``, by default the ``--json`` path with ``.png``) shows time per event
against hits per event with each fitted power law.

Columns: hits per event, ms per event, GNN / CLUE time ratio, peak extra resident memory of a
call [MB] (``ru_maxrss`` growth, measured in a fresh subprocess per algorithm and pileup so one
call's peak cannot hide another's). The last rows fit ``time ~ hits^p`` per algorithm (p = 1:
linear). The model's ONNX export is not measured: its kNN graph is built outside the tensor
program (see README).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _common import report


def _events(pileup: float, n: int, seed: int) -> list:
    from fastreco.data.pointcloud import point_cloud_events
    from fastreco.sim.hgcal import HgcalSimConfig, simulate_hgcal_batch

    config = HgcalSimConfig(
        particles=("gamma", "e-", "pi+"),
        n_particles=3,
        energy="10:100",
        pileup=pileup,
        min_separation=3.0,
        max_separation=20.0,
    )
    return point_cloud_events(simulate_hgcal_batch(config, n, seed))


#: network benchmarked under each name: (registered model, its input, option naming its run)
NETWORKS = {
    "GravNet": ("gravnet", "hits", "run"),
    "EdgeConv": ("edgeconv", "hits", None),
    "LayerGravNet": ("layer_gravnet", "layer_clusters", "lc_run"),
    "LayerEdgeConv": ("layer_edgeconv", "layer_clusters", None),
}


def _algorithm(name: str, runs: dict[str, str | None]):
    import torch

    from fastreco.data.clustering_inputs import INPUTS
    from fastreco.evaluate.clustering import clue_labels, network_labels
    from fastreco.models import build_model

    if name == "CLUE":
        return clue_labels
    model_name, network_input, run_option = NETWORKS[name]
    run = runs.get(run_option) if run_option else None
    settings = {"t_beta": 0.3, "t_d": 0.5}  # untrained: CondensationConfig's defaults
    if run:
        from pathlib import Path

        from fastreco.train.clustering import ClusteringTaskConfig, load_clustering_model

        module = load_clustering_model(run)
        c = ClusteringTaskConfig.load(Path(run) / "config.yaml").condensation
        settings = {"t_beta": c.t_beta, "t_d": c.t_d, "assign_radius": c.assign_radius}
    else:
        n_features = INPUTS.resolve(network_input).n_features
        module = build_model(model_name, (n_features,), 4).eval()
    torch.manual_seed(0)
    return lambda ev: network_labels(module, ev, network_input=network_input, **settings)


def measure(name: str, pileup: float, n: int, threads: int, runs: dict[str, str | None]) -> dict:
    """Time and peak memory of one algorithm at one pileup (run in a subprocess)."""
    import torch

    torch.set_num_threads(threads)
    events = _events(pileup, n + 1, seed=int(pileup) + 7)
    algo = _algorithm(name, runs)
    algo(events[0])  # warm-up: numba compilation, allocator
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for ev in events[1:]:
        start = time.perf_counter()
        algo(ev)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "hits": float(np.mean([len(e) for e in events[1:]])),
        "ms": 1e3 * float(np.mean(times)),
        "peak_mb": (peak - base) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=3)
    parser.add_argument("--pileup", type=float, nargs="+", default=[0, 50, 140, 200])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--run", default=None, help="a trained GravNet run (hits)")
    parser.add_argument("--lc-run", default=None, help="a trained layer_gravnet run")
    parser.add_argument(
        "--algorithms", nargs="+", default=["CLUE", *NETWORKS], choices=["CLUE", *NETWORKS]
    )
    parser.add_argument("--json")
    parser.add_argument(
        "--plot", help="PNG of time per event against hits (default: beside --json)"
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, pu = args.child
        runs = {"run": args.run, "lc_run": args.lc_run}
        print(json.dumps(measure(name, float(pu), args.events, args.threads, runs)))
        return
    rows, fits = [], {}
    for pu in args.pileup:
        clue_ms = None
        for name in args.algorithms:
            cmd = [sys.executable, __file__, "--child", name, str(pu)]
            cmd += ["--events", str(args.events), "--threads", str(args.threads)]
            for option in ("run", "lc_run"):
                if getattr(args, option):
                    cmd += [f"--{option.replace('_', '-')}", getattr(args, option)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            m = json.loads(out.strip().splitlines()[-1])
            clue_ms = m["ms"] if name == "CLUE" else clue_ms
            fits.setdefault(name, []).append((m["hits"], m["ms"]))
            rows.append(
                {
                    "pileup": pu,
                    "algorithm": name,
                    "hits/event": m["hits"],
                    "ms/event": m["ms"],
                    "x CLUE": m["ms"] / clue_ms if clue_ms else None,
                    "peak MB": m["peak_mb"],
                }
            )
    exponents = {}
    for name, points in fits.items():
        hits, ms = np.array(points).T
        if len(hits) >= 2:
            exponents[name] = np.polyfit(np.log(hits), np.log(ms), 1)
            p = float(exponents[name][0])
            rows.append({"pileup": "fit", "algorithm": name, "scaling exponent p": p})
    report(f"HGCAL clustering, CLUE vs GNN ({args.threads} thread(s))", rows, args.json)
    plot = args.plot or (str(Path(args.json).with_suffix(".png")) if args.json else None)
    if plot:
        _plot(fits, exponents, args.threads, plot)


def _plot(fits: dict, exponents: dict, threads: int, path: str) -> None:
    """Time per event against hits per event, log-log, with each fitted power law."""
    from fastreco.evaluate.plots import add_label, new_figure, plot_style

    with plot_style():
        fig, axes = new_figure()
        ax = axes[0, 0]
        for name, points in fits.items():
            hits, ms = np.array(points).T
            line = ax.plot(hits, ms, "o", label=name)[0]
            if name in exponents:
                slope, offset = exponents[name]
                grid = np.geomspace(hits.min(), hits.max(), 50)
                ax.plot(
                    grid,
                    np.exp(offset) * grid**slope,
                    "-",
                    color=line.get_color(),
                    label=f"  fit: p = {slope:.2f}",
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("hits per event (whole endcap, PU 0-200)")
        ax.set_ylabel(f"ms per event ({threads} thread{'s' if threads > 1 else ''})")
        ax.legend(fontsize="small")
        add_label(ax, "HGCAL clustering")
    fig.savefig(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
