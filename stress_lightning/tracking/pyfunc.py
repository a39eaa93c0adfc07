"""The registered model: an `mlflow.pyfunc.PythonModel` that takes videos (or preprocessed clips) and returns tables.

Artifacts are plain data: `net_config.json` (the net's import path and constructor kwargs), `state_dict.pt`
(loaded with `weights_only=True`), `labels.json` (class names), `spec.json` (clip geometry and face pipeline,
`inference.spec.ModelSpec`) and, when the export callback produced them, `model.onnx` and `expression.onnx` (the
stream then runs on ONNX Runtime). The model is logged "from code": MLflow stores a two-line script that imports
`StressMultitaskModel` from this package, so nothing is pickled and loading needs this package installed.

Checksums (`inference.integrity`): `checksums.json` (artifact `checksums`) holds the SHA-256 of every other artifact
and of that script, written from the local files before upload; the tag `checksums.sha256` on the logged model (and
on each registered version, `tracking.registry`) holds the SHA-256 of `checksums.json` and of the files MLflow
wrote (`MLmodel`, the environment files). `load_context` checks the artifacts before reading them; `load_pyfunc`
checks everything against the registry's record before MLflow runs the script.

Input, either:
- a DataFrame with a `video` column of video file paths: one row per window and video (`inference.api`), with the
  `video` column first; params `hr_method`, `update_every_s`, `hr_window_s` as in `StressModel.predict`;
- a dict `{"frames": [B,Tf,3,H,W], "roi": [B,Tr,3,R,R]}` of float arrays in [0, 1] (preprocessed clips): one row per
  clip with `expression`, `expression_prob_<name>`..., `hr_bpm`, `rmssd_ms`, `lf_hf_ratio`, `stress_level`,
  `stress_prob_<name>`....
The logged signature describes the video table (its output columns and params); it has no input schema because the
model takes both forms, and checks its input itself.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow import MlflowClient
from mlflow.models import Model, ModelSignature, infer_signature
from mlflow.models.model import ModelInfo
from torch import nn

from stress_lightning.inference.integrity import (
    CHECKSUMS_ARTIFACT,
    CHECKSUMS_FILE,
    CHECKSUMS_TAG,
    digest_folder_files,
    write_manifest,
)
from stress_lightning.models.outputs import TABLE_OUTPUTS, outputs_table
from stress_lightning.tracking.store import use_tracking_uri

DEFAULT_NET_CLASS = "stress_lightning.models.net:MultiTaskNet"
NET_CONFIG_ARTIFACT = "net_config"
STATE_DICT_ARTIFACT = "state_dict"
LABELS_ARTIFACT = "labels"
SPEC_ARTIFACT = "spec"
ONNX_ARTIFACT = "onnx"
EXPRESSION_ONNX_ARTIFACT = "expression_onnx"
VIDEO_COLUMN = "video"
MODEL_CODE_FILE = "stress_multitask_model.py"
INPUT_KEYS = ("frames", "roi")
PREDICT_CHUNK = 16
_PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def import_net_class(path: str) -> type[nn.Module]:
    """Import `module:Class` and check it is a torch Module with a `from_config` constructor."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"net class {path!r} must look like 'package.module:ClassName'")
    cls: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        cls = getattr(cls, part)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module) and hasattr(cls, "from_config")):
        raise TypeError(f"net class {path!r} is not a torch.nn.Module with a from_config(dict) constructor")
    return cls


def _names_from(labels: Mapping[str, Sequence[str]]) -> tuple[list[str], list[str]]:
    for key in ("expression", "stress"):
        if key not in labels or not labels[key]:
            raise ValueError(f"labels: missing or empty class-name list {key!r} (got keys {sorted(labels)})")
    return [str(n) for n in labels["expression"]], [str(n) for n in labels["stress"]]


def predict_dataframe(
    net: nn.Module,
    frames: np.ndarray,
    roi: np.ndarray,
    expression_names: Sequence[str],
    stress_names: Sequence[str],
    chunk: int = PREDICT_CHUNK,
) -> pd.DataFrame:
    """Run `net` (eval, CPU or wherever it lives) on numpy clips and tabulate the outputs, one row per clip."""
    device = next(net.parameters()).device
    rows: list[dict[str, np.ndarray]] = []
    with torch.inference_mode():
        for start in range(0, frames.shape[0], chunk):
            out = net(
                torch.from_numpy(np.ascontiguousarray(frames[start : start + chunk])).to(device),
                torch.from_numpy(np.ascontiguousarray(roi[start : start + chunk])).to(device),
            )
            rows.append({k: out[k].detach().float().cpu().numpy() for k in TABLE_OUTPUTS})
    merged = {k: np.concatenate([r[k] for r in rows]) for k in TABLE_OUTPUTS}

    return outputs_table(merged, expression_names, stress_names)


