"""Analysis on a small real search (Ray num_cpus=2, Optuna, ASHA, MLflow SQLite) made here:
the tidy frame, the summary numbers recomputed from the raw per-trial files, plots, MLflow as
a second source, export + exact rerun, and the CLI's errors."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

pytestmark = pytest.mark.slow

ray = pytest.importorskip("ray")

from analysis.load import load_mlflow_of, load_results  # noqa: E402
from analysis.plots import make_plots  # noqa: E402
from analysis.tables import beta_edges, over_seeds, summarize  # noqa: E402
from eqsearch.cli import main  # noqa: E402
from eqsearch.search import results as R  # noqa: E402
from eqsearch.search.space import spec_from_tree  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRIALS = 6
EPOCHS = 3


def tiny_space() -> dict:
    """The quickstart space on a small VF-MLP with the GDU check on: every table has data."""
    tree = yaml.safe_load((ROOT / "search_spaces" / "quickstart.yaml").read_text())
    tree["name"] = "analysis-test"
    tree["base"]["data"]["max_batches"] = 6
    tree["base"]["model"].update(kind="vf_mlp", archi=[64, 32, 10])
    tree["base"]["train"].update(epochs=EPOCHS, check_thm=True)
    tree["space"]["model.loss"] = {"choice": ["mse", "cel"]}
    tree["search"].update(num_samples=TRIALS, seed=1)
    tree["tracking"]["experiment"] = "analysis-test"
    return tree


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    from eqsearch.search import driver

    tmp = tempfile.mkdtemp(prefix="eqs-ray-", dir="/tmp")
    driver.quiet()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=tmp,
             logging_level="ERROR")
    try:
        folder = tmp_path_factory.mktemp("analysis") / "results"
        driver.run_search(spec_from_tree(tiny_space(), "analysis-test.yaml"), folder, show=False,
                          notify=lambda m: None)
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


@pytest.fixture(scope="module")
def search(results):
    return load_results(results)


def raw_trials(results: Path) -> dict[str, dict]:
    """Per trial, straight from Tune's files: sampled params, every reported epoch."""
    out = {}
    for folder in sorted((results / R.TUNE_DIR / "analysis-test").glob("ep_*")):
        params = json.loads((folder / "params.json").read_text())
        reports = [json.loads(line) for line in (folder / "result.json").read_text().splitlines() if line.strip()]
        out[folder.name] = {"params": params, "reports": reports, "last": reports[-1]}
    return out


def test_one_row_per_trial_with_the_right_stop_reason(search, results):
    raw = raw_trials(results)
    t = search.trials
    assert len(t) == TRIALS == len(raw) and t["trial_name"].is_unique
    for row in t.to_dict("records"):
        trial = raw[row["trial_name"]]
        epochs = len(trial["reports"])
        assert row["epochs_run"] == epochs
        assert row["stop_reason"] == (R.COMPLETED if epochs == EPOCHS else R.ASHA_STOPPED)
        assert row["test_acc"] == trial["last"]["test_acc"]
        assert row["wall_seconds"] == pytest.approx(sum(r["epoch_seconds"] for r in trial["reports"]))
        phases = 2 if trial["params"]["rule.estimator"] == "symmetric" else 1
        steps = 20 + trial["params"]["rule.T2"] * phases  # base rule.T1 is 20
        assert row["relaxation_steps"] == epochs * 6 * steps  # 6 batches per epoch (data.max_batches)
    assert set(t["stop_reason"]) == {R.COMPLETED, R.ASHA_STOPPED}
    assert len(search.curves) == t["epochs_run"].sum()
    assert {"angle_B1", "gdu_angle", "gdu_rel_error"} <= set(t.columns)
    assert "config.optim.lrs[0]" in search.searched() and "config.model.loss" in search.searched()


def at(report_list: list[dict], epoch: int) -> dict | None:
    return report_list[epoch - 1] if len(report_list) >= epoch else None


