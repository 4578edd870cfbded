"""Int8 quantization of a trained run: post-training with ONNX Runtime, and a quantization-aware
fine-tuning scan in PyTorch.

* :func:`quantize_onnx` quantizes an fp32 ONNX model (from :func:`fastreco.deploy.onnx.export_onnx`)
  with ``onnxruntime.quantization.quantize_static``: QDQ format, int8 weights per output channel,
  int8 activations whose ranges are calibrated (min/max by default) on TRAIN-split inputs. Where
  static quantization fails it falls back to ``quantize_dynamic`` (int8 weights, activations
  quantized at run time) and says so in the result.
* :func:`quantization_report` compares the fp32 and int8 models on the TEST split: AUC and
  background rejection at 90 % signal efficiency (signal = class 0, as
  :mod:`fastreco.evaluate.run`), logit agreement, file sizes and throughput (events/s, batch 256,
  one thread, the two models timed alternately in the same process).
* :func:`qat_scan`: fake quantization to N bits with a straight-through estimator
  (Y. Bengio et al., 2013 <https://arxiv.org/abs/1308.3432>; B. Jacob et al., 2018
  <https://arxiv.org/abs/1712.05877>): the weights of every Linear/Conv layer are rounded
  symmetrically per output channel and the inputs of those layers asymmetrically per tensor, in
  the forward pass, while gradients pass through the rounding. The AUC is measured before
  (post-training fake quantization) and after a short fine-tune (quantization-aware training).
  BatchNorm and the final logit stay in floating point (on hardware BatchNorm folds into the
  neighbouring layer).
* :func:`qat_int8_report`: the deployment path of QAT on a CPU: fine-tune with 8-bit fake
  quantization, fold the fake quantizers away (the weights are then exactly on ONNX Runtime's
  symmetric per-channel int8 grid), export to ONNX and quantize statically with ONNX Runtime; the
  network has learnt to live with 8-bit inputs and activations, so the int8 model keeps the
  accuracy that post-training quantization of the original weights loses.

Run it as a script::

    python -m fastreco.deploy.quantize runs/ecal_gamma_pi0_dnn --output /tmp/compression_dnn
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.utils import parametrize

from fastreco.deploy.prune import (
    PRUNABLE,
    SIGNAL_EFFICIENCY,
    SplitData,
    classification_metrics,
    evaluate_model,
    fine_tune,
    load_split,
    make_console,
    rich_table,
    write_json,
)
from fastreco.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_BITS: tuple[int, ...] = (4, 6, 8)


# --------------------------------------------------------------------------------------------
# ONNX Runtime post-training quantization
# --------------------------------------------------------------------------------------------
def _calibration_reader(input_name: str, x: np.ndarray, batch_size: int) -> Any:
    """A ``CalibrationDataReader`` yielding ``{input_name: x[i:i+batch_size]}`` (float32), full
    batches only: ORT's histogram calibrators (Percentile, Entropy) stack the batches and fail
    on a shorter last one."""
    from onnxruntime.quantization import CalibrationDataReader

    n_full = max(len(x) // batch_size, 1) * batch_size

    class ArrayReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches: Iterator[np.ndarray] = iter(
                np.ascontiguousarray(x[i : i + batch_size], dtype=np.float32)
                for i in range(0, min(n_full, len(x)), batch_size)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {input_name: batch}

    return ArrayReader()


def _preprocess(fp32_path: Path, out_path: Path) -> Path:
    """ONNX Runtime's recommended pre-processing (shape inference, graph optimisation) before
    static quantization; the model unchanged if it fails."""
    from onnxruntime.quantization import quant_pre_process

    try:
        quant_pre_process(str(fp32_path), str(out_path), skip_symbolic_shape=True)
    except Exception as exc:  # optional step: ORT raises many kinds
        log.warning("quant_pre_process failed (%s); quantizing the exported model as is", exc)
        return fp32_path
    return out_path


def quantize_onnx(
    fp32_path: str | os.PathLike[str],
    int8_path: str | os.PathLike[str],
    calibration: np.ndarray | None,
    *,
    method: str = "auto",
    per_channel: bool = True,
    calibrate_method: str = "MinMax",
    batch_size: int = 256,
    float_first_layer: bool = False,
) -> dict[str, Any]:
    """Quantize an fp32 ONNX model to int8.

    Args:
        fp32_path: the fp32 model (one float32 input).
        int8_path: where to write the int8 model.
        calibration: inputs for the activation ranges, shape (n, *input_shape), float32
            (static only).
        method: ``"static"`` (QDQ, calibrated activations), ``"dynamic"`` (int8 weights,
            activations quantized at run time) or ``"auto"`` (static, dynamic if it fails).
        per_channel: one weight scale per output channel (else per tensor).
        calibrate_method: a member of ``onnxruntime.quantization.CalibrationMethod``
            (``MinMax``, ``Percentile``, ``Entropy``).
        float_first_layer: leave the first MatMul/Gemm/Conv (the one reading the raw cells) in
            fp32, so that the input is not rounded to 256 levels.

    Returns:
        ``{"path", "method", "error"}``: the int8 file, the method that produced it and, after
        a fallback, why static quantization failed.
    """
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    if method not in ("auto", "static", "dynamic"):
        raise InputError("choose static, dynamic or auto", field="method", value=method)
    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    error = None
    if method in ("auto", "static"):
        if calibration is None:
            raise InputError("static quantization needs calibration inputs", field="calibration")
        name = ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"])
        input_name = name.get_inputs()[0].name
        pre = _preprocess(fp32_path, int8_path.with_name(int8_path.stem + ".pre.onnx"))
        exclude = [first_layer_node(pre)] if float_first_layer else None
        try:
            quantize_static(
                str(pre),
                str(int8_path),
                _calibration_reader(input_name, calibration, batch_size),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod[calibrate_method],
                nodes_to_exclude=exclude,
            )
            _check_runs(int8_path, input_name, calibration[:4])
            return {"path": int8_path, "method": "static (QDQ, int8 per-channel)", "error": None}
        except Exception as exc:  # ORT raises many kinds; we fall back or re-raise below
            if method == "static":
                raise
            error = f"{type(exc).__name__}: {exc}"
            log.warning("static quantization failed (%s); trying dynamic", error)
        finally:
            if pre != fp32_path:
                pre.unlink(missing_ok=True)
    exclude = [first_layer_node(fp32_path)] if float_first_layer else None
    quantize_dynamic(
        str(fp32_path),
        str(int8_path),
        per_channel=per_channel,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=exclude,
    )
    return {"path": int8_path, "method": "dynamic (int8 weights)", "error": error}


def first_layer_node(path: str | os.PathLike[str]) -> str:
    """Name of the first MatMul / Gemm / Conv node (in graph order) of an ONNX model."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    for node in graph.node:
        if node.op_type in ("MatMul", "Gemm", "Conv"):
            return str(node.name)
    raise InputError("no MatMul, Gemm or Conv node", source=str(path))


