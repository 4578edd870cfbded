"""Performance plots: ROC curves in rejection, rejection per bin, shower-shape distributions,
resolution against energy, relative-error histograms.

Every function returns a :class:`matplotlib.figure.Figure` built without :mod:`matplotlib.pyplot`
(no global figure registry, no GUI backend; rendering is Agg's), in mplhep's CMS style. The label
is a neutral "fastreco Simulation": nothing here is an official result of any experiment.
Save with ``fig.savefig(path)`` or embed with :meth:`fastreco.evaluate.report.Report.add_figure`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import matplotlib
import matplotlib.style
import mplhep
import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fastreco.evaluate.metrics import RocCurve
from fastreco.evaluate.resolution import ResolutionFit, effective_sigma, resolution_model

log = logging.getLogger(__name__)

#: The left label of every plot (bold experiment slot, italic text slot).
LABEL_EXP = "fastreco"
LABEL_TEXT = "Simulation"
_MATHTEXT = {"mathtext.fontset": "stixsans"}
_E_TRUE = r"$E_{\mathrm{true}}$"


@contextlib.contextmanager
def plot_style() -> Iterator[None]:
    """mplhep's CMS style for the figures created inside the block (rcParams restored after).

    Math text uses the STIX sans fonts rather than the style's "custom" set: matplotlib looks
    the custom set's fonts up when the figure is *drawn*, which happens after this block (at
    ``savefig``), where they would fall back to missing fonts.
    """
    with matplotlib.style.context([mplhep.style.CMS, _MATHTEXT]):
        yield


class StyledFigure(Figure):
    """A Figure that is drawn and saved in :func:`plot_style`, wherever ``savefig`` is called.

    Some style settings (the spacing of mplhep's label, math fonts) are read when the figure is
    drawn, not when it is built; drawing inside the style keeps the output the same in a report,
    a script or a notebook.
    """

    def draw(self, renderer: Any) -> None:
        with plot_style():
            super().draw(renderer)

    def savefig(self, fname: Any, **kwargs: Any) -> None:
        with plot_style():
            super().savefig(fname, **kwargs)


def new_figure(
    nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] = (10, 8), **kwargs: Any
) -> tuple[Figure, np.ndarray]:
    """A Figure and its axes (always a 2-d array of shape (nrows, ncols)); call in :func:`plot_style`."""
    fig = StyledFigure(figsize=figsize, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def add_label(ax: Axes, rlabel: str = "") -> None:
    """The neutral label above the axes: bold "fastreco", italic "Simulation"; ``rlabel`` right.

    Drawn like mplhep's experiment labels, but placed relative to each other at draw time (an
    annotation anchored on the bold text), so the gap survives any layout or dpi.
    """
    size = matplotlib.rcParams["font.size"]
    exp = ax.text(
        0.0,
        1.012,
        LABEL_EXP,
        transform=ax.transAxes,
        ha="left",
        va="bottom",
        fontweight="bold",
        fontsize=1.3 * size,
    )
    ax.annotate(
        LABEL_TEXT,
        xy=(1.0, 0.0),
        xycoords=exp,
        xytext=(0.25 * size, 0.0),
        textcoords="offset points",
        ha="left",
        va="bottom",
        fontstyle="italic",
        fontsize=size,
    )
    if rlabel:
        ax.text(
            1.0, 1.012, rlabel, transform=ax.transAxes, ha="right", va="bottom", fontsize=0.8 * size
        )


def plot_roc_curves(
    curves: Mapping[str, RocCurve],
    *,
    signal_label: str = "signal",
    background_label: str = "background",
    working_points: Sequence[float] = (0.5, 0.75, 0.9, 0.99),
    rlabel: str = "",
) -> Figure:
    r"""ROC curves of several classifiers: x = signal efficiency, y = background rejection (log).

    Args:
        curves: name -> ROC; the legend shows each AUC.
        signal_label, background_label: e.g. ``r"$\gamma$"`` and ``r"$\pi^0$"`` (axis titles;
            use mathtext: the CMS style's font has no superscript glyphs such as "⁰").
        working_points: signal efficiencies marked on each curve.
    """
    with plot_style():
        fig, axes = new_figure()
        ax = axes[0, 0]
        y_max = 1.0
        for i, (name, curve) in enumerate(curves.items()):
            color = f"C{i}"
            keep = curve.background_efficiency > 0
            rej = 1.0 / curve.background_efficiency[keep]
            ax.plot(
                curve.signal_efficiency[keep],
                rej,
                color=color,
                label=f"{name} (AUC = {curve.auc:.3f})",
            )
            if len(rej):
                y_max = max(y_max, float(rej.max()))
            wp = np.asarray(working_points, dtype=np.float64)
            wr = curve.rejection_at(wp)
            fin = np.isfinite(wr)
            ax.plot(wp[fin], wr[fin], "o", color=color, markersize=6)
        ax.set_yscale("log")
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.9, max(10.0, 2 * y_max))
        ax.set_xlabel(f"{signal_label} efficiency")
        ax.set_ylabel(f"{background_label} rejection (1 / efficiency)")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(loc="upper right")
        add_label(ax, rlabel)
    return fig


def plot_rejection_vs_bin(
    table: pd.DataFrame,
    *,
    xlabel: str = "true energy [GeV]",
    signal_efficiencies: Sequence[float] | None = None,
    logx: bool = True,
    background_label: str = "background",
    rlabel: str = "",
) -> Figure:
    """Background rejection against a binned variable, from a tidy
    :func:`fastreco.evaluate.metrics.binned_performance` table (optionally with a ``classifier``
    column: one line style per classifier, one colour per signal efficiency).

    Bins with NaN or infinite rejection (too few events; no background passing) are skipped.
    """
    effs = (
        sorted(table["signal_efficiency"].unique())
        if signal_efficiencies is None
        else list(signal_efficiencies)
    )
    classifiers = list(table["classifier"].unique()) if "classifier" in table else [None]
    styles = ["-", "--", ":", "-."]
    markers = ["o", "s", "^", "D"]
    with plot_style():
        fig, axes = new_figure()
        ax = axes[0, 0]
        for ci, clf in enumerate(classifiers):
            sub = table if clf is None else table[table["classifier"] == clf]
            for ei, eff in enumerate(effs):
                rows = sub[np.isclose(sub["signal_efficiency"], eff)]
                lo, hi = rows["bin_low"].to_numpy(), rows["bin_high"].to_numpy()
                x = np.sqrt(lo * hi) if logx and np.all(lo > 0) else 0.5 * (lo + hi)
                y = rows["rejection"].to_numpy()
                dy = rows["rejection_err"].to_numpy()
                ok = np.isfinite(y)
                label = f"ε = {100 * eff:g} %" + ("" if clf is None else f", {clf}")
                ax.errorbar(
                    x[ok],
                    y[ok],
                    xerr=[(x - lo)[ok], (hi - x)[ok]],
                    yerr=np.nan_to_num(dy[ok]),
                    color=f"C{ei}",
                    linestyle=styles[ci % len(styles)],
                    marker=markers[ci % len(markers)],
                    markersize=5,
                    label=label,
                )
        if logx and np.all(table["bin_low"] > 0):
            ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{background_label} rejection at signal efficiency ε")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(loc="best", fontsize="x-small", ncol=2 if len(classifiers) > 1 else 1)
        add_label(ax, rlabel)
    return fig


def _shared_range(a: np.ndarray, b: np.ndarray, q: float = 0.005) -> tuple[float, float]:
    both = np.concatenate([a, b])
    both = both[np.isfinite(both)]
    if len(both) == 0:
        return 0.0, 1.0
    lo, hi = np.quantile(both, [q, 1 - q])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.02 * (hi - lo)
    return float(lo - pad), float(hi + pad)


def plot_feature_distributions(
    signal: pd.DataFrame,
    background: pd.DataFrame,
    features: Sequence[str],
    *,
    signal_label: str = "signal",
    background_label: str = "background",
    bins: int = 40,
    ncols: int = 4,
) -> Figure:
    """Normalised histograms of each feature, signal against background, one panel per feature.

    The range of each panel is the 0.5-99.5 % quantile range of both samples together
    (entries outside are not drawn); non-finite values are ignored.
    """
    n = len(features)
    nrows = max(1, math.ceil(n / ncols))
    ncols = min(ncols, max(n, 1))
    with plot_style():
        fig, axes = new_figure(nrows, ncols, figsize=(4.2 * ncols, 3.6 * nrows))
        for k, ax in enumerate(axes.ravel()):
            if k >= n:
                ax.set_axis_off()
                continue
            name = features[k]
            s = signal[name].to_numpy(dtype=np.float64)
            b = background[name].to_numpy(dtype=np.float64)
            lo, hi = _shared_range(s, b)
            edges = np.linspace(lo, hi, bins + 1)
            for vals, label, color in ((s, signal_label, "C0"), (b, background_label, "C1")):
                vals = vals[np.isfinite(vals)]
                counts, _ = np.histogram(vals, bins=edges)
                total = counts.sum()
                dens = counts / (total * np.diff(edges)) if total else counts.astype(float)
                mplhep.histplot(dens, edges, ax=ax, label=label, color=color, lw=1.5)
            ax.set_xlabel(name, fontsize="small")
            ax.set_ylabel("normalised", fontsize="small")
            ax.tick_params(labelsize="x-small")
            if k == 0:
                ax.legend(fontsize="x-small")
        fig.suptitle(
            f"fastreco simulation: {signal_label} vs {background_label}", fontsize="medium"
        )
    return fig


def plot_resolution(
    table: pd.DataFrame,
    fit: ResolutionFit | None = None,
    *,
    estimator_label: str = "E",
    reference: tuple[float, float, float] | None = None,
    rlabel: str = "",
) -> Figure:
    """Relative resolution (top) and response (bottom) against true energy, with the fit.

    Args:
        table: a :func:`fastreco.evaluate.resolution.binned_response` table.
        fit: the ``a/sqrt(E) (+) b/E (+) c`` fit to draw (legend gives its parameters).
        estimator_label: name of the energy estimator (e.g. ``"E5x5"``).
        reference: optional ``(a, b, c)`` drawn dashed (e.g. the CMS test-beam values).
    """
    t = table[np.isfinite(table["resolution"])]
    e = t["e_mean"].to_numpy()
    with plot_style():
        fig, axes = new_figure(
            2, 1, figsize=(10, 10), sharex=True, gridspec_kw={"height_ratios": [2.2, 1]}
        )
        ax, axr = axes[0, 0], axes[1, 0]
        ax.errorbar(
            e,
            t["resolution"],
            yerr=t["resolution_err"],
            fmt="o",
            color="k",
            label=f"σ/μ of the Gaussian core of {estimator_label}/E",
        )
        ax.errorbar(
            e,
            t["resolution_eff"],
            yerr=t["resolution_eff_err"],
            fmt="s",
            color="C1",
            mfc="none",
            label=r"$\sigma_{\mathrm{eff}}$ / median",
        )
        if len(e):
            grid = np.geomspace(max(float(t["e_low"].min()), 1e-3), float(t["e_high"].max()), 200)
            if fit is not None:
                ax.plot(
                    grid,
                    fit(grid),
                    color="C0",
                    label=(
                        f"fit: a = {100 * fit.a:.2f} %, b = {fit.b:.3f} GeV, "
                        f"c = {100 * fit.c:.2f} %"
                    ),
                )
            if reference is not None:
                ax.plot(
                    grid,
                    resolution_model(grid, *reference),
                    "--",
                    color="C2",
                    label=r"reference a/√E $\oplus$ b/E $\oplus$ c",
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylabel("σ / E")
        ax.legend(fontsize="x-small", loc="upper right")
        ax.grid(True, which="both", alpha=0.3)
        add_label(ax, rlabel)
        axr.errorbar(e, t["core_mean"], yerr=t["core_mean_err"], fmt="o", color="k", label="core μ")
        axr.plot(e, t["response_median"], "s", color="C1", mfc="none", label="median")
        axr.axhline(1.0, color="grey", lw=1)
        axr.set_xlabel("true energy [GeV]")
        axr.set_ylabel(f"{estimator_label} / " + _E_TRUE)
        axr.legend(fontsize="x-small")
        axr.grid(True, which="both", alpha=0.3)
    return fig


def plot_relative_error(
    e_reco: npt.ArrayLike,
    e_true: npt.ArrayLike,
    *,
    bins: int = 100,
    xrange: tuple[float, float] | None = None,
    label: str = "E",
    rlabel: str = "",
) -> Figure:
    """Histogram of ``(E_reco - E_true) / E_true``, annotated with its median and sigma_eff.

    ``xrange`` defaults to the median +- 6 sigma_eff.
    """
    reco = np.asarray(e_reco, dtype=np.float64)
    true = np.asarray(e_true, dtype=np.float64)
    ok = np.isfinite(reco) & np.isfinite(true) & (true > 0)
    rel = (reco[ok] - true[ok]) / true[ok]
    with plot_style():
        fig, axes = new_figure()
        ax = axes[0, 0]
        if len(rel) >= 2:
            med = float(np.median(rel))
            s_eff = effective_sigma(rel)
            if xrange is None:
                half = 6 * s_eff if s_eff > 0 else 1.0
                xrange = (med - half, med + half)
            counts, edges = np.histogram(rel, bins=bins, range=xrange)
            mplhep.histplot(counts, edges, ax=ax, color="k", label=f"{len(rel)} events")
            ax.text(
                0.04,
                0.80,
                f"median = {100 * med:.2f} %\n"
                + r"$\sigma_{\mathrm{eff}}$"
                + f" = {100 * s_eff:.2f} %",
                transform=ax.transAxes,
                fontsize="small",
                va="top",
            )
            ax.legend(loc="upper right", fontsize="small")
        else:
            log.warning("relative-error histogram: fewer than two events")
        ax.set_xlabel(f"({label} − {_E_TRUE}) / {_E_TRUE}")
        ax.set_ylabel("events / bin")
        add_label(ax, rlabel)
    return fig