@pytest.mark.parametrize("epoch", [None, 1, EPOCHS])
def test_summary_numbers_equal_those_recomputed_from_raw_results_at_one_epoch(search, results, epoch):
    """Every cell is recomputed from Tune's raw reports at the summary's epoch, over exactly the
    trials that reached it: no cell mixes fidelities."""
    raw = raw_trials(results)
    s = summarize(search.trials, search.curves, "test_acc", "max", searched=search.searched(), epoch=epoch)
    runs = sorted((len(r["reports"]) for r in raw.values()), reverse=True)
    assert s.epoch == (epoch or runs[TRIALS // 2])  # the largest epoch more than half the trials reached
    e = s.epoch
    rep = {n: at(r["reports"], e) for n, r in raw.items() if at(r["reports"], e) is not None}
    assert sorted(s.frame["trial_name"]) == sorted(rep) and (s.frame["fidelity_epoch"] == e).all()
    acc = {n: r["test_acc"] for n, r in rep.items()}
    est = {n: raw[n]["params"]["rule.estimator"] for n in rep}
    beta = {n: raw[n]["params"]["rule.beta"] for n in rep}
    loss = {n: raw[n]["params"]["model.loss"] for n in rep}

    table = s.tables["by_estimator_beta"]
    assert table["n"].sum() == len(rep)
    for row in table.itertuples(index=False):
        lo, hi = (float(x) for x in row.beta_bin.strip("[)").split(","))
        vals = [acc[n] for n in rep if est[n] == row.estimator and lo <= beta[n] < hi]
        assert row.n == len(vals)
        assert row.mean == pytest.approx(np.mean(vals), abs=1e-12)
        assert row.max == max(vals)
        if len(vals) > 1:
            assert row.std == pytest.approx(np.std(vals, ddof=1), abs=1e-12)
        else:
            assert math.isnan(row.std)

    for row in s.tables["by_loss"].itertuples(index=False):
        vals = [acc[n] for n in rep if loss[n] == row[0]]
        assert (row.n, row.mean) == (len(vals), pytest.approx(np.mean(vals), abs=1e-12))

    angle = {n: np.mean([v for k, v in r.items() if k.startswith("angle_B")]) for n, r in rep.items()}
    table = s.tables["by_weight_angle"]
    assert table["n"].sum() == len(rep)
    for row in table.itertuples(index=False):
        lo, hi = (float(x) for x in row.angle_bin.strip("[)").split(","))
        vals = [acc[n] for n in rep if lo <= angle[n] < hi]
        assert (row.n, row.mean) == (len(vals), pytest.approx(np.mean(vals), abs=1e-12))

    if len(rep) > 2:
        corr = s.tables["gradient_angle_correlation"].set_index("diagnostic")
        names = sorted(rep)
        x = [rep[n]["gdu_angle"] for n in names]
        y = [acc[n] for n in names]
        assert corr.loc["gdu_angle", "n"] == len(rep)
        assert corr.loc["gdu_angle", "pearson"] == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-9)

    stops = s.tables["stop_reasons"].set_index("stop_reason")["n"]
    assert stops.sum() == TRIALS and stops[R.COMPLETED] == sum(len(r["reports"]) == EPOCHS for r in raw.values())
    # the best trials: only those that ran the full budget, by their final value
    top = s.tables["top_trials"]
    assert set(top["trial_name"]) <= {n for n, r in raw.items() if len(r["reports"]) == EPOCHS}
    full = sorted((r["last"]["test_acc"] for r in raw.values() if len(r["reports"]) == EPOCHS), reverse=True)
    assert list(top["test_acc"]) == full[:len(top)]


def test_by_rung_compares_the_trials_at_each_asha_rung(search, results):
    raw = raw_trials(results)
    s = summarize(search.trials, search.curves, "test_acc", "max", searched=search.searched())
    stopped = {len(r["reports"]) for r in raw.values() if len(r["reports"]) < EPOCHS}
    table = s.tables["by_rung"]
    assert sorted(set(table["rung_epoch"])) == sorted(stopped | {EPOCHS})
    for row in table.itertuples(index=False):
        vals = [r["reports"][row.rung_epoch - 1]["test_acc"] for r in raw.values()
                if len(r["reports"]) >= row.rung_epoch and r["params"]["rule.estimator"] == row.estimator]
        assert (row.n, row.mean) == (len(vals), pytest.approx(np.mean(vals), abs=1e-12))


def test_importance_is_optunas_fanova_at_the_summary_epoch(search):
    s = summarize(search.trials, search.curves, "test_acc", "max", searched=search.searched(), epoch=1)
    imp = s.tables["param_importance"]
    assert (imp["evaluator"] == "optuna fANOVA").all() and (imp["n"] == TRIALS).all()
    assert imp["importance"].sum() == pytest.approx(1.0) and (imp["importance"] >= 0).all()
    assert "config.rule.beta" in set(imp["parameter"])
    assert summarize(search.trials, search.curves, "test_acc", "max", searched=search.searched(),
                     epoch=1).tables["param_importance"].equals(imp)  # seeded: the same shares again


def test_mean_and_std_over_seeds_of_repeated_configurations(search):
    twice = search.trials.copy()
    twice["config.train.seed"] = 1
    twice["test_acc"] = twice["test_acc"] - 0.1
    both = pd.concat([search.trials, twice], ignore_index=True)
    table = over_seeds(both, "test_acc", [])
    assert len(table) == TRIALS and (table["n"] == 2).all()
    assert np.allclose(table["std"], np.std([0.0, 0.1], ddof=1))
    assert over_seeds(search.trials, "test_acc", []) is None


def test_mlflow_source_gives_the_same_trials(search, results):
    m = load_mlflow_of(results)
    assert len(m.trials) == len(search.trials)
    a = search.trials.set_index("trial_id").sort_index()
    b = m.trials.set_index("trial_id").sort_index()
    assert list(a.index) == list(b.index)
    assert (a["test_acc"] == b["test_acc"]).all() and (a["stop_reason"] == b["stop_reason"]).all()
    assert (a["epochs_run"] == b["epochs_run"]).all() and (a["gdu_angle"] == b["gdu_angle"]).all()
    assert all(search.configs[k] == m.configs[k] for k in search.configs)
    assert (m.metric, m.mode) == ("test_acc", "max")


def test_plots_are_written(search, tmp_path):
    made, skipped = make_plots(search, summarize(search.trials, search.curves, searched=search.searched()), tmp_path)
    assert skipped == {}
    assert set(made) == {"learning_curves", "metric_vs_beta", "metric_vs_angle", "importance",
                         "parallel_coordinates", "rungs"}
    for path in made.values():
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, path


def test_exported_configs_rerun_to_the_same_final_accuracy(search, results, tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["export", str(results), "--top", str(TRIALS), "--out", str(tmp_path / "exp")])
    assert r.exit_code == 0, r.output
    assert r.output.count("eqsearch train --config ") == TRIALS
    t = search.trials.set_index("trial_name")
    exported = sorted((tmp_path / "exp").glob("*.yaml"))
    # the best trial, and one ASHA stopped (rerun with the epochs it ran)
    stopped = next(p for p in exported if t.loc[p.stem[3:], "stop_reason"] == R.ASHA_STOPPED)
    for path in (exported[0], stopped):
        name = path.stem[3:]
        assert yaml.safe_load(path.read_text())["train"]["epochs"] == t.loc[name, "epochs_run"]
        run = tmp_path / f"rerun-{name}"
        r = runner.invoke(main, ["train", "--config", str(path), "--out", str(run), "--quiet"])
        assert r.exit_code == 0, r.output
        from eqsearch.training import read_metrics

        assert read_metrics(run)[-1]["test_acc"] == t.loc[name, "test_acc"]
        assert read_metrics(run)[-1]["train_loss"] == t.loc[name, "train_loss"]


def test_cli_summarize_report_compare(results, tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["summarize", str(results), "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    assert "by_estimator_beta" in r.output
    for name in ("by_estimator_beta", "by_loss", "by_weight_angle", "gradient_angle_correlation", "top_trials"):
        assert (tmp_path / "s" / f"{name}.csv").stat().st_size > 0
    assert "## by_estimator_beta" in (tmp_path / "s" / "summary.md").read_text()
    assert len(list((tmp_path / "s" / "plots").glob("*.png"))) == 6

    r = runner.invoke(main, ["report", str(results), "--out", str(tmp_path / "rep" / "report.html")])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "rep" / "report.html").read_text()
    assert page.count("<img src='data:image/png;base64,") == 6 and "<h2>by_estimator_beta</h2>" in page
    assert "src='plots/" not in page
    r = runner.invoke(main, ["report", str(results), "--out", str(tmp_path / "rep" / "report.md")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "rep" / "report.md").read_text().count("](plots/") == 6  # Markdown links the files

    uri = R.local_store_uri(results)
    out = tmp_path / "cmp"
    (tmp_path / "cwd").mkdir()
    with runner.isolated_filesystem(temp_dir=tmp_path / "cwd") as cwd:
        r = runner.invoke(main, ["compare", str(results), "mlflow:analysis-test", "--mlflow-uri", uri,
                                 "--top", "2", "--out", str(out)])
        assert r.exit_code == 0, r.output
        assert list(Path(cwd).iterdir()) == []  # nothing in the current folder
    table = pd.read_csv(out / "by_estimator_beta.csv")
    assert set(table["search"]) == {"analysis-test#1", "analysis-test#2"}
    a, b = (table[table["search"] == s].drop(columns="search").reset_index(drop=True) for s in sorted(set(table["search"])))
    pd.testing.assert_frame_equal(a, b)
    top = pd.read_csv(out / "top_trials.csv")  # the top 2 of each search, among those that ran every epoch
    full = sum(len(t["reports"]) == EPOCHS for t in raw_trials(results).values())
    assert list(top.groupby("search").size()) == [min(2, full)] * 2 and (top["epochs_run"] == EPOCHS).all()
    for name in ("plots/best_so_far.png", "plots/metric_distribution.png", "report.html", "summary.md"):
        assert (out / name).stat().st_size > 0 and name in r.output, name
    assert (out / "report.html").read_text().count("<img src='data:image/png;base64,") == 2
    assert f"in {out}" in r.output

    r = runner.invoke(main, ["compare", "mlflow:analysis-test", str(results), "--mlflow-uri", uri])
    assert r.exit_code == 2 and "--out DIR" in r.output  # no results folder to default to
    r = runner.invoke(main, ["compare", str(results), "mlflow:analysis-test", "--mlflow-uri", uri])
    assert r.exit_code == 0, r.output
    assert (results / "comparison" / "report.html").is_file()  # the default: FIRST_SOURCE/comparison
    shutil.rmtree(results / "comparison")


def test_bad_input_is_one_error_line(results, tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["summarize", str(tmp_path)])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert f"{tmp_path}: not the results folder of a search" in r.output
    r = runner.invoke(main, ["summarize", str(results), "--metric", "accuracy"])
    assert r.exit_code == 2 and "metric 'accuracy': unknown; allowed:" in r.output and "test_acc" in r.output
    r = runner.invoke(main, ["summarize", str(results), "--at-epoch", str(EPOCHS + 1)])
    assert r.exit_code == 2 and f"--at-epoch: got {EPOCHS + 1}; allowed: an epoch from 1 to {EPOCHS}" in r.output
    r = runner.invoke(main, ["export", "mlflow:nope", "--mlflow-uri", f"sqlite:///{results / R.MLFLOW_DB}"])
    assert r.exit_code == 2 and "no MLflow experiment 'nope'; allowed: " in r.output


def test_markdown_cells_keep_literal_pipes():
    import pandas as pd

    from analysis.tables import markdown

    table = markdown(pd.DataFrame({"parameter": ["rule.beta"], "kind": ["spearman |rho|"], "importance": [0.5]}))
    rows = table.splitlines()
    assert all(len(r.replace("\\|", "").split("|")) == 5 for r in rows), table  # 3 cells each
    assert "spearman \\|rho\\|" in rows[2]


def test_by_sparse_coding_groups_lca_trials_by_mode_and_lambda():
    from analysis.tables import by_sparse_coding

    trials = pd.DataFrame({"config.model.dict_training": ["pretrained", "learn", "learn", "finetune"],
                           "config.model.lca.lam": [0.12, 0.15, 0.6, 0.3],
                           "test_acc": [0.8, 0.7, 0.5, 0.9], "test_lca_sparsity": [0.3, 0.2, 0.05, 0.25]})
    table = by_sparse_coding(trials, "test_acc", []).set_index(["config.model.dict_training", "lam_bin"])
    assert table.loc[("learn", "[0.1, 0.2)"), "mean"] == 0.7
    assert table.loc[("learn", "[0.5, 1)"), "mean_test_lca_sparsity"] == 0.05
    assert table["n"].sum() == 4
    assert by_sparse_coding(trials.drop(columns="config.model.lca.lam"), "test_acc", []) is None


def test_by_relaxation_weighs_accuracy_against_the_steps_run():
    from analysis.tables import by_relaxation

    trials = pd.DataFrame({"config.rule.order": ["sync", "sync", "async", "async", "sync"],
                           "config.rule.tol": [0.0, 0.0, 0.0, 1e-3, 1e-3],
                           "test_acc": [0.9, 0.8, 0.85, 0.83, 0.86], "train_steps": [40.0, 40.0, 40.0, 22.0, 31.0],
                           "epoch_seconds": [4.0, 4.2, 4.1, 2.3, 3.0]})
    table = by_relaxation(trials, "test_acc", []).set_index(["config.rule.order", "config.rule.tol"])
    assert table.loc[("sync", 0.0), "n"] == 2 and abs(table.loc[("sync", 0.0), "mean"] - 0.85) < 1e-12
    assert table.loc[("async", 1e-3), "mean_train_steps"] == 22.0
    assert abs(table.loc[("sync", 0.0), "mean_epoch_seconds"] - 4.1) < 1e-12
    assert table["n"].sum() == 5
    same = trials.assign(**{"config.rule.order": "sync", "config.rule.tol": 0.0})
    assert by_relaxation(same, "test_acc", []) is None  # nothing varies: no table
    assert by_relaxation(trials.drop(columns="config.rule.tol"), "test_acc", []) is None


def test_relaxation_steps_count_the_steps_each_epoch_ran():
    from analysis.cost import relaxation_steps
    from eqsearch.config import from_dict

    cfg = from_dict(overrides={"data.max_batches": 6, "rule.T1": 20, "rule.T2": 8, "rule.tol": 1e-3,
                               "rule.estimator": "one_sided"})
    full = cfg.rule.steps_per_batch()
    assert full == 28  # one-sided: T1 + T2
    # epoch 1 ended its phases early (22.5 steps per batch); epoch 2 logged no train_steps
    assert relaxation_steps(cfg, [{"epoch": 1, "train_steps": 22.5}, {"epoch": 2}]) == 6 * (22.5 + full)
    assert relaxation_steps(cfg, []) == 0.0


# ---------------------------------------------------------------------- readable plots
def shown_tick_labels(axis) -> list:
    """The non-empty tick labels an Axis draws (ticks inside its view, major and minor), as of
    the figure's last draw."""
    lo, hi = sorted(axis.get_view_interval())
    slack = 1e-9 * (hi - lo)
    ticks = [t for t in axis.get_major_ticks() + axis.get_minor_ticks() if lo - slack <= t.get_loc() <= hi + slack]
    return [lab for t in ticks for lab in (t.label1, t.label2) if lab.get_visible() and lab.get_text()]


def is_number(text: str) -> bool:
    try:
        float(text.replace("\u2212", "-"))  # matplotlib writes negative numbers with a minus sign
    except ValueError:
        return False
    return True


def assert_readable(fig) -> None:
    """Every visible axis of ``fig`` shows a scale (2+ labelled values, or the names of its
    categories) and no two tick labels of the figure overlap."""
    import itertools

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if not axis.get_visible():
                continue
            labels = shown_tick_labels(axis)
            texts = [lab.get_text() for lab in labels]
            assert len(labels) >= (2 if all(map(is_number, texts)) else 1), (ax.get_title() or ax.get_label(),
                                                                             axis.axis_name, texts)
            boxes += [(lab.get_text(), lab.get_window_extent(renderer)) for lab in labels]
    for (ta, a), (tb, b) in itertools.combinations(boxes, 2):
        overlap = a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1
        assert not overlap, f"tick labels {ta!r} and {tb!r} overlap"


def test_the_readability_check_catches_overlapping_ticks():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.set_xticks(np.linspace(0, 1, 40))
    with pytest.raises(AssertionError, match="overlap"):
        assert_readable(fig)
    plt.close(fig)


def synthetic_trials(betas) -> pd.DataFrame:
    """Trials with a log-range β, an integer T2, a linear lr, categories and a conditional
    category (``model.softmax`` only for ``cel``); every third trial stopped early."""
    n = len(betas)
    loss = ["mse", "cel"] * (n // 2) + ["mse"] * (n % 2)
    return pd.DataFrame({
        "trial_name": [f"t{i}" for i in range(n)], "search": "s",
        "estimator": [("one_sided", "symmetric", "random_sign")[i % 3] for i in range(n)],
        "epochs_run": [1 if i % 3 == 2 else 3 for i in range(n)], "max_epochs": 3,
        "config.rule.beta": list(betas), "config.rule.T2": [4 + i % 9 for i in range(n)],
        "config.optim.lrs[0]": np.linspace(0.1, 0.3, n), "config.model.loss": loss,
        "config.model.softmax": [(i % 4 == 1) if loss[i] == "cel" else None for i in range(n)],
        "test_acc": np.random.default_rng(0).uniform(0.1, 0.9, n)})


def test_parallel_coordinates_give_every_axis_its_own_scale():
    import matplotlib.pyplot as plt

    from analysis.plots import parallel_coordinates

    trials = synthetic_trials(np.geomspace(1e-3, 1.0, 12))
    searched = ["config.model.loss", "config.model.softmax", "config.optim.lrs[0]", "config.rule.T2",
                "config.rule.beta"]
    fig = parallel_coordinates(trials, "test_acc", "max", searched, "synthetic")
    host, *axes = fig.axes
    fig.canvas.draw()
    assert [a.get_label() for a in axes] == [*searched, "test_acc"]  # one axis per column, in order
    names = [t.get_text() for t in host.get_xticklabels()]
    for i, (ax, name) in enumerate(zip(axes, names)):
        col = ax.get_label()
        texts = [t.get_text() for t in shown_tick_labels(ax.yaxis)]
        assert name.startswith(col.removeprefix("config.")) and len(texts) >= 2, (col, texts)
        assert (ax.get_yscale() == "log") == (col == "config.rule.beta") == ("(log scale)" in name)
        if col in ("config.model.loss", "config.model.softmax"):
            assert texts == sorted(trials[col].dropna().astype(str).unique())  # the category names
        else:
            lo, hi = ax.get_ylim()
            assert all(lo <= float(t) <= hi for t in texts)  # values in the column's own units
        if col == "config.rule.T2":
            assert all(float(t).is_integer() for t in texts)
        # every line crosses this axis at its trial's value, read back on the axis' own scale
        for line in host.get_lines():
            row = trials[trials["trial_name"] == line.get_gid()].iloc[0]
            height = line.get_ydata()[i]
            if pd.isna(row[col]):
                assert np.isnan(height)  # a conditional parameter the trial lacks: the line breaks
                continue
            value = ax.transData.inverted().transform(host.transData.transform((i, height)))[1]
            if col in ("config.model.loss", "config.model.softmax"):
                labels = dict(zip(ax.get_yticks(), [t.get_text() for t in ax.get_yticklabels()]))
                assert labels[round(value)] == str(row[col])
            else:
                assert value == pytest.approx(float(row[col]), rel=1e-6)
    stopped = (trials["epochs_run"] < trials["max_epochs"]).sum()
    assert sum(line.get_linestyle() == "--" for line in host.get_lines()) == stopped  # dashed: stopped early
    assert_readable(fig)
    plt.close(fig)

    # one value on an axis (e.g. one loss among the trials that reached the compared epoch): in the middle
    one = trials.assign(**{"config.model.loss": "cel", "config.rule.T2": 7})
    fig = parallel_coordinates(one, "test_acc", "max", ["config.model.loss", "config.rule.T2"], "one value")
    fig.canvas.draw()
    host, loss, t2, _ = fig.axes
    assert [t.get_text() for t in shown_tick_labels(loss.yaxis)] == ["cel"]
    values = [float(t.get_text()) for t in shown_tick_labels(t2.yaxis)]
    assert len(values) >= 2 and min(values) < 7 < max(values)  # a scale around the one value
    assert all(list(line.get_ydata()[:2]) == [0.5, 0.5] for line in host.get_lines())
    assert_readable(fig)
    plt.close(fig)


@pytest.mark.parametrize("betas", [np.geomspace(1e-4, 1.0, 12), np.linspace(0.13, 0.7, 12)])
def test_beta_axis_has_a_few_plain_log_ticks_and_hollow_marks_for_stopped_trials(betas):
    import matplotlib.pyplot as plt

    from analysis.plots import metric_vs_beta

    trials = synthetic_trials(betas)
    fig = metric_vs_beta(trials, "test_acc", "synthetic")
    ax, = fig.axes
    fig.canvas.draw()
    assert ax.get_xscale() == "log" and "log scale" in ax.get_xlabel()
    texts = [t.get_text() for t in shown_tick_labels(ax.xaxis)]
    assert 2 <= len(texts) <= 6 and all(float(t) > 0 for t in texts), texts  # plain numbers, no minor labels
    hollow = sum(len(c.get_offsets()) for c in ax.collections if len(c.get_facecolors()) == 0)
    assert hollow == (trials["epochs_run"] < trials["max_epochs"]).sum()
    assert_readable(fig)
    plt.close(fig)


def test_every_plot_of_a_search_and_of_a_comparison_is_readable(search):
    import matplotlib.pyplot as plt

    from analysis.load import combine
    from analysis.plots import comparison_figures, search_figures

    s = summarize(search.trials, search.curves, searched=search.searched())
    figures, skipped = search_figures(search, s)
    assert skipped == {} and len(figures) == 6
    imp = figures["importance"]
    assert len(imp.axes) == 1 and imp.axes[0].get_xlim() == (0, 1) and "fANOVA" in imp.axes[0].get_xlabel()
    assert [t.get_text() for t in imp.axes[0].get_yticklabels()][::-1] == [
        p.removeprefix("config.") for p in s.tables["param_importance"]["parameter"]]
    angle = figures["metric_vs_angle"]  # one panel per angle, each with its own x quantity
    assert len({ax.get_xlabel() for ax in angle.axes}) == len(angle.axes) == 2

    trials, curves = combine([search, search])
    both = summarize(trials, curves, searched=search.searched(), extra=["search"])
    compared, skipped = comparison_figures(trials, both, "max")
    assert skipped == {} and set(compared) == {"best_so_far", "metric_distribution"}
    best = max(search.trials["test_acc"])
    for ax in compared["best_so_far"].axes[:2]:  # trial number | cumulative training time
        lines = ax.get_lines()
        assert len(lines) == 2 and all(line.get_ydata()[-1] == best for line in lines)
    dist = compared["metric_distribution"].axes[0]
    assert [t.get_text().split("\n")[0] for t in dist.get_xticklabels()] == ["analysis-test#1", "analysis-test#2"]
    for name, fig in {**figures, **compared}.items():
        try:
            assert_readable(fig)
        finally:
            plt.close(fig)


def test_report_page_shows_its_plots_in_a_browser_with_no_external_file(results, tmp_path):
    """Headless Chromium opens the HTML report copied alone into an empty folder: every plot is
    a data: URI that decodes to an image."""
    import re
    import subprocess

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).is_file():
        pytest.skip("no Chromium here (/usr/bin/chromium): the browser check needs it")
    r = CliRunner().invoke(main, ["report", str(results), "--out", str(tmp_path / "made" / "report.html")])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "made" / "report.html").read_text()
    assert not re.search(r"<(link|script)\b", page)  # no external style or script either
    assert all(v.startswith("data:image/png;base64,") for v in re.findall(r"(?:src|href)='([^']*)'", page))
    probe = ("<script>addEventListener('load', () => { const p = document.createElement('pre'); p.id = 'probe';"
             "p.textContent = JSON.stringify([...document.images].map(i => [i.src.slice(0, 22), i.complete,"
             " i.naturalWidth])); document.body.appendChild(p); });</script></body>")
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "report.html").write_text(page.replace("</body>", probe))
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--disable-component-update", "--no-first-run", "--disable-sync",
                          f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", (alone / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=60).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom)
    assert found, dom[-2000:]
    images = json.loads(found.group(1))
    assert len(images) == 6
    assert all(src == "data:image/png;base64," and done and width > 0 for src, done, width in images), images
