"""The search driver: builds and runs the Tuner from a :class:`SearchSpec`, resumes it, and owns
every Ray / Optuna call of the project (MLflow calls are in :mod:`eqsearch.search.tracking`).

Pieces: Optuna proposes configurations (define-by-run space, seeded TPE or random sampler, study stored in
``optuna.db``); ASHA stops poor trials on ``epoch`` (max_t = ``train.epochs``); trials that ASHA
stopped are told to Optuna as PRUNED, not COMPLETE with their truncated score
(:class:`PruneAwareOptunaSearch`); :class:`SearchRecorder` keeps ``trials.csv``, MLflow and the
console up to date from the driver. Ray runs locally by default (``address="local"``), with the
dashboard on 127.0.0.1; ``address`` joins a cluster.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

for _k, _v in {"RAY_AUTH_MODE": "disabled", "RAY_AIR_NEW_OUTPUT": "0", "RAY_DEDUP_LOGS": "1",
               "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
               "TUNE_WARN_INSUFFICENT_RESOURCE_THRESHOLD_S": "600",
               "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0", "TUNE_PRINT_ALL_TRIAL_ERRORS": "0",
               "TUNE_GLOBAL_CHECKPOINT_S": "2",  # save experiment state often: less to redo after a kill
               # Tune's own loggers are added explicitly (JSON, CSV): its TensorBoard one prints
               # "NaN or Inf found in input tensor." for every diverged trial's metrics
               "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
               "RAY_USAGE_STATS_ENABLED": "0"}.items():
    os.environ.setdefault(_k, _v)

import optuna  # noqa: E402
import ray  # noqa: E402
from optuna.trial import TrialState  # noqa: E402
from ray._private import ray_constants  # noqa: E402  (the name of the autoscaler monitor's process)
from ray import tune  # noqa: E402
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback  # noqa: E402
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler  # noqa: E402
from ray.tune.search import ConcurrencyLimiter, SearchGenerator  # noqa: E402
from ray.tune.search.optuna import OptunaSearch  # noqa: E402

from eqsearch.config import RunConfig  # noqa: E402
from eqsearch.errors import ConfigError  # noqa: E402
from eqsearch.search import reaper  # noqa: E402
from eqsearch.search import results as R  # noqa: E402
from eqsearch.search.console import SearchConsole  # noqa: E402
from eqsearch.search.datacheck import DataCheck  # noqa: E402
from eqsearch.errors import SpecError  # noqa: E402
from eqsearch.search.space import SearchSpec, load_spec  # noqa: E402
from eqsearch.search.tracking import REACH_TIMEOUT_S, Tracker, check_reachable, folder_store  # noqa: E402
from eqsearch.run_folder import LATEST, METRICS_FILE, read_metrics, write_metrics  # noqa: E402
from trainables import BASE_KEY, get_trainable  # noqa: E402

EPOCH_KEYS = set(R.METRIC_COLUMNS)
TUNE_ATTR, MLFLOW_ATTR, INTERRUPTED_ATTR = "tune_trial_id", "mlflow_run_id", "eqsearch.interrupted_at_epoch"


def quiet() -> None:
    """Silence library warnings and chatter that tell the user nothing."""
    for cat in (DeprecationWarning, FutureWarning, PendingDeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=cat, module=r"(ray|mlflow|optuna|sqlalchemy|alembic|pydantic)")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("ray", "ray.tune", "ray.train", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # "Trials did not complete: [...]": the console and trials.csv give each trial's reason
    logging.getLogger("ray.tune.tune").setLevel(logging.CRITICAL)


# ---------------------------------------------------------------------- Optuna
def _study_url(results: Path) -> str:
    return f"sqlite:///{(Path(results) / R.OPTUNA_DB).resolve()}"


class FolderStudyStorage(optuna.storages.RDBStorage):
    """The Optuna study's database in a results folder (``optuna.db``). Unpickled from the
    search state Tune saved, it stays closed (the path it names is where the folder was then)
    until :meth:`open_in` opens it where the folder is now."""

    def __init__(self, results: Path):
        super().__init__(_study_url(results))

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def open_in(self, results: Path) -> None:
        self.url = _study_url(results)
        super().__setstate__(dict(self.__dict__))  # RDBStorage's: a new engine on that database


class PruneAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that tells a trial stopped before ``max_epochs`` as PRUNED and an errored
    trial as FAIL (Ray's tells both as COMPLETE with the last reported value)."""

    def __init__(self, *args, max_epochs: int, results: Path, **kwargs):
        super().__init__(*args, storage=FolderStudyStorage(results), **kwargs)
        self._max_epochs = max_epochs
        self._results = Path(results)  # where the study's database is (:meth:`relocate`)
        self._last_epoch: dict[str, int] = {}  # last epoch reported to Optuna, per trial

    def relocate(self, results: Path) -> None:
        """Open the study in ``results``, where the folder is now (a resume), now and at every
        :meth:`restore`."""
        self._results = Path(results)
        self._open_study()

    def restore(self, checkpoint_path: str) -> None:
        """Ray's restore (the searcher state Tune saved), with the study opened in the results
        folder where it is now."""
        results = self._results
        super().restore(checkpoint_path)
        self._results = results
        self._open_study()

    def _open_study(self) -> None:
        backend = getattr(self._ot_study._storage, "_backend", self._ot_study._storage)  # shared by every trial
        for storage in {id(s): s for s in (self._storage, backend)}.values():
            storage.open_in(self._results)

    def suggest(self, trial_id: str) -> dict | None:
        """Optuna's next configuration. An Optuna trial left RUNNING by a kill after the searcher's
        state was last saved (the restored searcher does not know it) is taken up again, with
        its parameters, instead of asking a new one: the study keeps one trial per Tune trial."""
        if trial_id not in self._ot_trials:
            known = {t.number for t in self._ot_trials.values()}
            orphans = [t for t in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                       if t.number not in known]
            if orphans:
                self._ot_trials[trial_id] = optuna.trial.Trial(self._ot_study, orphans[0]._trial_id)
        params = super().suggest(trial_id)
        self._ot_trials[trial_id].set_user_attr(TUNE_ATTR, trial_id)
        return params

    def _told_before_kill(self, trial_id: str) -> bool:
        """Finished in the study after the searcher state was last saved (a resume re-runs it)."""
        number = self._ot_trials[trial_id].number
        return self._ot_study.get_trials(deepcopy=False)[number].state.is_finished()

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Record the epoch's value as the Optuna trial's intermediate value (step = epoch)."""
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        epoch, value = int(result["epoch"]), result.get(self.metric)
        if self._told_before_kill(trial_id):
            return
        if value is not None and epoch > self._last_epoch.get(trial_id, 0):
            self._ot_trials[trial_id].report(value, epoch)
            self._last_epoch[trial_id] = epoch

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        if result and "epoch" in result:  # Tune skips on_trial_result for the result that stopped the trial
            self.on_trial_result(trial_id, result)
        value = result.get(self.metric) if result else None
        if error:
            state, value = TrialState.FAIL, None
        elif value is None or int(result.get("epoch", 0)) < self._max_epochs:
            state, value = TrialState.PRUNED, None
        else:
            state = TrialState.COMPLETE
        ot_trial = self._ot_trials[trial_id]
        if self._told_before_kill(trial_id):
            self._completed_trials.add(trial_id)
            return
        try:
            self._ot_study.tell(ot_trial, value, state=state)
        except ValueError as exc:  # e.g. a non-finite value
            self._ot_study.tell(ot_trial, None, state=TrialState.FAIL)
            logging.getLogger(__name__).warning("optuna: trial %s told as FAIL (%s)", trial_id, exc)
        self._completed_trials.add(trial_id)


class FolderSearchGenerator(SearchGenerator):
    """Tune's trial generator, except that the experiment it restores (Tune's saved state names
    the storage path the results folder had then) creates its new trials where the folder is
    now (:meth:`relocate`); Tune itself moves only the trials it restores."""

    _storage_path: str | None = None

    def relocate(self, storage_path: Path) -> None:
        """``storage_path``: the folder holding the Tune experiment now (``RESULTS/tune``)."""
        self._storage_path = Path(storage_path).as_posix()

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        if self._storage_path and self._experiment is not None:
            self._experiment.storage.storage_fs_path = self._storage_path  # the spec holds the same object


def load_study(results: Path, name: str) -> optuna.Study:
    """The Optuna study of a search (trial states, parameters, values)."""
    return optuna.load_study(study_name=name, storage=_study_url(results))


# ---------------------------------------------------------------------- recording
class SearchRecorder(tune.Callback):
    """Keeps trials.csv, MLflow and the console in step with the trials (in the driver).

    Pickled into Tune's experiment state; runtime state is rebuilt in :meth:`setup`, so a
    resumed search continues the same files and MLflow runs.
    """

    def __init__(self, spec: SearchSpec, results: Path, mlflow_uri: str, parent_run_id: str, show: bool):
        self.spec, self.results, self.uri, self.parent, self.show = spec, Path(results), mlflow_uri, parent_run_id, show
        self.resumed = False
        self._init_runtime()

    def _init_runtime(self) -> None:
        self.interrupted: str | None = None  # the signal that stopped this driver session (:class:`Interrupts`)
        self.configs: dict[str, RunConfig] = {}  # trial id -> its run config, built once
        self.invalid: dict[str, str] = {}  # trial id -> why its sampled parameters make no run config
        self.rows: dict[str, dict] = {}
        self.final: set[str] = set()
        self.history: dict[str, list[dict]] = {}
        self.opened: set[str] = set()  # trials whose MLflow run this driver session has opened
        self.tracker: Tracker | None = None
        self.console: SearchConsole | None = None
        self.study: optuna.Study | None = None

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k in ("spec", "results", "uri", "parent", "show")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.resumed = True
        self._init_runtime()

    def setup(self, **info) -> None:
        self.rows = {r["trial_id"]: r for r in R.read_trials(self.results)}
        # finished before a kill but after Tune last saved its state: Tune re-runs them; keep our record
        self.final = {t for t, r in self.rows.items() if r["stop_reason"] not in (R.RUNNING, R.INTERRUPTED)}
        self.study = load_study(self.results, self.spec.name)
        s = self.spec.search
        self.console = SearchConsole(self.spec.name, s["metric"], s["mode"], s["num_samples"], self.spec.max_epochs,
                                     s["max_concurrent"], enabled=self.show, asha=self.spec.asha)
        self.tracker = Tracker(self.uri, self.spec.tracking["experiment"], self.parent, notify=self.console.note)
        if self.resumed:
            self.tracker.reopen()
            self.tracker.missed = True  # an outage before the kill or interrupt: catch up at the end
        self.console.start()

    # ------------------------------------------------------------------ Tune hooks
    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        if trial.trial_id in self.final:
            return
        self._row(trial)
        self._save()

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if trial.trial_id in self.final:
            return
        metrics = {k: v for k, v in result.items() if R.is_metric(k)}
        row = self._row(trial)
        row.update({k: v for k, v in metrics.items() if k in EPOCH_KEYS})
        row["epochs_run"] = int(metrics["epoch"])
        row["time_total_s"] = round(float(row.get("time_total_s") or 0) + float(metrics["epoch_seconds"]), 3)
        self.history.setdefault(trial.trial_id, []).append(metrics)
        self.tracker.log_epoch(row["mlflow_run_id"], metrics)
        self._catch_up()
        self._save()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._finish(trial, None)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        path = trial.error_file  # written in the driver just before this hook; storage may lag
        self._finish(trial, Path(path).read_text() if path and Path(path).exists() else "error (no error file)")

    def on_experiment_end(self, trials, **info) -> None:
        known = {t.trial_id for t in trials}
        # started after Tune's last saved state, then killed while it ran: Tune re-proposed it (its
        # Optuna trial was taken up again), so its partial record goes; one that had ended before
        # the kill is a finished trial of the search and stays (Tune ran another in its place)
        lost = [t for t, r in self.rows.items() if t not in known and t not in self.final]
        for trial_id in lost:
            row = self.rows.pop(trial_id)
            if row.get("mlflow_run_id"):
                self.tracker.discard(row["mlflow_run_id"])
            if row.get("trial_dir"):
                shutil.rmtree(R.trial_folder(self.results, row), ignore_errors=True)
        for trial in trials:  # ended before a kill, after the last row update: no hook ran on resume
            row = self.rows.get(trial.trial_id)
            if row and row["stop_reason"] == R.RUNNING and trial.status in ("TERMINATED", "ERROR"):
                if trial.last_result.get("epoch"):
                    row["epochs_run"] = int(trial.last_result["epoch"])
                if trial.status == "ERROR":
                    self.on_trial_error(0, trials, trial)
                elif self.interrupted and int(row["epochs_run"] or 0) < self.spec.max_epochs:
                    self._interrupt(trial)  # stopped by Tune's graceful shutdown, not by a decision
                else:
                    self._finish(trial, None)
        rows = list(self.rows.values())
        R.write_trials(self.results, rows)
        for row in rows:
            self._settle_curve(row)
        self.tracker.prune(set(self.rows))
        self._catch_up(last_chance=True)
        s = self.spec.search
        best = R.best_row(rows, s["metric"], s["mode"])
        best_yaml = None
        if best is not None:
            trial = next((t for t in trials if t.trial_id == best["trial_id"]), None)
            if trial is not None:
                best_yaml = self.results / R.BEST_FILE
                self._config(trial).to_yaml(best_yaml)
        self.tracker.end_search(rows, best, s["metric"], best_yaml, self.results / R.TRIALS_FILE,
                                interrupted=bool(self.interrupted))
        if self.tracker.missed:
            self.console.note(f"MLflow at {self.uri} is still unreachable: trials.csv and Tune hold every result; "
                              f"`eqsearch resume {self.results}` logs what MLflow missed once it is back")
        self.console.stop(rows)

    # ------------------------------------------------------------------ helpers
    def _config(self, trial) -> RunConfig | None:
        """The trial's run config (base + sampled parameters), built once per trial; None when the
        sampled values cannot coexist (the reason is kept in ``self.invalid``)."""
        tid = trial.trial_id
        if tid not in self.configs and tid not in self.invalid:
            try:
                self.configs[tid] = self.spec.run_config(trial.config)
            except ConfigError as exc:
                self.invalid[tid] = str(exc)
        return self.configs.get(tid)

    def _row(self, trial) -> dict:
        row = self.rows.get(trial.trial_id)
        if row is not None and trial.trial_id in self.opened:
            return row
        cfg = self._config(trial)
        flat = cfg.flat() if cfg is not None else {k: v for k, v in trial.config.items() if k != BASE_KEY}
        if row is None:
            row = {"trial_id": trial.trial_id, "trial_name": str(trial), "status": "RUNNING",
                   "stop_reason": R.RUNNING, "reason": "", "epochs_run": 0, "max_epochs": self.spec.max_epochs,
                   "time_total_s": 0.0, "trial_dir": self._relative(trial.path), **{f"config.{k}": v for k, v in flat.items()}}
            self.rows[trial.trial_id] = row
        if trial.trial_id not in self.opened:  # once per driver session (re-opened after a resume)
            row["mlflow_run_id"] = self.tracker.trial_run(trial.trial_id, str(trial), flat)
            if row["mlflow_run_id"]:  # "" while MLflow is down: _catch_up opens it later
                self._optuna_attr(trial.trial_id, MLFLOW_ATTR, row["mlflow_run_id"])
            self.opened.add(trial.trial_id)
        return row

    def _relative(self, path: str) -> str:
        """A trial folder as trials.csv stores it: relative to the results folder."""
        return Path(path).resolve().relative_to(self.results.resolve()).as_posix()

    def _catch_up(self, last_chance: bool = False) -> None:
        """After an MLflow outage, once it answers (or, with ``last_chance``, one more try at the
        end of the search): log what it missed from the durable records (:meth:`Tracker.sync`)."""
        if not self.tracker.missed or not (self.tracker.online or last_chance):
            return
        if last_chance:
            self.tracker.retry_now()
        if self.tracker.sync(list(self.rows.values()), self._recorded_curve):
            for row in self.rows.values():
                if row["stop_reason"] == R.RUNNING and row["mlflow_run_id"]:
                    self._optuna_attr(row["trial_id"], MLFLOW_ATTR, row["mlflow_run_id"])
            R.write_trials(self.results, list(self.rows.values()))

    def _settle_curve(self, row: dict) -> None:
        """Make the trial folder's metrics.csv hold exactly :meth:`_recorded_curve`."""
        folder = R.trial_folder(self.results, row)
        if folder is None or not folder.is_dir():
            return
        curve = self._recorded_curve(row)
        if [int(m["epoch"]) for m in read_metrics(folder)] != [int(m["epoch"]) for m in curve]:
            write_metrics(folder / METRICS_FILE, curve)

    def _recorded_curve(self, row: dict) -> list[dict]:
        """The epochs 1 .. ``epochs_run`` that ``row`` (trials.csv) says the trial ran, from its
        folder's metrics.csv, completed by its latest checkpoint and by what this driver received.

        Tune copies a trial's files to its folder only now and then, so after a kill the copy can
        lag behind the checkpoints (which Tune writes with each report, and which carry the
        curve). A trial that ended after Tune last saved its state, then was killed, is run on by
        Tune at the resume; its record stands (as in Optuna and MLflow) and the epochs of that
        re-run in its folder are not part of it."""
        ran = int(row["epochs_run"] or 0)
        folder = R.trial_folder(self.results, row)
        epochs = {int(m["epoch"]): m for m in read_metrics(folder)} if folder else {}
        if folder and any(e not in epochs for e in range(1, ran + 1)):
            saved = sorted(folder.glob("checkpoint_*/" + LATEST))
            if saved:
                import torch

                state = torch.load(saved[-1], map_location="cpu", weights_only=False)
                epochs.update({int(m["epoch"]): m for m in state.get("history", [])})
        epochs.update({int(m["epoch"]): m for m in self.history.get(row["trial_id"], [])})
        return [epochs[e] for e in sorted(epochs) if e <= ran]

    def _optuna_attr(self, trial_id: str, key: str, value) -> None:
        """Set a user attribute on the RUNNING Optuna trial of Tune trial ``trial_id``."""
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get(TUNE_ATTR) == trial_id:
                self.study._storage.set_trial_user_attr(t._trial_id, key, value)

    def _finish(self, trial, error_text: str | None) -> None:
        if trial.trial_id in self.final:
            return
        row = self._row(trial)
        if trial.trial_id in self.invalid:
            reason, detail = R.INVALID, self.invalid[trial.trial_id]
        else:
            reason, detail = R.stop_reason(int(row["epochs_run"] or 0), self.spec.max_epochs, error_text)
        row.update(status="ERROR" if error_text else "TERMINATED", stop_reason=reason, reason=detail)
        self.tracker.end_trial(row, self._config(trial), self.history.get(trial.trial_id, []))
        self._catch_up()
        self._save(finished=row)

    def _interrupt(self, trial) -> None:
        """A trial stopped by Ctrl-C / SIGTERM: ``interrupted`` in trials.csv and MLflow (run KILLED),
        its epoch in Optuna (still RUNNING there); ``resume`` continues it from its checkpoint."""
        row = self._row(trial)
        epochs = int(row["epochs_run"] or 0)
        detail = (f"interrupted ({self.interrupted}) after {epochs} of {self.spec.max_epochs} epochs; "
                  f"continue with: eqsearch resume {self.results}")
        row.update(status="INTERRUPTED", stop_reason=R.INTERRUPTED, reason=detail)
        self.tracker.end_trial(row, self._config(trial), [])
        self._optuna_attr(trial.trial_id, INTERRUPTED_ATTR, epochs)
        self._save(finished=row)

    def _save(self, finished: dict | None = None) -> None:
        rows = list(self.rows.values())
        R.write_trials(self.results, rows)
        self.console.update(rows, finished)


