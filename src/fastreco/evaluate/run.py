"""``fastreco evaluate``: a trained run folder in, ``metrics.json`` and ``report.html`` out.

Every model is evaluated on the TEST split of its task's event store (the split of
:mod:`fastreco.data.splits`, so all runs and baselines see the same events):

* **classification, two classes** (class 0 is the signal): ROC curves of the run, of the
  ``compare`` runs (other run folders on the same data, e.g. a DNN on the cells or an MLP on the
  shower-shape features) and of a BDT on the shower shapes (trained on the TRAIN split of the
  same store) on one plot; AUC, background rejection ``1/eps_bkg`` at 50/75/90/99 % signal
  efficiency, the seed talk's "signal efficiency @ 50/75/90/99 % background rejected", all of it
  per true-energy and per |eta| bin;
* **classification, more classes**: confusion matrix, accuracy, one-vs-rest AUC per class;
* **regression** (the model predicts ``E_true / E_reference``, so ``E_pred = output *
  reference``, the reference being the window sum or E5x5, ``task.reference``):
  response and resolution per energy bin and per class (Gaussian core and sigma_eff), the
  ``a/sqrt(E) (+) b/E (+) c`` fit, the relative-error histogram and profile, against the
  classical estimate (E5x5 with a response correction fitted on the train split) and an ORACLE,
  the resolution the simulated detector allows (:func:`oracle_energy`), with the ratio of each
  resolution to the oracle's bin by bin;
* saliency maps of an image model and its worst mistakes as event displays.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fastreco import __version__
from fastreco.config import DataConfig, TaskConfig
from fastreco.data.splits import independent_sample_dir, split_mask
from fastreco.deploy.inference import make_predictor, postprocess
from fastreco.errors import InputError
from fastreco.evaluate import metrics as M
from fastreco.evaluate import plots as P
from fastreco.evaluate.report import Report
from fastreco.evaluate.resolution import (
    ResolutionFit,
    binned_response,
    energy_bins_from_data,
    fit_resolution_table,
)
from fastreco.evaluate.saliency import saliency_section, worst_mistakes_section
from fastreco.train.baseline import _jsonable, evaluate_scores, evaluation_to_dict
from fastreco.train.datasets import ChunkDataset, class_pdgs
from fastreco.train.runner import best_checkpoint, load_run

log = logging.getLogger(__name__)

ETA_BINS = (0.0, 0.5, 1.0, 1.5)
ORACLE = "oracle"
CLASSICAL = "E5x5 calibrated"
ORACLE_SEED = 20_240
#: Independent draws of the oracle's smearing whose per-bin resolutions are averaged: from one
#: draw the Gaussian-core sigma of a bin of a few hundred photons scatters by 10-20 % (1.53 to
#: 2.05 % at 10-18 GeV over five seeds), as much as the bar it judges.
ORACLE_DRAWS = 16
#: Seed of the independent test samples (``test_events``); no configs/ task trains on it.
TEST_SEED = 90_002


@dataclasses.dataclass
class RunPredictions:
    """The test-split predictions of one run.

    Attributes:
        label: the name shown in plots and tables (e.g. ``"CNN (cells)"``).
        run: the run folder.
        task, info: its task and ``run.json``.
        df: one row per test event: ``event, y, true_energy, true_eta, true_pdg, window_sum``
            and the columns of :func:`fastreco.deploy.inference.postprocess`.
    """

    label: str
    run: Path
    task: TaskConfig
    info: dict[str, Any]
    df: pd.DataFrame


_FAMILY = {"tmva-cnn": "CNN", "resnet-cnn": "ResNet CNN", "tmva-dnn": "DNN", "mlp": "MLP"}


def run_label(task: TaskConfig) -> str:
    """``"CNN (cells)"``, ``"DNN (cells)"``, ``"MLP (features)"``, ..."""
    family = _FAMILY.get(task.model.name, task.model.name)
    inputs = "cells" if task.representation.name == "window" else task.representation.name
    return f"{family} ({inputs})"


def energy_edges(e_true: np.ndarray, n_bins: int, min_count: int = 60) -> np.ndarray:
    """True-energy bin edges [GeV]: one bin per energy of a gun at fixed energies, else
    ``n_bins`` logarithmic bins, neighbours merged until each holds ``min_count`` events (so the
    sparse low-energy end of a flat spectrum still gets measured)."""
    e = np.asarray(e_true, dtype=np.float64)
    e = e[np.isfinite(e) & (e > 0)]
    if len(np.unique(e)) <= 30:
        return energy_bins_from_data(e)
    edges = np.geomspace(e.min(), e.max() * (1 + 1e-9), n_bins + 1)
    counts, _ = np.histogram(e, edges)
    keep = [edges[0]]
    total = 0
    for count, hi in zip(counts, edges[1:], strict=True):
        total += count
        if total >= min_count:
            keep.append(hi)
            total = 0
    if total and len(keep) > 1:  # a sparse remainder joins the last bin
        keep[-1] = edges[-1]
    elif len(keep) == 1:
        keep.append(edges[-1])
    return np.asarray(keep)


def store_dir(task: TaskConfig, info: dict[str, Any]) -> Path:
    path = Path(info.get("data_dir") or task.data_dir)
    if not path.exists():
        raise InputError(
            "the run's event store is missing (simulate it again or train the run anew)",
            source=path,
        )
    return path


def independent_test_data(task: TaskConfig, n_events: int, seed: int = TEST_SEED) -> DataConfig:
    """The data block of an independent test sample: ``n_events`` fresh events of the task's
    generator (particles, energies, eta) from another ``seed``, every one a test event, in their
    own store beside the training store (``<store>_test-n<N>-s<seed>``); simulated on first use
    by :func:`~fastreco.train.runner.ensure_data`, then reused."""
    out = independent_sample_dir(task.data_dir, n_events, seed, task.data.seed)
    return dataclasses.replace(
        task.data,
        events=n_events,
        seed=seed,
        dir=str(out),
        split=(0.0, 0.0, 1.0),
    )


def predict_test(
    run_dir: str | os.PathLike[str],
    backend: str = "torch",
    device: Any = None,
    test_data: DataConfig | None = None,
) -> RunPredictions:
    """Predictions of a run on the test split of its event store, or on every event of the
    independent sample ``test_data`` (:func:`independent_test_data`; its ``task`` then carries
    that data block)."""
    run = Path(run_dir)
    task, info = load_run(run)
    best_checkpoint(run)
    if test_data is None:
        data = store_dir(task, info)
    else:
        from fastreco.train.runner import ensure_data

        task = dataclasses.replace(task, data=test_data)
        data = ensure_data(task, progress=False)
    predictor = make_predictor(run, backend, device=device)
    ds = ChunkDataset(data, task, "test")
    frames = []
    for i in range(len(ds)):
        b = ds.load(i)
        if len(b["event"]) == 0:
            continue
        df = pd.DataFrame(
            {
                "event": b["event"].astype(np.int64),
                "y": b["y"],
                "true_energy": b["energy"],
                "true_eta": b["eta"],
                "true_pdg": b["pdg"],
                "window_sum": b["window_sum"],
            }
        )
        for name, values in postprocess(task, predictor(b["x"]), b["reference"]).items():
            df[name] = values
        frames.append(df)
    if not frames:
        raise InputError("no test events of the task's classes in the store", source=data)
    df = pd.concat(frames, ignore_index=True)
    log.info("%s: %d test events predicted (%s)", run, len(df), backend)
    return RunPredictions(run_label(task), run, task, info, df)


def _check_compatible(main: RunPredictions, other: RunPredictions) -> None:
    a, b = main.task, other.task
    checks = {
        "kind": (a.kind, b.kind),
        "classes": (list(a.classes), list(b.classes)),
        "data.split": (list(a.data.split), list(b.data.split)),
        "n_events": (main.info.get("n_events"), other.info.get("n_events")),
        "data_dir": (
            Path(store_dir(a, main.info)).resolve(),
            Path(store_dir(b, other.info)).resolve(),
        ),
    }
    for field, (va, vb) in checks.items():
        if va != vb:
            raise InputError(
                f"a compared run must be trained on the same task data as {main.run} ({va})",
                source=other.run,
                field=field,
                value=str(vb),
            )


def _unique_labels(preds: list[RunPredictions]) -> None:
    seen: dict[str, int] = {}
    for p in preds:
        seen[p.label] = seen.get(p.label, 0) + 1
    for p in preds:
        if seen[p.label] > 1:
            p.label = f"{p.label} [{p.run.name}]"


# --------------------------------------------------------------------------------------------
# classification
# --------------------------------------------------------------------------------------------
_TEX = {"gamma": r"$\gamma$", "pi0": r"$\pi^0$", "e-": r"$e^-$", "e+": r"$e^+$", "pi+": r"$\pi^+$"}


def _tex(name: str) -> str:
    """Mathtext of a particle name for plot labels (the CMS style's font lacks "⁰")."""
    return _TEX.get(name, name)


def _signal_label(task: TaskConfig, pdg: np.ndarray) -> np.ndarray:
    return np.isin(pdg, class_pdgs(task)[0]).astype(np.int8)


def train_bdt_scores(
    task: TaskConfig, reco: pd.DataFrame, test_events: np.ndarray
) -> tuple[np.ndarray, dict[str, Any]]:
    """P(signal) of a BDT on the shower shapes, trained on the TRAIN split of ``reco``.

    Args:
        reco: :func:`fastreco.reco.pipeline.reconstruct` table of the whole store.
        test_events: global indices of the events to score.
    """
    from fastreco.models.bdt import BDTClassifier
    from fastreco.reco.showershape import SHOWER_SHAPE_FEATURES

    pdgs = [p for group in class_pdgs(task) for p in group]
    events = reco["event"].to_numpy(np.int64)
    train = reco[
        split_mask(events, "train", task.data.split) & np.isin(reco["true_pdg"].to_numpy(), pdgs)
    ]
    labels = _signal_label(task, train["true_pdg"].to_numpy())
    bdt = BDTClassifier(SHOWER_SHAPE_FEATURES, random_state=task.training.seed)
    bdt.fit(train, labels)
    test = reco.set_index("event").loc[test_events]
    info = {
        "features": list(SHOWER_SHAPE_FEATURES),
        "n_train": len(train),
        "n_iter": bdt.n_iter,
        "config": bdt.config.to_dict(),
    }
    return bdt.predict_score(test), info


def _binary(
    preds: list[RunPredictions],
    reco: pd.DataFrame | None,
    report: Report,
    metrics: dict[str, Any],
) -> pd.DataFrame:
    task = preds[0].task
    sig, bkg = task.classes[0], task.classes[1]
    df = preds[0].df[["event", "true_energy", "true_eta", "true_pdg"]].copy()
    classifiers: dict[str, str] = {}
    for k, p in enumerate(preds):
        col = f"score_{k}"
        df = df.merge(
            p.df[["event", f"p_{sig}"]].rename(columns={f"p_{sig}": col}), on="event", how="inner"
        )
        classifiers[p.label] = col
    if reco is not None:
        df["score_bdt"], metrics["bdt"] = train_bdt_scores(task, reco, df["event"].to_numpy())
        classifiers["BDT (shower shapes)"] = "score_bdt"
    df["label"] = _signal_label(task, df["true_pdg"].to_numpy())
    e_bins = [float(e) for e in energy_edges(df["true_energy"].to_numpy(), n_bins=6)]
    ev = evaluate_scores(df, classifiers, energy_bins=e_bins, eta_bins=ETA_BINS)
    metrics.update(
        {
            "signal": sig,
            "background": bkg,
            "n_test": {
                "signal": int(df["label"].sum()),
                "background": int((df["label"] == 0).sum()),
            },
            "energy_bins": e_bins,
            "eta_bins": list(ETA_BINS),
            **evaluation_to_dict(ev, classifiers),
        }
    )

    lines = []
    for name, curve in ev.curves.items():
        r90 = M.format_rejection(float(curve.rejection_at(0.9)))
        lines.append(
            f"- {name}: AUC = **{curve.auc:.4f}**, {bkg} rejection at 90 % {sig} efficiency = "
            f"**{r90}**"
        )
    report.add_text(
        f"Signal: {sig}, background: {bkg}; {int(df['label'].sum())} + "
        f"{int((df['label'] == 0).sum())} test events.\n\n" + "\n".join(lines)
    )
    report.add_section("ROC curves")
    report.add_figure(
        P.plot_roc_curves(ev.curves, signal_label=_tex(sig), background_label=_tex(bkg)),
        f"{bkg} rejection (1/ε_bkg) against {sig} efficiency on the same {len(df)} test events "
        "(dots: 50, 75, 90, 99 % signal efficiency). The BDT is trained on the shower shapes of "
        "the train split of the same store.",
    )
    rej = ev.rejection.pivot(index="classifier", columns="signal_efficiency", values="rejection")
    rej.columns = [f"R @ ε_sig = {100 * e:g} %" for e in rej.columns]
    rej.insert(0, "AUC", ev.rejection.groupby("classifier", sort=False)["auc"].first())
    report.add_table(
        rej.reindex(list(ev.curves)).reset_index(),
        f"Background rejection 1/ε_bkg at fixed signal efficiency ({sig} = signal; ∞: fewer "
        f"than one of the {int((df['label'] == 0).sum())} background events passes).",
    )
    eff = ev.efficiency.rename(columns={"auc": "AUC"})
    eff.columns = [
        c.replace("eff@rej", "ε_sig @ bkg rejected ") + " %" if c.startswith("eff@rej") else c
        for c in eff.columns
    ]
    report.add_table(
        eff,
        "Signal efficiency where 50/75/90/99 % of the background is rejected (the table of "
        "seed 002, M. Pierini, SOSC 2018).",
        formatters={c: _pct for c in eff.columns if c.startswith("ε_sig")},
    )
    for var, xlabel, logx in (
        ("true_energy", "true energy [GeV]", True),
        ("abs_true_eta", "|η| (true)", False),
    ):
        table = ev.binned[var]
        report.add_section(f"Per {xlabel} bin")
        if table["bin"].nunique() > 1:
            report.add_figure(
                P.plot_rejection_vs_bin(
                    table,
                    xlabel=xlabel,
                    logx=logx,
                    background_label=_tex(bkg),
                    signal_efficiencies=(0.5, 0.9),
                ),
                f"{bkg} rejection at 50 and 90 % {sig} efficiency per bin of {xlabel} (line "
                "style: classifier).",
            )
        report.add_table(
            M.pivot_rejection(table).rename(columns={"auc": "AUC"}),
            f"Per {xlabel} bin: counts, AUC and rejection R at signal efficiency ε in % "
            "(–: fewer than 20 events of a class).",
        )
    return df


def _pct(v: Any) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{100 * float(v):.1f} %"


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], title: str = "") -> Figure:
    """Confusion matrix normalised per true class (rows), with the fractions written in."""
    with P.plot_style():
        fig, axes = P.new_figure(figsize=(9, 8))
        ax = axes[0, 0]
        im = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0)
        fig.colorbar(im, ax=ax, label="fraction of the true class")
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(
                    j,
                    i,
                    f"{matrix[i, j]:.2f}",
                    ha="center",
                    va="center",
                    color="white" if matrix[i, j] > 0.5 else "black",
                    fontsize="small",
                )
        ax.set_xticks(range(len(classes)), classes)
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        P.add_label(ax, title)
    return fig


