"""Ray Tune trainables: one per training loop, each a thin wrapper around ``eqsearch.training.fit``.

``TRAINABLES`` maps the ``trainable:`` name of a search space file to ``module:function``; it is
resolved lazily (:func:`get_trainable`) so that validating a space file imports neither Ray nor
torch models. A new training loop (C-VF, LCA-CNN, energies) adds one entry and, where its run
config needs trial-specific settings, a few lines in its own module (see ``trainables.ep``).
"""

from __future__ import annotations

import importlib
from typing import Callable

BASE_KEY = "base"  # a trial's Tune config: the search's base run config under this key, sampled values beside it

TRAINABLES: dict[str, str] = {
    "ep": "trainables.ep:ep",  # EP and BPTT on every model.kind (mlp, vf_mlp, cnn, vf_cnn)
}


def get_trainable(name: str) -> Callable[[dict], None]:
    module, _, func = TRAINABLES[name].partition(":")
    return getattr(importlib.import_module(module), func)