# ---------------------------------------------------------------------- interrupts
class Interrupts:
    """Ctrl-C (SIGINT) and SIGTERM end a search cleanly: the first one is recorded on the
    recorder and passed to Tune's graceful stop (its SIGUSR1 handler: running trials stop, the
    experiment state is saved, ``on_experiment_end`` records them as interrupted); a second one
    stops at once (KeyboardInterrupt). Tune's own SIGINT handler is switched off so that both
    signals take this path. Installed around ``fit()`` only, and only in the main thread."""

    def __init__(self, recorder: SearchRecorder, notify):
        self.recorder, self.notify = recorder, notify
        self.saved: dict[int, object] = {}

    def __enter__(self) -> "Interrupts":
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self.recorder.interrupted:
            raise KeyboardInterrupt
        name = signal.Signals(signum).name
        self.recorder.interrupted = name
        self.notify(f"{name}: stopping the running trials and saving the search state "
                    "(a second Ctrl-C stops at once)")
        tune_stop = signal.getsignal(signal.SIGUSR1)
        if not callable(tune_stop):  # fit() has not installed it yet
            raise KeyboardInterrupt
        tune_stop(signum, frame)


# ---------------------------------------------------------------------- Ray
@dataclass
class RaySession:
    started_here: bool
    dashboard_url: str | None
    watchdog: object = None  # the reaper of a local Ray started here (:mod:`eqsearch.search.reaper`)

    def end(self) -> None:
        """Shut down the Ray this driver started (and let its watchdog reap what lingers)."""
        if self.started_here:
            _kill_autoscaler_monitor()
            ray.shutdown()
            reaper.stop(self.watchdog)