def _check_runs(path: Path, input_name: str, x: np.ndarray) -> None:
    """Raise if ONNX Runtime cannot load and run ``path`` on ``x``."""
    from fastreco.deploy.inference import onnx_session

    onnx_session(path, threads=1, providers=["CPUExecutionProvider"]).run(None, {input_name: x})


def measure_throughput(
    paths: dict[str, Path],
    x: np.ndarray,
    *,
    batch_size: int = 256,
    threads: int = 1,
    rounds: int = 5,
    min_seconds: float = 0.5,
) -> dict[str, float]:
    """Events per second of each ONNX model on the CPU with ``threads`` threads at ``batch_size``.

    The models are timed alternately, ``rounds`` times each for at least ``min_seconds`` per
    round, after a warm-up, and the median round is kept: background load on a shared machine
    then affects both alike.

    Args:
        x: inputs, shape (n, *input_shape), n >= batch_size.
    """
    from fastreco.deploy.inference import onnx_session

    sessions = {
        k: onnx_session(p, threads=threads, providers=["CPUExecutionProvider"])
        for k, p in paths.items()
    }
    xb = np.ascontiguousarray(x[:batch_size], dtype=np.float32)
    feeds = {k: {s.get_inputs()[0].name: xb} for k, s in sessions.items()}
    for k, s in sessions.items():  # warm-up
        for _ in range(3):
            s.run(None, feeds[k])
    rates: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for k, s in sessions.items():
            n, t0 = 0, time.perf_counter()
            while True:
                s.run(None, feeds[k])
                n += 1
                dt = time.perf_counter() - t0
                if dt >= min_seconds:
                    break
            rates[k].append(n * len(xb) / dt)
    return {k: float(np.median(v)) for k, v in rates.items()}


