"""The HDF5 event store: self-describing shards of events, read by event ranges.

Layout of one shard (schema version 1)::

    /hits/offsets          int64 [n_events + 1]   CSR offsets into the flat hit arrays
    /hits/cell             int32 [n_hits]         detector cell id
    /hits/energy           float32 [n_hits]       measured energy [GeV]
    /hits/time             float32 [n_hits]       hit time [ns]
    /hits/deposit          float32 [n_hits]       true deposited energy before readout [GeV]
    /hits/truth_particle   int32 [n_hits]         row (within the event) of the truth particle
                                                  that deposited most in the cell; -1 for noise
    /hits/truth_fraction   float32 [n_hits]       that particle's fraction of the deposit
    /truth/offsets         int64 [n_events + 1]   CSR offsets into the truth rows
    /truth/<column>        one row per generated particle (see TRUTH_COLUMNS)
    attributes             schema_version, fastreco_version, detector, detector_params (JSON),
                           generator (JSON), seed, shard_index, n_events, complete

A directory of shards (``shard-00000.h5``, ...) is one store; :class:`EventStore` reads either a
directory or a single file. Writes are atomic (temporary file + rename), so a shard on disk is
either complete or absent.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from fastreco import __version__
from fastreco.errors import InputError, SchemaError
from fastreco.geometry import detector_from_attrs

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SHARD_PATTERN = "shard-{index:05d}.h5"

HIT_FIELDS: dict[str, type] = {
    "cell": np.int32,
    "energy": np.float32,
    "time": np.float32,
    "deposit": np.float32,
    "truth_particle": np.int32,
    "truth_fraction": np.float32,
}
#: Truth table columns: one row per generated particle.
TRUTH_COLUMNS: dict[str, type] = {
    "pdg": np.int32,  # PDG id
    "energy": np.float32,  # GeV
    "eta": np.float32,  # direction at production
    "phi": np.float32,
    "vx": np.float32,  # production vertex [cm]
    "vy": np.float32,
    "vz": np.float32,
    "parent": np.int32,  # row of the parent within the event, -1 for the generated particle
    "converted": np.uint8,  # photon converted in front of the calorimeter
    "conversion_radius": np.float32,  # cm, NaN if not converted
    "reached_calo": np.uint8,  # crossed the calorimeter front face
    "impact_eta": np.float32,  # where it crossed the front face (NaN if it did not)
    "impact_phi": np.float32,
    "deposited": np.float32,  # true energy it deposited in the calorimeter [GeV]
    "interaction_depth": np.float32,  # hadrons: depth of the first inelastic interaction [cm]
}
_FLOAT_FIELDS = ("energy", "time", "deposit")


@dataclasses.dataclass
class EventBatch:
    """A batch of events in CSR layout; the one object that passes between pipeline stages.

    ``offsets`` has ``n_events + 1`` entries; the hits of event ``i`` are
    ``hits[f][offsets[i]:offsets[i+1]]``. ``truth`` holds the columns of :data:`TRUTH_COLUMNS`
    with ``truth_offsets`` indexing it the same way.
    """

    offsets: npt.NDArray[np.int64]
    hits: dict[str, np.ndarray]
    truth_offsets: npt.NDArray[np.int64]
    truth: dict[str, np.ndarray]

    @property
    def n_events(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_hits(self) -> int:
        return int(self.offsets[-1] - self.offsets[0])

    def hit_event_index(self) -> npt.NDArray[np.int64]:
        """Event index (within the batch) of each hit, shape (n_hits,)."""
        return np.repeat(np.arange(self.n_events), np.diff(self.offsets))

    def truth_event_index(self) -> npt.NDArray[np.int64]:
        return np.repeat(np.arange(self.n_events), np.diff(self.truth_offsets))

    def primaries(self) -> dict[str, np.ndarray]:
        """Truth columns of the generated (parent == -1) particle of each event, in event order.

        Events are single-particle guns, so there is exactly one primary per event.
        """
        mask = self.truth["parent"] == -1
        return {k: v[mask] for k, v in self.truth.items()}

    def event(self, i: int) -> EventBatch:
        return self.slice(i, i + 1)

    def slice(self, start: int, stop: int) -> EventBatch:
        h0, h1 = self.offsets[start], self.offsets[stop]
        t0, t1 = self.truth_offsets[start], self.truth_offsets[stop]
        return EventBatch(
            offsets=self.offsets[start : stop + 1] - h0,
            hits={k: v[h0:h1] for k, v in self.hits.items()},
            truth_offsets=self.truth_offsets[start : stop + 1] - t0,
            truth={k: v[t0:t1] for k, v in self.truth.items()},
        )

    @staticmethod
    def concatenate(batches: Sequence[EventBatch]) -> EventBatch:
        if not batches:
            raise ValueError("no batches to concatenate")

        def cat_offsets(offs: list[np.ndarray]) -> np.ndarray:
            out = [np.zeros(1, np.int64)]
            base = 0
            for o in offs:
                out.append(o[1:] - o[0] + base)
                base += int(o[-1] - o[0])
            return np.concatenate(out)

        return EventBatch(
            offsets=cat_offsets([b.offsets for b in batches]),
            hits={k: np.concatenate([b.hits[k] for b in batches]) for k in batches[0].hits},
            truth_offsets=cat_offsets([b.truth_offsets for b in batches]),
            truth={k: np.concatenate([b.truth[k] for b in batches]) for k in batches[0].truth},
        )


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------
def write_shard(path: str | os.PathLike[str], batch: EventBatch, attrs: dict[str, Any]) -> Path:
    """Write ``batch`` to ``path`` atomically (temporary file, then rename).

    ``attrs`` must hold ``detector`` (name), ``detector_params`` (dict), ``generator`` (dict),
    ``seed`` and ``shard_index``; the schema and package versions are added here.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n_hits = max(batch.n_hits, 1)
    chunk = min(n_hits, 1 << 16)
    with h5py.File(tmp, "w") as f:
        hits = f.create_group("hits")
        hits.create_dataset("offsets", data=batch.offsets.astype(np.int64))
        for name, dtype in HIT_FIELDS.items():
            hits.create_dataset(
                name,
                data=np.asarray(batch.hits[name], dtype=dtype),
                chunks=(chunk,) if batch.n_hits else None,
                compression="lzf" if batch.n_hits else None,
                shuffle=bool(batch.n_hits),
            )
        truth = f.create_group("truth")
        truth.create_dataset("offsets", data=batch.truth_offsets.astype(np.int64))
        for name, dtype in TRUTH_COLUMNS.items():
            truth.create_dataset(name, data=np.asarray(batch.truth[name], dtype=dtype))
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["fastreco_version"] = __version__
        f.attrs["detector"] = attrs["detector"]
        f.attrs["detector_params"] = json.dumps(attrs["detector_params"])
        f.attrs["generator"] = json.dumps(attrs["generator"], sort_keys=True)
        f.attrs["seed"] = int(attrs["seed"])
        f.attrs["shard_index"] = int(attrs["shard_index"])
        f.attrs["n_events"] = batch.n_events
        f.attrs["complete"] = True
    os.replace(tmp, path)
    return path


