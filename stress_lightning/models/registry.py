"""The model registries: backbones and heads built by name (the mechanism lives in `stress_lightning.registry`)."""

from __future__ import annotations

from stress_lightning.registry import Registry, UnknownNameError

SPATIAL_BACKBONES = Registry("spatial backbone", "stress_lightning.models.backbones")
TEMPORAL_BACKBONES = Registry("temporal backbone", "stress_lightning.models.backbones")
RPPG_BACKBONES = Registry("rPPG backbone", "stress_lightning.models.backbones")
HEADS = Registry("head", "stress_lightning.models.heads")

__all__ = ["HEADS", "RPPG_BACKBONES", "SPATIAL_BACKBONES", "TEMPORAL_BACKBONES", "Registry", "UnknownNameError"]
