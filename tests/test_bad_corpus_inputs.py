"""Bad corpus files, tried for real against the readers and the shared decode path: videos that are cut, corrupt,
empty, audio-only or in a codec FFmpeg cannot decode; images that are empty or cut (and valid grey, CMYK and
16-bit images, which must be read, not refused); CSV rows with a missing or an extra field and labels outside the
taxonomy; ECG with NaN runs, flat stretches, the wrong length, and sampling rates missing or absurd.

Each bad input records what the user sees in the bad-input table (tests/bad_inputs.py, docs/BAD_INPUTS.md).
Where a whole corpus must not stop at one bad file, the reader's on_error="skip" leaves it out and lists it (what
`data summary` prints); with "fail" (training's default) the same problem is a CorpusError naming the file.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import av
import cv2
import numpy as np
import pyedflib
import pytest
from PIL import Image

from stress_lightning.commands.data import summarize
from stress_lightning.data.corpora import build_corpus
from stress_lightning.data.corpora.mahnob_hci import EcgLead, bdf_sync
from stress_lightning.data.errors import CorpusError, VideoDecodeError
from stress_lightning.data.items import CARDIAC_FS_RANGE_HZ, CardiacSignal
from stress_lightning.data.labels import GAP_MARGIN_S, GroundTruthWarning, cardiac_truth
from stress_lightning.data.taxonomy import BASIC_EXPRESSIONS, STRESS_LEVELS
from stress_lightning.data.video import iter_timed_frames, probe_video, read_image, video_end_problem
from stress_lightning.signals.ecg import MIN_ECG_FS_HZ

ECG_FS = 250.0


def frames_at(times: list[float], size: int = 32, seed: int = 0) -> list[tuple[float, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(t, rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for t in times]


def ecg(seconds: float, fs: float = ECG_FS, bpm: float = 72.0) -> np.ndarray:
    """Narrow R waves at a steady rate on a slow baseline."""
    t = np.arange(0, seconds, 1 / fs)
    phase = (t * bpm / 60.0) % 1.0
    return np.exp(-(((phase - 0.5) / 0.01) ** 2)) + 0.01 * np.sin(2 * np.pi * 0.3 * t)


def write_ecg_csv(path: Path, values: np.ndarray, times: np.ndarray | None = None) -> Path:
    """A manifest cardiac CSV; NaN written as an empty cell (a dropout, as spreadsheets export it)."""
    cells = ["" if np.isnan(v) else f"{v:.6f}" for v in values]
    if times is None:
        path.write_text("ecg\n" + "\n".join(cells) + "\n")
    else:
        path.write_text("time_s,ecg\n" + "\n".join(f"{t:.6f},{c}" for t, c in zip(times, cells, strict=True)) + "\n")
    return path


def manifest_corpus(root: Path, rows: list[dict], on_error: str = "skip"):
    """A JSONL manifest of `rows` under root, read; returns (items, corpus)."""
    (root / "manifest.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    corpus = build_corpus("manifest", path="manifest.jsonl", on_error=on_error)
    return corpus.read_checked(root), corpus


def problem_lines(problems) -> str:
    """Problems as `data summary` prints them."""
    return "\n".join(f"{p.path}: {p.reason}" for p in problems)


# -- corpus files: videos -------------------------------------------------------------------------------------
def _cut(path: Path, share: float) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * share)])


def _random_mkv(path: Path) -> None:
    path.write_bytes(b"\x1a\x45\xdf\xa3" + np.random.default_rng(0).bytes(4096))  # Matroska magic, then noise


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _audio_only(path: Path) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _unknown_fourcc(path: Path) -> None:
    # An MPEG-4 AVI whose FourCC (FMP4, in the stream header and the BITMAPINFOHEADER) names no known codec.
    data = path.read_bytes()
    assert data.count(b"FMP4") == 2
    path.write_bytes(data.replace(b"FMP4", b"ZZZZ"))


def _header_only(path: Path) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=30)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        out.start_encoding()


VIDEO_CASES = {
    # case: (file name, whether a good video is written first, how it is spoiled, what the error says)
    "MP4 cut at 40 % of its bytes (its index is lost)": ("cut.mp4", True, lambda p: _cut(p, 0.4), "cannot open"),
    "random bytes behind a Matroska signature": ("noise.mkv", False, _random_mkv, "cannot open video"),
    "video file of 0 bytes": ("empty.mp4", False, _empty, "empty (0 bytes)"),
    "audio-only MP4 given as the video": ("audio.mp4", False, _audio_only, "no video stream (only audio (aac))"),
    "AVI whose codec FourCC no decoder knows": ("fourcc.avi", True, _unknown_fourcc, "cannot decode"),
    "MKV with a header and zero frames": ("zero.mkv", False, _header_only, "cannot open video (End of file)"),
    "AVI with a header and zero frames": ("zero.avi", False, _header_only, "no decodable frame (zero frames)"),
}


@pytest.mark.parametrize("case", list(VIDEO_CASES))
def test_unusable_video_names_the_file_and_the_problem(case: str, tmp_path: Path, video_writer, bad_input) -> None:
    name, write_first, spoil, expected = VIDEO_CASES[case]
    path = tmp_path / name
    if write_first:
        video_writer(path, frames_at([k / 30 for k in range(30)]), rate=30)
    spoil(path)
    with pytest.raises(VideoDecodeError) as err:
        list(iter_timed_frames(path))
    assert err.value.path == path and str(err.value).startswith(f"{path}: ") and expected in str(err.value)
    # `data summary` (Corpus.check) finds it without decoding the whole file, in the same words or as no duration.
    summary_reason = video_end_problem(path)
    assert summary_reason is not None
    bad_input.record("corpus files", case, str(err.value))


def test_variable_frame_rate_video_is_read_by_its_timestamps(tmp_path: Path, video_writer) -> None:
    """Not a bad input: frame intervals of 33, 67 and 100 ms (a phone's VFR capture) keep their times."""
    steps = np.tile([1 / 30, 1 / 15, 1 / 10], 10)
    times = np.concatenate(([0.0], np.cumsum(steps)))
    path = tmp_path / "vfr.mp4"
    video_writer(path, frames_at(list(times)), rate=30)
    decoded = np.array([t for t, _ in iter_timed_frames(path)])
    np.testing.assert_allclose(decoded, times, atol=1.5e-3)
    assert video_end_problem(path) is None and probe_video(path).duration_s == pytest.approx(times[-1], abs=0.11)


# -- images ---------------------------------------------------------------------------------------------------
RGB = np.stack(
    [np.full((32, 32), 200), np.tile(np.arange(32) * 8, (32, 1)), np.tile(np.arange(32)[:, None] * 7, (1, 32))], -1
).astype(np.uint8)
GREY = (np.arange(32 * 32).reshape(32, 32) % 256).astype(np.uint8)


def _grey3(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=2)


@pytest.mark.parametrize(
    ("name", "write", "expected", "tolerance"),
    [
        ("grey.png", lambda p: Image.fromarray(GREY).save(p), _grey3(GREY), 0),
        ("grey.jpg", lambda p: Image.fromarray(GREY).save(p, quality=100), _grey3(GREY), 2),
        ("cmyk.jpg", lambda p: Image.fromarray(RGB).convert("CMYK").save(p, quality=100), RGB, 3),
        ("cmyk.tif", lambda p: Image.fromarray(RGB).convert("CMYK").save(p), RGB, 0),
        # 16 bits: scaled to 8 (v / 257 for a full-range image), never clipped at 255.
        ("grey16.png", lambda p: cv2.imwrite(str(p), GREY.astype(np.uint16) * 257), _grey3(GREY), 0),
        ("rgb16.png", lambda p: cv2.imwrite(str(p), (RGB.astype(np.uint16) * 257)[..., ::-1]), RGB, 0),
        ("rgb16.tif", lambda p: cv2.imwrite(str(p), (RGB.astype(np.uint16) * 257)[..., ::-1]), RGB, 0),
        ("rgba.png", lambda p: Image.fromarray(np.dstack([RGB, np.full((32, 32), 90, np.uint8)])).save(p), RGB, 0),
    ],
)
def test_grey_cmyk_and_16_bit_images_are_read_as_rgb(tmp_path: Path, name: str, write, expected, tolerance) -> None:
    """Valid images in other colour models or depths are read as RGB uint8, not refused."""
    path = tmp_path / name
    write(path)
    image = read_image(path)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - expected.astype(int)).max() <= tolerance