def _clip_arrays(model_input: Any) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(model_input, Mapping):
        raise TypeError(
            f"model input must be a dict {{'frames': [B,Tf,3,H,W], 'roi': [B,Tr,3,R,R]}} of float32 arrays, "
            f"got {type(model_input).__name__}"
        )
    missing = [k for k in INPUT_KEYS if k not in model_input]
    if missing:
        raise KeyError(f"model input is missing {missing} (got keys {sorted(model_input)})")
    frames, roi = (np.asarray(model_input[k], dtype=np.float32) for k in INPUT_KEYS)
    if frames.ndim != 5 or roi.ndim != 5 or frames.shape[2] != 3 or roi.shape[2] != 3:
        raise ValueError(
            f"model input: frames must be [B,Tf,3,H,W] and roi [B,Tr,3,R,R], got {frames.shape} and {roi.shape}"
        )
    if frames.shape[0] != roi.shape[0]:
        raise ValueError(f"model input: frames has batch {frames.shape[0]} but roi has {roi.shape[0]}")
    return frames, roi


class StressMultitaskModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: rebuilds the model on CPU (ONNX Runtime when the model carries ONNX files) and answers
    videos with window tables (`inference.api.StressModel`) and preprocessed clips with clip tables."""

    # MLflow validates `predict` against its type hints, which only describe list-shaped inputs: it warns at
    # import and at logging for a dict of arrays. `model_input` is therefore left unannotated and the hint
    # check skipped; `predict` checks the input itself.
    _skip_type_hint_validation = True

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from stress_lightning.inference.api import StressModel
        from stress_lightning.inference.loading import load_from_artifacts

        # The PyTorch net is always rebuilt: preprocessed clips run on it; videos run on ONNX where it is present.
        loaded = load_from_artifacts({k: Path(v) for k, v in context.artifacts.items()}, "pyfunc model", "torch")
        self.net = loaded.net
        self.spec = loaded.spec
        self.expression_names, self.stress_names = list(loaded.spec.expression_names), list(loaded.spec.stress_names)
        self._videos = StressModel(loaded)

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        if isinstance(model_input, pd.DataFrame) and VIDEO_COLUMN in model_input.columns:
            return predict_videos(self._videos, model_input[VIDEO_COLUMN].tolist(), params)
        frames, roi = _clip_arrays(model_input)
        return predict_dataframe(self.net, frames, roi, self.expression_names, self.stress_names)


VIDEO_PARAMS: dict[str, Any] = {"hr_method": "pos", "update_every_s": 1.0, "hr_window_s": 0.0}


def predict_videos(model: Any, videos: Sequence[Any], params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Window tables of several videos, stacked, with the `video` column first. `hr_window_s` 0 means the default."""
    from stress_lightning.inference.api import window_columns

    unknown = sorted(set(params or {}) - set(VIDEO_PARAMS))
    if unknown:
        raise ValueError(f"unknown params {unknown}; known: {sorted(VIDEO_PARAMS)}")
    from stress_lightning.inference.sources import SourceError

    settings = {**VIDEO_PARAMS, **(params or {})}
    tables = []
    for row, video in enumerate(videos):
        if not isinstance(video, str) or not video:
            raise ValueError(f"column {VIDEO_COLUMN!r} row {row} must hold a video file path, got {video!r}")
        try:
            table = model.predict(
                video,
                hr_method=str(settings["hr_method"]),
                update_every_s=float(settings["update_every_s"]),
                hr_window_s=float(settings["hr_window_s"]) or None,
            )
        except SourceError as err:
            # Served models answer many rows: say which one (the message names the file and the problem).
            raise SourceError(f"column {VIDEO_COLUMN!r} row {row}: {err}") from err
        table.insert(0, VIDEO_COLUMN, video)
        tables.append(table)
    if not tables:
        return pd.DataFrame(columns=[VIDEO_COLUMN, *(name for name, _ in window_columns(model.spec))])
    return pd.concat(tables, ignore_index=True)


def video_signature(spec: Any) -> ModelSignature:
    """Signature of the video table: output columns and params (no input schema: the model also takes clips)."""
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    from stress_lightning.inference.api import window_columns

    outputs = Schema(
        [ColSpec("string", VIDEO_COLUMN), *(ColSpec(kind, name, required=False) for name, kind in window_columns(spec))]
    )
    params = ParamSchema(
        [
            ParamSpec(name, "string" if isinstance(value, str) else "double", value)
            for name, value in VIDEO_PARAMS.items()
        ]
    )
    return ModelSignature(inputs=None, outputs=outputs, params=params)


