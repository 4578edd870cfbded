r"""The Dynamic Reduction Network on calorimeter point clouds: one event's hits -> one vector of
properties (energy, barycenter).

The DRN of "Dynamic Reduction Network for Point Clouds" <https://arxiv.org/abs/2003.08013>
(Gray, Klijnsma, Ghosh), used by CMS for HGCAL and ECAL energy regression:

1. an input MLP maps each hit to a latent space;
2. a kNN graph is built in that learned space (so it changes as the network learns) and an
   ``EdgeConv`` (Wang et al., arXiv:1801.07829) aggregates each hit's neighbourhood;
3. the graph is *reduced*: hits are paired by a matching that maximises graclus's normalized-cut
   edge weight :math:`w_{ij} = \lVert x_i - x_j\rVert\,(1/d_i + 1/d_j)` (:math:`d`: degree),
   and each pair is max-pooled into one node;
4. a second kNN graph + ``EdgeConv`` on the reduced nodes, a second reduction;
5. global max pooling per event and an output MLP.

**The reduction here.** The paper clusters with graclus (torch-cluster), which cannot be
installed here. :func:`handshake_matching` computes the same kind of clustering - a matching of
neighbouring nodes on the same weights, so each reduction at most halves the node count - as
the *locally dominant* ("handshake") matching: in each round every unmatched node proposes to
its unmatched neighbour of largest weight and mutual proposals become pairs. This is the
parallel form of greedy max-weight matching (Preis 1999; Manne & Bisseling 2008); graclus is
the sequential greedy form that visits nodes in random order. Unlike graclus it is
deterministic and independent of the order of the hits, vectorised in torch and runs on CUDA.

Graphs are built with :func:`fastreco.data.pointcloud.knn_indices` (scipy / chunked ``cdist``).
Unlike GravNet and EdgeConv the network does not export to ONNX: the matching's rounds stop on
a data-dependent condition and each reduction leaves a data-dependent number of nodes.

**Memory.** EdgeConv's messages are per-edge tensors (about ``1.4 k N`` edges after
symmetrisation, each carrying ``[x_i, x_j - x_i]`` and the MLP's hidden layers). Materialised at
once (torch-geometric's ``EdgeConv``) they make the peak memory grow as ``k * hidden * N``:
~20 MB per 600-hit event at the default size. :class:`ChunkedEdgeConv` computes the same sums
over chunks of :data:`EDGE_CHUNK` edges, so in inference the peak is the nodes' features plus
one chunk, independent of ``k`` - the point cloud's "no empty voxels" advantage made real.
(In training autograd keeps every chunk's activations anyway.)

Shapes:
    - **input:** ``x`` :math:`(N, F)` hit features (e.g.
      :data:`fastreco.data.pointcloud.FEATURES`), ``batch`` :math:`(N,)` sorted event index
    - **output:** :math:`(B, n_{out})`, :math:`B` = ``batch.max() + 1`` (or ``n_events``)
"""

from __future__ import annotations

import torch
from torch import nn

from fastreco.data.pointcloud import knn_indices
from fastreco.errors import InputError
from fastreco.models.registry import MODELS

#: Edges whose messages are computed at once by :class:`ChunkedEdgeConv` (bounds the peak
#: memory of inference to ``EDGE_CHUNK * 4.5 * hidden`` floats beyond the node features).
EDGE_CHUNK = 8192

#: Rounds of the handshake matching; each pairs at least the heaviest free edge. On kNN graphs
#: (k = 16) of 1000-hit events the matching is maximal (about half the nodes left) after ~16-20.
MATCHING_ROUNDS = 32


