"""Acted-emotion video corpora (RAVDESS, CREMA-D) on fixtures written here in each release's official layout (file
names, folders, codecs and frame rates), including malformed variants, in both on_error modes, the `data summary`
command, and one end-to-end ClipDataModule run on a re-encoded real face video."""

from __future__ import annotations

import wave
from collections import Counter
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

import stress_lightning.data.corpora.cremad  # noqa: F401  (registers)
import stress_lightning.data.corpora.ravdess  # noqa: F401  (registers)
from stress_lightning.commands.data import main as data_main
from stress_lightning.data.cache import ClipCache, Preprocessing
from stress_lightning.data.corpora.base import Corpus, build_corpus
from stress_lightning.data.corpora.cremad import KNOWN_BAD_AUDIO, parse_cremad_name
from stress_lightning.data.corpora.ravdess import parse_ravdess_name
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.items import Item, VideoFile
from stress_lightning.data.taxonomy import BASIC_EXPRESSIONS, LabelMap
from stress_lightning.data.video import iter_timed_frames, video_end_problem

NTSC = Fraction(30000, 1001)  # RAVDESS' 29.97 fps


def frames_at(times: list[float], seed: int = 0, size: tuple[int, int] = (48, 64)) -> list[tuple[float, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(t, rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for t in times]


def write_wav(path: Path, seconds: float = 0.2, rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.zeros(int(seconds * rate), np.int16).tobytes())
    return path


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def mapped(corpus, items, classes=BASIC_EXPRESSIONS, overrides=None) -> dict[str, str | None]:
    label_map = LabelMap(classes, corpus.expression_map, overrides)
    return {it.item_id: label_map.canonical(it.expression.label) for it in items}


# -- RAVDESS ----------------------------------------------------------------------------------------------------
def ravdess_video(video_writer, path: Path, n: int = 9, rate: Fraction = NTSC, seed: int = 0) -> Path:
    """An H.264 MP4 at 29.97 fps (frame k at k * 1001 / 30000 s), as the release ships them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    video_writer(path, frames_at([float(k / rate) for k in range(n)], seed), rate=float(rate))
    return path


@pytest.fixture
def ravdess_root(tmp_path: Path, video_writer) -> Path:
    """Per-archive folders (Video_Speech_Actor_01/Actor_01/...) and flat ones (Actor_21/...), with an audio-only
    archive holding the WAV of a video-only take."""
    root = tmp_path / "ravdess"
    speech1 = root / "Video_Speech_Actor_01" / "Actor_01"
    ravdess_video(video_writer, speech1 / "01-01-03-01-01-01-01.mp4")  # happy, audio-video
    ravdess_video(video_writer, speech1 / "02-01-03-01-01-01-01.mp4")  # the same take, video-only
    ravdess_video(video_writer, root / "Video_Song_Actor_02" / "Actor_02" / "01-02-02-02-01-02-02.mp4")  # calm song
    ravdess_video(video_writer, root / "Actor_21" / "01-01-06-02-02-01-21.mp4")  # fearful, strong
    ravdess_video(video_writer, root / "Actor_23" / "01-01-08-01-01-01-23.mp4")  # surprised
    ravdess_video(video_writer, root / "Actor_24" / "01-01-01-01-01-02-24.mp4")  # neutral
    write_wav(root / "Audio_Speech_Actors_01-24" / "Actor_01" / "03-01-03-01-01-01-01.wav")
    (root / "Actor_24" / ".DS_Store").write_bytes(b"\0")
    return root


def test_ravdess_codes():
    code, _ = parse_ravdess_name("02-01-06-01-02-01-12")
    assert (code.modality, code.vocal_channel, code.emotion, code.intensity) == ("02", "01", "06", "01")
    assert (code.statement, code.repetition, code.actor) == ("02", "01", "12")
    for stem, reason in [
        ("01-01-06-01-02-01", "seven two-digit fields"),
        ("04-01-06-01-02-01-12", "unknown modality"),
        ("01-01-09-01-02-01-12", "unknown emotion"),
        ("01-01-06-03-02-01-12", "unknown intensity"),
        ("01-01-06-01-02-01-25", "unknown actor"),
        ("01-01-01-02-02-01-12", "neutral has no strong"),
        ("01-02-08-01-02-01-12", "song has no surprised"),
    ]:
        code, why = parse_ravdess_name(stem)
        assert code is None and reason in why, stem


def test_ravdess_reads_items_labels_attributes_and_actor_splits(ravdess_root: Path):
    corpus = build_corpus("ravdess")
    items = corpus.read_checked(ravdess_root)
    by_id = {it.item_id: it for it in items}
    assert sorted(by_id) == [
        "Actor_01/01-01-03-01-01-01-01",
        "Actor_02/01-02-02-02-01-02-02",
        "Actor_21/01-01-06-02-02-01-21",
        "Actor_23/01-01-08-01-01-01-23",
        "Actor_24/01-01-01-01-01-02-24",
    ]
    assert {it.subject_id: it.split for it in items} == {
        "Actor_01": "train",
        "Actor_02": "train",
        "Actor_21": "val",
        "Actor_23": "test",
        "Actor_24": "test",
    }
    happy = by_id["Actor_01/01-01-03-01-01-01-01"]
    assert happy.expression.label == "happy" and happy.audio == happy.media.path
    assert happy.attributes == {
        "gender": "male",
        "intensity": "normal",
        "vocal_channel": "speech",
        "statement": "01",
        "repetition": "01",
        "modality": "audio-video",
    }
    song = by_id["Actor_02/01-02-02-02-01-02-02"]
    assert song.attributes["gender"] == "female" and song.attributes["vocal_channel"] == "song"
    assert song.attributes["intensity"] == "strong" and song.expression.label == "calm"
    assert all(it.cardiac is None and it.stress is None for it in items)
    # Original names on the item; the map gives canonical names; calm is unmapped in a 7-class run.
    canon = mapped(corpus, items)
    assert canon["Actor_21/01-01-06-02-02-01-21"] == "fear" and canon["Actor_23/01-01-08-01-01-01-23"] == "surprise"
    counts = LabelMap(BASIC_EXPRESSIONS, corpus.expression_map)
    assert [counts.index(it.expression.label) for it in items].count(None) == 1 and counts.unmapped == {"calm": 1}
    assert mapped(corpus, items, overrides={"calm": "neutral"})["Actor_02/01-02-02-02-01-02-02"] == "neutral"
    assert corpus.problems == [] and all(corpus.check(it) == [] for it in items)


def test_ravdess_modalities_audio_and_options(ravdess_root: Path):
    video_only = build_corpus("ravdess", modalities=["02"]).read_checked(ravdess_root)
    assert [it.item_id for it in video_only] == ["Actor_01/02-01-03-01-01-01-01"]
    wav = ravdess_root / "Audio_Speech_Actors_01-24" / "Actor_01" / "03-01-03-01-01-01-01.wav"
    assert video_only[0].audio == wav and video_only[0].attributes["modality"] == "video-only"
    both = build_corpus("ravdess", modalities=[1, 2], vocal_channels=["01"]).read_checked(ravdess_root)
    assert len(both) == 5 and not any(it.attributes["vocal_channel"] == "song" for it in both)
    custom = build_corpus("ravdess", split_actors={"val": [1], "test": ["02"]}).read_checked(ravdess_root)
    assert Counter(it.split for it in custom) == {"val": 1, "test": 1, "train": 3}
    corpus = build_corpus("ravdess", modalities=["01", "02"])
    assert corpus.options()["modalities"] == ["01", "02"] and corpus.layout and "http" in corpus.url
    for bad in ({"modalities": ["03"]}, {"vocal_channels": []}, {"split_actors": {"val": [1], "test": [1]}}):
        with pytest.raises(ValueError, match="ravdess"):
            build_corpus("ravdess", **bad)


def test_ravdess_frame_times_follow_the_timestamps(tmp_path: Path, video_writer):
    """29.97 fps frames and a 30 fps take with a dropped stretch come out at the times the file carries."""
    root = tmp_path / "ravdess"
    ntsc = ravdess_video(video_writer, root / "Actor_01" / "01-01-03-01-01-01-01.mp4", n=12)
    gap_times = [k / 30 for k in range(6)] + [k / 30 for k in range(12, 18)]  # 0.2 s missing
    gap = root / "Actor_01" / "01-01-04-01-01-01-01.mp4"
    video_writer(gap, frames_at(gap_times), rate=30)
    corpus = build_corpus("ravdess")
    items = {it.media.path: it for it in corpus.read_checked(root)}
    times = np.array([t for t, _ in corpus.frames(items[ntsc])])
    np.testing.assert_allclose(times, np.arange(12) * 1001 / 30000, atol=1.5e-3)
    times = np.array([t for t, _ in corpus.frames(items[gap])])
    np.testing.assert_allclose(times, gap_times, atol=1.5e-3)


def test_ravdess_malformed_files(ravdess_root: Path, video_writer, bad_input):
    bad = {
        "short": ravdess_root / "Actor_21" / "01-01-06-01-02-01.mp4",
        "emotion": ravdess_root / "Actor_21" / "01-01-09-01-02-01-21.mp4",
        "neutral_strong": ravdess_root / "Actor_21" / "01-01-01-02-02-01-21.mp4",
        "actor": ravdess_root / "Actor_21" / "01-01-05-01-02-01-22.mp4",
        "audio_code": ravdess_root / "Actor_21" / "03-01-05-01-02-01-21.mp4",
        "empty": ravdess_root / "Actor_21" / "01-01-04-01-02-01-21.mp4",
        "copy": ravdess_root / "Actor_21_copy" / "Actor_21" / "01-01-06-02-02-01-21.mp4",
    }
    for key in ("short", "emotion", "neutral_strong", "actor", "audio_code", "copy"):
        ravdess_video(video_writer, bad[key])
    bad["empty"].write_bytes(b"")
    empty_actor = ravdess_root / "Actor_05"
    empty_actor.mkdir()
    truncated = truncate(ravdess_video(video_writer, ravdess_root / "Actor_22" / "01-01-07-01-01-01-22.mp4", n=30))

    with pytest.raises(CorpusError) as info:
        build_corpus("ravdess").read_checked(ravdess_root)
    assert str(info.value.path) in {str(p) for p in bad.values()} | {str(empty_actor)}

    corpus = build_corpus("ravdess", on_error="skip")
    items = corpus.read_checked(ravdess_root)
    reasons = {p.path: p.reason for p in corpus.problems}
    assert set(reasons) == {str(p) for p in bad.values()} | {str(empty_actor)}
    assert "seven two-digit fields" in reasons[str(bad["short"])]
    assert "unknown emotion '09'" in reasons[str(bad["emotion"])]
    assert "neutral has no strong" in reasons[str(bad["neutral_strong"])]
    assert "does not match its folder Actor_21" in reasons[str(bad["actor"])]
    assert "audio-only" in reasons[str(bad["audio_code"])] and "empty" in reasons[str(bad["empty"])]
    assert "second copy" in reasons[str(bad["copy"])] and "no RAVDESS" in reasons[str(empty_actor)]
    for key, area, case in (
        ("emotion", "labels and tables", "RAVDESS file name with emotion code 09 (outside 01-08)"),
        ("empty", "corpus files", "RAVDESS video of 0 bytes"),
    ):
        bad_input.record(area, case, f"{bad[key]}: {reasons[str(bad[key])]}")
    # The good takes are kept; the truncated one is read (its name is fine) and found by check.
    assert len(items) == 6
    cut = next(it for it in items if it.media.path == truncated)
    (problem,) = corpus.check(cut)
    assert problem.path == str(truncated) and "cannot open" in problem.reason
    bad_input.record("corpus files", "RAVDESS MP4 cut in half (data summary)", f"{problem.path}: {problem.reason}")


class OneVideo(Corpus):
    """A reader without a `check` of its own: the base class' check must find a cut file."""

    name = "one_video"

    def __init__(self, path: Path) -> None:
        super().__init__(on_error="skip")
        self.path = path

    def read(self, root: Path) -> list[Item]:
        return [Item("clip/one", "S1", "train", VideoFile(self.path))]


def test_video_end_check_finds_a_cut_avi_and_flv(tmp_path: Path, video_writer, bad_input):
    """A cut AVI keeps its header's frame count (its duration shrinks with the index left) and a cut FLV its
    duration: the tail check finds both, through any reader's `check`, and so does the cache."""
    for name, rate in (("cut.avi", 61), ("cut.flv", 30)):
        path = tmp_path / name
        video_writer(path, frames_at([k / rate for k in range(int(4 * rate))]), rate=rate)
        corpus = OneVideo(path)
        (item,) = corpus.read(tmp_path)
        assert video_end_problem(path) is None and corpus.check(item) == []
        reason = video_end_problem(truncate(path))
        assert reason is not None and "truncated" in reason
        assert [(p.path, p.reason) for p in corpus.check(item)] == [(str(path), reason)]
        cache = ClipCache(tmp_path / f"cache_{name}", "one_video", "x", Preprocessing(fps=15.0, detector="haar"))
        report = cache.build(corpus, [item], progress=False, workers=1)
        assert [p.path for p in report.problems] == [str(path)] and "truncated" in report.problems[0].reason
        kind = name.split(".")[1].upper()
        bad_input.record("corpus files", f"{kind} cut in half (data summary)", f"{path}: {reason}")
        problem = report.problems[0]
        bad_input.record(
            "corpus files", f"{kind} cut in half (cache build, left out)", f"{problem.path}: {problem.reason}"
        )


# -- CREMA-D ----------------------------------------------------------------------------------------------------
DEMOGRAPHICS = """ActorID,Age,Sex,Race,Ethnicity
1001,51,Male,Caucasian,Not Hispanic
1002,21,Female,Caucasian,Not Hispanic
1003,21,Female,Caucasian,Not Hispanic
1004,42,Female,Caucasian,Not Hispanic
1005,29,Male,African American,Not Hispanic
1006,58,Female,Caucasian,Not Hispanic
1064,24,Male,Asian,Not Hispanic
"""
CREMAD_CLIPS = [
    "1001_DFA_ANG_XX",
    "1001_IEO_HAP_HI",
    "1002_IEO_DIS_LO",
    "1003_ITS_FEA_XX",
    "1004_TSI_NEU_XX",
    "1005_WSI_SAD_XX",
    "1006_IEO_SAD_MD",
    "1064_TIE_SAD_XX",
]


def cremad_video(video_writer, path: Path, n: int = 8, seed: int = 0) -> Path:
    """A Sorenson FLV at 30 fps (millisecond timestamps), as VideoFlash holds them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    video_writer(path, frames_at([k / 30 for k in range(n)], seed), rate=30)
    return path


@pytest.fixture
def cremad_root(tmp_path: Path, video_writer) -> Path:
    root = tmp_path / "CREMA-D"
    for i, stem in enumerate(CREMAD_CLIPS):
        cremad_video(video_writer, root / "VideoFlash" / f"{stem}.flv", seed=i)
        write_wav(root / "AudioWAV" / f"{stem}.wav")
    (root / "VideoDemographics.csv").write_text(DEMOGRAPHICS)
    return root


def test_cremad_codes():
    assert parse_cremad_name("1091_WSI_NEU_XX") == (("1091", "WSI", "NEU", "XX"), "")
    for stem, reason in [
        ("1001_DFA_ANG", "AAAA_SSS_EEE_LL"),
        ("1092_DFA_ANG_XX", "unknown actor"),
        ("1001_ABC_ANG_XX", "unknown sentence"),
        ("1001_DFA_JOY_XX", "unknown emotion"),
        ("1001_DFA_ANG_ZZ", "unknown level"),
    ]:
        code, why = parse_cremad_name(stem)
        assert code is None and reason in why, stem


def test_cremad_reads_labels_demographics_audio_and_splits(cremad_root: Path):
    corpus = build_corpus("cremad")
    items = corpus.read_checked(cremad_root)
    by_id = {it.item_id: it for it in items}
    assert len(items) == len(CREMAD_CLIPS) and "1001/1001_IEO_HAP_HI" in by_id
    first = by_id["1001/1001_IEO_HAP_HI"]
    assert first.subject_id == "1001" and first.expression.label == "HAP"
    assert first.media == VideoFile(cremad_root / "VideoFlash" / "1001_IEO_HAP_HI.flv")
    assert first.audio == cremad_root / "AudioWAV" / "1001_IEO_HAP_HI.wav"
    assert first.attributes == {
        "intensity": "high",
        "sentence": "IEO",
        "gender": "male",
        "age": "51",
        "race": "Caucasian",
        "ethnicity": "Not Hispanic",
    }
    assert by_id["1002/1002_IEO_DIS_LO"].attributes["intensity"] == "low"
    assert by_id["1004/1004_TSI_NEU_XX"].attributes["intensity"] == "unspecified"
    # A clip whose released audio is broken keeps its video but gets no audio.
    assert "1064_TIE_SAD_XX" in KNOWN_BAD_AUDIO and by_id["1064/1064_TIE_SAD_XX"].audio is None
    assert set(mapped(corpus, items).values()) == {"angry", "happy", "disgust", "fear", "neutral", "sad"}
    # Actor-disjoint splits, every split used.
    splits: dict[str, set[str]] = {}
    for it in items:
        splits.setdefault(it.subject_id, set()).add(it.split)
    assert all(len(s) == 1 for s in splits.values()) and {s for v in splits.values() for s in v} == {
        "train",
        "val",
        "test",
    }
    times = [t for t, _ in corpus.frames(first)]
    np.testing.assert_allclose(times, np.arange(8) / 30, atol=1.5e-3)
    fixed = build_corpus("cremad", split_actors={"val": [1002], "test": ["1003", 1004]}).read_checked(cremad_root)
    assert {it.subject_id for it in fixed if it.split == "test"} == {"1003", "1004"}
    assert {it.subject_id for it in fixed if it.split == "val"} == {"1002"}
    assert corpus.problems == [] and corpus.check(first) == []


def test_cremad_mp4_folder_and_missing_demographics(tmp_path: Path, video_writer):
    root = tmp_path / "CREMA-D"
    for stem in CREMAD_CLIPS[:3]:
        path = root / "VideoMP4" / f"{stem}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        video_writer(path, frames_at([k / 30 for k in range(6)]), rate=30)
    items = build_corpus("cremad", video_folder="VideoMP4").read_checked(root)
    assert len(items) == 3 and all(it.audio is None and "gender" not in it.attributes for it in items)
    with pytest.raises(CorpusError, match="VideoFlash"):
        build_corpus("cremad").read_checked(root)
    with pytest.raises(ValueError, match="video_folder"):
        build_corpus("cremad", video_folder="Videos")


def test_cremad_malformed_files(cremad_root: Path, video_writer, bad_input):
    flash = cremad_root / "VideoFlash"
    bad = {
        "name": cremad_video(video_writer, flash / "1001_DFA_ANG.flv"),
        "sentence": cremad_video(video_writer, flash / "1002_XYZ_ANG_XX.flv"),
        "emotion": cremad_video(video_writer, flash / "1003_IEO_JOY_HI.flv"),
        "level": cremad_video(video_writer, flash / "1004_IEO_ANG_ZZ.flv"),
        "actor": cremad_video(video_writer, flash / "0999_IEO_ANG_HI.flv"),
        "empty": flash / "1005_TIE_SAD_XX.flv",
    }
    bad["empty"].write_bytes(b"")
    cremad_video(video_writer, flash / "1064_IEO_DIS_MD.flv")  # the known mislabelled clip
    truncated = truncate(cremad_video(video_writer, flash / "1006_MTI_ANG_XX.flv", n=90))

    with pytest.raises(CorpusError, match=r"0999_IEO_ANG_HI\.flv: unknown actor 0999"):
        build_corpus("cremad").read_checked(cremad_root)
    corpus = build_corpus("cremad", on_error="skip")
    items = corpus.read_checked(cremad_root)
    reasons = {p.path: p.reason for p in corpus.problems}
    assert set(reasons) == {str(p) for p in bad.values()}
    assert "unknown sentence code 'XYZ'" in reasons[str(bad["sentence"])]
    assert "unknown level code 'ZZ'" in reasons[str(bad["level"])] and "empty" in reasons[str(bad["empty"])]
    case = "CREMA-D file name with emotion code JOY (outside its six)"
    bad_input.record("labels and tables", case, f"{bad['emotion']}: {reasons[str(bad['emotion'])]}")
    assert corpus.excluded_known_bad == 1 and not any("1064_IEO_DIS_MD" in it.item_id for it in items)
    assert len(build_corpus("cremad", on_error="skip", exclude_known_bad=False).read_checked(cremad_root)) == 10
    cut = next(it for it in items if it.media.path == truncated)
    (problem,) = corpus.check(cut)
    assert problem.path == str(truncated) and "truncated" in problem.reason
    # A demographics table without its columns is reported by path, the clips are kept.
    (cremad_root / "VideoDemographics.csv").write_text("Actor,Age\n1001,51\n")
    corpus = build_corpus("cremad", on_error="skip", exclude_known_bad=True)
    items = corpus.read_checked(cremad_root)
    assert any(p.path.endswith("VideoDemographics.csv") and "missing column" in p.reason for p in corpus.problems)
    assert len(items) == 9


def test_data_summary_lists_cremad_problems_by_path(cremad_root: Path, video_writer, capsys, bad_input):
    truncated = truncate(cremad_video(video_writer, cremad_root / "VideoFlash" / "1006_MTI_ANG_XX.flv", n=90))
    bad_name = cremad_video(video_writer, cremad_root / "VideoFlash" / "1001_DFA_ANG.flv")
    assert data_main(["summary", "--corpus", "cremad", "--root", str(cremad_root)]) == 0
    out = capsys.readouterr().out
    assert "problems: 2" in out and f"{bad_name}: file name is not a CREMA-D code" in out
    assert f"{truncated}: truncated" in out and "corpus cremad" in out
    problems = out[out.index("problems: 2") :]
    bad_input.record("corpus files", "CREMA-D FLV cut in half, and a bad file name (`data summary`)", problems, 0)


# -- end to end -------------------------------------------------------------------------------------------------
def test_ravdess_clip_datamodule_end_to_end(tmp_path: Path, face_video: Path, video_writer):
    """Real face footage re-encoded as RAVDESS MP4s at 29.97 fps: clips carry the take's expression (calm
    unmapped in a 7-class run unless the run maps it), and no heart-rate or stress label."""
    from stress_lightning.data.datamodules import ClipDataModule

    frames = [cv2.resize(rgb, (320, 180), interpolation=cv2.INTER_AREA) for _, rgb in iter_timed_frames(face_video)]
    timed = [(float(k / NTSC), rgb) for k, rgb in enumerate(frames)]
    root = tmp_path / "ravdess"
    takes = {
        "Actor_01/01-01-03-01-01-01-01.mp4": "happy",
        "Actor_02/01-01-02-01-01-01-02.mp4": "calm",
        "Actor_21/01-01-05-01-01-01-21.mp4": "angry",
        "Actor_23/01-01-04-01-01-01-23.mp4": "sad",
    }
    for rel in takes:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        video_writer(root / rel, timed, rate=float(NTSC))

    def module(**kwargs) -> ClipDataModule:
        return ClipDataModule(
            corpus="ravdess",
            root=str(root),
            corpus_options={},
            cache_dir=str(tmp_path / "cache"),
            fps=15.0,
            clip_seconds=1.0,
            face_frames=2,
            face_span_s=0.2,
            batch_size=2,
            progress=False,
            workers=1,
            **kwargs,
        )

    dm = module()
    dm.setup("fit")
    assert dm.problems == []
    assert {s: {it.subject_id for it in ds.items} for s, ds in dm.datasets.items()} == {
        "train": {"Actor_01", "Actor_02"},
        "val": {"Actor_21"},
        "test": {"Actor_23"},
    }
    classes = dm.expression_classes
    batch = next(iter(dm.train_dataloader()))
    assert batch["frames"].shape[:2] == (2, 2)
    assert (batch["expression"][~batch["expression_mask"]] == 0).all()
    assert not batch["hr_mask"].any() and not batch["stress_mask"].any()
    # Per take: the happy one is labelled happy; calm is no class of a 7-class run: masked, not mislabelled.
    train = dm.datasets["train"].labels
    subjects = np.array([dm.datasets["train"].items[i].subject_id for i in train.item])
    assert set(subjects) == {"Actor_01", "Actor_02"}
    happy = subjects == "Actor_01"
    assert train.expression_mask[happy].all() and (train.expression[happy] == classes.index("happy")).all()
    assert not train.expression_mask[~happy].any()
    assert not train.hr_mask.any() and not train.stress_mask.any()
    val = next(iter(dm.val_dataloader()))
    assert val["expression_mask"].all() and (val["expression"] == classes.index("angry")).all()

    mapped_calm = module(label_map={"calm": "neutral"})
    mapped_calm.setup("fit")
    labels = mapped_calm.datasets["train"].labels
    items = mapped_calm.datasets["train"].items
    by_subject = {items[i].subject_id: int(e) for i, e in zip(labels.item, labels.expression, strict=True)}
    assert by_subject == {"Actor_01": classes.index("happy"), "Actor_02": classes.index("neutral")}
    assert labels.expression_mask.all() and not labels.hr_mask.any()
