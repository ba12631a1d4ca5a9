"""Hyper-parameter search over run configs: YAML spaces, the Ray Tune / Optuna / ASHA driver,
MLflow tracking, the results folder and the live console.

``space`` and ``results`` import no Ray; ``driver`` (imported lazily by the CLI) does.
"""

from eqsearch.search.space import SearchSpec, SpecError, load_spec

__all__ = ["SearchSpec", "SpecError", "load_spec"]
