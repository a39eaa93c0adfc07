"""Face boxes, landmarks, aligned face crops and the forehead/cheek ROI used by the rPPG stream.

Corpora that ship per-frame face boxes (the synthetic corpus does) use them with `crop_face` and `roi_grid`, whose
box fractions are the contract with the corpus renderers. Real footage has no boxes:

- stills: `detect_face` / `MediaPipeFaceDetector` (BlazeFace from mediapipe, retried on a grey border because it
  misses faces that fill the whole image, then OpenCV's Haar cascade);
- video: `FaceTracker` (mediapipe Face Mesh in video mode, which tracks its 468 landmarks and re-detects only when it
  loses the face, plus a One-Euro filter so the box does not jitter on a still head: box jitter moves ROI borders
  across skin edges and shows up as noise in the pulse band);
- `align_face` warps the eyes to fixed positions; `landmark_roi_grid` places forehead and cheeks from the landmarks
  so they stay on skin when the head turns or tilts.

mediapipe (Apache-2.0; BlazeFace and Face Mesh weights ship in its wheel) is imported lazily: importing this module
stays cheap and the detectors can be pickled into spawn workers before they have run.
"""

from __future__ import annotations

import math
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from stress_lightning.data.errors import CorpusError

# The ROI contract lives in data/roi.py; re-exported here for the callers of roi_grid.
from stress_lightning.data.roi import FOREHEAD, LEFT_CHEEK, RIGHT_CHEEK  # noqa: F401
from stress_lightning.data.tables import read_csv_checked


def read_face_boxes(path: Path, n_frames: int | None = None) -> np.ndarray:
    """Per-frame boxes [n_frames, 4] (x0, y0, x1, y1) from a `frame,x0,y0,x1,y1` CSV (every row when n_frames is
    None)."""
    table = read_csv_checked(path, ["frame", "x0", "y0", "x1", "y1"])
    if n_frames is not None and len(table) < n_frames:
        raise CorpusError(path, f"has boxes for {len(table)} frames but the video has {n_frames}")
    try:
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused below
            boxes = table.sort_values("frame")[["x0", "y0", "x1", "y1"]].to_numpy(np.float32)[:n_frames]
    except (TypeError, ValueError) as exc:  # a cell that is no number (or a frame column mixing text and numbers)
        raise CorpusError(path, f"columns frame, x0, y0, x1, y1 must hold numbers ({exc})") from exc
    if not np.isfinite(boxes).all() or ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).any():
        raise CorpusError(path, "contains non-finite or empty boxes")
    return boxes


class HaarFaceDetector:
    """Frontal-face detection with OpenCV's Haar cascade (ships with opencv(-contrib)-python<5, works offline).

    Keeps the largest face and smooths the box with an exponential moving average; when a frame has no face the
    previous box is kept.
    """

    def __init__(self, smoothing: float = 0.8, min_size: int = 32) -> None:
        cascade_path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self.cascade = cv2.CascadeClassifier(str(cascade_path))
        if self.cascade.empty():
            raise RuntimeError(f"{cascade_path}: OpenCV Haar cascade could not be loaded")
        self.smoothing = smoothing
        self.min_size = min_size
        self._box: np.ndarray | None = None

    def __call__(self, frame_rgb: np.ndarray) -> np.ndarray | None:
        gray = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY)
        found = self.cascade.detectMultiScale(
            gray, scaleFactor=1.1, minNeighbors=5, minSize=(self.min_size, self.min_size)
        )
        if len(found):
            x, y, w, h = max(found, key=lambda b: b[2] * b[3])
            box = np.array([x, y, x + w, y + h], dtype=np.float32)
            if self._box is None:
                self._box = box
            else:
                self._box = self.smoothing * self._box + (1 - self.smoothing) * box
        return None if self._box is None else self._box.copy()


