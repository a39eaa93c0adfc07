"""Corpus readers, one file each, registered by name in `CORPORA`. Importing this package registers all of them."""

from stress_lightning.data.corpora import (
    affectnet,  # noqa: F401  (registers)
    ckplus,  # noqa: F401  (registers)
    cremad,  # noqa: F401  (registers)
    fer2013,  # noqa: F401  (registers)
    image_folder,  # noqa: F401  (registers)
    mahnob_hci,  # noqa: F401  (registers)
    manifest,  # noqa: F401  (registers)
    pure,  # noqa: F401  (registers)
    rafdb,  # noqa: F401  (registers)
    ravdess,  # noqa: F401  (registers)
    swell_kw,  # noqa: F401  (registers)
    synthetic,  # noqa: F401  (registers)
    ubfc_phys,  # noqa: F401  (registers)
    ubfc_rppg,  # noqa: F401  (registers)
)
from stress_lightning.data.corpora.base import CORPORA, Corpus, build_corpus

__all__ = ["CORPORA", "Corpus", "build_corpus"]