IMAGE_CASES = {
    # case: (content, None for a JPEG cut in half; the problem's words)
    "image file of 0 bytes": (b"", "image file is empty"),
    "JPEG cut in half": (None, "cannot be decoded as an image"),
    "text saved as .png": (b"not an image at all\n", "cannot be decoded as an image"),
}


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_unusable_image_names_the_file(tmp_path: Path, case: str, bad_input) -> None:
    content, expected = IMAGE_CASES[case]
    path = tmp_path / "face.png"
    if content is None:
        path = tmp_path / "face.jpg"
        Image.fromarray(RGB).save(path, quality=95)
        _cut(path, 0.5)
    else:
        path.write_bytes(content)
    with pytest.raises(CorpusError) as err:
        read_image(path)
    assert err.value.path == path and expected in err.value.problem
    bad_input.record("images", case, str(err.value))


# -- labels and tables ----------------------------------------------------------------------------------------
def _fer_row(code: int, usage: str = "Training", seed: int = 0) -> str:
    pixels = " ".join(map(str, np.random.default_rng(seed).integers(0, 256, 48 * 48)))
    return f"{code},{pixels},{usage}"


FER_ROWS = {
    # case: (the bad line, where it goes among six good rows (0 = first data row), the problem's words)
    "FER-2013 CSV row with the pixels field missing": ("3,Training", 3, "has 2 fields but the header has 3"),
    "FER-2013 CSV row with an extra field": (_fer_row(3) + ",extra", 3, "has 4 fields but the header has 3"),
    "FER-2013 CSV first data row with an extra field": (_fer_row(3) + ",extra", 0, "has 4 fields"),
}


