"""Crystal readout: deposits -> measured hits.

Per crystal with signal: measured E = deposit x (1 + intercalibration error) + photostatistics
(variance a^2 E_dep, a = stochastic term) + Gaussian electronic noise. Readout follows CMS's
selective readout: every crystal within +/- ``sr_half_width`` of a crystal whose deposit exceeds
``sr_threshold`` is read out in full (no zero suppression, so pure-noise crystals appear there with
their exact, possibly negative, values); everywhere else a crystal is kept only above the
zero-suppression threshold.

Noise in the rest of the barrel is statistically exact without drawing a number per crystal: the
number of noise-only crystals above threshold in an event is Binomial(N_free, q) with
q = P(noise > threshold), their positions are uniform among the free crystals, and their values
are drawn from the Gaussian tail above the threshold.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.special import ndtr, ndtri

from fastreco.geometry.ecal_barrel import EcalBarrel
from fastreco.sim.config import ReadoutConfig


@functools.lru_cache(maxsize=4)
def intercalibration_map(spread: float, seed: int, n_cells: int) -> np.ndarray:
    """Fixed relative miscalibration (1 + spread * N(0, 1)) of every crystal, shape (n_cells,)."""
    rng = np.random.default_rng(seed)
    return 1.0 + spread * rng.standard_normal(n_cells)


def unique_sorted(values: np.ndarray) -> np.ndarray:
    """Sorted unique values (sort-based; numpy's hash-based ``unique`` is slower for int keys)."""
    values = np.sort(values)
    if len(values) == 0:
        return values
    return values[np.concatenate([[True], values[1:] != values[:-1]])]


def time_resolution(amplitude: np.ndarray, readout: ReadoutConfig) -> np.ndarray:
    """sigma_t [ns] = N / (A / sigma_noise) (+) C, with A floored at the noise."""
    from fastreco import constants as C

    if readout.noise <= 0:
        return np.full(amplitude.shape, C.ECAL_TIME_CONSTANT_TERM)
    a_over_n = np.maximum(amplitude, readout.noise) / readout.noise
    return np.hypot(C.ECAL_TIME_NOISE_TERM / a_over_n, C.ECAL_TIME_CONSTANT_TERM)


def digitize(
    n_events: int,
    event: np.ndarray,
    cell: np.ndarray,
    deposit: np.ndarray,
    true_time: np.ndarray,
    truth_particle: np.ndarray,
    truth_fraction: np.ndarray,
    readout: ReadoutConfig,
    geometry: EcalBarrel,
    rng: np.random.Generator,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Turn per-crystal deposits into hits.

    Args:
        n_events: number of events in the batch.
        event, cell: event index and cell id of each crystal with a deposit (m,), unique pairs.
        deposit: true deposited energy [GeV] (m,).
        true_time: arrival time relative to a prompt photon [ns] (m,).
        truth_particle, truth_fraction: dominant truth row within the event and its fraction (m,).

    Returns:
        (offsets (n_events + 1,), hit columns sorted by (event, cell)) as in the event store.
    """
    n_cells = geometry.n_cells
    keys = event.astype(np.int64) * n_cells + cell
    if not readout.enabled:
        order = np.argsort(keys, kind="stable")
        hits = {
            "cell": cell[order],
            "energy": deposit[order],
            "time": true_time[order],
            "deposit": deposit[order],
            "truth_particle": truth_particle[order],
            "truth_fraction": truth_fraction[order],
        }
        return _offsets(event[order], n_events), hits

    # crystals read out in full around significant deposits
    hot = deposit > readout.sr_threshold
    width = (2 * readout.sr_half_width + 1) ** 2
    window = geometry.neighbours(cell[hot], readout.sr_half_width).reshape(int(hot.sum()), width)
    region_keys = (event[hot].astype(np.int64)[:, None] * n_cells + window)[window >= 0]
    region_keys = unique_sorted(region_keys)
    exact_keys = unique_sorted(np.concatenate([region_keys, keys]))
    at = np.searchsorted(exact_keys, keys)
    m = len(exact_keys)
    dep = np.zeros(m)
    dep[at] = deposit
    ttrue = np.zeros(m)
    ttrue[at] = true_time
    tpart = np.full(m, -1, dtype=np.int64)
    tpart[at] = truth_particle
    tfrac = np.zeros(m)
    tfrac[at] = truth_fraction
    ex_event = exact_keys // n_cells
    ex_cell = exact_keys % n_cells
    calib = intercalibration_map(readout.constant_term, readout.calibration_seed, n_cells)
    energy = (
        dep * calib[ex_cell]
        + readout.stochastic_term * np.sqrt(dep) * rng.standard_normal(m)
        + readout.noise * rng.standard_normal(m)
    )
    in_region = np.isin(exact_keys, region_keys, assume_unique=True)
    keep = in_region | (energy > readout.zs_threshold)

    # noise-only crystals above threshold elsewhere in the barrel
    q = float(ndtr(-readout.zs_threshold / readout.noise)) if readout.noise > 0 else 0.0
    n_exact = np.bincount(ex_event, minlength=n_events)
    k = rng.binomial(n_cells - n_exact, q)
    noise_event = np.repeat(np.arange(n_events, dtype=np.int64), k)
    noise_keys = noise_event * n_cells + rng.integers(0, n_cells, len(noise_event))
    noise_keys = unique_sorted(noise_keys)
    noise_keys = noise_keys[~np.isin(noise_keys, exact_keys, assume_unique=True)]
    noise_energy = readout.noise * -ndtri(q * rng.uniform(1e-12, 1.0, len(noise_keys)))

    all_keys = np.concatenate([exact_keys[keep], noise_keys])
    order = np.argsort(all_keys, kind="stable")
    all_keys = all_keys[order]
    energy_all = np.concatenate([energy[keep], noise_energy])[order]
    t_true_all = np.concatenate([ttrue[keep], np.zeros(len(noise_keys))])[order]
    time = t_true_all + time_resolution(energy_all, readout) * rng.standard_normal(len(all_keys))
    hits = {
        "cell": all_keys % n_cells,
        "energy": energy_all,
        "time": time,
        "deposit": np.concatenate([dep[keep], np.zeros(len(noise_keys))])[order],
        "truth_particle": np.concatenate([tpart[keep], np.full(len(noise_keys), -1)])[order],
        "truth_fraction": np.concatenate([tfrac[keep], np.zeros(len(noise_keys))])[order],
    }
    return _offsets(all_keys // n_cells, n_events), hits


def _offsets(sorted_event: np.ndarray, n_events: int) -> np.ndarray:
    counts = np.bincount(sorted_event, minlength=n_events)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