def _multiclass(preds: list[RunPredictions], report: Report, metrics: dict[str, Any]) -> None:
    task = preds[0].task
    classes = list(task.classes)
    k = len(classes)
    report.add_section("Multi-class performance")
    out: dict[str, Any] = {}
    rows = []
    for p in preds:
        y = p.df["y"].to_numpy(np.int64)
        pred = p.df["predicted"].to_numpy(np.int64)
        counts = np.zeros((k, k), dtype=np.int64)
        np.add.at(counts, (y, pred), 1)
        norm = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        aucs = {}
        for c, name in enumerate(classes):
            yc = (y == c).astype(np.int8)
            aucs[name] = M.auc_score(yc, p.df[f"p_{name}"]) if 0 < yc.sum() < len(yc) else math.nan
        acc = float((y == pred).mean())
        out[p.label] = {
            "accuracy": acc,
            "confusion_matrix": counts.tolist(),
            "confusion_matrix_normalised": norm.tolist(),
            "auc_one_vs_rest": aucs,
        }
        rows.append(
            {"model": p.label, "accuracy": acc, **{f"AUC {c} vs rest": aucs[c] for c in classes}}
        )
        report.add_figure(
            plot_confusion(norm, classes, p.label),
            f"Confusion matrix of {p.label} on {len(y)} test events (rows: true class, "
            "normalised to 1; prediction = the most probable class).",
            dpi=80,
        )
    report.add_table(pd.DataFrame(rows), "Accuracy and one-vs-rest AUC per class.")
    main = preds[0].df
    curves = {}
    for c, name in enumerate(classes):
        yc = (main["y"].to_numpy() == c).astype(np.int8)
        if 0 < yc.sum() < len(yc):
            curves[f"{name} vs rest"] = M.roc(yc, main[f"p_{name}"].to_numpy())
    if curves:
        report.add_figure(
            P.plot_roc_curves(curves, signal_label="class", background_label="rest"),
            f"One-vs-rest ROC curves of {preds[0].label}: score = the class's probability.",
        )
    e_bins = energy_edges(main["true_energy"].to_numpy(), n_bins=6)
    acc_rows = []
    for var, values, edges in (
        ("true energy [GeV]", main["true_energy"].to_numpy(), e_bins),
        ("|η|", np.abs(main["true_eta"].to_numpy()), np.asarray(ETA_BINS)),
    ):
        idx = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
        for b in range(len(edges) - 1):
            sel = idx == b
            row: dict[str, Any] = {"variable": var, "low": edges[b], "high": edges[b + 1]}
            row["n"] = int(sel.sum())
            for p in preds:
                d = (
                    p.df[sel]
                    if p is preds[0]
                    else p.df.set_index("event").reindex(main["event"][sel])
                )
                ok = d["y"].notna().to_numpy()
                row[p.label] = (
                    float((d["y"].to_numpy()[ok] == d["predicted"].to_numpy()[ok]).mean())
                    if ok.any()
                    else math.nan
                )
            acc_rows.append(row)
    report.add_table(pd.DataFrame(acc_rows), "Accuracy per true-energy and |η| bin.")
    metrics["multiclass"] = out
    metrics["accuracy_per_bin"] = acc_rows


