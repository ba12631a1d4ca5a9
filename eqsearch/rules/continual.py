"""Continual EP (C-EP, and C-VF on vector-field models; reference §1.6, §2.8, §3.5).

The free phase is EP's (T1 steps). In the nudged phase the parameters change at every step:
after the step s_t → s_{t+1} the rule writes the step's estimate of +∂L/∂θ,
−(1/β)[∂Φ̄/∂θ(s_{t+1}) − ∂Φ̄/∂θ(s_t)] (:meth:`EnergyModel.step_update`; C-VF: receiving
neuron's change × sending neuron's activity at step t), and takes one optimizer step; the next
step runs with the new parameters (the input drive is recomputed, with the batch's same random
draws). With a vanishing learning rate the summed updates telescope to the one-sided EP update.

Estimators: ``one_sided`` (+β); ``random_sign`` (+β with probability ``rule.randbeta``, else −β,
drawn once per minibatch: code base B's ``--randbeta``); ``symmetric`` (code base A's
``--alg CEP --thirdphase``): a continual +β phase, T2 free steps back towards s* without updates,
then a continual −β phase, every step's update halved, so that the sum telescopes to the
symmetric estimator −[G(s^β) − G(s^{−β})]/(2β) (code base A's experimental code weighted the
+β phase by 1/β).

``rule.cep_debug`` (code base B's ``--debug-cep``, A's ``--cep-debug``): the continual phase
moves the parameters by plain steps of ``DEBUG_STEP`` × each step's update, then the total move
becomes one gradient, the parameters are restored and the optimizer takes one ordinary step: with
η → 0 this is the standard EP update (the check that C-EP telescopes, Appendix F.2 of B).

Weight decay (code base A, §2.8): the update of step k (0-based) is divided by
(1 − lr·wd)^(T2 − 1 − k) per parameter group, compensating the decay the later steps apply.
"""

from __future__ import annotations

from typing import Callable

import torch

from eqsearch.losses import as_target
from eqsearch.models.base import EnergyModel, State
from eqsearch.rules.base import BatchResult, LearningRule, check_grad_names, plain_sgd_lrs, sgd_update, write_grads
from eqsearch.rules.ep import draw_sign
from eqsearch.rules.relax import free_phase, relax


DEBUG_STEP = 6e-5  # code base A's lr factor of --cep-debug


