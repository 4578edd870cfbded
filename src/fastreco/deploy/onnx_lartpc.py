"""ONNX export of LArTPC pixel-ID runs (``kind: pixel_id``): the patch CNN with a dynamic batch
of patches, the U-Net with dynamic batch, height and width; ``<stem>.preprocessing.json`` says
how patches or images are cut from the ADC plane and what the four scores mean. Also used by the
pixel-ID evaluation to time ONNX Runtime. Shared machinery: :mod:`fastreco.deploy.onnx`.
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


def export_pixel_id_module(
    model: torch.nn.Module, path: str | os.PathLike[str], *, verify: bool = True
) -> Path:
    """Export a pixel-ID network (shared by ``fastreco export`` and the pixel-ID evaluation).

    * :class:`~fastreco.models.lartpc.PatchCNN`: a dynamic batch of ``(1, P, P)`` patches,
      verified by :func:`export_module` (batch sizes 1 and 3);
    * :class:`~fastreco.models.lartpc.PixelUNet`: dynamic batch, height and width, each at
      least ``model.min_input_size`` (smaller images: zero pad, crop the output); with
      ``verify`` checked at two batch sizes and two sizes on inputs of ~100 ADC counts with
      :data:`TRAINED_RTOL` / :data:`TRAINED_ATOL`.

    Shapes:
        - **input** ``x``: (batch, 1, P, P) patches, or (batch, 1, wires, ticks) images
        - **output** ``output``: (batch, 4) or (batch, 4, wires, ticks): class logits, then
          the Michel logit

    Raises:
        InputError: another kind of network (no export rules known).
    """
    from fastreco.models.lartpc import PatchCNN, PixelUNet

    model = model.cpu().eval()
    if isinstance(model, PatchCNN):
        return export_module(model, (1, model.patch_size, model.patch_size), path, verify=verify)
    if isinstance(model, PixelUNet):
        minimum = model.min_input_size
        shape = (1, *(2 * a for a in minimum))
        out = export_module(
            model, shape, path, dynamic_spatial=True, min_spatial=minimum, verify=False
        )
        if verify:
            adc = 1.0 / model.input_scale  # typical hit ADC: inputs of order one inside
            for size in (shape, (1, shape[1] + 3, shape[2] + 5)):
                check_onnx(
                    out,
                    model,
                    size,
                    batch_sizes=(1, 3),
                    rtol=TRAINED_RTOL,
                    atol=TRAINED_ATOL,
                    input_scale=adc,
                )
        return out
    raise InputError(
        "no ONNX export rules for this pixel-ID network (lartpc-patch-cnn and lartpc-unet export)",
        field="model",
        value=type(model).__name__,
    )


def export_pixel_id_onnx(run_dir: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Export a LArTPC pixel-ID run (kind ``pixel_id``, :func:`export_pixel_id_module`) and
    write ``<stem>.preprocessing.json``: the ADC input and its scaling, the patch cut (patch
    CNN) or the size and tiling rules (U-Net), and the output's layout."""
    from fastreco.data.lartpc_images import CLASS_NAMES
    from fastreco.models.lartpc import SCORE_NAMES, PatchCNN, PixelUNet, unet_halo
    from fastreco.train.pixel_id import load_pixel_id_model
    from fastreco.train.runner import best_checkpoint, load_run_info

    run, out = Path(run_dir), Path(out)
    info = load_run_info(run)
    module = load_pixel_id_model(run)
    model = module.model.eval()
    task, s = module.task, module.task.sampling
    if not isinstance(model, (PatchCNN, PixelUNet)):
        raise InputError(
            "no ONNX export for this pixel-ID model (lartpc-patch-cnn and lartpc-unet export; "
            "the sparse U-Net builds its rulebooks - which pixels neighbour which - per event "
            "with torch.unique and torch.searchsorted, data-dependent steps this export does "
            "not support); "
            f"it runs in PyTorch: `fastreco evaluate {run}`",
            source=run,
            field="model.name",
            value=task.model.name,
        )
    export_pixel_id_module(model, out)
    adc = (
        "ADC counts above pedestal of the collection-plane pixels with a stored hit (zero "
        "suppressed: 0 elsewhere), wire x tick, unscaled"
    )
    scaling = {
        "input_scale": model.input_scale,
        "note": "the graph multiplies its input by input_scale first: feed raw ADC counts",
    }
    if module.mode == "patch":
        P = model.patch_size
        f = s.drift_downsample
        layout: dict[str, Any] = {
            "input": {
                "name": INPUT_NAME,
                "shape": ["batch", 1, P, P],
                "dtype": "float32",
                "axes": ["hit", "channel", "wire", "tick"],
                "value": adc,
            },
            "patch": {
                "size": P,
                "centre": P // 2,
                "drift_downsample": f,
                "downsample_mode": "mean",
                "rule": (
                    "the event image (n_wires, n_ticks) is reduced along ticks by the mean of "
                    f"groups of {f} ticks (the last group zero padded); the patch of a hit at "
                    f"(wire, tick) covers rows wire - {P // 2} .. wire - {P // 2} + {P - 1} and "
                    f"columns tick // {f} - {P // 2} .. tick // {f} - {P // 2} + {P - 1}, zero "
                    "outside the image (fastreco.data.lartpc_images.extract_patches)"
                ),
            },
            "output_shape": ["batch", len(SCORE_NAMES)],
        }
    else:
        assert isinstance(model, PixelUNet)
        h, w = model.min_input_size
        layout = {
            "input": {
                "name": INPUT_NAME,
                "shape": ["batch", 1, "wires", "ticks"],
                "dtype": "float32",
                "axes": ["event", "channel", "wire", "tick"],
                "value": adc,
                "min_size": [h, w],
            },
            "tiling": {
                "whole_image": (
                    f"any (wires, ticks) with wires >= {h} and ticks >= {w}; smaller images: "
                    "zero pad at the end to that size and crop the output back"
                ),
                "hit_tiles": (
                    "or run only aligned tiles holding hits: tile origins at multiples of a "
                    f"tile size that is a multiple of ({h}, {w}), each tile grown by the halo "
                    "on every side and clipped to the image; the scores at its hits then equal "
                    "the whole image's (fastreco.models.lartpc.unet_scores_at)"
                ),
                "alignment": [h, w],
                "halo": list(unet_halo(model)),
                "training_tile": list(s.tile),
                "tick_factor": model.tick_factor,
            },
            "output_shape": ["batch", len(SCORE_NAMES), "wires", "ticks"],
        }
    output_shape = layout.pop("output_shape")
    meta = {
        "format": PREPROCESSING_FORMAT,
        "format_version": PREPROCESSING_VERSION,
        "model_file": out.name,
        "task": task.name,
        "kind": "pixel_id",
        "mode": module.mode,
        "model": {"name": task.model.name, "params": task.model.params},
        "classes": list(CLASS_NAMES),
        "plane": info.get("plane"),
        "scaling": scaling,
        **layout,
        "output": {
            "name": OUTPUT_NAME,
            "shape": output_shape,
            "dtype": "float32",
            "scores": list(SCORE_NAMES),
            "meaning": (
                f"logits: indices 0-{len(CLASS_NAMES) - 1} the classes {list(CLASS_NAMES)}, "
                f"index {len(CLASS_NAMES)} the Michel electron"
            ),
            "postprocess": "softmax over the class logits (axis 1, first 3); sigmoid of the last",
        },
        **_provenance(out, best_checkpoint(run)),
    }
    meta_path = _write_preprocessing(out, meta)
    log.info("exported %s to %s (+ %s)", run, out, meta_path.name)
    return out
