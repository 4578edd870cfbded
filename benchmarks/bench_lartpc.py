"""Whole-event pixel-ID inference on LArTPC images: patch CNN per hit vs once-per-event networks.

    python benchmarks/bench_lartpc.py [--ticks 750,1500,3000,6000] [--occupancy 0.03]
        [--batch 1024] [--max-patch-hits 8192] [--threads 1] [--json out.json]

Events are synthetic (wires x ticks = 480 x N, ProtoDUNE-like up to 480 x 6000) with about
``--occupancy`` of the pixels holding hits (straight tracks and blob-like showers), or, with
``--events simulated``, one event of the project's simulation per size (a neutrino-like
interaction or a muon with ``--cosmics`` cosmic muons per 6000 ticks). Per event:

* ``patch CNN PyTorch`` / ``ORT``: patches cut around every hit by the evaluation's
  :func:`~fastreco.data.lartpc_images.extract_patches` (the cut is included in the time) and run
  through :class:`PatchCNN` in batches of ``--batch`` (PyTorch eager, and ONNX Runtime on the
  exported model). Network, patch size and drift down-sampling are those of the training config
  ``--patch-config`` (``configs/lartpc_pixel_id_patch.yaml``: the trained run's);
* ``patch CNN ..., seed-like`` (batch 1): the one-patch-per-call loop, timed on ``--batch1-hits``
  hits, for the seed-004-style ONNX Runtime vs PyTorch speed-up;
* ``dense trunk + head at hits``: :meth:`DensePatchCNN.scores_at`, convolutional feature maps once
  per event, dense layers only at the hits (exact, same scores as the patch CNN);
* ``dense full map``: :class:`DensePatchCNN` scores for every pixel (exact, tiled along ticks);
* ``U-Net PyTorch`` / ``ORT``: :class:`PixelUNet` on the whole event in one pass, at full
  tick resolution and with its body on ticks binned by 4 (``U-Net ticks/4``, ``tick_factor=4``);
* ``U-Net ... hit tiles``: the same U-Net run only on the aligned tiles of ``--hit-tile`` holding
  hits, each grown by the receptive field (:func:`unet_scores_at`, exact: the note gives the
  largest difference to the whole-event pass at the hits, the tiles run and the pixels their
  crops cover relative to the event);
* ``sparse U-Net PyTorch``: :class:`SparseUResNet` (submanifold sparse convolutions, built
  from ``--sparse-config``, ``configs/lartpc_pixel_id_sparse.yaml`` by default) on the event's hits
  only, all in one pass; building its sparse input from the image is included in the time. Its
  GFLOP count is what it computes: every tap of every active site, the inactive ones included.

Where a row says ``extrapolated``, it was timed on a part of the event and scaled linearly (per
hit for the patch CNN, per pixel for the dense full map): the cost of these paths is linear in
hits resp. pixels. ``max |d| vs patch`` is the largest score difference to the patch CNN at the
timed hits. Times are medians of repeated calls (at least one, until 1 s is spent) after a first
call that measures ``peak MB``: the peak resident memory (RSS, psutil sampled every 2 ms by a
thread) above the RSS before the call, after ``malloc_trim``; tracemalloc cannot see torch's
allocations. The
models are untrained (speed does not depend on the weights); one thread by default.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("COLUMNS", "230")  # the table is wide

import argparse
import ctypes
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
import torch.nn.functional as F

from _common import report
from fastreco.data.lartpc_images import downsample_drift, extract_patches
from fastreco.deploy.inference import onnx_session
from fastreco.deploy.onnx import INPUT_NAME, export_module
from fastreco.models.lartpc import (
    PatchCNN,
    PixelUNet,
    dense_patch_cnn,
    hit_tiles,
    unet_halo,
    unet_scores_at,
)
from fastreco.models.lartpc_sparse import event_sparse_image
from fastreco.models.registry import build_model
from fastreco.models.sparse import SparseDownConv2d, SparseLinear, SparseUpConv2d, SubMConv2d
from fastreco.train.pixel_id import N_OUTPUTS, PixelIdTaskConfig, model_mode

N_WIRES = 480
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def model_from_config(path: str | os.PathLike[str]) -> tuple[torch.nn.Module, PixelIdTaskConfig]:
    """The (untrained, eval mode) network of a pixel-ID training config and the config."""
    task = PixelIdTaskConfig.load(path)
    mode = model_mode(task.model.name)
    model = build_model(task.model.name, task.input_shape(mode), N_OUTPUTS, **task.model.params)
    return model.eval(), task


def synthetic_event(
    rng: np.random.Generator, n_wires: int, n_ticks: int, occupancy: float
) -> np.ndarray:
    """(n_wires, n_ticks) float32 ADC: tracks (lines 1-3 pixels wide, drift-elongated) and
    showers (Gaussian clouds of spots) added until ``occupancy`` of the pixels are hits."""
    image = np.zeros((n_wires, n_ticks), np.float32)
    target = occupancy * image.size
    n_hits = 0
    while n_hits < target:
        if rng.random() < 0.6:
            length = rng.uniform(50, 400)
            angle = rng.uniform(0, 2 * np.pi)
            t = np.arange(0, length, 0.5)
            r = rng.uniform(0, n_wires) + t * np.sin(angle)
            c = rng.uniform(0, n_ticks) + t * np.cos(angle) * 3.0  # ticks finer than wires
            width = int(rng.integers(1, 4))
            r = np.repeat(r, width)
            c = np.repeat(c, width) + np.tile(np.arange(width), len(t))
            adc = rng.uniform(40, 150, len(r))
        else:
            n_spots = int(rng.integers(200, 1500))
            centre = rng.uniform((0, 0), (n_wires, n_ticks))
            spread = rng.uniform(4, 15) * np.array([1.0, 3.0])
            r, c = (centre + rng.normal(0, 1, (n_spots, 2)) * spread).T
            adc = rng.lognormal(3.5, 0.8, n_spots)
        r, c = np.round(r).astype(int), np.round(c).astype(int)
        ok = (r >= 0) & (r < n_wires) & (c >= 0) & (c < n_ticks)
        image[r[ok], c[ok]] = adc[ok]
        n_hits = int(np.count_nonzero(image))
    return image


def simulated_event(
    rng: np.random.Generator, n_wires: int, n_ticks: int, cosmics_per_6000: float
) -> np.ndarray:
    """(n_wires, n_ticks) float32 ADC of one event of the project's simulation: a neutrino-like
    interaction or a muon (the kinds of configs/lartpc_pixel_id_*.yaml) with cosmic muons overlaid
    at ``cosmics_per_6000`` per 6000-tick readout (scaled to ``n_ticks``), zero suppressed."""
    from fastreco.sim.lartpc import LArTpcSimConfig, simulate_event

    config = LArTpcSimConfig(
        kind=("neutrino", "muon"),
        cosmics=cosmics_per_6000 * n_ticks / 6000.0,
        n_wires=n_wires,
        n_ticks=n_ticks,
    )
    digitized = simulate_event(config, rng).digitized
    image = np.zeros((n_wires, n_ticks), np.float32)
    image.reshape(-1)[digitized.cell] = digitized.adc
    return image


def _hooked_flops(
    model: torch.nn.Module, x: Any, kinds: tuple[type, ...], macs: Callable[..., int]
) -> int:
    """2 x the multiply-adds ``macs(module, inputs, output)`` of every module of ``kinds`` in
    one ``model(x)``."""
    total = 0

    def hook(mod: torch.nn.Module, inp: tuple[Any, ...], out: Any) -> None:
        nonlocal total
        total += 2 * int(macs(mod, inp, out))

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    with torch.inference_mode():
        model(x)
    for h in hooks:
        h.remove()
    return total


def _dense_macs(mod: torch.nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> int:
    if isinstance(mod, torch.nn.Conv2d):
        return mod.in_channels // mod.groups * int(np.prod(mod.kernel_size)) * out.numel()
    if isinstance(mod, torch.nn.ConvTranspose2d):
        return mod.out_channels * int(np.prod(mod.kernel_size)) * inp[0].numel()
    return mod.in_features * out.numel()


def _sparse_macs(mod: torch.nn.Module, inp: tuple[Any, ...], out: Any) -> int:
    # every tap of every output site (taps on inactive sites are multiplied as zero rows)
    if isinstance(mod, SparseLinear):
        return mod.in_features * mod.out_features * out.n_points
    if isinstance(mod, SparseUpConv2d):  # every coarse site through every tap
        return inp[0].n_points * mod.weight.numel()
    return out.n_points * mod.weight.numel()  # SubMConv2d, SparseDownConv2d


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds x 2 of every Conv2d, ConvTranspose2d and Linear in ``model(x)``."""
    kinds = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)
    return _hooked_flops(model, x, kinds, _dense_macs)


