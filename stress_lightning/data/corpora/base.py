"""The corpus contract: one class per corpus, registered by name, that alone knows its on-disk layout.

A corpus class reads its official layout into `Item`s (`stress_lightning.data.items`) with `read(root)`; it may
`prepare(root)` first (the synthetic corpus generates itself there), it fingerprints its content, and it loads
what only it can decode (`load_image` for images inside its own files, `load_cardiac` for its ground-truth
formats). Nothing outside a corpus file knows its layout.

Bad input: every reader reports a problem (missing file, unreadable image, ground truth that does not cover the
video, ...) through `report(path, reason)`. With `on_error="fail"` (the default for training) the first problem
raises a `CorpusError` naming the file; with `on_error="skip"` the item is left out and the problem kept in
`problems`, so `data summary` lists them all and a run can go on with the rest.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from stress_lightning.data.errors import CorpusError
from stress_lightning.data.items import (
    CardiacSignal,
    CorpusImage,
    FrameFiles,
    ImageFile,
    Item,
    PhysiologyRecord,
    PhysiologySeries,
    Problem,
    VideoFile,
)
from stress_lightning.data.tables import read_csv_checked  # noqa: F401  (re-exported for the corpus readers)
from stress_lightning.data.video import iter_media_frames, probe_video, read_image, video_end_problem
from stress_lightning.registry import Registry

OnError = Literal["fail", "skip"]
CORPORA = Registry("corpus", "stress_lightning.data.corpora")


class Corpus:
    """Base class of every corpus reader.

    Class attributes a corpus sets:
        name: the registry name.
        expression_map / stress_map: original label -> canonical name (None: not a class at all); labels not
            listed are read as spellings of canonical names (`stress_lightning.data.taxonomy`).
        layout: one line on the layout it expects (README table, error messages).
        url: where users obtain the corpus.
        prealigned: its still images are already face crops (FER-2013's 48x48 faces, RAF-DB's aligned set): the
            face pipeline uses the whole image instead of detecting a face in it.
        cardiac_ends_with_video: its cardiac ground truth is cut to end with the video (UBFC-Phys), so one that
            runs well past the video's end has a wrong sampling rate (`cardiac_coverage_problems`).

    Args:
        on_error: "fail" raises at the first problem; "skip" leaves the item out and records the problem.
    """

    name: ClassVar[str] = ""
    expression_map: ClassVar[Mapping[str, str | None]] = {}
    stress_map: ClassVar[Mapping[str, str | None]] = {}
    layout: ClassVar[str] = ""
    url: ClassVar[str] = ""
    prealigned: ClassVar[bool] = False
    cardiac_ends_with_video: ClassVar[bool] = False

    def __init__(self, on_error: OnError = "fail") -> None:
        if on_error not in ("fail", "skip"):
            raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
        self.on_error: OnError = on_error
        self.problems: list[Problem] = []

    # -- what each corpus implements ----------------------------------------------------------------------
    def read(self, root: Path) -> list[Item]:
        """Parse the corpus at `root` (the folder its official release unpacks to) into items."""
        raise NotImplementedError(f"corpus class {type(self).__name__} does not implement read(root)")

    def prepare(self, root: Path, progress: bool = True, workers: int = 1) -> None:
        """Make the corpus exist at `root` where the package can (the synthetic corpus generates it)."""

    def load_image(self, item: Item) -> np.ndarray:
        """RGB uint8 [H, W, 3] of a still item."""
        media = item.media
        if isinstance(media, ImageFile):
            return read_image(media.path)
        if isinstance(media, CorpusImage):
            raise NotImplementedError(f"corpus {self.name!r} must decode its own images (load_image)")
        raise TypeError(f"item {item.item_id} is not a still image")

    def load_cardiac(self, item: Item) -> CardiacSignal | None:
        """The item's cardiac ground truth on the video's clock, or None."""
        if item.cardiac is None:
            return None
        raise NotImplementedError(f"corpus {self.name!r} has cardiac ground truth but no load_cardiac")

    def load_physiology(self, item: Item) -> PhysiologySeries:
        """The physiology of a `PhysiologyRecord` item (a corpus without video, e.g. SWELL-KW)."""
        raise NotImplementedError(f"corpus {self.name!r} has physiology records but no load_physiology")

    def frames(self, item: Item) -> Iterator[tuple[float, np.ndarray]]:
        """(t_s, RGB frame) of a video or image-sequence item, t = 0 at its first frame."""
        if not isinstance(item.media, VideoFile | FrameFiles):
            raise TypeError(f"item {item.item_id} is a still image, not a video")
        return iter_media_frames(item.media)

    # -- shared machinery ---------------------------------------------------------------------------------
    def report(self, path: str | Path, reason: str) -> None:
        """A problem with a corpus file: raise (on_error='fail') or record it (on_error='skip')."""
        if self.on_error == "fail":
            raise CorpusError(path, reason)
        self.problems.append(Problem(str(path), reason))

    def read_checked(self, root: str | Path) -> list[Item]:
        """`read` with the root checked first and duplicate item ids refused."""
        root = Path(root)
        if not root.is_dir():
            raise CorpusError(root, f"corpus root of {self.name!r} does not exist or is not a folder")
        items = self.read(root)
        seen: set[str] = set()
        for item in items:
            if item.item_id in seen:
                raise CorpusError(root, f"item id {item.item_id!r} occurs twice")
            seen.add(item.item_id)
        return items

    def fingerprint(self, root: Path, items: Sequence[Item]) -> str:
        """Hash of the corpus content: sorted (relative path, size) of every file the items read, their labels and
        splits, and the reader's options. A corpus that states a content hash of its own (synthetic) overrides
        this. Sizes rather than bytes: hashing 300 GB of video on every run would cost more than the training."""
        root = Path(root)
        files = sorted({p for item in items for p in item.files()})
        entries = []
        for p in files:
            try:
                rel = p.relative_to(root).as_posix()
            except ValueError:
                rel = str(p)
            entries.append((rel, p.stat().st_size if p.exists() else -1))
        # Labels live in files the items do not list (CSV rows, label text files): hash the parsed labels too.
        labels = sorted(
            repr((it.item_id, it.subject_id, it.split, it.expression, it.stress, it.cardiac and it.cardiac.kind))
            for it in items
        )
        payload = {"corpus": self.name, "options": self.options(), "files": entries, "labels": labels}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def options(self) -> dict:
        """The reader's settings that change what it reads (part of the fingerprint)."""
        return {}

    def check(self, item: Item) -> list[Problem]:
        """Problems found by opening the item's files (not by decoding all of them): used by `data summary`. A video
        is probed and its tail decoded (`video_end_problem`), so truncated files are found too. Cardiac ground truth
        is loaded and checked for its sampling rate, gaps (NaN runs, flat stretches) and how it covers the video."""
        from stress_lightning.data.labels import ground_truth_problems  # signal processing: only when checking

        problems: list[Problem] = []
        duration = None
        try:
            media = item.media
            if isinstance(media, ImageFile | CorpusImage):
                image = self.load_image(item)
                if image.ndim != 3 or min(image.shape[:2]) < 8:
                    problems.append(Problem(str(item.files()[0]), f"image too small {image.shape[:2]}"))
            elif isinstance(media, PhysiologyRecord):
                series = self.load_physiology(item)
                values = np.stack([series.hr_bpm, series.rmssd_ms, series.eda])
                if len(series) == 0 or not np.isfinite(values).any():
                    problems.append(Problem(str(media.source), f"record {media.key} has no measured value"))
            elif isinstance(media, VideoFile):
                info = probe_video(media.path)
                duration = info.duration_s
                if duration <= 0:
                    problems.append(Problem(str(media.path), "video has no duration (empty or truncated)"))
                else:
                    # Every reader's videos: a cut download opens and probes like a whole one.
                    reason = video_end_problem(media.path, info)
                    if reason is not None:
                        problems.append(Problem(str(media.path), reason))
            else:
                missing = [p for p in media.paths if not p.is_file()]
                if missing:
                    problems.append(Problem(str(missing[0]), f"frame file is missing ({len(missing)} missing)"))
                if media.timestamps_s is not None:
                    duration = media.timestamps_s[-1] - media.timestamps_s[0]
                else:
                    duration = (len(media.paths) - 1) / float(media.fps)
        except CorpusError as exc:
            problems.append(Problem(str(exc.path), exc.problem))
        if item.cardiac is not None:
            try:
                signal = self.load_cardiac(item)
                if signal is not None:
                    reasons = ground_truth_problems(signal)
                    problems.extend(Problem(str(item.cardiac.path), reason) for reason in reasons)
                if signal is not None and duration is not None:
                    # The video file, or an image sequence's folder.
                    video = item.media.path if isinstance(item.media, VideoFile) else item.files()[0].parent
                    problems.extend(
                        cardiac_coverage_problems(
                            signal, duration, item.cardiac.path, video, ends_with_video=self.cardiac_ends_with_video
                        )
                    )
            except CorpusError as exc:
                problems.append(Problem(str(exc.path), exc.problem))
        return problems


