"""Evaluation of LArTPC pixel-ID runs: per-hit ROC, purity / efficiency, Michel clusters, speed.

``fastreco evaluate runs/<patch run> [--compare runs/<unet run>]`` scores every hit of the SAME
test events (the test split of the first run's event store; the compared runs must use the same
store) with each method:

* a patch-mode run: the patch CNN in PyTorch (one patch per hit, batched), the same network
  exported to ONNX and run by ONNX Runtime, and its exact fully convolutional equivalent
  (:func:`~fastreco.models.lartpc.dense_patch_cnn`: feature maps once per event, dense layers
  at the hits only, :meth:`~fastreco.models.lartpc.DensePatchCNN.scores_at`); the largest
  difference of the equivalent's scores from the patch CNN's is reported (it should be at
  float32 rounding level);
* an image-mode run: the network on the whole event in one pass, read at the hits; and the
  same network on the tiles that hold hits only (:func:`~fastreco.models.lartpc.unet_scores_at`:
  aligned tiles grown by the receptive field, exact), in PyTorch and in ONNX Runtime, with the
  largest difference of their scores from the whole-image pass and the number of tiles run;
* a sparse-mode run (:class:`~fastreco.models.lartpc_sparse.SparseUResNet`): the sparse U-Net
  on the event's hit pixels only, all in one pass (PyTorch).

Per method: ROC curves and AUC of EM against track (score ``p_em / (p_em + p_track)`` on hits
whose true class is track or EM) and of the Michel score (sigmoid, on all hits); EM and track
purity and efficiency of the 3-class argmax; the confusion matrix; Michel electron selection at
the cluster level (:func:`match_michel_clusters`); the whole-event inference time (ADC image in,
per-hit scores out; the dense image is built beforehand for every method; wall and process
time, the latter fair on a shared machine) and its ratio to the patch CNN's. Writes
``metrics.json`` and ``report.html`` with event displays.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch

from fastreco.data.lartpc_images import (
    CLASS_EM,
    CLASS_NAMES,
    CLASS_NONE,
    CLASS_TRACK,
    downsample_drift,
    extract_patches,
)
from fastreco.errors import InputError
from fastreco.models.lartpc import MICHEL_INDEX, N_CLASSES, PixelUNet

log = logging.getLogger(__name__)

#: A hit is called a Michel hit when its Michel probability is at least this.
MICHEL_THRESHOLD = 0.5
#: Thresholds of the Michel-cluster efficiency / purity scan (report figure).
MICHEL_SCAN = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: Patches per forward call of the patch CNN.
PATCH_BATCH = 4096
#: (wires, ticks) of the U-Net's hit tiles: with the trained U-Net's halo of (56, 224) the
#: fastest of (32, 256), (64, 512), (128, 1024) on the test events (CPU, 1 thread).
HIT_TILE = (128, 1024)


@dataclasses.dataclass(frozen=True)
class MichelMatching:
    """Cluster-level Michel matching (see :func:`match_michel_clusters`)."""

    #: true Michel electrons with fewer hits are not counted, predicted clusters with fewer
    #: pixels dropped: an electron of a few MeV already crosses 4 wires with ~5 pixels each
    #: (the simulated Michel electrons have hundreds of hits), isolated fragments do not.
    min_true_hits: int = 20
    min_cluster_hits: int = 20
    cluster_purity: float = 0.5  # share of the cluster's hits from the Michel electron
    completeness: float = 0.3  # share of the Michel electron's hits in its genuine clusters
    #: (wires, ticks) each predicted pixel is grown by before the connected components: pixels
    #: within 2 reach + 1 (3 wires = 1.4 cm, 13 ticks = 1.0 cm of drift) are linked, which
    #: bridges the gaps of a showering electron; (0, 0) is plain 8-connectivity.
    reach: tuple[int, int] = (1, 6)


def match_michel_clusters(
    predicted: npt.NDArray[np.bool_],
    true_id: npt.NDArray[np.integer],
    config: MichelMatching = MichelMatching(),
) -> dict[str, int]:
    """Match clusters of predicted-Michel pixels to true Michel electrons in one image.

    Clusters are the connected components of ``predicted`` where two pixels are neighbours when
    they lie within ``2 reach + 1`` wires and ticks of each other (``scipy.ndimage.label``, 8-
    connectivity, of the image dilated by a ``(2 reach + 1)`` box, read back at the predicted
    pixels; ``reach = (0, 0)``: plain 8-connectivity); clusters with fewer than
    ``min_cluster_hits`` pixels are dropped. A true Michel
    electron is the set of pixels with one id > 0 in ``true_id`` (the truth particle of Michel
    hits); those with fewer than ``min_true_hits`` pixels are not counted. A cluster C is
    **genuine** when at least ``cluster_purity`` of its pixels belong to one Michel electron M
    (C is matched to M); M is **found** when its genuine clusters hold together at least
    ``completeness`` of its pixels (a showering electron often comes out in a few pieces, each
    all Michel). Efficiency = found Michel electrons / counted Michel electrons; purity =
    genuine clusters / kept clusters.

    Args:
        predicted: bool (H, W), pixels called Michel (hit pixels with a Michel score over the
            threshold).
        true_id: int (H, W), a positive id per true Michel electron, 0 elsewhere.

    Returns:
        ``n_true``, ``n_true_matched``, ``n_clusters``, ``n_clusters_matched``.
    """
    from scipy import ndimage

    if predicted.shape != true_id.shape:
        raise InputError(
            "predicted and true images differ in shape",
            field="true_id",
            value=(predicted.shape, true_id.shape),
        )
    rw, rt = config.reach
    box = np.ones((2 * rw + 1, 2 * rt + 1), bool)
    grown = ndimage.binary_dilation(predicted, structure=box) if predicted.any() else predicted
    components, _ = ndimage.label(grown, structure=np.ones((3, 3), int))
    clusters = np.where(predicted, components, 0)
    ids = np.unique(clusters[clusters > 0])
    clusters = np.searchsorted(ids, clusters) + 1  # renumber 1..n_clusters
    clusters[~predicted] = 0
    n_clusters = len(ids)
    true_ids, true_sizes = np.unique(true_id[true_id > 0], return_counts=True)
    counted = true_ids[true_sizes >= config.min_true_hits]
    size_of_true = dict(zip(true_ids.tolist(), true_sizes.tolist(), strict=True))
    cluster_sizes = np.bincount(clusters.ravel(), minlength=n_clusters + 1)
    kept = [c for c in range(1, n_clusters + 1) if cluster_sizes[c] >= config.min_cluster_hits]
    overlap = (clusters > 0) & (true_id > 0)
    pairs, shared = np.unique(
        np.stack([clusters[overlap], true_id[overlap]]), axis=1, return_counts=True
    )
    covered: dict[int, int] = {}  # Michel id -> its pixels inside its genuine clusters
    matched_clusters: set[int] = set()
    for (c, m), n in zip(pairs.T.tolist(), shared.tolist(), strict=True):
        if (
            cluster_sizes[c] >= config.min_cluster_hits
            and n >= config.cluster_purity * (cluster_sizes[c])
        ):
            matched_clusters.add(c)
            covered[m] = covered.get(m, 0) + n
    matched_true = {m for m, n in covered.items() if n >= config.completeness * size_of_true[m]}
    return {
        "n_true": len(counted),
        "n_true_matched": len(matched_true & set(counted.tolist())),
        "n_clusters": len(kept),
        "n_clusters_matched": len(matched_clusters),
    }


# --------------------------------------------------------------------------------------------
# methods: (H, W) ADC image + hits -> (n_hits, 4) scores
# --------------------------------------------------------------------------------------------
Scorer = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def patch_scorer(model: torch.nn.Module, patch_size: int, drift_downsample: int = 1) -> Scorer:
    """The patch CNN in PyTorch: patches cut around every hit, batched forward passes."""

    @torch.no_grad()
    def score(adc: np.ndarray, wire: np.ndarray, tick: np.ndarray) -> np.ndarray:
        patches = extract_patches(adc, wire, tick, patch_size, drift_downsample)
        out = [
            model(torch.from_numpy(patches[lo : lo + PATCH_BATCH]).unsqueeze(1)).numpy()
            for lo in range(0, len(patches), PATCH_BATCH)
        ]
        return np.concatenate(out) if out else np.zeros((0, N_CLASSES + 1), np.float32)

    return score


def onnx_patch_scorer(
    path: str | os.PathLike[str], patch_size: int, drift_downsample: int = 1
) -> Scorer:
    """The exported patch CNN in ONNX Runtime (CPU), same batching as :func:`patch_scorer`."""
    import onnxruntime as ort

    from fastreco.deploy.onnx import INPUT_NAME

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the same cores as PyTorch
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def score(adc: np.ndarray, wire: np.ndarray, tick: np.ndarray) -> np.ndarray:
        patches = extract_patches(adc, wire, tick, patch_size, drift_downsample)[:, None]
        out = [
            session.run(None, {INPUT_NAME: patches[lo : lo + PATCH_BATCH]})[0]
            for lo in range(0, len(patches), PATCH_BATCH)
        ]
        return np.concatenate(out) if out else np.zeros((0, N_CLASSES + 1), np.float32)

    return score


def dense_scorer(model: torch.nn.Module, drift_downsample: int = 1) -> Scorer:
    """The patch CNN's exact fully convolutional equivalent: trunk once per event, dense layers
    at the hits (:meth:`DensePatchCNN.scores_at`)."""
    from fastreco.models.lartpc import dense_patch_cnn

    dense = dense_patch_cnn(model)

    def score(adc: np.ndarray, wire: np.ndarray, tick: np.ndarray) -> np.ndarray:
        image = downsample_drift(adc, drift_downsample) if drift_downsample > 1 else adc
        return dense.scores_at(
            torch.from_numpy(image),
            torch.from_numpy(wire),
            torch.from_numpy(tick // drift_downsample),
        ).numpy()

    return score


def image_scorer(model: torch.nn.Module) -> Scorer:
    """A fully convolutional network on the whole event, read at the hits."""

    @torch.no_grad()
    def score(adc: np.ndarray, wire: np.ndarray, tick: np.ndarray) -> np.ndarray:
        out = model(torch.from_numpy(adc)[None, None])[0]  # (4, H, W)
        return out[:, torch.from_numpy(wire), torch.from_numpy(tick)].T.numpy()

    return score


def sparse_scorer(model: torch.nn.Module) -> Scorer:
    """A sparse U-Net on the event's hit pixels, all of them in one pass (PyTorch)."""
    from fastreco.models.lartpc_sparse import sparse_scores_at

    def score(adc: np.ndarray, wire: np.ndarray, tick: np.ndarray) -> np.ndarray:
        return sparse_scores_at(model, adc, wire, tick)  # type: ignore[arg-type]

    return score


