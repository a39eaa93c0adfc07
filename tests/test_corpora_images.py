"""Still-image corpus readers (FER-2013, image folders, AffectNet, RAF-DB, CK+) on fixtures written here in each
release's official layout, including malformed variants, in both on_error modes."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from stress_lightning.data.corpora import CORPORA, build_corpus
from stress_lightning.data.corpora.fer2013 import _parse_fer_csv, decode_pixel_rows
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.items import CorpusImage, ImageFile, Item
from stress_lightning.data.taxonomy import BASIC_EXPRESSIONS, LabelMap

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
EIGHT = (*BASIC_EXPRESSIONS, "contempt")


def write_image(path: Path, seed: int = 0, size: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), image)
    return path


def write_corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8 this is not a JPEG at all")
    return path


def label_counts(corpus, items: list[Item], classes=BASIC_EXPRESSIONS) -> tuple[Counter, Counter]:
    label_map = LabelMap(classes, corpus.expression_map)
    for item in items:
        label_map.index(item.expression.label)
    return label_map.mapped, label_map.unmapped


def subjects(items: list[Item], split: str) -> set[str]:
    return {item.subject_id for item in items if item.split == split}


def test_all_registered():
    assert {"fer2013", "image_folder", "affectnet", "rafdb", "ckplus"} <= set(CORPORA.names())
    for name in ("fer2013", "image_folder", "affectnet", "rafdb", "ckplus"):
        corpus = build_corpus(name)
        assert corpus.layout and "http" in corpus.url and isinstance(corpus.options(), dict)


# -- FER-2013 ------------------------------------------------------------------------------------------------
def pixel_string(seed: int) -> str:
    return " ".join(str(v) for v in np.random.default_rng(seed).integers(0, 256, 48 * 48))


def write_fer_csv(path: Path, rows: list[tuple[str, str, str]], header: str = "emotion,pixels,Usage") -> Path:
    """rows: (emotion, usage, pixels), written in the header's column order."""
    names = [c.strip() for c in header.split(",")]
    lines = [header]
    for emotion, usage, pixels in rows:
        values = {"emotion": emotion, "Usage": usage, "pixels": pixels}
        lines.append(",".join(values[n] for n in names))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


FER_GOOD = [(str(i % 7), usage, pixel_string(i)) for i, usage in enumerate(["Training"] * 8 + ["PublicTest"] * 3)]
FER_GOOD.append(("6", "PrivateTest", pixel_string(99)))


def test_fer_csv_reads_splits_labels_and_pixels(tmp_path):
    path = write_fer_csv(tmp_path / "fer2013.csv", FER_GOOD)
    corpus = build_corpus("fer2013")
    items = corpus.read_checked(tmp_path)
    assert Counter(item.split for item in items) == {"train": 8, "val": 3, "test": 1}
    assert items[0].expression.label == "Angry" and items[-1].expression.label == "Neutral"
    assert items[3].media == CorpusImage(path, 3) and corpus.prealigned
    image = corpus.load_image(items[3])
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8
    expected = np.array(FER_GOOD[3][2].split(), dtype=np.uint8).reshape(48, 48)
    np.testing.assert_array_equal(image[..., 0], expected)
    np.testing.assert_array_equal(image[..., 2], expected)
    mapped, unmapped = label_counts(corpus, items)
    assert sum(mapped.values()) == 12 and not unmapped and mapped["angry"] == 2 and mapped["neutral"] == 2
    assert corpus.check(items[0]) == []


def test_fer_csv_is_parsed_once_per_process(tmp_path):
    write_fer_csv(tmp_path / "fer2013.csv", FER_GOOD)
    corpus = build_corpus("fer2013")
    items = corpus.read_checked(tmp_path)
    misses = _parse_fer_csv.cache_info().misses
    for item in items:
        corpus.load_image(item)
    build_corpus("fer2013").read_checked(tmp_path)
    assert _parse_fer_csv.cache_info().misses == misses


def test_fer_kaggle_icml_csv_with_spaced_header(tmp_path):
    write_fer_csv(tmp_path / "icml_face_data.csv", FER_GOOD, header="emotion, Usage, pixels")
    corpus = build_corpus("fer2013", layout="csv")
    items = corpus.read_checked(tmp_path)
    assert len(items) == 12 and items[5].expression.label == "Surprise"
    assert corpus.load_image(items[5]).shape == (48, 48, 3)


