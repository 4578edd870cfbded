r"""Saliency maps of an image model: which crystals move its score.

The saliency of input pixel :math:`x_{c,i,j}` is :math:`|\partial s / \partial x_{c,i,j}|`, the
gradient of the model's score ``s`` with respect to the input (Simonyan, Vedaldi and Zisserman,
"Deep Inside Convolutional Networks: Visualising Image Classification Models and Saliency Maps",
arXiv:1312.6034). The score is the signal probability of a two-class task (class 0),
the probability of the predicted class of a multi-class task, or the regressed value.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from fastreco.config import TaskConfig
from fastreco.errors import InputError
from fastreco.evaluate.plots import new_figure, plot_style
from fastreco.evaluate.report import Report

log = logging.getLogger(__name__)

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


def score_function(task: TaskConfig) -> ScoreFn:
    """The score whose gradient is shown: raw outputs (batch, n_out) -> scores (batch,)."""
    if task.kind == "regression":
        return lambda out: out[:, 0]
    if len(task.classes) == 2:
        return lambda out: torch.sigmoid(-out[:, 0])  # P(class 0), the signal
    return lambda out: torch.softmax(out, dim=1).max(dim=1).values


def saliency_maps(
    model: torch.nn.Module,
    x: np.ndarray,
    score: ScoreFn,
    *,
    device: torch.device | None = None,
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Scores and saliency maps ``|d score / d x|`` of a batch of inputs.

    Args:
        model: in eval mode (BatchNorm uses its running statistics).
        x: inputs, shape (n, C, H, W) float32.
        score: raw outputs -> one score per event (see :func:`score_function`).

    Returns:
        ``(scores, saliency)``: shapes (n,) and (n, C, H, W), in units of score per input unit.
    """
    dev = device or next(model.parameters()).device
    model.eval()
    scores, maps = [], []
    for start in range(0, len(x), batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size])).to(dev)
        xb.requires_grad_(True)
        s = score(model(xb))  # (b,)
        (grad,) = torch.autograd.grad(s.sum(), xb)
        scores.append(s.detach().cpu().numpy())
        maps.append(grad.abs().cpu().numpy())
    if not maps:
        return np.zeros(0, np.float32), np.zeros((0, *x.shape[1:]), np.float32)
    return np.concatenate(scores), np.concatenate(maps)


def plot_saliency(
    x: np.ndarray,
    saliency: np.ndarray,
    titles: Sequence[str],
    *,
    scale: float = 1.0,
    mean_saliency: np.ndarray | None = None,
    n_mean: int = 0,
) -> Figure:
    """Input energy (log colour) and saliency of each event, one column per event.

    Args:
        x: the inputs shown, (n, C, H, W); channel 0 times ``scale`` is the energy [GeV].
        saliency: their saliency maps, same shape (channel 0 is drawn).
        titles: one title per event.
        mean_saliency: optional (H, W) map averaged over ``n_mean`` events, drawn last.
    """
    n = len(x)
    extra = mean_saliency is not None
    ncols = n + int(extra)
    with plot_style():
        fig, axes = new_figure(2, max(ncols, 1), figsize=(3.4 * max(ncols, 1), 6.6))
        for k in range(n):
            energy = x[k, 0] * scale
            shown = np.where(energy > 1e-3, energy, np.nan)
            positive = energy[energy > 1e-3]
            top = axes[0, k]
            if len(positive):
                vmax = float(positive.max())
                im = top.imshow(
                    shown.T,
                    origin="lower",
                    cmap="viridis",
                    norm=LogNorm(vmin=max(1e-3, vmax / 1e3), vmax=vmax),
                    interpolation="nearest",
                )
                fig.colorbar(im, ax=top, fraction=0.046, pad=0.02)
            top.set_title(titles[k], fontsize="x-small")
            bottom = axes[1, k]
            im = bottom.imshow(
                saliency[k, 0].T, origin="lower", cmap="magma", interpolation="nearest"
            )
            fig.colorbar(im, ax=bottom, fraction=0.046, pad=0.02)
            for ax in (top, bottom):
                ax.set_xticks([])
                ax.set_yticks([])
        if extra:
            axes[0, -1].set_axis_off()
            axes[0, -1].text(
                0.5,
                0.5,
                f"mean |∂s/∂x|\nover {n_mean}\ntest events",
                ha="center",
                va="center",
                fontsize="small",
                transform=axes[0, -1].transAxes,
            )
            im = axes[1, -1].imshow(
                mean_saliency.T, origin="lower", cmap="magma", interpolation="nearest"
            )
            fig.colorbar(im, ax=axes[1, -1], fraction=0.046, pad=0.02)
            axes[1, -1].set_xticks([])
            axes[1, -1].set_yticks([])
        axes[0, 0].set_ylabel("energy [GeV]\niφ →", fontsize="small")
        axes[1, 0].set_ylabel("|∂ score / ∂ input|\niφ →", fontsize="small")
        axes[1, 0].set_xlabel("iη →", fontsize="small")
        fig.suptitle("fastreco Simulation: saliency maps", fontsize="medium")
    return fig


