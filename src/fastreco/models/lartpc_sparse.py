r"""A sparse U-Net (UResNet) for LArTPC pixel ID: the four scores at the active pixels only.

After zero suppression a 480 × 6000 ProtoDUNE-like event keeps ~0.3 % of its pixels; the dense
:class:`~fastreco.models.lartpc.PixelUNet` pays for all of them. Domine & Terao ("Scalable deep
convolutional neural networks for sparse, locally dense liquid argon time projection chamber
data", Phys. Rev. D 102, 012005 (2020)) run a U-Net of submanifold sparse convolutions (Graham
& van der Maaten, arXiv:1706.01307) whose cost scales with the active pixels:
:class:`SparseUResNet` (``"lartpc-sparse-unet"``) is that network built on
:mod:`fastreco.models.sparse`, with the same output layout as the other pixel-ID models
(:data:`~fastreco.models.lartpc.SCORE_NAMES`: [track, em, none] logits, then the Michel
logit) and the same input scaling (ADC × ``input_scale``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from fastreco.errors import InputError
from fastreco.models.lartpc import DEFAULT_INPUT_SCALE, _check_outputs
from fastreco.models.registry import MODELS
from fastreco.models.sparse import (
    SparseBatchNorm,
    SparseDownConv2d,
    SparseImage,
    SparseLinear,
    SparseReLU,
    SparseUpConv2d,
    Stride,
    SubMConv2d,
    sparse_cat,
)


class ResidualBlock(nn.Module):
    """Pre-activation residual block of two submanifold 3×3 convolutions (BN, ReLU, conv, BN,
    ReLU, conv) plus the input (through a linear map when the channels change)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            SparseBatchNorm(c_in),
            SparseReLU(inplace=True),
            SubMConv2d(c_in, c_out, bias=False),
            SparseBatchNorm(c_out),
            SparseReLU(inplace=True),
            SubMConv2d(c_out, c_out),
        )
        self.shortcut = None if c_in == c_out else SparseLinear(c_in, c_out, bias=False)

    def forward(self, x: SparseImage) -> SparseImage:
        skip = x if self.shortcut is None else self.shortcut(x)
        return skip.replace(skip.features + self.body(x).features)


class _Up(nn.Module):
    """BN, ReLU, then the transposed convolution onto the finer level's sites."""

    def __init__(self, c_in: int, c_out: int, stride: Stride) -> None:
        super().__init__()
        self.act = nn.Sequential(SparseBatchNorm(c_in), SparseReLU(inplace=True))
        self.conv = SparseUpConv2d(c_in, c_out, stride)

    def forward(self, x: SparseImage, target: SparseImage) -> SparseImage:
        return self.conv(self.act(x), target)


