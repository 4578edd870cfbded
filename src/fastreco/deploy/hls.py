"""FPGA firmware of a trained model with hls4ml: convert, write the HLS project, and check the
bit-accurate C++ emulation against PyTorch.

hls4ml (Duarte et al., JINST 13 P07027, arXiv:1804.06913) turns a PyTorch model into an HLS
project (C++ with ``ap_fixed`` arithmetic) for AMD/Xilinx Vitis HLS. :func:`convert_to_hls`
converts a model, writes the project and compiles its C++ with ``g++`` into a shared library,
so that ``hls_model.predict(x)`` runs *exactly* the arithmetic of the firmware (fixed-point
widths, truncation, overflow wrap-around) on the CPU; :func:`hls_agreement` compares it with
PyTorch. Synthesis itself (latency, resources) needs the vendor tools; see
:func:`synthesis_command`.

Importing this module registers the exporter ``"hls4ml"`` (:func:`export_hls`) without importing
hls4ml, which is optional (``pip install fastreco[fpga]``).

Input layout: PyTorch is channels-first ``(C, H, W)``, hls4ml channels-last ``(H, W, C)``.
Every model is converted with ``channels_last_conversion="internal"``: hls4ml converts the
layers (and transposes back before a ``Flatten``, so Dense weights see PyTorch's order) and the
emulation takes channels-last inputs, which :func:`hls_predict` makes from PyTorch-layout ones.
The other settings of hls4ml 1.3.0 are wrong or fail for fastreco's models (found with
``ap_fixed<32,16>``, where the emulation must match PyTorch to ~1e-4):

* ``"off"`` gives wrong outputs for any Dense model (max |Δ| 0.18 on an untrained 13-16-8-1 MLP,
  0.095 on a small ``tmva-dnn``, against 1.6e-4 with ``"internal"``);
* ``"full"`` (hls4ml transposes the input itself) is right for the CNN but wrong for
  ``tmva-dnn`` on a ``(1, 5, 5)`` window (max |Δ| 0.05);
* any setting but ``"off"`` fails with an ``IndexError`` on a ``Flatten`` of a 1-D input (the
  shower-shape MLP): such a ``Flatten`` is a no-op and is removed before converting.

In every case the models end in a ``Linear`` layer, so the output ``(B, n_out)`` has no channel
axis and needs no ``transpose_outputs``.

Precision: ``precision`` is the type of every activation and accumulator; weights, biases and
BatchNorm scales get the integer bits their values need (``fit_parameters``). hls4ml's default
quantization is truncation (towards -inf) with wrap-around on overflow; a wide layer (625 inputs)
accumulates a bias of ~n/2 steps, which a BatchNorm with a large scale (a nearly dead unit; the
seed-000 DNN has one of 328) amplifies. On ``runs/ecal_gamma_pi0_dnn`` this costs ``ap_fixed<16,6>``
AUC 0.741 against 0.777 in PyTorch, while ``ap_fixed<16,6,AP_RND,AP_SAT>`` (rounding, saturation)
gives 0.780 (the default here): check with :func:`main` before choosing.

Command line (see :func:`main`)::

    python -m fastreco.deploy.hls runs/ecal_gamma_pi0_dnn --output /tmp/hls_dnn \\
        --precision "ap_fixed<16,6>" --precision "ap_fixed<8,3>" [--reuse-factor 1] [--events 500]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as _dt
import io
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from fastreco import __version__
from fastreco.deploy.registry import EXPORTERS
from fastreco.errors import FastrecoError, InputError

log = logging.getLogger(__name__)

IoType = Literal["io_parallel", "io_stream"]
IO_TYPES: tuple[str, ...] = ("io_parallel", "io_stream")
#: Rounding and saturation by default: truncation costs the trained DNN 0.04 in AUC (above).
DEFAULT_PRECISION = "ap_fixed<16,6,AP_RND,AP_SAT>"
#: Name of the HLS top function and of the files of the project.
PROJECT_NAME = "fastreco"
#: Metadata written beside the project by :func:`export_hls`.
METADATA_FILE = "fastreco_hls.json"
INSTALL_HINT = "pip install fastreco[fpga]"

_POOL_TYPES = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)


def import_hls4ml() -> ModuleType:
    """The ``hls4ml`` module; a :class:`FastrecoError` saying what to install if it is missing."""
    try:
        import hls4ml
    except ImportError as exc:
        raise FastrecoError(
            f"FPGA firmware needs hls4ml, which is not installed ({exc}): {INSTALL_HINT}"
        ) from None
    return hls4ml


def _check_stream_pooling(model: nn.Module) -> None:
    """hls4ml's streaming pooling needs stride == pool size; otherwise its C++ ``assert`` aborts
    the whole Python process at the first prediction, so refuse before converting."""
    for name, module in model.named_modules():
        if isinstance(module, _POOL_TYPES):
            kernel, stride = module.kernel_size, module.stride
            if (stride if stride is not None else kernel) != kernel:
                raise InputError(
                    f"hls4ml's io_stream pooling needs stride == kernel size; layer '{name}' has "
                    f"kernel {kernel}, stride {stride}: use io_type='io_parallel'",
                    field="io_type",
                    value="io_stream",
                )


def _without_flatten(model: nn.Module, input_shape: tuple[int, ...]) -> nn.Module:
    """A copy of ``model`` without the ``Flatten`` layers of its ``Sequential`` blocks, which
    are no-ops on a 1-D input ``(B, F)`` and which hls4ml 1.3.0 cannot convert there; checked
    to give the same outputs as ``model``, else ``model`` itself is returned."""
    if not any(isinstance(m, nn.Flatten) for m in model.modules()):
        return model
    stripped = copy.deepcopy(model)
    for parent in list(stripped.modules()):
        if isinstance(parent, nn.Sequential):
            for key in [k for k, child in parent.named_children() if isinstance(child, nn.Flatten)]:
                delattr(parent, key)
    x = torch.randn((4, *input_shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        same = torch.equal(model(x), stripped(x))
    return stripped if same else model


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


_FIXED = re.compile(r"^\s*(ap_fixed|fixed)<\s*(\d+)\s*,\s*(-?\d+)\s*(,[^>]*)?>\s*$")


def _parameter_values(model: nn.Module) -> dict[str, dict[str, np.ndarray]]:
    """The parameters hls4ml stores for each layer (named as hls4ml names it, ``net.1`` ->
    ``net_1``): ``weight``/``bias`` of Linear and Conv layers, ``scale``/``bias`` of BatchNorm
    (``scale = gamma / sqrt(var + eps)``, ``bias = beta - mean * scale``, eval mode)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            key = name.replace(".", "_")
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                out[key] = {"weight": module.weight.detach().cpu().numpy()}
                if module.bias is not None:
                    out[key]["bias"] = module.bias.detach().cpu().numpy()
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                var = module.running_var if module.running_var is not None else torch.ones(1)
                mean = module.running_mean if module.running_mean is not None else torch.zeros(1)
                gamma = module.weight if module.weight is not None else torch.ones_like(var)
                beta = module.bias if module.bias is not None else torch.zeros_like(var)
                scale = gamma / torch.sqrt(var + module.eps)
                out[key] = {
                    "scale": scale.cpu().numpy(),
                    "bias": (beta - mean * scale).cpu().numpy(),
                }
    return out