def _onnx_outputs(path: Path, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    from fastreco.deploy.inference import onnx_predictor, onnx_session

    session = onnx_session(path, providers=["CPUExecutionProvider"])
    return onnx_predictor(session, batch_size)(x)


def quantization_report(
    run_dir: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    calibration_chunks: int = 20,
    method: str = "auto",
    calibrate_method: str = "MinMax",
    per_channel: bool = True,
    float_input_variant: bool = True,
    batch_size: int = 256,
    threads: int = 1,
    seed: int = 0,
    test: SplitData | None = None,
) -> dict[str, Any]:
    """Export a run to fp32 ONNX, quantize it to int8 and compare the two on the TEST split.

    Args:
        run_dir: a trained classification run folder.
        output: folder of ``model_fp32.onnx`` and ``model_int8.onnx`` (default RUN/compression).
        calibration_chunks: TRAIN chunks (of ~batch-size events) that calibrate activations.
        method, calibrate_method, per_channel: see :func:`quantize_onnx`.
        float_input_variant: also quantize with the first layer in fp32
            (``model_int8_float_input.onnx``, key ``int8_float_input``).
        batch_size, threads: of the throughput measurement.
        test: the test split, if already loaded.

    Returns:
        ``run``, ``method`` (static or dynamic), ``static_error`` (why static failed, or None),
        ``n_test``, ``n_calibration``, ``models`` (the keys below) and per model ``fp32``,
        ``int8`` [, ``int8_float_input``]: ``auc``, ``rejection90``, ``rejection90_err``,
        ``size_bytes``, ``events_per_s``, ``path`` and, for the int8 ones, ``agreement`` with
        fp32 (``max_abs_logit_diff``, ``mean_abs_logit_diff``, ``same_decision_fraction`` on
        either side of the fp32 cut of 90 % signal efficiency).
    """
    from fastreco.deploy.onnx import export_onnx
    from fastreco.train.runner import load_run

    run = Path(run_dir)
    task, info = load_run(run)
    out = Path(output) if output is not None else run / "compression"
    paths = {"fp32": export_onnx(run, out / "model_fp32.onnx")}
    calib = load_split(task, info, "train", max_chunks=calibration_chunks, seed=seed)
    variants = {"int8": False, **({"int8_float_input": True} if float_input_variant else {})}
    methods = {}
    for key, float_first in variants.items():
        q = quantize_onnx(
            paths["fp32"],
            out / f"model_{key}.onnx",
            calib.x,
            method=method,
            per_channel=per_channel,
            calibrate_method=calibrate_method,
            batch_size=batch_size,
            float_first_layer=float_first,
        )
        paths[key] = Path(q["path"])
        methods[key] = q
    test = test or load_split(task, info, "test")
    raw = {key: _onnx_outputs(path, test.x) for key, path in paths.items()}
    rates = measure_throughput(paths, test.x, batch_size=batch_size, threads=threads)
    report: dict[str, Any] = {
        "run": str(run),
        "method": methods["int8"]["method"],
        "static_error": methods["int8"]["error"],
        "calibrate_method": calibrate_method,
        "n_test": len(test),
        "n_calibration": len(calib),
        "throughput": {"batch_size": batch_size, "threads": threads},
        "working_point": SIGNAL_EFFICIENCY,
        "models": list(paths),
    }
    report.update(_model_rows(task, test.y, paths, raw, rates, compared=list(methods)))
    for key in methods:
        report[key]["method"] = methods[key]["method"]
    log.info(
        "%s: fp32 AUC %.4f, int8 AUC %.4f (%s)",
        run,
        report["fp32"]["auc"],
        report["int8"]["auc"],
        report["method"],
    )
    return report


def _model_rows(
    task: Any,
    y: np.ndarray,
    paths: dict[str, Path],
    raw: dict[str, np.ndarray],
    rates: dict[str, float],
    *,
    compared: Sequence[str],
) -> dict[str, dict[str, Any]]:
    """One report row per ONNX model (test-split metrics, file size, throughput, path); the
    ``compared`` ones also get their ``agreement`` with the ``fp32`` model's logits."""
    rows: dict[str, dict[str, Any]] = {}
    for key, path in paths.items():
        rows[key] = {
            **classification_metrics(task, y, raw[key]),
            "size_bytes": path.stat().st_size,
            "events_per_s": rates[key],
            "path": str(path),
        }
    for key in compared:
        diff = np.abs(raw[key].astype(np.float64) - raw["fp32"])
        rows[key]["agreement"] = {
            "max_abs_logit_diff": float(diff.max()),
            "mean_abs_logit_diff": float(diff.mean()),
            "same_decision_fraction": _same_decision(task, y, raw["fp32"], raw[key]),
        }
    return rows


def _same_decision(task: Any, y: np.ndarray, raw32: np.ndarray, raw8: np.ndarray) -> float:
    """Fraction of events on the same side of the fp32 model's 90 %-signal-efficiency cut."""
    from fastreco.deploy.prune import signal_scores

    s32, s8 = signal_scores(task, raw32), signal_scores(task, raw8)
    cut = np.quantile(s32[np.asarray(y) == 0], 1.0 - SIGNAL_EFFICIENCY)
    return float(((s32 >= cut) == (s8 >= cut)).mean())


# --------------------------------------------------------------------------------------------
# fake quantization with a straight-through estimator
# --------------------------------------------------------------------------------------------
def _ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``q`` in the forward pass, the identity's gradient in the backward pass."""
    return x + (q - x).detach()


class WeightFakeQuant(nn.Module):
    """Symmetric per-output-channel fake quantization of a weight to ``bits`` bits (a
    parametrization): ``w_q = clamp(round(w / s), -Q, Q) * s``, ``Q = 2**(bits-1) - 1``,
    ``s = max|w| / Q`` per output channel (axis 0).

    Shapes:
        - **weight:** (out, ...) -> same
    """

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        qmax = 2 ** (self.bits - 1) - 1
        amax = w.detach().abs().flatten(1).amax(1).clamp_min(1e-12)
        scale = (amax / qmax).view(-1, *([1] * (w.ndim - 1)))
        return _ste(w, torch.clamp(torch.round(w / scale), -qmax, qmax) * scale)


class ActFakeQuant(nn.Module):
    """Asymmetric per-tensor fake quantization of an activation to ``bits`` bits over an observed
    range ``[lo, hi]`` (always containing 0, so that 0 is exact): ``2**bits`` levels, step
    ``(hi - lo) / (2**bits - 1)``. Gradients pass inside the range and are zero outside.

    While :attr:`observe` is set, each forward widens the range to the batch's min/max
    (``momentum`` None, for calibration) or moves it by an exponential moving average.
    """

    def __init__(self, bits: int, momentum: float | None = None) -> None:
        super().__init__()
        self.bits = bits
        self.momentum = momentum
        self.observe = False
        self.register_buffer("lo", torch.tensor(0.0))
        self.register_buffer("hi", torch.tensor(0.0))
        self.register_buffer("seen", torch.tensor(False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observe:
            lo, hi = x.detach().min().clamp_max(0.0), x.detach().max().clamp_min(0.0)
            if not bool(self.seen) or self.momentum is None:
                first = not bool(self.seen)
                self.lo.copy_(lo if first else torch.minimum(self.lo, lo))
                self.hi.copy_(hi if first else torch.maximum(self.hi, hi))
                self.seen.fill_(True)
            else:
                self.lo.lerp_(lo, self.momentum)
                self.hi.lerp_(hi, self.momentum)
        if not bool(self.seen):
            return x
        levels = 2**self.bits - 1
        scale = ((self.hi - self.lo) / levels).clamp_min(1e-12)
        zero = torch.round(-self.lo / scale)
        xc = torch.clamp(x, self.lo, self.hi)
        q = (torch.clamp(torch.round(xc / scale) + zero, 0, levels) - zero) * scale
        return _ste(xc, q)


def _quantized_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, PRUNABLE)]


def add_fake_quant(model: nn.Module, bits: int, *, quantize_input: bool = True) -> nn.Module:
    """Fake-quantize (in place) the weights and the inputs of every Linear/Conv layer of
    ``model`` to ``bits`` bits (the first layer's input, the raw cells, only if
    ``quantize_input``). Calibrate the activation ranges with :func:`calibrate` before use."""
    for k, layer in enumerate(_quantized_layers(model)):
        parametrize.register_parametrization(layer, "weight", WeightFakeQuant(bits))
        if k == 0 and not quantize_input:
            continue
        layer.add_module("input_quant", ActFakeQuant(bits))
        layer.register_forward_pre_hook(lambda mod, args: (mod.input_quant(args[0]), *args[1:]))
    return model


def _act_quants(model: nn.Module) -> list[ActFakeQuant]:
    return [m for m in model.modules() if isinstance(m, ActFakeQuant)]


def calibrate(model: nn.Module, x: np.ndarray, batch_size: int = 1024) -> None:
    """Set the activation ranges of a fake-quantized model to the min/max seen on ``x``
    (eval mode: BatchNorm uses its running statistics)."""
    quants = _act_quants(model)
    for q in quants:
        q.observe, q.momentum = True, None
    model.eval()
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            model(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])))
    for q in quants:
        q.observe = False