def shard_path(directory: str | os.PathLike[str], index: int) -> Path:
    return Path(directory) / SHARD_PATTERN.format(index=index)


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------
class Shard:
    """One validated shard file, opened lazily for reads by event range."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            with h5py.File(self.path, "r") as f:
                self.attrs = self._read_attrs(f)
                self.offsets = self._read_offsets(f, "hits")
                self.truth_offsets = self._read_offsets(f, "truth")
                for name in HIT_FIELDS:
                    self._check_length(f, f"hits/{name}", int(self.offsets[-1]))
                for name in TRUTH_COLUMNS:
                    self._check_length(f, f"truth/{name}", int(self.truth_offsets[-1]))
        except OSError as exc:
            raise InputError(
                f"not a readable HDF5 event-store shard (corrupt or truncated?): {exc}",
                source=self.path,
            ) from None
        self.n_events = len(self.offsets) - 1
        if self.n_events != int(self.attrs["n_events"]):
            raise InputError(
                f"offsets describe {self.n_events} events",
                source=self.path,
                field="n_events",
                value=int(self.attrs["n_events"]),
            )

    def _read_attrs(self, f: h5py.File) -> dict[str, Any]:
        if "schema_version" not in f.attrs:
            raise SchemaError(
                "not a fastreco event store (no schema_version attribute)", source=self.path
            )
        version = int(f.attrs["schema_version"])
        if version != SCHEMA_VERSION:
            raise SchemaError(
                f"unknown schema version; this fastreco {__version__} reads version "
                f"{SCHEMA_VERSION}",
                source=self.path,
                field="schema_version",
                value=version,
            )
        attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
        if not attrs.get("complete", False):
            raise InputError("shard was not completely written", source=self.path)
        attrs["detector_params"] = json.loads(attrs["detector_params"])
        attrs["generator"] = json.loads(attrs["generator"])
        return attrs

    def _read_offsets(self, f: h5py.File, group: str) -> np.ndarray:
        name = f"{group}/offsets"
        if name not in f:
            raise InputError("missing dataset", source=self.path, field=name)
        offsets = f[name][()]
        if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
            raise InputError(
                "offsets must start at 0 and never decrease", source=self.path, field=name
            )
        return offsets

    def _check_length(self, f: h5py.File, name: str, expected: int) -> None:
        if name not in f:
            raise InputError("missing dataset", source=self.path, field=name)
        if f[name].shape != (expected,):
            raise InputError(
                f"has shape {f[name].shape}, expected ({expected},)",
                source=self.path,
                field=name,
            )

    def read(self, start: int = 0, stop: int | None = None, *, validate: bool = True) -> EventBatch:
        """Events ``[start, stop)`` of this shard (only those bytes are read from disk)."""
        stop = self.n_events if stop is None else min(stop, self.n_events)
        h0, h1 = int(self.offsets[start]), int(self.offsets[stop])
        t0, t1 = int(self.truth_offsets[start]), int(self.truth_offsets[stop])
        with h5py.File(self.path, "r") as f:
            hits = {name: f[f"hits/{name}"][h0:h1] for name in HIT_FIELDS}
            truth = {name: f[f"truth/{name}"][t0:t1] for name in TRUTH_COLUMNS}
        if validate:
            for name in _FLOAT_FIELDS:
                bad = ~np.isfinite(hits[name])
                if bad.any():
                    i = int(np.argmax(bad))
                    event = int(np.searchsorted(self.offsets, h0 + i, side="right") - 1)
                    raise InputError(
                        f"non-finite value in event {event}, hit {h0 + i}",
                        source=self.path,
                        field=f"hits/{name}",
                        value=float(hits[name][i]),
                    )
        return EventBatch(
            offsets=self.offsets[start : stop + 1] - h0,
            hits=hits,
            truth_offsets=self.truth_offsets[start : stop + 1] - t0,
            truth=truth,
        )


class EventStore:
    """A store of one or more shards, read as one sequence of events.

    Args:
        path: a shard file or a directory of ``shard-*.h5`` files.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            files = sorted(self.path.glob("shard-*.h5"))
            if not files:
                raise InputError(
                    "no event-store shards (shard-*.h5) in directory", source=self.path
                )
        elif self.path.exists():
            files = [self.path]
        else:
            raise InputError("no such file or directory", source=self.path)
        self.shards = [Shard(f) for f in files]
        first = self.shards[0].attrs
        for shard in self.shards[1:]:
            if shard.attrs["detector"] != first["detector"]:
                raise InputError(
                    f"shards of different detectors mixed in one store ({first['detector']})",
                    source=shard.path,
                    field="detector",
                    value=shard.attrs["detector"],
                )
        self.attrs = first
        self.detector = detector_from_attrs(first["detector"], first["detector_params"])
        self._starts = np.cumsum([0] + [s.n_events for s in self.shards])

    @property
    def n_events(self) -> int:
        return int(self._starts[-1])

    def __len__(self) -> int:
        return self.n_events

    def read(self, start: int = 0, stop: int | None = None) -> EventBatch:
        """Events ``[start, stop)`` across shards, reading only the shards they touch."""
        stop = self.n_events if stop is None else min(stop, self.n_events)
        if not 0 <= start <= stop:
            raise IndexError(f"bad event range [{start}, {stop}) of {self.n_events} events")
        parts = []
        for i, shard in enumerate(self.shards):
            lo, hi = self._starts[i], self._starts[i + 1]
            if hi <= start or lo >= stop:
                continue
            parts.append(shard.read(max(start - lo, 0), min(stop, hi) - lo))
        if not parts:
            return self.shards[0].read(0, 0)
        return parts[0] if len(parts) == 1 else EventBatch.concatenate(parts)

    def iter_batches(self, batch_size: int = 10_000) -> Iterator[EventBatch]:
        """Consecutive batches of at most ``batch_size`` events, never crossing a shard."""
        for shard in self.shards:
            for start in range(0, shard.n_events, batch_size):
                yield shard.read(start, start + batch_size)

    def truth_table(self) -> Any:
        """All truth rows as a pandas DataFrame with an ``event`` column (global index)."""
        import pandas as pd

        frames = []
        for i, shard in enumerate(self.shards):
            b = shard.read(validate=False)
            df = pd.DataFrame(b.truth)
            df.insert(0, "event", b.truth_event_index() + self._starts[i])
            frames.append(df)
        return pd.concat(frames, ignore_index=True)
