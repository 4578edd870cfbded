"""Serving with a real NVIDIA Triton Inference Server: the model repository parses with Triton's
own protobuf schema, the standard HTTP and gRPC clients get what local ONNX Runtime computes, bad
requests are refused without harming the server, and the server stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fastreco.deploy.onnx import export_module, preprocessing_path
from fastreco.deploy.triton import (
    ModelClient,
    TritonError,
    TritonServer,
    find_tritonserver,
    infer,
    model_name,
    write_model_repository,
)
from fastreco.errors import InputError
from fastreco.models import build_model

grpcclient = pytest.importorskip("tritonclient.grpc", reason="pip install 'fastreco[serve]'")
httpclient = pytest.importorskip("tritonclient.http", reason="pip install 'fastreco[serve]'")
ort = pytest.importorskip("onnxruntime")
from google.protobuf import text_format  # noqa: E402  (after the importorskip of tritonclient)
from tritonclient.grpc import model_config_pb2  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

SHAPE = (1, 11, 11)
MAX_BATCH = 256
TOL = 1e-5


def _parse_config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _tritonserver_or_skip() -> None:
    try:
        find_tritonserver()
    except TritonError:
        pytest.skip("tritonserver not installed: make triton-env")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained tmva-cnn in ONNX, with a preprocessing JSON beside it."""
    torch.manual_seed(0)
    model = build_model("tmva-cnn", SHAPE, 1)
    path = export_module(model, SHAPE, tmp_path_factory.mktemp("onnx") / "model.onnx", verify=False)
    meta = {"input": {"name": "x", "shape": ["batch", *SHAPE], "dtype": "float32"}}
    preprocessing_path(path).write_text(json.dumps(meta))
    return path


@pytest.fixture(scope="module")
def reference(onnx_model: Path):
    session = ort.InferenceSession(str(onnx_model), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": x})[0]


@pytest.fixture(scope="module")
def repo(onnx_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    write_model_repository(onnx_model, repo, "cnn", max_batch_size=MAX_BATCH)
    write_model_repository(
        onnx_model, repo, "cnn_static", dynamic_batching=False, max_batch_size=64
    )
    return repo


@pytest.fixture(scope="module")
def server(repo: Path):
    _tritonserver_or_skip()
    srv = TritonServer(repo)
    with srv:
        yield srv
    assert not srv.running


# --------------------------------------------------------------------------- the repository


@pytest.mark.parametrize(
    ("backend", "dynamic"), [("python", True), ("python", False), ("onnxruntime", True)]
)
def test_config_parses_with_triton_schema(onnx_model, tmp_path, backend, dynamic):
    model_dir = write_model_repository(
        onnx_model,
        tmp_path / "repo",
        "cnn",
        max_batch_size=128,
        dynamic_batching=dynamic,
        preferred_batch_sizes=(32, 128),
        instance_count=2,
        backend=backend,
        threads=1,
    )
    assert model_dir == tmp_path / "repo" / "cnn"
    config = _parse_config(model_dir / "config.pbtxt")
    assert config.name == "cnn"
    assert config.backend == backend
    assert config.max_batch_size == 128
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        ("x", model_config_pb2.TYPE_FP32, list(SHAPE))
    ]
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [
        ("output", model_config_pb2.TYPE_FP32, [1])
    ]
    assert config.HasField("dynamic_batching") is dynamic
    if dynamic:
        assert list(config.dynamic_batching.preferred_batch_size) == [32, 128]
    assert [(g.count, g.kind) for g in config.instance_group] == [
        (2, model_config_pb2.ModelInstanceGroup.KIND_CPU)
    ]
    assert (model_dir / "1" / "model.onnx").read_bytes() == onnx_model.read_bytes()
    assert (model_dir / "1" / "model.py").exists() is (backend == "python")
    assert json.loads((model_dir / "model.preprocessing.json").read_text())["input"]["name"] == "x"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "a/b"}, "name"),
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"preferred_batch_sizes": (512,)}, "preferred_batch_sizes"),
        ({"backend": "tensorrt"}, "backend"),
        ({"instance_count": 0}, "instance_count"),
    ],
)
def test_bad_repository_options(onnx_model, tmp_path, kwargs, field):
    kwargs = {"name": "cnn", **kwargs}
    with pytest.raises(InputError, match=f"field '{field}'"):
        write_model_repository(onnx_model, tmp_path, **kwargs)
    assert not (tmp_path / "cnn").exists()


