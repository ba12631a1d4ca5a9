"""The results folder of a search: a stable layout that ``eqsearch status``, ``resume`` and the
analysis package read.

    RESULTS/
      search.yaml     the search space as run (CLI overrides applied); ``resume`` reads it
      search.json     run facts: Tune experiment path, MLflow URI/experiment/parent run, started
      trials.csv      one row per trial, rewritten live (see TRIAL_COLUMNS), durable across kills
      best.yaml       run config of the best trial (``eqsearch train --config best.yaml`` reruns it)
      mlflow.db       MLflow store (SQLite, written only by the driver) unless --mlflow-uri
      mlartifacts/    that store's artifacts (config.yaml of every trial, the space, best.yaml)
      optuna.db       the Optuna study (trial states: COMPLETE / PRUNED / FAIL)
      tune/<name>/    Tune experiment: trial folders (config.yaml, metrics.csv, checkpoints,
                      error.txt), experiment state and searcher state (used by resume)

``trials.csv`` columns: ``trial_id, trial_name, status, stop_reason, reason, epochs_run,
max_epochs``, the last reported metrics, ``time_total_s`` (training cost in seconds),
``mlflow_run_id``, ``trial_dir``, then ``config.<field>`` for every field of the trial's run
config. ``stop_reason`` is one of STOP_REASONS.

The folder can be copied, moved or archived: every path it stores is relative to it
(``search.json``'s ``tune_path``, ``trials.csv``'s ``trial_dir``; ``mlflow_uri`` is null for
the local store), and MLflow's own absolute artifact paths are re-pointed at the folder
whenever the store is opened from it (:func:`eqsearch.search.tracking.folder_store`).
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

SPACE_FILE = "search.yaml"
STATE_FILE = "search.json"
TRIALS_FILE = "trials.csv"
BEST_FILE = "best.yaml"
MLFLOW_DB = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
OPTUNA_DB = "optuna.db"
TUNE_DIR = "tune"

RUNNING, COMPLETED, ASHA_STOPPED, DIVERGED, ERRORED = "running", "completed", "asha_stopped", "diverged", "errored"
INTERRUPTED, INVALID = "interrupted", "invalid"
STOP_REASONS = (RUNNING, COMPLETED, ASHA_STOPPED, DIVERGED, ERRORED, INTERRUPTED, INVALID)
# interrupted: stopped by Ctrl-C / SIGTERM, continued by `eqsearch resume`; invalid: its sampled
# parameters make no valid run config together (e.g. rule.T2 > rule.T1 under BPTT)
FAILED = (DIVERGED, ERRORED, INVALID)  # ended without a usable result
METRIC_COLUMNS = ("epoch", "train_acc", "train_loss", "test_acc", "test_loss", "best_test_acc", "epoch_seconds",
                  "residual_free", "residual_nudged", "lr")
METRIC_PREFIXES = ("angle_", "gdu_", "test_", "train_", "lca_")  # the engine's further per-epoch metrics


def is_metric(name: str) -> bool:
    """Whether ``name`` is an engine metric (one name across console, Tune, MLflow, analysis),
    as opposed to Tune's own result keys."""
    return name in METRIC_COLUMNS or name.startswith(METRIC_PREFIXES)


TRIAL_COLUMNS = ("trial_id", "trial_name", "status", "stop_reason", "reason", "epochs_run", "max_epochs",
                 *METRIC_COLUMNS, "time_total_s", "mlflow_run_id", "trial_dir")
_DIVERGED = re.compile(r"DivergedError: (.+)")
_INVALID = re.compile(r"ConfigError: (.+)")


def stop_reason(epochs_run: int, max_epochs: int, error_text: str | None) -> tuple[str, str]:
    """(stop_reason, human reason) of a trial that ended, from what it ran and how it ended."""
    if error_text:
        m = _DIVERGED.search(error_text)
        if m:
            return DIVERGED, m.group(1).strip()
        m = _INVALID.search(error_text)
        if m:
            return INVALID, m.group(1).strip()
        last = [ln for ln in error_text.strip().splitlines() if ln.strip()]
        return ERRORED, (last[-1].strip() if last else "error")
    if epochs_run >= max_epochs:
        return COMPLETED, f"ran all {max_epochs} epochs"
    return ASHA_STOPPED, f"stopped by ASHA after {epochs_run} of {max_epochs} epochs"


def read_trials(results: str | Path) -> list[dict]:
    path = Path(results) / TRIALS_FILE
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_trials(results: str | Path, rows: list[dict]) -> None:
    """Write ``trials.csv`` atomically (a reader never sees half a file)."""
    header = list(TRIAL_COLUMNS)
    for r in rows:
        header += [k for k in r if k not in header]
    path = Path(results) / TRIALS_FILE
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def read_state(results: str | Path) -> dict:
    path = Path(results) / STATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{results}: no {STATE_FILE}; allowed: a results folder written by eqsearch search")
    return json.loads(path.read_text())


def write_state(results: str | Path, state: dict) -> None:
    Path(results, STATE_FILE).write_text(json.dumps(state, indent=2))


def local_store_uri(results: str | Path) -> str:
    """The URI of the SQLite MLflow store inside a results folder, where it is now."""
    return f"sqlite:///{(Path(results) / MLFLOW_DB).resolve()}"


def tune_path(results: str | Path, state: dict) -> Path:
    """The Tune experiment folder of the search (``state``: :func:`read_state`)."""
    return Path(results).resolve() / state["tune_path"]


def trial_folder(results: str | Path, row: dict) -> Path | None:
    """The Tune folder of a trial of ``trials.csv`` (None before Tune made one)."""
    return Path(results).resolve() / row["trial_dir"] if row.get("trial_dir") else None


def best_row(rows: list[dict], metric: str, mode: str) -> dict | None:
    """The trial with the best last-reported ``metric`` among those that ran the full budget (as
    Optuna's best trial, among its COMPLETE ones); while none has, among all that reported one
    (failed trials excluded)."""
    scored = [r for r in rows if r.get(metric) not in (None, "") and r["stop_reason"] not in FAILED]
    complete = [r for r in scored if r["stop_reason"] == COMPLETED]
    scored = complete or scored
    if not scored:
        return None
    key = lambda r: float(r[metric])  # noqa: E731
    return max(scored, key=key) if mode == "max" else min(scored, key=key)
