r"""Energy response and resolution: effective sigma, Gaussian-core fits, per-bin tables, and the
calorimeter resolution fit

.. math::

    \frac{\sigma}{E} = \frac{a}{\sqrt{E}} \oplus \frac{b}{E} \oplus c
                     = \sqrt{\frac{a^2}{E} + \frac{b^2}{E^2} + c^2},

with ``E`` in GeV: ``a`` the stochastic term [GeV^1/2], ``b`` the noise term [GeV], ``c`` the
constant term (dimensionless). The CMS ECAL barrel test beam measured a = 2.8 %, b = 12 % (i.e.
0.12 GeV), c = 0.3 % (Adzic et al., JINST 2 (2007) P04004; see :mod:`fastreco.constants`).

The *response* of an event is ``E_reco / E_true``; per energy bin the resolution is the width of
the response distribution divided by its position (Gaussian core: ``sigma / mu``; effective:
``sigma_eff / median``).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.optimize import curve_fit

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

#: Fraction of a Gaussian within +-1 sigma (erf(1/sqrt 2)).
ONE_SIGMA_FRACTION = 0.6826894921370859


# --------------------------------------------------------------------------------------------
# widths of one distribution
# --------------------------------------------------------------------------------------------
def effective_interval(
    x: npt.ArrayLike, fraction: float = ONE_SIGMA_FRACTION
) -> tuple[float, float]:
    """The smallest interval ``[lo, hi]`` containing ``fraction`` of the (finite) values of ``x``.

    Args:
        x: shape (n,); non-finite values are ignored.
        fraction: in (0, 1].

    Raises:
        ValueError: with fewer than two finite values.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    v = np.sort(np.asarray(x, dtype=np.float64).ravel())
    v = v[np.isfinite(v)]
    n = len(v)
    if n < 2:
        raise ValueError(f"need at least two finite values, got {n}")
    k = _points_inside(n, fraction)
    widths = v[k - 1 :] - v[: n - k + 1]
    i = int(np.argmin(widths))
    return float(v[i]), float(v[i + k - 1])


def _points_inside(n: int, fraction: float) -> int:
    """Values the effective interval of ``n`` values holds (at least two)."""
    return max(math.ceil(fraction * n), 2)


def effective_sigma_rows(values: np.ndarray, fraction: float = ONE_SIGMA_FRACTION) -> np.ndarray:
    """:func:`effective_sigma` of each row of an (m, n) array of finite values, shape (m,)
    (e.g. bootstrap resamples of one sample), without a Python loop over the rows."""
    v = np.sort(values, axis=1)
    n = v.shape[1]
    k = _points_inside(n, fraction)
    return 0.5 * np.min(v[:, k - 1 :] - v[:, : n - k + 1], axis=1)


def effective_sigma(x: npt.ArrayLike, fraction: float = ONE_SIGMA_FRACTION) -> float:
    """sigma_eff: half the width of the smallest interval holding 68.3 % of the values.

    Equals sigma for a Gaussian, and is robust to the non-Gaussian tails of calorimeter responses.
    Units: those of ``x``.
    """
    lo, hi = effective_interval(x, fraction)
    return 0.5 * (hi - lo)


@dataclasses.dataclass(frozen=True)
class GaussianFit:
    """Result of :func:`gaussian_core_fit`, in the units of the fitted values.

    Attributes:
        mean, sigma: fitted core position and width.
        mean_err, sigma_err: their uncertainties.
        n_core: values inside the final fit range ``mean +- n_sigma * sigma``.
        converged: whether the iteration converged (else the last iteration's values).
        method: ``"histogram"`` (curve_fit on a histogram) or ``"moments"`` (the truncated
            mean and standard deviation, used when a fit fails or there are few values).
    """

    mean: float
    sigma: float
    mean_err: float
    sigma_err: float
    n_core: int
    converged: bool
    method: str


def _gauss(x: FloatArray, amp: float, mu: float, sigma: float) -> FloatArray:
    return amp * np.exp(-0.5 * ((x - mu) / sigma) ** 2)


def _truncated_moments(v: FloatArray, lo: float, hi: float, n_sigma: float) -> tuple[float, float]:
    """Mean and sigma of the Gaussian whose +-n_sigma truncation gives ``v``'s values in range."""
    core = v[(v >= lo) & (v <= hi)]
    if len(core) < 2:
        return float(np.mean(v)), float(np.std(v))
    # Var of a Gaussian truncated at +-k sigma = sigma^2 (1 - 2k phi(k) / (2 Phi(k) - 1)).
    k = n_sigma
    phi = math.exp(-0.5 * k * k) / math.sqrt(2 * math.pi)
    inside = math.erf(k / math.sqrt(2))
    shrink = math.sqrt(max(1.0 - 2 * k * phi / inside, 1e-6))
    return float(np.mean(core)), float(np.std(core, ddof=1) / shrink)


