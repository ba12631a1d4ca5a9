"""The autograd-of-Φ way of running EP (code base A's implementation principle), as the
baseline of the speed benchmarks: every relaxation step is ``σ(autograd.grad(Φ, s))`` and the
update is ``backward()`` of the Φ difference. It uses the engine model's ``phi`` only."""

from __future__ import annotations

import torch

from eqsearch.losses import as_target
from eqsearch.models import EnergyModel, tile_batch


def autograd_step(model: EnergyModel, x, state, beta, y):
    """σ_l(∂Φ/∂s_l) by autograd (each VF layer differentiates its own φ_l)."""
    leaves = [s.detach().requires_grad_(True) for s in state]
    pre = [s.detach() for s in state] if model.vector_field else None
    grads = torch.autograd.grad(model.phi(x, leaves, beta, y, pre=pre).sum(), leaves)
    return [model.activation(i)(g) for i, g in enumerate(grads)]


def autograd_relax(model, x, state, steps, beta=0.0, y=None):
    for _ in range(steps):
        state = autograd_step(model, x, state, beta, y)
    return [s.detach() for s in state]


def autograd_ep_grads(model: EnergyModel, x, y, T1: int, T2: int, beta: float, estimator: str) -> None:
    """One EP minibatch as code base A computes it; leaves the estimate in ``p.grad``."""
    state = autograd_relax(model, x, model.init_state(model.input_drive(x)), T1)
    target = as_target(y, state[-1].shape[1], state[-1].dtype)
    if estimator == "symmetric":
        n = x.shape[0]
        signs = torch.ones(2 * n, 1, dtype=x.dtype)
        signs[n:] = -1
        x2, t2 = tile_batch([x], 2)[0], tile_batch([target], 2)[0]
        both = autograd_relax(model, x2, tile_batch(state, 2), T2, beta * signs, t2)
        a, b, beta_a, beta_b = [s[:n] for s in both], [s[n:] for s in both], beta, -beta
        pre = state if model.vector_field else None
    else:
        a, beta_a = state, 0.0
        b = autograd_relax(model, x, state, T2, beta, target)
        beta_b = beta
        pre = state if model.vector_field else None
    model.zero_grad(set_to_none=True)
    diff = model.phi(x, b, beta_b, target, pre=pre).mean() - model.phi(x, a, beta_a, target, pre=pre).mean()
    (-diff / (beta_b - beta_a)).backward()