def _kill_autoscaler_monitor() -> None:
    """End the autoscaler monitor of a Ray started here before ``ray.shutdown()`` does. Shutdown
    stops the GCS first and then sends the monitor SIGTERM, whose handler reports to the stopped
    GCS until shutdown's 1 s grace runs out and it is killed anyway: 1.0 s of every search's end,
    measured. A local Ray has nothing to autoscale, so SIGKILL loses nothing. (Ray keeps its
    processes in a private attribute; without it, shutdown goes on as before.)"""
    node = getattr(ray._private.worker, "_global_node", None)
    for info in getattr(node, "all_processes", {}).get(ray_constants.PROCESS_TYPE_MONITOR, []):
        if info.process.poll() is None:
            info.process.kill()
            try:
                info.process.wait(timeout=5)
            except subprocess.TimeoutExpired:  # stuck in the kernel: shutdown's own wait reports it
                pass


def start_ray(address: str | None, dashboard: bool, num_cpus: int | None = None) -> RaySession:
    """Join ``address`` or start a private local Ray (reusing one already initialized here),
    watched by a reaper that ends its processes if this driver dies."""
    if ray.is_initialized():
        return RaySession(False, None)
    common = {"log_to_driver": False, "logging_level": logging.ERROR, "configure_logging": True}
    if address:
        ctx = ray.init(address=address, **common)
        watchdog = None
    else:
        watchdog = reaper.start()
        ctx = ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard,
                       dashboard_host="127.0.0.1", **common)
    url = ctx.dashboard_url
    return RaySession(True, f"http://{url}" if url and not url.startswith("http") else url, watchdog)


