"""The deployment page of a run: size, accuracy and speed of every deployed form side by side.

:func:`deployment_report` writes ``deployment.html`` (beside ``report.html``) from

* measurements made here, bounded to a few seconds: the PyTorch model and its fp32 ONNX file
  (``RUN/model.onnx``, exported if missing) on the run's TEST split: parameters, bytes, AUC,
  background rejection at 90 % signal efficiency (signal = class 0, as
  :mod:`fastreco.evaluate.run`), events/s and latency per batch of 256 on one CPU thread
  (:func:`fastreco.deploy.quantize.measure_throughput` for ONNX Runtime, the same alternating
  timing for PyTorch);
* what the deployment tools wrote, found under the run folder (``RUN/``, ``RUN/compression``,
  ``RUN/hls4ml``) and in the ``deploy_dirs`` given: ``quantize.json`` and ``qat_scan.json``
  (:mod:`fastreco.deploy.quantize`), ``prune_scan.json`` (:mod:`fastreco.deploy.prune`),
  ``hls_scan.json`` (:mod:`fastreco.deploy.hls`), ``fastreco_hls.json`` (an hls4ml project),
  ``agreement.json`` + ``fastreco_conifer.json`` (a conifer BDT project,
  :mod:`fastreco.deploy.bdt_fpga`) and ``triton.json`` (``benchmarks/bench_triton.py --json``).

Where a measurement is missing the page names the command that produces it; no number on the
page is made up.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fastreco.errors import InputError
from fastreco.evaluate.report import Report

log = logging.getLogger(__name__)

#: The files the deployment tools write, by key.
DEPLOY_FILES: dict[str, str] = {
    "quantize": "quantize.json",
    "qat": "qat_scan.json",
    "qat_int8": "qat_int8.json",
    "prune": "prune_scan.json",
    "hls_scan": "hls_scan.json",
    "hls_project": "fastreco_hls.json",
    "conifer": "agreement.json",
    "triton": "triton.json",
}
#: The command that writes each file (RUN and BDT_DIR stand for the folders).
COMMANDS: dict[str, str] = {
    "quantize": "python -m fastreco.deploy.quantize RUN",
    "qat": "python -m fastreco.deploy.quantize RUN --bits 4,6,8",
    "qat_int8": "python -m fastreco.deploy.quantize RUN --no-qat --qat-int8",
    "prune": "python -m fastreco.deploy.prune RUN",
    "hls_scan": "python -m fastreco.deploy.hls RUN --output RUN/hls4ml_scan "
    '--precision "ap_fixed<16,6,AP_RND,AP_SAT>" --precision "ap_fixed<10,4,AP_RND,AP_SAT>"',
    "hls_project": "fastreco export RUN --hls4ml RUN/hls4ml",
    "conifer": "fastreco export BDT_DIR --conifer BDT_DIR/conifer",
    "triton": "python benchmarks/bench_triton.py --json RUN/triton.json",
}
PAGE = "deployment.html"
#: Batch and thread count of the throughput measurement (as quantize.py's).
BATCH_SIZE = 256
THREADS = 1


def find_deploy_outputs(
    run_dir: str | os.PathLike[str], deploy_dirs: Sequence[str | os.PathLike[str]] = ()
) -> dict[str, Path]:
    """The deployment files of :data:`DEPLOY_FILES` found in ``deploy_dirs`` (first), then in
    ``RUN/compression``, ``RUN/hls4ml`` and ``RUN``, each folder searched one level deep (a
    scan's projects are its subfolders); the first file of each name wins."""
    run = Path(run_dir)
    folders = [Path(d) for d in deploy_dirs] + [run / "compression", run / "hls4ml", run]
    found: dict[str, Path] = {}
    for key, name in DEPLOY_FILES.items():
        for folder in folders:
            hits = [folder / name, *sorted(folder.glob(f"*/{name}"))] if folder.is_dir() else []
            hit = next((h for h in hits if h.is_file()), None)
            if hit is not None:
                found[key] = hit
                break
    return found


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _torch_rate(model: Any, x: np.ndarray, *, rounds: int = 3, min_seconds: float = 0.3) -> float:
    """Events/s of ``model`` on one batch of ``x`` (CPU, one thread), median of ``rounds``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        xb = torch.from_numpy(np.ascontiguousarray(x[:BATCH_SIZE], dtype=np.float32))
        rates = []
        with torch.inference_mode():
            for _ in range(2):
                model(xb)
            for _ in range(rounds):
                n, t0 = 0, time.perf_counter()
                while (dt := time.perf_counter() - t0) < min_seconds or n == 0:
                    model(xb)
                    n += 1
                rates.append(n * len(xb) / dt)
    finally:
        torch.set_num_threads(threads)
    return float(np.median(rates))


def measure_run(
    run_dir: str | os.PathLike[str],
    *,
    onnx_paths: dict[str, Path] | None = None,
    max_events: int = 20_000,
) -> dict[str, dict[str, Any]]:
    """Size, accuracy and throughput of the PyTorch model and of ONNX files of a classification
    run, on its test split (at most ``max_events`` events).

    Args:
        onnx_paths: label -> ONNX file; default the fp32 ``RUN/model.onnx`` (exported if missing).

    Returns:
        label (``"PyTorch"``, then the ONNX labels) -> ``parameters``, ``size_bytes``, ``auc``,
        ``rejection90``, ``events_per_s``, ``ms_per_batch``, ``n_test``.
    """
    import torch

    from fastreco.deploy.inference import load_model
    from fastreco.deploy.onnx import export_onnx
    from fastreco.deploy.prune import classification_metrics, load_split, predict
    from fastreco.deploy.quantize import _onnx_outputs, measure_throughput
    from fastreco.train.runner import load_run

    run = Path(run_dir)
    task, info = load_run(run)
    loaded = load_model(run, "cpu")
    model = loaded.model.cpu().eval()
    test = load_split(task, info, "test")
    x, y = test.x[:max_events], test.y[:max_events]
    if onnx_paths is None:
        path = run / "model.onnx"
        onnx_paths = {"ONNX Runtime fp32": path if path.is_file() else export_onnx(run, path)}
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    n_params = int(sum(p.numel() for p in model.parameters()))
    rows: dict[str, dict[str, Any]] = {
        "PyTorch": {
            "parameters": n_params,
            "size_bytes": buffer.getbuffer().nbytes,
            **classification_metrics(task, y, predict(model, x)),
            "events_per_s": _torch_rate(model, x),
        }
    }
    rates = measure_throughput(
        onnx_paths,
        x,
        batch_size=min(BATCH_SIZE, len(x)),
        threads=THREADS,
        rounds=3,
        min_seconds=0.3,
    )
    for label, path in onnx_paths.items():
        rows[label] = {
            "parameters": n_params,
            "size_bytes": Path(path).stat().st_size,
            **classification_metrics(task, y, _onnx_outputs(Path(path), x)),
            "events_per_s": rates[label],
        }
    for row in rows.values():
        row["ms_per_batch"] = 1e3 * min(BATCH_SIZE, len(x)) / row["events_per_s"]
        row["n_test"] = len(x)
    return rows


def _missing(key: str, run: Path) -> str:
    return f"`{COMMANDS[key].replace('RUN', str(run))}`"


def _summary_table(
    run: Path, measured: dict[str, dict[str, Any]], found: dict[str, Path]
) -> tuple[pd.DataFrame, list[str]]:
    """The side-by-side table and the notes (sources, missing measurements)."""
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    nan = float("nan")

    def add(form: str, r: dict[str, Any], source: str) -> None:
        rows.append(
            {
                "form": form,
                "parameters": r.get("parameters", nan),
                "size [kB]": r.get("size_bytes", nan) / 1e3 if "size_bytes" in r else nan,
                "AUC": r.get("auc", nan),
                "rejection @ 90 %": r.get("rejection90", nan),
                "events/s": r.get("events_per_s", nan),
                f"ms / batch {BATCH_SIZE}": r.get("ms_per_batch", nan),
                "source": source,
            }
        )

    for label, r in measured.items():
        add(label, r, "measured now")
    if not measured:
        notes.append(
            f"PyTorch and ONNX Runtime fp32: not measured here; run `fastreco evaluate {run} "
            "--deployment` (measures them on the test split in a few seconds)."
        )
    quantize = _read(found["quantize"]) if "quantize" in found else None
    if quantize is not None:
        for key in quantize.get("models", []):
            if f"ONNX Runtime {key}" in measured:
                continue
            r = dict(quantize[key])
            r["parameters"] = measured.get("PyTorch", {}).get("parameters", nan)
            if r.get("events_per_s"):
                r["ms_per_batch"] = 1e3 * quantize["throughput"]["batch_size"] / r["events_per_s"]
            add(f"ONNX Runtime {key}", r, found["quantize"].name)
        fp32 = quantize.get("fp32", {})
        int8 = quantize.get("int8", {})
        if fp32.get("events_per_s") and int8.get("events_per_s"):
            notes.append(
                f"int8 / fp32 throughput measured by `quantize`: "
                f"{int8['events_per_s'] / fp32['events_per_s']:.2f}x, AUC change "
                f"{int8['auc'] - fp32['auc']:+.4f} ({quantize['method']})."
            )
    else:
        notes.append(f"ONNX Runtime int8: not measured; run {_missing('quantize', run)}.")
    if "qat_int8" in found:
        qat8 = _read(found["qat_int8"])
        labels = {
            "fp32_finetuned": "ONNX Runtime fp32, fine-tuned control",
            "qat_int8": "ONNX Runtime int8 after QAT",
        }
        for key, label in labels.items():
            r = dict(qat8[key])
            r["parameters"] = measured.get("PyTorch", {}).get("parameters", nan)
            r["ms_per_batch"] = 1e3 * qat8["throughput"]["batch_size"] / r["events_per_s"]
            add(label, r, found["qat_int8"].name)
        notes.append(
            "int8 after QAT / fp32 throughput measured by `quantize --qat-int8`: "
            f"{qat8['qat_int8']['events_per_s'] / qat8['fp32']['events_per_s']:.2f}x, AUC change "
            f"{qat8['qat_int8']['auc'] - qat8['fp32']['auc']:+.4f} against the run, "
            f"{qat8['qat_int8']['auc'] - qat8['fp32_finetuned']['auc']:+.4f} against the control."
        )
    else:
        notes.append(f"int8 after quantization-aware training: run {_missing('qat_int8', run)}.")
    if "triton" in found:
        notes.append(
            f"Triton: serving measured by `{found['triton']}` (its own model and settings, "
            "table below); the server runs the same ONNX file with ONNX Runtime, so its accuracy "
            "is the fp32 row's."
        )
    else:
        notes.append(
            "Triton: throughput/latency not measured; run "
            f"{_missing('triton', run)} (a served model answers like its ONNX file: the fp32 "
            "row's accuracy)."
        )
    if "hls_scan" in found:
        scan = _read(found["hls_scan"])
        for r in scan.get("rows", []):
            add(
                f"hls4ml emulation {r['precision']}",
                {
                    "auc": r.get("auc_hls", nan),
                    "parameters": measured.get("PyTorch", {}).get("parameters", nan),
                },
                found["hls_scan"].name,
            )
    else:
        notes.append(
            f"Fixed-point emulation (hls4ml): accuracy not measured; run {_missing('hls_scan', run)}"
            " (firmware latency needs synthesis with AMD Vitis HLS, see its SYNTHESIS.md)."
        )
    if "hls_project" in found:
        meta = _read(found["hls_project"])
        notes.append(
            f"hls4ml project `{found['hls_project'].parent}`: precision {meta.get('precision')}, "
            f"reuse factor {meta.get('reuse_factor')}; synthesize with "
            f"`{meta.get('synthesis_command')}`."
        )
    if "conifer" in found:
        agreement = _read(found["conifer"])
        meta_path = found["conifer"].parent / "fastreco_conifer.json"
        meta = _read(meta_path) if meta_path.is_file() else {}
        add(
            f"BDT, conifer emulation {agreement.get('precision', '')}",
            {
                "auc": agreement.get("auc_emulation", nan),
                "rejection90": agreement.get("rejection90_emulation", nan),
            },
            found["conifer"].parent.name,
        )
        notes.append(
            f"BDT (conifer, `{found['conifer'].parent}`): {meta.get('n_trees', '?')} trees; "
            f"emulation vs scikit-learn on {agreement['n']} test events: max |Δ score| "
            f"{agreement['max_abs_diff']:.4f}, same decision at 90 % signal efficiency "
            f"{agreement['same_decision']:.2%}, AUC {agreement.get('auc_emulation', nan):.4f} vs "
            f"{agreement.get('auc_float', nan):.4f} in floating point."
        )
    return pd.DataFrame(rows), notes


def deployment_report(
    run_dir: str | os.PathLike[str],
    deploy_dirs: Sequence[str | os.PathLike[str]] = (),
    out_dir: str | os.PathLike[str] | None = None,
    *,
    measure: bool = True,
    max_events: int = 20_000,
) -> Path:
    """Write ``deployment.html`` of a classification run (default into the run folder).

    Args:
        run_dir: the run folder.
        deploy_dirs: further folders holding deployment outputs (searched first).
        out_dir: where the page goes (default: the run folder).
        measure: measure the PyTorch and fp32 ONNX models now (a few seconds); without it the
            page shows only what the tools wrote.
        max_events: test events of the accuracy measurement.

    Returns:
        The page's path.
    """
    from fastreco.train.runner import load_run

    run = Path(run_dir)
    task, _ = load_run(run)
    if task.kind != "classification":
        raise InputError(
            "the deployment page compares classifiers (AUC, rejection)",
            source=run,
            field="kind",
            value=task.kind,
        )
    found = find_deploy_outputs(run, deploy_dirs)
    measured: dict[str, dict[str, Any]] = {}
    if measure:
        fp32 = run / "model.onnx"
        if not fp32.is_file():
            from fastreco.deploy.onnx import export_onnx

            fp32 = export_onnx(run, fp32)
        paths = {"ONNX Runtime fp32": fp32}
        if "quantize" in found:  # time the int8 file beside fp32, alternately, in this process
            int8 = Path(_read(found["quantize"]).get("int8", {}).get("path", ""))
            if int8.is_file():
                paths["ONNX Runtime int8"] = int8
        measured = measure_run(run, onnx_paths=paths, max_events=max_events)
    table, notes = _summary_table(run, measured, found)
    report = Report(
        f"fastreco deployment: {task.name}",
        subtitle=f"{task.model.name} of run {run}: PyTorch, ONNX Runtime, Triton and "
        "fixed-point firmware emulation side by side",
    )
    report.add_section("Side by side")
    report.add_text(
        f"Accuracy on the test split (signal: {task.classes[0]}); throughput on one CPU thread "
        f"at batch {BATCH_SIZE}. Size: the state dict (PyTorch) or the file (ONNX)."
    )
    if len(table):
        report.add_table(
            table,
            "Deployed forms of the model (–: not measured; see the notes).",
            formatters={"rejection @ 90 %": _fmt_rejection},
        )
    report.add_text("\n".join(f"- {n}" for n in notes) if notes else "All measurements present.")

    report.add_section("Accuracy against sparsity")
    if "prune" in found:
        from fastreco.deploy.prune import plot_scan

        rows = pd.DataFrame(_read(found["prune"])["rows"])
        report.add_figure(
            plot_scan(rows, title=task.name, background=task.classes[-1]),
            f"AUC and rejection against the fraction of zero weights ({found['prune']}).",
        )
    else:
        report.add_text(f"Not measured: run {_missing('prune', run)}.")

    report.add_section("Accuracy against bits")
    if "quantize" in found:
        from fastreco.deploy.quantize import plot_quantization

        qat = pd.DataFrame(_read(found["qat"])["rows"]) if "qat" in found else None
        report.add_figure(
            plot_quantization(
                _read(found["quantize"]), qat, title=task.name, background=task.classes[-1]
            ),
            f"Fake quantization and quantization-aware training against bits ({found['quantize']}"
            + (f", {found['qat']}" if qat is not None else "")
            + ").",
        )
    else:
        report.add_text(f"Quantization not measured: run {_missing('qat', run)}.")
    if "hls_scan" in found:
        report.add_figure(
            _plot_hls_scan(pd.DataFrame(_read(found["hls_scan"])["rows"]), task.name),
            f"hls4ml emulation: AUC and max |Δ logit| against the total bits ({found['hls_scan']}).",
        )
    else:
        report.add_text(
            f"Fixed-point precision scan not measured: run {_missing('hls_scan', run)}."
        )

    if "triton" in found:
        bench = _read(found["triton"])
        report.add_section("Triton")
        report.add_table(pd.DataFrame(bench["rows"]), bench.get("title", str(found["triton"])))

    report.add_section("Sources")
    sources = {key: str(found.get(key, "–")) for key in DEPLOY_FILES}
    report.add_table(pd.DataFrame({"output": list(sources), "file": list(sources.values())}))
    out = Path(out_dir) if out_dir is not None else run
    return report.write(out / PAGE)


def _fmt_rejection(value: Any) -> str:
    from fastreco.evaluate import metrics as M

    return (
        "–"
        if value is None or (isinstance(value, float) and np.isnan(value))
        else M.format_rejection(float(value))
    )


def _plot_hls_scan(rows: pd.DataFrame, title: str) -> Any:
    """AUC (left) and max |Δ logit| (right) of the hls4ml emulation against total bits."""
    import re

    from fastreco.evaluate import plots as P

    rows = rows.copy()
    rows["bits"] = [int(re.findall(r"\d+", str(p))[0]) for p in rows["precision"]]
    rows = rows.sort_values("bits")
    with P.plot_style():
        fig, axes = P.new_figure(1, 2, figsize=(16, 7))
        if "auc_hls" in rows:
            axes[0, 0].plot(rows["bits"], rows["auc_hls"], "o-", label="hls4ml emulation")
            axes[0, 0].axhline(
                float(rows["auc_torch"].iloc[0]), color="gray", ls=":", label="PyTorch"
            )
        axes[0, 0].set_ylabel("AUC")
        axes[0, 1].semilogy(rows["bits"], rows["max_abs_diff"], "o-")
        axes[0, 1].set_ylabel("max |Δ logit| vs PyTorch")
        for ax in axes[0]:
            ax.set_xlabel("total bits of ap_fixed")
            P.add_label(ax, title)
        axes[0, 0].legend(fontsize="small")
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fastreco.evaluate.deployment RUN [--deploy-dir DIR]... [--output DIR]``."""
    parser = argparse.ArgumentParser(
        prog="python -m fastreco.evaluate.deployment", description=main.__doc__
    )
    parser.add_argument("run", type=Path)
    parser.add_argument("--deploy-dir", type=Path, action="append", default=[])
    parser.add_argument("--output", type=Path)
    parser.add_argument("--no-measure", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    path = deployment_report(args.run, args.deploy_dir, args.output, measure=not args.no_measure)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
