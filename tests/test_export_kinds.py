"""``fastreco export RUN --onnx`` for the HGCAL-regression and pixel-ID task kinds, dispatched by
the task-kind registry: the written ONNX file and its preprocessing JSON, ONNX Runtime against
PyTorch at several batch sizes (and image sizes for the U-Net), and the DRN's refusal.

The run folders are written as the trainers write them (``open_run``'s ``config.yaml``, the
trainer's ``run.json`` fields, a Lightning checkpoint of the module with its hyperparameters),
with random weights and batch-norm statistics away from (0, 1): no simulation or training, so
each test takes seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fastreco import __version__
from fastreco.cli import app
from fastreco.deploy.onnx import INPUT_NAME, preprocessing_path
from fastreco.deploy.registry import export_run
from fastreco.errors import InputError
from fastreco.train.runner import RUN_SCHEMA_VERSION, open_run, write_run_info

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning"),
]

#: ONNX Runtime vs PyTorch on these small random networks.
RTOL, ATOL = 1e-5, 1e-6
LAYERS = [2, 6, 10, 14, 24, 34]  # as tests/test_regression3d.py: 6 layers, 8 x 8 windows of 4 cm


@pytest.fixture(scope="module")
def ort():
    return pytest.importorskip("onnxruntime")


def _randomise(module: torch.nn.Module, seed: int = 3) -> None:
    """Weights as initialised, batch-norm statistics and affine parameters away from (0, 1), so
    that eval-mode batch norm is not the identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) - 0.5)


def _write_run(runs_dir: Path, task: Any, module: L.LightningModule, info: dict[str, Any]) -> Path:
    """A run folder as a trainer leaves it: config.yaml, run.json, checkpoints/best.ckpt."""
    _, run, _ = open_run(task, type(task), runs_dir=runs_dir, run_name=None, resume=False)
    write_run_info(run, info)
    (run / "checkpoints").mkdir()
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": L.__version__,
        },
        run / "checkpoints" / "best.ckpt",
    )
    return run


def _base_info(task: Any, kind: str) -> dict[str, Any]:
    return {
        "run_schema_version": RUN_SCHEMA_VERSION,
        "fastreco_version": __version__,
        "task": task.name,
        "kind": kind,
        "data_dir": str(task.data_dir),
        "init_from": None,
    }


# --------------------------------------------------------------------------------------------
# HGCAL property regression
# --------------------------------------------------------------------------------------------
def _hgcal_run(runs_dir: Path, model: str, params: dict[str, Any]) -> Path:
    from fastreco.geometry.hgcal import HgcalEndcap
    from fastreco.reco.hgcal_energy import CalibratedEnergySum
    from fastreco.train.hgcal_regression import (
        TARGETS,
        HgcalRegressionTaskConfig,
        RegressionModule,
        representation_of,
    )

    task = HgcalRegressionTaskConfig.from_dict(
        {
            "name": f"tiny_{model}",
            "data": {
                "events": 48,
                "dir": str(runs_dir.parent / "data" / "tiny"),
                "grid_pitch": 4.0,
                "grid_window": 8,
                "grid_layers": LAYERS,
            },
            "model": {"name": model, "params": params},
            "position_reference": "barycentre",
        }
    )
    rep = representation_of(model)
    input_shape = (1, len(LAYERS), 8, 8) if rep.name == "grid" else (8,)
    offset, scale = [1.02, 0.01, -0.02, -2.9], [0.12, 0.18, 0.19, 3.3]
    torch.manual_seed(0)
    module = RegressionModule(task.to_dict(), input_shape, offset, scale)
    _randomise(module)
    calib = CalibratedEnergySum(HgcalEndcap(), radius=task.data.raw_radius)
    calib.coef = np.array([0.96, 1.23, 1.27])
    info = {
        **_base_info(task, "hgcal_regression"),
        "representation": rep.name,
        "input_shape": list(input_shape),
        "targets": list(TARGETS),
        "target_offset": offset,
        "target_scale": scale,
        "raw_calibration": calib.to_dict(),
    }
    return _write_run(runs_dir, task, module, info)


