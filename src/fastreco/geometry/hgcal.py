# ruff: noqa: RUF046  (numba kernels: int(math.floor(x)) keeps the integer type explicit)
"""CMS-HGCAL-like endcap calorimeter: hexagonal silicon cells in 26 + 21 sampling layers.

One endcap (+z) of a high-granularity sampling calorimeter after the CMS HGCAL Technical Design
Report (CERN-LHCC-2017-023) and the 26 + 21 layer geometry CMS simulates since (see
:mod:`fastreco.constants`, HGCAL section):

* acceptance 1.5 < eta < 3.0; the electromagnetic section (CE-E) starts at z = 320 cm;
* CE-E: 26 silicon layers, each behind lead (1.4 / 2.5 / 4.1 mm), copper, steel and a CuW module
  baseplate: 0.79 to 1.28 X0 per layer, 27.7 X0 and 1.5 lambda_I in all;
* CE-H: 21 silicon layers behind 45 / 41.5 / 60.7 mm of steel plus a copper cooling plate:
  0.31 to 0.42 lambda_I per layer, 7.6 lambda_I in all (9.1 lambda_I for the whole endcap);
* no scintillator tiles: where CMS reads the outer CE-H out with scintillator, this model keeps
  silicon;
* hexagonal cells of 0.52 cm^2 inside a radius of 75 cm and 1.18 cm^2 outside, in every layer.

Cells
-----
Each layer is a plane at ``layer_z[layer]`` (the silicon, at the back of its absorber slab),
instrumented between ``r_min = z / sinh(3.0)`` and ``r_max = z / sinh(1.5)``. Each layer has two
*regions*: fine cells for r < ``fine_radius`` and coarse cells outside. A region is a pointy-top
hexagonal lattice centred on the beam axis, addressed by axial coordinates (q, r): the centre of
cell (q, r) is ``x = d (q + r / 2)``, ``y = 1.5 s r`` with side ``s`` and pitch ``d = sqrt(3) s``.
A point belongs to the region its *radius* falls in, and to the lattice cell that contains it.
A region's cells are the hexagons whose centre lies within their inradius (d / 2) of the region's
annulus, so the cells at the inner, outer and fine/coarse boundaries are partial cells, clipped
by the circle like CMS's partial wafers; the thin slivers of hexagon corners beyond that margin
(a few millionths of the area) are not instrumented (``cell_at`` gives -1 there).

Cell ids are contiguous, in the order layer, region, lattice row, q, so ``cell_layer`` is one
``searchsorted`` on ``layer_offsets``. :meth:`HgcalEndcap.cell_position` gives a point inside the
instrumented part of each cell: its centre, or for partial cells whose centre lies outside the
region, the centre moved radially just inside the boundary; ``cell_at(cell_position(c)) == c``
holds for every cell.

With the defaults the endcap has 4.67 million cells (2.12 M in the CE-E, 2.55 M in the
CE-H): at the TDR's cell sizes, 47 silicon layers over 1.5 < eta < 3.0 need that many. Nothing is
allocated per cell (ids are computed from a few tables of lattice rows), so the count costs
nothing; larger ``fine_cell_area`` / ``coarse_cell_area`` make a coarser detector.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from fastreco import constants as C
from fastreco.errors import InputError
from fastreco.geometry import DETECTORS

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

#: Axial offsets (dq, dr) of the six neighbours of a hexagonal cell, counter-clockwise from +x.
NEIGHBOUR_OFFSETS = ((1, 0), (1, -1), (0, -1), (-1, 0), (-1, 1), (0, 1))
_MARGIN = 1e-4  # cm, keeps representative points strictly inside their hexagon
_EPS = 1e-6  # cm, how far inside the boundary a partial cell's representative point lies


# --------------------------------------------------------------------------------------------
# materials
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Material:
    """Radiation length, nuclear interaction length [cm], MIP dE/dx [GeV/cm], critical energy
    [GeV] and density [g/cm^3] of one material (PDG values, see :mod:`fastreco.constants`)."""

    x0: float
    lambda_i: float
    dedx: float
    ec: float
    density: float

    @property
    def moliere_radius(self) -> float:
        return C.MOLIERE_SCALE_ENERGY * self.x0 / self.ec


def _mixture(parts: dict[Material, float]) -> Material:
    """A mixture from mass fractions (the PDG's rules: 1/X0 = sum w_j / X0_j in g/cm^2, ...)."""
    density = 1.0 / sum(w / m.density for m, w in parts.items())
    x0 = 1.0 / sum(w / (m.x0 * m.density) for m, w in parts.items()) / density
    lam = 1.0 / sum(w / (m.lambda_i * m.density) for m, w in parts.items()) / density
    dedx = sum(w * m.dedx / m.density for m, w in parts.items()) * density
    rm = 1.0 / sum(w / (m.moliere_radius * m.density) for m, w in parts.items()) / density
    return Material(x0, lam, dedx, C.MOLIERE_SCALE_ENERGY * x0 / rm, density)


LEAD = Material(
    C.LEAD_RADIATION_LENGTH,
    C.LEAD_NUCLEAR_INTERACTION_LENGTH,
    C.LEAD_DEDX_MIN,
    C.LEAD_CRITICAL_ENERGY,
    C.LEAD_DENSITY,
)
COPPER = Material(
    C.COPPER_RADIATION_LENGTH,
    C.COPPER_NUCLEAR_INTERACTION_LENGTH,
    C.COPPER_DEDX_MIN,
    C.COPPER_CRITICAL_ENERGY,
    C.COPPER_DENSITY,
)
STEEL = Material(
    C.IRON_RADIATION_LENGTH,
    C.IRON_NUCLEAR_INTERACTION_LENGTH,
    C.IRON_DEDX_MIN,
    C.IRON_CRITICAL_ENERGY,
    C.IRON_DENSITY,
)
TUNGSTEN = Material(
    C.TUNGSTEN_RADIATION_LENGTH,
    C.TUNGSTEN_NUCLEAR_INTERACTION_LENGTH,
    C.TUNGSTEN_DEDX_MIN,
    C.TUNGSTEN_CRITICAL_ENERGY,
    C.TUNGSTEN_DENSITY,
)
SILICON = Material(
    C.SILICON_RADIATION_LENGTH,
    C.SILICON_NUCLEAR_INTERACTION_LENGTH,
    C.SILICON_DEDX_MIN,
    C.SILICON_CRITICAL_ENERGY,
    C.SILICON_DENSITY,
)
PCB = Material(
    C.PCB_RADIATION_LENGTH,
    C.PCB_NUCLEAR_INTERACTION_LENGTH,
    C.PCB_DEDX_MIN,
    C.PCB_CRITICAL_ENERGY,
    1.7,
)
CUW = _mixture({TUNGSTEN: C.CUW_TUNGSTEN_MASS_FRACTION, COPPER: 1 - C.CUW_TUNGSTEN_MASS_FRACTION})


def layer_materials(lead: float | None, steel: float | None) -> tuple[float, dict[Material, float]]:
    """Pitch [cm] and material thicknesses [cm] of one CE-E (``lead``) or CE-H (``steel``) layer."""
    if lead is not None:
        return C.HGCAL_EE_PITCH_EXTRA_CM + lead, {
            LEAD: lead,
            COPPER: C.HGCAL_EE_COPPER_CM,
            STEEL: C.HGCAL_EE_STEEL_CM,
            CUW: C.HGCAL_EE_CUW_CM,
            PCB: C.HGCAL_PCB_CM,
            SILICON: C.HGCAL_SILICON_CM,
        }
    assert steel is not None
    return C.HGCAL_HE_PITCH_EXTRA_CM + steel, {
        STEEL: steel + C.HGCAL_HE_COVER_STEEL_CM,
        COPPER: C.HGCAL_HE_COPPER_CM,
        PCB: C.HGCAL_PCB_CM,
        SILICON: C.HGCAL_SILICON_CM,
    }


# --------------------------------------------------------------------------------------------
# hexagonal lattice kernels (numba): shared by the vectorized API and the shower simulation
# --------------------------------------------------------------------------------------------
# ``tables`` is a tuple of six arrays (kernels unpack it once; numba is much slower indexing a
# tuple of many arrays in an inner loop):
#   layer_f (L, 3) float: r_min, r_max, fine_bound (the point radius below which a point is in
#       the fine region) of each layer;
#   reg_f (L, 2, 3) float: side s, r_lo, r_hi (the annulus) of each (layer, region);
#   reg_i (L, 2, 3) int: lowest lattice row, number of rows, index of the first row in row_i;
#   row_i (R, 2) int: first segment and number of segments (runs of cells) of each row;
#   seg_i (S, 5) int: first q, number of cells, layer, region and lattice row r of each segment;
#   seg_id0 (S,) int: first cell id of each segment (increasing).
LAYER_RMIN, LAYER_RMAX, LAYER_FINE_BOUND = 0, 1, 2
REG_SIDE, REG_RLO, REG_RHI = 0, 1, 2
REG_ROW0, REG_NROWS, REG_ROWBASE = 0, 1, 2
SEG_Q0, SEG_N, SEG_LAYER, SEG_REGION, SEG_ROW = 0, 1, 2, 3, 4


@numba.njit(cache=True)
def _build_segments(rlo, rhi, side):
    """Runs of cells per lattice row for every (layer, region) annulus [rlo, rhi).

    A cell is kept when its centre lies within (rlo - d/2, rhi + d/2), d/2 being the inradius.
    Returns reg_i, row_i, seg_i and seg_id0 (see ``tables`` above).
    """
    n_layers = rlo.shape[0]
    reg_i = np.zeros((n_layers, 2, 3), dtype=np.int64)
    total_rows = 0
    for li in range(n_layers):
        for g in range(2):
            if rhi[li, g] <= rlo[li, g]:
                continue
            s = side[li, g]
            d = math.sqrt(3.0) * s
            outer = rhi[li, g] + 0.5 * d - _MARGIN
            top = int(math.floor(outer / (1.5 * s)))
            reg_i[li, g, REG_ROW0] = -top
            reg_i[li, g, REG_NROWS] = 2 * top + 1
            reg_i[li, g, REG_ROWBASE] = total_rows
            total_rows += 2 * top + 1
    row_i = np.zeros((total_rows, 2), dtype=np.int64)
    cap = 2 * total_rows + 1
    seg_i = np.zeros((cap, 5), dtype=np.int64)
    seg_id0 = np.zeros(cap, dtype=np.int64)
    n_seg = 0
    next_id = 0
    for li in range(n_layers):
        for g in range(2):
            if reg_i[li, g, REG_NROWS] == 0:
                continue
            s = side[li, g]
            d = math.sqrt(3.0) * s
            inner = rlo[li, g] - 0.5 * d + _MARGIN
            outer = rhi[li, g] + 0.5 * d - _MARGIN
            inner2 = inner * inner if inner > 0 else -1.0
            outer2 = outer * outer
            for k in range(reg_i[li, g, REG_NROWS]):
                rr = reg_i[li, g, REG_ROW0] + k
                row = reg_i[li, g, REG_ROWBASE] + k
                row_i[row, 0] = n_seg
                y = 1.5 * s * rr
                if y * y >= outer2:
                    continue
                half = math.sqrt(outer2 - y * y)
                q_lo = int(math.floor(-half / d - 0.5 * rr)) - 1
                q_hi = int(math.ceil(half / d - 0.5 * rr)) + 1
                in_run = False
                for q in range(q_lo, q_hi + 1):
                    x = d * (q + 0.5 * rr)
                    rho2 = x * x + y * y
                    keep = inner2 < rho2 < outer2
                    if keep and not in_run:
                        seg_i[n_seg, SEG_Q0] = q
                        seg_i[n_seg, SEG_N] = 0
                        seg_i[n_seg, SEG_LAYER] = li
                        seg_i[n_seg, SEG_REGION] = g
                        seg_i[n_seg, SEG_ROW] = rr
                        seg_id0[n_seg] = next_id
                        n_seg += 1
                        row_i[row, 1] += 1
                        in_run = True
                    if keep:
                        seg_i[n_seg - 1, SEG_N] += 1
                        next_id += 1
                    elif in_run:
                        in_run = False
    return reg_i, row_i, seg_i[:n_seg].copy(), seg_id0[:n_seg].copy()


@numba.njit(cache=True, inline="always")
def _axial_round(x, y, s):
    """Axial (q, r) of the pointy-top hexagon of side s containing the point (x, y)."""
    qf = (math.sqrt(3.0) / 3.0 * x - y / 3.0) / s
    rf = (2.0 / 3.0 * y) / s
    cx, cz = qf, rf
    cy = -cx - cz
    rx, ry, rz = round(cx), round(cy), round(cz)
    dx, dy, dz = abs(rx - cx), abs(ry - cy), abs(rz - cz)
    if dx > dy and dx > dz:
        rx = -ry - rz
    elif dy <= dz:
        rz = -rx - ry
    return int(rx), int(rz)


@numba.njit(cache=True, inline="always")
def lattice_lookup(reg_i, row_i, seg_i, seg_id0, layer, region, q, rr) -> int:
    """Cell id of lattice cell (q, rr) of (layer, region); -1 if not instrumented."""
    k = rr - reg_i[layer, region, REG_ROW0]
    if k < 0 or k >= reg_i[layer, region, REG_NROWS]:
        return -1
    row = reg_i[layer, region, REG_ROWBASE] + k
    first = row_i[row, 0]
    for j in range(row_i[row, 1]):
        sg = first + j
        dq = q - seg_i[sg, SEG_Q0]
        if 0 <= dq < seg_i[sg, SEG_N]:
            return seg_id0[sg] + dq
    return -1


@numba.njit(cache=True, inline="always")
def cell_at_point(layer_f, reg_f, reg_i, row_i, seg_i, seg_id0, layer, x, y) -> int:
    """Cell containing the point (x, y) [cm] of ``layer``; -1 outside the instrumented area.

    Takes the six arrays of :attr:`HgcalEndcap.tables`, unpacked.
    """
    if layer < 0 or layer >= layer_f.shape[0]:
        return -1
    rho = math.sqrt(x * x + y * y)
    if not (layer_f[layer, LAYER_RMIN] <= rho < layer_f[layer, LAYER_RMAX]):
        return -1
    region = 0 if rho < layer_f[layer, LAYER_FINE_BOUND] else 1
    q, rr = _axial_round(x, y, reg_f[layer, region, REG_SIDE])
    return lattice_lookup(reg_i, row_i, seg_i, seg_id0, layer, region, q, rr)


@numba.njit(cache=True)
def _cell_at_many(tables, layer, x, y, out):
    layer_f, reg_f, reg_i, row_i, seg_i, seg_id0 = tables
    for i in range(out.shape[0]):
        out[i] = cell_at_point(layer_f, reg_f, reg_i, row_i, seg_i, seg_id0, layer[i], x[i], y[i])


@numba.njit(cache=True, inline="always")
def _segment_of(seg_i, seg_id0, cell):
    """Segment index of ``cell`` (binary search on the first ids), -1 if out of range."""
    n = seg_id0.shape[0]
    if n == 0 or cell < 0:
        return -1
    sg = np.searchsorted(seg_id0, cell, side="right") - 1
    if sg < 0 or cell >= seg_id0[sg] + seg_i[sg, SEG_N]:
        return -1
    return sg


@numba.njit(cache=True)
def _positions_many(tables, cell, x, y, layer, region, q_out, r_out):
    """Representative point (x, y), layer, region and axial (q, r) of each cell (-1 if invalid)."""
    _, reg_f, _, _, seg_i, seg_id0 = tables
    for i in range(cell.shape[0]):
        sg = _segment_of(seg_i, seg_id0, cell[i])
        if sg < 0:
            x[i] = np.nan
            y[i] = np.nan
            layer[i] = -1
            region[i] = -1
            q_out[i] = 0
            r_out[i] = 0
            continue
        li = seg_i[sg, SEG_LAYER]
        g = seg_i[sg, SEG_REGION]
        rr = seg_i[sg, SEG_ROW]
        q = seg_i[sg, SEG_Q0] + cell[i] - seg_id0[sg]
        s = reg_f[li, g, REG_SIDE]
        cx = math.sqrt(3.0) * s * (q + 0.5 * rr)
        cy = 1.5 * s * rr
        rho = math.sqrt(cx * cx + cy * cy)
        lo = reg_f[li, g, REG_RLO]
        hi = reg_f[li, g, REG_RHI]
        if rho < lo:
            f = (lo + _EPS) / rho
            cx *= f
            cy *= f
        elif rho >= hi:
            f = (hi - _EPS) / rho
            cx *= f
            cy *= f
        x[i] = cx
        y[i] = cy
        layer[i] = li
        region[i] = g
        q_out[i] = q
        r_out[i] = rr


@numba.njit(cache=True)
def _neighbours_many(tables, cell, out):
    _, _, reg_i, row_i, seg_i, seg_id0 = tables
    dq = (1, 1, 0, -1, -1, 0)
    dr = (0, -1, -1, 0, 1, 1)
    for i in range(cell.shape[0]):
        sg = _segment_of(seg_i, seg_id0, cell[i])
        if sg < 0:
            out[i, :] = -1
            continue
        li = seg_i[sg, SEG_LAYER]
        g = seg_i[sg, SEG_REGION]
        rr = seg_i[sg, SEG_ROW]
        q = seg_i[sg, SEG_Q0] + cell[i] - seg_id0[sg]
        for k in range(6):
            out[i, k] = lattice_lookup(reg_i, row_i, seg_i, seg_id0, li, g, q + dq[k], rr + dr[k])


# --------------------------------------------------------------------------------------------
# the detector
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _tables_for(key: tuple[Any, ...]) -> tuple[np.ndarray, ...]:
    geometry = HgcalEndcap.from_dict(dict(key))
    z = geometry.layer_z
    rmin = z / math.sinh(geometry.eta_max)
    rmax = z / math.sinh(geometry.eta_min)
    fine_bound = np.clip(geometry.fine_radius, rmin, rmax)
    rlo = np.stack([rmin, fine_bound], axis=1)
    rhi = np.stack([fine_bound, rmax], axis=1)
    side = np.empty_like(rlo)
    side[:, 0] = math.sqrt(2.0 * geometry.fine_cell_area / (3.0 * math.sqrt(3.0)))
    side[:, 1] = math.sqrt(2.0 * geometry.coarse_cell_area / (3.0 * math.sqrt(3.0)))
    reg_i, row_i, seg_i, seg_id0 = _build_segments(rlo, rhi, side)
    layer_f = np.stack([rmin, rmax, fine_bound], axis=1)
    reg_f = np.stack([side, rlo, rhi], axis=2)
    tables = (layer_f, reg_f, reg_i, row_i, seg_i, seg_id0)
    for a in tables:
        a.setflags(write=False)
    return tables


@DETECTORS.register("hgcal")
@dataclasses.dataclass(frozen=True)
class HgcalEndcap:
    """One HGCAL-like endcap at +z. Defaults follow CMS (see the module docstring).

    Attributes:
        z_front: z of the front face of the first absorber [cm].
        eta_min, eta_max: instrumented eta range; each layer covers z/sinh(eta_max) <= r <
            z/sinh(eta_min).
        fine_cell_area, coarse_cell_area: hexagonal cell areas [cm^2].
        fine_radius: radius below which cells are fine [cm].
        em_lead: lead thickness of each CE-E layer [cm] (the number of entries is the number of
            CE-E layers; the other materials of a layer are fixed, see constants).
        had_steel: steel absorber thickness of each CE-H layer [cm].
    """

    z_front: float = C.HGCAL_Z_FRONT
    eta_min: float = C.HGCAL_ETA_MIN
    eta_max: float = C.HGCAL_ETA_MAX
    fine_cell_area: float = C.HGCAL_FINE_CELL_AREA
    coarse_cell_area: float = C.HGCAL_COARSE_CELL_AREA
    fine_radius: float = C.HGCAL_FINE_RADIUS
    em_lead: tuple[float, ...] = C.HGCAL_EE_LEAD_CM
    had_steel: tuple[float, ...] = C.HGCAL_HE_STEEL_CM
    name: str = dataclasses.field(default="hgcal", init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "em_lead", tuple(float(v) for v in self.em_lead))
        object.__setattr__(self, "had_steel", tuple(float(v) for v in self.had_steel))
        for field in ("z_front", "fine_cell_area", "coarse_cell_area", "fine_radius"):
            value = getattr(self, field)
            if not (math.isfinite(value) and value > 0):
                raise InputError("must be finite and > 0", field=field, value=value)
        if not (0 < self.eta_min < self.eta_max < 10):
            raise InputError(
                "need 0 < eta_min < eta_max < 10",
                field="eta_min",
                value=(self.eta_min, self.eta_max),
            )
        if not self.em_lead and not self.had_steel:
            raise InputError("the detector needs at least one layer", field="em_lead", value=[])
        for field in ("em_lead", "had_steel"):
            if any(not (math.isfinite(v) and v >= 0) for v in getattr(self, field)):
                raise InputError("thicknesses must be finite and >= 0", field=field)

    # --- layers ------------------------------------------------------------------------------
    @property
    def n_em_layers(self) -> int:
        return len(self.em_lead)

    @property
    def n_had_layers(self) -> int:
        return len(self.had_steel)

    @property
    def n_layers(self) -> int:
        return self.n_em_layers + self.n_had_layers

    @functools.cached_property
    def _layer_arrays(self) -> dict[str, FloatArray]:
        rows = [layer_materials(lead, None) for lead in self.em_lead]
        rows += [layer_materials(None, steel) for steel in self.had_steel]
        pitch = np.array([p for p, _ in rows])
        x0 = np.array([sum(t / m.x0 for m, t in mats.items()) for _, mats in rows])
        lam = np.array([sum(t / m.lambda_i for m, t in mats.items()) for _, mats in rows])
        mip = np.array([sum(t * m.dedx for m, t in mats.items()) for _, mats in rows])
        inv_rm = np.array([sum(t / m.moliere_radius for m, t in mats.items()) for _, mats in rows])
        z_back = self.z_front + np.cumsum(pitch)
        out = {
            "pitch": pitch,
            "z_start": z_back - pitch,
            "z": z_back,
            "x0": x0,
            "lambda": lam,
            "mip_weight": mip,
            "moliere_radius": pitch / inv_rm,
            "lambda_eff": pitch / lam,
            "cum_x0": np.cumsum(x0),
            "cum_lambda": np.cumsum(lam),
            "sampling_fraction": C.HGCAL_SILICON_CM * SILICON.dedx / mip,
        }
        for a in out.values():
            a.setflags(write=False)
        return out

    @property
    def layer_z(self) -> FloatArray:
        """z of each silicon layer [cm] (at the back of its absorber slab), shape (n_layers,)."""
        return self._layer_arrays["z"]

    @property
    def layer_pitch(self) -> FloatArray:
        """Thickness along z of each layer's slab (absorber, services, module, air) [cm]."""
        return self._layer_arrays["pitch"]

    @property
    def layer_z_start(self) -> FloatArray:
        """z of the front of each layer's slab [cm]; the slab ends at ``layer_z``."""
        return self._layer_arrays["z_start"]

    @property
    def absorber_x0(self) -> FloatArray:
        """Material of each layer's slab in radiation lengths (at normal incidence)."""
        return self._layer_arrays["x0"]

    @property
    def absorber_lambda(self) -> FloatArray:
        """Material of each layer's slab in nuclear interaction lengths (at normal incidence)."""
        return self._layer_arrays["lambda"]

    @property
    def cumulative_x0(self) -> FloatArray:
        """Radiation lengths from the front face to each silicon layer."""
        return self._layer_arrays["cum_x0"]

    @property
    def cumulative_lambda(self) -> FloatArray:
        """Interaction lengths from the front face to each silicon layer."""
        return self._layer_arrays["cum_lambda"]

    @property
    def mip_weight(self) -> FloatArray:
        """dE/dx weight of each layer [GeV per MIP]: the mean energy a MIP loses in the slab.

        The reconstructed energy of a set of hits is ``sum(energy_mip * mip_weight[layer])``.
        """
        return self._layer_arrays["mip_weight"]

    @property
    def sampling_fraction(self) -> FloatArray:
        """MIP sampling fraction of each layer: mean loss in the silicon / mean loss in the slab."""
        return self._layer_arrays["sampling_fraction"]

    @property
    def mip_mpv_silicon(self) -> float:
        """Most probable energy [GeV] a MIP leaves in the 300 um sensor (84 keV): 1 MIP."""
        return C.HGCAL_MIP_MPV_300UM

    @property
    def moliere_radius(self) -> FloatArray:
        """Effective Moliere radius of each layer's slab [cm] (1/R_M = sum (t_j/L) / R_M,j)."""
        return self._layer_arrays["moliere_radius"]

    @property
    def lambda_eff(self) -> FloatArray:
        """Effective nuclear interaction length of each layer's slab [cm]: pitch / lambda."""
        return self._layer_arrays["lambda_eff"]

    @property
    def em_critical_energy(self) -> float:
        """Effective critical energy of the CE-E mixture [GeV]: E_s X0_eff / R_M,eff."""
        n = max(self.n_em_layers, 1)
        x0_eff = self.layer_pitch[:n] / self.absorber_x0[:n]
        return float(np.mean(C.MOLIERE_SCALE_ENERGY * x0_eff / self.moliere_radius[:n]))

    def r_min(self, layer: npt.ArrayLike) -> FloatArray:
        """Inner radius (eta = eta_max) of ``layer`` [cm]."""
        return self.tables[0][np.asarray(layer), LAYER_RMIN]

    def r_max(self, layer: npt.ArrayLike) -> FloatArray:
        """Outer radius (eta = eta_min) of ``layer`` [cm]."""
        return self.tables[0][np.asarray(layer), LAYER_RMAX]

    # --- cells ---------------------------------------------------------------------------------
    @property
    def tables(self) -> tuple[np.ndarray, ...]:
        """Lattice tables (six arrays, see the module) for the numba kernels such as
        :func:`cell_at_point`."""
        return _tables_for(tuple((k, _hashable(v)) for k, v in self.to_dict().items()))

    @property
    def layer_offsets(self) -> IntArray:
        """First cell id of each layer, and n_cells at the end, shape (n_layers + 1,)."""
        _, _, _, _, seg_i, seg_id0 = self.tables
        first = np.searchsorted(seg_i[:, SEG_LAYER], np.arange(self.n_layers + 1), side="left")
        ends = np.append(seg_id0, self.n_cells)
        return ends[first]

    @property
    def n_cells(self) -> int:
        _, _, _, _, seg_i, seg_id0 = self.tables
        return int(seg_id0[-1] + seg_i[-1, SEG_N]) if len(seg_id0) else 0

    def cell_layer(self, cell: npt.ArrayLike) -> IntArray:
        """Layer of each cell (0 = first CE-E layer)."""
        cell = np.asarray(cell, dtype=np.int64)
        return np.searchsorted(self.layer_offsets, cell, side="right") - 1

    def _decode(self, cell: npt.ArrayLike) -> tuple[np.ndarray, ...]:
        flat = np.atleast_1d(np.asarray(cell, dtype=np.int64)).ravel()
        n = len(flat)
        x, y = np.empty(n), np.empty(n)
        layer, region = np.empty(n, np.int64), np.empty(n, np.int64)
        q, r = np.empty(n, np.int64), np.empty(n, np.int64)
        _positions_many(self.tables, flat, x, y, layer, region, q, r)
        if np.any(layer < 0):
            bad = flat[layer < 0][0]
            raise InputError(
                f"not a cell id (0 <= id < {self.n_cells})", field="cell", value=int(bad)
            )
        shape = np.shape(cell)
        return tuple(a.reshape(shape) for a in (x, y, layer, region, q, r))

    def cell_position(self, cell: npt.ArrayLike) -> dict[str, np.ndarray]:
        """Position of each cell: x, y, z [cm], layer, eta, phi.

        (x, y) is the cell centre, or for partial cells whose centre is outside the instrumented
        annulus, the centre moved radially just inside it; ``cell_at`` maps it back to the cell.
        """
        x, y, layer, _, _, _ = self._decode(cell)
        z = self.layer_z[layer]
        rho = np.hypot(x, y)
        return {
            "x": x,
            "y": y,
            "z": z,
            "layer": layer,
            "eta": np.arcsinh(z / rho),
            "phi": np.arctan2(y, x),
        }

    def cell_region(self, cell: npt.ArrayLike) -> IntArray:
        """0 for fine cells, 1 for coarse cells."""
        return self._decode(cell)[3]

    def cell_axial(self, cell: npt.ArrayLike) -> tuple[IntArray, IntArray, IntArray, IntArray]:
        """(layer, region, q, r): the lattice address of each cell."""
        _, _, layer, region, q, r = self._decode(cell)
        return layer, region, q, r

    def cell_area(self, cell: npt.ArrayLike) -> FloatArray:
        """Nominal (full hexagon) area of each cell [cm^2]; partial cells count as full."""
        region = self.cell_region(cell)
        return np.where(region == 0, self.fine_cell_area, self.coarse_cell_area)

    def cell_at(self, layer: npt.ArrayLike, x: npt.ArrayLike, y: npt.ArrayLike) -> IntArray:
        """Cell of ``layer`` containing the point (x, y) [cm]; -1 outside the instrumented area."""
        layer_b, x_b, y_b = np.broadcast_arrays(
            np.asarray(layer, dtype=np.int64),
            np.asarray(x, dtype=np.float64),
            np.asarray(y, dtype=np.float64),
        )
        out = np.empty(layer_b.size, dtype=np.int64)
        _cell_at_many(
            self.tables,
            np.ascontiguousarray(layer_b).ravel(),
            np.ascontiguousarray(x_b).ravel(),
            np.ascontiguousarray(y_b).ravel(),
            out,
        )
        return out.reshape(layer_b.shape)

    def neighbours(self, cell: npt.ArrayLike) -> IntArray:
        """The six same-layer neighbours of each cell, shape (n, 6); -1 where there is none.

        Neighbours are taken in the cell's own lattice (order of :data:`NEIGHBOUR_OFFSETS`), so a
        cell at the fine/coarse boundary has -1 towards the other region. The relation is
        symmetric: ``b in neighbours(a)`` if and only if ``a in neighbours(b)``.
        """
        flat = np.atleast_1d(np.asarray(cell, dtype=np.int64)).ravel()
        out = np.empty((len(flat), 6), dtype=np.int64)
        _neighbours_many(self.tables, flat, out)
        return out

    def hit_positions(self, cell: npt.ArrayLike) -> np.ndarray:
        """(x, y, z) of each cell [cm] as one array of shape (n, 3)."""
        pos = self.cell_position(np.atleast_1d(cell))
        return np.stack([pos["x"], pos["y"], pos["z"]], axis=1)

    def check_eta(self, eta: float, *, field: str = "eta") -> None:
        if not self.eta_min <= abs(eta) <= self.eta_max:
            raise InputError(
                f"outside the endcap ({self.eta_min} <= |eta| <= {self.eta_max})",
                field=field,
                value=eta,
            )

    # --- (de)serialization ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.init:
                value = getattr(self, f.name)
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> HgcalEndcap:
        params = dict(params)
        for key in ("em_lead", "had_steel"):
            if key in params:
                params[key] = tuple(params[key])
        return cls(**params)

    def summary(self) -> dict[str, Any]:
        """Key numbers of the detector, for documentation and checks."""
        n_em = self.n_em_layers
        offsets = self.layer_offsets
        return {
            "n_layers": self.n_layers,
            "n_em_layers": n_em,
            "n_had_layers": self.n_had_layers,
            "n_cells": self.n_cells,
            "n_cells_em": int(offsets[n_em]),
            "em_x0": float(self.absorber_x0[:n_em].sum()),
            "em_lambda": float(self.absorber_lambda[:n_em].sum()),
            "had_lambda": float(self.absorber_lambda[n_em:].sum()),
            "z_back": float(self.layer_z[-1]),
            "em_moliere_radius": float(self.moliere_radius[:n_em].mean()) if n_em else math.nan,
            "em_critical_energy": self.em_critical_energy,
        }


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
