"""Users' own recordings: a manifest (CSV or JSONL) that lists videos, images and frame folders with their labels.

The format is specified for users in docs/MANIFEST.md; `ManifestCorpus` states it for readers of the code.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stress_lightning.data.corpora.base import CORPORA, Corpus, OnError, read_csv_checked, split_subjects
from stress_lightning.data.corpora.common import (
    check_split_fractions,
    csv_rows,
    is_number,
    label_column,
    numeric_column,
    read_expression_events,
)
from stress_lightning.data.corpora.image_folder import IMAGE_SUFFIXES, SPLIT_FOLDERS, list_images, safe_item_id
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.faces import read_face_boxes
from stress_lightning.data.items import (
    CARDIAC_KINDS,
    CardiacRef,
    CardiacSignal,
    ClassLabel,
    ExpressionTimeline,
    FrameFiles,
    ImageFile,
    Item,
    Media,
    Problem,
    StressSegment,
    StressSegments,
    VideoFile,
    cardiac_rate_problem,
)

REQUIRED_COLUMNS: tuple[str, ...] = ("path", "subject")
# Every column the reader interprets; any other column is a group attribute of the item.
KNOWN_COLUMNS: frozenset[str] = frozenset(
    {
        *REQUIRED_COLUMNS,
        "id",
        "split",
        "fps",
        "frame_times",
        "expression",
        "expression_events",
        "stress",
        "stress_segments",
        "cardiac",
        "cardiac_kind",
        "cardiac_fs_hz",
        "cardiac_offset_s",
        "cardiac_column",
        "audio",
        "face_boxes",
        "keypoints",
        "landmarks",
        "ppg",
        "ppg_fs_hz",
        "ppg_offset_s",
        "ppg_column",
    }
)
JSONL_SUFFIXES: tuple[str, ...] = (".jsonl", ".json", ".ndjson")
SEGMENT_COLUMNS: list[str] = ["start_s", "end_s", "label"]
# The per-sample (cardiac) or per-frame (frame_times) time column, in seconds.
TIME_COLUMN = "time_s"
# frame_times: an optional column naming each row's frame file inside the folder.
FRAME_FILE_COLUMN = "file"
# How a reader hands on a problem with a file (`Corpus.report`: raise or record, by on_error).
Report = Callable[[Path, str], None]


@CORPORA.register("manifest")
class ManifestCorpus(Corpus):
    """Any recordings a user lists in a manifest: videos, still images and frame folders with their labels.

    This is how corpora without a reader of their own come in, e.g. a stress corpus such as a DKEFS-linked
    expression set that has no public release: one row per recording, stress labelled per item (`stress`) or
    per time segment (`stress_segments`), expressions per item or as timed events.

    Layout: one manifest file at `<root>/<path>` (option `path`, default `manifest.csv`): a CSV with a header
    row, or JSONL (`.jsonl`, `.json`, `.ndjson`: one JSON object per line). One row per item; relative paths in
    it are relative to the manifest's folder. Columns (JSONL: keys; empty or null = absent):
    - `path` (required): a video file (any container PyAV reads; anything that is no image and no folder), an
      image (.jpg/.jpeg/.png/.bmp/.webp) or a folder of frames (images in natural order: frame_2 before
      frame_10), which needs `fps` or `frame_times` (a CSV with a `time_s` column, one row per frame, optionally
      a `file` column naming the frames; it wins over `fps`).
    - `subject` (required): the person; splits are subject-disjoint.
    - `id`: the item id (default: `path` relative to the manifest's folder, made path-safe).
    - `split`: train, val or test (also training, validation, valid, dev, testing; any case), in every row or
      in none. In none: `split_subjects` over all subjects with `split_fractions` and `seed`.
    - `expression`: one label for the item, or `expression_events`: a CSV `start_s,apex_start_s,apex_end_s,
      end_s,label` (the synthetic corpus' event format; neutral outside events, unknown during onset/offset).
    - `stress`: one label for the item, or `stress_segments`: a CSV `start_s,end_s,label`.
    - `cardiac`: an ECG, PPG or heart-rate file with `cardiac_kind` (ecg, ppg or hr; required with it),
      `cardiac_fs_hz` (its rate; not needed when the file has a `time_s` column), `cardiac_offset_s` (the
      time of the first video frame on the signal's clock, default 0) and `cardiac_column` (the value column
      of a file with several). Files: CSV/TSV (header optional), plain text with one value per line, or `.npy`
      (1-D, needs a rate).
    - `audio`: an audio file; `face_boxes`: a per-frame `frame,x0,y0,x1,y1` box CSV (for an image: its box).
    - sidecars of a video or frame folder (`data.sidecars` puts them on the clip's clock): `keypoints`, OpenPose
      BODY_25 JSON (a folder of per-frame files or one `{"frames": [...]}` file, `data.body.read_openpose`);
      `landmarks`, a 12-point CSV `frame,x0,y0,...,x11,y11` (`data.landmarks`); `ppg`, a pulse waveform file read
      like `cardiac` with `ppg_fs_hz`, `ppg_offset_s` and `ppg_column` (a `cardiac` of kind ppg serves as the
      pulse waveform when `ppg` is empty).
    - any other column: a group attribute (gender, skin_tone, age, ...), kept as text; empty values left out.
    Times of events, segments and the cardiac signal (after the offset) are on the video's clock: 0 at the
    first frame.

    Labels: kept as written; the taxonomy's synonyms read them (happiness -> happy, stressed -> high, ...) and
    the run's `label_map` / `stress_label_map` map anything else, so the corpus maps are empty.

    Problems: a manifest that cannot be parsed, a missing required column or value, an unknown split or a
    subject in two splits raise `CorpusError` (the manifest is wrong, whatever `on_error`). A listed file that
    is missing or malformed, a bad value in a row (a cardiac_fs_hz implausible for its kind among them), a CSV
    row with more fields than the header (fewer: the trailing columns are empty), rows without a split where
    others have one, and a duplicate item id are reported (`on_error`: fail raises, skip leaves the row out),
    naming the file and the manifest line. Cardiac files are parsed by `load_cardiac` (a missing rate or times,
    times that do not increase, text that is no number are problems of that file, found by `check` / `data
    summary` or when labelling); empty and NaN values are dropouts, bridged or masked when labelling
    (`data.labels`).

    Args:
        path: the manifest, relative to root (or absolute).
        split_fractions: train, val, test shares of the subjects when no row gives a split.
        seed: seed of that split.
    """

    name = "manifest"
    layout = "a CSV or JSONL manifest (option path, default manifest.csv): path, subject, [split, labels, cardiac, ...]"
    url = "your own recordings: see docs/MANIFEST.md"

    def __init__(
        self,
        path: str = "manifest.csv",
        split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
        seed: int = 0,
        on_error: OnError = "fail",
    ) -> None:
        super().__init__(on_error)
        if not str(path).strip():
            raise ValueError("manifest: path must name the manifest file")
        self.path = str(path)
        self.split_fractions = check_split_fractions(split_fractions, self.name)
        self.seed = int(seed)

    def options(self) -> dict:
        return {"path": self.path, "split_fractions": list(self.split_fractions), "seed": self.seed}

    def manifest_file(self, root: Path) -> Path:
        return Path(root) / Path(self.path).expanduser()

    # -- reading ------------------------------------------------------------------------------------------
    def read(self, root: Path) -> list[Item]:
        manifest = self.manifest_file(root)
        rows = read_manifest(manifest, self.report)
        splits = self.assign_splits(manifest, rows)
        items: list[Item] = []
        first_line: dict[str, int] = {}
        for line, row in rows:
            if line not in splits:
                continue
            try:
                item = self.row_item(manifest, line, row, splits[line])
            except CorpusError as exc:
                # A side file's problem also names the row that lists it (side files can be shared by rows).
                where = f"{manifest.name} line {line}"
                listed = exc.path == manifest or where in exc.problem
                self.report(exc.path, exc.problem if listed else f"{exc.problem} (listed in {where})")
                continue
            if item.item_id in first_line:
                self.report(
                    manifest,
                    f"line {line}: item id {item.item_id!r} is already used on line {first_line[item.item_id]} "
                    "(give the rows distinct `id`s)",
                )
                continue
            first_line[item.item_id] = line
            items.append(item)
        return items

    def assign_splits(self, manifest: Path, rows: list[tuple[int, dict[str, str]]]) -> dict[int, str]:
        """Manifest line -> split; rows left out (no split where others have one) are reported and absent."""
        given = {line: row["split"] for line, row in rows if row.get("split")}
        if not given:
            # Over every row's subject, before any file is checked: a missing file must not move other subjects.
            assign = split_subjects([row["subject"] for _, row in rows], self.split_fractions, self.seed)
            return {line: assign[row["subject"]] for line, row in rows}
        splits: dict[int, str] = {}
        for line, value in given.items():
            split = SPLIT_FOLDERS.get(value.lower())
            if split is None:
                aliases = ", ".join(k for k, v in SPLIT_FOLDERS.items() if k != v)
                raise CorpusError(
                    manifest, f"line {line}: unknown split {value!r}; known train, val, test (also {aliases})"
                )
            splits[line] = split
        seen: dict[str, tuple[str, int]] = {}
        for line, row in rows:
            if line not in splits:
                continue
            subject, split = row["subject"], splits[line]
            other = seen.setdefault(subject, (split, line))
            if other[0] != split:
                raise CorpusError(
                    manifest,
                    f"subject {subject!r} is in {other[0]} (line {other[1]}) and in {split} (line {line}): "
                    "splits must be subject-disjoint",
                )
        missing = [line for line, _ in rows if line not in splits]
        if missing:
            shown = ", ".join(str(n) for n in missing[:20]) + (" ..." if len(missing) > 20 else "")
            self.report(
                manifest,
                f"line(s) {shown} give no split while other rows do: give every row a split, or none "
                f"(then subjects are split by split_fractions)",
            )
        return splits

    def row_item(self, manifest: Path, line: int, row: dict[str, str], split: str) -> Item:
        """The item of one manifest row; a problem raises CorpusError naming the file and the line."""
        base = manifest.parent
        where = f"{manifest.name} line {line}"
        media = self.row_media(manifest, line, row, where)
        face_boxes = listed_file(base, row, "face_boxes", where)
        if isinstance(media, ImageFile) and face_boxes is not None:
            boxes = read_face_boxes(face_boxes)
            if not len(boxes):
                raise CorpusError(face_boxes, "lists no box")
            media = ImageFile(media.path, tuple(float(v) for v in boxes[0]))  # type: ignore[arg-type]
        return Item(
            item_id=row_item_id(row, base),
            subject_id=row["subject"],
            split=split,
            media=media,
            expression=self.row_expression(manifest, line, row, where),
            stress=self.row_stress(manifest, line, row, where),
            cardiac=self.row_cardiac(manifest, line, row, where),
            face_boxes=face_boxes,
            attributes={k: v for k, v in row.items() if k not in KNOWN_COLUMNS and v},
            audio=listed_file(base, row, "audio", where),
            body_keypoints=self.row_keypoints(manifest, line, row, where, media),
            landmarks=self.row_sidecar(manifest, line, row, where, media, "landmarks"),
            ppg=self.row_sidecar(manifest, line, row, where, media, "ppg"),
        )

    def row_keypoints(self, manifest: Path, line: int, row: dict[str, str], where: str, media: Media) -> Path | None:
        """The row's OpenPose BODY_25 keypoints: a folder of per-frame JSON files or one JSON file."""
        if not row.get("keypoints"):
            return None
        self.video_only(manifest, line, media, "keypoints")
        path = resolve(manifest.parent, row["keypoints"])
        if not path.exists():
            raise CorpusError(path, f"is missing (column keypoints, {where})")
        return path

    def row_sidecar(self, manifest: Path, line: int, row: dict[str, str], where: str, media: Media, column: str):
        """The row's `landmarks` file or `ppg` reference (video and frame folders only)."""
        if not row.get(column):
            return None
        self.video_only(manifest, line, media, column)
        if column == "ppg":
            return self.row_ppg(manifest, line, row, where)
        return listed_file(manifest.parent, row, column, where)

    @staticmethod
    def video_only(manifest: Path, line: int, media: Media, column: str) -> None:
        if isinstance(media, ImageFile):
            raise CorpusError(manifest, f"line {line}: column {column} is for videos and frame folders, not an image")

    def row_media(self, manifest: Path, line: int, row: dict[str, str], where: str) -> Media:
        path = resolve(manifest.parent, row["path"])
        if path.is_dir():
            frames = sorted(list_images(path), key=lambda p: natural_key(p.name))
            if not frames:
                raise CorpusError(path, f"frame folder holds no images ({where})")
            times_file = listed_file(manifest.parent, row, "frame_times", where)
            fps = row_number(manifest, line, row, "fps", positive=True)
            if times_file is not None:
                frames, times = read_frame_times(times_file, path, frames)
                return FrameFiles(tuple(frames), timestamps_s=tuple(times), fps=fps)
            if fps is None:
                raise CorpusError(manifest, f"line {line}: frame folder {path} needs `fps` or `frame_times`")
            return FrameFiles(tuple(frames), fps=fps)
        if not path.is_file():
            raise CorpusError(path, f"file is missing (column path, {where})")
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return ImageFile(path)
        return VideoFile(path)

    def row_expression(
        self, manifest: Path, line: int, row: dict[str, str], where: str
    ) -> ClassLabel | ExpressionTimeline | None:
        events = listed_file(manifest.parent, row, "expression_events", where)
        if events is not None and row.get("expression"):
            raise CorpusError(manifest, f"line {line}: give `expression` or `expression_events`, not both")
        if events is not None:
            return read_expression_events(events)
        return ClassLabel(row["expression"]) if row.get("expression") else None

    def row_stress(
        self, manifest: Path, line: int, row: dict[str, str], where: str
    ) -> ClassLabel | StressSegments | None:
        segments = listed_file(manifest.parent, row, "stress_segments", where)
        if segments is not None and row.get("stress"):
            raise CorpusError(manifest, f"line {line}: give `stress` or `stress_segments`, not both")
        if segments is not None:
            return read_stress_segments(segments)
        return ClassLabel(row["stress"]) if row.get("stress") else None

    def row_cardiac(self, manifest: Path, line: int, row: dict[str, str], where: str) -> CardiacRef | None:
        path = listed_file(manifest.parent, row, "cardiac", where)
        if path is None:
            return None
        kind = row.get("cardiac_kind", "").lower()
        if kind not in CARDIAC_KINDS:
            raise CorpusError(
                manifest,
                f"line {line}: cardiac_kind {row.get('cardiac_kind', '')!r} must be one of {', '.join(CARDIAC_KINDS)} "
                "(required with `cardiac`)",
            )
        return self.signal_ref(manifest, line, row, where, "cardiac", kind, path)

    def row_ppg(self, manifest: Path, line: int, row: dict[str, str], where: str) -> CardiacRef | None:
        """The row's pulse waveform (`ppg` with `ppg_fs_hz`, `ppg_offset_s`, `ppg_column`, as for `cardiac`)."""
        path = listed_file(manifest.parent, row, "ppg", where)
        if path is None:
            return None
        return self.signal_ref(manifest, line, row, where, "ppg", "ppg", path)

    def signal_ref(
        self, manifest: Path, line: int, row: dict[str, str], where: str, prefix: str, kind: str, path: Path
    ) -> CardiacRef:
        """A signal file's reference from the `<prefix>_fs_hz`, `<prefix>_offset_s` and `<prefix>_column` columns."""
        fs_hz = row_number(manifest, line, row, f"{prefix}_fs_hz", positive=True)
        rate_problem = cardiac_rate_problem(kind, fs_hz) if fs_hz is not None else None
        if rate_problem is not None:
            raise CorpusError(manifest, f"line {line}: {prefix}_fs_hz: {rate_problem}")
        offset_s = row_number(manifest, line, row, f"{prefix}_offset_s") or 0.0
        column = row.get(f"{prefix}_column") or None
        if fs_hz is None or column is not None:
            # Only the header is read here: a rate-less file without times is refused before any caching.
            header = cardiac_header(path)
            if fs_hz is None and TIME_COLUMN not in header:
                raise CorpusError(
                    path, f"has no {TIME_COLUMN} column and {where} gives no {prefix}_fs_hz: its samples have no times"
                )
            if column is not None and header and column not in header:
                raise CorpusError(path, f"has no column {column!r} ({prefix}_column, {where}); found {header}")
        return CardiacRef(kind, path, fs_hz=fs_hz, offset_s=offset_s, channel=column)  # type: ignore[arg-type]

    # -- loading ------------------------------------------------------------------------------------------
    def load_cardiac(self, item: Item) -> CardiacSignal | None:
        ref = item.cardiac
        if ref is None:
            return None
        times, values = read_cardiac_file(ref.path, ref.channel)
        if times is not None:
            return CardiacSignal(ref.kind, values, times_s=times - ref.offset_s, source=ref.path)
        if not ref.fs_hz:
            raise CorpusError(ref.path, f"has no {TIME_COLUMN} column and no cardiac_fs_hz is given")
        return CardiacSignal(ref.kind, values, fs_hz=ref.fs_hz, start_s=-ref.offset_s, source=ref.path)

    def check(self, item: Item) -> list[Problem]:
        problems = super().check(item)
        if item.face_boxes is not None and not item.is_still:
            try:
                read_face_boxes(item.face_boxes)
            except CorpusError as exc:
                problems.append(Problem(str(exc.path), exc.problem))
        return problems

    def fingerprint(self, root: Path, items: Sequence[Item]) -> str:
        # Frame timestamps, cardiac settings and attributes live in the manifest and its side files, not in the
        # media files the base hash lists: hash the manifest's bytes and the parsed frame times too.
        digest = hashlib.sha256(super().fingerprint(root, items).encode())
        manifest = self.manifest_file(root)
        if manifest.is_file():
            digest.update(manifest.read_bytes())
        for item in items:
            if isinstance(item.media, FrameFiles):
                digest.update(repr((item.item_id, item.media.timestamps_s, item.media.fps)).encode())
            elif isinstance(item.media, ImageFile):
                digest.update(repr((item.item_id, item.media.face_box)).encode())
        return digest.hexdigest()


# -- the manifest file --------------------------------------------------------------------------------------------
def read_manifest(path: Path, report: Report | None = None) -> list[tuple[int, dict[str, str]]]:
    """(line in the file, row) for every row, values as stripped text (empty = absent); required columns and
    values checked. A CSV row with more fields than the header goes to `report` (the corpus' on_error decides)
    and is left out; without `report` it raises."""
    if not path.is_file():
        raise CorpusError(path, "manifest file is missing")
    rows = read_jsonl(path) if path.suffix.lower() in JSONL_SUFFIXES else read_manifest_csv(path, report)
    if not rows:
        raise CorpusError(path, "manifest lists no items")
    for line, row in rows:
        for column in REQUIRED_COLUMNS:
            if not row.get(column):
                raise CorpusError(path, f"line {line}: required column {column!r} is empty or absent")
    return rows


def read_manifest_csv(path: Path, report: Report | None = None) -> list[tuple[int, dict[str, str]]]:
    header, records = csv_rows(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise CorpusError(path, f"missing required column(s) {missing}; found {header}")
    rows = []
    for line, fields in records:
        if len(fields) > len(header):
            # Its values cannot be matched to columns (an unquoted comma shifts every one after it).
            problem = (
                f"line {line}: has {len(fields)} fields but the header has {len(header)} (an unquoted comma in a "
                "value? quote it)"
            )
            if report is None:
                raise CorpusError(path, problem)
            report(path, problem)
            continue
        # Fewer fields than the header: the trailing columns are empty, as spreadsheets write them.
        rows.append((line, dict(zip(header, fields + [""] * (len(header) - len(fields)), strict=True))))
    return rows


def read_jsonl(path: Path) -> list[tuple[int, dict[str, str]]]:
    rows = []
    # errors="replace": a byte that is no UTF-8 turns into U+FFFD, so the line is refused as JSON (or its path as
    # missing) with its line number, instead of a UnicodeDecodeError from the middle of the file.
    with path.open(encoding="utf-8-sig", errors="replace") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                raise CorpusError(path, f"line {line}: not valid JSON ({exc.msg})") from exc
            except (ValueError, RecursionError) as exc:  # an int of more than 4300 digits, nesting too deep
                raise CorpusError(path, f"line {line}: not valid JSON ({exc})") from exc
            if not isinstance(record, dict):
                raise CorpusError(path, f"line {line}: expected one JSON object per line, got {type(record).__name__}")
            rows.append((line, {str(k).strip(): json_text(v) for k, v in record.items()}))
    return rows


def json_text(value: Any) -> str:
    """A JSON value as manifest text: null -> empty, numbers and booleans as JSON writes them."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    return json.dumps(value)


def row_number(manifest: Path, line: int, row: dict[str, str], column: str, positive: bool = False) -> float | None:
    text = row.get(column)
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or (positive and value <= 0):
        need = "a positive number" if positive else "a number"
        raise CorpusError(manifest, f"line {line}: column {column} must be {need}, got {text!r}")
    return value


def resolve(base: Path, text: str) -> Path:
    """A manifest path: relative to the manifest's folder unless absolute; `..` collapsed."""
    path = Path(text).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else base / path))


def listed_file(base: Path, row: dict[str, str], column: str, where: str) -> Path | None:
    """The file a column names, or None when the row leaves it empty; a missing file raises CorpusError."""
    if not row.get(column):
        return None
    path = resolve(base, row[column])
    if not path.is_file():
        raise CorpusError(path, f"file is missing (column {column}, {where})")
    return path


def row_item_id(row: dict[str, str], base: Path) -> str:
    """The row's `id`, else its path relative to the manifest's folder, as a safe relative id."""
    if row.get("id"):
        text = row["id"]
    else:
        written = Path(row["path"]).expanduser()
        if written.is_absolute():
            path = Path(os.path.normpath(written))
            try:
                text = path.relative_to(Path(os.path.normpath(base.absolute()))).as_posix()
            except ValueError:
                text = path.as_posix()
        else:
            text = Path(os.path.normpath(written)).as_posix()
    # `..` (a file beside the manifest's folder) becomes `__`, so the id stays inside a cache folder and distinct.
    parts = ["__" if p == ".." else p for p in text.replace("\\", "/").split("/") if p not in ("", ".")]
    return safe_item_id("/".join(parts))


def natural_key(name: str) -> list:
    """Sort key with digit runs as numbers: frame_2 before frame_10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


# -- side files ---------------------------------------------------------------------------------------------------
def _separator(path: Path, first_line: str) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return ","
    if suffix == ".tsv":
        return "\t"
    return "," if "," in first_line else r"\s+"


def _first_line(path: Path) -> tuple[int, str]:
    """(blank lines before it, the first line that is not blank); (n, "") for a blank file."""
    skipped = 0
    with path.open(encoding="utf-8-sig", errors="replace") as f:
        for text in f:
            if text.strip():
                return skipped, text.strip()
            skipped += 1
    return skipped, ""


def _header_fields(path: Path) -> tuple[str, str, list[str] | None]:
    """(first line, separator, header names or None when the first line is data)."""
    _, first = _first_line(path)
    if not first:
        raise CorpusError(path, "file is empty")
    sep = _separator(path, first)
    fields = [f.strip().strip('"') for f in re.split(sep, first)]
    return first, sep, None if all(is_number(f) for f in fields) else fields


def read_table(path: Path) -> pd.DataFrame:
    """A numeric table from CSV/TSV/plain text, with or without a header row; columns named by the header or
    numbered from 0 ("0", "1", ...). A blank line between data lines is a row of missing values (in a file of one
    value per line, a dropout exported as an empty cell), never skipped: skipping it would move every later sample
    one step earlier in time. Blank lines before the first line and after the last are ignored."""
    if not path.is_file():
        raise CorpusError(path, "file is missing")
    _, sep, header = _header_fields(path)
    leading, _ = _first_line(path)
    table = read_csv_checked(
        path,
        [],
        sep=sep,
        header=None if header is None else 0,
        encoding="utf-8-sig",
        skiprows=leading,
        skip_blank_lines=False,
    )
    filled = np.flatnonzero(table.notna().any(axis=1).to_numpy())
    table = table.iloc[: filled[-1] + 1 if len(filled) else 0].reset_index(drop=True)
    table.columns = [str(c).strip() for c in table.columns]
    return table


def cardiac_header(path: Path) -> list[str]:
    """The column names of a cardiac file ([] for .npy and header-less files)."""
    if path.suffix.lower() == ".npy":
        return []
    _, _, header = _header_fields(path)
    return header or []


def check_increasing(path: Path, times: np.ndarray, what: str) -> None:
    steps = np.diff(times)
    if len(steps) and not (steps > 0).all():
        k = int(np.flatnonzero(steps <= 0)[0])
        raise CorpusError(
            path, f"{what} do not increase: data row {k + 2} has {times[k + 1]:g} after {times[k]:g} in row {k + 1}"
        )


def read_cardiac_file(path: Path, column: str | None = None) -> tuple[np.ndarray | None, np.ndarray]:
    """(per-sample times on the signal's clock or None, values) of a cardiac file, validated."""
    if not path.is_file():
        raise CorpusError(path, "cardiac file is missing")
    times = None
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise CorpusError(path, f"cannot be read as a NumPy array ({exc})") from exc
        if array.ndim == 2 and 1 in array.shape:
            array = array.ravel()
        # Complex numbers are numbers too, but no signal: casting them would drop the imaginary part.
        if array.ndim != 1 or not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
            raise CorpusError(path, f"expected a 1-D numeric array, got shape {array.shape} of {array.dtype}")
        # NaN samples are dropouts, bridged or masked when labelling (`data.labels.cardiac_truth`).
        values = array.astype(np.float64)
    else:
        table = read_table(path)
        if column is not None:
            if column not in table.columns:
                raise CorpusError(path, f"has no column {column!r} (cardiac_column); found {list(table.columns)}")
        else:
            others = [c for c in table.columns if c != TIME_COLUMN]
            if len(others) != 1:
                raise CorpusError(
                    path,
                    f"has {len(others)} value columns {others}: name the signal with cardiac_column"
                    if others
                    else f"has no value column besides {TIME_COLUMN}",
                )
            column = others[0]
        values = numeric_column(path, table, column, missing_ok=True)
        if TIME_COLUMN in table.columns:
            times = numeric_column(path, table, TIME_COLUMN)
            check_increasing(path, times, f"{TIME_COLUMN} times")
    if len(values) < 2:
        raise CorpusError(path, f"has {len(values)} sample(s); a cardiac signal needs at least 2")
    return times, values


def read_frame_times(path: Path, folder: Path, frames: list[Path]) -> tuple[list[Path], list[float]]:
    """Frames and their timestamps from a frame_times file: a `time_s` column (or a single column), one row per
    frame in the folder's natural order, or with a `file` column naming each row's frame."""
    table = read_table(path)
    column = TIME_COLUMN if TIME_COLUMN in table.columns else None
    others = [c for c in table.columns if c != FRAME_FILE_COLUMN]
    if column is None and len(others) == 1:
        column = others[0]
    if column is None:
        raise CorpusError(path, f"needs a {TIME_COLUMN} column (seconds per frame); found {list(table.columns)}")
    times = numeric_column(path, table, column)
    check_increasing(path, times, "frame times")
    if FRAME_FILE_COLUMN in table.columns:
        frames = [folder / str(name).strip() for name in table[FRAME_FILE_COLUMN]]
        missing = [p for p in frames if not p.is_file()]
        if missing:
            raise CorpusError(missing[0], f"frame listed in {path.name} is missing ({len(missing)} missing)")
    elif len(times) != len(frames):
        raise CorpusError(path, f"has {len(times)} frame times but {folder} holds {len(frames)} frames")
    return frames, [float(t) for t in times]


def read_stress_segments(path: Path) -> StressSegments:
    """Stress segments from a `start_s,end_s,label` CSV (labels as written); segments may not overlap."""
    table = read_csv_checked(path, SEGMENT_COLUMNS, dtype={"label": str}, skipinitialspace=True)
    if not len(table):
        raise CorpusError(path, "lists no segments")
    start = numeric_column(path, table, "start_s")
    end = numeric_column(path, table, "end_s")
    if not (end > start).all():
        raise CorpusError(path, f"data row {int(np.flatnonzero(end <= start)[0]) + 1}: end_s must be after start_s")
    order = np.argsort(start, kind="stable")
    if (start[order][1:] < end[order][:-1]).any():
        raise CorpusError(path, "segments overlap: each moment can have one stress label only")
    labels = label_column(path, table)
    return StressSegments(tuple(StressSegment(float(start[i]), float(end[i]), labels[i]) for i in order))
