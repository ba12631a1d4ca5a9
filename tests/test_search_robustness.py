"""A search survives what users do to it (real Ray, Optuna, MLflow, the CLI in a subprocess):
Ctrl-C then resume, two SIGKILLs then resume, parameter pairs that cannot coexist, a search
whose every trial fails. After each, every store (trials.csv, Tune's folders, the Optuna study,
MLflow, best.yaml, the per-trial curves) tells the same story."""

from __future__ import annotations

import csv
import os
import shutil
import signal
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

from eqsearch.config import load_config  # noqa: E402
from eqsearch.search import results as R  # noqa: E402
from eqsearch.search.space import spec_from_tree  # noqa: E402
from tests.test_search_integration import (free_port, kill_processes_using, ray_session, run_cli,  # noqa: E402,F401
                                           small_quickstart)

OPTUNA_STATE = {R.COMPLETED: TrialState.COMPLETE, R.ASHA_STOPPED: TrialState.PRUNED, R.DIVERGED: TrialState.FAIL,
                R.ERRORED: TrialState.FAIL, R.INVALID: TrialState.FAIL}
MLFLOW_STATUS = {R.COMPLETED: "FINISHED", R.ASHA_STOPPED: "FINISHED", R.DIVERGED: "FAILED", R.ERRORED: "FAILED",
                 R.INVALID: "FAILED"}


def assert_stores_agree(results: Path, name: str, num_samples: int, experiment: str | None = None,
                        kept: int = 0) -> list[dict]:
    """The same trials in every store: ``num_samples`` of them, plus at most ``kept`` that ended
    just before a kill, after Tune last saved its state (kept; Tune ran others in their place);
    none running, the same stop reason and the same best trial everywhere, each curve complete
    from epoch 1."""
    import mlflow

    from eqsearch.search.driver import load_study
    from eqsearch.search.tracking import folder_store

    rows = R.read_trials(results)
    by_id = {r["trial_id"]: r for r in rows}
    assert num_samples <= len(rows) == len(by_id) <= num_samples + kept, [r["trial_name"] for r in rows]
    num_samples = len(rows)
    assert all(r["stop_reason"] in OPTUNA_STATE for r in rows), [(r["trial_name"], r["stop_reason"]) for r in rows]
    # Tune: one folder per trial, each with the full curve of the epochs it ran
    folders = sorted(p.name for p in (results / R.TUNE_DIR / name).iterdir() if p.is_dir())
    assert folders == sorted(r["trial_name"] for r in rows)
    for r in rows:
        path = results / R.TUNE_DIR / name / r["trial_name"] / "metrics.csv"
        epochs = [int(float(m["epoch"])) for m in csv.DictReader(path.open())] if path.exists() else []
        assert epochs == list(range(1, int(r["epochs_run"]) + 1)), (r["trial_name"], epochs)
    # Optuna: one trial per Tune trial, in the matching state
    study = load_study(results, name)
    assert len(study.trials) == num_samples
    for t in study.trials:
        row = by_id[t.user_attrs["tune_trial_id"]]
        assert t.state == OPTUNA_STATE[row["stop_reason"]], (row["trial_name"], t.state, row["stop_reason"])
        assert t.user_attrs["mlflow_run_id"] == row["mlflow_run_id"]
    # MLflow: one finished run per trial with the same stop reason
    mlflow.set_tracking_uri(folder_store(results, R.read_state(results)))
    runs = mlflow.search_runs(experiment_names=[experiment or name])
    children = runs[runs["tags.mlflow.parentRunId"].notna()].set_index("tags.eqsearch.trial_id")
    assert sorted(children.index) == sorted(by_id)
    for tid, run in children.iterrows():
        assert run["tags.eqsearch.stop_reason"] == by_id[tid]["stop_reason"]
        assert run["status"] == MLFLOW_STATUS[by_id[tid]["stop_reason"]]
        assert run["run_id"] == by_id[tid]["mlflow_run_id"]
    # the same best trial in trials.csv, best.yaml, MLflow's parent and Optuna
    spec = yaml.safe_load((results / R.SPACE_FILE).read_text())["search"]
    best = R.best_row(rows, spec["metric"], spec["mode"])
    if best is not None:
        parent = runs[runs["tags.mlflow.parentRunId"].isna()].iloc[0]
        assert parent["tags.eqsearch.best_trial"] == best["trial_id"] and parent["status"] == "FINISHED"
        assert study.best_trial.user_attrs["tune_trial_id"] == best["trial_id"]
        best_cfg = load_config(results / R.BEST_FILE).flat()
        assert {f"config.{k}": "" if v is None else str(v) for k, v in best_cfg.items()} == \
            {k: v for k, v in best.items() if k.startswith("config.")}
    return rows


