"""Model registry with gated promotion: every new version is `challenger`; `champion` must be earned.

Everything goes through `mlflow.MlflowClient`, so the embedded SQLite store and a tracking server behave the
same. A decision is recorded on the version as tags `promotion.decision` / `promotion.reason` (plus the
metric values compared), so the registry itself explains why an alias points where it does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import ALREADY_EXISTS, RESOURCE_ALREADY_EXISTS, ErrorCode

from stress_lightning.tracking.store import resolve_tracking_uri, use_tracking_uri

DEFAULT_MODEL_NAME = "stress-multitask"
CHAMPION = "champion"
CHALLENGER = "challenger"
DEFAULT_METRIC = "test/stress_f1"
DEFAULT_GATE_TAGS: Mapping[str, str] = {"export.onnx.status": "ok"}


@dataclass(frozen=True)
class PromotionDecision:
    """Outcome of `promote_if_better`; also written to the version's tags."""

    version: str
    promoted: bool
    reason: str
    metric: str
    candidate_value: float | None
    champion_version: str | None
    champion_value: float | None


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

        The new version gets alias `challenger_alias` (None to skip).
        """
        model_id = model_id or self._logged_model_id(run_id, artifact_path)
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

    def _evidence(self, mv: ModelVersion, metric: str) -> tuple[float | None, dict[str, str]]:
        # Metrics and export tags live on the run that produced the version; version tags may add/override.
        if not mv.run_id:
            return None, dict(mv.tags)
        run = self.client.get_run(mv.run_id)
        value = run.data.metrics.get(metric)
        return value, {**run.data.tags, **mv.tags}

    def promote_if_better(
        self,
        version: str,
        name: str = DEFAULT_MODEL_NAME,
        metric: str = DEFAULT_METRIC,
        alias: str = CHAMPION,
        require_tags: Mapping[str, str] | None = DEFAULT_GATE_TAGS,
        greater_is_better: bool = True,
    ) -> PromotionDecision:
        """Move `alias` to `version` if the gate tags hold and its metric is at least the current holder's.

        No current holder (or one without the metric) means the candidate only has to pass the gate. Ties
        promote (the newer model wins an equal score). The decision is recorded as version tags.
        """
        version = str(version)
        candidate = self.get_version(version, name)
        value, tags = self._evidence(candidate, metric)
        current = self.get_alias_version(alias, name)
        current_value: float | None = None
        if current is not None and current != version:
            current_value, _ = self._evidence(self.get_version(current, name), metric)

        failed_gate = {k: (tags.get(k), v) for k, v in (require_tags or {}).items() if tags.get(k) != v}
        if failed_gate:
            detail = ", ".join(f"{k}={got!r} (need {want!r})" for k, (got, want) in failed_gate.items())
            promoted, reason = False, f"gate failed: {detail}"
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

        if promoted and current != version:
            self.set_alias(version, alias=alias, name=name)
        decision = PromotionDecision(
            version=version,
            promoted=promoted,
            reason=reason,
            metric=metric,
            candidate_value=value,
            champion_version=current,
            champion_value=current_value,
        )
        self._record(decision, name, alias)
        return decision

    def _record(self, decision: PromotionDecision, name: str, alias: str) -> None:
        tags = {
            "promotion.decision": alias if decision.promoted else "rejected",
            "promotion.reason": decision.reason,
            "promotion.metric": decision.metric,
            "promotion.candidate_value": "none" if decision.candidate_value is None else repr(decision.candidate_value),
            "promotion.previous_version": decision.champion_version or "none",
            "promotion.previous_value": "none" if decision.champion_value is None else repr(decision.champion_value),
        }
        for key, value in tags.items():
            self.client.set_model_version_tag(name, decision.version, key, value)
