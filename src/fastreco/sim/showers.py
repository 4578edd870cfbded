"""Parametrized showers in the crystals, compiled with numba.

* EM showers follow Grindhammer & Peters (hep-ex/0001020), the GFlash parametrization for
  homogeneous media: each shower draws correlated (ln T, ln alpha) for its Gamma-distributed
  longitudinal profile dE/dt ~ t^(alpha-1) exp(-beta t), beta = (alpha-1)/T, then deposits N equal
  energy spots, each at a depth from that profile and a radius from the two-component
  (core + tail) radial profile f(r) = 2 r R^2 / (r^2 + R^2)^2 in Moliere units. A photon first
  travels an exponential depth of mean 9/7 X0 before converting.
* Charged hadrons: a MIP track (Landau fluctuations, Moyal approximation, with the PDG
  most-probable value) up to the first inelastic interaction, drawn from an exponential of mean
  lambda_I; then a hadronic shower whose EM fraction fluctuates event by event, with the non-EM
  part seen with response h/e < 1 and a wider lateral profile. Muons: MIP tracks.

Spots are placed in 3D along the particle's true direction from its impact point on the crystal
front face, and each is assigned to the crystal whose projective (eta, phi) contains it; spots
beyond the crystal's back face leak out. Randomness comes from numba's generator, seeded per
shard with :func:`seed`.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from fastreco import constants as C

KIND_ELECTRON = 0
KIND_PHOTON = 1
KIND_HADRON = 2
KIND_MUON = 3

#: Half width (crystals) of the window in which one shower's deposits are accumulated.
SHOWER_WINDOW_HALF_WIDTH = 10

_Z = C.PBWO4_Z_EFF
_X0 = C.PBWO4_RADIATION_LENGTH
_RM = C.PBWO4_MOLIERE_RADIUS
_RADIAL_SCALE = C.GP_RADIAL_SCALE
_EC = C.PBWO4_CRITICAL_ENERGY
_LAMBDA_I = C.PBWO4_NUCLEAR_INTERACTION_LENGTH
_LN_Z = math.log(_Z)
_ME_EV = C.ELECTRON_MASS * 1e9
_I_EV = C.PBWO4_MEAN_EXCITATION_ENERGY_EV
_PLASMA_EV = C.PLASMA_ENERGY_COEFF_EV * math.sqrt(C.PBWO4_DENSITY * C.PBWO4_Z_OVER_A)
_XI_PER_CM = 0.5 * C.LANDAU_K * C.PBWO4_Z_OVER_A * C.PBWO4_DENSITY  # GeV/cm (times 1/beta^2)
_MIP_STEP = 0.5  # cm between MIP energy points along a track
_MIP_MAX_STEPS = 100


@numba.njit(cache=True, error_model="numpy", fastmath=True)
def seed(value: int) -> None:
    """Seed numba's random generator (per thread) for a reproducible shard."""
    np.random.seed(value)


@numba.njit(cache=True, error_model="numpy", fastmath=True)
def gp_longitudinal(energy: float) -> tuple[float, float, float]:
    """Draw (alpha, T, mean alpha) of one EM shower's longitudinal profile (GP eqs. for homo.)."""
    lny = math.log(energy / _EC)
    mu_t = math.log(lny + C.GP_T1)
    mu_a = math.log(C.GP_A1 + (C.GP_A2 + C.GP_A3 / _Z) * lny)
    sig_t = 1.0 / (C.GP_SIGT1 + C.GP_SIGT2 * lny)
    sig_a = 1.0 / (C.GP_SIGA1 + C.GP_SIGA2 * lny)
    rho = C.GP_RHO1 + C.GP_RHO2 * lny
    z1 = np.random.standard_normal()
    z2 = np.random.standard_normal()
    c1 = math.sqrt((1.0 + rho) / 2.0)
    c2 = math.sqrt((1.0 - rho) / 2.0)
    tmax = math.exp(mu_t + sig_t * (c1 * z1 + c2 * z2))
    alpha = math.exp(mu_a + sig_a * (c1 * z1 - c2 * z2))
    return max(alpha, 1.05), tmax, math.exp(mu_a)


@numba.njit(cache=True, error_model="numpy", fastmath=True)
def n_spots(energy: float, max_spots: int) -> int:
    """GP's number of spots, 93 ln(Z) E^0.876, capped at ``max_spots``."""
    n = int(math.ceil(C.GP_SPOT_N1 * _LN_Z * energy**C.GP_SPOT_N2))
    return max(1, min(n, max_spots))


