r"""CLUE: density-based clustering of high-granularity calorimeter hits, and a 3D linking step.

CLUE is defined in M. Rovere, Z. Chen, A. Di Pilato, F. Pantaleo and C. Seez, "CLUE: A Fast
Parallel Clustering Algorithm for High Granularity Calorimeters in High-Energy Physics",
Front. Big Data 3 (2020) 591315, <https://doi.org/10.3389/fdata.2020.591315>, Sec. 2.
This module implements it as the paper defines it, layer by layer (2D), then links the 2D layer
clusters of a shower across layers into one 3D cluster.

**2D CLUE** (points ``i`` of one layer, weights = hit energies :math:`E`):

* local density, Eq. (1) of the paper,

  .. math:: \rho_i = \sum_{j:\ d_{ij} < d_c} \chi(d_{ij})\, E_j ,

  with the flat kernel the paper uses for HGCAL: :math:`\chi = 1` for :math:`j = i` and
  :math:`\chi = 0.5` for every other point closer than :math:`d_c` (so
  :math:`\rho_i = E_i + \tfrac12 \sum_{j \ne i,\ d_{ij} < d_c} E_j`);
* nearest-higher :math:`nh_i`: the nearest point of higher density, searched only within
  :math:`d_m = \max(\delta_c, \delta_o)`; the separation :math:`\delta_i = d(i, nh_i)`, or
  :math:`+\infty` when no higher point lies closer than :math:`d_m`;
* seed: :math:`\rho_i > \rho_c` and :math:`\delta_i > \delta_c`; outlier:
  :math:`\rho_i < \rho_c` and :math:`\delta_i > \delta_o` with
  :math:`\delta_o = \text{outlier\_delta\_factor} \cdot d_c`; every other point is a follower of
  its nearest-higher (it always has one, since :math:`\delta_i \le d_m`);
* cluster ids are passed from each seed down the follower tree. Points whose chain ends in an
  outlier (followers of outliers), and the degenerate points with :math:`\rho_i = \rho_c` and no
  nearest-higher, end in no seed and get label -1, like the outliers.

Distances are Euclidean in the layer's plane; :math:`d < d_c` and :math:`d < d_m` are strict.
Points of different layers never interact in 2D.

**Ties.** Density ties are broken by a canonical order of the points that does not depend on the
input order: layer, tile, then ``x``, ``y``, energy (the input index only orders exact
duplicates, which always end in the same cluster). Of two points of equal density, the one first
in that order counts as the higher. Among candidates at exactly the same distance, the nearest-
higher is the one first in that order. Densities are summed in that order too, so a permuted
input gives bit-identical densities and the same partition (clusters are numbered in the
canonical order of their seeds: by layer, then position).

**Tiles.** As in the paper, each layer is covered by a fixed grid of square tiles of side
:math:`\ge d_c` (exactly :math:`d_c` unless the event is so spread out that the grid would need
more than ``max(4 n, 65536)`` tiles, in which case the side is doubled until it fits). A query of
radius ``r`` around a point visits the tiles that overlap the square ``[x-r, x+r] x [y-r, y+r]``,
so the search is exact for any tile side. The hits are counting-sorted by tile (O(n)); density,
nearest-higher, classification and the depth-first assignment of cluster ids run in one compiled
numba pass each, with no Python loop over points.

**3D linking (CLUE3D-like).** A shower leaves one 2D cluster per layer, roughly along a straight
line from the interaction point. We therefore run the same CLUE rules a second time, on the 2D
layer clusters, with

* points = the energy-weighted barycentres of the layer clusters in the projective coordinates
  :math:`(x/|z|, y/|z|)`, in which the layer clusters of one shower line up whatever its angle;
* weights = the layer-cluster energies;
* neighbours = the layer clusters within ``layer_window`` layers (the same layer included) and a
  transverse distance below ``dc3d`` (density) or :math:`d_m` (nearest-higher);
* the same kernel, tie-breaking, seed/outlier/follower rules with ``rhoc3d``, ``deltac3d`` and
  ``outlier_delta_factor3d``.

The density of a layer cluster then sums the energy of the shower around it over a few layers,
so it peaks near the shower maximum: the layer cluster there becomes the 3D seed and the layers
before and after it follow it through chains of nearest-highers. We chose this over a plain
"link to the nearest higher-energy cluster of the next layer" because it reuses the paper's
rules (one set of definitions, one tested kernel), the layer window bridges layers without a
cluster, and the density (rather than a single layer's energy) makes the one-seed-per-shower
outcome robust to layer-to-layer energy fluctuations. Hits with ``z < 0`` (the other endcap) never
cluster with hits with ``z > 0``. A hit's 3D label is the 3D label of its layer cluster; 2D
outliers and layer clusters that are 3D outliers get -1.

Shapes:
    - **input:** ``x, y, z, energy`` ``(n_hits,)`` floats (cm, cm, cm, GeV); ``layer``
      ``(n_hits,)`` integers.
    - **2D result:** per hit ``labels`` int64 (-1: outlier), ``rho`` float64 [GeV],
      ``delta`` float64 [cm] (``inf``: no nearest-higher within :math:`d_m`),
      ``nearest_higher`` int64 (-1: none), ``is_seed`` / ``is_outlier`` bool.
    - **3D result:** per hit ``labels`` int64; per 3D cluster ``energy`` ``(k,)`` [GeV] and
      ``barycentre`` ``(k, 3)`` [cm].
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numba
import numpy as np
import numpy.typing as npt

from fastreco.errors import InputError

log = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

__all__ = [
    "Clue2DResult",
    "Clue3DResult",
    "ClueParams",
    "LayerClusters",
    "clue2d",
    "clue3d",
    "cluster_event",
]

#: Lower bound on the number of tiles the grid may use before the tile side grows.
_MIN_TILE_BUDGET = 1 << 16


# --------------------------------------------------------------------------------------------
# parameters and results
# --------------------------------------------------------------------------------------------
def _check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok:
        v = float(value)
        ok = math.isfinite(v) and (v >= 0.0 if allow_zero else v > 0.0)
    if not ok:
        need = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise InputError(f"must be {need}", field=name, value=value)


@dataclass(frozen=True)
class ClueParams:
    """Parameters of :func:`clue3d` / :func:`cluster_event` (names as in the paper).

    2D stage (per layer, hit positions in cm, energies in GeV):

    * ``dc``: cut-off distance of the density [cm]. 1.3 cm is a little more than the pitch of
      HGCAL-like silicon cells (~0.5-1.2 cm^2), so the density sums a hit and its direct
      neighbours.
    * ``rhoc``: density a seed must exceed and below which an isolated point is an outlier
      [GeV]. 0.02 GeV is our choice (a few times a silicon cell's noise on the calibrated energy
      scale); tune it to the detector's noise.
    * ``outlier_delta_factor``: :math:`\\delta_o = ` ``outlier_delta_factor * dc``.
    * ``deltac``: minimum separation of a seed [cm]; ``None`` means ``dc``.

    3D linking stage (on layer clusters, in the projective coordinates ``x/|z|, y/|z|``):

    * ``dc3d``: transverse cut-off of the density (0.008 is ~2.6 cm at ``|z|`` = 320 cm);
    * ``rhoc3d`` [GeV], ``outlier_delta_factor3d``, ``deltac3d`` (``None``: ``dc3d``): as above;
    * ``layer_window``: layer clusters up to this many layers away are neighbours.
    """

    dc: float = 1.3
    rhoc: float = 0.02
    outlier_delta_factor: float = 2.0
    deltac: float | None = None
    dc3d: float = 0.008
    rhoc3d: float = 0.1
    outlier_delta_factor3d: float = 2.0
    deltac3d: float | None = None
    layer_window: int = 2

    def __post_init__(self) -> None:
        _check_positive("dc", self.dc)
        _check_positive("rhoc", self.rhoc, allow_zero=True)
        _check_positive("outlier_delta_factor", self.outlier_delta_factor)
        if self.deltac is not None:
            _check_positive("deltac", self.deltac)
        _check_positive("dc3d", self.dc3d)
        _check_positive("rhoc3d", self.rhoc3d, allow_zero=True)
        _check_positive("outlier_delta_factor3d", self.outlier_delta_factor3d)
        if self.deltac3d is not None:
            _check_positive("deltac3d", self.deltac3d)
        lw = self.layer_window
        if not isinstance(lw, (int, np.integer)) or isinstance(lw, bool) or lw < 0:
            raise InputError("must be an integer >= 0", field="layer_window", value=lw)

    @property
    def delta_c(self) -> float:
        """The seed separation :math:`\\delta_c` of the 2D stage [cm]."""
        return float(self.dc if self.deltac is None else self.deltac)

    @property
    def delta_c3d(self) -> float:
        """The seed separation of the 3D stage (projective units)."""
        return float(self.dc3d if self.deltac3d is None else self.deltac3d)


@dataclass(frozen=True)
class Clue2DResult:
    """Per-point output of one CLUE pass (arrays in the input order, shape ``(n,)``).

    ``labels``: cluster index 0..n_clusters-1, -1 for outliers (and followers of outliers);
    ``rho``: local density; ``delta``: distance to the nearest-higher (``inf`` if none within
    :math:`d_m`); ``nearest_higher``: its index (-1 if none); ``is_seed``, ``is_outlier``: the
    paper's seed and outlier conditions.
    """

    labels: IntArray
    rho: FloatArray
    delta: FloatArray
    nearest_higher: IntArray
    is_seed: BoolArray
    is_outlier: BoolArray
    n_clusters: int

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class LayerClusters:
    """The 2D layer clusters of an event, shape ``(m,)`` each: energy [GeV], energy-weighted
    barycentre ``x, y, z`` [cm] (plain mean if the energy is 0), ``layer``, and ``side`` (True for
    ``z < 0``)."""

    energy: FloatArray
    x: FloatArray
    y: FloatArray
    z: FloatArray
    layer: IntArray
    side: BoolArray

    def __len__(self) -> int:
        return len(self.energy)


@dataclass(frozen=True)
class Clue3DResult:
    """Output of :func:`clue3d`.

    ``labels`` ``(n_hits,)``: 3D cluster of each hit (-1: none); ``energy`` ``(k,)`` [GeV] and
    ``barycentre`` ``(k, 3)`` [cm]: energy sum and energy-weighted ``(x, y, z)`` of each 3D
    cluster's hits; ``hits``: the 2D CLUE result per hit (its ``labels`` index
    ``layer_clusters``); ``layer_clusters``: the 2D clusters; ``links``: the CLUE result of the 3D
    stage per layer cluster (its ``labels`` are the 3D cluster of each layer cluster).
    """

    labels: IntArray
    energy: FloatArray
    barycentre: FloatArray
    hits: Clue2DResult
    layer_clusters: LayerClusters
    links: Clue2DResult = field(repr=False)

    @property
    def n_clusters(self) -> int:
        return len(self.energy)


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------
def _float_array(name: str, values: npt.ArrayLike, n: int | None) -> FloatArray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"not an array of numbers ({exc})", field=name) from None
    if arr.ndim != 1:
        raise InputError(f"must be 1-dimensional, got shape {arr.shape}", field=name)
    if n is not None and len(arr) != n:
        raise InputError(f"has {len(arr)} entries, expected {n} (as x)", field=name)
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"not finite at index {i}", field=name, value=float(arr[i]))
    return arr


def _int_array(name: str, values: npt.ArrayLike, n: int) -> IntArray:
    raw = np.asarray(values)
    if raw.ndim != 1:
        raise InputError(f"must be 1-dimensional, got shape {raw.shape}", field=name)
    if len(raw) != n:
        raise InputError(f"has {len(raw)} entries, expected {n} (as x)", field=name)
    if raw.dtype.kind in "iu":
        return raw.astype(np.int64, copy=False)
    if raw.dtype.kind == "b":
        raise InputError("must be integers, got booleans", field=name)
    arr = _float_array(name, raw, n)
    bad = arr != np.round(arr)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"not an integer at index {i}", field=name, value=float(arr[i]))
    return arr.astype(np.int64)


def _check_energy(energy: FloatArray) -> None:
    bad = energy < 0.0
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"negative at index {i}", field="energy", value=float(energy[i]))


# --------------------------------------------------------------------------------------------
# compiled kernels
# --------------------------------------------------------------------------------------------
@numba.njit(cache=True, nogil=True)
def _tile_order(
    tile: np.ndarray, x: np.ndarray, y: np.ndarray, e: np.ndarray, n_tiles: int
) -> tuple[np.ndarray, np.ndarray]:
    """Canonical order (by tile, then x, y, energy, input index) and the tiles' CSR starts."""
    n = len(tile)
    start = np.zeros(n_tiles + 1, np.int64)
    for i in range(n):
        start[tile[i] + 1] += 1
    for t in range(n_tiles):
        start[t + 1] += start[t]
    cursor = start[:-1].copy()
    order = np.empty(n, np.int64)
    for i in range(n):  # stable: input order inside a tile
        t = tile[i]
        order[cursor[t]] = i
        cursor[t] += 1
    for t in range(n_tiles):  # tiles hold a few points: insertion sort by (x, y, e)
        a = start[t]
        b = start[t + 1]
        for k in range(a + 1, b):
            cur = order[k]
            xc = x[cur]
            yc = y[cur]
            ec = e[cur]
            m = k - 1
            while m >= a:
                p = order[m]
                if x[p] > xc or (
                    x[p] == xc
                    and (y[p] > yc or (y[p] == yc and (e[p] > ec or (e[p] == ec and p > cur))))
                ):
                    order[m + 1] = p
                    m -= 1
                else:
                    break
            order[m + 1] = cur
    return order, start