@pytest.mark.parametrize("case", list(FER_ROWS))
def test_fer_csv_row_with_missing_or_extra_fields_is_left_out(tmp_path: Path, case: str, bad_input) -> None:
    """One misshapen row of a 35,887-row CSV is that row's problem: named, left out, the others read (pandas
    stopped at it, or shifted every column of the file by one when it was the first data row)."""
    line, at, expected = FER_ROWS[case]
    rows = [_fer_row(i % 7, "Training" if i < 4 else "PublicTest", seed=i) for i in range(6)]
    rows.insert(at, line)
    path = tmp_path / "fer2013.csv"
    path.write_text("emotion,pixels,Usage\n" + "\n".join(rows) + "\n")
    with pytest.raises(CorpusError, match=f"row {at} \\(line {at + 2}\\): {expected}"):
        build_corpus("fer2013").read_checked(tmp_path)
    corpus = build_corpus("fer2013", on_error="skip")
    items = corpus.read_checked(tmp_path)
    assert len(items) == 6 and {it.media.key for it in items} == set(range(7)) - {at}
    assert corpus.load_image(items[-1]).shape == (48, 48, 3)
    assert [p.path for p in corpus.problems] == [str(path)]
    bad_input.record("labels and tables", case, problem_lines(corpus.problems))


AFFECTNET_HEADER = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
)


def test_affectnet_list_row_with_missing_or_extra_fields_is_left_out(tmp_path: Path, bad_input) -> None:
    images = tmp_path / "Manually_Annotated_Images" / "100"
    images.mkdir(parents=True)
    rows = []
    for k in range(5):
        Image.fromarray(np.roll(RGB, k, axis=1)).save(images / f"{k}.jpg")
        rows.append(f'100/{k}.jpg,1,2,20,20,"1.0;2.0;3.0",{k},0.1,-0.2')
    rows[1] = "100/1.jpg,1,2,20,20"  # cut after the face box
    rows[3] = rows[3] + ",0.7"  # one value too many
    lists = tmp_path / "Manually_Annotated_file_lists"
    lists.mkdir()
    path = lists / "training.csv"
    path.write_text("\n".join([AFFECTNET_HEADER, *rows]) + "\n")
    corpus = build_corpus("affectnet", val_fraction=0.0, on_error="skip")
    items = corpus.read_checked(tmp_path)
    assert sorted(it.item_id for it in items) == ["100/0.jpg", "100/2.jpg", "100/4.jpg"]
    shown = [p for p in corpus.problems if p.path == str(path)]
    assert [p.reason.split(":")[0] for p in shown] == ["row 1 (line 3)", "row 3 (line 5)"]
    assert "has 5 fields but the header has 9" in shown[0].reason and "has 10 fields" in shown[1].reason
    bad_input.record(
        "labels and tables", "AffectNet list rows with fields missing and one too many", problem_lines(shown)
    )


