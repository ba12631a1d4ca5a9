"""GDU check: per-step EP updates against truncated-BPTT gradients (reference §1.4, §2.7).

For a batch (x, y), with T1 free steps and T2 nudged steps:

- BPTT side: from the state after T1 − T2 free steps, for K = 0..T2 run K steps without graph
  and T2 − K steps with graph, loss (batch mean) at the end, backward. The partial sums give,
  for t = 0..T2−1, the contribution of the (t+1)-th last step to ∂L/∂θ (``bptt[θ][t]``) and
  −∂L/∂s at t steps before the end, per sample (``bptt[s_l][t]``).
- EP side: from the free state s* (T1 steps), nudged steps s_{t+1} = step(s_t, β) and
    EP_s(t) = (s_{t+1} − s_t) / (β·dt),   EP_θ(t) = −[G(s_{t+1}, β) − G(s_t, β)] / β,
  G = batch-mean ∂Φ/∂θ (both at β, so the loss term cancels), dt the Euler step of
  continuous-time dynamics (1 for fixed-point ones): neurons move by dt × their velocity. Where the loss depends on θ
  directly (a softmax read-out), both sides add that direct term to step t = 0
  (BPTT: the gradient at the final state; EP: −[G(s*, β) − G(s*, 0)] / β), so that each series
  sums to its whole update. Vector-field models take every step's presynaptic factor from s*
  (code base A used s_t).
- Continual EP (code base B's ``--action plotcurves`` with ``--cep``): EP_θ(t) is the model's
  per-step update (:meth:`EnergyModel.step_update`, C-VF: presynaptic s_t), applied by SGD
  with the run's learning rates before the next step, on a copy of the model (the BPTT side
  keeps the original weights).

Both sides are in the
  "estimate of +∂L/∂θ" convention for θ and "−∂L/∂s" for neurons; the theorem says they
  match as β → 0 for a converged free phase.

Where fixed-point dynamics apply σ after ∂Φ/∂s (code base A's setting), the neuron updates equal
−∂L/∂s only up to the positive factor σ'(·): their sign error is 0, their relative error is
not; for gradient-flow Euler dynamics they match; the synapse updates match BPTT exactly as
β → 0.

Metrics per parameter / neuron layer over the time axis (code base A's ``RMSE``): relative
error r = rms_t(EP − BPTT) / (1e−10 + max(rms_t EP, rms_t BPTT)) averaged over elements; sign
error = fraction of (t, element) entries with EP·BPTT < 0; and the angle (degrees) between
Σ_t EP_θ(t) and Σ_t BPTT_θ(t).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from eqsearch.losses import as_target, loss_per_sample
from eqsearch.models import EnergyModel
from eqsearch.rules import free_phase, relax


def init_generator() -> torch.Generator:
    """The same initial state (for families that draw one) on the BPTT and the EP side."""
    return torch.Generator().manual_seed(0)


def bptt_series(model: EnergyModel, x: torch.Tensor, y: torch.Tensor, T1: int, T2: int, order: str = "sync") -> dict:
    names = [n for n, _ in model.named_parameters()]
    params = list(model.parameters())
    with torch.no_grad():
        _, ref, _, _ = free_phase(model, x, T1 - T2, init_generator(), order=order)
    partial, neurons = [], []
    for K in range(T2 + 1):
        with torch.no_grad():
            drive0 = model.input_drive(x)
            state, _ = relax(model, drive0, ref, K, order=order)
        leaves = [s.detach().requires_grad_(True) for s in state]
        drive = model.input_drive(x)
        end, _ = relax(model, drive, leaves, T2 - K, order=order)
        loss = loss_per_sample(model.loss, model.logits(end), y).mean()
        grads = torch.autograd.grad(loss, params + leaves, allow_unused=True)
        partial.append([torch.zeros_like(p) if g is None else g for p, g in zip(params, grads[:len(params)])])
        neurons.append([-x.shape[0] * (torch.zeros_like(l) if g is None else g)
                        for l, g in zip(leaves, grads[len(params):])])
    out = {}
    for j, name in enumerate(names):
        # contribution of the (t+1)-th last step = S_{t+1} - S_t with S_k the sum over the last k
        # steps; the loss's direct dependence on θ (S_0: a read-out) joins the last step's, so the
        # series sums to the truncated-BPTT gradient S_{T2}
        steps = [partial[T2 - t - 1][j] - partial[T2 - t][j] for t in range(T2)]
        steps[0] = steps[0] + partial[T2][j]
        out[name] = torch.stack(steps)
    for l in range(len(ref)):
        out[f"s{l + 1}"] = torch.stack([neurons[T2 - t][l] for t in range(T2)])
    return out


@torch.no_grad()
def ep_series(model: EnergyModel, x: torch.Tensor, y: torch.Tensor, T1: int, T2: int, beta: float,
              continual_lrs: dict[str, float] | None = None, order: str = "sync") -> dict:
    """The EP side (module docstring); ``continual_lrs`` (parameter name -> SGD learning rate):
    continual EP on a copy of the model. ``order``: ``rule.order`` of both sides (the GDU
    property is that of the synchronous dynamics; with async the check measures the departure)."""
    if continual_lrs is not None:
        model = copy.deepcopy(model)
    drive, state, _, _ = free_phase(model, x, T1, init_generator(), order=order)
    free = state
    y = as_target(y, model.logits(free).shape[1], free[0].dtype)
    rate = beta * getattr(model.dynamics, "dt", 1.0)
    pre = free if model.vector_field else None
    # the loss's direct dependence on θ at s* (a read-out): −[G(s*, β) − G(s*, 0)] / β, with step 0
    direct = model.contrast(x, y, free, 0.0, free, beta, -1.0 / beta, pre=pre, drive=drive)
    params = dict(model.named_parameters())
    th, ne = [], []
    for _ in range(T2):
        new = model.stepper(drive, beta, y, order, frozen=False)(state)
        if continual_lrs is None:
            th.append(model.contrast(x, y, state, beta, new, beta, -1.0 / beta, pre=pre, drive=drive))
        else:
            th.append(model.step_update(x, state, new, beta, y, drive))
            for name, g in th[-1].items():
                params[name].sub_(g, alpha=continual_lrs[name])
            drive = model.input_drive(x, init_generator())
        ne.append([(n - s) / rate for s, n in zip(state, new)])
        state = new
    th[0] = {name: g + direct[name] for name, g in th[0].items()}
    out = {name: torch.stack([step[name] for step in th]) for name in th[0]}
    for l in range(len(free)):
        out[f"s{l + 1}"] = torch.stack([step[l] for step in ne])
    return out


ROUNDING_ZERO = 64  # an entry within this many machine epsilons of its series' largest is zero


def series_metrics(ep: torch.Tensor, bptt: torch.Tensor) -> dict[str, float]:
    """Relative error, sign error and angle (degrees) of two (T, *shape) series.

    Sign error: the fraction of (t, element) entries where EP and BPTT have opposite signs,
    counting only entries that both series hold above rounding (|v| > :data:`ROUNDING_ZERO` ·
    eps · max |series|): an entry the nudge has not reached yet is zero up to rounding on both
    sides, and its sign is the machine's, not the estimator's."""
    rms = lambda t: t.pow(2).mean(0).sqrt()  # noqa: E731
    rel = (rms(ep - bptt) / (1e-10 + torch.maximum(rms(ep), rms(bptt)))).mean()
    above = lambda t: t.abs() > ROUNDING_ZERO * torch.finfo(t.dtype).eps * t.abs().max()  # noqa: E731
    sign = ((ep * bptt < 0) & above(ep) & above(bptt)).double().mean()
    a, b = ep.sum(0).flatten(), bptt.sum(0).flatten()
    cos = (a @ b) / (a.norm() * b.norm()).clamp_min(1e-30)
    return {"rel_error": float(rel), "sign_error": float(sign),
            "angle": float(torch.rad2deg(torch.arccos(cos.clamp(-1, 1))))}


def gdu_check(model: EnergyModel, x: torch.Tensor, y: torch.Tensor, T1: int, T2: int, beta: float,
              symmetric: bool = False, continual_lrs: dict[str, float] | None = None, order: str = "sync"
              ) -> tuple[list[dict], dict[str, dict]]:
    """Rows ``{estimator, key, kind, rel_error, sign_error, angle}`` and the raw series.

    With ``symmetric``, EP runs with +β and −β; rows are given for both one-sided updates and
    for their average (the symmetric estimator). ``continual_lrs``: the EP side is continual EP
    (:func:`ep_series`), estimator ``continual``.
    """
    bptt = bptt_series(model, x, y, T1, T2, order)
    plus = "one_sided" if continual_lrs is None else "continual"
    series = {plus: ep_series(model, x, y, T1, T2, beta, continual_lrs, order)}
    if symmetric:
        minus = ep_series(model, x, y, T1, T2, -beta, continual_lrs, order)
        series[f"{plus}_minus"] = minus
        series["symmetric"] = {k: 0.5 * (series[plus][k] + minus[k]) for k in minus}
    rows = []
    for est, ep in series.items():
        for key in bptt:
            rows.append({"estimator": est, "key": key, "kind": kind_of(key), **series_metrics(ep[key], bptt[key])})
    return rows, {"bptt": bptt, **series}


def kind_of(key: str) -> str:
    """``neurons`` for a state layer key (``s1``, ``s2``, ...), else ``synapses``."""
    return "neurons" if key.startswith("s") and key[1:].isdigit() else "synapses"


def sample_elements(series: dict[str, dict], elements: int = 5) -> dict[str, list[int]]:
    """Per key, ``elements`` flat indices drawn with a fixed seed (the same for every estimator),
    among the elements BPTT moves at some step where there are enough of them (an MNIST
    border pixel's weights never move)."""
    gen = torch.Generator().manual_seed(0)
    out = {}
    for key, value in series["bptt"].items():
        moving = value.flatten(1).abs().sum(0).nonzero().flatten()
        pool = moving if len(moving) >= elements else torch.arange(value[0].numel())
        out[key] = pool[torch.randperm(len(pool), generator=gen)[:elements]].tolist()
    return out


def curve_rows(series: dict[str, dict], elements: int = 5) -> list[dict]:
    """Long-format GDU curves (code base B's ``plotcurves`` data): for a few elements of every
    neuron layer and parameter, ``{estimator, key, kind, element, t, ep, bptt}`` per nudged step
    t (flat element index; BPTT at t steps before the end, the EP step t -> t+1)."""
    picked = sample_elements(series, elements)
    rows = []
    for est, ep in series.items():
        if est == "bptt":
            continue
        for key, idx in picked.items():
            b, e = series["bptt"][key].flatten(1), ep[key].flatten(1)
            for i in idx:
                for t in range(b.shape[0]):
                    rows.append({"estimator": est, "key": key, "kind": kind_of(key), "element": i, "t": t,
                                 "ep": float(e[t, i]), "bptt": float(b[t, i])})
    return rows


def summarize(rows: list[dict], estimator: str = "one_sided") -> dict[str, float]:
    """Per-epoch metric values: mean relative / sign error and mean angle over weight tensors."""
    syn = [r for r in rows if r["estimator"] == estimator and r["kind"] == "synapses"]
    return {"gdu_rel_error": sum(r["rel_error"] for r in syn) / len(syn),
            "gdu_sign_error": sum(r["sign_error"] for r in syn) / len(syn),
            "gdu_angle": sum(r["angle"] for r in syn) / len(syn)}


def plot_gdu(series: dict[str, dict], rows: list[dict], path: str | Path, max_keys: int = 5,
             elements: int = 5) -> Path:
    """Code base B's ``plotcurves`` figure: per nudged step t, a few elements of each neuron layer
    (top row) and weight (bottom row), BPTT thick and solid, EP dashed (the symmetric estimator
    dotted where present); each panel titled with its relative error (RMSE ratio of ``rows``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bptt = series["bptt"]
    picked = sample_elements(series, elements)
    panels = [[k for k in bptt if kind_of(k) == "neurons"][:max_keys],
              [k for k in bptt if k.endswith("weight")][:max_keys]]
    ests = [e for e in series if e != "bptt" and not e.endswith("_minus")]
    rel = {(r["estimator"], r["key"]): r["rel_error"] for r in rows}
    cols = max(len(p) for p in panels)
    fig, axes = plt.subplots(2, cols, figsize=(3.6 * cols, 6.2), squeeze=False)
    styles = {0: "--", 1: ":"}
    for r, (keys, what) in enumerate(zip(panels, ("neurons: dS vs -dL/ds", "synapses: dW vs -dL/dW"))):
        for c in range(cols):
            ax = axes[r][c]
            if c >= len(keys):
                ax.axis("off")
                continue
            key = keys[c]
            b = bptt[key].flatten(1).cpu()
            for j, i in enumerate(picked[key]):
                color = f"C{j}"
                ax.plot(b[:, i], color=color, lw=2.5, alpha=0.6, label="BPTT" if j == 0 else None)
                for k, est in enumerate(ests):
                    ax.plot(series[est][key].flatten(1)[:, i].cpu(), styles.get(k, "-."), color=color,
                            label=f"EP {est}" if j == 0 else None)
            errs = ", ".join(f"{est} {rel[(est, key)]:.2g}" for est in ests)
            ax.set_title(f"{key} (rel. error {errs})", fontsize=8)
            ax.set_xlabel("nudged step t")
            ax.tick_params(labelsize=7)
        axes[r][0].set_ylabel(what, fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def update_angle(model: EnergyModel, x: torch.Tensor, y: torch.Tensor, T1: int, T2: int, beta: float,
                 order: str = "sync") -> float:
    """Ψ (degrees, code base B's ``--angle-grad``): the angle between the total continual update
    of the batch at a vanishing step — Σ_t of :meth:`EnergyModel.step_update` over T2 nudged steps
    from the free state, weights fixed (C-VF: sending neuron at step t) — and the gradient of the
    loss after T1 free steps back-propagated through the last min(T2, T1) of them, over all
    parameters as one vector. The model is left unchanged (``p.grad`` too)."""
    from eqsearch.config import RuleConfig
    from eqsearch.rules import BPTTRule

    saved = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        drive, state, _, _ = free_phase(model, x, T1, init_generator(), order=order)
        target = as_target(y, model.logits(state).shape[1], state[0].dtype)
        total: dict[str, torch.Tensor] = {}
        for _ in range(T2):
            new = model.stepper(drive, beta, target, order, frozen=False)(state)
            for name, g in model.step_update(x, state, new, beta, target, drive).items():
                total[name] = total[name] + g if name in total else g
            state = new
    BPTTRule(RuleConfig(alg="bptt", T1=T1, T2=min(T2, T1), order=order)).estimate(model, x, y, init_generator())
    names = [n for n, _ in model.named_parameters()]
    bptt = torch.cat([dict(model.named_parameters())[n].grad.flatten() for n in names])
    ep = torch.cat([total[n].flatten() for n in names])
    for name, p in model.named_parameters():
        p.grad = saved[name]
    cos = (ep @ bptt) / (ep.norm() * bptt.norm()).clamp_min(1e-30)
    return float(torch.rad2deg(torch.arccos(cos.clamp(-1, 1))))
