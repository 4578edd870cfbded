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
from fastreco.errors import InputError

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
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.onnx")
    try:
        with _quiet_exporter():
            torch.onnx.export(
                model,
                (example,),
                str(tmp),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=(dims,),
                external_data=False,
                verbose=False,
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
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
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.onnx")
    try:
        with _quiet_exporter():
            torch.onnx.export(
                wrapped,
                (x, batch),
                str(tmp),
                dynamo=True,
                input_names=["x", "batch"],
                output_names=list(GRAPH_OUTPUTS),
                dynamic_shapes=({0: hits}, {0: hits}),
                external_data=False,
                verbose=False,
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
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
    ``<stem>.preprocessing.json``: the hit features (:data:`fastreco.data.pointcloud.FEATURES`,
    built by :func:`fastreco.data.pointcloud.point_cloud_events`) and the outputs' meaning."""
    from fastreco.data.pointcloud import CLASSES, FEATURES, N_FEATURES
    from fastreco.train.clustering import load_clustering_model

    module = load_clustering_model(run_dir)
    out = export_graph_module(module.model, N_FEATURES, out)
    task = module.task
    meta = {
        "format": PREPROCESSING_FORMAT,
        "format_version": PREPROCESSING_VERSION,
        "model_file": out.name,
        "task": task.name,
        "kind": "clustering",
        "model": {"name": task.model.name, "params": task.model.params},
        "inputs": {
            "x": {"shape": ["hits", N_FEATURES], "dtype": "float32", "features": list(FEATURES)},
            "batch": {"shape": ["hits"], "dtype": "int64", "meaning": "sorted event index"},
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
            window = "e5x5 of the classical reconstruction [GeV]"
        else:
            scale = preprocessing.get("scales", {}).get("energy", 1.0)
            window = (
                "the summed crystal energy of the window [GeV] (the sum of the input's energy "
                f"channel times its scale {scale})"
            )
        return {
            "meaning": "E_true / E_window, the energy correction of the window sum",
            "postprocess": "none",
            "energy": f"E_pred [GeV] = output[:, 0] * window_sum, window_sum = {window}",
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


# --------------------------------------------------------------------------------------------
# HGCAL property regression (kind hgcal_regression)
# --------------------------------------------------------------------------------------------
#: Tolerances of the ONNX Runtime / PyTorch check of trained networks (random inputs): trained
#: batch norms and deep stacks amplify float32 summation-order differences beyond the 1e-5 of
#: :func:`export_module` (a trained U-Net differs by up to ~4e-5 on inputs of 0-1 ADC), as the
#: pixel-ID evaluation's parity bound of 1e-4 on real events allows.
TRAINED_RTOL = 1e-4
TRAINED_ATOL = 1e-4

#: Why a registered HGCAL regression model has no ONNX export (models of the ``points``
#: representation; the others export).
_NO_ONNX_EXPORT = {
    "hgcal-drn": (
        "the Dynamic Reduction Network (hgcal-drn) cannot be exported to ONNX: its graph "
        "reduction matches hits in rounds that stop on a data-dependent condition and leaves a "
        "data-dependent number of nodes, which an exported static graph cannot express"
    ),
}


class _RegressionOutputs(torch.nn.Module):
    """A regression network with its output standardization (``offset + scale * output``,
    :class:`~fastreco.train.hgcal_regression.RegressionModule`) inside the graph."""

    def __init__(self, model: torch.nn.Module, offset: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("offset", offset.detach().clone().float())
        self.register_buffer("scale", scale.detach().clone().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.offset + self.scale * self.model(x)


def _hgcal_grid_description(task: Any, info: dict[str, Any]) -> dict[str, Any]:
    """The grid of a regression run's windows: the resolved :class:`GridSpec`, each layer's z
    and pixel size, and how hits become voxels and windows (:mod:`fastreco.data.hexgrid`)."""
    from fastreco.data.hexgrid import HexGrid
    from fastreco.reco.hgcal_energy import CalibratedEnergySum

    geometry = CalibratedEnergySum.from_dict(info["raw_calibration"]).geometry
    grid = HexGrid(geometry, task.data.grid_spec())  # the weights are not computed here
    spec = grid.spec
    return {
        **spec.to_dict(),
        "n_side": int(grid.n_side),
        "layer_z_cm": [float(z) for z in grid.layer_z],
        "pixel_size_cm": [float(p) for p in grid.pixel_size],
        "binning": (
            "each hexagonal cell's calibrated energy [GeV] is shared among the square pixels of "
            "its layer in proportion to the area of the hexagon inside each pixel (energy "
            "conserved; fastreco.data.hexgrid.HexGrid). Pixel (ix, iy) of grid layer k covers "
            "x in [(ix - n_side/2) p_k, (ix - n_side/2 + 1) p_k) cm, same in y, with "
            "p_k = pixel_size_cm[k] = pitch * layer_z_cm[k] / z_ref (projective: a grid in "
            "x/z, y/z)"
        ),
        "window_rule": (
            "window x window pixels per layer around the shower axis: the line from the origin "
            "through the calibrated-energy-weighted centre, projected on z = z_ref, of the hits "
            "in the grid's layers within window * pitch / 2 cm of the most energetic one; "
            "corner pixel (ix0, iy0) = rint(axis / pitch + n_side/2 - window/2), shared by all "
            "layers; the window axis is then its centre, "
            "(ix0 + window/2 - n_side/2) * pitch cm on z = z_ref"
        ),
    }


def export_hgcal_regression_onnx(
    run_dir: str | os.PathLike[str], out: str | os.PathLike[str]
) -> Path:
    """Export an HGCAL property-regression run (kind ``hgcal_regression``).

    The 3D CNN (``hgcal-cnn3d``) on grid windows exports with a dynamic batch axis; its output
    standardization is part of the graph, so the output is in physical units (energy ratio,
    cm). ``<stem>.preprocessing.json`` holds the grid (:func:`_hgcal_grid_description`), the
    voxel transform ``ln(1 + E / 10 MeV)``, the raw calibrated sum that the energy ratio
    multiplies and the barycentre's frame.

    Shapes:
        - **input** ``x``: (batch, 1, L, H, W) float32, log-energy voxels (layer, y, x)
        - **output** ``output``: (batch, 4) float32, :data:`~fastreco.train.hgcal_regression.TARGETS`

    Raises:
        InputError: not a run folder, no checkpoint, or a model without an ONNX export (the
            DRN on point clouds).
    """
    from fastreco.train.hgcal_regression import (
        LOG_ENERGY_UNIT,
        MODEL_REPRESENTATION,
        TARGETS,
        HgcalRegressionTaskConfig,
        load_regression_model,
    )
    from fastreco.train.runner import best_checkpoint, load_run_info

    run, out = Path(run_dir), Path(out)
    info = load_run_info(run)
    task = HgcalRegressionTaskConfig.load(run / "config.yaml")
    name = task.model.name
    if MODEL_REPRESENTATION.get(name) != "grid":
        reason = _NO_ONNX_EXPORT.get(
            name, f"only the grid models {sorted(MODEL_REPRESENTATION)} of this kind export"
        )
        raise InputError(
            f"{reason}; the model runs in PyTorch: `fastreco evaluate {run}`",
            source=run,
            field="model.name",
            value=name,
        )
    module = load_regression_model(run)
    input_shape = tuple(int(v) for v in module.hparams.input_shape)
    wrapped = _RegressionOutputs(module.model, module.offset, module.scale).eval()
    export_module(wrapped, input_shape, out, verify=False)
    check_onnx(out, wrapped, input_shape, batch_sizes=(1, 3), rtol=TRAINED_RTOL, atol=TRAINED_ATOL)
    barycentre = task.position_reference == "barycentre"
    position = (
        "dx, dy, z are corrections to the energy-weighted barycentre (bx, by, bz) of the "
        "input window's voxels (weights: voxel energies E [GeV], 0 below 0; voxel (k, iy, ix) "
        "at bx_k = (ix + 0.5 - window/2) * pixel_size_cm[k], by_k = (iy + 0.5 - window/2) * "
        "pixel_size_cm[k], bz_k = layer_z_cm[k]): dx [cm] = output[:, 1] + bx, dy [cm] = "
        "output[:, 2] + by, z [cm] = output[:, 3] + bz"
        if barycentre
        else "dx [cm] = output[:, 1], dy [cm] = output[:, 2], z [cm] = output[:, 3]"
    )
    meta = {
        "format": PREPROCESSING_FORMAT,
        "format_version": PREPROCESSING_VERSION,
        "model_file": out.name,
        "task": task.name,
        "kind": "hgcal_regression",
        "model": {"name": name, "params": task.model.params},
        "grid": _hgcal_grid_description(task, info),
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", *input_shape],
            "dtype": "float32",
            "axes": ["event", "channel", "layer", "y", "x"],
            "value": (
                f"ln(1 + E / {LOG_ENERGY_UNIT:g} GeV) of each voxel's calibrated energy E [GeV] "
                "(E < 0 counts as 0)"
            ),
            "log_energy_unit_gev": LOG_ENERGY_UNIT,
        },
        "output": {
            "name": OUTPUT_NAME,
            "shape": ["batch", len(TARGETS)],
            "dtype": "float32",
            "columns": list(TARGETS),
            "postprocess": "none (the standardization offset + scale * network is in the graph)",
            "energy": (
                "E_pred [GeV] = output[:, 0] * E_raw; E_raw: the calibrated raw sum "
                "(fastreco.reco.hgcal_energy.CalibratedEnergySum, 'raw_calibration': coef per "
                "section of the dE/dx-weighted hit energies of the hits within 'radius' cm, "
                "on the front face, of the energy-weighted centre of the hits within 'radius' "
                "of the most energetic one; all hits if null)"
            ),
            "position": (
                f"{position}. dx, dy: the shower barycentre relative to the window axis at the "
                "barycentre's depth; absolute x = dx + axis_x * z / z_ref, y = dy + axis_y * z "
                "/ z_ref (axis: the window axis on z = z_ref, see grid.window_rule)"
            ),
            "position_reference": task.position_reference,
            "standardization": {
                "offset": [float(v) for v in module.offset],
                "scale": [float(v) for v in module.scale],
            },
        },
        "raw_calibration": info.get("raw_calibration"),
        **_provenance(out, best_checkpoint(run)),
    }
    meta_path = _write_preprocessing(out, meta)
    log.info("exported %s to %s (+ %s)", run, out, meta_path.name)
    return out


# --------------------------------------------------------------------------------------------
# LArTPC pixel ID (kind pixel_id)
# --------------------------------------------------------------------------------------------
def export_pixel_id_module(
    model: torch.nn.Module, path: str | os.PathLike[str], *, verify: bool = True
) -> Path:
    """Export a pixel-ID network (shared by ``fastreco export`` and the pixel-ID evaluation).

    * :class:`~fastreco.models.lartpc.PatchCNN`: a dynamic batch of ``(1, P, P)`` patches,
      verified by :func:`export_module` (batch sizes 1 and 3);
    * :class:`~fastreco.models.lartpc.PixelUNet`: dynamic batch, height and width, each at
      least ``model.min_input_size`` (smaller images: zero pad, crop the output); with
      ``verify`` checked at two batch sizes and two sizes on inputs of ~100 ADC counts with
      :data:`TRAINED_RTOL` / :data:`TRAINED_ATOL`.

    Shapes:
        - **input** ``x``: (batch, 1, P, P) patches, or (batch, 1, wires, ticks) images
        - **output** ``output``: (batch, 4) or (batch, 4, wires, ticks): class logits, then
          the Michel logit

    Raises:
        InputError: another kind of network (no export rules known).
    """
    from fastreco.models.lartpc import PatchCNN, PixelUNet

    model = model.cpu().eval()
    if isinstance(model, PatchCNN):
        return export_module(model, (1, model.patch_size, model.patch_size), path, verify=verify)
    if isinstance(model, PixelUNet):
        minimum = model.min_input_size
        shape = (1, *(2 * a for a in minimum))
        out = export_module(
            model, shape, path, dynamic_spatial=True, min_spatial=minimum, verify=False
        )
        if verify:
            adc = 1.0 / model.input_scale  # typical hit ADC: inputs of order one inside
            for size in (shape, (1, shape[1] + 3, shape[2] + 5)):
                check_onnx(
                    out,
                    model,
                    size,
                    batch_sizes=(1, 3),
                    rtol=TRAINED_RTOL,
                    atol=TRAINED_ATOL,
                    input_scale=adc,
                )
        return out
    raise InputError(
        "no ONNX export rules for this pixel-ID network (lartpc-patch-cnn and lartpc-unet export)",
        field="model",
        value=type(model).__name__,
    )


def export_pixel_id_onnx(run_dir: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Export a LArTPC pixel-ID run (kind ``pixel_id``, :func:`export_pixel_id_module`) and
    write ``<stem>.preprocessing.json``: the ADC input and its scaling, the patch cut (patch
    CNN) or the size and tiling rules (U-Net), and the output's layout."""
    from fastreco.data.lartpc_images import CLASS_NAMES
    from fastreco.models.lartpc import SCORE_NAMES, PatchCNN, PixelUNet, unet_halo
    from fastreco.train.pixel_id import load_pixel_id_model
    from fastreco.train.runner import best_checkpoint, load_run_info

    run, out = Path(run_dir), Path(out)
    info = load_run_info(run)
    module = load_pixel_id_model(run)
    model = module.model.eval()
    task, s = module.task, module.task.sampling
    if not isinstance(model, (PatchCNN, PixelUNet)):
        raise InputError(
            "no ONNX export for this pixel-ID model (lartpc-patch-cnn and lartpc-unet export); "
            f"it runs in PyTorch: `fastreco evaluate {run}`",
            source=run,
            field="model.name",
            value=task.model.name,
        )
    export_pixel_id_module(model, out)
    adc = (
        "ADC counts above pedestal of the collection-plane pixels with a stored hit (zero "
        "suppressed: 0 elsewhere), wire x tick, unscaled"
    )
    scaling = {
        "input_scale": model.input_scale,
        "note": "the graph multiplies its input by input_scale first: feed raw ADC counts",
    }
    if module.mode == "patch":
        P = model.patch_size
        f = s.drift_downsample
        layout: dict[str, Any] = {
            "input": {
                "name": INPUT_NAME,
                "shape": ["batch", 1, P, P],
                "dtype": "float32",
                "axes": ["hit", "channel", "wire", "tick"],
                "value": adc,
            },
            "patch": {
                "size": P,
                "centre": P // 2,
                "drift_downsample": f,
                "downsample_mode": "mean",
                "rule": (
                    "the event image (n_wires, n_ticks) is reduced along ticks by the mean of "
                    f"groups of {f} ticks (the last group zero padded); the patch of a hit at "
                    f"(wire, tick) covers rows wire - {P // 2} .. wire - {P // 2} + {P - 1} and "
                    f"columns tick // {f} - {P // 2} .. tick // {f} - {P // 2} + {P - 1}, zero "
                    "outside the image (fastreco.data.lartpc_images.extract_patches)"
                ),
            },
            "output_shape": ["batch", len(SCORE_NAMES)],
        }
    else:
        assert isinstance(model, PixelUNet)
        h, w = model.min_input_size
        layout = {
            "input": {
                "name": INPUT_NAME,
                "shape": ["batch", 1, "wires", "ticks"],
                "dtype": "float32",
                "axes": ["event", "channel", "wire", "tick"],
                "value": adc,
                "min_size": [h, w],
            },
            "tiling": {
                "whole_image": (
                    f"any (wires, ticks) with wires >= {h} and ticks >= {w}; smaller images: "
                    "zero pad at the end to that size and crop the output back"
                ),
                "hit_tiles": (
                    "or run only aligned tiles holding hits: tile origins at multiples of a "
                    f"tile size that is a multiple of ({h}, {w}), each tile grown by the halo "
                    "on every side and clipped to the image; the scores at its hits then equal "
                    "the whole image's (fastreco.models.lartpc.unet_scores_at)"
                ),
                "alignment": [h, w],
                "halo": list(unet_halo(model)),
                "training_tile": list(s.tile),
                "tick_factor": model.tick_factor,
            },
            "output_shape": ["batch", len(SCORE_NAMES), "wires", "ticks"],
        }
    output_shape = layout.pop("output_shape")
    meta = {
        "format": PREPROCESSING_FORMAT,
        "format_version": PREPROCESSING_VERSION,
        "model_file": out.name,
        "task": task.name,
        "kind": "pixel_id",
        "mode": module.mode,
        "model": {"name": task.model.name, "params": task.model.params},
        "classes": list(CLASS_NAMES),
        "plane": info.get("plane"),
        "scaling": scaling,
        **layout,
        "output": {
            "name": OUTPUT_NAME,
            "shape": output_shape,
            "dtype": "float32",
            "scores": list(SCORE_NAMES),
            "meaning": (
                f"logits: indices 0-{len(CLASS_NAMES) - 1} the classes {list(CLASS_NAMES)}, "
                f"index {len(CLASS_NAMES)} the Michel electron"
            ),
            "postprocess": "softmax over the class logits (axis 1, first 3); sigmoid of the last",
        },
        **_provenance(out, best_checkpoint(run)),
    }
    meta_path = _write_preprocessing(out, meta)
    log.info("exported %s to %s (+ %s)", run, out, meta_path.name)
    return out


@EXPORTERS.register("onnx")
def export_onnx(
    run_dir: str | os.PathLike[str], out_path: str | os.PathLike[str] | None = None
) -> Path:
    """Export a run folder's model to ONNX (default ``RUN/model.onnx``); returns its path.

    Also writes ``<stem>.preprocessing.json`` beside it. The run's task kind
    (:data:`fastreco.train.tasks.TASK_KINDS`) names the exporter: :func:`export_ecal_onnx`,
    :func:`export_clustering_onnx`, :func:`export_hgcal_regression_onnx` or
    :func:`export_pixel_id_onnx`.

    Raises:
        InputError: not a run folder, an incompatible version, no checkpoint, or a model that
            cannot be exported (the DRN).
    """
    from fastreco.train.tasks import TASK_KINDS, run_kind

    out = Path(out_path) if out_path is not None else Path(run_dir) / "model.onnx"
    return TASK_KINDS.resolve(run_kind(run_dir), field="kind").export_onnx(run_dir, out)
