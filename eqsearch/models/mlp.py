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
from eqsearch.config import ORDERS
from eqsearch.losses import loss_grad, loss_per_sample
from eqsearch.models.base import (check_layer_sizes, Beta, EnergyModel, Factors, State, VectorField, is_zero,
                                  materialize, scale_init)


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
        return [self._layer_step(i, state, drive, beta, y) for i in range(len(state))]

    def half_step(self, state: State, drive: State, beta: Beta = 0.0, y: torch.Tensor | None = None,
                  parity: int = 0) -> State:
        """Only the layers i ≡ ``parity`` (mod 2) are computed; the others are carried over."""
        return [self._layer_step(i, state, drive, beta, y) if i % 2 == parity else s for i, s in enumerate(state)]

    def _layer_step(self, i: int, state: State, drive: State, beta: Beta, y: torch.Tensor | None) -> torch.Tensor:
        """s_i ← σ_i(∂Φ_β/∂s_i) at ``state``, shape (B, n_{i+1})."""
        act = self.activation(i)
        g = drive[i] if i == 0 else torch.addmm(drive[i], state[i - 1], self.W[i].weight.t(), alpha=act.gain)
        if i < len(state) - 1:
            g = torch.addmm(g, state[i + 1], self.feedback_weight(i), alpha=act.gain)
        elif not is_zero(beta):
            g = g - (act.gain * beta) * loss_grad(self.loss, state[i], y)
        return act.outer(g)

    def scaled_weights(self, flip: tuple[bool, ...]) -> tuple[list, list]:
        """:class:`FusedStep`'s per-layer matrices for the current weights, in each layer's layout
        (``flip[i]``: layer i computed transposed). Forward (None for the first layer, whose
        input sits in the drive): (gain_i·W_i)ᵀ (n_{i−1}, n_i), flipped gain_i·W_i; feedback
        (None for the output layer): gain_i·M_i, flipped its transpose; all contiguous. Kept
        until a weight changes (its version counter or storage), so the phases of a batch and
        an evaluation share them."""
        weights = [w.weight for w in self.W] + ([b.weight for b in self.B] if self.vector_field else [])
        key = (tuple((w._version, w.data_ptr()) for w in weights), flip)
        cached = self.__dict__.get("_scaled_weights")
        if cached is None or cached[0] != key:
            n = len(self.W)
            gains = [self.activation(i).gain for i in range(n)]
            forward = [None] + [self.W[i].weight * gains[i] for i in range(1, n)]
            feedback = [self.feedback_weight(i) * gains[i] for i in range(n - 1)] + [None]
            forward = [None if m is None else (m if flip[i] else m.t()).contiguous() for i, m in enumerate(forward)]
            feedback = [None if m is None else (m.t() if flip[i] else m).contiguous() for i, m in enumerate(feedback)]
            cached = self.__dict__["_scaled_weights"] = (key, forward, feedback)
        return cached[1], cached[2]

    def stepper(self, drive: State, beta: Beta = 0.0, y: torch.Tensor | None = None, order: str = "sync",
                frozen: bool = True):
        """With fixed weights and no graph: :class:`FusedStep` (scaled weights per weight version,
        results written in place into two alternating buffers); otherwise (and when
        ``train.compile`` turned ``fused_steps`` off) the generic stepper."""
        if frozen and not torch.is_grad_enabled() and order in ORDERS and self.fused_steps:
            return FusedStep(self, drive, beta, y, order)
        return super().stepper(drive, beta, y, order, frozen)

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
        """Fused form: per weight one matmul (see :meth:`contrast_factors`)."""
        return materialize(self.contrast_factors(x, y, a, beta_a, b, beta_b, scale, pre, drive))

    def contrast_factors(self, x, y, a, beta_a, b, beta_b, scale, pre=None, drive=None) -> Factors:
        """With c = scale/B: weight (c·(post_b − post_a), pre) where both states share the
        presynaptic side (the input, a vector field's ``pre``), else ([c·post_b; −c·post_a],
        [pre_b; pre_a]); bias (c·(post_b − post_a), None). The loss term has no θ here."""
        x = x.flatten(1)
        c = scale / x.shape[0]
        pre_a = a if pre is None else pre
        pre_b = b if pre is None else pre
        diffs = [(post_b - post_a) * c for post_a, post_b in zip(a, b)]
        factors: Factors = {}
        for i, diff in enumerate(diffs):
            below_a = x if i == 0 else pre_a[i - 1]
            below_b = x if i == 0 else pre_b[i - 1]
            factors[f"W.{i}.weight"] = _difference_factors(b[i], a[i], below_b, below_a, c, diff)
            factors[f"W.{i}.bias"] = (diff, None)
        if self.vector_field:
            for i in range(len(a) - 1):
                factors[f"B.{i}.weight"] = _difference_factors(b[i], a[i], pre_b[i + 1], pre_a[i + 1], c, diffs[i])
        return factors

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


# layers narrower than this (and than the batch) are computed transposed, (n_i, B): MKL's GEMM
# with a narrow output, (B × n_{i−1}) by (n_{i−1} × 10), runs 1.5-1.8x slower than the same
# product as (10 × n_{i−1}) by (n_{i−1} × B) (one thread, B 50 to 1000); wide layers gain nothing
FLIP_BELOW = 64


