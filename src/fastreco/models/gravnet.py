"""Graph networks on calorimeter point clouds: GravNet and dynamic EdgeConv (DGCNN), each with the
object-condensation heads of :mod:`fastreco.models.condensation`."""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import nn

from fastreco.data.pointcloud import knn_indices
from fastreco.errors import InputError
from fastreco.models.registry import MODELS


@numba.njit(cache=True, nogil=True)
def _aggregate(
    s: np.ndarray, f: np.ndarray, idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Mean and max over the neighbours of f_j exp(-10 |s_j - s_i|^2), fused (no (N, k, P)
    intermediate tensors)."""
    n, k = idx.shape
    p = f.shape[1]
    mean = np.zeros((n, p), np.float32)
    top = np.empty((n, p), np.float32)
    for i in range(n):
        for c in range(p):
            top[i, c] = -np.inf
        for q in range(k):
            j = idx[i, q]
            d2 = np.float32(0.0)
            for a in range(s.shape[1]):
                diff = s[j, a] - s[i, a]
                d2 += diff * diff
            w = np.exp(np.float32(-10.0) * d2)
            for c in range(p):
                v = f[j, c] * w
                mean[i, c] += v
                if v > top[i, c]:
                    top[i, c] = v
        for c in range(p):
            mean[i, c] /= k
    return mean, top


def _fused_inference(x: torch.Tensor) -> bool:
    """Whether the compiled aggregation may replace the tensor one: CPU inference only (no
    gradients, not while exporting)."""
    return (
        not torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not (torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export())
    )


class GravNetConv(nn.Module):
    r"""The GravNet layer of "Learning representations of irregular particle-detector geometry
    with distance-weighted graph networks" <https://arxiv.org/abs/1902.07987> (Qasim et al.).

    Each point is projected to a learned space :math:`s_i` and learned features :math:`f_i`;
    its :math:`k` nearest neighbours in :math:`s` send :math:`f_j\,e^{-10\,d_{ij}^2}`, aggregated
    by mean and max, concatenated with the input and mixed by a linear layer:

    .. math:: x'_i = W\,[x_i,\ \mathrm{mean}_j f_j e^{-10 d_{ij}^2},\
              \max_j f_j e^{-10 d_{ij}^2}]

    The neighbour search (:func:`~fastreco.data.pointcloud.knn_indices`) is not differentiable;
    gradients reach :math:`s` through the distance weights, as in the paper. Given
    ``neighbours``, the layer skips the search and weighs those candidates by their distance in
    :math:`s` (a fixed graph, as for layer clusters). For CPU inference the gather, weights and
    aggregation run as one compiled loop (the same arithmetic, tested against the tensor path),
    which avoids the ``(N, k, P)`` intermediates that dominate the layer's time on CPUs.

    Shapes:
        - **input:** ``x`` :math:`(N, F_{in})`, ``batch`` :math:`(N,)` sorted event index,
          optional ``neighbours`` :math:`(N, k)`
        - **output:** :math:`(N, F_{out})`
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        space_dims: int = 4,
        prop_dims: int = 22,
        k: int = 16,
    ) -> None:
        super().__init__()
        self.k = k
        self.space = nn.Linear(in_channels, space_dims)
        self.prop = nn.Linear(in_channels, prop_dims)
        self.out = nn.Linear(in_channels + 2 * prop_dims, out_channels)

    def forward(
        self, x: torch.Tensor, batch: torch.Tensor, neighbours: torch.Tensor | None = None
    ) -> torch.Tensor:
        s = self.space(x)  # (N, S)
        f = self.prop(x)  # (N, P)
        idx = knn_indices(s, batch, self.k).to(x.device) if neighbours is None else neighbours
        if _fused_inference(x) and len(x):
            mean, top = _aggregate(
                s.contiguous().numpy(), f.contiguous().numpy(), idx.contiguous().numpy()
            )
            return self.out(torch.cat([x, torch.from_numpy(mean), torch.from_numpy(top)], dim=1))
        d2 = (s[idx] - s[:, None, :]).pow(2).sum(-1)  # (N, k)
        msg = f[idx] * torch.exp(-10.0 * d2)[..., None]  # (N, k, P)
        return self.out(torch.cat([x, msg.mean(1), msg.amax(1)], dim=1))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.space.in_features}, {self.out.out_features}, "
            f"space_dims={self.space.out_features}, k={self.k})"
        )


