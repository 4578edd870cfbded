"""Simulate a batch of single-particle events in the ECAL barrel.

The chain, vectorized over the events of a batch:

1. gun: one particle per event (uniform in eta and phi, energy from the spectrum, optional
   beam-spot z smearing);
2. decays: pi0 -> gamma gamma, isotropic in the rest frame;
3. conversions: each photon converts in the tracker material with P = 1 - exp(-7/9 x/X0(eta)),
   the e+ e- pair (Bethe-Heitler energy sharing) then bends in the solenoid field;
4. propagation to the crystal front faces (straight lines or helices);
5. showers in the crystals (:mod:`fastreco.sim.showers`);
6. readout (:mod:`fastreco.sim.digitize`).

Truth keeps every particle: the gun particle, pi0 photons, conversion electrons, with parents.
"""

from __future__ import annotations

import numpy as np

from fastreco import constants as C
from fastreco.data.store import TRUTH_COLUMNS, EventBatch
from fastreco.errors import InputError
from fastreco.geometry.ecal_barrel import EcalBarrel
from fastreco.sim import kinematics as K
from fastreco.sim import showers
from fastreco.sim.config import SimConfig
from fastreco.sim.digitize import digitize

_MASS = {22: 0.0, 111: C.PI0_MASS, 11: C.ELECTRON_MASS, 211: 0.13957039, 13: 0.1056583755}
_CHARGE = {22: 0, 111: 0, 11: -1, -11: 1, 211: 1, -211: -1, 13: -1, -13: 1}


def _mass(pdg: np.ndarray) -> np.ndarray:
    return (
        np.vectorize(lambda p: _MASS[abs(int(p))], otypes=[float])(pdg)
        if len(pdg)
        else (np.zeros(0))
    )


def _charge(pdg: np.ndarray) -> np.ndarray:
    return (
        np.vectorize(lambda p: _CHARGE[int(p)], otypes=[float])(pdg) if len(pdg) else (np.zeros(0))
    )


def _check_energies(config: SimConfig) -> None:
    heaviest = max(_MASS[abs(int(p))] for p in config.pdg_ids)
    if config.energy.low <= heaviest:
        raise InputError(
            f"the lowest energy must exceed the heaviest particle's mass ({heaviest:.4f} GeV)",
            field="energy",
            value=str(config.energy),
        )


class _Particles:
    """A growing column table of particles (global rows, parents as global rows)."""

    def __init__(self) -> None:
        self.cols: dict[str, list[np.ndarray]] = {}

    def add(self, **cols: np.ndarray) -> np.ndarray:
        start = self.n
        for k, v in cols.items():
            self.cols.setdefault(k, []).append(np.asarray(v))
        return np.arange(start, self.n)

    @property
    def n(self) -> int:
        return sum(len(a) for a in self.cols.get("event", []))

    def table(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) for k, v in self.cols.items()}