def count_sparse_flops(model: torch.nn.Module, x: Any) -> int:
    """Multiply-adds x 2 of the sparse layers in ``model(x)``."""
    kinds = (SubMConv2d, SparseDownConv2d, SparseUpConv2d, SparseLinear)
    return _hooked_flops(model, x, kinds, _sparse_macs)


_LIBC = ctypes.CDLL("libc.so.6") if os.name == "posix" else None


def peak_rss(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(peak RSS MB above the RSS before the call, result) of one call of ``fn``."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = fn()
    done.set()
    sampler.join()
    peak = max(peak, proc.memory_info().rss)
    return (peak - base) / 1e6, result


def measure(fn: Callable[[], Any], budget_s: float = 1.0) -> tuple[float, float, Any]:
    """(median seconds, peak RSS MB, result) of ``fn``: one call with the memory sampler, then
    timed calls without it (its thread would compete for the GIL with the many small calls of
    the sparse network) until ``budget_s`` is spent, at least one and at most 20."""
    peak, result = peak_rss(fn)
    times: list[float] = []
    while not times or (sum(times) < budget_s and len(times) < 20):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), peak, result


def patch_scores(
    run: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    size: int,
    batch: int,
    drift_downsample: int = 1,
) -> torch.Tensor:
    """(n, 4) scores of ``run`` on the size x size patches around each hit that the evaluation
    cuts (zero padded, ticks merged by ``drift_downsample``), ``batch`` patches per call."""
    patches = torch.from_numpy(
        extract_patches(image.numpy(), rows.numpy(), cols.numpy(), size, drift_downsample)
    )[:, None]
    return torch.cat([run(patches[lo : lo + batch]) for lo in range(0, len(rows), batch)])


