"""``eqsearch lca-pretrain`` and code base D's commands (reference §5.3, §5.8, §5.9): every
command parses with its original flags and trains 2 batches (on synthetic CIFAR-shaped data,
with a small batch, few steps and few LCA iterations: no CIFAR-10 files here); the pretrained
and finetune runs load a dictionary written by lca-pretrain."""

from __future__ import annotations

import csv
import shlex

import pytest
import torch
import yaml
from click.testing import CliRunner

from eqsearch.cli import main
from eqsearch.cli.lca_commands import lam_at
from eqsearch.cli.run_flags import build_parser, config_from_args, parse
from eqsearch.config import ConfigError
from eqsearch.data import Dataset
from eqsearch.models.lca import load_dictionary
from eqsearch.training import Trainer, read_metrics

README = ("--task CIFAR10 --optim sgd --mmt 0.9 --lr-decay --act my_hard_sig --todo train --mbs 128 --thirdphase "
          "--loss cel --softmax --fc 10 --save --device 0 ")
WDS4 = "--wds 3e-4 3e-4 3e-4 3e-4 "
LCA = ("--model LCACNN --channels 64 256 512 --kernels 3 3 3 --strides 1 1 1 --pools immmm --paddings 1 1 1 1 "
       "--lrs 0.25 0.15 0.1 0.08 " + WDS4 + "--lca_feats 64 --lca_lambda 0.25 --lca_tau 100 --lca_eta 0.05 "
       "--lca_iters 600 --lca_stride 2 --lca_ksize 9 --seed 2 --scale 0.5 ")
D_COMMANDS = {
    "rcnn": README + ("--model CNN --channels 64 128 256 512 --kernels 3 3 3 3 --strides 1 1 1 1 --pools mmmm "
                      "--paddings 1 1 1 1 --lrs 0.25 0.15 0.1 0.08 0.05 --wds 3e-4 3e-4 3e-4 3e-4 3e-4 --epochs 35 "
                      "--T1 250 --T2 50 --betas 0.0 1.0 --dict_training ''"),
    "lca_pretrained": README + LCA + "--epochs 120 --T1 250 --T2 50 --betas 0.0 0.5 --dict_training pretrained",
    "lca_finetune": README + LCA + "--epochs 120 --T1 250 --T2 50 --betas 0.0 0.5 --dict_training finetune",
    "lca_learn": README + LCA + "--epochs 120 --T1 250 --T2 50 --betas 0.0 0.5 --dict_training learn",
    "lca_script_finetune": README + LCA + ("--epochs 80 --T1 500 --T2 100 --betas 0.0 0.5 --scale_feedback 0.01 "
                                           "--dict_training finetune"),
    "plain_cnn_script": README + ("--model CNN --channels 64 256 512 --kernels 3 3 3 --strides 1 1 1 --pools immm "
                                  "--paddings 1 1 1 --lrs 0.25 0.15 0.1 0.08 --wds 3e-4 3e-4 3e-4 3e-4 --epochs 120 "
                                  "--T1 250 --T2 50 --betas 0.0 0.5 --dict_training ''"),
}


def run(*argv):
    return CliRunner().invoke(main, [str(a) for a in argv])


def parsed(command: str):
    return config_from_args(parse(build_parser("eqsearch train", ""), shlex.split(command)))


