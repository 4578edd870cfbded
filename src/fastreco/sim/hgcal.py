# ruff: noqa: NPY002, RUF046  (numba kernels: numba's own np.random, seeded per shard; int())
"""Simulate events in the HGCAL-like endcap (:class:`~fastreco.geometry.hgcal.HgcalEndcap`).

An event is ``n_particles`` gun particles from one vertex, plus Poisson(``pileup``) minimum-bias
interactions, each from its own vertex. The chain, vectorized over the events of a batch:

1. gun: particles drawn from ``particles``, energy from the spectrum, eta uniform in
   [eta_min, eta_max]; with ``max_separation`` the 2nd..nth particle of an event aim at points of
   the front face within ``max_separation`` of the first one's (and at least ``min_separation``
   from every other particle's), measured on the straight lines from the vertex;
2. pileup: per interaction, Poisson numbers of charged pions and photons in the acceptance
   (dN/deta ~ 6.5 each), flat in eta and phi, pT ~ Gamma(2) with <pT> = 0.5 / 0.25 GeV;
   vertices spread by ``vertex_sigma_z`` and ``vertex_sigma_t``;
3. propagation to the front face (z = 320 cm): helices in the solenoid field for charged
   particles, straight lines otherwise; no material in front (no conversions);
4. showers (numba): EM showers deposit equal-energy spots drawn from the Grindhammer-Peters /
   GFlash profiles (:mod:`fastreco.sim.showers`, with the CE-E's effective critical energy and
   each layer's effective Moliere radius); a spot at depth t [X0] along the axis falls in the
   layer whose absorber slab contains it and is read out in that layer's silicon. Charged
   hadrons: a MIP track (helix, Landau signal in every layer) up to the first inelastic
   interaction (exponential in lambda_I), then a hadronic shower whose EM fraction fluctuates
   (an EM shower on the X0 scale from the interaction point, plus a non-EM part on the lambda_I
   scale, wider and seen with h/e < 1). Muons: MIP tracks through all layers. Pileup particles
   take the cheaper path: at most ``pileup_max_spots`` spots each (100: full detail up to
   ~2 GeV photons, capped above);
5. readout: per cell the shower deposit (GeV) becomes a mean signal N = deposit / dE/dx weight
   in MIPs, with sampling fluctuations of total variance k N (k = 4 MIP: ~22 %/sqrt(E) for
   electrons): a Gamma factor common to a shower's cells in a layer, then per cell a compound
   Poisson of ~1.2-MIP quanta (so shower tails show the MIP peak); plus the Landau signals of
   MIP tracks, Gaussian noise and the zero-suppression threshold; pure-noise cells above
   threshold are added; each hit gets the time of its dominant particle, smeared by
   sigma_t = A / (S/N) (+) C.

Hit conventions (the event store's ``hits/`` fields)
----------------------------------------------------
* ``cell``: :class:`HgcalEndcap` cell id; position and layer from ``geometry.cell_position``.
* ``energy``: **measured signal in MIPs** (1 MIP = the most probable signal of a minimum-ionizing
  particle crossing the 300 um sensor at normal incidence, 84 keV). The calibrated energy of a
  hit is ``energy * geometry.mip_weight[layer]`` [GeV] (see :func:`hit_energy_gev`).
* ``deposit``: true energy [GeV] deposited in the cell's whole sampling slab (absorber + silicon)
  on the electromagnetic scale (the non-EM part of hadron showers counted with h/e; invisible
  energy excluded), before sampling fluctuations and noise; 0 for noise hits.
* ``time`` [ns]: hit time minus the time of flight of a prompt photon from the origin to the
  cell; smeared. Hits of the hard scatter sit near 0 (spread by the vertex time), pileup hits
  spread by ``vertex_sigma_t``. Every hit has a finite time (the ToA threshold is not modelled).
* ``truth_particle``: row (within the event) of the truth particle that deposited most in the
  cell; -1 for noise hits. ``truth_fraction``: its share of the cell's deposit.

Simplifications: GP's parameters keep PbWO4's Z (only y = E/E_c is the CE-E's) and leave out
GP's sampling-calorimeter shifts of T and alpha; no tracker material in front (no conversions);
showers are straight lines inside the field (MIP tracks follow helices); one sensor thickness
(300 um) everywhere; no delayed (neutron) component of hadron showers; no ToA threshold.

Truth rows: the gun particles first (``parent`` = -1), then the pileup particles in the
endcap's acceptance (``parent`` = -2, so a hit is pileup when
``truth['parent'][truth_particle] == -2``). The truth object is the particle as it enters the
calorimeter (no particle is created before it). ``deposited`` is its total deposit [GeV, EM
scale] and ``interaction_depth`` the path length [cm] from the front face to a hadron's first
inelastic interaction. The shares of *all* particles contributing to each hit come out of
:func:`simulate_hgcal_batch` with ``contributions=True`` (:class:`HitContributions`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any, Literal, overload

import numba
import numpy as np
from scipy.special import ndtr, ndtri

from fastreco import constants as C
from fastreco.data.store import TRUTH_COLUMNS, EventBatch
from fastreco.errors import InputError
from fastreco.geometry.hgcal import HgcalEndcap, cell_at_point
from fastreco.sim import showers
from fastreco.sim.config import EnergySpectrum

#: Particles the HGCAL gun can shoot, with their PDG ids.
HGCAL_PARTICLES: dict[str, int] = {
    "gamma": 22,
    "e-": 11,
    "e+": -11,
    "pi+": 211,
    "pi-": -211,
    "mu-": 13,
    "mu+": -13,
}
_MASS = {22: 0.0, 11: C.ELECTRON_MASS, 211: C.CHARGED_PION_MASS, 13: C.MUON_MASS}
_CHARGE = {22: 0, 11: -1, -11: 1, 211: 1, -211: -1, 13: -1, -13: 1}
#: Typical pileup values of the LHC runs and the HL-LHC.
PILEUP_SCENARIOS = (0, 50, 140, 200)
PARENT_GUN = -1
PARENT_PILEUP = -2


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class HgcalSimConfig:
    """A run of the HGCAL simulation. Every field is validated; errors name the field.

    Attributes:
        particles: gun particle names (gamma, e-, e+, pi+, pi-, mu-, mu+); each gun particle
            draws one of them uniformly.
        n_particles: gun particles per event (1..10), from one vertex.
        energy: energy spectrum of each gun particle [GeV] (see :class:`EnergySpectrum`).
        eta_min, eta_max: gun eta range, inside the endcap's 1.5..3.0 (one endcap, eta > 0).
        min_separation, max_separation: distance [cm] on the front face (straight lines from
            the vertex) between the gun particles of an event: every pair at least
            ``min_separation`` apart; with ``max_separation`` the others within that distance of
            the first particle (close-by particles), otherwise anywhere in the eta range.
        pileup: mean number of minimum-bias interactions per event (Poisson); typical 0, 50,
            140, 200.
        vertex_sigma_z, vertex_sigma_t: luminous region rms [cm] and [ns] (all vertices).
        field: solenoid field [T] bending charged particles before and inside the endcap.
        mip_threshold: zero-suppression threshold [MIP].
        noise: electronic noise per cell [MIP].
        max_spots: cap on the spots of one gun particle's shower.
        pileup_max_spots: cap on the spots of one pileup particle's shower (the cheaper path).
        n_events: events of a sharded run (:func:`fastreco.sim.hgcal_engine.simulate_hgcal`).
        events_per_shard: events per HDF5 shard; default 1000 without pileup, 2000/pileup
            (at least 5) with it.
        seed: master seed; shard ``i`` is reproducible from (seed, i) alone.
    """

    particles: tuple[str, ...] = ("gamma",)
    n_particles: int = 1
    energy: EnergySpectrum = dataclasses.field(
        default_factory=lambda: EnergySpectrum.parse("10:100")
    )
    eta_min: float = 1.7
    eta_max: float = 2.7
    min_separation: float = 0.0
    max_separation: float | None = None
    pileup: float = 0.0
    vertex_sigma_z: float = C.HGCAL_BEAMSPOT_SIGMA_Z
    vertex_sigma_t: float = C.HGCAL_BEAMSPOT_SIGMA_T
    field: float = C.SOLENOID_FIELD
    mip_threshold: float = C.HGCAL_MIP_THRESHOLD
    noise: float = C.HGCAL_NOISE_MIP
    max_spots: int = 5000
    pileup_max_spots: int = 100
    n_events: int = 1000
    events_per_shard: int | None = None
    seed: int = 1

    def __post_init__(self) -> None:
        particles = (self.particles,) if isinstance(self.particles, str) else self.particles
        object.__setattr__(self, "particles", tuple(particles))
        if not isinstance(self.energy, EnergySpectrum):
            object.__setattr__(self, "energy", EnergySpectrum.parse(self.energy))
        if self.events_per_shard is None:
            auto = 1000 if self.pileup <= 0 else max(5, int(2000 // self.pileup))
            object.__setattr__(self, "events_per_shard", auto)
        self.validate()

    def validate(self) -> None:
        if not self.particles:
            raise InputError("at least one particle is needed", field="particles", value=[])
        for name in self.particles:
            if name not in HGCAL_PARTICLES:
                raise InputError(
                    f"unknown particle; valid names are {', '.join(HGCAL_PARTICLES)}",
                    field="particles",
                    value=name,
                )
        if not (isinstance(self.n_particles, int) and 1 <= self.n_particles <= 10):
            raise InputError(
                "must be an integer in 1..10", field="n_particles", value=self.n_particles
            )
        heaviest = max(_MASS[abs(HGCAL_PARTICLES[p])] for p in self.particles)
        if self.energy.low <= heaviest:
            raise InputError(
                f"the lowest energy must exceed the heaviest particle's mass ({heaviest:.4f} GeV)",
                field="energy",
                value=str(self.energy),
            )
        lo, hi = C.HGCAL_ETA_MIN, C.HGCAL_ETA_MAX
        for name in ("eta_min", "eta_max"):
            value = getattr(self, name)
            if not (math.isfinite(value) and lo <= value <= hi):
                raise InputError(f"must lie in [{lo}, {hi}], the endcap", field=name, value=value)
        if not self.eta_min < self.eta_max:
            raise InputError(
                "eta_min must be below eta_max", field="eta_min", value=(self.eta_min, self.eta_max)
            )
        if not (math.isfinite(self.min_separation) and self.min_separation >= 0):
            raise InputError(
                "must be finite and >= 0 cm", field="min_separation", value=self.min_separation
            )
        if self.max_separation is not None and not (
            math.isfinite(self.max_separation) and self.max_separation > self.min_separation
        ):
            raise InputError(
                "must be finite and > min_separation (or None)",
                field="max_separation",
                value=self.max_separation,
            )
        if not (math.isfinite(self.pileup) and 0 <= self.pileup <= 1000):
            raise InputError(
                f"must lie in [0, 1000] (typical: {PILEUP_SCENARIOS})",
                field="pileup",
                value=self.pileup,
            )
        for name in ("vertex_sigma_z", "vertex_sigma_t", "field", "noise"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise InputError("must be finite and >= 0", field=name, value=value)
        if not (math.isfinite(self.mip_threshold) and self.mip_threshold > 0):
            raise InputError(
                "must be finite and > 0 MIP", field="mip_threshold", value=self.mip_threshold
            )
        if self.noise > 0 and self.mip_threshold < 3 * self.noise:
            # below 3 sigma more than 0.1 % of the 4.7 million cells fire on noise alone
            raise InputError(
                f"must be >= 3 x the noise ({3 * self.noise:g} MIP)",
                field="mip_threshold",
                value=self.mip_threshold,
            )
        for name, low in (("max_spots", 10), ("pileup_max_spots", 1)):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= low):
                raise InputError(f"must be an integer >= {low}", field=name, value=value)
        for name in ("n_events", "events_per_shard"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value > 0):
                raise InputError("must be a positive integer", field=name, value=value)
        if not isinstance(self.seed, int) or self.seed < 0:
            raise InputError("must be an integer >= 0", field="seed", value=self.seed)

    @property
    def pdg_ids(self) -> np.ndarray:
        return np.array([HGCAL_PARTICLES[p] for p in self.particles], dtype=np.int32)

    @property
    def n_shards(self) -> int:
        assert self.events_per_shard is not None
        return -(-self.n_events // self.events_per_shard)

    def shard_events(self, index: int) -> int:
        assert self.events_per_shard is not None
        return min(self.events_per_shard, self.n_events - index * self.events_per_shard)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["energy"] = str(self.energy)
        d["particles"] = list(self.particles)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HgcalSimConfig:
        return cls(**d)

    def shard_key(self, geometry: HgcalEndcap | None = None) -> str:
        """Hash of everything that determines a shard's content except its event count."""
        d = self.to_dict()
        d.pop("n_events")
        d["detector"] = (geometry or HgcalEndcap()).to_dict()
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# the shower kernel
# --------------------------------------------------------------------------------------------
_C_LIGHT = C.SPEED_OF_LIGHT_CM_PER_NS
_MIN_GP_ENERGY = 0.1  # GeV: below, an EM particle deposits in one spot (GP needs E >> E_c)
# Rows of the per-layer table passed to the kernel.
_LT_Z, _LT_Z_START, _LT_PITCH, _LT_X0, _LT_LAM, _LT_CUM_X0, _LT_CUM_LAM = 0, 1, 2, 3, 4, 5, 6
_LT_RM, _LT_LAM_EFF, _LT_W = 7, 8, 9


