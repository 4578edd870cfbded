"""Inference speed of the ECAL CNN against the classical reconstruction, on the same events.

    python benchmarks/bench_inference.py [--events 10000] [--model tmva-cnn] [--json out.json]

On one simulated gamma + pi0 sample (1-100 GeV, 25 x 25 crystal windows):

* PyTorch eager at batch 1 and at batch 256, ONNX Runtime at batch 1 and 256, each with
  ``torch.set_num_threads(t)`` / ONNX Runtime ``intra_op_num_threads = t`` for t = 1 and 2;
* on a GPU (if there is one): PyTorch at batch 256 and ONNX Runtime's CUDA provider;
* the window building (``build_inputs``: the model's preprocessing) and the classical path
  (``reconstruct_batch``: seed, 5x5, connected cluster, shower shapes; numba, one thread);
* ``x eager b1``: events/s relative to PyTorch eager at batch 1 with the same threads (GPU rows:
  with one CPU thread); ``classical / this``: how many times faster the classical path is;
* the CNN's achieved GFLOP/s (conv and linear FLOPs counted analytically, 2 per multiply-add)
  against the machine's float32 matmul GFLOP/s (a 2048 x 2048 ``torch.matmul``, same threads).

The model is untrained (speed does not depend on the weights). Model timings exclude building
the windows; that cost is its own row.
"""

from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from _common import report
from fastreco.config import RepresentationConfig
from fastreco.data.representations import build_inputs
from fastreco.data.store import EventStore
from fastreco.deploy.inference import onnx_session
from fastreco.deploy.onnx import INPUT_NAME, export_module
from fastreco.models import build_model
from fastreco.reco.pipeline import reconstruct_batch
from fastreco.sim.config import SimConfig
from fastreco.sim.engine import simulate


