"""rPPG corpus readers (UBFC-rPPG, UBFC-Phys, PURE) on fixtures written here in each release's layout (file names,
formats, frame rates, dropped frames), with malformed variants in both on_error modes and one end-to-end data
module run over a real face video."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

import stress_lightning.data.corpora.pure  # noqa: F401  (registers)
import stress_lightning.data.corpora.ubfc_phys  # noqa: F401  (registers)
import stress_lightning.data.corpora.ubfc_rppg  # noqa: F401  (registers)
from stress_lightning.commands import data as data_command
from stress_lightning.data.cache import ClipCache, Preprocessing
from stress_lightning.data.corpora import CORPORA, build_corpus
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.items import FrameFiles, Item, VideoFile
from stress_lightning.data.labels import cardiac_truth
from stress_lightning.data.taxonomy import STRESS_LEVELS, LabelMap, canonical_stress
from stress_lightning.data.video import iter_timed_frames

PULSE_HZ = 1.2


def frames(duration_s: float, rate: float, drop: tuple[int, ...] = (), size: tuple[int, int] = (48, 64)):
    """(t, RGB) at `rate` for `duration_s`, the frames numbered in `drop` left out (a dropped frame)."""
    h, w = size
    ramp = np.tile((np.arange(w, dtype=np.uint8) * 3)[None, :], (h, 1))
    for i in range(round(duration_s * rate)):
        if i in drop:
            continue
        image = np.empty((h, w, 3), np.uint8)
        image[..., 0] = (i * 7) % 256
        image[..., 1] = ramp
        image[..., 2] = 128
        yield i / rate, image


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def subjects(items: list[Item], split: str) -> set[str]:
    return {item.subject_id for item in items if item.split == split}


def assert_subject_disjoint(items: list[Item]) -> None:
    train, val, test = (subjects(items, s) for s in ("train", "val", "test"))
    assert not (train & val) and not (train & test) and not (val & test)


def test_registered():
    for name in ("ubfc_rppg", "ubfc_phys", "pure"):
        assert name in CORPORA.names()
        corpus = build_corpus(name)
        assert corpus.layout and "http" in corpus.url and isinstance(corpus.options(), dict)


# -- UBFC-rPPG -------------------------------------------------------------------------------------------------
def ubfc_txt(path: Path, ppg: np.ndarray, hr: np.ndarray, times: np.ndarray) -> Path:
    """DATASET_2's ground_truth.txt: three lines of scientific-notation numbers separated by runs of spaces."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["".join(f"   {v:.7e}" for v in row) for row in (ppg, hr, times)]
    path.write_text("\n".join(lines) + "\n")
    return path


def ubfc_gt(path: Path, duration_s: float = 3.0, start_s: float = 0.0, rate: float = 30.0) -> Path:
    times = start_s + np.arange(round(duration_s * rate)) / rate
    return ubfc_txt(path, np.sin(2 * np.pi * PULSE_HZ * times), 72 + 0 * times, times)


