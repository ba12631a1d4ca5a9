"""Integration tests of the search platform with the real parts: Ray (num_cpus=2), Optuna,
ASHA, MLflow (SQLite store and an `mlflow server` started here)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

ray = pytest.importorskip("ray")
from optuna.trial import TrialState  # noqa: E402

from eqsearch.search import results as R  # noqa: E402
from eqsearch.search.space import spec_from_tree  # noqa: E402
from eqsearch.training import read_metrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def pd_isna(value) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


def small_quickstart(**settings) -> dict:
    tree = yaml.safe_load((ROOT / "search_spaces" / "quickstart.yaml").read_text())
    tree["base"]["data"]["max_batches"] = 8
    tree["base"]["train"]["epochs"] = 4
    tree["search"].update({"num_samples": 6, **settings})
    return tree


@pytest.fixture(scope="module")
def ray_session():
    from eqsearch.search import driver

    tmp = tempfile.mkdtemp(prefix="eqs-ray-", dir="/tmp")
    driver.quiet()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=tmp,
             logging_level="ERROR")
    yield
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def quickstart(ray_session, tmp_path_factory):
    from eqsearch.search.driver import run_search

    spec = spec_from_tree(small_quickstart(), "quickstart-test.yaml")
    results = tmp_path_factory.mktemp("qs") / "results"
    outcome = run_search(spec, results, show=False, notify=lambda m: None)
    return spec, outcome


def test_quickstart_runs_trials_and_asha_stops_some(quickstart):
    spec, outcome = quickstart
    rows = outcome.rows
    assert len(rows) == 6
    reasons = [r["stop_reason"] for r in rows]
    assert set(reasons) <= {R.COMPLETED, R.ASHA_STOPPED}
    assert R.ASHA_STOPPED in reasons and R.COMPLETED in reasons
    g, rf = spec.asha["grace_period"], spec.asha["reduction_factor"]
    rungs = {g * rf ** k for k in range(8) if g * rf ** k < spec.max_epochs}  # ASHA stops only at a rung
    for r in rows:
        if r["stop_reason"] == R.COMPLETED:
            assert int(r["epochs_run"]) == spec.max_epochs
        else:
            assert int(r["epochs_run"]) in rungs, (r["epochs_run"], rungs)
        # every trial folder holds the engine's run folder, reused actors included
        folder = outcome.results / R.TUNE_DIR / spec.name / r["trial_name"]
        assert len(read_metrics(folder)) == int(r["epochs_run"]), folder
        assert (folder / "config.yaml").is_file()
    assert outcome.best is not None and (outcome.results / R.BEST_FILE).exists()
    assert yaml.safe_load((outcome.results / R.BEST_FILE).read_text())["data"]["dataset"] == "digits"


def test_optuna_records_asha_stopped_trials_as_pruned(quickstart):
    from eqsearch.search.driver import load_study

    spec, outcome = quickstart
    study = load_study(outcome.results, spec.name)
    states = [t.state for t in study.trials]
    n_stopped = sum(r["stop_reason"] == R.ASHA_STOPPED for r in outcome.rows)
    assert len(states) == 6
    assert states.count(TrialState.PRUNED) == n_stopped >= 1
    assert states.count(TrialState.COMPLETE) == 6 - n_stopped
    for t in study.trials:  # every trial has its per-epoch curve
        assert t.intermediate_values


def test_mlflow_holds_parent_and_nested_runs(quickstart):
    import mlflow

    spec, outcome = quickstart
    mlflow.set_tracking_uri(outcome.mlflow_uri)
    runs = mlflow.search_runs(experiment_names=[spec.tracking["experiment"]])
    parents = runs[runs["tags.mlflow.parentRunId"].isna()]
    assert len(parents) == 1
    parent_id = parents["run_id"].iloc[0]
    children = runs[runs["tags.mlflow.parentRunId"] == parent_id]
    assert len(children) == 6
    assert (children["status"] == "FINISHED").all()
    assert children["metrics.test_acc"].notna().all()
    by_run = {r["mlflow_run_id"]: r for r in outcome.rows}
    client = mlflow.tracking.MlflowClient(outcome.mlflow_uri)
    for _, child in children.iterrows():
        row = by_run[child["run_id"]]
        assert child["tags.eqsearch.stop_reason"] == row["stop_reason"]
        history = client.get_metric_history(child["run_id"], "test_acc")
        assert sorted(m.step for m in history) == list(range(1, int(row["epochs_run"]) + 1))
        started = child["start_time"].timestamp() * 1000  # metrics carry the time they were logged
        assert all(started - 1000 <= m.timestamp <= time.time() * 1000 for m in history), history
        assert float(child["params.rule.beta"]) == pytest.approx(float(row["config.rule.beta"]))
        lrs = yaml.safe_load(row["config.optim.lrs"])
        assert [float(child[f"params.optim.lrs.{i}"]) for i in range(len(lrs))] == lrs  # per element
        assert "params.model.channels" not in child or pd_isna(child["params.model.channels"])  # an MLP run
        assert "config.yaml" in [a.path for a in client.list_artifacts(child["run_id"])]
    exp = client.get_experiment_by_name(spec.tracking["experiment"])
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on the runs
    parent = client.get_run(parent_id)
    assert parent.data.metrics[f"best_{spec.search['metric']}"] == pytest.approx(float(outcome.best["test_acc"]))
    assert sum(v for k, v in parent.data.metrics.items() if k.startswith("trials_")) == 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1, stopped with SIGTERM to its process group."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    exe = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen([str(exe), "server", "--backend-store-uri", f"sqlite:///{folder}/server.db",
                             "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(url + "/health", timeout=2)
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                os.killpg(proc.pid, signal.SIGTERM)
                pytest.fail("mlflow server did not start")
            time.sleep(0.5)
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def diverging_space() -> dict:
    """A 3-trial search in which the trial with lrs[1] = 1e38 overflows to a non-finite loss."""
    return {"name": "nan", "base": {"data": {"dataset": "digits", "max_batches": 6},
                                    "model": {"loss": "cel", "act": "tanh"},
                                    "optim": {"lrs": [0.1, 0.05]}, "train": {"epochs": 2}},
            "space": {"optim.lrs[1]": {"choice": [0.05, 1.0e38]}, "rule.beta": {"uniform": [0.1, 0.5]}},
            "search": {"num_samples": 4, "seed": 3}, "scheduler": None}


def test_diverging_trial_ends_with_reason_and_search_completes(ray_session, mlflow_server, tmp_path):
    import mlflow

    from eqsearch.search.driver import run_search

    tree = diverging_space()
    tree["tracking"] = {"experiment": "nan-test", "mlflow_uri": mlflow_server}
    spec = spec_from_tree(tree, "nan.yaml")
    outcome = run_search(spec, tmp_path / "results", show=False, notify=lambda m: None)
    rows = outcome.rows
    assert len(rows) == 4
    diverged = [r for r in rows if r["stop_reason"] == R.DIVERGED]
    assert diverged and all(float(r["config.optim.lrs"].strip("[]").split(",")[1]) > 1e30 for r in diverged)
    assert all("non-finite" in r["reason"] for r in diverged)
    assert any(r["stop_reason"] == R.COMPLETED for r in rows)

    # queried back through the MLflow server
    mlflow.set_tracking_uri(mlflow_server)
    runs = mlflow.search_runs(experiment_names=["nan-test"])
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert len(children) == 4
    failed = children[children["tags.eqsearch.stop_reason"] == R.DIVERGED]
    assert len(failed) == len(diverged)
    assert failed["tags.eqsearch.reason"].str.contains("non-finite").all()
    assert (failed["status"] == "FAILED").all()
    done = children[children["tags.eqsearch.stop_reason"] == R.COMPLETED]
    assert done["metrics.test_acc"].notna().all()

    # and eqsearch status shows the reason
    status = subprocess.run([str(Path(sys.executable).with_name("eqsearch")), "status", str(outcome.results)],
                            capture_output=True, text=True, check=True)
    assert "diverged: non-finite" in status.stdout


def kill_processes_using(marker: str) -> None:
    """SIGKILL, by PID, the processes whose command line names ``marker`` (our Ray temp dir)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    os.kill(int(entry.name), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass


def run_cli(*args, **kw) -> subprocess.Popen:
    env = {**os.environ, "RAY_TMPDIR": kw.pop("ray_tmp")}
    return subprocess.Popen([str(Path(sys.executable).with_name("eqsearch")), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, **kw)


def test_killed_search_resumes(tmp_path):
    """SIGKILL a search (driver and its Ray processes) after some trials finished, then resume."""
    space = tmp_path / "space.yaml"
    tree = small_quickstart(num_samples=6)
    tree["base"]["train"]["epochs"] = 3
    tree["base"]["data"]["max_batches"] = 60
    space.write_text(yaml.safe_dump(tree))
    results = tmp_path / "results"
    ray_tmp = tempfile.mkdtemp(prefix="eqs-rt-", dir="/tmp")
    try:
        proc = run_cli("search", str(space), "--results", str(results), "--no-dashboard", "--quiet", ray_tmp=ray_tmp)
        deadline = time.time() + 240
        finished = []
        while time.time() < deadline and proc.poll() is None:
            finished = [r for r in R.read_trials(results) if r["stop_reason"] != R.RUNNING]
            if len(finished) >= 2:
                break
            time.sleep(0.2)
        assert len(finished) >= 2
        # Tune saves its experiment state every TUNE_GLOBAL_CHECKPOINT_S (2 s): once a save
        # follows the trials' end they are in it, and must be kept as they were; kill right then
        seen = time.time()
        while time.time() < seen + 30 and proc.poll() is None and not any(
                p.stat().st_mtime > seen + 0.1 for p in results.glob("tune/*/experiment_state-*.json")):
            time.sleep(0.05)
        assert proc.poll() is None, "search ended before it could be killed:\n" + proc.stdout.read()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kept = {r["trial_id"]: r for r in finished}

        res = run_cli("resume", str(results), "--no-dashboard", "--quiet", ray_tmp=ray_tmp)
        out, _ = res.communicate(timeout=300)
        assert res.returncode == 0, out
        rows = R.read_trials(results)
        # 6, plus at most one per concurrent trial that ended after Tune's last saved state and
        # before the kill: kept, and Tune runs another in its place
        assert 6 <= len(rows) <= 8, [r["trial_name"] for r in rows]
        assert all(r["stop_reason"] in (R.COMPLETED, R.ASHA_STOPPED) for r in rows), [(r["stop_reason"], r["reason"]) for r in rows]
        by_id = {r["trial_id"]: r for r in rows}
        for tid, r in kept.items():  # finished trials kept as they were, not re-run
            assert by_id[tid]["epochs_run"] == r["epochs_run"]
            assert by_id[tid]["mlflow_run_id"] == r["mlflow_run_id"]
        import mlflow

        mlflow.set_tracking_uri(f"sqlite:///{results / R.MLFLOW_DB}")
        runs = mlflow.search_runs(experiment_names=["quickstart"])
        assert len(runs[runs["tags.mlflow.parentRunId"].notna()]) == len(rows)  # no duplicate runs
        assert (runs["status"] == "FINISHED").all()
    finally:
        kill_processes_using(ray_tmp)  # orphans of the killed Ray session (by PID)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_gpu_request_on_a_cluster_without_gpus_fails_clearly(ray_session, tmp_path):
    from eqsearch.search.driver import run_search
    from eqsearch.search.space import SpecError

    tree = small_quickstart()
    tree["resources"] = {"cpu": 1, "gpu": 0.5}
    spec = spec_from_tree(tree, "gpu.yaml")
    with pytest.raises(SpecError, match=r"gpu.yaml: resources.gpu: got 0.5; allowed: <= 0"):
        run_search(spec, tmp_path / "r", show=False, notify=lambda m: None)
    assert not (tmp_path / "r" / R.STATE_FILE).exists()


def run_shipped_space(name: str, results: Path, base: dict, num_samples: int):
    """A shipped space, shortened (``base``: dotted base fields), through the search driver;
    every trial must end completed or ASHA-stopped. Returns (loaded search, its summary)."""
    from analysis import load_results
    from analysis.tables import summarize
    from eqsearch.fields import set_dotted
    from eqsearch.search.driver import run_search

    tree = yaml.safe_load((ROOT / "search_spaces" / f"{name}.yaml").read_text())
    for key, value in base.items():
        set_dotted(tree["base"], key, value)
    tree["search"].update({"num_samples": num_samples})
    outcome = run_search(spec_from_tree(tree, f"{name}-test.yaml"), results, show=False, notify=lambda m: None)
    assert len(outcome.rows) == num_samples
    assert all(r["stop_reason"] in (R.COMPLETED, R.ASHA_STOPPED) for r in outcome.rows)
    search = load_results(results)
    return search, summarize(search.trials, search.curves, searched=search.searched())


def test_energies_space_runs_and_summarize_compares_the_two_energies(ray_session, tmp_path):
    """The shipped energies space (on digits here) goes through eqsearch search; the summary
    has the model-kind table with both energies, each cell recomputed from the trial rows."""
    search, summary = run_shipped_space("energies", tmp_path / "results", {
        "data": {"dataset": "digits", "batch_size": 32, "max_batches": 6}, "model.archi": [64, 32, 10],
        "train.epochs": 2}, num_samples=6)
    assert set(search.trials["config.model.kind"]) == {"cond_gaussian", "restr_hopfield"}
    assert search.trials["test_free_energy"].notna().all()
    trials = summary.frame  # the trials compared, at the summary's epoch
    for row in summary.tables["by_model"].itertuples(index=False):
        sel = trials[(trials["config.model.kind"] == row[0]) & (trials["config.model.cost"] == row[1])]
        assert row.n == len(sel) and row.mean == pytest.approx(sel["test_acc"].mean())


def test_cvf_angle_space_runs_and_summarize_tables_the_initial_angle(ray_session, tmp_path):
    """The shipped C-VF space (shortened) goes through eqsearch search with the continual rule;
    the summary groups accuracy by initial angle, and each trial logs its measured angle."""
    search, summary = run_shipped_space("cvf_angle", tmp_path / "results",
                                        {"data.max_batches": 6, "train.epochs": 2}, num_samples=4)
    assert search.trials["angle_B1"].notna().all() and (search.trials["estimator"] == "cep_random_sign").all()
    trials = summary.frame  # the trials compared, at the summary's epoch
    table = summary.tables["by_initial_angle"]
    assert table["n"].sum() == len(trials) >= 3
    for row in table.itertuples(index=False):
        sel = trials[trials["config.model.angle"] == row[0]]
        assert row.n == len(sel) and row.mean == pytest.approx(sel["test_acc"].mean())


@pytest.mark.parametrize("command, probe", [("mlflow-ui", "/health"), ("optuna-dashboard", "/api/studies")])
def test_dashboards_print_their_url_once_it_answers(quickstart, command, probe):
    """`eqsearch mlflow-ui` / `optuna-dashboard` print the URL only when the server answers; the
    Optuna trials name their Tune trial and MLflow run."""
    _, outcome = quickstart
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("eqsearch")), command, str(outcome.results),
                             "--port", str(port)], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()  # the first line is the URL, printed once the server answers
        assert f"http://127.0.0.1:{port}" in line, line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{probe}", timeout=30) as r:
            assert r.status == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    if command == "optuna-dashboard":
        from eqsearch.search.driver import load_study

        rows = {r["trial_id"]: r for r in outcome.rows}
        trials = load_study(outcome.results, "quickstart").trials
        assert len(trials) == len(rows)
        for t in trials:
            assert t.user_attrs["mlflow_run_id"] == rows[t.user_attrs["tune_trial_id"]]["mlflow_run_id"]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def headless_dom(url: str, profile: Path) -> str:
    """The DOM of ``url`` after its scripts ran, as headless Chromium renders it."""
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--no-first-run", "--disable-sync", f"--user-data-dir={profile}",
                        "--virtual-time-budget=30000", "--dump-dom", url], capture_output=True, text=True, timeout=180)
    return r.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (Debian package chromium)")
def test_the_mlflow_ui_page_eqsearch_prints_lists_every_trial_run(quickstart, tmp_path):
    """The page `eqsearch mlflow-ui` prints, rendered in headless Chromium: the model-training
    runs view with every trial's run, named with how it ended."""
    import re

    from eqsearch.search.tracking import run_name

    _, outcome = quickstart
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("eqsearch")), "mlflow-ui", str(outcome.results),
                             "--port", str(port)], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        url = re.search(r"(http://\S+)", proc.stdout.readline()).group(1)
        dom = headless_dom(url, tmp_path / "profile")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    assert "Runs - Experiment" in dom, dom[:2000]
    for row in outcome.rows:
        assert run_name(row) in dom, run_name(row)
    assert any(r["stop_reason"] == R.ASHA_STOPPED for r in outcome.rows) and "· ASHA " in dom
