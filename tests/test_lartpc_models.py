"""LArTPC pixel-ID networks: the seed's patch CNN, its exact dense equivalent, the U-Net, the
two-head loss, ONNX parity and a tiny training on synthetic lines (tracks) vs blobs (showers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastreco.deploy.onnx import INPUT_NAME, export_module
from fastreco.errors import InputError
from fastreco.models import build_model
from fastreco.models.lartpc import (
    CLASS_LOSS_WEIGHT,
    MICHEL_LOSS_WEIGHT,
    PatchCNN,
    PixelUNet,
    dense_patch_cnn,
    hit_tiles,
    pixel_id_loss,
    unet_halo,
    unet_receptive_radius,
    unet_scores_at,
)

TRACK, EM, NONE = 0, 1, 2


def synthetic_event(
    rng: np.random.Generator, shape: tuple[int, int], n_tracks: int = 3, n_showers: int = 2
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A toy (wire, tick) ADC image: straight lines as tracks, Gaussian blobs of scattered pixels
    as showers, a short kinked stub after some tracks as a Michel electron.

    Returns:
        image (H, W) float32 ADC, class (H, W) int64 (2 = none), Michel flag (H, W) float32.
    """
    h, w = shape
    image = np.zeros(shape, np.float32)
    cls = np.full(shape, NONE, np.int64)
    michel = np.zeros(shape, np.float32)

    def line(r0: float, c0: float, angle: float, length: float) -> tuple[np.ndarray, np.ndarray]:
        t = np.arange(0.0, length, 0.5)
        r = np.round(r0 + t * np.sin(angle)).astype(int)
        c = np.round(c0 + t * np.cos(angle)).astype(int)
        ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        return r[ok], c[ok]

    for _ in range(n_tracks):
        r0, c0 = rng.uniform(0, h), rng.uniform(0, w)
        angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 0.8) * min(h, w)
        r, c = line(r0, c0, angle, length)
        image[r, c] = rng.uniform(60, 120, len(r))
        cls[r, c] = TRACK
        if len(r) and rng.random() < 0.5:
            mr, mc = line(r[-1], c[-1], angle + rng.uniform(1, 2), 6)
            image[mr, mc] = rng.uniform(40, 90, len(mr))
            cls[mr, mc] = EM
            michel[mr, mc] = 1.0
    for _ in range(n_showers):
        centre = rng.uniform((0, 0), (h, w))
        spots = centre + rng.normal(0, rng.uniform(2.5, 5.0), (int(rng.integers(40, 90)), 2))
        r, c = np.round(spots).astype(int).T
        ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        image[r[ok], c[ok]] = rng.lognormal(3.5, 0.7, ok.sum()).astype(np.float32)
        cls[r[ok], c[ok]] = EM
        michel[r[ok], c[ok]] = 0.0
    return image, cls, michel


def patches_at(image: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, size: int):
    """(n, 1, size, size) zero-padded patches; pixel (r, c) sits at index size // 2."""
    before = size // 2
    padded = F.pad(image.reshape(1, 1, *image.shape[-2:]), (before, size - 1 - before) * 2)[0, 0]
    r = rows[:, None] + torch.arange(size)
    c = cols[:, None] + torch.arange(size)
    return padded[r[:, :, None], c[:, None, :]][:, None]