def saliency_section(
    report: Report,
    run_dir: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    label: str,
    n_events: int = 4,
    n_mean: int = 512,
    device: Any = None,
) -> dict[str, Any]:
    """Add a "Saliency maps" section for an image model's test events; returns its summary.

    Shows ``n_events`` test events (spread over the classes) and the saliency averaged over up
    to ``n_mean`` test events.
    """
    from fastreco.deploy.inference import load_model, select_device
    from fastreco.train.datasets import ChunkDataset

    loaded = load_model(run_dir, select_device(device))
    task = loaded.task
    ds = ChunkDataset(data, task, "test")
    parts: list[dict[str, np.ndarray]] = []
    for i in range(len(ds)):
        parts.append(ds.load(i))
        if sum(len(p["event"]) for p in parts) >= n_mean:
            break
    b = {k: np.concatenate([p[k] for p in parts])[:n_mean] for k in parts[0]}
    x = b["x"]
    scores, sal = saliency_maps(loaded.model, x, score_function(task), device=loaded.device)
    if task.kind == "classification":
        pick: list[int] = []
        for c in range(len(task.classes)):
            rows = np.flatnonzero(b["y"] == c)
            pick += rows[: max(1, n_events // len(task.classes))].tolist()
        pick = pick[:n_events]
        names = [task.classes[int(b["y"][i])] for i in pick]
        what = (
            f"P({task.classes[0]})"
            if len(task.classes) == 2
            else "the probability of the predicted class"
        )
    else:
        pick = list(range(min(n_events, len(x))))
        names = [f"{b['energy'][i]:.1f} GeV" for i in pick]
        what = "the regressed correction"
    scale = float(loaded.info.get("preprocessing", {}).get("scales", {}).get("energy", 1.0))
    titles = [
        f"event {int(b['event'][i])}\n{n}, s = {scores[i]:.3f}"
        for i, n in zip(pick, names, strict=True)
    ]
    mean_map = sal[:, 0].mean(axis=0)
    report.add_section("Saliency maps")
    report.add_figure(
        plot_saliency(
            x[pick], sal[pick], titles, scale=scale, mean_saliency=mean_map, n_mean=len(x)
        ),
        f"Top: crystal energies of the input window of {label} (log scale). Bottom: saliency "
        f"|∂s/∂x| (s: {what}); right: averaged over {len(x)} test events. Axes: iη across, iφ up.",
        dpi=80,
    )
    return {
        "score": what,
        "events": [int(b["event"][i]) for i in pick],
        "n_mean": len(x),
        "mean_saliency_max": float(mean_map.max()) if len(x) else None,
    }


def worst_mistakes_section(
    report: Report,
    task: TaskConfig,
    df: pd.DataFrame,
    data: str | os.PathLike[str],
    *,
    label: str,
    n_displays: int = 4,
) -> list[dict[str, Any]]:
    """Add event displays of a model's worst test events; returns ``[{event, why}, ...]``.

    Worst: the lowest probability of the true class (classification), the largest
    ``|E_pred / E_true - 1|`` (regression).

    Args:
        df: test predictions with ``event``, ``y`` and ``p_<class>`` (classification) or
            ``e_pred`` and ``true_energy`` [GeV] (regression).
    """
    from fastreco.data.store import EventStore
    from fastreco.evaluate.display import event_display

    if task.kind == "regression":
        err = df["e_pred"].to_numpy() / df["true_energy"].to_numpy() - 1.0
        worst = np.argsort(-np.nan_to_num(np.abs(err), nan=-1.0))[:n_displays]
        why = [
            f"E_pred = {df['e_pred'].iat[i]:.2f} GeV, E_true = {df['true_energy'].iat[i]:.2f} "
            f"GeV (error {100 * err[i]:+.1f} %)"
            for i in worst
        ]
    else:
        y = df["y"].to_numpy(np.int64)
        probs = np.stack([df[f"p_{c}"].to_numpy() for c in task.classes], axis=1)
        p_true = probs[np.arange(len(y)), y]
        worst = np.argsort(p_true)[:n_displays]
        why = [
            f"true {task.classes[y[i]]}, P({task.classes[y[i]]}) = {p_true[i]:.3g}, "
            f"predicted {task.classes[int(df['predicted'].iat[i])]}"
            for i in worst
        ]
    store = EventStore(Path(data))
    report.add_section(f"Worst mistakes of {label}")
    events = []
    for i, text in zip(worst, why, strict=True):
        ev = int(df["event"].iat[i])
        events.append({"event": ev, "why": text})
        try:
            fig = event_display(
                store.read(ev, ev + 1), store.detector, 0, event_label=f"event {ev}"
            )
        except InputError as exc:
            log.warning("no display of event %d: %s", ev, exc)
            continue
        report.add_figure(fig, f"Event {ev}: {text}.", dpi=60)
    return events
