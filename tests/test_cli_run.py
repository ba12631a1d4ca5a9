"""The run commands as a user types them: train, evaluate, gducheck, errors."""

from __future__ import annotations

import csv
import re

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


def help_rows(command):
    """{flag: description} of the flag rows of ``eqsearch COMMAND --help`` (click's layout: a row at
    indent 2, its description after the flag and its value, or from the next line when they are long,
    continued on lines indented to the description column)."""
    r = run(command, "--help")
    assert r.exit_code == 0, r.output
    rows, flag = {}, None
    for line in r.output.splitlines():
        m = re.match(r"^  (-[^ ,]+(?:, -[^ ,]+)*)(.*)$", line)
        if m:
            flag = m.group(1).split(", ")[-1]
            rows[flag] = re.split(r" {2,}", m.group(2), maxsplit=1)[1:]
        elif flag and line.startswith(" " * 10):
            rows[flag].append(line.strip())
        else:
            flag = None
    return r.output, {flag: " ".join(parts) for flag, parts in rows.items()}


TRAIN_ONLY_ARGV = [["--resume", "runs/x"], ["--epochs", "3"], ["--max-batches", "2"], ["--quiet"],
                   ["--todo", "train"], ["--save"], ["--lr-decay"], ["--action", "train"], ["--log_dir", "x"]]


@pytest.mark.parametrize("command", ["train", "gducheck"])
def test_run_command_help_is_clicks_with_a_description_for_every_flag(command):
    text, rows = help_rows(command)
    assert text.startswith(f"Usage: eqsearch {command} [OPTIONS]\n")
    headings = ["Options (eqsearch's own):", "Code base A flags (Laborieux et al., reference §2.10):",
                "Code base B flags (Ernoult et al., continual EP / C-VF, reference §3.9):",
                "Code base C flags (smonsays, energies and presets, reference §4.10):",
                "Code base D flags (EPLCANet, LCA-CNN, reference §5.8):", "Run config fields (--set FIELD=VALUE"]
    at = [text.find(h) for h in headings]
    assert -1 not in at and at == sorted(at), at
    assert "\n  rule.T1 " in text  # the fields --set takes
    assert len(rows) > 60
    assert {"--config", "--set", "--help", "--T1", "--size_tab", "--energy", "--lca_feats"} <= set(rows)
    assert [flag for flag, description in rows.items() if not description] == []
    assert rows["--T1"].startswith("free-phase steps (rule.T1)")
    assert "continual EP (§2.8)" in rows["--alg"] and "rule.alg" in rows["--alg"]


def test_gducheck_lists_only_its_own_flags():
    _, train_rows = help_rows("train")
    _, gdu_rows = help_rows("gducheck")
    assert set(gdu_rows) < set(train_rows)
    for argv in TRAIN_ONLY_ARGV:
        assert argv[0] in train_rows and argv[0] not in gdu_rows
    assert {"--out", "--load-path", "--T1", "--T2", "--betas", "--thirdphase", "--alg", "--cep", "--mbs"} <= set(gdu_rows)


@pytest.mark.parametrize("argv", TRAIN_ONLY_ARGV, ids=lambda argv: argv[0])
def test_a_train_only_flag_given_to_gducheck_fails_naming_the_flag_and_the_command(argv):
    r = run("gducheck", "--task", "digits", *argv, "--T1", 5)
    assert r.exit_code == 2, r.output
    assert f"Error: {argv[0]}: not a flag of eqsearch gducheck" in r.output
    assert r.output.startswith("Usage: eqsearch gducheck [OPTIONS]") and "Traceback" not in r.output


def test_the_cli_imports_no_heavy_library_until_a_command_needs_it():
    """``eqsearch --help`` and the run commands' help start without torch, Ray, MLflow or pandas."""
    import subprocess
    import sys

    code = ("import sys, contextlib, io; from eqsearch.cli import main\n"
            "for argv in (['--help'], ['train', '--help'], ['gducheck', '--help']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit): main(argv)\n"
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
    assert "--task [MNIST|CIFAR10|FashionMNIST|digits]" in CliRunner().invoke(main, ["train", "--help"]).output
    r = CliRunner().invoke(main, ["status", str(tmp_path)])
    assert r.exit_code == 2 and "not the results folder of a search" in r.output


def test_console_script_exit_keeps_output_files_and_status(tmp_path):
    """The installed ``eqsearch`` ends by os._exit from its last exit handler (no interpreter
    teardown): the output is still all there, the files complete, and a failure keeps its status
    (the searches' subprocess tests check the same after Ray and MLflow ran)."""
    import subprocess
    import sys
    from pathlib import Path

    import torch

    exe = str(Path(sys.executable).with_name("eqsearch"))
    out = tmp_path / "run"
    r = subprocess.run([exe, "train", "--epochs", "2", "--max-batches", "3", "--out", str(out), "--quiet"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip().endswith(f"run folder {out}")
    assert [m["epoch"] for m in read_metrics(out)] == [1, 2]
    assert torch.load(out / "checkpoint_latest.pt", weights_only=False)["epoch"] == 2
    r = subprocess.run([exe, "evaluate", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "test accuracy" in r.stdout, r.stderr
    r = subprocess.run([exe, "train", "--set", "rule.estimator=bogus"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "rule.estimator" in r.stderr


@pytest.mark.parametrize("body, status, text, out", [
    ("raise ZeroDivisionError('boom')", 1, "ZeroDivisionError: boom", ""),  # uncaught: traceback, status 1
    ("sys.exit('stopped: boom')", 1, "stopped: boom", ""),                    # a message: printed, status 1
    ("sys.exit(3)", 3, "", ""),
    ("print('done', end='')", 0, "", "done"),                                 # unflushed output kept
])
def test_console_script_status_matches_pythons_own(body, status, text, out):
    """The last exit handler ends the process with the status Python itself would give."""
    import subprocess
    import sys

    code = ("import sys, eqsearch.cli as cli\n"
            f"def main():\n    {body}\n"
            "cli.main = main\ncli.run()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == status, r.stderr
    assert text in r.stderr and r.stdout == out