def test_fer_csv_bad_rows(tmp_path, bad_input):
    rows = [
        *FER_GOOD,
        ("3", "Training", " ".join(pixel_string(1).split()[:2303])),  # row 12: wrong count
        ("3", "Training", pixel_string(2).replace("1", "x", 1)),  # row 13: non-numeric
        ("9", "Training", pixel_string(3)),  # row 14: unknown code
        ("2", "Training", "256 " + " ".join(pixel_string(4).split()[1:])),  # row 15: out of range
        ("2", "Holdout", pixel_string(5)),  # row 16: unknown usage
    ]
    path = write_fer_csv(tmp_path / "fer2013.csv", rows)
    with pytest.raises(CorpusError, match=r"fer2013\.csv: row 12 \(line 14\): pixels has 2303 values, expected 2304"):
        build_corpus("fer2013").read_checked(tmp_path)
    corpus = build_corpus("fer2013", on_error="skip")
    items = corpus.read_checked(tmp_path)
    assert len(items) == 12
    reasons = {p.reason.split(":")[0]: p for p in corpus.problems}
    assert set(reasons) == {f"row {i} (line {i + 2})" for i in range(12, 17)}
    assert all(p.path == str(path) for p in corpus.problems)
    assert "non-numeric" in reasons["row 13 (line 15)"].reason
    assert "unknown emotion code '9'" in reasons["row 14 (line 16)"].reason
    assert "Holdout" in reasons["row 16 (line 18)"].reason
    with pytest.raises(CorpusError, match="row 13"):
        corpus.load_image(Item("x", "x", "train", CorpusImage(path, 13)))
    for row, case in (
        ("row 12 (line 14)", "FER-2013 CSV row with 2303 pixel values"),
        ("row 14 (line 16)", "FER-2013 CSV emotion code 9 (outside the 7 classes)"),
        ("row 16 (line 18)", "FER-2013 CSV Usage 'Holdout'"),
    ):
        bad_input.record("labels and tables", case, f"{reasons[row].path}: {reasons[row].reason}")


def test_fer_pixel_decoder_edge_cases():
    values, bad = decode_pixel_rows(["1 2 3", "1 2 x", "1 2 256", " 1  2\t3 ", "", "0 00 255", "1 2 3 4"], 3)
    assert set(bad) == {1, 2, 4, 6}
    np.testing.assert_array_equal(values[[0, 3, 5]], [[1, 2, 3], [1, 2, 3], [0, 0, 255]])
    assert "non-numeric" in bad[1] and "0-255" in bad[2] and "0 values" in bad[4] and "4 values" in bad[6]


def write_fer_folders(root: Path, splits=("train", "test"), per_class: int = 3) -> None:
    classes = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    for split in splits:
        prefix = "Training" if split == "train" else "PrivateTest"
        for c, name in enumerate(classes):
            for i in range(per_class):
                write_image(root / split / name / f"{prefix}_{c * 100 + i:08d}.jpg", seed=c * 100 + i, size=48)


def test_fer_folder_release_carves_val(tmp_path):
    write_fer_folders(tmp_path)
    corpus = build_corpus("fer2013")  # auto: no CSV, so the folders
    items = corpus.read_checked(tmp_path)
    split = Counter(item.split for item in items)
    assert split == {"train": 19, "val": 2, "test": 21}  # 10 % of 21 train images
    assert len({item.subject_id for item in items}) == len(items)
    mapped, unmapped = label_counts(corpus, items)
    assert not unmapped and set(mapped) == set(BASIC_EXPRESSIONS)
    again = build_corpus("fer2013").read_checked(tmp_path)
    assert [i.split for i in again] == [i.split for i in items]
    assert corpus.load_image(items[0]).shape == (48, 48, 3)


