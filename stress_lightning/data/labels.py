"""Ground truth per session: heart rate and HRV from the ECG's R-peaks, expression events over time."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stress_lightning.data.corpora.base import SessionRecord, read_csv_checked
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.sample import EXPRESSION_NAMES
from stress_lightning.signals import SignalError
from stress_lightning.signals.ecg import detect_r_peaks
from stress_lightning.signals.hrv import frequency_domain, time_domain


def load_ecg(path: Path, fs_hz: float, min_duration_s: float) -> np.ndarray:
    """ECG samples from a `time_s,ecg_mv` CSV, checked against the sampling rate and the video length."""
    table = read_csv_checked(path, ["time_s", "ecg_mv"])
    ecg = table["ecg_mv"].to_numpy(np.float64)
    if len(ecg) < 2:
        raise CorpusError(path, "has fewer than 2 samples")
    if not np.isfinite(ecg).all():
        raise CorpusError(path, f"column ecg_mv has {int((~np.isfinite(ecg)).sum())} non-finite values")
    duration_s = len(ecg) / fs_hz
    if duration_s + 1.0 / fs_hz < min_duration_s:
        raise CorpusError(
            path,
            f"ECG lasts {duration_s:.2f} s but its video lasts {min_duration_s:.2f} s: it must cover the video",
        )
    return ecg


@dataclass(frozen=True)
class CardiacTruth:
    """R-peak times of a session and the session-level HRV, from the ECG."""

    r_peak_times_s: np.ndarray
    rmssd_ms: float | None
    lf_hf_ratio: float | None

    def hr_bpm(self, t0_s: float, t1_s: float) -> float | None:
        """Mean heart rate over the R-R intervals that lie inside [t0, t1]; None with fewer than two beats."""
        inside = self.r_peak_times_s[(self.r_peak_times_s >= t0_s) & (self.r_peak_times_s <= t1_s)]
        if len(inside) < 3:
            return None
        return float(60.0 * (len(inside) - 1) / (inside[-1] - inside[0]))


def cardiac_truth(record: SessionRecord) -> CardiacTruth | None:
    if record.ecg_path is None or record.ecg_fs_hz is None:
        return None
    ecg = load_ecg(record.ecg_path, record.ecg_fs_hz, record.duration_s)
    try:
        peaks = detect_r_peaks(ecg, record.ecg_fs_hz)
    except SignalError as exc:
        raise CorpusError(record.ecg_path, f"R-peak detection failed: {exc}") from exc
    rr_ms = np.diff(peaks) / record.ecg_fs_hz * 1000.0
    try:
        rmssd = float(time_domain(rr_ms)["rmssd_ms"])
        lf_hf = float(frequency_domain(rr_ms)["lf_hf_ratio"])
    except SignalError:
        # Too few beats for HRV over this session: the sample keeps heart rate and masks HRV.
        rmssd, lf_hf = None, None
    return CardiacTruth(peaks / record.ecg_fs_hz, rmssd, lf_hf)


@dataclass(frozen=True)
class ExpressionTimeline:
    """Expression events with onset, apex and offset; time outside every event is neutral."""

    apex_start_s: np.ndarray
    apex_end_s: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    labels: np.ndarray  # class indices into EXPRESSION_NAMES

    def label_at(self, t_s: float) -> int | None:
        """Class at time t: the event's class during its apex, neutral outside events, None during onset/offset
        (the face is between two expressions there, so the label is left out rather than guessed)."""
        active = np.flatnonzero((self.start_s <= t_s) & (t_s < self.end_s))
        if len(active) == 0:
            return EXPRESSION_NAMES.index("neutral")
        i = active[0]
        if self.apex_start_s[i] <= t_s <= self.apex_end_s[i]:
            return int(self.labels[i])
        return None


def expression_timeline(path: Path) -> ExpressionTimeline:
    table = read_csv_checked(path, ["start_s", "apex_start_s", "apex_end_s", "end_s", "label"])
    unknown = sorted(set(table["label"]) - set(EXPRESSION_NAMES))
    if unknown:
        raise CorpusError(path, f"unknown expression label(s) {unknown}; known: {list(EXPRESSION_NAMES)}")
    times = table[["start_s", "apex_start_s", "apex_end_s", "end_s"]].to_numpy(np.float64)
    if len(times) and not (np.diff(times, axis=1) >= 0).all():
        raise CorpusError(path, "each event needs start_s <= apex_start_s <= apex_end_s <= end_s")
    labels = np.array([EXPRESSION_NAMES.index(x) for x in table["label"]], dtype=np.int64)
    return ExpressionTimeline(times[:, 1], times[:, 2], times[:, 0], times[:, 3], labels)
