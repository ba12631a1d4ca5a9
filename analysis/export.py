"""Export the best trials of a search as run configs that ``eqsearch train --config`` reruns.

Each exported YAML is the trial's full run config as it ran (including the ``train.threads``
and ``train.device`` its resources set), with ``train.epochs`` set to the epochs the trial
completed: a trial that ASHA stopped after 2 epochs is rerun for 2 epochs, so the rerun on
the same device reproduces its final metrics (every random draw comes from ``train.seed``,
and nothing in an epoch depends on the total number of epochs). ``full_epochs`` keeps the
search's ``train.epochs`` instead, to train a stopped trial to the end.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from analysis.load import Search
from eqsearch.errors import AnalysisError
from analysis.tables import check_metric, fmt, usable


@dataclass
class Exported:
    rank: int
    trial_name: str
    value: float
    path: Path
    command: str


def export_top(search: Search, out: Path, k: int, metric: str | None = None,
               full_epochs: bool = False) -> list[Exported]:
    """Write the run configs of the ``k`` best trials by ``metric`` into ``out`` and a
    ``commands.sh`` that reruns them; returns what was written."""
    metric = metric or search.metric
    check_metric(search.trials, metric)
    if k < 1:
        raise AnalysisError(f"--top: got {k}; allowed: an integer >= 1")
    ranked = usable(search.trials, metric).sort_values(metric, ascending=search.mode == "min", kind="stable").head(k)
    if ranked.empty:
        raise AnalysisError(f"{search.source}: no trial has a finite {metric}; nothing to export")
    out.mkdir(parents=True, exist_ok=True)
    done = []
    for rank, row in enumerate(ranked.itertuples(index=False), start=1):
        row = row._asdict()
        cfg = search.configs[row["trial_id"]]
        if not full_epochs:
            cfg = cfg.replace({"train.epochs": int(row["epochs_run"])})
        path = out / f"{rank:02d}_{row['trial_name']}.yaml"
        cfg.to_yaml(path)
        header = (f"# search {search.name}, trial {row['trial_name']} (rank {rank} by {metric}): "
                  f"{metric} {fmt(float(row[metric]))} after {row['epochs_run']} of {row['max_epochs']} epochs "
                  f"({row['stop_reason']})\n# rerun: eqsearch train --config {shlex.quote(str(path))}\n")
        path.write_text(header + path.read_text())
        done.append(Exported(rank, row["trial_name"], float(row[metric]), path,
                             f"eqsearch train --config {shlex.quote(str(path))}"))
    (out / "commands.sh").write_text("#!/bin/sh\n" + "".join(f"{e.command}\n" for e in done))
    return done