def qat_scan(
    run_dir: str | os.PathLike[str],
    bits: Sequence[int] = DEFAULT_BITS,
    *,
    epochs: float = 1.0,
    max_train_chunks: int | None = 40,
    lr: float = 1e-4,
    quantize_input: bool = True,
    seed: int = 0,
    test: SplitData | None = None,
) -> pd.DataFrame:
    """AUC and rejection at 90 % signal efficiency against the bit width of weights and
    activations, before (post-training fake quantization) and after quantization-aware
    fine-tuning on the TRAIN split, each from the run's trained weights.

    Returns:
        One row per bit width: ``bits``, ``auc_ptq``, ``rejection90_ptq`` (the trained weights
        fake-quantized), ``auc`` and ``rejection90`` (after QAT) with ``rejection90_err``,
        ``n_train``, ``n_test``, ``seconds``; the first row, ``bits`` 32, is the float model,
        trained (``*_ptq``) and after the same fine-tuning without quantization (the control:
        a short fine-tune alone can change the AUC).
    """
    from fastreco.deploy.inference import load_model

    loaded = load_model(run_dir, "cpu")
    task, info = loaded.task, loaded.info
    train = load_split(task, info, "train", max_chunks=max_train_chunks, seed=seed)
    test = test or load_split(task, info, "test")
    calib = train.x[: min(len(train), 5000)]
    trained_state = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    base = evaluate_model(loaded.model, task, test)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    fine_tune(loaded.model, task, train, epochs=epochs, lr=lr, seed=seed)
    rows = [
        {
            "bits": 32,
            "auc_ptq": base["auc"],
            "rejection90_ptq": base["rejection90"],
            **evaluate_model(loaded.model, task, test),
            "seconds": time.perf_counter() - t0,
        }
    ]
    for b in bits:
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        model = load_model(run_dir, "cpu").model
        model.load_state_dict(trained_state)
        add_fake_quant(model, int(b), quantize_input=quantize_input)
        calibrate(model, calib)
        ptq = evaluate_model(model, task, test)
        for q in _act_quants(model):
            q.observe, q.momentum = True, 0.01
        # observers follow the activations while training, frozen in evaluation
        fine_tune(model, task, train, epochs=epochs, lr=lr, seed=seed)
        for q in _act_quants(model):
            q.observe = False
        qat = evaluate_model(model, task, test)
        rows.append(
            {
                "bits": int(b),
                "auc_ptq": ptq["auc"],
                "rejection90_ptq": ptq["rejection90"],
                **qat,
                "seconds": time.perf_counter() - t0,
            }
        )
        log.info(
            "%d bits: AUC %.4f before, %.4f after QAT (%.1f s)",
            b,
            ptq["auc"],
            qat["auc"],
            rows[-1]["seconds"],
        )
    df = pd.DataFrame(rows)
    df["n_train"], df["n_test"] = len(train), len(test)
    return df