@numba.njit(cache=True, nogil=True)
def _window(v: float, r: float, v0: float, inv: float, nv: int) -> tuple[int, int]:
    lo = math.floor((v - r - v0) * inv)
    hi = math.floor((v + r - v0) * inv)
    return max(lo, 0), min(hi, nv - 1)


@numba.njit(cache=True, nogil=True)
def _clue_core(
    x: np.ndarray,
    y: np.ndarray,
    e: np.ndarray,
    lidx: np.ndarray,
    layer_values: np.ndarray,
    start: np.ndarray,
    nx: int,
    ny: int,
    x0: float,
    y0: float,
    tile_side: float,
    dc: float,
    rhoc: float,
    deltac: float,
    delta_o: float,
    layer_window: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """CLUE on points already in canonical (tile) order; all outputs in that order."""
    n = len(x)
    nxy = nx * ny
    inv = 1.0 / tile_side
    n_layers = len(layer_values)
    dc2 = dc * dc
    dm = max(deltac, delta_o)
    dm2 = dm * dm
    pad = 1e-9 * tile_side  # keeps the tile window conservative against rounding

    # ---- local density, Eq. (1): E_i + 0.5 * sum of the others closer than dc -------------
    rho = np.empty(n, np.float64)
    for i in range(n):
        xi = x[i]
        yi = y[i]
        ix_lo, ix_hi = _window(xi, dc + pad, x0, inv, nx)
        iy_lo, iy_hi = _window(yi, dc + pad, y0, inv, ny)
        ci = lidx[i]
        c_lo = ci
        while c_lo > 0 and layer_values[ci] - layer_values[c_lo - 1] <= layer_window:
            c_lo -= 1
        c_hi = ci
        while c_hi < n_layers - 1 and layer_values[c_hi + 1] - layer_values[ci] <= layer_window:
            c_hi += 1
        s = 0.0
        for c in range(c_lo, c_hi + 1):
            for iy in range(iy_lo, iy_hi + 1):
                row = c * nxy + iy * nx
                # the tiles of a row are consecutive, so are their points
                for j in range(start[row + ix_lo], start[row + ix_hi + 1]):
                    if j != i:
                        dx = x[j] - xi
                        dy = y[j] - yi
                        if dx * dx + dy * dy < dc2:
                            s += e[j]
        rho[i] = e[i] + 0.5 * s

    # ---- nearest-higher within dm (ties: earlier in canonical order is higher) -------------
    # First the square of half-width r1 = min(dc, dm) (already in cache from the density): a
    # higher point found closer than r1 is the nearest one, since every point outside that
    # square is farther than r1. Only the others (mostly local maxima) scan the whole dm window.
    r1 = min(dc, dm)
    r12 = r1 * r1
    nh = np.full(n, -1, np.int64)
    delta = np.full(n, np.inf, np.float64)
    for i in range(n):
        xi = x[i]
        yi = y[i]
        ri = rho[i]
        ci = lidx[i]
        c_lo = ci
        while c_lo > 0 and layer_values[ci] - layer_values[c_lo - 1] <= layer_window:
            c_lo -= 1
        c_hi = ci
        while c_hi < n_layers - 1 and layer_values[c_hi + 1] - layer_values[ci] <= layer_window:
            c_hi += 1
        best = -1
        bd2 = dm2
        for r in (r1, dm):
            ix_lo, ix_hi = _window(xi, r + pad, x0, inv, nx)
            iy_lo, iy_hi = _window(yi, r + pad, y0, inv, ny)
            for c in range(c_lo, c_hi + 1):
                for iy in range(iy_lo, iy_hi + 1):
                    row = c * nxy + iy * nx
                    for j in range(start[row + ix_lo], start[row + ix_hi + 1]):
                        rj = rho[j]
                        if rj > ri or (rj == ri and j < i):
                            dx = x[j] - xi
                            dy = y[j] - yi
                            d2 = dx * dx + dy * dy
                            if d2 < bd2 or (d2 == bd2 and j < best):
                                bd2 = d2
                                best = j
            if best >= 0 and bd2 < r12:
                break
        if best >= 0:
            nh[i] = best
            delta[i] = math.sqrt(bd2)

    # ---- seeds, outliers, followers -----------------------------------------------------
    is_seed = np.zeros(n, np.bool_)
    is_outlier = np.zeros(n, np.bool_)
    n_children = np.zeros(n + 1, np.int64)
    for i in range(n):
        if rho[i] > rhoc and delta[i] > deltac:
            is_seed[i] = True
        elif rho[i] < rhoc and delta[i] > delta_o:
            is_outlier[i] = True
        elif nh[i] >= 0:
            n_children[nh[i] + 1] += 1
    for i in range(n):
        n_children[i + 1] += n_children[i]
    child_start = n_children
    cursor = child_start[:-1].copy()
    children = np.empty(child_start[n], np.int64)
    for i in range(n):
        if not is_seed[i] and not is_outlier[i] and nh[i] >= 0:
            p = nh[i]
            children[cursor[p]] = i
            cursor[p] += 1

    # ---- cluster ids from the seeds down the follower trees (depth-first) -----------------
    labels = np.full(n, -1, np.int64)
    stack = np.empty(n, np.int64)
    k = 0
    for s0 in range(n):
        if not is_seed[s0]:
            continue
        labels[s0] = k
        top = 0
        stack[0] = s0
        while top >= 0:
            p = stack[top]
            top -= 1
            for q in range(child_start[p], child_start[p + 1]):
                c = children[q]
                labels[c] = k
                top += 1
                stack[top] = c
        k += 1
    return rho, delta, nh, is_seed, is_outlier, labels, k


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------
def _compact_layers(layer: IntArray) -> tuple[IntArray, IntArray]:
    """(index of each point's layer among the sorted distinct layers, the distinct layers)."""
    lo = int(layer.min())
    span = int(layer.max()) - lo + 1
    if span <= 4 * len(layer) + 1024:  # O(n) via a dense presence table
        present = np.bincount(layer - lo, minlength=span) > 0
        index = np.cumsum(present) - 1
        return index[layer - lo], np.flatnonzero(present).astype(np.int64) + lo
    values, inverse = np.unique(layer, return_inverse=True)
    return inverse.astype(np.int64), values.astype(np.int64)


def _empty_result() -> Clue2DResult:
    return Clue2DResult(
        labels=np.empty(0, np.int64),
        rho=np.empty(0, np.float64),
        delta=np.empty(0, np.float64),
        nearest_higher=np.empty(0, np.int64),
        is_seed=np.empty(0, np.bool_),
        is_outlier=np.empty(0, np.bool_),
        n_clusters=0,
    )


def _run_clue(
    x: FloatArray,
    y: FloatArray,
    layer: IntArray,
    energy: FloatArray,
    dc: float,
    rhoc: float,
    deltac: float,
    delta_o: float,
    layer_window: int,
) -> Clue2DResult:
    """CLUE on validated arrays; ``layer_window`` > 0 lets neighbouring layers interact."""
    n = len(x)
    if n == 0:
        return _empty_result()
    lidx, layer_values = _compact_layers(layer)
    n_layers = len(layer_values)
    x0 = float(x.min())
    y0 = float(y.min())
    ext_x = float(x.max()) - x0
    ext_y = float(y.max()) - y0
    side = float(dc)
    budget = max(4 * n, _MIN_TILE_BUDGET)
    while True:
        nx = int(ext_x / side) + 1
        ny = int(ext_y / side) + 1
        if n_layers * nx * ny <= budget:
            break
        side *= 2.0
    if side > dc:
        log.debug("CLUE tile side grown from %g to %g for a spread-out event", dc, side)
    ix = np.minimum(((x - x0) * (1.0 / side)).astype(np.int64), nx - 1)
    iy = np.minimum(((y - y0) * (1.0 / side)).astype(np.int64), ny - 1)
    tile = (lidx * ny + iy) * nx + ix
    order, start = _tile_order(tile, x, y, energy, n_layers * nx * ny)
    xs = x[order]
    ys = y[order]
    es = energy[order]
    rho, delta, nh, seed, outlier, labels, k = _clue_core(
        xs,
        ys,
        es,
        lidx[order],
        layer_values,
        start,
        nx,
        ny,
        x0,
        y0,
        side,
        float(dc),
        float(rhoc),
        float(deltac),
        float(delta_o),
        int(layer_window),
    )

    def back(a: np.ndarray) -> np.ndarray:
        out = np.empty_like(a)
        out[order] = a
        return out

    nh_orig = np.where(nh >= 0, order[np.maximum(nh, 0)], -1)
    return Clue2DResult(
        labels=back(labels),
        rho=back(rho),
        delta=back(delta),
        nearest_higher=back(nh_orig),
        is_seed=back(seed),
        is_outlier=back(outlier),
        n_clusters=int(k),
    )


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------
def clue2d(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    layer: npt.ArrayLike,
    energy: npt.ArrayLike,
    dc: float,
    rhoc: float,
    outlier_delta_factor: float = 2.0,
    deltac: float | None = None,
) -> Clue2DResult:
    """CLUE of Rovere et al. (2020) on each layer separately.

    Args:
        x, y: hit positions in the layer plane, shape ``(n,)`` [cm].
        layer: layer number of each hit, shape ``(n,)`` (integers; any values).
        energy: hit energies, shape ``(n,)``, >= 0 [GeV]; the weights of the density.
        dc: cut-off distance of the density [cm].
        rhoc: density threshold of seeds and outliers [GeV].
        outlier_delta_factor: outliers need :math:`\\delta >` ``outlier_delta_factor * dc``.
        deltac: seeds need :math:`\\delta >` ``deltac`` [cm]; ``None`` means ``dc``.

    Returns:
        A :class:`Clue2DResult` in the input order. Cluster ids are unique over the event
        (not per layer) and numbered by layer, then position of the seed.

    Raises:
        InputError: a non-finite coordinate or energy (naming the field and the index), a
            negative energy, a non-integer layer, arrays of different lengths, or a bad
            parameter.
    """
    _check_positive("dc", dc)
    _check_positive("rhoc", rhoc, allow_zero=True)
    _check_positive("outlier_delta_factor", outlier_delta_factor)
    if deltac is not None:
        _check_positive("deltac", deltac)
    xa = _float_array("x", x, None)
    n = len(xa)
    ya = _float_array("y", y, n)
    la = _int_array("layer", layer, n)
    ea = _float_array("energy", energy, n)
    _check_energy(ea)
    dcf = float(dc)
    return _run_clue(
        xa,
        ya,
        la,
        ea,
        dcf,
        float(rhoc),
        dcf if deltac is None else float(deltac),
        float(outlier_delta_factor) * dcf,
        0,
    )


def _layer_clusters(
    x: FloatArray,
    y: FloatArray,
    z: FloatArray,
    layer: IntArray,
    energy: FloatArray,
    labels: IntArray,
    n_clusters: int,
) -> LayerClusters:
    """Energy and energy-weighted barycentre of each 2D cluster (``labels`` -1 are skipped)."""
    m = labels >= 0
    lab = labels[m]
    e = energy[m]
    esum = np.bincount(lab, weights=e, minlength=n_clusters)
    count = np.bincount(lab, minlength=n_clusters).astype(np.float64)
    weighted = esum > 0.0
    denom = np.where(weighted, esum, count)

    def mean(v: FloatArray) -> FloatArray:
        num_w = np.bincount(lab, weights=e * v[m], minlength=n_clusters)
        num_u = np.bincount(lab, weights=v[m], minlength=n_clusters)
        return np.where(weighted, num_w, num_u) / np.maximum(denom, 1e-300)

    lc_layer = np.zeros(n_clusters, np.int64)
    lc_layer[lab] = layer[m]
    lc_side = np.zeros(n_clusters, np.bool_)
    lc_side[lab] = z[m] < 0.0
    return LayerClusters(
        energy=esum,
        x=mean(x),
        y=mean(y),
        z=mean(z),
        layer=lc_layer,
        side=lc_side,
    )


def clue3d(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    z: npt.ArrayLike,
    layer: npt.ArrayLike,
    energy: npt.ArrayLike,
    params: ClueParams | None = None,
) -> Clue3DResult:
    """2D CLUE per layer, then CLUE on the layer clusters across layers (see the module doc).

    Args:
        x, y, z: hit positions, shape ``(n,)`` [cm]; ``z`` must not be 0 (the linking uses
            ``x/|z|, y/|z|``; the sign of ``z`` tells the endcap).
        layer: layer number of each hit, shape ``(n,)`` (integers, counted per endcap).
        energy: hit energies, shape ``(n,)``, >= 0 [GeV].
        params: :class:`ClueParams` (defaults if ``None``).

    Returns:
        A :class:`Clue3DResult`: per-hit 3D labels, each 3D cluster's energy and barycentre.

    Raises:
        InputError: as :func:`clue2d`, and for ``z`` equal to 0 (naming the index).
    """
    params = ClueParams() if params is None else params
    if not isinstance(params, ClueParams):
        raise InputError("must be a ClueParams", field="params", value=type(params).__name__)
    xa = _float_array("x", x, None)
    n = len(xa)
    ya = _float_array("y", y, n)
    za = _float_array("z", z, n)
    la = _int_array("layer", layer, n)
    ea = _float_array("energy", energy, n)
    _check_energy(ea)
    zero = za == 0.0
    if zero.any():
        i = int(np.argmax(zero))
        raise InputError(f"z = 0 at index {i}; hits must lie in an endcap", field="z", value=0.0)
    if n == 0:
        empty = _empty_result()
        lcs = _layer_clusters(xa, ya, za, la, ea, empty.labels, 0)
        return Clue3DResult(
            labels=np.empty(0, np.int64),
            energy=np.empty(0, np.float64),
            barycentre=np.empty((0, 3), np.float64),
            hits=empty,
            layer_clusters=lcs,
            links=empty,
        )

    # the two endcaps get disjoint layer keys, further apart than the layer window
    lo = int(la.min())
    gap = int(la.max()) - lo + 1 + params.layer_window + 1
    key = (la - lo) + np.where(za < 0.0, gap, 0)

    dc = float(params.dc)
    hits = _run_clue(
        xa,
        ya,
        key,
        ea,
        dc,
        float(params.rhoc),
        params.delta_c,
        float(params.outlier_delta_factor) * dc,
        0,
    )
    lcs = _layer_clusters(xa, ya, za, la, ea, hits.labels, hits.n_clusters)
    az = np.abs(lcs.z)
    lc_key = (lcs.layer - lo) + np.where(lcs.side, gap, 0)
    dc3 = float(params.dc3d)
    links = _run_clue(
        lcs.x / az,
        lcs.y / az,
        lc_key,
        lcs.energy,
        dc3,
        float(params.rhoc3d),
        params.delta_c3d,
        float(params.outlier_delta_factor3d) * dc3,
        int(params.layer_window),
    )
    k = links.n_clusters
    labels = np.full(n, -1, np.int64)
    in2d = hits.labels >= 0
    labels[in2d] = links.labels[hits.labels[in2d]]
    m = labels >= 0
    lab = labels[m]
    e = ea[m]
    esum = np.bincount(lab, weights=e, minlength=k)
    count = np.bincount(lab, minlength=k).astype(np.float64)
    weighted = esum > 0.0
    bary = np.empty((k, 3), np.float64)
    for axis, v in enumerate((xa, ya, za)):
        num_w = np.bincount(lab, weights=e * v[m], minlength=k)
        num_u = np.bincount(lab, weights=v[m], minlength=k)
        bary[:, axis] = np.where(weighted, num_w / np.where(weighted, esum, 1.0), num_u / count)
    return Clue3DResult(
        labels=labels,
        energy=esum,
        barycentre=bary,
        hits=hits,
        layer_clusters=lcs,
        links=links,
    )


def cluster_event(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    z: npt.ArrayLike,
    layer: npt.ArrayLike,
    energy: npt.ArrayLike,
    params: ClueParams | None = None,
) -> IntArray:
    """3D cluster index of each hit, shape ``(n,)`` (-1: in no cluster); see :func:`clue3d`."""
    return clue3d(x, y, z, layer, energy, params).labels
