"""The multi-task LightningModule: masked per-task losses, fixed metric names, evaluation outputs for plots."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, PearsonCorrCoef
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
    MulticlassSpecificity,
)

from stress_lightning.data.taxonomy import BASIC_EXPRESSIONS, STRESS_LEVELS, check_classes
from stress_lightning.models.losses import hrv_log_loss, masked_mean, spectral_hr_loss
from stress_lightning.models.metrics import BalancedAccuracy
from stress_lightning.models.net import MultiTaskNet
from stress_lightning.models.outputs import TABLE_OUTPUTS

STAGES = ("train", "val", "test")
DEFAULT_LOSS_WEIGHTS = {"expression": 1.0, "hr": 1.0, "hrv": 0.3, "stress": 1.0}


def _task_metrics(num_expressions: int, num_stress: int) -> dict[str, MetricCollection]:
    """Metric names are fixed here once; `{stage}/` is prefixed when logging."""
    return {
        "expression": MetricCollection(
            {
                "expression_acc": MulticlassAccuracy(num_expressions, average="micro"),
                "expression_f1": MulticlassF1Score(num_expressions, average="macro"),
                # Mean per-class recall: the figure that matters on imbalanced real data.
                "expression_balanced_acc": BalancedAccuracy(num_expressions),
            }
        ),
        "hr": MetricCollection(
            {
                "hr_mae_bpm": MeanAbsoluteError(),
                "hr_rmse_bpm": MeanSquaredError(squared=False),
                "hr_pearson": PearsonCorrCoef(),
            }
        ),
        "stress": MetricCollection(
            {
                "stress_f1": MulticlassF1Score(num_stress, average="macro"),
                "stress_precision": MulticlassPrecision(num_stress, average="macro"),
                "stress_recall": MulticlassRecall(num_stress, average="macro"),
                "stress_specificity": MulticlassSpecificity(num_stress, average="macro"),
            }
        ),
    }


class MultiTaskStressModule(pl.LightningModule):
    """Expression, heart rate/HRV (rPPG, against ECG) and stress from one face clip.

    Args:
        net: keyword arguments for `MultiTaskNet` (backbone and head names and their settings).
        expression_classes, stress_levels: the run's taxonomy (linked from the data module); head sizes follow
            it and the class names travel with the checkpoint and the registered model.
        fps, roi_frames, face_frames, face_size, roi_size: clip geometry, linked from the data module.
        loss_weights: weight per task (`expression`, `hr`, `hrv`, `stress`); a missing task keeps its default.
        lr, weight_decay: AdamW settings; the learning rate follows a one-cycle cosine schedule.
        label_smoothing: for the expression and stress cross-entropies.
        hr_sigma_bpm: width of the Gaussian target of the spectral heart-rate loss.
    """

    def __init__(
        self,
        net: dict[str, Any] | None = None,
        expression_classes: list[str] | None = None,
        stress_levels: list[str] | None = None,
        fps: float = 25.0,
        roi_frames: int = 200,
        face_frames: int = 8,
        face_size: int = 64,
        roi_size: int = 8,
        loss_weights: dict[str, float] | None = None,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        label_smoothing: float = 0.05,
        hr_sigma_bpm: float = 3.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        unknown = set(loss_weights or {}) - set(DEFAULT_LOSS_WEIGHTS)
        if unknown:
            raise ValueError(
                f"model.loss_weights: unknown task(s) {sorted(unknown)}; known: {list(DEFAULT_LOSS_WEIGHTS)}"
            )
        self.loss_weights = {**DEFAULT_LOSS_WEIGHTS, **(loss_weights or {})}
        self.expression_names = list(check_classes(expression_classes or BASIC_EXPRESSIONS, "expression_classes"))
        self.stress_names = list(check_classes(stress_levels or STRESS_LEVELS, "stress_levels"))
        self.net = MultiTaskNet(
            **{
                **(net or {}),
                "fps": fps,
                "roi_frames": roi_frames,
                "num_expressions": len(self.expression_names),
                "num_stress": len(self.stress_names),
            }
        )
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_{task}": collection.clone(prefix=f"{stage}/")
                for stage in STAGES
                for task, collection in _task_metrics(len(self.expression_names), len(self.stress_names)).items()
            }
        )
        self.last_eval_outputs: dict[str, dict[str, np.ndarray]] = {}
        self._eval_buffer: dict[str, list[np.ndarray]] = defaultdict(list)

    # -- inference -----------------------------------------------------------------------------------------
    def forward(self, frames: torch.Tensor, roi: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(frames, roi)

    def example_input(self, batch_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs of the right shape for export and signatures (random, reproducible, in [0, 1])."""
        hp = self.hparams
        gen = torch.Generator().manual_seed(0)
        frames = torch.rand(batch_size, hp.face_frames, 3, hp.face_size, hp.face_size, generator=gen)
        roi = 0.5 + 0.01 * torch.rand(batch_size, hp.roi_frames, 3, hp.roi_size, hp.roi_size, generator=gen)
        return frames, roi

    # -- losses --------------------------------------------------------------------------------------------
    def _losses(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        smoothing = self.hparams.label_smoothing
        if "expression_soft" in batch:
            # CutMix/MixUp targets (data.transforms.ExpressionMix), smoothed like the hard ones.
            soft = batch["expression_soft"]
            soft = soft * (1 - smoothing) + smoothing / soft.shape[1]
            per_sample = -(soft * F.log_softmax(out["expression_logits"], dim=1)).sum(dim=1)
        else:
            per_sample = F.cross_entropy(
                out["expression_logits"], batch["expression"], reduction="none", label_smoothing=smoothing
            )
        expression = masked_mean(per_sample, batch["expression_mask"])
        hr_mask = batch["hr_mask"]
        hr = masked_mean(
            spectral_hr_loss(
                out["pulse_spectrum"],
                batch["hr_bpm"],
                self.net.bins_bpm,
                sigma_bpm=self.hparams.hr_sigma_bpm,
            )
            + F.smooth_l1_loss(out["hr_bpm"] / 10.0, batch["hr_bpm"] / 10.0, reduction="none"),
            hr_mask,
        )
        hrv_error = hrv_log_loss(out["rmssd_ms"], out["lf_hf_ratio"], batch["rmssd_ms"], batch["lf_hf_ratio"])
        hrv = masked_mean(hrv_error, batch["hrv_mask"])
        stress = masked_mean(
            F.cross_entropy(out["stress_logits"], batch["stress"], reduction="none", label_smoothing=smoothing),
            batch["stress_mask"],
        )
        losses = {"expression": expression, "hr": hr, "hrv": hrv, "stress": stress}
        losses["total"] = sum(self.loss_weights[k] * v for k, v in losses.items())
        return losses

    # -- steps ---------------------------------------------------------------------------------------------
    def _update_metrics(self, stage: str, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> None:
        m = batch["expression_mask"]
        if m.any():
            self.metrics[f"{stage}_expression"].update(out["expression_logits"][m].detach(), batch["expression"][m])
        m = batch["hr_mask"]
        if m.any():
            self.metrics[f"{stage}_hr"].update(out["hr_bpm"][m].detach(), batch["hr_bpm"][m])
        m = batch["stress_mask"]
        if m.any():
            self.metrics[f"{stage}_stress"].update(out["stress_logits"][m].detach(), batch["stress"][m])

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        out = self.net(batch["frames"], batch["roi"])
        losses = self._losses(out, batch)
        batch_size = batch["frames"].shape[0]
        # The fixed name `{stage}/loss` is the epoch mean; training also shows the running step loss.
        self.log(f"{stage}/loss", losses["total"], on_step=False, on_epoch=True, prog_bar=True, batch_size=batch_size)
        if stage == "train":
            self.log("train/loss_step", losses["total"], on_step=True, on_epoch=False, prog_bar=True)
        for task in DEFAULT_LOSS_WEIGHTS:
            self.log(f"{stage}/loss_{task}", losses[task], on_step=False, on_epoch=True, batch_size=batch_size)
        self._update_metrics(stage, out, batch)
        if stage != "train":
            self._collect(out, batch)
        return losses["total"]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        out = self.net(batch["frames"], batch["roi"])
        result = {k: out[k] for k in TABLE_OUTPUTS}
        if "clip_index" in batch:
            result["clip_index"] = batch["clip_index"]
        return result

    # -- epoch ends ----------------------------------------------------------------------------------------
    def _collect(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> None:
        buf = self._eval_buffer
        for mask_key, pred, true, name in (
            ("expression_mask", out["expression_logits"].argmax(1), batch["expression"], "expression"),
            ("stress_mask", out["stress_logits"].argmax(1), batch["stress"], "stress"),
        ):
            m = batch[mask_key].cpu().numpy()
            buf[f"{name}_pred"].append(pred.detach().cpu().numpy()[m])
            buf[f"{name}_true"].append(true.cpu().numpy()[m])
        m = batch["hr_mask"].cpu().numpy()
        buf["hr_pred_bpm"].append(out["hr_bpm"].detach().cpu().numpy()[m])
        buf["hr_true_bpm"].append(batch["hr_bpm"].cpu().numpy()[m])

    def _finish_epoch(self, stage: str) -> None:
        for task in ("expression", "hr", "stress"):
            collection = self.metrics[f"{stage}_{task}"]
            if any(metric.update_called for metric in collection.values()):
                values = collection.compute()
                self.log_dict({k: v.float() for k, v in values.items()}, prog_bar=stage != "train")
            collection.reset()
        if stage != "train":
            self.last_eval_outputs[stage] = {k: np.concatenate(v) for k, v in self._eval_buffer.items()}
            self._eval_buffer.clear()

    def on_train_epoch_end(self) -> None:
        self._finish_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._finish_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._finish_epoch("test")

    def on_validation_epoch_start(self) -> None:
        self._eval_buffer.clear()

    def on_test_epoch_start(self) -> None:
        self._eval_buffer.clear()

    # -- optimisation --------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=self.hparams.lr,
            total_steps=max(1, int(self.trainer.estimated_stepping_batches)),
            pct_start=0.15,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
