"""The run commands as a user types them: train, evaluate, gducheck, errors."""

from __future__ import annotations

import csv

import pytest
from click.testing import CliRunner

from eqsearch.cli import main
from eqsearch.training import read_metrics


def run(*argv):
    return CliRunner().invoke(main, [str(a) for a in argv])


def test_train_resume_and_evaluate(tmp_path):
    out = tmp_path / "run"
    r = run("train", "--epochs", 1, "--max-batches", 5, "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    assert "final test accuracy" in r.output and str(out) in r.output
    r = run("train", "--resume", out, "--epochs", 2, "--quiet")
    assert r.exit_code == 0, r.output
    assert [m["epoch"] for m in read_metrics(out)] == [1, 2]
    r = run("evaluate", out, "--split", "both", "--checkpoint", "latest")
    assert r.exit_code == 0, r.output
    assert "train accuracy" in r.output and "test accuracy" in r.output and "epoch 2" in r.output
    r = run("train", "--config", out / "config.yaml", "--out", tmp_path / "again", "--quiet")
    assert r.exit_code == 0, r.output
    assert read_metrics(tmp_path / "again")[-1]["test_acc"] == read_metrics(out)[-1]["test_acc"]


def test_progress_lines_show_epochs_and_eta(tmp_path):
    r = run("train", "--epochs", 2, "--max-batches", 3, "--out", tmp_path)
    assert r.exit_code == 0, r.output
    assert "epoch 1/2" in r.output and "epoch 2/2" in r.output and "eta" in r.output


def test_gpu_request_falls_back_to_cpu_with_a_notice(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    r = run("train", "--device", "0", "--epochs", 1, "--max-batches", 2, "--out", tmp_path, "--quiet")
    assert r.exit_code == 0, r.output
    assert "none is available; using the CPU" in r.output


def test_gducheck_writes_csv_and_plot(tmp_path):
    r = run("gducheck", "--act", "tanh", "--betas", "0.0", "0.01", "--T1", 60, "--T2", 5, "--thirdphase",
            "--task", "digits", "--archi", 64, 32, 10, "--out", tmp_path)
    assert r.exit_code == 0, r.output
    with (tmp_path / "gdu.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["estimator"] for r in rows} == {"one_sided", "one_sided_minus", "symmetric"}
    sym = [r for r in rows if r["estimator"] == "symmetric" and r["kind"] == "synapses"]
    assert max(float(r["angle"]) for r in sym) < 5.0
    assert (tmp_path / "gdu.png").stat().st_size > 5000
    assert "GDU check" in r.output


def test_train_todo_gducheck_dispatches(tmp_path):
    r = run("train", "--todo", "gducheck", "--task", "digits", "--archi", 64, 16, 10, "--T1", 20, "--T2", 3,
            "--out", tmp_path)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "gdu.csv").exists()


@pytest.mark.parametrize("argv, message", [
    (["train", "--set", "rule.beta=-1"], "rule.beta: got -1.0; allowed: a number > 0.0"),
    (["train", "--model", "MLP", "--task", "MNIST", "--lrs", "0.1", "0.1", "--data-root", "/nonexistent"],
     "data.root: '/nonexistent' is not a folder"),
    (["train", "--resume", "/nonexistent"], "has no checkpoint_latest.pt"),
    (["evaluate", "."], "no checkpoint_best.pt"),
])
def test_errors_exit_2_with_one_clear_line(argv, message):
    r = run(*argv)
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert "Traceback" not in r.output


def test_help_lists_native_and_seed_flags():
    r = run("train", "--help")
    assert r.exit_code == 0
    for flag in ("--config", "--set", "--data-root", "--max-batches", "--thirdphase", "--betas", "--load-path"):
        assert flag in r.output


def test_the_cli_imports_no_heavy_library_until_a_command_needs_it():
    """``eqsearch --help`` (and every command's help) starts without torch, Ray, MLflow or pandas."""
    import subprocess
    import sys

    code = ("import sys; from eqsearch.cli import main; "
            "print(sorted(m for m in ('torch', 'ray', 'mlflow', 'pandas', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_task_names_are_one_list_in_any_letter_case(tmp_path):
    from eqsearch.cli.run_flags import build_parser, config_from_args, parse

    parser = build_parser("eqsearch train", "")
    for spelled in ("FashionMNIST", "FASHIONMNIST", "fashionmnist"):
        assert config_from_args(parse(parser, ["--task", spelled])).data.dataset == "fashion_mnist"
    r = CliRunner().invoke(main, ["train", "--task", "SVHN"])
    assert r.exit_code == 2 and "got 'SVHN'; allowed: MNIST, CIFAR10, FashionMNIST, digits" in r.output
    assert "{MNIST,CIFAR10,FashionMNIST,digits}" in CliRunner().invoke(main, ["train", "--help"]).output
    r = CliRunner().invoke(main, ["status", str(tmp_path)])
    assert r.exit_code == 2 and "not the results folder of a search" in r.output
