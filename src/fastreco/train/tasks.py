"""Task kinds: what ``fastreco train``, ``evaluate`` and ``export --onnx`` do for each ``kind``.

A task YAML names its ``kind``; each kind registers a trainer (YAML -> run folder), an
evaluator (run folder -> metrics.json + report.html) and an ONNX exporter (run folder, output
path -> the written ``.onnx``, with its ``<stem>.preprocessing.json`` beside it). A new kind of
task is one registration.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from fastreco.errors import InputError
from fastreco.registry import Registry


@dataclasses.dataclass(frozen=True)
class TaskKind:
    train: Callable[..., Path]
    evaluate: Callable[..., dict[str, Any]]
    #: ``(run_dir, out_path) -> Path`` of the written ONNX file (``fastreco export --onnx``)
    export_onnx: Callable[..., Path]


TASK_KINDS: Registry[TaskKind] = Registry("task kind")


def _train_ecal(config: Any, **kwargs: Any) -> Path:
    from fastreco.train.runner import train_task

    return train_task(config, **kwargs)


def _evaluate_ecal(run: Any, **kwargs: Any) -> dict[str, Any]:
    from fastreco.evaluate.run import evaluate_run

    return evaluate_run(run, **kwargs)


def _train_clustering(config: Any, **kwargs: Any) -> Path:
    from fastreco.train.clustering import train_clustering

    return train_clustering(config, **kwargs)


def _evaluate_clustering(run: Any, **kwargs: Any) -> dict[str, Any]:
    from fastreco.evaluate.clustering import evaluate_clustering

    return evaluate_clustering(run, **kwargs)


def _train_pixel_id(config: Any, **kwargs: Any) -> Path:
    from fastreco.train.pixel_id import train_pixel_id

    return train_pixel_id(config, **kwargs)


def _evaluate_pixel_id(run: Any, **kwargs: Any) -> dict[str, Any]:
    from fastreco.evaluate.pixel_id import evaluate_pixel_id

    return evaluate_pixel_id(run, **kwargs)


def _train_hgcal_regression(config: Any, **kwargs: Any) -> Path:
    from fastreco.train.hgcal_regression import train_hgcal_regression

    return train_hgcal_regression(config, **kwargs)


def _evaluate_hgcal_regression(run: Any, **kwargs: Any) -> dict[str, Any]:
    from fastreco.evaluate.hgcal_regression import evaluate_hgcal_regression

    return evaluate_hgcal_regression(run, **kwargs)


def _export_ecal_onnx(run: Any, out: Any) -> Path:
    from fastreco.deploy.onnx import export_ecal_onnx

    return export_ecal_onnx(run, out)


def _export_clustering_onnx(run: Any, out: Any) -> Path:
    from fastreco.deploy.onnx import export_clustering_onnx

    return export_clustering_onnx(run, out)


def _export_hgcal_regression_onnx(run: Any, out: Any) -> Path:
    from fastreco.deploy.onnx_hgcal import export_hgcal_regression_onnx

    return export_hgcal_regression_onnx(run, out)


def _export_pixel_id_onnx(run: Any, out: Any) -> Path:
    from fastreco.deploy.onnx_lartpc import export_pixel_id_onnx

    return export_pixel_id_onnx(run, out)


for _name in ("classification", "regression"):
    TASK_KINDS.add(_name, TaskKind(_train_ecal, _evaluate_ecal, _export_ecal_onnx))
TASK_KINDS.add(
    "clustering", TaskKind(_train_clustering, _evaluate_clustering, _export_clustering_onnx)
)
TASK_KINDS.add(
    "hgcal_regression",
    TaskKind(_train_hgcal_regression, _evaluate_hgcal_regression, _export_hgcal_regression_onnx),
)
TASK_KINDS.add("pixel_id", TaskKind(_train_pixel_id, _evaluate_pixel_id, _export_pixel_id_onnx))


def config_kind(path: str | os.PathLike[str]) -> str:
    """The ``kind`` of a task YAML (default ``classification``)."""
    path = Path(path)
    if not path.exists():
        raise InputError("no such config file", source=path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"not valid YAML: {exc}", source=path) from None
    if not isinstance(raw, dict):
        raise InputError("a task config must be a mapping", source=path)
    kind = str(raw.get("kind", "classification"))
    TASK_KINDS.resolve(kind, field="kind")
    return kind


def run_kind(run: str | os.PathLike[str]) -> str:
    """The task kind of a run folder (``run.json``; ECAL runs written before kinds existed are
    classification or regression, as their config says)."""
    from fastreco.train.runner import load_run_info

    info = load_run_info(run)
    return str(info.get("kind") or config_kind(Path(run) / "config.yaml"))