def gaussian_core_fit(
    x: npt.ArrayLike,
    *,
    n_sigma: float = 2.0,
    max_iter: int = 20,
    tol: float = 1e-4,
    min_bins: int = 20,
    min_entries: int = 50,
) -> GaussianFit:
    """Iterative Gaussian fit of the core of a distribution within ``mean +- n_sigma * sigma``.

    Starts from the median and sigma_eff, then repeats: histogram the values in the current
    range (``max(min_bins, sqrt(n))`` bins, capped at 100), fit a Gaussian with
    :func:`scipy.optimize.curve_fit` (Poisson errors), and move the range to the fitted
    ``mean +- n_sigma * sigma``, until the mean and sigma change by less than ``tol * sigma``.
    With fewer than ``min_entries`` values, or when the fit fails, the moments of the truncated
    sample (corrected for the truncation) are used instead.

    Args:
        x: shape (n,), the values (e.g. E_reco / E_true); non-finite values are ignored.

    Raises:
        ValueError: with fewer than two finite values.
    """
    v = np.asarray(x, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if len(v) < 2:
        raise ValueError(f"need at least two finite values, got {len(v)}")
    mu = float(np.median(v))
    sigma = effective_sigma(v)
    if sigma <= 0:
        sigma = float(np.std(v)) or 1e-12
    method = "histogram" if len(v) >= min_entries else "moments"
    converged = False
    mu_err = sigma_err = math.nan
    for _ in range(max_iter):
        lo, hi = mu - n_sigma * sigma, mu + n_sigma * sigma
        new_mu = new_sigma = math.nan
        if method == "histogram":
            core = v[(v >= lo) & (v <= hi)]
            n_bins = int(min(max(min_bins, math.sqrt(len(core))), 100))
            counts, edges = np.histogram(core, bins=n_bins, range=(lo, hi))
            centres = 0.5 * (edges[1:] + edges[:-1])
            try:
                popt, pcov = curve_fit(
                    _gauss,
                    centres,
                    counts.astype(np.float64),
                    p0=(max(float(counts.max()), 1.0), mu, sigma),
                    sigma=np.sqrt(np.maximum(counts, 1.0)),
                    absolute_sigma=True,
                    maxfev=5000,
                )
                new_mu, new_sigma = float(popt[1]), abs(float(popt[2]))
                errs = np.sqrt(np.diag(pcov))
                mu_err, sigma_err = float(errs[1]), float(errs[2])
                if not (np.isfinite(new_sigma) and np.isfinite(mu_err) and new_sigma > 0):
                    raise RuntimeError("non-finite fit result")
            except (RuntimeError, ValueError) as exc:
                log.debug("Gaussian core fit failed (%s); using truncated moments", exc)
                method = "moments"
        if method == "moments":
            new_mu, new_sigma = _truncated_moments(v, lo, hi, n_sigma)
            n_core = max(int(((v >= lo) & (v <= hi)).sum()), 1)
            mu_err = new_sigma / math.sqrt(n_core)
            sigma_err = new_sigma / math.sqrt(2 * n_core)
        change = max(abs(new_mu - mu), abs(new_sigma - sigma))
        mu, sigma = new_mu, new_sigma
        if change < tol * sigma:
            converged = True
            break
    n_core = int(((v >= mu - n_sigma * sigma) & (v <= mu + n_sigma * sigma)).sum())
    if not converged:
        log.debug("Gaussian core fit did not converge in %d iterations", max_iter)
    return GaussianFit(mu, sigma, mu_err, sigma_err, n_core, converged, method)


# --------------------------------------------------------------------------------------------
# per energy bin
# --------------------------------------------------------------------------------------------
def energy_bins_from_data(
    true_energy: npt.ArrayLike, *, max_discrete: int = 30, n_bins: int = 8
) -> FloatArray:
    """Bin edges for a resolution scan [GeV].

    A particle gun at fixed energies (at most ``max_discrete`` distinct values) gets one bin per
    energy, with edges at the geometric midpoints; a continuous spectrum gets ``n_bins``
    logarithmic bins from its minimum to its maximum.
    """
    e = np.asarray(true_energy, dtype=np.float64)
    e = e[np.isfinite(e) & (e > 0)]
    if len(e) == 0:
        raise ValueError("no positive finite energies")
    values = np.unique(e)
    if len(values) <= max_discrete:
        if len(values) == 1:
            return np.array([values[0] * 0.9, values[0] * 1.1])
        mids = np.sqrt(values[1:] * values[:-1])
        first = values[0] ** 2 / mids[0]
        last = values[-1] ** 2 / mids[-1]
        return np.concatenate([[first], mids, [last]])
    return np.geomspace(values[0], values[-1] * (1 + 1e-9), n_bins + 1)


def binned_response(
    e_reco: npt.ArrayLike,
    e_true: npt.ArrayLike,
    bins: Sequence[float] | npt.ArrayLike,
    *,
    min_events: int = 30,
    n_sigma: float = 2.0,
) -> pd.DataFrame:
    """Response ``E_reco / E_true`` and relative resolution per bin of true energy.

    Args:
        e_reco, e_true: shape (n,) [GeV].
        bins: true-energy bin edges [GeV], shape (n_bins + 1,); events outside are ignored.
        min_events: bins with fewer events get NaN widths (their count is still given).
        n_sigma: range of the Gaussian-core fit.

    Returns:
        One row per bin: ``e_low, e_high, e_mean`` (mean true energy in the bin) [GeV], ``n``,
        ``response_median, response_mean``, Gaussian core ``core_mean, core_mean_err,
        core_sigma, core_sigma_err``, relative resolution ``resolution`` (= core_sigma /
        core_mean) and ``resolution_err``, and the effective ``sigma_eff`` (of the response),
        ``resolution_eff`` (= sigma_eff / median) and ``resolution_eff_err`` (Gaussian
        approximation ``resolution_eff / sqrt(2 n)``).
    """
    reco = np.asarray(e_reco, dtype=np.float64)
    true = np.asarray(e_true, dtype=np.float64)
    if reco.shape != true.shape:
        raise ValueError(f"e_reco {reco.shape} and e_true {true.shape} differ in shape")
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"bins must be at least two increasing edges, got {list(edges)}")
    ok = np.isfinite(reco) & np.isfinite(true) & (true > 0)
    rows: list[dict[str, Any]] = []
    for lo, hi in itertools.pairwise(edges):
        sel = ok & (true >= lo) & (true < hi)
        n = int(sel.sum())
        row: dict[str, Any] = {
            "e_low": float(lo),
            "e_high": float(hi),
            "e_mean": float(true[sel].mean()) if n else math.nan,
            "n": n,
        }
        keys = (
            "response_median",
            "response_mean",
            "core_mean",
            "core_mean_err",
            "core_sigma",
            "core_sigma_err",
            "resolution",
            "resolution_err",
            "sigma_eff",
            "resolution_eff",
            "resolution_eff_err",
        )
        row.update(dict.fromkeys(keys, math.nan))
        if n >= max(min_events, 2):
            r = reco[sel] / true[sel]
            fit = gaussian_core_fit(r, n_sigma=n_sigma)
            med = float(np.median(r))
            s_eff = effective_sigma(r)
            res = fit.sigma / fit.mean
            res_err = res * math.hypot(fit.sigma_err / fit.sigma, fit.mean_err / fit.mean)
            row.update(
                response_median=med,
                response_mean=float(r.mean()),
                core_mean=fit.mean,
                core_mean_err=fit.mean_err,
                core_sigma=fit.sigma,
                core_sigma_err=fit.sigma_err,
                resolution=res,
                resolution_err=res_err,
                sigma_eff=s_eff,
                resolution_eff=s_eff / med,
                resolution_eff_err=s_eff / med / math.sqrt(2 * n),
            )
        elif n:
            log.debug("energy bin [%g, %g) GeV has %d < %d events: NaN", lo, hi, n, min_events)
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# the a/sqrt(E) (+) b/E (+) c fit
# --------------------------------------------------------------------------------------------
def resolution_model(energy: npt.ArrayLike, a: float, b: float, c: float) -> FloatArray:
    """sigma/E = sqrt(a^2/E + b^2/E^2 + c^2); ``energy`` in GeV, any shape."""
    e = np.asarray(energy, dtype=np.float64)
    return np.sqrt(a * a / e + b * b / (e * e) + c * c)


