"""Pieces several corpus readers share: option checks, fixed actor splits, session folder search, sample cleanup.

Readers import these from here rather than from one another. One older exception remains: the image-folder
helpers (`safe_item_id`, `list_images`, ...) still live in `image_folder.py`, where the image corpora, UBFC-rPPG
and the manifest import them; moving them is left for a later clean-up.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from stress_lightning.data.corpora.base import Corpus, OnError
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.items import ExpressionEvent, ExpressionTimeline
from stress_lightning.data.tables import numeric_column, read_csv_checked

# Which of a pulse oximeter's signals is an item's cardiac ground truth: its waveform or its heart rate.
CardiacChoice = Literal["ppg", "hr"]


# -- options --------------------------------------------------------------------------------------------------
def check_split_fractions(fractions: Sequence[float], corpus: str) -> tuple[float, float, float]:
    """Train, val, test shares: three non-negative numbers summing to 1."""
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or min(values) < 0 or abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"{corpus}: split_fractions must be three non-negative numbers summing to 1, got {values}")
    return values  # type: ignore[return-value]


def check_cardiac_choice(value: str, corpus: str) -> CardiacChoice:
    """An oximeter reader's `cardiac` option: "ppg" or "hr"."""
    if value not in ("ppg", "hr"):
        raise ValueError(
            f"{corpus}: cardiac must be 'ppg' (the oximeter's waveform) or 'hr' (its heart rate), got {value!r}"
        )
    return value  # type: ignore[return-value]


# -- fixed actor splits ---------------------------------------------------------------------------------------
class OximeterCorpus(Corpus):
    """Base of the rPPG corpora that split by subject and carry a pulse oximeter (UBFC-rPPG, PURE): the options
    `split_fractions`, `seed` and `cardiac` ("ppg" or "hr": which oximeter signal is the ground truth)."""

    def __init__(
        self,
        split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
        seed: int = 0,
        cardiac: CardiacChoice = "ppg",
        on_error: OnError = "fail",
    ) -> None:
        super().__init__(on_error)
        self.split_fractions = check_split_fractions(split_fractions, self.name)
        self.seed = int(seed)
        self.cardiac = check_cardiac_choice(cardiac, self.name)

    def options(self) -> dict:
        return {"split_fractions": list(self.split_fractions), "seed": self.seed, "cardiac": self.cardiac}


def actor_number(actor: str | int) -> int:
    try:
        return int(actor)
    except (TypeError, ValueError):
        raise ValueError(f"actor ids are numbers, got {actor!r}") from None


def fixed_actor_splits(
    actors: Iterable[str], split_actors: Mapping[str, Sequence[str | int]], what: str
) -> dict[str, str]:
    """Actor -> split from fixed val/test lists (numbers compared as numbers, so 1 == "01"); the rest is train."""
    split_of: dict[int, str] = {}
    for split, listed in split_actors.items():
        for actor in listed:
            number = actor_number(actor)
            if split_of.get(number, split) != split:
                raise ValueError(f"{what}: actor {actor} is listed in both {split_of[number]} and {split}")
            split_of[number] = split
    return {actor: split_of.get(actor_number(actor), "train") for actor in actors}


def check_split_actors(split_actors: Mapping[str, Sequence[str | int]] | None, what: str) -> dict[str, tuple[int, ...]]:
    """Validated {val: [...], test: [...]} (actor numbers)."""
    if split_actors is None:
        return {}
    if not isinstance(split_actors, Mapping):
        raise ValueError(f"{what}: split_actors must map val/test to lists of actors, got {split_actors!r}")
    unknown = sorted(set(split_actors) - {"val", "test"})
    if unknown:
        raise ValueError(f"{what}: split_actors keys must be val and/or test, got {unknown}")
    result = {split: tuple(actor_number(a) for a in actors) for split, actors in split_actors.items()}
    fixed_actor_splits([], result, what)  # refuses an actor listed twice
    return result


# -- layout and samples ---------------------------------------------------------------------------------------
def session_folders(root: Path, is_session: Callable[[Path], bool], max_depth: int) -> list[Path]:
    """Folders under root (root included, at most `max_depth` levels down) for which `is_session(folder)` holds,
    not descending into them; hidden folders are skipped."""
    found = []
    root_depth = len(root.parts)
    for dirpath, dirnames, _ in os.walk(root):
        folder = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if is_session(folder):
            found.append(folder)
            dirnames[:] = []
        elif len(folder.parts) - root_depth >= max_depth:
            dirnames[:] = []
    return sorted(found)


