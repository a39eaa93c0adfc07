"""CREMA-D (Crowd-sourced Emotional Multimodal Actors Dataset): 7,442 clips of 91 actors, six emotions."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from stress_lightning.data.corpora.base import CORPORA, Corpus, OnError, read_csv_checked, split_subjects
from stress_lightning.data.corpora.common import check_split_actors, check_split_fractions, fixed_actor_splits
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.items import ClassLabel, Item, VideoFile

# The release's codes (its README and the paper).
SENTENCES: dict[str, str] = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
EMOTIONS: tuple[str, ...] = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
LEVELS: dict[str, str] = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
ACTORS = range(1001, 1092)
CREMAD_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")
VIDEO_FOLDERS: dict[str, str] = {"VideoFlash": ".flv", "VideoMP4": ".mp4"}
DEMOGRAPHICS = "VideoDemographics.csv"
DEMOGRAPHIC_COLUMNS: tuple[str, ...] = ("ActorID", "Age", "Sex", "Race", "Ethnicity")
# Clips known to be wrong in the release: 1064_IEO_DIS_MD runs about a minute and holds every emotion of the
# sentence, so its one label is wrong for most of it. Left out unless `exclude_known_bad` is off.
KNOWN_BAD_CLIPS: dict[str, str] = {"1064_IEO_DIS_MD": "holds every emotion of the sentence, not one take"}
# Clips whose audio track is (near) silent or has no duration in the release: the video is kept, `audio` is None.
KNOWN_BAD_AUDIO: frozenset[str] = frozenset({"1076_MTI_NEU_XX", "1076_MTI_SAD_XX", "1064_TIE_SAD_XX"})


def parse_cremad_name(stem: str) -> tuple[tuple[str, str, str, str] | None, str]:
    """(actor, sentence, emotion, level) of a file name stem, or (None, why it is not one)."""
    match = CREMAD_NAME.match(stem)
    if match is None:
        return None, "file name is not a CREMA-D code AAAA_SSS_EEE_LL (e.g. 1001_DFA_ANG_XX)"
    actor, sentence, emotion, level = match.groups()
    if int(actor) not in ACTORS:
        return None, f"unknown actor {actor} (1001-1091)"
    if sentence not in SENTENCES:
        return None, f"unknown sentence code {sentence!r} (known: {', '.join(SENTENCES)})"
    if emotion not in EMOTIONS:
        return None, f"unknown emotion code {emotion!r} (known: {', '.join(EMOTIONS)})"
    if level not in LEVELS:
        return None, f"unknown level code {level!r} (known: {', '.join(LEVELS)})"
    return (actor, sentence, emotion, level), ""


@CORPORA.register("cremad")
class CremaDCorpus(Corpus):
    """CREMA-D video: 91 actors (48 male, 43 female, 20-74 years) saying 12 sentences in six emotions.

    Layout (the release's GitHub repository, files in Git LFS): `VideoFlash/AAAA_SSS_EEE_LL.flv` (480x360 FLV at
    30 fps; `video_folder: VideoMP4` reads an MP4 conversion laid out the same way), `AudioWAV/<same>.wav`
    (16 kHz) and `VideoDemographics.csv` (ActorID, Age, Sex, Race, Ethnicity) at the root. Codes: actor
    1001-1091; sentence IEO TIE IOM IWW TAI MTI IWL ITH DFA ITS TSI WSI; emotion ANG DIS FEA HAP NEU SAD; level
    LO MD HI (only sentence IEO) or XX (unspecified).

    Labels: the intended (acted) emotion code as written ("ANG", ...), one label per clip, mapped to angry,
    disgust, fear, happy, neutral, sad. The crowd's perceived labels (processedResults/) are not read.
    Attributes: intensity (low / medium / high / unspecified), sentence (code), and from the demographics
    table gender, age, race and ethnicity. `audio` is the clip's WAV when present. No cardiac or stress truth.

    Known bad files: 1064_IEO_DIS_MD (every emotion of the sentence in one minute) is left out; the near-silent
    or zero-length audio of 1076_MTI_NEU_XX, 1076_MTI_SAD_XX and 1064_TIE_SAD_XX is not used as `audio`.
    Problems (named by file): names that do not parse or carry unknown codes, an empty video, a demographics
    table that cannot be read; `check` finds unreadable and truncated videos.

    Splits: actor-wise. `split_actors` (`{val: [...], test: [...]}`, the rest train) fixes them; otherwise
    `split_subjects` over the actors with `split_fractions` and `seed`.

    Args:
        video_folder: "VideoFlash" (FLV) or "VideoMP4" (MP4), relative to root.
        split_fractions: train, val, test shares of the actors (when `split_actors` is not given).
        seed: seed of that split.
        split_actors: fixed actor lists per split, overriding the fractions.
        exclude_known_bad: leave out the known mislabelled clip (counted in `excluded_known_bad`).
    """

    name = "cremad"
    layout = "VideoFlash/AAAA_SSS_EEE_LL.flv, optional AudioWAV/*.wav and VideoDemographics.csv"
    url = "https://github.com/CheyneyComputerScience/CREMA-D"
    expression_map = {
        "ANG": "angry",
        "DIS": "disgust",
        "FEA": "fear",
        "HAP": "happy",
        "NEU": "neutral",
        "SAD": "sad",
    }

    def __init__(
        self,
        video_folder: str = "VideoFlash",
        split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
        seed: int = 0,
        split_actors: Mapping[str, Sequence[str | int]] | None = None,
        exclude_known_bad: bool = True,
        on_error: OnError = "fail",
    ) -> None:
        super().__init__(on_error)
        if video_folder not in VIDEO_FOLDERS:
            raise ValueError(f"cremad: video_folder must be one of {list(VIDEO_FOLDERS)}, got {video_folder!r}")
        self.video_folder = video_folder
        self.split_fractions = check_split_fractions(split_fractions, self.name)
        self.seed = int(seed)
        self.split_actors = check_split_actors(split_actors, "cremad") if split_actors is not None else None
        self.exclude_known_bad = bool(exclude_known_bad)
        self.excluded_known_bad = 0

    def options(self) -> dict:
        return {
            "video_folder": self.video_folder,
            "split_fractions": list(self.split_fractions),
            "seed": self.seed,
            "split_actors": {k: list(v) for k, v in sorted(self.split_actors.items())} if self.split_actors else None,
            "exclude_known_bad": self.exclude_known_bad,
        }

    def read(self, root: Path) -> list[Item]:
        folder = root / self.video_folder
        if not folder.is_dir():
            raise CorpusError(folder, f"video folder is missing (expected {self.video_folder}/ in the corpus root)")
        suffix = VIDEO_FOLDERS[self.video_folder]
        demographics = self._demographics(root / DEMOGRAPHICS)
        self.excluded_known_bad = 0
        clips: list[tuple[Path, tuple[str, str, str, str]]] = []
        for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
            if path.suffix.lower() != suffix:
                continue
            code, reason = parse_cremad_name(path.stem)
            if code is None:
                self.report(path, reason)
                continue
            if self.exclude_known_bad and path.stem in KNOWN_BAD_CLIPS:
                self.excluded_known_bad += 1
                continue
            if path.stat().st_size == 0:
                self.report(path, "video file is empty")
                continue
            clips.append((path, code))
        actors = sorted({code[0] for _, code in clips})
        if self.split_actors is not None:
            splits = fixed_actor_splits(actors, self.split_actors, "cremad")
        else:
            splits = split_subjects(actors, self.split_fractions, self.seed)
        items = []
        for path, (actor, sentence, emotion, level) in clips:
            wav = root / "AudioWAV" / f"{path.stem}.wav"
            attributes = {"intensity": LEVELS[level], "sentence": sentence, **demographics.get(actor, {})}
            items.append(
                Item(
                    item_id=f"{actor}/{path.stem}",
                    subject_id=actor,
                    split=splits[actor],
                    media=VideoFile(path),
                    expression=ClassLabel(emotion),
                    attributes=attributes,
                    audio=wav if wav.is_file() and path.stem not in KNOWN_BAD_AUDIO else None,
                )
            )
        return items

    def _demographics(self, path: Path) -> dict[str, dict[str, str]]:
        """Actor -> {gender, age, race, ethnicity}; {} when the table is absent (it is optional)."""
        if not path.is_file():
            return {}
        try:
            table = read_csv_checked(path, DEMOGRAPHIC_COLUMNS, dtype=str, keep_default_na=False)
        except CorpusError as exc:
            self.report(exc.path, exc.problem)
            return {}
        result = {}
        for row, record in enumerate(table.to_dict("records")):
            actor = str(record["ActorID"]).strip()
            if not actor.isdigit():
                self.report(path, f"row {row} (line {row + 2}): ActorID {actor!r} is not a number")
                continue
            result[actor] = {
                "gender": str(record["Sex"]).strip().lower(),
                "age": str(record["Age"]).strip(),
                "race": str(record["Race"]).strip(),
                "ethnicity": str(record["Ethnicity"]).strip(),
            }
        return result
