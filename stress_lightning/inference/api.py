"""The consumer API: `load_model(uri_or_path).predict(video)` -> one row per window.

    import stress_lightning
    model = stress_lightning.load_model("models:/stress-multitask@champion")
    table = model.predict("session.mp4")          # or an array [T, H, W, 3] with fps=..., or an iterator of frames

The video goes through the stream engine (`inference.engine`): the training face pipeline, resampling to the
model's clip rate, per-frame expression and a pulse/stress window every `update_every_s`. Each row is one window.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stress_lightning.inference.engine import DEFAULT_HR_METHOD, StreamEngine, StreamSettings, WindowEstimate
from stress_lightning.inference.loading import LoadedModel, resolve_model
from stress_lightning.inference.runtime import Backend, make_runner
from stress_lightning.inference.sources import FrameSource, array_source, iterable_source, open_source
from stress_lightning.inference.spec import ModelSpec


def window_columns(spec: ModelSpec) -> list[tuple[str, str]]:
    """(name, type) of the window table's columns, type one of "string", "double", "long" (the pyfunc
    signature's)."""
    columns = [("t_start_s", "double"), ("t_end_s", "double"), ("expression", "string")]
    columns += [(f"expression_prob_{n}", "double") for n in spec.expression_names]
    columns += [("hr_bpm", "double"), ("hr_method", "string"), ("rmssd_ms", "double"), ("lf_hf_ratio", "double")]
    columns += [("stress_level", "string")]
    columns += [(f"stress_prob_{n}", "double") for n in spec.stress_names]
    columns += [("quality", "double"), ("snr_db", "double"), ("face_fraction", "double"), ("faces_in_view", "long")]
    return columns


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def windows_table(windows: list[WindowEstimate], spec: ModelSpec, hr_method: str) -> pd.DataFrame:
    """Window estimates as the table `predict` returns (NaN / None where a window could not tell)."""
    rows = []
    for w in windows:
        row: dict[str, Any] = {"t_start_s": max(0.0, w.t_end_s - w.hr_window_s), "t_end_s": w.t_end_s}
        probs = w.expression_probs
        row["expression"] = None if probs is None else spec.expression_names[int(np.argmax(probs))]
        for i, n in enumerate(spec.expression_names):
            row[f"expression_prob_{n}"] = float("nan") if probs is None else float(probs[i])
        row.update(
            hr_bpm=_nan(w.hr_bpm), hr_method=hr_method, rmssd_ms=_nan(w.rmssd_ms), lf_hf_ratio=_nan(w.lf_hf_ratio)
        )
        stress = w.stress_probs
        row["stress_level"] = None if stress is None else spec.stress_names[int(np.argmax(stress))]
        for i, n in enumerate(spec.stress_names):
            row[f"stress_prob_{n}"] = float("nan") if stress is None else float(stress[i])
        row.update(
            quality=_nan(w.quality),
            snr_db=_nan(w.snr_db),
            face_fraction=float(w.face_fraction),
            faces_in_view=int(w.faces_in_view),
        )
        rows.append(row)
    columns = [name for name, _ in window_columns(spec)]
    return pd.DataFrame(rows, columns=columns)


def as_source(video: Any, fps: float | None = None) -> FrameSource:
    """A video path, a camera index, an array [T, H, W, 3] uint8 (with `fps`), or an iterator of frames or of
    (t_s, frame) pairs."""
    if isinstance(video, FrameSource):
        return video
    if isinstance(video, (str, Path, int)):
        return open_source(video)
    if isinstance(video, np.ndarray):
        return array_source(video, fps if fps is not None else 0.0)
    if isinstance(video, Iterable):
        return iterable_source(video, fps)
    raise TypeError(
        f"video must be a path, an array [T, H, W, 3] with fps, or an iterator of frames; got {type(video).__name__}"
    )