def test_manifest_row_with_an_extra_field_is_left_out_and_one_missing_a_value_is_named(
    tmp_path: Path, bad_input
) -> None:
    for name in ("a", "b", "c"):
        Image.fromarray(RGB).save(tmp_path / f"{name}.png")
    manifest = tmp_path / "manifest.csv"
    # Line 3 has an unquoted comma; line 4 stops before its expression (fine: trailing columns are empty).
    manifest.write_text("path,subject,expression\na.png,s1,happy\nb.png,s2,sad, really\nc.png,s3\n")
    corpus = build_corpus("manifest", on_error="skip")
    items = corpus.read_checked(tmp_path)
    assert [it.item_id for it in items] == ["a.png", "c.png"] and items[1].expression is None
    assert problem_lines(corpus.problems) == (
        f"{manifest}: line 3: has 4 fields but the header has 3 (an unquoted comma in a value? quote it)"
    )
    manifest.write_text("path,subject,expression\na.png,s1,happy\nb.png\n")
    with pytest.raises(CorpusError, match=r"line 3: required column 'subject' is empty or absent") as err:
        build_corpus("manifest", on_error="skip").read_checked(tmp_path)
    bad_input.record(
        "labels and tables", "manifest CSV row with an extra field (on_error=skip)", problem_lines(corpus.problems)
    )
    bad_input.record("labels and tables", "manifest CSV row that stops before its subject", str(err.value))


def test_labels_outside_the_taxonomy_are_counted_as_unmapped(tmp_path: Path, bad_input) -> None:
    for name in ("a", "b", "c"):
        Image.fromarray(RGB).save(tmp_path / f"{name}.png")
    rows = [
        {"path": "a.png", "subject": "s1", "expression": "happiness", "stress": "stressed"},
        {"path": "b.png", "subject": "s2", "expression": "bored", "stress": "panic"},
        {"path": "c.png", "subject": "s3", "expression": "bored"},
    ]
    items, corpus = manifest_corpus(tmp_path, rows)
    result = summarize(corpus, tmp_path, BASIC_EXPRESSIONS, STRESS_LEVELS, check=False)
    summary = result.as_json()
    assert summary["expression"]["happy"] == 1 and summary["stress"]["high"] == 1
    assert summary["unmapped"] == {"bored": 2, "stress:panic": 1}
    lines = result.as_text().splitlines()
    # Each section's title and column header, and its unmapped rows: what a user reads in `data summary`.
    shown = [
        line
        for i, line in enumerate(lines)
        if "(unmapped)" in line
        or line.startswith(("expression", "stress"))
        or lines[i - 1].startswith(("expression", "stress"))
    ]
    unmapped = [line for line in shown if "(unmapped)" in line]
    assert len(unmapped) == 2 and "bored (unmapped)" in unmapped[0] and "panic (unmapped)" in unmapped[1]
    bad_input.record(
        "labels and tables",
        "labels outside the taxonomy (expression 'bored', stress 'panic'): data summary rows",
        "\n".join(shown),
    )


# -- physiology -----------------------------------------------------------------------------------------------
@pytest.fixture
def short_video(tmp_path: Path, video_writer) -> Path:
    """A 10 s, 32x32, 5 fps video for the manifest rows below (50 frames: cheap to write and to check)."""
    path = tmp_path / "clip.avi"
    video_writer(path, frames_at([k / 5 for k in range(50)]), rate=5)
    return path