def fitted_precision(precision: str, values: np.ndarray) -> str:
    """``precision`` with as many more integer bits (and as many more bits in all, keeping the
    fractional bits) as ``values`` need not to overflow: ``ap_fixed<16,6>`` and values up to
    327.7 -> ``ap_fixed<20,10>``. Unparsable precisions are returned unchanged."""
    match = _FIXED.match(precision)
    peak = float(np.max(np.abs(values))) if np.size(values) else 0.0
    if match is None or peak == 0.0:
        return precision
    kind, width, integer, rest = (
        match.group(1),
        int(match.group(2)),
        int(match.group(3)),
        match.group(4),
    )
    needed = math.floor(math.log2(peak)) + 2  # sign bit + integer bits of the largest value
    if needed <= integer:
        return precision
    extra = needed - integer
    return f"{kind}<{width + extra},{integer + extra}{rest or ''}>"


def _fit_parameter_precisions(config: dict[str, Any], model: nn.Module, precision: str) -> None:
    """Set, in a ``granularity="name"`` config, every activation and accumulator to
    ``precision`` and every weight, bias and BatchNorm scale to ``precision`` widened to fit
    its values (:func:`fitted_precision`)."""
    params = _parameter_values(model)
    for name, layer in config.get("LayerName", {}).items():
        prec = layer.get("Precision")
        if not isinstance(prec, dict):
            continue
        for key, value in list(prec.items()):
            if value != "auto":
                continue
            if key in ("weight", "bias", "scale") and key in params.get(name, {}):
                prec[key] = fitted_precision(precision, params[name][key])
            else:
                prec[key] = precision
        for key, fitted in prec.items():
            if fitted != precision and key in ("weight", "bias", "scale"):
                log.info("hls4ml: layer %s %s widened to %s to fit its values", name, key, fitted)


