"""Backbones, registered by name on import: spatial (image), temporal (clip) and rPPG (ROI video) streams.

A new backbone is one new module here that decorates its class with the matching registry from
`stress_lightning.models.registry`, plus an import below.
"""

from stress_lightning.models.backbones import rppg, spatial, temporal

__all__ = ["rppg", "spatial", "temporal"]