def strip_fake_quant(model: nn.Module) -> nn.Module:
    """Remove (in place) what :func:`add_fake_quant` added: the weights keep their quantized
    values, the activation quantizers and their hooks go (ONNX Runtime quantizes those)."""
    for layer in _quantized_layers(model):
        if parametrize.is_parametrized(layer, "weight"):
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
        if hasattr(layer, "input_quant"):
            del layer.input_quant
            layer._forward_pre_hooks.clear()
    return model


def qat_int8_report(
    run_dir: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    epochs: float = 1.0,
    lr: float = 1e-4,
    max_train_chunks: int | None = 40,
    calibration_events: int = 5000,
    batch_size: int = 256,
    threads: int = 1,
    seed: int = 0,
    test: SplitData | None = None,
) -> dict[str, Any]:
    """Quantization-aware fine-tuning at 8 bits, then ONNX Runtime static int8, against the
    run's fp32 model and an fp32 control fine-tuned the same way, on the TEST split.

    Returns:
        ``run``, ``epochs``, ``lr``, ``n_train``, ``n_test``, ``models`` and per model
        (``fp32`` the trained run, ``fp32_finetuned`` the control, ``qat_int8``): ``auc``,
        ``rejection90``, ``rejection90_err``, ``size_bytes``, ``events_per_s`` (all three timed
        alternately in one process), ``path``; ``qat_int8`` also has ``agreement`` with the
        run's fp32 model.
    """
    from fastreco.deploy.inference import load_model
    from fastreco.deploy.onnx import export_module, export_onnx

    run = Path(run_dir)
    out = Path(output) if output is not None else run / "compression"
    loaded = load_model(run, "cpu")
    task, info = loaded.task, loaded.info
    input_shape = tuple(info["input_shape"])
    train = load_split(task, info, "train", max_chunks=max_train_chunks, seed=seed)
    test = test or load_split(task, info, "test")
    calib = train.x[: min(len(train), calibration_events)]
    paths = {"fp32": export_onnx(run, out / "model_fp32.onnx")}
    trained_state = {k: v.clone() for k, v in loaded.model.state_dict().items()}

    torch.manual_seed(seed)
    fine_tune(loaded.model, task, train, epochs=epochs, lr=lr, seed=seed)
    paths["fp32_finetuned"] = export_module(
        loaded.model, input_shape, out / "model_fp32_finetuned.onnx"
    )

    torch.manual_seed(seed)
    model = load_model(run, "cpu").model
    model.load_state_dict(trained_state)
    add_fake_quant(model, 8, quantize_input=True)
    calibrate(model, calib)
    for q in _act_quants(model):
        q.observe, q.momentum = True, 0.01
    fine_tune(model, task, train, epochs=epochs, lr=lr, seed=seed)
    strip_fake_quant(model)
    qat_fp32 = export_module(model, input_shape, out / "model_qat_fp32.onnx")
    q = quantize_onnx(qat_fp32, out / "model_qat_int8.onnx", calib, method="static")
    paths["qat_int8"] = Path(q["path"])

    raw = {key: _onnx_outputs(path, test.x) for key, path in paths.items()}
    rates = measure_throughput(paths, test.x, batch_size=batch_size, threads=threads)
    report: dict[str, Any] = {
        "run": str(run),
        "epochs": epochs,
        "lr": lr,
        "n_train": len(train),
        "n_test": len(test),
        "throughput": {"batch_size": batch_size, "threads": threads},
        "models": list(paths),
    }
    report.update(_model_rows(task, test.y, paths, raw, rates, compared=["qat_int8"]))
    log.info(
        "%s: fp32 AUC %.4f, QAT int8 AUC %.4f, %.2fx the fp32 throughput",
        run,
        report["fp32"]["auc"],
        report["qat_int8"]["auc"],
        rates["qat_int8"] / rates["fp32"],
    )
    return report


