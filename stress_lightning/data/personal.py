"""Personal baselines: physiology read against the same person's own values.

Stress shows as a change from a person's usual state more than as an absolute heart rate: on SWELL-KW a
leave-subject-out classifier on per-minute HR and RMSSD is at chance (macro-F1 ~0.30), and z-scoring each
person against their own minutes lifts it to ~0.42 (../shared/ROADMAP.md, "Personal baselines"). Two things here:

- `SubjectBaseline`: each feature's distribution over all of a person's windows (sorted values, median,
  IQR / 1.349). It uses no labels, only the person's own recordings (at deployment: their history or a
  calibration). `standardise` puts a value on that person's scale: by rank (default) or as a robust z-score.
  Median/IQR and ranks rather than mean/std because a few minutes of artefact (a loose electrode) would move a
  mean and a standard deviation a long way.
- `personal_features`: each window twice: as a level (averaged causally from the start of the recording, or
  over `history_s`; or over the whole recording for offline scoring) and as its own value. One minute's HR and
  RMSSD are noisy; the level over the recording is the stable signal, the current minute its latest change.
  Measured on SWELL-KW while designing this (leave-subject-out, minutes with HR and RMSSD, random forest on
  robust z): per-minute ~0.44 macro-F1, a causal 10-15 min window ~0.57, level since the recording began ~0.58,
  level + current minute ~0.60. The package's own stress head: benchmarks/results/swell_kw.md.

Features (`PERSONAL_FEATURES`): heart rate, log RMSSD, log skin conductance, as level then current. Logs because
RMSSD and skin conductance are skewed and multiplicative across people (ranks do not care; z-scores do). A
missing value (NaN) is left out of the averages; a feature with no value (yet) is masked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

from stress_lightning.data.items import PhysiologySeries

BASE_FEATURES: Final[tuple[str, ...]] = ("hr", "log_rmssd", "log_eda")
PERSONAL_FEATURES: Final[tuple[str, ...]] = tuple(
    f"{name}_{kind}" for kind in ("level", "now") for name in BASE_FEATURES
)
# Robust spread floor per feature: a person whose values barely vary (or with 2-3 valid minutes) must not get
# z-scores of 50. About a tenth of the typical between-minute spread of each feature.
MIN_SPREAD: Final[np.ndarray] = np.array([0.5, 0.02, 0.01])
# IQR of a normal distribution in standard deviations: IQR / 1.349 estimates the standard deviation.
IQR_TO_STD: Final[float] = 1.349
# A uniform variable on [-0.5, 0.5] has variance 1/12: ranks scaled by sqrt(12) have unit variance.
RANK_TO_UNIT_VARIANCE: Final[float] = float(np.sqrt(12.0))
Scale = Literal["rank", "robust_z"]
Context = Literal["causal", "recording"]


def feature_matrix(series: PhysiologySeries) -> np.ndarray:
    """[N, 3] heart rate, log RMSSD, log EDA of each window; NaN where missing or not positive."""
    with np.errstate(divide="ignore", invalid="ignore"):
        rmssd = np.where(series.rmssd_ms > 0, np.log(series.rmssd_ms), np.nan)
        eda = np.where(series.eda > 0, np.log(series.eda), np.nan)
    hr = np.where(series.hr_bpm > 0, series.hr_bpm, np.nan)
    return np.stack([hr, rmssd, eda], axis=1).astype(np.float64)


@dataclass(frozen=True)
class SubjectBaseline:
    """One person's values of each feature: centre and robust spread (NaN: the person has no value of that
    feature), and the sorted values themselves for the rank scale."""

    centre: np.ndarray
    spread: np.ndarray
    sorted_values: tuple[np.ndarray, ...] = ()

    @classmethod
    def from_series(cls, series: Sequence[PhysiologySeries]) -> SubjectBaseline:
        values = np.concatenate([feature_matrix(s) for s in series]) if series else np.empty((0, 3))
        centre = np.full(3, np.nan)
        spread = np.full(3, np.nan)
        kept = []
        for k in range(3):
            v = values[:, k]
            v = np.sort(v[np.isfinite(v)])
            kept.append(v)
            if len(v) == 0:
                continue
            q25, q50, q75 = np.percentile(v, [25, 50, 75])
            centre[k] = q50
            spread[k] = max((q75 - q25) / IQR_TO_STD, MIN_SPREAD[k])
        return cls(centre, spread, tuple(kept))

    def standardise(self, values: np.ndarray, scale: Scale = "rank") -> np.ndarray:
        """[N, 3] values -> [N, 3] on the person's own scale (NaN stays NaN).

        "robust_z": (value - median) / (IQR / 1.349). "rank": the value's mid-rank among the person's own values,
        centred and scaled to unit variance ((rank - 0.5) * sqrt(12)); bounded, and the same distribution for
        everyone, which a small MLP learns from better than z-scores with heavy tails (SWELL-KW, leave-subject-
        out, the stress head alone, causal level: macro-F1 0.54 -> 0.58 on the minutes with HR and RMSSD).
        """
        if scale == "robust_z":
            return (values - self.centre) / self.spread
        if scale != "rank":
            raise ValueError(f"scale must be 'rank' or 'robust_z', got {scale!r}")
        out = np.full(values.shape, np.nan)
        for k, reference in enumerate(self.sorted_values):
            present = np.isfinite(values[:, k])
            if len(reference) == 0 or not present.any():
                continue
            v = values[present, k]
            mid_rank = (np.searchsorted(reference, v, "left") + np.searchsorted(reference, v, "right")) / 2.0
            out[present, k] = (mid_rank / len(reference) - 0.5) * RANK_TO_UNIT_VARIANCE
        return out


def subject_baselines(series: Sequence[PhysiologySeries], subjects: Sequence[str]) -> dict[str, SubjectBaseline]:
    """One baseline per subject over all of that subject's records."""
    by_subject: dict[str, list[PhysiologySeries]] = {}
    for s, subject in zip(series, subjects, strict=True):
        by_subject.setdefault(subject, []).append(s)
    return {subject: SubjectBaseline.from_series(records) for subject, records in by_subject.items()}


