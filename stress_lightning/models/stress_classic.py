"""The paper's alternative stress classifiers: scikit-learn models fitted on a trained network's outputs.

The input is what the neural stress head reads from a clip (`heads.StressHead` without its learned projections):
the expression probabilities and the network's own HR, RMSSD and LF/HF, standardised by the same fixed constants
(`heads.physiology_features`). Each classifier is a factory registered in `STRESS_CLASSIFIERS` that takes keyword
settings and returns an unfitted estimator; `tracking.stress_classic.ClassicStressCallback` fits them after a test
and logs each as its own MLflow model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import torch
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from stress_lightning.data.taxonomy import BASIC_EXPRESSIONS
from stress_lightning.models.heads import physiology_features
from stress_lightning.models.registry import STRESS_CLASSIFIERS

# The network outputs the features are built from (`MultiTaskNet.forward` keys).
FEATURE_OUTPUTS: Final[tuple[str, ...]] = ("expression_probs", "hr_bpm", "rmssd_ms", "lf_hf_ratio")
# The three columns of `heads.physiology_features`, in its order.
PHYSIOLOGY_FEATURE_NAMES: Final[tuple[str, ...]] = ("hr_z", "log_rmssd_z", "log_lf_hf_z")


def feature_names(expression_names: Sequence[str]) -> list[str]:
    """Column names of `stress_features` for a run's expression classes: `expression_prob_<name>` (as in the
    prediction table, `models.outputs`) then `PHYSIOLOGY_FEATURE_NAMES`."""
    return [f"expression_prob_{name}" for name in expression_names] + list(PHYSIOLOGY_FEATURE_NAMES)


# The columns for the default taxonomy (the seven basic expressions).
FEATURE_NAMES: Final[tuple[str, ...]] = tuple(feature_names(BASIC_EXPRESSIONS))


def _as_tensor(value: np.ndarray | torch.Tensor, key: str) -> torch.Tensor:
    tensor = value.detach().cpu() if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
    if not tensor.is_floating_point():
        raise ValueError(f"stress_features: outputs[{key!r}] must be floating point, got {tensor.dtype}")
    return tensor.to(torch.float64)


def stress_features(outputs: Mapping[str, np.ndarray | torch.Tensor]) -> np.ndarray:
    """The classifiers' input, [N, E + 3] float64, columns as in `feature_names`.

    Args:
        outputs: network outputs for N clips: `expression_probs` [N, E] (softmax probabilities), `hr_bpm` [N],
            `rmssd_ms` [N], `lf_hf_ratio` [N] (physical units; [N, 1] is accepted too). Arrays or tensors.

    Returns:
        The expression probabilities, then HR, RMSSD and LF/HF standardised like the neural stress head's input
        (`heads.physiology_features`: HR centred and scaled, log for the skewed HRV values).
    """
    missing = [key for key in FEATURE_OUTPUTS if key not in outputs]
    if missing:
        raise ValueError(f"stress_features: outputs lack {missing} (has {sorted(outputs)})")
    probs = _as_tensor(outputs["expression_probs"], "expression_probs")
    if probs.ndim != 2:
        raise ValueError(f"stress_features: expression_probs must be [N, E], got shape {tuple(probs.shape)}")
    physiology = []
    for key in FEATURE_OUTPUTS[1:]:
        values = _as_tensor(outputs[key], key).reshape(-1)
        if values.shape[0] != probs.shape[0]:
            raise ValueError(
                f"stress_features: {key} has {values.shape[0]} values for {probs.shape[0]} rows of expression_probs"
            )
        physiology.append(values)
    features = torch.cat([probs, physiology_features(*physiology)], dim=1).numpy()
    if not np.isfinite(features).all():
        rows = np.flatnonzero(~np.isfinite(features).all(axis=1))
        raise ValueError(f"stress_features: non-finite features in {len(rows)} row(s), first {rows[:5].tolist()}")
    return features


# -- the classifiers ---------------------------------------------------------------------------------------------
# Balanced class weights: stress levels are rarely balanced in real corpora, and the figure compared is macro-F1.
@STRESS_CLASSIFIERS.register("random_forest")
def random_forest(
    n_estimators: int = 300, class_weight: str | None = "balanced", random_state: int = 0, **settings: Any
) -> RandomForestClassifier:
    """A Random Forest; further `settings` are `RandomForestClassifier` arguments (e.g. max_depth, n_jobs)."""
    return RandomForestClassifier(
        n_estimators=n_estimators, class_weight=class_weight, random_state=random_state, **settings
    )


# Types beyond skops' defaults that the saved forest holds (MLflow saves sklearn models with skops, which refuses
# unlisted types on load): the trees' node storage, written here by our own fit.
random_forest.skops_trusted_types = ("sklearn.tree._tree.Tree",)


@STRESS_CLASSIFIERS.register("svm")
def svm(
    C: float = 1.0,  # noqa: N803 (scikit-learn's name)
    gamma: str | float = "scale",
    kernel: str = "rbf",
    class_weight: str | None = "balanced",
    calibration_folds: int = 5,
    random_state: int = 0,
    **settings: Any,
) -> Pipeline:
    """Standardisation, then an SVC (RBF kernel) with Platt-scaled probabilities; further `settings` are `SVC`
    arguments.

    The scaler matters here, unlike for the forest: the RBF kernel compares raw distances, and the expression
    probabilities (0-1) and the standardised physiology (about +-3) live on different scales. Probabilities are
    Platt's sigmoid fitted on `calibration_folds`-fold cross-validated decision values, then one SVC is fitted on all
    the data (what `SVC(probability=True)` did; scikit-learn 1.9 deprecates that flag for this form). Every stress
    level needs at least `calibration_folds` training clips.
    """
    classifier = SVC(C=C, gamma=gamma, kernel=kernel, class_weight=class_weight, random_state=random_state, **settings)
    calibrated = CalibratedClassifierCV(classifier, method="sigmoid", cv=calibration_folds, ensemble=False)
    return Pipeline([("scale", StandardScaler()), ("svc", calibrated)])


# The calibration's containers (the fitted SVC and the sigmoid's two parameters), beyond skops' defaults.
svm.skops_trusted_types = ("sklearn.calibration._CalibratedClassifier", "sklearn.calibration._SigmoidCalibration")


__all__ = [
    "FEATURE_NAMES",
    "FEATURE_OUTPUTS",
    "PHYSIOLOGY_FEATURE_NAMES",
    "feature_names",
    "random_forest",
    "stress_features",
    "svm",
]
