"""`stress-lightning data summary|corpora`: what a corpus holds and what is wrong with it, without caching it."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stress_lightning.commands import (
    CommandError,
    add_corpus_arguments,
    build_reader,
    parse_options,
    print_json,
    table,
)

if TYPE_CHECKING:
    from stress_lightning.data.taxonomy import LabelMap

SUMMARY_DESCRIPTION = """\
Read a corpus (no cache is built, nothing is generated) and print, per split, the number of items (videos or
images) and subjects, the expression label counts per class of the run after the label map (labels the run's
classes do not hold are listed as unmapped under their original name), the stress level counts, the cardiac
ground truth of each item (ecg, ppg, hr or none) and every problem found (path and reason).

Labels are counted per item: a whole-item label (an image, a clip) counts once; an expression timeline counts
each of its events' labels once and nothing for its rest periods. Stress: a session label counts once, stress
segments count once each.

Bad items do not stop the summary: the reader runs in skip mode and every problem is listed (exit status 0).
Unless --no-check, each item's files are opened to find unreadable or too short media and ground truth shorter
than the video. Items with problems are still counted.

The synthetic corpus is summarised as it was generated (its corpus.json); this command never generates it.

--json prints one object: {"corpus", "splits": {split: {"items", "subjects"}}, "expression": {class: n},
"unmapped": {label: n}, "stress": {level: n}, "cardiac": {"ecg", "ppg", "hr", "none"}, "problems":
[{"path", "reason"}]}, counts over all splits; unmapped stress labels appear in "unmapped" as "stress:<label>".

