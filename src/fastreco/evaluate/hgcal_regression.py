"""Evaluation of HGCAL property regression: networks against the classical baselines on the same
test events (issue 5; seed 003's figures).

``fastreco evaluate runs/hgcal_energy_cnn3d --compare runs/hgcal_energy_drn`` evaluates every run
(all trained on the same data block, so on the same test events) and the baselines of
:mod:`fastreco.reco.hgcal_energy`:

* energy: the calibrated sum (per-section constants fitted on the training split, all hits,
  particle-blind as the networks are) and, for pions, CALICE-style software compensation
  (fitted on the training pions);
* barycentre: energy-weighted, linear and logarithmic weights (all hits), and the linear
  barycentre of the grid window (the networks' position reference with
  ``position_reference: barycentre``).

Per particle type: the relative energy error ``E_pred / E_true - 1`` (mean absolute "percentage
error" as seed 003, RMS, sigma_eff, histograms, profile and RMS per energy bin, the resolution
sigma_eff / median per bin and its fit ``a/sqrt(E) (+) b/E (+) c``), the absolute barycentre
errors in x, y, z [cm]; robustness: the networks (trained without pileup) and the baselines
(hits within ``data.raw_radius`` of the axis) on fresh single particles with pileup 0, 140 and
200, windows centred on the particle's front-face impact (a seed); 3D saliency (gradient of the predicted energy w.r.t. the input, per layer and
transverse); memory and time per event of the grid pipeline (conversion + CNN) and of the
point-cloud pipeline (selection + DRN) on the same test events; the issue's bars, computed.
Writes ``metrics.json`` and ``report.html`` into the first run folder (or ``out_dir``).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import os
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastreco.data.hexgrid import absolute_from_axis, hexgrid_for
from fastreco.data.store import EventBatch, EventStore
from fastreco.errors import InputError
from fastreco.evaluate.resolution import (
    binned_response,
    effective_sigma,
    effective_sigma_rows,
    energy_bins_from_data,
    fit_resolution_table,
)
from fastreco.geometry.hgcal import HgcalEndcap
from fastreco.reco.hgcal_energy import CalibratedEnergySum, Hits, SoftwareCompensation, barycenter
from fastreco.train.hgcal_regression import (
    HgcalRegressionTaskConfig,
    RegressionDataset,
    RegressionEvents,
    RegressionModule,
    events_from_batch,
    grid_cache_dir,
    hits_near_axis,
    load_raw_calibration,
    load_regression_model,
    load_store_events,
    log_energy,
    split_indices,
    window_axis,
    window_point_clouds,
)

log = logging.getLogger(__name__)

PARTICLES = {11: "e-", -11: "e+", 22: "gamma", 211: "pi+", -211: "pi-", 13: "mu-", -13: "mu+"}
HADRONS = {211, -211}
CALSUM, SOFTCOMP, LINEAR, LOGW, WINDOW = (
    "calibrated sum",
    "software compensation",
    "linear barycentre",
    "log barycentre",
    "window barycentre",
)
#: Energy bins of the per-bin tables (log-spaced over the test sample's range).
N_ENERGY_BINS = 5
#: Test events per particle shown in the saliency maps and measured for memory and time.
N_SALIENCY, N_RESOURCE = 48, 64
#: Timings of the input conversion per pipeline (the median is reported: one timing of a few
#: milliseconds is at the mercy of the machine's other load).
N_TIMINGS = 5
#: Events simulated per step of the pileup study (bounds the memory of PU 200 events).
PILEUP_CHUNK = 25
#: Seed of the independent test samples (``test_events``); never a training store's seed (31).
TEST_SEED = 90_001
#: Bootstrap resamples of the per-bin resolutions' uncertainties (paired over estimators).
N_BOOTSTRAP = 400


@dataclasses.dataclass
class RunUnderTest:
    """A trained run: its folder, task, module and short label."""

    path: Path
    task: HgcalRegressionTaskConfig
    info: dict[str, Any]
    module: RegressionModule

    @property
    def label(self) -> str:
        return f"{self.task.model.name} ({self.path.name})"


def _load_runs(paths: Sequence[str | os.PathLike[str]]) -> list[RunUnderTest]:
    from fastreco.train.runner import load_run_info

    runs = []
    for p in paths:
        info = load_run_info(p)
        if info.get("kind") != "hgcal_regression":
            raise InputError("not an hgcal_regression run", source=p, value=info.get("kind"))
        task = HgcalRegressionTaskConfig.load(Path(p) / "config.yaml")
        runs.append(RunUnderTest(Path(p), task, info, load_regression_model(p)))
    first = runs[0]
    for r in runs[1:]:
        if r.task.data != first.task.data:
            raise InputError(
                f"runs must share their data block to be compared on the same events; "
                f"{r.path} differs from {first.path}",
                source=r.path / "config.yaml",
                field="data",
            )
        if not np.allclose(
            r.info["raw_calibration"]["coef"], first.info["raw_calibration"]["coef"]
        ):
            raise InputError(
                "runs were trained with different raw calibrations", source=r.path, field="data"
            )
    return runs


# --------------------------------------------------------------------------------------------
# predictions
# --------------------------------------------------------------------------------------------
def predict(
    module: RegressionModule, events: RegressionEvents, indices: np.ndarray, batch_size: int = 64
) -> dict[str, np.ndarray]:
    """A run's predictions for ``events[indices]``: energy [GeV] and absolute x, y, z [cm]."""
    data = RegressionDataset(events, indices, module.rep, module.task.position_reference)
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, collate_fn=data.collate)
    outs = []
    with torch.no_grad():
        for b in loader:
            outs.append(module(b["inputs"], b["reference"]).double().numpy())
    out = np.concatenate(outs) if outs else np.zeros((0, 4))
    xyz = absolute_from_axis(
        events.windows.axis[indices], out[:, 1], out[:, 2], out[:, 3], events.z_ref
    )
    return {
        "energy": out[:, 0] * events.raw_energy[indices],
        "x": xyz[:, 0],
        "y": xyz[:, 1],
        "z": xyz[:, 2],
    }


