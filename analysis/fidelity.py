"""Equal-fidelity views of a search: every trial's metrics at one epoch, and ASHA's rungs.

A trial stopped by ASHA after 1 epoch and one that ran 8 are not comparable by their final
values. These helpers give the frame of ``Search.trials`` with each trial's per-epoch metrics
taken at one epoch (from ``Search.curves``), for the trials that reached it, so that every
grouped table and plot compares trials at the same training budget.
"""

from __future__ import annotations

import math

import pandas as pd

from eqsearch.errors import AnalysisError
from eqsearch.search.results import ASHA_STOPPED

EPOCH_COLUMN = "fidelity_epoch"  # the epoch a row's metrics come from


def reached(trials: pd.DataFrame, epoch: int) -> pd.Series:
    """Which trials ran at least ``epoch`` epochs (a boolean series on ``trials``' index)."""
    return trials["epochs_run"].astype(int) >= epoch


def default_epoch(trials: pd.DataFrame) -> int:
    """The largest epoch that most trials (more than half of those that ran an epoch) reached."""
    ran = trials[trials["epochs_run"].astype(int) >= 1]
    if ran.empty:
        raise AnalysisError("no trial has finished an epoch yet; nothing to compare")
    need = math.floor(len(ran) / 2) + 1
    runs = sorted(ran["epochs_run"].astype(int), reverse=True)
    return runs[need - 1]


def check_epoch(trials: pd.DataFrame, epoch: int) -> None:
    """Raise :class:`AnalysisError` unless some trial reached ``epoch``."""
    top = int(trials["epochs_run"].max()) if not trials.empty else 0
    if not 1 <= epoch <= top:
        raise AnalysisError(f"--at-epoch: got {epoch}; allowed: an epoch from 1 to {top} "
                            "(the most any trial of this search ran)")


def at_epoch(trials: pd.DataFrame, curves: pd.DataFrame, epoch: int) -> pd.DataFrame:
    """The trials that reached ``epoch``, each metric column of ``curves`` replaced by its value
    at that epoch (``best_test_acc`` / ``best_epoch`` by the best up to it), plus
    :data:`EPOCH_COLUMN`. Trial-level columns (configuration, stop reason, epochs run) stay."""
    keys = [k for k in ("search", "trial_id") if k in curves.columns and k in trials.columns]
    upto = curves[curves["epoch"] <= epoch]
    at = upto[upto["epoch"] == epoch].drop(columns=["epoch"]).set_index(keys)
    rows = trials[reached(trials, epoch)].set_index(keys)
    rows = rows.loc[rows.index.intersection(at.index)]
    metrics = [c for c in at.columns if c in rows.columns]
    rows.loc[:, metrics] = at.loc[rows.index, metrics]
    if "test_acc" in upto.columns and "best_test_acc" in rows.columns:
        best = upto.sort_values(["test_acc", "epoch"], ascending=[False, True], kind="stable")
        best = best.drop_duplicates(keys).set_index(keys)
        rows.loc[:, "best_test_acc"] = best.loc[rows.index, "test_acc"]
        rows.loc[:, "best_epoch"] = best.loc[rows.index, "epoch"]
    return rows.reset_index().assign(**{EPOCH_COLUMN: epoch})[[*trials.columns, EPOCH_COLUMN]]


def rung_epochs(trials: pd.DataFrame) -> list[int]:
    """The epochs at which the scheduler decided (where ASHA-stopped trials stopped) and the
    full budget: the epochs at which trials of a successive-halving search are comparable."""
    stopped = trials.loc[trials["stop_reason"] == ASHA_STOPPED, "epochs_run"].astype(int)
    full = int(trials["max_epochs"].max()) if not trials.empty else 0
    return sorted({*stopped.tolist(), full} - {0})