_GRID_STEP = 0.2  # X0, depth grid of the tabulated longitudinal profile
_GRID_N = 200  # grid up to 40 X0 (the crystals are 25.8 X0 deep)
_QUANTILES = 1024


@numba.njit(cache=True, error_model="numpy", fastmath=True)
def _profile_tables(
    energy: float, alpha: float, tmax: float, mean_alpha: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-shower tables: depth quantiles of the Gamma profile and radial parameters vs depth.

    Sampling a depth is then one uniform and a table look-up instead of a Gamma variate; the
    tables are exact to the grid step (0.2 X0, linear interpolation between quantiles).

    Returns:
        quantiles (_QUANTILES + 1,) [X0], and on the depth grid: core radius, tail radius
        [Moliere radii] and core probability (_GRID_N,).
    """
    beta = (alpha - 1.0) / tmax
    ln_e = math.log(energy)
    tau_scale = (alpha - 1.0) / alpha * mean_alpha / (mean_alpha - 1.0) / tmax
    cdf = np.empty(_GRID_N + 1)
    cdf[0] = 0.0
    prev = 0.0
    for k in range(1, _GRID_N + 1):
        t = k * _GRID_STEP
        cur = math.exp((alpha - 1.0) * math.log(t) - beta * t)
        cdf[k] = cdf[k - 1] + 0.5 * (prev + cur)
        prev = cur
    cdf /= cdf[_GRID_N]
    quant = np.empty(_QUANTILES + 1)
    k = 0
    for q in range(_QUANTILES + 1):
        target = q / _QUANTILES
        while k < _GRID_N - 1 and cdf[k + 1] < target:
            k += 1
        span = cdf[k + 1] - cdf[k]
        frac = (target - cdf[k]) / span if span > 0 else 0.0
        quant[q] = (k + min(max(frac, 0.0), 1.0)) * _GRID_STEP
    r_core = np.empty(_GRID_N)
    r_tail = np.empty(_GRID_N)
    p_core = np.empty(_GRID_N)
    z1 = C.GP_RC1 + C.GP_RC2 * ln_e
    z2 = C.GP_RC3 + C.GP_RC4 * _Z
    k1 = C.GP_RT1 + C.GP_RT2 * _Z
    k4 = C.GP_RT5 + C.GP_RT6 * ln_e
    p1 = C.GP_WC1 + C.GP_WC2 * _Z
    p2 = C.GP_WC3 + C.GP_WC4 * _Z
    p3 = C.GP_WC5 + C.GP_WC6 * ln_e
    for k in range(_GRID_N):
        tau = (k + 0.5) * _GRID_STEP * tau_scale
        r_core[k] = z1 + z2 * tau
        r_tail[k] = k1 * (math.exp(C.GP_RT4 * (tau - C.GP_RT3)) + math.exp(k4 * (tau - C.GP_RT3)))
        x = (p2 - tau) / p3
        p_core[k] = p1 * math.exp(x - math.exp(x))
    return quant, r_core, r_tail, p_core


@numba.njit(cache=True, error_model="numpy", fastmath=True, inline="always")
def _sample_spot(quant, r_core, r_tail, p_core) -> tuple[float, float]:
    """One spot: (depth [X0] from the shower start, radius [Moliere radii])."""
    u = np.random.random() * _QUANTILES
    q = int(u)
    t = quant[q] + (u - q) * (quant[q + 1] - quant[q])
    k = min(int(t / _GRID_STEP), _GRID_N - 1)
    radius = r_core[k] if np.random.random() < p_core[k] else r_tail[k]
    v = np.random.random()
    return t, _RADIAL_SCALE * radius * math.sqrt(v / (1.0 - v))


@numba.njit(cache=True, error_model="numpy", fastmath=True)
def em_shower_spots(
    energy: float, photon: bool, max_spots: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spots of one EM shower in its own frame, before any geometry: for validation.

    Returns:
        depth t [X0] from the front face (n,), radius r [Moliere radii] (n,), energy [GeV] (n,).
    """
    alpha, tmax, mean_alpha = gp_longitudinal(energy)
    quant, r_core, r_tail, p_core = _profile_tables(energy, alpha, tmax, mean_alpha)
    t0 = np.random.exponential(C.PHOTON_CONVERSION_LENGTH_X0) if photon else 0.0
    n = n_spots(energy, max_spots)
    depth = np.empty(n)
    radius = np.empty(n)
    for i in range(n):
        t, r = _sample_spot(quant, r_core, r_tail, p_core)
        depth[i] = t0 + t
        radius[i] = r
    return depth, radius, np.full(n, energy / n)


@numba.njit(cache=True, error_model="numpy", fastmath=True)
def mip_most_probable(length: float, energy: float, mass: float) -> tuple[float, float]:
    """Landau-Vavilov most probable energy loss and width xi [GeV] over ``length`` cm of PbWO4.

    PDG eq. 34.12 with the high-energy density-effect correction
    delta = 2 ln(hbar omega_p / I) + 2 ln(beta gamma) - 1 (clipped at 0).
    """
    p = math.sqrt(max(energy * energy - mass * mass, 1e-12))
    bg = p / mass
    beta2 = (p / energy) ** 2
    xi = _XI_PER_CM * length / beta2
    delta = max(0.0, 2.0 * math.log(_PLASMA_EV / _I_EV) + 2.0 * math.log(bg) - 1.0)
    xi_ev = xi * 1e9
    mpv = xi * (
        math.log(2.0 * _ME_EV * bg * bg / _I_EV)
        + math.log(xi_ev / _I_EV)
        + C.LANDAU_J
        - beta2
        - delta
    )
    return max(mpv, 0.0), xi


@numba.njit(cache=True, error_model="numpy", fastmath=True)
def sample_mip_loss(length: float, energy: float, mass: float) -> float:
    """Energy lost [GeV] over ``length`` cm: most probable value + xi * Moyal variate.

    A Moyal variate (mode 0) is -ln(z^2) for a standard normal z; it approximates the Landau
    distribution around its peak.
    """
    if length <= 0.0:
        return 0.0
    mpv, xi = mip_most_probable(length, energy, mass)
    z = np.random.standard_normal()
    loss = mpv + xi * (-math.log(z * z + 1e-300))
    return min(max(loss, 0.0), energy - mass)


@numba.njit(cache=True, error_model="numpy", fastmath=True, inline="always")
def _add_spot(
    acc, x, y, z, e, ieta0, iphi0, w, eta_max, deta, dphi, n_eta, n_phi, r_in, length
) -> float:
    """Add one spot to the shower window; returns the energy actually deposited (0 if it leaks)."""
    rho = math.hypot(x, y)
    # depth behind the front face along the projective ray: |P| - r_in cosh(eta) = |P|(1 - r_in/rho)
    if math.sqrt(rho * rho + z * z) * (1.0 - r_in / rho) > length:
        return 0.0
    eta = math.asinh(z / rho)
    ieta = int(math.floor((eta + eta_max) / deta))
    if ieta < 0 or ieta >= n_eta:
        return 0.0
    phi = math.atan2(y, x)
    if phi < 0.0:
        phi += 2.0 * math.pi
    iphi = min(int(phi / dphi), n_phi - 1)
    di = ieta - ieta0
    dj = iphi - iphi0
    # phi wrap-around without an integer modulo (slow in the inner loop)
    if dj > n_phi // 2:
        dj -= n_phi
    elif dj < -(n_phi // 2):
        dj += n_phi
    if abs(di) > w or abs(dj) > w:
        return 0.0
    acc[di + w, dj + w] += e
    return e


@numba.njit(cache=True, error_model="numpy", fastmath=True)
def _mip_track(acc, pos, u, e_kin_avail, mass, stop_depth, geo, w, ieta0, iphi0) -> float:
    """MIP energy loss along the axis from the front face to ``stop_depth`` [cm]."""
    eta_max, deta, dphi, n_eta, n_phi, r_in, length = geo
    n_in = 0
    inside = np.zeros(_MIP_MAX_STEPS, dtype=np.bool_)
    for k in range(_MIP_MAX_STEPS):
        d = (k + 0.5) * _MIP_STEP
        if d > stop_depth:
            break
        x, y, z = pos[0] + d * u[0], pos[1] + d * u[1], pos[2] + d * u[2]
        rho = math.hypot(x, y)
        eta = math.asinh(z / rho)
        if math.sqrt(rho * rho + z * z) - r_in * math.cosh(eta) <= length:
            inside[k] = True
            n_in += 1
    if n_in == 0:
        return 0.0
    loss = sample_mip_loss(n_in * _MIP_STEP, e_kin_avail + mass, mass)
    total = 0.0
    for k in range(_MIP_MAX_STEPS):
        if inside[k]:
            d = (k + 0.5) * _MIP_STEP
            total += _add_spot(
                acc,
                pos[0] + d * u[0],
                pos[1] + d * u[1],
                pos[2] + d * u[2],
                loss / n_in,
                ieta0,
                iphi0,
                w,
                eta_max,
                deta,
                dphi,
                n_eta,
                n_phi,
                r_in,
                length,
            )
    return total


#: Spots closer than this to the shower axis [cm] are placed with the axis's local linear map
#: (eta, phi, depth) = f(axis point) + J . offset; the quadratic term this neglects shifts a
#: spot by < 0.03 crystal at this radius. Farther spots use the exact projection.
_LINEAR_MAX_RADIUS = 3.0 * _RM


@numba.njit(cache=True, error_model="numpy", fastmath=True)
def _axis_tables(pos, u, a, b, t0, ieta0, iphi0, geo) -> np.ndarray:
    """Crystal-frame coordinates along a shower axis and their lateral derivatives.

    For each point of the depth grid (t = k * _GRID_STEP X0 after the shower start) returns a
    row: eta and phi in crystal units relative to the impact crystal's lower edge, the depth
    behind the front face [cm], and the derivatives of these three along the unit vectors a and
    b perpendicular to the axis. Shape (_GRID_N + 1, 9).
    """
    eta_max, deta, dphi, _n_eta, _n_phi, r_in, _length = geo
    out = np.empty((_GRID_N + 1, 9))
    phi_edge = iphi0 * dphi
    for k in range(_GRID_N + 1):
        d = (t0 + k * _GRID_STEP) * _X0
        x, y, z = pos[0] + d * u[0], pos[1] + d * u[1], pos[2] + d * u[2]
        rho2 = x * x + y * y
        rho = math.sqrt(rho2)
        mag = math.sqrt(rho2 + z * z)
        dphi_rel = math.atan2(y, x) - phi_edge
        dphi_rel = (dphi_rel + math.pi) % (2.0 * math.pi) - math.pi
        out[k, 0] = (math.asinh(z / rho) + eta_max) / deta - ieta0
        out[k, 1] = dphi_rel / dphi
        out[k, 2] = mag * (1.0 - r_in / rho)
        # gradients
        ge = (-z * x / (rho2 * mag) / deta, -z * y / (rho2 * mag) / deta, 1.0 / mag / deta)
        gp = (-y / rho2 / dphi, x / rho2 / dphi, 0.0)
        f = 1.0 - r_in / rho
        g3 = r_in * mag / (rho2 * rho)
        gd = (x / mag * f + g3 * x, y / mag * f + g3 * y, z / mag * f)
        out[k, 3] = ge[0] * a[0] + ge[1] * a[1] + ge[2] * a[2]
        out[k, 4] = ge[0] * b[0] + ge[1] * b[1] + ge[2] * b[2]
        out[k, 5] = gp[0] * a[0] + gp[1] * a[1]
        out[k, 6] = gp[0] * b[0] + gp[1] * b[1]
        out[k, 7] = gd[0] * a[0] + gd[1] * a[1] + gd[2] * a[2]
        out[k, 8] = gd[0] * b[0] + gd[1] * b[1] + gd[2] * b[2]
    return out


@numba.njit(cache=True, error_model="numpy", fastmath=True, inline="always")
def _add_spot_linear(acc, axis, t, c, s, e, ieta0, w, n_eta, length) -> float:
    """Add a spot at depth t [X0] and lateral offset (c, s) [cm] using the axis tables."""
    g = t / _GRID_STEP
    k = min(int(g), _GRID_N - 1)
    f = g - k
    row = axis[k]
    nxt = axis[k + 1]
    depth = row[2] + f * (nxt[2] - row[2]) + c * row[7] + s * row[8]
    if depth > length:
        return 0.0
    eta_rel = row[0] + f * (nxt[0] - row[0]) + c * row[3] + s * row[4]
    phi_rel = row[1] + f * (nxt[1] - row[1]) + c * row[5] + s * row[6]
    di = int(math.floor(eta_rel))
    dj = int(math.floor(phi_rel))
    if abs(di) > w or abs(dj) > w:
        return 0.0
    if ieta0 + di < 0 or ieta0 + di >= n_eta:
        return 0.0
    acc[di + w, dj + w] += e
    return e


@numba.njit(cache=True, error_model="numpy", fastmath=True)
def _grow(a: np.ndarray, cap: int, used: int) -> np.ndarray:
    out = np.empty(cap, dtype=a.dtype)
    out[:used] = a[:used]
    return out


@numba.njit(cache=True, error_model="numpy", fastmath=True)
def deposit_showers(
    kind: np.ndarray,
    energy: np.ndarray,
    mass: np.ndarray,
    start_depth: np.ndarray,
    position: np.ndarray,
    direction: np.ndarray,
    geo: tuple,
    max_spots: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Deposit the showers of particles that reached the crystal front faces.

    Args:
        kind: KIND_* of each particle (n,).
        energy: energy [GeV] (n,); mass: mass [GeV] (n,).
        start_depth: photons: conversion depth [X0] in the crystal; hadrons: depth of the first
            inelastic interaction [cm] (inf for none); ignored otherwise (n,).
        position: impact points on the front faces [cm] (n, 3).
        direction: unit directions at impact (n, 3).
        geo: (eta_max, deta, dphi, n_eta, n_phi, inner_radius, crystal_length).
        max_spots: cap on the spots of each particle's shower (n,).

    Returns:
        particle index (m,), crystal ieta (m,), iphi (m,), deposited energy [GeV] (m,) for
        every (particle, crystal) pair with a deposit; total deposited energy per particle (n,).
    """
    eta_max, deta, dphi, n_eta, n_phi, r_in, length = geo
    w = SHOWER_WINDOW_HALF_WIDTH
    size = 2 * w + 1
    n = len(kind)
    cap = max(n * 64, size * size)  # grown on demand: typical showers touch far fewer crystals
    out_p = np.empty(cap, dtype=np.int64)
    out_ieta = np.empty(cap, dtype=np.int64)
    out_iphi = np.empty(cap, dtype=np.int64)
    out_e = np.empty(cap, dtype=np.float64)
    per_particle = np.zeros(n)
    m = 0
    acc = np.zeros((size, size))
    for i in range(n):
        acc[:, :] = 0.0
        pos = position[i]
        u = direction[i]
        rho0 = math.hypot(pos[0], pos[1])
        eta0 = math.asinh(pos[2] / rho0)
        phi0 = math.atan2(pos[1], pos[0])
        if phi0 < 0.0:
            phi0 += 2.0 * math.pi
        ieta0 = int(math.floor((eta0 + eta_max) / deta))
        iphi0 = int(math.floor(phi0 / dphi)) % n_phi
        # two unit vectors perpendicular to the axis
        if abs(u[2]) < 0.9:
            ax, ay, az = u[1], -u[0], 0.0
        else:
            ax, ay, az = 0.0, u[2], -u[1]
        norm = math.sqrt(ax * ax + ay * ay + az * az)
        ax, ay, az = ax / norm, ay / norm, az / norm
        bx, by, bz = u[1] * az - u[2] * ay, u[2] * ax - u[0] * az, u[0] * ay - u[1] * ax
        e = energy[i]
        total = 0.0
        k = kind[i]
        if k == KIND_ELECTRON or k == KIND_PHOTON:
            alpha, tmax, mean_alpha = gp_longitudinal(e)
            quant, r_core, r_tail, p_core = _profile_tables(e, alpha, tmax, mean_alpha)
            t0 = start_depth[i] if k == KIND_PHOTON else 0.0
            ns = n_spots(e, max_spots[i])
            e_spot = e / ns
            axis = _axis_tables(pos, u, (ax, ay, az), (bx, by, bz), t0, ieta0, iphi0, geo)
            for _ in range(ns):
                t, r = _sample_spot(quant, r_core, r_tail, p_core)
                r *= _RM
                ang = 2.0 * math.pi * np.random.random()
                c, s = r * math.cos(ang), r * math.sin(ang)
                if r < _LINEAR_MAX_RADIUS:
                    total += _add_spot_linear(acc, axis, t, c, s, e_spot, ieta0, w, n_eta, length)
                else:
                    d = (t0 + t) * _X0
                    total += _add_spot(
                        acc,
                        pos[0] + d * u[0] + c * ax + s * bx,
                        pos[1] + d * u[1] + c * ay + s * by,
                        pos[2] + d * u[2] + c * az + s * bz,
                        e_spot,
                        ieta0,
                        iphi0,
                        w,
                        eta_max,
                        deta,
                        dphi,
                        n_eta,
                        n_phi,
                        r_in,
                        length,
                    )
        else:
            stop = start_depth[i] if k == KIND_HADRON else np.inf
            e_kin = e - mass[i]
            mip = _mip_track(acc, pos, u, e_kin, mass[i], stop, geo, w, ieta0, iphi0)
            total += mip
            if k == KIND_HADRON and math.isfinite(stop) and e_kin - mip > 0.0:
                e_had = e_kin - mip
                f_mean = 1.0 - (max(e_had, C.HADRON_EM_FRACTION_E0) / C.HADRON_EM_FRACTION_E0) ** (
                    C.HADRON_EM_FRACTION_K - 1.0
                )
                f_em = f_mean * (1.0 + C.HADRON_EM_FRACTION_SPREAD * np.random.standard_normal())
                f_em = min(max(f_em, 0.0), 1.0)
                ns = int(min(max(e_had / C.HADRON_SPOT_ENERGY, 20.0), max(max_spots[i], 20)))
                n_em = int(round(f_em * ns))
                e_em = f_em * e_had
                if n_em > 0 and e_em > 10.0 * _EC:
                    # pi0s of the first interaction: EM showers on the X0 scale from that point
                    alpha, tmax, mean_alpha = gp_longitudinal(e_em)
                    quant, r_core, r_tail, p_core = _profile_tables(e_em, alpha, tmax, mean_alpha)
                    for _ in range(n_em):
                        t, r = _sample_spot(quant, r_core, r_tail, p_core)
                        d = stop + t * _X0
                        r *= _RM
                        ang = 2.0 * math.pi * np.random.random()
                        c, s = r * math.cos(ang), r * math.sin(ang)
                        total += _add_spot(
                            acc,
                            pos[0] + d * u[0] + c * ax + s * bx,
                            pos[1] + d * u[1] + c * ay + s * by,
                            pos[2] + d * u[2] + c * az + s * bz,
                            e_em / n_em,
                            ieta0,
                            iphi0,
                            w,
                            eta_max,
                            deta,
                            dphi,
                            n_eta,
                            n_phi,
                            r_in,
                            length,
                        )
                else:
                    n_em = 0
                    e_em = 0.0
                # the non-EM part: lambda_I-scale profile, wider, seen with response h/e
                n_h = ns - n_em
                e_h = (e_had - e_em) * C.HADRON_H_OVER_E / max(n_h, 1)
                for _ in range(n_h):
                    d = stop + _LAMBDA_I * np.random.gamma(
                        C.HADRON_PROFILE_SHAPE, C.HADRON_PROFILE_SCALE_LAMBDA
                    )
                    r = np.random.gamma(2.0, 0.5 * C.HADRON_LATERAL_RADIUS)
                    ang = 2.0 * math.pi * np.random.random()
                    c, s = r * math.cos(ang), r * math.sin(ang)
                    total += _add_spot(
                        acc,
                        pos[0] + d * u[0] + c * ax + s * bx,
                        pos[1] + d * u[1] + c * ay + s * by,
                        pos[2] + d * u[2] + c * az + s * bz,
                        e_h,
                        ieta0,
                        iphi0,
                        w,
                        eta_max,
                        deta,
                        dphi,
                        n_eta,
                        n_phi,
                        r_in,
                        length,
                    )
        per_particle[i] = total
        if m + size * size > cap:
            cap = 2 * cap + size * size
            out_p = _grow(out_p, cap, m)
            out_ieta = _grow(out_ieta, cap, m)
            out_iphi = _grow(out_iphi, cap, m)
            out_e = _grow(out_e, cap, m)
        for a in range(size):
            for b in range(size):
                if acc[a, b] > 0.0:
                    out_p[m] = i
                    out_ieta[m] = ieta0 + a - w
                    out_iphi[m] = (iphi0 + b - w) % n_phi
                    out_e[m] = acc[a, b]
                    m += 1
    return out_p[:m], out_ieta[:m], out_iphi[:m], out_e[:m], per_particle
