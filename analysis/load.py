"""Load a search into pandas: one tidy row per trial, and its per-epoch learning curves.

Two sources give the same :class:`Search`:

- :func:`load_results` reads a results folder (see :mod:`eqsearch.search.results`): the
  driver's ``trials.csv`` (one row per trial, stop reasons) enriched with each trial's folder
  under ``tune/<name>/<trial>/``: the engine's ``config.yaml`` and ``metrics.csv`` and, where
  a trial folder lacks them, Tune's own per-trial ``result.json`` and the trial's config from
  ``trials.csv``. These files are durable: a running or killed search loads too.
- :func:`load_mlflow` reads the nested MLflow runs of a search (params, metric histories and
  the tag ``eqsearch.stop_reason``).

Columns of ``Search.trials``: ``search, trial_id, trial_name, stop_reason, reason,
epochs_run, max_epochs``; the last epoch's metrics under their engine names (``test_acc``,
``train_loss``, ..., ``angle_B<k>``, ``gdu_*``); ``best_test_acc`` and ``best_epoch`` (the
epoch of the best test accuracy); ``wall_seconds`` (sum of ``epoch_seconds``);
``relaxation_steps`` (see :func:`analysis.cost.relaxation_steps`); ``estimator`` (the rule's
estimator, or ``bptt``); then ``config.<field>`` for every run config field, list fields
spread over ``config.<field>[i]``. ``Search.curves`` has one row per (trial, epoch).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import yaml

from analysis.cost import relaxation_steps
from eqsearch.config import RunConfig, from_dict, load_config, resource_overrides
from eqsearch.errors import AnalysisError, ConfigError
from eqsearch.search import results as R
from eqsearch.search.tracking import REASON_TAG, STOP_TAG, TRIAL_NAME_TAG, TRIAL_TAG, folder_store
from eqsearch.training import CONFIG_FILE, read_metrics

TUNE_RESULT_FILE = "result.json"  # Tune's per-trial log: one JSON line per report


@dataclass
class Search:
    """A loaded search: its trials, their learning curves and what it optimized."""

    name: str
    source: str
    trials: pd.DataFrame
    curves: pd.DataFrame
    metric: str = "test_acc"
    mode: str = "max"
    configs: dict[str, RunConfig] = field(default_factory=dict)  # trial_id -> run config as run

    def searched(self) -> list[str]:
        """Config columns that differ between trials (the searched parameters)."""
        cols = [c for c in self.trials.columns if c.startswith("config.")]
        return [c for c in cols if self.trials[c].astype(str).nunique(dropna=False) > 1]


def is_epoch_metric(name: str) -> bool:
    """Whether ``name`` is an engine metric (one name across console, Tune, MLflow, analysis)."""
    return R.is_metric(name)


# ---------------------------------------------------------------------- the tidy row
def trial_record(search: str, trial_id: str, trial_name: str, stop_reason: str, reason: str, max_epochs: int,
                 cfg: RunConfig, history: list[dict]) -> dict:
    """One row of ``Search.trials`` from a trial's run config and per-epoch metrics."""
    history = sorted(history, key=lambda m: m["epoch"])
    last = history[-1] if history else {}
    accs = [m.get("test_acc") for m in history]
    scored = [(a, m["epoch"]) for a, m in zip(accs, history) if a is not None and not math.isnan(a)]
    best_acc, best_epoch = max(scored, key=lambda t: (t[0], -t[1])) if scored else (math.nan, math.nan)
    epochs_run = int(last.get("epoch", 0))
    row = {"search": search, "trial_id": trial_id, "trial_name": trial_name, "stop_reason": stop_reason,
           "reason": reason, "epochs_run": epochs_run, "max_epochs": max_epochs}
    row.update({k: v for k, v in last.items() if k not in ("epoch", "best_test_acc")})
    row["best_test_acc"] = best_acc
    row["best_epoch"] = best_epoch
    row["wall_seconds"] = sum(m.get("epoch_seconds") or 0.0 for m in history)
    row["relaxation_steps"] = relaxation_steps(cfg, history)
    row["estimator"] = cfg.rule.label
    row.update(flat_config(cfg))
    return row


def flat_config(cfg: RunConfig) -> dict[str, Any]:
    """``config.<field>`` for every field; a list field becomes ``config.<field>[i]``."""
    out: dict[str, Any] = {}
    for key, value in cfg.flat().items():
        if isinstance(value, list):
            out.update({f"config.{key}[{i}]": v for i, v in enumerate(value)})
        else:
            out[f"config.{key}"] = value
    return out


