"""Representations: how a batch of events becomes model inputs (one registry, one file each).

A representation is a function ``(batch, geometry, config) -> (inputs, aux)``; ``inputs`` is a
float32 array whose first axis is the event, ``aux`` a dict of per-event arrays the task needs
besides (e.g. ``window_sum`` and ``e5x5``, the reference energies of a regression). Each declares its preprocessing (the fixed
scales applied), which the exporters write beside the model so it runs without fastreco.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from fastreco import constants as C
from fastreco.config import REFERENCE_ENERGIES, RepresentationConfig
from fastreco.data.store import EventBatch
from fastreco.data.windows import crystal_windows, road_sums, windows_at
from fastreco.errors import InputError
from fastreco.registry import Registry

#: Fixed input scales: a window channel is divided by its scale (energy in units of 10 GeV,
#: time in ns) so inputs are O(1) without data-dependent normalization.
CHANNEL_SCALES = {"energy": 10.0, "deposit": 10.0, "time": 1.0}


@dataclasses.dataclass(frozen=True)
class Representation:
    build: Callable[[EventBatch, Any, RepresentationConfig], tuple[np.ndarray, dict]]
    input_shape: Callable[[RepresentationConfig], tuple[int, ...]]
    preprocessing: Callable[[RepresentationConfig], dict[str, Any]]


REPRESENTATIONS: Registry[Representation] = Registry("representation")


def _window(
    batch: EventBatch, geometry: Any, config: RepresentationConfig
) -> tuple[np.ndarray, dict]:
    energy, centre = crystal_windows(batch, geometry, size=config.size, field="energy")
    channels = []
    for name in config.channels:
        if name not in CHANNEL_SCALES:
            raise InputError(
                f"unknown channel; choose from {sorted(CHANNEL_SCALES)}",
                field="representation.channels",
                value=name,
            )
        image = (
            energy if name == "energy" else windows_at(batch, geometry, centre, config.size, name)
        )
        channels.append(image / CHANNEL_SCALES[name])
    x = np.stack(channels, axis=1).astype(np.float32)  # (n, C, size, size)
    from fastreco.reco.clustering import CLUSTER_THRESHOLD

    c, r = config.size // 2, min(2, config.size // 2)
    window_sum = energy.sum(axis=(1, 2))
    # a window wider than the road leaves it empty
    half_phi = max(C.ECAL_ROAD_HALF_WIDTH_PHI, config.size // 2)
    road = road_sums(batch, geometry, centre, config.size, half_phi, C.ECAL_ROAD_THRESHOLD)
    return x, {
        "window_sum": window_sum,
        "e5x5": energy[:, c - r : c + r + 1, c - r : c + r + 1].sum(axis=(1, 2)),
        "thresholded_sum": np.where(energy > CLUSTER_THRESHOLD, energy, 0.0).sum(axis=(1, 2)),
        "supercluster_sum": window_sum + road.astype(np.float32),
        "centre_cell": centre,
    }


def reference_description(name: str, scale: float) -> str:
    """What the window representation's reference energy ``name`` (one of
    :data:`~fastreco.config.REFERENCE_ENERGIES`) sums, for a reader of an exported model whose
    energy channel is divided by ``scale``."""
    from fastreco.reco.clustering import CLUSTER_THRESHOLD

    window = f"the summed crystal energy of the window (the input's energy channel times {scale})"
    texts = {
        "window_sum": f"{window} [GeV]",
        "e5x5": "the summed crystal energy of the 5 x 5 crystals at the window's centre "
        f"(the input's energy channel there times {scale}) [GeV]",
        "thresholded_sum": f"the summed energy of the window's crystals above {CLUSTER_THRESHOLD:g}"
        f" GeV (the input's energy channel times {scale}) [GeV]",
        "supercluster_sum": f"{window} plus the crystals above {C.ECAL_ROAD_THRESHOLD:g} GeV of "
        f"the window's ieta rows beyond it within {C.ECAL_ROAD_HALF_WIDTH_PHI} crystals in iphi "
        "of the centre [GeV]",
    }
    return texts[name]


REPRESENTATIONS.add(
    "window",
    Representation(
        build=_window,
        input_shape=lambda c: (len(c.channels), c.size, c.size),
        preprocessing=lambda c: {
            "kind": "window",
            "size": c.size,
            "axes": ["event", "channel", "ieta", "iphi"],
            "centre": "highest-energy crystal",
            "channels": list(c.channels),
            "scales": {ch: CHANNEL_SCALES[ch] for ch in c.channels},
        },
    ),
)


def _features(
    batch: EventBatch, geometry: Any, config: RepresentationConfig
) -> tuple[np.ndarray, dict]:
    from fastreco.reco.pipeline import reconstruct_batch
    from fastreco.reco.showershape import SHOWER_SHAPE_FEATURES

    df = reconstruct_batch(batch, geometry)
    x = df[list(SHOWER_SHAPE_FEATURES)].to_numpy(np.float32)
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    e5x5 = df["e5x5"].to_numpy()
    # no window here: the reference of every name is the classical E5x5
    refs = dict.fromkeys(REFERENCE_ENERGIES, e5x5)
    return x, {**refs, "centre_cell": df["seed_cell"].to_numpy()}


def _feature_names() -> list[str]:
    from fastreco.reco.showershape import SHOWER_SHAPE_FEATURES

    return list(SHOWER_SHAPE_FEATURES)


REPRESENTATIONS.add(
    "features",
    Representation(
        build=_features,
        input_shape=lambda c: (len(_feature_names()),),
        preprocessing=lambda c: {
            "kind": "features",
            "features": _feature_names(),
            "source": "fastreco.reco.showershape",
        },
    ),
)


def build_inputs(
    batch: EventBatch, geometry: Any, config: RepresentationConfig
) -> tuple[np.ndarray, dict]:
    return REPRESENTATIONS.resolve(config.name, field="representation.name").build(
        batch, geometry, config
    )
