"""Equilibrium propagation with the one-sided, random-sign or symmetric estimator (reference §1.3).

With G(s, β) = batch-mean ∂Φ_β/∂θ at state s:

- one-sided:    ĝ = −[G(s^β, β) − G(s*, 0)] / β
- random-sign:  the same with β → ±β, the sign drawn once per minibatch from the run's
                generator (first-order bias cancels on average)
- symmetric:    ĝ = −[G(s^{−β}, −β) − G(s^β, β)] / (−2β); the ±β phases run as one batch
                of 2B with a per-sample β

Vector-field models take the presynaptic factor from the free state s* (reference §2.5).
"""

from __future__ import annotations

import torch

from eqsearch.config import RuleConfig
from eqsearch.losses import as_target
from eqsearch.models.base import EnergyModel, State, tile_batch
from eqsearch.rules.base import (BatchResult, LearningRule, check_grad_names, contrast, contrast_factors,
                                 plain_sgd_lrs, sgd_update, write_grads)
from eqsearch.rules.relax import free_phase, relax_to_tol


def draw_sign(cfg: RuleConfig, generator: torch.Generator) -> float:
    """+1 or −1: the sign of β for this minibatch. One-sided: +1; random-sign: +1 with
    probability ``rule.randbeta`` (one draw from the run's generator)."""
    if cfg.estimator != "random_sign":
        return 1.0
    if cfg.randbeta == 0.5:
        return 1.0 if torch.randint(0, 2, (), generator=generator) else -1.0
    return 1.0 if torch.rand((), generator=generator) < cfg.randbeta else -1.0


class EPRule(LearningRule):
    """Two (or three) phases, one contrast, one optimizer step per batch."""

    def nudged_states(self, model: EnergyModel, drive: State, free: State, y: torch.Tensor,
                      generator: torch.Generator) -> tuple[list[tuple[State, float]], torch.Tensor, int]:
        """The (state, β) pairs to contrast, the nudged-phase residual and its steps run (both
        phases of the symmetric estimator count)."""
        cfg = self.cfg
        beta, T2 = cfg.beta, cfg.T2
        if cfg.estimator == "symmetric":
            n = y.shape[0]
            signs = torch.ones(2 * n, 1, dtype=free[0].dtype, device=free[0].device)
            signs[n:] = -1.0
            both, res, done = relax_to_tol(model, tile_batch(drive, 2), tile_batch(free, 2), T2, cfg.tol,
                                           cfg.tol_every, beta * signs, tile_batch([y], 2)[0], cfg.order)
            plus = [t[:n] for t in both]
            minus = [t[n:] for t in both]
            return [(plus, beta), (minus, -beta)], res, 2 * done
        beta = beta * draw_sign(cfg, generator)
        nudged, res, done = relax_to_tol(model, drive, free, T2, cfg.tol, cfg.tol_every, beta, y, cfg.order)
        return [(free, 0.0), (nudged, beta)], res, done

    def phases(self, model: EnergyModel, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator):
        """Free and nudged phases of the batch: (contrast arguments: x, target, a, β_a, b, β_b,
        pre, drive; the batch result). Call without graph."""
        cfg = self.cfg
        drive, free, res_free, free_steps = free_phase(model, x, cfg.T1, generator, cfg.tol, cfg.tol_every,
                                                       cfg.order)
        logits = model.logits(free)
        y = as_target(y, logits.shape[1], logits.dtype)  # built once, not at every nudged step
        pairs, res_nudged, nudged_steps = self.nudged_states(model, drive, free, y, generator)
        (a, beta_a), (b, beta_b) = pairs
        pre = free if model.vector_field else None
        return (x, y, a, beta_a, b, beta_b, pre, drive), BatchResult(logits, res_free, res_nudged,
                                                                    free_steps + nudged_steps)

    @torch.no_grad()
    def estimate(self, model: EnergyModel, x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator) -> BatchResult:
        """Write the EP estimate of +∂L/∂θ into ``p.grad`` (no parameter change)."""
        (x, y, a, beta_a, b, beta_b, pre, drive), result = self.phases(model, x, y, generator)
        write_grads(model, contrast(model, x, y, a, beta_a, b, beta_b, pre=pre, drive=drive))
        return result

    @torch.no_grad()
    def train_batch(self, model: EnergyModel, x: torch.Tensor, y: torch.Tensor,
                    optimizer: torch.optim.Optimizer, generator: torch.Generator) -> BatchResult:
        """:meth:`estimate` then one optimizer step; with plain SGD and a family that has the
        update's rank-B factors (:meth:`~eqsearch.models.base.EnergyModel.contrast_factors`), the
        same step θ ← θ − lr·ĝ is applied from the factors, one ``addmm_`` per weight, without
        forming ĝ (``p.grad`` is then left as it was)."""
        lrs = plain_sgd_lrs(optimizer, model)
        if lrs is None or type(model).contrast_factors is EnergyModel.contrast_factors:
            return super().train_batch(model, x, y, optimizer, generator)
        args, result = self.phases(model, x, y, generator)
        x, y, a, beta_a, b, beta_b, pre, drive = args
        factors = contrast_factors(model, x, y, a, beta_a, b, beta_b, pre=pre, drive=drive)
        check_grad_names(model, factors.keys())
        params = dict(model.named_parameters())
        for name, (p_fac, s_fac) in factors.items():
            sgd_update(params[name], p_fac, s_fac, lrs[name])
        return result
