"""The trainables: Tune config -> run config, threads/device from the trial's resources.
(A trainable inside real Tune trials, with checkpoint restore, runs in test_search_integration.)"""

from __future__ import annotations

from eqsearch.search.space import spec_from_tree
from trainables import TRAINABLES, get_trainable
from trainables.common import BASE_KEY, build_run_config, cached_data


def spec():
    return spec_from_tree({"base": {"data": {"dataset": "digits"}, "optim": {"lrs": [0.3, 0.15]}},
                           "space": {"optim.lrs[1]": {"uniform": [0.01, 0.2]}, "rule.beta": {"uniform": [0.1, 1.0]}}},
                          "t.yaml")


def test_run_config_from_tune_config_and_resources():
    s = spec()
    config = {BASE_KEY: s.base, "optim.lrs[1]": 0.05, "rule.beta": 0.3}
    cfg = build_run_config(config, cpus=1.0, gpus=0.0)
    assert cfg.optim.lrs == [0.3, 0.05] and cfg.rule.beta == 0.3
    assert cfg.train.threads == 1 and cfg.train.device == "cpu"
    cfg = build_run_config(config, cpus=0.5, gpus=0.5)
    assert cfg.train.threads == 1 and cfg.train.device == "cuda"
    assert build_run_config(config, cpus=3.0, gpus=0.0).train.threads == 3


def test_every_registered_trainable_resolves():
    for name in TRAINABLES:
        assert callable(get_trainable(name))


def test_data_is_loaded_once_per_process():
    cfg = spec().base_config
    assert cached_data(cfg) is cached_data(cfg)


def test_the_search_driver_does_not_load_the_engine():
    """The driver only hands the trainable to Tune: torch loads in the trials' processes."""
    import subprocess
    import sys

    code = "import sys, eqsearch.search.driver; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
