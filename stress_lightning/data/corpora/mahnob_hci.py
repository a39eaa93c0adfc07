"""MAHNOB-HCI tagging database: 27 subjects watching emotional film clips, face video with Biosemi ECG."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyedflib

from stress_lightning.data.corpora.base import CORPORA, Corpus, OnError, split_subjects
from stress_lightning.data.corpora.common import check_split_fractions
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.items import CardiacRef, CardiacSignal, ClassLabel, Item, VideoFile, cardiac_rate_problem

# feltEmo codes of the emotion experiment (the database manual): the participant's own keyword for the clip.
FELT_EMOTIONS: dict[str, str] = {
    "0": "neutral",
    "1": "anger",
    "2": "disgust",
    "3": "fear",
    "4": "joy",
    "5": "sadness",
    "6": "surprise",
    "11": "amusement",
    "12": "anxiety",
}
# session.xml attributes kept as item attributes (as written: 1-9 self-assessment scales, file names).
FELT_ATTRIBUTES: dict[str, str] = {
    "feltArsl": "felt_arousal",
    "feltVlnc": "felt_valence",
    "feltCtrl": "felt_control",
    "feltPred": "felt_predictability",
    "mediaFile": "stimulus",
}
SESSION_KINDS: tuple[str, ...] = ("stimulus", "neutral", "tagging")
# The frontal colour camera (camera 1), e.g. "P1-Rec1-2009.07.09.17.53.46_C1 trigger _C_Section_2.avi".
VIDEO_GLOB = "*C1 trigger*.avi"
STATUS_CHANNEL = "Status"
# The low 16 bits of a Biosemi Status word are the trigger inputs; the high byte is system state (CMS, battery,
# speed mode), which must not read as a trigger.
TRIGGER_MASK = 0xFFFF


@dataclass(frozen=True)
class EcgLead:
    """One BDF channel, or the difference of two ("EXG3-EXG1")."""

    positive: str
    negative: str | None = None

    @classmethod
    def parse(cls, spec: str) -> EcgLead:
        parts = [p.strip() for p in str(spec).split("-")]
        if len(parts) > 2 or not all(parts):
            raise ValueError(f"mahnob_hci: ecg_channel must be a channel name or 'A-B', got {spec!r}")
        return cls(parts[0], parts[1] if len(parts) == 2 else None)

    def __str__(self) -> str:
        return self.positive if self.negative is None else f"{self.positive}-{self.negative}"

    @property
    def channels(self) -> tuple[str, ...]:
        return (self.positive,) if self.negative is None else (self.positive, self.negative)


def _open_bdf(path: Path) -> pyedflib.EdfReader:
    try:
        return pyedflib.EdfReader(str(path))
    except OSError as exc:
        # pyedflib starts its message with the path, which the CorpusError already names.
        reason = str(exc).removeprefix(f"{path}: ")
        raise CorpusError(path, f"cannot be read as a BDF file ({reason})") from exc


def _channel_index(reader: pyedflib.EdfReader, path: Path, name: str) -> int:
    labels = [label.strip() for label in reader.getSignalLabels()]
    if name not in labels:
        raise CorpusError(path, f"has no {name} channel (channels: {', '.join(labels)})")
    return labels.index(name)


def bdf_sync(path: Path, lead: EcgLead) -> tuple[float, float]:
    """(video start, ECG rate): the time (s from the start of the BDF) of the first sample whose Status trigger
    bits are set, and the sampling rate of the lead, which must be in the file."""
    with _open_bdf(path) as reader:
        rates = {float(reader.samplefrequency(_channel_index(reader, path, name))) for name in lead.channels}
        index = _channel_index(reader, path, STATUS_CHANNEL)
        fs = float(reader.samplefrequency(index))
        status = reader.readSignal(index, digital=True).astype(np.int64)
    if len(rates) > 1:
        raise CorpusError(path, f"channels of lead {lead} have different sampling rates {sorted(rates)}")
    problem = cardiac_rate_problem("ecg", next(iter(rates)))
    if problem is not None:  # a header whose samples per record or record duration is wrong
        raise CorpusError(path, f"channel {lead}: {problem}")
    if not (np.isfinite(fs) and fs > 0):
        raise CorpusError(path, f"channel {STATUS_CHANNEL} has no usable sampling rate ({fs:g} Hz)")
    onset = np.flatnonzero(status & TRIGGER_MASK)
    if onset.size == 0:
        raise CorpusError(path, "Status channel holds no trigger (no video start marked)")
    return float(onset[0]) / fs, rates.pop()


def read_ecg(path: Path, lead: EcgLead) -> tuple[np.ndarray, float]:
    """The lead's samples (physical units of the file, uV in MAHNOB) and its sampling rate."""
    with _open_bdf(path) as reader:
        indices = [_channel_index(reader, path, name) for name in lead.channels]
        rates = {float(reader.samplefrequency(i)) for i in indices}
        if len(rates) > 1:
            raise CorpusError(path, f"channels of lead {lead} have different sampling rates {sorted(rates)}")
        signals = [reader.readSignal(i) for i in indices]
    values = signals[0] if lead.negative is None else signals[0] - signals[1]
    return np.asarray(values, dtype=np.float64), rates.pop()


