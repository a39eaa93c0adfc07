"""FER-2013 (ICML 2013 challenge): 35,887 grey 48x48 face crops, as a pixel CSV or as an image-folder release."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stress_lightning.data.corpora.base import CORPORA, Corpus, OnError
from stress_lightning.data.corpora.common import csv_rows, field_count_problem
from stress_lightning.data.corpora.image_folder import carve, check_fraction, class_images, image_items, safe_item_id
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.items import ClassLabel, CorpusImage, Item

FER_LABELS: tuple[str, ...] = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
FER_USAGE: dict[str, str] = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
FER_SIZE = 48
FER_PIXELS = FER_SIZE * FER_SIZE
# Where the CSV lies in root: the challenge's fer2013.tar.gz unpacks to fer2013/fer2013.csv, the Kaggle
# competition download holds icml_face_data.csv (header `emotion, Usage, pixels`).
CSV_NAMES: tuple[str, ...] = ("fer2013.csv", "fer2013/fer2013.csv", "icml_face_data.csv")
FOLDER_SPLITS: tuple[str, ...] = ("train", "test")
_CHUNK_ROWS = 4096


@dataclass(frozen=True)
class FerTable:
    """A parsed FER-2013 CSV: per row the emotion code and usage as written, the decoded 48x48 pixels (zeros
    where the row is bad) and, for bad rows, why."""

    emotion: tuple[str, ...]
    usage: tuple[str, ...]
    pixels: np.ndarray
    bad: dict[int, str]


def row_name(row: int) -> str:
    """A CSV data row (0-based, the item key) with its line in the file (the header is line 1)."""
    return f"row {row} (line {row + 2})"


def fer_table(path: Path) -> FerTable:
    """The parsed CSV, once per process and file version (a 300 MB CSV is never parsed per image)."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(path, "file is missing")
    stat = path.stat()
    return _parse_fer_csv(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _parse_fer_csv(path: str, mtime_ns: int, size: int) -> FerTable:
    # The csv module rather than pandas: a row with a missing or an extra field is that row's problem (named and
    # left out), not the end of a 35,887-row file; it is also faster on these long pixel fields.
    header, rows = csv_rows(Path(path))
    missing = [c for c in ("emotion", "pixels", "Usage") if c not in header]
    if missing:
        raise CorpusError(path, f"missing column(s) {missing}; found {header}")
    columns = [header.index(c) for c in ("emotion", "pixels", "Usage")]
    emotion, strings, usage = [], [], []
    bad: dict[int, str] = {}
    for row, (_, fields) in enumerate(rows):
        problem = field_count_problem(fields, header)
        if problem is not None:
            bad[row] = problem
            fields = [""] * len(header)
        code, pixel_string, split = (fields[i] for i in columns)
        emotion.append(code)
        strings.append(pixel_string)
        usage.append(split)
    pixels = np.zeros((len(strings), FER_PIXELS), np.uint8)
    for start in range(0, len(strings), _CHUNK_ROWS):
        chunk = strings[start : start + _CHUNK_ROWS]
        values, reasons = decode_pixel_rows(chunk, FER_PIXELS)
        pixels[start : start + len(chunk)] = values
        for i, reason in reasons.items():
            bad.setdefault(start + i, reason)
    return FerTable(emotion=tuple(emotion), usage=tuple(usage), pixels=pixels.reshape(-1, FER_SIZE, FER_SIZE), bad=bad)


def decode_pixel_rows(strings: list[str], n_values: int) -> tuple[np.ndarray, dict[int, str]]:
    """Space-separated 0-255 integers, `n_values` per string, decoded for all strings at once (vectorised over
    the bytes: ~3x faster than parsing row by row). Returns the values (zeros for bad rows) and, per bad row,
    the reason."""
    n = len(strings)
    text = "\n".join(s.replace("\n", " ") if "\n" in s else s for s in strings) + "\n"
    a = np.frombuffer(text.encode("ascii", errors="replace"), np.uint8)
    digit = (a - np.uint8(48)) < 10
    newlines = np.flatnonzero(a == 10)
    separator = (a == 32) | (a == 9) | (a == 13) | (a == 10)
    other = np.flatnonzero(~(digit | separator))
    bad_chars = np.bincount(np.searchsorted(newlines, other), minlength=n)
    edge = np.diff(digit.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edge == 1)
    ends = np.flatnonzero(edge == -1) - 1
    counts = np.diff(np.searchsorted(ends, newlines), prepend=0)
    token_row = np.repeat(np.arange(n), counts)
    lengths = ends - starts + 1
    d = a - np.uint8(48)
    values = d[ends].astype(np.int16)
    values += (lengths >= 2) * d[ends - 1].astype(np.int16) * np.int16(10)
    values += (lengths >= 3) * d[ends - 2].astype(np.int16) * np.int16(100)
    out_of_range = np.bincount(token_row[(lengths > 3) | (values > 255)], minlength=n)
    ok = (bad_chars == 0) & (counts == n_values) & (out_of_range == 0)
    out = np.zeros((n, n_values), np.uint8)
    out[ok] = values[ok[token_row]].reshape(-1, n_values)
    reasons: dict[int, str] = {}
    for i in np.flatnonzero(~ok):
        if bad_chars[i]:
            reasons[int(i)] = "pixels are not space-separated integers (non-numeric text)"
        elif counts[i] != n_values:
            reasons[int(i)] = f"pixels has {int(counts[i])} values, expected {n_values}"
        else:
            reasons[int(i)] = "pixel values outside 0-255"
    return out, reasons


@CORPORA.register("fer2013")
class Fer2013Corpus(Corpus):
    """FER-2013: grey 48x48 face crops (prealigned), each image its own subject (the corpus has no subject ids).

    Layouts (`layout: auto` takes the CSV when there is one, else the folders):
    - csv: `fer2013.csv` (or `fer2013/fer2013.csv`, or the Kaggle competition's `icml_face_data.csv`), columns
      emotion, pixels, Usage (header spaces ignored); pixels = 2304 space-separated 0-255 values. Split by
      Usage: Training -> train, PublicTest -> val, PrivateTest -> test. Items are `CorpusImage(csv, row)`.
    - folders: the image release `train/<class>/*.jpg`, `test/<class>/*.jpg`; val is carved out of train,
      `val_fraction` of its images (each image its own subject), deterministic for a given `seed`.

    Labels: emotion 0 Angry, 1 Disgust, 2 Fear, 3 Happy, 4 Sad, 5 Surprise, 6 Neutral (the 7 basic classes).
    Any other code, an unknown Usage, a row with a missing or an extra field, or a bad pixel string (wrong
    count, non-numeric, out of range) is a problem naming the CSV and the row; with on_error="skip" the other rows
    are read. In the folder release the class folder name is the label (angry,
    disgust, fear, happy, neutral, sad, surprise); an unknown folder name stays an unmapped original label.

    Args:
        layout: auto, csv or folders.
        val_fraction: share of train images carved out as val (folder release only).
        seed: seed of the carving.
    """

    name = "fer2013"
    layout = "fer2013.csv (emotion,pixels,Usage) or icml_face_data.csv, or folders train/<class>/*.jpg, test/..."
    url = "https://www.kaggle.com/c/challenges-in-representation-learning-facial-expression-recognition-challenge"
    expression_map = {name: name.lower() for name in FER_LABELS}
    prealigned = True

    def __init__(self, layout: str = "auto", val_fraction: float = 0.1, seed: int = 0, on_error: OnError = "fail"):
        super().__init__(on_error)
        if layout not in ("auto", "csv", "folders"):
            raise ValueError(f"fer2013: layout must be auto, csv or folders, got {layout!r}")
        self.layout_option = layout
        self.val_fraction = check_fraction("val_fraction", val_fraction)
        self.seed = int(seed)

    def options(self) -> dict:
        return {"layout": self.layout_option, "val_fraction": self.val_fraction, "seed": self.seed}

    def find_csv(self, root: Path) -> Path | None:
        return next((root / name for name in CSV_NAMES if (root / name).is_file()), None)

    def read(self, root: Path) -> list[Item]:
        csv_path = self.find_csv(root) if self.layout_option in ("auto", "csv") else None
        if csv_path is not None:
            return self.read_csv(csv_path)
        if self.layout_option == "csv":
            raise CorpusError(root, f"no FER-2013 CSV found (looked for {', '.join(CSV_NAMES)})")
        if self.layout_option == "auto" and not any((root / s).is_dir() for s in FOLDER_SPLITS):
            raise CorpusError(
                root, f"neither a FER-2013 CSV ({', '.join(CSV_NAMES)}) nor the train/ and test/ folders found"
            )
        return self.read_folders(root)

    def read_csv(self, path: Path) -> list[Item]:
        table = fer_table(path)
        items: list[Item] = []
        for row, (code, usage) in enumerate(zip(table.emotion, table.usage, strict=True)):
            if row in table.bad:  # first: a misshapen row's code and usage are not in place
                self.report(path, f"{row_name(row)}: {table.bad[row]}")
                continue
            if not code.isdecimal() or int(code) >= len(FER_LABELS):  # not isdigit(): '²' is a digit int() refuses
                self.report(path, f"{row_name(row)}: unknown emotion code {code!r}; known 0-{len(FER_LABELS) - 1}")
                continue
            if usage not in FER_USAGE:
                self.report(path, f"{row_name(row)}: unknown Usage {usage!r}; known {list(FER_USAGE)}")
                continue
            item_id = f"{path.stem}/{row:05d}"
            items.append(
                Item(
                    item_id=item_id,
                    subject_id=item_id,
                    split=FER_USAGE[usage],
                    media=CorpusImage(path, row),
                    expression=ClassLabel(FER_LABELS[int(code)]),
                )
            )
        if not items:
            raise CorpusError(path, "holds no usable row")
        return items

    def read_folders(self, root: Path) -> list[Item]:
        images = {}
        for split in FOLDER_SPLITS:
            folder = root / split
            if not folder.is_dir():
                self.report(folder, f"split folder is missing (expected {split}/<class>/*.jpg)")
                continue
            images[split] = class_images(folder)
            if not images[split]:
                self.report(folder, "split folder holds no images (expected <class>/*.jpg in it)")

        def subject_of(path: Path) -> str:
            return safe_item_id(path.relative_to(root).with_suffix("").as_posix())

        assign = carve((subject_of(p) for _, p in images.get("train", [])), self.val_fraction, 0.0, self.seed)
        return image_items(root, images, subject_of, assign)

    def load_image(self, item: Item) -> np.ndarray:
        media = item.media
        if not isinstance(media, CorpusImage):
            return super().load_image(item)
        table = fer_table(media.source)
        if not 0 <= media.key < len(table.pixels):
            raise CorpusError(media.source, f"{row_name(media.key)}: no such row ({len(table.pixels)} rows)")
        if media.key in table.bad:
            raise CorpusError(media.source, f"{row_name(media.key)}: {table.bad[media.key]}")
        return np.repeat(table.pixels[media.key][:, :, None], 3, axis=2)
