"""The manifest reader (users' own data) on CSV and JSONL manifests written here: videos with dropped frames, images,
frame folders with timestamps, ECG/PPG/HR files in each accepted form, attributes, stress segments, expression
events, given and automatic splits, every malformed variant in both on_error modes, and one end-to-end run of
ClipDataModule over the real face video with an ECG beside it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import stress_lightning.data.corpora.manifest  # noqa: F401  (registers)
from stress_lightning.cli import main
from stress_lightning.data.cache import ClipCache, Preprocessing
from stress_lightning.data.corpora import CORPORA, build_corpus
from stress_lightning.data.corpora.base import split_subjects
from stress_lightning.data.corpora.image_folder import safe_item_id
from stress_lightning.data.datamodules import ClipDataModule
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.items import (
    ClassLabel,
    ExpressionTimeline,
    FrameFiles,
    ImageFile,
    Item,
    StressSegments,
    VideoFile,
)
from stress_lightning.data.physiology import CardiacSeries, EcgMorphology, synthesize_ecg
from stress_lightning.data.video import iter_timed_frames

W, H = 64, 48
COLUMNS = [
    "path",
    "subject",
    "expression",
    "stress",
    "stress_segments",
    "expression_events",
    "frame_times",
    "fps",
    "cardiac",
    "cardiac_kind",
    "cardiac_fs_hz",
    "cardiac_offset_s",
    "cardiac_column",
    "gender",
    "skin_tone",
    "age",
]


def picture(i: int) -> np.ndarray:
    """A frame with a bright square that moves with i (compresses well, decodes to distinct frames)."""
    rgb = np.full((H, W, 3), 60, np.uint8)
    x = 4 + (i * 2) % (W - 20)
    rgb[10:30, x : x + 16] = (200, 150, 120)
    return rgb


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_manifest(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    """CSV (every column, empty where a row lacks it) or JSONL (only the keys a row has), by suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".jsonl", ".json"):
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return path
    columns = columns or list(dict.fromkeys(k for row in rows for k in row))
    return write_csv(path, columns, [[row.get(c, "") for c in columns] for row in rows])


def sine_ecg(seconds: float, fs: float = 250.0) -> np.ndarray:
    return np.sin(2 * np.pi * 1.2 * np.arange(int(seconds * fs)) / fs)


@pytest.fixture
def corpus_root(tmp_path: Path, video_writer) -> Path:
    """Media and side files of four items (no manifest yet): s01 an H.264 MP4 with three dropped frames and a
    250 Hz ECG (one column) starting 2 s before it; s02 an image; s03 a frame folder with irregular timestamps
    and an irregularly sampled PPG (time_s column); s04 an XVID AVI with a 1 Hz heart-rate text file."""
    root = tmp_path / "corpus"
    (root / "videos").mkdir(parents=True)
    video_writer(root / "videos" / "s01 task.mp4", [(i / 30, picture(i)) for i in range(90) if i not in (30, 31, 32)])
    video_writer(root / "videos" / "s04.avi", [(i / 25, picture(i)) for i in range(50)], tag="XVID", rate=25)
    (root / "images").mkdir()
    assert cv2.imwrite(str(root / "images" / "s02.png"), picture(3))
    frames = root / "frames" / "s03"
    frames.mkdir(parents=True)
    for i in range(12):  # frame_10 and frame_11 sort after frame_9
        assert cv2.imwrite(str(frames / f"frame_{i}.png"), picture(i))
    times = np.round(np.cumsum(np.r_[0.0, np.full(11, 0.1) + 0.02 * (np.arange(11) % 3)]), 3)
    write_csv(root / "frames" / "s03_times.csv", ["time_s"], [[t] for t in times])
    signals = root / "signals"
    write_csv(signals / "s01_ecg.csv", ["ecg"], [[f"{v:.6f}"] for v in sine_ecg(6.0)])
    ppg_t = np.cumsum(np.random.default_rng(0).uniform(0.015, 0.025, 300))
    write_csv(signals / "s03_ppg.csv", ["time_s", "ppg"], [[f"{t:.4f}", f"{np.sin(7 * t):.5f}"] for t in ppg_t])
    (signals / "s04_hr.txt").write_text("".join(f"{70 + k}\n" for k in range(4)))
    write_csv(root / "labels" / "s03_stress.csv", ["start_s", "end_s", "label"], [[0, 0.6, "rest"], [0.6, 1.4, "T"]])
    write_csv(
        root / "labels" / "s04_events.csv",
        ["start_s", "apex_start_s", "apex_end_s", "end_s", "label"],
        [[0.2, 0.4, 0.8, 1.0, "happiness"], [1.2, 1.3, 1.5, 1.6, "ANG"]],
    )
    return root