def _layer_table(geometry: HgcalEndcap) -> np.ndarray:
    return np.ascontiguousarray(
        np.stack(
            [
                geometry.layer_z,
                geometry.layer_z_start,
                geometry.layer_pitch,
                geometry.absorber_x0,
                geometry.absorber_lambda,
                geometry.cumulative_x0,
                geometry.cumulative_lambda,
                geometry.moliere_radius,
                geometry.lambda_eff,
                geometry.mip_weight,
            ]
        )
    )


@numba.njit(cache=True, error_model="numpy", fastmath=True, inline="always")
def _helix(px, py, pz, ux, uy, uz, kappa, z):
    """Point (x, y) and transverse direction (ux, uy) at plane z of a helix along +z.

    ``kappa`` = charge sign / radius of curvature [1/cm] (0: straight line); a positive charge
    turns clockwise seen from +z (field along +z).
    """
    dz = z - pz
    if kappa == 0.0:
        return px + ux * dz / uz, py + uy * dz / uz, ux, uy
    ut = math.sqrt(ux * ux + uy * uy)
    s_t = dz * ut / uz
    phi0 = math.atan2(uy, ux)
    phi = phi0 - kappa * s_t
    x = px + (math.sin(phi0) - math.sin(phi)) / kappa
    y = py + (math.cos(phi) - math.cos(phi0)) / kappa
    return x, y, ut * math.cos(phi), ut * math.sin(phi)


