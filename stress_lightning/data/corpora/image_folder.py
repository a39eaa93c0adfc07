"""Any still-image corpus laid out one folder per split and class: `<root>/<split>/<class>/*.jpg`.

Also the shared pieces of the other still-image readers (FER-2013's folder release, RAF-DB, AffectNet): the
image suffixes, safe item ids and the deterministic carving of a validation set out of a training set.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from stress_lightning.data.corpora.base import CORPORA, Corpus, OnError, split_subjects
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.items import SPLITS, ClassLabel, ImageFile, Item

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# Folder name (lower case) -> split.
SPLIT_FOLDERS: dict[str, str] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "validation": "val",
    "valid": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}
# `Al_Gore_0002.jpg` -> `Al_Gore`, `Dwarakish_103.jpg` -> `Dwarakish`; a stem without a trailing `_<number>`
# is its own subject.
DEFAULT_SUBJECT_PATTERN = r"(.+?)_\d+"

_UNSAFE = re.compile(r"[^A-Za-z0-9._/-]")


def safe_item_id(text: str) -> str:
    """`text` as an item id (letters, digits, `-_./`); unsafe characters become `_` plus a hash of the original,
    so two names that differ only in such characters stay distinct."""
    clean = _UNSAFE.sub("_", text)
    if clean != text:
        clean = f"{clean}-{zlib.crc32(text.encode()):08x}"
    return clean


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder` (by suffix, any case; hidden files left out), sorted."""
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def class_images(split_dir: Path) -> list[tuple[str, Path]]:
    """(class folder name, image path) for every image in `<split_dir>/<class>/`, sorted."""
    pairs: list[tuple[str, Path]] = []
    for class_dir in sorted(d for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith(".")):
        pairs.extend((class_dir.name, path) for path in list_images(class_dir))
    return pairs


def check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return value


def carve(keys: Iterable[str], val_fraction: float = 0.0, test_fraction: float = 0.0, seed: int = 0) -> dict[str, str]:
    """Key (a subject, or an image where each image is its own subject) -> train / val / test: the given
    fractions of the keys move out of train, deterministically for a given set of keys and seed."""
    keys = sorted(set(keys))
    if not keys or val_fraction + test_fraction <= 0:
        return dict.fromkeys(keys, "train")
    if val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction + test_fraction must be below 1, got {val_fraction} + {test_fraction}")
    return split_subjects(keys, (1.0 - val_fraction - test_fraction, val_fraction, test_fraction), seed)


