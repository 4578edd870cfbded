"""HGCAL property regression: memory and time per event of the 3D CNN on the dense image against
the Dynamic Reduction Network on the point cloud of the SAME showers (seed 001's "not using the
whitespace" argument).

    python benchmarks/bench_hgcal_regression_models.py [--events 64] [--batches 1 32]
        [--threads 1] [--device cpu] [--json out.json]

Events: single photons and pi+ (one per event, log-flat 10-500 GeV, 1.7 < eta < 2.7, no
pileup) from the project's HGCAL simulation (:func:`fastreco.sim.hgcal.simulate_hgcal_batch`,
seeded); 100-2000 hits each. The point cloud is :func:`fastreco.data.pointcloud.point_cloud_events`
(8 features per hit). The image of the same event is 47 layers x 32 x 32 pixels of 1 cm: the
hits' calibrated energies binned by their projective position (x, y scaled by z_front / z,
as the region of interest does) around the event's energy-weighted centre - a plain binning for
this benchmark only (speed and memory do not depend on how the energy is spread over pixels).

Models: ``hgcal-cnn3d`` and ``hgcal-drn`` at their default sizes, 4 outputs (energy correction,
barycenter x, y, z), untrained (time and memory do not depend on the weights).

Measured per model, batch size and mode (``inference``: forward under ``torch.no_grad``;
``train``: forward + loss + backward):

* ms/event: time of a call / batch size, mean over the batches after a warm-up call (up to
  8 batches; for the DRN it includes building the kNN graphs and the matching). On the CPU it
  is the process's CPU time (``time.process_time``; equal to wall time with one thread on an
  idle machine, and not inflated by other jobs on shared cores); on CUDA wall time;
* peak MB/event: the high-water mark of the memory allocated by PyTorch during one call
  (activations, saved tensors, workspaces, gradients), over the batch size, mean over the
  same batches. On the CPU it is
  the maximum of the ``Total Allocated`` counter of ``torch.profiler`` with
  ``profile_memory=True`` (allocator-level: counts every tensor and scratch buffer PyTorch
  allocates after the call starts; the input, allocated before, is reported apart); on CUDA
  ``torch.cuda.max_memory_allocated`` minus the allocation before the call;
* input KB/event: size of the model's float32 input (image, or hits x features).

The last rows give the CNN / DRN ratios at each batch size and mode.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from _common import report

LAYERS, PIXELS, PITCH_CM = 47, 32, 1.0
MODELS = ("hgcal-cnn3d", "hgcal-drn")


def _events(n: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(point-cloud features (n_hits, 8) float32, image (1, 47, 32, 32) float32) per event."""
    from fastreco.data.pointcloud import point_cloud_events
    from fastreco.geometry.hgcal import HgcalEndcap
    from fastreco.sim.hgcal import HgcalSimConfig, simulate_hgcal_batch

    geometry = HgcalEndcap()
    config = HgcalSimConfig(particles=("gamma", "pi+"), energy="log:10:500")
    events = point_cloud_events(simulate_hgcal_batch(config, n, seed, geometry), geometry)
    points, images = [], []
    for ev in events:
        scale = geometry.z_front / ev.position[:, 2]
        xy = ev.position[:, :2] * scale[:, None]  # projected onto the front face [cm]
        centre = np.average(xy, axis=0, weights=np.maximum(ev.energy, 0) + 1e-12)
        pix = np.floor((xy - centre) / PITCH_CM + PIXELS / 2).astype(int)
        pix = np.clip(pix, 0, PIXELS - 1)  # the energy outside the window goes to the border
        image = np.zeros((1, LAYERS, PIXELS, PIXELS), np.float32)
        np.add.at(image[0], (ev.layer, pix[:, 1], pix[:, 0]), ev.energy)
        points.append(ev.features)
        images.append(image)
    return points, images