def _hits_of_store(store: EventStore, geometry: HgcalEndcap, radius: float | None) -> Hits:
    """The baselines' hits of every event of a store (event = global index)."""
    parts, start = [], 0
    for batch in store.iter_batches(1000):
        h = Hits.from_batch(batch, geometry, radius)
        h.event = h.event + start
        parts.append(h)
        start += batch.n_events
    return _concat_hits(parts, start)


def _concat_hits(parts: Sequence[Hits], n_events: int) -> Hits:
    cat = {f: np.concatenate([getattr(p, f) for p in parts]) for f in _HIT_ARRAYS}
    return Hits(**cat, n_events=n_events)


_HIT_ARRAYS = ("event", "layer", "energy", "x", "y", "z", "density")


def _take_hits(hits: Hits, events: np.ndarray) -> Hits:
    """The hits of ``events`` (global indices), renumbered 0..len(events)-1 in that order."""
    new = np.full(hits.n_events, -1, np.int64)
    new[events] = np.arange(len(events))
    keep = new[hits.event] >= 0
    fields = {f: getattr(hits, f)[keep] for f in _HIT_ARRAYS}
    fields["event"] = new[hits.event[keep]]
    return Hits(**fields, n_events=len(events))


@dataclasses.dataclass
class Baselines:
    """The classical estimators fitted on the training events of one hit selection."""

    calsum: CalibratedEnergySum
    softcomp: SoftwareCompensation
    radius: float | None

    def predict(self, hits: Hits, pdg: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        """Energies [GeV] and barycentres (x, y, z) [cm] of the events of ``hits``."""
        sc = np.full(hits.n_events, np.nan)
        had = np.isin(pdg, list(HADRONS))
        if had.any():
            sc[had] = self.softcomp.predict(_take_hits(hits, np.flatnonzero(had)))
        out: dict[str, dict[str, np.ndarray]] = {
            CALSUM: {"energy": self.calsum.predict(hits)},
            SOFTCOMP: {"energy": sc},
        }
        for name, method in ((LINEAR, "linear"), (LOGW, "log")):
            xyz = barycenter(hits, method=method)
            out[name] = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}
        return out


def fit_baselines(
    hits: Hits,
    truth: dict[str, np.ndarray],
    train: np.ndarray,
    geometry: HgcalEndcap,
    radius: float | None,
    calsum: CalibratedEnergySum | None = None,
) -> Baselines:
    """Calibrated sum (all training events) and software compensation (training pions)."""
    train = train[np.isfinite(truth["energy"][train])]
    if calsum is None:
        calsum = CalibratedEnergySum(geometry, radius=radius).fit(
            _take_hits(hits, train), truth["energy"][train]
        )
    sc = SoftwareCompensation(geometry, radius=radius)
    pions = train[np.isin(truth["pdg"][train], list(HADRONS))]
    if len(pions) >= 3 * sc.n_bins:
        sc.fit(_take_hits(hits, pions), truth["energy"][pions])
    return Baselines(calsum, sc, radius)


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------
def energy_metrics(pred: np.ndarray, true: np.ndarray, edges: np.ndarray) -> dict[str, Any]:
    """Relative-error summary, per-bin table (binned_response + RMS) and resolution fit."""
    ok = np.isfinite(pred) & np.isfinite(true) & (true > 0)
    rel = pred[ok] / true[ok] - 1.0
    table = binned_response(pred[ok], true[ok], edges, min_events=20)
    table["rms"] = [
        float(np.sqrt(np.mean(rel[(true[ok] >= lo) & (true[ok] < hi)] ** 2)))
        if np.any((true[ok] >= lo) & (true[ok] < hi))
        else math.nan
        for lo, hi in itertools.pairwise(edges)
    ]
    try:
        fit = fit_resolution_table(table, estimator="eff").to_dict()
    except (ValueError, RuntimeError):
        fit = None
    return {
        "n": int(ok.sum()),
        "mean_abs_pct": 100 * float(np.mean(np.abs(rel))) if len(rel) else math.nan,
        "median_pct": 100 * float(np.median(rel)) if len(rel) else math.nan,
        "rms_pct": 100 * float(np.sqrt(np.mean(rel**2))) if len(rel) else math.nan,
        "sigma_eff_pct": 100 * effective_sigma(rel) if len(rel) > 1 else math.nan,
        "bins": table.to_dict(orient="records"),
        "fit": fit,
    }


