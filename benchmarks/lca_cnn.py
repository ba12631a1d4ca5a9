"""Speed of one LCA-CNN training minibatch: the engine (LCA once per minibatch) vs code base D's
schedule (the LCA recomputed in each of the three phases), and of the LCA alone.

Configurations, on synthetic data of the right shape:

- ``cifar``: code base D's LCA-RCNN command (reference §5.9) — 3×32×32, 64 atoms 3×9×9,
  stride 2, λ 0.25, τ 100, 600 LCA iterations; copy layer 64×16×16, channels 256 512, kernels 3,
  paddings 1, pools mm, my_hard_sig, cel with softmax read-out, symmetric EP, β 0.5, T1 250,
  T2 50, mbs 128.
- ``fashion``: the base of ``search_spaces/lca_fashion.yaml`` — 1×28×28, 32 atoms 7×7, stride 2,
  τ 50, 200 iterations, channels 64, T1 40, T2 10, mbs 64.

Paths (both autograd-free, closed-form dynamics and update, the same model and batch):

- engine: ``EPRule.estimate`` — the code computed once (``input_drive``), the ±β phases as one
  batch of 2B, one contrast.
- original: code base D's schedule — the LCA run on the batch before the free phase, before the
  +β phase and before the −β phase (identical codes, 3× the LCA work), the phases one after the
  other, the same contrast.

Each path runs ``--repeats`` timed batches after one warm-up, the paths taking turns; medians are
reported with their ratio. The LCA alone is timed the same way and reported in iterations per
second (and image-iterations per second). ``--scale-steps k`` divides T1, T2 and the LCA
iterations by k and ``--mbs`` sets the batch size, for a quick look on a CPU; the "projected"
column multiplies back (time is linear in steps and, for large batches, in the batch size).

``--lateral`` times instead the lateral inhibition (ΦᵀΦ − I)a of one LCA iteration, on the
configuration's geometry and batch (and on an evaluation batch of 1000 for fashion), two ways:
lcapt's kernel G = D ⋆ D − I (F, F, 2m + 1, 2m + 1) as one convolution in code space, and the
engine's :meth:`~eqsearch.models.lca.LCA.inhibition` (the canvas Φa folded from the columns
Dᵀa, correlated with D at stride S); it checks that the two agree.

    python benchmarks/lca_cnn.py                         # CPU: cifar scaled down, fashion
    python benchmarks/lca_cnn.py --config cifar --device cuda
    python benchmarks/lca_cnn.py --lateral --threads 1   # the inhibition: kernel G vs fold
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from eqsearch.config import RuleConfig, from_dict
from eqsearch.losses import as_target
from eqsearch.models import build_model
from eqsearch.models.lca_cnn import LCACNN
from eqsearch.rules import EPRule, contrast, relax, write_grads

sys.path.insert(0, str(Path(__file__).resolve().parent))
from turns import time_paths  # noqa: E402

CONFIGS = {
    "cifar": dict(shape=(3, 32, 32), mbs=128, model={
        "model.kind": "lca_cnn", "model.channels": [256, 512], "model.kernels": [3, 3], "model.strides": [1, 1],
        "model.paddings": [1, 1], "model.pools": "mm", "model.act": "my_hard_sig", "model.loss": "cel",
        "model.softmax": True, "model.lca.features": 64, "model.lca.ksize": 9, "model.lca.stride": 2,
        "model.lca.lam": 0.25, "model.lca.tau": 100.0, "model.lca.iters": 600},
        rule=RuleConfig(estimator="symmetric", beta=0.5, T1=250, T2=50)),
    "fashion": dict(shape=(1, 28, 28), mbs=64, model={
        "model.kind": "lca_cnn", "model.channels": [64], "model.kernels": [3], "model.strides": [1],
        "model.paddings": [1], "model.pools": "m", "model.act": "my_hard_sig", "model.loss": "cel",
        "model.softmax": True, "model.lca.features": 32, "model.lca.ksize": 7, "model.lca.stride": 2,
        "model.lca.lam": 0.25, "model.lca.tau": 50.0, "model.lca.iters": 200},
        rule=RuleConfig(estimator="symmetric", beta=0.5, T1=40, T2=10)),
}


def build(name: str, iters: int, device: torch.device) -> LCACNN:
    c = CONFIGS[name]
    lrs = [0.1] * (len(c["model"]["model.channels"]) + 1)
    cfg = from_dict(overrides={**c["model"], "model.lca.iters": iters, "optim.lrs": lrs})
    torch.manual_seed(0)
    model = build_model(cfg.model, c["shape"], 10).to(device)
    return model.to(memory_format=torch.channels_last)  # the train default (train.channels_last)


@torch.no_grad()
def original_batch(model: LCACNN, x: torch.Tensor, y: torch.Tensor, rule: RuleConfig) -> None:
    """Code base D's minibatch: the LCA before each of the three phases, phases one by one."""
    target = as_target(y, 10, x.dtype)

    def code() -> list[torch.Tensor]:
        return [model.lca(x)[1]]  # the layer itself: no reuse of an earlier code

    drive = code()
    free, _ = relax(model, drive, model.init_state(drive), rule.T1)
    plus, _ = relax(model, code(), free, rule.T2, rule.beta, target)
    minus, _ = relax(model, code(), free, rule.T2, -rule.beta, target)
    write_grads(model, contrast(model, x, target, plus, rule.beta, minus, -rule.beta, drive=drive))


