"""Multilayer EP networks of code base A: the symmetric P_MLP and the vector-field VF_MLP.

Sizes ``archi = [n_0, n_1, ..., n_N]`` (input -> output). Layer l (1-based) has state
s_l ∈ R^{n_l}; synapse W_l = ``W[l-1]`` is an ``nn.Linear(n_{l-1}, n_l)`` with bias.

Symmetric (P_MLP), per sample, s_0 = x:

    Φ = Σ_l ⟨s_l, W_l s_{l-1} + b_l⟩ − β·L(s_N, y)
    ∂Φ/∂s_l = W_l s_{l-1} + b_l + W_{l+1}ᵀ s_{l+1}          (l < N)
    ∂Φ/∂s_N = W_N s_{N-1} + b_N − β·∂L/∂s_N

Vector field (VF_MLP): the feedback into s_l comes through its own weights
B_l = ``B[l-1]`` = ``nn.Linear(n_{l+1}, n_l, bias=False)`` instead of W_{l+1}ᵀ, and each layer
follows its own φ_l = ⟨s_l, W_l s_{l-1} + b_l⟩ + ⟨s_l, B_l s_{l+1}⟩ (φ_N carries −β·L).

Hidden layers apply σ; the output applies σ for mse (the nudge sits inside σ) and is linear
for cel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from eqsearch.activations import get_activation
from eqsearch.losses import loss_grad, loss_per_sample
from eqsearch.models.base import Beta, EnergyModel, State, scale_init


class MLP(EnergyModel):
    """Symmetric EP multilayer perceptron (P_MLP)."""

    def __init__(self, archi: list[int], act: str = "mysig", loss: str = "mse",
                 scale: float | None = None):
        super().__init__()
        self.archi = list(archi)
        self.act_name = act
        self.act = get_activation(act)
        self.loss = loss
        self.W = nn.ModuleList(nn.Linear(a, b) for a, b in zip(archi[:-1], archi[1:]))
        scale_init(self.W, scale)

    # ------------------------------------------------------------------ dynamics
    def input_drive(self, x: torch.Tensor, generator: torch.Generator | None = None) -> State:
        return [F.linear(x.flatten(1), self.W[0].weight, self.W[0].bias)]

    def init_state(self, drive: State) -> State:
        b = drive[0].shape[0]
        return [drive[0].new_zeros(b, n) for n in self.archi[1:]]

    def _feedback(self, i: int, upper: torch.Tensor) -> torch.Tensor:
        """Contribution of s_{i+2} (0-based state i+1) to the drive of state i."""
        return upper @ self.W[i + 1].weight

    def step(self, state: State, drive: State, beta: Beta = 0.0,
             y: torch.Tensor | None = None) -> State:
        last = len(state) - 1
        new = []
        for i in range(len(state)):
            if i == 0:
                g = drive[0]
            else:
                g = torch.addmm(self.W[i].bias, state[i - 1], self.W[i].weight.t())
            if i < last:
                g = g + self._feedback(i, state[i + 1])
                new.append(self.act(g))
                continue
            if not (isinstance(beta, float) and beta == 0.0):
                g = g - beta * loss_grad(self.loss, state[i], y)
            new.append(self.act(g) if self.loss == "mse" else g)
        return new

    # ------------------------------------------------------------------ Φ and ∂Φ/∂θ
    def phi(self, x, state, beta=0.0, y=None, pre=None):
        x = x.flatten(1)
        pre = state if pre is None else pre
        total = x.new_zeros(x.shape[0])
        for i, post in enumerate(state):
            below = x if i == 0 else pre[i - 1]
            total = total + (post * self.W[i](below)).sum(1)
            if self.vector_field and i < len(state) - 1:
                total = total + (post * F.linear(pre[i + 1], self.B[i].weight)).sum(1)
        if not (isinstance(beta, float) and beta == 0.0):
            b = beta.flatten() if torch.is_tensor(beta) else beta
            total = total - b * loss_per_sample(self.loss, self.logits(state), y)
        return total

    def dphi_dtheta(self, x, state, beta=0.0, y=None, pre=None, drive=None):
        x = x.flatten(1)
        pre = state if pre is None else pre
        n = x.shape[0]
        grads = []
        for i, post in enumerate(state):
            below = x if i == 0 else pre[i - 1]
            grads += [post.t() @ below / n, post.mean(0)]
        if self.vector_field:
            grads += [state[i].t() @ pre[i + 1] / n for i in range(len(state) - 1)]
        return grads

    def synapse_groups(self):
        return [list(w.parameters()) for w in self.W]


class VFMLP(MLP):
    """Vector-field MLP (VF_MLP): backward weights B_l untied from W_{l+1}ᵀ."""

    vector_field = True

    def __init__(self, archi: list[int], act: str = "mysig", loss: str = "mse",
                 scale: float | None = None):
        super().__init__(archi, act, loss, scale=None)
        self.B = nn.ModuleList(nn.Linear(b, a, bias=False) for a, b in zip(archi[1:-1], archi[2:]))
        scale_init(self, scale)

    def _feedback(self, i: int, upper: torch.Tensor) -> torch.Tensor:
        return F.linear(upper, self.B[i].weight)

    def synapse_groups(self):
        groups = super().synapse_groups()
        for k, b in enumerate(self.B):
            groups[k + 1].append(b.weight)
        return groups

    def angles(self) -> dict[str, float]:
        return {f"angle_B{k + 1}": weight_angle(b.weight, self.W[k + 1].weight.t())
                for k, b in enumerate(self.B)}


def weight_angle(a: torch.Tensor, b: torch.Tensor) -> float:
    """arccos(⟨a, b⟩_F / (‖a‖_F ‖b‖_F)) in degrees."""
    cos = (a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-30)
    return float(torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0))))
