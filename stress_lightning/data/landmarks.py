"""Twelve semantic face landmarks: the one point set every source of landmarks maps to.

A landmark sidecar (`Item.landmarks`) is a CSV `frame,x0,y0,x1,y1,...,x11,y11`: one row per source-video frame
(the `frame` column is the frame's index in the decoded video, so frames without a face may be left out), points in
pixels of the video frame, in the order of `LANDMARK_NAMES`. The synthetic corpus writes it from its renderer's
geometry (`data.render_landmarks`); real video can derive the same points from mediapipe Face Mesh
(`MESH_LANDMARK_INDICES`, `from_face_mesh`).

"left" and "right" are as seen in the image (left = smaller x), the convention of `faces.py`, whose "left eye" is
Face Mesh's 33/133 (the subject's right eye).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final

import numpy as np

from stress_lightning.data.errors import CorpusError
from stress_lightning.data.tables import numeric_column, read_csv_checked

LANDMARK_NAMES: Final[tuple[str, ...]] = (
    "left_brow_inner",
    "left_brow_outer",
    "right_brow_inner",
    "right_brow_outer",
    "left_eye_centre",
    "right_eye_centre",
    "nose_tip",
    "mouth_left_corner",
    "mouth_right_corner",
    "upper_lip",
    "lower_lip",
    "chin",
)
NUM_LANDMARKS: Final[int] = len(LANDMARK_NAMES)
FRAME_COLUMN: Final[str] = "frame"
LANDMARK_COLUMNS: Final[tuple[str, ...]] = tuple(f"{axis}{k}" for k in range(NUM_LANDMARKS) for axis in ("x", "y"))

# For each name, the mediapipe Face Mesh indices (of its canonical 468-point mesh, `canonical_face_model.obj`) whose
# mean is the point. Image-left is the subject's right side. Brow points average the brow's upper and lower
# contour at that end; an eye centre averages both corners and the mid upper and lower lid; the lips average the
# outer and inner contour at the midline, so each lip point sits in the middle of its lip.
MESH_LANDMARK_INDICES: Final[Mapping[str, tuple[int, ...]]] = {
    "left_brow_inner": (107, 55),
    "left_brow_outer": (70, 46),
    "right_brow_inner": (336, 285),
    "right_brow_outer": (300, 276),
    "left_eye_centre": (33, 133, 159, 145),
    "right_eye_centre": (362, 263, 386, 374),
    "nose_tip": (1,),
    "mouth_left_corner": (61,),
    "mouth_right_corner": (291,),
    "upper_lip": (0, 13),
    "lower_lip": (14, 17),
    "chin": (152,),
}
LEFT_EYE_INDEX: Final[int] = LANDMARK_NAMES.index("left_eye_centre")
RIGHT_EYE_INDEX: Final[int] = LANDMARK_NAMES.index("right_eye_centre")


def from_face_mesh(mesh: np.ndarray) -> np.ndarray:
    """The 12 points from Face Mesh landmarks: [..., >=468, 2] -> float32 [..., 12, 2] (same units)."""
    mesh = np.asarray(mesh, dtype=np.float32)
    if mesh.ndim < 2 or mesh.shape[-2] < 468 or mesh.shape[-1] != 2:
        raise ValueError(f"Face Mesh landmarks must be [..., >=468, 2], got {mesh.shape}")
    return np.stack([mesh[..., list(MESH_LANDMARK_INDICES[n]), :].mean(axis=-2) for n in LANDMARK_NAMES], axis=-2)


def read_landmarks_csv(path: str | Path, n_frames: int | None = None) -> np.ndarray:
    """A landmark sidecar as float32 [N, 12, 2] (pixels), row n = source frame n.

    N is `n_frames` when given (the source video's frame count), else the last listed frame + 1. A frame the file
    does not list (no face found there) is NaN: the sampler treats it as a gap. A missing file or column, a cell
    that is no finite number, a negative, fractional, repeated or (with `n_frames`) out-of-range frame index raise
    `CorpusError` naming the file.
    """
    path = Path(path)
    table = read_csv_checked(path, [FRAME_COLUMN, *LANDMARK_COLUMNS], skipinitialspace=True)
    if not len(table):
        raise CorpusError(path, "lists no frame")
    frames = numeric_column(path, table, FRAME_COLUMN)
    if (frames < 0).any() or (frames != np.round(frames)).any():
        k = int(np.flatnonzero((frames < 0) | (frames != np.round(frames)))[0])
        raise CorpusError(path, f"data row {k + 1}: frame {frames[k]:g} is not a frame index (0, 1, 2, ...)")
    frames = frames.astype(np.int64)
    if n_frames is not None and frames.max() >= n_frames:
        raise CorpusError(path, f"frame {int(frames.max())} is past the video's {n_frames} frames")
    _, first, counts = np.unique(frames, return_index=True, return_counts=True)
    if (counts > 1).any():
        raise CorpusError(path, f"frame {int(frames[first[np.flatnonzero(counts > 1)[0]]])} has more than one row")
    points = np.stack([numeric_column(path, table, c) for c in LANDMARK_COLUMNS], axis=1)
    out = np.full((n_frames if n_frames is not None else int(frames.max()) + 1, NUM_LANDMARKS, 2), np.nan, np.float32)
    out[frames] = points.reshape(-1, NUM_LANDMARKS, 2)
    return out


def write_landmarks_csv(path: str | Path, points: np.ndarray, decimals: int = 2) -> None:
    """Write points float [N, 12, 2] (pixels, row n = frame n) as a landmark sidecar; a frame whose points are all
    NaN (no face) gets no row, as `read_landmarks_csv` reads it back."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 3 or points.shape[1:] != (NUM_LANDMARKS, 2):
        raise ValueError(f"landmarks must be [N, {NUM_LANDMARKS}, 2], got {points.shape}")
    flat = points.reshape(len(points), -1)
    absent = np.isnan(flat).all(axis=1)
    if not np.isfinite(flat[~absent]).all():
        raise ValueError(f"{path}: a frame's landmarks must be all finite or all NaN (no face)")
    fmt = f"{{:.{decimals}f}}"
    lines = [",".join([FRAME_COLUMN, *LANDMARK_COLUMNS])]
    lines += [",".join([str(n), *(fmt.format(v) for v in flat[n])]) for n in np.flatnonzero(~absent)]
    Path(path).write_text("\n".join(lines) + "\n")