def test_fer_folder_release_missing_split_and_corrupt_image(tmp_path):
    write_fer_folders(tmp_path, splits=("train",))
    with pytest.raises(CorpusError, match=r"test: split folder is missing"):
        build_corpus("fer2013", layout="folders").read_checked(tmp_path)
    corpus = build_corpus("fer2013", on_error="skip")
    bad = write_corrupt(tmp_path / "train" / "happy" / "Training_99999999.jpg")
    items = corpus.read_checked(tmp_path)
    assert len(items) == 22 and [p.path for p in corpus.problems] == [str(tmp_path / "test")]
    (item,) = [i for i in items if i.media == ImageFile(bad)]
    problems = corpus.check(item)
    assert len(problems) == 1 and problems[0].path == str(bad) and "cannot be decoded" in problems[0].reason


def test_fer_root_without_any_release(tmp_path):
    with pytest.raises(CorpusError, match="neither a FER-2013 CSV"):
        build_corpus("fer2013").read_checked(tmp_path)
    with pytest.raises(CorpusError, match="no FER-2013 CSV found"):
        build_corpus("fer2013", layout="csv").read_checked(tmp_path)


# -- image folders ---------------------------------------------------------------------------------------------
def write_image_folder(root: Path) -> None:
    people = [f"Person_{chr(65 + i)}" for i in range(10)]
    for p, person in enumerate(people):
        for n, folder in enumerate(["anger", "happiness", "sadness", "contempt", "bored"]):
            if (p + n) % 2 == 0:
                write_image(root / "train" / folder / f"{person}_{n + 1:04d}.jpg", seed=p * 10 + n)
    for n, folder in enumerate(["anger", "Happiness", "neutral"]):
        write_image(root / "validation" / folder / f"Val_Person_{n + 1:04d}.png", seed=500 + n)
    write_image(root / "validation" / "neutral" / "12345.jpg", seed=600)  # no trailing _number: own subject
    (root / "train" / "anger" / "notes.txt").write_text("not an image")


def test_image_folder_splits_subjects_and_synonyms(tmp_path):
    write_image_folder(tmp_path)
    corpus = build_corpus("image_folder", test_fraction=0.2)
    items = corpus.read_checked(tmp_path)
    assert len(items) == 25 + 4
    by_split = Counter(item.split for item in items)
    assert by_split["val"] == 4 and by_split["test"] > 0 and by_split["train"] > 0
    assert len(subjects(items, "test")) == 2  # 20 % of the 10 train subjects
    assert not subjects(items, "test") & subjects(items, "train")
    assert subjects(items, "val") == {"Val_Person", "12345"}
    assert all(s.startswith("Person_") for s in subjects(items, "train") | subjects(items, "test"))
    assert {item.expression.label for item in items} == {
        "anger",
        "happiness",
        "Happiness",
        "sadness",
        "contempt",
        "bored",
        "neutral",
    }
    mapped7, unmapped7 = label_counts(corpus, items)
    mapped8, unmapped8 = label_counts(corpus, items, EIGHT)
    n_contempt, n_bored = 5, 5
    assert unmapped7 == {"contempt": n_contempt, "bored": n_bored} and unmapped8 == {"bored": n_bored}
    assert mapped7["happy"] == 6 and mapped8["contempt"] == n_contempt
    again = build_corpus("image_folder", test_fraction=0.2).read_checked(tmp_path)
    assert [i.split for i in again] == [i.split for i in items]


def test_image_folder_subject_pattern_and_only_test(tmp_path):
    write_image(tmp_path / "TEST" / "fear" / "s01-take2.jpg")
    write_image(tmp_path / "TEST" / "fear" / "s02-take1.jpg")
    corpus = build_corpus("image_folder", subject_pattern=r"(s\d+)-take\d+")
    items = corpus.read_checked(tmp_path)
    assert {(i.split, i.subject_id) for i in items} == {("test", "s01"), ("test", "s02")}
    with pytest.raises(ValueError, match="exactly one group"):
        build_corpus("image_folder", subject_pattern=r"\d+")


def test_image_folder_bad_layouts(tmp_path):
    write_image(tmp_path / "images" / "happy" / "a_0001.jpg")
    with pytest.raises(CorpusError, match="no split folder"):
        build_corpus("image_folder").read_checked(tmp_path)
    (tmp_path / "train" / "happy").mkdir(parents=True)
    write_image(tmp_path / "val" / "happy" / "b_0001.jpg")
    with pytest.raises(CorpusError, match=r"train: split folder holds no images"):
        build_corpus("image_folder").read_checked(tmp_path)
    write_image(tmp_path / "dev" / "sad" / "c_0001.jpg")
    corpus = build_corpus("image_folder", on_error="skip")
    items = corpus.read_checked(tmp_path)
    assert [i.item_id for i in items] == ["val/happy/b_0001.jpg"]  # val wins over its alias dev
    assert {p.path for p in corpus.problems} == {str(tmp_path / "train"), str(tmp_path / "dev")}


