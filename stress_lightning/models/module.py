"""The multi-task LightningModule: masked per-task losses, fixed metric names, evaluation outputs for plots."""

from __future__ import annotations

import warnings
from collections import defaultdict
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, Metric, MetricCollection, PearsonCorrCoef
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
    MulticlassSpecificity,
)

from stress_lightning.data.taxonomy import BASIC_EXPRESSIONS, STRESS_LEVELS, check_classes
from stress_lightning.models.losses import hrv_log_loss, masked_mean, neg_pearson_loss, spectral_hr_loss
from stress_lightning.models.metrics import BalancedAccuracy, BatchWeightedMeans
from stress_lightning.models.net import MultiTaskNet
from stress_lightning.models.outputs import TABLE_OUTPUTS

STAGES = ("train", "val", "test")
TRAIN_EPOCH_STATE_KEY = "stress_lightning.train_epoch_metrics"
TASKS = ("expression", "hr", "stress")
EVAL_OUTPUT_KEYS = ("expression_pred", "expression_true", "stress_pred", "stress_true", "hr_pred_bpm", "hr_true_bpm")
# Per task, the keys of `last_eval_outputs` that hold its labelled samples (and share its sample order).
_EVAL_TASK_KEYS = {
    "expression": ("expression_pred", "expression_true"),
    "stress": ("stress_pred", "stress_true"),
    "hr": ("hr_pred_bpm", "hr_true_bpm"),
}
# A clip's place in the evaluation: corpus_index * ORDER_STRIDE + clip_index (clip_index is per corpus dataset).
ORDER_STRIDE = 1 << 40
# `ppg`: the negative-Pearson waveform loss of the rPPG pulse against a reference pulse (PPG/BVP) where one exists.
DEFAULT_LOSS_WEIGHTS = {"expression": 1.0, "hr": 1.0, "hrv": 0.3, "stress": 1.0, "ppg": 0.5}
LOSS_WEIGHTINGS = ("fixed", "uncertainty")
# Keyword inputs of `MultiTaskNet.forward` a batch may carry beyond frames and roi.
NET_BATCH_INPUTS = ("personal", "personal_mask", "body", "body_mask", "landmarks", "landmarks_mask")
# Epoch-mean losses, logged as `{stage}/{name}`: the weighted total and each task's.
LOSS_NAMES = ("loss", *(f"loss_{task}" for task in DEFAULT_LOSS_WEIGHTS))


def task_metrics(num_expressions: int, num_stress: int) -> dict[str, MetricCollection]:
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


def _metric_key(stage: str, scope: str, task: str) -> str:
    """ModuleDict key of a metric collection ('.' is not allowed there; corpus names may hold '-')."""
    return f"{stage}_{scope}_{task}" if scope else f"{stage}_{task}"


def _distributed() -> bool:
    """True inside a process group of more than one rank (DDP, FSDP: torchmetrics syncs over the same group)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _any_rank(flags: list[bool], device: torch.device) -> list[bool]:
    """Each flag OR-ed over every rank (unchanged in a single process): one all-reduce for all of them."""
    if not flags or not _distributed():
        return list(flags)
    tensor = torch.tensor([int(f) for f in flags], dtype=torch.int32, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return [bool(v) for v in tensor.tolist()]


def _compute(metric: Metric | MetricCollection, updated_here: bool) -> Any:
    """`metric.compute()` (over every rank under DDP), quiet where only other ranks updated it."""
    with warnings.catch_warnings():
        if not updated_here:
            # This rank's states are empty; the synced ones are not.
            warnings.filterwarnings("ignore", message=r".*was called before the ``update`` method")
        return metric.compute()


def _gather_eval_buffers(buffer: dict[str, list[np.ndarray]]) -> list[dict[str, list[np.ndarray]]]:
    """Every rank's evaluation buffer, in rank order (just this one in a single process)."""
    if not _distributed():
        return [buffer]
    gathered: list[Any] = [None] * dist.get_world_size()
    # Variable lengths per rank and small arrays (a few numbers per clip): pickled objects are the simple way.
    dist.all_gather_object(gathered, dict(buffer))
    return gathered


