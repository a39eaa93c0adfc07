"""Face detection, tracking, alignment and landmark ROI on the shared real photos and video (../shared/data)."""

from __future__ import annotations

import math
import pickle
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
import pytest

from stress_lightning.data import faces as fp
from stress_lightning.data.faces import (
    FaceObservation,
    FaceTracker,
    HaarStillDetector,
    MediaPipeFaceDetector,
    align_face,
    crop_face,
    detect_face,
    landmark_roi_grid,
    roi_grid,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
POSED = SHARED_DATA / "faces" / "posed"
MUXSPACE = SHARED_DATA / "faces" / "muxspace"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data absent: {path} is not there (see ../shared/data/README.md)")
    return path


def _photo(name: str) -> np.ndarray:
    image = cv2.imread(str(_need(POSED / name)), cv2.IMREAD_COLOR)
    if image is None:
        raise AssertionError(f"{POSED / name}: OpenCV could not read the image")
    return np.ascontiguousarray(image[:, :, ::-1])


def _video_frames(limit: int | None = None) -> list[np.ndarray]:
    path = _need(POSED / "single_face.mp4")
    cap = cv2.VideoCapture(str(path))
    frames = []
    while limit is None or len(frames) < limit:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(np.ascontiguousarray(bgr[:, :, ::-1]))
    cap.release()
    assert frames, f"{path}: no frame decoded"
    return frames


def _eye_angle_deg(obs: FaceObservation) -> float:
    dx, dy = obs.right_eye - obs.left_eye
    return math.degrees(math.atan2(dy, dx))


def _rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


@pytest.fixture(scope="module")
def face_photo() -> np.ndarray:
    return _photo("single_face.jpg")


@pytest.fixture(scope="module")
def mesh_obs(face_photo) -> FaceObservation:
    obs = fp.FaceMeshStatic()(face_photo)
    assert obs is not None and obs.has_mesh
    return obs


@pytest.mark.shared_data
def test_detect_face_on_shared_photos() -> None:
    posed = sorted(p.name for p in _need(POSED).glob("*.jpg"))
    for name in posed:
        obs = detect_face(_photo(name))
        assert obs is not None, f"{POSED / name}: no face found"
        assert obs.source == "blazeface" and obs.has_eyes and 0.5 <= obs.score <= 1.0
        x0, y0, x1, y1 = obs.box
        for eye in (obs.left_eye, obs.right_eye):
            assert x0 <= eye[0] <= x1 and y0 <= eye[1] <= y1
        assert obs.left_eye[0] < obs.right_eye[0]  # image-left eye first
    # A spread sample of the labelled photos (every 40th file: grey 350x350 portraits and small tight colour crops).
    photos = sorted(_need(MUXSPACE).glob("*/*/*.jpg"))[::40]
    found = 0
    for path in photos:
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)  # grey input goes through as_rgb_uint8
        found += detect_face(image) is not None
    assert found / len(photos) >= 0.95, f"{found}/{len(photos)} muxspace photos with a face"


def test_no_face_on_blank_image() -> None:
    blank = np.full((480, 640, 3), 127, dtype=np.uint8)
    assert detect_face(blank) is None
    assert HaarStillDetector()(blank) is None
    tracker = FaceTracker(detect_every=2)
    assert all(tracker(blank) is None for _ in range(4))
    with pytest.raises(ValueError, match="uint8"):
        detect_face(blank.astype(np.float32))


@pytest.mark.shared_data
def test_align_face_levels_the_eyes(face_photo) -> None:
    tilted = _rotate(face_photo, 15.0)
    obs = detect_face(tilted)
    assert obs is not None and abs(_eye_angle_deg(obs)) > 10  # the input really is tilted
    aligned = align_face(tilted, obs, 256, margin=0.1)
    assert aligned.shape == (256, 256, 3) and aligned.dtype == np.uint8
    again = detect_face(aligned)
    assert again is not None and again.has_eyes
    assert abs(_eye_angle_deg(again)) < 2.5, f"eye line at {_eye_angle_deg(again):.2f} degrees after alignment"
    # The eyes land near their canonical positions (interocular 0.33 / 1.1 of the side, at y = 0.5 - 0.13 / 1.1).
    centre = (again.left_eye + again.right_eye) / 2 / 256
    assert abs(centre[0] - 0.5) < 0.05 and abs(centre[1] - (0.5 - 0.13 / 1.1)) < 0.05
    # Without eyes it is crop_face.
    no_eyes = FaceObservation(box=obs.box, source="haar")
    assert np.array_equal(align_face(tilted, no_eyes, 64, 0.2), crop_face(tilted, obs.box, 64, 0.2))


