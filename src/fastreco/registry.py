"""Name -> object registries, one per plug-in kind (detectors, models, exporters, ...).

Names are normalised (case, ``-`` and ``_`` are ignored) so that ``"Gamma-vs-Pi0"``,
``"gamma_vs_pi0"`` and ``"gammavspi0"`` resolve to the same entry, as in torch-geometric's
resolver. Registering a name twice is an error; resolving an unknown name says which names exist.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from fastreco.errors import InputError

T = TypeVar("T")


def normalize_name(name: str) -> str:
    """Lower-case ``name`` and drop ``-``, ``_`` and spaces."""
    return "".join(ch for ch in name.lower() if ch not in "-_ ")


class Registry(Generic[T]):
    """A named collection of plug-ins of one kind.

    >>> detectors: Registry[type] = Registry("detector")
    >>> @detectors.register("ecal-barrel")
    ... class EcalBarrel: ...
    >>> detectors.resolve("ECAL_barrel") is EcalBarrel
    True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._names: dict[str, str] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that adds the decorated object under ``name``."""

        def add(obj: T) -> T:
            self.add(name, obj)
            return obj

        return add

    def add(self, name: str, obj: T) -> None:
        key = normalize_name(name)
        if key in self._entries:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._entries[key] = obj
        self._names[key] = name

    def resolve(self, name: str, *, field: str | None = None) -> T:
        """The entry registered as ``name``; an :class:`InputError` listing the choices if none."""
        key = normalize_name(name)
        if key not in self._entries:
            raise InputError(
                f"could not resolve {self.kind} '{name}' among choices {self.names()}",
                field=field or self.kind,
                value=name,
            )
        return self._entries[key]

    def names(self) -> list[str]:
        return sorted(self._names.values())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and normalize_name(name) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