def strictly_increasing(times_s: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Samples sorted by time, samples sharing a time averaged into one: the beat detectors resample by time and
    need strictly increasing times, and oximeter logs repeat a time when several packets arrive together."""
    times_s, values = np.asarray(times_s, np.float64), np.asarray(values, np.float64)
    if np.all(np.diff(times_s) > 0):
        return times_s, values
    times, inverse, counts = np.unique(times_s, return_inverse=True, return_counts=True)
    return times, np.bincount(inverse, weights=values, minlength=len(times)) / counts


def iter_csv(path: Path, delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    """(line in the file, stripped fields) of every line of a CSV that is not blank, the header included. Unlike
    pandas, a row with more or fewer fields than the header stays one row of its own, so a reader can name it and
    go on with the others (pandas stops at the first such row, or shifts every column by one when it is the first
    data row). Only a file that is not CSV text at all raises, naming the file (and the line)."""
    if not path.is_file():
        raise CorpusError(path, "file is missing")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter, skipinitialspace=True)
        try:
            for fields in reader:
                if any(field.strip() for field in fields):
                    yield reader.line_num, [field.strip() for field in fields]
        except UnicodeDecodeError as exc:
            raise CorpusError(path, f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        except csv.Error as exc:
            raise CorpusError(path, f"line {reader.line_num}: cannot be parsed as CSV ({exc})") from exc


def csv_rows(path: Path, delimiter: str = ",") -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and, per data row, (its line in the file, its stripped fields), by `iter_csv`."""
    rows = iter_csv(path, delimiter)
    first = next(rows, None)
    if first is None:
        raise CorpusError(path, "file is empty (no header row)")
    return first[1], list(rows)


def field_count_problem(fields: Sequence[str], header: Sequence[str]) -> str | None:
    """Why a CSV row does not fit its header (too many or too few fields), or None."""
    if len(fields) == len(header):
        return None
    hint = " (an unquoted comma in a value?)" if len(fields) > len(header) else ""
    count = f"{len(fields)} field" + ("" if len(fields) == 1 else "s")
    return f"has {count} but the header has {len(header)} ({','.join(header)}){hint}"


def is_number(text: str) -> bool:
    """Whether `float(text)` parses (for naming the first bad value of a numeric field)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


# -- label tables (the synthetic corpus' expressions.csv, a manifest's event and segment files) ---------------------
EVENT_COLUMNS: list[str] = ["start_s", "apex_start_s", "apex_end_s", "end_s", "label"]


def label_column(path: Path, table: pd.DataFrame) -> list[str]:
    """The `label` column as stripped strings; an empty label is a problem naming the file and row."""
    labels = [str(v).strip() for v in table["label"].fillna("")]
    empty = [i + 1 for i, label in enumerate(labels) if not label]
    if empty:
        raise CorpusError(path, f"data row {empty[0]} has an empty label")
    return labels


def read_expression_events(path: Path, allow_empty: bool = False) -> ExpressionTimeline:
    """Expression events from a `start_s,apex_start_s,apex_end_s,end_s,label` CSV, labels as written (the
    synthetic corpus and the manifest share the format). `allow_empty`: a file with no event is a session that
    stays neutral throughout, not a problem."""
    table = read_csv_checked(path, EVENT_COLUMNS, dtype={"label": str}, skipinitialspace=True)
    if not len(table):
        if allow_empty:
            return ExpressionTimeline(())
        raise CorpusError(path, "lists no events")
    times = np.stack([numeric_column(path, table, c) for c in EVENT_COLUMNS[:4]], axis=1)
    order = np.diff(times, axis=1) >= 0
    if not order.all():
        row = int(np.flatnonzero(~order.all(axis=1))[0]) + 1
        raise CorpusError(path, f"data row {row}: events need start_s <= apex_start_s <= apex_end_s <= end_s")
    ranked = times[np.argsort(times[:, 0], kind="stable")]
    if (ranked[1:, 0] < ranked[:-1, 3]).any():
        raise CorpusError(path, "events overlap: each moment can belong to one event only")
    events = tuple(
        ExpressionEvent(float(a), float(b), float(c), float(d), label)
        for (a, b, c, d), label in zip(times, label_column(path, table), strict=True)
    )
    return ExpressionTimeline(events)
