"""Detector descriptions: cell ids <-> positions, neighbours.

Every detector registers in :data:`DETECTORS`; the event store records the detector's name and
parameters so that a reader can rebuild it with :func:`detector_from_attrs`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from fastreco.registry import Registry


@runtime_checkable
class Detector(Protocol):
    """What the rest of fastreco needs from a detector description."""

    name: str

    @property
    def n_cells(self) -> int: ...

    def to_dict(self) -> dict[str, Any]: ...


DETECTORS: Registry[Any] = Registry("detector")


def detector_from_attrs(name: str, params: dict[str, Any]) -> Any:
    """Rebuild the detector ``name`` from the parameters it wrote with ``to_dict``."""
    return DETECTORS.resolve(name).from_dict(params)


from fastreco.geometry.ecal_barrel import EcalBarrel  # noqa: E402  (registers itself)

__all__ = ["DETECTORS", "Detector", "EcalBarrel", "detector_from_attrs"]

from fastreco.geometry.lartpc import LArTpcPlane  # noqa: E402  (registers itself)

__all__ += ["LArTpcPlane"]
