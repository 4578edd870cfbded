"""HGCAL events as regular 3D grid windows on disk: the converter and the torch reader.

:func:`convert_to_grid` turns an HGCAL event store into one HDF5 file of per-event windows
(:class:`~fastreco.data.hexgrid.HexGrid`), stored sparse since most voxels are empty::

    /windows/offsets      int64 [n + 1]      CSR offsets of each event's voxels
    /windows/index        int32 [nnz]        flat voxel index in the window, (k * H + y) * W + x
    /windows/value        float32 [nnz]      voxel value (attribute ``values``: gev | mip | deposit)
    /origins              int32 [n, L, 2]    global pixel (ix, iy) of each window's corner per layer
    /axis                 float64 [n, 2]     window axis on z = z_ref [cm] (the line from the origin)
    /outside              float32 [n]        value outside the window
    /reco_energy          float32 [n]        calibrated energy of all hits in the grid's layers [GeV]
    /event                int64 [n]          event index in the source store
    /targets/<name>       per-event truth (:data:`~fastreco.data.hgcal_targets.TARGET_COLUMNS`)
                          plus barycenter_dx, barycenter_dy: the true barycentre relative to the
                          window axis at the barycentre's depth [cm]
    attributes            format, format_version, grid (GridSpec JSON, resolved), window_shape,
                          values, detector, detector_params, generator (JSON), source, n_events,
                          complete

The file is written to a temporary name and renamed when complete (atomic: a killed conversion
leaves no partial output; run it again). :class:`GridDataset` reads it for training.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from fastreco import __version__
from fastreco.data.hexgrid import GridSpec, ValueKind, Windows, hexgrid_for
from fastreco.data.hgcal_targets import TARGET_COLUMNS, single_particle_targets
from fastreco.data.store import EventStore
from fastreco.errors import InputError, SchemaError
from fastreco.geometry.hgcal import HgcalEndcap

log = logging.getLogger(__name__)

GRID_FORMAT = "fastreco-grid"
GRID_FORMAT_VERSION = 1
RELATIVE_TARGETS = ("barycenter_dx", "barycenter_dy")
DEFAULT_TARGETS = ("energy", "barycenter_dx", "barycenter_dy", "barycenter_z")


def _relative_barycenter(targets: dict[str, np.ndarray], axis: np.ndarray, z_ref: float) -> None:
    z = targets["barycenter_z"]
    targets["barycenter_dx"] = targets["barycenter_x"] - axis[:, 0] * z / z_ref
    targets["barycenter_dy"] = targets["barycenter_y"] - axis[:, 1] * z / z_ref


def convert_to_grid(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    spec: GridSpec | None = None,
    *,
    values: ValueKind = "gev",
    batch_size: int = 5000,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Convert an HGCAL event store to a grid-window dataset (module docstring); atomic.

    Args:
        source: HGCAL event store (directory of shards or one shard).
        output: the HDF5 file to write.
        spec: the grid (default :class:`GridSpec`).
        values: voxel content: calibrated energy [GeV], signal [MIP] or true deposit [GeV].
        batch_size: events converted per step.
        cache_dir: directory of overlap-weight caches (see :func:`overlap_weights`).
        progress: callback ``f(done, total)`` in events.

    Returns:
        ``output``.
    """
    store = EventStore(source)
    if not isinstance(store.detector, HgcalEndcap):
        raise InputError(
            "not an HGCAL store", source=source, field="detector", value=store.attrs["detector"]
        )
    grid = hexgrid_for(store.detector, spec, cache_dir)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    n = store.n_events
    L, H, W = len(grid.layers), grid.spec.window, grid.spec.window
    assert grid.spec.z_ref is not None
    with h5py.File(tmp, "w") as f:
        g = f.create_group("windows")
        g.create_dataset("offsets", shape=(n + 1,), dtype=np.int64)
        for name, dtype in (("index", np.int32), ("value", np.float32)):
            g.create_dataset(
                name,
                shape=(0,),
                maxshape=(None,),
                dtype=dtype,
                chunks=(1 << 16,),
                compression="lzf",
                shuffle=True,
            )
        f.create_dataset("origins", shape=(n, L, 2), dtype=np.int32)
        f.create_dataset("axis", shape=(n, 2), dtype=np.float64)
        f.create_dataset("outside", shape=(n,), dtype=np.float32)
        f.create_dataset("reco_energy", shape=(n,), dtype=np.float32)
        f.create_dataset("event", data=np.arange(n, dtype=np.int64))
        t = f.create_group("targets")
        for name in (*TARGET_COLUMNS, *RELATIVE_TARGETS):
            t.create_dataset(name, shape=(n,), dtype=np.int32 if name == "pdg" else np.float64)
        done, nnz = 0, 0
        f["windows/offsets"][0] = 0
        for batch in store.iter_batches(batch_size):
            win = grid.windows(batch, values)
            targets = single_particle_targets(batch, store.detector)
            _relative_barycenter(targets, win.axis, grid.spec.z_ref)
            sl = slice(done, done + batch.n_events)
            m = len(win.value)
            for name, data in (("index", win.index), ("value", win.value)):
                ds = f[f"windows/{name}"]
                ds.resize((nnz + m,))
                ds[nnz : nnz + m] = data
            f["windows/offsets"][done + 1 : done + batch.n_events + 1] = win.offsets[1:] + nnz
            f["origins"][sl] = win.origins
            f["axis"][sl] = win.axis
            f["outside"][sl] = win.outside
            f["reco_energy"][sl] = grid.event_sums(batch, "gev")
            for name, data in targets.items():
                t[name][sl] = data
            nnz += m
            done += batch.n_events
            if progress is not None:
                progress(done, n)
        f.attrs.update(
            {
                "format": GRID_FORMAT,
                "format_version": GRID_FORMAT_VERSION,
                "fastreco_version": __version__,
                "grid": json.dumps(grid.spec.to_dict()),
                "window_shape": [L, H, W],
                "values": values,
                "detector": store.attrs["detector"],
                "detector_params": json.dumps(store.attrs["detector_params"]),
                "generator": json.dumps(store.attrs["generator"], sort_keys=True),
                "source": str(source),
                "n_events": n,
                "complete": True,
            }
        )
    os.replace(tmp, output)
    return output


