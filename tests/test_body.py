"""The body stream: OpenPose BODY_25 JSON (both on-disk forms, bad input), the synthetic seated pose (its motion
follows stress and expression) and the ACCM body backbone (normalisation invariances, learning, ONNX export)."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from zoo_helpers import assert_loss_falls, fixed_batch, tiny_net

from stress_lightning.data.body import (
    BODY25_JOINTS,
    BODY25_LIMBS,
    JOINT_INDEX,
    read_openpose,
    synthesize_body25,
    write_openpose,
)
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.items import ExpressionEvent, ExpressionTimeline
from stress_lightning.models.backbones.accm import ACCM, SKELETON_WALK
from stress_lightning.models.net import MultiTaskNet
from stress_lightning.models.registry import BODY_BACKBONES

FPS = 25.0
J = JOINT_INDEX


def _pose(seed: int, duration_s: float = 2.0, stress: int = 1, expressions=None) -> np.ndarray:
    return synthesize_body25(duration_s, FPS, stress, expressions, np.random.default_rng(seed), 320, 240)


def _frame(*people: list[float]) -> dict:
    return {"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": list(p)} for p in people]}


def _person(x: float, confidence: float) -> list[float]:
    return [v for k in range(25) for v in (x + k, 100.0 + k, confidence)]


def _write_frames(folder: Path, frames: list[dict], name: str = "clip") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, frame in enumerate(frames):
        path = folder / f"{name}_{k:012d}_keypoints.json"
        path.write_text(json.dumps(frame))
        paths.append(path)
    return paths


# ---- reading and writing OpenPose JSON ----------------------------------------------------------------------------


def test_joint_layout_is_openpose_body25() -> None:
    assert len(BODY25_JOINTS) == 25 and BODY25_JOINTS[:2] == ("Nose", "Neck") and BODY25_JOINTS[8] == "MidHip"
    assert BODY25_JOINTS[15:19] == ("REye", "LEye", "REar", "LEar") and BODY25_JOINTS[-1] == "RHeel"
    assert len(BODY25_LIMBS) == 24 and {j for limb in BODY25_LIMBS for j in limb} == set(range(25))


def test_write_read_round_trip_in_both_forms(tmp_path: Path) -> None:
    keypoints = _pose(seed=0, duration_s=1.0)
    keypoints[3] = 0.0  # a frame where nobody is detected
    paths = write_openpose(tmp_path / "openpose", keypoints, prefix="P01_T1")
    assert [p.name for p in paths[:2]] == ["P01_T1_000000000000_keypoints.json", "P01_T1_000000000001_keypoints.json"]
    assert json.loads(paths[3].read_text())["people"] == []
    person = json.loads(paths[0].read_text())["people"][0]
    assert person["person_id"] == [-1] and len(person["pose_keypoints_2d"]) == 75
    assert np.array_equal(read_openpose(tmp_path / "openpose"), keypoints)  # exact, float32 for float32

    single = tmp_path / "P01_T1.json"  # the manifest's keypoint file per video
    single.write_text(json.dumps({"frames": [json.loads(p.read_text()) for p in paths]}))
    assert np.array_equal(read_openpose(single), keypoints)


def test_frames_are_ordered_by_their_number(tmp_path: Path) -> None:
    frames = [_frame(_person(10.0 * k, 0.9)) for k in range(12)]
    for k in (11, 10, 9, 2, 0, 1, 3, 4, 5, 6, 7, 8):  # written out of order
        (tmp_path / f"v_{k:012d}_keypoints.json").write_text(json.dumps(frames[k]))
    keypoints = read_openpose(tmp_path)
    assert keypoints.shape == (12, 25, 3) and keypoints.dtype == np.float32
    assert keypoints[9, 0, 0] == 90.0 and keypoints[10, 0, 0] == 100.0  # frame 10 after frame 9


def test_the_person_with_the_largest_confidence_sum_is_kept(tmp_path: Path) -> None:
    crowd = _frame(_person(0.0, 0.3), _person(500.0, 0.8), _person(250.0, 0.5))
    _write_frames(tmp_path, [crowd, _frame()])
    keypoints = read_openpose(tmp_path)
    assert keypoints[0, 0, 0] == 500.0 and keypoints[0, 0, 2] == pytest.approx(0.8)
    assert not keypoints[1].any()  # no people: a frame of zeros


def _bad_folder(tmp_path: Path, case: str) -> tuple[Path, Path]:
    """Write one malformed input; return (the path to read, the file the error must name)."""
    good = _frame(_person(0.0, 0.9))
    folder = tmp_path / "openpose"
    if case == "not json":
        paths = _write_frames(folder, [good, good])
        paths[1].write_text('{"version": 1.3, "people": [')
        return folder, paths[1]
    if case == "no pose_keypoints_2d":
        paths = _write_frames(folder, [good, {"version": 1.3, "people": [{"person_id": [-1]}]}])
        return folder, paths[1]
    if case == "wrong length":
        paths = _write_frames(folder, [_frame(_person(0.0, 0.9)[:-3])])
        return folder, paths[0]
    if case == "not finite":
        paths = _write_frames(folder, [good])
        paths[0].write_text(paths[0].read_text().replace("0.9", "NaN", 1))
        return folder, paths[0]
    if case == "not a number":
        paths = _write_frames(folder, [_frame(["12.5", *_person(0.0, 0.9)[1:]])])
        return folder, paths[0]
    if case == "empty folder":
        folder.mkdir()
        return folder, folder
    if case == "no keypoint files":
        folder.mkdir()
        (folder / "notes.txt").write_text("OpenPose crashed")
        return folder, folder
    if case == "gap":
        paths = _write_frames(folder, [good] * 4)
        paths[2].unlink()
        return folder, folder
    if case == "no frame number":
        folder.mkdir()
        (folder / "clip_keypoints.json").write_text(json.dumps(good))
        return folder, folder / "clip_keypoints.json"
    if case == "two videos":
        _write_frames(folder, [good], name="a")
        _write_frames(folder, [good], name="b")
        return folder, folder
    if case == "single file without frames":
        path = tmp_path / "clip.json"
        path.write_text(json.dumps([good]))
        return path, path
    if case == "single file, bad frame":
        path = tmp_path / "clip.json"
        path.write_text(json.dumps({"frames": [good, {"people": [{"pose_keypoints_2d": [1.0] * 74}]}]}))
        return path, path
    assert case == "missing"
    return tmp_path / "nowhere", tmp_path / "nowhere"


BAD_CASES = {
    "not json": "not JSON",
    "no pose_keypoints_2d": "person 0 has no 'pose_keypoints_2d'",
    "wrong length": "has 72 numbers, expected 75",
    "not finite": "non-finite keypoint value at joint Nose",
    "not a number": "non-number",
    "empty folder": "folder is empty",
    "no keypoint files": "no OpenPose",
    "gap": "gaps: frames 2 of 0..3 are missing",
    "no frame number": "12-digit frame number",
    "two videos": "several videos",
    "single file without frames": '"frames"',
    "single file, bad frame": "frame 1: person 0: 'pose_keypoints_2d' has 74 numbers",
    "missing": "does not exist",
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_keypoint_input_is_a_corpus_error_naming_the_file(tmp_path: Path, case: str) -> None:
    path, named = _bad_folder(tmp_path, case)
    with pytest.raises(CorpusError, match=re.escape(BAD_CASES[case])) as error:
        read_openpose(path)
    assert error.value.path == named and str(named) in str(error.value)


# ---- the synthetic seated pose ------------------------------------------------------------------------------------


def test_synthesize_body25_shapes_detector_and_determinism() -> None:
    keypoints = _pose(seed=3, duration_s=4.0)
    assert keypoints.shape == (100, 25, 3) and keypoints.dtype == np.float32 and np.isfinite(keypoints).all()
    confidence = keypoints[..., 2]
    assert ((confidence >= 0) & (confidence <= 1)).all()
    assert not keypoints[confidence == 0].any()  # undetected joints are (0, 0, 0)
    legs = [J[n] for n in ("RAnkle", "LAnkle", "LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel")]
    assert not keypoints[:, legs].any()  # under the desk
    upper = [J[n] for n in ("Nose", "Neck", "RShoulder", "LShoulder", "RWrist", "LWrist", "MidHip")]
    assert (confidence[:, upper] > 0).mean() > 0.9
    assert np.array_equal(keypoints, _pose(seed=3, duration_s=4.0))
    assert not np.array_equal(keypoints, _pose(seed=4, duration_s=4.0))
    with pytest.raises(ValueError, match="unknown expression 'bored'"):
        _pose(seed=0, expressions=lambda t: "bored")
    with pytest.raises(ValueError, match="stress level is 0, 1 or 2"):
        _pose(seed=0, stress=3)


def _wrist_speed(keypoints: np.ndarray) -> np.ndarray:
    """Per-frame wrist speed in shoulder widths per second (nan where a wrist is missed in either frame)."""
    shoulders = np.linalg.norm(keypoints[:, J["RShoulder"], :2] - keypoints[:, J["LShoulder"], :2], axis=-1)
    wrists = keypoints[:, [J["RWrist"], J["LWrist"]]]
    seen = (wrists[1:, :, 2] > 0) & (wrists[:-1, :, 2] > 0)
    speed = np.linalg.norm(np.diff(wrists[..., :2], axis=0), axis=-1) * FPS / np.median(shoulders)
    return np.where(seen, speed, np.nan).mean(axis=1)


def test_stress_raises_motion_energy() -> None:
    for seed in range(3):  # the same subject at each level
        low, high = (np.nanmean(_wrist_speed(_pose(seed, 20.0, level))) for level in (0, 2))
        assert high > 2.0 * low, (seed, low, high)
    # Segments: calm for 10 s, then stressed.
    speed = _wrist_speed(_pose(7, 20.0, [(0.0, 10.0, 0), (10.0, 20.0, 2)]))
    assert np.nanmean(speed[275:]) > 2.0 * np.nanmean(speed[:225])


def test_a_sad_episode_lowers_the_head() -> None:
    timeline = ExpressionTimeline((ExpressionEvent(4.0, 4.5, 7.5, 8.0, "sad"),))
    keypoints = _pose(seed=5, duration_s=10.0, expressions=timeline.label_at)
    t = np.arange(len(keypoints)) / FPS
    nose, neck = keypoints[:, J["Nose"]], keypoints[:, J["Neck"]]
    seen = (nose[:, 2] > 0) & (neck[:, 2] > 0)
    shoulder_width = np.median(np.abs(keypoints[:, J["RShoulder"], 0] - keypoints[:, J["LShoulder"], 0]))
    height = (neck[:, 1] - nose[:, 1]) / shoulder_width  # nose above neck, in shoulder widths
    rest, sad = height[seen & (t < 3.5)].mean(), height[seen & (t > 5.0) & (t < 7.5)].mean()
    assert sad < rest - 0.1, (rest, sad)


# ---- ACCM ---------------------------------------------------------------------------------------------------------

ACCM_KWARGS = {"channels": 16, "heads": 2, "attention_hidden": 16, "out_dim": 32}


def _clips(count: int, frames: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` synthetic clips [count, frames, 25, 3], stress levels cycling 0, 1, 2 (a different subject each)."""
    levels = torch.arange(count) % 3
    clips = [
        synthesize_body25(frames / FPS, FPS, int(level), None, np.random.default_rng(seed + i), 320, 240)
        for i, level in enumerate(levels)
    ]
    return torch.from_numpy(np.stack(clips)), levels