@pytest.fixture(scope="module")
def cifar_dictionary(tmp_path_factory):
    """A 64-atom 3×9×9 dictionary, learned for one batch on the synthetic CIFAR-shaped images."""
    out = tmp_path_factory.mktemp("dict")
    r = run("lca-pretrain", "--dataset", "synthetic_cifar", "--iters", 3, "--epochs", 1, "--batch-size", 8,
            "--max-batches", 1, "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    return out / "dictionary.pt"


def synthetic(n_train: int = 8, n_test: int = 4) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn((n_train + n_test, 3, 32, 32), generator=g) / 3
    y = torch.randint(0, 10, (n_train + n_test,), generator=g)
    return Dataset("synthetic", x[:n_train], y[:n_train], x[n_train:], y[n_train:], 10)


@pytest.mark.parametrize("name", list(D_COMMANDS))
def test_code_base_d_command_parses_and_trains_two_batches(name, cifar_dictionary):
    command = D_COMMANDS[name] + " --max-batches 2"
    if "pretrained" in command or "finetune" in command:  # code base D's path was hard-coded
        command += f" --set model.dictionary={cifar_dictionary}"
    cfg = parsed(command)
    m, r, o = cfg.model, cfg.rule, cfg.optim
    assert (cfg.data.dataset, cfg.data.batch_size, cfg.data.holdout) == ("cifar10", 128, 0.5)
    assert (r.alg, r.estimator, m.loss, m.softmax, m.act) == ("ep", "symmetric", "cel", True, "my_hard_sig")
    assert (o.momentum, o.lr_decay, cfg.train.device) == (0.9, True, "0")
    if name.startswith("lca"):
        assert m.kind == "lca_cnn" and m.dict_training == name.split("_")[-1]
        assert (m.channels, m.kernels, m.strides, m.paddings, m.pools) == ([256, 512], [3, 3], [1, 1], [1, 1], "mm")
        assert (m.lca.features, m.lca.lam, m.lca.tau, m.lca.eta, m.lca.iters, m.lca.stride, m.lca.ksize) == (
            64, 0.25, 100.0, 0.05, 600, 2, 9)
        assert (o.lrs, o.wds, m.scale, cfg.train.seed) == ([0.15, 0.1, 0.08], [3e-4] * 3, 0.5, 2)
        assert (r.T1, r.T2, r.beta) == ((500, 100, 0.5) if "script" in name else (250, 50, 0.5))
        assert m.scale_feedback == (0.01 if "script" in name else 1.0)
        assert m.dictionary == (None if m.dict_training == "learn" else str(cifar_dictionary))
    else:
        assert m.kind == "cnn"
        if name == "rcnn":
            assert (m.channels, m.pools, o.lrs, r.beta) == ([64, 128, 256, 512], "mmmm", [0.25, 0.15, 0.1, 0.08, 0.05],
                                                            1.0)
        else:  # the surplus pool letter is ignored, as in code base D
            assert (m.channels, m.pools, m.paddings, r.beta) == ([64, 256, 512], "imm", [1, 1, 1], 0.5)
    lca = {"model.lca.iters": 3, "model.lca.tau": 2.0} if m.kind == "lca_cnn" else {}  # a few steps that code
    small = cfg.replace({"data.batch_size": 4, "data.test_batch_size": 4, "rule.T1": 3, "rule.T2": 2,
                         "train.device": "cpu", **lca})
    trainer = Trainer(small, data=synthetic())
    start = trainer.model.lca.dictionary.clone() if m.kind == "lca_cnn" else None
    if m.kind == "lca_cnn" and m.dict_training != "learn":
        torch.testing.assert_close(start, load_dictionary(cifar_dictionary)[0])
    metrics = trainer.run_epoch()
    assert trainer.batches_per_epoch == 2
    assert 0.0 <= metrics["test_acc"] <= 1.0 and metrics["train_loss"] == metrics["train_loss"]
    if m.kind == "lca_cnn":
        assert torch.equal(start, trainer.model.lca.dictionary) == (m.dict_training == "pretrained")
        assert 0 < metrics["lca_sparsity"] <= 1 and 0 < metrics["test_lca_sparsity"] <= 1


@pytest.mark.parametrize("command, message", [
    ("--model LCACNN --channels 32 64 --lca_feats 16 --dict_training learn --lrs 0.1 0.1 0.1",
     r"--channels: got \[32, 64\]; allowed: the LCA copy layer first, equal to --lca_feats \(16\)"),
    ("--model LCACNN --channels 16 64 --lca_feats 16", r"--dict_training: got 'no_lca' with --model LCACNN"),
    ("--model LCACNN --channels 16 64 --kernels 3 --lca_feats 16 --dict_training learn",
     r"--kernels: got \[3\]; allowed: at least 2 entries"),
    ("--model LCACNN --channels 16 64 --lca_feats 16 --dict_training learn --lrs 0.1 0.1",
     r"--lrs: got \[0\.1, 0\.1\]; allowed: 3 values, one per synapse of code base D's LCA_CNN"),
    ("--model CNN --dict_training finetune", r"--dict_training: got 'finetune' with model\.kind='cnn'"),
    ("--model MLP --lca_lambda 0.3", r"--lca_lambda: given with model\.kind='mlp'"),
    ("--model LCACNN --dict_training learn --size_tab 10 20", r"flags of several code bases were mixed"),
])
def test_code_base_d_flag_errors(command, message):
    with pytest.raises(ConfigError, match=message):
        parsed(command)


def test_lambda_schedule_of_the_pretraining_script():
    values = [lam_at(0.2, 0.1, 5, e) for e in range(35)]
    assert values[:4] == [0.2] * 4 and values[4] == pytest.approx(0.3) and values[34] == pytest.approx(0.9)
    assert [lam_at(0.3, 0.0, 5, e) for e in (0, 20)] == [0.3, 0.3]


def test_lca_pretrain_writes_the_dictionary_that_pretrained_mode_loads(tmp_path):
    out = tmp_path / "dict"
    r = run("lca-pretrain", "--dataset", "digits", "--features", 6, "--ksize", 3, "--stride", 1, "--iters", 20,
            "--tau", 5, "--lam", 0.1, "--lam-step", 0.05, "--lam-every", 1, "--epochs", 2, "--batch-size", 100,
            "--max-batches", 3, "--out", out)
    assert r.exit_code == 0, r.output
    assert "epoch 2/2" in r.output and "data.holdout=0.5" in r.output
    d, settings = load_dictionary(out / "dictionary.pt")
    assert d.shape == (6, 1, 3, 3)
    torch.testing.assert_close(d.flatten(1).norm(dim=1), torch.ones(6))
    assert (settings["dataset"], settings["holdout"], settings["holdout_seed"], settings["epochs"]) == (
        "digits", 0.5, 0, 2)
    assert settings["images"] == 718 and settings["lca"]["features"] == 6  # half of digits' 1437 training images
    assert yaml.safe_load((out / "settings.yaml").read_text())["schedule"] == {"lam": 0.1, "lam_step": 0.05,
                                                                             "lam_every": 1}
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [float(row["lam"]) for row in rows] == pytest.approx([0.15, 0.2])
    assert all(0 < float(row["lca_sparsity"]) < 1 and 0 < float(row["lca_recon_error"]) < 1 for row in rows)
    assert (out / "atoms.png").stat().st_size > 2000
    run_dir = tmp_path / "run"
    r = run("train", "--set", "model.kind=lca_cnn", "--set", "model.dict_training=pretrained", "--set",
            f"model.dictionary={out / 'dictionary.pt'}", "--set", "data.holdout=0.5", "--set", "model.lca.features=6",
            "--set", "model.lca.ksize=3", "--set", "model.lca.stride=1", "--set", "model.lca.iters=10", "--set",
            "model.channels=[8]", "--set", "model.kernels=[3]", "--set", "model.strides=[1]", "--set",
            "model.paddings=[1]", "--set", "model.pools=m", "--set", "optim.lrs=[0.1, 0.05]", "--set", "rule.T1=5",
            "--set", "rule.T2=2", "--epochs", 1, "--max-batches", 3, "--out", run_dir, "--quiet")
    assert r.exit_code == 0, r.output
    (metrics,) = read_metrics(run_dir)
    assert float(metrics["lca_dict_change"]) == 0.0 and 0 < float(metrics["test_lca_sparsity"]) < 1
    state = torch.load(run_dir / "checkpoint_latest.pt", weights_only=False)["model"]
    torch.testing.assert_close(state["lca.dictionary"], d)
    (out / "dictionary.pt").rename(tmp_path / "moved.pt")  # the resumed run reads its checkpoint's dictionary
    r = run("train", "--resume", run_dir, "--epochs", 2, "--quiet")
    assert r.exit_code == 0, r.output
    assert [int(m["epoch"]) for m in read_metrics(run_dir)] == [1, 2]
    state = torch.load(run_dir / "checkpoint_latest.pt", weights_only=False)["model"]
    torch.testing.assert_close(state["lca.dictionary"], d)
    r = run("evaluate", run_dir, "--checkpoint", "latest")  # so does scoring it
    assert r.exit_code == 0 and "test accuracy" in r.output and "epoch 2" in r.output, r.output


def test_lca_pretrain_errors_exit_2_with_one_line(tmp_path):
    r = run("lca-pretrain", "--dataset", "digits", "--lam", -1, "--out", tmp_path)
    assert r.exit_code == 2 and "lca.lam: got -1.0; allowed: a number >= 0.0" in r.output
    r = run("lca-pretrain", "--dataset", "digits", "--holdout", 0.95, "--out", tmp_path)
    assert r.exit_code == 2 and "data.holdout: got 0.95" in r.output
    r = run("lca-pretrain", "--dataset", "digits", "--lam-every", 0, "--out", tmp_path)
    assert r.exit_code == 2 and "--lam-every: got 0; allowed: >= 1" in r.output and "Traceback" not in r.output
