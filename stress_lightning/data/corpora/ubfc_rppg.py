"""UBFC-rPPG (Bobbia et al. 2017): face videos with a contact pulse oximeter's PPG, 42 + 8 subjects at rest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stress_lightning.data.corpora.base import CORPORA, read_csv_checked, split_subjects
from stress_lightning.data.corpora.common import (
    OximeterCorpus,
    is_number,
    session_folders,
    strictly_increasing,
)
from stress_lightning.data.corpora.image_folder import safe_item_id
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.items import CardiacRef, CardiacSignal, Item, VideoFile

# DATASET_2 (the 42-subject benchmark) ships `ground_truth.txt`; DATASET_1 (the earlier, smaller set) ships
# `gtdump.xmp`. The release's readme describes both.
GT_DATASET_2 = "ground_truth.txt"
GT_DATASET_1 = "gtdump.xmp"
# gtdump.xmp columns (no header): time (ms), heart rate (bpm), SpO2 (%), PPG.
XMP_COLUMNS = 4
XMP_TIME, XMP_HR, XMP_PPG = 0, 1, 3
# Folders are searched this deep under root: root may be DATASET_2 itself, hold DATASET_1/ and DATASET_2/, or
# one more level (an archive unpacked into a folder of its own name).
MAX_DEPTH = 3


@dataclass(frozen=True)
class UbfcGroundTruth:
    """One session's oximeter record: PPG and heart rate (bpm) per sample, sample times in seconds as written."""

    ppg: np.ndarray
    hr_bpm: np.ndarray
    times_s: np.ndarray


def read_ubfc_ground_truth(path: Path) -> UbfcGroundTruth:
    """A `ground_truth.txt` (DATASET_2) or `gtdump.xmp` (DATASET_1); a malformed file raises CorpusError."""
    if not path.is_file():
        raise CorpusError(path, "ground truth file is missing")
    if path.name.lower() == GT_DATASET_1:
        return _read_gtdump(path)
    return _read_ground_truth_txt(path)


def _read_ground_truth_txt(path: Path) -> UbfcGroundTruth:
    # Three lines of space-separated numbers in scientific notation (runs of spaces between them): PPG, heart
    # rate, time in seconds. Lines are parsed one by one so that an error names the line and the value.
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    if len(lines) != 3:
        raise CorpusError(path, f"has {len(lines)} non-empty lines; expected 3 (PPG, heart rate, time in seconds)")
    names = ("PPG", "heart rate", "time")
    rows = []
    for number, (name, line) in enumerate(zip(names, lines, strict=True), start=1):
        tokens = line.split()
        try:
            values = np.asarray(tokens, dtype=np.float64)
        except ValueError:
            bad = next(i for i, t in enumerate(tokens) if not is_number(t))
            raise CorpusError(
                path, f"line {number} ({name}): value {bad + 1} {tokens[bad][:30]!r} is not a number"
            ) from None
        if not np.isfinite(values).all():
            raise CorpusError(path, f"line {number} ({name}): {int((~np.isfinite(values)).sum())} non-finite values")
        rows.append(values)
    lengths = [len(r) for r in rows]
    if len(set(lengths)) != 1:
        raise CorpusError(
            path, f"lines have unequal lengths: PPG {lengths[0]}, heart rate {lengths[1]}, time {lengths[2]} values"
        )
    return _checked(path, UbfcGroundTruth(ppg=rows[0], hr_bpm=rows[1], times_s=rows[2]))


