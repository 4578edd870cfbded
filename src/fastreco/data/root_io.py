"""ROOT interop of the event store: export to a TTree and import a user's own ntuple (uproot).

Export (:func:`export_root`) writes one TTree entry per event, with jagged branches sharing one
counter per table::

    n_hits                 int32            hits in the event
    hit_cell ... hit_truth_fraction         one jagged branch per HIT_FIELDS entry
    n_truth                int32            truth particles in the event
    truth_pdg ... truth_interaction_depth   one jagged branch per TRUTH_COLUMNS entry

and the store's attributes as ``TObjString`` objects in the directory ``fastreco_metadata``
(``detector``, ``detector_params`` and ``generator`` as JSON, ``seed``, ``schema_version``,
``fastreco_version``, ``n_events``, ``tree``).

Import (:func:`import_root`) reads any TTree (or RNTuple) through a *branch map*: fastreco field
name -> the user's branch name. The fields are the exported branch names above
(``hit_cell``, ``hit_energy``, ..., ``truth_pdg``, ...) plus ``hit_ieta`` / ``hit_iphi``, which
may replace ``hit_cell`` for detectors addressed by (ieta, iphi): both are **zero-based**
(ECAL barrel: ieta in [0, 170) counted from eta = -1.479, iphi in [0, 360) counted from phi = 0),
not CMS's signed / one-based numbering. Hit branches must be jagged (one list per entry); truth
branches may be jagged (several particles per entry) or scalar (one particle per entry). Fields
that are not mapped get defaults (see :data:`HIT_DEFAULTS`, :data:`TRUTH_DEFAULTS`) and are listed
in the ``generator`` attribute of the imported shards under ``defaulted``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import uproot
import yaml

from fastreco import __version__
from fastreco.data.store import (
    HIT_FIELDS,
    SCHEMA_VERSION,
    TRUTH_COLUMNS,
    EventBatch,
    EventStore,
    shard_path,
    write_shard,
)
from fastreco.errors import InputError, SchemaError
from fastreco.geometry import detector_from_attrs

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_BRANCH_MAP",
    "HIT_DEFAULTS",
    "METADATA_DIR",
    "TRUTH_DEFAULTS",
    "export_root",
    "import_root",
    "load_branch_map",
]

#: ROOT directory holding the store attributes as TObjStrings.
METADATA_DIR = "fastreco_metadata"
#: Counter branches written by :func:`export_root` (renamable through its ``branch_map``).
COUNTERS = {"hit": "n_hits", "truth": "n_truth"}

#: Field name -> branch name as written by :func:`export_root` (and read by default on import).
DEFAULT_BRANCH_MAP: dict[str, str] = {
    **{f"hit_{name}": f"hit_{name}" for name in HIT_FIELDS},
    **{f"truth_{name}": f"truth_{name}" for name in TRUTH_COLUMNS},
}

#: Values of hit fields that a branch map leaves out. ``deposit`` is unknown for real data; 0
#: keeps the store valid (it must be finite) and the field is listed as defaulted.
HIT_DEFAULTS: dict[str, float] = {
    "time": 0.0,
    "deposit": 0.0,
    "truth_particle": -1,
    "truth_fraction": 0.0,
}
#: Values of truth columns that a branch map leaves out: NaN for floats ("unknown"),
#: 0 for the PDG id (no particle has id 0), -1 for the parent (every row is a generated particle).
TRUTH_DEFAULTS: dict[str, float] = {
    name: (np.nan if np.issubdtype(dtype, np.floating) else 0)
    for name, dtype in TRUTH_COLUMNS.items()
}
TRUTH_DEFAULTS["parent"] = -1

_HIT_KEYS = tuple(f"hit_{name}" for name in HIT_FIELDS)
_TRUTH_KEYS = tuple(f"truth_{name}" for name in TRUTH_COLUMNS)
_INDEX_KEYS = ("hit_ieta", "hit_iphi")
_IMPORT_KEYS = (*_HIT_KEYS, *_INDEX_KEYS, *_TRUTH_KEYS)
_EXPORT_KEYS = (*_HIT_KEYS, *_TRUTH_KEYS, *COUNTERS.values())
#: Hit fields that the store requires to be finite.
_FINITE_KEYS = ("hit_energy", "hit_time", "hit_deposit")
_TREE_CLASSES = ["TTree", "TNtuple", "TNtupleD", "ROOT::RNTuple"]


# --------------------------------------------------------------------------------------------
# branch maps
# --------------------------------------------------------------------------------------------
def load_branch_map(
    branch_map: Mapping[str, str | None] | str | os.PathLike[str] | None,
    *,
    allowed: tuple[str, ...] = _IMPORT_KEYS,
    default: Mapping[str, str] = DEFAULT_BRANCH_MAP,
) -> dict[str, str]:
    """A validated ``{fastreco field: branch name}`` from a dict, a YAML/JSON file or ``None``.

    ``None`` gives ``default`` (the names :func:`export_root` writes). In a file or dict, a field
    whose value is null is treated as not mapped.
    """
    source: str | os.PathLike[str] = "branch_map"
    if branch_map is None:
        return dict(default)
    if isinstance(branch_map, (str, os.PathLike)):
        source = branch_map
        path = Path(branch_map)
        if not path.is_file():
            raise InputError("branch map file not found", source=path)
        try:
            with path.open() as fh:
                raw = json.load(fh) if path.suffix.lower() == ".json" else yaml.safe_load(fh)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise InputError(f"cannot parse branch map: {exc}", source=path) from None
    else:
        raw = branch_map
    if not isinstance(raw, Mapping):
        raise InputError(
            "a branch map must be a mapping of fastreco field -> branch name", source=source
        )
    out: dict[str, str] = {}
    for key, value in raw.items():
        if key not in allowed:
            raise InputError(
                f"unknown fastreco field; valid fields are {list(allowed)}",
                source=source,
                field=str(key),
            )
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise InputError(
                "branch name must be a non-empty string", source=source, field=key, value=value
            )
        out[key] = value
    return out


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------
def _jagged(offsets: np.ndarray, columns: dict[str, np.ndarray]) -> ak.Array:
    """A ``n_events * var * {columns}`` awkward array sharing the CSR ``offsets``."""
    content = ak.contents.RecordArray(
        [ak.contents.NumpyArray(np.ascontiguousarray(v)) for v in columns.values()],
        list(columns),
        length=int(offsets[-1] - offsets[0]),
    )
    return ak.Array(
        ak.contents.ListOffsetArray(ak.index.Index64(offsets.astype(np.int64)), content)
    )


def _tables(batch: EventBatch) -> dict[str, ak.Array]:
    hits = {name: np.asarray(batch.hits[name], dtype=dt) for name, dt in HIT_FIELDS.items()}
    truth = {name: np.asarray(batch.truth[name], dtype=dt) for name, dt in TRUTH_COLUMNS.items()}
    return {
        "hit": _jagged(batch.offsets - batch.offsets[0], hits),
        "truth": _jagged(batch.truth_offsets - batch.truth_offsets[0], truth),
    }


def _empty_batch() -> EventBatch:
    zero = np.zeros(1, np.int64)
    return EventBatch(
        offsets=zero,
        hits={name: np.zeros(0, dt) for name, dt in HIT_FIELDS.items()},
        truth_offsets=zero.copy(),
        truth={name: np.zeros(0, dt) for name, dt in TRUTH_COLUMNS.items()},
    )


def export_root(
    store_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    tree: str = "events",
    branch_map: Mapping[str, str] | str | os.PathLike[str] | None = None,
    *,
    overwrite: bool = False,
    batch_size: int = 10_000,
) -> Path:
    """Write the event store at ``store_path`` to a ROOT file, one TTree entry per event.

    Args:
        store_path: a shard file or a directory of shards.
        out_path: the ROOT file to write (atomically: a temporary file, then rename).
        tree: name of the TTree.
        branch_map: renames output branches, ``{fastreco field: branch name}`` (fields as in the
            module docstring, plus the counters ``n_hits`` / ``n_truth``); unlisted fields keep
            their default names.
        overwrite: replace ``out_path`` if it exists (otherwise an existing file is an error).
        batch_size: events read from the store and written per TTree basket.

    Returns:
        ``out_path``.
    """
    out_path = Path(out_path)
    names = {key: key for key in _EXPORT_KEYS}
    names.update(load_branch_map(branch_map, allowed=_EXPORT_KEYS, default={}))
    seen: dict[str, str] = {}
    for key, name in names.items():
        if name in seen:
            raise InputError(
                f"branch name used for both '{seen[name]}' and '{key}'",
                source="branch_map",
                field=key,
                value=name,
            )
        seen[name] = key
    if tree == METADATA_DIR or tree in seen:
        raise InputError("tree name clashes with a branch or the metadata directory", value=tree)
    if batch_size < 1:
        raise InputError("must be at least 1", field="batch_size", value=batch_size)
    if out_path.exists() and not overwrite:
        raise InputError("output file exists (pass overwrite=True to replace it)", source=out_path)

    store = EventStore(store_path)
    attrs = store.attrs
    metadata = {
        "detector": str(attrs["detector"]),
        "detector_params": json.dumps(attrs["detector_params"]),
        "generator": json.dumps(attrs["generator"], sort_keys=True),
        "seed": str(int(attrs["seed"])),
        "schema_version": str(int(attrs["schema_version"])),
        "fastreco_version": __version__,
        "n_events": str(store.n_events),
        "tree": tree,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    try:
        with uproot.recreate(tmp) as f:
            types = {k: v.type.content for k, v in _tables(_empty_batch()).items()}
            out = f.mktree(
                tree,
                types,
                counter_name=lambda table: names[COUNTERS[table]],
                field_name=lambda table, field: names[f"{table}_{field}"],
                title="fastreco events",
            )
            for batch in store.iter_batches(batch_size):
                if batch.n_events:
                    out.extend(_tables(batch))
            for key, value in metadata.items():
                f[f"{METADATA_DIR}/{key}"] = value
        os.replace(tmp, out_path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    log.info("exported %d events to %s:%s", store.n_events, out_path, tree)
    return out_path


# --------------------------------------------------------------------------------------------
# import
# --------------------------------------------------------------------------------------------
def _read_metadata(f: Any) -> dict[str, str]:
    if METADATA_DIR not in f:
        return {}
    directory = f[METADATA_DIR]
    return {key: str(directory[key]) for key in directory.keys(cycle=False)}


def _as_int(values: np.ndarray, *, key: str, branch: str, source: Path) -> np.ndarray:
    """Integer values of an integer (or integral floating-point) branch, as int64."""
    if np.issubdtype(values.dtype, np.floating):
        bad = ~np.isfinite(values) | (values != np.round(values))
        if bad.any():
            raise InputError(
                f"branch '{branch}' must hold integers",
                source=source,
                field=key,
                value=float(values[np.argmax(bad)]),
            )
    elif not (np.issubdtype(values.dtype, np.integer) or values.dtype == np.bool_):
        raise InputError(
            f"branch '{branch}' has non-numeric type {values.dtype}", source=source, field=key
        )
    return values.astype(np.int64)


class _ChunkReader:
    """Turns one chunk of branch arrays (entries ``[start, stop)``) into an :class:`EventBatch`."""

    def __init__(self, source: Path, mapping: dict[str, str], geometry: Any) -> None:
        self.source = source
        self.mapping = mapping
        self.geometry = geometry
        self.hit_keys = [k for k in mapping if k.startswith("hit_")]
        self.truth_keys = [k for k in mapping if k.startswith("truth_")]

    def _error(self, reason: str, key: str, value: Any = None) -> InputError:
        return InputError(
            f"{reason} (branch '{self.mapping[key]}')", source=self.source, field=key, value=value
        )

    def _flat(self, array: ak.Array, key: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-entry counts and flat numeric values of a jagged (or, for truth, scalar) branch."""
        if array.ndim == 1:
            if key.startswith("hit_"):
                raise self._error("hit branches must be jagged (one list of hits per entry)", key)
            counts = np.ones(len(array), np.int64)
            flat = array
        elif array.ndim == 2:
            counts = ak.to_numpy(ak.num(array, axis=1)).astype(np.int64)
            flat = ak.flatten(array, axis=1)
        else:
            raise self._error(f"unsupported type '{array.type}' (nested lists)", key)
        try:
            values = ak.to_numpy(flat)
        except (TypeError, ValueError):
            raise self._error(f"unsupported type '{array.type}' (not numeric)", key) from None
        if values.ndim != 1 or values.dtype.kind not in "biuf":
            raise self._error(f"unsupported type '{array.type}' (not numbers)", key)
        return counts, values

    def _same_counts(
        self, counts: dict[str, np.ndarray], ref: str, start: int, what: str
    ) -> np.ndarray:
        for key, c in counts.items():
            bad = np.nonzero(c != counts[ref])[0]
            if len(bad):
                i = int(bad[0])
                raise self._error(
                    f"entry {start + i} has {c[i]} {what} but field '{ref}' "
                    f"(branch '{self.mapping[ref]}') has {counts[ref][i]}: jagged lengths differ",
                    key,
                )
        return counts[ref]

    def convert(self, arrays: Mapping[str, ak.Array], start: int) -> EventBatch:
        n_events = len(arrays[self.mapping["hit_energy"]])
        hit_counts: dict[str, np.ndarray] = {}
        hit_values: dict[str, np.ndarray] = {}
        for key in self.hit_keys:
            hit_counts[key], hit_values[key] = self._flat(arrays[self.mapping[key]], key)
        counts = self._same_counts(hit_counts, "hit_energy", start, "hits")
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        n_hits = int(offsets[-1])

        def entry_of(hit: int) -> int:
            return start + int(np.searchsorted(offsets, hit, side="right") - 1)

        for key in _FINITE_KEYS:
            if key in hit_values:
                values = hit_values[key].astype(np.float32)  # as stored: 1e39 -> inf
                bad = ~np.isfinite(values)
                if bad.any():
                    i = int(np.argmax(bad))
                    entry = entry_of(i)
                    raise self._error(
                        f"non-finite value in entry {entry}, hit {i - offsets[entry - start]}",
                        key,
                        float(values[i]),
                    )

        # truth rows
        truth_counts: dict[str, np.ndarray] = {}
        truth_values: dict[str, np.ndarray] = {}
        for key in self.truth_keys:
            truth_counts[key], truth_values[key] = self._flat(arrays[self.mapping[key]], key)
        if self.truth_keys:
            ref = next(
                (k for k in ("truth_energy", "truth_pdg") if k in truth_counts),
                self.truth_keys[0],
            )
            n_truth = self._same_counts(truth_counts, ref, start, "truth rows")
        else:
            n_truth = np.zeros(n_events, np.int64)
        truth_offsets = np.concatenate([[0], np.cumsum(n_truth)]).astype(np.int64)
        n_rows = int(truth_offsets[-1])
        truth: dict[str, np.ndarray] = {}
        for name, dtype in TRUTH_COLUMNS.items():
            key = f"truth_{name}"
            if key not in truth_values:
                truth[name] = np.full(n_rows, TRUTH_DEFAULTS[name], dtype=dtype)
            elif np.issubdtype(dtype, np.integer):
                ints = _as_int(
                    truth_values[key], key=key, branch=self.mapping[key], source=self.source
                )
                truth[name] = ints.astype(dtype)
            else:
                truth[name] = truth_values[key].astype(dtype)

        # hits
        hits: dict[str, np.ndarray] = {}
        if "hit_cell" in hit_values:
            cell = _as_int(
                hit_values["hit_cell"],
                key="hit_cell",
                branch=self.mapping["hit_cell"],
                source=self.source,
            )
            self._check_range(cell, 0, self.geometry.n_cells, "hit_cell", entry_of)
        else:
            ieta = _as_int(
                hit_values["hit_ieta"],
                key="hit_ieta",
                branch=self.mapping["hit_ieta"],
                source=self.source,
            )
            iphi = _as_int(
                hit_values["hit_iphi"],
                key="hit_iphi",
                branch=self.mapping["hit_iphi"],
                source=self.source,
            )
            self._check_range(ieta, 0, self.geometry.n_eta, "hit_ieta", entry_of)
            self._check_range(iphi, 0, self.geometry.n_phi, "hit_iphi", entry_of)
            cell = self.geometry.cell_id(ieta, iphi)
        hits["cell"] = cell.astype(HIT_FIELDS["cell"])
        for name, dtype in HIT_FIELDS.items():
            key = f"hit_{name}"
            if name == "cell":
                continue
            if key not in hit_values:
                hits[name] = np.full(n_hits, HIT_DEFAULTS[name], dtype=dtype)
            elif np.issubdtype(dtype, np.integer):
                ints = _as_int(
                    hit_values[key], key=key, branch=self.mapping[key], source=self.source
                )
                hits[name] = ints.astype(dtype)
            else:
                hits[name] = hit_values[key].astype(dtype)
        if "hit_truth_particle" in hit_values:
            rows = np.repeat(n_truth, counts)
            particle = hits["truth_particle"].astype(np.int64)
            bad = (particle < -1) | (particle >= rows)
            if bad.any():
                i = int(np.argmax(bad))
                raise self._error(
                    f"entry {entry_of(i)} has {rows[i]} truth rows; a hit's truth particle must "
                    "be -1 (noise) or a row index within its entry",
                    "hit_truth_particle",
                    int(particle[i]),
                )
        return EventBatch(offsets=offsets, hits=hits, truth_offsets=truth_offsets, truth=truth)

    def _check_range(self, values: np.ndarray, lo: int, hi: int, key: str, entry_of: Any) -> None:
        bad = (values < lo) | (values >= hi)
        if bad.any():
            i = int(np.argmax(bad))
            raise self._error(
                f"entry {entry_of(i)}: outside the detector's range [{lo}, {hi})",
                key,
                int(values[i]),
            )