def gtdump(path: Path, duration_s: float = 3.0, rate: float = 62.5) -> Path:
    """DATASET_1's gtdump.xmp: CSV without header, rows of time (ms), heart rate, SpO2, PPG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t_ms = np.arange(round(duration_s * rate)) * 1000 / rate
    rows = [
        f"{t:.0f},{70 + i % 3},98,{round(500 + 100 * np.sin(2 * np.pi * PULSE_HZ * t / 1000))}"
        for i, t in enumerate(t_ms)
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


def ubfc_video(write_video, path: Path, duration_s: float = 3.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, frames(duration_s, 30, drop=(40,)), rate=30, tag="XVID")
    return path


def write_ubfc(root: Path, write_video, d2: int = 5, d1: tuple[str, ...] = ("10-gt", "after-exercise")) -> None:
    for n in range(1, d2 + 1):
        ubfc_video(write_video, root / "DATASET_2" / f"subject{n}" / "vid.avi")
        ubfc_gt(root / "DATASET_2" / f"subject{n}" / "ground_truth.txt")
    for name in d1:
        video = "vid-12.avi" if name == "10-gt" else "vid.avi"
        ubfc_video(write_video, root / "DATASET_1" / name / video)
        gtdump(root / "DATASET_1" / name / "gtdump.xmp")


def test_ubfc_rppg_reads_both_parts_and_splits_by_subject(tmp_path, video_writer):
    write_ubfc(tmp_path, video_writer, d1=("10-gt", "before-exercise", "after-exercise"))
    corpus = build_corpus("ubfc_rppg")
    items = corpus.read_checked(tmp_path)
    by_id = {item.item_id: item for item in items}
    assert set(by_id) == {f"DATASET_2/subject{n}" for n in range(1, 6)} | {
        "DATASET_1/10-gt",
        "DATASET_1/before-exercise",
        "DATASET_1/after-exercise",
    }
    assert by_id["DATASET_1/before-exercise"].subject_id == by_id["DATASET_1/after-exercise"].subject_id
    assert by_id["DATASET_1/10-gt"].subject_id == "DATASET_1/10"
    assert by_id["DATASET_1/10-gt"].media == VideoFile(tmp_path / "DATASET_1" / "10-gt" / "vid-12.avi")
    assert by_id["DATASET_2/subject3"].subject_id == "subject3"
    assert by_id["DATASET_2/subject3"].attributes == {"part": "DATASET_2"}
    for item in items:
        assert item.expression is None and item.stress is None
        assert item.cardiac.kind == "ppg" and item.cardiac.offset_s == 0.0
    assert_subject_disjoint(items)
    assert len({s for s in ("train", "val", "test") if subjects(items, s)}) == 3
    assert [i.split for i in build_corpus("ubfc_rppg").read_checked(tmp_path)] == [i.split for i in items]
    assert corpus.check(by_id["DATASET_2/subject1"]) == [] and corpus.check(by_id["DATASET_1/10-gt"]) == []
    # Root may be the DATASET_2 folder itself.
    only = build_corpus("ubfc_rppg", split_fractions=(0.6, 0.2, 0.2), seed=3).read_checked(tmp_path / "DATASET_2")
    assert sorted(i.item_id for i in only) == [f"subject{n}" for n in range(1, 6)]
    with pytest.raises(ValueError, match="split_fractions"):
        build_corpus("ubfc_rppg", split_fractions=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="cardiac"):
        build_corpus("ubfc_rppg", cardiac="ecg")


def test_ubfc_rppg_cardiac_on_the_video_clock(tmp_path, video_writer):
    folder = tmp_path / "subject1"
    ubfc_video(video_writer, folder / "vid.avi")
    # The first time is not 0 and one time repeats (two samples logged together): times relative to the first
    # sample, the repeated pair averaged.
    times = 0.5 + np.arange(300) / 30.0
    times[101] = times[100]
    ppg = np.sin(2 * np.pi * PULSE_HZ * times)
    ubfc_txt(folder / "ground_truth.txt", ppg, 60 + np.arange(300) / 10, times)
    (item,) = build_corpus("ubfc_rppg").read_checked(tmp_path)
    signal = build_corpus("ubfc_rppg").load_cardiac(item)
    assert signal.kind == "ppg" and signal.source == folder / "ground_truth.txt"
    t = signal.times()
    assert len(t) == 299 and t[0] == 0.0 and np.all(np.diff(t) > 0)
    np.testing.assert_allclose(t[:100], np.arange(100) / 30.0, atol=1e-6)
    np.testing.assert_allclose(signal.values[100], (ppg[100] + ppg[101]) / 2, rtol=1e-6)
    np.testing.assert_allclose(signal.values[:100], ppg[:100], rtol=1e-6, atol=1e-7)
    truth = cardiac_truth(signal)
    assert truth.hr_bpm(2.0, 8.0) == pytest.approx(60 * PULSE_HZ, abs=1.0)

    hr_corpus = build_corpus("ubfc_rppg", cardiac="hr")
    (hr_item,) = hr_corpus.read_checked(tmp_path)
    hr = hr_corpus.load_cardiac(hr_item)
    assert hr.kind == "hr" and hr_item.cardiac.kind == "hr"
    np.testing.assert_allclose(hr.values[:3], [60.0, 60.1, 60.2], rtol=1e-6)

    # DATASET_1: times in ms, PPG in the 4th column.
    shutil.rmtree(tmp_path / "subject1")
    ubfc_video(video_writer, tmp_path / "DATASET_1" / "5-gt" / "vid.avi")
    gtdump(tmp_path / "DATASET_1" / "5-gt" / "gtdump.xmp")
    (item,) = build_corpus("ubfc_rppg").read_checked(tmp_path)
    signal = build_corpus("ubfc_rppg").load_cardiac(item)
    np.testing.assert_allclose(signal.times()[:3], [0.0, 0.016, 0.032], atol=1e-9)
    assert signal.values[0] == 500 and signal.end_s == pytest.approx(187 / 62.5)  # round(3 s x 62.5 Hz) = 188 rows


def write_ubfc_malformed(root: Path, write_video) -> dict[str, Path]:
    write_ubfc(root, write_video, d2=3, d1=())
    d2 = root / "DATASET_2"
    bad = {
        "no_video": ubfc_gt(d2 / "subject4" / "ground_truth.txt").parent / "vid.avi",
        "no_gt": ubfc_video(write_video, d2 / "subject5" / "vid.avi").parent / "ground_truth.txt",
    }
    t = np.arange(90) / 30
    bad["unequal"] = ubfc_txt(d2 / "subject6" / "ground_truth.txt", np.sin(t), np.ones(89), t)
    bad["non_numeric"] = ubfc_gt(d2 / "subject7" / "ground_truth.txt")
    bad["non_numeric"].write_text(bad["non_numeric"].read_text().replace("e+00", "e+0x", 1))
    bad["two_lines"] = ubfc_txt(d2 / "subject8" / "ground_truth.txt", np.sin(t), np.ones(90), t)
    bad["two_lines"].write_text("\n".join(bad["two_lines"].read_text().splitlines()[:2]) + "\n")
    for n in (4, 5, 6, 7, 8):
        if not (d2 / f"subject{n}" / "vid.avi").exists() and n != 4:
            ubfc_video(write_video, d2 / f"subject{n}" / "vid.avi")
    # Read fine, found by check: ground truth covering 1 s of a 3 s video, a video cut in half.
    ubfc_video(write_video, d2 / "subject9" / "vid.avi")
    bad["short_gt"] = ubfc_gt(d2 / "subject9" / "ground_truth.txt", duration_s=1.0)
    bad["truncated"] = truncate(ubfc_video(write_video, d2 / "subject90" / "vid.avi"))
    ubfc_gt(d2 / "subject90" / "ground_truth.txt")
    return bad


def test_ubfc_rppg_malformed_fail_and_skip(tmp_path, video_writer, bad_input):
    bad = write_ubfc_malformed(tmp_path, video_writer)
    with pytest.raises(CorpusError, match=r"subject4/vid\.avi: video is missing") as info:
        build_corpus("ubfc_rppg").read_checked(tmp_path)
    assert info.value.path == bad["no_video"]
    corpus = build_corpus("ubfc_rppg", on_error="skip")
    items = corpus.read_checked(tmp_path)
    assert sorted(i.item_id.split("/")[1] for i in items) == [
        "subject1",
        "subject2",
        "subject3",
        "subject9",
        "subject90",
    ]
    problems = {p.path: p.reason for p in corpus.problems}
    assert list(problems) == [str(bad[k]) for k in ("no_video", "no_gt", "unequal", "non_numeric", "two_lines")]
    assert "ground truth file is missing" in problems[str(bad["no_gt"])]
    assert "unequal lengths: PPG 90, heart rate 89, time 90" in problems[str(bad["unequal"])]
    assert "line 1 (PPG): value 1" in problems[str(bad["non_numeric"])]
    assert "2 non-empty lines; expected 3" in problems[str(bad["two_lines"])]
    by_id = {i.item_id: i for i in items}
    (short,) = corpus.check(by_id["DATASET_2/subject9"])
    assert short.path == str(bad["short_gt"]) and "shorter than the video" in short.reason
    for key, case in (
        ("unequal", "UBFC-rPPG ground_truth.txt whose heart-rate line is one value short"),
        ("non_numeric", "UBFC-rPPG ground_truth.txt with text in its PPG line"),
    ):
        bad_input.record("physiology", case, f"{bad[key]}: {problems[str(bad[key])]}")
    bad_input.record(
        "physiology", "UBFC-rPPG PPG of 1 s beside a 3 s video (data summary)", f"{short.path}: {short.reason}"
    )
    (cut,) = corpus.check(by_id["DATASET_2/subject90"])
    assert cut.path == str(bad["truncated"]) and "truncated" in cut.reason
    # The cache reports it by path too (skip mode: recorded, not raised).
    cache = ClipCache(tmp_path / "cache", "ubfc_rppg", "test", Preprocessing(fps=30, detector="haar"))
    report = cache.build(corpus, [by_id["DATASET_2/subject90"]], progress=False, workers=1)
    assert [p.path for p in report.problems] == [str(bad["truncated"])] and "truncated" in report.problems[0].reason


def test_ubfc_rppg_data_summary_lists_problems(tmp_path, video_writer, capsys):
    bad = write_ubfc_malformed(tmp_path, video_writer)
    capsys.readouterr()
    assert data_command.main(["summary", "--corpus", "ubfc_rppg", "--root", str(tmp_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert sum(s["items"] for s in summary["splits"].values()) == 5
    assert summary["cardiac"] == {"ecg": 0, "ppg": 5, "hr": 0, "none": 0}
    assert summary["expression"] == dict.fromkeys(summary["expression"], 0) and summary["stress"]["low"] == 0
    assert sorted(p["path"] for p in summary["problems"]) == sorted(str(p) for p in bad.values())
    data_command.main(["summary", "--corpus", "ubfc_rppg", "--root", str(tmp_path)])
    text = capsys.readouterr().out
    assert "problems: 7" in text and f"{bad['truncated']}: truncated" in text


# -- UBFC-Phys -------------------------------------------------------------------------------------------------
PHYS_INFO = {"s1": "s1\nf\ntest\n", "s2": "s2\nm\nctrl\n", "s3": "s3\nF\nctrl\n", "s4": "s4\nm\ntest\n"}


def write_phys_subject(folder: Path, subject: str, write_video, duration_s: float = 2.0, tasks=("T1", "T2", "T3")):
    folder.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        write_video(folder / f"vid_{subject}_{task}.avi", frames(duration_s, 35, drop=(20,)), rate=35)
        t = np.arange(round(duration_s * 64)) / 64
        bvp = 50 * np.sin(2 * np.pi * PULSE_HZ * t)
        (folder / f"bvp_{subject}_{task}.csv").write_text("\n".join(f"{v:.6f}" for v in bvp) + "\n")
        eda = 0.5 + 0.01 * np.arange(round(duration_s * 4))
        (folder / f"eda_{subject}_{task}.csv").write_text("\n".join(f"{v:.6f}" for v in eda) + "\n")
    (folder / f"info_{subject}.txt").write_text(PHYS_INFO.get(subject, f"{subject}\nf\ntest\n"))


def write_phys(root: Path, write_video) -> None:
    # The layouts unpacked archives give: bundles (s1_to_s2/s1), an archive in its own folder (s3/s3), plain s4.
    write_phys_subject(root / "s1_to_s2" / "s1", "s1", write_video)
    write_phys_subject(root / "s1_to_s2" / "s2", "s2", write_video)
    write_phys_subject(root / "s3" / "s3", "s3", write_video)
    write_phys_subject(root / "s4", "s4", write_video)


def test_ubfc_phys_tasks_labels_attributes_and_splits(tmp_path, video_writer):
    write_phys(tmp_path, video_writer)
    corpus = build_corpus("ubfc_phys")
    items = corpus.read_checked(tmp_path)
    assert [i.item_id for i in items] == [f"s{n}/T{k}" for n in range(1, 5) for k in (1, 2, 3)]
    by_id = {i.item_id: i for i in items}
    assert by_id["s3/T2"].media == VideoFile(tmp_path / "s3" / "s3" / "vid_s3_T2.avi")
    assert by_id["s1/T3"].stress.label == "T3" and by_id["s1/T3"].expression is None
    assert by_id["s1/T1"].attributes == {"gender": "female", "group": "test"}
    assert by_id["s3/T1"].attributes == {"gender": "female", "group": "ctrl"}
    assert by_id["s2/T1"].attributes == {"gender": "male", "group": "ctrl"}
    assert_subject_disjoint(items)
    levels = LabelMap(STRESS_LEVELS, corpus.stress_map, synonyms=canonical_stress)
    assert [levels.index(t) for t in ("T1", "T2", "T3")] == [0, 1, 2]
    override = LabelMap(STRESS_LEVELS, corpus.stress_map, {"T2": "high"}, synonyms=canonical_stress)
    assert override.index("T2") == 2 and override.index("T1") == 0
    ref = by_id["s4/T2"].cardiac
    assert ref.kind == "ppg" and ref.fs_hz == 64.0 and ref.offset_s == 0.0
    signal = corpus.load_cardiac(by_id["s4/T2"])
    assert signal.fs_hz == 64.0 and signal.start_s == 0.0 and len(signal.values) == 128
    np.testing.assert_allclose(signal.times()[:3], [0, 1 / 64, 2 / 64])
    np.testing.assert_allclose(signal.values[16], 50 * np.sin(2 * np.pi * PULSE_HZ * 0.25), atol=1e-5)
    assert corpus.check(by_id["s4/T2"]) == []
    rest_and_maths = build_corpus("ubfc_phys", tasks=["T1", "t3"]).read_checked(tmp_path)
    assert Counter(i.stress.label for i in rest_and_maths) == {"T1": 4, "T3": 4}
    with pytest.raises(ValueError, match="tasks"):
        build_corpus("ubfc_phys", tasks=["T4"])


def test_ubfc_phys_malformed_fail_and_skip(tmp_path, video_writer, capsys, bad_input):
    write_phys(tmp_path, video_writer)
    s1, s2, s3, s4 = tmp_path / "s1_to_s2" / "s1", tmp_path / "s1_to_s2" / "s2", tmp_path / "s3" / "s3", tmp_path / "s4"
    (s1 / "vid_s1_T2.avi").unlink()
    (s2 / "bvp_s2_T3.csv").unlink()
    bvp = s3 / "bvp_s3_T1.csv"
    bvp.write_text(bvp.read_text().replace("\n", "\nnan-ish\n", 3))
    short = s4 / "bvp_s4_T2.csv"
    short.write_text("\n".join(short.read_text().splitlines()[:32]) + "\n")  # 0.5 s of a 2 s video
    cut = truncate(s4 / "vid_s4_T3.avi")
    with pytest.raises(CorpusError, match=r"vid_s1_T2\.avi: video is missing \(its BVP bvp_s1_T2\.csv is there\)"):
        build_corpus("ubfc_phys").read_checked(tmp_path)
    corpus = build_corpus("ubfc_phys", on_error="skip")
    items = corpus.read_checked(tmp_path)
    assert len(items) == 9 and {"s1/T2", "s2/T3", "s3/T1"}.isdisjoint(i.item_id for i in items)
    assert [(p.path, p.reason.split(" (")[0]) for p in corpus.problems] == [
        (str(s1 / "vid_s1_T2.avi"), "video is missing"),
        (str(s2 / "bvp_s2_T3.csv"), "BVP file is missing"),
        (str(bvp), "line 2: 'nan-ish' is not a number"),
    ]
    by_id = {i.item_id: i for i in items}
    (problem,) = corpus.check(by_id["s4/T2"])
    assert problem.path == str(short) and "shorter than the video" in problem.reason
    bad_input.record("physiology", "UBFC-Phys BVP with a line of text", f"{bvp}: {corpus.problems[2].reason}")
    bad_input.record(
        "physiology", "UBFC-Phys BVP of 0.5 s beside a 2 s video (data summary)", f"{problem.path}: {problem.reason}"
    )
    (problem,) = corpus.check(by_id["s4/T3"])  # cut before its index, this AVI does not even open
    assert problem.path == str(cut) and ("truncated" in problem.reason or "cannot open" in problem.reason)
    capsys.readouterr()
    data_command.main(["summary", "--corpus", "ubfc_phys", "--root", str(tmp_path), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["stress"] == {"low": 3, "normal": 3, "high": 3}
    assert len(summary["problems"]) == 5


# -- PURE ------------------------------------------------------------------------------------------------------
T0_NS = 1_392_643_993_642_999_936  # a PURE-like epoch timestamp (ns)


def frame_stamps(n: int, start_ns: int = T0_NS, drop: tuple[int, ...] = (), seed: int = 0) -> list[int]:
    """~30 fps capture times with up to 2 ms of jitter; frames numbered in `drop` were never written."""
    jitter = np.random.default_rng(seed).integers(-2_000_000, 2_000_000, n)
    return [start_ns + round(i * NS_30FPS) + int(jitter[i]) * (i > 0) for i in range(n) if i not in drop]


NS_30FPS = 1e9 / 30


def pure_packages(start_ns: int, duration_s: float) -> list[dict]:
    """Oximeter packages at 60 Hz from `start_ns`, waveform a 1.2 Hz pulse in the CMS50E's 0-100 range."""
    out = []
    for k in range(round(duration_s * 60)):
        t_ns = start_ns + round(k * 1e9 / 60)
        wave = round(50 + 40 * np.sin(2 * np.pi * PULSE_HZ * (t_ns - T0_NS) / 1e9))
        out.append(
            {"Timestamp": t_ns, "Value": {"pulseRate": 72, "o2saturation": 98, "signalStrength": 4, "waveform": wave}}
        )
    return out


