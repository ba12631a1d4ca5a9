"""MLflow tracking of a search, all from the driver process (one writer for a SQLite store).

One parent run per search; one nested run per trial (tag ``mlflow.parentRunId``), holding the
trial's full run config as params, every epoch's metrics (step = epoch), the tags
``eqsearch.trial_id``, ``eqsearch.trial_name``, ``eqsearch.stop_reason`` and ``eqsearch.reason``
(the run's name then says how the trial ended: :func:`run_name`), and at the end the
trial's ``config.yaml`` and, when the GDU check ran, ``gdu.png``. After a resume, trials keep
their run (found again by ``eqsearch.trial_id``) instead of getting a duplicate.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sqlite3
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from eqsearch.cache import cache_root
from eqsearch.config import RunConfig
from eqsearch.errors import SpecError
from eqsearch.search.results import (ARTIFACTS_DIR, ASHA_STOPPED, COMPLETED, INTERRUPTED, MLFLOW_DB, RUNNING,
                                    local_store_uri)

# an unreachable server fails a call in seconds, not after minutes of retries with back-off
for _k, _v in {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}.items():
    os.environ.setdefault(_k, _v)

TRIAL_TAG = "eqsearch.trial_id"
TRIAL_NAME_TAG = "eqsearch.trial_name"  # the run name changes when the trial ends (:func:`run_name`)
STOP_TAG, REASON_TAG = "eqsearch.stop_reason", "eqsearch.reason"
GDU_METRICS = ("gdu_rel_error", "gdu_sign_error", "gdu_angle")
REACH_TIMEOUT_S = 5.0  # the start-up check of a tracking server
RETRY_S = 15.0  # while MLflow is unreachable, try it again at most this often


def quiet() -> None:
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


# an artifact location in a local store: <results>/mlartifacts (an experiment's) or
# <results>/mlartifacts/<run id>/artifacts (a run's)
_LOCAL_ARTIFACT = re.compile(r"^(?:file://)?(?P<root>.*)/" + ARTIFACTS_DIR + r"(?P<rest>/[0-9a-f]+/artifacts)?$")


def runs_page(results: Path, state: dict, metric: str, mode: str) -> str:
    """The MLflow UI's address (after host and port) of the search's runs, best ``metric``
    first: the model-training view (the UI opens on GenAI's otherwise), every trial in one
    flat list (the UI nests child runs only when they are sorted by date)."""
    with sqlite3.connect(Path(results) / MLFLOW_DB) as con:
        found = con.execute("SELECT experiment_id FROM experiments WHERE name = ?", (state["experiment"],)).fetchone()
    con.close()
    order = f"orderByKey=metrics.%60{metric}%60&orderByAsc={'true' if mode == 'min' else 'false'}"
    return f"/#/experiments/{found[0]}/runs?workflowType=machine_learning&{order}" if found else "/"


def folder_store(results: Path, state: dict) -> str:
    """The MLflow URI of the search in a results folder (``state``: its ``search.json``): the
    tracking server it logged to, or its local SQLite store, opened where the folder is now.

    MLflow writes artifact locations into its store as absolute paths; those of the folder's
    own ``mlartifacts/`` that point elsewhere (the folder was copied or moved) are re-pointed
    here first, so that the UI, ``summarize --from-mlflow`` and ``resume`` find the artifacts."""
    if state.get("mlflow_uri"):
        return state["mlflow_uri"]
    results = Path(results).resolve()
    db = results / MLFLOW_DB
    if db.is_file():
        here = (results / ARTIFACTS_DIR).as_uri()
        with sqlite3.connect(db) as con:
            for table, key, column in (("experiments", "experiment_id", "artifact_location"),
                                       ("runs", "run_uuid", "artifact_uri")):
                for k, location in con.execute(f"SELECT {key}, {column} FROM {table}").fetchall():
                    m = _LOCAL_ARTIFACT.match(location or "")
                    if m and Path(m["root"]) != results:
                        con.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ?", (here + (m["rest"] or ""), k))
        con.close()
    return local_store_uri(results)


def seed_sqlite_store(uri: str) -> None:
    """Create the SQLite store ``uri`` names, when it does not exist yet, as a copy of an empty
    store of this MLflow version kept in the cache (``mlflow/store-<version>.db``, made once by
    MLflow itself). A store MLflow creates runs its whole chain of schema migrations: 2.6 s on an
    idle core here, 5 s beside ``ray.init``, at every search's start; the copy takes 0.05 s. The
    cached store holds no experiment: MLflow adds its Default one (id 0) when it opens the copy,
    with the copy's own artifact root. Where the cache cannot be written, MLflow creates the
    store itself, as without the cache."""
    if not uri.startswith("sqlite:///") or "?" in uri:  # a server, or a URI with driver options
        return
    db = Path(uri[len("sqlite:///"):])
    if db.exists():
        return
    import mlflow

    template = cache_root() / "mlflow" / f"store-{mlflow.__version__}.db"
    try:
        if not template.is_file():
            _make_empty_store(template)
        db.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, db)
    except (OSError, sqlite3.Error):
        pass  # MLflow creates the store when it opens it


def _make_empty_store(path: Path) -> None:
    """An MLflow store with every table and no experiment at ``path``, whole or not at all
    (searches may start at once): made in a part file beside it, then renamed into place."""
    from mlflow.tracking import MlflowClient

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, part = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".part")
    os.close(fd)  # SQLite takes an empty file as an empty database
    try:
        MlflowClient(f"sqlite:///{part}")  # opening a store creates its tables (the migrations)
        with sqlite3.connect(part) as con:
            con.execute("DELETE FROM experiments WHERE experiment_id = 0")
        con.close()
        os.replace(part, path)
    finally:
        Path(part).unlink(missing_ok=True)


def check_reachable(uri: str) -> None:
    """For an ``http(s)://`` tracking server: raise :class:`SpecError` unless its ``/health``
    answers within :data:`REACH_TIMEOUT_S` seconds (other stores are files)."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=REACH_TIMEOUT_S)
    except (OSError, urllib.error.URLError) as exc:
        raise SpecError(f"tracking.mlflow_uri: {uri!r} did not answer within {REACH_TIMEOUT_S:g} s ({exc}); allowed: "
                        "the URL of a running MLflow server, or no --mlflow-uri (a SQLite store in the results "
                        "folder)") from None


def status_of(reason: str) -> str:
    """MLflow run status of a trial that ended: FINISHED (completed, ASHA-stopped), KILLED
    (interrupted: ``resume`` reopens it) or FAILED."""
    return {COMPLETED: "FINISHED", ASHA_STOPPED: "FINISHED", INTERRUPTED: "KILLED"}.get(reason, "FAILED")


def run_name(row: dict) -> str:
    """The MLflow run name of a trial (``row``: its trials.csv row): the trial name, and once it
    ended, how: ``ep_1a2b · 8/8`` (completed: epochs run / budget), ``ep_1a2b · ASHA 2/8``
    (stopped by ASHA after 2 of 8 epochs), ``ep_1a2b · diverged``; short enough for the UI's
    name column, so that the run list tells ASHA-stopped trials from completed ones (both
    FINISHED)."""
    reason, name = row["stop_reason"], row["trial_name"]
    if reason in (RUNNING, INTERRUPTED):  # resume continues it under its own name
        return name
    budget = f"{row['epochs_run']}/{row['max_epochs']}"
    return f"{name} · " + {COMPLETED: budget, ASHA_STOPPED: f"ASHA {budget}"}.get(reason, reason)


class Tracker:
    """The MLflow side of one search, as a recorder that never stops the search.

    Every call goes through :meth:`_call`: when MLflow fails (a server down), the tracker says
    so once through ``notify``, goes offline and skips its calls, trying again every
    :data:`RETRY_S` seconds; ``missed`` then tells the driver to :meth:`sync` from the
    durable files (trials.csv and each trial's metrics.csv) once MLflow answers again.
    """

    def __init__(self, uri: str, experiment: str, parent_run_id: str | None = None,
                 notify: Callable[[str], None] = print, artifacts: Path | None = None):
        import mlflow
        from mlflow.tracking import MlflowClient

        quiet()
        self.uri, self.experiment, self.notify, self.artifacts = uri, experiment, notify, artifacts
        seed_sqlite_store(uri)
        self.client = MlflowClient(uri)
        self.parent = parent_run_id
        self.runs: dict[str, str] = {}
        self._mlflow = mlflow
        self.online, self.missed, self._last_try = True, False, 0.0
        self.experiment_id = None
        self._call("open the experiment", self._open_experiment)

    def _open_experiment(self) -> None:
        exp = self.client.get_experiment_by_name(self.experiment)
        # a new experiment in a local store keeps its artifacts in the results folder (``artifacts``)
        self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(
            self.experiment, artifact_location=self.artifacts.resolve().as_uri() if self.artifacts else None)
        # model training, not GenAI: the MLflow UI opens the experiment on its runs
        self.client.set_experiment_tag(self.experiment_id, "mlflow.experimentKind", "custom_model_development")

    # ------------------------------------------------------------------ resilience
    def _call(self, what: str, fn: Callable, *args, default=None, **kwargs):
        """``fn(*args)``, or ``default`` when MLflow is (or just went) unreachable."""
        if not self.online:
            if time.monotonic() - self._last_try < RETRY_S:
                self.missed = True
                return default
            self._last_try = time.monotonic()
            try:
                if self.experiment_id is None:
                    self._open_experiment()
                else:
                    self.client.get_experiment(self.experiment_id)
            except Exception:  # noqa: BLE001 - still down, whatever the transport says
                self.missed = True
                return default
            self.online = True
            self.notify(f"MLflow at {self.uri} is back: logging what it missed")
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - MLflow is a recorder: its failures must not stop training
            self.online, self.missed, self._last_try = False, True, time.monotonic()
            self.notify(f"MLflow at {self.uri} failed to {what} ({type(exc).__name__}: {str(exc)[:200]}); "
                        "the search goes on, trials.csv and Tune keep every result, and what MLflow misses is "
                        "logged once it is back (before the search ends, or at `eqsearch resume`)")
            return default

    def retry_now(self) -> None:
        """Let the next call try MLflow again, however recently it failed."""
        self._last_try = 0.0

    # ------------------------------------------------------------------ the search
    def start_search(self, name: str, settings: dict, space_file: Path) -> str:
        """Create the parent run (in the driver, before any trial)."""
        run = self.client.create_run(self.experiment_id, run_name=name, tags={"eqsearch.search": name})
        self.parent = run.info.run_id
        self.client.log_batch(self.parent, params=_params({k: v for k, v in settings.items()}))
        self.client.log_artifact(self.parent, str(space_file))
        return self.parent

    def reopen(self) -> None:
        """After a resume: mark the parent running again and map trials to their runs."""
        self._call("reopen the search", self._reopen)

    def _reopen(self) -> None:
        self.client.update_run(self.parent, status="RUNNING")
        self.runs.update(self._trial_runs())

    def _trial_runs(self) -> dict[str, str]:
        runs = self.client.search_runs([self.experiment_id], f"tags.mlflow.parentRunId = '{self.parent}'",
                                       max_results=10000)
        return {r.data.tags[TRIAL_TAG]: r.info.run_id for r in runs if r.data.tags.get(TRIAL_TAG)}

    def trial_run(self, trial_id: str, trial_name: str, params: dict) -> str:
        """The trial's nested run, created on first use (``params``: the flat run config, or the
        sampled parameters of a trial whose run config is invalid); "" while MLflow is down."""
        return self._call("open a trial's run", self._trial_run, trial_id, trial_name, params, default="")

    def _trial_run(self, trial_id: str, trial_name: str, params: dict) -> str:
        if trial_id in self.runs:
            run_id = self.runs[trial_id]
            if self.client.get_run(run_id).info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING", name=trial_name)
            return run_id
        run = self.client.create_run(self.experiment_id, run_name=trial_name,
                                     tags={"mlflow.parentRunId": self.parent, TRIAL_TAG: trial_id,
                                           TRIAL_NAME_TAG: trial_name, STOP_TAG: RUNNING})
        run_id = run.info.run_id
        self.client.log_batch(run_id, params=_params(params))
        self.runs[trial_id] = run_id
        return run_id

    def log_epoch(self, run_id: str, metrics: dict) -> None:
        if not run_id:  # opened while MLflow was down: sync() logs it
            self.missed = True
            return
        self._call("log an epoch", self._log_epochs, run_id, [metrics])

    def _log_epochs(self, run_id: str, history: list[dict]) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)  # when the driver learned of the epoch (MLflow wants ms since 1970)
        batch = [Metric(k, float(v), ts, int(m["epoch"])) for m in history for k, v in m.items() if _is_number(v)]
        for i in range(0, len(batch), 900):  # MLflow's batch limit is 1000 metrics
            self.client.log_batch(run_id, metrics=batch[i:i + 900])

    def end_trial(self, row: dict, cfg: RunConfig | None, history: list[dict]) -> None:
        """Tags, name (:func:`run_name`), artifacts and status (:func:`status_of`) of the trial of
        ``row`` (its trials.csv row) that ended; ``cfg``: None for an invalid one."""
        if not row["mlflow_run_id"]:
            self.missed = True
            return
        self._call("end a trial's run", self._end_trial, row, cfg, history)

    def _end_trial(self, row: dict, cfg: RunConfig | None, history: list[dict]) -> None:
        run_id, reason = row["mlflow_run_id"], row["stop_reason"]
        self._tag_end(run_id, row)
        if reason != INTERRUPTED and cfg is not None:
            with tempfile.TemporaryDirectory() as tmp:
                cfg.to_yaml(Path(tmp) / "config.yaml")
                self.client.log_artifact(run_id, str(Path(tmp) / "config.yaml"))
                if any(GDU_METRICS[0] in m for m in history):
                    plot_gdu_history(history, Path(tmp) / "gdu.png")
                    self.client.log_artifact(run_id, str(Path(tmp) / "gdu.png"))
        self.client.set_terminated(run_id, status_of(reason))

    def _tag_end(self, run_id: str, row: dict) -> None:
        self.client.set_tag(run_id, STOP_TAG, row["stop_reason"])
        self.client.set_tag(run_id, REASON_TAG, row["reason"])
        self.client.update_run(run_id, name=run_name(row))

    def discard(self, run_id: str) -> None:
        """Delete the run of a trial that is not part of the search (lost in a kill, re-run)."""
        if run_id:
            self._call("delete a lost trial's run", self.client.delete_run, run_id)

    def prune(self, trial_ids: set[str]) -> None:
        """Delete the trial runs of this search whose trial is not in ``trial_ids`` (one killed
        after MLflow opened its run but before trials.csv recorded it, then re-proposed)."""
        self._call("delete lost trials' runs", self._prune, trial_ids)

    def _prune(self, trial_ids: set[str]) -> None:
        for tid, run_id in self._trial_runs().items():
            if tid not in trial_ids:
                self.client.delete_run(run_id)
                self.runs.pop(tid, None)

    def sync(self, rows: list[dict], history_of: Callable[[dict], list[dict]]) -> bool:
        """Bring MLflow in step with the durable records after an outage: every trial of ``rows``
        (trials.csv) gets its run (created if it started while MLflow was down; its id written
        into the row), the epochs of ``history_of(row)`` MLflow lacks, and its stop reason and
        status. Returns whether MLflow took it all (else it stays ``missed``)."""
        if not self.missed:
            return True
        self.missed = False
        done = self._call("catch up", self._sync, rows, history_of, default=False)
        return bool(done)

    def _sync(self, rows: list[dict], history_of: Callable[[dict], list[dict]]) -> bool:
        known = self._trial_runs()
        created = epochs = 0
        for row in rows:
            tid = row["trial_id"]
            run_id = row.get("mlflow_run_id") or known.get(tid)
            if not run_id:
                params = {k[len("config."):]: v for k, v in row.items() if k.startswith("config.")}
                run_id = self._trial_run(tid, row["trial_name"], params)
                created += 1
            row["mlflow_run_id"] = self.runs[tid] = run_id
            logged = self.client.get_metric_history(run_id, "epoch")
            last = max((int(m.step) for m in logged), default=0)
            missing = [m for m in history_of(row) if int(m["epoch"]) > last]
            self._log_epochs(run_id, missing)
            epochs += len(missing)
            if row["stop_reason"] != RUNNING:
                self._tag_end(run_id, row)
                if self.client.get_run(run_id).info.status != status_of(row["stop_reason"]):
                    self.client.set_terminated(run_id, status_of(row["stop_reason"]))
        if created or epochs:
            self.notify(f"MLflow caught up from trials.csv and the trial folders: {created} trial run(s) created, "
                        f"{epochs} epoch(s) logged")
        return True

    def end_search(self, rows: list[dict], best: dict | None, metric: str, best_yaml: Path | None, trials_csv: Path,
                   interrupted: bool) -> None:
        """The parent run's summary: the best trial (tag) and its ``best_<metric>``, the number of
        trials per stop reason (``trials_<reason>``), artifacts; status KILLED when the search was
        interrupted."""
        self._call("end the search", self._end_search, rows, best, metric, best_yaml, trials_csv, interrupted)

    def _end_search(self, rows: list[dict], best: dict | None, metric: str, best_yaml: Path | None, trials_csv: Path,
                    interrupted: bool) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["stop_reason"]] = counts.get(r["stop_reason"], 0) + 1
        summary = [Metric(f"trials_{k}", float(n), ts, 0) for k, n in sorted(counts.items())]
        if best is not None:
            self.client.set_tag(self.parent, "eqsearch.best_trial", best["trial_id"])
            summary.append(Metric(f"best_{metric}", float(best[metric]), ts, 0))
        self.client.log_batch(self.parent, metrics=summary)
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
    """MLflow params of a flat config; a list field is logged whole (``optim.lrs``) and per element
    (``optim.lrs.0``, ...), so that the UI can sort and plot each element."""
    from mlflow.entities import Param

    out = []
    for k, v in d.items():
        out.append(Param(k, str(v)[:6000]))
        if isinstance(v, list):
            out += [Param(f"{k}.{i}", str(x)) for i, x in enumerate(v)]
    return out
