"""Clustering performance per truth particle: efficiency, merges, splits, fakes, energy response.

Energies are shared through each hit's dominant truth particle: hit ``h`` gives
``E_h * f_h`` to its dominant particle (``truth_particle``, fraction ``truth_fraction``) and the
rest to "other" (pileup, noise, other particles). For a truth particle ``p`` with hit energy
``E_p`` and a reco cluster ``c`` with energy ``E_c``, ``shared(p, c)`` is the part of ``E_c`` that
``p`` gave. Then, for the gun particles above ``min_energy`` (their hit energy, GeV):

* **efficiency**: a cluster holds at least half of ``E_p`` and ``p`` makes at least half of that
  cluster (``shared >= 0.5 E_p`` and ``shared >= 0.5 E_c``);
* **merged**: the cluster holding most of ``p`` (at least half of ``E_p``) also holds at least
  half of another gun particle's energy;
* **split**: no cluster holds half of ``E_p``, while at least two clusters each hold at least
  ``split_fraction`` (20 %) of it;
* **fake clusters**: clusters of at least ``min_energy`` in which no gun particle makes half
  of the energy (pileup, noise, or a mix), counted per event;
* **response**: ``E_c / E_p^{true}`` of efficiently matched clusters (cluster hit-energy sum over
  the particle's true energy), and the same with the network's regressed energy when given.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fastreco.data.pointcloud import PointCloudEvent


@dataclasses.dataclass(frozen=True)
class MatchingConfig:
    min_energy: float = 2.0  # GeV of hit energy for a particle (and a cluster) to count
    efficiency_fraction: float = 0.5
    split_fraction: float = 0.2


def match_event(
    event: PointCloudEvent,
    labels: np.ndarray,
    config: MatchingConfig = MatchingConfig(),
    regressed_energy: np.ndarray | None = None,
) -> tuple[pd.DataFrame, int]:
    """Match one event's reco clusters to its gun particles.

    Args:
        event: the event's hits and truth.
        labels: ``(n_hits,)`` cluster index per hit, -1 for none.
        regressed_energy: ``(n_clusters,)`` energy [GeV] a network predicts for each cluster.

    Returns:
        One row per gun particle (``row, true_energy, hit_energy, efficient, merged, split,
        cluster, cluster_energy, regressed_energy``) and the number of fake clusters.
    """
    labels = np.asarray(labels, np.int64)
    e = event.energy.astype(np.float64)
    n_clusters = int(labels.max()) + 1 if labels.size else 0
    rows = np.unique(event.truth_row[event.object_id > 0])  # gun particles with hits
    share = e * event.truth_fraction
    dominant = event.truth_row
    cluster_e = np.bincount(labels[labels >= 0], weights=e[labels >= 0], minlength=n_clusters)
    records = []
    held = np.zeros((len(rows), n_clusters))  # shared(p, c)
    e_p = np.zeros(len(rows))
    for i, row in enumerate(rows):
        mine = dominant == row
        e_p[i] = share[mine].sum()
        inside = mine & (labels >= 0)
        held[i] = np.bincount(labels[inside], weights=share[inside], minlength=n_clusters)
    frac_p = held / np.maximum(e_p[:, None], 1e-12)  # share of p in each cluster
    frac_c = held / np.maximum(cluster_e[None, :], 1e-12)  # share of each cluster from p
    f = config.efficiency_fraction
    for i, row in enumerate(rows):
        best = int(np.argmax(held[i])) if n_clusters else -1
        efficient = bool(n_clusters and np.any((frac_p[i] >= f) & (frac_c[i] >= f)))
        holds_half = n_clusters and frac_p[i, best] >= f
        merged = bool(
            holds_half and np.any(np.delete(frac_p[:, best], i) >= f) if len(rows) > 1 else False
        )
        split = bool(
            n_clusters
            and not holds_half
            and np.count_nonzero(frac_p[i] >= config.split_fraction) >= 2
        )
        records.append(
            {
                "row": int(row),
                "true_energy": float(event.object_energy[row + 1]),
                "hit_energy": float(e_p[i]),
                "efficient": efficient,
                "merged": merged,
                "split": split,
                "cluster": best,
                "cluster_energy": float(cluster_e[best]) if best >= 0 else 0.0,
                "regressed_energy": float(regressed_energy[best])
                if regressed_energy is not None and best >= 0
                else np.nan,
            }
        )
    df = pd.DataFrame.from_records(
        records,
        columns=[
            "row",
            "true_energy",
            "hit_energy",
            "efficient",
            "merged",
            "split",
            "cluster",
            "cluster_energy",
            "regressed_energy",
        ],
    )
    gun_share = frac_c.max(axis=0) if len(rows) else np.zeros(n_clusters)
    fakes = int(np.count_nonzero((cluster_e >= config.min_energy) & (gun_share < f)))
    return df[df["hit_energy"] >= config.min_energy].reset_index(drop=True), fakes


def summarize(particles: pd.DataFrame, fakes: list[int]) -> dict[str, Any]:
    """Rates and response of a set of matched particles (from :func:`match_event`)."""
    n = len(particles)
    eff = particles[particles["efficient"]] if n else particles
    response = eff["cluster_energy"] / eff["true_energy"] if len(eff) else pd.Series(dtype=float)

    def stats(values: pd.Series) -> tuple[float | None, float | None]:
        values = values.dropna()
        if len(values) < 2:
            return None, None
        return float(values.median()), float(
            (values.quantile(0.84) - values.quantile(0.16)) / 2 / values.median()
        )

    med, res = stats(response)
    out = {
        "n_particles": n,
        "efficiency": float(particles["efficient"].mean()) if n else None,
        "merge_rate": float(particles["merged"].mean()) if n else None,
        "split_rate": float(particles["split"].mean()) if n else None,
        "fake_clusters_per_event": float(np.mean(fakes)) if fakes else None,
        "response_median": med,
        "resolution_68": res,
    }
    if len(eff) and eff["regressed_energy"].notna().any():
        r_med, r_res = stats(eff["regressed_energy"] / eff["true_energy"])
        out["regressed_response_median"] = r_med
        out["regressed_resolution_68"] = r_res
    return out


# --------------------------------------------------------------------------------------------
# CLUE and the graph network on the same events
# --------------------------------------------------------------------------------------------
def clue_labels(event: PointCloudEvent, params: Any = None) -> np.ndarray:
    """CLUE (2D + 3D linking, :mod:`fastreco.reco.clue`) on one event's calibrated hits."""
    from fastreco.reco.clue import cluster_event

    if len(event) == 0:
        return np.zeros(0, np.int64)
    p = event.position
    return cluster_event(p[:, 0], p[:, 1], p[:, 2], event.layer, event.energy, params)


