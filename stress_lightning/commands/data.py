"""`stress-lightning data summary|corpora|shards`: what a corpus holds and what is wrong with it, without caching it;
the registered corpora; a run's clips written as litdata shards (`stress_lightning.data.shards`)."""

from __future__ import annotations

import argparse
import re
import warnings
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


SHARDS_DESCRIPTION = """\
Write the clips of a run's data config as litdata shards, which a run then streams from local disk or object
storage with --data.init_args.shards DIR (docs/SHARDS.md).

  stress-lightning data shards --config conf/synthetic.yaml --out DIR [--workers N]
  stress-lightning data shards --config ... --out DIR --part I/N      (one machine per part, I = 0..N-1)
  stress-lightning data shards --merge --out DIR                       (once all N parts are in DIR)

The config files (and --data.init_args.KEY=VALUE overrides) are those of `stress-lightning fit`; only their data
section is used. The corpus is read and its cache built first, as a training run would; the samples are written
before any augmentation (it is applied when reading). DIR gets shards.json (the manifest) and one folder per split.
A part goes to DIR/<split>/part-I-of-N/ with DIR/parts/part-I-of-N.json; --merge joins the parts, writes the
manifest and removes them. Writing and merging need a local or shared folder; upload the merged set to object
storage (e.g. `aws s3 sync DIR s3://bucket/prefix`) and train from its URL.

Exit status: 0 written, 1 the corpus, cache or shard set cannot be read or written (the error names it), 2 usage."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stress-lightning data",
        description="Inspect corpora: list the readers, summarise a corpus; write a run's clips as shards.",
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="{summary,corpora,shards}")
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
    shards = sub.add_parser(
        "shards",
        help="write a run's clips as litdata shards (or --merge the parts of a set)",
        description=SHARDS_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    shards.add_argument(
        "--config", action="append", default=[], metavar="FILE", help="a `fit` config file; repeatable, in order"
    )
    shards.add_argument("--out", required=True, metavar="DIR", help="the shard set's folder")
    shards.add_argument("--splits", nargs="+", metavar="SPLIT", help="splits to write (default: all the config serves)")
    shards.add_argument("--workers", type=int, default=1, metavar="N", help="writer processes (default 1)")
    shards.add_argument("--part", metavar="I/N", help="write only part I of N (I = 0..N-1) of every split")
    shards.add_argument("--merge", action="store_true", help="join the parts in --out into one shard set")
    shards.add_argument("--chunk-bytes", default="64MB", metavar="SIZE", help="chunk file size (default 64MB)")
    shards.add_argument("--compression", metavar="NAME", help="chunk compression: zstd or zstd:LEVEL (default none)")
    shards.add_argument("--overwrite", action="store_true", help="replace shards already in --out")
    shards.add_argument("--quiet", action="store_true", help="no progress output")
    parser.summary_parser = summary  # type: ignore[attr-defined]
    parser.shards_parser = shards  # type: ignore[attr-defined]
    return parser


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    # `data shards` passes --data.init_args.KEY=VALUE overrides on to the config parser.
    args, extra = parser.parse_known_args(list(argv))
    if extra and args.action != "shards":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.action == "corpora":
        return list_corpora(args.json)
    if args.action == "shards":
        return write_shards_command(parser.shards_parser, args, extra)  # type: ignore[attr-defined]
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


# -- shards -----------------------------------------------------------------------------------------------------
CHUNK_BYTES = re.compile(r"\d+(\.\d+)?\s*(b|k|kb|m|mb|g|gb)", re.IGNORECASE)


def _check_overrides(parser: argparse.ArgumentParser, extra: Sequence[str]) -> None:
    for token in extra:
        if token.startswith("-") and not token.startswith(("--data.", "--data=", "--seed_everything")):
            parser.error(
                f"unrecognized argument {token!r} (config overrides are --data.init_args.KEY=VALUE; the trainer and "
                "model sections of the config are not used here)"
            )


def build_datamodule(configs: Sequence[str], overrides: Sequence[str]) -> Any:
    """The datamodule a `fit` with these config files and overrides would train on (parsed by the same
    LightningCLI); nothing else of the config is built (no model, no trainer, no MLflow store)."""
    import importlib

    from lightning.pytorch import LightningDataModule

    from stress_lightning.cli import StressLightningCLI
    from stress_lightning.models.module import MultiTaskStressModule

    class DataOnlyCLI(StressLightningCLI):
        def _set_seed(self) -> None:
            pass  # nothing random is done with the data config here; the seed stays the training run's business

        def instantiate_classes(self) -> None:
            data = self.config["data"]
            if data is None or not getattr(data, "class_path", None):
                raise CommandError("the config has no data section (data.class_path)", code=2)
            module_name, _, class_name = data.class_path.rpartition(".")
            cls = getattr(importlib.import_module(module_name), class_name)
            init_args = data.get("init_args")
            self.datamodule = cls(**(init_args.as_dict() if init_args is not None else {}))

    args = [arg for path in configs for arg in ("--config", path)] + list(overrides)
    with warnings.catch_warnings():
        # LightningCLI warns when given args while sys.argv holds others: here sys.argv is this command's own.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        cli = DataOnlyCLI(
            MultiTaskStressModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=None,
            run=False,
            args=args,
            auto_configure_optimizers=False,
        )
    return cli.datamodule


def write_shards_command(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: Sequence[str]) -> int:
    import time

    from stress_lightning.data.datamodules import ClipDataModule
    from stress_lightning.data.errors import CorpusError
    from stress_lightning.data.items import SPLITS
    from stress_lightning.data.shards import ShardError, available_compressions, merge_parts, parse_part, write_shards

    out = Path(args.out)
    if args.merge:
        options = (("--config", args.config), ("--part", args.part), ("--splits", args.splits))
        given = [name for name, value in options if value]
        if given or extra:
            parser.error(f"--merge takes only --out (and --quiet); got {given + list(extra)}")
        try:
            counts = merge_parts(out, progress=not args.quiet)
        except (ShardError, OSError) as exc:
            raise CommandError(f"cannot merge the parts in {out}: {exc}") from exc
        print(f"merged {sum(counts.values())} samples ({_counts(counts)}) into {out}")
        return 0
    if not args.config:
        parser.error("--config FILE is required (the `fit` config whose clips are written), or --merge")
    _check_overrides(parser, extra)
    if args.workers < 1:
        parser.error(f"--workers {args.workers}: must be >= 1")
    part = None
    if args.part is not None:
        try:
            part = parse_part(args.part)
        except ValueError as exc:
            parser.error(f"--part {exc}")
    if not CHUNK_BYTES.fullmatch(str(args.chunk_bytes).strip()):
        parser.error(f"--chunk-bytes {args.chunk_bytes!r}: expected a size such as 64MB, 256KB or 1GB")
    if args.compression is not None and args.compression not in available_compressions():
        choices = ", ".join(available_compressions()) or "none (install the zstd package)"
        parser.error(f"--compression {args.compression!r}: not available; available: {choices}")
    unknown = sorted(set(args.splits or []) - set(SPLITS))
    if unknown:
        parser.error(f"--splits {unknown}: unknown; known: {', '.join(SPLITS)}")
    for path in args.config:
        if not Path(path).is_file():
            parser.error(f"--config {path}: no such file")
    datamodule = build_datamodule(args.config, extra)
    if not isinstance(datamodule, ClipDataModule):
        parser.error(
            f"the config's data is {type(datamodule).__name__}; shards hold one corpus (ClipDataModule): write each "
            "corpus of a mixed run with its own config"
        )
    datamodule.shards = None  # written from the corpus, whatever the config streams from
    datamodule.progress = not args.quiet
    splits = args.splits or [s for s in SPLITS if s in datamodule.splits]
    missing = [s for s in splits if s not in datamodule.splits]
    if missing:
        parser.error(f"--splits {missing}: not served by the config (data.init_args.splits {datamodule.splits})")
    # The corpus is read and cached first (as a training run would): timed apart from the writing.
    try:
        started = time.perf_counter()
        datamodule.prepare_data()
        prepared = time.perf_counter()
        counts = write_shards(
            datamodule,
            out,
            splits=splits,
            workers=args.workers,
            part=part,
            chunk_bytes=args.chunk_bytes,
            compression=args.compression,
            progress=not args.quiet,
            overwrite=args.overwrite,
        )
        finished = time.perf_counter()
    except (ShardError, CorpusError, OSError) as exc:
        raise CommandError(f"cannot write shards to {out}: {exc}") from exc
    written = sum(counts.values())
    size = sum(p.stat().st_size for split in counts for p in (out / split).rglob("*.bin"))
    seconds = max(finished - prepared, 1e-9)
    what = f"part {part[0]}/{part[1]}" if part is not None else "shards"
    print(
        f"wrote {what}: {written} samples ({_counts(counts)}), {size / 1e6:.1f} MB, in {seconds:.1f} s "
        f"({written / seconds:.0f} samples/s; corpus and cache ready in {prepared - started:.1f} s) -> {out}"
    )
    if part is not None:
        print(f"once all {part[1]} parts are in {out}: stress-lightning data shards --merge --out {out}")
    return 0


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{split} {n}" for split, n in counts.items()) or "no split had samples"
