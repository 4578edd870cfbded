"""3D convolutional network on HGCAL event images (layers x pixels x pixels) for property
regression: seed 003's residual and inception blocks and its optional recurrent pass over layers."""

from __future__ import annotations

import torch
from torch import nn

from fastreco.errors import InputError
from fastreco.models.registry import MODELS

RECURRENT_CELLS = ("gru", "lstm")


def _conv_bn_relu(c_in: int, c_out: int, kernel: int) -> list[nn.Module]:
    return [
        nn.Conv3d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm3d(c_out),
        nn.ReLU(),
    ]


class ResidualBlock3d(nn.Module):
    r"""Two 3x3x3 convolutions with batch norm and an identity shortcut (He et al.,
    arXiv:1512.03385): :math:`y = \mathrm{ReLU}(x + \mathrm{BN}(W_2\,\mathrm{ReLU}(
    \mathrm{BN}(W_1 x))))`.

    Shapes:
        - **input / output:** :math:`(B, C, L, H, W)`
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn_relu(channels, channels, 3),
            nn.Conv3d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm3d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class InceptionBlock3d(nn.Module):
    """Four parallel branches concatenated along channels (Szegedy et al., arXiv:1409.4842,
    with the 5x5 branch factorised into two 3x3 as in arXiv:1512.00567), in 3D:
    1x1x1; 1x1x1 -> 3x3x3; 1x1x1 -> 3x3x3 -> 3x3x3 (a 5x5x5 receptive field);
    3x3x3 max-pool -> 1x1x1. Each branch has ``out_channels // 4`` channels.

    Shapes:
        - **input:** :math:`(B, C_{in}, L, H, W)`; **output:** :math:`(B, C_{out}, L, H, W)`
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if out_channels % 4:
            raise InputError(
                "inception width must be a multiple of 4",
                field="model.params.width",
                value=out_channels,
            )
        c = out_channels // 4
        self.branches = nn.ModuleList(
            [
                nn.Sequential(*_conv_bn_relu(in_channels, c, 1)),
                nn.Sequential(*_conv_bn_relu(in_channels, c, 1), *_conv_bn_relu(c, c, 3)),
                nn.Sequential(
                    *_conv_bn_relu(in_channels, c, 1),
                    *_conv_bn_relu(c, c, 3),
                    *_conv_bn_relu(c, c, 3),
                ),
                nn.Sequential(
                    nn.MaxPool3d(3, stride=1, padding=1), *_conv_bn_relu(in_channels, c, 1)
                ),
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


@MODELS.register("hgcal-cnn3d")
class HgcalCNN3d(nn.Module):
    r"""Seed 003's 3D CNN for HGCAL property regression (energy, barycenter).

    A 3x3x3 stem at full resolution, then ``stages`` stages of [2x2 transverse max-pool,
    inception block, residual block], the channel width doubling from stage to stage (``width``,
    ``2 width``, ...). The layer axis keeps its resolution, so the optional recurrent pass sees
    every layer; pooling before the first stage keeps the cost of a 47 x 32 x 32 image near
    0.15 GMAC at the default width (eight times less than without it). Global average and max pooling
    over (L, H, W) feed a two-layer dense head. With ``recurrent="gru"`` or ``"lstm"`` the
    feature map averaged over (H, W) is read layer by layer, front to back, by a recurrent cell
    (seed 003's RNN over layers: the shower develops along the layers as in time) and its last
    hidden state is concatenated to the pooled features.

    Shapes:
        - **input:** :math:`(B, C, L, H, W)` energy images (C = 1: energy per pixel), with
          :math:`H, W \ge 2^{stages}`
        - **output:** :math:`(B, n_{out})`
    """

    def __init__(
        self,
        in_shape: tuple[int, ...],
        n_outputs: int,
        width: int = 8,
        stages: int = 3,
        dense: int = 64,
        recurrent: str | None = None,
        recurrent_hidden: int = 32,
    ) -> None:
        super().__init__()
        if len(in_shape) != 4:
            raise InputError(
                "hgcal-cnn3d takes images of shape (channels, layers, height, width)",
                field="in_shape",
                value=in_shape,
            )
        channels, _, height, width_px = in_shape
        if min(height, width_px) < 2**stages:
            raise InputError(
                f"{stages} stages pool the transverse plane {stages} times: "
                f"images need at least {2**stages} pixels",
                field="in_shape",
                value=in_shape,
            )
        if recurrent is not None and recurrent.lower() not in RECURRENT_CELLS:
            raise InputError(
                f"recurrent must be one of {RECURRENT_CELLS} or null",
                field="model.params.recurrent",
                value=recurrent,
            )
        layers: list[nn.Module] = _conv_bn_relu(channels, width, 3)
        c = width
        for stage in range(stages):
            c_out = width * 2**stage
            layers += [
                nn.MaxPool3d((1, 2, 2)),
                InceptionBlock3d(c, c_out),
                ResidualBlock3d(c_out),
            ]
            c = c_out
        self.features = nn.Sequential(*layers)
        self.recurrent: nn.GRU | nn.LSTM | None = None
        head_in = 2 * c
        if recurrent is not None:
            cell = nn.GRU if recurrent.lower() == "gru" else nn.LSTM
            self.recurrent = cell(c, recurrent_hidden, batch_first=True)
            head_in += recurrent_hidden
        self.head = nn.Sequential(nn.Linear(head_in, dense), nn.ReLU(), nn.Linear(dense, n_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)  # (B, C, L, H', W')
        pooled = [h.mean(dim=(2, 3, 4)), h.amax(dim=(2, 3, 4))]  # 2 x (B, C)
        if self.recurrent is not None:
            seq = h.mean(dim=(3, 4)).transpose(1, 2)  # (B, L, C), front layer first
            out, _ = self.recurrent(seq)  # (B, L, hidden)
            pooled.append(out[:, -1])
        return self.head(torch.cat(pooled, dim=1))