@pytest.mark.shared_data
@pytest.mark.parametrize("kind", ["mesh", "eyes"])
def test_landmark_roi_keeps_sub_lsb_pulse(face_photo, mesh_obs, kind) -> None:
    """0.3 grey levels of pulse on the skin, under 2 levels of camera noise and 8-bit rounding, must survive."""
    obs = mesh_obs if kind == "mesh" else detect_face(face_photo)
    skin = np.zeros(face_photo.shape[:2], dtype=np.float64)
    cv2.fillConvexPoly(skin, cv2.convexHull(mesh_obs.landmarks.astype(np.int32)), 1.0)
    rng = np.random.default_rng(0)
    t = np.arange(120) / 30.0
    pulse = 0.3 * np.sin(2 * np.pi * 1.2 * t)
    base = face_photo.astype(np.float64)
    means = []
    for p in pulse:
        frame = base + (p * skin)[:, :, None] + rng.normal(0, 2.0, base.shape)
        frame = np.clip(np.round(frame), 0, 255).astype(np.uint8)
        roi = landmark_roi_grid(frame, obs, 8)
        means.append(roi.reshape(3, 2, 4, 8).mean(axis=(0, 2, 3)))  # forehead, cheeks
    means = np.array(means)
    for k, region in enumerate(("forehead", "cheeks")):
        r = np.corrcoef(means[:, k], pulse)[0, 1]
        assert r > 0.9, f"{region}: correlation {r:.3f} with the sub-LSB pulse"


@pytest.mark.shared_data
def test_landmark_roi_follows_a_tilted_head(face_photo) -> None:
    """On a head tilted by 25 degrees the regions stay on their side of the eye line, inside the face; the box
    fractions of `roi_grid` do not."""
    tilted = _rotate(face_photo, 25.0)
    obs = fp.FaceMeshStatic()(tilted)
    assert obs is not None
    # Paint the face: 220 above the eye line, 40 below, 0 off the face (the hull of the mesh).
    h, w = tilted.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    mid = (obs.left_eye + obs.right_eye) / 2
    ex = obs.right_eye - obs.left_eye
    below = (xx - mid[0]) * -ex[1] + (yy - mid[1]) * ex[0] > 0
    hull = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(obs.landmarks.astype(np.int32)), 1)
    value = np.where(below, 40, 220) * hull
    painted = np.repeat(value[:, :, None], 3, axis=2).astype(np.uint8)
    grid = landmark_roi_grid(painted, obs, 8)
    assert grid.shape == (3, 8, 8) and grid.dtype == np.float32
    assert np.allclose(grid[:, :4], 220 / 255, atol=0.02)
    assert np.allclose(grid[:, 4:], 40 / 255, atol=0.02)
    detector_box = detect_face(tilted).box
    assert not np.allclose(roi_grid(painted, detector_box, 8)[:, :4], 220 / 255, atol=0.02)  # forehead on the eyes
    # Eyes only (no mesh): the same holds for the eye-frame regions.
    eyes_only = FaceObservation(obs.box, obs.left_eye, obs.right_eye)
    grid = landmark_roi_grid(painted, eyes_only, 8)
    assert np.allclose(grid[:, :4], 220 / 255, atol=0.02) and np.allclose(grid[:, 4:], 40 / 255, atol=0.02)
    # No eyes, no landmarks: exactly roi_grid.
    assert np.array_equal(landmark_roi_grid(painted, FaceObservation(obs.box), 8), roi_grid(painted, obs.box, 8))
    with pytest.raises(ValueError, match="even"):
        landmark_roi_grid(painted, obs, 7)


@pytest.mark.shared_data
def test_tracker_on_single_face_video() -> None:
    frames = _video_frames()
    tracker = FaceTracker(detect_every=10)
    observations = [tracker(f) for f in frames]
    found = [o for o in observations if o is not None]
    assert len(found) >= 0.95 * len(frames), f"face in {len(found)}/{len(frames)} frames"
    assert all(o.source == "face_mesh" and o.has_mesh and o.has_eyes for o in found)
    centres = np.array([(o.box[:2] + o.box[2:]) / 2 for o in found])
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    assert steps.max() < 10, f"box centre jumps {steps.max():.1f} px between frames"
    # reset() forgets the face; the tracker pickles (for spawn workers) before and after use.
    tracker.reset()
    clone = pickle.loads(pickle.dumps(tracker))
    assert clone(frames[0]) is not None and tracker(frames[0]) is not None
    assert pickle.loads(pickle.dumps(tracker)).detect_every == 10


