"""Backbones, registered by name on import: spatial (image), temporal (clip), rPPG (ROI video) and body (keypoints).

A new backbone is one new module here that decorates its class with the matching registry from
`stress_lightning.models.registry`; every module of this package is imported below, so nothing else changes.
"""

import importlib
import pkgutil

__all__: list[str] = []
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
    __all__.append(_module)