# Video the cardiac ground truth may leave uncovered before it counts as shorter than the video.
COVERAGE_TOLERANCE_S = 1.0
# For a corpus whose ground truth ends with its video: how far past the end it may run, as a share of the video
# (or COVERAGE_TOLERANCE_S if more). A wrong rate is off by far more (64 Hz read as 32 Hz doubles the length).
OVERRUN_TOLERANCE = 0.25


def cardiac_coverage_problems(
    signal: CardiacSignal,
    video_duration_s: float,
    path: Path,
    video: Path | None = None,
    ends_with_video: bool = False,
) -> list[Problem]:
    """Ground truth that starts after the video or ends well before it (more than `COVERAGE_TOLERANCE_S` of video
    uncovered), or, with `ends_with_video`, runs well past its end (a wrong sampling rate). Labels use the overlap;
    these are problems of the ground-truth file `path`, with the `video` named beside it."""
    t = signal.times()
    if len(t) < 2:
        return [Problem(str(path), "ground truth has fewer than 2 samples")]
    the_video = f"the video {video}" if video is not None else "the video"
    uncovered = max(0.0, t[0]) + max(0.0, video_duration_s - t[-1])
    if uncovered > COVERAGE_TOLERANCE_S:
        return [
            Problem(
                str(path),
                f"ground truth covers {max(t[0], 0):.2f}-{t[-1]:.2f} s but {the_video} lasts "
                f"{video_duration_s:.2f} s (ground truth shorter than the video)",
            )
        ]
    if ends_with_video and t[-1] - video_duration_s > max(COVERAGE_TOLERANCE_S, OVERRUN_TOLERANCE * video_duration_s):
        rate = f" ({signal.fs_hz:g} Hz)" if signal.fs_hz else ""
        return [
            Problem(
                str(path),
                f"ground truth runs to {t[-1]:.2f} s but {the_video} lasts {video_duration_s:.2f} s and the two "
                f"should end together (ground truth longer than the video): is its sampling rate{rate} right?",
            )
        ]
    return []


def build_corpus(name: str, on_error: OnError = "fail", **options) -> Corpus:
    """A corpus reader by registry name, with its options."""
    return CORPORA.build(name, on_error=on_error, **options)


def split_subjects(
    subjects: Sequence[str], fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0
) -> dict[str, str]:
    """Subject -> split, subject-disjoint, in the given proportions (by count, in a seeded stable order), with
    at least one subject in each split when there are three or more."""
    unique = sorted(set(subjects))
    rng = np.random.default_rng(zlib.crc32(f"{seed}".encode()))
    order = [unique[i] for i in rng.permutation(len(unique))]
    n = len(order)
    n_val = round(fractions[1] * n)
    n_test = round(fractions[2] * n)
    if n >= 3:
        n_val = max(n_val, 1) if fractions[1] > 0 else 0
        n_test = max(n_test, 1) if fractions[2] > 0 else 0
    n_train = max(n - n_val - n_test, 0)
    result = {}
    for i, s in enumerate(order):
        result[s] = "train" if i < n_train else ("val" if i < n_train + n_val else "test")
    return result