def test_skeleton_walk_follows_limbs() -> None:
    limbs = {frozenset(limb) for limb in BODY25_LIMBS}
    assert all(frozenset(pair) in limbs for pair in zip(SKELETON_WALK, SKELETON_WALK[1:], strict=False))
    assert set(SKELETON_WALK) == set(range(25))


def test_accm_shape_and_invariance_to_position_and_size() -> None:
    torch.manual_seed(0)
    model = BODY_BACKBONES.build("accm", **ACCM_KWARGS).eval()
    assert isinstance(model, ACCM) and model.out_dim == 32
    body, _ = _clips(3)
    moved = body.clone()
    detected = body[..., 2:] > 0
    moved[..., :2] = torch.where(detected, 2.5 * body[..., :2] + torch.tensor([400.0, -120.0]), 0.0)
    with torch.no_grad():
        features, features_moved = model(body), model(moved)
    assert features.shape == (3, 32)
    torch.testing.assert_close(features_moved, features, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match=r"expected body keypoints \[B, T, 25, 3\]"):
        model(body[..., :2])


def test_accm_copes_with_undetected_joints() -> None:
    torch.manual_seed(0)
    model = ACCM(**ACCM_KWARGS)
    body, _ = _clips(4)
    body[0] = 0.0  # nobody detected in the whole clip
    body[1, :, [J["MidHip"], J["RHip"], J["LHip"]]] = 0.0  # no hips: scale from the shoulders
    body[2, :, J["Neck"]] = 0.0  # no neck: centre on MidHip
    body[3, ::2] = 0.0  # every other frame empty
    features = model(body)
    assert torch.isfinite(features).all()
    features.square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_accm_learns_stress_levels_from_synthetic_motion() -> None:
    torch.manual_seed(0)
    body, levels = _clips(24, seed=100)
    model = nn.Sequential(ACCM(), nn.Linear(128, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(body), levels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        accuracy = (model.eval()(body).argmax(dim=1) == levels).float().mean().item()
    assert losses[-1] < 0.7 * losses[0], losses
    assert accuracy >= 0.7, accuracy  # chance: 1/3


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the input-shape check is constant under tracing
def test_accm_exports_to_onnx_with_parity(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = ACCM(**ACCM_KWARGS).eval()
    body, _ = _clips(2)
    path = tmp_path / "accm.onnx"
    torch.onnx.export(
        model,
        (body,),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["body"],
        output_names=["features"],
        dynamic_axes={"body": {0: "batch", 1: "frames"}, "features": {0: "batch"}},
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    other, _ = _clips(3, frames=12, seed=50)
    other[1, :, J["Neck"]] = 0.0
    for clip in (body, other):
        with torch.no_grad():
            expected = model(clip).numpy()
        (got,) = session.run(None, {"body": clip.numpy()})
        bound = 1e-3 + 1e-3 * np.abs(expected).max()
        assert np.abs(got - expected).max() <= bound


@pytest.mark.skipif(
    "body_backbone" not in inspect.signature(MultiTaskNet).parameters,
    reason="MultiTaskNet has no body stream yet",
)
def test_multitask_net_with_accm_body_stream_trains() -> None:
    assert_loss_falls(tiny_net(body_backbone="accm"), fixed_batch(with_body=True))
