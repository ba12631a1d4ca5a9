"""Speed of the EP engine on code base A's MNIST MLP command: fused, generic and autograd paths.

Configuration (issue 2): 784-512-10, mysig, T1 30, T2 10, β 0.1, mbs 50, plain SGD lrs 0.08 0.04;
one-sided and symmetric estimators. Three paths train copies of the same model on the same
batches in this process, taking turns; the script prints the median ms/batch over repeats, the
projected s/epoch (1200 batches of MNIST) and the ratios:

- ``fused``: ``EPRule.train_batch`` as a run uses it: the MLP's per-phase fused step
  (:class:`eqsearch.models.mlp.FusedStep`) and, with plain SGD, the update applied from its
  rank-B factors (one ``addmm_`` per weight, no gradient formed);
- ``generic``: the same rule through the contract's generic parts, as the engine ran before the
  fused paths: ``model.step`` at every step, the gradients formed, written to ``p.grad`` and
  stepped by the optimizer;
- ``autograd``: code base A's way, every step by autograd of Φ;
- ``matmuls``: the fused path's matrix products alone, recorded from one of its batches and
  replayed (:mod:`matmul_floor`): the floor of a batch on this machine. ``fused/matmuls`` is
  what everything else (σ, the nudge, residuals, Python, launches) costs on top, a ratio that
  does not depend on how fast the host is;
- with ``--compile``, ``compiled``: ``train.compile = "phase"``, each phase in chunks of 10 steps through
  ``torch.compile`` (mode reduce-overhead: one CUDA-graph replay per chunk on a GPU), compiled
  during the warm-up batches.

With --data-root (MNIST files present) it also times one real epoch through ``fit()`` (training
+ test evaluation).

    python benchmarks/ep_mlp.py [--repeats 7] [--batches 40] [--threads N] [--compile] [--data-root DIR]
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
from matmul_floor import record_matmuls  # noqa: E402

from eqsearch.config import RuleConfig, TrainConfig, from_dict  # noqa: E402
from eqsearch.models import MLP, EnergyModel  # noqa: E402
from eqsearch.rules import EPRule, LearningRule  # noqa: E402
from eqsearch.training import apply_speed_options, fit  # noqa: E402

ARCHI, T1, T2, BETA, MBS, LRS = [784, 512, 10], 30, 10, 0.1, 50, [0.08, 0.04]
MNIST_BATCHES = 60000 // MBS


class GenericMLP(MLP):
    """The MLP through the contract's generic stepper (the engine before fusing)."""

    stepper = EnergyModel.stepper


def paths(estimator: str, device: torch.device, compiled: bool) -> dict:
    """name -> batch function (x, y, generator)."""
    rule = EPRule(RuleConfig(estimator=estimator, beta=BETA, T1=T1, T2=T2))
    out = {}
    kinds = (("fused", MLP), ("generic", GenericMLP), ("autograd", MLP)) + ((("compiled", MLP),) if compiled else ())
    for name, cls in kinds:
        torch.manual_seed(0)
        model = cls(ARCHI).to(device)
        if name == "compiled":
            apply_speed_options(TrainConfig(compile="phase"), model)
        opt = torch.optim.SGD([{"params": g, "lr": lr} for g, lr in zip(model.synapse_groups(), LRS)])
        if name == "autograd":
            def fn(x, y, gen, m=model, o=opt):
                autograd_ep_grads(m, x, y, T1, T2, BETA, estimator)
                o.step()
        elif name == "generic":  # the rule's estimate into p.grad, then the optimizer's step
            def fn(x, y, gen, m=model, o=opt):
                LearningRule.train_batch(rule, m, x, y, o, gen)
        else:  # fused, compiled
            def fn(x, y, gen, m=model, o=opt):
                rule.train_batch(m, x, y, o, gen)
        out[name] = fn
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--compile", action="store_true", help='also time train.compile = "phase"')
    ap.add_argument("--data-root", default=None, help="MNIST root: also time one real epoch through fit()")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    device = torch.device(args.device)
    xs = [torch.rand(MBS, 784, generator=g).to(device) for _ in range(args.batches)]
    ys = [torch.randint(0, 10, (MBS,), generator=g).to(device) for _ in range(args.batches)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}; {args.batches} batches x "
          f"{args.repeats} repeats (paths in turns), median ms/batch; s/epoch = 1200 batches")
    print(f"{'estimator':<11} {'fused':>7} {'generic':>8} {'autograd':>9} {'generic/fused':>14} "
          f"{'autograd/fused':>15} {'fused s/epoch':>14} {'matmuls':>8} {'fused/matmuls':>14}"
          + (f" {'compiled':>9} {'compiled/fused':>15}" if args.compile else ""))
    for est in ("one_sided", "symmetric"):
        fns = paths(est, device, args.compile)
        for fn in fns.values():
            for x, y in zip(xs[:5], ys[:5]):
                fn(x, y, torch.Generator().manual_seed(1))
        floor = record_matmuls(lambda: fns["fused"](xs[0], ys[0], torch.Generator().manual_seed(1)))
        fns["matmuls"] = floor
        for _ in range(5):
            floor()
        times: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(args.repeats):
            for name, fn in fns.items():
                gen = torch.Generator().manual_seed(1)
                t0 = time.perf_counter()
                for x, y in zip(xs, ys):
                    fn(x, y, gen)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times[name].append((time.perf_counter() - t0) / len(xs) * 1e3)
        med = {name: statistics.median(t) for name, t in times.items()}
        print(f"{est:<11} {med['fused']:>7.2f} {med['generic']:>8.2f} {med['autograd']:>9.2f} "
              f"{med['generic'] / med['fused']:>13.2f}x {med['autograd'] / med['fused']:>14.1f}x "
              f"{med['fused'] * MNIST_BATCHES / 1e3:>14.2f} {med['matmuls']:>8.2f} {med['fused'] / med['matmuls']:>13.2f}x"
              + (f" {med['compiled']:>9.2f} {med['compiled'] / med['fused']:>14.2f}x" if args.compile else ""))
        print(f"{'':<11} one fused batch: {floor.operators} aten operators, {len(floor.calls)} of them matrix products, "
              f"{floor.flops / 1e6:.0f} MFLOP; the products alone at {floor.flops / med['matmuls'] / 1e6:.0f} GFLOP/s")
    if args.data_root:
        cfg = from_dict(overrides={"data.dataset": "mnist", "data.root": args.data_root, "data.batch_size": MBS,
                                   "model.archi": ARCHI, "rule.estimator": "one_sided", "rule.beta": BETA,
                                   "rule.T1": T1, "rule.T2": T2, "optim.lrs": LRS, "train.epochs": 1,
                                   "train.device": args.device,
                                   **({"train.threads": args.threads} if args.threads else {})})
        m = next(fit(cfg))
        print(f"real MNIST epoch through fit(): {m['epoch_seconds']:.2f} s (train + test evaluation), "
              f"test acc {m['test_acc']:.4f}")


if __name__ == "__main__":
    main()
