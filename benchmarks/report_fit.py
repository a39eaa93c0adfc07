"""Write the results of the latest `make fit` run (read back from the MLflow store) as a markdown table.

    .venv/bin/python benchmarks/report_fit.py [--tracking-uri sqlite:///mlruns/mlflow.db] \
        [--experiment stress-lightning] [--out benchmarks/results/fit_synthetic.md]

The figures come from the run itself (test split = held-out synthetic subjects), so every number in the README
is traceable to a run id, its git commit and its data fingerprint.
"""

from __future__ import annotations

import argparse
import datetime as dt
import operator
import os
import platform
from pathlib import Path

import mlflow

from stress_lightning.tracking.store import resolve_tracking_uri

TARGETS = {  # issue 2's acceptance figures
    "test/expression_acc": (">=", operator.ge, 0.90),
    "test/hr_mae_bpm": ("<=", operator.le, 3.0),
    "test/stress_f1": (">=", operator.ge, 0.80),
}
SHOWN = [
    "test/expression_acc",
    "test/expression_f1",
    "test/hr_mae_bpm",
    "test/hr_rmse_bpm",
    "test/hr_pearson",
    "test/stress_f1",
    "test/stress_precision",
    "test/stress_recall",
    "test/stress_specificity",
    "export/onnx_max_abs_diff",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--experiment", default="stress-lightning")
    parser.add_argument("--out", default="benchmarks/results/fit_synthetic.md")
    parser.add_argument("--command", default="make fit", help="the command that produced the run, for the table")
    args = parser.parse_args()

    client = mlflow.MlflowClient(tracking_uri=resolve_tracking_uri(args.tracking_uri))
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        raise SystemExit(f"no experiment {args.experiment!r} in {client.tracking_uri}: run `make fit` first")
    runs = client.search_runs(
        [experiment.experiment_id], filter_string="metrics.`test/stress_f1` >= 0", order_by=["start_time DESC"]
    )
    if not runs:
        raise SystemExit(f"experiment {args.experiment!r} has no tested run yet")
    run = runs[0]
    metrics, tags = run.data.metrics, run.data.tags
    minutes = ((run.info.end_time or run.info.start_time) - run.info.start_time) / 60000

    lines = [
        "## Main job on the synthetic default corpus",
        "",
        f"Command: `{args.command}` (`stress-lightning fit --config conf/synthetic.yaml`), then "
        f"`.venv/bin/python benchmarks/report_fit.py`. Machine: {platform.machine()}, "
        f"{os.cpu_count()} CPU cores, Python {platform.python_version()}, no GPU. "
        f"Run `{run.info.run_id}` at git `{tags.get('git.commit', '?')[:10]}`, data fingerprint "
        f"`{tags.get('data.fingerprint', '?')[:12]}`, {dt.datetime.fromtimestamp(run.info.start_time / 1000):%Y-%m-%d}."
        f" Run time from the logger's start to the end of export/registration: {minutes:.1f} min (corpus "
        "generation and caching come before it).",
        "",
        "Test split: the held-out synthetic test subjects (subject-disjoint from train and val).",
        "",
        "| metric | value | target |",
        "| --- | --- | --- |",
    ]
    for name in SHOWN:
        if name not in metrics:
            continue
        target = ""
        if name in TARGETS:
            symbol, compare, bound = TARGETS[name]
            target = f"{symbol} {bound:g} ({'met' if compare(metrics[name], bound) else 'NOT met'})"
        lines.append(f"| `{name}` | {metrics[name]:.3f} | {target} |")
    lines += [
        "",
        f"Export: ONNX `{tags.get('export.onnx.status')}`; TensorRT `{tags.get('export.tensorrt.status')}`"
        f" ({tags.get('export.tensorrt.reason', '')}).",
        f"Registry: `{tags.get('registry.model', '')}` version {tags.get('registry.version', '?')}.",
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
