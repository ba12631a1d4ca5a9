"""Run-config validation: every bad value fails before anything runs, naming field, value, allowed."""

from __future__ import annotations

import pytest
import yaml

from eqsearch.cli.run_flags import build_parser, config_from_args
from eqsearch.config import ConfigError, field_names, from_dict, load_config, parse_assignment


@pytest.mark.parametrize("tree, overrides, message", [
    ({"rule": {"betta": 0.1}}, None, r"rule\.betta: unknown field; allowed: alg, estimator, beta"),
    ({"rules": {}}, None, r"rules: unknown section; allowed: data, model, rule, optim, train"),
    (None, {"rule.estimator": "two_sided"}, r"rule\.estimator: got 'two_sided'; allowed: one of one_sided, random_sign, symmetric"),
    (None, {"rule.beta": 0}, r"rule\.beta: got 0\.0; allowed: a number or null|rule\.beta: got 0\.0; allowed: a number > 0"),
    (None, {"rule.T1": 2.5}, r"rule\.T1: got 2\.5; allowed: an integer >= 0"),
    (None, {"rule.T1": "many"}, r"rule\.T1: got 'many'; allowed: an integer >= 0"),
    (None, {"rule.T2": 0}, r"rule\.T2: got 0; allowed: an integer >= 1"),
    (None, {"optim.momentum": 1.5}, r"optim\.momentum: got 1\.5; allowed: a number >= 0\.0 and <= 1\.0"),
    (None, {"optim.lrs": [0.1]}, r"optim\.lrs: got \[0\.1\] \(1 values\); allowed: exactly 2 values"),
    (None, {"optim.wds": [0.1, 0.1, 0.1]}, r"optim\.wds: got .*allowed: exactly 2 values"),
    (None, {"optim.lrs": "fast"}, r"optim\.lrs: got 'fast'; allowed: a list of numbers >= 0\.0"),
    (None, {"model.act": "relu"}, r"model\.act: got 'relu'; allowed: one of mysig, sigmoid, tanh"),
    (None, {"data.dataset": "imagenet"}, r"data\.dataset: got 'imagenet'; allowed: one of digits, mnist"),
    (None, {"train.device": "tpu"}, r"train\.device: got 'tpu'; allowed: cpu, cuda, cuda:k or a GPU index k"),
    (None, {"rule.alg": "bptt", "rule.T2": 30, "rule.T1": 10}, r"rule\.T2: got 30; allowed: <= rule\.T1 \(10\)"),
    (None, {"model.archi": [64]}, r"model\.archi: got \[64\]"),
    (None, {"rule": 3}, r"rule: unknown field"),
])
def test_bad_values_name_field_value_and_allowed(tree, overrides, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(tree, overrides)


def test_yaml_round_trip_and_errors_name_the_file(tmp_path):
    cfg = from_dict(overrides={"rule.beta": 0.25, "optim.lrs": [0.1, 0.2], "model.kind": "vf_mlp"})
    cfg.to_yaml(tmp_path / "run.yaml")
    assert load_config(tmp_path / "run.yaml") == cfg
    (tmp_path / "bad.yaml").write_text("rule:\n  beta: [1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: invalid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "typo.yaml").write_text("optim:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml: optim\.lr: unknown field"):
        load_config(tmp_path / "typo.yaml")
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")


def test_dotted_names_and_assignments():
    assert "rule.beta" in field_names() and "optim.lrs" in field_names()
    assert parse_assignment("optim.lrs=[0.1, 0.2]") == ("optim.lrs", [0.1, 0.2])
    assert parse_assignment("rule.estimator=symmetric") == ("rule.estimator", "symmetric")
    with pytest.raises(ConfigError, match="expected FIELD=VALUE"):
        parse_assignment("rule.beta")
    assert from_dict().flat()["rule.beta"] == 0.5


def args(text: str):
    return build_parser("eqsearch train", "").parse_args(text.split())


def test_seed_command_maps_to_code_base_a_semantics():
    cfg = config_from_args(args("--model MLP --task MNIST --archi 784 512 10 --act mysig --todo train "
                                "--betas 0.0 0.1 --T1 30 --T2 10 --mbs 50 --lrs 0.08 0.04 --optim sgd"))
    assert (cfg.data.dataset, cfg.data.batch_size, cfg.model.archi) == ("mnist", 50, [784, 512, 10])
    assert (cfg.rule.alg, cfg.rule.estimator, cfg.rule.beta, cfg.rule.T1, cfg.rule.T2) == ("ep", "one_sided", 0.1, 30, 10)
    assert (cfg.optim.name, cfg.optim.lrs, cfg.optim.momentum, cfg.train.epochs) == ("sgd", [0.08, 0.04], 0.0, 1)
    assert config_from_args(args("--model MLP --lrs 0.1 0.1 --thirdphase")).rule.estimator == "symmetric"
    assert config_from_args(args("--model MLP --lrs 0.1 0.1 --random-sign")).rule.estimator == "random_sign"
    cfg = config_from_args(args("--model VFMLP --alg BPTT --lrs 0.1 0.1 --mmt 0.9 --wds 1e-4 1e-4 --lr-decay --seed 3"))
    assert (cfg.model.kind, cfg.rule.alg, cfg.optim.momentum, cfg.optim.lr_decay, cfg.train.seed) == (
        "vf_mlp", "bptt", 0.9, True, 3)
    # with no seed flags the embedded defaults apply
    assert config_from_args(args("--epochs 2")) == from_dict(overrides={"train.epochs": 2})


@pytest.mark.parametrize("text, message", [
    ("--model MLP --betas 0.1 0.2", r"--betas: got beta1=0\.1; allowed: beta1 = 0\.0"),
    ("--model MLP --betas 0.0 -0.2", r"--betas: got beta2=-0\.2; allowed: beta2 > 0"),
    ("--model MLP --alg CEP --lrs 0.1 0.1 --wds 0.1", r"--wds: got \[0\.1\]; allowed: one value per entry of --lrs"),
    ("--model MLP --lrs 0.1", r"optim\.lrs: got \[0\.1\]"),
    ("--set rule.bta=1", r"rule\.bta: unknown field"),
])
def test_seed_flag_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        config_from_args(args(text))


def test_flags_override_the_config_file(tmp_path):
    from_dict(overrides={"rule.T1": 40}).to_yaml(tmp_path / "c.yaml")
    cfg = config_from_args(args(f"--config {tmp_path / 'c.yaml'} --set rule.beta=0.3 --epochs 7 --mbs 64"))
    assert (cfg.rule.T1, cfg.rule.beta, cfg.train.epochs, cfg.data.batch_size) == (40, 0.3, 7, 64)
    assert cfg.rule.estimator == "symmetric"  # the file's (default) estimator is kept


def test_every_choice_of_every_field_reads_back_from_yaml_as_itself():
    """A choice such as ``off`` or ``yes`` would come back from a YAML file, a ``--set`` value or
    trials.csv as a boolean and be refused: no field may offer one."""
    from eqsearch.config import _FIXED_SECTIONS
    from eqsearch.families import families
    from eqsearch.fields import leaf_fields

    sections = list(_FIXED_SECTIONS.items()) + [("model", f.config) for f in families()]
    checked = 0
    for prefix, cls in sections:
        for name, (f, _) in leaf_fields(cls, prefix).items():
            for choice in f.metadata.get("choices") or ():
                assert yaml.safe_load(str(choice)) == choice, f"{name}: choice {choice!r}"
                checked += 1
    assert checked > 10
