"""Loss of calorimeter property regression: the energy and the barycenter of one shower.

The network's output is ``(B, 4)``: the energy *correction* ``E_true / E_raw`` and the
barycenter ``x, y, z`` [cm]. ``E_raw`` is the event's raw (calibrated-hit) energy sum, known at
inference for the 3D image and the point cloud alike (the grid conversion conserves energy), so
``E_pred = output[:, 0] * E_raw``.

Why the ratio and not the energy or its log: the raw sum already carries the 50-fold range of
10-500 GeV; what is left to learn - sampling fraction, leakage, the e/h response of hadron
showers - is an O(1) factor of a few per cent to tens of per cent spread, which suits a
network's output scale and a fixed Huber threshold at every energy. The error of the ratio
relative to its truth is exactly the relative energy error ``E_pred / E_true - 1`` (the
quantity of seed 003's "percentage error in energy"). The ECAL regression of
:class:`fastreco.train.module.TaskModule` uses the same target (``E_true / E_window``).

Shapes:
    - **prediction, target:** ``(B, 4)`` = (``E_true / E_raw``, x [cm], y [cm], z [cm])
"""

from __future__ import annotations

import torch
from torch import nn

#: Relative energy error, and position error over :data:`POSITION_SCALE_CM`, beyond which the
#: loss grows linearly, not quadratically (as ``train.module.REGRESSION_HUBER_DELTA``).
HUBER_DELTA = 0.1
#: A barycenter error of 1 cm weighs as a 2 % energy error: the precisions seed 003 reached
#: (1.9 % in energy, 1.3 / 0.6 cm in x, y / z) then count about equally.
POSITION_SCALE_CM = 50.0


def energy_target(true_energy: torch.Tensor, raw_energy: torch.Tensor) -> torch.Tensor:
    """The regressed energy correction ``E_true / E_raw`` (both in GeV, shape ``(B,)``)."""
    return true_energy / raw_energy.clamp(min=torch.finfo(raw_energy.dtype).tiny)


def predicted_energy(output: torch.Tensor, raw_energy: torch.Tensor) -> torch.Tensor:
    """``E_pred = output[:, 0] * E_raw`` [GeV], shape ``(B,)``."""
    return output[:, 0] * raw_energy


def property_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    *,
    energy_weight: float = 1.0,
    position_weight: float = 1.0,
    position_scale_cm: float = POSITION_SCALE_CM,
    delta: float = HUBER_DELTA,
) -> dict[str, torch.Tensor]:
    """Huber losses of the relative energy error and of the barycenter error.

    Args:
        prediction, target: ``(B, 4)`` (module docstring); a target with one column regresses
            the energy only.
        energy_weight, position_weight: factors of the two terms.
        position_scale_cm: position errors are divided by this before the Huber loss.
        delta: Huber threshold on the relative energy error and the scaled position error.

    Returns:
        ``{"energy": ..., "position": ...}`` scalar terms, weights applied; their sum is the loss.
    """
    rel = (prediction[:, 0] - target[:, 0]) / target[:, 0]  # E_pred / E_true - 1
    terms = {
        "energy": energy_weight * nn.functional.huber_loss(rel, torch.zeros_like(rel), delta=delta)
    }
    if target.shape[1] > 1:
        scaled = (prediction[:, 1:4] - target[:, 1:4]) / position_scale_cm  # (B, 3)
        terms["position"] = position_weight * nn.functional.huber_loss(
            scaled, torch.zeros_like(scaled), delta=delta
        )
    return terms
