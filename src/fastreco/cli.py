"""The ``fastreco`` command line: a thin layer over the library's functions.

Every command calls a documented Python function; this module only parses options, shows
progress and prints a summary. User errors (:class:`~fastreco.errors.FastrecoError`) are printed
without a traceback and exit with code 2.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fastreco.errors import FastrecoError

console = Console(stderr=True)
app = typer.Typer(
    name="fastreco",
    help="Fast detector reconstruction: simulate, reconstruct, train, evaluate, export.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
simulate_app = typer.Typer(
    help="Simulate events of a detector into an event store.", no_args_is_help=True
)
baseline_app = typer.Typer(
    help="Classical multivariate baselines on shower shapes.", no_args_is_help=True
)
app.add_typer(simulate_app, name="simulate")
app.add_typer(baseline_app, name="baseline")


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@simulate_app.command("ecal")
def simulate_ecal(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory of HDF5 shards.")],
    particle: Annotated[
        list[str],
        typer.Option(
            "--particle",
            "-p",
            help="Gun particle (repeat for a mix): gamma, pi0, e-, e+, pi+, pi-, mu-, mu+.",
        ),
    ] = ["gamma", "pi0"],  # noqa: B006
    energy: Annotated[
        str, typer.Option(help="GeV: fixed '8', flat '1:100' or log-flat 'log:1:500'.")
    ] = "1:100",
    events: Annotated[int, typer.Option("--events", "-n")] = 10_000,
    seed: Annotated[int, typer.Option()] = 1,
    eta_max: Annotated[float, typer.Option(help="Guns are uniform in |eta| < eta_max.")] = 1.4,
    events_per_shard: Annotated[int, typer.Option()] = 5_000,
    vertex_sigma_z: Annotated[float, typer.Option(help="Beam-spot length (cm), 0 = off.")] = 0.0,
    material_scale: Annotated[
        float, typer.Option(help="Scale of the tracker material budget (0 = no conversions).")
    ] = 1.0,
    workers: Annotated[int, typer.Option(help="Local worker processes (dask).")] = 1,
    scheduler: Annotated[
        str | None, typer.Option(help="Address of a dask scheduler, e.g. tcp://host:8786.")
    ] = None,
) -> None:
    """Single-particle guns in the CMS-like ECAL barrel (resumes a killed run)."""
    from fastreco.sim.config import SimConfig
    from fastreco.sim.engine import simulate

    config = SimConfig(
        particles=tuple(particle),
        energy=energy,
        n_events=events,
        seed=seed,
        eta_max=eta_max,
        events_per_shard=events_per_shard,
        vertex_sigma_z=vertex_sigma_z,
        material_scale=material_scale,
    )
    start = time.perf_counter()
    simulate(config, out, workers=workers, scheduler=scheduler, progress=True)
    elapsed = time.perf_counter() - start
    _summary(
        "simulation",
        {
            "output": str(out),
            "events": f"{events:,}",
            "shards": config.n_shards,
            "particles": ", ".join(config.particles),
            "energy [GeV]": str(config.energy),
            "time": f"{elapsed:.1f} s",
        },
    )


@simulate_app.command("hgcal")
def simulate_hgcal_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory of HDF5 shards.")],
    particle: Annotated[
        list[str],
        typer.Option(
            "--particle",
            "-p",
            help="Gun particle (repeat for a mix): gamma, e-, e+, pi+, pi-, mu-, mu+.",
        ),
    ] = ["gamma", "e-", "pi+"],  # noqa: B006
    n_particles: Annotated[int, typer.Option(help="Gun particles per event (1..10).")] = 3,
    energy: Annotated[str, typer.Option(help="GeV: '50', '10:100' or 'log:10:500'.")] = "10:100",
    pileup: Annotated[
        float, typer.Option(help="Mean minimum-bias interactions (0/50/140/200).")
    ] = 0.0,
    min_separation: Annotated[float, typer.Option(help="cm on the front face.")] = 0.0,
    max_separation: Annotated[
        float | None, typer.Option(help="Close-by particles within this distance (cm).")
    ] = None,
    eta_min: Annotated[float, typer.Option(help="Gun eta range (inside 1.5..3.0).")] = 1.7,
    eta_max: Annotated[float, typer.Option()] = 2.7,
    events: Annotated[int, typer.Option("--events", "-n")] = 1000,
    seed: Annotated[int, typer.Option()] = 1,
    workers: Annotated[int, typer.Option(help="Local worker processes (dask).")] = 1,
    scheduler: Annotated[
        str | None, typer.Option(help="Address of a dask scheduler, e.g. tcp://host:8786.")
    ] = None,
) -> None:
    """Close-by particles with pileup in the HGCAL-like endcap (resumes a killed run).

    Single particles for energy regression: ``-p e- -p gamma -p pi+ -p pi- --n-particles 1
    --energy log:10:500`` (add ``--pileup 140`` or ``200``)."""
    from fastreco.sim.hgcal import HgcalSimConfig
    from fastreco.sim.hgcal_engine import simulate_hgcal

    config = HgcalSimConfig(
        particles=tuple(particle),
        n_particles=n_particles,
        energy=energy,
        pileup=pileup,
        min_separation=min_separation,
        max_separation=max_separation,
        eta_min=eta_min,
        eta_max=eta_max,
        n_events=events,
        seed=seed,
    )
    start = time.perf_counter()
    simulate_hgcal(config, out, workers=workers, scheduler=scheduler, progress=True)
    _summary(
        "HGCAL simulation",
        {
            "output": str(out),
            "events": f"{events:,}",
            "shards": config.n_shards,
            "pileup": f"{pileup:g}",
            "time": f"{time.perf_counter() - start:.1f} s",
        },
    )


@simulate_app.command("lartpc")
def simulate_lartpc_cmd(
    out: Annotated[
        Path, typer.Option("--out", "--output", "-o", help="Output directory of HDF5 shards.")
    ],
    kind: Annotated[
        list[str],
        typer.Option(
            "--kind",
            "-k",
            help="Event kind (repeat for a mix): neutrino, cosmic, muon, electron, photon, "
            "proton, pion, pi0.",
        ),
    ] = ["neutrino"],  # noqa: B006
    n_particles: Annotated[int, typer.Option(help="Gun particles per event (gun kinds).")] = 1,
    energy: Annotated[
        str | None, typer.Option(help="Gun kinetic energy (GeV): '0.5', '0.1:1', 'log:0.05:2'.")
    ] = None,
    cosmics: Annotated[float, typer.Option(help="Mean overlaid cosmic muons per event.")] = 0.0,
    wires: Annotated[int, typer.Option(help="Collection wires (480: one APA).")] = 480,
    ticks: Annotated[int, typer.Option(help="Ticks of 0.5 us (6000: 3 ms).")] = 6000,
    noise: Annotated[bool, typer.Option("--noise/--no-noise")] = True,
    events: Annotated[int, typer.Option("--events", "-n")] = 100,
    events_per_shard: Annotated[int, typer.Option()] = 50,
    seed: Annotated[int, typer.Option()] = 1,
    workers: Annotated[int, typer.Option(help="Local worker processes (dask).")] = 1,
    scheduler: Annotated[
        str | None, typer.Option(help="Address of a dask scheduler, e.g. tcp://host:8786.")
    ] = None,
) -> None:
    """Events in a ProtoDUNE-like LArTPC collection plane (resumes a killed run)."""
    from fastreco.sim.lartpc import LArTpcSimConfig
    from fastreco.sim.lartpc_engine import simulate_lartpc

    config = LArTpcSimConfig(
        kind=tuple(kind),
        n_particles=n_particles,
        energy=energy,
        cosmics=cosmics,
        n_wires=wires,
        n_ticks=ticks,
        noise=noise,
        n_events=events,
        events_per_shard=events_per_shard,
        seed=seed,
    )
    start = time.perf_counter()
    simulate_lartpc(config, out, workers=workers, scheduler=scheduler, progress=True)
    _summary(
        "LArTPC simulation",
        {
            "output": str(out),
            "events": f"{events:,}",
            "shards": config.n_shards,
            "kinds": ", ".join(config.kind),
            "plane": f"{wires} wires x {ticks} ticks",
            "time": f"{time.perf_counter() - start:.1f} s",
        },
    )


@app.command()
def show(
    store: Annotated[Path, typer.Argument(help="Event store (directory or shard file).")],
    event: Annotated[int, typer.Option("--event", "-e")] = 0,
    output: Annotated[Path, typer.Option("--output", "-o")] = Path("event.png"),
) -> None:
    """Event display: crystal image around the seed, truth impact points, barrel view."""
    from fastreco.evaluate.display import save_event_display

    save_event_display(store, event, output)
    console.print(f"wrote [bold]{output}[/bold]")


@app.command()
def reco(
    store: Annotated[Path, typer.Argument(help="Event store (directory or shard file).")],
    output: Annotated[Path, typer.Option("--output", "-o")] = Path("reco.parquet"),
    model: Annotated[
        Path | None,
        typer.Option(
            "--model", help="Run folder of a trained model: add its per-event predictions."
        ),
    ] = None,
    backend: Annotated[
        str, typer.Option(help="Inference with --model: onnx (ONNX Runtime) or torch.")
    ] = "onnx",
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            help="host:port of a Triton server (HTTP) serving --model (fastreco export --triton).",
        ),
    ] = None,
) -> None:
    """Classical reconstruction: seed, 3x3/5x5 and connected clusters, shower shapes; with
    --model, also a trained model's predictions (ONNX Runtime by default)."""
    start = time.perf_counter()
    if server is not None and model is None:
        raise FastrecoError(
            "--server needs --model RUN: the run folder gives the model's name and preprocessing"
        )
    if model is not None:
        from fastreco.deploy.inference import predict_store, write_parquet

        df = predict_store(model, store, backend=backend, server=server)
        write_parquet(df, output)
    else:
        from fastreco.reco.pipeline import reconstruct

        df = reconstruct(store, output, progress=True)
    elapsed = time.perf_counter() - start
    rows: dict[str, object] = {
        "output": str(output),
        "events": f"{len(df):,}",
        "time": f"{elapsed:.1f} s",
        "events/s": f"{len(df) / max(elapsed, 1e-9):,.0f}",
    }
    if model is not None:
        rows["model"] = f"{model} ({'Triton at ' + server if server else backend})"
    _summary("reconstruction", rows)