ROWS = [
    {
        "path": "videos/s01 task.mp4",
        "subject": "s01",
        "expression": "happiness",
        "stress": "High",
        "cardiac": "signals/s01_ecg.csv",
        "cardiac_kind": "ecg",
        "cardiac_fs_hz": 250,
        "cardiac_offset_s": 2.0,
        "gender": "f",
        "skin_tone": "V",
        "age": 34,
    },
    {"path": "images/s02.png", "subject": "s02", "expression": "HAP", "gender": "m", "skin_tone": ""},
    {
        "path": "frames/s03",
        "subject": "s03",
        "stress_segments": "labels/s03_stress.csv",
        "frame_times": "frames/s03_times.csv",
        "cardiac": "signals/s03_ppg.csv",
        "cardiac_kind": "ppg",
        "cardiac_offset_s": 0.5,
        "gender": "f",
        "age": 51,
    },
    {
        "path": "videos/s04.avi",
        "subject": "s04",
        "stress": "low",
        "expression_events": "labels/s04_events.csv",
        "cardiac": "signals/s04_hr.txt",
        "cardiac_kind": "HR",
        "cardiac_fs_hz": 1,
    },
]


def by_id(items: list[Item]) -> dict[str, Item]:
    return {item.item_id: item for item in items}


def read(root: Path, on_error: str = "fail", **options) -> tuple[list[Item], object]:
    corpus = build_corpus("manifest", on_error=on_error, **options)
    return corpus.read_checked(root), corpus


def test_registered_with_options_layout_and_url() -> None:
    assert "manifest" in CORPORA.names()
    corpus = build_corpus("manifest", path="lists/m.jsonl", split_fractions=[0.5, 0.25, 0.25], seed=3)
    assert corpus.options() == {"path": "lists/m.jsonl", "split_fractions": [0.5, 0.25, 0.25], "seed": 3}
    assert corpus.layout and corpus.url and corpus.expression_map == {} and corpus.stress_map == {}
    with pytest.raises(ValueError, match="split_fractions"):
        build_corpus("manifest", split_fractions=[0.5, 0.5, 0.5])