def test_image_folder_corrupt_image_found_by_check(tmp_path, bad_input):
    write_image(tmp_path / "train" / "happy" / "a_0001.jpg")
    bad = write_corrupt(tmp_path / "train" / "happy" / "b_0001.jpg")
    (tmp_path / "train" / "sad").mkdir()
    (tmp_path / "train" / "sad" / "c_0001.png").write_bytes(b"")
    corpus = build_corpus("image_folder", val_fraction=0.0, test_fraction=0.0)
    items = {i.item_id: i for i in corpus.read_checked(tmp_path)}
    assert corpus.check(items["train/happy/a_0001.jpg"]) == []
    (problem,) = corpus.check(items["train/happy/b_0001.jpg"])
    assert problem.path == str(bad)
    bad_input.record(
        "images", "corrupt JPEG in an image-folder corpus (data summary)", f"{problem.path}: {problem.reason}"
    )
    (problem,) = corpus.check(items["train/sad/c_0001.png"])
    assert "empty" in problem.reason
    bad_input.record(
        "images", "image of 0 bytes in an image-folder corpus (data summary)", f"{problem.path}: {problem.reason}"
    )


@pytest.mark.shared_data
def test_image_folder_on_muxspace():
    root = SHARED_DATA / "faces" / "muxspace"
    if not root.is_dir():
        pytest.skip(f"shared data absent: {root} (the muxspace facial-expression folders) is not there")
    corpus = build_corpus("image_folder")
    items = corpus.read_checked(root)
    assert len(items) == 1962 and not corpus.problems
    counts = Counter((i.item_id.split("/")[0], i.expression.label) for i in items)
    assert counts == {
        ("train", "anger"): 145,
        ("train", "contempt"): 5,
        ("train", "disgust"): 120,
        ("train", "fear"): 12,
        ("train", "happiness"): 461,
        ("train", "neutral"): 461,
        ("train", "sadness"): 154,
        ("train", "surprise"): 212,
        ("val", "anger"): 36,
        ("val", "contempt"): 1,
        ("val", "disgust"): 30,
        ("val", "fear"): 3,
        ("val", "happiness"): 115,
        ("val", "neutral"): 115,
        ("val", "sadness"): 39,
        ("val", "surprise"): 53,
    }
    split = Counter(i.split for i in items)
    assert split["val"] == 392 and split["train"] + split["test"] == 1570 and split["test"] > 50
    # The release's own train/val share subjects; the carved test shares none with either.
    assert not subjects(items, "test") & (subjects(items, "train") | subjects(items, "val"))
    assert subjects(items, "train") & subjects(items, "val")
    mapped7, unmapped7 = label_counts(corpus, items)
    assert unmapped7 == {"contempt": 6} and sum(mapped7.values()) == 1956 and mapped7["happy"] == 576
    mapped8, unmapped8 = label_counts(corpus, items, EIGHT)
    assert not unmapped8 and mapped8["contempt"] == 6
    assert corpus.load_image(items[0]).ndim == 3


# -- AffectNet -------------------------------------------------------------------------------------------------
AFFECTNET_HEADER = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
)


def affectnet_row(rel: str, code: int | str, box=(2, 3, 10, 11)) -> str:
    landmarks = '"' + ";".join(f"{v:.2f}" for v in range(136)) + '"'
    return f"{rel},{box[0]},{box[1]},{box[2]},{box[3]},{landmarks},{code},0.25,-0.5"