def wait_for(predicate, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        assert proc.poll() is None, f"search ended before {what}:\n" + proc.stdout.read()
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def finished(results: Path) -> list[dict]:
    return [r for r in R.read_trials(results) if r["stop_reason"] != R.RUNNING]


def started_epoch(results: Path) -> bool:
    """Some trial is running and has finished an epoch (so that an interrupt cuts it mid-way)."""
    return any(r["stop_reason"] == R.RUNNING and int(r["epochs_run"] or 0) >= 1 for r in R.read_trials(results))


def kill_after_a_first_trial(space: Path, results: Path, ray_tmp: str) -> None:
    """Start the search of ``space``, SIGKILL it and its Ray processes once a trial finished."""
    proc = run_cli("search", str(space), "--results", str(results), "--no-dashboard", "--quiet", ray_tmp=ray_tmp)
    wait_for(lambda: len(finished(results)) >= 1, proc, 240, "a first finished trial")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kill_processes_using(ray_tmp)


@pytest.fixture
def cli_space(tmp_path):
    space = tmp_path / "space.yaml"
    tree = small_quickstart(num_samples=6)
    tree["base"]["train"]["epochs"] = 3
    tree["base"]["data"]["max_batches"] = 30
    space.write_text(yaml.safe_dump(tree))
    ray_tmp = tempfile.mkdtemp(prefix="eqs-rt-", dir="/tmp")
    yield space, tmp_path / "results", ray_tmp
    kill_processes_using(ray_tmp)
    shutil.rmtree(ray_tmp, ignore_errors=True)


def test_ctrl_c_records_interrupted_trials_and_resume_brings_every_store_in_step(cli_space):
    space, results, ray_tmp = cli_space
    tree = yaml.safe_load(space.read_text())
    # Full digits epochs of 180 batches with a long free phase (~1.5 s each on 2 cores, more on a
    # busy machine), and no ASHA rung before epoch 3: a trial caught at epoch 1 or 2 has at least
    # an epoch left to run when the interrupt lands, however fast the machine.
    tree["base"]["train"]["epochs"] = 5
    tree["base"]["data"].update(max_batches=None, batch_size=8)
    tree["base"]["rule"]["T1"] = 250
    tree["scheduler"] = {"asha": {"grace_period": 3, "reduction_factor": 2}}
    space.write_text(yaml.safe_dump(tree))
    proc = run_cli("search", str(space), "--results", str(results), "--no-dashboard", "--quiet", ray_tmp=ray_tmp)
    early = lambda: any(r["stop_reason"] == R.RUNNING and 1 <= int(r["epochs_run"] or 0) <= 2  # noqa: E731
                        for r in R.read_trials(results))
    wait_for(lambda: len(finished(results)) >= 1 and early(), proc, 240, "a trial early in its run")
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the whole process group
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert f"eqsearch resume {results}" in out
    rows = R.read_trials(results)
    stopped = [r for r in rows if r["stop_reason"] == R.INTERRUPTED]
    assert stopped and all("interrupted (SIGINT) after" in r["reason"] for r in stopped)
    assert all(r["stop_reason"] != R.RUNNING for r in rows)
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{results / R.MLFLOW_DB}")
    runs = mlflow.search_runs(experiment_names=["quickstart"]).set_index("tags.eqsearch.trial_id")
    for r in stopped:
        assert runs.loc[r["trial_id"], "status"] == "KILLED"
        assert runs.loc[r["trial_id"], "tags.eqsearch.stop_reason"] == R.INTERRUPTED

    res = run_cli("resume", str(results), "--no-dashboard", "--quiet", ray_tmp=ray_tmp)
    out, _ = res.communicate(timeout=300)
    assert res.returncode == 0, out
    after = {r["trial_id"]: r for r in assert_stores_agree(results, "quickstart", 6)}  # Ctrl-C saves the state
    for r in stopped:  # continued from where they were, not restarted
        assert int(after[r["trial_id"]]["epochs_run"]) >= int(r["epochs_run"])


def test_two_kills_in_a_row_then_resume_leave_exact_counts_everywhere(cli_space):
    space, results, ray_tmp = cli_space
    kill_after_a_first_trial(space, results, ray_tmp)
    done_before = len(finished(results))
    proc = run_cli("resume", str(results), "--no-dashboard", "--quiet", ray_tmp=ray_tmp)
    wait_for(lambda: len(finished(results)) > done_before, proc, 240, "another finished trial")
    time.sleep(1.0)  # a trial may start after Tune's last state save: the orphan case
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kill_processes_using(ray_tmp)
    res = run_cli("resume", str(results), "--no-dashboard", "--quiet", ray_tmp=ray_tmp)
    out, _ = res.communicate(timeout=300)
    assert res.returncode == 0, out
    assert_stores_agree(results, "quickstart", 6, kept=4)  # two kills, two trials at a time


def test_bptt_with_searched_T1_and_T2_ends_impossible_pairs_as_invalid(ray_session, tmp_path):
    """T2 > T1 cannot run under BPTT: those trials end as ``invalid`` with the reason, Optuna
    records them as FAIL, and the search runs all its trials."""
    from eqsearch.search.driver import run_search

    tree = small_quickstart(num_samples=8, seed=2)
    tree["name"] = "bptt-t1t2"
    tree["base"]["rule"] = {"alg": "bptt"}
    tree["base"]["train"]["epochs"] = 2
    tree["space"] = {"rule.T1": {"int": [4, 12]}, "rule.T2": {"int": [2, 12]}}
    tree["scheduler"] = None
    outcome = run_search(spec_from_tree(tree, "bptt.yaml"), tmp_path / "results", show=False, notify=lambda m: None)
    rows = assert_stores_agree(outcome.results, "bptt-t1t2", 8, experiment="quickstart")
    pairs = [(int(r["config.rule.T1"]), int(r["config.rule.T2"])) for r in rows]
    invalid = [r for r in rows if r["stop_reason"] == R.INVALID]
    assert invalid and len(invalid) == sum(t2 > t1 for t1, t2 in pairs)
    assert all("rule.T2: got" in r["reason"] and "<= rule.T1" in r["reason"] for r in invalid)
    assert all(r["stop_reason"] == R.COMPLETED for r in rows if r not in invalid)


def test_a_search_whose_every_trial_fails_exits_non_zero(cli_space):
    space, results, ray_tmp = cli_space
    tree = yaml.safe_load(space.read_text())
    tree["base"]["model"] = {"loss": "cel", "act": "tanh"}
    tree["space"] = {"optim.lrs[0]": {"loguniform": [1e37, 1e38]}, "optim.lrs[1]": {"loguniform": [1e37, 1e38]}}
    tree["search"]["num_samples"] = 2
    space.write_text(yaml.safe_dump(tree))
    proc = run_cli("search", str(space), "--results", str(results), "--no-dashboard", "--quiet", ray_tmp=ray_tmp)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out
    assert "every trial failed" in out
    assert "NaN or Inf" not in out  # TensorBoard's complaint about the diverged metrics
    assert {r["stop_reason"] for r in R.read_trials(results)} == {R.DIVERGED}


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 that a test can kill and start again (same port, same
    store)."""

    def __init__(self, folder: Path):
        self.folder, self.port, self.proc = folder, free_port(), None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        exe = Path(sys.executable).with_name("mlflow")
        self.proc = subprocess.Popen([str(exe), "server", "--backend-store-uri", f"sqlite:///{self.folder}/server.db",
                                      "--artifacts-destination", str(self.folder / "artifacts"), "--host",
                                      "127.0.0.1", "--port", str(self.port), "--workers", "1"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(self.url + "/health", timeout=2)
                return
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.kill()
                    pytest.fail("mlflow server did not start")
                time.sleep(0.5)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def test_an_mlflow_outage_does_not_stop_the_search_and_mlflow_catches_up(cli_space, tmp_path):
    space, results, ray_tmp = cli_space
    server = MlflowServer(tmp_path)
    server.start()
    try:
        proc = run_cli("search", str(space), "--results", str(results), "--no-dashboard", "--quiet",
                       "--mlflow-uri", server.url, ray_tmp=ray_tmp)
        wait_for(lambda: len(finished(results)) >= 1, proc, 240, "a first finished trial")
        server.kill()
        down = len(finished(results))
        wait_for(lambda: len(finished(results)) > down, proc, 240, "a trial finished while MLflow is down")
        server.start()
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
        assert out.count("failed to") == 1, out  # the outage is reported once
        if "still unreachable" in out:  # the search ended before MLflow was back: resume catches up
            res = run_cli("resume", str(results), "--no-dashboard", "--quiet", ray_tmp=ray_tmp)
            out, _ = res.communicate(timeout=300)
            assert res.returncode == 0, out
        assert "MLflow caught up from trials.csv and the trial folders" in out, out
        rows = R.read_trials(results)
        assert len(rows) == 6 and all(r["mlflow_run_id"] for r in rows), out
        import mlflow

        client = mlflow.MlflowClient(server.url)
        for r in rows:
            run = client.get_run(r["mlflow_run_id"])
            assert run.data.tags["eqsearch.stop_reason"] == r["stop_reason"] and run.info.status == "FINISHED"
            steps = sorted(int(m.step) for m in client.get_metric_history(r["mlflow_run_id"], "test_acc"))
            assert steps == list(range(1, int(r["epochs_run"]) + 1)), (r["trial_name"], steps)
    finally:
        server.kill()


def test_an_unreachable_mlflow_uri_fails_in_seconds_before_anything_starts(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    t0 = time.time()
    r = subprocess.run([str(Path(sys.executable).with_name("eqsearch")), "search", "quickstart", "--results",
                        str(tmp_path / "res"), "--mlflow-uri", url, "--no-dashboard"], capture_output=True, text=True)
    assert time.time() - t0 < 15
    assert r.returncode == 2 and f"tracking.mlflow_uri: '{url}' did not answer within 5 s" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "res").exists()


def test_no_ray_process_of_a_killed_driver_outlives_it(cli_space):
    from eqsearch.search.reaper import descendants

    space, results, ray_tmp = cli_space
    proc = run_cli("search", str(space), "--results", str(results), "--no-dashboard", "--quiet", ray_tmp=ray_tmp)
    wait_for(lambda: started_epoch(results), proc, 240, "a running trial")
    spawned = descendants(proc.pid)
    assert len(spawned) >= 4  # raylet, GCS, agents, workers
    os.kill(proc.pid, signal.SIGKILL)  # the driver alone, as `kill -9 PID` does
    proc.wait()
    deadline = time.time() + 60
    while time.time() < deadline and [p for p in spawned if Path(f"/proc/{p}").exists()]:
        time.sleep(1)
    assert not [p for p in spawned if Path(f"/proc/{p}").exists()]


def test_the_end_of_a_local_ray_session_leaves_none_of_its_processes():
    """RaySession.end (the autoscaler monitor killed first, then ``ray.shutdown()``): every
    process Ray started is gone when it returns, and Ray is no longer initialized."""
    script = f"""
import os, sys
from eqsearch.search import driver
session = driver.start_ray(None, dashboard=False, num_cpus=2)
node = driver.ray._private.worker._global_node
procs = {{kind: [i.process for i in infos] for kind, infos in node.all_processes.items()}}
assert "monitor" in procs and "gcs_server" in procs and "raylet" in procs, sorted(procs)
session.end()
alive = [kind for kind, ps in procs.items() for p in ps if p.poll() is None]
assert not alive and not driver.ray.is_initialized(), alive
print("ended", sorted(procs))
"""
    ray_tmp = tempfile.mkdtemp(prefix="eqs-rt-", dir="/tmp")  # short: Ray's socket paths have a length limit
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "RAY_TMPDIR": ray_tmp})
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0 and "ended" in done.stdout, done.stdout + done.stderr


def test_a_missing_data_root_fails_before_any_trial_starts(tmp_path):
    t0 = time.time()
    r = subprocess.run([str(Path(sys.executable).with_name("eqsearch")), "search", "quickstart", "--results",
                        str(tmp_path / "res"), "--set", "data.dataset=mnist", "--set",
                        f"data.root={tmp_path / 'nowhere'}", "--no-dashboard"], capture_output=True, text=True)
    assert time.time() - t0 < 15
    assert r.returncode == 2 and "data.dataset 'mnist': data.root:" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "res").exists()


def test_a_wrong_cluster_address_fails_in_seconds(tmp_path):
    t0 = time.time()
    r = subprocess.run([str(Path(sys.executable).with_name("eqsearch")), "search", "quickstart", "--results",
                        str(tmp_path / "res"), "--address", f"127.0.0.1:{free_port()}"], capture_output=True, text=True)
    assert time.time() - t0 < 15
    assert r.returncode == 2 and "--address: '127.0.0.1:" in r.stderr and "did not answer within 5 s" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "res").exists()


def test_a_moved_results_folder_resumes_summarizes_and_opens_in_the_mlflow_ui(cli_space, tmp_path):
    """Kill a search, move its folder, resume it there; move it again, then summarize it (from
    its files and from MLflow) and open it in the MLflow UI: nothing is read from or written to
    where it was, and every MLflow artifact is inside the folder."""
    import json

    import pandas as pd

    space, results, ray_tmp = cli_space
    kill_after_a_first_trial(space, results, ray_tmp)
    moved = tmp_path / "archive" / "copy"
    shutil.move(str(results), str(moved))
    res = run_cli("resume", str(moved), "--no-dashboard", "--quiet", ray_tmp=ray_tmp)
    out, _ = res.communicate(timeout=300)
    assert res.returncode == 0, out
    rows = assert_stores_agree(moved, "quickstart", 6, kept=2)
    assert not results.exists(), "something was written where the folder was"
    assert all(not Path(r["trial_dir"]).is_absolute() for r in rows)

    again = tmp_path / "elsewhere"
    shutil.move(str(moved), str(again))
    exe = str(Path(sys.executable).with_name("eqsearch"))
    tables = []
    for flags in ([], ["--from-mlflow"]):
        out_dir = tmp_path / f"summary-{len(flags)}"
        r = subprocess.run([exe, "summarize", str(again), "--out", str(out_dir), "--no-plots", *flags],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        tables.append(pd.read_csv(out_dir / "by_estimator_beta.csv"))
    pd.testing.assert_frame_equal(tables[0], tables[1])
    assert not moved.exists() and not results.exists()

    port = free_port()
    ui = subprocess.Popen([exe, "mlflow-ui", str(again), "--port", str(port)], stdout=subprocess.PIPE, text=True,
                          start_new_session=True)
    try:
        line = ui.stdout.readline()
        assert f"http://127.0.0.1:{port}/#/experiments/" in line and "workflowType=machine_learning" in line, line
        api = f"http://127.0.0.1:{port}/api/2.0/mlflow"
        with urllib.request.urlopen(f"{api}/experiments/get-by-name?experiment_name=quickstart", timeout=10) as r:
            experiment = json.load(r)["experiment"]
        assert experiment["artifact_location"] == (again / R.ARTIFACTS_DIR).as_uri()
        query = json.dumps({"experiment_ids": [experiment["experiment_id"]], "max_results": 100}).encode()
        request = urllib.request.Request(f"{api}/runs/search", data=query, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as r:
            assert r.status == 200
            runs = json.load(r)["runs"]
        assert len(runs) == len(rows) + 1  # the search and its trials
        for run in runs:
            assert run["info"]["artifact_uri"].startswith((again / R.ARTIFACTS_DIR).as_uri() + "/")
        trial = next(r for r in rows if r["stop_reason"] == R.COMPLETED)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/get-artifact?path=config.yaml"
                                    f"&run_uuid={trial['mlflow_run_id']}", timeout=10) as r:
            logged = yaml.safe_load(r.read())
        assert logged["rule"]["beta"] == pytest.approx(float(trial["config.rule.beta"]))
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)


def test_a_trial_folder_is_settled_to_the_epochs_its_record_says_it_ran(tmp_path):
    """A trial that ASHA stopped after epoch 1 just before a kill (after Tune's last saved state)
    is run on by Tune at the resume: its folder's extra epochs are dropped; a folder that lags
    behind its record is completed from the checkpoint's curve."""
    import torch

    from eqsearch.run_folder import METRICS_FILE, read_metrics, write_metrics
    from eqsearch.search.driver import SearchRecorder

    spec = spec_from_tree(small_quickstart(), "q.yaml")
    recorder = SearchRecorder(spec, tmp_path, "", "", show=False)
    curve = [{"epoch": e, "test_acc": 0.5 + e / 10} for e in (1, 2, 3)]
    rerun = tmp_path / "tune" / "q" / "ep_a"
    rerun.mkdir(parents=True)
    write_metrics(rerun / METRICS_FILE, curve)
    recorder._settle_curve({"trial_id": "a", "trial_dir": "tune/q/ep_a", "epochs_run": "1"})
    assert [m["epoch"] for m in read_metrics(rerun)] == [1]
    lagging = tmp_path / "tune" / "q" / "ep_b"
    (lagging / "checkpoint_000002").mkdir(parents=True)
    write_metrics(lagging / METRICS_FILE, curve[:1])
    torch.save({"history": curve}, lagging / "checkpoint_000002" / "checkpoint_latest.pt")
    recorder._settle_curve({"trial_id": "b", "trial_dir": "tune/q/ep_b", "epochs_run": "3"})
    assert [m["epoch"] for m in read_metrics(lagging)] == [1, 2, 3]


def test_mlflow_catches_up_exactly_the_epochs_each_trial_is_recorded_to_have_run(tmp_path):
    """At a resume the driver logs what MLflow missed from the trial folders: not the epochs of
    a re-run that Tune makes of a trial that had ended just before the kill (its folder is ahead
    of its record), and every epoch of a trial whose folder lags its record (from its
    checkpoint); so that ``summarize`` from the files and ``--from-mlflow`` agree."""
    import torch
    from mlflow.tracking import MlflowClient

    from analysis.load import _mlflow_history
    from eqsearch.run_folder import METRICS_FILE, write_metrics
    from eqsearch.search.driver import SearchRecorder
    from eqsearch.search.tracking import Tracker

    spec = spec_from_tree(small_quickstart(), "q.yaml")
    uri = R.local_store_uri(tmp_path)
    recorder = SearchRecorder(spec, tmp_path, uri, "", show=False)
    recorder.tracker = Tracker(uri, "q", notify=lambda _: None)
    recorder.tracker.parent = recorder.tracker.client.create_run(recorder.tracker.experiment_id).info.run_id
    curve = [{"epoch": e, "test_acc": 0.5 + e / 10, "epoch_seconds": 1.0} for e in (1, 2, 3)]
    ahead, lagging = tmp_path / "tune" / "q" / "ep_a", tmp_path / "tune" / "q" / "ep_b"
    ahead.mkdir(parents=True)
    write_metrics(ahead / METRICS_FILE, curve)
    (lagging / "checkpoint_000002").mkdir(parents=True)
    write_metrics(lagging / METRICS_FILE, curve[:1])
    torch.save({"history": curve}, lagging / "checkpoint_000002" / "checkpoint_latest.pt")
    recorder.rows = {"a": {"trial_id": "a", "trial_name": "ep_a", "trial_dir": "tune/q/ep_a", "epochs_run": "1",
                           "stop_reason": R.ASHA_STOPPED, "reason": "", "max_epochs": 3, "mlflow_run_id": ""},
                     "b": {"trial_id": "b", "trial_name": "ep_b", "trial_dir": "tune/q/ep_b", "epochs_run": "3",
                           "stop_reason": R.COMPLETED, "reason": "", "max_epochs": 3, "mlflow_run_id": ""}}
    recorder.tracker.missed = True
    recorder._catch_up()
    client = MlflowClient(uri)
    for tid, epochs in (("a", [1]), ("b", [1, 2, 3])):
        run = client.get_run(recorder.rows[tid]["mlflow_run_id"])
        assert [m["epoch"] for m in _mlflow_history(client, run)] == epochs, tid
