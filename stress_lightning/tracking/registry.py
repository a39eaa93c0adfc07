"""Model registry with gated promotion: every new version is `challenger`; `champion` must be earned.

Everything goes through `mlflow.MlflowClient`, so the embedded SQLite store and a tracking server behave the
same. Promotion is two steps that RegistryCallback and `stress-lightning promote` share: `decide_promotion` (the
gate, no side effects) and `apply_promotion` (move the alias, record the decision). A decision is recorded on the
version as tags `promotion.decision` / `promotion.reason` (plus the metric values compared), so the registry
itself explains why an alias points where it does. The gate checks that the version's model files are in the
artifact store, so an alias never moves to a version that cannot be loaded. A new version carries its logged
model's checksum record (tag `checksums.sha256`, see `inference.integrity`), which consumers check the downloaded
files against.
"""

from __future__ import annotations

import math
import posixpath
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import ALREADY_EXISTS, RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from stress_lightning.inference.integrity import CHECKSUMS_TAG
from stress_lightning.tracking.store import resolve_tracking_uri, use_tracking_uri

DEFAULT_MODEL_NAME = "stress-multitask"
CHAMPION = "champion"
CHALLENGER = "challenger"
DEFAULT_METRIC = "test/stress_f1"
ONNX_GATE_TAG = "export.onnx.status"
DEFAULT_GATE_TAGS: Mapping[str, str] = {ONNX_GATE_TAG: "ok"}
MLMODEL = "MLmodel"
# The ONNX graphs ExportCallback logs into the run, keyed by the pyfunc artifact that carries each into the model
# (`pyfunc.ONNX_ARTIFACT`, `pyfunc.EXPRESSION_ONNX_ARTIFACT`). Defined here, not in the callbacks module (which
# uses it as `EXPORTED_ONNX`), so that a registry command does not import torch and Lightning.
RUN_ONNX: Mapping[str, str] = {"onnx": "export/model.onnx", "expression_onnx": "export/expression.onnx"}
# The run tag ExportCallback sets to the SHA-256 of each file it logs (the tracking database keeps the record apart
# from the artifact store); RegistryCallback copies `export.*` tags onto the version.
EXPORT_SHA256_TAGS: Mapping[str, str] = {
    "model.onnx": "export.onnx.sha256",
    "expression.onnx": "export.expression_onnx.sha256",
    "model_fp16.onnx": "export.fp16.sha256",
    "model_fp16.engine": "export.tensorrt.sha256",
}


def check_exported(files: Mapping[str, Path], tags: Mapping[str, str], source: str) -> None:
    """Check exported files downloaded from a run ({artifact key: local path}, keys of `RUN_ONNX`) against the run's
    SHA-256 tags before they are carried into a model; files exported before the tags existed are not checked.
    Raises `inference.integrity.ChecksumMismatch` naming the file and both digests."""
    from stress_lightning.inference.integrity import check_file

    for key, path in sorted(files.items()):
        tag = EXPORT_SHA256_TAGS[Path(path).name]
        expected = tags.get(tag)
        if expected:
            check_file(Path(path), expected, RUN_ONNX.get(key, Path(path).name), source, f"run tag {tag}")


@dataclass(frozen=True)
class PromotionDecision:
    """Outcome of `decide_promotion`; `apply_promotion` writes it to the version's tags.

    `champion_version` / `champion_value`: the alias' holder when the decision was made (None: no holder).
    `missing_artifacts`: what of the version's model is not in the artifact store (empty when checked and
    complete, or when the gate tags failed first).
    """

    version: str
    promoted: bool
    reason: str
    metric: str
    candidate_value: float | None
    champion_version: str | None
    champion_value: float | None
    name: str = DEFAULT_MODEL_NAME
    alias: str = CHAMPION
    missing_artifacts: tuple[str, ...] = ()