@baseline_app.command("train")
def baseline_train(
    store: Annotated[Path, typer.Argument(help="Event store, or a reco .parquet file.")],
    task: Annotated[str, typer.Option(help="Classification task.")] = "gamma-vs-pi0",
    output: Annotated[Path, typer.Option("--output", "-o")] = Path("runs/baseline"),
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Train the shower-shape BDT and write metrics.json + report.html."""
    import pandas as pd

    from fastreco.reco.pipeline import reconstruct
    from fastreco.train.baseline import train_baseline

    if store.suffix == ".parquet":
        df = pd.read_parquet(store)
    else:
        output.mkdir(parents=True, exist_ok=True)
        df = reconstruct(store, output / "reco.parquet", progress=True)
    metrics = train_baseline(df, output, task=task, seed=seed)
    bdt = metrics["classifiers"]["BDT"]
    rows: dict[str, object] = {"AUC": f"{bdt['auc']:.4f}"}
    for eff, rej in bdt["rejection"].items():
        rows[f"π0 rejection @ {float(eff):.0%} γ eff"] = "∞" if rej is None else f"{rej:.1f}"
    rows["report"] = metrics["outputs"]["report"]
    _summary(f"BDT {task}", rows)


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="Task config (configs/*.yaml).")],
    init_from: Annotated[
        Path | None,
        typer.Option(help="Run folder whose weights initialise the model (transfer learning)."),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the run from its last checkpoint.")
    ] = False,
    devices: Annotated[int, typer.Option(help="Processes for distributed data parallel.")] = 1,
    runs_dir: Annotated[Path, typer.Option(help="Where run folders go.")] = Path("runs"),
    run_name: Annotated[str | None, typer.Option(help="Run folder name (default: task).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override the number of epochs.")] = None,
) -> None:
    """Train a task's model (simulating its data first if needed) into runs/<name>/."""
    from fastreco.train.runner import load_run_info
    from fastreco.train.tasks import TASK_KINDS, config_kind

    start = time.perf_counter()
    run = TASK_KINDS.resolve(config_kind(config)).train(
        config,
        runs_dir=runs_dir,
        run_name=run_name,
        init_from=init_from,
        resume=resume,
        devices=devices,
        max_epochs=epochs,
    )
    if os.environ.get("LOCAL_RANK", "0") != "0":
        return
    info = load_run_info(run)
    _summary(
        f"trained {info['task']}",
        {
            "run": str(run),
            "best val loss": f"{info.get('best_val_loss') or float('nan'):.4f}",
            "epochs": info.get("epochs_trained"),
            "time": f"{time.perf_counter() - start:.0f} s",
        },
    )


@app.command()
def convert(
    source: Annotated[Path, typer.Argument(help="Event store or ROOT file.")],
    output: Annotated[Path, typer.Option("--output", "-o")],
    to: Annotated[str, typer.Option(help="Target format: root | store | grid.")] = "root",
    branch_map: Annotated[
        Path | None,
        typer.Option(help="YAML/JSON mapping of fastreco fields to your ROOT branch names."),
    ] = None,
    tree: Annotated[str, typer.Option()] = "events",
    pitch: Annotated[float, typer.Option(help="grid: pixel size (cm) on the front face.")] = 1.0,
    window: Annotated[int, typer.Option(help="grid: window side (pixels).")] = 32,
    layers: Annotated[
        str | None, typer.Option(help="grid: layers, e.g. '0-25' or '0,2,4' (default all).")
    ] = None,
    cartesian: Annotated[
        bool, typer.Option(help="grid: same pixel size in every layer (default projective).")
    ] = False,
    values: Annotated[str, typer.Option(help="grid: voxel content gev | mip | deposit.")] = "gev",
    cache_dir: Annotated[
        Path | None, typer.Option(help="grid: directory caching the overlap weights.")
    ] = None,
) -> None:
    """Convert between the HDF5 event store and ROOT TTrees (uproot), or an HGCAL store to
    regular 3D grid windows (hexagonal cells by overlap area)."""
    from fastreco.data import root_io

    if to == "root":
        path = root_io.export_root(source, output, tree=tree)
    elif to == "store":
        path = root_io.import_root(source, output, tree=tree, branch_map=branch_map)
    elif to == "grid":
        path = _convert_grid(source, output, pitch, window, layers, cartesian, values, cache_dir)
    else:
        raise FastrecoError(f"--to: unknown format '{to}'; choose 'root', 'store' or 'grid'")
    console.print(f"wrote [bold]{path}[/bold]")


@app.command()
def demo(
    output: Annotated[Path, typer.Option("--output", "-o")] = Path("demo_out"),
    events: Annotated[int, typer.Option("--events", "-n")] = 20_000,
    workers: Annotated[int, typer.Option()] = 2,
    cnn_epochs: Annotated[int, typer.Option(help="Epochs of the demo's CNN (0: no CNN).")] = 4,
) -> None:
    """The main job end to end: simulate gamma/pi0, reconstruct, train the BDT and a small CNN,
    write their reports."""
    from fastreco.demo import run_demo

    report = run_demo(output, n_events=events, workers=workers, cnn_epochs=cnn_epochs)
    console.print(f"BDT report: [bold]{report}[/bold]")
    cnn_report = output / "cnn" / "report.html"
    if cnn_epochs > 0 and cnn_report.exists():
        console.print(f"CNN vs BDT report: [bold]{cnn_report}[/bold]")


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run folder written by `fastreco train`.")],
    compare: Annotated[
        list[Path] | None,
        typer.Option(help="Another run folder on the same task data (repeat for several)."),
    ] = None,
    bdt: Annotated[bool, typer.Option(help="Add the shower-shape BDT (two-class tasks).")] = True,
    backend: Annotated[str, typer.Option(help="torch or onnx (ONNX Runtime).")] = "torch",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Output folder (default: the run).")
    ] = None,
    events: Annotated[
        int,
        typer.Option(
            help="Clustering runs: fresh events per pileup / separation point; pixel-ID runs: "
            "test events evaluated (at most); HGCAL regression runs: fresh events per pileup "
            "point."
        ),
    ] = 40,
    test_events: Annotated[
        int,
        typer.Option(
            help="Regression runs (ECAL and HGCAL): evaluate on an independent sample of this "
            "many events (same generator, another seed; simulated once beside the store) instead "
            "of the test split (0)."
        ),
    ] = 0,
    deployment: Annotated[
        bool,
        typer.Option(
            "--deployment",
            help="Also write deployment.html: size, accuracy and speed of PyTorch, ONNX Runtime "
            "fp32/int8, Triton and the fixed-point emulation, from the deployment tools' "
            "outputs under RUN (and --deploy-dir).",
        ),
    ] = False,
    deploy_dir: Annotated[
        list[Path] | None,
        typer.Option(help="A folder of deployment outputs (repeatable; implies --deployment)."),
    ] = None,
) -> None:
    """Evaluate a run on its test split: RUN/metrics.json and RUN/report.html (clustering runs:
    CLUE against the network on fresh events at each pileup and separation)."""
    from fastreco.train.tasks import TASK_KINDS, run_kind

    start = time.perf_counter()
    kind = run_kind(run)
    evaluate = TASK_KINDS.resolve(kind).evaluate
    if test_events and kind not in ("regression", "hgcal_regression"):
        from fastreco.errors import InputError

        raise InputError(
            f"an independent test sample is made for regression runs only, not {kind}",
            field="--test-events",
            value=test_events,
        )
    if kind == "clustering":
        metrics = evaluate(run, out_dir=output, n_events=events)
        rows = {
            f"{r['algorithm']} PU {r['pileup']:g}": f"eff {r['efficiency']:.3f}, merge "
            f"{r['merge_rate']:.3f}, fakes/event {r['fake_clusters_per_event']:.2f}, "
            f"{r['ms_per_event']:.0f} ms/event"
            for r in metrics["pileup_scan"]
        }
        rows["report"] = metrics["outputs"]["report"]
        rows["time"] = f"{time.perf_counter() - start:.0f} s"
        _summary(f"evaluation of {run}", rows)
        return
    if kind in ("pixel_id", "hgcal_regression"):
        extra = {"test_events": test_events} if test_events else {}
        metrics = evaluate(run, compare=compare or (), out_dir=output, n_events=events, **extra)
        _summary(
            f"evaluation of {run}",
            {
                **metrics["summary"],
                "report": metrics["outputs"]["report"],
                "time": f"{time.perf_counter() - start:.0f} s",
            },
        )
        return
    extra = {"test_events": test_events} if test_events else {}
    metrics = evaluate(
        run, compare=compare or (), bdt=bdt, backend=backend, out_dir=output, **extra
    )
    rows: dict[str, object] = {}
    for name, clf in metrics.get("classifiers", {}).items():
        r90 = clf["rejection"].get("0.9")
        rows[f"{name}: AUC, R@90%"] = f"{clf['auc']:.4f}, {'∞' if r90 is None else f'{r90:.1f}'}"
    for name, m in metrics.get("multiclass", {}).items():
        rows[f"{name}: accuracy"] = f"{m['accuracy']:.4f}"
    for cls, reg in metrics.get("regression", {}).items():
        for row in reg["ratio_to_oracle"]:
            keys = [k for k in row if k.endswith("/ oracle")]
            text = ", ".join(
                f"{k.removesuffix(' / oracle')} {row[k]:.2f}x" for k in keys if row[k] is not None
            )
            rows[f"{cls} {row['e_low']:.3g}-{row['e_high']:.3g} GeV: σ/σ(oracle)"] = text or "-"
    rows["report"] = metrics["outputs"]["report"]
    if deployment or deploy_dir:
        from fastreco.evaluate.deployment import deployment_report

        rows["deployment page"] = str(deployment_report(run, deploy_dir or (), output))
    rows["time"] = f"{time.perf_counter() - start:.0f} s"
    _summary(f"evaluation of {run}", rows)


