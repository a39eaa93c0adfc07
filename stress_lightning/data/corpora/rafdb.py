"""RAF-DB basic: 15,339 in-the-wild face images with 7 expressions, official train/test partition."""

from __future__ import annotations

from pathlib import Path

from stress_lightning.data.corpora.base import CORPORA, Corpus, OnError
from stress_lightning.data.corpora.image_folder import carve, check_fraction, safe_item_id
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.items import ClassLabel, ImageFile, Item

# label code -> original name (the release's README).
RAFDB_LABELS: dict[str, str] = {
    "1": "surprise",
    "2": "fear",
    "3": "disgust",
    "4": "happiness",
    "5": "sadness",
    "6": "anger",
    "7": "neutral",
}
LABEL_FILE = "EmoLabel/list_patition_label.txt"  # sic: the official file name
IMAGE_OPTIONS: tuple[str, ...] = ("aligned", "original")


@CORPORA.register("rafdb")
class RafDbCorpus(Corpus):
    """RAF-DB basic, each image its own subject (the release has no subject ids).

    Layout: `EmoLabel/list_patition_label.txt` (lines `train_00001.jpg 5`, `test_0001.jpg 1`) and the images in
    `Image/aligned/<stem>_aligned.jpg` (`images: aligned`, the 100x100 aligned faces: prealigned) or
    `Image/original/<name>` (`images: original`, whole photos: the face pipeline detects the face). A root
    holding `basic/` (the release's top folder) is read from there.

    Labels: 1 surprise, 2 fear, 3 disgust, 4 happiness, 5 sadness, 6 anger, 7 neutral (the 7 basic classes).
    Any other code, a line that is not `<name> <code>`, a name with neither a train_ nor a test_ prefix, or a
    missing image is a problem naming the file and line.

    Splits: train and test from the file-name prefix (the official partition); val is carved out of train,
    `val_fraction` of its images, deterministic for a given `seed`.

    Args:
        images: aligned or original.
        val_fraction: share of the train images carved out as val.
        seed: seed of the carving.
    """

    name = "rafdb"
    layout = "EmoLabel/list_patition_label.txt and Image/aligned/<stem>_aligned.jpg (or Image/original/<name>)"
    url = "http://www.whdeng.cn/raf/model1.html"
    expression_map = {
        "surprise": "surprise",
        "fear": "fear",
        "disgust": "disgust",
        "happiness": "happy",
        "sadness": "sad",
        "anger": "angry",
        "neutral": "neutral",
    }

    def __init__(
        self, images: str = "aligned", val_fraction: float = 0.1, seed: int = 0, on_error: OnError = "fail"
    ) -> None:
        super().__init__(on_error)
        if images not in IMAGE_OPTIONS:
            raise ValueError(f"rafdb: images must be one of {IMAGE_OPTIONS}, got {images!r}")
        self.images = images
        # The aligned set is face crops; original photos need face detection.
        self.prealigned = images == "aligned"
        self.val_fraction = check_fraction("val_fraction", val_fraction)
        self.seed = int(seed)

    def options(self) -> dict:
        return {"images": self.images, "val_fraction": self.val_fraction, "seed": self.seed}

    def image_path(self, root: Path, name: str) -> Path:
        if self.images == "aligned":
            return root / "Image" / "aligned" / f"{Path(name).stem}_aligned.jpg"
        return root / "Image" / "original" / name

    def read(self, root: Path) -> list[Item]:
        if not (root / LABEL_FILE).is_file() and (root / "basic" / LABEL_FILE).is_file():
            root = root / "basic"
        label_file = root / LABEL_FILE
        if not label_file.is_file():
            raise CorpusError(label_file, "label file is missing")
        image_dir = root / "Image" / self.images
        if not image_dir.is_dir():
            raise CorpusError(image_dir, f"image folder is missing (unpack Image/{self.images}.zip there)")
        entries: list[tuple[str, str, str]] = []  # (name, split, label) of every well-formed line
        present: set[str] = set()
        seen: set[str] = set()
        for number, line in enumerate(label_file.read_text(errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                self.report(label_file, f"line {number}: cannot parse {line.strip()!r}; expected '<image> <label>'")
                continue
            name, code = parts
            split = name.split("_", 1)[0]
            if split not in ("train", "test"):
                self.report(label_file, f"line {number}: image {name!r} starts with neither train_ nor test_")
                continue
            if code not in RAFDB_LABELS:
                self.report(label_file, f"line {number}: unknown label code {code!r}; known 1-7")
                continue
            if name in seen:
                self.report(label_file, f"line {number}: image {name!r} is listed twice")
                continue
            seen.add(name)
            entries.append((name, split, RAFDB_LABELS[code]))
            if self.image_path(root, name).is_file():
                present.add(name)
            else:
                self.report(self.image_path(root, name), "image file is missing")
        # Carved over every listed train image, so the split does not depend on which files are present.
        carved = carve((n for n, s, _ in entries if s == "train"), self.val_fraction, 0.0, self.seed)
        items: list[Item] = []
        for name, split, label in entries:
            if name not in present:
                continue
            path = self.image_path(root, name)
            item_id = safe_item_id(Path(name).stem)
            items.append(
                Item(
                    item_id=item_id,
                    subject_id=item_id,
                    split=carved.get(name, split) if split == "train" else split,
                    media=ImageFile(path),
                    expression=ClassLabel(label),
                )
            )
        for split in ("train", "test"):
            if not any(item.split == split or (split == "train" and item.split == "val") for item in items):
                self.report(label_file, f"lists no usable {split} image (the {split} split is empty)")
        return items
