"""The LightningModule that trains any registered model on a classification or regression task."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from fastreco import constants as C
from fastreco.config import TaskConfig
from fastreco.errors import FastrecoError
from fastreco.models import build_model

#: Pull (energy error in units of the expected resolution) at which the regression loss turns
#: from quadratic to logarithmic (the non-Gaussian tails).
REGRESSION_PULL_SCALE = 3.0


class NonFiniteLossError(FastrecoError):
    """Training produced a NaN or infinite loss."""


def check_finite(loss: torch.Tensor, stage: str, epoch: int, batch_index: int) -> None:
    """Stop a training whose ``loss`` is NaN or infinite, naming the epoch and the batch."""
    if not torch.isfinite(loss):
        raise NonFiniteLossError(
            f"non-finite {stage} loss ({loss.item()}) at epoch {epoch}, batch {batch_index}; "
            "the last good checkpoint is kept in the run folder"
        )


def adamw_cosine(
    parameters: Any, training: Any, *, weight_decay: float | None = None
) -> dict[str, Any]:
    """The optimizer of every task kind: AdamW at the config's learning rate (and weight decay,
    unless given), cosine-annealed over the config's epochs; Lightning's
    ``configure_optimizers`` format."""
    optimizer = torch.optim.AdamW(
        parameters,
        lr=training.learning_rate,
        weight_decay=training.weight_decay if weight_decay is None else weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(training.epochs, 1))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def n_outputs(task: TaskConfig) -> int:
    """1 logit for two classes, one per class beyond, 1 value for regression."""
    if task.kind == "regression":
        return 1
    return 1 if len(task.classes) == 2 else len(task.classes)


def expected_resolution(energy: torch.Tensor) -> torch.Tensor:
    """Relative resolution sigma_E / E the simulated barrel allows at ``energy`` [GeV].

    The test-beam stochastic and constant terms with the noise of the 5x5 crystals a shower
    mostly occupies (the same irreducible terms as the evaluation's oracle).
    """
    e = energy.clamp_min(0.1)
    noise = 5.0 * C.ECAL_NOISE_PER_CRYSTAL
    return torch.sqrt((C.ECAL_STOCHASTIC_TERM**2) / e + (noise / e) ** 2 + C.ECAL_CONSTANT_TERM**2)


class TaskModule(L.LightningModule):
    r"""Wraps a model with its task's loss, metrics and optimizer.

    Loss: binary cross-entropy on one logit (two classes), cross-entropy (more classes), or, for
    energy regression, a robust loss of the *pull*: the relative energy error of the predicted
    correction E_true / E_window divided by the detector's expected resolution at the true energy
    (:func:`expected_resolution`). Without that normalisation a 100 GeV photon, whose error is
    ~0.5 %, weighs ~100 times less than a 2 GeV one and the network never learns the per-mille
    corrections that decide the resolution at high energy. The loss is Cauchy's,
    :math:`\frac{k^2}{2}\ln(1 + p^2/k^2)` with :math:`k` = :data:`REGRESSION_PULL_SCALE`:
    :math:`p^2/2` in the Gaussian core, while an event whose window missed much of the energy
    pulls with a force that falls off like :math:`1/|p|` and, unlike a Huber tail, does not grow
    with the event's energy (whose sigma is small).
    """

    def __init__(self, task_dict: dict[str, Any], input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.task = TaskConfig.from_dict(task_dict)
        self.model = build_model(
            self.task.model.name, input_shape, n_outputs(self.task), **self.task.model.params
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def loss(
        self, out: torch.Tensor, y: torch.Tensor, energy: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The task's loss; ``energy`` (true energy [GeV], shape (B,)) is needed for regression."""
        if self.task.kind == "regression":
            if energy is None:
                raise ValueError("the regression loss needs the true energy of each event")
            pull = (out.squeeze(-1) / y - 1.0) / expected_resolution(energy)
            k = REGRESSION_PULL_SCALE
            return (0.5 * k**2 * torch.log1p((pull / k) ** 2)).mean()
        if out.shape[-1] == 1:
            return nn.functional.binary_cross_entropy_with_logits(out.squeeze(-1), y.float())
        return nn.functional.cross_entropy(out, y)

    def _step(self, batch: dict[str, torch.Tensor], stage: str, batch_idx: int) -> torch.Tensor:
        out = self(batch["x"])
        loss = self.loss(out, batch["y"], batch.get("energy"))
        check_finite(loss, stage, self.current_epoch, batch_idx)
        n = len(batch["y"])
        self.log(f"{stage}_loss", loss, prog_bar=True, batch_size=n, sync_dist=stage != "train")
        if self.task.kind == "classification":
            pred = (out.squeeze(-1) > 0).long() if out.shape[-1] == 1 else out.argmax(-1)
            acc = (pred == batch["y"]).float().mean()
            self.log(
                f"{stage}_acc",
                acc,
                prog_bar=stage != "train",
                batch_size=n,
                sync_dist=stage != "train",
            )
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train", batch_idx)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val", batch_idx)

    def configure_optimizers(self) -> Any:
        return adamw_cosine(self.parameters(), self.task.training)

    def train(self, mode: bool = True) -> TaskModule:
        """Train mode, with BatchNorm kept in eval mode when the task freezes it.

        Batch statistics differ from the running ones the evaluation uses; for a regression at
        the per-mille level that difference is a visible shift of the output, so a fine-tuning
        stage can train with the statistics it will be evaluated with.
        """
        super().train(mode)
        if mode and self.task.training.freeze_batchnorm:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def predict_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Signal probability (two classes), class probabilities, or the regressed correction."""
        out = self(x)
        if self.task.kind == "regression":
            return out.squeeze(-1)
        if out.shape[-1] == 1:
            return torch.sigmoid(out.squeeze(-1))
        return torch.softmax(out, dim=-1)
