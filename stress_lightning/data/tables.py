"""Reading tabular corpus files with errors that name the file (a leaf: anything in `data` may import it)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from stress_lightning.data.errors import CorpusError


def read_csv_checked(path: Path, required: Sequence[str], **kwargs) -> pd.DataFrame:
    """Read a CSV and fail with the file and the missing columns named."""
    if not path.is_file():
        raise CorpusError(path, "file is missing")
    try:
        table = pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CorpusError(path, f"cannot be parsed as CSV ({exc})") from exc
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise CorpusError(path, f"missing column(s) {missing}; found {list(table.columns)}")
    return table


def numeric_column(path: Path, table: pd.DataFrame, column: str, missing_ok: bool = False) -> np.ndarray:
    """A column as float64; a non-numeric, empty or non-finite cell is a problem naming the file and row.
    `missing_ok`: empty and NaN cells (a recording's dropouts) are kept as NaN; text that is no number still is a
    problem."""
    values = pd.to_numeric(table[column], errors="coerce").to_numpy(np.float64)
    if missing_ok:
        # pandas reads empty cells and NaN spellings as NA: a cell that is not NA but no number is text.
        bad = np.flatnonzero(np.isnan(values) & table[column].notna().to_numpy())
    else:
        bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise CorpusError(
            path,
            f"column {column!r} has {len(bad)} non-numeric or non-finite value(s), the first in data row "
            f"{bad[0] + 1} ({table[column].iloc[bad[0]]!r})",
        )
    return values