def _merge_eval_buffers(buffers: list[dict[str, list[np.ndarray]]]) -> tuple[dict[str, np.ndarray], int, int]:
    """(`last_eval_outputs` of a stage, samples evaluated, samples evaluated more than once) from every rank's
    buffer. Each task's arrays are put back into dataset order where every sample says where it is (`clip_index`),
    so a plot over clips reads as on one process whatever the number of ranks."""

    def joined(key: str) -> np.ndarray:
        parts = [part for b in buffers for part in b.get(key, [])]
        return np.concatenate(parts) if parts else np.empty(0)

    outputs = {key: joined(key) for key in EVAL_OUTPUT_KEYS}
    for task, keys in _EVAL_TASK_KEYS.items():
        order = joined(f"{task}_order").astype(np.int64)
        if len(order) == len(outputs[keys[0]]) and len(order) and (order >= 0).all():
            index = np.argsort(order, kind="stable")
            for key in keys:
                outputs[key] = outputs[key][index]
            order = order[index]
        # Each sample's place (corpus_index * 2**40 + clip_index, -1 unknown), aligned with the task's arrays: what
        # per-group metrics (tracking.fairness) map back to the items' attributes.
        outputs[f"{task}_order"] = order if len(order) == len(outputs[keys[0]]) else np.full(len(outputs[keys[0]]), -1)
    # One `order` entry per evaluated sample: their count is the samples evaluated.
    seen = joined("order")
    repeated = int(len(seen) - len(np.unique(seen))) if len(seen) and (seen >= 0).all() else 0
    return outputs, len(seen), repeated


