"""The live console of a search: a best that never gets worse, and an ETA from ASHA's budget
that leaves the start-up out."""

from __future__ import annotations

import pytest

from eqsearch.search import console as C
from eqsearch.search.results import ASHA_STOPPED, COMPLETED, RUNNING


def row(name: str, reason: str, epochs: int, acc: float | None = None, epoch_s: float = 2.0) -> dict:
    return {"trial_name": name, "stop_reason": reason, "epochs_run": epochs, "test_acc": acc, "epoch_seconds": epoch_s,
            "reason": ""}


def test_budget_is_the_expected_epochs_of_successive_halving():
    b = C.Budget(8, {"grace_period": 1, "reduction_factor": 2})
    assert b.rungs == [1, 2, 4]
    assert b.left() == pytest.approx(1 + 0.5 * 1 + 0.25 * 2 + 0.125 * 4)  # every trial runs epoch 1, half go on...
    assert b.left(1) == pytest.approx(1 + 0.5 * 2 + 0.25 * 4)  # it passed rung 1
    assert b.left(5) == 3 and b.left(8) == 0
    assert C.Budget(8, None).left(3) == 5  # no ASHA: every trial runs all its epochs


def test_budget_matches_a_simulated_asha_on_many_trials():
    """Promote the top 1/rf at each rung of a large synchronous bracket: the mean epochs run
    equals Budget.left()."""
    import random

    rng = random.Random(0)
    n, asha = 4096, {"grace_period": 2, "reduction_factor": 3}
    b = C.Budget(30, asha)
    alive, epochs = [rng.random() for _ in range(n)], 0.0
    at = 0
    for r in b.rungs + [30]:
        epochs += len(alive) * (r - at)
        at = r
        alive = sorted(alive)[len(alive) - len(alive) // 3:]
    assert epochs / n == pytest.approx(b.left(), rel=0.01)


def test_best_never_gets_worse_when_a_trial_latest_value_drops():
    c = C.SearchConsole("s", "test_acc", "max", 4, 8, 2, enabled=False)
    assert c.best([row("a", RUNNING, 1, 0.90)]) == 0.90
    assert c.best([row("a", RUNNING, 2, 0.70), row("b", RUNNING, 1, 0.60)]) == 0.90
    lower = C.SearchConsole("s", "test_acc", "min", 4, 8, 2, enabled=False)  # a metric to minimise
    assert lower.best([row("a", RUNNING, 1, 0.3)]) == 0.3 and lower.best([row("a", RUNNING, 2, 0.5)]) == 0.3


def test_eta_counts_asha_budget_and_leaves_the_start_up_out(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(C.time, "perf_counter", lambda: clock[0])
    asha = {"grace_period": 1, "reduction_factor": 2}
    c = C.SearchConsole("s", "test_acc", "max", 6, 8, 2, enabled=False, asha=asha)
    c.start()
    assert c.eta([]) is None
    clock[0] = 60.0  # a minute of Ray start-up before the first epoch
    rows = [row("a", RUNNING, 1, 0.5, epoch_s=2.0), row("b", RUNNING, 0)]
    c.update(rows)
    budget = C.Budget(8, asha)
    expected_left = budget.left(1) + budget.left(0) + 4 * budget.left()
    # until more epochs come in: the trials' own 2 s per epoch, two at a time
    assert c.eta(rows) == pytest.approx(expected_left * 1.0)
    clock[0] = 66.0  # then 3 epochs in 6 s of wall time: 2 s per epoch of the whole search
    rows = [row("a", ASHA_STOPPED, 2, 0.5), row("b", RUNNING, 2, 0.6), row("c", RUNNING, 0)]
    c.update(rows)
    expected_left = budget.left(2) + budget.left(0) + 3 * budget.left()
    assert c.eta(rows) == pytest.approx(expected_left * 2.0)
    clock[0] = 100.0
    done = [row(n, COMPLETED, 8, 0.9) for n in "abcdef"]
    c.update(done)
    assert c.eta(done) == 0