# --------------------------------------------------------------------------------------------
# script
# --------------------------------------------------------------------------------------------
def plot_quantization(
    report: dict[str, Any], qat: pd.DataFrame | None, *, title: str = "", background: str = ""
) -> Any:
    """AUC and rejection at 90 % signal efficiency against bits (fake quantization before and
    after QAT), with the fp32 and ONNX int8 models as horizontal lines; returns the Figure."""
    from fastreco.evaluate import plots as P

    with P.plot_style():
        fig, axes = P.new_figure(1, 2, figsize=(16, 7))
        for ax, col, ylabel in (
            (axes[0, 0], "auc", "AUC"),
            (axes[0, 1], "rejection90", f"{background} rejection at 90 % signal eff."),
        ):
            if qat is not None:
                q = qat[qat["bits"] < 32].sort_values("bits")
                ax.plot(q["bits"], q[f"{col}_ptq"], "s--", label="fake-quantized, no fine-tuning")
                ax.plot(q["bits"], q[col], "o-", label="quantization-aware fine-tuning")
                control = qat[qat["bits"] == 32]
                if len(control):
                    ax.axhline(
                        float(control[col].iloc[0]), color="C0", ls=":", label="fp32 fine-tuned"
                    )
            ax.axhline(report["fp32"][col], color="gray", ls=":", label="fp32 ONNX")
            ax.axhline(report["int8"][col], color="C3", ls="-.", label="int8 ONNX (ORT)")
            if "int8_float_input" in report:
                ax.axhline(
                    report["int8_float_input"][col],
                    color="C4",
                    ls="--",
                    label="int8 ONNX, fp32 first layer",
                )
            ax.set_xlabel("bits (weights and activations)")
            ax.set_ylabel(ylabel)
            ax.legend(fontsize="small")
            P.add_label(ax, title)
    return fig


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.replace(",", " ").split()]