@numba.njit(cache=True, error_model="numpy", fastmath=True, inline="always")
def _basis(ux, uy, uz):
    """Two unit vectors perpendicular to u and to each other."""
    if abs(uz) < 0.9:
        ax, ay, az = uy, -ux, 0.0
    else:
        ax, ay, az = 0.0, uz, -uy
    norm = math.sqrt(ax * ax + ay * ay + az * az)
    ax, ay, az = ax / norm, ay / norm, az / norm
    bx, by, bz = uy * az - uz * ay, uz * ax - ux * az, ux * ay - uy * ax
    return ax, ay, az, bx, by, bz


@numba.njit(cache=True, error_model="numpy", fastmath=True)
def _lateral_spot(lt, tables, layer, ox, oy, oz, ux, uy, uz, a, b, radius):
    """Cell hit by a spot at lateral distance ``radius`` [cm] from the axis (origin o, unit
    direction u) in ``layer``'s silicon plane; -1 outside. Returns (cell, path along the axis)."""
    layer_f, reg_f, reg_i, row_i, seg_i, seg_id0 = tables
    s_axis = (lt[_LT_Z, layer] - oz) / uz
    ang = 2.0 * math.pi * np.random.random()
    c = radius * math.cos(ang)
    s = radius * math.sin(ang)
    offx = c * a[0] + s * b[0]
    offy = c * a[1] + s * b[1]
    offz = c * a[2] + s * b[2]
    x = ox + ux * s_axis + offx - ux * offz / uz
    y = oy + uy * s_axis + offy - uy * offz / uz
    return cell_at_point(layer_f, reg_f, reg_i, row_i, seg_i, seg_id0, layer, x, y), s_axis


@numba.njit(cache=True, error_model="numpy", fastmath=True)
def _em_spots(
    out_p,
    out_cell,
    out_dep,
    out_trk,
    out_t,
    m,
    i,
    energy,
    n_spots,
    x0_start,
    o,
    u,
    t_o,
    lt,
    tables,
    gp_scale,
):
    """Deposit an EM shower of ``energy`` starting at z-projected depth ``x0_start`` [X0] at the
    point ``o`` (time ``t_o``) along ``u``. Returns (new record count, energy deposited)."""
    n_layers = lt.shape[1]
    ax, ay, az, bx, by, bz = _basis(u[0], u[1], u[2])
    a = (ax, ay, az)
    b = (bx, by, bz)
    total = 0.0
    if energy < _MIN_GP_ENERGY:  # one spot, 1 X0 along the axis after the start
        layer = np.searchsorted(lt[_LT_CUM_X0], x0_start + u[2], side="left")
        if layer >= n_layers:
            return m, 0.0
        cell, s_axis = _lateral_spot(
            lt, tables, layer, o[0], o[1], o[2], u[0], u[1], u[2], a, b, 0.0
        )
        if cell >= 0:
            out_p[m] = i
            out_cell[m] = cell
            out_dep[m] = energy
            out_trk[m] = 0.0
            out_t[m] = t_o + s_axis / _C_LIGHT
            m += 1
            total = energy
        return m, total
    alpha, tmax, mean_alpha = showers.gp_longitudinal(energy * gp_scale)
    quant, r_core, r_tail, p_core = showers._profile_tables(energy, alpha, tmax, mean_alpha)
    e_spot = energy / n_spots
    cum_x0 = lt[_LT_CUM_X0]
    for _ in range(n_spots):
        t, r = showers._sample_spot(quant, r_core, r_tail, p_core)
        layer = np.searchsorted(cum_x0, x0_start + t * u[2], side="left")
        if layer >= n_layers:
            continue
        cell, s_axis = _lateral_spot(
            lt, tables, layer, o[0], o[1], o[2], u[0], u[1], u[2], a, b, r * lt[_LT_RM, layer]
        )
        if cell < 0:
            continue
        out_p[m] = i
        out_cell[m] = cell
        out_dep[m] = e_spot
        out_trk[m] = 0.0
        out_t[m] = t_o + s_axis / _C_LIGHT
        m += 1
        total += e_spot
    return m, total


