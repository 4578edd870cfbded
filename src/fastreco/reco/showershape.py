r"""Shower-shape variables of the seed talk (seed 000, "Shower Shape variables").

Every variable is computed from the 5x5 crystal matrix centred on the seed (the event's
highest-energy crystal), vectorized over events: input ``(n_events, 5, 5)`` windows of
:func:`fastreco.data.windows.crystal_windows` (axis 1 = ieta, axis 2 = iphi), output one
``(n_events,)`` array per variable. Energies are in GeV.

Energy sums and the talk's ratios (``p_i`` is the talk's name, in brackets the column):

* ``S1`` = the seed crystal; ``S9`` = the 3x3 sum; ``S25`` = the 5x5 sum (= E3x3, E5x5).
* ``S4`` = the largest of the four 2x2 sums that contain the seed.
* ``S6`` = the largest of the four 6-crystal (2x3 or 3x2) blocks of the 3x3 that contain the
  seed, i.e. ``S9`` minus its smallest outer row or column.
* ``M2`` = the second-highest crystal of the 3x3, i.e. the highest of the seed's 8 neighbours
  (``S1 + M2`` is the energy of the two leading crystals; it always fits in one 2x2, so
  ``(M2 + S1) / S4 <= 1`` for non-negative energies).
* p4 = S1/S9 (``s1_s9``), p5 = (S9 - S1)/(S25 - S1) (``s9ms1_s25ms1``), p6 = S4/S25
  (``s4_s25``), p9 = S6/S9 (``s6_s9``), p11 = (M2 + S1)/S9 (``m2s1_s9``),
  p12 = (M2 + S1)/S4 (``m2s1_s4``).
* p8 = the **S6-ratio** (``s6_ratio``), which the talk does not define. Here: the 6-crystal
  block on the *opposite* side of the seed from ``S6`` (same orientation) divided by ``S6``,
  ``S6_opp / S6``. It is 1 for a shower symmetric about the seed and falls when energy leaks
  to one side (a second photon, an off-centre impact), a measure of the 3x3 asymmetry that
  p9 = S6/S9 does not carry.

Centre of gravity (p1 = ``xcog``, p7 = ``ycog``): the talk writes ``|sum_i E_i x_i^rel|`` over
the 25 crystals; here it is normalised by ``S25``, ``|sum_i E_i x_i^rel| / S25``, so it is the
distance of the energy-weighted centroid from the seed centre in crystal units (0..2).
``x^rel`` is the ieta offset from the seed and ``y^rel`` the iphi offset (-2..2).

Covariances (p2 = ``sigma_etaeta``, p3 = ``sigma_phiphi``, p10 = ``lambda_ratio``): with log
weights ``w_c = max(0, w0 + ln(E_c / S25))`` (``w0`` = 4.7, CMS's value; crystals with
``E_c <= 0`` weigh 0) over the 25 crystals, ``x, y`` = eta and phi of the crystal centres
(geometry centres; phi measured from the seed's phi, so the 0/2 pi wrap does not matter),

    sigma_xy = sum_c w_c (x_c - <x>)(y_c - <y>) / sum_c w_c,  <x> = sum_c w_c x_c / sum_c w_c.

This is the talk's formula: a *variance* (rad^2-like), not CMS's ``sigma_ietaieta`` (its square
root). The columns hold the talk's scaled values ``sigma_etaeta = sigma_{eta eta} / 0.0004`` and
``sigma_phiphi = sigma_{phi phi} / 0.001``, O(0.1-1) for photons (one crystal is 0.0174 wide, so a
variance of ~(0.01)^2 gives ~0.25). ``lambda_ratio = lambda_- / lambda_+``, the eigenvalues of the
unscaled 2x2 covariance ``[[s_ee, s_ep], [s_ep, s_pp]]``, in [0, 1]: 1 for a round shower, near 0
for an elongated one (two photons).

``r9 = E3x3 / E_cluster``, with ``E_cluster`` the connected cluster of
:func:`fastreco.reco.clustering.connected_clusters` (this toolkit has no superclustering; CMS
divides by the supercluster's raw energy). It can exceed 1 slightly: the 3x3 includes
below-threshold and negative noise crystals that the cluster leaves out.

Guards: a ratio whose denominator is zero or negative (possible only through negative noise
values) is 0, never NaN; an event without hits has every variable 0 and ``seed_cell`` -1;
``lambda_ratio`` is 0 when ``lambda_+ = 0`` (a single crystal carries all the weight).
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

from fastreco.geometry.ecal_barrel import EcalBarrel

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

#: CMS's log-weight offset w0 of the position and covariance weights.
W0 = 4.7
#: The talk's scales of sigma_etaeta and sigma_phiphi.
SIGMA_ETAETA_SCALE = 0.0004
SIGMA_PHIPHI_SCALE = 0.001

#: Every per-event column of the reconstruction table (besides truth and ``event``), in order.
RECO_COLUMNS: tuple[str, ...] = (
    "s1",
    "s4",
    "s6",
    "s9",
    "s25",
    "m2",
    "e3x3",
    "e5x5",
    "e_cluster",
    "n_crystals",
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
    "seed_cell",
    "seed_eta",
    "seed_phi",
)

#: The BDT's inputs: the dimensionless shape variables (energy ratios, centroid, covariances),
#: i.e. the talk's p1..p12 plus R9. Absolute energies and the seed position are left out.
SHOWER_SHAPE_FEATURES: tuple[str, ...] = (
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

__all__ = [
    "RECO_COLUMNS",
    "SHOWER_SHAPE_FEATURES",
    "SIGMA_ETAETA_SCALE",
    "SIGMA_PHIPHI_SCALE",
    "W0",
    "safe_ratio",
    "shower_shapes",
]


def safe_ratio(num: npt.ArrayLike, den: npt.ArrayLike) -> FloatArray:
    """``num / den`` where ``den > 0``, else 0 (no NaN, no inf)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    ok = den > 0
    return np.where(ok, num / np.where(ok, den, 1.0), 0.0)