def convert_to_hls(
    model: nn.Module,
    input_shape: Sequence[int],
    out_dir: str | os.PathLike[str],
    *,
    precision: str = DEFAULT_PRECISION,
    reuse_factor: int = 1,
    backend: str = "Vitis",
    io_type: IoType = "io_parallel",
    part: str | None = None,
    clock_period: float = 5.0,
    fit_parameters: bool = True,
) -> Any:
    """Convert ``model`` with hls4ml, write its HLS project to ``out_dir`` and compile the C++
    emulation with g++.

    Args:
        model: a PyTorch model taking ``(B, *input_shape)`` float32 and returning ``(B, n_out)``;
            put in eval mode on the CPU (BatchNorm uses its running statistics).
        input_shape: one input without the batch axis, channels-first as in PyTorch.
        out_dir: folder of the HLS project (created; hls4ml overwrites its files).
        precision: the fixed-point type of every weight, activation and accumulator, e.g.
            ``"ap_fixed<16,6>"`` (16 bits, 6 of them integer bits with the sign: range
            [-32, 32), step 2^-10); append ``,AP_RND,AP_SAT`` for rounding and saturation
            instead of truncation and wrap-around.
        reuse_factor: how many times each multiplier is reused (1: fully parallel, lowest
            latency, most DSPs).
        backend: hls4ml backend, ``"Vitis"`` (default) or ``"Vivado"``.
        io_type: ``"io_parallel"`` (arrays) or ``"io_stream"`` (FIFOs, for large CNNs).
        part: FPGA part; ``None`` is the backend's default.
        clock_period: target clock period [ns].
        fit_parameters: give weights, biases and BatchNorm scales the integer bits their
            largest value needs (:func:`fitted_precision`); activations and accumulators stay at
            ``precision``. Without it every parameter is ``precision`` too, as with hls4ml's
            ``granularity="model"``, and a parameter beyond its range wraps around: a trained
            BatchNorm of a nearly dead unit easily has a scale of a few hundred.

    Returns:
        The compiled ``hls4ml.model.ModelGraph``; run it with :func:`hls_predict`.

    Raises:
        FastrecoError: hls4ml is not installed, g++ is missing, hls4ml cannot convert the
            model, or g++ fails to compile the project (the message ends with the compiler's
            output).
        InputError: a bad ``io_type``, ``reuse_factor``, or a layer ``io_stream`` cannot take.
    """
    if io_type not in IO_TYPES:
        raise InputError(f"choose from {list(IO_TYPES)}", field="io_type", value=io_type)
    if int(reuse_factor) < 1:
        raise InputError("must be >= 1", field="reuse_factor", value=reuse_factor)
    hls4ml = import_hls4ml()
    if shutil.which("g++") is None:
        raise FastrecoError("hls4ml compiles its C++ emulation with g++, which is not on PATH")
    model = model.cpu().eval()
    shape = tuple(int(v) for v in input_shape)
    if io_type == "io_stream":
        _check_stream_pooling(model)
    if len(shape) == 1:
        model = _without_flatten(model, shape)
    channels = "internal"  # see the module docstring
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    captured = io.StringIO()  # hls4ml prints its progress and g++'s errors to stdout
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(captured):
            config = hls4ml.utils.config_from_pytorch_model(
                model,
                shape,
                granularity="name" if fit_parameters else "model",
                backend=backend,
                default_precision=precision,
                default_reuse_factor=int(reuse_factor),
                channels_last_conversion=channels,
                transpose_outputs=False,
            )
            if fit_parameters:
                _fit_parameter_precisions(config, model, precision)
            kwargs: dict[str, Any] = {"part": part} if part is not None else {}
            hls_model = hls4ml.converters.convert_from_pytorch_model(
                model,
                output_dir=str(out),
                project_name=PROJECT_NAME,
                backend=backend,
                io_type=io_type,
                hls_config=config,
                clock_period=clock_period,
                **kwargs,
            )
    except FastrecoError:
        raise
    except Exception as exc:  # hls4ml raises bare Exceptions (unsupported layers, bad config)
        raise FastrecoError(
            f"hls4ml could not convert the model ({type(exc).__name__}: {exc})\n"
            f"{_tail(captured.getvalue())}"
        ) from exc
    converted = time.perf_counter()
    try:
        with contextlib.redirect_stdout(captured):
            hls_model.compile()
    except Exception as exc:
        raise FastrecoError(
            f"g++ failed to compile the HLS project in {out} ({exc}); compiler output:\n"
            f"{_tail(captured.getvalue())}"
        ) from exc
    done = time.perf_counter()
    log.debug("hls4ml output:\n%s", captured.getvalue())
    log.info(
        "hls4ml: %s, %s, reuse %d, %s: converted in %.1f s, compiled in %.1f s (%s)",
        precision,
        io_type,
        reuse_factor,
        backend,
        converted - start,
        done - converted,
        out,
    )
    return hls_model