def _check_mapping(mapping: dict[str, str], geometry: Any, source: str) -> None:
    if "hit_energy" not in mapping:
        raise InputError("the branch map must map 'hit_energy'", source=source, field="hit_energy")
    has_index = [k in mapping for k in _INDEX_KEYS]
    if "hit_cell" in mapping:
        if any(has_index):
            raise InputError(
                "map either 'hit_cell' or both 'hit_ieta' and 'hit_iphi', not both",
                source=source,
                field="hit_cell",
            )
    elif not all(has_index):
        raise InputError(
            "the branch map must map 'hit_cell' (or both 'hit_ieta' and 'hit_iphi')",
            source=source,
            field="hit_cell",
        )
    elif not all(hasattr(geometry, a) for a in ("n_eta", "n_phi", "cell_id")):
        raise InputError(
            f"detector '{geometry.name}' has no (ieta, iphi) addressing; map 'hit_cell'",
            source=source,
            field="hit_ieta",
        )


def _iterate(
    ntuple: Any, branches: list[str], step: int, source: Path
) -> Iterator[tuple[dict[str, ak.Array], int]]:
    """``(arrays by branch name, first entry)`` per chunk; read errors become InputErrors."""
    chunks = ntuple.iterate(branches, step_size=step, library="ak", how=dict, report=True)
    while True:
        try:
            arrays, report = next(chunks)
        except StopIteration:
            return
        except (OSError, ValueError, KeyError, uproot.deserialization.DeserializationError) as exc:
            raise InputError(
                f"cannot read the ROOT file (corrupt?): {exc}", source=source
            ) from None
        yield arrays, int(report.tree_entry_start)


