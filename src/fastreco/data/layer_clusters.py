"""HGCAL events as 2D layer clusters: the input of TICL-style graph networks.

CMS's HGCAL reconstruction (TICL) does not hand single hits to its pattern recognition: CLUE
first groups the hits of each layer into 2D *layer clusters*, and the 3D step links those. A
graph network can take the same input: CLUE's 2D stage (the first half of :mod:`fastreco.reco.clue`,
with the same parameters) turns an event's hits into 2-3x fewer points, each a near-pure piece
of one shower, and the network only has to link them across layers. Its clusters of layer
clusters are mapped back to hits, so it is evaluated on hits exactly like CLUE and the hit-level
networks.

A layer cluster becomes a point with features

============  ==============================================================================
column        value
============  ==============================================================================
``x_front``   barycentre projected onto the front face along the line from the origin / 10 cm
``y_front``   the same for ``y``
``depth``     (z - front face) / 10 cm
``log_e``     ln(1 + cluster energy / 10 MeV)
``time``      energy-weighted mean of its hits' time feature (ns, clipped to [-1, 1])
``layer``     layer index / 10
``eta``       barycentre pseudorapidity - 2.25
``log_hits``  ln(number of hits)
``width``     energy-weighted RMS distance of its hits from the barycentre [cm]
============  ==============================================================================

and truth: ``object_id`` is the gun particle holding at least ``min_fraction`` of the cluster's
energy (else 0, noise), ``truth_fraction`` that share.

The neighbour graph (:func:`layer_cluster_graph`) is fixed by the inputs, as the 3D step of CLUE
is: the ``k`` nearest layer clusters within ``window`` layers and ``radius`` on the front face,
found through tiles by a compiled kernel (a k-d tree over the whole endcap costs more than the
rest of the network).

Shapes:
    - **features:** ``(n_clusters, 9)`` float32; **hit_point:** ``(n_hits,)`` int64.
    - **neighbours:** ``(n_clusters, k)`` int64, padded with the point's own index.
"""

from __future__ import annotations

import dataclasses
import math

import numba
import numpy as np
import torch

from fastreco.data.pointcloud import NOISE, PointCloudEvent
from fastreco.errors import InputError
from fastreco.reco.clue import ClueParams, clue2d

LC_FEATURES = (
    "x_front",
    "y_front",
    "depth",
    "log_e",
    "time",
    "layer",
    "eta",
    "log_hits",
    "width",
)
N_LC_FEATURES = len(LC_FEATURES)
_LENGTH_UNIT = 10.0  # cm, as the hit features' positions
_ENERGY_UNIT = 0.01  # GeV, as the hit features' log_e
_LAYER_UNIT = 10.0  # layers
_ETA_CENTRE = 2.25
#: Most tiles a neighbour search may lay out before its tile side grows.
_MAX_TILES = 1 << 22


@dataclasses.dataclass
class NetworkPoints:
    """The points a clustering network sees of an event, and the way back to its hits.

    Attributes:
        points: the points as a :class:`PointCloudEvent` (hits themselves, or one point per
            layer cluster: features :data:`LC_FEATURES`, energy sum, barycentre).
        hit_point: ``(n_hits,)`` point of each hit, -1 for a hit in none (CLUE's outliers).
    """

    points: PointCloudEvent
    hit_point: np.ndarray

    def hit_labels(self, point_labels: np.ndarray) -> np.ndarray:
        """Per-hit labels ``(n_hits,)`` from per-point labels ``(n_points,)`` (-1 stays -1:
        hits in no point and points in no cluster)."""
        point_labels = np.asarray(point_labels, np.int64)
        if len(point_labels) != len(self.points):
            raise InputError(
                f"expected one label per point ({len(self.points)})",
                field="point_labels",
                value=len(point_labels),
            )
        inside = self.hit_point >= 0
        out = np.full(len(self.hit_point), -1, np.int64)
        out[inside] = point_labels[self.hit_point[inside]]
        return out