def _channels_last_inputs(hls_model: Any) -> bool:
    """Whether the compiled model expects channels-last inputs (all of :func:`convert_to_hls`)."""
    model_cfg = hls_model.config.config["HLSConfig"]["Model"]
    return model_cfg.get("ChannelsLastConversion") == "internal"


def hls_predict(hls_model: Any, x: np.ndarray) -> np.ndarray:
    """Run the compiled emulation on PyTorch-layout inputs.

    Args:
        x: ``(B, *input_shape)`` channels-first, as PyTorch takes them (transposed to
            channels-last here when the model needs it).

    Returns:
        ``(B, n_out)`` float32 outputs, exactly what the firmware computes (then cast to float).
    """
    x = np.asarray(x, dtype=np.float32)
    if len(x) == 0:
        return np.zeros((0, 1), dtype=np.float32)
    if x.ndim >= 3 and _channels_last_inputs(hls_model):  # (B, C, *spatial)
        x = np.moveaxis(x, 1, -1)  # (B, C, H, W) -> (B, H, W, C)
    out = np.asarray(hls_model.predict(np.ascontiguousarray(x)), dtype=np.float32)
    return out.reshape(len(x), -1)


def torch_outputs(model: nn.Module, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """``(B, n_out)`` float32 outputs of ``model`` (eval mode, CPU) on ``x`` ``(B, *shape)``."""
    model = model.cpu().eval()
    outs = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size], np.float32))
            outs.append(model(xb).float().numpy())
    return np.concatenate(outs).reshape(len(x), -1) if outs else np.zeros((0, 1), np.float32)


