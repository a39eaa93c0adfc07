"""The model zoo's data side: body keypoints, face landmarks and a pulse waveform beside every clip (synthetic
corpus, manifest), their clocks, masks and bad-file policy, and the per-clip group attributes fairness uses."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.signal import butter, sosfiltfilt

from stress_lightning.data import render
from stress_lightning.data.body import read_openpose
from stress_lightning.data.corpora import build_corpus
from stress_lightning.data.datamodules import ClipDataModule
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.items import CardiacSignal
from stress_lightning.data.landmarks import (
    LANDMARK_NAMES,
    MESH_LANDMARK_INDICES,
    from_face_mesh,
    read_landmarks_csv,
    write_landmarks_csv,
)
from stress_lightning.data.mixed import MixedDataModule
from stress_lightning.data.render_landmarks import frame_landmarks
from stress_lightning.data.sample import make_sample
from stress_lightning.data.sidecars import SidecarWarning, Track, sample_pulse, sample_track
from stress_lightning.data.synthetic import SyntheticConfig, plan_subjects

# A pulse strong enough, and noise and lighting drift low enough, for the ROI's green channel to show it clearly.
GENERATOR = {
    "num_subjects": 3,
    "duration_s": 6.0,
    "width": 64,
    "height": 64,
    "seed": 5,
    "pulse_amplitude": 0.02,
    "noise_scale": 0.3,
    "lighting_drift": 0.0,
    "motion_scale": 0.5,
}
SIDECAR_KEYS = {"body": (8, 25, 3), "landmarks": (8, 12, 2), "ppg": (100,)}


def _module(root: Path, cache: Path, **kwargs) -> ClipDataModule:
    options = {"corpus": "synthetic", "corpus_options": {"generator": GENERATOR}, **kwargs}
    return ClipDataModule(
        root=str(root),
        cache_dir=str(cache),
        clip_seconds=4.0,
        face_size=32,
        batch_size=4,
        train_stride_s=2.0,
        progress=False,
        workers=1,
        augment=False,
        **options,
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(corpus root, cache folder): generated and cached once for the module."""
    base = tmp_path_factory.mktemp("zoo")
    dm = _module(base / "corpus", base / "cache")
    dm.prepare_data()
    return base / "corpus", base / "cache"


@pytest.fixture(scope="module")
def datamodule(corpus: tuple[Path, Path]) -> ClipDataModule:
    dm = _module(*corpus)
    dm.setup("fit")
    return dm


def _samples(dm: ClipDataModule) -> list[tuple[str, int, dict[str, torch.Tensor]]]:
    return [(split, i, ds[i]) for split, ds in dm.datasets.items() for i in range(len(ds))]


# -- the synthetic corpus' sidecars, through the data module -------------------------------------------------------
def test_synthetic_samples_carry_body_landmarks_and_ppg(datamodule: ClipDataModule) -> None:
    batch = next(iter(datamodule.train_dataloader()))
    for key, shape in SIDECAR_KEYS.items():
        assert batch[key].shape == (len(batch["frames"]), *shape) and batch[key].dtype == torch.float32
        assert batch[f"{key}_mask"].dtype == torch.bool and batch[f"{key}_mask"].all(), key
    for split, i, sample in _samples(datamodule):
        item = datamodule.datasets[split].items[int(datamodule.datasets[split].labels.item[i])]
        assert item.body_keypoints.is_dir() and item.landmarks.name == "landmarks.csv" and item.ppg.kind == "ppg"
        assert sample["body_mask"] and sample["landmarks_mask"] and sample["ppg_mask"]
        assert abs(float(sample["ppg"].mean())) < 1e-4  # zero mean over the window
        assert (sample["body"][..., 2] <= 1).all() and (sample["body"][..., 2] > 0).any()


