"""Unit tests of the data pipeline pieces that need no generated corpus."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stress_lightning.data.cache import TimeResampler
from stress_lightning.data.clips import ClipSpec
from stress_lightning.data.corpora.base import split_subjects
from stress_lightning.data.corpora.synthetic import read_timeline
from stress_lightning.data.errors import CorpusError, VideoDecodeError
from stress_lightning.data.faces import crop_face, roi_grid
from stress_lightning.data.items import (
    CardiacSignal,
    ExpressionEvent,
    ExpressionTimeline,
    StressSegment,
    StressSegments,
)
from stress_lightning.data.labels import cardiac_truth
from stress_lightning.data.sample import make_sample
from stress_lightning.data.taxonomy import BASIC_EXPRESSIONS, LabelMap
from stress_lightning.data.video import iter_frames, iter_timed_frames, probe_video, read_image


def test_roi_grid_keeps_sub_lsb_pulse() -> None:
    """A 0.3 % modulation is below one 8-bit level per pixel; with noise and quantisation the area average must
    still follow it."""
    rng = np.random.default_rng(0)
    box = np.array([20, 20, 108, 108], dtype=np.float32)
    t = np.arange(100) / 25.0
    pulse = 0.003 * np.sin(2 * np.pi * 1.2 * t)
    means = []
    for p in pulse:
        clean = 150.0 * (1 + p) * np.ones((128, 128, 3))
        frame = np.clip(np.round(clean + rng.normal(0, 2.0, clean.shape)), 0, 255).astype(np.uint8)
        means.append(roi_grid(frame, box, 8)[1].mean())
    r = np.corrcoef(np.array(means), pulse)[0, 1]
    assert r > 0.9
    assert 150.0 * 0.003 < 1.0  # the modulation really is sub-LSB


def test_roi_grid_regions_and_shape() -> None:
    frame = np.zeros((100, 100, 3), dtype=np.uint8)
    frame[:50] = 200  # top half bright: forehead region, not cheeks
    grid = roi_grid(frame, np.array([0, 0, 100, 100], dtype=np.float32), 8)
    assert grid.shape == (3, 8, 8) and grid.dtype == np.float32
    assert np.allclose(grid[:, :4], 200 / 255) and np.allclose(grid[:, 4:], 0)
    with pytest.raises(ValueError, match="even"):
        roi_grid(frame, np.array([0, 0, 100, 100], dtype=np.float32), 7)


def test_crop_face_handles_box_outside_frame() -> None:
    frame = np.full((64, 64, 3), 90, dtype=np.uint8)
    crop = crop_face(frame, np.array([40, 40, 90, 90], dtype=np.float32), 32)
    assert crop.shape == (32, 32, 3) and crop.dtype == np.uint8


def test_expression_timeline_masks_transitions(tmp_path) -> None:
    path = tmp_path / "expressions.csv"
    path.write_text("start_s,apex_start_s,apex_end_s,end_s,label\n1.0,1.5,3.0,3.5,happy\n")
    timeline = read_timeline(path)
    assert timeline.label_at(0.5) == "neutral"
    assert timeline.label_at(1.2) is None  # onset: left unlabelled
    assert timeline.label_at(2.0) == "happy"
    assert timeline.label_at(4.0) == "neutral"


def test_expression_timeline_rejects_unknown_label(tmp_path) -> None:
    path = tmp_path / "expressions.csv"
    path.write_text("start_s,apex_start_s,apex_end_s,end_s,label\n1.0,1.5,3.0,3.5,bored\n")
    with pytest.raises(CorpusError, match=r"expressions\.csv.*bored"):
        read_timeline(path)


def test_label_map_maps_synonyms_counts_unmapped_and_takes_overrides() -> None:
    labels = LabelMap(BASIC_EXPRESSIONS)
    assert labels.index("Happiness") == BASIC_EXPRESSIONS.index("happy")
    assert labels.index("anger") == BASIC_EXPRESSIONS.index("angry")
    assert labels.index("contempt") is None and labels.index("calm") is None
    assert labels.unmapped == {"contempt": 1, "calm": 1}
    eight = LabelMap((*BASIC_EXPRESSIONS, "contempt"))
    assert eight.index("contempt") == 7
    remapped = LabelMap(BASIC_EXPRESSIONS, overrides={"calm": "neutral", "contempt": None})
    assert remapped.index("calm") == BASIC_EXPRESSIONS.index("neutral")
    assert remapped.index("contempt") is None
    coded = LabelMap(BASIC_EXPRESSIONS, corpus_map={"3": "happy", "8": None})
    assert coded.index("3") == BASIC_EXPRESSIONS.index("happy") and coded.index("8") is None


def test_stress_segments_label_only_windows_inside_one_segment() -> None:
    segments = StressSegments((StressSegment(0, 60, "low"), StressSegment(60, 120, "high")))
    assert segments.label_over(10, 18) == "low"
    assert segments.label_over(56, 64) is None
    assert segments.label_over(100, 108) == "high"


def _ecg(fs: float, seconds: float, hr_bpm: float) -> np.ndarray:
    t = np.arange(0, seconds, 1 / fs)
    phase = (t * hr_bpm / 60.0) % 1.0
    return np.exp(-(((phase - 0.5) / 0.01) ** 2)) + 0.01 * np.sin(2 * np.pi * 0.3 * t)


def test_cardiac_truth_from_ecg_ppg_and_hr_series() -> None:
    fs = 250.0
    ecg = cardiac_truth(CardiacSignal("ecg", _ecg(fs, 40, 72.0), fs_hz=fs))
    assert ecg.hr_bpm(5, 13) == pytest.approx(72.0, abs=0.5)
    t = np.arange(0, 40, 1 / 64)
    ppg_values = np.sin(2 * np.pi * 1.25 * t) + 0.3 * np.sin(2 * np.pi * 2.5 * t + 1)
    ppg = cardiac_truth(CardiacSignal("ppg", ppg_values, fs_hz=64.0))
    assert ppg.hr_bpm(5, 13) == pytest.approx(75.0, abs=1.0)
    hr = cardiac_truth(CardiacSignal("hr", np.full(40, 66.0), times_s=np.arange(40.0)))
    assert hr.hr_bpm(5, 13) == pytest.approx(66.0) and hr.hr_bpm(50, 58) is None
    # the video starts 10 s into the ECG: beats move onto the video clock
    shifted = cardiac_truth(CardiacSignal("ecg", _ecg(fs, 40, 72.0), fs_hz=fs, start_s=-10.0))
    assert shifted.hr_bpm(0, 8) == pytest.approx(72.0, abs=0.5) and shifted.hr_bpm(25, 33) is None


def test_unreadable_ecg_names_the_file() -> None:
    # NaN samples are dropouts (bridged or masked, tests/test_bad_corpus_inputs.py); none usable is an error.
    with pytest.raises(CorpusError, match=r"ecg\.csv: ECG has no usable samples \(3 of 3 are NaN/inf\)"):
        cardiac_truth(CardiacSignal("ecg", np.full(3, np.nan), fs_hz=250.0, source=Path("ecg.csv")))


def test_time_resampler_interpolates_roi_and_marks_gaps() -> None:
    """Frames at 30 fps with a dropped frame and a long gap, resampled to 25 fps by time."""
    resampler = TimeResampler(25.0, (4, 4, 3), (3, 2, 2))
    times = [i / 30 for i in range(30) if i != 7] + [1.0 + 0.5 + i / 30 for i in range(30)]
    for t in times:
        roi = np.full((3, 2, 2), t, np.float32)  # a ramp: linear interpolation recovers t exactly
        resampler.push(t, np.zeros((4, 4, 3), np.uint8), roi, True)
    faces, roi, valid = resampler.arrays()
    targets = np.arange(len(valid)) / 25.0
    assert np.allclose(roi[:, 0, 0, 0], targets, atol=1e-5)
    # the 0.53 s gap between 0.967 s and 1.5 s is not bridged; the single dropped frame is
    gap = (targets > 29 / 30) & (targets < 1.5)
    assert not valid[gap].any() and valid[~gap].all()


def test_timed_frames_follow_timestamps_not_indices(tmp_path, write_timed_video) -> None:
    path = tmp_path / "dropped.avi"
    times = [i / 30 for i in range(40) if i not in (10, 11, 12)]
    write_timed_video(path, ((t, np.full((32, 32, 3), 100, np.uint8)) for t in times))
    decoded = [t for t, _ in iter_timed_frames(path)]
    assert len(decoded) == len(times)
    assert np.allclose(decoded, times, atol=0.002)
    assert probe_video(path).width == 32


def test_corrupt_video_names_the_file(tmp_path) -> None:
    path = tmp_path / "video.mkv"
    path.write_bytes(b"\x1a\x45\xdf\xa3" + np.random.default_rng(0).bytes(4096))
    with pytest.raises(VideoDecodeError, match=r"video\.mkv"):
        list(iter_frames(path))


def test_unreadable_image_names_the_file(tmp_path) -> None:
    path = tmp_path / "face.jpg"
    path.write_bytes(b"not a jpeg")
    with pytest.raises(CorpusError, match=r"face\.jpg: cannot be decoded"):
        read_image(path)
    with pytest.raises(CorpusError, match="missing"):
        read_image(tmp_path / "absent.png")


def test_subject_splits_are_deterministic_and_disjoint() -> None:
    subjects = [f"S{i:03d}" for i in range(40)]
    splits = split_subjects(subjects, (0.7, 0.15, 0.15), seed=1)
    assert splits == split_subjects(list(reversed(subjects)), (0.7, 0.15, 0.15), seed=1)
    counts = {s: sum(v == s for v in splits.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 28, "val": 6, "test": 6}


def test_clip_spec_face_offsets_are_centred() -> None:
    spec = ClipSpec(fps=25.0, clip_seconds=8.0, face_frames=8, face_span_s=1.4)
    offsets = spec.face_offsets()
    assert spec.roi_frames == 200 and len(offsets) == 8
    assert offsets[0] == -offsets[-1]


def test_make_sample_masks_missing_labels_and_stills() -> None:
    sample = make_sample(torch.zeros(8, 3, 16, 16), torch.zeros(50, 3, 8, 8), 25.0, expression=3)
    assert sample["expression_mask"] and not sample["hr_mask"] and not sample["hrv_mask"]
    assert sample["hr_bpm"] == 0.0 and sample["roi_mask"] and not sample["still"]
    still = make_sample(
        torch.zeros(8, 3, 16, 16), torch.zeros(50, 3, 8, 8), 25.0, expression=1, hr_bpm=70.0, still=True
    )
    assert still["still"] and not still["roi_mask"] and not still["hr_mask"]


def test_timeline_rest_label() -> None:
    timeline = ExpressionTimeline((ExpressionEvent(1.0, 1.5, 3.0, 3.5, "sad"),), rest_label="neutral")
    assert timeline.labels() == ["sad"] and timeline.label_at(10.0) == "neutral"


def test_block_array_spills_to_disk_and_saves_in_order(tmp_path) -> None:
    from stress_lightning.data.cache import BlockArray

    data = np.random.default_rng(0).random((11, 2, 3)).astype(np.float32)
    for spill in (None, tmp_path / "x.spill"):
        array = BlockArray((2, 3), np.float32, block=4, spill=spill)
        for row in data:
            array.append(row)
        assert np.array_equal(array.array(), data)
        array.save(tmp_path / "out.npy")
        assert np.array_equal(np.load(tmp_path / "out.npy"), data)
        assert not (tmp_path / "x.spill").exists()