def test_ecg_nan_runs_are_bridged_when_short_and_masked_when_long(tmp_path: Path, short_video, bad_input) -> None:
    values = ecg(40.0)
    values[5000] = np.nan  # one dropped sample at 20 s: bridged
    values[2500:3000] = np.nan  # 2 s of dropouts at 10-12 s: masked, and clips near it get no heart rate
    path = write_ecg_csv(tmp_path / "ecg.csv", values)
    row = {"path": "clip.avi", "subject": "s1", "cardiac": "ecg.csv", "cardiac_kind": "ecg", "cardiac_fs_hz": ECG_FS}
    (item,), corpus = manifest_corpus(tmp_path, [row])
    problems = corpus.check(item)
    assert [p.path for p in problems] == [str(path)]
    assert "501 missing (NaN) samples in 2 run(s)" in problems[0].reason and "1 masked" in problems[0].reason
    with pytest.warns(GroundTruthWarning, match=r"ecg\.csv: ECG has 501 missing \(NaN\) samples") as caught:
        truth = cardiac_truth(corpus.load_cardiac(item))
    assert truth.hr_bpm(1, 9) == pytest.approx(72.0, abs=0.5) and truth.hr_bpm(16, 24) == pytest.approx(72.0, abs=0.5)
    assert truth.hr_bpm(8, 10 - GAP_MARGIN_S + 0.01) is None and truth.hr_bpm(11, 13) is None
    assert truth.hr_bpm(12 + GAP_MARGIN_S + 0.01, 20) == pytest.approx(72.0, abs=0.5)
    bad_input.record("physiology", "ECG CSV with 2 s of NaN and one NaN sample (data summary)", problem_lines(problems))
    bad_input.record(
        "physiology", "ECG CSV with 2 s of NaN and one NaN sample (labelling warning)", str(caught[0].message)
    )


def test_flat_line_ecg_gives_no_heart_rate(tmp_path: Path, short_video, bad_input) -> None:
    flat = write_ecg_csv(tmp_path / "flat.csv", np.zeros(int(40 * ECG_FS)))
    partly = ecg(40.0)
    partly[2500:5000] = partly[2500]  # the lead came off for 10 s
    write_ecg_csv(tmp_path / "partly.csv", partly)
    base = {"path": "clip.avi", "subject": "s1", "cardiac_kind": "ecg", "cardiac_fs_hz": ECG_FS}
    rows = [{**base, "id": "flat", "cardiac": "flat.csv"}, {**base, "id": "partly", "cardiac": "partly.csv"}]
    items, corpus = manifest_corpus(tmp_path, rows)
    problems = corpus.check(items[0])
    assert problem_lines(problems) == f"{flat}: ECG is a flat line (constant 0): no heart rate can be read from it"
    with pytest.raises(CorpusError, match=r"flat\.csv: ECG is a flat line") as err:
        cardiac_truth(corpus.load_cardiac(items[0]))
    with pytest.warns(GroundTruthWarning, match=r"partly\.csv: ECG is flat \(constant\) for 10\.00 s") as caught:
        truth = cardiac_truth(corpus.load_cardiac(items[1]))
    assert truth.hr_bpm(12, 18) is None and truth.hr_bpm(21, 29) == pytest.approx(72.0, abs=0.5)
    assert truth.hr_bpm(1, 9) == pytest.approx(72.0, abs=0.5)  # the beats before the flat stretch are kept
    bad_input.record("physiology", "ECG that is a flat line throughout (data summary)", problem_lines(problems))
    bad_input.record("physiology", "ECG that is a flat line throughout (labelling)", str(err.value))
    bad_input.record("physiology", "ECG flat for 10 s in the middle (labelling warning)", str(caught[0].message))


def test_ecg_shorter_than_the_video_names_both_files_and_durations(tmp_path: Path, short_video, bad_input) -> None:
    path = write_ecg_csv(tmp_path / "ecg.csv", ecg(5.0))
    row = {"path": "clip.avi", "subject": "s1", "cardiac": "ecg.csv", "cardiac_kind": "ecg", "cardiac_fs_hz": ECG_FS}
    (item,), corpus = manifest_corpus(tmp_path, [row])
    problems = corpus.check(item)
    assert [p.path for p in problems] == [str(path)]
    assert f"the video {short_video} lasts 10.00 s" in problems[0].reason and "covers 0.00-5.00 s" in problems[0].reason
    bad_input.record("physiology", "ECG of 5 s beside a 10 s video (data summary)", problem_lines(problems))