def test_csv_manifest_reads_media_labels_attributes_and_auto_splits(corpus_root: Path) -> None:
    write_manifest(corpus_root / "manifest.csv", ROWS, COLUMNS)
    items, _ = read(corpus_root)
    got = by_id(items)
    assert sorted(got) == sorted(
        ["frames/s03", "images/s02.png", safe_item_id("videos/s01 task.mp4"), "videos/s04.avi"]
    )
    assert safe_item_id("videos/s01 task.mp4").startswith("videos/s01_task.mp4-")
    s01, s02, s03, s04 = (got[k] for k in sorted(got, key=lambda k: got[k].subject_id))
    # Media: a video (its three dropped frames are a gap in time), an image, frames in natural order.
    assert s01.media == VideoFile(corpus_root / "videos" / "s01 task.mp4")
    times = [t for t, _ in iter_timed_frames(s01.media.path)]
    assert len(times) == 87 and max(np.diff(times)) == pytest.approx(4 / 30, abs=2e-3)
    assert s02.media == ImageFile(corpus_root / "images" / "s02.png")
    assert isinstance(s03.media, FrameFiles)
    assert [p.name for p in s03.media.paths][-3:] == ["frame_9.png", "frame_10.png", "frame_11.png"]
    assert s03.media.timestamps_s[:4] == pytest.approx([0.0, 0.1, 0.22, 0.36])
    assert isinstance(s04.media, VideoFile)
    # Labels as written; the taxonomy maps them (the corpus maps stay empty).
    assert s01.expression == ClassLabel("happiness") and s01.stress == ClassLabel("High")
    assert s02.expression == ClassLabel("HAP") and s02.stress is None
    assert isinstance(s03.stress, StressSegments) and s03.stress.label_over(0.7, 1.3) == "T"
    assert s03.stress.label_over(0.5, 0.7) is None and s03.expression is None
    assert isinstance(s04.expression, ExpressionTimeline) and s04.expression.labels() == ["happiness", "ANG"]
    assert s04.expression.label_at(0.5) == "happiness" and s04.expression.label_at(0.3) is None
    # Cardiac references, attributes (text, empty values left out).
    assert (s01.cardiac.kind, s01.cardiac.fs_hz, s01.cardiac.offset_s) == ("ecg", 250.0, 2.0)
    assert (s03.cardiac.kind, s03.cardiac.fs_hz, s03.cardiac.offset_s) == ("ppg", None, 0.5)
    assert (s04.cardiac.kind, s04.cardiac.fs_hz) == ("hr", 1.0)
    assert s01.attributes == {"gender": "f", "skin_tone": "V", "age": "34"}
    assert s02.attributes == {"gender": "m"} and s04.attributes == {} and s02.cardiac is None
    # No split column: subject-disjoint split_subjects over all subjects.
    expected = split_subjects(["s01", "s02", "s03", "s04"], (0.7, 0.15, 0.15), 0)
    assert {it.subject_id: it.split for it in items} == expected
    assert {it.split for it in items} == {"train", "val", "test"}


def test_jsonl_manifest_gives_the_same_items_with_given_splits(corpus_root: Path) -> None:
    write_manifest(corpus_root / "manifest.csv", ROWS, COLUMNS)
    csv_items, _ = read(corpus_root)
    # JSON numbers and nulls, split names in any case and alias, paths relative to the manifest's own folder.
    files = ("path", "frame_times", "stress_segments", "expression_events", "cardiac")
    rows = [
        {**{k: f"../{v}" if k in files else v for k, v in row.items()}, "split": split, "notes": None}
        for row, split in zip(ROWS, ["train", "Val", "test", "training"], strict=True)
    ]
    write_manifest(corpus_root / "lists" / "all.jsonl", rows)
    items, _ = read(corpus_root, path="lists/all.jsonl")
    assert [it.split for it in items] == ["train", "val", "test", "train"]
    assert [it.item_id for it in items] == [
        safe_item_id("__/videos/s01 task.mp4"),
        "__/images/s02.png",
        "__/frames/s03",
        "__/videos/s04.avi",
    ]
    for a, b in zip(csv_items, items, strict=True):
        assert a.media == b.media and a.expression == b.expression and a.stress == b.stress
        assert a.cardiac == b.cardiac and a.attributes == b.attributes  # JSON null is an absent value


def test_load_cardiac_puts_each_signal_on_the_video_clock(corpus_root: Path) -> None:
    write_manifest(corpus_root / "manifest.csv", ROWS, COLUMNS)
    items, corpus = read(corpus_root)
    s01, s03, s04 = (next(it for it in items if it.subject_id == s) for s in ("s01", "s03", "s04"))
    ecg = corpus.load_cardiac(s01)  # uniform, starting 2 s before the video's first frame
    assert ecg.kind == "ecg" and ecg.fs_hz == 250.0 and ecg.start_s == -2.0 and ecg.times_s is None
    t = ecg.times()
    assert t[500] == pytest.approx(0.0) and ecg.values[500] == pytest.approx(np.sin(2 * np.pi * 1.2 * 2.0), abs=1e-5)
    assert ecg.end_s == pytest.approx(4.0 - 1 / 250)
    ppg = corpus.load_cardiac(s03)  # irregular: per-sample times minus the offset
    raw = np.loadtxt(corpus_root / "signals" / "s03_ppg.csv", delimiter=",", skiprows=1)
    assert ppg.fs_hz is None and ppg.times_s == pytest.approx(raw[:, 0] - 0.5)
    assert ppg.values == pytest.approx(raw[:, 1])
    hr = corpus.load_cardiac(s04)  # plain text, one value a line, at 1 Hz
    assert hr.kind == "hr" and list(hr.values) == [70, 71, 72, 73] and list(hr.times()) == [0, 1, 2, 3]
    assert corpus.check(s01) == [] and corpus.check(s04) == []


