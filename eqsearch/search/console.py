"""Compact live view of a search: one row per trial (status, epoch, metric, best, ETA).

On a terminal it is a live table redrawn in place; elsewhere (CI, pipes, logs) one line per
finished trial plus a progress line every ``every_s`` seconds.
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from eqsearch.progress import format_seconds
from eqsearch.search.results import FAILED, INTERRUPTED, RUNNING


class SearchConsole:
    def __init__(self, name: str, metric: str, mode: str, num_samples: int, max_epochs: int, concurrency: int,
                 enabled: bool = True, every_s: float = 20.0):
        self.name, self.metric, self.mode = name, metric, mode
        self.num_samples, self.max_epochs, self.concurrency = num_samples, max_epochs, concurrency
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
        if not self.enabled:
            return
        self._epochs_done = sum(int(r.get("epochs_run") or 0) for r in rows)
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
        """Seconds left: epochs still to run (ASHA's average so far for trials not started) at
        the observed wall time per epoch."""
        if self._epochs_done == 0:
            return None
        finished = [int(r["epochs_run"]) for r in rows if r["stop_reason"] != RUNNING]
        per_trial = sum(finished) / len(finished) if finished else self.max_epochs
        running_left = sum(self.max_epochs - int(r["epochs_run"] or 0) for r in rows if r["stop_reason"] == RUNNING)
        left = running_left + max(0, self.num_samples - len(rows)) * per_trial
        return left * (time.perf_counter() - self.t0) / self._epochs_done

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
