"""Serving exported ONNX models with NVIDIA Triton Inference Server.

Three pieces, each usable alone:

* :func:`write_model_repository` lays out a Triton model repository for a ``model.onnx`` written
  by :mod:`fastreco.deploy.onnx`::

      REPO/<name>/config.pbtxt                  # Triton's ModelConfig, in protobuf text format
      REPO/<name>/1/model.onnx                  # a copy of the model (version 1)
      REPO/<name>/1/model.py                    # backend "python" only: runs model.onnx
      REPO/<name>/model.preprocessing.json      # a copy of the preprocessing JSON, if any

  ``backend="python"`` (the default) serves the model through Triton's Python backend with ONNX
  Runtime inside it: the ``tritonserver`` that PyPI's ``nvidia-pytriton`` bundles (what
  ``make triton-env`` installs) ships that backend only. ``backend="onnxruntime"`` writes the
  config of Triton's native ONNX Runtime backend, for a full Triton installation (the NGC
  container) that has it.
* :class:`TritonServer` runs the real ``tritonserver`` binary on free loopback ports, waits until
  every model is ready and stops it (SIGTERM, then SIGKILL) on exit.
* :func:`infer` / :class:`ModelClient` send arrays with the standard ``tritonclient`` (HTTP or
  gRPC), split into requests of at most the model's ``max_batch_size`` events.

The server runs in its own virtual environment, ``.venv-triton/`` (``make triton-env``): the
``nvidia-pytriton`` wheel pins ``numpy<2`` and an older protobuf than fastreco's environment. Only
its ``tritonserver`` binary and the Python-backend stub are used; the stub embeds that
environment's Python (found through ``PATH`` and its ``LIBDIR`` on ``LD_LIBRARY_PATH``), which has
``numpy`` and ``onnxruntime``. The client side (``tritonclient[http,grpc]``, the ``serve`` extra)
lives in fastreco's environment.

Example::

    from fastreco.deploy.triton import TritonServer, infer, write_model_repository

    write_model_repository("runs/ecal_gamma_pi0/model.onnx", "triton_repo", "gamma_pi0")
    with TritonServer("triton_repo") as server:
        logits = infer(server.grpc_url, "gamma_pi0", x, protocol="grpc")  # x: (n, 1, 25, 25)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from fastreco.errors import FastrecoError, InputError

log = logging.getLogger(__name__)

Protocol = Literal["http", "grpc"]
Backend = Literal["python", "onnxruntime"]

#: Environment variable naming the ``tritonserver`` binary to use.
ENV_BINARY = "FASTRECO_TRITONSERVER"
#: Environment variable naming the Python interpreter whose packages the Python backend uses.
ENV_PYTHON = "FASTRECO_TRITON_PYTHON"
#: The virtual environment ``make triton-env`` creates, at the repository root.
TRITON_VENV = ".venv-triton"

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_ONNX_TYPES = {1: "TYPE_FP32"}  # onnx.TensorProto.FLOAT; fastreco exports float32 only

#: The Python-backend model: ONNX Runtime on the CPU. Triton's dynamic batcher may hand
#: ``execute`` several requests at once: they are concatenated along the batch axis, run in one
#: ONNX Runtime call and split back, one response per request.
MODEL_PY = '''\
"""Triton Python-backend model written by fastreco.deploy.triton: runs an ONNX file with ONNX
Runtime (CPU). Requests batched by Triton are concatenated along axis 0, run once, split back."""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        path = os.path.join(
            args["model_repository"], args["model_version"], params.get("onnx_file", "model.onnx")
        )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(params.get("intra_op_num_threads", "0"))
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            path, sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self.inputs = [spec["name"] for spec in config["input"]]
        self.outputs = [spec["name"] for spec in config["output"]]

    def execute(self, requests):
        feeds = {}
        for name in self.inputs:
            parts = [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
            feeds[name] = parts[0] if len(parts) == 1 else np.concatenate(parts)
        sizes = [len(pb_utils.get_input_tensor_by_name(r, self.inputs[0]).as_numpy())
                 for r in requests]
        try:
            results = self.session.run(self.outputs, feeds)
        except Exception as exc:  # ONNX Runtime raises its own exception types
            error = pb_utils.TritonError(f"ONNX Runtime failed: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses = []
        start = 0
        for n in sizes:
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(out[start : start + n]))
                for name, out in zip(self.outputs, results)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += n
        return responses
'''


class TritonError(FastrecoError):
    """The Triton server could not be found, started, or answered a request with an error."""


# --------------------------------------------------------------------------- model repository


def model_name(path: str | os.PathLike[str]) -> str:
    """A valid Triton model name from a file or folder name (other characters become ``_``)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(path).resolve().name)
    return name if _NAME_RE.match(name) else f"m{name}"


