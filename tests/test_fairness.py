"""Per-group metrics: group normalisation, exact figures on a hand-made evaluation, the gap's small-group rule,
metric-name cleaning, and the callback writing metrics and tables into a local MLflow store."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from mlflow.utils.validation import _validate_metric_name
from torchmetrics.classification import MulticlassF1Score

from stress_lightning.tracking.fairness import (
    ORDER_STRIDE,
    FairnessCallback,
    fairness_report,
    group_of,
    metric_names,
    sample_attributes,
)
from stress_lightning.tracking.store import StressMLFlowLogger


@pytest.mark.parametrize(
    ("value", "group"),
    [
        # The synthetic renderer's continuous tone (0 = type I .. 5 = type VI), by its nearest type.
        ("0.000", "I-II"),
        ("1.499", "I-II"),
        ("1.500", "III-IV"),
        ("3.2", "III-IV"),
        ("3.500", "V-VI"),
        ("5.000", "V-VI"),
        (3.2, "III-IV"),
        ("5.01", None),
        ("-0.1", None),
        # Fitzpatrick labels.
        ("1", "I-II"),
        ("4", "III-IV"),
        ("6", "V-VI"),
        ("0", None),
        ("7", None),
        ("I", "I-II"),
        ("ii", "I-II"),
        ("type III", "III-IV"),
        ("Fitzpatrick 4", "III-IV"),
        ("FST-V", "V-VI"),
        ("VI", "V-VI"),
        ("III-IV", "III-IV"),
        ("v - vi", "V-VI"),
        # No group.
        ("", None),
        ("  ", None),
        ("unknown", None),
        ("N/A", None),
        ("olive", None),
        (None, None),
    ],
)
def test_skin_tone_groups(value: str | float | None, group: str | None) -> None:
    assert group_of("skin_tone", value) == group


def test_gender_and_other_groups() -> None:
    assert group_of("gender", " Female ") == "female"
    assert group_of("gender", "MALE") == "male"
    assert group_of("gender", "Non-binary") == "non-binary"
    assert group_of("gender", "") is None
    assert group_of("gender", "unknown") is None
    assert group_of("age", " 25 ") == "25"


def test_metric_names_are_valid_mlflow_keys_and_distinct() -> None:
    groups = ["III-IV", "female", "a b", "a/b", "a.b", "..", "gap", "é", "x" * 80]
    names = metric_names(groups)
    assert names["III-IV"] == "III-IV" and names["female"] == "female"
    assert names["a b"] == "a_b" and {names["a.b"], names["a/b"]} == {"a_b_2", "a_b_3"}
    assert names["gap"] == "gap_" and names[".."] == "__" and names["é"] == "_"
    assert len(names["x" * 80]) == 64
    assert len(set(names.values())) == len(groups)
    for name in names.values():
        _validate_metric_name(f"test/fairness/gender/{name}/expression_acc")


# Ten clips of one corpus: 0-3 female and lighter skin, 4-9 male and darker (a mix of tone encodings); clip 10 has no
# attributes.
CLIPS = [
    *({"gender": "female", "skin_tone": tone} for tone in ("0.4", "1.2", "I", "type II")),
    *({"gender": "male", "skin_tone": tone} for tone in ("4.6", "V", "6", "FST-VI", "5.000", "3.6")),
    {},
]


def _outputs() -> dict[str, np.ndarray]:
    return {
        "expression_pred": np.array([0, 1, 1, 2, 0, 0, 1, 1, 2, 2]),
        "expression_true": np.array([0, 1, 2, 2, 0, 1, 1, 2, 2, 0]),
        "expression_order": np.arange(10, dtype=np.int64),
        # Only two male stress samples: below min_samples.
        "stress_pred": np.array([0, 1, 1, 0, 1, 1]),
        "stress_true": np.array([0, 1, 0, 0, 1, 0]),
        "stress_order": np.arange(6, dtype=np.int64),
        # The last two samples: a clip without attributes and a sample of unknown place.
        "hr_pred_bpm": np.array([60, 70, 80, 90, 60, 60, 60, 60, 60, 60, 75, 75], dtype=np.float32),
        "hr_true_bpm": np.array([62, 70, 77, 90, 70, 50, 60, 60, 60, 60, 70, 70], dtype=np.float32),
        "hr_order": np.array([*range(11), -1], dtype=np.int64),
    }


def test_report_figures_exact() -> None:
    outputs = _outputs()
    report = fairness_report(outputs, sample_attributes(outputs, {0: CLIPS}), min_samples=4)
    rows = {(r.attribute, r.group): r for r in report.table.itertuples(index=False)}
    assert sorted(rows) == [("gender", "female"), ("gender", "male"), ("skin_tone", "I-II"), ("skin_tone", "V-VI")]
    for attribute, female, male in (("gender", "female", "male"), ("skin_tone", "I-II", "V-VI")):
        f, m = rows[(attribute, female)], rows[(attribute, male)]
        assert (f.n_expression, f.n_stress, f.n_hr) == (4, 4, 4)
        assert (m.n_expression, m.n_stress, m.n_hr) == (6, 2, 6)
        # Female expression: 3 of 4 right; per-class F1 1, 2/3, 2/3. Male: 3 of 6; F1 1/2 for each class.
        assert f.expression_acc == pytest.approx(0.75) and f.expression_f1 == pytest.approx(7 / 9)
        assert m.expression_acc == pytest.approx(0.5) and m.expression_f1 == pytest.approx(0.5)
        # Female stress: 3 of 4; F1 4/5 (class 0) and 2/3 (class 1). Male: 1 of 2; F1 0 and 2/3.
        assert f.stress_acc == pytest.approx(0.75) and f.stress_f1 == pytest.approx(11 / 15)
        assert m.stress_acc == pytest.approx(0.5) and m.stress_f1 == pytest.approx(1 / 3)
        assert f.hr_mae_bpm == pytest.approx(1.25) and m.hr_mae_bpm == pytest.approx(20 / 6)
        gaps = report.gaps[attribute]
        assert gaps["expression_acc"] == pytest.approx(0.25)
        assert gaps["expression_f1"] == pytest.approx(7 / 9 - 0.5)
        assert gaps["hr_mae_bpm"] == pytest.approx(20 / 6 - 1.25)
        # Two male stress samples < min_samples: one group left, no stress gap.
        assert math.isnan(gaps["stress_acc"]) and math.isnan(gaps["stress_f1"])
        assert report.compared[attribute]["stress"] == [female]
        assert report.unknown[attribute] == {"expression": 0, "stress": 0, "hr": 2}

    # The same macro-F1 as the module's metric (torchmetrics), which leaves out classes absent from a group.
    f1 = MulticlassF1Score(4, average="macro")
    assert float(f1(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]))) == pytest.approx(7 / 9)

    metrics = report.metrics("test")
    assert metrics["test/fairness/gender/gap/expression_acc"] == pytest.approx(0.25)
    assert "test/fairness/gender/male/expression_acc" in metrics
    # The small group: in the table, not in the metrics or the gap.
    assert "test/fairness/gender/male/stress_acc" not in metrics
    assert "test/fairness/gender/gap/stress_acc" not in metrics
    assert metrics["test/fairness/gender/female/stress_f1"] == pytest.approx(11 / 15)

    markdown = report.to_markdown("test")
    assert "| male | 6 | 2 | 6 | 0.500 | 0.500 | 0.500* | 0.333* | 3.333 |" in markdown
    assert "| **gap** | 2 groups | 1 group | 2 groups | 0.250 | 0.278 | – | – | 2.083 |" in markdown
    assert "left out: {'hr': 2}" in markdown
    frame = report.to_frame()
    assert list(frame["kind"]) == ["group", "group", "gap", "group", "group", "gap"]


def test_gap_uses_only_groups_with_enough_samples() -> None:
    # Three skin-tone groups; the one with perfect accuracy has only 2 samples.
    true = np.zeros(12, dtype=np.int64)
    pred = np.array([0] * 5 + [1] * 5 + [0] * 2)
    tones = ["0.5"] * 5 + ["2.5"] * 5 + ["4.5"] * 2
    pred[:2] = 1  # I-II: 3/5 right; III-IV: 0/5 right; V-VI: 2/2 right
    outputs = {"expression_pred": pred, "expression_true": true}
    per_sample = {"expression": [{"skin_tone": t} for t in tones]}
    report = fairness_report(outputs, per_sample, attributes=("skin_tone",), min_samples=5)
    assert report.compared["skin_tone"]["expression"] == ["I-II", "III-IV"]
    assert report.gaps["skin_tone"]["expression_acc"] == pytest.approx(0.6)  # not 1.0 with the small group
    assert math.isnan(report.gaps["skin_tone"]["hr_mae_bpm"])
    small = report.table[report.table["group"] == "V-VI"].iloc[0]
    assert small.n_expression == 2 and small.expression_acc == 1.0
    with pytest.raises(ValueError, match="min_samples"):
        fairness_report(outputs, per_sample, min_samples=0)


def test_broken_contracts_raise() -> None:
    outputs = _outputs()
    del outputs["stress_order"]
    with pytest.raises(KeyError, match="stress_order"):
        sample_attributes(outputs, {0: CLIPS})
    outputs = _outputs()
    outputs["expression_order"] = outputs["expression_order"] + 20
    with pytest.raises(ValueError, match="clip 20 of corpus 0, which has 11 clips"):
        sample_attributes(outputs, {0: CLIPS})
    with pytest.raises(ValueError, match="FairnessCallback.attributes"):
        FairnessCallback(attributes=("skin tone",))
    with pytest.raises(ValueError, match="FairnessCallback.stages"):
        FairnessCallback(stages=("train",))


class _Data:
    """A data module stand-in: corpus 1 of the split has the clips (as `MixedDataModule.clip_attributes`)."""

    def __init__(self, clips: list[dict[str, str]], corpus_index: int = 0) -> None:
        self.clips = clips
        self.corpus_index = corpus_index

    def clip_attributes(self, split: str, corpus_index: int | None = None) -> list[dict[str, str]]:
        assert corpus_index == self.corpus_index, corpus_index
        return self.clips


def _trainer(logger: StressMLFlowLogger, datamodule: object) -> SimpleNamespace:
    return SimpleNamespace(
        is_global_zero=True, loggers=[logger], sanity_checking=False, global_step=7, datamodule=datamodule
    )


def test_callback_logs_metrics_and_tables(store_uri: str, tmp_path: Path) -> None:
    uri = store_uri
    logger = StressMLFlowLogger(experiment_name="fairness", tracking_uri=uri, run_name="fairness")
    module = SimpleNamespace(last_eval_outputs={"test": _outputs()})
    callback = FairnessCallback(min_samples=4)
    callback.on_test_end(_trainer(logger, _Data(CLIPS)), module)
    # A multi-corpus run: the same clips as corpus 1 (its place in corpus_names), for validation.
    outputs = _outputs()
    for task in ("expression", "stress", "hr"):
        order = outputs[f"{task}_order"]
        outputs[f"{task}_order"] = np.where(order >= 0, order + ORDER_STRIDE, -1)
    FairnessCallback(stages=("val",), min_samples=4).on_validation_end(
        _trainer(logger, _Data(CLIPS, corpus_index=1)), SimpleNamespace(last_eval_outputs={"val": outputs})
    )
    logger.finalize("success")

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(logger.run_id)
    metrics = run.data.metrics
    for stage in ("test", "val"):
        assert metrics[f"{stage}/fairness/gender/gap/expression_acc"] == pytest.approx(0.25)
        assert metrics[f"{stage}/fairness/skin_tone/V-VI/hr_mae_bpm"] == pytest.approx(20 / 6)
        assert metrics[f"{stage}/fairness/gender/female/stress_f1"] == pytest.approx(11 / 15)
        assert f"{stage}/fairness/gender/male/stress_f1" not in metrics
    fairness = {k for k in metrics if k.startswith("test/")}
    assert len(fairness) == 2 * (2 * 5 - 2 + 3)  # per attribute: 2 groups x 5 metrics - 2 small, 3 gaps
    assert client.get_metric_history(logger.run_id, "test/fairness/gender/gap/expression_acc")[0].step == 7
    artifacts = {a.path for a in client.list_artifacts(logger.run_id, "fairness")}
    assert artifacts == {f"fairness/{s}_fairness.{e}" for s in ("test", "val") for e in ("md", "csv")}
    csv = Path(client.download_artifacts(logger.run_id, "fairness/test_fairness.csv", str(tmp_path))).read_text()
    assert csv.splitlines()[0] == (
        "attribute,kind,group,metric_name,n_expression,n_stress,n_hr,"
        "expression_acc,expression_f1,stress_acc,stress_f1,hr_mae_bpm"
    )
    assert "gender,group,male,male,6,2,6,0.5,0.5,0.5,0.333333,3.33333" in csv


def test_callback_without_groups_logs_nothing(store_uri: str, caplog: pytest.LogCaptureFixture) -> None:
    uri = store_uri
    logger = StressMLFlowLogger(experiment_name="fairness", tracking_uri=uri, run_name="none")
    module = SimpleNamespace(last_eval_outputs={"test": _outputs()})
    callback = FairnessCallback()
    with caplog.at_level("INFO"):
        callback.on_test_end(_trainer(logger, _Data([{"part": "1"}] * 11)), module)
        callback.on_test_end(_trainer(logger, object()), module)  # no clip_attributes
    messages = [r.getMessage() for r in caplog.records if "FairnessCallback" in r.getMessage()]
    assert len(messages) == 2 and "no evaluated sample has a group" in messages[0]
    assert "clip_attributes" in messages[1]
    client = MlflowClient(tracking_uri=uri)
    assert not client.get_run(logger.run_id).data.metrics
    assert not client.list_artifacts(logger.run_id, "fairness")


@pytest.mark.slow
def test_fit_through_the_cli_logs_fairness(tmp_path: Path) -> None:
    """A tiny fit through the real CLI: with 8 subjects the synthetic test split holds a woman of lighter and a man
    of darker skin (seed 0), so both attributes have two groups and their gaps."""
    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "mlruns").mkdir()
    override = tmp_path / "fairness.yaml"
    override.write_text(
        "trainer: {limit_train_batches: 2, limit_val_batches: 2, limit_test_batches: null}\n"
        "data: {init_args: {corpus_options: {generator: {num_subjects: 8}}}}\n"
    )
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "NO_ALBUMENTATIONS_UPDATE": "1"}
    args = [sys.executable, "-m", "stress_lightning.cli", "fit", "--config", "conf/synthetic.yaml"]
    args += ["--config", "conf/tiny.yaml", "--config", str(override), f"--data.init_args.root={tmp_path / 'corpus'}"]
    args += [f"--data.init_args.cache_dir={tmp_path / 'cache'}", f"--trainer.default_root_dir={tmp_path / 'out'}"]
    proc = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("stress-lightning").experiment_id])
    metrics = run.data.metrics
    for attribute in ("gender", "skin_tone"):
        for metric in ("expression_acc", "expression_f1", "stress_acc", "stress_f1", "hr_mae_bpm"):
            assert f"test/fairness/{attribute}/gap/{metric}" in metrics
    assert "test/fairness/gender/female/expression_acc" in metrics
    assert "test/fairness/skin_tone/III-IV/hr_mae_bpm" in metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "fairness")}
    assert artifacts == {"fairness/test_fairness.md", "fairness/test_fairness.csv"}


def test_every_callbacks_list_that_tracks_runs_logs_fairness() -> None:
    """A callbacks part with MLflowRunCallback also has FairnessCallback, right after it (a new part copied from an
    older list once left it out)."""
    import yaml

    root = Path(__file__).resolve().parents[1] / "conf" / "callbacks"
    for part in sorted(root.glob("*.yaml")):
        paths = [c["class_path"].rsplit(".", 1)[1] for c in yaml.safe_load(part.read_text())]
        if "MLflowRunCallback" in paths:
            i = paths.index("MLflowRunCallback")
            assert paths[i + 1 : i + 2] == ["FairnessCallback"], f"{part.name}: {paths}"
