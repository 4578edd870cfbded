"""Classical energy and position baselines for HGCAL single particles.

* :class:`CalibratedEnergySum`: hits weighted by their layer's dE/dx (MIP -> GeV, the sampling
  weights of :attr:`HgcalEndcap.mip_weight`: energy lost in the whole slab per MIP in the
  silicon), summed per section (CE-E front, CE-E back, CE-H), then a per-section linear
  calibration ``E = sum_s c_s E_s`` fitted by least squares on training events (relative
  residuals, i.e. each event weighted by 1/E_true^2).
* :func:`barycenter`: energy-weighted barycentre, linear or logarithmic weights
  ``w_i = max(0, W0 + ln(E_i / E_event))`` (Awes et al., NIM A 311 (1992) 130), in cm.
* :class:`SoftwareCompensation`: CALICE-style local software compensation (CALICE
  Collaboration, "Hadronic energy resolution of a highly granular scintillator-steel hadron
  calorimeter using software compensation techniques", JINST 7 (2012) P09017): each hit's
  energy is weighted by a function of its energy density rho_i (GeV per cm^3 of its sampling
  slab), binned, with weights depending on the uncompensated energy E0,
  ``E_SC = sum_j (alpha_j + beta_j e + gamma_j e^2) S_j`` with ``S_j`` the energy of the hits
  of density bin j and ``e = E0 / 100 GeV``. Dense hits come mostly from the electromagnetic
  (pi0) part of a hadron shower, sparse ones from the non-EM part seen with h/e < 1: weighting
  the sparse hits up undoes the event-by-event fluctuation of the EM fraction. As in CALICE the
  fit minimizes sum (E_SC - E_true)^2 / E_true over training events; the model is linear in
  (alpha, beta, gamma), so that is one weighted least-squares solve.

All take an optional ``radius`` [cm]: only hits within it of the shower axis (the line from the
origin through the energy-weighted centre of the hits around the most energetic hit, as for
the grid windows, :func:`fastreco.data.hexgrid.shower_axis_kernel`) count, which keeps pileup
away; ``None`` uses every hit (events without pileup).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from fastreco import constants as C
from fastreco.data.hexgrid import shower_axis_kernel
from fastreco.data.store import EventBatch
from fastreco.errors import InputError
from fastreco.geometry.hgcal import HgcalEndcap

FloatArray = npt.NDArray[np.float64]
SECTIONS = ("em_front", "em_back", "had")
#: Scale of the energy dependence of the compensation weights [GeV].
_SC_ENERGY_SCALE = 100.0


# --------------------------------------------------------------------------------------------
# per-hit quantities
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Hits:
    """The hits of a batch with what the baselines need (all arrays of shape (n_hits,)).

    Attributes:
        event: event index in the batch; layer: detector layer.
        energy: calibrated energy [GeV] (MIP x dE/dx weight of the layer).
        x, y, z: cell position [cm]; density: energy / (cell area x layer pitch) [GeV/cm^3].
        n_events: events in the batch.
    """

    event: np.ndarray
    layer: np.ndarray
    energy: FloatArray
    x: FloatArray
    y: FloatArray
    z: FloatArray
    density: FloatArray
    n_events: int

    @classmethod
    def from_batch(
        cls, batch: EventBatch, geometry: HgcalEndcap, radius: float | None = None
    ) -> Hits:
        cell = batch.hits["cell"]
        pos = geometry.cell_position(cell)
        layer = pos["layer"].astype(np.int64)
        energy = batch.hits["energy"].astype(np.float64) * geometry.mip_weight[layer]
        volume = geometry.cell_area(cell) * geometry.layer_pitch[layer]
        event = batch.hit_event_index()
        keep = np.ones(len(cell), bool)
        if radius is not None:
            # projection onto the front face along the line from the origin
            scale = geometry.z_front / pos["z"]
            a, b = pos["x"] * scale, pos["y"] * scale
            offsets = (batch.offsets - batch.offsets[0]).astype(np.int64)
            axis = shower_axis_kernel(offsets, energy, a, b, radius)
            keep = np.hypot(a - axis[event, 0], b - axis[event, 1]) <= radius
        return cls(
            event=event[keep],
            layer=layer[keep],
            energy=energy[keep],
            x=pos["x"][keep],
            y=pos["y"][keep],
            z=pos["z"][keep],
            density=energy[keep] / volume[keep],
            n_events=batch.n_events,
        )

    def event_sum(self, values: npt.ArrayLike) -> FloatArray:
        return np.bincount(self.event, weights=values, minlength=self.n_events)


def _as_hits(data: EventBatch | Hits, geometry: HgcalEndcap | None, radius: float | None) -> Hits:
    if isinstance(data, Hits):
        return data
    return Hits.from_batch(data, geometry or HgcalEndcap(), radius)


def _weighted_lstsq(design: FloatArray, target: FloatArray, weight: FloatArray) -> FloatArray:
    """argmin_p sum weight (design @ p - target)^2, shape (n_params,)."""
    sw = np.sqrt(weight)[:, None]
    coef, *_ = np.linalg.lstsq(design * sw, target * sw[:, 0], rcond=None)
    return coef


def _check_fit_input(n_events: int, true_energy: npt.ArrayLike) -> FloatArray:
    e = np.asarray(true_energy, dtype=np.float64)
    if e.shape != (n_events,):
        raise InputError(
            f"need one true energy per event ({n_events})", field="true_energy", value=e.shape
        )
    if not np.all(np.isfinite(e) & (e > 0)):
        raise InputError("true energies must be finite and > 0 GeV", field="true_energy")
    return e


# --------------------------------------------------------------------------------------------
# (i) calibrated energy sum
# --------------------------------------------------------------------------------------------
class CalibratedEnergySum:
    """Per-section calibrated sum of dE/dx-weighted hit energies (module docstring).

    Args:
        geometry: the detector (default :class:`HgcalEndcap`).
        em_front_layers: CE-E layers in the front section (default half of the CE-E).
        radius: hits within this distance [cm, on the front face] of the shower axis; None: all.
    """

    def __init__(
        self,
        geometry: HgcalEndcap | None = None,
        em_front_layers: int | None = None,
        radius: float | None = None,
    ) -> None:
        self.geometry = geometry or HgcalEndcap()
        n_em = self.geometry.n_em_layers
        self.em_front_layers = n_em // 2 if em_front_layers is None else int(em_front_layers)
        if not 0 < self.em_front_layers <= n_em:
            raise InputError(
                f"must lie in 1..{n_em}", field="em_front_layers", value=em_front_layers
            )
        self.radius = radius
        #: calibration constant of each section (1 = the dE/dx weights alone)
        self.coef = np.ones(len(SECTIONS))

    def section_of_layer(self, layer: npt.ArrayLike) -> np.ndarray:
        """0 (CE-E front), 1 (CE-E back) or 2 (CE-H) for each layer."""
        layer = np.asarray(layer)
        return np.where(
            layer < self.em_front_layers, 0, np.where(layer < self.geometry.n_em_layers, 1, 2)
        )

    def hits(self, batch: EventBatch) -> Hits:
        return Hits.from_batch(batch, self.geometry, self.radius)

    def section_energies(self, data: EventBatch | Hits) -> FloatArray:
        """dE/dx-weighted energy [GeV] of each section, shape (n_events, 3)."""
        hits = _as_hits(data, self.geometry, self.radius)
        section = self.section_of_layer(hits.layer)
        key = hits.event * len(SECTIONS) + section
        out = np.bincount(key, weights=hits.energy, minlength=hits.n_events * len(SECTIONS))
        return out.reshape(hits.n_events, len(SECTIONS))

    def fit(self, data: EventBatch | Hits, true_energy: npt.ArrayLike) -> CalibratedEnergySum:
        """Fit the section constants on training events (least squares of relative residuals).

        A section with no energy in any training event keeps its constant 1.
        """
        sections = self.section_energies(data)
        e = _check_fit_input(len(sections), true_energy)
        used = sections.sum(axis=0) > 0
        coef = np.ones(len(SECTIONS))
        coef[used] = _weighted_lstsq(sections[:, used], e, 1.0 / e**2)
        self.coef = coef
        return self

    def predict(self, data: EventBatch | Hits) -> FloatArray:
        """Calibrated energy [GeV] of each event, shape (n_events,)."""
        return self.section_energies(data) @ self.coef

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "calibrated_sum",
            "geometry": self.geometry.to_dict(),
            "em_front_layers": self.em_front_layers,
            "radius": self.radius,
            "coef": self.coef.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CalibratedEnergySum:
        out = cls(HgcalEndcap.from_dict(d["geometry"]), d["em_front_layers"], d["radius"])
        out.coef = np.asarray(d["coef"], dtype=np.float64)
        return out


# --------------------------------------------------------------------------------------------
# (ii) barycentre
# --------------------------------------------------------------------------------------------
def barycenter(
    data: EventBatch | Hits,
    geometry: HgcalEndcap | None = None,
    *,
    method: Literal["linear", "log"] = "linear",
    w0: float = 4.0,
    radius: float | None = None,
) -> FloatArray:
    """Energy-weighted barycentre (x, y, z) [cm] of each event, shape (n_events, 3).

    ``linear``: weights E_i; ``log``: weights max(0, w0 + ln(E_i / E_event)), which counts
    only hits above exp(-w0) of the event's energy and flattens the core's dominance (events
    without such a hit fall back to linear weights). NaN for events without hits.
    """
    hits = _as_hits(data, geometry, radius)
    if method == "linear":
        w = hits.energy
    elif method == "log":
        total = hits.event_sum(hits.energy)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = hits.energy / total[hits.event]
            w = np.maximum(0.0, w0 + np.log(np.where(ratio > 0, ratio, 1e-300)))
    else:
        raise InputError("choose linear or log", field="method", value=method)
    norm = hits.event_sum(w)
    if method == "log":
        # events with no hit above exp(-w0) of their energy (spread hadron showers): linear
        flat = (norm <= 0)[hits.event]
        w = np.where(flat, hits.energy, w)
        norm = hits.event_sum(w)
    out = np.full((hits.n_events, 3), np.nan)
    ok = norm > 0
    for j, coord in enumerate((hits.x, hits.y, hits.z)):
        out[ok, j] = hits.event_sum(w * coord)[ok] / norm[ok]
    return out


# --------------------------------------------------------------------------------------------
# (iii) software compensation
# --------------------------------------------------------------------------------------------
class SoftwareCompensation:
    """CALICE-style local software compensation for hadrons (module docstring).

    Args:
        geometry: the detector.
        n_bins: hit-density bins (edges at quantiles of the training hits' log density).
        energy_order: polynomial order of the weights' energy dependence (0, 1 or 2).
        radius: hits within this distance [cm] of the shower axis; None: all.
        ridge: relative Tikhonov regularization of the fit (stabilizes sparse bins).
    """

    def __init__(
        self,
        geometry: HgcalEndcap | None = None,
        n_bins: int = 8,
        energy_order: int = 2,
        radius: float | None = None,
        ridge: float = 1e-6,
    ) -> None:
        self.geometry = geometry or HgcalEndcap()
        if not (isinstance(n_bins, int) and n_bins >= 1):
            raise InputError("must be an integer >= 1", field="n_bins", value=n_bins)
        if energy_order not in (0, 1, 2):
            raise InputError("must be 0, 1 or 2", field="energy_order", value=energy_order)
        self.n_bins = n_bins
        self.energy_order = energy_order
        self.radius = radius
        self.ridge = ridge
        self.edges = np.zeros(0)  # inner edges in ln(GeV/cm^3), n_bins - 1 of them
        self.scale0 = 1.0  # E0 = scale0 x plain dE/dx-weighted sum
        self.coef = np.zeros((n_bins, energy_order + 1))
        self.coef[:, 0] = 1.0

    def hits(self, batch: EventBatch) -> Hits:
        return Hits.from_batch(batch, self.geometry, self.radius)

    def _bin_sums(self, hits: Hits) -> FloatArray:
        """Energy [GeV] of the hits of each density bin, shape (n_events, n_bins)."""
        j = np.searchsorted(self.edges, np.log(np.maximum(hits.density, 1e-300)))
        key = hits.event * self.n_bins + j
        out = np.bincount(key, weights=hits.energy, minlength=hits.n_events * self.n_bins)
        return out.reshape(hits.n_events, self.n_bins)

    def _design(self, hits: Hits) -> FloatArray:
        sums = self._bin_sums(hits)
        e = self.scale0 * sums.sum(axis=1) / _SC_ENERGY_SCALE
        return np.concatenate(
            [sums * e[:, None] ** p for p in range(self.energy_order + 1)], axis=1
        )

    def fit(self, data: EventBatch | Hits, true_energy: npt.ArrayLike) -> SoftwareCompensation:
        """Fit bin edges, the uncompensated scale and the weights on training events."""
        hits = _as_hits(data, self.geometry, self.radius)
        e = _check_fit_input(hits.n_events, true_energy)
        log_rho = np.log(hits.density[hits.density > 0])
        if len(log_rho) < self.n_bins:
            raise InputError("too few hits to fit", field="n_bins", value=self.n_bins)
        # energy-weighted quantiles, so each bin holds a similar share of the energy
        order = np.argsort(log_rho)
        cum = np.cumsum(hits.energy[hits.density > 0][order])
        targets = cum[-1] * np.arange(1, self.n_bins) / self.n_bins
        self.edges = log_rho[order][np.searchsorted(cum, targets)]
        plain = hits.event_sum(hits.energy)
        # the plain scale minimizing sum (s E_plain - E)^2 / E
        self.scale0 = float(np.sum(plain) / np.sum(plain**2 / e)) if plain.any() else 1.0
        design = self._design(hits)
        w = 1.0 / e  # CALICE: chi2 = sum (E_SC - E)^2 / E
        sw = np.sqrt(w)[:, None]
        a = design * sw
        lam = self.ridge * np.trace(a.T @ a) / a.shape[1]
        # ridge pulls the weights towards a plain calibration (alpha = scale0, the rest 0)
        prior = np.zeros(design.shape[1])
        prior[: self.n_bins] = self.scale0
        lhs = a.T @ a + lam * np.eye(a.shape[1])
        rhs = a.T @ (e * sw[:, 0]) + lam * prior
        self.coef = np.linalg.solve(lhs, rhs).reshape(self.energy_order + 1, self.n_bins).T
        return self

    def weights(self, energy0: npt.ArrayLike) -> FloatArray:
        """Hit weight of each density bin at uncompensated energy E0 [GeV], (len(E0), n_bins)."""
        e = np.atleast_1d(np.asarray(energy0, dtype=np.float64)) / _SC_ENERGY_SCALE
        powers = np.stack([e**p for p in range(self.energy_order + 1)], axis=1)
        return powers @ self.coef.T

    def predict(self, data: EventBatch | Hits) -> FloatArray:
        """Compensated energy [GeV] of each event, shape (n_events,)."""
        hits = _as_hits(data, self.geometry, self.radius)
        coef_flat = self.coef.T.reshape(-1)
        return self._design(hits) @ coef_flat

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "software_compensation",
            "geometry": self.geometry.to_dict(),
            "n_bins": self.n_bins,
            "energy_order": self.energy_order,
            "radius": self.radius,
            "ridge": self.ridge,
            "edges": self.edges.tolist(),
            "scale0": self.scale0,
            "coef": self.coef.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SoftwareCompensation:
        out = cls(
            HgcalEndcap.from_dict(d["geometry"]),
            d["n_bins"],
            d["energy_order"],
            d["radius"],
            d["ridge"],
        )
        out.edges = np.asarray(d["edges"], dtype=np.float64)
        out.scale0 = float(d["scale0"])
        out.coef = np.asarray(d["coef"], dtype=np.float64)
        return out


def expected_sampling_sigma(
    data: EventBatch | Hits, geometry: HgcalEndcap | None = None
) -> FloatArray:
    """Energy spread [GeV] the simulation's sampling fluctuations alone give each event's
    dE/dx-weighted sum: the signal N_i [MIP] of a hit fluctuates with variance k N_i
    (k = ``HGCAL_SAMPLING_VARIANCE_MIP``), so var(sum w_i N_i) = k sum w_i E_i (w_i: dE/dx
    weight [GeV/MIP], E_i = w_i N_i). Shape (n_events,)."""
    geometry = geometry or HgcalEndcap()
    hits = _as_hits(data, geometry, None)
    w = geometry.mip_weight[hits.layer]
    return np.sqrt(C.HGCAL_SAMPLING_VARIANCE_MIP * hits.event_sum(w * hits.energy))


def relative_resolution(pred: npt.ArrayLike, true: npt.ArrayLike) -> tuple[float, float]:
    """(mean, rms) of (pred - true) / true."""
    r = (np.asarray(pred, np.float64) - np.asarray(true, np.float64)) / np.asarray(true)
    return float(np.mean(r)), float(np.std(r))


__all__ = [
    "SECTIONS",
    "CalibratedEnergySum",
    "Hits",
    "SoftwareCompensation",
    "barycenter",
    "expected_sampling_sigma",
    "relative_resolution",
]