def _inputs(name: str, points: list[np.ndarray], images: list[np.ndarray], device: str):
    if name == "hgcal-cnn3d":
        return (torch.from_numpy(np.stack(images)).to(device),)
    x = torch.from_numpy(np.concatenate(points)).to(device)
    sizes = torch.tensor([len(p) for p in points])
    batch = torch.repeat_interleave(torch.arange(len(points)), sizes).to(device)
    return x, batch


def _peak_bytes(call: Callable[[], object], device: str) -> int:
    """High-water mark of PyTorch's allocations during ``call()`` (module docstring)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        call()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    from fastreco.evaluate.hgcal_regression import torch_peak_bytes

    return torch_peak_bytes(call)


def measure(
    name: str,
    points: list[np.ndarray],
    images: list[np.ndarray],
    batch_size: int,
    mode: str,
    device: str,
) -> dict[str, object]:
    from fastreco.data.pointcloud import N_FEATURES
    from fastreco.models import build_model

    torch.manual_seed(0)
    in_shape = (1, LAYERS, PIXELS, PIXELS) if name == "hgcal-cnn3d" else (N_FEATURES,)
    model = build_model(name, in_shape, 4).to(device)
    model.train(mode == "train")
    n_batches = max(1, min(len(points) // batch_size - 1, 8))
    slices = [slice(i * batch_size, (i + 1) * batch_size) for i in range(n_batches + 1)]
    batches = [_inputs(name, points[sl], images[sl], device) for sl in slices]

    def call(inputs) -> None:
        if mode == "train":
            model.zero_grad(set_to_none=True)
            model(*inputs).pow(2).mean().backward()
        else:
            with torch.no_grad():
                model(*inputs)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    # CPU: this process's CPU time, not wall time, so that other jobs sharing the cores do not
    # count (with one thread the two agree on an idle machine); CUDA: wall time
    clock = time.perf_counter if device.startswith("cuda") else time.process_time
    call(batches[0])  # warm-up: kernels, allocator
    start = clock()
    for inputs in batches[1:]:
        call(inputs)
    seconds = (clock() - start) / (n_batches * batch_size)
    peaks = []
    for inputs in batches[1:]:
        model.zero_grad(set_to_none=True)
        peaks.append(_peak_bytes(lambda inputs=inputs: call(inputs), device))
    hits = [len(p) for p in points[batch_size : (n_batches + 1) * batch_size]]
    input_bytes = sum(t.numel() * t.element_size() for t in batches[1] if t.is_floating_point())
    return {
        "model": name,
        "input": "47x32x32 image" if name == "hgcal-cnn3d" else "point cloud",
        "batch": batch_size,
        "mode": mode,
        "hits/event": float(np.mean(hits)),
        "params": sum(p.numel() for p in model.parameters()),
        "input KB/event": input_bytes / batch_size / 1024,
        "ms/event": 1e3 * seconds,
        "peak MB/event": float(np.mean(peaks)) / batch_size / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=64)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--modes", nargs="+", default=["inference", "train"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    points, images = _events(max(args.events, 2 * max(args.batches)), args.seed)
    rows = []
    for batch_size in args.batches:
        for mode in args.modes:
            pair = {}
            for name in MODELS:
                row = measure(name, points, images, batch_size, mode, args.device)
                pair[name] = row
                rows.append(row)
            cnn, drn = pair["hgcal-cnn3d"], pair["hgcal-drn"]
            rows.append(
                {
                    "model": "CNN / DRN",
                    "batch": batch_size,
                    "mode": mode,
                    "input KB/event": cnn["input KB/event"] / drn["input KB/event"],
                    "ms/event": cnn["ms/event"] / drn["ms/event"],
                    "peak MB/event": cnn["peak MB/event"] / drn["peak MB/event"],
                }
            )
    report(
        f"HGCAL regression: 3D CNN on the image vs DRN on the point cloud "
        f"({args.device}, {args.threads} thread(s))",
        rows,
        args.json,
    )


if __name__ == "__main__":
    main()
