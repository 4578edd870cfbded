"""Simulate events in a ProtoDUNE-like LArTPC collection plane (:class:`LArTpcPlane`).

An event is a set of primary particles (see :data:`EVENT_KINDS`), transported through the argon
by :mod:`fastreco.sim.lartpc_transport` and read out by :mod:`fastreco.sim.lartpc_readout`.
Between transport passes the decays and interactions at the end of tracks make secondaries:

* a stopped mu+ decays (lifetime 2.197 us); a stopped mu- decays with probability
  tau_Ar / tau_free = 0.244 (lifetime 537 ns) and is otherwise captured by the argon nucleus —
  the capture products (neutrons, de-excitation photons) are not simulated
  (``LArTpcSimConfig.muon_capture=False`` makes every mu- decay). The decay electron (Michel) has
  the spectrum dN/dx ~ x^2 (3 - 2x), x = E / 52.83 MeV (mean 37 MeV; no radiative corrections
  or bound-state smearing), isotropic, delayed by the decay time (it arrives that much later
  on the wires: a shift along the drift axis);
* a stopped pi+ decays to a 4.12 MeV mu+ (which stops and decays in turn); a stopped pi- is
  absorbed (no products simulated);
* a charged pion interacting in flight (mean path lambda_I) ends; Poisson(1) protons of 20-200
  MeV kinetic energy come out isotropically (a toy of the hadronic final state);
* a pi0 decays at once to two photons (isotropic in its rest frame).

Event kinds (``LArTpcSimConfig.kind``; each event draws one of the listed kinds):

* ``muon``, ``electron``, ``photon``, ``proton``, ``pion``, ``pi0``: ``n_particles`` gun particles
  from one vertex, isotropic, kinetic energy from ``energy`` (per-kind defaults in
  :data:`DEFAULT_ENERGY`);
* ``neutrino``: a toy neutrino interaction at one vertex: 70 % nu_mu CC-like (a muon of
  0.1-1.5 GeV), 30 % nu_e CC-like (an electron of 0.1-2 GeV), plus Poisson(1.5) protons
  (30-300 MeV), Poisson(0.6) charged pions (50-600 MeV) and Poisson(0.4) pi0 (0.2-1 GeV total);
* ``cosmic``: Poisson(``cosmics``) (at least one) cosmic muons entering through the top face
  (cos^2 zenith-angle distribution, 1-100 GeV log-flat), crossing the volume.

Any kind also gets Poisson(``cosmics``) overlaid cosmic muons when ``cosmics > 0``.

Volume: x in [0, n_wires * pitch], y in +-wire_length / 2, z (drift) in [0, drift window].
Vertices are uniform in the middle 60 % of x and z and the middle 20 % of y.

Hit conventions (the event store's ``hits/`` fields)
----------------------------------------------------
* ``cell`` = ``wire * n_ticks + tick``; ``energy`` = ADC - pedestal (float, counts; saturated
  pixels read ``geometry.saturation``); ``time`` = tick * tick_ns [ns]; ``deposit`` = true energy
  deposited in the pixel [GeV]; ``truth_particle`` = row of the dominant truth particle (-1: pure
  noise); ``truth_fraction`` its share (see :mod:`fastreco.sim.lartpc_readout`).

Truth rows (one per particle, EM cascades aggregated)
-----------------------------------------------------
Every primary and every secondary made between passes (Michel electrons, the mu+ of pi+ decays,
protons of pion interactions, the photons of pi0 decays) has a row; the electrons and photons
*inside* an EM cascade (bremsstrahlung photons, conversion pairs, Compton electrons) are
aggregated into the row of the particle that started the cascade. ``parent`` = row of the parent
(-1 for primaries). A **Michel electron** is a row with |pdg| = 11 whose parent has |pdg| = 13.
Columns used for this detector:

* ``energy``: kinetic energy at production [GeV] (photons, pi0: total energy);
* ``eta``: polar angle [rad] of the direction from the wire direction (y); ``phi``: azimuth [rad]
  in the (x, z) = (across wires, drift) plane, ``atan2(uz, ux)`` (the direction seen in the image);
* ``vx, vy, vz``: start point [cm];
* ``converted``: photons: 1 if the first interaction was a pair conversion inside the volume;
* ``conversion_radius``: photons: distance [cm] to the first interaction (conversion or Compton);
  NaN for other particles and for photons that left first;
* ``reached_calo``: 1 if the particle stopped/interacted inside the volume, 0 if it left;
* ``impact_eta``, ``impact_phi``: NaN (not used);
* ``deposited``: true energy this row (with its aggregated cascade) deposited in the plane [GeV];
* ``interaction_depth``: path length [cm] travelled (photons: to the first interaction).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any

import numpy as np

from fastreco import constants as C
from fastreco.data.store import HIT_FIELDS, TRUTH_COLUMNS, EventBatch
from fastreco.errors import InputError
from fastreco.geometry.lartpc import LArTpcPlane
from fastreco.sim import lartpc_transport as T
from fastreco.sim.config import EnergySpectrum
from fastreco.sim.lartpc_readout import Digitized, read_out

EVENT_KINDS = ("neutrino", "cosmic", "muon", "electron", "photon", "proton", "pion", "pi0")
#: Default kinetic-energy spectra [GeV] of the gun kinds (pi0: total energy).
DEFAULT_ENERGY = {
    "muon": "0.05:1.0",
    "electron": "0.05:2.0",
    "photon": "0.05:2.0",
    "proton": "0.05:0.5",
    "pion": "0.05:1.0",
    "pi0": "0.2:1.5",
}
_MASS = {
    13: C.MUON_MASS,
    211: C.CHARGED_PION_MASS,
    2212: C.PROTON_MASS,
    11: C.ELECTRON_MASS,
    22: 0.0,
    111: C.PI0_MASS,
}
_MAX_PASSES = 6
_COSMIC_MEAN_FOR_COSMIC_KIND = 2.0


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LArTpcSimConfig:
    """A run of the LArTPC simulation. Every field is validated; errors name the field.

    Attributes:
        kind: event kinds (:data:`EVENT_KINDS`); each event draws one uniformly.
        n_particles: gun particles per event for the gun kinds (1..20).
        energy: gun kinetic-energy spectrum [GeV] ("0.1:1", "log:0.05:2"); None = per-kind
            :data:`DEFAULT_ENERGY`.
        cosmics: mean number of cosmic muons overlaid on each event (``cosmic`` kind: of the
            event itself, default 2).
        n_wires, n_ticks: plane size (default one ProtoDUNE-SP APA face, 3 ms).
        noise: add incoherent and coherent electronics noise.
        threshold_sigma: zero-suppression threshold in units of the total noise rms (with
            ``noise=False`` the threshold is still computed from the geometry's noise).
        muon_capture: stopped mu- are captured with probability 1 - 0.244 (no Michel).
        step_max: longest transport step [cm].
        n_events, events_per_shard, seed: the sharded run; shard i is reproducible from
            (seed, i) alone.
    """

    kind: tuple[str, ...] = ("neutrino",)
    n_particles: int = 1
    energy: EnergySpectrum | None = None
    cosmics: float = 0.0
    n_wires: int = C.LARTPC_N_WIRES
    n_ticks: int = C.LARTPC_N_TICKS
    noise: bool = True
    threshold_sigma: float = C.LARTPC_ZS_SIGMA
    muon_capture: bool = True
    step_max: float = 0.3
    n_events: int = 100
    events_per_shard: int = 50
    seed: int = 1

    def __post_init__(self) -> None:
        kinds = (self.kind,) if isinstance(self.kind, str) else self.kind
        object.__setattr__(self, "kind", tuple(kinds))
        if self.energy is not None and not isinstance(self.energy, EnergySpectrum):
            object.__setattr__(self, "energy", EnergySpectrum.parse(self.energy))
        self.validate()

    def validate(self) -> None:
        if not self.kind:
            raise InputError("at least one event kind is needed", field="kind", value=[])
        for name in self.kind:
            if name not in EVENT_KINDS:
                raise InputError(
                    f"unknown event kind; valid kinds are {', '.join(EVENT_KINDS)}",
                    field="kind",
                    value=name,
                )
        if not (isinstance(self.n_particles, int) and 1 <= self.n_particles <= 20):
            raise InputError(
                "must be an integer in 1..20", field="n_particles", value=self.n_particles
            )
        if not (math.isfinite(self.cosmics) and 0 <= self.cosmics <= 100):
            raise InputError("must lie in [0, 100]", field="cosmics", value=self.cosmics)
        if not (math.isfinite(self.threshold_sigma) and self.threshold_sigma > 0):
            raise InputError(
                "must be finite and > 0", field="threshold_sigma", value=self.threshold_sigma
            )
        if not (math.isfinite(self.step_max) and 0.01 <= self.step_max <= 2.0):
            raise InputError("must lie in [0.01, 2] cm", field="step_max", value=self.step_max)
        for name in ("n_wires", "n_ticks", "n_events", "events_per_shard"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value > 0):
                raise InputError("must be a positive integer", field=name, value=value)
        if not isinstance(self.seed, int) or self.seed < 0:
            raise InputError("must be an integer >= 0", field="seed", value=self.seed)
        self.geometry()  # validates the plane size

    def geometry(self) -> LArTpcPlane:
        return LArTpcPlane(n_wires=self.n_wires, n_ticks=self.n_ticks)

    def threshold(self, geometry: LArTpcPlane) -> float:
        """Zero-suppression threshold [ADC above pedestal]."""
        return max(self.threshold_sigma * geometry.total_noise_adc, 1.0)

    @property
    def n_shards(self) -> int:
        return -(-self.n_events // self.events_per_shard)

    def shard_events(self, index: int) -> int:
        return min(self.events_per_shard, self.n_events - index * self.events_per_shard)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["kind"] = list(self.kind)
        d["energy"] = None if self.energy is None else str(self.energy)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LArTpcSimConfig:
        return cls(**{**d, "kind": tuple(d["kind"])})

    def shard_key(self) -> str:
        """Hash of everything that determines a shard's content except the event count."""
        d = self.to_dict()
        d.pop("n_events")
        d["detector"] = self.geometry().to_dict()
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# particles
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Primary:
    """A particle to simulate: PDG id, kinetic energy [GeV] (pi0, photon: total), start point
    (x, y, z) [cm] and direction (normalized here); ``t0`` [ns] delays its charge."""

    pdg: int
    energy: float
    position: tuple[float, float, float]
    direction: tuple[float, float, float]
    t0: float = 0.0


class _Truth:
    """Growing truth table of one event."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def add(self, pdg: int, energy: float, pos: np.ndarray, u: np.ndarray, parent: int) -> int:
        self.rows.append(
            {
                "pdg": pdg,
                "energy": energy,
                "eta": math.acos(max(-1.0, min(1.0, float(u[1])))),
                "phi": math.atan2(float(u[2]), float(u[0])),
                "vx": float(pos[0]),
                "vy": float(pos[1]),
                "vz": float(pos[2]),
                "parent": parent,
                "converted": 0,
                "conversion_radius": math.nan,
                "reached_calo": 0,
                "impact_eta": math.nan,
                "impact_phi": math.nan,
                "deposited": 0.0,
                "interaction_depth": math.nan,
            }
        )
        return len(self.rows) - 1

    def table(self) -> dict[str, np.ndarray]:
        return {
            name: np.array([r[name] for r in self.rows], dtype=dtype)
            for name, dtype in TRUTH_COLUMNS.items()
        }


def _isotropic(rng: np.random.Generator, n: int) -> np.ndarray:
    cos_t = rng.uniform(-1.0, 1.0, n)
    phi = rng.uniform(0.0, 2 * math.pi, n)
    sin_t = np.sqrt(1.0 - cos_t**2)
    return np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=1)


def _vertex(rng: np.random.Generator, geometry: LArTpcPlane) -> np.ndarray:
    return np.array(
        [
            rng.uniform(0.2, 0.8) * geometry.width,
            rng.uniform(-0.1, 0.1) * geometry.wire_length,
            rng.uniform(0.2, 0.8) * geometry.drift_length,
        ]
    )


_GUN_PDG = {"muon": 13, "electron": 11, "photon": 22, "proton": 2212, "pion": 211, "pi0": 111}
_CHARGE_SIGN = {"muon": True, "electron": True, "pion": True}


def _gun(kind: str, config: LArTpcSimConfig, rng: np.random.Generator, geometry: LArTpcPlane):
    spectrum = config.energy or EnergySpectrum.parse(DEFAULT_ENERGY[kind])
    vertex = _vertex(rng, geometry)
    out = []
    for energy, u in zip(
        spectrum.sample(rng, config.n_particles), _isotropic(rng, config.n_particles), strict=True
    ):
        pdg = _GUN_PDG[kind]
        if kind in _CHARGE_SIGN and rng.random() < 0.5:
            pdg = -pdg
        out.append(Primary(pdg, float(energy), tuple(vertex), tuple(u)))
    return out


def _neutrino(rng: np.random.Generator, geometry: LArTpcPlane) -> list[Primary]:
    vertex = tuple(_vertex(rng, geometry))
    out: list[Primary] = []

    def add(pdg: int, low: float, high: float, n: int) -> None:
        for u in _isotropic(rng, n):
            out.append(Primary(pdg, float(rng.uniform(low, high)), vertex, tuple(u)))

    if rng.random() < 0.7:
        add(13, 0.1, 1.5, 1)
    else:
        add(11, 0.1, 2.0, 1)
    add(2212, 0.03, 0.3, rng.poisson(1.5))
    for _ in range(rng.poisson(0.6)):
        add(int(rng.choice([211, -211])), 0.05, 0.6, 1)
    add(111, 0.2, 1.0, rng.poisson(0.4))
    return out


def _cosmics(rng: np.random.Generator, geometry: LArTpcPlane, mean: float, at_least: int):
    n = max(int(rng.poisson(mean)), at_least)
    out = []
    for _ in range(n):
        cos_z = rng.random() ** (1.0 / 3.0)  # dN/dcos ~ cos^2 (zenith)
        sin_z = math.sqrt(1.0 - cos_z**2)
        phi = rng.uniform(0, 2 * math.pi)
        start = (
            rng.uniform(0, geometry.width),
            0.5 * geometry.wire_length - 1e-6,
            rng.uniform(0, geometry.drift_length),
        )
        energy = math.exp(rng.uniform(math.log(1.0), math.log(100.0)))
        pdg = 13 if rng.random() < 0.45 else -13  # mu+/mu- ~ 1.2 at sea level
        out.append(
            Primary(pdg, energy, start, (sin_z * math.cos(phi), -cos_z, sin_z * math.sin(phi)))
        )
    return out


def event_primaries(
    kind: str, config: LArTpcSimConfig, rng: np.random.Generator, geometry: LArTpcPlane
) -> list[Primary]:
    """The primary particles of one event of ``kind`` (plus the overlaid cosmics)."""
    if kind == "neutrino":
        out = _neutrino(rng, geometry)
    elif kind == "cosmic":
        mean = config.cosmics if config.cosmics > 0 else _COSMIC_MEAN_FOR_COSMIC_KIND
        return _cosmics(rng, geometry, mean, 1)
    else:
        out = _gun(kind, config, rng, geometry)
    if config.cosmics > 0:
        out += _cosmics(rng, geometry, config.cosmics, 0)
    return out


def michel_energy(rng: np.random.Generator, n: int) -> np.ndarray:
    """Michel electron energies [GeV]: dN/dx ~ x^2 (3 - 2x), x = E / E_max (E_max = m_mu / 2)."""
    out = np.empty(0)
    while len(out) < n:
        x = rng.random(2 * n + 8)
        keep = rng.random(len(x)) < x**2 * (3.0 - 2.0 * x)  # max of x^2 (3 - 2x) on [0, 1] is 1
        out = np.concatenate([out, x[keep]])
    return out[:n] * C.MICHEL_MAX_ENERGY


# --------------------------------------------------------------------------------------------
# one event
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class LArTpcEvent:
    """One simulated event: digitized hits and the truth table (columns of ``TRUTH_COLUMNS``)."""

    digitized: Digitized
    truth: dict[str, np.ndarray]
    steps: np.ndarray  # (m, 9) transport steps (``lartpc_transport.S_*``)


def _row_to_particle(pdg: int, energy: float, pos, u, row: int, t0: float) -> np.ndarray:
    p = np.zeros(T.N_PCOLS)
    apdg = abs(pdg)
    p[T.P_KIND] = T.KIND_PHOTON if apdg == 22 else T.KIND_ELECTRON if apdg == 11 else T.KIND_HEAVY
    p[T.P_MASS] = _MASS[apdg]
    p[T.P_KE] = energy
    p[T.P_X : T.P_Z + 1] = pos
    p[T.P_UX : T.P_UZ + 1] = u
    p[T.P_ROW] = row
    p[T.P_LAMBDA] = C.LAR_NUCLEAR_INTERACTION_LENGTH if apdg == 211 else 0.0
    p[T.P_T0] = t0
    return p


def _pi0_photons(energy: float, u: np.ndarray, rng: np.random.Generator):
    """Lab-frame energies and directions of the two photons of a pi0 of total energy ``energy``."""
    m = C.PI0_MASS
    energy = max(energy, m * (1 + 1e-9))
    gamma = energy / m
    beta = math.sqrt(1.0 - 1.0 / gamma**2)
    d = _isotropic(rng, 1)[0]
    out = []
    for sign in (1.0, -1.0):
        k = sign * d * m / 2  # rest-frame momentum
        k_par = float(k @ u)
        k_perp = k - k_par * u
        e_lab = gamma * (m / 2 + beta * k_par)
        p_par = gamma * (k_par + beta * m / 2)
        p = p_par * u + k_perp
        out.append((e_lab, p / np.linalg.norm(p)))
    return out


def simulate_event(
    config: LArTpcSimConfig,
    rng: np.random.Generator,
    geometry: LArTpcPlane | None = None,
    *,
    primaries: list[Primary] | None = None,
    keep_image: bool = False,
) -> LArTpcEvent:
    """Simulate one event (drawing its kind from ``config.kind``, or the given ``primaries``)."""
    geometry = geometry or config.geometry()
    if primaries is None:
        kind = config.kind[int(rng.integers(len(config.kind)))]
        primaries = event_primaries(kind, config, rng, geometry)
    bounds = np.array(
        [0.0, geometry.width, -geometry.wire_length / 2, geometry.wire_length / 2, 0.0,
         geometry.drift_length]
    )  # fmt: skip
    truth = _Truth()
    pending: list[np.ndarray] = []
    for prim in primaries:
        u = np.asarray(prim.direction, dtype=np.float64)
        u = u / np.linalg.norm(u)
        pos = np.asarray(prim.position, dtype=np.float64)
        row = truth.add(prim.pdg, prim.energy, pos, u, -1)
        if abs(prim.pdg) == 111:
            for e, d in _pi0_photons(prim.energy, u, rng):
                r = truth.add(22, e, pos, d, row)
                pending.append(_row_to_particle(22, e, pos, d, r, prim.t0))
            truth.rows[row]["reached_calo"] = 1
        else:
            pending.append(_row_to_particle(prim.pdg, prim.energy, pos, u, row, prim.t0))
    all_steps = []
    for _ in range(_MAX_PASSES):
        if not pending:
            break
        particles = np.stack(pending)
        pending = []
        steps, end = T.transport(particles, bounds, config.step_max, int(rng.integers(2**31)))
        all_steps.append(steps)
        for p, e in zip(particles, end, strict=True):
            pending += _secondaries(p, e, truth, config, rng)
    steps = np.concatenate(all_steps) if all_steps else np.zeros((0, 9))
    digitized = read_out(
        steps,
        max(len(truth.rows), 1),
        geometry,
        rng,
        noise=config.noise,
        threshold=config.threshold(geometry),
        keep_image=keep_image,
    )
    table = truth.table()
    table["deposited"] = digitized.row_deposit[: len(truth.rows)].astype(np.float32)
    return LArTpcEvent(digitized=digitized, truth=table, steps=steps)


def _secondaries(
    p: np.ndarray, e: np.ndarray, truth: _Truth, config: LArTpcSimConfig, rng: np.random.Generator
) -> list[np.ndarray]:
    """Book ``p``'s end state in its truth row and make its decay / interaction products."""
    row = int(p[T.P_ROW])
    rec = truth.rows[row]
    status = int(e[T.E_STATUS])
    rec["reached_calo"] = int(status != T.STATUS_EXITED)
    rec["interaction_depth"] = float(e[T.E_PATH])
    pdg = int(rec["pdg"])
    if pdg == 22:
        if status != T.STATUS_EXITED:
            rec["conversion_radius"] = float(e[T.E_FIRST])
            rec["converted"] = int(p[T.P_KE] > C.LAR_PAIR_COMPTON_CROSSOVER)
        return []
    end = e[T.E_X : T.E_Z + 1]
    t0 = float(p[T.P_T0])
    out = []
    if status == T.STATUS_STOPPED:
        if abs(pdg) == 13:
            if pdg == 13 and config.muon_capture and rng.random() > C.MUON_MINUS_DECAY_FRACTION_AR:
                return []
            tau = C.MUON_MINUS_LIFETIME_AR_NS if pdg == 13 else C.MUON_LIFETIME_NS
            energy = float(michel_energy(rng, 1)[0]) - C.ELECTRON_MASS
            u = _isotropic(rng, 1)[0]
            e_pdg = 11 if pdg == 13 else -11
            r = truth.add(e_pdg, energy, end, u, row)
            out.append(_row_to_particle(e_pdg, energy, end, u, r, t0 + rng.exponential(tau)))
        elif pdg == 211:
            u = _isotropic(rng, 1)[0]
            r = truth.add(-13, C.PION_DECAY_MUON_KINETIC, end, u, row)
            delay = rng.exponential(C.CHARGED_PION_LIFETIME_NS)
            out.append(_row_to_particle(-13, C.PION_DECAY_MUON_KINETIC, end, u, r, t0 + delay))
    elif status == T.STATUS_INTERACTED and abs(pdg) == 211:
        for u in _isotropic(rng, rng.poisson(1.0)):
            energy = float(rng.uniform(0.02, 0.2))
            r = truth.add(2212, energy, end, u, row)
            out.append(_row_to_particle(2212, energy, end, u, r, t0))
    return out


# --------------------------------------------------------------------------------------------
# batches
# --------------------------------------------------------------------------------------------
def simulate_lartpc_batch(
    config: LArTpcSimConfig,
    n_events: int,
    seed: int | np.random.SeedSequence,
    geometry: LArTpcPlane | None = None,
) -> EventBatch:
    """``n_events`` events as one :class:`EventBatch` (hit conventions in the module docstring).

    Each event draws from its own child of ``SeedSequence(seed)``, so event ``i`` of a batch
    does not depend on the others.
    """
    geometry = geometry or config.geometry()
    seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    events = [
        simulate_event(config, np.random.default_rng(child), geometry)
        for child in seq.spawn(n_events)
    ]
    return events_to_batch(events, geometry)


def events_to_batch(events: list[LArTpcEvent], geometry: LArTpcPlane) -> EventBatch:
    """Pack simulated events into one :class:`EventBatch` (the event store's hit fields)."""
    hits: dict[str, list[np.ndarray]] = {name: [] for name in HIT_FIELDS}
    truth: dict[str, list[np.ndarray]] = {name: [] for name in TRUTH_COLUMNS}
    n_hits, n_truth = [0], [0]
    for event in events:
        d = event.digitized
        _, tick = geometry.wire_tick(d.cell)
        parts = {
            "cell": d.cell,
            "energy": d.adc,
            "time": (tick * geometry.tick_ns).astype(np.float32),
            "deposit": d.deposit,
            "truth_particle": d.truth_row,
            "truth_fraction": d.truth_fraction,
        }
        for name in HIT_FIELDS:
            hits[name].append(parts[name])
        for name in TRUTH_COLUMNS:
            truth[name].append(event.truth[name])
        n_hits.append(len(d.cell))
        n_truth.append(len(event.truth["pdg"]))
    return EventBatch(
        offsets=np.cumsum(n_hits).astype(np.int64),
        hits={
            k: np.concatenate(v).astype(HIT_FIELDS[k]) if v else np.zeros(0, HIT_FIELDS[k])
            for k, v in hits.items()
        },
        truth_offsets=np.cumsum(n_truth).astype(np.int64),
        truth={
            k: np.concatenate(v).astype(TRUTH_COLUMNS[k]) if v else np.zeros(0, TRUTH_COLUMNS[k])
            for k, v in truth.items()
        },
    )
