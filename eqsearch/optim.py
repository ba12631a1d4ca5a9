"""Torch optimizers with one parameter group per synapse layer (input -> output)."""

from __future__ import annotations

import torch

from eqsearch.config import OptimConfig
from eqsearch.models import EnergyModel

COSINE_T_MAX = 100      # code base A: CosineAnnealingLR(T_max=100, eta_min=1e-5) ...
COSINE_ETA_MIN = 1e-5   # ... stepped only while the epoch index is below T_max


# torch wraps these Optimizer methods in torch._disable_dynamo, which keeps them out of compiled
# graphs by importing torch._dynamo at their first call (1.1-1.2 s of a run's start here)
UNCOMPILED_OPTIMIZER_METHODS = ("add_param_group", "state_dict", "load_state_dict", "zero_grad")


def skip_compiler_import_of_optimizers() -> None:
    """Let :data:`UNCOMPILED_OPTIMIZER_METHODS` run without importing torch._dynamo.

    eqsearch never calls an optimizer inside compiled code (``train.compile`` compiles the
    relaxation only), so keeping these methods out of graphs guards nothing here. torch's wrapper
    calls what a method's ``__dynamo_disable`` attribute holds once it is set; set to the method
    itself, that is a plain call, which is what the disabled method does outside a compiled region.
    A run with plain SGD (code base A's default, applied from EP's factors) then never loads the
    compiler; ``optimizer.step()`` still does (momentum, Adam, Adagrad). Where a torch release
    drops the wrapper, nothing is set and torch imports as before."""
    for name in UNCOMPILED_OPTIMIZER_METHODS:
        fn = getattr(getattr(torch.optim.Optimizer, name, None), "__wrapped__", None)
        if fn is not None and getattr(fn, "__dynamo_disable", None) is None:
            setattr(fn, "__dynamo_disable", fn)


def build_optimizer(cfg: OptimConfig, model: EnergyModel):
    """(optimizer, scheduler or None). Group i gets ``lrs[i]`` and ``wds[i]``."""
    skip_compiler_import_of_optimizers()
    wds = cfg.wds or [0.0] * len(cfg.lrs)
    groups = [{"params": params, "lr": lr, "weight_decay": wd}
              for params, lr, wd in zip(model.synapse_groups(), cfg.lrs, wds)]
    if cfg.name == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg.lrs[0], momentum=cfg.momentum)
    elif cfg.name == "adam":
        opt = torch.optim.Adam(groups, lr=cfg.lrs[0])
    else:
        opt = torch.optim.Adagrad(groups, lr=cfg.lrs[0])
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=COSINE_T_MAX, eta_min=COSINE_ETA_MIN)
             if cfg.lr_decay else None)
    return opt, sched


def step_scheduler(sched, epochs_done: int) -> None:
    """Advance the cosine schedule after an epoch, frozen from epoch ``COSINE_T_MAX`` on."""
    if sched is not None and epochs_done <= COSINE_T_MAX:
        sched.step()
