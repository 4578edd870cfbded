"""From energy-deposit steps to the digitized collection-plane image and its zero-suppressed hits.

The chain, for one event on a (n_wires, n_ticks) plane (:class:`~fastreco.geometry.lartpc.
LArTpcPlane`):

1. each step is cut into sub-points every ``tick_length`` (0.08 cm) along it, sharing its energy;
2. **recombination**, modified box model [ARGONEUT-R] with the step's dE/dx:
   ``R = ln(alpha + xi) / xi``, ``xi = beta dE/dx / (rho E)``; electrons ``Q = R dE / W_ion``;
3. **drift and diffusion**: arrival tick ``(z / v + t0) / tick``; the charge of a sub-point is
   spread over +-2 wires and +-6 ticks with Gaussian weights of widths
   ``sigma_T = sqrt(2 D_T t)`` and ``sigma_L = sqrt(2 D_L t)`` (t the drift time) — diffusion
   grows as the square root of the drift distance;
4. **shaping**: each wire's charge-per-tick convolved with the CR-(RC)^4 response
   ``(t/tau)^4 exp(-t/tau)`` (peaking time 4 tau = 2 us), normalized to 1 / electrons_per_adc at
   the peak and aligned so the peak sits at the arrival tick (the fixed electronics delay
   removed, as a readout's time calibration does);
5. **noise** (optional): incoherent Gaussian per wire and tick plus a coherent Gaussian common to
   each group of ``coherent_group`` wires per tick;
6. **digitization**: ``round(pedestal + signal + noise)`` clipped to [0, adc_max] (saturation);
7. **zero suppression**: pixels with ``ADC - pedestal >= threshold`` are stored.

Truth of a stored pixel: the energy of every sub-point is booked to the pixel its undiffused
charge arrives in (``deposit``), by truth row; the dominant row is ``truth_particle`` and its
share ``truth_fraction``. A stored pixel with no booked deposit (reached only by diffusion or the
shaping tail) takes the truth of the nearest pixel with a deposit within +-2 wires and +-15
ticks (its ``deposit`` stays 0); farther ones, pure noise, get -1.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt
from scipy.signal import oaconvolve
from scipy.special import ndtr

from fastreco import constants as C
from fastreco.geometry.lartpc import LArTpcPlane
from fastreco.sim import lartpc_transport as T

_WIRE_HALF = 2  # wires each side a sub-point's charge is spread over
_TICK_HALF = 6  # ticks each side
_TRUTH_WIRE_WINDOW = 2
_TRUTH_TICK_WINDOW = 15
_MIN_DEDX_LENGTH = 0.03  # cm: shortest length used for a deposit's dE/dx (point deposits)


@dataclasses.dataclass
class Digitized:
    """One digitized event.

    Attributes:
        cell: int32 (n_hits,) stored pixels (``wire * n_ticks + tick``), sorted.
        adc: float32 (n_hits,) ``ADC - pedestal`` of the stored pixels.
        deposit: float32 (n_hits,) true energy booked to the pixel [GeV].
        truth_row: int32 (n_hits,) dominant truth row, -1 for noise.
        truth_fraction: float32 (n_hits,) that row's share of the pixel's deposit.
        row_deposit: float64 (n_rows,) true energy each truth row deposited in the plane [GeV].
        image: int16 (n_wires, n_ticks) raw ADC codes if kept, else None.
    """

    cell: npt.NDArray[np.int32]
    adc: npt.NDArray[np.float32]
    deposit: npt.NDArray[np.float32]
    truth_row: npt.NDArray[np.int32]
    truth_fraction: npt.NDArray[np.float32]
    row_deposit: npt.NDArray[np.float64]
    image: npt.NDArray[np.int16] | None = None


def recombination(
    dedx_mev_cm: npt.ArrayLike, field_kv_cm: float = C.LARTPC_DRIFT_FIELD
) -> np.ndarray:
    """Fraction of ionization electrons escaping recombination (modified box model)."""
    xi = (
        C.LAR_BOX_BETA
        * np.asarray(dedx_mev_cm, dtype=np.float64)
        / (C.LAR_BOX_DENSITY * field_kv_cm)
    )
    xi = np.maximum(xi, 1e-6)
    return np.log(C.LAR_BOX_ALPHA + xi) / xi


def diffusion_sigma(
    drift_cm: npt.ArrayLike, geometry: LArTpcPlane
) -> tuple[np.ndarray, np.ndarray]:
    """(longitudinal, transverse) diffusion widths [cm] after drifting ``drift_cm``."""
    t_ns = np.maximum(np.asarray(drift_cm, dtype=np.float64), 0.0) / (
        geometry.drift_velocity * 1e-3
    )
    return np.sqrt(2.0 * C.LAR_DIFFUSION_LONG * t_ns), np.sqrt(2.0 * C.LAR_DIFFUSION_TRANS * t_ns)


def shaping_response(geometry: LArTpcPlane) -> tuple[np.ndarray, int]:
    """Shaper response per tick (peak 1) and the tick index of its peak."""
    tau = geometry.shaping_us * 1e3 / 4.0 / geometry.tick_ns  # in ticks
    t = np.arange(int(np.ceil(40 * tau)) + 1, dtype=np.float64)
    h = (t / tau) ** 4 * np.exp(-t / tau)
    return h / h.max(), int(np.argmax(h))


def _sub_points(steps: np.ndarray, geometry: LArTpcPlane) -> dict[str, np.ndarray]:
    p0, p1 = steps[:, T.S_X0 : T.S_Z0 + 1], steps[:, T.S_X1 : T.S_Z1 + 1]
    length = np.linalg.norm(p1 - p0, axis=1)
    n_sub = np.clip(np.ceil(length / geometry.tick_length), 1, 10_000).astype(np.int64)
    idx = np.repeat(np.arange(len(steps)), n_sub)
    first = np.cumsum(n_sub) - n_sub
    frac = (np.arange(len(idx)) - first[idx] + 0.5) / n_sub[idx]
    pos = p0[idx] + frac[:, None] * (p1 - p0)[idx]
    energy = steps[idx, T.S_DE] / n_sub[idx]
    dedx = steps[:, T.S_DE] * 1e3 / np.maximum(length, _MIN_DEDX_LENGTH)
    charge = energy * 1e9 / C.LAR_W_ION_EV * recombination(dedx)[idx]
    return {
        "x": pos[:, 0],
        "z": pos[:, 2],
        "energy": energy,
        "charge": charge,
        "t0": steps[idx, T.S_T0],
        "row": steps[idx, T.S_ROW].astype(np.int64),
    }


def drift_charge(steps: np.ndarray, geometry: LArTpcPlane) -> np.ndarray:
    """Electrons per (wire, tick) reaching the wires from ``steps`` (after recombination and
    diffusion, before shaping), float64 (n_wires, n_ticks)."""
    return _charge_image(_sub_points(steps, geometry), geometry)


def _charge_image(sub: dict[str, np.ndarray], geometry: LArTpcPlane) -> np.ndarray:
    wire_f = sub["x"] / geometry.wire_pitch
    drift_ns = np.maximum(sub["z"], 0.0) / (geometry.drift_velocity * 1e-3)
    tick_f = (drift_ns + sub["t0"]) / geometry.tick_ns
    sig_l, sig_t = diffusion_sigma(sub["z"], geometry)
    sw = np.maximum(sig_t / geometry.wire_pitch, 1e-3)
    st = np.maximum(sig_l / geometry.tick_length, 1e-3)
    dw = np.arange(-_WIRE_HALF, _WIRE_HALF + 1)
    dt = np.arange(-_TICK_HALF, _TICK_HALF + 1)
    w = np.floor(wire_f).astype(np.int64)[:, None] + dw  # (n, 5)
    t = np.floor(tick_f).astype(np.int64)[:, None] + dt  # (n, 13)
    ww = ndtr((w + 1 - wire_f[:, None]) / sw[:, None]) - ndtr((w - wire_f[:, None]) / sw[:, None])
    wt = ndtr((t + 1 - tick_f[:, None]) / st[:, None]) - ndtr((t - tick_f[:, None]) / st[:, None])
    weight = (sub["charge"][:, None, None] * ww[:, :, None] * wt[:, None, :]).ravel()
    wires = np.broadcast_to(w[:, :, None], (len(w), len(dw), len(dt))).ravel()
    ticks = np.broadcast_to(t[:, None, :], (len(t), len(dw), len(dt))).ravel()
    ok = (wires >= 0) & (wires < geometry.n_wires) & (ticks >= 0) & (ticks < geometry.n_ticks)
    ok &= weight > 0
    cells = wires[ok] * geometry.n_ticks + ticks[ok]
    image = np.bincount(cells, weights=weight[ok], minlength=geometry.n_cells)
    return image.reshape(geometry.shape)


def shape_signal(charge: np.ndarray, geometry: LArTpcPlane) -> np.ndarray:
    """Shaped signal [ADC] float32 (n_wires, n_ticks) from electrons per (wire, tick)."""
    h, peak = shaping_response(geometry)
    signal = np.zeros(geometry.shape, dtype=np.float32)
    rows = np.flatnonzero(charge.any(axis=1))
    if len(rows) == 0:
        return signal
    # s[t] = sum_j q[j] h[t + peak - j]: charge in ticks [c0, c1] reaches [c0 - peak, c1 + tail]
    cols = np.flatnonzero(charge[rows].any(axis=0))
    t0 = max(int(cols[0]) - peak, 0)
    t1 = min(int(cols[-1]) + len(h) - peak, geometry.n_ticks)
    lo = max(t0 + peak - (len(h) - 1), 0)
    block = charge[rows, lo : min(t1 + peak, geometry.n_ticks)].astype(np.float32)
    full = oaconvolve(block, h[None, :].astype(np.float32), axes=1)
    start = t0 + peak - lo
    signal[rows, t0:t1] = full[:, start : start + t1 - t0] / np.float32(geometry.electrons_per_adc)
    return signal


def digitize(
    signal: np.ndarray, geometry: LArTpcPlane, rng: np.random.Generator | None, *, noise: bool
) -> npt.NDArray[np.int16]:
    """Raw ADC codes int16 (n_wires, n_ticks): pedestal + signal (+ noise), rounded, clipped."""
    analog = signal + np.float32(geometry.pedestal)
    if noise:
        assert rng is not None
        analog += rng.standard_normal(geometry.shape, dtype=np.float32) * np.float32(
            geometry.noise_adc
        )
        group = geometry.coherent_group
        n_groups = -(-geometry.n_wires // group)
        common = rng.standard_normal((n_groups, geometry.n_ticks), dtype=np.float32)
        common *= np.float32(geometry.coherent_noise_adc)
        full = geometry.n_wires // group
        if full:
            analog[: full * group].reshape(full, group, -1)[...] += common[:full, None, :]
        if full < n_groups:
            analog[full * group :] += common[full]
    np.rint(analog, out=analog)
    np.clip(analog, 0, geometry.adc_max, out=analog)
    return analog.astype(np.int16)


def _book_truth(
    sub: dict[str, np.ndarray], geometry: LArTpcPlane, n_rows: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel with a deposit: sorted cells, deposit, dominant row, its fraction; per row sums."""
    wire = np.floor(sub["x"] / geometry.wire_pitch).astype(np.int64)
    drift_ns = np.maximum(sub["z"], 0.0) / (geometry.drift_velocity * 1e-3)
    tick = np.floor((drift_ns + sub["t0"]) / geometry.tick_ns).astype(np.int64)
    ok = (wire >= 0) & (wire < geometry.n_wires) & (tick >= 0) & (tick < geometry.n_ticks)
    ok &= (sub["z"] >= 0) & (sub["z"] <= geometry.drift_length)
    cell = wire[ok] * geometry.n_ticks + tick[ok]
    row, energy = sub["row"][ok], sub["energy"][ok]
    row_deposit = np.bincount(row, weights=energy, minlength=n_rows)
    key, inverse = np.unique(cell * n_rows + row, return_inverse=True)
    dep = np.bincount(inverse, weights=energy)
    key_cell, key_row = key // n_rows, key % n_rows
    cells, start = np.unique(key_cell, return_index=True)
    total = np.add.reduceat(dep, start) if len(dep) else np.zeros(0)
    order = np.lexsort((-dep, key_cell))  # by cell, largest deposit first
    best = order[np.searchsorted(key_cell[order], cells)]
    frac = np.divide(dep[best], total, out=np.ones_like(total), where=total > 0)
    return cells, total, key_row[best].astype(np.int32), frac, row_deposit