def test_cardiac_npy_headerless_and_multicolumn_files(corpus_root: Path) -> None:
    signals = corpus_root / "signals"
    np.save(signals / "ecg.npy", sine_ecg(6.0))
    write_csv(signals / "multi.csv", ["time_s", "ecg", "ppg"], [[k / 100, k, -k] for k in range(400)])
    (signals / "bare.csv").write_text("".join(f"{v:.4f}\n" for v in sine_ecg(5.0, 100.0)))
    base = {"path": "videos/s04.avi", "subject": "s04"}
    rows = [
        {**base, "id": "npy", "cardiac": "signals/ecg.npy", "cardiac_kind": "ecg", "cardiac_fs_hz": 250},
        {**base, "id": "multi", "cardiac": "signals/multi.csv", "cardiac_kind": "ppg", "cardiac_column": "ppg"},
        {**base, "id": "bare", "cardiac": "signals/bare.csv", "cardiac_kind": "ppg", "cardiac_fs_hz": 100},
    ]
    write_manifest(corpus_root / "m.jsonl", rows)
    items, corpus = read(corpus_root, path="m.jsonl")
    npy, multi, bare = (corpus.load_cardiac(it) for it in items)
    assert npy.values == pytest.approx(sine_ecg(6.0)) and npy.fs_hz == 250
    assert multi.values[:3] == pytest.approx([0, -1, -2]) and multi.times_s[:3] == pytest.approx([0, 0.01, 0.02])
    assert len(bare.values) == 500 and bare.fs_hz == 100 and bare.values[0] == 0.0


# 3 s of a 100 Hz PPG (the 2 s video of s04 is covered) with one sample missing.
NAN_PPG = "ppg\n" + "".join("nan\n" if k == 50 else f"{np.sin(2 * np.pi * 1.2 * k / 100):.4f}\n" for k in range(300))


