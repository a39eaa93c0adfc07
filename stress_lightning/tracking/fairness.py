"""Per-group evaluation: expression and stress accuracy and macro-F1 and heart-rate MAE for each group of a
sample attribute (skin tone, gender, ...), and the largest gap between groups, as MLflow metrics and a table.

Groups come from the items' `attributes` (`Item.attributes`: the synthetic corpus writes `skin_tone` and `gender`,
a manifest may have any column). `group_of` normalises a value to its group:

- `skin_tone` -> `I-II`, `III-IV` or `V-VI` (Fitzpatrick types in pairs). Accepted: Fitzpatrick labels (`I`..`VI`,
  `type III`, `Fitzpatrick 4`, `FST-V`), integers `1`..`6` (Fitzpatrick types), the pair names themselves, and numbers
  with a decimal point in [0, 5]: the synthetic renderer's continuous tone (`data.render.Identity.skin_tone`, 0 = type
  I ... 5 = type VI, blended in between), which counts as its nearest type (`round(tone) + 1`).
- `gender` -> lower-case as given (`female`, `male`, any other value kept).
- any other attribute -> the value as given (stripped).
An empty value, a marker of an unknown one (`unknown`, `n/a`, `?`, ...) or a skin tone that is none of the above
has no group: its samples are left out of that attribute's figures (the table counts them).

Metric names (MLflow), per evaluation stage (`val`, `test`):
- `{stage}/fairness/{attribute}/{group}/{metric}` for each group with at least `min_samples` labelled samples of
  the metric's task (smaller groups are in the table only);
- `{stage}/fairness/{attribute}/gap/{metric}`: max - min of the metric over those groups (at least two of them);
for metric in `expression_acc`, `expression_f1`, `stress_acc`, `stress_f1` (macro-F1 over the classes present in
the group's labels or predictions, as the module's own F1) and `hr_mae_bpm`. `{group}` is the group name with
every character other than letters, digits, `_` and `-` replaced by `_` (the `metric_name` column of the table;
`III-IV`, `female` stay as they are); a group called `gap` becomes `gap_`, and names that clash after the
replacement get `_2`, `_3`, ... in sorted order of the groups.

Artifacts: `fairness/{stage}_fairness.md` (the table with a note on left-out groups) and `fairness/{stage}_fairness.csv`
(one row per attribute and group, `kind=group`, and one per attribute with the gaps, `kind=gap`, whose `n_<task>`
columns count the groups compared).

Contract with the LightningModule: `last_eval_outputs[stage]` (see `tracking.callbacks`) also holds
`expression_order`, `stress_order`, `hr_order`: int64, aligned with that task's arrays, each sample's place
`corpus_index * 2**40 + clip_index` (-1: unknown). With the data module: `clip_attributes(split, corpus_index)`,
one dict of attributes per clip index of that corpus' split (`ClipDataModule`: corpus index 0; `MixedDataModule`:
the corpus' place in `corpus_names`).
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error

from stress_lightning.tracking.callbacks import RunAwareCallback, find_mlflow_logger

ARTIFACT_DIR = "fairness"
GAP = "gap"
DEFAULT_ATTRIBUTES = ("skin_tone", "gender")
# Metric name -> the task whose labelled samples it is computed on.
FAIRNESS_METRICS: dict[str, str] = {
    "expression_acc": "expression",
    "expression_f1": "expression",
    "stress_acc": "stress",
    "stress_f1": "stress",
    "hr_mae_bpm": "hr",
}
TASKS = ("expression", "stress", "hr")
# Each task's (prediction, truth) arrays in `last_eval_outputs[stage]`; `{task}_order` says where each sample is.
_TASK_ARRAYS = {
    "expression": ("expression_pred", "expression_true"),
    "stress": ("stress_pred", "stress_true"),
    "hr": ("hr_pred_bpm", "hr_true_bpm"),
}
# The module's `_ORDER_STRIDE`: order = corpus_index * stride + clip_index.
ORDER_STRIDE = 1 << 40
SKIN_TONE_GROUPS = ("I-II", "III-IV", "V-VI")
_UNKNOWN_VALUES = frozenset({"", "unknown", "unk", "na", "n/a", "nan", "none", "null", "?", "-", "unspecified"})
_ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6}
# Words around a Fitzpatrick type that say nothing more: "Fitzpatrick type III", "FST-4", "skin type 2".
_FITZPATRICK_WORDS = re.compile(r"\b(fitzpatrick|fst|skin|type|phototype)\b|[\s_:-]+")
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_STAGE_SPLIT = {"val": "val", "test": "test"}


# -- groups ----------------------------------------------------------------------------------------------------
def _fitzpatrick_type(text: str) -> int | None:
    """Fitzpatrick type 1..6 of a label or number, or None."""
    lowered = text.strip().lower()
    pairs = {name.lower(): 2 * k + 1 for k, name in enumerate(SKIN_TONE_GROUPS)}
    if lowered.replace(" ", "") in pairs:
        return pairs[lowered.replace(" ", "")]
    if re.fullmatch(r"[+-]?(\d+\.\d*|\.\d+)", lowered):
        # A decimal number: the renderer's continuous tone (0 = type I ... 5 = type VI), its nearest type.
        tone = float(lowered)
        return math.floor(tone + 0.5) + 1 if 0.0 <= tone <= 5.0 else None
    core = _FITZPATRICK_WORDS.sub("", lowered)
    if core.isdigit():
        return int(core) if 1 <= int(core) <= 6 else None
    return _ROMAN.get(core)


def group_of(attribute: str, value: str | float | None) -> str | None:
    """The group of one attribute value (rules in the module docstring), or None when it has none."""
    if value is None:
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        value = repr(value) if attribute == "skin_tone" else str(value)
    text = " ".join(str(value).split())
    if text.lower() in _UNKNOWN_VALUES:
        return None
    if attribute == "skin_tone":
        kind = _fitzpatrick_type(text)
        return None if kind is None else SKIN_TONE_GROUPS[(kind - 1) // 2]
    if attribute == "gender":
        return text.lower()
    return text


def metric_names(groups: Sequence[str]) -> dict[str, str]:
    """Group -> the name used in MLflow metric keys: letters, digits, `_` and `-` kept, anything else `_`
    (no `.`, so no `.`/`..` path segments; MLflow and Lightning's logger accept the rest), cut to 64 characters;
    `gap` (the gap's own key) becomes `gap_`; names that clash get `_2`, `_3`, ... in sorted group order."""
    names: dict[str, str] = {}
    used: set[str] = set()
    for group in sorted(set(groups)):
        base = re.sub(r"[^A-Za-z0-9_-]", "_", group)[:64] or "_"
        if base == GAP:
            base = f"{GAP}_"
        name, k = base, 1
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        names[group] = name
    return names


# -- the report -------------------------------------------------------------------------------------------------
def sample_attributes(
    outputs: Mapping[str, np.ndarray], clips: Mapping[int, Sequence[Mapping[str, str]]]
) -> dict[str, list[Mapping[str, str]]]:
    """Per task, the attributes of each of its samples (aligned with `outputs[<task>_pred]`), looked up by the
    sample's order (`{task}_order`) in `clips` (corpus index -> one attribute dict per clip index). A sample of
    unknown place (order -1) or of a corpus not in `clips` gets {}.

    Raises KeyError when `outputs` lacks a task's order and ValueError when an order does not fit the outputs or
    the clips: both are broken contracts, not missing data."""
    result: dict[str, list[Mapping[str, str]]] = {}
    for task, (pred_key, _) in _TASK_ARRAYS.items():
        size = len(outputs.get(pred_key, ()))
        if f"{task}_order" not in outputs:
            if size == 0:
                result[task] = []
                continue
            raise KeyError(f"last_eval_outputs lacks {task}_order (has {sorted(outputs)}): no sample -> clip mapping")
        order = np.asarray(outputs[f"{task}_order"], dtype=np.int64)
        if order.shape != (size,):
            raise ValueError(f"{task}_order has shape {order.shape}, {pred_key} has {size} samples")
        found: list[Mapping[str, str]] = []
        for place in order.tolist():
            corpus, clip = divmod(place, ORDER_STRIDE) if place >= 0 else (-1, -1)
            table = clips.get(corpus) if corpus >= 0 else None
            if table is None:
                found.append({})
                continue
            if clip >= len(table):
                raise ValueError(f"{task}_order: clip {clip} of corpus {corpus}, which has {len(table)} clips")
            found.append(table[clip])
        result[task] = found
    return result


def _task_figures(task: str, pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    if len(true) == 0:
        return {m: math.nan for m, t in FAIRNESS_METRICS.items() if t == task}
    if task == "hr":
        return {"hr_mae_bpm": float(mean_absolute_error(true, pred))}
    # Macro-F1 over the labels present in the group's truth or predictions (sklearn's default): what torchmetrics'
    # MulticlassF1Score(average="macro") of the module gives, which leaves out classes absent from both.
    return {
        f"{task}_acc": float(accuracy_score(true, pred)),
        f"{task}_f1": float(f1_score(true, pred, average="macro", zero_division=0.0)),
    }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


@dataclass
class FairnessReport:
    """Per-group figures and gaps.

    `table`: one row per (attribute, group): `attribute`, `group`, `metric_name` (its name in metric keys),
    `n_<task>` (labelled samples), the five metrics (NaN without samples). `gaps`: attribute -> metric -> max - min
    over the groups with at least `min_samples` samples of the metric's task (NaN with fewer than two);
    `compared`: attribute -> task -> those groups. `unknown`: attribute -> task -> samples without a group.
    """

    table: pd.DataFrame
    gaps: dict[str, dict[str, float]]
    compared: dict[str, dict[str, list[str]]]
    unknown: dict[str, dict[str, int]]
    min_samples: int
    attributes: tuple[str, ...] = field(default=DEFAULT_ATTRIBUTES)

    @property
    def empty(self) -> bool:
        """True when no sample has a group of any attribute."""
        return self.table.empty

    def metrics(self, stage: str) -> dict[str, float]:
        """MLflow metrics (names in the module docstring); finite values only."""
        found: dict[str, float] = {}
        for row in self.table.itertuples(index=False):
            for metric, task in FAIRNESS_METRICS.items():
                value = getattr(row, metric)
                if getattr(row, f"n_{task}") >= self.min_samples and math.isfinite(value):
                    found[f"{stage}/fairness/{row.attribute}/{row.metric_name}/{metric}"] = value
        for attribute, gaps in self.gaps.items():
            for metric, value in gaps.items():
                if math.isfinite(value):
                    found[f"{stage}/fairness/{attribute}/{GAP}/{metric}"] = value
        return found

    def to_frame(self) -> pd.DataFrame:
        """The table with a `kind` column: each attribute's `group` rows, then its `gap` row (whose `n_<task>`
        count the groups compared)."""
        columns = ["attribute", "kind", "group", "metric_name", *(f"n_{t}" for t in TASKS), *FAIRNESS_METRICS]
        parts = []
        for attribute, gaps in self.gaps.items():
            parts.append(self.table[self.table["attribute"] == attribute].assign(kind="group"))
            gap = {f"n_{task}": len(self.compared[attribute][task]) for task in TASKS}
            row = {"attribute": attribute, "kind": GAP, "group": GAP, "metric_name": GAP, **gap, **gaps}
            parts.append(pd.DataFrame([row]))
        if not parts:
            return pd.DataFrame(columns=columns)
        return pd.concat(parts, ignore_index=True)[columns]

    def to_csv(self) -> str:
        buffer = io.StringIO()
        self.to_frame().to_csv(buffer, index=False, float_format="%.6g")
        return buffer.getvalue()

    def to_markdown(self, stage: str) -> str:
        """A Markdown table per attribute: groups, then the gap; values of groups below `min_samples` are marked."""

        def cell(value: float, small: bool) -> str:
            text = "–" if not math.isfinite(value) else f"{value:.3f}"
            return f"{text}*" if small and math.isfinite(value) else text

        header = ["group", *(f"n {t}" for t in TASKS), *FAIRNESS_METRICS]
        lines = [
            f"# Fairness: {stage}",
            "",
            f"Per group of each attribute; the gap is max - min over the groups with at least {self.min_samples} "
            "labelled samples of the metric's task. `*`: fewer samples, shown but left out of the gap and of the "
            "metrics. Metric keys: `" + stage + "/fairness/<attribute>/<group>/<metric>` and `" + stage + "/fairness/"
            "<attribute>/gap/<metric>`. Accuracy and macro-F1 are fractions, HR MAE in bpm.",
        ]
        for attribute in self.attributes:
            rows = self.table[self.table["attribute"] == attribute]
            if rows.empty:
                continue
            lines += ["", f"## {attribute}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            for row in rows.itertuples(index=False):
                counts = [str(getattr(row, f"n_{t}")) for t in TASKS]
                values = [
                    cell(getattr(row, m), getattr(row, f"n_{t}") < self.min_samples)
                    for m, t in FAIRNESS_METRICS.items()
                ]
                name = row.group if row.group == row.metric_name else f"{row.group} (`{row.metric_name}`)"
                lines.append("| " + " | ".join([name, *counts, *values]) + " |")
            compared = [_count(len(self.compared[attribute][t]), "group") for t in TASKS]
            gaps = [cell(self.gaps[attribute][m], False) for m in FAIRNESS_METRICS]
            lines.append("| **gap** | " + " | ".join([*compared, *gaps]) + " |")
            unknown = {t: n for t, n in self.unknown[attribute].items() if n}
            if unknown:
                lines += ["", f"Samples without a {attribute} group, left out: {unknown}."]
        return "\n".join(lines) + "\n"


def fairness_report(
    outputs: Mapping[str, np.ndarray],
    attributes_per_sample: Mapping[str, Sequence[Mapping[str, str]]],
    attributes: Sequence[str] = DEFAULT_ATTRIBUTES,
    min_samples: int = 5,
) -> FairnessReport:
    """Per-group figures of one evaluation.

    Args:
        outputs: `last_eval_outputs[stage]`: `expression_pred/true`, `stress_pred/true` (class indices),
            `hr_pred_bpm/true_bpm` (bpm), each task's arrays aligned; a missing task counts as no samples.
        attributes_per_sample: task -> one attribute mapping per sample of that task (`sample_attributes`).
        attributes: the attributes to group by.
        min_samples: a group enters the gap (and the logged metrics) for a task with at least this many samples.
    """
    if min_samples < 1:
        raise ValueError(f"min_samples must be >= 1, got {min_samples}")
    rows: list[dict[str, Any]] = []
    gaps: dict[str, dict[str, float]] = {}
    compared: dict[str, dict[str, list[str]]] = {}
    unknown: dict[str, dict[str, int]] = {}
    arrays = {}
    for task, (pred_key, true_key) in _TASK_ARRAYS.items():
        pred, true = np.asarray(outputs.get(pred_key, [])), np.asarray(outputs.get(true_key, []))
        per_sample = attributes_per_sample.get(task, [])
        if not (len(pred) == len(true) == len(per_sample)):
            raise ValueError(
                f"{task}: {len(pred)} predictions, {len(true)} labels and {len(per_sample)} attribute entries"
            )
        arrays[task] = (pred, true, per_sample)
    for attribute in attributes:
        labels = {
            task: np.array([group_of(attribute, a.get(attribute)) for a in per_sample], dtype=object)
            for task, (_, _, per_sample) in arrays.items()
        }
        unknown[attribute] = {task: int(sum(g is None for g in labels[task])) for task in TASKS}
        groups = sorted({g for task in TASKS for g in labels[task] if g is not None})
        if not groups:
            continue
        names = metric_names(groups)
        figures: dict[str, dict[str, Any]] = {}
        for group in groups:
            row: dict[str, Any] = {"attribute": attribute, "group": group, "metric_name": names[group]}
            for task, (pred, true, _) in arrays.items():
                members = labels[task] == group
                row[f"n_{task}"] = int(members.sum())
                row.update(_task_figures(task, pred[members], true[members]))
            figures[group] = row
            rows.append(row)
        compared[attribute] = {task: [g for g in groups if figures[g][f"n_{task}"] >= min_samples] for task in TASKS}
        gaps[attribute] = {}
        for metric, task in FAIRNESS_METRICS.items():
            values = [figures[g][metric] for g in compared[attribute][task]]
            gaps[attribute][metric] = float(max(values) - min(values)) if len(values) >= 2 else math.nan
    columns = ["attribute", "group", "metric_name", *(f"n_{t}" for t in TASKS), *FAIRNESS_METRICS]
    table = pd.DataFrame(rows, columns=columns)
    return FairnessReport(table, gaps, compared, unknown, min_samples, tuple(attributes))


# -- the callback -----------------------------------------------------------------------------------------------
def corpus_indices(outputs: Mapping[str, np.ndarray]) -> list[int]:
    """The corpus indices the evaluated samples of known place come from, sorted."""
    found: set[int] = set()
    for task in TASKS:
        order = np.asarray(outputs.get(f"{task}_order", ()), dtype=np.int64)
        found.update((order[order >= 0] // ORDER_STRIDE).tolist())
    return sorted(found)


def clip_attributes_by_corpus(
    datamodule: Any, split: str, indices: Sequence[int]
) -> dict[int, Sequence[Mapping[str, str]]] | None:
    """Corpus index -> one attribute dict per clip index of `split` (`datamodule.clip_attributes(split,
    corpus_index)`, which `ClipDataModule` and `MixedDataModule` both have), for each of `indices`; None when the
    data module has no such method."""
    lookup = getattr(datamodule, "clip_attributes", None)
    if not callable(lookup):
        return None
    return {index: lookup(split, index) for index in indices}


class FairnessCallback(RunAwareCallback):
    """Per-group metrics and the largest gap between groups after evaluation, into the MLflow run.

    Args:
        attributes: item attributes to group by (letters, digits, `_`, `-`).
        stages: evaluation stages to report: `test` (after testing) and/or `val` (after each validation epoch
            outside the sanity check, and after `validate`).
        min_samples: the smallest group (labelled samples of a task) that enters the gap and the logged metrics.

    Names of metrics and artifacts: module docstring. A corpus without any of the attributes logs nothing and says
    so once per stage; a data module without `clip_attributes` likewise. Broken contracts (outputs without sample
    order, an order past the split's clips) raise: they are bugs, not data.
    """

    def __init__(
        self,
        attributes: Sequence[str] = DEFAULT_ATTRIBUTES,
        stages: Sequence[str] = ("test",),
        min_samples: int = 5,
    ) -> None:
        super().__init__()
        attributes = tuple(attributes)
        if not attributes or len(set(attributes)) != len(attributes):
            raise ValueError(f"FairnessCallback.attributes: give unique attribute names, got {list(attributes)}")
        bad = [a for a in attributes if not isinstance(a, str) or not _NAME.match(a)]
        if bad:
            raise ValueError(f"FairnessCallback.attributes: {bad} must be letters, digits, '_' or '-' (metric keys)")
        unknown = sorted(set(stages) - set(_STAGE_SPLIT))
        if unknown or not stages:
            raise ValueError(f"FairnessCallback.stages: {list(stages)}; choose from {sorted(_STAGE_SPLIT)}")
        if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 1:
            raise ValueError(f"FairnessCallback.min_samples must be an integer >= 1, got {min_samples!r}")
        self.attributes = attributes
        self.stages = tuple(stages)
        self.min_samples = min_samples
        self._said: set[tuple[str, str]] = set()
        self.last_report: dict[str, FairnessReport] = {}

    def _say_once(self, stage: str, what: str, message: str) -> None:
        if (stage, what) not in self._said:
            rank_zero_info(f"FairnessCallback: {stage}: {message}")
            self._said.add((stage, what))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._report(trainer, pl_module, "val")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._report(trainer, pl_module, "test")

    def _report(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage not in self.stages:
            return
        run = self._run(trainer)
        if run is None:
            return
        client, run_id = run
        outputs = getattr(pl_module, "last_eval_outputs", {}).get(stage)
        if outputs is None:
            self._say_once(stage, "outputs", "no evaluation outputs on the module (last_eval_outputs); nothing logged")
            return
        datamodule = getattr(trainer, "datamodule", None)
        clips = clip_attributes_by_corpus(datamodule, _STAGE_SPLIT[stage], corpus_indices(outputs))
        if clips is None:
            self._say_once(stage, "clips", "the data module gives no clip attributes (clip_attributes); nothing logged")
            return
        report = fairness_report(outputs, sample_attributes(outputs, clips), self.attributes, self.min_samples)
        self.last_report[stage] = report
        if report.empty:
            self._say_once(
                stage, "groups", f"no evaluated sample has a group of {list(self.attributes)}; nothing logged"
            )
            return
        logger = find_mlflow_logger(trainer)
        assert logger is not None  # _run found it
        metrics = report.metrics(stage)
        if metrics:
            logger.log_metrics(metrics, step=trainer.global_step)
        client.log_text(run_id, report.to_markdown(stage), f"{ARTIFACT_DIR}/{stage}_fairness.md")
        client.log_text(run_id, report.to_csv(), f"{ARTIFACT_DIR}/{stage}_fairness.csv")
