"""The deployment page: measured rows for PyTorch and ONNX Runtime on a tiny run, the outputs of
the deployment tools found and plotted, and the command named wherever a measurement is
missing (never a number that was not measured)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastreco.evaluate import deployment as D
from test_compression import tiny_run  # noqa: F401  (a fixture: a run folder of a tiny DNN)

pytest.importorskip("onnxruntime")

pytestmark = [pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")]


def _write(path: Path, obj: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def _fake_outputs(folder: Path) -> None:
    """Deployment outputs in the formats the tools write, with recognisable numbers."""
    model = {"auc": 0.811, "rejection90": 3.5, "rejection90_err": 0.2, "path": "x.onnx"}
    _write(
        folder / "compression" / "quantize.json",
        {
            "models": ["fp32", "int8"],
            "method": "static",
            "throughput": {"batch_size": 256, "threads": 1},
            "fp32": {**model, "size_bytes": 40_000, "events_per_s": 1000.0},
            "int8": {**model, "auc": 0.8097, "size_bytes": 12_345, "events_per_s": 1700.0},
        },
    )
    _write(
        folder / "compression" / "qat_scan.json",
        {
            "rows": [
                {"bits": b, "auc": 0.8, "auc_ptq": 0.7, "rejection90": 3.0, "rejection90_ptq": 2.0}
                for b in (32, 4, 8)
            ]
        },
    )
    rows = [
        {
            "fine_tuned": s > 0,
            "zero_fraction": s,
            "auc": 0.8,
            "auc_oneshot": 0.7,
            "rejection90": 3.0,
            "rejection90_oneshot": 2.0,
            "rejection90_err": 0.1,
        }
        for s in (0.0, 0.5, 0.9)
    ]
    _write(folder / "compression" / "prune_scan.json", {"rows": rows})
    _write(
        folder / "compression" / "qat_int8.json",
        {
            "models": ["fp32", "fp32_finetuned", "qat_int8"],
            "throughput": {"batch_size": 256, "threads": 1},
            "fp32": {**model, "size_bytes": 40_000, "events_per_s": 1000.0},
            "fp32_finetuned": {**model, "auc": 0.8120, "size_bytes": 40_000, "events_per_s": 990.0},
            "qat_int8": {**model, "auc": 0.8117, "size_bytes": 12_000, "events_per_s": 1900.0},
        },
    )
    _write(
        folder / "scan" / "hls_scan.json",
        {
            "rows": [
                {
                    "precision": f"ap_fixed<{b},6>",
                    "auc_hls": 0.80,
                    "auc_torch": 0.81,
                    "max_abs_diff": 0.1 / b,
                }
                for b in (8, 16)
            ]
        },
    )
    _write(
        folder / "bdt" / "conifer" / "agreement.json",
        {
            "precision": "ap_fixed<18,8>",
            "n": 500,
            "max_abs_diff": 0.0123,
            "same_decision": 0.996,
            "auc_emulation": 0.9012,
            "auc_float": 0.9015,
            "rejection90_emulation": 7.0,
        },
    )


def test_page_without_deploy_outputs_names_the_commands(tiny_run: Path, tmp_path: Path) -> None:  # noqa: F811
    page = D.deployment_report(tiny_run, out_dir=tmp_path)
    html = page.read_text()
    assert page == tmp_path / D.PAGE
    assert "measured now" in html
    assert "PyTorch" in html
    assert "ONNX Runtime fp32" in html
    for key in ("quantize", "qat_int8", "prune", "hls_scan", "triton"):
        assert D.COMMANDS[key].split(" RUN")[0] in html, key
    assert "<img" not in html  # no plot without its JSON
    measured = D.measure_run(tiny_run, max_events=300)
    torch_row, onnx_row = measured["PyTorch"], measured["ONNX Runtime fp32"]
    # the same network: same parameters, same accuracy
    assert torch_row["parameters"] == onnx_row["parameters"] > 0
    assert abs(torch_row["auc"] - onnx_row["auc"]) < 1e-4
    assert torch_row["events_per_s"] > 0
    assert onnx_row["events_per_s"] > 0
    assert torch_row["ms_per_batch"] == pytest.approx(256e3 / torch_row["events_per_s"])


def test_page_shows_the_tools_outputs(tiny_run: Path, tmp_path: Path) -> None:  # noqa: F811
    extra = tmp_path / "deploy"
    _fake_outputs(extra)
    found = D.find_deploy_outputs(tiny_run, [extra, extra / "bdt"])
    assert set(found) == {"quantize", "qat", "qat_int8", "prune", "hls_scan", "conifer"}
    html = D.deployment_report(
        tiny_run, [extra, extra / "compression", extra / "bdt"], tmp_path, measure=False
    ).read_text()
    assert "ONNX Runtime int8" in html
    assert "12.35" in html
    assert "1.70x" in html  # int8 / fp32 throughput of quantize.json
    assert "int8 after QAT" in html
    assert "1.90x" in html  # int8 after QAT / fp32 throughput of qat_int8.json
    assert "-0.0003 against the control" in html
    assert "0.0123" in html
    assert "99.60%" in html
    assert html.count("<img") == 3  # sparsity, bits (QAT), bits (hls4ml)
    assert "bench_triton.py" in html  # Triton still missing
    assert "fastreco evaluate" in html  # PyTorch not measured (measure=False)


def test_not_a_run_is_refused(tmp_path: Path) -> None:
    from fastreco.errors import InputError

    with pytest.raises(InputError):
        D.deployment_report(tmp_path)


def test_int8_file_is_timed_beside_fp32(tiny_run: Path, tmp_path: Path) -> None:  # noqa: F811
    """An int8 file named by quantize.json is measured now, not copied from the JSON (any ONNX
    file stands in for it here)."""
    from fastreco.deploy.onnx import export_onnx

    stand_in = export_onnx(tiny_run, tmp_path / "stand_in.onnx")
    _fake_outputs(tmp_path / "deploy")
    quantize = tmp_path / "deploy" / "compression" / "quantize.json"
    report = json.loads(quantize.read_text())
    report["int8"]["path"] = str(stand_in)
    quantize.write_text(json.dumps(report))
    html = D.deployment_report(
        tiny_run, [tmp_path / "deploy"], tmp_path, max_events=300
    ).read_text()
    assert html.count("measured now") == 3  # PyTorch, ONNX fp32, ONNX int8
    assert "12.35" not in html  # the JSON's int8 size is not shown
