"""Global magnitude pruning of a trained run, with a gradual sparsity schedule while fine-tuning.

The weights of every ``Linear`` / ``Conv`` layer are pruned together (one global L1 threshold,
:func:`torch.nn.utils.prune.global_unstructured`), so layers with many redundant weights lose
more of them. The sparsity rises during fine-tuning following the polynomial schedule of
M. Zhu and S. Gupta, "To prune, or not to prune" (2017) <https://arxiv.org/abs/1710.01878>:

.. math::

    s_t = s_f + (s_i - s_f) \\left(1 - \\frac{t}{n}\\right)^3, \\qquad 0 \\le t \\le n,

from :math:`s_i = 0` at the first step to the target :math:`s_f` at step :math:`n` (by default
half of the fine-tuning), then the network fine-tunes at the target; :func:`make_permanent`
finally folds the masks into the weights (``prune.remove``).

:func:`sparsity_scan` does this for several targets, each from the run's trained weights, and
measures the AUC and the background rejection at 90 % signal efficiency on the TEST split, the
same way :mod:`fastreco.evaluate.run` does (signal = class 0, score = ``p_<class 0>`` of
:func:`fastreco.deploy.inference.postprocess`). Run it as a script::

    python -m fastreco.deploy.prune runs/ecal_gamma_pi0_dnn --output /tmp/compression_dnn

The data helpers here (:func:`load_split`, :func:`fine_tune`, :func:`evaluate_model`) are shared
with :mod:`fastreco.deploy.quantize`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.utils import prune

from fastreco.config import TaskConfig
from fastreco.errors import InputError

log = logging.getLogger(__name__)

#: Layers whose ``weight`` is pruned (biases, BatchNorm and the like are left dense).
PRUNABLE: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: Working point of the quoted rejection: signal efficiency (fraction).
SIGNAL_EFFICIENCY = 0.9
DEFAULT_SPARSITIES: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9)

Params = list[tuple[nn.Module, str]]


# --------------------------------------------------------------------------------------------
# data and evaluation (shared with quantize.py)
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class SplitData:
    """The events of one split in memory.

    Attributes:
        x: model inputs, shape (n, *input_shape), float32.
        y: class index (int64) or regression target (float32), shape (n,).
    """

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def load_split(
    task: TaskConfig,
    info: dict[str, Any],
    split: str,
    *,
    max_chunks: int | None = None,
    seed: int = 0,
) -> SplitData:
    """The events of ``split`` of a run's event store (all chunks, or ``max_chunks`` of them
    drawn at random with ``seed``, so a subset spans every shard)."""
    from fastreco.evaluate.run import store_dir
    from fastreco.train.datasets import ChunkDataset

    ds = ChunkDataset(store_dir(task, info), task, split)
    indices = np.arange(len(ds))
    if max_chunks is not None and max_chunks < len(ds):
        indices = np.sort(np.random.default_rng(seed).choice(indices, max_chunks, replace=False))
    xs, ys = [], []
    for i in indices:
        chunk = ds.load(int(i))
        xs.append(chunk["x"])
        ys.append(chunk["y"])
    if not xs or sum(len(y) for y in ys) == 0:
        raise InputError("no events in this split", source=str(ds.paths[0].parent), field=split)
    data = SplitData(np.concatenate(xs).astype(np.float32), np.concatenate(ys))
    log.info("loaded %d %s events (%d chunks)", len(data), split, len(indices))
    return data


def task_loss(task: TaskConfig, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The training loss of :class:`fastreco.train.module.TaskModule`: BCE with logits on one
    logit, cross-entropy for more classes, MSE for regression.

    Shapes:
        - **out:** (B, n_out); **y:** (B,)
    """
    if task.kind == "regression":
        return nn.functional.mse_loss(out.squeeze(-1), y.float())
    if out.shape[-1] == 1:
        return nn.functional.binary_cross_entropy_with_logits(out.squeeze(-1), y.float())
    return nn.functional.cross_entropy(out, y.long())


