"""Relaxation and learning rules: (model, batch) -> parameter gradients in ``p.grad``.

Sign convention: after :meth:`LearningRule.compute_grads`, every ``p.grad`` holds an
estimate of +∂L/∂θ (L the batch-mean loss), so a torch optimizer descends on L.

EP estimators (reference §1.3), with G(s, β) = batch-mean ∂Φ_β/∂θ at state s:

- one-sided:    ĝ = −[G(s^β, β) − G(s*, 0)] / β
- random-sign:  the same with β → ±β, the sign drawn once per minibatch from the run's
                generator (first-order bias cancels on average)
- symmetric:    ĝ = −[G(s^{−β}, −β) − G(s^β, β)] / (−2β); the ±β phases run as one batch
                of 2B with a per-sample β

Vector-field models take the presynaptic factor from the free state s* (reference §2.5).
BPTT: T1 − T2 free steps without graph, then T2 steps through the same closed-form step with
graph, loss at the final state, ``backward()`` (truncated BPTT, reference §2.6).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from eqsearch.config import RuleConfig
from eqsearch.losses import as_target, loss_per_sample
from eqsearch.models import EnergyModel, State, residual, tile_batch


def relax(model: EnergyModel, drive: State, state: State, steps: int, beta=0.0,
          y: torch.Tensor | None = None) -> tuple[State, torch.Tensor]:
    """Run ``steps`` steps of the dynamics; returns the state and ‖s_T − s_{T−1}‖ (0-dim).

    No host synchronisation happens here; the residual stays a tensor.
    """
    prev = state
    for _ in range(steps):
        prev, state = state, model.step(state, drive, beta, y)
    if steps == 0:
        return state, state[0].new_zeros(())
    return state, residual(prev, state)


def free_phase(model: EnergyModel, x: torch.Tensor, steps: int,
               generator: torch.Generator | None = None) -> tuple[State, State, torch.Tensor]:
    """Input drive, then ``steps`` free steps from zero: returns (drive, s*, residual)."""
    drive = model.input_drive(x, generator)
    state, res = relax(model, drive, model.init_state(drive), steps)
    return drive, state, res


@dataclass
class BatchResult:
    """What a rule hands back to the training loop (all tensors, no host sync)."""

    logits: torch.Tensor          # (B, C) prediction at the free state, before the update
    residual_free: torch.Tensor   # 0-dim
    residual_nudged: torch.Tensor  # 0-dim


def contrast(model: EnergyModel, x: torch.Tensor, y: torch.Tensor, a: State, beta_a: float,
             b: State, beta_b: float, pre: State | None = None,
             drive: State | None = None) -> list[torch.Tensor]:
    """EP estimate of +∂L/∂θ: −[G(b, β_b) − G(a, β_a)] / (β_b − β_a). ``drive`` (the batch's
    input drive) carries per-batch draws such as dropout masks into G."""
    return model.contrast(x, y, a, beta_a, b, beta_b, -1.0 / (beta_b - beta_a), pre=pre, drive=drive)


def write_grads(model: EnergyModel, grads: list[torch.Tensor]) -> None:
    for p, g in zip(model.parameters(), grads):
        p.grad = g.to(p.dtype)
    model.postprocess_grads()


class LearningRule:
    """Turns (model, batch) into ``p.grad``; the optimizer step is the caller's."""

    def __init__(self, cfg: RuleConfig):
        self.cfg = cfg

    def compute_grads(self, model: EnergyModel, x: torch.Tensor, y: torch.Tensor,
                      generator: torch.Generator) -> BatchResult:
        raise NotImplementedError


class EPRule(LearningRule):
    """Equilibrium propagation with the one-sided, random-sign or symmetric estimator."""

    def nudged_states(self, model: EnergyModel, drive: State, free: State, y: torch.Tensor,
                      generator: torch.Generator) -> tuple[list[tuple[State, float]], torch.Tensor]:
        """The (state, β) pairs to contrast, and the nudged-phase residual."""
        beta, T2 = self.cfg.beta, self.cfg.T2
        est = self.cfg.estimator
        if est == "symmetric":
            n = y.shape[0]
            signs = torch.ones(2 * n, 1, dtype=free[0].dtype, device=free[0].device)
            signs[n:] = -1.0
            both, res = relax(model, tile_batch(drive, 2), tile_batch(free, 2), T2,
                              beta * signs, tile_batch([y], 2)[0])
            plus = [t[:n] for t in both]
            minus = [t[n:] for t in both]
            return [(plus, beta), (minus, -beta)], res
        if est == "random_sign":
            beta = beta if torch.randint(0, 2, (), generator=generator) else -beta
        nudged, res = relax(model, drive, free, T2, beta, y)
        return [(free, 0.0), (nudged, beta)], res

    @torch.no_grad()
    def compute_grads(self, model, x, y, generator):
        drive, free, res_free = free_phase(model, x, self.cfg.T1, generator)
        logits = model.logits(free)
        y = as_target(y, logits.shape[1], logits.dtype)  # built once, not at every nudged step
        pairs, res_nudged = self.nudged_states(model, drive, free, y, generator)
        (a, beta_a), (b, beta_b) = pairs
        pre = free if model.vector_field else None
        write_grads(model, contrast(model, x, y, a, beta_a, b, beta_b, pre=pre, drive=drive))
        return BatchResult(logits, res_free, res_nudged)


class BPTTRule(LearningRule):
    """Truncated BPTT through the last T2 of the T1 free steps."""

    def compute_grads(self, model, x, y, generator):
        T1, T2 = self.cfg.T1, self.cfg.T2
        drive = model.input_drive(x, generator)  # with graph; reused by the no-graph steps
        with torch.no_grad():
            state, _ = relax(model, drive, model.init_state(drive), T1 - T2)
        state, res_last = relax(model, drive, [s.detach() for s in state], T2)
        logits = model.logits(state)
        model.zero_grad(set_to_none=True)
        loss_per_sample(model.loss, logits, y).mean().backward()  # true gradients: no EP post-processing
        return BatchResult(logits.detach(), res_last.detach(), res_last.detach())


def build_rule(cfg: RuleConfig) -> LearningRule:
    return {"ep": EPRule, "bptt": BPTTRule}[cfg.alg](cfg)
