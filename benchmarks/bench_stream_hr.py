"""Heart rate of the stream against ground truth: the classic methods (POS, CHROM) and the learned rPPG stream;
writes benchmarks/results/stream_hr.md.

Run from the repository root:
    MLFLOW_TRACKING_URI=sqlite:////work/main/mlruns/mlflow.db .venv/bin/python benchmarks/bench_stream_hr.py
        [--model URI_OR_PATH] [--methods pos chrom model] [--ubfc-root PATH]

Every session goes through the consumer API, `stress_lightning.load_model(model).predict(video, hr_method=m)`:
the training face pipeline, a window estimate every second of video, each covering the last 10 s for a classic
method and the model's own pulse window (8 s) for "model". Each window's estimate is compared with the reference
heart rate inside the same span [t_start_s, t_end_s]:

- synthetic sessions (data/synthetic, the subjects of the test split in subjects.csv): 60 / mean RR of the
  R-peaks that `signals.ecg.detect_r_peaks` finds in the session's ecg.csv (time_s, ecg_mv; its clock is the
  video's);
- UBFC-rPPG (`--ubfc-root`, DATASET_2 layout subjectN/vid.avi + ground_truth.txt, read by the `ubfc_rppg`
  corpus): the mean of the pulse oximeter's heart-rate readings inside the window (real webcam video).

Windows overlap (1 s step), so they are not independent: MAE, RMSE and Pearson r are over windows, and the
session count says how much independent data is behind them. A window whose estimate is missing (too little
face, a failed estimate) counts as missing, not as an error; the coverage column says how many.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "stream_hr.md"
COMMAND = ".venv/bin/python benchmarks/bench_stream_hr.py"
SYNTHETIC = ROOT / "data" / "synthetic"
CHAMPION = "models:/stress-multitask@champion"
# A trained mixed-corpus model, used when the registry has no champion.
FALLBACK_CHECKPOINT = ROOT / "outputs" / "2" / "08a3f3035b2e4fa9ba3aa22bae9ddbe2" / "checkpoints" / "last.ckpt"
CLASSIC_WINDOW_S = 10.0
MIN_BEATS = 3  # R-peaks a window needs for a reference heart rate (two RR intervals)


@dataclass(frozen=True)
class Session:
    """One video with its reference: `reference(t0, t1)` -> bpm or None."""

    corpus: str
    name: str
    group: str  # a grouping for the per-group table (stress session, subject)
    video: Path
    reference: Callable[[float, float], float | None]


# -- references ----------------------------------------------------------------------------------------------------
def ecg_reference(path: Path) -> Callable[[float, float], float | None]:
    """60 / mean RR of the R-peaks of ecg.csv inside [t0, t1] (None with fewer than MIN_BEATS peaks)."""
    from stress_lightning.signals.ecg import detect_r_peaks

    table = pd.read_csv(path)
    missing = {"time_s", "ecg_mv"} - set(table.columns)
    if missing:
        raise SystemExit(f"{path}: columns {sorted(missing)} missing (expected time_s, ecg_mv)")
    t = table["time_s"].to_numpy(np.float64)
    if len(t) < 2 or not np.all(np.diff(t) > 0):
        raise SystemExit(f"{path}: time_s must increase and have at least 2 samples")
    fs = (len(t) - 1) / (t[-1] - t[0])
    peaks_s = t[detect_r_peaks(table["ecg_mv"].to_numpy(np.float64), fs)]

    def reference(t0: float, t1: float) -> float | None:
        inside = peaks_s[(peaks_s >= t0) & (peaks_s <= t1)]
        return 60.0 / float(np.mean(np.diff(inside))) if len(inside) >= MIN_BEATS else None

    return reference


def oximeter_reference(times_s: np.ndarray, hr_bpm: np.ndarray) -> Callable[[float, float], float | None]:
    """Mean of the oximeter's HR readings inside [t0, t1] (None when there are none)."""

    def reference(t0: float, t1: float) -> float | None:
        inside = (times_s >= t0) & (times_s <= t1)
        return float(np.mean(hr_bpm[inside])) if inside.any() else None

    return reference


