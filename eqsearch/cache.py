"""eqsearch's cache folder: what it can make again and keeps only to save time.

``$EQSEARCH_CACHE``, by default ``~/.cache/eqsearch``. Holds ``data/`` (writable copies of
read-only data roots, :mod:`eqsearch.data`) and ``mlflow/`` (the empty MLflow store each new
search's store is copied from, :mod:`eqsearch.search.tracking`). Deleting it loses nothing.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The cache folder (not created here)."""
    return Path(os.environ.get("EQSEARCH_CACHE", Path.home() / ".cache" / "eqsearch"))
