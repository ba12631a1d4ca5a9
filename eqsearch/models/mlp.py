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

from eqsearch.activations import IDENTITY, Activation, get_activation
from eqsearch.losses import loss_grad, loss_per_sample
from eqsearch.models.base import check_layer_sizes, Beta, EnergyModel, State, VectorField, is_zero, scale_init


class MLP(EnergyModel):
    """Symmetric EP multilayer perceptron (P_MLP)."""

    def __init__(self, archi: list[int], act: str = "mysig", loss: str = "mse",
                 scale: float | None = None):
        super().__init__()
        self.archi = list(archi)
        self.act = get_activation(act)
        self.loss = loss
        self.W = nn.ModuleList(nn.Linear(a, b) for a, b in zip(archi[:-1], archi[1:]))
        scale_init(self.W, scale)

    # ------------------------------------------------------------------ dynamics
    def activation(self, i: int) -> Activation:
        """σ of state i (0-based); the identity for a cel output layer."""
        if i == len(self.archi) - 2 and self.loss == "cel":
            return IDENTITY
        return self.act

    def input_drive(self, x: torch.Tensor, generator: torch.Generator | None = None) -> State:
        """Per layer i, a·(constant part of ∂Φ/∂s_i) + c with σ_i = f(a·g + c), shape (B, n_i):
        the constant part is W_1 x + b_1 for the first layer, b_i for the others."""
        x = x.flatten(1)
        drive = []
        for i, w in enumerate(self.W):
            act = self.activation(i)
            const = torch.addmm(w.bias, x, w.weight.t()) if i == 0 else w.bias.expand(x.shape[0], -1)
            drive.append(const * act.gain + act.shift)
        return drive

    def init_state(self, drive: State, generator: torch.Generator | None = None) -> State:
        b = drive[0].shape[0]
        return [drive[0].new_zeros(b, n) for n in self.archi[1:]]

    def feedback_weight(self, i: int) -> torch.Tensor:
        """M with (feedback of s_{i+1} into s_i) = s_{i+1} @ M, shape (n_{i+2}, n_{i+1})."""
        return self.W[i + 1].weight

    def state_grad(self, state: State, drive: State, beta: Beta = 0.0,
                   y: torch.Tensor | None = None) -> State:
        """∂Φ_β/∂s_i (unfolded: the affine map of σ taken back out of the drive)."""
        last = len(state) - 1
        grads = []
        for i in range(len(state)):
            act = self.activation(i)
            g = (drive[i] - act.shift) / act.gain
            if i > 0:
                g = torch.addmm(g, state[i - 1], self.W[i].weight.t())
            if i < last:
                g = torch.addmm(g, state[i + 1], self.feedback_weight(i))
            elif not is_zero(beta):
                g = g - beta * loss_grad(self.loss, state[i], y)
            grads.append(g)
        return grads

    def step(self, state: State, drive: State, beta: Beta = 0.0,
             y: torch.Tensor | None = None) -> State:
        """σ(∂Φ_β/∂s) fused: σ's gain scales the matmuls, its shift sits in the drive."""
        last = len(state) - 1
        new = []
        for i in range(len(state)):
            act = self.activation(i)
            g = drive[i] if i == 0 else torch.addmm(drive[i], state[i - 1], self.W[i].weight.t(), alpha=act.gain)
            if i < last:
                g = torch.addmm(g, state[i + 1], self.feedback_weight(i), alpha=act.gain)
            elif not is_zero(beta):
                g = g - (act.gain * beta) * loss_grad(self.loss, state[i], y)
            new.append(act.outer(g))
        return new

    # ------------------------------------------------------------------ Φ and ∂Φ/∂θ
    def phi(self, x, state, beta=0.0, y=None, pre=None, drive=None):
        x = x.flatten(1)
        pre = state if pre is None else pre
        total = x.new_zeros(x.shape[0])
        for i, post in enumerate(state):
            below = x if i == 0 else pre[i - 1]
            total = total + (post * self.W[i](below)).sum(1)
            if self.vector_field and i < len(state) - 1:
                total = total + (post * F.linear(pre[i + 1], self.B[i].weight)).sum(1)
        if not is_zero(beta):
            b = beta.flatten() if torch.is_tensor(beta) else beta
            total = total - b * loss_per_sample(self.loss, self.logits(state), y)
        return total

    def dphi_dtheta(self, x, state, beta=0.0, y=None, pre=None, drive=None):
        x = x.flatten(1)
        pre = state if pre is None else pre
        n = x.shape[0]
        grads = {}
        for i, post in enumerate(state):
            below = x if i == 0 else pre[i - 1]
            grads[f"W.{i}.weight"] = post.t() @ below / n
            grads[f"W.{i}.bias"] = post.mean(0)
        if self.vector_field:
            for i in range(len(state) - 1):
                grads[f"B.{i}.weight"] = state[i].t() @ pre[i + 1] / n
        return grads

    def contrast(self, x, y, a, beta_a, b, beta_b, scale, pre=None, drive=None):
        """Fused form: per weight one matmul [c·post_b; −c·post_a]ᵀ @ [pre_b; pre_a] (c = scale/B),
        so the (n_l × n_{l−1}) matrices are formed once (the loss term has no θ here)."""
        x = x.flatten(1)
        c = scale / x.shape[0]
        pre_a = a if pre is None else pre
        pre_b = b if pre is None else pre
        grads = {}
        for i in range(len(a)):
            below_a = x if i == 0 else pre_a[i - 1]
            below_b = x if i == 0 else pre_b[i - 1]
            grads[f"W.{i}.weight"] = _outer_difference(b[i], a[i], below_b, below_a, c)
            grads[f"W.{i}.bias"] = (b[i].sum(0) - a[i].sum(0)) * c
        if self.vector_field:
            for i in range(len(a) - 1):
                grads[f"B.{i}.weight"] = _outer_difference(b[i], a[i], pre_b[i + 1], pre_a[i + 1], c)
        return grads

    def synapse_groups(self):
        return [list(w.parameters()) for w in self.W]


class VFMLP(VectorField, MLP):
    """Vector-field MLP (VF_MLP): backward weights B_l untied from W_{l+1}ᵀ."""

    def __init__(self, archi: list[int], act: str = "mysig", loss: str = "mse",
                 scale: float | None = None):
        super().__init__(archi, act, loss, scale=None)
        self.B = nn.ModuleList(nn.Linear(b, a, bias=False) for a, b in zip(archi[1:-1], archi[2:]))
        scale_init(self, scale)

    def feedback_weight(self, i: int) -> torch.Tensor:
        return self.B[i].weight.t()

    def mirrored_forward(self, k: int) -> torch.Tensor:
        return self.W[k + 1].weight.t()


def _outer_difference(post_b, post_a, pre_b, pre_a, c: float) -> torch.Tensor:
    """c · (post_bᵀ pre_b − post_aᵀ pre_a) as one matmul (pre_a is pre_b: one smaller matmul)."""
    if pre_a is pre_b:
        return ((post_b - post_a) * c).t() @ pre_b
    return torch.cat([post_b * c, post_a * -c]).t() @ torch.cat([pre_b, pre_a])


def build(cfg, input_shape: tuple[int, ...], num_classes: int) -> MLP:
    """The network of an ``mlp`` / ``vf_mlp`` model section (default init, then ``scale``)."""
    check_layer_sizes(cfg.archi, input_shape, num_classes)
    cls = VFMLP if cfg.kind == "vf_mlp" else MLP
    return cls(cfg.archi, act=cfg.act, loss=cfg.loss, scale=cfg.scale)
