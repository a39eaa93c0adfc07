"""AffectNet (manually annotated part): in-the-wild face images with 8 expressions, valence and arousal."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from stress_lightning.data.corpora.base import CORPORA, Corpus, OnError
from stress_lightning.data.corpora.common import field_count_problem, iter_csv
from stress_lightning.data.corpora.image_folder import carve, check_fraction, safe_item_id
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.items import ClassLabel, ImageFile, Item

AFFECTNET_COLUMNS: tuple[str, ...] = (
    "subDirectory_filePath",
    "face_x",
    "face_y",
    "face_width",
    "face_height",
    "facial_landmarks",
    "expression",
    "valence",
    "arousal",
)
# expression code -> original label name (AffectNet paper, Table 2).
AFFECTNET_LABELS: tuple[str, ...] = (
    "neutral",
    "happy",
    "sad",
    "surprise",
    "fear",
    "disgust",
    "anger",
    "contempt",
    "none",
    "uncertain",
    "non-face",
)
# The official file lists (Manually_Annotated_file_lists.zip) and images (Manually_Annotated.part*.rar); the
# CSVs are accepted in root itself too.
LIST_FOLDERS: tuple[str, ...] = (".", "Manually_Annotated_file_lists")
IMAGE_FOLDERS: tuple[str, ...] = ("Manually_Annotated_Images", "Manually_Annotated/Manually_Annotated_Images")
# Official list -> split it feeds (the official validation set is the test set; val is carved from training).
LISTS: dict[str, str] = {"training.csv": "train", "validation.csv": "test"}


@CORPORA.register("affectnet")
class AffectNetCorpus(Corpus):
    """AffectNet, manually annotated images, each image its own subject (the corpus has no subject ids).

    Layout: `training.csv` and `validation.csv` (in root or in `Manually_Annotated_file_lists/`) and
    `Manually_Annotated_Images/<subDirectory_filePath>`. The official validation.csv has no header row; both
    with and without one are read. Images are not decoded here; a listed image that is not a file is a problem.

    Labels: expression 0 neutral, 1 happy, 2 sad, 3 surprise, 4 fear, 5 disgust, 6 anger, 7 contempt; 8 none,
    9 uncertain and 10 non-face map to no class (kept as items, dropped by the run and counted as unmapped under
    those names). Contempt is the canonical "contempt": a 7-class run drops it, a run whose expression_classes
    include contempt (the 8-class mode) keeps it. Any other code is a problem naming the CSV and row.
    The shipped face box goes into `ImageFile.face_box` as (x0, y0, x1, y1); valence and arousal (-1..1, -2 where
    not annotated) go into `attributes` as strings.

    Splits: the official validation set -> test; val is carved from training, `val_fraction` of its images
    (deterministic for a given `seed`, independent of which image files are present).

    Args:
        val_fraction: share of the training images carved out as val.
        seed: seed of the carving.
    """

    name = "affectnet"
    layout = (
        "training.csv, validation.csv (or Manually_Annotated_file_lists/...) and "
        "Manually_Annotated_Images/<subDirectory_filePath>"
    )
    url = "http://mohammadmahoor.com/affectnet/"
    expression_map = {
        "neutral": "neutral",
        "happy": "happy",
        "sad": "sad",
        "surprise": "surprise",
        "fear": "fear",
        "disgust": "disgust",
        "anger": "angry",
        "contempt": "contempt",
        "none": None,
        "uncertain": None,
        "non-face": None,
    }

    def __init__(self, val_fraction: float = 0.05, seed: int = 0, on_error: OnError = "fail") -> None:
        super().__init__(on_error)
        self.val_fraction = check_fraction("val_fraction", val_fraction)
        self.seed = int(seed)

    def options(self) -> dict:
        return {"val_fraction": self.val_fraction, "seed": self.seed}

    def read(self, root: Path) -> list[Item]:
        images = next((root / f for f in IMAGE_FOLDERS if (root / f).is_dir()), None)
        if images is None:
            raise CorpusError(root / IMAGE_FOLDERS[0], "image folder is missing")
        tables: dict[str, tuple[Path, pd.DataFrame, int, dict[int, str]]] = {}
        for name in LISTS:
            path = next((root / f / name for f in LIST_FOLDERS if (root / f / name).is_file()), root / name)
            try:
                tables[name] = (path, *read_list(path))
            except CorpusError as exc:
                self.report(exc.path, exc.problem)
        if not tables:
            raise CorpusError(root, "neither training.csv nor validation.csv could be read")
        carved: dict[str, str] = {}
        if "training.csv" in tables:
            carved = carve(tables["training.csv"][1]["subDirectory_filePath"], self.val_fraction, 0.0, self.seed)
        items: list[Item] = []
        seen: set[str] = set()
        for name, (path, table, header_lines, misshapen) in tables.items():
            n_before = len(items)
            columns = [table[c].tolist() for c in AFFECTNET_COLUMNS if c != "facial_landmarks"]
            for row, (rel, x, y, w, h, code, valence, arousal) in enumerate(zip(*columns, strict=True)):
                if row in misshapen:  # its values are not in their columns
                    self.report(path, f"{row_name(row, header_lines)}: {misshapen[row]}")
                    continue
                if not code.isdecimal() or int(code) >= len(AFFECTNET_LABELS):  # not isdigit(): int('²') fails
                    self.report(path, f"{row_name(row, header_lines)}: unknown expression code {code!r}; known 0-10")
                    continue
                try:
                    x0, y0, width, height = (float(v) for v in (x, y, w, h))
                except ValueError:
                    self.report(path, f"{row_name(row, header_lines)}: face box {[x, y, w, h]} is not numeric")
                    continue
                if not (width > 0 and height > 0 and math.isfinite(x0 + y0 + width + height)):
                    self.report(path, f"{row_name(row, header_lines)}: face box has no area ({width} x {height})")
                    continue
                item_id = safe_item_id(rel)
                if item_id in seen:
                    self.report(path, f"{row_name(row, header_lines)}: image {rel} is listed twice")
                    continue
                image = images / rel
                if not image.is_file():
                    self.report(image, "image file is missing")
                    continue
                seen.add(item_id)
                items.append(
                    Item(
                        item_id=item_id,
                        subject_id=item_id,
                        split=carved.get(rel, "train") if LISTS[name] == "train" else LISTS[name],
                        media=ImageFile(image, face_box=(x0, y0, x0 + width, y0 + height)),
                        expression=ClassLabel(AFFECTNET_LABELS[int(code)]),
                        attributes={"valence": valence, "arousal": arousal},
                    )
                )
            if len(items) == n_before:
                self.report(path, f"lists no usable image (the {LISTS[name]} split is empty)")
        return items


def row_name(row: int, header_lines: int) -> str:
    """A data row (0-based) with its line in the file."""
    return f"row {row} (line {row + 1 + header_lines})"


def read_list(path: Path) -> tuple[pd.DataFrame, int, dict[int, str]]:
    """An AffectNet file list, with or without its header row (validation.csv ships without one): every value a
    stripped string (the landmarks column is not kept), the number of header lines (0 or 1) and, per data row
    with a missing or an extra field (its values left empty), why. The csv module rather than pandas: one such
    row of training.csv's 414,799 is that row's problem, not the end of the split."""
    rows = iter_csv(path)
    first = next(rows, None)
    if first is None:
        raise CorpusError(path, "file is empty")
    has_header = first[1][0] == AFFECTNET_COLUMNS[0]
    names = first[1] if has_header else list(AFFECTNET_COLUMNS)
    missing = [c for c in AFFECTNET_COLUMNS if c != "facial_landmarks" and c not in names]
    if missing:
        raise CorpusError(path, f"missing column(s) {missing}; found {names}")
    keep = [names.index(c) for c in AFFECTNET_COLUMNS if c != "facial_landmarks"]
    records: list[list[str]] = []
    misshapen: dict[int, str] = {}
    for _, fields in rows if has_header else [first, *rows]:
        problem = field_count_problem(fields, names)
        if problem is not None:
            misshapen[len(records)] = problem
            fields = [""] * len(names)
        records.append([fields[i] for i in keep])
    columns = [c for c in AFFECTNET_COLUMNS if c != "facial_landmarks"]
    return pd.DataFrame(records, columns=columns, dtype=str), int(has_header), misshapen
