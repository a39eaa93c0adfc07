"""The rPPG region-of-interest contract: forehead and cheeks as fractions of the face box (x0, x1, y0, y1).

One home for these numbers: `faces.roi_grid` reads them and the synthetic renderer keeps them on skin at every
expression (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from typing import Final

FOREHEAD: Final[tuple[float, float, float, float]] = (0.30, 0.70, 0.10, 0.28)
LEFT_CHEEK: Final[tuple[float, float, float, float]] = (0.15, 0.38, 0.52, 0.72)
RIGHT_CHEEK: Final[tuple[float, float, float, float]] = (0.62, 0.85, 0.52, 0.72)
