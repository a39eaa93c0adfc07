"""The network's outputs as a table a person (or a DataFrame consumer) reads: one row per clip, class names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

TABLE_OUTPUTS = ("expression_probs", "hr_bpm", "rmssd_ms", "lf_hf_ratio", "stress_probs")


def outputs_table(
    outputs: Mapping[str, np.ndarray], expression_names: Sequence[str], stress_names: Sequence[str]
) -> pd.DataFrame:
    """Columns `expression`, `expression_prob_<name>`, `hr_bpm`, `rmssd_ms`, `lf_hf_ratio`, `stress_level`,
    `stress_prob_<name>`: what `predict` writes and what the registered pyfunc model returns."""
    expression_probs = np.asarray(outputs["expression_probs"])
    stress_probs = np.asarray(outputs["stress_probs"])
    if expression_probs.shape[1] != len(expression_names) or stress_probs.shape[1] != len(stress_names):
        raise ValueError(
            f"net outputs {expression_probs.shape[1]} expression / {stress_probs.shape[1]} stress classes but the "
            f"labels name {len(expression_names)} / {len(stress_names)}"
        )
    table: dict[str, Any] = {"expression": np.asarray(expression_names)[expression_probs.argmax(axis=1)]}
    for i, name in enumerate(expression_names):
        table[f"expression_prob_{name}"] = expression_probs[:, i]
    for key in ("hr_bpm", "rmssd_ms", "lf_hf_ratio"):
        # A network without the rPPG stream (an ablation) has no physiology: NaN, not a made-up number.
        value = outputs.get(key)
        table[key] = np.asarray(value).reshape(-1) if value is not None else np.full(len(expression_probs), np.nan)
    table["stress_level"] = np.asarray(stress_names)[stress_probs.argmax(axis=1)]
    for i, name in enumerate(stress_names):
        table[f"stress_prob_{name}"] = stress_probs[:, i]
    return pd.DataFrame(table)