@app.command("export")
def export(
    run: Annotated[Path, typer.Argument(help="Run folder written by `fastreco train`.")],
    onnx: Annotated[
        bool,
        typer.Option("--onnx", help="ONNX with a dynamic batch axis (the only format so far)."),
    ] = True,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Model file (default: RUN/model.onnx).")
    ] = None,
    triton: Annotated[
        Path | None,
        typer.Option(
            "--triton",
            help="Also add the model to this Triton model repository, named after the run "
            "folder (serve it with `fastreco serve`).",
        ),
    ] = None,
    hls4ml: Annotated[
        Path | None,
        typer.Option(
            "--hls4ml",
            help="Also write an hls4ml project here and compile its bit-accurate C++ emulation.",
        ),
    ] = None,
    conifer: Annotated[
        Path | None,
        typer.Option(
            "--conifer",
            help="RUN is a BDT folder (`fastreco baseline train`): write its conifer FPGA "
            "project here, compile the emulation and compare it with scikit-learn.",
        ),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="Fixed-point type: of hls4ml's activations and accumulators (default "
            "ap_fixed<16,6,AP_RND,AP_SAT>), or of conifer's inputs, thresholds and scores "
            "(default ap_fixed<18,8>)."
        ),
    ] = None,
    reuse_factor: Annotated[int, typer.Option(help="hls4ml reuse factor.")] = 1,
) -> None:
    """Export a trained run (ONNX + its preprocessing JSON, runnable without fastreco; a Triton
    model repository; an hls4ml FPGA project) or a BDT folder (a conifer FPGA project)."""
    from fastreco.deploy.onnx import preprocessing_path
    from fastreco.deploy.registry import export_run

    del onnx  # the only format so far; more register in fastreco.deploy.registry.EXPORTERS
    if conifer is not None:  # a BDT folder: no network to export
        import json

        from fastreco.deploy import bdt_fpga

        project = bdt_fpga.export_bdt_fpga(
            run, conifer, precision=precision or bdt_fpga.DEFAULT_PRECISION
        )
        agreement = json.loads((project / bdt_fpga.AGREEMENT_FILE).read_text(encoding="utf-8"))
        rows_bdt = {
            "conifer project (emulation compiled)": str(project),
            "emulation vs scikit-learn": f"max |Δ score| {agreement['max_abs_diff']:.4f}, same "
            f"decision {agreement['same_decision']:.2%}, AUC "
            f"{agreement.get('auc_emulation', float('nan')):.4f} (float "
            f"{agreement.get('auc_float', float('nan')):.4f})",
            "synthesis (needs AMD Vitis HLS)": bdt_fpga.synthesis_command(project),
        }
        _summary(f"exported {run}", rows_bdt)
        return
    path = export_run(run, "onnx", output)
    rows: dict[str, object] = {"model": str(path), "preprocessing": str(preprocessing_path(path))}
    if triton is not None:
        from fastreco.deploy.triton import model_name, write_model_repository

        rows["triton model"] = str(write_model_repository(path, triton, model_name(run)))
    if hls4ml is not None:
        from fastreco.deploy.hls import export_hls, synthesis_command

        project = export_hls(
            run,
            hls4ml,
            precision=precision or "ap_fixed<16,6,AP_RND,AP_SAT>",
            reuse_factor=reuse_factor,
        )
        rows["hls4ml project (emulation compiled)"] = str(project)
        rows["synthesis (needs AMD Vitis HLS)"] = synthesis_command(project)
    _summary(f"exported {run}", rows)