def shower_shapes(
    windows: npt.ArrayLike,
    seed_cell: npt.ArrayLike,
    geometry: EcalBarrel,
    *,
    e_cluster: npt.ArrayLike | None = None,
    w0: float = W0,
) -> dict[str, np.ndarray]:
    """All shower-shape variables from seed-centred 5x5 windows.

    Args:
        windows: ``(n_events, 5, 5)`` energies [GeV] centred on the seed (axis 1 = ieta,
            axis 2 = iphi); larger odd windows are cut to their central 5x5.
        seed_cell: ``(n_events,)`` flat cell id of the seed, -1 for an event without hits.
        geometry: the barrel (crystal eta/phi centres).
        e_cluster: ``(n_events,)`` connected-cluster energy [GeV] for ``r9``; without it
            ``r9`` is left out.
        w0: log-weight offset of the covariance weights.

    Returns:
        Column name -> ``(n_events,)`` array: every name of :data:`RECO_COLUMNS` except
        ``e_cluster`` and ``n_crystals`` (and ``r9`` without ``e_cluster``); float64, except
        ``seed_cell`` (int64). See the module docstring for the definitions.
    """
    w = np.asarray(windows, dtype=np.float64)
    if w.ndim != 3 or w.shape[1] != w.shape[2] or w.shape[1] < 5 or w.shape[1] % 2 == 0:
        raise ValueError(f"windows must be (n, s, s) with odd s >= 5, got {w.shape}")
    a = (w.shape[1] - 5) // 2
    w = w[:, a : a + 5, a : a + 5]  # (n, 5, 5)
    seed_cell = np.asarray(seed_cell, dtype=np.int64)
    has_seed = seed_cell >= 0
    w = np.where(has_seed[:, None, None], w, 0.0)

    m = w[:, 1:4, 1:4]  # (n, 3, 3)
    s1 = w[:, 2, 2]
    s9 = m.sum(axis=(1, 2))
    s25 = w.sum(axis=(1, 2))
    # the four 2x2 blocks containing the seed (centre of the 3x3)
    s4 = np.max(
        np.stack(
            [
                m[:, 0:2, 0:2].sum(axis=(1, 2)),
                m[:, 0:2, 1:3].sum(axis=(1, 2)),
                m[:, 1:3, 0:2].sum(axis=(1, 2)),
                m[:, 1:3, 1:3].sum(axis=(1, 2)),
            ]
        ),
        axis=0,
    )
    # 6-crystal blocks: the 3x3 minus one outer line (eta rows 0/2, phi columns 0/2)
    lines = np.stack([m[:, 0, :].sum(1), m[:, 2, :].sum(1), m[:, :, 0].sum(1), m[:, :, 2].sum(1)])
    blocks = s9[None, :] - lines  # (4, n): [no row 0, no row 2, no col 0, no col 2]
    best = np.argmin(lines, axis=0)  # the block dropping the smallest line is S6
    cols = np.arange(len(s1))
    s6 = blocks[best, cols]
    s6_opposite = blocks[best ^ 1, cols]  # 0 <-> 1, 2 <-> 3: same orientation, other side
    neighbours = m.reshape(-1, 9)[:, [0, 1, 2, 3, 5, 6, 7, 8]]
    m2 = neighbours.max(axis=1)

    # centroid in crystal units relative to the seed, normalised by S25
    off = np.arange(-2, 3, dtype=np.float64)
    xcog = np.abs(safe_ratio((w.sum(axis=2) * off).sum(axis=1), s25))
    ycog = np.abs(safe_ratio((w.sum(axis=1) * off).sum(axis=1), s25))

    # log-weighted covariance in (eta, phi); positions relative to the seed's crystal centre
    ieta = np.where(has_seed, seed_cell // geometry.n_phi, 0)
    iphi = np.where(has_seed, seed_cell % geometry.n_phi, 0)
    seed_eta = np.where(has_seed, geometry.eta_center(ieta), 0.0)
    seed_phi = np.where(has_seed, geometry.phi_center(iphi), 0.0)
    d_eta = geometry.eta_center(ieta[:, None] + off[None, :].astype(np.int64)) - seed_eta[:, None]
    d_phi = off * geometry.dphi  # (5,), uniform in phi
    frac = safe_ratio(w, s25[:, None, None])
    with np.errstate(divide="ignore"):
        weight = np.where(frac > 0, np.maximum(0.0, w0 + np.log(np.where(frac > 0, frac, 1.0))), 0)
    sw = weight.sum(axis=(1, 2))
    x = np.broadcast_to(d_eta[:, :, None], w.shape)
    y = np.broadcast_to(d_phi[None, None, :], w.shape)
    mean_x = safe_ratio((weight * x).sum(axis=(1, 2)), sw)
    mean_y = safe_ratio((weight * y).sum(axis=(1, 2)), sw)
    dx = x - mean_x[:, None, None]
    dy = y - mean_y[:, None, None]
    s_ee = safe_ratio((weight * dx * dx).sum(axis=(1, 2)), sw)
    s_pp = safe_ratio((weight * dy * dy).sum(axis=(1, 2)), sw)
    s_ep = safe_ratio((weight * dx * dy).sum(axis=(1, 2)), sw)
    root = np.sqrt((s_ee - s_pp) ** 2 + 4.0 * s_ep**2)
    lam_plus = 0.5 * (s_ee + s_pp + root)
    lam_minus = np.maximum(0.5 * (s_ee + s_pp - root), 0.0)

    out: dict[str, np.ndarray] = {
        "s1": s1,
        "s4": s4,
        "s6": s6,
        "s9": s9,
        "s25": s25,
        "m2": m2,
        "e3x3": s9,
        "e5x5": s25,
    }
    if e_cluster is not None:
        out["r9"] = safe_ratio(s9, e_cluster)
    out.update(
        {
            "s1_s9": safe_ratio(s1, s9),
            "s9ms1_s25ms1": safe_ratio(s9 - s1, s25 - s1),
            "s4_s25": safe_ratio(s4, s25),
            "s6_ratio": safe_ratio(s6_opposite, s6),
            "s6_s9": safe_ratio(s6, s9),
            "m2s1_s9": safe_ratio(m2 + s1, s9),
            "m2s1_s4": safe_ratio(m2 + s1, s4),
            "xcog": xcog,
            "ycog": ycog,
            "sigma_etaeta": s_ee / SIGMA_ETAETA_SCALE,
            "sigma_phiphi": s_pp / SIGMA_PHIPHI_SCALE,
            "lambda_ratio": safe_ratio(lam_minus, lam_plus),
            "seed_cell": seed_cell,
            "seed_eta": seed_eta,
            "seed_phi": seed_phi,
        }
    )
    return out
