"""RAVDESS (Ryerson Audio-Visual Database of Emotional Speech and Song): 24 actors, posed speech and song video."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from stress_lightning.data.corpora.base import CORPORA, Corpus, OnError
from stress_lightning.data.corpora.common import check_split_actors, fixed_actor_splits
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.items import ClassLabel, Item, VideoFile

# The seven two-digit fields of a RAVDESS file name, in order (the release's README).
MODALITIES: dict[str, str] = {"01": "audio-video", "02": "video-only", "03": "audio-only"}
VOCAL_CHANNELS: dict[str, str] = {"01": "speech", "02": "song"}
EMOTIONS: dict[str, str] = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
INTENSITIES: dict[str, str] = {"01": "normal", "02": "strong"}
STATEMENTS: dict[str, str] = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
REPETITIONS: tuple[str, ...] = ("01", "02")
# The song recordings have no disgust or surprised take.
SONG_EMOTIONS: frozenset[str] = frozenset({"01", "02", "03", "04", "05", "06"})
N_ACTORS = 24
RAVDESS_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
ACTOR_FOLDER = re.compile(r"^Actor_(\d{2})$")
VIDEO_SUFFIXES: frozenset[str] = frozenset({".mp4"})
AUDIO_SUFFIXES: frozenset[str] = frozenset({".wav"})
# Actor-wise split used across RAVDESS papers that hold out the last actors: 1-20 train, 21-22 val, 23-24 test.
DEFAULT_SPLIT_ACTORS: dict[str, tuple[int, ...]] = {"val": (21, 22), "test": (23, 24)}


@dataclass(frozen=True)
class RavdessCode:
    """The seven fields of a file name (two-digit codes as written)."""

    modality: str
    vocal_channel: str
    emotion: str
    intensity: str
    statement: str
    repetition: str
    actor: str

    @property
    def key(self) -> str:
        """The take, whatever the modality: the audio-only WAV of a video shares it."""
        return "-".join((self.vocal_channel, self.emotion, self.intensity, self.statement, self.repetition, self.actor))


def parse_ravdess_name(stem: str) -> tuple[RavdessCode | None, str]:
    """The code of a file name stem, or (None, why it is not one)."""
    match = RAVDESS_NAME.match(stem)
    if match is None:
        return None, "file name is not a RAVDESS code MM-VV-EE-II-SS-RR-AA (seven two-digit fields)"
    code = RavdessCode(*match.groups())
    checks = (
        (code.modality in MODALITIES, f"unknown modality {code.modality!r} (01-03)"),
        (code.vocal_channel in VOCAL_CHANNELS, f"unknown vocal channel {code.vocal_channel!r} (01 speech, 02 song)"),
        (code.emotion in EMOTIONS, f"unknown emotion {code.emotion!r} (01-08)"),
        (code.intensity in INTENSITIES, f"unknown intensity {code.intensity!r} (01 normal, 02 strong)"),
        (code.statement in STATEMENTS, f"unknown statement {code.statement!r} (01, 02)"),
        (code.repetition in REPETITIONS, f"unknown repetition {code.repetition!r} (01, 02)"),
        (1 <= int(code.actor) <= N_ACTORS, f"unknown actor {code.actor!r} (01-{N_ACTORS})"),
        (not (code.emotion == "01" and code.intensity == "02"), "neutral has no strong intensity (II must be 01)"),
        (
            code.vocal_channel == "01" or code.emotion in SONG_EMOTIONS,
            f"song has no {EMOTIONS.get(code.emotion, code.emotion)} take",
        ),
    )
    for ok, reason in checks:
        if not ok:
            return None, reason
    return code, ""


@CORPORA.register("ravdess")
class RavdessCorpus(Corpus):
    """RAVDESS video: 24 actors (12 male, 12 female) posing 8 emotions while speaking or singing two statements.

    Layout: `Actor_XX/MM-VV-EE-II-SS-RR-AA.mp4` (1280x720 H.264 at 29.97 fps) under `root`, found recursively, so
    both the flat layout and the per-archive one (`Video_Speech_Actor_XX/Actor_XX/`, `Video_Song_Actor_XX/...`,
    `Audio_Speech_Actors_01-24/Actor_XX/*.wav`) work. The seven two-digit fields: modality (01 audio-video,
    02 video-only, 03 audio-only), vocal channel (01 speech, 02 song), emotion (01 neutral, 02 calm, 03 happy,
    04 sad, 05 angry, 06 fearful, 07 disgust, 08 surprised), intensity (01 normal, 02 strong; neutral has no
    strong take, song no disgust or surprised), statement (01 "Kids are talking by the door", 02 "Dogs are
    sitting by the door"), repetition (01, 02), actor (01-24; odd male, even female).

    Items: one per video file of the chosen `modalities`. Modality 01 and 02 files are the same take (one
    recording, with and without its sound track), so the default is 01 only: taking both would count each
    performance twice. `audio` is the MP4 itself for modality 01 and the take's `03-...wav` (when present
    anywhere under root) for 02.

    Labels: the emotion's name as the release writes it (e.g. "calm", "fearful"), one label for the whole clip.
    The map takes fearful -> fear and surprised -> surprise; calm stays "calm", which a 7-class run leaves
    unmapped (counted) unless the run's `label_map` says e.g. `{calm: neutral}`. Attributes: gender, intensity,
    vocal_channel, statement and repetition (codes), modality. No cardiac or stress ground truth.

    Problems (named by file): names that do not parse or carry unknown codes, an actor code that does not match
    its `Actor_XX` folder, an empty file, the same take found twice, an `Actor_XX` folder without any video or
    audio file; `check` finds unreadable and truncated videos.

    Splits: fixed and actor-wise, `split_actors` (default actors 1-20 train, 21-22 val, 23-24 test).

    Args:
        modalities: video modalities to read, "01" (audio-video) and/or "02" (video-only).
        vocal_channels: "01" (speech) and/or "02" (song).
        split_actors: `{val: [...], test: [...]}` actor numbers; the other actors train.
    """

    name = "ravdess"
    layout = "Actor_XX/MM-VV-EE-II-SS-RR-AA.mp4 (any depth, e.g. Video_Speech_Actor_XX/Actor_XX/)"
    url = "https://zenodo.org/record/1188976"
    expression_map = {
        "neutral": "neutral",
        "calm": "calm",
        "happy": "happy",
        "sad": "sad",
        "angry": "angry",
        "fearful": "fear",
        "disgust": "disgust",
        "surprised": "surprise",
    }

    def __init__(
        self,
        modalities: Sequence[str | int] = ("01",),
        vocal_channels: Sequence[str | int] = ("01", "02"),
        split_actors: Mapping[str, Sequence[str | int]] | None = None,
        on_error: OnError = "fail",
    ) -> None:
        super().__init__(on_error)
        self.modalities = self._codes(modalities, ("01", "02"), "modalities")
        self.vocal_channels = self._codes(vocal_channels, tuple(VOCAL_CHANNELS), "vocal_channels")
        fixed = DEFAULT_SPLIT_ACTORS if split_actors is None else split_actors
        self.split_actors = check_split_actors(fixed, "ravdess")

    @staticmethod
    def _codes(values: Sequence[str | int], allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
        if isinstance(values, str | int):
            values = [values]
        try:
            codes = tuple(sorted({f"{int(v):02d}" for v in values}))
        except (TypeError, ValueError):
            raise ValueError(f"ravdess: {what} must be codes among {list(allowed)}, got {values!r}") from None
        if not codes or set(codes) - set(allowed):
            raise ValueError(f"ravdess: {what} must be codes among {list(allowed)}, got {list(values)}")
        return codes

    def options(self) -> dict:
        return {
            "modalities": list(self.modalities),
            "vocal_channels": list(self.vocal_channels),
            "split_actors": {k: list(v) for k, v in sorted(self.split_actors.items())},
        }

    def read(self, root: Path) -> list[Item]:
        folders = sorted(
            (d for d in root.rglob("Actor_*") if d.is_dir() and ACTOR_FOLDER.match(d.name)),
            key=lambda d: (d.name, str(d)),
        )
        if not folders:
            raise CorpusError(root, "holds no Actor_XX folder (expected Actor_01 ... Actor_24 at any depth)")
        videos: dict[str, tuple[Path, RavdessCode]] = {}  # file stem -> first file with it
        audio: dict[str, Path] = {}  # take key -> audio-only WAV
        for folder in folders:
            folder_actor = ACTOR_FOLDER.match(folder.name).group(1)  # type: ignore[union-attr]
            files = sorted(
                p
                for p in folder.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in VIDEO_SUFFIXES | AUDIO_SUFFIXES
            )
            if not files:
                # An archive that did not unpack: the actor's takes are missing.
                self.report(folder, "holds no RAVDESS video or audio file")
            for path in files:
                suffix = path.suffix.lower()
                code = self._parse(path, folder_actor)
                if code is None:
                    continue
                if suffix in AUDIO_SUFFIXES:
                    if code.modality != "03":
                        self.report(path, f"audio file with video modality {code.modality} (expected 03)")
                    else:
                        audio.setdefault(code.key, path)
                    continue
                if code.modality == "03":
                    self.report(path, "video file with the audio-only modality code 03")
                    continue
                if code.modality not in self.modalities or code.vocal_channel not in self.vocal_channels:
                    continue
                if path.stat().st_size == 0:
                    self.report(path, "video file is empty")
                    continue
                if path.stem in videos:
                    self.report(path, f"the same take as {videos[path.stem][0]} (a second copy)")
                    continue
                videos[path.stem] = (path, code)
        actors = sorted({code.actor for _, code in videos.values()})
        splits = fixed_actor_splits(actors, self.split_actors, "ravdess")
        items = []
        for stem, (path, code) in sorted(videos.items()):
            items.append(
                Item(
                    item_id=f"Actor_{code.actor}/{stem}",
                    subject_id=f"Actor_{code.actor}",
                    split=splits[code.actor],
                    media=VideoFile(path),
                    expression=ClassLabel(EMOTIONS[code.emotion]),
                    attributes={
                        "gender": "male" if int(code.actor) % 2 else "female",
                        "intensity": INTENSITIES[code.intensity],
                        "vocal_channel": VOCAL_CHANNELS[code.vocal_channel],
                        "statement": code.statement,
                        "repetition": code.repetition,
                        "modality": MODALITIES[code.modality],
                    },
                    audio=path if code.modality == "01" else audio.get(code.key),
                )
            )
        return items

    def _parse(self, path: Path, folder_actor: str) -> RavdessCode | None:
        code, reason = parse_ravdess_name(path.stem)
        if code is None:
            self.report(path, reason)
            return None
        if code.actor != folder_actor:
            self.report(path, f"actor code {code.actor} does not match its folder Actor_{folder_actor}")
            return None
        return code