def _row(
    event: str,
    hits: int,
    method: str,
    batch: object,
    seconds: float,
    gflop: float,
    peak_mb: float,
    diff: float,
    note: str,
) -> dict[str, Any]:
    return {
        "event": event,
        "hits": hits,
        "method": method,
        "batch": batch,
        "ms/event": 1e3 * seconds,
        "GFLOP/event": gflop,
        "peak MB": "" if np.isnan(peak_mb) else round(peak_mb),
        "max |d| vs patch": "" if np.isnan(diff) else f"{diff:.1e}",
        "note": note,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ticks", default="750,1500,3000,6000", help="event sizes, 480 x N")
    parser.add_argument("--occupancy", type=float, default=0.03)
    parser.add_argument(
        "--patch-config",
        default=str(CONFIGS / "lartpc_pixel_id_patch.yaml"),
        help="training config of the patch CNN: network, patch size, drift down-sampling",
    )
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--max-patch-hits", type=int, default=8192)
    parser.add_argument("--batch1-hits", type=int, default=300)
    parser.add_argument("--dense-map-ticks", type=int, default=512)
    parser.add_argument("--hit-tile", default="128,1024", help="U-Net hit tiles, wires,ticks")
    parser.add_argument(
        "--sparse-config",
        default=str(CONFIGS / "lartpc_pixel_id_sparse.yaml"),
        help="training config of the sparse U-Net",
    )
    parser.add_argument(
        "--events",
        choices=("synthetic", "simulated"),
        default="synthetic",
        help="synthetic tracks and blobs at --occupancy, or the project's LArTPC simulation",
    )
    parser.add_argument(
        "--cosmics", type=float, default=1.0, help="simulated: cosmic muons per 6000 ticks"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(7)
    hit_tile = tuple(int(v) for v in args.hit_tile.split(","))
    cpu = ["CPUExecutionProvider"]

    torch.manual_seed(0)
    patch_cnn, patch_task = model_from_config(args.patch_config)
    assert isinstance(patch_cnn, PatchCNN), args.patch_config
    size, drift = patch_task.sampling.patch_size, patch_task.sampling.drift_downsample
    dense = dense_patch_cnn(patch_cnn)
    unets = {"U-Net": PixelUNet().eval(), "U-Net ticks/4": PixelUNet(tick_factor=4).eval()}
    sparse, _ = model_from_config(args.sparse_config)
    unet_ort = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = export_module(patch_cnn, (1, size, size), Path(tmp) / "patch.onnx")
        patch_ort = onnx_session(path, threads=args.threads, providers=cpu)
        for i, (name, unet) in enumerate(unets.items()):
            path = export_module(
                unet,
                (1, 64, 96),
                Path(tmp) / f"u{i}.onnx",
                dynamic_spatial=True,
                min_spatial=unet.min_input_size,
            )
            unet_ort[name] = onnx_session(path, threads=args.threads, providers=cpu)

    def torch_patch(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return patch_cnn(x)

    def ort_patch(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(patch_ort.run(None, {INPUT_NAME: x.numpy()})[0])

    def torch_unet(name: str, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return unets[name](x)

    def ort_unet(name: str, x: torch.Tensor) -> np.ndarray:
        return unet_ort[name].run(None, {INPUT_NAME: x.numpy()})[0]

    def ort_unet_np(name: str, x: np.ndarray) -> np.ndarray:
        return unet_ort[name].run(None, {INPUT_NAME: x})[0]

    def torch_sparse(image: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return sparse(event_sparse_image(image, rows, cols))

    def dense_at(image: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """The exact dense equivalent as the evaluation runs it: ticks merged, trunk once."""
        merged = torch.from_numpy(downsample_drift(image.numpy(), drift))
        return dense.scores_at(merged, rows, cols // drift, tile=1024)

    def dense_map(image: torch.Tensor) -> torch.Tensor:
        merged = torch.from_numpy(downsample_drift(image.numpy(), drift))
        return dense.score_map(merged[None, None], tile=256)

    probe = torch.zeros(1, 1, 64, 64)
    flops_patch = count_flops(patch_cnn, torch.zeros(1, 1, size, size))
    flops_dense_px = count_flops(dense, probe) / probe.numel()
    flops_trunk_px = count_flops(dense.trunk, F.pad(probe, (0, size - 1) * 2)) / probe.numel()
    flops_head_hit = flops_dense_px - flops_trunk_px
    flops_unet_px = {name: count_flops(u, probe) / probe.numel() for name, u in unets.items()}

    # warm-up of every path on a small event (allocators, ORT arenas, oneDNN kernels)
    warm = torch.from_numpy(synthetic_event(rng, N_WIRES, 256, args.occupancy))
    wr, wc = torch.nonzero(warm, as_tuple=True)
    for run in (torch_patch, ort_patch):
        patch_scores(run, warm, wr[:2048], wc[:2048], size, args.batch, drift)
    dense_at(warm, wr, wc)
    dense_map(warm)
    for name in unets:
        torch_unet(name, warm[None, None])
        ort_unet(name, warm[None, None])
    torch_sparse(warm, wr, wc)
    flops_sparse_hit = count_sparse_flops(sparse, event_sparse_image(warm, wr, wc)) / len(wr)

    # seed-like per-patch loop (batch 1): ONNX Runtime vs PyTorch, extrapolated per hit
    n1 = min(args.batch1_hits, len(wr))
    t_b1 = {
        "PyTorch": measure(
            partial(patch_scores, torch_patch, warm, wr[:n1], wc[:n1], size, 1, drift)
        )[0],
        "ONNX Runtime": measure(
            partial(patch_scores, ort_patch, warm, wr[:n1], wc[:n1], size, 1, drift)
        )[0],
    }
    # dense full map: cost per pixel from one 480 x dense-map-ticks slice
    sample = torch.from_numpy(synthetic_event(rng, N_WIRES, args.dense_map_ticks, args.occupancy))
    t_map, mem_map, _ = measure(partial(dense_map, sample))
    map_note = f"extrapolated per pixel from {N_WIRES}x{args.dense_map_ticks}"

    rows: list[dict[str, Any]] = []
    for n_ticks in (int(t) for t in args.ticks.split(",")):
        if args.events == "simulated":
            event = simulated_event(rng, N_WIRES, n_ticks, args.cosmics)
        else:
            event = synthetic_event(rng, N_WIRES, n_ticks, args.occupancy)
        image = torch.from_numpy(event)
        hr, hc = torch.nonzero(image, as_tuple=True)
        n_hits, n_px = len(hr), image.numel()
        sub = torch.from_numpy(rng.permutation(n_hits)[: args.max_patch_hits])
        sr, sc = hr[sub], hc[sub]
        scale = n_hits / len(sub)
        extrap = f"extrapolated per hit from {len(sub):,} hits" if scale > 1 else ""
        event = f"{N_WIRES}x{n_ticks}"
        gflop_patch = flops_patch * n_hits / 1e9
        new: list[dict[str, Any]] = []

        t, mem, ref = measure(
            partial(patch_scores, torch_patch, image, sr, sc, size, args.batch, drift)
        )
        new.append(
            _row(
                event,
                n_hits,
                "patch CNN PyTorch",
                args.batch,
                t * scale,
                gflop_patch,
                mem,
                0.0,
                extrap,
            )
        )
        t, mem, got = measure(
            partial(patch_scores, ort_patch, image, sr, sc, size, args.batch, drift)
        )
        new.append(
            _row(
                event,
                n_hits,
                "patch CNN ONNX Runtime",
                args.batch,
                t * scale,
                gflop_patch,
                mem,
                float((got - ref).abs().max()),
                extrap,
            )
        )
        for backend, seconds in t_b1.items():
            new.append(
                _row(
                    event,
                    n_hits,
                    f"patch CNN {backend}, seed-like",
                    1,
                    seconds / n1 * n_hits,
                    gflop_patch,
                    float("nan"),
                    float("nan"),
                    f"extrapolated per hit from {n1} hits",
                )
            )
        t, mem, got = measure(partial(dense_at, image, hr, hc))
        gflop = (flops_trunk_px * n_px / drift + flops_head_hit * n_hits) / 1e9
        new.append(
            _row(
                event,
                n_hits,
                "dense trunk + head at hits (exact)",
                "event",
                t,
                gflop,
                mem,
                float((got[sub] - ref).abs().max()),
                "",
            )
        )
        new.append(
            _row(
                event,
                n_hits,
                "dense full map (exact)",
                "event",
                t_map / sample.numel() * n_px,
                flops_dense_px * n_px / drift / 1e9,
                mem_map,
                float("nan"),
                map_note,
            )
        )
        for name in unets:
            for backend, run in (("PyTorch", torch_unet), ("ONNX Runtime", ort_unet)):
                t, mem, _ = measure(partial(run, name, image[None, None]))
                new.append(
                    _row(
                        event,
                        n_hits,
                        f"{name} {backend}",
                        "event",
                        t,
                        flops_unet_px[name] * n_px / 1e9,
                        mem,
                        float("nan"),
                        "other network",
                    )
                )
            wires, ticks = hr.numpy(), hc.numpy()
            unet = unets[name]
            with torch.inference_mode():
                whole = unet(image[None, None])[0][:, hr, hc].T.numpy()
            tiles = hit_tiles(image.shape, wires, ticks, hit_tile, unet_halo(unet))
            crop_px = sum(t.shape[0] * t.shape[1] for t in tiles)
            n_grid = -(-N_WIRES // hit_tile[0]) * -(-n_ticks // hit_tile[1])
            forwards = {"PyTorch": None, "ONNX Runtime": partial(ort_unet_np, name)}
            for backend, forward in forwards.items():
                t, mem, got = measure(
                    partial(
                        unet_scores_at,
                        unet,
                        image.numpy(),
                        wires,
                        ticks,
                        tile=hit_tile,
                        forward=forward,
                        max_area_fraction=np.inf,
                    )
                )
                new.append(
                    _row(
                        event,
                        n_hits,
                        f"{name} {backend}, hit tiles",
                        "tiles",
                        t,
                        flops_unet_px[name] * crop_px / 1e9,
                        mem,
                        float("nan"),
                        f"exact: max |d| vs whole {np.abs(got - whole).max():.1e}; "
                        f"{len(tiles)}/{n_grid} tiles, crops {crop_px / n_px:.2f}x the pixels",
                    )
                )
        t, mem, _ = measure(partial(torch_sparse, image, hr, hc))
        gflop = count_sparse_flops(sparse, event_sparse_image(image, hr, hc)) / 1e9
        new.append(
            _row(
                event,
                n_hits,
                "sparse U-Net PyTorch",
                "event",
                t,
                gflop,
                mem,
                float("nan"),
                f"other network; active sites only ({Path(args.sparse_config).name})",
            )
        )
        base = {r["method"]: r["ms/event"] for r in new}
        for row in new:
            row["patch PT / this"] = base["patch CNN PyTorch"] / row["ms/event"]
            row["patch ORT / this"] = base["patch CNN ONNX Runtime"] / row["ms/event"]
            row["note"] = row.pop("note")  # last column
        rows += new
        print(f"done {event}: {n_hits:,} hits", flush=True)

    report(
        f"LArTPC pixel ID per event ({args.threads} thread(s), "
        + (
            f"simulated events, {args.cosmics:g} cosmics per 6000 ticks, "
            if args.events == "simulated"
            else f"occupancy {args.occupancy:.1%}, "
        )
        + f"{size}x{size} patches, ticks merged by {drift}; patch CNN {flops_patch / 1e6:.2f} MFLOP/hit, dense "
        f"{flops_dense_px / 1e3:.0f} kFLOP/pixel, U-Net "
        + ", ".join(f"{n} {f / 1e3:.1f}" for n, f in flops_unet_px.items())
        + f" kFLOP/pixel, sparse U-Net {flops_sparse_hit / 1e3:.0f} kFLOP/hit)",
        rows,
        args.json,
    )


if __name__ == "__main__":
    main()