@CORPORA.register("mahnob_hci")
class MahnobHciCorpus(Corpus):
    """MAHNOB-HCI (tagging database): face video with ECG of 27 subjects watching 20 emotional clips.

    Layout: `Sessions/<id>/` (root is the folder holding `Sessions/` or `Sessions/` itself) with `session.xml`,
    one Biosemi BDF (`Part_<p>_S_Trial<k>_emotion.bdf` for a stimulus, `Part_<p>_N_Trial<k>_emotion.bdf` for
    the neutral clip before it, `Part_<p>_Trial<k>_tagging*.bdf` for the implicit-tagging experiment) and the
    frontal colour camera's video `P<p>-Rec<r>-<date>_C1 trigger _C_Section_<n>.avi` (780x580, about 61 fps;
    the other cameras are not read). `session.xml`: a `session` element whose attributes hold isStim, feltEmo,
    feltArsl, feltVlnc, feltCtrl, feltPred, mediaFile, cutLenSec, vidRate, ... and a `subject` child with the
    subject `id`.

    Cardiac truth: ECG from the BDF (256 Hz; EXG1 upper right chest, EXG2 upper left chest, EXG3 left abdomen,
    each against the Biosemi CMS reference), lead `ecg_channel` (default EXG2, as pyVHR and others read it; a
    difference "EXG3-EXG1" gives a lead-II-like derivation). Synchronisation: the first sample whose Status trigger
    bits (low 16 bits) are set is the first video frame, the alignment bob.db.hci_tagging (Idiap's interface
    to this database) uses; the BDF starts before it, so that onset is `CardiacRef.offset_s` and the signal
    starts at `-offset_s` on the video clock.

    Labels: no facial expression labels. The participant's felt emotion (feltEmo: 0 neutral, 1 anger,
    2 disgust, 3 fear, 4 joy, 5 sadness, 6 surprise, 11 amusement, 12 anxiety) is kept as attribute
    `felt_emotion`, the 1-9 self-assessments as felt_arousal / felt_valence / felt_control /
    felt_predictability, the clip as `stimulus`. `felt_emotion_as_expression` makes the felt emotion the item's
    expression label (mapped to canonical names; amusement and anxiety stay unmapped): it is what the viewer
    reported feeling over the clip, not an annotation of the face, so it is off by default.

    Sessions: `sessions` picks the kinds read: "stimulus" (isStim=1, the 20 rated clips per subject),
    "neutral" (isStim=0, the neutral clips in between), "tagging" (the implicit-tagging experiment). Sessions of
    other kinds are skipped and counted in `skipped_sessions`. Problems (named by path): an unreadable
    session.xml or one without a subject id, an unknown feltEmo code, a session without its C1 video or its
    BDF, a BDF without the ECG or the Status channel, a Status channel with no trigger; `check` adds
    unreadable or truncated videos and ECG that does not cover the video.

    Splits: subject-disjoint (`split_subjects`), `split_fractions` (train, val, test) with `seed`.

    Args:
        ecg_channel: BDF channel of the ECG, or "A-B" for the difference of two channels.
        sessions: session kinds to read, among "stimulus", "neutral", "tagging".
        felt_emotion_as_expression: use the felt emotion as the item's expression label.
        split_fractions: train, val, test shares of the subjects.
        seed: seed of the split.
    """

    name = "mahnob_hci"
    layout = "Sessions/<id>/session.xml + *.bdf + *_C1 trigger _C_Section_<n>.avi"
    url = "https://mahnob-db.eu/hci-tagging/"
    expression_map = {
        "neutral": "neutral",
        "anger": "angry",
        "disgust": "disgust",
        "fear": "fear",
        "joy": "happy",
        "sadness": "sad",
        "surprise": "surprise",
        "amusement": None,
        "anxiety": None,
    }

    def __init__(
        self,
        ecg_channel: str = "EXG2",
        sessions: Sequence[str] = ("stimulus",),
        felt_emotion_as_expression: bool = False,
        split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
        seed: int = 0,
        on_error: OnError = "fail",
    ) -> None:
        super().__init__(on_error)
        self.lead = EcgLead.parse(ecg_channel)
        kinds = (sessions,) if isinstance(sessions, str) else tuple(sessions)
        if not kinds or set(kinds) - set(SESSION_KINDS):
            raise ValueError(f"mahnob_hci: sessions must be among {list(SESSION_KINDS)}, got {list(kinds)}")
        self.sessions = tuple(k for k in SESSION_KINDS if k in kinds)
        self.felt_emotion_as_expression = bool(felt_emotion_as_expression)
        self.split_fractions = check_split_fractions(split_fractions, self.name)
        self.seed = int(seed)
        self.skipped_sessions = 0

    def options(self) -> dict:
        return {
            "ecg_channel": str(self.lead),
            "sessions": list(self.sessions),
            "felt_emotion_as_expression": self.felt_emotion_as_expression,
            "split_fractions": list(self.split_fractions),
            "seed": self.seed,
        }

    def read(self, root: Path) -> list[Item]:
        sessions_dir = root / "Sessions" if (root / "Sessions").is_dir() else root
        folders = [d for d in sessions_dir.iterdir() if d.is_dir() and not d.name.startswith(".")]
        # isdecimal, not isdigit: a folder named '²' is a digit that int() refuses.
        folders.sort(key=lambda d: (not d.name.isdecimal(), int(d.name) if d.name.isdecimal() else 0, d.name))
        if not any((d / "session.xml").is_file() for d in folders):
            raise CorpusError(sessions_dir, "holds no session folder with a session.xml (expected Sessions/<id>/)")
        self.skipped_sessions = 0
        pending: list[tuple[str, Item]] = []  # (subject, item with a placeholder split)
        for folder in folders:
            item = self._session(folder)
            if item is not None:
                pending.append((item.subject_id, item))
        assign = split_subjects([s for s, _ in pending], self.split_fractions, self.seed)
        return [replace(item, split=assign[subject]) for subject, item in pending]

    def _session(self, folder: Path) -> Item | None:
        """The session's item, or None (skipped kind, or a problem reported)."""
        xml_path = folder / "session.xml"
        if not xml_path.is_file():
            self.report(xml_path, "session.xml is missing")
            return None
        try:
            session = ET.parse(xml_path).getroot()
        except ET.ParseError as exc:
            self.report(xml_path, f"cannot be parsed as XML ({exc})")
            return None
        attrs = {k: v.strip() for k, v in session.attrib.items()}
        subject = session.find("subject")
        subject_id = (subject.get("id") or "").strip() if subject is not None else ""
        if not subject_id.isdecimal():  # int() below accepts exactly these
            self.report(xml_path, f"has no numeric <subject id=...> (got {subject_id!r})")
            return None
        bdfs = sorted(folder.glob("*.bdf"))
        kind = _session_kind(attrs, bdfs)
        if kind not in self.sessions:
            self.skipped_sessions += 1
            return None
        felt = attrs.get("feltEmo")
        if felt is not None and felt not in FELT_EMOTIONS:
            self.report(xml_path, f"unknown feltEmo code {felt!r} (known: {', '.join(FELT_EMOTIONS)})")
            return None
        videos = sorted(folder.glob(VIDEO_GLOB))
        if not videos:
            self.report(folder, f"session has no frontal colour video ({VIDEO_GLOB})")
            return None
        if len(videos) > 1:
            self.report(folder, f"session has {len(videos)} C1 videos, expected one: {[v.name for v in videos]}")
            return None
        if len(bdfs) != 1:
            found = "no BDF file" if not bdfs else f"{len(bdfs)} BDF files, expected one"
            self.report(folder, f"session has {found} (Part_<p>_..._emotion.bdf)")
            return None
        bdf = bdfs[0]
        try:
            # Read here (a few ms per file), so a session without usable ECG is found by reading, not in training.
            offset_s, fs = bdf_sync(bdf, self.lead)
        except CorpusError as exc:
            self.report(exc.path, exc.problem)
            return None
        attributes = {"session_kind": kind, "session": folder.name}
        attributes.update({FELT_ATTRIBUTES[k]: attrs[k] for k in FELT_ATTRIBUTES if attrs.get(k)})
        if felt is not None:
            attributes["felt_emotion"] = FELT_EMOTIONS[felt]
        subject = f"P{int(subject_id)}"
        return Item(
            item_id=f"{subject}/{folder.name}",
            subject_id=subject,
            split="train",
            media=VideoFile(videos[0]),
            expression=ClassLabel(FELT_EMOTIONS[felt]) if self.felt_emotion_as_expression and felt else None,
            cardiac=CardiacRef(kind="ecg", path=bdf, fs_hz=fs, offset_s=offset_s, channel=str(self.lead)),
            attributes=attributes,
        )

    def load_cardiac(self, item: Item) -> CardiacSignal | None:
        ref = item.cardiac
        if ref is None:
            return None
        values, fs = read_ecg(ref.path, EcgLead.parse(ref.channel or str(self.lead)))
        return CardiacSignal("ecg", values, fs_hz=fs, start_s=-ref.offset_s, source=ref.path)


def _session_kind(attrs: dict[str, str], bdfs: Sequence[Path]) -> str:
    """stimulus / neutral / tagging, from the experiment type, the BDF name and isStim."""
    hint = " ".join([attrs.get("experimentType", ""), *(p.name for p in bdfs)]).lower()
    if "tagging" in hint:
        return "tagging"
    return "stimulus" if attrs.get("isStim") == "1" else "neutral"