@numba.njit(cache=True, error_model="numpy", fastmath=True)
def deposit_hgcal(
    kind,
    energy,
    mass,
    start,
    position,
    direction,
    kappa,
    t_front,
    beta,
    max_spots,
    lt,
    tables,
    gp_scale,
    capacity,
):
    """Deposit the particles that reached the front face (z = ``lt`` layer 0's slab start).

    Args:
        kind: showers.KIND_* of each particle (n,).
        energy, mass [GeV] (n,).
        start: photons: conversion depth along the axis [X0]; hadrons: path to the first
            inelastic interaction [lambda_I along the path] (inf: none); otherwise ignored (n,).
        position: impact points on the front face [cm] (n, 3); direction: unit vectors there.
        kappa: signed curvature [1/cm] of charged tracks in the field (n,), 0 for none.
        t_front: time [ns] at the front face (n,); beta: v/c (n,).
        max_spots: cap on each particle's shower spots (n,).
        lt: per-layer table (_LT_* rows); tables: the geometry's lattice tables.
        gp_scale: E_c(PbWO4) / E_c(CE-E), so that GP's y = E/E_c is the CE-E's.
        capacity: length of the record buffers (an upper bound on the records).

    Returns:
        one record per spot or track crossing: particle index, cell, deposit [GeV], track
        signal [MIP] (> 0 marks a track crossing, 0 a shower spot), time [ns]; then per particle
        the total deposit [GeV] and the z of the first inelastic interaction (NaN if none).
    """
    n = kind.shape[0]
    n_layers = lt.shape[1]
    layer_f, reg_f, reg_i, row_i, seg_i, seg_id0 = tables
    out_p = np.empty(capacity, dtype=np.int64)
    out_cell = np.empty(capacity, dtype=np.int64)
    out_dep = np.empty(capacity, dtype=np.float64)
    out_trk = np.empty(capacity, dtype=np.float64)
    out_t = np.empty(capacity, dtype=np.float64)
    per_particle = np.zeros(n)
    int_z = np.full(n, np.nan)
    m = 0
    cum_lam = lt[_LT_CUM_LAM]
    for i in range(n):
        k = kind[i]
        e = energy[i]
        px, py, pz = position[i, 0], position[i, 1], position[i, 2]
        ux, uy, uz = direction[i, 0], direction[i, 1], direction[i, 2]
        total = 0.0
        if k == showers.KIND_ELECTRON or k == showers.KIND_PHOTON:
            x0_start = start[i] * uz if k == showers.KIND_PHOTON else 0.0
            ns = max(1, min(max(int(math.ceil(e / C.HGCAL_EM_SPOT_ENERGY)), 10), max_spots[i]))
            m, total = _em_spots(
                out_p,
                out_cell,
                out_dep,
                out_trk,
                out_t,
                m,
                i,
                e,
                ns,
                x0_start,
                (px, py, pz),
                (ux, uy, uz),
                t_front[i],
                lt,
                tables,
                gp_scale,
            )
            per_particle[i] = total
            continue
        # charged hadrons and muons: MIP track up to the first interaction (hadrons)
        lam_z = start[i] * uz if k == showers.KIND_HADRON else np.inf
        e_kin = e - mass[i]
        speed = beta[i] * _C_LIGHT
        last = n_layers
        stopped = False
        for layer in range(n_layers):
            if cum_lam[layer] >= lam_z:
                last = layer
                break
            zl = lt[_LT_Z, layer]
            x, y, _, _ = _helix(px, py, pz, ux, uy, uz, kappa[i], zl)
            loss = lt[_LT_W, layer] / uz
            if loss >= e_kin:
                loss = e_kin
                stopped = True
            e_kin -= loss
            z_mip = -math.log(np.random.standard_normal() ** 2 + 1e-300)
            signal = max(0.0, (1.0 + C.HGCAL_MIP_LANDAU_WIDTH * z_mip) / uz)
            cell = cell_at_point(layer_f, reg_f, reg_i, row_i, seg_i, seg_id0, layer, x, y)
            if cell >= 0:
                out_p[m] = i
                out_cell[m] = cell
                out_dep[m] = loss
                out_trk[m] = signal
                out_t[m] = t_front[i] + (zl - pz) / uz / speed
                m += 1
                total += loss
            if stopped:
                break
        if k == showers.KIND_HADRON and not stopped and last < n_layers and e_kin > 0.0:
            # the first inelastic interaction, inside slab `last`
            lam_before = cum_lam[last - 1] if last > 0 else 0.0
            x0_before = lt[_LT_CUM_X0, last - 1] if last > 0 else 0.0
            f = (lam_z - lam_before) / lt[_LT_LAM, last]
            z_int = lt[_LT_Z_START, last] + f * lt[_LT_PITCH, last]
            x0_int = x0_before + f * lt[_LT_X0, last]
            int_z[i] = z_int
            ix, iy, vx, vy = _helix(px, py, pz, ux, uy, uz, kappa[i], z_int)
            t_int = t_front[i] + (z_int - pz) / uz / speed
            e_had = e_kin
            f_mean = 1.0 - (max(e_had, C.HADRON_EM_FRACTION_E0) / C.HADRON_EM_FRACTION_E0) ** (
                C.HADRON_EM_FRACTION_K - 1.0
            )
            f_em = f_mean * (1.0 + C.HADRON_EM_FRACTION_SPREAD * np.random.standard_normal())
            f_em = min(max(f_em, 0.0), 1.0)
            ns = int(math.ceil(e_had / C.HADRON_SPOT_ENERGY))
            ns = max(1, min(max(ns, 20), max_spots[i]))
            n_em = int(round(f_em * ns))
            e_em = f_em * e_had
            o = (ix, iy, z_int)
            u = (vx, vy, uz)
            if n_em > 0 and e_em >= _MIN_GP_ENERGY:
                m, dep = _em_spots(
                    out_p,
                    out_cell,
                    out_dep,
                    out_trk,
                    out_t,
                    m,
                    i,
                    e_em,
                    n_em,
                    x0_int,
                    o,
                    u,
                    t_int,
                    lt,
                    tables,
                    gp_scale,
                )
                total += dep
            else:
                n_em = 0
                e_em = 0.0
            n_h = max(ns - n_em, 1)
            e_h = (e_had - e_em) * C.HGCAL_H_OVER_E / n_h
            if e_h <= 0.0:
                n_h = 0
            ax, ay, az, bx, by, bz = _basis(vx, vy, uz)
            a = (ax, ay, az)
            b = (bx, by, bz)
            for _ in range(n_h):
                dl = np.random.gamma(C.HADRON_PROFILE_SHAPE, C.HADRON_PROFILE_SCALE_LAMBDA)
                layer = np.searchsorted(cum_lam, lam_z + dl * uz, side="left")
                if layer >= n_layers:
                    continue
                radius = np.random.gamma(2.0, 0.5 * C.HGCAL_HADRON_LATERAL_LAMBDA)
                cell, s_axis = _lateral_spot(
                    lt,
                    tables,
                    layer,
                    ix,
                    iy,
                    z_int,
                    vx,
                    vy,
                    uz,
                    a,
                    b,
                    radius * lt[_LT_LAM_EFF, layer],
                )
                if cell < 0:
                    continue
                out_p[m] = i
                out_cell[m] = cell
                out_dep[m] = e_h
                out_trk[m] = 0.0
                out_t[m] = t_int + s_axis / _C_LIGHT
                m += 1
                total += e_h
        per_particle[i] = total
    return (
        out_p[:m],
        out_cell[:m],
        out_dep[:m],
        out_trk[:m],
        out_t[:m],
        per_particle,
        int_z,
    )