def _hits_with_borders(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = image.shape[-2:]
    corners = [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1), (1, w // 2), (h // 2, w - 2)]
    for r, c in corners:
        image[r, c] = 150.0
    return torch.nonzero(image > 0, as_tuple=True)


def test_patch_cnn_shapes_and_bad_outputs():
    model = build_model("lartpc-patch-cnn", (1, 32, 32), 4)
    assert isinstance(model, PatchCNN)
    assert model(torch.rand(5, 1, 32, 32) * 100).shape == (5, 4)
    with pytest.raises(InputError, match="n_outputs"):
        PatchCNN((1, 32, 32), n_outputs=1)
    with pytest.raises(InputError, match="too small"):
        PatchCNN((1, 8, 8))


@pytest.mark.parametrize(("size", "centre"), [(32, None), (31, None), (32, 15)])
def test_dense_equivalent_equals_patch_cnn_at_every_hit(size, centre):
    """The dense network gives, at each hit, the patch CNN's four scores within 1e-4 —
    including hits at the image corners whose patches are zero padded. Size 31 makes the
    pools drop a row (floor), centre 15 is the other convention for even patches."""
    torch.manual_seed(0)
    model = PatchCNN((1, size, size)).eval()
    image, _, _ = synthetic_event(np.random.default_rng(1), (45, 83))
    x = torch.from_numpy(image)
    rows, cols = _hits_with_borders(x)
    dense = dense_patch_cnn(model, centre)
    c = size // 2 if centre is None else centre
    padded = F.pad(x, (c, size - 1 - c) * 2)
    patches = torch.stack(
        [padded[r : r + size, q : q + size] for r, q in zip(rows, cols, strict=True)]
    )
    with torch.no_grad():
        expected = model(patches[:, None])  # (n, 4)
        full = dense(x[None, None])  # (1, 4, H, W)
    assert full.shape == (1, 4, *x.shape)
    assert expected.std(0).min() > 1e-3  # the scores differ between hits: not a vacuous match
    np.testing.assert_allclose(full[0][:, rows, cols].T, expected, atol=1e-4, rtol=0)
    tiled = dense.score_map(x[None, None], tile=17)
    np.testing.assert_allclose(tiled, full, atol=1e-5, rtol=0)
    np.testing.assert_allclose(dense.scores_at(x, rows, cols, tile=19), expected, atol=1e-4, rtol=0)
    with pytest.raises(InputError, match="inside the image"):
        dense.scores_at(x, rows + x.shape[0], cols)


def test_dense_equivalent_of_a_trained_model_after_dropout_training_mode():
    model = PatchCNN((1, 16, 16), filters=(4,), kernels=(3,), dense=(8,))
    model.train()  # dense_patch_cnn drops dropout; the patch model must be compared in eval
    dense = dense_patch_cnn(model)
    x = torch.rand(1, 1, 20, 24) * 100
    rows, cols = torch.nonzero(torch.ones(20, 24), as_tuple=True)
    with torch.no_grad():
        expected = model.eval()(patches_at(x, rows, cols, 16))
        got = dense(x)[0][:, rows, cols].T
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("tick_factor", [1, 4])
@pytest.mark.parametrize("shape", [(5, 7), (37, 101), (64, 64), (9, 200)])
def test_unet_any_height_and_width(shape, tick_factor):
    model = build_model("lartpc-unet", (1, 64, 64), 4, tick_factor=tick_factor).eval()
    assert isinstance(model, PixelUNet)
    with torch.no_grad():
        assert model(torch.rand(2, 1, *shape)).shape == (2, 4, *shape)


@pytest.mark.parametrize(
    ("tick_factor", "shift", "margin", "n_ticks"), [(1, 8, 48, 144), (4, 32, 192, 448)]
)
def test_unet_translation_equivariant_in_the_interior(tick_factor, shift, margin, n_ticks):
    """Shifting the event by (8 wires, 2**depth * tick_factor ticks) shifts the scores, away from
    the borders (margins 48 wires and 48 * tick_factor ticks exceed the receptive-field radii
    of the default depth 3: 46 and 46 resp. 184)."""
    torch.manual_seed(0)
    model = PixelUNet(input_scale=1.0, tick_factor=tick_factor).eval()
    x = torch.zeros(1, 1, 128, n_ticks)
    x[..., 40:88, margin - 8 : n_ticks - margin + 8] = torch.rand(48, n_ticks - 2 * margin + 16)
    shifted = torch.roll(x, (8, shift), dims=(-2, -1))
    with torch.no_grad():
        out, out_shifted = model(x), model(shifted)
    a = out[..., 48:72, margin : n_ticks - margin - shift]
    b = out_shifted[..., 56:80, margin + shift : n_ticks - margin]
    assert a.numel() > 0
    assert a.std() > 1e-3
    np.testing.assert_allclose(b, a, atol=1e-5, rtol=0)


def test_loss_is_the_seed_weighted_sum_and_respects_the_mask():
    assert (CLASS_LOSS_WEIGHT, MICHEL_LOSS_WEIGHT) == (0.1, 1.0)  # seed 004 loss_weights
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 6, 5, generator=gen)
    cls = torch.randint(0, 3, (2, 6, 5), generator=gen)
    michel = (torch.rand(2, 6, 5, generator=gen) > 0.7).float()
    flat = logits.movedim(1, -1).reshape(-1, 4)
    ce = F.cross_entropy(flat[:, :3], cls.flatten())
    bce = F.binary_cross_entropy_with_logits(flat[:, 3], michel.flatten())
    torch.testing.assert_close(pixel_id_loss(logits, cls, michel), 0.1 * ce + bce)
    torch.testing.assert_close(pixel_id_loss(logits, cls, michel, weights=(1.0, 0.0)), ce)

    mask = torch.rand(2, 6, 5, generator=gen) > 0.5
    masked = pixel_id_loss(logits, cls, michel, mask)
    # logits outside the mask do not count
    changed = logits + 100.0 * (~mask)[:, None] * torch.randn(logits.shape, generator=gen)
    torch.testing.assert_close(pixel_id_loss(changed, cls, michel, mask), masked)
    keep = mask.flatten()
    expected = 0.1 * F.cross_entropy(flat[keep, :3], cls.flatten()[keep])
    expected = expected + F.binary_cross_entropy_with_logits(flat[keep, 3], michel.flatten()[keep])
    torch.testing.assert_close(masked, expected)
    assert pixel_id_loss(logits, cls, michel, torch.zeros_like(mask)).item() == 0.0

    weights = torch.tensor([1.0, 5.0, 0.2])
    got = pixel_id_loss(logits, cls, michel, weights=(1.0, 0.0), class_weights=weights)
    torch.testing.assert_close(got, F.cross_entropy(flat[:, :3], cls.flatten(), weight=weights))
    # per-patch logits (B, 4) work the same way
    torch.testing.assert_close(pixel_id_loss(flat, cls.flatten(), michel.flatten()), 0.1 * ce + bce)
    with pytest.raises(InputError, match="targets"):
        pixel_id_loss(logits, cls[:1], michel)


@pytest.fixture(scope="module")
def ort():
    return pytest.importorskip("onnxruntime")


def test_onnx_patch_cnn_dynamic_batch(tmp_path, ort):
    torch.manual_seed(0)
    model = PatchCNN().eval()
    path = export_module(model, (1, 32, 32), tmp_path / "patch.onnx", verify=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert isinstance(session.get_inputs()[0].shape[0], str)
    image, _, _ = synthetic_event(np.random.default_rng(2), (60, 200), 6, 4)
    x = torch.from_numpy(image)
    rows, cols = torch.nonzero(x > 0, as_tuple=True)
    patches = patches_at(x, rows, cols, 32)
    for n in (1, 7, len(patches)):
        with torch.no_grad():
            expected = model(patches[:n]).numpy()
        got = session.run(None, {INPUT_NAME: patches[:n].numpy()})[0]
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_onnx_dense_and_unet_dynamic_height_width(tmp_path, ort):
    torch.manual_seed(0)
    patch = PatchCNN((1, 16, 16), filters=(4, 8), kernels=(3, 3), dense=(16,)).eval()
    models = {
        "dense": dense_patch_cnn(patch),
        "unet": PixelUNet(width=4, depth=2).eval(),
        "unet-ticks/4": PixelUNet(width=4, depth=2, tick_factor=4).eval(),
    }
    rng = np.random.default_rng(3)
    images = [synthetic_event(rng, shape)[0] for shape in ((40, 72), (53, 131))]
    for name, model in models.items():
        path = export_module(
            model,
            (1, 40, 56),
            tmp_path / f"{name}.onnx",
            verify=False,
            dynamic_spatial=True,
            min_spatial=getattr(model, "min_input_size", (2, 2)),
        )
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert all(isinstance(d, str) for d in session.get_inputs()[0].shape[2:])
        for image in images:
            x = image[None, None]
            with torch.no_grad():
                expected = model(torch.from_numpy(x)).numpy()
            got = session.run(None, {INPUT_NAME: x})[0]
            assert got.shape == (1, 4, *image.shape)
            np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4, err_msg=name)


def balanced_accuracy(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean of the track and EM recalls (the toy has about 35 % track, 65 % EM hits)."""
    return float(np.mean([(pred[target == k] == k).float().mean().item() for k in (TRACK, EM)]))


def _sample(seed: int, n_events: int, shape: tuple[int, int]):
    rng = np.random.default_rng(seed)
    events = [synthetic_event(rng, shape, n_tracks=3, n_showers=2) for _ in range(n_events)]
    images, cls, michel = (torch.from_numpy(np.stack(a)) for a in zip(*events, strict=True))
    return images[:, None], cls, michel


def test_patch_cnn_learns_lines_vs_blobs():
    torch.manual_seed(0)
    images, cls, michel = _sample(10, 12, (48, 48))
    ev, rows, cols = torch.nonzero(images[:, 0] > 0, as_tuple=True)
    x = torch.cat([patches_at(images[e, 0], rows[ev == e], cols[ev == e], 16) for e in range(12)])
    y, m = cls[ev, rows, cols], michel[ev, rows, cols]
    n_train = int(0.75 * len(x))
    model = PatchCNN((1, 16, 16), filters=(8, 16), kernels=(3, 3), dense=(32, 16), dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(12):
        for idx in torch.randperm(n_train, generator=gen).split(64):
            loss = pixel_id_loss(model(x[idx]), y[idx], m[idx], weights=(1.0, 1.0))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        pred = model(x[n_train:])[:, :3].argmax(1)
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])
    accuracy = balanced_accuracy(pred, y[n_train:])
    assert accuracy > 0.75, accuracy  # chance: 0.5


def test_unet_learns_lines_vs_blobs_on_hit_pixels():
    torch.manual_seed(0)
    images, cls, michel = _sample(20, 40, (48, 48))
    n_train = 32
    model = PixelUNet(width=4, depth=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        idx = torch.randint(0, n_train, (8,), generator=gen)
        hits = images[idx, 0] > 0  # the loss counts hit pixels only
        loss = pixel_id_loss(model(images[idx]), cls[idx], michel[idx], hits, (1.0, 1.0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        pred = model(images[n_train:])[:, :3].argmax(1)
    hits = images[n_train:, 0] > 0
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    accuracy = balanced_accuracy(pred[hits], cls[n_train:][hits])
    assert accuracy > 0.75, accuracy  # chance: 0.5


def _randomise_batch_norm(model: torch.nn.Module) -> None:
    """Running statistics away from (0, 1), so that eval-mode BatchNorm is not the identity."""
    gen = torch.Generator().manual_seed(3)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.num_features, generator=gen) - 0.5)
            module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)


@pytest.mark.parametrize(("depth", "tick_factor"), [(2, 1), (3, 4)])
def test_unet_receptive_radius_bounds_the_measured_one(depth, tick_factor):
    """With all weights positive no ReLU is dead, so the input-gradient support of one output
    pixel is the receptive field: it never exceeds the bound, which is attained along wires."""
    torch.manual_seed(0)
    model = PixelUNet(width=4, depth=depth, tick_factor=tick_factor, norm=False).eval()
    for p in model.parameters():
        torch.nn.init.uniform_(p, 0.01, 0.1)
    radius = unet_receptive_radius(model)
    size = (4 * radius[0], 4 * radius[1])
    x = torch.ones(1, 1, *size, requires_grad=True)
    seen = [0, 0]
    for k in range(2**depth):  # every offset to the pooling grid
        r, c = size[0] // 2 + k, size[1] // 2 + k * tick_factor + k % tick_factor
        model(x)[0, 0, r, c].backward()
        rows, cols = torch.nonzero(x.grad[0, 0], as_tuple=True)
        seen = [
            max(seen[0], int((rows - r).abs().max())),
            max(seen[1], int((cols - c).abs().max())),
        ]
        x.grad = None
    assert seen[0] == radius[0]
    assert radius[1] - 2 * tick_factor**2 <= seen[1] <= radius[1]
    halo = unet_halo(model)
    assert all(
        h >= r and h % a == 0 for h, r, a in zip(halo, radius, model.min_input_size, strict=True)
    )


@pytest.mark.parametrize(("depth", "tick_factor", "shape"), [(2, 1, (75, 301)), (3, 4, (101, 803))])
def test_unet_scores_at_hit_tiles_equal_the_whole_image(depth, tick_factor, shape):
    """Hit-tile inference equals the whole-image forward at every hit within 1e-4 (eval-mode
    BatchNorm is pixel by pixel): hits in the four corners, on all borders and in several
    separate tiles of an image whose size is no multiple of the alignment; sparse hits leave
    most tiles unprocessed."""
    torch.manual_seed(0)
    model = PixelUNet(width=4, depth=depth, tick_factor=tick_factor).eval()
    _randomise_batch_norm(model)
    rng = np.random.default_rng(2)
    h, w = shape
    image = np.zeros(shape, np.float32)
    wires = np.r_[0, 0, h - 1, h - 1, h // 2, 1, h - 2, rng.integers(0, h, 12)]
    ticks = np.r_[0, w - 1, 0, w - 1, w // 2, w - 3, 2, rng.integers(0, w, 12)]
    image[wires, ticks] = rng.uniform(20, 200, len(wires))
    wires, ticks = np.nonzero(image)  # unique hits
    with torch.no_grad():
        full = model(torch.from_numpy(image)[None, None])[0][:, wires, ticks].T.numpy()
    align = model.min_input_size
    tile = (2 * align[0], 4 * align[1])
    got = unet_scores_at(model, image, wires, ticks, tile=tile, batch=3, max_area_fraction=np.inf)
    assert full.std(0).min() > 1e-3  # scores differ between hits: not a vacuous match
    np.testing.assert_allclose(got, full, atol=1e-4, rtol=0)
    tiles = hit_tiles(shape, wires, ticks, tile, unet_halo(model))
    n_total = -(-h // tile[0]) * -(-w // tile[1])
    assert 4 <= len(tiles) < n_total
    assert sorted(np.concatenate([t.hits for t in tiles]).tolist()) == list(range(len(wires)))
    whole = unet_scores_at(model, image, wires, ticks, tile=tile, max_area_fraction=0.0)
    np.testing.assert_allclose(whole, full, atol=1e-5, rtol=0)  # the whole-image fallback
    with pytest.raises(InputError, match="alignment"):
        unet_scores_at(model, image, wires, ticks, tile=(align[0] + 1, align[1]))
    with pytest.raises(InputError, match="inside the image"):
        unet_scores_at(model, image, wires + h, ticks)
    with pytest.raises(InputError, match="eval mode"):
        unet_scores_at(model.train(), image, wires, ticks)


def test_unet_scores_at_with_onnx_runtime_tiles(tmp_path, ort):
    """The same tiles run by ONNX Runtime (one session, dynamic height and width)."""
    torch.manual_seed(0)
    model = PixelUNet(width=4, depth=2, tick_factor=4).eval()
    _randomise_batch_norm(model)
    image, _, _ = synthetic_event(np.random.default_rng(4), (50, 300))
    wires, ticks = np.nonzero(image)
    align = model.min_input_size
    path = export_module(
        model, (1, 40, 160), tmp_path / "unet.onnx", dynamic_spatial=True, min_spatial=align
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def forward(x: np.ndarray) -> np.ndarray:
        return session.run(None, {INPUT_NAME: x})[0]

    with torch.no_grad():
        full = model(torch.from_numpy(image)[None, None])[0][:, wires, ticks].T.numpy()
    tile = (align[0], 2 * align[1])
    got = unet_scores_at(
        model, image, wires, ticks, tile=tile, forward=forward, max_area_fraction=np.inf
    )
    np.testing.assert_allclose(got, full, atol=1e-4, rtol=0)
