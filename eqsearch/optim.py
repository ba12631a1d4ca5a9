"""Torch optimizers with one parameter group per synapse layer (input -> output)."""

from __future__ import annotations

import torch

from eqsearch.config import OptimConfig
from eqsearch.models import EnergyModel

COSINE_T_MAX = 100      # code base A: CosineAnnealingLR(T_max=100, eta_min=1e-5) ...
COSINE_ETA_MIN = 1e-5   # ... stepped only while the epoch index is below T_max


def build_optimizer(cfg: OptimConfig, model: EnergyModel):
    """(optimizer, scheduler or None). Group i gets ``lrs[i]`` and ``wds[i]``."""
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