def test_bvp_running_far_past_its_video_is_a_wrong_rate(tmp_path: Path, video_writer, bad_input) -> None:
    """UBFC-Phys cuts each BVP to its video; one twice as long is 64 Hz samples read as another rate."""
    folder = tmp_path / "s1"
    folder.mkdir()
    video = folder / "vid_s1_T1.avi"
    video_writer(video, frames_at([k / 5 for k in range(20)]), rate=5)
    t = np.arange(0, 8.0, 1 / 64)
    bvp = folder / "bvp_s1_T1.csv"
    bvp.write_text("\n".join(f"{v:.5f}" for v in np.sin(2 * np.pi * 1.2 * t)) + "\n")
    corpus = build_corpus("ubfc_phys", tasks=["T1"], on_error="skip")
    (item,) = corpus.read_checked(tmp_path)
    problems = corpus.check(item)
    assert [p.path for p in problems] == [str(bvp)]
    assert "runs to 7.98 s" in problems[0].reason and str(video) in problems[0].reason and "64 Hz" in problems[0].reason
    bad_input.record("physiology", "UBFC-Phys BVP twice as long as its video (data summary)", problem_lines(problems))


@pytest.mark.parametrize("fs", ["0", "-250", "1e7", "3"])
def test_absurd_manifest_sampling_rate_names_the_line(tmp_path: Path, short_video, fs: str, bad_input) -> None:
    write_ecg_csv(tmp_path / "ecg.csv", ecg(12.0))
    row = {"path": "clip.avi", "subject": "s1", "cardiac": "ecg.csv", "cardiac_kind": "ecg", "cardiac_fs_hz": fs}
    with pytest.raises(CorpusError, match=r"manifest\.jsonl: line 1: (column )?cardiac_fs_hz") as err:
        manifest_corpus(tmp_path, [row], on_error="fail")
    bad_input.record("physiology", f"manifest row with an ECG at cardiac_fs_hz {fs}", str(err.value))


def test_times_in_milliseconds_are_an_implausible_rate(tmp_path: Path, short_video, bad_input) -> None:
    values = ecg(12.0)
    path = write_ecg_csv(tmp_path / "ecg.csv", values, times=np.arange(len(values)) * 1000 / ECG_FS)
    row = {"path": "clip.avi", "subject": "s1", "cardiac": "ecg.csv", "cardiac_kind": "ecg"}
    (item,), corpus = manifest_corpus(tmp_path, [row])
    problems = corpus.check(item)
    assert problems[0].path == str(path) and "0.25 Hz is not plausible for ECG" in problems[0].reason
    with pytest.raises(CorpusError, match="not plausible for ECG"):
        cardiac_truth(corpus.load_cardiac(item))
    bad_input.record(
        "physiology", "ECG CSV whose time_s column is in milliseconds (data summary)", problem_lines(problems)
    )


def test_bdf_with_an_absurd_ecg_rate_is_refused_on_reading(tmp_path: Path, bad_input) -> None:
    path = tmp_path / "Part_1_S_Trial1_emotion.bdf"
    header = {"dimension": "uV", "physical_min": -1000.0, "physical_max": 1000.0}
    header |= {"digital_min": -8388608, "digital_max": 8388607, "transducer": "", "prefilter": ""}
    writer = pyedflib.EdfWriter(str(path), 2, file_type=pyedflib.FILETYPE_BDF)
    try:
        writer.setSignalHeaders(
            [{"label": "EXG2", "sample_frequency": 3, **header}, {"label": "Status", "sample_frequency": 256, **header}]
        )
        status = np.zeros(256 * 4)
        status[256:] = 4.0  # the video starts at 1 s
        writer.writeSamples([np.zeros(3 * 4), status])
    finally:
        writer.close()
    with pytest.raises(CorpusError, match=r"\.bdf: channel EXG2: sampling rate 3 Hz is not plausible for ECG") as err:
        bdf_sync(path, EcgLead.parse("EXG2"))
    bad_input.record("physiology", "MAHNOB BDF whose ECG channel is sampled at 3 Hz", str(err.value))


def test_ecg_range_follows_the_detector() -> None:
    assert CARDIAC_FS_RANGE_HZ["ecg"][0] == MIN_ECG_FS_HZ


def test_cardiac_signal_without_rate_or_times_names_the_file() -> None:
    with pytest.raises(CorpusError, match=r"ecg\.npy: has no sampling rate and no per-sample times"):
        CardiacSignal("ecg", np.zeros(10), source=Path("ecg.npy"))


def test_clean_ecg_raises_no_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        truth = cardiac_truth(CardiacSignal("ecg", ecg(20.0), fs_hz=ECG_FS, source=Path("ecg.csv")))
    assert truth.hr_bpm(2, 10) == pytest.approx(72.0, abs=0.5) and len(truth.gaps_s) == 0
