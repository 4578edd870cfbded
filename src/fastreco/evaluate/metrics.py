"""Classification metrics: ROC curves, AUC, background rejection and signal efficiency, per bin.

Conventions (signal = label 1, background = label 0; a higher score means more signal-like):

* **signal efficiency** ``eps_s`` = true-positive rate of a cut ``score > t``;
* **background efficiency** ``eps_b`` = false-positive rate of the same cut;
* **background rejection** ``R = 1 / eps_b`` (the HEP convention of ROC plots in rejection);
* **rejected fraction** ``1 - eps_b``: what the seed talk (Pierini, SOSC 2018) calls "fake
  rejection" in its table "efficiency (tpr) @ fake rejection 50 / 75 / 90 / 99 %", reproduced here
  by :func:`efficiency_at_rejection`.

Working points between the ROC's vertices are linearly interpolated (the ROC of a classifier that
picks randomly between the two neighbouring cuts). With ``n_b`` background events, ``eps_b`` is
only known to ``~1/n_b``: a rejection beyond ``n_b`` is not measured, and a working point where
fewer than one background event passes gives ``R = inf`` (read "more than ``n_b``"). The binomial uncertainty ``sqrt(eps_b (1 - eps_b) / n_b)``
is propagated into ``rejection_err``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

#: Signal efficiencies at which background rejections are quoted.
DEFAULT_SIGNAL_EFFICIENCIES: tuple[float, ...] = (0.5, 0.75, 0.9, 0.99)
#: Rejected background fractions (1 - eps_b) of the seed talk's "efficiency @ fake rejection" table.
DEFAULT_REJECTED_FRACTIONS: tuple[float, ...] = (0.5, 0.75, 0.9, 0.99)
#: Fewest events of each class for a bin's metrics to be computed (otherwise NaN).
DEFAULT_MIN_EVENTS = 20


@dataclasses.dataclass(frozen=True)
class RocCurve:
    """A ROC curve and the sample it was computed on.

    Attributes:
        background_efficiency: ``eps_b`` at each threshold, shape (n_points,), non-decreasing.
        signal_efficiency: ``eps_s`` at each threshold, shape (n_points,), non-decreasing.
        thresholds: score thresholds (cut ``score >= t``), shape (n_points,), decreasing.
        auc: area under the curve (``eps_s`` against ``eps_b``), in [0, 1].
        n_signal, n_background: events of each class (weights ignored).
    """

    background_efficiency: FloatArray
    signal_efficiency: FloatArray
    thresholds: FloatArray
    auc: float
    n_signal: int
    n_background: int

    def background_efficiency_at(self, signal_efficiency: npt.ArrayLike) -> FloatArray:
        """``eps_b`` at the given signal efficiencies (interpolated), same shape as the input."""
        eff = np.asarray(signal_efficiency, dtype=np.float64)
        # For each distinct eps_s keep the best (smallest) eps_b: its first occurrence.
        tpr, first = np.unique(self.signal_efficiency, return_index=True)
        return np.interp(eff, tpr, self.background_efficiency[first])

    def rejection_at(self, signal_efficiency: npt.ArrayLike) -> FloatArray:
        """Background rejection ``1 / eps_b`` at the given signal efficiencies.

        Where fewer than one background event passes (``eps_b < 1 / n_background``, including
        the interpolation between the ROC's first vertices) the rejection is not measured: it
        is ``inf``, meaning "more than ``n_background``".
        """
        eps_b = self._measurable(self.background_efficiency_at(signal_efficiency))
        with np.errstate(divide="ignore"):
            return np.where(eps_b > 0, 1.0 / np.maximum(eps_b, 1e-300), np.inf)

    def rejection_err_at(self, signal_efficiency: npt.ArrayLike) -> FloatArray:
        """Binomial uncertainty on :meth:`rejection_at` (NaN where the rejection is inf)."""
        eps_b = self._measurable(self.background_efficiency_at(signal_efficiency))
        return _rejection_err(eps_b, self.n_background)

    def _measurable(self, eps_b: FloatArray) -> FloatArray:
        """``eps_b`` with values below one background event set to 0."""
        return np.where(eps_b * self.n_background >= 1.0 - 1e-9, eps_b, 0.0)

    def signal_efficiency_at(self, background_efficiency: npt.ArrayLike) -> FloatArray:
        """``eps_s`` at the given background efficiencies (interpolated)."""
        eps_b = np.asarray(background_efficiency, dtype=np.float64)
        # For each distinct eps_b keep the best (largest) eps_s: its last occurrence.
        fpr_rev, last_rev = np.unique(self.background_efficiency[::-1], return_index=True)
        last = len(self.background_efficiency) - 1 - last_rev
        return np.interp(eps_b, fpr_rev, self.signal_efficiency[last])


def _rejection_err(eps_b: FloatArray, n_background: int) -> FloatArray:
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma_eps = np.sqrt(eps_b * (1.0 - eps_b) / max(n_background, 1))
        return np.where(eps_b > 0, sigma_eps / np.maximum(eps_b, 1e-300) ** 2, np.nan)


def _labels_scores(
    labels: npt.ArrayLike, scores: npt.ArrayLike
) -> tuple[npt.NDArray[np.int8], FloatArray]:
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and scores {s.shape} must be 1-d of the same length")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (background) or 1 (signal)")
    return y.astype(np.int8), s


def roc(
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    sample_weight: npt.ArrayLike | None = None,
) -> RocCurve:
    """The ROC curve of ``scores`` (higher = more signal-like) for ``labels`` (1 = signal).

    Args:
        labels: shape (n,), 0 or 1.
        scores: shape (n,); non-finite scores are dropped with a warning.
        sample_weight: optional per-event weights, shape (n,).

    Raises:
        ValueError: if either class is absent.
    """
    y, s = _labels_scores(labels, scores)
    w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    finite = np.isfinite(s)
    if not finite.all():
        log.warning("dropping %d events with non-finite scores", int((~finite).sum()))
        y, s = y[finite], s[finite]
        w = None if w is None else w[finite]
    n_sig, n_bkg = int((y == 1).sum()), int((y == 0).sum())
    if n_sig == 0 or n_bkg == 0:
        raise ValueError(f"a ROC needs both classes (got {n_sig} signal, {n_bkg} background)")
    fpr, tpr, thr = roc_curve(y, s, sample_weight=w)
    auc = float(roc_auc_score(y, s, sample_weight=w))
    return RocCurve(
        background_efficiency=fpr.astype(np.float64),
        signal_efficiency=tpr.astype(np.float64),
        thresholds=thr.astype(np.float64),
        auc=auc,
        n_signal=n_sig,
        n_background=n_bkg,
    )


def auc_score(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve: the probability that a signal event scores above a background one."""
    return roc(labels, scores).auc


def rejection_at(
    curve: RocCurve, signal_efficiencies: Sequence[float] = DEFAULT_SIGNAL_EFFICIENCIES
) -> dict[float, float]:
    """Background rejection ``1 / eps_b`` at each signal efficiency (a fraction, not %)."""
    values = curve.rejection_at(np.asarray(signal_efficiencies, dtype=np.float64))
    return {float(e): float(r) for e, r in zip(signal_efficiencies, values, strict=True)}


def efficiency_at_rejection(
    curve: RocCurve, rejected_fractions: Sequence[float] = DEFAULT_REJECTED_FRACTIONS
) -> dict[float, float]:
    """Signal efficiency where a fraction ``r`` of the background is rejected (``eps_b = 1 - r``).

    The seed talk's table "efficiency (tpr) @ fake rejection 50 %, 75 %, 90 %, 99 %".
    """
    eps_b = 1.0 - np.asarray(rejected_fractions, dtype=np.float64)
    values = curve.signal_efficiency_at(eps_b)
    return {float(r): float(e) for r, e in zip(rejected_fractions, values, strict=True)}


def rejection_table(
    curves: dict[str, RocCurve],
    signal_efficiencies: Sequence[float] = DEFAULT_SIGNAL_EFFICIENCIES,
) -> pd.DataFrame:
    """Tidy table: one row per (classifier, signal efficiency).

    Columns: ``classifier, auc, n_signal, n_background, signal_efficiency,
    background_efficiency, rejection, rejection_err``.
    """
    rows = []
    effs = np.asarray(signal_efficiencies, dtype=np.float64)
    for name, curve in curves.items():
        eps_b = curve.background_efficiency_at(effs)
        rej = curve.rejection_at(effs)
        err = curve.rejection_err_at(effs)
        for e, b, r, dr in zip(effs, eps_b, rej, err, strict=True):
            rows.append(
                {
                    "classifier": name,
                    "auc": curve.auc,
                    "n_signal": curve.n_signal,
                    "n_background": curve.n_background,
                    "signal_efficiency": float(e),
                    "background_efficiency": float(b),
                    "rejection": float(r),
                    "rejection_err": float(dr),
                }
            )
    return pd.DataFrame(rows)


def efficiency_table(
    curves: dict[str, RocCurve],
    rejected_fractions: Sequence[float] = DEFAULT_REJECTED_FRACTIONS,
) -> pd.DataFrame:
    """The seed talk's table, wide: one row per classifier, one column ``eff@rej<r>`` per fraction.

    ``eff@rej90`` is the signal efficiency where 90 % of the background is rejected.
    """
    rows = []
    for name, curve in curves.items():
        row: dict[str, float | str] = {"classifier": name, "auc": curve.auc}
        for r, e in efficiency_at_rejection(curve, rejected_fractions).items():
            row[f"eff@rej{_pct(r)}"] = e
        rows.append(row)
    return pd.DataFrame(rows)


def _pct(fraction: float) -> str:
    """0.9 -> '90', 0.995 -> '99.5'."""
    return f"{100 * fraction:g}"


def binned_performance(
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    variable: npt.ArrayLike,
    bins: Sequence[float],
    *,
    signal_efficiencies: Sequence[float] = DEFAULT_SIGNAL_EFFICIENCIES,
    min_events: int = DEFAULT_MIN_EVENTS,
    variable_name: str = "x",
    classifier: str | None = None,
) -> pd.DataFrame:
    """AUC and rejection at each signal efficiency, per bin of ``variable``.

    Args:
        labels, scores, variable: shape (n,) each; 1 = signal.
        bins: bin edges, shape (n_bins + 1,), increasing; events outside are ignored.
        signal_efficiencies: working points (fractions).
        min_events: fewest events of *each* class for a bin's metrics; below it they are NaN
            (the counts are still given).
        variable_name: written in the ``variable`` column (e.g. ``"true_energy"``).
        classifier: if given, written in a ``classifier`` column (to concatenate several).

    Returns:
        A tidy DataFrame, one row per (bin, signal efficiency), columns ``[classifier,]
        variable, bin, bin_low, bin_high, n_signal, n_background, auc, signal_efficiency,
        background_efficiency, rejection, rejection_err``.
    """
    y, s = _labels_scores(labels, scores)
    x = np.asarray(variable, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"variable {x.shape} and labels {y.shape} differ in shape")
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"bins must be at least two increasing edges, got {list(edges)}")
    index = np.searchsorted(edges, x, side="right") - 1
    index[x == edges[-1]] = len(edges) - 2  # the last bin is closed on the right
    effs = np.asarray(signal_efficiencies, dtype=np.float64)
    rows = []
    for b in range(len(edges) - 1):
        sel = (index == b) & np.isfinite(s)
        n_sig = int((y[sel] == 1).sum())
        n_bkg = int((y[sel] == 0).sum())
        base = {
            "variable": variable_name,
            "bin": b,
            "bin_low": float(edges[b]),
            "bin_high": float(edges[b + 1]),
            "n_signal": n_sig,
            "n_background": n_bkg,
        }
        if classifier is not None:
            base = {"classifier": classifier, **base}
        if min(n_sig, n_bkg) < min_events:
            log.debug(
                "%s bin [%g, %g): %d signal / %d background events < %d, metrics set to NaN",
                variable_name,
                edges[b],
                edges[b + 1],
                n_sig,
                n_bkg,
                min_events,
            )
            nan = np.full_like(effs, np.nan)
            auc, eps_b, rej, err = np.nan, nan, nan, nan
        else:
            curve = roc(y[sel], s[sel])
            auc = curve.auc
            eps_b = curve.background_efficiency_at(effs)
            rej = curve.rejection_at(effs)
            err = curve.rejection_err_at(effs)
        for e, be, r, dr in zip(effs, eps_b, rej, err, strict=True):
            rows.append(
                {
                    **base,
                    "auc": auc,
                    "signal_efficiency": float(e),
                    "background_efficiency": float(be),
                    "rejection": float(r),
                    "rejection_err": float(dr),
                }
            )
    return pd.DataFrame(rows)


