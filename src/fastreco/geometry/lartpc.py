"""A ProtoDUNE-SP-like liquid-argon TPC readout: one collection plane seen as (wire, tick).

Coordinates of the simulation (cm): ``x`` across the wires (wire ``w`` covers
``[w * pitch, (w + 1) * pitch)``), ``y`` along the wires (invisible in this view, the plane spans
``[-wire_length / 2, wire_length / 2]``) and ``z`` the drift distance from the wire plane
(``z = tick * tick_ns * drift_velocity``, 0 at the anode). The flat cell id of a pixel is
``wire * n_ticks + tick`` (int32: the default 480 x 6000 plane has 2.9 million cells).

The readout parameters (pedestal, gain, noise, ADC range) are part of the geometry so that a
reader of stored events knows the saturation level and noise scale without the generator config.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt

from fastreco import constants as C
from fastreco.errors import InputError
from fastreco.geometry import DETECTORS

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@DETECTORS.register("lartpc")
@dataclasses.dataclass(frozen=True)
class LArTpcPlane:
    """One collection view of a single-phase LArTPC. Defaults: one ProtoDUNE-SP APA face.

    Attributes:
        n_wires: collection wires (image rows).
        n_ticks: time samples of the readout window (image columns).
        wire_pitch: wire spacing [cm].
        tick_ns: sampling period [ns].
        drift_velocity: electron drift velocity [cm/us].
        wire_length: extent along the wires [cm] (the coordinate this view does not see).
        pedestal: ADC baseline [ADC counts].
        adc_max: largest ADC code (12 bit: 4095); the digitizer saturates there.
        electrons_per_adc: electrons per ADC count at the shaped pulse's peak.
        shaping_us: peaking time of the shaper [us].
        noise_adc: incoherent noise per channel and tick [ADC rms].
        coherent_noise_adc: noise common to a group of wires per tick [ADC rms].
        coherent_group: wires per coherent-noise group (one front-end board).
    """

    n_wires: int = C.LARTPC_N_WIRES
    n_ticks: int = C.LARTPC_N_TICKS
    wire_pitch: float = C.LARTPC_WIRE_PITCH
    tick_ns: float = C.LARTPC_TICK_NS
    drift_velocity: float = C.LARTPC_DRIFT_VELOCITY
    wire_length: float = C.LARTPC_WIRE_LENGTH
    pedestal: float = C.LARTPC_PEDESTAL
    adc_max: int = C.LARTPC_ADC_MAX
    electrons_per_adc: float = C.LARTPC_ELECTRONS_PER_ADC
    shaping_us: float = C.LARTPC_SHAPING_TIME_US
    noise_adc: float = C.LARTPC_NOISE_ADC
    coherent_noise_adc: float = C.LARTPC_COHERENT_NOISE_ADC
    coherent_group: int = C.LARTPC_COHERENT_GROUP
    name: str = dataclasses.field(default="lartpc", init=False)

    def __post_init__(self) -> None:
        for field in ("n_wires", "n_ticks", "coherent_group", "adc_max"):
            value = getattr(self, field)
            if not (isinstance(value, (int, np.integer)) and value > 0):
                raise InputError("must be a positive integer", field=field, value=value)
        if self.n_wires * self.n_ticks >= 2**31:
            raise InputError(
                "n_wires * n_ticks must fit an int32 cell id",
                field="n_ticks",
                value=(self.n_wires, self.n_ticks),
            )
        for field in ("wire_pitch", "tick_ns", "drift_velocity", "wire_length", "shaping_us"):
            value = getattr(self, field)
            if not (np.isfinite(value) and value > 0):
                raise InputError("must be finite and > 0", field=field, value=value)
        for field in ("noise_adc", "coherent_noise_adc"):
            value = getattr(self, field)
            if not (np.isfinite(value) and value >= 0):
                raise InputError("must be finite and >= 0", field=field, value=value)
        if not 0 <= self.pedestal < self.adc_max:
            raise InputError("must lie in [0, adc_max)", field="pedestal", value=self.pedestal)
        if not self.electrons_per_adc > 0:
            raise InputError("must be > 0", field="electrons_per_adc", value=self.electrons_per_adc)

    # --- sizes ---------------------------------------------------------------------------------
    @property
    def n_cells(self) -> int:
        return self.n_wires * self.n_ticks

    @property
    def shape(self) -> tuple[int, int]:
        """Image shape (n_wires, n_ticks)."""
        return (self.n_wires, self.n_ticks)

    @property
    def width(self) -> float:
        """Extent across the wires [cm]."""
        return self.n_wires * self.wire_pitch

    @property
    def tick_length(self) -> float:
        """Drift distance covered in one tick [cm]."""
        return self.tick_ns * 1e-3 * self.drift_velocity

    @property
    def drift_length(self) -> float:
        """Drift distance covered by the readout window [cm]."""
        return self.n_ticks * self.tick_length

    @property
    def saturation(self) -> float:
        """Largest pedestal-subtracted signal [ADC]: stored hits at this value are saturated."""
        return float(self.adc_max - round(self.pedestal))

    @property
    def total_noise_adc(self) -> float:
        """Noise per pixel [ADC rms], incoherent and coherent added in quadrature."""
        return float(np.hypot(self.noise_adc, self.coherent_noise_adc))

    # --- addressing ----------------------------------------------------------------------------
    def cell_id(self, wire: npt.ArrayLike, tick: npt.ArrayLike) -> npt.NDArray[np.int32]:
        """Flat cell id ``wire * n_ticks + tick``; -1 outside the plane."""
        wire = np.asarray(wire, dtype=np.int64)
        tick = np.asarray(tick, dtype=np.int64)
        inside = (wire >= 0) & (wire < self.n_wires) & (tick >= 0) & (tick < self.n_ticks)
        return np.where(inside, wire * self.n_ticks + tick, -1).astype(np.int32)

    def wire_tick(self, cell: npt.ArrayLike) -> tuple[IntArray, IntArray]:
        """(wire, tick) of each cell id."""
        cell = np.asarray(cell, dtype=np.int64)
        return cell // self.n_ticks, cell % self.n_ticks

    def wire_at(self, x: npt.ArrayLike) -> IntArray:
        """Wire collecting position ``x`` [cm]; -1 outside the plane."""
        wire = np.floor(np.asarray(x, dtype=np.float64) / self.wire_pitch).astype(np.int64)
        return np.where((wire >= 0) & (wire < self.n_wires), wire, -1)

    def tick_at(self, z: npt.ArrayLike) -> IntArray:
        """Tick at which charge from drift distance ``z`` [cm] arrives; -1 outside the window."""
        tick = np.floor(np.asarray(z, dtype=np.float64) / self.tick_length).astype(np.int64)
        return np.where((tick >= 0) & (tick < self.n_ticks), tick, -1)

    def cell_position(self, cell: npt.ArrayLike) -> dict[str, FloatArray]:
        """Pixel centre: ``x`` across the wires and ``z`` drift distance [cm]; ``time`` [ns]."""
        wire, tick = self.wire_tick(cell)
        return {
            "x": (wire + 0.5) * self.wire_pitch,
            "z": (tick + 0.5) * self.tick_length,
            "time": tick * self.tick_ns,
        }

    def check_image_shape(self, shape: tuple[int, ...], *, source: str | None = None) -> None:
        """Raise :class:`InputError` unless ``shape`` is this plane's (n_wires, n_ticks)."""
        if tuple(shape) != self.shape:
            raise InputError(
                f"image shape does not match the geometry's (n_wires, n_ticks) = {self.shape}",
                source=source,
                field="adc",
                value=tuple(shape),
            )

    # --- (de)serialization ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> LArTpcPlane:
        return cls(**params)