def _borrow_truth(orphans: np.ndarray, dep_cells: np.ndarray, geometry: LArTpcPlane) -> np.ndarray:
    """Index into ``dep_cells`` of the nearest deposit pixel of each orphan cell, -1 if none."""
    n_t = geometry.n_ticks
    wire, tick = orphans // n_t, orphans % n_t
    best = np.full(len(orphans), -1, dtype=np.int64)
    best_d = np.full(len(orphans), np.inf)
    if len(dep_cells) == 0:
        return best
    for dw in range(-_TRUTH_WIRE_WINDOW, _TRUTH_WIRE_WINDOW + 1):
        w = wire + dw
        target = w * n_t + tick
        pos = np.searchsorted(dep_cells, target)
        for cand in (pos - 1, pos):
            valid = (cand >= 0) & (cand < len(dep_cells)) & (w >= 0) & (w < geometry.n_wires)
            c = dep_cells[np.clip(cand, 0, len(dep_cells) - 1)]
            valid &= (c // n_t == w) & (np.abs(c % n_t - tick) <= _TRUTH_TICK_WINDOW)
            dist = np.hypot(dw * geometry.wire_pitch, (c % n_t - tick) * geometry.tick_length)
            better = valid & (dist < best_d)
            best[better] = cand[better]
            best_d[better] = dist[better]
    return best


def read_out(
    steps: np.ndarray,
    n_rows: int,
    geometry: LArTpcPlane,
    rng: np.random.Generator,
    *,
    noise: bool = True,
    threshold: float | None = None,
    keep_image: bool = False,
) -> Digitized:
    """Digitize one event's steps (``lartpc_transport.S_*`` columns) and zero-suppress it.

    Args:
        steps: (m, 9) energy-deposit steps.
        n_rows: number of truth rows of the event (rows in ``steps`` index them).
        geometry: the plane.
        rng: generator of the noise.
        noise: add incoherent and coherent noise.
        threshold: zero-suppression threshold [ADC above pedestal]; default
            ``LARTPC_ZS_SIGMA`` x the total noise (at least 1 ADC).
        keep_image: also return the dense raw ADC image.
    """
    if threshold is None:
        threshold = max(C.LARTPC_ZS_SIGMA * geometry.total_noise_adc, 1.0)
    sub = _sub_points(steps, geometry)
    charge = _charge_image(sub, geometry)
    raw = digitize(shape_signal(charge, geometry), geometry, rng, noise=noise)
    ped = np.int16(round(geometry.pedestal))
    cell = np.flatnonzero(raw.ravel() >= ped + np.ceil(threshold)).astype(np.int64)
    adc = (raw.ravel()[cell] - ped).astype(np.float32)
    dep_cells, dep_total, dep_row, dep_frac, row_deposit = _book_truth(sub, geometry, n_rows)
    deposit = np.zeros(len(cell), dtype=np.float32)
    truth_row = np.full(len(cell), -1, dtype=np.int32)
    truth_fraction = np.zeros(len(cell), dtype=np.float32)
    pos = np.searchsorted(dep_cells, cell)
    pos_c = np.clip(pos, 0, max(len(dep_cells) - 1, 0))
    exact = (pos < len(dep_cells)) & (dep_cells[pos_c] == cell) if len(dep_cells) else pos < 0
    deposit[exact] = dep_total[pos[exact]]
    truth_row[exact] = dep_row[pos[exact]]
    truth_fraction[exact] = dep_frac[pos[exact]]
    orphan = np.flatnonzero(~exact)
    near = _borrow_truth(cell[orphan], dep_cells, geometry)
    has = near >= 0
    truth_row[orphan[has]] = dep_row[near[has]]
    truth_fraction[orphan[has]] = dep_frac[near[has]]
    return Digitized(
        cell=cell.astype(np.int32),
        adc=adc,
        deposit=deposit,
        truth_row=truth_row,
        truth_fraction=truth_fraction,
        row_deposit=row_deposit,
        image=raw if keep_image else None,
    )