def _onnx_io(onnx_path: Path) -> tuple[list[tuple[str, list[int]]], list[tuple[str, list[int]]]]:
    """Names and per-event dims (batch axis dropped, dynamic axes as -1) of the ONNX graph's
    inputs and outputs; every tensor must be float32 with a leading batch axis."""
    import onnx

    try:
        graph = onnx.load(str(onnx_path), load_external_data=False).graph
    except Exception as exc:  # protobuf's DecodeError and friends
        raise InputError(f"not a readable ONNX model ({exc})", source=onnx_path) from None
    initializers = {init.name for init in graph.initializer}

    def describe(values: Any, kind: str) -> list[tuple[str, list[int]]]:
        out = []
        for value in values:
            if value.name in initializers:
                continue
            tensor = value.type.tensor_type
            if tensor.elem_type not in _ONNX_TYPES:
                raise InputError(
                    f"{kind} '{value.name}' is not float32 (ONNX elem_type {tensor.elem_type})",
                    source=onnx_path,
                )
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
            if not dims:
                raise InputError(f"{kind} '{value.name}' has no batch axis", source=onnx_path)
            out.append((value.name, dims[1:] or [1]))
        return out

    return describe(graph.input, "input"), describe(graph.output, "output")


def _tensor_block(kind: str, tensors: Sequence[tuple[str, list[int]]]) -> str:
    items = ",\n".join(
        f'  {{\n    name: "{name}"\n    data_type: TYPE_FP32\n'
        f"    dims: [ {', '.join(str(d) for d in dims)} ]\n  }}"
        for name, dims in tensors
    )
    return f"{kind} [\n{items}\n]\n"


def model_config_text(
    name: str,
    inputs: Sequence[tuple[str, list[int]]],
    outputs: Sequence[tuple[str, list[int]]],
    *,
    backend: Backend = "python",
    max_batch_size: int = 256,
    dynamic_batching: bool = True,
    preferred_batch_sizes: Sequence[int] | None = None,
    max_queue_delay_us: int = 100,
    instance_count: int = 1,
    threads: int | None = None,
) -> str:
    """The ``config.pbtxt`` text (Triton's ``inference.ModelConfig``) of one model.

    ``inputs`` / ``outputs`` are ``(name, dims)`` with the dims of one event (no batch axis).
    See :func:`write_model_repository` for the other arguments.
    """
    lines = [f'name: "{name}"', f'backend: "{backend}"', f"max_batch_size: {max_batch_size}"]
    text = (
        "\n".join(lines) + "\n" + _tensor_block("input", inputs) + _tensor_block("output", outputs)
    )
    text += f"instance_group [\n  {{\n    count: {instance_count}\n    kind: KIND_CPU\n  }}\n]\n"
    if dynamic_batching:
        preferred = "".join(f"  preferred_batch_size: {n}\n" for n in preferred_batch_sizes or ())
        text += (
            f"dynamic_batching {{\n{preferred}"
            f"  max_queue_delay_microseconds: {max_queue_delay_us}\n}}\n"
        )
    params: dict[str, str] = {}
    if backend == "python":
        params["onnx_file"] = "model.onnx"
        params["intra_op_num_threads"] = str(threads or 0)
    elif threads:
        params["intra_op_thread_count"] = str(threads)  # the onnxruntime backend's name
    for key, value in params.items():
        text += f'parameters {{\n  key: "{key}"\n  value {{ string_value: "{value}" }}\n}}\n'
    return text