def test_landmarks_are_the_rendered_face_inside_its_box(datamodule: ClipDataModule) -> None:
    """At the face window's frame times (25 fps video, 25 fps clips: the CSV's own frames), inside the face box."""
    ds = datamodule.datasets["train"]
    offsets = datamodule.spec.face_offsets()
    for i in range(len(ds)):
        item = ds.items[int(ds.labels.item[i])]
        frames = int(ds.labels.start[i]) + datamodule.spec.roi_frames // 2 + offsets
        sample = ds[i]
        expected = read_landmarks_csv(item.landmarks)[frames]
        assert np.allclose(sample["landmarks"].numpy(), expected, atol=1e-4)
        boxes = pd.read_csv(item.face_boxes).set_index("frame").loc[frames].to_numpy()
        x, y = expected[..., 0], expected[..., 1]
        # 1 px slack: the box follows translation and scale, the landmarks also the in-plane rotation (<= 3 deg).
        assert (x >= boxes[:, None, 0] - 1).all() and (x <= boxes[:, None, 2] + 1).all()
        assert (y >= boxes[:, None, 1] - 1).all() and (y <= boxes[:, None, 3] + 1).all()
        # Eyes above the nose tip above the mouth above the chin, left of right.
        names = {n: k for k, n in enumerate(LANDMARK_NAMES)}
        order = ["left_eye_centre", "nose_tip", "upper_lip", "lower_lip", "chin"]
        assert (np.diff(y[:, [names[n] for n in order]], axis=1) > 0).all()
        assert (x[:, names["left_eye_centre"]] < x[:, names["right_eye_centre"]]).all()


def test_landmark_geometry_matches_the_renderers_drawing() -> None:
    """Each point lands on what it names in the canonical render (guards against the renderer's geometry moving)."""
    subject = plan_subjects(SyntheticConfig(num_subjects=3, width=128, height=128))[0]
    renderer = render.FaceRenderer(subject.identity, 128, 128)
    names = {n: k for k, n in enumerate(LANDMARK_NAMES)}
    for label in ("neutral", "happy", "surprise", "angry", "sad", "fear", "disgust"):
        intensity = 0.0 if label == "neutral" else 1.0
        skin = renderer.layers(label, intensity).skin_mask
        points = frame_landmarks(renderer, label, intensity, render.Pose())
        px = np.round(points).astype(int)
        at = {n: float(skin[px[k, 1], px[k, 0]]) for n, k in names.items()}
        for n in ("left_eye_centre", "right_eye_centre", "upper_lip", "lower_lip"):
            assert at[n] < 0.3, (label, n, at[n])  # eye white/iris, lip colour: not skin
        for n in ("left_brow_inner", "left_brow_outer", "right_brow_inner", "right_brow_outer"):
            assert at[n] < 0.9, (label, n, at[n])  # on the (thin) brow
        assert at["nose_tip"] > 0.9 and at["chin"] > 0.9
    # A posed frame moves the points as the warp moves the pixels: a pure translation shifts them by it.
    moved = frame_landmarks(renderer, "neutral", 0.0, render.Pose(tx=3.0, ty=-2.0))
    assert np.allclose(moved - frame_landmarks(renderer, "neutral", 0.0, render.Pose()), [3.0, -2.0])


def test_ppg_is_the_rendered_skin_pulse(datamodule: ClipDataModule) -> None:
    """The ppg window follows the ROI's green channel (band-passed): skin darkens as blood volume rises."""
    sos = butter(3, [0.7, 4.0], btype="bandpass", fs=datamodule.fps, output="sos")
    correlations = []
    for _, _, sample in _samples(datamodule):
        green = sample["roi"][:, 1].mean(dim=(1, 2)).double().numpy()
        correlations.append(
            np.corrcoef(sosfiltfilt(sos, green), sosfiltfilt(sos, sample["ppg"].double().numpy()))[0, 1]
        )
    assert np.median(np.abs(correlations)) > 0.5 and min(np.abs(correlations)) > 0.5, np.round(correlations, 2)
    assert max(correlations) < 0  # more blood, darker skin


def test_body_moves_more_under_stress(datamodule: ClipDataModule) -> None:
    energy: dict[int, list[float]] = {0: [], 1: [], 2: []}
    for _, _, sample in _samples(datamodule):
        body = sample["body"].numpy()
        seen = (body[1:, :, 2] > 0) & (body[:-1, :, 2] > 0)
        step = np.linalg.norm(np.diff(body[..., :2], axis=0), axis=-1)
        energy[int(sample["stress"])].append(float(step[seen].mean()))
    low, high = np.mean(energy[0]), np.mean(energy[2])
    assert high > 1.5 * low, {k: np.round(v, 2) for k, v in energy.items()}


