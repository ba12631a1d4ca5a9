"""Code base C's energies as a family: presets, its flags as its README writes them, the data
option, training through fit() and the GDU check (the model's math is in test_energy_models.py)."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from eqsearch.cli import main
from eqsearch.cli.run_flags import build_parser, config_from_args
from eqsearch.config import ConfigError, DataConfig, from_dict
from eqsearch.data import MNIST_MEAN, MNIST_STD, load_dataset
from eqsearch.families.energy import PRESETS
from eqsearch.gdu import gdu_check
from eqsearch.training import Trainer, fit, read_metrics

DIGITS = ["--set", "data.dataset=digits", "--set", "data.normalize=none", "--dimensions", "64", "32", "10"]


def args(text: str):
    return build_parser("eqsearch train", "").parse_args(text.split())


def test_unspecified_flags_take_the_preset_of_the_energy():
    cfg = config_from_args(args("--energy restr_hopfield --seed 2019"))
    want = from_dict(overrides={**PRESETS["restr_hopfield"], "train.seed": 2019})
    assert cfg == want
    assert (cfg.model.cost, cfg.model.fast_ff_init, cfg.rule.T1, cfg.rule.T2) == ("squared_error", False, 50, 50)
    cfg = config_from_args(args("--c_energy squared_error"))  # no --energy: cond_gaussian, as in code base C
    assert (cfg.model.kind, cfg.model.cost, cfg.model.fast_ff_init, cfg.rule.T1) == ("cond_gaussian", "squared_error",
                                                                                     True, 0)
    cfg = config_from_args(args("--energy cond_gaussian --no_fast_ff_init --learning_rate 0.01 --dimensions "
                                "784 500 200 10 --optimizer adagrad --batch_size 50 --epochs 3"))
    assert (cfg.model.fast_ff_init, cfg.optim.lrs, cfg.model.archi, cfg.optim.name, cfg.data.batch_size,
            cfg.train.epochs) == (False, [0.01] * 3, [784, 500, 200, 10], "adagrad", 50, 3)
    assert config_from_args(args("--preset cond_gaussian")) == from_dict(overrides=PRESETS["cond_gaussian"])
    assert config_from_args(args("--preset restr_hopfield --set rule.beta=0.5")).rule.beta == 0.5


@pytest.mark.parametrize("text, message", [
    ("--energy restr_hopfield --fast_ff_init", r"model\.fast_ff_init: got true with model\.kind='restr_hopfield'"),
    ("--energy cond_gaussian --model MLP", r"flags of several code bases were mixed"),
    ("--fast_ff_init --no_fast_ff_init", r"got both"),
    ("--energy cond_gaussian --set model.archi=[784,10] --set optim.lrs=[0.1,0.1]", r"optim\.lrs: got \[0\.1, 0\.1\]"),
])
def test_bad_combinations_name_the_field(text, message):
    with pytest.raises(ConfigError, match=message):
        config_from_args(args(text))


# code base C's README: the two demo commands, then every flag of its table with each choice
COMMANDS = [
    "--energy cond_gaussian --c_energy cross_entropy --seed 2019",
    "--energy restr_hopfield --c_energy squared_error --seed 2019",
    *[f"--energy {e} --nonlinearity {n} --optimizer {o} --learning_rate 0.002 --batch_size 30 --epochs 1 "
      f"--log_dir demo{'' if e == 'restr_hopfield' else ' --fast_ff_init'}"
      for e, n, o in [("cond_gaussian", "relu", "adam"), ("cond_gaussian", "leaky_relu", "sgd"),
                      ("restr_hopfield", "tanh", "adagrad"), ("restr_hopfield", "sigmoid", "adam"),
                      ("cond_gaussian", "hard_sigmoid", "adam"), ("restr_hopfield", "softplus", "sgd")]],
]


@pytest.mark.parametrize("command", COMMANDS)
def test_code_base_c_commands_run_a_few_batches(command, tmp_path):
    r = CliRunner().invoke(main, ["train", *command.split(), *DIGITS, "--max-batches", "2", "--epochs", "1",
                                  "--out", str(tmp_path / "run"), "--quiet"])
    assert r.exit_code == 0, r.output
    (m,) = read_metrics(tmp_path / "run")
    assert 0.0 <= m["test_acc"] <= 1.0 and m["test_free_energy"] == m["test_free_energy"]


def test_mnist_normalisation_option(shared_data):
    raw = load_dataset(DataConfig(dataset="mnist", root=str(shared_data)))
    norm = load_dataset(DataConfig(dataset="mnist", root=str(shared_data), normalize="mnist"))
    torch.testing.assert_close(norm.x_test, (raw.x_test - MNIST_MEAN) / MNIST_STD)
    assert abs(float(norm.x_train.mean())) < 0.01 and abs(float(norm.x_train.std()) - 1.0) < 0.01


@pytest.mark.parametrize("kind", ["cond_gaussian", "restr_hopfield"])
def test_training_lowers_the_loss_and_reports_the_free_energy(kind):
    cfg = from_dict(overrides={**PRESETS[kind], "data.dataset": "digits", "data.normalize": "none",
                               "model.archi": [64, 64, 10], "data.batch_size": 16, "train.epochs": 5,
                               "optim.lrs": [0.01, 0.01]})
    history = list(fit(cfg))
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["test_acc"] > 0.5
    if cfg.model.fast_ff_init:
        assert history[-1]["test_free_energy"] == pytest.approx(0.0, abs=1e-9)  # the feed-forward state has E = 0
        assert history[-1]["residual_free"] == 0.0  # T1 = 0: no free relaxation
    else:
        assert history[-1]["test_free_energy"] < 0.0  # the Hopfield energy is negative at its minima


def test_gdu_check_ep_updates_match_bptt_for_an_energy():
    cfg = from_dict(overrides={"model.kind": "cond_gaussian", "model.archi": [64, 20, 10], "data.dataset": "digits",
                               "model.nonlinearity": "tanh", "optim.lrs": [0.1, 0.1]})
    trainer = Trainer(cfg, dtype=torch.float64)
    x, y = trainer.data.x_train[:6].double(), trainer.data.y_train[:6]
    rows, _ = gdu_check(trainer.model, x, y, T1=300, T2=10, beta=1e-4, symmetric=True)
    for r in rows:
        if r["estimator"] == "symmetric" and r["kind"] == "synapses":
            assert r["angle"] < 1.0 and r["sign_error"] < 0.05, r


@pytest.mark.realdata
def test_cond_gaussian_demo_reaches_97_percent(shared_data, tmp_path):
    """Code base C's first demo command (its log: 94.90 % after epoch 1, 98.32 % after 50)."""
    r = CliRunner().invoke(main, ["train", "--energy", "cond_gaussian", "--c_energy", "cross_entropy", "--seed", "2019",
                                  "--epochs", "4", "--data-root", str(shared_data), "--out", str(tmp_path), "--quiet"])
    assert r.exit_code == 0, r.output
    accs = [m["test_acc"] for m in read_metrics(tmp_path)]
    assert accs[0] > 0.93 and max(accs) >= 0.97, accs