def decisions(raw: np.ndarray) -> np.ndarray:
    """Predicted class of raw classifier outputs ``(B, n_out)``: ``logit > 0`` (class 1) for one
    output, the argmax otherwise (see :func:`fastreco.deploy.inference.postprocess`)."""
    raw = np.asarray(raw).reshape(len(raw), -1)
    if raw.shape[1] == 1:
        return (raw[:, 0] > 0).astype(np.int64)
    return raw.argmax(axis=1)


def agreement_of(reference: np.ndarray, emulated: np.ndarray) -> dict[str, float | int]:
    """Agreement of two ``(B, n_out)`` output arrays (PyTorch, emulation).

    Returns:
        ``n`` (events), ``max_abs_diff`` and ``mean_abs_diff`` (over events and outputs, in
        output units, e.g. logits), ``decision_agreement`` (fraction of events with the same
        :func:`decisions`).
    """
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    emu = np.asarray(emulated, dtype=np.float64).reshape(len(emulated), -1)
    if ref.shape != emu.shape:
        raise ValueError(f"outputs of shape {ref.shape} (PyTorch) and {emu.shape} (emulation)")
    diff = np.abs(emu - ref)
    n = len(ref)
    return {
        "n": n,
        "max_abs_diff": float(diff.max()) if n else 0.0,
        "mean_abs_diff": float(diff.mean()) if n else 0.0,
        "decision_agreement": float(np.mean(decisions(ref) == decisions(emu))) if n else 1.0,
    }


def hls_agreement(model: nn.Module, hls_model: Any, x: np.ndarray) -> dict[str, float | int]:
    """Compare the emulation ``hls_model`` with ``model`` in PyTorch on inputs ``x``
    ``(B, *input_shape)`` (PyTorch layout); see :func:`agreement_of` for the keys."""
    return agreement_of(torch_outputs(model, x), hls_predict(hls_model, x))


def synthesis_command(out_dir: str | os.PathLike[str], backend: str = "Vitis") -> str:
    """The shell command that synthesizes the project in ``out_dir`` with the vendor tools.

    Synthesis cannot run without AMD/Xilinx tools. With them installed (``vitis-run`` of Vitis
    2024.2 or later on PATH), either from Python::

        hls_model.build(csim=False, synth=True, cosim=False)   # writes build_opt.tcl, then runs
                                                               # vitis-run --mode hls --tcl build_prj.tcl
        hls4ml.report.read_vivado_report("OUT")                # latency, II, LUT/FF/DSP/BRAM

    or from a shell, with the options of ``OUT/build_opt.tcl`` (:func:`export_hls` writes it with
    ``csim 0, synth 1``; hls4ml's default also runs C simulation and co-simulation)::

        cd OUT && vitis-run --mode hls --tcl build_prj.tcl      # Vitis >= 2024.2
        cd OUT && vitis_hls -f build_prj.tcl                    # older Vitis HLS
        cd OUT && vivado_hls -f build_prj.tcl                   # backend="Vivado"

    The report is ``OUT/fastreco_prj/solution1/syn/report/fastreco_csynth.rpt``.
    """
    out = str(Path(out_dir))
    if backend.lower() == "vivado":
        return f"cd {out} && vivado_hls -f build_prj.tcl"
    return f"cd {out} && vitis-run --mode hls --tcl build_prj.tcl"


_SYNTH_ONLY_OPTS = """array set opt {
    reset      0
    csim       0
    synth      1
    cosim      0
    validation 0
    export     0
    vsynth     0
    fifo_opt   0
}
"""


