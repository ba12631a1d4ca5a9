"""Search space files: validation errors (file, key, value, allowed) and the Optuna space."""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
import pytest
import yaml
from click.testing import CliRunner

from eqsearch.cli import main
from eqsearch.search.space import SpecError, load_spec

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "search_spaces").glob("*.yaml"))


def write(tmp_path, tree) -> Path:
    p = tmp_path / "space.yaml"
    p.write_text(tree if isinstance(tree, str) else yaml.safe_dump(tree, sort_keys=False))
    return p


def minimal(**extra) -> dict:
    return {"base": {"data": {"dataset": "digits"}, "train": {"epochs": 2}},
            "space": {"rule.beta": {"loguniform": [0.05, 1.0]}}, **extra}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_spaces_validate(path):
    spec = load_spec(path)
    assert spec.params and spec.max_epochs >= 1


@pytest.mark.parametrize("tree, expected", [
    ("base: [unclosed", "invalid YAML"),
    (minimal(serach={}), "serach: unknown key; allowed: name"),
    (minimal(space={"rule.betta": {"uniform": [0, 1]}}), "space.rule.betta: unknown field"),
    (minimal(space={"rule.beta": {"normal": [0, 1]}}), "space.rule.beta: got {'normal': [0, 1]}; allowed: one of"),
    (minimal(space={"rule.beta": {"uniform": [1.0, 0.1]}}), "space.rule.beta.uniform: got [1.0, 0.1]; allowed: low < high"),
    (minimal(space={"rule.beta": {"loguniform": [0.0, 1.0]}}), "allowed: low > 0 on a log scale"),
    (minimal(space={"rule.beta": {"uniform": [-1.0, 1.0]}}), "space.rule.beta: value -1.0 of uniform is not a valid"),
    (minimal(space={"rule.estimator": {"choice": ["one_sided", "both"]}}), "value 'both' of choice"),
    (minimal(space={"rule.T2": {"int": [1.5, 4]}}), "space.rule.T2.int: got [1.5, 4]; allowed: [low, high], two integers"),
    (minimal(space={"optim.lrs[5]": {"uniform": [0.1, 0.2]}}), "space.optim.lrs[5]: index 5 out of range"),
    (minimal(space={"train.epochs": {"int": [1, 4]}}), "space.train.epochs: cannot be searched"),
    (minimal(space={"model.act": {"choice": ["tanh"], "when": {"rule.estimatr": ["symmetric"]}}}),
     "space.model.act.when: got 'rule.estimatr'; allowed: a parameter listed earlier"),
    (minimal(space={"rule.estimator": {"choice": ["symmetric"]},
                    "rule.beta": {"uniform": [0.1, 0.2], "when": {"rule.estimator": ["one_side"]}}}),
     "space.rule.beta.when.rule.estimator: got 'one_side'; allowed: values of its choice"),
    (minimal(space={"model.act": {"choice": ["tanh"], "when": {"rule.alg": ["ep"]}}, "rule.alg": {"choice": ["ep"]}}),
     "space.model.act.when: got 'rule.alg'; allowed: a parameter listed earlier"),
    (minimal(search={"num_samples": 0}), "search.num_samples: got 0; allowed: an integer >= 1"),
    (minimal(search={"metric": "accuracy"}), "search.metric: got 'accuracy'; allowed: test_acc"),
    (minimal(search={"sampler": "grid"}), "search.sampler: got 'grid'; allowed: tpe, random"),
    (minimal(resources={"gpu": -1}), "resources.gpu: got -1; allowed: a number >= 0"),
    (minimal(scheduler={"asha": {"reduction_factor": 1}}), "scheduler.asha.reduction_factor: got 1"),
    (minimal(base={"rule": {"beta": -2}}), "base.rule.beta: got -2"),
    (minimal(trainable="lca"), "trainable: got 'lca'; allowed: ep"),
])
def test_invalid_spaces_name_file_key_value_allowed(tmp_path, tree, expected):
    path = write(tmp_path, tree)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_cli_rejects_invalid_space_before_ray_starts(tmp_path):
    path = write(tmp_path, minimal(space={"rule.beta": {"uniform": [1.0, 0.1]}}))
    result = CliRunner().invoke(main, ["search", str(path), "--results", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "space.rule.beta.uniform: got [1.0, 0.1]; allowed: low < high" in result.output
    assert not (tmp_path / "r").exists()
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def test_cli_overrides_are_validated(tmp_path):
    path = write(tmp_path, minimal())
    result = CliRunner().invoke(main, ["search", str(path), "--num-samples", "0"])
    assert result.exit_code == 2 and "search.num_samples: got 0" in result.output
    result = CliRunner().invoke(main, ["search", str(path), "--set", "rule.T1=-3"])
    assert result.exit_code == 2 and "rule.T1: got -3" in result.output


def test_overrides_apply(tmp_path):
    spec = load_spec(write(tmp_path, minimal()), {"search.num_samples": 3, "resources.cpu": 0.5,
                                                   "scheduler.grace_period": 2}, {"rule.T1": 7})
    assert spec.search["num_samples"] == 3 and spec.resources["cpu"] == 0.5
    assert spec.asha["grace_period"] == 2 and spec.base_config.rule.T1 == 7


def test_define_by_run_samples_valid_configs_with_conditions(tmp_path):
    tree = minimal(space={
        "model.kind": {"choice": ["mlp", "vf_mlp"]},
        "rule.beta": {"loguniform": [0.05, 1.0]},
        "optim.lrs[1]": {"uniform": [0.01, 0.2]},
        "rule.T2": {"int": [2, 8], "log": True},
        "model.act": {"choice": ["tanh", "mysig"], "when": {"model.kind": ["vf_mlp"]}},
    })
    spec = load_spec(write(tmp_path, tree))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_kinds = set()
    for _ in range(20):
        trial = study.ask()
        spec.define_by_run()(trial)
        params = trial.params
        cfg = spec.run_config(params)
        seen_kinds.add(params["model.kind"])
        assert ("model.act" in params) == (params["model.kind"] == "vf_mlp")
        assert cfg.optim.lrs[1] == params["optim.lrs[1]"] and cfg.optim.lrs[0] == spec.base_config.optim.lrs[0]
        assert 2 <= cfg.rule.T2 <= 8
        study.tell(trial, 0.0)
    assert seen_kinds == {"mlp", "vf_mlp"}


def test_spec_round_trips_through_its_yaml(tmp_path):
    spec = load_spec(ROOT / "search_spaces" / "quickstart.yaml", {"search.num_samples": 3})
    spec.to_yaml(tmp_path / "search.yaml")
    again = load_spec(tmp_path / "search.yaml")
    assert again.to_tree() == spec.to_tree()


def test_search_names_the_shipped_spaces_when_the_space_is_unknown():
    from click.testing import CliRunner

    r = CliRunner().invoke(main, ["search", "quickstrat"])
    assert r.exit_code == 2
    assert "quickstrat: no such search space file; allowed: a YAML space file, or a shipped space:" in r.output
    for name in ("quickstart", "energies", "cvf_angle", "mnist_mlp_estimators", "cifar10_cnn"):
        assert name in r.output