@app.command()
def serve(
    repo: Annotated[
        Path, typer.Argument(help="Triton model repository (`fastreco export RUN --triton REPO`).")
    ],
    port: Annotated[int, typer.Option("--port", help="HTTP port (0: a free one).")] = 8000,
    grpc_port: Annotated[
        int, typer.Option("--grpc-port", help="gRPC port (0: a free one).")
    ] = 8001,
    host: Annotated[str, typer.Option(help="Address the endpoints bind to.")] = "127.0.0.1",
) -> None:
    """Serve a model repository with NVIDIA Triton Inference Server until Ctrl-C."""
    import signal

    from fastreco.deploy.triton import TritonError, TritonServer

    def _interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)  # stop the server on SIGTERM too
    try:
        with TritonServer(repo, http_port=port, grpc_port=grpc_port, host=host) as server:
            models = sorted(p.parent.name for p in repo.glob("*/config.pbtxt"))
            _summary(
                "Triton Inference Server",
                {
                    "http": server.http_url,
                    "grpc": server.grpc_url,
                    "models": ", ".join(models),
                    "log (while serving)": str(server.log_path),
                },
            )
            console.print("serving until Ctrl-C")
            while server.running:
                time.sleep(0.5)
            raise TritonError(f"tritonserver exited on its own:\n{server.log_errors()}")
    except KeyboardInterrupt:
        console.print("server stopped")