def _flip_windows(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random eta / phi flips of crystal windows (B, C, H, W), as the training's augmentation."""
    if x.ndim != 4:
        return x
    n = len(x)
    flip_eta = torch.rand(n, generator=gen) < 0.5
    flip_phi = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip_eta[:, None, None, None], x.flip(2), x)
    return torch.where(flip_phi[:, None, None, None], x.flip(3), x)


def fine_tune(
    model: nn.Module,
    task: TaskConfig,
    data: SplitData,
    *,
    epochs: float = 1.0,
    lr: float = 2e-4,
    batch_size: int | None = None,
    augment: bool = True,
    seed: int = 0,
    before_step: Callable[[int, int], None] | None = None,
) -> list[float]:
    """Fine-tune ``model`` in place on ``data`` with AdamW and a cosine learning-rate decay.

    Args:
        epochs: passes over ``data`` (a fraction is allowed: ``0.5`` is half an epoch).
        lr: initial learning rate.
        batch_size: events per step (default: the task's).
        augment: random eta/phi flips of window inputs.
        before_step: called as ``before_step(step, total_steps)`` before each optimizer step
            (e.g. to raise the sparsity).

    Returns:
        The loss of every step.
    """
    bs = batch_size or task.training.batch_size
    n = len(data)
    total = max(math.ceil(epochs * n / bs), 0)
    if total == 0:
        return []
    gen = torch.Generator().manual_seed(seed)
    x_all = torch.from_numpy(data.x)
    y_all = torch.from_numpy(data.y)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    model.train()
    losses: list[float] = []
    order = torch.randperm(n, generator=gen)
    cursor = 0
    for step in range(total):
        if cursor + bs > n and cursor > 0:  # a new epoch, never a batch of one (BatchNorm)
            order, cursor = torch.randperm(n, generator=gen), 0
        idx = order[cursor : cursor + bs]
        cursor += bs
        if before_step is not None:
            before_step(step, total)
        xb = x_all[idx]
        if augment:
            xb = _flip_windows(xb, gen)
        loss = task_loss(task, model(xb), y_all[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
    model.eval()
    log.debug("fine-tuned %d steps, loss %.4f -> %.4f", total, losses[0], losses[-1])
    return losses


def signal_scores(task: TaskConfig, raw: np.ndarray) -> np.ndarray:
    """``p_<class 0>`` of :func:`fastreco.deploy.inference.postprocess` (class 0 is the signal,
    e.g. the photon; for one logit ``l`` of class 1 that is ``sigmoid(-l)``), shape (n,)."""
    from fastreco.deploy.inference import postprocess

    if task.kind != "classification":
        raise InputError("compression scans need a classification run", field="kind")
    return postprocess(task, raw)[f"p_{task.classes[0]}"]


def classification_metrics(
    task: TaskConfig, y: np.ndarray, raw: np.ndarray, efficiency: float = SIGNAL_EFFICIENCY
) -> dict[str, float]:
    """AUC and background rejection ``1/eps_b`` (with its binomial error) at signal efficiency
    ``efficiency`` of raw outputs (n, n_out) for class indices ``y`` (n,); signal = class 0."""
    from fastreco.evaluate import metrics as M

    labels = (np.asarray(y) == 0).astype(np.int8)
    curve = M.roc(labels, signal_scores(task, raw))
    return {
        "auc": curve.auc,
        "rejection90": float(curve.rejection_at(efficiency)),
        "rejection90_err": float(curve.rejection_err_at(efficiency)),
    }


def predict(model: nn.Module, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Raw outputs (n, n_out) of ``model`` in eval mode on the CPU for inputs ``x`` (n, ...)."""
    from fastreco.deploy.inference import torch_predictor

    return torch_predictor(model.eval(), torch.device("cpu"), batch_size)(x)


def evaluate_model(model: nn.Module, task: TaskConfig, test: SplitData) -> dict[str, float]:
    """:func:`classification_metrics` of ``model`` on ``test``."""
    return classification_metrics(task, test.y, predict(model, test.x))


# --------------------------------------------------------------------------------------------
# pruning
# --------------------------------------------------------------------------------------------
def prunable_parameters(model: nn.Module) -> Params:
    """``(module, "weight")`` of every Linear / Conv layer of ``model``."""
    return [(m, "weight") for m in model.modules() if isinstance(m, PRUNABLE)]


def _weight(module: nn.Module, name: str) -> torch.Tensor:
    """The current (masked) weight, recomputed: ``module.weight`` is only refreshed by a forward."""
    mask = getattr(module, f"{name}_mask", None)
    if mask is None:
        return getattr(module, name).detach()
    return getattr(module, f"{name}_orig").detach() * mask


def n_pruned(params: Params) -> int:
    """Weights currently masked to zero (0 before any pruning)."""
    return sum(
        int((getattr(m, f"{n}_mask") == 0).sum()) for m, n in params if hasattr(m, f"{n}_mask")
    )


def n_weights(params: Params) -> int:
    return sum(getattr(m, n).numel() for m, n in params)


def set_global_sparsity(params: Params, sparsity: float) -> int:
    """Prune the smallest-magnitude weights of all ``params`` together until a fraction
    ``sparsity`` of them is masked; masks only grow (a pruned weight stays pruned).

    Returns:
        The number of weights newly pruned.
    """
    if not 0.0 <= sparsity <= 1.0:
        raise InputError("sparsity must be in [0, 1]", field="sparsity", value=sparsity)
    n_new = round(sparsity * n_weights(params)) - n_pruned(params)
    if n_new <= 0:
        return 0
    # ``amount`` as a count applies to the weights not yet pruned (torch's PruningContainer)
    prune.global_unstructured(
        params,
        pruning_method=prune.L1Unstructured,
        importance_scores={(m, n): _weight(m, n) for m, n in params},
        amount=n_new,
    )
    return n_new


def make_permanent(params: Params) -> None:
    """Fold the pruning masks into the weights (``prune.remove``): plain parameters again, with
    exact zeros where pruned."""
    for m, n in params:
        if hasattr(m, f"{n}_mask"):
            prune.remove(m, n)


def zero_fraction(params: Params) -> float:
    """Fraction of exactly-zero weights among ``params``."""
    zeros = sum(int((_weight(m, n) == 0).sum()) for m, n in params)
    return zeros / max(n_weights(params), 1)


def polynomial_sparsity(
    step: int, target: float, ramp_steps: int, *, initial: float = 0.0, power: float = 3.0
) -> float:
    """Sparsity at ``step`` of Zhu & Gupta's schedule: ``initial`` at step 0, rising as
    ``target + (initial - target) * (1 - step / ramp_steps) ** power`` to ``target`` at
    ``ramp_steps`` and constant after."""
    if ramp_steps <= 0:
        return target
    t = min(max(step / ramp_steps, 0.0), 1.0)
    return target + (initial - target) * (1.0 - t) ** power


def prune_fine_tune(
    model: nn.Module,
    task: TaskConfig,
    train: SplitData,
    target: float,
    *,
    epochs: float = 1.0,
    ramp_fraction: float = 0.5,
    prune_every: int = 10,
    lr: float = 2e-4,
    seed: int = 0,
) -> nn.Module:
    """Prune ``model`` in place to a global sparsity ``target`` while fine-tuning it on ``train``.

    The sparsity follows :func:`polynomial_sparsity` over the first ``ramp_fraction`` of the
    steps, updated every ``prune_every`` steps and at the end of the ramp; the rest fine-tunes at
    the target. The masks are made permanent at the end (:func:`make_permanent`).
    """
    params = prunable_parameters(model)

    def before_step(step: int, total: int) -> None:
        ramp = int(ramp_fraction * total)
        if step % prune_every == 0 or step == ramp:
            set_global_sparsity(params, polynomial_sparsity(step, target, ramp))

    fine_tune(
        model,
        task,
        train,
        epochs=epochs,
        lr=lr,
        seed=seed,
        before_step=before_step if target > 0 else None,
    )
    set_global_sparsity(params, target)  # the target, whatever the number of steps
    make_permanent(params)
    return model


def sparsity_scan(
    run_dir: str | os.PathLike[str],
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    *,
    epochs: float = 1.0,
    max_train_chunks: int | None = 40,
    lr: float = 2e-4,
    ramp_fraction: float = 0.5,
    seed: int = 0,
) -> pd.DataFrame:
    """Prune a run's model to each target sparsity (from its trained weights each time) while
    fine-tuning on its TRAIN split, and evaluate on its TEST split.

    Args:
        run_dir: a trained classification run folder.
        sparsities: target fractions of zero Linear/Conv weights.
        epochs: fine-tuning passes over the loaded train events.
        max_train_chunks: train chunks loaded (None: all; a chunk holds ~batch-size events).
        lr: initial AdamW learning rate of the fine-tuning (cosine decay).
        ramp_fraction: part of the fine-tuning over which the sparsity rises to the target.

    Returns:
        One row for the trained model (``fine_tuned`` False) and one per target: ``sparsity``
        (target), ``zero_fraction`` (measured, of the prunable weights), ``n_weights``,
        ``n_nonzero``, ``auc``, ``rejection90`` (background rejection at 90 % signal efficiency)
        with ``rejection90_err``, the same two for one-shot pruning without fine-tuning
        (``auc_oneshot``, ``rejection90_oneshot``), ``n_train``, ``n_test`` and ``seconds``.
    """
    from fastreco.deploy.inference import load_model

    loaded = load_model(run_dir, "cpu")
    task, info = loaded.task, loaded.info
    trained_state = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    train = load_split(task, info, "train", max_chunks=max_train_chunks, seed=seed)
    test = load_split(task, info, "test")

    def fresh() -> nn.Module:
        torch.manual_seed(seed)
        loaded.model.load_state_dict(trained_state)
        return loaded.model.eval()

    params = prunable_parameters(loaded.model)
    base = evaluate_model(fresh(), task, test)
    common = {"n_weights": n_weights(params), "n_train": len(train), "n_test": len(test)}
    rows = [
        {
            "sparsity": 0.0,
            "fine_tuned": False,
            "zero_fraction": zero_fraction(params),
            "n_nonzero": int(sum(int((_weight(m, n) != 0).sum()) for m, n in params)),
            **base,
            "auc_oneshot": base["auc"],
            "rejection90_oneshot": base["rejection90"],
            "seconds": 0.0,
            **common,
        }
    ]
    for target in sparsities:
        t0 = time.perf_counter()
        model = fresh()
        p = prunable_parameters(model)
        set_global_sparsity(p, target)
        oneshot = evaluate_model(model, task, test)
        make_permanent(p)
        model = fresh()
        prune_fine_tune(
            model, task, train, target, epochs=epochs, ramp_fraction=ramp_fraction, lr=lr, seed=seed
        )
        p = prunable_parameters(model)
        row = {
            "sparsity": float(target),
            "fine_tuned": True,
            "zero_fraction": zero_fraction(p),
            "n_nonzero": int(sum(int((m.weight != 0).sum()) for m, _ in p)),
            **evaluate_model(model, task, test),
            "auc_oneshot": oneshot["auc"],
            "rejection90_oneshot": oneshot["rejection90"],
            "seconds": time.perf_counter() - t0,
            **common,
        }
        log.info(
            "sparsity %.2f: zeros %.3f, AUC %.4f (one-shot %.4f), R90 %.3f (%.1f s)",
            target,
            row["zero_fraction"],
            row["auc"],
            row["auc_oneshot"],
            row["rejection90"],
            row["seconds"],
        )
        rows.append(row)
    fresh()  # leave the loaded model as trained
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# output: JSON, plot, table (used by the scripts of prune.py and quantize.py)
# --------------------------------------------------------------------------------------------
def jsonable(obj: Any) -> Any:
    """Plain JSON types (NaN and inf to None, strict JSON)."""
    from fastreco.train.baseline import _jsonable

    return _jsonable(obj)


def write_json(obj: Any, path: Path) -> Path:
    """Write ``obj`` as indented strict JSON, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(jsonable(obj), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def rich_table(df: pd.DataFrame, title: str, formats: dict[str, str]) -> Any:
    """A :class:`rich.table.Table` of the columns named in ``formats`` (column -> format spec)."""
    from rich.table import Table

    from fastreco.evaluate.metrics import format_rejection

    table = Table(title=title)
    for col in formats:
        table.add_column(col, justify="right")
    for row in df.to_dict("records"):  # keeps each column's type (iterrows casts ints to float)
        cells = []
        for col, spec in formats.items():
            value = row[col]
            if spec == "rej":
                cells.append(format_rejection(float(value), digits=4))
            elif isinstance(value, (float, np.floating)):
                cells.append(format(float(value), spec))
            else:
                cells.append(str(value))
        table.add_row(*cells)
    return table


def plot_scan(df: pd.DataFrame, *, title: str = "", signal: str = "", background: str = "") -> Any:
    """AUC (left) and background rejection at 90 % signal efficiency (right) against the
    measured fraction of zero weights, with and without fine-tuning; returns the Figure."""
    from fastreco.evaluate import plots as P

    tuned = df[df["fine_tuned"]].sort_values("zero_fraction")
    ref = df[~df["fine_tuned"]].iloc[0]
    with P.plot_style():
        fig, axes = P.new_figure(1, 2, figsize=(16, 7))
        for ax, col, ylabel in (
            (axes[0, 0], "auc", "AUC"),
            (axes[0, 1], "rejection90", f"{background} rejection at 90 % {signal} eff."),
        ):
            x = 100 * tuned["zero_fraction"]
            ax.plot(x, tuned[col], "o-", label="pruned + fine-tuned")
            ax.plot(x, tuned[f"{col}_oneshot"], "s--", label="pruned, no fine-tuning")
            ax.axhline(ref[col], color="gray", ls=":", label="trained model")
            if col == "rejection90":
                ax.errorbar(x, tuned[col], yerr=tuned["rejection90_err"], fmt="none", c="C0")
            ax.set_xlabel("zero weights [%]")
            ax.set_ylabel(ylabel)
            ax.legend(fontsize="small")
            P.add_label(ax, title)
    return fig


# --------------------------------------------------------------------------------------------
# script
# --------------------------------------------------------------------------------------------
def make_console() -> Any:
    """A rich Console, 160 columns wide when the output is not a terminal (a log file)."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.replace(",", " ").split()]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fastreco.deploy.prune RUN [--sparsity 0.5,0.9] [--output DIR]``."""
    from fastreco.train.runner import load_run

    parser = argparse.ArgumentParser(
        prog="python -m fastreco.deploy.prune", description=__doc__.splitlines()[0]
    )
    parser.add_argument("run", type=Path, help="a trained classification run folder")
    parser.add_argument(
        "--sparsity",
        type=_floats,
        action="extend",
        help="target sparsities, repeated or comma-separated (default: 0,.3,.5,.7,.8,.9)",
    )
    parser.add_argument("--epochs", type=float, default=1.0, help="fine-tuning epochs")
    parser.add_argument("--max-train-chunks", type=int, default=40, help="0: all")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="default: RUN/compression")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    console = make_console()
    try:
        task, _ = load_run(args.run)
        df = sparsity_scan(
            args.run,
            args.sparsity or DEFAULT_SPARSITIES,
            epochs=args.epochs,
            max_train_chunks=args.max_train_chunks or None,
            lr=args.lr,
            seed=args.seed,
        )
    except InputError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        return 2
    out = args.output or args.run / "compression"
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "run": str(args.run),
        "epochs": args.epochs,
        "max_train_chunks": args.max_train_chunks,
        "lr": args.lr,
        "seed": args.seed,
        "signal": task.classes[0],
        "working_point": SIGNAL_EFFICIENCY,
    }
    write_json({**meta, "rows": df.to_dict(orient="records")}, out / "prune_scan.json")
    sig, bkg = task.classes[0], task.classes[-1]
    fig = plot_scan(df, title=args.run.name, signal=sig, background=bkg)
    fig.savefig(out / "prune_scan.png", dpi=100)
    formats = {
        "sparsity": ".2f",
        "fine_tuned": "",
        "zero_fraction": ".4f",
        "n_nonzero": "",
        "auc": ".4f",
        "rejection90": "rej",
        "auc_oneshot": ".4f",
        "rejection90_oneshot": "rej",
        "seconds": ".1f",
    }
    console.print(rich_table(df, f"Pruning scan of {args.run} (test split)", formats))
    console.print(f"wrote {out / 'prune_scan.json'} and {out / 'prune_scan.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
