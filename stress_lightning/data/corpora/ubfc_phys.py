"""UBFC-Phys (Meziati Sabour et al. 2021): 56 subjects filmed at rest, giving a speech and doing mental arithmetic,
with a wristband's BVP (and EDA)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from stress_lightning.data.corpora.base import CORPORA, Corpus, OnError, read_csv_checked, split_subjects
from stress_lightning.data.corpora.common import check_split_fractions
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.items import CardiacRef, CardiacSignal, ClassLabel, Item, VideoFile

TASKS: tuple[str, ...] = ("T1", "T2", "T3")
# The Empatica E4's BVP rate (its EDA is at 4 Hz); the release's files carry no rate of their own.
BVP_FS_HZ = 64.0
# `vid_s12_T2.avi`, `bvp_s12_T2.csv`, `eda_s12_T2.csv`, `info_s12.txt`.
SESSION_FILE = re.compile(r"^(vid|bvp|eda)_(s\d+)_(T\d)\.(avi|csv)$", re.IGNORECASE)
INFO_FILE = re.compile(r"^info_(s\d+)\.txt$", re.IGNORECASE)
SUFFIX = {"vid": ".avi", "bvp": ".csv", "eda": ".csv"}
GENDERS = {
    "m": "male",
    "male": "male",
    "man": "male",
    "h": "male",
    "homme": "male",
    "femme": "female",
    "f": "female",
    "female": "female",
    "woman": "female",
}
GROUPS = {"test": "test", "ctrl": "ctrl", "control": "ctrl"}


def read_info(path: Path) -> dict[str, str]:
    """Gender and group (test/ctrl) from an `info_sN.txt`, recognised by their values on any line (one value per
    line, or `key: value`), so the order of its lines does not matter; values it does not know are left out."""
    attributes: dict[str, str] = {}
    for token in re.split(r"[\s,;:=]+", path.read_text(errors="replace").lower()):
        if token in GROUPS:
            attributes.setdefault("group", GROUPS[token])
        elif token in GENDERS:
            attributes.setdefault("gender", GENDERS[token])
    return attributes


def read_bvp(path: Path) -> np.ndarray:
    """A BVP (or EDA) file: one number per line, no header."""
    table = read_csv_checked(path, [], header=None, dtype=str, keep_default_na=False, skipinitialspace=True)
    if table.shape[1] != 1:
        raise CorpusError(path, f"has {table.shape[1]} columns; expected one value per line")
    raw = table[0].str.strip()
    values = pd.to_numeric(raw, errors="coerce").to_numpy(np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise CorpusError(path, f"line {bad[0] + 1}: {raw.iloc[bad[0]][:30]!r} is not a number")
    if len(values) < 2:
        raise CorpusError(path, f"has {len(values)} samples; need at least 2")
    return values


def _subject_key(subject: str) -> int:
    return int(subject[1:])


@CORPORA.register("ubfc_phys")
class UbfcPhysCorpus(Corpus):
    """UBFC-Phys: three videos per subject, one per task, with the BVP of an Empatica E4 wristband.

    Layout: `sN/vid_sN_T1.avi` (and `_T2`, `_T3`), `sN/bvp_sN_Tk.csv` (BVP, one value per line, 64 Hz),
    `sN/eda_sN_Tk.csv` (EDA, 4 Hz) and `sN/info_sN.txt`. The subject folders may lie in root or deeper (the
    release comes as `s1.zip`, ... or `s1_to_s10.7z`, ...: unpacked into folders of the archive's name they
    become `s1/s1/` or `s1_to_s10/s1/`): files are found by name anywhere under root. The info file's lines
    hold the subject's gender (m/f) and group (`test` or `ctrl`: the harder or the easier version of the
    tasks); they become the item attributes `gender` and `group`. The EDA is not read (no EDA target yet).

    Videos: 1024x1024 AVI at 35 fps; frame times come from the container. BVP: kind "ppg" at 64 Hz, starting
    with the video (offset 0), as the release synchronises them.

    Labels: stress per item = the task as written, "T1" (rest), "T2" (speech), "T3" (arithmetic), mapped by
    `stress_map` to low, normal, high. A run may map them otherwise with the data module's `stress_label_map`
    (e.g. `{T2: high}` for a rest vs stress split). No expression labels.

    Items: one per subject and task in `tasks`, id `sN/Tk`. Splits: subject-disjoint (`split_subjects`),
    `split_fractions` with `seed`.

    Problems (by file): a task whose video or BVP file is missing, a BVP file that is not one number per line, a
    file found twice; `check` finds a truncated video and a BVP shorter than the video.

    Args:
        tasks: the tasks to read (default all three).
        split_fractions: train, val, test shares of the subjects.
        seed: seed of the split.
    """

    name = "ubfc_phys"
    layout = "sN/vid_sN_Tk.avi + sN/bvp_sN_Tk.csv (64 Hz) + sN/info_sN.txt, k = 1 (rest), 2 (speech), 3 (arithmetic)"
    url = "https://sites.google.com/view/ybenezeth/ubfc-phys"
    stress_map = {"T1": "low", "T2": "normal", "T3": "high"}
    cardiac_ends_with_video = True  # the release cuts each BVP to its video; its files carry no rate of their own

    def __init__(
        self,
        tasks: Sequence[str] = TASKS,
        split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
        seed: int = 0,
        on_error: OnError = "fail",
    ) -> None:
        super().__init__(on_error)
        chosen = tuple(str(t).upper() for t in ([tasks] if isinstance(tasks, str) else tasks))
        unknown = [t for t in chosen if t not in TASKS]
        if not chosen or unknown or len(set(chosen)) != len(chosen):
            raise ValueError(f"{self.name}: tasks must be distinct names among {list(TASKS)}, got {list(chosen)}")
        self.tasks = tuple(t for t in TASKS if t in chosen)
        self.split_fractions = check_split_fractions(split_fractions, self.name)
        self.seed = int(seed)

    def options(self) -> dict:
        return {"tasks": list(self.tasks), "split_fractions": list(self.split_fractions), "seed": self.seed}

    def read(self, root: Path) -> list[Item]:
        files: dict[tuple[str, str, str], Path] = {}  # (subject, kind, task) -> file
        infos: dict[str, Path] = {}
        folders: dict[str, Path] = {}  # subject -> the folder its files are in
        for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
            match = SESSION_FILE.match(path.name)
            info = INFO_FILE.match(path.name)
            if match:
                kind, subject, task = match.group(1).lower(), match.group(2).lower(), match.group(3).upper()
                if path.suffix.lower() != SUFFIX[kind]:
                    continue
                key = (subject, kind, task)
            elif info:
                subject, key = info.group(1).lower(), None
            else:
                continue
            first = files.get(key) if key is not None else infos.get(subject)
            if first is not None:
                self.report(path, f"the same file is also at {first}; remove one copy")
                continue
            if key is not None:
                files[key] = path
            else:
                infos[subject] = path
            folders.setdefault(subject, path.parent)
        if not folders:
            raise CorpusError(root, "no UBFC-Phys subject found (files vid_sN_Tk.avi and bvp_sN_Tk.csv)")
        pending: list[tuple[str, str, Path, Path, dict[str, str]]] = []
        for subject in sorted(folders, key=_subject_key):
            attributes = read_info(infos[subject]) if subject in infos else {}
            for task in self.tasks:
                entry = self._task(folders[subject], subject, task, files)
                if entry is not None:
                    pending.append((subject, task, *entry, attributes))
        assign = split_subjects([s for s, *_ in pending], self.split_fractions, self.seed)
        return [
            Item(
                item_id=f"{subject}/{task}",
                subject_id=subject,
                split=assign[subject],
                media=VideoFile(video),
                stress=ClassLabel(task),
                cardiac=CardiacRef("ppg", bvp, fs_hz=BVP_FS_HZ, offset_s=0.0),
                attributes=dict(attributes),
            )
            for subject, task, video, bvp, attributes in pending
        ]

    def _task(
        self, folder: Path, subject: str, task: str, files: dict[tuple[str, str, str], Path]
    ) -> tuple[Path, Path] | None:
        video, bvp = files.get((subject, "vid", task)), files.get((subject, "bvp", task))
        if video is None and bvp is None:
            self.report(folder / f"vid_{subject}_{task}.avi", f"task {task} of {subject} is missing (no video, no BVP)")
            return None
        if video is None:
            self.report(folder / f"vid_{subject}_{task}.avi", f"video is missing (its BVP {bvp.name} is there)")
            return None
        if bvp is None:
            self.report(folder / f"bvp_{subject}_{task}.csv", f"BVP file is missing (its video {video.name} is there)")
            return None
        try:
            read_bvp(bvp)
        except CorpusError as exc:
            self.report(exc.path, exc.problem)
            return None
        return video, bvp

    def load_cardiac(self, item: Item) -> CardiacSignal | None:
        ref = item.cardiac
        if ref is None:
            return None
        return CardiacSignal(ref.kind, read_bvp(ref.path), fs_hz=ref.fs_hz, start_s=-ref.offset_s, source=ref.path)
