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

import argparse
import statistics
import time

import torch

from eqsearch.config import from_dict
from eqsearch.families.energy import PRESETS
from eqsearch.losses import as_target
from eqsearch.models import build_model
from eqsearch.optim import build_optimizer
from eqsearch.rules import build_rule

MNIST_BATCHES = 600  # 60000 / 100


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


def run(name: str, repeats: int, batches: int) -> None:
    cfg = from_dict(overrides={**PRESETS[name], "data.dataset": "digits"})  # shapes only: the data are synthetic
    g = torch.Generator().manual_seed(0)
    xs = [torch.rand(100, 784, generator=g) for _ in range(batches)]
    ys = [torch.randint(0, 10, (100,), generator=g) for _ in range(batches)]
    paths = {}
    for path in ("engine", "autograd"):
        torch.manual_seed(0)
        model = build_model(cfg.model, (784,), 10)
        opt, _ = build_optimizer(cfg.optim, model)
        rule = build_rule(cfg.rule)
        if path == "engine":
            fn = lambda x, y, gen, m=model, o=opt, r=rule: r.train_batch(m, x, y, o, gen)  # noqa: E731
        else:
            fn = lambda x, y, gen, m=model, o=opt: autograd_batch(m, cfg, x, y, o, gen)  # noqa: E731
        paths[path] = (fn, [])
    gen = torch.Generator().manual_seed(1)
    for fn, _ in paths.values():
        fn(xs[0], ys[0], gen)  # warm-up
    for _ in range(repeats):
        for fn, times in paths.values():
            t0 = time.perf_counter()
            for x, y in zip(xs, ys):
                fn(x, y, gen)
            times.append((time.perf_counter() - t0) / batches * 1e3)
    e, a = (statistics.median(paths[p][1]) for p in ("engine", "autograd"))
    print(f"{name:<15} {e:>10.2f} {a:>12.2f} {a / e:>6.1f}x {e * MNIST_BATCHES / 1e3:>15.1f} {a * MNIST_BATCHES / 1e3:>17.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.batches} batches x {args.repeats} "
          "repeats, median ms per training batch (batch 100)")
    print(f"{'preset':<15} {'engine ms':>10} {'autograd ms':>12} {'ratio':>7} {'engine s/epoch':>15} "
          f"{'autograd s/epoch':>17}")
    for name in PRESETS:
        run(name, args.repeats, args.batches)


if __name__ == "__main__":
    main()