@pytest.mark.parametrize(
    ("file_name", "content", "fs", "column", "reason"),
    [
        ("no_rate.csv", "ecg\n1\n2\n3\n", None, None, "no time_s column"),
        ("no_rate.npy", None, None, None, "no time_s column"),
        ("missing_column.csv", "time_s,ecg\n0,1\n1,2\n", None, "ppg", "has no column 'ppg'"),
        ("backwards.csv", "time_s,ppg\n0,1\n0.5,2\n0.4,3\n1,4\n", None, None, "do not increase"),
        # NaN is a dropout: not refused, but named (bridged here: 20 ms); gaps are tried in test_bad_corpus_inputs.
        ("nan.csv", NAN_PPG, 100.0, None, "1 missing (NaN) samples"),
        ("text.csv", "ppg\n1\nabc\n3\n", 100.0, None, "non-numeric"),
        ("times_ms.csv", "time_s,ppg\n0,1\n10,2\n20,3\n30,4\n", None, None, "as its sample times imply"),
        ("two.csv", "time_s,ecg,ppg\n0,1,2\n1,2,3\n", None, None, "cardiac_column"),
    ],
)
def test_bad_cardiac_files_are_reported_by_path(
    corpus_root: Path, file_name: str, content: str | None, fs: float | None, column: str | None, reason: str, bad_input
) -> None:
    path = corpus_root / "signals" / file_name
    if content is None:
        np.save(path, np.arange(10.0))
    else:
        path.write_text(content)
    row = {"path": "videos/s04.avi", "subject": "s04", "cardiac": f"signals/{file_name}", "cardiac_kind": "ppg"}
    row.update({"cardiac_fs_hz": fs} if fs else {})
    row.update({"cardiac_column": column} if column else {})
    write_manifest(corpus_root / "manifest.jsonl", [row, {"path": "images/s02.png", "subject": "s02"}])
    corpus = build_corpus("manifest", path="manifest.jsonl", on_error="skip")
    items = corpus.read_checked(corpus_root)
    # A file without times or rate (or without the named column) is refused on reading (its header says so),
    # anything else when the file is loaded: check (data summary) and the labelling name the file.
    problems = corpus.problems if len(items) == 1 else [p for it in items for p in corpus.check(it)]
    assert [p.path for p in problems] == [str(path)] and reason in problems[0].reason
    described = {
        "no_rate.csv": "PPG CSV without time_s and no cardiac_fs_hz (on reading)",
        "no_rate.npy": "PPG .npy and no cardiac_fs_hz (on reading)",
        "missing_column.csv": "cardiac_column naming a column the file lacks (on reading)",
        "backwards.csv": "PPG CSV whose time_s goes backwards (data summary)",
        "nan.csv": "PPG CSV with one NaN sample (data summary)",
        "text.csv": "PPG CSV with a line of text (data summary)",
        "times_ms.csv": "PPG CSV whose time_s is in milliseconds (data summary)",
        "two.csv": "cardiac CSV with two value columns and no cardiac_column (data summary)",
    }
    bad_input.record("physiology", described[file_name], f"{problems[0].path}: {problems[0].reason}")
    if file_name in ("nan.csv", "times_ms.csv"):  # the file loads; labelling bridges the gap or refuses the rate
        return
    if len(items) == 2:
        with pytest.raises(CorpusError, match=reason) as err:
            corpus.load_cardiac(items[0])
        assert err.value.path == path
    else:
        with pytest.raises(CorpusError, match=reason):
            read(corpus_root, path="manifest.jsonl")


def test_splits_given_unknown_mixed_and_shared_subjects(corpus_root: Path) -> None:
    rows = [{"path": "images/s02.png", "subject": f"p{i}", "id": f"i{i}", "split": "train"} for i in range(3)]
    write_manifest(corpus_root / "manifest.csv", [*rows[:2], {**rows[2], "split": "holdout"}])
    with pytest.raises(CorpusError, match=r"line 4: unknown split 'holdout'") as err:
        read(corpus_root, on_error="skip")
    assert err.value.path == corpus_root / "manifest.csv"
    # Some rows with a split, some without: the rows are reported (fail) or left out (skip).
    write_manifest(corpus_root / "manifest.csv", [*rows[:2], {**rows[2], "split": ""}])
    with pytest.raises(CorpusError, match=r"line\(s\) 4 give no split"):
        read(corpus_root)
    items, corpus = read(corpus_root, on_error="skip")
    assert [it.item_id for it in items] == ["i0", "i1"] and "line(s) 4" in corpus.problems[0].reason
    # One subject in two splits breaks subject-disjointness whatever on_error says.
    write_manifest(corpus_root / "manifest.csv", [*rows[:2], {**rows[2], "subject": "p0", "split": "test"}])
    with pytest.raises(CorpusError, match=r"subject 'p0' is in train \(line 2\) and in test \(line 4\)"):
        read(corpus_root, on_error="skip")


