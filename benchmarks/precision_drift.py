"""How far reduced precision moves an EP update: float32, TF32 (CUDA) and bfloat16 against float64.

For code base A's MNIST MLP and MNIST CNN check configurations (``ep_mlp.py``, ``ep_cnn.py``),
from the same initial weights and batch, one EP estimate (free phase, nudged phase, contrast)
is computed in float64 (the reference) and in each reduced precision; the script prints, per
precision, the relative error ‖ĝ − ĝ₆₄‖ / ‖ĝ₆₄‖ over all parameters, the angle between ĝ and
ĝ₆₄ in degrees, and the largest difference of the free state. TF32 is measured only on CUDA
(``train.tf32``); bfloat16 runs the whole model in bfloat16 (no such run option exists: this
says whether one is worth adding).

    python benchmarks/precision_drift.py [--device cuda]
"""

from __future__ import annotations

import argparse
import math

import torch

from eqsearch.config import RuleConfig
from eqsearch.models import CNN, MLP
from eqsearch.rules import EPRule, free_phase

CASES = {
    "mnist_mlp": (lambda: MLP([784, 512, 10]), (50, 784), RuleConfig(estimator="one_sided", beta=0.1, T1=30, T2=10)),
    "mnist_cnn": (lambda: CNN((1, 28, 28), [32, 64], [5, 5], [1, 1], [0, 0], "mm", [10], act="hard_sigmoid"),
                  (100, 1, 28, 28), RuleConfig(estimator="one_sided", beta=0.4, T1=200, T2=10)),
}


def update(model, x, y, rule: EPRule) -> tuple[torch.Tensor, torch.Tensor]:
    """(the EP estimate as one float64 vector, the free state's first layer in float64)."""
    model.zero_grad(set_to_none=True)
    rule.estimate(model, x, y, torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, free, _, _ = free_phase(model, x, rule.cfg.T1)
    return torch.cat([p.grad.flatten().double() for p in model.parameters()]), free[0].double()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = ap.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}")
    print(f"{'case':<10} {'precision':<10} {'rel. error':>11} {'angle deg':>10} {'max |Δ free s|':>15}")
    for name in args.cases:
        make, shape, cfg = CASES[name]
        torch.manual_seed(0)
        init = make().state_dict()
        g = torch.Generator().manual_seed(1)
        x = torch.rand(shape, generator=g)
        y = torch.randint(0, 10, (shape[0],), generator=g)
        precisions = [("float64", torch.float64, False), ("float32", torch.float32, False)]
        if device.type == "cuda":
            precisions.append(("tf32", torch.float32, True))
        precisions.append(("bfloat16", torch.bfloat16, False))
        ref = None
        for label, dtype, tf32 in precisions:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
            model = make()
            model.load_state_dict(init)
            model = model.to(device=device, dtype=dtype)
            got, free = update(model, x.to(device=device, dtype=dtype), y.to(device), EPRule(cfg))
            if ref is None:
                ref = (got, free)
                continue
            rel = float((got - ref[0]).norm() / ref[0].norm())
            cos = float(got @ ref[0] / (got.norm() * ref[0].norm()))
            angle = math.degrees(math.acos(max(-1.0, min(1.0, cos))))
            print(f"{name:<10} {label:<10} {rel:>11.2e} {angle:>10.4f} {float((free - ref[1]).abs().max()):>15.2e}")
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False


if __name__ == "__main__":
    main()