def test_clip_attributes_give_skin_tone_and_gender(datamodule: ClipDataModule, corpus: tuple[Path, Path]) -> None:
    for split, ds in datamodule.datasets.items():
        attributes = datamodule.clip_attributes(split)
        assert len(attributes) == len(ds)
        assert all(set(a) == {"skin_tone", "gender"} and a["gender"] in ("female", "male") for a in attributes)
        subject_tone = {it.subject_id: it.attributes["skin_tone"] for it in ds.items}
        assert attributes[0]["skin_tone"] == subject_tone[ds.items[int(ds.labels.item[0])].subject_id]
    with pytest.raises(ValueError, match="corpus 0 only"):
        datamodule.clip_attributes("val", corpus_index=1)
    root, cache = corpus
    corpus_args = {"corpus": "synthetic", "root": str(root), "corpus_options": {"generator": GENERATOR}}
    mixed = MixedDataModule(
        {"a": corpus_args, "b": {**corpus_args, "eval_stride_s": 1.0}},
        cache_dir=str(cache),
        clip_seconds=4.0,
        face_size=32,
        progress=False,
        workers=1,
    )
    mixed.setup("validate")
    assert mixed.clip_attributes("val", 1) == mixed.modules["b"].clip_attributes("val")
    assert len(mixed.clip_attributes("val", 1)) == len(mixed.modules["b"].datasets["val"])
    assert len(mixed.clip_attributes("val", 1)) > len(mixed.clip_attributes("val", 0))
    with pytest.raises(ValueError, match="name one by corpus_index"):
        mixed.clip_attributes("val")