Exit status: 0 summary printed (even with problems), 1 the root cannot be read, 2 usage error."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stress-lightning data", description="Inspect corpora: list the readers, summarise a corpus."
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="{summary,corpora}")
    summary = sub.add_parser(
        "summary",
        help="items, subjects, labels, cardiac ground truth and problems of a corpus",
        description=SUMMARY_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_corpus_arguments(summary)
    summary.add_argument(
        "--expression-classes",
        metavar="A,B,C",
        help="the run's expression classes, comma-separated (default: the 7 basic expressions)",
    )
    summary.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    summary.add_argument("--no-check", action="store_true", help="do not open the items' files")
    corpora = sub.add_parser("corpora", help="registered corpus names with their layout and where to get them")
    corpora.add_argument("--json", action="store_true", help="print a JSON list")
    parser.summary_parser = summary  # type: ignore[attr-defined]
    return parser


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if args.action == "corpora":
        return list_corpora(args.json)
    return summary(parser.summary_parser, args)  # type: ignore[attr-defined]


# -- corpora ----------------------------------------------------------------------------------------------------
def list_corpora(as_json: bool) -> int:
    from stress_lightning.data.corpora import CORPORA

    entries = []
    for name in CORPORA.names():
        cls = CORPORA.get(name)
        entries.append({"name": name, "layout": getattr(cls, "layout", ""), "url": getattr(cls, "url", "")})
    if as_json:
        print_json(entries)
        return 0
    for entry in entries:
        print(entry["name"])
        print(f"  layout: {entry['layout'] or '-'}")
        print(f"  url:    {entry['url'] or '-'}")
    return 0


# -- summary ----------------------------------------------------------------------------------------------------
@dataclass
class SplitCounts:
    items: int = 0
    subjects: set[str] = field(default_factory=set)
    expression: Counter[str] = field(default_factory=Counter)
    unmapped: Counter[str] = field(default_factory=Counter)
    stress: Counter[str] = field(default_factory=Counter)
    stress_unmapped: Counter[str] = field(default_factory=Counter)
    cardiac: Counter[str] = field(default_factory=Counter)
    with_problems: int = 0


@dataclass
class CorpusSummary:
    corpus: str
    root: Path
    expression_classes: tuple[str, ...]
    stress_levels: tuple[str, ...]
    splits: dict[str, SplitCounts]
    problems: list[Any]  # Problem

    def total(self, attr: str) -> Counter[str]:
        result: Counter[str] = Counter()
        for counts in self.splits.values():
            result.update(getattr(counts, attr))
        return result

    def as_json(self) -> dict[str, Any]:
        from stress_lightning.data.items import CARDIAC_KINDS

        expression = self.total("expression")
        stress = self.total("stress")
        cardiac = self.total("cardiac")
        unmapped = dict(sorted(self.total("unmapped").items()))
        unmapped.update({f"stress:{k}": v for k, v in sorted(self.total("stress_unmapped").items())})
        return {
            "corpus": self.corpus,
            "splits": {s: {"items": c.items, "subjects": len(c.subjects)} for s, c in self.splits.items()},
            "expression": {name: expression[name] for name in self.expression_classes},
            "unmapped": unmapped,
            "stress": {name: stress[name] for name in self.stress_levels},
            "cardiac": {kind: cardiac[kind] for kind in (*CARDIAC_KINDS, "none")},
            "problems": [p.as_dict() for p in self.problems],
        }

    def as_text(self) -> str:
        from stress_lightning.data.items import CARDIAC_KINDS

        splits = list(self.splits)
        header = ["", *splits, "total"]

        def row(name: str, values: list[int]) -> list[Any]:
            return [name, *values, sum(values)]

        def counter_rows(attr: str, names: Sequence[str], label: str = "{}") -> list[list[Any]]:
            return [row(label.format(n), [getattr(self.splits[s], attr)[n] for s in splits]) for n in names]

        total_subjects = len(set().union(*(c.subjects for c in self.splits.values())))
        overview = [
            row("items", [self.splits[s].items for s in splits]),
            row("subjects", [len(self.splits[s].subjects) for s in splits])[:-1] + [total_subjects],
            row("items with problems", [self.splits[s].with_problems for s in splits]),
        ]
        unmapped = sorted(self.total("unmapped"))
        stress_unmapped = sorted(self.total("stress_unmapped"))
        sections = [
            f"corpus {self.corpus} at {self.root}",
            "",
            table(header, overview),
            "",
            "expression (per item: a label once, a timeline's events once each, rest periods not counted)",
            table(
                header,
                counter_rows("expression", self.expression_classes, "  {}")
                + counter_rows("unmapped", unmapped, "  {} (unmapped)"),
            ),
            "",
            "stress",
            table(
                header,
                counter_rows("stress", self.stress_levels, "  {}")
                + counter_rows("stress_unmapped", stress_unmapped, "  {} (unmapped)"),
            ),
            "",
            "cardiac ground truth (items)",
            table(header, counter_rows("cardiac", [*CARDIAC_KINDS, "none"], "  {}")),
            "",
            f"problems: {len(self.problems)}",
        ]
        sections += [f"  {p.path}: {p.reason}" for p in self.problems]
        return "\n".join(sections)


def _tally(label, label_map: LabelMap, known: Counter, unmapped: Counter) -> None:
    """Count an item's labels (one for a ClassLabel, each event or segment of a timeline) by class or, when the
    run does not list it, by its original name."""
    for original in label.labels() if label is not None else []:
        idx = label_map.index(original, count=False)
        if idx is None:
            unmapped[str(original)] += 1
        else:
            known[label_map.classes[idx]] += 1


def summarize(
    reader: Any,
    root: Path,
    expression_classes: Sequence[str],
    stress_levels: Sequence[str],
    check: bool = True,
) -> CorpusSummary:
    """Read `root` with `reader` (its on_error decides whether reading stops at a bad file) and count."""
    from stress_lightning.data.items import SPLITS, Problem
    from stress_lightning.data.taxonomy import LabelMap, canonical_stress

    items = reader.read_checked(root)
    problems = list(reader.problems)
    expression_map = LabelMap(expression_classes, reader.expression_map)
    stress_map = LabelMap(stress_levels, reader.stress_map, synonyms=canonical_stress)
    splits = {split: SplitCounts() for split in SPLITS}
    for item in items:
        counts = splits.setdefault(item.split, SplitCounts())
        counts.items += 1
        counts.subjects.add(item.subject_id)
        _tally(item.expression, expression_map, counts.expression, counts.unmapped)
        _tally(item.stress, stress_map, counts.stress, counts.stress_unmapped)
        counts.cardiac[item.cardiac.kind if item.cardiac is not None else "none"] += 1
        if check:
            try:
                found = reader.check(item)
            except Exception as exc:  # a reader bug must not hide the other items' problems
                found = [Problem(str(item.files()[0]), f"check failed: {type(exc).__name__}: {exc}")]
            if found:
                counts.with_problems += 1
                problems.extend(found)
    return CorpusSummary(reader.name or "", root, tuple(expression_classes), tuple(stress_levels), splits, problems)


def summary(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from stress_lightning.data.errors import CorpusError
    from stress_lightning.data.taxonomy import BASIC_EXPRESSIONS, STRESS_LEVELS, check_classes

    options = parse_options(parser, args.option)
    classes = BASIC_EXPRESSIONS
    if args.expression_classes is not None:
        try:
            classes = check_classes([c.strip() for c in args.expression_classes.split(",") if c.strip()], "classes")
        except ValueError as exc:
            parser.error(f"--expression-classes: {exc}")
    reader = build_reader(parser, args.corpus, options, on_error="skip")
    root = Path(args.root)
    try:
        result = summarize(reader, root, classes, STRESS_LEVELS, check=not args.no_check)
    except CorpusError as exc:
        raise CommandError(f"cannot read corpus {args.corpus!r}: {exc}") from exc
    except OSError as exc:  # e.g. a root that is not readable
        raise CommandError(f"cannot read corpus {args.corpus!r} at {root}: {exc}") from exc
    result.corpus = args.corpus
    if args.json:
        print_json(result.as_json())
    else:
        print(result.as_text())
    return 0
