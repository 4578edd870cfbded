"""hls4ml export: the bit-accurate C++ emulation agrees with PyTorch within the fixed-point
precision, for the dense models and a small CNN (each test compiles one tiny project with g++,
~10-25 s on a loaded 2-core machine)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from fastreco.deploy.hls import (
    agreement_of,
    convert_to_hls,
    fitted_precision,
    hls_agreement,
    hls_predict,
    import_hls4ml,
    synthesis_command,
    torch_outputs,
)
from fastreco.deploy.registry import EXPORTERS
from fastreco.errors import FastrecoError, InputError
from fastreco.models import build_model

hls4ml = pytest.importorskip("hls4ml")

#: Tolerance on outputs of O(1) (untrained models, inputs in [0, 1)) at ap_fixed<16,6>: one
#: step is 2^-10 ~ 1e-3 and every product and sum truncates (rounds towards -inf), losing up to
#: one step each, so a layer with n inputs can be off by up to ~n/2 steps on average; over these
#: 2-3 layers of <= 16 inputs that is a few 1e-2, hence 0.05 (~50 steps). The mean deviation is
#: checked at a tenth of that.
ATOL_16_6 = 0.05

#: Small versions of the models fastreco deploys: the seed-000 DNN (Dense + BatchNorm), the
#: shower-shape MLP and the seed-000 CNN (Conv2d + BatchNorm2d + MaxPool2d + Flatten).
CASES = {
    "tmva-dnn": ((1, 5, 5), {"width": 16, "depth": 2}),
    "mlp": ((13,), {"widths": (16, 16)}),
    # two channels, so that a wrong channels-first/-last transpose cannot go unnoticed
    "tmva-cnn": ((2, 6, 6), {"filters": 2, "dense": 8}),
}


def _model(name: str) -> torch.nn.Module:
    shape, params = CASES[name]
    torch.manual_seed(0)
    model = build_model(name, shape, 1, **params)
    # non-trivial BatchNorm statistics, so the emulation must use the running stats
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _inputs(name: str, n: int = 64) -> np.ndarray:
    shape, _ = CASES[name]
    return np.random.default_rng(7).random((n, *shape), dtype=np.float32)  # O(1), like data


#: At ap_fixed<32,16> (step 2^-16) the emulation is float-like: any larger deviation is a wrong
#: conversion (layout, weights), not rounding. hls4ml 1.3.0's channels_last_conversion "off" is
#: off by 0.1-0.2 here and "full" by 0.05 on the DNN; ours ("internal") by ~1e-4.
ATOL_32_16 = 2e-3


@pytest.mark.parametrize("name", sorted(CASES))
def test_conversion_is_exact_at_32_16(tmp_path, name):
    model = _model(name)
    x = _inputs(name)
    hls_model = convert_to_hls(model, CASES[name][0], tmp_path, precision="ap_fixed<32,16>")
    np.testing.assert_allclose(
        hls_predict(hls_model, x), torch_outputs(model, x), rtol=0, atol=ATOL_32_16
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_emulation_matches_torch_at_16_6(tmp_path, name):
    model = _model(name)
    x = _inputs(name)
    hls_model = convert_to_hls(model, CASES[name][0], tmp_path / name, precision="ap_fixed<16,6>")
    got = hls_predict(hls_model, x)
    expected = torch_outputs(model, x)
    assert got.shape == expected.shape == (len(x), 1)
    assert np.abs(expected).max() > 0.05, "a trivial model would prove nothing"
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL_16_6)
    stats = hls_agreement(model, hls_model, x)
    assert stats["n"] == len(x)
    assert stats["mean_abs_diff"] < ATOL_16_6 / 10 * 3
    # a sign flip only where the logit is within the tolerance of 0
    flips = np.sign(got[:, 0]) != np.sign(expected[:, 0])
    assert np.all(np.abs(expected[flips, 0]) < ATOL_16_6)


def test_fewer_bits_deviate_more(tmp_path):
    """ap_fixed<8,3> (step 2^-5, range [-4, 4)) is much further from PyTorch than <16,6>."""
    model = _model("mlp")
    x = _inputs("mlp")
    wide = hls_agreement(model, convert_to_hls(model, (13,), tmp_path / "w"), x)
    narrow = hls_agreement(
        model, convert_to_hls(model, (13,), tmp_path / "n", precision="ap_fixed<8,3>"), x
    )
    assert wide["max_abs_diff"] < ATOL_16_6
    assert narrow["max_abs_diff"] > 4 * wide["max_abs_diff"]
    assert narrow["mean_abs_diff"] > 4 * wide["mean_abs_diff"]


def test_stream_cnn_rejects_overlapping_pooling(tmp_path):
    # hls4ml's io_stream pooling asserts stride == size in C++, which would abort the process
    with pytest.raises(InputError, match="stride == kernel size"):
        convert_to_hls(_model("tmva-cnn"), CASES["tmva-cnn"][0], tmp_path, io_type="io_stream")


def test_bad_options(tmp_path):
    with pytest.raises(InputError, match="io_type"):
        convert_to_hls(_model("mlp"), (13,), tmp_path, io_type="io_axi")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="reuse_factor"):
        convert_to_hls(_model("mlp"), (13,), tmp_path, reuse_factor=0)


def test_missing_hls4ml_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "hls4ml", None)  # import hls4ml -> ImportError
    with pytest.raises(FastrecoError, match=r"pip install fastreco\[fpga\]"):
        import_hls4ml()


def test_compiler_failure_shows_its_output(tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    gxx = fake / "g++"
    gxx.write_text("#!/bin/sh\necho 'fake.cpp:1: error: the compiler broke' >&2\nexit 1\n")
    gxx.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{__import__('os').environ['PATH']}")
    with pytest.raises(FastrecoError, match="the compiler broke"):
        convert_to_hls(_model("mlp"), (13,), tmp_path / "prj")


def test_fitted_precision():
    assert fitted_precision("ap_fixed<16,6>", np.array([0.3, -2.0])) == "ap_fixed<16,6>"
    # 327.7 needs 9 integer bits + sign: 4 more, fractional bits kept
    assert fitted_precision("ap_fixed<16,6>", np.array([327.7])) == "ap_fixed<20,10>"
    assert fitted_precision("ap_fixed<8,3,AP_RND,AP_SAT>", np.array([-5.0])) == (
        "ap_fixed<9,4,AP_RND,AP_SAT>"
    )
    assert fitted_precision("ap_int<8>", np.array([1e3])) == "ap_int<8>"


def test_agreement_of_decisions():
    ref = np.array([[1.0], [-1.0], [0.01], [2.0]])
    emu = np.array([[1.1], [-0.9], [-0.01], [2.0]])
    stats = agreement_of(ref, emu)
    assert stats["decision_agreement"] == pytest.approx(0.75)
    assert stats["max_abs_diff"] == pytest.approx(0.1)
    multi = agreement_of(np.eye(3), np.eye(3)[[0, 2, 1]])
    assert multi["decision_agreement"] == pytest.approx(1 / 3)


def test_exporter_is_registered_and_synthesis_command():
    assert "hls4ml" in EXPORTERS
    assert EXPORTERS.resolve("HLS4ML").__name__ == "export_hls"
    assert synthesis_command("/x/prj") == "cd /x/prj && vitis-run --mode hls --tcl build_prj.tcl"
    assert "vivado_hls" in synthesis_command("/x/prj", backend="Vivado")


def test_export_run_writes_a_compiled_project(tmp_path):
    import json

    from fastreco.config import TaskConfig
    from fastreco.deploy.hls import METADATA_FILE
    from fastreco.train.runner import RUN_SCHEMA_VERSION

    task = TaskConfig.from_dict(
        {
            "name": "tiny-mlp",
            "data": {"dir": "unused", "events": 100, "energy": "8", "seed": 5},
            "representation": {"name": "features"},
            "model": {"name": "mlp", "params": {"widths": [16, 16]}},
            "training": {"epochs": 1, "batch_size": 64, "num_workers": 0},
        }
    )
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    task.save(run / "config.yaml")
    info = {"run_schema_version": RUN_SCHEMA_VERSION, "task": task.name, "input_shape": [13]}
    (run / "run.json").write_text(json.dumps(info))
    state = {f"model.{k}": v for k, v in _model("mlp").state_dict().items()}
    torch.save({"state_dict": state}, run / "checkpoints" / "best.ckpt")

    out = EXPORTERS.resolve("hls4ml")(run, tmp_path / "prj", precision="ap_fixed<18,8>")
    assert out == tmp_path / "prj"
    assert list((out / "firmware").glob("fastreco-*.so")), "the emulation library was not built"
    meta = json.loads((out / METADATA_FILE).read_text())
    assert meta["precision"] == "ap_fixed<18,8>"
    assert meta["input_shape"] == [13]
    assert meta["synthesis_command"] == synthesis_command(out)
    opts = (out / "build_opt.tcl").read_text()
    assert "csim       0" in opts
    assert "synth      1" in opts
    assert "vitis-run" in (out / "SYNTHESIS.md").read_text()
    assert not (run / "hls4ml").exists()  # out_path respected


def test_check_command_reports_user_errors(tmp_path, capsys):
    from fastreco.deploy.hls import main

    assert main([str(tmp_path / "no-run"), "--output", str(tmp_path / "out")]) == 2
    assert "not a fastreco run folder" in capsys.readouterr().out