@CORPORA.register("image_folder")
class ImageFolderCorpus(Corpus):
    """Still images in `<root>/<split>/<class>/*.{jpg,jpeg,png,bmp,webp}` (e.g. the muxspace facial expressions).

    Splits: any subset of `train`, `val` (also `validation`, `valid`, `dev`) and `test` (also `training`,
    `testing`) may be present, names in any case. A missing val and/or test is carved out of train
    subject-disjointly (`val_fraction`, `test_fraction` of the train subjects that no other split folder holds,
    `seed`), so a carved split shares no subject with any other; without a train folder nothing is carved. The
    subject of an image is group 1 of `subject_pattern` matched against the whole file stem (default: the stem
    without a trailing `_<number>`, `Al_Gore_0002.jpg` -> `Al_Gore`); a stem that does not match is its own
    subject. The folders that are present are kept as they are: a subject can be in both an official train and
    val folder (the muxspace release has 81 such subjects).

    Labels: the class folder name as is (original label), read through the taxonomy's synonyms (anger/angry,
    happiness/happy, sadness/sad, ...). A folder name that is no known expression stays an original label the
    run counts as unmapped (or maps with its `label_map`), it is not an error. Files with other suffixes are
    ignored; an empty split folder is a problem.

    Args:
        subject_pattern: regex with exactly one group, matched against the whole file stem.
        val_fraction / test_fraction: share of train subjects carved out when that split has no folder.
        seed: seed of the carving.
        prealigned: the images are face crops already (the face pipeline then uses the whole image).
    """

    name = "image_folder"
    layout = "<root>/<split>/<class>/*.{jpg,jpeg,png,bmp,webp}; splits train, val (validation/valid/dev), test"
    url = "any folder-per-class release, e.g. https://github.com/muxspace/facial_expressions"

    def __init__(
        self,
        subject_pattern: str = DEFAULT_SUBJECT_PATTERN,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 0,
        prealigned: bool = False,
        on_error: OnError = "fail",
    ) -> None:
        super().__init__(on_error)
        try:
            self._subject_re = re.compile(subject_pattern)
        except re.error as exc:
            raise ValueError(f"subject_pattern {subject_pattern!r} is not a valid regex: {exc}") from exc
        if self._subject_re.groups != 1:
            raise ValueError(f"subject_pattern {subject_pattern!r} must have exactly one group")
        self.subject_pattern = subject_pattern
        self.val_fraction = check_fraction("val_fraction", val_fraction)
        self.test_fraction = check_fraction("test_fraction", test_fraction)
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must be below 1")
        self.seed = int(seed)
        self.prealigned = bool(prealigned)

    def options(self) -> dict:
        return {
            "subject_pattern": self.subject_pattern,
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            "seed": self.seed,
            "prealigned": self.prealigned,
        }

    def subject_of(self, path: Path) -> str:
        match = self._subject_re.fullmatch(path.stem)
        subject = match.group(1) if match and match.group(1) else path.stem
        return safe_item_id(subject)

    def split_dirs(self, root: Path) -> dict[str, Path]:
        """Split -> its folder under root; two folders for one split is a problem (the plain name is kept)."""
        found: dict[str, Path] = {}
        aliases = list(SPLIT_FOLDERS)
        candidates = [d for d in root.iterdir() if d.is_dir() and d.name.lower() in SPLIT_FOLDERS]
        # The plain name (val) before its aliases (validation, valid, dev).
        for folder in sorted(candidates, key=lambda d: (aliases.index(d.name.lower()), d.name)):
            split = SPLIT_FOLDERS[folder.name.lower()]
            if split in found:
                self.report(folder, f"both {found[split].name}/ and {folder.name}/ would be the {split} split")
                continue
            found[split] = folder
        return found

    def read(self, root: Path) -> list[Item]:
        dirs = self.split_dirs(root)
        if not dirs:
            raise CorpusError(root, f"no split folder (train, val, test) found; expected {self.layout}")
        images: dict[str, list[tuple[str, Path]]] = {}
        for split in SPLITS:
            if split not in dirs:
                continue
            images[split] = class_images(dirs[split])
            if not images[split]:
                self.report(dirs[split], "split folder holds no images (expected <class>/*.jpg in it)")
        assign: dict[str, str] = {}
        if images.get("train"):
            val = self.val_fraction if "val" not in dirs else 0.0
            test = self.test_fraction if "test" not in dirs else 0.0
            # Only subjects that no official val/test folder holds are carved out, so a carved split shares no
            # subject with any other split.
            elsewhere = {self.subject_of(p) for s, pairs in images.items() if s != "train" for _, p in pairs}
            train_subjects = {self.subject_of(p) for _, p in images["train"]}
            assign = carve(train_subjects - elsewhere, val, test, self.seed)
        return image_items(root, images, self.subject_of, assign)


def image_items(
    root: Path,
    images: dict[str, Sequence[tuple[str, Path]]],
    subject_of,
    assign: dict[str, str] | None = None,
) -> list[Item]:
    """Items of (label, path) pairs per split; train items move to `assign[subject]` where it says so."""
    assign = assign or {}
    items: list[Item] = []
    for split, pairs in images.items():
        for label, path in pairs:
            subject = subject_of(path)
            items.append(
                Item(
                    item_id=safe_item_id(path.relative_to(root).as_posix()),
                    subject_id=subject,
                    split=assign.get(subject, split) if split == "train" else split,
                    media=ImageFile(path),
                    expression=ClassLabel(label),
                )
            )
    return items