def check_resources(spec: SearchSpec) -> None:
    """Fail clearly when no node can run one trial (Ray would leave it PENDING forever)."""
    have = ray.cluster_resources()
    cpu, gpu = spec.resources["cpu"], spec.resources["gpu"]
    if gpu > have.get("GPU", 0):
        raise SpecError(f"{spec.source}: resources.gpu: got {gpu:g}; allowed: <= {have.get('GPU', 0):g} "
                        f"(GPUs of this Ray cluster: {have.get('GPU', 0):g}; use --gpus-per-trial 0 on a CPU machine)")
    if cpu > have.get("CPU", 0):
        raise SpecError(f"{spec.source}: resources.cpu: got {cpu:g}; allowed: <= {have.get('CPU', 0):g} "
                        "(CPUs of this Ray cluster)")


def trial_dirname(trial) -> str:
    """Short trial folder names (Tune's default spells out the whole config)."""
    return str(trial)


def _trainable(spec: SearchSpec):
    return tune.with_resources(get_trainable(spec.trainable),
                               {"cpu": spec.resources["cpu"], "gpu": spec.resources["gpu"]})


def _tuner(spec: SearchSpec, results: Path, recorder: SearchRecorder) -> tune.Tuner:
    s = spec.search
    sampler = (optuna.samplers.RandomSampler if s["sampler"] == "random" else optuna.samplers.TPESampler)(seed=s["seed"])
    searcher = PruneAwareOptunaSearch(
        space=spec.define_by_run(), metric=s["metric"], mode=s["mode"], sampler=sampler, study_name=spec.name,
        results=results, max_epochs=spec.max_epochs)
    if spec.asha:
        scheduler = ASHAScheduler(time_attr="epoch", max_t=spec.max_epochs, grace_period=spec.asha["grace_period"],
                                  reduction_factor=spec.asha["reduction_factor"])
    else:
        scheduler = FIFOScheduler()
    return tune.Tuner(
        _trainable(spec),
        param_space={BASE_KEY: spec.base},
        tune_config=tune.TuneConfig(search_alg=FolderSearchGenerator(ConcurrencyLimiter(searcher, s["max_concurrent"])),
                                    scheduler=scheduler, num_samples=s["num_samples"], metric=s["metric"], mode=s["mode"],
                                    reuse_actors=True, trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(name=spec.name, storage_path=str((results / R.TUNE_DIR).resolve()), verbose=0,
                                  callbacks=[recorder, JsonLoggerCallback(), CSVLoggerCallback()],
                                  # a reused actor's trial folder is its working directory, which
                                  # Tune copies to storage only with sync_artifacts
                                  sync_config=tune.SyncConfig(sync_artifacts=True),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=None),  # all: after a kill the saved state may name an old one
                                  failure_config=tune.FailureConfig(max_failures=0)))