def pip_requirements() -> list[str]:
    """What a serving environment needs: this package (which pins the rest) plus the exact torch and mlflow."""
    return [
        f"stress-lightning=={metadata.version('stress-lightning')}",
        f"torch=={torch.__version__.split('+')[0]}",
        f"mlflow=={mlflow.__version__}",
    ]


def model_signature(
    net: nn.Module, input_example: Mapping[str, np.ndarray], labels: Mapping[str, Sequence[str]]
) -> ModelSignature:
    """Tensor input schema (batch axis -1) from the example, column output schema from a real prediction."""
    frames, roi = _clip_arrays(input_example)
    expression_names, stress_names = _names_from(labels)
    was_training = net.training
    net.eval()
    try:
        output = predict_dataframe(net, frames, roi, expression_names, stress_names)
    finally:
        net.train(was_training)
    return infer_signature({"frames": frames, "roi": roi}, output)


def spec_for(net: nn.Module, names: Mapping[str, Sequence[str]], example: Mapping[str, np.ndarray]) -> Any:
    """A model spec from the net's config and an example clip's shapes (face pipeline at its defaults), for callers
    that do not pass the training module's own (`inference.spec.spec_from_module`)."""
    from stress_lightning.inference.spec import ModelSpec

    config = dict(getattr(net, "config", {}) or {})
    frames, roi = _clip_arrays(example)
    expression_names, stress_names = _names_from(names)
    return ModelSpec(
        fps=float(config.get("fps", 25.0)),
        roi_frames=int(roi.shape[1]),
        face_frames=int(frames.shape[1]),
        face_size=int(frames.shape[3]),
        roi_size=int(roi.shape[3]),
        expression_names=tuple(expression_names),
        stress_names=tuple(stress_names),
    )


def log_pyfunc_model(
    net: nn.Module,
    names: Mapping[str, Sequence[str]],
    input_example: Mapping[str, np.ndarray],
    name: str = "model",
    run_id: str | None = None,
    net_class: str | None = None,
    tracking_uri: str | None = None,
    spec: Any | None = None,
    onnx_files: Mapping[str, str | Path] | None = None,
) -> ModelInfo:
    """Log `net` as a pyfunc model into `run_id` (default: the active run) and return its ModelInfo.

    `names` = {"expression": [...], "stress": [...]}; `input_example` = {"frames", "roi"} float32 arrays (checked
    against the net, which must run on them). `spec`: the `ModelSpec` raw video is fed by (default: from the net
    config and the example's shapes). `onnx_files`: exported graphs to carry, keys `onnx` (every head) and
    `expression_onnx`. The net must have `config` (constructor kwargs) and `from_config`, as MultiTaskNet does.
    MLflow logs models through its global tracking URI; `tracking_uri` sets it for this call (then restores it).
    """
    config = getattr(net, "config", None)
    if not isinstance(config, Mapping):
        raise TypeError(f"{type(net).__name__}.config must be a dict of constructor kwargs to rebuild the net")
    unknown = sorted(set(onnx_files or {}) - {ONNX_ARTIFACT, EXPRESSION_ONNX_ARTIFACT})
    if unknown:
        raise ValueError(f"onnx_files: unknown keys {unknown}; known: {ONNX_ARTIFACT}, {EXPRESSION_ONNX_ARTIFACT}")
    frames, roi = _clip_arrays(input_example)
    example = {"frames": frames, "roi": roi}
    cpu_net = _cpu_copy(net)
    model_signature(cpu_net, example, names)  # the net must run on the clips it will be given
    spec = spec if spec is not None else spec_for(cpu_net, names, example)
    with tempfile.TemporaryDirectory(prefix="stress_pyfunc_") as tmp:
        tmp_dir = Path(tmp)
        (tmp_dir / "net_config.json").write_text(
            json.dumps({"net_class": net_class or class_path(type(net)), "config": dict(config)}, indent=2)
        )
        (tmp_dir / "labels.json").write_text(
            json.dumps({"expression": list(names["expression"]), "stress": list(names["stress"])}, indent=2)
        )
        (tmp_dir / "spec.json").write_text(spec.to_json())
        torch.save(cpu_net.state_dict(), tmp_dir / "state_dict.pt")
        model_code = tmp_dir / MODEL_CODE_FILE
        model_code.write_text(_MODEL_CODE)
        artifacts = {
            NET_CONFIG_ARTIFACT: str(tmp_dir / "net_config.json"),
            STATE_DICT_ARTIFACT: str(tmp_dir / "state_dict.pt"),
            LABELS_ARTIFACT: str(tmp_dir / "labels.json"),
            SPEC_ARTIFACT: str(tmp_dir / "spec.json"),
        }
        for key, path in (onnx_files or {}).items():
            if not Path(path).is_file():
                raise FileNotFoundError(f"onnx_files[{key!r}]: {path} does not exist")
            artifacts[key] = str(path)
        # MLflow copies the script into the model folder under its own name, and the artifacts as they are.
        manifest = tmp_dir / CHECKSUMS_FILE
        manifest_digest = write_manifest(manifest, artifacts, {MODEL_CODE_FILE: model_code})
        artifacts[CHECKSUMS_ARTIFACT] = str(manifest)
        with use_tracking_uri(tracking_uri):
            # Without an active fluent run MLflow would file the LoggedModel under the default experiment (and
            # its artifacts under ./mlruns/0); creating it in the run's experiment keeps it beside the run.
            client = MlflowClient()
            model_id = None
            if run_id is not None:
                run = client.get_run(run_id)
                model_id = client.create_logged_model(
                    experiment_id=run.info.experiment_id,
                    name=name,
                    source_run_id=run_id,
                    params=dict(run.data.params),
                ).model_id
            with warnings.catch_warnings():
                # MLflow asks for an input example; a video path would not exist where the model is loaded.
                warnings.filterwarnings("ignore", message=r".*input example was not provided.*")
                info = Model.log(
                    name=name,
                    artifact_path=None,
                    flavor=mlflow.pyfunc,
                    run_id=run_id,
                    python_model=str(model_code),
                    artifacts=artifacts,
                    signature=video_signature(spec),
                    pip_requirements=pip_requirements(),
                    model_id=model_id,
                )
            record_checksums(client, info.model_id, manifest_digest)
            return info


