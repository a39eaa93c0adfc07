"""Reader for the synthetic corpus layout (docs/ARCHITECTURE.md), the same path a real corpus takes."""

from __future__ import annotations

from pathlib import Path

from stress_lightning.data.corpora.base import SPLITS, SessionRecord, read_csv_checked, register_corpus
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.sample import STRESS_NAMES

LABEL_COLUMNS = [
    "session_id",
    "video",
    "ecg",
    "expressions",
    "face_boxes",
    "stress_level",
    "fps",
    "ecg_fs_hz",
    "n_frames",
]


@register_corpus("synthetic")
def read_synthetic(root: Path) -> list[SessionRecord]:
    if not (root / "corpus.json").is_file():
        raise CorpusError(root / "corpus.json", "file is missing: not a synthetic corpus root")
    subjects = read_csv_checked(root / "subjects.csv", ["subject_id", "split"])
    records: list[SessionRecord] = []
    for subject_id, split in zip(subjects["subject_id"].astype(str), subjects["split"], strict=True):
        if split not in SPLITS:
            raise CorpusError(root / "subjects.csv", f"subject {subject_id}: split {split!r} not in {SPLITS}")
        labels_path = root / subject_id / "labels.csv"
        labels = read_csv_checked(labels_path, LABEL_COLUMNS)
        for row in labels.itertuples(index=False):
            session_dir = root / subject_id
            stress = int(row.stress_level)
            if not 0 <= stress < len(STRESS_NAMES):
                raise CorpusError(labels_path, f"session {row.session_id}: stress_level {stress} out of range")
            if not row.fps > 0 or not row.n_frames > 0:
                raise CorpusError(labels_path, f"session {row.session_id}: fps and n_frames must be positive")
            records.append(
                SessionRecord(
                    corpus="synthetic",
                    subject_id=subject_id,
                    session_id=str(row.session_id),
                    split=str(split),
                    video_path=session_dir / str(row.video),
                    fps=float(row.fps),
                    n_frames=int(row.n_frames),
                    ecg_path=session_dir / str(row.ecg),
                    ecg_fs_hz=float(row.ecg_fs_hz),
                    expressions_path=session_dir / str(row.expressions),
                    face_boxes_path=session_dir / str(row.face_boxes),
                    stress=stress,
                )
            )
    if not records:
        raise CorpusError(root / "subjects.csv", "lists no sessions")
    return records
