"""Unit tests of the data pipeline pieces that need no generated corpus."""

from __future__ import annotations

import numpy as np
import pytest

from stress_lightning.data.clips import ClipSpec
from stress_lightning.data.errors import CorpusError, VideoDecodeError
from stress_lightning.data.faces import crop_face, roi_grid
from stress_lightning.data.labels import expression_timeline, load_ecg
from stress_lightning.data.sample import EXPRESSION_NAMES, make_sample
from stress_lightning.data.video import iter_frames


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
    timeline = expression_timeline(path)
    assert timeline.label_at(0.5) == EXPRESSION_NAMES.index("neutral")
    assert timeline.label_at(1.2) is None  # onset: left unlabelled
    assert timeline.label_at(2.0) == EXPRESSION_NAMES.index("happy")
    assert timeline.label_at(4.0) == EXPRESSION_NAMES.index("neutral")


def test_expression_timeline_rejects_unknown_label(tmp_path) -> None:
    path = tmp_path / "expressions.csv"
    path.write_text("start_s,apex_start_s,apex_end_s,end_s,label\n1.0,1.5,3.0,3.5,bored\n")
    with pytest.raises(CorpusError, match=r"expressions\.csv.*bored"):
        expression_timeline(path)


def test_ecg_shorter_than_video_names_the_file(tmp_path) -> None:
    path = tmp_path / "ecg.csv"
    t = np.arange(0, 5, 1 / 250)
    path.write_text("time_s,ecg_mv\n" + "\n".join(f"{x:.4f},0.0" for x in t))
    with pytest.raises(CorpusError, match=r"ecg\.csv: ECG lasts 5\.00 s but its video lasts 10\.00 s"):
        load_ecg(path, 250.0, 10.0)


def test_ecg_missing_column_names_column(tmp_path) -> None:
    path = tmp_path / "ecg.csv"
    path.write_text("time_s,voltage\n0,1\n")
    with pytest.raises(CorpusError, match=r"ecg\.csv: missing column\(s\) \['ecg_mv'\]"):
        load_ecg(path, 250.0, 0.001)


def test_corrupt_video_names_the_file(tmp_path) -> None:
    path = tmp_path / "video.mkv"
    path.write_bytes(b"\x1a\x45\xdf\xa3" + np.random.default_rng(0).bytes(4096))
    with pytest.raises(VideoDecodeError, match=r"video\.mkv"):
        list(iter_frames(path))


def test_clip_spec_face_offsets_are_centred() -> None:
    spec = ClipSpec(fps=25.0, clip_seconds=8.0, face_frames=8, face_span_s=1.4)
    offsets = spec.face_offsets()
    assert spec.roi_frames == 200 and len(offsets) == 8
    assert offsets[0] == -offsets[-1]


def test_make_sample_masks_missing_labels() -> None:
    import torch

    sample = make_sample(torch.zeros(8, 3, 16, 16), torch.zeros(50, 3, 8, 8), 25.0, expression=3)
    assert sample["expression_mask"] and not sample["hr_mask"] and not sample["hrv_mask"]
    assert sample["hr_bpm"] == 0.0