def record_checksums(client: MlflowClient, model_id: str, manifest_digest: str) -> dict[str, str]:
    """Tag the logged model with `integrity.CHECKSUMS_TAG`: the SHA-256 of its `checksums.json` (as written
    locally) and of the files MLflow wrote at its top level (`MLmodel`, environment files, the script)."""
    import yaml
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    location = client.get_logged_model(model_id).artifact_location
    repo = get_artifact_repository(location, tracking_uri=client.tracking_uri)
    with tempfile.TemporaryDirectory(prefix="stress_checksums_") as tmp, _no_progress_bars():
        names = [f.path for f in repo.list_artifacts() if not f.is_dir]
        for file in names:
            repo.download_artifacts(file, tmp)
        recorded = digest_folder_files(Path(tmp), names)
        meta = yaml.safe_load((Path(tmp) / "MLmodel").read_text(encoding="utf-8"))
    manifest_path = meta["flavors"]["python_function"]["artifacts"][CHECKSUMS_ARTIFACT]["path"]
    recorded[manifest_path] = manifest_digest
    client.set_logged_model_tags(model_id, {CHECKSUMS_TAG: json.dumps(recorded, sort_keys=True)})
    return recorded


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    # A bar per small file would fill the end of a fit's output.
    before = os.environ.get(_PROGRESS_BAR_ENV)
    os.environ[_PROGRESS_BAR_ENV] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(_PROGRESS_BAR_ENV, None)
        else:
            os.environ[_PROGRESS_BAR_ENV] = before


def load_pyfunc(model_uri: str, tracking_uri: str | None = None) -> mlflow.pyfunc.PyFuncModel:
    """`mlflow.pyfunc.load_model` after checking the model's files against the registry's record and its
    `checksums.json` (`inference.loading.download_verified`): the models-from-code script MLflow runs on load is
    one of them. Raises `integrity.ChecksumMismatch` (a ModelLoadError) naming the file that changed."""
    from stress_lightning.inference.integrity import UnverifiedModelWarning
    from stress_lightning.inference.loading import download_verified

    # Downloaded where MLflow's own load_model would put it (a temporary folder left for the model's lifetime).
    local = download_verified(model_uri, tracking_uri)
    with warnings.catch_warnings():
        # An unverified model was warned about once, above; load_context would say it again.
        warnings.simplefilter("ignore", UnverifiedModelWarning)
        return mlflow.pyfunc.load_model(str(local))


# Models-from-code entry point: MLflow copies this script into the model and runs it on load.
_MODEL_CODE = """import mlflow
from stress_lightning.tracking.pyfunc import StressMultitaskModel

mlflow.models.set_model(StressMultitaskModel())
"""


def _cpu_copy(net: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(net).to("cpu").eval()
