"""The classical baseline: a BDT on shower-shape variables, its evaluation and its HTML report.

:func:`train_baseline` takes the per-event table of :func:`fastreco.reco.pipeline.reconstruct`
(one row per event: shower shapes and truth), trains :class:`fastreco.models.bdt.BDTClassifier`
for a task of :data:`TASKS` (``"gamma-vs-pi0"``: photons against neutral pions), and writes to
``out_dir``:

* ``metrics.json``: AUC, background rejection at 50/75/90/99 % signal efficiency, the seed talk's
  "signal efficiency at 50/75/90/99 % background rejected", the same per true-energy and per
  |eta| bin, for the BDT and for a one-variable cut (``s1_s9`` by default) as a reference;
* ``bdt.joblib``: the trained model (:meth:`BDTClassifier.load`);
* ``test_predictions.parquet``: the test events with their labels and scores;
* ``report.html``: a self-contained report (:func:`build_report`).

The report is composable: :func:`build_report` returns a :class:`~fastreco.evaluate.report.Report`
that callers extend (``add_section``/``add_figure``/...) before writing, and takes an optional
:class:`ResolutionSummary` (from :func:`resolution_summary`), event-display images and extra
section callables.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import sklearn
from matplotlib.figure import Figure
from sklearn.model_selection import train_test_split

from fastreco import __version__
from fastreco import constants as C
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
from fastreco.models.bdt import BDTClassifier, BDTConfig
from fastreco.registry import Registry

log = logging.getLogger(__name__)

try:
    from fastreco.reco.showershape import SHOWER_SHAPE_FEATURES as _RECO_FEATURES
except ModuleNotFoundError as exc:  # only while the reconstruction package is being written
    if exc.name not in ("fastreco.reco.showershape", "fastreco.reco"):
        raise
    _RECO_FEATURES = None

#: Shower-shape variables the BDT uses: those of :mod:`fastreco.reco.showershape` when it exists,
#: else this copy of its list.
SHOWER_SHAPE_FEATURES: tuple[str, ...] = (
    tuple(_RECO_FEATURES)
    if _RECO_FEATURES
    else (
        "r9",
        "s1_s9",
        "s9ms1_s25ms1",
        "s4_s25",
        "s6_ratio",
        "s6_s9",
        "m2s1_s9",
        "m2s1_s4",
        "xcog",
        "ycog",
        "sigma_etaeta",
        "sigma_phiphi",
        "lambda_ratio",
    )
)

#: Default working points: signal efficiencies, and rejected background fractions (seed table).
SIGNAL_EFFICIENCIES = M.DEFAULT_SIGNAL_EFFICIENCIES
REJECTED_FRACTIONS = M.DEFAULT_REJECTED_FRACTIONS

BDT_NAME = "BDT"
SCORE_BDT = "score_bdt"
SCORE_REFERENCE = "score_reference"
LABEL = "label"
ABS_ETA = "abs_true_eta"


@dataclasses.dataclass(frozen=True)
class Task:
    """A binary classification of primaries by PDG id.

    Attributes:
        name: registry name.
        signal_pdg, background_pdg: PDG ids of the primary (``true_pdg``) of each class.
        signal_label, background_label: names for text (Unicode).
        signal_tex, background_tex: names for plots (matplotlib mathtext).
        description: one line for the report.
    """

    name: str
    signal_pdg: tuple[int, ...]
    background_pdg: tuple[int, ...]
    signal_label: str
    background_label: str
    signal_tex: str
    background_tex: str
    description: str


#: Baseline tasks by name (``TASKS.resolve("gamma-vs-pi0")``; case, "-" and "_" are ignored).
TASKS: Registry[Task] = Registry("baseline task")
TASKS.add(
    "gamma-vs-pi0",
    Task(
        name="gamma-vs-pi0",
        signal_pdg=(22,),
        background_pdg=(111,),
        signal_label="γ",
        background_label="π⁰",
        signal_tex=r"$\gamma$",
        background_tex=r"$\pi^0$",
        description="single photons against neutral pions (π⁰ → γγ with merged photons)",
    ),
)
TASKS.add(
    "e-vs-pi",
    Task(
        name="e-vs-pi",
        signal_pdg=(11, -11),
        background_pdg=(211, -211),
        signal_label="e±",
        background_label="π±",
        signal_tex=r"$e^\pm$",
        background_tex=r"$\pi^\pm$",
        description="electrons against charged pions (calorimeter only, no tracking)",
    ),
)


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Evaluation:
    """Metrics of several classifiers' scores on one test sample.

    Attributes:
        curves: classifier name -> ROC.
        rejection: tidy :func:`~fastreco.evaluate.metrics.rejection_table` (all classifiers).
        efficiency: the seed talk's :func:`~fastreco.evaluate.metrics.efficiency_table`.
        binned: variable name (``"true_energy"``, ``"abs_true_eta"``) -> tidy
            :func:`~fastreco.evaluate.metrics.binned_performance` table of all classifiers.
    """

    curves: dict[str, M.RocCurve]
    rejection: pd.DataFrame
    efficiency: pd.DataFrame
    binned: dict[str, pd.DataFrame]


def evaluate_scores(
    df: pd.DataFrame,
    classifiers: Mapping[str, str],
    *,
    label: str = LABEL,
    energy_bins: Sequence[float] = (1, 5, 10, 20, 50, 100),
    eta_bins: Sequence[float] = (0, 0.5, 1.0, 1.5),
    signal_efficiencies: Sequence[float] = SIGNAL_EFFICIENCIES,
    rejected_fractions: Sequence[float] = REJECTED_FRACTIONS,
    min_events: int = M.DEFAULT_MIN_EVENTS,
) -> Evaluation:
    """ROC, rejection and efficiency tables, overall and per ``true_energy`` / ``|true_eta|`` bin.

    Args:
        df: test events with a 0/1 ``label`` column, the score columns, ``true_energy`` [GeV]
            and ``true_eta``.
        classifiers: display name -> score column (higher = more signal-like).
    """
    y = df[label].to_numpy()
    curves = {name: M.roc(y, df[col].to_numpy()) for name, col in classifiers.items()}
    variables = {
        "true_energy": df["true_energy"].to_numpy(),
        ABS_ETA: np.abs(df["true_eta"].to_numpy()),
    }
    bins = {"true_energy": energy_bins, ABS_ETA: eta_bins}
    binned = {
        var: pd.concat(
            [
                M.binned_performance(
                    y,
                    df[col].to_numpy(),
                    values,
                    bins[var],
                    signal_efficiencies=signal_efficiencies,
                    min_events=min_events,
                    variable_name=var,
                    classifier=name,
                )
                for name, col in classifiers.items()
            ],
            ignore_index=True,
        )
        for var, values in variables.items()
    }
    return Evaluation(
        curves=curves,
        rejection=M.rejection_table(curves, signal_efficiencies),
        efficiency=M.efficiency_table(curves, rejected_fractions),
        binned=binned,
    )


def _key(fraction: float) -> str:
    return f"{fraction:g}"


def _jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy scalars to Python, NaN and +-inf to None (strict JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def evaluation_to_dict(
    ev: Evaluation,
    classifiers: Mapping[str, str],
    *,
    signal_efficiencies: Sequence[float] = SIGNAL_EFFICIENCIES,
    rejected_fractions: Sequence[float] = REJECTED_FRACTIONS,
) -> dict[str, Any]:
    """The ``classifiers`` and ``binned`` parts of ``metrics.json`` (keys are fractions: "0.9")."""
    out: dict[str, Any] = {}
    for name, curve in ev.curves.items():
        effs = np.asarray(signal_efficiencies, dtype=np.float64)
        out[name] = {
            "score_column": classifiers[name],
            "auc": curve.auc,
            "n_signal": curve.n_signal,
            "n_background": curve.n_background,
            "background_efficiency": dict(
                zip(map(_key, effs), curve.background_efficiency_at(effs), strict=True)
            ),
            "rejection": dict(zip(map(_key, effs), curve.rejection_at(effs), strict=True)),
            "rejection_err": dict(zip(map(_key, effs), curve.rejection_err_at(effs), strict=True)),
            "signal_efficiency_at_rejected_fraction": {
                _key(r): e for r, e in M.efficiency_at_rejection(curve, rejected_fractions).items()
            },
        }
    return {
        "classifiers": out,
        "binned": {var: table.to_dict(orient="records") for var, table in ev.binned.items()},
    }


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------
def _split(
    labels: np.ndarray, events: np.ndarray, how: str, seed: int, test_fraction: float
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    idx = np.arange(len(labels))
    if how == "parity":
        test = events % 2 == 1
        info = {"method": "parity", "rule": "test = odd event numbers", "test_fraction": 0.5}
        return idx[~test], idx[test], info
    if how == "random":
        if not 0 < test_fraction < 1:
            raise InputError("must be in (0, 1)", field="test_fraction", value=test_fraction)
        train, test = train_test_split(
            idx, test_size=test_fraction, random_state=seed, stratify=labels, shuffle=True
        )
        info = {
            "method": "random",
            "rule": "stratified seeded permutation (sklearn train_test_split)",
            "seed": seed,
            "test_fraction": test_fraction,
        }
        return np.sort(train), np.sort(test), info
    raise InputError("must be 'random' or 'parity'", field="split", value=how)


def _counts(labels: np.ndarray) -> dict[str, int]:
    return {"signal": int((labels == 1).sum()), "background": int((labels == 0).sum())}


def train_baseline(
    reco: pd.DataFrame,
    out_dir: str | os.PathLike[str],
    task: str = "gamma-vs-pi0",
    *,
    seed: int = 0,
    test_fraction: float = 0.3,
    energy_bins: Sequence[float] = (1, 5, 10, 20, 50, 100),
    eta_bins: Sequence[float] = (0, 0.5, 1.0, 1.5),
    features: Sequence[str] | None = None,
    split: Literal["random", "parity"] = "random",
    reference_feature: str = "s1_s9",
    bdt_config: BDTConfig | None = None,
    min_events: int = M.DEFAULT_MIN_EVENTS,
    resolution: ResolutionSummary | None = None,
    event_displays: Sequence[Figure | bytes | str | os.PathLike[str]] = (),
    extra_sections: Sequence[Callable[[Report], None]] | None = None,
    write_report: bool = True,
) -> dict[str, Any]:
    """Train and evaluate the BDT baseline of ``task``; write its outputs to ``out_dir``.

    Args:
        reco: one row per event, with ``event, true_pdg, true_energy`` [GeV], ``true_eta`` and
            the feature columns (the output of ``fastreco.reco.pipeline.reconstruct``).
        out_dir: created if needed; receives ``metrics.json``, ``bdt.joblib``,
            ``test_predictions.parquet`` and ``report.html``.
        task: a name in :data:`TASKS`.
        seed: seed of the split and of the BDT.
        test_fraction: share of events in the test split (``split="random"``).
        energy_bins: true-energy bin edges [GeV] for the per-bin metrics.
        eta_bins: |true eta| bin edges.
        features: BDT inputs; default :data:`SHOWER_SHAPE_FEATURES`.
        split: ``"random"`` (stratified seeded permutation) or ``"parity"`` (odd event numbers
            are the test sample, independent of the sample's size and order).
        reference_feature: the one-variable cut shown beside the BDT (its sign is chosen on
            the training split so that higher = more signal-like).
        bdt_config: hyper-parameters (its ``random_state`` is replaced by ``seed``).
        min_events: fewest events of each class for a bin's metrics.
        resolution, event_displays, extra_sections: passed to :func:`build_report`.
        write_report: set False to skip ``report.html`` (e.g. to build it later).

    Returns:
        The content of ``metrics.json`` plus ``outputs`` (paths of the written files).
    """
    t = TASKS.resolve(task, field="task")
    features = list(SHOWER_SHAPE_FEATURES if features is None else features)
    needed = ["event", "true_pdg", "true_energy", "true_eta", *features, reference_feature]
    missing = sorted({c for c in needed if c not in reco.columns})
    if missing:
        raise InputError(f"reco table lacks columns {missing}", field="reco")
    pdg = reco["true_pdg"].to_numpy()
    in_task = np.isin(pdg, t.signal_pdg + t.background_pdg)
    df = reco.loc[in_task].reset_index(drop=True).copy()
    df[LABEL] = np.isin(df["true_pdg"].to_numpy(), t.signal_pdg).astype(np.int8)
    labels = df[LABEL].to_numpy()
    if len(np.unique(labels)) < 2:
        raise InputError(
            f"the task needs both classes; found {_counts(labels)} events "
            f"(signal pdg {t.signal_pdg}, background pdg {t.background_pdg})",
            field="reco",
        )
    log.info("task %s: %s", t.name, _counts(labels))

    train_idx, test_idx, split_info = _split(
        labels, df["event"].to_numpy(np.int64), split, seed, test_fraction
    )
    train, test = df.iloc[train_idx], df.iloc[test_idx].copy()
    config = dataclasses.replace(bdt_config or BDTConfig(), random_state=seed)
    bdt = BDTClassifier(features, config).fit(train[features], train[LABEL])

    # reference: one variable, oriented on the training split, failures score lowest
    ref_train = train[reference_feature].to_numpy(np.float64)
    ok = np.isfinite(ref_train)
    sign = 1.0
    if ok.any() and len(np.unique(train[LABEL].to_numpy()[ok])) == 2:
        sign = 1.0 if M.auc_score(train[LABEL].to_numpy()[ok], ref_train[ok]) >= 0.5 else -1.0
    ref = sign * test[reference_feature].to_numpy(np.float64)
    bad = ~np.isfinite(ref)
    if bad.any():
        log.info(
            "%d test events without a finite %s: they fail every cut", bad.sum(), reference_feature
        )
        ref[bad] = (np.min(ref[~bad]) - 1.0) if (~bad).any() else 0.0
    test[SCORE_BDT] = bdt.predict_score(test[features])
    test[SCORE_REFERENCE] = ref

    classifiers = {BDT_NAME: SCORE_BDT, f"{reference_feature} cut": SCORE_REFERENCE}
    ev = evaluate_scores(
        test, classifiers, energy_bins=energy_bins, eta_bins=eta_bins, min_events=min_events
    )
    metrics: dict[str, Any] = {
        "task": t.name,
        "description": t.description,
        "signal_pdg": list(t.signal_pdg),
        "background_pdg": list(t.background_pdg),
        "features": features,
        "reference": {"feature": reference_feature, "sign": int(sign)},
        "split": {
            **split_info,
            "n_train": _counts(train[LABEL].to_numpy()),
            "n_test": _counts(test[LABEL].to_numpy()),
        },
        "bdt": {"config": config.to_dict(), "n_iter": bdt.n_iter},
        "signal_efficiencies": list(SIGNAL_EFFICIENCIES),
        "rejected_fractions": list(REJECTED_FRACTIONS),
        "energy_bins": [float(e) for e in energy_bins],
        "eta_bins": [float(e) for e in eta_bins],
        "min_events": min_events,
        **evaluation_to_dict(ev, classifiers),
        "versions": {"fastreco": __version__, "scikit-learn": sklearn.__version__},
    }
    metrics = _jsonable(metrics)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    outputs = {
        "model": str(bdt.save(out / "bdt.joblib")),
        "test_predictions": str(_write_parquet(test, out / "test_predictions.parquet")),
        "metrics": str(out / "metrics.json"),
    }
    if write_report:
        report = build_report(
            metrics,
            test,
            evaluation=ev,
            resolution=resolution,
            event_displays=event_displays,
            extra_sections=extra_sections,
        )
        outputs["report"] = str(report.write(out / "report.html"))
    metrics["outputs"] = outputs
    _write_json(metrics, out / "metrics.json")
    bdt_m = metrics["classifiers"][BDT_NAME]
    log.info(
        "%s: BDT AUC %.4f, rejection at 90%% signal efficiency %s; outputs in %s",
        t.name,
        bdt_m["auc"],
        bdt_m["rejection"].get("0.9"),
        out,
    )
    return metrics


def _write_json(obj: Any, path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _write_parquet(df: pd.DataFrame, path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------------------------
# resolution
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ResolutionSummary:
    """Response and resolution of an energy estimator, per true-energy bin, with its fit.

    Attributes:
        estimator: the reco column used as the energy (e.g. ``"e5x5"``) [GeV].
        pdg: the primaries selected.
        table: :func:`~fastreco.evaluate.resolution.binned_response` table.
        fit: ``a/sqrt(E) (+) b/E (+) c`` fit, or None if fewer than three bins were usable.
        figure: resolution and response against energy (with the fit).
        error_figure: histogram of (E_est - E_true) / E_true over all selected events.
        n_events: events selected.
        selection: the selection in words.
        reference: ``(a, b, c)`` drawn for comparison, or None.
    """

    estimator: str
    pdg: int
    table: pd.DataFrame
    fit: ResolutionFit | None
    figure: Figure
    error_figure: Figure
    n_events: int
    selection: str
    reference: tuple[float, float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (fit parameters and the table)."""
        return _jsonable(
            {
                "estimator": self.estimator,
                "pdg": self.pdg,
                "selection": self.selection,
                "n_events": self.n_events,
                "fit": None if self.fit is None else self.fit.to_dict(),
                "table": self.table.to_dict(orient="records"),
            }
        )

    def add_to_report(self, report: Report) -> None:
        """Append a "Energy resolution" section (text, fit, figures, table) to ``report``."""
        report.add_section(f"Energy resolution of {self.estimator}")
        text = (
            f"Response {self.estimator} / E_true for {self.selection} "
            f"({self.n_events} events), per true-energy bin: Gaussian core fitted within ±2σ "
            f"and the effective σ_eff (half the smallest interval holding 68.3 %)."
        )
        if self.fit is not None:
            text += (
                f" Fit of the core resolution: **{self.fit}** "
                "(a: stochastic [√GeV], b: noise [GeV], c: constant)."
            )
        if self.reference is not None:
            a, b, c = self.reference
            text += (
                f" Dashed: the readout terms put into the simulation, a = {100 * a:.1f} %, "
                f"b = {b:.3f} GeV, c = {100 * c:.1f} % (no containment or shower-fluctuation terms)."
            )
        report.add_text(text)
        report.add_figure(self.figure, f"Resolution and response of {self.estimator}")
        cols = [
            "e_low",
            "e_high",
            "e_mean",
            "n",
            "core_mean",
            "resolution",
            "resolution_err",
            "response_median",
            "resolution_eff",
        ]
        report.add_table(self.table[cols], f"{self.estimator} / E_true per true-energy bin [GeV]")
        report.add_figure(self.error_figure, f"Relative error of {self.estimator}, all energies")


def _readout_reference(estimator: str) -> tuple[float, float, float] | None:
    """(a, b, c) of the simulated readout alone for an n x n sum: b = n * noise per crystal."""
    sizes = {"e3x3": 3, "s9": 3, "e5x5": 5, "s25": 5}
    n = sizes.get(estimator)
    if n is None:
        return None
    return (C.ECAL_STOCHASTIC_TERM, n * C.ECAL_NOISE_PER_CRYSTAL, C.ECAL_CONSTANT_TERM)


def resolution_summary(
    reco_df: pd.DataFrame,
    pdg: int = 22,
    estimator: str = "e5x5",
    bins: Sequence[float] | None = None,
    *,
    unconverted_only: bool = True,
    min_events: int = 30,
    fit_estimator: Literal["core", "eff"] = "core",
    reference: tuple[float, float, float] | Literal["readout"] | None = "readout",
) -> ResolutionSummary:
    """Response and resolution of ``estimator`` / ``true_energy`` per energy bin, and the fit.

    Args:
        reco_df: per-event table with ``true_pdg``, ``true_energy`` [GeV], ``estimator`` and,
            if ``unconverted_only``, ``converted``.
        pdg: primaries to use (22: photons).
        estimator: the energy column [GeV].
        bins: true-energy edges [GeV]; default one bin per generated energy for a gun at fixed
            energies, else 8 log bins (:func:`~fastreco.evaluate.resolution.energy_bins_from_data`).
        unconverted_only: keep ``converted == 0`` (photons that did not convert in the tracker).
        min_events: fewest events for a bin to be measured.
        fit_estimator: fit the Gaussian-core (``"core"``) or sigma_eff (``"eff"``) resolution.
        reference: ``(a, b, c)`` to draw dashed; ``"readout"`` = the simulated readout terms for
            3x3 / 5x5 sums; None for none.
    """
    for col in ("true_pdg", "true_energy", estimator):
        if col not in reco_df.columns:
            raise InputError(f"reco table lacks column '{col}'", field="reco")
    sel = reco_df["true_pdg"].to_numpy() == pdg
    selection = f"primaries with PDG id {pdg}"
    if unconverted_only:
        if "converted" not in reco_df.columns:
            raise InputError("reco table lacks column 'converted'", field="reco")
        sel &= reco_df["converted"].to_numpy().astype(np.int64) == 0
        selection = f"unconverted {selection}"
    df = reco_df.loc[sel]
    e_true = df["true_energy"].to_numpy(np.float64)
    e_est = df[estimator].to_numpy(np.float64)
    if len(df) == 0:
        raise InputError(f"no events selected ({selection})", field="reco")
    edges = energy_bins_from_data(e_true) if bins is None else np.asarray(bins, dtype=np.float64)
    table = binned_response(e_est, e_true, edges, min_events=min_events)
    col = "resolution" if fit_estimator == "core" else "resolution_eff"
    fit: ResolutionFit | None = None
    if int(np.isfinite(table[col]).sum()) >= 3:
        fit = fit_resolution_table(table, estimator=fit_estimator)
    else:
        log.warning(
            "resolution fit skipped: fewer than 3 energy bins with >= %d events", min_events
        )
    ref = _readout_reference(estimator) if reference == "readout" else reference
    label = estimator.upper().replace("X", "x") if estimator.startswith("e") else estimator
    return ResolutionSummary(
        estimator=estimator,
        pdg=pdg,
        table=table,
        fit=fit,
        figure=P.plot_resolution(table, fit, estimator_label=label, reference=ref),
        error_figure=P.plot_relative_error(e_est, e_true, label=label),
        n_events=len(df),
        selection=selection,
        reference=ref,
    )


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def _fmt_pct(v: Any) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{100 * float(v):.1f} %"


def build_report(
    metrics: Mapping[str, Any],
    test_df: pd.DataFrame,
    *,
    evaluation: Evaluation | None = None,
    resolution: ResolutionSummary | None = None,
    event_displays: Sequence[Figure | bytes | str | os.PathLike[str]] = (),
    extra_sections: Sequence[Callable[[Report], None]] | None = None,
    title: str | None = None,
) -> Report:
    """The baseline's HTML report, not yet written: call ``.write(path)`` (after adding more).

    Sections: summary, ROC curves, rejection and efficiency tables, rejection per true-energy
    and |eta| bin, shower-shape distributions of the two classes, then (if given) the energy
    resolution, the event displays, and each ``extra_sections`` callable in order, then the
    settings needed to reproduce the run.

    Args:
        metrics: the dict :func:`train_baseline` returns (or ``metrics.json`` loaded).
        test_df: the test events with ``label`` and score columns (``test_predictions.parquet``).
        evaluation: precomputed :class:`Evaluation` (recomputed from ``test_df`` if None).
        resolution: a :func:`resolution_summary` result, added as a section.
        event_displays: Figures or PNG files/bytes (e.g. from
            :func:`fastreco.evaluate.display.save_event_display`).
        extra_sections: callables ``f(report)`` that add sections.
    """
    t = TASKS.resolve(str(metrics["task"]))
    classifiers = {name: c["score_column"] for name, c in metrics["classifiers"].items()}
    if evaluation is None:
        evaluation = evaluate_scores(
            test_df,
            classifiers,
            energy_bins=metrics["energy_bins"],
            eta_bins=metrics["eta_bins"],
            min_events=int(metrics.get("min_events", M.DEFAULT_MIN_EVENTS)),
        )
    features = list(metrics["features"])
    report = Report(
        title or f"fastreco baseline: {t.signal_label} vs {t.background_label}",
        subtitle=f"BDT on {len(features)} shower-shape variables; {t.description}",
    )

    # summary
    split = metrics["split"]
    bdt = metrics["classifiers"][BDT_NAME]
    ref_name = next(n for n in metrics["classifiers"] if n != BDT_NAME)
    report.add_section("Summary")

    def r90(name: str) -> str:
        return M.format_rejection(float(evaluation.curves[name].rejection_at(0.9)))

    report.add_text(
        f"Signal: {t.signal_label} (PDG {', '.join(map(str, t.signal_pdg))}); background: "
        f"{t.background_label} (PDG {', '.join(map(str, t.background_pdg))}). Training sample: {split['n_train']['signal']} signal + "
        f"{split['n_train']['background']} background events; test sample: "
        f"{split['n_test']['signal']} + {split['n_test']['background']} "
        f"(split: {split['rule']}).\n\n"
        f"- BDT: AUC = **{bdt['auc']:.4f}**, {t.background_label} rejection at 90 % "
        f"{t.signal_label} efficiency = **{r90(BDT_NAME)}** "
        f"({metrics['bdt']['n_iter']} boosting iterations)\n"
        f"- Reference, a cut on `{metrics['reference']['feature']}` alone: AUC = "
        f"{metrics['classifiers'][ref_name]['auc']:.4f}, rejection at 90 % = "
        f"{r90(ref_name)}"
    )

    # ROC and tables
    report.add_section("ROC curves")
    report.add_figure(
        P.plot_roc_curves(
            evaluation.curves, signal_label=t.signal_tex, background_label=t.background_tex
        ),
        f"{t.background_label} rejection (1/ε_bkg) against {t.signal_label} efficiency on the "
        "test sample; dots mark 50, 75, 90 and 99 % efficiency.",
    )
    rej = evaluation.rejection
    wide = rej.pivot(index="classifier", columns="signal_efficiency", values="rejection")
    wide.columns = [f"R @ ε_sig = {100 * e:g} %" for e in wide.columns]
    auc = rej.groupby("classifier", sort=False)["auc"].first()
    wide.insert(0, "AUC", auc.reindex(wide.index))
    wide = wide.reindex(list(evaluation.curves)).reset_index()
    report.add_table(
        wide,
        f"Background rejection 1/ε_bkg at fixed signal efficiency (∞: fewer than one of the "
        f"{rej['n_background'].iloc[0]} test background events passes, so the rejection is "
        "larger than that number but not measured).",
    )
    eff = evaluation.efficiency.rename(columns={"auc": "AUC"})
    eff.columns = [
        c.replace("eff@rej", "ε_sig @ bkg rejected ") + (" %" if c.startswith("eff@rej") else "")
        for c in eff.columns
    ]
    report.add_table(
        eff,
        "Signal efficiency where 50/75/90/99 % of the background is rejected "
        "(the table of the seed talk, M. Pierini, SOSC 2018).",
        formatters={c: _fmt_pct for c in eff.columns if c.startswith("ε_sig")},
    )

    # per bin
    for var, xlabel, logx in (
        ("true_energy", "true energy [GeV]", True),
        (ABS_ETA, "|η| (true)", False),
    ):
        table = evaluation.binned[var]
        report.add_section(f"Rejection per {xlabel} bin")
        report.add_figure(
            P.plot_rejection_vs_bin(
                table, xlabel=xlabel, logx=logx, background_label=t.background_tex
            ),
            f"{t.background_label} rejection at fixed {t.signal_label} efficiency per bin of "
            f"{xlabel} (solid: BDT; dashed: {ref_name}). Bins with fewer than "
            f"{metrics.get('min_events', M.DEFAULT_MIN_EVENTS)} events of a class are left out.",
        )
        report.add_table(
            M.pivot_rejection(table).rename(columns={"auc": "AUC"}),
            f"Per {xlabel} bin: counts, AUC and rejection R at signal efficiency ε (–: too few "
            "events; ∞: fewer than one background event of the bin passes).",
        )

    # shower shapes
    report.add_section("Shower-shape variables")
    sig = test_df[test_df[LABEL] == 1]
    bkg = test_df[test_df[LABEL] == 0]
    report.add_figure(
        P.plot_feature_distributions(
            sig, bkg, features, signal_label=t.signal_tex, background_label=t.background_tex
        ),
        f"The BDT's inputs on the test sample, {t.signal_label} against {t.background_label}, "
        "each normalised to unit area.",
        dpi=80,
    )

    if resolution is not None:
        resolution.add_to_report(report)
    if event_displays:
        report.add_section("Event displays")
        for k, disp in enumerate(event_displays):
            report.add_figure(
                disp,
                f"Event display {k + 1}: crystal energies around the seed "
                "(log scale) with the truth impact points; right: the whole barrel.",
            )
    for section in extra_sections or ():
        section(report)

    report.add_section("Settings")
    settings = {
        "task": metrics["task"],
        "features": ", ".join(features),
        "reference": f"{metrics['reference']['feature']} (sign {metrics['reference']['sign']:+d})",
        "split": json.dumps({k: v for k, v in split.items() if k not in ("n_train", "n_test")}),
        "BDT": json.dumps(metrics["bdt"]["config"]),
        "energy bins [GeV]": str(metrics["energy_bins"]),
        "|η| bins": str(metrics["eta_bins"]),
        "versions": json.dumps(metrics.get("versions", {})),
    }
    report.add_table(pd.DataFrame({"setting": list(settings), "value": list(settings.values())}))
    return report
