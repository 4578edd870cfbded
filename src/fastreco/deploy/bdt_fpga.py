"""FPGA firmware of the BDT baseline with conifer: convert, write the HLS project, and check
the bit-accurate C++ emulation against scikit-learn.

conifer (S. Summers et al., JINST 15 P05026, arXiv:2002.02534) writes a boosted-decision-tree
ensemble as HLS C++ with ``ap_fixed`` arithmetic for AMD/Xilinx Vitis HLS: every node compares
one input with its threshold at once and the leaf values are summed in an adder tree.
:func:`convert_bdt` converts a trained :class:`~fastreco.models.bdt.BDTClassifier`, writes the
project with conifer's ``xilinxhls`` backend and compiles the firmware C++ itself with ``g++``,
so that :func:`emulate` computes exactly what the firmware computes (fixed-point inputs,
thresholds and leaf values; truncation and wrap-around unless the type says otherwise).
:func:`bdt_agreement` compares it with scikit-learn's ``decision_function``. Synthesis needs the
vendor tools; see :func:`synthesis_command`.

**Reading the trees.** conifer has no reader for scikit-learn's HistGradientBoosting (its
``sklearn`` converter reads the older ``GradientBoostingClassifier``); its ONNX reader would
take the output of ``skl2onnx``, but it finds the classes from the graph's node order and
names, assigns leaf values by position across trees, and drops the missing-value direction of
every node. :func:`ensemble_dict` reads the fitted trees directly instead (the ``nodes`` record
array of each of the model's ``_predictors``, a private but stable attribute of scikit-learn
since 0.21): thresholds (``x <= t`` goes left, as in conifer's ``"<="`` convention), leaf
values (already multiplied by the learning rate) and the baseline score, and checks the result
against ``decision_function`` in floating point before anything is compiled
(:func:`float_check`; they agree to ~1e-15).

**Missing values.** scikit-learn sends a NaN feature (and +-inf, which
:class:`~fastreco.models.bdt.BDTClassifier` turns into NaN) to a side chosen per node; a
fixed-point input has no NaN. :func:`emulate` feeds such features as the most negative value of
the input type, which goes left at every split: the agreement counts these events separately
(``n_missing``, ``same_decision_missing``). Features beyond the type's range wrap around with the
default overflow mode (``n_out_of_range`` counts them; ``AP_SAT`` in the type saturates instead).

**Compilation.** conifer's own ``compile()`` builds its three C++ files separately at ``-O3``,
each compiling the ~0.5 MB ``parameters.h`` of the 97-tree baseline (one ``ap_fixed`` weight per
node and feature, all constructed at start-up), and prints the compiler's errors to the
terminal: it had not finished after 12 minutes on a loaded 2-core machine. :func:`convert_bdt`
lets conifer write the project, then compiles one translation unit including the same files
(the firmware's ``BDT.cpp`` and top function, and conifer's Python bridge) at ``-O1`` with the
output captured: 5.6 minutes for that BDT on the same machine, ~15 s for a 12-tree one. The
fixed-point arithmetic is integer arithmetic, identical at every optimisation level.

**Precision.** One ``ap_fixed`` type holds the inputs, the thresholds and the scores. Inputs and
thresholds truncate onto the same grid, so an event within one step above a threshold goes
left; with ~30 splits per tree that is what limits the agreement, more than the summed
truncation of the leaf values. :func:`predict_quantized` reproduces the compiled emulation bit
for bit in Python and scans precisions in seconds. On the demo baseline
(``demo_out/baseline``: 97 trees of up to 31 leaves on 13 shower-shape features, which stay
below 7 in magnitude, scores within [-6, 3]; 6000 test events; float AUC 0.7242), the cut at
90 % signal efficiency takes the same decision for 97.2 % of events at conifer's default
``ap_fixed<18,8>`` (max |Δ score| 1.30, mean 0.11; AUC 0.7246), 99.55 % at ``ap_fixed<18,5>``
(mean 0.020), 99.93 % at ``ap_fixed<20,5>`` and 100 % at ``ap_fixed<24,5>``: give the
fractional bits, not the integer bits, the width. The compiled ``ap_fixed<18,8>`` project gave
the same numbers on 2000 of these events (max 1.029, mean 0.113, 97.3 %; AUC 0.7213 float,
0.7219 emulation).

Command line (see :func:`main`)::

    python -m fastreco.deploy.bdt_fpga demo_out/baseline --output /tmp/conifer_bdt \\
        --precision "ap_fixed<18,8>" --precision "ap_fixed<12,5>" [--events 2000] [--no-compile]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib.util
import io
import itertools
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from fastreco import __version__
from fastreco.deploy.registry import EXPORTERS
from fastreco.errors import FastrecoError, InputError

log = logging.getLogger(__name__)

#: conifer's default type: 18 bits, 8 integer bits with the sign (range [-128, 128), step 2^-10).
DEFAULT_PRECISION = "ap_fixed<18,8>"
#: Name of the HLS top function and of the files of the project.
PROJECT_NAME = "fastreco_bdt"
#: Metadata written beside the project by :func:`export_bdt_fpga`.
METADATA_FILE = "fastreco_conifer.json"
#: Agreement of the emulation with scikit-learn, written by :func:`export_bdt_fpga`.
AGREEMENT_FILE = "agreement.json"
#: Signal efficiency of the working point at which decisions are compared (the working point of
#: the classifier reports, :mod:`fastreco.deploy.prune`).
WORKING_POINT_EFFICIENCY = 0.9
#: Default FPGA part and clock of the HLS project (conifer's defaults: a Virtex UltraScale+
#: VU9P, the FPGA of the CMS Phase-2 L1 trigger boards, at 200 MHz).
DEFAULT_PART = "xcvu9p-flgb2104-2L-e"
DEFAULT_CLOCK_PERIOD = 5.0  # ns
#: The files of a BDT baseline folder (:func:`fastreco.train.baseline.train_baseline`).
BDT_FILE = "bdt.joblib"
TEST_FILE = "test_predictions.parquet"
INSTALL_HINT = "pip install fastreco[fpga]"

_FIXED = re.compile(r"^\s*ap_fixed\s*<\s*(\d+)\s*,\s*(-?\d+)\s*(,[^>]*)?>\s*$")
_STAMPS = itertools.count()


def import_conifer() -> ModuleType:
    """The ``conifer`` module; a :class:`FastrecoError` saying what to install if it is missing."""
    try:
        import conifer
    except ImportError as exc:
        raise FastrecoError(
            f"BDT firmware needs conifer, which is not installed ({exc}): {INSTALL_HINT}"
        ) from None
    return conifer


def parse_precision(precision: str) -> tuple[int, int]:
    """``(width, integer bits)`` of an ``ap_fixed<W,I[,Q[,O]]>`` type.

    Raises:
        InputError: not an ``ap_fixed`` type, or fewer than 2 integer bits (conifer selects a
            node's feature with a one-hot weight of 1 in the same type, which needs the range
            [-2, 2)), or no fractional bit.
    """
    match = _FIXED.match(precision)
    if match is None:
        raise InputError(
            "expected an ap_fixed<W,I> type, e.g. 'ap_fixed<18,8>' (optionally with quantization "
            "and overflow modes: 'ap_fixed<18,8,AP_RND,AP_SAT>')",
            field="precision",
            value=precision,
        )
    width, integer = int(match.group(1)), int(match.group(2))
    if integer < 2 or width <= integer:
        raise InputError(
            "needs at least 2 integer bits (the sign and the one-hot weight 1 of each node) and "
            "at least one fractional bit",
            field="precision",
            value=precision,
        )
    return width, integer


def ap_types_include() -> Path:
    """The folder of ``ap_fixed.h``: ``$XILINX_AP_INCLUDE``, ``$XILINX_HLS/include`` or
    ``$XILINX_VIVADO/include`` if set (the vendor's headers), else the copy hls4ml ships (the
    same open-source headers, github.com/Xilinx/HLS_arbitrary_Precision_Types); conifer's wheel
    ships none."""
    for var, sub in (
        ("XILINX_AP_INCLUDE", ""),
        ("XILINX_HLS", "include"),
        ("XILINX_VIVADO", "include"),
    ):
        root = os.environ.get(var)
        if root and (Path(root) / sub / "ap_fixed.h").is_file():
            return Path(root) / sub
    spec = importlib.util.find_spec("hls4ml")
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "templates" / "vivado" / "ap_types"
        if (path / "ap_fixed.h").is_file():
            return path
    raise FastrecoError(
        "the C++ emulation needs the ap_fixed headers: install hls4ml (which ships them, "
        f"{INSTALL_HINT}) or set XILINX_AP_INCLUDE to a folder holding ap_fixed.h"
    )


# --------------------------------------------------------------------------------------------
# scikit-learn trees -> conifer's ensemble dictionary
# --------------------------------------------------------------------------------------------
def _tree_dict(nodes: np.ndarray, n_features: int) -> dict[str, list[Any]]:
    """One tree of a ``TreePredictor.nodes`` record array in conifer's layout.

    Nodes are renumbered in depth-first pre-order, so that every parent precedes its children
    (conifer's firmware activates the nodes in index order). Leaves have feature -2, threshold
    -2 and children -1; splits go left when ``x <= threshold``.
    """
    order: list[int] = []
    stack = [0]
    while stack:
        index = stack.pop()
        order.append(index)
        if not nodes["is_leaf"][index]:
            stack.append(int(nodes["right"][index]))
            stack.append(int(nodes["left"][index]))
    new_index = {old: new for new, old in enumerate(order)}
    tree: dict[str, list[Any]] = {
        key: [] for key in ("feature", "threshold", "value", "children_left", "children_right")
    }
    tree["weight"] = []
    for old in order:
        node = nodes[old]
        one_hot = [0] * n_features
        if node["is_leaf"]:
            tree["feature"].append(-2)
            tree["threshold"].append(-2.0)
            tree["value"].append(float(node["value"]))
            tree["children_left"].append(-1)
            tree["children_right"].append(-1)
        else:
            feature = int(node["feature_idx"])
            one_hot[feature] = 1
            tree["feature"].append(feature)
            tree["threshold"].append(float(node["num_threshold"]))
            tree["value"].append(0.0)
            tree["children_left"].append(new_index[int(node["left"])])
            tree["children_right"].append(new_index[int(node["right"])])
        tree["weight"].append(one_hot)
    return tree


def ensemble_dict(model: Any, feature_names: Sequence[str] | None = None) -> dict[str, Any]:
    """conifer's description of a fitted binary ``HistGradientBoostingClassifier``.

    Args:
        model: the fitted classifier (two classes, numerical features only).
        feature_names: names of the input columns, in order (default ``feat_<i>``).

    Returns:
        The dictionary ``conifer.model.make_model`` takes: ``n_trees`` (boosting iterations),
        ``max_depth``, ``n_features``, ``n_classes`` (2: one tree per iteration), ``init_predict``
        (the baseline raw score), ``trees`` (one list of one tree per iteration), ...

    Raises:
        InputError: not a fitted two-class HistGradientBoostingClassifier, or categorical splits.
    """
    predictors = getattr(model, "_predictors", None)
    if type(model).__name__ != "HistGradientBoostingClassifier" or predictors is None:
        raise InputError(
            "expected a fitted scikit-learn HistGradientBoostingClassifier",
            field="model",
            value=type(model).__name__,
        )
    if int(model.n_trees_per_iteration_) != 1:
        raise InputError(
            "conversion is for two-class BDTs (one tree per iteration)",
            field="n_classes",
            value=len(model.classes_),
        )
    n_features = int(model.n_features_in_)
    names = list(feature_names) if feature_names is not None else None
    if names is not None and len(names) != n_features:
        raise InputError(
            f"the model has {n_features} features", field="feature_names", value=len(names)
        )
    trees, depth = [], 0
    for (predictor,) in predictors:
        nodes = predictor.nodes
        if np.any(nodes["is_categorical"]):
            raise InputError("categorical splits have no fixed-point form", field="model")
        depth = max(depth, int(nodes["depth"].max()))
        trees.append([_tree_dict(nodes, n_features)])
    return {
        "max_depth": depth,
        "n_trees": len(trees),
        "n_features": n_features,
        "n_classes": 2,
        "trees": trees,
        "init_predict": [float(np.ravel(model._baseline_prediction)[0])],
        "norm": 1,
        "library": "sklearn",
        "splitting_convention": "<=",
        "feature_map": {
            (names[i] if names is not None else f"feat_{i}"): i for i in range(n_features)
        },
    }


def float_check(model: Any, ensemble: dict[str, Any], x: np.ndarray) -> float:
    """Largest |difference| between conifer's floating-point evaluation of ``ensemble`` and
    ``model.decision_function`` on the finite rows of ``x`` ``(n, n_features)``: checks the
    conversion itself, before any fixed-point arithmetic (expected ~1e-15)."""
    conifer = import_conifer()
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x).all(axis=1)]
    if len(x) == 0:
        return 0.0
    reference = conifer.model.make_model(json.loads(json.dumps(ensemble)))
    diff = np.ravel(reference.decision_function(x)) - np.ravel(model.decision_function(x))
    return float(np.max(np.abs(diff)))


# --------------------------------------------------------------------------------------------
# project and emulation
# --------------------------------------------------------------------------------------------
def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _pybind11_include() -> str:
    import pybind11

    return pybind11.get_include()


def _compile_emulation(model: Any, out: Path, *, opt_level: str = "-O1") -> ModuleType:
    """Compile the firmware C++ of the written project ``out`` and conifer's Python bridge as
    one translation unit into ``conifer_bridge_<stamp>.so`` and import it."""
    if shutil.which("g++") is None:
        raise FastrecoError("the BDT emulation is compiled with g++, which is not on PATH")
    conifer_hls = Path(import_conifer().__file__).parent / "external" / "hls"
    unity = out / "emulation.cpp"
    unity.write_text(
        "// One translation unit: the firmware (BDT.cpp, the top function) and conifer's bridge\n"
        f'#include "firmware/BDT.cpp"\n#include "firmware/{PROJECT_NAME}.cpp"\n'
        '#include "bridge.cpp"\n',
        encoding="utf-8",
    )
    module_name = f"conifer_bridge_{model._stamp}"
    library = out / f"{module_name}.so"
    command = [
        "g++",
        opt_level,
        "-shared",
        "-std=c++14",
        "-fPIC",
        f"-I{sysconfig.get_paths()['include']}",
        f"-I{_pybind11_include()}",
        f"-I{ap_types_include()}",
        f"-I{conifer_hls}",
        unity.name,
        "-o",
        library.name,
    ]
    done = subprocess.run(command, cwd=out, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise FastrecoError(
            f"g++ failed to compile the conifer project in {out}; compiler output:\n"
            f"{_tail(done.stdout + done.stderr)}"
        )
    spec = importlib.util.spec_from_file_location(module_name, library)
    if spec is None or spec.loader is None:
        raise FastrecoError(f"cannot load the compiled emulation {library}")
    bridge = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bridge)
    return bridge


def convert_bdt(
    model: Any,
    out_dir: str | os.PathLike[str],
    *,
    precision: str = DEFAULT_PRECISION,
    feature_names: Sequence[str] | None = None,
    part: str = DEFAULT_PART,
    clock_period: float = DEFAULT_CLOCK_PERIOD,
) -> Any:
    """Convert a BDT with conifer, write its HLS project to ``out_dir`` and compile the C++
    emulation with g++.

    Args:
        model: a :class:`~fastreco.models.bdt.BDTClassifier` (its feature names are kept) or a
            fitted two-class ``HistGradientBoostingClassifier``.
        out_dir: folder of the project (created; conifer overwrites its files).
        precision: the ``ap_fixed`` type of the inputs, thresholds and scores (leaf values and
            their sum), e.g. ``"ap_fixed<18,8>"``: 18 bits, 8 of them integer bits with the sign
            (range [-128, 128), step 2^-10). Append ``,AP_RND,AP_SAT`` for rounding and
            saturation instead of truncation and wrap-around.
        feature_names: input names (default: the BDTClassifier's, else ``feat_<i>``).
        part: FPGA part of the HLS project.
        clock_period: target clock period [ns].

    Returns:
        The conifer model (``conifer.backends.xilinxhls.XilinxHLSModel``) with its compiled
        ``bridge``; run it with :func:`emulate`.

    Raises:
        InputError: a bad precision or model.
        FastrecoError: conifer, g++ or the ap_fixed headers are missing, or g++ failed.
    """
    width, integer = parse_precision(precision)
    conifer = import_conifer()
    sk_model = getattr(model, "model", model)
    if feature_names is None:
        feature_names = getattr(model, "features", None)
    ensemble = ensemble_dict(sk_model, feature_names)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "Backend": "xilinxhls",
        "OutputDir": str(out),
        "ProjectName": PROJECT_NAME,
        "Precision": precision,
        "XilinxPart": part,
        "ClockPeriod": clock_period,
        "Unroll": True,  # a tree's comparisons in parallel; no padding of unbalanced trees
    }
    start = time.perf_counter()
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            hls_model = conifer.model.make_model(ensemble, config)
            hls_model._stamp = f"{os.getpid()}_{next(_STAMPS)}_{time.time_ns() % 10**9}"
            hls_model.write()
    except Exception as exc:  # conifer raises AssertionErrors and bare Exceptions
        raise FastrecoError(
            f"conifer could not write the project ({type(exc).__name__}: {exc})\n"
            f"{_tail(captured.getvalue())}"
        ) from exc
    written = time.perf_counter()
    hls_model.bridge = _compile_emulation(hls_model, out)
    hls_model.fastreco_input_range = (-(2.0 ** (integer - 1)), 2.0 ** (integer - 1))
    hls_model.fastreco_input_step = 2.0 ** (integer - width)
    log.info(
        "conifer: %d trees, %s: written in %.1f s, compiled in %.1f s (%s)",
        ensemble["n_trees"],
        precision,
        written - start,
        time.perf_counter() - written,
        out,
    )
    return hls_model


def quantize_fixed(values: Any, precision: str) -> np.ndarray:
    """``values`` as the ``ap_fixed`` type ``precision`` stores them, in float64: truncated
    towards -inf (``AP_TRN``, the default) or rounded half up (``AP_RND``) to the step, then
    wrapped around (``AP_WRAP``, the default) or saturated (``AP_SAT``) into the range.
    NaN is left NaN."""
    width, integer = parse_precision(precision)
    modes = precision.replace(" ", "")
    frac = width - integer
    v = np.asarray(values, dtype=np.float64) * 2.0**frac
    v = np.floor(v + 0.5) if ",AP_RND" in modes else np.floor(v)
    low, span = -(2.0 ** (width - 1)), 2.0**width
    v = np.clip(v, low, -low - 1) if ",AP_SAT" in modes else np.mod(v - low, span) + low
    return v / 2.0**frac


def predict_quantized(
    ensemble: dict[str, Any], x: np.ndarray, precision: str = DEFAULT_PRECISION
) -> np.ndarray:
    """The firmware's raw score computed in Python, without compiling: inputs, thresholds,
    leaf values and the baseline quantized with :func:`quantize_fixed`, trees walked with
    ``x <= t``, leaf values summed. With wrap-around this is exactly the compiled emulation
    (the sum of on-grid values is exact, and wrap-around commutes with it: tested); with
    ``AP_SAT`` only the final sum saturates here, while the firmware's adder tree saturates at
    every node. A precision scan in seconds, where a 100-tree project compiles for minutes.

    Args:
        ensemble: :func:`ensemble_dict` of the BDT.
        x: ``(n, n_features)`` inputs; non-finite values are fed as in :func:`emulate`.

    Returns:
        ``(n,)`` float64 scores.
    """
    _, integer = parse_precision(precision)
    xq = np.array(x, dtype=np.float64, copy=True)
    xq[~np.isfinite(xq)] = -(2.0 ** (integer - 1))
    xq = quantize_fixed(xq, precision)
    rows = np.arange(len(xq))
    total = np.zeros(len(xq))
    for (tree,) in ensemble["trees"]:
        feature = np.asarray(tree["feature"])
        threshold = quantize_fixed(tree["threshold"], precision)
        value = quantize_fixed(tree["value"], precision)
        left, right = np.asarray(tree["children_left"]), np.asarray(tree["children_right"])
        node = np.zeros(len(xq), dtype=np.int64)
        while True:
            inner = feature[node] >= 0
            if not inner.any():
                break
            go_left = xq[rows, np.maximum(feature[node], 0)] <= threshold[node]
            node = np.where(inner, np.where(go_left, left[node], right[node]), node)
        total += value[node]
    total += quantize_fixed(ensemble["init_predict"][0], precision)
    return quantize_fixed(total, precision)


def emulate(hls_model: Any, x: np.ndarray) -> np.ndarray:
    """The firmware's raw score (the decision function) for events ``x`` ``(n, n_features)``.

    Non-finite features are fed as the lowest value of the input type (module docstring).

    Returns:
        ``(n,)`` float64, exactly the fixed-point score of the firmware.
    """
    x = np.array(x, dtype=np.float64, copy=True)
    if x.ndim != 2 or x.shape[1] != hls_model.n_features:
        raise InputError(
            f"expected inputs of shape (n, {hls_model.n_features})", field="x", value=x.shape
        )
    low, _ = hls_model.fastreco_input_range
    x[~np.isfinite(x)] = low
    bridge = hls_model.bridge
    return np.array([bridge.decision_function(row)[0] for row in x.tolist()], dtype=np.float64)


def bdt_agreement(
    reference: np.ndarray,
    emulated: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    x: np.ndarray | None = None,
    input_range: tuple[float, float] | None = None,
    efficiency: float = WORKING_POINT_EFFICIENCY,
) -> dict[str, Any]:
    """Agreement of the emulated raw scores with scikit-learn's, shape ``(n,)`` each.

    Args:
        reference: ``decision_function`` of the float model (raw margin, log-odds).
        emulated: :func:`emulate` on the same events.
        labels: 1 = signal, 0 = background; with both classes, the working point is the float
            model's cut at ``efficiency`` signal efficiency and the AUCs are computed.
        x: the inputs, to count events with missing or out-of-range features.
        input_range: ``[low, high)`` of the input type.

    Returns:
        ``n``, ``max_abs_diff``, ``mean_abs_diff`` (raw-score units), ``working_point`` (the
        signal efficiency), ``cut`` (on the float score; 0, i.e. P = 0.5, without labels),
        ``same_decision`` (fraction of events on the same side of the cut), and with labels
        ``auc_float``, ``auc_emulation``, ``rejection90_float``, ``rejection90_emulation``; with
        ``x``: ``n_missing`` and ``same_decision_missing`` (events with a non-finite feature),
        and with ``input_range`` also ``n_out_of_range``.
    """
    from fastreco.evaluate import metrics as M

    ref = np.asarray(reference, dtype=np.float64).ravel()
    emu = np.asarray(emulated, dtype=np.float64).ravel()
    if ref.shape != emu.shape:
        raise ValueError(f"scores of shape {ref.shape} (float) and {emu.shape} (emulation)")
    diff = np.abs(emu - ref)
    n = len(ref)
    out: dict[str, Any] = {
        "n": n,
        "max_abs_diff": float(diff.max()) if n else 0.0,
        "mean_abs_diff": float(diff.mean()) if n else 0.0,
    }
    cut = 0.0
    y = None if labels is None else np.asarray(labels).astype(np.int8).ravel()
    both = y is not None and 0 < int(y.sum()) < len(y)
    if both:
        assert y is not None
        cut = float(np.quantile(ref[y == 1], 1.0 - efficiency))
        float_roc, emu_roc = M.roc(y, ref), M.roc(y, emu)
        out.update(
            auc_float=float_roc.auc,
            auc_emulation=emu_roc.auc,
            rejection90_float=float(float_roc.rejection_at(0.9)),
            rejection90_emulation=float(emu_roc.rejection_at(0.9)),
        )
    same = (ref >= cut) == (emu >= cut)
    out["working_point"] = efficiency if both else None
    out["cut"] = cut
    out["same_decision"] = float(same.mean()) if n else 1.0
    if x is not None:
        xa = np.asarray(x, dtype=np.float64)
        missing = ~np.isfinite(xa).all(axis=1)
        out["n_missing"] = int(missing.sum())
        out["same_decision_missing"] = float(same[missing].mean()) if missing.any() else None
        if input_range is not None:
            low, high = input_range
            with np.errstate(invalid="ignore"):
                beyond = ((xa < low) | (xa >= high)) & np.isfinite(xa)
            out["n_out_of_range"] = int(beyond.any(axis=1).sum())
    return out


def synthesis_command(out_dir: str | os.PathLike[str]) -> str:
    """The shell command that synthesizes the conifer project in ``out_dir``.

    Synthesis cannot run without AMD/Xilinx tools. With them installed, either from Python
    (``hls_model.build(synth=True)``: writes ``build_opt.tcl`` and runs the tool it finds:
    ``vivado_hls``, ``vitis_hls`` or ``vitis-run``; then ``hls_model.read_report()`` gives the
    latency and resources), or from a shell with the options of ``OUT/build_opt.tcl``
    (:func:`export_bdt_fpga` writes it with ``csim 0, synth 1``)::

        cd OUT && vitis-run --mode hls --tcl build_hls.tcl      # Vitis >= 2024.2
        cd OUT && vitis_hls -f build_hls.tcl                    # older Vitis HLS

    The report is ``OUT/fastreco_bdt_prj/solution1/syn/report/fastreco_bdt_csynth.rpt``.
    """
    return f"cd {Path(out_dir)} && vitis-run --mode hls --tcl build_hls.tcl"


_SYNTH_ONLY_OPTS = """array set opt {
    reset  0
    csim   0
    synth  1
    cosim  0
    export 0
    vsynth 0
}
"""


# --------------------------------------------------------------------------------------------
# BDT folders
# --------------------------------------------------------------------------------------------
def load_bdt_dir(
    bdt_dir: str | os.PathLike[str], n_events: int | None = None
) -> tuple[Any, np.ndarray, np.ndarray]:
    """The BDT of a baseline folder and its test events.

    Returns:
        ``(bdt, x, y)``: the :class:`~fastreco.models.bdt.BDTClassifier`, the test events'
        features ``(n, n_features)`` (``test_predictions.parquet``, +-inf as NaN) and labels
        ``(n,)`` (1 = signal); the first ``n_events`` events if given.

    Raises:
        InputError: no ``bdt.joblib`` or no test events in the folder.
    """
    from fastreco.models.bdt import BDTClassifier

    folder = Path(bdt_dir)
    model_path = folder / BDT_FILE
    if not model_path.is_file():
        raise InputError(
            f"not a BDT folder (no {BDT_FILE}; write one with `fastreco baseline train`)",
            source=folder,
        )
    bdt = BDTClassifier.load(model_path)
    test_path = folder / TEST_FILE
    if not test_path.is_file():
        raise InputError(f"no test events ({TEST_FILE}) beside the BDT", source=folder)
    df = pd.read_parquet(test_path)
    if n_events is not None:
        df = df.iloc[: int(n_events)]
    if "label" not in df.columns:
        raise InputError("the test events have no 'label' column", source=test_path, field="label")
    return bdt, bdt.matrix(df), df["label"].to_numpy(np.int8)


def check_bdt(
    bdt_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    precisions: Sequence[str] = (DEFAULT_PRECISION,),
    *,
    n_events: int | None = 2000,
    part: str = DEFAULT_PART,
    clock_period: float = DEFAULT_CLOCK_PERIOD,
) -> list[dict[str, Any]]:
    """Convert a BDT folder at each precision (into ``out_dir/<precision_slug>``, or ``out_dir``
    itself for one precision) and compare the emulation with scikit-learn on its test events.

    Returns:
        One row per precision: ``precision``, ``project``, ``seconds`` (write + compile),
        ``float_check`` (:func:`float_check`) and the keys of :func:`bdt_agreement`.
    """
    from fastreco.deploy.hls import precision_slug

    bdt, x, y = load_bdt_dir(bdt_dir, n_events)
    for precision in precisions:
        parse_precision(precision)  # all bad types fail before the first compilation
    sk_model = bdt.model
    reference = sk_model.decision_function(x)
    ensemble = ensemble_dict(sk_model, bdt.features)
    conversion_error = float_check(sk_model, ensemble, x)
    rows = []
    for precision in precisions:
        out = Path(out_dir) / precision_slug(precision) if len(precisions) > 1 else Path(out_dir)
        start = time.perf_counter()
        hls_model = convert_bdt(bdt, out, precision=precision, part=part, clock_period=clock_period)
        seconds = time.perf_counter() - start
        emulated = emulate(hls_model, x)
        row: dict[str, Any] = {
            "precision": precision,
            "project": str(out),
            "seconds": round(seconds, 2),
            "float_check": conversion_error,
        }
        row.update(
            bdt_agreement(reference, emulated, y, x=x, input_range=hls_model.fastreco_input_range)
        )
        rows.append(row)
        _write_project_files(out, bdt_dir, bdt, hls_model, precision, row)
    return rows


def scan_precisions(
    bdt_dir: str | os.PathLike[str],
    precisions: Sequence[str],
    *,
    n_events: int | None = 2000,
) -> list[dict[str, Any]]:
    """:func:`bdt_agreement` of :func:`predict_quantized` (no compilation) at each precision on
    the test events of a BDT folder; one row per precision (``precision`` + the agreement)."""
    bdt, x, y = load_bdt_dir(bdt_dir, n_events)
    reference = bdt.model.decision_function(x)
    ensemble = ensemble_dict(bdt.model, bdt.features)
    rows = []
    for precision in precisions:
        width, integer = parse_precision(precision)
        emulated = predict_quantized(ensemble, x, precision)
        limit = 2.0 ** (integer - 1)
        row = {"precision": precision, "bits": width, "project": None, "seconds": 0.0}
        row.update(bdt_agreement(reference, emulated, y, x=x, input_range=(-limit, limit)))
        rows.append(row)
    return rows


def _write_project_files(
    out: Path, bdt_dir: Any, bdt: Any, hls_model: Any, precision: str, agreement: dict[str, Any]
) -> None:
    """``build_opt.tcl`` (synthesis only), the metadata, the agreement and ``SYNTHESIS.md``."""
    conifer = import_conifer()
    (out / "build_opt.tcl").write_text(_SYNTH_ONLY_OPTS, encoding="utf-8")
    meta = {
        "bdt": str(bdt_dir),
        "features": list(bdt.features),
        "precision": precision,
        "input_range": list(hls_model.fastreco_input_range),
        "input_step": hls_model.fastreco_input_step,
        "n_trees": int(hls_model.n_trees),
        "max_depth": int(hls_model.max_depth),
        "n_nodes": int(hls_model.n_nodes()),
        "n_leaves": int(hls_model.n_leaves()),
        "output": "raw score (log-odds of signal); P(signal) = 1 / (1 + exp(-score))",
        "missing_features": "fed as the lowest value of the input type (go left at every split)",
        "part": hls_model.config.xilinx_part,
        "clock_period_ns": hls_model.config.clock_period,
        "project_name": PROJECT_NAME,
        "synthesis_command": synthesis_command(out),
        "conifer_version": str(conifer.__version__),
        "fastreco_version": __version__,
        "exported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    _write_json(meta, out / METADATA_FILE)
    _write_json(agreement, out / AGREEMENT_FILE)
    (out / "SYNTHESIS.md").write_text(
        f"""# conifer project of the BDT `{bdt_dir}`

{meta["n_trees"]} trees (depth up to {meta["max_depth"]}) on {len(meta["features"])} features,
precision `{precision}` for inputs, thresholds and scores; part {meta["part"]} at
{meta["clock_period_ns"]} ns; conifer {meta["conifer_version"]}. Output: the raw score (log-odds).
`firmware/` is the HLS C++ (`BDT.h`, `BDT.cpp`, `parameters.h`, top function
`{PROJECT_NAME}`); `conifer_bridge_*.so` its bit-accurate emulation compiled with g++ from
`emulation.cpp`. `{AGREEMENT_FILE}` compares it with scikit-learn on the test events.

Synthesis needs AMD/Xilinx Vitis HLS (not run by fastreco). `build_opt.tcl` is set to synthesis
only:

    {synthesis_command(out)}
    # older Vitis HLS: cd {out} && vitis_hls -f build_hls.tcl

The report is `{PROJECT_NAME}_prj/solution1/syn/report/{PROJECT_NAME}_csynth.rpt`.
""",
        encoding="utf-8",
    )


def _write_json(obj: Any, path: Path) -> Path:
    from fastreco.train.baseline import _jsonable

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_jsonable(obj), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


@EXPORTERS.register("conifer")
def export_bdt_fpga(
    bdt_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str] | None = None,
    *,
    precision: str = DEFAULT_PRECISION,
    n_events: int | None = 2000,
    part: str = DEFAULT_PART,
    clock_period: float = DEFAULT_CLOCK_PERIOD,
) -> Path:
    """Convert the BDT of a baseline folder to a conifer project, compile its emulation, compare
    it with scikit-learn on ``n_events`` test events, and return the project folder (default
    ``BDT_DIR/conifer``).

    Beside conifer's files the folder holds ``fastreco_conifer.json`` (features, precision,
    input range, synthesis command), ``agreement.json`` (:func:`bdt_agreement`),
    ``SYNTHESIS.md`` and ``build_opt.tcl`` set to synthesis only.

    Raises:
        InputError: not a BDT folder, or a bad precision.
        FastrecoError: conifer, g++ or the ap_fixed headers missing, or compilation failed.
    """
    out = Path(out_path) if out_path is not None else Path(bdt_dir) / "conifer"
    check_bdt(bdt_dir, out, (precision,), n_events=n_events, part=part, clock_period=clock_period)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fastreco.deploy.bdt_fpga BDT_DIR --output OUT [--precision P]...``: convert
    the BDT at each precision, compile, and print the agreement with scikit-learn on test
    events (rich table); writes ``OUT/conifer_scan.json``. Returns the exit code (2 on a user
    error)."""
    from rich.console import Console
    from rich.markup import escape

    from fastreco.deploy.hls import agreement_table

    parser = argparse.ArgumentParser(
        prog="python -m fastreco.deploy.bdt_fpga", description=main.__doc__
    )
    parser.add_argument("bdt", help="a BDT folder (`fastreco baseline train`)")
    parser.add_argument("--output", "-o", required=True, help="folder of the projects")
    parser.add_argument(
        "--precision",
        action="append",
        help=f"ap_fixed type, repeatable (default {DEFAULT_PRECISION})",
    )
    parser.add_argument("--events", type=int, default=2000, help="test events to compare on")
    parser.add_argument(
        "--no-compile",
        action="store_true",
        help="scan with predict_quantized in Python (seconds) instead of compiling projects",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    console = Console(width=max(Console().width, 110))
    precisions = args.precision or [DEFAULT_PRECISION]
    try:
        if args.no_compile:
            rows = scan_precisions(args.bdt, precisions, n_events=args.events)
            Path(args.output).mkdir(parents=True, exist_ok=True)
        else:
            rows = check_bdt(args.bdt, args.output, precisions, n_events=args.events)
    except FastrecoError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        return 2
    _write_json({"bdt": args.bdt, "rows": rows}, Path(args.output) / "conifer_scan.json")
    title = f"conifer emulation vs scikit-learn: {args.bdt} ({rows[0]['n']} test events)"
    keys = {
        "same_decision": "same_decision",
        "reference": "auc_float",
        "emulation": "auc_emulation",
    }
    console.print(agreement_table(title, rows, "score", ("float", "emulation"), keys))
    for row in rows:
        if row["project"] is not None:
            console.print(f"synthesize with: {synthesis_command(row['project'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
