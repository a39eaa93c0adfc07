"""Find a trained model wherever it is: a registry URI, a run, a local MLflow model, a checkpoint or an ONNX file.

Everything is read as data: net constructor kwargs and class names as JSON, weights with `weights_only=True`, the
model spec (`inference.spec`) from wherever it was stored. Nothing from the training run (data module, config,
corpus) is needed. Before anything is read, the files are checked against their recorded checksums
(`inference.integrity`): a registered version's against the digests its registry tag holds, every artifact
against the model's `checksums.json`, an exported ONNX file against the `checksums.json` beside it.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from stress_lightning.inference.spec import ONNX_SPEC_KEY, ModelSpec, spec_from_hparams

Prefer = Literal["auto", "onnx", "torch"]
MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/", "file:/", "s3://", "gs://", "wasbs://", "hdfs://")
# Files a registered model carries (the pyfunc artifacts' names, see tracking/pyfunc.py).
SPEC_FILE = "spec.json"
ONNX_FILE = "model.onnx"
EXPRESSION_ONNX_FILE = "expression.onnx"


class ModelLoadError(RuntimeError):
    """A model source that cannot be read; the message names it and says why."""


@dataclass
class LoadedModel:
    """A model ready for inference: the PyTorch net (eval, CPU) and/or ONNX files, and how to feed it."""

    spec: ModelSpec
    source: str
    net: nn.Module | None = None
    onnx_path: Path | None = None
    expression_onnx_path: Path | None = None

    def __post_init__(self) -> None:
        if self.net is None and self.onnx_path is None:
            raise ModelLoadError(f"{self.source}: neither PyTorch weights nor an ONNX file were found")


def _net_from_config(spec_json: dict, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    from stress_lightning.tracking.pyfunc import import_net_class

    if "net_class" not in spec_json or "config" not in spec_json:
        raise ModelLoadError(f"{source}: net config needs keys 'net_class' and 'config'")
    net = import_net_class(spec_json["net_class"]).from_config(spec_json["config"])
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise ModelLoadError(f"{source}: weights do not fit the network its config describes: {err}") from err
    return net.eval()


def _load_checkpoint(path: Path) -> LoadedModel:
    from stress_lightning.models.net import MultiTaskNet

    if not zipfile.is_zipfile(path):
        raise ModelLoadError(
            f"{path}: not a PyTorch checkpoint (not a zip archive; give a .ckpt, .onnx or MLflow model)"
        )
    try:
        # weights_only: a checkpoint from elsewhere must not run code when it is opened.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ModelLoadError(
            f"{path}: holds objects other than tensors and plain data, so it is not opened (weights_only): {err}"
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise ModelLoadError(f"{path}: not a readable PyTorch checkpoint ({err})") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise ModelLoadError(f"{path}: not a Lightning checkpoint of this package (no state_dict/hyper_parameters)")
    hparams = dict(checkpoint["hyper_parameters"])
    spec = spec_from_hparams(hparams, str(path))
    # The module builds its net from these hyperparameters (models/module.py); the same here without the module.
    config = {
        **dict(hparams.get("net") or {}),
        "fps": spec.fps,
        "roi_frames": spec.roi_frames,
        "num_expressions": len(spec.expression_names),
        "num_stress": len(spec.stress_names),
    }
    state = {k[len("net.") :]: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    if not state:
        raise ModelLoadError(f"{path}: the checkpoint's state_dict has no `net.` weights")
    net = _net_from_config(
        {"net_class": "stress_lightning.models.net:MultiTaskNet", "config": config}, state, str(path)
    )
    if not isinstance(net, MultiTaskNet):
        raise ModelLoadError(f"{path}: expected a MultiTaskNet")
    return LoadedModel(spec=spec, source=str(path), net=net)


def onnx_spec(path: Path) -> ModelSpec:
    """The model spec stored in an exported ONNX file's metadata."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # onnx raises DecodeError/ValueError/OSError variants for a file that is not ONNX
        raise ModelLoadError(f"{path}: not a readable ONNX file ({type(err).__name__}: {err})") from err
    metadata = {p.key: p.value for p in model.metadata_props}
    if ONNX_SPEC_KEY not in metadata:
        raise ModelLoadError(
            f"{path}: the ONNX file has no `{ONNX_SPEC_KEY}` metadata (export it with `stress-lightning export`, "
            "which records the clip geometry and class names the stream needs)"
        )
    try:
        return ModelSpec.from_json(metadata[ONNX_SPEC_KEY], str(path))
    except ValueError as err:
        raise ModelLoadError(str(err)) from err