def test_model_name():
    assert model_name("runs/ecal gamma+pi0") == "ecal_gamma_pi0"
    assert model_name("runs/.hidden") == "m.hidden"


def test_missing_tritonserver_says_how_to_install(monkeypatch, tmp_path):
    from fastreco.deploy import triton

    monkeypatch.setenv("FASTRECO_TRITONSERVER", str(tmp_path / "nope"))
    with pytest.raises(TritonError, match="FASTRECO_TRITONSERVER"):
        find_tritonserver()
    monkeypatch.delenv("FASTRECO_TRITONSERVER")
    monkeypatch.setattr(triton, "_repo_root", lambda: tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(TritonError, match="make triton-env"):
        find_tritonserver()


# --------------------------------------------------------------------------- a real server


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize(("model", "n"), [("cnn", 1), ("cnn", 37), ("cnn", 256), ("cnn", 600)])
def test_served_model_matches_onnxruntime(server, reference, protocol, model, n):
    """600 events go as 3 requests of at most max_batch_size."""
    x = np.random.default_rng(n).random((n, *SHAPE), dtype=np.float32)
    url = server.http_url if protocol == "http" else server.grpc_url
    got = infer(url, model, x, protocol=protocol)
    assert got.shape == (n, 1)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, reference(x), rtol=0, atol=TOL)


def test_model_without_dynamic_batching(server, reference):
    x = np.random.default_rng(5).random((100, *SHAPE), dtype=np.float32)  # 64 + 36
    with ModelClient(server.grpc_url, "cnn_static", "grpc") as client:
        assert client.max_batch_size == 64
        np.testing.assert_allclose(client.infer(x), reference(x), rtol=0, atol=TOL)


def test_concurrent_requests_are_batched_back_correctly(server, reference):
    """Concurrent requests of different sizes, merged by the dynamic batcher, each get their
    own rows back."""
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            with ModelClient(server.grpc_url, "cnn", "grpc") as client:
                for _ in range(10):
                    x = rng.random((int(rng.integers(1, 40)), *SHAPE), dtype=np.float32)
                    np.testing.assert_allclose(client.infer(x), reference(x), rtol=0, atol=TOL)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def _raw_request(module, client, model: str, x: np.ndarray, dtype: str = "FP32"):
    inp = module.InferInput("x", list(x.shape), dtype)
    inp.set_data_from_numpy(x)
    return client.infer(model, [inp], outputs=[module.InferRequestedOutput("output")])


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bad_requests_are_refused_and_server_keeps_serving(server, reference, protocol):
    module = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(
        server.http_url if protocol == "http" else server.grpc_url
    )
    rng = np.random.default_rng(0)
    good = rng.random((3, *SHAPE), dtype=np.float32)
    bad = {
        "unknown model": ("nope", good, "FP32", "nope"),
        "wrong shape": ("cnn", rng.random((3, 1, 12, 12), dtype=np.float32), "FP32", "shape"),
        "wrong dtype": ("cnn", good.astype(np.float64), "FP64", "FP64|TYPE_FP32|data-type"),
        "batch over max": (
            "cnn",
            rng.random((MAX_BATCH + 1, *SHAPE), dtype=np.float32),
            "FP32",
            "batch",
        ),
    }
    try:
        for what, (model, x, dtype, pattern) in bad.items():
            with pytest.raises(InferenceServerException, match=pattern) as info:
                _raw_request(module, client, model, x, dtype)
            assert info.value.message(), what
        result = _raw_request(module, client, "cnn", good)
        np.testing.assert_allclose(result.as_numpy("output"), reference(good), rtol=0, atol=TOL)
        assert client.is_server_live()
        assert client.is_model_ready("cnn")
    finally:
        client.close()
    assert server.running
    with pytest.raises(TritonError, match="nope"):
        infer(server.http_url, "nope", good)


