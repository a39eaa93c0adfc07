"""Label taxonomies: the run's class names are configuration, each corpus maps its own labels onto them.

Two steps turn a label as a corpus writes it ("happiness", "3", "T2") into a class index of the run:

1. the corpus' own map (`Corpus.expression_map` / `stress_map`) turns it into a *canonical name* from the
   vocabulary below, or None for labels that are no expression at all (AffectNet's "none", "uncertain",
   "non-face");
2. the run's class list (`expression_classes`, default the 7 basic emotions; `stress_levels`, default low /
   normal / high) gives the index. A canonical name the run does not list (contempt in a 7-class run, calm)
   is *unmapped*: the label is dropped and counted under its original name, unless the run's `label_map`
   maps it (e.g. `{calm: neutral}` or `{contempt: disgust}`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Final

BASIC_EXPRESSIONS: Final[tuple[str, ...]] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
STRESS_LEVELS: Final[tuple[str, ...]] = ("low", "normal", "high")

# Canonical expression names and the spellings corpora and folder names use for them.
EXPRESSION_SYNONYMS: Final[dict[str, str]] = {
    "angry": "angry",
    "anger": "angry",
    "ang": "angry",
    "disgust": "disgust",
    "disgusted": "disgust",
    "dis": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "fea": "fear",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "hap": "happy",
    "sad": "sad",
    "sadness": "sad",
    "surprise": "surprise",
    "surprised": "surprise",
    "sur": "surprise",
    "neutral": "neutral",
    "neu": "neutral",
    "contempt": "contempt",
    "calm": "calm",
}
STRESS_SYNONYMS: Final[dict[str, str]] = {
    "low": "low",
    "rest": "low",
    "relaxed": "low",
    "normal": "normal",
    "medium": "normal",
    "moderate": "normal",
    "high": "high",
    "stress": "high",
    "stressed": "high",
}


def canonical_expression(label: str) -> str | None:
    """The canonical name of an expression label in any common spelling, or None when it is not one."""
    return EXPRESSION_SYNONYMS.get(str(label).strip().lower())


def canonical_stress(label: str) -> str | None:
    return STRESS_SYNONYMS.get(str(label).strip().lower())


def check_classes(names: Sequence[str], what: str) -> tuple[str, ...]:
    """Class names of a run: non-empty, unique strings."""
    names = tuple(str(n) for n in names)
    if len(names) < 2:
        raise ValueError(f"{what}: need at least 2 classes, got {list(names)}")
    if len(set(names)) != len(names):
        raise ValueError(f"{what}: duplicate class names in {list(names)}")
    return names


class LabelMap:
    """Original corpus label -> class index of the run, or None (unmapped, counted by original name).

    Args:
        classes: the run's class names in index order.
        corpus_map: the corpus' map from its original labels to canonical names (None: not a class at all).
            A label missing from it is looked up as a spelling of a canonical name.
        overrides: the run's own map, applied first to original labels and then to canonical names, e.g.
            `{"calm": "neutral"}`; a value of None drops the label.
        synonyms: how to read a label that neither map knows (`canonical_expression` or `canonical_stress`).
    """

    def __init__(
        self,
        classes: Sequence[str],
        corpus_map: Mapping[str, str | None] | None = None,
        overrides: Mapping[str, str | None] | None = None,
        synonyms=canonical_expression,
    ) -> None:
        self.classes = tuple(classes)
        self._index = {name: i for i, name in enumerate(self.classes)}
        self.corpus_map = dict(corpus_map or {})
        self.overrides = dict(overrides or {})
        self.synonyms = synonyms
        self.unmapped: Counter[str] = Counter()
        self.mapped: Counter[str] = Counter()

    def canonical(self, original: str) -> str | None:
        original = str(original)
        if original in self.overrides:
            name = self.overrides[original]
        elif original in self.corpus_map:
            name = self.corpus_map[original]
        else:
            name = self.synonyms(original)
            if name is None and original in self._index:
                name = original
        if name is not None and name in self.overrides and name != original:
            name = self.overrides[name]
        return name

    def index(self, original: str, count: bool = True) -> int | None:
        """Class index of an original label; an unmapped one returns None and is counted under its own name."""
        name = self.canonical(original)
        idx = self._index.get(name) if name is not None else None
        if count:
            if idx is None:
                self.unmapped[str(original)] += 1
            else:
                self.mapped[self.classes[idx]] += 1
        return idx