def bootstrap_resolutions(
    est: dict[str, dict[str, np.ndarray]],
    truth: dict[str, np.ndarray],
    edges: np.ndarray,
    *,
    reference: str = CALSUM,
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
    min_events: int = 20,
) -> dict[str, list[dict[str, Any]]]:
    """Bootstrap uncertainties of the per-bin resolutions ``sigma_eff / median`` of the response.

    The events of each particle and true-energy bin are resampled ``n_boot`` times and every
    energy estimator is evaluated on the same resamples (paired), which gives each estimator's
    standard error and that of its difference to ``reference`` (the correlation through the
    shared events is accounted for).

    Returns:
        ``{particle: [per bin: {e_low, e_high, n, err: {estimator: std}, vs_reference:
        {estimator: {diff, err, p_below}}}]}`` in fractions (not %): ``diff`` is the estimator's
        resolution minus the reference's on the events themselves, ``err`` the bootstrap standard
        deviation of that difference, ``p_below`` the fraction of resamples where the estimator
        is below the reference.
    """
    rng = np.random.default_rng(seed)
    names = [n for n, v in est.items() if "energy" in v]
    out: dict[str, list[dict[str, Any]]] = {}
    for pdg in np.unique(truth["pdg"]):
        sel = truth["pdg"] == pdg
        rows = []
        for lo, hi in itertools.pairwise(edges):
            in_bin = np.flatnonzero(sel & (truth["energy"] >= lo) & (truth["energy"] < hi))
            resp = {
                n: est[n]["energy"][in_bin] / truth["energy"][in_bin]
                for n in names
                if np.all(np.isfinite(est[n]["energy"][in_bin]))
            }
            row: dict[str, Any] = {"e_low": float(lo), "e_high": float(hi), "n": len(in_bin)}
            if len(in_bin) < min_events or not resp:
                rows.append(row | {"err": {}, "vs_reference": {}})
                continue
            draws = rng.integers(0, len(in_bin), size=(n_boot, len(in_bin)))
            point = {n: _resolution_eff(r[None, :])[0] for n, r in resp.items()}
            boot = {n: _resolution_eff(r[draws]) for n, r in resp.items()}
            row["err"] = {n: float(np.std(b, ddof=1)) for n, b in boot.items()}
            row["vs_reference"] = {}
            if reference in boot:
                for n, b in boot.items():
                    if n == reference:
                        continue
                    d = b - boot[reference]
                    row["vs_reference"][n] = {
                        "diff": float(point[n] - point[reference]),
                        "err": float(np.std(d, ddof=1)),
                        "p_below": float(np.mean(d < 0)),
                    }
            rows.append(row)
        out[_particle_name(pdg)] = rows
    return out


def _resolution_eff(response: np.ndarray) -> np.ndarray:
    """``sigma_eff / median`` of each row of ``response`` ``(m, n)``, shape ``(m,)``."""
    return effective_sigma_rows(response) / np.median(response, axis=1)


def position_metrics(
    pred: dict[str, np.ndarray], truth: dict[str, np.ndarray], true_e: np.ndarray, edges: np.ndarray
) -> dict[str, Any]:
    """Mean absolute and RMS barycentre errors [cm], overall and per energy bin."""
    out: dict[str, Any] = {}
    bins: list[dict[str, Any]] = [
        {"e_low": float(lo), "e_high": float(hi)} for lo, hi in itertools.pairwise(edges)
    ]
    for c in ("x", "y", "z"):
        d = pred[c] - truth[f"barycenter_{c}"]
        ok = np.isfinite(d)
        out[f"mean_abs_d{c}_cm"] = float(np.mean(np.abs(d[ok]))) if ok.any() else math.nan
        out[f"rms_d{c}_cm"] = float(np.sqrt(np.mean(d[ok] ** 2))) if ok.any() else math.nan
        for row, lo, hi in zip(bins, edges[:-1], edges[1:], strict=True):
            sel = ok & (true_e >= lo) & (true_e < hi)
            row[f"mean_abs_d{c}_cm"] = float(np.mean(np.abs(d[sel]))) if sel.any() else math.nan
            row["n"] = int(sel.sum())
    out["bins"] = bins
    return out


