"""`stress-lightning evaluate`: a trained model (registry URI or checkpoint) on one split of any corpus.

The data follow the model, not the user: clip geometry (fps, ROI length, face frames and sizes) and the class
names come from the model, so a registered model is evaluated exactly as it was trained. The metrics are the
module's fixed names (`test/stress_f1`, ...), prefixed with the evaluated split.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from stress_lightning.commands import (
    CommandError,
    add_corpus_arguments,
    check_corpus_name,
    parse_options,
    print_json,
    table,
)

DESCRIPTION = """\
Evaluate a model on one split of a corpus and print its metrics under the fixed names ({split}/expression_acc,
{split}/hr_mae_bpm, {split}/stress_f1, ..., {split}/loss); metrics of a task the split has no labels for are
left out.

MODEL is a registry URI (models:/NAME@alias or models:/NAME/version, in the MLflow store of
$MLFLOW_TRACKING_URI, default sqlite:///mlruns/mlflow.db) or a Lightning checkpoint file. The clip geometry
(fps, clip length, face frames, face and ROI sizes) and the expression classes and stress levels are the
model's own. The corpus is cached under --cache-dir like for training (only the evaluated split is decoded).
A synthetic corpus root that exists is read with the generator settings it was written with.

Nothing is logged unless --log-mlflow: then a new run in --experiment gets params model, corpus, root, split
(and samples) and the metrics.

Exit status: 0 done, 1 the model or the corpus cannot be read, 2 usage error."""

SPLIT_CHOICES = ("train", "val", "test")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stress-lightning evaluate", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, metavar="MODEL", help="models:/NAME@alias, models:/NAME/N or a .ckpt")
    add_corpus_arguments(parser)
    parser.add_argument("--split", default="test", choices=SPLIT_CHOICES, help="split to evaluate (default: test)")
    parser.add_argument(
        "--cache-dir", default="data_cache", metavar="PATH", help="face/ROI cache (default: data_cache)"
    )
    parser.add_argument("--batch-size", type=int, default=16, metavar="N", help="clips per batch (default: 16)")
    parser.add_argument(
        "--on-error",
        choices=("fail", "skip"),
        default="fail",
        help="fail at the first bad corpus file (default), or leave bad items out and report them",
    )
    parser.add_argument("--accelerator", default="cpu", help="Lightning accelerator (default: cpu)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--log-mlflow", action="store_true", help="log params and metrics to a new MLflow run")
    parser.add_argument("--experiment", metavar="NAME", help="MLflow experiment (default: stress-lightning)")
    return parser


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.experiment is not None and not args.log_mlflow:
        parser.error("--experiment is only used with --log-mlflow")
    check_corpus_name(parser, args.corpus)
    options = parse_options(parser, args.option)
    # With --json stdout carries only the JSON object; everything the libraries print goes to stderr.
    quiet = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    with quiet:
        module = load_model(args.model)
        samples, metrics = evaluate(module, args, options, parser)
    result = {"model": args.model, "corpus": args.corpus, "split": args.split, "samples": samples, "metrics": metrics}
    if args.log_mlflow:
        with quiet:
            result_run = log_to_mlflow(args, samples, metrics)
        if not args.json:
            print(f"logged to MLflow run {result_run}")
    if args.json:
        print_json(result)
    else:
        print(f"model {args.model} on {args.corpus} ({args.root}) {args.split}: {samples} samples")
        print(table(["metric", "value"], [[name, f"{value:.6g}"] for name, value in metrics.items()]))
    return 0


# -- model ------------------------------------------------------------------------------------------------------
def load_model(spec: str):
    """A MultiTaskStressModule on CPU, in eval mode, from a registry URI or a checkpoint path."""
    if spec.startswith("models:/"):
        return load_registered(spec)
    from stress_lightning.models.module import MultiTaskStressModule

    path = Path(spec)
    if not path.is_file():
        raise CommandError(f"{path}: model checkpoint not found (give a .ckpt file or a models:/NAME@alias URI)")
    try:
        # weights_only: tensors and plain data only, so a checkpoint from elsewhere cannot run code when opened.
        module = MultiTaskStressModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CommandError(f"{path}: cannot load as a MultiTaskStressModule checkpoint: {exc}") from exc
    return module.eval()


@dataclass(frozen=True)
class RegisteredGeometry:
    face_frames: int
    face_size: int
    roi_size: int


def _geometry_from_signature(model_meta: Any, where: Path) -> RegisteredGeometry:
    """Face frames, face size and ROI size from the model's tensor input signature."""
    signature = getattr(model_meta, "signature", None)
    shapes = {}
    if signature is not None and signature.inputs is not None:
        shapes = {spec.name: tuple(spec.shape) for spec in signature.inputs.inputs if getattr(spec, "shape", None)}
    frames, roi = shapes.get("frames"), shapes.get("roi")
    if not frames or not roi or len(frames) != 5 or len(roi) != 5:
        raise CommandError(f"{where}: the model has no tensor signature frames [B,Tf,3,H,W] / roi [B,Tr,3,R,R]")
    return RegisteredGeometry(face_frames=int(frames[1]), face_size=int(frames[3]), roi_size=int(roi[3]))


def load_registered(uri: str):
    """Download a registered pyfunc model's artifacts and rebuild the net with the pyfunc loading code (no
    pyfunc predict), wrapped in a MultiTaskStressModule with the model's geometry and class names."""
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    from stress_lightning.inference.integrity import ChecksumMismatch, UnverifiedModelWarning
    from stress_lightning.inference.loading import ModelLoadError, download_verified
    from stress_lightning.models.module import MultiTaskStressModule
    from stress_lightning.tracking.pyfunc import StressMultitaskModel
    from stress_lightning.tracking.store import resolve_tracking_uri, use_tracking_uri

    tracking_uri = resolve_tracking_uri()
    with tempfile.TemporaryDirectory(prefix="stress_evaluate_") as tmp:
        try:
            with use_tracking_uri(tracking_uri):
                # Checked against the registry's checksum record and the model's checksums.json on the way.
                local = download_verified(uri, tracking_uri, dst_path=tmp)
        except MlflowException as exc:
            raise CommandError(f"{uri}: cannot load from the MLflow store {tracking_uri}: {exc.message}") from exc
        except ModelLoadError as exc:
            raise CommandError(str(exc)) from exc
        meta = Model.load(str(local / "MLmodel"))
        pyfunc_conf = meta.flavors.get("python_function", {})
        entries = pyfunc_conf.get("artifacts") or {}
        artifacts = {key: str(local / entry["path"]) for key, entry in entries.items() if "path" in entry}
        loader = StressMultitaskModel()
        try:
            with warnings.catch_warnings():
                # A model without checksums was warned about by download_verified; once is enough.
                warnings.simplefilter("ignore", UnverifiedModelWarning)
                loader.load_context(SimpleNamespace(artifacts=artifacts))
        except ChecksumMismatch as exc:
            raise CommandError(str(exc)) from exc
        except (ModelLoadError, KeyError, ValueError, TypeError, OSError) as exc:
            raise CommandError(f"{uri}: not a stress-lightning model: {exc}") from exc
        if "spec" in artifacts:
            # Models registered with their spec (inference.spec.ModelSpec) carry the geometry there.
            spec = loader.spec
            geometry = RegisteredGeometry(spec.face_frames, spec.face_size, spec.roi_size)
        else:
            geometry = _geometry_from_signature(meta, local)
        config = json.loads(Path(artifacts["net_config"]).read_text())["config"]
    net = loader.net
    module = MultiTaskStressModule(
        # A tiny placeholder net: the loaded one replaces it below (whatever its class).
        net={"spatial_backbone": "conv4", "temporal_backbone": "c3d_small", "rppg_backbone": "rppg_cnn"},
        expression_classes=list(loader.expression_names),
        stress_levels=list(loader.stress_names),
        fps=float(config["fps"]),
        roi_frames=int(config["roi_frames"]),
        face_frames=geometry.face_frames,
        face_size=geometry.face_size,
        roi_size=geometry.roi_size,
        **_loss_settings(uri, tracking_uri),
    )
    module.net = net
    return module.eval()


def _loss_settings(uri: str, tracking_uri: str) -> dict[str, Any]:
    """The loss settings of the run that produced a registered version (its flattened config params), so that
    `{split}/loss` matches the checkpoint's; defaults where the run did not record them."""
    from mlflow import MlflowClient

    body = uri[len("models:/") :]
    try:
        client = MlflowClient(tracking_uri)
        if "@" in body:
            name, alias = body.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, _, number = body.rpartition("/")
            if not name or not number.isdigit():
                return {}
            version = client.get_model_version(name, number)
        if not version.run_id:
            return {}
        params = client.get_run(version.run_id).data.params
    except Exception:  # best effort: the weights are what matters, the loss weights only change {split}/loss
        return {}
    prefix = "model.init_args."
    settings: dict[str, Any] = {}
    for key in ("label_smoothing", "hr_sigma_bpm"):
        if prefix + key in params:
            with contextlib.suppress(ValueError):
                settings[key] = float(params[prefix + key])
    weights = {}
    for task in ("expression", "hr", "hrv", "stress"):
        with contextlib.suppress(KeyError, ValueError):
            weights[task] = float(params[f"{prefix}loss_weights.{task}"])
    if weights:
        settings["loss_weights"] = weights
    return settings


# -- data and evaluation ----------------------------------------------------------------------------------------
def evaluate(module: Any, args: argparse.Namespace, options: dict[str, Any], parser) -> tuple[int, dict[str, float]]:
    """Run the module on the split; returns (samples, {name: value}) with the split as metric prefix."""
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from stress_lightning.data.datamodules import ClipDataModule
    from stress_lightning.data.errors import CorpusError

    hp = module.hparams
    root = Path(args.root)
    try:
        dm = ClipDataModule(
            corpus=args.corpus,
            root=str(root),
            corpus_options=options,
            on_error=args.on_error,
            expression_classes=list(module.expression_names),
            stress_levels=list(module.stress_names),
            cache_dir=args.cache_dir,
            fps=float(hp.fps),
            clip_seconds=int(hp.roi_frames) / float(hp.fps),
            face_frames=int(hp.face_frames),
            face_size=int(hp.face_size),
            roi_size=int(hp.roi_size),
            batch_size=args.batch_size,
            augment=False,
            progress=not args.json,
            splits=[args.split],
        )
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    if dm.roi_frames != int(hp.roi_frames):
        raise CommandError(f"model ROI length {hp.roi_frames} frames at {hp.fps} fps is not a whole clip length")
    try:
        _only_split(dm, args.split)
        dm.setup("test")
    except (CorpusError, ValueError, OSError) as exc:  # CorpusError names the file; ValueError: e.g. a generator
        raise CommandError(f"corpus {args.corpus!r} at {root}: {exc}") from exc
    if dm.problems and not args.json:
        print(f"[evaluate] {len(dm.problems)} problem(s) in the corpus; items left out", file=sys.stderr)
    dataset = dm.datasets.get(args.split)
    if dataset is None or len(dataset) == 0:
        raise CommandError(f"corpus {args.corpus!r} at {root} yields no samples in the {args.split!r} split")
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False, num_workers=0)
    trainer = pl.Trainer(
        accelerator=args.accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=not args.json,
        enable_model_summary=False,
    )
    results = trainer.test(module, dataloaders=loader, verbose=False)
    raw = results[0] if results else {}
    metrics = {
        f"{args.split}/{name[len('test/') :]}": float(value) for name, value in raw.items() if name.startswith("test/")
    }
    return len(dataset), dict(sorted(metrics.items()))


