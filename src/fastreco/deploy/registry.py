"""The exporter registry: format names -> functions that write a trained run in that format.

An exporter is a callable ``(run_dir, out_path=None) -> Path`` that reads a run folder (see
:mod:`fastreco.train.runner`) and writes a self-contained model file, with its preprocessing
beside it. A new format is a new module that decorates its function with
``@EXPORTERS.register("name")`` and is listed in :data:`_BUILTIN`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path

from fastreco.registry import Registry

Exporter = Callable[..., Path]

EXPORTERS: Registry[Exporter] = Registry("exporter")

_BUILTIN = ("fastreco.deploy.onnx", "fastreco.deploy.hls", "fastreco.deploy.bdt_fpga")


def _load_builtin() -> None:
    for name in _BUILTIN:
        importlib.import_module(name)


def get_exporter(name: str) -> Exporter:
    """The exporter registered as ``name`` (an InputError listing the formats if none)."""
    _load_builtin()
    return EXPORTERS.resolve(name, field="format")


def export_run(
    run_dir: str | os.PathLike[str],
    fmt: str = "onnx",
    out_path: str | os.PathLike[str] | None = None,
) -> Path:
    """Export the run folder ``run_dir`` with the exporter named ``fmt``; returns the model file."""
    return get_exporter(fmt)(run_dir, out_path)
