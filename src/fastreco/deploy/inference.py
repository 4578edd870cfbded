"""Inference with a trained run: load its model, run it with PyTorch or ONNX Runtime, and predict
every event of an event store next to the classical reconstruction.

Raw model outputs (shape ``(n, n_out)``, float32) are turned into named per-event columns by
:func:`postprocess`:

* two classes: one logit ``l`` of class 1, so ``p_<class1> = sigmoid(l)`` and
  ``p_<class0> = sigmoid(-l)`` (class 0, e.g. the photon, is the signal); ``predicted`` is the
  index of the most probable class;
* more classes: ``p_<class>`` = softmax of the logits, ``predicted`` = argmax;
* regression: ``correction`` = the predicted ``E_true / E_reference`` and ``e_pred`` =
  ``correction * reference`` [GeV] (``task.reference``, one of
  :data:`fastreco.config.REFERENCE_ENERGIES`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from scipy.special import expit, softmax

from fastreco.config import TaskConfig
from fastreco.errors import InputError
from fastreco.models import build_model
from fastreco.train.runner import best_checkpoint, load_run

log = logging.getLogger(__name__)

Backend = Literal["torch", "onnx"]
BACKENDS: tuple[str, ...] = ("torch", "onnx", "triton")

#: A predictor maps model inputs (n, *input_shape) float32 to raw outputs (n, n_out) float32.
Predictor = Callable[[np.ndarray], np.ndarray]


def select_device(device: str | torch.device | None = None) -> torch.device:
    """The torch device to run on: CUDA when available (``None`` or ``"auto"``), else the CPU.

    An explicit ``"cuda"`` on a machine without a GPU is an :class:`InputError`.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("CUDA is not available on this machine", field="device", value=str(dev))
    return dev


def n_outputs(task: TaskConfig) -> int:
    """Outputs of a task's model (1 logit for two classes, one per class beyond, 1 value)."""
    from fastreco.train.module import n_outputs as _n_outputs

    return _n_outputs(task)


@dataclasses.dataclass
class LoadedRun:
    """A run's model, in eval mode on ``device``, with its task and ``run.json``.

    Attributes:
        model: the bare ``torch.nn.Module`` (no Lightning wrapper).
        task: the run's task.
        info: ``run.json``.
        input_shape: shape of one input, without the batch axis.
        checkpoint: the checkpoint the weights were read from.
    """

    model: torch.nn.Module
    task: TaskConfig
    info: dict[str, Any]
    input_shape: tuple[int, ...]
    checkpoint: Path
    device: torch.device


def load_model(
    run_dir: str | os.PathLike[str], device: str | torch.device | None = "cpu"
) -> LoadedRun:
    """The model of a run folder (best checkpoint, else last), in eval mode.

    Raises:
        InputError: not a run folder, an incompatible version, no checkpoint, or a checkpoint
            that does not fit the run's model.
    """
    task, info = load_run(run_dir)
    ckpt_path = best_checkpoint(run_dir)
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        state = ckpt["state_dict"]
    except Exception as exc:  # a truncated or foreign file: torch raises many kinds
        raise InputError(f"unreadable checkpoint ({exc})", source=ckpt_path) from None
    input_shape = tuple(int(v) for v in info["input_shape"])
    model = build_model(task.model.name, input_shape, n_outputs(task), **task.model.params)
    weights = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise InputError(
            f"checkpoint does not fit the run's model '{task.model.name}': {exc}", source=ckpt_path
        ) from None
    dev = select_device(device)
    model.to(dev).eval()
    return LoadedRun(model, task, info, input_shape, Path(ckpt_path), dev)


def torch_predictor(
    model: torch.nn.Module, device: torch.device | None = None, batch_size: int = 1024
) -> Predictor:
    """A predictor running ``model`` (eval mode, no autograd) in mini-batches on ``device``."""
    dev = device or next(model.parameters()).device
    model.eval()

    def predict(x: np.ndarray) -> np.ndarray:
        outs = []
        with torch.inference_mode():
            for start in range(0, len(x), batch_size):
                xb = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size]))
                outs.append(model(xb.to(dev, non_blocking=True)).float().cpu().numpy())
        if not outs:
            return np.zeros((0, 1), dtype=np.float32)
        return np.concatenate(outs)

    return predict


def onnx_session(
    path: str | os.PathLike[str], *, threads: int | None = None, providers: list[str] | None = None
) -> Any:
    """An ONNX Runtime session of ``path``; CUDA first when ONNX Runtime has it.

    Args:
        threads: intra-op threads (None: ONNX Runtime's default, all cores).
        providers: execution providers; default CUDA (if available) then CPU.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    if providers is None:
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers)


def onnx_predictor(session: Any, batch_size: int = 1024) -> Predictor:
    """A predictor running an ONNX Runtime session (one input, first output) in mini-batches."""
    name = session.get_inputs()[0].name

    def predict(x: np.ndarray) -> np.ndarray:
        outs = []
        for start in range(0, len(x), batch_size):
            xb = np.ascontiguousarray(x[start : start + batch_size], dtype=np.float32)
            outs.append(session.run(None, {name: xb})[0])
        if not outs:
            return np.zeros((0, 1), dtype=np.float32)
        return np.concatenate(outs)

    return predict


def run_onnx_path(run_dir: str | os.PathLike[str]) -> Path:
    """``RUN/model.onnx``, exported first if missing or older than the run's checkpoint."""
    from fastreco.deploy.onnx import export_onnx

    path = Path(run_dir) / "model.onnx"
    ckpt = best_checkpoint(run_dir)
    if not path.exists() or path.stat().st_mtime < ckpt.stat().st_mtime:
        log.info("exporting %s to ONNX (%s)", run_dir, "stale" if path.exists() else "missing")
        export_onnx(run_dir, path)
    return path


