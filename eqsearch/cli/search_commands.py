"""Search commands: ``search``, ``resume``, ``status``, ``mlflow-ui`` and ``optuna-dashboard``.

Spaces are validated before Ray starts (the driver module, which imports Ray, loads after).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click
import yaml

from eqsearch.cli import main
from eqsearch.config import parse_assignment
from eqsearch.errors import ConfigError
from eqsearch.search import results as R
from eqsearch.search.space import SearchSpec, load_spec

# CLI option -> search setting (dotted key of the space file)
SETTING_OPTIONS = {
    "num_samples": "search.num_samples", "max_concurrent": "search.max_concurrent", "seed": "search.seed",
    "metric": "search.metric", "mode": "search.mode", "cpus_per_trial": "resources.cpu",
    "gpus_per_trial": "resources.gpu", "grace_period": "scheduler.grace_period",
    "reduction_factor": "scheduler.reduction_factor", "mlflow_uri": "tracking.mlflow_uri",
    "experiment": "tracking.experiment",
}


def fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def default_results(spec: SearchSpec) -> Path:
    return Path("results") / f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def launch(spec: SearchSpec, results: Path, address: str | None, dashboard: bool, quiet: bool):
    """Run a search with the CLI's output; returns the :class:`SearchOutcome`."""
    from eqsearch.search.driver import run_search  # imports Ray

    click.echo(f"search {spec.name}: {spec.search['num_samples']} trials, {spec.search['max_concurrent']} at a time, "
               f"{spec.resources['cpu']:g} CPU / {spec.resources['gpu']:g} GPU each, up to {spec.max_epochs} epochs "
               f"(ASHA: {'on' if spec.asha else 'off'}); results in {results}", err=True)
    try:
        outcome = run_search(spec, results, address=address, dashboard=dashboard, show=not quiet,
                             notify=lambda m: click.echo(m, err=True))
    except ConfigError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        click.echo("\ninterrupted before the search's state could be saved", err=True)
        sys.exit(130)
    report(outcome, spec)
    return outcome


EXIT_STATUS = {"SIGINT": 130, "SIGTERM": 143}  # 128 + signal number, as a shell reports it


def report(outcome, spec: SearchSpec) -> None:
    """Print the best trial, its config and where the results are; then exit non-zero when the
    search was interrupted (with the resume command) or every trial failed."""
    _summary(outcome, spec)
    if outcome.interrupted:
        n = sum(r["stop_reason"] == R.INTERRUPTED for r in outcome.rows)
        click.echo(f"\n{outcome.interrupted}: the search stopped with {n} trial(s) interrupted; continue it with:\n"
                   f"  eqsearch resume {outcome.results}", err=True)
        sys.exit(EXIT_STATUS.get(outcome.interrupted, 1))
    if outcome.rows and all(r["stop_reason"] in R.FAILED for r in outcome.rows):
        click.echo(f"\nerror: every trial failed (reasons in {outcome.results / R.TRIALS_FILE})", err=True)
        sys.exit(1)