class StressModel:
    """A trained model ready for raw video (see `load_model`)."""

    def __init__(self, loaded: LoadedModel, backend: Backend = "auto", threads: int | None = None) -> None:
        self.loaded = loaded
        self.spec = loaded.spec
        self.runner = make_runner(loaded, backend, threads)

    @property
    def backend(self) -> str:
        return self.runner.name

    def engine(self, settings: StreamSettings | None = None, keep_windows: bool = False) -> StreamEngine:
        """A fresh stream engine (own face tracker and buffers) sharing this model's runtime."""
        return StreamEngine(self.loaded, settings, runner=self.runner, keep_windows=keep_windows)

    def stream(self, video: Any, fps: float | None = None, settings: StreamSettings | None = None) -> Iterator[dict]:
        """Per-frame records (see `StreamEngine`) of a video, array or iterator."""
        engine = self.engine(settings)
        try:
            yield from engine.run(as_source(video, fps))
        finally:
            engine.close()

    def predict(
        self,
        video: Any,
        fps: float | None = None,
        hr_method: str = DEFAULT_HR_METHOD,
        update_every_s: float = 1.0,
        hr_window_s: float | None = None,
        expression_every: int = 1,
    ) -> pd.DataFrame:
        """One row per window of `video`: `t_start_s`, `t_end_s`, `expression` and `expression_prob_<name>` (mean
        over the window), `hr_bpm`, `hr_method`, `rmssd_ms`, `lf_hf_ratio`, `stress_level`, `stress_prob_<name>`,
        `quality` (0-1), `snr_db`, `face_fraction`, `faces_in_view` (the most faces seen at once in the window).
        A video without any face gives an empty table and a warning; one where several faces were in view, a
        warning that the largest was tracked. `expression_every` > 1 runs the per-frame expression streams on
        every Nth frame only (faster)."""
        settings = StreamSettings(
            hr_method=hr_method,
            update_every_s=update_every_s,
            hr_window_s=hr_window_s,
            expression_every=expression_every,
        )
        source = as_source(video, fps)
        engine = self.engine(settings, keep_windows=True)
        try:
            for _ in engine.run(source):
                pass
        finally:
            engine.close()
        if engine.frames_seen and not engine.frames_with_face:
            warnings.warn(f"{source.name}: no face found in any of its {engine.frames_seen} frames", stacklevel=2)
        elif not engine.frames_seen:
            warnings.warn(f"{source.name}: no frames", stacklevel=2)
        elif not engine.windows:
            warnings.warn(
                f"{source.name}: {engine.grid.emitted / self.spec.fps:.1f} s of video gave no window: stress needs "
                f"{self.spec.window_s:g} s with a face, heart rate {engine.hr_window_s:g} s",
                stacklevel=2,
            )
        if engine.frames_with_several_faces:
            warnings.warn(
                f"{source.name}: up to {engine.max_faces_seen} faces in view (in {engine.frames_with_several_faces} "
                f"of its {engine.frames_seen} frames); the largest face was tracked and the others ignored "
                "(column faces_in_view)",
                stacklevel=2,
            )
        return windows_table(engine.windows, self.spec, hr_method)

    def predict_clips(self, frames: np.ndarray, roi: np.ndarray) -> pd.DataFrame:
        """Preprocessed clips (frames [B, Tf, 3, S, S], roi [B, Tr, 3, R, R], float32 in [0, 1]) -> one row per clip."""
        from stress_lightning.models.outputs import outputs_table

        out = self.runner.full(np.ascontiguousarray(frames, np.float32), np.ascontiguousarray(roi, np.float32))
        return outputs_table(out, self.spec.expression_names, self.spec.stress_names)


def load_model(
    source: str | Path,
    backend: Backend = "auto",
    tracking_uri: str | None = None,
    threads: int | None = None,
) -> StressModel:
    """A model from `models:/name@alias`, `models:/name/version`, `runs:/id/model`, a local MLflow model folder, a
    Lightning checkpoint or an exported ONNX file, ready for `predict(video)`. ONNX Runtime runs it when the model
    carries an ONNX file (`backend="auto"`), PyTorch otherwise."""
    prefer = "torch" if backend == "torch" else "auto"
    return StressModel(resolve_model(source, prefer=prefer, tracking_uri=tracking_uri), backend, threads)