def make_predictor(
    run_dir: str | os.PathLike[str],
    backend: str = "onnx",
    *,
    device: str | torch.device | None = None,
    batch_size: int = 1024,
    server: str | None = None,
) -> Predictor:
    """A predictor of a run's raw outputs with ``backend`` ``"onnx"`` (ONNX Runtime, exporting
    ``RUN/model.onnx`` on the fly if needed), ``"torch"`` (on :func:`select_device`) or
    ``"triton"`` (the run's model as served by the Triton server at ``server``, ``host:port``
    of its HTTP endpoint, under the name ``fastreco export RUN --triton`` gave it)."""
    if backend == "triton" or server is not None:
        from fastreco.deploy.triton import ModelClient, model_name

        if server is None:
            raise InputError("the triton backend needs a server address", field="server")
        return ModelClient(server.removeprefix("http://"), model_name(run_dir), "http").infer
    if backend == "torch":
        loaded = load_model(run_dir, device)
        return torch_predictor(loaded.model, loaded.device, batch_size)
    if backend == "onnx":
        return onnx_predictor(onnx_session(run_onnx_path(run_dir)), batch_size)
    raise InputError(
        f"unknown backend; choose from {list(BACKENDS)}", field="backend", value=backend
    )


def postprocess(
    task: TaskConfig, raw: npt.ArrayLike, reference: npt.ArrayLike | None = None
) -> dict[str, np.ndarray]:
    """Named per-event prediction columns from raw outputs (see the module docstring).

    Args:
        raw: shape (n, n_out), the model's outputs.
        reference: shape (n,), the task's reference energy (``task.reference``) [GeV]
            (regression only).
    """
    out = np.asarray(raw, dtype=np.float64)
    out = out.reshape(len(out), -1)
    if task.kind == "regression":
        if reference is None:
            raise ValueError(f"regression needs its reference energy ({task.reference})")
        corr = out[:, 0]
        return {
            "correction": corr.astype(np.float32),
            "e_pred": (corr * np.asarray(reference, dtype=np.float64)).astype(np.float32),
        }
    if out.shape[1] == 1:
        p1 = expit(out[:, 0])
        probs = np.stack([expit(-out[:, 0]), p1], axis=1)  # sigmoid(-l) keeps precision near 1
    else:
        probs = softmax(out, axis=1)
    cols = {f"p_{name}": probs[:, k] for k, name in enumerate(task.classes)}
    cols["predicted"] = probs.argmax(axis=1).astype(np.int16)
    return cols


def predict_store(
    run_dir: str | os.PathLike[str],
    store_path: str | os.PathLike[str],
    backend: str = "onnx",
    *,
    batch_size: int = 10_000,
    device: str | torch.device | None = None,
    server: str | None = None,
) -> pd.DataFrame:
    """Predict every event of an event store with a trained run, beside the classical reco
    (``server``: send the batches to that Triton server instead, see :func:`make_predictor`).

    Returns:
        One row per event: ``event`` (global index), the columns of
        :func:`fastreco.reco.pipeline.reconstruct_batch` (shower shapes, truth), then the
        prediction columns of :func:`postprocess` (``p_<class>`` and ``predicted``, or
        ``correction`` and ``e_pred`` [GeV]).
    """
    from fastreco.data.representations import build_inputs
    from fastreco.data.store import EventStore
    from fastreco.reco.pipeline import reconstruct_batch

    task, info = load_run(run_dir)
    store = EventStore(store_path)
    predictor = make_predictor(run_dir, backend, device=device, server=server)
    expected = tuple(int(v) for v in info["input_shape"])
    frames = []
    first = 0
    for batch in store.iter_batches(batch_size):
        x, aux = build_inputs(batch, store.detector, task.representation)
        if tuple(x.shape[1:]) != expected:
            raise InputError(
                f"the store gives inputs of shape {tuple(x.shape[1:])}, the model takes {expected}",
                source=store_path,
            )
        cols = postprocess(task, predictor(x), aux.get(task.reference))
        df = reconstruct_batch(batch, store.detector)
        df.insert(0, "event", np.arange(first, first + batch.n_events, dtype=np.int64))
        if task.kind == "regression":
            df["e_window"] = np.asarray(aux["window_sum"], dtype=np.float32)
        for name, values in cols.items():
            df[name] = values
        frames.append(df)
        first += batch.n_events
    log.info("predicted %d events of %s with %s (%s)", first, store_path, run_dir, backend)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_parquet(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write ``df`` to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