def write_model_repository(
    onnx_path: str | os.PathLike[str],
    repo_dir: str | os.PathLike[str],
    name: str,
    *,
    max_batch_size: int = 256,
    dynamic_batching: bool = True,
    preferred_batch_sizes: Sequence[int] | None = None,
    max_queue_delay_us: int = 100,
    instance_count: int = 1,
    backend: Backend = "python",
    threads: int | None = None,
) -> Path:
    """Add the ONNX model ``onnx_path`` to the Triton model repository ``repo_dir`` as ``name``.

    Writes ``repo_dir/name/config.pbtxt``, ``repo_dir/name/1/model.onnx`` (a copy; plus
    ``1/model.py`` for the Python backend) and copies ``<stem>.preprocessing.json`` beside the
    config when it exists. An existing model of that name is replaced.

    Args:
        onnx_path: a float32 model with a leading dynamic batch axis (as
            :func:`fastreco.deploy.onnx.export_module` writes).
        repo_dir: the model repository (created if missing).
        name: model name in URLs and requests: letters, digits, ``_``, ``.`` and ``-``.
        max_batch_size: most events in one request and in one batch the server forms.
        dynamic_batching: let the server merge concurrent requests into one batch.
        preferred_batch_sizes: batch sizes the dynamic batcher aims for (each ≤
            ``max_batch_size``); None: as large as possible.
        max_queue_delay_us: longest a request waits for others to batch with [µs].
        instance_count: model instances (each with its own ONNX Runtime session) on the CPU.
        backend: ``"python"`` (ONNX Runtime inside Triton's Python backend: what the
            ``nvidia-pytriton`` server has) or ``"onnxruntime"`` (Triton's native backend).
        threads: ONNX Runtime intra-op threads per instance (None: ONNX Runtime's default).

    Returns:
        The model's folder ``repo_dir/name``.

    Raises:
        InputError: a bad name or option, or a model that is not float32 with a batch axis.
    """
    onnx_path = Path(onnx_path)
    if not _NAME_RE.match(name):
        raise InputError(
            "a model name takes letters, digits, '_', '.' and '-'", field="name", value=name
        )
    if backend not in ("python", "onnxruntime"):
        raise InputError("backend is 'python' or 'onnxruntime'", field="backend", value=backend)
    if max_batch_size < 1:
        raise InputError("must be at least 1", field="max_batch_size", value=max_batch_size)
    if instance_count < 1:
        raise InputError("must be at least 1", field="instance_count", value=instance_count)
    for n in preferred_batch_sizes or ():
        if not 1 <= n <= max_batch_size:
            raise InputError(
                f"must lie in 1..max_batch_size ({max_batch_size})",
                field="preferred_batch_sizes",
                value=n,
            )
    if not onnx_path.is_file():
        raise InputError("no such ONNX file", source=onnx_path)
    inputs, outputs = _onnx_io(onnx_path)
    config = model_config_text(
        name,
        inputs,
        outputs,
        backend=backend,
        max_batch_size=max_batch_size,
        dynamic_batching=dynamic_batching,
        preferred_batch_sizes=preferred_batch_sizes,
        max_queue_delay_us=max_queue_delay_us,
        instance_count=instance_count,
        threads=threads,
    )
    model_dir = Path(repo_dir) / name
    if model_dir.exists():
        shutil.rmtree(model_dir)
    version = model_dir / "1"
    version.mkdir(parents=True)
    shutil.copyfile(onnx_path, version / "model.onnx")
    if backend == "python":
        (version / "model.py").write_text(MODEL_PY, encoding="utf-8")
    pre = onnx_path.with_name(onnx_path.stem + ".preprocessing.json")
    if pre.is_file():
        shutil.copyfile(pre, model_dir / "model.preprocessing.json")
    (model_dir / "config.pbtxt").write_text(config, encoding="utf-8")
    log.info("wrote Triton model %s (%s backend) in %s", name, backend, repo_dir)
    return model_dir


# --------------------------------------------------------------------------- the server


def _repo_root() -> Path:
    """The source checkout this package runs from (``src/fastreco/deploy`` -> root)."""
    return Path(__file__).resolve().parents[3]


