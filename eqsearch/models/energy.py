"""Energy models of code base C (smonsays/equilibrium-propagation, reference §4).

Sizes ``dims = [d_0, d_1, ..., d_L]`` (input -> output). Layer l has state u_l ∈ R^{d_l};
u_0 = x (flattened) is clamped and lives in the drive, the state is [u_1, ..., u_L].
Synapse W_l = ``W[l]`` is an ``nn.Linear(d_l, d_{l+1})`` (weight (d_{l+1}, d_l), bias b_l),
PyTorch default init; φ_0 = identity, φ_l = the chosen non-linearity f for l ≥ 1.

Energies, per sample (§4.3), e_{l+1} = u_{l+1} − (W_l φ_l(u_l) + b_l) the prediction error:

    cond_gaussian:   E = Σ_{l=0}^{L−1} ‖e_{l+1}‖²                        (no ½)
    restr_hopfield:  E = ½‖u_0‖² + Σ_{l=1}^{L} ½‖u_l‖²
                         − Σ_{l=0}^{L−1} [φ_{l+1}(u_{l+1})ᵀ W_l φ_l(u_l) + b_lᵀ φ_{l+1}(u_{l+1})]

Costs on the raw output state u_L (§4.4): squared_error C = ½ Σ_k (u_{L,k} − ŷ_k)²,
cross_entropy C = −Σ_k ŷ_k log softmax(u_L)_k. Nudged energy E + β·C.

Sign convention (code base A): Φ_β = −(E + β·C) is what the dynamics ascend, so
``state_grad`` returns −∂(E + β·C)/∂u_l and ``dphi_dtheta`` returns −∂Ē/∂θ (batch mean; C has
no θ). Closed forms, with ρ_l = φ_l(u_l), f' the derivative of f:

    cond_gaussian:   −∂E/∂u_l = −2 e_l + 2 f'(u_l) ⊙ W_lᵀ e_{l+1}      ([l < L] for the 2nd term)
                     −∂E/∂W_l = 2 e_{l+1} ρ_lᵀ,    −∂E/∂b_l = 2 e_{l+1}
    restr_hopfield:  −∂E/∂u_l = −u_l + f'(u_l) ⊙ (W_{l−1} ρ_{l−1} + b_{l−1} + [l < L] W_lᵀ ρ_{l+1})
                     −∂E/∂W_l = ρ_{l+1} ρ_lᵀ,      −∂E/∂b_l = ρ_{l+1}
    output:          −β ∂C/∂u_L = −β (u_L − ŷ)  or  −β (softmax(u_L) − ŷ)

Dynamics (§4.5): explicit Euler descent on E, u_l ← u_l + (dt/τ)·(−∂E_β/∂u_l), no clamp
(``Euler(dt / tau)``). The original descends the batch sum of E, which is the same per sample.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from eqsearch.dynamics import Euler
from eqsearch.models.base import check_layer_sizes, Beta, EnergyModel, State


class Nonlinearity(NamedTuple):
    """f and its derivative; ``df(x, fx)`` receives f(x) too, so that it can reuse it."""

    f: Callable[[torch.Tensor], torch.Tensor]
    df: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


LEAKY_SLOPE = 0.01

NONLINEARITIES: dict[str, Nonlinearity] = {
    "relu": Nonlinearity(torch.relu, lambda x, fx: (x > 0).to(x.dtype)),
    "leaky_relu": Nonlinearity(lambda x: F.leaky_relu(x, LEAKY_SLOPE),
                               lambda x, fx: torch.where(x > 0, torch.ones_like(x),
                                                         torch.full_like(x, LEAKY_SLOPE))),
    "sigmoid": Nonlinearity(torch.sigmoid, lambda x, fx: fx * (1 - fx)),
    "tanh": Nonlinearity(torch.tanh, lambda x, fx: 1 - fx * fx),
    "hard_sigmoid": Nonlinearity(lambda x: x.clamp(0.0, 1.0), lambda x, fx: ((x > 0) & (x < 1)).to(x.dtype)),
    "softplus": Nonlinearity(F.softplus, lambda x, fx: torch.sigmoid(x)),
}

ENERGIES = ("cond_gaussian", "restr_hopfield")
COSTS = {"squared_error": "mse", "cross_entropy": "cel"}
INITS = ("normal", "zeros")


def _is_zero(beta: Beta) -> bool:
    return not torch.is_tensor(beta) and beta == 0.0


def _choice(key: str, value: str, allowed) -> str:
    if value not in allowed:
        raise ValueError(f"model.{key}: got {value!r}; allowed: {', '.join(allowed)}")
    return value


class EnergyNet(EnergyModel):
    """Layered energy network of code base C: ``cond_gaussian`` or ``restr_hopfield``.

    ``init`` is the free-phase state init: "normal" (C's N(0, 1) per unit, from the generator)
    or "zeros". ``fast_ff_init`` (cond_gaussian only) replaces it by the exact zero-energy
    feed-forward state u_{l+1} = W_l φ_l(u_l) + b_l, which is the free equilibrium.
    """

    vector_field = False

    def __init__(self, dims: list[int], energy: str = "cond_gaussian", cost: str = "squared_error",
                 nonlinearity: str = "sigmoid", dt: float = 0.1, tau: float = 1.0,
                 fast_ff_init: bool = False, init: str = "normal"):
        super().__init__()
        if len(dims) < 2:
            raise ValueError(f"model.dims: got {list(dims)}; allowed: at least 2 sizes (input, output)")
        self.dims = list(dims)
        self.archi = self.dims
        self.energy_name = _choice("energy", energy, ENERGIES)
        self.cost = _choice("cost", cost, tuple(COSTS))
        self.nonlinearity = _choice("nonlinearity", nonlinearity, tuple(NONLINEARITIES))
        self.init = _choice("init", init, INITS)
        if fast_ff_init and energy != "cond_gaussian":
            raise ValueError(f"model.fast_ff_init: got true with model.energy {energy!r}; allowed: true only "
                             "with cond_gaussian (the feed-forward state is its zero-energy equilibrium)")
        self.fast_ff_init = bool(fast_ff_init)
        self.loss = COSTS[cost]
        self.f = NONLINEARITIES[nonlinearity]
        self.dt, self.tau = float(dt), float(tau)
        self.dynamics = Euler(self.dt / self.tau)
        self.W = nn.ModuleList(nn.Linear(a, b) for a, b in zip(self.dims[:-1], self.dims[1:]))

    # ------------------------------------------------------------------ drive, init
    def input_drive(self, x: torch.Tensor, generator: torch.Generator | None = None) -> State:
        """[u_0, W_0 u_0 + b_0]: the clamped input (B, d_0) and its constant drive of u_1 (B, d_1)."""
        x = x.flatten(1)
        return [x, torch.addmm(self.W[0].bias, x, self.W[0].weight.t())]

    def init_state(self, drive: State, generator: torch.Generator | None = None) -> State:
        """[u_1, ..., u_L], (B, d_l) each: N(0, 1) draws from ``generator`` (or zeros), or the
        feed-forward state with ``fast_ff_init`` (then deterministic, no draw)."""
        x = drive[0]
        if self.fast_ff_init:
            state = [drive[1]]
            for l in range(1, len(self.W)):
                state.append(self._prediction(l, self.f.f(state[-1])))
            return state
        shapes = [(x.shape[0], d) for d in self.dims[1:]]
        if self.init == "zeros":
            return [x.new_zeros(s) for s in shapes]
        device = generator.device if generator is not None else x.device
        return [torch.randn(s, generator=generator, dtype=x.dtype, device=device).to(x.device) for s in shapes]

    def _prediction(self, l: int, rho: torch.Tensor) -> torch.Tensor:
        """W_l ρ_l + b_l, (B, d_{l+1})."""
        return torch.addmm(self.W[l].bias, rho, self.W[l].weight.t())

    def _drive(self, x, drive):
        return self.input_drive(x) if drive is None else drive

    def _rho(self, state: State) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(ρ_l, f'(u_l)) for l = 1..L."""
        rho = [self.f.f(u) for u in state]
        return rho, [self.f.df(u, r) for u, r in zip(state, rho)]

    def _errors(self, state: State, drive: State, rho: list[torch.Tensor]) -> list[torch.Tensor]:
        """cond_gaussian prediction errors e_1..e_L (B, d_l); ``rho`` = [ρ_1, ..., ρ_L]."""
        errs = [state[0] - drive[1]]
        for l in range(1, len(state)):
            errs.append(state[l] - self._prediction(l, rho[l - 1]))
        return errs

    # ------------------------------------------------------------------ dynamics
    def _cost_grad(self, u_out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """∂C/∂u_L per sample, (B, C)."""
        y = y.to(u_out.dtype)
        if self.loss == "mse":
            return u_out - y
        return torch.softmax(u_out, 1) - y

    def state_grad(self, state: State, drive: State, beta: Beta = 0.0,
                   y: torch.Tensor | None = None) -> State:
        """−∂(E + β·C)/∂u_l for l = 1..L, (B, d_l) each, closed form (module docstring)."""
        last = len(state) - 1
        rho, drho = self._rho(state)
        grads = []
        if self.energy_name == "cond_gaussian":
            errs = self._errors(state, drive, rho)
            for l in range(len(state)):
                g = errs[l] * -2.0
                if l < last:
                    g = g + 2.0 * drho[l] * (errs[l + 1] @ self.W[l + 1].weight)
                grads.append(g)
        else:
            for l in range(len(state)):
                h = drive[1] if l == 0 else self._prediction(l, rho[l - 1])
                if l < last:
                    h = torch.addmm(h, rho[l + 1], self.W[l + 1].weight)
                grads.append(drho[l] * h - state[l])
        if not _is_zero(beta):
            grads[-1] = grads[-1] - beta * self._cost_grad(state[-1], y)
        return grads

    def step(self, state: State, drive: State, beta: Beta = 0.0,
             y: torch.Tensor | None = None) -> State:
        """One Euler step u_l ← u_l + (dt/τ)·state_grad_l."""
        return self.dynamics.step(self, state, drive, beta, y)

    def activation(self, i: int):
        raise NotImplementedError("EnergyNet relaxes with Euler dynamics; it has no FixedPoint activation")

    def logits(self, state: State) -> torch.Tensor:
        """u_L (B, d_L); prediction argmax u_L = argmax softmax(u_L) (§4.7)."""
        return state[-1]

    # ------------------------------------------------------------------ E, Φ and ∂Φ/∂θ
    def energy(self, x: torch.Tensor, state: State, drive: State | None = None) -> torch.Tensor:
        """E per sample without cost, (B,); plain autograd-able ops."""
        x = x.flatten(1)
        below = [x] + [self.f.f(u) for u in state[:-1]]
        if self.energy_name == "cond_gaussian":
            return sum((u - w(r)).pow(2).sum(1) for u, w, r in zip(state, self.W, below))
        total = 0.5 * x.pow(2).sum(1) + sum(0.5 * u.pow(2).sum(1) for u in state)
        for u, w, r in zip(state, self.W, below):
            total = total - (self.f.f(u) * w(r)).sum(1)
        return total

    def cost_per_sample(self, state: State, y: torch.Tensor) -> torch.Tensor:
        """C(u_L, y) per sample, (B,); equals eqsearch.losses.loss_per_sample(self.loss, u_L, y)."""
        u = state[-1]
        y = y.to(u.dtype)
        if self.loss == "mse":
            return 0.5 * (u - y).pow(2).sum(1)
        return -(y * torch.log_softmax(u, 1)).sum(1)

    def phi(self, x, state, beta=0.0, y=None, pre=None, drive=None):
        """Φ_β = −(E + β·C) per sample, (B,) (test oracle)."""
        total = -self.energy(x, state)
        if not _is_zero(beta):
            b = beta.flatten() if torch.is_tensor(beta) else beta
            total = total - b * self.cost_per_sample(state, y)
        return total

    def _post_pre(self, x, state, drive):
        """Per synapse l: (post, pre) with ∂Φ/∂W_l = mean_B postᵀ pre, ∂Φ/∂b_l = mean_B post."""
        drive = self._drive(x, drive)
        rho, _ = self._rho(state)
        pres = [drive[0]] + rho[:-1]
        if self.energy_name == "cond_gaussian":
            posts = [2.0 * e for e in self._errors(state, drive, rho)]
        else:
            posts = rho
        return posts, pres

    def dphi_dtheta(self, x, state, beta=0.0, y=None, pre=None, drive=None):
        """Batch-mean ∂Φ_β/∂θ = −∂Ē/∂θ by parameter name (C has no θ, so β and y do not enter)."""
        posts, pres = self._post_pre(x, state, drive)
        n = posts[0].shape[0]
        out = {}
        for l, (post, below) in enumerate(zip(posts, pres)):
            out[f"W.{l}.weight"] = post.t() @ below / n
            out[f"W.{l}.bias"] = post.mean(0)
        return out

    def contrast(self, x, y, a, beta_a, b, beta_b, scale, pre=None, drive=None):
        """scale·[∂Φ̄_{β_b}/∂θ(b) − ∂Φ̄_{β_a}/∂θ(a)] by parameter name, one matmul per weight."""
        posts_a, pres_a = self._post_pre(x, a, drive)
        posts_b, pres_b = self._post_pre(x, b, drive)
        c = scale / posts_a[0].shape[0]
        out = {}
        for l in range(len(self.W)):
            pa, pb = posts_a[l], posts_b[l]
            if l == 0:  # the input is shared by both states
                out["W.0.weight"] = ((pb - pa) * c).t() @ pres_b[0]
            else:
                out[f"W.{l}.weight"] = torch.cat([pb * c, pa * -c]).t() @ torch.cat([pres_b[l], pres_a[l]])
            out[f"W.{l}.bias"] = (pb.sum(0) - pa.sum(0)) * c
        return out

    def synapse_groups(self):
        return [[w.weight, w.bias] for w in self.W]

    def state_metrics(self, x: torch.Tensor, state: State, drive: State | None = None) -> dict[str, torch.Tensor]:
        """Per sample at a free state: its energy E (code base C's logged "mean energy")."""
        return {"free_energy": self.energy(x, state)}


def build(cfg, input_shape: tuple[int, ...], num_classes: int) -> EnergyNet:
    """The network of a ``cond_gaussian`` / ``restr_hopfield`` model section."""
    check_layer_sizes(cfg.archi, input_shape, num_classes)
    return EnergyNet(cfg.archi, energy=cfg.kind, cost=cfg.cost, nonlinearity=cfg.nonlinearity, dt=cfg.dt,
                     tau=cfg.tau, fast_ff_init=cfg.fast_ff_init, init=cfg.init)