def crop_face(frame: np.ndarray, box: np.ndarray, size: int, margin: float = 0.1) -> np.ndarray:
    """Square crop around the box (with a margin), resized to size x size, uint8 RGB."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = max(x1 - x0, y1 - y0) * (1 + margin) / 2
    # An affine warp handles boxes that leave the frame (border replicated) and sub-pixel box positions.
    scale = size / (2 * half)
    matrix = np.array([[scale, 0, -(cx - half) * scale], [0, scale, -(cy - half) * scale]], dtype=np.float32)
    return cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def _region_mean_grid(
    frame: np.ndarray, box: np.ndarray, region: tuple[float, float, float, float], rows: int, cols: int
) -> np.ndarray:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    fx0, fx1, fy0, fy1 = region
    h_img, w_img = frame.shape[:2]
    c0 = int(np.clip(round(x0 + fx0 * w), 0, w_img - 1))
    c1 = int(np.clip(round(x0 + fx1 * w), c0 + 1, w_img))
    r0 = int(np.clip(round(y0 + fy0 * h), 0, h_img - 1))
    r1 = int(np.clip(round(y0 + fy1 * h), r0 + 1, h_img))
    patch = frame[r0:r1, c0:c1].astype(np.float32)
    # INTER_AREA on float input averages whole pixel blocks: the mean keeps sub-LSB precision.
    return cv2.resize(patch, (cols, rows), interpolation=cv2.INTER_AREA)


def roi_grid(frame: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Forehead (top half) and left/right cheeks (bottom half) area-averaged to [3, size, size] float in [0, 1]."""
    if size % 2:
        raise ValueError(f"ROI size must be even, got {size}")
    half = size // 2
    grid = np.empty((size, size, 3), dtype=np.float32)
    grid[:half] = _region_mean_grid(frame, box, FOREHEAD, half, size)
    grid[half:, :half] = _region_mean_grid(frame, box, LEFT_CHEEK, half, half)
    grid[half:, half:] = _region_mean_grid(frame, box, RIGHT_CHEEK, half, half)
    return grid.transpose(2, 0, 1) / 255.0


# --------------------------------------------------------------------------------------------------------------------
# Real footage: observations, detection, tracking, alignment and landmark-placed ROI.

FaceSource = Literal["blazeface", "face_mesh", "haar", "given"]

# Face Mesh (468-point canonical topology) quads for the ROI: each corner is p[i] + t * (p[j] - p[i]), corners in
# the order top-left, top-right, bottom-right, bottom-left, "left" = image left. Forehead: from just above the brows
# up towards the hairline (69/299 sit above the brow middles); cheeks: under the eyes, beside the nose, above the
# nasolabial fold. Checked by eye on the shared posed photos (0, 15 and 45 degrees of yaw): all on skin, except at
# 45 degrees, where the far cheek shrinks to a sliver beside the nose that touches the face's outline.
_MESH_QUADS: dict[str, tuple[tuple[int, int, float], ...]] = {
    "forehead": ((69, 66, -0.6), (299, 296, -0.6), (296, 299, 0.3), (66, 69, 0.3)),
    "left_cheek": ((117, 118, 0.3), (100, 100, 0.0), (203, 203, 0.0), (205, 205, 0.0)),
    "right_cheek": ((329, 329, 0.0), (346, 347, 0.3), (425, 425, 0.0), (423, 423, 0.0)),
}
# The same regions in the eye frame (u along the eye line, v down, both in interocular distances from the eye
# midpoint) for observations with eyes but no mesh (BlazeFace): (u0, u1, v0, v1), the median of the quads above in
# BlazeFace's eye frame over 242 of the shared muxspace photos. Follows roll and scale, not yaw.
_EYE_REGIONS = {
    "forehead": (-0.46, 0.46, -0.62, -0.39),
    "left_cheek": (-0.70, -0.40, 0.28, 0.61),
    "right_cheek": (0.40, 0.70, 0.28, 0.61),
}
# Face Mesh eye corners (outer, inner) of the image-left and image-right eye.
_MESH_LEFT_EYE = (33, 133)
_MESH_RIGHT_EYE = (362, 263)
_MESH_POINTS = 468
# align_face: eye centres in a square face crop without margin, as fractions of its side. Interocular 0.33 and eyes
# at 0.37 keep forehead to chin inside the crop for an upright face, close to crop_face's framing of a face box.
_ALIGN_EYE_HALF_DISTANCE = 0.165
_ALIGN_EYE_Y = 0.37
_BORDER_GREY = 128


