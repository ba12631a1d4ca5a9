"""eqsearch: run, search and compare Equilibrium Propagation training runs.

The public API, imported lazily (``import eqsearch`` loads neither torch nor Ray)::

    from eqsearch import from_dict, load_config, fit, build_model, build_rule, families

- run configs: :func:`from_dict`, :func:`load_config`, :class:`RunConfig`
- model families: :func:`families`, :func:`family_of`, :func:`register` (:mod:`eqsearch.families`)
- engine: :func:`build_model`, :func:`build_rule`, :func:`relax`, :class:`EnergyModel`
- training: :func:`fit`, :class:`Trainer`
- errors: :class:`ConfigError`, :class:`DataError`, :class:`DivergedError`
"""

from __future__ import annotations

import importlib

_API = {
    "RunConfig": "eqsearch.config", "from_dict": "eqsearch.config", "load_config": "eqsearch.config",
    "families": "eqsearch.families", "family_of": "eqsearch.families", "register": "eqsearch.families",
    "Family": "eqsearch.families",
    "EnergyModel": "eqsearch.models", "build_model": "eqsearch.models",
    "build_rule": "eqsearch.rules", "relax": "eqsearch.rules",
    "fit": "eqsearch.training", "Trainer": "eqsearch.training",
    "ConfigError": "eqsearch.errors", "DataError": "eqsearch.errors", "DivergedError": "eqsearch.errors",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'eqsearch' has no attribute {name!r}")