@dataclasses.dataclass(frozen=True)
class ResolutionFit:
    """Fitted ``sigma/E = a/sqrt(E) (+) b/E (+) c`` (E in GeV).

    Attributes:
        a, a_err: stochastic term [GeV^1/2] (0.028 means 2.8 %/sqrt(E)).
        b, b_err: noise term [GeV] (0.12 means 12 %/E).
        c, c_err: constant term (0.003 means 0.3 %).
        covariance: 3x3 covariance of (a, b, c), after ``error_scale``.
        chi2, ndf: goodness of fit with the input uncertainties.
        error_scale: factor applied to the uncertainties, ``max(1, sqrt(chi2/ndf))``
            (the PDG scale-factor convention when the model does not describe the points).
        n_points: points fitted.
    """

    a: float
    b: float
    c: float
    a_err: float
    b_err: float
    c_err: float
    covariance: FloatArray
    chi2: float
    ndf: int
    error_scale: float
    n_points: int

    def __call__(self, energy: npt.ArrayLike) -> FloatArray:
        """The fitted sigma/E at ``energy`` [GeV]."""
        return resolution_model(energy, self.a, self.b, self.c)

    def to_dict(self) -> dict[str, float | int]:
        """JSON-able parameters (no covariance)."""
        return {
            k: getattr(self, k)
            for k in (
                "a",
                "b",
                "c",
                "a_err",
                "b_err",
                "c_err",
                "chi2",
                "ndf",
                "error_scale",
                "n_points",
            )
        }

    def __str__(self) -> str:
        return (
            f"σ/E = ({100 * self.a:.2f} ± {100 * self.a_err:.2f}) %/√E ⊕ "
            f"({100 * self.b:.1f} ± {100 * self.b_err:.1f}) %/E ⊕ "
            f"({100 * self.c:.2f} ± {100 * self.c_err:.2f}) %   "
            f"[χ²/ndf = {self.chi2:.1f}/{self.ndf}]"
        )