@numba.njit(cache=True)
def _aggregate(key, row, dep, trk, time):
    """Sum records sorted by (key, row), per (key, row) and per key.

    ``key`` = event * n_cells + cell; ``trk`` > 0 marks a MIP-track record (its signal in MIPs).
    Returns per key: key, total deposit, shower deposit (records with trk == 0), track signal,
    the dominant row, its deposit and its time (first record); and per (key, row): index of the
    key, row, deposit, shower deposit.
    """
    n = key.shape[0]
    k_key = np.empty(n, np.int64)
    k_dep = np.zeros(n)
    k_shower = np.zeros(n)
    k_trk = np.zeros(n)
    c_key = np.empty(n, np.int64)
    c_row = np.empty(n, np.int64)
    c_dep = np.zeros(n)
    c_shower = np.zeros(n)
    c_time = np.zeros(n)
    nk = -1
    nc = -1
    for j in range(n):
        if j == 0 or key[j] != key[j - 1]:
            nk += 1
            k_key[nk] = key[j]
            nc += 1
            c_key[nc] = nk
            c_row[nc] = row[j]
            c_time[nc] = time[j]
        elif row[j] != row[j - 1]:
            nc += 1
            c_key[nc] = nk
            c_row[nc] = row[j]
            c_time[nc] = time[j]
        c_dep[nc] += dep[j]
        k_dep[nk] += dep[j]
        if trk[j] > 0.0:
            k_trk[nk] += trk[j]
        else:
            k_shower[nk] += dep[j]
            c_shower[nc] += dep[j]
    nk += 1
    nc += 1
    k_row = np.full(nk, -1, np.int64)
    k_best = np.full(nk, -1.0)
    k_time = np.zeros(nk)
    for c in range(nc):
        kk = c_key[c]
        if c_dep[c] > k_best[kk]:
            k_best[kk] = c_dep[c]
            k_row[kk] = c_row[c]
            k_time[kk] = c_time[c]
    return (
        k_key[:nk],
        k_dep[:nk],
        k_shower[:nk],
        k_trk[:nk],
        k_row,
        k_best,
        k_time,
        c_key[:nc],
        c_row[:nc],
        c_dep[:nc],
        c_shower[:nc],
    )


# --------------------------------------------------------------------------------------------
# generation, propagation, readout
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class HitContributions:
    """Shares of every contributing truth particle in each hit (CSR over the batch's hits).

    ``particle[offsets[h]:offsets[h + 1]]`` are the truth rows (within the event) that deposited
    in hit ``h`` and ``fraction[...]`` their shares of its deposit (they sum to 1 for signal
    hits; noise hits have none).
    """

    offsets: np.ndarray  # (n_hits + 1,) int64
    particle: np.ndarray  # (m,) int32
    fraction: np.ndarray  # (m,) float32


def _lookup(table: dict[int, float], pdg: np.ndarray, absolute: bool) -> np.ndarray:
    keys = np.abs(pdg) if absolute else pdg
    out = np.zeros(len(pdg))
    for key, value in table.items():
        out[keys == key] = value
    return out


def _gun(
    config: HgcalSimConfig, n: int, rng: np.random.Generator, geometry: HgcalEndcap
) -> dict[str, np.ndarray]:
    """Gun particles, event-major (n * n_particles rows)."""
    k = config.n_particles
    vz = rng.normal(0.0, config.vertex_sigma_z, n) if config.vertex_sigma_z > 0 else np.zeros(n)
    vt = rng.normal(0.0, config.vertex_sigma_t, n) if config.vertex_sigma_t > 0 else np.zeros(n)
    pdg = rng.choice(config.pdg_ids, size=(n, k))
    energy = config.energy.sample(rng, n * k).reshape(n, k)
    eta = np.empty((n, k))
    phi = np.empty((n, k))
    eta[:, 0] = rng.uniform(config.eta_min, config.eta_max, n)
    phi[:, 0] = rng.uniform(-np.pi, np.pi, n)
    dz = geometry.z_front - vz
    points = np.empty((n, k, 2))
    r0 = dz / np.sinh(eta[:, 0])
    points[:, 0] = np.stack([r0 * np.cos(phi[:, 0]), r0 * np.sin(phi[:, 0])], axis=1)
    for j in range(1, k):
        todo = np.arange(n)
        for _ in range(1000):
            m = len(todo)
            if config.max_separation is not None:
                dist = np.sqrt(rng.uniform(config.min_separation**2, config.max_separation**2, m))
                ang = rng.uniform(-np.pi, np.pi, m)
                pt = points[todo, 0] + np.stack([dist * np.cos(ang), dist * np.sin(ang)], axis=1)
                e_j = np.arcsinh(dz[todo] / np.hypot(pt[:, 0], pt[:, 1]))
                p_j = np.arctan2(pt[:, 1], pt[:, 0])
            else:
                e_j = rng.uniform(config.eta_min, config.eta_max, m)
                p_j = rng.uniform(-np.pi, np.pi, m)
                r_j = dz[todo] / np.sinh(e_j)
                pt = np.stack([r_j * np.cos(p_j), r_j * np.sin(p_j)], axis=1)
            ok = (e_j >= config.eta_min) & (e_j <= config.eta_max)
            if config.min_separation > 0:
                gap = np.linalg.norm(points[todo, :j] - pt[:, None, :], axis=2).min(axis=1)
                ok &= gap >= config.min_separation
            done = todo[ok]
            points[done, j] = pt[ok]
            eta[done, j] = e_j[ok]
            phi[done, j] = p_j[ok]
            todo = todo[~ok]
            if not len(todo):
                break
        else:
            raise InputError(
                f"could not place {k} particles at least {config.min_separation} cm apart "
                f"(max_separation {config.max_separation}) in eta {config.eta_min}..{config.eta_max}",
                field="min_separation",
                value=config.min_separation,
            )
    return {
        "event": np.repeat(np.arange(n), k),
        "pdg": pdg.ravel(),
        "energy": energy.ravel(),
        "eta": eta.ravel(),
        "phi": phi.ravel(),
        "vz": np.repeat(vz, k),
        "vt": np.repeat(vt, k),
        "parent": np.full(n * k, PARENT_GUN),
    }