def test_missing_required_columns_and_values(corpus_root: Path) -> None:
    write_csv(corpus_root / "manifest.csv", ["path", "expression"], [["images/s02.png", "happy"]])
    with pytest.raises(CorpusError, match=r"missing required column\(s\) \['subject'\]") as err:
        read(corpus_root, on_error="skip")
    assert err.value.path == corpus_root / "manifest.csv"
    write_manifest(corpus_root / "m.jsonl", [{"path": "images/s02.png", "subject": "a"}, {"subject": "b"}])
    with pytest.raises(CorpusError, match=r"line 2: required column 'path' is empty or absent"):
        read(corpus_root, path="m.jsonl", on_error="skip")
    (corpus_root / "bad.jsonl").write_text('{"path": "images/s02.png", "subject": "a"}\n{"path": \n')
    with pytest.raises(CorpusError, match=r"line 2: not valid JSON"):
        read(corpus_root, path="bad.jsonl")
    with pytest.raises(CorpusError, match="manifest file is missing"):
        read(corpus_root, path="nothing.csv")


def test_missing_media_fail_and_skip(corpus_root: Path) -> None:
    (corpus_root / "videos" / "s04.avi").unlink()
    write_manifest(corpus_root / "manifest.csv", ROWS, COLUMNS)
    with pytest.raises(CorpusError, match=r"file is missing \(column path, manifest.csv line 5\)") as err:
        read(corpus_root)
    assert err.value.path == corpus_root / "videos" / "s04.avi"
    items, corpus = read(corpus_root, on_error="skip")
    assert sorted(it.subject_id for it in items) == ["s01", "s02", "s03"]
    assert [p.path for p in corpus.problems] == [str(corpus_root / "videos" / "s04.avi")]
    # A missing side file is the same kind of problem, named by its own path.
    (corpus_root / "labels" / "s03_stress.csv").unlink()
    items, corpus = read(corpus_root, on_error="skip")
    assert sorted(it.subject_id for it in items) == ["s01", "s02"]
    assert corpus.problems[0].path == str(corpus_root / "labels" / "s03_stress.csv")
    assert "column stress_segments, manifest.csv line 4" in corpus.problems[0].reason


def test_duplicate_ids_and_bad_frame_folders_and_side_files(corpus_root: Path) -> None:
    frames = {"path": "frames/s03", "subject": "s03"}
    rows = [
        {"path": "images/s02.png", "subject": "a"},
        {"path": "images/s02.png", "subject": "b"},  # same derived id
        {**frames, "id": "no_rate"},
        {**frames, "id": "rate", "fps": "12.5"},
        {**frames, "id": "bad_fps", "fps": "fast"},
        {**frames, "id": "backwards", "frame_times": "frames/backwards.csv"},
        {**frames, "id": "short", "frame_times": "frames/short.csv"},
        {"path": "images/s02.png", "subject": "c", "id": "both", "stress": "high", "stress_segments": "l/s.csv"},
        {"path": "images/s02.png", "subject": "d", "id": "overlap", "stress_segments": "labels/overlap.csv"},
    ]
    write_csv(corpus_root / "frames" / "backwards.csv", ["time_s"], [[k / 10] for k in range(11)] + [[0.5]])
    write_csv(corpus_root / "frames" / "short.csv", ["time_s"], [[k / 10] for k in range(5)])
    write_csv(corpus_root / "l" / "s.csv", ["start_s", "end_s", "label"], [[0, 1, "low"]])
    write_csv(corpus_root / "labels" / "overlap.csv", ["start_s", "end_s", "label"], [[0, 2, "low"], [1, 3, "high"]])
    manifest = write_manifest(corpus_root / "manifest.csv", rows)
    items, corpus = read(corpus_root, on_error="skip")
    assert [it.item_id for it in items] == ["images/s02.png", "rate"]
    assert items[1].media.fps == 12.5 and items[1].media.timestamps_s is None
    found = [(Path(p.path).name, p.reason) for p in corpus.problems]
    assert found[0] == (
        "manifest.csv",
        "line 3: item id 'images/s02.png' is already used on line 2 (give the rows distinct `id`s)",
    )
    assert "line 4: frame folder" in found[1][1] and "needs `fps` or `frame_times`" in found[1][1]
    assert found[2] == ("manifest.csv", "line 6: column fps must be a positive number, got 'fast'")
    assert found[3][0] == "backwards.csv" and "frame times do not increase: data row 12 has 0.5" in found[3][1]
    assert found[4] == (
        "short.csv",
        f"has 5 frame times but {corpus_root / 'frames' / 's03'} holds 12 frames (listed in manifest.csv line 8)",
    )
    assert found[5] == ("manifest.csv", "line 9: give `stress` or `stress_segments`, not both")
    assert found[6][0] == "overlap.csv" and "overlap" in found[6][1]
    with pytest.raises(CorpusError) as err:
        read(corpus_root)
    assert err.value.path == manifest and "line 3" in err.value.problem


