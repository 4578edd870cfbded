"""ONNX export of HGCAL property-regression runs (``kind: hgcal_regression``).

The 3D CNN exports with a dynamic batch and its output standardisation inside the graph (the
outputs are the energy ratio and the barycentre in cm); ``<stem>.preprocessing.json`` holds the
grid the windows are built on and how outputs become GeV and cm. Point-cloud models (the DRN)
are refused with the reason. Shared machinery: :mod:`fastreco.deploy.onnx`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from fastreco.deploy.onnx import (
    INPUT_NAME,
    OUTPUT_NAME,
    PREPROCESSING_FORMAT,
    PREPROCESSING_VERSION,
    TRAINED_ATOL,
    TRAINED_RTOL,
    _provenance,
    _write_preprocessing,
    check_onnx,
    export_module,
)
from fastreco.errors import InputError

log = logging.getLogger(__name__)

#: Why a registered HGCAL regression model has no ONNX export (models of the ``points``
#: representation; the others export).
_NO_ONNX_EXPORT = {
    "hgcal-drn": (
        "the Dynamic Reduction Network (hgcal-drn) cannot be exported to ONNX: its graph "
        "reduction matches hits in rounds that stop on a data-dependent condition and leaves a "
        "data-dependent number of nodes, which an exported static graph cannot express"
    ),
}


class _RegressionOutputs(torch.nn.Module):
    """A regression network with its output standardization (``offset + scale * output``,
    :class:`~fastreco.train.hgcal_regression.RegressionModule`) inside the graph."""

    def __init__(self, model: torch.nn.Module, offset: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("offset", offset.detach().clone().float())
        self.register_buffer("scale", scale.detach().clone().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.offset + self.scale * self.model(x)


def _hgcal_grid_description(task: Any, info: dict[str, Any]) -> dict[str, Any]:
    """The grid of a regression run's windows: the resolved :class:`GridSpec`, each layer's z
    and pixel size, and how hits become voxels and windows (:mod:`fastreco.data.hexgrid`)."""
    from fastreco.data.hexgrid import HexGrid
    from fastreco.reco.hgcal_energy import CalibratedEnergySum

    geometry = CalibratedEnergySum.from_dict(info["raw_calibration"]).geometry
    grid = HexGrid(geometry, task.data.grid_spec())  # the weights are not computed here
    spec = grid.spec
    return {
        **spec.to_dict(),
        "n_side": int(grid.n_side),
        "layer_z_cm": [float(z) for z in grid.layer_z],
        "pixel_size_cm": [float(p) for p in grid.pixel_size],
        "binning": (
            "each hexagonal cell's calibrated energy [GeV] is shared among the square pixels of "
            "its layer in proportion to the area of the hexagon inside each pixel (energy "
            "conserved; fastreco.data.hexgrid.HexGrid). Pixel (ix, iy) of grid layer k covers "
            "x in [(ix - n_side/2) p_k, (ix - n_side/2 + 1) p_k) cm, same in y, with "
            "p_k = pixel_size_cm[k] = pitch * layer_z_cm[k] / z_ref (projective: a grid in "
            "x/z, y/z)"
        ),
        "window_rule": (
            "window x window pixels per layer around the shower axis: the line from the origin "
            "through the calibrated-energy-weighted centre, projected on z = z_ref, of the hits "
            "in the grid's layers within window * pitch / 2 cm of the most energetic one; "
            "corner pixel (ix0, iy0) = rint(axis / pitch + n_side/2 - window/2), shared by all "
            "layers; the window axis is then its centre, "
            "(ix0 + window/2 - n_side/2) * pitch cm on z = z_ref"
        ),
    }


def export_hgcal_regression_onnx(
    run_dir: str | os.PathLike[str], out: str | os.PathLike[str]
) -> Path:
    """Export an HGCAL property-regression run (kind ``hgcal_regression``).

    The 3D CNN (``hgcal-cnn3d``) on grid windows exports with a dynamic batch axis; its output
    standardization is part of the graph, so the output is in physical units (energy ratio,
    cm). ``<stem>.preprocessing.json`` holds the grid (:func:`_hgcal_grid_description`), the
    voxel transform ``ln(1 + E / 10 MeV)``, the raw calibrated sum that the energy ratio
    multiplies and the barycentre's frame.

    Shapes:
        - **input** ``x``: (batch, 1, L, H, W) float32, log-energy voxels (layer, y, x)
        - **output** ``output``: (batch, 4) float32, :data:`~fastreco.train.hgcal_regression.TARGETS`

    Raises:
        InputError: not a run folder, no checkpoint, or a model without an ONNX export (the
            DRN on point clouds).
    """
    from fastreco.train.hgcal_regression import (
        LOG_ENERGY_UNIT,
        MODEL_REPRESENTATION,
        TARGETS,
        HgcalRegressionTaskConfig,
        load_regression_model,
    )
    from fastreco.train.runner import best_checkpoint, load_run_info

    run, out = Path(run_dir), Path(out)
    info = load_run_info(run)
    task = HgcalRegressionTaskConfig.load(run / "config.yaml")
    name = task.model.name
    if MODEL_REPRESENTATION.get(name) != "grid":
        reason = _NO_ONNX_EXPORT.get(
            name, f"only the grid models {sorted(MODEL_REPRESENTATION)} of this kind export"
        )
        raise InputError(
            f"{reason}; the model runs in PyTorch: `fastreco evaluate {run}`",
            source=run,
            field="model.name",
            value=name,
        )
    module = load_regression_model(run)
    input_shape = tuple(int(v) for v in module.hparams.input_shape)
    wrapped = _RegressionOutputs(module.model, module.offset, module.scale).eval()
    export_module(wrapped, input_shape, out, verify=False)
    check_onnx(out, wrapped, input_shape, batch_sizes=(1, 3), rtol=TRAINED_RTOL, atol=TRAINED_ATOL)
    barycentre = task.position_reference == "barycentre"
    position = (
        "dx, dy, z are corrections to the energy-weighted barycentre (bx, by, bz) of the "
        "input window's voxels (weights: voxel energies E [GeV], 0 below 0; voxel (k, iy, ix) "
        "at bx_k = (ix + 0.5 - window/2) * pixel_size_cm[k], by_k = (iy + 0.5 - window/2) * "
        "pixel_size_cm[k], bz_k = layer_z_cm[k]): dx [cm] = output[:, 1] + bx, dy [cm] = "
        "output[:, 2] + by, z [cm] = output[:, 3] + bz"
        if barycentre
        else "dx [cm] = output[:, 1], dy [cm] = output[:, 2], z [cm] = output[:, 3]"
    )
    meta = {
        "format": PREPROCESSING_FORMAT,
        "format_version": PREPROCESSING_VERSION,
        "model_file": out.name,
        "task": task.name,
        "kind": "hgcal_regression",
        "model": {"name": name, "params": task.model.params},
        "grid": _hgcal_grid_description(task, info),
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", *input_shape],
            "dtype": "float32",
            "axes": ["event", "channel", "layer", "y", "x"],
            "value": (
                f"ln(1 + E / {LOG_ENERGY_UNIT:g} GeV) of each voxel's calibrated energy E [GeV] "
                "(E < 0 counts as 0)"
            ),
            "log_energy_unit_gev": LOG_ENERGY_UNIT,
        },
        "output": {
            "name": OUTPUT_NAME,
            "shape": ["batch", len(TARGETS)],
            "dtype": "float32",
            "columns": list(TARGETS),
            "postprocess": "none (the standardization offset + scale * network is in the graph)",
            "energy": (
                "E_pred [GeV] = output[:, 0] * E_raw; E_raw: the calibrated raw sum "
                "(fastreco.reco.hgcal_energy.CalibratedEnergySum, 'raw_calibration': coef per "
                "section of the dE/dx-weighted hit energies of the hits within 'radius' cm, "
                "on the front face, of the energy-weighted centre of the hits within 'radius' "
                "of the most energetic one; all hits if null)"
            ),
            "position": (
                f"{position}. dx, dy: the shower barycentre relative to the window axis at the "
                "barycentre's depth; absolute x = dx + axis_x * z / z_ref, y = dy + axis_y * z "
                "/ z_ref (axis: the window axis on z = z_ref, see grid.window_rule)"
            ),
            "position_reference": task.position_reference,
            "standardization": {
                "offset": [float(v) for v in module.offset],
                "scale": [float(v) for v in module.scale],
            },
        },
        "raw_calibration": info.get("raw_calibration"),
        **_provenance(out, best_checkpoint(run)),
    }
    meta_path = _write_preprocessing(out, meta)
    log.info("exported %s to %s (+ %s)", run, out, meta_path.name)
    return out
