"""Vectorized kinematics: directions, two-body decays, tracks in a solenoid field.

Conventions: lengths in cm, energies/momenta in GeV, the field along +z. Arrays have one entry
per particle, shape (n,); vectors are (n, 3).
"""

from __future__ import annotations

import numpy as np

from fastreco import constants as C


def direction_from_eta_phi(eta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Unit vectors (n, 3) pointing along (eta, phi)."""
    sin_theta = 1.0 / np.cosh(eta)
    return np.stack([sin_theta * np.cos(phi), sin_theta * np.sin(phi), np.tanh(eta)], axis=-1)


def eta_phi_from_vector(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(eta, phi) of vectors (n, 3); phi in [-pi, pi]."""
    rho = np.hypot(v[:, 0], v[:, 1])
    return np.arcsinh(v[:, 2] / rho), np.arctan2(v[:, 1], v[:, 0])


def orthonormal_basis(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors (n, 3) perpendicular to the unit vectors ``u`` and to each other."""
    helper = np.where(np.abs(u[:, 2:3]) < 0.9, [[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]])
    e1 = np.cross(u, helper)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 = np.cross(u, e1)
    return e1, e2


def two_body_decay_massless(
    energy: np.ndarray, direction: np.ndarray, mass: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decay of a particle of ``mass`` into two massless daughters, isotropic in its rest frame.

    Args:
        energy: parent energies (n,) [GeV], each >= mass.
        direction: parent unit vectors (n, 3).

    Returns:
        (E1, dir1, E2, dir2): daughter energies (n,) and unit vectors (n, 3). The energy
        sharing (E1 - E2) / (E1 + E2) = beta cos(theta*) is flat, and the minimum opening angle
        is 2 arcsin(m / E).
    """
    n = len(energy)
    gamma = energy / mass
    beta = np.sqrt(np.clip(1.0 - 1.0 / gamma**2, 0.0, None))
    cos_star = rng.uniform(-1.0, 1.0, n)
    sin_star = np.sqrt(1.0 - cos_star**2)
    phi_star = rng.uniform(0.0, 2 * np.pi, n)
    half = 0.5 * mass
    e1_axis, e2_axis = orthonormal_basis(direction)
    transverse = half * sin_star
    perp = transverse[:, None] * (
        np.cos(phi_star)[:, None] * e1_axis + np.sin(phi_star)[:, None] * e2_axis
    )
    out = []
    for sign in (1.0, -1.0):
        p_long = gamma * half * (sign * cos_star + beta)
        p = p_long[:, None] * direction + sign * perp
        e = gamma * half * (1.0 + sign * beta * cos_star)
        out.append((e, p / np.linalg.norm(p, axis=1, keepdims=True)))
    return out[0][0], out[0][1], out[1][0], out[1][1]


def propagate_to_cylinder(
    start: np.ndarray,
    direction: np.ndarray,
    momentum: np.ndarray,
    charge: np.ndarray,
    radius: float,
    field: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Propagate particles to the cylinder rho = ``radius`` (straight lines or helices).

    Charged particles follow a helix in the solenoid field B along +z (a positive charge turns
    clockwise seen from +z). Particles starting inside the cylinder are assumed.

    Returns:
        (impact (n, 3), direction at impact (n, 3), path length (n,) [cm], reached (n,) bool);
        ``reached`` is False for tracks that curl up before the cylinder (2 R_curv too small).
    """
    n = len(momentum)
    impact = np.full((n, 3), np.nan)
    out_dir = np.full((n, 3), np.nan)
    path = np.full(n, np.nan)
    reached = np.zeros(n, dtype=bool)

    u_t = np.hypot(direction[:, 0], direction[:, 1])
    neutral = (charge == 0) | (field == 0)

    # straight lines: |s0 + s u|_T = radius
    idx = np.flatnonzero(neutral)
    if idx.size:
        s0, u = start[idx], direction[idx]
        a = u[:, 0] ** 2 + u[:, 1] ** 2
        b = 2 * (s0[:, 0] * u[:, 0] + s0[:, 1] * u[:, 1])
        c = s0[:, 0] ** 2 + s0[:, 1] ** 2 - radius**2
        s = (-b + np.sqrt(b * b - 4 * a * c)) / (2 * a)
        impact[idx] = s0 + s[:, None] * u
        out_dir[idx] = u
        path[idx] = s
        reached[idx] = True

    idx = np.flatnonzero(~neutral)
    if idx.size:
        s0, u, q = start[idx], direction[idx], charge[idx]
        ut = u_t[idx]
        pt = momentum[idx] * ut
        r_curv = pt / (C.MAGNETIC_RIGIDITY_GEV_PER_T_M * field) * 100.0  # cm
        ux, uy = u[:, 0] / ut, u[:, 1] / ut
        sgn = np.sign(q)
        # centre of the circle: a positive charge turns clockwise -> centre at +r (uy, -ux)
        cx = s0[:, 0] + sgn * r_curv * uy
        cy = s0[:, 1] + sgn * r_curv * (-ux)
        d = np.hypot(cx, cy)
        ok = (d <= radius + r_curv) & (d >= np.abs(radius - r_curv))
        a = (radius**2 - r_curv**2 + d**2) / (2 * d)
        h = np.sqrt(np.clip(radius**2 - a**2, 0.0, None))
        mx, my = a * cx / d, a * cy / d
        theta0 = np.arctan2(s0[:, 1] - cy, s0[:, 0] - cx)
        best_turn = np.full(len(idx), np.inf)
        best = np.zeros((len(idx), 2))
        for sign in (1.0, -1.0):
            px = mx + sign * h * (-cy) / d
            py = my + sign * h * cx / d
            theta = np.arctan2(py - cy, px - cx)
            # clockwise (q > 0): the angle decreases along the motion
            turn = np.where(sgn > 0, theta0 - theta, theta - theta0) % (2 * np.pi)
            better = turn < best_turn
            best_turn = np.where(better, turn, best_turn)
            best[better] = np.stack([px, py], axis=1)[better]
        s_t = r_curv * best_turn
        z = s0[:, 2] + s_t * u[:, 2] / ut
        rot = -sgn * best_turn
        dx = ux * np.cos(rot) - uy * np.sin(rot)
        dy = ux * np.sin(rot) + uy * np.cos(rot)
        new_dir = np.stack([dx * ut, dy * ut, u[:, 2]], axis=1)
        impact[idx[ok]] = np.stack([best[:, 0], best[:, 1], z], axis=1)[ok]
        out_dir[idx[ok]] = new_dir[ok]
        path[idx[ok]] = (s_t / ut)[ok]
        reached[idx[ok]] = True
    return impact, out_dir, path, reached


def material_budget(eta: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Tracker material in front of the ECAL, x/X0, as a function of eta (see constants)."""
    return scale * (C.TRACKER_X0_CENTRAL * np.cosh(eta) + C.TRACKER_X0_ETA2 * eta**2)


def conversion_probability(x_over_x0: np.ndarray) -> np.ndarray:
    """P(conversion) = 1 - exp(-7/9 x/X0)."""
    return 1.0 - np.exp(-C.PAIR_PRODUCTION_X0_FACTOR * x_over_x0)


def sample_conversion_radius(x_over_x0: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Radius [cm] of a conversion, given that it happened.

    The material is spread uniformly in radius between TRACKER_MATERIAL_R_MIN and _R_MAX, so the
    traversed fraction f of it follows exp(-k f) on [0, 1] with k = 7/9 x/X0.
    """
    k = C.PAIR_PRODUCTION_X0_FACTOR * np.maximum(x_over_x0, 1e-9)
    u = rng.uniform(size=len(k))
    f = -np.log1p(-u * (-np.expm1(-k))) / k
    return C.TRACKER_MATERIAL_R_MIN + f * (C.TRACKER_MATERIAL_R_MAX - C.TRACKER_MATERIAL_R_MIN)


def sample_pair_energy_fraction(n: int, rng: np.random.Generator) -> np.ndarray:
    """Electron energy fraction x of a conversion pair, dsigma/dx ~ 1 - 4/3 x (1 - x).

    The complete-screening Bethe-Heitler shape [PDG-PP eq. 34.31], sampled by rejection.
    """
    out = np.empty(n)
    todo = np.arange(n)
    while todo.size:
        x = rng.uniform(size=todo.size)
        accept = rng.uniform(size=todo.size) < 1.0 - 4.0 / 3.0 * x * (1.0 - x)
        out[todo[accept]] = x[accept]
        todo = todo[~accept]
    return out