@pytest.mark.filterwarnings("ignore::UserWarning:lightning.*")
def test_cnn3d_run_exports_with_its_grid_and_physical_outputs(tmp_path, ort):
    from fastreco.train.hgcal_regression import TARGETS, load_regression_model

    run = _hgcal_run(tmp_path / "runs", "hgcal-cnn3d", {"width": 4, "stages": 2, "dense": 16})
    path = export_run(run, "onnx", tmp_path / "out" / "cnn3d.onnx")
    assert path == tmp_path / "out" / "cnn3d.onnx"
    meta = json.loads(preprocessing_path(path).read_text())
    assert meta["kind"] == "hgcal_regression"
    assert meta["model_file"] == "cnn3d.onnx"
    assert meta["input"]["shape"] == ["batch", 1, len(LAYERS), 8, 8]
    assert meta["input"]["axes"] == ["event", "channel", "layer", "y", "x"]
    grid = meta["grid"]
    assert (grid["pitch"], grid["window"], grid["layers"]) == (4.0, 8, LAYERS)
    assert len(grid["layer_z_cm"]) == len(grid["pixel_size_cm"]) == len(LAYERS)
    # projective pixels: pitch * z / z_ref
    np.testing.assert_allclose(
        grid["pixel_size_cm"], 4.0 * np.asarray(grid["layer_z_cm"]) / grid["z_ref"]
    )
    assert meta["output"]["columns"] == list(TARGETS)
    assert meta["output"]["position_reference"] == "barycentre"
    assert meta["raw_calibration"]["coef"] == [0.96, 1.23, 1.27]

    # the standardization is in the graph: ONNX gives the module's physical outputs
    module = load_regression_model(run)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert isinstance(session.get_inputs()[0].shape[0], str)
    rng = np.random.default_rng(4)
    for n in (1, 5):
        # log-energy voxels, ln(1 + E / 10 MeV): mostly empty, up to ~7 (10 GeV)
        x = (rng.random((n, 1, len(LAYERS), 8, 8)) * 7.0).astype(np.float32)
        x[rng.random(x.shape) < 0.7] = 0.0
        with torch.no_grad():
            expected = module((torch.from_numpy(x),)).numpy()
        got = session.run(None, {INPUT_NAME: x})[0]
        assert got.shape == (n, len(TARGETS))
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.filterwarnings("ignore::UserWarning:lightning.*")
def test_drn_run_is_refused_with_the_reason(tmp_path):
    run = _hgcal_run(tmp_path / "runs", "hgcal-drn", {"hidden": 16, "k": 4})
    out = tmp_path / "drn.onnx"
    with pytest.raises(InputError, match=r"hgcal-drn.*data-dependent.*fastreco evaluate") as err:
        export_run(run, "onnx", out)
    assert str(run) in str(err.value)
    assert not out.exists()
    assert not preprocessing_path(out).exists()
    # the CLI gets the same user error (its entry point prints it and exits with code 2)
    result = CliRunner().invoke(app, ["export", str(run), "--onnx", "--output", str(out)])
    assert isinstance(result.exception, InputError)
    assert "Dynamic Reduction Network" in str(result.exception)


# --------------------------------------------------------------------------------------------
# LArTPC pixel ID
# --------------------------------------------------------------------------------------------
def _pixel_id_run(runs_dir: Path, model: str, params: dict[str, Any]) -> Path:
    from fastreco.train.pixel_id import PixelIdModule, PixelIdTaskConfig, model_mode

    task = PixelIdTaskConfig.from_dict(
        {
            "name": f"tiny_{model}",
            "data": {"n_wires": 64, "n_ticks": 256, "events": 12, "dir": str(runs_dir / "d")},
            "model": {"name": model, "params": params},
            "sampling": {"patch_size": 16, "drift_downsample": 2, "tile": [32, 64]},
        }
    )
    mode = model_mode(model)
    weights = [0.5, 1.0, 1.5] if mode in ("image", "sparse") else None
    torch.manual_seed(1)
    module = PixelIdModule(task.to_dict(), weights)
    _randomise(module)
    info = {
        **_base_info(task, "pixel_id"),
        "mode": mode,
        "model": model,
        "n_events": 12,
        "plane": [64, 256],
        "input_shape": list(task.input_shape(mode)),
        "class_weights": weights,
    }
    return _write_run(runs_dir, task, module, info)


