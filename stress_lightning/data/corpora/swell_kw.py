"""SWELL-KW (Koldijk et al. 2014): knowledge workers under no stress, interruptions and time pressure; here its
per-minute physiology features, a stress corpus without video for the stress head on its own."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from stress_lightning.data.corpora.base import CORPORA, Corpus, OnError, split_subjects
from stress_lightning.data.corpora.common import check_split_fractions
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.items import Item, PhysiologyRecord, PhysiologySeries, StressSegment, StressSegments

# Column names as the feature file writes them; the block column is `C` in the per-minute feature file and
# `Blok` (Dutch) in some exports of the same table.
SUBJECT, CONDITION, TIMESTAMP = "PP", "Condition", "timestamp"
BLOCK_NAMES: tuple[str, ...] = ("C", "Blok", "block")
VALUE_COLUMNS: tuple[str, ...] = ("HR", "RMSSD", "SCL")
CONDITIONS: tuple[str, ...] = ("N", "I", "T", "R")
TIMESTAMP_LENGTH = 18  # 20120918T131600000: date, T, hour, minute, second, millisecond
WINDOW_S = 60.0


def parse_timestamps(raw: pd.Series) -> pd.Series:
    """`YYYYMMDDTHHMMSSfff` -> datetime; NaT where it cannot be parsed.

    The distributed file lost the trailing zeros of some stamps (`20121001T162` is 16:20:00.000, between 16:19
    and 16:21 of the same block): digits are padded with zeros on the right before parsing.
    """
    text = raw.astype(str).str.strip()
    padded = text.where(text.str.len() >= TIMESTAMP_LENGTH, text.str.ljust(TIMESTAMP_LENGTH, "0"))
    return pd.to_datetime(padded, format="%Y%m%dT%H%M%S%f", errors="coerce")


@CORPORA.register("swell_kw")
class SwellKwCorpus(Corpus):
    """SWELL-KW per-minute physiology: heart rate, RMSSD and skin conductance of 25 participants (PP1-PP25).

    Layout: one CSV in root (`file`, default: the only CSV in root that has the columns) with columns `PP`,
    `C` (block 1-3; `Blok` also accepted), `Condition`, `timestamp` (`20120918T131600000`), `HR` (bpm), `RMSSD`
    (seconds, see `rmssd_unit`), `SCL` (skin conductance level); `missing_value` (999) marks a missing value;
    further columns are ignored.

    Conditions: N no stress, I email interruptions, T time pressure (the three working conditions) and R the
    rest minutes before each block. Stress levels: N -> low, I -> normal, T -> high; R is not one of the three
    levels (None: its minutes carry no stress label, but they are still part of the person's baseline). A run
    changes this with the data module's `stress_label_map` (e.g. `{R: low}`).

    Items: one `PhysiologyRecord` per recording, i.e. a participant's consecutive minutes with no gap longer
    than `gap_s` (the protocol leaves minutes between the rest period and the task and between blocks, so this
    finds the recordings from time alone, without looking at the labels). The stress label is a
    `StressSegments` of one-minute segments. `load_physiology` returns the minutes as a `PhysiologySeries`.

    Splits: by participant: `test_subjects`/`val_subjects` when given (leave-subject-out), else
    `split_subjects` with `split_fractions` and `seed`.

    Bad input: a missing column or an unreadable file is a `CorpusError`; a row with an unknown condition, a
    timestamp that cannot be parsed or a minute that occurs twice for one participant is a problem naming the
    file and line (`on_error`).

    Args:
        file: the CSV's name in root (None: find it).
        gap_s: a longer gap between two minutes of a participant starts a new recording.
        rmssd_unit: "s" (this file) or "ms".
        missing_value: the placeholder of a missing value.
        split_fractions, seed: participant split when no fixed lists are given.
        val_subjects, test_subjects: fixed participant lists (the rest is train).
    """

    name = "swell_kw"
    layout = "one CSV: PP, C, Condition (N/I/T/R), timestamp, HR, RMSSD, SCL per minute (999 = missing)"
    url = "https://doi.org/10.17026/dans-x55-69zp"
    stress_map = {"N": "low", "I": "normal", "T": "high", "R": None}

    def __init__(
        self,
        file: str | None = None,
        gap_s: float = 90.0,
        rmssd_unit: str = "s",
        missing_value: float = 999.0,
        split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
        seed: int = 0,
        val_subjects: Sequence[str] | None = None,
        test_subjects: Sequence[str] | None = None,
        on_error: OnError = "fail",
    ) -> None:
        super().__init__(on_error)
        if rmssd_unit not in ("s", "ms"):
            raise ValueError(f"swell_kw: rmssd_unit must be 's' or 'ms', got {rmssd_unit!r}")
        if gap_s <= WINDOW_S:
            raise ValueError(f"swell_kw: gap_s must exceed the {WINDOW_S:.0f} s window, got {gap_s}")
        fractions = check_split_fractions(split_fractions, "swell_kw")
        overlap = set(val_subjects or ()) & set(test_subjects or ())
        if overlap:
            raise ValueError(f"swell_kw: subjects {sorted(overlap)} are in both val_subjects and test_subjects")
        self.file = file
        self.gap_s = float(gap_s)
        self.rmssd_unit = rmssd_unit
        self.missing_value = float(missing_value)
        self.split_fractions = fractions
        self.seed = int(seed)
        self.val_subjects = [str(s) for s in (val_subjects or ())]
        self.test_subjects = [str(s) for s in (test_subjects or ())]
        self._tables: dict[Path, pd.DataFrame] = {}

    def options(self) -> dict:
        return {
            "file": self.file,
            "gap_s": self.gap_s,
            "rmssd_unit": self.rmssd_unit,
            "missing_value": self.missing_value,
            "split_fractions": list(self.split_fractions),
            "seed": self.seed,
            "val_subjects": self.val_subjects,
            "test_subjects": self.test_subjects,
        }

    # -- reading ------------------------------------------------------------------------------------------
    def find_file(self, root: Path) -> Path:
        if self.file is not None:
            path = root / self.file
            if not path.is_file():
                raise CorpusError(path, "SWELL-KW feature file is missing")
            return path
        candidates = []
        for path in sorted(root.glob("*.csv")):
            try:
                header = pd.read_csv(path, nrows=0).columns
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
                continue
            if {SUBJECT, CONDITION, TIMESTAMP, *VALUE_COLUMNS} <= set(header):
                candidates.append(path)
        if len(candidates) != 1:
            found = [p.name for p in candidates] or "none"
            raise CorpusError(
                root,
                f"expected one CSV with columns {[SUBJECT, CONDITION, TIMESTAMP, *VALUE_COLUMNS]}, found {found} "
                "(set corpus_options.file)",
            )
        return candidates[0]

    def table(self, path: Path) -> pd.DataFrame:
        """The parsed minutes of the file: subject, block, condition, time, values (NaN = missing), its line."""
        if path in self._tables:
            return self._tables[path]
        try:
            raw = pd.read_csv(path, dtype={TIMESTAMP: str, SUBJECT: str, CONDITION: str})
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise CorpusError(path, f"cannot be read as CSV ({exc})") from exc
        block = next((c for c in BLOCK_NAMES if c in raw.columns), None)
        missing = [c for c in (SUBJECT, CONDITION, TIMESTAMP, *VALUE_COLUMNS) if c not in raw.columns]
        if missing or block is None:
            raise CorpusError(
                path, f"missing column(s) {missing or [BLOCK_NAMES[0]]}; found {[str(c) for c in raw.columns]}"
            )
        table = pd.DataFrame(
            {
                "subject": raw[SUBJECT].fillna("").astype(str).str.strip(),  # an empty cell is "", reported
                "block": raw[block].astype(str).str.strip(),
                "condition": raw[CONDITION].astype(str).str.strip(),
                "time": parse_timestamps(raw[TIMESTAMP]),
                "line": np.arange(len(raw)) + 2,  # 1-based, after the header
            }
        )
        for column in VALUE_COLUMNS:
            values = pd.to_numeric(raw[column], errors="coerce").astype(np.float64)
            table[column] = values.where(values != self.missing_value)
        if self.rmssd_unit == "s":
            table["RMSSD"] = table["RMSSD"] * 1000.0
        self._tables[path] = table
        return table

    def read(self, root: Path) -> list[Item]:
        path = self.find_file(root)
        table = self.table(path)
        good = np.ones(len(table), dtype=bool)
        for i in np.flatnonzero((table["subject"] == "").to_numpy()):
            self.report(path, f"line {table['line'].iat[i]}: no participant ({SUBJECT}) given")
            good[i] = False
        for i in np.flatnonzero(~table["condition"].isin(CONDITIONS).to_numpy() & good):
            self.report(path, f"line {table['line'].iat[i]}: unknown condition {table['condition'].iat[i]!r}")
            good[i] = False
        for i in np.flatnonzero(table["time"].isna().to_numpy() & good):
            self.report(path, f"line {table['line'].iat[i]}: timestamp cannot be parsed")
            good[i] = False
        duplicated = table.duplicated(["subject", "time"], keep="first").to_numpy() & good
        for i in np.flatnonzero(duplicated):
            self.report(path, f"line {table['line'].iat[i]}: {table['subject'].iat[i]} has this minute twice")
            good[i] = False
        table = table[good].sort_values(["subject", "time"], kind="stable")
        self._tables[path] = table

        subjects = sorted(table["subject"].unique(), key=_natural)
        unknown = sorted(set(self.val_subjects + self.test_subjects) - set(subjects))
        if unknown:
            raise CorpusError(path, f"val/test subjects {unknown} are not in the file (has {subjects})")
        if self.val_subjects or self.test_subjects:
            assign = {
                s: "val" if s in self.val_subjects else "test" if s in self.test_subjects else "train" for s in subjects
            }
        else:
            assign = split_subjects(subjects, self.split_fractions, self.seed)

        items = []
        for subject, rows in table.groupby("subject", sort=False):
            times = rows["time"]
            gaps = times.diff().dt.total_seconds().to_numpy()
            starts = np.flatnonzero(np.concatenate([[True], gaps[1:] > self.gap_s]))
            bounds = [*starts.tolist(), len(rows)]
            for a, b in zip(bounds[:-1], bounds[1:], strict=True):
                record = rows.iloc[a:b]
                start = record["time"].iat[0]
                items.append(
                    Item(
                        item_id=f"{subject}/{start:%Y%m%dT%H%M}",
                        subject_id=str(subject),
                        split=assign[subject],
                        media=PhysiologyRecord(path, f"{subject}/{start.isoformat()}"),
                        stress=_segments(record),
                        attributes={"block": str(record["block"].iat[0])},
                    )
                )
        return items

    # -- loading ------------------------------------------------------------------------------------------
    def record_rows(self, item: Item) -> pd.DataFrame:
        media = item.media
        if not isinstance(media, PhysiologyRecord):
            raise TypeError(f"item {item.item_id} is not a SWELL-KW record")
        table = self.table(media.source)
        subject, start = media.key.rsplit("/", 1)  # from the right: a participant id may hold a "/"
        rows = table[table["subject"] == subject].sort_values("time")
        rows = rows[rows["time"] >= pd.Timestamp(start)]
        gaps = rows["time"].diff().dt.total_seconds().to_numpy()
        end = np.flatnonzero(gaps[1:] > self.gap_s)
        if len(rows) == 0 or rows["time"].iat[0] != pd.Timestamp(start):
            raise CorpusError(media.source, f"record {media.key} is no longer in the file")
        return rows.iloc[: (end[0] + 1) if len(end) else len(rows)]

    def load_physiology(self, item: Item) -> PhysiologySeries:
        rows = self.record_rows(item)
        t = (rows["time"] - rows["time"].iat[0]).dt.total_seconds().to_numpy(np.float64)
        return PhysiologySeries(
            times_s=t,
            window_s=WINDOW_S,
            hr_bpm=rows["HR"].to_numpy(np.float64),
            rmssd_ms=rows["RMSSD"].to_numpy(np.float64),
            eda=rows["SCL"].to_numpy(np.float64),
            source=item.media.source,  # type: ignore[union-attr]
        )


def _segments(record: pd.DataFrame) -> StressSegments:
    """One-minute segments, consecutive minutes of one condition merged."""
    t = (record["time"] - record["time"].iat[0]).dt.total_seconds().to_numpy(np.float64)
    segments: list[StressSegment] = []
    for time_s, condition in zip(t, record["condition"], strict=True):
        last = segments[-1] if segments else None
        if last is not None and last.label == condition and abs(last.end_s - time_s) < 1e-6:
            segments[-1] = StressSegment(last.start_s, float(time_s) + WINDOW_S, condition)
        else:
            segments.append(StressSegment(float(time_s), float(time_s) + WINDOW_S, condition))
    return StressSegments(tuple(segments))


def _natural(name: str) -> tuple[str, int]:
    digits = "".join(c for c in name if c in "0123456789")  # not isdigit(): int('²') fails
    return (name.rstrip("0123456789"), int(digits) if digits else -1)