# -- sessions ------------------------------------------------------------------------------------------------------
def synthetic_sessions(root: Path, split: str, limit: int | None) -> list[Session]:
    subjects_csv = root / "subjects.csv"
    if not subjects_csv.is_file():
        raise SystemExit(f"{subjects_csv}: missing (generate the synthetic corpus first: `make data`)")
    subjects = pd.read_csv(subjects_csv)
    if not {"subject_id", "split"} <= set(subjects.columns):
        raise SystemExit(f"{subjects_csv}: needs columns subject_id and split")
    chosen = sorted(subjects.loc[subjects["split"] == split, "subject_id"].astype(str))
    if not chosen:
        raise SystemExit(f"{subjects_csv}: no subject in split {split!r}")
    sessions = []
    for subject in chosen:
        for folder in sorted((root / subject).glob(f"{subject}_*")):
            video, ecg = folder / "video.mkv", folder / "ecg.csv"
            if video.is_file() and ecg.is_file():
                level = folder.name.removeprefix(f"{subject}_")
                sessions.append(Session("synthetic", folder.name, level, video, ecg_reference(ecg)))
    if not sessions:
        raise SystemExit(f"{root}: no session folder with video.mkv and ecg.csv for subjects {chosen}")
    return sessions[:limit] if limit else sessions


def ubfc_sessions(root: Path, limit: int | None) -> list[Session]:
    from stress_lightning.data.corpora.ubfc_rppg import UbfcRppgCorpus
    from stress_lightning.data.errors import CorpusError

    corpus = UbfcRppgCorpus(cardiac="hr")
    try:
        items = corpus.read(root)
    except CorpusError as err:
        raise SystemExit(f"{err.path}: {err.problem}") from err
    sessions = []
    for item in items:
        signal = corpus.load_cardiac(item)
        ref = oximeter_reference(np.asarray(signal.times_s), np.asarray(signal.values))
        sessions.append(Session("ubfc_rppg", item.item_id, item.subject_id, item.media.path, ref))
    return sessions[:limit] if limit else sessions


# -- the model -----------------------------------------------------------------------------------------------------
def load(source: str | None, backend: str, threads: int):
    """(StressModel, description): `source`, else the registry's champion, else the fallback checkpoint."""
    import stress_lightning
    from stress_lightning.inference.loading import ModelLoadError

    candidates = [source] if source else [CHAMPION, str(FALLBACK_CHECKPOINT)]
    errors = []
    for candidate in candidates:
        try:
            model = stress_lightning.load_model(candidate, backend=backend, threads=threads)
        except ModelLoadError as err:
            errors.append(str(err))
            print(f"cannot load {candidate}: {err}", file=sys.stderr)
            continue
        return model, describe(candidate)
    raise SystemExit("no model could be loaded:\n" + "\n".join(errors))


def describe(source: str) -> str:
    """The model source, with the registry version and run behind an alias."""
    if not source.startswith("models:/"):
        return f"`{source}`"
    try:
        from mlflow import MlflowClient

        from stress_lightning.tracking.store import resolve_tracking_uri

        name, _, alias = source.removeprefix("models:/").partition("@")
        client = MlflowClient(tracking_uri=resolve_tracking_uri(None))
        version = client.get_model_version_by_alias(name, alias) if alias else None
    except Exception as err:  # the description is informative only; never fail the benchmark on it
        return f"`{source}` (version not resolved: {type(err).__name__})"
    if version is None:
        return f"`{source}`"
    created = datetime.datetime.fromtimestamp(version.creation_timestamp / 1000).strftime("%Y-%m-%d %H:%M")
    return f"`{source}` = version {version.version} (run {version.run_id}, registered {created})"


# -- evaluation ----------------------------------------------------------------------------------------------------
def window_s(model, method: str) -> float:
    """The span of a heart-rate window: the model's pulse window for "model", else the classic window."""
    return model.spec.window_s if method == "model" else CLASSIC_WINDOW_S


def evaluate(model, sessions: Iterable[Session], methods: list[str]) -> tuple[pd.DataFrame, dict[str, float]]:
    """One row per (session, method, window): estimate, reference."""
    rows = []
    seconds: dict[str, float] = dict.fromkeys(methods, 0.0)
    for session in sessions:
        for method in methods:
            t0 = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                table = model.predict(session.video, hr_method=method)
            seconds[method] += time.perf_counter() - t0
            for w in caught:
                print(f"  {session.name} {method}: warning: {w.message}", flush=True)
            n_ok = 0
            # Windows before the HR window has filled (t_start_s clipped at 0) carry stress but cannot carry a
            # heart rate by design; only full-span windows are scored.
            full_span = table["t_end_s"] - table["t_start_s"] >= window_s(model, method) - 1e-6
            for t_start, t_end, hr in table.loc[full_span, ["t_start_s", "t_end_s", "hr_bpm"]].itertuples(index=False):
                ref = session.reference(float(t_start), float(t_end))
                if ref is None:
                    continue
                n_ok += int(np.isfinite(hr))
                rows.append(
                    {
                        "corpus": session.corpus,
                        "session": session.name,
                        "group": session.group,
                        "method": method,
                        "t_start_s": float(t_start),
                        "t_end_s": float(t_end),
                        "span_s": float(t_end - t_start),
                        "hr_bpm": float(hr),
                        "ref_bpm": ref,
                    }
                )
            print(
                f"  {session.name} {method}: {len(table)} windows ({int(full_span.sum())} of full span), {n_ok} "
                f"scored with HR, {time.perf_counter() - t0:.1f} s",
                flush=True,
            )
    return pd.DataFrame(rows), seconds