def _pileup(
    config: HgcalSimConfig, n: int, rng: np.random.Generator, geometry: HgcalEndcap
) -> dict[str, np.ndarray]:
    """Particles of Poisson(pileup) minimum-bias interactions per event, in the acceptance."""
    n_int = rng.poisson(config.pileup, n) if config.pileup > 0 else np.zeros(n, dtype=np.int64)
    total = int(n_int.sum())
    int_event = np.repeat(np.arange(n), n_int)
    vz = (
        rng.normal(0.0, config.vertex_sigma_z, total)
        if config.vertex_sigma_z > 0
        else np.zeros(total)
    )
    vt = (
        rng.normal(0.0, config.vertex_sigma_t, total)
        if config.vertex_sigma_t > 0
        else np.zeros(total)
    )
    deta = geometry.eta_max - geometry.eta_min
    n_ch = rng.poisson(C.HGCAL_PU_DNCH_DETA * deta, total)
    n_g = rng.poisson(C.HGCAL_PU_DNGAMMA_DETA * deta, total)
    per_int = n_ch + n_g
    m = int(per_int.sum())
    # within an interaction: its charged pions first, then its photons
    first = np.repeat(np.cumsum(per_int) - per_int, per_int)
    is_charged = (np.arange(m) - first) < np.repeat(n_ch, per_int)
    pdg = np.where(is_charged, np.where(rng.random(m) < 0.5, 211, -211), 22)
    mean_pt = np.where(is_charged, C.HGCAL_PU_CHARGED_MEAN_PT, C.HGCAL_PU_PHOTON_MEAN_PT)
    pt = rng.gamma(2.0, 0.5 * mean_pt)
    eta = rng.uniform(geometry.eta_min, geometry.eta_max, m)
    phi = rng.uniform(-np.pi, np.pi, m)
    mass = _lookup(_MASS, pdg, absolute=True)
    energy = np.sqrt((pt * np.cosh(eta)) ** 2 + mass**2)
    return {
        "event": np.repeat(int_event, per_int),
        "pdg": pdg,
        "energy": energy,
        "eta": eta,
        "phi": phi,
        "vz": np.repeat(vz, per_int),
        "vt": np.repeat(vt, per_int),
        "parent": np.full(m, PARENT_PILEUP),
    }


def _propagate(
    t: dict[str, np.ndarray], field: float, geometry: HgcalEndcap
) -> dict[str, np.ndarray]:
    """Impact on the front face z = z_front: helices in the field, straight lines otherwise."""
    mass = _lookup(_MASS, t["pdg"], absolute=True)
    charge = _lookup({k: float(v) for k, v in _CHARGE.items()}, t["pdg"], absolute=False)
    p = np.sqrt(np.maximum(t["energy"] ** 2 - mass**2, 1e-18))
    beta = p / t["energy"]
    u_t = 1.0 / np.cosh(t["eta"])
    uz = np.tanh(t["eta"])
    pt = p * u_t
    kappa = np.zeros(len(p))
    if field > 0:
        charged = charge != 0
        # 1/R [1/cm] = 0.2998 B / pT / 100, signed by the charge
        kappa[charged] = (
            charge[charged] * C.MAGNETIC_RIGIDITY_GEV_PER_T_M * field / (100.0 * pt[charged])
        )
    dz = geometry.z_front - t["vz"]
    s_t = dz * u_t / uz
    phi = t["phi"] - kappa * s_t
    straight = np.abs(kappa * s_t) < 1e-9
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where(
            straight,
            s_t * np.cos(t["phi"]),
            (np.sin(t["phi"]) - np.sin(phi)) / kappa,
        )
        y = np.where(
            straight,
            s_t * np.sin(t["phi"]),
            (np.cos(phi) - np.cos(t["phi"])) / kappa,
        )
    phi = np.where(straight, t["phi"], phi)
    rho = np.hypot(x, y)
    reached = (rho >= geometry.z_front / math.sinh(geometry.eta_max)) & (
        rho < geometry.z_front / math.sinh(geometry.eta_min)
    )
    return {
        "mass": mass,
        "beta": beta,
        "kappa": kappa,
        "position": np.stack([x, y, np.full(len(x), geometry.z_front)], axis=1),
        "direction": np.stack([u_t * np.cos(phi), u_t * np.sin(phi), uz], axis=1),
        "t_front": t["vt"] + dz / uz / (beta * C.SPEED_OF_LIGHT_CM_PER_NS),
        "reached": reached,
        "impact_eta": np.arcsinh(geometry.z_front / rho),
        "impact_phi": np.arctan2(y, x),
    }


def _kind(pdg: np.ndarray) -> np.ndarray:
    a = np.abs(pdg)
    return np.select(
        [a == 22, a == 11, a == 211, a == 13],
        [showers.KIND_PHOTON, showers.KIND_ELECTRON, showers.KIND_HADRON, showers.KIND_MUON],
    ).astype(np.int64)


