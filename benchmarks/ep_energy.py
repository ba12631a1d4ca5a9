"""Speed of one training batch of code base C's presets: the engine against autograd of E.

Presets (reference §4.9, ``eqsearch train --preset NAME``): ``cond_gaussian`` (784-1000-10,
sigmoid, cross-entropy, fast feed-forward init, 20 nudged steps) and ``restr_hopfield``
(squared error, N(0, 1) init, 50 free + 50 nudged steps); dt 0.1, β 1, batch 100, Adam lr 1e-3,
on synthetic MNIST-shaped data.

Paths, taking turns on the same model and batches in this process:

- engine: ``EPRule.train_batch`` (closed-form −∂E/∂u steps and ∂E/∂θ, no autograd, no host sync);
- autograd (code base C's way): every step is u ← u − dt·∂(ΣE + βΣC)/∂u by ``torch.autograd.grad``,
  and the update is ``backward()`` of (Ē_β(u^β) − Ē(u*))/β, then the optimizer step.

    python benchmarks/ep_energy.py [--repeats 5] [--batches 10] [--threads N]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from eqsearch.config import from_dict
from eqsearch.families.energy import PRESETS
from eqsearch.losses import as_target

sys.path.insert(0, str(Path(__file__).resolve().parent))
from turns import main  # noqa: E402


def autograd_relax(model, x, state, steps, beta, y, dt):
    for _ in range(steps):
        leaves = [u.detach().requires_grad_(True) for u in state]
        grads = torch.autograd.grad(-model.phi(x, leaves, beta, y).sum(), leaves)
        state = [u - dt * g for u, g in zip(leaves, grads)]
    return [u.detach() for u in state]


def autograd_batch(model, cfg, x, y, optimizer, gen):
    """One batch as code base C computes it (one-sided EP in energy form)."""
    r, dt = cfg.rule, cfg.model.dt / cfg.model.tau
    target = as_target(y, cfg.model.archi[-1], x.dtype)
    drive = model.input_drive(x)
    with torch.no_grad():
        free = model.init_state(drive, gen)
    free = autograd_relax(model, x, free, r.T1, 0.0, None, dt)
    nudged = autograd_relax(model, x, free, r.T2, r.beta, target, dt)
    optimizer.zero_grad(set_to_none=True)
    diff = -(model.phi(x, nudged, r.beta, target).mean() - model.phi(x, free, 0.0, target).mean()) / r.beta
    diff.backward()  # −Φ = E: (Ē_β(u^β) − Ē(u*)) / β
    optimizer.step()


if __name__ == "__main__":
    # shapes only: the batches are synthetic
    main(__doc__, {name: from_dict(overrides={**PRESETS[name], "data.dataset": "digits"}) for name in PRESETS},
         autograd_batch)
