"""The MAHNOB-HCI reader on fixtures written here in the release's layout: `Sessions/<id>/session.xml`, a Biosemi
BDF (EXG1-3 ECG and a Status channel whose trigger marks the video start, 256 Hz) and the C1 camera's AVI. Checks
the ECG lands on the video clock, the labels and attributes, and every malformed variant in both on_error modes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyedflib
import pytest

import stress_lightning.data.corpora.mahnob_hci  # noqa: F401  (registers)
from stress_lightning.commands.data import main as data_main
from stress_lightning.data.corpora.base import build_corpus
from stress_lightning.data.corpora.mahnob_hci import EcgLead
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.taxonomy import BASIC_EXPRESSIONS, LabelMap
from stress_lightning.signals.ecg import detect_r_peaks

FS = 256  # MAHNOB's BDFs are downsampled to 256 Hz
VIDEO_FPS = 61  # the C1 camera runs at about 61 fps
BEAT_HZ = 1.2  # 72 bpm
SYSTEM_BITS = 1 << 20  # a Biosemi status bit (CMS in range) that is set all along and is no trigger
EXG_HEADER = {
    "dimension": "uV",
    "physical_min": -262144,
    "physical_max": 262143,
    "digital_min": -8388608,
    "digital_max": 8388607,
    "transducer": "Active Electrode",
    "prefilter": "HP:DC; LP:52 Hz",
}
STATUS_HEADER = {
    "dimension": "Boolean",
    "physical_min": -8388608,
    "physical_max": 8388607,
    "digital_min": -8388608,
    "digital_max": 8388607,
    "transducer": "Triggers and Status",
    "prefilter": "No filtering",
}


def beat_times(duration_s: float, first_s: float = 0.3) -> np.ndarray:
    return np.arange(first_s, duration_s - 0.05, 1.0 / BEAT_HZ)


def ecg_like(t: np.ndarray, beats: np.ndarray, amplitude_uv: float = 1200.0, offset_uv: float = -21000.0):
    """Narrow R waves at `beats` on a CMS-referenced baseline (Biosemi EXG channels carry a large offset)."""
    wave = sum(np.exp(-0.5 * ((t - b) / 0.008) ** 2) for b in beats)
    return offset_uv + amplitude_uv * wave + 20.0 * np.sin(2 * np.pi * 0.3 * t)


def write_bdf(
    path: Path,
    duration_s: int,
    trigger_s: float | None,
    drop: tuple[str, ...] = (),
    status_fs: int = FS,
) -> np.ndarray:
    """A Biosemi BDF as MAHNOB ships it (a subset of its 47 channels); returns the beat times (BDF clock)."""
    t = np.arange(duration_s * FS) / FS
    beats = beat_times(duration_s)
    signals = {
        "Fp1": 10.0 * np.sin(2 * np.pi * 10 * t),
        "EXG1": 300.0 * np.sin(2 * np.pi * 0.5 * t) - 15000.0,
        "EXG2": ecg_like(t, beats),
        "EXG3": ecg_like(t, beats, amplitude_uv=1800.0, offset_uv=-9000.0),
        "GSR1": np.full(t.size, 2.0e5),
        "Resp": 50.0 * np.sin(2 * np.pi * 0.25 * t),
        "Temp": np.full(t.size, 33.0),
    }
    status = np.full(duration_s * status_fs, SYSTEM_BITS, dtype=np.int64)
    if trigger_s is not None:
        onset = round(trigger_s * status_fs)
        status[onset : onset + status_fs] |= 4  # stimulus start pulse
        status[-2 * status_fs : -status_fs] |= 4  # stimulus end pulse
    headers, data = [], []
    for name, values in signals.items():
        if name not in drop:
            headers.append({"label": name, "sample_frequency": FS, **EXG_HEADER})
            data.append(values)
    if "Status" not in drop:
        headers.append({"label": "Status", "sample_frequency": status_fs, **STATUS_HEADER})
        data.append(status.astype(np.float64))
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = pyedflib.EdfWriter(str(path), len(headers), file_type=pyedflib.FILETYPE_BDF)
    try:
        writer.setSignalHeaders(headers)
        writer.writeSamples(data)
    finally:
        writer.close()
    return beats


def write_session_xml(folder: Path, subject: int, is_stim: bool = True, felt_emo: str | None = "4", **extra) -> None:
    attrs = {
        "cutNr": folder.name,
        "isStim": "1" if is_stim else "0",
        "experimentType": "emotion elicitation",
        "cutLenSec": "95.2",
        "vidRate": "60.9708",
        "mediaFile": "69.avi",
    }
    if felt_emo is not None:
        attrs.update(feltEmo=felt_emo, feltArsl="6", feltVlnc="7", feltCtrl="5", feltPred="4")
    attrs.update(extra)
    text = " ".join(f'{k}="{v}"' for k, v in attrs.items())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "session.xml").write_text(
        f'<?xml version="1.0" encoding="utf-8"?>\n<session sessionId="{folder.name}" {text}>\n'
        f'  <subject id="{subject}" />\n  <track type="Video" id="1" />\n</session>\n'
    )


def write_c1_video(video_writer, folder: Path, subject: int, seconds: float) -> Path:
    path = folder / f"P{subject}-Rec1-2009.07.09.17.53.46_C1 trigger _C_Section_{folder.name}.avi"
    rng = np.random.default_rng(int(folder.name))
    frames = [(k / VIDEO_FPS, rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)) for k in range(int(seconds * 61))]
    video_writer(path, frames, rate=VIDEO_FPS)
    return path


def write_session(
    video_writer,
    sessions: Path,
    session: int,
    subject: int,
    trial: int,
    trigger_s: float | None = 2.0,
    bdf_s: int = 9,
    video_s: float = 4.0,
    kind: str = "S",
    **xml,
) -> Path:
    folder = sessions / str(session)
    write_session_xml(folder, subject, is_stim=kind == "S", **xml)
    write_bdf(folder / f"Part_{subject}_{kind}_Trial{trial}_emotion.bdf", bdf_s, trigger_s)
    write_c1_video(video_writer, folder, subject, video_s)
    return folder


@pytest.fixture
def mahnob_root(tmp_path: Path, video_writer) -> Path:
    sessions = tmp_path / "MAHNOB-HCI" / "Sessions"
    write_session(video_writer, sessions, 2, subject=1, trial=1, felt_emo="4")
    write_session(video_writer, sessions, 4, subject=1, trial=2, kind="N", felt_emo=None)
    write_session(video_writer, sessions, 10, subject=2, trial=1, trigger_s=600 / FS, felt_emo="11")
    write_session(video_writer, sessions, 136, subject=3, trial=1, felt_emo="1")
    write_session(video_writer, sessions, 270, subject=4, trial=1, felt_emo="5")
    return sessions.parent


def test_reads_sessions_labels_attributes_and_subject_splits(mahnob_root: Path):
    corpus = build_corpus("mahnob_hci")
    items = corpus.read_checked(mahnob_root)
    assert [it.item_id for it in items] == ["P1/2", "P2/10", "P3/136", "P4/270"]
    assert corpus.skipped_sessions == 1  # the neutral clip (isStim=0) is not a default kind
    first = items[0]
    assert first.media.path.name == "P1-Rec1-2009.07.09.17.53.46_C1 trigger _C_Section_2.avi"
    assert first.expression is None and first.stress is None
    assert first.attributes == {
        "session_kind": "stimulus",
        "session": "2",
        "felt_arousal": "6",
        "felt_valence": "7",
        "felt_control": "5",
        "felt_predictability": "4",
        "stimulus": "69.avi",
        "felt_emotion": "joy",
    }
    ref = first.cardiac
    assert ref.kind == "ecg" and ref.path.name == "Part_1_S_Trial1_emotion.bdf"
    assert (ref.fs_hz, ref.offset_s, ref.channel) == (256.0, 2.0, "EXG2")
    assert items[1].cardiac.offset_s == pytest.approx(600 / FS)
    assert {it.split for it in items} == {"train", "val", "test"}
    assert corpus.problems == [] and all(corpus.check(it) == [] for it in items)
    # Root may be the Sessions folder itself.
    assert [it.item_id for it in build_corpus("mahnob_hci").read_checked(mahnob_root / "Sessions")] == [
        it.item_id for it in items
    ]
    kinds = build_corpus("mahnob_hci", sessions=["stimulus", "neutral"]).read_checked(mahnob_root)
    neutral = next(it for it in kinds if it.item_id == "P1/4")
    assert neutral.attributes["session_kind"] == "neutral" and "felt_emotion" not in neutral.attributes
    assert {it.subject_id for it in kinds if it.subject_id == "P1"} == {"P1"}
    assert len({it.split for it in kinds if it.subject_id == "P1"}) == 1


def test_ecg_is_on_the_video_clock(mahnob_root: Path):
    """The Status trigger at 2 s (and at 600/256 s) is the first video frame: beats at t on the BDF clock are at
    t - onset on the video clock, whatever the system bits of the Status word hold."""
    corpus = build_corpus("mahnob_hci")
    items = {it.item_id: it for it in corpus.read_checked(mahnob_root)}
    for item_id, onset in (("P1/2", 2.0), ("P2/10", 600 / FS)):
        signal = corpus.load_cardiac(items[item_id])
        assert signal.kind == "ecg" and signal.fs_hz == FS and signal.source == items[item_id].cardiac.path
        assert signal.start_s == pytest.approx(-onset) and len(signal.values) == 9 * FS
        np.testing.assert_allclose(signal.times()[:3], -onset + np.arange(3) / FS)
        beats = beat_times(9) - onset
        peaks = signal.times()[detect_r_peaks(signal.values, FS)]
        np.testing.assert_allclose(peaks, beats, atol=1.5 / FS)
        # The raw sample at a beat is the R-wave top on the offset baseline (uV as the file stores them).
        k = int(round((beats[3] - signal.start_s) * FS))
        assert signal.values[k] == pytest.approx(-21000.0 + 1200.0, abs=60.0)


def test_ecg_lead_options(mahnob_root: Path):
    items = build_corpus("mahnob_hci").read_checked(mahnob_root)
    diff = build_corpus("mahnob_hci", ecg_channel="EXG3-EXG1")
    item = diff.read_checked(mahnob_root)[0]
    assert item.cardiac.channel == "EXG3-EXG1" and diff.options()["ecg_channel"] == "EXG3-EXG1"
    exg1 = pyedflib.EdfReader(str(item.cardiac.path))
    try:
        labels = exg1.getSignalLabels()
        expected = exg1.readSignal(labels.index("EXG3")) - exg1.readSignal(labels.index("EXG1"))
    finally:
        exg1.close()
    np.testing.assert_allclose(diff.load_cardiac(item).values, expected)
    assert EcgLead.parse(" EXG2 ") == EcgLead("EXG2") and str(EcgLead.parse("EXG3 - EXG1")) == "EXG3-EXG1"
    for bad in ({"ecg_channel": "EXG1-EXG2-EXG3"}, {"ecg_channel": "-EXG1"}, {"sessions": ["rest"]}):
        with pytest.raises(ValueError, match="mahnob_hci"):
            build_corpus("mahnob_hci", **bad)
    # An item keeps the lead it was read with.
    own = build_corpus("mahnob_hci", ecg_channel="EXG3").load_cardiac(items[0]).values
    np.testing.assert_array_equal(own, build_corpus("mahnob_hci").load_cardiac(items[0]).values)


def test_felt_emotion_as_expression(mahnob_root: Path):
    corpus = build_corpus("mahnob_hci", felt_emotion_as_expression=True)
    items = corpus.read_checked(mahnob_root)
    assert [it.expression.label for it in items] == ["joy", "amusement", "anger", "sadness"]
    label_map = LabelMap(BASIC_EXPRESSIONS, corpus.expression_map)
    assert [label_map.index(it.expression.label) for it in items] == [
        BASIC_EXPRESSIONS.index("happy"),
        None,
        BASIC_EXPRESSIONS.index("angry"),
        BASIC_EXPRESSIONS.index("sad"),
    ]
    assert label_map.unmapped == {"amusement": 1}


def test_malformed_sessions(mahnob_root: Path, video_writer, bad_input):
    sessions = mahnob_root / "Sessions"
    no_video = sessions / "40"
    write_session_xml(no_video, 5)
    write_bdf(no_video / "Part_5_S_Trial1_emotion.bdf", 9, 2.0)
    no_bdf = sessions / "41"
    write_session_xml(no_bdf, 5)
    write_c1_video(video_writer, no_bdf, 5, 1.0)
    bad = {
        "no_video": no_video,
        "no_bdf": no_bdf,
        "no_status": write_session(video_writer, sessions, 42, 5, 2) / "Part_5_S_Trial2_emotion.bdf",
        "no_ecg": write_session(video_writer, sessions, 44, 5, 3) / "Part_5_S_Trial3_emotion.bdf",
        "no_trigger": write_session(video_writer, sessions, 46, 5, 4, trigger_s=None) / "Part_5_S_Trial4_emotion.bdf",
        "not_bdf": write_session(video_writer, sessions, 48, 5, 5) / "Part_5_S_Trial5_emotion.bdf",
        "xml": write_session(video_writer, sessions, 50, 5, 6) / "session.xml",
        "felt": write_session(video_writer, sessions, 52, 5, 7, felt_emo="9") / "session.xml",
    }
    write_bdf(bad["no_status"], 9, 2.0, drop=("Status",))
    write_bdf(bad["no_ecg"], 9, 2.0, drop=("EXG2",))
    bad["not_bdf"].write_bytes(b"0       this is no Biosemi file" * 10)
    bad["xml"].write_text("<session isStim='1'><subject id='5'></session>")
    # Found by check: ECG that stops 3 s into a 6 s video, and a video cut in half.
    write_session(video_writer, sessions, 54, 6, 1, trigger_s=1.0, bdf_s=4, video_s=6.0)
    cut = write_session(video_writer, sessions, 56, 6, 2, video_s=6.0)
    cut_video = next(cut.glob("*.avi"))
    data = cut_video.read_bytes()
    cut_video.write_bytes(data[: len(data) // 2])

    with pytest.raises(CorpusError, match=r"Sessions/40: session has no frontal colour video"):
        build_corpus("mahnob_hci").read_checked(mahnob_root)
    corpus = build_corpus("mahnob_hci", on_error="skip")
    items = corpus.read_checked(mahnob_root)
    reasons = {p.path: p.reason for p in corpus.problems}
    assert set(reasons) == {str(p) for p in bad.values()}
    assert "no BDF file" in reasons[str(no_bdf)]
    assert "has no Status channel" in reasons[str(bad["no_status"])]
    assert "has no EXG2 channel" in reasons[str(bad["no_ecg"])] and "EXG1" in reasons[str(bad["no_ecg"])]
    assert "holds no trigger" in reasons[str(bad["no_trigger"])]
    assert "cannot be read as a BDF" in reasons[str(bad["not_bdf"])]
    assert "cannot be parsed as XML" in reasons[str(bad["xml"])]
    assert "unknown feltEmo code '9'" in reasons[str(bad["felt"])]
    by_id = {it.item_id: it for it in items}
    assert set(by_id) == {"P1/2", "P2/10", "P3/136", "P4/270", "P6/54", "P6/56"}
    (coverage,) = corpus.check(by_id["P6/54"])
    assert coverage.path == str(by_id["P6/54"].cardiac.path) and "shorter than the video" in coverage.reason
    (truncated,) = corpus.check(by_id["P6/56"])
    assert truncated.path == str(cut_video) and "truncated" in truncated.reason
    for key, area, case in (
        ("no_ecg", "physiology", "MAHNOB BDF without the ECG channel EXG2"),
        ("not_bdf", "physiology", "MAHNOB BDF that is text"),
        ("felt", "labels and tables", "MAHNOB session.xml with feltEmo 9 (outside its codes)"),
    ):
        bad_input.record(area, case, f"{bad[key]}: {reasons[str(bad[key])]}")
    bad_input.record(
        "physiology", "MAHNOB ECG ending 3 s into a 6 s video (data summary)", f"{coverage.path}: {coverage.reason}"
    )
    bad_input.record("corpus files", "MAHNOB AVI cut in half (data summary)", f"{truncated.path}: {truncated.reason}")


def test_data_summary_names_the_problems(mahnob_root: Path, video_writer, capsys):
    sessions = mahnob_root / "Sessions"
    write_session_xml(sessions / "40", 5)
    write_bdf(sessions / "40" / "Part_5_S_Trial1_emotion.bdf", 9, 2.0)
    short = write_session(video_writer, sessions, 54, 6, 1, trigger_s=1.0, bdf_s=4, video_s=6.0)
    capsys.readouterr()
    assert data_main(["summary", "--corpus", "mahnob_hci", "--root", str(mahnob_root), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["cardiac"] == {"ecg": 5, "ppg": 0, "hr": 0, "none": 0}
    assert sum(s["items"] for s in summary["splits"].values()) == 5
    problems = {p["path"]: p["reason"] for p in summary["problems"]}
    assert "no frontal colour video" in problems[str(sessions / "40")]
    assert "shorter than the video" in problems[str(short / "Part_6_S_Trial1_emotion.bdf")]


def test_missing_sessions_folder(tmp_path: Path):
    (tmp_path / "Sessions" / "2").mkdir(parents=True)
    with pytest.raises(CorpusError, match="no session folder with a session.xml"):
        build_corpus("mahnob_hci").read_checked(tmp_path)