def knn_graph(x: torch.Tensor, batch: torch.Tensor, k: int) -> torch.Tensor:
    """Undirected kNN graph within each event, without self-loops, coalesced
    (``to_undirected(knn_graph(x, k, batch, loop=False))`` of the paper).

    Returns:
        ``(2, E)`` int64 edge index (source, target), every edge in both directions once.
    """
    n = x.shape[0]
    idx = knn_indices(x, batch, k).to(x.device)  # (N, k)
    src = idx.reshape(-1)
    dst = torch.arange(n, device=x.device).repeat_interleave(k)
    keep = src != dst  # knn_indices pads small events with self-loops
    src, dst = src[keep], dst[keep]
    key = torch.unique(torch.cat([src * n + dst, dst * n + src]))  # sorted, duplicates merged
    return torch.stack([key // n, key % n])


def normalized_cut_weight(
    edge_index: torch.Tensor, x: torch.Tensor, chunk: int = EDGE_CHUNK
) -> torch.Tensor:
    r"""Graclus's edge weight :math:`\lVert x_i - x_j\rVert\,(1/d_i + 1/d_j)` (``(E,)``),
    the distances computed over chunks of ``chunk`` edges (no ``(E, F)`` tensor at once)."""
    row, col = edge_index
    deg = torch.bincount(row, minlength=x.shape[0]).to(x.dtype).clamp(min=1)
    dist = torch.cat(
        [
            (x[row[a : a + chunk]] - x[col[a : a + chunk]]).norm(dim=1)
            for a in range(0, row.numel(), chunk)
        ]
        or [x.new_zeros(0)]
    )
    return dist * (1.0 / deg[row] + 1.0 / deg[col])


def handshake_matching(
    edge_index: torch.Tensor, weight: torch.Tensor, n: int, rounds: int = MATCHING_ROUNDS
) -> torch.Tensor:
    """Cluster nodes into matched pairs (and singletons) by the locally dominant matching.

    Args:
        edge_index: ``(2, E)`` symmetric edge index.
        weight: ``(E,)`` symmetric edge weights (``w[i->j] == w[j->i]``).
        n: number of nodes.
        rounds: at most this many proposal rounds.

    Returns:
        ``(n,)`` int64 cluster index, consecutive from 0 and increasing with the lowest node
        index of the cluster (so a batch vector sorted by event stays sorted).
    """
    r, c = edge_index
    w = weight.detach()
    node = torch.arange(n, device=r.device)
    partner = torch.full((n,), -1, dtype=torch.long, device=r.device)
    for _ in range(rounds):
        if r.numel() == 0:
            break
        best = torch.full((n,), -torch.inf, dtype=w.dtype, device=w.device)
        best = best.scatter_reduce(0, r, w, reduce="amax")
        top = w == best[r]
        # ties (equal weights) go to the lower neighbour index
        choice = torch.full((n,), n, dtype=torch.long, device=r.device)
        choice = choice.scatter_reduce(0, r[top], c[top], reduce="amin")
        proposes = choice < n
        mutual = proposes & (choice.clamp(max=n - 1)[choice.clamp(max=n - 1)] == node)
        partner[mutual] = choice[mutual]
        free = (partner[r] < 0) & (partner[c] < 0)  # edges between still unmatched nodes
        r, c, w = r[free], c[free], w[free]
    cluster = torch.where(partner >= 0, torch.minimum(node, partner), node)
    return torch.unique(cluster, return_inverse=True)[1]


def max_pool_clusters(
    x: torch.Tensor, batch: torch.Tensor, cluster: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Max-pool node features per cluster; returns ``(x_c (C, F), batch_c (C,))``."""
    n_clusters = int(cluster.max()) + 1 if cluster.numel() else 0
    idx = cluster[:, None].expand_as(x)
    pooled = x.new_full((n_clusters, x.shape[1]), -torch.inf)
    pooled = pooled.scatter_reduce(0, idx, x, reduce="amax", include_self=False)
    batch_c = batch.new_zeros(n_clusters).scatter_reduce(
        0, cluster, batch, reduce="amax", include_self=False
    )
    return pooled, batch_c


class ChunkedEdgeConv(nn.Module):
    r"""EdgeConv, :math:`x'_i = \square_{j \to i}\, h_\Theta(x_i, x_j - x_i)` with
    :math:`\square` = sum, mean or max over the edges into :math:`i` (torch-geometric's
    ``EdgeConv`` arithmetic, tested equal to it), evaluated over chunks of ``chunk`` edges so
    the per-edge tensors never exist all at once.

    The MLP is held as ``nn`` (torch-geometric's attribute name), so checkpoints of either
    implementation load into the other. A node without incoming edges gets zeros.

    Shapes:
        - **input:** ``x`` :math:`(N, F)`, ``edge_index`` :math:`(2, E)` (source, target)
        - **output:** :math:`(N, F_{out})`
    """

    def __init__(self, mlp: nn.Module, aggr: str = "add", chunk: int = EDGE_CHUNK) -> None:
        super().__init__()
        if aggr not in ("add", "mean", "max"):
            raise InputError(
                "aggr must be 'add', 'mean' or 'max'", field="model.params.aggr", value=aggr
            )
        self.nn = mlp
        self.aggr = aggr
        self.chunk = chunk

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        src, dst = edge_index
        out: torch.Tensor | None = None
        for a in range(0, src.numel(), self.chunk):
            s, d = src[a : a + self.chunk], dst[a : a + self.chunk]
            x_i = x[d]
            msg = self.nn(torch.cat([x_i, x[s] - x_i], dim=1))
            if out is None:
                fill = -torch.inf if self.aggr == "max" else 0.0
                out = msg.new_full((x.shape[0], msg.shape[1]), fill)
            if self.aggr == "max":
                out = out.scatter_reduce(
                    0, d[:, None].expand_as(msg), msg, reduce="amax", include_self=True
                )
            else:
                out = out.index_add(0, d, msg)
        if out is None:  # no edges at all
            with torch.no_grad():
                width = self.nn(x.new_zeros((1, 2 * x.shape[1]))).shape[1]
            return x.new_zeros((x.shape[0], width))
        if self.aggr == "max":
            return torch.where(torch.isfinite(out), out, torch.zeros_like(out))
        if self.aggr == "mean":
            degree = torch.bincount(dst, minlength=x.shape[0]).clamp(min=1).to(out.dtype)
            return out / degree[:, None]
        return out


def _edge_mlp(hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(2 * hidden, 3 * hidden // 2),
        nn.ELU(),
        nn.Linear(3 * hidden // 2, hidden),
        nn.ELU(),
    )


@MODELS.register("hgcal-drn")
class DynamicReductionNetwork(nn.Module):
    """The DRN (Gray et al., arXiv:2003.08013); see the module docstring for the layers and for
    the reduction that replaces graclus.

    Args:
        in_shape: ``(F,)`` features per hit.
        n_outputs: values regressed per event.
        hidden: latent width (the paper: 64).
        k: neighbours of the kNN graphs (the paper: 16).
        aggr: EdgeConv aggregation, ``"add"`` (the paper), ``"mean"`` or ``"max"``.

    Shapes:
        - **input:** ``x`` :math:`(N, F)`, ``batch`` :math:`(N,)` sorted event index
        - **output:** :math:`(B, n_{out})`
    """

    def __init__(
        self,
        in_shape: tuple[int, ...],
        n_outputs: int,
        hidden: int = 64,
        k: int = 16,
        aggr: str = "add",
    ) -> None:
        super().__init__()
        if aggr not in ("add", "mean", "max"):
            raise InputError(
                "aggr must be 'add', 'mean' or 'max'", field="model.params.aggr", value=aggr
            )
        self.k = k
        self.inputnet = nn.Sequential(
            nn.Linear(in_shape[0], hidden // 2),
            nn.ELU(),
            nn.Linear(hidden // 2, hidden),
            nn.ELU(),
        )
        self.edgeconv1 = ChunkedEdgeConv(_edge_mlp(hidden), aggr=aggr)
        self.edgeconv2 = ChunkedEdgeConv(_edge_mlp(hidden), aggr=aggr)
        self.output = nn.Sequential(
            nn.Linear(hidden, hidden),
            nn.ELU(),
            nn.Linear(hidden, hidden // 2),
            nn.ELU(),
            nn.Linear(hidden // 2, n_outputs),
        )

    def _reduce(
        self, h: torch.Tensor, batch: torch.Tensor, edges: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cluster = handshake_matching(edges, normalized_cut_weight(edges, h), len(h))
        return max_pool_clusters(h, batch, cluster)

    def forward(
        self, x: torch.Tensor, batch: torch.Tensor, n_events: int | None = None
    ) -> torch.Tensor:
        """Regress ``n_outputs`` values per event; ``n_events`` defaults to ``batch.max() + 1``
        (events without hits then get the output of an all-zero pooled vector)."""
        from torch_geometric.nn import global_max_pool

        n_events = n_events if n_events is not None else int(batch.max()) + 1 if len(batch) else 0
        h = self.inputnet(x)  # (N, hidden)
        edges = knn_graph(h, batch, self.k)
        h = self.edgeconv1(h, edges)
        h, batch = self._reduce(h, batch, edges)  # (~N/2, hidden)
        edges = knn_graph(h, batch, self.k)
        h = self.edgeconv2(h, edges)
        h, batch = self._reduce(h, batch, edges)  # (~N/4, hidden)
        pooled = global_max_pool(h, batch, size=n_events)  # (B, hidden)
        return self.output(pooled)