def _only_split(dm: Any, split: str) -> None:
    """Fail early, naming the corpus, when the split to score has no items."""
    if not dm.items():
        raise CommandError(f"corpus {dm.corpus!r} at {dm.root} has no items in the {split!r} split")


# -- MLflow -----------------------------------------------------------------------------------------------------
def log_to_mlflow(args: argparse.Namespace, samples: int, metrics: dict[str, float]) -> str:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    from stress_lightning.tracking.store import DEFAULT_EXPERIMENT, ensure_experiment, resolve_tracking_uri

    uri = resolve_tracking_uri()
    experiment_id = ensure_experiment(args.experiment or DEFAULT_EXPERIMENT, uri)
    client = MlflowClient(uri)
    run = client.create_run(
        experiment_id,
        run_name=f"evaluate-{args.corpus}-{args.split}",
        tags={"stress_lightning.command": "evaluate"},
    )
    run_id = run.info.run_id
    params = {"model": args.model, "corpus": args.corpus, "root": str(args.root), "split": args.split}
    params["samples"] = str(samples)
    params.update({f"option.{k}": v for k, v in (o.split("=", 1) for o in args.option if "=" in o)})
    timestamp = int(run.info.start_time)
    client.log_batch(
        run_id,
        metrics=[Metric(name, value, timestamp, 0) for name, value in metrics.items()],
        params=[Param(k, str(v)[:6000]) for k, v in params.items()],
    )
    client.set_terminated(run_id)
    return run_id
