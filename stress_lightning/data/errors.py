"""Errors for bad corpus input: each names the file (and column or key) and the problem."""

from __future__ import annotations

from pathlib import Path


class CorpusError(ValueError):
    """A corpus file is missing, malformed or inconsistent with the rest of the corpus."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):
        # Worker processes send errors back pickled; rebuild from both fields, not from the message.
        return (type(self), (self.path, self.problem))


class VideoDecodeError(CorpusError):
    """A video file cannot be opened or decoded (corrupt, truncated, unknown codec)."""
