"""ONNX export of a trained run, with a dynamic batch axis and its preprocessing beside it.

:func:`export_onnx` writes ``RUN/model.onnx`` (the model in eval mode, exported with the
``torch.export``-based exporter, ``dynamo=True``, the batch axis declared dynamic) and
``RUN/model.preprocessing.json``: how to build the input from crystal energies (the run's
``run.json["preprocessing"]``), the input's name and shape, what the output means and the class
names, so that the model runs with ONNX Runtime alone::

    import json, numpy as np, onnxruntime as ort
    meta = json.load(open("model.preprocessing.json"))
    sess = ort.InferenceSession("model.onnx")
    out = sess.run(None, {meta["input"]["name"]: x.astype(np.float32)})[0]  # x: (batch, *shape)

That is the ECAL runs' JSON; the run's task kind picks the exporter
(:data:`fastreco.train.tasks.TASK_KINDS`), and the clustering, HGCAL-regression and pixel-ID
exporters write their own inputs and outputs in the same format (the HGCAL DRN does not export).

Exporting with an example batch of 1 is what froze weaver's "dynamic" axis: the example here has
4 events and the axis is a ``torch.export.Dim``; after writing, the file is checked against
PyTorch at batch sizes 1 and 3.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastreco import __version__
from fastreco.config import TaskConfig
from fastreco.deploy.registry import EXPORTERS

log = logging.getLogger(__name__)

INPUT_NAME = "x"
OUTPUT_NAME = "output"
PREPROCESSING_FORMAT = "fastreco-onnx-preprocessing"
PREPROCESSING_VERSION = 1


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's notices that are not ours to act on (missing torchvision ops,
    a pytree deprecation inside torch, the note that two inputs share one dynamic axis)."""
    loggers = [
        logging.getLogger(name)
        for name in ("torch.onnx._internal.exporter._registration", "onnx_ir", "onnxscript")
    ]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
            warnings.filterwarnings(
                "ignore", message=r".*shares the same shape constraints.*", category=UserWarning
            )
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _dynamo_export(
    model: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic_shapes: tuple[dict[int, Any], ...],
) -> None:
    """``torch.onnx.export`` (dynamo, one self-contained file) written to a temporary name and
    moved onto ``path`` only when complete, so an interrupted export leaves no partial file."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.onnx")
    try:
        with _quiet_exporter():
            torch.onnx.export(
                model,
                args,
                str(tmp),
                dynamo=True,
                input_names=input_names,
                output_names=output_names,
                dynamic_shapes=dynamic_shapes,
                external_data=False,
                verbose=False,
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def export_module(
    model: torch.nn.Module,
    input_shape: Sequence[int],
    path: str | os.PathLike[str],
    *,
    example_batch: int = 4,
    verify: bool = True,
    dynamic_spatial: bool = False,
    min_spatial: tuple[int, int] = (2, 2),
) -> Path:
    """Export ``model`` (put in eval mode, on the CPU) to ONNX with a dynamic batch axis.

    Args:
        model: takes ``(batch, *input_shape)`` float32, returns ``(batch, n_out)``.
        input_shape: shape of one input, without the batch axis.
        path: the ``.onnx`` file, written atomically.
        example_batch: batch of the example input (> 1, so the axis cannot be specialised).
        verify: compare ONNX Runtime with PyTorch at batch sizes 1 and 3 (relative 1e-4), and
            with ``dynamic_spatial`` also at another height and width.
        dynamic_spatial: also make the last two axes (height, width) dynamic, for fully
            convolutional models of whole images (``input_shape`` is then only the example's).
        min_spatial: smallest (height, width) the exported graph must serve (with
            ``dynamic_spatial``); a U-Net's pooling sets it (``PixelUNet.min_input_size``).

    Shapes:
        - **input** ``x``: (batch, *input_shape), float32
        - **output** ``output``: (batch, n_out), float32
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    gen = torch.Generator().manual_seed(0)
    example = torch.rand((max(example_batch, 2), *input_shape), generator=gen)
    dims = {0: torch.export.Dim("batch", min=1)}
    if dynamic_spatial:
        dims[len(input_shape) - 1] = torch.export.Dim("height", min=min_spatial[0])
        dims[len(input_shape)] = torch.export.Dim("width", min=min_spatial[1])
    _dynamo_export(model, (example,), path, [INPUT_NAME], [OUTPUT_NAME], (dims,))
    if verify:
        check_onnx(path, model, input_shape, batch_sizes=(1, 3))
        if dynamic_spatial:
            other = (*input_shape[:-2], input_shape[-2] + 3, input_shape[-1] + 5)
            check_onnx(path, model, other, batch_sizes=(1,))
    log.info("wrote %s", path)
    return path


#: Output names of an exported object-condensation graph model, in order.
GRAPH_OUTPUTS = ("beta", "coords", "energy", "logits")


class _GraphOutputs(torch.nn.Module):
    """A condensation graph model with its output dict as a tuple (ONNX outputs are ordered)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x, batch)
        return tuple(out[name] for name in GRAPH_OUTPUTS)


def export_graph_module(
    model: torch.nn.Module,
    n_features: int,
    path: str | os.PathLike[str],
    *,
    example_points: int = 96,
    verify: bool = True,
) -> Path:
    """Export a graph model of hits (``forward(x, batch)`` -> dict of :data:`GRAPH_OUTPUTS`,
    e.g. GravNet with condensation heads) to ONNX with a dynamic number of hits.

    GravNet and EdgeConv (:mod:`fastreco.models.gravnet`) gather their ``(N, k)`` neighbours
    and export; torch-geometric's message passing would freeze the example's edge count into
    the exported graph, which ``verify`` catches (it raises).

    The kNN search becomes part of the graph (:func:`fastreco.data.pointcloud.knn_indices`
    switches to tensor operations while exporting). With ``verify``, ONNX Runtime is compared
    with PyTorch (whose kNN uses k-d trees) on two events of another size.

    Shapes:
        - **inputs:** ``x`` (N, n_features) float32; ``batch`` (N,) int64, sorted event index
        - **outputs:** ``beta`` (N,), ``coords`` (N, D), ``energy`` (N,), ``logits`` (N, C)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = _GraphOutputs(model.cpu().eval()).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((example_points, n_features), generator=gen)
    batch = (torch.arange(example_points) >= example_points // 2).long()
    # AUTO: the exporter derives the hit axis's range (its kNN needs more than k hits)
    hits = torch.export.Dim.AUTO
    _dynamo_export(
        wrapped, (x, batch), path, ["x", "batch"], list(GRAPH_OUTPUTS), ({0: hits}, {0: hits})
    )
    if verify:
        import onnxruntime as ort

        x = torch.rand((137, n_features), generator=gen)
        batch = (torch.arange(137) >= 60).long()
        with torch.no_grad():
            ref = wrapped(x, batch)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        try:
            got = session.run(None, {"x": x.numpy(), "batch": batch.numpy()})
        except Exception as exc:  # ORT raises its own exception types
            path.unlink(missing_ok=True)
            raise RuntimeError(
                f"ONNX Runtime cannot run the exported graph at another number of hits: {exc}"
            ) from None
        for name, a, b in zip(GRAPH_OUTPUTS, ref, got, strict=True):
            if not np.allclose(a.numpy(), b, rtol=1e-4, atol=1e-5):
                raise RuntimeError(f"ONNX Runtime and PyTorch disagree on output '{name}'")
    log.info("wrote %s", path)
    return path


def export_clustering_onnx(run_dir: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Export the graph network of a clustering run (:func:`export_graph_module`) and write
    ``<stem>.preprocessing.json``: the points' features (hits,
    :data:`fastreco.data.pointcloud.FEATURES`, or CLUE's 2D layer clusters,
    :data:`fastreco.data.layer_clusters.LC_FEATURES`: the run's ``data.input``) and the outputs'
    meaning."""
    from fastreco.data.pointcloud import CLASSES
    from fastreco.train.clustering import load_clustering_model

    module = load_clustering_model(run_dir)
    task = module.task
    network_input = task.data.network_input
    out = export_graph_module(module.model, network_input.n_features, out)
    meta = {
        "format": PREPROCESSING_FORMAT,
        "format_version": PREPROCESSING_VERSION,
        "model_file": out.name,
        "task": task.name,
        "kind": "clustering",
        "model": {"name": task.model.name, "params": task.model.params},
        "points": task.data.input,
        "inputs": {
            "x": {
                "shape": ["points", network_input.n_features],
                "dtype": "float32",
                "features": list(network_input.features),
            },
            "batch": {"shape": ["points"], "dtype": "int64", "meaning": "sorted event index"},
        },
        "outputs": {
            "beta": "condensation strength in (0, 1)",
            "coords": "clustering-space coordinates",
            "energy": "log of the object's energy [GeV]",
            "logits": f"class logits of {list(CLASSES)}",
        },
        "condensation": dataclasses.asdict(task.condensation),
        "fastreco_version": __version__,
    }
    preprocessing_path(out).write_text(json.dumps(meta, indent=2))
    return out


def check_onnx(
    path: str | os.PathLike[str],
    model: torch.nn.Module,
    input_shape: Sequence[int],
    *,
    batch_sizes: Sequence[int] = (1, 2, 37, 256),
    rtol: float = 1e-4,
    atol: float = 1e-5,
    input_scale: float = 1.0,
) -> None:
    """Assert that ONNX Runtime and PyTorch agree on random inputs at each batch size.

    The inputs are uniform in ``[0, input_scale)``.

    Raises:
        AssertionError: on a mismatch (a bug of the exporter, not of the user's input).
    """
    from fastreco.deploy.inference import onnx_session

    session = onnx_session(path, providers=["CPUExecutionProvider"])
    model = model.cpu().eval()
    rng = np.random.default_rng(1)
    for n in batch_sizes:
        x = rng.random((n, *input_shape), dtype=np.float32)
        if input_scale != 1.0:
            x *= np.float32(input_scale)
        with torch.inference_mode():
            ref = model(torch.from_numpy(x)).numpy()
        got = session.run(None, {INPUT_NAME: x})[0]
        np.testing.assert_allclose(
            got, ref, rtol=rtol, atol=atol, err_msg=f"ONNX vs PyTorch at batch {n} ({path})"
        )


def output_description(task: TaskConfig, preprocessing: dict[str, Any]) -> dict[str, Any]:
    """What the model's output means and how to turn it into probabilities or an energy."""
    if task.kind == "regression":
        if preprocessing.get("kind") == "features":
            reference = "e5x5 of the classical reconstruction [GeV]"
        else:
            from fastreco.data.representations import reference_description

            scale = preprocessing.get("scales", {}).get("energy", 1.0)
            reference = reference_description(task.reference, scale)
        return {
            "meaning": f"E_true / E_reference, the energy correction of the {task.reference}",
            "postprocess": "none",
            "energy": f"E_pred [GeV] = output[:, 0] * {task.reference}, "
            f"{task.reference} = {reference}",
        }
    classes = list(task.classes)
    if len(classes) == 2:
        return {
            "meaning": f"logit of class 1 '{classes[1]}'",
            "postprocess": "sigmoid",
            "probabilities": (
                f"P({classes[1]}) = sigmoid(output[:, 0]); P({classes[0]}) = sigmoid(-output[:, 0])"
            ),
            "signal_class": classes[0],
        }
    return {
        "meaning": "one logit per class, in the order of 'classes'",
        "postprocess": "softmax",
        "probabilities": "softmax(output, axis=1)",
    }


def preprocessing_path(onnx_path: str | os.PathLike[str]) -> Path:
    """``model.onnx`` -> ``model.preprocessing.json`` (beside it)."""
    p = Path(onnx_path)
    return p.with_name(p.stem + ".preprocessing.json")


def _opset(path: Path) -> int | None:
    """The default-domain opset of an ONNX file."""
    import onnx

    return next(
        (
            o.version
            for o in onnx.load(str(path), load_external_data=False).opset_import
            if not o.domain
        ),
        None,
    )


def _provenance(out: Path, checkpoint: str | os.PathLike[str]) -> dict[str, Any]:
    """The preprocessing JSON's record of where the file came from (opset, checkpoint,
    versions, export time)."""
    return {
        "opset": _opset(out),
        "checkpoint": str(checkpoint),
        "fastreco_version": __version__,
        "torch_version": torch.__version__,
        "exported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _write_preprocessing(out: Path, meta: dict[str, Any]) -> Path:
    """Write ``<stem>.preprocessing.json`` beside ``out`` atomically; returns its path."""
    meta_path = preprocessing_path(out)
    tmp = meta_path.with_name(f".{meta_path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, meta_path)
    return meta_path


def export_ecal_onnx(run_dir: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Export an ECAL run (kinds ``classification`` and ``regression``): the model on its
    windows or features (:func:`export_module`) and ``<stem>.preprocessing.json`` (the run's
    ``run.json["preprocessing"]``, the input's shape and axes, the output's meaning)."""
    from fastreco.deploy.inference import load_model

    out = Path(out)
    loaded = load_model(run_dir, "cpu")
    export_module(loaded.model, loaded.input_shape, out)
    task, info = loaded.task, loaded.info
    pre = dict(info.get("preprocessing") or {})
    with torch.no_grad():
        n_out = int(loaded.model(torch.zeros((1, *loaded.input_shape))).shape[-1])
    meta = {
        "format": PREPROCESSING_FORMAT,
        "format_version": PREPROCESSING_VERSION,
        "model_file": out.name,
        "task": task.name,
        "kind": task.kind,
        "classes": list(task.classes),
        "model": {"name": task.model.name, "params": task.model.params},
        "preprocessing": pre,
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", *loaded.input_shape],
            "dtype": "float32",
            "axes": pre.get("axes", ["event", "feature"]),
        },
        "output": {
            "name": OUTPUT_NAME,
            "shape": ["batch", n_out],
            "dtype": "float32",
            **output_description(task, pre),
        },
        **_provenance(out, loaded.checkpoint),
    }
    meta_path = _write_preprocessing(out, meta)
    log.info("exported %s to %s (+ %s)", run_dir, out, meta_path.name)
    return out


#: Tolerances of the ONNX Runtime / PyTorch check of trained networks (random inputs): trained
#: batch norms and deep stacks amplify float32 summation-order differences beyond the 1e-5 of
#: :func:`export_module` (a trained U-Net differs by up to ~4e-5 on inputs of 0-1 ADC), as the
#: pixel-ID evaluation's parity bound of 1e-4 on real events allows.
TRAINED_RTOL = 1e-4
TRAINED_ATOL = 1e-4


@EXPORTERS.register("onnx")
def export_onnx(
    run_dir: str | os.PathLike[str], out_path: str | os.PathLike[str] | None = None
) -> Path:
    """Export a run folder's model to ONNX (default ``RUN/model.onnx``); returns its path.

    Also writes ``<stem>.preprocessing.json`` beside it. The run's task kind
    (:data:`fastreco.train.tasks.TASK_KINDS`) names the exporter: :func:`export_ecal_onnx`,
    :func:`export_clustering_onnx`,
    :func:`fastreco.deploy.onnx_hgcal.export_hgcal_regression_onnx` or
    :func:`fastreco.deploy.onnx_lartpc.export_pixel_id_onnx`.

    Raises:
        InputError: not a run folder, an incompatible version, no checkpoint, or a model that
            cannot be exported (the DRN).
    """
    from fastreco.train.tasks import TASK_KINDS, run_kind

    out = Path(out_path) if out_path is not None else Path(run_dir) / "model.onnx"
    return TASK_KINDS.resolve(run_kind(run_dir), field="kind").export_onnx(run_dir, out)
