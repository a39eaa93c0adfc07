"""CK+ (Extended Cohn-Kanade): posed sequences from neutral to peak expression, 123 subjects, 327 labelled."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stress_lightning.data.corpora.base import CORPORA, Corpus, OnError, split_subjects
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.items import ClassLabel, ImageFile, Item

# emotion code -> original name (the release's Emotion_labels README).
CKPLUS_LABELS: tuple[str, ...] = ("neutral", "anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")
# The images come as extended-cohn-kanade-images.zip (top folder cohn-kanade-images/) and the labels as
# Emotion_labels.zip (top folder Emotion/). Unpacked into root they give cohn-kanade-images/ and Emotion/;
# unpacked with "extract to <archive name>/" (the default of most archive tools, and the layout of many copies
# of the release, e.g. CK+/extended-cohn-kanade-images/cohn-kanade-images) they are one folder deeper.
IMAGE_FOLDERS: tuple[str, ...] = ("cohn-kanade-images", "extended-cohn-kanade-images/cohn-kanade-images")
EMOTION_FOLDERS: tuple[str, ...] = ("Emotion", "Emotion_labels/Emotion")


def subfolders(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


@CORPORA.register("ckplus")
class CkPlusCorpus(Corpus):
    """CK+ as still images: the peak frames of each labelled sequence and its first (neutral) frame.

    Layout: `cohn-kanade-images/Sxxx/yyy/Sxxx_yyy_zzzzzzzz.png` and `Emotion/Sxxx/yyy/Sxxx_yyy_zzzzzzzz_emotion.txt`
    (also one folder deeper: `extended-cohn-kanade-images/cohn-kanade-images`, `Emotion_labels/Emotion`). The
    emotion file holds one float (`   3.0000000e+00`) and names the sequence's peak frame (its last).

    Labels: 0 neutral, 1 anger, 2 contempt, 3 disgust, 4 fear, 5 happy, 6 sadness, 7 surprise. Contempt is the
    canonical "contempt": a 7-class run drops it (counted as unmapped), an 8-class run keeps it. A code outside
    0-7, a file that is not one number, a label naming a frame the sequence lacks, or a labelled sequence
    without images is a problem naming the file. Sequences without an emotion file (266 of 593) are unlabelled:
    skipped silently and counted in `unlabelled_sequences`.

    Items: the last `peak_frames` frames up to the labelled frame, with its label, plus (`neutral_first_frame`)
    the sequence's first frame as neutral. Whole frames (640x490 or 640x480): the face pipeline detects the face.

    Splits: subject-disjoint (`split_subjects` over the subjects with labelled sequences), `split_fractions`
    (train, val, test) with `seed`.

    Args:
        peak_frames: frames per sequence taken at its peak (>= 1).
        neutral_first_frame: add the first frame of each labelled sequence as neutral.
        split_fractions: train, val, test shares of the subjects.
        seed: seed of the split.
    """

    name = "ckplus"
    layout = "cohn-kanade-images/Sxxx/yyy/*.png and Emotion/Sxxx/yyy/*_emotion.txt"
    url = "https://www.jeffcohn.net/Resources/"
    expression_map = {
        "neutral": "neutral",
        "anger": "angry",
        "contempt": "contempt",
        "disgust": "disgust",
        "fear": "fear",
        "happy": "happy",
        "sadness": "sad",
        "surprise": "surprise",
    }

    def __init__(
        self,
        peak_frames: int = 3,
        neutral_first_frame: bool = True,
        split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
        seed: int = 0,
        on_error: OnError = "fail",
    ) -> None:
        super().__init__(on_error)
        if int(peak_frames) < 1:
            raise ValueError(f"ckplus: peak_frames must be at least 1, got {peak_frames}")
        fractions = tuple(float(f) for f in split_fractions)
        if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
            raise ValueError(
                f"ckplus: split_fractions must be three non-negative numbers summing to 1, got {fractions}"
            )
        self.peak_frames = int(peak_frames)
        self.neutral_first_frame = bool(neutral_first_frame)
        self.split_fractions: tuple[float, float, float] = fractions  # type: ignore[assignment]
        self.seed = int(seed)
        self.unlabelled_sequences = 0

    def options(self) -> dict:
        return {
            "peak_frames": self.peak_frames,
            "neutral_first_frame": self.neutral_first_frame,
            "split_fractions": list(self.split_fractions),
            "seed": self.seed,
        }

    def read(self, root: Path) -> list[Item]:
        images = next((root / f for f in IMAGE_FOLDERS if (root / f).is_dir()), None)
        if images is None:
            raise CorpusError(root / IMAGE_FOLDERS[0], "image folder is missing")
        emotions = next((root / f for f in EMOTION_FOLDERS if (root / f).is_dir()), None)
        if emotions is None:
            raise CorpusError(root / EMOTION_FOLDERS[0], "emotion label folder is missing")
        labelled: dict[tuple[str, str], Path] = {}  # (subject, sequence) -> label folder
        for subject in subfolders(emotions):
            for sequence in subfolders(subject):
                labelled[(subject.name, sequence.name)] = sequence
        self.unlabelled_sequences = 0
        pending: list[tuple[str, str, str]] = []  # (subject, frame path, label) before the split
        for subject in subfolders(images):
            for sequence in subfolders(subject):
                label_dir = labelled.pop((subject.name, sequence.name), None)
                label_files = sorted(label_dir.glob("*_emotion.txt")) if label_dir is not None else []
                if not label_files:
                    self.unlabelled_sequences += 1
                    continue
                if len(label_files) > 1:
                    self.report(label_dir, f"holds {len(label_files)} emotion files, expected one")
                    continue
                for frame, label in self.sequence_frames(sequence, label_files[0]):
                    pending.append((subject.name, frame, label))
        for (subject, sequence), label_dir in sorted(labelled.items()):
            if any(label_dir.glob("*_emotion.txt")):
                self.report(label_dir, f"labelled sequence {subject}/{sequence} has no image folder")
        assign = split_subjects([s for s, _, _ in pending], self.split_fractions, self.seed)
        return [
            Item(
                item_id=f"{subject}/{Path(frame).parent.name}/{Path(frame).stem}",
                subject_id=subject,
                split=assign[subject],
                media=ImageFile(Path(frame)),
                expression=ClassLabel(label),
            )
            for subject, frame, label in pending
        ]

    def sequence_frames(self, sequence: Path, label_file: Path) -> list[tuple[str, str]]:
        """(frame path, label) of one labelled sequence, or [] after reporting a problem."""
        text = label_file.read_text(errors="replace").strip()
        try:
            value = float(text)
        except ValueError:
            self.report(label_file, f"cannot parse emotion label {text[:40]!r}; expected one number 0-7")
            return []
        if not value.is_integer() or not 0 <= value < len(CKPLUS_LABELS):
            self.report(label_file, f"unknown emotion code {text!r}; known 0-7")
            return []
        frames = sorted(p for p in sequence.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith("."))
        if not frames:
            self.report(sequence, "labelled sequence holds no PNG frames")
            return []
        peak_name = label_file.name.removesuffix("_emotion.txt") + ".png"
        peak = next((i for i, p in enumerate(frames) if p.name == peak_name), None)
        if peak is None:
            self.report(label_file, f"labels frame {peak_name} which is not in {sequence}")
            return []
        first = 1 if self.neutral_first_frame and peak > 0 else 0
        chosen = frames[max(first, peak + 1 - self.peak_frames) : peak + 1]
        result = [(str(p), CKPLUS_LABELS[int(value)]) for p in chosen]
        if first:
            result.insert(0, (str(frames[0]), "neutral"))
        return result
