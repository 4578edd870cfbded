"""Typed task configurations, loaded from ``configs/*.yaml``.

A *task* ties a run together: the data (a simulation to make if it is not there yet), the
representation of each event, the target, the model and the training settings. Loading
validates every field; a bad one raises an :class:`~fastreco.errors.InputError` naming the file,
the field (dotted path) and the value, and unknown fields are errors too (a typo must not be
silently ignored).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from fastreco.errors import InputError

TaskKind = Literal["classification", "regression"]
#: Reference energies of a regression (names of the window representation's auxiliary sums).
REFERENCE_ENERGIES = ("window_sum", "e5x5", "thresholded_sum", "supercluster_sum")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The events of a task: an event store, simulated on first use if missing."""

    particles: tuple[str, ...] = ("gamma", "pi0")
    energy: str = "1:100"
    events: int = 40_000
    seed: int = 11
    eta_max: float = 1.4
    events_per_shard: int = 10_000
    dir: str = ""  # default: data/<task name>
    # fractions of events for training / validation / test (split by event index, see splits.py)
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)


@dataclasses.dataclass(frozen=True)
class RepresentationConfig:
    """How an event becomes a model input (a name in the REPRESENTATIONS registry)."""

    name: str = "window"
    size: int = 25  # crystals per side of the window around the seed
    channels: tuple[str, ...] = ("energy",)  # hit fields stacked as image channels


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str = "tmva-cnn"  # a name in the MODELS registry
    params: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 10
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 3  # early stopping on the validation loss
    seed: int = 0
    augment: bool = True  # barrel symmetries: phi rotation/flip, eta -> -eta
    num_workers: int = 2  # DataLoader worker processes reading the event store
    max_time_minutes: float = 0.0  # 0 = no limit
    # fine-tuning: BatchNorm layers keep their running statistics (eval mode) while the rest
    # trains, so the network trains exactly as it will be evaluated
    freeze_batchnorm: bool = False


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """A whole task. ``classes`` are particle names (classification) or the particles whose
    energy is regressed (regression)."""

    name: str
    kind: TaskKind = "classification"
    classes: tuple[str, ...] = ("gamma", "pi0")
    target: str = "label"  # "label" (classification) or "energy" (regression)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    representation: RepresentationConfig = dataclasses.field(default_factory=RepresentationConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    # regression: the energy the network's output multiplies (it predicts E_true / reference),
    # one of REFERENCE_ENERGIES: "window_sum" (every crystal of the window), "e5x5" (the 5 x 5
    # crystals around the window's centre: ~1/3 of the window's read-out crystals, so ~0.6 x its
    # electronic noise), "thresholded_sum" (the window's crystals above the classical
    # clustering threshold, 2 sigma of the noise, as the field's raw cluster energies) or
    # "supercluster_sum" (the window sum plus the crystals of its ieta rows in the phi road beyond
    # it, constants.ECAL_ROAD_*: the legs of converted photons the field bends out of the window)
    reference: str = "window_sum"

    def __post_init__(self) -> None:
        if self.reference not in REFERENCE_ENERGIES:
            raise InputError(
                f"unknown reference energy; choose from {list(REFERENCE_ENERGIES)}",
                field="reference",
                value=self.reference,
            )

    @property
    def data_dir(self) -> Path:
        return Path(self.data.dir or f"data/{self.name}")

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    @classmethod
    def from_dict(
        cls, raw: dict[str, Any], *, source: str | os.PathLike[str] | None = None
    ) -> TaskConfig:
        return build_dataclass(cls, raw, source=source)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TaskConfig:
        path = Path(path)
        if not path.exists():
            raise InputError("no such config file", source=path)
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise InputError(f"not valid YAML: {exc}", source=path) from None
        if not isinstance(raw, dict):
            raise InputError("a task config must be a mapping", source=path)
        raw.setdefault("name", path.stem)
        return cls.from_dict(raw, source=path)

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    return obj


def build_dataclass(cls: type, raw: Any, *, source: Any = None, prefix: str = "") -> Any:
    """Build the dataclass ``cls`` from a mapping, converting and validating every field
    (nested dataclasses too); a bad or unknown field raises an InputError naming it."""
    if not isinstance(raw, dict):
        raise InputError(
            "expected a mapping", source=source, field=prefix.rstrip(".") or None, value=raw
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(raw) - set(fields)
    if unknown:
        name = sorted(unknown)[0]
        raise InputError(
            f"unknown field; valid fields are {', '.join(fields)}",
            source=source,
            field=prefix + name,
            value=raw[name],
        )
    kwargs = {}
    for name, value in raw.items():
        kwargs[name] = _convert(hints[name], value, source=source, field=prefix + name)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise InputError(str(exc), source=source, field=prefix.rstrip(".") or None) from None


def _convert(hint: Any, value: Any, *, source: Any, field: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, source=source, prefix=field + ".")
    if origin is Literal:
        if value not in args:
            raise InputError(
                f"must be one of {', '.join(map(str, args))}",
                source=source,
                field=field,
                value=value,
            )
        return value
    if origin in (Union, types.UnionType):
        return value
    if origin is tuple:
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise InputError("expected a list", source=source, field=field, value=value)
        item = args[0] if args else Any
        return tuple(_convert(item, v, source=source, field=field) for v in value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise InputError("expected a mapping", source=source, field=field, value=value)
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise InputError("expected true or false", source=source, field=field, value=value)
        return value
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                value = hint(value)
            except (TypeError, ValueError):
                raise InputError(
                    f"expected a number ({hint.__name__})", source=source, field=field, value=value
                ) from None
        if hint is int and float(value) != int(value):
            raise InputError("expected an integer", source=source, field=field, value=value)
        return hint(value)
    if hint is str:
        return str(value)
    return value