@MODELS.register("lartpc-sparse-unet")
class SparseUResNet(nn.Module):
    r"""UResNet-like sparse U-Net: per active pixel [track, em, none] + Michel logits.

    A submanifold 3×3 stem, then ``depth + 1`` levels of ``reps`` residual blocks
    (:class:`ResidualBlock`) with ``width + growth · level`` channels (UResNet's linear growth;
    ``growth`` defaults to ``width``),
    joined by 2×2 stride-2 sparse convolutions on the way down and 2×2 stride-2 transposed
    convolutions back onto the same sites on the way up, where the encoder's features of the
    level are concatenated (the skip connection) and merged by ``reps`` residual blocks; BN,
    ReLU and a linear map to the ``n_outputs`` scores at the end. Every layer computes at the
    active sites only, so the cost scales with the hits, not the image.

    With ``tick_factor = f > 1`` the first down-sampling merges 2 wires × 2f ticks (as the
    dense U-Net's tick binning: a tick is 0.8 mm of drift against a 4.79 mm wire pitch), so the
    coarse levels see about as far along the drift as along the wires.

    Args:
        in_shape: ``(channels, n_wires, n_ticks)``; only ``channels`` is used.
        n_outputs: number of classes + 1 (4: track, em, none, michel).
        width: channels of the first level; depth: number of down-samplings; reps: residual
            blocks per level and side.
        growth: channels added per level (default ``width``). Tracks stay lines when they are
            down-sampled, so a coarse level keeps about half the sites of the finer one and
            its cost grows with the square of its channels: a smaller growth makes the coarse
            levels cheap.
        tick_factor: extra tick stride of the first down-sampling.
        input_scale: factor applied to the ADC features first.

    Shapes:
        - **input:** a :class:`~fastreco.models.sparse.SparseImage`, features (N, channels) ADC
        - **output:** (N, n_outputs) logits at its sites, in the input's order
    """

    def __init__(
        self,
        in_shape: tuple[int, ...] = (1, 480, 6000),
        n_outputs: int = 4,
        width: int = 16,
        depth: int = 4,
        reps: int = 1,
        tick_factor: int = 1,
        input_scale: float = DEFAULT_INPUT_SCALE,
        growth: int | None = None,
    ) -> None:
        super().__init__()
        _check_outputs(n_outputs)
        growth = width if growth is None else growth
        checks = (
            ("width", width, 1),
            ("depth", depth, 1),
            ("reps", reps, 1),
            ("growth", growth, 0),
        )
        for name, value, low in checks:
            if value < low:
                raise InputError(
                    f"{name} must be >= {low}", field=f"model.params.{name}", value=value
                )
        if tick_factor < 1:
            raise InputError(
                "tick_factor must be >= 1", field="model.params.tick_factor", value=tick_factor
            )
        self.in_channels = int(in_shape[0])
        self.n_outputs = n_outputs
        self.input_scale = float(input_scale)
        self.strides: list[Stride] = [(2, 2 * tick_factor)] + [(2, 2)] * (depth - 1)
        channels = [width + growth * level for level in range(depth + 1)]
        self.stem = SubMConv2d(self.in_channels, width)
        self.encoder = nn.ModuleList(_blocks(c, c, reps) for c in channels)
        self.down = nn.ModuleList(
            nn.Sequential(
                SparseBatchNorm(c), SparseReLU(inplace=True), SparseDownConv2d(c, c_next, stride)
            )
            for c, c_next, stride in zip(channels[:-1], channels[1:], self.strides, strict=True)
        )
        self.up = nn.ModuleList(
            _Up(c_next, c, stride)
            for c, c_next, stride in zip(channels[:-1], channels[1:], self.strides, strict=True)
        )
        self.decoder = nn.ModuleList(_blocks(2 * c, c, reps) for c in channels[:-1])
        self.head = nn.Sequential(
            SparseBatchNorm(width), SparseReLU(inplace=True), SparseLinear(width, n_outputs)
        )

    def forward(self, x: SparseImage) -> torch.Tensor:
        if x.n_channels != self.in_channels:
            raise InputError(
                f"the sparse U-Net expects {self.in_channels} feature channel(s)",
                field="features",
                value=x.n_channels,
            )
        h = self.stem(x.replace(x.features * self.input_scale))
        skips = []
        for level, blocks in enumerate(self.encoder):
            h = blocks(h)
            if level < len(self.down):
                skips.append(h)
                h = self.down[level](h)
        for level in reversed(range(len(self.down))):
            skip = skips[level]
            h = self.decoder[level](sparse_cat(self.up[level](h, skip), skip))
        return self.head(h).features


def _blocks(c_in: int, c_out: int, reps: int) -> nn.Sequential:
    return nn.Sequential(
        ResidualBlock(c_in, c_out), *(ResidualBlock(c_out, c_out) for _ in range(reps - 1))
    )


def event_sparse_image(
    adc: np.ndarray | torch.Tensor,
    wires: np.ndarray | torch.Tensor,
    ticks: np.ndarray | torch.Tensor,
    shape: Sequence[int] | None = None,
) -> SparseImage:
    """One event's hits as a :class:`SparseImage` (event index 0, ADC as the one feature).

    Args:
        adc: (n,) ADC of the hits, or the (n_wires, n_ticks) image to read them from.
        wires, ticks: (n,) integer hit coordinates.
        shape: (n_wires, n_ticks); default the image's shape (required with (n,) ADC).
    """
    wires = torch.as_tensor(np.asarray(wires), dtype=torch.long)
    ticks = torch.as_tensor(np.asarray(ticks), dtype=torch.long)
    adc = torch.as_tensor(np.asarray(adc, np.float32))
    if adc.ndim == 2:
        shape = tuple(adc.shape) if shape is None else shape
        if len(wires) and (int(wires.max()) >= adc.shape[0] or int(ticks.max()) >= adc.shape[1]):
            raise InputError("hits outside the image", field="wires, ticks", value=tuple(adc.shape))
        adc = adc[wires, ticks]
    if shape is None:
        raise InputError("the image shape is needed with per-hit ADC", field="shape", value=None)
    coords = torch.stack([torch.zeros_like(wires), wires, ticks], dim=1)
    return SparseImage.from_arrays(coords, adc, tuple(shape))  # type: ignore[arg-type]


@torch.inference_mode()
def sparse_scores_at(
    model: SparseUResNet,
    adc: np.ndarray,
    wires: np.ndarray,
    ticks: np.ndarray,
) -> np.ndarray:
    """The sparse U-Net's (n, n_out) float32 scores at the hits of one (n_wires, n_ticks) ADC
    image, all hits in one pass; rows in the order of the hits given."""
    device = next(model.parameters()).device
    x = event_sparse_image(adc, wires, ticks)
    x = SparseImage(x.coords.to(device), x.features.to(device), x.spatial_shape)
    return model(x).float().cpu().numpy()
