"""The compute cost of a trial in relaxation steps.

A relaxation step is one closed-form update of every layer for a whole minibatch. A training
batch costs ``T1`` free steps plus ``T2`` nudged steps per nudged phase (two phases for the
symmetric estimator, which runs +β and −β; one for one-sided and random-sign); a BPTT batch
costs ``T1`` steps (its last ``T2`` are inside the ``T1``, backpropagated through). The
per-epoch evaluation (``T1`` steps per test batch) is not counted: it is the same for every
estimator. A trial's cost is ``epochs_run × batches per epoch × steps per batch``.
"""

from __future__ import annotations

import math

from eqsearch.config import RunConfig
from eqsearch.data import DataError, load_dataset, num_batches

_TRAIN_SIZES: dict[tuple, int] = {}


def steps_per_batch(cfg: RunConfig) -> int:
    r = cfg.rule
    if r.alg == "bptt":
        return r.T1
    return r.T1 + r.T2 * (2 if r.estimator == "symmetric" else 1)


def train_size(cfg: RunConfig) -> int | None:
    """Training examples of the run's data set (loaded once per data set); None when it is not
    available here."""
    key = (cfg.data.dataset, cfg.data.root)
    if key not in _TRAIN_SIZES:
        try:
            _TRAIN_SIZES[key] = int(load_dataset(cfg.data).x_train.shape[0])
        except (DataError, OSError):
            return None
    return _TRAIN_SIZES[key]


def relaxation_steps(cfg: RunConfig, epochs_run: int) -> float:
    """Training relaxation steps of ``epochs_run`` epochs (NaN when the data set is unavailable)."""
    n = train_size(cfg)
    if n is None:
        return math.nan
    return float(epochs_run * num_batches(n, cfg.data.batch_size, cfg.data.max_batches) * steps_per_batch(cfg))
