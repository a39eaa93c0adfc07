"""Shared pieces of the inference tests (tests/test_inference.py, tests/test_stream_command.py): a tiny trained-shape
model saved as a real Lightning checkpoint, and short real-face videos built from ../shared/data's single_face.mp4.

The model is random (untrained): the tests check plumbing, timing, shapes and the classic heart-rate path, which
does not depend on the weights. Its geometry follows the synthetic configs at a smaller scale: 25 fps, a 4 s pulse
window (roi_frames 100), 4 face frames over 0.6 s, 32 px faces, an 8x8 ROI grid.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from stress_lightning.data.video import iter_timed_frames

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FACE_VIDEO = SHARED_DATA / "faces" / "posed" / "single_face.mp4"

FPS = 25.0
ROI_FRAMES = 100  # a 4 s pulse window at 25 fps
FACE_FRAMES = 4
FACE_SIZE = 32
ROI_SIZE = 8
FRAME_SIZE = (320, 180)  # (width, height): single_face.mp4 halved; Face Mesh finds the face at this size
FACE_PIPELINE = {"face_span_s": 0.6, "face_margin": 0.15, "detector": "mediapipe", "detect_every": 5}
# Small channel widths keep the per-frame expression path well under a millisecond on one thread.
NET = {
    "spatial_backbone": "conv4",
    "spatial_kwargs": {"channels": [8, 16]},
    "temporal_backbone": "c3d_small",
    "temporal_kwargs": {"channels": [4, 8, 8, 16]},
    "rppg_backbone": "rppg_cnn",
    "rppg_kwargs": {"channels": [4, 8], "out_dim": 16},
}
GEOMETRY = {
    "fps": FPS,
    "roi_frames": ROI_FRAMES,
    "face_frames": FACE_FRAMES,
    "face_size": FACE_SIZE,
    "roi_size": ROI_SIZE,
}
STRESS_NAMES = ["calm", "tense"]  # not the default taxonomy, so a loader that ignores the model's names is caught


def make_module(seed: int = 0):  # -> MultiTaskStressModule
    from stress_lightning.models.module import MultiTaskStressModule

    torch.manual_seed(seed)
    module = MultiTaskStressModule(net=NET, stress_levels=STRESS_NAMES, face_pipeline=FACE_PIPELINE, **GEOMETRY)
    return module.eval()


def save_lightning_checkpoint(module, path: Path) -> Path:
    """The checkpoint `fit` writes (Trainer.save_checkpoint), without fitting."""
    import lightning.pytorch as pl

    trainer = pl.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=path.parent,
    )
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return path


def example_clips(batch: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed clips (frames [B, Tf, 3, S, S], roi [B, Tr, 3, R, R]) with a 72 bpm pulse in the ROI."""
    rng = np.random.default_rng(seed)
    frames = rng.random((batch, FACE_FRAMES, 3, FACE_SIZE, FACE_SIZE), dtype=np.float32)
    t = np.arange(ROI_FRAMES, dtype=np.float32) / FPS
    pulse = 0.003 * np.sin(2 * np.pi * 1.2 * t)[None, :, None, None, None]
    roi = 0.5 + pulse + 0.002 * rng.random((batch, ROI_FRAMES, 3, ROI_SIZE, ROI_SIZE), dtype=np.float32)
    return frames, roi.astype(np.float32)


def require_face_video() -> Path:
    if not FACE_VIDEO.is_file():
        pytest.skip(f"shared data absent: {FACE_VIDEO} (see ../shared/data/README.md)")
    return FACE_VIDEO


@lru_cache(maxsize=1)
def _face_frames() -> tuple[np.ndarray, ...]:
    frames = [
        cv2.resize(rgb, FRAME_SIZE, interpolation=cv2.INTER_AREA) for _, rgb in iter_timed_frames(require_face_video())
    ]
    # Forwards then backwards: a looped clip without a jump at the seam (the tracker sees a moving head, not a cut).
    return tuple(frames + frames[::-1])


def face_frames(n: int) -> np.ndarray:
    """`n` frames of the real face (uint8 RGB [n, 180, 320, 3]), single_face.mp4 looped back and forth."""
    loop = _face_frames()
    return np.stack([loop[i % len(loop)] for i in range(n)])


def timed(frames: np.ndarray, fps: float = FPS) -> Iterator[tuple[float, np.ndarray]]:
    return ((i / fps, f) for i, f in enumerate(frames))


def write_face_video(writer, path: Path, seconds: float, fps: float = FPS) -> Path:
    """A real-face video of `seconds` at `fps` written with the conftest writer (H.264 for .mp4)."""
    writer(path, timed(face_frames(round(seconds * fps)), fps), rate=fps)
    return path


def write_grey_video(writer, path: Path, seconds: float, fps: float = FPS) -> Path:
    grey = np.full((FRAME_SIZE[1], FRAME_SIZE[0], 3), 128, np.uint8)
    writer(path, ((i / fps, grey) for i in range(round(seconds * fps))), rate=fps)
    return path


def two_faces(frame: np.ndarray, large_on_right: bool = True) -> np.ndarray:
    """The face twice on a grey 480x270 canvas: one copy twice the size of the other."""
    h, w = frame.shape[:2]
    # The head and shoulders of single_face (its face box is about x 108-187, y 48-150 at 320x180).
    patch = frame[round(h * 0.11) :, round(w * 0.234) : round(w * 0.69)]
    canvas = np.full((270, 480, 3), 128, np.uint8)
    big = cv2.resize(patch, (218, 240), interpolation=cv2.INTER_AREA)
    small = cv2.resize(patch, (109, 120), interpolation=cv2.INTER_AREA)
    big_x, small_x = (250, 20) if large_on_right else (12, 351)
    canvas[15:255, big_x : big_x + 218] = big
    canvas[75:195, small_x : small_x + 109] = small
    return canvas


@lru_cache(maxsize=1)
def conftest_writer():  # -> conftest.write_video
    """tests/conftest.py's `write_video` for module-scoped fixtures (the `video_writer` fixture is per test). Loaded
    by path: `import conftest` is ambiguous where tests/signals has a conftest.py of its own."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_inference_conftest", Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_video


def load_tiny(source: str | Path, backend: str = "auto"):  # -> StressModel
    """`load_model` on one thread: the per-frame network calls are tiny, and on a shared 2-core machine PyTorch's
    default of one thread per core spends ~200 ms a call waiting for a busy core instead of ~0.5 ms."""
    from stress_lightning.inference.api import load_model

    return load_model(source, backend=backend, threads=1)


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """One intra-op thread for this module's tests (see `load_tiny`), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