def cell_width(geometry: HgcalEndcap, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Flat-to-flat width [cm] of the hexagonal cells at (x, y): sqrt(2 A / sqrt(3)) of the fine
    or coarse cell area A (``fine_radius``)."""
    r = np.hypot(x, y)
    area = np.where(r < geometry.fine_radius, geometry.fine_cell_area, geometry.coarse_cell_area)
    return np.sqrt(2.0 * area / math.sqrt(3.0))


# --------------------------------------------------------------------------------------------
# saliency
# --------------------------------------------------------------------------------------------
def saliency_profiles(
    module: RegressionModule,
    events: RegressionEvents,
    indices: np.ndarray,
    layers: Sequence[int],
    n_layers: int,
    pitch: float,
) -> dict[str, np.ndarray]:
    """|d E_pred / d input| of a run on ``events[indices]``, per grid layer ``(L,)`` and
    transverse ``(H, W)`` (mean over events of each event's map normalized to sum 1), and the
    events' mean energy fraction per grid layer ``(L,)``.

    Grid: the gradient w.r.t. the log-energy voxels. Points: w.r.t. the hit features (summed
    over features), binned into the same layers (``layers``: the grid's detector layers, of
    ``n_layers``) and window pixels (``pitch`` [cm], at the hit's depth)."""
    L, H, W = events.windows.shape
    layer_sal, map_sal, layer_e = np.zeros(L), np.zeros((H, W)), np.zeros(L)
    if not len(indices):
        return {"layer": layer_sal, "map": map_sal, "layer_energy": layer_e}
    data = RegressionDataset(events, indices, module.rep, module.task.position_reference)
    b = data.collate([data[i] for i in range(len(data))])
    x = b["inputs"][0].clone().requires_grad_(True)
    module.eval()
    energy = module((x, *b["inputs"][1:]))[:, 0] * b["raw_energy"].float()
    (grad,) = torch.autograd.grad(energy.sum(), x)
    g = grad.abs().numpy()
    for e in indices:
        img = events.windows.event(int(e))
        layer_e += img.sum(axis=(1, 2)) / max(float(img.sum()), 1e-12)
    if module.rep.name == "grid":
        per = g[:, 0] / (g[:, 0].sum(axis=(1, 2, 3), keepdims=True) + 1e-30)  # (n, L, H, W)
        layer_sal = per.sum(axis=(2, 3)).mean(axis=0)
        map_sal = per.sum(axis=1).mean(axis=0)
    else:
        hit_sal = g.sum(axis=1)  # (N,)
        ev = b["inputs"][1].numpy()
        hit_sal = hit_sal / (np.bincount(ev, weights=hit_sal, minlength=len(indices))[ev] + 1e-30)
        feats = b["inputs"][0].numpy()
        grid_index = np.full(n_layers, L - 1)
        grid_index[np.asarray(layers)] = np.arange(L)
        det_layer = np.clip(np.rint(feats[:, 5] * n_layers).astype(int), 0, n_layers - 1)
        layer_sal = np.bincount(grid_index[det_layer], hit_sal, L) / len(indices)
        # x, y columns: cm / 10 in the window frame
        ix = np.clip(np.floor(feats[:, 0] * 10 / pitch + W / 2).astype(int), 0, W - 1)
        iy = np.clip(np.floor(feats[:, 1] * 10 / pitch + H / 2).astype(int), 0, H - 1)
        np.add.at(map_sal, (iy, ix), hit_sal / len(indices))
    return {"layer": layer_sal, "map": map_sal, "layer_energy": layer_e / len(indices)}


# --------------------------------------------------------------------------------------------
# memory and time per event
# --------------------------------------------------------------------------------------------
def torch_peak_bytes(call: Callable[[], object]) -> int:
    """High-water mark of PyTorch's CPU allocations during ``call()`` (the ``Total Allocated``
    counter of ``torch.profiler`` with ``profile_memory``, as
    benchmarks/bench_hgcal_regression_models.py measures)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        trace = json.loads(path.read_text())["traceEvents"]
    totals = [
        e["args"]["Total Allocated"]
        for e in trace
        if e.get("name") == "[memory]" and e["args"].get("Device Type", 0) == 0
    ]
    return max(totals, default=0)


def _numpy_peak(call: Callable[[], Any]) -> tuple[Any, int]:
    """``call()``'s result and the peak of the Python/numpy allocations it made (tracemalloc)."""
    tracemalloc.start()
    try:
        result = call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def measure_pipeline(
    run: RunUnderTest, batch: EventBatch, grid: Any, geometry: HgcalEndcap
) -> dict[str, Any]:
    """Time (CPU seconds of this process) and peak memory per event of a run's whole pipeline
    on ``batch``: the input conversion (grid windows, or the window's point cloud) and one
    forward pass of the model in inference mode."""
    n = batch.n_events
    rep = run.module.rep

    def convert() -> tuple[torch.Tensor, ...]:
        if rep.name == "grid":
            # the log on the stored voxels only: the same images as log_energy(w.dense())
            w = grid.windows(batch, "gev")
            return (torch.from_numpy(w.dense(transform=log_energy)[:, None]),)
        clouds = window_point_clouds(batch, grid, window_axis(grid, batch), geometry)
        return rep.collate(clouds)

    convert()  # warm-up (numba, caches)
    times = []
    for _ in range(N_TIMINGS):
        t0 = time.process_time()
        inputs = convert()
        times.append(time.process_time() - t0)
    t_conv = float(np.median(times))
    _, conv_peak = _numpy_peak(convert)
    model = run.module.model
    model.eval()

    def forward() -> None:
        with torch.no_grad():
            rep.forward(model, inputs)

    forward()
    t0 = time.process_time()
    forward()
    t_model = time.process_time() - t0
    model_peak = torch_peak_bytes(forward)
    input_bytes = sum(t.numel() * t.element_size() for t in inputs if t.is_floating_point())
    return {
        "pipeline": "grid + 3D CNN" if rep.name == "grid" else "point cloud + DRN",
        "run": run.path.name,
        "events": n,
        "conversion ms/event": 1e3 * t_conv / n,
        "conversion events/s": n / max(t_conv, 1e-9),
        "conversion peak MB/event": conv_peak / n / 2**20,
        "input KB/event": input_bytes / n / 1024,
        "model ms/event": 1e3 * t_model / n,
        "model peak MB/event": model_peak / n / 2**20,
        "total ms/event": 1e3 * (t_conv + t_model) / n,
        "params": sum(p.numel() for p in model.parameters()),
    }


# --------------------------------------------------------------------------------------------
# the evaluation
# --------------------------------------------------------------------------------------------
def independent_test_task(
    task: HgcalRegressionTaskConfig, n_events: int, seed: int = TEST_SEED
) -> HgcalRegressionTaskConfig:
    """The task with its data block on an independent test sample: ``n_events`` fresh events
    of the same generator and grid (particles, energies, eta, pileup) from another ``seed``, in
    their own store beside the training store (``<store>_test-n<N>-s<seed>``). The store and
    its grid file are made by the training data's own path
    (:func:`~fastreco.train.hgcal_regression.load_store_events`) on first use, then reused."""
    from fastreco.data.splits import independent_sample_dir

    out = independent_sample_dir(task.data_dir, n_events, seed, task.data.seed)
    data = dataclasses.replace(task.data, events=n_events, seed=seed, dir=str(out))
    return dataclasses.replace(task, data=data)


def _particle_name(pdg: int) -> str:
    return PARTICLES.get(int(pdg), str(int(pdg)))


def _estimates(
    runs: Sequence[RunUnderTest],
    events: RegressionEvents,
    idx: np.ndarray,
    baselines: Baselines,
    hits: Hits,
) -> dict[str, dict[str, np.ndarray]]:
    """Every estimator's energy and/or barycentre on ``events[idx]`` (hits: the same events)."""
    out = {r.label: predict(r.module, events, idx) for r in runs}
    out.update(baselines.predict(hits, events.truth["pdg"][idx]))
    # the energy-weighted barycentre of the grid window: the CNN's position reference
    b = events.grid_barycentre()[idx]
    xyz = absolute_from_axis(events.windows.axis[idx], b[:, 0], b[:, 1], b[:, 2], events.z_ref)
    out[WINDOW] = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}
    return out


def _score(
    est: dict[str, dict[str, np.ndarray]], truth: dict[str, np.ndarray], edges: np.ndarray
) -> dict[str, dict[str, dict[str, Any]]]:
    """{particle: {"energy": {estimator: metrics}, "position": {estimator: metrics}}}."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for pdg in np.unique(truth["pdg"]):
        sel = truth["pdg"] == pdg
        t = {k: v[sel] for k, v in truth.items()}
        res: dict[str, dict[str, Any]] = {"energy": {}, "position": {}}
        for name, values in est.items():
            if "energy" in values and np.isfinite(values["energy"][sel]).any():
                res["energy"][name] = energy_metrics(values["energy"][sel], t["energy"], edges)
            if "x" in values:
                p = {c: values[c][sel] for c in ("x", "y", "z")}
                res["position"][name] = position_metrics(p, t, t["energy"], edges)
        out[_particle_name(pdg)] = res
    return out


def evaluate_hgcal_regression(
    run_dir: str | os.PathLike[str],
    *,
    compare: Sequence[str | os.PathLike[str]] = (),
    out_dir: str | os.PathLike[str] | None = None,
    n_events: int | None = 200,
    pileups: Sequence[float] = (0.0, 140.0, 200.0),
    seed: int = 70_001,
    test_events: int = 0,
    test_seed: int = TEST_SEED,
    progress: bool = True,
    **_ignored: Any,
) -> dict[str, Any]:
    """Evaluate regression runs and the baselines on the same test events (module docstring).

    Args:
        run_dir, compare: run folders trained on the same data block.
        out_dir: where metrics.json and report.html go (default: ``run_dir``).
        n_events: fresh single-particle events per pileup point (0 or None: no pileup study).
        pileups: the pileup values of the robustness study; its windows and the baselines'
            hits (within ``data.raw_radius``) are centred on the particle's front-face impact
            (a seed, as a tracker would give), so that the study measures the pileup energy
            in the window, not the failure of finding the shower among pileup showers.
        seed: seed of the fresh pileup samples (never used in training).
        test_events: 0: the runs' test split of their store; N > 0: an independent sample of
            N events (:func:`independent_test_task`, seed ``test_seed``), all of them test events,
            on which every run and baseline is evaluated (the baselines are still fitted on
            the training split of the runs' store).
    """
    from rich.progress import track

    from fastreco.sim.hgcal import simulate_hgcal_batch

    runs = _load_runs([run_dir, *compare])
    task = runs[0].task
    out = Path(out_dir) if out_dir is not None else Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    raw_calib = load_raw_calibration(runs[0].info)
    need_points = any(r.module.rep.needs_points for r in runs)
    separate = bool(test_events)
    events, _ = load_store_events(
        task, points=need_points and not separate, calib=raw_calib, progress=progress
    )
    store = EventStore(task.data_dir)
    geometry = store.detector
    assert isinstance(geometry, HgcalEndcap)
    train = split_indices(events, task, "train")
    if separate:
        test_task = independent_test_task(task, int(test_events), test_seed)
        test_set, _ = load_store_events(
            test_task, points=need_points, calib=raw_calib, progress=progress
        )
        test_store = EventStore(test_task.data_dir)
        test = np.flatnonzero(test_set.valid)
    else:
        test_set, test_store = events, store
        test = split_indices(events, task, "test")
    truth_test = {k: v[test] for k, v in test_set.truth.items()}
    # log-spaced bins over the test range (max_discrete=0: never one bin per distinct energy)
    edges = energy_bins_from_data(
        test_set.truth["energy"][test], max_discrete=0, n_bins=N_ENERGY_BINS
    )

    # --- main comparison: all hits for the baselines (no pileup) ---------------------------------
    hits_all = _hits_of_store(store, geometry, None)
    base = fit_baselines(hits_all, events.truth, train, geometry, None)
    test_hits = _hits_of_store(test_store, geometry, None) if separate else hits_all
    del hits_all
    est = _estimates(runs, test_set, test, base, _take_hits(test_hits, test))
    del test_hits
    scores = _score(est, truth_test, edges)
    boot = bootstrap_resolutions(est, truth_test, edges)
    _attach_bootstrap(scores, boot)

    # --- robustness: fresh events with pileup, windows and hits around the seeded axis ----------
    radius = task.data.raw_radius
    hits_r = _hits_of_store(store, geometry, radius)
    base_r = fit_baselines(hits_r, events.truth, train, geometry, radius, calsum=raw_calib)
    del hits_r
    grid = hexgrid_for(geometry, task.data.grid_spec(), grid_cache_dir(task))
    pu_rows: list[dict[str, Any]] = []
    pu_samples: dict[float, RegressionEvents] = {}
    for i, pu in enumerate(
        track(list(pileups) if n_events else [], description="pileup", disable=not progress)
    ):
        config = task.data.sim_config(pileup=float(pu), n_events=n_events)
        parts, hit_parts, start = [], [], 0
        for c, first in enumerate(range(0, int(n_events or 0), PILEUP_CHUNK)):
            size = min(PILEUP_CHUNK, int(n_events or 0) - first)
            batch = simulate_hgcal_batch(config, size, seed + 1000 * i + c, geometry)
            part = events_from_batch(batch, grid, raw_calib, points=need_points, seeded=True)
            hits = hits_near_axis(
                Hits.from_batch(batch, geometry, None), part.windows.axis, radius, part.z_ref
            )
            hits.event = hits.event + start
            start += len(part)
            parts.append(part)
            hit_parts.append(hits)
        sample = _concat_events(parts)
        hits_pu = _concat_hits(hit_parts, len(sample))
        ok = np.flatnonzero(sample.valid)
        pu_samples[float(pu)] = sample
        pu_est = _estimates(runs, sample, ok, base_r, _take_hits(hits_pu, ok))
        pu_rows += _pileup_rows(float(pu), pu_est, {k: v[ok] for k, v in sample.truth.items()})

    # --- saliency --------------------------------------------------------------------------------
    saliency: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    sal_args = (grid.layers, geometry.n_layers, task.data.grid_pitch)
    for r in runs:
        saliency[r.label] = {}
        for pdg in np.unique(truth_test["pdg"]):
            idx = test[truth_test["pdg"] == pdg][:N_SALIENCY]
            saliency[r.label][_particle_name(pdg)] = saliency_profiles(
                r.module, test_set, idx, *sal_args
            )
        if pu_samples:
            pu = max(pu_samples)
            sample = pu_samples[pu]
            idx = np.flatnonzero(sample.valid)[:N_SALIENCY]
            saliency[r.label][f"PU {pu:g}"] = saliency_profiles(r.module, sample, idx, *sal_args)

    # --- memory and time -------------------------------------------------------------------------
    first = np.sort(test[:N_RESOURCE])
    res_batch = EventBatch.concatenate([test_store.read(int(e), int(e) + 1) for e in first])
    torch.set_num_threads(1)
    resources = [measure_pipeline(r, res_batch, grid, geometry) for r in runs]

    metrics: dict[str, Any] = {
        "runs": {
            r.label: {
                "run": str(r.path),
                "model": r.task.model.name,
                "params": r.task.model.params,
                "representation": r.module.rep.name,
                "n_train": r.info.get("n_train"),
                "epochs_trained": r.info.get("epochs_trained"),
                "best_val_loss": r.info.get("best_val_loss"),
            }
            for r in runs
        },
        "data": dataclasses.asdict(task.data),
        "test_sample": (
            {"dir": str(test_task.data_dir), "events": int(test_events), "seed": int(test_seed)}
            if separate
            else None
        ),
        "bootstrap": boot,
        "n_bootstrap": N_BOOTSTRAP,
        "n_test": {
            _particle_name(p): int(np.sum(truth_test["pdg"] == p))
            for p in np.unique(truth_test["pdg"])
        },
        "energy_bins_gev": edges.tolist(),
        "results": scores,
        "pileup": pu_rows,
        "pileup_events": n_events,
        "saliency": {
            run: {k: {kk: vv.tolist() for kk, vv in v.items()} for k, v in per.items()}
            for run, per in saliency.items()
        },
        "resources": resources,
    }
    cells = cell_width(geometry, truth_test["barycenter_x"], truth_test["barycenter_y"])
    metrics["cell_width_cm"] = {
        _particle_name(p): float(np.nanmean(cells[truth_test["pdg"] == p]))
        for p in np.unique(truth_test["pdg"])
    }
    metrics["bars"] = issue_bars(metrics, [r.label for r in runs])
    metrics["summary"] = _summary(metrics, [r.label for r in runs])

    from fastreco.evaluate.hgcal_regression_report import write_report

    report = write_report(metrics, out / "report.html", est, truth_test)
    metrics["outputs"] = {"metrics": str(out / "metrics.json"), "report": str(report)}
    tmp = out / f".metrics.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(metrics, indent=2, default=_json_default) + "\n")
    os.replace(tmp, out / "metrics.json")
    return metrics


def _attach_bootstrap(
    scores: dict[str, dict[str, dict[str, Any]]], boot: dict[str, list[dict[str, Any]]]
) -> None:
    """Write each bin's bootstrap standard error into the scores as ``resolution_eff_boot_err``
    (NaN where the bin had too few events)."""
    for p, rows in boot.items():
        for name, m in scores.get(p, {}).get("energy", {}).items():
            for b, row in zip(m["bins"], rows, strict=True):
                b["resolution_eff_boot_err"] = row["err"].get(name, math.nan)


def _concat_events(parts: Sequence[RegressionEvents]) -> RegressionEvents:
    from fastreco.data.hexgrid import Windows

    ws = [p.windows for p in parts]
    sizes = np.cumsum([0] + [len(w.index) for w in ws[:-1]])
    offsets = np.concatenate(
        [[0]] + [w.offsets[1:] + s for w, s in zip(ws, sizes, strict=True)]
    ).astype(np.int64)
    windows = Windows(
        offsets=offsets,
        index=np.concatenate([w.index for w in ws]),
        value=np.concatenate([w.value for w in ws]),
        origins=np.concatenate([w.origins for w in ws]),
        axis=np.concatenate([w.axis for w in ws]),
        outside=np.concatenate([w.outside for w in ws]),
        shape=ws[0].shape,
    )
    points = None
    if all(p.points is not None for p in parts):
        points = [c for p in parts for c in (p.points or [])]
    return RegressionEvents(
        windows=windows,
        points=points,
        truth={k: np.concatenate([p.truth[k] for p in parts]) for k in parts[0].truth},
        raw_energy=np.concatenate([p.raw_energy for p in parts]),
        event=np.arange(sum(len(p) for p in parts)),
        z_ref=parts[0].z_ref,
        layer_z=parts[0].layer_z,
        pixel_size=parts[0].pixel_size,
        n_side=parts[0].n_side,
        z_front=parts[0].z_front,
    )


def _pileup_rows(
    pileup: float, est: dict[str, dict[str, np.ndarray]], truth: dict[str, np.ndarray]
) -> list[dict[str, Any]]:
    rows = []
    for pdg in np.unique(truth["pdg"]):
        sel = truth["pdg"] == pdg
        for name, v in est.items():
            row: dict[str, Any] = {
                "pileup": pileup,
                "particle": _particle_name(pdg),
                "estimator": name,
                "n": int(sel.sum()),
            }
            if "energy" in v:
                e = v["energy"][sel]
                ok = np.isfinite(e)
                if not ok.any():
                    continue
                rel = e[ok] / truth["energy"][sel][ok] - 1
                row["energy_median_pct"] = 100 * float(np.median(rel))
                row["energy_sigma_eff_pct"] = (
                    100 * effective_sigma(rel) if len(rel) > 1 else math.nan
                )
            if "x" in v:
                for c in ("x", "y", "z"):
                    d = np.abs(v[c][sel] - truth[f"barycenter_{c}"][sel])
                    row[f"mean_abs_d{c}_cm"] = (
                        float(np.nanmean(d)) if np.isfinite(d).any() else math.nan
                    )
            rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# the issue's bars, computed
# --------------------------------------------------------------------------------------------
def _bin_resolutions(m: dict[str, Any]) -> np.ndarray:
    return np.array([b["resolution_eff"] for b in m["bins"]], dtype=np.float64)


def issue_bars(metrics: dict[str, Any], networks: Sequence[str]) -> list[dict[str, Any]]:
    """Each bar of issue 5 with the numbers behind it and whether it is met."""
    res = metrics["results"]
    bars: list[dict[str, Any]] = []

    # (1) energy resolution of the best network below the calibrated sum's at every energy
    def mean_res(name: str) -> float:
        """Mean over particles of the mean resolution over the energy bins (the overall
        sigma_eff where no bin has enough events)."""
        vals = []
        for p in res:
            m = res[p]["energy"].get(name)
            if m is None:
                continue
            bins = _bin_resolutions(m)
            bins = bins[np.isfinite(bins)]
            vals.append(float(bins.mean()) if len(bins) else m["sigma_eff_pct"] / 100)
        return float(np.mean(vals)) if vals else math.inf

    best = min(networks, key=mean_res)
    details, met, per_bin = [], True, []
    boot = metrics.get("bootstrap") or {}
    for p in res:
        if CALSUM not in res[p]["energy"] or best not in res[p]["energy"]:
            continue
        net = _bin_resolutions(res[p]["energy"][best])
        ref = _bin_resolutions(res[p]["energy"][CALSUM])
        ok = np.isfinite(net) & np.isfinite(ref)
        below = bool(np.all(net[ok] < ref[ok])) and bool(ok.any())
        met &= below
        rows = boot.get(p, [])
        pairs = []
        for i in np.flatnonzero(ok):
            d = rows[i]["vs_reference"].get(best) if i < len(rows) else None
            text = f"{100 * net[i]:.2f}/{100 * ref[i]:.2f}"
            if d is not None:
                text += f" ({100 * d['diff']:+.2f} ± {100 * d['err']:.2f})"
                per_bin.append(
                    {
                        "particle": p,
                        "e_low": rows[i]["e_low"],
                        "e_high": rows[i]["e_high"],
                        "n": rows[i]["n"],
                        "network": float(net[i]),
                        "calibrated_sum": float(ref[i]),
                        "diff": d["diff"],
                        "diff_err": d["err"],
                        "p_below": d["p_below"],
                    }
                )
            pairs.append(text)
        details.append(
            f"{p}: {', '.join(pairs)} % ({'below' if below else 'NOT below'} in every bin)"
        )
    undecided = [b for b in per_bin if abs(b["diff"]) < 2 * b["diff_err"]]
    bars.append(
        {
            "bar": "energy resolution (sigma_eff/median per energy bin) of the best network below "
            "the calibrated sum's at every energy, for electrons and pions",
            "network": best,
            "met": met,
            "detail": f"{best} vs calibrated sum per bin (network − sum ± paired bootstrap "
            f"error): "
            + "; ".join(details)
            + (f"; {len(undecided)} bin(s) within 2 standard errors" if per_bin else ""),
            "bins": per_bin,
        }
    )

    # (2) barycentre error below one cell size in x and y
    def mean_xy(name: str) -> float:
        vals = [
            res[p]["position"][name][k]
            for p in res
            if name in res[p]["position"]
            for k in ("mean_abs_dx_cm", "mean_abs_dy_cm")
        ]
        return float(np.mean(vals)) if vals else math.inf

    best_pos = min(networks, key=mean_xy)
    details, met = [], True
    for p in res:
        m = res[p]["position"].get(best_pos)
        if m is None:
            continue
        cell = metrics["cell_width_cm"][p]
        ok = m["mean_abs_dx_cm"] < cell and m["mean_abs_dy_cm"] < cell
        met &= ok
        details.append(
            f"{p}: |dx| {m['mean_abs_dx_cm']:.2f}, |dy| {m['mean_abs_dy_cm']:.2f} cm vs cell "
            f"{cell:.2f} cm"
        )
    bars.append(
        {
            "bar": "mean absolute barycentre error in x and y below one cell size (flat-to-flat "
            "width of the cells at the true barycentre)",
            "network": best_pos,
            "met": met,
            "detail": f"{best_pos}: " + "; ".join(details),
        }
    )

    # (3) grid interpolation >= 10,000 events/s
    grid_rows = [r for r in metrics["resources"] if r["pipeline"].startswith("grid")]
    if grid_rows:
        rate = grid_rows[0]["conversion events/s"]
        bars.append(
            {
                "bar": "grid interpolation >= 10,000 events/s (one thread, windows + dense images)",
                "met": bool(rate >= 10_000),
                "detail": f"{rate:,.0f} events/s on {grid_rows[0]['events']} test events",
            }
        )

    # (4) point cloud: less memory per event than the 3D CNN at the same accuracy or better
    by_rep = {r["pipeline"]: r for r in metrics["resources"]}
    cnn, drn = by_rep.get("grid + 3D CNN"), by_rep.get("point cloud + DRN")
    if cnn and drn:
        label = {metrics["runs"][k]["run"].rstrip("/").split("/")[-1]: k for k in metrics["runs"]}
        cnn_l, drn_l = label[cnn["run"]], label[drn["run"]]
        less = drn["model peak MB/event"] < cnn["model peak MB/event"]
        acc = mean_res(drn_l) <= mean_res(cnn_l)
        bars.append(
            {
                "bar": "the point-cloud model uses less memory per event than the 3D CNN at the "
                "same accuracy or better",
                "met": bool(less and acc),
                "detail": f"peak MB/event: DRN {drn['model peak MB/event']:.2f} vs CNN "
                f"{cnn['model peak MB/event']:.2f} ({'less' if less else 'more'}); mean "
                f"resolution over bins and particles: DRN {100 * mean_res(drn_l):.2f} % vs CNN "
                f"{100 * mean_res(cnn_l):.2f} % ({'as good or better' if acc else 'worse'})",
            }
        )
    return bars


def _summary(metrics: dict[str, Any], networks: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for p, r in metrics["results"].items():
        for name, m in r["energy"].items():
            out[f"{p} {name} sigma_eff"] = f"{m['sigma_eff_pct']:.2f} %"
        for name, m in r["position"].items():
            out[f"{p} {name} |dx|,|dy|,|dz|"] = (
                f"{m['mean_abs_dx_cm']:.2f}, {m['mean_abs_dy_cm']:.2f}, {m['mean_abs_dz_cm']:.2f} cm"
            )
    for b in metrics["bars"]:
        out[f"bar: {b['bar'][:40]}..."] = "met" if b["met"] else "NOT met"
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(type(obj))