def pivot_rejection(table: pd.DataFrame) -> pd.DataFrame:
    """Wide view of a :func:`binned_performance` table for printing.

    One row per ``[classifier,] bin``, columns ``bin_low, bin_high, n_signal, n_background, auc``
    and ``R@<eff>`` (rejection at signal efficiency ``eff`` in %).
    """
    keys = [c for c in ("classifier", "variable", "bin") if c in table.columns]
    first = table.groupby(keys, sort=False, as_index=False).first()
    out = first[[*keys, "bin_low", "bin_high", "n_signal", "n_background", "auc"]].copy()
    for eff, grp in table.groupby("signal_efficiency", sort=True):
        col = f"R@{_pct(float(eff))}"
        out[col] = (
            grp.set_index(keys)["rejection"]
            .reindex(pd.MultiIndex.from_frame(out[keys]) if len(keys) > 1 else out[keys[0]])
            .to_numpy()
        )
    return out.drop(columns=[c for c in ("variable", "bin") if c in out.columns]).reset_index(
        drop=True
    )


def format_rejection(rejection: float | None, digits: int = 3) -> str:
    """Text of a rejection: ``"–"`` for None/NaN (not measured), ``"∞"`` for no background left."""
    if rejection is None or np.isnan(rejection):
        return "–"
    if np.isinf(rejection):
        return "∞"
    return f"{rejection:.{digits}g}"