# -- bad sidecar files: the data module's on_error -------------------------------------------------------------------
def _bad_copy(corpus: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """A copy of the corpus with one train session's landmarks, keypoints and pulse files broken; the cache is shared
    (the fingerprint is the generator's, and the video did not change)."""
    root = tmp_path / "corpus"
    shutil.copytree(corpus[0], root)
    item = next(it for it in build_corpus("synthetic").read(root) if it.split == "train")
    table = pd.read_csv(item.landmarks).astype({"x5": object})
    table.loc[3, "x5"] = "abc"
    table.to_csv(item.landmarks, index=False)
    body_file = sorted(item.body_keypoints.iterdir())[7]
    body_file.write_text(body_file.read_text()[:40])
    ppg = pd.read_csv(item.ppg.path)
    ppg.iloc[: len(ppg) // 3].to_csv(item.ppg.path, index=False)  # covers 2 of the video's 6 s
    return root, item.landmarks, body_file, item.ppg.path


def test_bad_sidecar_fails_naming_the_file(corpus: tuple[Path, Path], tmp_path: Path) -> None:
    root, _, body_file, ppg = _bad_copy(corpus, tmp_path)
    dm = _module(root, corpus[1])
    dm.setup("fit")  # sidecars load with the samples that need them
    ds = dm.datasets["train"]
    with pytest.raises(CorpusError, match="body/video_000000000007_keypoints.json: not JSON"):
        [ds[i] for i in range(len(ds))]
    # Repaired, the next bad file is named: the landmarks, then the pulse that covers a third of the video.
    shutil.copy(corpus[0] / body_file.relative_to(root), body_file)
    with pytest.raises(CorpusError, match=r"landmarks.csv: column 'x5' has 1 non-numeric"):
        [ds[i] for i in range(len(ds))]
    landmarks = body_file.parent.parent / "landmarks.csv"
    shutil.copy(corpus[0] / landmarks.relative_to(root), landmarks)
    with pytest.raises(CorpusError, match=rf"{ppg.parent.name}/ppg.csv: ground truth covers 0.00-1.96 s"):
        [ds[i] for i in range(len(ds))]


def test_bad_sidecar_is_skipped_masked_and_reported(corpus: tuple[Path, Path], tmp_path: Path) -> None:
    root, landmarks, body_file, ppg = _bad_copy(corpus, tmp_path)
    dm = _module(root, corpus[1], on_error="skip")
    dm.setup("fit")
    ds = dm.datasets["train"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SidecarWarning)
        samples = [ds[i] for i in range(len(ds))]
    bad = [ds.items[int(k)].landmarks == landmarks for k in ds.labels.item]
    for sample, is_bad in zip(samples, bad, strict=True):
        assert bool(sample["landmarks_mask"]) != is_bad and bool(sample["body_mask"]) != is_bad
        if is_bad:
            assert not sample["ppg_mask"] and (sample["landmarks"] == 0).all() and (sample["ppg"] == 0).all()
    assert any(bad) and not all(bad)
    reasons = {p.path: p.reason for p in dm.problems}
    assert "(landmarks of this item left out)" in reasons[str(landmarks)]
    assert "not JSON" in reasons[str(body_file)] and "(body keypoints of this item left out)" in reasons[str(body_file)]
    assert "ground truth covers 0.00-1.96 s" in reasons[str(ppg)]
    assert {str(w.message).split(":")[0] for w in caught} >= {str(landmarks), str(body_file)}
    # Loaded once per item: reading the samples again reports nothing new.
    before = len(dm.problems)
    ds[0]
    assert len(dm.problems) == before


# -- the manifest's sidecar columns ----------------------------------------------------------------------------------
def test_manifest_reads_keypoints_landmarks_and_ppg_columns(corpus: tuple[Path, Path], tmp_path: Path) -> None:
    root = corpus[0]
    items = {it.split: it for it in reversed(build_corpus("synthetic").read(root))}
    rows = []
    for split, it in sorted(items.items()):
        rows.append(
            {
                "path": str(it.media.path),
                "subject": it.subject_id,
                "split": split,
                "stress": it.stress.label,
                "face_boxes": str(it.face_boxes),
                "keypoints": str(it.body_keypoints),
                "landmarks": str(it.landmarks),
                "ppg": str(it.ppg.path),
                "ppg_offset_s": "0",
                **it.attributes,
            }
        )
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    read = build_corpus("manifest").read(tmp_path)
    by_split = {it.split: it for it in read}
    for split, it in items.items():
        got = by_split[split]
        assert got.body_keypoints == it.body_keypoints and got.landmarks == it.landmarks
        assert got.ppg.path == it.ppg.path and got.ppg.kind == "ppg" and got.ppg.fs_hz is None
        assert got.attributes == dict(it.attributes)  # skin_tone and gender are group attributes
    dm = ClipDataModule(
        corpus="manifest",
        root=str(tmp_path),
        cache_dir=str(tmp_path / "cache"),
        clip_seconds=4.0,
        face_size=32,
        train_stride_s=2.0,
        progress=False,
        workers=1,
        augment=False,
    )
    dm.setup("fit")
    ds = dm.datasets["train"]
    sample = ds[0]
    assert sample["body_mask"] and sample["landmarks_mask"] and sample["ppg_mask"]
    # The manifest's video is timed by its container (25 fps): the same frames as the synthetic reader's.
    frames = int(ds.labels.start[0]) + dm.spec.roi_frames // 2 + dm.spec.face_offsets()
    assert np.allclose(sample["landmarks"].numpy(), read_landmarks_csv(ds.items[0].landmarks)[frames], atol=1e-4)
    assert np.allclose(sample["body"].numpy(), read_openpose(ds.items[0].body_keypoints)[frames], atol=1e-4)
    assert dm.clip_attributes("train")[0] == dict(items["train"].attributes)
    # A keypoints column on an image row is refused with the line.
    pd.DataFrame([{**rows[0], "path": str(tmp_path / "face.png")}]).to_csv(manifest, index=False)
    import cv2

    cv2.imwrite(str(tmp_path / "face.png"), np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(CorpusError, match="line 2: column keypoints is for videos"):
        build_corpus("manifest").read(tmp_path)


# -- the pieces --------------------------------------------------------------------------------------------------------
def test_landmark_csv_round_trip_and_bad_files(tmp_path: Path) -> None:
    points = np.random.default_rng(0).uniform(0, 64, (5, 12, 2)).astype(np.float32)
    points[2] = np.nan  # no face in frame 2: no row
    path = tmp_path / "lm.csv"
    write_landmarks_csv(path, points)
    assert len(pd.read_csv(path)) == 4
    back = read_landmarks_csv(path)
    assert back.shape == (5, 12, 2) and np.isnan(back[2]).all()
    assert np.allclose(np.delete(back, 2, 0), np.delete(points, 2, 0), atol=0.006)
    assert read_landmarks_csv(path, n_frames=8).shape == (8, 12, 2)
    with pytest.raises(CorpusError, match="past the video's 4 frames"):
        read_landmarks_csv(path, n_frames=4)
    table = pd.read_csv(path)
    for change, message in (
        (lambda t: t.drop(columns=["y11"]), r"missing column\(s\) \['y11'\]"),
        (lambda t: t.assign(x3=["1", "inf", "2", "3"]), "column 'x3' has 1 non-numeric or non-finite"),
        (lambda t: t.assign(frame=[0, 1, 1, 3]), "frame 1 has more than one row"),
        (lambda t: t.assign(frame=[0, 1.5, 2, 3]), r"data row 2: frame 1.5 is not a frame index"),
    ):
        change(table).to_csv(tmp_path / "bad.csv", index=False)
        with pytest.raises(CorpusError, match=f"bad.csv: {message}"):
            read_landmarks_csv(tmp_path / "bad.csv")


def test_face_mesh_indices_name_every_point_once() -> None:
    assert tuple(MESH_LANDMARK_INDICES) == LANDMARK_NAMES
    indices = [i for group in MESH_LANDMARK_INDICES.values() for i in group]
    assert len(indices) == len(set(indices)) and max(indices) < 468
    mesh = np.random.default_rng(1).normal(size=(2, 468, 2))
    points = from_face_mesh(mesh)
    assert points.shape == (2, 12, 2)
    assert np.allclose(points[:, LANDMARK_NAMES.index("chin")], mesh[:, 152])
    with pytest.raises(ValueError, match="468"):
        from_face_mesh(mesh[:, :100])


def test_track_sampling_interpolates_and_masks_gaps() -> None:
    times = np.array([0.0, 0.04, 0.08, 0.5, 0.54])
    values = np.arange(5, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    track = Track(times, values, Path("x.csv"))
    assert np.allclose(sample_track(track, np.array([0.02, 0.06]))[:, 0], [0.5, 1.5])
    assert sample_track(track, np.array([0.3])) is None  # inside a 0.42 s gap
    assert sample_track(track, np.array([0.0, 0.7])) is None  # past the end
    assert np.allclose(sample_track(track, np.array([0.08, 0.5]))[:, 0], [2, 3])  # exact frames on both sides
    # An undetected joint: the nearer frame's value, never a blend with (0, 0, 0).
    body = np.zeros((2, 25, 3), np.float32)
    body[0, :] = (10.0, 20.0, 0.8)
    body[1, :] = (12.0, 22.0, 0.9)
    body[1, 4] = 0.0
    got = sample_track(Track(np.array([0.0, 0.04]), body, Path("b")), np.array([0.01, 0.03]), body=True)
    assert np.allclose(got[0, 0], [10.5, 20.5, 0.825]) and np.allclose(got[:, 4], [[10, 20, 0.8], [0, 0, 0]])
    # The pulse: minus its mean, masked where a dropout falls inside the window.
    signal = CardiacSignal("ppg", np.sin(np.arange(100) / 5.0) + 7.0, fs_hz=50.0)
    assert abs(float(sample_pulse(signal, np.arange(20) / 25.0).mean())) < 1e-6
    dropout = CardiacSignal("ppg", np.r_[np.ones(20), np.nan, np.ones(79)], fs_hz=50.0)
    assert (
        sample_pulse(dropout, np.arange(20) / 25.0) is None
        and sample_pulse(dropout, 1.0 + np.arange(20) / 25.0) is not None
    )


def test_make_sample_sidecars_default_to_masked_zeros() -> None:
    frames, roi = torch.zeros(8, 3, 16, 16), torch.zeros(50, 3, 8, 8)
    sample = make_sample(frames, roi, 25.0, ppg=torch.ones(50))
    assert sample["ppg_mask"] and not sample["body_mask"] and not sample["landmarks_mask"]
    assert sample["body"].shape == (8, 25, 3) and sample["landmarks"].shape == (8, 12, 2) and not sample["body"].any()
    with pytest.raises(ValueError, match=r"landmarks must be \[8, 12, 2\]"):
        make_sample(frames, roi, 25.0, landmarks=torch.zeros(8, 5, 2))


def test_generator_flags_leave_the_video_and_ecg_unchanged(tmp_path: Path) -> None:
    """Sidecars draw on random streams of their own: one session written with and without them has the same ECG
    bytes and decoded frames; without them labels.csv leaves their columns empty (ppg.csv is always written)."""
    from stress_lightning.data import synthetic as syn

    config = SyntheticConfig(num_subjects=3, duration_s=4.0, width=48, height=48, seed=2)
    plan = syn.plan_sessions(config)[0]
    rows = {}
    for flags in (True, False):
        small = SyntheticConfig(**{**config.__dict__, "body_keypoints": flags, "landmarks": flags})
        renderer = render.FaceRenderer(plan.subject.identity, small.width, small.height)
        rows[flags] = syn._render_session(plan, small, str(tmp_path / str(flags)), None, renderer)["row"]
    on, off = (tmp_path / "True" / plan.subject.subject_id), (tmp_path / "False" / plan.subject.subject_id)
    assert (on / rows[True]["ecg"]).read_bytes() == (off / rows[False]["ecg"]).read_bytes()
    assert (on / rows[True]["ppg"]).read_bytes() == (off / rows[False]["ppg"]).read_bytes()
    frames = [read_video_frames(folder / rows[flag]["video"]) for folder, flag in ((on, True), (off, False))]
    assert np.array_equal(*frames)
    assert rows[False]["body"] == rows[False]["landmarks"] == "" and not (off / plan.session_id / "body").exists()
    assert len(list((on / rows[True]["body"]).glob("*_keypoints.json"))) == config.n_frames
    assert read_landmarks_csv(on / rows[True]["landmarks"]).shape == (config.n_frames, 12, 2)
    ppg = pd.read_csv(on / rows[True]["ppg"])
    assert list(ppg.columns) == ["time_s", "ppg"] and len(ppg) == config.n_frames


def read_video_frames(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_roi_augment_presets_reach_the_training_samples(corpus: tuple[Path, Path]) -> None:
    """`roi_augment`: off leaves the training ROI as cached, gain scales each channel by one factor per clip, camera
    adds webcam effects; the evaluation splits are never augmented."""
    root, cache = corpus
    rois = {}
    for preset in ("off", "gain", "camera"):
        dm = _module(root, cache, roi_augment=preset)
        dm.setup("fit")
        torch.manual_seed(0)
        rois[preset] = (dm.datasets["train"][0]["roi"], dm.datasets["val"][0]["roi"])
    off, gain, camera = rois["off"][0], rois["gain"][0], rois["camera"][0]
    ratio = gain / off.clamp_min(1e-6)
    per_channel = ratio.permute(1, 0, 2, 3).reshape(3, -1)
    assert not torch.equal(gain, off) and (per_channel.std(dim=1) < 1e-4).all()
    camera_ratio = (camera / off.clamp_min(1e-6)).permute(1, 0, 2, 3).reshape(3, -1)
    assert not torch.equal(camera, off) and camera_ratio.std(dim=1).max() > 1e-3
    assert all(torch.equal(rois[p][1], rois["off"][1]) for p in rois)
    assert _module(root, cache).roi_augment == "off"
    assert ClipDataModule(corpus="synthetic", root=str(root), augment=True).roi_augment == "gain"
    with pytest.raises(ValueError, match="roi_augment"):
        _module(root, cache, roi_augment="strong")
