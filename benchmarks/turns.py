"""The harness of the family benchmarks (``ep_energy.py``, ``ep_continual.py``): one training
batch through the engine (``rule.train_batch``) against a script's autograd path, each on its own
copy of the same initial model and the same synthetic MNIST-shaped batches, the paths taking
turns; medians over repeats, the ratio and the projected seconds per MNIST epoch.

A script calls :func:`main` with its runs (name -> run config) and its autograd batch
``autograd_batch(model, cfg, x, y, optimizer, generator)``; scripts with their own paths
(``ep_cnn.py``, ``lca_cnn.py``) time them with :func:`time_paths`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from eqsearch.models import build_model
from eqsearch.optim import build_optimizer
from eqsearch.rules import build_rule

MNIST_TRAIN = 60000


def time_run(name: str, cfg, autograd_batch: Callable, repeats: int, batches: int,
             device: torch.device = torch.device("cpu")) -> None:
    """Time both paths on ``cfg`` and print one table row."""
    mbs = cfg.data.batch_size
    g = torch.Generator().manual_seed(0)
    xs = [torch.rand(mbs, 784, generator=g).to(device) for _ in range(batches)]
    ys = [torch.randint(0, 10, (mbs,), generator=g).to(device) for _ in range(batches)]
    paths = {}
    for path in ("engine", "autograd"):
        torch.manual_seed(0)
        model = build_model(cfg.model, (784,), 10).to(device)
        opt, _ = build_optimizer(cfg.optim, model)
        if path == "engine":
            fn = lambda x, y, gen, m=model, o=opt, r=build_rule(cfg.rule): r.train_batch(m, x, y, o, gen)  # noqa: E731
        else:
            fn = lambda x, y, gen, m=model, o=opt: autograd_batch(m, cfg, x, y, o, gen)  # noqa: E731
        paths[path] = (fn, [])
    for fn, _ in paths.values():
        fn(xs[0], ys[0], torch.Generator().manual_seed(1))  # warm-up
    for _ in range(repeats):
        for fn, times in paths.values():
            gen = torch.Generator().manual_seed(1)
            t0 = time.perf_counter()
            for x, y in zip(xs, ys):
                fn(x, y, gen)
            sync(device)
            times.append((time.perf_counter() - t0) / batches * 1e3)
    e, a = (statistics.median(paths[p][1]) for p in ("engine", "autograd"))
    per_epoch = MNIST_TRAIN / mbs / 1e3
    print(f"{name:<15} {e:>10.2f} {a:>12.2f} {a / e:>6.1f}x {e * per_epoch:>15.1f} {a * per_epoch:>17.1f}")


def main(doc: str, runs: dict, autograd_batch: Callable) -> None:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}; {args.batches} batches "
          f"x {args.repeats} repeats, median ms per training batch")
    print(f"{'run':<15} {'engine ms':>10} {'autograd ms':>12} {'ratio':>7} {'engine s/epoch':>15} "
          f"{'autograd s/epoch':>17}")
    for name, cfg in runs.items():
        time_run(name, cfg, autograd_batch, args.repeats, args.batches, device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_paths(paths: dict, device: torch.device, repeats: int) -> dict[str, float]:
    """Median seconds per call of every path, after one warm-up call each. The paths take
    turns within every repeat, so that a machine shared with other jobs loads them alike."""
    times: dict[str, list[float]] = {label: [] for label in paths}
    for fn in paths.values():
        fn()
    sync(device)
    for _ in range(repeats):
        for label, fn in paths.items():
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[label].append(time.perf_counter() - t0)
    return {label: statistics.median(t) for label, t in times.items()}
