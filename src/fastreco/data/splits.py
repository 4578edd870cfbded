"""Deterministic train / validation / test splits by event index, and independent test samples.

Every model and baseline of a task uses the same split, so that they are compared on the same
events: an event goes to a split according to a hash of its global index, independent of the
order in which events are read, of the number of shards and of the model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fastreco.errors import InputError

SPLITS = ("train", "val", "test")


def split_codes(
    event_index: np.ndarray,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
) -> np.ndarray:
    """0 (train), 1 (val) or 2 (test) for each global event index, shape like the input.

    Uses a multiplicative hash (Knuth) of the index, so neighbouring events are spread evenly.
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(
            f"split fractions must be three non-negative numbers summing to 1, got {fractions}"
        )
    h = (np.asarray(event_index, dtype=np.uint64) * np.uint64(2654435761)) % np.uint64(2**32)
    u = h.astype(np.float64) / 2**32
    edges = np.cumsum(fractions)[:2]
    return np.searchsorted(edges, u, side="right").astype(np.int8)


def split_mask(
    event_index: np.ndarray, split: str, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
) -> np.ndarray:
    """Boolean mask of the events of ``split`` ('train', 'val' or 'test')."""
    return split_codes(event_index, fractions) == SPLITS.index(split)


def independent_sample_dir(data_dir: Path, n_events: int, seed: int, training_seed: int) -> Path:
    """Where an independent test sample of a store lives: ``<store>_test-n<N>-s<seed>`` beside
    the training store ``data_dir``, checked: ``n_events`` > 0 and ``seed`` not the training
    store's (which would repeat its events)."""
    if not (isinstance(n_events, int) and n_events > 0):
        raise InputError("must be a positive number of events", field="test_events", value=n_events)
    if seed == training_seed:
        raise InputError(
            "the test sample needs a seed other than the training store's",
            field="test_seed",
            value=seed,
        )
    return data_dir.with_name(f"{data_dir.name}_test-n{n_events}-s{seed}")
