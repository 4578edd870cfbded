# ruff: noqa: NPY002  (numba kernels: numba's own np.random, seeded per call)
"""Transport of particles through liquid argon as short straight steps (numba).

Every particle handed to :func:`transport` is followed until it stops, leaves the volume or (for
charged pions) interacts; the steps it deposits energy on come back with the row of the truth
particle they belong to. Physics, in MeV and cm inside the kernels:

* **ionization** of charged particles (muons, pions, protons; electrons with T_max = T/2): the
  Bethe mean dE/dx with the Sternheimer density effect [PDG-PP eq. 34.5] sets the energy scale;
  per step the loss fluctuates as a Landau-Vavilov distribution (most probable value of
  [PDG-PP eq. 34.12], width xi) sampled as a Moyal core plus delta rays above a cut T_cut
  (dN/dT = xi / T^2 up to T_max), T_cut chosen so that the mean equals Bethe's; delta rays are
  deposited on the step (not followed). Thick steps (xi > 0.1 T_max: slow protons near the Bragg
  peak) fluctuate as Bohr's Gaussian. The step length adapts to the residual range
  (``min(step_max, 0.2 * T / (dE/dx))``), so the Bragg peak is resolved.
* **multiple scattering**: Highland's theta_0 [PDG-PP eq. 34.16] per step.
* **electromagnetic cascade** (a branching cascade of short segments): electrons radiate
  bremsstrahlung photons above 1 MeV with the complete-screening spectrum
  dN/dy = (ds/X0) (4/3 - 4/3 y + y^2) / y [PDG-PP eq. 34.29]; photons travel an exponential
  distance of mean 9/7 X0 (18 cm in argon) and then pair-convert (above 10 MeV; the energy shared
  uniformly between e- and e+) or Compton-scatter (below; electron energy uniform up to the
  Compton edge); photons below 0.1 MeV and electrons below 0.5 MeV deposit their energy in place.
  Every particle of a cascade keeps the truth row of the particle that started it.
* **charged pions** interact inelastically after an exponential path of mean lambda_I (85.8 cm);
  the track ends there (what comes out is made by the caller).

Simplifications: one interaction length for all photon energies (the true attenuation length of
argon is 12 cm at 1 MeV and 25 cm at 10 MeV); no photo-nuclear or electro-nuclear processes; no
positron annihilation photons; delta rays are not followed; no magnetic field.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from fastreco import constants as C

KIND_HEAVY = 0  # muon, pion, proton: ionization + multiple scattering
KIND_ELECTRON = 1  # e+-: ionization + bremsstrahlung + multiple scattering
KIND_PHOTON = 2  # conversion / Compton after an exponential path

STATUS_STOPPED = 0
STATUS_EXITED = 1
STATUS_INTERACTED = 2

#: Columns of the particle array given to :func:`transport`.
P_KIND, P_MASS, P_KE, P_X, P_Y, P_Z, P_UX, P_UY, P_UZ, P_ROW, P_LAMBDA, P_T0 = range(12)
N_PCOLS = 12
#: Columns of the step array returned: start, end [cm], energy [GeV], time offset [ns], row.
S_X0, S_Y0, S_Z0, S_X1, S_Y1, S_Z1, S_DE, S_T0, S_ROW = range(9)
#: Columns of the per-particle end state returned.
E_X, E_Y, E_Z, E_UX, E_UY, E_UZ, E_KE, E_STATUS, E_PATH, E_FIRST = range(10)

_ME = C.ELECTRON_MASS * 1e3  # MeV
_K = C.LANDAU_K * 1e3  # MeV mol^-1 cm^2
_ZA = C.LAR_Z_OVER_A
_RHO = C.LAR_DENSITY
_I = C.LAR_MEAN_EXCITATION_ENERGY_EV * 1e-6  # MeV
_X0 = C.LAR_RADIATION_LENGTH
_LAMBDA_GAMMA = C.LAR_PHOTON_CONVERSION_LENGTH
_PAIR_MIN = C.LAR_PAIR_COMPTON_CROSSOVER * 1e3  # MeV
_SC, _SX0, _SX1 = C.LAR_STERNHEIMER_C, C.LAR_STERNHEIMER_X0, C.LAR_STERNHEIMER_X1
_SA, _SK = C.LAR_STERNHEIMER_A, C.LAR_STERNHEIMER_K
_J = C.LANDAU_J
_MOYAL_MEAN = 0.5772156649 + math.log(2.0)  # mean of the standard Moyal distribution
_BREM_MIN = 1.0  # MeV: softer bremsstrahlung stays in the electron's own deposit
_PHOTON_CUT = 0.1  # MeV: photo-absorbed in place
_ELECTRON_CUT = 0.5  # MeV: range < 2 mm, deposited in place
_HEAVY_CUT = 1.0  # MeV: range << 1 mm, deposited in place
_STEP_MIN = 0.01  # cm
_POINT_LENGTH = 1e-4  # cm, length of the steps that stand for deposits in place


@numba.njit(cache=True)
def _seed(seed: int) -> None:
    np.random.seed(seed)


@numba.njit(cache=True, inline="always")
def _bethe(ke, mass, electron):
    """Mean dE/dx [MeV/cm], beta^2, (beta gamma)^2, T_max [MeV], density correction delta."""
    gamma = 1.0 + ke / mass
    beta2 = 1.0 - 1.0 / (gamma * gamma)
    bg2 = gamma * gamma * beta2
    if electron:
        tmax = 0.5 * ke
    else:
        r = _ME / mass
        tmax = 2.0 * _ME * bg2 / (1.0 + 2.0 * gamma * r + r * r)
    x = 0.5 * math.log10(bg2)
    if x >= _SX1:
        delta = 2.0 * math.log(10.0) * x - _SC
    elif x >= _SX0:
        delta = 2.0 * math.log(10.0) * x - _SC + _SA * (_SX1 - x) ** _SK
    else:
        delta = 0.0
    log_term = 0.5 * math.log(2.0 * _ME * bg2 * tmax / (_I * _I)) - beta2 - 0.5 * delta
    dedx = _K * _ZA * _RHO / beta2 * max(log_term, 0.5)
    return dedx, beta2, bg2, tmax, delta


@numba.njit(cache=True)
def _energy_loss(ds, ke, mass, electron):
    """Sampled ionization loss [MeV] over ``ds`` cm and the mean dE/dx [MeV/cm]."""
    dedx, beta2, bg2, tmax, delta = _bethe(ke, mass, electron)
    mean = dedx * ds
    xi = 0.5 * _K * _ZA * _RHO * ds / beta2
    if xi > 0.1 * tmax:
        sigma = math.sqrt(xi * tmax * (1.0 - 0.5 * beta2))
        return max(mean + sigma * np.random.standard_normal(), 0.0), dedx
    mp = xi * (math.log(2.0 * _ME * bg2 / _I) + math.log(xi / _I) + _J - beta2 - delta)
    z = np.random.standard_normal()
    while z == 0.0:
        z = np.random.standard_normal()
    loss = mp + xi * (-math.log(z * z))
    excess = (mean - mp) / xi - _MOYAL_MEAN
    if excess > 0.0:
        tcut = tmax * math.exp(-excess)
        inv_cut, inv_max = 1.0 / tcut, 1.0 / tmax
        n = np.random.poisson(xi * (inv_cut - inv_max))
        for _ in range(n):
            loss += 1.0 / (inv_cut - np.random.random() * (inv_cut - inv_max))
    return max(loss, 0.0), dedx


@numba.njit(cache=True, inline="always")
def _deflect(ux, uy, uz, theta, phi):
    """Unit vector at polar angle ``theta`` and azimuth ``phi`` around (ux, uy, uz)."""
    if abs(uz) < 0.9:
        ax, ay, az = uy, -ux, 0.0
    else:
        ax, ay, az = 0.0, uz, -uy
    norm = math.sqrt(ax * ax + ay * ay + az * az)
    ax, ay, az = ax / norm, ay / norm, az / norm
    bx, by, bz = uy * az - uz * ay, uz * ax - ux * az, ux * ay - uy * ax
    st, ct = math.sin(theta), math.cos(theta)
    cp, sp = math.cos(phi), math.sin(phi)
    vx = ct * ux + st * (cp * ax + sp * bx)
    vy = ct * uy + st * (cp * ay + sp * by)
    vz = ct * uz + st * (cp * az + sp * bz)
    norm = math.sqrt(vx * vx + vy * vy + vz * vz)
    return vx / norm, vy / norm, vz / norm


@numba.njit(cache=True, inline="always")
def _inside(x, y, z, bounds):
    return (
        bounds[0] <= x <= bounds[1] and bounds[2] <= y <= bounds[3] and bounds[4] <= z <= bounds[5]
    )


@numba.njit(cache=True)
def _add_step(steps, n, x0, y0, z0, x1, y1, z1, de_mev, t0, row):
    if n == steps.shape[0]:
        bigger = np.empty((2 * n, steps.shape[1]))
        bigger[:n] = steps
        steps = bigger
    steps[n, 0] = x0
    steps[n, 1] = y0
    steps[n, 2] = z0
    steps[n, 3] = x1
    steps[n, 4] = y1
    steps[n, 5] = z1
    steps[n, 6] = de_mev * 1e-3
    steps[n, 7] = t0
    steps[n, 8] = row
    return steps


@numba.njit(cache=True)
def _push(stack, n, kind, mass, ke, x, y, z, ux, uy, uz, lam, t0):
    if n == stack.shape[0]:
        bigger = np.empty((2 * n, stack.shape[1]))
        bigger[:n] = stack
        stack = bigger
    stack[n, P_KIND] = kind
    stack[n, P_MASS] = mass
    stack[n, P_KE] = ke
    stack[n, P_X] = x
    stack[n, P_Y] = y
    stack[n, P_Z] = z
    stack[n, P_UX] = ux
    stack[n, P_UY] = uy
    stack[n, P_UZ] = uz
    stack[n, P_LAMBDA] = lam
    stack[n, P_T0] = t0
    return stack


@numba.njit(cache=True)
def _transport(particles, bounds, step_max, seed):
    _seed(seed)
    steps = np.empty((4096, 9))
    n_steps = 0
    end = np.full((particles.shape[0], 10), np.nan)
    stack = np.empty((64, N_PCOLS))
    two_pi = 2.0 * math.pi
    for i in range(particles.shape[0]):
        row = particles[i, P_ROW]
        p = particles[i]
        stack = _push(
            stack,
            0,
            p[P_KIND],
            p[P_MASS] * 1e3,
            p[P_KE] * 1e3,
            p[P_X],
            p[P_Y],
            p[P_Z],
            p[P_UX],
            p[P_UY],
            p[P_UZ],
            p[P_LAMBDA],
            p[P_T0],
        )
        n_stack = 1
        primary = True
        while n_stack > 0:
            n_stack -= 1
            s = stack[n_stack]
            kind = int(s[P_KIND])
            mass, ke = s[P_MASS], s[P_KE]
            x, y, z = s[P_X], s[P_Y], s[P_Z]
            ux, uy, uz = s[P_UX], s[P_UY], s[P_UZ]
            lam, t0 = s[P_LAMBDA], s[P_T0]
            status = STATUS_STOPPED
            path = 0.0
            first = np.nan
            if kind == KIND_PHOTON:
                # photons: one exponential flight, then one interaction (secondaries stacked)
                dist = -_LAMBDA_GAMMA * math.log(1.0 - np.random.random())
                first = dist
                path = dist
                if ke < _PHOTON_CUT:
                    steps = _add_step(
                        steps, n_steps, x, y, z, x + _POINT_LENGTH * ux, y, z, ke, t0, row
                    )
                    n_steps += 1
                else:
                    x, y, z = x + dist * ux, y + dist * uy, z + dist * uz
                    if not _inside(x, y, z, bounds):
                        status = STATUS_EXITED
                    elif ke > _PAIR_MIN:
                        status = STATUS_INTERACTED
                        avail = ke - 2.0 * _ME
                        share = np.random.random()
                        for part in (share * avail, (1.0 - share) * avail):
                            vx, vy, vz = _deflect(ux, uy, uz, _ME / ke, two_pi * np.random.random())
                            stack = _push(
                                stack, n_stack, KIND_ELECTRON, _ME, part, x, y, z, vx, vy, vz,
                                0.0, t0,
                            )  # fmt: skip
                            n_stack += 1
                    else:
                        status = STATUS_INTERACTED
                        k = ke / _ME
                        edge = ke * 2.0 * k / (1.0 + 2.0 * k)
                        te = np.random.random() * edge
                        e_out = ke - te
                        cos_g = min(max(1.0 - _ME * (1.0 / e_out - 1.0 / ke), -1.0), 1.0)
                        phi = two_pi * np.random.random()
                        gx, gy, gz = _deflect(ux, uy, uz, math.acos(cos_g), phi)
                        stack = _push(
                            stack, n_stack, KIND_PHOTON, 0.0, e_out, x, y, z, gx, gy, gz, 0.0, t0
                        )
                        n_stack += 1
                        # the electron goes to the other side, at a smaller angle
                        ex, ey, ez = _deflect(ux, uy, uz, 0.5 * math.acos(cos_g), phi + math.pi)
                        stack = _push(
                            stack, n_stack, KIND_ELECTRON, _ME, te, x, y, z, ex, ey, ez, 0.0, t0
                        )
                        n_stack += 1
            else:
                electron = kind == KIND_ELECTRON
                cut = _ELECTRON_CUT if electron else _HEAVY_CUT
                left_to_interact = np.inf
                if lam > 0.0:
                    left_to_interact = -lam * math.log(1.0 - np.random.random())
                while True:
                    if not _inside(x, y, z, bounds):
                        status = STATUS_EXITED
                        break
                    if ke <= cut:
                        steps = _add_step(
                            steps, n_steps, x, y, z, x + _POINT_LENGTH * ux, y, z, ke, t0, row
                        )
                        n_steps += 1
                        ke = 0.0
                        status = STATUS_STOPPED
                        break
                    dedx0 = _bethe(ke, mass, electron)[0]
                    ds = min(step_max, max(_STEP_MIN, 0.2 * ke / dedx0))
                    interacts = False
                    if path + ds >= left_to_interact:
                        ds = max(left_to_interact - path, 0.0)
                        interacts = True
                    loss, _ = _energy_loss(max(ds, _STEP_MIN), ke, mass, electron)
                    loss = min(loss, ke)
                    if electron:
                        e_tot = ke + mass
                        y_min = _BREM_MIN / e_tot
                        if y_min < 1.0:
                            c = 4.0 / 3.0 * (-math.log(y_min)) - 4.0 / 3.0 * (1.0 - y_min)
                            c += 0.5 * (1.0 - y_min * y_min)
                            n_brem = np.random.poisson(ds / _X0 * c)
                            for _ in range(n_brem):
                                while True:
                                    yy = math.exp(math.log(y_min) * np.random.random())
                                    accept = (4.0 / 3.0 - 4.0 / 3.0 * yy + yy * yy) * 0.75
                                    if np.random.random() < accept:
                                        break
                                k = min(yy * e_tot, ke - loss)
                                if k <= 0.0:
                                    break
                                ke -= k
                                stack = _push(
                                    stack, n_stack, KIND_PHOTON, 0.0, k, x, y, z, ux, uy, uz,
                                    0.0, t0,
                                )  # fmt: skip
                                n_stack += 1
                    x1, y1, z1 = x + ds * ux, y + ds * uy, z + ds * uz
                    steps = _add_step(steps, n_steps, x, y, z, x1, y1, z1, loss, t0, row)
                    n_steps += 1
                    ke -= loss
                    path += ds
                    x, y, z = x1, y1, z1
                    if interacts:
                        status = STATUS_INTERACTED
                        break
                    if ke > 0.0:
                        p_mom = math.sqrt(ke * ke + 2.0 * ke * mass)
                        beta = p_mom / (ke + mass)
                        t = ds / _X0
                        theta0 = 13.6 / (beta * p_mom) * math.sqrt(t)
                        theta0 *= max(1.0 + 0.038 * math.log(t / (beta * beta)), 0.1)
                        theta = min(abs(np.random.standard_normal()) * theta0, 1.0)
                        ux, uy, uz = _deflect(ux, uy, uz, theta, two_pi * np.random.random())
            if primary:
                end[i, E_X], end[i, E_Y], end[i, E_Z] = x, y, z
                end[i, E_UX], end[i, E_UY], end[i, E_UZ] = ux, uy, uz
                end[i, E_KE] = ke * 1e-3
                end[i, E_STATUS] = status
                end[i, E_PATH] = path
                end[i, E_FIRST] = first
                primary = False
    return steps[:n_steps], end


def transport(
    particles: np.ndarray, bounds: np.ndarray, step_max: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Follow ``particles`` through the argon volume.

    Args:
        particles: (n, 12) float64, columns ``P_*``: kind (``KIND_*``), mass [GeV], kinetic
            energy [GeV], start x, y, z [cm], unit direction, truth row, interaction length [cm]
            (0: none), time offset [ns].
        bounds: (6,) x_min, x_max, y_min, y_max, z_min, z_max [cm] of the volume.
        step_max: longest step of a charged particle [cm].
        seed: seed of numba's generator (the result depends on it alone).

    Returns:
        ``steps`` (m, 9): columns ``S_*`` (start, end [cm], deposit [GeV], time offset [ns], truth
        row), and ``end`` (n, 10): columns ``E_*`` per input particle (end point and direction,
        kinetic energy left [GeV], ``STATUS_*``, path length [cm], photons: distance to the
        first interaction [cm]; NaN otherwise).
    """
    particles = np.ascontiguousarray(particles, dtype=np.float64).reshape(-1, N_PCOLS)
    return _transport(particles, np.asarray(bounds, dtype=np.float64), float(step_max), int(seed))
