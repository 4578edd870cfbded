"""Fully connected networks on raw cells or on shower-shape features."""

from __future__ import annotations

import math

import torch
from torch import nn

from fastreco.models.registry import MODELS


def _mlp(n_in: int, widths: tuple[int, ...], n_out: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    for i, width in enumerate(widths):
        layers += [nn.Linear(n_in, width), nn.ReLU()]
        if batch_norm and i < len(widths) - 1:
            layers.append(nn.BatchNorm1d(width))
        n_in = width
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


@MODELS.register("tmva-dnn")
class TmvaDNN(nn.Module):
    r"""The DNN layout of seed 000 (TMVA ``TMVA_DNN_CPU``): ``DENSE|100|RELU, BNORM`` three
    times, ``DENSE|100|RELU``, ``DENSE|n_out|LINEAR``, on the flattened raw cells.

    Shapes:
        - **input:** :math:`(B, *)` (e.g. a crystal window, flattened inside)
        - **output:** :math:`(B, n_{out})`
    """

    def __init__(
        self, in_shape: tuple[int, ...], n_outputs: int, width: int = 100, depth: int = 4
    ) -> None:
        super().__init__()
        self.net = _mlp(math.prod(in_shape), (width,) * depth, n_outputs, batch_norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@MODELS.register("mlp")
class FeatureMLP(nn.Module):
    r"""An MLP on a feature vector (the shower-shape variables of the classical reco).

    Shapes:
        - **input:** :math:`(B, F)`
        - **output:** :math:`(B, n_{out})`
    """

    def __init__(
        self, in_shape: tuple[int, ...], n_outputs: int, widths: tuple[int, ...] = (64, 64, 64)
    ) -> None:
        super().__init__()
        self.net = _mlp(math.prod(in_shape), tuple(widths), n_outputs, batch_norm=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