class EdgeConvLayer(nn.Module):
    r"""Dynamic edge convolution of "Dynamic Graph CNN for Learning on Point Clouds"
    <https://arxiv.org/abs/1801.07829> (Wang et al.):
    :math:`x'_i = \max_{j \in \mathrm{kNN}(i)} h_\Theta(x_i, x_j - x_i)`, the kNN graph rebuilt
    in the layer's input space.

    A kNN graph has exactly ``k`` messages per hit, so the messages are gathered as an
    ``(N, k, 2F)`` tensor and reduced over the neighbour axis: the same arithmetic as
    torch-geometric's ``EdgeConv`` with ``aggr="max"`` on that graph (tested against it), without
    a scatter over an edge list, so the layer exports to ONNX with a dynamic number of hits
    (torch-geometric's message passing freezes the example's edge count when traced).

    Shapes:
        - **input:** ``x`` :math:`(N, F_{in})`, ``batch`` :math:`(N,)`
        - **output:** :math:`(N, F_{out})`
    """

    def __init__(self, in_channels: int, out_channels: int, k: int = 16) -> None:
        super().__init__()
        self.k = k
        self.mlp = nn.Sequential(
            nn.Linear(2 * in_channels, out_channels),
            nn.ELU(),
            nn.Linear(out_channels, out_channels),
        )

    def forward(
        self, x: torch.Tensor, batch: torch.Tensor, neighbours: torch.Tensor | None = None
    ) -> torch.Tensor:
        idx = knn_indices(x, batch, self.k).to(x.device) if neighbours is None else neighbours
        x_i = x[:, None, :].expand(-1, idx.shape[1], -1)  # (N, k, F)
        return self.mlp(torch.cat([x_i, x[idx] - x_i], dim=-1)).amax(dim=1)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.mlp[0].in_features // 2}, "
            f"{self.mlp[-1].out_features}, k={self.k})"
        )


