"""Speed of the EP engine on code base A's MNIST MLP command, against autograd of Φ.

Configuration (issue 2): 784-512-10, mysig, T1 30, T2 10, β 0.1, mbs 50, SGD lrs 0.08 0.04;
one-sided and symmetric estimators. Both paths train the same model on the same batches in
this process; the script prints median ms/batch over repeats, the projected s/epoch (1200
batches of MNIST) and the ratio. With --data-root (MNIST files present) it also times one real
epoch through ``fit()`` (training + test evaluation).

    python benchmarks/ep_mlp.py [--repeats 5] [--batches 40] [--threads N] [--data-root DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from autograd_baseline import autograd_ep_grads  # noqa: E402

from eqsearch.config import RuleConfig, from_dict  # noqa: E402
from eqsearch.models import MLP  # noqa: E402
from eqsearch.rules import EPRule  # noqa: E402
from eqsearch.training import fit  # noqa: E402

ARCHI, T1, T2, BETA, MBS, LRS = [784, 512, 10], 30, 10, 0.1, 50, [0.08, 0.04]
MNIST_BATCHES = 60000 // MBS


def time_path(step_fn, model, xs, ys, repeats: int) -> float:
    """Median over repeats of ms per batch (one warm-up pass first)."""
    opt = torch.optim.SGD([{"params": g, "lr": lr} for g, lr in zip(model.synapse_groups(), LRS)])
    for x, y in zip(xs[:5], ys[:5]):
        step_fn(model, x, y)
        opt.step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for x, y in zip(xs, ys):
            step_fn(model, x, y)
            opt.step()
        times.append((time.perf_counter() - t0) / len(xs) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--data-root", default=None, help="MNIST root: also time one real epoch through fit()")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    xs = [torch.rand(MBS, 784, generator=g) for _ in range(args.batches)]
    ys = [torch.randint(0, 10, (MBS,), generator=g) for _ in range(args.batches)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.batches} batches x "
          f"{args.repeats} repeats, median ms/batch")
    print(f"{'estimator':<11} {'engine ms':>10} {'autograd ms':>12} {'ratio':>7} {'engine s/epoch':>15} "
          f"{'autograd s/epoch':>17}")
    for est in ("one_sided", "symmetric"):
        rule = EPRule(RuleConfig(estimator=est, beta=BETA, T1=T1, T2=T2))
        gen = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        engine = time_path(lambda m, x, y: rule.estimate(m, x, y, gen), MLP(ARCHI), xs, ys, args.repeats)
        torch.manual_seed(0)
        auto = time_path(lambda m, x, y: autograd_ep_grads(m, x, y, T1, T2, BETA, est), MLP(ARCHI), xs, ys,
                         args.repeats)
        print(f"{est:<11} {engine:>10.2f} {auto:>12.2f} {auto / engine:>6.1f}x {engine * MNIST_BATCHES / 1e3:>15.2f} "
              f"{auto * MNIST_BATCHES / 1e3:>17.2f}")
    if args.data_root:
        cfg = from_dict(overrides={"data.dataset": "mnist", "data.root": args.data_root, "data.batch_size": MBS,
                                   "model.archi": ARCHI, "rule.estimator": "one_sided", "rule.beta": BETA,
                                   "rule.T1": T1, "rule.T2": T2, "optim.lrs": LRS, "train.epochs": 1})
        m = next(fit(cfg))
        print(f"real MNIST epoch through fit(): {m['epoch_seconds']:.2f} s (train + test evaluation), "
              f"test acc {m['test_acc']:.4f}")


if __name__ == "__main__":
    main()