class ContinualRule(LearningRule):
    """One optimizer step per nudged step."""

    def estimate(self, model, x, y, generator):
        raise TypeError("continual EP updates the parameters during the relaxation: use train_batch")

    @torch.no_grad()
    def train_batch(self, model: EnergyModel, x: torch.Tensor, y: torch.Tensor,
                    optimizer: torch.optim.Optimizer, generator: torch.Generator) -> BatchResult:
        cfg = self.cfg
        draws = generator.get_state()  # the drive's random draws, replayed when it is recomputed
        drive, free, res_free, free_steps = free_phase(model, x, cfg.T1, generator, cfg.tol, cfg.tol_every, cfg.order)
        logits = model.logits(free)
        target = as_target(y, logits.shape[1], logits.dtype)
        step = self._debug_step(model) if cfg.cep_debug else self._optimizer_step(optimizer)
        if cfg.estimator == "symmetric":
            self._continual_phase(model, x, target, drive, free, cfg.beta, 0.5, optimizer, step, draws)
            back, _ = relax(model, drive, free, cfg.T2, order=cfg.order)  # β = 0: towards s* again (A's "third phase")
            _, res = self._continual_phase(model, x, target, drive, back, -cfg.beta, 0.5, optimizer, step, draws)
        else:
            beta = cfg.beta * draw_sign(cfg, generator)
            _, res = self._continual_phase(model, x, target, drive, free, beta, 1.0, optimizer, step, draws)
        if cfg.cep_debug:
            self._debug_finish(model, optimizer)
        nudged = cfg.T2 * (3 if cfg.estimator == "symmetric" else 1)  # every nudged step updates: no early exit
        return BatchResult(logits, res_free, res, free_steps + nudged)

    @staticmethod
    def _optimizer_step(optimizer):
        return optimizer.step

    def _debug_step(self, model: EnergyModel):
        """The debug procedure (code base B's ``--debug-cep``, A's ``--cep-debug``): the continual
        phase moves the parameters by plain steps of size ``DEBUG_STEP`` along each step's update;
        :meth:`_debug_finish` turns the total move into one gradient, restores the parameters and
        takes one ordinary optimizer step: standard EP with a negligible drift of the weights."""
        self._stored = {n: p.detach().clone() for n, p in model.named_parameters()}

        def step() -> None:
            for p in model.parameters():
                if p.grad is not None:
                    p.sub_(p.grad, alpha=DEBUG_STEP)
        return step

    def _debug_finish(self, model: EnergyModel, optimizer: torch.optim.Optimizer) -> None:
        grads = {n: (self._stored[n] - p.detach()) / DEBUG_STEP for n, p in model.named_parameters()}
        for n, p in model.named_parameters():
            p.copy_(self._stored[n])
        write_grads(model, grads)
        optimizer.step()

    def _continual_phase(self, model: EnergyModel, x: torch.Tensor, y: torch.Tensor, drive: State, start: State,
                         beta: float, weight: float, optimizer: torch.optim.Optimizer, apply: Callable[[], None],
                         draws: torch.Tensor) -> tuple[State, torch.Tensor]:
        """T2 nudged steps from ``start``, each followed by an update (scaled by ``weight``) that
        ``apply`` makes (the optimizer's step; the debug procedure's plain small step)."""
        lrs = None if self.cfg.cep_debug else plain_sgd_lrs(optimizer, model)
        if lrs is not None and type(model).step_update_factors is not EnergyModel.step_update_factors:
            return self._plain_sgd_phase(model, x, y, drive, start, beta, weight, lrs)
        T2 = self.cfg.T2
        debug = self.cfg.cep_debug  # no optimizer steps in the phase: no decay to compensate
        decay = [1.0 if debug else (1.0 - g["lr"] * g.get("weight_decay", 0.0)) for g in optimizer.param_groups]
        group_of = {id(p): i for i, g in enumerate(optimizer.param_groups) for p in g["params"]}
        decay_of = {n: decay[group_of[id(p)]] for n, p in model.named_parameters()}
        rescale = weight != 1.0 or any(d != 1.0 for d in decay)
        replay = torch.Generator()
        k = 0

        def update(prev: State, new: State) -> None:
            nonlocal k
            grads = model.step_update(x, prev, new, beta, y, drive)
            if rescale:
                remaining = T2 - 1 - k
                grads = {n: g * (weight / decay_of[n] ** remaining) for n, g in grads.items()}
            write_grads(model, grads)
            apply()
            replay.set_state(draws)
            drive[:] = model.input_drive(x, replay)  # the drive holds first-layer weights
            k += 1

        return relax(model, drive, start, T2, beta, y, on_step=update, order=self.cfg.order)

    def _plain_sgd_phase(self, model: EnergyModel, x: torch.Tensor, y: torch.Tensor, drive: State, start: State,
                         beta: float, weight: float, lrs: dict[str, float]) -> tuple[State, torch.Tensor]:
        """The same phase for plain SGD (θ ← θ − lr·g, nothing else): each step's rank-B factors
        (:meth:`EnergyModel.step_update_factors`) go straight into the weights (one ``addmm_``
        each). A first layer that enters the dynamics only through drive[1] = u_0 Wᵀ + b
        (``model.affine_drive``) is not touched during the phase: with K = u_0 u_0ᵀ (B, B),
        drive[1] moves by −lr·(K P + 1 Σ_b P) per step, O(B²·n_1) instead of recomputing
        u_0 Wᵀ, and W, b take the summed move once at the end. Equal to the generic path up
        to rounding."""
        params = dict(model.named_parameters())
        w_name, b_name = model.affine_drive or (None, None)
        u0 = drive[0].flatten(1)
        gram = u0 @ u0.t() if w_name else None
        pending: dict[str, torch.Tensor] = {}
        checked = False

        def update(prev: State, new: State) -> None:
            nonlocal checked
            factors = model.step_update_factors(x, prev, new, beta, y, drive)
            if not checked:
                check_grad_names(model, factors.keys())
                if w_name and factors[w_name][1] is not drive[0]:
                    raise TypeError(f"{type(model).__name__}.affine_drive: the factors of {w_name} must send drive[0]")
                checked = True
            for name, (p_fac, s_fac) in factors.items():
                rate = lrs[name] * weight
                if name == w_name:
                    drive[1].addmm_(gram, p_fac, alpha=-rate)
                elif name == b_name:
                    drive[1].sub_(p_fac.sum(0), alpha=rate)
                else:
                    sgd_update(params[name], p_fac, s_fac, rate)
                    continue
                pending[name] = pending[name] + p_fac if name in pending else p_fac

        new, res = relax(model, drive, start, self.cfg.T2, beta, y, on_step=update, order=self.cfg.order)
        for name, p_fac in pending.items():
            sgd_update(params[name], p_fac, None if name == b_name else u0, lrs[name] * weight)
        return new, res

