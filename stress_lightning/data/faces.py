"""Face boxes, aligned face crops and the forehead/cheek ROI used by the rPPG stream.

Corpora that ship per-frame face boxes (the synthetic corpus does) use them; otherwise `HaarFaceDetector` finds
the face offline with OpenCV's bundled cascade and a smoother keeps the box from jittering between frames (box
jitter moves ROI borders across skin edges and shows up as noise in the pulse band).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from stress_lightning.data.corpora.base import read_csv_checked
from stress_lightning.data.errors import CorpusError

# Fractions of the face box (x0, x1, y0, y1); docs/ARCHITECTURE.md is the contract with the corpus renderers.
FOREHEAD = (0.30, 0.70, 0.10, 0.28)
LEFT_CHEEK = (0.15, 0.38, 0.52, 0.72)
RIGHT_CHEEK = (0.62, 0.85, 0.52, 0.72)


def read_face_boxes(path: Path, n_frames: int) -> np.ndarray:
    """Per-frame boxes [n_frames, 4] (x0, y0, x1, y1) from a `frame,x0,y0,x1,y1` CSV."""
    table = read_csv_checked(path, ["frame", "x0", "y0", "x1", "y1"])
    if len(table) < n_frames:
        raise CorpusError(path, f"has boxes for {len(table)} frames but the video has {n_frames}")
    boxes = table.sort_values("frame")[["x0", "y0", "x1", "y1"]].to_numpy(np.float32)[:n_frames]
    if not np.isfinite(boxes).all() or ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).any():
        raise CorpusError(path, "contains non-finite or empty boxes")
    return boxes


class HaarFaceDetector:
    """Frontal-face detection with OpenCV's Haar cascade (ships with opencv-python-headless<5, works offline).

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