class ModelRegistry:
    """A small registry interface over MlflowClient: register, aliases, gated promotion.

    Args:
        tracking_uri: store to use (resolved like the logger's: arg, $MLFLOW_TRACKING_URI, embedded SQLite).
        client: an existing client (e.g. `MLFlowLogger.experiment`); wins over `tracking_uri`.
    """

    def __init__(self, tracking_uri: str | None = None, client: MlflowClient | None = None) -> None:
        self.client = client or MlflowClient(resolve_tracking_uri(tracking_uri))

    def _ensure_registered_model(self, name: str) -> None:
        try:
            self.client.create_registered_model(name)
        except MlflowException as err:
            # Existing name (or created concurrently by another process): add a version to it.
            if err.error_code not in (ErrorCode.Name(RESOURCE_ALREADY_EXISTS), ErrorCode.Name(ALREADY_EXISTS)):
                raise

    def _logged_model_id(self, run_id: str, artifact_path: str) -> str:
        run = self.client.get_run(run_id)
        models = [
            m
            for m in self.client.search_logged_models(
                experiment_ids=[run.info.experiment_id], filter_string=f"name = '{artifact_path}'"
            )
            if m.source_run_id == run_id
        ]
        if not models:
            raise LookupError(f"run {run_id} has no logged model named {artifact_path!r} to register")
        # Several models under one name in one run: the latest one is the one to register.
        return max(models, key=lambda m: m.creation_timestamp).model_id

    def register(
        self,
        run_id: str,
        artifact_path: str = "model",
        name: str = DEFAULT_MODEL_NAME,
        model_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        challenger_alias: str | None = CHALLENGER,
    ) -> str:
        """Register the model logged as `artifact_path` in `run_id` (or `model_id`); return the new version.

        The new version gets alias `challenger_alias` (None to skip) and the logged model's checksum record (tag
        `checksums.sha256`), so that the registry, not only the artifact store, says what its files must hash to.
        """
        model_id = model_id or self._logged_model_id(run_id, artifact_path)
        recorded = self.client.get_logged_model(model_id).tags.get(CHECKSUMS_TAG)
        tags = {**(tags or {}), **({CHECKSUMS_TAG: recorded} if recorded else {})}
        self._ensure_registered_model(name)
        # A local registry store resolves `models:/<id>` through MLflow's global URI, so point it at ours.
        with use_tracking_uri(self.client.tracking_uri):
            version = self.client.create_model_version(
                name=name,
                source=f"models:/{model_id}",
                run_id=run_id,
                tags=dict(tags or {}),
                model_id=model_id,
            )
        if challenger_alias:
            self.set_alias(version.version, alias=challenger_alias, name=name)
        return str(version.version)

    def set_alias(self, version: str, alias: str, name: str = DEFAULT_MODEL_NAME) -> None:
        self.client.set_registered_model_alias(name, alias, str(version))

    def get_alias_version(self, alias: str, name: str = DEFAULT_MODEL_NAME) -> str | None:
        """The version an alias points to, or None when the alias (or the registered model) does not exist."""
        matches = self.client.search_registered_models(filter_string=f"name = '{name}'")
        model = next((m for m in matches if m.name == name), None)
        if model is None:
            return None
        version = model.aliases.get(alias)
        return None if version is None else str(version)

    def get_version(self, version: str, name: str = DEFAULT_MODEL_NAME) -> ModelVersion:
        return self.client.get_model_version(name, str(version))

    # -- listing ------------------------------------------------------------------------------------------------
    def registered_model_names(self) -> list[str]:
        """Every registered model's name, sorted."""
        names: list[str] = []
        token = None
        while True:
            page = self.client.search_registered_models(page_token=token)
            names.extend(m.name for m in page)
            token = page.token
            if not token:
                return sorted(names)

    def has_registered_model(self, name: str) -> bool:
        try:
            self.client.get_registered_model(name)
        except MlflowException as err:
            if err.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                return False
            raise
        return True

    def versions(self, name: str = DEFAULT_MODEL_NAME, run_id: str | None = None) -> list[ModelVersion]:
        """The versions of `name` (only those registered from `run_id` when given), newest first."""
        filter_string = f"name = '{name}'" + (f" and run_id = '{run_id}'" if run_id else "")
        found: list[ModelVersion] = []
        token = None
        while True:
            page = self.client.search_model_versions(filter_string, page_token=token)
            found.extend(mv for mv in page if mv.name == name)
            token = page.token
            if not token:
                return sorted(found, key=lambda mv: int(mv.version), reverse=True)

    def aliases(self, name: str = DEFAULT_MODEL_NAME) -> dict[str, list[str]]:
        """{version: [aliases]} of a registered model (search results may not carry aliases, the model does)."""
        by_version: dict[str, list[str]] = {}
        for alias, version in sorted(self.client.get_registered_model(name).aliases.items()):
            by_version.setdefault(str(version), []).append(alias)
        return by_version

    # -- promotion ----------------------------------------------------------------------------------------------
    def _evidence(self, mv: ModelVersion, metric: str) -> tuple[float | None, dict[str, str]]:
        # Metrics and export tags live on the run that produced the version; version tags may add/override.
        if not mv.run_id:
            return None, dict(mv.tags)
        run = self.client.get_run(mv.run_id)
        value = run.data.metrics.get(metric)
        return value, {**run.data.tags, **mv.tags}

    def missing_artifacts(
        self, version: str, name: str = DEFAULT_MODEL_NAME, require_onnx: bool = False
    ) -> tuple[str | None, list[str]]:
        """What of the version's model is not in the artifact store: (the model's download URI, [missing...]).

        Checked: `MLmodel`, then every file its python_function flavor declares (for this package's pyfunc model
        `net_config.json`, `state_dict.pt`, `labels.json`, `spec.json`, and the ONNX graphs it carries). With
        `require_onnx`, each ONNX graph the version's run exported (`export/model.onnx`, `export/expression.onnx`)
        must also be carried by the model. A store that cannot be listed counts as missing (with the error).
        """
        try:
            uri = self.client.get_model_version_download_uri(name, str(version))
        except MlflowException as err:
            return None, [f"the model files (no download location: {err.message})"]
        missing: list[str] = []
        listed: dict[str, set[str]] = {}
        try:
            # A `models:/` or `mlflow-artifacts:/` location resolves through MLflow's global URI: point it at ours.
            with use_tracking_uri(self.client.tracking_uri), tempfile.TemporaryDirectory(prefix="stress_reg_") as tmp:
                repo = get_artifact_repository(uri, tracking_uri=self.client.tracking_uri)

                def present(path: str) -> bool:
                    parent = posixpath.dirname(path)
                    if parent not in listed:
                        listed[parent] = {f.path for f in repo.list_artifacts(parent or None)}
                    return path in listed[parent]

                if not present(MLMODEL):
                    return uri, [MLMODEL]
                with open(repo.download_artifacts(MLMODEL, tmp), encoding="utf-8") as handle:
                    mlmodel = yaml.safe_load(handle)
                if not isinstance(mlmodel, dict):
                    return uri, [f"{MLMODEL} (not a model description)"]
                declared = ((mlmodel.get("flavors") or {}).get("python_function") or {}).get("artifacts") or {}
                for key, entry in sorted(declared.items()):
                    path = str((entry or {}).get("path", ""))
                    if not path or not present(path):
                        missing.append(f"{path or '?'} (artifact {key!r})")
                if require_onnx:
                    missing.extend(self._uncarried_onnx(version, name, declared))
        except (MlflowException, OSError, yaml.YAMLError) as err:
            missing.append(f"the model files cannot be read ({type(err).__name__}: {err})")
        return uri, missing

    def _uncarried_onnx(self, version: str, name: str, declared: Mapping[str, object]) -> list[str]:
        # The export callback logged these graphs into the run; a model registered from it must carry them.
        run_id = self.get_version(version, name).run_id
        if not run_id:
            return []
        exported = {
            f.path
            for folder in {posixpath.dirname(p) for p in RUN_ONNX.values()}
            for f in self.client.list_artifacts(run_id, folder)
        }
        return [
            f"{path} of run {run_id} (exported, but not carried by the model as artifact {key!r})"
            for key, path in RUN_ONNX.items()
            if path in exported and key not in declared
        ]

    def decide_promotion(
        self,
        version: str,
        name: str = DEFAULT_MODEL_NAME,
        metric: str = DEFAULT_METRIC,
        alias: str = CHAMPION,
        require_tags: Mapping[str, str] | None = DEFAULT_GATE_TAGS,
        greater_is_better: bool = True,
    ) -> PromotionDecision:
        """The gate, without side effects: should `alias` move to `version`?

        In order: the gate tags (run tags, overridden by version tags) must hold; the version's model files must
        be in the artifact store (`missing_artifacts`; with the ONNX gate tag required, also the exported ONNX
        graphs); the version's run must have `metric`; and it must be at least the current holder's. No current
        holder (or one without the metric) means the candidate only has to pass the gate. Ties promote (the newer
        model wins an equal score).
        """
        version = str(version)
        candidate = self.get_version(version, name)
        value, tags = self._evidence(candidate, metric)
        current = self.get_alias_version(alias, name)
        current_value: float | None = None
        if current is not None and current != version:
            current_value, _ = self._evidence(self.get_version(current, name), metric)

        missing: list[str] = []
        failed_gate = {k: (tags.get(k), v) for k, v in (require_tags or {}).items() if tags.get(k) != v}
        if failed_gate:
            detail = ", ".join(f"{k}={got!r} (need {want!r})" for k, (got, want) in failed_gate.items())
            promoted, reason = False, f"gate failed: {detail}"
        else:
            uri, missing = self.missing_artifacts(version, name, require_onnx=ONNX_GATE_TAG in (require_tags or {}))
            if missing:
                promoted, reason = False, f"model artifacts missing at {uri}: {'; '.join(missing)}"
            elif value is None or math.isnan(value):
                promoted, reason = False, f"metric {metric!r} missing or NaN on the version's run"
            elif current == version:
                promoted, reason = True, f"already {alias}"
            elif current is None:
                promoted, reason = True, f"no {alias} yet; {metric}={value:.6g}"
            elif current_value is None or math.isnan(current_value):
                promoted, reason = True, f"{alias} v{current} has no {metric}; candidate {metric}={value:.6g}"
            else:
                better = value >= current_value if greater_is_better else value <= current_value
                comparison = (">=" if greater_is_better else "<=") if better else ("<" if greater_is_better else ">")
                promoted = better
                reason = f"{metric} {value:.6g} {comparison} {alias} v{current} {current_value:.6g}"
        return PromotionDecision(
            version=version,
            promoted=promoted,
            reason=reason,
            metric=metric,
            candidate_value=value,
            champion_version=current,
            champion_value=current_value,
            name=name,
            alias=alias,
            missing_artifacts=tuple(missing),
        )

    def apply_promotion(self, decision: PromotionDecision) -> None:
        """Carry out a decision: move the alias when promoted, and record the decision as version tags."""
        if decision.promoted and decision.champion_version != decision.version:
            self.set_alias(decision.version, alias=decision.alias, name=decision.name)
        tags = {
            "promotion.decision": decision.alias if decision.promoted else "rejected",
            "promotion.reason": decision.reason,
            "promotion.metric": decision.metric,
            "promotion.candidate_value": "none" if decision.candidate_value is None else repr(decision.candidate_value),
            "promotion.previous_version": decision.champion_version or "none",
            "promotion.previous_value": "none" if decision.champion_value is None else repr(decision.champion_value),
        }
        for key, value in tags.items():
            self.client.set_model_version_tag(decision.name, decision.version, key, value)

    def promote_if_better(
        self,
        version: str,
        name: str = DEFAULT_MODEL_NAME,
        metric: str = DEFAULT_METRIC,
        alias: str = CHAMPION,
        require_tags: Mapping[str, str] | None = DEFAULT_GATE_TAGS,
        greater_is_better: bool = True,
    ) -> PromotionDecision:
        """`decide_promotion` then `apply_promotion`: move `alias` if earned, record the decision either way."""
        decision = self.decide_promotion(version, name, metric, alias, require_tags, greater_is_better)
        self.apply_promotion(decision)
        return decision
