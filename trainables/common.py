"""The generic trial: Tune config -> run config -> ``fit()`` -> one Tune report per epoch.

A Tune config holds the search's base run config under ``"base"`` and the sampled parameters
under their dotted keys (``"rule.beta"``, ``"optim.lrs[0]"``). The trial builds its run config
once: base, sampled parameters, then the fields that follow its resources
(:func:`eqsearch.config.resource_overrides`: torch threads = its CPUs, device cuda when it has a
GPU). It reports every epoch's metrics with the latest checkpoint, and continues from Tune's
checkpoint when restored. A non-finite loss raises :class:`eqsearch.errors.DivergedError`: the
trial ends as errored with that reason, after every finished epoch was reported.
"""

from __future__ import annotations

from typing import Any, Mapping

from eqsearch.config import RunConfig, from_dict, overrides_from_params, resource_overrides
from eqsearch.data import Dataset, load_dataset
from eqsearch.training import LATEST, fit, prepare_run
from trainables import BASE_KEY, session

_DATA: dict[tuple, Dataset] = {}  # data sets kept across trials of a reused actor


def build_run_config(config: Mapping[str, Any], cpus: float, gpus: float) -> RunConfig:
    base = config[BASE_KEY]
    return from_dict(base, {**overrides_from_params(base, config), **resource_overrides(cpus, gpus)})


def cached_data(cfg: RunConfig) -> Dataset:
    key = (cfg.data.dataset, cfg.data.root, cfg.data.normalize, cfg.data.holdout, cfg.data.holdout_seed)
    if key not in _DATA:
        _DATA.clear()
        _DATA[key] = load_dataset(cfg.data)
    return _DATA[key]


def run_trial(config: Mapping[str, Any]) -> None:
    """Train one trial through ``fit()``, reporting each epoch to Tune."""
    cpus, gpus = session.trial_resources()
    cfg = build_run_config(config, cpus, gpus)
    run_dir = session.trial_dir()
    with session.restored_file(LATEST) as ckpt:
        trainer = prepare_run(cfg, run_dir, restore_from=ckpt, data=cached_data(cfg))
    for metrics in fit(cfg, run_dir, trainer=trainer):
        session.report(metrics, run_dir / LATEST)