# --------------------------------------------------------------------------------------------
# regression
# --------------------------------------------------------------------------------------------
def fit_response_correction(
    e_raw: np.ndarray, e_true: np.ndarray, n_bins: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Median ``E_true / E_raw`` in quantile bins of ``E_raw``: ``(bin medians of E_raw, corr)``.

    Apply with :func:`apply_response_correction` (log-linear interpolation, flat beyond).
    """
    ok = np.isfinite(e_raw) & np.isfinite(e_true) & (e_raw > 0.1) & (e_true > 0)
    raw, ratio = e_raw[ok], e_true[ok] / e_raw[ok]
    if len(raw) < 20:
        log.warning("only %d events to calibrate E5x5: no correction", len(raw))
        return np.array([1.0]), np.array([1.0])
    n_bins = max(1, min(n_bins, len(raw) // 50))
    edges = np.unique(np.quantile(raw, np.linspace(0, 1, n_bins + 1)))
    idx = np.clip(np.searchsorted(edges, raw, side="right") - 1, 0, max(len(edges) - 2, 0))
    centres, corr = [], []
    for b in range(max(len(edges) - 1, 1)):
        sel = idx == b
        if sel.sum() >= 5:
            centres.append(float(np.median(raw[sel])))
            corr.append(float(np.median(ratio[sel])))
    return np.asarray(centres), np.asarray(corr)


def apply_response_correction(
    e_raw: np.ndarray, centres: np.ndarray, corr: np.ndarray
) -> np.ndarray:
    x = np.log(np.maximum(e_raw, 1e-6))
    return e_raw * np.interp(x, np.log(centres), corr)


def intercalibration_response(store: Any) -> pd.Series:
    r"""Per event, the response of the crystals' fixed miscalibration to its shower,
    :math:`\kappa = \sum_i c_i d_i / \sum_i d_i` (true deposits :math:`d_i`, calibration
    constants :math:`c_i` of :func:`fastreco.sim.digitize.intercalibration_map` as the store's
    readout configuration drew them); indexed by global event number.

    The constants' spread is the residual after calibration: no estimator knows them (the
    crystal windows do not even say which crystals they hold), so it belongs to the oracle.
    """
    from fastreco.sim.config import ReadoutConfig
    from fastreco.sim.digitize import intercalibration_map

    generator = store.attrs.get("generator") or {}
    readout = ReadoutConfig(**generator["readout"]) if "readout" in generator else ReadoutConfig()
    calib = intercalibration_map(
        readout.constant_term, readout.calibration_seed, store.detector.n_cells
    )
    parts, start = [], 0
    for batch in store.iter_batches():
        dep = np.maximum(batch.hits["deposit"].astype(np.float64), 0.0)
        event = batch.hit_event_index()
        total = np.bincount(event, weights=dep, minlength=batch.n_events)
        seen = np.bincount(event, weights=dep * calib[batch.hits["cell"]], minlength=batch.n_events)
        kappa = np.divide(seen, total, out=np.ones_like(total), where=total > 0)
        parts.append(pd.Series(kappa, index=np.arange(start, start + batch.n_events)))
        start += batch.n_events
    return pd.concat(parts)


def oracle_energy(
    deposited: np.ndarray,
    e_true: np.ndarray,
    edges: np.ndarray,
    seed: int = ORACLE_SEED,
    intercalibration: np.ndarray | None = None,
) -> np.ndarray:
    """The best energy the simulated detector allows, calibrated per true-energy bin.

    The true deposited energy ``D`` of the primary (daughters included) smeared by the
    irreducible readout terms of the simulation only: the crystals' residual miscalibration
    (``intercalibration``, :func:`intercalibration_response`, multiplies ``D``; none if not
    given), photostatistics ``a sqrt(D)`` with ``a = ReadoutConfig().stochastic_term`` and the
    electronic noise of the 25 crystals of a 5x5, ``5 * ReadoutConfig().noise``; then divided by
    its mean response ``<E / E_true>`` in each bin of ``edges``. Shower leakage is known
    exactly, so no real estimator can do better.
    """
    from fastreco.sim.config import ReadoutConfig

    readout = ReadoutConfig()
    rng = np.random.default_rng(seed)
    d = np.maximum(np.asarray(deposited, dtype=np.float64), 0.0)
    kappa = 1.0 if intercalibration is None else np.asarray(intercalibration, dtype=np.float64)
    e = (
        d * kappa
        + readout.stochastic_term * np.sqrt(d) * rng.standard_normal(len(d))
        + 5.0 * readout.noise * rng.standard_normal(len(d))
    )
    out = e.copy()
    idx = np.searchsorted(edges, e_true, side="right") - 1
    for b in range(len(edges) - 1):
        sel = (idx == b) & (e_true > 0)
        if sel.any():
            out[sel] = e[sel] / np.mean(e[sel] / e_true[sel])
    return out


def oracle_table(
    deposited: np.ndarray,
    e_true: np.ndarray,
    edges: np.ndarray,
    intercalibration: np.ndarray | None = None,
    draws: int = ORACLE_DRAWS,
) -> pd.DataFrame:
    """The oracle's :func:`~fastreco.evaluate.resolution.binned_response` table, each column
    averaged over ``draws`` independent draws of its smearing (seeds ``ORACLE_SEED + k``).

    The oracle's resolution is a property of the detector: averaging removes the noise of one
    draw of the smearing, not that of the events (all draws smear the same deposits), so the
    error columns are the mean single-draw errors, not divided by ``sqrt(draws)``.
    """
    if draws < 1:
        raise InputError("must be >= 1", field="draws", value=draws)
    tables = [
        binned_response(
            oracle_energy(
                deposited, e_true, edges, seed=ORACLE_SEED + k, intercalibration=intercalibration
            ),
            e_true,
            edges,
        )
        for k in range(draws)
    ]
    mean = pd.concat(tables).groupby(level=0).mean()
    for column in ("e_low", "e_high", "e_mean", "n"):  # the same in every draw
        mean[column] = tables[0][column]
    return mean


def plot_resolution_comparison(
    tables: dict[str, pd.DataFrame], fits: dict[str, ResolutionFit | None], title: str = ""
) -> Figure:
    """σ/E (Gaussian core) against true energy for several estimators, with their fits, and
    each resolution divided by the oracle's (bottom)."""
    oracle = tables.get(ORACLE)
    with P.plot_style():
        fig, axes = P.new_figure(
            2, 1, figsize=(10, 10), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
        )
        ax, axr = axes[0, 0], axes[1, 0]
        for i, (name, t) in enumerate(tables.items()):
            color = f"C{i}"
            ax.errorbar(
                t["e_mean"],
                t["resolution"],
                yerr=t["resolution_err"],
                fmt="o",
                color=color,
                label=name,
            )
            fit = fits.get(name)
            if fit is not None:
                grid = np.geomspace(float(t["e_low"].min()), float(t["e_high"].max()), 100)
                ax.plot(grid, fit(grid), color=color, lw=1)
            if oracle is not None and name != ORACLE:
                axr.plot(t["e_mean"], t["resolution"] / oracle["resolution"], "o-", color=color)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylabel("σ / E (Gaussian core)")
        ax.legend(fontsize="x-small")
        ax.grid(True, which="both", alpha=0.3)
        P.add_label(ax, title)
        axr.axhline(1.0, color="grey", lw=1)
        axr.set_yscale("log")
        axr.set_xlabel("true energy [GeV]")
        axr.set_ylabel("σ / σ(oracle)")
        axr.grid(True, which="both", alpha=0.3)
    return fig