class MultiTaskStressModule(pl.LightningModule):
    """Expression, heart rate/HRV (rPPG, against ECG) and stress from one face clip.

    Args:
        net: keyword arguments for `MultiTaskNet` (backbone and head names and their settings).
        expression_classes, stress_levels: the run's taxonomy (linked from the data module); head sizes follow
            it and the class names travel with the checkpoint and the registered model.
        fps, roi_frames, face_frames, face_size, roi_size: clip geometry, linked from the data module.
        face_pipeline: how the data module found and framed faces (`face_span_s`, `face_margin`, `detector`,
            `detect_every`), linked from it and stored with the model so inference on raw video repeats it.
        loss_weights: weight per task (`expression`, `hr`, `hrv`, `stress`, `ppg`); a missing task keeps its default;
            0 switches a task off.
        loss_weighting: "fixed" (the weighted sum of `loss_weights`) or "uncertainty": learned homoscedastic
            uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018): each task with a non-zero weight gets a
            learned log-variance s and contributes exp(-s) * weight * loss + s, so the balance between tasks of
            different scales is learned instead of tuned. The weights exp(-s) are logged as
            `train/uncertainty_weight/<task>` at each epoch's end.
        lr, weight_decay: AdamW settings; the learning rate follows a one-cycle cosine schedule.
        label_smoothing: for the expression and stress cross-entropies.
        hr_sigma_bpm: width of the Gaussian target of the spectral heart-rate loss.
        corpora: the corpus names of a multi-corpus run (linked from `MixedDataModule.corpus_names`); with two or
            more, every metric is also logged per corpus as `{stage}/{corpus}/{name}` next to the pooled
            `{stage}/{name}`.

    Batches: a dict of tensors (one corpus), or a dict `{corpus: batch}` (the training `CombinedLoader` of a
    multi-corpus run). Each sample carries only its own labels with masks; every task's loss is the mean over
    the samples that carry its label, pooled over the corpora of the step. Samples without video
    (`personal` physiology only, SWELL-KW) go through the stress head alone.
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
        face_pipeline: dict[str, Any] | None = None,
        loss_weights: dict[str, float] | None = None,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        label_smoothing: float = 0.05,
        hr_sigma_bpm: float = 3.0,
        corpora: list[str] | None = None,
        loss_weighting: str = "fixed",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"model.loss_weighting must be one of {list(LOSS_WEIGHTINGS)}, got {loss_weighting!r}")
        unknown = set(loss_weights or {}) - set(DEFAULT_LOSS_WEIGHTS)
        if unknown:
            raise ValueError(
                f"model.loss_weights: unknown task(s) {sorted(unknown)}; known: {list(DEFAULT_LOSS_WEIGHTS)}"
            )
        self.loss_weights = {**DEFAULT_LOSS_WEIGHTS, **(loss_weights or {})}
        negative = {k: v for k, v in self.loss_weights.items() if not v >= 0}
        if negative:
            raise ValueError(f"model.loss_weights must be >= 0, got {negative}")
        # One learned log-variance per weighted task (Kendall et al. 2018); empty with fixed weighting.
        self.log_variances = nn.ParameterDict(
            {task: nn.Parameter(torch.zeros(())) for task, w in self.loss_weights.items() if w > 0}
            if loss_weighting == "uncertainty"
            else {}
        )
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
        self.corpora = list(corpora or [])
        if len(set(self.corpora)) != len(self.corpora) or any("/" in c or not c for c in self.corpora):
            raise ValueError(f"model.corpora: names must be unique, non-empty and without '/', got {self.corpora}")
        # Pooled metrics under `{stage}/`, per-corpus ones under `{stage}/{corpus}/` when there are several.
        scopes = [""] + (self.corpora if len(self.corpora) > 1 else [])
        self.metrics = nn.ModuleDict(
            {
                _metric_key(stage, scope, task): collection.clone(prefix=f"{stage}/{scope + '/' if scope else ''}")
                for stage in STAGES
                for scope in scopes
                for task, collection in task_metrics(len(self.expression_names), len(self.stress_names)).items()
            }
        )
        # Epoch means of the losses (LOSS_NAMES) weighted by batch size, computed and logged at the epoch's end with
        # the metrics, exact over ranks that evaluate different numbers of samples (the unrepeated evaluation
        # sampler). Not Lightning's `self.log(..., on_epoch=True, sync_dist=True)` from the steps: its mean floors an
        # integer sample count then (Lightning issue #21859: with 8 and 7 clips on two ranks every loss came out 15/14
        # too high), and at the end of a training epoch its progress bar all-reduces such values on rank 0 alone,
        # before this module's epoch-end collectives run on every rank, which then hang (Lightning issue #21264).
        self.loss_means = nn.ModuleDict({f"{stage}_losses": BatchWeightedMeans(len(LOSS_NAMES)) for stage in STAGES})
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
    def _run(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The network on one corpus' batch: the whole network on clips, the stress head on physiology alone."""
        if "frames" in batch:
            return self.net(batch["frames"], batch["roi"], **{k: batch[k] for k in NET_BATCH_INPUTS if k in batch})
        return self.net.stress_from_personal(batch["personal"], batch["personal_mask"])

    def _sample_losses(
        self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per task: (loss per sample [B], mask [B]); tasks the batch cannot have (no video) are left out."""
        smoothing = self.hparams.label_smoothing
        losses = {
            "stress": (
                F.cross_entropy(out["stress_logits"], batch["stress"], reduction="none", label_smoothing=smoothing),
                batch["stress_mask"],
            )
        }
        if "expression_logits" not in out:
            return losses
        if "expression_soft" in batch:
            # CutMix/MixUp targets (data.transforms.ExpressionMix), smoothed like the hard ones.
            soft = batch["expression_soft"]
            soft = soft * (1 - smoothing) + smoothing / soft.shape[1]
            per_sample = -(soft * F.log_softmax(out["expression_logits"], dim=1)).sum(dim=1)
        else:
            per_sample = F.cross_entropy(
                out["expression_logits"], batch["expression"], reduction="none", label_smoothing=smoothing
            )
        # Auxiliary expression classifiers (multi-stage supervision, the face and body classifiers before their late
        # fusion), each on the samples it can see, added to the expression loss with its weight.
        mask_keys = self.net.aux_mask_keys()
        for name, weight in self.net.aux_loss_weights().items():
            if name not in out:
                continue
            aux_mask = batch["expression_mask"]
            if name in mask_keys:
                aux_mask = aux_mask & batch[mask_keys[name]]
            aux = F.cross_entropy(out[name], batch["expression"], reduction="none", label_smoothing=smoothing)
            per_sample = per_sample + weight * torch.where(aux_mask, aux, torch.zeros_like(aux))
        losses["expression"] = (per_sample, batch["expression_mask"])
        if "pulse_spectrum" not in out:
            return losses  # a network without the rPPG stream (an ablation)
        if "ppg" in batch:
            # Only where the ROI is real video (a still image's ROI is zeros; it has no ppg either).
            roi_real = batch["roi_mask"] if "roi_mask" in batch else torch.ones_like(batch["ppg_mask"])
            losses["ppg"] = (neg_pearson_loss(out["pulse"], batch["ppg"]), batch["ppg_mask"] & roi_real)
        hr = spectral_hr_loss(
            out["pulse_spectrum"], batch["hr_bpm"], self.net.bins_bpm, sigma_bpm=self.hparams.hr_sigma_bpm
        ) + F.smooth_l1_loss(out["hr_bpm"] / 10.0, batch["hr_bpm"] / 10.0, reduction="none")
        losses["hr"] = (hr, batch["hr_mask"])
        hrv = hrv_log_loss(out["rmssd_ms"], out["lf_hf_ratio"], batch["rmssd_ms"], batch["lf_hf_ratio"])
        losses["hrv"] = (hrv, batch["hrv_mask"])
        return losses

    def _pooled_losses(self, parts: list[dict[str, tuple[torch.Tensor, torch.Tensor]]]) -> dict[str, torch.Tensor]:
        """Each task's masked mean over all samples of the step (every corpus), and the weighted total."""
        anchor = parts[0]["stress"][0]
        losses = {}
        for task in DEFAULT_LOSS_WEIGHTS:
            pieces = [p[task] for p in parts if task in p]
            if not pieces:
                # No corpus of this step can have the task: a zero still connected to the graph.
                losses[task] = anchor.sum() * 0.0
                continue
            losses[task] = masked_mean(torch.cat([v for v, _ in pieces]), torch.cat([m for _, m in pieces]))
        if not self.log_variances:
            losses["total"] = sum(self.loss_weights[k] * v for k, v in losses.items())
            return losses
        total = anchor.sum() * 0.0
        for task, value in losses.items():
            s = self.log_variances[task] if task in self.log_variances else None
            present = any(bool(m.any()) for p in parts if task in p for m in [p[task][1]])
            if s is None:
                total = total + self.loss_weights[task] * value
                continue
            if not present:
                # A task absent from the step adds nothing: its log-variance term alone would drift to -inf. The zero
                # keeps the parameter in the graph, so every rank of a DDP step reduces the same parameters.
                total = total + self.loss_weights[task] * value + 0.0 * s
                continue
            total = total + torch.exp(-s) * self.loss_weights[task] * value + s
        losses["total"] = total
        return losses

    # -- steps ---------------------------------------------------------------------------------------------
    def _corpus_batches(self, batch: dict[str, Any]) -> list[tuple[str | None, dict[str, torch.Tensor]]]:
        """(corpus name or None, batch) pairs: a `{corpus: batch}` dict of a multi-corpus training step, or one
        batch (tagged with `corpus_index` by `MixedDataModule` in evaluation)."""
        if batch and any(isinstance(v, dict) for v in batch.values()):
            # `max_size` mode: a corpus that ran out yields None and drops out of the step.
            return [(name, sub) for name, sub in batch.items() if isinstance(sub, dict) and sub]
        name = None
        if "corpus_index" in batch and self.corpora:
            name = self.corpora[int(batch["corpus_index"][0])]
        return [(name, batch)]

    def _update_metrics(
        self, stage: str, scope: str, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
    ) -> None:
        updates = [("stress", "stress_logits", "stress", "stress_mask")]
        if "expression_logits" in out:
            updates.append(("expression", "expression_logits", "expression", "expression_mask"))
        if "hr_bpm" in out:
            updates.append(("hr", "hr_bpm", "hr_bpm", "hr_mask"))
        for task, output, target, mask_key in updates:
            m = batch[mask_key]
            if m.any():
                self.metrics[_metric_key(stage, scope, task)].update(out[output][m].detach(), batch[target][m])

    def _step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        parts = []
        batch_size = 0
        for corpus, sub in self._corpus_batches(batch):
            out = self._run(sub)
            parts.append(self._sample_losses(out, sub))
            batch_size += int(sub["stress_mask"].shape[0])
            self._update_metrics(stage, "", out, sub)
            if corpus is not None and len(self.corpora) > 1:
                self._update_metrics(stage, corpus, out, sub)
            if stage != "train":
                self._collect(out, sub)
        losses = self._pooled_losses(parts)
        # The fixed name `{stage}/loss` is the epoch mean (logged at the epoch's end, over every rank's samples);
        # training also shows the running step loss, this rank's own (a collective per step for a progress-bar figure
        # is not worth it).
        values = torch.stack([losses["total"], *(losses[task] for task in DEFAULT_LOSS_WEIGHTS)])
        self.loss_means[f"{stage}_losses"].update(values, batch_size)
        if stage == "train":
            self.log("train/loss_step", losses["total"], on_step=True, on_epoch=False, prog_bar=True)
        return losses["total"]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        if "frames" not in batch:
            raise ValueError("predict: the batch has no video (physiology-only corpora have nothing to predict from)")
        out = self.net(batch["frames"], batch["roi"], **{k: batch[k] for k in NET_BATCH_INPUTS if k in batch})
        result = {k: out[k] for k in TABLE_OUTPUTS if k in out}
        if "clip_index" in batch:
            result["clip_index"] = batch["clip_index"]
        return result

    # -- epoch ends ----------------------------------------------------------------------------------------
    def _collect(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> None:
        buf = self._eval_buffer
        size = int(batch["stress_mask"].shape[0])
        # Where each sample sits in the evaluation (-1: unknown), to restore dataset order across ranks.
        order = np.full(size, -1, dtype=np.int64)
        if "clip_index" in batch:
            corpus = batch["corpus_index"].cpu().numpy().astype(np.int64) if "corpus_index" in batch else 0
            order = corpus * ORDER_STRIDE + batch["clip_index"].cpu().numpy().astype(np.int64)
        buf["order"].append(order)
        tasks = [("stress_mask", "stress_logits", "stress")]
        if "expression_logits" in out:
            tasks.append(("expression_mask", "expression_logits", "expression"))
        for mask_key, logits, name in tasks:
            m = batch[mask_key].cpu().numpy()
            buf[f"{name}_pred"].append(out[logits].argmax(1).detach().cpu().numpy()[m])
            buf[f"{name}_true"].append(batch[name].cpu().numpy()[m])
            buf[f"{name}_order"].append(order[m])
        if "hr_bpm" not in out:
            return
        m = batch["hr_mask"].cpu().numpy()
        buf["hr_pred_bpm"].append(out["hr_bpm"].detach().cpu().numpy()[m])
        buf["hr_true_bpm"].append(batch["hr_bpm"].cpu().numpy()[m])
        buf["hr_order"].append(order[m])

    def _finish_epoch(self, stage: str) -> None:
        pairs = [
            (scope, _metric_key(stage, scope, task))
            for scope in ["", *(self.corpora if len(self.corpora) > 1 else [])]
            for task in TASKS
        ]
        loss_means = self.loss_means[f"{stage}_losses"]
        local = [any(metric.update_called for metric in self.metrics[key].values()) for _, key in pairs]
        local.append(loss_means.update_called)
        # Under DDP, compute() is a collective (torchmetrics gathers the states of every rank): a metric is computed
        # on every rank when any rank updated it, else a rank that saw no labelled sample of a task would skip the
        # gather the others wait in. Then every rank logs the same keys in the same order.
        anywhere = _any_rank(local, self.device)
        for (scope, key), updated, here in zip(pairs, anywhere[:-1], local[:-1], strict=True):
            collection = self.metrics[key]
            if updated:
                values = _compute(collection, here)
                self._log_synced({k: v.float() for k, v in values.items()}, prog_bar=stage != "train" and not scope)
            collection.reset()
        if anywhere[-1]:
            names = [f"{stage}/{name}" for name in LOSS_NAMES]
            means = dict(zip(names, _compute(loss_means, local[-1]), strict=True))
            self._log_synced({f"{stage}/loss": means.pop(f"{stage}/loss")}, prog_bar=True)
            self._log_synced(means, prog_bar=False)
        loss_means.reset()
        if stage != "train":
            # Every key, empty where no batch had the task (a physiology-only corpus has no expression or HR); under
            # DDP every rank's samples, so the plots (drawn on rank 0) show each evaluated sample once.
            outputs, samples, repeated = _merge_eval_buffers(_gather_eval_buffers(self._eval_buffer))
            self.last_eval_outputs[stage] = outputs
            self._eval_buffer.clear()
            if _distributed() and not self.trainer.sanity_checking:
                rank_zero_info(f"{stage}: {samples} samples evaluated over {dist.get_world_size()} processes")
            if repeated:
                rank_zero_warn(
                    f"{stage}: {repeated} of {samples} samples were evaluated more than once (a distributed sampler "
                    "that pads ranks with repeated samples); the metrics count them twice"
                )

    def _log_synced(self, values: dict[str, torch.Tensor], prog_bar: bool) -> None:
        # The values are already the same on every rank (computed over all of them): sync_dist only tells Lightning
        # so (it warns about epoch-level values without it), and one value per rank of equal weight averages to itself.
        self.log_dict(values, prog_bar=prog_bar, sync_dist=True, batch_size=1)

    def on_train_epoch_end(self) -> None:
        self._finish_epoch("train")
        if self.log_variances:
            weights = {f"train/uncertainty_weight/{k}": torch.exp(-v.detach()) for k, v in self.log_variances.items()}
            self._log_synced(weights, prog_bar=False)

    def on_validation_epoch_end(self) -> None:
        self._finish_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._finish_epoch("test")

    # -- a fit resumed in the middle of an epoch ---------------------------------------------------------------
    # The training epoch's metrics and loss means are sums over its batches: a checkpoint keeps them, so an epoch
    # resumed mid-way (Lightning then skips on_train_epoch_start, which would reset them) ends with the values of the
    # uninterrupted epoch, not with those of its last few batches. Plain tensors: read with weights_only=True.
    def _train_epoch_metrics(self) -> dict[str, Metric]:
        found: dict[str, Metric] = {"loss_means.train_losses": self.loss_means["train_losses"]}
        for key, collection in self.metrics.items():
            if key.startswith("train_"):
                found.update({f"metrics.{key}.{name}": metric for name, metric in collection.items(keep_base=True)})
        return found

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[TRAIN_EPOCH_STATE_KEY] = {
            name: {
                "update_count": int(metric._update_count),
                "state": {attr: getattr(metric, attr) for attr in metric._defaults},
            }
            for name, metric in self._train_epoch_metrics().items()
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get(TRAIN_EPOCH_STATE_KEY)
        if not saved:
            return
        for name, metric in self._train_epoch_metrics().items():
            entry = saved.get(name)
            if entry is None:
                continue
            for attr, value in entry["state"].items():
                if isinstance(value, list):
                    value = [v.to(self.device) for v in value]
                elif isinstance(value, torch.Tensor):
                    value = value.to(self.device)
                setattr(metric, attr, value)
            metric._update_count = int(entry["update_count"])
            metric._computed = None

    # An epoch cut short (an exception, a KeyboardInterrupt caught by Lightning) leaves its updates behind.
    def on_train_epoch_start(self) -> None:
        self.loss_means["train_losses"].reset()

    def on_validation_epoch_start(self) -> None:
        self._eval_buffer.clear()
        self.loss_means["val_losses"].reset()

    def on_test_epoch_start(self) -> None:
        self._eval_buffer.clear()
        self.loss_means["test_losses"].reset()

    # -- optimisation --------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        # The learned task log-variances are not weights to shrink: no decay on them.
        uncertainty = {id(p) for p in self.log_variances.parameters()}
        groups = [{"params": [p for p in self.parameters() if id(p) not in uncertainty]}]
        if uncertainty:
            groups.append({"params": list(self.log_variances.parameters()), "weight_decay": 0.0})
        optimizer = torch.optim.AdamW(groups, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=self.hparams.lr,
            total_steps=max(1, int(self.trainer.estimated_stepping_batches)),
            pct_start=0.15,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_start(self) -> None:
        # A fit resumed with more (or fewer) epochs restores the one-cycle schedule sized for the old run, which then
        # fails a few steps past its end. Stretch its last (annealing) phase to the new total instead: the annealing
        # is re-spread from that phase's start, so the rate steps up a little and then reaches its floor at the new end.
        scheduler = self.lr_schedulers()
        total = max(1, int(self.trainer.estimated_stepping_batches))
        if not isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR) or scheduler.total_steps == total:
            return
        phases = getattr(scheduler, "_schedule_phases", None)
        if not phases or total <= scheduler.last_epoch:
            return
        rank_zero_info(
            f"Resumed fit: the one-cycle learning-rate schedule ends at step {total} instead of {scheduler.total_steps}"
        )
        scheduler.total_steps = total
        phases[-1]["end_step"] = float(total - 1)
