"""PURE (Stricker et al. 2014): 10 subjects in 6 head-motion setups, PNG sequences with a pulse oximeter's waveform."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stress_lightning.data.corpora.base import CORPORA, split_subjects
from stress_lightning.data.corpora.common import (
    OximeterCorpus,
    session_folders,
    strictly_increasing,
)
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.items import CardiacRef, CardiacSignal, FrameFiles, Item

SESSION = re.compile(r"^(\d{2})-(\d{2})$")
IMAGE = re.compile(r"^Image(\d+)\.png$")
# The setups as the release numbers them (the second half of a session name).
SETUPS: dict[str, str] = {
    "01": "steady",
    "02": "talking",
    "03": "slow_translation",
    "04": "fast_translation",
    "05": "small_rotation",
    "06": "medium_rotation",
}
NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class PureRecord:
    """A session's meta file: image timestamps and oximeter packages (ns since the epoch), waveform, pulse rate."""

    image_ns: np.ndarray
    package_ns: np.ndarray
    waveform: np.ndarray
    pulse_rate: np.ndarray


def read_pure_json(path: Path) -> PureRecord:
    """A PURE meta file: `{"/FullPackage": [{"Timestamp": ns, "Value": {"pulseRate", "o2saturation",
    "signalStrength", "waveform"}}, ...], "/Image": [{"Timestamp": ns}, ...]}`; malformed raises CorpusError."""
    if not path.is_file():
        raise CorpusError(path, "meta file (JSON) is missing")
    try:
        data = json.loads(path.read_text(errors="replace"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, an int of > 4300 digits, nesting too deep
        raise CorpusError(path, f"cannot be parsed as JSON ({exc})") from exc
    packages = _entries(data, "/FullPackage", path)
    images = _entries(data, "/Image", path)
    package_ns = np.empty(len(packages), np.int64)
    waveform = np.empty(len(packages), np.float64)
    pulse_rate = np.empty(len(packages), np.float64)
    for i, entry in enumerate(packages):
        try:
            package_ns[i] = int(entry["Timestamp"])
            waveform[i] = float(entry["Value"]["waveform"])
            pulse_rate[i] = float(entry["Value"]["pulseRate"])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise CorpusError(
                path, f"/FullPackage entry {i}: expected Timestamp and Value.waveform/pulseRate numbers ({exc!r})"
            ) from exc
    image_ns = np.empty(len(images), np.int64)
    for i, entry in enumerate(images):
        try:
            image_ns[i] = int(entry["Timestamp"])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise CorpusError(path, f"/Image entry {i}: expected a Timestamp number ({exc!r})") from exc
    return PureRecord(image_ns, package_ns, waveform, pulse_rate)


def _entries(data: object, key: str, path: Path) -> list:
    entries = data.get(key) if isinstance(data, dict) else None
    if not isinstance(entries, list) or len(entries) < 2:
        raise CorpusError(path, f"has no {key!r} list of at least 2 entries (not a PURE meta file?)")
    return entries


def frame_files(folder: Path) -> dict[int, Path]:
    """`Image<ns>.png` files of a session folder by timestamp."""
    found = {}
    for path in folder.iterdir():
        match = IMAGE.match(path.name)
        if match and path.is_file():
            found[int(match.group(1))] = path
    return found


def _is_session(folder: Path) -> bool:
    # A session folder; its image subfolder of the same name (`01-01/01-01/`) is part of it, not another session.
    return bool(SESSION.match(folder.name)) and folder.parent.name != folder.name


@CORPORA.register("pure")
class PureCorpus(OximeterCorpus):
    """PURE: 60 one-minute PNG sequences (10 subjects x 6 setups) with a finger pulse oximeter (CMS50E, ~60 Hz).

    Layout: a folder per session `NN-MM` (subject NN 01-10, setup MM 01-06: steady, talking, slow translation,
    fast translation, small rotation, medium rotation), holding `Image<ns>.png` frames (640x480, ~30 fps, the
    capture time in ns in the name) and its meta file `NN-MM.json` next to the folder (the release) or inside it;
    the frames may also sit in a subfolder `NN-MM/NN-MM/` (the rPPG-Toolbox layout). The meta file is
    `{"/FullPackage": [{"Timestamp": ns, "Value": {"pulseRate", "o2saturation", "signalStrength", "waveform"}}],
    "/Image": [{"Timestamp": ns}]}`, all times unix ns on one clock.

    Media: `FrameFiles` sorted by timestamp, times relative to the first frame (a dropped frame is a gap).
    Cardiac ground truth (`cardiac`): "ppg" (default) the oximeter waveform as kind "ppg", or "hr" its pulse rate
    as kind "hr", at the packages' own times; `offset_s` is the first frame's time after the first package (the
    oximeter may start before or after the camera), so on the video clock the packages lie at
    `(t_package - t_first_frame)`. Packages sharing a time are averaged.

    Labels: no expression and no stress labels. Attributes: `setup` (MM) and `motion` (its name).

    Splits: subject-disjoint (`split_subjects` over the 10 subjects), `split_fractions` with `seed`.

    Problems (by file): a missing or malformed meta file, frames listed under `/Image` without their PNG,
    PNGs the meta file does not list (the counts disagree), a folder without frames; `check` finds frames
    missing since reading and a waveform shorter than the frames.

    Args:
        split_fractions: train, val, test shares of the subjects.
        seed: seed of the split.
        cardiac: "ppg" or "hr", which of the oximeter's signals is the item's cardiac ground truth.
    """

    name = "pure"
    layout = "NN-MM/Image<ns>.png (or NN-MM/NN-MM/Image<ns>.png) + NN-MM.json (next to or inside NN-MM/)"
    url = "https://www.tu-ilmenau.de/en/neurob/data-sets-code/pulse-rate-detection-dataset-pure"

    def read(self, root: Path) -> list[Item]:
        folders = session_folders(root, _is_session, max_depth=2)
        if not folders:
            raise CorpusError(root, "no PURE session folder (NN-MM) found")
        pending = [entry for entry in (self._session(root, f) for f in folders) if entry is not None]
        assign = split_subjects([item.subject_id for item in pending], self.split_fractions, self.seed)
        return [
            Item(
                item_id=item.item_id,
                subject_id=item.subject_id,
                split=assign[item.subject_id],
                media=item.media,
                cardiac=item.cardiac,
                attributes=item.attributes,
            )
            for item in pending
        ]

    def _session(self, root: Path, folder: Path) -> Item | None:
        """The session's item (split to be assigned), or None after reporting a problem."""
        name = folder.name
        meta = next((p for p in (folder / f"{name}.json", folder.parent / f"{name}.json") if p.is_file()), None)
        if meta is None:
            self.report(folder.parent / f"{name}.json", f"meta file (JSON) of session {name} is missing")
            return None
        nested = folder / name
        images = nested if nested.is_dir() else folder
        frames = frame_files(images)
        if not frames:
            self.report(images, "holds no Image<ns>.png frames")
            return None
        try:
            record = read_pure_json(meta)
        except CorpusError as exc:
            self.report(exc.path, exc.problem)
            return None
        listed = set(record.image_ns.tolist())
        missing = sorted(listed - set(frames))
        unlisted = sorted(set(frames) - listed)
        if missing:
            self.report(
                images / f"Image{missing[0]}.png",
                f"frame file is missing: {len(missing)} of the {len(listed)} frames {meta.name} lists under /Image "
                "have no PNG",
            )
            return None
        if unlisted or len(listed) != len(record.image_ns):
            self.report(
                meta,
                f"/Image lists {len(record.image_ns)} frames ({len(listed)} distinct) but {images} holds "
                f"{len(frames)} PNGs; {len(unlisted)} not listed"
                + (f" (first Image{unlisted[0]}.png)" if unlisted else ""),
            )
            return None
        stamps = np.array(sorted(frames), dtype=np.int64)
        offset_s = float(stamps[0] - record.package_ns.min()) / NS_PER_S
        media = FrameFiles(
            paths=tuple(frames[int(t)] for t in stamps),
            timestamps_s=tuple(((stamps - stamps[0]) / NS_PER_S).tolist()),
        )
        subject, setup = SESSION.match(name).groups()  # type: ignore[union-attr]
        return Item(
            item_id=name,
            subject_id=subject,
            split="train",
            media=media,
            cardiac=CardiacRef(self.cardiac, meta, offset_s=offset_s),
            attributes={"setup": setup, "motion": SETUPS.get(setup, "unknown")},
        )

    def load_cardiac(self, item: Item) -> CardiacSignal | None:
        ref = item.cardiac
        if ref is None:
            return None
        record = read_pure_json(ref.path)
        # Integer ns differences before the conversion: epoch ns as float64 keep only ~0.2 us.
        times = (record.package_ns - record.package_ns.min()) / NS_PER_S - ref.offset_s
        values = record.pulse_rate if ref.kind == "hr" else record.waveform
        times, values = strictly_increasing(times, values)
        return CardiacSignal(ref.kind, values, times_s=times, source=ref.path)
