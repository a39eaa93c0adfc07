"""Corpus readers, registered by name. Importing this package registers all of them."""

from stress_lightning.data.corpora import synthetic  # noqa: F401
from stress_lightning.data.corpora.base import CORPORA, SessionRecord, read_corpus, register_corpus

__all__ = ["CORPORA", "SessionRecord", "read_corpus", "register_corpus"]