def _report_table(report: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for key in report["models"]:
        r = report[key]
        rows.append(
            {
                "model": key,
                "auc": r["auc"],
                "rejection90": r["rejection90"],
                "size_kB": r["size_bytes"] / 1e3,
                "events_per_s": r["events_per_s"],
                "same_decision": r.get("agreement", {}).get("same_decision_fraction", 1.0),
            }
        )
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fastreco.deploy.quantize RUN [--bits 4,6,8 | --no-qat] [--output DIR]``."""
    from fastreco.train.runner import load_run

    parser = argparse.ArgumentParser(
        prog="python -m fastreco.deploy.quantize", description=__doc__.splitlines()[0]
    )
    parser.add_argument("run", type=Path, help="a trained classification run folder")
    parser.add_argument("--output", type=Path, help="default: RUN/compression")
    parser.add_argument("--method", choices=("auto", "static", "dynamic"), default="auto")
    parser.add_argument("--calibrate-method", default="MinMax", help="MinMax, Percentile, Entropy")
    parser.add_argument("--calibration-chunks", type=int, default=20)
    parser.add_argument("--bits", type=_ints, action="extend", help="QAT bit widths (4,6,8)")
    parser.add_argument("--no-qat", action="store_true", help="skip the QAT scan")
    parser.add_argument("--qat-epochs", type=float, default=1.0)
    parser.add_argument("--max-train-chunks", type=int, default=40, help="QAT; 0: all")
    parser.add_argument("--float-input", action="store_true", help="QAT: keep the input float")
    parser.add_argument(
        "--qat-int8",
        action="store_true",
        help="also QAT at 8 bits then ONNX Runtime int8 (writes qat_int8.json)",
    )
    parser.add_argument("--qat-lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="of the throughput measurement")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    console = make_console()
    out = args.output or args.run / "compression"
    try:
        task, info = load_run(args.run)
        test = load_split(task, info, "test")
        report = quantization_report(
            args.run,
            out,
            calibration_chunks=args.calibration_chunks,
            method=args.method,
            calibrate_method=args.calibrate_method,
            threads=args.threads,
            seed=args.seed,
            test=test,
        )
        qat = None
        if not args.no_qat:
            qat = qat_scan(
                args.run,
                args.bits or DEFAULT_BITS,
                epochs=args.qat_epochs,
                max_train_chunks=args.max_train_chunks or None,
                lr=args.qat_lr,
                quantize_input=not args.float_input,
                seed=args.seed,
                test=test,
            )
        qat_int8 = None
        if args.qat_int8:
            qat_int8 = qat_int8_report(
                args.run,
                out,
                epochs=args.qat_epochs,
                lr=args.qat_lr,
                max_train_chunks=args.max_train_chunks or None,
                threads=args.threads,
                seed=args.seed,
                test=test,
            )
    except InputError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        return 2
    write_json(report, out / "quantize.json")
    fmt = {
        "model": "",
        "auc": ".4f",
        "rejection90": "rej",
        "size_kB": ".1f",
        "events_per_s": ".0f",
        "same_decision": ".4f",
    }
    console.print(rich_table(_report_table(report), f"{args.run}: {report['method']}", fmt))
    if report["static_error"]:
        console.print(f"static quantization failed: {report['static_error']}")
    if qat is not None:
        write_json(
            {"run": str(args.run), "epochs": args.qat_epochs, "rows": qat.to_dict("records")},
            out / "qat_scan.json",
        )
        qfmt = {
            "bits": "",
            "auc_ptq": ".4f",
            "rejection90_ptq": "rej",
            "auc": ".4f",
            "rejection90": "rej",
            "seconds": ".1f",
        }
        console.print(rich_table(qat, "Fake quantization (ptq) and QAT, test split", qfmt))
    if qat_int8 is not None:
        write_json(qat_int8, out / "qat_int8.json")
        console.print(
            rich_table(
                _report_table(qat_int8),
                f"{args.run}: QAT 8 bits, then ONNX Runtime static int8",
                fmt,
            )
        )
    fig = plot_quantization(report, qat, title=args.run.name, background=task.classes[-1])
    fig.savefig(out / "quantize.png", dpi=100)
    console.print(f"wrote {out / 'quantize.json'} and {out / 'quantize.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "ActFakeQuant",
    "WeightFakeQuant",
    "add_fake_quant",
    "calibrate",
    "measure_throughput",
    "qat_int8_report",
    "qat_scan",
    "quantization_report",
    "quantize_onnx",
    "strip_fake_quant",
]