def _stats(frame: pd.DataFrame) -> dict[str, float]:
    from stress_lightning.signals import metrics

    ok = frame[np.isfinite(frame["hr_bpm"])]
    out = {"windows": len(ok), "all": len(frame), "sessions": ok["session"].nunique()}
    if ok.empty:
        return out | {"mae": float("nan"), "rmse": float("nan"), "r": float("nan"), "bias": float("nan")}
    pred, ref = ok["hr_bpm"].to_numpy(), ok["ref_bpm"].to_numpy()
    r = metrics.pearson_r(pred, ref) if len(ok) >= 3 and np.ptp(pred) > 0 and np.ptp(ref) > 0 else float("nan")
    return out | {
        "mae": metrics.mae(pred, ref),
        "rmse": metrics.rmse(pred, ref),
        "r": r,
        "bias": float(np.mean(pred - ref)),
        "within5": float(np.mean(np.abs(pred - ref) <= 5.0)),
        "harmonic": float(np.mean(np.abs(pred / ref - 2.0) <= 0.2)),
    }


def _f(x: float, digits: int = 2) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def tables(frame: pd.DataFrame, methods: list[str], title: str, note: str) -> list[str]:
    lines = [
        f"### {title}",
        "",
        note,
        "",
        "| method | window | windows with HR / with a reference | sessions | MAE bpm | RMSE bpm | Pearson r | bias bpm "
        "| within 5 bpm | at 2x HR |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for method in methods:
        part = frame[frame["method"] == method]
        if part.empty:
            lines.append(f"| {method} | - | 0 / 0 | 0 | - | - | - | - | - | - |")
            continue
        s = _stats(part)
        span = f"{part['span_s'].median():g} s"
        lines.append(
            f"| {method} | {span} | {s['windows']} / {s['all']} | {s['sessions']} | **{_f(s['mae'])}** | "
            f"{_f(s['rmse'])} | {_f(s['r'], 3)} | {_f(s['bias'])} | {_f(s.get('within5', float('nan')) * 100, 0)} % | "
            f"{_f(s.get('harmonic', float('nan')) * 100, 0)} % |"
        )
    lines += ["", "MAE (bpm) by group and method (windows with HR):", ""]
    groups = sorted(frame["group"].unique())
    lines += [
        "| group | reference HR bpm (median) | " + " | ".join(methods) + " |",
        "| --- | --- |" + " --- |" * len(methods),
    ]
    for group in groups:
        part = frame[frame["group"] == group]
        cells = [_f(_stats(part[part["method"] == m])["mae"]) for m in methods]
        lines.append(f"| {group} | {part['ref_bpm'].median():.0f} | " + " | ".join(cells) + " |")
    lines += ["", "MAE (bpm) by session:", ""]
    lines += ["| session | " + " | ".join(methods) + " |", "| --- |" + " --- |" * len(methods)]
    for session in sorted(frame["session"].unique()):
        part = frame[frame["session"] == session]
        cells = [_f(_stats(part[part["method"] == m])["mae"]) for m in methods]
        lines.append(f"| {session} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def machine_line() -> str:
    import mediapipe
    import onnxruntime
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return (
        f"Machine: {cpu}, {os.cpu_count()} CPU cores, no GPU; {platform.system()} {platform.release()}, Python "
        f"{platform.python_version()}; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, mediapipe "
        f"{mediapipe.__version__}."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help=f"model URI or path (default: {CHAMPION}, else a checkpoint)")
    parser.add_argument("--backend", choices=("auto", "onnx", "torch"), default="auto")
    parser.add_argument("--methods", nargs="+", default=["pos", "chrom", "model"])
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op threads of the network (default 1: on a shared machine more threads mostly wait for each other)",
    )
    parser.add_argument("--synthetic-root", type=Path, default=SYNTHETIC)
    parser.add_argument("--split", default="test", help="synthetic subjects of this split (subjects.csv)")
    parser.add_argument("--no-synthetic", action="store_true", help="only the UBFC-rPPG sessions")
    parser.add_argument("--ubfc-root", type=Path, default=None, help="UBFC-rPPG DATASET_2 folder (subjectN/...)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many sessions per corpus")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    from stress_lightning.inference.engine import HR_METHODS

    unknown = [m for m in args.methods if m not in HR_METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; known: {', '.join(HR_METHODS)}")

    load_before, start = " / ".join(f"{x:.2f}" for x in os.getloadavg()), time.perf_counter()
    model, description = load(args.model, args.backend, args.threads)
    spec = model.spec
    print(f"model {description}, backend {model.backend}", flush=True)
    sections: list[str] = []
    timing: list[str] = []
    corpora = []
    if not args.no_synthetic:
        corpora.append(("synthetic", synthetic_sessions(args.synthetic_root, args.split, args.limit)))
    if args.ubfc_root is not None:
        corpora.append(("ubfc_rppg", ubfc_sessions(args.ubfc_root, args.limit)))
    if not corpora:
        parser.error("nothing to evaluate: --no-synthetic without --ubfc-root")
    for corpus, sessions in corpora:
        print(f"{corpus}: {len(sessions)} sessions", flush=True)
        frame, seconds = evaluate(model, sessions, args.methods)
        if frame.empty:
            sections += [f"### {corpus}", "", "No window had a reference heart rate.", ""]
            continue
        refs = frame.drop_duplicates(["session", "t_end_s"])["ref_bpm"]
        if corpus == "synthetic":
            title = f"Synthetic sessions ({args.split} split: {len(sessions)} sessions) against the ECG"
            root = args.synthetic_root
            shown = root.resolve().relative_to(ROOT) if root.resolve().is_relative_to(ROOT) else root
            note = (
                f"Subjects {', '.join(sorted({s.name.split('_')[0] for s in sessions}))} of {shown}"
                " (rendered faces whose skin colour carries the pulse of each session's ECG; 128x128 FFV1, 25 fps; "
                f"groups: the stress session). Reference: 60 / mean RR of the ECG R-peaks in the window (>= "
                f"{MIN_BEATS} beats); reference HR {refs.min():.0f}-{refs.max():.0f} bpm."
            )
        else:
            title = f"UBFC-rPPG ({len(sessions)} sessions) against the pulse oximeter"
            note = (
                f"`{args.ubfc_root}` read by the `ubfc_rppg` corpus (all sessions; groups: the subject). Reference: "
                f"the mean of the oximeter's HR readings in the window; reference HR {refs.min():.0f}-"
                f"{refs.max():.0f} bpm."
            )
        sections += tables(frame, args.methods, title, note)
        maes = {m: _stats(frame[frame["method"] == m])["mae"] for m in args.methods}
        ranked = sorted((mae, m) for m, mae in maes.items() if np.isfinite(mae))
        if ranked:
            sections += [
                f"Lowest MAE on {corpus}: **{ranked[0][1]}** ({ranked[0][0]:.2f} bpm); then "
                + ", ".join(f"{m} {mae:.2f}" for mae, m in ranked[1:])
                + ".",
                "",
            ]
        timing.append(
            f"{corpus}: " + ", ".join(f"{m} {seconds[m]:.0f} s" for m in args.methods) + " of `predict` wall time"
        )
    load_after = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        "## Heart rate of the stream against ground truth (`benchmarks/bench_stream_hr.py`)",
        "",
        f"Command: `{' '.join([COMMAND, *sys.argv[1:]])}` (from the repository root, "
        f"MLFLOW_TRACKING_URI={os.environ.get('MLFLOW_TRACKING_URI', 'unset (embedded store)')}). Date: "
        f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}. {machine_line()} Load average (1/5/15 min) before: "
        f"{load_before}; after: {load_after} (shared machine; timing does not affect the figures). Run time "
        f"{(time.perf_counter() - start) / 60:.1f} min ({'; '.join(timing)}).",
        "",
        f"Model for `model`: {description}, run by {model.backend} (face {spec.face_frames} x {spec.face_size} px, "
        f"ROI {spec.roi_frames} x {spec.roi_size} px at {spec.fps:g} fps, detector {spec.detector}). The classic "
        "methods use the same stream and face pipeline; only the heart-rate source differs.",
        "",
        "Each session goes through `load_model(model).predict(video, hr_method=m)`: a window estimate every second "
        f"of video, covering the last {CLASSIC_WINDOW_S:g} s (pos, chrom) or the model's pulse window "
        f"({spec.window_s:g} s, model). Windows overlap, so they are not independent (see the session count). "
        "`within 5 bpm`: share of windows with |error| <= 5 bpm; `at 2x HR`: share within 10 % of twice the reference "
        "(the pulse's first harmonic won the spectrum). Bias: mean of estimate - reference.",
        "",
        *sections,
    ]
    args.out.write_text("\n".join(lines).rstrip() + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
