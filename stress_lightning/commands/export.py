"""`stress-lightning export`: a trained model to ONNX (full and expression graphs, FP16 variant) and a TensorRT
FP16 engine, each checked against its reference, with a short report and `export_report.json`."""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stress_lightning.commands import CommandError, print_json, table

DESCRIPTION = """\
Export a trained model for inference and check every file it writes.

MODEL is a registry URI (models:/NAME@alias, models:/NAME/N, runs:/RUN/model; MLflow store of
$MLFLOW_TRACKING_URI, default sqlite:///mlruns/mlflow.db), a local MLflow model folder, a Lightning checkpoint,
or an exported .onnx file (only with --fp16 or --format tensorrt: there are no PyTorch weights to export).

Written to --out:
  model.onnx          every head (inputs frames [B,Tf,3,S,S] and roi [B,Tr,3,R,R], dynamic batch)
  expression.onnx     the expression path alone (input frames), which the stream runs on every frame
  model_fp16.onnx     with --fp16: FP16 weights and arithmetic, float32 inputs and outputs
  model_fp16.engine   with --format tensorrt: a TensorRT FP16 engine for batch 1..--max-batch
  checksums.json      the SHA-256 and size of each file above: loading an ONNX file beside it checks it
  export_report.json  the parity checks, TensorRT outcome and timing, file sizes and SHA-256
Each ONNX file carries the model spec (clip geometry, face pipeline, class names) in its metadata, so it alone
runs the stream (`stress-lightning stream --model model.onnx`).

Checks: each FP32 graph against PyTorch with onnxruntime at batch 1 and 2 (--atol + --rtol x max|output|); the
FP16 file against PyTorch (or against model.onnx for an ONNX input) within --fp16-atol/--fp16-rtol; the engine
against model.onnx with the same FP16 bound, then timed at batch 1. The inputs are random face frames and a skin
ROI carrying a 72 bpm pulse at the model's geometry.

Exit status: 0 done; 1 the model cannot be read, a check failed, or TensorRT cannot run here (the ONNX files are
written first and the message names what is missing); 2 usage error."""

FORMATS = ("onnx", "tensorrt")
PARITY_BATCH_SIZES = (1, 2)
REPORT_FILE = "export_report.json"


