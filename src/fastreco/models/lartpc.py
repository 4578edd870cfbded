r"""Pixel-level activity ID on liquid-argon TPC images: [track, em, none] and a Michel score.

Seed 004 (LArSoft's ``EmTrackMichelId``) classifies every hit of a wire × drift-tick ADC image
with a small CNN run on a patch around the hit; on a ProtoDUNE event that took 606 s of 1,029 s,
and the seed's conclusion was that "feature maps should be done once per event, not redone for
each patch". Three models give the same four scores per pixel, in the order of
:data:`SCORE_NAMES` (three class logits, then the Michel logit):

* :class:`PatchCNN` (``"lartpc-patch-cnn"``): the seed's layout, one patch per hit;
* :func:`dense_patch_cnn`: a trained :class:`PatchCNN` rewritten, weights unchanged, as a fully
  convolutional :class:`DensePatchCNN` that returns in one pass over an image exactly the scores
  the patch CNN gives for a patch centred on every pixel (dense evaluation with dilated kernels:
  Li, Zhao, Wang, "Highly efficient forward and backward propagation of convolutional neural
  networks for pixelwise classification", arXiv:1412.4526; OverFeat, arXiv:1312.6229);
* :class:`PixelUNet` (``"lartpc-unet"``): a separately trained U-Net (Ronneberger et al.,
  arXiv:1505.04597) that outputs the four scores for every pixel.

:func:`unet_scores_at` runs a :class:`PixelUNet` only on the aligned tiles that hold hits, each
grown by the receptive field (:func:`unet_receptive_radius`), and gives exactly the whole-image
scores at the hits.

:func:`pixel_id_loss` is the seed's two-head loss (weighted 0.1 for the class head, 1 for the
Michel head), with a pixel mask for the fully convolutional networks.

Image axes are (wire, tick) throughout: an event is ``(n_wires, n_ticks)`` float32 ADC counts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fastreco.errors import InputError
from fastreco.models.registry import MODELS

#: Order of the class logits; the Michel logit follows them (index :data:`MICHEL_INDEX`).
CLASS_NAMES = ("track", "em", "none")
SCORE_NAMES = (*CLASS_NAMES, "michel")
N_CLASSES = len(CLASS_NAMES)
MICHEL_INDEX = N_CLASSES
#: Loss weights of the two heads, from seed 004's Keras listing (LArSoft EmTrackMichelId):
#: ``loss_weights={'em_trk_none_netout': 0.1, 'michel_netout': 1.}``.
CLASS_LOSS_WEIGHT = 0.1
MICHEL_LOSS_WEIGHT = 1.0
#: Default input scaling: ADC counts of tens to hundreds -> values of order one.
DEFAULT_INPUT_SCALE = 0.01


def _check_outputs(n_outputs: int) -> None:
    if n_outputs < 3:
        raise InputError(
            "LArTPC pixel-ID models output n_classes (>= 2) class logits plus one Michel logit",
            field="model.n_outputs",
            value=n_outputs,
        )


@MODELS.register("lartpc-patch-cnn")
class PatchCNN(nn.Module):
    r"""The patch CNN of seed 004 (LArSoft EmTrackMichelId): convolutions with max-pooling
    ("valid", no padding, as in the seed's Keras listing), dropout, two dense layers, then two
    heads: the [track, em, none] logits (softmax in the loss) and the Michel logit (sigmoid).

    Args:
        in_shape: ``(1, P, P)``, the patch (P = 32 by default; the patch of pixel (r, c) covers
            rows ``r - centre .. r - centre + P - 1``, ``centre = P // 2``, same for columns).
        n_outputs: number of classes + 1 (4: track, em, none, michel).
        filters, kernels: one valid convolution (+ ReLU + ``pool`` max-pool) per entry.
        dense: widths of the dense layers after flattening.
        input_scale: factor applied to the ADC input first.

    Shapes:
        - **input:** :math:`(B, 1, P, P)` ADC patches
        - **output:** :math:`(B, n_{out})`: class logits, then the Michel logit
    """

    def __init__(
        self,
        in_shape: tuple[int, ...] = (1, 32, 32),
        n_outputs: int = 4,
        filters: Sequence[int] = (16, 32),
        kernels: Sequence[int] = (5, 3),
        pool: int = 2,
        dense: Sequence[int] = (128, 32),
        dropout: float = 0.2,
        input_scale: float = DEFAULT_INPUT_SCALE,
    ) -> None:
        super().__init__()
        _check_outputs(n_outputs)
        if len(in_shape) != 3 or in_shape[1] != in_shape[2]:
            raise InputError("patches must be (channels, P, P)", field="in_shape", value=in_shape)
        if len(filters) != len(kernels):
            raise InputError(
                "one kernel size per convolution", field="model.params.kernels", value=kernels
            )
        self.in_shape = tuple(in_shape)
        self.input_scale = float(input_scale)
        layers: list[nn.Module] = []
        channels = in_shape[0]
        for n_filters, kernel in zip(filters, kernels, strict=True):
            layers += [nn.Conv2d(channels, n_filters, kernel), nn.ReLU(), nn.MaxPool2d(pool)]
            channels = n_filters
        self.trunk = nn.Sequential(*layers)
        try:
            with torch.no_grad():
                trunk_shape = tuple(self.trunk(torch.zeros(1, *in_shape)).shape[1:])
        except RuntimeError:
            trunk_shape = (0, 0, 0)
        if min(trunk_shape[1:]) < 1:
            raise InputError(
                "patch too small for these convolutions", field="in_shape", value=in_shape
            )
        mlp: list[nn.Module] = [nn.Dropout(dropout), nn.Flatten()]
        width = math.prod(trunk_shape)
        for size in dense:
            mlp += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        self.mlp = nn.Sequential(*mlp)
        self.class_head = nn.Linear(width, n_outputs - 1)
        self.michel_head = nn.Linear(width, 1)

    @property
    def patch_size(self) -> int:
        return int(self.in_shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.mlp(self.trunk(x * self.input_scale))  # (B, dense[-1])
        return torch.cat([self.class_head(hidden), self.michel_head(hidden)], dim=1)


class DensePatchCNN(nn.Module):
    r"""A :class:`PatchCNN` evaluated densely: the patch CNN's scores for every pixel at once.

    Built by :func:`dense_patch_cnn`. Each max-pool of stride s becomes a stride-1 pool
    (:class:`DilatedMaxPool`) and every later kernel is dilated by the product of the earlier
    strides; the first dense layer becomes a dilated convolution with the trunk's output size as
    kernel, later dense layers 1×1 convolutions; the image is zero padded by ``centre`` before and ``P - 1 - centre`` after, as
    a zero-padded patch near the border. No weight changes, so the result is exact (up to
    float32 summation order).

    Besides :meth:`forward` (one pass, exported to ONNX) it offers :meth:`score_map` (the same in
    tiles along the ticks, bounded memory) and :meth:`scores_at`: the convolutional feature maps
    once per event, then the dense layers only at the hit pixels.

    Shapes:
        - **input:** :math:`(B, 1, H, W)` ADC image (wires, ticks)
        - **output:** :math:`(B, n_{out}, H, W)`; ``out[b, :, r, c]`` equals the patch CNN on
          the patch centred at (r, c)
    """

    def __init__(
        self,
        trunk: nn.Sequential,
        head: nn.Sequential,
        *,
        patch_size: int,
        centre: int,
        step: int,
        fc_shape: tuple[int, int],
        input_scale: float,
    ) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = head
        self.patch_size = patch_size
        self.centre = centre
        self.step = step  # dilation of the first dense layer = product of the pool strides
        self.fc_shape = fc_shape
        self.input_scale = input_scale

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        before, after = self.centre, self.patch_size - 1 - self.centre
        return F.pad(x * self.input_scale, (before, after, before, after))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        return self.head(self.trunk(self._pad(x)))[..., :height, :width]

    @torch.no_grad()
    def score_map(self, x: torch.Tensor, tile: int = 1024) -> torch.Tensor:
        """:meth:`forward` computed in tiles of ``tile`` ticks (the last axis), same result.

        Shapes: (B, 1, H, W) -> (B, n_out, H, W).
        """
        height, width = x.shape[-2], x.shape[-1]
        padded = self._pad(x)
        halo = self.patch_size - 1
        tiles = []
        for start in range(0, width, tile):
            stop = min(start + tile, width)
            part = padded[..., start : stop + halo]
            tiles.append(self.head(self.trunk(part))[..., :height, : stop - start])
        return torch.cat(tiles, dim=-1)

    def _head_on_vectors(self, features: torch.Tensor) -> torch.Tensor:
        """The head's convolutions applied as dense layers to gathered (n, C*h*w) features."""
        out = features
        for module in self.head:
            if isinstance(module, nn.Conv2d):
                out = F.linear(out, module.weight.flatten(1), module.bias)
            else:
                out = module(out)
        return out

    @torch.no_grad()
    def scores_at(
        self,
        image: torch.Tensor,
        rows: torch.Tensor,
        cols: torch.Tensor,
        *,
        tile: int = 1024,
        chunk: int = 8192,
    ) -> torch.Tensor:
        """Scores at the given pixels: trunk feature maps once per tile, dense layers per hit.

        Args:
            image: (H, W) or (1, 1, H, W) ADC image.
            rows, cols: (n,) integer pixel coordinates (wire, tick).
            tile: ticks per tile of the trunk (memory bound); chunk: hits per dense-layer call.

        Returns:
            (n, n_out) scores, in the order of the pixels given.
        """
        x = image.reshape(1, 1, *image.shape[-2:])
        width = x.shape[-1]
        rows = torch.as_tensor(rows, dtype=torch.long)
        cols = torch.as_tensor(cols, dtype=torch.long)
        outside = (rows < 0) | (rows >= x.shape[-2]) | (cols < 0) | (cols >= width)
        if rows.shape != cols.shape or bool(outside.any()):
            raise InputError(
                "hit pixels must be (n,) rows and columns inside the image",
                field="rows, cols",
                value=(tuple(rows.shape), tuple(cols.shape), tuple(x.shape[-2:])),
            )
        fc_h, fc_w = self.fc_shape
        offs_h = torch.arange(fc_h) * self.step
        offs_w = torch.arange(fc_w) * self.step
        padded = self._pad(x)
        halo = self.patch_size - 1
        n_out = self.head[-1].out_channels
        out = torch.empty((len(rows), n_out), dtype=x.dtype)
        for start in range(0, width, tile):
            stop = min(start + tile, width)
            sel = torch.nonzero((cols >= start) & (cols < stop)).flatten()
            if len(sel) == 0:
                continue
            features = self.trunk(padded[..., start : stop + halo])[0]  # (C, H', W')
            for lo in range(0, len(sel), chunk):
                idx = sel[lo : lo + chunk]
                rr = rows[idx, None] + offs_h  # (n, h)
                cc = cols[idx, None] - start + offs_w  # (n, w)
                gathered = features[:, rr[:, :, None], cc[:, None, :]]  # (C, n, h, w)
                vectors = gathered.permute(1, 0, 2, 3).reshape(len(idx), -1)
                out[idx] = self._head_on_vectors(vectors)
        return out


class DilatedMaxPool(nn.Module):
    """Stride-1 max-pool of a ``kernel`` × ``kernel`` window dilated by ``dilation``, no padding.

    The same as ``nn.MaxPool2d(kernel, stride=1, dilation=dilation)``, computed as a separable
    maximum of shifted views: about 4x faster than PyTorch's dilated CPU pooling.

    Shapes: (B, C, H, W) -> (B, C, H - dilation (kernel - 1), W - dilation (kernel - 1)).
    """

    def __init__(self, kernel: int, dilation: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.dilation = dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reach = self.dilation * (self.kernel - 1)
        # static (negative) slice ends, so that exports with dynamic H, W need no shape algebra
        shifts = [
            slice(i * self.dilation, i * self.dilation - reach or None) for i in range(self.kernel)
        ]
        rows = x[..., shifts[0], :]
        for shift in shifts[1:]:
            rows = torch.maximum(rows, x[..., shift, :])
        out = rows[..., shifts[0]]
        for shift in shifts[1:]:
            out = torch.maximum(out, rows[..., shift])
        return out

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, dilation={self.dilation}"


def _dilated_copy(module: nn.Module, dilation: int) -> tuple[nn.Module, int]:
    """One trunk layer of the dense network and the dilation after it."""
    if isinstance(module, nn.Conv2d):
        if module.stride != (1, 1) or module.padding != (0, 0) or module.dilation != (1, 1):
            raise InputError(
                "dense evaluation needs stride-1, unpadded, undilated convolutions",
                field="model.trunk",
                value=repr(module),
            )
        conv = nn.Conv2d(
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            dilation=dilation,
            groups=module.groups,
            bias=module.bias is not None,
        )
        conv.load_state_dict(module.state_dict())
        return conv, dilation
    if isinstance(module, nn.MaxPool2d):
        kernel = module.kernel_size
        stride = module.stride
        if not (isinstance(kernel, int) and isinstance(stride, int)) or module.padding != 0:
            raise InputError(
                "dense evaluation needs square, unpadded max-pools",
                field="model.trunk",
                value=repr(module),
            )
        if module.dilation != 1 or module.ceil_mode:
            raise InputError(
                "dense evaluation needs undilated, floor-mode max-pools",
                field="model.trunk",
                value=repr(module),
            )
        return DilatedMaxPool(kernel, dilation), dilation * stride
    if isinstance(module, nn.ReLU):
        return nn.ReLU(), dilation
    raise InputError(
        "no dense equivalent for this layer", field="model.trunk", value=type(module).__name__
    )


def dense_patch_cnn(model: PatchCNN, centre: int | None = None) -> DensePatchCNN:
    """The exact fully convolutional equivalent of a (trained) :class:`PatchCNN`.

    Args:
        model: the patch CNN; its weights are copied, it is not modified.
        centre: index, inside a patch, of the pixel the patch belongs to (default ``P // 2``,
            the convention of :class:`PatchCNN`).

    Returns:
        A :class:`DensePatchCNN` in eval mode on the CPU (dropout removed).
    """
    size = model.patch_size
    centre = size // 2 if centre is None else int(centre)
    if not 0 <= centre < size:
        raise InputError("patch centre outside the patch", field="centre", value=centre)
    dilation = 1
    trunk_layers = []
    for module in model.trunk:
        layer, dilation = _dilated_copy(module, dilation)
        trunk_layers.append(layer)
    with torch.no_grad():
        channels, fc_h, fc_w = model.trunk(torch.zeros(1, *model.in_shape)).shape[1:]
    linears = [m for m in model.mlp if isinstance(m, nn.Linear)]
    head_layers: list[nn.Module] = []
    in_channels, kernel = channels, (fc_h, fc_w)
    for i, linear in enumerate(linears):
        conv = nn.Conv2d(
            in_channels, linear.out_features, kernel, dilation=dilation if i == 0 else 1
        )
        with torch.no_grad():
            conv.weight.copy_(linear.weight.reshape(conv.weight.shape))
            conv.bias.copy_(linear.bias)
        head_layers += [conv, nn.ReLU()]
        in_channels, kernel = linear.out_features, (1, 1)
    n_classes = model.class_head.out_features
    out = nn.Conv2d(in_channels, n_classes + 1, kernel, dilation=dilation if not linears else 1)
    with torch.no_grad():
        weight = torch.cat([model.class_head.weight, model.michel_head.weight])
        out.weight.copy_(weight.reshape(out.weight.shape))
        out.bias.copy_(torch.cat([model.class_head.bias, model.michel_head.bias]))
    head_layers.append(out)
    return DensePatchCNN(
        nn.Sequential(*trunk_layers),
        nn.Sequential(*head_layers),
        patch_size=size,
        centre=centre,
        step=dilation,
        fc_shape=(int(fc_h), int(fc_w)),
        input_scale=model.input_scale,
    ).eval()


def _double_conv(c_in: int, c_out: int, norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c in (c_in, c_out):
        layers.append(nn.Conv2d(c, c_out, 3, padding=1, bias=not norm))
        if norm:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@MODELS.register("lartpc-unet")
class PixelUNet(nn.Module):
    r"""A light U-Net (Ronneberger et al., arXiv:1505.04597) for per-pixel [track, em, none] +
    Michel scores of a whole event in one pass.

    ``depth`` levels of two 3×3 convolutions (+ BatchNorm + ReLU) and a 2×2 max-pool, channels
    ``width · 2^level``; the decoder upsamples with 2×2 transposed convolutions and concatenates
    the skip connection. Any H, W (odd sizes are pooled with floor and the upsampled map padded
    back; images smaller than ``2**depth``, ticks ``tick_factor · 2**depth``, are zero padded
    and cropped back), so the network is translation equivariant for shifts by those multiples
    away from the borders.

    With ``tick_factor = f > 1`` the U-Net runs on ticks binned by f (a (3, f) convolution of
    stride (1, f)), as LArSoft's patches use drift down-sampling (a ProtoDUNE tick, 0.5 µs at
    1.6 mm/µs, is 0.8 mm of drift against a 4.79 mm wire pitch: ``fastreco.constants.LARTPC_*``);
    a transposed convolution brings its features back to every tick,
    where they meet one full-resolution 3×3 convolution of the input before the output layer.
    The cost per pixel drops by about f.

    Args:
        in_shape: ``(channels, H, W)`` of a training image; only ``channels`` is used.
        n_outputs: number of classes + 1 (4: track, em, none, michel).
        width, depth: channels of the first level, number of poolings.
        tick_factor: tick binning of the U-Net body (1: none).

    Shapes:
        - **input:** :math:`(B, C, H, W)` ADC images
        - **output:** :math:`(B, n_{out}, H, W)`: class logits, then the Michel logit
    """

    def __init__(
        self,
        in_shape: tuple[int, ...] = (1, 64, 64),
        n_outputs: int = 4,
        width: int = 8,
        depth: int = 3,
        norm: bool = True,
        input_scale: float = DEFAULT_INPUT_SCALE,
        tick_factor: int = 1,
    ) -> None:
        super().__init__()
        _check_outputs(n_outputs)
        if depth < 1:
            raise InputError("depth must be >= 1", field="model.params.depth", value=depth)
        if tick_factor < 1:
            raise InputError(
                "tick_factor must be >= 1", field="model.params.tick_factor", value=tick_factor
            )
        self.depth = depth
        self.tick_factor = int(tick_factor)
        self.input_scale = float(input_scale)
        channels = [width * 2**level for level in range(depth + 1)]
        c_in = in_shape[0]
        if self.tick_factor > 1:
            f = self.tick_factor
            self.stem = nn.Sequential(
                nn.Conv2d(c_in, width, (3, f), stride=(1, f), padding=(1, 0)), nn.ReLU()
            )
            self.unstem = nn.Sequential(
                nn.ConvTranspose2d(width, width, (1, f), stride=(1, f)), nn.ReLU()
            )
            fine = max(width // 2, 1)
            self.fine = nn.Sequential(nn.Conv2d(c_in, fine, 3, padding=1), nn.ReLU())
            out_in = width + fine
            c_in = width
        else:
            out_in = width
        self.down = nn.ModuleList()
        for c in channels[:-1]:
            self.down.append(_double_conv(c_in, c, norm))
            c_in = c
        self.pool = nn.MaxPool2d(2)
        self.bottom = _double_conv(channels[-2], channels[-1], norm)
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for level in reversed(range(depth)):
            c = channels[level]
            self.up.append(nn.ConvTranspose2d(channels[level + 1], c, 2, stride=2))
            self.merge.append(_double_conv(2 * c, c, norm))
        self.out = nn.Conv2d(out_in, n_outputs, 1)

    @property
    def min_input_size(self) -> tuple[int, int]:
        """Smallest (H, W) served without the small-image padding (the ONNX export's minimum)."""
        return 2**self.depth, 2**self.depth * self.tick_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        x = x * self.input_scale
        multiple, factor = 2**self.depth, self.tick_factor
        small = height < multiple or width < multiple * factor
        if small:  # too small to pool depth times: zero pad, crop at the end
            x = F.pad(x, (0, max(multiple * factor - width, 0), 0, max(multiple - height, 0)))
        fine = None
        if factor > 1:
            fine = self.fine(x)  # (B, width // 2, H, W) full resolution
            x = self.stem(F.pad(x, (0, (-x.shape[-1]) % factor)))  # (B, width, H, ceil(W / f))
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)  # floor: an odd last row/column is seen by the skip only
        x = self.bottom(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips), strict=True):
            x = merge(torch.cat([_match(up(x), skip), skip], dim=1))
        if fine is not None:
            x = torch.cat([_match(self.unstem(x), fine), fine], dim=1)
        out = self.out(x)
        return out[..., :height, :width] if small else out


def _match(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x`` zero padded or cropped (negative padding) at the end to the size of ``like``.

    An upsampled map is one row/column short of its skip after an odd size was pooled, or
    longer after the tick binning; padding by the symbolic difference also lets
    ``torch.export`` trace dynamic heights and widths without shape guards.
    """
    return F.pad(x, (0, like.shape[-1] - x.shape[-1], 0, like.shape[-2] - x.shape[-2]))


def pixel_id_loss(
    logits: torch.Tensor,
    cls_target: torch.Tensor,
    michel_target: torch.Tensor,
    mask: torch.Tensor | None = None,
    weights: tuple[float, float] = (CLASS_LOSS_WEIGHT, MICHEL_LOSS_WEIGHT),
    class_weights: torch.Tensor | Sequence[float] | None = None,
    michel_pos_weight: float | None = None,
) -> torch.Tensor:
    r"""The seed's two-head loss: ``weights[0] · CE(class) + weights[1] · BCE(Michel)``.

    Seed 004 weights the em-track-none head 0.1 and the Michel head 1 (its Keras
    ``loss_weights``); it used a mean-squared error on the Michel sigmoid, here the Michel term
    is the binary cross-entropy on the logit.

    Args:
        logits: (B, n_classes + 1) per patch, or (B, n_classes + 1, H, W) per pixel.
        cls_target: class indices (0 track, 1 em, 2 none), (B,) or (B, H, W), integer.
        michel_target: Michel flag in [0, 1], same shape as ``cls_target``.
        mask: optional boolean, same shape: only these patches/pixels count (hit pixels for the
            fully convolutional networks); each term is the mean over them.
        weights: (class head, Michel head) loss weights.
        class_weights: optional (n_classes,) weights of the cross-entropy (weighted mean, as
            :func:`torch.nn.functional.cross_entropy`).
        michel_pos_weight: optional weight of the Michel hits' (positive) term of the BCE
            (``pos_weight`` of :func:`torch.nn.functional.binary_cross_entropy_with_logits`);
            at convergence it multiplies the predicted Michel odds by about this factor, so it
            moves the sigmoid's 0.5 working point. None: unweighted.

    Returns:
        The scalar loss (0 when the mask selects nothing).
    """
    n_classes = logits.shape[1] - 1
    # (N, n_classes + 1) with the channel axis last
    flat = logits.movedim(1, -1).reshape(-1, n_classes + 1)
    target = cls_target.reshape(-1).long()
    michel = michel_target.reshape(-1).to(flat.dtype)
    if target.numel() != flat.shape[0] or michel.numel() != flat.shape[0]:
        raise InputError(
            "targets do not match the logits' patches/pixels",
            field="cls_target",
            value=(tuple(logits.shape), tuple(cls_target.shape), tuple(michel_target.shape)),
        )
    if mask is not None:
        keep = mask.reshape(-1).bool()
        flat, target, michel = flat[keep], target[keep], michel[keep]
    if flat.shape[0] == 0:
        return logits.sum() * 0.0
    cw = None if class_weights is None else torch.as_tensor(class_weights, dtype=flat.dtype)
    ce = F.cross_entropy(flat[:, :n_classes], target, weight=cw)
    pos = (
        None
        if michel_pos_weight is None
        else torch.as_tensor(michel_pos_weight, dtype=flat.dtype, device=flat.device)
    )
    bce = F.binary_cross_entropy_with_logits(flat[:, n_classes], michel, pos_weight=pos)
    return weights[0] * ce + weights[1] * bce


# --------------------------------------------------------------------------------------------
# U-Net inference on the hit tiles only
# --------------------------------------------------------------------------------------------
#: Callable running a U-Net on a (B, 1, h, w) float32 batch -> (B, n_out, h, w) scores.
TileForward = Callable[[np.ndarray], np.ndarray]


def unet_receptive_radius(model: PixelUNet) -> tuple[int, int]:
    """Upper bound of the U-Net's receptive-field radius, (wires, ticks), in input pixels.

    An output pixel depends only on inputs within this distance (either side). Counted in the
    U-Net body's pixels: each 3×3 convolution at level l reaches ``2**l`` further, each 2×2
    transposed convolution up to level l up to ``2**l`` (its parent cell), a 2×2 pool nothing
    (a coarse cell covers exactly its children); the deepest path (encoder, bottom, decoder)
    gives ``7 · 2**depth - 5``. The tick binning (stem of (3, f), stride f, and its (1, f)
    transposed convolution) adds one wire and turns body columns into ticks: ``(R + 1) f - 1``.
    """
    body = 7 * 2**model.depth - 5
    if model.tick_factor == 1:
        return body, body
    return body + 1, (body + 1) * model.tick_factor - 1


def unet_halo(model: PixelUNet) -> tuple[int, int]:
    """:func:`unet_receptive_radius` rounded up to the U-Net's alignment, (wires, ticks)."""
    align = model.min_input_size
    radius = unet_receptive_radius(model)
    return tuple(-(-r // a) * a for r, a in zip(radius, align, strict=True))  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class HitTile:
    """One tile holding hits, and the crop (tile + halo, clipped to the image) the U-Net sees.

    ``crop`` is ``(wire_start, wire_stop, tick_start, tick_stop)``; ``hits`` the (k,) indices of
    the hits inside the tile (into the arrays given to :func:`hit_tiles`).
    """

    crop: tuple[int, int, int, int]
    hits: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.crop[1] - self.crop[0], self.crop[3] - self.crop[2]


def hit_tiles(
    shape: tuple[int, int],
    wires: np.ndarray,
    ticks: np.ndarray,
    tile: tuple[int, int],
    halo: tuple[int, int],
) -> list[HitTile]:
    """The tiles of an aligned ``tile`` grid that contain hits, each with its crop.

    Args:
        shape: (n_wires, n_ticks) of the image.
        wires, ticks: (n,) integer hit coordinates.
        tile, halo: (wires, ticks); grid origins at multiples of ``tile``; the crop is the tile
            extended by ``halo`` on each side and clipped to the image.

    Returns:
        One :class:`HitTile` per occupied tile (row-major tile order).
    """
    height, width = shape
    wires = np.asarray(wires, np.int64)
    ticks = np.asarray(ticks, np.int64)
    n_cols = -(-width // tile[1])
    key = (wires // tile[0]) * n_cols + ticks // tile[1]
    order = np.argsort(key, kind="stable")
    keys, starts = np.unique(key[order], return_index=True)
    groups = np.split(order, starts[1:])
    out = []
    for k, hits in zip(keys.tolist(), groups, strict=True):
        w0, t0 = (k // n_cols) * tile[0], (k % n_cols) * tile[1]
        crop = (
            max(w0 - halo[0], 0),
            min(w0 + tile[0] + halo[0], height),
            max(t0 - halo[1], 0),
            min(t0 + tile[1] + halo[1], width),
        )
        out.append(HitTile(crop, hits))
    return out


@torch.no_grad()
def unet_scores_at(
    model: PixelUNet,
    adc: np.ndarray,
    wires: np.ndarray,
    ticks: np.ndarray,
    *,
    tile: tuple[int, int] = (64, 512),
    halo: tuple[int, int] | None = None,
    batch: int = 16,
    forward: TileForward | None = None,
    max_area_fraction: float = 1.0,
) -> np.ndarray:
    """The U-Net's scores at the hits, computed only on the tiles that hold hits.

    The image is cut into a grid of ``tile`` (aligned to ``model.min_input_size``, so that the
    U-Net's pooling grid is the whole image's); each tile with hits is run extended by ``halo``
    (at least the receptive-field radius, :func:`unet_halo` by default) and clipped at the
    image borders, so that a crop's borders are either the image's own (same zero padding and
    odd-size handling as the whole-image forward) or further from every hit than the network
    sees: the result equals ``model(image)`` at the hits up to float32 summation order. Crops of
    equal shape (all interior ones) go through in batches of ``batch``.

    Args:
        model: a :class:`PixelUNet` in eval mode (BatchNorm then acts pixel by pixel).
        adc: (n_wires, n_ticks) float32 ADC image.
        wires, ticks: (n,) integer hit coordinates.
        tile, halo: (wires, ticks), multiples of ``model.min_input_size``.
        batch: crops per forward call.
        forward: runs a (B, 1, h, w) batch, e.g. an ONNX Runtime session exported with dynamic
            spatial axes; default the model in PyTorch.
        max_area_fraction: when the crops together cover more than this fraction of the image's
            pixels (hits spread over most tiles), the whole image is run once instead: the same
            scores for less work.

    Returns:
        (n, n_out) float32 scores in the order of the hits given.
    """
    if model.training:
        raise InputError(
            "tile inference equals the whole-image forward only in eval mode",
            field="model.training",
            value=True,
        )
    align = model.min_input_size
    halo = unet_halo(model) if halo is None else tuple(halo)
    for name, size in (("tile", tuple(tile)), ("halo", halo)):
        if len(size) != 2 or any(s < 0 or s % a for s, a in zip(size, align, strict=True)):
            raise InputError(
                f"{name} must be (wires, ticks) multiples of the U-Net alignment {align}",
                field=name,
                value=size,
            )
    if min(tile) < 1:
        raise InputError("tile must be positive", field="tile", value=tuple(tile))
    adc = np.asarray(adc, np.float32)
    wires = np.asarray(wires, np.int64)
    ticks = np.asarray(ticks, np.int64)
    height, width = adc.shape
    outside = (wires < 0) | (wires >= height) | (ticks < 0) | (ticks >= width)
    if wires.shape != ticks.shape or wires.ndim != 1 or bool(outside.any()):
        raise InputError(
            "hits must be (n,) wires and ticks inside the image",
            field="wires, ticks",
            value=(wires.shape, ticks.shape, adc.shape),
        )
    if forward is None:

        def forward(x: np.ndarray) -> np.ndarray:
            return model(torch.from_numpy(x)).numpy()

    n_out = model.out.out_channels
    out = np.empty((len(wires), n_out), np.float32)
    by_shape: dict[tuple[int, int], list[HitTile]] = {}
    tiles = hit_tiles(adc.shape, wires, ticks, tuple(tile), halo)
    if sum(math.prod(t.shape) for t in tiles) > max_area_fraction * adc.size:
        tiles = [HitTile((0, height, 0, width), np.arange(len(wires)))]
    for t in tiles:
        by_shape.setdefault(t.shape, []).append(t)
    for group in by_shape.values():
        for lo in range(0, len(group), batch):
            part = group[lo : lo + batch]
            x = np.stack([adc[w0:w1, t0:t1] for w0, w1, t0, t1 in (t.crop for t in part)])
            scores = forward(x[:, None])  # (B, n_out, h, w)
            for b, t in enumerate(part):
                rows, cols = wires[t.hits] - t.crop[0], ticks[t.hits] - t.crop[2]
                out[t.hits] = scores[b][:, rows, cols].T
    return out