def layer_cluster_event(
    event: PointCloudEvent,
    params: ClueParams | None = None,
    *,
    min_fraction: float = 0.5,
) -> NetworkPoints:
    """CLUE's 2D stage on one event's hits, and its layer clusters as graph-network points.

    Args:
        event: hits of one endcap (:func:`fastreco.data.pointcloud.point_cloud_events`).
        params: CLUE parameters; the 2D ones (``dc``, ``rhoc``, ``outlier_delta_factor``,
            ``deltac``) are used, defaults if ``None``.
        min_fraction: a layer cluster belongs to the gun particle holding this share of it.
    """
    params = ClueParams() if params is None else params
    if len(event) == 0:
        return NetworkPoints(_empty_clusters(event), np.zeros(0, np.int64))
    pos = event.position.astype(np.float64)
    e = event.energy.astype(np.float64)
    result = clue2d(
        pos[:, 0],
        pos[:, 1],
        event.layer,
        e,
        params.dc,
        params.rhoc,
        params.outlier_delta_factor,
        params.deltac,
    )
    lab = result.labels
    n = result.n_clusters
    m = lab >= 0
    lab_m = lab[m]
    e_m = e[m]
    sums, layer = _cluster_sums(
        lab,
        e,
        pos,
        event.features[:, 2].astype(np.float64),  # (z - z_front) / 10 cm
        event.features[:, 4].astype(np.float64),  # time
        event.layer,
        n,
    )
    esum = sums[:, 0]
    wsum = sums[:, 1]
    bary = sums[:, 2:5] / wsum[:, None]
    r2 = sums[:, 5] / wsum - (bary[:, 0] ** 2 + bary[:, 1] ** 2)
    depth = sums[:, 6] / wsum
    time = sums[:, 7] / wsum
    n_hits = sums[:, 8]
    z_front = bary[:, 2] - _LENGTH_UNIT * depth
    scale = z_front / np.abs(bary[:, 2]) / _LENGTH_UNIT
    rho = np.hypot(bary[:, 0], bary[:, 1])
    features = np.stack(
        [
            bary[:, 0] * scale,
            bary[:, 1] * scale,
            depth,
            np.log1p(esum / _ENERGY_UNIT),
            time,
            layer / _LAYER_UNIT,
            np.arcsinh(bary[:, 2] / np.maximum(rho, 1e-3)) - _ETA_CENTRE,
            np.log(np.maximum(n_hits, 1)),
            np.sqrt(np.maximum(r2, 0.0)),
        ],
        axis=1,
    ).astype(np.float32)

    # truth: the energy of each gun particle (a handful per event) in each layer cluster
    oid = event.object_id[m]
    guns = np.unique(oid[oid > NOISE])
    share = e_m * event.truth_fraction[m]
    held = np.zeros((n, len(guns) + 1))  # column 0: no gun particle
    for col, gun in enumerate(guns, start=1):
        mine = oid == gun
        held[:, col] = np.bincount(lab_m[mine], weights=share[mine], minlength=n)
    col = np.argmax(held, axis=1)
    best = np.concatenate([[NOISE], guns])[col]
    fraction = held[np.arange(n), col] / np.maximum(esum, 1e-12)
    has = col > 0
    object_id = np.where(has & (fraction >= min_fraction), best, NOISE)
    clusters = PointCloudEvent(
        features=features,
        energy=esum.astype(np.float32),
        position=bary.astype(np.float32),
        layer=layer,
        object_id=object_id.astype(np.int64),
        truth_fraction=np.where(has, fraction, 0.0).astype(np.float32),
        truth_row=np.where(has, best - 1, -1).astype(np.int64),
        object_energy=event.object_energy,
        object_class=event.object_class,
    )
    return NetworkPoints(clusters, lab.astype(np.int64))