def find_tritonserver() -> Path:
    """The ``tritonserver`` binary: ``$FASTRECO_TRITONSERVER``, else the one in
    ``.venv-triton/`` (of the checkout, then of the current directory), else one on ``PATH``.

    Raises:
        TritonError: none found (``make triton-env`` installs one).
    """
    env = os.environ.get(ENV_BINARY)
    if env:
        path = Path(env)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise TritonError(f"${ENV_BINARY}={env} is not an executable file")
    for root in dict.fromkeys((_repo_root(), Path.cwd())):
        hits = sorted(
            (root / TRITON_VENV).glob(
                "lib/python3*/site-packages/pytriton/tritonserver/bin/tritonserver"
            )
        )
        if hits:
            return hits[-1]
    which = shutil.which("tritonserver")
    if which:
        return Path(which)
    raise TritonError(
        "no tritonserver found: `make triton-env` installs one in .venv-triton/ "
        f"(or set ${ENV_BINARY} to a tritonserver binary)"
    )


def _end_group(pgid: int, grace: float) -> None:
    """Wait up to ``grace`` seconds for the process group ``pgid`` to end, then SIGKILL it."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
        log.warning("killed the Python-backend stubs left by tritonserver (group %d)", pgid)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _venv_python(binary: Path) -> Path | None:
    """The interpreter of the virtual environment that contains ``binary``, if any."""
    for parent in binary.resolve().parents:
        if (parent / "pyvenv.cfg").is_file() and (parent / "bin" / "python").exists():
            return parent / "bin" / "python"
    return None


def _python_facts(python: Path) -> dict[str, str]:
    """``version`` (``3.11``) and ``libdir`` (where its ``libpython`` lives) of an interpreter."""
    code = (
        "import json, sys, sysconfig; print(json.dumps({'version': '%d.%d' % sys.version_info[:2],"
        " 'libdir': sysconfig.get_config_var('LIBDIR') or ''}))"
    )
    try:
        out = subprocess.run(
            [str(python), "-c", code], capture_output=True, text=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise TritonError(f"cannot run the Triton Python environment {python}: {exc}") from None
    return json.loads(out)


class TritonServer:
    """A ``tritonserver`` process serving a model repository on loopback, as a context manager.

    On entry the server starts on free ports (or the ones given) bound to ``host``, and entry
    returns once every model in the repository is loaded and ready; on exit it gets SIGTERM,
    then SIGKILL after ``stop_timeout`` seconds. Its log goes to ``log_path`` (default: a
    temporary file); :meth:`log_tail` reads its end.

    With the ``nvidia-pytriton`` server (``make triton-env``), the Python backend is assembled
    in a temporary backend directory with the stub of the environment's Python version, and the
    stub embeds that environment's interpreter (``PATH``, and its ``sysconfig`` ``LIBDIR`` on
    ``LD_LIBRARY_PATH`` so that the right ``libpython`` loads).

    Args:
        repo_dir: the model repository (see :func:`write_model_repository`).
        http_port, grpc_port: ports (None: a free one each).
        host: address the HTTP and gRPC endpoints bind to.
        metrics: serve Prometheus metrics (on a free port, ``metrics_url``).
        binary: the ``tritonserver`` binary (None: :func:`find_tritonserver`).
        python: interpreter of the environment the Python backend runs in (None:
            ``$FASTRECO_TRITON_PYTHON``, else the virtual environment holding ``binary``).
        startup_timeout: seconds to wait for readiness before giving up.
        stop_timeout: seconds between SIGTERM and SIGKILL.
        log_path: file for the server's stdout and stderr.
        extra_args: more ``tritonserver`` options, e.g. ``("--log-verbose=1",)``.

    Attributes:
        http_url, grpc_url: ``host:port`` of the endpoints, as ``tritonclient`` takes them.
    """

    def __init__(
        self,
        repo_dir: str | os.PathLike[str],
        *,
        http_port: int | None = None,
        grpc_port: int | None = None,
        host: str = "127.0.0.1",
        metrics: bool = False,
        binary: str | os.PathLike[str] | None = None,
        python: str | os.PathLike[str] | None = None,
        startup_timeout: float = 120.0,
        stop_timeout: float = 15.0,
        log_path: str | os.PathLike[str] | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.repo_dir = Path(repo_dir).resolve()
        if not self.repo_dir.is_dir():
            raise InputError("no such model repository (a folder)", source=repo_dir)
        self.host = host
        self._ports = (http_port, grpc_port)
        self.metrics = metrics
        self.binary = Path(binary) if binary is not None else None
        self.python = Path(python) if python is not None else None
        self.startup_timeout = float(startup_timeout)
        self.stop_timeout = float(stop_timeout)
        self._log_arg = Path(log_path) if log_path is not None else None
        self.extra_args = tuple(extra_args)
        self.process: subprocess.Popen[bytes] | None = None
        self.http_port = self.grpc_port = self.metrics_port = 0
        self.log_path: Path | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._last_log = ""
        self._shm_prefix = ""

    # -- addresses
    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str | None:
        return f"http://{self.host}:{self.metrics_port}/metrics" if self.metrics else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # -- context manager
    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _backend_setup(self, binary: Path) -> tuple[list[str], dict[str, str]]:
        """Extra arguments and environment for the pytriton layout (binary beside
        ``python_backend_stubs/``); nothing for a standard installation."""
        dist = binary.resolve().parent.parent
        stubs = dist / "python_backend_stubs"
        if not stubs.is_dir():
            return [], {}
        python = self.python or (Path(os.environ[ENV_PYTHON]) if ENV_PYTHON in os.environ else None)
        python = python or _venv_python(binary)
        if python is None:
            raise TritonError(
                f"no Python environment for the Python backend of {binary}: "
                f"set ${ENV_PYTHON} or pass python="
            )
        facts = _python_facts(python)
        stub = stubs / facts["version"] / "triton_python_backend_stub"
        if not stub.is_file():
            found = sorted(p.name for p in stubs.iterdir())
            raise TritonError(
                f"{binary} has no Python-backend stub for Python {facts['version']} "
                f"of {python} (it has {', '.join(found)})"
            )
        assert self._tmp is not None
        backend = Path(self._tmp.name) / "backends" / "python"
        backend.mkdir(parents=True)
        for item in (dist / "backends" / "python").iterdir():
            if item.is_file():
                os.symlink(item, backend / item.name)
        shutil.copy2(stub, backend / "triton_python_backend_stub")
        libs = [facts["libdir"], str(dist.parent.parent / "nvidia_pytriton.libs")]
        old = os.environ.get("LD_LIBRARY_PATH")
        env = {
            "LD_LIBRARY_PATH": ":".join([*filter(None, libs), *([old] if old else [])]),
            # the stub's embedded interpreter finds its prefix (the venv) from `python3` on PATH
            "PATH": f"{Path(python).parent}:{os.environ.get('PATH', '')}",
            "PYTHONNOUSERSITE": "1",
        }
        prefix = self._shm_prefix = f"fastreco_{os.getpid()}_{uuid.uuid4().hex[:8]}_"
        args = [
            f"--backend-directory={backend.parent}",
            # a prefix of our own: servers running side by side share /dev/shm
            f"--backend-config=python,shm-region-prefix-name={prefix}",
        ]
        return args, env

    def start(self) -> TritonServer:
        """Start the server and wait until it is ready (returns ``self``).

        Ports picked here are free when picked; if another process takes one before the server
        binds it, the server is started again on other ports (three tries).

        Raises:
            TritonError: no binary, or the server exited or was not ready within
                ``startup_timeout`` (the message has the log's errors and last lines).
        """
        if self.running:
            return self
        binary = self.binary or find_tritonserver()
        self._tmp = tempfile.TemporaryDirectory(prefix="fastreco-triton-")
        try:
            args, env_extra = self._backend_setup(binary)
            self.log_path = self._log_arg or Path(self._tmp.name) / "tritonserver.log"
            for attempt in range(1, 4):
                self._launch(binary, args, env_extra)
                try:
                    self._wait_ready()
                    break
                except TritonError:
                    if attempt == 3 or not self._lost_port_race():
                        raise
                    log.info("a port was taken before tritonserver bound it: new ports")
        except BaseException:
            self.stop()
            raise
        log.info("tritonserver ready: http %s, grpc %s", self.http_url, self.grpc_url)
        return self

    def _lost_port_race(self) -> bool:
        """Whether the server exited because a port picked here (not one given) was taken."""
        if self.process is None or self.process.poll() is None:
            return False
        taken = {
            int(port) for port in re.findall(r":(\d+)' already in use", self.log_tail(100_000))
        }
        given = {port for port in self._ports if port}
        return bool(taken) and not taken & given

    def _launch(self, binary: Path, args: list[str], env_extra: dict[str, str]) -> None:
        if self.process is not None:  # a failed try: none of its stubs may stay
            _end_group(self.process.pid, grace=0.5)
        self.http_port = self._ports[0] or _free_port(self.host)
        self.grpc_port = self._ports[1] or _free_port(self.host)
        cmd = [
            str(binary),
            f"--model-repository={self.repo_dir}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            "--exit-timeout-secs=5",
            *args,
        ]
        if self.metrics:
            self.metrics_port = _free_port(self.host)
            cmd += [
                "--allow-metrics=true",
                f"--metrics-address={self.host}",
                f"--metrics-port={self.metrics_port}",
            ]
        else:
            cmd.append("--allow-metrics=false")
        cmd += self.extra_args
        log.info("starting %s", " ".join(cmd))
        assert self.log_path is not None
        with open(self.log_path, "wb") as logfile:
            # its own session: Ctrl-C in a terminal reaches us, and we stop it in order
            self.process = subprocess.Popen(
                cmd,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **env_extra},
                start_new_session=True,
            )

    def _log_where(self) -> str:
        if self._log_arg is not None:
            return f"log: {self._log_arg}"
        return "its temporary log is deleted; pass log_path= to keep one"

    def _wait_ready(self) -> None:
        url = f"http://{self.http_url}/v2/health/ready"
        deadline = time.monotonic() + self.startup_timeout
        while True:
            assert self.process is not None
            code = self.process.poll()
            if code is not None:
                raise TritonError(
                    f"tritonserver exited with code {code} while starting "
                    f"({self._log_where()}):\n{self.log_errors()}"
                )
            # refused until it listens, 400 until every model is ready
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
            if time.monotonic() > deadline:
                raise TritonError(
                    f"tritonserver not ready after {self.startup_timeout:.0f} s "
                    f"({self._log_where()}):\n{self.log_errors()}"
                )
            time.sleep(0.2)

    def stop(self) -> int | None:
        """Stop the server (SIGTERM, SIGKILL to its process group after ``stop_timeout``);
        returns its exit code (None if it never started). Safe to call twice."""
        code = None
        proc = self.process
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    log.warning(
                        "tritonserver ignored SIGTERM for %.0f s: killing", self.stop_timeout
                    )
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            # its Python-backend stubs are in its process group: none may outlive it
            _end_group(proc.pid, grace=2.0)
            code = proc.returncode
            log.info("tritonserver stopped (exit code %s)", code)
        if self._shm_prefix:
            # shared-memory regions of our stubs (the prefix is this server's alone)
            for region in Path("/dev/shm").glob(f"{self._shm_prefix}*"):
                log.debug("removing leftover shared memory %s", region)
                region.unlink(missing_ok=True)
        if self._tmp is not None:
            if self.log_path is not None and self._log_arg is None and self.log_path.exists():
                self._last_log = self.log_tail(5000)
            self._tmp.cleanup()
            self._tmp = None
        return code

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the server's log."""
        if self.log_path is None or not self.log_path.exists():
            return "\n".join(self._last_log.splitlines()[-lines:])
        text = self.log_path.read_bytes().decode("utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def log_errors(self, lines: int = 12) -> str:
        """What explains a failure: the log's error lines (``E....`` and ``error:``, each cut
        to 600 characters), then its last ``lines`` lines without the status tables."""
        text = self.log_tail(100_000)
        errors = [
            line[:600]
            for line in text.splitlines()
            if _ERROR_LINE.match(line) and not any(h in line for h in _HARMLESS)
        ]
        tail = [line for line in text.splitlines() if line.strip() and line[:1] not in "|+"]
        return "\n".join([*(["errors:", *errors] if errors else []), "last lines:", *tail[-lines:]])


#: Error lines of a Triton log: ``E1201 14:08:12.822174 ...`` and the final ``error: ...``.
_ERROR_LINE = re.compile(r"^(E\d{4} |error: )")
#: Errors every CPU-only start logs (no CUDA driver): not the cause of a failure.
_HARMLESS = ("CudaDriverHelper has not been initialized",)


# --------------------------------------------------------------------------- the client


def _client_module(protocol: str) -> Any:
    if protocol not in ("http", "grpc"):
        raise InputError("protocol is 'http' or 'grpc'", field="protocol", value=protocol)
    try:
        if protocol == "http":
            import tritonclient.http as module
        else:
            import tritonclient.grpc as module
    except ImportError as exc:
        raise TritonError(
            f"tritonclient is not installed ({exc}): pip install 'fastreco[serve]'"
        ) from None
    return module


class ModelClient:
    """A ``tritonclient`` client (HTTP or gRPC) of one served model.

    Reads the model's config once (input and output names, ``max_batch_size``) and splits every
    array into requests of at most ``max_batch_size`` events. Not thread-safe: use one client
    per thread.

    Args:
        url: ``host:port`` of the endpoint (:attr:`TritonServer.http_url` or ``grpc_url``).
        model: the model's name in the repository.
        protocol: ``"http"`` or ``"grpc"``.
        timeout: network timeout [s].
    """

    def __init__(
        self, url: str, model: str, protocol: Protocol = "http", *, timeout: float = 60.0
    ) -> None:
        self._mod = _client_module(protocol)
        self.url, self.model, self.protocol = url, model, protocol
        if protocol == "http":
            self._client = self._mod.InferenceServerClient(
                url, connection_timeout=timeout, network_timeout=timeout
            )
        else:
            self._client = self._mod.InferenceServerClient(url)
        self.timeout = timeout
        if protocol == "http":
            config = self._call(self._client.get_model_config, model)
        else:  # {"config": ModelConfig as JSON, with the proto's field names}
            config = self._call(self._client.get_model_config, model, as_json=True)["config"]
        self.max_batch_size = int(config.get("max_batch_size", 0))
        self.input_name = str(config["input"][0]["name"])
        self.output_names = [str(spec["name"]) for spec in config["output"]]

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from tritonclient.utils import InferenceServerException

        try:
            return fn(*args, **kwargs)
        except InferenceServerException as exc:
            raise TritonError(
                f"Triton at {self.url} ({self.protocol}), model '{self.model}': {exc.message()}"
            ) from None

    def infer(self, x: npt.ArrayLike) -> np.ndarray:
        """The model's first output for ``x``.

        Shapes:
            - **x**: (n, *input_dims), cast to float32
            - **return**: (n, *output_dims), float32

        Raises:
            TritonError: the server rejected a request (wrong shape, unknown model, ...).
        """
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.max_batch_size <= 0:  # a model without a batch axis: one request
            return self._request(x)
        if len(x) == 0:
            raise InputError("no events to infer", field="x", value=x.shape)
        parts = [
            self._request(x[start : start + self.max_batch_size])
            for start in range(0, len(x), self.max_batch_size)
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _request(self, x: np.ndarray) -> np.ndarray:
        inp = self._mod.InferInput(self.input_name, list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        out = self._mod.InferRequestedOutput(self.output_names[0])
        kwargs: dict[str, Any] = {"outputs": [out]}
        if self.protocol == "grpc":
            kwargs["client_timeout"] = self.timeout
        result = self._call(self._client.infer, self.model, [inp], **kwargs)
        return result.as_numpy(self.output_names[0])

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ModelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def infer(
    url: str,
    model: str,
    x: npt.ArrayLike,
    protocol: Protocol = "http",
    *,
    timeout: float = 60.0,
) -> np.ndarray:
    """Run ``x`` through the served ``model`` (one-shot :class:`ModelClient`).

    Shapes:
        - **x**: (n, *input_dims), cast to float32; sent in requests of at most the model's
          ``max_batch_size`` events
        - **return**: (n, *output_dims), float32, the model's first output

    Raises:
        TritonError: the server rejected a request or cannot be reached.
    """
    with ModelClient(url, model, protocol, timeout=timeout) as client:
        return client.infer(x)