def _synthesis_readme(out: Path, meta: dict[str, Any]) -> str:
    """The ``SYNTHESIS.md`` of an exported project: what it is and how to synthesize it."""
    return f"""# hls4ml project of `{meta["run"]}` ({meta["model"]["name"]})

Precision `{meta["precision"]}` (parameters fitted: {meta["fit_parameters"]}), reuse factor
{meta["reuse_factor"]}, `{meta["io_type"]}`, backend {meta["backend"]}, hls4ml
{meta["hls4ml_version"]}. Input: one event of shape {meta["input_shape"]} (PyTorch layout),
fed channels-last to the firmware; output: raw outputs (logits), see `fastreco_hls.json`.

`firmware/` is the HLS C++; `firmware/{PROJECT_NAME}-*.so` its bit-accurate emulation,
compiled with g++. Synthesis needs AMD/Xilinx Vitis HLS (not run by fastreco).
`build_opt.tcl` is set to synthesis only (no C simulation, no co-simulation):

    {synthesis_command(out, meta["backend"])}
    # older Vitis HLS: cd {out} && vitis_hls -f build_prj.tcl

or from Python, `hls_model.build(csim=False, synth=True, cosim=False)`. The report is
`{PROJECT_NAME}_prj/solution1/syn/report/{PROJECT_NAME}_csynth.rpt`
(`hls4ml.report.read_vivado_report("{out}")`).
"""


def precision_slug(precision: str) -> str:
    """A folder name for a precision: ``"ap_fixed<16,6>"`` -> ``"ap_fixed_16_6"``."""
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9]+", "_", precision)).strip("_")


def _export_loaded(
    loaded: Any,
    run_dir: str | os.PathLike[str],
    out: Path,
    *,
    precision: str,
    reuse_factor: int,
    backend: str,
    io_type: IoType,
    part: str | None,
    fit_parameters: bool = True,
) -> tuple[Any, float]:
    """Convert and compile a loaded run into ``out`` and write the metadata and synthesis-only
    ``build_opt.tcl``; returns the compiled model and the seconds it took."""
    start = time.perf_counter()
    hls_model = convert_to_hls(
        loaded.model,
        loaded.input_shape,
        out,
        precision=precision,
        reuse_factor=reuse_factor,
        backend=backend,
        io_type=io_type,
        part=part,
        fit_parameters=fit_parameters,
    )
    seconds = time.perf_counter() - start
    (out / "build_opt.tcl").write_text(_SYNTH_ONLY_OPTS, encoding="utf-8")
    meta = {
        "run": str(run_dir),
        "task": loaded.task.name,
        "classes": list(loaded.task.classes),
        "model": {"name": loaded.task.model.name, "params": loaded.task.model.params},
        "checkpoint": str(loaded.checkpoint),
        "preprocessing": loaded.info.get("preprocessing"),
        "input_shape": list(loaded.input_shape),
        "input_layout": "channels_last" if _channels_last_inputs(hls_model) else "as PyTorch",
        "precision": precision,
        "reuse_factor": int(reuse_factor),
        "fit_parameters": fit_parameters,
        "io_type": io_type,
        "backend": backend,
        "project_name": PROJECT_NAME,
        "convert_compile_seconds": round(seconds, 2),
        "synthesis_command": synthesis_command(out, backend),
        "hls4ml_version": import_hls4ml().__version__,
        "fastreco_version": __version__,
        "exported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    (out / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n", "utf-8")
    (out / "SYNTHESIS.md").write_text(_synthesis_readme(out, meta), "utf-8")
    log.info("exported %s to the hls4ml project %s", run_dir, out)
    return hls_model, seconds


@EXPORTERS.register("hls4ml")
def export_hls(
    run_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str] | None = None,
    *,
    precision: str = DEFAULT_PRECISION,
    reuse_factor: int = 1,
    backend: str = "Vitis",
    io_type: IoType = "io_parallel",
    part: str | None = None,
    fit_parameters: bool = True,
) -> Path:
    """Convert a trained run's model to an hls4ml project, compile its emulation, and return
    the project folder (default ``RUN/hls4ml``).

    Beside hls4ml's files the folder holds ``fastreco_hls.json`` (the run's preprocessing, the
    input layout, the precision, the synthesis command) and ``build_opt.tcl`` set to synthesis
    only, so that :func:`synthesis_command` synthesizes without C simulation or co-simulation.
    The compiled emulation is ``firmware/fastreco-<stamp>.so``.

    Raises:
        InputError: not a run folder, or no checkpoint.
        FastrecoError: hls4ml missing, or conversion or compilation failed.
    """
    from fastreco.deploy.inference import load_model

    loaded = load_model(run_dir, "cpu")
    out = Path(out_path) if out_path is not None else Path(run_dir) / "hls4ml"
    _export_loaded(
        loaded,
        run_dir,
        out,
        precision=precision,
        reuse_factor=reuse_factor,
        backend=backend,
        io_type=io_type,
        part=part,
        fit_parameters=fit_parameters,
    )
    return out


