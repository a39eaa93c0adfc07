"""SWELL-KW per-minute physiology: the reader on its exact CSV layout, person-relative features, the physiology-only
data module and the stress head's path for samples without video."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

import stress_lightning.data.corpora.swell_kw  # noqa: F401  (registers)
from stress_lightning.commands.data import main as data_main
from stress_lightning.data.corpora.base import build_corpus
from stress_lightning.data.corpora.swell_kw import SwellKwCorpus, parse_timestamps
from stress_lightning.data.datamodules import ClipDataModule, PhysiologyDataset
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.items import PhysiologyRecord, PhysiologySeries, StressSegment, StressSegments
from stress_lightning.data.personal import (
    IQR_TO_STD,
    MIN_SPREAD,
    PERSONAL_FEATURES,
    SubjectBaseline,
    feature_matrix,
    personal_features,
    subject_baselines,
)
from stress_lightning.data.sample import make_physiology_sample
from stress_lightning.data.taxonomy import STRESS_LEVELS, LabelMap, canonical_stress
from stress_lightning.models.heads import StressHead
from stress_lightning.models.net import MultiTaskNet

REAL_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "stress" / "swell_kw"
HEADER = "PP,C,Condition,timestamp,HR,RMSSD,SCL,,,,,"
NOTE = "999 is NaN"
MISSING = 999
SMALL_NET = {"spatial_backbone": "conv4", "temporal_backbone": "c3d_small", "rppg_backbone": "rppg_cnn"}


# -- the fixture CSV --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    subject: str
    block: int
    condition: str
    time: datetime
    hr: float
    rmssd_s: float
    scl: float
    stamp: str | None = None  # the timestamp cell as written (None: the full 18-character form)

    def cell(self) -> str:
        return self.stamp if self.stamp is not None else self.time.strftime("%Y%m%dT%H%M%S") + "000"


DAYS = {"PP1": datetime(2012, 9, 18), "PP2": datetime(2012, 10, 1), "PP3": datetime(2012, 10, 4)}
# Per block: rest start (6 min), task start, task condition, task minutes (the protocol's gaps in between).
BLOCKS = [((13, 16), (13, 26), "N", 10), ((14, 28), (14, 36), "T", 8), ((15, 58), (16, 14), "I", 8)]
# Typical shifts from a person's level: time pressure raises HR and lowers RMSSD.
SHIFT = {"R": (-2.0, 0.006, -5.0), "N": (0.0, 0.0, 0.0), "I": (3.0, -0.004, 8.0), "T": (8.0, -0.012, 20.0)}


def protocol_rows() -> list[Row]:
    """3 participants x 3 blocks of rest (R, 6 min), a gap, a task (N 10 min, T 8 min, I 8 min), as the study ran.

    PP1: its first rest minute lacks HR and RMSSD (999, as in the real file) and its first N minute lacks all
    three values. PP2: 16:20 of its I task is written `20121001T162` (the distributed file's truncated stamps).
    PP3: block 3's task follows the rest without a gap (one recording, two conditions); its rows are out of time
    order in the file.
    """
    rng = np.random.default_rng(0)
    rows: list[Row] = []
    for s, (subject, day) in enumerate(DAYS.items()):
        base_hr, base_scl = 65.0 + 5 * s, 80.0 + 150 * s
        for block, (rest, task, condition, minutes) in enumerate(BLOCKS, start=1):
            rest_start = day.replace(hour=rest[0], minute=rest[1])
            task_start = day.replace(hour=task[0], minute=task[1])
            if subject == "PP3" and block == 3:
                task_start = rest_start + timedelta(minutes=6)
            segments = [("R", rest_start, 6), (condition, task_start, minutes)]
            for label, start, n in segments:
                for m in range(n):
                    d_hr, d_rmssd, d_scl = SHIFT[label]
                    rows.append(
                        Row(
                            subject,
                            block,
                            label,
                            start + timedelta(minutes=m),
                            float(round(base_hr + d_hr + rng.normal(0, 2))),
                            round(0.05 + d_rmssd + rng.normal(0, 0.004), 6),
                            round(base_scl + d_scl + rng.normal(0, 3), 6),
                        )
                    )
    first = rows[0]
    rows[0] = replace(first, hr=MISSING, rmssd_s=MISSING)
    i = next(k for k, r in enumerate(rows) if r.subject == "PP1" and r.condition == "N")
    rows[i] = replace(rows[i], hr=MISSING, rmssd_s=MISSING, scl=MISSING)
    i = next(k for k, r in enumerate(rows) if r.subject == "PP2" and r.time == DAYS["PP2"].replace(hour=16, minute=20))
    rows[i] = replace(rows[i], stamp="20121001T162")
    # PP3 out of order: block 2 reversed, and the last minute of its N task moved to the end of the file.
    pp3_block2 = [k for k, r in enumerate(rows) if r.subject == "PP3" and r.block == 2]
    rows[pp3_block2[0] : pp3_block2[-1] + 1] = rows[pp3_block2[0] : pp3_block2[-1] + 1][::-1]
    last_n = max(k for k, r in enumerate(rows) if r.subject == "PP3" and r.condition == "N")
    rows.append(rows.pop(last_n))
    return rows


def _number(value: float) -> str:
    return str(int(value)) if value == MISSING or float(value).is_integer() else repr(float(value))


def write_csv(path: Path, rows: list[Row], header: str = HEADER) -> Path:
    """The feature file's layout: trailing empty columns and the note cell on the first data row."""
    lines = [header]
    for k, r in enumerate(rows):
        note = NOTE if k == 0 else ""
        values = ",".join(_number(v) for v in (r.hr, r.rmssd_s, r.scl))
        lines.append(f"{r.subject},{r.block},{r.condition},{r.cell()},{values},,,,,{note}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def corpus_root(tmp_path: Path) -> Path:
    root = tmp_path / "swell_kw"
    write_csv(root / "physiology_features.csv", protocol_rows())
    return root


def _stress_map() -> LabelMap:
    return LabelMap(STRESS_LEVELS, SwellKwCorpus.stress_map, synonyms=canonical_stress)


def _expected_series(rows: list[Row], subject: str, start: datetime, end: datetime) -> dict[str, np.ndarray]:
    chosen = sorted((r for r in rows if r.subject == subject and start <= r.time <= end), key=lambda r: r.time)

    def values(name: str, scale: float = 1.0) -> np.ndarray:
        raw = np.array([getattr(r, name) for r in chosen], dtype=np.float64)
        return np.where(raw == MISSING, np.nan, raw * scale)

    return {
        "times_s": np.array([(r.time - chosen[0].time).total_seconds() for r in chosen]),
        "hr_bpm": values("hr"),
        "rmssd_ms": values("rmssd_s", 1000.0),
        "eda": values("scl"),
    }


# -- reader -----------------------------------------------------------------------------------------------------
def test_items_are_recordings_split_at_gaps_not_at_label_changes(corpus_root: Path) -> None:
    corpus = SwellKwCorpus()
    items = corpus.read_checked(corpus_root)
    assert corpus.problems == []
    ids = [it.item_id for it in items]
    expected = []
    for subject, day in DAYS.items():
        starts = ["1316", "1326", "1428", "1436", "1558", "1614"]
        if subject == "PP3":
            starts.remove("1614")  # rest and I task without a gap: one recording
        expected += [f"{subject}/{day:%Y%m%d}T{hhmm}" for hhmm in starts]
    assert ids == expected
    assert all(it.is_physiology and isinstance(it.media, PhysiologyRecord) for it in items)
    assert all(it.subject_id == it.item_id.split("/")[0] for it in items)
    by_id = {it.item_id: it for it in items}
    # One-minute segments, consecutive minutes of a condition merged; R stays R on the item.
    assert by_id["PP1/20120918T1316"].stress == StressSegments((StressSegment(0.0, 360.0, "R"),))
    assert by_id["PP1/20120918T1326"].stress == StressSegments((StressSegment(0.0, 600.0, "N"),))
    assert by_id["PP2/20121001T1436"].stress == StressSegments((StressSegment(0.0, 480.0, "T"),))
    mixed = by_id["PP3/20121004T1558"].stress
    assert mixed == StressSegments((StressSegment(0.0, 360.0, "R"), StressSegment(360.0, 840.0, "I")))
    assert by_id["PP1/20120918T1614"].attributes == {"block": "3"}
    # The same file read again gives the same items (ids unique, stable).
    assert [it.item_id for it in SwellKwCorpus().read_checked(corpus_root)] == ids


def test_stress_map_through_label_map(corpus_root: Path) -> None:
    items = SwellKwCorpus().read_checked(corpus_root)
    labels = _stress_map()
    assert [labels.index(c) for c in ("N", "I", "T", "R")] == [0, 1, 2, None]
    assert tuple(STRESS_LEVELS) == ("low", "normal", "high")
    mixed = next(it for it in items if it.item_id == "PP3/20121004T1558").stress
    assert labels.index(mixed.label_over(0, 60)) is None  # a rest minute carries no level
    assert labels.index(mixed.label_over(360, 420)) == 1
    assert mixed.label_over(330, 390) is None  # a window across the condition change has no single label
    # The data module's map, and a run's override that makes rest a level.
    dm = ClipDataModule(corpus="swell_kw", root=".", stress_label_map={"R": "low"}, progress=False)
    assert dm.stress_labels().index("R") == 0
    assert ClipDataModule(corpus="swell_kw", root=".", progress=False).stress_labels().index("T") == 2


def test_values_missing_units_truncated_stamp_and_order(corpus_root: Path) -> None:
    rows = protocol_rows()
    corpus = SwellKwCorpus()
    items = {it.item_id: it for it in corpus.read_checked(corpus_root)}
    cases = {
        "PP1/20120918T1316": ("PP1", (13, 16), (13, 21)),
        "PP1/20120918T1326": ("PP1", (13, 26), (13, 35)),
        "PP2/20121001T1614": ("PP2", (16, 14), (16, 21)),
        "PP3/20121004T1428": ("PP3", (14, 28), (14, 33)),
        "PP3/20121004T1436": ("PP3", (14, 36), (14, 43)),
        "PP3/20121004T1326": ("PP3", (13, 26), (13, 35)),
        "PP3/20121004T1558": ("PP3", (15, 58), (16, 11)),
    }
    for item_id, (subject, (h0, m0), (h1, m1)) in cases.items():
        day = DAYS[subject]
        expected = _expected_series(rows, subject, day.replace(hour=h0, minute=m0), day.replace(hour=h1, minute=m1))
        series = corpus.load_physiology(items[item_id])
        assert isinstance(series, PhysiologySeries) and series.window_s == 60.0
        assert series.source == corpus_root / "physiology_features.csv"
        for key, value in expected.items():
            np.testing.assert_allclose(getattr(series, key), value, rtol=1e-9, err_msg=f"{item_id} {key}")
    # 999 -> NaN, RMSSD seconds -> milliseconds.
    rest = corpus.load_physiology(items["PP1/20120918T1316"])
    assert np.isnan(rest.hr_bpm[0]) and np.isnan(rest.rmssd_ms[0]) and np.isfinite(rest.eda[0])
    assert 20 < np.nanmedian(rest.rmssd_ms) < 100
    # `...T162` is 16:20:00 and stays in its recording: 8 contiguous minutes 16:14-16:21.
    task = corpus.load_physiology(items["PP2/20121001T1614"])
    np.testing.assert_array_equal(task.times_s, np.arange(8) * 60.0)
    # Rows out of time order (PP3) come back sorted: 6 + 8 minutes, 10 N minutes incl. the one moved to the end.
    assert len(corpus.load_physiology(items["PP3/20121004T1326"])) == 10
    np.testing.assert_array_equal(corpus.load_physiology(items["PP3/20121004T1558"]).times_s, np.arange(14) * 60.0)
    # A fresh reader (no read() before) loads the same record.
    again = SwellKwCorpus().load_physiology(items["PP2/20121001T1614"])
    np.testing.assert_array_equal(again.hr_bpm, task.hr_bpm)
    # RMSSD already in ms: left as written.
    ms = SwellKwCorpus(rmssd_unit="ms")
    ms_items = {it.item_id: it for it in ms.read_checked(corpus_root)}
    np.testing.assert_allclose(ms.load_physiology(ms_items["PP2/20121001T1614"]).rmssd_ms, task.rmssd_ms / 1000.0)


def test_parse_timestamps() -> None:
    import pandas as pd

    parsed = parse_timestamps(pd.Series(["20120918T131600000", "20121001T162", " 20121001T162100000 ", "garbage", ""]))
    assert parsed.iloc[0] == pd.Timestamp("2012-09-18 13:16:00")
    assert parsed.iloc[1] == pd.Timestamp("2012-10-01 16:20:00")
    assert parsed.iloc[2] == pd.Timestamp("2012-10-01 16:21:00")
    assert parsed.iloc[3:].isna().all()


def test_splits_fixed_and_seeded(corpus_root: Path) -> None:
    items = SwellKwCorpus(val_subjects=["PP2"], test_subjects=["PP3"]).read_checked(corpus_root)
    assert {it.subject_id: it.split for it in items} == {"PP1": "train", "PP2": "val", "PP3": "test"}
    seeded = SwellKwCorpus().read_checked(corpus_root)
    by_subject: dict[str, set[str]] = {}
    for it in seeded:
        by_subject.setdefault(it.subject_id, set()).add(it.split)
    assert all(len(s) == 1 for s in by_subject.values())  # subject-disjoint
    assert sorted(s for (s,) in by_subject.values()) == ["test", "train", "val"]
    with pytest.raises(CorpusError, match=r"PP9"):
        SwellKwCorpus(test_subjects=["PP9"]).read_checked(corpus_root)
    with pytest.raises(ValueError, match="both"):
        SwellKwCorpus(val_subjects=["PP1"], test_subjects=["PP1"])
    with pytest.raises(ValueError, match="rmssd_unit"):
        SwellKwCorpus(rmssd_unit="us")
    with pytest.raises(ValueError, match="gap_s"):
        SwellKwCorpus(gap_s=30)
    assert SwellKwCorpus(test_subjects=["PP3"]).options()["test_subjects"] == ["PP3"]


# -- bad input --------------------------------------------------------------------------------------------------
def test_missing_column_names_the_file(tmp_path: Path) -> None:
    rows = protocol_rows()[:20]
    path = write_csv(tmp_path / "bad" / "features.csv", rows)
    text = path.read_text().splitlines()
    # Drop the SCL column everywhere.
    path.write_text("\n".join(",".join(line.split(",")[:6] + line.split(",")[7:]) for line in text) + "\n")
    with pytest.raises(CorpusError) as info:
        SwellKwCorpus(file="features.csv").read_checked(tmp_path / "bad")
    assert info.value.path == path and "SCL" in str(info.value)
    # Without `file`, a folder without a matching CSV is an error naming the folder.
    with pytest.raises(CorpusError, match="expected one CSV"):
        SwellKwCorpus().read_checked(tmp_path / "bad")
    with pytest.raises(CorpusError, match="missing"):
        SwellKwCorpus(file="nope.csv").read_checked(tmp_path / "bad")


BAD_ROWS = {
    "unknown condition": (lambda r: replace(r, condition="X"), "unknown condition 'X'"),
    "unparseable timestamp": (lambda r: replace(r, stamp="2012-10-01 16:20"), "timestamp cannot be parsed"),
}


@pytest.mark.parametrize("case", [*BAD_ROWS, "duplicate minute"])
def test_bad_rows_fail_or_skip(tmp_path: Path, case: str) -> None:
    rows = protocol_rows()
    k = 25  # PP1, block 2, the T task's 14:39
    assert (rows[k].subject, rows[k].condition, rows[k].time.minute) == ("PP1", "T", 39)
    if case == "duplicate minute":
        original = rows[k]
        rows.insert(k + 1, replace(original, hr=original.hr + 1))
        k, reason = k + 1, "PP1 has this minute twice"
    else:
        change, reason = BAD_ROWS[case]
        rows[k] = change(rows[k])
    path = write_csv(tmp_path / "c" / "physiology_features.csv", rows)
    line = k + 2  # after the header, 1-based
    assert path.read_text().splitlines()[line - 1].startswith("PP1,2,")
    with pytest.raises(CorpusError) as info:
        SwellKwCorpus().read_checked(path.parent)
    assert info.value.path == path
    assert f"line {line}:" in info.value.problem and reason in info.value.problem

    skip = SwellKwCorpus(on_error="skip")
    items = skip.read_checked(path.parent)
    assert [(p.path, p.reason.split(":")[0]) for p in skip.problems] == [(str(path), f"line {line}")]
    ids = [it.item_id for it in items]
    task = skip.load_physiology(items[ids.index("PP1/20120918T1436")])
    if case == "duplicate minute":
        assert len(items) == 17  # every recording kept
        assert len(task) == 8 and task.hr_bpm[3] == original.hr  # the first occurrence kept
    else:
        # The left-out minute leaves a 120 s gap (> gap_s): the task is two recordings now, the rest is kept.
        assert len(items) == 18 and "PP1/20120918T1440" in ids
        assert len(task) == 3 and len(skip.load_physiology(items[ids.index("PP1/20120918T1440")])) == 4


def test_data_summary_lists_stress_counts_and_problems(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = protocol_rows()
    rows[25] = replace(rows[25], condition="X")
    root = tmp_path / "summary"
    path = write_csv(root / "physiology_features.csv", rows)
    capsys.readouterr()
    assert data_main(["summary", "--corpus", "swell_kw", "--root", str(root), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    # Segments counted once each: N x3, I x3 (PP3's in the mixed recording), T x3 + 1 (the T task split by the
    # left-out minute); R x9 unmapped.
    assert result["stress"] == {"low": 3, "normal": 3, "high": 4}
    assert result["unmapped"] == {"stress:R": 9}
    assert result["problems"] == [{"path": str(path), "reason": "line 27: unknown condition 'X'"}]
    assert sum(s["subjects"] for s in result["splits"].values()) == 3
    assert data_main(["summary", "--corpus", "swell_kw", "--root", str(root)]) == 0
    text = capsys.readouterr().out
    assert "problems: 1" in text and f"{path}: line 27: unknown condition 'X'" in text
    assert "R (unmapped)" in text


def test_check_finds_records_without_values(tmp_path: Path) -> None:
    rows = protocol_rows()
    # PP2's first rest period: every value missing.
    rows = [
        replace(r, hr=MISSING, rmssd_s=MISSING, scl=MISSING)
        if (r.subject == "PP2" and r.block == 1 and r.condition == "R")
        else r
        for r in rows
    ]
    path = write_csv(tmp_path / "c" / "physiology_features.csv", rows)
    corpus = SwellKwCorpus()
    items = corpus.read_checked(path.parent)
    problems = {it.item_id: corpus.check(it) for it in items}
    bad = problems.pop("PP2/20121001T1316")
    assert len(bad) == 1 and bad[0].path == str(path) and "no measured value" in bad[0].reason
    assert all(found == [] for found in problems.values())
    # A record that is no longer in the file (the file changed since it was read) is a problem, not a crash.
    gone = replace(items[0], media=PhysiologyRecord(path, "PP1/2011-01-01T00:00:00"))
    (problem,) = SwellKwCorpus().check(gone)
    assert problem.path == str(path) and "no longer in the file" in problem.reason


def test_build_corpus_by_name(corpus_root: Path) -> None:
    corpus = build_corpus("swell_kw", test_subjects=["PP3"])
    assert isinstance(corpus, SwellKwCorpus)
    assert len(corpus.read_checked(corpus_root)) == 17


# -- personal baselines -----------------------------------------------------------------------------------------
def _series(hr, rmssd, eda, times=None) -> PhysiologySeries:
    hr = np.asarray(hr, dtype=np.float64)
    t = np.arange(len(hr)) * 60.0 if times is None else np.asarray(times, dtype=np.float64)
    return PhysiologySeries(t, 60.0, hr, np.asarray(rmssd, dtype=np.float64), np.asarray(eda, dtype=np.float64))


def test_baseline_is_median_and_robust_spread_nan_aware() -> None:
    a = _series([60, 62, np.nan, 70], [30, 40, 50, np.nan], [5, 5, 5, 5])
    b = _series([64, 100], [np.nan, 20], [5, 5])
    base = SubjectBaseline.from_series([a, b])
    hr = np.array([60, 62, 70, 64, 100.0])
    q25, q50, q75 = np.percentile(hr, [25, 50, 75])
    assert base.centre[0] == pytest.approx(q50)
    assert base.spread[0] == pytest.approx(max((q75 - q25) / IQR_TO_STD, MIN_SPREAD[0]))
    log_rmssd = np.log([30, 40, 50, 20.0])
    q25, q50, q75 = np.percentile(log_rmssd, [25, 50, 75])
    assert base.centre[1] == pytest.approx(q50)
    assert base.spread[1] == pytest.approx((q75 - q25) / IQR_TO_STD)
    # Constant skin conductance: the spread floor, not 0.
    assert base.centre[2] == pytest.approx(np.log(5)) and base.spread[2] == pytest.approx(MIN_SPREAD[2])
    # A feature nobody measured: NaN centre; non-positive values count as missing.
    none = SubjectBaseline.from_series([_series([70, 72], [0, -1], [np.nan, np.nan])])
    assert np.isnan(none.centre[1:]).all() and np.isfinite(none.centre[0])
    assert np.isnan(feature_matrix(_series([0], [10], [0]))).tolist() == [[True, False, True]]
    baselines = subject_baselines([a, b, a], ["s1", "s2", "s1"])
    assert set(baselines) == {"s1", "s2"}
    np.testing.assert_allclose(baselines["s1"].centre, SubjectBaseline.from_series([a, a]).centre)


def _hand_features(series: PhysiologySeries, base: SubjectBaseline, history_s: float | None):
    """The definition written out: z per window, then the mean of the present z's over the causal window."""
    x = feature_matrix(series)
    n = len(series)
    values = np.zeros((n, 6))
    mask = np.zeros((n, 6), dtype=bool)
    for i in range(n):
        for k in range(3):
            z = (x[i, k] - base.centre[k]) / base.spread[k]
            if np.isfinite(z):
                values[i, 3 + k], mask[i, 3 + k] = z, True
            window = [
                (x[j, k] - base.centre[k]) / base.spread[k]
                for j in range(i + 1)
                if history_s is None or series.times_s[i] - series.times_s[j] < history_s
            ]
            window = [v for v in window if np.isfinite(v)]
            if window:
                values[i, k], mask[i, k] = np.mean(window), True
    return values, mask


@pytest.mark.parametrize("history_s", [None, 120.0, 150.0, 1e6])
def test_personal_features_causal_level_and_now(history_s: float | None) -> None:
    # Leading NaNs in HR, a hole in RMSSD, EDA missing throughout; a gap in time (the 5th window at 360 s).
    series = _series(
        [np.nan, np.nan, 70, 80, 75, 90],
        [40, np.nan, 35, 30, np.nan, 25],
        [np.nan] * 6,
        times=[0, 60, 120, 180, 360, 420],
    )
    base = SubjectBaseline(np.array([72.0, np.log(35.0), 1.0]), np.array([4.0, 0.2, 0.1]))
    values, mask = personal_features(series, base, history_s, scale="robust_z")
    assert values.shape == (6, len(PERSONAL_FEATURES)) == mask.shape and values.dtype == np.float32
    expected_values, expected_mask = _hand_features(series, base, history_s)
    np.testing.assert_array_equal(mask, expected_mask)
    np.testing.assert_allclose(values, expected_values, rtol=1e-5, atol=1e-6)
    assert (values[~mask] == 0).all()
    # Leading NaNs: HR level and HR now masked until the first value (index 2).
    assert mask[:, 0].tolist() == [False, False, True, True, True, True]
    assert mask[:, 3].tolist() == [False, False, True, True, True, True]
    assert not mask[:, [2, 5]].any()  # EDA never measured
    if history_s is None:
        # The running mean since the start: at index 3, mean of z(70), z(80).
        assert values[3, 0] == pytest.approx(((70 - 72) / 4 + (80 - 72) / 4) / 2)
    if history_s == 120.0:
        # Window of two minutes: index 5 (420 s) averages 360 s and 420 s only; index 4 (360 s) only itself.
        assert values[5, 0] == pytest.approx(((75 - 72) / 4 + (90 - 72) / 4) / 2)
        assert values[4, 0] == pytest.approx((75 - 72) / 4)
        # RMSSD at index 4 is missing and no other value is in its window: masked.
        assert not mask[4, 1]
    assert PERSONAL_FEATURES == (
        "hr_level",
        "log_rmssd_level",
        "log_eda_level",
        "hr_now",
        "log_rmssd_now",
        "log_eda_now",
    )


def test_rank_scale_and_recording_context() -> None:
    series = _series([60, 70, 80, np.nan, 90], [40, 30, 20, 10, np.nan], [1.0, 2.0, 3.0, 4.0, 5.0])
    base = SubjectBaseline.from_series([series])
    ranked = base.standardise(np.array([[60.0, np.log(40.0), np.log(3.0)], [np.nan, np.nan, 99.0]]), "rank")
    # Mid-ranks among the person's own values, centred, times sqrt(12): the lowest of 4 HR values is rank 0.5/4.
    assert ranked[0, 0] == pytest.approx((0.5 / 4 - 0.5) * np.sqrt(12))
    assert ranked[0, 1] == pytest.approx((3.5 / 4 - 0.5) * np.sqrt(12))  # highest of 4 RMSSD values
    assert ranked[0, 2] == pytest.approx(0.0)  # the median of 5 EDA values
    assert np.isnan(ranked[1, :2]).all() and ranked[1, 2] == pytest.approx(0.5 * np.sqrt(12))  # above all
    with pytest.raises(ValueError, match="scale"):
        base.standardise(ranked, "minmax")  # type: ignore[arg-type]
    causal, causal_mask = personal_features(series, base)
    whole, whole_mask = personal_features(series, base, context="recording")
    # The recording level is the same for every window (the last causal level); the current values are equal.
    np.testing.assert_allclose(whole[:, :3], np.broadcast_to(causal[-1, :3], (5, 3)), atol=1e-6)
    np.testing.assert_array_equal(whole[:, 3:], causal[:, 3:])
    assert whole_mask[:, :3].all() and causal_mask[:, 3:].tolist() == whole_mask[:, 3:].tolist()
    with pytest.raises(ValueError, match="context"):
        personal_features(series, base, context="future")  # type: ignore[arg-type]


def test_make_physiology_sample() -> None:
    sample = make_physiology_sample(torch.ones(6), torch.ones(6, dtype=torch.bool), stress=2)
    assert "frames" not in sample and sample["stress"].item() == 2 and sample["stress_mask"].item()
    assert not sample["expression_mask"] and not sample["hr_mask"] and not sample["hrv_mask"]
    assert not make_physiology_sample(torch.ones(6), torch.ones(6), stress=None)["stress_mask"]
    with pytest.raises(ValueError, match="personal"):
        make_physiology_sample(torch.ones(6), torch.ones(5), stress=0)


# -- datasets and the data module -------------------------------------------------------------------------------
def test_physiology_dataset_one_sample_per_labelled_minute(corpus_root: Path) -> None:
    corpus = SwellKwCorpus()
    items = corpus.read_checked(corpus_root)
    series = [corpus.load_physiology(it) for it in items]
    dataset = PhysiologyDataset(items, series, _stress_map())
    # Task minutes: 3 x (10 N + 8 T + 8 I) = 78, minus PP1's first N minute (no value, nothing before it in its
    # recording). R minutes never become samples.
    assert len(dataset) == 77
    counts = np.bincount(dataset.stress, minlength=3).tolist()
    assert counts == [29, 24, 24]
    assert dataset.personal.shape == (77, 6) and dataset.personal_mask.dtype == torch.bool
    # Values are the person's features against their own baseline over all their minutes (R included).
    baselines = subject_baselines(series, [it.subject_id for it in items])
    k = next(i for i, it in enumerate(items) if it.item_id == "PP2/20121001T1436")
    values, _ = personal_features(series[k], baselines["PP2"])
    assert any(torch.allclose(dataset.personal[j], torch.from_numpy(values[0])) for j in range(len(dataset)))
    sample = dataset[0]
    assert set(sample) >= {"personal", "personal_mask", "stress", "stress_mask"} and "frames" not in sample
    # Rest as a level (a run's override) adds the 3 x 18 rest minutes, less the ones without any value.
    with_rest = PhysiologyDataset(items, series, LabelMap(STRESS_LEVELS, SwellKwCorpus.stress_map, {"R": "low"}))
    assert len(with_rest) == 77 + 54


def test_clip_datamodule_physiology_only(corpus_root: Path, tmp_path: Path) -> None:
    dm = ClipDataModule(
        corpus="swell_kw",
        root=str(corpus_root),
        corpus_options={"val_subjects": ["PP2"], "test_subjects": ["PP3"]},
        cache_dir=str(tmp_path / "cache"),
        batch_size=4,
        progress=False,
    )
    assert dm.physiology_only and dm.corpus_names == ["swell_kw"]
    dm.prepare_data()
    dm.setup("fit")
    assert set(dm.datasets) == {"train", "val", "test"}
    assert len(dm.datasets["train"]) == 25 and len(dm.datasets["val"]) == 26
    batch = next(iter(dm.train_dataloader()))
    assert "frames" not in batch and "roi" not in batch
    assert batch["personal"].shape == (4, 6) and batch["personal_mask"].shape == (4, 6)
    assert batch["stress_mask"].all() and not batch["expression_mask"].any() and not batch["hr_mask"].any()
    assert len(dm.val_dataloader()) == 7  # 26 samples, batch 4, nothing dropped in evaluation
    assert dm.stats["train"].clips == 25
    # A shorter history changes the levels but not which samples exist.
    short = ClipDataModule(
        corpus="swell_kw",
        root=str(corpus_root),
        corpus_options={"val_subjects": ["PP2"], "test_subjects": ["PP3"]},
        cache_dir=str(tmp_path / "cache"),
        personal_history_s=120.0,
        progress=False,
    )
    short.setup("fit")
    assert len(short.datasets["train"]) == 25
    assert not torch.allclose(short.datasets["train"].personal, dm.datasets["train"].personal)
    torch.testing.assert_close(short.datasets["train"].personal[:, 3:], dm.datasets["train"].personal[:, 3:])


# -- the stress head on physiology alone ------------------------------------------------------------------------
def test_stress_from_personal_shapes_and_gradients() -> None:
    torch.manual_seed(0)
    net = MultiTaskNet(**SMALL_NET, fps=25.0, roi_frames=50)
    personal = torch.randn(5, 6)
    mask = torch.rand(5, 6) > 0.3
    out = net.stress_from_personal(personal, mask)
    assert set(out) == {"stress_logits", "stress_probs"}
    assert out["stress_logits"].shape == (5, 3)
    torch.testing.assert_close(out["stress_probs"].sum(1), torch.ones(5))
    out["stress_logits"].pow(2).sum().backward()
    outside = [n for n, p in net.named_parameters() if not n.startswith("stress_head.") and p.grad is not None]
    assert all(net.get_parameter(n).grad.abs().sum() == 0 for n in outside), outside
    assert net.stress_head.mlp[0].weight.grad.abs().sum() > 0
    # Masked personal values do not matter.
    a = personal.clone()
    a[~mask] = 1e3
    net.eval()
    torch.testing.assert_close(
        net.stress_from_personal(a, mask)["stress_logits"], net.stress_from_personal(personal, mask)["stress_logits"]
    )


def test_stress_head_ignores_video_inputs_where_absent() -> None:
    torch.manual_seed(0)
    head = StressHead(num_expressions=7, rppg_dim=16, context_dim=32).eval()

    def video_inputs(seed: int):
        g = torch.Generator().manual_seed(seed)
        return (
            torch.softmax(torch.randn(4, 7, generator=g), 1),
            60 + 40 * torch.rand(4, generator=g),
            10 + 80 * torch.rand(4, generator=g),
            0.2 + 3 * torch.rand(4, generator=g),
            torch.randn(4, 16, generator=g) * 5,
        ), torch.randn(4, 32, generator=g)

    personal, mask = torch.randn(4, 6), torch.ones(4, 6, dtype=torch.bool)
    absent = torch.zeros(4, dtype=torch.bool)
    outputs = []
    for seed in (1, 2):
        inputs, context = video_inputs(seed)
        outputs.append(head(*inputs, context, personal=personal, personal_mask=mask, video_mask=absent))
    torch.testing.assert_close(outputs[0], outputs[1])
    present = torch.ones(4, dtype=torch.bool)
    seen = [head(*video_inputs(s)[0], video_inputs(s)[1], personal=personal, video_mask=present) for s in (1, 2)]
    assert not torch.allclose(seen[0], seen[1])
    # No personal physiology at all is the same as an all-False mask.
    inputs, context = video_inputs(3)
    torch.testing.assert_close(
        head(*inputs, context), head(*inputs, context, personal=personal, personal_mask=torch.zeros(4, 6))
    )
    with pytest.raises(ValueError, match="personal must be"):
        head(*inputs, context, personal=torch.zeros(4, 5))


def test_masked_personal_path_learns_a_separable_problem() -> None:
    torch.manual_seed(0)
    net = MultiTaskNet(**SMALL_NET, fps=25.0, roi_frames=50, dropout=0.1)
    g = torch.Generator().manual_seed(0)
    n = 384
    labels = torch.randint(0, 3, (n,), generator=g)
    # HR level decides the class (low -1.5, normal 0, high +1.5); log RMSSD level mirrors it; now-values are noise.
    personal = torch.randn(n, 6, generator=g) * 0.4
    personal[:, 0] += (labels.float() - 1) * 1.5
    personal[:, 1] -= (labels.float() - 1) * 1.5
    mask = torch.rand(n, 6, generator=g) > 0.2
    mask[:, 0] |= ~mask[:, 1]  # at least one informative feature per sample
    personal = torch.where(mask, personal, torch.zeros_like(personal))
    optimizer = torch.optim.Adam(net.stress_head.parameters(), lr=1e-2)
    net.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: a second thread only waits on a busy machine
    try:
        for _ in range(150):
            idx = torch.randint(0, n, (64,), generator=g)
            logits = net.stress_from_personal(personal[idx], mask[idx])["stress_logits"]
            loss = torch.nn.functional.cross_entropy(logits, labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    net.eval()
    with torch.no_grad():
        accuracy = (net.stress_from_personal(personal, mask)["stress_logits"].argmax(1) == labels).float().mean()
    assert accuracy > 0.9, accuracy


# -- the real file ----------------------------------------------------------------------------------------------
@pytest.mark.shared_data
def test_real_file_reads_cleanly() -> None:
    if not (REAL_ROOT / "physiology_features.csv").is_file():
        pytest.skip(f"shared data absent: {REAL_ROOT} (the SWELL-KW feature file)")
    corpus = SwellKwCorpus()
    items = corpus.read_checked(REAL_ROOT)
    assert corpus.problems == []
    assert len({it.subject_id for it in items}) == 25
    assert {f"PP{i}" for i in range(1, 26)} == {it.subject_id for it in items}
    minutes = 0
    for item in items:
        assert len(set(item.stress.labels())) == 1, item.item_id  # every recording is one condition
        series = corpus.load_physiology(item)
        assert (np.diff(series.times_s) == 60.0).all(), item.item_id
        minutes += len(series)
    assert minutes == 3140  # every row of the file, the 7 truncated stamps included
    pp6 = {it.item_id: it for it in items if it.subject_id == "PP6"}
    rest = corpus.load_physiology(next(it for it in pp6.values() if it.item_id.endswith("T1619")))
    assert rest.eda[1] == pytest.approx(108.282561)  # the `20121001T162` row, between 16:19 and 16:21
