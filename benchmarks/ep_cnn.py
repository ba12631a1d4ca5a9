"""Speed of one EP minibatch of the convolutional networks: engine vs the autograd-of-Φ path.

Configurations (reference §2.11), on synthetic data of the right shape:

- ``mnist``: the MNIST CNN check command — 1×28×28, channels 32 64, kernels 5 5, pools mm,
  fc 10, hard_sigmoid, mse, one-sided EP, β 0.4, T1 200, T2 10, mbs 100.
- ``cifar``: the CIFAR-10 4-conv command — 3×32×32, channels 128 256 512 512, kernels 3,
  paddings 1 1 1 0, pools mmmm, my_hard_sig, cel with softmax read-out, symmetric EP, β 1.0,
  T1 250, T2 25, mbs 128.

Paths:

- engine: ``EPRule.estimate`` (closed-form steps without autograd, ±β as one 2B batch,
  closed-form ∂Φ/∂θ).
- autograd: code base A's way — every step is s ← σ(∂Φ/∂s) with ``torch.autograd.grad`` of
  Φ (output layer linear for cel without read-out), the +β and −β phases run one after the
  other, and the update is the backward pass of (Φ̄(b, β_b) − Φ̄(a, β_a)) / (β_a − β_b).

Each path runs ``--repeats`` timed batches after one warm-up batch, the paths taking turns;
the median is reported.
The engine runs with the default ``train`` speed options (channels-last on); the autograd
path is code base A's (contiguous tensors). ``--scale-steps k`` divides T1 and T2 by k and
``--mbs`` overrides the batch size, for a quick look at the CIFAR configuration on a CPU; the
printed "projected" figure multiplies back (time is linear in steps and, for large batches, in
the batch size). ``--variants`` also times the engine with each speed option flipped
(channels-last; on CUDA TF32, then all on); ``--compile`` times ``train.compile`` = ``step`` and
``phase`` (chunks of 10 steps; CUDA graphs on CUDA), each compiled in its warm-up batch. For CIFAR
the projected epoch time (391 batches of 128) is printed.

``--orders`` studies fewer relaxation steps on the MNIST CNN instead (``rule.order``, ``rule.tol``):

1. on one batch (MNIST with ``--data-root``, else synthetic), the free phase in the sync and the
   async (even/odd) order: the steps each needs to bring the residual ‖s_t − s_{t−1}‖ below
   1e-2 ... 1e-5, the median ms per step, hence the seconds to each residual;
2. with ``--data-root``, one epoch of ``--epoch-batches`` training batches (the check command's
   settings: T1 200, T2 10, β 0.4, Adam 5e-5 1e-5 8e-6, mbs 100) then the first ``--test-images``
   test images, for sync / async, each without and with ``--tol``: test accuracy, relaxation
   steps per training batch (the ``train_steps`` metric) and seconds.

    python benchmarks/ep_cnn.py                        # both configurations, CPU defaults
    python benchmarks/ep_cnn.py --config mnist --repeats 5
    python benchmarks/ep_cnn.py --config cifar --device cuda --variants
    python benchmarks/ep_cnn.py --orders --data-root ../shared/data [--epoch-batches 20 --tol 1e-3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from eqsearch.config import RuleConfig, TrainConfig
from eqsearch.models import CNN, State
from eqsearch.rules import EPRule
from eqsearch.training import apply_speed_options

sys.path.insert(0, str(Path(__file__).resolve().parent))
from turns import time_paths  # noqa: E402

CONFIGS = {
    "mnist": dict(input_shape=(1, 28, 28), channels=[32, 64], kernels=[5, 5], strides=[1, 1],
                  paddings=[0, 0], pools="mm", fc=[10], act="hard_sigmoid", loss="mse", softmax=False,
                  rule=RuleConfig(estimator="one_sided", beta=0.4, T1=200, T2=10), mbs=100),
    "cifar": dict(input_shape=(3, 32, 32), channels=[128, 256, 512, 512], kernels=[3, 3, 3, 3],
                  strides=[1, 1, 1, 1], paddings=[1, 1, 1, 0], pools="mmmm", fc=[10],
                  act="my_hard_sig", loss="cel", softmax=True,
                  rule=RuleConfig(estimator="symmetric", beta=1.0, T1=250, T2=25), mbs=128),
}
CIFAR_TRAIN_BATCHES = 391  # ⌈50000 / 128⌉
ORIGINAL_MNIST_CNN_S = 5.4  # code base A, one MNIST-CNN batch on the 2-core CPU of this project


def build(name: str, device: torch.device) -> CNN:
    c = CONFIGS[name]
    torch.manual_seed(0)
    model = CNN(c["input_shape"], c["channels"], c["kernels"], c["strides"], c["paddings"], c["pools"],
                c["fc"], act=c["act"], loss=c["loss"], softmax=c["softmax"])
    return model.to(device)


# ---------------------------------------------------------------------- code base A's way
def autograd_step(model: CNN, x: torch.Tensor, state: State, beta, y: torch.Tensor) -> State:
    """s ← σ(∂Φ/∂s) with autograd (linear output for cel without read-out), like code base A."""
    leaves = [s.detach().requires_grad_(True) for s in state]
    grads = torch.autograd.grad(model.phi(x, leaves, beta, y).sum(), leaves)
    last = len(grads) - 1
    return [g if (i == last and model.loss == "cel" and not model.softmax) else model.act(g)
            for i, g in enumerate(grads)]


def autograd_batch(model: CNN, x: torch.Tensor, y: torch.Tensor, rule: RuleConfig) -> None:
    """One EP minibatch of code base A: phases by autograd steps, update by backward of Φ̄."""
    state = model.init_state([torch.zeros((x.shape[0],) + tuple(model.shapes[0]), device=x.device)])
    for _ in range(rule.T1):
        state = autograd_step(model, x, state, 0.0, y)
    free = state

    def nudge(beta: float) -> State:
        s = free
        for _ in range(rule.T2):
            s = autograd_step(model, x, s, beta, y)
        return [t.detach() for t in s]

    if rule.estimator == "symmetric":
        (a, beta_a), (b, beta_b) = (nudge(rule.beta), rule.beta), (nudge(-rule.beta), -rule.beta)
    else:
        (a, beta_a), (b, beta_b) = ([t.detach() for t in free], 0.0), (nudge(rule.beta), rule.beta)
    model.zero_grad(set_to_none=True)
    phi_a = model.phi(x, a, beta_a, y).mean()
    phi_b = model.phi(x, b, beta_b, y).mean()
    ((phi_b - phi_a) / (beta_a - beta_b)).backward()


# ---------------------------------------------------------------------- timing
def run(name: str, device: torch.device, repeats: int, scale_steps: int, mbs: int | None,
        skip_autograd: bool, variants: bool, compiled: bool = False) -> None:
    c = CONFIGS[name]
    rule = c["rule"]
    full_mbs = c["mbs"]
    rule_run = replace(rule, T1=max(1, rule.T1 // scale_steps), T2=max(1, rule.T2 // scale_steps))
    b = mbs or full_mbs
    g = torch.Generator().manual_seed(0)
    x = torch.randn((b,) + c["input_shape"], generator=g).to(device)
    y = torch.randint(0, 10, (b,), generator=g).to(device)
    steps_full = rule.T1 + rule.T2 * (2 if rule.estimator == "symmetric" else 1)
    steps_run = rule_run.T1 + rule_run.T2 * (2 if rule.estimator == "symmetric" else 1)
    project = (steps_full / steps_run) * (full_mbs / b)
    print(f"\n== {name}: mbs {b}, T1 {rule_run.T1}, T2 {rule_run.T2}, {rule.estimator}, device {device}"
          + (f" (projection ×{project:.1f} to mbs {full_mbs}, T1 {rule.T1}, T2 {rule.T2})" if project != 1 else ""))

    def engine(train: TrainConfig):
        model = build(name, device)
        apply_speed_options(train, model)
        ep = EPRule(rule_run)
        gen = torch.Generator().manual_seed(0)

        def batch():  # TF32 is a global switch: set it for this path only
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = train.tf32
            ep.estimate(model, x, y, gen)
        return batch

    default = TrainConfig()
    paths = {"engine": engine(default)}
    if variants:
        flips = [("channels_last", not default.channels_last)]
        if device.type == "cuda":
            flips += [("tf32", not default.tf32)]
        for option, value in flips:
            paths[f"engine {option}={value}"] = engine(replace(default, **{option: value}))
        if device.type == "cuda":
            paths["engine all on"] = engine(replace(default, tf32=True, channels_last=True,
                                                    compile="phase" if compiled else default.compile))
    if compiled:
        for mode in ("step", "phase"):
            paths[f"engine compile={mode}"] = engine(replace(default, compile=mode))
    if not skip_autograd:
        model = build(name, device)
        paths["autograd"] = lambda: autograd_batch(model, x, y, rule_run)
    results = time_paths(paths, device, repeats)
    for label, t in results.items():
        line = f"{label:>22}: {1000 * t:10.1f} ms/batch"
        if project != 1:
            line += f"   projected {1000 * t * project:10.1f} ms/batch"
        if name == "cifar":
            line += f"   projected epoch {t * project * CIFAR_TRAIN_BATCHES / 60:7.1f} min"
        print(line)
    if "autograd" in results:
        print(f"{'speed-up vs autograd':>22}: {results['autograd'] / results['engine']:10.2f}×")
    if name == "mnist" and project == 1:
        print(f"{'vs original 5.4 s':>22}: {ORIGINAL_MNIST_CNN_S / results['engine']:10.2f}×")


# ---------------------------------------------------------------------- fewer steps
RESIDUALS = (1e-2, 1e-3, 1e-4, 1e-5)
CHECK_FIELDS = {"model.kind": "cnn", "model.channels": [32, 64], "model.kernels": [5, 5], "model.strides": [1, 1],
                "model.paddings": [0, 0], "model.pools": "mm", "model.fc": [10], "model.act": "hard_sigmoid",
                "model.loss": "mse", "rule.estimator": "one_sided", "rule.beta": 0.4, "rule.T1": 200, "rule.T2": 10,
                "optim.name": "adam", "optim.lrs": [5e-5, 1e-5, 8e-6], "data.batch_size": 100,
                "data.dataset": "mnist"}


def residual_study(device: torch.device, data_root: str | None, max_steps: int) -> None:
    """Steps and seconds of the free phase to each residual in ``RESIDUALS``, sync vs async."""
    from eqsearch.models.base import residual
    from eqsearch.rules.relax import run_steps

    model = build("mnist", device)
    apply_speed_options(TrainConfig(), model)
    if data_root:
        from eqsearch.config import DataConfig
        from eqsearch.data import load_dataset
        x = load_dataset(DataConfig(dataset="mnist", root=data_root)).x_train[:100].to(device)
    else:
        x = torch.rand((100, 1, 28, 28), generator=torch.Generator().manual_seed(0)).to(device)
    print(f"\n== free phase of the MNIST CNN on one batch of 100 ({'MNIST' if data_root else 'synthetic'}), "
          f"up to {max_steps} steps")
    print(f"{'order':>6} {'ms/step':>8} " + " ".join(f"{'steps to ' + f'{r:g}':>14} {'s':>6}" for r in RESIDUALS))
    with torch.no_grad():
        drive = model.input_drive(x)
        for order in ("sync", "async"):
            step = model.stepper(drive, order=order)
            state, first = model.init_state(drive), {}
            for t in range(1, max_steps + 1):
                new = step(state)
                r = float(residual(state, new))
                state = new
                for level in RESIDUALS:
                    if r < level and level not in first:
                        first[level] = t
                if len(first) == len(RESIDUALS):
                    break
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                run_steps(step, model.init_state(drive), 20)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append((time.perf_counter() - t0) / 20)
            ms = 1000 * statistics.median(times)
            cells = [(f"{first[r]:>14} {first[r] * ms / 1000:>6.2f}" if r in first else f"{'> ' + str(max_steps):>14} {'-':>6}")
                     for r in RESIDUALS]
            print(f"{order:>6} {ms:>8.1f} " + " ".join(cells))


def epoch_study(data_root: str, device: torch.device, batches: int, test_images: int, tol: float,
                threads: int | None) -> None:
    """One epoch of ``batches`` training batches, then ``test_images`` test images, per variant."""
    from eqsearch.config import from_dict
    from eqsearch.data import Dataset, load_dataset
    from eqsearch.training import Trainer

    base = {**CHECK_FIELDS, "data.root": data_root, "data.max_batches": batches, "train.epochs": 1,
            "train.device": str(device), **({"train.threads": threads} if threads else {})}
    full = load_dataset(from_dict(overrides=base).data)
    data = Dataset(full.name, full.x_train, full.y_train, full.x_test[:test_images], full.y_test[:test_images],
                   full.num_classes)
    print(f"\n== one epoch of {batches} batches of 100, then {test_images} test images (check command's settings)")
    print(f"{'variant':>18} {'test acc':>9} {'train steps/batch':>18} {'train s':>8} {'test s':>7} {'total s':>8}")
    for order in ("sync", "async"):
        for t in (0.0, tol):
            cfg = from_dict(overrides={**base, "rule.order": order, "rule.tol": t})
            trainer = Trainer(cfg, data=data)
            t0 = time.perf_counter()
            train = trainer.train_epoch()
            t1 = time.perf_counter()
            test = trainer.evaluate("test")
            t2 = time.perf_counter()
            label = f"{order}" + (f", tol {t:g}" if t else "")
            print(f"{label:>18} {test['test_acc']:>9.4f} {train['train_steps']:>18.1f} {t1 - t0:>8.1f} {t2 - t1:>7.1f} "
                  f"{t2 - t0:>8.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=["mnist", "cifar", "both"], default="both")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=3, help="timed batches per path (median)")
    p.add_argument("--scale-steps", type=int, default=None,
                   help="divide T1, T2 by this (default: 1 for mnist and on CUDA, 25 for cifar on a CPU)")
    p.add_argument("--mbs", type=int, default=None,
                   help="batch size (default: the configuration's; 32 for cifar on a CPU)")
    p.add_argument("--skip-autograd", action="store_true")
    p.add_argument("--variants", action="store_true",
                   help="also time the engine with each speed option flipped (channels-last; on CUDA "
                        "also TF32) and, on CUDA, all on")
    p.add_argument("--compile", action="store_true", help="also time train.compile = step and phase")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--orders", action="store_true", help="the fewer-steps study (rule.order, rule.tol) instead")
    p.add_argument("--data-root", default=None, help="--orders: MNIST root (the epoch part needs it)")
    p.add_argument("--max-steps", type=int, default=400, help="--orders: free steps of the residual study")
    p.add_argument("--epoch-batches", type=int, default=20, help="--orders: training batches of the epoch")
    p.add_argument("--test-images", type=int, default=1000, help="--orders: test images evaluated")
    p.add_argument("--tol", type=float, default=1e-3, help="--orders: rule.tol of the early-exit variants")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device {device}")
    if a.orders:
        residual_study(device, a.data_root, a.max_steps)
        if a.data_root:
            epoch_study(a.data_root, device, a.epoch_batches, a.test_images, a.tol, a.threads)
        return
    for name in (["mnist", "cifar"] if a.config == "both" else [a.config]):
        cpu_cifar = name == "cifar" and device.type == "cpu"
        scale = a.scale_steps or (25 if cpu_cifar else 1)
        mbs = a.mbs or (32 if cpu_cifar else None)
        run(name, device, a.repeats, scale, mbs, a.skip_autograd, a.variants, a.compile)


if __name__ == "__main__":
    main()