def time_resolution(signal: np.ndarray, noise: float) -> np.ndarray:
    """sigma_t [ns] = A / (S/N) (+) C, S/N = signal / noise (signal floored at the noise)."""
    if noise <= 0:
        return np.full(np.shape(signal), C.HGCAL_TIME_CONSTANT_TERM)
    s_over_n = np.maximum(signal, noise) / noise
    return np.hypot(C.HGCAL_TIME_NOISE_TERM / s_over_n, C.HGCAL_TIME_CONSTANT_TERM)


def _sampled_signal(
    c_key: np.ndarray,
    c_row: np.ndarray,
    c_shower: np.ndarray,
    layer: np.ndarray,
    event: np.ndarray,
    geometry: HgcalEndcap,
    width: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Signal [MIP] of the shower deposits of each cell, with sampling fluctuations.

    Args:
        c_key, c_row, c_shower: per (cell, particle): index of the cell, particle row within
            the event, shower deposit [GeV].
        layer, event: per cell.
        width: bound on the particle rows (for grouping keys).

    A mean of N MIPs (deposit / dE/dx weight) fluctuates in two parts (see constants): a factor
    common to a shower's cells in a layer, Gamma with mean 1 and variance (k - k_cell) / N_layer,
    then per cell Poisson(N / m) quanta of Gamma(s, m / s) MIPs (variance k_cell N).
    """
    n_hit_cells = len(layer)
    if not len(c_key):
        return np.zeros(n_hit_cells)
    mean = c_shower / geometry.mip_weight[layer[c_key]]
    s = C.HGCAL_CELL_QUANTUM_SHAPE
    m = C.HGCAL_CELL_QUANTUM_MIP
    k_layer = C.HGCAL_SAMPLING_VARIANCE_MIP - m * (1.0 + 1.0 / s)
    if k_layer > 0:
        group = (event[c_key] * width + c_row) * geometry.n_layers + layer[c_key]
        uniq, inverse = np.unique(group, return_inverse=True)
        n_layer = np.bincount(inverse, weights=mean, minlength=len(uniq))
        shape = n_layer / k_layer
        factor = np.zeros(len(uniq))
        positive = shape > 0
        factor[positive] = rng.gamma(shape[positive], 1.0 / shape[positive])
        mean = mean * factor[inverse]
    cell_mean = np.bincount(c_key, weights=mean, minlength=n_hit_cells)
    quanta = rng.poisson(cell_mean / m)
    return rng.gamma(quanta * s, m / s)


@overload
def simulate_hgcal_batch(
    config: HgcalSimConfig,
    n_events: int,
    seed: int | np.random.SeedSequence,
    geometry: HgcalEndcap | None = ...,
    *,
    contributions: Literal[False] = ...,
) -> EventBatch: ...


@overload
def simulate_hgcal_batch(
    config: HgcalSimConfig,
    n_events: int,
    seed: int | np.random.SeedSequence,
    geometry: HgcalEndcap | None = ...,
    *,
    contributions: Literal[True],
) -> tuple[EventBatch, HitContributions]: ...


def simulate_hgcal_batch(
    config: HgcalSimConfig,
    n_events: int,
    seed: int | np.random.SeedSequence,
    geometry: HgcalEndcap | None = None,
    *,
    contributions: bool = False,
) -> EventBatch | tuple[EventBatch, HitContributions]:
    """Simulate ``n_events`` events; identical output for identical (config, n_events, seed).

    Returns the :class:`EventBatch` (hits sorted by event and cell, see the module docstring for
    units), and with ``contributions=True`` also the :class:`HitContributions` of its hits.
    """
    geometry = geometry or HgcalEndcap()
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    rng = np.random.default_rng(ss)
    showers.seed(
        int(np.random.SeedSequence(ss.generate_state(4)).generate_state(1)[0] & 0x7FFFFFFF)
    )
    n = int(n_events)

    # 1-2. gun and pileup particles, event-major, gun first within an event ---------------------
    gun = _gun(config, n, rng, geometry)
    pu = _pileup(config, n, rng, geometry)
    t = {k: np.concatenate([gun[k], pu[k]]) for k in gun}
    order = np.lexsort((t["parent"] == PARENT_PILEUP, t["event"]))
    t = {k: v[order] for k, v in t.items()}
    n_rows = len(t["event"])
    truth_offsets = np.concatenate([[0], np.cumsum(np.bincount(t["event"], minlength=n))])
    local_row = np.arange(n_rows) - truth_offsets[t["event"]]

    # 3. propagation ------------------------------------------------------------------------------
    prop = _propagate(t, config.field, geometry)
    sidx = np.flatnonzero(prop["reached"])
    kind = _kind(t["pdg"][sidx])
    start = np.zeros(len(sidx))
    photon = kind == showers.KIND_PHOTON
    start[photon] = rng.exponential(C.PHOTON_CONVERSION_LENGTH_X0, int(photon.sum()))
    hadron = kind == showers.KIND_HADRON
    start[hadron] = rng.exponential(1.0, int(hadron.sum()))
    max_spots = np.where(
        t["parent"][sidx] == PARENT_PILEUP, config.pileup_max_spots, config.max_spots
    ).astype(np.int64)

    # 4. showers ------------------------------------------------------------------------------------
    lt = _layer_table(geometry)
    capacity = int(np.sum(max_spots) + len(sidx) * (geometry.n_layers + 1) + 1)
    rec_p, rec_cell, rec_dep, rec_trk, rec_t, per_particle, int_z = deposit_hgcal(
        kind,
        t["energy"][sidx],
        prop["mass"][sidx],
        start,
        np.ascontiguousarray(prop["position"][sidx]),
        np.ascontiguousarray(prop["direction"][sidx]),
        prop["kappa"][sidx],
        prop["t_front"][sidx],
        prop["beta"][sidx],
        max_spots,
        lt,
        geometry.tables,
        C.PBWO4_CRITICAL_ENERGY / geometry.em_critical_energy,
        capacity,
    )
    deposited = np.zeros(n_rows)
    deposited[sidx] = per_particle
    interaction_depth = np.full(n_rows, np.nan)
    interaction_depth[sidx] = (int_z - geometry.z_front) / prop["direction"][sidx, 2]

    # per (event, cell, particle), then per (event, cell) ----------------------------------------
    n_cells = geometry.n_cells
    rows = sidx[rec_p]
    key = t["event"][rows] * np.int64(n_cells) + rec_cell
    row = local_row[rows]
    width = int(local_row.max()) + 1 if n_rows else 1
    if n * float(n_cells) * width < 2.0**62:
        order = np.argsort(key * width + row, kind="stable")
    else:
        order = np.lexsort((row, key))
    k_key, k_dep, _, k_trk, k_row, k_best, k_time, c_key, c_row, c_dep, c_shower = _aggregate(
        key[order], row[order], rec_dep[order], rec_trk[order], rec_t[order]
    )

    # 5. readout ------------------------------------------------------------------------------------
    cell = k_key % n_cells
    layer = geometry.cell_layer(cell)
    signal = _sampled_signal(c_key, c_row, c_shower, layer, k_key // n_cells, geometry, width, rng)
    signal += k_trk
    if config.noise > 0:
        signal += config.noise * rng.standard_normal(len(signal))
    keep = signal >= config.mip_threshold

    noise_keys = np.zeros(0, np.int64)
    noise_signal = np.zeros(0)
    if config.noise > 0:
        q = float(ndtr(-config.mip_threshold / config.noise))
        touched = np.bincount(k_key // n_cells, minlength=n)
        k_noise = rng.binomial(n_cells - touched, q)
        noise_keys = np.repeat(np.arange(n, dtype=np.int64), k_noise) * n_cells + rng.integers(
            0, n_cells, int(k_noise.sum())
        )
        noise_keys = np.unique(noise_keys)
        noise_keys = noise_keys[~np.isin(noise_keys, k_key, assume_unique=True)]
        noise_signal = config.noise * -ndtri(q * rng.uniform(1e-12, 1.0, len(noise_keys)))

    n_sig = int(keep.sum())
    all_keys = np.concatenate([k_key[keep], noise_keys])
    hit_order = np.argsort(all_keys, kind="stable")
    all_keys = all_keys[hit_order]
    is_signal = hit_order < n_sig

    def merged(signal_values: np.ndarray, noise_value: float | int) -> np.ndarray:
        out = np.concatenate(
            [signal_values[keep], np.full(len(noise_keys), noise_value, signal_values.dtype)]
        )
        return out[hit_order]

    hit_cell = all_keys % n_cells
    energy = np.concatenate([signal[keep], noise_signal])[hit_order]
    pos = geometry.cell_position(hit_cell)
    distance = np.sqrt(pos["x"] ** 2 + pos["y"] ** 2 + pos["z"] ** 2)
    t_true = np.where(is_signal, merged(k_time, 0.0) - distance / C.SPEED_OF_LIGHT_CM_PER_NS, 0.0)
    time = t_true + time_resolution(energy, config.noise) * rng.standard_normal(len(energy))
    deposit = merged(k_dep, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(deposit > 0, merged(k_best, 0.0) / deposit, 0.0)
    hits = {
        "cell": hit_cell.astype(np.int32),
        "energy": energy.astype(np.float32),
        "time": time.astype(np.float32),
        "deposit": deposit.astype(np.float32),
        "truth_particle": merged(k_row, -1).astype(np.int32),
        "truth_fraction": np.clip(fraction, 0.0, 1.0).astype(np.float32),
    }
    offsets = np.concatenate([[0], np.cumsum(np.bincount(all_keys // n_cells, minlength=n))])

    truth_cols = {
        "pdg": t["pdg"],
        "energy": t["energy"],
        "eta": t["eta"],
        "phi": t["phi"],
        "vx": np.zeros(n_rows),
        "vy": np.zeros(n_rows),
        "vz": t["vz"],
        "parent": t["parent"],
        "converted": np.zeros(n_rows, dtype=np.uint8),
        "conversion_radius": np.full(n_rows, np.nan),
        "reached_calo": prop["reached"],
        "impact_eta": np.where(prop["reached"], prop["impact_eta"], np.nan),
        "impact_phi": np.where(prop["reached"], prop["impact_phi"], np.nan),
        "deposited": deposited,
        "interaction_depth": interaction_depth,
    }
    truth = {k: np.asarray(v).astype(TRUTH_COLUMNS[k]) for k, v in truth_cols.items()}
    batch = EventBatch(
        offsets=offsets.astype(np.int64),
        hits=hits,
        truth_offsets=truth_offsets.astype(np.int64),
        truth=truth,
    )
    if not contributions:
        return batch
    c_keep = keep[c_key]
    counts = np.zeros(len(all_keys), np.int64)
    counts[np.flatnonzero(is_signal)] = np.bincount(c_key[c_keep], minlength=len(keep))[keep]
    contrib = HitContributions(
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        particle=c_row[c_keep].astype(np.int32),
        fraction=(c_dep[c_keep] / k_dep[c_key[c_keep]]).astype(np.float32),
    )
    return batch, contrib


# --------------------------------------------------------------------------------------------
# helpers for consumers
# --------------------------------------------------------------------------------------------
def hit_energy_gev(batch: EventBatch, geometry: HgcalEndcap | None = None) -> np.ndarray:
    """Calibrated energy of each hit [GeV]: signal [MIP] x the layer's dE/dx weight."""
    geometry = geometry or HgcalEndcap()
    layer = geometry.cell_layer(batch.hits["cell"])
    return batch.hits["energy"].astype(np.float64) * geometry.mip_weight[layer]


def event_energy_gev(batch: EventBatch, geometry: HgcalEndcap | None = None) -> np.ndarray:
    """Calibrated energy of each event [GeV], shape (n_events,)."""
    return np.bincount(
        batch.hit_event_index(), weights=hit_energy_gev(batch, geometry), minlength=batch.n_events
    )


def point_cloud(batch: EventBatch, geometry: HgcalEndcap | None = None) -> dict[str, np.ndarray]:
    """The hits as 5D points (x, y, z [cm], energy [MIP], time [ns]) plus layer and event."""
    geometry = geometry or HgcalEndcap()
    pos = geometry.cell_position(batch.hits["cell"])
    return {
        "x": pos["x"],
        "y": pos["y"],
        "z": pos["z"],
        "energy": batch.hits["energy"],
        "time": batch.hits["time"],
        "layer": pos["layer"],
        "event": batch.hit_event_index(),
    }