def load_test_split(
    run_dir: str | os.PathLike[str], n_events: int
) -> tuple[np.ndarray, np.ndarray, Any]:
    """The first ``n_events`` events of the test split of a run's data.

    Returns:
        ``(x, y, task)``: inputs ``(n, *input_shape)`` float32, targets ``(n,)`` (class index
        or regression target), and the run's task.
    """
    from fastreco.train.datasets import ChunkDataset
    from fastreco.train.runner import load_run

    task, info = load_run(run_dir)
    store = Path(info.get("data_dir") or task.data_dir)
    if not store.exists():
        raise InputError("the run's event store is missing", source=store)
    dataset = ChunkDataset(store, task, "test")
    xs, ys, n = [], [], 0
    for index in range(len(dataset)):
        if n >= n_events:
            break
        chunk = dataset.load(index)
        xs.append(chunk["x"])
        ys.append(chunk["y"])
        n += len(chunk["x"])
    if not xs:
        raise InputError("no events in the test split", source=store)
    return np.concatenate(xs)[:n_events], np.concatenate(ys)[:n_events], task


def check_run(
    run_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    precisions: Sequence[str] = (DEFAULT_PRECISION,),
    *,
    reuse_factor: int = 1,
    io_type: IoType = "io_parallel",
    backend: str = "Vitis",
    n_events: int = 500,
    fit_parameters: bool = True,
) -> list[dict[str, Any]]:
    """Export a run at each precision (into ``out_dir/<precision_slug>``) and compare the
    emulation with PyTorch on ``n_events`` test events.

    Returns:
        One row per precision: ``precision``, ``seconds`` (convert + compile), the keys of
        :func:`agreement_of`, and for classifiers ``auc_torch`` / ``auc_hls`` (ROC AUC of class
        0, the signal, against the rest, from :func:`~fastreco.deploy.inference.postprocess`).
    """
    from sklearn.metrics import roc_auc_score

    from fastreco.deploy.inference import load_model, postprocess

    x, y, task = load_test_split(run_dir, n_events)
    loaded = load_model(run_dir, "cpu")
    if tuple(x.shape[1:]) != tuple(loaded.input_shape):
        raise InputError(
            f"the run's data give inputs of shape {tuple(x.shape[1:])}, the model takes "
            f"{tuple(loaded.input_shape)}",
            source=run_dir,
        )
    reference = torch_outputs(loaded.model, x)
    rows = []
    for precision in precisions:
        out = Path(out_dir) / precision_slug(precision)
        hls_model, seconds = _export_loaded(
            loaded,
            run_dir,
            out,
            precision=precision,
            reuse_factor=reuse_factor,
            backend=backend,
            io_type=io_type,
            part=None,
            fit_parameters=fit_parameters,
        )
        emulated = hls_predict(hls_model, x)
        row: dict[str, Any] = {"precision": precision, "seconds": seconds, "project": out}
        row.update(agreement_of(reference, emulated))
        if task.kind == "classification":
            signal = np.asarray(y) == 0
            name = f"p_{task.classes[0]}"
            if 0 < signal.sum() < len(signal):
                row["auc_torch"] = float(roc_auc_score(signal, postprocess(task, reference)[name]))
                row["auc_hls"] = float(roc_auc_score(signal, postprocess(task, emulated)[name]))
        else:
            row["decision_agreement"] = math.nan  # no decision in a regression
        rows.append(row)
    return rows