def _parse_layers(text: str) -> tuple[int, ...]:
    """'0-25' or '0,2,4-6' -> layer indices."""
    from fastreco.errors import InputError

    out: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            out.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise InputError(
            "expected e.g. '0-25' or '0,2,4-6'", source="--layers", value=text
        ) from None
    return tuple(out)


def _convert_grid(
    source: Path,
    output: Path,
    pitch: float,
    window: int,
    layers: str | None,
    cartesian: bool,
    values: str,
    cache_dir: Path | None,
) -> Path:
    from rich.progress import Progress

    from fastreco.data.grid_dataset import convert_to_grid
    from fastreco.data.hexgrid import GridSpec
    from fastreco.errors import InputError

    if values not in ("gev", "mip", "deposit"):
        raise InputError("choose gev, mip or deposit", source="--values", value=values)
    spec = GridSpec(
        pitch=pitch,
        window=window,
        layers=None if layers is None else _parse_layers(layers),
        projective=not cartesian,
    )
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("grid windows", total=None)
        return convert_to_grid(
            source,
            output,
            spec,
            values=values,  # type: ignore[arg-type]
            cache_dir=cache_dir,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )


def _summary(title: str, rows: dict[str, object]) -> None:
    table = Table(title=title, show_header=False)
    for key, value in rows.items():
        table.add_row(key, str(value))
    Console().print(table)


def main() -> None:
    """Entry point: run the app, turning user errors into a message and exit code 2."""
    try:
        app()
    except FastrecoError as exc:
        console.print(f"[bold red]error:[/bold red] {exc}", soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