# ---------------------------------------------------------------------- entry points
@dataclass
class SearchOutcome:
    results: Path
    rows: list[dict]
    best: dict | None
    mlflow_uri: str
    tune_path: Path
    interrupted: str | None = None  # the signal that stopped the search (SIGINT, SIGTERM)


def run_search(spec: SearchSpec, results: Path, *, address: str | None = None, dashboard: bool = True,
               show: bool = True, num_cpus: int | None = None, notify=print) -> SearchOutcome:
    """Run a new search into the folder ``results`` (see :mod:`eqsearch.search.results`).

    Everything that can be checked before Ray starts is (the tracking server, the cluster's
    address, this machine's CPUs for a local Ray); the data sets load in a child process while
    Ray starts, and the cluster's CPUs and GPUs are checked once it is up, all before the first
    trial. A search that fails before its first trial leaves no results folder behind."""
    quiet()
    results = Path(results).resolve()
    if (results / R.STATE_FILE).exists():
        raise SpecError(f"{results}: already holds a search; allowed: a new --results folder, "
                        f"or `eqsearch resume {results}`")
    check_reachable(spec.tracking["mlflow_uri"] or "")
    preflight(spec, address, num_cpus)
    data_check = DataCheck(spec)  # loads the data sets while Ray starts
    created = not results.exists()
    results.mkdir(parents=True, exist_ok=True)
    started = False
    uri = spec.tracking["mlflow_uri"] or R.local_store_uri(results)
    artifacts = None if spec.tracking["mlflow_uri"] else results / R.ARTIFACTS_DIR
    ray_session = RaySession(False, None)
    try:
        with ThreadPoolExecutor(1) as pool:  # a new SQLite store migrates for seconds: overlap it with ray.init
            opening = pool.submit(Tracker, uri, spec.tracking["experiment"], artifacts=artifacts)
            ray_session = start_ray(address, dashboard, num_cpus)
            tracker = opening.result()
        quiet()  # again: ray.init configures its loggers
        data_check.result()
        check_resources(spec)
        spec.to_yaml(results / R.SPACE_FILE)
        parent = tracker.start_search(spec.name, {**spec.search, **spec.resources, "trainable": spec.trainable},
                                      results / R.SPACE_FILE)
        state = {"name": spec.name, "mlflow_uri": spec.tracking["mlflow_uri"], "experiment": spec.tracking["experiment"],
                 "parent_run_id": parent, "tune_path": f"{R.TUNE_DIR}/{spec.name}"}  # paths relative to the folder
        R.write_state(results, state)
        tune_path = R.tune_path(results, state)
        started = True
        _announce(ray_session, uri, results, notify)
        recorder = SearchRecorder(spec, results, uri, parent, show)
        with Interrupts(recorder, notify):
            _tuner(spec, results, recorder).fit()
    finally:
        data_check.close()
        ray_session.end()
        if not started and created:
            shutil.rmtree(results, ignore_errors=True)
    return _outcome(spec, results, uri, tune_path, recorder.interrupted)