class _CondensationNet(nn.Module):
    """Shared body: input embedding, ``blocks`` graph layers with dense layers between them,
    every block's output concatenated (as GravNet's paper does) and the condensation heads."""

    def __init__(
        self,
        in_shape: tuple[int, ...],
        n_outputs: int,
        layer: type[nn.Module],
        hidden: int,
        blocks: int,
        cluster_dims: int,
        **layer_kwargs: int,
    ) -> None:
        super().__init__()
        self.n_classes = n_outputs
        self.cluster_dims = cluster_dims
        self.embed = nn.Sequential(nn.Linear(in_shape[0], hidden), nn.ELU())
        self.graph = nn.ModuleList([layer(hidden, hidden, **layer_kwargs) for _ in range(blocks)])
        self.dense = nn.ModuleList(
            [
                nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ELU(), nn.LayerNorm(hidden))
                for _ in range(blocks)
            ]
        )
        width = hidden * blocks
        self.head = nn.Sequential(nn.Linear(width, hidden), nn.ELU())
        self.beta = nn.Linear(hidden, 1)
        self.coords = nn.Linear(hidden, cluster_dims)
        self.energy = nn.Linear(hidden, 1)
        self.classes = nn.Linear(hidden, n_outputs)

    def neighbours(self, x: torch.Tensor, batch: torch.Tensor) -> torch.Tensor | None:
        """A graph fixed by the inputs, shared by every block; ``None``: each block searches
        its own (dynamic graphs, as GravNet and DGCNN do)."""
        return None

    def forward(self, x: torch.Tensor, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-hit outputs: ``beta`` (N,) in (0, 1), ``coords`` (N, D) cluster space,
        ``energy`` (N,) log of the object's energy in GeV, ``logits`` (N, n_classes)."""
        nb = self.neighbours(x, batch)
        h = self.embed(x)
        outs = []
        for graph, dense in zip(self.graph, self.dense, strict=True):
            h = dense(torch.cat([h, graph(h, batch, nb)], dim=1))
            outs.append(h)
        h = self.head(torch.cat(outs, dim=1))
        return {
            "beta": torch.sigmoid(self.beta(h)).squeeze(-1).clamp(1e-6, 1 - 1e-4),
            "coords": self.coords(h),
            "energy": self.energy(h).squeeze(-1),
            "logits": self.classes(h),
        }


@MODELS.register("gravnet")
class GravNetModel(_CondensationNet):
    """GravNet blocks (Qasim et al., arXiv:1902.07987) with object-condensation heads
    (Kieseler, arXiv:2002.03605).

    Shapes:
        - **input:** ``x`` :math:`(N, F)` hit features, ``batch`` :math:`(N,)` event index
        - **output:** dict of per-hit ``beta`` (N,), ``coords`` (N, D), ``energy`` (N,),
          ``logits`` (N, n_outputs)
    """

    def __init__(
        self,
        in_shape: tuple[int, ...],
        n_outputs: int,
        hidden: int = 48,
        blocks: int = 3,
        k: int = 16,
        space_dims: int = 4,
        cluster_dims: int = 3,
        prop_dims: int = 22,
    ) -> None:
        super().__init__(
            in_shape,
            n_outputs,
            GravNetConv,
            hidden,
            blocks,
            cluster_dims,
            k=k,
            space_dims=space_dims,
            prop_dims=prop_dims,
        )


@MODELS.register("edgeconv")
class EdgeConvModel(_CondensationNet):
    """Dynamic EdgeConv blocks (DGCNN, Wang et al., arXiv:1801.07829) with object-condensation
    heads; same inputs and outputs as :class:`GravNetModel`."""

    def __init__(
        self,
        in_shape: tuple[int, ...],
        n_outputs: int,
        hidden: int = 48,
        blocks: int = 3,
        k: int = 16,
        cluster_dims: int = 3,
    ) -> None:
        super().__init__(in_shape, n_outputs, EdgeConvLayer, hidden, blocks, cluster_dims, k=k)


class _LayerClusterGraph:
    """The graph of the layer-cluster models: fixed by the inputs
    (:func:`~fastreco.data.layer_clusters.layer_cluster_graph`: the ``k`` nearest layer
    clusters within ``window`` layers and ``radius`` on the front face, in the features' 10 cm
    unit), searched once per forward by a compiled kernel and shared by every block."""

    k: int
    graph_settings: dict[str, float]

    @staticmethod
    def _check_input(name: str, in_shape: tuple[int, ...]) -> None:
        from fastreco.data.layer_clusters import N_LC_FEATURES

        if tuple(in_shape) != (N_LC_FEATURES,):
            raise InputError(
                f"{name} takes the {N_LC_FEATURES} layer-cluster features "
                "(data.input: layer_clusters)",
                field="model.name",
                value=list(in_shape),
            )

    def _set_graph(self, k: int, window: int, radius: float, layer_scale: float) -> None:
        self.k = k
        self.graph_settings = {"window": window, "radius": radius, "layer_scale": layer_scale}

    def neighbours(self, x: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        from fastreco.data.layer_clusters import layer_cluster_graph

        return layer_cluster_graph(x, batch, self.k, **self.graph_settings)


@MODELS.register("layer_gravnet")
class LayerClusterGravNetModel(_LayerClusterGraph, GravNetModel):
    """GravNet blocks with object-condensation heads on 2D layer clusters
    (:mod:`fastreco.data.layer_clusters`), TICL's input instead of single hits.

    Each block weighs the fixed candidates of :class:`_LayerClusterGraph` by their distance in
    its own learned space, as GravNet does; one compiled neighbour search per event replaces a
    k-d tree search per block, which dominates GravNet's time on CPUs.

    Shapes:
        - **input:** ``x`` :math:`(N, 9)` layer-cluster features, ``batch`` :math:`(N,)`
        - **output:** as :class:`GravNetModel`, per layer cluster
    """

    def __init__(
        self,
        in_shape: tuple[int, ...],
        n_outputs: int,
        hidden: int = 32,
        blocks: int = 3,
        k: int = 8,
        space_dims: int = 4,
        prop_dims: int = 16,
        cluster_dims: int = 3,
        window: int = 2,
        radius: float = 0.5,
        layer_scale: float = 0.1,
    ) -> None:
        self._check_input("layer_gravnet", in_shape)
        super().__init__(
            in_shape, n_outputs, hidden, blocks, k, space_dims, cluster_dims, prop_dims
        )
        self._set_graph(k, window, radius, layer_scale)


@MODELS.register("layer_edgeconv")
class LayerClusterEdgeConvModel(_LayerClusterGraph, EdgeConvModel):
    """EdgeConv blocks (DGCNN's edge function, Wang et al.) on the fixed layer-cluster graph of
    :class:`_LayerClusterGraph` (a static EdgeConv: the graph is not rebuilt in feature space),
    with object-condensation heads; inputs and outputs as :class:`LayerClusterGravNetModel`."""

    def __init__(
        self,
        in_shape: tuple[int, ...],
        n_outputs: int,
        hidden: int = 32,
        blocks: int = 3,
        k: int = 8,
        cluster_dims: int = 3,
        window: int = 2,
        radius: float = 0.5,
        layer_scale: float = 0.1,
    ) -> None:
        self._check_input("layer_edgeconv", in_shape)
        super().__init__(in_shape, n_outputs, hidden, blocks, k, cluster_dims)
        self._set_graph(k, window, radius, layer_scale)