def test_check_summary_and_cache_name_truncated_video_and_short_cardiac(
    corpus_root: Path, tmp_path: Path, capsys, bad_input
) -> None:
    video = corpus_root / "videos" / "s01 task.mp4"
    data = video.read_bytes()
    truncated = corpus_root / "videos" / "cut.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    short = write_csv(corpus_root / "signals" / "short.csv", ["ecg"], [[v] for v in sine_ecg(1.0)])
    rows = [
        {**ROWS[0], "cardiac": "signals/short.csv", "cardiac_offset_s": 0},  # 1 s of ECG for a 3 s video
        {"path": "videos/cut.mp4", "subject": "s09", "expression": "sad"},
        ROWS[1],
    ]
    write_manifest(corpus_root / "manifest.csv", rows)
    items, corpus = read(corpus_root)
    problems = [p for it in items for p in corpus.check(it)]
    assert [p.path for p in problems] == [str(short), str(truncated)]
    assert "ground truth shorter than the video" in problems[0].reason
    capsys.readouterr()
    main(["data", "summary", "--corpus", "manifest", "--root", str(corpus_root), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert [p["path"] for p in summary["problems"]] == [str(short), str(truncated)]
    assert summary["cardiac"] == {"ecg": 1, "ppg": 0, "hr": 0, "none": 2}
    assert summary["stress"]["high"] == 1 and summary["expression"]["sad"] == 1 and summary["expression"]["happy"] == 2
    status = main(["data", "summary", "--corpus", "manifest", "--root", str(corpus_root)])
    out = capsys.readouterr().out
    assert f"{short}: ground truth covers" in out
    case = "manifest: 1 s of ECG beside a 3 s video, and an MP4 cut in half (`data summary`)"
    bad_input.record("physiology", case, out[out.index("problems: 2") :], status)
    # The cache names the truncated video too (skip: recorded; fail: raised), it does not crash.
    cut = [it for it in items if it.media == VideoFile(truncated)]
    skip = build_corpus("manifest", on_error="skip")
    report = ClipCache(tmp_path / "cache", "manifest", "x", Preprocessing(fps=15.0)).build(skip, cut, progress=False)
    assert [p.path for p in report.problems] == [str(truncated)]
    with pytest.raises(CorpusError) as err:
        ClipCache(tmp_path / "cache2", "manifest", "x", Preprocessing(fps=15.0)).build(corpus, cut, progress=False)
    assert err.value.path == truncated
    bad_input.record("corpus files", "manifest MP4 cut in half (cache build, on_error=fail)", str(err.value))


def _ecg_at_72_bpm(seconds: float, fs: float = 250.0) -> np.ndarray:
    """An ECG with one beat every 60/72 s (no variability), from the package's wave model."""
    rng = np.random.default_rng(1)
    beats = np.arange(-1.0, seconds + 2.0, 60.0 / 72.0) + 0.3
    grid = np.arange(0.0, seconds, 0.25)
    series = CardiacSeries(beats, grid, np.zeros_like(grid))
    return synthesize_ecg(series, EcgMorphology.sample(rng), fs, int(seconds * fs), rng)


def test_end_to_end_clips_from_a_real_face_video_with_an_ecg(tmp_path: Path, face_video: Path, video_writer) -> None:
    root = tmp_path / "mine"
    root.mkdir()
    frames = [
        (t, cv2.resize(rgb, (320, 180), interpolation=cv2.INTER_AREA)) for t, rgb in iter_timed_frames(face_video)
    ]
    step = frames[1][0] - frames[0][0]
    # Played forward then backward: 4.8 s of continuous face, long enough for 3 s clips with several beats.
    looped = frames + [(frames[-1][0] + (k + 1) * step, rgb) for k, (_, rgb) in enumerate(reversed(frames))]
    video_writer(root / "clip.mp4", looped)
    write_csv(root / "ecg.csv", ["lead_ii"], [[f"{v:.5f}"] for v in _ecg_at_72_bpm(8.0)])
    row = {
        "path": "clip.mp4",
        "subject": "p1",
        "split": "train",
        "expression": "happiness",
        "stress": "stressed",
        "cardiac": "ecg.csv",
        "cardiac_kind": "ecg",
        "cardiac_fs_hz": 250,
        "cardiac_offset_s": 1.5,
        "gender": "f",
    }
    write_manifest(root / "manifest.csv", [row])
    dm = ClipDataModule(
        corpus="manifest",
        root=str(root),
        corpus_options={"path": "manifest.csv"},
        cache_dir=str(tmp_path / "cache"),
        fps=15.0,
        clip_seconds=3.0,
        face_frames=2,
        face_span_s=0.2,
        face_size=32,
        batch_size=2,
        progress=False,
        workers=1,
        augment=False,
    )
    dm.prepare_data()
    dm.setup("fit")
    assert dm.problems == []
    batch = next(iter(dm.train_dataloader()))
    assert batch["frames"].shape[:2] == (2, 2) and not batch["still"].any()
    assert batch["hr_mask"].all() and batch["expression_mask"].all() and batch["stress_mask"].all()
    assert batch["hr_bpm"].numpy() == pytest.approx([72.0, 72.0], abs=1.5)
    assert (batch["expression"] == dm.expression_classes.index("happy")).all()
    assert (batch["stress"] == dm.stress_levels.index("high")).all()


def test_absolute_paths_face_boxes_audio_and_malformed_csv(corpus_root: Path, tmp_path: Path, bad_input) -> None:
    elsewhere = tmp_path / "elsewhere" / "s05.png"
    elsewhere.parent.mkdir()
    assert cv2.imwrite(str(elsewhere), picture(5))
    write_csv(corpus_root / "boxes" / "s05.csv", ["frame", "x0", "y0", "x1", "y1"], [[0, 4, 6, 40, 44]])
    write_csv(corpus_root / "boxes" / "s04.csv", ["frame", "x0", "y0", "x1", "y1"], [[0, 4, 6, 2, 44]])
    (corpus_root / "s04.wav").write_bytes(b"RIFF")
    rows = [
        {"path": str(elsewhere), "subject": "s05", "face_boxes": "boxes/s05.csv"},
        {"path": str(corpus_root / "videos" / "s04.avi"), "subject": "s04", "face_boxes": "boxes/s04.csv"},
        {"path": "videos/s04.avi", "subject": "s04", "id": "s04/again", "audio": "s04.wav"},
    ]
    write_manifest(corpus_root / "manifest.csv", rows)
    items, corpus = read(corpus_root)
    assert [it.item_id for it in items] == [elsewhere.as_posix().lstrip("/"), "videos/s04.avi", "s04/again"]
    assert items[0].media == ImageFile(elsewhere, (4.0, 6.0, 40.0, 44.0))
    assert items[2].audio == corpus_root / "s04.wav" and items[2].files()[-1] == items[2].audio
    # A video's box file is read by check (and the cache), not on reading: the empty box is named there.
    assert [(p.path, p.reason) for p in corpus.check(items[1])] == [
        (str(corpus_root / "boxes" / "s04.csv"), "contains non-finite or empty boxes")
    ]
    (corpus_root / "manifest.csv").write_text("path,subject\nimages/s02.png,s02,extra\n")
    with pytest.raises(CorpusError, match=r"manifest\.csv: line 2: has 3 fields but the header has 2") as err:
        read(corpus_root)
    bad_input.record("labels and tables", "manifest CSV row with an extra field", str(err.value))
