"""The four networks of code base B (Ernoult et al., continual EP; reference §3.4-§3.6).

Sizes ``sizes = [n_0, n_1, ..., n_N]`` in the engine's order, input -> output (B's ``--size_tab``
lists them output -> input; the CLI reverses it). N ≥ 2: at least one hidden layer, as in B.
Layer l (1-based) has state s_l ∈ R^{n_l}, s_N is the output; the input x is clamped.

Parameters (names as in ``named_parameters()``):

- ``W.{l-1}`` = W_l, b_l: ``nn.Linear(n_{l-1}, n_l)`` with bias, feeding layer l−1 into layer l
  (``W.0`` is B's W_in, ``W.{N-1}`` B's output weights W_0).
- vector-field models only, ``B.{l-1}`` = B_l: ``nn.Linear(n_{l+1}, n_l, bias=False)``, feeding
  s_{l+1} into s_l (l = 1..N−1) in place of W_{l+1}ᵀ; it mirrors W_{l+1} and is initialised to
  W_{l+1}ᵀ, optionally rotated by ``angle`` (§3.6).

ŷ the (B, C) one-hot target, L = ½‖s_N − ŷ‖² (mse), ρ the activation of §3.2 and ρ' its
derivative, β signed (a float or a (B, 1) tensor). In every formula s_0 stands for x in the
discrete-time models and ρ(s_0) for ρ(x) in the continuous-time ones. "Feedback" F_l is
W_{l+1}ᵀ u_{l+1} (tied) or B_l u_{l+1} (untied), with u = s (discrete) or ρ(s) (continuous);
F_N = 0.

Discrete time ("prototypical", EPdisc / VFdisc, dt = 1, no clamp)::

    s_l ← ρ(W_l s_{l-1} + b_l + F_l)                 l < N
    s_N ← ρ(W_N s_{N-1} + b_N) + β(ŷ − s_N)          (the nudge sits OUTSIDE ρ)

  Primitive (tied): Φ = Σ_l ⟨s_l, W_l s_{l-1} + b_l⟩, Φ_β = Φ − β·L, so the update is
  s ← ρ(∂Φ/∂s) − β·∂L/∂s: not of the form σ(∂Φ_β/∂s), hence the dynamics
  :class:`OutsideNudge` (a :class:`~eqsearch.dynamics.FixedPoint` whose nudge bypasses σ).
  Untied: per layer φ_l = ⟨s_l, W_l p_{l-1} + b_l + B_l p_{l+1}⟩ (φ_N − β·L), p = ``pre``.

Continuous time ("energy-based", EPcont / VFcont), velocity g and Euler step
s ← clamp(s + dt·g) to [0, 1] when ``clamp``::

    tied     g_l = −s_l + ρ'(s_l) ⊙ [W_l ρ(s_{l-1}) + b_l + W_{l+1}ᵀ ρ(s_{l+1})]     l < N
    untied   g_l = −s_l +            W_l ρ(s_{l-1}) + b_l + B_l ρ(s_{l+1})           l < N
    both     g_N = −s_N + W_N ρ(s_{N-1}) + b_N + β(ŷ − s_N)

  Tied energy E = Σ_l [½‖s_l‖² − ⟨ρ(s_l), W_l ρ(s_{l-1}) + b_l⟩], Φ_β = −(E + β·L): g_l is
  −∂(E + β·L)/∂s_l for the hidden layers, but B's output layer drops the factor ρ'(s_N) (it
  couples s_N linearly while s_{N−1} sees ρ(s_N)), so the tied flow is an exact gradient flow
  only where ρ is the identity (hardsigm on the interior of [0, 1]).
  Untied: φ_l = −½‖s_l‖² + ⟨s_l, W_l ρ(p_{l-1}) + b_l + B_l ρ(p_{l+1})⟩ (φ_N − β·L), exactly
  g_l = ∂φ_l/∂s_l at p = s.

∂Φ/∂θ (batch mean; B's Hebbian increments are differences of these, divided by β):

- tied: ∂Φ/∂W_l = a_l a_{l-1}ᵀ, ∂Φ/∂b_l = a_l, with a = s (discrete) or ρ(s) (continuous),
  a_0 = x or ρ(x).
- untied (receiving neuron × sending neuron, §1.5): ∂φ_l/∂W_l = s_l u_{l-1}ᵀ,
  ∂φ_l/∂B_l = s_l u_{l+1}ᵀ, ∂φ_l/∂b_l = s_l, with the presynaptic u = p (discrete) or ρ(p)
  (continuous) taken from ``pre``, u_0 = x or ρ(x).

Learning rules. B adds η·Δ; eqsearch stores +∂L/∂θ ≈ −Δ:

- EP:  −(1/β)[∂Φ̄/∂θ(s^β) − ∂Φ̄/∂θ(s*)]   (``contrast``; VF with ``pre`` = s*).
- continual, per nudged step t → t+1 (:meth:`ContinualMLP.step_update`):
  tied −(1/β)[∂Φ̄/∂θ(s_{t+1}) − ∂Φ̄/∂θ(s_t)] (telescopes exactly to the EP update);
  untied −(1/β)[∂φ̄/∂θ(s_{t+1}; pre = s_t) − ∂φ̄/∂θ(s_t; pre = s_t)], i.e. (change of the
  receiving neuron) × (sending neuron at step t), as B; it telescopes exactly for the biases
  and W_1 (presynaptic x) and up to O(β) relative error for the other weights.

All four settings update every parameter (B's VFdisc never updates b_in: not reproduced), use
the signed β in both the nudge and the 1/β (B's continuous models use |β| and nudge only for
β > 0: not reproduced).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from eqsearch.activations import ACTIVATIONS, Activation
from eqsearch.dynamics import Euler, FixedPoint
from eqsearch.errors import ConfigError
from eqsearch.losses import loss_grad, loss_per_sample
from eqsearch.models.base import (check_layer_sizes, Beta, EnergyModel, Factors, Grads, State, is_zero, materialize,
                                  weight_angle)


@dataclass(frozen=True)
class OutsideNudge(FixedPoint):
    """s_l ← σ_l(∂Φ/∂s_l) + (∂Φ_β/∂s_l − ∂Φ/∂s_l) = σ_l(∂Φ/∂s_l) − β·∂L/∂s_l.

    Code base B's discrete-time update: the free part goes through σ, the nudge is added
    outside it. Generic (two ``state_grad`` calls); models override ``step`` with a fused form."""

    def step(self, model, state, drive, beta=0.0, y=None):
        free = model.state_grad(state, drive, 0.0, y)
        new = [model.activation(i)(g) for i, g in enumerate(free)]
        if is_zero(beta):
            return new
        nudged = model.state_grad(state, drive, beta, y)
        return [n + (gb - gf) for n, gb, gf in zip(new, nudged, free)]


@dataclass(frozen=True)
class _Rho:
    """ρ (as an eqsearch Activation) and ρ'(s) computed from (s, ρ(s))."""

    act: Activation
    deriv: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _hardsigm_deriv(s: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return ((s >= 0) & (s <= 1)).to(s.dtype)


RHO: dict[str, _Rho] = {
    # 1 / (1 + exp(−4(x − 0.5))) = A's "mysig"; ρ' = 4ρ(1 − ρ)
    "sigm": _Rho(ACTIVATIONS["mysig"], lambda s, r: 4.0 * r * (1.0 - r)),
    # clamp(x, 0, 1); ρ' = 1 on [0, 1] (both ends included, as B), else 0
    "hardsigm": _Rho(ACTIVATIONS["hard_sigmoid"], _hardsigm_deriv),
    # tanh; ρ' = 1 − tanh²
    "tanh": _Rho(ACTIVATIONS["tanh"], lambda s, r: 1.0 - r * r),
}


class ContinualMLP(EnergyModel):
    """EPdisc / EPcont / VFdisc / VFcont of code base B (module docstring for the formulas).

    ``sizes``: input -> output, at least one hidden layer. ``activation``: "sigm", "hardsigm"
    or "tanh". ``discrete``: prototypical fixed-point dynamics (dt must be 1, no clamp) instead
    of Euler steps of size ``dt`` (default 0.2) with ``clamp`` to [0, 1] (default on).
    ``vector_field``: untied backward weights B. ``angle`` (degrees in [0, 180], untied only):
    initial angle of each B_l to W_{l+1}ᵀ (None = 0, exact copy). ``generator``: source of the
    initial weights (U(±1/√fan_in), PyTorch's Linear init; the global RNG when None) and of
    the angle's sign flips.
    """

    loss = "mse"
    affine_drive = ("W.0.weight", "W.0.bias")

    def __init__(self, sizes: list[int], activation: str = "sigm", discrete: bool = True,
                 dt: float | None = None, clamp: bool | None = None, vector_field: bool = False,
                 angle: float | None = None, generator: torch.Generator | None = None):
        super().__init__()
        sizes = [int(n) for n in sizes]
        if len(sizes) < 3 or min(sizes) < 1:
            raise ConfigError(f"model.sizes: got {sizes}; allowed: input, at least one hidden layer, output "
                              "(3 or more positive sizes, input -> output)")
        if activation not in RHO:
            raise ConfigError(f"model.activation: got {activation!r}; allowed: {', '.join(RHO)}")
        if discrete:
            if dt is not None and float(dt) != 1.0:
                raise ConfigError(f"model.dt: got {dt} with discrete dynamics; allowed: 1 (or unset)")
            if clamp:
                raise ConfigError("model.clamp: got true with discrete dynamics; allowed: false (or unset)")
            dt, clamp = 1.0, False
        else:
            dt = 0.2 if dt is None else float(dt)
            if not dt > 0:
                raise ConfigError(f"model.dt: got {dt}; allowed: > 0")
            clamp = True if clamp is None else bool(clamp)
        if angle is not None:
            if not vector_field:
                raise ConfigError(f"model.angle: got {angle} for tied weights; allowed: only with vector_field")
            if not 0.0 <= float(angle) <= 180.0:
                raise ConfigError(f"model.angle: got {angle}; allowed: degrees in [0, 180]")
        self.sizes = sizes
        self.archi = sizes  # the name the other MLPs (and test helpers) use
        self.activation_name = activation
        self.rho = RHO[activation]
        self.discrete = bool(discrete)
        self.dt = float(dt)
        self.clamp = bool(clamp)
        self.vector_field = bool(vector_field)
        self.angle = None if angle is None else float(angle)
        self.dynamics = OutsideNudge() if self.discrete else Euler(self.dt, (0.0, 1.0) if self.clamp else None)

        self.W = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        if generator is not None:
            with torch.no_grad():
                for w in self.W:
                    bound = 1.0 / math.sqrt(w.in_features)
                    for p in (w.weight, w.bias):
                        p.copy_(torch.rand(p.shape, generator=generator, dtype=p.dtype) * (2 * bound) - bound)
        self.B = nn.ModuleList()
        if self.vector_field:
            self.B = nn.ModuleList(nn.Linear(b, a, bias=False) for a, b in zip(sizes[1:-1], sizes[2:]))
            with torch.no_grad():
                for k, b in enumerate(self.B):
                    b.weight.copy_(self.mirrored_forward(k))
                    if self.angle:
                        p_switch = 0.5 * (1.0 - math.cos(math.pi * self.angle / 180.0))
                        flip = torch.rand(b.weight.shape, generator=generator, dtype=b.weight.dtype) < p_switch
                        b.weight.mul_(1.0 - 2.0 * flip.to(b.weight.dtype))

    # ------------------------------------------------------------------ helpers
    def _input(self, x: torch.Tensor) -> torch.Tensor:
        """The presynaptic input: x (discrete) or ρ(x) (continuous), (B, n_0)."""
        x = x.flatten(1)
        return x if self.discrete else self.rho.act(x)

    def _pre_act(self, s: torch.Tensor) -> torch.Tensor:
        """What a layer sends: s (discrete) or ρ(s) (continuous)."""
        return s if self.discrete else self.rho.act(s)

    def _feedback_weight(self, i: int) -> torch.Tensor:
        """M with feedback into state i (0-based) = u_{i+1} @ M, shape (n_{i+2}, n_{i+1})."""
        return self.B[i].weight.t() if self.vector_field else self.W[i + 1].weight

    def mirrored_forward(self, k: int) -> torch.Tensor:
        """The forward weight B[k] mirrors, W[k+1]ᵀ, in B[k].weight's layout (n_{k+1}, n_{k+2})."""
        return self.W[k + 1].weight.t()

    # ------------------------------------------------------------------ dynamics
    def activation(self, i: int) -> Activation:
        """ρ, for every layer (the output included: B's discrete output is ρ(·) + nudge)."""
        return self.rho.act

    def input_drive(self, x: torch.Tensor, generator: torch.Generator | None = None) -> State:
        """[u_0, W_1 u_0 + b_1]: the presynaptic input u_0 = x or ρ(x), (B, n_0), and the constant
        part of the first layer's input, (B, n_1). It contains W_1, b_1: recompute it after every
        parameter change (continual updates)."""
        u0 = self._input(x)
        return [u0, torch.addmm(self.W[0].bias, u0, self.W[0].weight.t())]

    def init_state(self, drive: State, generator: torch.Generator | None = None) -> State:
        """Zeros (B's ``initHidden``), (B, n_l) per layer."""
        b = drive[0].shape[0]
        return [drive[0].new_zeros(b, n) for n in self.sizes[1:]]

    def state_grad(self, state: State, drive: State, beta: Beta = 0.0,
                   y: torch.Tensor | None = None) -> State:
        """Discrete: ∂Φ_β/∂s_l (the argument of ρ, plus −β(s_N − ŷ) at the output). Continuous:
        the velocity g_l of the Euler step (module docstring). (B, n_l) each."""
        last = len(state) - 1
        sent = state if self.discrete else [self.rho.act(s) for s in state]
        grads = []
        for i in range(len(state)):
            h = drive[1] if i == 0 else torch.addmm(self.W[i].bias, sent[i - 1], self.W[i].weight.t())
            if i < last:
                h = torch.addmm(h, sent[i + 1], self._feedback_weight(i))
                if not self.discrete and not self.vector_field:
                    h = self.rho.deriv(state[i], sent[i]) * h
            if not self.discrete:
                h = h - state[i]
            if i == last and not is_zero(beta):
                h = h - beta * loss_grad(self.loss, state[i], y)
            grads.append(h)
        return grads

    def step(self, state: State, drive: State, beta: Beta = 0.0,
             y: torch.Tensor | None = None) -> State:
        """Discrete: ρ(free ∂Φ/∂s) − β(s_N − ŷ) at the output (one state_grad call).
        Continuous: the Euler step of ``self.dynamics``."""
        if not self.discrete:
            return self.dynamics.step(self, state, drive, beta, y)
        new = [self.rho.act(g) for g in self.state_grad(state, drive)]
        if not is_zero(beta):
            new[-1] = new[-1] - beta * loss_grad(self.loss, state[-1], y)
        return new

    def logits(self, state: State) -> torch.Tensor:
        """s_N, (B, C)."""
        return state[-1]

    # ------------------------------------------------------------------ Φ and ∂Φ/∂θ
    def phi_layers(self, x: torch.Tensor, state: State, beta: Beta = 0.0, y: torch.Tensor | None = None,
                   pre: State | None = None) -> list[torch.Tensor]:
        """φ_l per layer, (B,) each, plain autograd ops; Φ_β = Σ_l φ_l (φ_N carries −β·L).

        Untied: each layer's own φ_l (activity from ``state``, inputs from ``pre``, default
        ``state``), ∂φ_l/∂s_l its dynamics. Tied: the terms of Φ split by the synapse below each
        layer (``pre`` is ignored: one Φ, one state)."""
        x = x.flatten(1)
        if not self.vector_field:
            pre = state
        pre = state if pre is None else pre
        u0 = x if self.discrete else self.rho.act(x)
        sent = pre if self.discrete else [self.rho.act(p) for p in pre]
        last = len(state) - 1
        out = []
        for i, s in enumerate(state):
            h = self.W[i](u0 if i == 0 else sent[i - 1])
            if self.vector_field:
                if i < last:
                    h = h + self.B[i](sent[i + 1])
                phi = (s * h).sum(1)
            elif self.discrete:
                phi = (s * h).sum(1)
            else:
                phi = (self.rho.act(s) * h).sum(1)
            if not self.discrete:
                phi = phi - 0.5 * s.pow(2).sum(1)
            if i == last and not is_zero(beta):
                b = beta.flatten() if torch.is_tensor(beta) else beta
                phi = phi - b * loss_per_sample(self.loss, self.logits(state), y)
            out.append(phi)
        return out

    def phi(self, x, state, beta=0.0, y=None, pre=None, drive=None):
        """Φ_β = Σ_l φ_l per sample, (B,) (continuous tied: −(E + β·L))."""
        return sum(self.phi_layers(x, state, beta, y, pre=pre))

    def _factors(self, x, state: State, pre: State | None, drive: State | None):
        """Per parameter name, (post, presynaptic) factors (B, n_out), (B, n_in); biases (post, None)."""
        u0 = self._input(x) if drive is None else drive[0]
        if self.vector_field:
            pre = state if pre is None else pre
            post = state
        else:
            pre = state
            post = state if self.discrete else [self.rho.act(s) for s in state]
        sent = [self._pre_act(p) for p in pre] if self.vector_field else post
        fac = {}
        for i in range(len(state)):
            fac[f"W.{i}.weight"] = (post[i], u0 if i == 0 else sent[i - 1])
            fac[f"W.{i}.bias"] = (post[i], None)
        for i in range(len(self.B)):
            fac[f"B.{i}.weight"] = (post[i], sent[i + 1])
        return fac

    def dphi_dtheta(self, x, state, beta=0.0, y=None, pre=None, drive=None) -> Grads:
        """Batch-mean ∂Φ/∂θ (∂φ_l/∂θ for untied models, presynaptic factor from ``pre``); the loss
        has no parameter, so β and y do not enter. ``drive`` (optional) supplies u_0."""
        n = state[0].shape[0]
        out = {}
        for name, (post, sent) in self._factors(x, state, pre, drive).items():
            out[name] = post.mean(0) if sent is None else post.t() @ sent / n
        return out

    def step_update(self, x: torch.Tensor, prev: State, new: State, beta: Beta,
                    y: torch.Tensor | None = None, drive: State | None = None) -> Grads:
        """The estimate of +∂L/∂θ contributed by one nudged step s_t = ``prev`` → s_{t+1} = ``new``
        (continual EP / VF, B's per-step increment with the sign flipped):

        tied    −(1/β)[∂Φ̄/∂θ(s_{t+1}) − ∂Φ̄/∂θ(s_t)]
        untied  −(1/β)[∂φ̄/∂θ(s_{t+1}; pre = s_t) − ∂φ̄/∂θ(s_t; pre = s_t)]

        β: a nonzero float or a (B, 1) tensor (each sample weighted by its own −1/β before the
        batch mean). Summed over the nudged phase (fixed weights) it is the EP update for tied
        models (exactly) and the VF update with presynaptic s* for untied ones (to O(β))."""
        return materialize(self.step_update_factors(x, prev, new, beta, y, drive))

    def step_update_factors(self, x: torch.Tensor, prev: State, new: State, beta: Beta,
                            y: torch.Tensor | None = None, drive: State | None = None) -> Factors:
        """:meth:`step_update` as (P, S) pairs: P the change of the receiving factor times −1/(βB)
        where the sending factor is the same at both steps (the first layer, and every untied
        weight), else both steps stacked, (2B, n_out) against (2B, n_in)."""
        if is_zero(beta):
            raise ValueError("step_update: beta must be nonzero (it divides the update)")
        c = -1.0 / (beta * prev[0].shape[0])
        pre = prev if self.vector_field else None
        fa = self._factors(x, prev, pre, drive)
        fb = self._factors(x, new, pre, drive)
        out = {}
        for name, (post_a, sent_a) in fa.items():
            post_b, sent_b = fb[name]
            if sent_a is None or sent_a is sent_b:
                out[name] = ((post_b - post_a) * c, sent_a)
            else:
                out[name] = (torch.cat([post_b * c, post_a * -c]), torch.cat([sent_b, sent_a]))
        return out

    # ------------------------------------------------------------------ training hooks
    def synapse_groups(self) -> list[list[nn.Parameter]]:
        """Per synapse layer input -> output: [W_l, b_l] (+ B_{l-1}, which mirrors W_l)."""
        groups = [list(w.parameters()) for w in self.W]
        for k, b in enumerate(self.B):
            groups[k + 1].append(b.weight)
        return groups

    def angles(self) -> dict[str, float]:
        """``angle_B<k>`` (k = 1..N−1): degrees between B.{k-1} and the W.{k}ᵀ it mirrors
        (empty for tied models)."""
        return {f"angle_B{k + 1}": weight_angle(b.weight, self.mirrored_forward(k)) for k, b in enumerate(self.B)}

    def metrics(self) -> dict[str, float]:
        return {**super().metrics(), **self.angles()}


def build(cfg, input_shape: tuple[int, ...], num_classes: int) -> ContinualMLP:
    """The network of an ``ep_disc`` / ``vf_disc`` / ``ep_cont`` / ``vf_cont`` model section
    (weights from the global RNG, seeded by the run; angle flips from the same seed)."""
    check_layer_sizes(cfg.archi, input_shape, num_classes)
    discrete = cfg.kind.endswith("_disc")
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ())))  # drawn from the seeded global RNG
    return ContinualMLP(cfg.archi, activation=cfg.activation, discrete=discrete,
                        dt=None if discrete else cfg.dt, clamp=None if discrete else cfg.clamp,
                        vector_field=cfg.kind.startswith("vf_"), angle=cfg.angle, generator=gen)
