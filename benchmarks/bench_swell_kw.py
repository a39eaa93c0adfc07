"""SWELL-KW stress, leave-subject-out: the package's own stress head on person-relative physiology.

    .venv/bin/python benchmarks/bench_swell_kw.py [--root ../shared/data/stress/swell_kw] [--epochs 40] \
        [--history-s none|SECONDS] [--out benchmarks/results/swell_kw.md]

For each of the 25 participants: a `ClipDataModule(corpus="swell_kw")` with that participant as the test split
and everyone else as train, a fresh `MultiTaskStressModule` trained by a Lightning `Trainer` exactly as `fit`
trains it (its stress head on the `personal` features of `data.personal`; no video, so the other streams are
masked), and its predictions on the held-out participant. The figure is the macro-F1 over all held-out minutes
(N -> low, I -> normal, T -> high; R minutes carry no level), on the minutes that have HR and RMSSD (where the
issue's reference points were measured: per-minute HR and RMSSD ~0.30 (chance), each person z-scored against
their own minutes ~0.42; the goal is >= 0.60) and on all of them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from sklearn.metrics import confusion_matrix, f1_score

from stress_lightning.data.datamodules import ClipDataModule
from stress_lightning.data.personal import PERSONAL_FEATURES
from stress_lightning.models.module import MultiTaskStressModule

SMALL_NET = {"spatial_backbone": "conv4", "temporal_backbone": "c3d_small", "rppg_backbone": "rppg_cnn"}


def fold(root: Path, subject: str, epochs: int, history_s: float | None, context: str, seed: int):
    pl.seed_everything(seed, verbose=False)
    data = ClipDataModule(
        corpus="swell_kw",
        root=str(root),
        corpus_options={"test_subjects": [subject]},
        personal_history_s=history_s,
        personal_context=context,
        batch_size=64,
        progress=False,
    )
    data.setup("fit")
    model = MultiTaskStressModule(
        net=SMALL_NET,
        expression_classes=data.expression_classes,
        stress_levels=data.stress_levels,
        loss_weights={"expression": 0.0, "hr": 0.0, "hrv": 0.0, "stress": 1.0},
        lr=3e-3,
    )
    trainer = pl.Trainer(
        max_epochs=epochs,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(model, train_dataloaders=data.train_dataloader())
    model.eval()
    preds, trues, measured = [], [], []
    hr_now = PERSONAL_FEATURES.index("hr_now")
    rmssd_now = PERSONAL_FEATURES.index("log_rmssd_now")
    with torch.no_grad():
        for batch in data.test_dataloader():
            out = model.net.stress_from_personal(batch["personal"], batch["personal_mask"])
            preds.append(out["stress_logits"].argmax(1).numpy())
            trues.append(batch["stress"].numpy())
            mask = batch["personal_mask"]
            measured.append((mask[:, hr_now] & mask[:, rmssd_now]).numpy())
    return np.concatenate(trues), np.concatenate(preds), np.concatenate(measured), data.stress_levels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("../shared/data/stress/swell_kw"))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--history-s", default="none", help="'none' (since the recording began) or seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--context", choices=["causal", "recording"], default="causal", help="level of the personal features"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not args.root.is_dir():
        raise SystemExit(f"SWELL-KW not found at {args.root} (see ../shared/data/README.md)")
    history_s = None if args.history_s == "none" else float(args.history_s)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    probe = ClipDataModule(corpus="swell_kw", root=str(args.root), progress=False)
    subjects = sorted({it.subject_id for it in probe.all_items()}, key=lambda s: int("".join(filter(str.isdigit, s))))
    start = time.perf_counter()
    trues, preds, measured, per_subject = [], [], [], {}
    names: list[str] = []
    for subject in subjects:
        t, p, m, names = fold(args.root, subject, args.epochs, history_s, args.context, args.seed)
        trues.append(t)
        preds.append(p)
        measured.append(m)
        per_subject[subject] = f1_score(t, p, average="macro", labels=list(range(len(names))), zero_division=0)
        print(f"{subject}: {len(t)} minutes, macro-F1 {per_subject[subject]:.3f}", flush=True)
    y, yhat, hrv = np.concatenate(trues), np.concatenate(preds), np.concatenate(measured)
    macro = f1_score(y, yhat, average="macro")
    # The reference figures are on the minutes that have HR and RMSSD: the comparable population.
    macro_measured = f1_score(y[hrv], yhat[hrv], average="macro")
    cm = confusion_matrix(y, yhat, labels=list(range(len(names))))
    elapsed = time.perf_counter() - start
    lines = [
        "# SWELL-KW stress, leave-subject-out (the package's stress head on person-relative physiology)",
        "",
        f"- date: {dt.date.today().isoformat()}; machine: {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}; {elapsed / 60:.1f} min",
        f"- command: `.venv/bin/python benchmarks/bench_swell_kw.py --epochs {args.epochs} "
        f"--history-s {args.history_s} --context {args.context} --seed {args.seed}`",
        "- features: HR, log RMSSD, log SCL ranked among each person's own minutes (`stress_lightning.data."
        "personal`), as the current minute and as a level: "
        + (
            "the mean of the whole recording (offline scoring; no labels used)"
            if args.context == "recording"
            else ("the mean since the recording began" if history_s is None else f"the last {history_s:.0f} s")
            + " (causal, as a live stream)"
        ),
        f"- held-out minutes: {len(y)} (N/I/T with at least one value), {int(hrv.sum())} of them with HR and RMSSD "
        "measured (the population of the reference figures: chance ~0.30, per-person z-score per minute ~0.42)",
        "",
        f"**Macro-F1 on the minutes with HR and RMSSD: {macro_measured:.3f}** (goal >= 0.60); on all held-out minutes "
        f"(many with skin conductance only): {macro:.3f}; mean of per-participant macro-F1 "
        f"{np.mean(list(per_subject.values())):.3f}",
        "",
        "Confusion (rows true, columns predicted): " + ", ".join(names),
        "",
        "| true \\ pred | " + " | ".join(names) + " |",
        "| --- | " + " | ".join("---" for _ in names) + " |",
        *[f"| {names[i]} | " + " | ".join(str(v) for v in cm[i]) + " |" for i in range(len(names))],
        "",
        "| participant | macro-F1 |",
        "| --- | --- |",
        *[f"| {s} | {v:.3f} |" for s, v in per_subject.items()],
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