def network_labels(
    module: Any,
    event: PointCloudEvent,
    *,
    t_beta: float,
    t_d: float,
    assign_radius: float = 0.0,
    network_input: str = "hits",
    device: Any = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """A condensation network's clusters on one event: labels per hit and the regressed energy
    [GeV] of each cluster (read at its condensation point, the point of highest beta).

    ``network_input`` (:data:`fastreco.data.clustering_inputs.INPUTS`) says what the network's
    points are; with ``layer_clusters`` the 2D CLUE stage runs first (its time is part of the
    network's) and each hit takes the cluster of its layer cluster."""
    import torch

    from fastreco.data.clustering_inputs import INPUTS
    from fastreco.models.condensation import condense

    if len(event) == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    # the share that makes a point's truth (0.5) only labels the points; nothing reads it here
    points = INPUTS.resolve(network_input, field="data.input").prepare(event, 0.5)
    if len(points.points) == 0:
        return np.full(len(event), -1, np.int64), np.zeros(0)
    with torch.no_grad():
        x = torch.from_numpy(points.points.features).to(device)
        out = module(x, torch.zeros(len(x), dtype=torch.long, device=device))
    beta = out["beta"].cpu().numpy()
    labels = condense(
        beta, out["coords"].cpu().numpy(), t_beta=t_beta, t_d=t_d, assign_radius=assign_radius
    )
    n = int(labels.max()) + 1 if labels.size else 0
    energy = np.exp(out["energy"].cpu().numpy())
    # condensation point of each cluster: its point of highest beta (the last of its cluster
    # when sorted by cluster, then beta)
    inside = np.flatnonzero(labels >= 0)
    ranked = inside[np.lexsort((beta[inside], labels[inside]))]
    last = np.r_[labels[ranked][1:] != labels[ranked][:-1], True]
    cp = ranked[last]
    return points.hit_labels(labels), energy[cp] if n else np.zeros(0)


@dataclasses.dataclass
class AlgorithmResult:
    """One algorithm on one set of events: matched particles, fakes, time per event and the
    cluster labels of each event's hits."""

    particles: pd.DataFrame
    fakes: list[int]
    seconds: list[float]
    hits: list[int]
    labels: list[np.ndarray]


def run_algorithms(
    events: list[PointCloudEvent],
    module: Any,
    *,
    t_beta: float,
    t_d: float,
    assign_radius: float = 0.0,
    network_input: str = "hits",
    matching: MatchingConfig = MatchingConfig(),
) -> dict[str, AlgorithmResult]:
    """CLUE and the network (``module``; ``None`` leaves it out) on the same events."""
    algos: dict[str, Any] = {"CLUE": lambda ev: (clue_labels(ev), None)}
    if module is not None:
        algos["GNN"] = lambda ev: network_labels(
            module,
            ev,
            t_beta=t_beta,
            t_d=t_d,
            assign_radius=assign_radius,
            network_input=network_input,
        )
    results = {}
    for name, algo in algos.items():
        parts, fakes, seconds, all_labels = [], [], [], []
        for ev in events:
            start = time.perf_counter()
            labels, energy = algo(ev)
            seconds.append(time.perf_counter() - start)
            df, n_fake = match_event(ev, labels, matching, energy)
            parts.append(df)
            fakes.append(n_fake)
            all_labels.append(labels)
        results[name] = AlgorithmResult(
            pd.concat(parts, ignore_index=True),
            fakes,
            seconds,
            [len(e) for e in events],
            all_labels,
        )
    return results


def evaluate_clustering(
    run_dir: Any,
    *,
    pileups: tuple[float, ...] = (0, 50, 140, 200),
    separations: tuple[float, ...] = (2.0, 4.0, 8.0, 16.0),
    n_events: int = 40,
    out_dir: Any = None,
    seed: int = 90_001,
    progress: bool = True,
) -> dict[str, Any]:
    """CLUE against a trained condensation network on fresh events of the run's task.

    For each pileup in ``pileups`` (the task's particles, energies and separations) and for two
    particles at each distance in ``separations`` [cm] (at the task's pileup), ``n_events``
    events are simulated with a seed of their own (never seen in training), clustered by both and
    matched (:func:`match_event`). Writes ``metrics.json`` and ``report.html`` (efficiency,
    merge, split and fake rates vs pileup and separation, response, time per event, an event
    display) into ``out_dir`` (default: the run folder).
    """
    from rich.progress import track

    from fastreco.data.pointcloud import point_cloud_events
    from fastreco.evaluate.report import Report
    from fastreco.sim.hgcal import simulate_hgcal_batch
    from fastreco.train.clustering import ClusteringTaskConfig, load_clustering_model
    from fastreco.train.runner import load_run_info

    run = Path(run_dir)
    info = load_run_info(run)
    task = ClusteringTaskConfig.load(run / "config.yaml")
    module = load_clustering_model(run)
    c = task.condensation
    base = task.data.sim_config()
    out = Path(out_dir) if out_dir is not None else run
    out.mkdir(parents=True, exist_ok=True)

    def make(config: Any, s: int) -> list[PointCloudEvent]:
        batch = simulate_hgcal_batch(config, n_events, s)
        return point_cloud_events(
            batch, min_fraction=task.data.min_fraction, roi_radius=task.data.roi_radius
        )

    scans: dict[str, list[dict[str, Any]]] = {"pileup": [], "separation": []}
    kept: dict[str, Any] = {}
    settings = [
        ("pileup", float(p), dataclasses.replace(base, pileup=float(p))) for p in pileups
    ] + [
        (
            "separation",
            float(d),
            dataclasses.replace(
                base, n_particles=2, min_separation=float(d), max_separation=float(d) + 1
            ),
        )
        for d in separations
    ]
    for i, (scan, value, config) in enumerate(
        track(settings, description="evaluate clustering", disable=not progress)
    ):
        events = make(config, seed + i)
        results = run_algorithms(
            events,
            module,
            t_beta=c.t_beta,
            t_d=c.t_d,
            assign_radius=c.assign_radius,
            network_input=task.data.input,
        )
        for algo, res in results.items():
            row = {scan: value, "algorithm": algo, **summarize(res.particles, res.fakes)}
            row["ms_per_event"] = 1e3 * float(np.mean(res.seconds))
            row["hits_per_event"] = float(np.mean(res.hits))
            scans[scan].append(row)
        if scan == "pileup":
            kept[value] = (events, results)
    metrics: dict[str, Any] = {
        "run": str(run),
        "task": task.name,
        "trained_on": {"pileup": task.data.pileup, "n_train": info.get("n_train")},
        "n_events_per_point": n_events,
        "roi_radius_cm": task.data.roi_radius,
        "matching": dataclasses.asdict(MatchingConfig()),
        "pileup_scan": scans["pileup"],
        "separation_scan": scans["separation"],
    }

    report = Report(
        f"fastreco clustering: {task.name}",
        subtitle=f"CLUE vs {task.model.name} + object condensation on "
        f"{task.data.input.replace('_', ' ')}, {n_events} events per point",
    )
    report.add_section("Summary")
    report.add_text(
        f"Both algorithms run on the same simulated events (seeds never used in training): "
        f"{task.data.n_particles} particles ({', '.join(task.data.particles)}, "
        f"{task.data.energy} GeV) per event plus pileup, hits within "
        f"{task.data.roi_radius} cm of the particles on the front face. A particle is found when "
        "one cluster holds half of its energy and it makes half of that cluster (module "
        "`fastreco.evaluate.clustering`)."
    )
    for scan, xlabel in (("pileup", "pileup"), ("separation", "separation [cm]")):
        df = pd.DataFrame(scans[scan])
        report.add_section(f"Against {xlabel}")
        report.add_table(df, float_format="{:.3g}".format)
        report.add_figure(_rate_figure(df, scan, xlabel), f"Rates against {xlabel}")
    events, results = kept[max(kept)]
    report.add_section("Event display")
    report.add_figure(
        _display(events[0], {name: res.labels[0] for name, res in results.items()}),
        f"One event at pileup {max(kept):g}: hits (x, z) coloured by truth particle and by each "
        "algorithm's clusters (grey: pileup / noise / unclustered)",
    )
    metrics["outputs"] = {
        "metrics": str(out / "metrics.json"),
        "report": str(report.write(out / "report.html")),
    }
    tmp = out / f".metrics.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(metrics, indent=2, default=_json_default) + "\n")
    os.replace(tmp, out / "metrics.json")
    return metrics


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(type(obj))


def _rate_figure(df: pd.DataFrame, scan: str, xlabel: str) -> Any:
    from fastreco.evaluate.plots import new_figure, plot_style

    with plot_style():
        fig, axes = new_figure(1, 3, figsize=(18, 5.5))
        for ax, key, title in zip(
            axes[0],
            ("efficiency", "merge_rate", "fake_clusters_per_event"),
            ("efficiency", "merge rate", "fake clusters / event"),
            strict=True,
        ):
            for algo, sub in df.groupby("algorithm"):
                ax.plot(sub[scan], sub[key], marker="o", label=algo)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(title)
            ax.legend()
    return fig


def _display(event: PointCloudEvent, labels: dict[str, np.ndarray]) -> Any:
    from fastreco.evaluate.plots import new_figure, plot_style

    p = event.position
    panels = {"truth": np.where(event.object_id > 0, event.object_id, -1), **labels}
    size = 2 + 30 * np.sqrt(np.clip(event.energy, 0, None) / max(event.energy.max(), 1e-9))
    with plot_style():
        fig, axes = new_figure(1, len(panels), figsize=(6 * len(panels), 5.5))
        for ax, (name, lab) in zip(axes[0], panels.items(), strict=True):
            grey = lab < 0
            ax.scatter(p[grey, 2], p[grey, 0], s=1, c="0.8")
            ax.scatter(p[~grey, 2], p[~grey, 0], s=size[~grey], c=lab[~grey] % 20, cmap="tab20")
            ax.set_xlabel("z [cm]")
            ax.set_ylabel("x [cm]")
            ax.set_title(name)
    return fig