def fit_resolution(
    energy: npt.ArrayLike,
    resolution: npt.ArrayLike,
    resolution_err: npt.ArrayLike,
    *,
    p0: tuple[float, float, float] = (0.05, 0.1, 0.01),
) -> ResolutionFit:
    """Fit ``sigma/E = a/sqrt(E) (+) b/E (+) c`` to measured relative resolutions.

    Weighted least squares (:func:`scipy.optimize.curve_fit` with ``sigma=resolution_err``,
    ``absolute_sigma=True``) with ``a, b, c >= 0``. When ``chi2/ndf > 1`` the uncertainties are
    scaled by ``sqrt(chi2/ndf)``.

    Args:
        energy: shape (n,) [GeV], e.g. the mean true energy of each bin.
        resolution: shape (n,), sigma/E (a fraction).
        resolution_err: shape (n,), its uncertainty; non-positive or non-finite points are
            dropped.

    Raises:
        ValueError: with fewer than three usable points.
    """
    e = np.asarray(energy, dtype=np.float64)
    r = np.asarray(resolution, dtype=np.float64)
    dr = np.asarray(resolution_err, dtype=np.float64)
    ok = np.isfinite(e) & (e > 0) & np.isfinite(r) & np.isfinite(dr) & (dr > 0)
    e, r, dr = e[ok], r[ok], dr[ok]
    if len(e) < 3:
        raise ValueError(f"the resolution fit needs at least 3 points, got {len(e)}")
    popt, pcov = curve_fit(
        resolution_model,
        e,
        r,
        p0=p0,
        sigma=dr,
        absolute_sigma=True,
        bounds=([0.0, 0.0, 0.0], [np.inf, np.inf, np.inf]),
        maxfev=20000,
    )
    chi2 = float(np.sum(((r - resolution_model(e, *popt)) / dr) ** 2))
    ndf = len(e) - 3
    scale = math.sqrt(chi2 / ndf) if ndf > 0 and chi2 > ndf else 1.0
    cov = np.asarray(pcov, dtype=np.float64) * scale**2
    errs = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    fit = ResolutionFit(
        a=float(popt[0]),
        b=float(popt[1]),
        c=float(popt[2]),
        a_err=float(errs[0]),
        b_err=float(errs[1]),
        c_err=float(errs[2]),
        covariance=cov,
        chi2=chi2,
        ndf=ndf,
        error_scale=scale,
        n_points=len(e),
    )
    log.info("resolution fit: %s", fit)
    return fit


def fit_resolution_table(
    table: pd.DataFrame, *, estimator: Literal["core", "eff"] = "core"
) -> ResolutionFit:
    """:func:`fit_resolution` on a :func:`binned_response` table, at each bin's mean energy.

    ``estimator="core"`` fits the Gaussian-core resolution, ``"eff"`` the sigma_eff one.
    """
    col = "resolution" if estimator == "core" else "resolution_eff"
    return fit_resolution(table["e_mean"], table[col], table[f"{col}_err"])