@dataclass
class FaceObservation:
    """One face in one frame, all coordinates in frame pixels.

    `left_eye`/`right_eye` are the eyes on the image left/right (the subject's right/left eye in an unmirrored
    frame); `landmarks` are Face Mesh's 468 points or BlazeFace's 6 keypoints; `score` is the detector's confidence
    in [0, 1], NaN where it gives none (Haar, Face Mesh tracking, given boxes).
    """

    box: np.ndarray  # float32 (x0, y0, x1, y1)
    left_eye: np.ndarray | None = None
    right_eye: np.ndarray | None = None
    landmarks: np.ndarray | None = None  # float32 [K, 2]
    score: float = math.nan
    source: FaceSource = "given"

    def __post_init__(self) -> None:
        self.box = np.asarray(self.box, dtype=np.float32).reshape(4)
        for name in ("left_eye", "right_eye"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, np.asarray(value, dtype=np.float32).reshape(2))
        if self.landmarks is not None:
            self.landmarks = np.asarray(self.landmarks, dtype=np.float32).reshape(-1, 2)

    @property
    def has_eyes(self) -> bool:
        return self.left_eye is not None and self.right_eye is not None

    @property
    def has_mesh(self) -> bool:
        return self.landmarks is not None and len(self.landmarks) >= _MESH_POINTS


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """A contiguous uint8 [H, W, 3] view of a grey, grey+channel, RGB or RGBA uint8 image (mediapipe needs it)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"face detection needs a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    elif image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"face detection needs an [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] image, got {image.shape}")
    return np.ascontiguousarray(image)


def _pad_grey(rgb: np.ndarray, fraction: float) -> tuple[np.ndarray, int]:
    pad = int(round(fraction * max(rgb.shape[:2])))
    v = _BORDER_GREY
    return cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(v, v, v)), pad


def _quiet_process(solution: Any, rgb: np.ndarray) -> Any:
    # protobuf 4.25 warns about a deprecated call inside mediapipe on every graph output; not ours to fix.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype")
        return solution.process(rgb)


_HAAR: dict[int, cv2.CascadeClassifier] = {}  # one cascade per thread (detectMultiScale is not thread-safe)


def _haar_cascade() -> cv2.CascadeClassifier:
    key = threading.get_ident()
    if key not in _HAAR:
        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        cascade = cv2.CascadeClassifier(str(path))
        if cascade.empty():
            raise RuntimeError(f"{path}: OpenCV Haar cascade could not be loaded")
        _HAAR[key] = cascade
    return _HAAR[key]


def _haar_observation(rgb: np.ndarray, border: float, min_size: int = 32) -> FaceObservation | None:
    """The largest Haar face, searched on a grey border (a face filling the image has no context otherwise)."""
    padded, pad = _pad_grey(rgb, border) if border > 0 else (rgb, 0)
    gray = cv2.cvtColor(padded, cv2.COLOR_RGB2GRAY)
    found = _haar_cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_size, min_size))
    if not len(found):
        return None
    x, y, w, h = max(found, key=lambda b: b[2] * b[3])
    return FaceObservation(box=np.array([x - pad, y - pad, x + w - pad, y + h - pad]), source="haar")


def _blazeface_observations(result: Any, width: int, height: int, pad: int) -> list[FaceObservation]:
    observations = []
    for det in result.detections or []:
        rb = det.location_data.relative_bounding_box
        x0, y0 = rb.xmin * width - pad, rb.ymin * height - pad
        box = np.array([x0, y0, x0 + rb.width * width, y0 + rb.height * height])
        # Keypoints: the subject's right eye (image left), left eye, nose tip, mouth centre, right and left tragion.
        kps = np.array([[k.x * width - pad, k.y * height - pad] for k in det.location_data.relative_keypoints])
        observations.append(
            FaceObservation(
                box=box, left_eye=kps[0], right_eye=kps[1], landmarks=kps, score=float(det.score[0]), source="blazeface"
            )
        )
    return observations


def _box_area(obs: FaceObservation) -> float:
    return float(max(obs.box[2] - obs.box[0], 0) * max(obs.box[3] - obs.box[1], 0))


class MediaPipeFaceDetector:
    """One face per still image: BlazeFace (mediapipe), retried with a grey border, then Haar as a fallback.

    Tries in order, stopping at the first hit: the short-range model (faces filling much of the image; 98 % on the
    shared photos), the same on a grey border of `border` x the image side (a face cut by the image edge is found
    again: 99.8 %), the full-range model (small faces far from the camera) as is and bordered, and OpenCV's Haar
    cascade on the bordered image. Several faces: the largest times its confidence. The mediapipe graphs are built
    on first use, so the detector pickles into spawn workers as its configuration.
    """

    def __init__(self, min_confidence: float = 0.5, border: float = 0.25, haar_fallback: bool = True) -> None:
        self.min_confidence = min_confidence
        self.border = border
        self.haar_fallback = haar_fallback
        self._models: dict[int, Any] = {}

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_models"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._models = {}

    def _model(self, selection: int) -> Any:
        if selection not in self._models:
            from mediapipe.python.solutions import face_detection

            self._models[selection] = face_detection.FaceDetection(
                min_detection_confidence=self.min_confidence, model_selection=selection
            )
        return self._models[selection]

    def close(self) -> None:
        for model in self._models.values():
            model.close()
        self._models = {}

    def blazeface(self, rgb: np.ndarray, selection: int = 0, border: float = 0.0) -> FaceObservation | None:
        """BlazeFace alone: model 0 (short range, within ~2 m) or 1 (full range), optionally on a grey border."""
        rgb = as_rgb_uint8(rgb)
        image, pad = _pad_grey(rgb, border) if border > 0 else (rgb, 0)
        found = _blazeface_observations(
            _quiet_process(self._model(selection), image), image.shape[1], image.shape[0], pad
        )
        return max(found, key=lambda o: _box_area(o) * o.score, default=None)

    def __call__(self, rgb: np.ndarray) -> FaceObservation | None:
        rgb = as_rgb_uint8(rgb)
        for selection in (0, 1):
            for border in (0.0, self.border):
                obs = self.blazeface(rgb, selection, border)
                if obs is not None:
                    return obs
        return _haar_observation(rgb, self.border) if self.haar_fallback else None


class HaarStillDetector:
    """Haar cascade on one still image (on a grey border), as a FaceObservation; no eyes, no landmarks."""

    def __init__(self, border: float = 0.25, min_size: int = 32) -> None:
        self.border = border
        self.min_size = min_size

    def __call__(self, rgb: np.ndarray) -> FaceObservation | None:
        return _haar_observation(as_rgb_uint8(rgb), self.border, self.min_size)


_DEFAULT_DETECTORS: dict[int, MediaPipeFaceDetector] = {}


def detect_face(rgb: np.ndarray) -> FaceObservation | None:
    """The main face of a still RGB (or grey) uint8 image, or None; see `MediaPipeFaceDetector`."""
    key = threading.get_ident()  # mediapipe graphs are not shared between threads
    if key not in _DEFAULT_DETECTORS:
        _DEFAULT_DETECTORS[key] = MediaPipeFaceDetector()
    return _DEFAULT_DETECTORS[key](rgb)


def mesh_observation(landmarks: np.ndarray, score: float = math.nan) -> FaceObservation:
    """A FaceObservation from Face Mesh landmarks [>=468, 2] in pixels: box = their extent, eyes = corner means."""
    lm = np.asarray(landmarks, dtype=np.float32)
    pts = lm[:_MESH_POINTS]
    box = np.concatenate([pts.min(axis=0), pts.max(axis=0)])
    left_eye = lm[list(_MESH_LEFT_EYE)].mean(axis=0)
    right_eye = lm[list(_MESH_RIGHT_EYE)].mean(axis=0)
    return FaceObservation(box, left_eye, right_eye, lm, score, "face_mesh")


class FaceMeshStatic:
    """Face Mesh on one still image (detection + 468 landmarks each call), optionally on a grey border."""

    def __init__(self, border: float = 0.0, min_confidence: float = 0.5) -> None:
        self.border = border
        self.min_confidence = min_confidence
        self._mesh: Any = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_mesh": None}

    def __call__(self, rgb: np.ndarray) -> FaceObservation | None:
        if self._mesh is None:
            from mediapipe.python.solutions import face_mesh

            self._mesh = face_mesh.FaceMesh(
                static_image_mode=True, max_num_faces=1, min_detection_confidence=self.min_confidence
            )
        rgb = as_rgb_uint8(rgb)
        image, pad = _pad_grey(rgb, self.border) if self.border > 0 else (rgb, 0)
        result = _quiet_process(self._mesh, image)
        if not result.multi_face_landmarks:
            return None
        h, w = image.shape[:2]
        lm = np.array([[p.x * w - pad, p.y * h - pad] for p in result.multi_face_landmarks[0].landmark])
        return mesh_observation(lm)


class _OneEuroFilter:
    """One-Euro filter (Casiez et al., CHI 2012) over a landmark set: strong smoothing while still, little lag in
    motion. One cutoff for all points (from their median speed in face sizes per second) keeps the shape rigid."""

    def __init__(self, min_cutoff_hz: float, beta: float, d_cutoff_hz: float = 1.0) -> None:
        self.min_cutoff_hz = min_cutoff_hz
        self.beta = beta
        self.d_cutoff_hz = d_cutoff_hz
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | None = None
        self._dx = 0.0
        self._t = 0.0

    @staticmethod
    def _alpha(dt: float, cutoff_hz: float) -> float:
        tau = 1.0 / (2 * math.pi * cutoff_hz)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, t: float, scale: float) -> np.ndarray:
        if self._x is None or t <= self._t:
            self._x, self._t, self._dx = x.copy(), t, 0.0
            return x
        dt = t - self._t
        speed = float(np.median(np.linalg.norm(x - self._x, axis=-1))) / dt / max(scale, 1e-6)
        a_d = self._alpha(dt, self.d_cutoff_hz)
        self._dx = a_d * speed + (1 - a_d) * self._dx
        a = self._alpha(dt, self.min_cutoff_hz + self.beta * self._dx)
        self._x = a * x + (1 - a) * self._x
        self._t = t
        return self._x.copy()


@dataclass
class FaceTracker:
    """Face landmarks over a video, one frame per call: `tracker(rgb) -> FaceObservation | None`; `reset()` between
    videos.

    backend "mediapipe": Face Mesh in video mode tracks the 468 landmarks from frame to frame and runs its own
    BlazeFace detection only when it loses the face (2.5-4.5 ms a 640x480 frame on 2 shared cores, see
    benchmarks/results/faces.md). While it has lost the
    face, `MediaPipeFaceDetector` (BlazeFace with border, then Haar) runs every `detect_every` frames and its last
    observation is held in between. backend "haar": the Haar cascade every `detect_every` frames, the box smoothed
    and held in between (no landmarks; 30-100 ms a detection). Landmarks pass through a One-Euro filter
    (`min_cutoff_hz`, `beta` in face sizes per second) so a still head gives a still box. Frames are taken to be
    `fps` apart unless a timestamp is passed. Only the configuration is pickled: the graphs are built on first use.

    `max_faces` > 1 lets Face Mesh track up to that many faces and keeps the largest (a second person walking into
    view does not take over the ROI); `faces_in_view` says how many it saw in the last frame. Face Mesh then looks
    for the missing faces on every frame (BlazeFace, ~2 ms at 640x480), so the cache keeps the default of 1.
    """

    detect_every: int = 10
    backend: Literal["mediapipe", "haar"] = "mediapipe"
    fps: float = 30.0
    min_cutoff_hz: float = 0.5
    beta: float = 5.0
    min_confidence: float = 0.5
    max_faces: int = 1
    _state: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {self.detect_every}")
        if self.backend not in ("mediapipe", "haar"):
            raise ValueError(f"unknown face tracker backend {self.backend!r}; use 'mediapipe' or 'haar'")
        if self.max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {self.max_faces}")

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_state"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._state = {}

    def _runtime(self) -> dict:
        if not self._state:
            self._state.update(
                mesh=None,
                detector=MediaPipeFaceDetector(self.min_confidence) if self.backend == "mediapipe" else None,
                filter=_OneEuroFilter(self.min_cutoff_hz, self.beta),
                frame=0,
                last=None,
                held=0,
                since_detect=self.detect_every,
                faces_in_view=0,
            )
        return self._state

    @property
    def faces_in_view(self) -> int:
        """Faces seen in the last frame (Face Mesh's count up to `max_faces`, else 0 or 1)."""
        return int(self._state.get("faces_in_view", 0))

    def reset(self) -> None:
        """Forget the face (call between videos); the graphs are rebuilt on the next frame."""
        self.close()

    def close(self) -> None:
        state = self._state
        if state.get("mesh") is not None:
            state["mesh"].close()
        if state.get("detector") is not None:
            state["detector"].close()
        self._state = {}

    def _mesh_landmarks(self, state: dict, rgb: np.ndarray) -> np.ndarray | None:
        if state["mesh"] is None:
            from mediapipe.python.solutions import face_mesh

            state["mesh"] = face_mesh.FaceMesh(
                static_image_mode=False,
                max_num_faces=self.max_faces,
                min_detection_confidence=self.min_confidence,
                min_tracking_confidence=self.min_confidence,
            )
        result = _quiet_process(state["mesh"], rgb)
        faces = result.multi_face_landmarks or []
        state["faces_in_view"] = len(faces)
        if not faces:
            return None
        h, w = rgb.shape[:2]
        sets = [np.array([[p.x * w, p.y * h] for p in face.landmark], dtype=np.float32) for face in faces]
        # The largest face (landmark extent): the person in front of the camera, not one passing behind.
        return max(sets, key=lambda lm: float(np.ptp(lm[:, 0]) * np.ptp(lm[:, 1])))

    def __call__(self, rgb: np.ndarray, timestamp_s: float | None = None) -> FaceObservation | None:
        state = self._runtime()
        rgb = as_rgb_uint8(rgb)
        t = state["frame"] / self.fps if timestamp_s is None else float(timestamp_s)
        state["frame"] += 1
        state["since_detect"] += 1
        if self.backend == "mediapipe":
            landmarks = self._mesh_landmarks(state, rgb)
            if landmarks is not None:
                scale = float(np.ptp(landmarks[:, 0]))
                obs = mesh_observation(state["filter"](landmarks, t, scale))
                state["last"], state["held"] = obs, 0
                return obs
            state["filter"].reset()
        if state["since_detect"] >= self.detect_every:
            state["since_detect"] = 0
            if self.backend == "mediapipe":
                found = state["detector"](rgb)
            else:
                found = _haar_observation(rgb, border=0.0)
            state["faces_in_view"] = int(found is not None)
            if found is not None:
                last = state["last"]
                if self.backend == "haar" and last is not None and last.source == "haar":
                    # Haar boxes jump by a pixel or so between detections: blend with the time constant of
                    # HaarFaceDetector's per-frame 0.8 (so detect_every=1 behaves the same, larger N lags no more).
                    keep = 0.8**self.detect_every
                    found.box = keep * last.box + (1 - keep) * found.box
                state["last"], state["held"] = found, 0
                return found
        # Between detections (or after a missed one) hold the last face for up to detect_every frames.
        if state["last"] is not None and state["held"] < self.detect_every:
            state["held"] += 1
            return state["last"]
        state["last"] = None
        return None


def face_and_roi(
    frame: np.ndarray, obs: FaceObservation, face_size: int, roi_size: int, margin: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """The aligned face crop (uint8 [S, S, 3]) and the landmark-placed ROI grid (float [3, R, R] in [0, 1]) of one
    tracked frame: the step the cache runs on every training video and the stream on every live frame."""
    return align_face(frame, obs, face_size, margin), landmark_roi_grid(frame, obs, roi_size)


def make_tracker(detector: str = "mediapipe", detect_every: int = 10, **kwargs: Any) -> FaceTracker:
    """A video face tracker by name ("mediapipe" or "haar"), as the cache's preprocessing config names it."""
    return FaceTracker(detect_every=detect_every, backend=detector, **kwargs)


def make_still_detector(detector: str = "mediapipe") -> MediaPipeFaceDetector | HaarStillDetector:
    """A still-image face detector by name ("mediapipe": BlazeFace then Haar; "haar": Haar only)."""
    if detector == "mediapipe":
        return MediaPipeFaceDetector()
    if detector == "haar":
        return HaarStillDetector()
    raise ValueError(f"unknown face detector {detector!r}; use 'mediapipe' or 'haar'")


def resize_whole(image: np.ndarray, size: int) -> np.ndarray:
    """The whole image as the face (corpora whose images are already face crops): uint8 RGB [size, size, 3]."""
    return cv2.resize(as_rgb_uint8(image), (size, size), interpolation=cv2.INTER_AREA)


def _eye_similarity(left_eye: np.ndarray, right_eye: np.ndarray, dst_left: np.ndarray, dst_right: np.ndarray):
    """2x3 similarity (rotation, uniform scale, translation) taking the two eyes to two target points."""
    src = right_eye.astype(np.float64) - left_eye
    dst = dst_right.astype(np.float64) - dst_left
    norm = float(np.hypot(*src))
    if not np.isfinite(norm) or norm < 1e-3:
        return None
    scale = float(np.hypot(*dst)) / norm
    angle = math.atan2(dst[1], dst[0]) - math.atan2(src[1], src[0])
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    shift = (dst_left + dst_right) / 2 - rot @ ((left_eye + right_eye) / 2)
    return np.hstack([rot, shift[:, None]]), scale


def align_face(frame: np.ndarray, obs: FaceObservation, size: int, margin: float = 0.1) -> np.ndarray:
    """Face crop with the eyes levelled at fixed positions: uint8 [size, size, 3].

    A similarity warp (rotation + scale + translation from the two eyes, border replicated), framed like
    `crop_face` with the same margin; without eyes it is `crop_face(frame, obs.box, size, margin)`.
    """
    if not obs.has_eyes:
        return crop_face(frame, obs.box, size, margin)
    half_d = _ALIGN_EYE_HALF_DISTANCE / (1 + margin)
    eye_y = 0.5 + (_ALIGN_EYE_Y - 0.5) / (1 + margin)
    fitted = _eye_similarity(
        obs.left_eye, obs.right_eye, np.array([0.5 - half_d, eye_y]) * size, np.array([0.5 + half_d, eye_y]) * size
    )
    if fitted is None:
        return crop_face(frame, obs.box, size, margin)
    matrix, scale = fitted
    # warpAffine samples bilinearly; when shrinking by 2x or more, warp to an integer multiple of the size first and
    # area-average down, so fine texture does not alias.
    k = max(1, int(1.0 / scale))
    matrix = matrix * k
    # The matrix maps pixel-edge coordinates (pixel i spans [i, i+1]); warpAffine works on pixel centres.
    matrix[:, 2] += matrix[:, :2] @ np.array([0.5, 0.5]) - 0.5
    out = cv2.warpAffine(frame, matrix, (size * k, size * k), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if k > 1:
        out = cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA)
    return out


def _mesh_quads(landmarks: np.ndarray) -> list[np.ndarray]:
    quads = []
    for name in ("forehead", "left_cheek", "right_cheek"):
        corners = [landmarks[i] + t * (landmarks[j] - landmarks[i]) for i, j, t in _MESH_QUADS[name]]
        quads.append(np.array(corners, dtype=np.float64))
    return quads


def _eye_quads(left_eye: np.ndarray, right_eye: np.ndarray) -> list[np.ndarray]:
    mid = (left_eye.astype(np.float64) + right_eye) / 2
    ex = right_eye.astype(np.float64) - left_eye
    ey = np.array([-ex[1], ex[0]])  # ex turned 90 degrees towards the chin (image y points down)
    quads = []
    for name in ("forehead", "left_cheek", "right_cheek"):
        u0, u1, v0, v1 = _EYE_REGIONS[name]
        quads.append(np.array([mid + u * ex + v * ey for u, v in ((u0, v0), (u1, v0), (u1, v1), (u0, v1))]))
    return quads


def _quad_mean_grid(frame: np.ndarray, quad: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Mean colour of a quadrilateral region (corners TL, TR, BR, BL) on a rows x cols grid, float, no quantisation.

    The quad is resampled bilinearly (on float pixels: a weighted mean, so sub-LSB changes survive) at about one
    sample per frame pixel onto an integer multiple of the grid, then block-averaged with INTER_AREA.
    """
    width = max(np.hypot(*(quad[1] - quad[0])), np.hypot(*(quad[2] - quad[3])))
    height = max(np.hypot(*(quad[3] - quad[0])), np.hypot(*(quad[2] - quad[1])))
    kx, ky = max(1, math.ceil(width / cols)), max(1, math.ceil(height / rows))
    out_w, out_h = cols * kx, rows * ky
    h_img, w_img = frame.shape[:2]
    # Convert only the pixels under the quad (plus the bilinear neighbour) to float.
    c0 = int(np.clip(math.floor(quad[:, 0].min()) - 1, 0, w_img - 1))
    r0 = int(np.clip(math.floor(quad[:, 1].min()) - 1, 0, h_img - 1))
    c1 = int(np.clip(math.ceil(quad[:, 0].max()) + 2, c0 + 1, w_img))
    r1 = int(np.clip(math.ceil(quad[:, 1].max()) + 2, r0 + 1, h_img))
    patch = frame[r0:r1, c0:c1].astype(np.float32)
    # Output pixel centres (i + 0.5) cover the quad, whose corners are on pixel-area edges: shift by half a pixel.
    src = (quad - [c0, r0]).astype(np.float32)
    dst = np.array([[0, 0], [out_w, 0], [out_w, out_h], [0, out_h]], dtype=np.float32) - 0.5
    matrix = cv2.getPerspectiveTransform(src - 0.5, dst)
    warped = cv2.warpPerspective(patch, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.resize(warped, (cols, rows), interpolation=cv2.INTER_AREA)


def _quads_usable(quads: list[np.ndarray]) -> bool:
    # Degenerate (a face a few pixels wide, collapsed or twisted landmarks): fall back to the box fractions.
    for q in quads:
        if not np.isfinite(q).all():
            return False
        (ax, ay), (bx, by) = q[2] - q[0], q[3] - q[1]
        area = 0.5 * abs(ax * by - ay * bx)  # quadrilateral area from its diagonals
        if area < 1.0:
            return False
    return True


def landmark_roi_grid(frame: np.ndarray, obs: FaceObservation, size: int) -> np.ndarray:
    """Forehead (top half) and left/right cheeks (bottom half, image left = left) as [3, size, size] float in [0, 1],
    placed from Face Mesh landmarks (perspective-correct quads that follow yaw, roll and pitch), else from the eyes
    (follows roll and scale), else `roi_grid(frame, obs.box, size)`; area-averaged in float like `roi_grid`."""
    if size % 2:
        raise ValueError(f"ROI size must be even, got {size}")
    if obs.has_mesh:
        quads = _mesh_quads(obs.landmarks)
    elif obs.has_eyes:
        quads = _eye_quads(obs.left_eye, obs.right_eye)
    else:
        return roi_grid(frame, obs.box, size)
    if not _quads_usable(quads):
        return roi_grid(frame, obs.box, size)
    half = size // 2
    grid = np.empty((size, size, 3), dtype=np.float32)
    grid[:half] = _quad_mean_grid(frame, quads[0], half, size)
    grid[half:, :half] = _quad_mean_grid(frame, quads[1], half, half)
    grid[half:, half:] = _quad_mean_grid(frame, quads[2], half, half)
    return grid.transpose(2, 0, 1) / 255.0
