"""MLflow tracking of a search, all from the driver process (one writer for a SQLite store).

One parent run per search; one nested run per trial (tag ``mlflow.parentRunId``), holding the
trial's full run config as params, every epoch's metrics (step = epoch), the tags
``eqsearch.trial_id``, ``eqsearch.stop_reason`` and ``eqsearch.reason``, and at the end the
trial's ``config.yaml`` and, when the GDU check ran, ``gdu.png``. After a resume, trials keep
their run (found again by ``eqsearch.trial_id``) instead of getting a duplicate.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from eqsearch.config import RunConfig
from eqsearch.search.results import ASHA_STOPPED, COMPLETED, INTERRUPTED, MLFLOW_DB, RUNNING

TRIAL_TAG = "eqsearch.trial_id"
GDU_METRICS = ("gdu_rel_error", "gdu_sign_error", "gdu_angle")


def quiet() -> None:
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def store_uri(results: Path, uri: str | None) -> str:
    """``uri`` if given, else a SQLite database in the results folder."""
    return uri or f"sqlite:///{(Path(results) / MLFLOW_DB).resolve()}"


class Tracker:
    """The MLflow side of one search."""

    def __init__(self, uri: str, experiment: str, parent_run_id: str | None = None):
        import mlflow
        from mlflow.tracking import MlflowClient

        quiet()
        self.uri, self.experiment = uri, experiment
        self.client = MlflowClient(uri)
        exp = self.client.get_experiment_by_name(experiment)
        self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(experiment)
        self.parent = parent_run_id
        self.runs: dict[str, str] = {}
        self._mlflow = mlflow

    def start_search(self, name: str, settings: dict, space_file: Path) -> str:
        """Create the parent run (in the driver, before any trial)."""
        run = self.client.create_run(self.experiment_id, run_name=name, tags={"eqsearch.search": name})
        self.parent = run.info.run_id
        self.client.log_batch(self.parent, params=_params({k: v for k, v in settings.items()}))
        self.client.log_artifact(self.parent, str(space_file))
        return self.parent

    def reopen(self) -> None:
        """After a resume: mark the parent running again and map trials to their runs."""
        self.client.update_run(self.parent, status="RUNNING")
        for run in self.client.search_runs([self.experiment_id], f"tags.mlflow.parentRunId = '{self.parent}'",
                                           max_results=10000):
            trial_id = run.data.tags.get(TRIAL_TAG)
            if trial_id:
                self.runs[trial_id] = run.info.run_id

    def trial_run(self, trial_id: str, trial_name: str, params: dict) -> str:
        """The trial's nested run, created on first use (``params``: the flat run config, or the
        sampled parameters of a trial whose run config is invalid)."""
        if trial_id in self.runs:
            run_id = self.runs[trial_id]
            if self.client.get_run(run_id).info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
            return run_id
        run = self.client.create_run(self.experiment_id, run_name=trial_name,
                                     tags={"mlflow.parentRunId": self.parent, TRIAL_TAG: trial_id,
                                           "eqsearch.stop_reason": RUNNING})
        run_id = run.info.run_id
        self.client.log_batch(run_id, params=_params(params))
        self.runs[trial_id] = run_id
        return run_id

    def log_epoch(self, run_id: str, metrics: dict) -> None:
        from mlflow.entities import Metric

        step = int(metrics["epoch"])
        ts = int(time.time() * 1000)  # when the driver learned of the epoch (MLflow wants ms since 1970)
        batch = [Metric(k, float(v), ts, step) for k, v in metrics.items() if _is_number(v)]
        self.client.log_batch(run_id, metrics=batch)

    def end_trial(self, run_id: str, reason: str, detail: str, cfg: RunConfig | None, history: list[dict]) -> None:
        """Tags and artifacts of a trial that ended; run status FINISHED (completed, ASHA-stopped),
        KILLED (interrupted: ``resume`` reopens it) or FAILED. ``cfg``: None for an invalid one."""
        self.client.set_tag(run_id, "eqsearch.stop_reason", reason)
        self.client.set_tag(run_id, "eqsearch.reason", detail)
        if reason != INTERRUPTED and cfg is not None:
            with tempfile.TemporaryDirectory() as tmp:
                cfg.to_yaml(Path(tmp) / "config.yaml")
                self.client.log_artifact(run_id, str(Path(tmp) / "config.yaml"))
                if any(GDU_METRICS[0] in m for m in history):
                    plot_gdu_history(history, Path(tmp) / "gdu.png")
                    self.client.log_artifact(run_id, str(Path(tmp) / "gdu.png"))
        status = {COMPLETED: "FINISHED", ASHA_STOPPED: "FINISHED", INTERRUPTED: "KILLED"}.get(reason, "FAILED")
        self.client.set_terminated(run_id, status)

    def discard(self, run_id: str) -> None:
        """Delete the run of a trial that is not part of the search (lost in a kill, re-run)."""
        self.client.delete_run(run_id)

    def end_search(self, best: dict | None, best_yaml: Path | None, trials_csv: Path, interrupted: bool) -> None:
        """The parent run's best trial and artifacts; status KILLED when the search was interrupted."""
        if best is not None:
            self.client.set_tag(self.parent, "eqsearch.best_trial", best["trial_id"])
        for path in (best_yaml, trials_csv):
            if path is not None and path.exists():
                self.client.log_artifact(self.parent, str(path))
        for run in self.client.search_runs([self.experiment_id], f"tags.mlflow.parentRunId = '{self.parent}'",
                                           max_results=10000):
            if run.info.status == "RUNNING":  # a trial still running when the search ended
                self.client.set_terminated(run.info.run_id, "KILLED")
        self.client.set_tag(self.parent, "eqsearch.interrupted", str(interrupted).lower())
        self.client.set_terminated(self.parent, "KILLED" if interrupted else "FINISHED")


def plot_gdu_history(history: list[dict], path: Path) -> None:
    """GDU check metrics (EP vs BPTT) per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(GDU_METRICS), figsize=(4 * len(GDU_METRICS), 3))
    epochs = [m["epoch"] for m in history if GDU_METRICS[0] in m]
    for ax, name in zip(axes, GDU_METRICS):
        ax.plot(epochs, [m[name] for m in history if GDU_METRICS[0] in m], marker="o")
        ax.set_xlabel("epoch")
        ax.set_title(name)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def _params(d: dict) -> list:
    from mlflow.entities import Param

    return [Param(k, str(v)[:6000]) for k, v in d.items()]