def agreement_table(
    title: str,
    rows: Sequence[dict[str, Any]],
    output: str,
    labels: tuple[str, str],
    keys: dict[str, str],
) -> Any:
    """The rich table of an emulation scan (hls4ml or conifer): per precision, the compile
    time, max and mean |Δ ``output``| against the float model, the share of same decisions and
    the AUC of the float model and of the emulation (``labels``: their names; ``keys``: the row
    keys of ``same_decision``, ``reference`` and ``emulation``)."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("precision", no_wrap=True)
    for column in (
        "compile (s)",
        f"max |Δ {output}|",
        f"mean |Δ {output}|",
        "same decision",
        f"AUC {labels[0]}",
        f"AUC {labels[1]}",
    ):
        table.add_column(column, justify="right")
    for row in rows:
        reference, emulation = row.get(keys["reference"]), row.get(keys["emulation"])
        table.add_row(
            row["precision"],
            f"{row['seconds']:.1f}",
            f"{row['max_abs_diff']:.4f}",
            f"{row['mean_abs_diff']:.4f}",
            f"{row[keys['same_decision']]:.2%}",
            "-" if reference is None else f"{reference:.4f}",
            "-" if emulation is None else f"{emulation:.4f}",
        )
    return table


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fastreco.deploy.hls RUN --output OUT [--precision P]... [--reuse-factor R]``:
    export a run with hls4ml at each precision, compile, and print the agreement with PyTorch
    on test events (rich table); writes the rows to ``OUT/hls_scan.json`` (read by
    :mod:`fastreco.evaluate.deployment`). Returns the exit code (2 on a user error)."""
    from rich.console import Console
    from rich.markup import escape

    parser = argparse.ArgumentParser(prog="python -m fastreco.deploy.hls", description=main.__doc__)
    parser.add_argument("run", help="a trained run folder")
    parser.add_argument("--output", "-o", required=True, help="folder of the HLS projects")
    parser.add_argument(
        "--precision",
        action="append",
        help=f"fixed-point type, repeatable (default {DEFAULT_PRECISION})",
    )
    parser.add_argument("--reuse-factor", type=int, default=1)
    parser.add_argument("--io-type", choices=IO_TYPES, default="io_parallel")
    parser.add_argument("--backend", default="Vitis")
    parser.add_argument("--events", type=int, default=500, help="test events to compare on")
    parser.add_argument(
        "--no-fit-parameters",
        action="store_true",
        help="every parameter at --precision too (no integer bits added to fit the weights)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    console = Console(width=max(Console().width, 110))
    precisions = args.precision or [DEFAULT_PRECISION]
    try:
        rows = check_run(
            args.run,
            args.output,
            precisions,
            reuse_factor=args.reuse_factor,
            io_type=args.io_type,
            backend=args.backend,
            n_events=args.events,
            fit_parameters=not args.no_fit_parameters,
        )
    except FastrecoError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        return 2
    scan = {
        "run": args.run,
        "reuse_factor": args.reuse_factor,
        "io_type": args.io_type,
        "rows": rows,
    }
    (Path(args.output) / "hls_scan.json").write_text(  # read by fastreco.evaluate.deployment
        json.dumps(scan, indent=2, default=str) + "\n", encoding="utf-8"
    )
    title = (
        f"hls4ml emulation vs PyTorch: {args.run} ({rows[0]['n']} test events, "
        f"reuse factor {args.reuse_factor}, {args.io_type}, {args.backend}, parameters "
        f"{'at --precision' if args.no_fit_parameters else 'fitted'})"
    )
    keys = {"same_decision": "decision_agreement", "reference": "auc_torch", "emulation": "auc_hls"}
    console.print(agreement_table(title, rows, "logit", ("torch", "hls"), keys))
    for row in rows:
        console.print(f"synthesize with: {synthesis_command(row['project'], args.backend)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