def _hit_tile(model: PixelUNet) -> tuple[int, int]:
    """:data:`HIT_TILE` rounded up to the U-Net's alignment."""
    return tuple(-(-t // a) * a for t, a in zip(HIT_TILE, model.min_input_size, strict=True))  # type: ignore[return-value]


def hit_tile_scorer(
    model: torch.nn.Module, onnx_path: str | os.PathLike[str] | None = None
) -> Scorer:
    """A U-Net run only on the tiles holding hits (exact, :func:`unet_scores_at`); in ONNX
    Runtime when ``onnx_path`` (exported with dynamic height and width) is given.

    Always the tiles, even when they cover more pixels than the image (no whole-image fallback),
    so that the method's own cost is measured."""
    from fastreco.models.lartpc import unet_scores_at

    forward = None
    if onnx_path is not None:
        import onnxruntime as ort

        from fastreco.deploy.onnx import INPUT_NAME

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

        def forward(x: np.ndarray) -> np.ndarray:
            return session.run(None, {INPUT_NAME: x})[0]

    tile = _hit_tile(model)

    def score(adc: np.ndarray, wire: np.ndarray, tick: np.ndarray) -> np.ndarray:
        return unet_scores_at(
            model, adc, wire, tick, tile=tile, forward=forward, max_area_fraction=np.inf
        )

    return score


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------
def probabilities(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (n, 3) (softmax) and Michel probability (n,) (sigmoid) of scores."""
    logits = torch.from_numpy(np.asarray(scores, np.float32))
    return (
        torch.softmax(logits[:, :N_CLASSES], 1).numpy(),
        torch.sigmoid(logits[:, MICHEL_INDEX]).numpy(),
    )


def hit_metrics(scores: np.ndarray, label: np.ndarray, michel: np.ndarray) -> dict[str, Any]:
    """Per-hit metrics of one method on all test hits (see the module docstring)."""
    from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

    prob, p_michel = probabilities(scores)
    pred = prob.argmax(1)
    out: dict[str, Any] = {"n_hits": len(label)}
    em_trk = (label == CLASS_EM) | (label == CLASS_TRACK)
    em_score = prob[em_trk, CLASS_EM] / np.maximum(
        prob[em_trk, CLASS_EM] + prob[em_trk, CLASS_TRACK], 1e-12
    )
    y_em = label[em_trk] == CLASS_EM
    out["auc_em_vs_track"] = (
        float(roc_auc_score(y_em, em_score)) if 0 < y_em.sum() < len(y_em) else float("nan")
    )
    out["auc_michel"] = (
        float(roc_auc_score(michel, p_michel)) if 0 < michel.sum() < len(michel) else float("nan")
    )
    curves = {}
    if 0 < y_em.sum() < len(y_em):
        fpr, tpr, _ = roc_curve(y_em, em_score)
        curves["em_vs_track"] = _thin(fpr, tpr)
    if 0 < michel.sum() < len(michel):
        fpr, tpr, _ = roc_curve(michel, p_michel)
        curves["michel"] = _thin(fpr, tpr)
    out["roc"] = curves
    for cls, name in ((CLASS_EM, "em"), (CLASS_TRACK, "track")):
        tp = int(np.sum((pred == cls) & (label == cls)))
        out[f"{name}_efficiency"] = tp / max(int(np.sum(label == cls)), 1)
        out[f"{name}_purity"] = tp / max(int(np.sum(pred == cls)), 1)
    out["accuracy"] = float(np.mean(pred == label)) if len(label) else float("nan")
    out["confusion"] = confusion_matrix(label, pred, labels=list(range(N_CLASSES))).tolist()
    return out


def _thin(fpr: np.ndarray, tpr: np.ndarray, n: int = 400) -> dict[str, list[float]]:
    """A ROC curve kept at <= n points (for metrics.json and plots)."""
    idx = np.unique(np.linspace(0, len(fpr) - 1, min(n, len(fpr))).astype(int))
    return {"fpr": fpr[idx].tolist(), "tpr": tpr[idx].tolist()}


# --------------------------------------------------------------------------------------------
# the evaluation
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Method:
    name: str
    run: str
    score: Scorer
    kind: str  # "patch", "onnx", "dense", "image", "tiles", "tiles_onnx", "sparse"


def _methods(runs: Sequence[Path], workdir: Path) -> tuple[list[_Method], dict[str, Any]]:
    from fastreco.deploy.onnx_lartpc import export_pixel_id_module
    from fastreco.train.pixel_id import load_pixel_id_model

    methods: list[_Method] = []
    notes: dict[str, Any] = {}
    for run in runs:
        module = load_pixel_id_model(run)
        model = module.model.eval()
        s = module.task.sampling
        label = run.name
        if module.mode == "patch":
            onnx_path = export_pixel_id_module(model, workdir / f"{label}.onnx")
            methods += [
                _Method(
                    f"{label}: patch CNN (PyTorch)",
                    str(run),
                    patch_scorer(model, s.patch_size, s.drift_downsample),
                    "patch",
                ),
                _Method(
                    f"{label}: patch CNN (ONNX Runtime)",
                    str(run),
                    onnx_patch_scorer(onnx_path, s.patch_size, s.drift_downsample),
                    "onnx",
                ),
                _Method(
                    f"{label}: dense equivalent",
                    str(run),
                    dense_scorer(model, s.drift_downsample),
                    "dense",
                ),
            ]
        elif module.mode == "sparse":
            methods.append(
                _Method(
                    f"{label}: {module.task.model.name}", str(run), sparse_scorer(model), "sparse"
                )
            )
        else:
            methods.append(
                _Method(
                    f"{label}: {module.task.model.name}", str(run), image_scorer(model), "image"
                )
            )
            if isinstance(model, PixelUNet):
                onnx_path = export_pixel_id_module(
                    model,
                    workdir / f"{label}.onnx",
                    # parity is measured on the real events instead (max |Δ| to the whole
                    # image in the metrics)
                    verify=False,
                )
                methods += [
                    _Method(
                        f"{label}: U-Net, hit tiles (PyTorch)",
                        str(run),
                        hit_tile_scorer(model),
                        "tiles",
                    ),
                    _Method(
                        f"{label}: U-Net, hit tiles (ONNX Runtime)",
                        str(run),
                        hit_tile_scorer(model, onnx_path),
                        "tiles_onnx",
                    ),
                ]
        notes[str(run)] = {"model": module.task.model.name, "mode": module.mode}
    return methods, notes


def evaluate_pixel_id(
    run_dir: str | os.PathLike[str],
    *,
    compare: Sequence[str | os.PathLike[str]] = (),
    out_dir: str | os.PathLike[str] | None = None,
    n_events: int | None = 20,
    n_displays: int = 2,
    progress: bool = True,
    **_ignored: Any,
) -> dict[str, Any]:
    """Evaluate pixel-ID runs on the same test events; writes metrics.json and report.html.

    Args:
        run_dir: a ``kind: pixel_id`` run folder (its test split is used).
        compare: more pixel-ID run folders on the same event store.
        out_dir: where the outputs go (default: ``run_dir``).
        n_events: at most this many test events (None: all).
        n_displays: events shown in the report's event displays.

    Returns:
        The metrics (also in ``metrics.json``): per method ``hit`` metrics, ``michel_clusters``,
        ``seconds_per_event`` (wall) and ``cpu_seconds_per_event`` (process time) with their
        ratios ``time_ratio_to_patch_cnn`` and ``cpu_time_ratio_to_patch_cnn`` (patch CNN's
        time / the method's); ``max_abs_diff_to_patch_cnn`` of the dense equivalent and ONNX.
    """
    from rich.progress import track

    from fastreco.data.store import EventStore
    from fastreco.train.pixel_id import PixelIdTaskConfig, load_sparse_events, split_events
    from fastreco.train.runner import load_run_info

    run = Path(run_dir)
    runs = [run, *(Path(c) for c in compare)]
    tasks = []
    for r in runs:
        info = load_run_info(r)
        if info.get("kind") != "pixel_id":
            raise InputError(
                "not a pixel_id run", source=r / "run.json", field="kind", value=info.get("kind")
            )
        tasks.append(PixelIdTaskConfig.load(r / "config.yaml"))
    task = tasks[0]
    for r, other in zip(runs[1:], tasks[1:], strict=True):
        if other.data != task.data:
            raise InputError(
                f"compared runs must use the same events as {run}",
                source=r / "config.yaml",
                field="data",
            )
    store_dir = load_run_info(run)["data_dir"]
    n_store = EventStore(store_dir).n_events
    test_idx = split_events(n_store, "test", task.data.split)
    if n_events is not None:
        test_idx = test_idx[:n_events]
    events, geometry = load_sparse_events(store_dir, test_idx)
    keep = [i for i, e in enumerate(events) if e.n_hits]
    events, test_idx = [events[i] for i in keep], test_idx[keep]
    if not events:
        raise InputError(
            "no test event with hits", source=store_dir, field="data.split", value=task.data.split
        )
    out = Path(out_dir) if out_dir is not None else run
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        methods, notes = _methods(runs, Path(tmp))
        scores: dict[str, list[np.ndarray]] = {m.name: [] for m in methods}
        seconds: dict[str, list[float]] = {m.name: [] for m in methods}
        cpu_seconds: dict[str, list[float]] = {m.name: [] for m in methods}
        first = events[0].dense(geometry.shape)["adc"]
        for m in methods:  # warm-up (allocators, ONNX Runtime's first run), not timed
            m.score(first, events[0].wire, events[0].tick)
        for event in track(events, description="pixel-ID inference", disable=not progress):
            adc = event.dense(geometry.shape)["adc"]
            for m in methods:
                start, cpu = time.perf_counter(), time.process_time()
                s = m.score(adc, event.wire, event.tick)
                seconds[m.name].append(time.perf_counter() - start)
                cpu_seconds[m.name].append(time.process_time() - cpu)
                scores[m.name].append(np.asarray(s, np.float32))
    label = np.concatenate([e.label for e in events]).astype(np.int64)
    michel = np.concatenate([e.michel for e in events])
    results: dict[str, Any] = {}
    for m in methods:
        all_scores = np.concatenate(scores[m.name])
        clusters = _michel_clusters(events, scores[m.name])
        scan = (
            [_michel_clusters(events, scores[m.name], t) for t in MICHEL_SCAN]
            if m.kind in ("patch", "image", "sparse")
            else []
        )
        results[m.name] = {
            "run": m.run,
            "method": m.kind,
            "hit": hit_metrics(all_scores, label, michel),
            "michel_clusters": clusters,
            "michel_cluster_scan": scan,
            "seconds_per_event": float(np.mean(seconds[m.name])),
            "seconds_per_event_median": float(np.median(seconds[m.name])),
            "cpu_seconds_per_event": float(np.mean(cpu_seconds[m.name])),
        }
    patch_names = [m.name for m in methods if m.kind == "patch"]
    reference = patch_names[0] if patch_names else None
    for r in results.values():
        for key in ("seconds_per_event", "cpu_seconds_per_event"):
            ratio = f"{key.removesuffix('seconds_per_event')}time_ratio_to_patch_cnn"
            r[ratio] = results[reference][key] / max(r[key], 1e-9) if reference else None

    def max_gap(method: _Method, reference_kind: str) -> float | None:
        """Largest score difference, over the events, to the same run's ``reference_kind``."""
        ref = [p.name for p in methods if p.kind == reference_kind and p.run == method.run]
        if not ref:
            return None
        return float(
            max(
                np.abs(a - b).max(initial=0.0)
                for a, b in zip(scores[method.name], scores[ref[0]], strict=True)
            )
        )

    diffs: dict[str, float] = {}
    tile_diffs: dict[str, float] = {}
    for m in methods:
        if m.kind in ("dense", "onnx") and (gap := max_gap(m, "patch")) is not None:
            diffs[m.name] = gap
        if m.kind in ("tiles", "tiles_onnx") and (gap := max_gap(m, "image")) is not None:
            tile_diffs[m.name] = gap
            results[m.name]["hit_tiles"] = _tile_counts(methods, m.run, events, geometry.shape)
    metrics: dict[str, Any] = {
        "runs": [str(r) for r in runs],
        "models": notes,
        "data_dir": str(store_dir),
        "test_events": test_idx.tolist(),
        "n_events": len(events),
        "n_hits": len(label),
        "hits_per_event": float(len(label) / len(events)),
        "plane": list(geometry.shape),
        "torch_threads": torch.get_num_threads(),
        "michel_threshold": MICHEL_THRESHOLD,
        "michel_matching": dataclasses.asdict(MichelMatching()),
        "max_abs_diff_to_patch_cnn": diffs,
        "max_abs_diff_to_whole_image": tile_diffs,
        "methods": results,
    }
    metrics["summary"] = _summary_rows(results, metrics["max_abs_diff_to_patch_cnn"])
    for name, d in tile_diffs.items():
        t = results[name]["hit_tiles"]
        metrics["summary"][f"{name}: max |Δ score| to the whole image"] = (
            f"{d:.2e}; {t['tiles_per_event']:.1f} of {t['tiles_in_grid']} tiles per event, "
            f"crops {t['crop_pixels_over_image']:.2f}x the image's pixels"
        )
    report = _report(metrics, events, geometry.shape, scores, methods, n_displays)
    metrics["outputs"] = {
        "metrics": str(out / "metrics.json"),
        "report": str(report.write(out / "report.html")),
    }
    tmp_path = out / f".metrics.json.{os.getpid()}.tmp"
    tmp_path.write_text(json.dumps(metrics, indent=2, default=_json_default) + "\n")
    os.replace(tmp_path, out / "metrics.json")
    return metrics


def _michel_clusters(
    events: Sequence[Any],
    scores: Sequence[np.ndarray],
    threshold: float = MICHEL_THRESHOLD,
    config: MichelMatching = MichelMatching(),
) -> dict[str, Any]:
    """Cluster-level Michel efficiency and purity summed over events, hits called Michel at
    ``threshold``. Each event is matched on the box around its predicted and true Michel hits
    (with a margin wider than the clustering reach), which gives the same clusters as the whole
    image."""
    total = {"n_true": 0, "n_true_matched": 0, "n_clusters": 0, "n_clusters_matched": 0}
    margin = 2 * max(config.reach) + 2
    for event, s in zip(events, scores, strict=True):
        _, p = probabilities(s)
        called = p >= threshold
        inside = called | event.michel
        if not inside.any():
            continue
        w0, t0 = int(event.wire[inside].min()) - margin, int(event.tick[inside].min()) - margin
        w1, t1 = int(event.wire[inside].max()) + margin, int(event.tick[inside].max()) + margin
        wire, tick = event.wire[inside] - w0, event.tick[inside] - t0
        predicted = np.zeros((w1 - w0 + 1, t1 - t0 + 1), bool)
        predicted[wire, tick] = called[inside]
        true_id = np.zeros(predicted.shape, np.int64)
        particle = event.particle if event.particle is not None else np.zeros(event.n_hits)
        true_id[wire, tick] = np.where(
            event.michel[inside], particle[inside].astype(np.int64) + 1, 0
        )
        for key, value in match_michel_clusters(predicted, true_id, config).items():
            total[key] += value
    total["threshold"] = threshold
    total["efficiency"] = (
        total["n_true_matched"] / total["n_true"] if total["n_true"] else float("nan")
    )
    total["purity"] = (
        total["n_clusters_matched"] / total["n_clusters"] if total["n_clusters"] else float("nan")
    )
    return total


def _tile_counts(
    methods: Sequence[_Method], run: str, events: Sequence[Any], shape: tuple[int, int]
) -> dict[str, Any]:
    """Hit tiles run per event and the pixels their crops cover, relative to the image."""
    from fastreco.models.lartpc import hit_tiles, unet_halo
    from fastreco.train.pixel_id import load_pixel_id_model

    model = load_pixel_id_model(Path(run)).model
    halo, tile = unet_halo(model), _hit_tile(model)
    n_tiles, area = [], []
    for e in events:
        tiles = hit_tiles(shape, e.wire, e.tick, tile, halo)
        n_tiles.append(len(tiles))
        area.append(sum(t.shape[0] * t.shape[1] for t in tiles) / (shape[0] * shape[1]))
    grid = -(-shape[0] // tile[0]) * -(-shape[1] // tile[1])
    return {
        "tile": list(tile),
        "halo": list(halo),
        "tiles_in_grid": grid,
        "tiles_per_event": float(np.mean(n_tiles)),
        "crop_pixels_over_image": float(np.mean(area)),
    }


def _summary_rows(results: dict[str, Any], diffs: dict[str, float]) -> dict[str, str]:
    rows = {}
    for name, r in results.items():
        h, c = r["hit"], r["michel_clusters"]
        ratio = r["cpu_time_ratio_to_patch_cnn"]
        rows[name] = (
            f"AUC em/trk {h['auc_em_vs_track']:.4f}, Michel {h['auc_michel']:.4f}; Michel eff "
            f"{c['efficiency']:.2f} pur {c['purity']:.2f}; "
            f"{1e3 * r['cpu_seconds_per_event']:.0f} ms CPU/event"
            + ("" if ratio is None else f" ({ratio:.2f}x less than the patch CNN)")
        )
        scan = [x for x in r["michel_cluster_scan"] if x["n_clusters"] and x["n_true"]]
        if scan:
            best = max(scan, key=lambda x: x["efficiency"] * x["purity"])
            rows[name] += (
                f"; best Michel clusters eff x pur at threshold {best['threshold']:g}: eff "
                f"{best['efficiency']:.2f} pur {best['purity']:.2f}"
            )
    for name, d in diffs.items():
        rows[f"{name}: max |Δ score| to patch CNN"] = f"{d:.2e}"
    return rows


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(type(obj))


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def _report(
    metrics: dict[str, Any],
    events: Sequence[Any],
    shape: tuple[int, int],
    scores: dict[str, list[np.ndarray]],
    methods: Sequence[_Method],
    n_displays: int,
) -> Any:
    from fastreco.evaluate.report import Report

    results = metrics["methods"]
    report = Report(
        "fastreco LArTPC pixel ID: patch CNN vs fully convolutional",
        subtitle=f"{metrics['n_events']} test events, {metrics['n_hits']} hits, plane "
        f"{shape[0]} wires x {shape[1]} ticks",
    )
    report.add_section("Summary")
    report.add_text(
        "Every method scores every hit of the same test events. EM vs track: hits whose true class "
        "is track or EM, score p_em / (p_em + p_track). Michel: all hits, sigmoid score. Purity "
        "and efficiency: 3-class argmax. Michel clusters: clusters of hits with "
        f"Michel probability >= {MICHEL_THRESHOLD} and at least 20 hits (pixels within 3 wires "
        "and 13 ticks are linked); a cluster is genuine when half of its hits are one true "
        "Michel electron's, an electron is found when its genuine clusters hold 30 % of its "
        "hits (at least 20); purity = genuine / all clusters. "
        "Time: ADC image in, per-hit scores out, per event, on "
        f"{metrics['torch_threads']} CPU thread(s); CPU time (process time) is the fair measure "
        "on a shared machine, wall time is shown too; speed-ups are in CPU time."
    )
    rows = []
    for name, r in results.items():
        h, c = r["hit"], r["michel_clusters"]
        rows.append(
            {
                "method": name,
                "AUC EM/track": h["auc_em_vs_track"],
                "AUC Michel": h["auc_michel"],
                "EM eff": h["em_efficiency"],
                "EM pur": h["em_purity"],
                "track eff": h["track_efficiency"],
                "track pur": h["track_purity"],
                "Michel eff (clusters)": c["efficiency"],
                "Michel pur (clusters)": c["purity"],
                "CPU s / event": r["cpu_seconds_per_event"],
                "wall s / event": r["seconds_per_event"],
                "speed-up vs patch CNN": r["cpu_time_ratio_to_patch_cnn"] or float("nan"),
            }
        )
    report.add_table(pd.DataFrame(rows), "Per-hit and Michel-cluster performance, time per event")
    diffs = metrics["max_abs_diff_to_patch_cnn"]
    if diffs:
        report.add_text(
            "Largest |score difference| to the PyTorch patch CNN over all test hits: "
            + ", ".join(f"{k}: {v:.2e}" for k, v in diffs.items())
        )
    tile_diffs = metrics["max_abs_diff_to_whole_image"]
    if tile_diffs:
        report.add_text(
            "U-Net on the hit tiles only (aligned tiles of about "
            f"{HIT_TILE[0]} wires x {HIT_TILE[1]} ticks grown by the receptive field): largest "
            "|score difference| to the whole-image pass: "
            + ", ".join(f"{k}: {v:.2e}" for k, v in tile_diffs.items())
        )
    report.add_section("ROC curves")
    report.add_figure(_roc_figure(results), "Per-hit ROC curves")
    report.add_figure(
        _michel_scan_figure(results),
        "Michel electrons, cluster level: efficiency and purity against the threshold on the "
        "per-hit Michel probability (scan on the test events themselves: a physics analysis "
        "would fix the threshold on validation events)",
    )
    report.add_section("Confusion matrices")
    report.add_figure(
        _confusion_figure(results), "Rows: true class; columns: argmax; fraction of each true class"
    )
    report.add_section("Event displays")
    shown = [m for m in methods if m.kind in ("patch", "image", "sparse")]
    for i in _display_choice(events, n_displays):
        report.add_figure(
            _display(events[i], shape, {m.name: scores[m.name][i] for m in shown}),
            f"Test event {metrics['test_events'][i]}: ADC, truth, predictions (blue track, red EM, "
            "grey none, green Michel), zoomed on the hits that are not noise",
        )
    return report


def _display_choice(events: Sequence[Any], n: int) -> list[int]:
    """Events worth showing: the most Michel hits, the most EM hits, then the most hits."""
    keys = (
        lambda e: int(e.michel.sum()),
        lambda e: int(np.sum(e.label == CLASS_EM)),
        lambda e: e.n_hits,
    )
    chosen: list[int] = []
    for key in keys * n:
        if len(chosen) >= min(n, len(events)):
            break
        best = max((i for i in range(len(events)) if i not in chosen), key=lambda i: key(events[i]))
        chosen.append(best)
    return chosen


def _roc_figure(results: dict[str, Any]) -> Any:
    from fastreco.evaluate.plots import new_figure, plot_style

    with plot_style():
        fig, axes = new_figure(1, 2, figsize=(16, 7))
        for ax, key, title in zip(
            axes[0], ("em_vs_track", "michel"), ("EM vs track", "Michel"), strict=True
        ):
            for name, r in results.items():
                curve = r["hit"]["roc"].get(key)
                if curve:
                    auc = r["hit"]["auc_em_vs_track" if key == "em_vs_track" else "auc_michel"]
                    style = {"onnx": "--", "dense": ":", "tiles": "-.", "tiles_onnx": "-."}.get(
                        r["method"], "-"
                    )
                    ax.plot(curve["fpr"], curve["tpr"], style, label=f"{name} ({auc:.3f})")
            ax.set_xscale("log")
            ax.set_xlim(1e-4, 1)
            ax.set_xlabel("false positive rate")
            ax.set_ylabel("true positive rate")
            ax.set_title(title)
            if ax.get_lines():
                ax.legend(fontsize=10, loc="lower right")
    return fig


def _michel_scan_figure(results: dict[str, Any]) -> Any:
    from fastreco.evaluate.plots import new_figure, plot_style

    with plot_style():
        fig, axes = new_figure(1, 2, figsize=(16, 7))
        for name, r in results.items():
            scan = pd.DataFrame(r["michel_cluster_scan"])
            if scan.empty:
                continue
            axes[0][0].plot(scan["threshold"], scan["efficiency"], "o-", label=name)
            axes[0][1].plot(scan["threshold"], scan["purity"], "o-", label=name)
        for ax, what in zip(axes[0], ("efficiency", "purity"), strict=True):
            ax.set_xlabel("Michel probability threshold")
            ax.set_ylabel(f"Michel cluster {what}")
            ax.set_ylim(0, 1.05)
            if ax.get_lines():
                ax.legend(fontsize=10)
    return fig


def _confusion_figure(results: dict[str, Any]) -> Any:
    from fastreco.evaluate.plots import new_figure, plot_style

    names = [n for n, r in results.items() if r["method"] in ("patch", "image", "sparse")]
    with plot_style():
        fig, axes = new_figure(1, len(names), figsize=(7 * len(names), 6))
        for ax, name in zip(axes[0], names, strict=True):
            cm = np.asarray(results[name]["hit"]["confusion"], float)
            cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
            ax.imshow(cm, vmin=0, vmax=1, cmap="Blues")
            for (i, j), v in np.ndenumerate(cm):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=14)
            ax.set_xticks(range(N_CLASSES), CLASS_NAMES)
            ax.set_yticks(range(N_CLASSES), CLASS_NAMES)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            ax.set_title(name, fontsize=12)
    return fig


_COLOURS = np.array([[0.12, 0.35, 0.85], [0.85, 0.15, 0.15], [0.6, 0.6, 0.6], [0.1, 0.7, 0.2]])


def _display(event: Any, shape: tuple[int, int], predictions: dict[str, np.ndarray]) -> Any:
    """Input ADC, truth and each method's argmax (Michel on top) of one event's hits, as
    (tick, wire) scatter plots zoomed on the hits that are not noise."""
    from matplotlib.colors import LogNorm

    from fastreco.evaluate.plots import new_figure, plot_style

    signal = event.label != CLASS_NONE
    chosen = signal if signal.any() else np.ones(event.n_hits, bool)
    w0 = max(int(event.wire[chosen].min()) - 10, 0)
    w1 = min(int(event.wire[chosen].max()) + 10, shape[0])
    t0 = max(int(event.tick[chosen].min()) - 100, 0)
    t1 = min(int(event.tick[chosen].max()) + 100, shape[1])
    colours = {"truth": _COLOURS[np.where(event.michel, 3, event.label)]}
    for name, s in predictions.items():
        prob, p_michel = probabilities(s)
        colours[name] = _COLOURS[np.where(p_michel >= MICHEL_THRESHOLD, 3, prob.argmax(1))]
    order = np.argsort(event.michel, kind="stable")  # Michel hits drawn last
    with plot_style():
        fig, axes = new_figure(1, 1 + len(colours), figsize=(6 * (1 + len(colours)), 6))
        ax = axes[0][0]
        points = ax.scatter(
            event.tick[order], event.wire[order], c=np.maximum(event.adc[order], 1.0), s=2,
            marker="s", cmap="viridis", norm=LogNorm(vmin=5, vmax=max(float(event.adc.max()), 10)),
        )  # fmt: skip
        fig.colorbar(points, ax=ax, label="ADC")
        ax.set_title("input ADC", fontsize=12)
        for ax, (name, rgb) in zip(axes[0][1:], colours.items(), strict=True):
            ax.scatter(event.tick[order], event.wire[order], c=rgb[order], s=2, marker="s")
            ax.set_title(name, fontsize=12)
        for ax in axes[0]:
            ax.set_xlim(t0, t1)
            ax.set_ylim(w0, w1)
            ax.set_xlabel("tick")
            ax.set_ylabel("wire")
    return fig
