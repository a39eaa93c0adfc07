"""MLflow tracking: store and logger, run params and plots, pyfunc model, registry and promotion, callbacks."""

from stress_lightning.tracking.callbacks import MLflowRunCallback, RegistryCallback
from stress_lightning.tracking.params import flatten_config, log_config
from stress_lightning.tracking.registry import ModelRegistry, PromotionDecision
from stress_lightning.tracking.store import StressMLFlowLogger, ensure_experiment, resolve_tracking_uri

__all__ = [
    "MLflowRunCallback",
    "ModelRegistry",
    "PromotionDecision",
    "RegistryCallback",
    "StressMLFlowLogger",
    "ensure_experiment",
    "flatten_config",
    "log_config",
    "resolve_tracking_uri",
]
