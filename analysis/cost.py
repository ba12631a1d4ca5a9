"""The compute cost of a trial in relaxation steps.

A relaxation step is one closed-form update of every layer for a whole minibatch; the steps of
one training batch are those its epoch's ``train_steps`` metric logged (fewer than the rule's
:meth:`eqsearch.config.RuleConfig.steps_per_batch` when ``rule.tol`` ends phases early; the
rule's where an epoch has no such metric). The per-epoch evaluation (``T1`` steps per test batch)
is not counted: it is the same for every estimator. A trial's cost is the sum over its epochs of
``batches per epoch × steps per batch``.
"""

from __future__ import annotations

import math

from eqsearch.config import RunConfig
from eqsearch.data import load_dataset, num_batches
from eqsearch.errors import DataError

_TRAIN_SIZES: dict[tuple, int] = {}


def train_size(cfg: RunConfig) -> int | None:
    """Training examples of the run's data set, its hold-out removed (loaded once per data set
    and hold-out); None when it is not available here."""
    key = (cfg.data.dataset, cfg.data.root, cfg.data.holdout, cfg.data.holdout_seed)
    if key not in _TRAIN_SIZES:
        try:
            _TRAIN_SIZES[key] = int(load_dataset(cfg.data).x_train.shape[0])
        except (DataError, OSError):
            return None
    return _TRAIN_SIZES[key]


def relaxation_steps(cfg: RunConfig, history: list[dict]) -> float:
    """Training relaxation steps of the epochs of ``history`` (per-epoch metrics dicts; NaN when
    the data set is unavailable)."""
    n = train_size(cfg)
    if n is None:
        return math.nan
    per_batch = [m.get("train_steps") for m in history]
    steps = sum(cfg.rule.steps_per_batch() if s is None or math.isnan(s) else s for s in per_batch)
    return float(num_batches(n, cfg.data.batch_size, cfg.data.max_batches) * steps)