def run(name: str, device: torch.device, repeats: int, scale: int, mbs: int | None) -> None:
    c = CONFIGS[name]
    rule, iters = c["rule"], c["model"]["model.lca.iters"]
    small = replace(rule, T1=max(1, rule.T1 // scale), T2=max(1, rule.T2 // scale))
    small_iters = max(1, iters // scale)
    b = mbs or c["mbs"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn((b,) + c["shape"], generator=g).to(device)
    y = torch.randint(0, 10, (b,), generator=g).to(device)
    project = scale * c["mbs"] / b
    print(f"\n== {name}: mbs {b}, T1 {small.T1}, T2 {small.T2}, LCA {small_iters} iterations, symmetric, "
          f"device {device}" + (f" (projection ×{project:.1f} to mbs {c['mbs']}, T1 {rule.T1}, T2 {rule.T2}, "
                               f"{iters} iterations)" if project != 1 else ""))
    model = build(name, small_iters, device)
    ep, gen = EPRule(small), torch.Generator().manual_seed(0)
    lca_only = torch.no_grad()(model.lca)
    # a fresh batch tensor per call, so that the engine codes it as it would a new minibatch
    results = time_paths({"engine": lambda: ep.estimate(model, x.clone(), y, gen),
                          "original (LCA x3)": lambda: original_batch(model, x.clone(), y, small),
                          "LCA alone": lambda: lca_only(x.clone())}, device, repeats)
    for label, t in results.items():
        line = f"{label:>20}: {1000 * t:10.1f} ms"
        if project != 1:
            line += f"   projected {1000 * t * project:10.1f} ms"
        print(line)
    print(f"{'speed-up vs original':>20}: {results['original (LCA x3)'] / results['engine']:10.2f}×")
    per_s = small_iters / results["LCA alone"]
    print(f"{'LCA':>20}: {per_s:10.0f} iterations/s on a batch of {b} ({per_s * b:.0f} image-iterations/s); "
          f"LCA share of the engine's batch {results['LCA alone'] / results['engine']:.0%}")


@torch.no_grad()
def run_lateral(name: str, device: torch.device, repeats: int, mbs: int | None) -> None:
    c = CONFIGS[name]
    model = build(name, 1, device)
    lca = model.lca
    g, m = lca.lateral_kernel(), lca.lateral_padding
    for b in [mbs or c["mbs"]] + ([1000] if name == "fashion" and not mbs else []):
        x = torch.randn((b,) + c["shape"], generator=torch.Generator().manual_seed(0)).to(device)
        s = lca.preprocess(x.contiguous(memory_format=torch.channels_last))
        a = lca.transfer(lca.drive(s))  # a code of the first step's density
        paths = {"kernel G": lambda: F.conv2d(a, g, padding=m), "fold (engine)": lambda: lca.inhibition(a)}
        torch.testing.assert_close(paths["fold (engine)"](), paths["kernel G"](), rtol=1e-4, atol=1e-4)
        results = time_paths(paths, device, repeats)
        print(f"\n== {name} inhibition: batch {b}, {tuple(a.shape[1:])} code, F {a.shape[1]}, kernel G "
              f"{tuple(g.shape)}, device {device}")
        for label, t in results.items():
            print(f"{label:>20}: {1000 * t:10.2f} ms per LCA iteration")
        print(f"{'speed-up':>20}: {results['kernel G'] / results['fold (engine)']:10.2f}×")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=["cifar", "fashion", "both"], default="both")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=3, help="timed batches per path (median)")
    p.add_argument("--scale-steps", type=int, default=None,
                   help="divide T1, T2 and the LCA iterations by this (default: 1 on CUDA; on a CPU 25 for "
                        "cifar, 4 for fashion)")
    p.add_argument("--mbs", type=int, default=None, help="batch size (default: the configuration's; 16 for "
                                                           "cifar on a CPU)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--lateral", action="store_true", help="time the lateral inhibition only: kernel G vs fold")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device {device}")
    for name in (["cifar", "fashion"] if a.config == "both" else [a.config]):
        if a.lateral:
            run_lateral(name, device, a.repeats, a.mbs)
            continue
        cpu = device.type == "cpu"
        scale = a.scale_steps or ((25 if name == "cifar" else 4) if cpu else 1)
        run(name, device, a.repeats, scale, a.mbs or (16 if cpu and name == "cifar" else None))


if __name__ == "__main__":
    main()
