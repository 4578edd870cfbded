"""The sparse-convolution toolkit against torch's dense layers: submanifold 3×3 convolution,
kernel = stride down-sampling and its transposed up-sampling, on batches of several events
(one of them empty), with gradients; rulebooks; the sparse U-Net's per-site outputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fastreco.errors import InputError
from fastreco.models.sparse import (
    SparseBatchNorm,
    SparseDownConv2d,
    SparseImage,
    SparseUpConv2d,
    SubMConv2d,
    _downsample_fields,
    downsample_rulebook,
    submanifold_rulebook,
    submanifold_rulebook_torch,
)

SHAPE = (12, 20)  # (wires, ticks), multiples of the strides tested


def random_batch(
    n_events: int = 3, occupancy: float = 0.15, channels: int = 3, empty: int | None = 1
) -> tuple[torch.Tensor, SparseImage]:
    """A dense (B, C, H, W) batch with ``occupancy`` of its pixels active (event ``empty`` has
    none) and the same batch as a :class:`SparseImage`, sites in shuffled order."""
    gen = torch.Generator().manual_seed(11)
    active = torch.rand(n_events, *SHAPE, generator=gen) < occupancy
    if empty is not None:
        active[empty] = False
    dense = torch.randn(n_events, channels, *SHAPE, generator=gen) * active[:, None]
    sparse = SparseImage.from_dense(dense)
    perm = torch.randperm(sparse.n_points, generator=gen)
    shuffled = SparseImage.from_arrays(sparse.coords[perm], sparse.features[perm], SHAPE)
    return dense, shuffled


def at_sites(dense: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """(N, C) values of a dense (B, C, H, W) batch at the sites."""
    return dense[coords[:, 0], :, coords[:, 1], coords[:, 2]]


@pytest.mark.parametrize("kernel", [3, 5])
def test_submanifold_conv_equals_dense_conv_at_the_active_sites(kernel):
    dense, x = random_batch()
    torch.manual_seed(0)
    conv = SubMConv2d(3, 5, kernel)
    weight = conv.weight.detach().permute(2, 1, 0).reshape(5, 3, kernel, kernel)  # (co, ci, i, j)
    ref = F.conv2d(dense, weight, conv.bias.detach(), padding=kernel // 2)
    out = conv(x)
    assert torch.equal(out.coords, x.coords)
    torch.testing.assert_close(out.features, at_sites(ref, x.coords), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("stride", [(2, 2), (2, 4), (1, 5)])
def test_down_conv_equals_strided_dense_conv(stride):
    dense, x = random_batch()
    torch.manual_seed(1)
    conv = SparseDownConv2d(3, 4, stride)
    sw, st = stride
    weight = conv.weight.detach().permute(2, 1, 0).reshape(4, 3, sw, st)
    ref = F.conv2d(dense, weight, conv.bias.detach(), stride=stride)
    out = conv(x)
    # output sites: exactly the coarse cells holding an active site
    occupied = F.max_pool2d((dense != 0).any(1, keepdim=True).float(), stride, stride)[:, 0]
    assert sorted(map(tuple, out.coords.tolist())) == sorted(
        map(tuple, torch.nonzero(occupied).tolist())
    )
    assert out.spatial_shape == (SHAPE[0] // sw, SHAPE[1] // st)
    torch.testing.assert_close(out.features, at_sites(ref, out.coords), atol=1e-5, rtol=1e-5)


def test_down_conv_pads_odd_sizes_like_a_zero_padded_image():
    shape = (7, 9)
    gen = torch.Generator().manual_seed(5)
    dense = torch.randn(2, 2, *shape, generator=gen) * (
        torch.rand(2, 1, *shape, generator=gen) < 0.4
    )
    x = SparseImage.from_dense(dense)
    conv = SparseDownConv2d(2, 3)
    weight = conv.weight.detach().permute(2, 1, 0).reshape(3, 2, 2, 2)
    ref = F.conv2d(F.pad(dense, (0, 1, 0, 1)), weight, conv.bias.detach(), stride=2)
    out = conv(x)
    assert out.spatial_shape == (4, 5)
    torch.testing.assert_close(out.features, at_sites(ref, out.coords), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("stride", [(2, 2), (2, 4)])
def test_up_conv_equals_transposed_dense_conv_at_the_fine_sites(stride):
    _, fine = random_batch()
    torch.manual_seed(2)
    down = SparseDownConv2d(3, 6, stride)
    coarse = down(fine)
    up = SparseUpConv2d(6, 4, stride)
    out = up(coarse, fine)
    sw, st = stride
    weight = up.weight.detach().permute(1, 2, 0).reshape(6, 4, sw, st)  # (ci, co, i, j)
    ref = F.conv_transpose2d(coarse.to_dense(3), weight, up.bias.detach(), stride=stride)
    assert torch.equal(out.coords, fine.coords)
    torch.testing.assert_close(out.features, at_sites(ref, fine.coords), atol=1e-5, rtol=1e-5)


def test_gradients_flow_through_every_layer():
    _, x = random_batch()
    features = x.features.clone().requires_grad_(True)
    x = x.replace(features)
    subm, down, up = SubMConv2d(3, 4), SparseDownConv2d(4, 8), SparseUpConv2d(8, 4)
    norm = SparseBatchNorm(4)
    h = norm(subm(x))
    out = up(down(h), h)
    out.features.square().sum().backward()
    for p in [features, *subm.parameters(), *down.parameters(), *up.parameters()]:
        assert p.grad is not None
        assert torch.isfinite(p.grad).all()
        assert p.grad.abs().sum() > 0
    # autograd agrees with finite differences (float64)
    conv = SubMConv2d(3, 2).double()
    x64 = x.replace(x.features.detach().double().requires_grad_(True))
    assert torch.autograd.gradcheck(lambda f: conv(x64.replace(f)).features, (x64.features,))


def test_empty_events_and_empty_batches():
    _, x = random_batch(empty=1)
    assert set(x.coords[:, 0].tolist()) == {0, 2}  # event 1 has no sites and needs no special case
    empty = SparseImage.from_arrays(torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, 3), SHAPE)
    for layer in (SubMConv2d(3, 4), SparseDownConv2d(3, 4)):
        assert layer(empty).features.shape == (0, 4)
    coarse = SparseDownConv2d(3, 4)(empty)
    assert SparseUpConv2d(4, 2)(coarse, empty).features.shape == (0, 2)
    norm = SparseBatchNorm(3).train()
    assert norm(empty).features.shape == (0, 3)
    one = SparseImage.from_arrays(torch.tensor([[0, 1, 1]]), torch.ones(1, 3), SHAPE)
    assert norm(one).features.shape == (1, 3)  # one site: running statistics, no error


def test_rulebooks():
    coords = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 1, 1], [1, 0, 1], [0, 3, 5]])
    nbr = submanifold_rulebook(coords, (4, 6))
    assert nbr.shape == (5, 9)
    assert nbr[:, 4].tolist() == [0, 1, 2, 3, 4]  # the centre tap is the site itself
    assert nbr[0].tolist() == [-1, -1, -1, -1, 0, 1, -1, -1, 2]
    assert (nbr[3] >= 0).sum() == 1  # event 1's site sees no site of event 0
    assert (nbr[4] >= 0).sum() == 1  # at the corner: out-of-image taps are -1
    book = downsample_rulebook(coords, (4, 6))
    assert book.coords.tolist() == [[0, 0, 0], [0, 1, 2], [1, 0, 0]]
    assert book.parent.tolist() == [0, 0, 0, 2, 1]
    assert book.offset.tolist() == [0, 1, 3, 1, 3]
    assert book.children[0].tolist() == [0, 1, -1, 2]


def test_rulebooks_are_cached_per_level():
    _, x = random_batch()
    conv = SubMConv2d(3, 3)
    y = conv(conv(x))
    assert y.cache is x.cache
    assert ("subm", 3) in x.cache
    coarse = SparseDownConv2d(3, 3)(y)
    assert coarse.cache is not x.cache
    assert ("down", (2, 2)) in x.cache


def test_bad_sparse_input_is_named():
    with pytest.raises(InputError, match="coords"):
        SparseImage.from_arrays(torch.zeros(4, 2, dtype=torch.long), torch.zeros(4, 1), SHAPE)
    with pytest.raises(InputError, match="outside"):
        SparseImage.from_arrays(torch.tensor([[0, 12, 0]]), torch.zeros(1, 1), SHAPE)
    with pytest.raises(InputError, match="more than once"):
        SparseImage.from_arrays(torch.tensor([[0, 1, 2], [0, 1, 2]]), torch.zeros(2, 1), SHAPE)
    with pytest.raises(InputError, match="features"):
        SparseImage.from_arrays(torch.tensor([[0, 1, 2]]), torch.zeros(2, 1), SHAPE)
    _, x = random_batch()
    with pytest.raises(InputError, match="input channels"):
        SubMConv2d(4, 2)(x)
    with pytest.raises(InputError, match="down-sampling"):
        SparseUpConv2d(3, 2)(x, x)


# --------------------------------------------------------------------------------------------
# the sparse U-Net
# --------------------------------------------------------------------------------------------
def test_sparse_unet_scores_every_site_and_events_do_not_mix():
    from fastreco.models import MODELS, build_model

    torch.manual_seed(0)
    model = build_model(
        "lartpc-sparse-unet", (1, *SHAPE), 4, width=4, depth=2, reps=1, tick_factor=2
    ).eval()
    assert "lartpc-sparse-unet" in MODELS  # registered by the registry's built-in modules
    _, x = random_batch(channels=1)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (x.n_points, 4)
        assert torch.isfinite(out).all()
        # event 2 alone (as event 0) gets the same scores as inside the batch
        sel = x.coords[:, 0] == 2
        alone = SparseImage.from_arrays(
            x.coords[sel] * torch.tensor([0, 1, 1]), x.features[sel], SHAPE
        )
        torch.testing.assert_close(model(alone), out[sel], atol=1e-5, rtol=1e-5)
        empty = SparseImage.from_arrays(
            torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, 1), SHAPE
        )
        assert model(empty).shape == (0, 4)
    with pytest.raises(InputError, match="feature channel"):
        model(x.replace(torch.zeros(x.n_points, 2)))
    with pytest.raises(InputError, match="depth"):
        build_model("lartpc-sparse-unet", (1, *SHAPE), 4, depth=0)


def test_sparse_unet_scales_the_adc_like_the_other_models():
    from fastreco.models.lartpc import DEFAULT_INPUT_SCALE
    from fastreco.models.lartpc_sparse import SparseUResNet

    torch.manual_seed(1)
    model = SparseUResNet((1, *SHAPE), width=4, depth=1).eval()
    assert model.input_scale == DEFAULT_INPUT_SCALE
    _, x = random_batch(channels=1)
    scaled = SparseUResNet((1, *SHAPE), width=4, depth=1, input_scale=1.0).eval()
    scaled.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model(x), scaled(x.replace(x.features * DEFAULT_INPUT_SCALE)))


def test_sparse_unet_learns_isolated_pixels_from_lines():
    """A few steps on toy events: isolated pixels ('none') against lines ('track')."""
    from fastreco.models.lartpc import pixel_id_loss
    from fastreco.models.lartpc_sparse import SparseUResNet

    gen = torch.Generator().manual_seed(4)
    coords, label = [], []
    for event in range(4):
        row = int(torch.randint(0, SHAPE[0], (1,), generator=gen))
        line = [(event, row, t) for t in range(2, 18)]
        noise = [(event, (row + 5) % SHAPE[0], t) for t in range(0, 20, 4)]
        coords += line + noise
        label += [0] * len(line) + [2] * len(noise)
    x = SparseImage.from_arrays(torch.tensor(coords), torch.full((len(coords), 1), 80.0), SHAPE)
    label = torch.tensor(label)
    torch.manual_seed(0)
    model = SparseUResNet((1, *SHAPE), width=4, depth=2)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    losses = []
    for _ in range(30):
        loss = pixel_id_loss(model(x), label, torch.zeros(len(label)), weights=(1.0, 1.0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    with torch.no_grad():
        assert (model.eval()(x)[:, :3].argmax(1) == label).float().mean() > 0.95


@pytest.mark.parametrize("kernel", [3, 5])
def test_cpu_rulebooks_equal_the_torch_ones_used_on_other_devices(kernel):
    """The numba / numpy rulebooks of the CPU and the torch ones (CUDA) give the same tables."""
    _, x = random_batch(n_events=4, occupancy=0.3)
    assert torch.equal(
        submanifold_rulebook(x.coords, SHAPE, kernel),
        submanifold_rulebook_torch(x.coords, SHAPE, kernel),
    )
    for stride in [(2, 2), (2, 8), (3, 1)]:
        cpu = downsample_rulebook(x.coords, SHAPE, stride)
        coarse_shape = cpu.spatial_shape
        ref = _downsample_fields(x.coords, coarse_shape, stride, torch)
        for got, want in zip((cpu.coords, cpu.parent, cpu.offset, cpu.children), ref, strict=True):
            assert torch.equal(got, want)


def test_sparse_unet_channel_growth():
    from fastreco.models.lartpc_sparse import SparseUResNet

    def widths(model: SparseUResNet) -> list[int]:
        return [blocks[0].body[2].out_channels for blocks in model.encoder]

    assert widths(SparseUResNet(width=16, depth=3)) == [16, 32, 48, 64]  # UResNet's growth
    assert widths(SparseUResNet(width=16, depth=3, growth=8)) == [16, 24, 32, 40]
    with pytest.raises(InputError, match="growth"):
        SparseUResNet(growth=-1)
