"""Every seed-A CIFAR-10 command of reference §2.11 and the MNIST CNN check command parse with
their original flags and train 2 batches (on synthetic data of the right shape, with a small
batch and few steps, because no CIFAR files are on the test machine)."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from eqsearch.cli import main
from eqsearch.cli.run_flags import build_parser, config_from_args, parse
from eqsearch.data import Dataset
from eqsearch.training import Trainer

CIFAR = ("--model CNN --task CIFAR10 --data-aug --channels 128 256 512 512 --kernels 3 3 3 3 "
         "--pools mmmm --strides 1 1 1 1 --paddings 1 1 1 0 --fc 10 --optim sgd --mmt 0.9 "
         "--lrs 0.25 0.15 0.1 0.08 0.05 --wds 3e-4 3e-4 3e-4 3e-4 3e-4 --lr-decay --epochs 120 "
         "--act my_hard_sig --todo train --T1 250 --mbs 128 --save ")
DROPOUT = "--dropouts 1.0 1.0 1.0 0.9 1.0"

SEED_COMMANDS = {
    "ep_one_sided_mse": CIFAR + "--alg EP --T2 30 --betas 0.0 0.5 --loss mse",
    "ep_random_sign_mse": CIFAR + "--alg EP --random-sign --T2 30 --betas 0.0 0.5 --loss mse",
    "ep_symmetric_mse": CIFAR + "--alg EP --thirdphase --T2 30 --betas 0.0 0.5 --loss mse",
    "bptt_mse": CIFAR + "--alg BPTT --T2 30 --loss mse",
    "ep_symmetric_cel_softmax": CIFAR + "--alg EP --thirdphase --T2 25 --betas 0.0 1.0 --loss cel --softmax",
    "bptt_cel_softmax": CIFAR + "--alg BPTT --T2 25 --loss cel --softmax",
    "ep_symmetric_dropout": CIFAR + "--alg EP --thirdphase --T2 25 --betas 0.0 1.0 --loss cel --softmax "
                            + DROPOUT,
    "bptt_dropout": CIFAR + "--alg BPTT --T2 25 --loss cel --softmax " + DROPOUT,
    "vfcnn_different": CIFAR.replace("CNN", "VFCNN", 1)
                       + "--alg EP --thirdphase --T2 30 --betas 0.0 1.0 --loss cel --softmax",
    "vfcnn_same_update": CIFAR.replace("CNN", "VFCNN", 1)
                         + "--alg EP --thirdphase --same-update --T2 30 --betas 0.0 1.0 --loss cel --softmax",
    "vfcnn_bptt": CIFAR.replace("CNN", "VFCNN", 1) + "--alg BPTT --T2 30 --loss cel --softmax",
    "mnist_cnn_check": ("--model CNN --task MNIST --channels 32 64 --kernels 5 5 --pools mm --fc 10 "
                        "--optim adam --lrs 5e-5 1e-5 8e-6 --act hard_sigmoid --betas 0.0 0.4 "
                        "--T1 200 --T2 10 --mbs 100 --todo train"),
}


def parsed(command: str):
    parser = build_parser("eqsearch train", "")
    return config_from_args(parse(parser, command.split() + ["--max-batches", "2", "--epochs", "1"]))


def synthetic(shape: tuple[int, ...], n_train: int = 8, n_test: int = 4) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn((n_train + n_test,) + shape, generator=g) / 3
    y = torch.randint(0, 10, (n_train + n_test,), generator=g)
    return Dataset("synthetic", x[:n_train], y[:n_train], x[n_train:], y[n_train:], 10)


@pytest.mark.parametrize("name", list(SEED_COMMANDS))
def test_seed_command_parses_and_trains_two_batches(name):
    cfg = parsed(SEED_COMMANDS[name])
    m, r = cfg.model, cfg.rule
    assert cfg.data.max_batches == 2 and cfg.train.epochs == 1
    if name == "mnist_cnn_check":
        assert (cfg.data.dataset, m.channels, m.pools, cfg.optim.name) == ("mnist", [32, 64], "mm", "adam")
        assert (r.T1, r.T2, r.beta, r.estimator, cfg.data.batch_size) == (200, 10, 0.4, "one_sided", 100)
        shape = (1, 28, 28)
    else:
        assert cfg.data.dataset == "cifar10" and cfg.data.augment
        assert (m.channels, m.paddings, m.pools, m.act) == ([128, 256, 512, 512], [1, 1, 1, 0], "mmmm",
                                                             "my_hard_sig")
        assert (cfg.optim.lrs, cfg.optim.momentum, cfg.optim.lr_decay) == ([0.25, 0.15, 0.1, 0.08, 0.05],
                                                                          0.9, True)
        assert (r.T1, cfg.data.batch_size) == (250, 128)
        assert m.kind == ("vf_cnn" if name.startswith("vfcnn") else "cnn")
        assert m.softmax == ("cel" in SEED_COMMANDS[name])
        assert m.same_update == (name == "vfcnn_same_update")
        assert (m.dropouts is not None) == ("dropout" in name)
        if r.alg == "ep":
            assert r.estimator == ("symmetric" if "thirdphase" in SEED_COMMANDS[name] else
                                   "random_sign" if "random" in name else "one_sided")
        shape = (3, 32, 32)
    small = cfg.replace({"data.batch_size": 4, "data.test_batch_size": 4, "rule.T1": 3, "rule.T2": 2})
    trainer = Trainer(small, data=synthetic(shape))
    metrics = trainer.run_epoch()
    assert trainer.batches_per_epoch == 2
    assert 0.0 <= metrics["test_acc"] <= 1.0 and metrics["train_loss"] == metrics["train_loss"]
    if m.kind == "vf_cnn":
        assert set(metrics) >= {"angle_B1", "angle_B2", "angle_B3"}


def test_cifar_command_without_files_gives_a_clear_error(tmp_path):
    argv = ["train"] + SEED_COMMANDS["ep_symmetric_cel_softmax"].split() + [
        "--max-batches", "2", "--epochs", "1", "--data-root", str(tmp_path), "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2
    assert "cifar10 not found" in result.output and "cifar-10-batches-py" in result.output