def personal_features(
    series: PhysiologySeries,
    baseline: SubjectBaseline,
    history_s: float | None = None,
    scale: Scale = "rank",
    context: Context = "causal",
) -> tuple[np.ndarray, np.ndarray]:
    """Each window's values on the person's own scale (`SubjectBaseline.standardise`), as a level and as is.

    Args:
        series: one record.
        baseline: the person's baseline.
        history_s: causal level: average over the windows that start within this many seconds before (and
            including) the current one; None averages from the start of the record.
        scale: "rank" or "robust_z" (see `SubjectBaseline.standardise`).
        context: "causal" (the level uses only windows up to the current one: what a live stream can do) or
            "recording" (the level is the whole record's mean, the same for all its windows: scoring recorded
            sessions offline; no labels are used either way).

    Returns:
        values [N, 6] (0 where masked) and mask [N, 6]: the level (True where at least one value was averaged),
        then the window's own value (True where it has one), in `PERSONAL_FEATURES` order.
    """
    if context not in ("causal", "recording"):
        raise ValueError(f"context must be 'causal' or 'recording', got {context!r}")
    z = baseline.standardise(feature_matrix(series), scale)
    present = np.isfinite(z)
    z = np.where(present, z, 0.0)
    t = np.asarray(series.times_s, dtype=np.float64)
    if context == "recording":
        sums = np.broadcast_to(z.sum(axis=0), z.shape)
        counts = np.broadcast_to(present.sum(axis=0), z.shape)
    elif history_s is None:
        sums = np.cumsum(z, axis=0)
        counts = np.cumsum(present, axis=0)
    else:
        # Window (t_i - history_s, t_i]: first index inside it, then differences of cumulative sums.
        first = np.searchsorted(t, t - float(history_s) + 1e-9, side="left")
        csum = np.concatenate([np.zeros((1, 3)), np.cumsum(z, axis=0)])
        ccount = np.concatenate([np.zeros((1, 3)), np.cumsum(present, axis=0)])
        idx = np.arange(len(t)) + 1
        sums = csum[idx] - csum[first]
        counts = ccount[idx] - ccount[first]
    mask = counts > 0
    level = np.where(mask, sums / np.maximum(counts, 1), 0.0)
    values = np.concatenate([level, z], axis=1)
    return values.astype(np.float32), np.concatenate([mask, present], axis=1)