def _summary(outcome, spec: SearchSpec) -> None:
    counts: dict[str, int] = {}
    for r in outcome.rows:
        counts[r["stop_reason"]] = counts.get(r["stop_reason"], 0) + 1
    click.echo(f"\n{len(outcome.rows)} trials: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    best = outcome.best
    metric = spec.search["metric"]
    if best is None:
        click.echo("no trial reported a usable result")
    else:
        click.echo(f"best trial {best['trial_name']}: {metric} {float(best[metric]):.4f} after {best['epochs_run']} epochs")
        params = {p.key: searched_value(best, p) for p in spec.params}
        click.echo("searched values of the best trial:\n" + "".join(f"  {k}: {v}\n" for k, v in params.items()))
        best_yaml = outcome.results / R.BEST_FILE
        if best_yaml.exists():
            click.echo(f"best run config: {best_yaml}  (rerun: eqsearch train --config {best_yaml})")
    click.echo(f"trials table:    {outcome.results / R.TRIALS_FILE}")
    click.echo(f"Tune results:    {outcome.tune_path}")
    click.echo(f"MLflow store:    {outcome.mlflow_uri}  (UI: eqsearch mlflow-ui {outcome.results})")


def searched_value(row: dict, param) -> str:
    """The value of a searched key in a trials.csv row (one element for ``field[i]``)."""
    value = row.get(f"config.{param.field}")
    if param.index is not None and value:
        value = yaml.safe_load(value)[param.index]
    return value


@main.command()
@click.argument("space")
@click.option("--results", type=click.Path(path_type=Path), default=None,
              help="results folder (default results/<name>-<time>)")
@click.option("--num-samples", type=int, default=None, help="number of trials")
@click.option("--max-concurrent", type=int, default=None, help="trials running at the same time")
@click.option("--seed", type=int, default=None, help="seed of the Optuna sampler")
@click.option("--metric", default=None, help="metric to optimize (default test_acc)")
@click.option("--mode", default=None, help="max or min")
@click.option("--cpus-per-trial", type=float, default=None, help="CPUs per trial (torch threads follow)")
@click.option("--gpus-per-trial", type=float, default=None, help="GPUs per trial (fractions allowed)")
@click.option("--grace-period", type=int, default=None, help="ASHA grace period (epochs)")
@click.option("--reduction-factor", type=int, default=None, help="ASHA reduction factor")
@click.option("--mlflow-uri", default=None, help="MLflow tracking server (default: sqlite in the results folder)")
@click.option("--experiment", default=None, help="MLflow experiment name")
@click.option("--address", default=None, help="join a Ray cluster (e.g. auto or HOST:6379); default: local Ray")
@click.option("--set", "sets", multiple=True, metavar="FIELD=VALUE", help="override a base config field")
@click.option("--no-dashboard", is_flag=True, help="do not start the Ray dashboard")
@click.option("--quiet", is_flag=True, help="no live table")
def search(space: str, results: Path | None, address: str | None, sets: tuple[str, ...], no_dashboard: bool,
           quiet: bool, **settings) -> None:
    """Run a search from SPACE: a space file, or the name of a shipped one (quickstart,
    mnist_mlp_estimators, cifar10_cnn, ...; see search_spaces/)."""
    import search_spaces

    path = search_spaces.resolve(space)
    if not path.is_file():
        fail(f"{space}: no such search space file; allowed: a YAML space file, or a shipped space: "
             f"{', '.join(search_spaces.shipped())}")
    try:
        overrides = {SETTING_OPTIONS[k]: v for k, v in settings.items() if v is not None}
        spec = load_spec(path, overrides, dict(parse_assignment(s) for s in sets))
    except ConfigError as exc:
        fail(str(exc))
    launch(spec, Path(results or default_results(spec)), address, not no_dashboard, quiet)


@main.command()
@click.argument("results", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--address", default=None, help="join a Ray cluster; default: local Ray")
@click.option("--no-dashboard", is_flag=True, help="do not start the Ray dashboard")
@click.option("--quiet", is_flag=True, help="no live table")
def resume(results: Path, address: str | None, no_dashboard: bool, quiet: bool) -> None:
    """Continue an interrupted search in RESULTS (finished trials are kept)."""
    try:
        spec = load_spec(results / R.SPACE_FILE)
        R.read_state(results)
        from eqsearch.search.driver import resume_search  # imports Ray

        outcome = resume_search(results, address=address, dashboard=not no_dashboard, show=not quiet,
                                notify=lambda m: click.echo(m, err=True))
    except (ConfigError, FileNotFoundError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        click.echo("\ninterrupted before the search's state could be saved", err=True)
        sys.exit(130)
    report(outcome, spec)


@main.command()
@click.argument("results", type=click.Path(exists=True, file_okay=False, path_type=Path))
def status(results: Path) -> None:
    """Show the trials of the search in RESULTS and the best so far."""
    from eqsearch.search.console import print_table

    if not (results / R.STATE_FILE).is_file():
        fail(f"{results}: not the results folder of a search (no {R.STATE_FILE}); allowed: a folder written by "
             "`eqsearch search --results DIR`")
    try:
        spec = load_spec(results / R.SPACE_FILE)
    except ConfigError as exc:
        fail(str(exc))
    rows = R.read_trials(results)
    metric, mode = spec.search["metric"], spec.search["mode"]
    print_table(rows, metric, mode, spec.max_epochs,
                f"search {spec.name}: {len(rows)} of {spec.search['num_samples']} trials")
    for r in rows:
        if r["stop_reason"] in (*R.FAILED, R.INTERRUPTED):
            click.echo(f"{r['trial_name']}: {r['stop_reason']}: {r['reason']}")
    best = R.best_row(rows, metric, mode)
    if best:
        click.echo(f"best so far: {best['trial_name']} {metric} {float(best[metric]):.4f} "
                   f"({best['stop_reason']}, {best['epochs_run']} epochs)")
    if any(r["stop_reason"] == R.RUNNING for r in rows):
        click.echo(f"trials marked running are still running, or were interrupted: eqsearch resume {results}")


@main.command("mlflow-ui")
@click.argument("results", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--port", type=int, default=5000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
def mlflow_ui(results: Path, port: int, host: str) -> None:
    """Start the MLflow UI on the store of the search in RESULTS (Ctrl-C stops it)."""
    try:
        state = R.read_state(results)
    except FileNotFoundError as exc:
        fail(str(exc))
    from eqsearch.search.tracking import folder_store, runs_page

    uri = folder_store(results, state)
    if not uri.startswith("sqlite"):
        click.echo(f"this search logged to the MLflow server {uri}; open it there")
        return
    search = load_spec(results / R.SPACE_FILE).search
    exe = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
    serve([exe, "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)], f"http://{host}:{port}",
          f"MLflow UI (store {uri}, experiment {state['experiment']})", "/health",
          page=runs_page(results, state, search["metric"], search["mode"]))


@main.command("optuna-dashboard")
@click.argument("results", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
def optuna_dashboard(results: Path, port: int, host: str) -> None:
    """Start optuna-dashboard on the Optuna study of the search in RESULTS (Ctrl-C stops it).
    Each Optuna trial carries its Tune trial id and MLflow run id as user attributes."""
    db = results / R.OPTUNA_DB
    if not db.is_file():
        fail(f"{results}: no {R.OPTUNA_DB}; allowed: a results folder written by eqsearch search")
    exe = shutil.which("optuna-dashboard", path=os.path.dirname(sys.executable)) or "optuna-dashboard"
    serve([exe, f"sqlite:///{db.resolve()}", "--host", host, "--port", str(port), "--quiet"], f"http://{host}:{port}",
          f"optuna-dashboard (study in {db})", "/api/studies")


def serve(argv: list[str], url: str, what: str, probe: str, page: str = "", timeout_s: float = 180.0) -> None:
    """Run a web server (``argv``), print its URL (``url + page``) once ``url + probe`` answers
    (not before), hide its start-up chatter, and stop it on Ctrl-C."""
    import tempfile
    import urllib.request

    log = tempfile.TemporaryFile(mode="w+")  # its chatter, read back only if it fails to start
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if proc.poll() is not None:
                log.seek(0)
                fail(f"{what} did not start: " + (log.read().strip().splitlines() or ["no message"])[-1])
            try:
                urllib.request.urlopen(url + probe, timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    proc.terminate()
                    fail(f"{what} did not answer on {url} within {timeout_s:g} s")
                time.sleep(0.3)
        click.echo(f"{what}: {url}{page}  (Ctrl-C stops it)")
        proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
