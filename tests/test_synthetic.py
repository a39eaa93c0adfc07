"""The synthetic corpus generator: layout contract, determinism, caching, and the physics it promises."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

from stress_lightning.data import render
from stress_lightning.data import synthetic as syn
from stress_lightning.data.synthetic import SyntheticConfig, generate_corpus
from stress_lightning.signals.ecg import detect_r_peaks
from stress_lightning.signals.hrv import frequency_domain, time_domain
from stress_lightning.signals.rppg import heart_rate_bpm, pos

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
TINY = SyntheticConfig(num_subjects=4, duration_s=6.0, width=64, height=64, seed=3)
# Long enough for a spectral heart rate (10 s) at a face size where the ROI averages ~400 skin pixels.
RPPG = SyntheticConfig(num_subjects=3, duration_s=10.0, width=96, height=96, seed=11)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_corpus(tmp_path_factory.mktemp("syn") / "tiny", TINY, progress=False, workers=1)


@pytest.fixture(scope="module")
def rppg_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_corpus(tmp_path_factory.mktemp("syn") / "rppg", RPPG, progress=False, workers=1)


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def sessions(root: Path) -> list[tuple[str, pd.Series]]:
    subjects = pd.read_csv(root / "subjects.csv")
    out = []
    for sid in subjects["subject_id"]:
        for _, row in pd.read_csv(root / sid / "labels.csv").iterrows():
            out.append((sid, row))
    return out


def test_layout_follows_the_contract(tiny_root: Path) -> None:
    meta = json.loads((tiny_root / "corpus.json").read_text())
    assert meta["generator_version"] == syn.GENERATOR_VERSION
    assert meta["expression_names"] == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert meta["stress_names"] == ["low", "normal", "high"]
    assert len(meta["fingerprint"]) == 64 and meta["config"]["seed"] == TINY.seed
    subjects = pd.read_csv(tiny_root / "subjects.csv")
    for col in ("subject_id", "split", "skin_tone", "gender", "face_width", "face_height", "baseline_hr_bpm"):
        assert col in subjects.columns
    assert sorted(subjects["split"].unique()) == ["test", "train", "val"]
    assert subjects["subject_id"].is_unique  # one row per subject: splits are subject-disjoint
    for sid in subjects["subject_id"]:
        labels = pd.read_csv(tiny_root / sid / "labels.csv")
        assert list(labels.columns) == list(syn.LABEL_COLUMNS)
        assert sorted(labels["stress_level"]) == [0, 1, 2]
        assert list(labels["session_id"]) == [f"{sid}_{n}" for n in labels["stress_name"]]
    for sid, row in sessions(tiny_root):
        base = tiny_root / sid
        assert row["video"].endswith("video.mkv")
        ecg = pd.read_csv(base / row["ecg"])
        assert list(ecg.columns) == ["time_s", "ecg_mv"]
        assert ecg["time_s"].iloc[0] == 0.0 and ecg["time_s"].iloc[-1] >= row["duration_s"]
        assert np.allclose(np.diff(ecg["time_s"]), 1 / row["ecg_fs_hz"], atol=1e-4)
        events = pd.read_csv(base / row["expressions"])
        assert list(events.columns) == ["start_s", "apex_start_s", "apex_end_s", "end_s", "label"]
        assert len(events) >= 1 and set(events["label"]) <= set(syn.EXPRESSION_NAMES)
        times = events[["start_s", "apex_start_s", "apex_end_s", "end_s"]].to_numpy()
        assert (np.diff(times, axis=1) > 0).all() and times.max() <= row["duration_s"]
        boxes = pd.read_csv(base / row["face_boxes"])
        assert list(boxes.columns) == ["frame", "x0", "y0", "x1", "y1"] and len(boxes) == row["n_frames"]
        with av.open(str(base / row["video"])) as c:
            stream = c.streams.video[0]
            assert stream.codec_context.name == "ffv1" and stream.frames in (0, row["n_frames"])
            assert (stream.width, stream.height) == (TINY.width, TINY.height)


def test_reader_reads_the_corpus(tiny_root: Path) -> None:
    from stress_lightning.data.corpora import build_corpus

    corpus = build_corpus("synthetic")
    items = corpus.read(tiny_root)
    assert len(items) == 3 * TINY.num_subjects
    assert all(it.media.path.is_file() and it.cardiac.path.is_file() and it.cardiac.kind == "ecg" for it in items)
    assert {it.stress.label for it in items} == {"low", "normal", "high"}
    # With no generator settings, prepare() adopts the corpus already at the root instead of regenerating it.
    stamp = (tiny_root / "corpus.json").stat().st_mtime_ns
    corpus.prepare(tiny_root, progress=False)
    assert corpus.generator == TINY and (tiny_root / "corpus.json").stat().st_mtime_ns == stamp


def test_deterministic_cached_and_guarded(tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(syn, "POOL_MIN_FRAMES", 0)  # worker processes here, one process for tiny_root
    again = generate_corpus(tmp_path / "again", TINY, progress=False, workers=2)
    for sid, row in sessions(tiny_root):
        assert (tiny_root / sid / row["ecg"]).read_bytes() == (again / sid / row["ecg"]).read_bytes()
        assert (tiny_root / sid / row["face_boxes"]).read_bytes() == (again / sid / row["face_boxes"]).read_bytes()
        assert np.array_equal(decode(tiny_root / sid / row["video"]), decode(again / sid / row["video"]))
    meta = json.loads((again / "corpus.json").read_text())
    assert meta["fingerprint"] == json.loads((tiny_root / "corpus.json").read_text())["fingerprint"]

    stamp = (again / "corpus.json").stat().st_mtime_ns
    t0 = time.perf_counter()
    assert generate_corpus(again, TINY, progress=False) == again
    assert time.perf_counter() - t0 < 1.0 and (again / "corpus.json").stat().st_mtime_ns == stamp

    with pytest.raises(ValueError, match="different config.*seed"):
        generate_corpus(again, replace(TINY, seed=4), progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not a corpus")
    with pytest.raises(ValueError, match="not empty"):
        generate_corpus(tmp_path / "other", TINY, progress=False)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left behind


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ValueError, match="codec"):
        SyntheticConfig(codec="mjpeg")
    with pytest.raises(ValueError, match="num_subjects"):
        SyntheticConfig(num_subjects=2)


def test_ecg_r_peaks_give_back_the_generated_heart_rate(tiny_root: Path) -> None:
    truth = json.loads((tiny_root / "corpus.json").read_text())["sessions"]
    for sid, row in sessions(tiny_root):
        ecg = pd.read_csv(tiny_root / sid / row["ecg"])["ecg_mv"].to_numpy()
        peaks = detect_r_peaks(ecg, row["ecg_fs_hz"])
        t = peaks / row["ecg_fs_hz"]
        hr = 60.0 / np.diff(t[(t >= 0) & (t <= row["duration_s"])]).mean()
        assert abs(hr - truth[row["session_id"]]["mean_hr_bpm"]) < 1.0, row["session_id"]


def roi_traces(frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Mean RGB over the forehead and both cheeks (ARCHITECTURE.md fractions), per frame."""
    out = np.empty((len(frames), 3))
    for i, (frame, (x0, y0, x1, y1)) in enumerate(zip(frames, boxes, strict=True)):
        pix = []
        for fx0, fx1, fy0, fy1 in render.ROI_REGIONS.values():
            r0, r1 = round(y0 + fy0 * (y1 - y0)), round(y0 + fy1 * (y1 - y0))
            c0, c1 = round(x0 + fx0 * (x1 - x0)), round(x0 + fx1 * (x1 - x0))
            pix.append(frame[r0:r1, c0:c1].reshape(-1, 3))
        out[i] = np.concatenate(pix).mean(axis=0)
    return out


