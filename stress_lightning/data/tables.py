"""Reading tabular corpus files with errors that name the file (a leaf: anything in `data` may import it)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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