def _load_onnx(path: Path) -> LoadedModel:
    from stress_lightning.inference.integrity import verify_folder

    expression = path.with_name(EXPRESSION_ONNX_FILE)
    for graph in (path, expression):
        if graph.is_file():
            verify_folder(graph, str(path))
    spec = onnx_spec(path)
    return LoadedModel(
        spec=spec,
        source=str(path),
        onnx_path=path,
        expression_onnx_path=expression if expression.is_file() and expression != path else None,
    )


def _pyfunc_artifacts(model_dir: Path) -> dict[str, Path]:
    import yaml

    mlmodel = model_dir / "MLmodel"
    try:
        meta = yaml.safe_load(mlmodel.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ModelLoadError(f"{mlmodel}: cannot read the MLflow model description ({err})") from err
    if not isinstance(meta, dict):
        raise ModelLoadError(f"{mlmodel}: not an MLflow model description (expected a YAML mapping with `flavors`)")
    flavor = (meta.get("flavors") or {}).get("python_function") or {}
    artifacts = flavor.get("artifacts") or {}
    return {name: model_dir / entry["path"] for name, entry in artifacts.items() if "path" in entry}


def load_from_artifacts(
    artifacts: Mapping[str, Path], source: str, prefer: Prefer = "auto", model_dir: Path | None = None
) -> LoadedModel:
    """A model from the registered model's artifact files by name (`tracking.pyfunc`'s `net_config`,
    `state_dict`, `labels`, and where present `spec`, `onnx`, `expression_onnx`, `checksums`): what `resolve_model`
    reads from an MLflow folder and what the pyfunc flavour hands `load_context`. The artifacts are checked against
    `checksums.json` first (with `model_dir`, also the model's script); a model without it loads with a warning."""
    from stress_lightning.inference.integrity import verify_artifacts
    from stress_lightning.tracking import pyfunc

    needed = (pyfunc.NET_CONFIG_ARTIFACT, pyfunc.STATE_DICT_ARTIFACT, pyfunc.LABELS_ARTIFACT)
    missing = [k for k in needed if k not in artifacts]
    if missing:
        raise ModelLoadError(f"{source}: the MLflow model lacks artifacts {missing}; is it a stress-lightning model?")
    verify_artifacts(artifacts, source, model_dir)
    labels = json.loads(Path(artifacts[pyfunc.LABELS_ARTIFACT]).read_text())
    net_config = json.loads(Path(artifacts[pyfunc.NET_CONFIG_ARTIFACT]).read_text())
    if pyfunc.SPEC_ARTIFACT in artifacts:
        spec = ModelSpec.from_json(Path(artifacts[pyfunc.SPEC_ARTIFACT]).read_text(), source)
    else:
        # Registered before specs were stored: the geometry is in the net config, the face pipeline at defaults.
        config = net_config.get("config", {})
        spec = ModelSpec(
            fps=float(config.get("fps", 25.0)),
            roi_frames=int(config.get("roi_frames", 200)),
            expression_names=tuple(labels["expression"]),
            stress_names=tuple(labels["stress"]),
        )
    onnx_path = artifacts.get(pyfunc.ONNX_ARTIFACT)
    expression_path = artifacts.get(pyfunc.EXPRESSION_ONNX_ARTIFACT)
    net = None
    if prefer != "onnx" or onnx_path is None:
        state = torch.load(artifacts[pyfunc.STATE_DICT_ARTIFACT], map_location="cpu", weights_only=True)
        net = _net_from_config(net_config, state, source)
    return LoadedModel(
        spec=spec,
        source=source,
        net=net,
        onnx_path=Path(onnx_path) if onnx_path else None,
        expression_onnx_path=Path(expression_path) if expression_path else None,
    )


def _load_mlflow_dir(model_dir: Path, source: str, prefer: Prefer) -> LoadedModel:
    return load_from_artifacts(_pyfunc_artifacts(model_dir), source, prefer, model_dir)


def _recorded_checksums(uri: str, resolved: str) -> tuple[str, dict[str, str], str]:
    """(what to download, {file: sha256} the registry recorded, where the record is) for `models:/NAME@alias`,
    `models:/NAME/N` (or `latest`) and `models:/<model id>`; other URIs have no record ({}). An alias is resolved to
    its version first, so that the files checked are those of the version whose record is read."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from stress_lightning.inference.integrity import CHECKSUMS_TAG, parse_recorded

    if not uri.startswith("models:/"):
        return uri, {}, ""
    body = uri[len("models:/") :].strip("/")
    client = MlflowClient(resolved)
    try:
        if "@" in body:
            name, alias = body.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        elif "/" in body:
            name, which = body.rsplit("/", 1)
            if which == "latest":
                versions = client.search_model_versions(f"name = '{name}'")
                if not versions:
                    raise ModelLoadError(f"{uri}: registered model {name!r} has no versions in {resolved}")
                version = max(versions, key=lambda v: int(v.version))
            elif which.isdigit():
                version = client.get_model_version(name, which)
            else:  # a stage name: MLflow resolves it; there is no single version to hold a record
                return uri, {}, ""
        else:
            logged = client.get_logged_model(body)
            text = logged.tags.get(CHECKSUMS_TAG)
            where = f"logged model {body}"
            return uri, parse_recorded(text, where, uri) if text else {}, where
        where = f"version {version.version} of {version.name}"
        text = version.tags.get(CHECKSUMS_TAG)
        # Registered without copying the tag (mlflow.register_model): the logged model holds it. SQLite registries
        # leave `model_id` empty and name the logged model in `source` (models:/m-...).
        source = version.source or ""
        model_id = version.model_id or (source[len("models:/") :] if source.startswith("models:/m-") else None)
        if text is None and model_id:
            text = client.get_logged_model(model_id).tags.get(CHECKSUMS_TAG)
            where = f"logged model {model_id} of {where}"
    except MlflowException as err:
        raise ModelLoadError(f"{uri}: not found in the MLflow store {resolved} ({err.message})") from err
    return f"models:/{version.name}/{version.version}", parse_recorded(text, where, uri) if text else {}, where


def _download(uri: str, tracking_uri: str | None, dst_path: str | None = None) -> Path:
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from stress_lightning.tracking.store import resolve_tracking_uri, use_tracking_uri

    resolved = resolve_tracking_uri(tracking_uri)
    try:
        with use_tracking_uri(resolved):
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=resolved, dst_path=dst_path))
    except MlflowException as err:
        raise ModelLoadError(f"{uri}: not found in the MLflow store {resolved} ({err.message})") from err


def download_verified(uri: str, tracking_uri: str | None = None, dst_path: str | None = None) -> Path:
    """Download an MLflow model URI and check its files against the registry's record (`integrity.CHECKSUMS_TAG`)
    and its `checksums.json`; returns the local model folder. ChecksumMismatch when a file changed."""
    from stress_lightning.inference.integrity import verify_artifacts, verify_recorded
    from stress_lightning.tracking.store import resolve_tracking_uri

    resolved = resolve_tracking_uri(tracking_uri)
    target, recorded, where = _recorded_checksums(uri, resolved)
    model_dir = _download(target, resolved, dst_path)
    verify_recorded(model_dir, recorded, where, uri)
    verify_artifacts(_pyfunc_artifacts(model_dir), uri, model_dir)
    return model_dir


def resolve_model(source: str | Path, prefer: Prefer = "auto", tracking_uri: str | None = None) -> LoadedModel:
    """Load a model from `source`: an MLflow URI (`models:/stress-multitask@champion`, `models:/name/3`,
    `runs:/<run>/model`), a local MLflow model folder, a Lightning `.ckpt` or an exported `.onnx` file.

    `prefer="torch"` always loads the PyTorch weights (export needs them); "onnx" skips them where an ONNX file
    exists; "auto" loads both where both exist. MLflow URIs resolve against `tracking_uri`, else
    $MLFLOW_TRACKING_URI, else the embedded store (`sqlite:///mlruns/mlflow.db`).
    """
    text = str(source)
    if text.startswith(MLFLOW_SCHEMES):
        from stress_lightning.inference.integrity import verify_recorded
        from stress_lightning.tracking.store import resolve_tracking_uri

        resolved = resolve_tracking_uri(tracking_uri)
        target, recorded, where = _recorded_checksums(text, resolved)
        model_dir = _download(target, resolved)
        verify_recorded(model_dir, recorded, where, text)
        return _load_mlflow_dir(model_dir, text, prefer)
    path = Path(text).expanduser()
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file or folder (nor an MLflow URI such as models:/name@alias)")
    if path.is_dir():
        if (path / "MLmodel").is_file():
            return _load_mlflow_dir(path, text, prefer)
        raise ModelLoadError(f"{path}: a folder without an MLmodel file is not an MLflow model")
    if path.suffix == ".onnx":
        if prefer == "torch":
            raise ModelLoadError(f"{path}: an ONNX file has no PyTorch weights; pass a checkpoint or MLflow model")
        return _load_onnx(path)
    return _load_checkpoint(path)
