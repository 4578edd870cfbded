r"""A small sparse-convolution toolkit for 2D images whose active pixels are few (plain torch).

Zero-suppressed LArTPC events keep ~0.3 % of their pixels; a dense network pays for all of
them. Here an image batch is the list of its active sites (:class:`SparseImage`: integer
coordinates (event, wire, tick) and a feature row per site) and the layers compute only there:

* :class:`SubMConv2d`: a *submanifold* convolution (Graham & van der Maaten,
  arXiv:1706.01307): outputs at the input's active sites only, inputs off the active sites
  count as zero, so the active set does not dilate layer after layer;
* :class:`SparseDownConv2d`: kernel = stride convolution, output sites ``unique(coords //
  stride)``;
* :class:`SparseUpConv2d`: the transposed convolution back onto the finer sites the down
  sampling came from (the U-Net's decoder, as the UResNet of Domine & Terao, Phys. Rev. D 102,
  012005 (2020));
* feature-wise :class:`SparseBatchNorm`, :class:`SparseReLU`, :class:`SparseLinear`.

Rulebooks (which input site feeds which output site through which kernel tap) come from sorted
linearised keys and ``torch.searchsorted`` / ``torch.unique``, no Python loop over points. A
convolution gathers its taps into one (N, K · C_in) matrix (a zero row stands for the inactive
neighbours) and multiplies it by the (K · C_in, C_out) weight once. Rulebooks are cached in a
dict shared by every :class:`SparseImage` on the same sites, i.e. once per level and forward.

Weight layouts (K taps, tap k = ``i · kw + j`` for kernel row i along the wires and column j
along the ticks) match torch's dense layers: ``SubMConv2d.weight[k, ci, co] ==
conv2d.weight[co, ci, i, j]`` and ``SparseUpConv2d.weight[k, ci, co] ==
conv_transpose2d.weight[ci, co, i, j]``. Works on CPU and CUDA tensors alike.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numba
import numpy as np
import torch
from torch import nn

from fastreco.errors import InputError

Stride = tuple[int, int]


@dataclasses.dataclass
class SparseImage:
    """A batch of sparse 2D images: active sites and their features.

    Attributes:
        coords: (N, 3) int64 (event index in the batch, wire, tick) of the active sites, each
            site at most once; any order (outputs keep it).
        features: (N, C) float features of the sites.
        spatial_shape: (n_wires, n_ticks) of every image of the batch.
        cache: rulebooks of these sites, shared with every image made by :meth:`replace`.
    """

    coords: torch.Tensor
    features: torch.Tensor
    spatial_shape: tuple[int, int]
    cache: dict[Any, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_arrays(
        cls,
        coords: torch.Tensor,
        features: torch.Tensor,
        spatial_shape: tuple[int, int],
    ) -> SparseImage:
        """A checked :class:`SparseImage`: coords (N, 3) integer inside ``spatial_shape`` and
        non-negative events, features (N,) or (N, C); raises :class:`InputError` otherwise."""
        coords = torch.as_tensor(coords)
        features = torch.as_tensor(features)
        if features.ndim == 1:
            features = features[:, None]
        shape = tuple(int(s) for s in spatial_shape)
        if coords.ndim != 2 or coords.shape[1] != 3 or coords.dtype.is_floating_point:
            raise InputError(
                "coords must be (N, 3) integers (event, wire, tick)",
                field="coords",
                value=(tuple(coords.shape), str(coords.dtype)),
            )
        if features.ndim != 2 or features.shape[0] != coords.shape[0]:
            raise InputError(
                "features must be (N, C) with one row per site",
                field="features",
                value=(tuple(features.shape), tuple(coords.shape)),
            )
        if len(shape) != 2 or min(shape) < 1:
            raise InputError(
                "spatial_shape must be two sizes >= 1", field="spatial_shape", value=shape
            )
        coords = coords.long()
        if len(coords):
            low = coords.min(0).values
            high = coords[:, 1:].max(0).values
            if bool(low.min() < 0) or int(high[0]) >= shape[0] or int(high[1]) >= shape[1]:
                raise InputError(
                    "coords outside the image (events >= 0, 0 <= wire, tick < spatial_shape)",
                    field="coords",
                    value=(low.tolist(), high.tolist(), shape),
                )
            n_unique = len(torch.unique(linear_keys(coords, shape)))  # type: ignore[arg-type]
            if n_unique != len(coords):
                raise InputError(
                    "a site is listed more than once",
                    field="coords",
                    value=(len(coords), n_unique),
                )
        return cls(coords, features, shape)  # type: ignore[arg-type]

    @classmethod
    def from_dense(cls, dense: torch.Tensor) -> SparseImage:
        """The non-zero sites of a dense (B, C, H, W) batch (a site is active when any channel
        is non-zero), in row-major order."""
        active = (dense != 0).any(1)  # (B, H, W)
        coords = torch.nonzero(active)
        features = dense.permute(0, 2, 3, 1)[active]
        return cls(coords, features, (dense.shape[-2], dense.shape[-1]))

    def to_dense(self, batch_size: int | None = None) -> torch.Tensor:
        """The dense (B, C, H, W) batch, zeros off the active sites."""
        n = batch_size if batch_size is not None else self.batch_size
        out = self.features.new_zeros((n, *self.spatial_shape, self.n_channels))
        out[self.coords[:, 0], self.coords[:, 1], self.coords[:, 2]] = self.features
        return out.permute(0, 3, 1, 2)

    def replace(self, features: torch.Tensor) -> SparseImage:
        """The same sites (and rulebook cache) with new (N, C') features."""
        return SparseImage(self.coords, features, self.spatial_shape, self.cache)

    @property
    def n_points(self) -> int:
        return int(self.coords.shape[0])

    @property
    def n_channels(self) -> int:
        return int(self.features.shape[1])

    @property
    def batch_size(self) -> int:
        """Events in the batch: largest event index + 1 (0 when empty)."""
        return int(self.coords[:, 0].max()) + 1 if self.n_points else 0


# --------------------------------------------------------------------------------------------
# rulebooks
# --------------------------------------------------------------------------------------------
def linear_keys(coords: Any, spatial_shape: tuple[int, int]) -> Any:
    """(N,) int64 keys ``(event · H + wire) · W + tick`` of (N, 3) torch or numpy coords: unique
    per site, ordered like the row-major dense batch."""
    height, width = spatial_shape
    return (coords[:, 0] * height + coords[:, 1]) * width + coords[:, 2]


def submanifold_rulebook(
    coords: torch.Tensor, spatial_shape: tuple[int, int], kernel_size: int = 3
) -> torch.Tensor:
    """Neighbours of every site for a ``kernel_size`` × ``kernel_size`` submanifold convolution.

    On the CPU a numba sweep over the sorted keys (:func:`_submanifold_sweep`); elsewhere
    torch operations (:func:`submanifold_rulebook_torch`). Both give the same table.

    Returns:
        (N, kernel_size²) int64: entry [n, i · ks + j] is the index of the site at
        (wire + i - r, tick + j - r), r = ks // 2, or -1 where that pixel is not active or
        outside the image.
    """
    if coords.device.type != "cpu":
        return submanifold_rulebook_torch(coords, spatial_shape, kernel_size)
    height, width = spatial_shape
    keys = linear_keys(coords, spatial_shape).numpy()
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    wire = coords[:, 1].numpy()[order]
    tick = coords[:, 2].numpy()[order]
    found = _submanifold_sweep(sorted_keys, wire, tick, height, width, kernel_size)
    out = np.empty_like(found)
    out[order] = np.where(found >= 0, order[np.maximum(found, 0)], -1)
    return torch.from_numpy(out)


@numba.njit(cache=True, nogil=True)
def _submanifold_sweep(
    sorted_keys: np.ndarray,
    wire: np.ndarray,
    tick: np.ndarray,
    height: int,
    width: int,
    kernel_size: int,
) -> np.ndarray:  # pragma: no cover - compiled
    """(N, ks²) sorted positions of the neighbours of the sites of ``sorted_keys`` (-1: none).

    For each kernel row the window ``key + dw · W - r … key + dw · W + r`` moves forward with the
    key, so one pointer sweeps the sorted keys once per row: O(N · ks) with no search."""
    n = len(sorted_keys)
    r = kernel_size // 2
    found = np.full((n, kernel_size * kernel_size), -1, np.int64)
    for row in range(kernel_size):
        dw = row - r
        p = 0
        for i in range(n):
            centre = sorted_keys[i] + dw * width
            while p < n and sorted_keys[p] < centre - r:
                p += 1
            w = wire[i] + dw
            if w < 0 or w >= height:
                continue
            q = p
            while q < n and sorted_keys[q] <= centre + r:
                dt = sorted_keys[q] - centre
                t = tick[i] + dt
                if t >= 0 and t < width:
                    found[i, row * kernel_size + dt + r] = q
                q += 1
    return found


def submanifold_rulebook_torch(
    coords: torch.Tensor, spatial_shape: tuple[int, int], kernel_size: int = 3
) -> torch.Tensor:
    """:func:`submanifold_rulebook` in torch operations (any device).

    The keys are sorted once. The active pixels of a window of ``2 r + 1`` ticks on one wire
    hold consecutive sorted positions, so one ``torch.searchsorted`` per kernel row above the
    site (r = ks // 2) finds the first of them and the ``2 r + 1`` positions from there are the
    only candidates; on the site's own wire the candidates are the r positions before it. The
    taps below and after follow by symmetry (if m is n's neighbour at (dw, dt), n is m's at
    (-dw, -dt)) and the centre tap is the site itself.

    Returns:
        (N, kernel_size²) int64: entry [n, i · ks + j] is the index of the site at
        (wire + i - r, tick + j - r), r = ks // 2, or -1 where that pixel is not active or
        outside the image.
    """
    height, width = spatial_shape
    n, taps, r = len(coords), kernel_size**2, kernel_size // 2
    device = coords.device
    if n == 0:
        return torch.full((0, taps), -1, dtype=torch.long, device=device)
    sorted_keys, order = torch.sort(linear_keys(coords, spatial_shape))
    wire, tick = coords[:, 1].index_select(0, order), coords[:, 2].index_select(0, order)
    rows = torch.arange(n, device=device)
    # neighbours as sorted positions; row n (and tap 0) collects the invalid scatters
    found = torch.full((n + 1, taps), -1, dtype=torch.long, device=device)
    found[:n, taps // 2] = rows
    span = torch.arange(2 * r + 1, device=device)
    for dw in range(-r, 1):  # a loop over kernel rows, not points
        if dw < 0:
            first = torch.searchsorted(sorted_keys, sorted_keys + (dw * width - r))
            cand = first[:, None] + span  # (N, 2r + 1)
        else:
            cand = rows[:, None] - r + span[:r]  # (N, r): the r positions before
        safe = cand.clamp(0, n - 1)
        dt = torch.take(sorted_keys, safe) - (sorted_keys + dw * width)[:, None]
        ok = (cand >= 0) & (cand < n) & (dt.abs() <= r) & (tick[:, None] + dt >= 0)
        ok &= (
            (tick[:, None] + dt < width) & (wire[:, None] + dw >= 0) & (wire[:, None] + dw < height)
        )
        if dw == 0:
            ok &= dt < 0
        tap = torch.where(ok, (dw + r) * kernel_size + dt + r, 0)
        found.index_put_((torch.where(ok, rows[:, None], n), tap), torch.where(ok, safe, -1))
        found.index_put_((torch.where(ok, safe, n), taps - 1 - tap), rows[:, None].expand_as(tap))
    found = found[:n]
    out = torch.empty_like(found)
    out[order] = torch.where(found >= 0, order[found.clamp(min=0)], -1)
    return out


@dataclasses.dataclass(frozen=True)
class DownRulebook:
    """Fine sites -> coarse sites of a kernel = stride down-sampling.

    Attributes:
        coords: (M, 3) coarse sites ``unique((event, wire // sw, tick // st))`` in key order.
        spatial_shape: coarse (ceil(H / sw), ceil(W / st)).
        parent: (N,) coarse site of each fine site.
        offset: (N,) kernel tap of each fine site, ``(wire % sw) · st + tick % st``.
        children: (M, sw · st) fine site at each tap of each coarse site, -1 if inactive.
    """

    coords: torch.Tensor
    spatial_shape: tuple[int, int]
    parent: torch.Tensor
    offset: torch.Tensor
    children: torch.Tensor


def downsample_rulebook(
    coords: torch.Tensor, spatial_shape: tuple[int, int], stride: Stride = (2, 2)
) -> DownRulebook:
    """The :class:`DownRulebook` of a kernel = ``stride`` down-sampling of these sites (numpy
    on the CPU, where its many small steps cost less than as torch operations)."""
    coarse_shape = (-(-spatial_shape[0] // stride[0]), -(-spatial_shape[1] // stride[1]))
    if coords.device.type != "cpu":
        fields = _downsample_fields(coords, coarse_shape, stride, torch)
    else:
        fields = tuple(
            torch.from_numpy(np.ascontiguousarray(f, np.int64))
            for f in _downsample_fields(coords.numpy(), coarse_shape, stride, np)
        )
    out_coords, parent, offset, children = fields
    return DownRulebook(out_coords, coarse_shape, parent, offset, children)


def _downsample_fields(
    coords: Any, coarse_shape: tuple[int, int], stride: Stride, lib: Any
) -> tuple[Any, Any, Any, Any]:
    """Coarse coords, parent, offset, children of :class:`DownRulebook` with ``lib`` = numpy
    (numpy coords) or torch (tensors on any device)."""
    sw, st = stride
    coarse = lib.stack([coords[:, 0], coords[:, 1] // sw, coords[:, 2] // st], 1)
    keys, parent = lib.unique(linear_keys(coarse, coarse_shape), return_inverse=True)
    offset = (coords[:, 1] % sw) * st + coords[:, 2] % st
    on_device = {"device": coords.device} if lib is torch else {}
    children = lib.full((len(keys), sw * st), -1, dtype=lib.int64, **on_device)
    children[parent, offset] = lib.arange(len(coords), **on_device)
    height, width = coarse_shape
    out_coords = lib.stack([keys // (height * width), keys // width % height, keys % width], 1)
    return out_coords, parent, offset, children


def _cached(x: SparseImage, key: Any, make: Any) -> Any:
    if key not in x.cache:
        x.cache[key] = make()
    return x.cache[key]


def _down_rulebook(x: SparseImage, stride: Stride) -> DownRulebook:
    """The cached :class:`DownRulebook` of ``x``'s sites (shared by the down-sampling and the
    transposed convolution back onto them)."""
    return _cached(
        x, ("down", stride), lambda: downsample_rulebook(x.coords, x.spatial_shape, stride)
    )


def padded_index(index: torch.Tensor, n: int) -> torch.Tensor:
    """An (M, K) rulebook index flattened, -1 replaced by ``n`` (the zero row of
    :func:`gather_rows`): (M · K,)."""
    return torch.where(index >= 0, index, torch.full_like(index, n)).reshape(-1)


def gather_rows(
    features: torch.Tensor, index: torch.Tensor, flat: torch.Tensor | None = None
) -> torch.Tensor:
    """(N, C) features gathered at an (M, K) index with -1 read as a zero row: (M, K · C).

    ``flat`` is ``padded_index(index, N)`` when already known."""
    n, c = features.shape
    flat = padded_index(index, n) if flat is None else flat
    padded = torch.cat([features, features.new_zeros(1, c)])
    # index_select: several times faster than advanced indexing on the CPU
    return padded.index_select(0, flat).reshape(index.shape[0], index.shape[1] * c)


# --------------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------------
class _SparseConvBase(nn.Module):
    """Holds a (K, C_in, C_out) weight and a bias, initialised like ``nn.Conv2d``."""

    def __init__(self, in_channels: int, out_channels: int, taps: int, bias: bool, fan_in: int):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.weight = nn.Parameter(torch.empty(taps, in_channels, out_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        bound = 1 / math.sqrt(max(fan_in, 1))  # = kaiming_uniform(a=sqrt(5)) of nn.Conv2d
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def _matmul(self, gathered: torch.Tensor) -> torch.Tensor:
        weight = self.weight.reshape(-1, self.out_channels)
        if self.bias is None:
            return gathered @ weight
        return torch.addmm(self.bias, gathered, weight)

    def _check(self, x: SparseImage) -> None:
        if x.n_channels != self.in_channels:
            raise InputError(
                f"{type(self).__name__} expects {self.in_channels} input channels",
                field="features",
                value=x.n_channels,
            )


class SubMConv2d(_SparseConvBase):
    """Submanifold ``kernel_size`` × ``kernel_size`` convolution (stride 1, 'same'): the output
    lives on the input's sites; equals ``conv2d(dense, padding=ks // 2)`` read at the sites.

    Shapes: features (N, C_in) -> (N, C_out), same coords.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True
    ) -> None:
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise InputError("kernel_size must be odd", field="kernel_size", value=kernel_size)
        taps = kernel_size**2
        super().__init__(in_channels, out_channels, taps, bias, in_channels * taps)
        self.kernel_size = kernel_size

    def forward(self, x: SparseImage) -> SparseImage:
        self._check(x)
        k = self.kernel_size
        neighbours = _cached(
            x, ("subm", k), lambda: submanifold_rulebook(x.coords, x.spatial_shape, k)
        )
        flat = _cached(x, ("subm_flat", k), lambda: padded_index(neighbours, x.n_points))
        return x.replace(self._matmul(gather_rows(x.features, neighbours, flat)))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"


class SparseDownConv2d(_SparseConvBase):
    """Convolution with kernel = stride = ``stride`` (wires, ticks): output sites are the coarse
    cells holding active sites; equals ``conv2d(dense, kernel=stride, stride=stride)`` (the
    dense image zero padded to a multiple of the stride) read at those cells.

    Shapes: (N, C_in) -> (M, C_out) on the coarse sites, a new rulebook cache.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: Stride = (2, 2), bias: bool = True
    ) -> None:
        self.stride = (int(stride[0]), int(stride[1]))
        taps = self.stride[0] * self.stride[1]
        super().__init__(in_channels, out_channels, taps, bias, in_channels * taps)

    def forward(self, x: SparseImage) -> SparseImage:
        self._check(x)
        book = _down_rulebook(x, self.stride)
        flat = _cached(
            x, ("down_flat", self.stride), lambda: padded_index(book.children, x.n_points)
        )
        out = self._matmul(gather_rows(x.features, book.children, flat))
        return SparseImage(book.coords, out, book.spatial_shape)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class SparseUpConv2d(_SparseConvBase):
    """Transposed convolution with kernel = stride = ``stride`` from the coarse sites of a
    :class:`SparseDownConv2d` onto the fine sites it came from (``target``); equals
    ``conv_transpose2d(dense, kernel=stride, stride=stride)`` read at the fine sites.

    ``x`` must hold the coarse sites in the order the down-sampling of ``target`` made them
    (the order of :func:`downsample_rulebook`).

    Shapes: (M, C_in) coarse -> (N, C_out) on ``target``'s sites.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: Stride = (2, 2), bias: bool = True
    ) -> None:
        self.stride = (int(stride[0]), int(stride[1]))
        taps = self.stride[0] * self.stride[1]
        # nn.ConvTranspose2d's initialisation counts C_out · K as the fan-in
        super().__init__(in_channels, out_channels, taps, bias, out_channels * taps)

    def forward(self, x: SparseImage, target: SparseImage) -> SparseImage:
        self._check(x)
        book = _down_rulebook(target, self.stride)
        if book.coords.shape[0] != x.n_points:
            raise InputError(
                "the coarse sites are not the down-sampling of the target's sites",
                field="target",
                value=(x.n_points, int(book.coords.shape[0])),
            )
        taps = self.weight.shape[0]
        # every coarse site through every tap: (M, C_in) @ (C_in, K · C_out), then each fine
        # site reads its parent's row at its own tap
        weight = self.weight.permute(1, 0, 2).reshape(self.in_channels, -1)
        every = (x.features @ weight).reshape(x.n_points, taps, self.out_channels)
        out = every.reshape(-1, self.out_channels).index_select(0, book.parent * taps + book.offset)
        if self.bias is not None:
            out = out + self.bias
        return target.replace(out)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class SparseBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the active sites' features. In training, a batch of fewer than two sites
    (no variance to measure) is normalised with the running statistics instead of failing."""

    def forward(self, x: SparseImage) -> SparseImage:  # type: ignore[override]
        if self.training and x.n_points < 2:
            return x.replace(
                nn.functional.batch_norm(
                    x.features, self.running_mean, self.running_var, self.weight, self.bias,
                    False, 0.0, self.eps,
                )
            )  # fmt: skip
        return x.replace(super().forward(x.features))


class SparseReLU(nn.Module):
    """ReLU of the features; ``inplace`` overwrites them (after a BatchNorm, whose output
    nothing else reads)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: SparseImage) -> SparseImage:
        return x.replace(torch.relu_(x.features) if self.inplace else torch.relu(x.features))


class SparseLinear(nn.Linear):
    """A linear map of the features (a 1 × 1 convolution)."""

    def forward(self, x: SparseImage) -> SparseImage:  # type: ignore[override]
        return x.replace(super().forward(x.features))


def sparse_cat(*images: SparseImage) -> SparseImage:
    """Features of images on the same sites concatenated along the channels."""
    first = images[0]
    for other in images[1:]:
        if other.coords is not first.coords and not torch.equal(other.coords, first.coords):
            raise InputError(
                "images to concatenate must have the same sites",
                field="coords",
                value=(first.n_points, other.n_points),
            )
    return first.replace(torch.cat([im.features for im in images], dim=1))
