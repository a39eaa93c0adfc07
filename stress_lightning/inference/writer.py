"""Writes `predict` outputs to a CSV a person can open: one row per clip, names instead of class indices."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from stress_lightning.models.outputs import TABLE_OUTPUTS, outputs_table


def predictions_frame(
    outputs: dict[str, torch.Tensor], expression_names: Sequence[str], stress_names: Sequence[str]
) -> pd.DataFrame:
    """One row per clip (`clip_index` first when present), the same columns the registered pyfunc model returns."""
    table = outputs_table({k: outputs[k].float().cpu().numpy() for k in TABLE_OUTPUTS}, expression_names, stress_names)
    if "clip_index" in outputs:
        table.insert(0, "clip_index", outputs["clip_index"].cpu().numpy())
    return table


class PredictionCSVWriter(BasePredictionWriter):
    """Collects every predict batch and writes `<output_dir>/predictions.csv` at the end of `predict`.

    `output_dir` defaults to `<trainer.default_root_dir>/predict`.
    """

    def __init__(self, output_dir: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.output_dir = Path(output_dir) if output_dir is not None else None

    def write_on_epoch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        merged = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
        output_dir = self.output_dir or Path(trainer.default_root_dir) / "predict"
        output_dir.mkdir(parents=True, exist_ok=True)
        suffix = "" if trainer.world_size == 1 else f"_rank{trainer.global_rank}"
        path = output_dir / f"predictions{suffix}.csv"
        predictions_frame(merged, pl_module.expression_names, pl_module.stress_names).to_csv(path, index=False)
        print(f"wrote {len(merged['hr_bpm'])} predictions to {path}")