def test_server_stops_cleanly(repo, tmp_path):
    _tritonserver_or_skip()
    log = tmp_path / "triton.log"
    with TritonServer(repo, log_path=log) as srv:
        pid = srv.process.pid
        port = srv.http_port
        assert _group_alive(pid)
        children = subprocess.run(
            ["pgrep", "-g", str(pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        assert len(children) >= 3  # the server and a Python-backend stub per model
    assert srv.process.poll() == 0  # exited on SIGTERM with code 0
    assert not _group_alive(pid)  # no stub left
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", port), timeout=1),
    ):
        pass
    assert srv.stop() == 0  # idempotent
    assert "successfully loaded 'cnn'" in log.read_text()


def test_startup_failure_shows_the_log(onnx_model, tmp_path):
    _tritonserver_or_skip()
    model_dir = write_model_repository(onnx_model, tmp_path, "broken")
    (model_dir / "1" / "model.py").write_text("raise RuntimeError('cannot load broken')\n")
    with pytest.raises(TritonError, match="cannot load broken") as info:
        TritonServer(tmp_path, startup_timeout=60).start()
    assert "failed to load all models" in str(info.value)
    assert "CudaDriverHelper" not in str(info.value)  # harmless on a CPU, left out


def test_port_taken_meanwhile_is_retried(repo, monkeypatch):
    """A port free when picked but taken before the server binds it: new ports, no error."""
    _tritonserver_or_skip()
    from fastreco.deploy import triton

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        picks = iter([port])
        real = triton._free_port
        monkeypatch.setattr(triton, "_free_port", lambda host: next(picks, None) or real(host))
        with TritonServer(repo) as srv:
            assert srv.http_port != port
            assert srv.running


# --------------------------------------------------------------------------- the command line


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cli_serve_until_interrupted(repo, tmp_path):
    _tritonserver_or_skip()
    http, grpc = _free_port(), _free_port()
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "fastreco.cli", "serve", str(repo)),
                *("--port", str(http), "--grpc-port", str(grpc)),
            ],
            stdout=stdout,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 90
        while "serving until Ctrl-C" not in err.read_text():
            assert proc.poll() is None, err.read_text()
            assert time.monotonic() < deadline, "fastreco serve not ready"
            time.sleep(0.3)
        x = np.zeros((2, *SHAPE), dtype=np.float32)
        assert infer(f"127.0.0.1:{grpc}", "cnn", x, protocol="grpc").shape == (2, 1)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.read_text()
    assert f"127.0.0.1:{grpc}" in out.read_text()
    assert "server stopped" in err.read_text()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", http), 1):
        pass


def test_cli_export_to_triton_repository(tmp_path):
    """`fastreco export RUN --triton REPO` on a run folder made by hand (untrained weights)."""
    from fastreco.config import TaskConfig
    from fastreco.deploy.inference import n_outputs
    from fastreco.train.runner import RUN_SCHEMA_VERSION

    run = tmp_path / "my-run"
    (run / "checkpoints").mkdir(parents=True)
    task = {
        "name": "t",
        "kind": "classification",
        "classes": ["gamma", "pi0"],
        "data": {"particles": ["gamma", "pi0"], "energy": "10", "events": 10},
        "representation": {"name": "window", "size": 11, "channels": ["energy"]},
        "model": {"name": "tmva-cnn"},
    }
    import yaml

    (run / "config.yaml").write_text(yaml.safe_dump(task))
    config = TaskConfig.load(run / "config.yaml")
    info = {"run_schema_version": RUN_SCHEMA_VERSION, "input_shape": list(SHAPE)}
    (run / "run.json").write_text(json.dumps(info))
    model = build_model("tmva-cnn", SHAPE, n_outputs(config))
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state}, run / "checkpoints" / "best.ckpt")

    result = subprocess.run(
        [sys.executable, "-m", "fastreco.cli", "export", str(run), "--triton", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    config_pb = _parse_config(tmp_path / "r" / "my-run" / "config.pbtxt")
    assert config_pb.name == "my-run"
    assert list(config_pb.input[0].dims) == list(SHAPE)
    assert (tmp_path / "r" / "my-run" / "model.preprocessing.json").exists()