def write_affectnet(root: Path, train_codes=range(11), repeat: int = 2, extra_train=(), extra_val=()) -> None:
    train = [AFFECTNET_HEADER]
    n = 0
    for _ in range(repeat):
        for code in train_codes:
            rel = f"{100 + n % 3}/{n:040x}.jpg"
            write_image(root / "Manually_Annotated_Images" / rel, seed=n)
            train.append(affectnet_row(rel, code))
            n += 1
    validation = []  # the official validation.csv has no header
    for code in range(8):
        rel = f"200/{code:040x}.jpg"
        write_image(root / "Manually_Annotated_Images" / rel, seed=900 + code)
        validation.append(affectnet_row(rel, code))
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "training.csv").write_text("\n".join([*train, *extra_train]) + "\n")
    (lists / "validation.csv").write_text("\n".join([*validation, *extra_val]) + "\n")


def test_affectnet_labels_boxes_splits(tmp_path):
    write_affectnet(tmp_path, repeat=4)
    corpus = build_corpus("affectnet")
    items = corpus.read_checked(tmp_path)
    split = Counter(item.split for item in items)
    assert split == {"train": 42, "val": 2, "test": 8}  # 5 % of 44 training rows, validation -> test
    item = items[0]
    assert isinstance(item.media, ImageFile) and item.media.face_box == (2.0, 3.0, 12.0, 14.0)
    assert dict(item.attributes) == {"valence": "0.25", "arousal": "-0.5"}
    assert item.subject_id == item.item_id and item.item_id.startswith("100/")
    assert corpus.load_image(item).shape == (16, 16, 3)
    mapped7, unmapped7 = label_counts(corpus, items)
    assert unmapped7 == {"contempt": 5, "none": 4, "uncertain": 4, "non-face": 4}
    assert mapped7["angry"] == 5 and sum(mapped7.values()) == 35
    mapped8, unmapped8 = label_counts(corpus, items, EIGHT)
    assert mapped8["contempt"] == 5 and unmapped8 == {"none": 4, "uncertain": 4, "non-face": 4}


def test_affectnet_problems(tmp_path):
    write_affectnet(
        tmp_path,
        train_codes=range(8),
        extra_train=[
            affectnet_row("100/missing.jpg", 1),
            affectnet_row("100/0000000000000000000000000000000000000000.jpg", 1),
        ],
        extra_val=[affectnet_row("200/other.jpg", 11), affectnet_row("200/box.jpg", 2, box=(1, 1, 0, 5))],
    )
    with pytest.raises(CorpusError, match=r"Manually_Annotated_Images/100/missing\.jpg: image file is missing"):
        build_corpus("affectnet").read_checked(tmp_path)
    corpus = build_corpus("affectnet", on_error="skip")
    items = corpus.read_checked(tmp_path)
    assert len(items) == 16 + 8
    lists = tmp_path / "Manually_Annotated_file_lists"
    found = {(Path(p.path).name, p.reason.split(":")[0]) for p in corpus.problems}
    assert found == {
        ("missing.jpg", "image file is missing"),
        ("training.csv", "row 17 (line 19)"),  # listed twice
        ("validation.csv", "row 8 (line 9)"),  # unknown code 11 (validation.csv has no header line)
        ("validation.csv", "row 9 (line 10)"),  # face box without area
    }
    assert any("unknown expression code '11'" in p.reason for p in corpus.problems)
    assert all(Path(p.path).parent in (lists, tmp_path / "Manually_Annotated_Images" / "100") for p in corpus.problems)


def test_affectnet_missing_list_and_images(tmp_path):
    with pytest.raises(CorpusError, match="Manually_Annotated_Images: image folder is missing"):
        build_corpus("affectnet").read_checked(tmp_path)
    write_affectnet(tmp_path, train_codes=range(3), repeat=1)
    (tmp_path / "Manually_Annotated_file_lists" / "training.csv").unlink()
    with pytest.raises(CorpusError, match=r"training\.csv: file is missing"):
        build_corpus("affectnet").read_checked(tmp_path)
    corpus = build_corpus("affectnet", on_error="skip")
    items = corpus.read_checked(tmp_path)
    assert {i.split for i in items} == {"test"} and len(corpus.problems) == 1