@numba.njit(cache=True, nogil=True)
def _cluster_sums(
    labels: np.ndarray,
    energy: np.ndarray,
    position: np.ndarray,
    depth: np.ndarray,
    time: np.ndarray,
    layer: np.ndarray,
    n: int,
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """One pass over the hits: per cluster the energy, the weight (energy + 1e-12: hit
    energies are above threshold, the epsilon only guards a 0 / 0), the weighted x, y, z,
    x^2 + y^2, depth and time, the number of hits; and each cluster's layer."""
    sums = np.zeros((n, 9), np.float64)
    lay = np.zeros(n, np.int64)
    for i in range(len(labels)):
        c = labels[i]
        if c < 0:
            continue
        w = energy[i] + 1e-12
        x = position[i, 0]
        y = position[i, 1]
        sums[c, 0] += energy[i]
        sums[c, 1] += w
        sums[c, 2] += w * x
        sums[c, 3] += w * y
        sums[c, 4] += w * position[i, 2]
        sums[c, 5] += w * (x * x + y * y)
        sums[c, 6] += w * depth[i]
        sums[c, 7] += w * time[i]
        sums[c, 8] += 1.0
        lay[c] = layer[i]
    return sums, lay


def _empty_clusters(event: PointCloudEvent) -> PointCloudEvent:
    return PointCloudEvent(
        features=np.zeros((0, N_LC_FEATURES), np.float32),
        energy=np.zeros(0, np.float32),
        position=np.zeros((0, 3), np.float32),
        layer=np.zeros(0, np.int64),
        object_id=np.zeros(0, np.int64),
        truth_fraction=np.zeros(0, np.float32),
        truth_row=np.zeros(0, np.int64),
        object_energy=event.object_energy,
        object_class=event.object_class,
    )


# --------------------------------------------------------------------------------------------
# the fixed neighbour graph
# --------------------------------------------------------------------------------------------
@numba.njit(cache=True, nogil=True)
def _tiled_knn(
    x: np.ndarray,
    y: np.ndarray,
    key: np.ndarray,
    start: np.ndarray,
    nx: int,
    ny: int,
    x0: float,
    y0: float,
    side: float,
    k: int,
    radius: float,
    window: int,
    key_scale: float,
) -> np.ndarray:
    """k nearest points of each point (sorted by tile) within ``window`` keys and ``radius``
    transversely; distance^2 = dx^2 + dy^2 + (key_scale * dkey)^2; self-padded."""
    n = len(x)
    n_keys = len(start) // (nx * ny)
    out = np.empty((n, k), np.int64)
    best_d = np.empty(k, np.float64)
    r2 = radius * radius
    inv = 1.0 / side
    for i in range(n):
        for q in range(k):
            best_d[q] = np.inf
            out[i, q] = i
        xi = x[i]
        yi = y[i]
        ix_lo = max(math.floor((xi - radius - x0) * inv), 0)
        ix_hi = min(math.floor((xi + radius - x0) * inv), nx - 1)
        iy_lo = max(math.floor((yi - radius - y0) * inv), 0)
        iy_hi = min(math.floor((yi + radius - y0) * inv), ny - 1)
        # the own key first, then +-1, +-2, ...: a key whose penalty alone exceeds the k-th
        # distance found so far is skipped
        for step in range(2 * window + 1):
            off = (step + 1) // 2 * (1 if step % 2 else -1) if step else 0
            c = key[i] + off
            if c < 0 or c >= n_keys:
                continue
            dk = key_scale * off
            if dk * dk >= best_d[k - 1]:
                continue
            for iy in range(iy_lo, iy_hi + 1):
                row = (c * ny + iy) * nx
                for j in range(start[row + ix_lo], start[row + ix_hi + 1]):
                    if j == i:
                        continue
                    dx = x[j] - xi
                    dy = y[j] - yi
                    t2 = dx * dx + dy * dy
                    if t2 >= r2:
                        continue
                    d2 = t2 + dk * dk
                    if d2 >= best_d[k - 1]:
                        continue
                    q = k - 1
                    while q > 0 and best_d[q - 1] > d2:
                        best_d[q] = best_d[q - 1]
                        out[i, q] = out[i, q - 1]
                        q -= 1
                    best_d[q] = d2
                    out[i, q] = j
    return out


def layer_cluster_graph(
    features: torch.Tensor,
    batch: torch.Tensor,
    k: int,
    *,
    window: int = 2,
    radius: float = 0.5,
    layer_scale: float = 0.1,
) -> torch.Tensor:
    """The ``k`` nearest layer clusters of each one in its own event.

    Neighbours lie within ``window`` layers (the same layer included) and within ``radius``
    on the front face (in the features' 10 cm unit); they are ranked by
    :math:`\\Delta x^2 + \\Delta y^2 + (\\text{layer\\_scale}\\,\\Delta\\text{layer})^2`.
    Missing neighbours repeat the point's own index.

    Args:
        features: ``(N, 9)`` layer-cluster features (:data:`LC_FEATURES`).
        batch: ``(N,)`` sorted event index.
        k: neighbours per point.

    Returns:
        ``(N, k)`` int64 indices on ``features``' device.

    While the model is being exported to ONNX, the same neighbours come from tensor operations
    on an (N, N) distance matrix (:func:`layer_cluster_graph_exportable`).
    """
    if torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export():
        return layer_cluster_graph_exportable(
            features, batch, k, window=window, radius=radius, layer_scale=layer_scale
        )
    n = features.shape[0]
    if n == 0:
        return torch.zeros((0, k), dtype=torch.long, device=features.device)
    f = features.detach().cpu().numpy()
    x = f[:, LC_FEATURES.index("x_front")].astype(np.float64)
    y = f[:, LC_FEATURES.index("y_front")].astype(np.float64)
    layer = np.rint(f[:, LC_FEATURES.index("layer")] * _LAYER_UNIT).astype(np.int64)
    ev = batch.detach().cpu().numpy().astype(np.int64)
    layer -= layer.min()
    key = ev * (int(layer.max()) + window + 1) + layer  # events never within the window
    n_keys = int(key.max()) + 1
    x0, y0 = float(x.min()), float(y.min())
    side = float(radius)
    while True:
        nx = int((float(x.max()) - x0) / side) + 1
        ny = int((float(y.max()) - y0) / side) + 1
        if n_keys * nx * ny <= max(_MAX_TILES, 4 * n):
            break
        side *= 2.0
    ix = np.minimum(((x - x0) / side).astype(np.int64), nx - 1)
    iy = np.minimum(((y - y0) / side).astype(np.int64), ny - 1)
    tile = (key * ny + iy) * nx + ix
    order = np.argsort(tile, kind="stable")
    start = np.zeros(n_keys * nx * ny + 1, np.int64)
    np.cumsum(np.bincount(tile, minlength=n_keys * nx * ny), out=start[1:])
    idx = _tiled_knn(
        x[order],
        y[order],
        key[order],
        start,
        nx,
        ny,
        x0,
        y0,
        side,
        int(k),
        float(radius),
        int(window),
        float(layer_scale),
    )
    out = np.empty((n, k), np.int64)
    out[order] = order[idx]
    return torch.from_numpy(out).to(features.device)


def layer_cluster_graph_exportable(
    features: torch.Tensor,
    batch: torch.Tensor,
    k: int,
    *,
    window: int = 2,
    radius: float = 0.5,
    layer_scale: float = 0.1,
) -> torch.Tensor:
    """:func:`layer_cluster_graph` with tensor operations only, for exported graphs: the same
    neighbours (up to exact ties) from an (N, N) distance matrix, which suits events of a few
    thousand layer clusters (a region of interest). Needs more than ``k`` points in the input."""
    f = features.detach()
    xy = f[:, [LC_FEATURES.index("x_front"), LC_FEATURES.index("y_front")]]
    layer = torch.round(f[:, LC_FEATURES.index("layer")] * _LAYER_UNIT)
    t2 = torch.cdist(xy, xy).square()  # (N, N)
    dl = layer[:, None] - layer[None, :]
    n = f.shape[0]
    outside = (
        (batch[:, None] != batch[None, :])
        | (dl.abs() > window)
        | (t2 >= radius * radius)
        | torch.eye(n, dtype=torch.bool, device=f.device)
    )
    d2 = (t2 + (layer_scale * dl).square()).masked_fill(outside, float("inf"))
    dist, idx = d2.topk(k, dim=1, largest=False)  # (N, k)
    own = torch.arange(n, device=f.device)[:, None].expand(-1, k)
    return torch.where(torch.isfinite(dist), idx, own)