def build_parser() -> argparse.ArgumentParser:
    from stress_lightning.export.onnx import DEFAULT_OPSET, FP16_ATOL, FP16_RTOL

    parser = argparse.ArgumentParser(
        prog="stress-lightning export", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        required=True,
        metavar="MODEL",
        help="models:/NAME@alias, runs:/..., an MLflow folder, .ckpt or .onnx",
    )
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="onnx (default) or tensorrt (adds an engine)")
    parser.add_argument("--fp16", action="store_true", help="also write and check model_fp16.onnx")
    parser.add_argument("--out", default="export", metavar="DIR", help="output folder (default: export)")
    parser.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, metavar="N", help=f"ONNX opset (default {DEFAULT_OPSET})"
    )
    parser.add_argument(
        "--dynamic-spatial", action="store_true", help="let the ONNX graphs take other face sizes than the model's"
    )
    parser.add_argument("--atol", type=float, default=1e-3, help="FP32 parity: absolute bound (default 1e-3)")
    parser.add_argument("--rtol", type=float, default=1e-3, help="FP32 parity: bound relative to max|output| (1e-3)")
    parser.add_argument("--fp16-atol", type=float, default=FP16_ATOL, help=f"FP16 parity (default {FP16_ATOL:g})")
    parser.add_argument("--fp16-rtol", type=float, default=FP16_RTOL, help=f"FP16 parity (default {FP16_RTOL:g})")
    parser.add_argument("--max-batch", type=int, default=8, metavar="N", help="TensorRT profile: batch 1..N (8)")
    parser.add_argument(
        "--timing-cache",
        metavar="PATH",
        help="TensorRT timing cache, reused when it exists (default: DIR/tensorrt_timing.cache)",
    )
    parser.add_argument(
        "--builder", choices=("auto", "python", "trtexec"), default="auto", help="TensorRT builder (default: auto)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    return parser


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if args.opset < 11:
        parser.error(f"--opset must be at least 11, got {args.opset}")
    for name in ("atol", "fp16_atol"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in ("rtol", "fp16_rtol"):
        if not getattr(args, name) >= 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if args.max_batch < 1:
        parser.error(f"--max-batch must be at least 1, got {args.max_batch}")
    from stress_lightning.inference.loading import MLFLOW_SCHEMES

    onnx_input = not args.model.startswith(MLFLOW_SCHEMES) and Path(args.model).suffix.lower() == ".onnx"
    if onnx_input and args.format == "onnx" and not args.fp16:
        parser.error(
            f"--model {args.model} is already an ONNX file: add --fp16 and/or --format tensorrt, or give a checkpoint "
            "or MLflow model to export"
        )
    quiet = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    out = Path(args.out)
    with quiet:
        loaded = load(args.model, onnx_input)
        report, failure = export(loaded, args, out)
    write_report(out / REPORT_FILE, report)
    if args.json:
        print_json(report)
    else:
        print_report(report, out)
    if failure is not None:
        raise CommandError(failure)
    return 0


# -- model ------------------------------------------------------------------------------------------------------
def load(source: str, onnx_input: bool):
    """The model as `inference.loading.LoadedModel`: PyTorch weights unless `source` is an ONNX file."""
    from stress_lightning.inference.loading import ModelLoadError, resolve_model

    try:
        loaded = resolve_model(source, prefer="onnx" if onnx_input else "torch")
    except ModelLoadError as err:
        raise CommandError(str(err)) from err
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CommandError(f"{source}: cannot load the model: {type(err).__name__}: {err}") from err
    if not onnx_input and loaded.net is None:
        raise CommandError(f"{source}: no PyTorch weights were found to export")
    return loaded


# -- export and checks ------------------------------------------------------------------------------------------
def _sizes(out: Path, names: Sequence[str]) -> dict[str, int]:
    return {name: (out / name).stat().st_size for name in names if (out / name).is_file()}


def _checksums(out: Path, names: Sequence[str]) -> dict[str, str]:
    """Write `checksums.json` over the files written and return {name: sha256} for the report."""
    from stress_lightning.inference.integrity import CHECKSUMS_FILE, sha256_file, write_manifest

    present = {name: out / name for name in names if (out / name).is_file()}
    if present:
        write_manifest(out / CHECKSUMS_FILE, files=present)
    return {name: sha256_file(path) for name, path in present.items()}


def export(loaded: Any, args: argparse.Namespace, out: Path) -> tuple[dict[str, Any], str | None]:
    """Write and check the files; returns (report, None) or (report so far, why the command fails)."""
    from stress_lightning.export.onnx import (
        FP16_GATED_OUTPUTS,
        OnnxParityError,
        check_expression_parity,
        check_onnx_parity,
        check_parity,
        convert_fp16,
        example_clips,
        export_expression_onnx,
        export_onnx,
    )

    spec = loaded.spec
    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    report: dict[str, Any] = {
        "model": loaded.source,
        "format": args.format,
        "spec": spec.to_dict(),
        "opset": args.opset if loaded.net is not None else None,
        "parity": {},
        "files": {},
        "status": "ok",
    }

    def clips(batch_size: int):
        return example_clips(
            batch_size, spec.face_frames, spec.face_size, spec.roi_frames, spec.roi_size, spec.fps, seed=batch_size
        )

    def fail(message: str) -> tuple[dict[str, Any], str]:
        report["status"] = "failed"
        report["error"] = message
        report["files"] = _sizes(out, written)
        report["sha256"] = _checksums(out, written)
        return report, message

    def record(name: str, atol: float, rtol: float, against: str, diffs: list[dict[str, float]]) -> None:
        worst = {k: max(d[k] for d in diffs) for k in diffs[0]}
        report["parity"][name] = {
            "against": against,
            "atol": atol,
            "rtol": rtol,
            "batch_sizes": list(PARITY_BATCH_SIZES),
            "max_abs_diff": worst,
        }

    model_path = out / "model.onnx"
    expression_path = out / "expression.onnx"
    try:
        if loaded.net is not None:
            net, spec_json = loaded.net, spec.to_json()
            frames, roi = clips(1)
            export_onnx(net, (frames, roi), model_path, args.opset, args.dynamic_spatial, spec_json)
            written.append(model_path.name)
            export_expression_onnx(net, frames, expression_path, args.opset, args.dynamic_spatial, spec_json)
            written.append(expression_path.name)
            full = [check_parity(net, model_path, clips(b), args.atol, args.rtol) for b in PARITY_BATCH_SIZES]
            record(model_path.name, args.atol, args.rtol, "pytorch", full)
            expression = [
                check_expression_parity(net, expression_path, clips(b)[0], args.atol, args.rtol)
                for b in PARITY_BATCH_SIZES
            ]
            record(expression_path.name, args.atol, args.rtol, "pytorch", expression)
        else:
            # An ONNX input is already checked against PyTorch (by the export that wrote it); it is copied beside
            # what is derived from it so the folder is complete.
            for source, target in ((loaded.onnx_path, model_path), (loaded.expression_onnx_path, expression_path)):
                if source is not None:
                    if Path(source).resolve() != target.resolve():
                        shutil.copyfile(source, target)
                    written.append(target.name)

        if args.fp16:
            fp16_path = convert_fp16(model_path, out / "model_fp16.onnx")
            written.append(fp16_path.name)
            if loaded.net is not None:
                diffs = [
                    check_parity(loaded.net, fp16_path, clips(b), args.fp16_atol, args.fp16_rtol, FP16_GATED_OUTPUTS)
                    for b in PARITY_BATCH_SIZES
                ]
                record(fp16_path.name, args.fp16_atol, args.fp16_rtol, "pytorch", diffs)
            else:
                diffs = [
                    check_onnx_parity(
                        model_path,
                        fp16_path,
                        dict(zip(("frames", "roi"), (t.numpy() for t in clips(b)), strict=True)),
                        args.fp16_atol,
                        args.fp16_rtol,
                    )
                    for b in PARITY_BATCH_SIZES
                ]
                record(fp16_path.name, args.fp16_atol, args.fp16_rtol, model_path.name, diffs)
    except OnnxParityError as err:
        return fail(f"parity check failed: {err}")
    except (OSError, RuntimeError, ValueError, TypeError) as err:
        return fail(f"{loaded.source}: export failed: {type(err).__name__}: {err}")

    if args.format == "tensorrt":
        message = tensorrt(report, args, out, model_path, clips(1), written)
        if message is not None:
            return fail(message)
    report["files"] = _sizes(out, written)
    report["sha256"] = _checksums(out, written)
    return report, None


def tensorrt(
    report: dict[str, Any], args: argparse.Namespace, out: Path, model_path: Path, example, written: list[str]
) -> str | None:
    """Build, check and time the FP16 engine; fills report["tensorrt"]; returns why it failed, or None."""
    from stress_lightning.export.onnx import OnnxParityError
    from stress_lightning.export.tensorrt import (
        build_engine,
        check_engine_parity,
        stream_profiles,
        tensorrt_available,
        time_engine,
        trtexec_path,
    )

    spec = report["spec"]
    profiles = stream_profiles(
        spec["face_frames"], spec["face_size"], spec["roi_frames"], spec["roi_size"], args.max_batch
    )
    available, reason = tensorrt_available()
    exe = trtexec_path()
    engine_path = out / "model_fp16.engine"
    timing_cache = Path(args.timing_cache) if args.timing_cache else out / "tensorrt_timing.cache"
    entry: dict[str, Any] = {"status": "skipped", "reason": reason, "profiles": profiles}
    report["tensorrt"] = entry
    if not available and (exe is None or args.builder == "python"):
        missing = reason if args.builder == "python" else f"{reason}; and `trtexec` is not on PATH"
        entry["reason"] = missing
        return f"TensorRT cannot run here: {missing}. Written: {', '.join(written)}"
    try:
        _, builder = build_engine(model_path, engine_path, profiles, True, timing_cache, args.builder)
    except (RuntimeError, OSError, ValueError) as err:
        entry.update(status="failed", reason=f"{type(err).__name__}: {err}")
        return f"TensorRT build failed: {err}"
    written.append(engine_path.name)
    entry["builder"] = builder
    entry["timing_cache"] = str(timing_cache)
    if not available:
        entry.update(status="unchecked", reason=f"engine built with {builder}, but {reason}")
        return (
            f"{engine_path} was built with trtexec but cannot be checked or timed here: {reason}. "
            f"Written: {', '.join(written)}"
        )
    frames, roi = example
    inputs = {"frames": frames.numpy(), "roi": roi.numpy()}
    try:
        diffs = check_engine_parity(engine_path, model_path, inputs, args.fp16_atol, args.fp16_rtol)
        timing = time_engine(engine_path, inputs)
    except OnnxParityError as err:
        entry.update(status="failed", reason=str(err))
        return f"TensorRT parity check failed: {err}"
    except (RuntimeError, OSError, ValueError) as err:
        entry.update(status="failed", reason=f"{type(err).__name__}: {err}")
        return f"{engine_path}: TensorRT could not run the engine: {err}"
    report["parity"][engine_path.name] = {
        "against": model_path.name,
        "atol": args.fp16_atol,
        "rtol": args.fp16_rtol,
        "batch_sizes": [1],
        "max_abs_diff": diffs,
    }
    entry.update(status="ok", reason=builder, timing=timing)
    return None


# -- report -----------------------------------------------------------------------------------------------------
def write_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


def _mib(size: int) -> str:
    return f"{size / 2**20:.2f} MiB"


def print_report(report: dict[str, Any], out: Path) -> None:
    parity = report["parity"]
    print(f"export of {report['model']} to {out}/ ({report['status']})")
    if parity:
        files = list(parity)
        outputs = list(dict.fromkeys(name for entry in parity.values() for name in entry["max_abs_diff"]))
        rows = [
            [
                name,
                *(
                    f"{parity[f]['max_abs_diff'][name]:.3g}" if name in parity[f]["max_abs_diff"] else "-"
                    for f in files
                ),
            ]
            for name in outputs
        ]
        against = ", ".join(
            f"{f} against {'PyTorch' if e['against'] == 'pytorch' else e['against']}" for f, e in parity.items()
        )
        print(f"max abs difference per output ({against}):")
        print(table(["output", *files], rows))
    if report["files"]:
        sha = report.get("sha256", {})
        print(
            table(
                ["file", "size", "sha256"],
                [[name, _mib(size), sha.get(name, "-")[:16]] for name, size in report["files"].items()],
            )
        )
        print(f"checksums: {out / 'checksums.json'}")
    trt = report.get("tensorrt")
    if trt is not None:
        line = f"TensorRT: {trt['status']} ({trt['reason']})"
        if "timing" in trt:
            t = trt["timing"]
            line += f"; batch 1 p50 {t['p50_ms']:.3g} ms, p99 {t['p99_ms']:.3g} ms, {t['fps']:.0f} fps"
        print(line)
    print(f"report: {out / REPORT_FILE}")
