"""The model registry: config names -> PyTorch modules.

A model class takes ``in_shape`` (the shape of one input, without the batch axis),
``n_outputs`` and its own keyword parameters. Importing this module registers the built-in
models; a new model is a new file that decorates its class with ``@MODELS.register("name")``
and is imported in :data:`_BUILTIN`.
"""

from __future__ import annotations

import importlib
from typing import Any

from fastreco.errors import InputError
from fastreco.registry import Registry

MODELS: Registry[Any] = Registry("model")

_BUILTIN = (
    "fastreco.models.cnn",
    "fastreco.models.dnn",
    "fastreco.models.gravnet",
    "fastreco.models.cnn3d",
    "fastreco.models.drn",
    "fastreco.models.lartpc",
    "fastreco.models.lartpc_sparse",
)


def _load_builtin() -> None:
    for name in _BUILTIN:
        importlib.import_module(name)


def build_model(name: str, in_shape: tuple[int, ...], n_outputs: int, **params: Any) -> Any:
    """Instantiate the model registered as ``name``; bad parameters name the field."""
    _load_builtin()
    cls = MODELS.resolve(name, field="model.name")
    try:
        return cls(in_shape=tuple(in_shape), n_outputs=n_outputs, **params)
    except TypeError as exc:
        raise InputError(
            f"bad parameters for model '{name}': {exc}", field="model.params", value=params
        ) from None
