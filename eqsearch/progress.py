"""Progress of a training run: a live bar with a time estimate on a terminal, one line per
epoch elsewhere (logs, CI, pipes)."""

from __future__ import annotations

import sys
import time
from typing import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


# further metrics shown on the epoch line (by name prefix)
EXTRAS = ("angle_", "gdu_", "test_free", "lca_sparsity", "lca_recon", "lca_dict")


def format_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def training_line(m: dict) -> str:
    """The epoch line of a training run (accuracies, loss, seconds)."""
    return (f"train acc {m['train_acc']:.4f}  test acc {m['test_acc']:.4f}  loss {m['test_loss']:.4f}"
            f"  {m['epoch_seconds']:.1f}s")


class RunProgress:
    """Context manager: ``on_batch`` for :meth:`Trainer.train_epoch`, ``epoch_done`` per epoch.
    ``describe(metrics)`` writes the middle of each epoch line (default: :func:`training_line`)."""

    def __init__(self, epochs: int, batches_per_epoch: int, start_epoch: int = 0, enabled: bool = True,
                 describe: Callable[[dict], str] = training_line, task: str = "train"):
        self.epochs, self.per_epoch = epochs, batches_per_epoch
        self.start_epoch = start_epoch
        self.describe, self.task = describe, task
        self.console = Console(stderr=True)
        self.live = enabled and self.console.is_terminal
        self.enabled = enabled
        self.t0 = time.perf_counter()
        self._bar = None

    def __enter__(self):
        if self.live:
            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[acc]}"), TimeElapsedColumn(), TextColumn("eta"),
                                 TimeRemainingColumn(), console=self.console, transient=False)
            self._bar.start()
            done = self.start_epoch * self.per_epoch
            self._task = self._bar.add_task(self.task, total=self.epochs * self.per_epoch, completed=done, acc="")
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.stop()

    def on_batch(self, done: int, total: int, running_acc: float | None) -> None:
        if self._bar is not None:
            fields = {"acc": f"train acc {running_acc:.3f}"} if running_acc is not None else {}
            self._bar.update(self._task, advance=1, **fields)

    def epoch_done(self, m: dict) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.t0
        done = m["epoch"] - self.start_epoch
        eta = elapsed / max(done, 1) * (self.epochs - m["epoch"])
        line = f"epoch {m['epoch']}/{self.epochs}  {self.describe(m)}  eta {format_seconds(eta)}"
        extras = [f"{k} {v:.3g}" for k, v in m.items() if k.startswith(EXTRAS)]
        if extras:
            line += "  " + "  ".join(extras)
        if self._bar is not None:
            self._bar.console.print(line)
        else:
            print(line, file=sys.stderr, flush=True)