def model_flops(model: torch.nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one event's forward pass: 2 per multiply-add of every Conv2d and Linear."""
    total = 0

    def conv(mod: torch.nn.Conv2d, _inp: object, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = mod.kernel_size
        macs = (mod.in_channels // mod.groups) * kh * kw * out[0].numel()
        total += 2 * macs

    def linear(mod: torch.nn.Linear, _inp: object, out: torch.Tensor) -> None:
        nonlocal total
        total += 2 * mod.in_features * mod.out_features

    hooks = []
    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv2d):
            hooks.append(mod.register_forward_hook(conv))
        elif isinstance(mod, torch.nn.Linear):
            hooks.append(mod.register_forward_hook(linear))
    with torch.inference_mode():
        model(torch.zeros((1, *input_shape)))
    for h in hooks:
        h.remove()
    return total


def matmul_gflops(threads: int, n: int = 2048, device: str = "cpu") -> float:
    torch.set_num_threads(threads)
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(5):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.matmul(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def events_per_second(n: int, fn: Callable[[], object], repeat: int = 3) -> float:
    """Best of ``repeat`` timed calls of ``fn`` (which processes ``n`` events), after a warm-up."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def torch_loop(model: torch.nn.Module, x: torch.Tensor, batch: int, device: str = "cpu"):
    def run() -> None:
        with torch.inference_mode():
            for start in range(0, len(x), batch):
                model(x[start : start + batch])
        if device == "cuda":
            torch.cuda.synchronize()

    return run


def ort_loop(session, x: np.ndarray, batch: int):
    def run() -> None:
        for start in range(0, len(x), batch):
            session.run(None, {INPUT_NAME: x[start : start + batch]})

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--model", default="tmva-cnn")
    parser.add_argument("--size", type=int, default=25, help="window size in crystals")
    parser.add_argument(
        "--batch1-events", type=int, default=2_000, help="events timed at batch size 1"
    )
    parser.add_argument("--json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        config = SimConfig(particles=["gamma", "pi0"], energy="1:100", n_events=args.events, seed=3)
        store = EventStore(simulate(config, Path(tmp) / "store", workers=1, progress=False))
        batch = store.read()
        geometry = store.detector
        rep = RepresentationConfig(size=args.size)
        build_inputs(batch.slice(0, 100), geometry, rep)  # numba compilation
        reconstruct_batch(batch.slice(0, 100), geometry)
        x_np, _ = build_inputs(batch, geometry, rep)  # (n, 1, size, size)
        n = len(x_np)
        shape = tuple(x_np.shape[1:])
        model = build_model(args.model, shape, 1).eval()
        onnx_path = export_module(model, shape, Path(tmp) / "model.onnx")
        flops = model_flops(model, shape)

        torch.set_num_threads(1)
        rows: list[dict[str, object]] = [
            {
                "path": f"window building {args.size}x{args.size} (build_inputs)",
                "batch": n,
                "threads": 1,
                "events/s": events_per_second(n, lambda: build_inputs(batch, geometry, rep), 2),
            },
            {
                "path": "classical reco (reconstruct_batch)",
                "batch": n,
                "threads": 1,
                "events/s": events_per_second(n, lambda: reconstruct_batch(batch, geometry), 2),
            },
        ]
        x = torch.from_numpy(x_np)
        n1 = min(args.batch1_events, n)
        for threads in (1, 2):
            torch.set_num_threads(threads)
            peak = matmul_gflops(threads)
            session = onnx_session(onnx_path, threads=threads, providers=["CPUExecutionProvider"])
            timings = [
                ("PyTorch eager", 1, events_per_second(n1, torch_loop(model, x[:n1], 1), 1)),
                ("PyTorch eager", 256, events_per_second(n, torch_loop(model, x, 256))),
                ("ONNX Runtime", 1, events_per_second(n1, ort_loop(session, x_np[:n1], 1), 1)),
                ("ONNX Runtime", 256, events_per_second(n, ort_loop(session, x_np, 256))),
            ]
            base = timings[0][2]
            for path, bs, rate in timings:
                gflops = rate * flops / 1e9
                rows.append(
                    {
                        "path": path,
                        "batch": bs,
                        "threads": threads,
                        "events/s": rate,
                        "x eager b1": rate / base,
                        "GFLOP/s": gflops,
                        "% of matmul": 100 * gflops / peak,
                        "matmul GFLOP/s": peak,
                    }
                )
        if torch.cuda.is_available():
            peak = matmul_gflops(1, device="cuda")
            gpu_model = build_model(args.model, shape, 1).eval().cuda()
            xg = x.cuda()
            gpu_rows = [
                ("PyTorch CUDA", bs, events_per_second(n, torch_loop(gpu_model, xg, bs, "cuda")))
                for bs in (256, 4096)
            ]
            import onnxruntime as ort

            if "CUDAExecutionProvider" in ort.get_available_providers():
                session = onnx_session(onnx_path, providers=["CUDAExecutionProvider"])
                gpu_rows.append(
                    ("ONNX Runtime CUDA", 256, events_per_second(n, ort_loop(session, x_np, 256)))
                )
            base = next(r["events/s"] for r in rows if r.get("batch") == 1 and r["threads"] == 1)
            for path, bs, rate in gpu_rows:
                gflops = rate * flops / 1e9
                rows.append(
                    {
                        "path": f"{path} ({torch.cuda.get_device_name()})",
                        "batch": bs,
                        "threads": "GPU",
                        "events/s": rate,
                        "x eager b1": rate / base,  # against 1-thread CPU eager batch 1
                        "GFLOP/s": gflops,
                        "% of matmul": 100 * gflops / peak,
                        "matmul GFLOP/s": peak,
                    }
                )
    classical = rows[1]["events/s"]
    for row in rows:
        row["classical / this"] = classical / row["events/s"]
    report(
        f"Inference of {args.model} ({flops / 1e6:.2f} MFLOP/event) vs classical reco, "
        f"{n} gamma+pi0 events",
        rows,
        args.json,
    )


if __name__ == "__main__":
    main()