class FusedStep:
    """:meth:`MLP.step` (or its even/odd sweep) for one phase with fixed weights, at the least
    work per step: each layer is one ``addmm`` into a buffer, an optional second ``addmm_``
    and σ's outer function in place.

    Per weight version, once (:meth:`MLP.scaled_weights`): the forward and feedback matrices
    scaled by σ's gain and laid out for each layer (a transposed view makes small matmuls ~2×
    slower). Per phase: the target part of the nudge, gain·β·ŷ, goes into the output layer's
    drive, so a nudged step adds only −gain·β·s_N (mse) or −gain·β·softmax(s_N) (cel). Gains of
    code base A's activations (4, 1/2, 1) are powers of two: the scaling is exact.

    A narrow layer (``FLIP_BELOW``) lives in an (n_i, B) buffer; the state holds its (B, n_i)
    transposed view. Results alternate between two buffer sets, never the state given.
    """

    def __init__(self, model: MLP, drive: State, beta: Beta, y: torch.Tensor | None, order: str):
        n = len(model.W)
        batch = drive[0].shape[0]
        self.last = n - 1
        self.order = list(range(n)) if order == "sync" else list(range(0, n, 2)) + list(range(1, n, 2))
        self.sync = order == "sync"
        acts = [model.activation(i) for i in range(n)]
        self.outer_ = [a.outer_ for a in acts]
        self.flip = tuple(w < FLIP_BELOW and w < batch for w in model.archi[1:])
        self.forward, self.feedback = model.scaled_weights(self.flip)
        drive = list(drive)
        self.nudge = None          # coefficient c of the output's own state: g_N += c·s_N (mse)
        self.softmax_nudge = None  # coefficient c of softmax(s_N): g_N += c·softmax(s_N) (cel)
        if not is_zero(beta):
            gb = acts[-1].gain * beta  # float or (B, 1)
            drive[-1] = drive[-1] + gb * y
            c = -gb.t() if torch.is_tensor(gb) and self.flip[-1] else -gb
            if model.loss == "mse":
                self.nudge = c
            else:
                self.softmax_nudge = c
        self.drive = [d.t().contiguous() if f else d for d, f in zip(drive, self.flip)]
        # per layer, in update order: the (matrix, state index) terms added to its drive
        self.terms = [[(m, j) for m, j in ((self.forward[i], i - 1), (self.feedback[i], i + 1)) if m is not None]
                      for i in range(n)]
        self.buffers: list[State] = []  # two sets: the computed layouts
        self.views: list[State] = []    # the same as states (B, n_i)

    def _out(self, state: State) -> tuple[State, State]:
        if not self.buffers:
            self.buffers = [[torch.empty_like(d) for d in self.drive] for _ in range(2)]
            self.views = [[b.t() if f else b for b, f in zip(bufs, self.flip)] for bufs in self.buffers]
        k = 1 if state[0] is self.views[0][0] else 0
        return self.buffers[k], self.views[k]

    def __call__(self, state: State) -> State:
        out, views = self._out(state)
        cur = state if self.sync else list(state)
        for i in self.order:
            o, flip, terms = out[i], self.flip[i], self.terms[i]
            # flipped: o (n_i, B) = d + M s^T; otherwise o (B, n_i) = d + s M
            for k, (m, j) in enumerate(terms):
                a, b = (m, cur[j].t()) if flip else (cur[j], m)
                if k == 0:
                    torch.addmm(self.drive[i], a, b, out=o)
                else:
                    o.addmm_(a, b)
            if not terms:
                o.copy_(self.drive[i])
            if i == self.last:
                _add_scaled(o, cur[i].t() if flip else cur[i], self.nudge)
                if self.softmax_nudge is not None:
                    sm = torch.softmax(cur[i], 1)
                    _add_scaled(o, sm.t() if flip else sm, self.softmax_nudge)
            self.outer_[i](o)
            if not self.sync:
                cur[i] = views[i]
        return views


def _add_scaled(out: torch.Tensor, t: torch.Tensor, c: Beta | None) -> None:
    """out += c·t in place, c a float, a (B, 1) tensor or None (nothing)."""
    if c is None:
        return
    if torch.is_tensor(c):
        out.addcmul_(t, c)
    else:
        out.add_(t, alpha=c)


def _difference_factors(post_b, post_a, pre_b, pre_a, c: float, diff: torch.Tensor):
    """Factors (P, S) of c·(post_bᵀ pre_b − post_aᵀ pre_a): (``diff`` = c·(post_b − post_a), pre)
    when pre_a is pre_b, else the stacked pair."""
    if pre_a is pre_b:
        return diff, pre_b
    return torch.cat([post_b * c, post_a * -c]), torch.cat([pre_b, pre_a])


def build(cfg, input_shape: tuple[int, ...], num_classes: int) -> MLP:
    """The network of an ``mlp`` / ``vf_mlp`` model section (default init, then ``scale``)."""
    check_layer_sizes(cfg.archi, input_shape, num_classes)
    cls = VFMLP if cfg.kind == "vf_mlp" else MLP
    return cls(cfg.archi, act=cfg.act, loss=cfg.loss, scale=cfg.scale)