def plot_profile(tables: dict[str, pd.DataFrame], title: str = "") -> Figure:
    """Profile of the relative error: median (E - E_true)/E_true per bin, band ± σ_eff."""
    with P.plot_style():
        fig, axes = P.new_figure()
        ax = axes[0, 0]
        for i, (name, t) in enumerate(tables.items()):
            x = t["e_mean"].to_numpy() * (1 + 0.02 * (i - len(tables) / 2))  # offset to read
            ax.errorbar(
                x,
                t["response_median"] - 1.0,
                yerr=t["sigma_eff"],
                fmt="o",
                capsize=3,
                color=f"C{i}",
                label=name,
            )
        ax.axhline(0.0, color="grey", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("true energy [GeV]")
        ax.set_ylabel(
            r"median $(E - E_{\mathrm{true}}) / E_{\mathrm{true}}$ ± $\sigma_{\mathrm{eff}}$"
        )
        ax.legend(fontsize="x-small")
        ax.grid(True, which="both", alpha=0.3)
        P.add_label(ax, title)
    return fig


def _regression(
    preds: list[RunPredictions],
    reco: pd.DataFrame,
    reco_train: pd.DataFrame,
    truth: pd.DataFrame,
    report: Report,
    metrics: dict[str, Any],
) -> pd.DataFrame:
    """Energy resolution of every run, calibrated E5x5 and the oracle on the test events
    (``reco``, ``truth``: their classical reconstruction and truth); the E5x5 response
    correction is fitted on ``reco_train``, the training split's reconstruction."""
    task = preds[0].task
    df = preds[0].df[["event", "true_energy", "true_eta", "true_pdg"]].copy()
    for k, p in enumerate(preds):
        df = df.merge(
            p.df[["event", "e_pred"]].rename(columns={"e_pred": f"e_{k}"}), on="event", how="inner"
        )
    # classical: E5x5 with a response correction fitted on the train split
    pdgs = [p for group in class_pdgs(task) for p in group]
    train = reco_train[np.isin(reco_train["true_pdg"], pdgs)]
    centres, corr = fit_response_correction(
        train["e5x5"].to_numpy(np.float64), train["true_energy"].to_numpy(np.float64)
    )
    e5 = reco.set_index("event")["e5x5"].reindex(df["event"]).to_numpy(np.float64)
    df["e_classical"] = apply_response_correction(e5, centres, corr)
    e_true = df["true_energy"].to_numpy(np.float64)
    # about 100 test events per bin (per class ~50): 3 to 8 bins
    edges = energy_edges(e_true, n_bins=int(np.clip(len(e_true) // 100, 3, 8)))
    deposited = truth["deposited"].reindex(df["event"]).to_numpy(np.float64)
    kappa = truth["intercalibration"].reindex(df["event"]).to_numpy(np.float64)
    df["deposited"], df["intercalibration"] = deposited, kappa
    estimators = {p.label: f"e_{k}" for k, p in enumerate(preds)}
    estimators[CLASSICAL] = "e_classical"
    metrics["energy_bins"] = [float(e) for e in edges]
    metrics["classical_correction"] = {"e5x5": centres.tolist(), "correction": corr.tolist()}
    metrics["oracle"] = (
        "true deposited energy of the primary, times the response of the crystals' residual "
        "miscalibration (constant term) to its deposits, smeared by photostatistics a*sqrt(D) and "
        "the noise of 25 crystals (5 * noise per crystal), calibrated by its mean response per bin; "
        f"its per-bin resolutions are the means over {ORACLE_DRAWS} draws of the smearing"
    )
    from fastreco.sim.config import ReadoutConfig

    readout = ReadoutConfig()
    out: dict[str, Any] = {}
    for name, group in zip(task.classes, class_pdgs(task), strict=True):
        sel = np.isin(df["true_pdg"].to_numpy(), group)
        if not sel.any():
            continue
        sub = df[sel]
        tables = {
            est: binned_response(sub[col].to_numpy(), sub["true_energy"].to_numpy(), edges)
            for est, col in estimators.items()
        }
        tables[ORACLE] = oracle_table(
            sub["deposited"].to_numpy(),
            sub["true_energy"].to_numpy(),
            edges,
            intercalibration=sub["intercalibration"].to_numpy(),
        )
        fits: dict[str, ResolutionFit | None] = {}
        for est, t in tables.items():
            fits[est] = None
            if int(np.isfinite(t["resolution"]).sum()) >= 4:  # 3 parameters, ndf >= 1
                try:
                    fits[est] = fit_resolution_table(t)
                except (ValueError, RuntimeError) as exc:
                    log.warning("resolution fit of %s (%s) failed: %s", est, name, exc)
        ratio = tables[ORACLE][["e_low", "e_high", "n"]].copy()
        ratio["σ/E oracle"] = tables[ORACLE]["resolution"]
        for est in estimators:
            ratio[f"σ/E {est}"] = tables[est]["resolution"]
            ratio[f"{est} / oracle"] = tables[est]["resolution"] / tables[ORACLE]["resolution"]
            ratio[f"{est} / oracle (σ_eff)"] = (
                tables[est]["resolution_eff"] / tables[ORACLE]["resolution_eff"]
            )
        out[name] = {
            "n_events": int(sel.sum()),
            "estimators": {
                est: {
                    "fit": None if fits[est] is None else fits[est].to_dict(),
                    "table": tables[est].to_dict(orient="records"),
                }
                for est in tables
            },
            "ratio_to_oracle": ratio.to_dict(orient="records"),
        }

        report.add_section(f"Energy resolution: {name}")
        lines = []
        for _, row in ratio.iterrows():
            parts = [
                f"{est} {row[f'{est} / oracle']:.2f}×"
                for est in estimators
                if np.isfinite(row[f"{est} / oracle"])
            ]
            if parts:
                lines.append(
                    f"- {row['e_low']:.3g}–{row['e_high']:.3g} GeV ({int(row['n'])} events, "
                    f"oracle σ/E = {100 * row['σ/E oracle']:.2f} %): " + ", ".join(parts)
                )
        report.add_text(
            f"{int(sel.sum())} test {name} events. The oracle is the true deposited energy "
            "seen through the crystals' residual miscalibration (the "
            f"{100 * readout.constant_term:.1f} % intercalibration spread, weighted by the shower's "
            f"deposits) and smeared by photostatistics ({100 * readout.stochastic_term:.1f} %·√D) "
            f"and the noise of the 25 crystals of a 5x5 ({5 * readout.noise:.2f} GeV), calibrated "
            f"per bin, its resolutions averaged over {ORACLE_DRAWS} draws of that smearing: "
            "the resolution the simulated detector allows. Resolution of each estimator divided "
            "by the oracle's, bin by bin (1 = as good as the detector allows; below 1 near the "
            "ends of the spectrum: an estimator trained or calibrated on this spectrum pulls its "
            "estimates toward its middle, which narrows the response in a true-energy bin at the "
            "cost of a bias, see the response panel; the σ_eff ratios are in the table):"
            + ("\n\n" + "\n".join(lines) if lines else " no bin had enough events.")
        )
        for est, fit in fits.items():
            if fit is not None:
                report.add_text(f"- {est}: {fit}")
        if not np.isfinite(tables[ORACLE]["resolution"]).any():
            report.add_text(f"Too few {name} events per bin for resolution plots.")
            continue
        report.add_figure(
            plot_resolution_comparison(tables, fits, name),
            f"{name}: σ/E of the Gaussian core per true-energy bin (lines: a/√E ⊕ b/E ⊕ c fits) "
            "and the ratio to the oracle.",
            dpi=80,
        )
        report.add_table(ratio, f"{name}: σ/E per bin and the ratio to the oracle.")
        main = preds[0].label
        oracle_fit = fits[ORACLE]
        report.add_figure(
            P.plot_resolution(
                tables[main],
                fits[main],
                estimator_label=main,
                reference=None
                if oracle_fit is None
                else (oracle_fit.a, oracle_fit.b, oracle_fit.c),
            ),
            f"{name}: resolution and response of {main}"
            + ("" if oracle_fit is None else " (dashed: the oracle's fit)"),
            dpi=80,
        )
        report.add_figure(
            plot_profile(tables, name),
            f"{name}: profile of the relative error, median per bin with ±σ_eff bars.",
            dpi=80,
        )
        report.add_figure(
            P.plot_relative_error(sub[estimators[main]], sub["true_energy"], label=main),
            f"{name}: relative error of {main}, all energies.",
            dpi=80,
        )
    metrics["regression"] = out
    return df


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------
def evaluate_run(
    run_dir: str | os.PathLike[str],
    compare: Sequence[str | os.PathLike[str]] = (),
    bdt: bool = True,
    backend: str = "torch",
    out_dir: str | os.PathLike[str] | None = None,
    *,
    device: Any = None,
    n_saliency: int = 4,
    n_displays: int = 4,
    test_events: int = 0,
    test_seed: int = TEST_SEED,
) -> dict[str, Any]:
    """Evaluate a run (and ``compare`` runs) on its test split; write metrics.json + report.html.

    Args:
        run_dir: the run folder (its best checkpoint, else its last).
        compare: other run folders trained on the same task data, shown beside it.
        bdt: add the shower-shape BDT (two-class tasks).
        backend: ``"torch"`` or ``"onnx"`` (ONNX Runtime; ``RUN/model.onnx`` exported if missing).
        out_dir: where the outputs go (default: the run folder).
        device: torch device (default: CUDA when available).
        n_saliency, n_displays: events shown as saliency maps and as worst-mistake displays.
        test_events: regression runs: 0, the test split of the run's store; N > 0, an
            independent sample of N events of the same generator from ``test_seed``
            (:func:`independent_test_data`), for per-bin resolutions on more events than the
            test split holds. The classical E5x5 correction is still fitted on the training split.

    Returns:
        The content of ``metrics.json`` (with ``outputs``: the written files).

    Raises:
        InputError: a folder that is not a run, of an incompatible version, without a
            checkpoint, or a compared run on other data.
    """
    from fastreco.reco.pipeline import reconstruct

    run = Path(run_dir)
    task, info = load_run(run)
    best_checkpoint(run)
    for other in compare:
        load_run(other)
        best_checkpoint(other)
    test_data = None
    if test_events:
        if task.kind != "regression":
            raise InputError(
                f"an independent test sample is made for regression runs only, not {task.kind}",
                field="test_events",
                value=test_events,
            )
        test_data = independent_test_data(task, test_events, test_seed)
    preds = [predict_test(r, backend, device, test_data) for r in (run, *map(Path, compare))]
    for other in preds[1:]:
        _check_compatible(preds[0], other)
    _unique_labels(preds)
    train_data = store_dir(task, info)
    data = train_data if test_data is None else Path(test_data.dir)
    out = Path(out_dir) if out_dir is not None else run
    out.mkdir(parents=True, exist_ok=True)

    metrics: dict[str, Any] = {
        "run": str(run),
        "task": task.name,
        "kind": task.kind,
        "classes": list(task.classes),
        "backend": backend,
        "data_dir": str(data),
        "split": list(task.data.split),
        "test_sample": None
        if test_data is None
        else {"dir": test_data.dir, "events": test_data.events, "seed": test_data.seed},
        "runs": {
            p.label: {
                "run": str(p.run),
                "model": p.task.model.name,
                "representation": p.task.representation.name,
                "checkpoint": str(best_checkpoint(p.run)),
                "n_test": len(p.df),
            }
            for p in preds
        },
    }
    report = Report(
        f"fastreco evaluation: {task.name}",
        subtitle=f"{task.kind} of {', '.join(task.classes)}; "
        + ", ".join(p.label for p in preds)
        + (f"; test split of {data}" if test_data is None else f"; independent sample {data}")
        + f" ({backend})",
    )
    report.add_section("Summary")
    where = (
        f"the test split ({task.data.split[2]:.0%} of the events, chosen by a hash of the event "
        "index: the same events for every model)"
        if test_data is None
        else f"an independent sample of {test_data.events} events of the same generator (seed "
        f"{test_data.seed}, `{data}`; the same events for every model; the classical E5x5 "
        "correction fitted on the training split)"
    )
    report.add_text(
        f"Run `{run}` ({run_label(task)}, best checkpoint) evaluated on {where}"
        + (f", compared with {', '.join(f'`{p.run}`' for p in preds[1:])}" if compare else "")
        + "."
    )
    reco = None
    if task.kind == "regression" or (bdt and len(task.classes) == 2):
        reco = reconstruct(data, None, progress=False)
    if task.kind == "regression":
        from fastreco.data.store import EventStore

        store = EventStore(data)
        table = store.truth_table()
        truth = pd.DataFrame(
            {
                "deposited": table[table["parent"] == -1]
                .drop_duplicates("event")
                .set_index("event")["deposited"]
            }
        )
        truth["intercalibration"] = intercalibration_response(store)
        reco_train = reco if test_data is None else reconstruct(train_data, None, progress=False)
        ev = reco_train["event"].to_numpy(np.int64)
        reco_train = reco_train[split_mask(ev, "train", task.data.split)]
        _regression(preds, reco, reco_train, truth, report, metrics)
    elif len(task.classes) == 2:
        _binary(preds, reco if bdt else None, report, metrics)
    else:
        if bdt:
            log.info(
                "the BDT baseline is for two-class tasks: skipped for %d classes", len(task.classes)
            )
        _multiclass(preds, report, metrics)
    main = preds[0]
    if main.task.representation.name == "window" and n_saliency > 0:
        metrics["saliency"] = saliency_section(
            report, main.run, data, label=main.label, n_events=n_saliency, device=device
        )
    if n_displays > 0:
        metrics["worst_mistakes"] = worst_mistakes_section(
            report, main.task, main.df, data, label=main.label, n_displays=n_displays
        )

    report.add_section("Settings")
    settings = {
        "task": json.dumps(task.to_dict()),
        "runs": json.dumps(metrics["runs"]),
        "backend": backend,
        "versions": f"fastreco {__version__}",
    }
    report.add_table(pd.DataFrame({"setting": list(settings), "value": list(settings.values())}))
    metrics["outputs"] = {
        "metrics": str(out / "metrics.json"),
        "report": str(report.write(out / "report.html")),
    }
    metrics = _jsonable(metrics)
    tmp = out / f".metrics.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, out / "metrics.json")
    log.info("evaluated %s: %s", run, out / "report.html")
    return metrics
