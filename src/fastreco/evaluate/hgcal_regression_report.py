"""The HTML report of :mod:`fastreco.evaluate.hgcal_regression`: seed 003's figures for every
network and baseline side by side, the pileup study, 3D saliency, memory and time, the bars."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fastreco.evaluate.plots import add_label, new_figure, plot_style
from fastreco.evaluate.report import Report
from fastreco.evaluate.resolution import resolution_model

_MARKERS = "osD^v<>"


def _legend(ax: Any, **kwargs: Any) -> None:
    """A legend when the axes have labelled artists (small samples may leave none)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def _energy_names(metrics: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for r in metrics["results"].values():
        names += [n for n in r["energy"] if n not in names]
    return names


def _position_names(metrics: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for r in metrics["results"].values():
        names += [n for n in r["position"] if n not in names]
    return names


def _style(names: list[str]) -> dict[str, dict[str, Any]]:
    return {
        n: {"color": f"C{i}", "marker": _MARKERS[i % len(_MARKERS)]} for i, n in enumerate(names)
    }


def _histograms(
    metrics: dict[str, Any], est: dict[str, dict[str, np.ndarray]], truth: dict[str, np.ndarray]
) -> Figure:
    """Relative-error histograms per particle, every energy estimator overlaid."""
    particles = list(metrics["results"])
    names = _energy_names(metrics)
    style = _style(names)
    with plot_style():
        fig, axes = new_figure(1, len(particles), figsize=(8 * len(particles), 7))
        for ax, p in zip(axes[0], particles, strict=True):
            sel = np.array([metrics_pname(x) == p for x in truth["pdg"]])
            widths = [m["sigma_eff_pct"] / 100 for m in metrics["results"][p]["energy"].values()]
            half = float(np.clip(6 * np.nanmax(widths), 0.05, 1.0))
            edges = np.linspace(-half, half, 81)
            for n in names:
                if n not in metrics["results"][p]["energy"]:
                    continue
                rel = est[n]["energy"][sel] / truth["energy"][sel] - 1
                rel = rel[np.isfinite(rel)]
                ax.hist(
                    np.clip(rel, edges[0], edges[-1]),
                    bins=edges,
                    histtype="step",
                    lw=1.8,
                    color=style[n]["color"],
                    label=f"{n}: σ_eff {metrics['results'][p]['energy'][n]['sigma_eff_pct']:.1f} %",
                )
            ax.set_xlabel("(E_pred − E_true) / E_true")
            ax.set_ylabel(f"events / {edges[1] - edges[0]:.3g}")
            _legend(ax, fontsize="x-small", loc="upper left")
            add_label(ax, p)
    return fig


def metrics_pname(pdg: Any) -> str:
    from fastreco.evaluate.hgcal_regression import PARTICLES

    return PARTICLES.get(int(pdg), str(int(pdg)))


def _per_bin(metrics: dict[str, Any], kind: str) -> Figure:
    """Per energy bin, per particle: ``kind`` = profile (mean relative error), rms, resolution
    (sigma_eff / median with the fit)."""
    particles = list(metrics["results"])
    names = _energy_names(metrics)
    style = _style(names)
    with plot_style():
        fig, axes = new_figure(1, len(particles), figsize=(8 * len(particles), 7))
        for ax, p in zip(axes[0], particles, strict=True):
            for n in names:
                m = metrics["results"][p]["energy"].get(n)
                if m is None:
                    continue
                b = pd.DataFrame(m["bins"])
                e = b["e_mean"].to_numpy()
                if kind == "profile":
                    y = 100 * (b["response_mean"].to_numpy() - 1)
                    err = 100 * b["rms"].to_numpy() / np.sqrt(np.maximum(b["n"].to_numpy(), 1))
                    ax.errorbar(
                        e, y, yerr=err, fmt=style[n]["marker"], color=style[n]["color"], label=n
                    )
                elif kind == "rms":
                    ax.plot(
                        e,
                        100 * b["rms"],
                        style[n]["marker"] + "-",
                        color=style[n]["color"],
                        label=n,
                    )
                else:
                    err = b.get("resolution_eff_boot_err", b["resolution_eff_err"])
                    ax.errorbar(
                        e,
                        100 * b["resolution_eff"],
                        yerr=100 * err,
                        fmt=style[n]["marker"],
                        color=style[n]["color"],
                        label=n,
                    )
                    fit = m.get("fit")
                    if fit:
                        grid = np.geomspace(b["e_low"].min(), b["e_high"].max(), 100)
                        ax.plot(
                            grid,
                            100 * resolution_model(grid, fit["a"], fit["b"], fit["c"]),
                            color=style[n]["color"],
                            lw=1,
                            label=f"  a = {100 * fit['a']:.0f} %, c = {100 * fit['c']:.1f} %",
                        )
            ax.set_xscale("log")
            ax.set_xlabel("true energy [GeV]")
            ax.set_ylabel(
                {
                    "profile": "mean (E_pred − E_true)/E_true [%]",
                    "rms": "RMS of (E_pred − E_true)/E_true [%]",
                    "resolution": "σ_eff / median [%]",
                }[kind]
            )
            if kind == "profile":
                ax.axhline(0, color="grey", lw=1)
            _legend(ax, fontsize="x-small")
            ax.grid(True, which="both", alpha=0.3)
            add_label(ax, p)
    return fig


def _positions(metrics: dict[str, Any]) -> Figure:
    particles = list(metrics["results"])
    names = _position_names(metrics)
    style = _style(names)
    with plot_style():
        fig, axes = new_figure(len(particles), 3, figsize=(21, 6.5 * len(particles)))
        for row, p in zip(axes, particles, strict=True):
            for ax, c in zip(row, ("x", "y", "z"), strict=True):
                for n in names:
                    m = metrics["results"][p]["position"].get(n)
                    if m is None:
                        continue
                    b = pd.DataFrame(m["bins"])
                    e = np.sqrt(b["e_low"] * b["e_high"])
                    ax.plot(
                        e,
                        b[f"mean_abs_d{c}_cm"],
                        style[n]["marker"] + "-",
                        color=style[n]["color"],
                        label=n,
                    )
                if c != "z":
                    ax.axhline(
                        metrics["cell_width_cm"][p], color="grey", ls="--", label="cell width"
                    )
                ax.set_xscale("log")
                ax.set_xlabel("true energy [GeV]")
                ax.set_ylabel(f"mean |Δ{c}| [cm]")
                _legend(ax, fontsize="xx-small")
                add_label(ax, p)
    return fig


def _scatter(
    metrics: dict[str, Any], est: dict[str, dict[str, np.ndarray]], truth: dict[str, np.ndarray]
) -> Figure:
    """Seed 003's "prediction and label" plots: 100 random test events, energy and x."""
    nets = list(metrics["runs"])
    rng = np.random.default_rng(0)
    pick = rng.choice(len(truth["energy"]), size=min(100, len(truth["energy"])), replace=False)
    with plot_style():
        fig, axes = new_figure(1, 2, figsize=(16, 7))
        for k, (q, tq, unit) in enumerate(
            (("energy", "energy", "GeV"), ("x", "barycenter_x", "cm"))
        ):
            ax = axes[0, k]
            order = np.argsort(truth[tq][pick])
            ax.plot(truth[tq][pick][order], "k-", lw=2, label="label")
            for i, n in enumerate(nets):
                ax.plot(est[n][q][pick][order], _MARKERS[i], color=f"C{i}", ms=5, label=n)
            ax.set_xlabel("event (sorted by label)")
            ax.set_ylabel(f"{q} [{unit}]")
            _legend(ax, fontsize="x-small")
            add_label(ax, "100 random test events")
    return fig


def _pileup(metrics: dict[str, Any]) -> Figure:
    df = pd.DataFrame(metrics["pileup"])
    particles = list(dict.fromkeys(df["particle"]))
    with plot_style():
        fig, axes = new_figure(2, len(particles), figsize=(8 * len(particles), 13))
        for j, p in enumerate(particles):
            d = df[df["particle"] == p]
            for i, (name, g) in enumerate(d.groupby("estimator", sort=False)):
                if "energy_sigma_eff_pct" in g and g["energy_sigma_eff_pct"].notna().any():
                    axes[0, j].plot(
                        g["pileup"], g["energy_sigma_eff_pct"], _MARKERS[i % 7] + "-", label=name
                    )
                if "mean_abs_dx_cm" in g and g["mean_abs_dx_cm"].notna().any():
                    axes[1, j].plot(
                        g["pileup"], g["mean_abs_dx_cm"], _MARKERS[i % 7] + "-", label=name
                    )
            axes[0, j].set_ylabel("σ_eff of (E_pred − E_true)/E_true [%]")
            axes[1, j].set_ylabel("mean |Δx| [cm]")
            for ax in axes[:, j]:
                ax.set_xlabel("pileup")
                _legend(ax, fontsize="xx-small")
                add_label(ax, p)
    return fig


def _saliency(metrics: dict[str, Any], run: str) -> Figure:
    per = metrics["saliency"][run]
    samples = list(per)
    with plot_style():
        fig, axes = new_figure(2, len(samples), figsize=(7 * len(samples), 12))
        for j, s in enumerate(samples):
            ax = axes[0, j]
            layer = np.asarray(per[s]["layer"])
            ax.step(np.arange(len(layer)), layer, where="mid", color="C0", label="saliency")
            ax.step(
                np.arange(len(layer)),
                np.asarray(per[s]["layer_energy"]),
                where="mid",
                color="grey",
                ls="--",
                label="energy fraction",
            )
            ax.set_xlabel("grid layer")
            ax.set_ylabel("share per layer")
            _legend(ax, fontsize="x-small")
            add_label(ax, s)
            img = np.asarray(per[s]["map"])
            im = axes[1, j].imshow(img, origin="lower", cmap="viridis")
            fig.colorbar(im, ax=axes[1, j], fraction=0.046)
            axes[1, j].set_xlabel("window x pixel")
            axes[1, j].set_ylabel("window y pixel")
    return fig


def _energy_table(metrics: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for p, r in metrics["results"].items():
        for n, m in r["energy"].items():
            fit = m.get("fit") or {}
            rows.append(
                {
                    "particle": p,
                    "estimator": n,
                    "n": m["n"],
                    "mean |ΔE|/E [%]": m["mean_abs_pct"],
                    "median [%]": m["median_pct"],
                    "RMS [%]": m["rms_pct"],
                    "σ_eff [%]": m["sigma_eff_pct"],
                    "fit a [%·√GeV]": 100 * fit.get("a", np.nan),
                    "fit b [GeV]": fit.get("b", np.nan),
                    "fit c [%]": 100 * fit.get("c", np.nan),
                }
            )
    return pd.DataFrame(rows)


def _bin_table(metrics: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for p, r in metrics["results"].items():
        for n, m in r["energy"].items():
            row: dict[str, Any] = {"particle": p, "estimator": n}
            for b in m["bins"]:
                value = f"{100 * b['resolution_eff']:.2f}"
                err = b.get("resolution_eff_boot_err", math.nan)
                if math.isfinite(err):
                    value += f" ± {100 * err:.2f}"
                row[f"{b['e_low']:.0f}–{b['e_high']:.0f} GeV (n)"] = f"{value} ({b['n']})"
            rows.append(row)
    return pd.DataFrame(rows)


def _versus_sum_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """Per bin, best network minus calibrated sum with its paired bootstrap error [%]."""
    rows = []
    for bar in metrics["bars"]:
        for b in bar.get("bins", []):
            rows.append(
                {
                    "particle": b["particle"],
                    "bin [GeV]": f"{b['e_low']:.0f}–{b['e_high']:.0f}",
                    "n": b["n"],
                    "network [%]": 100 * b["network"],
                    "calibrated sum [%]": 100 * b["calibrated_sum"],
                    "difference [%]": 100 * b["diff"],
                    "bootstrap error [%]": 100 * b["diff_err"],
                    "difference / error": b["diff"] / b["diff_err"] if b["diff_err"] > 0 else 0,
                    "resamples below": b["p_below"],
                }
            )
    return pd.DataFrame(rows)


def _position_table(metrics: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for p, r in metrics["results"].items():
        for n, m in r["position"].items():
            rows.append(
                {
                    "particle": p,
                    "estimator": n,
                    "mean |Δx| [cm]": m["mean_abs_dx_cm"],
                    "mean |Δy| [cm]": m["mean_abs_dy_cm"],
                    "mean |Δz| [cm]": m["mean_abs_dz_cm"],
                    "RMS Δx [cm]": m["rms_dx_cm"],
                    "RMS Δy [cm]": m["rms_dy_cm"],
                    "RMS Δz [cm]": m["rms_dz_cm"],
                }
            )
    return pd.DataFrame(rows)


def write_report(
    metrics: dict[str, Any],
    path: str | os.PathLike[str],
    estimates: dict[str, dict[str, np.ndarray]],
    truth: dict[str, np.ndarray],
) -> Path:
    """Write report.html from the evaluation's metrics and its test-event estimates."""
    runs = list(metrics["runs"])
    d = metrics["data"]
    report = Report(
        "fastreco: HGCAL energy and barycentre regression",
        subtitle=f"{' vs '.join(runs)} vs classical baselines, same test events",
    )
    report.add_section("Bars of the issue")
    report.add_table(
        pd.DataFrame(
            [
                {"bar": b["bar"], "met": "yes" if b["met"] else "NO", "numbers": b["detail"]}
                for b in metrics["bars"]
            ]
        )
    )
    report.add_section("Data and models")
    report.add_text(
        f"Single {', '.join(d['particles'])} ({d['energy']} GeV, {d['eta_min']} < η < "
        f"{d['eta_max']}, pileup {d['pileup']:g}), {d['events']} events split "
        f"{d['split']} by event index; test events per particle: {metrics['n_test']}"
        + (
            f" from an independent sample of {t['events']} events (seed {t['seed']}, "
            f"{t['dir']}; the baselines are fitted on the training split). "
            if (t := metrics.get("test_sample"))
            else " (the test split). "
        )
        + f"Windows of {d['grid_window']} × {d['grid_window']} pixels of {d['grid_pitch']} cm "
        "(projective) around the shower axis; the DRN sees the hits of the same window. "
        "Energies are the ratio to the calibrated raw sum within "
        f"{d['raw_radius']} cm of the axis times that sum. Baselines: calibrated sum "
        "(per-section constants fitted on the training events, all hits), software "
        "compensation (pions), linear and logarithmic barycentre of all hits, linear barycentre of "
        "the grid window (the position reference of networks trained with "
        "`position_reference: barycentre`, which regress a correction to their input's "
        "barycentre)."
    )
    report.add_table(
        pd.DataFrame(
            [
                {"run": k, **{kk: str(vv) for kk, vv in v.items()}}
                for k, v in metrics["runs"].items()
            ]
        )
    )
    report.add_section("Energy")
    report.add_table(
        _energy_table(metrics),
        "Relative energy error on the test events",
        float_format="{:.3g}".format,
    )
    report.add_table(
        _bin_table(metrics),
        "Resolution σ_eff / median [%] per true-energy bin, ± bootstrap standard error "
        f"({metrics.get('n_bootstrap', 0)} resamples; events per bin in brackets)",
    )
    versus = _versus_sum_table(metrics)
    if len(versus):
        report.add_table(
            versus,
            f"Best network ({metrics['bars'][0]['network']}) against the calibrated sum per "
            "bin: the difference of resolutions on the same events, its standard error and the "
            "fraction of bootstrap resamples where the network is better (paired resampling)",
            float_format="{:.3g}".format,
        )
    report.add_figure(_histograms(metrics, estimates, truth), "Relative-error histograms")
    report.add_figure(_per_bin(metrics, "profile"), "Profile: mean relative error per energy bin")
    report.add_figure(
        _per_bin(metrics, "rms"), "RMS of the relative error per energy bin (seed 003)"
    )
    report.add_figure(_per_bin(metrics, "resolution"), "Resolution and its fit a/√E ⊕ b/E ⊕ c")
    report.add_section("Barycentre")
    report.add_table(
        _position_table(metrics),
        "Barycentre errors on the test events",
        float_format="{:.3g}".format,
    )
    report.add_figure(_positions(metrics), "Mean absolute barycentre error per energy bin")
    report.add_figure(
        _scatter(metrics, estimates, truth), "Prediction and label, 100 random test events"
    )
    if metrics["pileup"]:
        report.add_section("Robustness: trained without pileup, tested with pileup")
        report.add_text(
            f"Fresh events ({metrics['pileup_events']} per pileup point, seeds never used in "
            "training). The windows of the networks, and the hits of the raw sum and of the "
            f"baselines (within {d['raw_radius']} cm), are centred on the particle's impact on "
            "the front face (a seed, as a tracker or trigger would give): the study measures the "
            "pileup energy inside the window, not the search for the shower among pileup showers."
        )
        report.add_table(pd.DataFrame(metrics["pileup"]), float_format="{:.3g}".format)
        report.add_figure(_pileup(metrics), "Energy resolution and |Δx| against pileup")
    report.add_section("3D saliency")
    report.add_text(
        "|∂E_pred/∂input| (CNN: log-energy voxels; DRN: hit features, binned into the same "
        "layers and pixels), each event's map normalized to 1, averaged over events; per layer "
        "(with the mean energy fraction per layer, dashed) and summed over layers."
    )
    for run in metrics["saliency"]:
        report.add_figure(_saliency(metrics, run), f"Saliency of {run}")
    report.add_section("Memory and time per event")
    report.add_text(
        "Same test events, one thread, inference. Conversion: hits → dense log-energy windows "
        "(grid) or window point cloud (points); its peak memory is tracemalloc's (numpy). Model: "
        "one forward pass of the batch; peak memory is torch.profiler's allocator high-water "
        "mark (as benchmarks/bench_hgcal_regression_models.py). CPU time of this process "
        "(conversion: the median of five timings)."
    )
    report.add_table(pd.DataFrame(metrics["resources"]), float_format="{:.3g}".format)
    return report.write(path)
