"""Convolutional networks on crystal images."""

from __future__ import annotations

import torch
from torch import nn

from fastreco.models.registry import MODELS


@MODELS.register("tmva-cnn")
class TmvaCNN(nn.Module):
    r"""The CNN layout of seed 000 (TMVA ``TMVA_CNN_CPU``):
    ``CONV|10|3|3|1|1|1|1|RELU, BNORM, CONV|10|3|3|1|1|1|1|RELU, MAXPOOL|2|2|1|1, RESHAPE|FLAT,
    DENSE|100|RELU, DENSE|n_out|LINEAR``.

    Shapes:
        - **input:** crystal images :math:`(B, C, H, W)`
        - **output:** :math:`(B, n_{out})` logits (or the regressed value)
    """

    def __init__(
        self, in_shape: tuple[int, ...], n_outputs: int, filters: int = 10, dense: int = 100
    ) -> None:
        super().__init__()
        channels, height, width = in_shape
        self.features = nn.Sequential(
            nn.Conv2d(channels, filters, 3, padding=1),
            nn.ReLU(),
            nn.BatchNorm2d(filters),
            nn.Conv2d(filters, filters, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2, stride=1),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(filters * (height - 1) * (width - 1), dense),
            nn.ReLU(),
            nn.Linear(dense, n_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


@MODELS.register("resnet-cnn")
class ResNetCNN(nn.Module):
    r"""A stronger residual CNN (He et al., arXiv:1512.03385): a 3x3 stem, ``stages`` stages of
    ``blocks`` residual blocks with max-pooling between them, global average pooling and a
    two-layer head.

    Shapes:
        - **input:** :math:`(B, C, H, W)`
        - **output:** :math:`(B, n_{out})`
    """

    def __init__(
        self,
        in_shape: tuple[int, ...],
        n_outputs: int,
        width: int = 32,
        stages: int = 2,
        blocks: int = 2,
    ) -> None:
        super().__init__()
        channels = in_shape[0]
        layers: list[nn.Module] = [
            nn.Conv2d(channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        ]
        for stage in range(stages):
            layers += [_ResidualBlock(width) for _ in range(blocks)]
            if stage < stages - 1:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, 64),
            nn.ReLU(),
            nn.Linear(64, n_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
