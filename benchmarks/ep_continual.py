"""Speed of one continual-EP training batch (code base B's C-EP-1h and C-VF-1h commands) against
an autograd path.

Configuration (reference §3.10): 784-512-10, discrete-time, sigm, T 40, Kmax 15, β 0.2, batch 20,
SGD with B's learning rates; C-EP on ``ep_disc`` and C-VF on ``vf_disc`` (+β with probability 0.5).
Synthetic MNIST-shaped batches; both paths train their own copy of the same initial model in
this process, taking turns.

- engine: ``ContinualRule.train_batch`` (closed-form steps and per-step updates, one fused
  matmul per weight, no autograd, no host sync);
- autograd: every step is ρ(∂Φ/∂s) by ``torch.autograd.grad`` of the primitive (each VF layer
  its own φ_l) plus B's nudge, and every per-step update is the autograd gradient of
  −(1/β)[Φ̄(s_{t+1}) − Φ̄(s_t)] (VF: presynaptic s_t), then the optimizer step.

    python benchmarks/ep_continual.py [--repeats 5] [--batches 10] [--threads N]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from eqsearch.config import from_dict
from eqsearch.losses import as_target
from eqsearch.rules import draw_sign

sys.path.insert(0, str(Path(__file__).resolve().parent))
from turns import main  # noqa: E402

RUNS = {
    "C-EP-1h": {"model.kind": "ep_disc", "optim.lrs": [0.0056, 0.0028], "rule.estimator": "one_sided"},
    "C-VF-1h": {"model.kind": "vf_disc", "optim.lrs": [0.0076, 0.0038], "rule.estimator": "random_sign"},
}


def autograd_step(model, x, state, beta, y):
    leaves = [s.detach().requires_grad_(True) for s in state]
    pre = [s.detach() for s in state] if model.vector_field else None
    grads = torch.autograd.grad(model.phi(x, leaves, 0.0, None, pre=pre).sum(), leaves)
    new = [model.activation(i)(g) for i, g in enumerate(grads)]
    if beta != 0.0:
        new[-1] = new[-1] + beta * (y - state[-1])  # B's nudge, outside ρ
    return [s.detach() for s in new]


def autograd_batch(model, cfg, x, y, optimizer, gen):
    r = cfg.rule
    target = as_target(y, 10, x.dtype)
    state = model.init_state(model.input_drive(x))
    for _ in range(r.T1):
        state = autograd_step(model, x, state, 0.0, target)
    beta = r.beta * draw_sign(r, gen)
    for _ in range(r.T2):
        new = autograd_step(model, x, state, beta, target)
        pre = state if model.vector_field else None
        optimizer.zero_grad(set_to_none=True)
        diff = model.phi(x, new, beta, target, pre=pre).mean() - model.phi(x, state, beta, target, pre=pre).mean()
        (-diff / beta).backward()
        optimizer.step()
        state = new


def config(run: dict):
    return from_dict(overrides={"data.dataset": "digits", "model.archi": [784, 512, 10], "model.activation": "sigm",
                                "rule.alg": "cep", "rule.beta": 0.2, "rule.T1": 40, "rule.T2": 15,
                                "data.batch_size": 20, **run})


if __name__ == "__main__":
    main(__doc__, {name: config(run) for name, run in RUNS.items()}, autograd_batch)
