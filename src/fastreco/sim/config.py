"""Typed, validated configuration of a simulation run.

Every field that comes from a user is checked here, and a bad one raises an
:class:`~fastreco.errors.InputError` naming the field and the value.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from typing import Any

import numpy as np

from fastreco import constants as C
from fastreco.errors import InputError

#: Particles the single-particle gun can shoot, by their `particle`-package names.
GUN_PARTICLES: dict[str, int] = {
    "gamma": 22,
    "pi0": 111,
    "e-": 11,
    "e+": -11,
    "pi+": 211,
    "pi-": -211,
    "mu-": 13,
    "mu+": -13,
}


@functools.cache
def particle_pdg(name: str, *, field: str = "particle") -> int:
    """PDG id of a gun particle name (names as in the `particle` package: gamma, pi0, e-, ...)."""
    if name not in GUN_PARTICLES:
        raise InputError(
            f"unknown particle; valid names are {', '.join(GUN_PARTICLES)}",
            field=field,
            value=name,
        )
    from particle import Particle

    pdg = int(Particle.from_name(name).pdgid)
    assert pdg == GUN_PARTICLES[name]
    return pdg


@dataclasses.dataclass(frozen=True)
class EnergySpectrum:
    """Energy spectrum of the gun [GeV].

    Parsed from a string: ``"8"`` (fixed), ``"1:100"`` (flat in E) or ``"log:1:500"`` (flat in
    log E).
    """

    kind: str  # "fixed" | "flat" | "log"
    low: float
    high: float

    @classmethod
    def parse(cls, text: str | float, *, field: str = "energy") -> EnergySpectrum:
        if isinstance(text, (int, float)):
            text = str(text)
        parts = str(text).strip().split(":")
        kind = "fixed"
        if parts[0] == "log":
            kind, parts = "log", parts[1:]
        elif len(parts) == 2:
            kind = "flat"
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise InputError(
                "expected a value '8', a range '1:100' or a log range 'log:1:500'",
                field=field,
                value=text,
            ) from None
        if kind == "fixed" and len(values) == 1:
            values = values * 2
        if len(values) != 2 or (kind == "log" and len(parts) != 2):
            raise InputError(
                "expected a value '8', a range '1:100' or a log range 'log:1:500'",
                field=field,
                value=text,
            )
        low, high = values
        if not (math.isfinite(low) and math.isfinite(high)) or low <= 0:
            raise InputError("energies must be finite and > 0 GeV", field=field, value=text)
        if high < low or (kind != "fixed" and high == low):
            raise InputError("range must be low:high with low < high", field=field, value=text)
        return cls(kind, low, high)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.kind == "fixed":
            return np.full(n, self.low)
        if self.kind == "flat":
            return rng.uniform(self.low, self.high, n)
        return np.exp(rng.uniform(math.log(self.low), math.log(self.high), n))

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"{self.low:g}"
        prefix = "log:" if self.kind == "log" else ""
        return f"{prefix}{self.low:g}:{self.high:g}"


@dataclasses.dataclass(frozen=True)
class ReadoutConfig:
    """Crystal readout: photostatistics, intercalibration, noise, selective readout, ZS."""

    stochastic_term: float = C.ECAL_STOCHASTIC_TERM  # GeV^1/2
    noise: float = C.ECAL_NOISE_PER_CRYSTAL  # GeV per crystal
    constant_term: float = C.ECAL_CONSTANT_TERM  # intercalibration spread
    zs_threshold: float = C.ECAL_ZS_THRESHOLD  # GeV
    sr_threshold: float = C.ECAL_SR_THRESHOLD  # GeV
    sr_half_width: int = C.ECAL_SR_HALF_WIDTH  # crystals
    calibration_seed: int = 20_100  # seed of the (fixed) intercalibration map
    enabled: bool = True  # False: store true deposits only (no noise, no smearing, no ZS)

    def validate(self) -> None:
        for name in ("stochastic_term", "noise", "constant_term", "sr_threshold"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise InputError("must be finite and >= 0", field=f"readout.{name}", value=value)
        if self.enabled and self.noise > 0 and not self.zs_threshold >= self.noise:
            # Below ~1 sigma nearly every crystal of the barrel would be read out.
            raise InputError(
                f"zero-suppression threshold must be >= the noise ({self.noise} GeV)",
                field="readout.zs_threshold",
                value=self.zs_threshold,
            )
        if self.sr_half_width < 0:
            raise InputError(
                "must be >= 0", field="readout.sr_half_width", value=self.sr_half_width
            )


@dataclasses.dataclass(frozen=True)
class SimConfig:
    """A single-particle-gun run in the ECAL barrel.

    Attributes:
        particles: gun particle names; each event draws one of them uniformly.
        energy: energy spectrum, see :class:`EnergySpectrum`.
        n_events: number of events of the run.
        seed: master seed; shard ``i`` is reproducible from (seed, i) alone.
        eta_max: guns are uniform in |eta| < eta_max (must lie inside the barrel).
        events_per_shard: events per HDF5 shard (the unit of parallelism and of resume).
        vertex_sigma_z: beam-spot length [cm]; 0 puts every vertex at the origin.
        material_scale: multiplies the tracker material budget x/X0(eta); 0 = no conversions.
        field: solenoid field [T].
        max_spots: cap on the number of energy spots per EM shower (speed vs. fluctuations).
        readout: see :class:`ReadoutConfig`.
    """

    particles: tuple[str, ...] = ("gamma", "pi0")
    energy: EnergySpectrum = dataclasses.field(
        default_factory=lambda: EnergySpectrum.parse("1:100")
    )
    n_events: int = 10_000
    seed: int = 1
    eta_max: float = 1.4
    events_per_shard: int = 5_000
    vertex_sigma_z: float = 0.0
    material_scale: float = 1.0
    field: float = C.SOLENOID_FIELD
    max_spots: int = 800
    readout: ReadoutConfig = dataclasses.field(default_factory=ReadoutConfig)

    def __post_init__(self) -> None:
        if isinstance(self.particles, str):
            object.__setattr__(self, "particles", (self.particles,))
        object.__setattr__(self, "particles", tuple(self.particles))
        if not isinstance(self.energy, EnergySpectrum):
            object.__setattr__(self, "energy", EnergySpectrum.parse(self.energy))
        if isinstance(self.readout, dict):
            object.__setattr__(self, "readout", ReadoutConfig(**self.readout))
        self.validate()

    def validate(self) -> None:
        if not self.particles:
            raise InputError("at least one particle is needed", field="particle", value=[])
        for name in self.particles:
            particle_pdg(name)
        if not (isinstance(self.n_events, int) and self.n_events > 0):
            raise InputError("must be a positive integer", field="events", value=self.n_events)
        if not (isinstance(self.events_per_shard, int) and self.events_per_shard > 0):
            raise InputError(
                "must be a positive integer", field="events_per_shard", value=self.events_per_shard
            )
        if not (0 < self.eta_max <= C.ECAL_BARREL_ETA_MAX):
            raise InputError(
                f"must lie in (0, {C.ECAL_BARREL_ETA_MAX:.3f}], the barrel's eta range",
                field="eta_max",
                value=self.eta_max,
            )
        for name in ("vertex_sigma_z", "material_scale", "field"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise InputError("must be finite and >= 0", field=name, value=value)
        if self.max_spots < 10:
            raise InputError("must be >= 10", field="max_spots", value=self.max_spots)
        self.readout.validate()

    @property
    def pdg_ids(self) -> np.ndarray:
        return np.array([particle_pdg(p) for p in self.particles], dtype=np.int32)

    @property
    def n_shards(self) -> int:
        return -(-self.n_events // self.events_per_shard)

    def shard_events(self, index: int) -> int:
        return min(self.events_per_shard, self.n_events - index * self.events_per_shard)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["energy"] = str(self.energy)
        d["particles"] = list(self.particles)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SimConfig:
        return cls(**d)

    def shard_key(self) -> str:
        """Hash of everything that determines the content of a shard except its event count.

        A resumed run keeps an existing shard only if its key matches.
        """
        d = self.to_dict()
        d.pop("n_events")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
