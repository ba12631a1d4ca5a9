"""A run folder's files (no torch here, so that the CLI and the analysis can read them cheaply).

    RUN/config.yaml            the run config (``eqsearch train --config`` reruns it)
    RUN/metrics.csv            one row per epoch (the engine's metric names)
    RUN/checkpoint_latest.pt   model, optimizer, scheduler, epoch and every epoch's metrics so far
    RUN/checkpoint_best.pt     the same at the best test accuracy so far
"""

from __future__ import annotations

import csv
from pathlib import Path

from eqsearch.config import RunConfig, load_config

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
LATEST = "checkpoint_latest.pt"
BEST = "checkpoint_best.pt"


def write_metrics(path: Path, rows: list[dict]) -> None:
    """Write ``metrics.csv`` (one row per epoch; the header is the union of the rows' keys)."""
    header: list[str] = []
    for r in rows:
        header += [k for k in r if k not in header]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def append_metrics(path: Path, metrics: dict) -> None:
    """Append one row to ``metrics.csv``, widening the header if a new metric appears."""
    rows = []
    if path.exists():
        with path.open() as f:
            rows = list(csv.DictReader(f))
    write_metrics(path, [*rows, dict(metrics)])


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    with path.open() as f:
        return [{k: float(v) if v not in ("", None) else None for k, v in r.items()} for r in csv.DictReader(f)]


def load_run_config(run_dir: str | Path, overrides: dict | None = None) -> RunConfig:
    return load_config(Path(run_dir) / CONFIG_FILE, overrides)