def _read_gtdump(path: Path) -> UbfcGroundTruth:
    table = read_csv_checked(path, [], header=None, dtype=str, keep_default_na=False, skipinitialspace=True)
    if table.shape[1] < XMP_COLUMNS:
        raise CorpusError(
            path, f"has {table.shape[1]} columns; expected {XMP_COLUMNS} (time ms, heart rate, SpO2, PPG), no header"
        )
    columns = {}
    for index, name in ((XMP_TIME, "time"), (XMP_HR, "heart rate"), (XMP_PPG, "PPG")):
        raw = table[index].str.strip()
        values = pd.to_numeric(raw, errors="coerce").to_numpy(np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise CorpusError(
                path, f"row {bad[0] + 1}, column {index + 1} ({name}): {raw.iloc[bad[0]][:30]!r} is not a number"
            )
        columns[name] = values
    return _checked(
        path, UbfcGroundTruth(ppg=columns["PPG"], hr_bpm=columns["heart rate"], times_s=columns["time"] / 1e3)
    )


def _checked(path: Path, gt: UbfcGroundTruth) -> UbfcGroundTruth:
    if len(gt.times_s) < 2:
        raise CorpusError(path, f"has {len(gt.times_s)} samples; need at least 2")
    steps = np.diff(gt.times_s)
    if (steps < 0).any():
        at = int(np.flatnonzero(steps < 0)[0]) + 1
        raise CorpusError(
            path, f"time goes backwards at sample {at + 1} ({gt.times_s[at - 1]:g} -> {gt.times_s[at]:g})"
        )
    return gt


@CORPORA.register("ubfc_rppg")
class UbfcRppgCorpus(OximeterCorpus):
    """UBFC-rPPG: one video per session with the PPG of a finger pulse oximeter (CMS50E) recorded alongside.

    Layout (the release's two parts; root may be a part's folder itself or hold `DATASET_1/` and `DATASET_2/`,
    each folder is recognised by its files):
    - DATASET_2: `subjectN/vid.avi` + `subjectN/ground_truth.txt`: three lines of space-separated numbers in
      scientific notation: the PPG signal, the oximeter's heart rate (bpm) and the sample times (s).
    - DATASET_1: `<name>/vid*.avi` (`vid.avi`, `vid-12.avi`, ...) + `<name>/gtdump.xmp`, folders such as `10-gt`
      or `after-exercise`: a CSV without header, one row per sample: time (ms), heart rate, SpO2, PPG.

    Videos: 640x480 AVI (XVID or raw), ~30 fps; frame times come from the container.

    Cardiac ground truth (`cardiac`): "ppg" (default) the oximeter waveform as kind "ppg", or "hr" its heart-rate
    readings as kind "hr"; per-sample times from the file. The release states that the record starts with the
    video, so the first ground-truth sample is at the first frame (offset 0): times are taken relative to the
    file's first sample (DATASET_2 times start at 0; where a file's first time is not 0 it is not read as a
    delay). Samples sharing a time are averaged.

    Labels: no expression and no stress labels (the subjects sit at rest; `before-exercise`/`after-exercise` in
    DATASET_1 differ in heart rate only).

    Splits: subject-disjoint (`split_subjects`), `split_fractions` with `seed`. Subjects: DATASET_2's `subjectN`;
    DATASET_1's folders as `DATASET_1/<name without -gt>`, with `before-exercise` and `after-exercise` as one
    subject (presumably one person before and after exercise: kept on one side of the split). DATASET_1 is not
    known to share people with DATASET_2.

    Problems (by file): a folder with ground truth but no video, a video without ground truth, a ground-truth
    file that is not three numeric lines of equal length (or not a 4-column numeric CSV), time going
    backwards; `check` finds a truncated video and ground truth shorter than the video.

    Args:
        split_fractions: train, val, test shares of the subjects.
        seed: seed of the split.
        cardiac: "ppg" or "hr", which of the oximeter's signals is the item's cardiac ground truth.
    """

    name = "ubfc_rppg"
    layout = "subjectN/vid.avi + subjectN/ground_truth.txt (DATASET_2); <name>/vid.avi + <name>/gtdump.xmp (DATASET_1)"
    url = "https://sites.google.com/view/ybenezeth/ubfcrppg"

    def read(self, root: Path) -> list[Item]:
        folders = session_folders(root, _is_session, MAX_DEPTH)
        if not folders:
            raise CorpusError(
                root, f"no UBFC-rPPG session found (folders with vid.avi and {GT_DATASET_2} or {GT_DATASET_1})"
            )
        pending: list[tuple[str, str, Path, Path, str]] = []  # (item id, subject, video, ground truth, part)
        for folder in folders:
            entry = self._session(root, folder)
            if entry is not None:
                pending.append(entry)
        assign = split_subjects([subject for _, subject, _, _, _ in pending], self.split_fractions, self.seed)
        return [
            Item(
                item_id=item_id,
                subject_id=subject,
                split=assign[subject],
                media=VideoFile(video),
                cardiac=CardiacRef(self.cardiac, gt, offset_s=0.0),
                attributes={"part": part},
            )
            for item_id, subject, video, gt, part in pending
        ]

    def _session(self, root: Path, folder: Path) -> tuple[str, str, Path, Path, str] | None:
        gt = next((folder / n for n in (GT_DATASET_2, GT_DATASET_1) if (folder / n).is_file()), None)
        videos = _videos(folder)
        if gt is None:
            expected = GT_DATASET_1 if "dataset_1" in (p.lower() for p in folder.parts) else GT_DATASET_2
            self.report(
                folder / expected,
                f"ground truth file is missing (the folder has {videos[0].name} but no {GT_DATASET_2} "
                f"or {GT_DATASET_1})",
            )
            return None
        if not videos:
            self.report(folder / "vid.avi", f"video is missing (the folder has {gt.name} but no vid*.avi)")
            return None
        video = folder / "vid.avi" if (folder / "vid.avi").is_file() else videos[0]
        if len(videos) > 1 and video.name != "vid.avi":
            self.report(folder, f"holds {len(videos)} videos {[v.name for v in videos]}; expected one vid*.avi")
            return None
        try:
            read_ubfc_ground_truth(gt)
        except CorpusError as exc:
            self.report(exc.path, exc.problem)
            return None
        rel = folder.relative_to(root).as_posix() if folder != root else folder.name
        if gt.name == GT_DATASET_1:
            name = folder.name.lower().removesuffix("-gt")
            subject = "DATASET_1/" + ("exercise" if name.endswith("exercise") else name)
            part = "DATASET_1"
        else:
            subject, part = folder.name, "DATASET_2"
        return safe_item_id(rel), safe_item_id(subject), video, gt, part

    def load_cardiac(self, item: Item) -> CardiacSignal | None:
        ref = item.cardiac
        if ref is None:
            return None
        gt = read_ubfc_ground_truth(ref.path)
        values = gt.hr_bpm if ref.kind == "hr" else gt.ppg
        times, values = strictly_increasing(gt.times_s - gt.times_s[0] - ref.offset_s, values)
        return CardiacSignal(ref.kind, values, times_s=times, source=ref.path)


def _videos(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".avi" and p.name.lower().startswith("vid")
    )


def _is_session(folder: Path) -> bool:
    return (folder / GT_DATASET_2).is_file() or (folder / GT_DATASET_1).is_file() or bool(_videos(folder))