def _track_in_worker(tracker: FaceTracker, frames: list[np.ndarray]) -> int:
    return sum(tracker(f) is not None for f in frames)


@pytest.mark.shared_data
def test_tracker_and_detector_in_spawn_worker() -> None:
    frames = _video_frames(limit=5)
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        assert pool.submit(_track_in_worker, FaceTracker(), frames).result(timeout=120) == 5
        assert pool.submit(MediaPipeFaceDetector(), frames[0]).result(timeout=120) is not None


@pytest.mark.shared_data
def test_haar_fallback(face_photo, monkeypatch) -> None:
    detector = MediaPipeFaceDetector()
    monkeypatch.setattr(detector, "blazeface", lambda *args, **kwargs: None)  # as if BlazeFace found nothing
    obs = detector(face_photo)
    assert obs is not None and obs.source == "haar" and not obs.has_eyes
    assert math.isnan(obs.score)
    reference = detect_face(face_photo)
    cx, cy = (obs.box[:2] + obs.box[2:]) / 2
    x0, y0, x1, y1 = reference.box
    assert x0 < cx < x1 and y0 < cy < y1
    assert MediaPipeFaceDetector(haar_fallback=False).__dict__["haar_fallback"] is False
    assert fp.make_still_detector("haar")(face_photo).source == "haar"
    frames = _video_frames(limit=12)
    tracker = fp.make_tracker("haar", detect_every=4)
    found = [tracker(f) for f in frames]
    assert all(o is not None and o.source == "haar" for o in found)
    with pytest.raises(ValueError, match="backend"):
        fp.make_tracker("dlib")


def _crop_face_reference(frame, box, size, margin=0.1):
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = max(x1 - x0, y1 - y0) * (1 + margin) / 2
    scale = size / (2 * half)
    matrix = np.array([[scale, 0, -(cx - half) * scale], [0, scale, -(cy - half) * scale]], dtype=np.float32)
    return cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def _roi_grid_reference(frame, box, size):
    def region(fr):
        x0, y0, x1, y1 = box
        w, h = x1 - x0, y1 - y0
        fx0, fx1, fy0, fy1 = fr
        h_img, w_img = frame.shape[:2]
        c0 = int(np.clip(round(x0 + fx0 * w), 0, w_img - 1))
        c1 = int(np.clip(round(x0 + fx1 * w), c0 + 1, w_img))
        r0 = int(np.clip(round(y0 + fy0 * h), 0, h_img - 1))
        r1 = int(np.clip(round(y0 + fy1 * h), r0 + 1, h_img))
        return frame[r0:r1, c0:c1].astype(np.float32)

    half = size // 2
    grid = np.empty((size, size, 3), dtype=np.float32)
    grid[:half] = cv2.resize(region((0.30, 0.70, 0.10, 0.28)), (size, half), interpolation=cv2.INTER_AREA)
    grid[half:, :half] = cv2.resize(region((0.15, 0.38, 0.52, 0.72)), (half, half), interpolation=cv2.INTER_AREA)
    grid[half:, half:] = cv2.resize(region((0.62, 0.85, 0.52, 0.72)), (half, half), interpolation=cv2.INTER_AREA)
    return grid.transpose(2, 0, 1) / 255.0


def test_crop_face_and_roi_grid_unchanged() -> None:
    """The synthetic corpus relies on these exactly: compare with the original implementation, bit for bit."""
    assert (fp.FOREHEAD, fp.LEFT_CHEEK, fp.RIGHT_CHEEK) == (
        (0.30, 0.70, 0.10, 0.28),
        (0.15, 0.38, 0.52, 0.72),
        (0.62, 0.85, 0.52, 0.72),
    )
    rng = np.random.default_rng(1)
    for _ in range(20):
        frame = rng.integers(0, 256, (int(rng.integers(40, 160)), int(rng.integers(40, 160)), 3), dtype=np.uint8)
        x0, y0 = rng.uniform(-20, 60, 2)
        box = np.array([x0, y0, x0 + rng.uniform(10, 120), y0 + rng.uniform(10, 120)], dtype=np.float32)
        size, margin = int(rng.choice([32, 64])), float(rng.uniform(0, 0.3))
        assert np.array_equal(crop_face(frame, box, size, margin), _crop_face_reference(frame, box, size, margin))
        assert np.array_equal(roi_grid(frame, box, 8), _roi_grid_reference(frame, box, 8))