# -- RAF-DB ----------------------------------------------------------------------------------------------------
def write_rafdb(root: Path, n_train: int = 20, n_test: int = 7, extra_lines=()) -> None:
    lines = []
    for i in range(1, n_train + 1):
        lines.append(f"train_{i:05d}.jpg {(i - 1) % 7 + 1}")
    for i in range(1, n_test + 1):
        lines.append(f"test_{i:04d}.jpg {(i - 1) % 7 + 1}")
    for n, line in enumerate(lines):
        name = line.split()[0]
        stem = name.removesuffix(".jpg")
        write_image(root / "Image" / "aligned" / f"{stem}_aligned.jpg", seed=n, size=100)
        write_image(root / "Image" / "original" / name, seed=n, size=40)
    (root / "EmoLabel").mkdir(parents=True, exist_ok=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join([*lines, *extra_lines]) + "\n")


def test_rafdb_aligned_and_original(tmp_path):
    write_rafdb(tmp_path / "basic")
    corpus = build_corpus("rafdb")
    items = corpus.read_checked(tmp_path)  # root holding basic/ is read from there
    assert Counter(i.split for i in items) == {"train": 18, "val": 2, "test": 7}
    assert corpus.prealigned and items[0].media.path.name == "train_00001_aligned.jpg"
    assert items[0].expression.label == "surprise" and items[3].expression.label == "happiness"
    mapped, unmapped = label_counts(corpus, items)
    assert not unmapped and set(mapped) == set(BASIC_EXPRESSIONS)
    original = build_corpus("rafdb", images="original")
    items2 = original.read_checked(tmp_path / "basic")
    assert not original.prealigned and items2[0].media.path.name == "train_00001.jpg"
    assert [i.split for i in items2] == [i.split for i in items]
    assert build_corpus("rafdb").prealigned


def test_rafdb_problems(tmp_path, bad_input):
    write_rafdb(tmp_path, extra_lines=["train_09999.jpg 2", "test_0042.jpg 8", "train_00003.jpg", "val_001.jpg 1"])
    label_file = tmp_path / "EmoLabel" / "list_patition_label.txt"
    with pytest.raises(CorpusError, match=r"train_09999_aligned\.jpg: image file is missing"):
        build_corpus("rafdb").read_checked(tmp_path)
    corpus = build_corpus("rafdb", on_error="skip")
    items = corpus.read_checked(tmp_path)
    assert len(items) == 27
    reasons = sorted(p.reason for p in corpus.problems if p.path == str(label_file))
    assert [r.split(":")[0] for r in reasons] == ["line 29", "line 30", "line 31"]
    assert "unknown label code '8'" in reasons[0] and "cannot parse" in reasons[1] and "neither" in reasons[2]
    bad_input.record("labels and tables", "RAF-DB label code 8 (outside 1-7)", f"{label_file}: {reasons[0]}")
    bad_input.record("labels and tables", "RAF-DB label line without its label field", f"{label_file}: {reasons[1]}")
    write_corrupt(tmp_path / "Image" / "aligned" / "test_0001_aligned.jpg")
    (item,) = [i for i in items if i.item_id == "test_0001"]
    (problem,) = corpus.check(item)
    assert problem.path.endswith("test_0001_aligned.jpg")


def test_rafdb_missing_parts(tmp_path):
    with pytest.raises(CorpusError, match=r"list_patition_label\.txt: label file is missing"):
        build_corpus("rafdb").read_checked(tmp_path)
    write_rafdb(tmp_path, n_test=0)
    corpus = build_corpus("rafdb", on_error="skip")
    corpus.read_checked(tmp_path)
    assert [p.reason for p in corpus.problems] == ["lists no usable test image (the test split is empty)"]
    shutil.rmtree(tmp_path / "Image" / "original")
    with pytest.raises(CorpusError, match=r"original: image folder is missing"):
        build_corpus("rafdb", images="original").read_checked(tmp_path)


# -- CK+ -------------------------------------------------------------------------------------------------------
def write_ckplus(root: Path, n_subjects: int = 8, nested: bool = False) -> dict[str, int]:
    """Sequences S0xx/00y with 6 frames; sequence 003 of every subject is unlabelled. Returns codes by seq."""
    images = root / ("extended-cohn-kanade-images/cohn-kanade-images" if nested else "cohn-kanade-images")
    emotion = root / ("Emotion_labels/Emotion" if nested else "Emotion")
    codes = {}
    for s in range(n_subjects):
        subject = f"S{5 + s * 5:03d}"
        for q in (1, 2, 3):
            sequence = f"{q:03d}"
            for f in range(1, 7):
                write_image(
                    images / subject / sequence / f"{subject}_{sequence}_{f:08d}.png", seed=s * 100 + q * 10 + f
                )
            if q == 3:
                continue
            code = (s * 2 + q) % 7 + 1
            folder = emotion / subject / sequence
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{subject}_{sequence}_00000006_emotion.txt").write_text(f"   {float(code):.7e}\n")
            codes[f"{subject}/{sequence}"] = code
    (images / "S005" / ".DS_Store").write_bytes(b"\0")
    return codes


