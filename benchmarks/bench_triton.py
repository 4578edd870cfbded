"""A model served by NVIDIA Triton Inference Server against in-process ONNX Runtime.

    python benchmarks/bench_triton.py [--seconds 3] [--clients 1,4,16] [--batch 1]
        [--protocol grpc] [--json out.json]

One tiny untrained tmva-cnn (1 x 25 x 25 crystal windows) exported to ONNX, put twice in one
Triton model repository: ``dynamic`` (the dynamic batcher merges concurrent requests, at most
``--queue-delay-us`` of waiting) and ``static`` (each request runs alone). The server is the real
``tritonserver`` of ``make triton-env`` on loopback; its Python backend runs the model with ONNX
Runtime on the CPU (see ``fastreco.deploy.triton``).

For 1, 4 and 16 client threads, each with its own standard ``tritonclient`` client sending
requests of ``--batch`` events back to back, for ``--seconds`` (at most ``--max-requests`` per
client) after 3 warm-up requests:

* ``events/s``: events answered per second, all clients together;
* ``p50 ms`` / ``p99 ms``: latency of one request as the client sees it;
* ``server batch``: mean events per model execution on the server (Triton's statistics), > the
  request size when the dynamic batcher merged requests.

The ``onnxruntime`` rows run the same ONNX file in this process, one shared session called from
the same number of threads: the cost of serving is the difference.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import report
from fastreco.deploy.inference import onnx_session
from fastreco.deploy.onnx import INPUT_NAME, export_module
from fastreco.deploy.triton import ModelClient, TritonServer, write_model_repository
from fastreco.models import build_model

SHAPE = (1, 25, 25)


def run_clients(
    n_clients: int,
    make_call: Callable[[], tuple[Callable[[np.ndarray], Any], Callable[[], None]]],
    x: np.ndarray,
    seconds: float,
    max_requests: int,
) -> dict[str, float]:
    """``n_clients`` threads, each calling its own ``call(x)`` back to back; throughput and
    latency percentiles over all requests."""
    barrier = threading.Barrier(n_clients + 1)
    latencies: list[list[float]] = [[] for _ in range(n_clients)]
    ends = [0.0] * n_clients
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        call, close = make_call()
        try:
            for _ in range(3):
                call(x)
            barrier.wait()
            deadline = time.perf_counter() + seconds
            mine = latencies[i]
            while len(mine) < max_requests and time.perf_counter() < deadline:
                t0 = time.perf_counter()
                call(x)
                mine.append(time.perf_counter() - t0)
            ends[i] = time.perf_counter()
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()
        finally:
            close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    lat = np.concatenate([np.asarray(v) for v in latencies]) * 1e3
    elapsed = max(ends) - start
    return {
        "requests": len(lat),
        "events/s": len(lat) * len(x) / elapsed,
        "p50 ms": float(np.percentile(lat, 50)),
        "p99 ms": float(np.percentile(lat, 99)),
    }


def server_counts(client: Any, model: str) -> tuple[int, int]:
    """Triton's (inference_count, execution_count) of ``model`` so far."""
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="per setting")
    parser.add_argument("--max-requests", type=int, default=20_000, help="per client and setting")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--batch", type=int, default=1, help="events per request")
    parser.add_argument("--protocol", default="grpc", help="grpc, http or grpc,http")
    parser.add_argument("--queue-delay-us", type=int, default=100)
    parser.add_argument("--json")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    protocols = args.protocol.split(",")

    import tritonclient.grpc as grpcclient

    rng = np.random.default_rng(0)
    x = rng.random((args.batch, *SHAPE), dtype=np.float32)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        onnx_path = export_module(build_model("tmva-cnn", SHAPE, 1), SHAPE, Path(tmp) / "m.onnx")
        repo = Path(tmp) / "repo"
        write_model_repository(onnx_path, repo, "dynamic", max_queue_delay_us=args.queue_delay_us)
        write_model_repository(onnx_path, repo, "static", dynamic_batching=False)

        session = onnx_session(onnx_path, providers=["CPUExecutionProvider"])
        for n in clients:

            def local() -> tuple[Callable[[np.ndarray], Any], Callable[[], None]]:
                return (lambda a: session.run(None, {INPUT_NAME: a})), (lambda: None)

            res = run_clients(n, local, x, args.seconds, args.max_requests)
            rows.append({"setting": "onnxruntime in-process", "clients": n, **res})

        with TritonServer(repo) as server:
            stats = grpcclient.InferenceServerClient(server.grpc_url)
            for protocol in protocols:
                url = server.grpc_url if protocol == "grpc" else server.http_url
                for model in ("dynamic", "static"):
                    for n in clients:

                        def remote(
                            model: str = model, url: str = url, protocol: str = protocol
                        ) -> tuple[Callable[[np.ndarray], Any], Callable[[], None]]:
                            client = ModelClient(url, model, protocol)  # type: ignore[arg-type]
                            return client.infer, client.close

                        before = server_counts(stats, model)
                        res = run_clients(n, remote, x, args.seconds, args.max_requests)
                        after = server_counts(stats, model)
                        executions = max(after[1] - before[1], 1)
                        rows.append(
                            {
                                "setting": f"triton {protocol} {model}",
                                "clients": n,
                                **res,
                                "server batch": (after[0] - before[0]) / executions,
                            }
                        )
            stats.close()
    report(
        f"Triton vs in-process ONNX Runtime, tmva-cnn 1x25x25, {args.batch} event(s) per request",
        rows,
        args.json,
    )


if __name__ == "__main__":
    main()