def _check(path: Path, f: h5py.File) -> None:
    if f.attrs.get("format") != GRID_FORMAT:
        raise SchemaError("not a fastreco grid dataset (attribute 'format')", source=path)
    version = int(f.attrs.get("format_version", -1))
    if version != GRID_FORMAT_VERSION:
        raise SchemaError(
            f"unknown grid format version; this fastreco reads {GRID_FORMAT_VERSION}",
            source=path,
            field="format_version",
            value=version,
        )
    if not f.attrs.get("complete", False):
        raise InputError("grid dataset was not completely written", source=path)


def read_grid(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Everything in a grid dataset, in memory: ``windows`` (:class:`Windows`), ``targets``
    (dict of (n,) arrays), ``reco_energy``, ``event``, ``spec`` (:class:`GridSpec`),
    ``geometry`` (:class:`HgcalEndcap`), ``values`` and ``attrs``."""
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"not a readable HDF5 grid dataset: {exc}", source=path) from None
    with f:
        _check(path, f)
        L, H, W = (int(v) for v in f.attrs["window_shape"])
        windows = Windows(
            offsets=f["windows/offsets"][()],
            index=f["windows/index"][()],
            value=f["windows/value"][()],
            origins=f["origins"][()],
            axis=f["axis"][()],
            outside=f["outside"][()].astype(np.float64),
            shape=(L, H, W),
        )
        return {
            "windows": windows,
            "targets": {k: v[()] for k, v in f["targets"].items()},
            "reco_energy": f["reco_energy"][()],
            "event": f["event"][()],
            "spec": GridSpec.from_dict(json.loads(f.attrs["grid"])),
            "geometry": HgcalEndcap.from_dict(json.loads(f.attrs["detector_params"])),
            "values": str(f.attrs["values"]),
            "attrs": dict(f.attrs),
        }


class GridDataset(torch.utils.data.Dataset):
    """A grid dataset for training: item ``i`` is ``(image (1, L, H, W), targets (T,))``.

    Args:
        path: file written by :func:`convert_to_grid`.
        targets: names of the target columns, in order (``targets/`` datasets, e.g. energy,
            deposited, barycenter_x/y/z, barycenter_dx/dy, impact_x/y/z).
        indices: the events to use (e.g. a split); default all.
        scale: the images are multiplied by this (e.g. 1/GeV scale for the network).

    The windows are held in memory sparse (~10 kB per event) and made dense per item.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        targets: Sequence[str] = DEFAULT_TARGETS,
        indices: Sequence[int] | np.ndarray | None = None,
        scale: float = 1.0,
    ) -> None:
        data = read_grid(path)
        self.path = Path(path)
        self.windows: Windows = data["windows"]
        self.spec: GridSpec = data["spec"]
        self.geometry: HgcalEndcap = data["geometry"]
        unknown = [t for t in targets if t not in data["targets"]]
        if unknown:
            raise InputError(
                f"unknown target; available: {sorted(data['targets'])}",
                source=self.path,
                field="targets",
                value=unknown[0],
            )
        self.target_names = tuple(targets)
        self.targets = np.stack([data["targets"][t] for t in targets], axis=1).astype(np.float32)
        self.all_targets = data["targets"]
        self.reco_energy = data["reco_energy"]
        n = self.windows.n_events
        self.indices = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64)
        self.scale = float(scale)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(1, L, H, W) of one image."""
        return (1, *self.windows.shape)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        e = int(self.indices[i])
        image = self.windows.event(e)
        if self.scale != 1.0:
            image *= self.scale
        return torch.from_numpy(image[None]), torch.from_numpy(self.targets[e])