def test_ckplus_peak_and_neutral_frames_subject_disjoint(tmp_path):
    codes = write_ckplus(tmp_path)
    corpus = build_corpus("ckplus")
    items = corpus.read_checked(tmp_path)
    assert corpus.unlabelled_sequences == 8 and not corpus.problems
    assert len(items) == 16 * 4  # 3 peak frames + the first frame per labelled sequence
    seq = [i for i in items if i.item_id.startswith("S005/001/")]
    assert [i.item_id.rsplit("_", 1)[1] for i in seq] == ["00000001", "00000004", "00000005", "00000006"]
    assert seq[0].expression.label == "neutral"
    names = ("neutral", "anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")
    assert {i.expression.label for i in seq[1:]} == {names[codes["S005/001"]]}
    splits = {split: subjects(items, split) for split in ("train", "val", "test")}
    assert all(splits.values()) and sum(len(s) for s in splits.values()) == 8
    assert not (splits["train"] & splits["val"] or splits["train"] & splits["test"] or splits["val"] & splits["test"])
    mapped7, unmapped7 = label_counts(corpus, items)
    n_contempt = sum(3 for c in codes.values() if c == 2)
    assert unmapped7 == ({"contempt": n_contempt} if n_contempt else {}) and mapped7["neutral"] == 16
    mapped8, unmapped8 = label_counts(corpus, items, EIGHT)
    assert not unmapped8 and mapped8["contempt"] == n_contempt > 0
    few = build_corpus("ckplus", peak_frames=1, neutral_first_frame=False).read_checked(tmp_path)
    assert len(few) == 16 and all(i.item_id.endswith("_00000006") for i in few)


def test_ckplus_nested_release_folders(tmp_path):
    write_ckplus(tmp_path, n_subjects=3, nested=True)
    corpus = build_corpus("ckplus", split_fractions=[0.34, 0.33, 0.33])
    items = corpus.read_checked(tmp_path)
    assert len(items) == 24 and {len(subjects(items, s)) for s in ("train", "val", "test")} == {1}


def test_ckplus_problems(tmp_path):
    write_ckplus(tmp_path, n_subjects=3)
    emotion = tmp_path / "Emotion"
    (emotion / "S005" / "001" / "S005_001_00000006_emotion.txt").write_text("   9.0000000e+00\n")
    (emotion / "S010" / "002" / "S010_002_00000006_emotion.txt").write_text("happy\n")
    (emotion / "S015" / "001" / "S015_001_00000006_emotion.txt").rename(
        emotion / "S015" / "001" / "S015_001_00000009_emotion.txt"
    )
    orphan = emotion / "S999" / "001"
    orphan.mkdir(parents=True)
    (orphan / "S999_001_00000004_emotion.txt").write_text("   1.0000000e+00\n")
    with pytest.raises(CorpusError, match=r"S005_001_00000006_emotion\.txt: unknown emotion code"):
        build_corpus("ckplus").read_checked(tmp_path)
    corpus = build_corpus("ckplus", on_error="skip")
    items = corpus.read_checked(tmp_path)
    assert len(items) == 3 * 4 and corpus.unlabelled_sequences == 3
    found = {(Path(p.path).name, p.reason.split(" ")[0]) for p in corpus.problems}
    assert found == {
        ("S005_001_00000006_emotion.txt", "unknown"),
        ("S010_002_00000006_emotion.txt", "cannot"),
        ("S015_001_00000009_emotion.txt", "labels"),
        ("001", "labelled"),
    }
    shutil.rmtree(emotion)
    with pytest.raises(CorpusError, match="Emotion: emotion label folder is missing"):
        build_corpus("ckplus").read_checked(tmp_path)