def test_pos_on_the_decoded_video_recovers_the_heart_rate(rppg_root: Path) -> None:
    """POS on the forehead/cheek ROI of the decoded video against (a) the spectral HR of the pulse wave the
    generator put on the skin (the video channel alone: noise, motion, light, quantisation) and (b) the ECG's
    mean HR. (b) also contains what any 10 s spectral estimate misses of a rate that varies (HRV): even the
    clean pulse wave is off the mean-RR heart rate by ~1.2 bpm on average and up to ~5 bpm at worst."""
    truth = json.loads((rppg_root / "corpus.json").read_text())["sessions"]
    plans = {p.session_id: p for p in syn.plan_sessions(RPPG)}
    channel_err, ecg_err = [], []
    for sid, row in sessions(rppg_root):
        frames = decode(rppg_root / sid / row["video"])
        boxes = pd.read_csv(rppg_root / sid / row["face_boxes"])[["x0", "y0", "x1", "y1"]].to_numpy()
        hr = heart_rate_bpm(pos(roi_traces(frames, boxes), row["fps"]), row["fps"])
        clean = syn.session_signals(plans[row["session_id"]], RPPG).pulse
        channel_err.append(abs(hr - heart_rate_bpm(clean, row["fps"])))
        ecg_err.append(abs(hr - truth[row["session_id"]]["mean_hr_bpm"]))
    assert max(channel_err) < 3.0, channel_err
    assert np.mean(ecg_err) < 3.0 and max(ecg_err) < 5.0, ecg_err


