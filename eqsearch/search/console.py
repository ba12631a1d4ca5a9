"""Compact live view of a search: one row per trial (status, epoch, metric, best, ETA).

On a terminal it is a live table redrawn in place; elsewhere (CI, pipes, logs) one line per
finished trial plus a progress line every ``every_s`` seconds.

The search's ETA is the epochs still expected (:class:`Budget`: ASHA's rungs, each passed by
1 / reduction_factor of the trials that reach it) times the wall time per epoch the search
has shown since its first epoch (before that, the trials' own seconds per epoch over the
number of trials running at once).
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from eqsearch.progress import format_seconds
from eqsearch.search.results import FAILED, INTERRUPTED, RUNNING


class Budget:
    """Epochs a trial is expected to run under ASHA (``asha``: its grace_period and
    reduction_factor; None: every trial runs ``max_epochs``). A trial that reaches a rung goes
    on with probability 1 / reduction_factor, the asymptotic share of asynchronous successive
    halving."""

    def __init__(self, max_epochs: int, asha: dict | None):
        self.max_epochs = max_epochs
        self.rungs: list[int] = []  # epochs at which ASHA decides, below max_epochs
        self.keep = 1.0
        if asha:
            self.keep = 1.0 / asha["reduction_factor"]
            r = asha["grace_period"]
            while r < max_epochs:
                self.rungs.append(r)
                r *= asha["reduction_factor"]

    def left(self, epoch: int = 0) -> float:
        """Expected epochs still to run by a trial that has run ``epoch`` (0: not started) and
        was not stopped."""
        left, p, at = 0.0, 1.0, epoch
        for r in [r for r in self.rungs if r > epoch] + [self.max_epochs]:
            left += p * (r - at)
            p *= self.keep
            at = r
        return left


class SearchConsole:
    def __init__(self, name: str, metric: str, mode: str, num_samples: int, max_epochs: int, concurrency: int,
                 enabled: bool = True, every_s: float = 20.0, asha: dict | None = None):
        self.name, self.metric, self.mode = name, metric, mode
        self.num_samples, self.max_epochs, self.concurrency = num_samples, max_epochs, concurrency
        self.budget = Budget(max_epochs, asha)
        self._first_epoch: tuple[float, int] | None = None  # (time, epochs done) at the first report
        self.console = Console(stderr=True)
        self.enabled = enabled
        self.live = None
        self.every_s = every_s
        self.t0 = time.perf_counter()
        self._last_line = 0.0
        self._epochs_done = 0
        self._best: float | None = None  # best value seen, over every update

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.t0 = time.perf_counter()
        if self.enabled and self.console.is_terminal:
            self.live = Live(Table(), console=self.console, refresh_per_second=4, transient=False)
            self.live.start()

    def stop(self, rows: list[dict]) -> None:
        if self.live is not None:
            self.live.update(self.table(rows))
            self.live.stop()
            self.live = None

    # ------------------------------------------------------------------ updates
    def note(self, text: str) -> None:
        """A message the user must see (a tracking outage, an interrupt), even with --quiet."""
        self.console.print(text, highlight=False, soft_wrap=True)

    def update(self, rows: list[dict], finished: dict | None = None) -> None:
        """Redraw with the current trial rows; ``finished``: the row of a trial that just ended."""
        self._epochs_done = sum(int(r.get("epochs_run") or 0) for r in rows)
        if self._first_epoch is None and self._epochs_done:
            self._first_epoch = (time.perf_counter(), self._epochs_done)
        if not self.enabled:
            return
        if self.live is not None:
            self.live.update(self.table(rows))
            return
        now = time.perf_counter()
        if finished is not None:
            self.console.print(f"trial {finished['trial_name']}: {finished['stop_reason']} after "
                               f"{finished['epochs_run']} epochs, {self.metric} {_fmt(finished.get(self.metric))}"
                               + (f" ({finished['reason']})" if finished['stop_reason'] in (*FAILED, INTERRUPTED) else ""),
                               highlight=False)
        elif now - self._last_line >= self.every_s:
            self.console.print(self.headline(rows), highlight=False)
        else:
            return
        self._last_line = now

    def headline(self, rows: list[dict]) -> str:
        done = sum(1 for r in rows if r["stop_reason"] != RUNNING)
        best = self.best(rows)
        eta = self.eta(rows)
        return (f"search {self.name}: {done}/{self.num_samples} trials done, {len(rows) - done} running, "
                f"best {self.metric} {_fmt(best)}, elapsed {format_seconds(time.perf_counter() - self.t0)}"
                + (f", eta {format_seconds(eta)}" if eta is not None else ""))

    def best(self, rows: list[dict]) -> float | None:
        """The best value any trial has reported so far: it never gets worse, although a trial's
        latest value can (rows hold each trial's last epoch)."""
        vals = [float(r[self.metric]) for r in rows if r.get(self.metric) not in (None, "")
                and r["stop_reason"] not in FAILED]
        if self._best is not None:
            vals.append(self._best)
        if not vals:
            return None
        self._best = max(vals) if self.mode == "max" else min(vals)
        return self._best

    def eta(self, rows: list[dict]) -> float | None:
        """Seconds left: the expected epochs still to run (:class:`Budget`) at the search's wall
        time per epoch; None before any epoch."""
        per_epoch = self.seconds_per_epoch(rows)
        if per_epoch is None:
            return None
        left = sum(self.budget.left(int(r["epochs_run"] or 0)) for r in rows if r["stop_reason"] == RUNNING)
        left += max(0, self.num_samples - len(rows)) * self.budget.left()
        return left * per_epoch

    def seconds_per_epoch(self, rows: list[dict]) -> float | None:
        """Wall seconds per trial epoch of the whole search: measured since the first epoch once
        as many epochs more as trials run at once have come in (start-up excluded); until then
        the trials' own epoch time, shared by the trials that run at once."""
        if self._first_epoch is not None and self._epochs_done - self._first_epoch[1] >= self.concurrency:
            t, n = self._first_epoch
            return (time.perf_counter() - t) / (self._epochs_done - n)
        own = [float(r["epoch_seconds"]) for r in rows if r.get("epoch_seconds") not in (None, "")]
        return sum(own) / len(own) / self.concurrency if own else None

    def table(self, rows: list[dict]) -> Table:
        t = Table(title=self.headline(rows), title_justify="left", expand=False)
        for col in ("trial", "status", "epoch", self.metric, "best", "eta"):
            t.add_column(col, justify="left" if col in ("trial", "status") else "right")
        for r in rows:
            running = r["stop_reason"] == RUNNING
            per_epoch = float(r["epoch_seconds"]) if r.get("epoch_seconds") not in (None, "") else None
            eta = (self.max_epochs - int(r["epochs_run"] or 0)) * per_epoch if running and per_epoch else None
            t.add_row(r["trial_name"], r["stop_reason"], f"{r['epochs_run']}/{self.max_epochs}",
                      _fmt(r.get(self.metric)), _fmt(r.get("best_test_acc")),
                      format_seconds(eta) if eta is not None else "")
        return t


def _fmt(v) -> str:
    if v in (None, ""):
        return "-"
    return f"{float(v):.4f}"


def print_table(rows: list[dict], metric: str, mode: str, max_epochs: int, title: str) -> None:
    """A one-shot table (``eqsearch status``)."""
    c = SearchConsole(title, metric, mode, len(rows), max_epochs, 1)
    c._epochs_done = 0
    t = c.table(rows)
    t.title = title
    Console(file=sys.stdout).print(t)