_ELEMENT = re.compile(r"\.\d+$")  # MLflow's per-element copy of a list field (optim.lrs.0)


def config_from_strings(flat: dict[str, str], overrides: dict[str, Any] | None = None) -> RunConfig:
    """A run config from dotted fields written as text (``trials.csv`` cells, MLflow params)."""
    values = {k: _value(v) for k, v in flat.items() if not _ELEMENT.search(k)}
    return from_dict(None, {**values, **(overrides or {})})


def _value(text: str | None) -> Any:
    if text is None or text in ("", "None", "null"):
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def frames(search: str, records: list[dict], histories: dict[str, list[dict]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, curves) frames; metric columns ordered as in the engine."""
    trials = pd.DataFrame.from_records(records)
    if not trials.empty:
        first = [c for c in trials.columns if not c.startswith("config.")]
        trials = trials[first + sorted(c for c in trials.columns if c.startswith("config."))]
    curve_rows = [{"search": search, "trial_id": tid, **m} for tid, hist in histories.items() for m in hist]
    curves = pd.DataFrame.from_records(curve_rows)
    if not curves.empty:
        curves["epoch"] = curves["epoch"].astype(int)
        curves = curves.sort_values(["trial_id", "epoch"], kind="stable").reset_index(drop=True)
    return trials, curves


# ---------------------------------------------------------------------- results folder
def load_results(results: str | Path) -> Search:
    """The search in a results folder written by ``eqsearch search`` (finished or running)."""
    results = Path(results)
    if not (results / R.STATE_FILE).is_file():
        raise AnalysisError(f"{results}: not the results folder of a search (no {R.STATE_FILE}); "
                            f"allowed: a folder written by `eqsearch search --results DIR`")
    state = R.read_state(results)
    name = state["name"]
    metric, mode, trial_cfg = _search_settings(results)
    rows = R.read_trials(results)
    trial_root = results / R.TUNE_DIR / name
    records, histories, configs = [], {}, {}
    for row in rows:
        folder = trial_root / row["trial_name"]
        cfg = _trial_config(folder, row, trial_cfg)
        history = trial_history(folder)
        records.append(trial_record(name, row["trial_id"], row["trial_name"], row["stop_reason"], row["reason"],
                                    int(row["max_epochs"]), cfg, history))
        histories[row["trial_id"]] = history
        configs[row["trial_id"]] = cfg
    trials, curves = frames(name, records, histories)
    return Search(name, str(results), trials, curves, metric, mode, configs)


def _search_settings(results: Path) -> tuple[str, str, dict]:
    """(metric, mode, run config fields each trial's resources set) from the search's space."""
    from eqsearch.search.space import load_spec

    spec = load_spec(results / R.SPACE_FILE)
    res = spec.resources
    return spec.search["metric"], spec.search["mode"], resource_overrides(res["cpu"], res["gpu"])


def _trial_config(folder: Path, row: dict, trial_cfg: dict) -> RunConfig:
    """The trial's run config as run: its ``config.yaml``, else ``trials.csv`` plus the fields
    the trial set from its resources (threads, device)."""
    path = folder / CONFIG_FILE
    if path.is_file():
        return load_config(path)
    flat = {k[len("config."):]: v for k, v in row.items() if k.startswith("config.")}
    try:
        return config_from_strings(flat, trial_cfg)
    except ConfigError as exc:
        raise AnalysisError(f"{folder}: trial config in {R.TRIALS_FILE} is invalid: {exc}") from None


def trial_history(folder: Path) -> list[dict]:
    """Per-epoch metrics of a trial: the engine's ``metrics.csv``, else Tune's ``result.json``."""
    history = read_metrics(folder)
    if history:
        return history
    path = folder / TUNE_RESULT_FILE
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            report = json.loads(line)
            out.append({k: float(v) for k, v in report.items() if is_epoch_metric(k) and v is not None})
    return out


# ---------------------------------------------------------------------- MLflow
def load_mlflow(uri: str, experiment: str, parent_run_id: str | None = None) -> Search:
    """The search logged to MLflow experiment ``experiment`` at ``uri``: the nested runs of
    ``parent_run_id``, or of the experiment's latest search when it is None."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from eqsearch.search.tracking import quiet

    quiet()
    client = MlflowClient(uri)
    try:
        exp = client.get_experiment_by_name(experiment)
    except MlflowException as exc:
        raise AnalysisError(f"{uri}: cannot read the MLflow store: {exc}") from None
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise AnalysisError(f"{uri}: no MLflow experiment {experiment!r}; allowed: {', '.join(names) or 'none'}")
    parent = client.get_run(parent_run_id) if parent_run_id else _latest_search(client, exp.experiment_id, uri)
    settings = parent.data.params
    trial_cfg = _resource_fields(settings)
    runs = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
                              max_results=50000)
    name = parent.info.run_name
    records, histories, configs = [], {}, {}
    for run in sorted(runs, key=lambda r: r.info.start_time):
        tid = run.data.tags.get(TRIAL_TAG, run.info.run_id)
        cfg = config_from_strings(run.data.params, trial_cfg)
        history = _mlflow_history(client, run)
        records.append(trial_record(name, tid, run.data.tags.get(TRIAL_NAME_TAG, run.info.run_name),
                                    run.data.tags.get(STOP_TAG, R.RUNNING),
                                    run.data.tags.get(REASON_TAG, ""), cfg.train.epochs, cfg, history))
        histories[tid] = history
        configs[tid] = cfg
    trials, curves = frames(name, records, histories)
    return Search(name, f"{uri}#{experiment}/{parent.info.run_id}", trials, curves,
                  settings.get("metric", "test_acc"), settings.get("mode", "max"), configs)


def load_mlflow_of(results: str | Path) -> Search:
    """The search of a results folder, read from the MLflow store named in its ``search.json``."""
    results = Path(results)
    if not (results / R.STATE_FILE).is_file():
        raise AnalysisError(f"{results}: not the results folder of a search (no {R.STATE_FILE})")
    state = R.read_state(results)
    return load_mlflow(folder_store(results, state), state["experiment"], state["parent_run_id"])


def _latest_search(client, experiment_id: str, uri: str):
    parents = [r for r in client.search_runs([experiment_id], "tags.`eqsearch.search` != ''",
                                             order_by=["attributes.start_time DESC"], max_results=1)]
    if not parents:
        raise AnalysisError(f"{uri}: experiment {experiment_id} holds no eqsearch search (no run tagged eqsearch.search)")
    return parents[0]


def _resource_fields(settings: dict[str, str]) -> dict:
    return resource_overrides(float(settings.get("cpu", 1)), float(settings.get("gpu", 0)))


def _mlflow_history(client, run) -> list[dict]:
    """Per-epoch metrics of a trial's run (MLflow step = epoch); where an epoch was logged twice
    (a trial resumed from a checkpoint ran it again), the value logged last: MLflow returns a
    metric's history in the order of its timestamps."""
    by_epoch: dict[int, dict] = {}
    for key in run.data.metrics:
        if not is_epoch_metric(key) or key == "epoch":
            continue
        for m in client.get_metric_history(run.info.run_id, key):
            by_epoch.setdefault(int(m.step), {"epoch": float(m.step)})[key] = m.value
    return [by_epoch[e] for e in sorted(by_epoch)]


# ---------------------------------------------------------------------- any source
MLFLOW_PREFIX = "mlflow:"


def load_search(source: str | Path, mlflow_uri: str | None = None, from_mlflow: bool = False) -> Search:
    """A search from a results folder, from its MLflow store (``from_mlflow``), or from
    ``mlflow:EXPERIMENT[/PARENT_RUN_ID]`` at ``mlflow_uri``."""
    text = str(source)
    if text.startswith(MLFLOW_PREFIX):
        if not mlflow_uri:
            raise AnalysisError(f"{text}: an MLflow source needs --mlflow-uri (e.g. sqlite:////abs/mlflow.db)")
        experiment, _, parent = text[len(MLFLOW_PREFIX):].partition("/")
        return load_mlflow(mlflow_uri, experiment, parent or None)
    return load_mlflow_of(source) if from_mlflow else load_results(source)


def combine(searches: Iterable[Search]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The trials and the curves of several searches in one frame each; column ``search`` tells
    them apart (the search's name, numbered ``name#i`` where several searches share a name)."""
    searches = list(searches)
    names = [s.name for s in searches]
    labels = [s.name if names.count(s.name) == 1 else f"{s.name}#{i}" for i, s in enumerate(searches, start=1)]
    trials = pd.concat([s.trials.assign(search=label) for s, label in zip(searches, labels)], ignore_index=True)
    curves = pd.concat([s.curves.assign(search=label) for s, label in zip(searches, labels)], ignore_index=True)
    return trials, curves