def test_stress_shifts_rmssd_down_and_heart_rate_and_lf_hf_up() -> None:
    config = SyntheticConfig(num_subjects=8, duration_s=60.0, seed=5)
    rmssd = np.zeros((config.num_subjects, 3))
    hr = np.zeros_like(rmssd)
    lf_hf = np.zeros_like(rmssd)
    for plan in syn.plan_sessions(config):
        sig = syn.session_signals(plan, config)
        peaks = detect_r_peaks(sig.ecg_mv, config.ecg_fs_hz)
        rr_ms = np.diff(peaks) / config.ecg_fs_hz * 1000.0
        rmssd[plan.subject.index, plan.stress_level] = time_domain(rr_ms)["rmssd_ms"]
        lf_hf[plan.subject.index, plan.stress_level] = frequency_domain(rr_ms)["lf_hf_ratio"]
        hr[plan.subject.index, plan.stress_level] = 60000.0 / rr_ms.mean()
    mean_rmssd, mean_hr = rmssd.mean(axis=0), hr.mean(axis=0)
    assert mean_rmssd[2] < mean_rmssd[1] < mean_rmssd[0], mean_rmssd
    assert mean_hr[0] < mean_hr[1] < mean_hr[2], mean_hr
    assert np.median(lf_hf[:, 2]) > np.median(lf_hf[:, 0]), lf_hf


