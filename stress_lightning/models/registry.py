"""The model registries: backbones and heads built by name (the mechanism lives in `stress_lightning.registry`)."""

from __future__ import annotations

from stress_lightning.registry import Registry, UnknownNameError

SPATIAL_BACKBONES = Registry("spatial backbone", "stress_lightning.models.backbones")
TEMPORAL_BACKBONES = Registry("temporal backbone", "stress_lightning.models.backbones")
RPPG_BACKBONES = Registry("rPPG backbone", "stress_lightning.models.backbones")
BODY_BACKBONES = Registry("body backbone", "stress_lightning.models.backbones")
HEADS = Registry("head", "stress_lightning.models.heads")
# Stress classifiers fitted outside the network (scikit-learn) on a trained model's outputs: factories that take
# keyword settings and return an unfitted estimator.
STRESS_CLASSIFIERS = Registry("stress classifier", "stress_lightning.models.stress_classic")

__all__ = [
    "BODY_BACKBONES",
    "HEADS",
    "RPPG_BACKBONES",
    "SPATIAL_BACKBONES",
    "STRESS_CLASSIFIERS",
    "TEMPORAL_BACKBONES",
    "Registry",
    "UnknownNameError",
]
