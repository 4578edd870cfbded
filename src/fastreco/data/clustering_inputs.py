"""What a clustering network sees of an event: the registry of its inputs.

A clustering task (``data.input`` in its YAML) names one of

* ``hits``: every hit is a point (features :data:`fastreco.data.pointcloud.FEATURES`);
* ``layer_clusters``: CLUE's 2D layer clusters are the points
  (:data:`fastreco.data.layer_clusters.LC_FEATURES`), TICL's input.

Each entry turns an event's hits into the network's points and keeps the way back to the hits
(:class:`~fastreco.data.layer_clusters.NetworkPoints`), so that training, evaluation, benchmarks
and exports treat both alike. A new input is one more ``INPUTS.add``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from fastreco.data.layer_clusters import LC_FEATURES, NetworkPoints, layer_cluster_event
from fastreco.data.pointcloud import FEATURES, PointCloudEvent
from fastreco.registry import Registry


@dataclasses.dataclass(frozen=True)
class ClusteringInput:
    """One kind of network input: its feature names and how an event's hits become points
    (``prepare(event, min_fraction)``; ``min_fraction``: share of a point a gun particle must
    hold to be its truth object)."""

    features: tuple[str, ...]
    prepare: Callable[[PointCloudEvent, float], NetworkPoints]

    @property
    def n_features(self) -> int:
        return len(self.features)


def _hits(event: PointCloudEvent, min_fraction: float) -> NetworkPoints:
    # the hit truth was already thresholded at min_fraction by point_cloud_events
    return NetworkPoints(event, np.arange(len(event), dtype=np.int64))


def _layer_clusters(event: PointCloudEvent, min_fraction: float) -> NetworkPoints:
    return layer_cluster_event(event, min_fraction=min_fraction)


INPUTS: Registry[ClusteringInput] = Registry("clustering input")
INPUTS.add("hits", ClusteringInput(FEATURES, _hits))
INPUTS.add("layer_clusters", ClusteringInput(LC_FEATURES, _layer_clusters))