def test_stress_is_learnable_from_clip_features() -> None:
    """Ground-truth clip features (HR, RMSSD, time share of each expression over 8 s) separate the stress levels
    of held-out subjects, but not trivially (HR alone does not)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    config = SyntheticConfig()
    feats: dict[str, list] = {"train": [], "val": [], "test": []}
    for plan in syn.plan_sessions(config):
        series = syn.phys.simulate_beats(plan.cardiac, config.duration_s, syn._rng(*plan.seed, 0))
        t = np.arange(config.n_frames) / config.fps
        labels, _ = syn.expression_track(plan.events, t)
        for start in np.arange(0.0, config.duration_s - 8.0 + 1e-9, 2.0):
            rr = series.rr_inside_s(start, start + 8.0)
            inside = (t >= start) & (t < start + 8.0)
            share = [
                np.mean([lab == name for lab, m in zip(labels, inside, strict=True) if m])
                for name in syn.EXPRESSION_NAMES
            ]
            x = [60.0 / rr.mean(), np.log(np.sqrt(np.mean(np.diff(rr * 1000) ** 2))), *share]
            feats[plan.subject.split].append((x, plan.stress_level))

    def fit_score(columns: slice) -> float:
        x_tr = np.array([f[0] for f in feats["train"]])[:, columns]
        y_tr = [f[1] for f in feats["train"]]
        held = feats["val"] + feats["test"]
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x_tr, y_tr)
        pred = model.predict(np.array([f[0] for f in held])[:, columns])
        return f1_score([f[1] for f in held], pred, average="macro")

    assert fit_score(slice(None)) >= 0.8
    assert fit_score(slice(0, 1)) < 0.7


def test_pulse_is_below_one_8bit_level_but_present() -> None:
    config = replace(TINY, duration_s=4.0)
    plan = syn.plan_sessions(config)[0]
    sig = syn.session_signals(plan, config)
    n = config.n_frames
    up = replace(sig, pulse=np.full(n, 0.5))
    down = replace(sig, pulse=np.full(n, -0.5))
    for (a, box), (b, _) in zip(
        syn.render_frames(plan, config, up, noise=False, as_float=True),
        syn.render_frames(plan, config, down, noise=False, as_float=True),
        strict=True,
    ):
        diff = np.abs(a - b)  # one full peak-to-peak pulse swing
        assert diff.max() < 1.0
        x0, y0, x1, y1 = box
        y, x = int(y0 + 0.62 * (y1 - y0)), int(x0 + 0.26 * (x1 - x0))  # left cheek, away from the highlight
        relative = diff[y, x] / a[y, x]
        assert diff[y, x, 1] > 0.05 and relative[1] > relative[2] > relative[0]  # green strongest, then blue
        assert relative[1] == pytest.approx(config.pulse_amplitude, rel=0.02)


def test_ffv1_round_trip_is_lossless(tiny_root: Path) -> None:
    plans = {p.session_id: p for p in syn.plan_sessions(TINY)}
    sid, row = sessions(tiny_root)[0]
    plan = plans[row["session_id"]]
    rendered = np.stack([img for img, _ in syn.render_frames(plan, TINY, syn.session_signals(plan, TINY))])
    assert np.array_equal(decode(tiny_root / sid / row["video"]), rendered)


def test_roi_regions_stay_skin_at_every_expression_and_pose() -> None:
    poses = [render.Pose(rot_deg=r, scale=s, tx=2.0, ty=-1.5) for r in (-3.0, 0.0, 3.0) for s in (0.96, 1.04)]
    for subject in syn.plan_subjects(replace(TINY, num_subjects=6, width=128, height=128)):
        renderer = render.FaceRenderer(subject.identity, 128, 128)
        for label in syn.EXPRESSION_NAMES:
            layers = renderer.layers(label, 1.0)
            for pose in poses:
                mask = render.posed_skin_mask(layers, renderer, pose)
                ok = render.region_is_skin(mask, pose.box(renderer.box), threshold=0.99)
                assert all(ok.values()), (subject.subject_id, label, pose, ok)


def test_every_split_shows_every_expression() -> None:
    plans = syn.plan_sessions(SyntheticConfig())
    for split in ("train", "val", "test"):
        labels = {e.label for p in plans if p.subject.split == split for e in p.events}
        assert labels == set(syn.EVENT_LABELS)


def test_h264_option_writes_a_decodable_mp4(tmp_path: Path) -> None:
    config = replace(TINY, num_subjects=3, duration_s=4.0, codec="h264")
    root = generate_corpus(tmp_path / "h264", config, progress=False, workers=1)
    sid, row = sessions(root)[0]
    assert row["video"].endswith("video.mp4")
    assert decode(root / sid / row["video"]).shape == (config.n_frames, config.height, config.width, 3)


@pytest.mark.shared_data
@pytest.mark.filterwarnings("ignore:pkg_resources is deprecated")  # heartpy 1.2.7 imports pkg_resources
@pytest.mark.parametrize("source", ["ppg/heartpy/data.csv", "ecg/wfdb/a103l"])
def test_pulse_from_a_real_recording(tmp_path: Path, source: str) -> None:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent: no real recordings to drive the pulse")
    config = replace(TINY, num_subjects=3, duration_s=6.0, width=48, height=48, pulse_source=str(SHARED_DATA / source))
    root = generate_corpus(tmp_path / "real", config, progress=False, workers=1)
    truth = json.loads((root / "corpus.json").read_text())["sessions"]
    hrs = []
    for sid, row in sessions(root):
        ecg = pd.read_csv(root / sid / row["ecg"])["ecg_mv"].to_numpy()
        t = detect_r_peaks(ecg, row["ecg_fs_hz"]) / row["ecg_fs_hz"]
        hr = 60.0 / np.diff(t[(t >= 0) & (t <= row["duration_s"])]).mean()
        assert abs(hr - truth[row["session_id"]]["mean_hr_bpm"]) < 1.5, row["session_id"]
        hrs.append(hr)
    assert 40 < min(hrs) and max(hrs) < 140