def simulate_batch(
    config: SimConfig,
    n_events: int,
    seed: int | np.random.SeedSequence,
    geometry: EcalBarrel | None = None,
) -> EventBatch:
    """Simulate ``n_events`` events; identical output for identical (config, n_events, seed)."""
    _check_energies(config)
    geometry = geometry or EcalBarrel()
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    rng = np.random.default_rng(ss)
    showers.seed(int(ss.generate_state(1, np.uint32)[0] & 0x7FFFFFFF))

    # 1. gun ---------------------------------------------------------------------------------
    n = n_events
    pdg = rng.choice(config.pdg_ids, size=n)
    energy = config.energy.sample(rng, n)
    eta = rng.uniform(-config.eta_max, config.eta_max, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    vz = rng.normal(0.0, config.vertex_sigma_z, n) if config.vertex_sigma_z > 0 else np.zeros(n)
    vertex = np.stack([np.zeros(n), np.zeros(n), vz], axis=1)
    direction = K.direction_from_eta_phi(eta, phi)
    table = _Particles()
    nan = np.full(n, np.nan)
    table.add(
        event=np.arange(n),
        pdg=pdg,
        energy=energy,
        dir=direction,
        vtx=vertex,
        parent=np.full(n, -1),
        t0=np.zeros(n),
        conv_r=nan,
        stage=np.full(n, 1),
    )

    # 2. pi0 -> gamma gamma ------------------------------------------------------------------
    is_pi0 = pdg == 111
    if is_pi0.any():
        e1, d1, e2, d2 = K.two_body_decay_massless(
            energy[is_pi0], direction[is_pi0], C.PI0_MASS, rng
        )
        rows = np.flatnonzero(is_pi0)
        m = len(rows)
        for e_g, d_g in ((e1, d1), (e2, d2)):
            table.add(
                event=rows,
                pdg=np.full(m, 22),
                energy=e_g,
                dir=d_g,
                vtx=vertex[rows],
                parent=rows,
                t0=np.zeros(m),
                conv_r=np.full(m, np.nan),
                stage=np.full(m, 2),
            )

    # 3. conversions in the tracker ------------------------------------------------------------
    t = table.table()
    photons = np.flatnonzero(t["pdg"] == 22)
    conv_r = t["conv_r"]
    if photons.size and config.material_scale > 0:
        g_eta, _ = K.eta_phi_from_vector(t["dir"][photons])
        x0 = K.material_budget(g_eta, config.material_scale)
        converts = rng.uniform(size=photons.size) < K.conversion_probability(x0)
        conv_rows = photons[converts]
        if conv_rows.size:
            radius = K.sample_conversion_radius(x0[converts], rng)
            d_g = t["dir"][conv_rows]
            v_g = t["vtx"][conv_rows]
            s = radius / np.hypot(d_g[:, 0], d_g[:, 1])
            point = v_g + s[:, None] * d_g
            frac = K.sample_pair_energy_fraction(conv_rows.size, rng)
            e_g = t["energy"][conv_rows]
            m = conv_rows.size
            for pdg_e, f in ((11, frac), (-11, 1.0 - frac)):
                table.add(
                    event=t["event"][conv_rows],
                    pdg=np.full(m, pdg_e),
                    energy=np.maximum(f * e_g, 2 * C.ELECTRON_MASS),
                    dir=d_g,
                    vtx=point,
                    parent=conv_rows,
                    t0=t["t0"][conv_rows] + s / C.SPEED_OF_LIGHT_CM_PER_NS,
                    conv_r=np.full(m, np.nan),
                    stage=np.full(m, 3),
                )
            conv_r = conv_r.copy()
            conv_r[conv_rows] = radius
    t = table.table()
    t["conv_r"][: len(conv_r)] = conv_r
    n_rows = len(t["event"])
    converted = np.isfinite(t["conv_r"])

    # 4. propagation to the front faces ----------------------------------------------------------
    final = (t["pdg"] != 111) & ~converted
    idx = np.flatnonzero(final)
    mass = _mass(t["pdg"])
    charge = _charge(t["pdg"])
    momentum = np.sqrt(np.maximum(t["energy"] ** 2 - mass**2, 0.0))
    impact, impact_dir, path, reached = K.propagate_to_cylinder(
        t["vtx"][idx],
        t["dir"][idx],
        momentum[idx],
        charge[idx],
        geometry.inner_radius,
        config.field,
    )
    imp_eta = np.full(n_rows, np.nan)
    imp_phi = np.full(n_rows, np.nan)
    with np.errstate(invalid="ignore"):
        e_, p_ = K.eta_phi_from_vector(impact)
    reached &= np.abs(e_) < geometry.eta_max
    imp_eta[idx[reached]] = e_[reached]
    imp_phi[idx[reached]] = p_[reached]
    reached_all = np.zeros(n_rows, dtype=bool)
    reached_all[idx[reached]] = True
    # arrival time relative to a prompt photon from the origin to the impact point
    t_arrival = np.zeros(n_rows)
    t_arrival[idx[reached]] = (
        t["t0"][idx[reached]]
        + (path[reached] - np.linalg.norm(impact[reached], axis=1)) / C.SPEED_OF_LIGHT_CM_PER_NS
    )

    # 5. showers ---------------------------------------------------------------------------------
    sidx = idx[reached]
    spdg = np.abs(t["pdg"][sidx])
    kind = np.select(
        [spdg == 22, spdg == 11, spdg == 211, spdg == 13],
        [showers.KIND_PHOTON, showers.KIND_ELECTRON, showers.KIND_HADRON, showers.KIND_MUON],
    ).astype(np.int64)
    start = np.zeros(len(sidx))
    is_photon = kind == showers.KIND_PHOTON
    start[is_photon] = rng.exponential(C.PHOTON_CONVERSION_LENGTH_X0, int(is_photon.sum()))
    is_hadron = kind == showers.KIND_HADRON
    start[is_hadron] = rng.exponential(C.PBWO4_NUCLEAR_INTERACTION_LENGTH, int(is_hadron.sum()))
    interaction_depth = np.full(n_rows, np.nan)
    interaction_depth[sidx[is_hadron]] = start[is_hadron]
    geo = (
        geometry.eta_max,
        geometry.deta,
        geometry.dphi,
        geometry.n_eta,
        geometry.n_phi,
        geometry.inner_radius,
        geometry.crystal_length,
    )
    # the spot budget is per generated particle, shared by its daughters in proportion to energy
    primary_energy = t["energy"][t["event"][sidx]]
    spot_cap = np.maximum(config.max_spots * t["energy"][sidx] / primary_energy, 10).astype(
        np.int64
    )
    p_i, ieta, iphi, e_dep, per_particle = showers.deposit_showers(
        kind,
        t["energy"][sidx],
        mass[sidx],
        start,
        impact[reached],
        impact_dir[reached],
        geo,
        spot_cap,
    )
    rows = sidx[p_i]
    deposited = np.zeros(n_rows)
    deposited[sidx] = per_particle

    # per (event, cell): total deposit, dominant particle and its share
    cell = geometry.cell_id(ieta, iphi)
    ev = t["event"][rows]
    keys = ev * geometry.n_cells + cell
    order = np.lexsort((-e_dep, keys))
    keys_s, rows_s, e_s = keys[order], rows[order], e_dep[order]
    first = np.concatenate([[True], keys_s[1:] != keys_s[:-1]])
    group = np.cumsum(first) - 1
    total = np.bincount(group, weights=e_s)
    dom_row = rows_s[first]
    dom_frac = e_s[first] / total

    # rows sorted by event: the truth table's order; parents as rows within the event
    t_order = np.lexsort((np.arange(n_rows), t["event"]))
    new_index = np.empty(n_rows, dtype=np.int64)
    new_index[t_order] = np.arange(n_rows)
    ev_sorted = t["event"][t_order]
    truth_offsets = np.concatenate([[0], np.cumsum(np.bincount(ev_sorted, minlength=n))])
    first_row = truth_offsets[:-1]

    # deposits of descendants count for their ancestors: conversion electrons into their photon,
    # then photons into their pi0 (each stage's parents were created in an earlier stage)
    parent = t["parent"]
    total_dep = deposited.copy()
    for stage in (3, 2):
        r = np.flatnonzero(t["stage"] == stage)
        np.add.at(total_dep, parent[r], total_dep[r])

    g_eta, g_phi = K.eta_phi_from_vector(t["dir"])
    local_parent = np.where(parent >= 0, new_index[np.maximum(parent, 0)], -1)
    local_parent = np.where(parent >= 0, local_parent - first_row[t["event"]], -1)
    truth_cols = {
        "pdg": t["pdg"],
        "energy": t["energy"],
        "eta": g_eta,
        "phi": g_phi,
        "vx": t["vtx"][:, 0],
        "vy": t["vtx"][:, 1],
        "vz": t["vtx"][:, 2],
        "parent": local_parent,
        "converted": converted,
        "conversion_radius": t["conv_r"],
        "reached_calo": reached_all,
        "impact_eta": imp_eta,
        "impact_phi": imp_phi,
        "deposited": total_dep,
        "interaction_depth": interaction_depth,
    }
    truth = {k: np.asarray(v)[t_order].astype(TRUTH_COLUMNS[k]) for k, v in truth_cols.items()}

    # 6. readout ---------------------------------------------------------------------------------
    hit_event = keys_s[first] // geometry.n_cells
    local_dom = new_index[dom_row] - first_row[hit_event]
    offsets, hits = digitize(
        n,
        hit_event,
        keys_s[first] % geometry.n_cells,
        total,
        t_arrival[dom_row],
        local_dom,
        dom_frac,
        config.readout,
        geometry,
        rng,
    )
    return EventBatch(
        offsets=offsets, hits=hits, truth_offsets=truth_offsets.astype(np.int64), truth=truth
    )
