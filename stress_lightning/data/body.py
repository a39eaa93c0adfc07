"""OpenPose BODY_25 body keypoints: the joint layout, the JSON reader and writer, and a synthetic seated pose.

A body keypoint track is an array [N, 25, 3] float32: per video frame and joint (order of `BODY25_JOINTS`) the x
and y pixel coordinates in the video frame and the detector's confidence in [0, 1]. An undetected joint is
(0, 0, 0), as OpenPose writes it.

On disk the track is OpenPose's own JSON (`--write_json`), in one of two forms:
- a folder of per-frame files `<name>_<frame, 12 digits>_keypoints.json` (OpenPose's output for a video);
- one JSON file `{"frames": [<OpenPose frame object>, ...]}` holding every frame in order: the manifest's
  "keypoint file per video".
An OpenPose frame object is `{"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": [x0, y0, c0,
..., x24, y24, c24], ...}]}`. With several people the one with the largest confidence sum is kept (the person in
front of the camera); a frame without people is all zeros.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import numpy as np
from scipy.fft import next_fast_len
from scipy.ndimage import gaussian_filter1d

from stress_lightning.data.errors import CorpusError
from stress_lightning.data.taxonomy import BASIC_EXPRESSIONS

BODY25_JOINTS: Final[tuple[str, ...]] = (
    "Nose",
    "Neck",
    "RShoulder",
    "RElbow",
    "RWrist",
    "LShoulder",
    "LElbow",
    "LWrist",
    "MidHip",
    "RHip",
    "RKnee",
    "RAnkle",
    "LHip",
    "LKnee",
    "LAnkle",
    "REye",
    "LEye",
    "REar",
    "LEar",
    "LBigToe",
    "LSmallToe",
    "LHeel",
    "RBigToe",
    "RSmallToe",
    "RHeel",
)
NUM_JOINTS: Final[int] = len(BODY25_JOINTS)
JOINT_INDEX: Final[dict[str, int]] = {name: i for i, name in enumerate(BODY25_JOINTS)}
# The skeleton's limbs (joint index pairs), in the order OpenPose draws BODY_25.
BODY25_LIMBS: Final[tuple[tuple[int, int], ...]] = (
    (1, 8),
    (1, 2),
    (1, 5),
    (2, 3),
    (3, 4),
    (5, 6),
    (6, 7),
    (8, 9),
    (9, 10),
    (10, 11),
    (8, 12),
    (12, 13),
    (13, 14),
    (1, 0),
    (0, 15),
    (15, 17),
    (0, 16),
    (16, 18),
    (14, 19),
    (19, 20),
    (14, 21),
    (11, 22),
    (22, 23),
    (11, 24),
)
NECK: Final[int] = JOINT_INDEX["Neck"]
MID_HIP: Final[int] = JOINT_INDEX["MidHip"]
R_SHOULDER: Final[int] = JOINT_INDEX["RShoulder"]
L_SHOULDER: Final[int] = JOINT_INDEX["LShoulder"]

OPENPOSE_VERSION: Final[float] = 1.3
KEYPOINTS_SUFFIX: Final[str] = "_keypoints.json"
_FRAME_FILE = re.compile(r"^(?P<name>.*)_(?P<frame>\d{12})_keypoints\.json$")
_VALUES_PER_PERSON = 3 * NUM_JOINTS


# -- reading ------------------------------------------------------------------------------------------------------
def read_openpose(path: Path) -> np.ndarray:
    """OpenPose BODY_25 JSON -> keypoints [N, 25, 3] float32 (x, y in pixels, confidence).

    `path` is a folder of OpenPose's per-frame files (`<name>_<frame 12 digits>_keypoints.json`, ordered by the
    frame number in the name; numbers must run from 0 without gaps) or one JSON file `{"frames": [<OpenPose frame
    object>, ...]}` (the manifest's "keypoint file per video"). Per frame the person with the largest confidence
    sum is kept; a frame without people is zeros.

    Raises:
        CorpusError naming the file and the problem: missing path, not JSON, no or wrong-length
        `pose_keypoints_2d` (not 75 numbers), non-numbers or non-finite numbers, an empty folder or one without
        `*_keypoints.json` files, files of several videos in one folder, frame numbers with gaps.
    """
    path = Path(path)
    if path.is_dir():
        return _read_folder(path)
    if path.is_file():
        return _read_frames_file(path)
    raise CorpusError(path, "body keypoint path does not exist (expected an OpenPose JSON folder or file)")


def _load_json(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CorpusError(path, f"cannot read the keypoint file ({error})") from error
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise CorpusError(path, f"not JSON ({error.msg} at line {error.lineno}, column {error.colno})") from error


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _frame_pose(frame: object, path: Path, where: str) -> np.ndarray:
    """One OpenPose frame object -> [25, 3] float32: the person with the largest confidence sum, else zeros."""
    people = frame.get("people") if isinstance(frame, dict) else None
    if not isinstance(people, list):
        raise CorpusError(path, f"{where}not an OpenPose frame (an object with a 'people' list)")
    best, best_score = np.zeros((NUM_JOINTS, 3), np.float32), -math.inf
    for i, person in enumerate(people):
        values = person.get("pose_keypoints_2d") if isinstance(person, dict) else None
        if not isinstance(values, list):
            raise CorpusError(path, f"{where}person {i} has no 'pose_keypoints_2d' list")
        if len(values) != _VALUES_PER_PERSON:
            raise CorpusError(
                path,
                f"{where}person {i}: 'pose_keypoints_2d' has {len(values)} numbers, expected {_VALUES_PER_PERSON} "
                "(BODY_25: 25 joints x (x, y, confidence))",
            )
        if not all(_is_number(v) for v in values):
            bad = next(v for v in values if not _is_number(v))
            raise CorpusError(path, f"{where}person {i}: 'pose_keypoints_2d' holds a non-number ({bad!r})")
        pose = np.asarray(values, dtype=np.float64).reshape(NUM_JOINTS, 3)
        if not np.isfinite(pose).all():
            joint = BODY25_JOINTS[int(np.argwhere(~np.isfinite(pose))[0, 0])]
            raise CorpusError(path, f"{where}person {i}: non-finite keypoint value at joint {joint}")
        score = float(pose[:, 2].sum())
        if score > best_score:
            best, best_score = pose.astype(np.float32), score
    return best


def _read_frames_file(path: Path) -> np.ndarray:
    data = _load_json(path)
    frames = data.get("frames") if isinstance(data, dict) else None
    if not isinstance(frames, list):
        raise CorpusError(path, 'expected a JSON object {"frames": [<OpenPose frame object>, ...]}')
    if not frames:
        raise CorpusError(path, "'frames' is empty: no keypoint frames")
    return np.stack([_frame_pose(frame, path, f"frame {k}: ") for k, frame in enumerate(frames)])


def _numbers_text(numbers: Sequence[int], limit: int = 5) -> str:
    shown = ", ".join(str(n) for n in numbers[:limit])
    return shown + (f" and {len(numbers) - limit} more" if len(numbers) > limit else "")


def _read_folder(folder: Path) -> np.ndarray:
    entries = sorted(folder.iterdir())
    if not entries:
        raise CorpusError(folder, "body keypoint folder is empty")
    files = [p for p in entries if p.name.endswith(KEYPOINTS_SUFFIX) and p.is_file()]
    if not files:
        raise CorpusError(
            folder, f"no OpenPose '*{KEYPOINTS_SUFFIX}' files in the folder ({len(entries)} other entries)"
        )
    by_frame: dict[int, Path] = {}
    names: set[str] = set()
    for p in files:
        match = _FRAME_FILE.match(p.name)
        if match is None:
            raise CorpusError(
                p, "keypoint file name lacks OpenPose's 12-digit frame number (<name>_<frame>_keypoints.json)"
            )
        names.add(match["name"])
        by_frame[int(match["frame"])] = p
    if len(names) > 1:
        raise CorpusError(folder, f"keypoint files of several videos in one folder: {_numbers_text(sorted(names), 3)}")
    numbers = sorted(by_frame)
    missing = sorted(set(range(numbers[-1] + 1)) - set(numbers))
    if missing:
        raise CorpusError(
            folder, f"frame numbers have gaps: frames {_numbers_text(missing)} of 0..{numbers[-1]} are missing"
        )
    return np.stack([_frame_pose(_load_json(by_frame[n]), by_frame[n], "") for n in numbers])


# -- writing ------------------------------------------------------------------------------------------------------
def _check_keypoints(keypoints: np.ndarray, name: str = "keypoints") -> np.ndarray:
    keypoints = np.asarray(keypoints)
    if keypoints.ndim != 3 or keypoints.shape[1:] != (NUM_JOINTS, 3):
        raise ValueError(f"{name}: expected an array [N, {NUM_JOINTS}, 3], got shape {keypoints.shape}")
    if not np.isfinite(keypoints).all():
        raise ValueError(f"{name}: holds non-finite values")
    return keypoints.astype(np.float32)


def write_openpose(folder: Path, keypoints: np.ndarray, prefix: str) -> list[Path]:
    """Write keypoints [N, 25, 3] as OpenPose's per-frame JSON files `<folder>/<prefix>_<frame:012d>_keypoints.json`.

    A frame whose confidences are all zero is written without people, as OpenPose writes a frame where it finds
    nobody. Numbers are written in the shortest form that reads back to the same float32, so `read_openpose(folder)`
    returns `keypoints` exactly. Returns the written paths in frame order.
    """
    keypoints = _check_keypoints(keypoints)
    if not prefix or "/" in prefix or "\\" in prefix:
        raise ValueError(f"write_openpose: prefix must be a non-empty file name part, got {prefix!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # numpy's float32 -> str is the shortest text that parses back to the same float32.
    texts = keypoints.reshape(len(keypoints), -1).astype(str)
    paths = []
    for k, (pose, values) in enumerate(zip(keypoints, texts, strict=True)):
        people = ""
        if (pose[:, 2] > 0).any():
            people = (
                '{"person_id":[-1],"pose_keypoints_2d":[' + ",".join(values) + '],"face_keypoints_2d":[],'
                '"hand_left_keypoints_2d":[],"hand_right_keypoints_2d":[],"pose_keypoints_3d":[],'
                '"face_keypoints_3d":[],"hand_left_keypoints_3d":[],"hand_right_keypoints_3d":[]}'
            )
        path = folder / f"{prefix}_{k:012d}{KEYPOINTS_SUFFIX}"
        path.write_text(f'{{"version":{OPENPOSE_VERSION},"people":[{people}]}}', encoding="utf-8")
        paths.append(path)
    return paths


# -- synthesis ----------------------------------------------------------------------------------------------------
EXPRESSION_NAMES: Final[tuple[str, ...]] = BASIC_EXPRESSIONS  # = stress_lightning.data.render.EXPRESSION_NAMES
_EXPR = {name: i for i, name in enumerate(EXPRESSION_NAMES)}
_DEG = math.pi / 180.0

# Per stress level (low, normal, high): smoothing time of the random motion (s) and its amplitude (units of the
# shoulder width S, or degrees). Higher stress: faster and larger small movements.
_SWAY_S, _SWAY_DEG = (2.0, 1.2, 0.6), (1.0, 1.5, 2.5)  # lateral lean of the upper body about the hips
_SHIFT_S, _SHIFT = (3.0, 2.0, 1.2), (0.01, 0.015, 0.025)  # the whole body shifting on the chair
_HEAD_S, _HEAD_DEG = (1.5, 0.9, 0.45), ((4.0, 3.0, 2.0), (6.0, 4.0, 3.0), (10.0, 6.0, 4.0))  # yaw, pitch, roll
_ARM_S, _ELBOW_DEG, _FOREARM_DEG = (1.0, 0.6, 0.3), (2.0, 3.0, 5.0), (4.0, 7.0, 12.0)
_HAND_S, _HAND = (0.6, 0.3, 0.15), (0.015, 0.04, 0.08)  # wrist fidgeting
_SHOULDER_FIDGET = (0.005, 0.01, 0.02)
_SHOULDER_RAISE = (0.0, 0.035, 0.08)
_TAP_THRESHOLD = (1.8, 1.0, 0.3)  # bursts of hand tapping where a slow unit-std noise exceeds this
_TAP_AMPLITUDE = 0.05
_BREATH_HZ = (0.25, 0.3, 0.38)
_DETECTOR_JITTER = 0.002  # keypoint position noise at full confidence, units of S

# Expression postures: the change of each pose parameter at full expression intensity. Units: S (shoulder width)
# for lengths, degrees for angles; "raise" > 0 lifts the shoulders, "narrow" > 0 draws them in, "scale" > 0 brings
# the upper body towards the camera (leaning forward), "torso" > 0 straightens the back (neck higher).
_POSTURES: dict[str, dict[str, float]] = {
    "happy": {"torso": 0.04, "pitch": -6.0, "elbow": 18.0, "forearm": 150.0, "foreshorten": 0.2},
    "sad": {"torso": -0.10, "pitch": 28.0, "head_drop": 0.06, "raise": -0.06, "narrow": 0.05, "forearm": -10.0},
    "angry": {"scale": 0.08, "torso": -0.04, "pitch": 8.0, "raise": 0.06, "elbow": 8.0, "forearm": 5.0},
    "surprise": {"torso": 0.03, "pitch": -15.0},
    "fear": {"scale": -0.05, "torso": -0.05, "pitch": 10.0, "raise": 0.07, "narrow": 0.07, "elbow": -8.0},
    "disgust": {"yaw": 30.0, "pitch": 5.0, "lean": -3.0},
    "neutral": {},
}
# Transient gestures (fading with `_GESTURE_DECAY_S` from the start of the expression).
_GESTURES: dict[str, dict[str, float]] = {
    "surprise": {"elbow": 45.0, "forearm": -100.0, "foreshorten": 0.35},  # hands up towards the face
    "fear": {"forearm": -45.0, "foreshorten": 0.15},  # hands drawn to the chest
}
_GESTURE_DECAY_S = 1.2
# Motion amplitude factor at full intensity: sadness damps movement, anger makes it larger and more abrupt.
_MOTION_GAIN = {"sad": -0.5, "angry": 0.4}

# Head points in a head frame (x right in the image, y down, z towards the camera), units of S.
_HEAD_POINTS = {
    "Nose": (0.0, 0.03, 0.24),
    "REye": (-0.08, -0.05, 0.19),
    "LEye": (0.08, -0.05, 0.19),
    "REar": (-0.19, 0.0, 0.0),
    "LEar": (0.19, 0.0, 0.0),
}
# Detector confidence per visible joint (legs under the desk: knees seldom, the rest never detected).
_BASE_CONFIDENCE = {
    "Nose": 0.9,
    "Neck": 0.88,
    "RShoulder": 0.85,
    "LShoulder": 0.85,
    "RElbow": 0.75,
    "LElbow": 0.75,
    "RWrist": 0.7,
    "LWrist": 0.7,
    "MidHip": 0.55,
    "RHip": 0.5,
    "LHip": 0.5,
    "RKnee": 0.15,
    "LKnee": 0.15,
    "REye": 0.88,
    "LEye": 0.88,
    "REar": 0.6,
    "LEar": 0.6,
}
_MIN_CONFIDENCE = 0.05  # OpenPose drops joints below its detection threshold


def _smooth_noise(rng: np.random.Generator, n: int, sigmas: np.ndarray) -> np.ndarray:
    """Gaussian-smoothed noise with unit std per track: [L, n, k] for a matrix of smoothing widths [L, k] (frames).

    Every row L filters the same k white-noise tracks (so a track mixed across rows, as the stress level changes,
    changes its time scale smoothly rather than jumping). The filter is applied in the frequency domain on a
    padded length (one FFT for all tracks, no wrap-around into the kept frames), and each output is divided by
    its exact theoretical std, so amplitudes do not depend on the random draw.
    """
    sigmas = np.atleast_2d(np.asarray(sigmas, dtype=np.float64))
    m = next_fast_len(n + int(4 * sigmas.max()) + 1, real=True)
    spectrum = np.fft.rfft(rng.standard_normal((m, sigmas.shape[1])), axis=0)  # [m // 2 + 1, k]
    freq = np.fft.rfftfreq(m)[None, :, None]  # cycles per frame
    gain = np.exp(-2.0 * (np.pi * freq * sigmas[:, None, :]) ** 2)  # [L, bins, k]
    # Parseval: unit white noise through `gain` has variance mean(|gain|^2) over the full (two-sided) spectrum.
    bins = np.full(freq.shape[1], 2.0)
    bins[0] = 1.0
    if m % 2 == 0:
        bins[-1] = 1.0
    std = np.sqrt((bins[None, :, None] * gain**2).sum(axis=1, keepdims=True) / m)
    return np.fft.irfft(spectrum[None] * gain / std, n=m, axis=1)[:, :n]


def _fill_and_smooth(codes: np.ndarray, classes: int, sigma: float) -> np.ndarray:
    """Per-frame class codes (-1: unknown) -> smooth class weights [N, classes]: unknown frames are interpolated
    between their known neighbours (a ramp from one class to the next), then a Gaussian of `sigma` frames."""
    n = len(codes)
    known = np.flatnonzero(codes >= 0)
    onehot = np.zeros((n, classes))
    onehot[known, codes[known]] = 1.0
    if len(known) < n:
        idx = np.arange(n)
        for c in range(classes):
            onehot[:, c] = np.interp(idx, known, onehot[known, c])
    return gaussian_filter1d(onehot, sigma, axis=0, mode="nearest") if sigma > 0 else onehot


def _stress_codes(stress: int | Sequence[tuple[float, float, int]], times_s: np.ndarray) -> np.ndarray:
    def level_of(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= int(value) <= 2:
            raise ValueError(f"synthesize_body25: a stress level is 0, 1 or 2, got {value!r}")
        return int(value)

    if not isinstance(stress, Sequence):
        return np.full(len(times_s), level_of(stress))
    codes = np.full(len(times_s), -1)
    for segment in stress:
        if len(segment) != 3:
            raise ValueError(f"synthesize_body25: a stress segment is (start_s, end_s, level), got {segment!r}")
        start_s, end_s, level = segment
        if not end_s > start_s:
            raise ValueError(f"synthesize_body25: stress segment {segment!r} ends before it starts")
        codes[(times_s >= start_s) & (times_s < end_s)] = level_of(level)
    if (codes < 0).all():
        raise ValueError(f"synthesize_body25: no stress segment covers the session (0 to {times_s[-1]:.2f} s)")
    return codes


def _expression_codes(expressions: Callable[[float], str | None] | None, times_s: np.ndarray) -> np.ndarray:
    if expressions is None:
        return np.full(len(times_s), _EXPR["neutral"])
    codes = np.empty(len(times_s), dtype=np.int64)
    for i, t in enumerate(times_s.tolist()):
        label = expressions(t)
        if label is None:
            codes[i] = -1
        elif label in _EXPR:
            codes[i] = _EXPR[label]
        else:
            raise ValueError(f"synthesize_body25: unknown expression {label!r} at {t:.2f} s; known: {EXPRESSION_NAMES}")
    if (codes < 0).all():
        codes[:] = _EXPR["neutral"]
    return codes


def _since_onset(weight: np.ndarray, fps: float) -> np.ndarray:
    """Seconds since `weight` last rose from (near) zero, per frame."""
    idx = np.arange(len(weight))
    last_low = np.maximum.accumulate(np.where(weight < 0.05, idx, 0))
    return (idx - last_low) / fps


def _rotation(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """Head rotations [N, 3, 3] (radians): roll about the view axis, then pitch (+: nose down), then yaw (+: nose
    towards image right)."""
    n = len(yaw)
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    zeros, ones = np.zeros(n), np.ones(n)
    r_yaw = np.stack([cy, zeros, sy, zeros, ones, zeros, -sy, zeros, cy], -1).reshape(n, 3, 3)
    r_pitch = np.stack([ones, zeros, zeros, zeros, cp, sp, zeros, -sp, cp], -1).reshape(n, 3, 3)
    r_roll = np.stack([cr, -sr, zeros, sr, cr, zeros, zeros, zeros, ones], -1).reshape(n, 3, 3)
    return r_yaw @ r_pitch @ r_roll


def synthesize_body25(
    duration_s: float,
    fps: float,
    stress: int | Sequence[tuple[float, float, int]],
    expressions: Callable[[float], str | None] | None,
    rng: np.random.Generator,
    width: int,
    height: int,
    shoulder_width_px: float | None = None,
) -> np.ndarray:
    """A seated person at a desk, seen from the front, as OpenPose BODY_25 keypoints [N, 25, 3] float32.

    N = round(duration_s * fps) frames at times k / fps. Head, neck, shoulders, arms resting on the desk and hips
    are in view; knees are seldom detected (low confidence) and ankles and feet never (zeros). Movement is smoothed
    noise whose time scale and size follow the stress level, plus postures and gestures that follow the expression,
    so a body model can learn both.

    Args:
        duration_s, fps: session length (s) and frame rate (Hz).
        stress: one level for the whole session (0 low, 1 normal, 2 high) or segments (start_s, end_s, level);
            a frame outside every segment takes its neighbouring segments' levels (blended between two). Levels
            change smoothly, over about a second.
        expressions: the expression timeline, t_s -> a name of `EXPRESSION_NAMES` (= render.EXPRESSION_NAMES) or
            None (between two expressions: the posture ramps from one to the next); None = neutral throughout.
        rng: the random source: subject proportions, placement and all motion and detector noise.
        width, height: the video frame (px); joints outside it are undetected (zeros).
        shoulder_width_px: the subject's shoulder width S (px); default 0.26-0.34 x min(width, height).

    Stress (per level low / normal / high; S = shoulder width):

    | movement                                | low              | normal           | high               |
    |-----------------------------------------|------------------|------------------|--------------------|
    | wrist fidgeting: size, time scale       | 0.015 S, 0.6 s   | 0.04 S, 0.3 s    | 0.08 S, 0.15 s     |
    | forearm / elbow angle noise, time scale | 4 / 2 deg, 1 s   | 7 / 3 deg, 0.6 s | 12 / 5 deg, 0.3 s  |
    | hand-tapping bursts (3-5 Hz, 0.05 S)    | rare             | sometimes        | often              |
    | shoulders raised                        | 0                | 0.035 S          | 0.08 S             |
    | postural sway (lean), time scale        | 1 deg, 2 s       | 1.5 deg, 1.2 s   | 2.5 deg, 0.6 s     |
    | head yaw / pitch / roll, time scale     | 4/3/2 deg, 1.5 s | 6/4/3 deg, 0.9 s | 10/6/4 deg, 0.45 s |
    | breathing (shoulders, neck)             | 0.25 Hz          | 0.3 Hz           | 0.38 Hz            |

    Expressions (at full intensity; the onset and offset of an event ramp in and out):

    | expression | posture                                                       | gesture (fades over ~1.2 s)    |
    |------------|---------------------------------------------------------------|--------------------------------|
    | happy      | upright (neck +0.04 S), head up 6 deg, arms open: elbows out  | -                              |
    |            | 18 deg, forearms turned outwards 150 deg                      |                                |
    | sad        | slumped (neck -0.10 S), head forward/down 28 deg, shoulders   | -                              |
    |            | dropped 0.06 S and drawn in, hands together; movement halved  |                                |
    | angry      | leaning forward (upper body x1.08), tense raised shoulders    | -                              |
    |            | (+0.06 S), chin down 8 deg, elbows out; movement x1.4         |                                |
    | surprise   | straightened, head back 15 deg                                | elbows out, hands up to face   |
    | fear       | shrinking: leaning back (x0.95), shoulders raised and drawn   | hands drawn to the chest       |
    |            | in 0.07 S, head down 10 deg, elbows in                        |                                |
    | disgust    | head turned away 30 deg (far ear hidden), leaning away 3 deg  | -                              |
    | neutral    | rest                                                          | -                              |

    Subject proportions (torso 1.15-1.35 S, upper arm 0.72-0.85 S, forearm 0.6-0.72 S, hip width, head size,
    resting arm angles, placement in the frame) come from `rng`. The detector is modelled too: confidence per
    joint with slow noise, lower for fast-moving wrists (motion blur) and for an ear turned away, position jitter
    growing as confidence falls, and short runs of missed joints (about 1 % of frames).
    Vectorised numpy: 30 s at 25 fps takes about 10 ms (13 ms on a heavily loaded 2-core machine).
    """
    if not (duration_s > 0 and fps > 0 and math.isfinite(duration_s * fps)):
        raise ValueError(f"synthesize_body25: duration_s and fps must be positive, got {duration_s}, {fps}")
    if width <= 0 or height <= 0:
        raise ValueError(f"synthesize_body25: width and height must be positive, got {width} x {height}")
    n = max(int(round(duration_s * fps)), 1)
    t = np.arange(n) / fps
    level_w = _fill_and_smooth(_stress_codes(stress, t), 3, 1.0 * fps)  # [N, 3]
    expr_w = _fill_and_smooth(_expression_codes(expressions, t), len(EXPRESSION_NAMES), 0.12 * fps)  # [N, 7]
    e = {name: expr_w[:, i] for name, i in _EXPR.items()}

    gesture = {name: e[name] * np.exp(-_since_onset(e[name], fps) / _GESTURE_DECAY_S) for name in _GESTURES}

    def per_level(values: Sequence[float]) -> np.ndarray:
        return level_w @ np.asarray(values, dtype=np.float64)

    def posture(key: str) -> np.ndarray:
        total = np.zeros(n)
        for name, deltas in _POSTURES.items():
            if key in deltas:
                total += deltas[key] * e[name]
        for name, deltas in _GESTURES.items():
            if key in deltas:
                total += deltas[key] * gesture[name]
        return total

    gain = 1.0 + sum(g * e[name] for name, g in _MOTION_GAIN.items())

    # -- the subject -------------------------------------------------------------------------------------------
    size = min(width, height)
    s_px = float(shoulder_width_px) if shoulder_width_px is not None else size * rng.uniform(0.26, 0.34)
    if not s_px > 0:
        raise ValueError(f"synthesize_body25: shoulder_width_px must be positive, got {shoulder_width_px}")
    torso = rng.uniform(1.15, 1.35)
    upper_arm, forearm = rng.uniform(0.72, 0.85), rng.uniform(0.6, 0.72)
    hip_half = rng.uniform(0.26, 0.33)
    shoulder_drop = rng.uniform(0.03, 0.09)
    neck_len, head_size = rng.uniform(0.5, 0.58), rng.uniform(0.9, 1.1)
    elbow0, forearm0 = rng.uniform(8.0, 18.0), rng.uniform(-85.0, -65.0)
    foreshorten0 = rng.uniform(0.5, 0.7)
    pitch0, yaw0 = rng.uniform(-5.0, 8.0), rng.uniform(-5.0, 5.0)
    away = rng.choice([-1.0, 1.0])  # the side disgust turns to
    tap_hz, tap_phase = rng.uniform(3.0, 5.0), rng.uniform(0, 2 * math.pi, size=2)
    origin_x = width * (0.5 + rng.uniform(-0.06, 0.06))
    neck_y = height * rng.uniform(0.38, 0.46)
    origin = np.array([origin_x, neck_y + torso * s_px])  # MidHip at rest, px

    # -- motion tracks -----------------------------------------------------------------------------------------
    # One set of level-dependent noise tracks: smoothing width per stress level (rows) and track (columns).
    widths_s = np.array(
        [
            [sway, *[shift] * 2, *[head] * 3, *[arm] * 4, *[hand] * 4, *[head] * 2]
            for sway, shift, head, arm, hand in zip(_SWAY_S, _SHIFT_S, _HEAD_S, _ARM_S, _HAND_S, strict=True)
        ]
    )
    tracks = np.einsum("nl,lnk->nk", level_w, _smooth_noise(rng, n, widths_s * fps))  # [N, 16]
    sway = tracks[:, 0] * per_level(_SWAY_DEG) * gain
    lean = (posture("lean") * away + sway) * _DEG
    shift = tracks[:, 1:3] * (per_level(_SHIFT) * gain)[:, None]
    head = tracks[:, 3:6]
    head_amp = level_w @ np.asarray(_HEAD_DEG)  # [N, 3]
    yaw = (yaw0 + posture("yaw") * away + head[:, 0] * head_amp[:, 0] * gain) * _DEG
    pitch = (pitch0 + posture("pitch") + head[:, 1] * head_amp[:, 1] * gain) * _DEG
    roll = head[:, 2] * head_amp[:, 2] * gain * _DEG
    arms = tracks[:, 6:10]  # elbow R, L, forearm R, L
    hands = tracks[:, 10:14] * (per_level(_HAND) * gain)[:, None]
    shoulders = tracks[:, 14:16] * (per_level(_SHOULDER_FIDGET) * gain)[:, None]
    # Level-independent slow noise: the tapping envelope, detector confidence drift (0.5 s), missed joints (0.15 s).
    slow = _smooth_noise(rng, n, np.array([1.0] + [0.5] * NUM_JOINTS + [0.15] * NUM_JOINTS) * fps)[0]
    tap_envelope = np.clip(slow[:, 0] - per_level(_TAP_THRESHOLD), 0, 1)
    breath_phase = 2 * math.pi * np.cumsum(per_level(_BREATH_HZ)) / fps + rng.uniform(0, 2 * math.pi)
    breath = 0.008 * np.sin(breath_phase)

    # -- the pose, in units of S around the resting MidHip (x right, y down) ----------------------------------------
    xy = np.zeros((n, NUM_JOINTS, 2))
    j = JOINT_INDEX
    neck = np.stack([np.zeros(n), -(torso + posture("torso") + breath)], -1)
    xy[:, j["Neck"]] = neck
    raise_ = per_level(_SHOULDER_RAISE) + posture("raise")
    narrow = posture("narrow")
    elbow_deg = elbow0 + posture("elbow")
    forearm_deg = forearm0 + posture("forearm")
    foreshorten = np.clip(foreshorten0 + posture("foreshorten"), 0.2, 1.0)
    amp_elbow, amp_forearm = per_level(_ELBOW_DEG) * gain, per_level(_FOREARM_DEG) * gain
    for k, (side, prefix) in enumerate(((-1.0, "R"), (1.0, "L"))):  # the subject's right is the image's left
        shoulder = neck + np.stack([side * (0.5 - narrow), shoulder_drop - raise_ + 1.5 * breath + shoulders[:, k]], -1)
        a_elbow = (elbow_deg + arms[:, k] * amp_elbow) * _DEG
        elbow = shoulder + upper_arm * np.stack([side * np.sin(a_elbow), np.cos(a_elbow)], -1)
        a_forearm = (forearm_deg + arms[:, 2 + k] * amp_forearm) * _DEG
        tap = _TAP_AMPLITUDE * (1.0 - 0.5 * k) * tap_envelope * np.sin(2 * math.pi * tap_hz * t + tap_phase[k])
        wrist = elbow + (forearm * foreshorten)[:, None] * np.stack([side * np.sin(a_forearm), np.cos(a_forearm)], -1)
        wrist = wrist + hands[:, 2 * k : 2 * k + 2] + np.stack([np.zeros(n), tap], -1)
        xy[:, j[f"{prefix}Shoulder"]], xy[:, j[f"{prefix}Elbow"]], xy[:, j[f"{prefix}Wrist"]] = shoulder, elbow, wrist
        xy[:, j[f"{prefix}Hip"]] = (side * hip_half, 0.0)
        xy[:, j[f"{prefix}Knee"]] = (side * (hip_half + 0.04), 0.42)
    head_centre = neck + np.stack([np.zeros(n), -neck_len + posture("head_drop") + 0.1 * np.sin(pitch)], -1)
    rotation = _rotation(yaw, pitch, roll)
    template = np.array([_HEAD_POINTS[name] for name in _HEAD_POINTS]) * head_size  # [5, 3]
    head_points = np.einsum("nij,kj->nki", rotation, template)  # [N, 5, 3]
    head_idx = [j[name] for name in _HEAD_POINTS]
    xy[:, head_idx] = head_centre[:, None] + head_points[..., :2]

    # Lean (rotation about the hips) and forward/backward lean (scale about the hips) move the upper body only.
    upper = [j[name] for name in ("Nose", "Neck", "REye", "LEye", "REar", "LEar")] + [
        j[f"{p}{part}"] for p in "RL" for part in ("Shoulder", "Elbow", "Wrist")
    ]
    scale = 1.0 + posture("scale")
    cos_l, sin_l = np.cos(lean), np.sin(lean)
    ux, uy = xy[:, upper, 0], xy[:, upper, 1]
    xy[:, upper, 0] = scale[:, None] * (cos_l[:, None] * ux - sin_l[:, None] * uy)
    xy[:, upper, 1] = scale[:, None] * (sin_l[:, None] * ux + cos_l[:, None] * uy)
    xy += shift[:, None, :]

    # -- the detector ------------------------------------------------------------------------------------------
    base = np.zeros(NUM_JOINTS)
    for name, value in _BASE_CONFIDENCE.items():
        base[j[name]] = value
    drift, miss = slow[:, 1 : 1 + NUM_JOINTS], slow[:, 1 + NUM_JOINTS :]
    confidence = base * (1.0 + 0.06 * drift + 0.02 * rng.standard_normal((n, NUM_JOINTS)))
    # Ears and eyes turned away from the camera fade out.
    depth = head_points[..., 2] / head_size
    facing = 1.0 / (1.0 + np.exp(-(depth + np.array([0.1, 0.06, 0.06, 0.03, 0.03])) / 0.02))
    confidence[:, head_idx] *= facing
    # Motion blur: fast wrists and elbows are found less surely.
    speed = np.zeros((n, NUM_JOINTS))
    speed[1:] = np.linalg.norm(np.diff(xy, axis=0), axis=-1) * fps  # S per second
    limbs = [j[f"{p}{part}"] for p in "RL" for part in ("Elbow", "Wrist")]
    confidence[:, limbs] *= 1.0 - np.clip(speed[:, limbs] / 3.0, 0.0, 0.4)
    confidence = np.clip(confidence, 0.0, 1.0)
    jitter = _DETECTOR_JITTER * (1.0 + 2.0 * (1.0 - confidence))[..., None] * rng.standard_normal((n, NUM_JOINTS, 2))
    pixels = origin + s_px * (xy + jitter)
    # Short runs of missed joints where a slow noise peaks (~1 % of frames); knees are missed most of the time.
    missing = miss > np.where(np.isin(np.arange(NUM_JOINTS), [j["RKnee"], j["LKnee"]]), -0.3, 2.3)
    inside = (pixels[..., 0] >= 0) & (pixels[..., 0] < width) & (pixels[..., 1] >= 0) & (pixels[..., 1] < height)
    detected = (confidence >= _MIN_CONFIDENCE) & ~missing & inside
    out = np.concatenate([pixels, confidence[..., None]], axis=-1)
    out[~detected] = 0.0
    return out.astype(np.float32)