def preflight(spec: SearchSpec, address: str | None, num_cpus: int | None) -> None:
    """Checks that need neither Ray nor the trials' libraries: a cluster ``address`` (host:port)
    answers within seconds; a local Ray has the CPUs one trial asks for (the cluster's own CPUs
    and GPUs, and a local Ray's GPUs, are checked once it is up, :func:`check_resources`; the data
    sets by :class:`~eqsearch.search.datacheck.DataCheck`, meanwhile)."""
    if address and address not in ("auto", "local") and not address.startswith("ray://"):
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=REACH_TIMEOUT_S).close()
        except (OSError, ValueError) as exc:
            raise SpecError(f"--address: {address!r} did not answer within {REACH_TIMEOUT_S:g} s ({exc}); allowed: "
                            "HOST:PORT of a running Ray head node (ray start --head), auto, or none for a "
                            "local Ray") from None
    if address:
        return
    cpus = num_cpus or os.cpu_count() or 1
    if spec.resources["cpu"] > cpus:
        raise SpecError(f"{spec.source}: resources.cpu: got {spec.resources['cpu']:g}; allowed: <= {cpus} "
                        "(the CPUs of this machine, where the local Ray runs)")


def resume_search(results: Path, *, address: str | None = None, dashboard: bool = True, show: bool = True,
                  num_cpus: int | None = None, notify=print) -> SearchOutcome:
    """Continue an interrupted search: finished trials are kept, unfinished ones continue from
    their checkpoints, and the searcher (Optuna study) continues where it was."""
    quiet()
    results = Path(results).resolve()
    state = R.read_state(results)
    spec = load_spec(results / R.SPACE_FILE)
    tune_path = R.tune_path(results, state)
    uri = folder_store(results, state)
    if not tune.Tuner.can_restore(str(tune_path)):
        raise SpecError(f"{results}: the Tune experiment {tune_path} has no saved state yet; "
                        "allowed: a search that ran at least until its first trial started")
    data_check = DataCheck(spec)
    ray_session = RaySession(False, None)
    try:
        ray_session = start_ray(address, dashboard, num_cpus)
        quiet()
        data_check.result()
        check_resources(spec)
        _announce(ray_session, uri, results, notify)
        # the param space comes from Tune's saved state: the base as the search started, even if
        # this eqsearch has config fields more (their defaults fill in)
        tuner = tune.Tuner.restore(str(tune_path), trainable=_trainable(spec), resume_unfinished=True,
                                   resume_errored=False, restart_errored=False)
        recorder = next(c for c in tuner._local_tuner.get_run_config().callbacks if isinstance(c, SearchRecorder))
        recorder.results, recorder.uri = results, uri  # the folder may have moved since the state was saved
        generator = tuner._local_tuner._tune_config.search_alg
        generator.relocate(tune_path.parent)
        generator.searcher.searcher.relocate(results)  # through the ConcurrencyLimiter
        with Interrupts(recorder, notify):
            tuner.fit()
    finally:
        data_check.close()
        ray_session.end()
    return _outcome(spec, results, uri, tune_path, recorder.interrupted)


def _announce(ray_session: RaySession, uri: str, results: Path, notify) -> None:
    if ray_session.dashboard_url:
        notify(f"Ray dashboard: {ray_session.dashboard_url}")
    notify(f"MLflow: {uri}  (UI: eqsearch mlflow-ui {results})")


def _outcome(spec: SearchSpec, results: Path, uri: str, tune_path: Path, interrupted: str | None) -> SearchOutcome:
    rows = R.read_trials(results)
    return SearchOutcome(results, rows, R.best_row(rows, spec.search["metric"], spec.search["mode"]), uri, tune_path,
                         interrupted)
