"""Results -> pandas tables, plots, MLflow comparisons and best-config export.

``load_results`` / ``load_mlflow`` give a :class:`Search` (one row per trial and the per-epoch
curves); ``analysis.tables``, ``analysis.plots``, ``analysis.export`` and ``analysis.report``
turn it into tables, PNGs, rerunnable configs and a page. The CLI is ``eqsearch summarize``,
``compare``, ``export`` and ``report``.
"""

from analysis.load import Search, load_mlflow, load_results, load_search
from eqsearch.errors import AnalysisError

__all__ = ["AnalysisError", "Search", "load_mlflow", "load_results", "load_search"]
