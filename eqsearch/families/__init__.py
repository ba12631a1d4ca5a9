"""Model families: each module here is one plug-in (config section + builder + seed flags).

Adding a family = one module that defines its ``model:`` section and calls
:func:`register`, plus its line in ``_BUILTIN`` below; see the README ("Adding a model family").
"""

from __future__ import annotations

import importlib

from eqsearch.families.registry import Family, families, family_of, kinds, register

__all__ = ["Family", "families", "family_of", "kinds", "register"]

_BUILTIN = ("eqsearch.families.mlp", "eqsearch.families.cnn", "eqsearch.families.energy",
            "eqsearch.families.continual", "eqsearch.families.lca")

for _module in _BUILTIN:
    importlib.import_module(_module)