def import_root(
    root_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    tree: str = "events",
    branch_map: Mapping[str, str | None] | str | os.PathLike[str] | None = None,
    detector: str | None = None,
    events_per_shard: int = 10_000,
    seed: int | None = None,
    *,
    detector_params: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert a TTree (or RNTuple) of ``root_path`` into an event store in ``out_dir``.

    Args:
        root_path: the ROOT file.
        out_dir: directory for the shards ``shard-00000.h5``, ...
        tree: name of the tree (or RNTuple) in the file.
        branch_map: ``{fastreco field: branch name}`` as a dict or a YAML/JSON file; ``None``
            reads the branch names that :func:`export_root` writes. Required fields:
            ``hit_energy`` and ``hit_cell`` (or ``hit_ieta`` + ``hit_iphi``, zero-based).
        detector: detector name; default: the one recorded by :func:`export_root` in the
            file, else ``"ecal"``.
        events_per_shard: entries read per chunk and written per shard.
        seed: seed attribute of the shards; default: the one recorded in the file, else 0.
        detector_params: geometry parameters; default: those recorded in the file for the same
            detector, else the detector's defaults.
        overwrite: replace the shards already in ``out_dir`` (otherwise they are an error).

    All shards are first written to a staging directory inside ``out_dir`` and moved into place
    only once every entry has been read and validated, so an error leaves ``out_dir`` as it was.

    Returns:
        ``out_dir``.
    """
    root_path = Path(root_path)
    out_dir = Path(out_dir)
    mapping = load_branch_map(branch_map)
    map_source = str(branch_map) if isinstance(branch_map, (str, os.PathLike)) else "branch_map"
    if events_per_shard < 1:
        raise InputError("must be at least 1", field="events_per_shard", value=events_per_shard)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("output exists and is not a directory", source=out_dir)
    existing = sorted(out_dir.glob("shard-*.h5")) if out_dir.is_dir() else []
    if existing and not overwrite:
        raise InputError(
            f"already holds {len(existing)} event-store shard(s); refusing to overwrite them "
            "(pass overwrite=True, or choose another directory)",
            source=out_dir,
        )
    if not root_path.is_file():
        raise InputError("ROOT file not found", source=root_path)

    try:
        f = uproot.open(root_path)
    except (OSError, ValueError) as exc:
        raise InputError(f"not a readable ROOT file: {exc}", source=root_path) from None
    with f:
        trees = f.keys(filter_classname=_TREE_CLASSES, cycle=False, recursive=True)
        if tree not in trees:
            raise InputError(
                f"no tree named '{tree}' in the file; trees: {trees}",
                source=root_path,
                field="tree",
                value=tree,
            )
        ntuple = f[tree]
        metadata = _read_metadata(f)
        if branch_map is None and metadata.get("schema_version", str(SCHEMA_VERSION)) != str(
            SCHEMA_VERSION
        ):
            raise SchemaError(
                f"exported with event-store schema {metadata['schema_version']}; this fastreco "
                f"{__version__} reads version {SCHEMA_VERSION} (pass an explicit branch_map)",
                source=root_path,
                field="schema_version",
                value=metadata["schema_version"],
            )

        name = detector or metadata.get("detector", "ecal")
        params = detector_params
        if params is None:
            params = (
                json.loads(metadata["detector_params"])
                if metadata.get("detector") == name and "detector_params" in metadata
                else {}
            )
        geometry = detector_from_attrs(name, params)
        _check_mapping(mapping, geometry, map_source)

        available = list(ntuple.keys(recursive=True))
        for key, branch in mapping.items():
            if branch not in available:
                raise InputError(
                    f"branch '{branch}' (mapped to fastreco field '{key}') is not in tree "
                    f"'{tree}'; available branches: {available}",
                    source=root_path,
                    field=key,
                    value=branch,
                )

        defaulted = [k for k in (*_HIT_KEYS, *_TRUTH_KEYS) if k not in mapping and k != "hit_cell"]
        if not any(k.startswith("truth_") for k in mapping):
            log.warning("%s: no truth branch mapped; the store has no truth rows", root_path)
        generator: dict[str, Any] = {
            "source": "root",
            "file": str(root_path.resolve()),
            "tree": tree,
            "branch_map": mapping,
            "defaulted": defaulted,
        }
        if "generator" in metadata:
            generator["original_generator"] = json.loads(metadata["generator"])
        attrs = {
            "detector": geometry.name,
            "detector_params": geometry.to_dict(),
            "generator": generator,
            "seed": int(seed if seed is not None else metadata.get("seed", 0)),
        }

        out_dir.mkdir(parents=True, exist_ok=True)
        staging = out_dir / f".import-{uuid.uuid4().hex[:12]}"
        staging.mkdir()
        try:
            reader = _ChunkReader(root_path, mapping, geometry)
            branches = sorted(set(mapping.values()))
            n_shards = n_events = 0
            for arrays, start in _iterate(ntuple, branches, events_per_shard, root_path):
                batch = reader.convert(arrays, start)
                write_shard(
                    shard_path(staging, n_shards), batch, {**attrs, "shard_index": n_shards}
                )
                n_shards += 1
                n_events += batch.n_events
            if n_shards == 0:  # an empty tree is still a valid (empty) store
                write_shard(shard_path(staging, 0), _empty_batch(), {**attrs, "shard_index": 0})
                n_shards = 1
            new = [shard_path(out_dir, i) for i in range(n_shards)]
            for old in existing:
                if old not in new:
                    old.unlink()
            for i, target in enumerate(new):
                os.replace(shard_path(staging, i), target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    log.info(
        "imported %d events from %s:%s into %d shard(s) in %s",
        n_events,
        root_path,
        tree,
        n_shards,
        out_dir,
    )
    return out_dir