def _adc(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-suppressed ADC images: a quarter of the pixels hit, 10-300 counts."""
    x = rng.uniform(10.0, 300.0, shape).astype(np.float32)
    x[rng.random(shape) < 0.75] = 0.0
    return x


@pytest.mark.filterwarnings("ignore::UserWarning:lightning.*")
def test_patch_cnn_run_exports_with_a_dynamic_batch_of_patches(tmp_path, ort):
    from fastreco.train.pixel_id import load_pixel_id_model

    run = _pixel_id_run(
        tmp_path / "runs", "lartpc-patch-cnn", {"filters": [4, 8], "kernels": [3, 3], "dense": [16]}
    )
    path = export_run(run, "onnx")  # default: RUN/model.onnx
    assert path == run / "model.onnx"
    meta = json.loads(preprocessing_path(path).read_text())
    assert (meta["kind"], meta["mode"]) == ("pixel_id", "patch")
    assert meta["input"]["shape"] == ["batch", 1, 16, 16]
    assert meta["patch"]["size"] == 16
    assert meta["patch"]["centre"] == 8
    assert meta["patch"]["drift_downsample"] == 2
    assert meta["scaling"]["input_scale"] == pytest.approx(0.01)
    assert meta["output"]["shape"] == ["batch", 4]
    assert meta["output"]["scores"] == ["track", "em", "none", "michel"]

    model = load_pixel_id_model(run).model
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(5)
    for n in (1, 7):
        x = _adc(rng, (n, 1, 16, 16))
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        got = session.run(None, {INPUT_NAME: x})[0]
        assert got.shape == (n, 4)
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.filterwarnings("ignore::UserWarning:lightning.*")
def test_unet_run_exports_with_dynamic_height_and_width(tmp_path, ort):
    from fastreco.train.pixel_id import load_pixel_id_model

    run = _pixel_id_run(
        tmp_path / "runs", "lartpc-unet", {"width": 4, "depth": 2, "tick_factor": 2}
    )
    result = CliRunner().invoke(
        app, ["export", str(run), "--onnx", "--output", str(tmp_path / "unet.onnx")]
    )
    assert result.exit_code == 0, result.output
    path = tmp_path / "unet.onnx"
    meta = json.loads(preprocessing_path(path).read_text())
    assert (meta["kind"], meta["mode"]) == ("pixel_id", "image")
    assert meta["input"]["shape"] == ["batch", 1, "wires", "ticks"]
    assert meta["input"]["min_size"] == [4, 8]  # 2**depth, 2**depth * tick_factor
    assert meta["tiling"]["alignment"] == [4, 8]
    assert meta["tiling"]["training_tile"] == [32, 64]
    assert meta["output"]["shape"] == ["batch", 4, "wires", "ticks"]

    model = load_pixel_id_model(run).model
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch, _, height, width = session.get_inputs()[0].shape
    assert all(isinstance(d, str) for d in (batch, height, width))
    rng = np.random.default_rng(6)
    for shape in ((1, 1, 32, 64), (2, 1, 37, 131)):  # an aligned and an odd size
        x = _adc(rng, shape)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        got = session.run(None, {INPUT_NAME: x})[0]
        assert got.shape == (shape[0], 4, *shape[2:])
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def test_every_task_kind_has_an_onnx_exporter():
    from fastreco.train.tasks import TASK_KINDS

    assert set(TASK_KINDS) >= {"classification", "regression", "clustering", "pixel_id"}
    for kind in TASK_KINDS:
        assert callable(TASK_KINDS.resolve(kind).export_onnx)


def test_pixel_id_export_refuses_other_networks(tmp_path):
    from fastreco.deploy.onnx_lartpc import export_pixel_id_module

    with pytest.raises(InputError, match="lartpc-unet"):
        export_pixel_id_module(torch.nn.Conv2d(1, 4, 3), tmp_path / "x.onnx")


@pytest.mark.filterwarnings("ignore::UserWarning:lightning.*")
def test_sparse_unet_run_is_refused_with_the_reason(tmp_path):
    run = _pixel_id_run(tmp_path / "runs", "lartpc-sparse-unet", {"width": 4, "depth": 2})
    out = tmp_path / "sparse.onnx"
    with pytest.raises(InputError, match=r"lartpc-sparse-unet.*rulebooks.*fastreco evaluate"):
        export_run(run, "onnx", out)
    assert not out.exists()
