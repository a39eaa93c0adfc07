"""What a corpus reader returns, and the registry that builds readers by name.

A reader parses a corpus in its official on-disk layout into `SessionRecord`s: one continuous recording of one
subject with paths to its video and ground-truth files. Labels a corpus lacks are left as None; the clip pipeline
turns None into a mask. Adding a corpus is one file in this folder that registers a reader.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from stress_lightning.data.errors import CorpusError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SessionRecord:
    corpus: str
    subject_id: str
    session_id: str
    split: str
    video_path: Path
    fps: float
    n_frames: int
    ecg_path: Path | None = None
    ecg_fs_hz: float | None = None
    expressions_path: Path | None = None
    face_boxes_path: Path | None = None
    stress: int | None = None

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.fps


CorpusReader = Callable[[Path], list[SessionRecord]]
CORPORA: dict[str, CorpusReader] = {}


def register_corpus(name: str) -> Callable[[CorpusReader], CorpusReader]:
    def decorator(reader: CorpusReader) -> CorpusReader:
        if name in CORPORA:
            raise KeyError(f"corpus reader {name!r} is registered twice")
        CORPORA[name] = reader
        return reader

    return decorator


def read_corpus(name: str, root: str | Path) -> list[SessionRecord]:
    # Importing the package registers every reader.
    import stress_lightning.data.corpora  # noqa: F401

    if name not in CORPORA:
        raise KeyError(f"unknown corpus {name!r}; known: {sorted(CORPORA)}")
    return CORPORA[name](Path(root))


def read_csv_checked(path: Path, required: list[str]) -> pd.DataFrame:
    """Read a CSV and fail with the file and the missing columns named."""
    if not path.is_file():
        raise CorpusError(path, "file is missing")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CorpusError(path, f"cannot be parsed as CSV ({exc})") from exc
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise CorpusError(path, f"missing column(s) {missing}; found {list(table.columns)}")
    return table
