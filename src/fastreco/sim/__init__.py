"""Simulation: guns, decays, conversions, parametrized showers, readout, sharded runs."""

from fastreco.sim.config import EnergySpectrum, ReadoutConfig, SimConfig
from fastreco.sim.engine import simulate

__all__ = ["EnergySpectrum", "ReadoutConfig", "SimConfig", "simulate"]