def write_pure_session(
    root: Path,
    name: str,
    images: list[np.ndarray] | None = None,
    stamps: list[int] | None = None,
    layout: str = "release",
    oximeter_lead_s: float = 0.4,
    oximeter_s: float = 3.5,
) -> tuple[Path, Path]:
    """A session: `layout` "release" (NN-MM/ + NN-MM.json beside it), "toolbox" (NN-MM/NN-MM/ + NN-MM/NN-MM.json)
    or "inside" (NN-MM/ with its JSON inside). Returns (image folder, JSON path)."""
    stamps = stamps if stamps is not None else frame_stamps(75, drop=(30,))
    folder = root / name
    images_dir = folder / name if layout == "toolbox" else folder
    meta = root / f"{name}.json" if layout == "release" else folder / f"{name}.json"
    images_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(stamps))
    for i, stamp in enumerate(stamps):
        image = images[i] if images is not None else rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        assert cv2.imwrite(str(images_dir / f"Image{stamp}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    start = stamps[0] - round(oximeter_lead_s * 1e9)
    payload = {"/FullPackage": pure_packages(start, oximeter_s), "/Image": [{"Timestamp": s} for s in stamps]}
    meta.write_text(json.dumps(payload))
    return images_dir, meta


def test_pure_sessions_layouts_frames_and_splits(tmp_path):
    stamps = frame_stamps(75, drop=(30,))
    folder, _ = write_pure_session(tmp_path, "01-01", stamps=stamps)
    write_pure_session(tmp_path, "01-02", layout="toolbox")
    write_pure_session(tmp_path, "02-04", layout="inside")
    write_pure_session(tmp_path, "03-06")
    corpus = build_corpus("pure")
    items = corpus.read_checked(tmp_path)
    by_id = {i.item_id: i for i in items}
    assert sorted(by_id) == ["01-01", "01-02", "02-04", "03-06"]
    assert [by_id[k].subject_id for k in sorted(by_id)] == ["01", "01", "02", "03"]
    assert by_id["02-04"].attributes == {"setup": "04", "motion": "fast_translation"}
    assert by_id["01-02"].media.paths[0].parent == tmp_path / "01-02" / "01-02"
    assert_subject_disjoint(items) and len({by_id["01-01"].split, by_id["01-02"].split}) == 1
    media = by_id["01-01"].media
    assert isinstance(media, FrameFiles) and len(media.paths) == 74
    assert media.paths == tuple(folder / f"Image{s}.png" for s in stamps)
    t = np.asarray(media.timestamps_s)
    np.testing.assert_allclose(t, [(s - stamps[0]) / 1e9 for s in stamps], atol=1e-9)
    steps = np.diff(t)
    assert t[0] == 0.0 and steps.max() == pytest.approx(2 / 30, abs=0.005) and steps.min() > 0.028
    assert all(item.expression is None and item.stress is None for item in items)
    assert corpus.check(by_id["01-01"]) == []
    (t0, first), *_ = corpus.frames(by_id["01-01"])
    assert t0 == 0.0 and first.shape == (24, 32, 3)


def test_pure_cardiac_on_the_video_clock(tmp_path):
    stamps = frame_stamps(60)
    _, meta = write_pure_session(tmp_path, "01-01", stamps=stamps, oximeter_lead_s=0.4)
    write_pure_session(tmp_path, "02-01", oximeter_lead_s=-0.2)  # the oximeter starts after the camera
    corpus = build_corpus("pure")
    by_id = {i.item_id: i for i in corpus.read_checked(tmp_path)}
    assert by_id["01-01"].cardiac.offset_s == pytest.approx(0.4, abs=1e-9)
    assert by_id["02-01"].cardiac.offset_s == pytest.approx(-0.2, abs=1e-9)
    signal = corpus.load_cardiac(by_id["01-01"])
    packages = json.loads(meta.read_text())["/FullPackage"]
    expected_t = [(p["Timestamp"] - stamps[0]) / 1e9 for p in packages]
    assert signal.kind == "ppg" and signal.source == meta
    np.testing.assert_allclose(signal.times(), expected_t, atol=1e-9)
    np.testing.assert_array_equal(signal.values, [p["Value"]["waveform"] for p in packages])
    assert signal.times()[0] == pytest.approx(-0.4) and signal.end_s == pytest.approx(3.1 - 1 / 60)
    assert corpus.load_cardiac(by_id["02-01"]).times()[0] == pytest.approx(0.2, abs=1e-6)
    truth = cardiac_truth(signal)
    assert truth.hr_bpm(0.0, 3.0) == pytest.approx(72, abs=3)
    hr_corpus = build_corpus("pure", cardiac="hr")
    hr = hr_corpus.load_cardiac(hr_corpus.read_checked(tmp_path)[0])
    assert hr.kind == "hr" and set(hr.values.tolist()) == {72.0}


def test_pure_malformed_fail_and_skip(tmp_path, capsys):
    write_pure_session(tmp_path, "01-01")
    write_pure_session(tmp_path, "02-01")
    _, meta = write_pure_session(tmp_path, "03-01")
    meta.unlink()  # no JSON
    _, broken = write_pure_session(tmp_path, "04-01")
    broken.write_text(broken.read_text()[:500])  # cut JSON
    folder, _ = write_pure_session(tmp_path, "05-01")
    extra = folder / f"Image{T0_NS + 10**12}.png"  # a PNG the JSON does not list
    shutil.copy(next(folder.glob("*.png")), extra)
    folder, _ = write_pure_session(tmp_path, "06-01")
    gone = sorted(folder.glob("*.png"))[10]
    gone.unlink()
    _, short = write_pure_session(tmp_path, "07-01", oximeter_s=1.0)  # waveform covers 0.6 s of 2.5 s
    empty, _ = write_pure_session(tmp_path, "08-01", layout="toolbox")
    for png in empty.glob("*.png"):
        png.unlink()  # a session folder without its frames
    with pytest.raises(CorpusError, match=r"03-01\.json: meta file \(JSON\) of session 03-01 is missing"):
        build_corpus("pure").read_checked(tmp_path)
    corpus = build_corpus("pure", on_error="skip")
    items = corpus.read_checked(tmp_path)
    assert sorted(i.item_id for i in items) == ["01-01", "02-01", "07-01"]
    problems = [(p.path, p.reason) for p in corpus.problems]
    assert [p for p, _ in problems] == [str(meta), str(broken), str(tmp_path / "05-01.json"), str(gone), str(empty)]
    assert "cannot be parsed as JSON" in problems[1][1]
    assert "/Image lists 74 frames" in problems[2][1] and "holds 75 PNGs; 1 not listed" in problems[2][1]
    assert "frame file is missing: 1 of the 74 frames" in problems[3][1]
    assert problems[4][1] == "holds no Image<ns>.png frames"
    (item,) = [i for i in items if i.item_id == "07-01"]
    (problem,) = corpus.check(item)
    assert problem.path == str(short) and "shorter than the video" in problem.reason
    # A frame deleted after reading: check names it.
    first = item.media.paths[0]
    first.unlink()
    assert any(p.path == str(first) and "missing" in p.reason for p in corpus.check(item))
    capsys.readouterr()
    data_command.main(["summary", "--corpus", "pure", "--root", str(tmp_path)])
    text = capsys.readouterr().out
    # Read again, the session missing its first frame is now a read problem: 6 sessions left out, none to check.
    assert "problems: 6" in text and str(gone) in text and f"{first}: frame file is missing" in text


# -- end to end over a real face video ---------------------------------------------------------------------------
def face_frames(face_video: Path, size: tuple[int, int] = (320, 180)) -> Iterator[tuple[float, np.ndarray]]:
    for t, image in iter_timed_frames(face_video):
        yield t, cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def clip_module(corpus: str, root: Path, cache: Path):
    from stress_lightning.data.datamodules import ClipDataModule

    return ClipDataModule(
        corpus=corpus,
        root=str(root),
        corpus_options={"seed": 0},
        cache_dir=str(cache),
        fps=30,
        clip_seconds=1.0,
        face_frames=2,
        face_span_s=0.2,
        batch_size=2,
        progress=False,
        workers=1,
    )


def check_batches(dm) -> None:
    dm.prepare_data()
    dm.setup("fit")
    batches = [*dm.train_dataloader(), *dm.val_dataloader()]
    hr_mask = np.concatenate([b["hr_mask"].numpy() for b in batches])
    assert hr_mask.any(), "no clip got a heart-rate label"
    hr = np.concatenate([b["hr_bpm"].numpy() for b in batches])[hr_mask]
    np.testing.assert_allclose(hr, 180.0, atol=6.0)
    for batch in batches:
        assert not batch["expression_mask"].any() and not batch["stress_mask"].any()
        assert batch["roi"].shape[1] == 30 and batch["frames"].shape[1] == 2


def test_ubfc_rppg_clip_data_module_end_to_end(tmp_path, video_writer, face_video):
    root = tmp_path / "DATASET_2"
    source = root / "subject1" / "vid.avi"
    source.parent.mkdir(parents=True)
    video_writer(source, face_frames(face_video), rate=30, tag="XVID")
    # A 3 Hz pulse (180 bpm: three beats in every 1 s clip) over 4 s, from the first frame on.
    t = np.arange(120) / 30
    for n in (1, 2, 3):
        folder = root / f"subject{n}"
        if n > 1:
            folder.mkdir()
            shutil.copy(source, folder / "vid.avi")
        ubfc_txt(folder / "ground_truth.txt", np.sin(2 * np.pi * 3.0 * t), 180 + 0 * t, t)
    check_batches(clip_module("ubfc_rppg", root, tmp_path / "cache"))


def test_pure_clip_data_module_end_to_end(tmp_path, face_video):
    decoded = list(face_frames(face_video))
    stamps = [T0_NS + round(t * 1e9) for t, _ in decoded]
    for subject in ("01", "02", "03"):
        _, meta = write_pure_session(tmp_path, f"{subject}-01", images=[f for _, f in decoded], stamps=stamps)
        # Replace the 1.2 Hz waveform by a 3 Hz one (three beats per 1 s clip).
        payload = json.loads(meta.read_text())
        for p in payload["/FullPackage"]:
            p["Value"]["waveform"] = round(50 + 40 * np.sin(2 * np.pi * 3.0 * (p["Timestamp"] - T0_NS) / 1e9))
        meta.write_text(json.dumps(payload))
    check_batches(clip_module("pure", tmp_path, tmp_path / "cache"))
